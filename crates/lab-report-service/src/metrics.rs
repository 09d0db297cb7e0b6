//! The service's Prometheus metrics, in its own registry (served at
//! `/metrics`, on the service's port or on `METRICS_PORT`).
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `labrelay_reports_received_total` | `outcome` (`stored`, `rejected`, `rate_limited`, `unavailable`), `status` | every `POST /`, by its answer |
//! | `labrelay_reports_published_total` | | reports the broker confirmed |
//! | `labrelay_report_publish_failures_total` | `reason` (`timeout`, `error`) | publishes that ended in a 503 |
//! | `labrelay_report_publish_duration_seconds` | | histogram: publish call to the broker's answer (or the timeout), every publish |

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::publisher::PublishFailure;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceivedLabels {
    outcome: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reason: &'static str,
}

/// Handles to the service's metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    received: Family<ReceivedLabels, Counter>,
    published: Counter,
    publish_failures: Family<FailureLabels, Counter>,
    publish_duration: Histogram,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            received: Family::default(),
            published: Counter::default(),
            publish_failures: Family::default(),
            publish_duration: Histogram::new(labrelay_runtime::metrics::latency_buckets()),
        };
        registry.register(
            "labrelay_reports_received",
            "Lab reports POSTed, by outcome and HTTP status",
            metrics.received.clone(),
        );
        registry.register(
            "labrelay_reports_published",
            "Lab reports the broker confirmed as stored",
            metrics.published.clone(),
        );
        registry.register(
            "labrelay_report_publish_failures",
            "Publishes that failed (timeout or error); the lab got a 503",
            metrics.publish_failures.clone(),
        );
        registry.register(
            "labrelay_report_publish_duration_seconds",
            "Time from publishing a report to the broker's answer or the timeout",
            metrics.publish_duration.clone(),
        );
        metrics
    }

    /// One `POST /` answered.
    pub fn received(&self, outcome: &'static str, status: u16) {
        self.received
            .get_or_create(&ReceivedLabels { outcome, status })
            .inc();
    }

    /// One publish finished, after `elapsed`.
    pub fn published<T>(&self, result: &Result<T, PublishFailure>, elapsed: Duration) {
        self.publish_duration.observe(elapsed.as_secs_f64());
        match result {
            Ok(_) => {
                self.published.inc();
            }
            Err(failure) => {
                let reason = match failure {
                    PublishFailure::TimedOut(_) => "timeout",
                    PublishFailure::Failed(_) => "error",
                };
                self.publish_failures
                    .get_or_create(&FailureLabels { reason })
                    .inc();
            }
        }
    }
}
