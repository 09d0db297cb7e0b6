//! Opt-outs are facts, not failures: a number Twilio calls unsubscribed
//! (21610) is suppressed, and every later push for it is answered 204
//! `suppressed` without calling Twilio; no retry, no dead letter.

use labrelay_receiver::notify_log::{NotificationLog as _, NotifyLogSetting, SqliteLog};
use labrelay_testkit::twilio::{Mode, TwilioStandIn};

use crate::helpers::*;

const NUMBER: &str = "+15551234567";

#[tokio::test]
async fn twilio_21610_suppresses_the_number_and_the_next_push_calls_nobody() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("n.db");
    let mut settings = twilio_settings(&twilio);
    settings.receiver.notify_log = NotifyLogSetting::Sqlite(log.clone());
    let app = spawn_app(settings).await;

    twilio.fail_next(
        1,
        Mode::Reject {
            status: 400,
            code: 21610,
        },
    );
    let first = app
        .push(&envelope(&report("LR-O1", Some(NUMBER)), "o1", 1))
        .await;
    assert_eq!(first.status(), 204);
    assert_eq!(first.headers()["x-labrelay-outcome"], "suppressed");
    assert_eq!(first.headers()["x-labrelay-reason"], "twilio 21610");
    assert_eq!(twilio.requests(), 1);

    // Another report for the same owner, the number spelled otherwise.
    let second = app
        .push(&envelope(
            &report("LR-O2", Some("+1 555 123 4567")),
            "o2",
            1,
        ))
        .await;
    assert_eq!(second.status(), 204);
    assert_eq!(second.headers()["x-labrelay-outcome"], "suppressed");
    assert_eq!(
        twilio.requests(),
        1,
        "Twilio was called for a suppressed number"
    );

    // Stored with its reason and time, under a hash: no number in the store.
    let stored = SqliteLog::open(&log).unwrap().suppressions().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].channel.as_str(), stored[0].reason.as_str()),
        ("sms", "twilio 21610")
    );
    assert!(!stored[0].subject.contains("5551234567"));
    let bytes = std::fs::read(&log).unwrap();
    assert!(!bytes.windows(10).any(|w| w == b"5551234567"));

    // Another owner is texted as before.
    let other = app
        .push(&envelope(&report("LR-O3", Some("+15557654321")), "o3", 1))
        .await;
    assert_eq!(other.headers()["x-labrelay-outcome"], "sent");
    assert_eq!(twilio.wait_for_messages(1, WAIT).await.unwrap().len(), 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_notification_log_21610_is_still_answered_suppressed() {
    let (twilio, app) = spawn_with_twilio().await;
    twilio.set_mode(Mode::Reject {
        status: 400,
        code: 21610,
    });
    let answer = app
        .push(&envelope(&report("LR-O4", Some(NUMBER)), "o4", 1))
        .await;
    assert_eq!(answer.status(), 204);
    assert_eq!(answer.headers()["x-labrelay-outcome"], "suppressed");
    app.stop().await.unwrap();
}
