//! The system under test, started by the bench itself: the broker and each
//! service as a separate child process of the `labrelay` binary, wired the way
//! `labrelay up` wires them (topics, push subscriptions with OIDC tokens,
//! API keys, outbox directories), on a temporary data directory. Separate
//! processes, so memory and CPU can be read for each.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::Context as _;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
use labrelay_lab_report_service::ingest_auth::hash_key;
use pb::publisher_client::PublisherClient;
use pb::subscriber_client::SubscriberClient;

use labrelay::up::{self, DEAD_LETTER_TOPIC, LOCAL_LAB, TOPIC, file_url, invoker};

use super::procfs::Watched;

/// Settings a developer's shell may carry that would rewire a child.
const INHERITED_SETTINGS: &[&str] = &[
    "PORT",
    "HOST",
    "K_SERVICE",
    "LOG_FORMAT",
    "PUBSUB_EMULATOR_HOST",
    "SMTP_URL",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMTP_PASSWORD_FILE",
    "SMS_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_AUTH_TOKEN_FILE",
    "TWILIO_FROM",
    "TWILIO_MESSAGING_SERVICE_SID",
    "PUSH_AUTH",
    "INGEST_OPEN",
    "INGEST_API_KEYS",
    "INGEST_API_KEYS_FILE",
    "INGEST_RATE_LIMIT",
    "INGEST_RATE_BURST",
    "METRICS_PORT",
    "NOTIFY_LOG",
];

/// A child process, killed when dropped. Its stderr goes to a log file.
pub struct Process {
    pub name: String,
    pub addr: SocketAddr,
    /// When it was spawned (for cold starts).
    pub spawned: Instant,
    child: Child,
}

