//! `GET /metrics` after real pushes through the Twilio stand-in, and the
//! `X-Labrelay-Outcome` header on every push answer.

use labrelay_sms_service::Settings;
use labrelay_testkit::metrics::sample;
use labrelay_testkit::twilio::{Mode, TwilioStandIn};

use crate::helpers::*;

/// Settings from environment-style variables.
fn settings(vars: &[(&str, &str)]) -> Settings {
    Settings::from_vars(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
    .expect("valid test settings")
}

async fn scrape(app: &TestApp) -> String {
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("the sms-service answers /metrics");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

fn outcome(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("x-labrelay-outcome")
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn counts_every_outcome_and_says_it_in_a_header() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let log = tempfile::tempdir().unwrap();
    let log_url = format!("sqlite://{}", log.path().join("n.db").display());
    let base = twilio.base_url();
    let app = spawn_app(settings(&[
        ("TWILIO_ACCOUNT_SID", SID),
        ("TWILIO_AUTH_TOKEN", TOKEN),
        ("TWILIO_FROM", FROM),
        ("TWILIO_API_BASE", &base),
        ("TWILIO_TIMEOUT_SECS", "3"),
        ("NOTIFY_LOG", &log_url),
        ("PUSH_AUTH", "off"),
    ]))
    .await;

    let with_phone = report("LR-M-1", Some("+15551234567"));
    let cases = [
        (envelope(&with_phone, "m1", 1), 204, "sent"),
        // The broker redelivers it: the notification log has it.
        (envelope(&with_phone, "m1", 2), 204, "duplicate"),
        (envelope(&report("LR-M-2", None), "m2", 1), 204, "skipped"),
        (
            envelope(&report("LR-M-3", Some("12345")), "m3", 1),
            422,
            "failed",
        ),
    ];
    for (body, status, want) in &cases {
        let response = app.push(body).await;
        assert_eq!(response.status(), *status, "{body}");
        assert_eq!(outcome(&response), Some(*want), "{body}");
    }
    twilio.fail_next(1, Mode::ServerError);
    let response = app
        .push(&envelope(&report("LR-M-4", Some("+15551234568")), "m4", 1))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(outcome(&response), Some("failed"));
    let response = app.push_body("[]").await;
    assert_eq!(response.status(), 400);
    assert_eq!(outcome(&response), Some("failed"));

    let scrape = scrape(&app).await;
    let notifications = |outcome: &str| {
        sample(
            &scrape,
            &format!("labrelay_notifications_total{{channel=\"sms\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(notifications("sent"), 1.0, "{scrape}");
    assert_eq!(notifications("duplicate"), 1.0, "{scrape}");
    assert_eq!(notifications("skipped"), 1.0, "{scrape}");
    assert_eq!(notifications("failed_permanent"), 2.0, "{scrape}");
    assert_eq!(notifications("failed_transient"), 1.0, "{scrape}");
    let push_requests = |status: u16| {
        sample(
            &scrape,
            &format!("labrelay_push_requests_total{{status=\"{status}\"}}"),
        )
    };
    assert_eq!(push_requests(204), 3.0, "{scrape}");
    assert_eq!(push_requests(422), 1.0, "{scrape}");
    assert_eq!(push_requests(503), 1.0, "{scrape}");
    assert_eq!(push_requests(400), 1.0, "{scrape}");
    // Twilio was called for m1 and m4.
    assert_eq!(twilio.requests(), 2);
    assert_eq!(
        sample(
            &scrape,
            "labrelay_notification_send_duration_seconds_count{channel=\"sms\"}"
        ),
        2.0,
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            "labrelay_notification_delivery_latency_seconds_count{channel=\"sms\"}"
        ),
        1.0,
        "{scrape}"
    );
    // Five envelopes, with attempts 1, 2, 1, 1 and 1.
    assert_eq!(
        sample(&scrape, "labrelay_push_delivery_attempt_count"),
        5.0,
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, "labrelay_push_delivery_attempt_sum"),
        6.0,
        "{scrape}"
    );
    for private in ["LR-M-", "+1555", "m1"] {
        assert!(!scrape.contains(private), "{private} in {scrape}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_need_no_push_token_but_pushes_still_do() {
    let outbox = tempfile::tempdir().unwrap();
    let url = format!("file://{}", outbox.path().display());
    let app = spawn_app(settings(&[
        ("SMS_URL", &url),
        ("PUSH_AUDIENCE", "https://sms.example/"),
        (
            "PUSH_ALLOWED_SERVICE_ACCOUNTS",
            "invoker@p.iam.gserviceaccount.com",
        ),
        ("PUSH_JWKS_URL", "http://127.0.0.1:9/jwks"),
    ]))
    .await;
    let body = envelope(&report("LR-M-5", Some("+15551234567")), "m5", 1);
    let refused = app.push(&body).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(outcome(&refused), Some("failed"));
    for path in ["/metrics", "/metrics/", "/metrics/x"] {
        let response = app
            .client
            .post(format!("{}{path}", app.address))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            matches!(response.status().as_u16(), 404 | 405),
            "POST {path}: {}",
            response.status()
        );
    }

    let scrape = scrape(&app).await;
    assert_eq!(
        sample(&scrape, "labrelay_push_requests_total{status=\"401\"}"),
        1.0,
        "{scrape}"
    );
    assert!(
        !scrape.contains("labrelay_notifications_total{"),
        "{scrape}"
    );
    assert_eq!(std::fs::read_dir(outbox.path()).unwrap().count(), 0);
    app.stop().await.unwrap();
}
