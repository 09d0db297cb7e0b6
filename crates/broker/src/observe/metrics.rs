//! The broker's Prometheus metrics, served at `GET /metrics` on its port.
//!
//! The registry belongs to the broker (no process-wide registry), so under
//! `labrelay up` the broker's port answers with the broker's figures only.
//! Counters and histograms are updated by the hooks of
//! [`Observers`](super::Observers); backlog, in-flight and oldest-unacked age are read from each
//! subscription's queue at scrape time by [`BacklogCollector`].
//!
//! | metric | labels |
//! | --- | --- |
//! | `labrelay_broker_published_messages_total` | `topic` |
//! | `labrelay_broker_publish_latency_seconds` (request to durable commit) | `topic` |
//! | `labrelay_broker_push_attempts_total` | `subscription`, `code` (HTTP status, or `timeout`, `connection`, `error`) |
//! | `labrelay_broker_push_latency_seconds` (one push request) | `subscription` |
//! | `labrelay_broker_delivery_latency_seconds` (publish to acknowledged push) | `subscription` |
//! | `labrelay_broker_dead_lettered_messages_total` | `subscription` |
//! | `labrelay_broker_dead_letters_dropped_total` (forwarded to a dead-letter topic without a subscription: lost) | `topic` |
//! | `labrelay_broker_dead_letter_topic_unsubscribed` (1: the subscription's dead letters would be dropped) | `subscription`, `topic` |
//! | `labrelay_broker_backlog_messages`, `_in_flight_messages`, `_oldest_unacked_message_age_seconds` | `subscription` |
//! | `labrelay_broker_journal_dropped_events_total` | |

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use labrelay_runtime::metrics::latency_buckets;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::hooks::PushResult;
use crate::engine::subscription::Counts;
use crate::engine::{Engine, WeakEngine};

