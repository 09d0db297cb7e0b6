//! Text a push carries (its message id, its `reportId` attribute, its
//! report id) cannot forge a line of the text log: a newline in it is
//! logged escaped, on the line it belongs to. Whoever can push (or publish
//! to the topic) chooses that text, and a report published straight to the
//! topic never passed the ingest's checks.

use labrelay_testkit::push::Push;

use crate::helpers::{SUBSCRIPTION, envelope, error_of, full_report, settings, spawn_app};

/// What a forger would like to see as a line of its own.
const FORGED: &str = "\n2026-01-01T00:00:00.000000Z ERROR forged: all reports lost";

// Current-thread runtime: the service's tasks run on this thread, so the
// thread-local subscriber sees their events.
#[tokio::test(flavor = "current_thread")]
async fn a_newline_in_pushed_text_cannot_start_a_log_line() {
    let (captured, _guard) = labrelay_testkit::logs::capture(tracing::Level::DEBUG);
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let app = spawn_app(settings(&[(
        "SMTP_URL",
        &format!("file://{}", outbox.display()),
    )]))
    .await;

    // A message id of the push's choosing, on a valid report.
    let response = app
        .push(&envelope(&full_report("LR-70"), &format!("m70{FORGED}"), 1))
        .await;
    assert_eq!(response.status(), 204);
    // A report id that never passed the ingest is refused as malformed;
    // the push's `reportId` attribute names it in the logs.
    let id = format!("LR-71{FORGED}");
    let response = app
        .push(
            &Push::report(SUBSCRIPTION, &full_report(&id))
                .message_id("m71")
                .attribute("reportId", &id)
                .json(),
        )
        .await;
    assert_eq!(response.status(), 400);
    let error = error_of(response).await;
    assert!(
        error.contains("U+000A"),
        "the refusal names the character: {error}"
    );
    app.shutdown().await.unwrap();

    let logs = captured.text();
    assert!(
        !logs
            .lines()
            .any(|line| line.starts_with("2026-01-01T00:00:00.000000Z")),
        "pushed text started a line of its own:\n{logs}"
    );
    assert!(logs.contains(r#"message_id="m70\n2026-01-01"#), "{logs}");
    assert!(logs.contains(r#"report_id="LR-71\n2026-01-01"#), "{logs}");
}
