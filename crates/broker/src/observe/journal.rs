//! The message journal: what happened to each message, for the console's
//! report search. Per message: its topic, report id (the `reportId`
//! attribute), publish time, attributes and the subscriptions it was fanned
//! out to; per delivery: each push attempt (time, HTTP status or error,
//! latency, the receiver's `X-Labrelay-Outcome` with its
//! `X-Labrelay-Reason` and `X-Labrelay-Provider-Id`), acknowledgements by
//! pull subscribers, dead-lettering and replay. A message published to a
//! topic without subscriptions is journaled too: that is how the channels'
//! delivery receipts (`RECEIPTS_TOPIC`) reach the console.
//!
//! The journal is kept off the durable path on purpose. It has its own
//! SQLite file (`<data-dir>/journal.sqlite3`, WAL, `synchronous=NORMAL`: a
//! power cut may lose the last moments of history, never a message) written
//! by its own thread in batched transactions. The hooks hand events to a
//! bounded queue with `try_send`; when the queue is full the event is
//! dropped and counted (`labrelay_broker_journal_dropped_events_total`), so
//! the journal can never slow a publish or a push. Retention is bounded:
//! rows older than [`RETENTION`] go, and at most `max_messages` messages
//! (and ten events per message) are kept.
//!
//! Report ids and attributes (and, with `--console-show-data`, the
//! reports themselves) are personal data, kept as the store keeps
//! messages: the file and its `-wal`/`-shm` 0600, and `secure_delete = ON`
//! so that pruned rows are zeroed rather than left in free pages (see
//! `store.rs` for what that covers and what the WAL still holds).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use prometheus_client::metrics::counter::Counter;
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::dead_letter::DROPPED;
use crate::engine::payloads::Message;
use crate::engine::subscription::Subscription;
use crate::observe::stats::unix_millis;

/// Events waiting for the writer; beyond this they are dropped.
const QUEUE: usize = 65_536;
/// Events written in one transaction at most.
const BATCH: usize = 8_192;
/// How long the writer lets events gather after the first one before it
/// writes them in one transaction. Events come one per publish and per push,
/// so without it the writer woke (and each hook paid a wakeup) for a
/// transaction of one or two rows; the console polls once a second, so a
/// journey showing up 50 ms later changes nothing.
const GATHER: Duration = Duration::from_millis(50);
/// How long history is kept: Pub/Sub's default message retention.
pub(crate) const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The most messages (of one search) a journey answer lists.
pub(crate) const JOURNEY_LIMIT: usize = 100;

/// Something that happened to a message.
pub(crate) enum Event {
    Published {
        topic: String,
        messages: Vec<Arc<Message>>,
        subscriptions: Vec<Arc<Subscription>>,
        /// `wanted[s][m]`: subscription `s` got message `m`.
        wanted: Vec<Vec<bool>>,
    },
    Attempt {
        message_id: u64,
        subscription: String,
        attempt: u32,
        at: SystemTime,
        status: Option<u16>,
        error: Option<String>,
        latency: Duration,
        outcome: Option<String>,
        reason: Option<String>,
        provider_id: Option<String>,
    },
    DeadLettered {
        message_id: u64,
        subscription: String,
        at: SystemTime,
        attempts: u32,
        reason: String,
        /// `None`: the dead-letter topic had no subscription, so the
        /// message was dropped there.
        dead_letter_id: Option<String>,
    },
    /// Messages a pull subscriber acknowledged.
    Acked {
        subscription: String,
        seqs: Vec<u64>,
        at: SystemTime,
    },
    /// A dead letter was republished (as `new_id`) from the console.
    Replayed {
        message_id: u64,
        subscription: String,
        at: SystemTime,
        new_id: String,
    },
}

enum Command {
    Event(Box<Event>),
    Stop,
}

