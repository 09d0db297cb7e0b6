//! Compatibility proven with code nobody here wrote: Google's official Python
//! and Node.js Pub/Sub clients run their suites against a real `labrelay
//! broker` process, and one scenario script runs against both the broker and
//! Google's official emulator, whose observations must agree except for the
//! deliberate deviations listed in `ALLOWED_DIFFERENCES`
//! (docs/compatibility.md explains each).
//!
//! Nothing is installed here. `scripts/test.sh` runs
//! `python3 -m pip install -r tests/conformance/python/requirements.txt` and
//! `npm ci --prefix tests/conformance/node` first.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use labrelay_testkit::process::{Process, free_port};
use serde_json::{Map, Value};

use crate::LABRELAY;

/// Project id the suites use (any id works with both brokers).
const PROJECT: &str = "conformance";

/// Differences between the official emulator 0.8.20 and us that are on
/// purpose: observation key → why.
const ALLOWED_DIFFERENCES: &[(&str, &str)] = &[
    (
        "dead_letter_pull.attribute_keys",
        "our dead letters also carry CloudPubSubDeadLetterSourceDeliveryErrorMessage (why the last delivery failed) for operators; the emulator sets only the four documented attributes",
    ),
    (
        "push_dead_letter.attribute_keys",
        "our dead letters also carry CloudPubSubDeadLetterSourceDeliveryErrorMessage (why the last delivery failed) for operators; the emulator sets only the four documented attributes",
    ),
    (
        "error.create_subscription.ack_deadline_5",
        "the emulator accepts ackDeadlineSeconds below 10; we reject them like the real service (range 10..600)",
    ),
    (
        "error.create_subscription.ack_deadline_9",
        "the emulator accepts ackDeadlineSeconds below 10; we reject them like the real service (range 10..600)",
    ),
    (
        "error.create_subscription.dead_letter_attempts_3",
        "out-of-range maxDeliveryAttempts: the emulator answers OUT_OF_RANGE, we answer INVALID_ARGUMENT like all our range checks",
    ),
    (
        "error.create_subscription.dead_letter_attempts_4",
        "out-of-range maxDeliveryAttempts: the emulator answers OUT_OF_RANGE, we answer INVALID_ARGUMENT like all our range checks",
    ),
    (
        "error.create_subscription.dead_letter_attempts_101",
        "out-of-range maxDeliveryAttempts: the emulator answers OUT_OF_RANGE, we answer INVALID_ARGUMENT like all our range checks",
    ),
    (
        "error.publish.attribute_key_goog",
        "attribute keys starting with \"goog\" are reserved by the real service; the emulator accepts them",
    ),
    (
        "error.list_topic_subscriptions.unknown_topic",
        "the emulator lists nothing for a missing topic; we answer NOT_FOUND like every other call naming a missing topic",
    ),
    (
        "defaults.state",
        "we report state ACTIVE like the real service; the emulator leaves it unset",
    ),
    (
        "filter.delivered",
        "we apply subscription filters like the real service; emulator 0.8.20 (SDK 528) accepts and ignores them",
    ),
    (
        "ordering.first_pull_per_key",
        "we hand out one message per ordering key at a time (issue 7); the emulator returns a key's backlog in one Pull",
    ),
    (
        "push_ordering.ordering_key_in_body",
        "the real service's wrapped push body carries message.orderingKey; the emulator omits it",
    ),
    (
        "error.create_subscription.exactly_once",
        "not yet: exactly-once delivery answers UNIMPLEMENTED (the emulator accepts the flag)",
    ),
    (
        "error.get_snapshot.unknown",
        "not yet: snapshots answer UNIMPLEMENTED (the emulator supports them)",
    ),
    (
        "push_202.acked_by_first_202",
        "202 acknowledges a push on the real service; the emulator retries it (its ack codes are 102/200/201/203/204)",
    ),
    (
        "push_dead_letter.delivery_attempts",
        "with a dead-letter policy the real service sends deliveryAttempt in push bodies; the emulator omits it",
    ),
    (
        "push_dead_letter.envelope.top_level_keys",
        "with a dead-letter policy the real service sends deliveryAttempt in push bodies; the emulator omits it",
    ),
    (
        "push_oidc.authorization_bearer",
        "with oidcToken we send Authorization: Bearer <JWT> like the real service; the emulator sends no token",
    ),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn conformance_dir(lang: &str) -> PathBuf {
    root().join("tests/conformance").join(lang)
}

/// A command that exits 0, or the reason it could not run.
fn probe(program: &str, args: &[&str], dir: &Path) -> Result<String, String> {
    match Command::new(program).args(args).current_dir(dir).output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Err(format!("{program}: {e}")),
    }
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn require_python() {
    let dir = conformance_dir("python");
    if let Err(why) = probe(
        &python(),
        &["-c", "import google.cloud.pubsub_v1, pytest"],
        &dir,
    ) {
        panic!(
            "the Python conformance suite needs Python 3 with the official client: run \
             `python3 -m pip install -r tests/conformance/python/requirements.txt` \
             (scripts/test.sh does). Probe failed: {why}"
        );
    }
}

fn require_node() {
    let dir = conformance_dir("node");
    if let Err(why) = probe("node", &["--version"], &dir) {
        panic!("the Node conformance suite needs Node.js 20 or later on PATH: {why}");
    }
    if !dir.join("node_modules/@google-cloud/pubsub").is_dir() {
        panic!(
            "the Node conformance suite needs its packages: run \
             `npm ci --prefix tests/conformance/node` (scripts/test.sh does)"
        );
    }
}

/// A child process whose output goes to a file, killed (with its process
/// group) when dropped.
struct Job {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Job {
    fn spawn(name: &str, mut command: Command, log: PathBuf) -> Job {
        let file = std::fs::File::create(&log).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Job {
            name: name.into(),
            child,
            log,
        }
    }

    /// Waits for the exit (killing it after `limit`); returns success and output.
    fn finish(mut self, limit: Duration) -> (bool, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut output = std::fs::read_to_string(&self.log).unwrap_or_default();
        match status {
            Some(status) => (status.success(), output),
            None => {
                output.push_str(&format!("\n[{} killed after {limit:?}]", self.name));
                (false, output)
            }
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

fn client_command(program: &str, dir: &Path, endpoint: &str) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(dir)
        .env("PUBSUB_EMULATOR_HOST", endpoint)
        .env("PUBSUB_PROJECT_ID", PROJECT)
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS");
    command
}

/// The last line of pytest's output naming the counts ("3 passed in 2.0s").
fn summary_line(output: &str) -> &str {
    output
        .lines()
        .rev()
        .find(|l| l.contains(" passed") || l.contains(" failed") || l.contains(" error"))
        .unwrap_or("(no pytest summary line)")
}

fn run_pytest(file: &str) {
    require_python();
    let data = tempfile::tempdir().unwrap();
    let broker = Process::broker(LABRELAY, data.path());
    let dir = conformance_dir("python");
    let mut command = client_command(&python(), &dir, &broker.addr.to_string());
    command.args(["-m", "pytest", "-q", "--durations=3", file]);
    let started = Instant::now();
    let job = Job::spawn("pytest", command, data.path().join("pytest.log"));
    let (ok, output) = job.finish(Duration::from_secs(240));
    eprintln!("{output}");
    let summary = summary_line(&output).trim().to_string();
    eprintln!("pytest {file}: {summary} ({:.1?})", started.elapsed());
    assert!(
        ok,
        "official Python client suite {file} against the broker failed: {summary} (full output above)"
    );
}

#[test]
fn official_python_client_core() {
    run_pytest("test_pubsub.py");
}

#[test]
fn official_python_client_ordering_and_filters() {
    run_pytest("test_ordering_filters.py");
}

#[test]
fn official_node_client() {
    require_node();
    let data = tempfile::tempdir().unwrap();
    let broker = Process::broker(LABRELAY, data.path());
    let dir = conformance_dir("node");
    let mut command = client_command("node", &dir, &broker.addr.to_string());
    command.args(["--test", "--test-reporter=spec", "pubsub.test.js"]);
    let started = Instant::now();
    let job = Job::spawn("node --test", command, data.path().join("node.log"));
    let (ok, output) = job.finish(Duration::from_secs(180));
    eprintln!("{output}");
    let counts: Vec<&str> = output
        .lines()
        .filter(|l| {
            ["pass ", "fail ", "duration_ms "]
                .iter()
                .any(|w| l.contains(&format!("ℹ {w}")))
        })
        .collect();
    eprintln!("node --test: {counts:?} ({:.1?})", started.elapsed());
    assert!(
        ok,
        "official Node client suite against the broker failed: {counts:?} (full output above)"
    );
}

// ----- differential test against the official emulator -----

fn http_get_ok(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") && answer.trim_end().ends_with("Ok")
}

/// `gcloud beta emulators pubsub start`, ready when `GET /` answers "Ok".
fn start_emulator(dir: &Path) -> (Job, u16) {
    let port = free_port();
    let data = dir.join("emulator-data");
    std::fs::create_dir_all(&data).unwrap();
    let mut command = Command::new("gcloud");
    command.args([
        "beta",
        "emulators",
        "pubsub",
        "start",
        &format!("--host-port=127.0.0.1:{port}"),
        &format!("--project={PROJECT}"),
        &format!("--data-dir={}", data.display()),
    ]);
    let mut job = Job::spawn("pubsub emulator", command, dir.join("emulator.log"));
    let deadline = Instant::now() + Duration::from_secs(90);
    while !http_get_ok(port) {
        if let Ok(Some(status)) = job.child.try_wait() {
            panic!(
                "the official emulator exited ({status}) before answering GET /:\n{}",
                job.output()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the official emulator did not answer GET / within 90 s:\n{}",
            job.output()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    (job, port)
}

fn run_scenario(name: &str, endpoint: &str, dir: &Path) -> Job {
    let out = dir.join(format!("{name}.json"));
    let mut command = client_command(&python(), &conformance_dir("python"), endpoint);
    command.args(["differential.py", "--out", out.to_str().unwrap()]);
    Job::spawn(
        &format!("differential.py against {name}"),
        command,
        dir.join(format!("{name}.log")),
    )
}

fn read_observations(name: &str, dir: &Path, job: Job) -> Map<String, Value> {
    let (ok, output) = job.finish(Duration::from_secs(150));
    eprintln!("--- differential.py against {name}:\n{output}");
    assert!(ok, "differential.py against {name} failed:\n{output}");
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
    let observations: Map<String, Value> = serde_json::from_str(&text).unwrap();
    let broken: Vec<_> = observations
        .iter()
        .filter(|(k, _)| k.ends_with(".scenario_error"))
        .collect();
    assert!(
        broken.is_empty(),
        "a scenario broke against {name}: {broken:?}"
    );
    observations
}

#[test]
fn differential_against_official_emulator() {
    if probe("gcloud", &["--version"], &root()).is_err() {
        println!("skipped: official emulator not installed (no `gcloud` on PATH)");
        eprintln!("skipped: official emulator not installed (no `gcloud` on PATH)");
        return;
    }
    require_python();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let broker = Process::broker(LABRELAY, &dir.path().join("broker-data"));
    let ours = run_scenario("labrelay", &broker.addr.to_string(), dir.path());
    let (emulator, port) = start_emulator(dir.path());
    let theirs = run_scenario("emulator", &format!("127.0.0.1:{port}"), dir.path());
    let ours = read_observations("labrelay", dir.path(), ours);
    let theirs = read_observations("emulator", dir.path(), theirs);
    drop(emulator);
    drop(broker);

    let keys: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    let absent = Value::String("<absent>".into());
    let mut unexpected = Vec::new();
    let mut allowed = Vec::new();
    for key in keys {
        let (a, b) = (
            ours.get(key).unwrap_or(&absent),
            theirs.get(key).unwrap_or(&absent),
        );
        if a == b {
            continue;
        }
        let line = format!("{key}: labrelay {a} / emulator {b}");
        match ALLOWED_DIFFERENCES.iter().find(|(k, _)| k == key) {
            Some((_, reason)) => allowed.push(format!("{line}\n    allowed: {reason}")),
            None => unexpected.push(line),
        }
    }
    let observed: BTreeSet<&str> = ours
        .iter()
        .filter(|(k, v)| theirs.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .collect();
    let stale: Vec<&str> = ALLOWED_DIFFERENCES
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !observed.contains(k))
        .collect();
    eprintln!(
        "{} observations compared in {:.1?}; {} deliberate differences:\n{}",
        ours.len(),
        started.elapsed(),
        allowed.len(),
        allowed.join("\n")
    );
    if !stale.is_empty() {
        eprintln!("allow-listed differences no longer observed (remove them?): {stale:?}");
    }
    assert!(
        unexpected.is_empty(),
        "labrelay and the official emulator differ where no deliberate deviation is listed \
         (fix the broker, or add the key with its reason to ALLOWED_DIFFERENCES and \
         docs/compatibility.md):\n{}",
        unexpected.join("\n")
    );
}
