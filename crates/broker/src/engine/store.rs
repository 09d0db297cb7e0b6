//! Durable state in SQLite.
//!
//! One writer thread owns the connection. Requests queue on a channel; the
//! writer takes everything that is waiting, applies it in one transaction and
//! commits once (WAL, `synchronous=FULL`: the commit is fsynced), then answers
//! every request of the batch. Concurrent publishes therefore share one fsync
//! (group commit), and a publish is answered only once it is on disk.
//!
//! Tables: `topics` and `subscriptions` hold the API's own protobuf encoding
//! of each resource; `messages` holds each published message once;
//! `deliveries` holds one row per (message, subscription) that is not yet
//! acknowledged, with the number of failed delivery attempts, keyed by
//! `(seq, sub)` and with no other index (each index cost a page in every
//! commit; only deleting a subscription, which is rare, scans the table).
//! A message row is deleted with its last delivery row. A dead letter is
//! one command: its copy's rows and the deletion of its source's delivery
//! row ([`Settled`]) are in one transaction, never split across two.
//!
//! Reading is separate from writing: [`open_reader`] opens a read-only
//! connection beside the writer's, through which `payloads` reads the
//! bodies it does not keep in memory ([`read_message`],
//! [`read_message_range`]) and the broker restores its backlog at start-up
//! ([`for_each_delivery`]).
//!
//! Data at rest: messages are lab reports, so the file and its `-wal` and
//! `-shm` are the operator's alone: 0600, in a 0700 directory, made so
//! before SQLite opens the file (SQLite gives `-wal` and `-shm` the
//! database's mode), looser ones tightened (`labrelay_runtime::private_fs`).
//! `secure_delete = ON` zeroes a deleted row in its page and a page the
//! delete frees, so once a commit is checkpointed into the database file
//! (every 1000 WAL pages, and when its last connection closes) an acknowledged
//! message is no longer in that file, free pages included. `FAST` would not
//! do: it zeroes rows only in pages written anyway and leaves freed pages
//! (whole pages of acknowledged messages, a large message's overflow
//! pages) on the free list as they were. What it does not cover is the
//! WAL: SQLite reuses the `-wal` from its start after a checkpoint instead
//! of erasing it, so until later commits overwrite them its frames still
//! hold the pages of recent commits, acknowledged messages included; that
//! file is protected by its mode only. The cost (`labrelay-bench --broker`,
//! alternating runs with and without): publishing and pushing unchanged
//! within the run-to-run noise; StreamingPull, which deletes fastest, about
//! 8% slower (each freed page is written once more, as zeros).

use std::path::Path;
use std::thread;

use anyhow::Context as _;
use labrelay_runtime::private_fs;
use rusqlite::{Connection, OptionalExtension as _, params};
use tokio::sync::{mpsc, oneshot};

use crate::error::BrokerError;

/// How many queued requests one transaction takes at most.
const MAX_BATCH: usize = 4096;

/// How many message sequence numbers `meta.next_seq` reserves ahead of the
/// highest one stored. The row is rewritten only when a publish reaches it,
/// not in every commit (it cost a page in each commit's WAL frames); after
/// a restart the ids carry on from the reservation, skipping at most this
/// many, and are never reused.
const SEQ_RESERVE: u64 = 1 << 16;

/// How long a batch of nothing but background writes (push acks, attempt
/// counts: nobody waits for them) waits for company before it is
/// committed. Pushes complete one by one, so without it each ack paid an
/// fsync of its own (650 fsyncs/s for 800 acks/s in `labrelay-bench`);
/// losing one to a crash costs one redelivery, which the receivers'
/// notification log absorbs.
const BACKGROUND_COALESCE: std::time::Duration = std::time::Duration::from_millis(2);

/// The topics and subscriptions the broker had on disk when it started.
/// The unacknowledged messages are read with [`for_each_delivery`], so
/// that their bodies need not all be in memory at once.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub topics: Vec<Vec<u8>>,
    /// `(id, encoded pb::Subscription)`.
    pub subscriptions: Vec<(i64, Vec<u8>)>,
    /// The next free message sequence number.
    pub next_seq: u64,
}

