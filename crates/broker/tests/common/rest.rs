//! [`Api`] over the REST/JSON mapping, with reqwest.
//!
//! The scenarios speak `pb` types; this module maps them to and from the
//! proto3 JSON form the REST API uses (camelCase names, base64 bytes,
//! durations as `"10s"`, timestamps in RFC 3339). Requests carry only the
//! fields that are set, as a client would send them; responses are read
//! leniently where proto3 JSON allows two forms (numbers as strings, enums
//! as numbers).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use labrelay_broker::pb;
use labrelay_broker::pb::push_config::{AuthenticationMethod, NoWrapper, OidcToken, Wrapper};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Api, ApiError, ApiResult, Code};

/// A REST client of one broker.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
}

/// A raw REST answer: HTTP status and body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl RawResponse {
    /// The body as JSON (the test fails if it is not JSON).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status, self.body
            )
        })
    }

    /// The body as a Google error; the test fails unless it is one whose
    /// `code` matches the HTTP status.
    #[track_caller]
    pub fn error(&self) -> ApiError {
        let error = rest_error(self.status, &self.body);
        assert_ne!(error.code, Code::Other, "{}", error.message);
        error
    }
}

impl Rest {
    pub fn new(base: String) -> Rest {
        Rest {
            http: reqwest::Client::new(),
            base,
        }
    }

