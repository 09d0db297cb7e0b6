//! The engine's parts together: a backlog read back from the store through
//! the payload budget, as subscriptions lease it; dead-lettering across a
//! store stopped at a failpoint.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use prost::Message as _;

use super::hooks::{Observer, PushDelivery, PushResult, PushTrace};
use super::payloads::{BODY_OVERHEAD, Message, Payloads, READ_AHEAD, Stored};
use super::store::{Failpoint, NewMessage, Store};
use super::subscription::{Delivery, Subscription};
use super::{Engine, EngineSettings};
use crate::dead_letter;
use crate::names::SubscriptionName;
use crate::pb;

fn message(seq: u64) -> Message {
    Message {
        seq,
        pb: pb::PubsubMessage {
            data: vec![b'x'; 1000],
            message_id: seq.to_string(),
            ..Default::default()
        },
        published_at: SystemTime::now(),
    }
}

/// Leases and acknowledges everything `sub` holds, checking it comes
/// in publish order with its data; waits for reads on `changed`.
async fn drain_in_order(sub: &Subscription, n: u64) {
    let mut next = 1;
    while next <= n {
        let changed = sub.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let got = sub.lease(100, None, Duration::from_secs(60), Instant::now());
        if got.is_empty() {
            tokio::time::timeout(Duration::from_secs(10), changed)
                .await
                .unwrap_or_else(|_| panic!("no read-ahead arrived at {next}"));
            continue;
        }
        for delivery in got {
            assert_eq!(delivery.message.seq, next);
            assert_eq!(delivery.message.pb.data.len(), 1000);
            assert!(sub.ack_lease(delivery.lease));
            next += 1;
        }
    }
    assert_eq!(sub.backlog(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_beyond_the_budget_is_read_back_in_order_without_pinning_shared_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let (store, thread, _) = Store::open(&path).unwrap();
    let n = 3000u64;
    let rows = (1..=n)
        .map(|seq| NewMessage {
            seq,
            bytes: message(seq).pb.encode_to_vec(),
            subscriptions: vec![1, 2],
        })
        .collect();
    store.publish(rows).await.unwrap();
    let budget = 100 << 10;
    let payloads = Payloads::open(&path, budget).unwrap();
    let sub = |id: i64| {
        let name = SubscriptionName::parse(&format!("projects/p/subscriptions/sub{id}"));
        Subscription::with_payloads(
            name.unwrap(),
            id,
            pb::Subscription::default(),
            payloads.clone(),
        )
    };
    let (first, second) = (sub(1), sub(2));
    let records: Vec<Arc<Stored>> = (1..=n)
        .map(|seq| payloads.admit(message(seq), false).0)
        .collect();
    let warm = records.iter().filter(|r| r.is_warm()).count();
    assert!(warm > 0 && warm < 100, "{warm} warm within the budget");
    first.enqueue(records.iter().map(|r| (r.clone(), 0)));
    second.enqueue(records.iter().map(|r| (r.clone(), 0)));
    drop(records);

    drain_in_order(&first, n).await;
    // The second subscription still holds every message; what the first
    // read back went cold again behind it.
    let window = 2 * READ_AHEAD * (1000 + BODY_OVERHEAD);
    assert!(
        payloads.budget().resident() <= budget + window,
        "{} bytes resident",
        payloads.budget().resident()
    );
    drain_in_order(&second, n).await;
    assert_eq!(payloads.budget().resident(), 0);
    assert!(!payloads.budget().any_cold());

    payloads.close();
    store.close().await;
    thread.join();
}

/// Records what the engine reports of dead letters: `(source
/// subscription, topic, dead letter id)`.
#[derive(Default)]
struct DeadLetters(Mutex<Vec<(String, String, Option<String>)>>);

impl Observer for DeadLetters {
    fn keeps_data(&self) -> bool {
        false
    }

    fn published(
        &self,
        _: &str,
        _: &[Arc<Message>],
        _: Vec<Arc<Subscription>>,
        _: Vec<Vec<bool>>,
        _: Duration,
    ) {
    }

    fn pushed(&self, _: &Subscription, _: &Delivery, _: PushResult<'_>, _: PushTrace) {}

    fn acked(&self, _: &Subscription, _: &[u64]) {}

    fn dead_lettered(
        &self,
        sub: &Subscription,
        _: &Message,
        _: u32,
        _: &str,
        topic: &str,
        dead_letter_id: Option<&str>,
    ) {
        let seen = (sub.name.to_string(), topic.to_string());
        let id = dead_letter_id.map(str::to_string);
        self.0.lock().unwrap().push((seen.0, seen.1, id));
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// No push delivery: these subscriptions are pulled.
struct PullOnly;

impl PushDelivery for PullOnly {
    fn refusal(&self, _: &str) -> Option<String> {
        None
    }

    fn run(self: Arc<Self>, _: Engine, _: Arc<Subscription>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

const TOPIC: &str = "projects/p/topics/reports";
const DEAD_TOPIC: &str = "projects/p/topics/reports-dead";
const SOURCE: &str = "projects/p/subscriptions/email";
const DEAD: &str = "projects/p/subscriptions/reports-dead-sub";
const ATTEMPTS: i32 = 5;

fn open_engine(path: &std::path::Path) -> (Engine, Arc<DeadLetters>) {
    let observer = Arc::new(DeadLetters::default());
    let settings = EngineSettings {
        store: path.to_path_buf(),
        payload_budget: 1 << 20,
    };
    let (engine, _) = Engine::open(settings, observer.clone(), Arc::new(PullOnly)).unwrap();
    (engine, observer)
}

/// The reports topic, its dead-letter topic, a pull subscription with
/// a dead-letter policy of [`ATTEMPTS`] and, `with_dead_sub`, a
/// subscription on the dead-letter topic; one message published.
async fn topology(engine: &Engine, with_dead_sub: bool) {
    for name in [TOPIC, DEAD_TOPIC] {
        let topic = pb::Topic {
            name: name.into(),
            ..Default::default()
        };
        engine.create_topic(topic).await.unwrap();
    }
    if with_dead_sub {
        let dead = pb::Subscription {
            name: DEAD.into(),
            topic: DEAD_TOPIC.into(),
            ..Default::default()
        };
        engine.create_subscription(dead).await.unwrap();
    }
    let source = pb::Subscription {
        name: SOURCE.into(),
        topic: TOPIC.into(),
        dead_letter_policy: Some(pb::DeadLetterPolicy {
            dead_letter_topic: DEAD_TOPIC.into(),
            max_delivery_attempts: ATTEMPTS,
        }),
        ..Default::default()
    };
    engine.create_subscription(source).await.unwrap();
    let message = pb::PubsubMessage {
        data: b"report".to_vec(),
        ..Default::default()
    };
    engine.publish(TOPIC, vec![message]).await.unwrap();
}

/// Pulls the source's message and nacks it until it has used up its
/// attempts (the last nack dead-letters it); returns the message id.
async fn fail_every_attempt(engine: &Engine) -> String {
    let mut id = String::new();
    for attempt in 1..=ATTEMPTS {
        let got = engine.pull(SOURCE, 10, true).await.unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].delivery_attempt, attempt);
        id = got[0].message.as_ref().unwrap().message_id.clone();
        engine
            .modify_ack_deadline(SOURCE, &[got[0].ack_id.clone()], 0)
            .await
            .unwrap();
    }
    id
}

/// The messages `name` holds, leased (and given back as the engine closes).
async fn held(engine: &Engine, name: &str) -> Vec<pb::ReceivedMessage> {
    engine.pull(name, 100, true).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_stopped_after_the_dead_letter_commit_keeps_one_dead_letter_and_no_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let (engine, _) = open_engine(&path);
    topology(&engine, true).await;
    let dead_id = engine.subscription(DEAD).unwrap().id;
    // The store stops right after committing the dead letter's copy: where
    // the source's ack used to be a second commit, still to come.
    engine
        .inner
        .store
        .fail_at(Failpoint::AfterCommitStoring(dead_id));
    let source_id = fail_every_attempt(&engine).await;
    engine.close().await;

    let (engine, _) = open_engine(&path);
    let dead = held(&engine, DEAD).await;
    assert_eq!(dead.len(), 1, "exactly one dead letter");
    let attributes = &dead[0].message.as_ref().unwrap().attributes;
    assert_eq!(
        attributes
            .get(dead_letter::DELIVERY_COUNT)
            .map(String::as_str),
        Some("5"),
        "the dead letter carries the final attempt count"
    );
    assert!(
        held(&engine, SOURCE).await.is_empty(),
        "message {source_id} is delivered again on its source"
    );
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_stopped_inside_the_dead_letter_commit_keeps_the_source_and_no_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let (engine, _) = open_engine(&path);
    topology(&engine, true).await;
    let dead_id = engine.subscription(DEAD).unwrap().id;
    engine
        .inner
        .store
        .fail_at(Failpoint::BeforeCommitStoring(dead_id));
    fail_every_attempt(&engine).await;
    engine.close().await;

    let (engine, _) = open_engine(&path);
    assert!(
        held(&engine, DEAD).await.is_empty(),
        "a half-made dead letter"
    );
    let mut source = held(&engine, SOURCE).await;
    assert_eq!(source.len(), 1, "the source is kept to be tried again");
    // Failing it again dead-letters it, once.
    for _ in 0..ATTEMPTS {
        let ack_ids: Vec<String> = source.iter().map(|m| m.ack_id.clone()).collect();
        engine
            .modify_ack_deadline(SOURCE, &ack_ids, 0)
            .await
            .unwrap();
        source = held(&engine, SOURCE).await;
        if source.is_empty() {
            break;
        }
    }
    assert_eq!(
        held(&engine, DEAD).await.len(),
        1,
        "exactly one dead letter"
    );
    assert!(held(&engine, SOURCE).await.is_empty());
    engine.close().await;
}

#[tokio::test]
async fn a_dead_letter_topic_without_a_subscription_drops_the_dead_letter_and_says_so() {
    let (log, _logging) = labrelay_testkit::logs::capture(tracing::Level::INFO);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite3");
    let (engine, observer) = open_engine(&path);
    topology(&engine, false).await;
    let source = engine.subscription(SOURCE).unwrap();
    assert!(engine.drops_dead_letters(&source.config()));
    let warned = log.text();
    assert!(
        warned.contains("WARN") && warned.contains("dead letters will be dropped"),
        "creating the subscription did not warn: {warned}"
    );
    let message_id = fail_every_attempt(&engine).await;
    assert_eq!(
        *observer.0.lock().unwrap(),
        [(SOURCE.to_string(), DEAD_TOPIC.to_string(), None)],
        "the loss is reported"
    );
    let lost = log
        .text()
        .lines()
        .find(|l| l.contains("dead letter dropped"))
        .map(str::to_string)
        .unwrap_or_default();
    for needed in [
        "WARN",
        SOURCE,
        DEAD_TOPIC,
        &format!("message_id={message_id}"),
    ] {
        assert!(
            lost.contains(needed),
            "{needed} not in the loss's line: {lost:?}"
        );
    }
    assert!(held(&engine, SOURCE).await.is_empty());
    engine.close().await;
    let (engine, _) = open_engine(&path);
    assert!(held(&engine, SOURCE).await.is_empty());
    let dead = pb::Subscription {
        name: DEAD.into(),
        topic: DEAD_TOPIC.into(),
        ..Default::default()
    };
    engine.create_subscription(dead).await.unwrap();
    let source = engine.subscription(SOURCE).unwrap();
    assert!(!engine.drops_dead_letters(&source.config()));
    engine.close().await;
}
