//! What `labrelay up` creates on the broker, over the broker's gRPC API
//! for a broker running as its own process, paced for a test.

use std::time::Duration;

use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
use labrelay::up::{self, DEAD_LETTER_TOPIC, TOPIC};

/// The reports topic, the dead-letter topic with its pull subscription,
/// and one OIDC-authenticated push subscription per channel, all as `up`
/// builds them ([`up::push_subscription`], [`up::dead_letter_subscription`];
/// the push tokens name [`up::invoker`] of the project), except for the
/// pacing: the ack deadline, the retry policy's backoffs and the delivery
/// attempts before a message is dead-lettered are the test's.
pub struct Topology<'a> {
    pub project: &'a str,
    pub email_endpoint: String,
    pub sms_endpoint: String,
    pub ack_deadline_secs: i32,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub max_delivery_attempts: i32,
}

impl Topology<'_> {
    /// Creates it on the broker at `broker_url`.
    pub async fn create(&self, broker_url: &str) {
        let channel = tonic::transport::Channel::from_shared(broker_url.to_string())
            .expect("a broker URL")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to the broker at {broker_url}: {e}"));
        let mut publisher = pb::publisher_client::PublisherClient::new(channel.clone());
        let mut subscriber = pb::subscriber_client::SubscriberClient::new(channel);
        let project = self.project;
        for topic in [TOPIC, DEAD_LETTER_TOPIC] {
            publisher
                .create_topic(pb::Topic {
                    name: format!("projects/{project}/topics/{topic}"),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("creating {topic}: {e}"));
        }
        subscriber
            .create_subscription(up::dead_letter_subscription(project))
            .await
            .expect("creating the dead-letter subscription");
        for (id, endpoint) in [
            ("email-service-sub", &self.email_endpoint),
            ("sms-service-sub", &self.sms_endpoint),
        ] {
            subscriber
                .create_subscription(self.paced(up::push_subscription(project, id, endpoint)))
                .await
                .unwrap_or_else(|e| panic!("creating {id}: {e}"));
        }
    }

    /// `subscription` with this test's pacing instead of `up`'s.
    fn paced(&self, mut subscription: pb::Subscription) -> pb::Subscription {
        let duration = |d: Duration| {
            Some(prost_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            })
        };
        subscription.ack_deadline_seconds = self.ack_deadline_secs;
        subscription.retry_policy = Some(pb::RetryPolicy {
            minimum_backoff: duration(self.min_backoff),
            maximum_backoff: duration(self.max_backoff),
        });
        let dead_letter = subscription
            .dead_letter_policy
            .as_mut()
            .expect("up's push subscriptions dead-letter");
        dead_letter.max_delivery_attempts = self.max_delivery_attempts;
        subscription
    }
}
