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
//! redelivery waits for it and finds the record. The one duplicate left:
//! the service dies (or the record fails, or the request outlives its
//! limit, [`attempt_limit`](labrelay_receiver::notify_log::attempt_limit))
//! after Twilio accepted the message and before the record is committed;
//! the broker redelivers and the owner gets it twice.
//!
//! Layout:
//! - [`settings`]: typed settings from the environment or from code.
//! - [`phone`]: [`PhoneNumber`], E.164, parsed once.
//! - [`segments`]: GSM-7 / UCS-2 length and segment counting.
//! - [`notice`]: the SMS text, shortened to fit one segment.
//! - `routes`: `POST /`, `GET /healthz` and `GET /metrics`.
//! - `metrics` ([`labrelay_receiver::push_metrics`], shared with the
//!   email-service): the Prometheus metrics (its own registry), and the
//!   `X-Labrelay-Outcome` header on every push answer.
//! - `transport`: the channel (Twilio or outbox) and its errors.
//! - `twilio`: the Twilio Messages API client and how its errors classify.
//! - `outbox`: one JSON file per message, written atomically.
//!   It writes through [`labrelay_receiver::group_write`] (group commit).
//! - `outcome`: the one mapping from what happened to HTTP status and log.
//!
//! Every request carrying a trace header runs in a span naming the trace
//! ([`labrelay_runtime::trace`]), so Cloud Logging groups its lines.

use labrelay_receiver::push_metrics as metrics;
pub mod notice;
mod outbox;
mod outcome;
pub mod phone;
mod routes;
pub mod segments;
pub mod settings;
mod transport;
mod twilio;

use std::future::Future;

use anyhow::Context as _;
use labrelay_contract::origin_guard::AllowedHosts;

pub use labrelay_runtime::secret::Secret;
pub use phone::{PhoneError, PhoneNumber};
pub use settings::{Channel, OutboxSettings, Settings, TwilioSender, TwilioSettings};

/// How long a push waits for its SMS (the Twilio request or the file
/// write) before the broker is answered 503: the Twilio timeout. The send
/// goes on and is recorded or released when it ends.
fn answer_within(channel: &Channel) -> std::time::Duration {
    match channel {
        Channel::Twilio(twilio) => twilio.timeout,
        Channel::Outbox(_) => settings::DEFAULT_TWILIO_TIMEOUT,
    }
}

/// A push is answered within the Twilio timeout, plus room to read it.
fn limits(channel: &Channel) -> labrelay_contract::limits::Limits {
    labrelay_contract::limits::Limits {
        max_in_flight: labrelay_contract::limits::DEFAULT_MAX_IN_FLIGHT,
        request_timeout: answer_within(channel).saturating_add(std::time::Duration::from_secs(5)),
    }
}

/// The service as a router, ready to serve or to test with `oneshot`.
/// Fails on invalid settings or an outbox directory that cannot be created.
pub fn app(settings: Settings) -> anyhow::Result<axum::Router> {
    let transport = transport::Transport::new(&settings)?;
    tracing::debug!(channel = %transport.describe(), "sms-service built");
    let service = routes::Service {
        transport,
        dedupe: labrelay_receiver::notify_log::Dedupe::open_setting(&settings.notify_log, "SMS")?,
    };
    Ok(routes::router(service, &settings))
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
    let transport = transport::Transport::new(&settings)?;
    let address = listener
        .local_addr()
        .context("reading the listener's address")?;
    let dedupe = labrelay_receiver::notify_log::Dedupe::open_setting(&settings.notify_log, "SMS")?;
    let notify_log = dedupe
        .as_ref()
        .map_or_else(|| "off".to_string(), |d| d.describe());
    tracing::info!(%address, channel = %transport.describe(), %notify_log, "sms-service listening");
    let service = routes::Service { transport, dedupe };
    let router = routes::router(service, &settings);
    let hosts = AllowedHosts::or_default_for(settings.allowed_hosts.clone(), address);
    labrelay_contract::serve::serve(listener, router, hosts, shutdown)
        .await
        .context("serving the sms-service")?;
    tracing::info!("sms-service stopped");
    Ok(())
}
