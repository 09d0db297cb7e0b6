//! The attributes a dead letter carries: what Pub/Sub adds to a message it
//! forwards to a subscription's dead-letter topic, and what a push
//! receiver adds when it parks a message no delivery can ever send (see
//! `labrelay_receiver::dead_letter`). Written by the broker and the
//! receivers, read by the console, `labrelay dead-letters` and replay, so
//! a dead letter looks the same whoever parked it.

/// What every attribute a dead letter gains starts with; a replay removes
/// them all.
pub const SOURCE_PREFIX: &str = "CloudPubSubDeadLetterSource";
/// Pub/Sub's: the delivery attempts the message used up.
pub const DELIVERY_COUNT: &str = "CloudPubSubDeadLetterSourceDeliveryCount";
/// Pub/Sub's: the id (last segment) of the subscription that gave up.
pub const SOURCE_SUBSCRIPTION: &str = "CloudPubSubDeadLetterSourceSubscription";
/// Pub/Sub's: that subscription's project.
pub const SOURCE_PROJECT: &str = "CloudPubSubDeadLetterSourceSubscriptionProject";
/// Pub/Sub's: when the message was first published (RFC 3339).
pub const SOURCE_PUBLISH_TIME: &str = "CloudPubSubDeadLetterSourceTopicPublishTime";
/// Why the last delivery failed (`push failed: HTTP 422`, `ack deadline
/// expired`, `nacked by the subscriber`). Seen from the real service in some
/// reports; always set by labrelay, so an operator sees why.
pub const DELIVERY_ERROR: &str = "CloudPubSubDeadLetterSourceDeliveryErrorMessage";

/// Whether `key` is one of the attributes a dead letter gains.
pub fn is_source_attribute(key: &str) -> bool {
    key.starts_with(SOURCE_PREFIX)
}

/// The source attributes of a message dead-lettered from `subscription`
/// (its full name, `projects/{project}/subscriptions/{id}`) after
/// `attempts` deliveries, the last failing for `reason`; `publish_time` is
/// the message's (RFC 3339). `None` when `subscription` is not a full
/// subscription name.
pub fn source_attributes(
    subscription: &str,
    attempts: u32,
    publish_time: &str,
    reason: &str,
) -> Option<[(&'static str, String); 5]> {
    let (project, id) = split_subscription(subscription)?;
    Some([
        (DELIVERY_COUNT, attempts.to_string()),
        (SOURCE_SUBSCRIPTION, id.to_string()),
        (SOURCE_PROJECT, project.to_string()),
        (SOURCE_PUBLISH_TIME, publish_time.to_string()),
        (DELIVERY_ERROR, reason.to_string()),
    ])
}

/// `projects/{project}/subscriptions/{id}` → `(project, id)`.
fn split_subscription(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("projects/")?;
    let (project, id) = rest.split_once("/subscriptions/")?;
    (!project.is_empty() && !id.is_empty() && !id.contains('/')).then_some((project, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_attributes_name_the_subscription_by_project_and_id() {
        let attributes = source_attributes(
            "projects/pet-theory/subscriptions/email-service-sub",
            3,
            "2026-12-07T10:00:00Z",
            "push failed: HTTP 422",
        )
        .unwrap();
        assert_eq!(
            attributes.clone().map(|(k, v)| format!("{k}={v}")),
            [
                "CloudPubSubDeadLetterSourceDeliveryCount=3",
                "CloudPubSubDeadLetterSourceSubscription=email-service-sub",
                "CloudPubSubDeadLetterSourceSubscriptionProject=pet-theory",
                "CloudPubSubDeadLetterSourceTopicPublishTime=2026-12-07T10:00:00Z",
                "CloudPubSubDeadLetterSourceDeliveryErrorMessage=push failed: HTTP 422",
            ]
        );
        assert!(attributes.iter().all(|(k, _)| is_source_attribute(k)));
        for bad in [
            "email-service-sub",
            "projects//subscriptions/s",
            "projects/p/topics/t",
            "projects/p/subscriptions/",
            "projects/p/subscriptions/a/b",
        ] {
            assert!(source_attributes(bad, 1, "", "").is_none(), "{bad}");
        }
    }
}
