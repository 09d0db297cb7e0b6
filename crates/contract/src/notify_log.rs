//! The notification log: which notifications the push receivers have sent,
//! so a redelivered push (or a lab re-posting the same report) does not
//! notify the owner twice.
//!
//! A notification is identified by a [`NotificationKey`]: the report id,
//! the channel (`email`, `sms`) and a SHA-256 of what would be sent
//! (recipient and content). The same report posted again with the same
//! content finds its record and is acknowledged without sending; a
//! corrected report (different content) is a new notification.
//!
//! The receivers follow one protocol, [`Dedupe`]: take the in-process lock
//! for the key (so two concurrent deliveries of one message, e.g. after a
//! lease expiry, send at most once), look the key up, send only when it is
//! absent, then record. The one window left open is a crash (or a failed
//! write) between the provider accepting the notification and the record
//! being committed: the broker redelivers and the owner gets it twice. Within
//! one instance the lock closes the concurrent window; across instances
//! sharing no store it stays open.
//!
//! [`SqliteLog`] is the embedded store (rusqlite, WAL, `synchronous=FULL`,
//! every call on a blocking thread). `NOTIFY_LOG=sqlite:///path/file.db`
//! selects it; see [`setting_from_vars`].

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// What identifies one notification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotificationKey {
    pub report_id: String,
    /// `email` or `sms`.
    pub channel: &'static str,
    /// Lowercase hex SHA-256 of what is sent; see [`content_hash`].
    pub content_hash: String,
}

/// What was recorded when a notification went out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRecord {
    /// The provider's id: the Message-ID, the Twilio SID, the outbox file.
    pub provider_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub sent_at_ms: i64,
}

impl SentRecord {
    /// A record stamped now.
    pub fn now(provider_id: Option<String>) -> SentRecord {
        let sent_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        SentRecord {
            provider_id,
            sent_at_ms,
        }
    }
}

/// Hex SHA-256 over length-prefixed fields, so no two field lists hash alike.
pub fn content_hash(fields: &[&str]) -> String {
    let mut hash = Sha256::new();
    for field in fields {
        hash.update((field.len() as u64).to_be_bytes());
        hash.update(field.as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A boxed future, so the log can live behind `Arc<dyn NotificationLog>`.
pub type LogFuture<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// Where sent notifications are recorded.
pub trait NotificationLog: Send + Sync {
    /// The record of `key`, if it was sent.
    fn already_sent<'a>(&'a self, key: &'a NotificationKey) -> LogFuture<'a, Option<SentRecord>>;
    /// Records that `key` was sent; durable when the future completes.
    /// Recording a key again keeps the first record.
    fn record_sent<'a>(&'a self, key: &'a NotificationKey, record: SentRecord)
    -> LogFuture<'a, ()>;
    /// For the startup log line.
    fn describe(&self) -> String;
}

/// Reads `NOTIFY_LOG`: `sqlite:///absolute/path.db` for the SQLite log,
/// `off` (or unset) for none.
pub fn setting_from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<PathBuf>> {
    let Some(value) = get("NOTIFY_LOG").filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match value.strip_prefix("sqlite://") {
        Some(path) if path.starts_with('/') => Ok(Some(PathBuf::from(path))),
        _ => anyhow::bail!(
            "NOTIFY_LOG must be sqlite:///absolute/path/to/file.db or off, not {value:?}"
        ),
    }
}

/// The embedded log: one SQLite file, one connection used from blocking
/// threads.
#[derive(Clone)]
pub struct SqliteLog {
    path: PathBuf,
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl SqliteLog {
    /// Opens (creating it and its directory if needed) the log at `path`.
    pub fn open(path: &Path) -> anyhow::Result<SqliteLog> {
        use anyhow::Context as _;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening the notification log {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS sent_notifications (
                 report_id    TEXT    NOT NULL,
                 channel      TEXT    NOT NULL,
                 content_hash TEXT    NOT NULL,
                 provider_id  TEXT,
                 sent_at_ms   INTEGER NOT NULL,
                 PRIMARY KEY (report_id, channel, content_hash)
             ) WITHOUT ROWID;",
        )
        .context("creating the notification log's table")?;
        Ok(SqliteLog {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let conn = Arc::clone(&self.conn);
        let result = tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&conn)
        })
        .await?;
        Ok(result?)
    }
}

impl NotificationLog for SqliteLog {
    fn already_sent<'a>(&'a self, key: &'a NotificationKey) -> LogFuture<'a, Option<SentRecord>> {
        let key = key.clone();
        Box::pin(self.blocking(move |conn| {
            use rusqlite::OptionalExtension as _;
            conn.query_row(
                "SELECT provider_id, sent_at_ms FROM sent_notifications
                 WHERE report_id = ?1 AND channel = ?2 AND content_hash = ?3",
                (&key.report_id, key.channel, &key.content_hash),
                |row| {
                    Ok(SentRecord {
                        provider_id: row.get(0)?,
                        sent_at_ms: row.get(1)?,
                    })
                },
            )
            .optional()
        }))
    }

    fn record_sent<'a>(
        &'a self,
        key: &'a NotificationKey,
        record: SentRecord,
    ) -> LogFuture<'a, ()> {
        let key = key.clone();
        Box::pin(self.blocking(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO sent_notifications
                 (report_id, channel, content_hash, provider_id, sent_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                (
                    &key.report_id,
                    key.channel,
                    &key.content_hash,
                    &record.provider_id,
                    record.sent_at_ms,
                ),
            )
            .map(|_| ())
        }))
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }
}

