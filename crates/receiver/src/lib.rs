//! What labrelay's push receivers share. The email-service and the
//! sms-service are the push endpoints of the subscriptions on
//! `new-lab-report`; everything between the broker's POST and the
//! provider's answer that is not about email or SMS lives here, once.
//!
//! The one push handler: parse the envelope → (the push token, checked by
//! a layer in front) → open the push's span → render (the channel) →
//! claim in the notification log → already sent? → send (the channel) →
//! record → answer, within the channel's answer time or 503 while the send
//! goes on. A channel service implements [`Channel`] with what differs
//! (render, send, classify a provider's answer) and calls [`app`] or
//! [`run`].
//!
//! Layout:
//! - [`channel`]: [`Channel`], what a channel brings, and how it says
//!   why a notification was not sent.
//! - [`settings`]: [`ReceiverSettings`], what both services read the same
//!   way (`PUSH_*`, `NOTIFY_LOG`, the trace project, `ALLOWED_HOSTS`).
//! - `routes`: `POST /`, `GET /healthz`, `GET /metrics`, and the push
//!   handler; or a channel's webhooks alone ([`run_webhooks`]).
//! - [`outcome`]: what became of a push, and the one mapping to the HTTP
//!   status, the `X-Labrelay-Outcome` header, the metrics and the log line.
//! - [`push_auth`]: the OIDC bearer-token check in front of every push
//!   endpoint (RS256, JWKS cached, issuer, audience, service account).
//! - [`facts`]: what providers say after the send, kept in the
//!   notification log: suppressed recipients (opt-outs, mailboxes that do
//!   not exist) and delivery receipts, each receipt that moves a
//!   notification forward also published to `RECEIPTS_TOPIC`.
//! - [`dead_letter`]: parking a push no delivery can ever send on the
//!   dead-letter topic, so the subscriptions can retry outages for hours.
//! - [`publish`]: publishing to a topic of the receivers' own (dead
//!   letters, delivery receipts): the setting and the one client.
//! - [`notify_log`]: which notifications were sent (report id, channel,
//!   content hash), so redeliveries do not notify twice; SQLite or
//!   Firestore, and the claim protocol around them.
//! - [`group_write`]: group commit for the receivers' directory outboxes
//!   (one writer thread per directory; each caller answered after its
//!   file is durable).
//! - [`push_metrics`]: the receivers' Prometheus metrics, in a registry of
//!   each service's own.

pub mod channel;
pub mod dead_letter;
pub mod facts;
pub mod group_write;
pub mod notify_log;
pub mod outcome;
pub mod publish;
pub mod push_auth;
pub mod push_metrics;
mod routes;
pub mod settings;

use std::future::Future;

use anyhow::Context as _;
use labrelay_runtime::origin_guard::AllowedHosts;

pub use channel::{Channel, Class, Failure, NotSent};
pub use facts::Facts;
pub use routes::MAX_PUSH_BODY;
pub use settings::ReceiverSettings;

/// The receiver of `channel` as a router, ready to serve or to test with
/// `oneshot`. Fails when the notification log cannot be opened.
pub fn app<C: Channel>(channel: C, settings: &ReceiverSettings) -> anyhow::Result<axum::Router> {
    Ok(routes::build(channel, settings)?.0)
}

/// Serves the receiver of `channel` on `listener` until `shutdown`
/// completes, then stops accepting, lets in-flight pushes finish (each is
/// answered within the channel's answer time) and shuts the channel down.
/// A send still going on after its push was answered ends with the
/// process; its claim is taken over at once by any other process sharing
/// the SQLite log (its holder's lock went with it), and on Firestore it
/// lapses with its lease.
pub async fn run<C: Channel>(
    channel: C,
    settings: ReceiverSettings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    let (router, receiver) = routes::build(channel, &settings)?;
    let hosts = AllowedHosts::or_default_for(settings.allowed_hosts, addr);
    let notify_log = receiver
        .dedupe
        .as_ref()
        .map_or_else(|| "off".to_string(), |d| d.describe());
    let dead_letters = receiver
        .dead_letters
        .as_ref()
        .map_or("the subscription's dead-letter policy", |d| d.topic());
    tracing::info!(
        %addr,
        delivery = %receiver.channel.describe(),
        %notify_log,
        dead_letters,
        "{} listening",
        C::SERVICE
    );
    labrelay_runtime::serve::serve(listener, router, hosts, shutdown)
        .await
        .context("serving HTTP")?;
    receiver.channel.shutdown().await;
    tracing::info!("{} stopped", C::SERVICE);
    Ok(())
}

/// Serves a channel's provider webhooks alone (the router `webhooks`
/// builds over the channel's [`Facts`], and `GET /healthz`) on `listener`
/// until `shutdown` completes: for a public service beside an internal
/// push receiver, sharing its notification log. `channel` is the
/// channel's [`Channel::NAME`], `service` the name it logs. Only the
/// notification log, `RECEIPTS_TOPIC`, `SUPPRESSION_KEY`, the trace
/// project and `ALLOWED_HOSTS` of `settings` count; fails without a
/// notification log.
pub async fn run_webhooks(
    channel: &'static str,
    service: &str,
    settings: ReceiverSettings,
    webhooks: impl FnOnce(Facts) -> axum::Router,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    let router = routes::build_webhooks(channel, &settings, webhooks)?;
    let hosts = AllowedHosts::or_default_for(settings.allowed_hosts, addr);
    tracing::info!(%addr, "{service} listening");
    labrelay_runtime::serve::serve(listener, router, hosts, shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("{service} stopped");
    Ok(())
}
