use std::path::{Path, PathBuf};

use labrelay_sms_service::Settings;
use serde_json::{Value, json};

use crate::helpers::*;

fn outbox_settings(dir: &Path) -> Settings {
    let url = format!("file://{}", dir.display());
    Settings::from_vars(|name| match name {
        "SMS_URL" => Some(url.clone()),
        "PUSH_AUTH" => Some("off".into()),
        _ => None,
    })
    .unwrap()
}

/// Every entry of `dir`, hidden temporary files included.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    entries
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn writes_one_json_file_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox/sms");
    let app = spawn_app(outbox_settings(&outbox)).await;

    let response = app
        .push(&envelope(
            &report("LR-20", Some("+1 555 123 4567")),
            "m20",
            1,
        ))
        .await;

    assert_eq!(response.status(), 204);
    let files = entries(&outbox);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("LR-20-") && name.ends_with(".json"),
        "{name}"
    );
    assert_eq!(
        read(&files[0]),
        json!({
            "to": "+15551234567",
            "from": "labrelay",
            "body": notice("LR-20"),
            "reportId": "LR-20",
            "messageId": "m20",
        })
    );
}

#[tokio::test]
async fn a_redelivery_rewrites_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(outbox_settings(dir.path())).await;
    let report = report("LR-21", Some("+15551234567"));

    for attempt in 1..=3 {
        let response = app.push(&envelope(&report, "m21", attempt)).await;
        assert_eq!(response.status(), 204);
    }
    // The lab posting the same report again: a new Pub/Sub message, the
    // same SMS.
    assert_eq!(
        app.push(&envelope(&report, "m21-again", 1)).await.status(),
        204
    );

    let files = entries(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(read(&files[0])["messageId"], "m21-again");

    let other = self::report_for_other_pet("LR-22");
    assert_eq!(app.push(&envelope(&other, "m22", 1)).await.status(), 204);
    assert_eq!(entries(dir.path()).len(), 2);
}

fn report_for_other_pet(id: &str) -> Value {
    let mut report = report(id, Some("+15551234567"));
    report["pet"]["name"] = json!("Bella");
    report
}

#[tokio::test]
async fn skipped_and_invalid_pushes_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(outbox_settings(dir.path())).await;

    assert_eq!(
        app.push(&envelope(&json!({"id": 12}), "m", 1))
            .await
            .status(),
        204
    );
    assert_eq!(
        app.push(&envelope(&report("LR-23", Some("5551234567")), "m", 1))
            .await
            .status(),
        422
    );
    assert_eq!(app.push_body("{}").await.status(), 400);

    assert!(entries(dir.path()).is_empty());
}

#[tokio::test]
async fn an_unwritable_outbox_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("sms");
    let app = spawn_app(outbox_settings(&outbox)).await;
    // The directory disappears after start-up (a full or unmounted disk).
    std::fs::remove_dir(&outbox).unwrap();

    let response = app
        .push(&envelope(&report("LR-24", Some("+15551234567")), "m24", 1))
        .await;

    assert_eq!(response.status(), 503);
}
