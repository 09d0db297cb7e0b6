//! What the `labrelay` command shares with the tools that start the system
//! their own way: the bench (`crates/bench`) starts each part as a process
//! of the `labrelay` binary and wires it as `up` does.
//!
//! Layout:
//! - [`up`]: `labrelay up`: the whole system in one process, and its
//!   topology (topic and subscription names, the push subscriptions, the
//!   project, the outbox URLs, the ingest API key file).
//! - [`post`]: sample lab reports, and posting them as a lab would.
//! - [`telemetry`]: the one tracing setup of every labrelay process.

pub mod post;
pub mod telemetry;
pub mod up;
