//! The `google.pubsub.v1` API over the engine: gRPC, and its REST/JSON
//! mapping.

pub(crate) mod grpc;
pub(crate) mod rest;
