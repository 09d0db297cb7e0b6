//! Against a real SMTP server (aiosmtpd): sent, skipped, transient,
//! permanent and malformed pushes, and the way back from each failure.

use std::time::{Duration, Instant};

use labrelay_testkit::smtp::{Mode, SmtpSink};
use serde_json::json;

use crate::helpers::{
    PATIENCE, envelope, envelope_bytes, error_of, full_report, http, settings, spawn_app,
};

async fn sink_and_app() -> (SmtpSink, crate::helpers::TestApp) {
    let sink = SmtpSink::start().await.expect("the SMTP sink starts");
    let app = spawn_app(settings(&[
        ("SMTP_URL", &sink.url()),
        ("EMAIL_REPLY_TO", "desk@pettheory.example"),
    ]))
    .await;
    (sink, app)
}

#[tokio::test]
async fn sends_a_multipart_email_with_the_whole_report() {
    let (sink, app) = sink_and_app().await;

    let response = app
        .push(&envelope(&full_report("LR-2026-000123"), "1001", 1))
        .await;
    assert_eq!(response.status(), 204);

    let mails = sink.wait_for_messages(1, PATIENCE).await.unwrap();
    let [mail] = mails.as_slice() else {
        panic!("one message expected, got {}", mails.len())
    };
    assert_eq!(mail.rcpt_to, ["alex@example.com"]);
    assert_eq!(mail.mail_from, "results@pettheory.example");
    assert_eq!(mail.header("To"), Some("\"Alex Kim\" <alex@example.com>"));
    assert_eq!(
        mail.header("From"),
        Some("\"Pet Theory\" <results@pettheory.example>")
    );
    assert_eq!(mail.header("Reply-To"), Some("desk@pettheory.example"));
    assert_eq!(mail.subject(), Some("Lab results for Max are ready"));
    assert_eq!(mail.header("X-Report-Id"), Some("LR-2026-000123"));
    assert_eq!(mail.header("Auto-Submitted"), Some("auto-generated"));
    let message_id = mail.message_id().unwrap();
    assert!(
        message_id.starts_with('<')
            && message_id.ends_with("@labrelay>")
            && message_id.len() == 32 + "<@labrelay>".len(),
        "{message_id}"
    );

    assert_eq!(mail.content_type(), "multipart/alternative");
    let types: Vec<&str> = mail.parts.iter().map(|p| p.content_type.as_str()).collect();
    assert_eq!(
        types,
        ["text/plain", "text/html"],
        "plain text first, then HTML"
    );
    // The HTML carries characters beyond ASCII as references in short lines
    // (a 7bit part).
    let html = mail
        .html()
        .unwrap()
        .replace("&#x25B2;", "▲")
        .replace("&#x25BC;", "▼")
        // The templates escape `/` too, as minijinja does.
        .replace("&#x2f;", "/")
        // A line break in HTML reads as a space.
        .replace('\n', " ");
    for body in [mail.text().unwrap(), html.as_str()] {
        for want in [
            "Alex Kim",
            "Max",
            "dog",
            "Pet Theory Downtown",
            "+15551230000",
            "LR-2026-000123",
            "24 November 2026, 10:00 UTC",
            "ALT",
            "42 U/L",
            "10-100",
            "Normal",
            "Glucose",
            "180 mg/dL",
            "70-140",
            "▲",
            "High",
            "Platelets",
            "90 10^9/L",
            "150-500",
            "▼",
            "Low",
        ] {
            assert!(body.contains(want), "{want:?} missing from:\n{body}");
        }
    }
}

#[tokio::test]
async fn a_redelivery_carries_the_same_message_id() {
    let (sink, app) = sink_and_app().await;
    let report = full_report("LR-7");

    assert_eq!(app.push(&envelope(&report, "2001", 1)).await.status(), 204);
    assert_eq!(app.push(&envelope(&report, "2001", 2)).await.status(), 204);

    let mails = sink.wait_for_messages(2, PATIENCE).await.unwrap();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[0].message_id(), mails[1].message_id());
    assert!(mails[0].message_id().is_some());
}

#[tokio::test]
async fn escapes_a_hostile_pet_name_in_html() {
    let (sink, app) = sink_and_app().await;
    let mut report = full_report("LR-8");
    report["pet"]["name"] = json!("<script>alert('x')</script>");

    assert_eq!(app.push(&envelope(&report, "3001", 1)).await.status(), 204);

    let mails = sink.wait_for_messages(1, PATIENCE).await.unwrap();
    let html = mails[0].html().unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"),
        "{html}"
    );
    assert!(
        mails[0]
            .text()
            .unwrap()
            .contains("<script>alert('x')</script>"),
        "plain text is not HTML"
    );
}

