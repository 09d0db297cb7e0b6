//! The REST/JSON surface against arbitrary bodies: every answer is a
//! status below 500 (a caller's mistake is the caller's 4xx) and nothing
//! panics.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use labrelay_broker::{Broker, BrokerConfig};
use labrelay_testkit::strategies;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt as _;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

const TOPIC: &str = "/v1/projects/p/topics/topic-a";
const SUBSCRIPTION: &str = "/v1/projects/p/subscriptions/sub-a";

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let router = runtime.block_on(async {
            let broker = Broker::open(BrokerConfig::new(
                dir.path(),
                "127.0.0.1:8085".parse().unwrap(),
            ))
            .unwrap();
            let router = broker.router();
            for (path, body) in [
                (TOPIC, json!({})),
                (SUBSCRIPTION, json!({"topic": "projects/p/topics/topic-a"})),
            ] {
                let response = router
                    .clone()
                    .oneshot(request(Method::PUT, path, body.to_string().into_bytes()))
                    .await
                    .unwrap();
                assert!(
                    response.status().is_success(),
                    "{path}: {}",
                    response.status()
                );
            }
            router
        });
        Fixture {
            runtime,
            router,
            _dir: dir,
        }
    })
}

fn request(method: Method, path: &str, body: Vec<u8>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// Every REST method that takes a body (`seek` answers 501: not implemented).
fn endpoints() -> Vec<(Method, String)> {
    let mut endpoints = vec![
        (Method::PUT, "/v1/projects/p/topics/other".to_string()),
        (Method::PATCH, TOPIC.to_string()),
        (Method::POST, format!("{TOPIC}:publish")),
        (
            Method::PUT,
            "/v1/projects/p/subscriptions/other".to_string(),
        ),
        (Method::PATCH, SUBSCRIPTION.to_string()),
    ];
    for verb in [
        "pull",
        "acknowledge",
        "modifyAckDeadline",
        "modifyPushConfig",
    ] {
        endpoints.push((Method::POST, format!("{SUBSCRIPTION}:{verb}")));
    }
    endpoints
}

/// Arbitrary JSON favouring the field names of the REST bodies.
fn json_value() -> impl Strategy<Value = Value> {
    strategies::json_value(&[
        "messages",
        "data",
        "attributes",
        "orderingKey",
        "topic",
        "ackIds",
        "ackDeadlineSeconds",
        "maxMessages",
        "pushConfig",
        "updateMask",
        "subscription",
        "retryPolicy",
        "deadLetterPolicy",
        "filter",
        "time",
    ])
}

fn assert_below_500(method: &Method, path: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    let fixture = fixture();
    let status = fixture.runtime.block_on(async {
        fixture
            .router
            .clone()
            .oneshot(request(method.clone(), path, body))
            .await
            .unwrap()
            .status()
    });
    prop_assert!(status.as_u16() < 500, "{method} {path}: {status}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_json_never_gets_a_5xx(value in json_value(), wrapped in json_value()) {
        for (method, path) in endpoints() {
            assert_below_500(&method, &path, value.to_string().into_bytes())?;
            let nested = json!({"messages": [{"data": wrapped, "attributes": value}]});
            assert_below_500(&method, &path, nested.to_string().into_bytes())?;
        }
    }

    #[test]
    fn arbitrary_bytes_never_get_a_5xx(body in prop::collection::vec(any::<u8>(), 0..256)) {
        for (method, path) in endpoints() {
            assert_below_500(&method, &path, body.clone())?;
        }
    }
}
