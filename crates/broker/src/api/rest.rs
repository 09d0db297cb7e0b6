//! The REST/JSON mapping of the Pub/Sub v1 API (`/v1/projects/...`), served
//! the way Google's endpoint and the official emulator serve it; Google's Rust
//! admin clients (`TopicAdmin`, `SubscriptionAdmin`) speak only this.
//!
//! Handlers hold no broker logic: each turns proto3 JSON into the prost
//! request, calls the same `Publisher`/`Subscriber` implementation the gRPC
//! server uses, and turns the prost answer back into JSON, so both protocols
//! behave alike. A `tonic::Status` becomes Google's REST error body in
//! [`status_to_response`].

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, State},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Serialize, de::DeserializeOwned};
use tonic::{Code, Request, Status};

use super::json;
use crate::generated::{publisher_server::Publisher, subscriber_server::Subscriber};
use crate::pb;

/// Room for a 10 MB publish request once its data is base64 (4/3 larger).
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The REST routes over `service`, plus `GET /` answering `Ok` as the
/// emulator's health check does.
///
/// It sets no fallback, so it can be merged with the gRPC routes on one port.
pub(crate) fn router<S>(service: S) -> Router
where
    S: Publisher + Subscriber + Clone,
{
    Router::new()
        .route("/", get(|| async { "Ok" }))
        .route("/v1/projects/{project}/topics", get(list_topics::<S>))
        .route(
            "/v1/projects/{project}/topics/{topic}",
            get(get_topic::<S>)
                .put(create_topic::<S>)
                .patch(update_topic::<S>)
                .delete(delete_topic::<S>)
                .post(topic_method::<S>),
        )
        .route(
            "/v1/projects/{project}/topics/{topic}/subscriptions",
            get(list_topic_subscriptions::<S>),
        )
        .route(
            "/v1/projects/{project}/topics/{topic}/snapshots",
            get(list_topic_snapshots::<S>),
        )
        .route(
            "/v1/projects/{project}/subscriptions",
            get(list_subscriptions::<S>),
        )
        .route(
            "/v1/projects/{project}/subscriptions/{subscription}",
            get(get_subscription::<S>)
                .put(create_subscription::<S>)
                .patch(update_subscription::<S>)
                .delete(delete_subscription::<S>)
                .post(subscription_method::<S>),
        )
        .route("/v1/projects/{project}/snapshots", get(list_snapshots::<S>))
        .route(
            "/v1/projects/{project}/snapshots/{snapshot}",
            get(get_snapshot::<S>)
                .put(create_snapshot::<S>)
                .patch(update_snapshot::<S>)
                .delete(delete_snapshot::<S>),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(service)
}

/// Google's REST error body for `status`, with the HTTP code of the standard
/// gRPC-to-HTTP table (`google/rpc/code.proto`).
pub(crate) fn status_to_response(status: Status) -> Response {
    let (http, name) = match status.code() {
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        Code::FailedPrecondition => (StatusCode::BAD_REQUEST, "FAILED_PRECONDITION"),
        Code::OutOfRange => (StatusCode::BAD_REQUEST, "OUT_OF_RANGE"),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
        Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
        Code::Aborted => (StatusCode::CONFLICT, "ABORTED"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
        // 499 is nginx's "client closed request", which Google uses too.
        Code::Cancelled => (
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "CANCELLED",
        ),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "UNIMPLEMENTED"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
        Code::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        Code::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "DATA_LOSS"),
        // An `Ok` status arriving as an error is our bug, not a success.
        Code::Unknown | Code::Ok => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
    };
    let body = serde_json::json!({
        "error": {"code": http.as_u16(), "message": status.message(), "status": name}
    });
    (http, Json(body)).into_response()
}

/// What the handlers need: both services, cloned into each request.
trait Backend: Publisher + Subscriber + Clone {}
impl<T: Publisher + Subscriber + Clone> Backend for T {}

/// A failed request on its way out through [`status_to_response`]; boxed
/// because a `Status` is large.
#[derive(Debug)]
struct ApiError(Box<Status>);

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        ApiError(Box::new(status))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        status_to_response(*self.0)
    }
}

impl From<json::Invalid> for ApiError {
    fn from(invalid: json::Invalid) -> Self {
        Status::invalid_argument(invalid.0).into()
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    Status::invalid_argument(message).into()
}

type Answer = Result<Response, ApiError>;

/// The JSON form `J` of a service's answer.
fn answer<J: Serialize + From<P>, P>(result: Result<tonic::Response<P>, Status>) -> Answer {
    Ok(Json(J::from(result?.into_inner())).into_response())
}

/// Percent-decoded path segments, with Google's error body when they are not
/// UTF-8.
struct Segments<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segments<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(segments) = Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| invalid(rejection.body_text()))?;
        Ok(Segments(segments))
    }
}