type Labels = [(&'static str, String); 1];
type CodeLabels = [(&'static str, String); 2];
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;
/// How a scrape-time gauge is read from a subscription's counts.
type Gauge = fn(&Counts, SystemTime) -> f64;

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// One subscription's handles on the push metrics (clones share the
/// registry's values).
#[derive(Debug)]
pub(crate) struct PushMetrics {
    subscription: String,
    latency: Histogram,
    delivery: Histogram,
    /// Attempt counters by status code (or failure kind), found on first use.
    attempts: Mutex<Vec<(Result<u16, &'static str>, Counter)>>,
}

/// The metrics the hooks update. Clones share the same values.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    published: Family<Labels, Counter>,
    publish_latency: Histograms,
    push_attempts: Family<CodeLabels, Counter>,
    push_latency: Histograms,
    delivery_latency: Histograms,
    dead_lettered: Family<Labels, Counter>,
    dead_letters_dropped: Family<Labels, Counter>,
    pub journal_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            published: Family::default(),
            publish_latency: Family::new_with_constructor(latency_histogram),
            push_attempts: Family::default(),
            push_latency: Family::new_with_constructor(latency_histogram),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            dead_lettered: Family::default(),
            dead_letters_dropped: Family::default(),
            journal_dropped: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn published(&self, topic: &str, count: u64, latency: Duration) {
        let labels = [("topic", topic.to_string())];
        self.published.get_or_create(&labels).inc_by(count);
        self.publish_latency
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
    }

    /// The push metrics of `subscription`, to be kept by the subscription:
    /// the hooks then update them without building labels.
    pub fn push_metrics(&self, subscription: &str) -> PushMetrics {
        let labels = [("subscription", subscription.to_string())];
        PushMetrics {
            subscription: subscription.to_string(),
            latency: self.push_latency.get_or_create(&labels).clone(),
            delivery: self.delivery_latency.get_or_create(&labels).clone(),
            attempts: Mutex::default(),
        }
    }

    pub fn pushed(&self, cached: &PushMetrics, result: PushResult<'_>, latency: Duration) {
        let code = match result {
            PushResult::Status(code) => Ok(code),
            PushResult::Failed(why) if why.contains("timed out") => Err("timeout"),
            PushResult::Failed(why) if why.contains("connection") => Err("connection"),
            PushResult::Failed(_) => Err("error"),
        };
        let counter = {
            let mut attempts = cached.attempts.lock().expect("push metrics lock");
            match attempts.iter().find(|(c, _)| *c == code) {
                Some((_, counter)) => counter.clone(),
                None => {
                    let label = match code {
                        Ok(status) => status.to_string(),
                        Err(what) => what.to_string(),
                    };
                    let counter = self
                        .push_attempts
                        .get_or_create(&[
                            ("subscription", cached.subscription.clone()),
                            ("code", label),
                        ])
                        .clone();
                    attempts.push((code, counter.clone()));
                    counter
                }
            }
        };
        counter.inc();
        cached.latency.observe(latency.as_secs_f64());
    }

    pub fn delivered(&self, cached: &PushMetrics, since_publish: Duration) {
        cached.delivery.observe(since_publish.as_secs_f64());
    }

    pub fn dead_lettered(&self, subscription: &str) {
        self.dead_lettered
            .get_or_create(&[("subscription", subscription.to_string())])
            .inc();
    }

    /// A dead letter forwarded to `topic`, which has no subscription: lost.
    pub fn dead_letter_dropped(&self, topic: &str) {
        self.dead_letters_dropped
            .get_or_create(&[("topic", topic.to_string())])
            .inc();
    }

    /// A registry with these metrics and the scrape-time backlog gauges of
    /// `engine`'s subscriptions.
    pub fn registry(&self, engine: WeakEngine) -> Registry {
        let mut registry = Registry::with_prefix("labrelay_broker");
        registry.register(
            "published_messages",
            "Messages published (stored durably)",
            self.published.clone(),
        );
        registry.register(
            "publish_latency_seconds",
            "Time from a publish request to its durable commit",
            self.publish_latency.clone(),
        );
        registry.register(
            "push_attempts",
            "Push requests by HTTP status code (or timeout, connection, error)",
            self.push_attempts.clone(),
        );
        registry.register(
            "push_latency_seconds",
            "Duration of one push request",
            self.push_latency.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from publish to the push that acknowledged the message",
            self.delivery_latency.clone(),
        );
        registry.register(
            "dead_lettered_messages",
            "Messages forwarded to a dead-letter topic",
            self.dead_lettered.clone(),
        );
        registry.register(
            "dead_letters_dropped",
            "Dead letters lost: forwarded to a dead-letter topic without a subscription",
            self.dead_letters_dropped.clone(),
        );
        registry.register(
            "journal_dropped_events",
            "Journal events dropped because the journal's queue was full",
            self.journal_dropped.clone(),
        );
        registry.register_collector(Box::new(BacklogCollector { engine }));
        registry
    }
}

/// Backlog, in-flight and oldest-unacked age per subscription (named without
/// the registry's prefix, which the registry adds), read from
/// the subscriptions' queues at scrape time.
struct BacklogCollector {
    engine: WeakEngine,
}

impl std::fmt::Debug for BacklogCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BacklogCollector").finish_non_exhaustive()
    }
}

impl Collector for BacklogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(engine) = self.engine.upgrade() else {
            return Ok(());
        };
        let now = SystemTime::now();
        let subscriptions = engine.all_subscriptions();
        let counts: Vec<(String, Counts)> = subscriptions
            .iter()
            .map(|s| (s.name.to_string(), s.counts()))
            .collect();
        let gauges: [(&str, &str, Gauge); 3] = [
            (
                "backlog_messages",
                "Unacknowledged messages of the subscription",
                |c, _| c.backlog as f64,
            ),
            (
                "in_flight_messages",
                "Messages leased (being delivered) and not yet acknowledged",
                |c, _| c.in_flight as f64,
            ),
            (
                "oldest_unacked_message_age_seconds",
                "Age of the oldest unacknowledged message (0 when none)",
                |c, now| c.oldest_age(now).as_secs_f64(),
            ),
        ];
        for (name, help, value) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (subscription, c) in &counts {
                let labels = [("subscription", subscription.as_str())];
                ConstGauge::new(value(c, now)).encode(metric.encode_family(&labels)?)?;
            }
        }
        let mut unsubscribed = encoder.encode_descriptor(
            "dead_letter_topic_unsubscribed",
            "1 when the subscription's dead-letter topic has no subscription: \
             its dead letters are dropped (lost)",
            None,
            MetricType::Gauge,
        )?;
        for sub in &subscriptions {
            let config = sub.config();
            if let Some(policy) = &config.dead_letter_policy {
                let labels = [
                    ("subscription", sub.name.as_str()),
                    ("topic", policy.dead_letter_topic.as_str()),
                ];
                let drops = engine.drops_dead_letters(&config);
                ConstGauge::new(i64::from(drops)).encode(unsubscribed.encode_family(&labels)?)?;
            }
        }
        let sqlite = encoder.encode_descriptor(
            "sqlite_memory_bytes",
            "Heap memory SQLite holds for every connection of the broker \
             (page caches, statements); bounded by the connections' cache sizes",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(sqlite_memory_bytes()).encode(sqlite)?;
        Ok(())
    }
}

/// What SQLite's allocator has out now, across the process.
#[allow(unsafe_code)]
fn sqlite_memory_bytes() -> i64 {
    // SAFETY: sqlite3_memory_used only reads SQLite's own counters, under
    // its own mutex; it has no preconditions.
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}

/// `GET /metrics`: `metrics` and the backlog gauges of `engine`.
pub(crate) fn router(metrics: &Metrics, engine: &Engine) -> axum::Router {
    labrelay_runtime::metrics::router(Arc::new(metrics.registry(engine.downgrade())))
}
