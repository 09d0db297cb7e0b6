//! `labrelay`: runs the system and its parts.
//!
//! Each subcommand parses its settings, sets up logging and hands over to a
//! library crate; nothing here knows how a part works.

/// jemalloc rather than glibc's malloc, in every process. Measured in
/// docs/benchmarks.md ("Changes tried", jemalloc): about 10% less CPU per report
/// end to end and about 15% more broker throughput, for 4–10 MiB more peak
/// memory per service at full speed and less for the broker with a backlog.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once when it starts (the environment variable
/// `_RJEM_MALLOC_CONF` overrides them). One background thread returns pages
/// left unused for about a second to the system, also in a process gone
/// quiet after a burst; the default ten seconds let a burst's garbage
/// raise a service's peak memory by half.
#[cfg(not(target_env = "msvc"))]
#[used]
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: Option<&std::ffi::c_char> = Some(
    // SAFETY: jemalloc reads this as a `const char *`, a NUL-terminated
    // string it never writes; the literal lives for the whole program.
    unsafe { &*c"background_thread:true,max_background_threads:1,dirty_decay_ms:1000".as_ptr() },
);

mod dead_letters;
mod suppressions;

use labrelay_contract::up_file::UpFile;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use labrelay::{post, up};
use labrelay_runtime::{shutdown, telemetry};

#[derive(Parser)]
#[command(
    name = "labrelay",
    version,
    about = "Veterinary lab results to pet owners, by email and SMS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system on this machine: broker and the three services.
    Up(UpArgs),
    /// Post lab reports to the lab-report-service, as a lab would.
    Post(PostArgs),
    /// Run the Pub/Sub-compatible broker alone (gRPC and REST on one port).
    Broker(BrokerArgs),
    /// List or replay what the broker parked on the dead-letter topic.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// List, add or remove recipients not to be notified (opted out, no
    /// such mailbox), in the notification log (NOTIFY_LOG, else `up`'s).
    #[command(subcommand)]
    Suppressions(SuppressionCommand),
    /// Run the lab-report-service alone, configured by environment (PORT, PUBSUB_EMULATOR_HOST, ...).
    LabReportService(ServiceArgs),
    /// Run the email-service alone, configured by environment (PORT, SMTP_URL, ...).
    EmailService(ServiceArgs),
    /// Run the sms-service alone, configured by environment (PORT, TWILIO_*, SMS_URL, ...).
    SmsService(ServiceArgs),
    /// Serve only Twilio's webhooks (receipts, STOP/START) for an sms-service
    /// Twilio cannot reach, configured by environment (PORT, PUBLIC_URL, NOTIFY_LOG, ...).
    SmsWebhooks(ServiceArgs),
}

#[derive(Args)]
struct UpArgs {
    /// Where the broker's store, the signing key and the outboxes live.
    #[arg(long, env = "LABRELAY_DATA_DIR", default_value = "./labrelay-data")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 8085)]
    broker_port: u16,
    #[arg(long, default_value_t = 8080)]
    lab_report_port: u16,
    #[arg(long, default_value_t = 8081)]
    email_port: u16,
    #[arg(long, default_value_t = 8082)]
    sms_port: u16,
    /// Host names every port answers besides loopback names and addresses
    /// (comma-separated; `.domain` for a domain and its subdomains; `*` for
    /// any). Requests naming another host get 403 (DNS rebinding).
    #[arg(long, env = "ALLOWED_HOSTS")]
    allowed_hosts: Option<String>,
    /// Push endpoints the broker may send to besides the services' own
    /// ports (`host`, `host:port`, comma-separated; `*` for any).
    #[arg(long, env = "ALLOWED_PUSH_ENDPOINTS")]
    allowed_push_endpoints: Option<String>,
}

