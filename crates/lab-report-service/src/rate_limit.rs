//! The per-lab rate limit: how many reports one lab may post, so that a
//! leaked key, or a lab's runaway client, cannot make the clinic send
//! email and SMS without bound. (`--max-instances` caps what a flood costs
//! in Cloud Run, not what it sends.)
//!
//! Each lab (the lab its API key names) has a bucket of [`RateLimit`]'s
//! `burst` reports, refilled at its rate: the generic cell rate algorithm
//! of the `governor` crate. A report beyond it is answered 429 with
//! `Retry-After`, after the key check and before its body is read. With
//! ingest open there is no lab to tell callers apart by, so they share one
//! bucket: `X-Forwarded-For` is whatever the client wrote past the first
//! proxy, and keying on it would let one caller pose as many.
//!
//! Only callers whose key was accepted get a bucket, so the map holds at
//! most one entry per configured lab (plus the open bucket).
//!
//! The buckets live in the instance's memory: on Cloud Run each instance
//! counts on its own, so a lab whose reports are spread over N instances
//! may post up to N times the rate.
//!
//! Settings (read by [`RateLimit::from_vars`]): `INGEST_RATE_LIMIT`
//! (`<n>/s`, `<n>/min`, `<n>/h` or `off`; default [`RateLimit::DEFAULT`])
//! and `INGEST_RATE_BURST` (default: what the rate refills in
//! [`DEFAULT_BURST_WINDOW`]).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

/// Without `INGEST_RATE_BURST`, a lab may post at once what its rate
/// refills in this long.
pub const DEFAULT_BURST_WINDOW: Duration = Duration::from_secs(10);

/// The time unit of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    fn duration(self) -> Duration {
        match self {
            Per::Second => Duration::from_secs(1),
            Per::Minute => Duration::from_secs(60),
            Per::Hour => Duration::from_secs(3600),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Per::Second => "s",
            Per::Minute => "min",
            Per::Hour => "h",
        }
    }
}

/// How many reports each lab may post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// No limit (`INGEST_RATE_LIMIT=off`).
    Off,
    /// `rate` reports per `per`, and at most `burst` at once.
    PerLab {
        rate: NonZeroU32,
        per: Per,
        burst: NonZeroU32,
    },
}

/// Settings that make no valid [`RateLimit`].
#[derive(Debug, thiserror::Error)]
pub enum RateLimitSettingsError {
    #[error(
        "INGEST_RATE_LIMIT must be a number of reports per lab and a unit, such as `50/s`, \
         `600/min` or `10000/h`, or `off`; not {0:?}"
    )]
    Rate(String),
    #[error("INGEST_RATE_BURST must be a positive whole number of reports, not {0:?}")]
    Burst(String),
    #[error("INGEST_RATE_BURST is set but INGEST_RATE_LIMIT=off; unset one of them")]
    BurstWithoutLimit,
}

impl RateLimit {
    /// 50 reports a second per lab, 500 at once. A busy lab sends a clinic
    /// a few hundred reports a day, and a lab catching up after an outage
    /// sends its backlog as fast as it can: 500 at once and 50 a second
    /// after that clear a day's backlog within a minute, while a leaked
    /// key is held to 50 notifications of each kind a second until it is
    /// revoked.
    pub const DEFAULT: RateLimit = RateLimit::PerLab {
        rate: NonZeroU32::new(50).unwrap(),
        per: Per::Second,
        burst: NonZeroU32::new(500).unwrap(),
    };

