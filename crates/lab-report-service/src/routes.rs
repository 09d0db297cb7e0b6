//! The HTTP surface: `POST /` ingests a report, `GET /healthz` answers 200.
//! (`GET /metrics` is added by [`crate::app`].)

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use labrelay_contract::LabReport;
use labrelay_contract::ingest_auth::IngestAuth;

use crate::error::IngestError;
use crate::metrics::Metrics;
use crate::publisher::ReportPublisher;

struct AppState {
    publisher: ReportPublisher,
    max_body_bytes: usize,
    ingest_auth: IngestAuth,
    metrics: Metrics,
}

pub(crate) fn router(
    publisher: ReportPublisher,
    max_body_bytes: usize,
    ingest_auth: IngestAuth,
    metrics: Metrics,
) -> Router {
    let state = Arc::new(AppState {
        publisher,
        max_body_bytes,
        ingest_auth,
        metrics,
    });
    Router::new()
        .route("/", post(ingest))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// One report: 204 once the broker stored it, an [`IngestError`] otherwise.
/// Logs one line per request, naming the report but nothing in it.
async fn ingest(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, IngestError> {
    // The key is checked before the body is looked at.
    let lab = match &state.ingest_auth {
        IngestAuth::Open => Ok(None),
        IngestAuth::Keys(keys) => keys
            .check(&headers)
            .map(Some)
            .map_err(IngestError::Unauthorized),
    };
    let lab_name = lab.as_ref().ok().copied().flatten();
    let received = lab.and_then(|lab| Ok((lab, receive(&state, &headers, body)?)));
    let (report_id, result) = match received {
        Err(error) => (None, Err(error)),
        Ok((lab, report)) => {
            let started = std::time::Instant::now();
            let stored = state.publisher.publish(&report, lab).await;
            state.metrics.published(&stored, started.elapsed());
            (
                Some(report.id.to_string()),
                stored.map_err(IngestError::Unavailable),
            )
        }
    };
    let report_id = report_id.as_deref();
    let (outcome, status) = match &result {
        Ok(_) => ("stored", StatusCode::NO_CONTENT),
        Err(error @ IngestError::Unavailable(_)) => ("unavailable", error.status()),
        Err(error) => ("rejected", error.status()),
    };
    state.metrics.received(outcome, status.as_u16());
    match &result {
        Ok(message_id) => {
            tracing::info!(
                report_id,
                message_id,
                lab = lab_name,
                outcome = "stored",
                "report accepted"
            );
        }
        Err(error @ IngestError::Unavailable(cause)) => {
            tracing::warn!(
                report_id,
                outcome = "unavailable",
                reason = %error.reason(),
                cause = %error_chain(cause),
                "report not stored; answered 503"
            );
        }
        Err(error) => {
            tracing::info!(
                report_id,
                lab = lab_name,
                outcome = "rejected",
                status = error.status().as_u16(),
                reason = %error.reason(),
                "report rejected"
            );
        }
    }
    result.map(|_| status)
}

/// Turns the request into a report, or says why it is not one.
fn receive(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<LabReport, IngestError> {
    check_content_type(headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            IngestError::TooLarge {
                limit: state.max_body_bytes,
            }
        } else {
            IngestError::UnreadableBody(rejection.body_text())
        }
    })?;
    Ok(LabReport::parse(&body)?)
}

/// Accepts `application/json`, optionally with `charset=utf-8`
/// (case-insensitive); JSON on the wire is UTF-8 (RFC 8259).
fn check_content_type(headers: &HeaderMap) -> Result<(), IngestError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(IngestError::UnsupportedMediaType(None));
    };
    let refused = || {
        IngestError::UnsupportedMediaType(Some(
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ))
    };
    let text = value.to_str().map_err(|_| refused())?;
    let mut parts = text.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(refused());
    }
    for parameter in parts.filter(|p| !p.is_empty()) {
        let (name, value) = parameter.split_once('=').ok_or_else(refused)?;
        if name.trim().eq_ignore_ascii_case("charset")
            && !value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        {
            return Err(refused());
        }
    }
    Ok(())
}

/// `error: cause: cause ...`, for logging our own failures. The gax errors
/// already show their source in their message, so a cause whose text is
/// already there is not repeated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn content_types() {
        let cases: &[(Option<&str>, bool)] = &[
            (Some("application/json"), true),
            (Some("application/json; charset=utf-8"), true),
            (Some("Application/JSON;charset=UTF-8"), true),
            (Some("application/json; charset=\"utf-8\""), true),
            (Some("application/json; charset=latin1"), false),
            (Some("text/plain"), false),
            (Some("application/jsonx"), false),
            (Some("application/x-www-form-urlencoded"), false),
            (None, false),
        ];
        for (value, ok) in cases {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            }
            assert_eq!(check_content_type(&headers).is_ok(), *ok, "{value:?}");
        }
    }
}