/// The journal: a queue to its writer thread and a connection for reads.
pub(crate) struct Journal {
    tx: SyncSender<Command>,
    dropped: Counter,
    reader: Arc<Mutex<Connection>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// One journaled message with its events, oldest first.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct JournalMessage {
    pub message_id: String,
    pub topic: String,
    pub report_id: Option<String>,
    pub published_ms: i64,
    pub attributes: BTreeMap<String, String>,
    pub subscriptions: Vec<String>,
    /// The message data as text, only with `--console-show-data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    pub events: Vec<JournalEvent>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct JournalEvent {
    pub subscription: String,
    /// `push`, `acked` (by a pull subscriber), `dead-lettered` or `replayed`.
    pub kind: String,
    pub at_ms: i64,
    pub attempt: Option<u32>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: Option<f64>,
    /// The receiver's `X-Labrelay-Outcome` on a push.
    pub outcome: Option<String>,
    /// Its `X-Labrelay-Reason` (why `suppressed`).
    pub reason: Option<String>,
    /// Its `X-Labrelay-Provider-Id` (what the provider calls what it sent).
    pub provider_id: Option<String>,
    /// The dead letter's id (dead-lettered) or the new message's (replayed).
    pub related_id: Option<String>,
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    PRAGMA secure_delete = ON;
    PRAGMA cache_size = -1024;
    CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        report_id TEXT,
        published_ms INTEGER NOT NULL,
        attributes TEXT NOT NULL,
        subscriptions TEXT NOT NULL,
        data BLOB
    );
    CREATE INDEX IF NOT EXISTS messages_report ON messages (report_id);
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL,
        subscription TEXT NOT NULL,
        kind TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        attempt INTEGER,
        status INTEGER,
        error TEXT,
        latency_ms REAL,
        outcome TEXT,
        related_id TEXT,
        reason TEXT,
        provider_id TEXT
    );
    CREATE INDEX IF NOT EXISTS events_message ON events (message_id);
";

/// Columns added to `events` since its first version, for journals
/// written by an earlier broker.
const ADDED_EVENT_COLUMNS: [&str; 2] = ["reason", "provider_id"];

/// Adds the [`ADDED_EVENT_COLUMNS`] a journal lacks.
fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let existing: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('events')")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for column in ADDED_EVENT_COLUMNS {
        if !existing.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE events ADD COLUMN {column} TEXT"))?;
        }
    }
    Ok(())
}

