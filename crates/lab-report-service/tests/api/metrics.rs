//! `GET /metrics`: what the service counted, readable without an API key.

use std::time::Duration;

use labrelay_lab_report_service::ingest_auth::{IngestAuth, IngestKeys};
use labrelay_testkit::metrics::sample;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

use crate::helpers::{
    spawn_app_with, spawn_app_with_metrics_port, spawn_app_without_broker, within,
};

const KEY: &str = "metrics-test-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_reports_by_outcome_and_publishes() {
    let app = spawn_app_with(|settings| {
        settings.ingest_auth = IngestAuth::Keys(IngestKeys::default().with_key("idexx", KEY));
    })
    .await;
    let post = |body: &'static str, key: Option<&'static str>| {
        let mut request = app
            .http
            .post(format!("{}/", app.url))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        within("the service's answer", request.send())
    };
    for body in [r#"{"id": 1}"#, r#"{"id": 2}"#] {
        assert_eq!(post(body, Some(KEY)).await.unwrap().status(), 204);
    }
    assert_eq!(post("{", Some(KEY)).await.unwrap().status(), 400);
    assert_eq!(post(r#"{"id": 3}"#, None).await.unwrap().status(), 401);

    // No key needed to read the figures; the key is still needed to post.
    let scrape = app.scrape().await;
    let received = |outcome: &str, status: u16| {
        sample(
            &scrape,
            &format!(
                "labrelay_reports_received_total{{outcome=\"{outcome}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(received("stored", 204), 2.0, "{scrape}");
    assert_eq!(received("rejected", 400), 1.0, "{scrape}");
    assert_eq!(received("rejected", 401), 1.0, "{scrape}");
    assert_eq!(
        sample(&scrape, "labrelay_reports_published_total"),
        2.0,
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, "labrelay_report_publish_duration_seconds_count"),
        2.0,
        "{scrape}"
    );
    assert!(
        sample(&scrape, "labrelay_report_publish_duration_seconds_sum") > 0.0,
        "{scrape}"
    );
    assert!(
        !scrape.contains("labrelay_report_publish_failures_total{"),
        "{scrape}"
    );
    // Report ids never become labels.
    assert!(!scrape.contains("id=\""), "{scrape}");
    assert_eq!(app.take_published().await.len(), 2);

    // /metrics is read-only, and only at its own path.
    let response = within(
        "the service's answer",
        app.http.post(format!("{}/metrics", app.url)).send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 405);
    let response = within(
        "the service's answer",
        app.http.get(format!("{}/metrics/anything", app.url)).send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_failed_publishes() {
    let app = spawn_app_without_broker(|s| s.publish_timeout = Duration::from_millis(300)).await;
    assert_eq!(app.post_json(r#"{"id": 12}"#).await.status(), 503);
    let scrape = app.scrape().await;
    assert_eq!(
        sample(
            &scrape,
            "labrelay_reports_received_total{outcome=\"unavailable\",status=\"503\"}"
        ),
        1.0,
        "{scrape}"
    );
    let failures = sample(
        &scrape,
        "labrelay_report_publish_failures_total{reason=\"timeout\"}",
    ) + sample(
        &scrape,
        "labrelay_report_publish_failures_total{reason=\"error\"}",
    );
    assert_eq!(failures, 1.0, "{scrape}");
    assert_eq!(sample(&scrape, "labrelay_reports_published_total"), 0.0);
    assert_eq!(
        sample(&scrape, "labrelay_report_publish_duration_seconds_count"),
        1.0,
        "{scrape}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_metrics_port_metrics_are_served_there_only() {
    let app = spawn_app_with_metrics_port(|_| {}).await;
    assert_ne!(app.metrics_url, app.url);
    assert_eq!(app.post_json(r#"{"id": 1}"#).await.status(), 204);

    let http = app.http.clone();
    let get = |url: String| {
        let http = http.clone();
        async move {
            within("the service's answer", http.get(url).send())
                .await
                .unwrap()
                .status()
        }
    };
    // The service's (public) port has no /metrics ...
    assert_eq!(get(format!("{}/metrics", app.url)).await, 404);
    assert_eq!(get(format!("{}/healthz", app.url)).await, 200);
    // ... and the metrics port nothing else.
    assert_eq!(get(format!("{}/healthz", app.metrics_url)).await, 404);
    let scrape = app.scrape().await;
    assert_eq!(
        sample(
            &scrape,
            "labrelay_reports_received_total{outcome=\"stored\",status=\"204\"}"
        ),
        1.0,
        "{scrape}"
    );
    let post = within(
        "the service's answer",
        app.http
            .post(format!("{}/", app.metrics_url))
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"id": 2}"#)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(post.status(), 404, "no ingest on the metrics port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nowhere_serves_no_metrics() {
    let app = spawn_app_with(|s| s.metrics = labrelay_lab_report_service::MetricsAt::Nowhere).await;
    let response = within(
        "the service's answer",
        app.http.get(format!("{}/metrics", app.url)).send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 404);
}
