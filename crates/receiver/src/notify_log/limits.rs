//! How long each step under a claim may take, and the lease that covers
//! them ([`ClaimLimits`]).

use std::time::Duration;

/// How long taking a claim may take, every store call (and fetching an
/// access token) included. Past it the push is answered 503; a claim
/// written all the same lapses with its lease.
pub const CLAIM_LIMIT: Duration = Duration::from_secs(10);

/// How long writing a record, or giving a claim back, may take. Past it
/// the claim is left to lapse with its lease.
pub const RECORD_LIMIT: Duration = Duration::from_secs(10);

/// What a lease holds beyond its steps' limits: the moments between them
/// (scheduling on a busy machine), and a store call answered at its limit.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How much longer than its send timeout a provider attempt (an SMTP
/// delivery, a Twilio request) may go on before it is cut off.
const ATTEMPT_LIMIT_FACTOR: u32 = 4;

/// The longest provider attempt, whatever the send timeout: it bounds how
/// long a notification whose holder died waits for its lease to lapse.
const MAX_ATTEMPT: Duration = Duration::from_secs(45);

/// How long one provider attempt may take, answer included, unless its
/// channel says otherwise ([`Channel::attempt_limit`](crate::Channel::attempt_limit)):
/// four times the send timeout, 45 s at most. Both receivers answer the
/// broker 503 at the send timeout and let the attempt go on to this limit:
/// cut off at the send timeout, after the provider took the message and
/// before its answer was read, the fault suite saw 7–30 duplicate emails
/// per 300 reports on a loaded two-core machine. An attempt cut off at its
/// limit keeps its claim until the lease lapses.
pub fn attempt_limit(send_timeout: Duration) -> Duration {
    send_timeout
        .saturating_mul(ATTEMPT_LIMIT_FACTOR)
        .min(MAX_ATTEMPT)
}

/// How long each step under a claim may take. The claim's lease is their
/// sum ([`lease`](Self::lease)), so that even unrenewed it outlasts an
/// attempt at the send timeout's [`attempt_limit`]; renewed every
/// [`renew_every`](Self::renew_every), it outlasts any attempt its holder
/// is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimits {
    /// Taking the claim ([`CLAIM_LIMIT`]).
    pub claim: Duration,
    /// The provider attempt the lease covers without a renewal
    /// ([`attempt_limit`] of the send timeout). A channel may let its
    /// attempts run longer (the push handler cuts them off at
    /// [`Channel::attempt_limit`](crate::Channel::attempt_limit)); the
    /// renewals cover the rest.
    pub attempt: Duration,
    /// Writing the record ([`RECORD_LIMIT`]).
    pub record: Duration,
    /// [`LEASE_MARGIN`].
    pub margin: Duration,
}

impl ClaimLimits {
    /// The limits of a channel that answers a push within `send_timeout`.
    pub fn for_send_timeout(send_timeout: Duration) -> ClaimLimits {
        ClaimLimits {
            claim: CLAIM_LIMIT,
            attempt: attempt_limit(send_timeout),
            record: RECORD_LIMIT,
            margin: LEASE_MARGIN,
        }
    }

    /// How long a claim keeps other instances from sending the same
    /// notification unless it is renewed: 65 s at the default 10 s send
    /// timeout, 70 s at most. It matters only when the holder died (or
    /// could not renew), or could not tell whether the provider took the
    /// notification: then the notification waits this long, and costs the
    /// broker a few failed attempts, before another delivery sends it.
    pub fn lease(&self) -> Duration {
        self.task(self.attempt)
    }

    /// How often a live claim is renewed for another [`lease`](Self::lease):
    /// a third of it, so that a renewal answered at its limit
    /// ([`renew_limit`](Self::renew_limit)) still lands with a third of
    /// the lease to spare.
    pub fn renew_every(&self) -> Duration {
        self.lease() / 3
    }

    /// How long one renewal may take: [`RECORD_LIMIT`], at most a third
    /// of the lease.
    pub fn renew_limit(&self) -> Duration {
        self.record.min(self.renew_every())
    }

    /// Everything one delivery does under its claim when its provider
    /// attempt may take `attempt`: claim, attempt, record and the margin.
    pub fn task(&self, attempt: Duration) -> Duration {
        self.claim
            .saturating_add(attempt)
            .saturating_add(self.record)
            .saturating_add(self.margin)
    }
}

impl Default for ClaimLimits {
    /// Room for the longest attempt.
    fn default() -> ClaimLimits {
        ClaimLimits::for_send_timeout(Duration::MAX)
    }
}
