//! `GET /metrics` after real pushes, and the `X-Labrelay-Outcome` header
//! on every push answer.

use labrelay_testkit::metrics::sample;
use serde_json::json;

use crate::helpers::{envelope, envelope_bytes, full_report, settings, spawn_app};

/// `labrelay_notifications_total` for `outcome`.
fn notifications(scrape: &str, outcome: &str) -> f64 {
    sample(
        scrape,
        &format!("labrelay_notifications_total{{channel=\"email\",outcome=\"{outcome}\"}}"),
    )
}

fn push_requests(scrape: &str, status: u16) -> f64 {
    sample(
        scrape,
        &format!("labrelay_push_requests_total{{status=\"{status}\"}}"),
    )
}

#[tokio::test]
async fn counts_every_outcome_and_says_it_in_a_header() {
    let outbox = tempfile::tempdir().unwrap();
    let log = tempfile::tempdir().unwrap();
    let app = spawn_app(settings(&[
        ("SMTP_URL", &format!("file://{}", outbox.path().display())),
        (
            "NOTIFY_LOG",
            &format!("sqlite://{}", log.path().join("n.sqlite3").display()),
        ),
    ]))
    .await;
    let mut bad_address = full_report("LR-M-3");
    bad_address["owner"]["email"] = json!("nobody");
    let cases = [
        (envelope(&full_report("LR-M-1"), "m1", 1), 204, "sent"),
        // The broker redelivers it: the notification log has it.
        (envelope(&full_report("LR-M-1"), "m1", 2), 204, "duplicate"),
        (envelope(&json!({"id": "LR-M-2"}), "m2", 1), 204, "skipped"),
        (envelope(&bad_address, "m3", 3), 422, "failed"),
        (envelope_bytes(b"[1, 2]", "m4", 1), 400, "failed"),
    ];
    for (body, status, outcome) in &cases {
        let response = app.push(body).await;
        assert_eq!(response.status(), *status, "{body}");
        assert_eq!(
            response.header("x-labrelay-outcome"),
            Some(*outcome),
            "{}",
            response.head
        );
    }

    let scrape = app.get("/metrics").await;
    assert_eq!(scrape.status(), 200);
    let scrape = String::from_utf8(scrape.body).unwrap();
    assert_eq!(notifications(&scrape, "sent"), 1.0, "{scrape}");
    assert_eq!(notifications(&scrape, "duplicate"), 1.0, "{scrape}");
    assert_eq!(notifications(&scrape, "skipped"), 1.0, "{scrape}");
    assert_eq!(notifications(&scrape, "failed_permanent"), 2.0, "{scrape}");
    assert_eq!(notifications(&scrape, "failed_transient"), 0.0, "{scrape}");
    assert_eq!(push_requests(&scrape, 204), 3.0, "{scrape}");
    assert_eq!(push_requests(&scrape, 422), 1.0, "{scrape}");
    assert_eq!(push_requests(&scrape, 400), 1.0, "{scrape}");
    // Only the first push reached the outbox.
    assert_eq!(
        sample(
            &scrape,
            "labrelay_notification_send_duration_seconds_count{channel=\"email\"}"
        ),
        1.0,
        "{scrape}"
    );
    // Published (per the envelope) before it was sent.
    assert_eq!(
        sample(
            &scrape,
            "labrelay_notification_delivery_latency_seconds_count{channel=\"email\"}"
        ),
        1.0,
        "{scrape}"
    );
    assert!(
        sample(
            &scrape,
            "labrelay_notification_delivery_latency_seconds_sum{channel=\"email\"}"
        ) > 0.0,
        "{scrape}"
    );
    // Five envelopes, with attempts 1, 2, 1, 3 and 1.
    assert_eq!(
        sample(&scrape, "labrelay_push_delivery_attempt_count"),
        5.0,
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, "labrelay_push_delivery_attempt_sum"),
        8.0,
        "{scrape}"
    );
    // No report ids, addresses or message ids in the figures.
    for private in ["LR-M-", "nobody", "alex@example.com", "m1"] {
        assert!(!scrape.contains(private), "{private} in {scrape}");
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_a_transient_failure() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app(settings(&[
        ("SMTP_URL", &format!("smtp://{closed}")),
        ("SMTP_TIMEOUT_SECS", "2"),
    ]))
    .await;
    let response = app.push(&envelope(&full_report("LR-M-9"), "m9", 1)).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.header("x-labrelay-outcome"), Some("failed"));

    let scrape = String::from_utf8(app.get("/metrics").await.body).unwrap();
    assert_eq!(notifications(&scrape, "failed_transient"), 1.0, "{scrape}");
    assert_eq!(push_requests(&scrape, 503), 1.0, "{scrape}");
    assert_eq!(
        sample(
            &scrape,
            "labrelay_notification_send_duration_seconds_count{channel=\"email\"}"
        ),
        1.0,
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            "labrelay_notification_delivery_latency_seconds_count{channel=\"email\"}"
        ),
        0.0,
        "{scrape}"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_need_no_push_token_and_open_no_way_around_it() {
    let outbox = tempfile::tempdir().unwrap();
    let app = spawn_app(settings(&[
        ("SMTP_URL", &format!("file://{}", outbox.path().display())),
        ("PUSH_AUDIENCE", "https://email.example/"),
        (
            "PUSH_ALLOWED_SERVICE_ACCOUNTS",
            "invoker@p.iam.gserviceaccount.com",
        ),
        ("PUSH_JWKS_URL", "http://127.0.0.1:9/jwks"),
    ]))
    .await;
    let refused = app.push(&envelope(&full_report("LR-M-5"), "m5", 1)).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.header("x-labrelay-outcome"), Some("failed"));

    let scrape = app.get("/metrics").await;
    assert_eq!(scrape.status(), 200);
    let scrape = String::from_utf8(scrape.body).unwrap();
    assert_eq!(push_requests(&scrape, 401), 1.0, "{scrape}");
    // Refused before the body was read: no notification outcome.
    assert!(
        !scrape.contains("labrelay_notifications_total{"),
        "{scrape}"
    );

    // /metrics is read-only, at its own path only, and no path near it
    // reaches the push handler without a token.
    for (method, path) in [
        ("POST", "/metrics"),
        ("POST", "/metrics/"),
        ("POST", "/metrics/../"),
        ("POST", "//"),
        ("GET", "/metrics/x"),
    ] {
        let body = envelope(&full_report("LR-M-6"), "m6", 1).to_string();
        let response = crate::helpers::http(app.addr, method, path, body.as_bytes())
            .await
            .unwrap();
        assert!(
            matches!(response.status(), 401 | 404 | 405),
            "{method} {path}: {}",
            response.head
        );
    }
    assert_eq!(std::fs::read_dir(outbox.path()).unwrap().count(), 0);
    app.shutdown().await.unwrap();
}
