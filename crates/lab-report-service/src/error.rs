//! Why a report was not accepted, and the one mapping to HTTP responses.

use crate::ingest_auth::IngestAuthError;
use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use labrelay_contract::ReportError;

use crate::publisher::PublishFailure;

/// Seconds a lab should wait before posting again after a 503.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Everything that keeps a `POST /` from a 204.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No key, or a key of no configured lab.
    #[error("a valid API key is required: Authorization: Bearer <key>")]
    Unauthorized(#[source] IngestAuthError),
    /// The lab posted more than its rate limit allows; it may post again
    /// after `retry_after`.
    #[error("too many reports from this lab; retry after {} s", crate::rate_limit::retry_after_secs(*.retry_after))]
    RateLimited { retry_after: std::time::Duration },
    #[error("Content-Type must be application/json (UTF-8), not {}", .0.as_deref().map_or("missing".to_string(), |c| format!("{c:?}")))]
    UnsupportedMediaType(Option<String>),
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body could not be read: {0}")]
    UnreadableBody(String),
    #[error(transparent)]
    InvalidReport(#[from] ReportError),
    /// Our failure: the cause is logged, the lab gets a generic message.
    #[error("the report could not be stored right now; retry later")]
    Unavailable(#[source] PublishFailure),
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            IngestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::UnreadableBody(_) | IngestError::InvalidReport(_) => {
                StatusCode::BAD_REQUEST
            }
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short label for logs. Unlike the message, it never repeats what the
    /// lab sent, so it is safe at info level.
    pub fn reason(&self) -> String {
        match self {
            IngestError::Unauthorized(IngestAuthError::Missing) => "no API key".into(),
            IngestError::Unauthorized(IngestAuthError::Unknown) => "unknown API key".into(),
            IngestError::RateLimited { .. } => "rate limited".into(),
            IngestError::UnsupportedMediaType(_) => "unsupported content type".into(),
            IngestError::TooLarge { .. } => "body too large".into(),
            IngestError::UnreadableBody(_) => "unreadable body".into(),
            IngestError::InvalidReport(error) => match error {
                ReportError::Json(_) => "malformed JSON".into(),
                ReportError::NotAnObject => "not a JSON object".into(),
                ReportError::MissingId => "missing id".into(),
                ReportError::InvalidId => "invalid id".into(),
                ReportError::IdCharacter(c) => {
                    format!("id with a refused character U+{:04X}", u32::from(*c))
                }
                ReportError::InvalidField { field, .. } => format!("invalid field `{field}`"),
            },
            IngestError::Unavailable(PublishFailure::TimedOut(_)) => "publish timed out".into(),
            IngestError::Unavailable(PublishFailure::Failed(_)) => "publish failed".into(),
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        match self {
            IngestError::Unavailable(_) => (
                self.status(),
                [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
                body,
            )
                .into_response(),
            IngestError::Unauthorized(_) => {
                (self.status(), [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
            }
            IngestError::RateLimited { retry_after } => (
                self.status(),
                [(
                    header::RETRY_AFTER,
                    crate::rate_limit::retry_after_secs(retry_after).to_string(),
                )],
                body,
            )
                .into_response(),
            _ => (self.status(), body).into_response(),
        }
    }
}
