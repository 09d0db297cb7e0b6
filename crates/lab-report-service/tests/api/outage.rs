//! The broker unreachable: 503 with Retry-After within the publish timeout,
//! never 204; and the same service works again once the broker is back.

use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::helpers::{PUBLISH_TIMEOUT, error_message, spawn_app, spawn_app_without_broker, within};

/// Scheduling slack on top of the publish timeout.
const SLACK: Duration = Duration::from_millis(1500);

async fn assert_503_in_time(app: &crate::helpers::TestApp, body: &str) {
    let started = Instant::now();
    let response = app.post_json(body.to_string()).await;
    let took = started.elapsed();

    assert_eq!(response.status(), 503, "{body}");
    assert!(took <= PUBLISH_TIMEOUT + SLACK, "the 503 took {took:?}");
    let retry_after = response.headers()[reqwest::header::RETRY_AFTER]
        .to_str()
        .unwrap();
    assert!(
        retry_after.parse::<u64>().unwrap() > 0,
        "Retry-After: {retry_after}"
    );
    let message = error_message(response).await;
    assert!(message.contains("retry"), "{message:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_broker_yet_gives_503_then_204_once_it_listens() {
    let mut app = spawn_app_without_broker(|_| {}).await;

    assert_503_in_time(&app, r#"{"id": 1}"#).await;

    app.start_broker().await;
    let response = app.post_json(r#"{"id": 2}"#).await;
    assert_eq!(response.status(), 204);
    let ids: Vec<String> = app
        .take_published()
        .await
        .iter()
        .map(|m| m.attributes["reportId"].clone())
        .collect();
    assert!(ids.contains(&"2".to_string()), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_down_gives_503_and_heals_when_it_returns() {
    let mut app = spawn_app().await;
    assert_eq!(app.post_json(r#"{"id": 1}"#).await.status(), 204);

    app.stop_broker().await;
    assert_503_in_time(&app, r#"{"id": 2}"#).await;
    assert_503_in_time(&app, r#"{"id": 3}"#).await;

    app.start_broker().await;
    assert_eq!(app.post_json(r#"{"id": 4}"#).await.status(), 204);
    let ids: Vec<String> = app
        .take_published()
        .await
        .iter()
        .map(|m| m.attributes["reportId"].clone())
        .collect();
    assert!(
        ids.contains(&"1".to_string()) && ids.contains(&"4".to_string()),
        "{ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_accepts_but_never_answers_gives_503_in_time() {
    let app = spawn_app_without_broker(|_| {}).await;
    let silent = TcpListener::bind(app.broker_addr).await.unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });

    assert_503_in_time(&app, r#"{"id": 5}"#).await;
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_request_finish() {
    let mut app = spawn_app_without_broker(|_| {}).await;
    // A "broker" that accepts connections and never answers: the request
    // stays in flight until the publish timeout.
    let silent = TcpListener::bind(app.broker_addr).await.unwrap();
    let pending = tokio::spawn({
        let http = app.http.clone();
        let url = format!("{}/", app.url);
        async move {
            http.post(url)
                .header("content-type", "application/json")
                .body(r#"{"id": 9}"#)
                .send()
                .await
        }
    });
    let (_connection, _) = within("the service to reach the broker", silent.accept())
        .await
        .unwrap();

    let started = Instant::now();
    app.stop_service().await.expect("the service stops cleanly");

    let response = pending
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() <= PUBLISH_TIMEOUT + SLACK,
        "{:?}",
        started.elapsed()
    );
    let refused = app.http.get(format!("{}/healthz", app.url)).send().await;
    assert!(
        refused.is_err(),
        "the service still accepts connections after shutdown"
    );
}
