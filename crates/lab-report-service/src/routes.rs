//! The HTTP surface: `POST /` ingests a report, `GET /healthz` answers 200.
//! (`GET /metrics` is added by [`crate::app`].)
//!
//! A report goes through, in order: the API key and the lab's rate limit
//! ([`require_key`], a layer that sees only the headers), the in-flight
//! limit and request timeout ([`Limits`]), the `Content-Type`, and only then
//! the body (at most `max_body_bytes`). So a request without a valid key is
//! answered 401, and one over its lab's rate 429, at once, before a byte of
//! its body is read and without taking one of the limited slots: strangers
//! cannot crowd out the labs by announcing large bodies and sending them
//! slowly, and one lab cannot crowd out the others. `/healthz` is outside the key and the
//! limit, so a probe is answered while the service is busy.

use std::sync::Arc;

use crate::ingest_auth::IngestAuth;
use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use labrelay_contract::LabReport;
use labrelay_runtime::limits::Limits;

use crate::error::IngestError;
use crate::metrics::Metrics;
use crate::publisher::ReportPublisher;
use crate::rate_limit::LabLimiter;

struct AppState {
    publisher: ReportPublisher,
    max_body_bytes: usize,
    ingest_auth: IngestAuth,
    /// `None`: no rate limit.
    limiter: Option<LabLimiter>,
    metrics: Metrics,
}

/// Who a request was let in as: the lab whose key it presented, or nobody
/// when ingest is open. Put in the request's extensions by [`require_key`];
/// a request without it never reaches [`ingest`] (the extractor fails).
#[derive(Debug, Clone)]
struct Admitted {
    lab: Option<Arc<str>>,
}

pub(crate) fn router(
    publisher: ReportPublisher,
    max_body_bytes: usize,
    ingest_auth: IngestAuth,
    limiter: Option<LabLimiter>,
    metrics: Metrics,
    limits: Limits,
) -> Router {
    let state = Arc::new(AppState {
        publisher,
        max_body_bytes,
        ingest_auth,
        limiter,
        metrics,
    });
    let ingest = Router::new()
        .route("/", post(ingest))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(Arc::clone(&state));
    limits
        .apply(ingest)
        // Added after the limit, so it runs before it.
        .route_layer(axum::middleware::from_fn_with_state(state, require_key))
        .route("/healthz", get(healthz))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Lets a request in only with the key of a configured lab (anyone when
/// ingest is open), and only while that lab is within its rate limit (an
/// open ingest's callers share one bucket), looking at its headers alone.
/// A refusal is logged and counted like every other answer to `POST /`.
async fn require_key(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let lab = match &state.ingest_auth {
        IngestAuth::Open => None,
        IngestAuth::Keys(keys) => match keys.check(request.headers()) {
            Ok(lab) => Some(Arc::from(lab)),
            Err(error) => {
                let result = Err(IngestError::Unauthorized(error));
                state.conclude(None, None, &result);
                return result.into_response();
            }
        },
    };
    if let Some(limiter) = &state.limiter
        && let Err(retry_after) = limiter.check(&lab)
    {
        let result = Err(IngestError::RateLimited { retry_after });
        state.conclude(None, lab.as_deref(), &result);
        return result.into_response();
    }
    request.extensions_mut().insert(Admitted { lab });
    next.run(request).await
}

/// One report: 204 once the broker stored it, an [`IngestError`] otherwise.
/// Logs one line per request, naming the report but nothing in it.
async fn ingest(
    State(state): State<Arc<AppState>>,
    Extension(admitted): Extension<Admitted>,
    request: Request,
) -> Result<StatusCode, IngestError> {
    let lab = admitted.lab.as_deref();
    let (report_id, result) = match receive(&state, request).await {
        Err(error) => (None, Err(error)),
        Ok(report) => {
            let started = std::time::Instant::now();
            let stored = state.publisher.publish(&report, lab).await;
            state.metrics.published(&stored, started.elapsed());
            (
                Some(report.id.to_string()),
                stored.map_err(IngestError::Unavailable),
            )
        }
    };
    state.conclude(report_id.as_deref(), lab, &result);
    result.map(|_| StatusCode::NO_CONTENT)
}

impl AppState {
    /// Counts and logs the answer to one `POST /`. Ids, the lab name and
    /// error text from elsewhere are string values, which the log formats
    /// escape (the text format quotes them with `Debug`), so none can start
    /// a line of its own; `%` (written as is) is kept for our own labels.
    fn conclude(
        &self,
        report_id: Option<&str>,
        lab: Option<&str>,
        result: &Result<String, IngestError>,
    ) {
        let (outcome, status) = match result {
            Ok(_) => ("stored", StatusCode::NO_CONTENT),
            Err(error @ IngestError::Unavailable(_)) => ("unavailable", error.status()),
            Err(error @ IngestError::RateLimited { .. }) => ("rate_limited", error.status()),
            Err(error) => ("rejected", error.status()),
        };
        self.metrics.received(outcome, status.as_u16());
        match result {
            Ok(message_id) => {
                tracing::info!(
                    report_id,
                    message_id = message_id.as_str(),
                    lab,
                    outcome = "stored",
                    "report accepted"
                );
            }
            Err(error @ IngestError::Unavailable(cause)) => {
                tracing::warn!(
                    report_id,
                    outcome = "unavailable",
                    reason = %error.reason(),
                    cause = error_chain(cause),
                    "report not stored; answered 503"
                );
            }
            Err(IngestError::RateLimited { retry_after }) => {
                tracing::info!(
                    lab,
                    outcome = "rate_limited",
                    status = 429,
                    retry_after_secs = crate::rate_limit::retry_after_secs(*retry_after),
                    "report refused: the lab is over its rate limit"
                );
            }
            Err(error) => {
                tracing::info!(
                    report_id,
                    lab,
                    outcome = "rejected",
                    status = error.status().as_u16(),
                    reason = %error.reason(),
                    "report rejected"
                );
            }
        }
    }
}

/// Turns the request into a report, or says why it is not one. The body is
/// read only once the `Content-Type` is right.
async fn receive(state: &AppState, request: Request) -> Result<LabReport, IngestError> {
    check_content_type(request.headers())?;
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
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
