//! The embedded store: one SQLite file (WAL, `synchronous=NORMAL`), written
//! by one thread per [`SqliteLog`] with group commit.
//!
//! `NORMAL`, not `FULL`: in WAL mode a commit then survives the process
//! dying (it is in the operating system's cache) but not a power cut or a
//! kernel crash, which can roll back the last records; the notifications
//! they recorded would then be sent again on redelivery, the same
//! duplicate window as a crash between the provider accepting and the
//! record being written. In exchange a claim and a record cost no fsync:
//! with `FULL`, two fsyncs per notification made this log the pipeline's
//! bottleneck (docs/benchmarks.md, "Changes tried"). Claims live in their own table, taken in an
//! `IMMEDIATE` transaction, so processes sharing the file exclude each
//! other like Cloud Run instances sharing Firestore.
//!
//! Group commit: every call is queued to the log's writer thread, which
//! takes all the calls waiting and runs them, in arrival order, in one
//! transaction. Each call sees the effects of the calls before it, so the
//! answers are those of running the calls one by one; what is saved is a
//! transaction, a lock round and a blocking-pool hop per call. A caller is
//! answered only after the transaction holding its call has committed. If
//! one call of a batch fails, the batch is rolled back and run again with a
//! savepoint around each call, so the failing call is answered with its
//! error, leaves nothing behind, and its neighbours still commit; if the
//! transaction itself cannot begin or commit, every caller of the batch is
//! answered with an error and nothing of the batch is recorded.
//!
//! A SQLite file is shared only on one machine (one kernel: processes,
//! or containers with the file on a shared volume), so its clock is the
//! one every lease is measured on, and a claim also names its holder, a
//! random id whose lock file its log keeps locked (`holder`): a live claim
//! whose holder is gone (killed mid-send, restarted) is taken over at once
//! instead of holding its notification back until its lease lapses. A
//! process id would not do: containers sharing the file each have their
//! own, and a live holder in another one would be taken for dead.
//!
//! The file and its `-wal`/`-shm` are the operator's alone (0600, a
//! directory created for them 0700: `private_fs`), and `secure_delete=ON`
//! zeroes a released claim's row and any page it frees instead of leaving
//! them in free space. It costs no extra I/O here: a claim's row is deleted
//! from a page the same transaction writes anyway.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{OptionalExtension as _, TransactionBehavior};
use tokio::sync::oneshot;

use super::holder::{HolderLock, Holders};
use super::{
    Claim, ClaimToken, DeliveryStatus, LogFuture, NotificationKey, NotificationLog, Receipt,
    ReceiptApplied, SentRecord, Suppression, now_ms,
};

/// How long a write waits for another connection (another process sharing
/// the file) to finish its transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many calls share one transaction, so one batch never holds
/// the file's write lock for long.
const MAX_BATCH: usize = 512;

/// The embedded log: one SQLite file, written by one thread. Clones share
/// the thread, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteLog {
    path: PathBuf,
    calls: mpsc::Sender<Call>,
    stats: Arc<BatchStats>,
}

/// What the writer thread has done, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Transactions committed or attempted.
    pub batches: AtomicU64,
    /// Calls answered.
    pub calls: AtomicU64,
}

/// One call queued to the writer thread, with where its answer goes.
enum Call {
    AlreadySent(NotificationKey, Reply<Option<SentRecord>>),
    Claim(NotificationKey, Duration, Reply<Claim>),
    Release(NotificationKey, ClaimToken, Reply<()>),
    Renew(
        NotificationKey,
        ClaimToken,
        Duration,
        Reply<Option<ClaimToken>>,
    ),
    RecordSent(NotificationKey, SentRecord, Reply<()>),
    Suppression(String, String, Reply<Option<Suppression>>),
    Suppress(Suppression, Reply<()>),
    Lift(String, String, Reply<bool>),
    Suppressions(Reply<Vec<Suppression>>),
    RecordReceipt(Receipt, Reply<ReceiptApplied>),
    Receipt(String, Reply<Option<Receipt>>),
}

type Reply<T> = oneshot::Sender<anyhow::Result<T>>;

/// A call's answer, before it is sent.
enum Answer {
    AlreadySent(Option<SentRecord>),
    Claim(Claim),
    Renewed(Option<ClaimToken>),
    Done,
    Suppression(Option<Suppression>),
    Lifted(bool),
    Suppressions(Vec<Suppression>),
    ReceiptApplied(ReceiptApplied),
    Receipt(Option<Receipt>),
}

impl Call {
    fn writes(&self) -> bool {
        !matches!(
            self,
            Call::AlreadySent(..)
                | Call::Suppression(..)
                | Call::Suppressions(..)
                | Call::Receipt(..)
        )
    }

