//! `labrelay bench --broker`: measures a Pub/Sub server through the Pub/Sub
//! API, the same way for ours and for any other (the official emulator
//! included): publish through the official Rust client's batching, publish
//! one message per request from 32 clients (each its own connection), push
//! a backlog to an in-process 204 sink, push to a sink that fails (503) for
//! two seconds and then heals (requests and concurrency while it fails,
//! time to the first delivery and drain rate once healed), and
//! StreamingPull through the official Subscriber.
//!
//! Without `--target` it starts its own `labrelay broker` as a child process
//! on a temporary data directory, so the broker's peak memory can be read
//! from `/proc`.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_pubsub::client::{Publisher, Subscriber};
use google_cloud_pubsub::model::Message;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
use pb::publisher_client::PublisherClient;
use pb::subscriber_client::SubscriberClient;
use serde::Serialize;
use tokio::sync::Notify;

pub struct BrokerBench {
    /// `http://host:port` of a running server; `None` starts our broker.
    pub target: Option<String>,
    pub messages: usize,
    pub size: usize,
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Figures {
    target: String,
    messages: usize,
    message_bytes: usize,
    publish_batched_per_sec: f64,
    publish_32_clients_per_sec: f64,
    push_per_sec: f64,
    push_duplicates: u64,
    push_lost: u64,
    /// Requests per second to an endpoint answering 503 (after 5 ms).
    failing_requests_per_sec: f64,
    failing_most_in_flight: u64,
    /// From healing the endpoint to its first delivery.
    recovery_first_delivery_ms: u64,
    /// The backlog drained from healing on (the pause included).
    recovery_drain_per_sec: f64,
    recovery_lost: u64,
    streaming_pull_per_sec: f64,
    broker_peak_rss_mib: Option<f64>,
}

struct OwnBroker {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_own_broker() -> anyhow::Result<(OwnBroker, String)> {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["broker", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting labrelay broker")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let addr = line
        .split_whitespace()
        .nth(3)
        .context("the broker did not print its address")?
        .to_string();
    Ok((OwnBroker { child, _dir: dir }, format!("http://{addr}")))
}

/// How long the failing endpoint fails in phase 3b.
const FAILING_FOR: Duration = Duration::from_secs(2);

fn rate(n: usize, elapsed: Duration) -> f64 {
    (n as f64 / elapsed.as_secs_f64()).round()
}

/// A push endpoint answering 204 (or 503 while `failing`) and counting
/// distinct message ids, requests and the most requests it had at once.
struct Sink {
    url: String,
    seen: Arc<Mutex<HashSet<String>>>,
    duplicates: Arc<AtomicU64>,
    changed: Arc<Notify>,
    failing: Arc<AtomicBool>,
    load: Arc<Load>,
}

/// Requests a sink has seen, and how many were in its handler at once.
#[derive(Default)]
struct Load {
    requests: AtomicU64,
    now: AtomicU64,
    most: AtomicU64,
}

impl Load {
    fn enter(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.most.fetch_max(now, Ordering::Relaxed);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }

