//! Ordered delivery and subscription filters (issue 7, items 5 and 6), over
//! gRPC and REST. Push and StreamingPull lease through the same backlog, so
//! the one-outstanding-per-key rule holds for them by construction.

mod common;

use common::{Api, Code, TestBroker, both, data_of, expect_err, topic_name};
use labrelay_broker::pb;

both!(
    messages_with_one_ordering_key_go_out_one_at_a_time_in_order,
    a_nacked_message_blocks_its_key_until_redelivered,
    filters_deliver_matches_and_acknowledge_the_rest,
    malformed_filters_are_rejected,
);

fn keyed(data: &str, key: &str) -> pb::PubsubMessage {
    pb::PubsubMessage {
        data: data.as_bytes().to_vec(),
        ordering_key: key.into(),
        ..Default::default()
    }
}

fn with_attribute(data: &str, key: &str, value: &str) -> pb::PubsubMessage {
    pb::PubsubMessage {
        data: data.as_bytes().to_vec(),
        attributes: [(key.to_string(), value.to_string())].into(),
        ..Default::default()
    }
}

async fn messages_with_one_ordering_key_go_out_one_at_a_time_in_order(
    _: &TestBroker,
    api: &impl Api,
) {
    api.topic("ordered").await;
    api.subscription("ordered-sub", "ordered", |s| {
        s.enable_message_ordering = true
    })
    .await;
    let topic = topic_name("ordered");
    for batch in [
        vec![keyed("max-1", "max"), keyed("max-2", "max")],
        vec![keyed("luna-1", "luna")],
        vec![keyed("max-3", "max"), keyed("luna-2", "luna")],
        vec![keyed("free", "")],
    ] {
        api.publish(&topic, batch).await.unwrap();
    }
    let mut order = Vec::new();
    loop {
        let got = api
            .pull(&common::subscription_name("ordered-sub"), 100, true)
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        let keys: Vec<String> = got
            .iter()
            .map(|m| m.message.as_ref().unwrap().ordering_key.clone())
            .collect();
        let keyed: Vec<&String> = keys.iter().filter(|k| !k.is_empty()).collect();
        let distinct: std::collections::HashSet<_> = keyed.iter().collect();
        assert_eq!(
            keyed.len(),
            distinct.len(),
            "at most one outstanding per key: {keys:?}"
        );
        order.extend(data_of(&got));
        api.ack("ordered-sub", &got).await;
    }
    let of = |prefix: &str| {
        order
            .iter()
            .filter(|d| d.starts_with(prefix))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of("max"), ["max-1", "max-2", "max-3"]);
    assert_eq!(of("luna"), ["luna-1", "luna-2"]);
    assert_eq!(of("free"), ["free"]);
}

async fn a_nacked_message_blocks_its_key_until_redelivered(_: &TestBroker, api: &impl Api) {
    api.topic("blocked").await;
    api.subscription("blocked-sub", "blocked", |s| {
        s.enable_message_ordering = true
    })
    .await;
    api.publish(
        &topic_name("blocked"),
        vec![keyed("a-1", "a"), keyed("a-2", "a")],
    )
    .await
    .unwrap();
    api.publish(&topic_name("blocked"), vec![keyed("b-1", "b")])
        .await
        .unwrap();
    let sub = common::subscription_name("blocked-sub");
    let first = api.pull_n("blocked-sub", 2).await;
    let mut got = data_of(&first);
    got.sort();
    assert_eq!(got, ["a-1", "b-1"], "the other key proceeds");
    let a1: Vec<String> = first
        .iter()
        .filter(|m| m.message.as_ref().unwrap().data == b"a-1")
        .map(|m| m.ack_id.clone())
        .collect();
    api.modify_ack_deadline(&sub, &a1, 0).await.unwrap();
    let again = api.pull_n("blocked-sub", 1).await;
    assert_eq!(data_of(&again), ["a-1"], "redelivered before a-2");
    api.ack("blocked-sub", &again).await;
    assert_eq!(data_of(&api.pull_n("blocked-sub", 1).await), ["a-2"]);
}

async fn filters_deliver_matches_and_acknowledge_the_rest(_: &TestBroker, api: &impl Api) {
    api.topic("filtered").await;
    api.subscription("emails-only", "filtered", |s| {
        s.filter = r#"attributes.channel = "email" AND NOT attributes:test"#.into()
    })
    .await;
    api.subscription("idexx", "filtered", |s| {
        s.filter = r#"hasPrefix(attributes.lab, "idexx")"#.into()
    })
    .await;
    api.subscription("everything", "filtered", |_| {}).await;
    let sub = api
        .get_subscription(&common::subscription_name("emails-only"))
        .await
        .unwrap();
    assert!(
        sub.filter.contains("channel"),
        "the filter is reported back"
    );
    api.publish(
        &topic_name("filtered"),
        vec![
            with_attribute("e", "channel", "email"),
            with_attribute("s", "channel", "sms"),
            with_attribute("i", "lab", "idexx-north"),
            pb::PubsubMessage {
                data: b"t".to_vec(),
                attributes: [
                    ("channel".into(), "email".into()),
                    ("test".into(), "1".into()),
                ]
                .into(),
                ..Default::default()
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(data_of(&api.pull_n("emails-only", 1).await), ["e"]);
    assert_eq!(data_of(&api.pull_n("idexx", 1).await), ["i"]);
    assert_eq!(api.pull_n("everything", 4).await.len(), 4);
    // What did not match was acknowledged for that subscription: nothing
    // else ever comes, even after a nack cycle would have redelivered it.
    api.assert_empty("emails-only").await;
    api.assert_empty("idexx").await;
}

async fn malformed_filters_are_rejected(_: &TestBroker, api: &impl Api) {
    api.topic("filter-errors").await;
    for filter in [
        "attributes.channel = email",
        r#"attributes:a AND attributes:b OR attributes:c"#,
        "(attributes:a",
        "data = \"x\"",
    ] {
        let error = expect_err(
            api.create_subscription(pb::Subscription {
                name: common::subscription_name("bad-filter"),
                topic: topic_name("filter-errors"),
                filter: filter.into(),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
        );
        error.assert_mentions(&["filter"]);
    }
}