    /// `{base}/v1/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.base)
    }

    /// Sends `body` as is, for requests no well-behaved client would send.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> RawResponse {
        let response = self
            .http
            .request(method, self.url(path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .expect("sending a REST request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.expect("reading a REST response");
        RawResponse {
            status,
            content_type,
            body,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> ApiResult<Value> {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("sending a REST request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("reading a REST response");
        if !(200..300).contains(&status) {
            return Err(rest_error(status, &text));
        }
        if text.trim().is_empty() {
            return Ok(json!({}));
        }
        Ok(serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {path}: HTTP {status} with a body that is not JSON ({e}): {text:?}")
        }))
    }
}

/// The HTTP status Google's REST mapping uses for each canonical code.
fn http_status_of(status: &str) -> Option<(u16, Code)> {
    Some(match status {
        "INVALID_ARGUMENT" => (400, Code::InvalidArgument),
        "FAILED_PRECONDITION" => (400, Code::FailedPrecondition),
        "OUT_OF_RANGE" => (400, Code::OutOfRange),
        "NOT_FOUND" => (404, Code::NotFound),
        "ALREADY_EXISTS" => (409, Code::AlreadyExists),
        "UNIMPLEMENTED" => (501, Code::Unimplemented),
        "UNAVAILABLE" => (503, Code::Unavailable),
        "INTERNAL" => (500, Code::Internal),
        "ABORTED" => (409, Code::Other),
        "PERMISSION_DENIED" => (403, Code::PermissionDenied),
        "UNAUTHENTICATED" => (401, Code::Other),
        "RESOURCE_EXHAUSTED" => (429, Code::Other),
        "DEADLINE_EXCEEDED" => (504, Code::Other),
        "UNKNOWN" => (500, Code::Other),
        _ => return None,
    })
}

/// Reads `{"error":{"code","message","status"}}`. Any deviation from that
/// shape, or a `code`/`status` that disagrees with the HTTP status, comes
/// back as [`Code::Other`] with a message that says what is wrong, so that
/// the scenario's assertion on the code fails with it.
fn rest_error(http: u16, body: &str) -> ApiError {
    let other = |why: String| ApiError {
        code: Code::Other,
        message: format!("HTTP {http}: {why}; body: {body:?}"),
    };
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return other("the error body is not JSON".into());
    };
    let error = &value["error"];
    let (Some(code), Some(message), Some(status)) = (
        error["code"].as_u64(),
        error["message"].as_str(),
        error["status"].as_str(),
    ) else {
        return other("the body is not {\"error\":{\"code\",\"message\",\"status\"}}".into());
    };
    let Some((expected_http, neutral)) = http_status_of(status) else {
        return other(format!("unknown status {status:?}"));
    };
    if code != u64::from(http) {
        return other(format!("error.code {code} differs from the HTTP status"));
    }
    if expected_http != http {
        return other(format!("{status} should be HTTP {expected_http}"));
    }
    if neutral == Code::Other {
        return other(format!("status {status}"));
    }
    ApiError {
        code: neutral,
        message: message.to_owned(),
    }
}

impl Api for Rest {
    fn protocol(&self) -> &'static str {
        "rest"
    }

    async fn create_topic(&self, topic: pb::Topic) -> ApiResult<pb::Topic> {
        let body = topic_json(&topic);
        Ok(topic_from(
            &self.call(Method::PUT, &topic.name, Some(body)).await?,
        ))
    }

    async fn get_topic(&self, name: &str) -> ApiResult<pb::Topic> {
        Ok(topic_from(&self.call(Method::GET, name, None).await?))
    }

    async fn list_topics(
        &self,
        project: &str,
        page_size: i32,
        page_token: &str,
    ) -> ApiResult<(Vec<pb::Topic>, String)> {
        let path = format!("{project}/topics?{}", page_query(page_size, page_token));
        let value = self.call(Method::GET, &path, None).await?;
        Ok((
            list(&value, "topics", topic_from),
            string(&value, "nextPageToken"),
        ))
    }

    async fn list_topic_subscriptions(&self, topic: &str) -> ApiResult<Vec<String>> {
        let value = self
            .call(Method::GET, &format!("{topic}/subscriptions"), None)
            .await?;
        Ok(list(&value, "subscriptions", |v| {
            v.as_str().expect("a subscription name").to_owned()
        }))
    }

    async fn delete_topic(&self, name: &str) -> ApiResult<()> {
        self.call(Method::DELETE, name, None).await.map(drop)
    }

    async fn publish(
        &self,
        topic: &str,
        messages: Vec<pb::PubsubMessage>,
    ) -> ApiResult<Vec<String>> {
        let body = json!({ "messages": messages.iter().map(message_json).collect::<Vec<_>>() });
        let value = self
            .call(Method::POST, &format!("{topic}:publish"), Some(body))
            .await?;
        Ok(list(&value, "messageIds", |v| {
            v.as_str().expect("message ids are strings").to_owned()
        }))
    }

    async fn create_subscription(&self, sub: pb::Subscription) -> ApiResult<pb::Subscription> {
        let body = subscription_json(&sub);
        let value = self.call(Method::PUT, &sub.name, Some(body)).await?;
        Ok(subscription_from(&value))
    }

    async fn get_subscription(&self, name: &str) -> ApiResult<pb::Subscription> {
        Ok(subscription_from(
            &self.call(Method::GET, name, None).await?,
        ))
    }

    async fn list_subscriptions(
        &self,
        project: &str,
        page_size: i32,
        page_token: &str,
    ) -> ApiResult<(Vec<pb::Subscription>, String)> {
        let path = format!(
            "{project}/subscriptions?{}",
            page_query(page_size, page_token)
        );
        let value = self.call(Method::GET, &path, None).await?;
        Ok((
            list(&value, "subscriptions", subscription_from),
            string(&value, "nextPageToken"),
        ))
    }

    async fn delete_subscription(&self, name: &str) -> ApiResult<()> {
        self.call(Method::DELETE, name, None).await.map(drop)
    }

    async fn modify_push_config(&self, sub: &str, push: pb::PushConfig) -> ApiResult<()> {
        let body = json!({ "pushConfig": push_config_json(&push) });
        self.call(Method::POST, &format!("{sub}:modifyPushConfig"), Some(body))
            .await
            .map(drop)
    }

    async fn pull(
        &self,
        sub: &str,
        max_messages: i32,
        return_immediately: bool,
    ) -> ApiResult<Vec<pb::ReceivedMessage>> {
        let mut body = json!({ "maxMessages": max_messages });
        if return_immediately {
            body["returnImmediately"] = json!(true);
        }
        let value = self
            .call(Method::POST, &format!("{sub}:pull"), Some(body))
            .await?;
        Ok(list(&value, "receivedMessages", received_from))
    }

    async fn acknowledge(&self, sub: &str, ack_ids: &[String]) -> ApiResult<()> {
        let body = json!({ "ackIds": ack_ids });
        self.call(Method::POST, &format!("{sub}:acknowledge"), Some(body))
            .await
            .map(drop)
    }

    async fn modify_ack_deadline(
        &self,
        sub: &str,
        ack_ids: &[String],
        seconds: i32,
    ) -> ApiResult<()> {
        let body = json!({ "ackIds": ack_ids, "ackDeadlineSeconds": seconds });
        self.call(
            Method::POST,
            &format!("{sub}:modifyAckDeadline"),
            Some(body),
        )
        .await
        .map(drop)
    }
}