    fn run(&self, conn: &rusqlite::Connection, holders: &Holders) -> rusqlite::Result<Answer> {
        match self {
            Call::AlreadySent(key, _) => sent_record(conn, key).map(Answer::AlreadySent),
            Call::Claim(key, lease, _) => claim(conn, key, *lease, holders).map(Answer::Claim),
            Call::Release(key, token, _) => release(conn, key, token).map(|()| Answer::Done),
            Call::Renew(key, token, lease, _) => {
                renew(conn, key, token, *lease).map(Answer::Renewed)
            }
            Call::RecordSent(key, record, _) => {
                record_sent(conn, key, record).map(|()| Answer::Done)
            }
            Call::Suppression(channel, subject, _) => {
                suppression(conn, channel, subject).map(Answer::Suppression)
            }
            Call::Suppress(suppression, _) => suppress(conn, suppression).map(|()| Answer::Done),
            Call::Lift(channel, subject, _) => lift(conn, channel, subject).map(Answer::Lifted),
            Call::Suppressions(_) => suppressions(conn).map(Answer::Suppressions),
            Call::RecordReceipt(receipt, _) => {
                record_receipt(conn, receipt).map(Answer::ReceiptApplied)
            }
            Call::Receipt(provider_id, _) => receipt(conn, provider_id).map(Answer::Receipt),
        }
    }

    /// Sends the answer; a caller that went away is not waiting for it.
    fn answer(self, answer: anyhow::Result<Answer>) {
        fn send<T>(reply: Reply<T>, answer: anyhow::Result<T>) {
            let _ = reply.send(answer);
        }
        // The answer of `$kind` to a call expecting it; another kind is a
        // bug of the writer's, answered as an error.
        macro_rules! answer_as {
            ($reply:expr, $kind:path) => {
                send(
                    $reply,
                    answer.and_then(|a| match a {
                        $kind(value) => Ok(value),
                        _ => Err(anyhow::anyhow!(
                            "the notification log answered a call with another call's kind of answer"
                        )),
                    }),
                )
            };
        }
        match self {
            Call::AlreadySent(_, reply) => answer_as!(reply, Answer::AlreadySent),
            Call::Claim(_, _, reply) => answer_as!(reply, Answer::Claim),
            Call::Renew(_, _, _, reply) => answer_as!(reply, Answer::Renewed),
            Call::Release(_, _, reply)
            | Call::RecordSent(_, _, reply)
            | Call::Suppress(_, reply) => send(reply, answer.map(|_| ())),
            Call::Suppression(_, _, reply) => answer_as!(reply, Answer::Suppression),
            Call::Lift(_, _, reply) => answer_as!(reply, Answer::Lifted),
            Call::Suppressions(reply) => answer_as!(reply, Answer::Suppressions),
            Call::RecordReceipt(_, reply) => answer_as!(reply, Answer::ReceiptApplied),
            Call::Receipt(_, reply) => answer_as!(reply, Answer::Receipt),
        }
    }
}

impl SqliteLog {
    /// Opens (creating it and its directory if needed) the log at `path`
    /// and starts its writer thread.
    pub fn open(path: &Path) -> anyhow::Result<SqliteLog> {
        SqliteLog::open_with(path, BUSY_TIMEOUT)
    }

    fn open_with(path: &Path, busy_timeout: Duration) -> anyhow::Result<SqliteLog> {
        use anyhow::Context as _;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            labrelay_runtime::private_fs::create_dir_all(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        labrelay_runtime::private_fs::prepare_sqlite(path).with_context(|| {
            format!("making the notification log {} owner-only", path.display())
        })?;
        let mut conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening the notification log {}", path.display()))?;
        conn.busy_timeout(busy_timeout)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS sent_notifications (
                 report_id    TEXT    NOT NULL,
                 channel      TEXT    NOT NULL,
                 content_hash TEXT    NOT NULL,
                 provider_id  TEXT,
                 sent_at_ms   INTEGER NOT NULL,
                 PRIMARY KEY (report_id, channel, content_hash)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS notification_claims (
                 report_id      TEXT    NOT NULL,
                 channel        TEXT    NOT NULL,
                 content_hash   TEXT    NOT NULL,
                 token          TEXT    NOT NULL,
                 lease_until_ms INTEGER NOT NULL,
                 holder         TEXT    NOT NULL,
                 PRIMARY KEY (report_id, channel, content_hash)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS suppressions (
                 channel  TEXT    NOT NULL,
                 subject  TEXT    NOT NULL,
                 reason   TEXT    NOT NULL,
                 since_ms INTEGER NOT NULL,
                 PRIMARY KEY (channel, subject)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS delivery_receipts (
                 provider_id  TEXT    NOT NULL PRIMARY KEY,
                 channel      TEXT    NOT NULL,
                 report_id    TEXT,
                 content_hash TEXT,
                 status       TEXT    NOT NULL,
                 error_code   INTEGER,
                 at_ms        INTEGER NOT NULL
             ) WITHOUT ROWID;",
        )
        .context("creating the notification log's tables")?;
        named_holders(&mut conn).context("updating the notification log's claims table")?;
        let (holders, lock) = Holders::register(path)
            .with_context(|| format!("locking a holder file next to {}", path.display()))?;
        let (calls, queue) = mpsc::channel();
        let stats = Arc::new(BatchStats::default());
        let writer_stats = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("notify-log".into())
            .spawn(move || write_batches(conn, &queue, &writer_stats, &holders, lock))
            .context("starting the notification log's writer thread")?;
        Ok(SqliteLog {
            path: path.to_path_buf(),
            calls,
            stats,
        })
    }

    /// Counts of the writer thread's work so far.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Queues a call at once (so calls are run in the order they were
    /// made, not the order their futures are first polled) and returns its
    /// answer's future.
    fn call<'a, T: Send + 'static>(&self, call: impl FnOnce(Reply<T>) -> Call) -> LogFuture<'a, T> {
        let (reply, answer) = oneshot::channel();
        let queued = self.calls.send(call(reply));
        Box::pin(async move {
            if queued.is_err() {
                anyhow::bail!("the notification log's writer thread has stopped");
            }
            answer
                .await
                .map_err(|_| anyhow::anyhow!("the notification log's writer thread stopped"))?
        })
    }
}

/// Claims written before holders had lock files named a host and a process
/// id: they are kept with an empty holder, which only their lease ends.
fn named_holders(conn: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let by_pid: bool = tx.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('notification_claims')
         WHERE name = 'holder_pid'",
        [],
        |row| row.get(0),
    )?;
    if by_pid {
        tx.execute_batch(
            "ALTER TABLE notification_claims RENAME TO notification_claims_by_pid;
             CREATE TABLE notification_claims (
                 report_id      TEXT    NOT NULL,
                 channel        TEXT    NOT NULL,
                 content_hash   TEXT    NOT NULL,
                 token          TEXT    NOT NULL,
                 lease_until_ms INTEGER NOT NULL,
                 holder         TEXT    NOT NULL,
                 PRIMARY KEY (report_id, channel, content_hash)
             ) WITHOUT ROWID;
             INSERT INTO notification_claims
                 SELECT report_id, channel, content_hash, token, lease_until_ms, ''
                 FROM notification_claims_by_pid;
             DROP TABLE notification_claims_by_pid;",
        )?;
    }
    tx.commit()
}

/// The writer thread: runs every call waiting, in one transaction, until
/// every [`SqliteLog`] clone is gone; holds this log's holder lock until
/// then.
fn write_batches(
    mut conn: rusqlite::Connection,
    queue: &mpsc::Receiver<Call>,
    stats: &BatchStats,
    holders: &Holders,
    lock: HolderLock,
) {
    let mut batch = Vec::new();
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(call) => batch.push(call),
                Err(_) => break,
            }
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.calls.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let answers = run_batch(&mut conn, &batch, holders);
        for (call, answer) in batch.drain(..).zip(answers) {
            call.answer(answer);
        }
    }
    drop(lock);
}

