//! The whole system as separate, real `labrelay` processes, for the fault
//! suite (`tests/system/faults.rs`); the resilience suite wires its own
//! processes on the same [`Topology`].
//!
//! [`Pipeline`] runs the broker, the lab-report-service, the email-service
//! and the sms-service each as its own child process on a fixed port, wired
//! as `labrelay up` wires them ([`Topology`]: push subscriptions with OIDC
//! tokens, a retry policy, the dead-letter topic and its subscription; a
//! notification log per push service), with a real SMTP server (aiosmtpd)
//! and a real HTTP server playing Twilio. Any part can be SIGKILLed,
//! SIGTERMed and started again on the same port and data.
//!
//! [`Stream`] posts a steady stream of reports through a pool of concurrent
//! posters and records every id answered 204. [`Pipeline::await_quiet`]
//! then waits, on the sink's and the stand-in's events, until every 204'd
//! report reached both channels and nothing happens any more, and returns
//! the [`Tally`]: per report, each email and SMS that arrived.
//!
//! Each process's log (stderr, at `TEST_LOG` level, default warn) goes to a
//! file in the pipeline's directory; the last lines of each are printed
//! when a test fails, and `FAULT_LOGS=DIR` keeps them all.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use labrelay_lab_report_service::ingest_auth::hash_key;
use serde_json::json;

use crate::process::{Process, free_port};
use crate::proxy::RoundRobinProxy;
use crate::smtp::SmtpSink;
use crate::twilio::TwilioStandIn;
use tally::report_for_phone;

mod stream;
mod tally;
mod topology;

pub use labrelay::up::{DEAD_LETTER_SUBSCRIPTION, DEAD_LETTER_TOPIC, TOPIC};
pub use stream::{Posted, Stream, report, report_id};
pub use tally::{Email, Tally};
pub use topology::Topology;

pub const PROJECT: &str = "faults";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "faults-auth-token";
pub(crate) const API_KEY: &str = "faults-test-ingest-key";

/// How the system is configured for one scenario.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The push subscriptions' ack deadline, which is also the broker's
    /// push request timeout (10 s is Pub/Sub's minimum).
    pub ack_deadline_secs: i32,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub max_delivery_attempts: i32,
    /// `SMTP_TIMEOUT_SECS` of the email-service.
    pub smtp_timeout_secs: u64,
    /// `PUBLISH_TIMEOUT_SECS` of the lab-report-service.
    pub publish_timeout_secs: u64,
    /// Where the broker keeps its store; default: under the pipeline's
    /// temporary directory.
    pub broker_data: Option<PathBuf>,
    /// A second email-service instance beside the first, as Cloud Run
    /// scales one out: both share one notification log, and the email
    /// subscription pushes to a round-robin proxy in front of both.
    pub second_email: Option<SecondEmail>,
}

/// The second email-service instance of [`Settings::second_email`].
#[derive(Debug, Clone)]
pub struct SecondEmail {
    /// Its `EMAIL_FROM`: another sender renders another email (a new
    /// revision beside the old one, as during a rolling deploy).
    pub from: String,
    /// Started in a PID and mount namespace of its own (`unshare`), as in
    /// a container of its own, where the system allows it.
    pub own_pid_namespace: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            ack_deadline_secs: 10,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(2),
            // `up`'s limit: nothing real should be parked, the faults heal.
            // Only the backoffs, which are parameters, are scaled down.
            max_delivery_attempts: labrelay::up::MAX_DELIVERY_ATTEMPTS as i32,
            smtp_timeout_secs: 5,
            publish_timeout_secs: 2,
            broker_data: None,
            second_email: None,
        }
    }
}

/// One part of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Broker,
    LabReport,
    Email,
    /// The second email-service instance ([`Settings::second_email`]).
    SecondEmail,
    Sms,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Broker => "broker",
            Part::LabReport => "lab-report-service",
            Part::Email => "email-service",
            Part::SecondEmail => "email-service-2",
            Part::Sms => "sms-service",
        }
    }
}