type Reply<T> = oneshot::Sender<Result<T, BrokerError>>;

/// A message to store, with the subscriptions that will deliver it.
pub struct NewMessage {
    pub seq: u64,
    /// The encoded `pb::PubsubMessage`.
    pub bytes: Vec<u8>,
    pub subscriptions: Vec<i64>,
}

/// The delivery a dead letter settles: acknowledged in the transaction
/// that stores its copy on the dead-letter topic, so that a crash leaves
/// either both or neither.
#[derive(Debug, Clone, Copy)]
pub struct Settled {
    pub subscription: i64,
    pub seq: u64,
}

enum Command {
    Publish {
        messages: Vec<NewMessage>,
        settles: Option<Settled>,
        reply: Reply<()>,
    },
    Ack {
        subscription: i64,
        seqs: Vec<u64>,
        reply: Option<Reply<()>>,
    },
    Attempts {
        subscription: i64,
        seq: u64,
        attempts: u32,
    },
    PutTopic {
        name: String,
        config: Vec<u8>,
        reply: Reply<()>,
    },
    DeleteTopic {
        name: String,
        reply: Reply<()>,
    },
    PutSubscription {
        name: String,
        config: Vec<u8>,
        reply: Reply<i64>,
    },
    DeleteSubscription {
        id: i64,
        reply: Reply<()>,
    },
    /// Commit what came before, then stop.
    Close,
}

impl Command {
    /// Whether nobody waits for this write.
    fn is_background(&self) -> bool {
        matches!(
            self,
            Command::Ack { reply: None, .. } | Command::Attempts { .. }
        )
    }
}

/// A handle on the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Command>,
    #[cfg(test)]
    failpoint: Failpoints,
}

/// Where the writer stops as if the process had died there (tests only):
/// it answers nobody and writes nothing more, and what it had not
/// committed is not on disk. Reopening the file is the restart.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failpoint {
    /// Inside the transaction that stores a delivery for this subscription
    /// id, after applying it and before its commit.
    BeforeCommitStoring(i64),
    /// Right after the commit of the transaction that stores a delivery for
    /// this subscription id.
    AfterCommitStoring(i64),
}

#[cfg(test)]
type Failpoints = std::sync::Arc<std::sync::Mutex<Option<Failpoint>>>;

/// The writer thread, to be joined at shutdown.
pub struct StoreThread(thread::JoinHandle<()>);

impl StoreThread {
    /// Waits until the writer has committed what was queued before
    /// [`Store::close`] and closed the database.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

fn open_connection(path: &Path) -> anyhow::Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_fs::private_dir(dir)
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    private_fs::prepare_sqlite(path)
        .with_context(|| format!("making {} private", path.display()))?;
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA secure_delete = ON;
         PRAGMA foreign_keys = OFF;
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, config BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS subscriptions (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             name TEXT NOT NULL UNIQUE,
             config BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, message BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS deliveries (
             seq INTEGER NOT NULL,
             sub INTEGER NOT NULL,
             attempts INTEGER NOT NULL DEFAULT 0,
             PRIMARY KEY (seq, sub)) WITHOUT ROWID;
         DROP INDEX IF EXISTS deliveries_by_sub;",
    )
    .context("creating the schema")?;
    Ok(conn)
}

fn load(conn: &mut Connection) -> anyhow::Result<Snapshot> {
    let tx = conn.transaction()?;
    // Rows left behind by a subscription deleted while a publish was in
    // flight, messages nobody needs any more, and deliveries of a message
    // that is gone (they could never be delivered).
    tx.execute_batch(
        "DELETE FROM deliveries WHERE sub NOT IN (SELECT id FROM subscriptions);
         DELETE FROM messages WHERE seq NOT IN (SELECT seq FROM deliveries);
         DELETE FROM deliveries WHERE seq NOT IN (SELECT seq FROM messages);",
    )?;
    let mut snapshot = Snapshot::default();
    {
        let mut stmt = tx.prepare("SELECT config FROM topics ORDER BY name")?;
        snapshot.topics = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut stmt = tx.prepare("SELECT id, config FROM subscriptions ORDER BY name")?;
        snapshot.subscriptions = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let max_message: Option<i64> =
            tx.query_row("SELECT MAX(seq) FROM messages", [], |r| r.get(0))?;
        let stored_next: Option<i64> = tx
            .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
                r.get(0)
            })
            .optional()?;
        snapshot.next_seq = max_message
            .map(|m| m + 1)
            .max(stored_next)
            .unwrap_or(1)
            .max(1) as u64;
    }
    tx.commit()?;
    Ok(snapshot)
}