#[tokio::test]
async fn skips_a_report_without_an_owner_email() {
    let (sink, app) = sink_and_app().await;
    let mut no_email = full_report("LR-9");
    no_email["owner"]["email"] = json!(null);

    for (i, report) in [
        no_email,
        json!({"id": 12}),
        json!({"id": 13, "owner": {"email": ""}}),
    ]
    .iter()
    .enumerate()
    {
        let response = app.push(&envelope(report, &format!("400{i}"), 1)).await;
        assert_eq!(response.status(), 204, "{report}");
    }
    assert!(sink.messages().is_empty());
    assert_eq!(sink.accepted_count(), 0);
}

#[tokio::test]
async fn a_451_is_transient_and_heals_once_smtp_accepts() {
    let (sink, app) = sink_and_app().await;
    let push = envelope(&full_report("LR-10"), "5001", 1);

    sink.set_mode(Mode::TempFail);
    let response = app.push(&push).await;
    assert_eq!(response.status(), 503);
    let error = error_of(response).await;
    assert!(error.contains("451"), "{error}");
    assert!(!error.contains("alex"), "{error}");
    assert!(sink.messages().is_empty());

    sink.set_mode(Mode::Accept);
    assert_eq!(
        app.push(&envelope(&full_report("LR-10"), "5001", 2))
            .await
            .status(),
        204
    );
    let mails = sink.wait_for_messages(1, PATIENCE).await.unwrap();
    assert_eq!(mails.len(), 1, "exactly once");
}

#[tokio::test]
async fn smtp_down_is_transient_and_heals_when_it_is_back() {
    let (mut sink, app) = sink_and_app().await;
    let push = envelope(&full_report("LR-11"), "6001", 1);
    assert_eq!(
        app.push(&push).await.status(),
        204,
        "a pooled connection exists"
    );

    sink.stop().await.unwrap();
    let response = app.push(&push).await;
    assert_eq!(response.status(), 503);
    assert!(error_of(response).await.contains("SMTP server"));

    sink.restart().await.unwrap();
    assert_eq!(app.push(&push).await.status(), 204);
    let mails = sink.wait_for_messages(2, PATIENCE).await.unwrap();
    assert_eq!(mails.len(), 2);
}

