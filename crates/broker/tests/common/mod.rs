//! The broker's test harness.
//!
//! - [`TestBroker`]: a real broker on port 0 over a temporary data directory,
//!   restartable on the same directory.
//! - [`Api`]: the Pub/Sub operations the scenarios use, implemented over gRPC
//!   ([`Grpc`], tonic clients) and over REST ([`Rest`], JSON through reqwest),
//!   so that one scenario runs over both protocols (see [`both!`]).
//! - [`PushReceiver`]: a real HTTP server on port 0 that records every push
//!   and answers with a programmable status.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

mod grpc;
mod push_receiver;
mod rest;

use std::net::SocketAddr;
use std::time::Duration;

use labrelay_broker::{Broker, BrokerConfig, pb};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use grpc::Grpc;
// Re-exports that not every test binary uses.
#[allow(unused_imports)]
pub use push_receiver::{PushReceiver, PushRequest, closed_port_url};
#[allow(unused_imports)]
pub use rest::{RawResponse, Rest};

/// The project every scenario works in.
pub const PROJECT: &str = "projects/p";

/// How long any awaited event may take before the test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn topic_name(id: &str) -> String {
    format!("{PROJECT}/topics/{id}")
}

pub fn subscription_name(id: &str) -> String {
    format!("{PROJECT}/subscriptions/{id}")
}

/// `seconds` as a protobuf duration.
pub fn secs(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

/// How long the runtime may take to stop once a test is over.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs a test body on a two-thread Tokio runtime, as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` would, but
/// fails instead of hanging forever when a task never yields: dropping a
/// runtime waits for every worker thread, and a task that spins without an
/// `.await` would keep one of them (and the test) busy for good.
pub fn run(body: impl Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a Tokio runtime");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(body)));
    let stopping = std::time::Instant::now();
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    let stuck = stopping.elapsed() >= SHUTDOWN_GRACE;
    if stuck {
        eprintln!(
            "the runtime did not stop within {SHUTDOWN_GRACE:?}: a task is busy without yielding"
        );
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert!(
        !stuck,
        "the runtime did not stop within {SHUTDOWN_GRACE:?} after the test: \
         a task (of the broker?) is busy without yielding"
    );
}

/// Fails the test unless `future` completes within [`EVENT_TIMEOUT`].
#[track_caller]
pub fn within<F: Future>(what: &str, future: F) -> impl Future<Output = F::Output> {
    let what = what.to_owned();
    let caller = std::panic::Location::caller();
    async move {
        tokio::time::timeout(EVENT_TIMEOUT, future)
            .await
            .unwrap_or_else(|_| {
                panic!("{caller}: timed out after {EVENT_TIMEOUT:?} waiting for {what}")
            })
    }
}

/// Asserts that `text` is an RFC 3339 timestamp in UTC (`...Z`) and returns it parsed.
#[track_caller]
pub fn rfc3339_utc(text: &str) -> prost_types::Timestamp {
    assert!(
        text.ends_with('Z') && text.as_bytes().get(10) == Some(&b'T'),
        "not an RFC 3339 UTC timestamp: {text:?}"
    );
    text.parse()
        .unwrap_or_else(|e| panic!("not an RFC 3339 timestamp: {text:?}: {e}"))
}

// ----- the broker -----

/// A broker serving on `127.0.0.1:<random port>`, stopped when dropped.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub config: BrokerConfig,
    broker: Broker,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    // Declared last: the directory outlives the broker that writes into it.
    dir: tempfile::TempDir,
}

/// A broker over a fresh temporary data directory.
pub async fn spawn_broker() -> TestBroker {
    spawn_broker_with(|_| {}).await
}

/// Like [`spawn_broker`], with `edit` applied to the default configuration.
pub async fn spawn_broker_with(edit: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
    let dir = tempfile::tempdir().expect("creating a temporary data directory");
    let (addr, config, broker, shutdown, server) = start(dir.path(), edit).await;
    TestBroker {
        addr,
        config,
        broker,
        shutdown: Some(shutdown),
        server: Some(server),
        dir,
    }
}

async fn start(
    data_dir: &std::path::Path,
    edit: impl FnOnce(&mut BrokerConfig),
) -> (
    SocketAddr,
    BrokerConfig,
    Broker,
    oneshot::Sender<()>,
    JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding port 0");
    let addr = listener.local_addr().expect("the listener's address");
    let mut config = BrokerConfig::new(data_dir, addr);
    edit(&mut config);
    let broker = Broker::open(config.clone()).expect("opening the broker");
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(broker.clone().serve(listener, async {
        let _ = stop.await;
    }));
    let server = tokio::spawn(async move {
        server
            .await
            .expect("the broker task panicked")
            .expect("the broker failed while serving");
    });
    (addr, config, broker, shutdown, server)
}

impl TestBroker {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// A gRPC client of this broker.
    pub async fn grpc(&self) -> Grpc {
        Grpc::connect(self.addr).await
    }

    /// A REST client of this broker.
    pub fn rest(&self) -> Rest {
        Rest::new(self.url())
    }

    /// Stops the broker: background work ends and the store has committed
    /// everything it was given.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.broker.close().await;
        if let Some(server) = self.server.take() {
            // Clients that still hold a connection must not keep the test
            // waiting; the broker itself is closed by now.
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                eprintln!("the broker's server did not stop within 5 s after close");
            }
        }
    }

    /// Stops the broker and opens a new one on the same data directory (and
    /// a new port: make new clients).
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await;
    }

    /// Like [`restart`](Self::restart), with `edit` applied to the default
    /// configuration of the new broker.
    pub async fn restart_with(&mut self, edit: impl FnOnce(&mut BrokerConfig)) {
        self.stop().await;
        let (addr, config, broker, shutdown, server) = start(self.dir.path(), edit).await;
        self.addr = addr;
        self.config = config;
        self.broker = broker;
        self.shutdown = Some(shutdown);
        self.server = Some(server);
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

// ----- the protocol-neutral API -----

/// A status code, the same over gRPC and REST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    PermissionDenied,
    OutOfRange,
    Unimplemented,
    Unavailable,
    Internal,
    /// Anything else, including a REST error whose HTTP status does not
    /// match its JSON status (the message says which).
    Other,
}

