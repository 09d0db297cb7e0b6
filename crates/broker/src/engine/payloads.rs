//! Message bodies in memory up to a budget; beyond it they stay on disk.
//!
//! A published message is a [`Message`]. Every unacknowledged message has
//! one [`Stored`] record, shared by the
//! subscriptions that hold it: sequence number, publish time, ordering key
//! and size are always in memory; the body (the whole `pb::PubsubMessage`,
//! data included) only while the message is *warm*. A message is published
//! (or restored at start-up, oldest first) warm while the resident bodies
//! fit in the budget ([`crate::BrokerConfig::payload_budget`]), or when a
//! subscription it goes to has almost nothing waiting, since it is about to
//! be delivered anyway. Otherwise it is *cold*: its bytes are only in
//! SQLite, where the publish had to put them before it was acknowledged.
//!
//! Leasing never waits for the disk: `Subscription::lease` hands out warm
//! messages oldest first and stops at the first cold one. It also reads
//! ahead: it asks the [`Payloads`] reader thread for the next cold
//! messages in delivery order (one batch per subscription at a time) some
//! while before they are needed. The thread reads them through its own
//! connection (WAL lets it read beside the writer), makes them warm, and
//! wakes the subscription's waiters (pullers, streams, the push worker),
//! which lease again.
//!
//! A body shared by several subscriptions (fan-out) exists once. When a
//! subscription lets go of a message that another one still holds while
//! the resident bodies are over budget, the body goes cold again, so a
//! stalled subscription cannot pin the whole backlog it shares with a
//! healthy one in memory.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use prost::Message as _;
use rusqlite::Connection;
use tokio::sync::{Notify, oneshot};

use crate::pb;

/// A published message, shared by every subscription that holds it.
#[derive(Debug)]
pub struct Message {
    pub seq: u64,
    /// With `message_id` and `publish_time` filled in.
    pub pb: pb::PubsubMessage,
    pub published_at: SystemTime,
}

impl Message {
    /// The size that counts against flow-control byte limits.
    pub fn size(&self) -> usize {
        self.pb.data.len()
            + self
                .pb
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// The most messages one read-ahead request brings back.
pub(crate) const READ_AHEAD: usize = 2048;
/// The most bytes one read-ahead request brings back (at least one message).
pub(crate) const READ_AHEAD_BYTES: usize = 8 << 20;
/// What a resident body costs beyond its data and attributes: the
/// `Message`, its `Arc`, the message id and the allocator's rounding.
pub(super) const BODY_OVERHEAD: usize = 256;
/// How long the reader waits before answering after the store failed, so
/// that a failing disk is not read in a tight loop.
const READ_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Resident body bytes against the budget, and how many messages are cold.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    resident: AtomicUsize,
    cold: AtomicUsize,
}

impl Budget {
    fn has_room(&self, cost: usize) -> bool {
        self.resident.load(Ordering::Relaxed) + cost <= self.limit
    }

    fn over(&self) -> bool {
        self.resident.load(Ordering::Relaxed) > self.limit
    }

    /// Whether any message anywhere is cold (read-ahead has work).
    pub(crate) fn any_cold(&self) -> bool {
        self.cold.load(Ordering::Relaxed) > 0
    }

    #[cfg(test)]
    pub(crate) fn resident(&self) -> usize {
        self.resident.load(Ordering::Relaxed)
    }
}

/// Where a message's body is.
#[derive(Debug)]
enum Body {
    /// Only in SQLite.
    Cold,
    /// Only in SQLite; a read of it has been asked for.
    Loading,
    Warm(Arc<Message>),
    /// Not in SQLite either (it cannot be delivered). Only reachable if the
    /// store lost a row it should have; logged when it happens.
    Lost,
}

/// What a leaser sees of a message's body.
pub(crate) enum Presence {
    Warm(Arc<Message>),
    /// Cold or being read.
    Absent,
    Lost,
}

/// One unacknowledged message, shared by every subscription holding it.
#[derive(Debug)]
pub struct Stored {
    pub seq: u64,
    pub published_at: SystemTime,
    pub ordering_key: Box<str>,
    /// What counts against flow-control byte limits ([`Message::size`]).
    pub size: usize,
    body: Mutex<Body>,
    budget: Arc<Budget>,
}

impl Stored {
    /// What a resident body costs against the budget.
    fn cost(&self) -> usize {
        self.size + self.ordering_key.len() + BODY_OVERHEAD
    }

    fn body(&self) -> std::sync::MutexGuard<'_, Body> {
        self.body.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The body when it is in memory.
    pub fn message(&self) -> Option<Arc<Message>> {
        match &*self.body() {
            Body::Warm(message) => Some(message.clone()),
            _ => None,
        }
    }

