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

use std::collections::BTreeSet;
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
use crate::observe::journal::{Event, JournalMessage};
use crate::observe::stats::{self, StatsSnapshot, unix_millis};
use crate::pb;

/// Attributes the broker adds to a dead letter; a replay removes them.
const SOURCE_PREFIX: &str = "CloudPubSubDeadLetterSource";
/// The header (and value) a replay request must carry.
const CONSOLE_HEADER: &str = "x-labrelay-console";
/// Messages listed under "recent reports".
const RECENT: usize = 25;
/// Dead letters listed per dead-letter subscription.
const DEAD_LETTERS_SHOWN: usize = 200;
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
struct JourneyParams {
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

// ----- answers -----

#[derive(Debug, Serialize)]
pub(crate) struct Overview {
    now_ms: i64,
    show_data: bool,
    journal_dropped: u64,
    topics: Vec<TopicView>,
    subscriptions: Vec<SubscriptionView>,
}

#[derive(Debug, Serialize)]
struct TopicView {
    name: String,
    subscriptions: Vec<String>,
}

#[derive(Debug, Serialize)]
struct SubscriptionView {
    name: String,
    topic: String,
    /// `push` or `pull`.
    kind: &'static str,
    endpoint: Option<String>,
    dead_letter_topic: Option<String>,
    /// A pull subscription of some subscription's dead-letter topic.
    holds_dead_letters: bool,
    backlog: usize,
    in_flight: usize,
    oldest_unacked_age_s: f64,
    #[serde(flatten)]
    stats: StatsSnapshot,
}

fn overview(console: &Console) -> Overview {
    let now = SystemTime::now();
    let subs = console.engine.all_subscriptions();
    let dead_letter_topics: BTreeSet<String> = subs
        .iter()
        .filter_map(|s| s.config().dead_letter_policy.map(|d| d.dead_letter_topic))
        .collect();
    let subscriptions = subs
        .iter()
        .map(|sub| {
            let config = sub.config();
            let counts = sub.counts();
            let endpoint = config
                .push_config
                .as_ref()
                .map(|p| p.push_endpoint.clone())
                .filter(|e| !e.is_empty());
            SubscriptionView {
                name: sub.name.to_string(),
                kind: if endpoint.is_some() { "push" } else { "pull" },
                holds_dead_letters: endpoint.is_none()
                    && dead_letter_topics.contains(&config.topic),
                endpoint,
                dead_letter_topic: config.dead_letter_policy.map(|d| d.dead_letter_topic),
                topic: config.topic,
                backlog: counts.backlog,
                in_flight: counts.in_flight,
                oldest_unacked_age_s: counts.oldest_age(now).as_secs_f64(),
                stats: stats::of(sub).snapshot(now),
            }
        })
        .collect();
    Overview {
        now_ms: unix_millis(now),
        show_data: console.observers.show_data,
        journal_dropped: console.observers.metrics.journal_dropped.get(),
        topics: console
            .engine
            .all_topics()
            .into_iter()
            .map(|(name, subscriptions)| TopicView {
                name,
                subscriptions,
            })
            .collect(),
        subscriptions,
    }
}

/// Where a message stands on one subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Channel {
    subscription: String,
    /// `pending`, `retrying`, `delivered`, `skipped`, `duplicate`,
    /// `acked` (by a pull subscriber), `dead-lettered`, `parked` or
    /// `replayed`.
    state: &'static str,
    attempts: u32,
    last_status: Option<u16>,
    last_error: Option<String>,
}

/// A journaled message with the state of each of its channels.
#[derive(Debug, Serialize)]
pub(crate) struct MessageView {
    #[serde(flatten)]
    message: JournalMessage,
    channels: Vec<Channel>,
}

