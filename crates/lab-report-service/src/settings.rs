//! The service's typed settings, read once from the environment.
//!
//! The fields are public so that `labrelay up` can build a [`Settings`] in
//! code; a standalone process (Cloud Run) uses [`Settings::from_env`].

use std::time::Duration;

use crate::ingest_auth::IngestAuth;
use crate::rate_limit::RateLimit;
use anyhow::{Context, bail};
use labrelay_runtime::origin_guard::AllowedHosts;

/// The project used when neither `PUBSUB_PROJECT_ID` nor
/// `GOOGLE_CLOUD_PROJECT` is set.
pub const DEFAULT_PROJECT: &str = "labrelay-local";
/// The topic every report is published to.
pub const DEFAULT_TOPIC: &str = "new-lab-report";
/// 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(8);

/// How the lab-report-service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Project id (`PUBSUB_PROJECT_ID`, else `GOOGLE_CLOUD_PROJECT`, else
    /// [`DEFAULT_PROJECT`]).
    pub project: String,
    /// Topic id within the project (`LAB_REPORT_TOPIC`).
    pub topic: String,
    /// `host:port` of a local broker (`PUBSUB_EMULATOR_HOST`): plaintext gRPC,
    /// anonymous credentials. `None`: Google Cloud Pub/Sub with Application
    /// Default Credentials.
    pub emulator_host: Option<String>,
    /// Larger bodies are refused with 413 (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// How long a report may wait for the broker's confirmation before the
    /// lab gets a 503 (`PUBLISH_TIMEOUT_SECS`). It also bounds the client's
    /// own retries and the drain on shutdown.
    pub publish_timeout: Duration,
    /// How long the publisher may hold a message to batch it with others
    /// (`PUBLISH_BATCH_DELAY_MS`, default 0: sent on the next timer tick,
    /// batched only with reports that arrived in the same instant).
    pub batch_delay: Duration,
    /// Who may post reports (`INGEST_API_KEYS_FILE`, `INGEST_API_KEYS`,
    /// `INGEST_OPEN`; see [`crate::ingest_auth`]). Read from the
    /// environment, keys are required unless `INGEST_OPEN=true`; the
    /// [`Default`] for code and tests is open.
    pub ingest_auth: IngestAuth,
    /// The project in the trace names of log lines
    /// (`logging.googleapis.com/trace`): `GOOGLE_CLOUD_PROJECT`, else
    /// `PUBSUB_PROJECT_ID`. `None`: log lines name no trace.
    pub trace_project: Option<String>,
    /// Host names answered beyond loopback (`ALLOWED_HOSTS`; see
    /// [`labrelay_runtime::origin_guard`]). `None`: loopback names on a
    /// loopback address, any host beyond it.
    pub allowed_hosts: Option<AllowedHosts>,
    /// How many reports each lab may post (`INGEST_RATE_LIMIT`,
    /// `INGEST_RATE_BURST`; see [`crate::rate_limit`]).
    pub rate_limit: RateLimit,
    /// Where `GET /metrics` is served (`METRICS_PORT`).
    pub metrics: MetricsAt,
}

/// Where the service serves `GET /metrics`.
///
/// On Cloud Run only the service's one port is routed from the internet,
/// so a port of its own keeps the figures off the public ingest while a
/// Prometheus sidecar in the same instance scrapes them on `localhost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAt {
    /// On the service's port, beside `POST /` (the default, except on Cloud
    /// Run).
    ServicePort,
    /// On a port of its own (`METRICS_PORT`), at the service's address;
    /// not on the service's port. `0` picks a free port.
    Port(u16),
    /// Nowhere: on Cloud Run (`K_SERVICE` set) without `METRICS_PORT`, where
    /// the service's port is the public internet's.
    Nowhere,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            project: DEFAULT_PROJECT.to_string(),
            topic: DEFAULT_TOPIC.to_string(),
            emulator_host: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            batch_delay: Duration::ZERO,
            ingest_auth: IngestAuth::Open,
            trace_project: None,
            allowed_hosts: None,
            rate_limit: RateLimit::DEFAULT,
            metrics: MetricsAt::ServicePort,
        }
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> anyhow::Result<Settings> {
        Settings::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads settings through `get`, which returns a variable's value or
    /// `None`. Empty values count as unset, as gcloud treats them.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Settings> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let defaults = Settings::default();
        let project = get("PUBSUB_PROJECT_ID").or_else(|| get("GOOGLE_CLOUD_PROJECT"));
        // Cloud Run does not set the project; publishing to the local default
        // there would fail on every report, so refuse to start instead.
        if project.is_none()
            && labrelay_runtime::on_cloud_run(get)
            && get("PUBSUB_EMULATOR_HOST").is_none()
        {
            bail!(
                "set GOOGLE_CLOUD_PROJECT (or PUBSUB_PROJECT_ID): Cloud Run does not provide the project id"
            );
        }
        let project = project.unwrap_or(defaults.project);
        let topic = get("LAB_REPORT_TOPIC").unwrap_or(defaults.topic);
        if topic.contains('/') {
            bail!("LAB_REPORT_TOPIC must be a topic id such as `new-lab-report`, not {topic:?}");
        }
        let emulator_host = get("PUBSUB_EMULATOR_HOST");
        let max_body_bytes = match get("MAX_BODY_BYTES") {
            None => defaults.max_body_bytes,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| {
                    format!("MAX_BODY_BYTES must be a positive number of bytes, not {v:?}")
                })?,
        };
        let publish_timeout = match get("PUBLISH_TIMEOUT_SECS") {
            None => defaults.publish_timeout,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .with_context(|| {
                    format!("PUBLISH_TIMEOUT_SECS must be a positive number of seconds, not {v:?}")
                })?,
        };
        let batch_delay = match get("PUBLISH_BATCH_DELAY_MS") {
            None => defaults.batch_delay,
            Some(v) => v
                .parse::<u64>()
                .map(Duration::from_millis)
                .with_context(|| {
                    format!(
                        "PUBLISH_BATCH_DELAY_MS must be a whole number of milliseconds, not {v:?}"
                    )
                })?,
        };
        let ingest_auth = IngestAuth::from_vars(get)?;
        let rate_limit = RateLimit::from_vars(get)?;
        let metrics = match get("METRICS_PORT") {
            Some(v) => MetricsAt::Port(v.parse::<u16>().with_context(|| {
                format!("METRICS_PORT must be a port number (0 to 65535), not {v:?}")
            })?),
            None if labrelay_runtime::on_cloud_run(get) => MetricsAt::Nowhere,
            None => MetricsAt::ServicePort,
        };
        let trace_project = labrelay_runtime::trace::project_from_vars(get);
        let settings = Settings {
            project,
            topic,
            emulator_host,
            max_body_bytes,
            publish_timeout,
            batch_delay,
            ingest_auth,
            trace_project,
            allowed_hosts: AllowedHosts::from_vars(get)?,
            rate_limit,
            metrics,
        };
        settings.emulator_endpoint()?;
        Ok(settings)
    }

    /// `projects/{project}/topics/{topic}`.
    pub fn topic_name(&self) -> String {
        format!("projects/{}/topics/{}", self.project, self.topic)
    }

    /// The local broker's URL (`http://host:port`), if one is configured.
    ///
    /// `PUBSUB_EMULATOR_HOST` is `host:port` by convention; a value that
    /// already carries a scheme is taken as the URL.
    pub fn emulator_endpoint(&self) -> anyhow::Result<Option<String>> {
        let Some(host) = &self.emulator_host else {
            return Ok(None);
        };
        Ok(Some(labrelay_runtime::pubsub::endpoint(host)?))
    }
}