const LOGGED_PARTS: [&str; 5] = [
    "broker",
    "lab-report-service",
    "email-service",
    "email-service-2",
    "sms-service",
];

/// A PID and mount namespace of its own, with its own `/proc`, for a
/// process that should not see the others (`unshare`); its child dies
/// with it.
const UNSHARE: [&str; 7] = [
    "--pid",
    "--fork",
    "--kill-child",
    "--mount",
    "--mount-proc",
    "--map-root-user",
    "--",
];

/// The system, each part its own process.
pub struct Pipeline {
    pub settings: Settings,
    pub smtp: SmtpSink,
    pub twilio: TwilioStandIn,
    /// The `labrelay` binary.
    bin: PathBuf,
    procs: HashMap<&'static str, Process>,
    ports: HashMap<&'static str, u16>,
    broker_data: PathBuf,
    dir: tempfile::TempDir,
    mail_index: Mutex<HashMap<PathBuf, (String, String, u128)>>,
    /// In front of both email-service instances, when there are two.
    email_proxy: Option<RoundRobinProxy>,
    /// Whether the second email-service instance runs in a PID namespace
    /// of its own; None while it has not been started.
    second_email_namespaced: Option<bool>,
}

impl Pipeline {
    /// Starts everything, each part a process of `bin` (the `labrelay`
    /// binary), and creates the topology.
    pub async fn start(bin: impl AsRef<Path>, settings: Settings) -> Pipeline {
        let dir = tempfile::Builder::new()
            .prefix("labrelay-faults-")
            .tempdir()
            .unwrap();
        let smtp = SmtpSink::start().await.unwrap();
        let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
        let broker_data = settings
            .broker_data
            .clone()
            .unwrap_or_else(|| dir.path().join("broker"));
        let mut ports = HashMap::new();
        for part in [
            Part::Broker,
            Part::LabReport,
            Part::Email,
            Part::SecondEmail,
            Part::Sms,
        ] {
            ports.insert(part.name(), free_port());
        }
        let email_proxy = match settings.second_email {
            None => None,
            Some(_) => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let backends = [Part::Email, Part::SecondEmail]
                    .map(|part| SocketAddr::from(([127, 0, 0, 1], ports[part.name()])));
                Some(RoundRobinProxy::start_http1(listener, backends.to_vec()).unwrap())
            }
        };
        let second = settings.second_email.is_some();
        let mut pipeline = Pipeline {
            settings,
            smtp,
            twilio,
            bin: bin.as_ref().to_path_buf(),
            procs: HashMap::new(),
            ports,
            broker_data,
            dir,
            mail_index: Mutex::new(HashMap::new()),
            email_proxy,
            second_email_namespaced: None,
        };
        pipeline.start_part(Part::Broker);
        pipeline.create_topology().await;
        for part in [Part::LabReport, Part::Email, Part::Sms] {
            pipeline.start_part(part);
        }
        if second {
            pipeline.start_part(Part::SecondEmail);
        }
        pipeline
    }

    /// Whether the second email-service instance runs in a PID namespace
    /// of its own (`unshare` allowed); None without one.
    pub fn second_email_namespaced(&self) -> Option<bool> {
        self.second_email_namespaced
    }

    /// Connections the proxy in front of the email-service instances
    /// has accepted.
    pub fn email_proxy_connections(&self) -> usize {
        self.email_proxy
            .as_ref()
            .map_or(0, RoundRobinProxy::connections)
    }

    /// The part's log so far.
    pub fn log(&self, part: Part) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", part.name())))
            .unwrap_or_default()
    }

    pub fn broker_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[Part::Broker.name()])
    }

    pub fn lab_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.ports[Part::LabReport.name()])
    }

    /// Where the broker pushes for `part`: the part itself, or the proxy
    /// in front of both email-service instances.
    fn push_endpoint(&self, part: Part) -> String {
        match (&self.email_proxy, part) {
            (Some(proxy), Part::Email | Part::SecondEmail) => {
                format!("http://{}/", proxy.address())
            }
            _ => format!("http://127.0.0.1:{}/", self.ports[part.name()]),
        }
    }

    /// Starts `part` on its port (and data), as the first time.
    pub fn start_part(&mut self, part: Part) {
        assert!(
            !self.procs.contains_key(part.name()),
            "{} is running",
            part.name()
        );
        let port = self.ports[part.name()].to_string();
        let log = self.dir.path().join(format!("{}.log", part.name()));
        let second = self
            .settings
            .second_email
            .clone()
            .filter(|_| part == Part::SecondEmail);
        let namespaced = second
            .as_ref()
            .map(|second| second.own_pid_namespace && unshare_allowed());
        let broker = format!("127.0.0.1:{}", self.ports[Part::Broker.name()]);
        let push_auth = |part: Part| {
            vec![
                ("PUSH_AUDIENCE", self.push_endpoint(part)),
                (
                    "PUSH_ALLOWED_SERVICE_ACCOUNTS",
                    labrelay::up::invoker(PROJECT),
                ),
                ("PUSH_TOKEN_ISSUERS", format!("http://{broker}")),
                (
                    "PUSH_JWKS_URL",
                    format!("http://{broker}/.well-known/jwks.json"),
                ),
            ]
        };
        // Both email-service instances share the first one's log.
        let notify_log = |part: Part| {
            let owner = if part == Part::SecondEmail {
                Part::Email
            } else {
                part
            };
            let path = self
                .dir
                .path()
                .join(format!("{}-notifications.sqlite3", owner.name()));
            ("NOTIFY_LOG", format!("sqlite://{}", path.display()))
        };
        // As `up` sets them (`dead_letter_vars`): the receivers park what
        // can never be sent themselves.
        let dead_letter = || {
            vec![
                (
                    "DEAD_LETTER_TOPIC",
                    format!("projects/{PROJECT}/topics/{DEAD_LETTER_TOPIC}"),
                ),
                ("PUBSUB_EMULATOR_HOST", broker.clone()),
            ]
        };
        let proc = match part {
            Part::Broker => Process::start_logging_to(
                &self.bin,
                part.name(),
                &[
                    "broker",
                    "--port",
                    &port,
                    "--data-dir",
                    self.broker_data.to_str().unwrap(),
                ],
                &[],
                &log,
            ),
            Part::LabReport => Process::start_logging_to(
                &self.bin,
                part.name(),
                &["lab-report-service"],
                &[
                    ("PORT", port),
                    ("PUBSUB_EMULATOR_HOST", broker.clone()),
                    ("PUBSUB_PROJECT_ID", PROJECT.into()),
                    (
                        "PUBLISH_TIMEOUT_SECS",
                        self.settings.publish_timeout_secs.to_string(),
                    ),
                    (
                        "INGEST_API_KEYS",
                        format!("fault-lab:{}", hash_key(API_KEY)),
                    ),
                ],
                &log,
            ),
            Part::Email | Part::SecondEmail => {
                let mut envs = vec![
                    ("PORT", port),
                    ("SMTP_URL", self.smtp.url()),
                    (
                        "SMTP_TIMEOUT_SECS",
                        self.settings.smtp_timeout_secs.to_string(),
                    ),
                    notify_log(part),
                ];
                envs.extend(push_auth(part));
                envs.extend(dead_letter());
                match second {
                    None => Process::start_logging_to(
                        &self.bin,
                        part.name(),
                        &["email-service"],
                        &envs,
                        &log,
                    ),
                    Some(second) => {
                        envs.push(("EMAIL_FROM", second.from));
                        if namespaced == Some(true) {
                            let bin = self.bin.to_str().unwrap();
                            let args: Vec<&str> = UNSHARE
                                .iter()
                                .copied()
                                .chain([bin, "email-service"])
                                .collect();
                            Process::start_logging_to("unshare", part.name(), &args, &envs, &log)
                        } else {
                            Process::start_logging_to(
                                &self.bin,
                                part.name(),
                                &["email-service"],
                                &envs,
                                &log,
                            )
                        }
                    }
                }
            }
            Part::Sms => {
                let mut envs = vec![
                    ("PORT", port),
                    ("TWILIO_ACCOUNT_SID", SID.into()),
                    ("TWILIO_AUTH_TOKEN", TOKEN.into()),
                    ("TWILIO_FROM", "+15550001111".into()),
                    ("TWILIO_API_BASE", self.twilio.base_url()),
                    notify_log(part),
                ];
                envs.extend(push_auth(part));
                envs.extend(dead_letter());
                Process::start_logging_to(&self.bin, part.name(), &["sms-service"], &envs, &log)
            }
        };
        self.procs.insert(part.name(), proc);
        if namespaced.is_some() {
            self.second_email_namespaced = namespaced;
        }
    }

    fn take(&mut self, part: Part) -> Process {
        self.procs
            .remove(part.name())
            .unwrap_or_else(|| panic!("{} is not running", part.name()))
    }

    /// The process id of a running part.
    pub fn pid(&self, part: Part) -> u32 {
        self.procs[part.name()].pid()
    }

    /// SIGKILL.
    pub fn kill(&mut self, part: Part) {
        self.take(part).kill();
    }

    /// SIGTERM; the exit status (None: still running after `limit`, then
    /// killed) and the time it took to exit.
    pub async fn terminate(
        &mut self,
        part: Part,
        limit: Duration,
    ) -> (Option<ExitStatus>, Duration) {
        self.take(part).terminate_within(limit).await
    }

    /// What `labrelay up` creates (`src/up.rs`), with this scenario's ack
    /// deadline, retry policy and attempts.
    async fn create_topology(&self) {
        Topology {
            project: PROJECT,
            email_endpoint: self.push_endpoint(Part::Email),
            sms_endpoint: self.push_endpoint(Part::Sms),
            ack_deadline_secs: self.settings.ack_deadline_secs,
            min_backoff: self.settings.min_backoff,
            max_backoff: self.settings.max_backoff,
            max_delivery_attempts: self.settings.max_delivery_attempts,
        }
        .create(&self.broker_url())
        .await;
    }

    /// Publishes raw `data` to the reports topic through the broker's REST
    /// API, as a misbehaving publisher would; returns the message id.
    pub async fn publish_raw(&self, data: &[u8], attributes: serde_json::Value) -> String {
        let url = format!(
            "{}/v1/projects/{PROJECT}/topics/{TOPIC}:publish",
            self.broker_url()
        );
        let body = json!({"messages": [{"data": STANDARD.encode(data), "attributes": attributes}]});
        let response = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{response:?}");
        let answer: serde_json::Value = response.json().await.unwrap();
        answer["messageIds"][0].as_str().unwrap().to_string()
    }

    /// The sum of the samples of `metric` whose labels include `label`
    /// (e.g. `outcome="duplicate"`) on the part's `GET /metrics`.
    pub async fn metric(&self, part: Part, metric: &str, label: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.ports[part.name()]);
        crate::metrics::Samples::scrape(&url)
            .await
            .sum(metric, label)
    }

    /// Pulls (through REST) and acknowledges what the dead-letter
    /// subscription holds, until `n` messages arrived or `timeout` passed.
    pub async fn dead_letters(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let base = format!(
            "{}/v1/projects/{PROJECT}/subscriptions/{DEAD_LETTER_SUBSCRIPTION}",
            self.broker_url()
        );
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n && tokio::time::Instant::now() < deadline {
            // Pull waits (up to 10 s) for a message to arrive.
            let pulled = tokio::time::timeout_at(
                deadline,
                http.post(format!("{base}:pull"))
                    .json(&json!({"maxMessages": 10}))
                    .send(),
            )
            .await;
            let Ok(Ok(response)) = pulled else { break };
            let answer: serde_json::Value = response.json().await.unwrap();
            let received = answer["receivedMessages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if received.is_empty() {
                continue;
            }
            let ack_ids: Vec<_> = received.iter().map(|m| m["ackId"].clone()).collect();
            http.post(format!("{base}:acknowledge"))
                .json(&json!({"ackIds": ack_ids}))
                .send()
                .await
                .unwrap();
            got.extend(received.into_iter().map(|m| m["message"].clone()));
        }
        got
    }

    /// Pulls (through REST, without waiting) and acknowledges what the
    /// dead-letter subscription holds now, until a pull comes back empty.
    pub async fn dead_letters_now(&self) -> Vec<serde_json::Value> {
        let base = format!(
            "{}/v1/projects/{PROJECT}/subscriptions/{DEAD_LETTER_SUBSCRIPTION}",
            self.broker_url()
        );
        let http = reqwest::Client::new();
        let mut got = Vec::new();
        loop {
            let answer: serde_json::Value = http
                .post(format!("{base}:pull"))
                .json(&json!({"maxMessages": 100, "returnImmediately": true}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let received = answer["receivedMessages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if received.is_empty() {
                return got;
            }
            let ack_ids: Vec<_> = received.iter().map(|m| m["ackId"].clone()).collect();
            http.post(format!("{base}:acknowledge"))
                .json(&json!({"ackIds": ack_ids}))
                .send()
                .await
                .unwrap();
            got.extend(received.into_iter().map(|m| m["message"].clone()));
        }
    }

    /// What has arrived so far on both channels.
    pub fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        let maildir = self.smtp.maildir();
        let mut index = self.mail_index.lock().unwrap();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let (report, message_id, stored_ns) =
                    index.entry(path.clone()).or_insert_with(|| {
                        let mail = crate::smtp::ReceivedMail::read(&path).unwrap();
                        let stored_ns = path
                            .file_name()
                            .and_then(|n| n.to_str())
                            .and_then(|n| n.split('.').next())
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        (
                            mail.header("X-Report-Id").unwrap_or("?").to_string(),
                            mail.message_id().unwrap_or("?").to_string(),
                            stored_ns,
                        )
                    });
                tally.emails.entry(report.clone()).or_default().push(Email {
                    message_id: message_id.clone(),
                    stored_ns: *stored_ns,
                });
            }
        }
        for list in tally.emails.values_mut() {
            list.sort_by_key(|e| e.stored_ns);
        }
        for sms in self.twilio.messages() {
            let accepted_ns = sms
                .accepted_at
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            tally
                .sms
                .entry(report_for_phone(&sms.to))
                .or_default()
                .push(accepted_ns);
        }
        tally
    }

    /// Waits until every report in `accepted` arrived by email and by SMS
    /// and then nothing more happened on either channel for `quiet` (a
    /// redelivery that would duplicate something comes within a backoff or
    /// an ack deadline). Fails after `timeout`, naming what is missing.
    /// Returns the tally and when the last missing report arrived.
    pub async fn await_quiet(
        &self,
        accepted: &BTreeSet<String>,
        quiet: Duration,
        timeout: Duration,
    ) -> (Tally, Instant) {
        self.await_quiet_for(accepted, accepted, quiet, timeout)
            .await
    }

    /// As [`await_quiet`](Self::await_quiet), with the reports expected
    /// by email and by SMS told apart (a report parked on the dead-letter
    /// subscription is not expected on its channel).
    pub async fn await_quiet_for(
        &self,
        emails: &BTreeSet<String>,
        sms: &BTreeSet<String>,
        quiet: Duration,
        timeout: Duration,
    ) -> (Tally, Instant) {
        let missing = |tally: &Tally| {
            (
                emails
                    .iter()
                    .filter(|id| !tally.emails.contains_key(*id))
                    .count(),
                sms.iter().filter(|id| !tally.sms.contains_key(*id)).count(),
            )
        };
        let deadline = Instant::now() + timeout;
        let mut complete_at = None;
        loop {
            // Counted before looking, so that whatever happens after is
            // awaited below. The stand-in counts a request when it arrives
            // and the SMS when it answers: both are watched.
            let (events, requests, texts) = (
                self.smtp.events(),
                self.twilio.requests(),
                self.twilio.messages().len(),
            );
            // Reading the Maildir only once the counts can add up.
            if complete_at.is_none()
                && self.smtp.accepted_count() >= emails.len()
                && self.twilio.messages().len() >= sms.len()
                && missing(&self.tally()) == (0, 0)
            {
                complete_at = Some(Instant::now());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let tally = self.tally();
                // An SMTP session reused mid-transaction can fold one
                // message into another's body.
                let merged = self
                    .smtp
                    .messages()
                    .iter()
                    .filter(|m| m.raw.matches("X-Report-Id:").count() > 1)
                    .count();
                panic!(
                    "no quiet within {timeout:?}: lost (email, sms) = {:?}; missing emails {:?}, \
                     missing SMS {:?}; stored messages carrying more than one report: {merged}",
                    missing(&tally),
                    first(emails.iter().filter(|id| !tally.emails.contains_key(*id))),
                    first(sms.iter().filter(|id| !tally.sms.contains_key(*id))),
                );
            }
            let wait = if complete_at.is_some() {
                quiet.min(remaining)
            } else {
                // Only a bound on a wakeup missed by mistake.
                Duration::from_secs(5).min(remaining)
            };
            let activity = tokio::select! {
                happened = self.smtp.wait_for_event_after(events, wait) => happened,
                counted = self.twilio.wait_for_requests(requests + 1, wait) => counted.is_ok(),
                sent = self.twilio.wait_for_messages(texts + 1, wait) => sent.is_ok(),
            };
            if !activity && let Some(at) = complete_at {
                return (self.tally(), at);
            }
        }
    }
}