    pub(crate) fn presence(&self) -> Presence {
        match &*self.body() {
            Body::Warm(message) => Presence::Warm(message.clone()),
            Body::Lost => Presence::Lost,
            Body::Cold | Body::Loading => Presence::Absent,
        }
    }

    pub(crate) fn is_warm(&self) -> bool {
        matches!(*self.body(), Body::Warm(_))
    }

    /// Marks a cold body as asked for; true when the reader should get it
    /// (also when another subscription asked first: the reader skips what
    /// is warm by then, and answering this request implies it is).
    pub(crate) fn claim(&self) -> bool {
        let mut body = self.body();
        match *body {
            Body::Cold => {
                *body = Body::Loading;
                true
            }
            Body::Loading => true,
            Body::Warm(_) | Body::Lost => false,
        }
    }

    /// Makes a cold body resident (the reader read it).
    fn fill(&self, message: Arc<Message>) {
        let mut body = self.body();
        if matches!(*body, Body::Cold | Body::Loading) {
            *body = Body::Warm(message);
            self.budget.cold.fetch_sub(1, Ordering::Relaxed);
            self.budget
                .resident
                .fetch_add(self.cost(), Ordering::Relaxed);
        }
    }

    fn lose(&self) {
        let mut body = self.body();
        match *body {
            Body::Cold | Body::Loading => {
                self.budget.cold.fetch_sub(1, Ordering::Relaxed);
                *body = Body::Lost;
            }
            Body::Warm(_) | Body::Lost => {}
        }
    }

    /// A read failed: cold again, to be asked for again.
    fn unclaim(&self) {
        let mut body = self.body();
        if matches!(*body, Body::Loading) {
            *body = Body::Cold;
        }
    }

