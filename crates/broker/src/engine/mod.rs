//! The broker's state: topics, subscriptions and the background work that
//! keeps messages moving.
//!
//! Locks are per resource: the topic and subscription maps are read-mostly,
//! each subscription's backlog has its own mutex, and administrative changes
//! (create, update, delete) are serialized among themselves by one async
//! mutex so that the store and memory never disagree. Publishing and
//! delivering never take the administrative lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) mod payloads;
pub(crate) mod store;
pub(crate) mod subscription;

use crate::config::BrokerConfig;
use crate::settings::{self, normalize_subscription, normalize_topic, validate_messages};
use crate::error::{BrokerError, Result};
use crate::names::{DELETED_TOPIC, ProjectName, SubscriptionName, TopicName};
use crate::oidc::OidcSigner;
use crate::engine::payloads::{Payloads, READ_AHEAD, Stored};
use crate::pb;
use crate::push::http::PushHttp;
use crate::engine::store::{NewMessage, Store, StoreThread};
use crate::engine::subscription::{Delivery, Failure, Message, Subscription};

/// How long a dead letter waits before forwarding is tried again when the
/// dead-letter topic is missing or the store refused it.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(10);
/// How long a `Pull` without `return_immediately` waits for a message.
const PULL_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Topic {
    config: RwLock<pb::Topic>,
    subscriptions: RwLock<Vec<Arc<Subscription>>>,
}

/// A running broker. Cheap to clone; every clone is the same broker.
#[derive(Clone)]
pub struct Broker {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: BrokerConfig,
    store: Store,
    store_thread: Mutex<Option<StoreThread>>,
    /// Message bodies in memory within the budget, and the reader of the
    /// others.
    payloads: Arc<Payloads>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    subscriptions: RwLock<BTreeMap<String, Arc<Subscription>>>,
    admin: tokio::sync::Mutex<()>,
    next_seq: AtomicU64,
    pub signer: Arc<OidcSigner>,
    pub http: PushHttp,
    pub shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Metrics, delivery stats and the journal, for the console.
    pub(crate) observer: crate::observe::stats::Observer,
}

fn now_timestamp(now: SystemTime) -> prost_types::Timestamp {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

fn decode<M: prost::Message + Default>(bytes: &[u8], what: &str) -> anyhow::Result<M> {
    M::decode(bytes).with_context(|| format!("decoding a stored {what}"))
}

/// One page of a sorted listing: entries after `page_token`, at most
/// `page_size` (0 = all), and the token for the next page.
fn page<T: Clone>(
    map: &BTreeMap<String, T>,
    prefix: &str,
    page_size: i32,
    page_token: &str,
) -> (Vec<T>, String) {
    let limit = if page_size <= 0 {
        usize::MAX
    } else {
        page_size as usize
    };
    let start = if page_token.is_empty() {
        prefix.to_string()
    } else {
        format!("{page_token}\0")
    };
    let mut items: Vec<(&String, &T)> = map
        .range(start..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .take(limit.saturating_add(1))
        .collect();
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|(k, _)| (*k).clone()).unwrap_or_default()
    } else {
        String::new()
    };
    (items.into_iter().map(|(_, v)| v.clone()).collect(), next)
}

