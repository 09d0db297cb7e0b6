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
//! its body is read and without taking an in-flight slot), the lab's rate
//! limit (429 with `Retry-After`, also before the body), the in-flight
//! limit and request timeout, the `Content-Type`, then the body (its size,
//! then the report in it). The lab whose key let the request in becomes the
//! message attribute `lab`.
//!
//! Layout:
//! - [`settings`]: [`Settings`], read from the environment
//!   (`PUBSUB_EMULATOR_HOST`, `PUBSUB_PROJECT_ID`, ...), and [`MetricsAt`],
//!   where `/metrics` is served.
//! - [`ingest_auth`]: the API keys labs present, kept as SHA-256 hashes
//!   and compared in constant time (`labrelay up` makes one with
//!   [`ingest_auth::hash_key`]).
//! - [`rate_limit`]: how many reports each lab may post, and the per-lab
//!   buckets that enforce it.
//! - [`publisher`]: [`ReportPublisher`], the official Publisher pointed at
//!   the local broker or Google Cloud, each publish bounded in time.
//! - [`error`]: [`IngestError`], every reason for not answering 204, and its
//!   one mapping to HTTP responses.
//! - `routes`: the key check and rate limit, and the handlers for `POST /`
//!   and `GET /healthz` (`GET /metrics` is added here, outside the key and
//!   the limits, or served on a port of its own).
//! - `metrics`: the service's Prometheus metrics (reports received by
//!   outcome, publishes, publish latency), in a registry of its own.
//!
//! Every request carrying a trace header runs in a span naming the trace
//! ([`labrelay_runtime::trace`]), so Cloud Logging groups its lines.
//!
//! [`app`] builds the router; [`run`] serves it on bound [`Listeners`]
//! until shutdown.

pub mod error;
pub mod ingest_auth;
mod metrics;
pub mod publisher;
pub mod rate_limit;
mod routes;
pub mod settings;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::ingest_auth::IngestAuth;
use crate::rate_limit::LabLimiter;
use anyhow::{Context, bail};
use labrelay_runtime::limits::{DEFAULT_MAX_IN_FLIGHT, Limits};
use labrelay_runtime::origin_guard::AllowedHosts;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub use error::IngestError;
pub use publisher::ReportPublisher;
pub use settings::{MetricsAt, Settings};

/// How long the metrics port keeps answering after the service has
/// drained, for a last scrape (the Prometheus sidecar scrapes once more
/// when the instance stops).
const METRICS_LINGER: Duration = Duration::from_secs(1);

/// Where the service listens: its port, and `/metrics`' own port when
/// [`Settings::metrics`] is [`MetricsAt::Port`].
#[derive(Debug)]
pub struct Listeners {
    pub service: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    /// The service's port alone.
    fn from(service: TcpListener) -> Listeners {
        Listeners {
            service,
            metrics: None,
        }
    }
}

/// The service's router, with a publisher built from `settings`; it
/// includes `GET /metrics` when [`Settings::metrics`] is
/// [`MetricsAt::ServicePort`]. The publisher connects on the first report,
/// so this succeeds while the broker is down.
pub async fn app(settings: Settings) -> anyhow::Result<axum::Router> {
    let on_service_port = settings.metrics == MetricsAt::ServicePort;
    let (router, registry) = service_router(settings).await?;
    Ok(if on_service_port {
        with_metrics(router, registry)
    } else {
        router
    })
}

/// The routes of the service (`POST /`, `GET /healthz`), and the registry
/// of its metrics.
async fn service_router(settings: Settings) -> anyhow::Result<(axum::Router, Arc<Registry>)> {
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
    tracing::info!(rate_limit = %settings.rate_limit, "ingest rate limit");
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    // A report waits for at most one publish, plus room to read its body.
    let limits = Limits {
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        request_timeout: settings.publish_timeout + Duration::from_secs(5),
    };
    let router = routes::router(
        publisher,
        settings.max_body_bytes,
        settings.ingest_auth,
        LabLimiter::new(settings.rate_limit),
        metrics,
        limits,
    );
    let router = labrelay_runtime::trace::apply(router, settings.trace_project.as_deref());
    Ok((router, Arc::new(registry)))
}

/// `router` with `GET /metrics`: read-only and free of personal data, so
/// without the API key, and outside the request limits so a scrape works
/// while the service is busy.
fn with_metrics(router: axum::Router, registry: Arc<Registry>) -> axum::Router {
    router.merge(labrelay_runtime::metrics::router(registry))
}

/// Serves the service on `listeners` until `shutdown` completes, then stops
/// accepting connections and lets in-flight requests finish.
///
/// The drain is bounded: no request waits on the broker for longer than the
/// publish timeout, so after that (plus a second for the answers to go out)
/// the remaining connections are dropped; their reports got no 204, so the
/// lab posts them again.
///
/// With [`MetricsAt::Port`], `/metrics` is served on `listeners.metrics`
/// only, and answered there until the service has drained (plus
/// `METRICS_LINGER`), so a last scrape sees every answer.
pub async fn run(
    settings: Settings,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Listeners {
        service: listener,
        metrics: metrics_listener,
    } = listeners.into();
    let drain = settings.publish_timeout + Duration::from_secs(1);
    let configured_hosts = settings.allowed_hosts.clone();
    let metrics_at = settings.metrics;
    let (app, registry) = service_router(settings).await?;
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    let (app, metrics_server) = match (metrics_at, metrics_listener) {
        (MetricsAt::ServicePort, None) => (with_metrics(app, registry), None),
        (MetricsAt::Nowhere, None) => {
            tracing::warn!(
                "on Cloud Run without METRICS_PORT: /metrics is not served (the service's \
                 port is public); set METRICS_PORT to serve it on a port of its own"
            );
            (app, None)
        }
        (MetricsAt::Port(_), Some(metrics_listener)) => {
            let metrics_addr = metrics_listener
                .local_addr()
                .context("reading the metrics listener's address")?;
            let hosts = AllowedHosts::or_default_for(configured_hosts.clone(), metrics_addr);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(labrelay_runtime::serve::serve(
                metrics_listener,
                labrelay_runtime::metrics::router(registry),
                hosts,
                async {
                    let _ = stopped.await;
                },
            ));
            tracing::info!(addr = %metrics_addr, "lab-report-service metrics listening");
            (app, Some((stop, server)))
        }
        (MetricsAt::Port(port), None) => {
            bail!("METRICS_PORT={port} is set, but no listener was bound for it")
        }
        (_, Some(_)) => bail!("a metrics listener was given, but METRICS_PORT is not set"),
    };
    let hosts = AllowedHosts::or_default_for(configured_hosts, addr);
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
    if let Some((stop, server)) = metrics_server {
        tokio::time::sleep(METRICS_LINGER).await;
        let _ = stop.send(());
        let mut server = server;
        if tokio::time::timeout(METRICS_LINGER, &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
    }
    tracing::info!("lab-report-service stopped");
    Ok(())
}
