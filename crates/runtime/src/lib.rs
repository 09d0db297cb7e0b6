//! What every labrelay process shares to run, whatever its part in the
//! data flow: the broker, the lab-report-service, the email-service and the
//! sms-service each serve HTTP, limit their callers, expose metrics, log,
//! trace, keep their data private and stop the same way.
//!
//! Layout:
//! - [`serve`]: serving a router (the services' and the broker's) on a
//!   bound listener with connections that say nothing closed, at most 512
//!   at once (idle ones closed while all are taken), and graceful shutdown;
//!   `free_port` for servers told their port first; `Activity`, what a
//!   connection is doing (the broker's push connections keep one too).
//! - [`pubsub`]: `PUBSUB_EMULATOR_HOST`, where a publisher finds a local
//!   broker, and the Publisher every publishing process builds the same
//!   way.
//! - [`origin_guard`]: refuses what a web page can make a browser send
//!   (cross-site requests, DNS rebinding) on every port, before any
//!   handler.
//! - [`limits`]: the concurrency limit (503) and request timeout (408) every
//!   service puts in front of its routes.
//! - [`metrics`]: the Prometheus registry each service serves at
//!   `/metrics`.
//! - [`telemetry`]: the one tracing setup: text locally, JSON in Cloud
//!   Logging's shape on Cloud Run.
//! - [`trace`]: the trace a request belongs to (`traceparent`,
//!   `X-Cloud-Trace-Context`), as span fields Cloud Logging correlates.
//! - [`shutdown`]: the one shutdown signal (SIGINT, SIGTERM).
//! - [`secret`]: credentials read from the environment, never printed, and
//!   the one a request presents as `Authorization: Bearer`.
//! - [`private_fs`]: the data directory's modes (directories 0700, files
//!   0600, looser ones tightened) and keys written atomically.

pub mod limits;
pub mod metrics;
pub mod origin_guard;
pub mod private_fs;
pub mod pubsub;
pub mod secret;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod trace;

/// Whether this process runs on Cloud Run, which names every service's
/// container in `K_SERVICE`; `get` reads a variable (blank counts as
/// unset). There the services listen on all interfaces, log JSON, keep
/// `/metrics` off the public port and answer a push only when its work is
/// done.
pub fn on_cloud_run(get: impl Fn(&str) -> Option<String>) -> bool {
    get("K_SERVICE").is_some_and(|service| !service.trim().is_empty())
}

/// [`on_cloud_run`], reading the process environment.
pub fn on_cloud_run_env() -> bool {
    on_cloud_run(|name| std::env::var(name).ok())
}
