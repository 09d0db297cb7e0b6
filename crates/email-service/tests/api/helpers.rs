//! `spawn_app` and the push bodies the tests send.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use labrelay_email_service::Settings;
use labrelay_testkit::push::Push;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A running email-service on a free port.
pub struct TestApp {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<anyhow::Result<()>>,
}

/// Settings from environment-style variables (`SMTP_URL`, ...), with push
/// verification off unless `vars` set a `PUSH_*` variable.
pub fn settings(vars: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !vars.keys().any(|k| k.starts_with("PUSH_")) {
        vars.insert("PUSH_AUTH".into(), "off".into());
    }
    Settings::from_vars(|name| vars.get(name).cloned()).expect("valid test settings")
}

pub async fn spawn_app(settings: Settings) -> TestApp {
    init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding port 0");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(labrelay_email_service::run(
        settings,
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    TestApp {
        addr,
        shutdown: Some(tx),
        server,
    }
}

impl TestApp {
    /// POSTs a push body as the broker does.
    pub async fn push(&self, body: &Value) -> HttpResponse {
        self.post_raw(body.to_string().into_bytes()).await
    }

    pub async fn post_raw(&self, body: Vec<u8>) -> HttpResponse {
        http(self.addr, "POST", "/", &body)
            .await
            .expect("the email-service answers")
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        http(self.addr, "GET", path, b"")
            .await
            .expect("the email-service answers")
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(PATIENCE * 2, &mut self.server)
            .await
            .expect("run returns after shutdown")
            .expect("the server task did not panic")
    }

    pub fn shutdown_handle(&mut self) -> oneshot::Sender<()> {
        self.shutdown.take().expect("shutdown not yet triggered")
    }

    pub async fn join(self) -> anyhow::Result<()> {
        tokio::time::timeout(PATIENCE * 2, self.server)
            .await
            .expect("run returns after shutdown")
            .expect("the server task did not panic")
    }
}

/// The email-service's subscription, as `labrelay up` names it.
pub const SUBSCRIPTION: &str = "projects/labrelay-local/subscriptions/email-service-sub";

/// The push the broker sends for `report`.
pub fn envelope(report: &Value, message_id: &str, attempt: u32) -> Value {
    Push::report(SUBSCRIPTION, report)
        .message_id(message_id)
        .attempt(attempt)
        .json()
}

/// A push carrying `data` as the message bytes.
pub fn envelope_bytes(data: &[u8], message_id: &str, attempt: u32) -> Value {
    Push::bytes(SUBSCRIPTION, data)
        .message_id(message_id)
        .attempt(attempt)
        .json()
}

/// The documented report, with a flagged result of each kind.
pub fn full_report(id: &str) -> Value {
    json!({
        "id": id,
        "clinic": {"name": "Pet Theory Downtown", "phone": "+15551230000"},
        "pet": {"name": "Max", "species": "dog"},
        "owner": {"name": "Alex Kim", "email": "alex@example.com", "phone": "+15551234567"},
        "tests": [
            {"name": "ALT", "value": 42, "unit": "U/L", "range": "10-100", "flag": "normal"},
            {"name": "Glucose", "value": 180, "unit": "mg/dL", "range": "70-140", "flag": "high"},
            {"name": "Platelets", "value": 90, "unit": "10^9/L", "range": "150-500", "flag": "low"}
        ],
        "issuedAt": "2026-11-24T10:00:00Z"
    })
}

pub async fn error_of(response: HttpResponse) -> String {
    let body: Value = serde_json::from_slice(&response.body).expect("a JSON error body");
    body["error"]
        .as_str()
        .expect("an `error` string")
        .to_string()
}

/// An HTTP answer, as far as these tests look at it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// The status line and headers, as received.
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// One HTTP/1.1 exchange on a fresh connection. A few lines of client
/// instead of reqwest, whose TLS stack would pull `openssl-probe` into this
/// crate's dependency tree.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;

    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body).ok_or_else(|| invalid("bad chunked body"))?;
    }
    Ok(HttpResponse { status, head, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}
