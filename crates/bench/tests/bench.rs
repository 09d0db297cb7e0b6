//! `labrelay-bench` end to end: it starts its own system as separate
//! processes of the `labrelay` binary, posts 200 reports and prints one
//! JSON object. This checks the tool (complete, consistent figures), not
//! the speed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use labrelay_bench::{Labrelay, build_beside};
use serde_json::Value;

/// The `labrelay` binary beside the bench's, brought up to date first:
/// `cargo nextest run -p labrelay-bench` builds only the bench's package.
fn labrelay() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = Path::new(env!("CARGO_BIN_EXE_labrelay-bench"))
            .parent()
            .expect("the bench's directory");
        build_beside(OsStr::new(env!("CARGO")), dir).expect("building labrelay");
        Labrelay::beside(dir)
            .expect("labrelay beside the bench")
            .path()
            .to_path_buf()
    })
}

/// Runs `labrelay-bench <args>` (which must include `--json`) against
/// [`labrelay`], requires success, and returns the one JSON object it
/// printed.
fn bench_json(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_labrelay-bench"))
        .args(args)
        .env("LABRELAY_BIN", labrelay())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("running labrelay-bench {}: {e}", args.join(" ")));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "labrelay-bench {} failed: {}\nstdout: {stdout}\nstderr: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

/// Requires each of `fields` of `figures` to be a number above zero (`whole`
/// is printed on failure).
#[track_caller]
fn assert_measured(figures: &Value, fields: &[&str], whole: &Value) {
    for field in fields {
        assert!(
            figures[field].as_f64().is_some_and(|v| v > 0.0),
            "{field} in {whole:#}"
        );
    }
}

#[test]
fn bench_delivers_every_report_on_both_channels_and_reports_consistent_figures() {
    let figures = bench_json(&["--reports", "200", "--concurrency", "16", "--json"]);

    for (field, want) in [
        ("reports_issued", 200),
        ("accepted", 200),
        ("rejected", 0),
        ("delivered_email", 200),
        ("delivered_sms", 200),
        ("delivered_both", 200),
        ("missing", 0),
    ] {
        assert_eq!(figures[field], want, "{field} in {figures:#}");
    }
    for rate in ["ingest_per_sec", "end_to_end_per_sec"] {
        assert!(figures[rate].as_f64().unwrap() > 0.0, "{rate}");
    }

    for stage in ["ingest", "email", "sms", "end_to_end"] {
        let latency = &figures["latency_ms"][stage];
        assert_eq!(latency["count"], 200, "{stage}: {latency}");
        let p = |q: &str| latency[q].as_f64().unwrap_or_else(|| panic!("{stage} {q}"));
        assert!(p("p50_ms") > 0.0, "{stage}: {latency}");
        assert!(
            p("p50_ms") <= p("p90_ms") && p("p90_ms") <= p("p99_ms") && p("p99_ms") <= p("max_ms"),
            "{stage} percentiles out of order: {latency}"
        );
    }
    // End to end is the later of the two channels, so never shorter than
    // either, and the ingest answer comes before delivery can be complete.
    let e2e = &figures["latency_ms"]["end_to_end"];
    for channel in ["email", "sms"] {
        let max = figures["latency_ms"][channel]["max_ms"].as_f64().unwrap();
        assert!(e2e["max_ms"].as_f64().unwrap() >= max, "{channel}");
    }

    let processes = figures["processes"].as_array().expect("processes");
    let names: Vec<&str> = processes
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "broker",
        "lab-report-service",
        "email-service",
        "sms-service",
        "bench (load + watch)",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for process in processes {
        for field in [
            "peak_rss_mib",
            "rss_start_mib",
            "rss_end_mib",
            "cpu_seconds",
        ] {
            let value = process[field].as_f64();
            assert!(
                value.is_some_and(|v| v >= 0.0),
                "{field} of {}: {process}",
                process["name"]
            );
        }
        let peak = process["peak_rss_mib"].as_f64().unwrap();
        assert!(peak > 0.0 && peak >= process["rss_end_mib"].as_f64().unwrap());
    }
    assert!(figures["load_average_start"].as_array().unwrap().len() == 3);
}

/// `--target` alone measures the `labrelay up` running on `--data-dir`,
/// found through its `up.json` (its lab-report-service, its API key, its
/// outboxes).
#[test]
fn bench_finds_a_running_up_through_its_up_json() {
    let data = tempfile::tempdir().unwrap();
    let mut command = labrelay_testkit::up::up_command(labrelay(), data.path());
    command
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    let up = labrelay_testkit::up::Up::start(command, data.path());
    let figures = bench_json(&[
        "--target",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--reports",
        "20",
        "--json",
    ]);
    for (field, want) in [("accepted", 20), ("delivered_both", 20), ("missing", 0)] {
        assert_eq!(figures[field], want, "{field} in {figures:#}");
    }
    assert!(up.terminate().success());
}