    /// Reads `INGEST_RATE_LIMIT` and `INGEST_RATE_BURST` through `get`
    /// (blank values already count as unset).
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<RateLimit, RateLimitSettingsError> {
        let burst = get("INGEST_RATE_BURST")
            .map(|v| {
                v.parse::<NonZeroU32>()
                    .map_err(|_| RateLimitSettingsError::Burst(v.clone()))
            })
            .transpose()?;
        let Some(limit) = get("INGEST_RATE_LIMIT") else {
            return Ok(match (RateLimit::DEFAULT, burst) {
                (RateLimit::PerLab { rate, per, .. }, Some(burst)) => {
                    RateLimit::PerLab { rate, per, burst }
                }
                (default, _) => default,
            });
        };
        if limit.eq_ignore_ascii_case("off") {
            return match burst {
                Some(_) => Err(RateLimitSettingsError::BurstWithoutLimit),
                None => Ok(RateLimit::Off),
            };
        }
        let refused = || RateLimitSettingsError::Rate(limit.clone());
        let (rate, unit) = limit.split_once('/').ok_or_else(refused)?;
        let rate = rate.trim().parse::<NonZeroU32>().map_err(|_| refused())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Per::Second,
            "m" | "min" | "minute" => Per::Minute,
            "h" | "hour" => Per::Hour,
            _ => return Err(refused()),
        };
        let burst = burst.unwrap_or_else(|| default_burst(rate, per));
        Ok(RateLimit::PerLab { rate, per, burst })
    }
}

/// What `rate` per `per` refills in [`DEFAULT_BURST_WINDOW`], at least 1.
fn default_burst(rate: NonZeroU32, per: Per) -> NonZeroU32 {
    let refilled =
        u128::from(rate.get()) * DEFAULT_BURST_WINDOW.as_millis() / per.duration().as_millis();
    NonZeroU32::new(u32::try_from(refilled).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimit::Off => f.write_str("off"),
            RateLimit::PerLab { rate, per, burst } => {
                write!(f, "{rate}/{} per lab, {burst} at once", per.suffix())
            }
        }
    }
}

/// Who a bucket belongs to: a lab, or (`None`) every caller of an open
/// ingest.
pub(crate) type Bucket = Option<Arc<str>>;

/// The buckets of every lab that has posted, on `clock` (tests drive a
/// fake one).
pub(crate) struct LabLimiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<Bucket, HashMapStateStore<Bucket>, C, NoOpMiddleware<C::Instant>>,
    /// The limiter's own clock, to tell a refused caller how long to wait.
    clock: C,
}

