//! The email-service: emails each lab report to the pet's owner.
//!
//! In labrelay's data flow it is the push endpoint of the subscription
//! `email-service-sub`: the broker POSTs one Pub/Sub push envelope per lab
//! report, and the service renders the report into a multipart/alternative
//! email and hands it to an SMTP server (lettre over rustls) or writes it to
//! a directory outbox. Its HTTP status is the acknowledgement: 204 when the
//! email went out (or there was no address to send to), 503 when delivery
//! may work later (the broker redelivers), 4xx when it never can (the broker
//! eventually dead-letters the message).
//!
//! Layout:
//! - [`config`]: [`Settings`] from the environment (`SMTP_URL`, `EMAIL_FROM`,
//!   ...) or built in code; secrets never reach `Debug`.
//! - `render`: subject, plain text and HTML from the askama templates in
//!   `templates/`.
//! - [`email`]: the addressed message, its content-derived Message-ID and the
//!   `X-Report-Id` and `Auto-Submitted` headers.
//! - `mailer`: SMTP or directory delivery, and the transient/permanent
//!   classification of failures.
//!   The directory outbox writes through
//!   [`labrelay_receiver::group_write`] (group commit).
//! - `http`: the push and health handlers, and the one mapping from a
//!   push's outcome to its HTTP status.
//! - `metrics` ([`labrelay_receiver::push_metrics`], shared with the
//!   sms-service): the Prometheus metrics served at `GET /metrics` (its own
//!   registry), and the `X-Labrelay-Outcome` header on every push answer.
//!
//! Every request carrying a trace header runs in a span naming the trace
//! ([`labrelay_runtime::trace`]), so Cloud Logging groups its lines.
//!
//! Duplicates: with `NOTIFY_LOG` set, every email sent is recorded
//! (report id, channel `email`, SHA-256 of recipient and content; see
//! [`labrelay_receiver::notify_log`]) and a push whose email is already
//! recorded is acknowledged without sending, whether it is a redelivery or
//! the lab posting the same report again. A corrected report (other
//! content) is sent. The one duplicate left: the service dies (or the
//! record fails) after the SMTP server accepted the message and before the
//! record is committed; the broker redelivers and the owner gets the same
//! email again, with the same Message-ID.
//!
//! [`app`] builds the router from [`Settings`]; [`run`] serves it on an
//! already-bound listener until a shutdown future completes.

pub mod config;
pub mod email;
mod http;
mod mailer;
use labrelay_receiver::push_metrics as metrics;
mod render;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use labrelay_contract::limits::{DEFAULT_MAX_IN_FLIGHT, Limits};

pub use config::{Delivery, Settings, SmtpCredentials, SmtpServer, SmtpTls};
pub use labrelay_runtime::secret::Secret;

/// What a push may take beyond one delivery attempt (reading the body, rendering).
const REQUEST_TIMEOUT_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Large enough for any Pub/Sub message (10 MB) once base64-encoded.
const MAX_PUSH_BODY: usize = 16 * 1024 * 1024;

/// The service's routes: `POST /` (push), `GET /healthz` and `GET /metrics`.
///
/// Must be called inside a Tokio runtime (the SMTP connection pool starts a
/// background task). Fails when the TLS settings cannot be built.
pub fn app(settings: Settings) -> anyhow::Result<Router> {
    Ok(build(settings)?.0)
}

fn build(settings: Settings) -> anyhow::Result<(Router, Arc<http::Service>)> {
    let mailer = mailer::Mailer::new(&settings.delivery, settings.send_timeout)
        .context("setting up email delivery")?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(metrics::Metrics::register(&mut registry, "email"));
    let service = Arc::new(http::Service {
        metrics: Arc::clone(&metrics),
        mailer,
        from: settings.from,
        reply_to: settings.reply_to,
        send_timeout: settings.send_timeout,
        dedupe: labrelay_receiver::notify_log::Dedupe::open_setting(&settings.notify_log, "email")?,
    });
    let pushes = Router::new().route("/", post(http::push));
    let router = settings
        .push_auth
        .protect(pushes)
        .route("/healthz", get(http::healthz))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BODY))
        .with_state(Arc::clone(&service));
    // A push is answered within the send timeout, plus room to read it.
    let router = Limits {
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        request_timeout: service.send_timeout + REQUEST_TIMEOUT_MARGIN,
    }
    .apply(router)
    .layer(axum::middleware::from_fn_with_state(
        metrics,
        metrics::count_pushes,
    ))
    // Read-only and free of personal data: no push token needed. Its own
    // route, so the token check on `POST /` is untouched.
    .merge(labrelay_contract::metrics::router(Arc::new(registry)));
    let router = labrelay_runtime::trace::apply(router, settings.trace_project.as_deref());
    Ok((router, service))
}

/// Serves the email-service on `listener` until `shutdown` completes, then
/// stops accepting, lets in-flight pushes finish (each is answered within
/// the send timeout) and closes pooled SMTP connections. An SMTP attempt
/// still going on after its push was answered ends with the process; its
/// claim is taken over at once by the next start on this host (SQLite log;
/// on Firestore it lapses with its lease).
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let configured_hosts = settings.allowed_hosts.clone();
    let (router, service) = build(settings)?;
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    let hosts =
        labrelay_contract::origin_guard::AllowedHosts::or_default_for(configured_hosts, addr);
    let notify_log = service
        .dedupe
        .as_ref()
        .map_or_else(|| "off".to_string(), |d| d.describe());
    tracing::info!(%addr, delivery = %service.mailer.describe(), %notify_log, "email-service listening");
    labrelay_contract::serve::serve(listener, router, hosts, shutdown)
        .await
        .context("serving HTTP")?;
    service.mailer.shutdown().await;
    tracing::info!("email-service stopped");
    Ok(())
}
