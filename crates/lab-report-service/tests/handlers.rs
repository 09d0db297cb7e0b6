//! The router in-process with `oneshot`: request handling without a broker
//! (the publisher points at a closed port, so nothing can be stored).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use labrelay_lab_report_service::{Settings, app};
use tower::ServiceExt;

async fn router(max_body_bytes: usize) -> axum::Router {
    let closed = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    app(Settings {
        emulator_host: Some(closed.to_string()),
        max_body_bytes,
        publish_timeout: Duration::from_millis(300),
        ..Settings::default()
    })
    .await
    .unwrap()
}

fn post(body: impl Into<Body>, content_type: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/");
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    request.body(body.into()).unwrap()
}

async fn answer(
    router: axum::Router,
    request: Request<Body>,
) -> (StatusCode, header::HeaderMap, String) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn healthz() {
    let request = Request::get("/healthz").body(Body::empty()).unwrap();
    let (status, _, _) = answer(router(1024).await, request).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn errors_are_json_with_an_error_message() {
    let (status, headers, body) =
        answer(router(1024).await, post("{", Some("application/json"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
}

#[tokio::test]
async fn the_limit_is_inclusive() {
    // Invalid JSON exactly at the limit is read and parsed (400); one byte
    // more is refused unread (413).
    let at_limit = "x".repeat(32);
    let (status, _, _) = answer(router(32).await, post(at_limit, Some("application/json"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let over = "x".repeat(33);
    let (status, _, body) = answer(router(32).await, post(over, Some("application/json"))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body.contains("32 bytes"), "{body}");
}

#[tokio::test]
async fn content_type_is_checked_before_the_body() {
    let (status, _, body) = answer(router(1024).await, post("{", None)).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body.contains("missing"), "{body}");

    let (status, _, body) = answer(
        router(1024).await,
        post("{", Some("application/json; charset=latin1")),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body.contains("latin1"), "{body}");
}

#[tokio::test]
async fn an_unstored_report_gets_503_with_retry_after() {
    let (status, headers, body) = answer(
        router(1024).await,
        post(r#"{"id": 12}"#, Some("application/json")),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "5");
    assert!(body.contains("retry later"), "{body}");
}

#[tokio::test]
async fn other_methods_and_paths() {
    let (status, _, _) = answer(
        router(1024).await,
        Request::get("/").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = answer(
        router(1024).await,
        Request::post("/reports").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
