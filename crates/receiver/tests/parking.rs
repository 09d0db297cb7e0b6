//! Parking on the dead-letter topic, against a real broker (in-process, on
//! its own port, reached over gRPC as Pub/Sub would be): a push that can
//! never be sent is published there with the source attributes and
//! acknowledged; a push a retry may cure is not parked; and when the topic
//! can't be reached, the push is answered 503 so the broker redelivers it.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use labrelay_broker::pb;
use labrelay_broker::{Broker, BrokerConfig};
use labrelay_contract::LabReport;
use labrelay_receiver::dead_letter::DeadLetterSetting;
use labrelay_receiver::{Channel, Failure, NotSent, ReceiverSettings};
use labrelay_testkit::push::Push;
use serde_json::json;
use tower::ServiceExt as _;

const DEAD_LETTER_TOPIC: &str = "projects/p/topics/dead";
const DEAD_LETTER_SUB: &str = "projects/p/subscriptions/dead-sub";
const SOURCE_SUB: &str = "projects/p/subscriptions/email-service-sub";

/// Refuses a pet named "refused" for good, fails one named "down" for
/// now, sends anything else.
struct Refusing;

impl Channel for Refusing {
    type Message = String;

    const NAME: &'static str = "test";
    const NOUN: &'static str = "note";
    const SERVICE: &'static str = "test-service";

    fn answer_within(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn render(&self, report: &LabReport, _message_id: &str) -> Result<String, NotSent> {
        Ok(report.pet.name.clone().unwrap_or_default())
    }

    fn recipient<'m>(&self, pet: &'m String) -> &'m str {
        pet
    }

    async fn send(&self, pet: &String) -> Result<Option<String>, Failure> {
        match pet.as_str() {
            "refused" => Err(Failure::permanent(
                "refused",
                "the provider refused the note",
                "550 no such mailbox",
            )),
            "down" => Err(Failure::transient(
                "unavailable",
                "try later",
                "connection refused",
            )),
            _ => Ok(Some("sent-1".into())),
        }
    }

    fn describe(&self) -> String {
        "nowhere".into()
    }
}

struct Running {
    broker: Broker,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

async fn broker() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path().join("broker"), addr)).unwrap();
    broker
        .create_topic(pb::Topic {
            name: DEAD_LETTER_TOPIC.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    broker
        .create_subscription(pb::Subscription {
            name: DEAD_LETTER_SUB.into(),
            topic: DEAD_LETTER_TOPIC.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::spawn(broker.clone().serve(listener, std::future::pending()));
    Running {
        broker,
        addr,
        _dir: dir,
    }
}

fn parking_at(addr: std::net::SocketAddr) -> ReceiverSettings {
    ReceiverSettings {
        dead_letters: Some(DeadLetterSetting {
            topic: DEAD_LETTER_TOPIC.into(),
            emulator_endpoint: Some(format!("http://{addr}")),
        }),
        ..ReceiverSettings::default()
    }
}

async fn answer(app: &axum::Router, push: Push) -> (StatusCode, String) {
    let request = Request::post("/")
        .header("content-type", "application/json")
        .body(Body::from(push.body()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let outcome = response.headers()["x-labrelay-outcome"]
        .to_str()
        .unwrap()
        .to_string();
    (response.status(), outcome)
}

#[tokio::test]
async fn a_permanent_failure_is_parked_with_its_source_and_acknowledged() {
    let running = broker().await;
    let app = labrelay_receiver::app(Refusing, &parking_at(running.addr)).unwrap();
    let report =
        json!({"id": "R-1", "pet": {"name": "refused"}, "owner": {"email": "o@example.com"}});
    let push = Push::report(SOURCE_SUB, &report)
        .message_id("m-1")
        .attribute("reportId", "R-1")
        .attempt(2);

    assert_eq!(
        answer(&app, push).await,
        (StatusCode::NO_CONTENT, "dead-lettered".to_string())
    );

    let parked = running
        .broker
        .pull(DEAD_LETTER_SUB, 10, false)
        .await
        .unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    let message = parked[0].message.as_ref().unwrap();
    let parked_report: serde_json::Value = serde_json::from_slice(&message.data).unwrap();
    assert_eq!(
        parked_report, report,
        "the report is parked as it was published"
    );
    let attribute = |k: &str| message.attributes.get(k).map(String::as_str);
    assert_eq!(attribute("reportId"), Some("R-1"));
    assert_eq!(
        attribute("CloudPubSubDeadLetterSourceSubscription"),
        Some("email-service-sub")
    );
    assert_eq!(
        attribute("CloudPubSubDeadLetterSourceSubscriptionProject"),
        Some("p")
    );
    assert_eq!(
        attribute("CloudPubSubDeadLetterSourceDeliveryCount"),
        Some("2")
    );
    assert_eq!(
        attribute("CloudPubSubDeadLetterSourceDeliveryErrorMessage"),
        Some("push failed: HTTP 422 (test-service: refused)")
    );
}

#[tokio::test]
async fn a_message_that_is_not_a_report_is_parked_too() {
    let running = broker().await;
    let app = labrelay_receiver::app(Refusing, &parking_at(running.addr)).unwrap();
    let push = Push::bytes(SOURCE_SUB, b"not json").message_id("m-2");

    assert_eq!(
        answer(&app, push).await,
        (StatusCode::NO_CONTENT, "dead-lettered".to_string())
    );
    let parked = running
        .broker
        .pull(DEAD_LETTER_SUB, 10, false)
        .await
        .unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].message.as_ref().unwrap().data, b"not json");
}

#[tokio::test]
async fn a_failure_a_retry_may_cure_is_not_parked() {
    let running = broker().await;
    let app = labrelay_receiver::app(Refusing, &parking_at(running.addr)).unwrap();
    let report = json!({"id": "R-3", "pet": {"name": "down"}});

    assert_eq!(
        answer(&app, Push::report(SOURCE_SUB, &report)).await,
        (StatusCode::SERVICE_UNAVAILABLE, "failed".to_string())
    );
    let parked = running
        .broker
        .pull(DEAD_LETTER_SUB, 10, true)
        .await
        .unwrap();
    assert!(parked.is_empty(), "{parked:?}");
}

#[tokio::test]
async fn when_the_topic_cannot_be_reached_the_broker_is_told_to_retry() {
    // A port nothing listens on.
    let nowhere = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let app = labrelay_receiver::app(Refusing, &parking_at(nowhere)).unwrap();
    let report = json!({"id": "R-4", "pet": {"name": "refused"}});

    assert_eq!(
        answer(&app, Push::report(SOURCE_SUB, &report)).await,
        (StatusCode::SERVICE_UNAVAILABLE, "failed".to_string())
    );
}

#[tokio::test]
async fn without_a_topic_a_permanent_failure_is_left_to_the_broker() {
    let app = labrelay_receiver::app(Refusing, &ReceiverSettings::default()).unwrap();
    let report = json!({"id": "R-5", "pet": {"name": "refused"}});

    assert_eq!(
        answer(&app, Push::report(SOURCE_SUB, &report)).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "failed".to_string())
    );
}
