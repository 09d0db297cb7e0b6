//! The Firestore notification log against Google's official Firestore
//! emulator (`gcloud emulators firestore start`, package
//! `google-cloud-cli-firestore-emulator`).
//!
//! The emulator is a JVM that takes a few seconds to start, and nextest
//! runs every test in its own process, so one test starts it once and runs
//! every scenario against it in turn, each in its own project (the
//! emulator keeps projects apart). A failure names its scenario.

use std::collections::HashSet;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use labrelay_receiver::notify_log::{
    Claim, ClaimHeld, ClaimLimits, ClaimToken, DEFAULT_COLLECTION, Dedupe, DeliveryStatus,
    FirestoreLog, FirestoreSetting, NotificationKey, NotificationLog, NotifyLogSetting, Receipt,
    ReceiptApplied, SentRecord, Suppression, now_ms, setting_from_vars, subject_hash,
};

/// The official emulator, in its own process group, killed with it.
struct Emulator {
    child: Child,
    host: String,
    log: tempfile::NamedTempFile,
}

impl Emulator {
    /// Starts it on a free port and waits until `GET /` answers "Ok".
    async fn start() -> Emulator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("gcloud")
            .args(["emulators", "firestore", "start"])
            .arg(format!("--host-port={host}"))
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting `gcloud emulators firestore start` (packages google-cloud-cli and \
                     google-cloud-cli-firestore-emulator): {e}"
                )
            });
        let mut emulator = Emulator { child, host, log };
        let started = Instant::now();
        let http = reqwest::Client::new();
        let url = format!("http://{}/", emulator.host);
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
                && response.text().await.is_ok_and(|body| body.trim() == "Ok")
            {
                break;
            }
            if let Ok(Some(status)) = emulator.child.try_wait() {
                panic!(
                    "the Firestore emulator exited ({status}) before answering:\n{}",
                    emulator.output()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the Firestore emulator did not answer GET / within 90 s:\n{}",
                emulator.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "Firestore emulator ready at {} after {:?}",
            emulator.host,
            started.elapsed()
        );
        emulator
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // gcloud runs a shell script that runs java: end the group.
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

const MINUTE: Duration = Duration::from_secs(60);

fn setting(emulator: &Emulator, project: &str) -> FirestoreSetting {
    FirestoreSetting {
        project: project.into(),
        database: "(default)".into(),
        collection: DEFAULT_COLLECTION.into(),
        emulator_host: Some(emulator.host.clone()),
    }
}

fn open(setting: &FirestoreSetting) -> FirestoreLog {
    FirestoreLog::open(setting).unwrap()
}

fn key(report: &str, channel: &'static str, hash: &str) -> NotificationKey {
    NotificationKey {
        report_id: report.into(),
        channel,
        content_hash: hash.into(),
    }
}

/// The document as the emulator has it, read over its REST API.
async fn raw_document(setting: &FirestoreSetting, key: &NotificationKey) -> serde_json::Value {
    let url = format!(
        "http://{}/v1/{}/documents/{}/{}",
        setting.emulator_host.as_deref().unwrap(),
        setting.database_path(),
        setting.collection,
        FirestoreLog::document_id(key)
    );
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth("owner")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firestore_log_against_the_official_emulator() {
    let emulator = Emulator::start().await;
    let started = Instant::now();
    eprintln!("scenario: records, finds, keeps the first record, survives a new client");
    records_finds_and_keeps_the_first(&emulator).await;
    eprintln!("scenario: the document holds no personal data");
    the_document_holds_keys_and_ids_only(&emulator).await;
    eprintln!("scenario: concurrent claims from many clients, one wins");
    concurrent_claims_from_many_clients_one_wins(&emulator).await;
    eprintln!("scenario: release, lapse and takeover");
    claims_are_released_taken_over_and_ended_by_the_record(&emulator).await;
    eprintln!("scenario: two instances' Dedupe send once");
    two_instances_send_once(&emulator).await;
    eprintln!("scenario: a slow claim and a slow send on one instance, another polling: one send");
    a_slow_claim_and_a_slow_send_are_sent_once(&emulator).await;
    eprintln!("scenario: a claim renewed while its send runs, and only by its holder");
    a_claim_is_renewed_while_its_send_runs_and_only_by_its_holder(&emulator).await;
    eprintln!("scenario: suppressions by keyed hash, shared by two instances");
    suppressions_are_kept_by_hash_and_shared(&emulator).await;
    eprintln!("scenario: more suppressions than one page lists");
    suppressions_are_listed_past_one_page(&emulator).await;
    eprintln!("scenario: receipts never go backwards, from two instances");
    receipts_never_go_backwards(&emulator).await;
    eprintln!("scenario: racing receipts: one final status, counted once");
    racing_receipts_apply_one_final_status(&emulator).await;
    eprintln!("scenario: NOTIFY_LOG=firestore://... with a named database and collection");
    opened_from_the_setting(&emulator).await;
    eprintln!("all scenarios in {:?}", started.elapsed());
}

async fn records_finds_and_keeps_the_first(emulator: &Emulator) {
    let setting = setting(emulator, "records");
    let log = open(&setting);
    let k = key("LR-1", "email", "aa");
    assert_eq!(log.already_sent(&k).await.unwrap(), None, "absent key");
    let first = SentRecord {
        provider_id: Some("<m1@labrelay>".into()),
        sent_at_ms: 1_764_000_000_123,
    };
    log.record_sent(&k, first.clone()).await.unwrap();
    assert_eq!(log.already_sent(&k).await.unwrap(), Some(first.clone()));
    // Another channel, another content: other notifications.
    assert_eq!(
        log.already_sent(&key("LR-1", "sms", "aa")).await.unwrap(),
        None
    );
    assert_eq!(
        log.already_sent(&key("LR-1", "email", "bb")).await.unwrap(),
        None
    );
    // Recording again keeps the first record.
    log.record_sent(&k, SentRecord::now(Some("<m2@labrelay>".into())))
        .await
        .unwrap();
    assert_eq!(log.already_sent(&k).await.unwrap(), Some(first.clone()));
    // A record without a provider id, and a claim on a recorded key.
    let bare = key("LR-2", "sms", "cc");
    let no_id = SentRecord {
        provider_id: None,
        sent_at_ms: 5,
    };
    log.record_sent(&bare, no_id.clone()).await.unwrap();
    drop(log);

    let fresh = open(&setting);
    assert_eq!(fresh.already_sent(&k).await.unwrap(), Some(first));
    assert_eq!(
        fresh.claim(&bare, MINUTE).await.unwrap(),
        Claim::AlreadySent(no_id)
    );
    // Other projects do not see it.
    let elsewhere = open(&self::setting(emulator, "records-elsewhere"));
    assert_eq!(elsewhere.already_sent(&k).await.unwrap(), None);
}

async fn the_document_holds_keys_and_ids_only(emulator: &Emulator) {
    let setting = setting(emulator, "document");
    let log = open(&setting);
    let k = key("LR-3", "email", &"d".repeat(64));
    log.record_sent(
        &k,
        SentRecord {
            provider_id: Some("SM123".into()),
            sent_at_ms: 42,
        },
    )
    .await
    .unwrap();
    let document = raw_document(&setting, &k).await;
    let id = FirestoreLog::document_id(&k);
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()) && !id.contains("LR-3"));
    let fields = document["fields"].as_object().unwrap();
    let names: HashSet<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        HashSet::from([
            "reportId",
            "channel",
            "contentHash",
            "state",
            "providerId",
            "sentAtMs"
        ])
    );
    assert_eq!(fields["reportId"]["stringValue"], "LR-3");
    assert_eq!(fields["state"]["stringValue"], "sent");
    assert_eq!(fields["sentAtMs"]["integerValue"], "42");
}

