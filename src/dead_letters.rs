//! `labrelay dead-letters`: what was parked on `new-lab-report-dead-letter`
//! (by a push receiver that can never send it, or by the broker once its
//! attempts ran out), and putting it back.
//!
//! Both commands read the dead-letter subscription through the Pub/Sub API,
//! so they work against our broker and against Google Cloud Pub/Sub alike.
//! `list` leaves every message where it was (it nacks what it read);
//! `replay` runs [`dead_letter::replay`], as the broker's console does: each
//! chosen dead letter is republished to the topic of the subscription it was
//! dead-lettered from, without the `CloudPubSubDeadLetterSource*`
//! attributes, and only then acknowledged on the dead-letter subscription,
//! so a crash in between duplicates rather than loses.

use anyhow::Context as _;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
use labrelay_broker::dead_letter::{self, Source};
use pb::publisher_client::PublisherClient;
use pb::subscriber_client::SubscriberClient;
use tonic::transport::Channel;

use labrelay::up::DEAD_LETTER_SUBSCRIPTION;

pub struct Target {
    /// `host:port` of the broker.
    pub broker: String,
    pub project: String,
}

async fn connect(target: &Target) -> anyhow::Result<Channel> {
    Channel::from_shared(format!("http://{}", target.broker))?
        .connect()
        .await
        .with_context(|| format!("connecting to the broker at {}", target.broker))
}

/// Reads every dead letter that is ready now, leasing it.
async fn read_all(
    client: &mut SubscriberClient<Channel>,
    subscription: &str,
) -> anyhow::Result<Vec<pb::ReceivedMessage>> {
    let mut all = Vec::new();
    loop {
        #[allow(deprecated)]
        let request = pb::PullRequest {
            subscription: subscription.to_string(),
            max_messages: 1000,
            return_immediately: true,
        };
        let batch = client
            .pull(request)
            .await
            .context("pulling dead letters")?
            .into_inner()
            .received_messages;
        if batch.is_empty() {
            return Ok(all);
        }
        all.extend(batch);
    }
}

async fn release(
    client: &mut SubscriberClient<Channel>,
    subscription: &str,
    ack_ids: Vec<String>,
) -> anyhow::Result<()> {
    if ack_ids.is_empty() {
        return Ok(());
    }
    client
        .modify_ack_deadline(pb::ModifyAckDeadlineRequest {
            subscription: subscription.to_string(),
            ack_ids,
            ack_deadline_seconds: 0,
        })
        .await
        .context("releasing dead letters")?;
    Ok(())
}

fn or_dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// Prints one line per parked message: id, report, source subscription,
/// attempts, when it was first published, and why its last delivery failed.
pub async fn list(target: &Target) -> anyhow::Result<()> {
    let mut client = SubscriberClient::new(connect(target).await?);
    let subscription = format!(
        "projects/{}/subscriptions/{DEAD_LETTER_SUBSCRIPTION}",
        target.project
    );
    let parked = read_all(&mut client, &subscription).await?;
    println!("message-id\treport-id\tsubscription\tattempts\tpublished\tlast error");
    for received in &parked {
        let Some(m) = &received.message else { continue };
        let source = Source::of(m);
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            m.message_id,
            or_dash(m.attributes.get("reportId").map(String::as_str)),
            or_dash(source.subscription),
            or_dash(source.delivery_count),
            or_dash(source.publish_time),
            or_dash(source.error),
        );
    }
    eprintln!("{} dead letter(s)", parked.len());
    release(
        &mut client,
        &subscription,
        parked.into_iter().map(|m| m.ack_id).collect(),
    )
    .await
}

/// Republishes the parked messages with the given ids (all when `ids` is
/// empty) to their source topics ([`dead_letter::replay`]).
pub async fn replay(target: &Target, ids: &[String]) -> anyhow::Result<()> {
    let channel = connect(target).await?;
    let mut pubsub = Grpc {
        subscriber: SubscriberClient::new(channel.clone()),
        publisher: PublisherClient::new(channel),
    };
    let subscription = format!(
        "projects/{}/subscriptions/{DEAD_LETTER_SUBSCRIPTION}",
        target.project
    );
    let outcome = dead_letter::replay(&mut pubsub, &subscription, ids).await;
    for replayed in &outcome.replayed {
        println!(
            "{}\treplayed as {}\tto {}\treport {}",
            replayed.message_id,
            replayed.new_id,
            replayed.topic,
            or_dash(replayed.report_id.as_deref()),
        );
    }
    if let Some(error) = outcome.error {
        return Err(anyhow::Error::new(error).context(format!(
            "replaying dead letters of {subscription} ({} replayed before)",
            outcome.replayed.len()
        )));
    }
    if !outcome.not_found.is_empty() {
        anyhow::bail!(
            "{} of the {} requested dead letters were not found: {}",
            outcome.not_found.len(),
            ids.len(),
            outcome.not_found.join(", ")
        );
    }
    eprintln!("{} dead letter(s) replayed", outcome.replayed.len());
    Ok(())
}

/// The Pub/Sub calls of a replay, made over gRPC.
struct Grpc {
    subscriber: SubscriberClient<Channel>,
    publisher: PublisherClient<Channel>,
}

impl dead_letter::PubSub for Grpc {
    type Error = tonic::Status;

    async fn pull(
        &mut self,
        subscription: &str,
    ) -> Result<Vec<pb::ReceivedMessage>, tonic::Status> {
        #[allow(deprecated)]
        let request = pb::PullRequest {
            subscription: subscription.to_string(),
            max_messages: 1000,
            return_immediately: true,
        };
        Ok(self
            .subscriber
            .pull(request)
            .await?
            .into_inner()
            .received_messages)
    }

    async fn release(
        &mut self,
        subscription: &str,
        ack_ids: Vec<String>,
    ) -> Result<(), tonic::Status> {
        self.subscriber
            .modify_ack_deadline(pb::ModifyAckDeadlineRequest {
                subscription: subscription.to_string(),
                ack_ids,
                ack_deadline_seconds: 0,
            })
            .await?;
        Ok(())
    }

    async fn acknowledge(
        &mut self,
        subscription: &str,
        ack_ids: Vec<String>,
    ) -> Result<(), tonic::Status> {
        self.subscriber
            .acknowledge(pb::AcknowledgeRequest {
                subscription: subscription.to_string(),
                ack_ids,
            })
            .await?;
        Ok(())
    }

    async fn topic_of(&mut self, subscription: &str) -> Result<Option<String>, tonic::Status> {
        let request = pb::GetSubscriptionRequest {
            subscription: subscription.to_string(),
        };
        match self.subscriber.get_subscription(request).await {
            Ok(found) => Ok(Some(found.into_inner().topic)),
            // A name that cannot be a subscription's names none.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::InvalidArgument
                ) =>
            {
                Ok(None)
            }
            Err(status) => Err(status),
        }
    }

    async fn publish(
        &mut self,
        topic: &str,
        message: pb::PubsubMessage,
    ) -> Result<String, tonic::Status> {
        let ids = self
            .publisher
            .publish(pb::PublishRequest {
                topic: topic.to_string(),
                messages: vec![message],
            })
            .await?
            .into_inner()
            .message_ids;
        Ok(ids.into_iter().next().unwrap_or_default())
    }
}
