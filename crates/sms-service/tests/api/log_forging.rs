//! Text a push carries (its message id, its report id) cannot forge a line
//! of the text log: a newline in it is logged escaped, on the line it
//! belongs to. Whoever can push (or publish to the topic) chooses that
//! text, and a report published straight to the topic never passed the
//! ingest's checks.

use crate::helpers::{envelope, error_of, report, spawn_with_twilio};

/// What a forger would like to see as a line of its own.
const FORGED: &str = "\n2026-01-01T00:00:00.000000Z ERROR forged: all reports lost";

// Current-thread runtime: the service's tasks run on this thread, so the
// thread-local subscriber sees their events.
#[tokio::test(flavor = "current_thread")]
async fn a_newline_in_a_pushed_id_cannot_start_a_log_line() {
    let (captured, _guard) = labrelay_testkit::logs::capture(tracing::Level::DEBUG);
    let (_twilio, app) = spawn_with_twilio().await;

    // A message id of the push's choosing, on a valid report.
    let message_id = format!("m60{FORGED}");
    let response = app
        .push(&envelope(
            &report("LR-60", Some("+15551234567")),
            &message_id,
            1,
        ))
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    // A report id that never passed the ingest: refused as malformed.
    let response = app
        .push(&envelope(
            &report(&format!("LR-61{FORGED}"), None),
            "m61",
            1,
        ))
        .await;
    assert_eq!(response.status(), 400);
    let error = error_of(response).await;
    assert!(
        error.contains("U+000A"),
        "the refusal names the character: {error}"
    );
    app.stop().await.unwrap();

    let logs = captured.text();
    assert!(
        logs.lines()
            .all(|line| !line.contains("forged: all reports lost")
                || line.contains(r"\n2026-01-01T00:00:00.000000Z ERROR forged")),
        "a pushed id started a line of its own:\n{logs}"
    );
    assert!(
        !logs
            .lines()
            .any(|line| line.starts_with("2026-01-01T00:00:00.000000Z")),
        "{logs}"
    );
    assert!(logs.contains(r#"message_id="m60\n2026-01-01"#), "{logs}");
}
