//! `labrelay`: runs the system and its parts.
//!
//! Each subcommand parses its settings, sets up logging and hands over to a
//! library crate; nothing here knows how a part works.

mod shutdown;
mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "labrelay", version, about = "Veterinary lab results to pet owners, by email and SMS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Pub/Sub-compatible broker alone (gRPC and REST on one port).
    Broker(BrokerArgs),
}

#[derive(Args)]
struct BrokerArgs {
    /// Port to listen on (0 picks a free one; the address is printed).
    #[arg(long, env = "PORT", default_value_t = 8085)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Where the broker keeps its store and signing key.
    #[arg(long, env = "LABRELAY_DATA_DIR", default_value = "./labrelay-data")]
    data_dir: PathBuf,
    /// The issuer (`iss`) of push tokens; defaults to http://HOST:PORT.
    #[arg(long, env = "LABRELAY_ISSUER")]
    issuer: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Broker(args) => run_broker(args).await,
        }
    })
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
    let broker = labrelay_broker::Broker::open(config)?;
    // Scripts and tests read this line to find the port.
    println!("broker listening on {addr} (data in {})", args.data_dir.display());
    tracing::info!(%addr, "broker listening");
    broker.serve(listener, shutdown::signal()).await
}