/// Each call's answer, in order; every answer is an error when the batch's
/// transaction failed as a whole.
fn run_batch(
    conn: &mut rusqlite::Connection,
    batch: &[Call],
    holders: &Holders,
) -> Vec<anyhow::Result<Answer>> {
    let behavior = if batch.iter().any(Call::writes) {
        TransactionBehavior::Immediate
    } else {
        TransactionBehavior::Deferred
    };
    let all_failed = |err: rusqlite::Error, what: &str| -> Vec<anyhow::Result<Answer>> {
        let err = anyhow::Error::new(err).context(format!(
            "the notification log's transaction failed to {what}; nothing of it was recorded"
        ));
        batch
            .iter()
            .map(|_| Err(anyhow::anyhow!("{err:#}")))
            .collect()
    };
    // Fast path: every call in one transaction, no savepoints.
    let attempt = (|| {
        let tx = conn
            .transaction_with_behavior(behavior)
            .map_err(|e| (e, "begin"))?;
        let mut answers = Vec::with_capacity(batch.len());
        for call in batch {
            match call.run(&tx, holders) {
                Ok(answer) => answers.push(answer),
                // Rolled back when `tx` drops; run again call by call.
                Err(_) => return Ok(None),
            }
        }
        tx.commit().map_err(|e| (e, "commit"))?;
        Ok(Some(answers))
    })();
    match attempt {
        Ok(Some(answers)) => return answers.into_iter().map(Ok).collect(),
        Ok(None) => {}
        Err((err, what)) => return all_failed(err, what),
    }
    // A call failed: each call in a savepoint of its own, so only the calls
    // that fail are rolled back.
    let mut tx = match conn.transaction_with_behavior(behavior) {
        Ok(tx) => tx,
        Err(err) => return all_failed(err, "begin"),
    };
    let mut answers = Vec::with_capacity(batch.len());
    for call in batch {
        let answer = tx.savepoint().and_then(|savepoint| {
            let answer = call.run(&savepoint, holders)?;
            savepoint.commit()?;
            Ok(answer)
        });
        answers.push(answer.map_err(anyhow::Error::new));
    }
    match tx.commit() {
        Ok(()) => answers,
        Err(err) => all_failed(err, "commit"),
    }
}

fn sent_record(
    conn: &rusqlite::Connection,
    key: &NotificationKey,
) -> rusqlite::Result<Option<SentRecord>> {
    conn.prepare_cached(
        "SELECT provider_id, sent_at_ms FROM sent_notifications
         WHERE report_id = ?1 AND channel = ?2 AND content_hash = ?3",
    )?
    .query_row((&key.report_id, key.channel, &key.content_hash), |row| {
        Ok(SentRecord {
            provider_id: row.get(0)?,
            sent_at_ms: row.get(1)?,
        })
    })
    .optional()
}