impl Process {
    /// Spawns `command` and waits for its "... listening on ADDR" line; the
    /// rest of its stdout is drained on a thread.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Process> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            let log_text = std::fs::read_to_string(log).unwrap_or_default();
            anyhow::bail!(
                "{name} printed {line:?} instead of its address; its log:\n{}",
                log_text.trim()
            );
        };
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Ok(Process {
            name: name.to_string(),
            addr,
            spawned,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn watched(&self) -> Watched {
        Watched {
            name: self.name.clone(),
            pid: self.pid(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `labrelay` binary the system under test runs as.
#[derive(Debug, Clone)]
pub struct Labrelay {
    path: PathBuf,
}

impl Labrelay {
    /// `explicit` (`--labrelay`, `LABRELAY_BIN`) if given; else `labrelay`
    /// beside this executable, which cargo builds into the same target
    /// directory. When cargo started the bench (`cargo run -p
    /// labrelay-bench`), that binary is built first, in the same profile,
    /// so the bench never measures a stale one.
    pub fn find(explicit: Option<PathBuf>) -> anyhow::Result<Labrelay> {
        if let Some(path) = explicit {
            anyhow::ensure!(
                path.is_file(),
                "--labrelay / LABRELAY_BIN names {}, which is not a file",
                path.display()
            );
            return Ok(Labrelay { path });
        }
        let exe = std::env::current_exe().context("finding this executable")?;
        let dir = exe.parent().context("this executable has no directory")?;
        if let Some(cargo) = std::env::var_os("CARGO") {
            build_beside(&cargo, dir)?;
        }
        Labrelay::beside(dir)
    }

    /// `labrelay` in `dir`, which must exist.
    pub fn beside(dir: &Path) -> anyhow::Result<Labrelay> {
        let path = dir.join(format!("labrelay{}", std::env::consts::EXE_SUFFIX));
        anyhow::ensure!(
            path.is_file(),
            "no labrelay binary at {}: build it (`cargo build --release -p labrelay`), \
             or name one with --labrelay or LABRELAY_BIN",
            path.display()
        );
        Ok(Labrelay { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `labrelay SUBCOMMAND` with a clean environment for the settings
    /// that matter and quiet logs.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.path);
        command.args(args).env("RUST_LOG", "warn");
        for key in INHERITED_SETTINGS {
            command.env_remove(key);
        }
        command
    }
}

/// Builds the `labrelay` binary into `dir`, a profile's directory of a
/// cargo target directory (`target/release`, `target/debug`), with `cargo`.
/// Nothing to do when it is up to date.
pub fn build_beside(cargo: &OsStr, dir: &Path) -> anyhow::Result<()> {
    let profile = match dir.file_name().and_then(OsStr::to_str) {
        Some("debug") => "dev",
        Some(name) => name,
        None => anyhow::bail!("{} is not a cargo profile directory", dir.display()),
    };
    let target_dir = dir
        .parent()
        .with_context(|| format!("{} is not in a target directory", dir.display()))?;
    let mut command = Command::new(cargo);
    // What cargo sets for the program it runs, which a build script may
    // watch (ring's reruns when CARGO_MANIFEST_DIR changes, and with it
    // everything above it): inherited, it would make this build differ from
    // a plain `cargo build -p labrelay` and each rebuild the other's.
    for (key, _) in std::env::vars_os() {
        let run_setting = key.to_str().is_some_and(|key| {
            key.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&key)
        });
        if run_setting {
            command.env_remove(key);
        }
    }
    let status = command
        .args(["build", "--package", "labrelay", "--bin", "labrelay"])
        .args(["--profile", profile, "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("running cargo build -p labrelay")?;
    anyhow::ensure!(status.success(), "cargo build -p labrelay failed: {status}");
    Ok(())
}

/// The broker alone, on `dir`.
pub fn start_broker(labrelay: &Labrelay, dir: &Path) -> anyhow::Result<Process> {
    let data = dir.join("broker");
    let mut command = labrelay.command(&["broker", "--port", "0", "--data-dir"]);
    command.arg(&data);
    Process::spawn("broker", command, &dir.join("broker.log"))
}

/// The lab-report-service, publishing to `broker`, accepting `api_key`.
pub fn start_lab_report_service(
    labrelay: &Labrelay,
    dir: &Path,
    broker: SocketAddr,
    project: &str,
    api_key: &str,
) -> anyhow::Result<Process> {
    let mut command = labrelay.command(&["lab-report-service"]);
    command
        .env("PORT", "0")
        .env("PUBSUB_EMULATOR_HOST", broker.to_string())
        .env("PUBSUB_PROJECT_ID", project)
        .env(
            "INGEST_API_KEYS",
            format!("{LOCAL_LAB}:{}", hash_key(api_key)),
        )
        // The bench posts thousands of reports a second as one lab, as under
        // `labrelay up`, which runs without a rate limit too.
        .env("INGEST_RATE_LIMIT", "off");
    Process::spawn(
        "lab-report-service",
        command,
        &dir.join("lab-report-service.log"),
    )
}

/// A push receiver (`email-service` or `sms-service`) on a chosen port,
/// verifying the broker's tokens as under `labrelay up`.
fn start_receiver(
    labrelay: &Labrelay,
    name: &str,
    dir: &Path,
    broker: SocketAddr,
    project: &str,
    channel: (&str, String),
) -> anyhow::Result<Process> {
    // The push receivers must know their own address (the token audience)
    // before they start.
    let port = labrelay_runtime::serve::free_port()?;
    let own = format!("http://127.0.0.1:{port}/");
    let service_dir = dir.join(name);
    std::fs::create_dir_all(&service_dir)?;
    let mut command = labrelay.command(&[name]);
    command
        .env("PORT", port.to_string())
        .env(channel.0, channel.1)
        .env(
            "NOTIFY_LOG",
            format!(
                "sqlite://{}",
                service_dir
                    .canonicalize()?
                    .join("notifications.sqlite3")
                    .display()
            ),
        )
        .env("PUSH_AUDIENCE", own)
        .env("PUSH_ALLOWED_SERVICE_ACCOUNTS", invoker(project))
        .env("PUSH_TOKEN_ISSUERS", format!("http://{broker}"))
        .env(
            "PUSH_JWKS_URL",
            format!("http://{broker}/.well-known/jwks.json"),
        );
    Process::spawn(name, command, &dir.join(format!("{name}.log")))
}

/// Creates `new-lab-report`, its dead-letter topic and subscription, and the
/// two push subscriptions, as `up`'s `ensure_topology` does, through the API.
async fn create_topology(
    broker: SocketAddr,
    project: &str,
    email: &str,
    sms: &str,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{broker}"))?
        .connect()
        .await?;
    let mut publisher = PublisherClient::new(channel.clone());
    let mut subscriber = SubscriberClient::new(channel);
    for name in [TOPIC, DEAD_LETTER_TOPIC] {
        publisher
            .create_topic(pb::Topic {
                name: format!("projects/{project}/topics/{name}"),
                ..Default::default()
            })
            .await?;
    }
    subscriber
        .create_subscription(up::dead_letter_subscription(project))
        .await?;
    for (id, endpoint) in [("email-service-sub", email), ("sms-service-sub", sms)] {
        subscriber
            .create_subscription(up::push_subscription(project, id, endpoint))
            .await?;
    }
    Ok(())
}

/// The whole system on a temporary data directory, one process per part.
pub struct OwnSystem {
    pub broker: Process,
    pub lab: Process,
    pub email: Process,
    pub sms: Process,
    pub api_key: String,
    pub email_outbox: PathBuf,
    pub sms_outbox: PathBuf,
    // Last: the processes are killed before their directory goes.
    pub dir: tempfile::TempDir,
}

impl OwnSystem {
    pub async fn start(labrelay: &Labrelay) -> anyhow::Result<OwnSystem> {
        let dir = tempfile::Builder::new()
            .prefix("labrelay-bench-")
            .tempdir()?;
        let root = dir.path();
        let project = up::project_id();
        let api_key = hex::encode(rand::random::<[u8; 32]>());
        let email_outbox = root.join("outbox").join("email");
        let sms_outbox = root.join("outbox").join("sms");
        let broker = start_broker(labrelay, root)?;
        let email = start_receiver(
            labrelay,
            "email-service",
            root,
            broker.addr,
            &project,
            ("SMTP_URL", file_url(&email_outbox)?),
        )?;
        let sms = start_receiver(
            labrelay,
            "sms-service",
            root,
            broker.addr,
            &project,
            ("SMS_URL", file_url(&sms_outbox)?),
        )?;
        create_topology(broker.addr, &project, &email.url(), &sms.url())
            .await
            .context("creating topics and subscriptions")?;
        let lab = start_lab_report_service(labrelay, root, broker.addr, &project, &api_key)?;
        Ok(OwnSystem {
            broker,
            lab,
            email,
            sms,
            api_key,
            email_outbox,
            sms_outbox,
            dir,
        })
    }

    pub fn watched(&self) -> Vec<Watched> {
        [&self.broker, &self.lab, &self.email, &self.sms]
            .iter()
            .map(|p| p.watched())
            .collect()
    }
}