async fn concurrent_claims_from_many_clients_one_wins(emulator: &Emulator) {
    let setting = setting(emulator, "concurrent");
    let k = key("LR-4", "sms", "ee");
    let lease = MINUTE;
    let mut claims = tokio::task::JoinSet::new();
    for _ in 0..8 {
        // One client each, as separate Cloud Run instances would have.
        let log = open(&setting);
        let k = k.clone();
        claims.spawn(async move { log.claim(&k, lease).await.unwrap() });
    }
    let answers = claims.join_all().await;
    let winners = answers
        .iter()
        .filter(|c| matches!(c, Claim::Claimed(_)))
        .count();
    assert_eq!(winners, 1, "{answers:?}");
    // The losers all see the winner's lease, on Firestore's clock.
    let ends: HashSet<i64> = answers
        .iter()
        .filter_map(|c| match c {
            Claim::HeldByOther { lease_until_ms } => Some(*lease_until_ms),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 1, "{answers:?}");
    let end = ends.into_iter().next().unwrap();
    assert!(
        (now_ms() + 50_000..=now_ms() + 60_000).contains(&end),
        "{end}"
    );
    // A lapsed claim taken over by many at once, all with the same lease:
    // one wins again.
    let lapsed = key("LR-4", "sms", "ef");
    let log = open(&setting);
    assert!(matches!(
        log.claim(&lapsed, Duration::ZERO).await.unwrap(),
        Claim::Claimed(_)
    ));
    let mut takeovers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let log = open(&setting);
        let lapsed = lapsed.clone();
        takeovers.spawn(async move { log.claim(&lapsed, lease).await.unwrap() });
    }
    let answers = takeovers.join_all().await;
    assert_eq!(
        answers
            .iter()
            .filter(|c| matches!(c, Claim::Claimed(_)))
            .count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        log.already_sent(&k).await.unwrap(),
        None,
        "a claim is no record"
    );
    let record = SentRecord {
        provider_id: Some("SM4".into()),
        sent_at_ms: 4,
    };
    log.record_sent(&k, record.clone()).await.unwrap();
    assert_eq!(
        open(&setting).claim(&k, lease).await.unwrap(),
        Claim::AlreadySent(record)
    );
}

