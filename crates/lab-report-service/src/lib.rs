//! The lab-report-service: where a lab report enters labrelay.
//!
//! In the data flow it is the first hop: a lab `POST`s a lab report (JSON)
//! to `/`; the service validates it with `labrelay_contract::LabReport`,
//! publishes the validated body to `projects/{project}/topics/new-lab-report`
//! with the attribute `reportId` through the official `google-cloud-pubsub`
//! Publisher, and answers 204 only once the broker has stored it. The
//! email-service and sms-service receive it from there by push.
//!
//! A `POST /` is checked in this order: the API key (from the headers
//! alone, so a request without a valid one is answered 401 before a byte of
//! its body is read and without taking an in-flight slot), the in-flight
//! limit and request timeout, the `Content-Type`, then the body (its size,
//! then the report in it). The lab whose key let the request in becomes the
//! message attribute `lab`.
//!
//! Layout:
//! - [`settings`]: [`Settings`], read from the environment
//!   (`PUBSUB_EMULATOR_HOST`, `PUBSUB_PROJECT_ID`, ...).
//! - [`ingest_auth`]: the API keys labs present, kept as SHA-256 hashes
//!   and compared in constant time (`labrelay up` makes one with
//!   [`ingest_auth::hash_key`]).
//! - [`publisher`]: [`ReportPublisher`], the official Publisher pointed at
//!   the local broker or Google Cloud, each publish bounded in time.
//! - [`error`]: [`IngestError`], every reason for not answering 204, and its
//!   one mapping to HTTP responses.
//! - `routes`: the key check and the handlers for `POST /` and
//!   `GET /healthz` (`GET /metrics` is added here, outside the key and the
//!   limit).
//! - `metrics`: the service's Prometheus metrics (reports received by
//!   outcome, publishes, publish latency), in a registry of its own.
//!
//! Every request carrying a trace header runs in a span naming the trace
//! ([`labrelay_runtime::trace`]), so Cloud Logging groups its lines.
//!
//! [`app`] builds the router; [`run`] serves it on a bound listener until
//! shutdown.

pub mod error;
pub mod ingest_auth;
mod metrics;
pub mod publisher;
mod routes;
pub mod settings;

use std::future::Future;

use crate::ingest_auth::IngestAuth;
use anyhow::Context;
use labrelay_runtime::limits::{DEFAULT_MAX_IN_FLIGHT, Limits};

pub use error::IngestError;
pub use publisher::ReportPublisher;
pub use settings::Settings;

/// The service's router, with a publisher built from `settings`. The
/// publisher connects on the first report, so this succeeds while the
/// broker is down.
pub async fn app(settings: Settings) -> anyhow::Result<axum::Router> {
    let publisher = ReportPublisher::new(&settings).await?;
    match &settings.ingest_auth {
        IngestAuth::Open => tracing::warn!(
            "INGEST_OPEN=true: reports are accepted without an API key; anyone who can reach \
             this service can make it email and text arbitrary addresses"
        ),
        IngestAuth::Keys(keys) => {
            tracing::info!(labs = ?keys.labs().collect::<Vec<_>>(), "reports require an API key")
        }
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    // A report waits for at most one publish, plus room to read its body.
    let limits = Limits {
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        request_timeout: settings.publish_timeout + std::time::Duration::from_secs(5),
    };
    let router = routes::router(
        publisher,
        settings.max_body_bytes,
        settings.ingest_auth,
        metrics,
        limits,
    )
    // Read-only and free of personal data, so without the API key, and
    // outside the request limit so a scrape works while the service is busy.
    .merge(labrelay_runtime::metrics::router(std::sync::Arc::new(
        registry,
    )));
    Ok(labrelay_runtime::trace::apply(
        router,
        settings.trace_project.as_deref(),
    ))
}

/// Serves the service on `listener` until `shutdown` completes, then stops
/// accepting connections and lets in-flight requests finish.
///
/// The drain is bounded: no request waits on the broker for longer than the
/// publish timeout, so after that (plus a second for the answers to go out)
/// the remaining connections are dropped; their reports got no 204, so the
/// lab posts them again.
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let drain = settings.publish_timeout + std::time::Duration::from_secs(1);
    let configured_hosts = settings.allowed_hosts.clone();
    let app = app(settings).await?;
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    let hosts =
        labrelay_runtime::origin_guard::AllowedHosts::or_default_for(configured_hosts, addr);
    tracing::info!(%addr, "lab-report-service listening");

    let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
    let server = labrelay_runtime::serve::serve(listener, app, hosts, async move {
        shutdown.await;
        let _ = draining.send(());
    });
    let mut server = std::pin::pin!(server);
    tokio::select! {
        biased;
        // Nothing in flight: the server is done as soon as it is told.
        result = &mut server => result.context("serving HTTP")?,
        Ok(()) = drain_started => match tokio::time::timeout(drain, server).await {
            Ok(result) => result.context("serving HTTP")?,
            Err(_) => tracing::warn!(
                ?drain,
                "requests still in flight after the drain period; stopping anyway"
            ),
        },
    }
    tracing::info!("lab-report-service stopped");
    Ok(())
}
