//! One subscription's backlog: which messages are ready, leased or waiting
//! out a retry delay, and the bookkeeping of delivery attempts.
//!
//! Everything here is synchronous and takes the current time as an argument,
//! so it is tested without a clock. The asynchronous parts (persisting acks,
//! forwarding dead letters, the timer that expires leases) live in the
//! engine (`messages`, `settle`, `timer`) and drive these methods. Message bodies may be on disk only
//! (`payloads`): leasing hands out what is in memory, in order, and asks
//! for the rest to be read ahead.

use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::payloads::{Message, Payloads, Presence, READ_AHEAD, READ_AHEAD_BYTES, Stored};
use crate::error::{BrokerError, Result};
use crate::names::SubscriptionName;
use crate::pb;
use crate::retry::retry_delay;
use crate::settings::SubscriptionSettings;

/// A message handed to a subscriber under a lease.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub ack_id: String,
    pub lease: LeaseId,
    pub message: Arc<Message>,
    /// 1 on the first delivery.
    pub attempt: u32,
}

/// Identifies one lease of one message; a later lease of the same message has
/// a different `generation`, so a stale ack id cannot touch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId {
    pub seq: u64,
    pub generation: u64,
}

impl LeaseId {
    fn ack_id(self) -> String {
        format!("{}-{}", self.seq, self.generation)
    }

    pub fn parse(ack_id: &str) -> Option<LeaseId> {
        let (seq, generation) = ack_id.split_once('-')?;
        Some(LeaseId {
            seq: seq.parse().ok()?,
            generation: generation.parse().ok()?,
        })
    }
}

/// A subscription's backlog figures at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Unacknowledged messages.
    pub backlog: usize,
    /// Of those, leased to a subscriber (or a push in progress).
    pub in_flight: usize,
    pub oldest_published: Option<SystemTime>,
}

impl Counts {
    /// How long the oldest unacknowledged message has waited (0 when none).
    pub fn oldest_age(&self, now: SystemTime) -> Duration {
        self.oldest_published
            .and_then(|p| now.duration_since(p).ok())
            .unwrap_or_default()
    }
}

/// A delivery that failed (nack or expired lease).
#[derive(Debug)]
pub struct Failure {
    pub seq: u64,
    pub attempts: u32,
    /// Set when the failure used up the dead-letter policy's attempts: the
    /// message must now be forwarded to the dead-letter topic.
    pub dead_letter: Option<Arc<Stored>>,
}

/// What a timer tick found.
#[derive(Debug, Default)]
pub struct Tick {
    pub failures: Vec<Failure>,
    /// Messages past the retention period, dropped from the backlog.
    pub expired: Vec<u64>,
    pub next_wake: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Ready,
    Delayed(Instant),
    Leased {
        generation: u64,
        deadline: Instant,
    },
    /// Being forwarded to the dead-letter topic.
    Parked,
    /// Behind an earlier message with the same ordering key.
    Waiting,
}

#[derive(Debug)]
struct Entry {
    stored: Arc<Stored>,
    attempts: u32,
    state: State,
}

#[derive(Debug, Default)]
struct Queue {
    entries: HashMap<u64, Entry>,
    /// Deliverable now, oldest first.
    ready: BTreeSet<u64>,
    /// Retry delays; an item is stale once its entry's state moved on.
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Lease deadlines; stale like `delayed`.
    leases: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    next_generation: u64,
    /// With message ordering: each ordering key's messages in publish
    /// order. Only the first of each is ever ready, leased or delayed.
    keys: HashMap<String, VecDeque<u64>>,
    /// When the timer will look next; earlier deadlines must wake it.
    next_wake: Option<Instant>,
    next_retention_check: Option<Instant>,
    /// Messages leased since the last look for cold ones ahead.
    leased_since_read_ahead: usize,
}

/// How often the timer drops messages past their retention.
const RETENTION_CHECK_EVERY: Duration = Duration::from_secs(60);

