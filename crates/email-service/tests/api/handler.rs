//! The fast tier: the router driven in process with `oneshot`, delivering
//! to a directory outbox.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::helpers::{envelope, envelope_bytes, full_report, settings};

async fn call(dir: &std::path::Path, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let app = labrelay_email_service::app(settings(&[(
        "SMTP_URL",
        &format!("file://{}", dir.display()),
    )]))
    .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, body.to_vec())
}

fn post(body: &Value) -> Request<Body> {
    Request::post("/")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn maps_pushes_to_statuses() {
    let mut bad_address = full_report("A");
    bad_address["owner"]["email"] = json!("nobody");
    let cases = [
        (envelope(&full_report("A"), "1", 1), 204, 1),
        (envelope(&json!({"id": 12}), "2", 1), 204, 0),
        (envelope(&bad_address, "3", 1), 422, 0),
        (envelope_bytes(b"[1, 2]", "4", 1), 400, 0),
        (json!({"message": {}}), 400, 0),
    ];
    for (body, want_status, want_files) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (status, response_body) = call(dir.path(), post(&body)).await;
        assert_eq!(status.as_u16(), want_status, "{body}");
        assert_eq!(count(dir.path()), want_files, "{body}");
        if want_status == 204 {
            assert!(response_body.is_empty());
        } else {
            let error: Value = serde_json::from_slice(&response_body).unwrap();
            assert!(error["error"].is_string(), "{error}");
        }
    }
}

#[tokio::test]
async fn healthz_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _) = call(
        dir.path(),
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(dir.path(), Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = call(
        dir.path(),
        Request::get("/nope").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