async fn claims_are_released_taken_over_and_ended_by_the_record(emulator: &Emulator) {
    let setting = setting(emulator, "leases");
    let (a, b, c) = (open(&setting), open(&setting), open(&setting));
    let k = key("LR-5", "email", "ff");
    let far = MINUTE;
    // a claims with a lease that has already lapsed (a crashed sender).
    let Claim::Claimed(stale) = a.claim(&k, Duration::ZERO).await.unwrap() else {
        panic!("a fresh key is claimed");
    };
    let Claim::Claimed(b_token) = b.claim(&k, far).await.unwrap() else {
        panic!("a lapsed claim is taken over");
    };
    // a's late release must not free b's claim.
    a.release(&k, stale).await.unwrap();
    assert!(matches!(
        c.claim(&k, far).await.unwrap(),
        Claim::HeldByOther { .. }
    ));
    // Nor does a made-up token.
    c.release(&k, ClaimToken::new("2020-01-01T00:00:00Z".into()))
        .await
        .unwrap();
    assert!(matches!(
        c.claim(&k, far).await.unwrap(),
        Claim::HeldByOther { .. }
    ));
    // b's send failed: it releases, and c may send at once.
    b.release(&k, b_token).await.unwrap();
    let Claim::Claimed(_) = c.claim(&k, far).await.unwrap() else {
        panic!("a released key is claimed");
    };
    // c sent: its record replaces the claim.
    let record = SentRecord {
        provider_id: Some("<m5@labrelay>".into()),
        sent_at_ms: 5,
    };
    c.record_sent(&k, record.clone()).await.unwrap();
    assert_eq!(b.already_sent(&k).await.unwrap(), Some(record.clone()));
    assert_eq!(
        a.claim(&k, far).await.unwrap(),
        Claim::AlreadySent(record.clone())
    );
    // Releasing after the record leaves the record.
    let fields = &raw_document(&setting, &k).await["fields"];
    assert_eq!(fields["state"]["stringValue"], "sent");
    assert!(fields.get("leaseMs").is_none());
}

/// One delivery as the push services run it: lock, claim, send, record.
/// `Err` when another instance holds the claim (the push answers 503).
async fn deliver(
    dedupe: &Dedupe,
    key: &NotificationKey,
    sends: &AtomicUsize,
    fail_send: bool,
) -> Result<bool, ClaimHeld> {
    let _guard = dedupe.lock(key).await;
    match dedupe.already_sent(key).await {
        Ok(Some(_)) => return Ok(false),
        Ok(None) => {}
        Err(error) => return Err(error.downcast::<ClaimHeld>().unwrap()),
    }
    sends.fetch_add(1, Ordering::SeqCst);
    if fail_send {
        return Ok(false);
    }
    dedupe
        .record_sent(key, SentRecord::now(Some("sent".into())))
        .await
        .unwrap();
    Ok(true)
}

