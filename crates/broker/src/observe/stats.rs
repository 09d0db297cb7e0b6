//! What the broker observes about its own traffic, for the console and
//! `/metrics`: per-subscription push counters, a 30-minute time series of
//! push successes and failures, the last push error, and the hooks the
//! engine and the push worker call.
//!
//! [`Observer`] is the one entry point. Its hooks only bump atomics, take an
//! uncontended per-subscription mutex or hand an event to the journal's
//! bounded queue, so they never wait on I/O: the durable publish path and
//! the push path stay what they were. Backlog, in-flight and oldest-unacked
//! figures are not tracked here at all; they are read from the
//! subscription's own queue when someone asks ([`crate::engine::subscription::Counts`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::config::BrokerConfig;
use crate::observe::journal::{Event, Journal};
use crate::observe::metrics::{Metrics, PushMetrics};
use crate::engine::subscription::{Delivery, Message, Subscription};

/// Width of one time-series bucket.
pub(crate) const BUCKET_SECS: u64 = 10;
/// Buckets kept: 30 minutes.
pub(crate) const BUCKETS: usize = 180;
/// The header push receivers answer with to say what they did.
pub(crate) const OUTCOME_HEADER: &str = "x-labrelay-outcome";

/// One subscription's push figures since the broker started.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionStats {
    pushes_ok: AtomicU64,
    pushes_failed: AtomicU64,
    dead_lettered: AtomicU64,
    recent: Mutex<Recent>,
    /// Handles on this subscription's push metrics, looked up on the first
    /// push.
    metrics: OnceLock<PushMetrics>,
}

#[derive(Debug, Default)]
struct Recent {
    series: Series,
    last_error: Option<LastError>,
}

/// Why the last failed push failed.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LastError {
    #[serde(rename = "at_ms", serialize_with = "serialize_millis")]
    pub at: SystemTime,
    pub message_id: String,
    pub attempt: u32,
    /// The HTTP status, when the endpoint answered.
    pub status: Option<u16>,
    pub error: String,
}

impl LastError {
    pub fn at_ms(&self) -> i64 {
        unix_millis(self.at)
    }
}

/// A copy of a subscription's figures, for one answer.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct StatsSnapshot {
    pub pushes_ok: u64,
    pub pushes_failed: u64,
    pub dead_lettered: u64,
    /// Successful pushes per second over the last minute.
    pub delivery_rate: f64,
    pub last_error: Option<LastError>,
    pub series: SeriesSnapshot,
}

impl SubscriptionStats {
    fn record_push(&self, ok: bool, at: SystemTime, error: impl FnOnce() -> LastError) {
        let counter = if ok {
            &self.pushes_ok
        } else {
            &self.pushes_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock().expect("stats lock");
        recent.series.record(unix_secs(at), ok);
        if !ok {
            recent.last_error = Some(error());
        }
    }

    pub fn snapshot(&self, now: SystemTime) -> StatsSnapshot {
        let recent = self.recent.lock().expect("stats lock");
        let series = recent.series.snapshot(unix_secs(now));
        let last_minute = (60 / BUCKET_SECS) as usize;
        let delivered: u32 = series.success.iter().rev().take(last_minute).sum();
        StatsSnapshot {
            pushes_ok: self.pushes_ok.load(Ordering::Relaxed),
            pushes_failed: self.pushes_failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            delivery_rate: f64::from(delivered) / 60.0,
            last_error: recent.last_error.clone(),
            series,
        }
    }
}

/// Push successes and failures in [`BUCKET_SECS`] buckets, the last
/// [`BUCKETS`] of them. Takes the time as an argument, so it is tested
/// without a clock.
#[derive(Debug, Default)]
pub(crate) struct Series {
    /// (bucket number since the epoch, successes, failures), oldest first.
    buckets: VecDeque<(u64, u32, u32)>,
}

/// A series laid out for a chart: `success[i]` and `failure[i]` belong to the
/// bucket starting `start + i * bucket_secs` (Unix seconds).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct SeriesSnapshot {
    pub start: u64,
    pub bucket_secs: u64,
    pub success: Vec<u32>,
    pub failure: Vec<u32>,
}

