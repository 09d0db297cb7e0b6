//! labrelay's wire contract: what crosses a process boundary.
//!
//! Every labrelay service depends on this crate, so the shapes on the wire
//! are defined exactly once.
//!
//! Layout:
//! - [`report`]: the lab report a lab POSTs, validated once at ingest and
//!   carried unchanged as the Pub/Sub message data.
//! - [`push`]: the Pub/Sub push envelope (the body of every push request),
//!   written by the broker and read by the push receivers.
//! - [`headers`]: the header names processes read from each other
//!   (`X-Labrelay-Outcome`, the trace headers).
//! - [`limits`]: the concurrency limit (503) and request timeout (408) every
//!   service puts in front of its routes.
//! - [`metrics`]: the Prometheus registry each service serves at
//!   `/metrics`.
//! - [`origin_guard`]: refuses what a web page can make a browser send
//!   (cross-site requests, DNS rebinding) on every port, before any
//!   handler.
//! - [`serve`]: serving a router (the services' and the broker's) with
//!   connections that say nothing closed, at most 512 at once (idle ones
//!   closed while all are taken), and graceful shutdown; `free_port` for servers told their port first;
//!   `Activity`, what a connection is doing (the broker's push connections
//!   keep one too).
//! - [`private_fs`]: the data directory's modes (directories 0700, files
//!   0600, looser ones tightened) and keys written atomically.

pub mod headers;
pub mod limits;
pub mod metrics;
pub mod origin_guard;
pub mod private_fs;
pub mod push;
pub mod report;
pub mod serve;

pub use report::{LabReport, ReportError, ReportId};
