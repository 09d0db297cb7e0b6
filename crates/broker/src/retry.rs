//! Pure delivery policies: when to redeliver a nacked message, how many
//! pushes may be outstanding, and how long a failing push endpoint is left
//! alone. Each is a small value type or function tested with tables; the
//! callers own the clock and the randomness.

use std::time::Duration;

use crate::settings::RetrySettings;

/// How long to wait before redelivering a message whose `attempts`-th
/// delivery failed (`attempts` ≥ 1).
///
/// Without a retry policy Pub/Sub redelivers "as soon as possible"; with one
/// the delay grows exponentially from `min_backoff` to `max_backoff`.
/// `jitter` in `[0, 1)` spreads redeliveries of a burst of failures so they
/// do not all come back at the same instant; the result stays within the
/// policy's bounds.
pub fn retry_delay(policy: Option<&RetrySettings>, attempts: u32, jitter: f64) -> Duration {
    let Some(policy) = policy else {
        return Duration::ZERO;
    };
    let exponent = attempts.saturating_sub(1).min(30);
    let base = policy
        .min_backoff
        .saturating_mul(1u32 << exponent)
        .min(policy.max_backoff);
    // Up to a quarter of the delay is jitter, taken off the top.
    let jittered = base.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0));
    jittered.clamp(policy.min_backoff, policy.max_backoff)
}

/// The number of pushes a subscription may have outstanding: Pub/Sub's
/// "slow start". It starts at one, grows by one with every success (so it
/// doubles every round trip while the endpoint keeps up) and halves with every
/// failure, never below one nor above `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushWindow {
    size: u32,
    cap: u32,
}

impl PushWindow {
    pub fn new(cap: u32) -> Self {
        PushWindow {
            size: 1,
            cap: cap.max(1),
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn on_success(&mut self) {
        self.size = (self.size + 1).min(self.cap);
    }

    pub fn on_failure(&mut self) {
        self.size = (self.size / 2).max(1);
    }
}

/// Pub/Sub's push backoff: after a failed push the whole subscription pauses,
/// from 100 ms doubling up to 60 s while failures continue; a success ends it.
/// This is what keeps a dead endpoint from being hammered when no retry policy
/// spaces out the redeliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushBackoff {
    current: Duration,
}

impl PushBackoff {
    pub const MIN: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(60);

    /// Records a failure and returns how long to pause.
    pub fn on_failure(&mut self) -> Duration {
        self.current = if self.current.is_zero() {
            Self::MIN
        } else {
            (self.current * 2).min(Self::MAX)
        };
        self.current
    }

    pub fn on_success(&mut self) {
        self.current = Duration::ZERO;
    }
}

/// The push outcome that counts as an acknowledgement: Pub/Sub's documented
/// success codes.
pub fn is_push_ack(status: u16) -> bool {
    matches!(status, 102 | 200 | 201 | 202 | 204)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: u64, max: u64) -> RetrySettings {
        RetrySettings {
            min_backoff: Duration::from_secs(min),
            max_backoff: Duration::from_secs(max),
        }
    }

    #[test]
    fn retry_delay_table() {
        let p = policy(10, 600);
        let ms = |d: Duration| d.as_millis();
        let cases = [
            (None, 1, 0.0, 0),
            (None, 7, 0.9, 0),
            (Some(p), 1, 0.0, 10_000),
            (Some(p), 2, 0.0, 20_000),
            (Some(p), 3, 0.0, 40_000),
            (Some(p), 7, 0.0, 600_000),
            (Some(p), 100, 0.0, 600_000),
            // Jitter never takes the delay below the minimum...
            (Some(p), 1, 0.99, 10_000),
            // ...and takes at most a quarter off above it.
            (Some(p), 2, 1.0, 15_000),
            (Some(policy(0, 0)), 5, 0.5, 0),
            (Some(policy(1, 10)), 30, 0.0, 10_000),
        ];
        for (policy, attempts, jitter, want) in cases {
            assert_eq!(
                ms(retry_delay(policy.as_ref(), attempts, jitter)),
                want,
                "{policy:?} attempts={attempts} jitter={jitter}"
            );
        }
    }

    #[test]
    fn push_window_slow_start() {
        let mut w = PushWindow::new(8);
        assert_eq!(w.size(), 1);
        for want in [2, 3, 4, 5, 6, 7, 8, 8] {
            w.on_success();
            assert_eq!(w.size(), want);
        }
        for want in [4, 2, 1, 1] {
            w.on_failure();
            assert_eq!(w.size(), want);
        }
    }

    #[test]
    fn push_backoff_doubles_to_a_minute_and_resets() {
        let mut b = PushBackoff::default();
        let got: Vec<u128> = (0..12).map(|_| b.on_failure().as_millis()).collect();
        assert_eq!(
            got,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000
            ]
        );
        b.on_success();
        assert_eq!(b.on_failure(), PushBackoff::MIN);
    }

    #[test]
    fn ack_codes() {
        for code in [102, 200, 201, 202, 204] {
            assert!(is_push_ack(code), "{code}");
        }
        for code in [203, 301, 400, 404, 429, 500, 503] {
            assert!(!is_push_ack(code), "{code}");
        }
    }
}
