//! What became of one push, and the one place that turns it into an HTTP
//! answer for the broker and a log line for the operator.
//!
//! | outcome | HTTP | broker |
//! | --- | --- | --- |
//! | sent, skipped (no owner phone), duplicate (already in the notification log) | 204 | ack |
//! | malformed envelope, base64 or report | 400 | retries, then dead-letters |
//! | invalid E.164 number; Twilio refused the message (21211, 21610, 21614, other 4xx) | 422 | retries, then dead-letters |
//! | Twilio 429 / 5xx / unreachable / no answer by the request limit; outbox write failed; notification log unreadable | 503 | retries with backoff |
//! | still sending at the Twilio timeout (the request goes on and is recorded or released) | 503 | retries; the redelivery waits for it |
//! | Twilio refused our credentials or sender (401/20003, 21606, ...) | 503 | retries: an operator can fix it |

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use labrelay_contract::push::DecodeError;

use crate::metrics::Notification;
use crate::phone::PhoneError;
use crate::transport::SendError;
use labrelay_receiver::notify_log::ClaimHeld;

pub(crate) enum Outcome {
    /// Sent; Twilio's message SID or the outbox file name.
    Sent(Option<String>),
    Skipped(&'static str),
    /// Sent before, says the notification log (with the id recorded then):
    /// not sent again.
    Duplicate(Option<String>),
    /// The notification log could not be read; sending blind could notify
    /// twice.
    LogUnavailable(anyhow::Error),
    Malformed(DecodeError),
    InvalidNumber(PhoneError),
    Failed(SendError),
    /// Still sending when the push had waited this long: answered now, the
    /// send goes on and is logged and counted when it ends.
    InProgress(Duration),
    /// The task handling the push died (a bug of ours); the broker retries.
    Internal,
}

/// What is known about the push being answered, for the log line.
#[derive(Default, Clone)]
pub(crate) struct PushInfo {
    pub report_id: Option<String>,
    pub message_id: Option<String>,
    pub delivery_attempt: Option<u32>,
}

impl Outcome {
    pub fn status(&self) -> StatusCode {
        match self {
            Outcome::Sent(_) | Outcome::Skipped(_) | Outcome::Duplicate(_) => {
                StatusCode::NO_CONTENT
            }
            Outcome::LogUnavailable(_) | Outcome::InProgress(_) => StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::Malformed(_) => StatusCode::BAD_REQUEST,
            Outcome::InvalidNumber(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Outcome::Failed(error) => match error {
                SendError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                SendError::Misconfigured { .. }
                | SendError::RateLimited { .. }
                | SendError::Unavailable { .. }
                | SendError::Timeout(_)
                | SendError::Unreachable(_)
                | SendError::Outbox(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            _ if self.status().is_server_error() => Notification::FailedTransient,
            _ => Notification::FailedPermanent,
        }
    }

    /// A short, stable name for dashboards and log queries.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Sent(_) => "sent",
            Outcome::Skipped(_) => "skipped",
            Outcome::Duplicate(_) => "duplicate",
            Outcome::LogUnavailable(error) if error.is::<ClaimHeld>() => "claim_held",
            Outcome::LogUnavailable(_) => "notify_log_error",
            Outcome::InProgress(_) => "in_progress",
            Outcome::Internal => "internal_error",
            Outcome::Malformed(_) => "malformed",
            Outcome::InvalidNumber(_) => "invalid_number",
            Outcome::Failed(SendError::Refused { .. }) => "refused",
            Outcome::Failed(SendError::Misconfigured { .. }) => "misconfigured",
            Outcome::Failed(SendError::RateLimited { .. }) => "rate_limited",
            Outcome::Failed(SendError::Unavailable { .. }) => "provider_error",
            Outcome::Failed(SendError::Timeout(_)) => "timeout",
            Outcome::Failed(SendError::Unreachable(_)) => "unreachable",
            Outcome::Failed(SendError::Outbox(_)) => "outbox_error",
        }
    }

    /// The error body for the broker: says what is wrong with a push the
    /// caller can fix, stays generic for our own failures. Never personal
    /// data.
    fn public_error(&self) -> Option<String> {
        match self {
            Outcome::Sent(_) | Outcome::Skipped(_) | Outcome::Duplicate(_) => None,
            Outcome::LogUnavailable(error) if error.is::<ClaimHeld>() => {
                Some("another delivery is sending this SMS; retry later".into())
            }
            Outcome::LogUnavailable(_) => Some("the SMS could not be sent now; retry later".into()),
            Outcome::InProgress(_) => Some("the SMS is still being sent; retry later".into()),
            Outcome::Internal => Some("internal error".into()),
            Outcome::Malformed(error) => Some(error.to_string()),
            Outcome::InvalidNumber(error) => Some(format!("owner.phone {error}")),
            Outcome::Failed(error @ SendError::Refused { .. }) => Some(error.to_string()),
            Outcome::Failed(_) => Some("the SMS could not be sent now; retry later".into()),
        }
    }

    /// The cause, for the log line: the error chain of a send failure, the
    /// kind of a malformed push (its details can quote the report), or why
    /// a push was skipped.
    fn log_detail(&self) -> Option<String> {
        match self {
            Outcome::Sent(_) => None,
            Outcome::Skipped(reason) => Some((*reason).to_string()),
            Outcome::Duplicate(_) => Some("duplicate, not sent again".to_string()),
            Outcome::LogUnavailable(error) => Some(format!("{error:#}")),
            Outcome::InProgress(waited) => Some(format!(
                "Twilio had not answered within {waited:?}; the request goes on"
            )),
            Outcome::Internal => Some("the push handler task failed".into()),
            Outcome::Malformed(error) => Some(
                match error {
                    DecodeError::Envelope(_) => "the body is not a push envelope",
                    DecodeError::Base64 => "message.data is not base64",
                    DecodeError::Report(_) => "message.data is not a lab report",
                }
                .to_string(),
            ),
            Outcome::InvalidNumber(error) => Some(format!("owner.phone {error}")),
            Outcome::Failed(error) => Some(error_chain(error)),
        }
    }

    /// The one log line of a push, "push handled" (a push answered while
    /// its SMS is still being sent logs "push answered" first). Info for
    /// what the broker acknowledges or should give up on, warn for what it
    /// must retry (the operator may need to act). Never a phone number or
    /// the message body.
    pub fn log(&self, push: &PushInfo) {
        let (sent_id, twilio_code, retry_after) = match self {
            Outcome::Sent(id) | Outcome::Duplicate(id) => (id.as_deref(), None, None),
            Outcome::Failed(error) => (
                None,
                error.twilio_code(),
                match error {
                    SendError::RateLimited { retry_after, .. } => retry_after.as_deref(),
                    _ => None,
                },
            ),
            _ => (None, None, None),
        };
        let status = self.status();
        let detail = self.log_detail();
        macro_rules! log_at {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    report_id = push.report_id.as_deref(),
                    message_id = push.message_id.as_deref(),
                    delivery_attempt = push.delivery_attempt,
                    outcome = self.label(),
                    status = status.as_u16(),
                    twilio_code,
                    sent_id,
                    retry_after,
                    detail = detail.as_deref(),
                    $message
                )
            };
        }
        if let Outcome::InProgress(_) = self {
            log_at!(warn, "push answered; its SMS is still being sent");
        } else if status.is_server_error() {
            log_at!(warn, "push handled");
        } else {
            log_at!(info, "push handled");
        }
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let status = self.status();
        match self.public_error() {
            None => status.into_response(),
            Some(error) => (status, Json(serde_json::json!({ "error": error }))).into_response(),
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use labrelay_contract::ReportError;

    use super::*;

    #[test]
    fn maps_every_outcome_to_one_status() {
        let failed = |error| Outcome::Failed(error);
        let cases = [
            (Outcome::Sent(Some("SM1".into())), 204, "sent"),
            (Outcome::Skipped("no owner phone"), 204, "skipped"),
            (Outcome::Duplicate(Some("SM1".into())), 204, "duplicate"),
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
                Outcome::InvalidNumber(PhoneError::MissingPlus),
                422,
                "invalid_number",
            ),
            (
                failed(SendError::Refused {
                    status: 400,
                    code: Some(21211),
                }),
                422,
                "refused",
            ),
            (
                failed(SendError::Refused {
                    status: 400,
                    code: Some(21610),
                }),
                422,
                "refused",
            ),
            (
                failed(SendError::Refused {
                    status: 400,
                    code: Some(21614),
                }),
                422,
                "refused",
            ),
            (
                failed(SendError::Misconfigured {
                    status: 401,
                    code: Some(20003),
                }),
                503,
                "misconfigured",
            ),
            (
                failed(SendError::RateLimited {
                    code: Some(20429),
                    retry_after: Some("5".into()),
                }),
                503,
                "rate_limited",
            ),
            (
                failed(SendError::Unavailable {
                    status: 500,
                    code: Some(20500),
                }),
                503,
                "provider_error",
            ),
            (
                failed(SendError::Timeout(Duration::from_secs(1))),
                503,
                "timeout",
            ),
            (
                Outcome::InProgress(Duration::from_secs(10)),
                503,
                "in_progress",
            ),
            (
                failed(SendError::Outbox(std::io::Error::other("disk full"))),
                503,
                "outbox_error",
            ),
        ];
        for (outcome, status, label) in cases {
            assert_eq!(
                (outcome.status().as_u16(), outcome.label()),
                (status, label)
            );
        }
    }

    #[test]
    fn our_failures_get_a_generic_message_and_a_detailed_log() {
        let outcome = Outcome::Failed(SendError::Outbox(std::io::Error::other("disk full")));
        assert_eq!(
            outcome.public_error().unwrap(),
            "the SMS could not be sent now; retry later"
        );
        assert_eq!(
            outcome.log_detail().unwrap(),
            "could not write the message to the outbox: disk full"
        );
        let refused = Outcome::Failed(SendError::Refused {
            status: 400,
            code: Some(21610),
        });
        assert_eq!(
            refused.public_error().unwrap(),
            "Twilio refused the message (HTTP 400, code 21610)"
        );
    }
}