/// `labrelay-bench --broker` against its own broker: every phase completes,
/// nothing is lost or duplicated, and a failing endpoint is backed off from
/// (a tool check on a small run; the figures themselves are in
/// docs/benchmarks.md).
#[test]
fn broker_bench_completes_every_phase_and_backs_off_a_failing_endpoint() {
    let figures = bench_json(&["--broker", "--messages", "500", "--json"]);
    for field in ["push_duplicates", "push_lost", "recovery_lost"] {
        assert_eq!(figures[field], 0, "{field} in {figures:#}");
    }
    assert_measured(
        &figures,
        &[
            "publish_batched_per_sec",
            "publish_32_clients_per_sec",
            "publish_32_clients_rest_per_sec",
            "push_per_sec",
            "recovery_drain_per_sec",
            "streaming_pull_per_sec",
        ],
        &figures,
    );
    // 500 messages wait while the endpoint fails for 2 s: the window falls
    // to one push at a time, and the subscription pauses between failures.
    assert_eq!(figures["failing_most_in_flight"], 1, "{figures:#}");
    assert!(
        figures["failing_requests_per_sec"].as_f64().unwrap() < 20.0,
        "{figures:#}"
    );
    assert!(figures["broker_peak_rss_mib"].as_f64().unwrap() > 0.0);
}

/// `--phases` runs only the phases named: the others' figures are `null`.
#[test]
fn broker_bench_runs_only_the_phases_asked_for() {
    let figures = bench_json(&[
        "--broker",
        "--messages",
        "200",
        "--phases",
        "single,single-rest,push",
        "--json",
    ]);
    assert_measured(
        &figures,
        &[
            "publish_32_clients_per_sec",
            "publish_32_clients_rest_per_sec",
            "push_per_sec",
            "backlog_rss_mib",
        ],
        &figures,
    );
    assert_eq!(figures["push_lost"], 0, "{figures:#}");
    for skipped in [
        "publish_batched_per_sec",
        "recovery_drain_per_sec",
        "streaming_pull_per_sec",
    ] {
        assert!(figures[skipped].is_null(), "{skipped} in {figures:#}");
    }
}

/// `--emulator` measures ours, then starts Google's official emulator,
/// measures it the same way, prints both with ratios, and stops it (the
/// Java server included) before it exits.
#[test]
fn broker_bench_measures_the_official_emulator_in_the_same_run_and_stops_it() {
    let gcloud = Command::new("gcloud").arg("--version").output();
    if !gcloud.is_ok_and(|o| o.status.success()) {
        println!("skipped: official emulator not installed (no `gcloud` on PATH)");
        eprintln!("skipped: official emulator not installed (no `gcloud` on PATH)");
        return;
    }
    let both = bench_json(&[
        "--broker",
        "--emulator",
        "--messages",
        "200",
        "--phases",
        "batched,single,single-rest,push",
        "--json",
    ]);
    for side in ["ours", "emulator"] {
        let figures = &both[side];
        assert_measured(
            figures,
            &[
                "publish_batched_per_sec",
                // The bench's own lean gRPC and REST clients, against both
                // servers.
                "publish_32_clients_per_sec",
                "publish_32_clients_rest_per_sec",
                "push_per_sec",
                "broker_peak_rss_mib",
            ],
            &both,
        );
        assert_eq!(figures["push_lost"], 0, "{side} in {both:#}");
        assert_eq!(figures["push_duplicates"], 0, "{side} in {both:#}");
        assert!(figures["streaming_pull_per_sec"].is_null(), "{both:#}");
    }
    let ratios = &both["ratios"];
    let ratio = |field: &str, ours: &str| {
        ratios[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} in {both:#}"))
            - both["ours"][ours].as_f64().unwrap() / both["emulator"][ours].as_f64().unwrap()
    };
    assert!(ratio("push", "push_per_sec").abs() < 0.01, "{both:#}");
    assert!(
        ratio("peak_rss", "broker_peak_rss_mib").abs() < 0.01,
        "{both:#}"
    );
    assert!(ratios["streaming_pull"].is_null(), "{both:#}");

    // Named as "official emulator (http://127.0.0.1:PORT)": nothing may be
    // left listening there.
    let target = both["emulator"]["target"].as_str().unwrap();
    let port = target
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches(')').parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {target:?}"));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the emulator still listens on {port} after the bench exited"
    );
}

/// `bench/c-clients.sh`, the C-client figures of docs/benchmarks.md, still runs
/// against this build's broker, and its own check holds: every request
/// `h2load` and `wrk` counted as answered stored its message (the script
/// reads the subscription's backlog, since `h2load` also counts a gRPC
/// error as a success). Small counts: this checks the script, not the speed.
#[test]
fn c_clients_script_stores_every_message_its_clients_count() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/c-clients.sh");
    let port = labrelay_runtime::serve::free_port().expect("a free port");
    let output = Command::new("bash")
        .arg(script)
        .arg(labrelay())
        .env("PORT", port.to_string())
        .env("MESSAGES", "2000")
        .env("SECONDS_REST", "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect(
            "running bench/c-clients.sh (it needs h2load and wrk: scripts/test.sh installs them)",
        );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench/c-clients.sh failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("gRPC: 2000 of 2000 requests answered 200, 2000 messages stored"),
        "{stdout}"
    );
    let rest = stdout
        .lines()
        .find(|line| line.starts_with("REST: "))
        .unwrap_or_else(|| panic!("no REST line in {stdout}"));
    let answered: u64 = rest
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{rest}"));
    assert!(answered > 0, "{rest}");
}
