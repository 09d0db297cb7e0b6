//! The notification log (`NOTIFY_LOG`) against a real SMTP server: a
//! redelivery, a re-post and a restart send nothing twice; a corrected
//! report is sent again.

use labrelay_testkit::smtp::SmtpSink;

use crate::helpers::{PATIENCE, TestApp, envelope, full_report, settings, spawn_app};

async fn app_with_log(sink: &SmtpSink, log: &std::path::Path) -> TestApp {
    let url = format!("sqlite://{}", log.display());
    spawn_app(settings(&[("SMTP_URL", &sink.url()), ("NOTIFY_LOG", &url)])).await
}

/// Waits until the sink holds `n` messages, then a little longer to catch
/// any extra one.
async fn settled_count(sink: &SmtpSink, n: usize) -> usize {
    sink.wait_for_messages(n, PATIENCE).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sink.messages().len()
}

#[tokio::test]
async fn a_redelivered_push_and_a_repost_send_one_email() {
    let sink = SmtpSink::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_log(&sink, &dir.path().join("n.sqlite3")).await;
    let report = full_report("LR-DUP-1");

    assert_eq!(app.push(&envelope(&report, "2001", 1)).await.status(), 204);
    // The broker redelivers the same message (lost ack).
    assert_eq!(app.push(&envelope(&report, "2001", 2)).await.status(), 204);
    // The lab posts the same report again: another Pub/Sub message.
    assert_eq!(app.push(&envelope(&report, "2002", 1)).await.status(), 204);

    assert_eq!(settled_count(&sink, 1).await, 1);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_deliveries_of_one_message_send_one_email() {
    let sink = SmtpSink::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_log(&sink, &dir.path().join("n.sqlite3")).await;
    let push = envelope(&full_report("LR-DUP-2"), "2101", 1);

    let answers = push_concurrently(&app, &push, 5).await;
    assert!(answers.iter().all(|s| *s == 204), "{answers:?}");
    assert_eq!(settled_count(&sink, 1).await, 1);
    app.shutdown().await.unwrap();
}

async fn push_concurrently(app: &TestApp, push: &serde_json::Value, n: usize) -> Vec<u16> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let addr = app.addr;
        let body = push.to_string().into_bytes();
        set.spawn(async move {
            crate::helpers::http(addr, "POST", "/", &body)
                .await
                .unwrap()
                .status
        });
    }
    set.join_all().await
}

#[tokio::test]
async fn a_corrected_report_is_sent_again() {
    let sink = SmtpSink::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_log(&sink, &dir.path().join("n.sqlite3")).await;
    let report = full_report("LR-DUP-3");
    let mut corrected = report.clone();
    corrected["tests"][0]["value"] = serde_json::json!(43);

    assert_eq!(app.push(&envelope(&report, "2201", 1)).await.status(), 204);
    assert_eq!(
        app.push(&envelope(&corrected, "2202", 1)).await.status(),
        204
    );
    assert_eq!(
        app.push(&envelope(&corrected, "2202", 2)).await.status(),
        204
    );

    assert_eq!(settled_count(&sink, 2).await, 2);
    let ids: Vec<_> = sink
        .messages()
        .iter()
        .map(|m| m.message_id().map(String::from))
        .collect();
    assert_ne!(ids[0], ids[1], "a corrected report is another message");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_log_survives_a_restart() {
    let sink = SmtpSink::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("n.sqlite3");
    let report = full_report("LR-DUP-4");

    let app = app_with_log(&sink, &log).await;
    assert_eq!(app.push(&envelope(&report, "2301", 1)).await.status(), 204);
    app.shutdown().await.unwrap();

    let app = app_with_log(&sink, &log).await;
    assert_eq!(app.push(&envelope(&report, "2301", 2)).await.status(), 204);
    assert_eq!(settled_count(&sink, 1).await, 1);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_log_a_redelivery_sends_again() {
    let sink = SmtpSink::start().await.unwrap();
    let app = spawn_app(settings(&[("SMTP_URL", &sink.url())])).await;
    let report = full_report("LR-DUP-5");
    assert_eq!(app.push(&envelope(&report, "2401", 1)).await.status(), 204);
    assert_eq!(app.push(&envelope(&report, "2401", 2)).await.status(), 204);
    assert_eq!(settled_count(&sink, 2).await, 2);
    app.shutdown().await.unwrap();
}

/// An SMTP server slower than the send timeout: the broker is answered 503
/// on time, the attempt goes on and is recorded, and the redelivery finds
/// the record instead of sending again. (When the attempt was cut off at
/// the timeout, its claim was released and the redelivery sent a second
/// email: the server had kept the first.)
#[tokio::test]
async fn a_delivery_outliving_the_send_timeout_goes_on_and_is_sent_once() {
    use labrelay_testkit::smtp::Mode;
    use std::time::{Duration, Instant};

    let sink = SmtpSink::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("n.sqlite3").display());
    let app = spawn_app(settings(&[
        ("SMTP_URL", &sink.url()),
        ("NOTIFY_LOG", &url),
        ("SMTP_TIMEOUT_SECS", "1"),
    ]))
    .await;
    sink.set_mode(Mode::Slow(Duration::from_secs(2)));
    let report = full_report("LR-DUP-SLOW");

    let started = Instant::now();
    let first = app.push(&envelope(&report, "2201", 1)).await;
    assert_eq!(first.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}, not at the 1 s send timeout",
        started.elapsed()
    );
    // The server is fast again; the attempt still waits for its answer.
    sink.set_mode(Mode::Accept);
    sink.wait_for_messages(1, PATIENCE).await.unwrap();

    let redelivery = app.push(&envelope(&report, "2201", 2)).await;
    assert_eq!(redelivery.status(), 204);
    assert_eq!(redelivery.header("x-labrelay-outcome"), Some("duplicate"));
    assert_eq!(settled_count(&sink, 1).await, 1);
    app.shutdown().await.unwrap();
}

