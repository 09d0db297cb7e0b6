use std::time::Duration;

use labrelay_sms_service::{Delivery, Settings, TwilioSender};
use labrelay_testkit::push::Push;
use labrelay_testkit::twilio::TwilioStandIn;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "stand-in-auth-token";
pub const FROM: &str = "+15005550006";
pub const SERVICE_SID: &str = "MG0123456789abcdef0123456789abcdef";
/// Long enough for a loaded machine, short enough to keep tests fast.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<anyhow::Result<()>>,
}

/// Starts the service on port 0 with `settings`, as `labrelay` would, and
/// returns once it answers.
pub async fn spawn_app(settings: Settings) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn_app_on(listener, settings).await
}

/// The same, on a listener the caller bound (to know its address first).
pub async fn spawn_app_on(listener: tokio::net::TcpListener, settings: Settings) -> TestApp {
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(labrelay_sms_service::run(settings, listener, async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let health = client.get(format!("{address}/healthz")).send().await;
    assert_eq!(health.expect("the sms-service is up").status(), 200);
    TestApp {
        address,
        client,
        shutdown: Some(tx),
        server,
    }
}

/// A stand-in and the service pointed at it with `From`.
pub async fn spawn_with_twilio() -> (TwilioStandIn, TestApp) {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let app = spawn_app(twilio_settings(&twilio)).await;
    (twilio, app)
}

pub fn twilio_settings(twilio: &TwilioStandIn) -> Settings {
    let mut settings = Settings::twilio(SID, TOKEN, TwilioSender::From(FROM.into()));
    if let Delivery::Twilio(t) = &mut settings.delivery {
        t.api_base = twilio.base_url();
        t.timeout = Duration::from_secs(3);
    }
    settings
}

/// Changes the Twilio part of `settings`.
pub fn with_twilio(
    mut settings: Settings,
    change: impl FnOnce(&mut labrelay_sms_service::TwilioSettings),
) -> Settings {
    let Delivery::Twilio(t) = &mut settings.delivery else {
        panic!("not Twilio settings")
    };
    change(t);
    settings
}

impl TestApp {
    pub async fn push_body(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(&self.address)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the sms-service answers")
    }

    pub async fn push(&self, envelope: &Value) -> reqwest::Response {
        self.push_body(envelope.to_string()).await
    }

    /// Stops the service as SIGTERM would and waits for it to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.server).await?
    }

    /// Triggers shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn stopped(self) -> anyhow::Result<()> {
        self.server.await?
    }
}

/// A realistic report, as `labrelay post` sends it.
pub fn report(id: &str, phone: Option<&str>) -> Value {
    let mut report = json!({
        "id": id,
        "clinic": {"name": "Pet Theory", "phone": "555-123-0000"},
        "pet": {"name": "Max", "species": "dog"},
        "owner": {"name": "Alex Kim", "email": "alex@example.com"},
        "tests": [{"name": "ALT", "value": 4242, "unit": "U/L", "range": "10-100", "flag": "high"}],
        "issuedAt": "2026-11-24T10:00:00Z"
    });
    if let Some(phone) = phone {
        report["owner"]["phone"] = json!(phone);
    }
    report
}

/// The notice `report(id, ..)` produces.
pub fn notice(id: &str) -> String {
    format!(
        "Pet Theory: Max's lab results are ready. Check your email or call 555-123-0000. Ref {id}"
    )
}

/// The sms-service's subscription, as `labrelay up` names it.
pub const SUBSCRIPTION: &str = "projects/labrelay-local/subscriptions/sms-service-sub";

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

pub async fn error_of(response: reqwest::Response) -> String {
    let json: Value = response.json().await.expect("a JSON error body");
    json["error"].as_str().expect("an error string").to_string()
}
