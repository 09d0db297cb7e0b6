//! The per-lab rate limit: 429 with `Retry-After` once a lab has used its
//! burst, while other labs still post; the bucket refills at the rate.

use std::num::NonZeroU32;
use std::time::Duration;

use labrelay_lab_report_service::ingest_auth::{IngestAuth, IngestKeys};
use labrelay_lab_report_service::rate_limit::{Per, RateLimit};
use labrelay_testkit::metrics::sample;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};

use crate::helpers::{error_message, spawn_app_with, within};

const IDEXX_KEY: &str = "idexx-rate-limit-test-key";
const ANTECH_KEY: &str = "antech-rate-limit-test-key";

/// `burst` reports at once, then one a second.
fn one_a_second(burst: u32) -> RateLimit {
    RateLimit::PerLab {
        rate: NonZeroU32::new(1).unwrap(),
        per: Per::Second,
        burst: NonZeroU32::new(burst).unwrap(),
    }
}

// Current-thread runtime: the service's tasks run on this thread, so the
// thread-local subscriber sees their events and no other test's.
#[tokio::test]
async fn a_lab_past_its_burst_gets_429_while_another_lab_posts() {
    let (captured, _guard) = labrelay_testkit::logs::capture(tracing::Level::INFO);

    let app = spawn_app_with(|settings| {
        settings.ingest_auth = IngestAuth::Keys(
            IngestKeys::default()
                .with_key("idexx", IDEXX_KEY)
                .with_key("antech", ANTECH_KEY),
        );
        settings.rate_limit = one_a_second(3);
    })
    .await;
    let post = |key: &'static str, id: u32| {
        let request = app
            .http
            .post(format!("{}/", app.url))
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, format!("Bearer {key}"))
            .body(format!(
                r#"{{"id": {id}, "owner": {{"email": "alex@example.com"}}}}"#
            ));
        async move {
            within("the service's answer", request.send())
                .await
                .unwrap()
        }
    };

    for id in 1..=3 {
        assert_eq!(post(IDEXX_KEY, id).await.status(), 204, "report {id}");
    }
    let refused = post(IDEXX_KEY, 4).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()[RETRY_AFTER], "1");
    let message = error_message(refused).await;
    assert!(message.contains("too many reports"), "{message}");
    // A lab whose key is wrong is still told so, not throttled.
    let unknown = within(
        "the service's answer",
        app.http
            .post(format!("{}/", app.url))
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, "Bearer wrong")
            .body(r#"{"id": 5}"#)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(unknown.status(), 401);

    // The other lab has a bucket of its own.
    for id in 6..=8 {
        assert_eq!(post(ANTECH_KEY, id).await.status(), 204, "report {id}");
    }
    assert_eq!(post(ANTECH_KEY, 9).await.status(), 429);

    // A second later, idexx may post one more.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(post(IDEXX_KEY, 10).await.status(), 204);
    assert_eq!(post(IDEXX_KEY, 11).await.status(), 429);

    let published = app.take_published().await;
    assert_eq!(published.len(), 7, "refused reports are not published");

    let scrape = app.scrape().await;
    assert_eq!(
        sample(
            &scrape,
            "labrelay_reports_received_total{outcome=\"rate_limited\",status=\"429\"}"
        ),
        3.0,
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            "labrelay_reports_received_total{outcome=\"stored\",status=\"204\"}"
        ),
        7.0,
        "{scrape}"
    );

    let logs = captured.text();
    let limited: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(r#"outcome="rate_limited""#))
        .collect();
    assert_eq!(limited.len(), 3, "{logs}");
    assert!(
        limited[0].contains("INFO") && limited[0].contains(r#"lab="idexx""#),
        "{}",
        limited[0]
    );
    assert!(!logs.contains("alex@example.com"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_ingest_shares_one_bucket() {
    let app = spawn_app_with(|settings| {
        settings.ingest_auth = IngestAuth::Open;
        settings.rate_limit = one_a_second(2);
    })
    .await;
    assert_eq!(app.post_json(r#"{"id": 1}"#).await.status(), 204);
    // Another client, or one claiming to be another: the same bucket.
    let other = within(
        "the service's answer",
        app.http
            .post(format!("{}/", app.url))
            .header(CONTENT_TYPE, "application/json")
            .header("X-Forwarded-For", "203.0.113.9")
            .body(r#"{"id": 2}"#)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(other.status(), 204);
    let refused = app.post_json(r#"{"id": 3}"#).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()[RETRY_AFTER], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_means_no_limit() {
    let app = spawn_app_with(|settings| settings.rate_limit = RateLimit::Off).await;
    for id in 0..30 {
        assert_eq!(
            app.post_json(format!(r#"{{"id": {id}}}"#)).await.status(),
            204
        );
    }
}
