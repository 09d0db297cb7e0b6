//! labrelay's wire contract: what crosses a process boundary.
//!
//! Every labrelay service depends on this crate and on nothing else of
//! labrelay's, so the shapes on the wire are defined exactly once.
//!
//! Layout:
//! - [`report`]: the lab report a lab POSTs, validated once at ingest and
//!   carried unchanged as the Pub/Sub message data.
//! - [`push`]: the Pub/Sub push envelope (the body of every push request),
//!   written by the broker and read by the push receivers.
//! - [`secret`]: credentials read from the environment, never printed.

pub mod push;
pub mod report;
pub mod secret;

pub use report::{LabReport, ReportError, ReportId};
