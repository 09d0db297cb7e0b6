//! One `labrelay` subcommand (`broker`, `lab-report-service`,
//! `email-service`, `sms-service`) as a real process, for whole-system
//! tests that start, kill and restart the parts one by one. Each announces
//! itself with a "... listening on ADDR" line on stdout; `labrelay up`,
//! which runs them all in one process, is [`crate::up`].

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `labrelay` subcommand, killed when dropped.
pub struct Process {
    child: Child,
    /// The address it announced.
    pub addr: SocketAddr,
    name: String,
    // Held open so that a later line on stdout does not fail the child.
    _stdout: BufReader<ChildStdout>,
}

impl Process {
    /// Runs `bin ARGS` (`bin`: the `labrelay` binary, `CARGO_BIN_EXE_labrelay`
    /// in the root package's tests) with `envs` and nothing inherited that
    /// configures a provider, the ingest or the broker, and waits for its
    /// "... listening on ADDR" line. Its log (stderr, at `TEST_LOG` level,
    /// default warn) goes to the test's stderr.
    pub fn start(
        bin: impl AsRef<Path>,
        name: &str,
        args: &[&str],
        envs: &[(&str, String)],
    ) -> Process {
        Self::spawn(bin.as_ref(), name, args, envs, Stdio::inherit())
    }

    /// As [`Process::start`], with its log appended to the file `log`.
    pub fn start_logging_to(
        bin: impl AsRef<Path>,
        name: &str,
        args: &[&str],
        envs: &[(&str, String)],
        log: &Path,
    ) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        Self::spawn(bin.as_ref(), name, args, envs, log.into())
    }

    /// `labrelay broker` on port 0, keeping its store in `data_dir`.
    pub fn broker(bin: impl AsRef<Path>, data_dir: &Path) -> Process {
        let data_dir = data_dir.to_str().expect("a UTF-8 data directory");
        Self::start(
            bin,
            "broker",
            &["broker", "--port", "0", "--data-dir", data_dir],
            &[],
        )
    }

    fn spawn(
        bin: &Path,
        name: &str,
        args: &[&str],
        envs: &[(&str, String)],
        stderr: Stdio,
    ) -> Process {
        let mut command = Command::new(bin);
        command
            .args(args)
            .env_remove("PUBSUB_EMULATOR_HOST")
            .env_remove("SMTP_URL")
            .env_remove("TWILIO_ACCOUNT_SID")
            .env_remove("INGEST_OPEN")
            .env_remove("NOTIFY_LOG")
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", bin.display()));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading {name}'s first line: {e}"));
        let addr = line
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{name} printed {line:?} instead of its address"));
        Process {
            child,
            addr,
            name: name.to_string(),
            _stdout: stdout,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush, drain or record anything.
    pub fn kill(mut self) {
        self.child.kill().expect("killing a child");
        self.child.wait().expect("waiting for a killed child");
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.sigterm();
        self.child.wait().expect("waiting for a child")
    }

    /// SIGTERM, then waits up to `limit` for the exit and SIGKILLs after
    /// that. Returns the exit status (None: it had to be killed) and how
    /// long it took.
    pub async fn terminate_within(mut self, limit: Duration) -> (Option<ExitStatus>, Duration) {
        let started = Instant::now();
        self.sigterm();
        let deadline = started + limit;
        // Nothing signals a child's exit to async code here; poll it.
        loop {
            if let Some(status) = self.child.try_wait().expect("polling a child") {
                return (Some(status), started.elapsed());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return (None, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn sigterm(&self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            eprintln!("stopped {}", self.name);
        }
    }
}

/// A port that was free a moment ago, for a process that must come back on
/// the same address after a restart (outside the ephemeral range, so no
/// outgoing connection of a test running beside this one can take it).
pub fn free_port() -> u16 {
    labrelay_runtime::serve::free_port().expect("finding a free port")
}