impl Broker {
    /// Opens the store in `config.data_dir`, restores every topic,
    /// subscription and unacknowledged message, and starts delivering.
    /// Must be called inside a Tokio runtime.
    pub fn open(config: BrokerConfig) -> anyhow::Result<Broker> {
        labrelay_contract::private_fs::private_dir(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let signer = Arc::new(OidcSigner::load_or_create(
            &config.data_dir,
            config.issuer.clone(),
        )?);
        let path = config.data_dir.join("broker.sqlite3");
        let (store, store_thread, snapshot) = Store::open(&path)?;
        let payloads = Payloads::open(&path, config.payload_budget)?;
        let http = PushHttp::new()?;
        let observer = crate::observe::stats::Observer::open(&config)?;
        let inner = Arc::new(Inner {
            config,
            store,
            store_thread: Mutex::new(Some(store_thread)),
            payloads,
            topics: RwLock::default(),
            subscriptions: RwLock::default(),
            admin: tokio::sync::Mutex::new(()),
            next_seq: AtomicU64::new(snapshot.next_seq),
            signer,
            http,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            observer,
        });
        let broker = Broker { inner };
        broker.restore(snapshot)?;
        Ok(broker)
    }

    fn restore(&self, snapshot: crate::engine::store::Snapshot) -> anyhow::Result<()> {
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
        tracing::info!(
            issuer = self.inner.signer.issuer(),
            topics = snapshot.topics.len(),
            subscriptions = snapshot.subscriptions.len(),
            unacked = restored,
            "store opened"
        );
        Ok(())
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

    fn start_subscription_tasks(&self, sub: &Arc<Subscription>) {
        let inner = self.inner.clone();
        let s = sub.clone();
        self.inner
            .tasks
            .spawn(async move { run_timer(inner, s).await });
        let inner = self.inner.clone();
        let s = sub.clone();
        self.inner
            .tasks
            .spawn(async move { crate::push::worker::run(inner, s).await });
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

    fn existing_topic(&self, name: &str) -> Result<Arc<Topic>> {
        TopicName::parse(name)?;
        self.topic(name)
            .ok_or_else(|| BrokerError::NotFound(format!("Topic not found: {name}")))
    }

    // ----- topics -----

    pub async fn create_topic(&self, topic: pb::Topic) -> Result<pb::Topic> {
        let (name, topic) = normalize_topic(topic)?;
        let _admin = self.inner.admin.lock().await;
        if self.topic(name.as_str()).is_some() {
            return Err(BrokerError::AlreadyExists(format!(
                "Topic already exists: {name}"
            )));
        }
        self.inner
            .store
            .put_topic(name.as_str().to_string(), topic.encode_to_vec())
            .await?;
        self.insert_topic(name, topic.clone());
        Ok(topic)
    }

    pub fn get_topic(&self, name: &str) -> Result<pb::Topic> {
        Ok(self
            .existing_topic(name)?
            .config
            .read()
            .expect("topic lock")
            .clone())
    }

    pub async fn update_topic(&self, update: pb::Topic, mask: &[String]) -> Result<pb::Topic> {
        let _admin = self.inner.admin.lock().await;
        let topic = self.existing_topic(&update.name)?;
        if mask.is_empty() {
            return Err(BrokerError::invalid(
                "update_mask must name at least one field",
            ));
        }
        let mut config = topic.config.read().expect("topic lock").clone();
        for path in mask {
            match path.as_str() {
                "labels" => config.labels = update.labels.clone(),
                "message_retention_duration" | "messageRetentionDuration" => {
                    config.message_retention_duration = update.message_retention_duration
                }
                other => {
                    return Err(BrokerError::invalid(format!(
                        "update_mask names a field that cannot be updated here: {other}"
                    )));
                }
            }
        }
        let (_, config) = normalize_topic(config)?;
        self.inner
            .store
            .put_topic(update.name.clone(), config.encode_to_vec())
            .await?;
        *topic.config.write().expect("topic lock") = config.clone();
        Ok(config)
    }

    pub fn list_topics(
        &self,
        project: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<pb::Topic>, String)> {
        let project = ProjectName::parse(project)?;
        let topics = self.inner.topics.read().expect("topics lock");
        let (page, next) = page(
            &topics,
            &format!("{}/topics/", project.as_str()),
            page_size,
            page_token,
        );
        Ok((
            page.iter()
                .map(|t| t.config.read().expect("topic lock").clone())
                .collect(),
            next,
        ))
    }

    pub fn list_topic_subscriptions(
        &self,
        topic: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<String>, String)> {
        let topic = self.existing_topic(topic)?;
        let names: BTreeMap<String, String> = topic
            .subscriptions
            .read()
            .expect("topic lock")
            .iter()
            .map(|s| (s.name.as_str().to_string(), s.name.as_str().to_string()))
            .collect();
        Ok(page(&names, "", page_size, page_token))
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        let topic = self.existing_topic(name)?;
        self.inner.store.delete_topic(name.to_string()).await?;
        self.inner.topics.write().expect("topics lock").remove(name);
        // Subscriptions outlive their topic, as in Pub/Sub: they keep their
        // backlog and report the topic as deleted.
        let orphans = std::mem::take(&mut *topic.subscriptions.write().expect("topic lock"));
        for sub in orphans {
            let mut config = sub.config();
            config.topic = DELETED_TOPIC.to_string();
            self.inner
                .store
                .put_subscription(config.name.clone(), config.encode_to_vec())
                .await?;
            sub.set_config(config);
        }
        Ok(())
    }

    // ----- subscriptions -----

    pub async fn create_subscription(&self, config: pb::Subscription) -> Result<pb::Subscription> {
        let (name, mut config) = normalize_subscription(config)?;
        self.check_push_endpoint(config.push_config.as_ref())?;
        let _admin = self.inner.admin.lock().await;
        let topic = self.existing_topic(&config.topic)?;
        if let Some(dead_letter) = &config.dead_letter_policy {
            self.existing_topic(&dead_letter.dead_letter_topic)?;
        }
        if self.subscription(name.as_str()).is_ok() {
            return Err(BrokerError::AlreadyExists(format!(
                "Subscription already exists: {name}"
            )));
        }
        config.topic_message_retention_duration = topic
            .config
            .read()
            .expect("topic lock")
            .message_retention_duration;
        let id = self
            .inner
            .store
            .put_subscription(name.as_str().to_string(), config.encode_to_vec())
            .await?;
        self.insert_subscription(name, id, config.clone());
        Ok(config)
    }

    pub fn get_subscription(&self, name: &str) -> Result<pb::Subscription> {
        Ok(self.subscription(name)?.config())
    }

    pub fn list_subscriptions(
        &self,
        project: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<pb::Subscription>, String)> {
        let project = ProjectName::parse(project)?;
        let subs = self.inner.subscriptions.read().expect("subscriptions lock");
        let (page, next) = page(
            &subs,
            &format!("{}/subscriptions/", project.as_str()),
            page_size,
            page_token,
        );
        Ok((page.iter().map(|s| s.config()).collect(), next))
    }

    pub async fn update_subscription(
        &self,
        update: pb::Subscription,
        mask: &[String],
    ) -> Result<pb::Subscription> {
        let _admin = self.inner.admin.lock().await;
        let sub = self.subscription(&update.name)?;
        if mask.is_empty() {
            return Err(BrokerError::invalid(
                "update_mask must name at least one field",
            ));
        }
        let mut config = sub.config();
        for path in mask {
            match path.as_str() {
                "ack_deadline_seconds" | "ackDeadlineSeconds" => {
                    config.ack_deadline_seconds = update.ack_deadline_seconds
                }
                "push_config" | "pushConfig" => config.push_config = update.push_config.clone(),
                "retry_policy" | "retryPolicy" => config.retry_policy = update.retry_policy,
                "dead_letter_policy" | "deadLetterPolicy" => {
                    config.dead_letter_policy = update.dead_letter_policy.clone()
                }
                "message_retention_duration" | "messageRetentionDuration" => {
                    config.message_retention_duration = update.message_retention_duration
                }
                "labels" => config.labels = update.labels.clone(),
                "expiration_policy" | "expirationPolicy" => {
                    config.expiration_policy = update.expiration_policy
                }
                other => {
                    return Err(BrokerError::invalid(format!(
                        "update_mask names a field that cannot be updated here: {other}"
                    )));
                }
            }
        }
        let (_, config) = normalize_subscription(config)?;
        self.check_push_endpoint(config.push_config.as_ref())?;
        if let Some(dead_letter) = &config.dead_letter_policy {
            self.existing_topic(&dead_letter.dead_letter_topic)?;
        }
        self.inner
            .store
            .put_subscription(config.name.clone(), config.encode_to_vec())
            .await?;
        sub.set_config(config.clone());
        Ok(config)
    }

    /// Refuses a push endpoint outside [`BrokerConfig::push_endpoints`].
    fn check_push_endpoint(&self, push: Option<&pb::PushConfig>) -> Result<()> {
        match push.filter(|p| !p.push_endpoint.is_empty()) {
            Some(push) => match self
                .inner
                .config
                .push_endpoints
                .refusal(&push.push_endpoint)
            {
                Some(why) => Err(BrokerError::PermissionDenied(why)),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    pub async fn modify_push_config(&self, name: &str, push: Option<pb::PushConfig>) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        let sub = self.subscription(name)?;
        let push = push.unwrap_or_default();
        settings::validate_push_config(&push)?;
        self.check_push_endpoint(Some(&push))?;
        let mut config = sub.config();
        config.push_config = Some(push);
        self.inner
            .store
            .put_subscription(config.name.clone(), config.encode_to_vec())
            .await?;
        sub.set_config(config);
        Ok(())
    }

    pub async fn delete_subscription(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        let sub = self.subscription(name)?;
        self.inner.store.delete_subscription(sub.id).await?;
        self.inner
            .subscriptions
            .write()
            .expect("subscriptions lock")
            .remove(name);
        if let Some(topic) = self.topic(&sub.config().topic) {
            topic
                .subscriptions
                .write()
                .expect("topic lock")
                .retain(|s| !Arc::ptr_eq(s, &sub));
        }
        sub.closed.cancel();
        Ok(())
    }

    pub async fn detach_subscription(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        let sub = self.subscription(name)?;
        let mut config = sub.config();
        if let Some(topic) = self.topic(&config.topic) {
            topic
                .subscriptions
                .write()
                .expect("topic lock")
                .retain(|s| !Arc::ptr_eq(s, &sub));
        }
        config.detached = true;
        self.inner
            .store
            .put_subscription(config.name.clone(), config.encode_to_vec())
            .await?;
        sub.set_config(config);
        // A detached subscription drops what it retained.
        let dropped = sub.clear();
        if !dropped.is_empty() {
            self.inner.store.ack(sub.id, dropped).await?;
        }
        Ok(())
    }

    // ----- data plane -----

    /// Stores the messages durably, then makes them deliverable on every
    /// subscription attached to the topic; returns their ids.
    pub async fn publish(
        &self,
        topic: &str,
        messages: Vec<pb::PubsubMessage>,
    ) -> Result<Vec<String>> {
        let (started, topic_name) = (Instant::now(), topic);
        let topic = self.existing_topic(topic)?;
        validate_messages(&messages)?;
        let now = SystemTime::now();
        let publish_time = now_timestamp(now);
        let first = self
            .inner
            .next_seq
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        let messages: Vec<pb::PubsubMessage> = messages
            .into_iter()
            .enumerate()
            .map(|(i, mut pb)| {
                pb.message_id = (first + i as u64).to_string();
                pb.publish_time = Some(publish_time);
                pb
            })
            .collect();
        let subscriptions = topic.subscriptions.read().expect("topic lock").clone();
        // A filtered subscription acknowledges what it does not match at once,
        // by never storing it.
        let wanted: Vec<Vec<bool>> = subscriptions
            .iter()
            .map(|sub| {
                let filter = sub.settings().filter.clone();
                messages
                    .iter()
                    .map(|m| filter.as_ref().is_none_or(|f| f.matches(&m.attributes)))
                    .collect()
            })
            .collect();
        let rows = messages
            .iter()
            .enumerate()
            .map(|(i, m)| NewMessage {
                seq: first + i as u64,
                bytes: m.encode_to_vec(),
                subscriptions: subscriptions
                    .iter()
                    .zip(&wanted)
                    .filter(|(_, wants)| wants[i])
                    .map(|(sub, _)| sub.id)
                    .collect(),
            })
            .collect();
        let ids: Vec<String> = messages.iter().map(|m| m.message_id.clone()).collect();
        // A body stays in memory within the budget, or when a subscription
        // will deliver it at once (it would be read back right away). The
        // others drop their data now, while the commit is awaited: only the
        // encoded rows need it. Nothing is enqueued before the commit.
        let mut soon: Vec<usize> = subscriptions
            .iter()
            .map(|sub| READ_AHEAD.saturating_sub(sub.backlog()))
            .collect();
        let keep_data = self.inner.config.console_show_data;
        let mut journaled = Vec::with_capacity(messages.len());
        let mut records: Vec<Option<Arc<Stored>>> = Vec::with_capacity(messages.len());
        for (i, pb) in messages.into_iter().enumerate() {
            let mut wanted_soon = false;
            let mut wanted_at_all = false;
            for (room, wants) in soon.iter_mut().zip(&wanted) {
                if wants[i] {
                    wanted_at_all = true;
                    if *room > 0 {
                        *room -= 1;
                        wanted_soon = true;
                    }
                }
            }
            let message = Message {
                seq: first + i as u64,
                pb,
                published_at: now,
            };
            if !wanted_at_all {
                let mut message = message;
                if !keep_data {
                    message.pb.data = Vec::new();
                }
                records.push(None);
                journaled.push(Arc::new(message));
                continue;
            }
            let full = keep_data.then(|| message.pb.data.clone());
            let (stored, mut message) = self.inner.payloads.admit(message, wanted_soon);
            if let Some(data) = full.filter(|_| !stored.is_warm()) {
                // Only the journal wants the data of a cold message.
                message = Arc::new(Message {
                    seq: message.seq,
                    pb: pb::PubsubMessage {
                        data,
                        ..message.pb.clone()
                    },
                    published_at: message.published_at,
                });
            }
            records.push(Some(stored));
            journaled.push(message);
        }
        self.inner.store.publish(rows).await?;
        for (sub, wants) in subscriptions.iter().zip(&wanted) {
            sub.enqueue(
                records
                    .iter()
                    .zip(wants)
                    .filter(|(_, wanted)| **wanted)
                    .filter_map(|(stored, _)| Some((stored.clone()?, 0))),
            );
        }
        drop(records);
        let observer = &self.inner.observer;
        observer.published(
            topic_name,
            &journaled,
            subscriptions,
            wanted,
            started.elapsed(),
        );
        Ok(ids)
    }

    /// `Pull`: leases up to `max_messages`, waiting a while for the first
    /// unless `return_immediately`.
    pub async fn pull(
        &self,
        name: &str,
        max_messages: i32,
        return_immediately: bool,
    ) -> Result<Vec<pb::ReceivedMessage>> {
        if max_messages <= 0 {
            return Err(BrokerError::invalid(
                "max_messages must be a positive number",
            ));
        }
        let sub = self.attached_subscription(name)?;
        let give_up = tokio::time::Instant::now() + PULL_WAIT;
        loop {
            let changed = sub.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let settings = sub.settings();
            let deliveries = sub.lease(
                max_messages as usize,
                None,
                settings.ack_deadline,
                Instant::now(),
            );
            if !deliveries.is_empty() || return_immediately {
                return Ok(received(&sub, deliveries));
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(give_up) => return Ok(Vec::new()),
                _ = sub.closed.cancelled() => return Err(BrokerError::NotFound(format!("Subscription does not exist: {name}"))),
                _ = self.inner.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    pub async fn acknowledge(&self, name: &str, ack_ids: &[String]) -> Result<()> {
        let sub = self.subscription(name)?;
        let acked = sub.ack(ack_ids)?;
        if !acked.is_empty() {
            self.inner.observer.acked(&sub, &acked);
            self.inner.store.ack(sub.id, acked).await?;
        }
        Ok(())
    }

    pub async fn modify_ack_deadline(
        &self,
        name: &str,
        ack_ids: &[String],
        seconds: i32,
    ) -> Result<()> {
        let sub = self.subscription(name)?;
        let failures = sub.modify_deadline(ack_ids, seconds, Instant::now())?;
        settle_failures(&self.inner, &sub, failures, "nacked by the subscriber").await;
        Ok(())
    }

    /// Bench hook (not API): the push token for `(email, audience)`, as a
    /// push worker gets it (from the signer's cache while fresh).
    #[doc(hidden)]
    pub fn push_token_for_bench(&self, email: &str, audience: &str) -> anyhow::Result<Arc<str>> {
        self.inner.signer.token(email, audience)
    }

    /// The router serving this broker: gRPC, REST, the OIDC discovery
    /// documents, and `GET /`.
    pub fn router(&self) -> axum::Router {
        crate::api::grpc::router(self.clone())
            .merge(crate::console::router(self.clone()))
            .merge(crate::observe::metrics::router(
                &self.inner.observer.metrics,
                &self.inner,
            ))
    }

    /// Serves on `listener` until `shutdown` completes, then stops
    /// delivering and closes the store after its last commit.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = self.inner.shutdown.clone();
        let app = self.router();
        let hosts = self.inner.config.allowed_hosts.clone();
        if let Ok(addr) = listener.local_addr()
            && !addr.ip().is_loopback()
        {
            tracing::warn!(
                %addr,
                allowed_hosts = %hosts,
                push_endpoints = %self.inner.config.push_endpoints,
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
        let result = labrelay_contract::serve::serve(listener, app, hosts, async move {
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

pub(crate) fn received(sub: &Subscription, deliveries: Vec<Delivery>) -> Vec<pb::ReceivedMessage> {
    let report_attempts = sub.settings().dead_letter.is_some();
    deliveries
        .into_iter()
        .map(|d| pb::ReceivedMessage {
            ack_id: d.ack_id,
            message: Some(d.message.pb.clone()),
            delivery_attempt: if report_attempts { d.attempt as i32 } else { 0 },
        })
        .collect()
}

impl Inner {
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Every subscription, by name.
    pub(crate) fn all_subscriptions(&self) -> Vec<Arc<Subscription>> {
        let subs = self.subscriptions.read().expect("subscriptions lock");
        subs.values().cloned().collect()
    }

    /// Every topic's name with the names of its attached subscriptions.
    pub(crate) fn all_topics(&self) -> Vec<(String, Vec<String>)> {
        let topics = self.topics.read().expect("topics lock");
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
}

/// Persists failed attempts and forwards dead letters; `reason` says why
/// the last delivery failed (kept on a dead letter).
pub(crate) async fn settle_failures(
    inner: &Arc<Inner>,
    sub: &Arc<Subscription>,
    failures: Vec<Failure>,
    reason: &str,
) {
    for failure in failures {
        match failure.dead_letter {
            None => {
                inner
                    .store
                    .record_attempts(sub.id, failure.seq, failure.attempts)
                    .await
            }
            Some(stored) => {
                let Some(message) = inner.payloads.fetch(&stored).await else {
                    tracing::warn!(
                        subscription = %sub.name,
                        seq = stored.seq,
                        "could not read a message to dead-letter; will try again"
                    );
                    sub.unpark(stored.seq, DEAD_LETTER_RETRY, Instant::now());
                    continue;
                };
                forward_dead_letter(inner, sub, &message, failure.attempts, reason).await
            }
        }
    }
}

/// Publishes a copy of `message` to the subscription's dead-letter topic,
/// with Pub/Sub's `CloudPubSubDeadLetterSource*` attributes (and the reason
/// the last delivery failed), then acknowledges it on the subscription.
async fn forward_dead_letter(
    inner: &Arc<Inner>,
    sub: &Arc<Subscription>,
    message: &Message,
    attempts: u32,
    reason: &str,
) {
    let Some(dead_letter) = sub.settings().dead_letter.clone() else {
        sub.unpark(message.seq, Duration::ZERO, Instant::now());
        return;
    };
    let mut copy = pb::PubsubMessage {
        data: message.pb.data.clone(),
        attributes: message.pb.attributes.clone(),
        ordering_key: message.pb.ordering_key.clone(),
        ..Default::default()
    };
    let source = [
        (
            "CloudPubSubDeadLetterSourceDeliveryCount",
            attempts.to_string(),
        ),
        (
            "CloudPubSubDeadLetterSourceSubscription",
            sub.name.id().to_string(),
        ),
        (
            "CloudPubSubDeadLetterSourceSubscriptionProject",
            sub.name.project_id().to_string(),
        ),
        (
            "CloudPubSubDeadLetterSourceTopicPublishTime",
            message
                .pb
                .publish_time
                .map(|t| t.to_string())
                .unwrap_or_default(),
        ),
        // Seen from the real service in some reports; here always set, so
        // an operator sees why the last delivery failed.
        (
            "CloudPubSubDeadLetterSourceDeliveryErrorMessage",
            reason.to_string(),
        ),
    ];
    copy.attributes
        .extend(source.map(|(k, v)| (k.to_string(), v)));
    let broker = Broker {
        inner: inner.clone(),
    };
    match broker.publish(dead_letter.topic.as_str(), vec![copy]).await {
        Ok(ids) => {
            tracing::info!(
                subscription = %sub.name,
                message_id = %message.pb.message_id,
                dead_letter_id = ids.first().map(String::as_str).unwrap_or(""),
                attempts,
                "message forwarded to the dead-letter topic"
            );
            sub.remove_parked(message.seq);
            inner.store.ack_later(sub.id, vec![message.seq]).await;
            let dead_letter_id = ids.first().map(String::as_str).unwrap_or("");
            let observer = &inner.observer;
            observer.dead_lettered(sub, message, attempts, reason, dead_letter_id);
        }
        Err(error) => {
            tracing::warn!(
                subscription = %sub.name,
                message_id = %message.pb.message_id,
                %error,
                "could not forward to the dead-letter topic; will try again"
            );
            sub.unpark(message.seq, DEAD_LETTER_RETRY, Instant::now());
        }
    }
}

/// The subscription's timer: expires leases, releases delayed retries and
/// drops messages past retention. Wakes at the next deadline or when a new,
/// earlier one appears; stops when the subscription is deleted or the broker
/// shuts down.
async fn run_timer(inner: Arc<Inner>, sub: Arc<Subscription>) {
    loop {
        let tick = sub.tick(Instant::now(), SystemTime::now());
        if !tick.expired.is_empty() {
            inner.store.ack_later(sub.id, tick.expired).await;
        }
        settle_failures(&inner, &sub, tick.failures, "ack deadline expired").await;
        let wake = tick
            .next_wake
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = sub.timer.notified() => {}
            _ = sub.closed.cancelled() => return,
            _ = inner.shutdown.cancelled() => return,
        }
    }
}
