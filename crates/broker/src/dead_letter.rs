//! Dead letters, in one place: the attributes the engine adds to a message
//! it forwards to a dead-letter topic (`forwarded`), reading them back
//! ([`Source`]), and replay ([`replay`]): republishing dead letters to the
//! topic of the subscription they were dead-lettered from, without those
//! attributes.
//!
//! The console replays through the engine in-process; `labrelay
//! dead-letters replay` through the Pub/Sub API over gRPC (so it works
//! against Google Cloud Pub/Sub too). Both run [`replay`] over their own
//! [`PubSub`], so they do the same thing.

use std::collections::BTreeSet;
use std::future::Future;

use crate::names::{DELETED_TOPIC, SubscriptionName};
use crate::pb;

pub use labrelay_contract::dead_letter::{
    DELIVERY_COUNT, DELIVERY_ERROR, SOURCE_PREFIX, SOURCE_PROJECT, SOURCE_PUBLISH_TIME,
    SOURCE_SUBSCRIPTION, is_source_attribute,
};

/// What becomes of a dead letter forwarded to a topic without a
/// subscription: Pub/Sub stores nothing on such a topic, and neither does
/// the broker, so the message is lost (logged, counted, and flagged in the
/// console beforehand).
pub const DROPPED: &str = "dropped: the dead-letter topic has no subscription";

/// The copy of `message` the engine publishes to the dead-letter topic of
/// `subscription`, after `attempts` failed deliveries, the last for
/// `reason`: its data, attributes and ordering key, and the source
/// attributes.
pub(crate) fn forwarded(
    message: &pb::PubsubMessage,
    subscription: &SubscriptionName,
    attempts: u32,
    reason: &str,
) -> pb::PubsubMessage {
    let mut copy = pb::PubsubMessage {
        data: message.data.clone(),
        attributes: message.attributes.clone(),
        ordering_key: message.ordering_key.clone(),
        ..Default::default()
    };
    let source = [
        (DELIVERY_COUNT, attempts.to_string()),
        (SOURCE_SUBSCRIPTION, subscription.id().to_string()),
        (SOURCE_PROJECT, subscription.project_id().to_string()),
        (
            SOURCE_PUBLISH_TIME,
            message
                .publish_time
                .map(|t| t.to_string())
                .unwrap_or_default(),
        ),
        (DELIVERY_ERROR, reason.to_string()),
    ];
    copy.attributes
        .extend(source.map(|(k, v)| (k.to_string(), v)));
    copy
}

