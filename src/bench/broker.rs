//! `labrelay bench --broker`: measures a Pub/Sub server through the Pub/Sub
//! API, the same way for ours and for any other (the official emulator
//! included): publish through the official Rust client's batching, publish
//! one message per request from 32 clients, push to an in-process 204 sink,
//! and StreamingPull through the official Subscriber.
//!
//! Without `--target` it starts its own `labrelay broker` as a child process
//! on a temporary data directory, so the broker's peak memory can be read
//! from `/proc`.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
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

fn rate(n: usize, elapsed: Duration) -> f64 {
    (n as f64 / elapsed.as_secs_f64()).round()
}

/// A push endpoint answering 204 and counting distinct message ids.
struct Sink {
    url: String,
    seen: Arc<Mutex<HashSet<String>>>,
    duplicates: Arc<AtomicU64>,
    changed: Arc<Notify>,
}

async fn start_sink() -> anyhow::Result<Sink> {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let duplicates = Arc::new(AtomicU64::new(0));
    let changed = Arc::new(Notify::new());
    let (s, d, c) = (seen.clone(), duplicates.clone(), changed.clone());
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (seen, duplicates, changed) = (s.clone(), d.clone(), c.clone());
            async move {
                let id = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["message"]["messageId"].as_str().map(str::to_string))
                    .unwrap_or_default();
                if !seen.lock().expect("sink lock").insert(id) {
                    duplicates.fetch_add(1, Ordering::Relaxed);
                }
                changed.notify_waiters();
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
            "StreamingPull               {:>10} msg/s",
            figures.streaming_pull_per_sec
        );
        if let Some(rss) = figures.broker_peak_rss_mib {
            println!("broker peak RSS             {rss:>10.1} MiB");
        }
    }
    Ok(())
}
