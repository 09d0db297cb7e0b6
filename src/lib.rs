//! The `labrelay` command's library: how `labrelay up` wires the whole
//! system on one machine (the broker, the three services, their settings
//! and the broker's topology), so that the command, the whole-system tests
//! and the bench start it the same way.
//!
//! Layout:
//! - [`up`]: the topology (topics, subscriptions and their pacing), the
//!   settings each part gets, the data directory and its key files, and
//!   running everything until a shutdown signal; writes `up.json`
//!   ([`labrelay_contract::up_file`]) once every part listens.

pub mod up;
