//! Topic and subscription settings: validated and normalized once, when they
//! enter the broker.
//!
//! The broker keeps the API's own `pb::Subscription` as the stored form (so
//! `GetSubscription` returns exactly what was configured, defaults filled in)
//! and derives [`SubscriptionSettings`], the typed view the delivery code
//! uses, from it.

use std::time::Duration;

use std::sync::Arc;

use crate::error::{BrokerError, Result};
use crate::filter::Filter;
use crate::names::{DELETED_TOPIC, SubscriptionName, TopicName};
use crate::pb;
use crate::pb::push_config::{AuthenticationMethod, Wrapper};

pub const DEFAULT_ACK_DEADLINE_SECS: i32 = 10;
pub const MAX_ACK_DEADLINE_SECS: i32 = 600;
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MIN_RETENTION: Duration = Duration::from_secs(10 * 60);
pub const MAX_RETENTION: Duration = Duration::from_secs(31 * 24 * 3600);
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(600);
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_DELIVERY_ATTEMPTS: i32 = 5;

/// Publish limits of the real service.
pub const MAX_MESSAGES_PER_PUBLISH: usize = 1000;
pub const MAX_PUBLISH_BYTES: usize = 10_000_000;
pub const MAX_ATTRIBUTES: usize = 100;
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;
pub const MAX_ORDERING_KEY_BYTES: usize = 1024;