async fn two_instances_send_once(emulator: &Emulator) {
    let setting = setting(emulator, "instances");
    let instances = [
        Arc::new(Dedupe::new(Arc::new(open(&setting)))),
        Arc::new(Dedupe::new(Arc::new(open(&setting)))),
    ];
    let sends = Arc::new(AtomicUsize::new(0));

    // A failed send releases its claim: the next delivery, on the other
    // instance, sends at once instead of waiting for the lease.
    let k = key("LR-6", "email", "11");
    deliver(&instances[0], &k, &sends, true).await.unwrap();
    // The release runs on a task that holds the key's lock until it is done.
    drop(instances[0].lock(&k).await);
    assert_eq!(deliver(&instances[1], &k, &sends, false).await, Ok(true));
    assert_eq!(sends.swap(0, Ordering::SeqCst), 2);

    // Eight concurrent deliveries of one message over two instances: one
    // sends, the others find the record or are told to retry.
    let k = key("LR-7", "sms", "22");
    let mut deliveries = tokio::task::JoinSet::new();
    for i in 0..8 {
        let dedupe = Arc::clone(&instances[i % 2]);
        let (k, sends) = (k.clone(), Arc::clone(&sends));
        deliveries.spawn(async move { deliver(&dedupe, &k, &sends, false).await });
    }
    let outcomes = deliveries.join_all().await;
    assert_eq!(sends.load(Ordering::SeqCst), 1, "{outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| **o == Ok(true)).count(),
        1,
        "{outcomes:?}"
    );
    // The retries of those told to wait find the record.
    for (i, _) in outcomes.iter().enumerate().filter(|(_, o)| o.is_err()) {
        assert_eq!(
            deliver(&instances[i % 2], &k, &sends, false).await,
            Ok(false)
        );
    }
    assert_eq!(sends.load(Ordering::SeqCst), 1);
}

/// A TCP proxy in front of the emulator that holds the next answer back
/// by `delay_ms`, once: Firestore, or the network to it, slow as one
/// instance sees it.
struct SlowLink {
    host: String,
    delay_ms: Arc<AtomicU64>,
    /// Notified when an answer starts being held back.
    holding: Arc<tokio::sync::Notify>,
}

impl SlowLink {
    async fn start(upstream: String) -> SlowLink {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let holding = Arc::new(tokio::sync::Notify::new());
        let (delay, held) = (Arc::clone(&delay_ms), Arc::clone(&holding));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let (delay, held) = (Arc::clone(&delay), Arc::clone(&held));
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                        let ms = delay.swap(0, Ordering::SeqCst);
                        if ms > 0 {
                            held.notify_one();
                        }
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        SlowLink {
            host,
            delay_ms,
            holding,
        }
    }
}

