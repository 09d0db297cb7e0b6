//! The HTTP surface: `POST /` for push deliveries, `GET /healthz`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use labrelay_contract::LabReport;
use labrelay_contract::limits::Limits;
use labrelay_contract::notify_log::{Dedupe, NotificationKey, SentRecord, content_hash};
use labrelay_contract::push::PushEnvelope;
use labrelay_contract::push_auth::PushAuth;
use tracing::Instrument as _;

use crate::notice;
use crate::outcome::{Outcome, PushInfo};
use crate::phone::PhoneNumber;
use crate::transport::{Sms, Transport};

/// Push bodies up to this size are read: a 1 MiB report, base64-encoded,
/// in its envelope.
const MAX_PUSH_BYTES: usize = 2 * 1024 * 1024;

/// What the handlers share.
pub(crate) struct Service {
    pub transport: Transport,
    /// The notification log, when `NOTIFY_LOG` is set.
    pub dedupe: Option<Dedupe>,
}

pub(crate) fn router(service: Service, push_auth: PushAuth, limits: Limits) -> Router {
    let pushes = Router::new().route("/", post(push));
    let router = push_auth
        .protect(pushes)
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BYTES))
        .with_state(Arc::new(service));
    limits.apply(router)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn push(State(service): State<Arc<Service>>, body: Bytes) -> Response {
    let mut info = PushInfo::default();
    let outcome = match PushEnvelope::parse(&body) {
        Err(error) => Outcome::Malformed(error),
        Ok(envelope) => {
            info.message_id = Some(envelope.message.message_id.clone());
            info.delivery_attempt = envelope.delivery_attempt;
            match envelope.report() {
                Err(error) => Outcome::Malformed(error),
                Ok(report) => {
                    let report_id = report.id.to_string();
                    let span = tracing::info_span!(
                        "push",
                        report_id = %report_id,
                        message_id = %envelope.message.message_id,
                    );
                    info.report_id = Some(report_id);
                    deliver(&service, &envelope, &report).instrument(span).await
                }
            }
        }
    };
    outcome.log(&info);
    outcome.into_response()
}

async fn deliver(service: &Service, envelope: &PushEnvelope, report: &LabReport) -> Outcome {
    let Some(raw) = report
        .owner
        .phone
        .as_deref()
        .filter(|p| !p.trim().is_empty())
    else {
        return Outcome::Skipped("the report has no owner.phone");
    };
    let to = match PhoneNumber::parse(raw) {
        Ok(to) => to,
        Err(error) => return Outcome::InvalidNumber(error),
    };
    let body = notice::compose(report);
    let sms = Sms {
        report_id: &report.id,
        message_id: &envelope.message.message_id,
        to: &to,
        body: &body,
    };
    let Some(dedupe) = &service.dedupe else {
        return send(&service.transport, &sms).await;
    };
    let key = NotificationKey {
        report_id: report.id.to_string(),
        channel: "sms",
        content_hash: content_hash(&["labrelay-sms/1", &report.id.to_string(), to.as_str(), &body]),
    };
    // Held across lookup, send and record: a concurrent delivery of the
    // same SMS waits here and then finds the record.
    let _guard = dedupe.lock(&key).await;
    match dedupe.already_sent(&key).await {
        Ok(Some(record)) => return Outcome::Duplicate(record.provider_id),
        Ok(None) => {}
        Err(error) => return Outcome::LogUnavailable(error),
    }
    let outcome = send(&service.transport, &sms).await;
    if let Outcome::Sent(id) = &outcome
        && let Err(error) = dedupe.record_sent(&key, SentRecord::now(id.clone())).await
    {
        // The SMS went out: acknowledge it; a redelivery would send it again.
        tracing::error!(error = ?error, sent_id = id.as_deref(), "recording the sent SMS failed");
    }
    outcome
}

async fn send(transport: &Transport, sms: &Sms<'_>) -> Outcome {
    match transport.send(sms).await {
        Ok(id) => Outcome::Sent(id),
        Err(error) => Outcome::Failed(error),
    }
}