/// The check-send-record protocol around one [`NotificationLog`], with an
/// in-process lock per key so concurrent deliveries of one notification
/// are serialised: the second finds the first's record.
pub struct Dedupe {
    log: Arc<dyn NotificationLog>,
    locks: Mutex<HashMap<NotificationKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a notification is checked, sent and recorded; releasing it
/// lets the next delivery of the same key look it up.
pub struct KeyGuard<'a> {
    dedupe: &'a Dedupe,
    key: NotificationKey,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self
            .dedupe
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the map holds it: nobody waits, forget the key.
        if locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

impl Dedupe {
    pub fn new(log: Arc<dyn NotificationLog>) -> Dedupe {
        Dedupe {
            log,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Opens the SQLite log at `path`.
    pub fn sqlite(path: &Path) -> anyhow::Result<Dedupe> {
        Ok(Dedupe::new(Arc::new(SqliteLog::open(path)?)))
    }

    /// The `NOTIFY_LOG` store of a push service sending `what` ("email",
    /// "SMS"), or none (with a warning: redeliveries will send again).
    pub fn open_setting(path: Option<&Path>, what: &str) -> anyhow::Result<Option<Dedupe>> {
        let Some(path) = path else {
            tracing::warn!("NOTIFY_LOG is not set: a redelivered push sends its {what} again");
            return Ok(None);
        };
        let dedupe = anyhow::Context::context(
            Dedupe::sqlite(path),
            "opening the notification log (NOTIFY_LOG)",
        )?;
        Ok(Some(dedupe))
    }

    pub fn describe(&self) -> String {
        self.log.describe()
    }

    /// Waits for the lock of `key`; hold it across lookup, send and record.
    pub async fn lock(&self, key: &NotificationKey) -> KeyGuard<'_> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        KeyGuard {
            dedupe: self,
            key: key.clone(),
            guard: Some(lock.lock_owned().await),
        }
    }

    pub async fn already_sent(&self, key: &NotificationKey) -> anyhow::Result<Option<SentRecord>> {
        self.log.already_sent(key).await
    }

    pub async fn record_sent(
        &self,
        key: &NotificationKey,
        record: SentRecord,
    ) -> anyhow::Result<()> {
        self.log.record_sent(key, record).await
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

    #[tokio::test]
    async fn the_key_lock_serialises_and_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let dedupe = Arc::new(Dedupe::sqlite(&dir.path().join("log.db")).unwrap());
        let k = key("7", "cc");
        let first = dedupe.lock(&k).await;
        let waiter = {
            let dedupe = Arc::clone(&dedupe);
            let k = k.clone();
            tokio::spawn(async move {
                let _guard = dedupe.lock(&k).await;
                dedupe.already_sent(&k).await.unwrap()
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second delivery waits");
        dedupe.record_sent(&k, SentRecord::now(None)).await.unwrap();
        drop(first);
        assert!(waiter.await.unwrap().is_some(), "and then sees the record");
        assert!(dedupe.locks.lock().unwrap().is_empty());
    }

    #[test]
    fn reads_the_setting() {
        let get = |v: &'static str| move |name: &str| (name == "NOTIFY_LOG").then(|| v.to_string());
        assert_eq!(setting_from_vars(|_| None).unwrap(), None);
        assert_eq!(setting_from_vars(get("off")).unwrap(), None);
        assert_eq!(
            setting_from_vars(get("sqlite:///var/lib/n.db")).unwrap(),
            Some(PathBuf::from("/var/lib/n.db"))
        );
        assert!(setting_from_vars(get("sqlite://rel.db")).is_err());
        assert!(setting_from_vars(get("/var/lib/n.db")).is_err());
    }

    #[test]
    fn content_hashes_are_length_prefixed() {
        assert_ne!(content_hash(&["ab", "c"]), content_hash(&["a", "bc"]));
        assert_eq!(content_hash(&["x"]).len(), 64);
    }
}
