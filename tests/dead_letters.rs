//! `labrelay dead-letters list` and `replay` against a real broker process:
//! a report whose channel can never take it is parked after its attempts,
//! listed with why, and replayed to the source topic.

mod support;

use std::process::Command;

use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
use pb::publisher_client::PublisherClient;
use pb::subscriber_client::SubscriberClient;
use support::Process;

const PROJECT: &str = "dead-letters";

fn labrelay(args: &[&str], broker: &Process) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_labrelay"))
        .args(args)
        .args(["--broker", &broker.addr.to_string(), "--project", PROJECT])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_reports_are_listed_with_the_reason_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Process::broker(dir.path());
    let channel = tonic::transport::Channel::from_shared(broker.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut publisher = PublisherClient::new(channel.clone());
    let mut subscriber = SubscriberClient::new(channel);
    let topic = format!("projects/{PROJECT}/topics/new-lab-report");
    let dead = format!("projects/{PROJECT}/topics/new-lab-report-dead-letter");
    let dead_sub = format!("projects/{PROJECT}/subscriptions/new-lab-report-dead-letter-sub");
    let audit = format!("projects/{PROJECT}/subscriptions/audit");
    for name in [&topic, &dead] {
        publisher
            .create_topic(pb::Topic {
                name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let zero = Some(prost_types::Duration {
        seconds: 0,
        nanos: 0,
    });
    for sub in [
        pb::Subscription {
            name: dead_sub.clone(),
            topic: dead.clone(),
            ..Default::default()
        },
        pb::Subscription {
            name: audit.clone(),
            topic: topic.clone(),
            ..Default::default()
        },
        pb::Subscription {
            name: format!("projects/{PROJECT}/subscriptions/email-service-sub"),
            topic: topic.clone(),
            push_config: Some(pb::PushConfig {
                push_endpoint: format!("http://{closed}/"),
                ..Default::default()
            }),
            retry_policy: Some(pb::RetryPolicy {
                minimum_backoff: zero,
                maximum_backoff: zero,
            }),
            dead_letter_policy: Some(pb::DeadLetterPolicy {
                dead_letter_topic: dead.clone(),
                max_delivery_attempts: 5,
            }),
            ..Default::default()
        },
    ] {
        subscriber.create_subscription(sub).await.unwrap();
    }
    drop(std::net::TcpListener::bind(closed));
    publisher
        .publish(pb::PublishRequest {
            topic: topic.clone(),
            messages: vec![pb::PubsubMessage {
                data: br#"{"id": 12}"#.to_vec(),
                attributes: [("reportId".to_string(), "12".to_string())].into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap();

    // Wait (Pull blocks until a message arrives) for the dead letter, then
    // put it back for the commands to find.
    let parked = loop {
        let got = subscriber
            .pull(pb::PullRequest {
                subscription: dead_sub.clone(),
                max_messages: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .received_messages;
        if let Some(first) = got.into_iter().next() {
            break first;
        }
    };
    subscriber
        .modify_ack_deadline(pb::ModifyAckDeadlineRequest {
            subscription: dead_sub.clone(),
            ack_ids: vec![parked.ack_id],
            ack_deadline_seconds: 0,
        })
        .await
        .unwrap();
    let dead_id = parked.message.unwrap().message_id;

    let (ok, listed) = labrelay(&["dead-letters", "list"], &broker);
    assert!(ok, "{listed}");
    let line = listed
        .lines()
        .find(|l| l.starts_with(&dead_id))
        .unwrap_or_else(|| panic!("{listed}"));
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields[1], "12", "report id: {line}");
    assert_eq!(fields[2], "email-service-sub", "{line}");
    assert_eq!(fields[3], "5", "attempts: {line}");
    assert!(
        fields[5].starts_with("push failed: connection failed"),
        "{line}"
    );
    // Listing leaves it parked.
    let (_, again) = labrelay(&["dead-letters", "list"], &broker);
    assert!(
        again
            .lines()
            .any(|l| l.starts_with(&format!("{dead_id}\t"))),
        "{again}"
    );

    let (ok, replayed) = labrelay(&["dead-letters", "replay", "--id", &dead_id], &broker);
    assert!(ok, "{replayed}");
    let (_, after) = labrelay(&["dead-letters", "list"], &broker);
    assert!(
        !after
            .lines()
            .any(|l| l.starts_with(&format!("{dead_id}\t"))),
        "replayed letters leave the dead-letter topic ({dead_id}): {after}"
    );

    // The audit subscription saw the original publish and the replay, the
    // replay without the dead-letter attributes.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let got = subscriber
            .pull(pb::PullRequest {
                subscription: audit.clone(),
                max_messages: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .received_messages;
        seen.extend(got.into_iter().map(|r| r.message.unwrap()));
    }
    let replay = &seen[1];
    assert_eq!(replay.data, br#"{"id": 12}"#);
    assert_eq!(
        replay.attributes.get("reportId").map(String::as_str),
        Some("12")
    );
    assert!(
        replay
            .attributes
            .keys()
            .all(|k| !k.starts_with("CloudPubSubDeadLetter")),
        "{replay:?}"
    );
}