/// The state of each channel of `message`, from its events: the last
/// acknowledged push says delivered (or what the receiver's
/// `X-Labrelay-Outcome` says: skipped, duplicate); failures alone say
/// retrying; dead-lettering and replay override both.
pub(crate) fn channels(message: &JournalMessage) -> Vec<Channel> {
    let mut names: Vec<&str> = message.subscriptions.iter().map(String::as_str).collect();
    for event in &message.events {
        if !names.contains(&event.subscription.as_str()) {
            names.push(&event.subscription);
        }
    }
    let parked = message
        .attributes
        .keys()
        .any(|k| k.starts_with(SOURCE_PREFIX));
    names
        .into_iter()
        .map(|name| {
            let events: Vec<_> = message
                .events
                .iter()
                .filter(|e| e.subscription == name)
                .collect();
            let pushes: Vec<_> = events.iter().filter(|e| e.kind == "push").collect();
            let acked = pushes
                .iter()
                .rev()
                .find(|e| e.status.is_some_and(crate::retry::is_push_ack));
            let state = if events.iter().any(|e| e.kind == "replayed") {
                "replayed"
            } else if events.iter().any(|e| e.kind == "dead-lettered") {
                "dead-lettered"
            } else if let Some(acked) = acked {
                match acked.outcome.as_deref() {
                    Some("skipped") => "skipped",
                    Some("duplicate") => "duplicate",
                    _ => "delivered",
                }
            } else if events.iter().any(|e| e.kind == "acked") {
                "acked"
            } else if !pushes.is_empty() {
                "retrying"
            } else if parked {
                "parked"
            } else {
                "pending"
            };
            let last = pushes.last();
            Channel {
                subscription: name.to_string(),
                state,
                attempts: pushes.len() as u32,
                last_status: last.and_then(|e| e.status),
                last_error: last.and_then(|e| e.error.clone()),
            }
        })
        .collect()
}

