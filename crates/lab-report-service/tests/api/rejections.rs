//! Bodies that are not lab reports: a 4xx that says why, and nothing
//! published.

use crate::helpers::{error_message, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reports_get_400_naming_the_problem() {
    let app = spawn_app().await;
    let long_id = format!(r#"{{"id": "{}"}}"#, "x".repeat(129));
    let cases: &[(&str, &str)] = &[
        (r#"{"id": 12"#, "not valid JSON"),
        ("", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ("{}", "`id` is required"),
        (r#"{"id": null}"#, "`id` must be"),
        (r#"{"id": 1.5}"#, "`id` must be"),
        (r#"{"id": ""}"#, "`id` must be"),
        (&long_id, "`id` must be"),
        (r#"{"id": "LR-1\nWARN forged"}"#, "U+000A"),
        (r#"{"id": "LR-1\r"}"#, "must not contain control"),
        (r#"{"id": "LR-\u202e1"}"#, "U+202E"),
        (r#"{"id": "LR-\u00001"}"#, "U+0000"),
        (r#"{"id": 1, "owner": "Alex Kim"}"#, "`owner`"),
        (
            r#"{"id": 1, "tests": [{"value": {"a": 1}}]}"#,
            "`tests[0].value`",
        ),
    ];

    for (body, names) in cases {
        let response = app.post_json(body.to_string()).await;
        assert_eq!(response.status(), 400, "{body}");
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE].clone();
        assert_eq!(content_type, "application/json", "{body}");
        let message = error_message(response).await;
        assert!(
            message.contains(names),
            "{body}: {message:?} does not name {names:?}"
        );
    }
    app.assert_nothing_published().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413_saying_the_limit() {
    let app = spawn_app_with(|s| s.max_body_bytes = 64).await;
    let body = format!(r#"{{"id": 7, "note": "{}"}}"#, "x".repeat(100));

    let response = app.post_json(body).await;

    assert_eq!(response.status(), 413);
    let message = error_message(response).await;
    assert!(message.contains("64 bytes"), "{message:?}");
    app.assert_nothing_published().await;

    let response = app.post_json(r#"{"id": 7}"#).await;
    assert_eq!(
        response.status(),
        204,
        "a body under the limit still passes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_content_types_get_415() {
    let app = spawn_app().await;
    let cases = [
        (Some("text/plain"), "text/plain"),
        (
            Some("application/x-www-form-urlencoded"),
            "application/x-www-form-urlencoded",
        ),
        (None, "missing"),
    ];

    for (content_type, named) in cases {
        let response = app.post(r#"{"id": 12}"#, content_type).await;
        assert_eq!(response.status(), 415, "{content_type:?}");
        let message = error_message(response).await;
        assert!(message.contains("application/json"), "{message:?}");
        assert!(message.contains(named), "{message:?}");
    }
    app.assert_nothing_published().await;
}
