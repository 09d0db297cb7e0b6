//! Ingest API keys: only a configured lab's key gets a report in, and the
//! lab's name travels with it.

use labrelay_lab_report_service::ingest_auth::{IngestAuth, IngestKeys};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};

use crate::helpers::{error_message, spawn_app_with, within};

const KEY: &str = "0123456789abcdef-test-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_known_key_gets_a_report_in_and_names_its_lab() {
    let app = spawn_app_with(|settings| {
        settings.ingest_auth = IngestAuth::Keys(IngestKeys::default().with_key("idexx", KEY));
    })
    .await;
    let post = |authorization: Option<&'static str>| {
        let mut request = app
            .http
            .post(format!("{}/", app.url))
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"id": 12}"#);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        within("the service's answer", request.send())
    };

    for authorization in [
        None,
        Some("Bearer wrong-key"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let response = post(authorization).await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
        let message = error_message(response).await;
        assert!(message.contains("API key"), "{message}");
    }
    app.assert_nothing_published().await;

    let response = post(Some("Bearer 0123456789abcdef-test-key"))
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let published = app.take_published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(
        published[0].attributes.get("lab").map(String::as_str),
        Some("idexx")
    );
}