fn page_query(page_size: i32, page_token: &str) -> String {
    let mut query = format!("pageSize={page_size}");
    if !page_token.is_empty() {
        query.push_str("&pageToken=");
        query.push_str(page_token);
    }
    query
}

// ----- pb → JSON (requests) -----

fn insert(object: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    object.insert(key.to_owned(), value.into());
}

fn labels_json(labels: &HashMap<String, String>) -> Value {
    json!(labels)
}

fn topic_json(topic: &pb::Topic) -> Value {
    let mut o = Map::new();
    if !topic.labels.is_empty() {
        insert(&mut o, "labels", labels_json(&topic.labels));
    }
    if let Some(d) = &topic.message_retention_duration {
        insert(&mut o, "messageRetentionDuration", d.to_string());
    }
    Value::Object(o)
}

pub fn message_json(m: &pb::PubsubMessage) -> Value {
    let mut o = Map::new();
    if !m.data.is_empty() {
        insert(&mut o, "data", BASE64.encode(&m.data));
    }
    if !m.attributes.is_empty() {
        insert(&mut o, "attributes", labels_json(&m.attributes));
    }
    if !m.ordering_key.is_empty() {
        insert(&mut o, "orderingKey", m.ordering_key.clone());
    }
    Value::Object(o)
}

pub fn push_config_json(p: &pb::PushConfig) -> Value {
    let mut o = Map::new();
    if !p.push_endpoint.is_empty() {
        insert(&mut o, "pushEndpoint", p.push_endpoint.clone());
    }
    if !p.attributes.is_empty() {
        insert(&mut o, "attributes", labels_json(&p.attributes));
    }
    if let Some(AuthenticationMethod::OidcToken(t)) = &p.authentication_method {
        let mut token = Map::new();
        insert(
            &mut token,
            "serviceAccountEmail",
            t.service_account_email.clone(),
        );
        if !t.audience.is_empty() {
            insert(&mut token, "audience", t.audience.clone());
        }
        insert(&mut o, "oidcToken", Value::Object(token));
    }
    match &p.wrapper {
        Some(Wrapper::PubsubWrapper(_)) => insert(&mut o, "pubsubWrapper", json!({})),
        Some(Wrapper::NoWrapper(w)) => insert(
            &mut o,
            "noWrapper",
            json!({ "writeMetadata": w.write_metadata }),
        ),
        None => {}
    }
    Value::Object(o)
}

