//! `labrelay-bench` (the default mode): the whole pipeline, end to end.
//!
//! Reports are POSTed to the lab-report-service; a report is delivered when
//! its email is in the email outbox and its SMS in the SMS outbox. Latency
//! is measured from the POST's start (its scheduled start under `--rate`)
//! to the 204 (ingest) and to the moment the later of its two outbox files
//! appeared (end to end). Memory and CPU are read from `/proc` for each
//! process (on Linux): the four children of our own system, or the one
//! `labrelay up` process under `--target`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::time::Instant;

use super::load::{self, Plan, Posted};
use super::outbox::{self, Channel, Delivered};
use super::procfs::{self, Sample, Sampler, Usage, Watched};
use super::stats::{self, Percentiles, fmt_opt, per_second};
use super::system::{Labrelay, OwnSystem};

pub struct Pipeline {
    pub plan: Plan,
    /// The lab-report-service of a running `labrelay up`; `None`: our own.
    pub target: Option<String>,
    /// The `labrelay` binary our own system runs as, if named
    /// ([`Labrelay::find`]).
    pub labrelay: Option<PathBuf>,
    /// With `target`: where that `up` keeps its outboxes and API key.
    pub data_dir: PathBuf,
    pub api_key: Option<String>,
    pub json: bool,
    /// Give up waiting for deliveries after this long without one.
    pub drain_timeout: Duration,
}

#[derive(Debug, Default, Clone)]
struct Record {
    start: Option<Instant>,
    accepted: bool,
    email: Option<Instant>,
    sms: Option<Instant>,
    complete: bool,
}

#[derive(Debug, Serialize)]
struct Latency {
    ingest: Percentiles,
    email: Percentiles,
    sms: Percentiles,
    end_to_end: Percentiles,
}

#[derive(Debug, Serialize)]
struct Second {
    t: u64,
    accepted: u64,
    delivered_both: u64,
}

#[derive(Debug, Serialize)]
struct Figures {
    system: String,
    plan: String,
    reports_issued: usize,
    accepted: usize,
    rejected: usize,
    /// Rejections by HTTP status, or `error` when there was no answer.
    rejections: BTreeMap<String, usize>,
    delivered_email: usize,
    delivered_sms: usize,
    delivered_both: usize,
    missing: usize,
    /// From the first POST to the last 204.
    ingest_seconds: f64,
    ingest_per_sec: f64,
    /// From the first POST to the last report delivered on both channels.
    end_to_end_seconds: f64,
    end_to_end_per_sec: f64,
    latency_ms: Latency,
    processes: Vec<Usage>,
    memory_note: String,
    /// Times the outbox watch overflowed and the outboxes were rescanned
    /// (those files have late timestamps).
    outbox_rescans: u64,
    load_average_start: Option<[f64; 3]>,
    load_average_end: Option<[f64; 3]>,
    /// Per second of the run: reports accepted and delivered on both channels.
    timeline: Vec<Second>,
    /// Names of the processes, in the order of each sample's `rss_mib`.
    memory_sample_processes: Vec<String>,
    memory_samples: Vec<Sample>,
}

fn bump(timeline: &mut Vec<Second>, t: u64, accepted: u64, delivered: u64) {
    while timeline.len() <= t as usize {
        let t = timeline.len() as u64;
        timeline.push(Second {
            t,
            accepted: 0,
            delivered_both: 0,
        });
    }
    timeline[t as usize].accepted += accepted;
    timeline[t as usize].delivered_both += delivered;
}

/// The memory note off Linux.
const NOT_MEASURED: &str = "memory and CPU are measured on Linux only";

