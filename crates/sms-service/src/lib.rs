//! The sms-service: the push endpoint of subscription `sms-service-sub`.
//!
//! In labrelay's data flow the broker POSTs every lab report published to
//! `new-lab-report` here, wrapped in a Pub/Sub push envelope. The service
//! texts the pet's owner a one-segment notice that the results are ready
//! (never the results), through Twilio's Messages API or into a directory
//! outbox, and its HTTP answer tells the broker what to do: 204 acknowledges
//! (sent, or skipped for want of a phone number), 503 asks for a retry
//! (Twilio down, rate limiting, timeouts, our configuration), 400 and 422
//! mark a push that can never succeed, which the broker dead-letters after
//! its attempts.
//!
//! Duplicates: with `NOTIFY_LOG` set, every SMS sent is recorded (report
//! id, channel `sms`, SHA-256 of number and text; see
//! [`labrelay_receiver::notify_log`]) and a push whose SMS is already
//! recorded is acknowledged (204) without sending, whether it is a
//! redelivery or the lab posting the same report again; a corrected report
//! whose text differs is sent. A push still sending at the Twilio timeout
//! is answered 503 while its request goes on (see `twilio`); the
//! redelivery waits for it and finds the record. A request that outlives
//! its limit ([`attempt_limit`](labrelay_receiver::notify_log::attempt_limit))
//! keeps its claim until the lease lapses. The duplicates left: the
//! service dies (or the record fails, or the request was cut off) after
//! Twilio accepted the message and before the record is committed; once
//! the claim has lapsed the broker's redelivery sends it again.
//!
//! Layout:
//! - [`settings`]: typed settings from the environment or from code (and
//!   what every push receiver reads, [`ReceiverSettings`]).
//! - `channel`: the sms-service's part of the one push handler
//!   ([`labrelay_receiver`]): a report's SMS, where it may go, how a
//!   failed send classifies.
//! - [`phone`]: [`PhoneNumber`], E.164, parsed once.
//! - [`segments`]: GSM-7 / UCS-2 length and segment counting.
//! - [`notice`]: the SMS text, shortened to fit one segment.
//! - `transport`: Twilio or the outbox, and how sending fails.
//! - `twilio`: the Twilio Messages API client and how its errors classify.
//! - [`webhooks`]: Twilio's calls to us (`POST /twilio/status`, delivery
//!   receipts; `POST /twilio/inbound`, STOP and START), signature-checked;
//!   served with the push endpoint, or alone by [`run_webhooks`] for a
//!   service Twilio cannot reach.
//! - `outbox`: one JSON file per message, written atomically.
//!   It writes through [`labrelay_receiver::group_write`] (group commit).
//!
//! The push handler, its answers (one mapping from what happened to the
//! HTTP status, the `X-Labrelay-Outcome` header, the metrics and the log
//! line), the push-token check, the metrics at `GET /metrics` and the
//! trace spans are [`labrelay_receiver`]'s, the same as the
//! email-service's.

mod channel;
pub mod notice;
mod outbox;
pub mod phone;
pub mod segments;
pub mod settings;
mod transport;
mod twilio;
pub mod webhooks;

use std::future::Future;

use channel::SmsChannel;

pub use labrelay_receiver::ReceiverSettings;
pub use labrelay_runtime::secret::Secret;
pub use phone::{PhoneError, PhoneNumber};
pub use settings::{
    Delivery, OutboxSettings, Settings, TwilioSender, TwilioSettings, WebhookSettings,
};

/// The service as a router, ready to serve or to test with `oneshot`.
/// Fails on invalid settings, an outbox directory that cannot be created
/// or a notification log that cannot be opened.
pub fn app(settings: Settings) -> anyhow::Result<axum::Router> {
    labrelay_receiver::app(SmsChannel::new(&settings)?, &settings.receiver)
}

/// Serves the service on `listener` until `shutdown` completes, then stops
/// accepting connections and lets requests in flight finish (each is
/// answered within the Twilio timeout). A Twilio request still going on
/// after its push was answered ends with the process; its claim is taken
/// over at once by the next start on this host (SQLite log; on Firestore it
/// lapses with its lease).
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let channel = SmsChannel::new(&settings)?;
    labrelay_receiver::run(channel, settings.receiver, listener, shutdown).await
}

/// Serves Twilio's webhooks alone (`POST /twilio/status`,
/// `POST /twilio/inbound`, `GET /healthz`; no push endpoint) on `listener`
/// until `shutdown` completes: `labrelay sms-webhooks`, the public half of
/// an sms-service that Pub/Sub alone may reach. The handlers are the
/// sms-service's own ([`webhooks`]), over the same notification log.
pub async fn run_webhooks(
    settings: WebhookSettings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let WebhookSettings {
        auth_token,
        public_url,
        receiver,
    } = settings;
    labrelay_receiver::run_webhooks(
        "sms",
        "sms-webhooks",
        receiver,
        |facts| webhooks::router(auth_token, &public_url, facts),
        listener,
        shutdown,
    )
    .await
}
