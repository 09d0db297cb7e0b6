//! `labrelay up` as a newcomer runs it: one process with the broker and the
//! three services, `labrelay post` against it, emails and SMS in the
//! outboxes, a clean stop on SIGTERM, and a second `up` on the same data
//! directory that delivers what the first one could not.

use labrelay_testkit::up;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::LABRELAY;

/// `labrelay up` on a data directory, and `labrelay post` against it.
struct Up {
    process: labrelay_testkit::up::Up,
}

impl Up {
    fn start(data_dir: &Path) -> Up {
        let mut command = up::up_command(LABRELAY, data_dir);
        command.env("RUST_LOG", "warn").stdout(Stdio::null());
        Up {
            process: up::Up::start(command, data_dir),
        }
    }

    /// `labrelay post`, finding the service and the API key through the
    /// data directory (its `up.json` and `ingest-api-key`), as a user would.
    fn post(&self, ids: &[&str]) -> std::process::Output {
        self.post_with(&[], ids)
    }

    fn post_with(&self, options: &[&str], ids: &[&str]) -> std::process::Output {
        Command::new(LABRELAY)
            .args(["post", "--data-dir"])
            .arg(&self.process.data_dir)
            .args(options)
            .args(ids)
            .env_remove("LABRELAY_API_KEY")
            .env_remove("LABRELAY_URL")
            .output()
            .unwrap()
    }

    fn lab_url(&self) -> String {
        self.process.running.lab_report_url()
    }

    fn terminate(self) -> std::process::ExitStatus {
        self.process.terminate()
    }
}

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect()
}

/// Waits for an outbox to hold `n` files. The outboxes are plain
/// directories, so this looks every 50 ms, for at most 30 s.
fn wait_for_files(dir: &Path, extension: &str, n: usize) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = files(dir, extension);
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn up_delivers_to_the_outboxes_stops_cleanly_and_resumes() {
    let data = tempfile::tempdir().unwrap();
    let email_outbox = data.path().join("outbox/email");
    let sms_outbox = data.path().join("outbox/sms");

    let up = Up::start(data.path());
    let posted = up.post(&["12", "34", "56"]);
    let stdout = String::from_utf8_lossy(&posted.stdout);
    assert!(posted.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.ends_with("\t204")).count(),
        3,
        "{stdout}"
    );
    assert_eq!(wait_for_files(&email_outbox, "eml", 3).len(), 3);
    assert_eq!(wait_for_files(&sms_outbox, "json", 3).len(), 3);
    let email = std::fs::read_to_string(&files(&email_outbox, "eml")[0]).unwrap();
    assert!(email.contains("X-Report-Id: "), "{email}");
    assert!(email.contains("multipart/alternative"), "{email}");

    // The key `up` generated is in the data directory, readable only by us;
    // without it, or with another, nothing gets in.
    let key_file = data.path().join("ingest-api-key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(key.trim().len(), 64, "32 bytes, hex");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let keyless = Command::new(LABRELAY)
        .args(["post", "--url", &up.lab_url(), "--data-dir"])
        .arg(elsewhere.path())
        .arg("13")
        .env_remove("LABRELAY_API_KEY")
        .output()
        .unwrap();
    assert!(!keyless.status.success());
    assert!(String::from_utf8_lossy(&keyless.stdout).starts_with("13\t401"));
    let wrong = up.post_with(&["--api-key", "not-the-key"], &["14"]);
    assert!(String::from_utf8_lossy(&wrong.stdout).starts_with("14\t401"));
    let explicit = up.post_with(&["--api-key", key.trim()], &["15"]);
    assert!(explicit.status.success());
    assert_eq!(wait_for_files(&sms_outbox, "json", 4).len(), 4);

    // The seed's bare report is accepted too; it has no owner to notify.
    let bare = up.post_with(&["--bare"], &["99"]);
    assert!(
        bare.status.success(),
        "{}",
        String::from_utf8_lossy(&bare.stdout)
    );

    // Break the email channel: its outbox can no longer be written.
    std::fs::remove_dir_all(&email_outbox).unwrap();
    std::fs::write(&email_outbox, b"not a directory").unwrap();
    assert!(up.post(&["78"]).status.success());
    assert_eq!(wait_for_files(&sms_outbox, "json", 5).len(), 5);

    let status = up.terminate();
    assert!(status.success(), "up exits cleanly on SIGTERM: {status}");
    assert!(
        !data.path().join("up.json").exists(),
        "a clean stop removes up.json"
    );

    // Fix the channel and start again on the same data: report 78's email
    // was kept by the broker and goes out now.
    std::fs::remove_file(&email_outbox).unwrap();
    let up = Up::start(data.path());
    let emails = wait_for_files(&email_outbox, "eml", 1);
    assert_eq!(emails.len(), 1);
    assert!(
        std::fs::read_to_string(&emails[0])
            .unwrap()
            .contains("X-Report-Id: 78")
    );
    assert_eq!(files(&sms_outbox, "json").len(), 5, "no SMS was sent again");
    assert!(up.terminate().success());
}

#[test]
fn post_reports_failures_and_exits_non_zero() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(LABRELAY)
        .args(["post", "--url", &format!("http://127.0.0.1:{port}/"), "12"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(stdout.starts_with("12\terror\t"), "{stdout}");
}

/// The names of `pid`'s threads.
#[cfg(target_os = "linux")]
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// The binary's allocator settings (`MALLOC_CONF` in src/main.rs) are the
/// ones in force: jemalloc runs one background thread, which gives pages a
/// burst freed back to the system while the process is quiet. Without the
/// settings (or with glibc's malloc) there is no such thread.
#[cfg(target_os = "linux")]
#[test]
fn up_runs_jemalloc_with_one_background_thread() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path());
    let pid = up.process.pid();
    // jemalloc names its thread from inside it, just after creating it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let background = loop {
        let names = thread_names(pid);
        let background = names.iter().filter(|n| *n == "jemalloc_bg_thd").count();
        if background > 0 || Instant::now() > deadline {
            break background;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(background, 1, "threads: {:?}", thread_names(pid));
    assert!(up.terminate().success());
}