impl Series {
    pub fn record(&mut self, unix_secs: u64, ok: bool) {
        let bucket = unix_secs / BUCKET_SECS;
        let last = self.buckets.back().map(|b| b.0);
        // A clock that stepped back counts in the newest bucket.
        if last.is_none_or(|last| bucket > last) {
            self.buckets.push_back((bucket, 0, 0));
        }
        if let Some(entry) = self.buckets.back_mut() {
            if ok {
                entry.1 = entry.1.saturating_add(1);
            } else {
                entry.2 = entry.2.saturating_add(1);
            }
        }
        let newest = self.buckets.back().map_or(bucket, |b| b.0);
        while self
            .buckets
            .front()
            .is_some_and(|b| b.0 + BUCKETS as u64 <= newest)
        {
            self.buckets.pop_front();
        }
    }

    pub fn snapshot(&self, unix_secs: u64) -> SeriesSnapshot {
        let now = unix_secs / BUCKET_SECS;
        let first = (now + 1).saturating_sub(BUCKETS as u64);
        let mut success = vec![0; BUCKETS];
        let mut failure = vec![0; BUCKETS];
        for &(bucket, ok, failed) in &self.buckets {
            if bucket >= first && bucket <= now {
                let i = (bucket - first) as usize;
                success[i] = ok;
                failure[i] = failed;
            }
        }
        SeriesSnapshot {
            start: first * BUCKET_SECS,
            bucket_secs: BUCKET_SECS,
            success,
            failure,
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_millis(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn serialize_millis<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(unix_millis(*at))
}

pub(crate) fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How one push ended, as the push worker saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PushResult<'a> {
    Status(u16),
    Failed(&'a str),
}

/// Timing and the receiver's own account of one push.
#[derive(Debug, Default)]
pub(crate) struct PushTrace {
    pub latency: Duration,
    /// `X-Labrelay-Outcome` (`sent`, `skipped`, `duplicate`), when present
    /// and a short token.
    pub receiver_outcome: Option<String>,
}

impl PushTrace {
    pub fn from_response(response: &reqwest::Response, started: std::time::Instant) -> PushTrace {
        let receiver_outcome = response
            .headers()
            .get(OUTCOME_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 32
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            .map(str::to_ascii_lowercase);
        PushTrace {
            latency: started.elapsed(),
            receiver_outcome,
        }
    }

    pub fn failed(started: std::time::Instant) -> PushTrace {
        PushTrace {
            latency: started.elapsed(),
            receiver_outcome: None,
        }
    }
}

/// The broker's observer: metrics, per-subscription stats and the journal.
pub(crate) struct Observer {
    pub metrics: Metrics,
    pub journal: Journal,
    /// Whether the console may show message data (`--console-show-data`).
    pub show_data: bool,
}

impl Observer {
    pub fn open(config: &BrokerConfig) -> anyhow::Result<Observer> {
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
        Ok(Observer {
            metrics,
            journal,
            show_data: config.console_show_data,
        })
    }

    /// After the store committed a publish: counts it and journals each
    /// message with the subscriptions it went to (`wanted[s][m]`).
    pub fn published(
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

    /// A push request ended, acknowledged or not.
    pub fn pushed(
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
        sub.stats.record_push(ok, now, || LastError {
            at: now,
            message_id: delivery.message.pb.message_id.clone(),
            attempt: delivery.attempt,
            status,
            error: error.clone().unwrap_or_default(),
        });
        let name = sub.name.as_str();
        let metrics = sub
            .stats
            .metrics
            .get_or_init(|| self.metrics.push_metrics(name));
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
        });
    }

    /// Messages acknowledged by a pull subscriber (`Acknowledge`, or an ack
    /// on a StreamingPull stream).
    pub fn acked(&self, sub: &Subscription, seqs: &[u64]) {
        self.journal.send(Event::Acked {
            subscription: sub.name.to_string(),
            seqs: seqs.to_vec(),
            at: SystemTime::now(),
        });
    }

    /// A message used up its attempts and reached the dead-letter topic as
    /// `dead_letter_id`.
    pub fn dead_lettered(
        &self,
        sub: &Subscription,
        message: &Message,
        attempts: u32,
        reason: &str,
        dead_letter_id: &str,
    ) {
        sub.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.metrics.dead_lettered(sub.name.as_str());
        self.journal.send(Event::DeadLettered {
            message_id: message.seq,
            subscription: sub.name.to_string(),
            at: SystemTime::now(),
            attempts,
            reason: reason.to_string(),
            dead_letter_id: dead_letter_id.to_string(),
        });
    }

    /// Stops the journal after it wrote what it was given.
    pub async fn close(&self) {
        self.journal.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_buckets_by_ten_seconds_and_lays_out_the_last_thirty_minutes() {
        let mut series = Series::default();
        let t0 = 1_000_000; // a bucket boundary
        series.record(t0, true);
        series.record(t0 + 9, true);
        series.record(t0 + 9, false);
        series.record(t0 + 10, false);
        let snap = series.snapshot(t0 + 15);
        assert_eq!(snap.success.len(), BUCKETS);
        assert_eq!(snap.start, t0 + 10 - (BUCKETS as u64 - 1) * BUCKET_SECS);
        assert_eq!(snap.success[BUCKETS - 2..], [2, 0]);
        assert_eq!(snap.failure[BUCKETS - 2..], [1, 1]);
    }

    #[test]
    fn series_forgets_what_is_older_than_thirty_minutes() {
        let mut series = Series::default();
        let t0 = 1_000_000;
        series.record(t0, true);
        series.record(t0 + 1800, false);
        assert_eq!(series.buckets.len(), 1, "{:?}", series.buckets);
        let snap = series.snapshot(t0 + 1800);
        assert_eq!(snap.success.iter().sum::<u32>(), 0);
        assert_eq!(snap.failure.iter().sum::<u32>(), 1);
        // Within the window, an old bucket is still shown.
        let mut series = Series::default();
        series.record(t0, true);
        series.record(t0 + 1790, false);
        assert_eq!(series.snapshot(t0 + 1790).success[0], 1);
    }

    #[test]
    fn a_clock_step_back_counts_in_the_newest_bucket() {
        let mut series = Series::default();
        series.record(1_000_100, true);
        series.record(1_000_000, true);
        assert_eq!(series.buckets.len(), 1);
        assert_eq!(series.buckets[0].1, 2);
    }

    /// What the hooks cost the publish and push paths, per call (run by
    /// hand: `cargo test --profile bench -p labrelay-broker --lib hook_cost
    /// -- --ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn hook_cost() {
        use crate::names::SubscriptionName;
        use crate::engine::subscription::LeaseId;
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::new(dir.path(), "127.0.0.1:1".parse().unwrap());
        let observer = Observer::open(&config).unwrap();
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
        let observer = Observer::open(&config).unwrap();
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

    #[test]
    fn delivery_rate_is_per_second_over_the_last_minute() {
        let stats = SubscriptionStats::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for _ in 0..30 {
            stats.record_push(true, now, || unreachable!());
        }
        stats.record_push(false, now, || LastError {
            at: now,
            message_id: "7".into(),
            attempt: 2,
            status: Some(503),
            error: "HTTP 503".into(),
        });
        let snap = stats.snapshot(now);
        assert_eq!((snap.pushes_ok, snap.pushes_failed), (30, 1));
        assert!((snap.delivery_rate - 0.5).abs() < 1e-9);
        assert_eq!(snap.last_error.unwrap().status, Some(503));
        let later = stats.snapshot(now + Duration::from_secs(120));
        assert_eq!(later.delivery_rate, 0.0);
    }
}
