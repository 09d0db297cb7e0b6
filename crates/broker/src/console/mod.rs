//! The operator console at `/console` on the broker's port: topics and
//! subscriptions with backlog, in-flight, oldest unacked age, delivery rate
//! and a 30-minute chart of push successes and failures, the last push error
//! per subscription, recent reports with the state of each channel, the
//! journey of one report (`/console?report=<id>`), and dead letters with
//! replay.
//!
//! The page is rendered on the server (askama) and kept live by a small
//! script (`console.js`, no build step) polling the JSON endpoints under
//! `/console/api/`. The console shows ids, attributes, status codes and
//! times, never message data, unless the broker runs with
//! `--console-show-data`.
//!
//! The one mutating endpoint (replay) accepts only `application/json` with
//! the header `X-Labrelay-Console: 1`: a cross-site form cannot send either,
//! and a cross-origin script would need a CORS preflight the broker never
//! grants. Pages are served with a strict content security policy and may
//! not be framed.

use std::sync::Arc;
use std::time::SystemTime;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::BrokerError;
use crate::observe::Observers;

mod replay;
mod views;

use replay::{ReplayRequest, replay};
use views::{
    DeadLetterSubscription, Journey, MessageView, Overview, dead_letters, journey, overview, views,
};

/// The header (and value) a replay request must carry.
const CONSOLE_HEADER: &str = "x-labrelay-console";
/// Messages listed under "recent reports".
const RECENT: usize = 25;
/// The longest report id a lab may send (the contract's limit).
const MAX_REPORT_ID: usize = 128;

