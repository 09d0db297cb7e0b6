//! Real `labrelay` processes for whole-system tests.

#![allow(dead_code)] // each test file uses its own part of this module

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `labrelay` subcommand, killed when dropped.
pub struct Process {
    child: Child,
    /// The address it announced on its first line of output.
    pub addr: SocketAddr,
    name: String,
}

impl Process {
    /// Runs `labrelay ARGS` with `envs` and waits for its "... listening on
    /// ADDR" line. Logs go to the test's stderr.
    pub fn start(name: &str, args: &[&str], envs: &[(&str, String)]) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_labrelay"));
        command
            .args(args)
            .env_remove("PUBSUB_EMULATOR_HOST")
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
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
        }
    }

    pub fn broker(data_dir: &Path) -> Process {
        Self::start(
            "broker",
            &[
                "broker",
                "--port",
                "0",
                "--data-dir",
                data_dir.to_str().unwrap(),
            ],
            &[],
        )
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no chance to flush or drain anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
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

/// `labrelay up` on `data_dir` with every port chosen by the system and no
/// provider, ingest or broker settings inherited from the test's environment;
/// callers add their own settings and stdio.
pub fn up_command(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_labrelay"));
    command
        .args(["up", "--data-dir"])
        .arg(data_dir)
        .args(["--broker-port", "0", "--lab-report-port", "0"])
        .args(["--email-port", "0", "--sms-port", "0"])
        .env_remove("SMTP_URL")
        .env_remove("TWILIO_ACCOUNT_SID")
        .env_remove("INGEST_OPEN")
        .env_remove("PUBSUB_EMULATOR_HOST");
    command
}

/// A port that was free a moment ago, for a process that must come back on
/// the same address after a restart.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
