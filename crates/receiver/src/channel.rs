//! What a channel service brings to the one push handler: only what
//! differs between email and SMS.
//!
//! The handler ([`crate::app`]) reads the envelope, opens the push's span,
//! and runs claim → already sent? → send → record under the notification
//! log; a [`Channel`] renders a report into the message it sends (or says
//! why there is none), names its recipient (which, with the report,
//! identifies it in the log), sends it once, and classifies a failed send
//! as one a retry may cure ([`Class::Transient`], 503) or not
//! ([`Class::Permanent`], 422).

use std::future::Future;
use std::time::Duration;

use labrelay_contract::LabReport;

/// A notification channel: email (the email-service), SMS (the
/// sms-service).
pub trait Channel: Send + Sync + 'static {
    /// One report's notification, rendered and addressed, ready to send.
    type Message: Send + Sync + 'static;

    /// `email` or `sms`: the `channel` label of the metrics and the
    /// channel of the notification log's keys.
    const NAME: &'static str;
    /// What one notification is called in answers and logs: `email`,
    /// `SMS`.
    const NOUN: &'static str;
    /// The service, in its start and stop lines: `email-service`.
    const SERVICE: &'static str;

    /// How long a push waits for its send before the broker is answered
    /// 503. The send goes on, up to [`attempt_limit`](Self::attempt_limit),
    /// and is recorded or released when it ends.
    fn answer_within(&self) -> Duration;

    /// How long one attempt may run before the push handler cuts it off
    /// (its outcome then unknown, its claim kept until the lease lapses).
    /// By default [`notify_log::attempt_limit`](crate::notify_log::attempt_limit)
    /// of [`answer_within`](Self::answer_within). A channel that learns
    /// its outcome later (the email-service waits minutes for an SMTP
    /// server's answer to the data) returns more, so the handler never
    /// cuts an attempt the channel is still deciding; the claim is renewed
    /// for as long.
    fn attempt_limit(&self) -> Duration {
        crate::notify_log::attempt_limit(self.answer_within())
    }

    /// The report's notification, or why there is none to send. Called
    /// inside the push's span; `message_id` is the Pub/Sub message's.
    fn render(&self, report: &LabReport, message_id: &str) -> Result<Self::Message, NotSent>;

    /// Where `message` goes, normalized: the email address, the E.164
    /// number. With the report's content it identifies the notification in
    /// the notification log
    /// ([`notification_hash`](crate::notify_log::notification_hash)), so a
    /// corrected report is a new notification and a redelivery is not,
    /// whatever the templates make of either.
    fn recipient<'m>(&self, message: &'m Self::Message) -> &'m str;

    /// One attempt to send `message`, ended within
    /// [`attempt_limit`](Self::attempt_limit) (the handler cuts it off
    /// there): the provider's id for it (the Message-ID, Twilio's SID,
    /// the outbox file), or why not. A failure after which the provider
    /// may have taken the message says so ([`Failure::maybe_sent`]).
    fn send(
        &self,
        message: &Self::Message,
    ) -> impl Future<Output = Result<Option<String>, Failure>> + Send;

    /// Where messages go, for the start-up line; never a secret.
    fn describe(&self) -> String;

    /// Routes of the channel's own beside `POST /` (a provider's
    /// webhooks), served without the push-token check: they check their
    /// caller themselves. `facts` reaches the notification log's
    /// suppressions and receipts, when `NOTIFY_LOG` is set.
    fn webhooks(&self, facts: Option<crate::facts::Facts>) -> axum::Router {
        let _ = facts;
        axum::Router::new()
    }

    /// Called once the server has stopped: closes what the channel keeps
    /// open (pooled connections).
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Why a report gets no notification, decided before anything is sent.
#[derive(Debug)]
pub enum NotSent {
    /// Nothing to send (no address, a destination the settings do not
    /// allow): acknowledged and counted as skipped.
    Skipped(&'static str),
    /// The notification can never be sent (an address that is not one).
    Failed(Failure),
    /// Rendering failed: a bug of ours, which the channel has logged.
    Internal,
}

/// Whether a failed notification may go out on a later delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Maybe later (the provider is down, slow or limiting us; our
    /// configuration; the outbox's disk): 503, the broker redelivers.
    Transient,
    /// Never (the provider refused this message, the address is invalid):
    /// 422, the broker gives up after its attempts and dead-letters it.
    Permanent,
}

/// A notification not sent, as its channel classifies it. Nothing in it
/// carries personal data: it is answered to the broker and logged at info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: Class,
    /// The log line's `outcome`: a short, stable name for dashboards and
    /// log queries (`refused`, `timeout`, `invalid_number`, ...).
    pub label: &'static str,
    /// The answer's `error`: says what is wrong with a push the caller can
    /// fix, stays generic for our own failures.
    pub public: String,
    /// The log line's `detail`: the cause, as far as it is safe to log.
    pub detail: String,
    /// The provider's own error code (Twilio's), when it gave one.
    pub provider_code: Option<u32>,
    /// The provider's `Retry-After`, when it gave one.
    pub retry_after: Option<String>,
    /// The provider may have taken the message all the same (the attempt
    /// was cut off, its answer never read): the notification log keeps the
    /// claim until its lease lapses, so redeliveries wait instead of
    /// sending again.
    pub maybe_sent: bool,
    /// The recipient is not to be notified again, and why (`twilio
    /// 21610`, `smtp 550 5.1.1`): a fact, not a failure. The push handler
    /// records the suppression and answers `suppressed` (204).
    pub suppress: Option<Box<str>>,
}

impl Failure {
    /// A failure a later delivery may cure.
    pub fn transient(
        label: &'static str,
        public: impl Into<String>,
        detail: impl Into<String>,
    ) -> Failure {
        Failure::new(Class::Transient, label, public.into(), detail.into())
    }

    /// A failure no later delivery cures.
    pub fn permanent(
        label: &'static str,
        public: impl Into<String>,
        detail: impl Into<String>,
    ) -> Failure {
        Failure::new(Class::Permanent, label, public.into(), detail.into())
    }

    /// The same failure, after which the provider may have taken the
    /// message.
    pub fn maybe_sent(self) -> Failure {
        Failure {
            maybe_sent: true,
            ..self
        }
    }

    /// The same failure, saying the recipient is to be suppressed, and
    /// why.
    pub fn suppresses(self, reason: impl Into<String>) -> Failure {
        Failure {
            suppress: Some(reason.into().into_boxed_str()),
            ..self
        }
    }

    fn new(class: Class, label: &'static str, public: String, detail: String) -> Failure {
        Failure {
            class,
            label,
            public,
            detail,
            provider_code: None,
            retry_after: None,
            maybe_sent: false,
            suppress: None,
        }
    }
}
