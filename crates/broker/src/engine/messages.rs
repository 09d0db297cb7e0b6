//! The data plane: publish (durable before it answers, fanned out to the
//! subscriptions attached now), pull, acknowledge and ack deadlines.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use prost::Message as _;
use tokio::sync::oneshot;

use super::Engine;
use super::payloads::{Message, READ_AHEAD, Stored};
use super::store::{NewMessage, Settled};
use super::subscription::{Delivery, Subscription};
use crate::error::{BrokerError, Result};
use crate::pb;
use crate::settings::validate_messages;

/// How long a `Pull` without `return_immediately` waits for a message.
const PULL_WAIT: Duration = Duration::from_secs(10);

fn now_timestamp(now: SystemTime) -> prost_types::Timestamp {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

impl Engine {
    /// Stores the messages durably, then makes them deliverable on every
    /// subscription attached to the topic; returns their ids.
    pub async fn publish(
        &self,
        topic: &str,
        messages: Vec<pb::PubsubMessage>,
    ) -> Result<Vec<String>> {
        Ok(self.publish_settling(topic, messages, None).await?.ids)
    }

    /// [`publish`](Self::publish), acknowledging `settles` (a parked
    /// message on its subscription) in the same commit: a dead letter's copy
    /// and its source's ack reach the disk together or not at all. The
    /// parked message leaves its subscription's memory once that commit
    /// lands, whatever becomes of the caller.
    pub(crate) async fn publish_settling(
        &self,
        topic: &str,
        messages: Vec<pb::PubsubMessage>,
        settles: Option<(Arc<Subscription>, u64)>,
    ) -> Result<Published> {
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
        let rows: Vec<NewMessage> = messages
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
        let stored_for: Vec<usize> = rows.iter().map(|r| r.subscriptions.len()).collect();
        // A body stays in memory within the budget, or when a subscription
        // will deliver it at once (it would be read back right away). The
        // others drop their data now, while the commit is awaited: only the
        // encoded rows need it. Nothing is enqueued before the commit.
        let mut soon: Vec<usize> = subscriptions
            .iter()
            .map(|sub| READ_AHEAD.saturating_sub(sub.backlog()))
            .collect();
        let keep_data = self.inner.observer.keeps_data();
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
        // Once the rows are queued they will be committed, so from here on
        // they are enqueued too, even if this request is dropped while the
        // commit is in flight (a client's deadline, a closed connection).
        let settled = settles.as_ref().map(|(sub, seq)| Settled {
            subscription: sub.id,
            seq: *seq,
        });
        let committed = self.inner.store.queue_publish(rows, settled).await?;
        let (subscriptions, wanted) = Committing {
            committed: Some(committed),
            enqueue: Some(Enqueue {
                subscriptions,
                wanted,
                records,
                settles,
            }),
        }
        .finish()
        .await?;
        let observer = &self.inner.observer;
        observer.published(
            topic_name,
            &journaled,
            subscriptions,
            wanted,
            started.elapsed(),
        );
        Ok(Published { ids, stored_for })
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
        self.settle_failures(&sub, failures, "nacked by the subscriber")
            .await;
        Ok(())
    }

    /// Records acknowledgements a push worker applied to `sub`'s backlog;
    /// the store commits them with the next batch (a lost one costs a
    /// redelivery, so nobody waits for it).
    pub(crate) async fn persist_push_acks(&self, sub: &Subscription, seqs: Vec<u64>) {
        self.inner.store.ack_later(sub.id, seqs).await;
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

/// What [`Engine::publish_settling`] committed.
pub(crate) struct Published {
    /// The messages' ids, in order.
    pub ids: Vec<String>,
    /// How many subscriptions took each message: 0 when its topic has
    /// none (or none whose filter matches), and it was not stored at all.
    pub stored_for: Vec<usize>,
}

/// What a publish enqueues once its rows are on disk.
struct Enqueue {
    subscriptions: Vec<Arc<Subscription>>,
    wanted: Vec<Vec<bool>>,
    records: Vec<Option<Arc<Stored>>>,
    /// The parked message acknowledged in the same commit.
    settles: Option<(Arc<Subscription>, u64)>,
}

impl Enqueue {
    /// Gives each subscription the messages it wants, and drops the parked
    /// message the commit acknowledged; returns what the observers are told.
    fn run(self) -> (Vec<Arc<Subscription>>, Vec<Vec<bool>>) {
        if let Some((sub, seq)) = &self.settles {
            sub.remove_parked(*seq);
        }
        for (sub, wants) in self.subscriptions.iter().zip(&self.wanted) {
            sub.enqueue(
                self.records
                    .iter()
                    .zip(wants)
                    .filter(|(_, wanted)| **wanted)
                    .filter_map(|(stored, _)| Some((stored.clone()?, 0))),
            );
        }
        (self.subscriptions, self.wanted)
    }
}

/// A publish whose rows the store has queued. Awaited, it enqueues them
/// once committed; dropped before that, it leaves a task that does.
struct Committing {
    committed: Option<oneshot::Receiver<Result<()>>>,
    enqueue: Option<Enqueue>,
}

impl Committing {
    async fn finish(mut self) -> Result<(Vec<Arc<Subscription>>, Vec<Vec<bool>>)> {
        let committed = self.committed.as_mut().expect("awaited once");
        let result = committed.await;
        self.committed = None;
        let enqueue = self.enqueue.take().expect("awaited once");
        match result {
            Ok(Ok(())) => Ok(enqueue.run()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(BrokerError::Unavailable("the store is closed".into())),
        }
    }
}

impl Drop for Committing {
    fn drop(&mut self) {
        let (Some(committed), Some(enqueue)) = (self.committed.take(), self.enqueue.take()) else {
            return;
        };
        // Without a runtime the process is going away; a restart restores
        // the committed rows from the store.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Ok(())) = committed.await {
                    enqueue.run();
                }
            });
        }
    }
}
