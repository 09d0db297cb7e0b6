//! The notification log: which notifications the push receivers have sent,
//! so a redelivered push (or a lab re-posting the same report) does not
//! notify the owner twice.
//!
//! A notification is identified by a [`NotificationKey`]: the report id,
//! the channel (`email`, `sms`) and a SHA-256 of the report's content and
//! the recipient ([`notification_hash`]), not of the rendered text, so a
//! template change does not make a sent notification new. Nor does the
//! owner's `locale`: a report corrected only to change the language says
//! nothing new, and the owner has the results already. The same report
//! posted again finds its record and is acknowledged without sending; a
//! corrected report (different content) is a new notification.
//!
//! The receivers follow one protocol, [`Dedupe`], whatever the store:
//!
//! 1. take the in-process lock for the key, so concurrent deliveries of one
//!    message to this instance queue behind each other;
//! 2. claim the key in the store ([`NotificationLog::claim`]): a claim is a
//!    lease, written only if no other claim is live and no record exists,
//!    so two instances sharing the store (Cloud Run scaled out, a message
//!    redelivered after its lease expired) cannot both send. Already sent:
//!    acknowledge without sending. Held by another instance: fail, and the
//!    broker redelivers later, when the holder has recorded or its lease
//!    has lapsed;
//! 3. send, then record (which ends the claim). A send that failed before
//!    the provider could take the message releases the claim when the lock
//!    is dropped, so the redelivery can send. A send whose outcome is
//!    unknown (cut off at its attempt limit, the provider's answer never
//!    read) keeps the claim ([`Dedupe::keep_claim`]): deliveries are
//!    answered [`ClaimHeld`] until its lease lapses, instead of sending
//!    once each.
//!
//! A claim's lease is short ([`ClaimLimits::lease`]: a minute or so), so
//! that a dead holder's claim lapses soon, and it is renewed while its
//! holder works ([`NotificationLog::renew`], every third of the lease,
//! until the claim is recorded, released or kept), so that a live attempt
//! keeps it however long the channel lets it run (an email waiting minutes
//! for the server's answer to its data). Without the renewals the lease
//! still covers every step at the send timeout's attempt limit. The lease
//! is measured on one clock: the host's for the SQLite log (one machine),
//! Firestore's own for the Firestore log.
//!
//! The duplicate windows left, each at most one extra notification:
//! - a crash (or a failed or cut-off record) between the provider accepting
//!   the notification and the record being committed: the claim lapses
//!   after its lease (the SQLite log takes a dead process's claim over at
//!   once), the broker redelivers and the owner gets it twice;
//! - a send whose outcome was unknown and that had in fact gone out: the
//!   first delivery after its lease lapsed sends it again;
//! - renewals that fail (the store unreachable) for longer than the lease
//!   while the attempt goes on: another instance may take the claim over
//!   and send too.
//!
//! Stores, chosen by `NOTIFY_LOG` ([`setting_from_vars`]):
//! - [`SqliteLog`] (`sqlite:///path/file.db`), the embedded default of
//!   `labrelay up`: one file, shared by the processes of one machine.
//! - [`FirestoreLog`] (`firestore`, or
//!   `firestore://projects/P/databases/D[/COLLECTION]`): one document per
//!   notification in a Firestore collection, for many Cloud Run instances.
//!   `FIRESTORE_EMULATOR_HOST=host:port` points it at the emulator.
//!
//! Beside the protocol and the store trait here: `key` (what a
//! notification is keyed by), `limits` (each step's limit and the lease),
//! `suppressions` and `receipts` (the other facts the stores keep),
//! `holder` (the SQLite log's live-holder lock files).

mod firestore;
mod holder;
mod key;
mod limits;
mod receipts;
mod sqlite;
mod suppressions;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::Instrument as _;

pub use firestore::{DEFAULT_COLLECTION, FirestoreLog, FirestoreSetting};
pub use key::{content_hash, notification_hash};
pub use limits::{CLAIM_LIMIT, ClaimLimits, LEASE_MARGIN, RECORD_LIMIT, attempt_limit};
pub use receipts::{DeliveryStatus, Receipt, ReceiptApplied};
pub use sqlite::SqliteLog;
pub use suppressions::{Suppression, subject_hash};

