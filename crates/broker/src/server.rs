//! The broker as a server: [`Broker::open`] assembles the engine with its
//! observers and push delivery, [`Broker::router`] puts its transports on
//! one router (gRPC and REST, the OIDC discovery documents, the console,
//! `/metrics`), and [`Broker::serve`] serves it on a bound listener until
//! shutdown.

use std::ops::Deref;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::BrokerConfig;
use crate::engine::{Engine, EngineSettings};
use crate::observe::Observers;
use crate::oidc::OidcSigner;
use crate::push::Pusher;

/// A running broker: the [`Engine`] with its API, console, metrics and push
/// delivery. It dereferences to its engine, whose methods are the broker's
/// data plane and administration in-process. Cheap to clone; every clone is
/// the same broker.
#[derive(Clone)]
pub struct Broker {
    engine: Engine,
    parts: Arc<Parts>,
}

/// What the transports need beside the engine.
struct Parts {
    config: BrokerConfig,
    observers: Arc<Observers>,
    signer: Arc<OidcSigner>,
}

impl Deref for Broker {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}

impl Broker {
    /// Opens the store in `config.data_dir`, restores every topic,
    /// subscription and unacknowledged message, and starts delivering.
    /// Must be called inside a Tokio runtime.
    pub fn open(config: BrokerConfig) -> anyhow::Result<Broker> {
        labrelay_runtime::private_fs::private_dir(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let signer = Arc::new(OidcSigner::load_or_create(
            &config.data_dir,
            config.issuer.clone(),
        )?);
        let settings = EngineSettings {
            store: config.data_dir.join("broker.sqlite3"),
            payload_budget: config.payload_budget,
        };
        let push = Pusher::new(
            signer.clone(),
            config.push_endpoints.clone(),
            config.max_push_window,
        )?;
        let observers = Arc::new(Observers::open(&config)?);
        let (engine, restored) = Engine::open(settings, observers.clone(), Arc::new(push))?;
        tracing::info!(
            issuer = signer.issuer(),
            topics = restored.topics,
            subscriptions = restored.subscriptions,
            unacked = restored.unacked,
            "store opened"
        );
        Ok(Broker {
            engine,
            parts: Arc::new(Parts {
                config,
                observers,
                signer,
            }),
        })
    }

    /// The router serving this broker: gRPC, REST, the OIDC discovery
    /// documents, the console, `/metrics` and `GET /`.
    pub fn router(&self) -> axum::Router {
        let parts = &self.parts;
        crate::api::router(self.engine.clone())
            .merge(crate::oidc::routes(parts.signer.clone()))
            .merge(crate::console::router(
                self.engine.clone(),
                parts.observers.clone(),
            ))
            .merge(crate::observe::metrics::router(
                &parts.observers.metrics,
                &self.engine,
            ))
    }

    /// Serves on `listener` until `shutdown` completes, then stops
    /// delivering and closes the store after its last commit.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = self.shutdown().clone();
        let app = self.router();
        let config = &self.parts.config;
        let hosts = config.allowed_hosts.clone();
        if let Ok(addr) = listener.local_addr()
            && !addr.ip().is_loopback()
        {
            tracing::warn!(
                %addr,
                allowed_hosts = %hosts,
                push_endpoints = %config.push_endpoints,
                "the broker's API has no authentication and listens beyond loopback: \
                 whoever reaches this port can publish, read messages, change \
                 subscriptions and make the broker send push requests; restrict who \
                 can reach it (firewall, container network) and where it pushes \
                 (--allowed-push-endpoints)"
            );
        }
        // The shared server: TCP_NODELAY (without it Nagle holds back the last
        // small frame of a response, gRPC's trailers, until the peer's delayed
        // ACK), and connections that say nothing are closed.
        let result = labrelay_runtime::serve::serve(listener, app, hosts, async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stop.cancelled() => {}
            }
        })
        .await
        .context("serving");
        self.close().await;
        result
    }
}