pub fn subscription_json(s: &pb::Subscription) -> Value {
    let mut o = Map::new();
    if !s.topic.is_empty() {
        insert(&mut o, "topic", s.topic.clone());
    }
    if let Some(p) = &s.push_config {
        insert(&mut o, "pushConfig", push_config_json(p));
    }
    if s.ack_deadline_seconds != 0 {
        insert(&mut o, "ackDeadlineSeconds", s.ack_deadline_seconds);
    }
    if s.retain_acked_messages {
        insert(&mut o, "retainAckedMessages", true);
    }
    if let Some(d) = &s.message_retention_duration {
        insert(&mut o, "messageRetentionDuration", d.to_string());
    }
    if !s.labels.is_empty() {
        insert(&mut o, "labels", labels_json(&s.labels));
    }
    if s.enable_message_ordering {
        insert(&mut o, "enableMessageOrdering", true);
    }
    if let Some(e) = &s.expiration_policy {
        let ttl = e.ttl.map(|d| json!({ "ttl": d.to_string() }));
        insert(&mut o, "expirationPolicy", ttl.unwrap_or_else(|| json!({})));
    }
    if !s.filter.is_empty() {
        insert(&mut o, "filter", s.filter.clone());
    }
    if let Some(d) = &s.dead_letter_policy {
        let mut policy = Map::new();
        if !d.dead_letter_topic.is_empty() {
            insert(&mut policy, "deadLetterTopic", d.dead_letter_topic.clone());
        }
        if d.max_delivery_attempts != 0 {
            insert(&mut policy, "maxDeliveryAttempts", d.max_delivery_attempts);
        }
        insert(&mut o, "deadLetterPolicy", Value::Object(policy));
    }
    if let Some(r) = &s.retry_policy {
        let mut policy = Map::new();
        if let Some(d) = &r.minimum_backoff {
            insert(&mut policy, "minimumBackoff", d.to_string());
        }
        if let Some(d) = &r.maximum_backoff {
            insert(&mut policy, "maximumBackoff", d.to_string());
        }
        insert(&mut o, "retryPolicy", Value::Object(policy));
    }
    if s.enable_exactly_once_delivery {
        insert(&mut o, "enableExactlyOnceDelivery", true);
    }
    Value::Object(o)
}

// ----- JSON → pb (responses) -----

fn string(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => panic!("{key} is not a string: {other}"),
    }
}

/// A proto3 JSON integer: a number, or a decimal string.
fn int(v: &Value, key: &str) -> i64 {
    match &v[key] {
        Value::Null => 0,
        Value::Number(n) => n
            .as_i64()
            .unwrap_or_else(|| panic!("{key} is not an integer: {n}")),
        Value::String(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not an integer: {s:?}")),
        other => panic!("{key} is not an integer: {other}"),
    }
}

fn boolean(v: &Value, key: &str) -> bool {
    match &v[key] {
        Value::Null => false,
        Value::Bool(b) => *b,
        other => panic!("{key} is not a boolean: {other}"),
    }
}

fn map(v: &Value, key: &str) -> HashMap<String, String> {
    match &v[key] {
        Value::Null => HashMap::new(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .unwrap_or_else(|| panic!("{key}.{k} is not a string: {v}"));
                (k.clone(), v.to_owned())
            })
            .collect(),
        other => panic!("{key} is not an object: {other}"),
    }
}

fn duration(v: &Value, key: &str) -> Option<prost_types::Duration> {
    match &v[key] {
        Value::Null => None,
        Value::String(s) => Some(
            s.parse()
                .unwrap_or_else(|e| panic!("{key} is not a proto3 JSON duration ({e}): {s:?}")),
        ),
        other => panic!("{key} is not a duration string: {other}"),
    }
}

fn timestamp(v: &Value, key: &str) -> Option<prost_types::Timestamp> {
    match &v[key] {
        Value::Null => None,
        Value::String(s) => Some(super::rfc3339_utc(s)),
        other => panic!("{key} is not a timestamp string: {other}"),
    }
}

fn object<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match &v[key] {
        Value::Null => None,
        o @ Value::Object(_) => Some(o),
        other => panic!("{key} is not an object: {other}"),
    }
}

fn list<T>(v: &Value, key: &str, item: impl Fn(&Value) -> T) -> Vec<T> {
    match &v[key] {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().map(item).collect(),
        other => panic!("{key} is not an array: {other}"),
    }
}

