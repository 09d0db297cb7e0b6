//! The engine: topics, subscriptions, publish, leases, dead-letter
//! forwarding and timers; the broker without its transports. It serves
//! `google.pubsub.v1`'s semantics through the methods of [`Engine`], which
//! the API (`api`), the console and in-process callers call. It imports no
//! transport and no observer: what it needs of them it asks through the
//! traits of [`hooks`], implemented by `observe` and `push`.
//!
//! Locks are per resource: the topic and subscription maps are read-mostly,
//! each subscription's backlog has its own mutex, and administrative changes
//! (create, update, delete) are serialized among themselves by one async
//! mutex so that the store and memory never disagree. Publishing and
//! delivering never take the administrative lock.
//!
//! - `admin`: creating, updating, listing and deleting topics and
//!   subscriptions.
//! - `messages`: publish, pull, acknowledge, deadlines.
//! - `settle`: failed deliveries: attempts persisted, dead letters
//!   forwarded.
//! - `timer`: each subscription's timer (leases, retry delays, retention).
//! - [`hooks`]: the observer and push delivery the engine calls.
//! - [`subscription`]: one subscription's backlog, leases and ack ids.
//! - [`payloads`]: message records, bodies within a budget, read-ahead.
//! - [`store`]: SQLite persistence; one writer thread commits in groups.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock, Weak};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod admin;
pub(crate) mod hooks;
mod messages;
pub(crate) mod payloads;
mod settle;
pub(crate) mod store;
pub(crate) mod subscription;
mod timer;

#[cfg(test)]
mod tests;

use crate::error::{BrokerError, Result};
use crate::names::{SubscriptionName, TopicName};
use crate::pb;
use hooks::{Observer, PushDelivery};
use payloads::{Payloads, Stored};
use store::{Store, StoreThread};
use subscription::Subscription;

pub(crate) use messages::received;

/// Where the engine keeps its data, and how much of it in memory.
#[derive(Debug, Clone)]
pub(crate) struct EngineSettings {
    /// The store's SQLite file.
    pub store: PathBuf,
    /// Bytes of unacknowledged message bodies kept in memory.
    pub payload_budget: usize,
}

/// What [`Engine::open`] found in the store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Restored {
    pub topics: usize,
    pub subscriptions: usize,
    pub unacked: usize,
}

pub(crate) struct Topic {
    config: RwLock<pb::Topic>,
    subscriptions: RwLock<Vec<Arc<Subscription>>>,
}

/// The broker's topics and subscriptions and the work that keeps messages
/// moving: `google.pubsub.v1`'s semantics, without a transport. A
/// [`Broker`](crate::Broker) is an engine with its API, console, metrics and
/// push delivery; it dereferences to its engine. Cheap to clone; every
/// clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// An [`Engine`] that does not keep it open (the metrics collector's).
#[derive(Clone)]
pub(crate) struct WeakEngine(Weak<Inner>);

impl WeakEngine {
    pub(crate) fn upgrade(&self) -> Option<Engine> {
        self.0.upgrade().map(|inner| Engine { inner })
    }
}

struct Inner {
    store: Store,
    store_thread: Mutex<Option<StoreThread>>,
    /// Message bodies in memory within the budget, and the reader of the
    /// others.
    payloads: Arc<Payloads>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    subscriptions: RwLock<BTreeMap<String, Arc<Subscription>>>,
    admin: tokio::sync::Mutex<()>,
    next_seq: AtomicU64,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Told what happens to messages (stats, metrics, the journal).
    observer: Arc<dyn Observer>,
    /// Pushes the messages of push subscriptions.
    push: Arc<dyn PushDelivery>,
}

fn decode<M: prost::Message + Default>(bytes: &[u8], what: &str) -> anyhow::Result<M> {
    M::decode(bytes).with_context(|| format!("decoding a stored {what}"))
}

impl Engine {
    /// Opens the store, restores every topic, subscription and
    /// unacknowledged message, and starts delivering. Must be called inside
    /// a Tokio runtime.
    pub(crate) fn open(
        settings: EngineSettings,
        observer: Arc<dyn Observer>,
        push: Arc<dyn PushDelivery>,
    ) -> anyhow::Result<(Engine, Restored)> {
        let (store, store_thread, snapshot) = Store::open(&settings.store)?;
        let payloads = Payloads::open(&settings.store, settings.payload_budget)?;
        let inner = Arc::new(Inner {
            store,
            store_thread: Mutex::new(Some(store_thread)),
            payloads,
            topics: RwLock::default(),
            subscriptions: RwLock::default(),
            admin: tokio::sync::Mutex::new(()),
            next_seq: AtomicU64::new(snapshot.next_seq),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            observer,
            push,
        });
        let engine = Engine { inner };
        let restored = engine.restore(snapshot)?;
        Ok((engine, restored))
    }

