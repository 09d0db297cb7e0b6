//! The `labrelay` command's library: how `labrelay up` wires the whole
//! system on one machine (the broker, the three services, their settings
//! and the broker's topology), and what the command shares with the tools
//! that start the system their own way: the whole-system tests and the
//! bench (`crates/bench`), which starts each part as a process of the
//! `labrelay` binary and wires it as `up` does.
//!
//! Layout:
//! - [`up`]: `labrelay up`: the topology (topic and subscription names, the
//!   push subscriptions and their pacing, the project), the settings each
//!   part gets, the data directory and its key files, and running
//!   everything until a shutdown signal; writes `up.json`
//!   ([`labrelay_contract::up_file`]) once every part listens.
//! - [`post`]: sample lab reports, and posting them as a lab would.

pub mod post;
pub mod up;
