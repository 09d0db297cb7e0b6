//! The HTTP surface: `POST /` for push deliveries, `GET /healthz`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use labrelay_contract::LabReport;
use labrelay_contract::limits::Limits;
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

pub(crate) fn router(transport: Transport, push_auth: PushAuth, limits: Limits) -> Router {
    let pushes = Router::new().route("/", post(push));
    let router = push_auth
        .protect(pushes)
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BYTES))
        .with_state(Arc::new(transport));
    limits.apply(router)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn push(State(transport): State<Arc<Transport>>, body: Bytes) -> Response {
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
                    deliver(&transport, &envelope, &report)
                        .instrument(span)
                        .await
                }
            }
        }
    };
    outcome.log(&info);
    outcome.into_response()
}

async fn deliver(transport: &Transport, envelope: &PushEnvelope, report: &LabReport) -> Outcome {
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
    match transport.send(&sms).await {
        Ok(id) => Outcome::Sent(id),
        Err(error) => Outcome::Failed(error),
    }
}