/// `pageSize` and `pageToken` of a list call; other query parameters, such as
/// the `$alt=json;enum-encoding=int` Google's Rust clients send, are ignored.
#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PageQuery {
    #[serde(alias = "page_size")]
    page_size: i32,
    #[serde(alias = "page_token")]
    page_token: String,
}

impl<S: Send + Sync> FromRequestParts<S> for PageQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(page) = Query::<PageQuery>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| invalid(rejection.body_text()))?;
        Ok(page)
    }
}

/// A request body that is JSON or empty; parsed by [`parse`] once the handler
/// knows which message it holds.
struct JsonBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    invalid(format!(
                        "Request payload size exceeds the limit: {BODY_LIMIT} bytes."
                    ))
                } else {
                    invalid(rejection.body_text())
                }
            })?;
        // A body must say it is JSON: a page's `fetch()` can send a body
        // without a Content-Type and without a preflight, so a missing one
        // is refused rather than assumed.
        if !body.is_empty() {
            match content_type {
                None => {
                    return Err(invalid(
                        "Content-Type must be application/json; the request has none",
                    ));
                }
                Some(content_type) if !is_json(content_type.to_str().unwrap_or_default()) => {
                    return Err(invalid(format!(
                        "Content-Type must be application/json, not {content_type:?}"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(JsonBody(body))
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// An empty body stands for an empty message, as Google's endpoint takes it.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return parse(b"{}");
    }
    // serde would fill a struct from an array, field by field.
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err(invalid(
            "Invalid JSON payload received. The body must be a JSON object.",
        ));
    }
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            invalid(format!("Invalid JSON payload received. {inner}"))
        } else {
            invalid(format!(
                "Invalid JSON payload received. Invalid value at '{path}': {inner}"
            ))
        }
    })
}

/// Splits `name:method`, the custom-method segment Axum cannot route, at its
/// last ':' (Axum has already decoded a `%3A`).
fn custom_method(segment: &str) -> Result<(&str, &str), ApiError> {
    segment
        .rsplit_once(':')
        .ok_or_else(|| Status::not_found(format!("No POST method on \"{segment}\"")).into())
}

fn unknown_method(resource: &str, method: &str) -> ApiError {
    Status::not_found(format!("No method \"{method}\" on {resource}")).into()
}

fn name(project: &str, collection: &str, id: &str) -> String {
    format!("projects/{project}/{collection}/{id}")
}

async fn create_topic<S: Backend>(
    State(service): State<S>,
    Segments((project, topic)): Segments<(String, String)>,
    JsonBody(body): JsonBody,
) -> Answer {
    let body: json::Topic = parse(&body)?;
    let topic = pb::Topic {
        name: name(&project, "topics", &topic),
        ..body.into()
    };
    answer::<json::Topic, _>(service.create_topic(Request::new(topic)).await)
}

async fn update_topic<S: Backend>(
    State(service): State<S>,
    Segments((project, topic)): Segments<(String, String)>,
    JsonBody(body): JsonBody,
) -> Answer {
    let body: json::UpdateTopicRequest = parse(&body)?;
    let topic = pb::Topic {
        name: name(&project, "topics", &topic),
        ..body.topic.unwrap_or_default().into()
    };
    let request = pb::UpdateTopicRequest {
        topic: Some(topic),
        update_mask: body.update_mask.map(Into::into),
    };
    answer::<json::Topic, _>(service.update_topic(Request::new(request)).await)
}

async fn get_topic<S: Backend>(
    State(service): State<S>,
    Segments((project, topic)): Segments<(String, String)>,
) -> Answer {
    let request = pb::GetTopicRequest {
        topic: name(&project, "topics", &topic),
    };
    answer::<json::Topic, _>(service.get_topic(Request::new(request)).await)
}

async fn delete_topic<S: Backend>(
    State(service): State<S>,
    Segments((project, topic)): Segments<(String, String)>,
) -> Answer {
    let request = pb::DeleteTopicRequest {
        topic: name(&project, "topics", &topic),
    };
    answer::<json::Empty, _>(service.delete_topic(Request::new(request)).await)
}

