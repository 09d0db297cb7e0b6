//! Hostile requests at every HTTP endpoint of a running `labrelay up`:
//! malformed, oversized, wrongly typed and truncated bodies, wrong methods
//! and content types. Each gets a 4xx, the process stays up, and nothing is
//! published or sent.
//!
//! The push services run with `PUSH_AUTH=off` here so the bodies reach
//! their parsers; `resilience` covers the token check.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use labrelay_testkit::push::Push;
use labrelay_testkit::up;
use serde_json::{Value, json};

use crate::LABRELAY;

fn start(data_dir: &Path) -> labrelay_testkit::up::Up {
    let mut command = up::up_command(LABRELAY, data_dir);
    command
        .env("RUST_LOG", "error")
        .env("PUSH_AUTH", "off")
        .stdout(Stdio::null());
    up::Up::start(command, data_dir)
}

/// Bodies that are not what any endpoint wants.
fn bad_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let report = json!({"id": 12, "owner": {"email": "a@example.com", "phone": "+15551234567"}});
    let text = report.to_string();
    vec![
        ("empty", Vec::new()),
        ("not JSON", b"hello".to_vec()),
        ("truncated", text.as_bytes()[..text.len() / 2].to_vec()),
        ("invalid UTF-8", vec![0xff, 0xfe, b'{', 0x80]),
        ("a JSON string", b"\"12\"".to_vec()),
        ("a JSON array", b"[12]".to_vec()),
        ("null", b"null".to_vec()),
        ("id of the wrong type", br#"{"id": {"n": 12}}"#.to_vec()),
        ("id true", br#"{"id": true}"#.to_vec()),
        ("id empty", br#"{"id": ""}"#.to_vec()),
        (
            "id too long",
            format!(r#"{{"id": "{}"}}"#, "x".repeat(200)).into_bytes(),
        ),
        (
            "owner of the wrong type",
            br#"{"id": 1, "owner": "a@example.com"}"#.to_vec(),
        ),
        (
            "deep nesting",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        ),
        ("oversized", {
            let mut body = br#"{"id": 1, "pad": ""#.to_vec();
            body.extend(std::iter::repeat_n(b'a', 20 * 1024 * 1024));
            body.extend(br#""}"#);
            body
        }),
    ]
}

/// Push envelopes around bad data, for the push endpoints, and whether the
/// receiver parks the message on the dead-letter topic (a message that is
/// not a lab report: answered 204) or refuses the push (400).
fn bad_envelopes() -> Vec<(&'static str, Vec<u8>, bool)> {
    const SUBSCRIPTION: &str = "projects/labrelay-local/subscriptions/email-service-sub";
    // `data` that is not base64 at all, which the contract cannot write.
    let raw = |data: Value| {
        json!({"message": {"data": data, "messageId": "1", "publishTime": "2026-11-24T10:00:00Z"},
               "subscription": SUBSCRIPTION})
        .to_string()
        .into_bytes()
    };
    let push = |data: &[u8]| Push::bytes(SUBSCRIPTION, data).without_attempt().body();
    vec![
        ("data not base64", raw(json!("%%%not base64%%%")), false),
        ("data a number", raw(json!(12)), false),
        ("data not JSON", push(b"hello"), true),
        ("data without id", push(br#"{"owner": {}}"#), true),
        (
            "data with a bad owner",
            push(br#"{"id": 1, "owner": 5}"#),
            true,
        ),
        (
            "message missing",
            br#"{"subscription": "s"}"#.to_vec(),
            false,
        ),
        (
            "message of the wrong type",
            br#"{"message": "hi", "subscription": "s"}"#.to_vec(),
            false,
        ),
    ]
}

fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_hostile_requests_with_4xx_and_sends_nothing() {
    let data = tempfile::tempdir().unwrap();
    let up = start(data.path());
    let key = std::fs::read_to_string(data.path().join("ingest-api-key")).unwrap();
    // No pooling: a server that refuses an oversized body closes that
    // connection, and the next request must not be sent on it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let broker = up.url("broker");
    let project = "labrelay-local";

    // A pull subscription that sees everything published to the topic.
    let watch = format!("{broker}/v1/projects/{project}/subscriptions/hostile-watch");
    let created = http
        .put(&watch)
        .json(&json!({"topic": format!("projects/{project}/topics/new-lab-report")}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());

    let mut checked = 0;
    let mut expect_4xx = async |what: String, request: reqwest::RequestBuilder| {
        let response = request.send().await;
        // An oversized body may be refused before it is fully sent.
        if let Err(error) = &response
            && what.contains("oversized")
        {
            eprintln!("{what}: connection closed early ({error})");
            return;
        }
        let status = response
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"))
            .status();
        assert!(status.is_client_error(), "{what}: {status}");
        checked += 1;
    };

    let lab = format!("{}/", up.url("lab-report-service"));
    for (what, body) in bad_bodies() {
        expect_4xx(
            format!("lab-report {what}"),
            http.post(&lab)
                .bearer_auth(key.trim())
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
        expect_4xx(
            format!("lab-report {what} without a key"),
            http.post(&lab)
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
    }
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin1",
    ] {
        expect_4xx(
            format!("lab-report as {content_type}"),
            http.post(&lab)
                .bearer_auth(key.trim())
                .header("content-type", content_type)
                .body(r#"{"id": 12}"#),
        )
        .await;
    }
    expect_4xx("lab-report GET /".into(), http.get(&lab)).await;
    expect_4xx("lab-report PUT /".into(), http.put(&lab).body("{}")).await;

    let mut parked = 0;
    for service in ["email-service", "sms-service"] {
        let url = format!("{}/", up.url(service));
        for (what, body) in bad_bodies() {
            expect_4xx(
                format!("{service} {what}"),
                http.post(&url)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        }
        for (what, body, parks) in bad_envelopes() {
            let request = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body);
            if !parks {
                expect_4xx(format!("{service} {what}"), request).await;
                continue;
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 204, "{service} {what}");
            assert_eq!(
                response.headers()["x-labrelay-outcome"],
                "dead-lettered",
                "{service} {what}"
            );
            parked += 1;
        }
        expect_4xx(format!("{service} GET /"), http.get(&url)).await;
    }

    let topic = format!("{broker}/v1/projects/{project}/topics/new-lab-report");
    for (what, body) in bad_bodies() {
        for (path, method) in [
            (format!("{topic}:publish"), reqwest::Method::POST),
            (format!("{watch}:pull"), reqwest::Method::POST),
            (format!("{watch}:acknowledge"), reqwest::Method::POST),
            (format!("{watch}:modifyAckDeadline"), reqwest::Method::POST),
            (
                format!("{broker}/v1/projects/{project}/topics/hostile-topic"),
                reqwest::Method::PUT,
            ),
        ] {
            if what == "empty" {
                // An empty body is the request with every field defaulted
                // (proto3 JSON), which some methods accept.
                continue;
            }
            expect_4xx(
                format!("broker {method} {path}: {what}"),
                http.request(method, &path)
                    .header("content-type", "application/json")
                    .body(body.clone()),
            )
            .await;
        }
    }
    for what in [
        "no messages",
        "message without data or attributes",
        "attribute too long",
    ] {
        let body = match what {
            "no messages" => json!({"messages": []}),
            "message without data or attributes" => json!({"messages": [{}]}),
            _ => json!({"messages": [{"data": "AA==", "attributes": {"k": "v".repeat(2000)}}]}),
        };
        expect_4xx(
            format!("broker publish: {what}"),
            http.post(format!("{topic}:publish")).json(&body),
        )
        .await;
    }
    assert!(checked > 100, "only {checked} requests were checked");

    // Still up, and nothing reached the topic or the outboxes.
    let pulled: Value = http
        .post(format!("{watch}:pull"))
        .json(&json!({"maxMessages": 100, "returnImmediately": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        pulled
            .get("receivedMessages")
            .is_none_or(|m| m.as_array().is_some_and(Vec::is_empty)),
        "{pulled}"
    );
    // What is not a report was parked, as it was pushed, and nothing else.
    let dead_letters: Value = http
        .post(format!(
            "{broker}/v1/projects/{project}/subscriptions/new-lab-report-dead-letter-sub:pull"
        ))
        .json(&json!({"maxMessages": 100, "returnImmediately": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dead_letters = dead_letters["receivedMessages"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(dead_letters, parked);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(files(&data.path().join("outbox/email")), 0);
    assert_eq!(files(&data.path().join("outbox/sms")), 0);
    let health = http
        .get(format!("{}/healthz", up.url("lab-report-service")))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
