//! Serde mirrors of the prost messages in the proto3 JSON mapping: camelCase
//! names (the proto's snake_case names are accepted too, as Google does),
//! default values left out of the output, unknown fields refused, bytes as
//! base64, durations as `"600s"`, timestamps as RFC 3339 and enums by name
//! (numbers accepted).
//!
//! JSON `null` is taken as "unset" only for message, duration and timestamp
//! fields. The encodings of the scalar and well-known types (field masks,
//! durations, timestamps, int32, enums, bytes) are in [`values`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::pb;

mod values;

use values::{Duration, FieldMask, Timestamp, base64_bytes, enum_name, enum_value, int32};

/// A request whose JSON maps to no valid protobuf request (an
/// `INVALID_ARGUMENT` with this message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid(pub &'static str);

type Labels = HashMap<String, String>;

/// Proto3 JSON leaves out fields that hold their default value.
fn unset<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct Topic {
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
pub(crate) struct Subscription {
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
    type Error = Invalid;

    fn try_from(s: Subscription) -> Result<Self, Invalid> {
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
pub(crate) struct PushConfig {
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
    type Error = Invalid;

    fn try_from(config: PushConfig) -> Result<Self, Invalid> {
        use pb::push_config::{AuthenticationMethod, Wrapper};
        let wrapper = match (config.pubsub_wrapper, config.no_wrapper) {
            (Some(_), Some(_)) => {
                return Err(Invalid("pushConfig sets both pubsubWrapper and noWrapper"));
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
pub(crate) struct PubsubMessage {
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
pub(crate) struct Snapshot {
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
pub(crate) struct UpdateTopicRequest {
    pub topic: Option<Topic>,
    #[serde(alias = "update_mask")]
    pub update_mask: Option<FieldMask>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct UpdateSubscriptionRequest {
    pub subscription: Option<Subscription>,
    #[serde(alias = "update_mask")]
    pub update_mask: Option<FieldMask>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct UpdateSnapshotRequest {
    pub snapshot: Option<Snapshot>,
    #[serde(alias = "update_mask")]
    pub update_mask: Option<FieldMask>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PublishRequest {
    pub messages: Vec<PubsubMessage>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct PullRequest {
    #[serde(alias = "return_immediately")]
    pub return_immediately: bool,
    #[serde(alias = "max_messages", deserialize_with = "int32")]
    pub max_messages: i32,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct AcknowledgeRequest {
    #[serde(alias = "ack_ids")]
    pub ack_ids: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct ModifyAckDeadlineRequest {
    #[serde(alias = "ack_ids")]
    pub ack_ids: Vec<String>,
    #[serde(alias = "ack_deadline_seconds", deserialize_with = "int32")]
    pub ack_deadline_seconds: i32,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct ModifyPushConfigRequest {
    #[serde(alias = "push_config")]
    pub push_config: Option<PushConfig>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SeekRequest {
    time: Option<Timestamp>,
    snapshot: Option<String>,
}

impl TryFrom<SeekRequest> for Option<pb::seek_request::Target> {
    type Error = Invalid;

    fn try_from(seek: SeekRequest) -> Result<Self, Invalid> {
        use pb::seek_request::Target;
        match (seek.time, seek.snapshot) {
            (Some(_), Some(_)) => Err(Invalid("seek sets both time and snapshot")),
            (Some(time), None) => Ok(Some(Target::Time(time.0))),
            (None, Some(snapshot)) => Ok(Some(Target::Snapshot(snapshot))),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CreateSnapshotRequest {
    pub subscription: String,
    pub labels: Labels,
}

#[derive(Serialize)]
pub(crate) struct Empty {}

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
pub(crate) struct PublishResponse {
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
pub(crate) struct PullResponse {
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
pub(crate) struct Topics {
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
pub(crate) struct Subscriptions<T> {
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
pub(crate) struct Snapshots<T> {
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
