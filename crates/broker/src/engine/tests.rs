//! The engine's parts together: a backlog read back from the store through
//! the payload budget, as subscriptions lease it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prost::Message as _;

use super::payloads::{BODY_OVERHEAD, Message, Payloads, READ_AHEAD, Stored};
use super::store::{NewMessage, Store};
use super::subscription::Subscription;
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
