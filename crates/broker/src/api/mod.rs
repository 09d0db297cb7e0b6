//! The `google.pubsub.v1` API over the engine, on one router: the gRPC
//! Publisher and Subscriber services ([`grpc`]) and their REST/JSON mapping
//! ([`rest`], with the proto3 JSON codec in [`json`]), which calls the same
//! gRPC methods, so both protocols share every check.

use crate::engine::Engine;
use crate::generated::publisher_server::PublisherServer;
use crate::generated::subscriber_server::SubscriberServer;

pub(crate) mod grpc;
pub(crate) mod json;
pub(crate) mod rest;

/// Room for a 10 MB publish request plus its framing.
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// gRPC, REST and `GET /` over `engine`, on one router.
pub(crate) fn router(engine: Engine) -> axum::Router {
    let service = grpc::PubSubService::new(engine);
    let grpc = tonic::service::Routes::new(
        PublisherServer::new(service.clone())
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        SubscriberServer::new(service.clone())
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_REQUEST_BYTES),
    )
    .into_axum_router();
    grpc.merge(rest::router(service))
}