impl Journal {
    /// Opens (or creates) the journal at `path` and starts its writer.
    /// `keep_data` stores message data too (for `--console-show-data`).
    pub fn open(
        path: &Path,
        max_messages: u64,
        keep_data: bool,
        dropped: Counter,
    ) -> anyhow::Result<Journal> {
        labrelay_runtime::private_fs::prepare_sqlite(path)
            .with_context(|| format!("making {} private", path.display()))?;
        let writer =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        writer
            .execute_batch(SCHEMA)
            .and_then(|()| add_missing_columns(&writer))
            .with_context(|| format!("preparing {}", path.display()))?;
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {} for reading", path.display()))?;
        // The console's queries read a few rows by index; the writer's
        // 1 MiB holds the ends of the tables where it appends and prunes.
        // SQLite pools every connection's cache (see ARCHITECTURE.md), so
        // these limits bound the broker's memory, not just this file's.
        reader
            .execute_batch("PRAGMA cache_size = -256;")
            .with_context(|| format!("configuring {} for reading", path.display()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = Writer {
            conn: writer,
            max_messages: max_messages.max(1),
            keep_data,
        };
        let thread = std::thread::Builder::new()
            .name("broker-journal".into())
            .spawn(move || writer.run(rx))
            .context("starting the journal thread")?;
        Ok(Journal {
            tx,
            dropped,
            reader: Arc::new(Mutex::new(reader)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `event` for the writer, or drops and counts it when the queue
    /// is full (or the journal closed). Never blocks.
    pub fn send(&self, event: Event) {
        match self.tx.try_send(Command::Event(Box::new(event))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    /// Lets the writer finish what is queued, then stops it.
    pub async fn close(&self) {
        let thread = self.thread.lock().expect("journal thread lock").take();
        if let Some(thread) = thread {
            let tx = self.tx.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let _ = tx.send(Command::Stop);
                thread.join()
            })
            .await;
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().expect("journal reader lock");
            query(&conn)
        })
        .await
        .context("journal read task")?
        .context("reading the journal")
    }

    /// The most recent messages, newest first.
    pub async fn recent(
        &self,
        limit: usize,
        with_data: bool,
    ) -> anyhow::Result<Vec<JournalMessage>> {
        self.read(move |conn| {
            select_messages(conn, "ORDER BY id DESC LIMIT ?1", [limit as i64], with_data)
        })
        .await
    }

    /// Every message (at most [`JOURNEY_LIMIT`]) carrying `report_id`,
    /// oldest first.
    pub async fn by_report(
        &self,
        report_id: String,
        with_data: bool,
    ) -> anyhow::Result<Vec<JournalMessage>> {
        self.read(move |conn| {
            select_messages(
                conn,
                "WHERE report_id = ?1 ORDER BY id LIMIT ?2",
                params![report_id, JOURNEY_LIMIT as i64],
                with_data,
            )
        })
        .await
    }

    /// One message by id.
    pub async fn by_message(
        &self,
        message_id: u64,
        with_data: bool,
    ) -> anyhow::Result<Vec<JournalMessage>> {
        self.read(move |conn| {
            select_messages(conn, "WHERE id = ?1", [message_id as i64], with_data)
        })
        .await
    }

    /// The report id of the message `message_id`, if journaled.
    pub async fn report_of(&self, message_id: u64) -> anyhow::Result<Option<String>> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT report_id FROM messages WHERE id = ?1",
                [message_id as i64],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
        })
        .await
    }
}

fn select_messages(
    conn: &Connection,
    clause: &str,
    params: impl rusqlite::Params,
    with_data: bool,
) -> rusqlite::Result<Vec<JournalMessage>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT id, topic, report_id, published_ms, attributes, subscriptions, data \
         FROM messages {clause}"
    ))?;
    let mut messages = statement
        .query_map(params, |row| {
            let attributes: String = row.get(4)?;
            let subscriptions: String = row.get(5)?;
            let data: Option<Vec<u8>> = row.get(6)?;
            Ok(JournalMessage {
                message_id: row.get::<_, i64>(0)?.to_string(),
                topic: row.get(1)?,
                report_id: row.get(2)?,
                published_ms: row.get(3)?,
                attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                subscriptions: serde_json::from_str(&subscriptions).unwrap_or_default(),
                data: data
                    .filter(|_| with_data)
                    .map(|d| String::from_utf8_lossy(&d).into_owned()),
                events: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut events = conn.prepare_cached(
        "SELECT subscription, kind, at_ms, attempt, status, error, latency_ms, outcome, related_id, \
         reason, provider_id FROM events WHERE message_id = ?1 ORDER BY id",
    )?;
    for message in &mut messages {
        let id: i64 = message.message_id.parse().unwrap_or(-1);
        message.events = events
            .query_map([id], |row| {
                Ok(JournalEvent {
                    subscription: row.get(0)?,
                    kind: row.get(1)?,
                    at_ms: row.get(2)?,
                    attempt: row.get(3)?,
                    status: row.get(4)?,
                    error: row.get(5)?,
                    latency_ms: row.get(6)?,
                    outcome: row.get(7)?,
                    related_id: row.get(8)?,
                    reason: row.get(9)?,
                    provider_id: row.get(10)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    }
    Ok(messages)
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    max_messages: u64,
    keep_data: bool,
}

impl Writer {
    /// Handles events (gathered for [`GATHER`] after the first, in batches
    /// of up to [`BATCH`], one transaction each) and prunes old rows every
    /// minute. Stops on `Stop` or when every sender is gone.
    fn run(mut self, rx: Receiver<Command>) {
        let mut last_prune: Option<Instant> = None;
        let mut batch = Vec::with_capacity(BATCH);
        // Whether the last batch was full: more is waiting, so no gathering.
        let mut behind = false;
        loop {
            let mut stop = false;
            match rx.recv_timeout(PRUNE_EVERY) {
                Ok(Command::Event(event)) => {
                    batch.push(event);
                    // Sleeping rather than waiting on the queue: a sender
                    // wakes no one while the writer sleeps.
                    if !behind {
                        std::thread::sleep(GATHER);
                    }
                }
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => stop = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            while !stop && batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(Command::Event(event)) => batch.push(event),
                    Ok(Command::Stop) => stop = true,
                    Err(_) => break,
                }
            }
            if !batch.is_empty()
                && let Err(error) = self.write(&batch)
            {
                tracing::warn!(%error, events = batch.len(), "could not write to the journal");
            }
            behind = batch.len() >= BATCH;
            batch.clear();
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                if let Err(error) = self.prune(SystemTime::now()) {
                    tracing::warn!(%error, "could not prune the journal");
                }
            }
            if stop {
                return;
            }
        }
    }

    fn write(&mut self, batch: &[Box<Event>]) -> rusqlite::Result<()> {
        let keep_data = self.keep_data;
        let tx = self.conn.transaction()?;
        {
            let mut message = tx.prepare_cached(
                "INSERT OR REPLACE INTO messages \
                 (id, topic, report_id, published_ms, attributes, subscriptions, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut event = tx.prepare_cached(
                "INSERT INTO events (message_id, subscription, kind, at_ms, attempt, status, \
                 error, latency_ms, outcome, related_id, reason, provider_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for item in batch {
                match item.as_ref() {
                    Event::Published {
                        topic,
                        messages,
                        subscriptions,
                        wanted,
                    } => {
                        for (i, m) in messages.iter().enumerate() {
                            let to: Vec<&str> = subscriptions
                                .iter()
                                .zip(wanted)
                                .filter(|(_, wants)| wants.get(i).copied().unwrap_or(false))
                                .map(|(s, _)| s.name.as_str())
                                .collect();
                            let attributes: BTreeMap<&String, &String> =
                                m.pb.attributes.iter().collect();
                            message.execute(params![
                                m.seq as i64,
                                topic,
                                m.pb.attributes.get("reportId"),
                                unix_millis(m.published_at),
                                serde_json::to_string(&attributes).unwrap_or_default(),
                                serde_json::to_string(&to).unwrap_or_default(),
                                keep_data.then_some(&m.pb.data),
                            ])?;
                        }
                    }
                    Event::Attempt {
                        message_id,
                        subscription,
                        attempt,
                        at,
                        status,
                        error,
                        latency,
                        outcome,
                        reason,
                        provider_id,
                    } => {
                        event.execute(params![
                            *message_id as i64,
                            subscription,
                            "push",
                            unix_millis(*at),
                            attempt,
                            status,
                            error,
                            latency.as_secs_f64() * 1000.0,
                            outcome,
                            None::<String>,
                            reason,
                            provider_id,
                        ])?;
                    }
                    Event::DeadLettered {
                        message_id,
                        subscription,
                        at,
                        attempts,
                        reason,
                        dead_letter_id,
                    } => {
                        let error = match dead_letter_id {
                            Some(_) => reason.clone(),
                            None => format!("{reason}; {DROPPED}"),
                        };
                        event.execute(params![
                            *message_id as i64,
                            subscription,
                            "dead-lettered",
                            unix_millis(*at),
                            attempts,
                            None::<u16>,
                            error,
                            None::<f64>,
                            None::<String>,
                            dead_letter_id,
                            None::<String>,
                            None::<String>,
                        ])?;
                    }
                    Event::Acked {
                        subscription,
                        seqs,
                        at,
                    } => {
                        for seq in seqs {
                            event.execute(params![
                                *seq as i64,
                                subscription,
                                "acked",
                                unix_millis(*at),
                                None::<u32>,
                                None::<u16>,
                                None::<String>,
                                None::<f64>,
                                None::<String>,
                                None::<String>,
                                None::<String>,
                                None::<String>,
                            ])?;
                        }
                    }
                    Event::Replayed {
                        message_id,
                        subscription,
                        at,
                        new_id,
                    } => {
                        event.execute(params![
                            *message_id as i64,
                            subscription,
                            "replayed",
                            unix_millis(*at),
                            None::<u32>,
                            None::<u16>,
                            None::<String>,
                            None::<f64>,
                            None::<String>,
                            new_id,
                            None::<String>,
                            None::<String>,
                        ])?;
                    }
                }
            }
        }
        tx.commit()
    }

    fn prune(&mut self, now: SystemTime) -> rusqlite::Result<()> {
        let horizon = unix_millis(now.checked_sub(RETENTION).unwrap_or(SystemTime::UNIX_EPOCH));
        let max_events = self.max_messages.saturating_mul(10);
        prune_table(
            &self.conn,
            "messages",
            "published_ms",
            horizon,
            self.max_messages,
        )?;
        prune_table(&self.conn, "events", "at_ms", horizon, max_events)?;
        Ok(())
    }
}

/// Deletes the rows of `table` whose `stamp` is before `horizon`, and all
/// but the newest `keep` ids. Ids grow with time (a message's id is its
/// sequence number, an event's is its row number), so both bounds are found from
/// the ends of the id order: the first row young enough to keep, walking
/// up from the oldest, and the largest id less `keep`. A prune then costs
/// the rows it deletes, not the rows it keeps; it used to scan both tables
/// whole (up to 100,000 messages and 1,000,000 events) every minute, which
/// pulled them through SQLite's page cache. Where ids have gaps (a dropped
/// event's message) fewer than `keep` rows stay.
fn prune_table(
    conn: &Connection,
    table: &str,
    stamp: &str,
    horizon: i64,
    keep: u64,
) -> rusqlite::Result<()> {
    let newest: Option<i64> =
        conn.query_row(&format!("SELECT max(id) FROM {table}"), [], |row| {
            row.get(0)
        })?;
    let Some(newest) = newest else {
        return Ok(()); // empty
    };
    let too_old = conn
        .query_row(
            &format!("SELECT id FROM {table} WHERE {stamp} >= ?1 ORDER BY id LIMIT 1"),
            [horizon],
            |row| row.get::<_, i64>(0),
        )
        .optional()?
        .map_or(newest, |first| first - 1);
    let too_many = newest.saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX));
    conn.execute(
        &format!("DELETE FROM {table} WHERE id <= ?1"),
        [too_old.max(too_many)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, report: &str) -> Arc<Message> {
        Arc::new(Message {
            seq,
            pb: crate::pb::PubsubMessage {
                data: b"{\"owner\":\"secret\"}".to_vec(),
                attributes: [("reportId".to_string(), report.to_string())].into(),
                message_id: seq.to_string(),
                ..Default::default()
            },
            published_at: SystemTime::now(),
        })
    }

    fn journal(dir: &Path, max: u64, keep_data: bool) -> Journal {
        Journal::open(
            &dir.join("journal.sqlite3"),
            max,
            keep_data,
            Counter::default(),
        )
        .unwrap()
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_journal_is_owner_only_and_loose_files_are_tightened() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite3");
        let first = journal(dir.path(), 100, true);
        for file in [
            "journal.sqlite3",
            "journal.sqlite3-wal",
            "journal.sqlite3-shm",
        ] {
            assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
        }
        first.close().await;
        drop(first);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let again = journal(dir.path(), 100, true);
        assert_eq!(mode(&path), 0o600);
        again.close().await;
    }

    #[tokio::test]
    async fn records_a_journey_and_finds_it_by_report_and_by_message() {
        let dir = tempfile::tempdir().unwrap();
        let journal = journal(dir.path(), 100, false);
        journal.send(Event::Published {
            topic: "projects/p/topics/t".into(),
            messages: vec![message(7, "LR-1"), message(8, "LR-2")],
            subscriptions: Vec::new(),
            wanted: Vec::new(),
        });
        journal.send(Event::Attempt {
            message_id: 7,
            subscription: "projects/p/subscriptions/email".into(),
            attempt: 1,
            at: SystemTime::now(),
            status: Some(503),
            error: Some("HTTP 503".into()),
            latency: Duration::from_millis(3),
            outcome: None,
            reason: None,
            provider_id: None,
        });
        journal.send(Event::Attempt {
            message_id: 7,
            subscription: "projects/p/subscriptions/email".into(),
            attempt: 2,
            at: SystemTime::now(),
            status: Some(204),
            error: None,
            latency: Duration::from_millis(2),
            outcome: Some("sent".into()),
            reason: None,
            provider_id: Some("SM1".into()),
        });
        journal.close().await;
        let found = journal.by_report("LR-1".into(), true).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].message_id, "7");
        assert_eq!(found[0].data, None, "data is never kept without the flag");
        let statuses: Vec<_> = found[0].events.iter().map(|e| e.status).collect();
        assert_eq!(statuses, [Some(503), Some(204)]);
        assert_eq!(found[0].events[1].outcome.as_deref(), Some("sent"));
        assert_eq!(found[0].events[1].provider_id.as_deref(), Some("SM1"));
        assert_eq!(
            journal.by_message(8, false).await.unwrap()[0]
                .report_id
                .as_deref(),
            Some("LR-2")
        );
        assert_eq!(journal.report_of(8).await.unwrap().as_deref(), Some("LR-2"));
        assert!(
            journal
                .by_report("LR-3".into(), false)
                .await
                .unwrap()
                .is_empty()
        );
        // After close, events are dropped and counted, not queued forever.
        journal.send(Event::Replayed {
            message_id: 7,
            subscription: "s".into(),
            at: SystemTime::now(),
            new_id: "9".into(),
        });
        assert_eq!(journal.dropped.get(), 1);
    }

    #[tokio::test]
    async fn keeps_at_most_max_messages_and_data_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let journal = journal(dir.path(), 3, true);
        journal.send(Event::Published {
            topic: "t".into(),
            messages: (1..=5).map(|i| message(i, &format!("R{i}"))).collect(),
            subscriptions: Vec::new(),
            wanted: Vec::new(),
        });
        journal.close().await;
        // close() pruned after the last batch only if a minute passed; prune now.
        let mut writer = Writer {
            conn: Connection::open(dir.path().join("journal.sqlite3")).unwrap(),
            max_messages: 3,
            keep_data: true,
        };
        writer.prune(SystemTime::now()).unwrap();
        let recent = journal.recent(10, true).await.unwrap();
        let ids: Vec<_> = recent.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(ids, ["5", "4", "3"]);
        assert_eq!(recent[0].data.as_deref(), Some("{\"owner\":\"secret\"}"));
        assert_eq!(journal.recent(10, false).await.unwrap()[0].data, None);
    }

    #[tokio::test]
    async fn a_prune_drops_what_is_older_than_the_retention_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let journal = journal(dir.path(), 100, false);
        let now = SystemTime::now();
        let old = now - RETENTION - Duration::from_secs(60);
        let stamped = |seq: u64, at| {
            let pb = Arc::into_inner(message(seq, &format!("R{seq}")))
                .unwrap()
                .pb;
            Arc::new(Message {
                seq,
                pb,
                published_at: at,
            })
        };
        journal.send(Event::Published {
            topic: "t".into(),
            messages: vec![stamped(1, old), stamped(2, old), stamped(3, now)],
            subscriptions: Vec::new(),
            wanted: Vec::new(),
        });
        for (message_id, at) in [(2, old), (3, old), (3, now)] {
            journal.send(Event::Attempt {
                message_id,
                subscription: "s".into(),
                attempt: 1,
                at,
                status: Some(204),
                error: None,
                latency: Duration::from_millis(1),
                outcome: None,
                reason: None,
                provider_id: None,
            });
        }
        journal.close().await;
        let mut writer = Writer {
            conn: Connection::open(dir.path().join("journal.sqlite3")).unwrap(),
            max_messages: 100,
            keep_data: false,
        };
        writer.prune(now).unwrap();
        let recent = journal.recent(10, false).await.unwrap();
        let ids: Vec<_> = recent.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(ids, ["3"]);
        let at: Vec<_> = recent[0].events.iter().map(|e| e.at_ms).collect();
        assert_eq!(at, [unix_millis(now)]);
        // Nothing left to drop: a second prune keeps everything.
        writer.prune(now).unwrap();
        assert_eq!(journal.recent(10, false).await.unwrap().len(), 1);
    }

    /// A journal written before the push events kept a reason and a
    /// provider id gets the columns, and keeps its history.
    #[tokio::test]
    async fn an_older_journal_gains_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite3");
        {
            let old = Connection::open(&path).unwrap();
            let schema = SCHEMA.replace(
                "related_id TEXT,\n        reason TEXT,\n        provider_id TEXT",
                "related_id TEXT",
            );
            assert_ne!(schema, SCHEMA, "the old schema differs");
            old.execute_batch(&schema).unwrap();
            old.execute(
                "INSERT INTO events (message_id, subscription, kind, at_ms) VALUES (1, 's', 'push', ?1)",
                [unix_millis(SystemTime::now())],
            )
            .unwrap();
        }
        let journal = journal(dir.path(), 100, false);
        journal.send(Event::Published {
            topic: "t".into(),
            messages: vec![message(1, "R1")],
            subscriptions: Vec::new(),
            wanted: Vec::new(),
        });
        journal.send(Event::Attempt {
            message_id: 1,
            subscription: "s".into(),
            attempt: 2,
            at: SystemTime::now(),
            status: Some(204),
            error: None,
            latency: Duration::from_millis(1),
            outcome: Some("suppressed".into()),
            reason: Some("twilio 21610".into()),
            provider_id: None,
        });
        journal.close().await;
        let found = journal.by_report("R1".into(), false).await.unwrap();
        let reasons: Vec<_> = found[0]
            .events
            .iter()
            .map(|e| e.reason.as_deref())
            .collect();
        assert_eq!(reasons, [None, Some("twilio 21610")]);
    }
}