#[derive(Args)]
struct PostArgs {
    /// The lab-report-service to post to; default: the running `up`'s
    /// (its `up.json` in the data directory), else http://127.0.0.1:8080/.
    #[arg(long, env = "LABRELAY_URL")]
    url: Option<String>,
    /// Post the seed's bare `{"id": N}` instead of a full sample report.
    #[arg(long)]
    bare: bool,
    /// Where `labrelay up` keeps its data; the API key is read from its
    /// `ingest-api-key` unless `--api-key` is given.
    #[arg(long, env = "LABRELAY_DATA_DIR", default_value = "./labrelay-data")]
    data_dir: PathBuf,
    /// The ingest API key to present (`Authorization: Bearer`).
    #[arg(long, env = "LABRELAY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Report ids to post.
    #[arg(required = true)]
    ids: Vec<String>,
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// Show each parked message: ids, source subscription, attempts, last error.
    List(DeadLetterArgs),
    /// Republish parked messages to their source topics (all, or those given with --id).
    Replay {
        #[command(flatten)]
        target: DeadLetterArgs,
        /// Message ids (as `list` shows them) to replay; default: all.
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SuppressionCommand {
    /// Show each suppression: channel, since when, the first 16 digits of
    /// its recipient's keyed hash, the reason (never the number or address).
    List(SuppressionArgs),
    /// Suppress a phone number (sms) or an email address (email).
    Add {
        #[command(flatten)]
        target: SuppressionArgs,
        /// `email` or `sms`.
        #[arg(value_parser = ["email", "sms"])]
        channel: String,
        /// An E.164 phone number, or an email address as the reports write it.
        recipient: String,
        /// The reason recorded, shown by `list`.
        #[arg(long, default_value = "operator")]
        reason: String,
    },
    /// Lift the suppression of a phone number or an email address.
    Remove {
        #[command(flatten)]
        target: SuppressionArgs,
        /// `email` or `sms`.
        #[arg(value_parser = ["email", "sms"])]
        channel: String,
        /// An E.164 phone number, or an email address as the reports write it.
        recipient: String,
    },
}

#[derive(Args)]
struct SuppressionArgs {
    /// Where `labrelay up` keeps its data: its two notification logs (when
    /// NOTIFY_LOG is not set) and its suppression key (when neither
    /// SUPPRESSION_KEY nor SUPPRESSION_KEY_FILE is set).
    #[arg(long, env = "LABRELAY_DATA_DIR", default_value = "./labrelay-data")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct DeadLetterArgs {
    /// The broker, host:port; default: the running `up`'s (its `up.json`
    /// in the data directory), else 127.0.0.1:8085.
    #[arg(long, env = "PUBSUB_EMULATOR_HOST")]
    broker: Option<String>,
    /// The project; default: PUBSUB_PROJECT_ID, GOOGLE_CLOUD_PROJECT, the
    /// running `up`'s, labrelay-local.
    #[arg(long)]
    project: Option<String>,
    /// Where `labrelay up` keeps its data (and its `up.json`).
    #[arg(long, env = "LABRELAY_DATA_DIR", default_value = "./labrelay-data")]
    data_dir: PathBuf,
}

impl DeadLetterArgs {
    fn target(self) -> dead_letters::Target {
        let running = UpFile::read(&self.data_dir).ok();
        let project = self.project.unwrap_or_else(|| {
            let from_env = std::env::var("PUBSUB_PROJECT_ID")
                .or_else(|_| std::env::var("GOOGLE_CLOUD_PROJECT"))
                .ok();
            from_env
                .or_else(|| running.as_ref().map(|up| up.project.clone()))
                .unwrap_or_else(up::project_id)
        });
        let broker = self.broker.unwrap_or_else(|| {
            running.map_or_else(|| "127.0.0.1:8085".to_string(), |up| up.broker.to_string())
        });
        dead_letters::Target { broker, project }
    }
}

#[derive(Args)]
struct ServiceArgs {
    /// Port to listen on (Cloud Run's contract; 0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on; defaults to 0.0.0.0 on Cloud Run (K_SERVICE set), else 127.0.0.1.
    #[arg(long, env = "HOST")]
    host: Option<std::net::IpAddr>,
}

#[derive(Args)]
struct BrokerArgs {
    /// Port to listen on (0 picks a free one; the address is printed).
    #[arg(long, env = "PORT", default_value_t = 8085)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Host names the broker answers besides loopback names and addresses
    /// (comma-separated; `.domain` for a domain and its subdomains; `*` for
    /// any). Requests naming another host get 403 (DNS rebinding). Beyond
    /// loopback (`--host 0.0.0.0`), the names clients use to reach it.
    #[arg(long, env = "ALLOWED_HOSTS")]
    allowed_hosts: Option<String>,
    /// Where push subscriptions may send requests: `host`, `host:port`,
    /// comma-separated, or `*` (the default) for anywhere.
    #[arg(long, env = "ALLOWED_PUSH_ENDPOINTS", default_value = "*")]
    allowed_push_endpoints: String,
    /// Where the broker keeps its store and signing key.
    #[arg(long, env = "LABRELAY_DATA_DIR", default_value = "./labrelay-data")]
    data_dir: PathBuf,
    /// The issuer (`iss`) of push tokens; defaults to http://HOST:PORT.
    #[arg(long, env = "LABRELAY_ISSUER")]
    issuer: Option<String>,
    /// The most pushes one subscription may have outstanding (slow start
    /// grows towards it); the default is what a labrelay push receiver admits.
    #[arg(long, default_value_t = labrelay_runtime::limits::DEFAULT_MAX_IN_FLIGHT as u32)]
    max_push_window: u32,
    /// Let the console at /console show message data (personal data); off by default.
    #[arg(long, env = "LABRELAY_CONSOLE_SHOW_DATA")]
    console_show_data: bool,
    /// MiB of unacknowledged message bodies kept in memory; the rest of a
    /// backlog stays on disk and is read ahead of delivery.
    #[arg(
        long,
        env = "LABRELAY_PAYLOAD_BUDGET_MIB",
        default_value_t = labrelay_broker::DEFAULT_PAYLOAD_BUDGET >> 20
    )]
    payload_budget_mib: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Up(args) => {
                let ports = up::Ports {
                    broker: args.broker_port,
                    lab_report: args.lab_report_port,
                    email: args.email_port,
                    sms: args.sms_port,
                };
                let access = up::Access {
                    allowed_hosts: args.allowed_hosts,
                    extra_push_endpoints: args.allowed_push_endpoints,
                };
                up::run(args.data_dir, ports, access, shutdown::signal()).await
            }
            Command::Post(args) => {
                let running = UpFile::read(&args.data_dir).ok();
                let url = args.url.unwrap_or_else(|| {
                    running.as_ref().map_or_else(
                        || "http://127.0.0.1:8080/".to_string(),
                        UpFile::lab_report_url,
                    )
                });
                let api_key = args.api_key.or_else(|| up::read_api_key(&args.data_dir));
                post::run(&url, &args.ids, args.bare, api_key.as_deref()).await
            }
            Command::Broker(args) => run_broker(args).await,
            Command::DeadLetters(DeadLetterCommand::List(args)) => {
                dead_letters::list(&args.target()).await
            }
            Command::DeadLetters(DeadLetterCommand::Replay { target, ids }) => {
                dead_letters::replay(&target.target(), &ids).await
            }
            Command::Suppressions(SuppressionCommand::List(args)) => {
                suppressions::list(&suppressions::Target::open(&args.data_dir)?).await
            }
            Command::Suppressions(SuppressionCommand::Add {
                target,
                channel,
                recipient,
                reason,
            }) => {
                let target = suppressions::Target::open(&target.data_dir)?;
                suppressions::add(&target, &channel, &recipient, &reason).await
            }
            Command::Suppressions(SuppressionCommand::Remove {
                target,
                channel,
                recipient,
            }) => {
                let target = suppressions::Target::open(&target.data_dir)?;
                suppressions::remove(&target, &channel, &recipient).await
            }
            Command::LabReportService(args) => {
                use labrelay_lab_report_service::{Listeners, MetricsAt};
                let settings = labrelay_lab_report_service::Settings::from_env()?;
                let service = bind_service(&args, "lab-report-service").await?;
                // The metrics port listens at the service's address: on
                // Cloud Run only the service's port is routed to, so the
                // Prometheus sidecar reaches it on localhost and the
                // internet does not.
                let metrics = match settings.metrics {
                    MetricsAt::Port(port) => {
                        let addr = SocketAddr::new(service.local_addr()?.ip(), port);
                        let listener = tokio::net::TcpListener::bind(addr)
                            .await
                            .with_context(|| format!("binding METRICS_PORT {addr}"))?;
                        let addr = listener.local_addr()?;
                        println!("lab-report-service metrics listening on {addr}");
                        Some(listener)
                    }
                    MetricsAt::ServicePort | MetricsAt::Nowhere => None,
                };
                labrelay_lab_report_service::run(
                    settings,
                    Listeners { service, metrics },
                    shutdown::signal(),
                )
                .await
            }
            Command::EmailService(args) => {
                let settings = labrelay_email_service::Settings::from_env()?;
                let listener = bind_service(&args, "email-service").await?;
                labrelay_email_service::run(settings, listener, shutdown::signal()).await
            }
            Command::SmsService(args) => {
                let settings = labrelay_sms_service::Settings::from_env()?;
                let listener = bind_service(&args, "sms-service").await?;
                labrelay_sms_service::run(settings, listener, shutdown::signal()).await
            }
            Command::SmsWebhooks(args) => {
                let settings = labrelay_sms_service::WebhookSettings::from_env()?;
                let listener = bind_service(&args, "sms-webhooks").await?;
                labrelay_sms_service::run_webhooks(settings, listener, shutdown::signal()).await
            }
        }
    })
}

