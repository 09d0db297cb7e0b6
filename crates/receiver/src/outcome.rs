//! What became of one push, and the one place that turns it into an HTTP
//! answer for the broker, the `X-Labrelay-Outcome` header, the metrics'
//! outcome and a log line for the operator, the same for both channels.
//!
//! | outcome (`outcome` in the log) | HTTP | broker |
//! | --- | --- | --- |
//! | sent (`sent`); skipped: nothing to send, no owner address or a destination the settings do not allow (`skipped`); sent before, says the notification log (`duplicate`); `sent` and `duplicate` with the provider's id in `X-Labrelay-Provider-Id` | 204 | ack |
//! | the recipient is suppressed: opted out, or their mailbox does not exist, found before the send or said by the provider (`suppressed`, with `X-Labrelay-Reason`) | 204 | ack; never dead-lettered |
//! | malformed envelope, base64 or report (`malformed`) | 400 | retries, then dead-letters |
//! | the channel can never send it: an invalid address, the provider refused the message (the channel's label: `invalid_address`, `invalid_number`, `refused`, ...) | 422 | retries, then dead-letters |
//! | the channel may send it later: the provider down, slow or limiting, our configuration, the outbox (the channel's label: `timeout`, `rate_limited`, `misconfigured`, `outbox_error`, ...) | 503 | retries with backoff |
//! | another instance is sending it (`claim_held`); the notification log cannot be read (`notify_log_error`) | 503 | retries |
//! | still sending when the push had waited the channel's answer time; the send goes on and is recorded or released (`in_progress`) | 503 | retries; the redelivery waits for it |
//! | a bug of ours: rendering failed, the handler's task died (`internal_error`) | 500 | retries |
//! | with `DEAD_LETTER_TOPIC` set, a 400 or 422 above (except an unreadable envelope or data that is not base64) is parked on that topic instead (`dead_lettered`; see [`crate::dead_letter`]) | 204 | ack |
//! | ... and parking it failed (`dead_letter_error`) | 503 | retries; the redelivery parks it |

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use labrelay_contract::ReportError;
use labrelay_contract::headers;
use labrelay_contract::push::DecodeError;

use crate::channel::{Class, Failure};
use crate::notify_log::ClaimHeld;
use crate::push_metrics::{Notification, OUTCOME_HEADER};