/// Instance a's claim is committed at once but answered 1.5 s late, then
/// its send takes 1.4 s (inside its 1.5 s limit). Instance b tries the
/// same notification every 50 ms meanwhile. The lease, counted from the
/// claim's commit on Firestore's clock, covers a's claim, send and record,
/// so b never takes it over: one send. (A lease covering the send alone,
/// as before, lapsed while a was still sending, and b sent again.)
async fn a_slow_claim_and_a_slow_send_are_sent_once(emulator: &Emulator) {
    let setting = setting(emulator, "slow-claim");
    let link = SlowLink::start(emulator.host.clone()).await;
    let through_link = FirestoreSetting {
        emulator_host: Some(link.host.clone()),
        ..setting.clone()
    };
    let limits = ClaimLimits {
        claim: Duration::from_secs(2),
        attempt: Duration::from_millis(1500),
        record: Duration::from_secs(2),
        margin: Duration::from_millis(500),
    };
    let a = Arc::new(Dedupe::new(Arc::new(open(&through_link))).with_limits(limits));
    let b = Arc::new(Dedupe::new(Arc::new(open(&setting))).with_limits(limits));
    let k = key("LR-10", "email", "55");
    let sends = Arc::new(AtomicUsize::new(0));

    link.delay_ms.store(1500, Ordering::SeqCst);
    let sending = {
        let (a, k, sends) = (Arc::clone(&a), k.clone(), Arc::clone(&sends));
        tokio::spawn(async move {
            let _guard = a.lock(&k).await;
            assert_eq!(a.already_sent(&k).await.unwrap(), None);
            tokio::time::sleep(Duration::from_millis(1400)).await;
            sends.fetch_add(1, Ordering::SeqCst);
            a.record_sent(&k, SentRecord::now(Some("a".into())))
                .await
                .unwrap();
        })
    };
    // a's claim is committed; its answer is on its way.
    link.holding.notified().await;
    let mut held = 0;
    let b_sent = loop {
        match deliver(&b, &k, &sends, false).await {
            Err(ClaimHeld { .. }) => held += 1,
            Ok(sent) => break sent,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    sending.await.unwrap();
    assert!(!b_sent, "b sent it again after {held} tries held");
    assert!(
        held >= 20,
        "b tried only {held} times while a held the claim"
    );
    assert_eq!(sends.load(Ordering::SeqCst), 1);
}

/// A renewal rewrites the claim's document only while it is still that
/// claim (its token is the version's update time, and a renewal gives a
/// new one), and restarts its lease on Firestore's clock. Through
/// `Dedupe`, a send that takes more than four leases keeps its claim: the
/// other instance, trying every 100 ms, is told it is held until the
/// record, then finds it. (Unrenewed, the claim lapsed after 2.4 s and
/// the other instance sent again.)
async fn a_claim_is_renewed_while_its_send_runs_and_only_by_its_holder(emulator: &Emulator) {
    let setting = setting(emulator, "renewals");
    let (a, b) = (open(&setting), open(&setting));
    let k = key("LR-11", "email", "66");
    let short = Duration::from_secs(2);
    let Claim::Claimed(first) = a.claim(&k, short).await.unwrap() else {
        panic!("a fresh key is claimed");
    };
    let Some(renewed) = a.renew(&k, first.clone(), MINUTE).await.unwrap() else {
        panic!("the holder renews its claim");
    };
    assert_ne!(renewed, first, "a renewal is a new version");
    // Also when nothing else changes (Firestore keeps the update time of a
    // write that changes nothing).
    let Some(again) = a.renew(&k, renewed.clone(), MINUTE).await.unwrap() else {
        panic!("the holder renews its claim again");
    };
    assert_ne!(again, renewed, "each renewal is a new version");
    assert_eq!(
        raw_document(&setting, &k).await["fields"]["leaseMs"]["integerValue"],
        "60000"
    );
    // Past the first lease: held, by the renewal.
    tokio::time::sleep(short + Duration::from_millis(500)).await;
    assert!(matches!(
        b.claim(&k, MINUTE).await.unwrap(),
        Claim::HeldByOther { .. }
    ));
    // The version before the renewal, or a made-up one, renews nothing.
    assert_eq!(a.renew(&k, first, MINUTE).await.unwrap(), None);
    assert_eq!(
        b.renew(&k, ClaimToken::new("2020-01-01T00:00:00Z".into()), MINUTE)
            .await
            .unwrap(),
        None
    );
    // A lapsed claim taken over is not the old holder's to renew.
    let k = key("LR-12", "email", "77");
    let Claim::Claimed(lapsed) = a.claim(&k, Duration::ZERO).await.unwrap() else {
        panic!("a fresh key is claimed");
    };
    let Claim::Claimed(_) = b.claim(&k, MINUTE).await.unwrap() else {
        panic!("a lapsed claim is taken over");
    };
    assert_eq!(a.renew(&k, lapsed, MINUTE).await.unwrap(), None);
    assert!(matches!(
        open(&setting).claim(&k, MINUTE).await.unwrap(),
        Claim::HeldByOther { .. }
    ));

    // Through Dedupe: a 2.4 s lease renewed every 800 ms, a 5 s send.
    let ms = Duration::from_millis;
    let limits = ClaimLimits {
        claim: ms(600),
        attempt: ms(600),
        record: ms(600),
        margin: ms(600),
    };
    let a = Arc::new(Dedupe::new(Arc::new(open(&setting))).with_limits(limits));
    let b = Dedupe::new(Arc::new(open(&setting))).with_limits(limits);
    let k = key("LR-13", "email", "88");
    let sends = Arc::new(AtomicUsize::new(0));
    let (claimed, claimed_rx) = tokio::sync::oneshot::channel();
    let sending = {
        let (a, k, sends) = (Arc::clone(&a), k.clone(), Arc::clone(&sends));
        tokio::spawn(async move {
            let _guard = a.lock(&k).await;
            assert_eq!(a.already_sent(&k).await.unwrap(), None);
            claimed.send(()).unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            sends.fetch_add(1, Ordering::SeqCst);
            a.record_sent(&k, SentRecord::now(Some("a".into())))
                .await
                .unwrap();
        })
    };
    claimed_rx.await.unwrap();
    let mut held = 0;
    let b_sent = loop {
        match deliver(&b, &k, &sends, false).await {
            Err(ClaimHeld { .. }) => held += 1,
            Ok(sent) => break sent,
        }
        tokio::time::sleep(ms(100)).await;
    };
    sending.await.unwrap();
    assert!(!b_sent, "b sent it again after {held} tries held");
    assert!(
        held >= 20,
        "b tried only {held} times while a held the claim"
    );
    assert_eq!(sends.load(Ordering::SeqCst), 1);
}

async fn opened_from_the_setting(emulator: &Emulator) {
    let host = emulator.host.clone();
    let vars = |name: &str| match name {
        "NOTIFY_LOG" => Some("firestore://projects/from-setting/databases/notify-db/sent".into()),
        "FIRESTORE_EMULATOR_HOST" => Some(host.clone()),
        _ => None,
    };
    let setting = setting_from_vars(vars).unwrap();
    let NotifyLogSetting::Firestore(firestore) = &setting else {
        panic!("{setting:?}");
    };
    let dedupe = Dedupe::open_setting(&setting, "email").unwrap().unwrap();
    assert_eq!(
        dedupe.describe(),
        format!(
            "firestore projects/from-setting/databases/notify-db/documents/sent on the emulator at {host}"
        )
    );
    let k = key("LR-8", "email", "33");
    let sends = AtomicUsize::new(0);
    assert_eq!(deliver(&dedupe, &k, &sends, false).await, Ok(true));
    assert_eq!(deliver(&dedupe, &k, &sends, false).await, Ok(false));
    // It went to that database and collection, nowhere else.
    assert_eq!(
        raw_document(firestore, &k).await["fields"]["state"]["stringValue"],
        "sent"
    );
    let default_db = FirestoreSetting {
        database: "(default)".into(),
        ..firestore.clone()
    };
    assert_eq!(open(&default_db).already_sent(&k).await.unwrap(), None);
}

/// Every document of the log's collection `suffix` (`-suppressions`,
/// `-receipts`) as the emulator has it, read over its REST API.
async fn raw_collection(setting: &FirestoreSetting, suffix: &str) -> Vec<serde_json::Value> {
    let url = format!(
        "http://{}/v1/{}/documents/{}{suffix}?pageSize=1000",
        setting.emulator_host.as_deref().unwrap(),
        setting.database_path(),
        setting.collection,
    );
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth("owner")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page: serde_json::Value = response.json().await.unwrap();
    page["documents"].as_array().cloned().unwrap_or_default()
}

fn suppression(channel: &str, subject: &str, reason: &str, since_ms: i64) -> Suppression {
    Suppression {
        channel: channel.into(),
        subject: subject.into(),
        reason: reason.into(),
        since_ms,
    }
}

async fn suppressions_are_kept_by_hash_and_shared(emulator: &Emulator) {
    let setting = setting(emulator, "suppressions");
    // Two instances of the services, one store.
    let (a, b) = (open(&setting), open(&setting));
    let key = b"a suppression key";
    let phone = "+15550001111";
    let subject = subject_hash(key, "sms", phone);
    assert_eq!(a.suppression("sms", &subject).await.unwrap(), None);
    assert_eq!(a.suppressions().await.unwrap(), Vec::new());
    assert!(!a.lift("sms", &subject).await.unwrap(), "nothing to lift");

    a.suppress(suppression("sms", &subject, "twilio 21610", 1_000))
        .await
        .unwrap();
    assert_eq!(
        b.suppression("sms", &subject).await.unwrap(),
        Some(suppression("sms", &subject, "twilio 21610", 1_000)),
        "the other instance finds it"
    );
    // The hash is of the channel and the recipient, under the key.
    for (channel, other) in [
        ("email", subject.clone()),
        ("sms", subject_hash(key, "sms", "+15550001112")),
        ("sms", subject_hash(b"another key", "sms", phone)),
    ] {
        assert_eq!(b.suppression(channel, &other).await.unwrap(), None);
    }
    // Suppressed again (a STOP after the 21610): replaced, still one.
    b.suppress(suppression("sms", &subject, "inbound STOP", 2_000))
        .await
        .unwrap();
    let email_subject = subject_hash(key, "email", "alex@example.com");
    a.suppress(suppression(
        "email",
        &email_subject,
        "smtp 550 5.1.1",
        1_500,
    ))
    .await
    .unwrap();
    assert_eq!(
        a.suppressions().await.unwrap(),
        vec![
            suppression("email", &email_subject, "smtp 550 5.1.1", 1_500),
            suppression("sms", &subject, "inbound STOP", 2_000),
        ],
        "oldest first"
    );
    // The store holds hashes, never the number or the address.
    let stored = serde_json::to_string(&raw_collection(&setting, "-suppressions").await).unwrap();
    assert!(stored.contains(&subject), "{stored}");
    for personal in ["15550001111", "5550001111", "alex", "example.com"] {
        assert!(!stored.contains(personal), "{personal} in {stored}");
    }

    assert!(b.lift("sms", &subject).await.unwrap());
    assert!(!a.lift("sms", &subject).await.unwrap(), "lifted once");
    assert_eq!(a.suppression("sms", &subject).await.unwrap(), None);
    assert_eq!(
        b.suppressions().await.unwrap(),
        vec![suppression(
            "email",
            &email_subject,
            "smtp 550 5.1.1",
            1_500
        )]
    );
}

async fn suppressions_are_listed_past_one_page(emulator: &Emulator) {
    let setting = setting(emulator, "many-suppressions");
    let log = Arc::new(open(&setting));
    // The log asks for pages of 300.
    const COUNT: i64 = 320;
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..COUNT {
        let log = Arc::clone(&log);
        writes.spawn(async move {
            let subject = subject_hash(b"k", "sms", &format!("+1555{n:07}"));
            log.suppress(suppression("sms", &subject, "operator", n))
                .await
                .unwrap();
        });
    }
    writes.join_all().await;
    let listed = log.suppressions().await.unwrap();
    assert_eq!(listed.len(), COUNT as usize);
    assert!(listed.windows(2).all(|w| w[0].since_ms < w[1].since_ms));
}

fn receipt(sid: &str, status: DeliveryStatus, at_ms: i64) -> Receipt {
    Receipt {
        provider_id: sid.into(),
        channel: "sms".into(),
        report_id: Some("LR-1".into()),
        content_hash: Some("c0ffee".into()),
        status,
        error_code: None,
        at_ms,
    }
}

async fn receipts_never_go_backwards(emulator: &Emulator) {
    use DeliveryStatus::*;
    let setting = setting(emulator, "receipts");
    let (a, b) = (open(&setting), open(&setting));
    let sid = "SM0123456789abcdef0123456789abcdef";
    assert_eq!(a.receipt(sid).await.unwrap(), None);
    assert_eq!(
        a.record_receipt(receipt(sid, Sent, 1)).await.unwrap(),
        ReceiptApplied::Applied
    );
    assert_eq!(
        b.record_receipt(receipt(sid, Delivered, 2)).await.unwrap(),
        ReceiptApplied::Applied
    );
    // Late, twice, or a second final opinion: the first final stands.
    for (log, late) in [(&a, Sent), (&b, Queued), (&a, Delivered), (&b, Failed)] {
        assert_eq!(
            log.record_receipt(receipt(sid, late, 3)).await.unwrap(),
            ReceiptApplied::Stale { current: Delivered },
            "{late:?}"
        );
    }
    assert_eq!(
        b.receipt(sid).await.unwrap(),
        Some(receipt(sid, Delivered, 2))
    );

    // A failure keeps its error code; an id that is not a plain SID is
    // stored under a hash of it and found again.
    let odd = "not/a sid";
    let mut failed = receipt(odd, Undelivered, 4);
    failed.error_code = Some(30003);
    failed.report_id = None;
    failed.content_hash = None;
    assert_eq!(
        a.record_receipt(failed.clone()).await.unwrap(),
        ReceiptApplied::Applied
    );
    assert_eq!(b.receipt(odd).await.unwrap(), Some(failed));
    let ids: Vec<String> = raw_collection(&setting, "-receipts")
        .await
        .iter()
        .map(|d| {
            d["name"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&sid.to_string()), "{ids:?}");
    assert!(!ids.iter().any(|id| id.contains("sid")), "{ids:?}");
}

async fn racing_receipts_apply_one_final_status(emulator: &Emulator) {
    use DeliveryStatus::*;
    let setting = setting(emulator, "racing-receipts");
    let logs = [Arc::new(open(&setting)), Arc::new(open(&setting))];
    let sid = "SMracing";
    let mut racers = tokio::task::JoinSet::new();
    for (n, status) in [Queued, Sending, Sent, Delivered, Undelivered, Failed]
        .into_iter()
        .cycle()
        .take(24)
        .enumerate()
    {
        let log = Arc::clone(&logs[n % 2]);
        racers.spawn(async move {
            let applied = log.record_receipt(receipt(sid, status, n as i64)).await;
            (status, applied.unwrap())
        });
    }
    let results = racers.join_all().await;
    let finals: Vec<_> = results
        .iter()
        .filter(|(status, applied)| status.is_final() && *applied == ReceiptApplied::Applied)
        .collect();
    assert_eq!(finals.len(), 1, "{results:?}");
    let stored = logs[0].receipt(sid).await.unwrap().unwrap();
    assert_eq!(stored.status, finals[0].0, "{results:?}");
    // Every applied write ranked above the one before it, so no more
    // than one per rank was applied.
    let applied = results
        .iter()
        .filter(|(_, applied)| *applied == ReceiptApplied::Applied)
        .count();
    assert!((1..=4).contains(&applied), "{results:?}");
}

#[tokio::test]
async fn an_unreachable_firestore_is_an_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log = FirestoreLog::open(&FirestoreSetting {
        project: "p".into(),
        database: "(default)".into(),
        collection: DEFAULT_COLLECTION.into(),
        emulator_host: Some(closed.to_string()),
    })
    .unwrap();
    let k = key("LR-9", "email", "44");
    assert!(log.already_sent(&k).await.is_err());
    assert!(log.claim(&k, MINUTE).await.is_err());
    assert!(log.record_sent(&k, SentRecord::now(None)).await.is_err());
    let dedupe = Dedupe::new(Arc::new(log));
    let _guard = dedupe.lock(&k).await;
    let error = dedupe.already_sent(&k).await.unwrap_err();
    assert!(error.downcast_ref::<ClaimHeld>().is_none(), "{error:#}");
}

#[test]
fn bad_firestore_settings_are_rejected_naming_the_value() {
    for (value, project, emulator, named) in [
        ("firestore", None, None, "GOOGLE_CLOUD_PROJECT"),
        (
            "firestore://projects/p",
            None,
            None,
            "firestore://projects/p",
        ),
        ("firestore://projects/p/databases/x", None, None, "\"x\""),
        (
            "firestore://projects/p/databases/(default)/a/b",
            None,
            None,
            "firestore://projects/p/databases/(default)/a/b",
        ),
        ("firestore", Some("My Project"), None, "My Project"),
        ("firestore", Some("p"), Some("localhost"), "localhost"),
        ("firestores://x", None, None, "firestores://x"),
    ] {
        let error = setting_from_vars(|name| match name {
            "NOTIFY_LOG" => Some(value.to_string()),
            "GOOGLE_CLOUD_PROJECT" => project.map(str::to_string),
            "FIRESTORE_EMULATOR_HOST" => emulator.map(str::to_string),
            _ => None,
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains(named), "{value}: {error}");
    }
}
