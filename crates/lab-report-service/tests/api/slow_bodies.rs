//! The API key is checked before a byte of the body is read and before the
//! request takes one of the in-flight slots: a stranger who announces a
//! large body and sends it slowly (or never) is answered 401 at once, and
//! cannot crowd out the labs.
//!
//! These tests speak HTTP/1.1 over raw TCP, so that a request can announce
//! a body it never sends.

use labrelay_lab_report_service::ingest_auth::{IngestAuth, IngestKeys};
use labrelay_runtime::limits::DEFAULT_MAX_IN_FLIGHT;
use labrelay_testkit::metrics::sample;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app_with, within};

const KEY: &str = "slow-bodies-test-key";

async fn spawn_keyed_app() -> TestApp {
    spawn_app_with(|settings| {
        settings.ingest_auth = IngestAuth::Keys(IngestKeys::default().with_key("idexx", KEY));
    })
    .await
}

/// A response read off a raw connection.
struct RawResponse {
    status: u16,
    /// The header block, lower-cased.
    headers: String,
    body: String,
}

/// Opens a connection and sends the head of a `POST /` announcing a body
/// of `content_length` bytes, then `body_start` (a prefix of that body).
/// The rest of the body is never sent; the connection stays open as long
/// as the returned stream lives.
async fn announce(
    app: &TestApp,
    authorization: Option<&str>,
    content_length: usize,
    body_start: &[u8],
) -> TcpStream {
    let address = app.url.trim_start_matches("http://");
    let mut stream = within("a connection", TcpStream::connect(address))
        .await
        .expect("connecting to the service");
    let authorization = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         {authorization}Content-Length: {content_length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body_start).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// Reads one response (head and `Content-Length` body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = within("a response", stream.read(&mut chunk))
            .await
            .expect("reading the response");
        assert!(n > 0, "the connection closed before a response");
        received.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(received[..head_end].to_vec())
        .unwrap()
        .to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    while received.len() < head_end + length {
        let n = within("a response body", stream.read(&mut chunk))
            .await
            .expect("reading the response body");
        assert!(n > 0, "the connection closed inside the response body");
        received.extend_from_slice(&chunk[..n]);
    }
    RawResponse {
        status,
        headers: head,
        body: String::from_utf8_lossy(&received[head_end..head_end + length]).into_owned(),
    }
}

fn assert_unauthorized(response: &RawResponse) {
    assert_eq!(
        response.status, 401,
        "{}{}",
        response.headers, response.body
    );
    assert!(
        response.headers.contains("www-authenticate: bearer\r\n"),
        "{}",
        response.headers
    );
    assert!(response.body.contains("API key"), "{}", response.body);
}

async fn post_keyed(app: &TestApp) -> reqwest::Response {
    within(
        "a keyed POST",
        app.http
            .post(format!("{}/", app.url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {KEY}"))
            .body(r#"{"id": "LR-keyed"}"#)
            .send(),
    )
    .await
    .expect("the service answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_unauthenticated_large_bodies_get_401_at_once_and_a_lab_still_gets_in() {
    let app = spawn_keyed_app().await;
    let strangers = DEFAULT_MAX_IN_FLIGHT + 44;
    // Every request announces a megabyte and sends none of it; each is
    // answered while its body is still owed (a body read first would be
    // answered 408 when the request timeout ran out).
    let open: Vec<_> = (0..strangers)
        .map(|i| {
            let app = &app;
            async move {
                let authorization = (i % 2 == 1).then_some("Bearer not-a-key");
                let mut stream = announce(app, authorization, 1_000_000, b"").await;
                let response = read_response(&mut stream).await;
                (stream, response)
            }
        })
        .collect();
    let open = within("every stranger's answer", futures::future::join_all(open)).await;
    for (_, response) in &open {
        assert_unauthorized(response);
    }

    // The strangers' connections are all still open on our side.
    let response = post_keyed(&app).await;
    assert_eq!(response.status(), 204);
    let published = app.take_published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(
        published[0].attributes.get("lab").map(String::as_str),
        Some("idexx")
    );
    assert_eq!(
        published[0].attributes.get("reportId").map(String::as_str),
        Some("LR-keyed")
    );

    let scrape = app.scrape().await;
    let rejected = sample(
        &scrape,
        r#"labrelay_reports_received_total{outcome="rejected",status="401"}"#,
    );
    assert_eq!(rejected, strangers as f64, "{scrape}");
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_slow_body_gets_401_without_sending_the_rest() {
    let app = spawn_keyed_app().await;
    for authorization in [None, Some("Bearer not-a-key"), Some("Basic abc")] {
        let mut stream = announce(&app, authorization, 4096, br#"{"id": "LR-1", "#).await;
        let response = read_response(&mut stream).await;
        assert_unauthorized(&response);
        // Nothing more of the body is awaited: the service ends the
        // connection rather than wait for the rest.
        let mut rest = Vec::new();
        let _ = within("the service to close", stream.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    app.assert_nothing_published().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unauthenticated_request_gets_401_while_labs_hold_every_slot() {
    let app = spawn_keyed_app().await;
    // Labs whose bodies are on their way hold every in-flight slot: a few
    // more of them than there are slots, so that once the extra ones are
    // shed (503, at once) the others are known to hold them all.
    let extra = 8;
    let authorization = format!("Bearer {KEY}");
    let (answered, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let mut holding = tokio::task::JoinSet::new();
    for _ in 0..DEFAULT_MAX_IN_FLIGHT + extra {
        let mut stream = announce(&app, Some(&authorization), 1_000, b"").await;
        let answered = answered.clone();
        holding.spawn(async move {
            let _ = answered.send(read_response(&mut stream).await.status);
            // Keeps the connection open until the test ends.
            std::future::pending::<()>().await;
        });
    }
    for _ in 0..extra {
        let status = within("a lab to be shed", answers.recv()).await;
        assert_eq!(status, Some(503));
    }
    assert_eq!(post_keyed(&app).await.status(), 503);

    let mut stranger = announce(&app, None, 1_000, b"").await;
    assert_unauthorized(&read_response(&mut stranger).await);

    // No lab was answered meanwhile: the slots were full all along.
    assert!(answers.try_recv().is_err());
    holding.shutdown().await;
}