    /// Drops the resident body if the budget is exceeded (the message stays
    /// on disk).
    pub(crate) fn evict_if_over_budget(&self) {
        if !self.budget.over() {
            return;
        }
        let mut body = self.body();
        if matches!(*body, Body::Warm(_)) {
            *body = Body::Cold;
            self.budget
                .resident
                .fetch_sub(self.cost(), Ordering::Relaxed);
            self.budget.cold.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Stored {
    fn drop(&mut self) {
        let cost = self.cost();
        match self.body.get_mut().unwrap_or_else(|p| p.into_inner()) {
            Body::Warm(_) => {
                self.budget.resident.fetch_sub(cost, Ordering::Relaxed);
            }
            Body::Cold | Body::Loading => {
                self.budget.cold.fetch_sub(1, Ordering::Relaxed);
            }
            Body::Lost => {}
        }
    }
}

/// Who is told when a read finishes.
enum Done {
    /// A subscription's read-ahead: clear its flag, wake its waiters.
    Wake {
        loading: Arc<AtomicBool>,
        changed: Arc<Notify>,
    },
    /// One caller waiting for the bodies themselves.
    Reply(oneshot::Sender<Vec<Option<Arc<Message>>>>),
}

enum Request {
    Load { items: Vec<Arc<Stored>>, done: Done },
    Stop,
}

/// The budget and the reader thread. Shared by the broker and its
/// subscriptions.
pub(crate) struct Payloads {
    budget: Arc<Budget>,
    /// `None` for subscriptions made without a store (unit tests): nothing
    /// is ever cold there.
    reader: Option<Reader>,
}

struct Reader {
    tx: mpsc::Sender<Request>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    /// For the few synchronous reads (`Subscription::peek`, restore);
    /// separate from the thread's so that neither waits for the other.
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Payloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payloads")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Payloads {
    /// Everything warm, no store behind it (tests).
    #[cfg(test)]
    pub(crate) fn unbounded() -> Arc<Payloads> {
        Arc::new(Payloads {
            budget: Arc::new(Budget {
                limit: usize::MAX,
                resident: AtomicUsize::new(0),
                cold: AtomicUsize::new(0),
            }),
            reader: None,
        })
    }

    /// Opens two read connections on the store at `path` and starts the
    /// reader thread.
    pub(crate) fn open(path: &Path, budget: usize) -> anyhow::Result<Arc<Payloads>> {
        let thread_conn = crate::engine::store::open_reader(path)?;
        let conn = crate::engine::store::open_reader(path)?;
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("broker-reader".into())
            .spawn(move || run_reader(thread_conn, rx))
            .context("starting the reader thread")?;
        Ok(Arc::new(Payloads {
            budget: Arc::new(Budget {
                limit: budget,
                resident: AtomicUsize::new(0),
                cold: AtomicUsize::new(0),
            }),
            reader: Some(Reader {
                tx,
                thread: Mutex::new(Some(thread)),
                conn: Mutex::new(conn),
            }),
        }))
    }

    pub(crate) fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Makes the record of a message about to be enqueued: warm when the
    /// budget has room or `soon` (a subscription will deliver it at once).
    /// Returns the record and the message (the body when warm).
    pub(crate) fn admit(&self, mut message: Message, soon: bool) -> (Arc<Stored>, Arc<Message>) {
        let size = message.size();
        let cost = size + message.pb.ordering_key.len() + BODY_OVERHEAD;
        let warm = self.reader.is_none() || soon || self.budget.has_room(cost);
        let ordering_key: Box<str> = message.pb.ordering_key.as_str().into();
        let (seq, published_at) = (message.seq, message.published_at);
        let (body, message) = if warm {
            let message = Arc::new(message);
            self.budget.resident.fetch_add(cost, Ordering::Relaxed);
            (Body::Warm(message.clone()), message)
        } else {
            self.budget.cold.fetch_add(1, Ordering::Relaxed);
            // Only the disk keeps the data; the caller gets the rest.
            message.pb.data = Vec::new();
            (Body::Cold, Arc::new(message))
        };
        let stored = Stored {
            seq,
            published_at,
            ordering_key,
            size,
            body: Mutex::new(body),
            budget: self.budget.clone(),
        };
        (Arc::new(stored), message)
    }

    /// Asks the reader for the bodies of `items`; when they are in,
    /// `loading` is cleared and `changed` notified. False when the reader
    /// has stopped (the broker is closing).
    pub(crate) fn read_ahead(
        &self,
        items: Vec<Arc<Stored>>,
        loading: Arc<AtomicBool>,
        changed: Arc<Notify>,
    ) -> bool {
        self.send(Request::Load {
            items,
            done: Done::Wake { loading, changed },
        })
    }

    fn send(&self, request: Request) -> bool {
        let Some(reader) = &self.reader else {
            return false;
        };
        reader.tx.send(request).is_ok()
    }

    /// The body of one message, from memory or the disk (made warm).
    /// `None` when it cannot be read (the broker is closing, or the store
    /// lost it).
    pub(crate) async fn fetch(&self, stored: &Arc<Stored>) -> Option<Arc<Message>> {
        if let Some(message) = stored.message() {
            return Some(message);
        }
        let (reply, answer) = oneshot::channel();
        if !self.send(Request::Load {
            items: vec![stored.clone()],
            done: Done::Reply(reply),
        }) {
            return None;
        }
        answer.await.ok()?.pop().flatten()
    }

    /// The bodies of a few messages now, read on the calling thread without
    /// making them warm (the console's peek at a dead-letter backlog).
    pub(crate) fn read_now(&self, items: &[Arc<Stored>]) -> Vec<Option<Arc<Message>>> {
        let mut out: Vec<Option<Arc<Message>>> = items.iter().map(|s| s.message()).collect();
        let Some(reader) = &self.reader else {
            return out;
        };
        if out.iter().all(Option::is_some) {
            return out;
        }
        let conn = reader.conn.lock().unwrap_or_else(|p| p.into_inner());
        for (slot, stored) in out.iter_mut().zip(items) {
            if slot.is_none() {
                *slot = match crate::engine::store::read_message(&conn, stored.seq, decode) {
                    Ok(Some(Ok(pb))) => Some(Arc::new(Message {
                        seq: stored.seq,
                        pb,
                        published_at: stored.published_at,
                    })),
                    Ok(_) => None,
                    Err(error) => {
                        tracing::warn!(seq = stored.seq, %error, "could not read a message");
                        None
                    }
                };
            }
        }
        out
    }

    /// Reads every unacknowledged delivery back at start-up, oldest first:
    /// `visit(subscription id, record, failed attempts)`. Bodies are kept
    /// warm while the budget has room.
    pub(crate) fn restore(
        &self,
        mut visit: impl FnMut(i64, Arc<Stored>, u32),
    ) -> anyhow::Result<usize> {
        let reader = self.reader.as_ref().context("restoring needs a store")?;
        let conn = reader.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut current: Option<Arc<Stored>> = None;
        let mut restored = 0;
        crate::engine::store::for_each_delivery(&conn, |sub, seq, attempts, bytes| {
            let stored = match &current {
                Some(stored) if stored.seq == seq => stored.clone(),
                _ => {
                    let pb = decode(bytes).context("decoding a stored message")?;
                    let published_at = system_time(pb.publish_time.as_ref());
                    let (stored, _) = self.admit(
                        Message {
                            seq,
                            pb,
                            published_at,
                        },
                        false,
                    );
                    current = Some(stored.clone());
                    stored
                }
            };
            visit(sub, stored, attempts);
            restored += 1;
            Ok(())
        })?;
        Ok(restored)
    }

    /// Stops the reader thread and waits for it. Later reads fail.
    pub(crate) fn close(&self) {
        let Some(reader) = &self.reader else {
            return;
        };
        self.send(Request::Stop);
        let thread = reader
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn decode(bytes: &[u8]) -> Result<pb::PubsubMessage, prost::DecodeError> {
    pb::PubsubMessage::decode(bytes)
}

/// A stored publish time as a `SystemTime` (the epoch when missing).
pub(crate) fn system_time(ts: Option<&prost_types::Timestamp>) -> SystemTime {
    ts.and_then(|t| {
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(
            t.seconds.max(0) as u64,
            t.nanos.max(0) as u32,
        ))
    })
    .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The reader thread. Handles read requests in order, each in one read
/// transaction: bodies already warm are skipped, the others are read,
/// decoded and made warm, then the requester is told. Stops on
/// [`Request::Stop`] or when every sender is gone.
fn run_reader(mut conn: Connection, rx: mpsc::Receiver<Request>) {
    while let Ok(request) = rx.recv() {
        let Request::Load { items, done } = request else {
            break;
        };
        let keep_all = matches!(done, Done::Reply(_));
        let bodies = match read_batch(&mut conn, &items, keep_all) {
            Ok(bodies) => bodies,
            Err(error) => {
                tracing::warn!(
                    cause = format!("{error:#}"),
                    "could not read message bodies"
                );
                for stored in &items {
                    stored.unclaim();
                }
                thread::sleep(READ_ERROR_PAUSE);
                vec![None; items.len()]
            }
        };
        drop(items);
        match done {
            Done::Wake { loading, changed } => {
                loading.store(false, Ordering::Release);
                changed.notify_waiters();
            }
            Done::Reply(reply) => {
                let _ = reply.send(bodies);
            }
        }
    }
}

fn read_batch(
    conn: &mut Connection,
    items: &[Arc<Stored>],
    keep_all: bool,
) -> anyhow::Result<Vec<Option<Arc<Message>>>> {
    let tx = conn.transaction()?;
    let mut out: Vec<Option<Arc<Message>>> = items.iter().map(|s| s.message()).collect();
    // Not worth reading when acknowledged everywhere since it was asked
    // for (only this request still holds it), unless a caller waits for it.
    let wanted = |i: usize| keep_all || Arc::strong_count(&items[i]) > 1;
    let mut todo: Vec<usize> = (0..items.len())
        .filter(|&i| out[i].is_none() && wanted(i))
        .collect();
    todo.sort_unstable_by_key(|&i| items[i].seq);
    let mut found = vec![false; items.len()];
    let fill = |i: usize, bytes: &[u8], out: &mut Vec<Option<Arc<Message>>>| {
        let stored = &items[i];
        match decode(bytes) {
            Ok(pb) => {
                let message = Arc::new(Message {
                    seq: stored.seq,
                    pb,
                    published_at: stored.published_at,
                });
                stored.fill(message.clone());
                out[i] = Some(message);
            }
            Err(error) => {
                tracing::error!(seq = stored.seq, %error, "a stored message does not decode");
                stored.lose();
            }
        }
    };
    if let (Some(&lo), Some(&hi)) = (todo.first(), todo.last()) {
        let (first, last) = (items[lo].seq, items[hi].seq);
        if last - first < 4 * todo.len() as u64 {
            // Mostly what is wanted: one walk over the range.
            let mut at = 0;
            crate::engine::store::read_message_range(&tx, first, last, |seq, bytes| {
                while at < todo.len() && items[todo[at]].seq < seq {
                    at += 1;
                }
                if at < todo.len() && items[todo[at]].seq == seq {
                    let i = todo[at];
                    found[i] = true;
                    fill(i, bytes, &mut out);
                }
            })?;
        } else {
            for &i in &todo {
                if crate::engine::store::read_message(&tx, items[i].seq, |bytes| {
                    fill(i, bytes, &mut out)
                })?
                .is_some()
                {
                    found[i] = true;
                }
            }
        }
    }
    for &i in &todo {
        if !found[i] {
            if Arc::strong_count(&items[i]) > 1 {
                // Also seen when a subscription was deleted with its
                // backlog while a read of it was under way.
                tracing::warn!(
                    seq = items[i].seq,
                    "a message to deliver is missing from the store"
                );
            }
            items[i].lose();
        }
    }
    tx.commit()?;
    Ok(out)
}
