//! The notification log (`NOTIFY_LOG`) against the Twilio stand-in: a
//! redelivery, a re-post, concurrent deliveries, a restart and a Twilio
//! slower than the timeout send one SMS; a corrected report is sent again.

use std::path::Path;
use std::time::{Duration, Instant};

use labrelay_receiver::notify_log::NotifyLogSetting;
use labrelay_sms_service::Settings;
use labrelay_testkit::twilio::{Mode, TwilioStandIn};

use crate::helpers::*;

fn with_log(mut settings: Settings, log: &Path) -> Settings {
    settings.receiver.notify_log = NotifyLogSetting::Sqlite(log.to_path_buf());
    settings
}

/// Waits for `n` messages, then a little longer to catch any extra one.
async fn settled_count(twilio: &TwilioStandIn, n: usize) -> usize {
    twilio.wait_for_messages(n, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    twilio.messages().len()
}

#[tokio::test]
async fn a_redelivery_and_a_repost_send_one_sms() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(with_log(twilio_settings(&twilio), &dir.path().join("n.db"))).await;
    let report = report("LR-D1", Some("+15551234567"));

    assert_eq!(app.push(&envelope(&report, "d1", 1)).await.status(), 204);
    assert_eq!(app.push(&envelope(&report, "d1", 2)).await.status(), 204);
    assert_eq!(app.push(&envelope(&report, "d2", 1)).await.status(), 204);

    assert_eq!(settled_count(&twilio, 1).await, 1);
    assert_eq!(twilio.requests(), 1);
    app.stop().await.unwrap();
}

/// The key is the report and the normalized number: a re-post with the
/// number written another way, or another email address, is the same SMS.
#[tokio::test]
async fn a_repost_with_the_number_spelled_otherwise_sends_one_sms() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(with_log(twilio_settings(&twilio), &dir.path().join("n.db"))).await;
    let report1 = report("LR-D6", Some("+15551234567"));
    let mut report2 = report("LR-D6", Some(" +1 555-123-4567"));
    report2["owner"]["email"] = serde_json::json!("sam@example.com");

    assert_eq!(app.push(&envelope(&report1, "d8", 1)).await.status(), 204);
    let again = app.push(&envelope(&report2, "d9", 1)).await;
    assert_eq!(again.headers()["x-labrelay-outcome"], "duplicate");

    assert_eq!(settled_count(&twilio, 1).await, 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_deliveries_send_one_sms() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(with_log(twilio_settings(&twilio), &dir.path().join("n.db"))).await;
    let push = envelope(&report("LR-D2", Some("+15551234567")), "d3", 1);

    let mut pushes = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let request = app
            .client
            .post(&app.address)
            .header("content-type", "application/json")
            .body(push.to_string());
        pushes.spawn(async move { request.send().await.unwrap().status().as_u16() });
    }
    let answers = pushes.join_all().await;
    assert!(answers.iter().all(|s| *s == 204), "{answers:?}");
    assert_eq!(settled_count(&twilio, 1).await, 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_corrected_report_is_sent_again() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(with_log(twilio_settings(&twilio), &dir.path().join("n.db"))).await;

    let first = report("LR-D3", Some("+15551234567"));
    let corrected = report("LR-D3", Some("+15557654321"));
    assert_eq!(app.push(&envelope(&first, "d4", 1)).await.status(), 204);
    assert_eq!(app.push(&envelope(&corrected, "d5", 1)).await.status(), 204);
    assert_eq!(app.push(&envelope(&corrected, "d5", 2)).await.status(), 204);

    assert_eq!(settled_count(&twilio, 2).await, 2);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_log_survives_a_restart() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("n.db");
    let report = report("LR-D4", Some("+15551234567"));

    let app = spawn_app(with_log(twilio_settings(&twilio), &log)).await;
    assert_eq!(app.push(&envelope(&report, "d6", 1)).await.status(), 204);
    app.stop().await.unwrap();

    let app = spawn_app(with_log(twilio_settings(&twilio), &log)).await;
    assert_eq!(app.push(&envelope(&report, "d6", 2)).await.status(), 204);
    assert_eq!(settled_count(&twilio, 1).await, 1);
    app.stop().await.unwrap();
}

/// Twilio slower than `TWILIO_TIMEOUT_SECS`: the broker is answered 503
/// on time, the request goes on and is recorded, and the redelivery finds
/// the record instead of texting again. (When the request was cut off at
/// the timeout, its claim was released and the redelivery sent a second
/// SMS: Twilio had kept the first.)
#[tokio::test]
async fn a_twilio_request_outliving_the_timeout_goes_on_and_is_sent_once() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = with_twilio(twilio_settings(&twilio), |t| {
        t.timeout = Duration::from_secs(1)
    });
    let app = spawn_app(with_log(settings, &dir.path().join("n.db"))).await;
    twilio.set_mode(Mode::Slow(Duration::from_secs(2)));
    let push = |attempt| envelope(&report("LR-D5", Some("+15551234567")), "d7", attempt);

    let started = Instant::now();
    let first = app.push(&push(1)).await;
    assert_eq!(first.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}, not at the 1 s timeout",
        started.elapsed()
    );
    // Twilio takes the message; the request still waits for its answer.
    twilio.wait_for_messages(1, WAIT).await.unwrap();

    let redelivery = app.push(&push(2)).await;
    assert_eq!(redelivery.status(), 204);
    assert_eq!(
        redelivery
            .headers()
            .get("x-labrelay-outcome")
            .and_then(|v| v.to_str().ok()),
        Some("duplicate")
    );
    assert_eq!(twilio.requests(), 1, "the redelivery did not call Twilio");
    assert_eq!(settled_count(&twilio, 1).await, 1);
    app.stop().await.unwrap();
}

#[test]
fn notify_log_is_read_from_the_environment() {
    let vars = [
        ("SMS_URL", "file:///tmp/sms"),
        ("PUSH_AUTH", "off"),
        ("NOTIFY_LOG", "sqlite:///tmp/n.db"),
    ];
    let settings = Settings::from_vars(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    assert_eq!(
        settings.receiver.notify_log,
        NotifyLogSetting::Sqlite("/tmp/n.db".into())
    );
}
