//! What the broker observes about its own traffic, kept off the paths that
//! make it durable and fast: per-subscription push figures ([`stats`]),
//! Prometheus metrics ([`metrics`], served at `/metrics`) and each
//! message's journey ([`journal`], for the console).
//!
//! [`Observers`] holds the three and is the engine's
//! [`Observer`](crate::engine::hooks::Observer): its hooks only bump atomics
//! and Prometheus counters, take a subscription's own stats mutex for a
//! moment, and hand an event to the journal's bounded queue with a
//! non-blocking `try_send`; they never wait for I/O.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use crate::config::BrokerConfig;
use crate::engine::hooks::{Observer, PushResult, PushTrace};
use crate::engine::payloads::Message;
use crate::engine::subscription::{Delivery, Subscription};

pub(crate) mod journal;
pub(crate) mod metrics;
pub(crate) mod stats;

use journal::{Event, Journal};
use metrics::Metrics;
use stats::{LastError, unix_secs};

/// The broker's observers: metrics, per-subscription stats and the journal.
pub(crate) struct Observers {
    pub metrics: Metrics,
    pub journal: Journal,
    /// Whether the console may show message data (`--console-show-data`).
    pub show_data: bool,
}

impl Observers {
    /// Opens the journal in `config.data_dir` (setting aside one that cannot
    /// be read) beside a new metrics registry.
    pub fn open(config: &BrokerConfig) -> anyhow::Result<Observers> {
        let metrics = Metrics::default();
        let path = config.data_dir.join("journal.sqlite3");
        let open = || {
            Journal::open(
                &path,
                config.journal_max_messages,
                config.console_show_data,
                metrics.journal_dropped.clone(),
            )
        };
        // The journal is history, not data: one that cannot be opened (a
        // corrupt file) is set aside and started afresh rather than keeping
        // the broker down.
        let journal = match open() {
            Ok(journal) => journal,
            Err(error) => {
                let aside =
                    path.with_extension(format!("sqlite3.broken-{}", unix_secs(SystemTime::now())));
                tracing::warn!(error = format!("{error:#}"), aside = %aside.display(), "journal unreadable; starting a new one");
                std::fs::rename(&path, &aside)?;
                for suffix in ["-wal", "-shm"] {
                    let mut side = path.clone().into_os_string();
                    side.push(suffix);
                    let _ = std::fs::remove_file(side);
                }
                open()?
            }
        };
        Ok(Observers {
            metrics,
            journal,
            show_data: config.console_show_data,
        })
    }
}

impl Observer for Observers {
    /// The journal keeps message data with `--console-show-data`.
    fn keeps_data(&self) -> bool {
        self.show_data
    }

    /// Counts the publish and journals each message with the subscriptions
    /// it went to.
    fn published(
        &self,
        topic: &str,
        messages: &[Arc<Message>],
        subscriptions: Vec<Arc<Subscription>>,
        wanted: Vec<Vec<bool>>,
        latency: Duration,
    ) {
        self.metrics
            .published(topic, messages.len() as u64, latency);
        self.journal.send(Event::Published {
            topic: topic.to_string(),
            messages: messages.to_vec(),
            subscriptions,
            wanted,
        });
    }

    fn pushed(
        &self,
        sub: &Subscription,
        delivery: &Delivery,
        result: PushResult<'_>,
        trace: PushTrace,
    ) {
        let now = SystemTime::now();
        let ok = matches!(result, PushResult::Status(code) if crate::retry::is_push_ack(code));
        let status = match result {
            PushResult::Status(code) => Some(code),
            PushResult::Failed(_) => None,
        };
        let error = match result {
            PushResult::Status(code) if !ok => Some(format!("HTTP {code}")),
            PushResult::Status(_) => None,
            PushResult::Failed(why) => Some(why.to_string()),
        };
        let stats = stats::of(sub);
        stats.record_push(ok, now, || LastError {
            at: now,
            message_id: delivery.message.pb.message_id.clone(),
            attempt: delivery.attempt,
            status,
            error: error.clone().unwrap_or_default(),
        });
        let name = sub.name.as_str();
        let metrics = stats.push_metrics(|| self.metrics.push_metrics(name));
        self.metrics.pushed(metrics, result, trace.latency);
        if ok {
            let age = now
                .duration_since(delivery.message.published_at)
                .unwrap_or_default();
            self.metrics.delivered(metrics, age);
        }
        self.journal.send(Event::Attempt {
            message_id: delivery.message.seq,
            subscription: name.to_string(),
            attempt: delivery.attempt,
            at: now,
            status,
            error,
            latency: trace.latency,
            outcome: trace.receiver_outcome,
            reason: trace.receiver_reason,
            provider_id: trace.provider_id,
        });
    }

