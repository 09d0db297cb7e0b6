//! `labrelay-bench --broker`: measures a Pub/Sub server through the Pub/Sub
//! API, the same way for ours and for any other (the official emulator
//! included): publish through the official Rust client's batching, publish
//! one message per request from 32 clients (each its own connection, lean
//! clients of our own, [`super::unary`]: over gRPC, and over REST), push
//! a backlog to an in-process 204 sink, push to a sink that fails (503) for
//! two seconds and then heals (requests and concurrency while it fails,
//! time to the first delivery and drain rate once healed), and
//! StreamingPull through the official Subscriber. With `--emulator` it then
//! starts the official emulator and measures it the same way, for ratios.
//!
//! Without `--target` it starts its own `labrelay broker` as a child process
//! on a temporary data directory, so the broker's peak memory can be read
//! from `/proc`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
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

use super::system::Labrelay;
use super::unary::{Framed, RestPublisher, UnaryPublisher};

pub struct BrokerBench {
    /// `http://host:port` of a running server; `None` starts our broker.
    pub target: Option<String>,
    /// The `labrelay` binary our broker runs as, if named
    /// ([`Labrelay::find`]).
    pub labrelay: Option<PathBuf>,
    pub messages: usize,
    pub size: usize,
    /// The phases to run, in their fixed order; empty runs them all.
    pub phases: Vec<Phase>,
    /// Then start the official emulator and measure it the same way.
    pub emulator: bool,
    pub json: bool,
}

/// One measurement of `bench --broker`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Publish through the official client's batching.
    Batched,
    /// 32 clients, one message per request, each on its own connection.
    Single,
    /// The same over REST (HTTP/1.1, JSON) instead of gRPC.
    SingleRest,
    /// Push a backlog to a 204 endpoint.
    Push,
    /// Push to an endpoint that fails for a while, then heals.
    Recover,
    /// StreamingPull through the official Subscriber.
    Pull,
}

/// What `bench --broker` prints; a phase that was not run leaves its
/// figures `null`.
#[derive(Debug, Default, Serialize)]
struct Figures {
    target: String,
    messages: usize,
    message_bytes: usize,
    publish_batched_per_sec: Option<f64>,
    publish_32_clients_per_sec: Option<f64>,
    publish_32_clients_rest_per_sec: Option<f64>,
    push_per_sec: Option<f64>,
    push_duplicates: Option<u64>,
    push_lost: Option<u64>,
    /// Requests per second to an endpoint answering 503 (after 5 ms).
    failing_requests_per_sec: Option<f64>,
    failing_most_in_flight: Option<u64>,
    /// From healing the endpoint to its first delivery.
    recovery_first_delivery_ms: Option<u64>,
    /// The backlog drained from healing on (the pause included).
    recovery_drain_per_sec: Option<f64>,
    recovery_lost: Option<u64>,
    streaming_pull_per_sec: Option<f64>,
    /// Our broker's resident memory with a full backlog waiting (the
    /// largest reading: after publishing the push phase's backlog, and at
    /// the end of the recovery phase's failing stretch).
    backlog_rss_mib: Option<f64>,
    broker_peak_rss_mib: Option<f64>,
}

impl Figures {
    /// Healing to first delivery, as a number for ratios and tables.
    fn first_delivery_ms(&self) -> Option<f64> {
        self.recovery_first_delivery_ms.map(|ms| ms as f64)
    }
}

/// What the 32 × 1 phases' clients speak.
#[derive(Clone, Copy)]
enum Wire {
    Grpc,
    Rest,
}

/// One client of a 32 × 1 phase, with what it publishes.
enum OneByOne {
    Grpc(UnaryPublisher, Framed),
    Rest(RestPublisher),
}

