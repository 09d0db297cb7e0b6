//! `labrelay-bench`: measures labrelay. A tool beside the system, not part
//! of it: the `labrelay` binary and its container image do not carry it.
//! It starts the system as an operator would, as processes of the
//! `labrelay` binary (one per part, so memory and CPU can be read for
//! each), wires them as `labrelay up` does (names and subscriptions from
//! [`labrelay::up`]), and drives them through their public interfaces only:
//! HTTP for lab reports, the Pub/Sub API for the broker, the outbox
//! directories for deliveries.
//!
//! Layout:
//! - `pipeline` (the default mode): lab reports through the whole system,
//!   POST to email and SMS in their outboxes, on our own processes or a
//!   running `labrelay up` (`--target`).
//! - `broker` (`--broker`): a Pub/Sub server alone, through the Pub/Sub API:
//!   ours, any other (`--target`), or Google's emulator (`--emulator`).
//! - `peer` (`--peer node`): our lab-report-service against the lab's
//!   Node.js one (`bench/node-peer` in the repository), same broker, same
//!   run.
//! - `system`: finding the `labrelay` binary ([`Labrelay`]); our processes
//!   on a temporary data directory.
//! - `load`: the report generator.
//! - `outbox`: seeing deliveries.
//! - `procfs`: memory, CPU and the load average from `/proc`.
//! - `stats`: HDR histograms and their percentiles.
//! - `unary`: the lean one-request-at-a-time publishers of `--broker`'s
//!   32 × 1 phases.
//!
//! Linux-only, with a portable path elsewhere: `procfs` (off Linux, memory,
//! CPU, the load average and the process behind a port are "not measured")
//! and `outbox`'s inotify watch (off Linux the outboxes are polled every
//! 5 ms, so end-to-end times are coarser). `--emulator` needs a Unix
//! system. The figures in docs/benchmarks.md come from Linux.

mod broker;
mod load;
mod outbox;
mod peer;
mod pipeline;
mod procfs;
mod stats;
mod system;
mod unary;

pub use system::{Labrelay, build_beside};

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

#[derive(Parser)]
#[command(
    name = "labrelay-bench",
    version,
    about = "Measure labrelay end to end, the broker alone (--broker), or against the lab's Node.js service (--peer node)",
    after_help = "The system under test runs as processes of the `labrelay` binary: by default the one \
beside this executable (the same target directory), or the one named by --labrelay / LABRELAY_BIN. \
Under `cargo run -p labrelay-bench` it is first built in the same profile; run directly, build \
it yourself first (`cargo build --release -p labrelay`)."
)]
pub struct BenchArgs {
    /// The `labrelay` binary to start the broker and the services from
    /// (default: `labrelay` beside this executable).
    #[arg(long = "labrelay", env = "LABRELAY_BIN", value_name = "PATH")]
    labrelay: Option<PathBuf>,
    /// Measure the broker alone through the Pub/Sub API instead of the pipeline.
    #[arg(long, conflicts_with = "peer")]
    broker: bool,
    /// Compare our lab-report-service with the lab's Node.js one (ingest only).
    #[arg(long, value_enum)]
    peer: Option<PeerKind>,
    /// A running server: with --broker a Pub/Sub server (http://127.0.0.1:8085);
    /// otherwise the lab-report-service of a running `labrelay up`
    /// (http://127.0.0.1:8080/). `--target` alone: the running `labrelay up`
    /// of --data-dir, found through its `up.json`. Default: start our own on
    /// a temporary directory.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    target: Option<String>,
    /// With --target: where that `labrelay up` keeps its outboxes and API key.
    #[arg(long, env = "LABRELAY_DATA_DIR", default_value = "./labrelay-data")]
    data_dir: PathBuf,
    /// With --target: the ingest API key (default: read from --data-dir).
    #[arg(long, env = "LABRELAY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Reports to post (default 5000 unless --duration is given).
    #[arg(long)]
    reports: Option<usize>,
    /// Keep posting for this many seconds instead of a number of reports.
    #[arg(long)]
    duration: Option<f64>,
    /// A fixed rate in reports per second; default: as fast as --concurrency allows.
    #[arg(long)]
    rate: Option<f64>,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Give up on deliveries this many seconds after the last one.
    #[arg(long, default_value_t = 60)]
    drain_timeout: u64,
    /// With --peer node: the directory of the Node.js services.
    #[arg(long, default_value = "bench/node-peer")]
    node_dir: PathBuf,
    /// --broker: messages per scenario.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// --broker: bytes of data per message.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// --broker: then start the official emulator (`gcloud beta emulators
    /// pubsub start`) and measure it the same way, and print both with ratios.
    #[arg(long, requires = "broker", conflicts_with = "target")]
    emulator: bool,
    /// --broker: run only these phases (comma-separated; default all).
    #[arg(long, value_enum, value_delimiter = ',', requires = "broker")]
    phases: Vec<broker::Phase>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum PeerKind {
    /// The Pet Theory lab's Node.js lab-report-service (bench/node-peer).
    Node,
}

impl BenchArgs {
    fn plan(&self) -> anyhow::Result<load::Plan> {
        if let Some(rate) = self.rate {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number"
            );
        }
        let duration = match self.duration {
            Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d)),
            Some(_) => anyhow::bail!("--duration must be a positive number of seconds"),
            None => None,
        };
        anyhow::ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        let reports = match (self.reports, duration) {
            (None, None) => Some(5000),
            (reports, _) => reports,
        };
        Ok(load::Plan {
            reports,
            duration,
            rate: self.rate,
            concurrency: self.concurrency,
        })
    }
}

/// Runs the mode `args` asks for and prints its figures.
pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.target.as_deref() == Some("") {
        let running = labrelay_contract::up_file::UpFile::read(&args.data_dir)?;
        args.target = Some(if args.broker {
            format!("http://{}", running.broker)
        } else {
            running.lab_report_url()
        });
    }
    if args.broker {
        return broker::run(broker::BrokerBench {
            target: args.target,
            labrelay: args.labrelay,
            messages: args.messages,
            size: args.size,
            phases: args.phases,
            emulator: args.emulator,
            json: args.json,
        })
        .await;
    }
    let plan = args.plan()?;
    match args.peer {
        Some(PeerKind::Node) => {
            anyhow::ensure!(
                args.target.is_none(),
                "--peer node starts its own broker and services; --target does not apply"
            );
            peer::run(peer::Peer {
                plan,
                labrelay: args.labrelay,
                node_dir: args.node_dir,
                json: args.json,
            })
            .await
        }
        None => {
            // On a worker thread: the main thread runs outside the runtime's
            // workers, so every report's two deliveries and its answer
            // would each wake it from another thread, on the cores the
            // system under test needs.
            tokio::spawn(pipeline::run(pipeline::Pipeline {
                plan,
                target: args.target,
                labrelay: args.labrelay,
                data_dir: args.data_dir,
                api_key: args.api_key,
                json: args.json,
                drain_timeout: Duration::from_secs(args.drain_timeout),
            }))
            .await
            .context("the pipeline bench panicked")?
        }
    }
}