/// A subscription: its configuration and its backlog.
pub struct Subscription {
    pub name: SubscriptionName,
    /// The store's id for this subscription.
    pub id: i64,
    config: RwLock<pb::Subscription>,
    settings: RwLock<Arc<SubscriptionSettings>>,
    queue: Mutex<Queue>,
    /// Signalled whenever messages become deliverable (their bodies read
    /// back from disk included) or leases end, for pullers, streams and the
    /// push worker waiting for work.
    pub changed: Arc<Notify>,
    /// Signalled when a deadline earlier than the timer's next wake appears.
    pub timer: Notify,
    /// Signalled when the configuration changes (push worker restarts).
    pub reconfigured: Notify,
    /// Cancelled when the subscription is deleted or detached.
    pub closed: CancellationToken,
    /// What the observer keeps for this subscription (its push figures),
    /// here so that a hook finds it without a lookup. Set and read by the
    /// observer only; the engine never looks inside.
    pub(crate) observed: OnceLock<Box<dyn Any + Send + Sync>>,
    /// Message bodies: the budget and the reader of cold ones.
    payloads: Arc<Payloads>,
    /// Set while a read-ahead request of this subscription is out.
    reading_ahead: Arc<AtomicBool>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A subscription whose messages all stay in memory (tests).
    #[cfg(test)]
    pub fn new(name: SubscriptionName, id: i64, config: pb::Subscription) -> Self {
        Self::with_payloads(name, id, config, Payloads::unbounded())
    }