pub async fn run(bench: Pipeline) -> anyhow::Result<()> {
    let load_average_start = procfs::load_average();
    let own = match &bench.target {
        None => {
            if !bench.json {
                eprintln!("starting broker, lab-report-service, email-service and sms-service...");
            }
            let labrelay = Labrelay::find(bench.labrelay.clone())?;
            Some(OwnSystem::start(&labrelay).await?)
        }
        Some(_) => None,
    };
    let (system, url, api_key, email_dir, sms_dir, mut watched, memory_note) = match (
        &bench.target,
        &own,
    ) {
        (_, Some(s)) => (
            format!(
                "own: 4 processes on {} (outboxes are file:// directories)",
                s.dir.path().display()
            ),
            s.lab.url(),
            Some(s.api_key.clone()),
            s.email_outbox.clone(),
            s.sms_outbox.clone(),
            s.watched(),
            if procfs::MEASURED {
                "each part is its own process"
            } else {
                NOT_MEASURED
            }
            .to_string(),
        ),
        (None, None) => unreachable!("our own system starts when there is no target"),
        (Some(url), None) => {
            let port = reqwest::Url::parse(url)
                .with_context(|| format!("--target {url} is not a URL"))?
                .port_or_known_default()
                .context("--target has no port")?;
            let pid = procfs::pid_listening_on(port);
            let watched: Vec<Watched> = pid
                .map(|pid| Watched {
                    name: "labrelay up".into(),
                    pid,
                })
                .into_iter()
                .collect();
            let note = if !procfs::MEASURED {
                NOT_MEASURED
            } else if pid.is_some() {
                "labrelay up runs every part in one process: its figures are for all of them together"
            } else {
                "no process of this user listens on the target's port: no memory or CPU figures"
            };
            let api_key = bench
                .api_key
                .clone()
                .or_else(|| labrelay::up::read_api_key(&bench.data_dir));
            (
                format!(
                    "labrelay up at {url} (data in {})",
                    bench.data_dir.display()
                ),
                url.clone(),
                api_key,
                bench.data_dir.join("outbox").join("email"),
                bench.data_dir.join("outbox").join("sms"),
                watched,
                note.to_string(),
            )
        }
    };
    watched.push(Watched {
        name: "bench (load + watch)".into(),
        pid: std::process::id(),
    });

    let prefix = format!("bench-{:08x}-", rand::random::<u32>());
    let (delivered_tx, mut delivered_rx) = tokio::sync::mpsc::unbounded_channel::<Delivered>();
    let rescans = Arc::new(AtomicU64::new(0));
    outbox::watch(
        &email_dir,
        &sms_dir,
        prefix.clone(),
        delivered_tx,
        rescans.clone(),
    )?;
    let target = load::Target::new(url, api_key, prefix, bench.plan.concurrency)?;

    let progress = if bench.json {
        ProgressBar::hidden()
    } else {
        let bar = match bench.plan.reports {
            Some(n) if bench.plan.duration.is_none() => ProgressBar::new(n as u64),
            _ => ProgressBar::new_spinner(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} delivered on both channels, {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    };
    if !bench.json {
        eprintln!("{}, {}", bench.plan.describe(), system);
    }

    let sampler = Sampler::start(watched);
    let (posted_tx, mut posted_rx) = tokio::sync::mpsc::unbounded_channel::<Posted>();
    let stop = Arc::new(AtomicBool::new(false));
    let first = Instant::now();
    let mut load_task = tokio::spawn(load::drive(
        target,
        bench.plan.clone(),
        posted_tx,
        stop.clone(),
    ));

    let mut records: Vec<Record> = Vec::new();
    let mut ingest = stats::histogram();
    let mut email = stats::histogram();
    let mut sms = stats::histogram();
    let mut end_to_end = stats::histogram();
    let mut timeline = Vec::new();
    let (mut accepted, mut rejected, mut posted) = (0usize, 0usize, 0usize);
    let mut rejections: BTreeMap<String, usize> = BTreeMap::new();
    let (mut delivered_email, mut delivered_sms, mut complete) = (0usize, 0usize, 0usize);
    let mut issued: Option<usize> = None;
    let mut last_ingest = first;
    let mut last_complete = first;
    let mut last_event = Instant::now();

    let complete_if_done = |r: &mut Record| -> Option<(Instant, Instant)> {
        match (r.accepted, r.start, r.email, r.sms, r.complete) {
            (true, Some(start), Some(e), Some(s), false) => {
                r.complete = true;
                Some((start, e.max(s)))
            }
            _ => None,
        }
    };

    // Whether deliveries stalled is checked once a second rather than with
    // a timer set again for every event.
    let mut stall_check = tokio::time::interval(Duration::from_secs(1));
    stall_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let all_in = issued.is_some_and(|n| posted == n && complete == accepted);
        if all_in {
            break;
        }
        tokio::select! {
            Some(p) = posted_rx.recv() => {
                last_event = Instant::now();
                posted += 1;
                if records.len() <= p.index {
                    records.resize(p.index + 1, Record::default());
                }
                let r = &mut records[p.index];
                r.start = Some(p.start);
                match p.outcome {
                    Ok(204) => {
                        accepted += 1;
                        r.accepted = true;
                        stats::record(&mut ingest, p.end - p.start);
                        last_ingest = last_ingest.max(p.end);
                        bump(&mut timeline, (p.end - first).as_secs(), 1, 0);
                    }
                    Ok(status) => {
                        rejected += 1;
                        *rejections.entry(status.to_string()).or_default() += 1;
                    }
                    Err(_) => {
                        rejected += 1;
                        *rejections.entry("error".into()).or_default() += 1;
                    }
                }
                if let Some((start, done)) = complete_if_done(r) {
                    complete += 1;
                    stats::record(&mut end_to_end, done - start);
                    last_complete = last_complete.max(done);
                    bump(&mut timeline, (done - first).as_secs(), 0, 1);
                    progress.inc(1);
                }
                if posted % 64 == 0 {
                    progress.set_message(format!("{accepted} accepted"));
                }
            }
            Some(d) = delivered_rx.recv() => {
                last_event = Instant::now();
                if records.len() <= d.index {
                    records.resize(d.index + 1, Record::default());
                }
                let r = &mut records[d.index];
                let slot = match d.channel {
                    Channel::Email => &mut r.email,
                    Channel::Sms => &mut r.sms,
                };
                if slot.is_some() {
                    continue; // a redelivery rewrote the same file
                }
                *slot = Some(d.at);
                match d.channel {
                    Channel::Email => delivered_email += 1,
                    Channel::Sms => delivered_sms += 1,
                }
                if let Some((start, done)) = complete_if_done(r) {
                    complete += 1;
                    stats::record(&mut end_to_end, done - start);
                    last_complete = last_complete.max(done);
                    bump(&mut timeline, (done - first).as_secs(), 0, 1);
                    progress.inc(1);
                }
            }
            n = &mut load_task, if issued.is_none() => {
                let n = n.context("the load generator panicked")?;
                issued = Some(n);
                last_event = Instant::now();
                if bench.plan.reports.is_none() || bench.plan.duration.is_some() {
                    progress.set_length(n as u64);
                }
            }
            _ = stall_check.tick(), if issued.is_some() => {
                if last_event.elapsed() >= bench.drain_timeout {
                    break;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    progress.finish_and_clear();

    // Per-channel latencies for the reports that were accepted.
    for r in &records {
        if let (true, Some(start)) = (r.accepted, r.start) {
            if let Some(at) = r.email {
                stats::record(&mut email, at - start);
            }
            if let Some(at) = r.sms {
                stats::record(&mut sms, at - start);
            }
        }
    }
    let (processes, samples) = sampler.finish(complete);
    let memory_sample_processes = processes.iter().map(|p| p.name.clone()).collect();
    let ingest_elapsed = last_ingest - first;
    let e2e_elapsed = last_complete - first;
    let figures = Figures {
        system,
        plan: bench.plan.describe(),
        reports_issued: issued.unwrap_or(posted),
        accepted,
        rejected,
        rejections,
        delivered_email,
        delivered_sms,
        delivered_both: complete,
        missing: accepted - complete,
        ingest_seconds: ingest_elapsed.as_secs_f64(),
        ingest_per_sec: per_second(accepted, ingest_elapsed),
        end_to_end_seconds: e2e_elapsed.as_secs_f64(),
        end_to_end_per_sec: per_second(complete, e2e_elapsed),
        latency_ms: Latency {
            ingest: Percentiles::of(&ingest),
            email: Percentiles::of(&email),
            sms: Percentiles::of(&sms),
            end_to_end: Percentiles::of(&end_to_end),
        },
        processes,
        memory_note,
        outbox_rescans: rescans.load(Ordering::Relaxed),
        load_average_start,
        load_average_end: procfs::load_average(),
        timeline,
        memory_sample_processes,
        memory_samples: samples,
    };
    if bench.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        print_table(&figures);
    }
    drop(own);
    if figures.missing > 0 || figures.rejected > 0 {
        anyhow::bail!(
            "{} reports not accepted, {} accepted but not delivered on both channels within {} s of the last event",
            figures.rejected,
            figures.missing,
            bench.drain_timeout.as_secs()
        );
    }
    Ok(())
}

fn print_table(f: &Figures) {
    println!("system      {}", f.system);
    println!("load        {}", f.plan);
    println!(
        "load avg    {} at start, {} at end",
        procfs::fmt_load(f.load_average_start),
        procfs::fmt_load(f.load_average_end)
    );
    println!(
        "reports     {} issued, {} accepted, {} rejected {:?}",
        f.reports_issued, f.accepted, f.rejected, f.rejections
    );
    println!(
        "delivered   {} email, {} SMS, {} both, {} missing",
        f.delivered_email, f.delivered_sms, f.delivered_both, f.missing
    );
    println!();
    println!(
        "throughput  ingest {:>8} reports/s  ({:.2} s)",
        f.ingest_per_sec, f.ingest_seconds
    );
    println!(
        "            end to end {:>4} reports/s  ({:.2} s)",
        f.end_to_end_per_sec, f.end_to_end_seconds
    );
    println!();
    println!(
        "latency (ms)                  {:>8} {:>9} {:>9} {:>9} {:>9}",
        "count", "p50", "p90", "p99", "max"
    );
    let l = &f.latency_ms;
    println!("ingest (POST→204)             {}", l.ingest.row());
    println!("email written                 {}", l.email.row());
    println!("SMS written                   {}", l.sms.row());
    println!("end to end (both channels)    {}", l.end_to_end.row());
    println!();
    println!(
        "process                   {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "pid", "peak MiB", "RSS start", "RSS end", "CPU s", "ms/report"
    );
    for p in &f.processes {
        println!(
            "{:<25} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
            p.name,
            p.pid,
            fmt_opt(p.peak_rss_mib, 1),
            fmt_opt(p.rss_start_mib, 1),
            fmt_opt(p.rss_end_mib, 1),
            fmt_opt(p.cpu_seconds, 2),
            fmt_opt(p.cpu_ms_per_report, 3),
        );
    }
    println!("({}; RSS sampled every second, in --json)", f.memory_note);
    if f.outbox_rescans > 0 {
        println!(
            "the outbox watch overflowed {} times: some end-to-end times are late",
            f.outbox_rescans
        );
    }
}