const SCRIPT: &str = include_str!("../../templates/console.js");
const STYLE: &str = include_str!("../../templates/console.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What the console reads: the engine's topics and subscriptions, and what
/// the observers saw.
#[derive(Clone)]
pub(crate) struct Console {
    engine: Engine,
    observers: Arc<Observers>,
}

/// The console's routes, to merge into the broker's router.
pub(crate) fn router(engine: Engine, observers: Arc<Observers>) -> Router {
    Router::new()
        .route("/console", get(page))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
        .route("/console/api/overview", get(overview_json))
        .route("/console/api/recent", get(recent_json))
        .route("/console/api/journey", get(journey_json))
        .route("/console/api/dead-letters", get(dead_letters_json))
        .route("/console/api/dead-letters/replay", post(replay_json))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(Console { engine, observers })
}

/// What can go wrong in a console request; mapped to a response in one place.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("replay needs Content-Type: application/json and X-Labrelay-Console: 1")]
    Forbidden,
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Forbidden => StatusCode::FORBIDDEN,
            ConsoleError::Broker(e) => match e {
                BrokerError::NotFound(_) => StatusCode::NOT_FOUND,
                BrokerError::InvalidArgument(_) | BrokerError::FailedPrecondition(_) => {
                    StatusCode::BAD_REQUEST
                }
                BrokerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            ConsoleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if status.is_server_error() {
            tracing::warn!(error = format!("{self:#}"), "console request failed");
            "the broker could not answer; see its log".to_string()
        } else {
            self.to_string()
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

// ----- queries -----

/// A report id as the console accepts it: what the lab-report-service
/// accepts (1 to 128 characters), without control characters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReportQuery(String);

impl ReportQuery {
    pub fn parse(raw: &str) -> Result<ReportQuery, ConsoleError> {
        let id = raw.trim();
        if id.is_empty() {
            return Err(ConsoleError::BadRequest("the report id is empty".into()));
        }
        if id.chars().count() > MAX_REPORT_ID {
            return Err(ConsoleError::BadRequest(format!(
                "a report id has at most {MAX_REPORT_ID} characters"
            )));
        }
        if id.chars().any(char::is_control) {
            return Err(ConsoleError::BadRequest(
                "a report id has no control characters".into(),
            ));
        }
        Ok(ReportQuery(id.to_string()))
    }
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct JourneyParams {
    report: Option<String>,
    message: Option<String>,
}

/// Which journey to show: by report id or by message id.
#[derive(Debug, Clone, PartialEq)]
enum Search {
    Report(ReportQuery),
    Message(u64),
}

impl Search {
    fn from_params(params: &JourneyParams) -> Result<Option<Search>, ConsoleError> {
        match (&params.report, &params.message) {
            (Some(_), Some(_)) => Err(ConsoleError::BadRequest(
                "search by report or by message, not both".into(),
            )),
            (Some(report), None) if report.trim().is_empty() => Ok(None),
            (Some(report), None) => Ok(Some(Search::Report(ReportQuery::parse(report)?))),
            (None, Some(message)) => message
                .trim()
                .parse()
                .map(|id| Some(Search::Message(id)))
                .map_err(|_| ConsoleError::BadRequest("a message id is a decimal number".into())),
            (None, None) => Ok(None),
        }
    }
}

// ----- handlers -----

fn json<T: Serialize>(value: T) -> Response {
    let mut response = Json(value).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn overview_json(State(console): State<Console>) -> Response {
    json(overview(&console))
}

#[derive(Debug, Deserialize)]
struct RecentParams {
    limit: Option<String>,
}

async fn recent_json(
    State(console): State<Console>,
    Query(params): Query<RecentParams>,
) -> Result<Response, ConsoleError> {
    let limit = match params.limit.as_deref() {
        None => RECENT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ConsoleError::BadRequest("limit is a number from 1 to 500".into()))?,
    };
    let observer = &console.observers;
    let messages = observer.journal.recent(limit, observer.show_data).await?;
    Ok(json(serde_json::json!({ "messages": views(messages) })))
}

async fn journey_json(
    State(console): State<Console>,
    Query(params): Query<JourneyParams>,
) -> Result<Response, ConsoleError> {
    let search = Search::from_params(&params)?
        .ok_or_else(|| ConsoleError::BadRequest("give report=<id> or message=<id>".into()))?;
    Ok(json(journey(&console, &search).await?))
}

async fn dead_letters_json(State(console): State<Console>) -> Response {
    json(serde_json::json!({ "subscriptions": dead_letters(&console) }))
}

async fn replay_json(
    State(console): State<Console>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    let marked = headers
        .get(CONSOLE_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1");
    if !is_json || !marked {
        return Err(ConsoleError::Forbidden);
    }
    let request: ReplayRequest = serde_json::from_slice(&body)
        .map_err(|e| ConsoleError::BadRequest(format!("bad replay request: {e}")))?;
    if request.message_ids.len() > 1000 {
        return Err(ConsoleError::BadRequest(
            "at most 1000 message ids per replay".into(),
        ));
    }
    Ok(json(replay(&console, request).await?))
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The console page, with everything it shows rendered on the server; the
/// script then keeps it current.
#[derive(Template)]
#[template(path = "console.html")]
struct Page {
    overview: Overview,
    recent: Vec<MessageView>,
    search: Option<String>,
    search_error: Option<String>,
    journey: Option<Journey>,
    dead_letters: Vec<DeadLetterSubscription>,
}

impl Page {
    fn time(ms: impl std::borrow::Borrow<i64>) -> String {
        let ms = (*ms.borrow()).max(0) as u64;
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        prost_types::Timestamp::from(at).to_string()
    }

    fn short(name: &str) -> &str {
        name.rsplit('/').next().unwrap_or(name)
    }
}

async fn page(
    State(console): State<Console>,
    Query(params): Query<JourneyParams>,
) -> Result<Response, ConsoleError> {
    let observer = &console.observers;
    let (search, status, search_error) = match Search::from_params(&params) {
        Ok(search) => (search, StatusCode::OK, None),
        Err(error) => (None, StatusCode::BAD_REQUEST, Some(error.to_string())),
    };
    let journey = match &search {
        Some(search) => Some(journey(&console, search).await?),
        None => None,
    };
    let page = Page {
        overview: overview(&console),
        recent: views(observer.journal.recent(RECENT, observer.show_data).await?),
        search: params.report.filter(|_| search_error.is_none()),
        search_error,
        journey,
        dead_letters: dead_letters(&console),
    };
    let html = page
        .render()
        .map_err(|e| ConsoleError::Internal(anyhow::anyhow!("rendering the console: {e}")))?;
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_queries_are_validated() {
        assert_eq!(
            ReportQuery::parse(" 12 ").unwrap(),
            ReportQuery("12".into())
        );
        assert!(ReportQuery::parse("").is_err());
        assert!(ReportQuery::parse(&"x".repeat(129)).is_err());
        assert!(ReportQuery::parse(&"é".repeat(128)).is_ok());
        assert!(ReportQuery::parse("a\u{0}b").is_err());
        let both = JourneyParams {
            report: Some("1".into()),
            message: Some("2".into()),
        };
        assert!(Search::from_params(&both).is_err());
        let bad = JourneyParams {
            report: None,
            message: Some("-1".into()),
        };
        assert!(Search::from_params(&bad).is_err());
        let message = JourneyParams {
            report: None,
            message: Some("42".into()),
        };
        assert_eq!(
            Search::from_params(&message).unwrap(),
            Some(Search::Message(42))
        );
    }
}
