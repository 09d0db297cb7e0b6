//! The push endpoint: `POST /` (one Pub/Sub push envelope) and
//! `GET /healthz`.
//!
//! [`status_of`] is the one place that maps what happened to a push to the
//! HTTP status the broker sees: 2xx acknowledges, anything else makes the
//! broker redeliver later, until the subscription's dead-letter policy
//! gives up.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use labrelay_contract::ReportError;
use labrelay_contract::push::{DecodeError, PushEnvelope};
use labrelay_receiver::notify_log::{
    ClaimHeld, Dedupe, NotificationKey, SentRecord, attempt_limit,
};
use lettre::message::Mailbox;
use tracing::Instrument as _;

use crate::email::{self, ComposeError, Sender};
use crate::mailer::{Class, Mailer};
use crate::metrics::{Metrics, Notification, OUTCOME_HEADER};

/// What the handlers share.
pub struct Service {
    pub mailer: Mailer,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    pub send_timeout: Duration,
    /// The notification log, when `NOTIFY_LOG` is set.
    pub dedupe: Option<Dedupe>,
    pub metrics: Arc<Metrics>,
}

/// A push handled to the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered to the SMTP server or written to the outbox.
    Sent { email_message_id: String },
    /// The notification log says this email was sent before: not sent again.
    Duplicate { email_message_id: String },
    /// Nothing to send for this report.
    Skipped { reason: &'static str },
}

/// A push that was not handled. Every message is safe to return and to log
/// at info: no addresses, no results, no server text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The body is not a push envelope carrying a lab report.
    Malformed(String),
    /// This message can never be delivered.
    Permanent(String),
    /// May succeed on redelivery.
    Transient(String),
    /// A bug of ours.
    Internal,
}

