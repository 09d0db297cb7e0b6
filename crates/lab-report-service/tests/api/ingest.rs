//! Accepted reports: 204 only once the message is in the broker.

use serde_json::Value;

use crate::helpers::{spawn_app, within};

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("the message data is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_body_is_stored_with_its_report_id() {
    let app = spawn_app().await;

    let response = app.post_json(r#"{"id": 12}"#).await;

    assert_eq!(response.status(), 204);
    assert!(
        response.bytes().await.unwrap().is_empty(),
        "a 204 has no body"
    );
    let published = app.take_published().await;
    assert_eq!(published.len(), 1, "{published:?}");
    let message = &published[0];
    assert_eq!(
        message.attributes.get("reportId").map(String::as_str),
        Some("12")
    );
    assert_eq!(json(&message.data), json(br#"{"id": 12}"#));
    assert!(!message.message_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_report_round_trips_unchanged() {
    let app = spawn_app().await;
    let body = r#"{
        "id": "LR-2026-000123",
        "clinic": {"name": "Pet Theory Downtown", "phone": "+15551230000"},
        "pet": {"name": "Max", "species": "dog"},
        "owner": {"name": "Alex Kim", "email": "alex@example.com", "phone": "+15551234567"},
        "tests": [{"name": "ALT", "value": 42, "unit": "U/L", "range": "10-100", "flag": "normal"}],
        "issuedAt": "2026-11-24T10:00:00Z",
        "labReference": "unknown fields are kept"
    }"#;

    let response = app
        .post(body, Some("application/json; charset=utf-8"))
        .await;

    assert_eq!(response.status(), 204);
    let published = app.take_published().await;
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(
        published[0].attributes.get("reportId").map(String::as_str),
        Some("LR-2026-000123")
    );
    assert_eq!(json(&published[0].data), json(body.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_are_each_stored_once() {
    let app = spawn_app().await;

    let answers = within(
        "50 concurrent posts",
        futures::future::join_all((0..50).map(|id| app.post_json(format!(r#"{{"id": {id}}}"#)))),
    )
    .await;

    assert!(answers.iter().all(|r| r.status() == 204), "{answers:?}");
    let mut ids: Vec<i64> = app
        .take_published()
        .await
        .iter()
        .map(|m| m.attributes["reportId"].parse().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_200() {
    let app = spawn_app().await;

    let response = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
}