impl LabLimiter {
    /// The limiter for `limit` on the real clock; `None` when it is off.
    pub fn new(limit: RateLimit) -> Option<LabLimiter> {
        LabLimiter::with_clock(limit, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LabLimiter<C> {
    pub fn with_clock(limit: RateLimit, clock: C) -> Option<LabLimiter<C>> {
        let RateLimit::PerLab { rate, per, burst } = limit else {
            return None;
        };
        // One report every `per / rate`; `with_period` refuses only zero.
        let quota = Quota::with_period(per.duration() / rate.get())?.allow_burst(burst);
        Some(LabLimiter {
            limiter: RateLimiter::hashmap_with_clock(quota, clock.clone()),
            clock,
        })
    }

    /// Takes one report from `bucket`, or says how long until it has one.
    pub fn check(&self, bucket: &Bucket) -> Result<(), Duration> {
        self.limiter
            .check_key(bucket)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1 (0
/// would invite an immediate retry that is refused again).
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn per_lab(rate: u32, per: Per, burst: u32) -> RateLimit {
        RateLimit::PerLab {
            rate: NonZeroU32::new(rate).unwrap(),
            per,
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn settings() {
        let cases: &[(&[(&str, &str)], RateLimit)] = &[
            (&[], per_lab(50, Per::Second, 500)),
            (&[("INGEST_RATE_BURST", "20")], per_lab(50, Per::Second, 20)),
            (&[("INGEST_RATE_LIMIT", "off")], RateLimit::Off),
            (&[("INGEST_RATE_LIMIT", "OFF")], RateLimit::Off),
            (&[("INGEST_RATE_LIMIT", "5/s")], per_lab(5, Per::Second, 50)),
            (
                &[("INGEST_RATE_LIMIT", "600/min")],
                per_lab(600, Per::Minute, 100),
            ),
            (
                &[("INGEST_RATE_LIMIT", "60 / m")],
                per_lab(60, Per::Minute, 10),
            ),
            (
                &[("INGEST_RATE_LIMIT", "100/h")],
                per_lab(100, Per::Hour, 1),
            ),
            (
                &[("INGEST_RATE_LIMIT", "1/s"), ("INGEST_RATE_BURST", "3")],
                per_lab(1, Per::Second, 3),
            ),
        ];
        for (vars_, expected) in cases {
            assert_eq!(
                RateLimit::from_vars(vars(vars_)).unwrap(),
                *expected,
                "{vars_:?}"
            );
        }
    }

    #[test]
    fn bad_settings_are_refused_naming_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("INGEST_RATE_LIMIT", "50")], "INGEST_RATE_LIMIT"),
            (&[("INGEST_RATE_LIMIT", "0/s")], "INGEST_RATE_LIMIT"),
            (&[("INGEST_RATE_LIMIT", "-1/s")], "INGEST_RATE_LIMIT"),
            (&[("INGEST_RATE_LIMIT", "1.5/s")], "INGEST_RATE_LIMIT"),
            (&[("INGEST_RATE_LIMIT", "50/day")], "INGEST_RATE_LIMIT"),
            (&[("INGEST_RATE_LIMIT", "unlimited")], "INGEST_RATE_LIMIT"),
            (&[("INGEST_RATE_BURST", "0")], "INGEST_RATE_BURST"),
            (&[("INGEST_RATE_BURST", "many")], "INGEST_RATE_BURST"),
            (
                &[("INGEST_RATE_LIMIT", "off"), ("INGEST_RATE_BURST", "5")],
                "INGEST_RATE_BURST",
            ),
        ];
        for (vars_, name) in cases {
            let error = RateLimit::from_vars(vars(vars_)).unwrap_err().to_string();
            assert!(error.contains(name), "{vars_:?}: {error}");
        }
    }

    #[test]
    fn each_lab_has_its_own_bucket_refilled_at_the_rate() {
        let clock = FakeRelativeClock::default();
        let limiter = LabLimiter::with_clock(per_lab(10, Per::Second, 3), clock.clone()).unwrap();
        let idexx: Bucket = Some(Arc::from("idexx"));
        let antech: Bucket = Some(Arc::from("antech"));
        for _ in 0..3 {
            assert_eq!(limiter.check(&idexx), Ok(()));
        }
        // One report every 100 ms.
        assert_eq!(limiter.check(&idexx), Err(Duration::from_millis(100)));
        // The other lab, and an open ingest's shared bucket, are untouched.
        for _ in 0..3 {
            assert_eq!(limiter.check(&antech), Ok(()));
            assert_eq!(limiter.check(&None), Ok(()));
        }
        clock.advance(Duration::from_millis(40));
        assert_eq!(limiter.check(&idexx), Err(Duration::from_millis(60)));
        clock.advance(Duration::from_millis(60));
        assert_eq!(limiter.check(&idexx), Ok(()));
        assert!(limiter.check(&idexx).is_err());
        // A second idle refills the whole burst, and no more.
        clock.advance(Duration::from_secs(1));
        for _ in 0..3 {
            assert_eq!(limiter.check(&idexx), Ok(()));
        }
        assert!(limiter.check(&idexx).is_err());
    }

    #[test]
    fn off_is_no_limiter() {
        assert!(LabLimiter::new(RateLimit::Off).is_none());
        assert!(LabLimiter::new(RateLimit::DEFAULT).is_some());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let cases = [
            (Duration::ZERO, 1),
            (Duration::from_millis(1), 1),
            (Duration::from_millis(999), 1),
            (Duration::from_secs(1), 1),
            (Duration::from_millis(1001), 2),
            (Duration::from_secs(36), 36),
        ];
        for (wait, secs) in cases {
            assert_eq!(retry_after_secs(wait), secs, "{wait:?}");
        }
    }
}