/// How the broker delivers to one subscription, derived from its config.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionSettings {
    pub ack_deadline: Duration,
    pub retention: Duration,
    pub push: Option<PushSettings>,
    pub retry: Option<RetrySettings>,
    pub dead_letter: Option<DeadLetterSettings>,
    /// Only messages whose attributes match are delivered.
    pub filter: Option<Arc<Filter>>,
    /// Messages with the same ordering key go out one at a time, in order.
    pub ordered: bool,
    /// Detached from its topic: nothing is delivered any more.
    pub detached: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PushSettings {
    pub endpoint: String,
    /// `(service account email, audience)` when pushes carry an OIDC token.
    pub oidc: Option<(String, String)>,
    /// `Some(write_metadata)` when the message is pushed unwrapped.
    pub no_wrapper: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySettings {
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterSettings {
    pub topic: TopicName,
    pub max_delivery_attempts: u32,
}

fn duration_of(d: &prost_types::Duration, field: &str) -> Result<Duration> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(BrokerError::invalid(format!(
            "{field} must be a non-negative duration"
        )));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

pub fn to_proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn retention_of(d: Option<&prost_types::Duration>, field: &str) -> Result<Option<Duration>> {
    let Some(d) = d else { return Ok(None) };
    let value = duration_of(d, field)?;
    if !(MIN_RETENTION..=MAX_RETENTION).contains(&value) {
        return Err(BrokerError::invalid(format!(
            "{field} must be between 10 minutes and 31 days (got {}s)",
            value.as_secs()
        )));
    }
    Ok(Some(value))
}

/// Validates a topic for `CreateTopic` and fills in its name.
pub fn normalize_topic(mut topic: pb::Topic) -> Result<(TopicName, pb::Topic)> {
    let name = TopicName::parse(&topic.name)?;
    retention_of(
        topic.message_retention_duration.as_ref(),
        "message_retention_duration",
    )?;
    if topic.schema_settings.is_some() {
        return Err(BrokerError::Unimplemented(
            "schema_settings is not supported by this broker".into(),
        ));
    }
    if topic.ingestion_data_source_settings.is_some() || !topic.message_transforms.is_empty() {
        return Err(BrokerError::Unimplemented(
            "ingestion settings and message transforms are not supported by this broker".into(),
        ));
    }
    topic.state = pb::topic::State::Active as i32;
    Ok((name, topic))
}

/// Validates a subscription for `CreateSubscription`/`UpdateSubscription` and
/// fills in the service's defaults, as `GetSubscription` reports them.
pub fn normalize_subscription(
    mut sub: pb::Subscription,
) -> Result<(SubscriptionName, pb::Subscription)> {
    let name = SubscriptionName::parse(&sub.name)?;
    if sub.topic != DELETED_TOPIC {
        TopicName::parse(&sub.topic)?;
    }
    match sub.ack_deadline_seconds {
        0 => sub.ack_deadline_seconds = DEFAULT_ACK_DEADLINE_SECS,
        10..=MAX_ACK_DEADLINE_SECS => {}
        other => {
            return Err(BrokerError::invalid(format!(
                "ack_deadline_seconds must be between 10 and 600 (got {other})"
            )));
        }
    }
    if retention_of(
        sub.message_retention_duration.as_ref(),
        "message_retention_duration",
    )?
    .is_none()
    {
        sub.message_retention_duration = Some(to_proto_duration(DEFAULT_RETENTION));
    }
    if let Some(push) = &sub.push_config {
        validate_push_config(push)?;
    }
    if let Some(retry) = &mut sub.retry_policy {
        let min = match &retry.minimum_backoff {
            Some(d) => duration_of(d, "retry_policy.minimum_backoff")?,
            None => DEFAULT_MIN_BACKOFF,
        };
        let max = match &retry.maximum_backoff {
            Some(d) => duration_of(d, "retry_policy.maximum_backoff")?,
            None => DEFAULT_MAX_BACKOFF,
        };
        for (value, field) in [(min, "minimum_backoff"), (max, "maximum_backoff")] {
            if value > MAX_BACKOFF {
                return Err(BrokerError::invalid(format!(
                    "retry_policy.{field} must be between 0s and 600s (got {}s)",
                    value.as_secs_f64()
                )));
            }
        }
        if min > max {
            return Err(BrokerError::invalid(
                "retry_policy.minimum_backoff must not exceed retry_policy.maximum_backoff",
            ));
        }
        retry.minimum_backoff = Some(to_proto_duration(min));
        retry.maximum_backoff = Some(to_proto_duration(max));
    }
    if let Some(dead_letter) = &mut sub.dead_letter_policy {
        if dead_letter.dead_letter_topic.is_empty() {
            return Err(BrokerError::invalid(
                "dead_letter_policy.dead_letter_topic is required",
            ));
        }
        TopicName::parse(&dead_letter.dead_letter_topic)?;
        match dead_letter.max_delivery_attempts {
            0 => dead_letter.max_delivery_attempts = DEFAULT_MAX_DELIVERY_ATTEMPTS,
            5..=100 => {}
            other => {
                return Err(BrokerError::invalid(format!(
                    "dead_letter_policy.max_delivery_attempts must be between 5 and 100 (got {other})"
                )));
            }
        }
    }
    let unsupported = [
        (sub.bigquery_config.is_some(), "bigquery_config"),
        (sub.cloud_storage_config.is_some(), "cloud_storage_config"),
        (sub.bigtable_config.is_some(), "bigtable_config"),
        (
            sub.enable_exactly_once_delivery,
            "enable_exactly_once_delivery",
        ),
        (sub.retain_acked_messages, "retain_acked_messages"),
        (!sub.message_transforms.is_empty(), "message_transforms"),
    ];
    if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(BrokerError::Unimplemented(format!(
            "{field} is not supported by this broker yet"
        )));
    }
    if let Some(ttl) = sub.expiration_policy.as_ref().and_then(|e| e.ttl.as_ref()) {
        let ttl = duration_of(ttl, "expiration_policy.ttl")?;
        if ttl < Duration::from_secs(24 * 3600) {
            return Err(BrokerError::invalid(format!(
                "expiration_policy.ttl must be at least 1 day (got {}s)",
                ttl.as_secs()
            )));
        }
    }
    if !sub.filter.is_empty() {
        Filter::parse(&sub.filter)
            .map_err(|why| BrokerError::invalid(format!("Invalid filter: {why}")))?;
    }
    sub.state = pb::subscription::State::Active as i32;
    Ok((name, sub))
}

pub fn validate_push_config(push: &pb::PushConfig) -> Result<()> {
    if push.push_endpoint.is_empty() {
        if push.authentication_method.is_some() || push.wrapper.is_some() {
            return Err(BrokerError::invalid(
                "push_config.push_endpoint is required when push options are set",
            ));
        }
        return Ok(());
    }
    let url = reqwest::Url::parse(&push.push_endpoint).map_err(|e| {
        BrokerError::invalid(format!(
            "push_config.push_endpoint \"{}\" is not a valid URL: {e}",
            push.push_endpoint
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BrokerError::invalid(format!(
            "push_config.push_endpoint must be an http or https URL (got scheme \"{}\")",
            url.scheme()
        )));
    }
    if let Some(AuthenticationMethod::OidcToken(token)) = &push.authentication_method
        && token.service_account_email.is_empty()
    {
        return Err(BrokerError::invalid(
            "push_config.oidc_token.service_account_email is required",
        ));
    }
    Ok(())
}

impl SubscriptionSettings {
    /// The typed view of a subscription already passed through
    /// [`normalize_subscription`].
    pub fn from_config(sub: &pb::Subscription) -> SubscriptionSettings {
        let secs = |d: &Option<prost_types::Duration>, default: Duration| {
            d.as_ref()
                .and_then(|d| duration_of(d, "").ok())
                .unwrap_or(default)
        };
        let push =
            sub.push_config
                .as_ref()
                .filter(|p| !p.push_endpoint.is_empty())
                .map(|p| PushSettings {
                    endpoint: p.push_endpoint.clone(),
                    oidc: p.authentication_method.as_ref().map(
                        |AuthenticationMethod::OidcToken(t)| {
                            let audience = if t.audience.is_empty() {
                                &p.push_endpoint
                            } else {
                                &t.audience
                            };
                            (t.service_account_email.clone(), audience.clone())
                        },
                    ),
                    no_wrapper: match &p.wrapper {
                        Some(Wrapper::NoWrapper(w)) => Some(w.write_metadata),
                        _ => None,
                    },
                });
        SubscriptionSettings {
            ack_deadline: Duration::from_secs(sub.ack_deadline_seconds.clamp(10, 600) as u64),
            retention: secs(&sub.message_retention_duration, DEFAULT_RETENTION),
            push,
            retry: sub.retry_policy.as_ref().map(|r| RetrySettings {
                min_backoff: secs(&r.minimum_backoff, DEFAULT_MIN_BACKOFF),
                max_backoff: secs(&r.maximum_backoff, DEFAULT_MAX_BACKOFF),
            }),
            filter: (!sub.filter.is_empty())
                .then(|| Filter::parse(&sub.filter).ok().map(Arc::new))
                .flatten(),
            ordered: sub.enable_message_ordering,
            detached: sub.detached,
            dead_letter: sub.dead_letter_policy.as_ref().and_then(|d| {
                Some(DeadLetterSettings {
                    topic: TopicName::parse(&d.dead_letter_topic).ok()?,
                    max_delivery_attempts: d.max_delivery_attempts.max(1) as u32,
                })
            }),
        }
    }
}

/// Checks a publish request's messages against the service's limits.
pub fn validate_messages(messages: &[pb::PubsubMessage]) -> Result<()> {
    if messages.is_empty() {
        return Err(BrokerError::invalid(
            "a publish request must contain at least one message",
        ));
    }
    if messages.len() > MAX_MESSAGES_PER_PUBLISH {
        return Err(BrokerError::invalid(format!(
            "a publish request may contain at most {MAX_MESSAGES_PER_PUBLISH} messages (got {})",
            messages.len()
        )));
    }
    let mut total = 0usize;
    for (i, m) in messages.iter().enumerate() {
        if m.data.is_empty() && m.attributes.is_empty() {
            return Err(BrokerError::invalid(format!(
                "messages[{i}] has neither data nor attributes"
            )));
        }
        if m.attributes.len() > MAX_ATTRIBUTES {
            return Err(BrokerError::invalid(format!(
                "messages[{i}] has {} attributes; at most {MAX_ATTRIBUTES} are allowed",
                m.attributes.len()
            )));
        }
        for (k, v) in &m.attributes {
            if k.is_empty() || k.len() > MAX_ATTRIBUTE_KEY_BYTES {
                return Err(BrokerError::invalid(format!(
                    "messages[{i}] has an attribute key of {} bytes; keys must be 1 to {MAX_ATTRIBUTE_KEY_BYTES} bytes",
                    k.len()
                )));
            }
            if k.starts_with("goog") {
                return Err(BrokerError::invalid(format!(
                    "messages[{i}] attribute key \"{k}\" is reserved (keys must not start with \"goog\")"
                )));
            }
            if v.len() > MAX_ATTRIBUTE_VALUE_BYTES {
                return Err(BrokerError::invalid(format!(
                    "messages[{i}] attribute \"{k}\" has a value of {} bytes; at most {MAX_ATTRIBUTE_VALUE_BYTES} are allowed",
                    v.len()
                )));
            }
        }
        if m.ordering_key.len() > MAX_ORDERING_KEY_BYTES {
            return Err(BrokerError::invalid(format!(
                "messages[{i}] has an ordering key of {} bytes; at most {MAX_ORDERING_KEY_BYTES} are allowed",
                m.ordering_key.len()
            )));
        }
        total += m.data.len()
            + m.ordering_key.len()
            + m.attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
    }
    if total > MAX_PUBLISH_BYTES {
        return Err(BrokerError::invalid(format!(
            "the publish request is {total} bytes; at most {MAX_PUBLISH_BYTES} are allowed"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(edit: impl FnOnce(&mut pb::Subscription)) -> Result<pb::Subscription> {
        let mut s = pb::Subscription {
            name: "projects/p/subscriptions/sub".into(),
            topic: "projects/p/topics/topic".into(),
            ..Default::default()
        };
        edit(&mut s);
        normalize_subscription(s).map(|(_, s)| s)
    }

    fn secs(s: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: s,
            nanos: 0,
        })
    }

    #[test]
    fn fills_in_the_services_defaults() {
        let s = sub(|s| {
            s.retry_policy = Some(pb::RetryPolicy::default());
            s.dead_letter_policy = Some(pb::DeadLetterPolicy {
                dead_letter_topic: "projects/p/topics/dead".into(),
                max_delivery_attempts: 0,
            });
        })
        .unwrap();
        assert_eq!(s.ack_deadline_seconds, 10);
        assert_eq!(s.message_retention_duration, secs(7 * 24 * 3600));
        let retry = s.retry_policy.as_ref().unwrap();
        assert_eq!(retry.minimum_backoff, secs(10));
        assert_eq!(retry.maximum_backoff, secs(600));
        assert_eq!(
            s.dead_letter_policy.as_ref().unwrap().max_delivery_attempts,
            5
        );
        let settings = SubscriptionSettings::from_config(&s);
        assert_eq!(settings.dead_letter.unwrap().max_delivery_attempts, 5);
    }

    #[test]
    fn rejects_out_of_range_values_naming_the_field() {
        type Edit = Box<dyn FnOnce(&mut pb::Subscription)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|s| s.ack_deadline_seconds = 9),
                "ack_deadline_seconds",
            ),
            (
                Box::new(|s| s.ack_deadline_seconds = 601),
                "ack_deadline_seconds",
            ),
            (
                Box::new(|s| s.message_retention_duration = secs(599)),
                "message_retention_duration",
            ),
            (
                Box::new(|s| s.message_retention_duration = secs(31 * 24 * 3600 + 1)),
                "message_retention_duration",
            ),
            (
                Box::new(|s| {
                    s.retry_policy = Some(pb::RetryPolicy {
                        minimum_backoff: secs(1),
                        maximum_backoff: secs(700),
                    })
                }),
                "maximum_backoff",
            ),
            (
                Box::new(|s| {
                    s.dead_letter_policy = Some(pb::DeadLetterPolicy {
                        dead_letter_topic: "projects/p/topics/dead".into(),
                        max_delivery_attempts: 4,
                    })
                }),
                "max_delivery_attempts",
            ),
            (
                Box::new(|s| {
                    s.dead_letter_policy = Some(pb::DeadLetterPolicy {
                        dead_letter_topic: "projects/p/topics/dead".into(),
                        max_delivery_attempts: 101,
                    })
                }),
                "max_delivery_attempts",
            ),
            (
                Box::new(|s| {
                    s.push_config = Some(pb::PushConfig {
                        push_endpoint: "not a url".into(),
                        ..Default::default()
                    })
                }),
                "push_endpoint",
            ),
        ];
        for (edit, field) in cases {
            let err = sub(edit).unwrap_err();
            assert!(matches!(err, BrokerError::InvalidArgument(_)), "{err:?}");
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn oidc_audience_defaults_to_the_endpoint() {
        let s = sub(|s| {
            s.push_config = Some(pb::PushConfig {
                push_endpoint: "http://127.0.0.1:8081/".into(),
                authentication_method: Some(AuthenticationMethod::OidcToken(
                    pb::push_config::OidcToken {
                        service_account_email: "sa@p.iam.gserviceaccount.com".into(),
                        audience: String::new(),
                    },
                )),
                ..Default::default()
            })
        })
        .unwrap();
        let push = SubscriptionSettings::from_config(&s).push.unwrap();
        assert_eq!(
            push.oidc,
            Some((
                "sa@p.iam.gserviceaccount.com".into(),
                "http://127.0.0.1:8081/".into()
            ))
        );
    }

    #[test]
    fn publish_limits() {
        let msg = |data: &[u8]| pb::PubsubMessage {
            data: data.to_vec(),
            ..Default::default()
        };
        assert!(validate_messages(&[msg(b"x")]).is_ok());
        assert!(validate_messages(&[]).is_err());
        assert!(
            validate_messages(&[msg(b"")])
                .unwrap_err()
                .to_string()
                .contains("neither data")
        );
        assert!(validate_messages(&vec![msg(b"x"); 1001]).is_err());
        assert!(validate_messages(&[msg(&vec![0; MAX_PUBLISH_BYTES + 1])]).is_err());
        let mut reserved = msg(b"x");
        reserved.attributes.insert("googx".into(), "v".into());
        assert!(validate_messages(&[reserved]).is_err());
    }
}