/// Binds a service's port and announces it on stdout (scripts and tests read
/// the line to find a port chosen with `PORT=0`).
async fn bind_service(args: &ServiceArgs, name: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let on_cloud_run = labrelay_runtime::on_cloud_run_env();
    let host = args.host.unwrap_or(if on_cloud_run {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::LOCALHOST.into()
    });
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(host, args.port))
        .await
        .with_context(|| format!("binding {host}:{}", args.port))?;
    let addr = listener.local_addr()?;
    println!("{name} listening on {addr}");
    tracing::info!(%addr, service = name, "listening");
    Ok(listener)
}

async fn run_broker(args: BrokerArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let mut config = labrelay_broker::BrokerConfig::new(&args.data_dir, addr);
    if let Some(issuer) = args.issuer {
        config.issuer = issuer;
    }
    config.max_push_window = args.max_push_window;
    config.console_show_data = args.console_show_data;
    config.payload_budget = args.payload_budget_mib.saturating_mul(1 << 20);
    if let Some(hosts) = &args.allowed_hosts {
        config.allowed_hosts = labrelay_runtime::origin_guard::AllowedHosts::parse(hosts)?;
    }
    config.push_endpoints = labrelay_broker::PushEndpoints::parse(&args.allowed_push_endpoints)?;
    let broker = labrelay_broker::Broker::open(config)?;
    // Scripts and tests read this line to find the port.
    println!(
        "broker listening on {addr} (data in {})",
        args.data_dir.display()
    );
    tracing::info!(%addr, "broker listening");
    broker.serve(listener, shutdown::signal()).await
}
