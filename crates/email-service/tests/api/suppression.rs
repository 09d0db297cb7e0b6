//! A mailbox that does not exist (550 5.1.1) is a fact: the address is
//! suppressed with its reason and time, and the next email to it is
//! answered `suppressed` without talking to the server. Other permanent
//! errors stay failures.

use labrelay_receiver::notify_log::{NotificationLog as _, SqliteLog};
use labrelay_testkit::smtp::{Mode, SmtpSink};

use crate::helpers::{envelope, full_report, settings, spawn_app};

#[tokio::test]
async fn no_such_mailbox_suppresses_the_address_and_other_refusals_do_not() {
    let sink = SmtpSink::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("n.sqlite3");
    let url = format!("sqlite://{}", log.display());
    let app = spawn_app(settings(&[("SMTP_URL", &sink.url()), ("NOTIFY_LOG", &url)])).await;

    // Rejected by policy (5.7.1): a failure, as before.
    sink.set_mode(Mode::PermFail);
    let refused = app.push(&envelope(&full_report("LR-S0"), "s0", 1)).await;
    assert_eq!(refused.status(), 422);

    sink.set_mode(Mode::NoSuchMailbox);
    let first = app.push(&envelope(&full_report("LR-S1"), "s1", 1)).await;
    assert_eq!(first.status(), 204);
    assert_eq!(first.header("x-labrelay-outcome"), Some("suppressed"));
    assert_eq!(first.header("x-labrelay-reason"), Some("smtp 550 5.1.1"));

    // The server would take it now; the address stays suppressed.
    sink.set_mode(Mode::Accept);
    let before = sink.events();
    let second = app.push(&envelope(&full_report("LR-S2"), "s2", 1)).await;
    assert_eq!(second.status(), 204);
    assert_eq!(second.header("x-labrelay-outcome"), Some("suppressed"));
    assert!(
        !sink
            .wait_for_event_after(before, std::time::Duration::from_millis(500))
            .await,
        "the server was called for a suppressed address"
    );

    let stored = SqliteLog::open(&log).unwrap().suppressions().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].channel.as_str(), stored[0].reason.as_str()),
        ("email", "smtp 550 5.1.1")
    );
    let bytes = std::fs::read(&log).unwrap();
    assert!(!bytes.windows(16).any(|w| w == b"alex@example.com"));
    app.shutdown().await.unwrap();
}
