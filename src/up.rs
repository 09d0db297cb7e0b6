//! `labrelay up`: the whole system on one machine: the broker and the three
//! services in one process, wired as on Cloud Run, with email and SMS going to
//! outboxes under the data directory unless real providers are configured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use labrelay_broker::{Broker, BrokerConfig, BrokerError, PushEndpoints, pb};
use labrelay_contract::up_file::UpFile;
use labrelay_lab_report_service::ingest_auth::{IngestAuth, hash_key};
use labrelay_runtime::origin_guard::{ALLOWED_HOSTS, AllowedHosts};
use labrelay_runtime::private_fs;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const TOPIC: &str = "new-lab-report";
pub const DEAD_LETTER_TOPIC: &str = "new-lab-report-dead-letter";
/// Keeps what reaches the dead-letter topic: Pub/Sub drops messages
/// published to a topic without subscriptions.
pub const DEAD_LETTER_SUBSCRIPTION: &str = "new-lab-report-dead-letter-sub";
/// Where the sms-service publishes the delivery receipts it records
/// (`RECEIPTS_TOPIC`). It has no subscription: the broker journals what is
/// published there under the report's id, which is all the console needs.
pub const RECEIPTS_TOPIC: &str = "lab-report-receipts";

/// Who may talk to the system's ports, and where the broker may push.
#[derive(Default)]
pub struct Access {
    /// `ALLOWED_HOSTS` for every port (the broker's and the services').
    pub allowed_hosts: Option<String>,
    /// Push endpoints allowed besides the services' own addresses.
    pub extra_push_endpoints: Option<String>,
}

pub struct Ports {
    pub broker: u16,
    pub lab_report: u16,
    pub email: u16,
    pub sms: u16,
}

/// The project id, as every local command finds it.
pub fn project_id() -> String {
    std::env::var("PUBSUB_PROJECT_ID")
        .or_else(|_| std::env::var("GOOGLE_CLOUD_PROJECT"))
        .unwrap_or_else(|_| "labrelay-local".to_string())
}

async fn bind(port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("binding 127.0.0.1:{port} for the {what} (is another labrelay running?)")
        })
}

pub fn file_url(dir: &Path) -> anyhow::Result<String> {
    private_fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    Ok(format!("file://{}", dir.display()))
}

/// `NOTIFY_LOG` for the service whose own directory under the data dir is
/// `dir`: `sqlite://<dir>/notifications.sqlite3`.
fn notify_log_url(dir: &Path) -> anyhow::Result<String> {
    private_fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    Ok(format!(
        "sqlite://{}",
        dir.join("notifications.sqlite3").display()
    ))
}

