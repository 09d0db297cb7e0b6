//! A subscription's backlog without a clock or a store: leasing, acks,
//! deadlines, retry delays, dead-lettering, ordering keys, retention.

use super::*;
use crate::settings::normalize_subscription;

fn subscription(edit: impl FnOnce(&mut pb::Subscription)) -> Subscription {
    let mut config = pb::Subscription {
        name: "projects/p/subscriptions/sub".into(),
        topic: "projects/p/topics/topic".into(),
        ..Default::default()
    };
    edit(&mut config);
    let (name, config) = normalize_subscription(config).unwrap();
    Subscription::new(name, 1, config)
}

/// A record as a subscription without a store holds it (always warm).
fn record(seq: u64, pb: pb::PubsubMessage, published_at: SystemTime) -> (Arc<Stored>, u32) {
    let message = Message {
        seq,
        pb,
        published_at,
    };
    (Payloads::unbounded().admit(message, false).0, 0)
}

fn message(seq: u64) -> (Arc<Stored>, u32) {
    let pb = pb::PubsubMessage {
        data: vec![b'x'; 10],
        message_id: seq.to_string(),
        ..Default::default()
    };
    record(seq, pb, SystemTime::now())
}

fn secs(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

#[test]
fn lease_ack_and_stale_ack_ids() {
    let sub = subscription(|_| {});
    sub.enqueue((1..=3).map(message));
    let now = Instant::now();
    let first = sub.lease(2, None, Duration::from_secs(10), now);
    assert_eq!(
        first.iter().map(|d| d.message.seq).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(first[0].attempt, 1);
    assert_eq!(sub.ack(&[first[0].ack_id.clone()]).unwrap(), [1]);
    // Acking twice is harmless and removes nothing.
    assert!(sub.ack(&[first[0].ack_id.clone()]).unwrap().is_empty());
    assert!(sub.ack(&["garbage".into()]).is_err());
    assert_eq!(sub.backlog(), 2);
}

#[test]
fn expired_lease_is_redelivered_and_old_ack_id_no_longer_acks() {
    let sub = subscription(|_| {});
    sub.enqueue([message(1)]);
    let now = Instant::now();
    let first = sub.lease(10, None, Duration::from_secs(10), now);
    assert!(sub.lease(10, None, Duration::from_secs(10), now).is_empty());
    let tick = sub.tick(now + Duration::from_secs(11), SystemTime::now());
    assert_eq!(tick.failures.len(), 1);
    let second = sub.lease(
        10,
        None,
        Duration::from_secs(10),
        now + Duration::from_secs(11),
    );
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempt, 2);
    assert!(
        sub.ack(&[first[0].ack_id.clone()]).unwrap().is_empty(),
        "stale lease"
    );
    assert_eq!(sub.ack(&[second[0].ack_id.clone()]).unwrap(), [1]);
}

#[test]
fn modify_deadline_extends_and_zero_nacks() {
    let sub = subscription(|_| {});
    sub.enqueue([message(1), message(2)]);
    let now = Instant::now();
    let leased = sub.lease(2, None, Duration::from_secs(10), now);
    sub.modify_deadline(&[leased[0].ack_id.clone()], 60, now)
        .unwrap();
    let tick = sub.tick(now + Duration::from_secs(11), SystemTime::now());
    assert_eq!(tick.failures.iter().map(|f| f.seq).collect::<Vec<_>>(), [2]);
    assert!(sub.is_leased(leased[0].lease));
    let nacked = sub
        .modify_deadline(&[leased[0].ack_id.clone()], 0, now)
        .unwrap();
    assert_eq!(nacked.len(), 1);
    assert_eq!(sub.lease(10, None, Duration::from_secs(10), now).len(), 2);
    assert!(sub.modify_deadline(&[], 601, now).is_err());
}

#[test]
fn retry_policy_delays_redelivery() {
    let sub = subscription(|s| {
        s.retry_policy = Some(pb::RetryPolicy {
            minimum_backoff: secs(5),
            maximum_backoff: secs(60),
        })
    });
    sub.enqueue([message(1)]);
    let now = Instant::now();
    let leased = sub.lease(1, None, Duration::from_secs(10), now);
    sub.nack(&[leased[0].lease], now);
    assert!(sub.lease(1, None, Duration::from_secs(10), now).is_empty());
    let tick = sub.tick(now + Duration::from_millis(4_999), SystemTime::now());
    assert!(tick.next_wake.unwrap() <= now + Duration::from_secs(5));
    assert!(sub.lease(1, None, Duration::from_secs(10), now).is_empty());
    sub.tick(now + Duration::from_secs(5), SystemTime::now());
    assert_eq!(
        sub.lease(
            1,
            None,
            Duration::from_secs(10),
            now + Duration::from_secs(5)
        )
        .len(),
        1
    );
}

#[test]
fn dead_letter_after_max_attempts() {
    let sub = subscription(|s| {
        s.dead_letter_policy = Some(pb::DeadLetterPolicy {
            dead_letter_topic: "projects/p/topics/dead".into(),
            max_delivery_attempts: 5,
        })
    });
    sub.enqueue([message(1)]);
    let now = Instant::now();
    for attempt in 1..=5 {
        let leased = sub.lease(1, None, Duration::from_secs(10), now);
        assert_eq!(leased[0].attempt, attempt);
        let failures = sub.nack(&[leased[0].lease], now);
        assert_eq!(
            failures[0].dead_letter.is_some(),
            attempt == 5,
            "attempt {attempt}"
        );
    }
    assert!(
        sub.lease(1, None, Duration::from_secs(10), now).is_empty(),
        "parked"
    );
    sub.remove_parked(1);
    assert_eq!(sub.backlog(), 0);
}

#[test]
fn counts_and_peek_read_the_backlog_without_leasing() {
    let sub = subscription(|_| {});
    sub.enqueue([7, 3, 9, 5].map(message));
    let leased = sub.lease(1, None, Duration::from_secs(10), Instant::now());
    assert_eq!(leased[0].lease.seq, 3);
    let counts = sub.counts();
    assert_eq!((counts.backlog, counts.in_flight), (4, 1));
    assert!(counts.oldest_published.is_some());
    let seqs = |n| sub.peek(n).iter().map(|(m, _)| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(2), [3, 5]);
    assert_eq!(seqs(10), [3, 5, 7, 9]);
    assert_eq!(sub.counts().in_flight, 1, "peeking leases nothing");
    sub.clear();
    assert_eq!(sub.counts().oldest_age(SystemTime::now()), Duration::ZERO);
}

#[test]
fn byte_limit_still_delivers_one() {
    let sub = subscription(|_| {});
    sub.enqueue((1..=3).map(message));
    let now = Instant::now();
    assert_eq!(
        sub.lease(10, Some(1), Duration::from_secs(10), now).len(),
        1
    );
    assert_eq!(
        sub.lease(10, Some(20), Duration::from_secs(10), now).len(),
        2
    );
}

fn keyed(seq: u64, key: &str) -> (Arc<Stored>, u32) {
    let pb = pb::PubsubMessage {
        data: vec![b'x'],
        ordering_key: key.into(),
        message_id: seq.to_string(),
        ..Default::default()
    };
    record(seq, pb, SystemTime::now())
}

#[test]
fn ordering_keys_go_one_at_a_time_in_order() {
    let sub = subscription(|s| s.enable_message_ordering = true);
    sub.enqueue([
        keyed(1, "max"),
        keyed(2, "luna"),
        keyed(3, "max"),
        keyed(4, ""),
        keyed(5, "max"),
    ]);
    let now = Instant::now();
    let lease = |n| sub.lease(n, None, Duration::from_secs(10), now);
    let seqs = |d: &[Delivery]| d.iter().map(|d| d.message.seq).collect::<Vec<_>>();
    let first = lease(10);
    assert_eq!(
        seqs(&first),
        [1, 2, 4],
        "one per key; unkeyed messages flow"
    );
    assert!(lease(10).is_empty());
    // A nack keeps the key blocked: the same message comes back first.
    sub.nack(&[first[0].lease], now);
    let again = lease(10);
    assert_eq!(seqs(&again), [1]);
    sub.ack(&[again[0].ack_id.clone()]).unwrap();
    let next = lease(10);
    assert_eq!(seqs(&next), [3]);
    sub.ack(&[next[0].ack_id.clone()]).unwrap();
    assert_eq!(seqs(&lease(10)), [5]);
}

#[test]
fn without_ordering_keys_do_not_block() {
    let sub = subscription(|_| {});
    sub.enqueue([keyed(1, "max"), keyed(2, "max")]);
    assert_eq!(
        sub.lease(10, None, Duration::from_secs(10), Instant::now())
            .len(),
        2
    );
}

#[test]
fn a_late_commit_for_an_earlier_seq_takes_the_head_only_if_unsent() {
    let sub = subscription(|s| s.enable_message_ordering = true);
    sub.enqueue([keyed(2, "k")]);
    sub.enqueue([keyed(1, "k")]);
    let now = Instant::now();
    let got = sub.lease(10, None, Duration::from_secs(10), now);
    assert_eq!(got.iter().map(|d| d.message.seq).collect::<Vec<_>>(), [1]);
    sub.enqueue([keyed(0, "k")]);
    sub.ack(&[got[0].ack_id.clone()]).unwrap();
    let got = sub.lease(10, None, Duration::from_secs(10), now);
    assert_eq!(got.iter().map(|d| d.message.seq).collect::<Vec<_>>(), [0]);
}

#[test]
fn retention_drops_old_messages() {
    let sub = subscription(|_| {});
    let old = record(
        1,
        pb::PubsubMessage::default(),
        SystemTime::now() - Duration::from_secs(8 * 24 * 3600),
    );
    sub.enqueue([old, message(2)]);
    let tick = sub.tick(Instant::now(), SystemTime::now());
    assert_eq!(tick.expired, [1]);
    assert_eq!(sub.backlog(), 1);
}