fn views(messages: Vec<JournalMessage>) -> Vec<MessageView> {
    messages
        .into_iter()
        .map(|message| MessageView {
            channels: channels(&message),
            message,
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct Journey {
    report: Option<String>,
    message: Option<String>,
    messages: Vec<MessageView>,
}

async fn journey(console: &Console, search: &Search) -> Result<Journey, ConsoleError> {
    let observer = &console.observers;
    let show = observer.show_data;
    Ok(match search {
        Search::Report(report) => Journey {
            report: Some(report.0.clone()),
            message: None,
            messages: views(observer.journal.by_report(report.0.clone(), show).await?),
        },
        Search::Message(id) => {
            // A message id leads to its whole report when it has one.
            let messages = match observer.journal.report_of(*id).await? {
                Some(report) => observer.journal.by_report(report, show).await?,
                None => observer.journal.by_message(*id, show).await?,
            };
            Journey {
                report: messages.first().and_then(|m| m.report_id.clone()),
                message: Some(id.to_string()),
                messages: views(messages),
            }
        }
    })
}

#[derive(Debug, Serialize)]
struct DeadLetterSubscription {
    name: String,
    total: usize,
    messages: Vec<DeadLetter>,
}

#[derive(Debug, Serialize)]
struct DeadLetter {
    message_id: String,
    report_id: Option<String>,
    source_subscription: Option<String>,
    delivery_attempts: Option<String>,
    source_publish_time: Option<String>,
    error: Option<String>,
    dead_lettered_ms: i64,
}

fn dead_letters(console: &Console) -> Vec<DeadLetterSubscription> {
    overview(console)
        .subscriptions
        .into_iter()
        .filter(|s| s.holds_dead_letters)
        .filter_map(|s| {
            let sub = console.engine.subscription(&s.name).ok()?;
            let attr = |m: &pb::PubsubMessage, key: &str| m.attributes.get(key).cloned();
            let messages = sub
                .peek(DEAD_LETTERS_SHOWN)
                .into_iter()
                .map(|(m, _)| DeadLetter {
                    message_id: m.pb.message_id.clone(),
                    report_id: attr(&m.pb, "reportId"),
                    source_subscription: attr(&m.pb, "CloudPubSubDeadLetterSourceSubscription"),
                    delivery_attempts: attr(&m.pb, "CloudPubSubDeadLetterSourceDeliveryCount"),
                    source_publish_time: attr(&m.pb, "CloudPubSubDeadLetterSourceTopicPublishTime"),
                    error: attr(&m.pb, "CloudPubSubDeadLetterSourceDeliveryErrorMessage"),
                    dead_lettered_ms: unix_millis(m.published_at),
                })
                .collect();
            Some(DeadLetterSubscription {
                name: s.name,
                total: s.backlog,
                messages,
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    subscription: String,
    /// Dead-letter message ids; empty replays every ready dead letter.
    #[serde(default)]
    message_ids: Vec<String>,
}

#[derive(Debug, Serialize, Default)]
struct ReplayAnswer {
    replayed: Vec<Replayed>,
    not_found: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Replayed {
    message_id: String,
    new_id: String,
    topic: String,
    report_id: Option<String>,
}

/// Replays dead letters as `labrelay dead-letters replay` does: leases what
/// is ready on the dead-letter subscription, puts back what was not chosen,
/// republishes each chosen message to its source topic (the topic of the
/// subscription named in `CloudPubSubDeadLetterSourceSubscription`) without
/// the `CloudPubSubDeadLetterSource*` attributes, and only then acknowledges
/// it, so a crash in between duplicates rather than loses.
async fn replay(console: &Console, request: ReplayRequest) -> Result<ReplayAnswer, ConsoleError> {
    let name = request.subscription;
    let sub = console.engine.subscription(&name)?;
    if sub.settings().push.is_some() {
        return Err(ConsoleError::BadRequest(format!(
            "{name} is a push subscription; dead letters are replayed from a pull subscription"
        )));
    }
    let mut leased = Vec::new();
    loop {
        let batch = console.engine.pull(&name, 1000, true).await?;
        if batch.is_empty() {
            break;
        }
        leased.extend(batch);
    }
    let wanted: BTreeSet<&str> = request.message_ids.iter().map(String::as_str).collect();
    let (chosen, others): (Vec<_>, Vec<_>) = leased.into_iter().partition(|r| {
        wanted.is_empty()
            || r.message
                .as_ref()
                .is_some_and(|m| wanted.contains(m.message_id.as_str()))
    });
    let others: Vec<String> = others.into_iter().map(|r| r.ack_id).collect();
    if !others.is_empty() {
        console
            .engine
            .modify_ack_deadline(&name, &others, 0)
            .await?;
    }
    let mut answer = ReplayAnswer::default();
    let mut failed: Option<ConsoleError> = None;
    let mut unreplayed = Vec::new();
    for received in chosen {
        let Some(original) = received.message else {
            continue;
        };
        if failed.is_some() {
            unreplayed.push(received.ack_id);
            continue;
        }
        let topic = match source_topic(&console.engine, &original) {
            Ok(topic) => topic,
            Err(error) => {
                failed = Some(error);
                unreplayed.push(received.ack_id);
                continue;
            }
        };
        let message = pb::PubsubMessage {
            data: original.data.clone(),
            attributes: original
                .attributes
                .iter()
                .filter(|(k, _)| !k.starts_with(SOURCE_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ordering_key: original.ordering_key.clone(),
            ..Default::default()
        };
        let new_id = match console.engine.publish(&topic, vec![message]).await {
            Ok(ids) => ids.into_iter().next().unwrap_or_default(),
            Err(error) => {
                failed = Some(error.into());
                unreplayed.push(received.ack_id);
                continue;
            }
        };
        console
            .engine
            .acknowledge(&name, &[received.ack_id])
            .await?;
        if let Ok(seq) = original.message_id.parse() {
            console.observers.journal.send(Event::Replayed {
                message_id: seq,
                subscription: name.clone(),
                at: SystemTime::now(),
                new_id: new_id.clone(),
            });
        }
        answer.replayed.push(Replayed {
            message_id: original.message_id.clone(),
            new_id,
            topic,
            report_id: original.attributes.get("reportId").cloned(),
        });
    }
    if !unreplayed.is_empty() {
        console
            .engine
            .modify_ack_deadline(&name, &unreplayed, 0)
            .await?;
    }
    if let Some(error) = failed {
        return Err(error);
    }
    let done: BTreeSet<&str> = answer
        .replayed
        .iter()
        .map(|r| r.message_id.as_str())
        .collect();
    answer.not_found = wanted
        .iter()
        .filter(|id| !done.contains(*id))
        .map(|id| id.to_string())
        .collect();
    Ok(answer)
}

fn source_topic(engine: &Engine, message: &pb::PubsubMessage) -> Result<String, ConsoleError> {
    let attr = |key: &str| message.attributes.get(key).map(String::as_str);
    let (Some(project), Some(sub)) = (
        attr("CloudPubSubDeadLetterSourceSubscriptionProject"),
        attr("CloudPubSubDeadLetterSourceSubscription"),
    ) else {
        return Err(ConsoleError::BadRequest(format!(
            "message {} does not say where it was dead-lettered from",
            message.message_id
        )));
    };
    let source = format!("projects/{project}/subscriptions/{sub}");
    let topic = engine
        .get_subscription(&source)
        .map_err(|_| {
            ConsoleError::NotFound(format!(
                "the source subscription {source} of message {} no longer exists",
                message.message_id
            ))
        })?
        .topic;
    if topic == crate::names::DELETED_TOPIC {
        return Err(ConsoleError::NotFound(format!(
            "the topic of {source} was deleted"
        )));
    }
    Ok(topic)
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
    use crate::observe::journal::JournalEvent;
    use std::collections::BTreeMap;

    fn event(sub: &str, kind: &str, status: Option<u16>, outcome: Option<&str>) -> JournalEvent {
        JournalEvent {
            subscription: sub.into(),
            kind: kind.into(),
            at_ms: 0,
            attempt: Some(1),
            status,
            error: status.filter(|s| *s >= 300).map(|s| format!("HTTP {s}")),
            latency_ms: Some(1.0),
            outcome: outcome.map(Into::into),
            related_id: None,
        }
    }

    fn message(events: Vec<JournalEvent>, attributes: &[&str]) -> JournalMessage {
        JournalMessage {
            message_id: "1".into(),
            topic: "t".into(),
            report_id: Some("12".into()),
            published_ms: 0,
            attributes: attributes
                .iter()
                .map(|k| (k.to_string(), "x".to_string()))
                .collect::<BTreeMap<_, _>>(),
            subscriptions: vec!["email".into(), "sms".into()],
            data: None,
            events,
        }
    }

    #[test]
    fn channel_states_follow_the_events() {
        let cases: Vec<(Vec<JournalEvent>, &[&str], [&str; 2])> = vec![
            (vec![], &[], ["pending", "pending"]),
            (
                vec![event("email", "push", Some(503), None)],
                &[],
                ["retrying", "pending"],
            ),
            (
                vec![
                    event("email", "push", Some(503), None),
                    event("email", "push", Some(204), Some("sent")),
                    event("sms", "push", Some(204), Some("skipped")),
                ],
                &[],
                ["delivered", "skipped"],
            ),
            (
                vec![
                    event("email", "push", Some(200), None),
                    event("sms", "push", Some(204), Some("duplicate")),
                ],
                &[],
                ["delivered", "duplicate"],
            ),
            (
                vec![
                    event("email", "push", Some(550), None),
                    event("email", "dead-lettered", None, None),
                ],
                &[],
                ["dead-lettered", "pending"],
            ),
            (
                vec![],
                &["CloudPubSubDeadLetterSourceSubscription"],
                ["parked", "parked"],
            ),
            (
                vec![event("sms", "acked", None, None)],
                &["CloudPubSubDeadLetterSourceSubscription"],
                ["parked", "acked"],
            ),
            (
                vec![event("email", "replayed", None, None)],
                &["CloudPubSubDeadLetterSourceSubscription"],
                ["replayed", "parked"],
            ),
        ];
        for (events, attributes, expected) in cases {
            let states: Vec<_> = channels(&message(events.clone(), attributes))
                .iter()
                .map(|c| c.state)
                .collect();
            assert_eq!(states, expected, "{events:?}");
        }
    }

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
