//! The broker keeps what it acknowledged: a real `labrelay broker` process is
//! killed with SIGKILL in the middle of a stream of publishes and restarted
//! on the same data directory. Every publish that was answered must be
//! delivered afterwards, acknowledged messages must not come back, and
//! messages that were leased but not acknowledged must be redelivered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
use labrelay_testkit::process::Process;
use pb::publisher_client::PublisherClient;
use pb::subscriber_client::SubscriberClient;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::LABRELAY;

const TOPIC: &str = "projects/durability/topics/reports";
const SUBSCRIPTION: &str = "projects/durability/subscriptions/reports-sub";

async fn connect(broker: &Process) -> Channel {
    Channel::from_shared(broker.url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Pulls what is ready now, without waiting for more.
async fn pull_all(channel: Channel, max: i32) -> Vec<pb::ReceivedMessage> {
    let mut client = SubscriberClient::new(channel);
    #[allow(deprecated)]
    let request = pb::PullRequest {
        subscription: SUBSCRIPTION.into(),
        max_messages: max,
        return_immediately: true,
    };
    client
        .pull(request)
        .await
        .unwrap()
        .into_inner()
        .received_messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Process::broker(LABRELAY, dir.path());
    let channel = connect(&broker).await;
    let mut publisher = PublisherClient::new(channel.clone());
    let mut subscriber = SubscriberClient::new(channel.clone());
    publisher
        .create_topic(pb::Topic {
            name: TOPIC.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    subscriber
        .create_subscription(pb::Subscription {
            name: SUBSCRIPTION.into(),
            topic: TOPIC.into(),
            ack_deadline_seconds: 600,
            ..Default::default()
        })
        .await
        .unwrap();

    // Before the stream: some messages acknowledged, some only leased.
    let ids = publisher
        .publish(pb::PublishRequest {
            topic: TOPIC.into(),
            messages: (0..20)
                .map(|i| pb::PubsubMessage {
                    data: format!("early-{i}").into_bytes(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .message_ids;
    assert_eq!(ids.len(), 20);
    let leased = pull_all(channel.clone(), 20).await;
    assert_eq!(leased.len(), 20);
    let (acked, unacked) = leased.split_at(10);
    subscriber
        .acknowledge(pb::AcknowledgeRequest {
            subscription: SUBSCRIPTION.into(),
            ack_ids: acked.iter().map(|m| m.ack_id.clone()).collect(),
        })
        .await
        .unwrap();
    let data = |m: &pb::ReceivedMessage| {
        String::from_utf8(m.message.as_ref().unwrap().data.clone()).unwrap()
    };
    let acked: BTreeSet<String> = acked.iter().map(data).collect();
    let unacked: BTreeSet<String> = unacked.iter().map(data).collect();

    // The stream: 16 publishers, one message per request; the broker is
    // killed once 300 publishes have been answered.
    let answered = Arc::new(Mutex::new(BTreeMap::<String, String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let kill_at = 300;
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let mut publisher = publisher.clone();
        let answered = answered.clone();
        let count = count.clone();
        let mut killed = killed_rx.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let payload = format!("stream-{worker}-{i}");
                let request = pb::PublishRequest {
                    topic: TOPIC.into(),
                    messages: vec![pb::PubsubMessage {
                        data: payload.clone().into_bytes(),
                        ..Default::default()
                    }],
                };
                tokio::select! {
                    result = publisher.publish(request) => match result {
                        Ok(response) => {
                            let id = response.into_inner().message_ids.remove(0);
                            answered.lock().await.insert(payload, id);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => return,
                    },
                    _ = killed.changed() => return,
                }
            }
        }));
    }
    while count.load(Ordering::SeqCst) < kill_at {
        tokio::task::yield_now().await;
    }
    broker.kill();
    killed_tx.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let answered = answered.lock().await.clone();
    assert!(answered.len() >= kill_at);

    // Restart on the same directory and drain.
    let broker = Process::broker(LABRELAY, dir.path());
    let channel = connect(&broker).await;
    let mut subscriber = SubscriberClient::new(channel.clone());
    let mut delivered = BTreeMap::<String, String>::new();
    loop {
        let batch = pull_all(channel.clone(), 1000).await;
        if batch.is_empty() {
            break;
        }
        subscriber
            .acknowledge(pb::AcknowledgeRequest {
                subscription: SUBSCRIPTION.into(),
                ack_ids: batch.iter().map(|m| m.ack_id.clone()).collect(),
            })
            .await
            .unwrap();
        for m in &batch {
            delivered.insert(data(m), m.message.as_ref().unwrap().message_id.clone());
        }
    }
    let lost: Vec<_> = answered
        .keys()
        .filter(|p| !delivered.contains_key(*p))
        .collect();
    assert!(
        lost.is_empty(),
        "{} answered publishes were lost: {lost:?}",
        lost.len()
    );
    for (payload, id) in &answered {
        assert_eq!(&delivered[payload], id, "message id survives the restart");
    }
    let missing_unacked: Vec<_> = unacked
        .iter()
        .filter(|p| !delivered.contains_key(*p))
        .collect();
    assert!(
        missing_unacked.is_empty(),
        "leased, unacked messages are redelivered: {missing_unacked:?}"
    );
    let came_back: Vec<_> = acked
        .iter()
        .filter(|p| delivered.contains_key(*p))
        .collect();
    assert!(
        came_back.is_empty(),
        "acknowledged messages stay acknowledged: {came_back:?}"
    );
    eprintln!(
        "answered before SIGKILL: {}, delivered after restart: {} (lost 0)",
        answered.len(),
        delivered.len()
    );
}
