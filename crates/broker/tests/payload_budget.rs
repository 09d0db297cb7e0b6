//! A backlog far larger than the broker's in-memory budget for message
//! bodies: everything is still delivered, in order, through pull and push,
//! to every subscription of a fan-out, and after a restart.

// `both!` is not used: these scenarios need a broker with a small budget.
#[allow(unused_macros, unused_imports)]
mod common;

use common::*;
use labrelay_broker::pb;

/// About 20 bodies of 1 KiB: nearly the whole backlog stays on disk.
const BUDGET: usize = 32 << 10;
const MESSAGES: usize = 3000;

fn numbered(i: usize) -> pb::PubsubMessage {
    let mut data = format!("{i:06}-").into_bytes();
    data.resize(1024, b'x');
    pb::PubsubMessage {
        data,
        attributes: [("n".to_string(), i.to_string())].into(),
        ..Default::default()
    }
}

async fn publish_backlog(api: &impl Api, topic_id: &str) {
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(500) {
        api.publish(
            &topic_name(topic_id),
            chunk.iter().map(|&i| numbered(i)).collect(),
        )
        .await
        .expect("publishing the backlog");
    }
}

/// Pulls and acknowledges `sub_id`'s whole backlog, asserting it comes
/// oldest first with its data and attributes intact.
async fn drain_in_order(api: &impl Api, sub_id: &str) {
    let name = subscription_name(sub_id);
    let mut next = 0;
    within(&format!("the backlog of {sub_id}"), async {
        while next < MESSAGES {
            let got = api.pull(&name, 300, false).await.expect("pulling");
            for received in &got {
                let message = received.message.as_ref().expect("a message");
                assert_eq!(message.data, numbered(next).data, "message {next}");
                assert_eq!(message.attributes["n"], next.to_string());
                next += 1;
            }
            let ack_ids: Vec<String> = got.into_iter().map(|r| r.ack_id).collect();
            api.acknowledge(&name, &ack_ids).await.expect("acking");
        }
    })
    .await;
    let rest = api.pull(&name, 10, true).await.expect("pulling");
    assert!(rest.is_empty(), "{} messages after the backlog", rest.len());
}

async fn fan_out_backlog_survives_a_restart<A: Api>(connect: impl AsyncFn(&TestBroker) -> A) {
    let mut broker = spawn_broker_with(|c| c.payload_budget = BUDGET).await;
    let api = connect(&broker).await;
    api.topic("reports").await;
    api.subscription("email", "reports", |_| {}).await;
    api.subscription("sms", "reports", |_| {}).await;
    publish_backlog(&api, "reports").await;

    drain_in_order(&api, "email").await;
    // Half of the other subscription's backlog now, the rest after a
    // restart, which brings it back from disk.
    let name = subscription_name("sms");
    let first = api.pull_n("sms", 200).await;
    let ack_ids: Vec<String> = first.iter().map(|r| r.ack_id.clone()).collect();
    api.acknowledge(&name, &ack_ids).await.expect("acking");

    broker.restart_with(|c| c.payload_budget = BUDGET).await;
    let api = connect(&broker).await;
    let rest = api.pull_n("sms", MESSAGES - 200).await;
    let expected: Vec<Vec<u8>> = (200..MESSAGES).map(|i| numbered(i).data).collect();
    let got: Vec<Vec<u8>> = rest
        .iter()
        .map(|r| r.message.as_ref().expect("a message").data.clone())
        .collect();
    assert!(
        got == expected,
        "the restored backlog is not complete and in order"
    );
    let ack_ids: Vec<String> = rest.into_iter().map(|r| r.ack_id).collect();
    api.acknowledge(&name, &ack_ids).await.expect("acking");

    broker.restart_with(|c| c.payload_budget = BUDGET).await;
    let api = connect(&broker).await;
    for sub in ["email", "sms"] {
        let left = api.pull(&subscription_name(sub), 10, true).await.unwrap();
        assert!(left.is_empty(), "{sub} kept acknowledged messages");
    }
}

#[test]
fn fan_out_backlog_beyond_the_budget_survives_a_restart_over_grpc() {
    run(async {
        fan_out_backlog_survives_a_restart(async |b: &TestBroker| b.grpc().await).await;
    });
}

#[test]
fn fan_out_backlog_beyond_the_budget_survives_a_restart_over_rest() {
    run(async {
        fan_out_backlog_survives_a_restart(async |b: &TestBroker| b.rest()).await;
    });
}

#[test]
fn pushes_a_backlog_beyond_the_budget_completely_and_in_key_order() {
    run(async {
        let broker = spawn_broker_with(|c| c.payload_budget = BUDGET).await;
        let api = broker.grpc().await;
        let mut receiver = PushReceiver::start().await;
        api.topic("reports").await;
        // Ordered: one push at a time, so arrival order is delivery order.
        api.subscription("ordered", "reports", |s| s.enable_message_ordering = true)
            .await;
        api.subscription("unordered", "reports", |_| {}).await;
        let n = 1500;
        let messages: Vec<pb::PubsubMessage> = (0..n)
            .map(|i| pb::PubsubMessage {
                ordering_key: "pet-42".into(),
                ..numbered(i)
            })
            .collect();
        let mut ids = Vec::new();
        for chunk in messages.chunks(500) {
            let published = api.publish(&topic_name("reports"), chunk.to_vec()).await;
            ids.extend(published.expect("publishing"));
        }

        let push = pb::PushConfig {
            push_endpoint: receiver.url(),
            ..Default::default()
        };
        api.modify_push_config(&subscription_name("ordered"), push.clone())
            .await
            .unwrap();
        let pushed = receiver.take(n).await;
        let got: Vec<String> = pushed.iter().map(|r| r.message_id()).collect();
        assert_eq!(got, ids, "ordered pushes arrive complete and in order");

        api.modify_push_config(&subscription_name("unordered"), push)
            .await
            .unwrap();
        let pushed = receiver.take(n).await;
        let mut got: Vec<u64> = pushed
            .iter()
            .map(|r| r.message_id().parse().unwrap())
            .collect();
        got.sort_unstable();
        let mut want: Vec<u64> = ids.iter().map(|id| id.parse().unwrap()).collect();
        want.sort_unstable();
        assert_eq!(got, want, "every message pushed once");
    });
}
