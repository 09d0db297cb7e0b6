//! Per-subscription push figures, for the console: push successes,
//! failures and dead letters since start, a 30-minute time series of push
//! successes and failures, and the last push error.
//!
//! Each subscription's [`SubscriptionStats`] is kept in the subscription's
//! observer slot ([`of`]), so the hooks (in `observe`) find it without a
//! lookup and only bump atomics or take its uncontended mutex. Backlog,
//! in-flight and oldest-unacked figures are not tracked here at all; they
//! are read from the subscription's own queue when someone asks
//! ([`crate::engine::subscription::Counts`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use crate::engine::subscription::Subscription;
use crate::observe::metrics::PushMetrics;

/// Width of one time-series bucket.
pub(crate) const BUCKET_SECS: u64 = 10;
/// Buckets kept: 30 minutes.
pub(crate) const BUCKETS: usize = 180;

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

/// The figures of `sub`, made on first use.
pub(crate) fn of(sub: &Subscription) -> &SubscriptionStats {
    sub.observed
        .get_or_init(|| Box::new(SubscriptionStats::default()))
        .downcast_ref()
        .expect("a subscription's observer slot holds its SubscriptionStats")
}

impl SubscriptionStats {
    pub(super) fn record_push(&self, ok: bool, at: SystemTime, error: impl FnOnce() -> LastError) {
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

    pub(super) fn record_dead_letter(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// This subscription's push metrics, looked up by `find` on first use.
    pub(super) fn push_metrics(&self, find: impl FnOnce() -> PushMetrics) -> &PushMetrics {
        self.metrics.get_or_init(find)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
