//! The embedded store: one SQLite file (WAL, `synchronous=NORMAL`), every
//! call on a blocking thread.
//!
//! `NORMAL`, not `FULL`: in WAL mode a commit then survives the process
//! dying (it is in the operating system's cache) but not a power cut or a
//! kernel crash, which can roll back the last records; the notifications
//! they recorded would then be sent again on redelivery, the same
//! duplicate window as a crash between the provider accepting and the
//! record being written. In exchange a claim and a record cost no fsync:
//! with `FULL`, two fsyncs per notification made this log the pipeline's
//! bottleneck (`BENCHMARKS.md`, "Where the time goes"). Claims live in their own table, taken in an
//! `IMMEDIATE` transaction, so processes sharing the file exclude each
//! other like Cloud Run instances sharing Firestore.
//!
//! A SQLite file is shared only on one machine, so a claim also names its
//! holder (host name and process id): a live claim whose process is gone
//! (killed mid-send, restarted) is taken over at once instead of holding
//! its notification back until its lease lapses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{OptionalExtension as _, TransactionBehavior};

use super::{Claim, ClaimToken, LogFuture, NotificationKey, NotificationLog, SentRecord, now_ms};

/// The embedded log: one SQLite file, one connection used from blocking
/// threads.
#[derive(Clone)]
pub struct SqliteLog {
    path: PathBuf,
    /// An async lock, taken before a blocking thread is: with hundreds of
    /// pushes at once, a `std` mutex parked one blocking thread per push on
    /// it (hundreds of threads, most of the CPU in context switches).
    conn: Arc<tokio::sync::Mutex<rusqlite::Connection>>,
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
        conn.pragma_update(None, "synchronous", "NORMAL")?;
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
                 holder_host    TEXT    NOT NULL,
                 holder_pid     INTEGER NOT NULL,
                 PRIMARY KEY (report_id, channel, content_hash)
             ) WITHOUT ROWID;",
        )
        .context("creating the notification log's tables")?;
        Ok(SqliteLog {
            path: path.to_path_buf(),
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let mut conn = Arc::clone(&self.conn).lock_owned().await;
        let result = tokio::task::spawn_blocking(move || f(&mut conn)).await?;
        Ok(result?)
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

/// This machine's name, as claims record it; empty when unknown (then no
/// claim is taken for a dead process's).
fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_default()
    })
}

/// Whether the claim of process `pid` on `host` may be taken over before
/// its lease lapses: it was made on this machine by a process that no
/// longer exists. Without `/proc` nothing is known and the lease stands.
fn holder_is_gone(host: &str, pid: i64) -> bool {
    !host.is_empty()
        && host == host_name()
        && pid != i64::from(std::process::id())
        && Path::new("/proc/self").exists()
        && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Unique among the claims of every process on this machine.
fn new_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl NotificationLog for SqliteLog {
    fn already_sent<'a>(&'a self, key: &'a NotificationKey) -> LogFuture<'a, Option<SentRecord>> {
        let key = key.clone();
        Box::pin(self.blocking(move |conn| sent_record(conn, &key)))
    }

    fn claim<'a>(&'a self, key: &'a NotificationKey, lease_until_ms: i64) -> LogFuture<'a, Claim> {
        let key = key.clone();
        Box::pin(self.blocking(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(record) = sent_record(&tx, &key)? {
                return Ok(Claim::AlreadySent(record));
            }
            let held: Option<(i64, String, i64)> = tx
                .prepare_cached(
                    "SELECT lease_until_ms, holder_host, holder_pid FROM notification_claims
                     WHERE report_id = ?1 AND channel = ?2 AND content_hash = ?3",
                )?
                .query_row((&key.report_id, key.channel, &key.content_hash), |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?;
            if let Some((until, host, pid)) = held
                && until > now_ms()
                && !holder_is_gone(&host, pid)
            {
                return Ok(Claim::HeldByOther {
                    lease_until_ms: until,
                });
            }
            let token = new_token();
            tx.prepare_cached(
                "INSERT OR REPLACE INTO notification_claims
                 (report_id, channel, content_hash, token, lease_until_ms, holder_host, holder_pid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute((
                &key.report_id,
                key.channel,
                &key.content_hash,
                &token,
                lease_until_ms,
                host_name(),
                i64::from(std::process::id()),
            ))?;
            tx.commit()?;
            Ok(Claim::Claimed(ClaimToken::new(token)))
        }))
    }

    fn release<'a>(&'a self, key: &'a NotificationKey, token: ClaimToken) -> LogFuture<'a, ()> {
        let key = key.clone();
        Box::pin(self.blocking(move |conn| {
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
        }))
    }

    fn record_sent<'a>(
        &'a self,
        key: &'a NotificationKey,
        record: SentRecord,
    ) -> LogFuture<'a, ()> {
        let key = key.clone();
        Box::pin(self.blocking(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
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
            tx.prepare_cached(
                "DELETE FROM notification_claims
                 WHERE report_id = ?1 AND channel = ?2 AND content_hash = ?3",
            )?
            .execute((&key.report_id, key.channel, &key.content_hash))?;
            tx.commit()
        }))
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

    #[tokio::test]
    async fn claims_exclude_until_released_recorded_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite3");
        let (a, b) = (
            SqliteLog::open(&path).unwrap(),
            SqliteLog::open(&path).unwrap(),
        );
        let k = key("13", "cc");
        let far = now_ms() + 60_000;
        let Claim::Claimed(token) = a.claim(&k, far).await.unwrap() else {
            panic!("a fresh key is claimed");
        };
        assert_eq!(
            b.claim(&k, far).await.unwrap(),
            Claim::HeldByOther {
                lease_until_ms: far
            }
        );
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
        let Claim::Claimed(_) = b.claim(&k, now_ms() - 1).await.unwrap() else {
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
    async fn a_dead_process_claim_on_this_host_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite3");
        let log = SqliteLog::open(&path).unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let far = now_ms() + 60_000;
        // A live claim as another process left it.
        let claimed_by = |hash: &str, host: &str, pid: u32| {
            rusqlite::Connection::open(&path)
                .unwrap()
                .execute(
                    "INSERT INTO notification_claims VALUES ('14', 'email', ?1, 't', ?2, ?3, ?4)",
                    (hash, far, host, pid),
                )
                .unwrap();
            key("14", hash)
        };
        let dead_here = claimed_by("dead-here", host_name(), gone.id());
        let live_here = claimed_by("live-here", host_name(), std::process::id());
        let elsewhere = claimed_by("elsewhere", "another-host", gone.id());
        assert!(!host_name().is_empty());
        assert!(matches!(
            log.claim(&dead_here, far).await.unwrap(),
            Claim::Claimed(_)
        ));
        for held in [live_here, elsewhere] {
            assert_eq!(
                log.claim(&held, far).await.unwrap(),
                Claim::HeldByOther {
                    lease_until_ms: far
                },
                "{held:?}"
            );
        }
    }
}