async fn topic_method<S: Backend>(
    State(service): State<S>,
    Segments((project, segment)): Segments<(String, String)>,
    JsonBody(body): JsonBody,
) -> Answer {
    let (topic, method) = custom_method(&segment)?;
    let topic = name(&project, "topics", topic);
    match method {
        "publish" => {
            let body: json::PublishRequest = parse(&body)?;
            let messages = body.messages.into_iter().map(Into::into).collect();
            let request = pb::PublishRequest { topic, messages };
            answer::<json::PublishResponse, _>(service.publish(Request::new(request)).await)
        }
        _ => Err(unknown_method(&topic, method)),
    }
}

async fn list_topics<S: Backend>(
    State(service): State<S>,
    Segments(project): Segments<String>,
    page: PageQuery,
) -> Answer {
    let request = pb::ListTopicsRequest {
        project: format!("projects/{project}"),
        page_size: page.page_size,
        page_token: page.page_token,
    };
    answer::<json::Topics, _>(service.list_topics(Request::new(request)).await)
}

async fn list_topic_subscriptions<S: Backend>(
    State(service): State<S>,
    Segments((project, topic)): Segments<(String, String)>,
    page: PageQuery,
) -> Answer {
    let request = pb::ListTopicSubscriptionsRequest {
        topic: name(&project, "topics", &topic),
        page_size: page.page_size,
        page_token: page.page_token,
    };
    let result = service
        .list_topic_subscriptions(Request::new(request))
        .await;
    answer::<json::Subscriptions<String>, _>(result)
}

async fn list_topic_snapshots<S: Backend>(
    State(service): State<S>,
    Segments((project, topic)): Segments<(String, String)>,
    page: PageQuery,
) -> Answer {
    let request = pb::ListTopicSnapshotsRequest {
        topic: name(&project, "topics", &topic),
        page_size: page.page_size,
        page_token: page.page_token,
    };
    let result = service.list_topic_snapshots(Request::new(request)).await;
    answer::<json::Snapshots<String>, _>(result)
}

async fn create_subscription<S: Backend>(
    State(service): State<S>,
    Segments((project, subscription)): Segments<(String, String)>,
    JsonBody(body): JsonBody,
) -> Answer {
    let body: json::Subscription = parse(&body)?;
    let subscription = pb::Subscription {
        name: name(&project, "subscriptions", &subscription),
        ..body.try_into()?
    };
    let result = service
        .create_subscription(Request::new(subscription))
        .await;
    answer::<json::Subscription, _>(result)
}

async fn update_subscription<S: Backend>(
    State(service): State<S>,
    Segments((project, subscription)): Segments<(String, String)>,
    JsonBody(body): JsonBody,
) -> Answer {
    let body: json::UpdateSubscriptionRequest = parse(&body)?;
    let subscription = pb::Subscription {
        name: name(&project, "subscriptions", &subscription),
        ..body.subscription.unwrap_or_default().try_into()?
    };
    let request = pb::UpdateSubscriptionRequest {
        subscription: Some(subscription),
        update_mask: body.update_mask.map(Into::into),
    };
    let result = service.update_subscription(Request::new(request)).await;
    answer::<json::Subscription, _>(result)
}

async fn get_subscription<S: Backend>(
    State(service): State<S>,
    Segments((project, subscription)): Segments<(String, String)>,
) -> Answer {
    let subscription = name(&project, "subscriptions", &subscription);
    let request = pb::GetSubscriptionRequest { subscription };
    answer::<json::Subscription, _>(service.get_subscription(Request::new(request)).await)
}

async fn delete_subscription<S: Backend>(
    State(service): State<S>,
    Segments((project, subscription)): Segments<(String, String)>,
) -> Answer {
    let subscription = name(&project, "subscriptions", &subscription);
    let request = pb::DeleteSubscriptionRequest { subscription };
    answer::<json::Empty, _>(service.delete_subscription(Request::new(request)).await)
}