/// Opens a connection that only reads, beside the writer's (WAL lets
/// readers and the writer proceed without waiting for each other): message
/// bodies that are not kept in memory are read back through it.
pub(crate) fn open_reader(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    // Each body is read about once: a large page cache would only hold
    // copies of what was just delivered.
    conn.execute_batch(
        "PRAGMA query_only = ON;
         PRAGMA cache_size = -1024;",
    )
    .context("configuring a reader")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Reads one message's encoded `pb::PubsubMessage` and hands it to `f`
/// without copying; `None` when there is no such message.
pub(crate) fn read_message<T>(
    conn: &Connection,
    seq: u64,
    f: impl FnOnce(&[u8]) -> T,
) -> rusqlite::Result<Option<T>> {
    let mut stmt = conn.prepare_cached("SELECT message FROM messages WHERE seq = ?1")?;
    let mut rows = stmt.query(params![seq as i64])?;
    match rows.next()? {
        Some(row) => Ok(Some(f(row.get_ref(0)?.as_blob()?))),
        None => Ok(None),
    }
}

/// Calls `visit(seq, encoded pb::PubsubMessage)` for every message with
/// `first <= seq <= last`, in order: one walk of the table, cheaper than a
/// lookup per message when most of the range is wanted.
pub(crate) fn read_message_range(
    conn: &Connection,
    first: u64,
    last: u64,
    mut visit: impl FnMut(u64, &[u8]),
) -> rusqlite::Result<()> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, message FROM messages WHERE seq BETWEEN ?1 AND ?2")?;
    let mut rows = stmt.query(params![first as i64, last as i64])?;
    while let Some(row) = rows.next()? {
        visit(row.get::<_, i64>(0)? as u64, row.get_ref(1)?.as_blob()?);
    }
    Ok(())
}

/// Calls `visit(subscription id, seq, failed attempts, encoded
/// pb::PubsubMessage)` for every unacknowledged delivery, in publish order
/// (the rows of one message are adjacent), one row in memory at a time.
pub(crate) fn for_each_delivery(
    conn: &Connection,
    mut visit: impl FnMut(i64, u64, u32, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT d.sub, d.seq, d.attempts, m.message
         FROM deliveries d JOIN messages m ON m.seq = d.seq ORDER BY d.seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        visit(
            row.get(0)?,
            row.get::<_, i64>(1)? as u64,
            row.get(2)?,
            row.get_ref(3)?.as_blob()?,
        )?;
    }
    Ok(())
}

impl Store {
    /// Opens (or creates) the database at `path`, reads it back, and starts the
    /// writer thread.
    pub fn open(path: &Path) -> anyhow::Result<(Store, StoreThread, Snapshot)> {
        let mut conn = open_connection(path)?;
        let snapshot = load(&mut conn).context("reading the store")?;
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        #[cfg(test)]
        let failpoint = Failpoints::default();
        #[cfg(test)]
        let writer_failpoint = failpoint.clone();
        let handle = thread::Builder::new()
            .name("broker-store".into())
            .spawn(move || {
                Writer {
                    conn,
                    rx,
                    reserved_seq: snapshot.next_seq,
                    stopped: false,
                    #[cfg(test)]
                    failpoint: writer_failpoint,
                }
                .run()
            })
            .context("starting the store thread")?;
        let store = Store {
            tx,
            #[cfg(test)]
            failpoint,
        };
        Ok((store, StoreThread(handle), snapshot))
    }