fn first<'a>(ids: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    ids.take(10).collect()
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // FAULT_LOGS=DIR keeps every process's log, for a look afterwards.
        if let Some(keep) = std::env::var_os("FAULT_LOGS") {
            let keep = Path::new(&keep).join(self.dir.path().file_name().unwrap());
            let _ = std::fs::create_dir_all(&keep);
            for part in LOGGED_PARTS {
                let log = format!("{part}.log");
                let _ = std::fs::copy(self.dir.path().join(&log), keep.join(&log));
            }
            eprintln!("logs kept in {}", keep.display());
        }
        if std::thread::panicking() {
            for part in LOGGED_PARTS {
                let log = self.dir.path().join(format!("{part}.log"));
                if !log.exists() {
                    continue;
                }
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<_> = text.lines().collect();
                eprintln!("--- last lines of the {part} log ---");
                for line in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Prints the scenario's one machine-readable line (docs/reliability.md's table
/// is made from these) and returns it.
pub fn summary(
    scenario: &str,
    posted: &Posted,
    tally: &Tally,
    recovery: Option<Duration>,
    wall: Duration,
    extra: serde_json::Value,
) -> serde_json::Value {
    let (email_dups, sms_dups) = tally.duplicates();
    let (lost_email, lost_sms) = tally.lost(&posted.accepted);
    let line = json!({
        "scenario": scenario,
        "posted": posted.posted,
        "answered_204": posted.accepted.len(),
        "refused": posted.refused,
        "emails_unique": tally.emails.len(),
        "emails_total": tally.emails_total(),
        "sms_unique": tally.sms.len(),
        "sms_total": tally.sms_total(),
        "duplicates_email": email_dups,
        "duplicates_sms": sms_dups,
        "lost_email": lost_email,
        "lost_sms": lost_sms,
        "recovery_secs": recovery.map(|r| (r.as_secs_f64() * 10.0).round() / 10.0),
        "wall_secs": (wall.as_secs_f64() * 10.0).round() / 10.0,
        "extra": extra,
    });
    println!("FAULT-SUMMARY {line}");
    line
}

/// Now, in ns since the epoch, comparable with [`Email::stored_ns`].
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Whether `unshare` may make a PID namespace here (it needs user
/// namespaces or root): it runs a process that must not see this one.
fn unshare_allowed() -> bool {
    std::process::Command::new("unshare")
        .args(UNSHARE)
        .args([
            "sh",
            "-c",
            &format!("test ! -e /proc/{}", std::process::id()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
