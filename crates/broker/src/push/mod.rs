//! Push delivery: one worker per push subscription POSTs each message to
//! the subscription's endpoint, signed with an OIDC token when the
//! subscription asks for one, over HTTP/2 where the endpoint speaks it.
//!
//! [`Pusher`] is the engine's
//! [`PushDelivery`](crate::engine::hooks::PushDelivery): it says where
//! pushes may go ([`endpoints`]) and runs each subscription's worker
//! ([`worker`]) with the HTTP client ([`http`], and [`h2`] for endpoints
//! known to speak h2c).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::engine::Engine;
use crate::engine::hooks::PushDelivery;
use crate::engine::subscription::Subscription;
use crate::oidc::OidcSigner;

pub(crate) mod endpoints;
pub(crate) mod h2;
pub(crate) mod http;
pub(crate) mod worker;

use endpoints::PushEndpoints;
use http::PushHttp;

/// What the push workers share: the HTTP client, the key that signs push
/// tokens, where pushes may go and how many one subscription may have
/// outstanding.
pub(crate) struct Pusher {
    http: PushHttp,
    signer: Arc<OidcSigner>,
    endpoints: PushEndpoints,
    max_window: u32,
}

impl Pusher {
    pub fn new(
        signer: Arc<OidcSigner>,
        endpoints: PushEndpoints,
        max_window: u32,
    ) -> anyhow::Result<Pusher> {
        Ok(Pusher {
            http: PushHttp::new()?,
            signer,
            endpoints,
            max_window,
        })
    }
}

impl PushDelivery for Pusher {
    fn refusal(&self, endpoint: &str) -> Option<String> {
        self.endpoints.refusal(endpoint)
    }

    fn run(self: Arc<Self>, engine: Engine, sub: Arc<Subscription>) -> BoxFuture<'static, ()> {
        Box::pin(worker::run(self, engine, sub))
    }
}

/// Why a push got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushFailure {
    /// No connection could be made: nothing was learnt about the endpoint.
    Connect,
    /// No answer within the push's deadline.
    Timeout,
    /// Anything else: a reset, a protocol error, a peer that does not speak
    /// the HTTP it was asked in.
    Failed,
}

impl PushFailure {
    /// The reason recorded for the failed attempt (never the URL, which may
    /// carry a password).
    pub(crate) fn describe(self) -> &'static str {
        match self {
            PushFailure::Timeout => "timed out",
            PushFailure::Connect => "connection failed",
            PushFailure::Failed => "request failed",
        }
    }
}

impl From<&reqwest::Error> for PushFailure {
    fn from(error: &reqwest::Error) -> PushFailure {
        if error.is_timeout() {
            PushFailure::Timeout
        } else if error.is_connect() {
            PushFailure::Connect
        } else {
            PushFailure::Failed
        }
    }
}