/// An enum as its name or its number; `names[i]` is value `i`.
fn enumeration(v: &Value, key: &str, names: &[&str]) -> i32 {
    match &v[key] {
        Value::Null => 0,
        Value::Number(n) => n.as_i64().expect("an enum number") as i32,
        Value::String(s) => names
            .iter()
            .position(|n| n == s)
            .unwrap_or_else(|| panic!("{key} has an unknown value {s:?}"))
            as i32,
        other => panic!("{key} is not an enum: {other}"),
    }
}

fn topic_from(v: &Value) -> pb::Topic {
    pb::Topic {
        name: string(v, "name"),
        labels: map(v, "labels"),
        message_retention_duration: duration(v, "messageRetentionDuration"),
        state: enumeration(
            v,
            "state",
            &["STATE_UNSPECIFIED", "ACTIVE", "INGESTION_RESOURCE_ERROR"],
        ),
        ..Default::default()
    }
}

pub fn message_from(v: &Value) -> pb::PubsubMessage {
    let data = string(v, "data");
    pb::PubsubMessage {
        data: BASE64
            .decode(&data)
            .unwrap_or_else(|e| panic!("data is not base64 ({e}): {data:?}")),
        attributes: map(v, "attributes"),
        message_id: string(v, "messageId"),
        publish_time: timestamp(v, "publishTime"),
        ordering_key: string(v, "orderingKey"),
    }
}

fn received_from(v: &Value) -> pb::ReceivedMessage {
    pb::ReceivedMessage {
        ack_id: string(v, "ackId"),
        message: object(v, "message").map(message_from),
        delivery_attempt: int(v, "deliveryAttempt") as i32,
    }
}

fn push_config_from(v: &Value) -> pb::PushConfig {
    let wrapper = match (object(v, "pubsubWrapper"), object(v, "noWrapper")) {
        (_, Some(w)) => Some(Wrapper::NoWrapper(NoWrapper {
            write_metadata: boolean(w, "writeMetadata"),
        })),
        (Some(_), None) => Some(Wrapper::PubsubWrapper(Default::default())),
        (None, None) => None,
    };
    pb::PushConfig {
        push_endpoint: string(v, "pushEndpoint"),
        attributes: map(v, "attributes"),
        authentication_method: object(v, "oidcToken").map(|t| {
            AuthenticationMethod::OidcToken(OidcToken {
                service_account_email: string(t, "serviceAccountEmail"),
                audience: string(t, "audience"),
            })
        }),
        wrapper,
    }
}

fn subscription_from(v: &Value) -> pb::Subscription {
    pb::Subscription {
        name: string(v, "name"),
        topic: string(v, "topic"),
        push_config: object(v, "pushConfig").map(push_config_from),
        ack_deadline_seconds: int(v, "ackDeadlineSeconds") as i32,
        retain_acked_messages: boolean(v, "retainAckedMessages"),
        message_retention_duration: duration(v, "messageRetentionDuration"),
        labels: map(v, "labels"),
        enable_message_ordering: boolean(v, "enableMessageOrdering"),
        expiration_policy: object(v, "expirationPolicy").map(|e| pb::ExpirationPolicy {
            ttl: duration(e, "ttl"),
        }),
        filter: string(v, "filter"),
        dead_letter_policy: object(v, "deadLetterPolicy").map(|d| pb::DeadLetterPolicy {
            dead_letter_topic: string(d, "deadLetterTopic"),
            max_delivery_attempts: int(d, "maxDeliveryAttempts") as i32,
        }),
        retry_policy: object(v, "retryPolicy").map(|r| pb::RetryPolicy {
            minimum_backoff: duration(r, "minimumBackoff"),
            maximum_backoff: duration(r, "maximumBackoff"),
        }),
        detached: boolean(v, "detached"),
        enable_exactly_once_delivery: boolean(v, "enableExactlyOnceDelivery"),
        topic_message_retention_duration: duration(v, "topicMessageRetentionDuration"),
        state: enumeration(
            v,
            "state",
            &["STATE_UNSPECIFIED", "ACTIVE", "RESOURCE_ERROR"],
        ),
        ..Default::default()
    }
}