    fn acked(&self, sub: &Subscription, seqs: &[u64]) {
        self.journal.send(Event::Acked {
            subscription: sub.name.to_string(),
            seqs: seqs.to_vec(),
            at: SystemTime::now(),
        });
    }

    fn dead_lettered(
        &self,
        sub: &Subscription,
        message: &Message,
        attempts: u32,
        reason: &str,
        topic: &str,
        dead_letter_id: Option<&str>,
    ) {
        stats::of(sub).record_dead_letter();
        self.metrics.dead_lettered(sub.name.as_str());
        if dead_letter_id.is_none() {
            self.metrics.dead_letter_dropped(topic);
        }
        self.journal.send(Event::DeadLettered {
            message_id: message.seq,
            subscription: sub.name.to_string(),
            at: SystemTime::now(),
            attempts,
            reason: reason.to_string(),
            dead_letter_id: dead_letter_id.map(str::to_string),
        });
    }

    /// Stops the journal after it wrote what it was given.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.journal.close())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the hooks cost the publish and push paths, per call (run by
    /// hand: `cargo test --profile bench -p labrelay-broker --lib hook_cost
    /// -- --ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn hook_cost() {
        use crate::engine::subscription::LeaseId;
        use crate::names::SubscriptionName;
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::new(dir.path(), "127.0.0.1:1".parse().unwrap());
        let observer = Observers::open(&config).unwrap();
        let name = SubscriptionName::parse("projects/p/subscriptions/email").unwrap();
        let sub = Arc::new(Subscription::new(
            name,
            1,
            crate::pb::Subscription::default(),
        ));
        let message = Arc::new(Message {
            seq: 1,
            pb: crate::pb::PubsubMessage {
                data: vec![b'x'; 1024],
                attributes: [("reportId".to_string(), "LR-1".to_string())].into(),
                message_id: "1".into(),
                ..Default::default()
            },
            published_at: SystemTime::now(),
        });
        let delivery = Delivery {
            ack_id: "1-1".into(),
            lease: LeaseId {
                seq: 1,
                generation: 1,
            },
            message: message.clone(),
            attempt: 1,
        };
        let n = 20_000u32;
        let started = std::time::Instant::now();
        for _ in 0..n {
            observer.published(
                "projects/p/topics/t",
                std::slice::from_ref(&message),
                vec![sub.clone()],
                vec![vec![true]],
                Duration::from_micros(200),
            );
        }
        let publish = started.elapsed() / n;
        let started = std::time::Instant::now();
        for _ in 0..n {
            let trace = PushTrace {
                latency: Duration::from_millis(2),
                receiver_outcome: Some("sent".into()),
                ..PushTrace::default()
            };
            observer.pushed(&sub, &delivery, PushResult::Status(204), trace);
        }
        let push = started.elapsed() / n;
        let draining = std::time::Instant::now();
        runtime.block_on(observer.close());
        eprintln!(
            "published hook: {publish:?}/call, pushed hook: {push:?}/call, journal events dropped: {}, \
             journal drained {} events in {:?} after the last hook",
            observer.metrics.journal_dropped.get(),
            2 * n,
            draining.elapsed()
        );
    }

    #[test]
    fn a_corrupt_journal_is_set_aside_and_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("journal.sqlite3"),
            b"not a database, not at all",
        )
        .unwrap();
        let config = BrokerConfig::new(dir.path(), "127.0.0.1:1".parse().unwrap());
        let observer = Observers::open(&config).unwrap();
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".broken-"))
            .count();
        assert_eq!(aside, 1);
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(observer.close());
    }
}
