//! `spawn_app()`: the service on port 0 in front of a real broker.
//!
//! The broker (labrelay_broker) runs in-process on its own port over a
//! temporary data directory, with the topic and a pull subscription created
//! through its gRPC API; the test reads what was published from that
//! subscription. The broker can be stopped and started again on the same
//! port and data, to play an outage.

use std::net::SocketAddr;
use std::time::Duration;

use googleapis_tonic_google_pubsub_v1::google::pubsub::v1::publisher_client::PublisherClient;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1::subscriber_client::SubscriberClient;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1::{
    AcknowledgeRequest, PubsubMessage, PullRequest, Subscription, Topic,
};
use labrelay_broker::{Broker, BrokerConfig};
use labrelay_lab_report_service::{Listeners, MetricsAt, Settings};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const PROJECT: &str = "lab-report-test";
pub const TOPIC_ID: &str = "new-lab-report";
pub const SUBSCRIPTION: &str = "projects/lab-report-test/subscriptions/audit";

/// How long any awaited event may take before the test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The publish timeout of every test app: short, so the outage tests are fast.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Fails the test unless `future` completes within [`EVENT_TIMEOUT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(EVENT_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {EVENT_TIMEOUT:?} waiting for {what}"))
}

pub fn topic_name() -> String {
    format!("projects/{PROJECT}/topics/{TOPIC_ID}")
}

/// A broker serving on a fixed address until stopped.
struct RunningBroker {
    stop: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<()>>,
}

pub struct TestApp {
    /// `http://127.0.0.1:<port>` of the service.
    pub url: String,
    /// `http://127.0.0.1:<port>` where `/metrics` is served: the service's
    /// own, or its metrics port.
    pub metrics_url: String,
    pub http: reqwest::Client,
    /// Where the broker serves (or will serve): the service points here.
    pub broker_addr: SocketAddr,
    broker: Option<RunningBroker>,
    service_stop: Option<oneshot::Sender<()>>,
    pub service: Option<JoinHandle<anyhow::Result<()>>>,
    // Declared last: the directory outlives the broker that writes into it.
    data_dir: tempfile::TempDir,
}

/// The service in front of a running broker.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with `edit` applied to the settings.
pub async fn spawn_app_with(edit: impl FnOnce(&mut Settings)) -> TestApp {
    let mut app = spawn_app_without_broker(edit).await;
    app.start_broker().await;
    app
}

/// Like [`spawn_app_with`], serving `/metrics` on a port of its own
/// (`METRICS_PORT`) instead of the service's.
pub async fn spawn_app_with_metrics_port(edit: impl FnOnce(&mut Settings)) -> TestApp {
    let metrics = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding port 0");
    let mut app = spawn(edit, Some(metrics)).await;
    app.start_broker().await;
    app
}

/// The service pointed at a port where no broker listens (yet).
pub async fn spawn_app_without_broker(edit: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(edit, None).await
}

async fn spawn(edit: impl FnOnce(&mut Settings), metrics: Option<TcpListener>) -> TestApp {
    let data_dir = tempfile::tempdir().expect("creating a temporary data directory");
    let broker_addr = {
        let probe = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding port 0");
        probe.local_addr().expect("the probe's address")
    };
    let mut settings = Settings {
        project: PROJECT.into(),
        topic: TOPIC_ID.into(),
        emulator_host: Some(broker_addr.to_string()),
        publish_timeout: PUBLISH_TIMEOUT,
        ..Settings::default()
    };
    edit(&mut settings);
    let metrics_addr = metrics
        .as_ref()
        .map(|listener| listener.local_addr().expect("the metrics address"));
    if let Some(addr) = metrics_addr {
        settings.metrics = MetricsAt::Port(addr.port());
    }

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding port 0");
    let url = format!(
        "http://{}",
        listener.local_addr().expect("the service's address")
    );
    let metrics_url = metrics_addr.map_or_else(|| url.clone(), |addr| format!("http://{addr}"));
    let (service_stop, stopped) = oneshot::channel::<()>();
    let service = tokio::spawn(labrelay_lab_report_service::run(
        settings,
        Listeners {
            service: listener,
            metrics,
        },
        async {
            let _ = stopped.await;
        },
    ));
    TestApp {
        url,
        metrics_url,
        http: reqwest::Client::new(),
        broker_addr,
        broker: None,
        service_stop: Some(service_stop),
        service: Some(service),
        data_dir,
    }
}

impl TestApp {
    /// POSTs `body` to `/` as `application/json`.
    pub async fn post_json(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.post(body, Some("application/json")).await
    }