async fn subscription_method<S: Backend>(
    State(service): State<S>,
    Segments((project, segment)): Segments<(String, String)>,
    JsonBody(body): JsonBody,
) -> Answer {
    let (subscription, method) = custom_method(&segment)?;
    let subscription = name(&project, "subscriptions", subscription);
    match method {
        "pull" => {
            let body: json::PullRequest = parse(&body)?;
            #[expect(
                deprecated,
                reason = "clients still send it; the broker decides what it means"
            )]
            let request = pb::PullRequest {
                subscription,
                return_immediately: body.return_immediately,
                max_messages: body.max_messages,
            };
            answer::<json::PullResponse, _>(service.pull(Request::new(request)).await)
        }
        "acknowledge" => {
            let body: json::AcknowledgeRequest = parse(&body)?;
            let request = pb::AcknowledgeRequest {
                subscription,
                ack_ids: body.ack_ids,
            };
            answer::<json::Empty, _>(service.acknowledge(Request::new(request)).await)
        }
        "modifyAckDeadline" => {
            let body: json::ModifyAckDeadlineRequest = parse(&body)?;
            let request = pb::ModifyAckDeadlineRequest {
                subscription,
                ack_ids: body.ack_ids,
                ack_deadline_seconds: body.ack_deadline_seconds,
            };
            answer::<json::Empty, _>(service.modify_ack_deadline(Request::new(request)).await)
        }
        "modifyPushConfig" => {
            let body: json::ModifyPushConfigRequest = parse(&body)?;
            let push_config = body.push_config.map(TryInto::try_into).transpose()?;
            let request = pb::ModifyPushConfigRequest {
                subscription,
                push_config,
            };
            answer::<json::Empty, _>(service.modify_push_config(Request::new(request)).await)
        }
        "seek" => {
            let body: json::SeekRequest = parse(&body)?;
            let request = pb::SeekRequest {
                subscription,
                target: body.try_into()?,
            };
            answer::<json::Empty, _>(service.seek(Request::new(request)).await)
        }
        "detach" => {
            let request = pb::DetachSubscriptionRequest { subscription };
            answer::<json::Empty, _>(service.detach_subscription(Request::new(request)).await)
        }
        _ => Err(unknown_method(&subscription, method)),
    }
}

async fn list_subscriptions<S: Backend>(
    State(service): State<S>,
    Segments(project): Segments<String>,
    page: PageQuery,
) -> Answer {
    let request = pb::ListSubscriptionsRequest {
        project: format!("projects/{project}"),
        page_size: page.page_size,
        page_token: page.page_token,
    };
    let result = service.list_subscriptions(Request::new(request)).await;
    answer::<json::Subscriptions<json::Subscription>, _>(result)
}

async fn create_snapshot<S: Backend>(
    State(service): State<S>,
    Segments((project, snapshot)): Segments<(String, String)>,
    JsonBody(body): JsonBody,
) -> Answer {
    let body: json::CreateSnapshotRequest = parse(&body)?;
    let request = pb::CreateSnapshotRequest {
        name: name(&project, "snapshots", &snapshot),
        subscription: body.subscription,
        labels: body.labels,
        ..Default::default()
    };
    answer::<json::Snapshot, _>(service.create_snapshot(Request::new(request)).await)
}

async fn update_snapshot<S: Backend>(
    State(service): State<S>,
    Segments((project, snapshot)): Segments<(String, String)>,
    JsonBody(body): JsonBody,
) -> Answer {
    let body: json::UpdateSnapshotRequest = parse(&body)?;
    let snapshot = pb::Snapshot {
        name: name(&project, "snapshots", &snapshot),
        ..body.snapshot.unwrap_or_default().into()
    };
    let request = pb::UpdateSnapshotRequest {
        snapshot: Some(snapshot),
        update_mask: body.update_mask.map(Into::into),
    };
    answer::<json::Snapshot, _>(service.update_snapshot(Request::new(request)).await)
}

async fn get_snapshot<S: Backend>(
    State(service): State<S>,
    Segments((project, snapshot)): Segments<(String, String)>,
) -> Answer {
    let request = pb::GetSnapshotRequest {
        snapshot: name(&project, "snapshots", &snapshot),
    };
    answer::<json::Snapshot, _>(service.get_snapshot(Request::new(request)).await)
}

async fn delete_snapshot<S: Backend>(
    State(service): State<S>,
    Segments((project, snapshot)): Segments<(String, String)>,
) -> Answer {
    let request = pb::DeleteSnapshotRequest {
        snapshot: name(&project, "snapshots", &snapshot),
    };
    answer::<json::Empty, _>(service.delete_snapshot(Request::new(request)).await)
}

async fn list_snapshots<S: Backend>(
    State(service): State<S>,
    Segments(project): Segments<String>,
    page: PageQuery,
) -> Answer {
    let request = pb::ListSnapshotsRequest {
        project: format!("projects/{project}"),
        page_size: page.page_size,
        page_token: page.page_token,
    };
    let result = service.list_snapshots(Request::new(request)).await;
    answer::<json::Snapshots<json::Snapshot>, _>(result)
}

#[cfg(test)]
mod tests;
