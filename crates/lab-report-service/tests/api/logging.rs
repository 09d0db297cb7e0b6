//! One log line per report, naming the report and the outcome, never the
//! owner or the results.

use std::time::Duration;

use crate::helpers::{spawn_app, spawn_app_without_broker};

const OWNER_DETAILS: [&str; 4] = ["Alex", "alex@example.com", "+15551234567", "U/L"];

// Current-thread runtime: the service's tasks run on this thread, so the
// thread-local subscriber sees their events and no other test's.
#[tokio::test]
async fn logs_name_the_report_and_outcome_but_no_personal_data() {
    let (captured, _guard) = labrelay_testkit::logs::capture(tracing::Level::INFO);

    let app = spawn_app().await;
    let full = r#"{"id": "LR-7", "owner": {"name": "Alex Kim", "email": "alex@example.com", "phone": "+15551234567"},
                   "tests": [{"name": "ALT", "value": 42, "unit": "U/L"}]}"#;
    assert_eq!(app.post_json(full).await.status(), 204);
    assert_eq!(
        app.post_json(r#"{"id": 8, "owner": "Alex Kim"}"#)
            .await
            .status(),
        400
    );
    assert_eq!(
        app.post_json(r#"{"id": 9, "owner": {"email": ["alex@example.com"]}}"#)
            .await
            .status(),
        400
    );
    let down = spawn_app_without_broker(|s| s.publish_timeout = Duration::from_millis(300)).await;
    assert_eq!(down.post_json(full).await.status(), 503);

    let logs = captured.text();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("outcome=")).collect();
    assert_eq!(lines.len(), 4, "one line per request:\n{logs}");
    assert!(
        lines[0].contains(r#"report_id="LR-7""#) && lines[0].contains(r#"outcome="stored""#),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(r#"outcome="rejected""#) && lines[1].contains("owner"),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].contains("WARN") && lines[3].contains(r#"outcome="unavailable""#),
        "{}",
        lines[3]
    );
    for detail in OWNER_DETAILS {
        assert!(!logs.contains(detail), "{detail:?} is in the logs:\n{logs}");
    }
    eprintln!("{logs}");
}

/// A report id with a newline could forge a line of the text log: it is
/// refused at parse, and the rejection's line does not repeat it.
#[tokio::test]
async fn an_id_with_a_newline_is_refused_and_forges_no_line() {
    let (captured, _guard) = labrelay_testkit::logs::capture(tracing::Level::DEBUG);

    let app = spawn_app().await;
    let forged = "LR-9\n2026-01-01T00:00:00.000000Z ERROR forged: all reports lost";
    let body = serde_json::json!({ "id": forged }).to_string();
    let response = app.post_json(body).await;
    assert_eq!(response.status(), 400);
    let message = crate::helpers::error_message(response).await;
    assert!(message.contains("U+000A"), "{message}");
    app.assert_nothing_published().await;

    let logs = captured.text();
    assert!(!logs.contains("forged"), "{logs}");
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("outcome=")).collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(
        lines[0].contains(r#"reason=id with a refused character U+000A"#),
        "{}",
        lines[0]
    );
}