fn claim(
    conn: &rusqlite::Connection,
    key: &NotificationKey,
    lease: Duration,
    holders: &Holders,
) -> rusqlite::Result<Claim> {
    if let Some(record) = sent_record(conn, key)? {
        return Ok(Claim::AlreadySent(record));
    }
    let held: Option<(i64, String)> = conn
        .prepare_cached(
            "SELECT lease_until_ms, holder FROM notification_claims
             WHERE report_id = ?1 AND channel = ?2 AND content_hash = ?3",
        )?
        .query_row((&key.report_id, key.channel, &key.content_hash), |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let now = now_ms();
    if let Some((until, holder)) = held
        && until > now
        && !holders.is_gone(&holder)
    {
        return Ok(Claim::HeldByOther {
            lease_until_ms: until,
        });
    }
    let token = new_token(holders);
    let lease_until_ms = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    conn.prepare_cached(
        "INSERT OR REPLACE INTO notification_claims
         (report_id, channel, content_hash, token, lease_until_ms, holder)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute((
        &key.report_id,
        key.channel,
        &key.content_hash,
        &token,
        lease_until_ms,
        holders.own(),
    ))?;
    Ok(Claim::Claimed(ClaimToken::new(token)))
}

fn release(
    conn: &rusqlite::Connection,
    key: &NotificationKey,
    token: &ClaimToken,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM notification_claims
         WHERE report_id = ?1 AND channel = ?2 AND content_hash = ?3 AND token = ?4",
    )?
    .execute((
        &key.report_id,
        key.channel,
        &key.content_hash,
        token.as_str(),
    ))
    .map(|_| ())
}

/// Extends the claim `token` (which names its holder) to `lease` from now;
/// `None` when the claim is another's or gone.
fn renew(
    conn: &rusqlite::Connection,
    key: &NotificationKey,
    token: &ClaimToken,
    lease: Duration,
) -> rusqlite::Result<Option<ClaimToken>> {
    let lease_until_ms =
        now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    let renewed = conn
        .prepare_cached(
            "UPDATE notification_claims SET lease_until_ms = ?5
             WHERE report_id = ?1 AND channel = ?2 AND content_hash = ?3 AND token = ?4",
        )?
        .execute((
            &key.report_id,
            key.channel,
            &key.content_hash,
            token.as_str(),
            lease_until_ms,
        ))?;
    Ok((renewed == 1).then(|| token.clone()))
}

fn record_sent(
    conn: &rusqlite::Connection,
    key: &NotificationKey,
    record: &SentRecord,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO sent_notifications
         (report_id, channel, content_hash, provider_id, sent_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute((
        &key.report_id,
        key.channel,
        &key.content_hash,
        &record.provider_id,
        record.sent_at_ms,
    ))?;
    conn.prepare_cached(
        "DELETE FROM notification_claims
         WHERE report_id = ?1 AND channel = ?2 AND content_hash = ?3",
    )?
    .execute((&key.report_id, key.channel, &key.content_hash))?;
    Ok(())
}

fn suppression(
    conn: &rusqlite::Connection,
    channel: &str,
    subject: &str,
) -> rusqlite::Result<Option<Suppression>> {
    conn.prepare_cached(
        "SELECT reason, since_ms FROM suppressions WHERE channel = ?1 AND subject = ?2",
    )?
    .query_row((channel, subject), |row| {
        Ok(Suppression {
            channel: channel.to_string(),
            subject: subject.to_string(),
            reason: row.get(0)?,
            since_ms: row.get(1)?,
        })
    })
    .optional()
}

fn suppress(conn: &rusqlite::Connection, suppression: &Suppression) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO suppressions (channel, subject, reason, since_ms)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((
        &suppression.channel,
        &suppression.subject,
        &suppression.reason,
        suppression.since_ms,
    ))
    .map(|_| ())
}

fn lift(conn: &rusqlite::Connection, channel: &str, subject: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("DELETE FROM suppressions WHERE channel = ?1 AND subject = ?2")?
        .execute((channel, subject))
        .map(|deleted| deleted > 0)
}

fn suppressions(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<Suppression>> {
    conn.prepare_cached(
        "SELECT channel, subject, reason, since_ms FROM suppressions
         ORDER BY since_ms, channel, subject",
    )?
    .query_map([], |row| {
        Ok(Suppression {
            channel: row.get(0)?,
            subject: row.get(1)?,
            reason: row.get(2)?,
            since_ms: row.get(3)?,
        })
    })?
    .collect()
}

fn receipt(conn: &rusqlite::Connection, provider_id: &str) -> rusqlite::Result<Option<Receipt>> {
    conn.prepare_cached(
        "SELECT channel, report_id, content_hash, status, error_code, at_ms
         FROM delivery_receipts WHERE provider_id = ?1",
    )?
    .query_row([provider_id], |row| {
        let status: String = row.get(3)?;
        Ok(Receipt {
            provider_id: provider_id.to_string(),
            channel: row.get(0)?,
            report_id: row.get(1)?,
            content_hash: row.get(2)?,
            // Only this log writes the column, from a parsed status.
            status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Queued),
            error_code: row.get(4)?,
            at_ms: row.get(5)?,
        })
    })
    .optional()
}

/// In the batch's transaction, so the read and the write are one step for
/// every other process sharing the file.
fn record_receipt(conn: &rusqlite::Connection, new: &Receipt) -> rusqlite::Result<ReceiptApplied> {
    if let Some(stored) = receipt(conn, &new.provider_id)?
        && stored.status.rank() >= new.status.rank()
    {
        return Ok(ReceiptApplied::Stale {
            current: stored.status,
        });
    }
    conn.prepare_cached(
        "INSERT OR REPLACE INTO delivery_receipts
         (provider_id, channel, report_id, content_hash, status, error_code, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute((
        &new.provider_id,
        &new.channel,
        &new.report_id,
        &new.content_hash,
        new.status.as_str(),
        new.error_code,
        new.at_ms,
    ))?;
    Ok(ReceiptApplied::Applied)
}

/// Unique among the claims of every holder: its holder's random id and a
/// count.
fn new_token(holders: &Holders) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", holders.own(), NEXT.fetch_add(1, Ordering::Relaxed))
}

impl NotificationLog for SqliteLog {
    fn already_sent<'a>(&'a self, key: &'a NotificationKey) -> LogFuture<'a, Option<SentRecord>> {
        self.call(|reply| Call::AlreadySent(key.clone(), reply))
    }

    fn claim<'a>(&'a self, key: &'a NotificationKey, lease: Duration) -> LogFuture<'a, Claim> {
        self.call(|reply| Call::Claim(key.clone(), lease, reply))
    }

    fn release<'a>(&'a self, key: &'a NotificationKey, token: ClaimToken) -> LogFuture<'a, ()> {
        self.call(|reply| Call::Release(key.clone(), token, reply))
    }

    fn renew<'a>(
        &'a self,
        key: &'a NotificationKey,
        token: ClaimToken,
        lease: Duration,
    ) -> LogFuture<'a, Option<ClaimToken>> {
        self.call(|reply| Call::Renew(key.clone(), token, lease, reply))
    }

    fn record_sent<'a>(
        &'a self,
        key: &'a NotificationKey,
        record: SentRecord,
    ) -> LogFuture<'a, ()> {
        self.call(|reply| Call::RecordSent(key.clone(), record, reply))
    }

    fn suppression<'a>(
        &'a self,
        channel: &'a str,
        subject: &'a str,
    ) -> LogFuture<'a, Option<Suppression>> {
        self.call(|reply| Call::Suppression(channel.to_string(), subject.to_string(), reply))
    }

    fn suppress<'a>(&'a self, suppression: Suppression) -> LogFuture<'a, ()> {
        self.call(|reply| Call::Suppress(suppression, reply))
    }

    fn lift<'a>(&'a self, channel: &'a str, subject: &'a str) -> LogFuture<'a, bool> {
        self.call(|reply| Call::Lift(channel.to_string(), subject.to_string(), reply))
    }

    fn suppressions(&self) -> LogFuture<'_, Vec<Suppression>> {
        self.call(Call::Suppressions)
    }

    fn record_receipt<'a>(&'a self, receipt: Receipt) -> LogFuture<'a, ReceiptApplied> {
        self.call(|reply| Call::RecordReceipt(receipt, reply))
    }

    fn receipt<'a>(&'a self, provider_id: &'a str) -> LogFuture<'a, Option<Receipt>> {
        self.call(|reply| Call::Receipt(provider_id.to_string(), reply))
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(report: &str, hash: &str) -> NotificationKey {
        NotificationKey {
            report_id: report.into(),
            channel: "email",
            content_hash: hash.into(),
        }
    }

    #[tokio::test]
    async fn records_looks_up_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("log.sqlite3");
        let log = SqliteLog::open(&path).unwrap();
        let k = key("12", "aa");
        assert_eq!(log.already_sent(&k).await.unwrap(), None);
        let record = SentRecord {
            provider_id: Some("<x@labrelay>".into()),
            sent_at_ms: 42,
        };
        log.record_sent(&k, record.clone()).await.unwrap();
        assert_eq!(log.already_sent(&k).await.unwrap(), Some(record.clone()));
        // Another content, another channel: not sent.
        assert_eq!(log.already_sent(&key("12", "bb")).await.unwrap(), None);
        let sms = NotificationKey {
            channel: "sms",
            ..k.clone()
        };
        assert_eq!(log.already_sent(&sms).await.unwrap(), None);
        // Recording again keeps the first record.
        log.record_sent(&k, SentRecord::now(None)).await.unwrap();
        drop(log);

        let reopened = SqliteLog::open(&path).unwrap();
        assert_eq!(reopened.already_sent(&k).await.unwrap(), Some(record));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_log_is_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service").join("log.sqlite3");
        let log = SqliteLog::open(&path).unwrap();
        log.record_sent(&key("12", "aa"), SentRecord::now(None))
            .await
            .unwrap();
        assert_eq!(mode(&dir.path().join("service")), 0o700);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            assert_eq!(mode(Path::new(&file)), 0o600, "{suffix}");
        }
    }

    #[tokio::test]
    async fn a_released_claim_leaves_nothing_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite3");
        let log = SqliteLog::open(&path).unwrap();
        let report = "forgotten-report-7f3a9c";
        let k = key(report, "aa");
        let Claim::Claimed(token) = log.claim(&k, Duration::from_secs(60)).await.unwrap() else {
            panic!("a fresh key is claimed");
        };
        log.release(&k, token).await.unwrap();
        // Everything into the database file, the WAL emptied.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let found = bytes.windows(report.len()).any(|w| w == report.as_bytes());
        assert!(!found, "the deleted claim's report id is still in the file");
    }

    #[tokio::test]
    async fn claims_exclude_until_released_recorded_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite3");
        let (a, b) = (
            SqliteLog::open(&path).unwrap(),
            SqliteLog::open(&path).unwrap(),
        );
        let k = key("13", "cc");
        let far = Duration::from_secs(60);
        let Claim::Claimed(token) = a.claim(&k, far).await.unwrap() else {
            panic!("a fresh key is claimed");
        };
        assert!(matches!(
            b.claim(&k, far).await.unwrap(),
            Claim::HeldByOther { .. }
        ));
        assert_eq!(
            a.already_sent(&k).await.unwrap(),
            None,
            "a claim is no record"
        );
        // Releasing with another token does nothing.
        b.release(&k, ClaimToken::new("not-it".into()))
            .await
            .unwrap();
        assert!(matches!(
            b.claim(&k, far).await.unwrap(),
            Claim::HeldByOther { .. }
        ));
        a.release(&k, token).await.unwrap();
        let Claim::Claimed(_) = b.claim(&k, Duration::ZERO).await.unwrap() else {
            panic!("a released key is claimed");
        };
        // b's lease has lapsed: a takes it over, records, and b finds it.
        assert!(matches!(a.claim(&k, far).await.unwrap(), Claim::Claimed(_)));
        let record = SentRecord {
            provider_id: Some("SM1".into()),
            sent_at_ms: 7,
        };
        a.record_sent(&k, record.clone()).await.unwrap();
        assert_eq!(b.claim(&k, far).await.unwrap(), Claim::AlreadySent(record));
    }

    #[tokio::test]
    async fn only_the_claims_own_token_renews_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite3");
        let (a, b) = (
            SqliteLog::open(&path).unwrap(),
            SqliteLog::open(&path).unwrap(),
        );
        let k = key("17", "renew");
        let far = Duration::from_secs(60);
        // A lease that has already lapsed, renewed by its holder: held again.
        let Claim::Claimed(token) = a.claim(&k, Duration::ZERO).await.unwrap() else {
            panic!("a fresh key is claimed");
        };
        assert_eq!(
            a.renew(&k, token.clone(), far).await.unwrap(),
            Some(token.clone())
        );
        let Claim::HeldByOther { lease_until_ms } = b.claim(&k, far).await.unwrap() else {
            panic!("a renewed claim is held");
        };
        assert!(lease_until_ms > now_ms() + 50_000, "{lease_until_ms}");
        // Another token renews nothing.
        assert_eq!(
            b.renew(&k, ClaimToken::new("not-it".into()), far)
                .await
                .unwrap(),
            None
        );
        // Neither does the holder once its claim is recorded (or released).
        a.record_sent(&k, record("renewed")).await.unwrap();
        assert_eq!(a.renew(&k, token, far).await.unwrap(), None);
        assert_eq!(
            b.claim(&k, far).await.unwrap(),
            Claim::AlreadySent(record("renewed"))
        );
    }

    #[tokio::test]
    async fn a_gone_holder_claim_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite3");
        let (log, alive, gone) = (
            SqliteLog::open(&path).unwrap(),
            SqliteLog::open(&path).unwrap(),
            SqliteLog::open(&path).unwrap(),
        );
        let far = Duration::from_secs(60);
        let (held, dropped) = (key("14", "held"), key("14", "dropped"));
        assert!(matches!(
            alive.claim(&held, far).await.unwrap(),
            Claim::Claimed(_)
        ));
        assert!(matches!(
            gone.claim(&dropped, far).await.unwrap(),
            Claim::Claimed(_)
        ));
        // A claim as an earlier version left it names no holder: its
        // lease alone ends it.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO notification_claims VALUES ('14', 'email', 'old', 't', ?1, '')",
                [now_ms() + 60_000],
            )
            .unwrap();
        // Its writer thread ends with its last clone, and its lock with it.
        drop(gone);
        let taken = loop {
            match log.claim(&dropped, far).await.unwrap() {
                Claim::HeldByOther { .. } => tokio::task::yield_now().await,
                taken => break taken,
            }
        };
        assert!(matches!(taken, Claim::Claimed(_)), "{taken:?}");
        for held in [held, key("14", "old")] {
            assert!(
                matches!(
                    log.claim(&held, far).await.unwrap(),
                    Claim::HeldByOther { .. }
                ),
                "{held:?}"
            );
        }
    }

    const CLAIMANT_LOG: &str = "LABRELAY_TEST_CLAIMANT_LOG";

    /// The other process of
    /// `a_live_holder_in_another_pid_namespace_keeps_its_claim`: tries to
    /// claim a key in the log at `$LABRELAY_TEST_CLAIMANT_LOG` and prints
    /// what it got. Does nothing when that variable is unset.
    #[test]
    fn claimant_in_another_process() {
        let Some(path) = std::env::var_os(CLAIMANT_LOG) else {
            return;
        };
        let log = SqliteLog::open(Path::new(&path)).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let claim = runtime
            .block_on(log.claim(&key("16", "ns"), Duration::from_secs(60)))
            .unwrap();
        let got = match claim {
            Claim::Claimed(_) => "claimed",
            Claim::HeldByOther { .. } => "held",
            Claim::AlreadySent(_) => "sent",
        };
        println!("claimant: {got}");
    }

    /// Containers sharing the log's file each have their own process ids
    /// and their own `/proc` (and the same host name, when they share the
    /// host's): a claimant in another PID namespace, with its own `/proc`,
    /// finds this live process's claim held. (With claims naming a host
    /// and a process id, it found no such process and took the claim
    /// over.) Runs the claimant in a new PID and mount namespace
    /// (`unshare`) where that is allowed, else as a plain child process.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_live_holder_in_another_pid_namespace_keeps_its_claim() {
        const UNSHARE: [&str; 6] = [
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--mount-proc",
            "--map-root-user",
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite3");
        let log = SqliteLog::open(&path).unwrap();
        let k = key("16", "ns");
        assert!(matches!(
            log.claim(&k, Duration::from_secs(60)).await.unwrap(),
            Claim::Claimed(_)
        ));
        let exe = std::env::current_exe().unwrap();
        let namespaced = std::process::Command::new("unshare")
            .args(UNSHARE)
            // As the claimant will see it: this process does not exist.
            .args([
                "sh",
                "-c",
                &format!("test ! -e /proc/{}", std::process::id()),
            ])
            .status()
            .is_ok_and(|status| status.success());
        let mut command = if namespaced {
            let mut command = tokio::process::Command::new("unshare");
            command.args(UNSHARE).arg(&exe);
            command
        } else {
            eprintln!("no PID namespace (unshare refused): the claimant is a plain child process");
            tokio::process::Command::new(&exe)
        };
        let claimant = command
            .args([
                "--exact",
                "notify_log::sqlite::tests::claimant_in_another_process",
                "--nocapture",
            ])
            .env(CLAIMANT_LOG, &path)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&claimant.stdout);
        assert!(claimant.status.success(), "{stdout}");
        eprintln!("claimant in its own PID namespace: {namespaced}");
        assert!(stdout.contains("claimant: held"), "{stdout}");
    }

    #[test]
    fn claims_naming_a_process_are_kept_with_their_lease() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite3");
        let until = now_ms() + 60_000;
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE notification_claims (
                 report_id TEXT NOT NULL, channel TEXT NOT NULL, content_hash TEXT NOT NULL,
                 token TEXT NOT NULL, lease_until_ms INTEGER NOT NULL,
                 holder_host TEXT NOT NULL, holder_pid INTEGER NOT NULL,
                 PRIMARY KEY (report_id, channel, content_hash)
             ) WITHOUT ROWID;",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO notification_claims VALUES ('15', 'email', 'h', 't', ?1, 'host', 7)",
            [until],
        )
        .unwrap();
        drop(conn);
        let log = SqliteLog::open(&path).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            runtime
                .block_on(log.claim(&key("15", "h"), Duration::from_secs(60)))
                .unwrap(),
            Claim::HeldByOther {
                lease_until_ms: until
            }
        );
    }

    /// Holds the file's write lock from another connection, so the log's
    /// writer stalls on the first call it takes and the calls made
    /// meanwhile queue into one batch.
    struct Blocker(rusqlite::Connection);

    impl Blocker {
        fn hold(path: &Path) -> Blocker {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            Blocker(conn)
        }

        fn commit(self) {
            self.0.execute_batch("COMMIT").unwrap();
        }
    }

    /// Waits until the writer thread has taken `calls` calls.
    fn taken(log: &SqliteLog, calls: u64) {
        while log.stats().calls.load(Ordering::Relaxed) < calls {
            std::thread::yield_now();
        }
    }

    fn record(id: &str) -> SentRecord {
        SentRecord {
            provider_id: Some(id.into()),
            sent_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn a_batch_answers_each_call_as_if_run_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite3");
        let log = SqliteLog::open(&path).unwrap();
        let far = Duration::from_secs(60);
        let blocker = Blocker::hold(&path);
        let zero = key("0", "x");
        let first = log.record_sent(&zero, record("first"));
        taken(&log, 1);
        // Queued in this order while the writer waits; answered as if one
        // by one.
        let (a, b, c) = (key("1", "a"), key("2", "b"), key("3", "c"));
        let claim_a = log.claim(&a, far);
        let claim_a_again = log.claim(&a, far);
        let record_b = log.record_sent(&b, record("b"));
        let claim_b = log.claim(&b, far);
        let sent_a = log.already_sent(&a);
        let claim_c = log.claim(&c, far);
        let sent_first = log.already_sent(&zero);
        let many_keys: Vec<_> = (0..50).map(|i| key(&format!("m{i}"), "m")).collect();
        let many: Vec<_> = many_keys.iter().map(|k| log.claim(k, far)).collect();
        blocker.commit();
        first.await.unwrap();
        let Claim::Claimed(token_a) = claim_a.await.unwrap() else {
            panic!("a fresh key is claimed");
        };
        assert!(matches!(
            claim_a_again.await.unwrap(),
            Claim::HeldByOther { .. }
        ));
        record_b.await.unwrap();
        assert_eq!(claim_b.await.unwrap(), Claim::AlreadySent(record("b")));
        assert_eq!(sent_a.await.unwrap(), None);
        let Claim::Claimed(token_c) = claim_c.await.unwrap() else {
            panic!("a fresh key is claimed");
        };
        assert_ne!(token_a, token_c);
        assert_eq!(sent_first.await.unwrap(), Some(record("first")));
        for claim in many {
            assert!(matches!(claim.await.unwrap(), Claim::Claimed(_)));
        }
        assert_eq!(log.stats().batches.load(Ordering::Relaxed), 2);
        // Committed: another connection sees the claims and the record.
        let other = SqliteLog::open(&path).unwrap();
        assert!(matches!(
            other.claim(&a, far).await.unwrap(),
            Claim::HeldByOther { .. }
        ));
        assert_eq!(other.already_sent(&b).await.unwrap(), Some(record("b")));
    }

    #[tokio::test]
    async fn a_failing_call_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite3");
        let log = SqliteLog::open(&path).unwrap();
        let far = Duration::from_secs(60);
        let bad = key("bad", "b");
        assert!(matches!(
            log.claim(&bad, far).await.unwrap(),
            Claim::Claimed(_)
        ));
        // Recording `bad` fails after its insert, when it ends its claim.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER fail_bad BEFORE DELETE ON notification_claims
                 WHEN OLD.report_id = 'bad'
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            )
            .unwrap();
        let blocker = Blocker::hold(&path);
        let zero = key("0", "x");
        let first = log.record_sent(&zero, record("first"));
        taken(&log, 2);
        let (good, next) = (key("good", "g"), key("next", "n"));
        let record_good = log.record_sent(&good, record("good"));
        let record_bad = log.record_sent(&bad, record("bad"));
        let claim_next = log.claim(&next, far);
        blocker.commit();
        first.await.unwrap();
        record_good.await.unwrap();
        let err = record_bad.await.unwrap_err();
        assert!(format!("{err:#}").contains("injected failure"), "{err:#}");
        assert!(matches!(claim_next.await.unwrap(), Claim::Claimed(_)));
        let other = SqliteLog::open(&path).unwrap();
        assert_eq!(
            other.already_sent(&good).await.unwrap(),
            Some(record("good"))
        );
        // Nothing of the failed call stayed: no record, its claim intact.
        assert_eq!(other.already_sent(&bad).await.unwrap(), None);
        assert!(matches!(
            other.claim(&bad, far).await.unwrap(),
            Claim::HeldByOther { .. }
        ));
    }

    #[tokio::test]
    async fn a_batch_that_cannot_commit_fails_every_call_and_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite3");
        // No patience for another writer: its transaction cannot begin.
        let log = SqliteLog::open_with(&path, Duration::ZERO).unwrap();
        let far = Duration::from_secs(60);
        let blocker = Blocker::hold(&path);
        let keys = [key("1", "a"), key("2", "b"), key("3", "c")];
        let calls = (
            log.record_sent(&keys[0], record("a")),
            log.claim(&keys[1], far),
            log.release(&keys[2], ClaimToken::new("t".into())),
        );
        assert!(calls.0.await.is_err());
        assert!(calls.1.await.is_err());
        assert!(calls.2.await.is_err());
        blocker.commit();
        assert_eq!(log.already_sent(&keys[0]).await.unwrap(), None);
        assert!(matches!(
            log.claim(&keys[1], far).await.unwrap(),
            Claim::Claimed(_)
        ));
    }

    fn receipt_of(sid: &str, status: DeliveryStatus, report: &str) -> Receipt {
        Receipt {
            provider_id: sid.into(),
            channel: "sms".into(),
            report_id: Some(report.into()),
            content_hash: Some("hh".into()),
            status,
            error_code: (status == DeliveryStatus::Undelivered).then_some(30003),
            at_ms: now_ms(),
        }
    }

    #[tokio::test]
    async fn a_status_never_goes_backwards() {
        use DeliveryStatus::*;
        let dir = tempfile::tempdir().unwrap();
        let log = SqliteLog::open(&dir.path().join("log.db")).unwrap();
        // Late, twice and out of order, as Twilio's callbacks may come.
        let arrivals = [
            (Sent, ReceiptApplied::Applied),
            (Queued, ReceiptApplied::Stale { current: Sent }),
            (Delivered, ReceiptApplied::Applied),
            (Delivered, ReceiptApplied::Stale { current: Delivered }),
            (Sent, ReceiptApplied::Stale { current: Delivered }),
            (Undelivered, ReceiptApplied::Stale { current: Delivered }),
        ];
        for (status, want) in arrivals {
            let applied = log
                .record_receipt(receipt_of("SM1", status, "R-1"))
                .await
                .unwrap();
            assert_eq!(applied, want, "{status:?}");
        }
        let stored = log.receipt("SM1").await.unwrap().unwrap();
        assert_eq!((stored.status, stored.error_code), (Delivered, None));
        assert_eq!(log.receipt("SM2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn suppressions_are_added_listed_and_lifted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let log = SqliteLog::open(&path).unwrap();
        let stop = Suppression {
            channel: "sms".into(),
            subject: "s1".into(),
            reason: "inbound STOP".into(),
            since_ms: 5,
        };
        log.suppress(stop.clone()).await.unwrap();
        assert_eq!(
            log.suppression("sms", "s1").await.unwrap(),
            Some(stop.clone())
        );
        assert_eq!(log.suppression("email", "s1").await.unwrap(), None);
        // Shared by every process on the file.
        let other = SqliteLog::open(&path).unwrap();
        assert_eq!(other.suppressions().await.unwrap(), vec![stop]);
        assert!(other.lift("sms", "s1").await.unwrap());
        assert!(!log.lift("sms", "s1").await.unwrap());
        assert_eq!(log.suppression("sms", "s1").await.unwrap(), None);
    }
}
