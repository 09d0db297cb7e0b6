//! The directory outbox (`SMTP_URL=file:///dir`), as `labrelay up` uses it.

use std::path::Path;

use labrelay_testkit::smtp::ReceivedMail;

use crate::helpers::{envelope, full_report, settings, spawn_app};

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn writes_one_eml_per_message_and_a_redelivery_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox").join("email");
    let app = spawn_app(settings(&[(
        "SMTP_URL",
        &format!("file://{}", outbox.display()),
    )]))
    .await;

    let push = envelope(&full_report("LR-20"), "1", 1);
    assert_eq!(app.push(&push).await.status(), 204);
    let first = files(&outbox);
    assert_eq!(first.len(), 1, "{first:?}");
    let hash = first[0]
        .strip_prefix("LR-20-")
        .and_then(|name| name.strip_suffix(".eml"))
        .unwrap_or_else(|| panic!("named after the report and a hash: {first:?}"));
    assert_eq!(hash.len(), 32, "{first:?}");

    assert_eq!(
        app.push(&envelope(&full_report("LR-20"), "1", 2))
            .await
            .status(),
        204
    );
    assert_eq!(
        files(&outbox),
        first,
        "the same file, no temporary left behind"
    );

    let mail = ReceivedMail::read(&outbox.join(&first[0])).unwrap();
    assert_eq!(mail.header("X-Report-Id"), Some("LR-20"));
    assert_eq!(
        mail.message_id(),
        Some(format!("<{hash}@labrelay>").as_str())
    );
    assert_eq!(mail.header("To"), Some("\"Alex Kim\" <alex@example.com>"));
    assert_eq!(mail.content_type(), "multipart/alternative");
    assert!(mail.text().unwrap().contains("180 mg/dL"));

    assert_eq!(
        app.push(&envelope(&full_report("LR-21"), "2", 1))
            .await
            .status(),
        204
    );
    assert_eq!(files(&outbox).len(), 2, "another report, another file");
}

#[tokio::test]
async fn an_unwritable_outbox_is_transient() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let app = spawn_app(settings(&[(
        "SMTP_URL",
        &format!("file://{}/outbox", not_a_dir.display()),
    )]))
    .await;

    let response = app.push(&envelope(&full_report("LR-22"), "1", 1)).await;
    assert_eq!(response.status(), 503);
}

/// A clinic's template that does not compile stops the service before it
/// serves, with an error naming the file, the line and the problem; a
/// good one is what owners get.
#[tokio::test]
async fn a_clinic_template_is_checked_at_start_and_then_used() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let templates = dir.path().join("templates");
    let subject = templates.join("en").join("email_subject.txt");
    std::fs::create_dir_all(subject.parent().unwrap()).unwrap();
    std::fs::write(&subject, "Results\n{% if pet.name %}for {{ pet.name }}").unwrap();
    let vars = |templates: &Path| {
        settings(&[
            ("SMTP_URL", &format!("file://{}", outbox.display())),
            ("TEMPLATES_DIR", templates.to_str().unwrap()),
        ])
    };
    let error = format!(
        "{:#}",
        labrelay_email_service::app(vars(&templates)).unwrap_err()
    );
    assert!(
        error.contains(&format!(
            "template {}, line 2: syntax error",
            subject.display()
        )),
        "{error}"
    );

    std::fs::write(
        &subject,
        "Results for {{ pet.name or 'your pet' }} ({{ report_id }})",
    )
    .unwrap();
    let app = spawn_app(vars(&templates)).await;
    assert_eq!(
        app.push(&envelope(&full_report("LR-21"), "1", 1))
            .await
            .status(),
        204
    );
    let eml = std::fs::read_to_string(outbox.join(&files(&outbox)[0])).unwrap();
    assert!(
        eml.contains("Subject: Results for Max (LR-21)\r\n"),
        "{eml}"
    );
    // The other files are still the built-in ones.
    assert!(eml.contains("Hello Alex Kim,"), "{eml}");
}