impl OneByOne {
    async fn publish(&mut self) -> anyhow::Result<()> {
        match self {
            OneByOne::Grpc(client, request) => client.publish(request).await,
            OneByOne::Rest(client) => client.publish().await,
        }
    }
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

fn start_own_broker(labrelay: &Labrelay) -> anyhow::Result<(OwnBroker, String)> {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(labrelay.path())
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
    let ours = match &bench.target {
        Some(target) => measure(&bench, target.clone(), target, None).await?,
        None => {
            let (own, endpoint) = start_own_broker(&Labrelay::find(bench.labrelay.clone())?)?;
            let name = format!("labrelay broker ({endpoint})");
            measure(&bench, name, &endpoint, Some(own.child.id())).await?
        }
    };
    if !bench.emulator {
        if bench.json {
            println!("{}", serde_json::to_string_pretty(&ours)?);
        } else {
            print_table(&ours);
        }
        return Ok(());
    }
    if !bench.json {
        print_table(&ours);
        eprintln!("starting the official emulator (gcloud beta emulators pubsub start)...");
    }
    let emulator = Emulator::start().await?;
    let name = format!("official emulator ({})", emulator.endpoint);
    let theirs = measure(&bench, name, &emulator.endpoint, emulator.pid).await?;
    drop(emulator);
    let comparison = Comparison::new(ours, theirs);
    if bench.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        println!();
        print_table(&comparison.emulator);
        println!();
        print_comparison(&comparison);
    }
    Ok(())
}

/// Runs the phases asked for against `endpoint`; `pid` is the server's
/// process on this machine, if known, for its memory.
async fn measure(
    bench: &BrokerBench,
    name: String,
    endpoint: &str,
    pid: Option<u32>,
) -> anyhow::Result<Figures> {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_owned())?
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let bench_run = Run {
        endpoint: endpoint.to_owned(),
        admin: PublisherClient::new(channel.clone()),
        subs: SubscriberClient::new(channel),
        run_id: std::process::id(),
        payload: vec![b'x'; bench.size],
        n: bench.messages,
        json: bench.json,
        broker_pid: pid,
    };
    let mut figures = Figures {
        target: name,
        messages: bench.messages,
        message_bytes: bench.size,
        ..Figures::default()
    };
    let runs = |phase| bench.phases.is_empty() || bench.phases.contains(&phase);
    if runs(Phase::Batched) {
        bench_run.batched(&mut figures).await?;
    }
    if runs(Phase::Single) {
        figures.publish_32_clients_per_sec = Some(bench_run.single(Wire::Grpc).await?);
    }
    if runs(Phase::SingleRest) {
        figures.publish_32_clients_rest_per_sec = Some(bench_run.single(Wire::Rest).await?);
    }
    if runs(Phase::Push) {
        bench_run.push(&mut figures).await?;
    }
    if runs(Phase::Recover) {
        bench_run.recover(&mut figures).await?;
    }
    if runs(Phase::Pull) {
        bench_run.pull(&mut figures).await?;
    }
    figures.broker_peak_rss_mib = pid.and_then(|pid| super::procfs::status_mib(pid, "VmHWM"));
    Ok(figures)
}

/// The official emulator (`gcloud beta emulators pubsub start`) on a free
/// port of this machine, in its own process group (gcloud runs it as a
/// Java child), stopped with that group when dropped.
struct Emulator {
    child: Child,
    endpoint: String,
    /// The Java process serving the port, for its memory.
    pid: Option<u32>,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// How long the emulator may take to answer; it is a JVM.
    const START_LIMIT: Duration = Duration::from_secs(120);