    /// Arms a [`Failpoint`]: the writer stops there, once.
    #[cfg(test)]
    pub(crate) fn fail_at(&self, failpoint: Failpoint) {
        *self.failpoint.lock().expect("failpoint lock") = Some(failpoint);
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, BrokerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| BrokerError::Unavailable("the store is closed".into()))?;
        rx.await
            .map_err(|_| BrokerError::Unavailable("the store is closed".into()))?
    }

    /// Hands messages, and one delivery row per subscription that will
    /// deliver them, to the writer; returns once they are queued, with what
    /// completes when they are on disk. Once this returns they will be
    /// committed, whatever becomes of the caller. A message no subscription
    /// wants only advances the sequence. With `settles` (a dead letter's
    /// source), that delivery is acknowledged in the same transaction.
    pub async fn queue_publish(
        &self,
        messages: Vec<NewMessage>,
        settles: Option<Settled>,
    ) -> Result<oneshot::Receiver<Result<(), BrokerError>>, BrokerError> {
        let (reply, committed) = oneshot::channel();
        self.tx
            .send(Command::Publish {
                messages,
                settles,
                reply,
            })
            .await
            .map_err(|_| BrokerError::Unavailable("the store is closed".into()))?;
        Ok(committed)
    }

    /// [`Store::queue_publish`], then waits until the messages are on disk.
    #[cfg(test)]
    pub async fn publish(&self, messages: Vec<NewMessage>) -> Result<(), BrokerError> {
        self.queue_publish(messages, None)
            .await?
            .await
            .map_err(|_| BrokerError::Unavailable("the store is closed".into()))?
    }

    /// Removes acknowledged deliveries and returns once that is on disk.
    pub async fn ack(&self, subscription: i64, seqs: Vec<u64>) -> Result<(), BrokerError> {
        self.call(|reply| Command::Ack {
            subscription,
            seqs,
            reply: Some(reply),
        })
        .await
    }

    /// Removes acknowledged deliveries without waiting: a lost ack only means
    /// one more delivery.
    pub async fn ack_later(&self, subscription: i64, seqs: Vec<u64>) {
        let _ = self
            .tx
            .send(Command::Ack {
                subscription,
                seqs,
                reply: None,
            })
            .await;
    }

    /// Records how many deliveries of a message have failed, so that dead
    /// lettering survives a restart.
    pub async fn record_attempts(&self, subscription: i64, seq: u64, attempts: u32) {
        let _ = self
            .tx
            .send(Command::Attempts {
                subscription,
                seq,
                attempts,
            })
            .await;
    }

    pub async fn put_topic(&self, name: String, config: Vec<u8>) -> Result<(), BrokerError> {
        self.call(|reply| Command::PutTopic {
            name,
            config,
            reply,
        })
        .await
    }

    pub async fn delete_topic(&self, name: String) -> Result<(), BrokerError> {
        self.call(|reply| Command::DeleteTopic { name, reply })
            .await
    }

    /// Inserts or replaces a subscription by name; returns its id.
    pub async fn put_subscription(
        &self,
        name: String,
        config: Vec<u8>,
    ) -> Result<i64, BrokerError> {
        self.call(|reply| Command::PutSubscription {
            name,
            config,
            reply,
        })
        .await
    }

    /// Asks the writer to stop after committing everything queued so far;
    /// later requests fail as unavailable.
    pub async fn close(&self) {
        let _ = self.tx.send(Command::Close).await;
    }

    /// Deletes a subscription and its backlog.
    pub async fn delete_subscription(&self, id: i64) -> Result<(), BrokerError> {
        self.call(|reply| Command::DeleteSubscription { id, reply })
            .await
    }
}

struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Command>,
    /// `meta.next_seq` as committed: every sequence below it is spoken for.
    reserved_seq: u64,
    /// Stopped at a failpoint (tests only): answers nobody, writes nothing.
    stopped: bool,
    #[cfg(test)]
    failpoint: Failpoints,
}

