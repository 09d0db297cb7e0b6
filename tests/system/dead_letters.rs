//! `labrelay dead-letters list` and `replay` against a real broker process:
//! a report whose channel can never take it is parked after its attempts,
//! listed with why, and replayed to the source topic; and the console and
//! the CLI replay the same dead letters to the same topics.

use std::process::Command;

use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
use labrelay_testkit::process::Process;
use pb::publisher_client::PublisherClient;
use pb::subscriber_client::SubscriberClient;

use crate::LABRELAY;

const PROJECT: &str = "dead-letters";

fn labrelay(args: &[&str], broker: &Process) -> (bool, String) {
    let output = Command::new(LABRELAY)
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
    let broker = Process::broker(LABRELAY, dir.path());
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
        failing_push(
            format!("projects/{PROJECT}/subscriptions/email-service-sub"),
            topic.clone(),
            closed,
            &dead,
        ),
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

/// A broker process with two source topics whose push subscriptions can
/// never deliver, both dead-lettering to `new-lab-report-dead-letter`, and
/// a pull subscription (`audit-<topic>`) on each source topic that sees
/// everything published to it.
struct Parked {
    broker: Process,
    subscriber: SubscriberClient<tonic::transport::Channel>,
    _dir: tempfile::TempDir,
}

const SOURCES: [&str; 2] = ["new-lab-report", "lab-reports-eu"];
const DEAD_SUB: &str = "new-lab-report-dead-letter-sub";

/// A push subscription of `topic` to `closed` (nothing listens there),
/// redelivering at once, that dead-letters to `dead` after 5 attempts.
fn failing_push(
    name: String,
    topic: String,
    closed: std::net::SocketAddr,
    dead: &str,
) -> pb::Subscription {
    let zero = Some(prost_types::Duration::default());
    pb::Subscription {
        name,
        topic,
        push_config: Some(pb::PushConfig {
            push_endpoint: format!("http://{closed}/"),
            ..Default::default()
        }),
        retry_policy: Some(pb::RetryPolicy {
            minimum_backoff: zero,
            maximum_backoff: zero,
        }),
        dead_letter_policy: Some(pb::DeadLetterPolicy {
            dead_letter_topic: dead.to_string(),
            max_delivery_attempts: 5,
        }),
        ..Default::default()
    }
}

fn name(kind: &str, id: &str) -> String {
    format!("projects/{PROJECT}/{kind}/{id}")
}

impl Parked {
    /// Starts the broker, publishes one message to each source topic and
    /// waits until both are dead letters, ready on the dead-letter
    /// subscription.
    async fn start() -> Parked {
        let dir = tempfile::tempdir().unwrap();
        let broker = Process::broker(LABRELAY, dir.path());
        let channel = tonic::transport::Channel::from_shared(broker.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut publisher = PublisherClient::new(channel.clone());
        let mut subscriber = SubscriberClient::new(channel);
        let dead = name("topics", "new-lab-report-dead-letter");
        for topic in SOURCES.map(|t| name("topics", t)).iter().chain([&dead]) {
            publisher
                .create_topic(pb::Topic {
                    name: topic.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut subscriptions = vec![pb::Subscription {
            name: name("subscriptions", DEAD_SUB),
            topic: dead.clone(),
            ..Default::default()
        }];
        for source in SOURCES {
            subscriptions.push(pb::Subscription {
                name: name("subscriptions", &format!("audit-{source}")),
                topic: name("topics", source),
                ..Default::default()
            });
            subscriptions.push(failing_push(
                name("subscriptions", &format!("push-{source}")),
                name("topics", source),
                closed,
                &dead,
            ));
        }
        for sub in subscriptions {
            subscriber.create_subscription(sub).await.unwrap();
        }
        for (i, source) in SOURCES.iter().enumerate() {
            let report = (20 + i).to_string();
            publisher
                .publish(pb::PublishRequest {
                    topic: name("topics", source),
                    messages: vec![pb::PubsubMessage {
                        data: format!(r#"{{"id": {report}}}"#).into_bytes(),
                        attributes: [
                            ("reportId".to_string(), report),
                            ("lab".to_string(), "north".to_string()),
                        ]
                        .into(),
                        ordering_key: format!("clinic-{i}"),
                        ..Default::default()
                    }],
                })
                .await
                .unwrap();
        }
        let mut parked = Parked {
            broker,
            subscriber,
            _dir: dir,
        };
        let leased = parked.pull(DEAD_SUB, SOURCES.len()).await;
        parked
            .subscriber
            .modify_ack_deadline(pb::ModifyAckDeadlineRequest {
                subscription: name("subscriptions", DEAD_SUB),
                ack_ids: leased.into_iter().map(|r| r.ack_id).collect(),
                ack_deadline_seconds: 0,
            })
            .await
            .unwrap();
        parked
    }

    /// Waits for `n` messages on `subscription` (Pull waits for one), for
    /// 30 s at most.
    async fn pull(&mut self, subscription: &str, n: usize) -> Vec<pb::ReceivedMessage> {
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut got = Vec::new();
        while got.len() < n {
            assert!(
                std::time::Instant::now() < give_up,
                "{subscription} has {} messages, not {n}: {got:?}",
                got.len()
            );
            got.extend(
                self.subscriber
                    .pull(pb::PullRequest {
                        subscription: name("subscriptions", subscription),
                        max_messages: 10,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .received_messages,
            );
        }
        got
    }

    /// What reached each source topic after its original message, as
    /// (topic, data, attributes, ordering key), one per source topic.
    async fn republished(&mut self) -> Vec<(String, String, Vec<(String, String)>, String)> {
        let mut all = Vec::new();
        for source in SOURCES {
            let seen = self.pull(&format!("audit-{source}"), 2).await;
            assert_eq!(seen.len(), 2, "{source}: {seen:?}");
            let replay = seen[1].message.clone().unwrap();
            let mut attributes: Vec<_> = replay.attributes.into_iter().collect();
            attributes.sort();
            all.push((
                name("topics", source),
                String::from_utf8(replay.data).unwrap(),
                attributes,
                replay.ordering_key,
            ));
        }
        // Nothing was replayed twice.
        for source in SOURCES {
            let extra = self
                .subscriber
                .pull(pb::PullRequest {
                    subscription: name("subscriptions", &format!("audit-{source}")),
                    max_messages: 10,
                    #[allow(deprecated)]
                    return_immediately: true,
                })
                .await
                .unwrap()
                .into_inner()
                .received_messages;
            assert!(extra.is_empty(), "{source}: {extra:?}");
        }
        all
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_and_the_cli_replay_dead_letters_alike() {
    let (mut by_cli, mut by_console) = tokio::join!(Parked::start(), Parked::start());

    let (ok, printed) = labrelay(&["dead-letters", "replay"], &by_cli.broker);
    assert!(ok, "{printed}");
    assert_eq!(printed.lines().count(), SOURCES.len(), "{printed}");

    let answer = reqwest::Client::new()
        .post(format!(
            "{}/console/api/dead-letters/replay",
            by_console.broker.url()
        ))
        .header("content-type", "application/json")
        .header("x-labrelay-console", "1")
        .body(format!(
            r#"{{"subscription": "{}"}}"#,
            name("subscriptions", DEAD_SUB)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        answer["replayed"].as_array().unwrap().len(),
        SOURCES.len(),
        "{answer}"
    );

    let cli = by_cli.republished().await;
    let console = by_console.republished().await;
    assert_eq!(cli, console);
    // Each went back to its own source topic, as it was published there.
    for (i, (topic, data, attributes, key)) in cli.iter().enumerate() {
        let report = (20 + i).to_string();
        assert_eq!(topic, &name("topics", SOURCES[i]));
        assert_eq!(data, &format!(r#"{{"id": {report}}}"#));
        assert_eq!(
            attributes,
            &[
                ("lab".to_string(), "north".to_string()),
                ("reportId".to_string(), report),
            ]
        );
        assert_eq!(key, &format!("clinic-{i}"));
    }
}
