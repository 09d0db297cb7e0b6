//! Parking what no delivery can ever send: a push whose notification failed
//! permanently (the provider refused it, the address is not one, the
//! message is not a lab report) is published to the dead-letter topic by
//! the receiver itself, with the attributes Pub/Sub gives a dead letter,
//! and then acknowledged.
//!
//! Why the receiver and not the subscription's dead-letter policy: Pub/Sub
//! counts every failed push alike, a 503 while the SMTP server is down as
//! much as a 422 for a refused address. A limit low enough to park a
//! refused message in seconds parks every report during an outage of a
//! minute; a limit that outlasts an outage of hours keeps a refused message
//! retrying for hours. So the subscriptions get the long limit (their
//! dead-letter policy is the backstop for outages longer still), and a
//! permanent failure is parked here, on its first delivery.
//!
//! A dead letter parked here looks like one the broker or Pub/Sub parked
//! ([`labrelay_contract::dead_letter`]): the console shows it, `labrelay
//! dead-letters` lists and replays it. When publishing it fails, the push
//! is answered 503 and parking is tried again on the redelivery.

use std::time::Duration;

use anyhow::Context as _;
use google_cloud_pubsub::model::Message;
use labrelay_contract::dead_letter;
use labrelay_contract::push::PushEnvelope;

use crate::publish::{TopicPublisher, TopicSetting};

/// How long parking one message may take before the push is answered 503.
pub const PARK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where permanent failures are parked: `DEAD_LETTER_TOPIC`, published to
/// through `PUBSUB_EMULATOR_HOST` when set, else Google Cloud Pub/Sub with
/// Application Default Credentials.
pub type DeadLetterSetting = TopicSetting;

/// Reads `DEAD_LETTER_TOPIC` and `PUBSUB_EMULATOR_HOST` through `get`
/// (blank values count as unset). `None` when `DEAD_LETTER_TOPIC` is
/// unset: permanent failures are answered 422 and parked by the
/// subscription's dead-letter policy once its attempts run out.
pub fn setting_from_vars(
    get: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<DeadLetterSetting>> {
    TopicSetting::from_vars(get, "DEAD_LETTER_TOPIC", "new-lab-report-dead-letter")
}

/// Publishes dead letters to one topic. The client is built on the first
/// one, so a receiver that never parks anything never connects.
#[derive(Debug)]
pub(crate) struct DeadLetters {
    publisher: TopicPublisher,
}

impl DeadLetters {
    pub(crate) fn new(setting: DeadLetterSetting) -> DeadLetters {
        DeadLetters {
            publisher: TopicPublisher::new(setting, PARK_TIMEOUT),
        }
    }

    /// The topic, for the start-up line.
    pub(crate) fn topic(&self) -> &str {
        self.publisher.topic()
    }

    /// Publishes the pushed message to the dead-letter topic with the
    /// source attributes (`reason` as the delivery error) and answers the
    /// dead letter's id, within [`PARK_TIMEOUT`].
    pub(crate) async fn park(
        &self,
        envelope: &PushEnvelope,
        reason: &str,
    ) -> anyhow::Result<String> {
        let pushed = &envelope.message;
        let data = pushed
            .decode_data()
            .context("the pushed message's data is not base64")?;
        let attempts = envelope.delivery_attempt.unwrap_or(1);
        let source = dead_letter::source_attributes(
            &envelope.subscription,
            attempts,
            &pushed.publish_time,
            reason,
        )
        .with_context(|| {
            format!(
                "the push names no subscription to park from ({:?})",
                envelope.subscription
            )
        })?;
        let attributes = pushed
            .attributes
            .iter()
            .filter(|(k, _)| !dead_letter::is_source_attribute(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(source.map(|(k, v)| (k.to_string(), v)));
        let message = Message::new()
            .set_data(data)
            .set_attributes(attributes)
            .set_ordering_key(pushed.ordering_key.clone().unwrap_or_default());
        self.publisher.publish(message).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_topic_is_read_from_its_variable() {
        let get =
            |name: &str| (name == "DEAD_LETTER_TOPIC").then(|| "projects/p/topics/dl".to_string());
        assert_eq!(
            setting_from_vars(get).unwrap().unwrap().topic,
            "projects/p/topics/dl"
        );
        let error = setting_from_vars(|_| Some("dl".into())).unwrap_err();
        assert!(error.to_string().contains("DEAD_LETTER_TOPIC"), "{error}");
    }
}