/// What a dead letter says about where it came from; each is `None` when
/// the attribute is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    /// The source subscription's id.
    pub subscription: Option<&'a str>,
    pub project: Option<&'a str>,
    pub delivery_count: Option<&'a str>,
    pub publish_time: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl<'a> Source<'a> {
    pub fn of(message: &'a pb::PubsubMessage) -> Source<'a> {
        let attribute = |key: &str| message.attributes.get(key).map(String::as_str);
        Source {
            subscription: attribute(SOURCE_SUBSCRIPTION),
            project: attribute(SOURCE_PROJECT),
            delivery_count: attribute(DELIVERY_COUNT),
            publish_time: attribute(SOURCE_PUBLISH_TIME),
            error: attribute(DELIVERY_ERROR),
        }
    }

    /// The full name of the subscription the message was dead-lettered
    /// from, `projects/{project}/subscriptions/{id}`.
    pub fn subscription_name(&self) -> Option<String> {
        match (self.project, self.subscription) {
            (Some(project), Some(id)) => Some(format!("projects/{project}/subscriptions/{id}")),
            _ => None,
        }
    }
}

/// What a replay republishes for `dead_letter`: its data, ordering key and
/// attributes, without the source attributes.
pub fn republished(dead_letter: &pb::PubsubMessage) -> pb::PubsubMessage {
    pb::PubsubMessage {
        data: dead_letter.data.clone(),
        attributes: dead_letter
            .attributes
            .iter()
            .filter(|(k, _)| !is_source_attribute(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ordering_key: dead_letter.ordering_key.clone(),
        ..Default::default()
    }
}

/// The Pub/Sub calls a replay makes: the engine's methods for the console,
/// a gRPC client for `labrelay dead-letters replay`.
pub trait PubSub {
    type Error;

    /// Leases up to 1000 messages of `subscription` that are ready now,
    /// without waiting for more.
    fn pull(
        &mut self,
        subscription: &str,
    ) -> impl Future<Output = Result<Vec<pb::ReceivedMessage>, Self::Error>> + Send;

    /// Ends leases at once, so the messages are ready again.
    fn release(
        &mut self,
        subscription: &str,
        ack_ids: Vec<String>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    fn acknowledge(
        &mut self,
        subscription: &str,
        ack_ids: Vec<String>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The topic of `subscription`, or `None` when there is no such
    /// subscription.
    fn topic_of(
        &mut self,
        subscription: &str,
    ) -> impl Future<Output = Result<Option<String>, Self::Error>> + Send;

    /// Publishes one message; answers its id.
    fn publish(
        &mut self,
        topic: &str,
        message: pb::PubsubMessage,
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E> {
    #[error("message {message_id} does not say where it was dead-lettered from")]
    NoSource { message_id: String },
    #[error("the source subscription {subscription} of message {message_id} no longer exists")]
    SourceGone {
        subscription: String,
        message_id: String,
    },
    #[error("the topic of {subscription} was deleted")]
    TopicDeleted { subscription: String },
    #[error(transparent)]
    PubSub(E),
}

/// One dead letter put back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replayed {
    /// Its id on the dead-letter topic.
    pub message_id: String,
    /// The id of the republished message.
    pub new_id: String,
    /// Where it was republished: the source subscription's topic.
    pub topic: String,
    /// Its `reportId` attribute.
    pub report_id: Option<String>,
}

/// What a replay did.
#[derive(Debug)]
pub struct Replay<E> {
    /// In the order they were republished.
    pub replayed: Vec<Replayed>,
    /// Requested ids that were not among the ready dead letters.
    pub not_found: Vec<String>,
    /// Why the replay stopped early, if it did; the dead letters it had not
    /// republished were given back.
    pub error: Option<ReplayError<E>>,
}

/// Replays the dead letters of `subscription` whose ids are in `ids` (all
/// that are ready when `ids` is empty): leases every ready one, gives back
/// those not chosen, then republishes each chosen one to the topic of its
/// source subscription ([`Source::subscription_name`]) as [`republished`]
/// and only then acknowledges it, so a crash in between duplicates rather
/// than loses. The first failure stops the replay; the dead letters not yet
/// republished are given back.
pub async fn replay<P: PubSub>(
    pubsub: &mut P,
    subscription: &str,
    ids: &[String],
) -> Replay<P::Error> {
    let mut outcome = Replay {
        replayed: Vec::new(),
        not_found: Vec::new(),
        error: None,
    };
    let mut leased = Vec::new();
    loop {
        match pubsub.pull(subscription).await {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => leased.extend(batch),
            Err(error) => {
                outcome.error = Some(ReplayError::PubSub(error));
                break;
            }
        }
    }
    let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let (chosen, others): (Vec<_>, Vec<_>) = leased.into_iter().partition(|r| {
        outcome.error.is_none()
            && (wanted.is_empty()
                || r.message
                    .as_ref()
                    .is_some_and(|m| wanted.contains(m.message_id.as_str())))
    });
    let mut unreplayed: Vec<String> = others.into_iter().map(|r| r.ack_id).collect();
    if !unreplayed.is_empty() {
        if let Err(error) = pubsub.release(subscription, unreplayed).await {
            outcome.error.get_or_insert(ReplayError::PubSub(error));
            return outcome;
        }
        unreplayed = Vec::new();
    }
    for received in chosen {
        let Some(dead_letter) = received.message else {
            continue;
        };
        if outcome.error.is_some() {
            unreplayed.push(received.ack_id);
            continue;
        }
        match replay_one(pubsub, subscription, &dead_letter, received.ack_id).await {
            Ok(replayed) => outcome.replayed.push(replayed),
            Err((error, republished, ack_id)) => {
                outcome.replayed.extend(republished);
                outcome.error = Some(error);
                unreplayed.push(ack_id);
            }
        }
    }
    if !unreplayed.is_empty()
        && let Err(error) = pubsub.release(subscription, unreplayed).await
    {
        outcome.error.get_or_insert(ReplayError::PubSub(error));
    }
    let done: BTreeSet<&str> = outcome
        .replayed
        .iter()
        .map(|r| r.message_id.as_str())
        .collect();
    outcome.not_found = wanted
        .iter()
        .filter(|id| !done.contains(*id))
        .map(|id| id.to_string())
        .collect();
    outcome
}

/// Republishes one dead letter and acknowledges it. On failure, the error,
/// what was republished (when only the acknowledgement failed) and the ack
/// id to give back.
async fn replay_one<P: PubSub>(
    pubsub: &mut P,
    subscription: &str,
    dead_letter: &pb::PubsubMessage,
    ack_id: String,
) -> Result<Replayed, (ReplayError<P::Error>, Option<Replayed>, String)> {
    let message_id = dead_letter.message_id.clone();
    let Some(subscription_name) = Source::of(dead_letter).subscription_name() else {
        return Err((ReplayError::NoSource { message_id }, None, ack_id));
    };
    let topic = match pubsub.topic_of(&subscription_name).await {
        Ok(Some(topic)) if topic == DELETED_TOPIC => {
            let deleted = ReplayError::TopicDeleted {
                subscription: subscription_name,
            };
            return Err((deleted, None, ack_id));
        }
        Ok(Some(topic)) => topic,
        Ok(None) => {
            let gone = ReplayError::SourceGone {
                subscription: subscription_name,
                message_id,
            };
            return Err((gone, None, ack_id));
        }
        Err(error) => return Err((ReplayError::PubSub(error), None, ack_id)),
    };
    let new_id = match pubsub.publish(&topic, republished(dead_letter)).await {
        Ok(id) => id,
        Err(error) => return Err((ReplayError::PubSub(error), None, ack_id)),
    };
    let replayed = Replayed {
        message_id,
        new_id,
        topic,
        report_id: dead_letter.attributes.get("reportId").cloned(),
    };
    match pubsub.acknowledge(subscription, vec![ack_id.clone()]).await {
        Ok(()) => Ok(replayed),
        Err(error) => Err((ReplayError::PubSub(error), Some(replayed), ack_id)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn message(id: &str, attributes: &[(&str, &str)]) -> pb::PubsubMessage {
        pb::PubsubMessage {
            data: format!("data of {id}").into_bytes(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            message_id: id.into(),
            ordering_key: "clinic-7".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_forwarded_message_says_where_it_came_from_and_replay_strips_that() {
        let mut original = message("7", &[("reportId", "12")]);
        original.publish_time = Some(prost_types::Timestamp {
            seconds: 1_714_564_800,
            nanos: 0,
        });
        let sub = SubscriptionName::parse("projects/p/subscriptions/email").unwrap();
        let dead = forwarded(&original, &sub, 5, "push failed: HTTP 422");
        let source = Source::of(&dead);
        assert_eq!(
            source,
            Source {
                subscription: Some("email"),
                project: Some("p"),
                delivery_count: Some("5"),
                publish_time: Some("2024-05-01T12:00:00Z"),
                error: Some("push failed: HTTP 422"),
            }
        );
        assert_eq!(
            source.subscription_name().as_deref(),
            Some("projects/p/subscriptions/email")
        );
        assert!(dead.message_id.is_empty() && dead.publish_time.is_none());
        let back = republished(&dead);
        assert_eq!(back.data, original.data);
        assert_eq!(back.attributes, original.attributes);
        assert_eq!(back.ordering_key, original.ordering_key);
    }

    /// Pub/Sub in memory: dead letters on `dead`, subscriptions' topics, and
    /// what was published, acknowledged and given back.
    #[derive(Default)]
    struct Fake {
        ready: Vec<pb::ReceivedMessage>,
        topics: BTreeMap<String, String>,
        published: Vec<(String, pb::PubsubMessage)>,
        acked: Vec<String>,
        released: Vec<String>,
        fail_publish_to: Option<String>,
    }

    impl Fake {
        fn with(dead_letters: Vec<pb::PubsubMessage>) -> Fake {
            Fake {
                ready: dead_letters
                    .into_iter()
                    .map(|m| pb::ReceivedMessage {
                        ack_id: format!("ack-{}", m.message_id),
                        message: Some(m),
                        delivery_attempt: 0,
                    })
                    .collect(),
                topics: [
                    (
                        "projects/p/subscriptions/email",
                        "projects/p/topics/reports",
                    ),
                    ("projects/p/subscriptions/audit", "projects/p/topics/audits"),
                    ("projects/p/subscriptions/orphan", DELETED_TOPIC),
                ]
                .into_iter()
                .map(|(s, t)| (s.to_string(), t.to_string()))
                .collect(),
                ..Fake::default()
            }
        }
    }

    impl PubSub for Fake {
        type Error = String;

        async fn pull(&mut self, _: &str) -> Result<Vec<pb::ReceivedMessage>, String> {
            let n = self.ready.len().min(1);
            Ok(self.ready.drain(..n).collect())
        }

        async fn release(&mut self, _: &str, ack_ids: Vec<String>) -> Result<(), String> {
            self.released.extend(ack_ids);
            Ok(())
        }

        async fn acknowledge(&mut self, _: &str, ack_ids: Vec<String>) -> Result<(), String> {
            self.acked.extend(ack_ids);
            Ok(())
        }

        async fn topic_of(&mut self, subscription: &str) -> Result<Option<String>, String> {
            Ok(self.topics.get(subscription).cloned())
        }

        async fn publish(
            &mut self,
            topic: &str,
            message: pb::PubsubMessage,
        ) -> Result<String, String> {
            if self.fail_publish_to.as_deref() == Some(topic) {
                return Err(format!("{topic} is down"));
            }
            self.published.push((topic.to_string(), message));
            Ok(format!("new-{}", self.published.len()))
        }
    }

    fn dead(id: &str, source: &str) -> pb::PubsubMessage {
        message(
            id,
            &[
                ("reportId", id),
                (SOURCE_PROJECT, "p"),
                (SOURCE_SUBSCRIPTION, source),
                (DELIVERY_COUNT, "5"),
            ],
        )
    }

    fn run(fake: &mut Fake, ids: &[&str]) -> Replay<String> {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        futures::executor::block_on(replay(fake, "projects/p/subscriptions/dead", &ids))
    }

    #[test]
    fn each_dead_letter_goes_back_to_its_source_subscriptions_topic() {
        let mut fake = Fake::with(vec![dead("1", "email"), dead("2", "audit")]);
        let outcome = run(&mut fake, &[]);
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        let topics: Vec<(&str, &str)> = fake
            .published
            .iter()
            .map(|(t, m)| (t.as_str(), m.attributes["reportId"].as_str()))
            .collect();
        assert_eq!(
            topics,
            [
                ("projects/p/topics/reports", "1"),
                ("projects/p/topics/audits", "2")
            ]
        );
        assert!(fake.published.iter().all(|(_, m)| {
            m.attributes.keys().all(|k| !is_source_attribute(k)) && m.ordering_key == "clinic-7"
        }));
        assert_eq!(fake.acked, ["ack-1", "ack-2"]);
        assert!(fake.released.is_empty());
        assert_eq!(outcome.replayed[1].new_id, "new-2");
        assert_eq!(outcome.replayed[1].report_id.as_deref(), Some("2"));
    }

    #[test]
    fn only_the_chosen_are_replayed_and_the_others_given_back() {
        let mut fake = Fake::with(vec![dead("1", "email"), dead("2", "email")]);
        let outcome = run(&mut fake, &["2", "9"]);
        assert_eq!(fake.acked, ["ack-2"]);
        assert_eq!(fake.released, ["ack-1"]);
        assert_eq!(outcome.not_found, ["9"]);
        assert!(outcome.error.is_none());
    }

    #[test]
    fn the_first_failure_stops_the_replay_and_gives_the_rest_back() {
        let cases: [(&str, Option<&str>, &str); 4] = [
            ("nowhere", None, "no longer exists"),
            ("orphan", None, "was deleted"),
            ("email", Some("projects/p/topics/reports"), "is down"),
            ("", None, "does not say where"),
        ];
        for (source, down, why) in cases {
            let mut broken = dead("2", source);
            if source.is_empty() {
                broken.attributes.remove(SOURCE_SUBSCRIPTION);
            }
            let mut fake = Fake::with(vec![dead("1", "audit"), broken, dead("3", "audit")]);
            fake.fail_publish_to = down.map(str::to_string);
            let outcome = run(&mut fake, &[]);
            let error = outcome.error.expect("a failure").to_string();
            assert!(error.contains(why), "{source}: {error}");
            assert_eq!(fake.acked, ["ack-1"], "{source}");
            assert_eq!(fake.released, ["ack-2", "ack-3"], "{source}");
            assert_eq!(outcome.replayed.len(), 1, "{source}");
        }
    }
}
