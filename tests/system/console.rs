//! The broker's console in a real browser (issue 9): headless Debian
//! chromium, driven by `playwright-core` (`tests/console/console.test.mjs`),
//! against a real `labrelay up` whose email-service sends to a real SMTP
//! server. The script loads the console, posts a report and sees it appear
//! and its deliveries turn green, breaks the email channel (the SMTP server
//! answers 451) and sees the failures and the backlog, then refuses the
//! email for good (550) and sees it parked at once, follows the deep link
//! `/console?report=<id>` to the report's journey, and replays the dead
//! letter from the console once the channel is back.
//!
//! Nothing is installed here: `scripts/test.sh` installs Debian `chromium`
//! and runs `npm ci --prefix tests/console` first.
//!
//! `LABRELAY_CONSOLE_SCREENSHOT=docs/console.png cargo nextest run --test
//! system console::` also saves the screenshot docs/operations.md shows.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use labrelay_testkit::smtp::{Mode, SmtpSink};
use labrelay_testkit::up;

use crate::LABRELAY;

/// The whole browser scenario, dead-letter backoff included, takes about 30 s.
const SCRIPT_LIMIT: Duration = Duration::from_secs(240);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn require_browser() {
    let dir = root().join("tests/console");
    assert!(
        Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "the console's browser test needs Node.js 20 or later on PATH"
    );
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "the console's browser test needs playwright-core: run `npm ci --prefix tests/console` \
         (scripts/test.sh does)"
    );
    assert!(
        Path::new(&chromium()).exists(),
        "the console's browser test needs Debian's chromium at {} (`apt-get install chromium`; \
         scripts/test.sh does) or CHROMIUM=<path>",
        chromium()
    );
}

/// `labrelay up` with its email-service sending to `smtp_url`, killed when
/// dropped.
fn start_up(data_dir: &Path, smtp_url: &str) -> labrelay_testkit::up::Up {
    let mut command = up::up_command(LABRELAY, data_dir);
    command
        .env("SMTP_URL", smtp_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    up::Up::start(command, data_dir)
}

/// Runs the browser script, answering its `ASK smtp <mode>` lines by
/// switching `sink`; returns whether it passed and what it printed.
fn run_script(mut command: Command, sink: &SmtpSink) -> (bool, Vec<String>) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting node");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let mut output = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                eprintln!("[browser] {line}");
                if let Some(ask) = line.strip_prefix("ASK ") {
                    let mode = match ask {
                        "smtp accept" => Mode::Accept,
                        "smtp 451" => Mode::TempFail,
                        "smtp 550" => Mode::PermFail,
                        other => panic!("the script asked for {other:?}"),
                    };
                    sink.set_mode(mode);
                    writeln!(stdin, "ok").expect("answering the script");
                }
                output.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                output.push(format!("[killed after {SCRIPT_LIMIT:?}]"));
                break;
            }
        }
    }
    let status = child.wait().expect("waiting for node");
    (status.success(), output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_reports_journey_failures_and_replays_a_dead_letter() {
    require_browser();
    let sink = SmtpSink::start().await.expect("starting the SMTP sink");
    let data = tempfile::tempdir().unwrap();
    let up = start_up(data.path(), &sink.url());
    let api_key = std::fs::read_to_string(data.path().join("ingest-api-key")).unwrap();

    let mut command = Command::new("node");
    command
        .arg(root().join("tests/console/console.test.mjs"))
        .current_dir(root().join("tests/console"))
        .env("CONSOLE_URL", up.url("broker"))
        .env("LAB_URL", format!("{}/", up.url("lab-report-service")))
        .env("API_KEY", api_key.trim())
        .env("CHROMIUM", chromium());
    if let Ok(path) = std::env::var("LABRELAY_CONSOLE_SCREENSHOT") {
        command.env("SCREENSHOT", root().join(path));
    }
    let started = Instant::now();
    let (passed, output) = tokio::task::block_in_place(|| run_script(command, &sink));
    eprintln!("browser scenario: {:.1?}", started.elapsed());
    assert!(
        passed,
        "the browser scenario failed:\n{}",
        output.join("\n")
    );
    assert_eq!(output.last().map(String::as_str), Some("STEP done"));

    // What the console showed happened: E2E-1's email, and E2E-2's once replayed.
    let mail = sink
        .wait_for_messages(2, Duration::from_secs(30))
        .await
        .expect("two emails");
    let reports: Vec<_> = mail
        .iter()
        .filter_map(|m| m.header("X-Report-Id"))
        .collect();
    assert!(
        reports.contains(&"E2E-1") && reports.contains(&"E2E-2"),
        "{reports:?}"
    );
    drop(up);
}
