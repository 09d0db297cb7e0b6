//! Publishing to a topic of the receivers' own: the dead-letter topic
//! ([`crate::dead_letter`]) and the delivery-receipts topic
//! ([`crate::facts`]). One way to name the topic in the environment, one
//! client built on the first publish (a receiver that never publishes
//! never connects), one bound on how long a publish may take.

use std::time::Duration;

use anyhow::Context as _;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use tokio::sync::OnceCell;

/// A topic to publish to, published to through `PUBSUB_EMULATOR_HOST` when
/// set, else Google Cloud Pub/Sub with Application Default Credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSetting {
    /// The topic's full name, `projects/{project}/topics/{id}`.
    pub topic: String,
    /// A local broker's gRPC endpoint (`http://host:port`).
    pub emulator_endpoint: Option<String>,
}

impl TopicSetting {
    /// Reads the topic from `var` and `PUBSUB_EMULATOR_HOST` through `get`
    /// (blank values count as unset); `None` when `var` is unset. `example`
    /// is a topic id for the error message.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
        var: &str,
        example: &str,
    ) -> anyhow::Result<Option<TopicSetting>> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(topic) = get(var) else {
            return Ok(None);
        };
        if !is_topic_name(&topic) {
            anyhow::bail!(
                "{var} must be a full topic name such as \
                 `projects/my-project/topics/{example}`, not {topic:?}"
            );
        }
        let emulator_endpoint = get("PUBSUB_EMULATOR_HOST")
            .map(|host| labrelay_runtime::pubsub::endpoint(&host))
            .transpose()?;
        Ok(Some(TopicSetting {
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

/// Publishes to one topic, each publish (retries included) within `limit`.
#[derive(Debug)]
pub(crate) struct TopicPublisher {
    setting: TopicSetting,
    limit: Duration,
    publisher: OnceCell<Publisher>,
}

impl TopicPublisher {
    pub(crate) fn new(setting: TopicSetting, limit: Duration) -> TopicPublisher {
        TopicPublisher {
            setting,
            limit,
            publisher: OnceCell::new(),
        }
    }

    pub(crate) fn topic(&self) -> &str {
        &self.setting.topic
    }

    /// Publishes `message` and answers its id, once the topic confirmed it
    /// within the limit.
    pub(crate) async fn publish(&self, message: Message) -> anyhow::Result<String> {
        let topic = &self.setting.topic;
        let ordering_key = message.ordering_key.clone();
        let publish = async {
            let publisher = self.publisher.get_or_try_init(|| self.build()).await?;
            let published = publisher.publish(message).await;
            if published.is_err() && !ordering_key.is_empty() {
                // A failed publish pauses its ordering key until resumed.
                publisher.resume_publish(ordering_key.clone());
            }
            published.with_context(|| format!("publishing to {topic}"))
        };
        tokio::time::timeout(self.limit, publish)
            .await
            .with_context(|| format!("{topic} did not confirm within {:?}", self.limit))?
    }

    async fn build(&self) -> anyhow::Result<Publisher> {
        let topic = &self.setting.topic;
        labrelay_runtime::pubsub::publisher(
            topic,
            self.setting.emulator_endpoint.as_deref(),
            self.limit,
        )
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
        fn read(pairs: &[(&str, &str)]) -> anyhow::Result<Option<TopicSetting>> {
            TopicSetting::from_vars(vars(pairs), "SOME_TOPIC", "t")
        }
        assert_eq!(read(&[]).unwrap(), None);
        let setting = read(&[
            ("SOME_TOPIC", " projects/p/topics/dl "),
            ("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
        ])
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
            let error = read(&[("SOME_TOPIC", bad)]).unwrap_err().to_string();
            assert!(error.contains("SOME_TOPIC"), "{error}");
        }
        let error = read(&[
            ("SOME_TOPIC", "projects/p/topics/dl"),
            ("PUBSUB_EMULATOR_HOST", "nowhere"),
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("PUBSUB_EMULATOR_HOST"),
            "{error}"
        );
    }
}
