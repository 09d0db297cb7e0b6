//! How to run a broker: [`BrokerConfig`], built by `labrelay broker` and
//! `labrelay up` from their flags and by the tests.

use std::path::PathBuf;

use labrelay_runtime::origin_guard::AllowedHosts;

use crate::push::endpoints::PushEndpoints;

/// How many bytes of unacknowledged message bodies the broker keeps in
/// memory by default; the others are read back from the store before
/// delivery. 32 MiB holds about 25,000 bodies of 1 KiB, a few seconds of
/// delivery at the broker's push rate, so reading ahead hides the disk.
pub const DEFAULT_PAYLOAD_BUDGET: usize = 32 << 20;

/// How to run a broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where the store and the signing key live; created if missing.
    pub data_dir: PathBuf,
    /// The `iss` of push tokens, and the base of the JWKS URL.
    pub issuer: String,
    /// The most pushes one subscription may have outstanding. Default 256,
    /// what a labrelay push receiver admits at once
    /// ([`labrelay_runtime::limits::DEFAULT_MAX_IN_FLIGHT`]): a larger
    /// window only earns 503s, and each 503 halves the window and pauses
    /// the subscription.
    pub max_push_window: u32,
    /// Whether the console shows message data (off: ids, attributes,
    /// status codes and times only). Also makes the journal keep the data.
    pub console_show_data: bool,
    /// The most messages the console's journal keeps.
    pub journal_max_messages: u64,
    /// How many bytes of unacknowledged message bodies stay in memory
    /// (default [`DEFAULT_PAYLOAD_BUDGET`]). Beyond it bodies stay
    /// on disk only and are read back, ahead of delivery, when they are
    /// next; the rest of each message (about 250 bytes) stays in memory.
    pub payload_budget: usize,
    /// Host names the broker answers besides loopback names (default:
    /// none; see [`labrelay_runtime::origin_guard`]).
    pub allowed_hosts: AllowedHosts,
    /// Where push subscriptions may send requests (default: anywhere; see
    /// [`PushEndpoints`]).
    pub push_endpoints: PushEndpoints,
}

impl BrokerConfig {
    /// Defaults for a broker whose clients reach it at `addr`.
    pub fn new(data_dir: impl Into<PathBuf>, addr: std::net::SocketAddr) -> Self {
        BrokerConfig {
            data_dir: data_dir.into(),
            issuer: format!("http://{addr}"),
            max_push_window: labrelay_runtime::limits::DEFAULT_MAX_IN_FLIGHT as u32,
            console_show_data: false,
            journal_max_messages: 100_000,
            payload_budget: DEFAULT_PAYLOAD_BUDGET,
            allowed_hosts: AllowedHosts::loopback(),
            push_endpoints: PushEndpoints::any(),
        }
    }
}