impl Writer {
    /// Handles every [`Command`] until all [`Store`] handles are dropped, then
    /// returns (closing the database after the last commit).
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut closing = false;
        while !closing
            && !self.stopped
            && let Some(first) = self.rx.blocking_recv()
        {
            batch.push(first);
            self.drain_into(&mut batch);
            if batch.len() < MAX_BATCH && batch.iter().all(Command::is_background) {
                thread::sleep(BACKGROUND_COALESCE);
                self.drain_into(&mut batch);
            }
            if let Some(at) = batch.iter().position(|c| matches!(c, Command::Close)) {
                closing = true;
                batch.truncate(at);
            }
            if !batch.is_empty() {
                self.commit_batch(std::mem::take(&mut batch));
            }
        }
        self.rx.close();
    }

    /// Moves what is queued into `batch`, up to [`MAX_BATCH`].
    fn drain_into(&mut self, batch: &mut Vec<Command>) {
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
    }

    fn commit_batch(&mut self, batch: Vec<Command>) {
        if self.stopped {
            return;
        }
        let applied = self.apply_all(&batch);
        if self.stopped {
            return;
        }
        let ids = match applied {
            Ok(ids) => ids,
            Err(error) if batch.len() > 1 => {
                // One bad request must not fail the others: retry one by one.
                tracing::warn!(
                    cause = format!("{error:#}"),
                    "group commit failed; retrying one by one"
                );
                for command in batch {
                    self.commit_batch(vec![command]);
                }
                return;
            }
            Err(error) => {
                let message = format!("{error:#}");
                for command in batch {
                    fail(command, &message);
                }
                return;
            }
        };
        for (command, id) in batch.into_iter().zip(ids) {
            succeed(command, id);
        }
    }

    /// Applies a batch in one transaction; returns the id each command
    /// produced (only subscriptions get one).
    fn apply_all(&mut self, batch: &[Command]) -> anyhow::Result<Vec<Option<i64>>> {
        // BEGIN and COMMIT as cached statements: `Connection::transaction`
        // parses them again for every batch.
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let mut max_seq = None;
        let applied = batch
            .iter()
            .map(|command| apply(&self.conn, command, &mut max_seq))
            .collect::<anyhow::Result<Vec<_>>>()
            .and_then(|ids| {
                let reserve = max_seq
                    .filter(|m| *m >= self.reserved_seq)
                    .map(|max| max + 1 + SEQ_RESERVE);
                if let Some(reserve) = reserve {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO meta (key, value) VALUES ('next_seq', ?1)
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        )?
                        .execute(params![reserve as i64])?;
                }
                if self.stops_at(batch, true) {
                    anyhow::bail!("stopped at a failpoint");
                }
                self.conn.prepare_cached("COMMIT")?.execute([])?;
                self.stops_at(batch, false);
                Ok((ids, reserve))
            });
        match applied {
            Ok((ids, reserve)) => {
                if let Some(reserve) = reserve {
                    self.reserved_seq = reserve;
                }
                Ok(ids)
            }
            Err(error) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                Err(error)
            }
        }
    }
}

impl Writer {
    /// Whether an armed [`Failpoint`] stops the writer at this batch,
    /// `before_commit` or after it; disarms it when it does.
    #[cfg(test)]
    fn stops_at(&mut self, batch: &[Command], before_commit: bool) -> bool {
        let mut armed = self.failpoint.lock().expect("failpoint lock");
        let Some(failpoint) = *armed else {
            return false;
        };
        let (subscription, before) = match failpoint {
            Failpoint::BeforeCommitStoring(id) => (id, true),
            Failpoint::AfterCommitStoring(id) => (id, false),
        };
        let stores = batch.iter().any(|command| {
            matches!(command, Command::Publish { messages, .. }
                if messages.iter().any(|m| m.subscriptions.contains(&subscription)))
        });
        if before != before_commit || !stores {
            return false;
        }
        *armed = None;
        self.stopped = true;
        true
    }

    #[cfg(not(test))]
    fn stops_at(&mut self, _batch: &[Command], _before_commit: bool) -> bool {
        false
    }
}