/// What identifies one notification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotificationKey {
    pub report_id: String,
    /// `email` or `sms`.
    pub channel: &'static str,
    /// Lowercase hex SHA-256 of the report's content and the recipient;
    /// see [`notification_hash`].
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
        SentRecord {
            provider_id,
            sent_at_ms: now_ms(),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Identifies one claim, so only its holder releases it. Opaque: each
/// store puts in it what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken(String);

impl ClaimToken {
    pub fn new(token: String) -> ClaimToken {
        ClaimToken(token)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The answer to [`NotificationLog::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller may send; record or release afterwards.
    Claimed(ClaimToken),
    /// Sent before: do not send.
    AlreadySent(SentRecord),
    /// Another sender holds a live claim until this time (ms since the
    /// epoch, on the store's clock): it may be sending right now, or may
    /// have sent without knowing it.
    HeldByOther { lease_until_ms: i64 },
}

/// [`Dedupe::already_sent`] failed because another instance is sending the
/// same notification. The push should be answered with a retryable error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "another delivery is sending this notification (its claim lasts until {lease_until_ms} ms after the epoch); retry later"
)]
pub struct ClaimHeld {
    pub lease_until_ms: i64,
}

/// A boxed future, so the log can live behind `Arc<dyn NotificationLog>`.
pub type LogFuture<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// Where sent notifications are recorded.
pub trait NotificationLog: Send + Sync {
    /// The record of `key`, if it was sent (a claim alone is not a record).
    fn already_sent<'a>(&'a self, key: &'a NotificationKey) -> LogFuture<'a, Option<SentRecord>>;
    /// Claims `key` for `lease`, measured on the store's clock from when
    /// the claim is written, unless it was sent or another claim on it is
    /// still live; an expired claim is taken over. Atomic against every
    /// other client of the same store.
    fn claim<'a>(&'a self, key: &'a NotificationKey, lease: Duration) -> LogFuture<'a, Claim>;
    /// Gives up the claim `token` on `key` (the send failed), unless it was
    /// taken over or recorded meanwhile.
    fn release<'a>(&'a self, key: &'a NotificationKey, token: ClaimToken) -> LogFuture<'a, ()>;
    /// Extends the claim `token` on `key` to `lease` from now (on the
    /// store's clock) if it is still this claim: its token from now on
    /// (a store may change it), or `None` when it was taken over,
    /// released or recorded meanwhile, and nothing was written.
    fn renew<'a>(
        &'a self,
        key: &'a NotificationKey,
        token: ClaimToken,
        lease: Duration,
    ) -> LogFuture<'a, Option<ClaimToken>>;
    /// Records that `key` was sent, ending any claim on it; durable when
    /// the future completes. Recording a key again keeps the first record.
    fn record_sent<'a>(&'a self, key: &'a NotificationKey, record: SentRecord)
    -> LogFuture<'a, ()>;
    /// The suppression of `subject` on `channel`, if any.
    fn suppression<'a>(
        &'a self,
        channel: &'a str,
        subject: &'a str,
    ) -> LogFuture<'a, Option<Suppression>>;
    /// Records `suppression`, replacing any earlier one of its subject.
    fn suppress<'a>(&'a self, suppression: Suppression) -> LogFuture<'a, ()>;
    /// Lifts the suppression of `subject` on `channel`; whether there was
    /// one.
    fn lift<'a>(&'a self, channel: &'a str, subject: &'a str) -> LogFuture<'a, bool>;
    /// Every suppression, oldest first.
    fn suppressions(&self) -> LogFuture<'_, Vec<Suppression>>;
    /// Stores `receipt` unless the message's stored status ranks as high
    /// ([`DeliveryStatus::rank`]); atomic against every other client.
    fn record_receipt<'a>(&'a self, receipt: Receipt) -> LogFuture<'a, ReceiptApplied>;
    /// The stored status of the provider's message `provider_id`.
    fn receipt<'a>(&'a self, provider_id: &'a str) -> LogFuture<'a, Option<Receipt>>;
    /// For the startup log line.
    fn describe(&self) -> String;
}

/// Which notification log a push service uses (`NOTIFY_LOG`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NotifyLogSetting {
    /// No log: a redelivered push notifies again.
    #[default]
    Off,
    /// The embedded SQLite log at this absolute path.
    Sqlite(PathBuf),
    /// A Firestore collection.
    Firestore(FirestoreSetting),
}

/// Reads `NOTIFY_LOG`:
/// - `off` (or unset): no log;
/// - `sqlite:///absolute/path.db`: the SQLite log;
/// - `firestore`: collection `labrelay-notifications` of the `(default)`
///   database of project `GOOGLE_CLOUD_PROJECT`;
/// - `firestore://projects/PROJECT/databases/DATABASE[/COLLECTION]`.
///
/// With Firestore, `FIRESTORE_EMULATOR_HOST=host:port` selects the emulator
/// (no credentials); without it the service calls Firestore with
/// Application Default Credentials.
pub fn setting_from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<NotifyLogSetting> {
    let Some(value) = get("NOTIFY_LOG").filter(|v| !v.trim().is_empty()) else {
        return Ok(NotifyLogSetting::Off);
    };
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(NotifyLogSetting::Off);
    }
    if let Some(path) = value.strip_prefix("sqlite://") {
        if path.starts_with('/') {
            return Ok(NotifyLogSetting::Sqlite(PathBuf::from(path)));
        }
        anyhow::bail!(
            "NOTIFY_LOG: a SQLite log needs an absolute path (sqlite:///abs/path.db), not {value:?}"
        );
    }
    if value == "firestore" || value.starts_with("firestore://") {
        return Ok(NotifyLogSetting::Firestore(FirestoreSetting::parse(
            value, &get,
        )?));
    }
    anyhow::bail!(
        "NOTIFY_LOG must be sqlite:///absolute/path/to/file.db, firestore, \
         firestore://projects/PROJECT/databases/DATABASE[/COLLECTION] or off, not {value:?}"
    )
}

/// The check-send-record protocol around one [`NotificationLog`]: an
/// in-process lock per key, a claim in the store, then the record. See the
/// module doc.
pub struct Dedupe {
    log: Arc<dyn NotificationLog>,
    keys: Arc<Mutex<HashMap<NotificationKey, Arc<KeyState>>>>,
    limits: ClaimLimits,
}

/// One key's in-process state, kept while a delivery holds or awaits it.
#[derive(Default)]
struct KeyState {
    /// Held by the delivery in progress.
    delivery: Arc<tokio::sync::Mutex<()>>,
    /// The claim this instance holds on the key, neither recorded nor
    /// released. Locked while a claim is being taken, so whoever releases
    /// it sees the outcome of a claim whose caller was cancelled, and
    /// while it is renewed, so whoever ends it uses its current token.
    claim: Arc<tokio::sync::Mutex<Option<Held>>>,
}

/// A claim this instance holds, and the task renewing its lease
/// ([`renew_while_held`]). Taking it out of its slot and dropping it (the
/// claim recorded, released or kept) stops the renewals.
struct Held {
    token: ClaimToken,
    renewing: tokio::task::AbortHandle,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewing.abort();
    }
}

/// The heartbeat of one claim: every [`ClaimLimits::renew_every`] it
/// extends the claim in `slot` by another lease, so that a live attempt
/// keeps its claim however long it runs while a dead holder's lapses
/// after one lease. Stops when the claim leaves the slot (aborted by
/// [`Held`]'s drop), or when the store says the claim is no longer this
/// one. A renewal that fails or times out is logged and tried again at
/// the next beat; the attempt goes on either way, and if the lease lapses
/// meanwhile another instance may take the claim over.
async fn renew_while_held(
    log: Arc<dyn NotificationLog>,
    key: NotificationKey,
    slot: Arc<tokio::sync::Mutex<Option<Held>>>,
    limits: ClaimLimits,
) {
    let (lease, limit) = (limits.lease(), limits.renew_limit());
    loop {
        tokio::time::sleep(limits.renew_every()).await;
        let mut slot = slot.lock().await;
        let Some(held) = slot.as_mut() else {
            return;
        };
        match tokio::time::timeout(limit, log.renew(&key, held.token.clone(), lease)).await {
            Ok(Ok(Some(token))) => held.token = token,
            Ok(Ok(None)) => {
                tracing::warn!(
                    "the notification's claim was taken over or ended while its delivery still runs; another delivery may send it too"
                );
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(error = ?error, "renewing the notification's claim failed; trying again at the next renewal");
            }
            Err(_) => {
                tracing::warn!(
                    "renewing the notification's claim took longer than {limit:?}; trying again at the next renewal"
                );
            }
        }
    }
}

/// Held while a notification is checked, sent and recorded; releasing it
/// lets the next delivery of the same key look it up. Dropped with a claim
/// neither recorded nor released (the send failed, or the push was
/// cancelled), it releases the claim first, on a task, and only then lets
/// the next delivery in.
pub struct KeyGuard<'a> {
    dedupe: &'a Dedupe,
    key: NotificationKey,
    state: Option<Arc<KeyState>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let (Some(state), Some(guard)) = (self.state.take(), self.guard.take()) else {
            return;
        };
        let settled = match Arc::clone(&state.claim).try_lock_owned() {
            Ok(mut slot) => match slot.take() {
                None => {
                    drop((guard, state));
                    forget_if_idle(&self.dedupe.keys, &self.key);
                    return;
                }
                Some(held) => Some(held.token.clone()),
            },
            // A claim is still being taken: wait for it on the task.
            Err(_) => None,
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to release on: the claim lapses with its lease.
            drop((guard, state));
            forget_if_idle(&self.dedupe.keys, &self.key);
            return;
        };
        let log = Arc::clone(&self.dedupe.log);
        let keys = Arc::clone(&self.dedupe.keys);
        let key = self.key.clone();
        let limit = self.dedupe.limits.record;
        runtime.spawn(async move {
            let token = match settled {
                Some(token) => Some(token),
                None => state.claim.lock().await.take().map(|h| h.token.clone()),
            };
            if let Some(token) = token
                && let Err(error) = tokio::time::timeout(limit, log.release(&key, token))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {limit:?}")))
            {
                tracing::warn!(error = ?error, "releasing the claim of an unsent notification failed; it lapses with its lease");
            }
            drop((guard, state));
            forget_if_idle(&keys, &key);
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Nobody holds or awaits the key: forget it.
fn forget_if_idle(keys: &Mutex<HashMap<NotificationKey, Arc<KeyState>>>, key: &NotificationKey) {
    let mut keys = lock(keys);
    if keys.get(key).is_some_and(|s| Arc::strong_count(s) == 1) {
        keys.remove(key);
    }
}

impl Dedupe {
    pub fn new(log: Arc<dyn NotificationLog>) -> Dedupe {
        Dedupe {
            log,
            keys: Arc::default(),
            limits: ClaimLimits::default(),
        }
    }

    /// The same, with each step bounded by `limits` (and claims lasting
    /// their [`lease`](ClaimLimits::lease)) instead of the default's.
    pub fn with_limits(mut self, limits: ClaimLimits) -> Dedupe {
        self.limits = limits;
        self
    }

    /// How long each step may take, and how long a claim lasts unrenewed.
    pub fn limits(&self) -> ClaimLimits {
        self.limits
    }

    /// Opens the SQLite log at `path`.
    pub fn sqlite(path: &Path) -> anyhow::Result<Dedupe> {
        Ok(Dedupe::new(Arc::new(SqliteLog::open(path)?)))
    }

    /// The `NOTIFY_LOG` store of a push service sending `what` ("email",
    /// "SMS"), or none (with a warning: redeliveries will send again).
    pub fn open_setting(setting: &NotifyLogSetting, what: &str) -> anyhow::Result<Option<Dedupe>> {
        use anyhow::Context as _;
        let log: Arc<dyn NotificationLog> = match setting {
            NotifyLogSetting::Off => {
                tracing::warn!("NOTIFY_LOG is not set: a redelivered push sends its {what} again");
                return Ok(None);
            }
            NotifyLogSetting::Sqlite(path) => Arc::new(
                SqliteLog::open(path).context("opening the notification log (NOTIFY_LOG)")?,
            ),
            NotifyLogSetting::Firestore(firestore) => Arc::new(
                FirestoreLog::open(firestore)
                    .context("opening the notification log (NOTIFY_LOG)")?,
            ),
        };
        Ok(Some(Dedupe::new(log)))
    }

    pub fn describe(&self) -> String {
        self.log.describe()
    }

    /// The store itself, for what else it keeps (suppressions, receipts).
    pub fn log(&self) -> Arc<dyn NotificationLog> {
        Arc::clone(&self.log)
    }

    fn state(&self, key: &NotificationKey) -> Arc<KeyState> {
        Arc::clone(lock(&self.keys).entry(key.clone()).or_default())
    }

    /// Waits for the lock of `key`; hold it across lookup, send and record.
    pub async fn lock(&self, key: &NotificationKey) -> KeyGuard<'_> {
        let state = self.state(key);
        let guard = Arc::clone(&state.delivery).lock_owned().await;
        KeyGuard {
            dedupe: self,
            key: key.clone(),
            state: Some(state),
            guard: Some(guard),
        }
    }

    /// Call with the key's lock held. The record of `key` if it was sent;
    /// if not, claims it for this instance (`None`: send, then
    /// [`record_sent`](Self::record_sent)). Fails with [`ClaimHeld`] while
    /// another instance holds the claim: do not send, let the broker retry.
    ///
    /// Cancel-safe: the claim is taken on a task, and a claim whose caller
    /// went away is released when the key's lock is dropped. Bounded by
    /// [`ClaimLimits::claim`]: a claim that takes longer fails, and if it
    /// was written all the same it lapses with its lease. A claim taken is
    /// renewed (`renew_while_held`) until it is recorded, released or
    /// kept.
    pub async fn already_sent(&self, key: &NotificationKey) -> anyhow::Result<Option<SentRecord>> {
        let limits = self.limits;
        // Uncontended under the key's lock; taken before the task starts so
        // a release waits for the task.
        let claim_slot = Arc::clone(&self.state(key).claim);
        let mut slot = Arc::clone(&claim_slot).lock_owned().await;
        let log = Arc::clone(&self.log);
        let owned = key.clone();
        let claiming = tokio::spawn(
            async move {
                let limit = limits.claim;
                let claim = tokio::time::timeout(limit, log.claim(&owned, limits.lease()))
                    .await
                    .unwrap_or_else(|_| {
                        Err(anyhow::anyhow!(
                            "claiming the notification took longer than {limit:?}; \
                             a claim written all the same lapses with its lease"
                        ))
                    });
                if let Ok(Claim::Claimed(token)) = &claim {
                    let renewing = tokio::spawn(
                        renew_while_held(log, owned, claim_slot, limits).in_current_span(),
                    );
                    *slot = Some(Held {
                        token: token.clone(),
                        renewing: renewing.abort_handle(),
                    });
                }
                claim
            }
            .in_current_span(),
        );
        match claiming.await?? {
            Claim::Claimed(_) => Ok(None),
            Claim::AlreadySent(record) => Ok(Some(record)),
            Claim::HeldByOther { lease_until_ms } => Err(ClaimHeld { lease_until_ms }.into()),
        }
    }

    /// Records that `key` was sent, within [`ClaimLimits::record`].
    /// Whether or not that works, the claim is not released: a failed
    /// record leaves it to lapse, so a redelivery within the lease does
    /// not send again.
    pub async fn record_sent(
        &self,
        key: &NotificationKey,
        record: SentRecord,
    ) -> anyhow::Result<()> {
        let limit = self.limits.record;
        let state = self.state(key);
        let mut slot = state.claim.lock().await;
        let result = tokio::time::timeout(limit, self.log.record_sent(key, record))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "recording the notification took longer than {limit:?}"
                ))
            });
        *slot = None;
        result
    }

    /// The send of `key` ended without telling whether the provider took
    /// the notification (cut off at its attempt limit): keeps the claim,
    /// neither recorded nor released nor renewed, so every delivery is
    /// answered [`ClaimHeld`] until its lease lapses instead of sending
    /// again. The first delivery after that sends it: once more if it had
    /// gone out.
    pub async fn keep_claim(&self, key: &NotificationKey) {
        *self.state(key).claim.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labrelay_contract::LabReport;

    #[test]
    fn an_attempt_goes_on_past_the_send_timeout_and_the_lease_covers_every_step() {
        let secs = Duration::from_secs;
        assert_eq!(attempt_limit(secs(1)), secs(4));
        assert_eq!(attempt_limit(secs(10)), secs(40));
        assert_eq!(attempt_limit(secs(15)), secs(45));
        assert_eq!(attempt_limit(secs(30)), secs(45));
        assert_eq!(attempt_limit(Duration::MAX), secs(45));
        for (send_timeout, lease) in [(1, 29), (10, 65), (30, 70)] {
            let limits = ClaimLimits::for_send_timeout(secs(send_timeout));
            assert_eq!(limits.lease(), secs(lease), "{send_timeout} s");
            assert!(
                limits.lease() >= limits.claim + limits.attempt + limits.record + secs(5),
                "{limits:?}"
            );
        }
        assert_eq!(ClaimLimits::default().lease(), secs(70));
    }

    fn key(report: &str, hash: &str) -> NotificationKey {
        NotificationKey {
            report_id: report.into(),
            channel: "email",
            content_hash: hash.into(),
        }
    }

    #[tokio::test]
    async fn the_key_lock_serialises_and_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let dedupe = Arc::new(Dedupe::sqlite(&dir.path().join("log.db")).unwrap());
        let k = key("7", "cc");
        let first = dedupe.lock(&k).await;
        assert_eq!(dedupe.already_sent(&k).await.unwrap(), None);
        let waiter = {
            let dedupe = Arc::clone(&dedupe);
            let k = k.clone();
            tokio::spawn(async move {
                let _guard = dedupe.lock(&k).await;
                dedupe.already_sent(&k).await.unwrap()
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the second delivery waits");
        dedupe.record_sent(&k, SentRecord::now(None)).await.unwrap();
        drop(first);
        assert!(waiter.await.unwrap().is_some(), "and then sees the record");
        assert!(dedupe.keys.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failed_send_releases_its_claim_before_the_next_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let dedupe = Arc::new(Dedupe::sqlite(&dir.path().join("log.db")).unwrap());
        let k = key("8", "dd");
        let first = dedupe.lock(&k).await;
        assert_eq!(dedupe.already_sent(&k).await.unwrap(), None);
        let retry = {
            let dedupe = Arc::clone(&dedupe);
            let k = k.clone();
            tokio::spawn(async move {
                let _guard = dedupe.lock(&k).await;
                dedupe.already_sent(&k).await.map_err(|e| e.to_string())
            })
        };
        // The send failed: nothing recorded, the guard goes.
        drop(first);
        assert_eq!(
            retry.await.unwrap(),
            Ok(None),
            "the next delivery claims it again"
        );
    }

    #[tokio::test]
    async fn a_cancelled_claim_is_released_with_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let (a, b) = (
            Dedupe::sqlite(&path).unwrap(),
            Dedupe::sqlite(&path).unwrap(),
        );
        let k = key("11", "gg");
        let guard = a.lock(&k).await;
        // The push goes away while its claim is being written: another
        // connection holds the write lock, so the claim waits on it.
        let blocker = rusqlite::Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let cancelled = tokio::time::timeout(Duration::from_millis(50), a.already_sent(&k)).await;
        assert!(cancelled.is_err(), "{cancelled:?}");
        blocker.execute_batch("COMMIT").unwrap();
        drop(guard);
        // The release runs on a task that holds the key until it is done.
        drop(a.lock(&k).await);
        assert_eq!(b.already_sent(&k).await.unwrap(), None, "b may send");
        assert!(a.keys.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_live_claim_elsewhere_fails_with_claim_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        // Two instances sharing one store.
        let a = Dedupe::sqlite(&path).unwrap();
        let b = Dedupe::sqlite(&path).unwrap();
        let k = key("9", "ee");
        let _a_guard = a.lock(&k).await;
        assert_eq!(a.already_sent(&k).await.unwrap(), None);
        let _b_guard = b.lock(&k).await;
        let err = b.already_sent(&k).await.unwrap_err();
        assert!(err.downcast_ref::<ClaimHeld>().is_some(), "{err:#}");
        a.record_sent(&k, SentRecord::now(Some("id-1".into())))
            .await
            .unwrap();
        let record = b.already_sent(&k).await.unwrap().unwrap();
        assert_eq!(record.provider_id.as_deref(), Some("id-1"));
    }

    #[tokio::test]
    async fn an_expired_claim_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        // A live holder whose claim lapsed without being recorded or
        // released (its send's outcome was unknown).
        let holder = SqliteLog::open(&path).unwrap();
        let k = key("10", "ff");
        assert!(matches!(
            holder.claim(&k, Duration::ZERO).await.unwrap(),
            Claim::Claimed(_)
        ));
        let other = Dedupe::sqlite(&path).unwrap();
        let _guard = other.lock(&k).await;
        assert_eq!(other.already_sent(&k).await.unwrap(), None);
    }

    /// Limits whose lease is 600 ms, renewed every 200 ms.
    fn short_limits() -> ClaimLimits {
        let ms = Duration::from_millis;
        ClaimLimits {
            claim: ms(100),
            attempt: ms(100),
            record: ms(300),
            margin: ms(100),
        }
    }

    #[tokio::test]
    async fn a_claim_held_past_its_lease_is_renewed_until_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let limits = short_limits();
        assert_eq!(limits.lease(), Duration::from_millis(600));
        let a = Dedupe::sqlite(&path).unwrap().with_limits(limits);
        let b = Dedupe::sqlite(&path).unwrap().with_limits(limits);
        let k = key("12", "renewed");
        let guard = a.lock(&k).await;
        assert_eq!(a.already_sent(&k).await.unwrap(), None);
        // A send that takes four leases: the claim is still a's.
        tokio::time::sleep(limits.lease() * 4).await;
        let _b_guard = b.lock(&k).await;
        let err = b.already_sent(&k).await.unwrap_err();
        assert!(err.downcast_ref::<ClaimHeld>().is_some(), "{err:#}");
        a.record_sent(&k, SentRecord::now(Some("once".into())))
            .await
            .unwrap();
        drop(guard);
        let record = b.already_sent(&k).await.unwrap().unwrap();
        assert_eq!(record.provider_id.as_deref(), Some("once"));
    }

    #[tokio::test]
    async fn a_kept_claim_is_no_longer_renewed_and_lapses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let limits = short_limits();
        let a = Dedupe::sqlite(&path).unwrap().with_limits(limits);
        let b = Dedupe::sqlite(&path).unwrap().with_limits(limits);
        let k = key("13", "kept");
        let guard = a.lock(&k).await;
        assert_eq!(a.already_sent(&k).await.unwrap(), None);
        // The outcome is unknown: kept, not renewed.
        a.keep_claim(&k).await;
        drop(guard);
        let _b_guard = b.lock(&k).await;
        let err = b.already_sent(&k).await.unwrap_err();
        assert!(err.downcast_ref::<ClaimHeld>().is_some(), "{err:#}");
        tokio::time::sleep(limits.lease() * 2).await;
        assert_eq!(b.already_sent(&k).await.unwrap(), None, "b may send");
    }

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn reads_the_setting() {
        use NotifyLogSetting::*;
        assert_eq!(setting_from_vars(|_| None).unwrap(), Off);
        assert_eq!(
            setting_from_vars(vars(&[("NOTIFY_LOG", "off")])).unwrap(),
            Off
        );
        assert_eq!(
            setting_from_vars(vars(&[("NOTIFY_LOG", " ")])).unwrap(),
            Off
        );
        assert_eq!(
            setting_from_vars(vars(&[("NOTIFY_LOG", "sqlite:///var/lib/n.db")])).unwrap(),
            Sqlite(PathBuf::from("/var/lib/n.db"))
        );
        for bad in ["sqlite://rel.db", "/var/lib/n.db", "redis://x", "Firestore"] {
            let err = setting_from_vars(vars(&[("NOTIFY_LOG", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn reads_firestore_settings() {
        let parsed = |pairs: &[(&str, &str)]| match setting_from_vars(vars(pairs)) {
            Ok(NotifyLogSetting::Firestore(f)) => Ok(f),
            Ok(other) => panic!("not Firestore: {other:?}"),
            Err(err) => Err(err.to_string()),
        };
        assert_eq!(
            parsed(&[
                ("NOTIFY_LOG", "firestore"),
                ("GOOGLE_CLOUD_PROJECT", "pet-theory")
            ]),
            Ok(FirestoreSetting {
                project: "pet-theory".into(),
                database: "(default)".into(),
                collection: DEFAULT_COLLECTION.into(),
                emulator_host: None,
            })
        );
        assert_eq!(
            parsed(&[
                (
                    "NOTIFY_LOG",
                    "firestore://projects/p-1/databases/notify-db/sent"
                ),
                ("FIRESTORE_EMULATOR_HOST", "127.0.0.1:8086"),
            ]),
            Ok(FirestoreSetting {
                project: "p-1".into(),
                database: "notify-db".into(),
                collection: "sent".into(),
                emulator_host: Some("127.0.0.1:8086".into()),
            })
        );
        assert_eq!(
            parsed(&[("NOTIFY_LOG", "firestore://projects/p-1/databases/(default)")])
                .unwrap()
                .collection,
            DEFAULT_COLLECTION
        );
        let err = parsed(&[("NOTIFY_LOG", "firestore")]).unwrap_err();
        assert!(err.contains("GOOGLE_CLOUD_PROJECT"), "{err}");
        for (pairs, named) in [
            (
                &[("NOTIFY_LOG", "firestore://projects/p/databases")][..],
                "firestore://projects/p/databases",
            ),
            (
                &[("NOTIFY_LOG", "firestore://projects/p/databases/d/c/extra")][..],
                "firestore://projects/p/databases/d/c/extra",
            ),
            (
                &[("NOTIFY_LOG", "firestore://projects/P Q/databases/(default)")][..],
                "P Q",
            ),
            (
                &[("NOTIFY_LOG", "firestore://projects/p/databases/Bad_DB")][..],
                "Bad_DB",
            ),
            (
                &[(
                    "NOTIFY_LOG",
                    "firestore://projects/p/databases/(default)/__x__",
                )][..],
                "__x__",
            ),
            (
                &[(
                    "NOTIFY_LOG",
                    "firestore://projects/p/databases/(default)/a%2Fb",
                )][..],
                "a%2Fb",
            ),
            (
                &[
                    ("NOTIFY_LOG", "firestore"),
                    ("GOOGLE_CLOUD_PROJECT", "p"),
                    ("FIRESTORE_EMULATOR_HOST", "http://localhost:8080"),
                ][..],
                "http://localhost:8080",
            ),
        ] {
            let err = parsed(pairs).unwrap_err();
            assert!(err.contains(named), "{named}: {err}");
        }
    }

    #[test]
    fn content_hashes_are_length_prefixed() {
        assert_ne!(content_hash(&["ab", "c"]), content_hash(&["a", "bc"]));
        assert_eq!(content_hash(&["x"]).len(), 64);
    }

    #[test]
    fn a_notification_hash_changes_with_the_report_and_the_recipient_only() {
        let report = |json: &str| LabReport::parse(json.as_bytes()).unwrap();
        let base = r#"{"id": "R-1", "pet": {"name": "Max"},
            "owner": {"name": "Alex", "email": "a@example.com", "phone": "+15550001111"},
            "tests": [{"name": "ALT", "value": 42, "flag": "high"}], "lab": "x"}"#;
        let hash = notification_hash(&report(base), "a@example.com");
        assert_eq!(hash.len(), 64);

        // The same report: other spacing and order, a field the receivers
        // do not read, the other channel's address, another language (the
        // owner has the results already; words are not content).
        let same = r#"{"tests": [{"flag": "high", "value": 42, "name": "ALT"}], "id": "R-1",
            "owner": {"phone": "+15559999999", "email": "z@example.com", "name": "Alex",
                "locale": "ko-KR"},
            "pet": {"name": "Max"}, "lab": "y"}"#;
        assert_eq!(notification_hash(&report(same), "a@example.com"), hash);
        let published = LabReport::from_published(base.as_bytes().to_vec()).unwrap();
        assert_eq!(notification_hash(&published, "a@example.com"), hash);

        assert_ne!(notification_hash(&report(base), "b@example.com"), hash);
        for (from, to) in [
            (r#""R-1""#, r#""R-2""#),
            ("42", "43"),
            ("42", r#""42""#),
            (r#""high""#, r#""normal""#),
            (r#", "flag": "high""#, r#", "flag": """#),
            (r#""Max""#, r#""Maxi""#),
            (r#""Alex""#, r#""Sam""#),
            (r#""lab": "x""#, r#""issuedAt": "2026-11-24T10:00:00Z""#),
        ] {
            let changed = base.replacen(from, to, 1);
            assert_ne!(
                notification_hash(&report(&changed), "a@example.com"),
                hash,
                "{changed}"
            );
        }
    }
}