/// An error answer, as either protocol gives it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    /// Asserts that the message names one of `words` (e.g. a field in
    /// snake_case or camelCase).
    #[track_caller]
    pub fn assert_mentions(&self, words: &[&str]) {
        assert!(
            words.iter().any(|w| self.message.contains(w)),
            "the message {:?} names none of {words:?}",
            self.message
        );
    }
}

/// Asserts that `result` is an error with `code`, and returns it.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(result: Result<T, ApiError>, code: Code) -> ApiError {
    match result {
        Ok(value) => panic!("expected {code:?}, got success: {value:?}"),
        Err(error) => {
            assert_eq!(error.code, code, "wrong code; message: {:?}", error.message);
            assert!(
                !error.message.trim().is_empty(),
                "{code:?} without a message"
            );
            error
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The Pub/Sub API as the scenarios see it, whatever the protocol.
pub trait Api {
    /// "grpc" or "rest", for messages.
    fn protocol(&self) -> &'static str;

    async fn create_topic(&self, topic: pb::Topic) -> ApiResult<pb::Topic>;
    async fn get_topic(&self, name: &str) -> ApiResult<pb::Topic>;
    /// One page of `project`'s topics and the next page token.
    async fn list_topics(
        &self,
        project: &str,
        page_size: i32,
        page_token: &str,
    ) -> ApiResult<(Vec<pb::Topic>, String)>;
    async fn list_topic_subscriptions(&self, topic: &str) -> ApiResult<Vec<String>>;
    async fn delete_topic(&self, name: &str) -> ApiResult<()>;
    async fn publish(
        &self,
        topic: &str,
        messages: Vec<pb::PubsubMessage>,
    ) -> ApiResult<Vec<String>>;

    async fn create_subscription(&self, sub: pb::Subscription) -> ApiResult<pb::Subscription>;
    async fn get_subscription(&self, name: &str) -> ApiResult<pb::Subscription>;
    async fn list_subscriptions(
        &self,
        project: &str,
        page_size: i32,
        page_token: &str,
    ) -> ApiResult<(Vec<pb::Subscription>, String)>;
    async fn delete_subscription(&self, name: &str) -> ApiResult<()>;
    async fn modify_push_config(&self, sub: &str, push: pb::PushConfig) -> ApiResult<()>;

    /// `Pull`; without `return_immediately` the broker may wait for a message.
    async fn pull(
        &self,
        sub: &str,
        max_messages: i32,
        return_immediately: bool,
    ) -> ApiResult<Vec<pb::ReceivedMessage>>;
    async fn acknowledge(&self, sub: &str, ack_ids: &[String]) -> ApiResult<()>;
    async fn modify_ack_deadline(
        &self,
        sub: &str,
        ack_ids: &[String],
        seconds: i32,
    ) -> ApiResult<()>;

    // ----- shorthands -----

    /// Creates `projects/p/topics/{id}` with default settings.
    async fn topic(&self, id: &str) -> pb::Topic {
        let topic = pb::Topic {
            name: topic_name(id),
            ..Default::default()
        };
        self.create_topic(topic)
            .await
            .unwrap_or_else(|e| panic!("creating topic {id}: {e:?}"))
    }

    /// Creates `projects/p/subscriptions/{id}` on topic `topic_id`, with
    /// `edit` applied.
    async fn subscription(
        &self,
        id: &str,
        topic_id: &str,
        edit: impl FnOnce(&mut pb::Subscription),
    ) -> pb::Subscription {
        let mut sub = pb::Subscription {
            name: subscription_name(id),
            topic: topic_name(topic_id),
            ..Default::default()
        };
        edit(&mut sub);
        self.create_subscription(sub)
            .await
            .unwrap_or_else(|e| panic!("creating subscription {id}: {e:?}"))
    }

    /// Publishes one message per item of `data` to topic `topic_id`.
    async fn publish_data(&self, topic_id: &str, data: &[&str]) -> Vec<String> {
        let messages = data.iter().map(|d| message(d)).collect();
        self.publish(&topic_name(topic_id), messages)
            .await
            .unwrap_or_else(|e| panic!("publishing to {topic_id}: {e:?}"))
    }

    /// Pulls until `n` messages have arrived (failing after [`EVENT_TIMEOUT`]).
    async fn pull_n(&self, sub_id: &str, n: usize) -> Vec<pb::ReceivedMessage> {
        let name = subscription_name(sub_id);
        within(&format!("{n} messages on {sub_id}"), async {
            let mut got = Vec::new();
            while got.len() < n {
                let more = (n - got.len()) as i32;
                got.extend(
                    self.pull(&name, more, false)
                        .await
                        .unwrap_or_else(|e| panic!("pulling {sub_id}: {e:?}")),
                );
            }
            got
        })
        .await
    }

    /// Asserts that nothing is ready on the subscription right now.
    async fn assert_empty(&self, sub_id: &str) {
        let got = self
            .pull(&subscription_name(sub_id), 100, true)
            .await
            .unwrap_or_else(|e| panic!("pulling {sub_id}: {e:?}"));
        assert!(got.is_empty(), "{sub_id} unexpectedly delivered {got:?}");
    }

    /// Asserts that the subscription delivers nothing for `quiet`, waiting
    /// as a puller would (keep it short: this proves an absence).
    async fn assert_quiet(&self, sub_id: &str, quiet: Duration) {
        let name = subscription_name(sub_id);
        if let Ok(got) = tokio::time::timeout(quiet, self.pull(&name, 100, false)).await {
            let got = got.unwrap_or_else(|e| panic!("pulling {sub_id}: {e:?}"));
            assert!(got.is_empty(), "{sub_id} unexpectedly delivered {got:?}");
        }
    }

    async fn ack(&self, sub_id: &str, received: &[pb::ReceivedMessage]) {
        let ids: Vec<String> = received.iter().map(|m| m.ack_id.clone()).collect();
        self.acknowledge(&subscription_name(sub_id), &ids)
            .await
            .unwrap_or_else(|e| panic!("acknowledging on {sub_id}: {e:?}"));
    }
}

/// A message with `data` and nothing else.
pub fn message(data: &str) -> pb::PubsubMessage {
    pb::PubsubMessage {
        data: data.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// The data of received messages, as text.
pub fn data_of(received: &[pb::ReceivedMessage]) -> Vec<String> {
    received
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.as_ref().expect("a message").data).into_owned())
        .collect()
}

/// Defines, for every listed `async fn scenario(broker: &TestBroker, api:
/// &impl Api)` of the calling file, one test over gRPC (`grpc::scenario`) and
/// one over REST (`rest::scenario`), each with its own broker.
macro_rules! both {
    ($($scenario:ident),+ $(,)?) => {
        mod grpc {
            $(
                #[test]
                fn $scenario() {
                    $crate::common::run(async {
                        let broker = $crate::common::spawn_broker().await;
                        let api = broker.grpc().await;
                        super::$scenario(&broker, &api).await;
                    });
                }
            )+
        }
        mod rest {
            $(
                #[test]
                fn $scenario() {
                    $crate::common::run(async {
                        let broker = $crate::common::spawn_broker().await;
                        let api = broker.rest();
                        super::$scenario(&broker, &api).await;
                    });
                }
            )+
        }
    };
}
pub(crate) use both;