    fn restore(&self, snapshot: store::Snapshot) -> anyhow::Result<Restored> {
        for bytes in &snapshot.topics {
            let topic: pb::Topic = decode(bytes, "topic")?;
            let name = TopicName::parse(&topic.name).map_err(|e| anyhow::anyhow!("{e}"))?;
            self.insert_topic(name, topic);
        }
        let mut by_id = std::collections::HashMap::new();
        for (id, bytes) in &snapshot.subscriptions {
            let config: pb::Subscription = decode(bytes, "subscription")?;
            let name = SubscriptionName::parse(&config.name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let sub = self.insert_subscription(name, *id, config);
            by_id.insert(*id, sub);
        }
        // Oldest first, so the bodies kept in memory are the first delivered.
        let mut backlogs: std::collections::HashMap<i64, Vec<(Arc<Stored>, u32)>> =
            std::collections::HashMap::new();
        self.inner
            .payloads
            .restore(|sub_id, stored, attempts| {
                if by_id.contains_key(&sub_id) {
                    backlogs.entry(sub_id).or_default().push((stored, attempts));
                }
            })
            .context("reading the unacknowledged messages")?;
        let mut restored = 0usize;
        for (sub_id, backlog) in backlogs {
            restored += backlog.len();
            if let Some(sub) = by_id.get(&sub_id) {
                sub.enqueue(backlog);
            }
        }
        Ok(Restored {
            topics: snapshot.topics.len(),
            subscriptions: snapshot.subscriptions.len(),
            unacked: restored,
        })
    }

    fn insert_topic(&self, name: TopicName, config: pb::Topic) -> Arc<Topic> {
        let topic = Arc::new(Topic {
            config: RwLock::new(config),
            subscriptions: RwLock::default(),
        });
        self.inner
            .topics
            .write()
            .expect("topics lock")
            .insert(name.as_str().to_string(), topic.clone());
        topic
    }

    fn insert_subscription(
        &self,
        name: SubscriptionName,
        id: i64,
        config: pb::Subscription,
    ) -> Arc<Subscription> {
        let topic_name = config.topic.clone();
        let sub = Arc::new(Subscription::with_payloads(
            name.clone(),
            id,
            config,
            self.inner.payloads.clone(),
        ));
        self.inner
            .subscriptions
            .write()
            .expect("subscriptions lock")
            .insert(name.as_str().to_string(), sub.clone());
        if let Some(topic) = self.topic(&topic_name) {
            topic
                .subscriptions
                .write()
                .expect("topic lock")
                .push(sub.clone());
        }
        self.start_subscription_tasks(&sub);
        sub
    }

    /// Starts the subscription's timer and its push worker.
    fn start_subscription_tasks(&self, sub: &Arc<Subscription>) {
        self.inner
            .tasks
            .spawn(timer::run(self.clone(), sub.clone()));
        let push = self.inner.push.clone();
        self.inner.tasks.spawn(push.run(self.clone(), sub.clone()));
    }

    pub(crate) fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.inner
            .topics
            .read()
            .expect("topics lock")
            .get(name)
            .cloned()
    }

    /// A subscription that still delivers: not detached from its topic.
    pub(crate) fn attached_subscription(&self, name: &str) -> Result<Arc<Subscription>> {
        let sub = self.subscription(name)?;
        if sub.settings().detached {
            return Err(BrokerError::FailedPrecondition(format!(
                "Subscription {name} is detached from its topic"
            )));
        }
        Ok(sub)
    }

    pub(crate) fn subscription(&self, name: &str) -> Result<Arc<Subscription>> {
        SubscriptionName::parse(name)?;
        self.inner
            .subscriptions
            .read()
            .expect("subscriptions lock")
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::NotFound(format!("Subscription does not exist: {name}")))
    }

    pub(crate) fn existing_topic(&self, name: &str) -> Result<Arc<Topic>> {
        TopicName::parse(name)?;
        self.topic(name)
            .ok_or_else(|| BrokerError::NotFound(format!("Topic not found: {name}")))
    }

    /// The observer the engine reports to.
    pub(crate) fn observer(&self) -> &dyn Observer {
        &*self.inner.observer
    }

    /// Cancelled when the engine shuts down: background work stops.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    pub(crate) fn downgrade(&self) -> WeakEngine {
        WeakEngine(Arc::downgrade(&self.inner))
    }

    /// Every subscription, by name.
    pub(crate) fn all_subscriptions(&self) -> Vec<Arc<Subscription>> {
        let subs = self.inner.subscriptions.read().expect("subscriptions lock");
        subs.values().cloned().collect()
    }

    /// Every topic's name with the names of its attached subscriptions.
    pub(crate) fn all_topics(&self) -> Vec<(String, Vec<String>)> {
        let topics = self.inner.topics.read().expect("topics lock");
        topics
            .iter()
            .map(|(name, topic)| {
                let subs = topic.subscriptions.read().expect("topic lock");
                (
                    name.clone(),
                    subs.iter().map(|s| s.name.to_string()).collect(),
                )
            })
            .collect()
    }

    /// Whether `config`'s dead-letter topic exists and has no subscription:
    /// dead letters forwarded there are dropped, since a topic stores
    /// nothing for nobody (Pub/Sub's rule too). A missing topic is not a
    /// drop: forwarding to it fails and is tried again.
    pub(crate) fn drops_dead_letters(&self, config: &pb::Subscription) -> bool {
        let Some(policy) = &config.dead_letter_policy else {
            return false;
        };
        self.topic(&policy.dead_letter_topic)
            .is_some_and(|topic| topic.subscriptions.read().expect("topic lock").is_empty())
    }

    /// Stops background work and waits until the store has committed what it
    /// was given.
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let thread = self
            .inner
            .store_thread
            .lock()
            .expect("store thread lock")
            .take();
        self.inner.observer.close().await;
        let payloads = self.inner.payloads.clone();
        let _ = tokio::task::spawn_blocking(move || payloads.close()).await;
        if let Some(thread) = thread {
            self.inner.store.close().await;
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
