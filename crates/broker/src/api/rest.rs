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

/// Serde mirrors of the prost messages in the proto3 JSON mapping: camelCase
/// names (the proto's snake_case names are accepted too, as Google does),
/// default values left out of the output, unknown fields refused, bytes as
/// base64, durations as `"600s"`, timestamps as RFC 3339 and enums by name
/// (numbers accepted).
///
/// JSON `null` is taken as "unset" only for message, duration and timestamp
/// fields.
mod json {
    use std::{collections::HashMap, fmt, marker::PhantomData};

    use base64::{
        Engine, alphabet,
        engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig, general_purpose},
    };
    use serde::{
        Deserialize, Deserializer, Serialize, Serializer,
        de::{self, Unexpected, Visitor},
    };

    use super::{ApiError, invalid};
    use crate::pb;

    type Labels = HashMap<String, String>;

    /// Proto3 JSON leaves out fields that hold their default value.
    fn unset<T: Default + PartialEq>(value: &T) -> bool {
        *value == T::default()
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub(super) struct Topic {
        #[serde(skip_serializing_if = "unset")]
        name: String,
        #[serde(skip_serializing_if = "unset")]
        labels: Labels,
        #[serde(alias = "message_retention_duration", skip_serializing_if = "unset")]
        message_retention_duration: Option<Duration>,
        #[serde(alias = "kms_key_name", skip_serializing_if = "unset")]
        kms_key_name: String,
        #[serde(
            skip_serializing_if = "unset",
            serialize_with = "enum_name::<pb::topic::State, _>",
            deserialize_with = "enum_value::<pb::topic::State, _>"
        )]
        state: i32,
    }

    impl From<Topic> for pb::Topic {
        fn from(topic: Topic) -> Self {
            pb::Topic {
                name: topic.name,
                labels: topic.labels,
                message_retention_duration: topic.message_retention_duration.map(|d| d.0),
                kms_key_name: topic.kms_key_name,
                state: topic.state,
                ..Default::default()
            }
        }
    }

    impl From<pb::Topic> for Topic {
        fn from(topic: pb::Topic) -> Self {
            Topic {
                name: topic.name,
                labels: topic.labels,
                message_retention_duration: topic.message_retention_duration.map(Duration),
                kms_key_name: topic.kms_key_name,
                state: topic.state,
            }
        }
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub(super) struct Subscription {
        #[serde(skip_serializing_if = "unset")]
        name: String,
        #[serde(skip_serializing_if = "unset")]
        topic: String,
        #[serde(alias = "push_config", skip_serializing_if = "unset")]
        push_config: Option<PushConfig>,
        #[serde(
            alias = "ack_deadline_seconds",
            skip_serializing_if = "unset",
            deserialize_with = "int32"
        )]
        ack_deadline_seconds: i32,
        #[serde(alias = "retain_acked_messages", skip_serializing_if = "unset")]
        retain_acked_messages: bool,
        #[serde(alias = "message_retention_duration", skip_serializing_if = "unset")]
        message_retention_duration: Option<Duration>,
        #[serde(skip_serializing_if = "unset")]
        labels: Labels,
        #[serde(alias = "enable_message_ordering", skip_serializing_if = "unset")]
        enable_message_ordering: bool,
        #[serde(alias = "expiration_policy", skip_serializing_if = "unset")]
        expiration_policy: Option<ExpirationPolicy>,
        #[serde(skip_serializing_if = "unset")]
        filter: String,
        #[serde(alias = "dead_letter_policy", skip_serializing_if = "unset")]
        dead_letter_policy: Option<DeadLetterPolicy>,
        #[serde(alias = "retry_policy", skip_serializing_if = "unset")]
        retry_policy: Option<RetryPolicy>,
        #[serde(skip_serializing_if = "unset")]
        detached: bool,
        #[serde(alias = "enable_exactly_once_delivery", skip_serializing_if = "unset")]
        enable_exactly_once_delivery: bool,
        #[serde(
            alias = "topic_message_retention_duration",
            skip_serializing_if = "unset"
        )]
        topic_message_retention_duration: Option<Duration>,
        #[serde(
            skip_serializing_if = "unset",
            serialize_with = "enum_name::<pb::subscription::State, _>",
            deserialize_with = "enum_value::<pb::subscription::State, _>"
        )]
        state: i32,
    }

    impl TryFrom<Subscription> for pb::Subscription {
        type Error = ApiError;

        fn try_from(s: Subscription) -> Result<Self, ApiError> {
            Ok(pb::Subscription {
                name: s.name,
                topic: s.topic,
                push_config: s.push_config.map(TryInto::try_into).transpose()?,
                ack_deadline_seconds: s.ack_deadline_seconds,
                retain_acked_messages: s.retain_acked_messages,
                message_retention_duration: s.message_retention_duration.map(|d| d.0),
                labels: s.labels,
                enable_message_ordering: s.enable_message_ordering,
                expiration_policy: s.expiration_policy.map(|p| pb::ExpirationPolicy {
                    ttl: p.ttl.map(|d| d.0),
                }),
                filter: s.filter,
                dead_letter_policy: s.dead_letter_policy.map(|p| pb::DeadLetterPolicy {
                    dead_letter_topic: p.dead_letter_topic,
                    max_delivery_attempts: p.max_delivery_attempts,
                }),
                retry_policy: s.retry_policy.map(|p| pb::RetryPolicy {
                    minimum_backoff: p.minimum_backoff.map(|d| d.0),
                    maximum_backoff: p.maximum_backoff.map(|d| d.0),
                }),
                detached: s.detached,
                enable_exactly_once_delivery: s.enable_exactly_once_delivery,
                topic_message_retention_duration: s.topic_message_retention_duration.map(|d| d.0),
                state: s.state,
                ..Default::default()
            })
        }
    }

    impl From<pb::Subscription> for Subscription {
        fn from(s: pb::Subscription) -> Self {
            Subscription {
                name: s.name,
                topic: s.topic,
                push_config: s.push_config.map(Into::into),
                ack_deadline_seconds: s.ack_deadline_seconds,
                retain_acked_messages: s.retain_acked_messages,
                message_retention_duration: s.message_retention_duration.map(Duration),
                labels: s.labels,
                enable_message_ordering: s.enable_message_ordering,
                expiration_policy: s.expiration_policy.map(|p| ExpirationPolicy {
                    ttl: p.ttl.map(Duration),
                }),
                filter: s.filter,
                dead_letter_policy: s.dead_letter_policy.map(|p| DeadLetterPolicy {
                    dead_letter_topic: p.dead_letter_topic,
                    max_delivery_attempts: p.max_delivery_attempts,
                }),
                retry_policy: s.retry_policy.map(|p| RetryPolicy {
                    minimum_backoff: p.minimum_backoff.map(Duration),
                    maximum_backoff: p.maximum_backoff.map(Duration),
                }),
                detached: s.detached,
                enable_exactly_once_delivery: s.enable_exactly_once_delivery,
                topic_message_retention_duration: s.topic_message_retention_duration.map(Duration),
                state: s.state,
            }
        }
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub(super) struct PushConfig {
        #[serde(alias = "push_endpoint", skip_serializing_if = "unset")]
        push_endpoint: String,
        #[serde(skip_serializing_if = "unset")]
        attributes: Labels,
        #[serde(alias = "oidc_token", skip_serializing_if = "unset")]
        oidc_token: Option<OidcToken>,
        #[serde(alias = "pubsub_wrapper", skip_serializing_if = "unset")]
        pubsub_wrapper: Option<PubsubWrapper>,
        #[serde(alias = "no_wrapper", skip_serializing_if = "unset")]
        no_wrapper: Option<NoWrapper>,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    struct OidcToken {
        #[serde(alias = "service_account_email", skip_serializing_if = "unset")]
        service_account_email: String,
        #[serde(skip_serializing_if = "unset")]
        audience: String,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PubsubWrapper {}

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    struct NoWrapper {
        #[serde(alias = "write_metadata", skip_serializing_if = "unset")]
        write_metadata: bool,
    }

    impl TryFrom<PushConfig> for pb::PushConfig {
        type Error = ApiError;

        fn try_from(config: PushConfig) -> Result<Self, ApiError> {
            use pb::push_config::{AuthenticationMethod, Wrapper};
            let wrapper = match (config.pubsub_wrapper, config.no_wrapper) {
                (Some(_), Some(_)) => {
                    return Err(invalid("pushConfig sets both pubsubWrapper and noWrapper"));
                }
                (Some(_), None) => Some(Wrapper::PubsubWrapper(pb::push_config::PubsubWrapper {})),
                (None, Some(w)) => Some(Wrapper::NoWrapper(pb::push_config::NoWrapper {
                    write_metadata: w.write_metadata,
                })),
                (None, None) => None,
            };
            Ok(pb::PushConfig {
                push_endpoint: config.push_endpoint,
                attributes: config.attributes,
                authentication_method: config.oidc_token.map(|t| {
                    AuthenticationMethod::OidcToken(pb::push_config::OidcToken {
                        service_account_email: t.service_account_email,
                        audience: t.audience,
                    })
                }),
                wrapper,
            })
        }
    }

    impl From<pb::PushConfig> for PushConfig {
        fn from(config: pb::PushConfig) -> Self {
            use pb::push_config::{AuthenticationMethod, Wrapper};
            let oidc_token = config.authentication_method.map(|method| match method {
                AuthenticationMethod::OidcToken(t) => OidcToken {
                    service_account_email: t.service_account_email,
                    audience: t.audience,
                },
            });
            let (pubsub_wrapper, no_wrapper) = match config.wrapper {
                Some(Wrapper::PubsubWrapper(_)) => (Some(PubsubWrapper {}), None),
                Some(Wrapper::NoWrapper(w)) => (
                    None,
                    Some(NoWrapper {
                        write_metadata: w.write_metadata,
                    }),
                ),
                None => (None, None),
            };
            PushConfig {
                push_endpoint: config.push_endpoint,
                attributes: config.attributes,
                oidc_token,
                pubsub_wrapper,
                no_wrapper,
            }
        }
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct ExpirationPolicy {
        #[serde(skip_serializing_if = "unset")]
        ttl: Option<Duration>,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    struct DeadLetterPolicy {
        #[serde(alias = "dead_letter_topic", skip_serializing_if = "unset")]
        dead_letter_topic: String,
        #[serde(
            alias = "max_delivery_attempts",
            skip_serializing_if = "unset",
            deserialize_with = "int32"
        )]
        max_delivery_attempts: i32,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    struct RetryPolicy {
        #[serde(alias = "minimum_backoff", skip_serializing_if = "unset")]
        minimum_backoff: Option<Duration>,
        #[serde(alias = "maximum_backoff", skip_serializing_if = "unset")]
        maximum_backoff: Option<Duration>,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub(super) struct PubsubMessage {
        #[serde(with = "base64_bytes", skip_serializing_if = "unset")]
        data: Vec<u8>,
        #[serde(skip_serializing_if = "unset")]
        attributes: Labels,
        #[serde(alias = "message_id", skip_serializing_if = "unset")]
        message_id: String,
        #[serde(alias = "publish_time", skip_serializing_if = "unset")]
        publish_time: Option<Timestamp>,
        #[serde(alias = "ordering_key", skip_serializing_if = "unset")]
        ordering_key: String,
    }

    impl From<PubsubMessage> for pb::PubsubMessage {
        fn from(m: PubsubMessage) -> Self {
            pb::PubsubMessage {
                data: m.data,
                attributes: m.attributes,
                message_id: m.message_id,
                publish_time: m.publish_time.map(|t| t.0),
                ordering_key: m.ordering_key,
            }
        }
    }

    impl From<pb::PubsubMessage> for PubsubMessage {
        fn from(m: pb::PubsubMessage) -> Self {
            PubsubMessage {
                data: m.data,
                attributes: m.attributes,
                message_id: m.message_id,
                publish_time: m.publish_time.map(Timestamp),
                ordering_key: m.ordering_key,
            }
        }
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub(super) struct Snapshot {
        #[serde(skip_serializing_if = "unset")]
        name: String,
        #[serde(skip_serializing_if = "unset")]
        topic: String,
        #[serde(alias = "expire_time", skip_serializing_if = "unset")]
        expire_time: Option<Timestamp>,
        #[serde(skip_serializing_if = "unset")]
        labels: Labels,
    }

    impl From<Snapshot> for pb::Snapshot {
        fn from(s: Snapshot) -> Self {
            pb::Snapshot {
                name: s.name,
                topic: s.topic,
                expire_time: s.expire_time.map(|t| t.0),
                labels: s.labels,
            }
        }
    }

    impl From<pb::Snapshot> for Snapshot {
        fn from(s: pb::Snapshot) -> Self {
            Snapshot {
                name: s.name,
                topic: s.topic,
                expire_time: s.expire_time.map(Timestamp),
                labels: s.labels,
            }
        }
    }

    #[derive(Default, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub(super) struct UpdateTopicRequest {
        pub topic: Option<Topic>,
        #[serde(alias = "update_mask")]
        pub update_mask: Option<FieldMask>,
    }

    #[derive(Default, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub(super) struct UpdateSubscriptionRequest {
        pub subscription: Option<Subscription>,
        #[serde(alias = "update_mask")]
        pub update_mask: Option<FieldMask>,
    }

    #[derive(Default, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub(super) struct UpdateSnapshotRequest {
        pub snapshot: Option<Snapshot>,
        #[serde(alias = "update_mask")]
        pub update_mask: Option<FieldMask>,
    }

    #[derive(Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub(super) struct PublishRequest {
        pub messages: Vec<PubsubMessage>,
    }

    #[derive(Default, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub(super) struct PullRequest {
        #[serde(alias = "return_immediately")]
        pub return_immediately: bool,
        #[serde(alias = "max_messages", deserialize_with = "int32")]
        pub max_messages: i32,
    }

    #[derive(Default, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub(super) struct AcknowledgeRequest {
        #[serde(alias = "ack_ids")]
        pub ack_ids: Vec<String>,
    }

    #[derive(Default, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub(super) struct ModifyAckDeadlineRequest {
        #[serde(alias = "ack_ids")]
        pub ack_ids: Vec<String>,
        #[serde(alias = "ack_deadline_seconds", deserialize_with = "int32")]
        pub ack_deadline_seconds: i32,
    }

    #[derive(Default, Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    pub(super) struct ModifyPushConfigRequest {
        #[serde(alias = "push_config")]
        pub push_config: Option<PushConfig>,
    }

    #[derive(Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub(super) struct SeekRequest {
        time: Option<Timestamp>,
        snapshot: Option<String>,
    }

    impl TryFrom<SeekRequest> for Option<pb::seek_request::Target> {
        type Error = ApiError;

        fn try_from(seek: SeekRequest) -> Result<Self, ApiError> {
            use pb::seek_request::Target;
            match (seek.time, seek.snapshot) {
                (Some(_), Some(_)) => Err(invalid("seek sets both time and snapshot")),
                (Some(time), None) => Ok(Some(Target::Time(time.0))),
                (None, Some(snapshot)) => Ok(Some(Target::Snapshot(snapshot))),
                (None, None) => Ok(None),
            }
        }
    }

    #[derive(Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub(super) struct CreateSnapshotRequest {
        pub subscription: String,
        pub labels: Labels,
    }

    #[derive(Serialize)]
    pub(super) struct Empty {}

    impl From<()> for Empty {
        fn from((): ()) -> Self {
            Empty {}
        }
    }

    impl From<pb::DetachSubscriptionResponse> for Empty {
        fn from(_: pb::DetachSubscriptionResponse) -> Self {
            Empty {}
        }
    }

    impl From<pb::SeekResponse> for Empty {
        fn from(_: pb::SeekResponse) -> Self {
            Empty {}
        }
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct PublishResponse {
        #[serde(skip_serializing_if = "unset")]
        message_ids: Vec<String>,
    }

    impl From<pb::PublishResponse> for PublishResponse {
        fn from(response: pb::PublishResponse) -> Self {
            PublishResponse {
                message_ids: response.message_ids,
            }
        }
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct PullResponse {
        #[serde(skip_serializing_if = "unset")]
        received_messages: Vec<ReceivedMessage>,
    }

    #[derive(Debug, PartialEq, Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ReceivedMessage {
        #[serde(skip_serializing_if = "unset")]
        ack_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<PubsubMessage>,
        #[serde(skip_serializing_if = "unset")]
        delivery_attempt: i32,
    }

    impl From<pb::PullResponse> for PullResponse {
        fn from(response: pb::PullResponse) -> Self {
            let received_messages = response
                .received_messages
                .into_iter()
                .map(|m| ReceivedMessage {
                    ack_id: m.ack_id,
                    message: m.message.map(Into::into),
                    delivery_attempt: m.delivery_attempt,
                })
                .collect();
            PullResponse { received_messages }
        }
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Topics {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        topics: Vec<Topic>,
        #[serde(skip_serializing_if = "unset")]
        next_page_token: String,
    }

    impl From<pb::ListTopicsResponse> for Topics {
        fn from(page: pb::ListTopicsResponse) -> Self {
            let topics = page.topics.into_iter().map(Into::into).collect();
            Topics {
                topics,
                next_page_token: page.next_page_token,
            }
        }
    }

    /// A page of subscriptions: whole ones, or names only for a topic's.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Subscriptions<T> {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        subscriptions: Vec<T>,
        #[serde(skip_serializing_if = "unset")]
        next_page_token: String,
    }

    impl From<pb::ListSubscriptionsResponse> for Subscriptions<Subscription> {
        fn from(page: pb::ListSubscriptionsResponse) -> Self {
            let subscriptions = page.subscriptions.into_iter().map(Into::into).collect();
            Subscriptions {
                subscriptions,
                next_page_token: page.next_page_token,
            }
        }
    }

    impl From<pb::ListTopicSubscriptionsResponse> for Subscriptions<String> {
        fn from(page: pb::ListTopicSubscriptionsResponse) -> Self {
            Subscriptions {
                subscriptions: page.subscriptions,
                next_page_token: page.next_page_token,
            }
        }
    }

    /// A page of snapshots: whole ones, or names only for a topic's.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Snapshots<T> {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        snapshots: Vec<T>,
        #[serde(skip_serializing_if = "unset")]
        next_page_token: String,
    }

    impl From<pb::ListSnapshotsResponse> for Snapshots<Snapshot> {
        fn from(page: pb::ListSnapshotsResponse) -> Self {
            let snapshots = page.snapshots.into_iter().map(Into::into).collect();
            Snapshots {
                snapshots,
                next_page_token: page.next_page_token,
            }
        }
    }

    impl From<pb::ListTopicSnapshotsResponse> for Snapshots<String> {
        fn from(page: pb::ListTopicSnapshotsResponse) -> Self {
            Snapshots {
                snapshots: page.snapshots,
                next_page_token: page.next_page_token,
            }
        }
    }

    /// `google.protobuf.FieldMask`: in JSON one string of comma-separated
    /// camelCase paths. The `{"paths": ...}` object that older Google Rust
    /// clients send is accepted too.
    #[derive(Debug, PartialEq)]
    pub(super) struct FieldMask(Vec<String>);

    impl<'de> Deserialize<'de> for FieldMask {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            #[derive(Deserialize)]
            #[serde(
                untagged,
                expecting = "a field mask: a string of comma-separated field paths"
            )]
            enum Repr {
                Joined(String),
                Object { paths: String },
                List { paths: Vec<String> },
            }
            let paths = match Repr::deserialize(deserializer)? {
                Repr::Joined(paths) | Repr::Object { paths } => {
                    paths.split(',').map(str::to_owned).collect()
                }
                Repr::List { paths } => paths,
            };
            Ok(FieldMask(
                paths
                    .iter()
                    .map(|path| path.trim())
                    .filter(|path| !path.is_empty())
                    .map(snake_case)
                    .collect(),
            ))
        }
    }

    impl From<FieldMask> for prost_types::FieldMask {
        fn from(mask: FieldMask) -> Self {
            prost_types::FieldMask { paths: mask.0 }
        }
    }

    /// `ackDeadlineSeconds` → `ack_deadline_seconds`; snake_case stays as is.
    fn snake_case(path: &str) -> String {
        let mut snake = String::with_capacity(path.len() + 4);
        for c in path.chars() {
            if c.is_ascii_uppercase() {
                snake.push('_');
                snake.push(c.to_ascii_lowercase());
            } else {
                snake.push(c);
            }
        }
        snake
    }

    /// `google.protobuf.Duration` as `"600s"` or `"10.5s"`, within the range
    /// the proto allows (about ±10 000 years).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub(super) struct Duration(pub prost_types::Duration);

    const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

    impl Serialize for Duration {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for Duration {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            // prost would silently drop digits past the nanoseconds.
            let nanos_fit = text
                .split_once('.')
                .is_none_or(|(_, fraction)| fraction.len() <= 10);
            text.parse::<prost_types::Duration>()
                .ok()
                .filter(|d| nanos_fit && d.seconds.abs() <= MAX_DURATION_SECONDS)
                .map(Duration)
                .ok_or_else(|| {
                    de::Error::invalid_value(
                        Unexpected::Str(&text),
                        &"a duration in seconds ending in 's', such as \"600s\" or \"10.5s\"",
                    )
                })
        }
    }

    /// `google.protobuf.Timestamp` as RFC 3339 (`"2024-05-01T12:00:00.5Z"`),
    /// from year 1 to 9999 as the proto allows.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub(super) struct Timestamp(pub prost_types::Timestamp);

    const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

    impl Serialize for Timestamp {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for Timestamp {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            text.parse::<prost_types::Timestamp>()
                .ok()
                .filter(|t| TIMESTAMP_SECONDS.contains(&t.seconds))
                .map(Timestamp)
                .ok_or_else(|| {
                    de::Error::invalid_value(
                        Unexpected::Str(&text),
                        &"an RFC 3339 timestamp, such as \"2024-05-01T12:00:00Z\"",
                    )
                })
        }
    }

    /// Proto3 JSON takes an int32 as a number or as a decimal string.
    fn int32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
        deserializer.deserialize_any(Int32)
    }

    struct Int32;

    impl Visitor<'_> for Int32 {
        type Value = i32;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a 32-bit integer")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
            i32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
            i32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i32, E> {
            let in_range = (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&v);
            if v.fract() == 0.0 && in_range {
                Ok(v as i32)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<i32, E> {
            v.parse()
                .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
        }
    }

    /// The names of a prost enumeration, which prost offers per type only.
    trait ProtoEnum {
        fn name(value: i32) -> Option<&'static str>;
        fn value(name: &str) -> Option<i32>;
    }

    impl ProtoEnum for pb::topic::State {
        fn name(value: i32) -> Option<&'static str> {
            Self::try_from(value).ok().map(|state| state.as_str_name())
        }

        fn value(name: &str) -> Option<i32> {
            Self::from_str_name(name).map(|state| state as i32)
        }
    }

    impl ProtoEnum for pb::subscription::State {
        fn name(value: i32) -> Option<&'static str> {
            Self::try_from(value).ok().map(|state| state.as_str_name())
        }

        fn value(name: &str) -> Option<i32> {
            Self::from_str_name(name).map(|state| state as i32)
        }
    }

    /// A value this build does not know is still printed, as its number.
    fn enum_name<E: ProtoEnum, S: Serializer>(
        value: &i32,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match E::name(*value) {
            Some(name) => serializer.serialize_str(name),
            None => serializer.serialize_i32(*value),
        }
    }

    fn enum_value<'de, E: ProtoEnum, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<i32, D::Error> {
        struct EnumValue<E>(PhantomData<E>);

        impl<E: ProtoEnum> Visitor<'_> for EnumValue<E> {
            type Value = i32;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an enum value's name or number")
            }

            fn visit_i64<Er: de::Error>(self, v: i64) -> Result<i32, Er> {
                Int32.visit_i64(v)
            }

            fn visit_u64<Er: de::Error>(self, v: u64) -> Result<i32, Er> {
                Int32.visit_u64(v)
            }

            fn visit_str<Er: de::Error>(self, v: &str) -> Result<i32, Er> {
                E::value(v).ok_or_else(|| Er::invalid_value(Unexpected::Str(v), &self))
            }
        }

        deserializer.deserialize_any(EnumValue::<E>(PhantomData))
    }

    /// Proto3 JSON bytes: standard base64 out; standard or URL-safe, padded or
    /// not, in.
    mod base64_bytes {
        use super::*;

        const LENIENT: GeneralPurposeConfig =
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
        const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

        pub(super) fn serialize<S: Serializer>(
            data: &[u8],
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            serializer.serialize_str(&general_purpose::STANDARD.encode(data))
        }

        pub(super) fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<u8>, D::Error> {
            struct Base64;

            impl Visitor<'_> for Base64 {
                type Value = Vec<u8>;

                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("base64-encoded bytes")
                }

                fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                    let engine = if v.contains(['-', '_']) {
                        &URL_SAFE
                    } else {
                        &STANDARD
                    };
                    engine
                        .decode(v)
                        .map_err(|e| E::custom(format_args!("invalid base64 data: {e}")))
                }
            }

            deserializer.deserialize_str(Base64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        any::Any,
        collections::HashMap,
        sync::{Arc, Mutex},
    };

    use axum::body::Body;
    use serde_json::{Value, json};
    use tonic::Response as GrpcResponse;
    use tower::ServiceExt;

    use super::*;

    type Reply<T> = Result<GrpcResponse<T>, Status>;

    /// Records the last prost request and answers with canned messages (or
    /// with `fail`, once): the JSON mapping is under test, not the broker.
    #[derive(Clone, Default)]
    struct Fake {
        last: Arc<Mutex<Option<Box<dyn Any + Send>>>>,
        fail: Arc<Mutex<Option<Status>>>,
    }

    impl Fake {
        fn answer<Q: Send + 'static, A>(&self, request: Request<Q>, answer: A) -> Reply<A> {
            *self.last.lock().unwrap() = Some(Box::new(request.into_inner()));
            match self.fail.lock().unwrap().take() {
                Some(status) => Err(status),
                None => Ok(GrpcResponse::new(answer)),
            }
        }

        fn last<Q: 'static>(&self) -> Q {
            let last = self
                .last
                .lock()
                .unwrap()
                .take()
                .expect("no request reached the service");
            *last
                .downcast::<Q>()
                .expect("the service got another request type")
        }
    }

    fn topic(name: &str) -> pb::Topic {
        pb::Topic {
            name: name.into(),
            state: pb::topic::State::Active as i32,
            ..Default::default()
        }
    }

    fn at(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    fn seconds(seconds: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos }
    }

    #[tonic::async_trait]
    impl Publisher for Fake {
        async fn create_topic(&self, r: Request<pb::Topic>) -> Reply<pb::Topic> {
            let echo = r.get_ref().clone();
            self.answer(r, echo)
        }
        async fn update_topic(&self, r: Request<pb::UpdateTopicRequest>) -> Reply<pb::Topic> {
            let echo = r.get_ref().topic.clone().unwrap_or_default();
            self.answer(r, echo)
        }
        async fn publish(&self, r: Request<pb::PublishRequest>) -> Reply<pb::PublishResponse> {
            let message_ids = (1..=r.get_ref().messages.len())
                .map(|i| i.to_string())
                .collect();
            self.answer(r, pb::PublishResponse { message_ids })
        }
        async fn get_topic(&self, r: Request<pb::GetTopicRequest>) -> Reply<pb::Topic> {
            let answer = topic(&r.get_ref().topic);
            self.answer(r, answer)
        }
        async fn list_topics(
            &self,
            r: Request<pb::ListTopicsRequest>,
        ) -> Reply<pb::ListTopicsResponse> {
            let page = pb::ListTopicsResponse {
                topics: vec![topic("projects/p/topics/a"), topic("projects/p/topics/b")],
                next_page_token: "next".into(),
            };
            self.answer(r, page)
        }
        async fn list_topic_subscriptions(
            &self,
            r: Request<pb::ListTopicSubscriptionsRequest>,
        ) -> Reply<pb::ListTopicSubscriptionsResponse> {
            let page = pb::ListTopicSubscriptionsResponse {
                subscriptions: vec!["projects/p/subscriptions/s".into()],
                next_page_token: String::new(),
            };
            self.answer(r, page)
        }
        async fn list_topic_snapshots(
            &self,
            r: Request<pb::ListTopicSnapshotsRequest>,
        ) -> Reply<pb::ListTopicSnapshotsResponse> {
            self.answer(r, pb::ListTopicSnapshotsResponse::default())
        }
        async fn delete_topic(&self, r: Request<pb::DeleteTopicRequest>) -> Reply<()> {
            self.answer(r, ())
        }
        async fn detach_subscription(
            &self,
            r: Request<pb::DetachSubscriptionRequest>,
        ) -> Reply<pb::DetachSubscriptionResponse> {
            self.answer(r, pb::DetachSubscriptionResponse {})
        }
    }

    #[tonic::async_trait]
    impl Subscriber for Fake {
        type StreamingPullStream = tokio_stream::Empty<Result<pb::StreamingPullResponse, Status>>;

        async fn create_subscription(
            &self,
            r: Request<pb::Subscription>,
        ) -> Reply<pb::Subscription> {
            let echo = r.get_ref().clone();
            self.answer(r, echo)
        }
        async fn get_subscription(
            &self,
            r: Request<pb::GetSubscriptionRequest>,
        ) -> Reply<pb::Subscription> {
            let answer = pb::Subscription {
                name: r.get_ref().subscription.clone(),
                topic: "projects/p/topics/t".into(),
                push_config: Some(pb::PushConfig::default()),
                ack_deadline_seconds: 10,
                ..Default::default()
            };
            self.answer(r, answer)
        }
        async fn update_subscription(
            &self,
            r: Request<pb::UpdateSubscriptionRequest>,
        ) -> Reply<pb::Subscription> {
            let echo = r.get_ref().subscription.clone().unwrap_or_default();
            self.answer(r, echo)
        }
        async fn list_subscriptions(
            &self,
            r: Request<pb::ListSubscriptionsRequest>,
        ) -> Reply<pb::ListSubscriptionsResponse> {
            self.answer(r, pb::ListSubscriptionsResponse::default())
        }
        async fn delete_subscription(
            &self,
            r: Request<pb::DeleteSubscriptionRequest>,
        ) -> Reply<()> {
            self.answer(r, ())
        }
        async fn modify_ack_deadline(&self, r: Request<pb::ModifyAckDeadlineRequest>) -> Reply<()> {
            self.answer(r, ())
        }
        async fn acknowledge(&self, r: Request<pb::AcknowledgeRequest>) -> Reply<()> {
            self.answer(r, ())
        }
        async fn pull(&self, r: Request<pb::PullRequest>) -> Reply<pb::PullResponse> {
            let received =
                |ack_id: &str, message: pb::PubsubMessage, delivery_attempt| pb::ReceivedMessage {
                    ack_id: ack_id.into(),
                    message: Some(message),
                    delivery_attempt,
                };
            let first = pb::PubsubMessage {
                data: b"{\"id\": 12}".to_vec(),
                attributes: HashMap::from([("reportId".into(), "12".into())]),
                message_id: "1".into(),
                publish_time: Some(at(1_714_564_800, 500_000_000)),
                ordering_key: String::new(),
            };
            let second = pb::PubsubMessage {
                message_id: "2".into(),
                publish_time: Some(at(1_714_564_801, 0)),
                ordering_key: "k".into(),
                ..Default::default()
            };
            let answer = pb::PullResponse {
                received_messages: vec![received("a1", first, 0), received("a2", second, 3)],
            };
            self.answer(r, answer)
        }
        async fn streaming_pull(
            &self,
            _: Request<tonic::Streaming<pb::StreamingPullRequest>>,
        ) -> Reply<Self::StreamingPullStream> {
            Err(Status::unimplemented("not over REST"))
        }
        async fn modify_push_config(&self, r: Request<pb::ModifyPushConfigRequest>) -> Reply<()> {
            self.answer(r, ())
        }
        async fn get_snapshot(&self, r: Request<pb::GetSnapshotRequest>) -> Reply<pb::Snapshot> {
            self.answer(r, pb::Snapshot::default())
        }
        async fn list_snapshots(
            &self,
            r: Request<pb::ListSnapshotsRequest>,
        ) -> Reply<pb::ListSnapshotsResponse> {
            self.answer(r, pb::ListSnapshotsResponse::default())
        }
        async fn create_snapshot(
            &self,
            r: Request<pb::CreateSnapshotRequest>,
        ) -> Reply<pb::Snapshot> {
            let answer = pb::Snapshot {
                name: r.get_ref().name.clone(),
                topic: "projects/p/topics/t".into(),
                expire_time: Some(at(1_715_169_600, 0)),
                labels: r.get_ref().labels.clone(),
            };
            self.answer(r, answer)
        }
        async fn update_snapshot(
            &self,
            r: Request<pb::UpdateSnapshotRequest>,
        ) -> Reply<pb::Snapshot> {
            self.answer(r, pb::Snapshot::default())
        }
        async fn delete_snapshot(&self, r: Request<pb::DeleteSnapshotRequest>) -> Reply<()> {
            self.answer(r, ())
        }
        async fn seek(&self, r: Request<pb::SeekRequest>) -> Reply<pb::SeekResponse> {
            self.answer(r, pb::SeekResponse {})
        }
    }

    fn app() -> (Fake, Router) {
        let fake = Fake::default();
        (fake.clone(), router(fake))
    }

    /// Sends `body` as `application/json`; answers the status and the body as
    /// JSON, or as a JSON string when it is not JSON.
    async fn send(
        app: &Router,
        method: &str,
        uri: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        read(app.clone().oneshot(request).await.unwrap()).await
    }

    async fn read(response: Response) -> (StatusCode, Value) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, body)
    }

    fn error_message(body: &Value) -> &str {
        body["error"]["message"].as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn root_answers_ok_like_the_emulator() {
        let (_, app) = app();
        let response = app
            .oneshot(axum::http::Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        assert_eq!(read(response).await.1, json!("Ok"));
    }

    #[tokio::test]
    async fn create_topic_takes_camel_or_snake_case_and_the_name_from_the_path() {
        let (fake, app) = app();
        for body in [
            json!({"labels": {"team": "lab"}, "messageRetentionDuration": "600s", "kmsKeyName": "k"}),
            json!({"labels": {"team": "lab"}, "message_retention_duration": "600s", "kms_key_name": "k"}),
            json!({"name": "projects/p/topics/t", "labels": {"team": "lab"},
                   "messageRetentionDuration": "600.000s", "kmsKeyName": "k"}),
        ] {
            let uri = "/v1/projects/p/topics/t?$alt=json;enum-encoding=int";
            let (status, answer) = send(&app, "PUT", uri, body.to_string()).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            let want = pb::Topic {
                name: "projects/p/topics/t".into(),
                labels: HashMap::from([("team".into(), "lab".into())]),
                message_retention_duration: Some(seconds(600, 0)),
                kms_key_name: "k".into(),
                ..Default::default()
            };
            assert_eq!(fake.last::<pb::Topic>(), want);
            let want = json!({"name": "projects/p/topics/t", "labels": {"team": "lab"},
                              "messageRetentionDuration": "600s", "kmsKeyName": "k"});
            assert_eq!(answer, want);
        }
    }

    #[tokio::test]
    async fn output_leaves_out_defaults_and_names_enums() {
        let (fake, app) = app();
        let (status, answer) = send(&app, "GET", "/v1/projects/p/topics/t", Body::empty()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            answer,
            json!({"name": "projects/p/topics/t", "state": "ACTIVE"})
        );
        assert_eq!(
            fake.last::<pb::GetTopicRequest>().topic,
            "projects/p/topics/t"
        );

        let (_, answer) = send(&app, "GET", "/v1/projects/p/subscriptions/s", Body::empty()).await;
        let want = json!({"name": "projects/p/subscriptions/s", "topic": "projects/p/topics/t",
                          "pushConfig": {}, "ackDeadlineSeconds": 10});
        assert_eq!(answer, want);
    }

    #[tokio::test]
    async fn enums_are_accepted_by_name_or_number() {
        let (fake, app) = app();
        for state in [json!("ACTIVE"), json!(1)] {
            let body = json!({"state": state}).to_string();
            let (status, answer) = send(&app, "PUT", "/v1/projects/p/topics/t", body).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(
                fake.last::<pb::Topic>().state,
                pb::topic::State::Active as i32
            );
            assert_eq!(answer["state"], "ACTIVE");
        }
        let body = json!({"state": "SLEEPY"}).to_string();
        let (status, answer) = send(&app, "PUT", "/v1/projects/p/topics/t", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_message(&answer).contains("SLEEPY"), "{answer}");
    }

    #[tokio::test]
    async fn create_subscription_maps_every_supported_field_both_ways() {
        let (fake, app) = app();
        let camel = json!({
            "topic": "projects/p/topics/t",
            "pushConfig": {
                "pushEndpoint": "http://127.0.0.1:8081/",
                "attributes": {"x-goog-version": "v1"},
                "oidcToken": {"serviceAccountEmail": "sa@p.iam.gserviceaccount.com", "audience": "aud"},
                "noWrapper": {"writeMetadata": true}
            },
            "ackDeadlineSeconds": 20,
            "retainAckedMessages": true,
            "messageRetentionDuration": "86400s",
            "labels": {"env": "test"},
            "enableMessageOrdering": true,
            "expirationPolicy": {"ttl": "2678400s"},
            "filter": "attributes:reportId",
            "deadLetterPolicy": {"deadLetterTopic": "projects/p/topics/dl", "maxDeliveryAttempts": 5},
            "retryPolicy": {"minimumBackoff": "10s", "maximumBackoff": "600s"},
            "detached": true,
            "enableExactlyOnceDelivery": true,
            "topicMessageRetentionDuration": "604800s",
            "state": "ACTIVE"
        });
        let snake = json!({
            "topic": "projects/p/topics/t",
            "push_config": {
                "push_endpoint": "http://127.0.0.1:8081/",
                "attributes": {"x-goog-version": "v1"},
                "oidc_token": {"service_account_email": "sa@p.iam.gserviceaccount.com", "audience": "aud"},
                "no_wrapper": {"write_metadata": true}
            },
            "ack_deadline_seconds": "20",
            "retain_acked_messages": true,
            "message_retention_duration": "86400s",
            "labels": {"env": "test"},
            "enable_message_ordering": true,
            "expiration_policy": {"ttl": "2678400s"},
            "filter": "attributes:reportId",
            "dead_letter_policy": {"dead_letter_topic": "projects/p/topics/dl", "max_delivery_attempts": "5"},
            "retry_policy": {"minimum_backoff": "10s", "maximum_backoff": "600s"},
            "detached": true,
            "enable_exactly_once_delivery": true,
            "topic_message_retention_duration": "604800s",
            "state": 1
        });
        let want = pb::Subscription {
            name: "projects/p/subscriptions/s".into(),
            topic: "projects/p/topics/t".into(),
            push_config: Some(pb::PushConfig {
                push_endpoint: "http://127.0.0.1:8081/".into(),
                attributes: HashMap::from([("x-goog-version".into(), "v1".into())]),
                authentication_method: Some(pb::push_config::AuthenticationMethod::OidcToken(
                    pb::push_config::OidcToken {
                        service_account_email: "sa@p.iam.gserviceaccount.com".into(),
                        audience: "aud".into(),
                    },
                )),
                wrapper: Some(pb::push_config::Wrapper::NoWrapper(
                    pb::push_config::NoWrapper {
                        write_metadata: true,
                    },
                )),
            }),
            ack_deadline_seconds: 20,
            retain_acked_messages: true,
            message_retention_duration: Some(seconds(86_400, 0)),
            labels: HashMap::from([("env".into(), "test".into())]),
            enable_message_ordering: true,
            expiration_policy: Some(pb::ExpirationPolicy {
                ttl: Some(seconds(2_678_400, 0)),
            }),
            filter: "attributes:reportId".into(),
            dead_letter_policy: Some(pb::DeadLetterPolicy {
                dead_letter_topic: "projects/p/topics/dl".into(),
                max_delivery_attempts: 5,
            }),
            retry_policy: Some(pb::RetryPolicy {
                minimum_backoff: Some(seconds(10, 0)),
                maximum_backoff: Some(seconds(600, 0)),
            }),
            detached: true,
            enable_exactly_once_delivery: true,
            topic_message_retention_duration: Some(seconds(604_800, 0)),
            state: pb::subscription::State::Active as i32,
            ..Default::default()
        };
        let mut echoed = camel.clone();
        echoed["name"] = json!("projects/p/subscriptions/s");
        for body in [camel, snake] {
            let (status, answer) = send(
                &app,
                "PUT",
                "/v1/projects/p/subscriptions/s",
                body.to_string(),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            assert_eq!(fake.last::<pb::Subscription>(), want);
            assert_eq!(answer, echoed);
        }
    }

    #[tokio::test]
    async fn push_wrappers_and_empty_messages_round_trip() {
        let (fake, app) = app();
        let body = json!({"topic": "projects/p/topics/t", "pushConfig": {"pushEndpoint": "http://h/", "pubsubWrapper": {}},
                          "expirationPolicy": {}});
        let (status, answer) = send(
            &app,
            "PUT",
            "/v1/projects/p/subscriptions/s",
            body.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let got = fake.last::<pb::Subscription>();
        assert_eq!(
            got.push_config.unwrap().wrapper,
            Some(pb::push_config::Wrapper::PubsubWrapper(
                pb::push_config::PubsubWrapper {}
            ))
        );
        assert_eq!(
            got.expiration_policy,
            Some(pb::ExpirationPolicy { ttl: None })
        );
        assert_eq!(
            answer["pushConfig"],
            json!({"pushEndpoint": "http://h/", "pubsubWrapper": {}})
        );
        assert_eq!(answer["expirationPolicy"], json!({}));

        let body = json!({"pushConfig": {"pubsubWrapper": {}, "noWrapper": {}}}).to_string();
        let (status, answer) = send(&app, "PUT", "/v1/projects/p/subscriptions/s", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            error_message(&answer).contains("both pubsubWrapper and noWrapper"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn durations_parse_and_print_in_proto3_form() {
        let (fake, app) = app();
        for (input, parsed, printed) in [
            ("600s", seconds(600, 0), "600s"),
            ("10.5s", seconds(10, 500_000_000), "10.500s"),
            ("0.000001s", seconds(0, 1_000), "0.000001s"),
            ("1.000000001s", seconds(1, 1), "1.000000001s"),
            ("-1.5s", seconds(-1, -500_000_000), "-1.500s"),
            (
                "315576000000s",
                seconds(315_576_000_000, 0),
                "315576000000s",
            ),
        ] {
            let body = json!({"messageRetentionDuration": input}).to_string();
            let (status, answer) = send(&app, "PUT", "/v1/projects/p/topics/t", body).await;
            assert_eq!(status, StatusCode::OK, "{input}: {answer}");
            assert_eq!(
                fake.last::<pb::Topic>().message_retention_duration,
                Some(parsed),
                "{input}"
            );
            assert_eq!(answer["messageRetentionDuration"], printed, "{input}");
        }
        for bad in [
            json!("10m"),
            json!("600"),
            json!("s"),
            json!("1.5.5s"),
            json!("315576000001s"),
            json!("1.0000000001s"),
            json!(600),
            json!("99999999999999999999s"),
        ] {
            let body = json!({"messageRetentionDuration": bad}).to_string();
            let (status, answer) = send(&app, "PUT", "/v1/projects/p/topics/t", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT", "{bad}");
        }
    }

    #[tokio::test]
    async fn int32_fields_take_numbers_or_strings_within_range() {
        let (fake, app) = app();
        for (value, want) in [
            (json!(20), Some(20)),
            (json!("20"), Some(20)),
            (json!(20.0), Some(20)),
            (json!(-1), Some(-1)),
            (json!(2_147_483_648_u64), None),
            (json!("x"), None),
            (json!(1.5), None),
            (json!(true), None),
        ] {
            let body = json!({"ackIds": ["a"], "ackDeadlineSeconds": value}).to_string();
            let (status, answer) = send(
                &app,
                "POST",
                "/v1/projects/p/subscriptions/s:modifyAckDeadline",
                body,
            )
            .await;
            match want {
                Some(seconds) => {
                    assert_eq!(status, StatusCode::OK, "{value}: {answer}");
                    assert_eq!(answer, json!({}));
                    let got = fake.last::<pb::ModifyAckDeadlineRequest>();
                    assert_eq!(
                        (got.subscription.as_str(), got.ack_deadline_seconds),
                        ("projects/p/subscriptions/s", seconds)
                    );
                    assert_eq!(got.ack_ids, ["a"]);
                }
                None => assert_eq!(status, StatusCode::BAD_REQUEST, "{value}"),
            }
        }
    }

    #[tokio::test]
    async fn publish_decodes_base64_with_the_method_plain_or_percent_encoded() {
        let (fake, app) = app();
        for uri in [
            "/v1/projects/p/topics/t:publish",
            "/v1/projects/p/topics/t%3Apublish",
            "/v1/projects/p/topics/t%3apublish?$alt=json;enum-encoding=int",
        ] {
            let body = json!({"messages": [
                {"data": "eyJpZCI6IDEyfQ==", "attributes": {"reportId": "12"}, "orderingKey": "k"},
                {"data": "eyJpZCI6IDEyfQ", "ordering_key": "k"},
                {"data": "-_8="},
                {"attributes": {"only": "attributes"}}
            ]});
            let (status, answer) = send(&app, "POST", uri, body.to_string()).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {answer}");
            assert_eq!(answer, json!({"messageIds": ["1", "2", "3", "4"]}));
            let got = fake.last::<pb::PublishRequest>();
            assert_eq!(got.topic, "projects/p/topics/t");
            let data: Vec<&[u8]> = got.messages.iter().map(|m| m.data.as_slice()).collect();
            assert_eq!(
                data,
                [
                    b"{\"id\": 12}".as_slice(),
                    b"{\"id\": 12}",
                    &[0xfb, 0xff],
                    b""
                ]
            );
            assert_eq!(got.messages[0].attributes["reportId"], "12");
            assert_eq!(
                (
                    got.messages[0].ordering_key.as_str(),
                    got.messages[1].ordering_key.as_str()
                ),
                ("k", "k")
            );
        }
        let body = json!({"messages": [{"data": "not base64!"}]}).to_string();
        let (status, answer) = send(&app, "POST", "/v1/projects/p/topics/t:publish", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            error_message(&answer).contains("invalid base64"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn pull_prints_messages_as_proto3_json() {
        let (fake, app) = app();
        let body = json!({"maxMessages": 10, "returnImmediately": true}).to_string();
        let (status, answer) =
            send(&app, "POST", "/v1/projects/p/subscriptions/s:pull", body).await;
        assert_eq!(status, StatusCode::OK);
        let got = fake.last::<pb::PullRequest>();
        assert_eq!(
            (got.subscription.as_str(), got.max_messages),
            ("projects/p/subscriptions/s", 10)
        );
        #[expect(deprecated, reason = "the field is still on the wire")]
        let return_immediately = got.return_immediately;
        assert!(return_immediately);
        let want = json!({"receivedMessages": [
            {"ackId": "a1", "message": {"data": "eyJpZCI6IDEyfQ==", "attributes": {"reportId": "12"},
                                        "messageId": "1", "publishTime": "2024-05-01T12:00:00.500Z"}},
            {"ackId": "a2", "message": {"messageId": "2", "publishTime": "2024-05-01T12:00:01Z", "orderingKey": "k"},
             "deliveryAttempt": 3}
        ]});
        assert_eq!(answer, want);
    }

    #[tokio::test]
    async fn subscription_methods_reach_the_service_and_answer_empty_objects() {
        let (fake, app) = app();
        let uri = "/v1/projects/p/subscriptions/s:acknowledge";
        let (status, answer) = send(
            &app,
            "POST",
            uri,
            json!({"ack_ids": ["a", "b"]}).to_string(),
        )
        .await;
        assert_eq!((status, answer), (StatusCode::OK, json!({})));
        assert_eq!(fake.last::<pb::AcknowledgeRequest>().ack_ids, ["a", "b"]);

        let uri = "/v1/projects/p/subscriptions/s:modifyPushConfig";
        let body = json!({"pushConfig": {"pushEndpoint": "http://h/"}}).to_string();
        let (status, answer) = send(&app, "POST", uri, body).await;
        assert_eq!((status, answer), (StatusCode::OK, json!({})));
        let got = fake.last::<pb::ModifyPushConfigRequest>();
        assert_eq!(got.push_config.unwrap().push_endpoint, "http://h/");

        let uri = "/v1/projects/p/subscriptions/s:seek";
        let body = json!({"time": "2024-05-01T12:00:00.5Z"}).to_string();
        let (status, answer) = send(&app, "POST", uri, body).await;
        assert_eq!((status, answer), (StatusCode::OK, json!({})));
        let target = fake.last::<pb::SeekRequest>().target;
        assert_eq!(
            target,
            Some(pb::seek_request::Target::Time(at(
                1_714_564_800,
                500_000_000
            )))
        );
        let body = json!({"time": "2024-05-01T12:00:00Z", "snapshot": "projects/p/snapshots/x"})
            .to_string();
        assert_eq!(
            send(&app, "POST", uri, body).await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            send(&app, "POST", uri, r#"{"time": "yesterday"}"#).await.0,
            StatusCode::BAD_REQUEST
        );

        let (status, answer) = send(
            &app,
            "POST",
            "/v1/projects/p/subscriptions/s:detach",
            Body::empty(),
        )
        .await;
        assert_eq!((status, answer), (StatusCode::OK, json!({})));
        assert_eq!(
            fake.last::<pb::DetachSubscriptionRequest>().subscription,
            "projects/p/subscriptions/s"
        );

        let (status, answer) = send(
            &app,
            "DELETE",
            "/v1/projects/p/subscriptions/s",
            Body::empty(),
        )
        .await;
        assert_eq!((status, answer), (StatusCode::OK, json!({})));
        let (status, answer) = send(&app, "DELETE", "/v1/projects/p/topics/t", Body::empty()).await;
        assert_eq!((status, answer), (StatusCode::OK, json!({})));
        assert_eq!(
            fake.last::<pb::DeleteTopicRequest>().topic,
            "projects/p/topics/t"
        );
    }

    #[tokio::test]
    async fn updates_carry_the_mask_as_snake_case_paths() {
        let (fake, app) = app();
        for mask in [
            json!("ackDeadlineSeconds,pushConfig.pushEndpoint"),
            json!("ack_deadline_seconds,push_config.push_endpoint"),
            json!({"paths": "ackDeadlineSeconds,pushConfig.pushEndpoint"}),
            json!({"paths": ["ackDeadlineSeconds", "pushConfig.pushEndpoint"]}),
        ] {
            let body = json!({"subscription": {"ackDeadlineSeconds": 30}, "updateMask": mask});
            let (status, answer) = send(
                &app,
                "PATCH",
                "/v1/projects/p/subscriptions/s",
                body.to_string(),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{mask}: {answer}");
            let got = fake.last::<pb::UpdateSubscriptionRequest>();
            assert_eq!(
                got.update_mask.unwrap().paths,
                ["ack_deadline_seconds", "push_config.push_endpoint"]
            );
            let subscription = got.subscription.unwrap();
            assert_eq!(
                (
                    subscription.name.as_str(),
                    subscription.ack_deadline_seconds
                ),
                ("projects/p/subscriptions/s", 30)
            );
        }
        let body = json!({"topic": {"labels": {"a": "b"}}, "update_mask": "labels"}).to_string();
        let (status, answer) = send(&app, "PATCH", "/v1/projects/p/topics/t", body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            answer,
            json!({"name": "projects/p/topics/t", "labels": {"a": "b"}})
        );
        let got = fake.last::<pb::UpdateTopicRequest>();
        assert_eq!(got.update_mask.unwrap().paths, ["labels"]);
        assert_eq!(got.topic.unwrap().name, "projects/p/topics/t");
        let body = json!({"updateMask": 7}).to_string();
        assert_eq!(
            send(&app, "PATCH", "/v1/projects/p/topics/t", body).await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn lists_pass_the_page_and_ignore_alt() {
        let (fake, app) = app();
        let uri =
            "/v1/projects/p/topics?pageSize=2&pageToken=abc&%24alt=json%3Benum-encoding%3Dint";
        let (status, answer) = send(&app, "GET", uri, Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let got = fake.last::<pb::ListTopicsRequest>();
        assert_eq!(
            (got.project.as_str(), got.page_size, got.page_token.as_str()),
            ("projects/p", 2, "abc")
        );
        let want = json!({"topics": [{"name": "projects/p/topics/a", "state": "ACTIVE"},
                                     {"name": "projects/p/topics/b", "state": "ACTIVE"}],
                          "nextPageToken": "next"});
        assert_eq!(answer, want);

        // What Google's Rust admin client sends when the caller sets no page.
        let uri = "/v1/projects/p/subscriptions?pageSize=0&pageToken=&$alt=json;enum-encoding=int";
        let (status, answer) = send(&app, "GET", uri, Body::empty()).await;
        assert_eq!((status, answer), (StatusCode::OK, json!({})));
        assert_eq!(fake.last::<pb::ListSubscriptionsRequest>().page_size, 0);

        let (_, answer) = send(
            &app,
            "GET",
            "/v1/projects/p/topics/t/subscriptions?page_size=5",
            Body::empty(),
        )
        .await;
        assert_eq!(
            answer,
            json!({"subscriptions": ["projects/p/subscriptions/s"]})
        );
        assert_eq!(
            fake.last::<pb::ListTopicSubscriptionsRequest>().page_size,
            5
        );
        let (_, answer) = send(
            &app,
            "GET",
            "/v1/projects/p/topics/t/snapshots",
            Body::empty(),
        )
        .await;
        assert_eq!(answer, json!({}));

        let (status, answer) = send(
            &app,
            "GET",
            "/v1/projects/p/topics?pageSize=many",
            Body::empty(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_message(&answer).contains("pageSize"), "{answer}");
    }

    #[tokio::test]
    async fn snapshots_are_routed_to_the_snapshot_methods() {
        let (fake, app) = app();
        let body =
            json!({"subscription": "projects/p/subscriptions/s", "labels": {"a": "b"}}).to_string();
        let (status, answer) = send(&app, "PUT", "/v1/projects/p/snapshots/x", body).await;
        assert_eq!(status, StatusCode::OK);
        let want = json!({"name": "projects/p/snapshots/x", "topic": "projects/p/topics/t",
                          "expireTime": "2024-05-08T12:00:00Z", "labels": {"a": "b"}});
        assert_eq!(answer, want);
        let got = fake.last::<pb::CreateSnapshotRequest>();
        assert_eq!(
            (got.name.as_str(), got.subscription.as_str()),
            ("projects/p/snapshots/x", "projects/p/subscriptions/s")
        );

        *fake.fail.lock().unwrap() = Some(Status::unimplemented("Snapshots are not supported"));
        let (status, answer) = send(&app, "GET", "/v1/projects/p/snapshots/x", Body::empty()).await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(answer["error"]["status"], "UNIMPLEMENTED");
        assert_eq!(
            fake.last::<pb::GetSnapshotRequest>().snapshot,
            "projects/p/snapshots/x"
        );

        for (method, uri, body) in [
            ("GET", "/v1/projects/p/snapshots?pageSize=1", ""),
            (
                "PATCH",
                "/v1/projects/p/snapshots/x",
                r#"{"snapshot": {"labels": {}}, "updateMask": "labels"}"#,
            ),
            ("DELETE", "/v1/projects/p/snapshots/x", ""),
        ] {
            assert_eq!(
                send(&app, method, uri, body).await.0,
                StatusCode::OK,
                "{method} {uri}"
            );
        }
        assert_eq!(
            fake.last::<pb::DeleteSnapshotRequest>().snapshot,
            "projects/p/snapshots/x"
        );
    }

    #[tokio::test]
    async fn bad_requests_say_what_is_wrong() {
        let (_, app) = app();
        let subscription = "/v1/projects/p/subscriptions/s";
        for (body, needle) in [
            (r#"{"topic": "projects/p/topics/t", "foo": 1}"#, "foo"),
            (
                r#"{"pushConfig": {"pushEndpoint": "http://h/", "bar": 1}}"#,
                "bar",
            ),
            (r#"{"bigqueryConfig": {}}"#, "bigqueryConfig"),
            (r#"{"topic": "#, "EOF"),
            (r#"{"topic": 12}"#, "invalid type"),
            (r#"{"labels": {"a": 1}}"#, "invalid type"),
            ("[]", "must be a JSON object"),
            ("null", "must be a JSON object"),
        ] {
            let (status, answer) = send(&app, "PUT", subscription, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(answer["error"]["code"], 400, "{body}");
            assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT", "{body}");
            let message = error_message(&answer);
            assert!(
                message.starts_with("Invalid JSON payload received."),
                "{message}"
            );
            assert!(message.contains(needle), "{body}: {message}");
        }
    }

    #[tokio::test]
    async fn bodies_must_say_they_are_json_and_empty_ones_need_not() {
        let (fake, app) = app();
        let request = |content_type: Option<&str>, body: &'static str| {
            let mut request = axum::http::Request::put("/v1/projects/p/topics/t");
            if let Some(content_type) = content_type {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            request.body(Body::from(body)).unwrap()
        };
        for (content_type, body, ok) in [
            (None, "", true),
            (Some("application/json; charset=utf-8"), "{}", true),
            (Some("Application/JSON"), "{}", true),
            (Some("text/plain"), "", true),
            (Some("application/x-www-form-urlencoded"), "labels=a", false),
            (Some("text/plain"), "{}", false),
            // What a page's `fetch(url, {method, mode: "no-cors", body})`
            // sends with a Blob body: no Content-Type at all.
            (None, r#"{"labels": {}}"#, false),
        ] {
            let (status, answer) = read(
                app.clone()
                    .oneshot(request(content_type, body))
                    .await
                    .unwrap(),
            )
            .await;
            if ok {
                assert_eq!(status, StatusCode::OK, "{content_type:?}: {answer}");
                assert_eq!(fake.last::<pb::Topic>().name, "projects/p/topics/t");
            } else {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{content_type:?}");
                assert!(
                    error_message(&answer).contains("Content-Type must be application/json"),
                    "{answer}"
                );
            }
        }
    }

    #[tokio::test]
    async fn ten_megabyte_publishes_pass_and_larger_bodies_are_refused() {
        use base64::Engine;
        let (fake, app) = app();
        let data = vec![7u8; 10 * 1024 * 1024];
        let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
        let body = format!(r#"{{"messages": [{{"data": "{encoded}"}}]}}"#);
        let (status, answer) = send(&app, "POST", "/v1/projects/p/topics/t:publish", body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(
            fake.last::<pb::PublishRequest>().messages[0].data.len(),
            data.len()
        );

        let body = format!(
            r#"{{"messages": [{{"data": "{}"}}]}}"#,
            "A".repeat(BODY_LIMIT)
        );
        let (status, answer) = send(&app, "POST", "/v1/projects/p/topics/t:publish", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            error_message(&answer).contains("exceeds the limit"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn unknown_custom_methods_are_not_found() {
        let (_, app) = app();
        for uri in [
            "/v1/projects/p/topics/t:pull",
            "/v1/projects/p/topics/t",
            "/v1/projects/p/subscriptions/s:publish",
            "/v1/projects/p/subscriptions/s:",
        ] {
            let (status, answer) = send(&app, "POST", uri, "{}").await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(answer["error"]["status"], "NOT_FOUND", "{uri}");
        }
    }

    #[test]
    fn statuses_map_to_google_http_codes() {
        for (code, http, name) in [
            (Code::InvalidArgument, 400, "INVALID_ARGUMENT"),
            (Code::FailedPrecondition, 400, "FAILED_PRECONDITION"),
            (Code::OutOfRange, 400, "OUT_OF_RANGE"),
            (Code::Unauthenticated, 401, "UNAUTHENTICATED"),
            (Code::PermissionDenied, 403, "PERMISSION_DENIED"),
            (Code::NotFound, 404, "NOT_FOUND"),
            (Code::AlreadyExists, 409, "ALREADY_EXISTS"),
            (Code::Aborted, 409, "ABORTED"),
            (Code::ResourceExhausted, 429, "RESOURCE_EXHAUSTED"),
            (Code::Cancelled, 499, "CANCELLED"),
            (Code::Unimplemented, 501, "UNIMPLEMENTED"),
            (Code::Unavailable, 503, "UNAVAILABLE"),
            (Code::DeadlineExceeded, 504, "DEADLINE_EXCEEDED"),
            (Code::Internal, 500, "INTERNAL"),
            (Code::DataLoss, 500, "DATA_LOSS"),
            (Code::Unknown, 500, "UNKNOWN"),
            (Code::Ok, 500, "UNKNOWN"),
        ] {
            let response = status_to_response(Status::new(code, "what happened"));
            assert_eq!(response.status().as_u16(), http, "{code:?}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/json",
                "{code:?}"
            );
            let body = futures::executor::block_on(read(response)).1;
            let want = json!({"error": {"code": http, "message": "what happened", "status": name}});
            assert_eq!(body, want, "{code:?}");
        }
    }

    #[tokio::test]
    async fn service_errors_reach_the_client_as_google_errors() {
        let (fake, app) = app();
        *fake.fail.lock().unwrap() = Some(Status::already_exists(
            "Resource already exists in the project",
        ));
        let (status, answer) = send(&app, "PUT", "/v1/projects/p/topics/t", "{}").await;
        assert_eq!(status, StatusCode::CONFLICT);
        let want = json!({"error": {"code": 409, "message": "Resource already exists in the project",
                                    "status": "ALREADY_EXISTS"}});
        assert_eq!(answer, want);
    }

    /// Garbage of every shape on every route: nothing panics and nothing is
    /// blamed on the server.
    #[tokio::test]
    async fn no_input_makes_a_handler_panic() {
        let (_, app) = app();
        let bodies = [
            "",
            "null",
            "[]",
            "{",
            "\"x\"",
            "1e999",
            "{\"name\": {}}",
            "{\"messages\": [null]}",
            "{\"data\": \"====\"}",
            "{\"messages\": [{\"data\": \"=\"}]}",
            "{\"ackDeadlineSeconds\": 1e300}",
            "{\"time\": \"99999-01-01T00:00:00Z\"}",
            "{\"time\": \"0000-00-00T00:00:00Z\"}",
            "{\"messageRetentionDuration\": \"-9223372036854775808s\"}",
            "\u{0}",
            "{\"\u{ffff}\": 1}",
        ];
        let uris = [
            "/v1/projects/p/topics/t",
            "/v1/projects/p/topics/t:publish",
            "/v1/projects/p/topics",
            "/v1/projects/p/subscriptions/s",
            "/v1/projects/p/subscriptions/s:pull",
            "/v1/projects/p/subscriptions/s:seek",
            "/v1/projects/p/subscriptions/s:modifyPushConfig",
            "/v1/projects/p/subscriptions/s:modifyAckDeadline",
            "/v1/projects/p/snapshots/x",
            "/v1/projects/%FF/topics/%FE:publish",
            "/v1/projects/p/topics/:",
            "/v1/projects/p/topics/t::publish",
        ];
        for method in ["GET", "PUT", "PATCH", "POST", "DELETE"] {
            for uri in uris {
                for body in bodies {
                    let (status, answer) = send(&app, method, uri, body).await;
                    assert!(
                        !status.is_server_error(),
                        "{method} {uri} {body:?}: {status} {answer}"
                    );
                }
            }
        }
    }
}
