//! `labrelay dead-letters`: what the broker parked on
//! `new-lab-report-dead-letter`, and putting it back.
//!
//! Both commands read the dead-letter subscription through the Pub/Sub API,
//! so they work against our broker and against Google Cloud Pub/Sub alike.
//! `list` leaves every message where it was (it nacks what it read);
//! `replay` republishes the chosen ones to `new-lab-report`, without the
//! `CloudPubSubDeadLetterSource*` attributes, and only then acknowledges them
//! on the dead-letter subscription, so a crash in between duplicates rather
//! than loses.

use anyhow::Context as _;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
use pb::publisher_client::PublisherClient;
use pb::subscriber_client::SubscriberClient;
use tonic::transport::Channel;

use labrelay::up::{DEAD_LETTER_SUBSCRIPTION, TOPIC};

const SOURCE_PREFIX: &str = "CloudPubSubDeadLetterSource";

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

fn attribute<'a>(message: &'a pb::PubsubMessage, key: &str) -> &'a str {
    message
        .attributes
        .get(key)
        .map(String::as_str)
        .unwrap_or("-")
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
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            m.message_id,
            attribute(m, "reportId"),
            attribute(m, "CloudPubSubDeadLetterSourceSubscription"),
            attribute(m, "CloudPubSubDeadLetterSourceDeliveryCount"),
            attribute(m, "CloudPubSubDeadLetterSourceTopicPublishTime"),
            attribute(m, "CloudPubSubDeadLetterSourceDeliveryErrorMessage"),
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
/// empty) to the source topic.
pub async fn replay(target: &Target, ids: &[String]) -> anyhow::Result<()> {
    let channel = connect(target).await?;
    let mut subscriber = SubscriberClient::new(channel.clone());
    let mut publisher = PublisherClient::new(channel);
    let subscription = format!(
        "projects/{}/subscriptions/{DEAD_LETTER_SUBSCRIPTION}",
        target.project
    );
    let topic = format!("projects/{}/topics/{TOPIC}", target.project);
    let parked = read_all(&mut subscriber, &subscription).await?;
    let (chosen, others): (Vec<_>, Vec<_>) = parked.into_iter().partition(|r| {
        ids.is_empty()
            || r.message
                .as_ref()
                .is_some_and(|m| ids.contains(&m.message_id))
    });
    release(
        &mut subscriber,
        &subscription,
        others.into_iter().map(|m| m.ack_id).collect(),
    )
    .await?;
    let mut replayed = 0;
    for received in chosen {
        let Some(original) = received.message else {
            continue;
        };
        let message = pb::PubsubMessage {
            data: original.data.clone(),
            attributes: original
                .attributes
                .iter()
                .filter(|(k, _)| !k.starts_with(SOURCE_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ordering_key: original.ordering_key.clone(),
            ..Default::default()
        };
        let ids = publisher
            .publish(pb::PublishRequest {
                topic: topic.clone(),
                messages: vec![message],
            })
            .await
            .with_context(|| format!("republishing dead letter {}", original.message_id))?
            .into_inner()
            .message_ids;
        subscriber
            .acknowledge(pb::AcknowledgeRequest {
                subscription: subscription.clone(),
                ack_ids: vec![received.ack_id],
            })
            .await
            .with_context(|| format!("acknowledging dead letter {}", original.message_id))?;
        println!(
            "{}\treplayed as {}\treport {}",
            original.message_id,
            ids.first().map(String::as_str).unwrap_or("?"),
            attribute(&original, "reportId")
        );
        replayed += 1;
    }
    if !ids.is_empty() && replayed < ids.len() {
        anyhow::bail!(
            "{} of the {} requested dead letters were not found",
            ids.len() - replayed,
            ids.len()
        );
    }
    eprintln!("{replayed} dead letter(s) replayed to {topic}");
    Ok(())
}