/// The HTTP status for each result of a push.
pub fn status_of(result: &Result<Outcome, Failure>) -> StatusCode {
    match result {
        Ok(Outcome::Sent { .. } | Outcome::Duplicate { .. } | Outcome::Skipped { .. }) => {
            StatusCode::NO_CONTENT
        }
        Err(Failure::Malformed(_)) => StatusCode::BAD_REQUEST,
        Err(Failure::Permanent(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        Err(Failure::Transient(_)) => StatusCode::SERVICE_UNAVAILABLE,
        Err(Failure::Internal) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What the metrics and the `X-Labrelay-Outcome` header call each result.
pub fn notification_of(result: &Result<Outcome, Failure>) -> Notification {
    match result {
        Ok(Outcome::Sent { .. }) => Notification::Sent,
        Ok(Outcome::Duplicate { .. }) => Notification::Duplicate,
        Ok(Outcome::Skipped { .. }) => Notification::Skipped,
        Err(Failure::Malformed(_) | Failure::Permanent(_)) => Notification::FailedPermanent,
        Err(Failure::Transient(_) | Failure::Internal) => Notification::FailedTransient,
    }
}

fn respond(result: &Result<Outcome, Failure>) -> Response {
    let status = status_of(result);
    let mut response = match result {
        Ok(_) => status.into_response(),
        Err(failure) => {
            let message = match failure {
                Failure::Malformed(m) | Failure::Permanent(m) | Failure::Transient(m) => m.as_str(),
                Failure::Internal => "internal error",
            };
            (status, Json(serde_json::json!({ "error": message }))).into_response()
        }
    };
    response
        .headers_mut()
        .insert(OUTCOME_HEADER, notification_of(result).header_value());
    response
}

pub async fn healthz() -> StatusCode {
    StatusCode::OK
}

pub async fn push(State(service): State<Arc<Service>>, body: Bytes) -> Response {
    let envelope = match PushEnvelope::parse(&body) {
        Ok(envelope) => envelope,
        Err(err) => {
            tracing::debug!(error = err.to_string(), "unreadable push body");
            let result = Err(Failure::Malformed(public_reason(&err)));
            tracing::warn!(
                outcome = "malformed",
                status = status_of(&result).as_u16(),
                "push handled"
            );
            service.metrics.notification(notification_of(&result));
            return respond(&result);
        }
    };
    service.metrics.delivery_attempt(envelope.delivery_attempt);
    // ERROR level so that no level filter drops the span and with it the
    // ids on the lines logged inside; a span never prints by itself. Text
    // from the push (ids, the reportId attribute, errors quoting the body)
    // is logged as string values, which the log formats escape; with `%` a
    // newline in it would start a forged line of the text log.
    let span = tracing::error_span!(
        "push",
        report_id = tracing::field::Empty,
        message_id = envelope.message.message_id.as_str(),
        delivery_attempt = envelope.delivery_attempt,
    );
    // On a task of its own: when the broker stops waiting (its ack deadline
    // passed, or it died) hyper drops this handler, and a claim → send →
    // record cut in the middle would send the email again on redelivery (or
    // leave lettre's pooled connection mid-transaction). Only the wait is
    // cancelled; the redelivery, waiting on the key's lock, finds the record.
    let answer_within = service.send_timeout;
    let handling = tokio::spawn(
        async move {
            let result = handle(&service, &envelope).await;
            log_result(&result);
            service.metrics.notification(notification_of(&result));
            if let Ok(Outcome::Sent { .. }) = result {
                service.metrics.delivered(&envelope.message.publish_time);
            }
            result
        }
        .instrument(span),
    );
    // The broker gets its answer within the send timeout; a delivery still
    // going on then goes on (see `send`) and is recorded or released when
    // it ends. Until then its redelivery waits on the key's lock.
    match tokio::time::timeout(answer_within, handling).await {
        Ok(joined) => respond(&joined.unwrap_or(Err(Failure::Internal))),
        Err(_) => {
            tracing::warn!(
                outcome = "transient",
                status = 503,
                "push answered before its delivery finished; the delivery goes on"
            );
            respond(&Err(Failure::Transient(format!(
                "delivery still in progress after {answer_within:?}; retry later"
            ))))
        }
    }
}

async fn handle(service: &Service, envelope: &PushEnvelope) -> Result<Outcome, Failure> {
    let report = envelope.report().map_err(|err| {
        // The publisher's attribute is the best name the logs can give it.
        if let Some(id) = envelope.message.attributes.get("reportId") {
            tracing::Span::current().record("report_id", id.as_str());
        }
        tracing::debug!(error = err.to_string(), "the push carries no lab report");
        Failure::Malformed(public_reason(&err))
    })?;
    tracing::Span::current().record("report_id", report.id.to_string());

    let sender = Sender {
        from: &service.from,
        reply_to: service.reply_to.as_ref(),
    };
    let email = match email::compose(&report, &sender) {
        Ok(email) => email,
        Err(ComposeError::NoAddress) => {
            return Ok(Outcome::Skipped {
                reason: "the report has no owner email",
            });
        }
        Err(err @ ComposeError::InvalidAddress) => return Err(Failure::Permanent(err.to_string())),
        Err(err @ (ComposeError::Render(_) | ComposeError::Build(_))) => {
            tracing::error!(error = ?anyhow::Error::new(err), "composing the email failed");
            return Err(Failure::Internal);
        }
    };

    let Some(dedupe) = &service.dedupe else {
        return send(service, &email).await;
    };
    let key = NotificationKey {
        report_id: report.id.to_string(),
        channel: "email",
        content_hash: email.content_hash.clone(),
    };
    // Held across lookup, send and record: a concurrent delivery of the
    // same email waits here and then finds the record.
    let _guard = dedupe.lock(&key).await;
    match dedupe.already_sent(&key).await {
        Ok(Some(_)) => {
            return Ok(Outcome::Duplicate {
                email_message_id: email.message_id,
            });
        }
        Ok(None) => {}
        Err(err) if err.is::<ClaimHeld>() => {
            // Another instance is sending this very email: not a fault.
            tracing::info!(error = %err, "email held by another delivery");
            return Err(Failure::Transient(
                "another delivery is sending this email; retry later".into(),
            ));
        }
        Err(err) => {
            // Sending without knowing could notify twice; let the broker retry.
            tracing::error!(error = ?err, "reading the notification log failed");
            return Err(Failure::Transient(
                "the notification log cannot be read now".into(),
            ));
        }
    }
    let outcome = send(service, &email).await?;
    let record = SentRecord::now(Some(email.message_id.clone()));
    if let Err(err) = dedupe.record_sent(&key, record).await {
        // The email went out: acknowledge it; a redelivery would send it again.
        tracing::error!(error = ?err, email_message_id = %email.message_id, "recording the sent email failed");
    }
    Ok(outcome)
}

async fn send(service: &Service, email: &email::Email) -> Result<Outcome, Failure> {
    let started = std::time::Instant::now();
    let sent = service
        .mailer
        .send(email, attempt_limit(service.send_timeout))
        .await;
    service.metrics.send_took(started.elapsed());
    match sent {
        Ok(()) => Ok(Outcome::Sent {
            email_message_id: email.message_id.clone(),
        }),
        Err(err) => {
            tracing::debug!(error = ?err.source, email_message_id = %email.message_id, "delivery failed");
            let summary = err.summary;
            Err(match err.class {
                Class::Transient => Failure::Transient(summary),
                Class::Permanent => Failure::Permanent(summary),
            })
        }
    }
}

/// The one info-level line per push (inside the push span, which carries
/// report_id, message_id and delivery_attempt).
fn log_result(result: &Result<Outcome, Failure>) {
    let status = status_of(result).as_u16();
    match result {
        Ok(Outcome::Sent { email_message_id }) => {
            tracing::info!(outcome = "sent", status, email_message_id = %email_message_id, "push handled")
        }
        Ok(Outcome::Duplicate { email_message_id }) => {
            tracing::info!(
                outcome = "duplicate",
                status,
                email_message_id = %email_message_id,
                "push handled: duplicate, not sent again"
            )
        }
        Ok(Outcome::Skipped { reason }) => {
            tracing::info!(outcome = "skipped", status, reason, "push handled")
        }
        Err(Failure::Malformed(reason)) => {
            tracing::warn!(outcome = "malformed", status, reason, "push handled")
        }
        Err(Failure::Permanent(reason)) => {
            tracing::warn!(outcome = "permanent", status, reason, "push handled")
        }
        Err(Failure::Transient(reason)) => {
            tracing::warn!(outcome = "transient", status, reason, "push handled")
        }
        Err(Failure::Internal) => tracing::error!(outcome = "internal", status, "push handled"),
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
    fn maps_each_result_to_one_status() {
        let cases = [
            (
                Ok(Outcome::Sent {
                    email_message_id: "<x@labrelay>".into(),
                }),
                204,
            ),
            (
                Ok(Outcome::Duplicate {
                    email_message_id: "<x@labrelay>".into(),
                }),
                204,
            ),
            (Ok(Outcome::Skipped { reason: "no email" }), 204),
            (Err(Failure::Malformed("m".into())), 400),
            (Err(Failure::Permanent("p".into())), 422),
            (Err(Failure::Transient("t".into())), 503),
            (Err(Failure::Internal), 500),
        ];
        for (result, want) in cases {
            assert_eq!(status_of(&result).as_u16(), want, "{result:?}");
        }
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
