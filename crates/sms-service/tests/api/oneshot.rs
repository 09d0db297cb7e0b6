//! The fast tier: the router alone, without a socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use labrelay_sms_service::{Settings, app};
use tower::ServiceExt as _;

use crate::helpers::*;

async fn call(router: axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn post(body: String) -> Request<Body> {
    Request::post("/")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn routes_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let router = app(Settings::outbox(dir.path())).unwrap();

    let (status, body) = call(
        router.clone(),
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

    let (status, _) = call(
        router.clone(),
        Request::get("/").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    let (status, body) = call(router.clone(), post("[]".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.starts_with("{\"error\":\"the body is not a Pub/Sub push envelope"),
        "{body}"
    );

    let (status, body) = call(
        router.clone(),
        post(envelope(&serde_json::json!({"id": 12}), "m", 1).to_string()),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));

    let big = "x".repeat(labrelay_receiver::MAX_PUSH_BODY + 1);
    let (status, _) = call(router, post(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn invalid_settings_fail_at_start_up() {
    let file = tempfile::NamedTempFile::new().unwrap();
    // The outbox "directory" is a file.
    assert!(app(Settings::outbox(file.path())).is_err());
    let bad = Settings::twilio(
        "AC/..",
        TOKEN,
        labrelay_sms_service::TwilioSender::From(FROM.into()),
    );
    assert!(app(bad).is_err());
}