/// Reads the process environment, with `defaults` for what it does not set
/// and `fixed` for what this run decides whatever the environment says.
fn env_with(
    defaults: Vec<(&'static str, String)>,
    fixed: Vec<(&'static str, String)>,
) -> impl Fn(&str) -> Option<String> {
    let find = |list: &[(&'static str, String)], key: &str| {
        list.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    };
    move |key| {
        find(&fixed, key)
            .or_else(|| std::env::var(key).ok())
            .or_else(|| find(&defaults, key))
    }
}

/// The push-token settings of the receiver at `addr`: tokens minted by this
/// run's broker for the subscription's service account and audience.
/// `PUSH_AUTH=off` in the environment still turns the check off.
fn push_auth_vars(
    project: &str,
    broker_issuer: &str,
    broker: SocketAddr,
    addr: SocketAddr,
) -> Vec<(&'static str, String)> {
    vec![
        ("PUSH_AUDIENCE", push_endpoint(addr)),
        ("PUSH_ALLOWED_SERVICE_ACCOUNTS", invoker(project)),
        ("PUSH_TOKEN_ISSUERS", broker_issuer.to_string()),
        (
            "PUSH_JWKS_URL",
            format!("http://{broker}/.well-known/jwks.json"),
        ),
    ]
}

fn push_endpoint(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

pub fn invoker(project: &str) -> String {
    format!("pubsub-cloud-run-invoker@{project}.iam.gserviceaccount.com")
}

/// The lab name `up`'s own key is configured under.
pub const LOCAL_LAB: &str = "local-lab";
/// The file in the data directory holding `up`'s ingest API key.
pub const API_KEY_FILE: &str = "ingest-api-key";

/// Reads `<data_dir>/ingest-api-key`, or creates it with a new random key
/// (32 bytes, hex, mode 0600), as every key `up` keeps.
pub fn load_or_create_api_key(data_dir: &Path) -> anyhow::Result<String> {
    load_or_create_key(&data_dir.join(API_KEY_FILE))
}

/// Reads the key file at `path`, or creates it with a new random key
/// (32 bytes, hex) as the broker creates its signing key: mode 0600,
/// through a temporary file and a rename, never through a symlink. An
/// existing key file that is a symlink is refused; one with group or
/// other permissions is tightened.
fn load_or_create_key(path: &Path) -> anyhow::Result<String> {
    let existing =
        private_fs::read_private(path).with_context(|| format!("reading {}", path.display()))?;
    if let Some(key) = existing {
        let key = String::from_utf8_lossy(&key).trim().to_string();
        if !key.is_empty() {
            return Ok(key);
        }
    }
    let key = hex::encode(rand::random::<[u8; 32]>());
    private_fs::write_atomic(path, format!("{key}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

/// The file in the data directory holding the key `up`'s push services
/// hash suppressed recipients with.
pub const SUPPRESSION_KEY_FILE: &str = "suppression-key";

/// Where `up`'s push services, and `labrelay suppressions` on its data,
/// find the suppression key: `<data_dir>/suppression-key`, unless the
/// operator set `SUPPRESSION_KEY` or `SUPPRESSION_KEY_FILE` (say, for a
/// `NOTIFY_LOG` shared with services elsewhere, which must hash with their
/// key): then that, and `None`. `get` reads the environment.
pub fn suppression_key_file(
    data_dir: &Path,
    get: impl Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    let set = |name: &str| get(name).is_some_and(|value| !value.trim().is_empty());
    (!set("SUPPRESSION_KEY") && !set("SUPPRESSION_KEY_FILE"))
        .then(|| data_dir.join(SUPPRESSION_KEY_FILE))
}

/// `SUPPRESSION_KEY_FILE` for both push services: `up`'s own key file
/// (created on the first run and kept, since a new key forgets every
/// suppression), unless the operator set a key of their own.
fn suppression_key_vars(data_dir: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    let Some(path) = suppression_key_file(data_dir, |name| std::env::var(name).ok()) else {
        return Ok(Vec::new());
    };
    load_or_create_key(&path)?;
    let path = std::path::absolute(&path).context("resolving the data directory")?;
    Ok(vec![("SUPPRESSION_KEY_FILE", path.display().to_string())])
}

/// The key `labrelay post` presents: `<data_dir>/ingest-api-key`, if `up`
/// created one there.
pub fn read_api_key(data_dir: &Path) -> Option<String> {
    let key = std::fs::read_to_string(data_dir.join(API_KEY_FILE)).ok()?;
    Some(key.trim().to_string()).filter(|k| !k.is_empty())
}

fn ignore_exists<T>(result: Result<T, BrokerError>) -> anyhow::Result<()> {
    match result {
        Ok(_) | Err(BrokerError::AlreadyExists(_)) => Ok(()),
        Err(error) => Err(anyhow::anyhow!("{error}")),
    }
}

/// Creates the topics and subscriptions the system needs. Existing ones keep
/// their backlog (a second `up` on the same data resumes); the push
/// subscriptions are brought to this run's service addresses and pacing.
pub async fn ensure_topology(
    broker: &Broker,
    project: &str,
    email: SocketAddr,
    sms: SocketAddr,
) -> anyhow::Result<()> {
    for name in [
        topic_name(project, TOPIC),
        topic_name(project, DEAD_LETTER_TOPIC),
        topic_name(project, RECEIPTS_TOPIC),
    ] {
        ignore_exists(
            broker
                .create_topic(pb::Topic {
                    name,
                    ..Default::default()
                })
                .await,
        )?;
    }
    ignore_exists(
        broker
            .create_subscription(dead_letter_subscription(project))
            .await,
    )?;
    for (id, addr) in [("email-service-sub", email), ("sms-service-sub", sms)] {
        let subscription = push_subscription(project, id, &push_endpoint(addr));
        match broker.create_subscription(subscription.clone()).await {
            Ok(_) => {}
            Err(BrokerError::AlreadyExists(_)) => {
                // A data directory from an earlier run (or version) keeps
                // its backlog and gets this run's endpoint and pacing.
                let mask = [
                    "push_config",
                    "ack_deadline_seconds",
                    "retry_policy",
                    "dead_letter_policy",
                ]
                .map(String::from);
                broker
                    .update_subscription(subscription, &mask)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            Err(error) => return Err(anyhow::anyhow!("{error}")),
        }
    }
    Ok(())
}

fn topic_name(project: &str, topic: &str) -> String {
    format!("projects/{project}/topics/{topic}")
}

/// The pull subscription that keeps what the push subscriptions park.
pub fn dead_letter_subscription(project: &str) -> pb::Subscription {
    pb::Subscription {
        name: format!("projects/{project}/subscriptions/{DEAD_LETTER_SUBSCRIPTION}"),
        topic: topic_name(project, DEAD_LETTER_TOPIC),
        ..Default::default()
    }
}

/// How `up`'s push subscriptions retry a failing channel: redelivered
/// after [`MIN_BACKOFF`], doubling to [`MAX_BACKOFF`], for
/// [`MAX_DELIVERY_ATTEMPTS`] attempts before the dead-letter policy parks
/// the message. That is [`outage_budget`] (about 94 minutes; at least 70
/// with the broker's jitter, which takes up to a quarter off each delay) of
/// a channel being down without a report being parked, and once it is
/// back a waiting notification goes out within [`MAX_BACKOFF`].
///
/// A message no delivery can ever send (a refused address, a message that
/// is not a report) does not wait that long: the receivers park it on the
/// dead-letter topic themselves, on its first delivery (see
/// `labrelay_receiver::dead_letter`).
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// See [`MIN_BACKOFF`].
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// See [`MIN_BACKOFF`]: Pub/Sub's largest limit.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 100;

/// How long a channel can be down before a report's notification is
/// parked: the sum of the delays between [`MAX_DELIVERY_ATTEMPTS`]
/// deliveries, each [`MIN_BACKOFF`] doubled per failure up to
/// [`MAX_BACKOFF`], as Pub/Sub's exponential backoff spaces them.
pub fn outage_budget() -> Duration {
    (1..MAX_DELIVERY_ATTEMPTS)
        .map(|failures| {
            MIN_BACKOFF
                .saturating_mul(1 << (failures - 1).min(30))
                .min(MAX_BACKOFF)
        })
        .sum()
}

/// The push subscription `id` of the reports topic, delivering to
/// `endpoint` with an OIDC token, as `up` paces it (see [`MIN_BACKOFF`]).
pub fn push_subscription(project: &str, id: &str, endpoint: &str) -> pb::Subscription {
    let duration = |d: Duration| {
        Some(prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: 0,
        })
    };
    pb::Subscription {
        name: format!("projects/{project}/subscriptions/{id}"),
        topic: topic_name(project, TOPIC),
        ack_deadline_seconds: 30,
        push_config: Some(pb::PushConfig {
            push_endpoint: endpoint.to_string(),
            authentication_method: Some(pb::push_config::AuthenticationMethod::OidcToken(
                pb::push_config::OidcToken {
                    service_account_email: invoker(project),
                    audience: endpoint.to_string(),
                },
            )),
            ..Default::default()
        }),
        retry_policy: Some(pb::RetryPolicy {
            minimum_backoff: duration(MIN_BACKOFF),
            maximum_backoff: duration(MAX_BACKOFF),
        }),
        dead_letter_policy: Some(pb::DeadLetterPolicy {
            dead_letter_topic: topic_name(project, DEAD_LETTER_TOPIC),
            max_delivery_attempts: MAX_DELIVERY_ATTEMPTS as i32,
        }),
        ..Default::default()
    }
}

/// What both receivers need to park what they can never send: this run's
/// broker and dead-letter topic, whatever the environment says.
fn dead_letter_vars(project: &str, broker: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("DEAD_LETTER_TOPIC", topic_name(project, DEAD_LETTER_TOPIC)),
        ("PUBSUB_EMULATOR_HOST", broker.to_string()),
    ]
}

/// What `up` keeps in the data directory, besides the directory itself.
const DATA_DIR_ENTRIES: [&str; 6] = [
    "broker",
    "email-service",
    "sms-service",
    "outbox",
    API_KEY_FILE,
    SUPPRESSION_KEY_FILE,
];

/// Creates the data directory (0700), or tightens it and what `up` keeps
/// in it (directories 0700, files 0600), logging each change: it holds
/// reports, addresses, phone numbers and keys. Only `up`'s own entries are
/// walked, so a data directory that holds other things (`--data-dir ~`)
/// keeps their modes.
fn private_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    private_fs::private_dir(data_dir)
        .with_context(|| format!("making the data directory {} private", data_dir.display()))?;
    for entry in DATA_DIR_ENTRIES {
        let path = data_dir.join(entry);
        private_fs::tighten_tree(&path)
            .with_context(|| format!("making {} private", path.display()))?;
    }
    // Created here, 0700, before the broker would create it with the
    // umask's mode.
    let broker = data_dir.join("broker");
    private_fs::create_dir_all(&broker).with_context(|| format!("creating {}", broker.display()))
}

/// Runs everything until `shutdown` completes.
pub async fn run(
    data_dir: PathBuf,
    ports: Ports,
    access: Access,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    private_data_dir(&data_dir)?;
    let project = project_id();
    let broker_listener = bind(ports.broker, "broker").await?;
    let lab_listener = bind(ports.lab_report, "lab-report-service").await?;
    let email_listener = bind(ports.email, "email-service").await?;
    let sms_listener = bind(ports.sms, "sms-service").await?;
    let broker_addr = broker_listener.local_addr()?;
    let lab_addr = lab_listener.local_addr()?;
    let email_addr = email_listener.local_addr()?;
    let sms_addr = sms_listener.local_addr()?;

    let mut broker_config = BrokerConfig::new(data_dir.join("broker"), broker_addr);
    if let Some(hosts) = &access.allowed_hosts {
        broker_config.allowed_hosts = AllowedHosts::parse(hosts)?;
    }
    // The broker pushes to this run's services and, if the operator says
    // so, elsewhere: a subscription made through its API cannot turn it
    // against other addresses.
    broker_config.push_endpoints = PushEndpoints::only([email_addr, sms_addr]);
    if let Some(extra) = &access.extra_push_endpoints {
        broker_config
            .push_endpoints
            .extend(PushEndpoints::parse(extra)?);
    }
    let issuer = broker_config.issuer.clone();
    let broker = Broker::open(broker_config)?;
    ensure_topology(&broker, &project, email_addr, sms_addr).await?;

    let api_key = load_or_create_api_key(&data_dir)?;
    let suppression_key = suppression_key_vars(&data_dir)?;
    let email_outbox = data_dir.join("outbox").join("email");
    let sms_outbox = data_dir.join("outbox").join("sms");
    let mut lab_defaults = vec![
        ("PUBSUB_EMULATOR_HOST", broker_addr.to_string()),
        ("PUBSUB_PROJECT_ID", project.clone()),
    ];
    // The rate limit guards a public ingest; `up`'s listens on loopback for
    // the operator's own lab, whose tools (the bench, the fault suite) post
    // thousands of reports a second. INGEST_RATE_LIMIT or INGEST_RATE_BURST
    // in the environment still sets one.
    if std::env::var_os("INGEST_RATE_BURST").is_none() {
        lab_defaults.push(("INGEST_RATE_LIMIT", "off".to_string()));
    }
    // INGEST_OPEN=true in the environment runs the ingest open, as it says.
    if std::env::var_os("INGEST_OPEN").is_none() {
        let entry = format!("{LOCAL_LAB}:{}", hash_key(&api_key));
        lab_defaults.push(("INGEST_API_KEYS", entry));
    }
    let hosts_var: Vec<(&'static str, String)> = access
        .allowed_hosts
        .iter()
        .map(|hosts| (ALLOWED_HOSTS, hosts.clone()))
        .collect();
    let mut lab_settings = labrelay_lab_report_service::Settings::from_vars(env_with(
        lab_defaults,
        hosts_var.clone(),
    ))?;
    // Each service answers /metrics on its own port under `up`, which
    // listens on loopback only.
    lab_settings.metrics = labrelay_lab_report_service::MetricsAt::ServicePort;
    // Keys from the environment come in addition to `up`'s own.
    if let IngestAuth::Keys(keys) = &lab_settings.ingest_auth
        && !keys.labs().any(|lab| lab == LOCAL_LAB)
    {
        lab_settings.ingest_auth = IngestAuth::Keys(keys.clone().with_key(LOCAL_LAB, &api_key));
    }
    let email_settings = labrelay_email_service::Settings::from_vars(env_with(
        vec![
            ("SMTP_URL", file_url(&email_outbox)?),
            (
                "NOTIFY_LOG",
                notify_log_url(&data_dir.join("email-service"))?,
            ),
        ],
        [
            push_auth_vars(&project, &issuer, broker_addr, email_addr),
            dead_letter_vars(&project, broker_addr),
            suppression_key.clone(),
            hosts_var.clone(),
        ]
        .concat(),
    ))?;
    let twilio = std::env::var_os("TWILIO_ACCOUNT_SID").is_some();
    let mut sms_defaults = vec![("NOTIFY_LOG", notify_log_url(&data_dir.join("sms-service"))?)];
    if !twilio {
        sms_defaults.push(("SMS_URL", file_url(&sms_outbox)?));
    }
    // Twilio's receipts come back to PUBLIC_URL. Only a stand-in on this
    // machine (TWILIO_API_BASE set) can reach the sms-service's loopback
    // address; real Twilio needs a public URL the operator sets.
    if twilio && std::env::var_os("TWILIO_API_BASE").is_some() {
        sms_defaults.push(("PUBLIC_URL", format!("http://{sms_addr}")));
    }
    let sms_settings = labrelay_sms_service::Settings::from_vars(env_with(
        sms_defaults,
        [
            push_auth_vars(&project, &issuer, broker_addr, sms_addr),
            dead_letter_vars(&project, broker_addr),
            vec![("RECEIPTS_TOPIC", topic_name(&project, RECEIPTS_TOPIC))],
            suppression_key,
            hosts_var,
        ]
        .concat(),
    ))?;

    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        broker
            .clone()
            .serve(broker_listener, stop.clone().cancelled_owned()),
    );
    tasks.spawn(labrelay_lab_report_service::run(
        lab_settings,
        lab_listener,
        stop.clone().cancelled_owned(),
    ));
    tasks.spawn(labrelay_email_service::run(
        email_settings,
        email_listener,
        stop.clone().cancelled_owned(),
    ));
    tasks.spawn(labrelay_sms_service::run(
        sms_settings,
        sms_listener,
        stop.clone().cancelled_owned(),
    ));

    let email_target = std::env::var("SMTP_URL")
        .map(|_| "the SMTP server in SMTP_URL".to_string())
        .unwrap_or_else(|_| format!("outbox {}", email_outbox.display()));
    let sms_target = if twilio {
        "Twilio".to_string()
    } else {
        format!("outbox {}", sms_outbox.display())
    };
    println!(
        "labrelay is up (project {project}, data in {})",
        data_dir.display()
    );
    println!("  broker              http://{broker_addr}   PUBSUB_EMULATOR_HOST={broker_addr}");
    println!(
        "  console             http://{broker_addr}/console   metrics: http://{broker_addr}/metrics"
    );
    println!(
        "  lab-report-service  http://{lab_addr}/   POST lab reports here: labrelay post 12 34 56"
    );
    // The key itself stays in its file (mode 0600), out of terminals and
    // captured logs; `labrelay post` reads it from there.
    println!(
        "                      API key (lab {LOCAL_LAB}): in {}, which `labrelay post` reads",
        data_dir.join(API_KEY_FILE).display()
    );
    println!("  email-service       http://{email_addr}/   sends to {email_target}");
    println!("  sms-service         http://{sms_addr}/   sends to {sms_target}");
    println!("Ctrl-C stops it; a later `labrelay up` on the same data resumes.");

    // Written once every part listens: readers that find it can connect.
    let up_file_path = UpFile::path(&data_dir);
    let up_file = UpFile {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        project: project.clone(),
        broker: broker_addr,
        lab_report_service: lab_addr,
        email_service: email_addr,
        sms_service: sms_addr,
        api_key_file: std::path::absolute(data_dir.join(API_KEY_FILE))
            .context("resolving the data directory")?,
    };
    private_fs::write_atomic(&up_file_path, &up_file.to_json())
        .with_context(|| format!("writing {}", up_file_path.display()))?;

    let mut result = Ok(());
    tokio::select! {
        _ = shutdown => {}
        Some(done) = tasks.join_next() => {
            result = done.context("a component panicked").and_then(|r| r).context("a component stopped");
        }
    }
    stop.cancel();
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = done.context("a component panicked").and_then(|r| r)
            && result.is_ok()
        {
            result = Err(error);
        }
    }
    // Nothing listens any more; a file left by a killed process names a
    // pid that is gone.
    if let Err(error) = std::fs::remove_file(&up_file_path) {
        tracing::warn!(path = %up_file_path.display(), %error, "could not remove the up file");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_of_an_hour_parks_nothing() {
        // 1 + 2 + ... + 32 s, then 93 delays of 60 s.
        assert_eq!(outage_budget(), Duration::from_secs(63 + 93 * 60));
        // With the broker's jitter, each delay is at least three quarters.
        assert!(outage_budget().mul_f64(0.75) > Duration::from_secs(3600));
    }

    /// A data directory from an earlier run keeps its subscriptions (and
    /// their backlog) and gets this run's endpoints and pacing.
    #[tokio::test]
    async fn an_existing_topology_is_brought_to_this_runs_settings() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig::new(
            dir.path(),
            "127.0.0.1:1".parse().unwrap(),
        ))
        .unwrap();
        let project = "labrelay-local";
        let old: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let new: SocketAddr = "127.0.0.1:9002".parse().unwrap();
        ensure_topology(&broker, project, old, old).await.unwrap();
        let name = format!("projects/{project}/subscriptions/email-service-sub");
        let mut earlier = broker.get_subscription(&name).unwrap();
        earlier
            .dead_letter_policy
            .as_mut()
            .unwrap()
            .max_delivery_attempts = 7;
        earlier.ack_deadline_seconds = 20;
        broker
            .update_subscription(
                earlier,
                &["dead_letter_policy".into(), "ack_deadline_seconds".into()],
            )
            .await
            .unwrap();

        ensure_topology(&broker, project, new, new).await.unwrap();
        let now = broker.get_subscription(&name).unwrap();
        let wanted = push_subscription(project, "email-service-sub", &push_endpoint(new));
        assert_eq!(now.push_config, wanted.push_config);
        assert_eq!(now.ack_deadline_seconds, wanted.ack_deadline_seconds);
        assert_eq!(now.dead_letter_policy, wanted.dead_letter_policy);
        assert_eq!(now.retry_policy, wanted.retry_policy);
        broker.close().await;
    }
}
