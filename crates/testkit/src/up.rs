//! `labrelay up` as a real process, found the way users' tools find it:
//! through the `up.json` it writes once every part listens
//! ([`labrelay_contract::up_file`]), never by reading its banner.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use labrelay_contract::up_file::UpFile;

/// How long `up` may take to listen (a cold debug build on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the data directory is looked at while `up` starts.
const POLL: Duration = Duration::from_millis(10);

/// `labrelay up` (the binary at `bin`) on `data_dir`, with every port chosen
/// by the system and no provider, ingest, host or broker settings inherited
/// from the test's environment; callers add their own settings and stdio.
pub fn up_command(bin: impl AsRef<Path>, data_dir: &Path) -> Command {
    let mut command = Command::new(bin.as_ref());
    command
        .args(["up", "--data-dir"])
        .arg(data_dir)
        .args(["--broker-port", "0", "--lab-report-port", "0"])
        .args(["--email-port", "0", "--sms-port", "0"])
        .env_remove("SMTP_URL")
        .env_remove("TWILIO_ACCOUNT_SID")
        .env_remove("INGEST_OPEN")
        .env_remove("ALLOWED_HOSTS")
        .env_remove("ALLOWED_PUSH_ENDPOINTS")
        .env_remove("PUBSUB_EMULATOR_HOST");
    command
}

/// A running `labrelay up`, killed when dropped.
pub struct Up {
    child: Child,
    /// What its `up.json` says: each part's address, the project, the key
    /// file.
    pub running: UpFile,
    pub data_dir: PathBuf,
}

impl Up {
    /// Spawns `command` (see [`up_command`]) on `data_dir` and waits until
    /// its `up.json` names this process. Panics if it exits first.
    pub fn start(mut command: Command, data_dir: &Path) -> Up {
        let mut child = command.spawn().expect("starting labrelay up");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(running) = UpFile::read(data_dir)
                && running.pid == child.id()
            {
                return Up {
                    child,
                    running,
                    data_dir: data_dir.to_path_buf(),
                };
            }
            if let Some(status) = child.try_wait().expect("waiting for labrelay up") {
                panic!("labrelay up exited before it listened: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "labrelay up did not write its up.json within {START_TIMEOUT:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// `http://<broker>`.
    pub fn broker_url(&self) -> String {
        format!("http://{}", self.running.broker)
    }

    /// `http://<part>` for "broker", "lab-report-service", "email-service"
    /// or "sms-service", without a trailing slash.
    pub fn url(&self, part: &str) -> String {
        let addr = match part {
            "broker" => self.running.broker,
            "lab-report-service" => self.running.lab_report_service,
            "email-service" => self.running.email_service,
            "sms-service" => self.running.sms_service,
            other => panic!("labrelay up has no part called {other}"),
        };
        format!("http://{addr}")
    }

    /// Every part's name and URL, the broker first.
    pub fn parts(&self) -> [(&'static str, String); 4] {
        [
            "broker",
            "lab-report-service",
            "email-service",
            "sms-service",
        ]
        .map(|part| (part, self.url(part)))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process, for tests that read its output or signal it.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// SIGTERM (a clean stop: `up.json` is removed), then the exit status.
    #[cfg(unix)]
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        self.child.wait().expect("waiting for labrelay up")
    }

    /// SIGKILL: no chance to clean anything up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