fn apply(
    tx: &Connection,
    command: &Command,
    max_seq: &mut Option<u64>,
) -> anyhow::Result<Option<i64>> {
    match command {
        Command::Publish {
            messages, settles, ..
        } => {
            let mut insert_message =
                tx.prepare_cached("INSERT INTO messages (seq, message) VALUES (?1, ?2)")?;
            let mut insert_delivery =
                tx.prepare_cached("INSERT OR IGNORE INTO deliveries (seq, sub) VALUES (?1, ?2)")?;
            for message in messages {
                *max_seq = Some(max_seq.unwrap_or(0).max(message.seq));
                if message.subscriptions.is_empty() {
                    continue;
                }
                insert_message.execute(params![message.seq as i64, message.bytes])?;
                for sub in &message.subscriptions {
                    insert_delivery.execute(params![message.seq as i64, sub])?;
                }
            }
            if let Some(settled) = settles {
                delete_delivery(tx, settled.subscription, settled.seq)?;
            }
        }
        Command::Ack {
            subscription, seqs, ..
        } => {
            for seq in seqs {
                delete_delivery(tx, *subscription, *seq)?;
            }
        }
        Command::Attempts {
            subscription,
            seq,
            attempts,
        } => {
            tx.prepare_cached("UPDATE deliveries SET attempts = ?3 WHERE seq = ?1 AND sub = ?2")?
                .execute(params![*seq as i64, subscription, attempts])?;
        }
        Command::PutTopic { name, config, .. } => {
            tx.prepare_cached(
                "INSERT INTO topics (name, config) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET config = excluded.config",
            )?
            .execute(params![name, config])?;
        }
        Command::DeleteTopic { name, .. } => {
            tx.execute("DELETE FROM topics WHERE name = ?1", params![name])?;
        }
        Command::PutSubscription { name, config, .. } => {
            tx.prepare_cached(
                "INSERT INTO subscriptions (name, config) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET config = excluded.config",
            )?
            .execute(params![name, config])?;
            let id = tx
                .prepare_cached("SELECT id FROM subscriptions WHERE name = ?1")?
                .query_row(params![name], |r| r.get(0))?;
            return Ok(Some(id));
        }
        Command::Close => {}
        Command::DeleteSubscription { id, .. } => {
            tx.execute("DELETE FROM subscriptions WHERE id = ?1", params![id])?;
            tx.execute("DELETE FROM deliveries WHERE sub = ?1", params![id])?;
            tx.execute(
                "DELETE FROM messages WHERE seq NOT IN (SELECT seq FROM deliveries)",
                [],
            )?;
        }
    }
    Ok(None)
}

/// Deletes an acknowledged delivery, and its message when no other
/// subscription still needs it.
fn delete_delivery(tx: &Connection, subscription: i64, seq: u64) -> rusqlite::Result<()> {
    let deleted = tx
        .prepare_cached("DELETE FROM deliveries WHERE seq = ?1 AND sub = ?2")?
        .execute(params![seq as i64, subscription])?;
    if deleted > 0 {
        tx.prepare_cached(
            "DELETE FROM messages WHERE seq = ?1
             AND NOT EXISTS (SELECT 1 FROM deliveries WHERE seq = ?1)",
        )?
        .execute(params![seq as i64])?;
    }
    Ok(())
}

/// Answers a command whose transaction committed.
fn succeed(command: Command, id: Option<i64>) {
    match command {
        Command::Publish { reply, .. }
        | Command::PutTopic { reply, .. }
        | Command::DeleteTopic { reply, .. }
        | Command::DeleteSubscription { reply, .. }
        | Command::Ack {
            reply: Some(reply), ..
        } => {
            let _ = reply.send(Ok(()));
        }
        Command::PutSubscription { reply, .. } => {
            let _ = reply.send(id.ok_or_else(|| anyhow::anyhow!("no subscription id").into()));
        }
        Command::Ack { reply: None, .. } | Command::Attempts { .. } | Command::Close => {}
    }
}