/// What became of one push.
#[derive(Debug)]
pub enum Outcome {
    /// Sent; the provider's id for it (Message-ID, Twilio SID, outbox
    /// file).
    Sent(Option<String>),
    /// Nothing to send, and why.
    Skipped(&'static str),
    /// Not sent, now or later: the recipient is suppressed, for this
    /// reason (`twilio 21610`, `inbound STOP`, `smtp 550 5.1.1`).
    Suppressed(String),
    /// Sent before, says the notification log (with the id recorded then):
    /// not sent again.
    Duplicate(Option<String>),
    /// The notification log could not be read, or another instance holds
    /// the claim ([`ClaimHeld`]); sending blind could notify twice.
    LogUnavailable(anyhow::Error),
    /// The body is not a push envelope carrying a lab report.
    Malformed(DecodeError),
    /// Not sent, as the channel classified it.
    Failed(Failure),
    /// Still sending when the push had waited this long: answered now, the
    /// send goes on and is logged and counted when it ends.
    InProgress(Duration),
    /// A bug of ours, and where; the broker retries.
    Internal(&'static str),
    /// `cause` (a permanent failure) was parked on the dead-letter topic
    /// as `dead_letter_id`: acknowledged.
    Parked {
        dead_letter_id: String,
        cause: Box<Outcome>,
    },
    /// `cause` (a permanent failure) should have been parked, and
    /// publishing the dead letter failed: the broker retries.
    ParkFailed {
        error: anyhow::Error,
        cause: Box<Outcome>,
    },
}

impl Outcome {
    pub fn status(&self) -> StatusCode {
        match self {
            Outcome::Sent(_)
            | Outcome::Skipped(_)
            | Outcome::Duplicate(_)
            | Outcome::Suppressed(_)
            | Outcome::Parked { .. } => StatusCode::NO_CONTENT,
            Outcome::LogUnavailable(_) | Outcome::InProgress(_) | Outcome::ParkFailed { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Outcome::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::Malformed(_) => StatusCode::BAD_REQUEST,
            Outcome::Failed(failure) => match failure.class {
                Class::Permanent => StatusCode::UNPROCESSABLE_ENTITY,
                Class::Transient => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    /// What the metrics and the `X-Labrelay-Outcome` header call it: a
    /// failure the broker should retry (5xx) is transient, one it should
    /// give up on (4xx) permanent.
    pub fn notification(&self) -> Notification {
        match self {
            Outcome::Sent(_) => Notification::Sent,
            Outcome::Skipped(_) => Notification::Skipped,
            Outcome::Duplicate(_) => Notification::Duplicate,
            Outcome::Suppressed(_) => Notification::Suppressed,
            Outcome::Parked { .. } => Notification::DeadLettered,
            _ if self.status().is_server_error() => Notification::FailedTransient,
            _ => Notification::FailedPermanent,
        }
    }

    /// Whether no later delivery can change it: the failures answered 4xx,
    /// which are parked when a dead-letter topic is set. A push that is not
    /// one (an unreadable envelope, data that is not base64, which Pub/Sub
    /// never sends) is not among them: there is no message to park.
    pub fn is_permanent_failure(&self) -> bool {
        match self {
            Outcome::Malformed(DecodeError::Envelope(_) | DecodeError::Base64) => false,
            _ => self.status().is_client_error(),
        }
    }

    /// A short, stable name for dashboards and log queries.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Parked { .. } => "dead_lettered",
            Outcome::ParkFailed { .. } => "dead_letter_error",
            Outcome::Sent(_) => "sent",
            Outcome::Skipped(_) => "skipped",
            Outcome::Duplicate(_) => "duplicate",
            Outcome::Suppressed(_) => "suppressed",
            Outcome::LogUnavailable(error) if error.is::<ClaimHeld>() => "claim_held",
            Outcome::LogUnavailable(_) => "notify_log_error",
            Outcome::InProgress(_) => "in_progress",
            Outcome::Internal(_) => "internal_error",
            Outcome::Malformed(_) => "malformed",
            Outcome::Failed(failure) => failure.label,
        }
    }

    /// The error body for the broker: says what is wrong with a push the
    /// caller can fix, stays generic for our own failures. Never personal
    /// data. `noun` names the notification (`email`, `SMS`).
    pub fn public_error(&self, noun: &str) -> Option<String> {
        match self {
            Outcome::Sent(_)
            | Outcome::Skipped(_)
            | Outcome::Duplicate(_)
            | Outcome::Suppressed(_)
            | Outcome::Parked { .. } => None,
            Outcome::ParkFailed { .. } => Some(format!(
                "the {noun} can never be sent, and parking it on the dead-letter topic failed; retry later"
            )),
            Outcome::LogUnavailable(error) if error.is::<ClaimHeld>() => Some(format!(
                "another delivery is sending this {noun}; retry later"
            )),
            Outcome::LogUnavailable(_) => {
                Some(format!("the {noun} could not be sent now; retry later"))
            }
            Outcome::InProgress(_) => Some(format!("the {noun} is still being sent; retry later")),
            Outcome::Internal(_) => Some("internal error".into()),
            Outcome::Malformed(error) => Some(public_reason(error)),
            Outcome::Failed(failure) => Some(failure.public.clone()),
        }
    }

    /// The cause, for the log line: the error chain of a send failure or
    /// of the notification log, what is wrong with a malformed push
    /// (without its values), or why a push was skipped.
    pub fn log_detail(&self, noun: &str) -> Option<String> {
        match self {
            Outcome::Sent(_) => None,
            Outcome::Skipped(reason) => Some((*reason).to_string()),
            Outcome::Duplicate(_) => Some("duplicate, not sent again".to_string()),
            Outcome::Suppressed(reason) => Some(format!("the recipient is suppressed: {reason}")),
            Outcome::LogUnavailable(error) => Some(format!("{error:#}")),
            Outcome::InProgress(waited) => Some(format!(
                "the {noun} was not sent within {waited:?}; the attempt goes on"
            )),
            Outcome::Internal(what) => Some((*what).to_string()),
            Outcome::Malformed(error) => Some(public_reason(error)),
            Outcome::Failed(failure) => Some(failure.detail.clone()),
            Outcome::Parked {
                dead_letter_id,
                cause,
            } => Some(format!(
                "parked on the dead-letter topic as {dead_letter_id}: {}",
                cause.cause(noun)
            )),
            Outcome::ParkFailed { error, cause } => Some(format!(
                "{}; parking it on the dead-letter topic failed: {error:#}",
                cause.cause(noun)
            )),
        }
    }

    /// `label: detail` of a parked failure.
    fn cause(&self, noun: &str) -> String {
        match self.log_detail(noun) {
            Some(detail) => format!("{}: {detail}", self.label()),
            None => self.label().to_string(),
        }
    }

    /// The one log line of a push, "push handled" (a push answered while
    /// its notification is still being sent logs "push answered" first),
    /// inside the push's span, which names the report, the message and the
    /// delivery attempt. Info for what the broker acknowledges or should
    /// give up on, warn for what it must retry (the operator may need to
    /// act), error for a bug of ours. Never an address, a phone number or
    /// the message's content.
    pub fn log(&self, noun: &str) {
        let failure = match self {
            Outcome::Parked { cause, .. } | Outcome::ParkFailed { cause, .. } => cause,
            _ => self,
        };
        let (sent_id, provider_code, retry_after) = match failure {
            Outcome::Sent(id) | Outcome::Duplicate(id) => (id.as_deref(), None, None),
            Outcome::Failed(failure) => {
                (None, failure.provider_code, failure.retry_after.as_deref())
            }
            _ => (None, None, None),
        };
        let status = self.status();
        let detail = self.log_detail(noun);
        macro_rules! log_at {
            ($level:ident, $($message:tt)+) => {
                tracing::$level!(
                    outcome = self.label(),
                    status = status.as_u16(),
                    provider_code,
                    sent_id,
                    retry_after,
                    detail = detail.as_deref(),
                    $($message)+
                )
            };
        }
        match self {
            Outcome::InProgress(_) => {
                log_at!(warn, "push answered; its {noun} is still being sent")
            }
            Outcome::Internal(_) => log_at!(error, "push handled"),
            // A report that will never reach its owner on this channel:
            // the operator should know.
            Outcome::Parked { .. } => log_at!(warn, "push handled"),
            _ if status.is_server_error() => log_at!(warn, "push handled"),
            _ => log_at!(info, "push handled"),
        }
    }

    /// The broker's answer, with the `X-Labrelay-Outcome` header.
    pub fn answer(&self, noun: &str) -> Response {
        let status = self.status();
        let mut response = match self.public_error(noun) {
            None => status.into_response(),
            Some(error) => (status, Json(serde_json::json!({ "error": error }))).into_response(),
        };
        response
            .headers_mut()
            .insert(OUTCOME_HEADER, self.notification().header_value());
        let (header, text) = match self {
            Outcome::Suppressed(reason) => (headers::REASON, Some(reason)),
            Outcome::Sent(id) | Outcome::Duplicate(id) => (headers::PROVIDER_ID, id.as_ref()),
            _ => (headers::REASON, None),
        };
        if let Some(text) = text.filter(|t| headers::is_token_text(t))
            && let Ok(value) = axum::http::HeaderValue::from_str(text)
        {
            response.headers_mut().insert(header, value);
        }
        response
    }
}

/// Why a push body was refused, without echoing any of its values (serde's
/// messages may quote them, and they may be an address).
fn public_reason(err: &DecodeError) -> String {
    match err {
        DecodeError::Envelope(_) => {
            "the body is not a Pub/Sub push envelope ({\"message\": {\"data\": ...}, \"subscription\": ...})".into()
        }
        DecodeError::Base64 => err.to_string(),
        DecodeError::Report(report) => {
            let why = match report {
                ReportError::Json(_) => "it is not valid JSON".to_string(),
                ReportError::InvalidField { field, .. } => format!("`{field}` has the wrong shape"),
                other => other.to_string(),
            };
            format!("message.data is not a lab report: {why}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_outcome_to_one_status() {
        let cases = [
            (Outcome::Sent(Some("SM1".into())), 204, "sent"),
            (Outcome::Skipped("no owner phone"), 204, "skipped"),
            (Outcome::Duplicate(Some("SM1".into())), 204, "duplicate"),
            (
                Outcome::Suppressed("twilio 21610".into()),
                204,
                "suppressed",
            ),
            (
                Outcome::LogUnavailable(anyhow::anyhow!("disk I/O error")),
                503,
                "notify_log_error",
            ),
            (
                Outcome::LogUnavailable(ClaimHeld { lease_until_ms: 1 }.into()),
                503,
                "claim_held",
            ),
            (
                Outcome::Malformed(DecodeError::Envelope("x".into())),
                400,
                "malformed",
            ),
            (Outcome::Malformed(DecodeError::Base64), 400, "malformed"),
            (
                Outcome::Malformed(DecodeError::Report(ReportError::MissingId)),
                400,
                "malformed",
            ),
            (
                Outcome::Failed(Failure::permanent("refused", "p", "p")),
                422,
                "refused",
            ),
            (
                Outcome::Failed(Failure::transient("timeout", "t", "t")),
                503,
                "timeout",
            ),
            (
                Outcome::InProgress(Duration::from_secs(10)),
                503,
                "in_progress",
            ),
            (Outcome::Internal("the task died"), 500, "internal_error"),
        ];
        for (outcome, status, label) in cases {
            assert_eq!(
                (outcome.status().as_u16(), outcome.label()),
                (status, label),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn maps_each_result_to_one_header_value() {
        let cases = [
            (Outcome::Sent(None), "sent"),
            (Outcome::Duplicate(None), "duplicate"),
            (Outcome::Skipped("no email"), "skipped"),
            (Outcome::Suppressed("smtp 550 5.1.1".into()), "suppressed"),
            (Outcome::Malformed(DecodeError::Base64), "failed"),
            (
                Outcome::Failed(Failure::permanent("refused", "p", "p")),
                "failed",
            ),
            (
                Outcome::Failed(Failure::transient("timeout", "t", "t")),
                "failed",
            ),
            (Outcome::Internal("bug"), "failed"),
        ];
        for (outcome, want) in cases {
            let answer = outcome.answer("email");
            assert_eq!(answer.headers()[OUTCOME_HEADER], want, "{outcome:?}");
        }
        assert_eq!(
            Outcome::Failed(Failure::permanent("refused", "p", "p")).notification(),
            Notification::FailedPermanent
        );
        assert_eq!(
            Outcome::InProgress(Duration::from_secs(1)).notification(),
            Notification::FailedTransient
        );
    }

    #[test]
    fn the_reason_and_the_provider_id_go_in_their_headers() {
        let header = |outcome: Outcome, name: &str| {
            outcome
                .answer("SMS")
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let sent = || Outcome::Sent(Some("SM0001".into()));
        assert_eq!(
            header(sent(), headers::PROVIDER_ID).as_deref(),
            Some("SM0001")
        );
        assert_eq!(header(sent(), headers::REASON), None);
        let duplicate = Outcome::Duplicate(Some("<m1@example.com>".into()));
        assert_eq!(
            header(duplicate, headers::PROVIDER_ID).as_deref(),
            Some("<m1@example.com>")
        );
        let suppressed = || Outcome::Suppressed("twilio 21610".into());
        assert_eq!(
            header(suppressed(), headers::REASON).as_deref(),
            Some("twilio 21610")
        );
        assert_eq!(header(suppressed(), headers::PROVIDER_ID), None);
        // An id the broker would not keep is not sent (an outbox path, say).
        let long = Outcome::Sent(Some("x".repeat(headers::MAX_TEXT + 1)));
        assert_eq!(header(long, headers::PROVIDER_ID), None);
    }

    #[test]
    fn our_failures_get_a_generic_message_and_a_detailed_log() {
        let held = Outcome::LogUnavailable(ClaimHeld { lease_until_ms: 1 }.into());
        assert_eq!(
            held.public_error("SMS").unwrap(),
            "another delivery is sending this SMS; retry later"
        );
        let unreadable = Outcome::LogUnavailable(
            anyhow::anyhow!("disk I/O error").context("reading the notification log"),
        );
        assert_eq!(
            unreadable.public_error("email").unwrap(),
            "the email could not be sent now; retry later"
        );
        assert_eq!(
            unreadable.log_detail("email").unwrap(),
            "reading the notification log: disk I/O error"
        );
        let bug = Outcome::Internal("the push handler's task failed");
        assert_eq!(bug.public_error("SMS").unwrap(), "internal error");
        assert_eq!(
            bug.log_detail("SMS").unwrap(),
            "the push handler's task failed"
        );
    }

    #[test]
    fn public_reasons_do_not_echo_values() {
        let secret = "alex@example.com";
        let errors = [
            DecodeError::Envelope(format!(
                "invalid type: string \"{secret}\", expected struct PushEnvelope"
            )),
            DecodeError::Report(ReportError::InvalidField {
                field: "owner".into(),
                problem: format!("has the wrong shape: invalid type: string \"{secret}\""),
            }),
            DecodeError::Report(ReportError::Json(format!("expected value near {secret}"))),
        ];
        for err in errors {
            let reason = public_reason(&err);
            assert!(!reason.contains(secret), "{reason}");
        }
        assert_eq!(
            public_reason(&DecodeError::Report(ReportError::MissingId)),
            "message.data is not a lab report: `id` is required"
        );
    }
}
