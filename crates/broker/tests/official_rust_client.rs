//! The official `google-cloud-pubsub` crate against this broker: its admin
//! clients (REST/JSON), its Publisher (gRPC Publish, batching) and its
//! Subscriber (StreamingPull with unary acks), pointed at the broker with
//! `with_endpoint` and anonymous credentials, exactly as a user would.

use std::collections::HashSet;
use std::time::Duration;

use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::Message;
use labrelay_broker::{Broker, BrokerConfig};

async fn start_broker() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path(), addr)).unwrap();
    tokio::spawn(broker.serve(listener, std::future::pending()));
    (format!("http://{addr}"), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_rust_client_admin_publish_and_subscribe() {
    let (endpoint, _dir) = start_broker().await;
    let topic = "projects/official/topics/lab-reports";
    let subscription = "projects/official/subscriptions/lab-reports-sub";

    let topics = TopicAdmin::builder()
        .with_endpoint(&endpoint)
        .with_credentials(Anonymous::new().build())
        .build()
        .await
        .unwrap();
    let created = topics.create_topic().set_name(topic).send().await.unwrap();
    assert_eq!(created.name, topic);
    let fetched = topics.get_topic().set_topic(topic).send().await.unwrap();
    assert_eq!(fetched.name, topic);
    let duplicate = topics
        .create_topic()
        .set_name(topic)
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{duplicate:?}").contains("ALREADY_EXISTS")
            || format!("{duplicate}").contains("already exists"),
        "{duplicate}"
    );

    let subscriptions = SubscriptionAdmin::builder()
        .with_endpoint(&endpoint)
        .with_credentials(Anonymous::new().build())
        .build()
        .await
        .unwrap();
    let sub = subscriptions
        .create_subscription()
        .set_name(subscription)
        .set_topic(topic)
        .set_ack_deadline_seconds(30)
        .send()
        .await
        .unwrap();
    assert_eq!(sub.ack_deadline_seconds, 30);
    assert_eq!(sub.topic, topic);

    let publisher = Publisher::builder(topic)
        .with_endpoint(&endpoint)
        .with_credentials(Anonymous::new().build())
        .build()
        .await
        .unwrap();
    let futures: Vec<_> = (0..500)
        .map(|i| {
            publisher.publish(
                Message::new()
                    .set_data(format!("report {i}"))
                    .set_attributes([("reportId", i.to_string())]),
            )
        })
        .collect();
    let mut ids = HashSet::new();
    for future in futures {
        ids.insert(future.await.unwrap());
    }
    assert_eq!(ids.len(), 500, "message ids are unique");

    let subscriber = Subscriber::builder()
        .with_endpoint(&endpoint)
        .with_credentials(Anonymous::new().build())
        .build()
        .await
        .unwrap();
    let mut stream = subscriber.subscribe(subscription).build();
    let mut seen = HashSet::new();
    while seen.len() < 500 {
        let (message, handler) = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("messages keep arriving")
            .expect("the stream stays open")
            .unwrap();
        let report = message.attributes.get("reportId").cloned().unwrap();
        assert_eq!(message.data, format!("report {report}").as_bytes());
        seen.insert(report);
        handler.ack();
    }
    assert_eq!(seen.len(), 500);

    topics.delete_topic().set_topic(topic).send().await.unwrap();
    let gone = topics
        .get_topic()
        .set_topic(topic)
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{gone:?}").contains("NOT_FOUND") || format!("{gone}").contains("not found"),
        "{gone}"
    );
}