fn fail(command: Command, message: &str) {
    let error = || BrokerError::Unavailable(message.to_string());
    match command {
        Command::Publish { reply, .. }
        | Command::PutTopic { reply, .. }
        | Command::DeleteTopic { reply, .. }
        | Command::DeleteSubscription { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Command::Ack {
            reply: Some(reply), ..
        } => {
            let _ = reply.send(Err(error()));
        }
        Command::PutSubscription { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Command::Close => {}
        Command::Ack { reply: None, .. } | Command::Attempts { .. } => {
            tracing::warn!(
                cause = message,
                "could not record an acknowledgement or attempt count"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_publishes_are_stored_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.sqlite3");
        let (store, thread, _) = Store::open(&path).unwrap();
        let sub = store
            .put_subscription("projects/p/subscriptions/s".into(), Vec::new())
            .await
            .unwrap();
        let publishes: Vec<_> = (1..=64u64)
            .map(|seq| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .publish(vec![NewMessage {
                            seq,
                            bytes: vec![seq as u8],
                            subscriptions: vec![sub],
                        }])
                        .await
                })
            })
            .collect();
        for publish in publishes {
            publish.await.unwrap().unwrap();
        }
        // A background write waits for company; a publish arriving
        // meanwhile ends the wait and commits both.
        store.ack_later(sub, vec![1, 2]).await;
        store
            .publish(vec![NewMessage {
                seq: 65,
                bytes: vec![65],
                subscriptions: Vec::new(),
            }])
            .await
            .unwrap();
        // Background writes are committed before the writer stops.
        store.ack_later(sub, vec![3]).await;
        store.close().await;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap();
        assert!(
            store.publish(Vec::new()).await.is_err(),
            "a closed store answers unavailable"
        );

        let (store, thread, snapshot) = Store::open(&path).unwrap();
        let mut deliveries = 0;
        for_each_delivery(&open_reader(&path).unwrap(), |_, _, _, _| {
            deliveries += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(deliveries, 61);
        // The first publish reserved the sequence numbers after it; the
        // ids carry on past the reservation, never below a stored one.
        assert!(
            (66..=65 + SEQ_RESERVE).contains(&snapshot.next_seq),
            "next_seq {} after 65 publishes",
            snapshot.next_seq
        );
        store.close().await;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_acknowledged_message_leaves_nothing_in_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.sqlite3");
        let (store, thread, _) = Store::open(&path).unwrap();
        let sub = store
            .put_subscription("projects/p/subscriptions/s".into(), Vec::new())
            .await
            .unwrap();
        // Large enough for overflow pages, and many small ones filling
        // whole leaf pages: both are freed by the acks.
        let marker = b"owner@example.org +15550100 results";
        let body = |size: usize| marker.iter().copied().cycle().take(size).collect();
        let messages: Vec<_> = (1..=200u64)
            .map(|seq| NewMessage {
                seq,
                bytes: body(if seq == 1 { 20_000 } else { 300 }),
                subscriptions: vec![sub],
            })
            .collect();
        store.publish(messages).await.unwrap();
        store.ack(sub, (1..=200).collect()).await.unwrap();
        store.close().await;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap();

        let file = std::fs::read(&path).unwrap();
        let found = file.windows(marker.len()).any(|w| w == marker);
        assert!(!found, "an acknowledged message is still in the file");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_store_and_its_wal_are_owner_only_and_loose_ones_are_tightened() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let set_mode = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("broker");
        let path = dir.join("broker.sqlite3");
        let (store, thread, _) = Store::open(&path).unwrap();
        store
            .put_topic("projects/p/topics/t".into(), Vec::new())
            .await
            .unwrap();
        assert_eq!(mode(&dir), 0o700);
        for file in ["broker.sqlite3", "broker.sqlite3-wal", "broker.sqlite3-shm"] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }
        store.close().await;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap();

        set_mode(&dir, 0o755);
        set_mode(&path, 0o644);
        let (store, thread, _) = Store::open(&path).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        store.close().await;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap();
    }
}