#[tokio::test]
async fn a_closed_port_is_transient() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let app = spawn_app(settings(&[(
        "SMTP_URL",
        &format!("smtp://127.0.0.1:{closed}"),
    )]))
    .await;
    let response = app.push(&envelope(&full_report("LR-12"), "7001", 1)).await;
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn a_slow_server_past_the_timeout_is_transient() {
    let sink = SmtpSink::start().await.unwrap();
    let app = spawn_app(settings(&[
        ("SMTP_URL", &sink.url()),
        ("SMTP_TIMEOUT_SECS", "1"),
    ]))
    .await;
    sink.set_mode(Mode::Slow(Duration::from_secs(30)));

    let started = Instant::now();
    let response = app.push(&envelope(&full_report("LR-13"), "8001", 1)).await;
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_550_is_permanent() {
    let (sink, app) = sink_and_app().await;
    sink.set_mode(Mode::PermFail);

    let response = app.push(&envelope(&full_report("LR-14"), "9001", 1)).await;
    assert_eq!(response.status(), 422);
    let error = error_of(response).await;
    assert!(error.contains("550"), "{error}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn an_invalid_owner_address_is_permanent() {
    let (sink, app) = sink_and_app().await;
    let mut report = full_report("LR-15");
    report["owner"]["email"] = json!("alex at example dot com");

    let response = app.push(&envelope(&report, "9101", 1)).await;
    assert_eq!(response.status(), 422);
    let error = error_of(response).await;
    assert_eq!(error, "the owner email is not a valid address");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn malformed_pushes_are_refused_and_nothing_is_sent() {
    let (sink, app) = sink_and_app().await;
    let mut bad_base64 = envelope(&full_report("LR-16"), "9201", 1);
    bad_base64["message"]["data"] = json!("***not base64***");

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not a Pub/Sub push envelope"),
        (
            br#"{"subscription": "s"}"#.to_vec(),
            "not a Pub/Sub push envelope",
        ),
        (bad_base64.to_string().into_bytes(), "not valid base64"),
        (
            envelope_bytes(b"not json", "9202", 1)
                .to_string()
                .into_bytes(),
            "not valid JSON",
        ),
        (
            envelope_bytes(br#"{"id": null}"#, "9203", 1)
                .to_string()
                .into_bytes(),
            "`id` must be",
        ),
        (
            envelope_bytes(br#"{"owner": {"email": "alex@example.com"}}"#, "9204", 1)
                .to_string()
                .into_bytes(),
            "`id` is required",
        ),
        (
            envelope_bytes(br#"{"id": 1, "owner": "alex@example.com"}"#, "9205", 1)
                .to_string()
                .into_bytes(),
            "`owner`",
        ),
    ];
    for (body, want) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let response = app.post_raw(body).await;
        assert_eq!(response.status(), 400, "{shown}");
        let error = error_of(response).await;
        assert!(error.contains(want), "{shown}: {error}");
        assert!(!error.contains("alex@example.com"), "{error}");
    }
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn implicit_tls_against_a_plain_server_is_transient() {
    let sink = SmtpSink::start().await.unwrap();
    for url in [
        format!("smtps://127.0.0.1:{}", sink.port()),
        format!("smtp://127.0.0.1:{}?tls=required", sink.port()),
    ] {
        let app = spawn_app(settings(&[("SMTP_URL", &url), ("SMTP_TIMEOUT_SECS", "3")])).await;
        let response = app.push(&envelope(&full_report("LR-17"), "9301", 1)).await;
        assert_eq!(response.status(), 503, "{url}");
    }
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn authenticates_with_a_password_file_and_retries_on_bad_credentials() {
    let sink = SmtpSink::start_with_auth("labrelay", "correct horse")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("smtp-password");
    std::fs::write(&password_file, "correct horse\n").unwrap();
    let good = spawn_app(settings(&[
        ("SMTP_URL", &sink.url()),
        ("SMTP_USERNAME", "labrelay"),
        ("SMTP_PASSWORD_FILE", password_file.to_str().unwrap()),
    ]))
    .await;
    let bad = spawn_app(settings(&[
        ("SMTP_URL", &sink.url()),
        ("SMTP_USERNAME", "labrelay"),
        ("SMTP_PASSWORD", "wrong"),
    ]))
    .await;
    let anonymous = spawn_app(settings(&[("SMTP_URL", &sink.url())])).await;

    let push = envelope(&full_report("LR-18"), "9401", 1);
    let response = bad.push(&push).await;
    assert_eq!(
        response.status(),
        503,
        "our credentials, not the message, are wrong"
    );
    assert!(error_of(response).await.contains("credentials"));
    assert_eq!(anonymous.push(&push).await.status(), 503);
    assert_eq!(good.push(&push).await.status(), 204);
    assert_eq!(sink.wait_for_messages(1, PATIENCE).await.unwrap().len(), 1);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_push_finish() {
    let sink = SmtpSink::start().await.unwrap();
    let mut app = spawn_app(settings(&[
        ("SMTP_URL", &sink.url()),
        ("SMTP_TIMEOUT_SECS", "10"),
    ]))
    .await;
    sink.set_mode(Mode::Slow(Duration::from_millis(500)));

    let addr = app.addr;
    let body = envelope(&full_report("LR-19"), "9501", 1).to_string();
    let in_flight = tokio::spawn(async move { http(addr, "POST", "/", body.as_bytes()).await });

    sink.wait_for_data(1, PATIENCE).await.unwrap();
    let _ = app.shutdown_handle().send(());
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight push gets its answer");
    assert_eq!(response.status(), 204);
    app.join().await.unwrap();
    assert_eq!(sink.accepted_count(), 1);
}

#[tokio::test]
async fn healthz_answers() {
    let (_sink, app) = sink_and_app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.shutdown().await.unwrap();
}

/// Settings built in code skip `from_vars`; the service still refuses to
/// send a password where it could be read on the way.
#[tokio::test]
async fn credentials_without_tls_are_refused_at_start_even_when_built_in_code() {
    use labrelay_email_service::{Delivery, Secret, SmtpCredentials, SmtpServer, SmtpTls};
    let server = |host: &str, tls| SmtpServer {
        host: host.into(),
        port: 2525,
        tls,
        credentials: Some(SmtpCredentials {
            username: "labrelay".into(),
            password: Secret::new("correct horse"),
        }),
    };
    for tls in [SmtpTls::None, SmtpTls::Opportunistic] {
        let settings = settings(&[("SMTP_URL", "smtp://127.0.0.1:2525")]);
        let settings = labrelay_email_service::Settings {
            delivery: Delivery::Smtp(server("mail.example.com", tls)),
            ..settings
        };
        let error = format!("{:#}", labrelay_email_service::app(settings).unwrap_err());
        assert!(error.contains("tls=required"), "{tls:?}: {error}");
        assert!(!error.contains("correct horse"), "{error}");
    }
    let settings = settings(&[("SMTP_URL", "smtp://127.0.0.1:2525")]);
    for (host, tls) in [
        ("mail.example.com", SmtpTls::StartTls),
        ("mail.example.com", SmtpTls::Implicit),
        ("127.0.0.1", SmtpTls::None),
    ] {
        let settings = labrelay_email_service::Settings {
            delivery: Delivery::Smtp(server(host, tls)),
            ..settings.clone()
        };
        assert!(
            labrelay_email_service::app(settings).is_ok(),
            "{host} {tls:?}"
        );
    }
}
