//! A push endpoint for tests: a real HTTP server on port 0 that records every
//! request it gets and answers with a programmable status (a 3xx with
//! `Location: /moved`). It speaks HTTP/1.1 and cleartext HTTP/2 (h2c), as
//! the services do, unless made [`http1_only`](PushReceiver::http1_only).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::EVENT_TIMEOUT;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// When it arrived (before the receiver held or answered it).
    pub at: Instant,
    pub method: Method,
    pub version: Version,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status it was (or will be) answered with.
    pub status: u16,
}

impl PushRequest {
    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| {
            v.to_str()
                .unwrap_or_else(|_| panic!("header {name} is not text"))
        })
    }

    /// The body as JSON (the test fails if it is not JSON).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the push body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `message.messageId` of a wrapped push.
    #[track_caller]
    pub fn message_id(&self) -> String {
        self.json()["message"]["messageId"]
            .as_str()
            .expect("message.messageId")
            .to_owned()
    }
}

struct Shared {
    events: mpsc::UnboundedSender<PushRequest>,
    /// Statuses for the next requests, in order; then `default_status`.
    statuses: Mutex<VecDeque<u16>>,
    default_status: AtomicU16,
    /// When set, each request is held until a permit is released.
    gate: Option<Arc<Semaphore>>,
}

/// A recording push endpoint. Dropping it stops the server.
pub struct PushReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<PushRequest>,
    server: JoinHandle<()>,
}

impl PushReceiver {
    /// A receiver that answers every request with 204.
    pub async fn start() -> PushReceiver {
        Self::spawn(204, None).await
    }

    /// A receiver that answers every request with 204 and speaks HTTP/1.1
    /// only, as many push endpoints do.
    pub async fn http1_only() -> PushReceiver {
        Self::serve(204, None, Protocols::Http1Only).await
    }

    /// A receiver that answers every request with `status`.
    pub async fn answering(status: u16) -> PushReceiver {
        Self::spawn(status, None).await
    }

    /// A receiver that records each request at once but holds its answer
    /// (204) until [`release`](Self::release) lets it go.
    pub async fn gated() -> PushReceiver {
        Self::spawn(204, Some(Arc::new(Semaphore::new(0)))).await
    }

    async fn spawn(default_status: u16, gate: Option<Arc<Semaphore>>) -> PushReceiver {
        Self::serve(default_status, gate, Protocols::Both).await
    }

    async fn serve(
        default_status: u16,
        gate: Option<Arc<Semaphore>>,
        protocols: Protocols,
    ) -> PushReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the push receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let (tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: tx,
            statuses: Mutex::default(),
            default_status: AtomicU16::new(default_status),
            gate,
        });
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let server = match protocols {
            Protocols::Both => tokio::spawn(async move {
                axum::serve(listener, app)
                    .await
                    .expect("the push receiver failed");
            }),
            Protocols::Http1Only => tokio::spawn(serve_http1_only(listener, app)),
        };
        PushReceiver {
            addr,
            shared,
            events,
            server,
        }
    }

    /// `http://127.0.0.1:<port>/push`.
    pub fn url(&self) -> String {
        format!("http://{}/push", self.addr)
    }

    /// Answers the next requests with `statuses`, in order, before going
    /// back to the default.
    pub fn then_answer(&self, statuses: impl IntoIterator<Item = u16>) {
        self.shared
            .statuses
            .lock()
            .expect("statuses lock")
            .extend(statuses);
    }

    /// The status for requests once the queued ones are used up.
    pub fn set_default(&self, status: u16) {
        self.shared.default_status.store(status, Ordering::SeqCst);
    }

    /// Lets `n` held requests (of a [`gated`](Self::gated) receiver) answer.
    pub fn release(&self, n: usize) {
        self.shared
            .gate
            .as_ref()
            .expect("release is for gated receivers")
            .add_permits(n);
    }

    /// The next request; the test fails if none arrives within
    /// [`EVENT_TIMEOUT`].
    #[track_caller]
    pub fn next(&mut self) -> impl Future<Output = PushRequest> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            tokio::time::timeout(EVENT_TIMEOUT, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("{caller}: no push arrived within {EVENT_TIMEOUT:?}"))
                .expect("the receiver's server stopped")
        }
    }

    /// The next `n` requests; the test fails if pushes stop, i.e. none
    /// arrives within [`EVENT_TIMEOUT`] of the one before (a liveness check:
    /// a long ordered backlog arrives one push at a time, and how fast
    /// depends on the machine).
    #[track_caller]
    pub fn take(&mut self, n: usize) -> impl Future<Output = Vec<PushRequest>> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let mut got: Vec<PushRequest> = Vec::with_capacity(n);
            while got.len() < n {
                match tokio::time::timeout(EVENT_TIMEOUT, self.events.recv()).await {
                    Ok(Some(request)) => got.push(request),
                    Ok(None) => panic!("the receiver's server stopped"),
                    Err(_) => panic!(
                        "{caller}: only {} of {n} pushes arrived, then none for {EVENT_TIMEOUT:?}; \
                         the last: {:#?}",
                        got.len(),
                        got.last()
                    ),
                }
            }
            got
        }
    }

    /// Asserts that no request arrives for `quiet` (keep it short: this is
    /// the one place the tests wait without an event to wait for).
    #[track_caller]
    pub fn assert_quiet(&mut self, quiet: Duration) -> impl Future<Output = ()> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            if let Ok(Some(request)) = tokio::time::timeout(quiet, self.events.recv()).await {
                panic!(
                    "{caller}: expected no push for {quiet:?}, got {} {} with body {:?}",
                    request.method,
                    request.path,
                    String::from_utf8_lossy(&request.body)
                );
            }
        }
    }
}

impl Drop for PushReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone, Copy)]
enum Protocols {
    Both,
    Http1Only,
}

/// `app` over HTTP/1.1 only: h2c's opening is a malformed request here.
async fn serve_http1_only(listener: TcpListener, app: axum::Router) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            // A connection ending in a protocol error is what this
            // receiver is for; nothing to report.
            let _ = Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let at = Instant::now();
    let status = shared
        .statuses
        .lock()
        .expect("statuses lock")
        .pop_front()
        .unwrap_or_else(|| shared.default_status.load(Ordering::SeqCst));
    let _ = shared.events.send(PushRequest {
        at,
        method,
        version,
        path: uri.path().to_owned(),
        headers,
        body,
        status,
    });
    if let Some(gate) = &shared.gate {
        gate.acquire()
            .await
            .expect("the gate is never closed")
            .forget();
    }
    let status = StatusCode::from_u16(status).expect("a valid status code");
    if status.is_redirection() {
        // Somewhere a client that follows redirects would go next.
        return (status, [(axum::http::header::LOCATION, "/moved")]).into_response();
    }
    status.into_response()
}

/// A URL on a port where nothing listens, so pushes there are refused.
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    let addr = listener.local_addr().expect("the listener's address");
    drop(listener);
    format!("http://{addr}/push")
}