    /// A subscription whose message bodies live within `payloads`' budget.
    pub(crate) fn with_payloads(
        name: SubscriptionName,
        id: i64,
        config: pb::Subscription,
        payloads: Arc<Payloads>,
    ) -> Self {
        let settings = Arc::new(SubscriptionSettings::from_config(&config));
        let epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Subscription {
            name,
            id,
            config: RwLock::new(config),
            settings: RwLock::new(settings),
            queue: Mutex::new(Queue {
                next_generation: epoch,
                ..Queue::default()
            }),
            changed: Arc::new(Notify::new()),
            timer: Notify::new(),
            reconfigured: Notify::new(),
            closed: CancellationToken::new(),
            observed: OnceLock::new(),
            payloads,
            reading_ahead: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn config(&self) -> pb::Subscription {
        self.config.read().expect("config lock").clone()
    }

    pub fn settings(&self) -> Arc<SubscriptionSettings> {
        self.settings.read().expect("settings lock").clone()
    }

    pub fn set_config(&self, config: pb::Subscription) {
        let settings = Arc::new(SubscriptionSettings::from_config(&config));
        *self.config.write().expect("config lock") = config;
        *self.settings.write().expect("settings lock") = settings;
        self.reconfigured.notify_waiters();
        self.changed.notify_waiters();
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().expect("queue lock")
    }

    /// Number of unacknowledged messages.
    pub fn backlog(&self) -> usize {
        self.queue().entries.len()
    }

    /// Backlog, in-flight and oldest unacknowledged message, for the console
    /// and `/metrics`. Walks the backlog under its lock: O(backlog), asked
    /// for by a scrape or a console poll, never by delivery.
    pub fn counts(&self) -> Counts {
        let queue = self.queue();
        let mut counts = Counts {
            backlog: queue.entries.len(),
            ..Counts::default()
        };
        for entry in queue.entries.values() {
            if matches!(entry.state, State::Leased { .. }) {
                counts.in_flight += 1;
            }
            let published = entry.stored.published_at;
            if counts.oldest_published.is_none_or(|o| published < o) {
                counts.oldest_published = Some(published);
            }
        }
        counts
    }

    /// Up to `limit` unacknowledged messages, oldest first, with their
    /// failed-attempt counts, without leasing them (the console's view of
    /// a dead-letter subscription). Bodies on disk only are read on the
    /// calling thread (a few primary-key lookups) and not kept.
    pub fn peek(&self, limit: usize) -> Vec<(Arc<Message>, u32)> {
        let picked: Vec<(Arc<Stored>, u32)> = {
            let queue = self.queue();
            let mut seqs: Vec<u64> = queue.entries.keys().copied().collect();
            if seqs.len() > limit && limit > 0 {
                seqs.select_nth_unstable(limit - 1);
                seqs.truncate(limit);
            }
            seqs.sort_unstable();
            seqs.into_iter()
                .take(limit)
                .filter_map(|seq| queue.entries.get(&seq))
                .map(|e| (e.stored.clone(), e.attempts))
                .collect()
        };
        let stored: Vec<Arc<Stored>> = picked.iter().map(|(s, _)| s.clone()).collect();
        self.payloads
            .read_now(&stored)
            .into_iter()
            .zip(picked)
            .filter_map(|(message, (_, attempts))| Some((message?, attempts)))
            .collect()
    }

    /// Adds newly published messages (or, at start-up, restored ones with
    /// their failed-attempt counts).
    pub fn enqueue(&self, messages: impl IntoIterator<Item = (Arc<Stored>, u32)>) {
        let ordered = self.settings().ordered;
        let mut queue = self.queue();
        for (stored, attempts) in messages {
            queue.add(stored, attempts, ordered);
        }
        drop(queue);
        self.changed.notify_waiters();
    }

    /// Leases up to `max_messages` ready messages (and, when given, up to
    /// `max_bytes`, always at least one), oldest first. Stops early at a
    /// message whose body is on disk only: its read is asked for, and
    /// `changed` is notified once it is in memory.
    pub fn lease(
        &self,
        max_messages: usize,
        max_bytes: Option<usize>,
        lease_for: Duration,
        now: Instant,
    ) -> Vec<Delivery> {
        let mut queue = self.queue();
        let deadline = now + lease_for;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut blocked = false;
        while out.len() < max_messages {
            let Some(&seq) = queue.ready.first() else {
                break;
            };
            let Some(entry) = queue.entries.get(&seq) else {
                queue.ready.pop_first();
                continue;
            };
            let size = entry.stored.size;
            let message = match entry.stored.presence() {
                Presence::Warm(message) => message,
                Presence::Absent => {
                    blocked = true;
                    break;
                }
                Presence::Lost => {
                    // Logged by the reader; it can never be delivered.
                    queue.remove(seq);
                    continue;
                }
            };
            if let Some(limit) = max_bytes
                && !out.is_empty()
                && bytes + size > limit
            {
                break;
            }
            queue.ready.pop_first();
            let generation = queue.next_generation;
            queue.next_generation += 1;
            let Some(entry) = queue.entries.get_mut(&seq) else {
                continue;
            };
            entry.attempts += 1;
            entry.state = State::Leased {
                generation,
                deadline,
            };
            let lease = LeaseId { seq, generation };
            bytes += size;
            out.push(Delivery {
                ack_id: lease.ack_id(),
                lease,
                message,
                attempt: entry.attempts,
            });
            queue.leases.push(Reverse((deadline, seq, generation)));
        }
        if !out.is_empty() && queue.next_wake.is_none_or(|w| deadline < w) {
            queue.next_wake = Some(deadline);
            self.timer.notify_one();
        }
        self.read_ahead(&mut queue, out.len(), blocked);
        out
    }

    /// Asks for the bodies of the next cold messages in delivery order when
    /// leasing is blocked on one, or once a quarter of a read-ahead batch
    /// has been leased since the last look (so the next batch is read while
    /// the previous one goes out). One request per subscription at a time.
    fn read_ahead(&self, queue: &mut Queue, leased: usize, blocked: bool) {
        queue.leased_since_read_ahead += leased;
        if !self.payloads.budget().any_cold()
            || !(blocked || queue.leased_since_read_ahead >= READ_AHEAD / 4)
            || self.reading_ahead.load(Ordering::Acquire)
        {
            return;
        }
        queue.leased_since_read_ahead = 0;
        let items = queue.cold_ahead();
        if items.is_empty() {
            return;
        }
        self.reading_ahead.store(true, Ordering::Release);
        // A closing broker reads no more; the flag stays set so that
        // nothing asks again.
        let _ = self
            .payloads
            .read_ahead(items, self.reading_ahead.clone(), self.changed.clone());
    }

    /// Whether a lease is still held (not acked, nacked or expired).
    pub fn is_leased(&self, lease: LeaseId) -> bool {
        matches!(
            self.queue().entries.get(&lease.seq).map(|e| e.state),
            Some(State::Leased { generation, .. }) if generation == lease.generation
        )
    }

    /// Acknowledges by ack id; returns the sequence numbers that left the
    /// backlog. An ack id of an expired lease still acknowledges the message
    /// unless another lease holds it now.
    pub fn ack(&self, ack_ids: &[String]) -> Result<Vec<u64>> {
        let leases = parse_ack_ids(ack_ids)?;
        let mut queue = self.queue();
        let acked = leases
            .into_iter()
            .filter(|lease| queue.remove_for_ack(*lease))
            .map(|lease| lease.seq)
            .collect::<Vec<_>>();
        drop(queue);
        if !acked.is_empty() {
            self.changed.notify_waiters();
        }
        Ok(acked)
    }

    /// Acknowledges one lease (a successful push).
    pub fn ack_lease(&self, lease: LeaseId) -> bool {
        let acked = self.queue().remove_for_ack(lease);
        if acked {
            self.changed.notify_waiters();
        }
        acked
    }

    /// `ModifyAckDeadline`: extends the leases, or with 0 seconds nacks them.
    pub fn modify_deadline(
        &self,
        ack_ids: &[String],
        seconds: i32,
        now: Instant,
    ) -> Result<Vec<Failure>> {
        if !(0..=600).contains(&seconds) {
            return Err(BrokerError::invalid(format!(
                "ack_deadline_seconds must be between 0 and 600 (got {seconds})"
            )));
        }
        let leases = parse_ack_ids(ack_ids)?;
        if seconds == 0 {
            return Ok(self.nack(&leases, now));
        }
        let deadline = now + Duration::from_secs(seconds as u64);
        let mut queue = self.queue();
        for lease in leases {
            if let Some(entry) = queue.entries.get_mut(&lease.seq)
                && let State::Leased { generation, .. } = entry.state
                && generation == lease.generation
            {
                entry.state = State::Leased {
                    generation,
                    deadline,
                };
                queue
                    .leases
                    .push(Reverse((deadline, lease.seq, generation)));
            }
        }
        if queue.next_wake.is_none_or(|w| deadline < w) {
            queue.next_wake = Some(deadline);
            self.timer.notify_one();
        }
        Ok(Vec::new())
    }

    /// Ends leases as failed deliveries: each message is redelivered after its
    /// retry delay or, with its attempts used up, handed back for dead
    /// lettering.
    pub fn nack(&self, leases: &[LeaseId], now: Instant) -> Vec<Failure> {
        let settings = self.settings();
        let mut queue = self.queue();
        let mut failures = Vec::new();
        for lease in leases {
            if queue.holds(*lease)
                && let Some(failure) = queue.fail(lease.seq, &settings, now)
            {
                failures.push(failure);
            }
        }
        self.after_failures(queue, !failures.is_empty());
        failures
    }

    /// Expires overdue leases, releases messages whose retry delay is over,
    /// drops messages past retention, and says when to look again.
    pub fn tick(&self, now: Instant, wall: SystemTime) -> Tick {
        let settings = self.settings();
        let mut queue = self.queue();
        let mut tick = Tick::default();
        while let Some(&Reverse((deadline, seq, generation))) = queue.leases.peek() {
            if deadline > now {
                break;
            }
            queue.leases.pop();
            let current = queue.entries.get(&seq).map(|e| e.state);
            if current
                == Some(State::Leased {
                    generation,
                    deadline,
                })
                && let Some(failure) = queue.fail(seq, &settings, now)
            {
                tick.failures.push(failure);
            }
        }
        let mut released = false;
        while let Some(&Reverse((at, seq))) = queue.delayed.peek() {
            if at > now {
                break;
            }
            queue.delayed.pop();
            if let Some(entry) = queue.entries.get_mut(&seq)
                && entry.state == State::Delayed(at)
            {
                entry.state = State::Ready;
                queue.ready.insert(seq);
                released = true;
            }
        }
        if queue.next_retention_check.is_none_or(|t| t <= now) {
            queue.next_retention_check = Some(now + RETENTION_CHECK_EVERY);
            let horizon = wall
                .checked_sub(settings.retention)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let old: Vec<u64> = queue
                .entries
                .iter()
                .filter(|(_, e)| e.stored.published_at < horizon && e.state != State::Parked)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in &old {
                queue.remove(*seq);
            }
            tick.expired = old;
        }
        tick.next_wake = [
            queue.leases.peek().map(|r| r.0.0),
            queue.delayed.peek().map(|r| r.0.0),
            queue.next_retention_check,
        ]
        .into_iter()
        .flatten()
        .min();
        queue.next_wake = tick.next_wake;
        let wake = released || !tick.failures.is_empty() || !tick.expired.is_empty();
        self.after_failures(queue, wake);
        tick
    }

    /// Puts a parked message back (its dead-letter forwarding failed) to be
    /// tried again after `delay`.
    pub fn unpark(&self, seq: u64, delay: Duration, now: Instant) {
        let mut queue = self.queue();
        let at = now + delay;
        if let Some(entry) = queue.entries.get_mut(&seq)
            && entry.state == State::Parked
        {
            entry.state = State::Delayed(at);
            queue.delayed.push(Reverse((at, seq)));
            if queue.next_wake.is_none_or(|w| at < w) {
                queue.next_wake = Some(at);
                self.timer.notify_one();
            }
        }
    }

    /// Drops the whole backlog (a detached subscription); returns what was
    /// dropped, for the store.
    pub fn clear(&self) -> Vec<u64> {
        let mut queue = self.queue();
        let seqs: Vec<u64> = queue.entries.keys().copied().collect();
        let generation = queue.next_generation;
        *queue = Queue {
            next_generation: generation,
            ..Queue::default()
        };
        seqs
    }

    /// Removes a parked message once it reached the dead-letter topic.
    pub fn remove_parked(&self, seq: u64) {
        let mut queue = self.queue();
        if queue
            .entries
            .get(&seq)
            .is_some_and(|e| e.state == State::Parked)
        {
            queue.remove(seq);
        }
    }

    fn after_failures(&self, queue: std::sync::MutexGuard<'_, Queue>, wake: bool) {
        let earliest_delay = queue.delayed.peek().map(|r| r.0.0);
        let wake_timer = matches!((earliest_delay, queue.next_wake), (Some(d), Some(w)) if d < w)
            || (earliest_delay.is_some() && queue.next_wake.is_none());
        drop(queue);
        if wake_timer {
            self.timer.notify_one();
        }
        if wake {
            self.changed.notify_waiters();
        }
    }
}

impl Queue {
    /// The next messages in delivery order whose bodies are on disk only,
    /// claimed for reading: ready ones oldest first and, with ordering, the
    /// ones waiting behind each ready key. At most one read-ahead batch,
    /// found within a bounded walk.
    fn cold_ahead(&self) -> Vec<Arc<Stored>> {
        /// How many of a key's waiting messages one batch reads.
        const PER_KEY: usize = 16;
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut take = |stored: &Arc<Stored>| {
            if stored.claim() {
                bytes += stored.size;
                items.push(stored.clone());
            }
            items.len() >= READ_AHEAD || bytes >= READ_AHEAD_BYTES
        };
        for seq in self.ready.iter().take(4 * READ_AHEAD) {
            let Some(entry) = self.entries.get(seq) else {
                continue;
            };
            if take(&entry.stored) {
                break;
            }
            let key = &*entry.stored.ordering_key;
            if let Some(line) = self.keys.get(key).filter(|_| !key.is_empty()) {
                let waiting = line.iter().skip(1).take(PER_KEY);
                if waiting
                    .filter_map(|s| self.entries.get(s))
                    .any(|e| take(&e.stored))
                {
                    break;
                }
            }
        }
        items
    }

    fn holds(&self, lease: LeaseId) -> bool {
        matches!(
            self.entries.get(&lease.seq).map(|e| e.state),
            Some(State::Leased { generation, .. }) if generation == lease.generation
        )
    }

    fn remove_for_ack(&mut self, lease: LeaseId) -> bool {
        let Some(entry) = self.entries.get(&lease.seq) else {
            return false;
        };
        match entry.state {
            State::Leased { generation, .. } if generation != lease.generation => false,
            State::Parked => false,
            _ => {
                self.remove(lease.seq);
                true
            }
        }
    }

    /// Adds a message; with ordering, behind the earlier messages of its key.
    fn add(&mut self, stored: Arc<Stored>, attempts: u32, ordered: bool) {
        let seq = stored.seq;
        let key = &stored.ordering_key;
        let mut state = State::Ready;
        if ordered && !key.is_empty() {
            let line = self.keys.entry(key.to_string()).or_default();
            let mut at = line.partition_point(|s| *s < seq);
            if at == 0 && !line.is_empty() {
                // A concurrent publish committed later but sorts first: it
                // may only take the head if the head has not gone out yet.
                let head = line[0];
                match self.entries.get_mut(&head) {
                    Some(e) if e.state == State::Ready => {
                        e.state = State::Waiting;
                        self.ready.remove(&head);
                    }
                    _ => at = 1,
                }
            }
            line.insert(at, seq);
            if at > 0 {
                state = State::Waiting;
            }
        }
        self.entries.insert(
            seq,
            Entry {
                stored,
                attempts,
                state,
            },
        );
        if state == State::Ready {
            self.ready.insert(seq);
        }
    }

    /// Removes a message from the backlog; with ordering, the next message
    /// of its key becomes ready. A body that other subscriptions still hold
    /// goes back to disk when the budget is exceeded.
    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        if Arc::strong_count(&entry.stored) > 1 {
            entry.stored.evict_if_over_budget();
        }
        if self.entries.is_empty() && self.entries.capacity() > 4096 {
            // A drained backlog gives its table back.
            self.entries = HashMap::new();
        }
        self.ready.remove(&seq);
        let key = &*entry.stored.ordering_key;
        if let Some(line) = self.keys.get_mut(key) {
            if let Some(at) = line.iter().position(|s| *s == seq) {
                line.remove(at);
                if at == 0
                    && let Some(&next) = line.front()
                    && let Some(e) = self.entries.get_mut(&next)
                    && e.state == State::Waiting
                {
                    e.state = State::Ready;
                    self.ready.insert(next);
                }
            }
            if line.is_empty() {
                self.keys.remove(key);
            }
        }
        Some(entry)
    }

    /// A delivery of `seq` failed: schedule the retry or park it for the
    /// dead-letter topic.
    fn fail(&mut self, seq: u64, settings: &SubscriptionSettings, now: Instant) -> Option<Failure> {
        let entry = self.entries.get_mut(&seq)?;
        let attempts = entry.attempts;
        if let Some(dead_letter) = &settings.dead_letter
            && attempts >= dead_letter.max_delivery_attempts
        {
            entry.state = State::Parked;
            return Some(Failure {
                seq,
                attempts,
                dead_letter: Some(entry.stored.clone()),
            });
        }
        let delay = retry_delay(settings.retry.as_ref(), attempts, rand::random());
        if delay.is_zero() {
            entry.state = State::Ready;
            self.ready.insert(seq);
        } else {
            let at = now + delay;
            entry.state = State::Delayed(at);
            self.delayed.push(Reverse((at, seq)));
        }
        Some(Failure {
            seq,
            attempts,
            dead_letter: None,
        })
    }
}

fn parse_ack_ids(ack_ids: &[String]) -> Result<Vec<LeaseId>> {
    ack_ids
        .iter()
        .map(|id| {
            LeaseId::parse(id)
                .ok_or_else(|| BrokerError::invalid(format!("\"{id}\" is not a valid ack id")))
        })
        .collect()
}

#[cfg(test)]
mod tests;
