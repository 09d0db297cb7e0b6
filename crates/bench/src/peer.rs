//! `labrelay-bench --peer node`: our lab-report-service against the Pet
//! Theory lab's own Node.js one (express + `@google-cloud/pubsub`, in
//! `bench/node-peer/`), in the same run, against the same broker.
//!
//! One broker child process with `new-lab-report` and one pull subscription
//! (so every publish is stored, as with the real push subscriptions, but
//! nothing is pushed while the ingest is measured). Then, for each service in
//! turn: spawn it, time spawn → listening → first 204 (cold start), drive the
//! same load, read its CPU time and peak memory, stop it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
use serde::Serialize;
use tokio::time::Instant;

use super::load::{self, Plan, Posted};
use super::procfs::{self, Sampler, Usage};
use super::stats::{self, Percentiles, fmt_opt, per_second};
use super::system::{self, Labrelay, Process};
use labrelay::up::TOPIC;

pub struct Peer {
    pub plan: Plan,
    /// The `labrelay` binary the broker and our service run as, if named
    /// ([`Labrelay::find`]).
    pub labrelay: Option<PathBuf>,
    /// Where `bench/node-peer` is (its `node_modules` installed with `npm ci`).
    pub node_dir: PathBuf,
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Side {
    service: String,
    accepted: usize,
    rejected: usize,
    ingest_seconds: f64,
    ingest_per_sec: f64,
    latency_ms: Percentiles,
    /// Spawn → "listening" line on stdout.
    listening_ms: f64,
    /// Spawn → the first 204 (one POST sent once it listens).
    cold_start_ms: f64,
    /// RSS right after the first 204, before the load.
    rss_idle_mib: Option<f64>,
    service_usage: Usage,
    broker_usage: Usage,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// Ours ÷ Node: how many times more reports per second.
    ingest_throughput: Option<f64>,
    /// Node ÷ ours: how many times more CPU per report Node needs.
    cpu_per_report: Option<f64>,
    /// Node ÷ ours, peak RSS.
    peak_memory: Option<f64>,
    /// Node ÷ ours, spawn → first 204.
    cold_start: Option<f64>,
    /// Node ÷ ours, ingest p99.
    p99_latency: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Figures {
    plan: String,
    node_version: String,
    load_average_start: Option<[f64; 3]>,
    load_average_end: Option<[f64; 3]>,
    ours: Side,
    node: Side,
    ratios: Ratios,
}

pub(super) fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    let (n, d) = (numerator?, denominator?);
    (d > 0.0).then(|| (n / d * 100.0).round() / 100.0)
}

async fn create_topic(broker: std::net::SocketAddr, project: &str) -> anyhow::Result<()> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{broker}"))?
        .connect()
        .await?;
    let topic = format!("projects/{project}/topics/{TOPIC}");
    pb::publisher_client::PublisherClient::new(channel.clone())
        .create_topic(pb::Topic {
            name: topic.clone(),
            ..Default::default()
        })
        .await?;
    pb::subscriber_client::SubscriberClient::new(channel)
        .create_subscription(pb::Subscription {
            name: format!("projects/{project}/subscriptions/bench-peer-store"),
            topic,
            ack_deadline_seconds: 60,
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Spawns a service, measures its cold start, drives the load, stops it.
async fn measure(
    name: &str,
    command: Command,
    log: PathBuf,
    broker: &Process,
    api_key: &str,
    plan: &Plan,
    json: bool,
) -> anyhow::Result<Side> {
    if !json {
        eprintln!("{name}: starting, then {}...", plan.describe());
    }
    let process = Process::spawn(name, command, &log)?;
    let listening = process.spawned.elapsed();
    let prefix = format!("peer-{name}-{:08x}-", rand::random::<u32>());
    let target = load::Target::new(
        process.url(),
        Some(api_key.to_string()),
        prefix,
        plan.concurrency,
    )?;
    let first = target.post(usize::MAX).await;
    let cold_start = process.spawned.elapsed();
    if first != Ok(204) {
        anyhow::bail!("{name}'s first POST got {first:?} (log: {})", log.display());
    }
    let rss_idle_mib = procfs::status_mib(process.pid(), "VmRSS");
    let sampler = Sampler::start(vec![process.watched(), broker.watched()]);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Posted>();
    let started = Instant::now();
    let load = tokio::spawn(load::drive(
        target,
        plan.clone(),
        tx,
        Arc::new(AtomicBool::new(false)),
    ));
    let mut histogram = stats::histogram();
    let (mut accepted, mut rejected) = (0, 0);
    let mut last = started;
    while let Some(p) = rx.recv().await {
        if p.outcome == Ok(204) {
            accepted += 1;
            stats::record(&mut histogram, p.end - p.start);
            last = last.max(p.end);
        } else {
            rejected += 1;
        }
    }
    load.await.context("the load generator panicked")?;
    let (mut usage, _) = sampler.finish(accepted);
    let broker_usage = usage.pop().context("broker usage")?;
    let service_usage = usage.pop().context("service usage")?;
    drop(process);
    let elapsed = last - started;
    Ok(Side {
        service: name.to_string(),
        accepted,
        rejected,
        ingest_seconds: elapsed.as_secs_f64(),
        ingest_per_sec: per_second(accepted, elapsed),
        latency_ms: Percentiles::of(&histogram),
        listening_ms: listening.as_secs_f64() * 1000.0,
        cold_start_ms: cold_start.as_secs_f64() * 1000.0,
        rss_idle_mib,
        service_usage,
        broker_usage,
    })
}

pub async fn run(bench: Peer) -> anyhow::Result<()> {
    let script = bench.node_dir.join("lab-report-service.js");
    anyhow::ensure!(
        bench.node_dir.join("node_modules").is_dir(),
        "{} has no node_modules: run `npm ci --prefix {}` first",
        bench.node_dir.display(),
        bench.node_dir.display()
    );
    let script = script
        .canonicalize()
        .with_context(|| format!("finding {}", script.display()))?;
    let node_version = Command::new("node")
        .arg("--version")
        .output()
        .context("running node --version (is Node.js installed?)")?;
    let node_version = String::from_utf8_lossy(&node_version.stdout)
        .trim()
        .to_string();

    let load_average_start = procfs::load_average();
    let dir = tempfile::Builder::new()
        .prefix("labrelay-bench-peer-")
        .tempdir()?;
    let project = labrelay::up::project_id();
    let labrelay = Labrelay::find(bench.labrelay.clone())?;
    let broker = system::start_broker(&labrelay, dir.path())?;
    create_topic(broker.addr, &project).await?;
    let api_key = hex::encode(rand::random::<[u8; 32]>());

    let mut ours_command = labrelay.command(&["lab-report-service"]);
    ours_command
        .env("PORT", "0")
        .env("PUBSUB_EMULATOR_HOST", broker.addr.to_string())
        .env("PUBSUB_PROJECT_ID", &project)
        .env(
            "INGEST_API_KEYS",
            format!(
                "{}:{}",
                labrelay::up::LOCAL_LAB,
                labrelay_lab_report_service::ingest_auth::hash_key(&api_key)
            ),
        )
        // One lab posting as fast as it can: the rate limit would measure
        // itself, not the service.
        .env("INGEST_RATE_LIMIT", "off");
    let ours = measure(
        "lab-report-service (Rust)",
        ours_command,
        dir.path().join("ours.log"),
        &broker,
        &api_key,
        &bench.plan,
        bench.json,
    )
    .await?;

    let port = labrelay_runtime::serve::free_port()?;
    let mut node_command = Command::new("node");
    node_command
        .arg(&script)
        .current_dir(&bench.node_dir)
        .env("PORT", port.to_string())
        .env("PUBSUB_EMULATOR_HOST", broker.addr.to_string())
        .env("PUBSUB_PROJECT_ID", &project)
        .env("GOOGLE_CLOUD_PROJECT", &project)
        .env("NODE_ENV", "production");
    let node = measure(
        "lab-report-service (Node)",
        node_command,
        dir.path().join("node.log"),
        &broker,
        &api_key,
        &bench.plan,
        bench.json,
    )
    .await?;

    let ratios = Ratios {
        ingest_throughput: ratio(Some(ours.ingest_per_sec), Some(node.ingest_per_sec)),
        cpu_per_report: ratio(
            node.service_usage.cpu_ms_per_report,
            ours.service_usage.cpu_ms_per_report,
        ),
        peak_memory: ratio(
            node.service_usage.peak_rss_mib,
            ours.service_usage.peak_rss_mib,
        ),
        cold_start: ratio(Some(node.cold_start_ms), Some(ours.cold_start_ms)),
        p99_latency: ratio(Some(node.latency_ms.p99_ms), Some(ours.latency_ms.p99_ms)),
    };
    let figures = Figures {
        plan: bench.plan.describe(),
        node_version,
        load_average_start,
        load_average_end: procfs::load_average(),
        ours,
        node,
        ratios,
    };
    drop(broker);
    if bench.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        print_table(&figures);
    }
    if figures.ours.rejected > 0 || figures.node.rejected > 0 {
        anyhow::bail!(
            "rejected reports: ours {}, Node {}",
            figures.ours.rejected,
            figures.node.rejected
        );
    }
    Ok(())
}

fn print_table(f: &Figures) {
    println!("load      {} (same broker, one after the other)", f.plan);
    println!("node      {}", f.node_version);
    println!(
        "load avg  {} at start, {} at end",
        procfs::fmt_load(f.load_average_start),
        procfs::fmt_load(f.load_average_end)
    );
    println!();
    println!(
        "{:<34} {:>14} {:>14} {:>12}",
        "", "Rust (ours)", "Node (lab)", "ratio"
    );
    let row = |what: &str, ours: String, node: String, ratio: Option<f64>, how: &str| {
        println!(
            "{what:<34} {ours:>14} {node:>14} {:>12}",
            ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}x {how}"))
        );
    };
    let (o, n, r) = (&f.ours, &f.node, &f.ratios);
    row(
        "ingest reports/s",
        format!("{}", o.ingest_per_sec),
        format!("{}", n.ingest_per_sec),
        r.ingest_throughput,
        "ours",
    );
    row(
        "ingest p50 ms",
        format!("{:.2}", o.latency_ms.p50_ms),
        format!("{:.2}", n.latency_ms.p50_ms),
        None,
        "",
    );
    row(
        "ingest p99 ms",
        format!("{:.2}", o.latency_ms.p99_ms),
        format!("{:.2}", n.latency_ms.p99_ms),
        r.p99_latency,
        "node",
    );
    row(
        "service CPU ms/report",
        fmt_opt(o.service_usage.cpu_ms_per_report, 3),
        fmt_opt(n.service_usage.cpu_ms_per_report, 3),
        r.cpu_per_report,
        "node",
    );
    row(
        "broker CPU ms/report (same broker)",
        fmt_opt(o.broker_usage.cpu_ms_per_report, 3),
        fmt_opt(n.broker_usage.cpu_ms_per_report, 3),
        None,
        "",
    );
    row(
        "service RSS idle MiB",
        fmt_opt(o.rss_idle_mib, 1),
        fmt_opt(n.rss_idle_mib, 1),
        None,
        "",
    );
    row(
        "service peak RSS MiB",
        fmt_opt(o.service_usage.peak_rss_mib, 1),
        fmt_opt(n.service_usage.peak_rss_mib, 1),
        r.peak_memory,
        "node",
    );
    row(
        "spawn → listening ms",
        format!("{:.1}", o.listening_ms),
        format!("{:.1}", n.listening_ms),
        None,
        "",
    );
    row(
        "cold start: spawn → first 204 ms",
        format!("{:.1}", o.cold_start_ms),
        format!("{:.1}", n.cold_start_ms),
        r.cold_start,
        "node",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_round_and_refuse_zero() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(1.0), Some(3.0)), Some(0.33));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }
}
