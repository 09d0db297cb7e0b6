//! Data at rest is the operator's alone: `labrelay up` keeps its data
//! directory 0700 and every store, journal, log, outbox file and key in it
//! 0600, tightens an older data directory's looser modes (saying so in its
//! log), and refuses an ingest key file that is a symlink.
//!
//! Unix only: the modes are Unix modes.
#![cfg(unix)]

use labrelay_testkit::process::Process;
use labrelay_testkit::up;
use std::io::{BufRead, BufReader, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::LABRELAY;

/// `labrelay up` with its log (at `info`) collected.
struct Up {
    process: labrelay_testkit::up::Up,
    log: Arc<Mutex<String>>,
}

impl Up {
    fn start(data_dir: &Path) -> Up {
        let mut command = up::up_command(LABRELAY, data_dir);
        command
            .env("RUST_LOG", "info")
            // The human-readable log, whatever the test's environment says.
            .env_remove("LOG_FORMAT")
            .env_remove("K_SERVICE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut process = up::Up::start(command, data_dir);
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = process.child().stderr.take().unwrap();
        let collected = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut log = collected.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Up { process, log }
    }

    fn post(&self, data_dir: &Path, id: &str) {
        let posted = Command::new(LABRELAY)
            .args([
                "post",
                "--url",
                &self.process.running.lab_report_url(),
                "--data-dir",
            ])
            .arg(data_dir)
            .arg(id)
            .env_remove("LABRELAY_API_KEY")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&posted.stdout);
        assert!(posted.status.success(), "{stdout}");
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every path under `root`, `root` included.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut paths = vec![root.to_path_buf()];
    if root.is_dir() {
        for entry in std::fs::read_dir(root).unwrap() {
            paths.extend(tree(&entry.unwrap().path()));
        }
    }
    paths
}

/// Waits for `dir` to hold a file ending in `.extension`, for at most 30 s.
fn wait_for_file(dir: &Path, extension: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let found = std::fs::read_dir(dir).into_iter().flatten().any(|entry| {
            entry
                .ok()
                .is_some_and(|e| e.path().extension().is_some_and(|x| x == extension))
        });
        if found {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing reached {} in 30 s", dir.display());
}

#[test]
fn up_keeps_every_directory_0700_and_every_file_0600() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let up = Up::start(&data);
    up.post(&data, "12");
    wait_for_file(&data.join("outbox/email"), "eml");
    wait_for_file(&data.join("outbox/sms"), "json");

    // While everything is open, so the WAL and shared-memory files exist.
    let expected = [
        "",
        "broker",
        "broker/broker.sqlite3",
        "broker/broker.sqlite3-wal",
        "broker/broker.sqlite3-shm",
        "broker/journal.sqlite3",
        "broker/journal.sqlite3-wal",
        "broker/journal.sqlite3-shm",
        "broker/oidc-signing-key.pem",
        "ingest-api-key",
        "suppression-key",
        "email-service",
        "email-service/notifications.sqlite3",
        "email-service/notifications.sqlite3-wal",
        "email-service/notifications.sqlite3-shm",
        "sms-service",
        "sms-service/notifications.sqlite3",
        "sms-service/notifications.sqlite3-wal",
        "sms-service/notifications.sqlite3-shm",
        "outbox",
        "outbox/email",
        "outbox/sms",
    ];
    for path in expected {
        assert!(data.join(path).exists(), "{path} exists");
    }
    let paths = tree(&data);
    assert!(
        paths
            .iter()
            .any(|p| p.extension().is_some_and(|x| x == "eml")),
        "the email outbox holds the report's email"
    );
    for path in paths {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            mode(&path),
            want,
            "{} is {:04o}",
            path.display(),
            mode(&path)
        );
    }
    assert!(
        !up.log().contains("tightened"),
        "a new data directory has nothing to tighten:\n{}",
        up.log()
    );
}

#[test]
fn up_tightens_an_older_data_directory_and_says_so() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    // As an earlier labrelay (and umask 022) left it.
    std::fs::create_dir_all(data.join("broker")).unwrap();
    std::fs::create_dir_all(data.join("outbox/email")).unwrap();
    let key = "0123456789abcdef".repeat(4);
    std::fs::write(data.join("ingest-api-key"), format!("{key}\n")).unwrap();
    std::fs::write(data.join("outbox/email/old.eml"), "To: owner@example.org\n").unwrap();
    for dir in ["", "broker", "outbox", "outbox/email"] {
        set_mode(&data.join(dir), 0o755);
    }
    set_mode(&data.join("ingest-api-key"), 0o644);
    set_mode(&data.join("outbox/email/old.eml"), 0o644);
    // Something of the operator's own beside the data: not ours to change.
    std::fs::write(data.join("notes.txt"), "mine").unwrap();
    set_mode(&data.join("notes.txt"), 0o644);

    let up = Up::start(&data);
    for dir in ["", "broker", "outbox", "outbox/email"] {
        assert_eq!(mode(&data.join(dir)), 0o700, "{dir:?}");
    }
    for file in ["ingest-api-key", "outbox/email/old.eml"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&data.join("notes.txt")), 0o644);
    assert_eq!(
        std::fs::read_to_string(data.join("ingest-api-key")).unwrap(),
        format!("{key}\n"),
        "the key is kept, only its mode changes"
    );
    // The key still lets `post` in.
    up.post(&data, "12");

    let log = up.log();
    let tightened: Vec<&str> = log.lines().filter(|l| l.contains("tightened")).collect();
    for (path, old, new) in [
        (data.clone(), "0755", "0700"),
        (data.join("broker"), "0755", "0700"),
        (data.join("ingest-api-key"), "0644", "0600"),
        (data.join("outbox/email/old.eml"), "0644", "0600"),
    ] {
        let path = path.display().to_string();
        let lines: Vec<_> = tightened
            .iter()
            .filter(|l| l.contains(&format!("path={path} ")))
            .collect();
        assert_eq!(lines.len(), 1, "one line for {path}:\n{log}");
        assert!(
            lines[0].contains(old) && lines[0].contains(new),
            "{}",
            lines[0]
        );
    }
    assert!(
        !tightened.iter().any(|l| l.contains("owner@example.org")),
        "no file's contents in the log"
    );
}

#[test]
fn up_refuses_an_ingest_key_that_is_a_symlink() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let elsewhere = root.path().join("elsewhere");
    std::fs::write(&elsewhere, "someone else's file\n").unwrap();
    set_mode(&elsewhere, 0o644);
    std::os::unix::fs::symlink(&elsewhere, data.join("ingest-api-key")).unwrap();

    let mut child = up::up_command(LABRELAY, &data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("up kept running with a symlinked key file");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("ingest-api-key") && stderr.contains("symlink"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&elsewhere).unwrap(),
        "someone else's file\n"
    );
    assert_eq!(mode(&elsewhere), 0o644, "the link's target is not ours");
    assert!(
        std::fs::symlink_metadata(data.join("ingest-api-key"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
async fn the_broker_alone_keeps_its_data_directory_private() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("broker-data");
    let broker = Process::broker(LABRELAY, &data);
    let created = reqwest::Client::new()
        .put(format!("{}/v1/projects/demo/topics/reports", broker.url()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    for path in tree(&data) {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), want, "{}", path.display());
    }
    for file in [
        "broker.sqlite3",
        "broker.sqlite3-wal",
        "broker.sqlite3-shm",
        "journal.sqlite3",
        "oidc-signing-key.pem",
    ] {
        assert!(data.join(file).exists(), "{file} exists");
    }
}
