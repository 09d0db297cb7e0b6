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
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::RetryPolicyExt as _;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::retry_policy::RetryableErrors;
use labrelay_contract::dead_letter;
use labrelay_contract::push::PushEnvelope;
use tokio::sync::OnceCell;

/// How long parking one message may take before the push is answered 503.
pub const PARK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where permanent failures are parked: `DEAD_LETTER_TOPIC`, published to
/// through `PUBSUB_EMULATOR_HOST` when set, else Google Cloud Pub/Sub with
/// Application Default Credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSetting {
    /// The topic's full name, `projects/{project}/topics/{id}`.
    pub topic: String,
    /// A local broker's gRPC endpoint (`http://host:port`).
    pub emulator_endpoint: Option<String>,
}

impl DeadLetterSetting {
    /// Reads `DEAD_LETTER_TOPIC` and `PUBSUB_EMULATOR_HOST` through `get`
    /// (blank values count as unset). `None` when `DEAD_LETTER_TOPIC` is
    /// unset: permanent failures are answered 422 and parked by the
    /// subscription's dead-letter policy once its attempts run out.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<DeadLetterSetting>> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(topic) = get("DEAD_LETTER_TOPIC") else {
            return Ok(None);
        };
        if !is_topic_name(&topic) {
            anyhow::bail!(
                "DEAD_LETTER_TOPIC must be a full topic name such as \
                 `projects/my-project/topics/new-lab-report-dead-letter`, not {topic:?}"
            );
        }
        let emulator_endpoint = get("PUBSUB_EMULATOR_HOST")
            .map(|host| labrelay_runtime::emulator::endpoint(&host))
            .transpose()?;
        Ok(Some(DeadLetterSetting {
            topic,
            emulator_endpoint,
        }))
    }
}

fn is_topic_name(name: &str) -> bool {
    let Some((project, id)) = name
        .strip_prefix("projects/")
        .and_then(|rest| rest.split_once("/topics/"))
    else {
        return false;
    };
    !project.is_empty() && !id.is_empty() && !id.contains('/')
}

/// Publishes dead letters to one topic. The client is built on the first
/// one, so a receiver that never parks anything never connects.
#[derive(Debug)]
pub(crate) struct DeadLetters {
    setting: DeadLetterSetting,
    publisher: OnceCell<Publisher>,
}

impl DeadLetters {
    pub(crate) fn new(setting: DeadLetterSetting) -> DeadLetters {
        DeadLetters {
            setting,
            publisher: OnceCell::new(),
        }
    }

    /// The topic, for the start-up line.
    pub(crate) fn topic(&self) -> &str {
        &self.setting.topic
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
        let ordering_key = pushed.ordering_key.clone().unwrap_or_default();
        let message = Message::new()
            .set_data(data)
            .set_attributes(attributes)
            .set_ordering_key(ordering_key.clone());
        let publish = async {
            let publisher = self.publisher.get_or_try_init(|| self.build()).await?;
            let published = publisher.publish(message).await;
            if published.is_err() && !ordering_key.is_empty() {
                // A failed publish pauses its ordering key until resumed.
                publisher.resume_publish(ordering_key.clone());
            }
            published.with_context(|| format!("publishing to {}", self.setting.topic))
        };
        tokio::time::timeout(PARK_TIMEOUT, publish)
            .await
            .with_context(|| {
                format!(
                    "{} did not confirm the dead letter within {PARK_TIMEOUT:?}",
                    self.setting.topic
                )
            })?
    }

    async fn build(&self) -> anyhow::Result<Publisher> {
        let topic = &self.setting.topic;
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(50))
            .with_maximum_delay(Duration::from_secs(1))
            .with_scaling(2.0)
            .clamp();
        let mut builder = Publisher::builder(topic.clone())
            .with_retry_policy(RetryableErrors.with_time_limit(PARK_TIMEOUT))
            .with_backoff_policy(backoff);
        if let Some(endpoint) = &self.setting.emulator_endpoint {
            builder = builder.with_endpoint(endpoint).with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        builder
            .build()
            .await
            .with_context(|| format!("building a publisher for {topic}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_full_topic_name_and_the_emulator() {
        assert_eq!(DeadLetterSetting::from_vars(vars(&[])).unwrap(), None);
        let setting = DeadLetterSetting::from_vars(vars(&[
            ("DEAD_LETTER_TOPIC", " projects/p/topics/dl "),
            ("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(setting.topic, "projects/p/topics/dl");
        assert_eq!(
            setting.emulator_endpoint.as_deref(),
            Some("http://127.0.0.1:8085")
        );
        for bad in [
            "dl",
            "projects/p/subscriptions/dl",
            "projects//topics/dl",
            "projects/p/topics/",
        ] {
            let error = DeadLetterSetting::from_vars(vars(&[("DEAD_LETTER_TOPIC", bad)]))
                .unwrap_err()
                .to_string();
            assert!(error.contains("DEAD_LETTER_TOPIC"), "{error}");
        }
        let error = DeadLetterSetting::from_vars(vars(&[
            ("DEAD_LETTER_TOPIC", "projects/p/topics/dl"),
            ("PUBSUB_EMULATOR_HOST", "nowhere"),
        ]))
        .unwrap_err();
        assert!(
            error.to_string().contains("PUBSUB_EMULATOR_HOST"),
            "{error}"
        );
    }
}