    /// POSTs `body` to `/` with the given Content-Type (or none).
    pub async fn post(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}/", self.url)).body(body);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        within("the service's answer", request.send())
            .await
            .expect("the service answers")
    }

    /// Starts the broker on [`TestApp::broker_addr`] over this app's data
    /// directory, and makes sure the topic and the subscription exist.
    pub async fn start_broker(&mut self) {
        assert!(self.broker.is_none(), "the broker is already running");
        let listener = TcpListener::bind(self.broker_addr)
            .await
            .unwrap_or_else(|e| panic!("binding the broker's port {}: {e}", self.broker_addr));
        let broker = Broker::open(BrokerConfig::new(self.data_dir.path(), self.broker_addr))
            .expect("opening the broker");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(broker.serve(listener, async {
            let _ = stopped.await;
        }));
        self.broker = Some(RunningBroker { stop, server });
        self.ensure_topology().await;
    }

    /// Stops the broker: its port refuses connections afterwards.
    pub async fn stop_broker(&mut self) {
        let broker = self.broker.take().expect("the broker is running");
        let _ = broker.stop.send(());
        let mut server = broker.server;
        // A client may hold its connection open; the store is closed by
        // then, and dropping the task closes the listener.
        if tokio::time::timeout(Duration::from_secs(3), &mut server)
            .await
            .is_err()
        {
            server.abort();
            let _ = server.await;
        }
    }

    async fn channel(&self) -> Channel {
        let url = format!("http://{}", self.broker_addr);
        within(
            "a gRPC connection to the broker",
            Channel::from_shared(url).expect("a URI").connect(),
        )
        .await
        .expect("connecting to the broker")
    }

    async fn ensure_topology(&self) {
        let channel = self.channel().await;
        let created = PublisherClient::new(channel.clone())
            .create_topic(Topic {
                name: topic_name(),
                ..Default::default()
            })
            .await;
        ignore_already_exists(created.map(|_| ()));
        let created = SubscriberClient::new(channel)
            .create_subscription(Subscription {
                name: SUBSCRIPTION.into(),
                topic: topic_name(),
                ack_deadline_seconds: 60,
                ..Default::default()
            })
            .await;
        ignore_already_exists(created.map(|_| ()));
    }

    /// Everything published so far and not yet taken, acknowledged.
    pub async fn take_published(&self) -> Vec<PubsubMessage> {
        let mut subscriber = SubscriberClient::new(self.channel().await);
        let mut messages = Vec::new();
        loop {
            #[allow(deprecated)]
            let request = PullRequest {
                subscription: SUBSCRIPTION.into(),
                return_immediately: true,
                max_messages: 100,
            };
            let received = within("a pull", subscriber.pull(request))
                .await
                .expect("pulling")
                .into_inner()
                .received_messages;
            if received.is_empty() {
                return messages;
            }
            let ack_ids = received.iter().map(|r| r.ack_id.clone()).collect();
            within(
                "an acknowledge",
                subscriber.acknowledge(AcknowledgeRequest {
                    subscription: SUBSCRIPTION.into(),
                    ack_ids,
                }),
            )
            .await
            .expect("acknowledging");
            messages.extend(received.into_iter().filter_map(|r| r.message));
        }
    }

    pub async fn assert_nothing_published(&self) {
        let published = self.take_published().await;
        assert!(
            published.is_empty(),
            "unexpectedly published: {published:?}"
        );
    }

    /// Stops the service the way a SIGTERM would, and waits for it.
    pub async fn stop_service(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.service_stop.take() {
            let _ = stop.send(());
        }
        let service = self.service.take().expect("the service is running");
        within("the service to stop", service)
            .await
            .expect("the service task panicked")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.service_stop.take() {
            let _ = stop.send(());
        }
        if let Some(broker) = self.broker.take() {
            let _ = broker.stop.send(());
            broker.server.abort();
        }
    }
}

fn ignore_already_exists(result: Result<(), tonic::Status>) {
    match result {
        Ok(()) => {}
        Err(status) if status.code() == tonic::Code::AlreadyExists => {}
        Err(status) => panic!("setting up the broker: {status}"),
    }
}

/// The `{"error": "..."}` message of an error answer.
pub async fn error_message(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no \"error\" string in {body}"))
        .to_string()
}

impl TestApp {
    /// `GET /metrics`, without any credentials, where the service serves
    /// it.
    pub async fn scrape(&self) -> String {
        let response = within(
            "a scrape",
            self.http
                .get(format!("{}/metrics", self.metrics_url))
                .send(),
        )
        .await
        .expect("the service answers /metrics");
        assert_eq!(response.status(), 200);
        response.text().await.expect("a text scrape")
    }
}