/// An SMTP server that takes 33 s to answer the final "." (longer than
/// the 4 s attempt limit a 1 s send timeout used to give, and than the
/// claim's 29 s lease), as a real server that checks the message before it
/// answers; two instances on one log, the broker redelivering once a
/// second to each in turn. The attempt waits for the answer
/// (`SMTP_DATA_TIMEOUT_SECS`, 300 s) instead of being cut off, and its
/// claim is renewed meanwhile, so the other instance is answered 503 (the
/// claim is held) until the email is recorded, then `duplicate`. (Cut off
/// at 4 s, the claim lapsed at 29 s and a redelivery sent the email again;
/// with the cut gone and no renewal, the other instance took the lapsed
/// claim over and sent it too.)
#[tokio::test]
async fn smtp_slower_than_the_attempt_limit_and_the_lease_sends_once_across_two_instances() {
    use labrelay_testkit::smtp::Mode;
    use std::time::{Duration, Instant};

    let sink = SmtpSink::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("n.sqlite3").display());
    let vars = [
        ("SMTP_URL", sink.url()),
        ("NOTIFY_LOG", url),
        ("SMTP_TIMEOUT_SECS", "1".into()),
    ];
    let vars: Vec<_> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let apps = [
        spawn_app(settings(&vars)).await,
        spawn_app(settings(&vars)).await,
    ];
    let slow = Duration::from_secs(33);
    sink.set_mode(Mode::Slow(slow));
    let report = full_report("LR-DUP-SLOWER");

    let started = Instant::now();
    let mut answers = Vec::new();
    let mut attempt = 0;
    while started.elapsed() < slow + Duration::from_secs(4) {
        let app = &apps[attempt % 2];
        attempt += 1;
        let answer = app.push(&envelope(&report, "2301", attempt as u32)).await;
        let outcome = answer.header("x-labrelay-outcome").map(str::to_string);
        answers.push((started.elapsed().as_secs(), answer.status(), outcome));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        sink.data_count(),
        1,
        "emails handed to the server: {answers:?}"
    );
    assert_eq!(settled_count(&sink, 1).await, 1);
    // Every delivery before the answer waited (503); at least one after it
    // found the record.
    let (before, after): (Vec<_>, Vec<_>) = answers
        .iter()
        .partition(|(secs, _, _)| *secs < slow.as_secs());
    assert!(
        before.iter().all(|(_, status, _)| *status == 503),
        "{answers:?}"
    );
    assert!(
        after
            .iter()
            .any(|(_, status, outcome)| *status == 204 && outcome.as_deref() == Some("duplicate")),
        "{answers:?}"
    );
    for app in apps {
        app.shutdown().await.unwrap();
    }
}

/// An SMTP server slower than `SMTP_DATA_TIMEOUT_SECS` (1 s here) that
/// keeps what it was sent, as a real server that got the data would: the
/// attempt ends without knowing whether the email went out, so its claim
/// is kept, and the broker's redeliveries, one a second, are answered 503
/// instead of sending one more email each.
#[tokio::test]
async fn a_delivery_without_an_answer_to_its_data_is_not_sent_again_by_its_redeliveries() {
    use labrelay_testkit::smtp::Mode;
    use std::time::{Duration, Instant};

    let sink = SmtpSink::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("n.sqlite3").display());
    let app = spawn_app(settings(&[
        ("SMTP_URL", &sink.url()),
        ("NOTIFY_LOG", &url),
        ("SMTP_TIMEOUT_SECS", "1"),
        ("SMTP_DATA_TIMEOUT_SECS", "1"),
    ]))
    .await;
    sink.set_mode(Mode::Slow(Duration::from_secs(6)));
    let report = full_report("LR-DUP-CUT");

    let started = Instant::now();
    let mut attempt = 0;
    // The broker's redeliveries, one a second, until well after the cut
    // at 1 s and the server keeping the email at 6 s.
    while started.elapsed() < Duration::from_secs(9) {
        attempt += 1;
        let answer = app.push(&envelope(&report, "2401", attempt)).await;
        assert_eq!(answer.status(), 503, "attempt {attempt}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(sink.data_count(), 1, "emails handed to the server");
    assert_eq!(settled_count(&sink, 1).await, 1);
    app.shutdown().await.unwrap();
}