    async fn start() -> anyhow::Result<Emulator> {
        if cfg!(not(unix)) {
            anyhow::bail!(
                "--emulator needs a Unix system: the emulator runs in a process group of its \
                 own, so that its Java server is stopped with it"
            );
        }
        let port = labrelay_runtime::serve::free_port()?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let log_path = dir.path().join("emulator.log");
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new("gcloud");
        command
            .args(["beta", "emulators", "pubsub", "start", "--project=bench"])
            .arg(format!("--host-port=127.0.0.1:{port}"))
            .arg(format!("--data-dir={}", data.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().context(
            "starting the official emulator: `gcloud` was not found \
                 (install the Google Cloud CLI with its pubsub-emulator component)",
        )?;
        let mut emulator = Emulator {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            pid: None,
            _dir: dir,
        };
        let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Self::START_LIMIT;
        loop {
            // The emulator answers `GET /` with "Ok" once it serves.
            let ready = http
                .get(format!("{}/", emulator.endpoint))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(answer) = ready
                && answer.status().is_success()
                && answer.text().await.is_ok_and(|body| body.trim() == "Ok")
            {
                break;
            }
            if let Some(status) = emulator.child.try_wait()? {
                anyhow::bail!(
                    "the official emulator exited ({status}) before serving:\n{}",
                    log_text()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the official emulator did not serve within {} s:\n{}",
                Self::START_LIMIT.as_secs(),
                log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        emulator.pid = super::procfs::pid_listening_on(port);
        Ok(emulator)
    }
}

impl Drop for Emulator {
    /// Stops the whole group: the Java server outlives gcloud if gcloud
    /// fails after starting it.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let signal = |name: &str| {
            Command::new("kill")
                .args([name, "--", &group])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        if signal("-TERM") {
            // `kill -0` succeeds while any process of the group is left.
            let deadline = Instant::now() + Duration::from_secs(5);
            while signal("-0") && Instant::now() < deadline {
                let _ = self.child.try_wait();
                std::thread::sleep(Duration::from_millis(100));
            }
            signal("-KILL");
        }
        let _ = self.child.wait();
    }
}

/// `bench --broker --emulator`: both servers' figures and, for every figure
/// both have, ours ÷ the emulator's.
#[derive(Debug, Serialize)]
struct Comparison {
    ours: Figures,
    emulator: Figures,
    /// Ours ÷ emulator by [`Compared::key`], two decimals: above 1 is
    /// better for the rates, below 1 for requests to a failing endpoint,
    /// time to first delivery and memory.
    ratios: BTreeMap<&'static str, Option<f64>>,
}

/// A figure both servers are compared on.
struct Compared {
    /// Its name in `ratios`.
    key: &'static str,
    /// Its row in the table.
    label: &'static str,
    value: fn(&Figures) -> Option<f64>,
    higher_is_better: bool,
}

const COMPARED: [Compared; 10] = [
    Compared {
        key: "publish_batched",
        label: "publish, client batching (msg/s)",
        value: |f| f.publish_batched_per_sec,
        higher_is_better: true,
    },
    Compared {
        key: "publish_32_clients",
        label: "publish, 32 clients x 1 (msg/s)",
        value: |f| f.publish_32_clients_per_sec,
        higher_is_better: true,
    },
    Compared {
        key: "publish_32_clients_rest",
        label: "publish, 32 x 1 over REST (msg/s)",
        value: |f| f.publish_32_clients_rest_per_sec,
        higher_is_better: true,
    },
    Compared {
        key: "push",
        label: "push to a 204 endpoint (msg/s)",
        value: |f| f.push_per_sec,
        higher_is_better: true,
    },
    Compared {
        key: "failing_requests",
        label: "failing endpoint (req/s)",
        value: |f| f.failing_requests_per_sec,
        higher_is_better: false,
    },
    Compared {
        key: "recovery_first_delivery",
        label: "  healed: first delivery (ms)",
        value: Figures::first_delivery_ms,
        higher_is_better: false,
    },
    Compared {
        key: "recovery_drain",
        label: "  healed: backlog drained (msg/s)",
        value: |f| f.recovery_drain_per_sec,
        higher_is_better: true,
    },
    Compared {
        key: "streaming_pull",
        label: "StreamingPull (msg/s)",
        value: |f| f.streaming_pull_per_sec,
        higher_is_better: true,
    },
    Compared {
        key: "backlog_rss",
        label: "RSS with backlog (MiB)",
        value: |f| f.backlog_rss_mib,
        higher_is_better: false,
    },
    Compared {
        key: "peak_rss",
        label: "peak RSS (MiB)",
        value: |f| f.broker_peak_rss_mib,
        higher_is_better: false,
    },
];

impl Comparison {
    fn new(ours: Figures, emulator: Figures) -> Comparison {
        let ratios = COMPARED
            .iter()
            .map(|c| {
                (
                    c.key,
                    super::peer::ratio((c.value)(&ours), (c.value)(&emulator)),
                )
            })
            .collect();
        Comparison {
            ours,
            emulator,
            ratios,
        }
    }
}

/// One `bench --broker` run: where it points and what it sends.
struct Run {
    endpoint: String,
    admin: PublisherClient<tonic::transport::Channel>,
    subs: SubscriberClient<tonic::transport::Channel>,
    run_id: u32,
    payload: Vec<u8>,
    n: usize,
    json: bool,
    /// Our own broker's pid, for its memory.
    broker_pid: Option<u32>,
}

impl Run {
    fn topic(&self, name: &str) -> String {
        format!("projects/bench/topics/{name}-{}", self.run_id)
    }

    fn sub(&self, name: &str) -> String {
        format!("projects/bench/subscriptions/{name}-{}", self.run_id)
    }

    fn say(&self, what: &str) {
        if !self.json {
            eprintln!("{what}");
        }
    }

    async fn create_topic(&self, name: &str) -> anyhow::Result<()> {
        self.admin
            .clone()
            .create_topic(pb::Topic {
                name: self.topic(name),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn create_subscription(
        &self,
        name: &str,
        push_endpoint: Option<&str>,
    ) -> anyhow::Result<()> {
        self.subs
            .clone()
            .create_subscription(pb::Subscription {
                name: self.sub(name),
                topic: self.topic(name),
                ack_deadline_seconds: 60,
                push_config: push_endpoint.map(|url| pb::PushConfig {
                    push_endpoint: url.to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Records our broker's resident memory now if it is the largest yet.
    fn note_backlog_rss(&self, figures: &mut Figures) {
        let rss = self
            .broker_pid
            .and_then(|pid| super::procfs::status_mib(pid, "VmRSS"));
        figures.backlog_rss_mib = match (figures.backlog_rss_mib, rss) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Phase 1: the official client's batching, one topic without subscriptions.
    async fn batched(&self, figures: &mut Figures) -> anyhow::Result<()> {
        self.create_topic("publish").await?;
        self.say("publishing with the official client's batching...");
        let elapsed = publish_batched(
            &self.endpoint,
            &self.topic("publish"),
            self.n,
            &self.payload,
        )
        .await?;
        figures.publish_batched_per_sec = Some(rate(self.n, elapsed));
        Ok(())
    }

    /// Phase 2: 32 clients, one message per request, each on its own
    /// connection (one shared HTTP/2 connection would measure its single
    /// task), into a topic with a subscription so every message is stored;
    /// the messages per second. The clients are lean ([`UnaryPublisher`]
    /// sends each request in one write where tonic took three): they share
    /// the server's cores, so what they cost is taken from the server.
    async fn single(&self, wire: Wire) -> anyhow::Result<f64> {
        let name = match wire {
            Wire::Grpc => "single",
            Wire::Rest => "single-rest",
        };
        self.create_topic(name).await?;
        self.create_subscription(name, None).await?;
        let request = Framed::new(&pb::PublishRequest {
            topic: self.topic(name),
            messages: vec![pb::PubsubMessage {
                data: self.payload.clone(),
                ..Default::default()
            }],
        })?;
        let mut clients = Vec::new();
        for _ in 0..32 {
            clients.push(match wire {
                Wire::Grpc => OneByOne::Grpc(
                    UnaryPublisher::connect(&self.endpoint).await?,
                    request.clone(),
                ),
                Wire::Rest => OneByOne::Rest(
                    RestPublisher::connect(&self.endpoint, &self.topic(name), &self.payload)
                        .await?,
                ),
            });
        }
        self.say(match wire {
            Wire::Grpc => "publishing one message per request from 32 clients...",
            Wire::Rest => "publishing one message per request from 32 REST clients...",
        });
        let n = self.n;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (worker, mut client) in clients.into_iter().enumerate() {
            let count = n / 32 + usize::from(worker < n % 32);
            tasks.push(tokio::spawn(async move {
                for _ in 0..count {
                    client.publish().await?;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let per_sec = rate(n, started.elapsed());
        // Its backlog must not count towards the memory of the later phases.
        self.subs
            .clone()
            .delete_subscription(pb::DeleteSubscriptionRequest {
                subscription: self.sub(name),
            })
            .await?;
        Ok(per_sec)
    }

    /// Phase 3: push to a 204 endpoint: the backlog is published first, then the
    /// subscription's endpoint is set and the drain is timed.
    async fn push(&self, figures: &mut Figures) -> anyhow::Result<()> {
        let sink = start_sink().await?;
        self.create_topic("push").await?;
        self.create_subscription("push", None).await?;
        publish_batched(&self.endpoint, &self.topic("push"), self.n, &self.payload).await?;
        self.note_backlog_rss(figures);
        self.say("pushing the backlog to a 204 endpoint...");
        let started = Instant::now();
        self.subs
            .clone()
            .modify_push_config(pb::ModifyPushConfigRequest {
                subscription: self.sub("push"),
                push_config: Some(pb::PushConfig {
                    push_endpoint: sink.url.clone(),
                    ..Default::default()
                }),
            })
            .await?;
        let complete = sink.wait_for(self.n, Duration::from_secs(600)).await;
        let elapsed = started.elapsed();
        let delivered = sink.seen.lock().expect("sink lock").len();
        figures.push_per_sec = Some(rate(delivered, elapsed));
        figures.push_duplicates = Some(sink.duplicates.load(Ordering::Relaxed));
        figures.push_lost = Some(if complete {
            0
        } else {
            (self.n - delivered) as u64
        });
        Ok(())
    }

    /// Phase 3b: an endpoint that fails (slowly, 503) for a while with a backlog
    /// waiting, then heals: while it fails the push window must shrink (few
    /// requests, few at once); once healthy it must open fast.
    async fn recover(&self, figures: &mut Figures) -> anyhow::Result<()> {
        let ailing = start_sink().await?;
        ailing.failing.store(true, Ordering::Relaxed);
        self.create_topic("recover").await?;
        self.create_subscription("recover", Some(&ailing.url))
            .await?;
        self.say("pushing to a failing endpoint, then healing it...");
        publish_batched(
            &self.endpoint,
            &self.topic("recover"),
            self.n,
            &self.payload,
        )
        .await?;
        let requests_before = ailing.load.reset();
        // A fixed stretch of failure is what is being measured.
        tokio::time::sleep(FAILING_FOR).await;
        self.note_backlog_rss(figures);
        let failing_requests = ailing.load.requests.load(Ordering::Relaxed) - requests_before;
        figures.failing_requests_per_sec =
            Some((failing_requests as f64 / FAILING_FOR.as_secs_f64()).round());
        figures.failing_most_in_flight = Some(ailing.load.most.load(Ordering::Relaxed));
        ailing.failing.store(false, Ordering::Relaxed);
        let healed = Instant::now();
        ailing.wait_for(1, Duration::from_secs(120)).await;
        figures.recovery_first_delivery_ms = Some(healed.elapsed().as_millis() as u64);
        let recovered = ailing.wait_for(self.n, Duration::from_secs(600)).await;
        let drained = healed.elapsed();
        let recovered_count = ailing.seen.lock().expect("sink lock").len();
        figures.recovery_drain_per_sec = Some(rate(recovered_count, drained));
        figures.recovery_lost = Some(if recovered {
            0
        } else {
            (self.n - recovered_count) as u64
        });
        Ok(())
    }

    /// Phase 4: StreamingPull through the official Subscriber.
    async fn pull(&self, figures: &mut Figures) -> anyhow::Result<()> {
        self.create_topic("pull").await?;
        self.create_subscription("pull", None).await?;
        publish_batched(&self.endpoint, &self.topic("pull"), self.n, &self.payload).await?;
        self.say("receiving the backlog with StreamingPull...");
        let subscriber = Subscriber::builder()
            .with_endpoint(&self.endpoint)
            .with_credentials(Anonymous::new().build())
            .build()
            .await?;
        let mut stream = subscriber.subscribe(self.sub("pull")).build();
        let started = Instant::now();
        let mut received = 0;
        while received < self.n {
            match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
                Ok(Some(Ok((_, handler)))) => {
                    handler.ack();
                    received += 1;
                }
                Ok(Some(Err(error))) => anyhow::bail!("StreamingPull failed: {error}"),
                Ok(None) | Err(_) => {
                    anyhow::bail!(
                        "StreamingPull stalled after {received} of {} messages",
                        self.n
                    )
                }
            }
        }
        figures.streaming_pull_per_sec = Some(rate(self.n, started.elapsed()));
        Ok(())
    }
}

fn print_table(figures: &Figures) {
    fn show<T: std::fmt::Display>(value: Option<T>) -> String {
        value.map_or_else(|| "-".to_owned(), |v| v.to_string())
    }
    println!("target                      {}", figures.target);
    println!(
        "messages                    {} x {} bytes",
        figures.messages, figures.message_bytes
    );
    println!(
        "publish, client batching    {:>10} msg/s",
        show(figures.publish_batched_per_sec)
    );
    println!(
        "publish, 32 clients x 1     {:>10} msg/s",
        show(figures.publish_32_clients_per_sec)
    );
    println!(
        "  the same over REST        {:>10} msg/s",
        show(figures.publish_32_clients_rest_per_sec)
    );
    println!(
        "push to a 204 endpoint      {:>10} msg/s  (duplicates {}, lost {})",
        show(figures.push_per_sec),
        show(figures.push_duplicates),
        show(figures.push_lost)
    );
    println!(
        "failing endpoint (503)      {:>10} req/s  (most at once {}, for {} s)",
        show(figures.failing_requests_per_sec),
        show(figures.failing_most_in_flight),
        FAILING_FOR.as_secs()
    );
    println!(
        "  healed: first delivery    {:>10} ms",
        show(figures.recovery_first_delivery_ms)
    );
    println!(
        "  healed: backlog drained   {:>10} msg/s  (lost {})",
        show(figures.recovery_drain_per_sec),
        show(figures.recovery_lost)
    );
    println!(
        "StreamingPull               {:>10} msg/s",
        show(figures.streaming_pull_per_sec)
    );
    if let Some(rss) = figures.backlog_rss_mib {
        println!("RSS with backlog            {rss:>10.1} MiB");
    }
    if let Some(rss) = figures.broker_peak_rss_mib {
        println!("peak RSS                    {rss:>10.1} MiB");
    }
}

fn print_comparison(c: &Comparison) {
    fn show(value: Option<f64>, decimals: usize) -> String {
        value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
    }
    /// "2.3x ours" when ours is better by 2.3 times, "1.5x emulator" when
    /// the emulator is; `higher_is_better` says which way the figure points.
    fn verdict(ratio: Option<f64>, higher_is_better: bool) -> String {
        match ratio {
            Some(r) if r > 0.0 => {
                let ours_better = (r >= 1.0) == higher_is_better;
                let times = if r >= 1.0 { r } else { 1.0 / r };
                let who = if ours_better { "ours" } else { "emulator" };
                format!("{times:.1}x {who}")
            }
            _ => "-".to_owned(),
        }
    }
    let (o, e) = (&c.ours, &c.emulator);
    println!(
        "{:<36} {:>14} {:>14} {:>16}",
        "", "labrelay", "emulator", "better by"
    );
    for compared in &COMPARED {
        // Memory in MiB with a decimal; rates and times are whole numbers.
        let decimals = usize::from(compared.label.contains("MiB"));
        println!(
            "{:<36} {:>14} {:>14} {:>16}",
            compared.label,
            show((compared.value)(o), decimals),
            show((compared.value)(e), decimals),
            verdict(
                c.ratios.get(compared.key).copied().flatten(),
                compared.higher_is_better
            )
        );
    }
    let lost = |f: &Figures| {
        format!(
            "{} lost, {} duplicates",
            f.push_lost.unwrap_or(0) + f.recovery_lost.unwrap_or(0),
            f.push_duplicates.unwrap_or(0)
        )
    };
    println!("{:<36} {:>22} {:>22}", "push", lost(o), lost(e));
}