    /// Starts a new measurement: returns the requests so far.
    fn reset(&self) -> u64 {
        self.most
            .store(self.now.load(Ordering::Relaxed), Ordering::Relaxed);
        self.requests.load(Ordering::Relaxed)
    }
}

async fn start_sink() -> anyhow::Result<Sink> {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let duplicates = Arc::new(AtomicU64::new(0));
    let changed = Arc::new(Notify::new());
    let failing = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let (s, d, c) = (seen.clone(), duplicates.clone(), changed.clone());
    let (f, l) = (failing.clone(), load.clone());
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (seen, duplicates, changed) = (s.clone(), d.clone(), c.clone());
            let (failing, load) = (f.clone(), l.clone());
            async move {
                load.enter();
                if failing.load(Ordering::Relaxed) {
                    // A struggling endpoint: slow, then refusing.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    load.leave();
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let id = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["message"]["messageId"].as_str().map(str::to_string))
                    .unwrap_or_default();
                if !seen.lock().expect("sink lock").insert(id) {
                    duplicates.fetch_add(1, Ordering::Relaxed);
                }
                changed.notify_waiters();
                load.leave();
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Sink {
        url,
        seen,
        duplicates,
        changed,
        failing,
        load,
    })
}

impl Sink {
    async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.seen.lock().expect("sink lock").len() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }
}

async fn publisher(endpoint: &str, topic: &str) -> anyhow::Result<Publisher> {
    Ok(Publisher::builder(topic)
        .with_endpoint(endpoint)
        .with_credentials(Anonymous::new().build())
        .build()
        .await?)
}

async fn publish_batched(
    endpoint: &str,
    topic: &str,
    n: usize,
    payload: &[u8],
) -> anyhow::Result<Duration> {
    let publisher = publisher(endpoint, topic).await?;
    let started = Instant::now();
    let pending: Vec<_> = (0..n)
        .map(|_| publisher.publish(Message::new().set_data(payload.to_vec())))
        .collect();
    for future in pending {
        future.await?;
    }
    Ok(started.elapsed())
}

pub async fn run(bench: BrokerBench) -> anyhow::Result<()> {
    let (own, endpoint) = match &bench.target {
        Some(target) => (None, target.clone()),
        None => {
            let (own, endpoint) = start_own_broker()?;
            (Some(own), endpoint)
        }
    };
    let channel = tonic::transport::Channel::from_shared(endpoint.clone())?
        .connect()
        .await?;
    let mut admin = PublisherClient::new(channel.clone());
    let mut subs = SubscriberClient::new(channel.clone());
    let run_id = std::process::id();
    let topic = |name: &str| format!("projects/bench/topics/{name}-{run_id}");
    let sub = |name: &str| format!("projects/bench/subscriptions/{name}-{run_id}");
    let payload = vec![b'x'; bench.size];
    let n = bench.messages;
    let say = |what: &str| {
        if !bench.json {
            eprintln!("{what}");
        }
    };

    // 1. The official client's batching, one topic without subscriptions.
    admin
        .create_topic(pb::Topic {
            name: topic("publish"),
            ..Default::default()
        })
        .await?;
    say("publishing with the official client's batching...");
    let batched = publish_batched(&endpoint, &topic("publish"), n, &payload).await?;

    // 2. 32 clients, one message per request, each on its own connection
    // (one shared HTTP/2 connection would measure its single task), into a
    // topic with a subscription so every message is stored.
    admin
        .create_topic(pb::Topic {
            name: topic("single"),
            ..Default::default()
        })
        .await?;
    subs.create_subscription(pb::Subscription {
        name: sub("single"),
        topic: topic("single"),
        ..Default::default()
    })
    .await?;
    let mut clients = Vec::new();
    for _ in 0..32 {
        let connection = tonic::transport::Channel::from_shared(endpoint.clone())?
            .connect()
            .await?;
        clients.push(PublisherClient::new(connection));
    }
    say("publishing one message per request from 32 clients...");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (worker, mut client) in clients.into_iter().enumerate() {
        let (topic, payload) = (topic("single"), payload.clone());
        let count = n / 32 + usize::from(worker < n % 32);
        tasks.push(tokio::spawn(async move {
            for _ in 0..count {
                let request = pb::PublishRequest {
                    topic: topic.clone(),
                    messages: vec![pb::PubsubMessage {
                        data: payload.clone(),
                        ..Default::default()
                    }],
                };
                client.publish(request).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let single = started.elapsed();
    // Its backlog must not count towards the memory of the later phases.
    subs.delete_subscription(pb::DeleteSubscriptionRequest {
        subscription: sub("single"),
    })
    .await?;

    // 3. Push to a 204 endpoint: the backlog is published first, then the
    // subscription's endpoint is set and the drain is timed.
    let sink = start_sink().await?;
    admin
        .create_topic(pb::Topic {
            name: topic("push"),
            ..Default::default()
        })
        .await?;
    subs.create_subscription(pb::Subscription {
        name: sub("push"),
        topic: topic("push"),
        ack_deadline_seconds: 60,
        ..Default::default()
    })
    .await?;
    publish_batched(&endpoint, &topic("push"), n, &payload).await?;
    say("pushing the backlog to a 204 endpoint...");
    let started = Instant::now();
    subs.modify_push_config(pb::ModifyPushConfigRequest {
        subscription: sub("push"),
        push_config: Some(pb::PushConfig {
            push_endpoint: sink.url.clone(),
            ..Default::default()
        }),
    })
    .await?;
    let complete = sink.wait_for(n, Duration::from_secs(600)).await;
    let push = started.elapsed();
    let delivered = sink.seen.lock().expect("sink lock").len();

    // 3b. An endpoint that fails (slowly, 503) for a while with a backlog
    // waiting, then heals: while it fails the push window must shrink (few
    // requests, few at once); once healthy it must open fast.
    let ailing = start_sink().await?;
    ailing.failing.store(true, Ordering::Relaxed);
    admin
        .create_topic(pb::Topic {
            name: topic("recover"),
            ..Default::default()
        })
        .await?;
    subs.create_subscription(pb::Subscription {
        name: sub("recover"),
        topic: topic("recover"),
        ack_deadline_seconds: 60,
        push_config: Some(pb::PushConfig {
            push_endpoint: ailing.url.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await?;
    say("pushing to a failing endpoint, then healing it...");
    publish_batched(&endpoint, &topic("recover"), n, &payload).await?;
    let requests_before = ailing.load.reset();
    // A fixed stretch of failure is what is being measured.
    tokio::time::sleep(FAILING_FOR).await;
    let failing_requests = ailing.load.requests.load(Ordering::Relaxed) - requests_before;
    let failing_most_in_flight = ailing.load.most.load(Ordering::Relaxed);
    ailing.failing.store(false, Ordering::Relaxed);
    let healed = Instant::now();
    ailing.wait_for(1, Duration::from_secs(120)).await;
    let first_after_healing = healed.elapsed();
    let recovered = ailing.wait_for(n, Duration::from_secs(600)).await;
    let drained = healed.elapsed();
    let recovered_count = ailing.seen.lock().expect("sink lock").len();

    // 4. StreamingPull through the official Subscriber.
    admin
        .create_topic(pb::Topic {
            name: topic("pull"),
            ..Default::default()
        })
        .await?;
    subs.create_subscription(pb::Subscription {
        name: sub("pull"),
        topic: topic("pull"),
        ack_deadline_seconds: 60,
        ..Default::default()
    })
    .await?;
    publish_batched(&endpoint, &topic("pull"), n, &payload).await?;
    say("receiving the backlog with StreamingPull...");
    let subscriber = Subscriber::builder()
        .with_endpoint(&endpoint)
        .with_credentials(Anonymous::new().build())
        .build()
        .await?;
    let mut stream = subscriber.subscribe(sub("pull")).build();
    let started = Instant::now();
    let mut received = 0;
    while received < n {
        match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
            Ok(Some(Ok((_, handler)))) => {
                handler.ack();
                received += 1;
            }
            Ok(Some(Err(error))) => anyhow::bail!("StreamingPull failed: {error}"),
            Ok(None) | Err(_) => {
                anyhow::bail!("StreamingPull stalled after {received} of {n} messages")
            }
        }
    }
    let pull = started.elapsed();

    let figures = Figures {
        target: bench
            .target
            .clone()
            .unwrap_or_else(|| format!("labrelay broker ({endpoint})")),
        messages: n,
        message_bytes: bench.size,
        publish_batched_per_sec: rate(n, batched),
        publish_32_clients_per_sec: rate(n, single),
        push_per_sec: rate(delivered, push),
        push_duplicates: sink.duplicates.load(Ordering::Relaxed),
        push_lost: if complete { 0 } else { (n - delivered) as u64 },
        failing_requests_per_sec: (failing_requests as f64 / FAILING_FOR.as_secs_f64()).round(),
        failing_most_in_flight,
        recovery_first_delivery_ms: first_after_healing.as_millis() as u64,
        recovery_drain_per_sec: rate(recovered_count, drained),
        recovery_lost: if recovered {
            0
        } else {
            (n - recovered_count) as u64
        },
        streaming_pull_per_sec: rate(n, pull),
        broker_peak_rss_mib: own
            .as_ref()
            .and_then(|o| super::procfs::status_mib(o.child.id(), "VmHWM")),
    };
    if bench.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!("target                      {}", figures.target);
        println!("messages                    {} x {} bytes", n, bench.size);
        println!(
            "publish, client batching    {:>10} msg/s",
            figures.publish_batched_per_sec
        );
        println!(
            "publish, 32 clients x 1     {:>10} msg/s",
            figures.publish_32_clients_per_sec
        );
        println!(
            "push to a 204 endpoint      {:>10} msg/s  (duplicates {}, lost {})",
            figures.push_per_sec, figures.push_duplicates, figures.push_lost
        );
        println!(
            "failing endpoint (503)      {:>10} req/s  (most at once {}, for {} s)",
            figures.failing_requests_per_sec,
            figures.failing_most_in_flight,
            FAILING_FOR.as_secs()
        );
        println!(
            "  healed: first delivery    {:>10} ms",
            figures.recovery_first_delivery_ms
        );
        println!(
            "  healed: backlog drained   {:>10} msg/s  (lost {})",
            figures.recovery_drain_per_sec, figures.recovery_lost
        );
        println!(
            "StreamingPull               {:>10} msg/s",
            figures.streaming_pull_per_sec
        );
        if let Some(rss) = figures.broker_peak_rss_mib {
            println!("broker peak RSS             {rss:>10.1} MiB");
        }
    }
    Ok(())
}
