//! The broker's API over gRPC and REST: resources, validation, publish and
//! the pull side (issue 2, items 3, 4, 6, 10). Each scenario is written once
//! against [`Api`] and run over both protocols by `both!`; StreamingPull is
//! gRPC only and malformed JSON is REST only.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{
    Api, Code, TestBroker, both, data_of, expect_err, message, rfc3339_utc, run, secs,
    spawn_broker, subscription_name, topic_name,
};
use labrelay_broker::pb;

both!(
    topics_are_created_read_listed_and_deleted,
    topic_errors_name_the_topic,
    invalid_resource_names_are_rejected_with_the_reason,
    subscription_defaults_are_reported_back,
    subscription_settings_round_trip,
    out_of_range_subscription_settings_name_the_field,
    subscription_errors,
    publish_limits,
    publish_carries_data_attributes_and_ordering_key,
    fan_out_reaches_subscriptions_attached_at_publish_time,
    pull_acknowledge_and_max_messages,
    nack_redelivers_at_once,
    modify_ack_deadline_sets_when_the_lease_expires,
    delivery_attempts_count_and_dead_letters_are_forwarded,
);

const DAY: i64 = 24 * 3600;

// ----- topics -----

async fn topics_are_created_read_listed_and_deleted(_: &TestBroker, api: &impl Api) {
    let wanted = pb::Topic {
        name: topic_name("orders"),
        labels: [("team".to_owned(), "lab".to_owned())].into(),
        ..Default::default()
    };
    let created = api.create_topic(wanted.clone()).await.unwrap();
    assert_eq!(created.name, wanted.name);
    assert_eq!(created.labels, wanted.labels);
    assert_eq!(api.get_topic(&wanted.name).await.unwrap(), created);

    api.topic("payments").await;
    api.topic("reports").await;
    api.create_topic(pb::Topic {
        name: "projects/other/topics/orders".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let names = |topics: &[pb::Topic]| topics.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    let all = [
        topic_name("orders"),
        topic_name("payments"),
        topic_name("reports"),
    ];
    let (topics, next) = api.list_topics("projects/p", 0, "").await.unwrap();
    let mut listed = names(&topics);
    listed.sort();
    assert_eq!(listed, all, "only project p's topics, all of them");
    assert_eq!(next, "");

    let (first, token) = api.list_topics("projects/p", 2, "").await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(!token.is_empty(), "a second page is announced");
    let (second, last) = api.list_topics("projects/p", 2, &token).await.unwrap();
    assert_eq!(last, "");
    let mut paged = names(&first);
    paged.extend(names(&second));
    paged.sort();
    assert_eq!(paged, all, "the pages cover every topic once");

    api.delete_topic(&topic_name("payments")).await.unwrap();
    expect_err(api.get_topic(&topic_name("payments")).await, Code::NotFound);
    expect_err(
        api.delete_topic(&topic_name("payments")).await,
        Code::NotFound,
    );
    let (topics, _) = api.list_topics("projects/p", 0, "").await.unwrap();
    assert_eq!(topics.len(), 2);
}

async fn topic_errors_name_the_topic(_: &TestBroker, api: &impl Api) {
    api.topic("orders").await;
    let duplicate = api.create_topic(pb::Topic {
        name: topic_name("orders"),
        ..Default::default()
    });
    expect_err(duplicate.await, Code::AlreadyExists).assert_mentions(&["orders"]);

    let missing = topic_name("missing");
    expect_err(api.get_topic(&missing).await, Code::NotFound).assert_mentions(&["missing"]);
    expect_err(api.delete_topic(&missing).await, Code::NotFound);
    expect_err(
        api.publish(&missing, vec![message("x")]).await,
        Code::NotFound,
    )
    .assert_mentions(&["missing"]);
    expect_err(api.list_topic_subscriptions(&missing).await, Code::NotFound);
    let orphan = pb::Subscription {
        name: subscription_name("orphan"),
        topic: missing.clone(),
        ..Default::default()
    };
    expect_err(api.create_subscription(orphan).await, Code::NotFound).assert_mentions(&["missing"]);
    expect_err(
        api.get_subscription(&subscription_name("orphan")).await,
        Code::NotFound,
    );
}

async fn invalid_resource_names_are_rejected_with_the_reason(_: &TestBroker, api: &impl Api) {
    let long = "a".repeat(256);
    let cases: [(&str, &[&str]); 6] = [
        ("ab", &["3 to 255", "3 and 255", "length", "long", "short"]),
        (&long, &["255", "length", "long"]),
        ("1abc", &["letter"]),
        ("goog-orders", &["goog"]),
        ("googorders", &["goog"]),
        ("bad!name", &["may contain", "letters", "character"]),
    ];
    api.topic("orders").await;
    for (id, reasons) in cases {
        let topic = pb::Topic {
            name: topic_name(id),
            ..Default::default()
        };
        let error = expect_err(api.create_topic(topic).await, Code::InvalidArgument);
        error.assert_mentions(&[id]);
        error.assert_mentions(reasons);

        let sub = pb::Subscription {
            name: subscription_name(id),
            topic: topic_name("orders"),
            ..Default::default()
        };
        let error = expect_err(api.create_subscription(sub).await, Code::InvalidArgument);
        error.assert_mentions(&[id]);
        error.assert_mentions(reasons);
    }
    let (topics, _) = api.list_topics("projects/p", 0, "").await.unwrap();
    assert_eq!(topics.len(), 1, "nothing was created: {topics:?}");
    let (subs, _) = api.list_subscriptions("projects/p", 0, "").await.unwrap();
    assert!(subs.is_empty(), "nothing was created: {subs:?}");
}

// ----- subscriptions -----

async fn subscription_defaults_are_reported_back(_: &TestBroker, api: &impl Api) {
    api.topic("orders").await;
    api.topic("dead").await;
    let created = api.subscription("plain", "orders", |_| {}).await;
    assert_eq!(created.name, subscription_name("plain"));
    assert_eq!(created.topic, topic_name("orders"));
    assert_eq!(created.ack_deadline_seconds, 10);
    assert_eq!(created.message_retention_duration, secs(7 * DAY));
    assert_eq!(created.state, pb::subscription::State::Active as i32);
    assert!(
        created
            .push_config
            .as_ref()
            .is_none_or(|p| p.push_endpoint.is_empty()),
        "a pull subscription: {:?}",
        created.push_config
    );
    assert_eq!(api.get_subscription(&created.name).await.unwrap(), created);

    let created = api
        .subscription("policies", "orders", |s| {
            s.retry_policy = Some(pb::RetryPolicy::default());
            s.dead_letter_policy = Some(pb::DeadLetterPolicy {
                dead_letter_topic: topic_name("dead"),
                max_delivery_attempts: 0,
            });
        })
        .await;
    let retry = created.retry_policy.as_ref().expect("the retry policy");
    assert_eq!(retry.minimum_backoff, secs(10));
    assert_eq!(retry.maximum_backoff, secs(600));
    let dead_letter = created
        .dead_letter_policy
        .as_ref()
        .expect("the dead-letter policy");
    assert_eq!(dead_letter.max_delivery_attempts, 5, "0 means 5");
    assert_eq!(api.get_subscription(&created.name).await.unwrap(), created);
}

async fn subscription_settings_round_trip(_: &TestBroker, api: &impl Api) {
    use pb::push_config::{AuthenticationMethod, NoWrapper, OidcToken, Wrapper};
    api.topic("orders").await;
    api.topic("dead").await;
    let push = pb::PushConfig {
        push_endpoint: "http://127.0.0.1:9/push".into(),
        attributes: [("x-goog-version".to_owned(), "v1".to_owned())].into(),
        authentication_method: Some(AuthenticationMethod::OidcToken(OidcToken {
            service_account_email: "invoker@p.iam.gserviceaccount.com".into(),
            audience: "https://email-service.example".into(),
        })),
        wrapper: Some(Wrapper::NoWrapper(NoWrapper {
            write_metadata: true,
        })),
    };
    let wanted = pb::Subscription {
        name: subscription_name("email-service-sub"),
        topic: topic_name("orders"),
        push_config: Some(push),
        ack_deadline_seconds: 30,
        message_retention_duration: secs(3600),
        labels: [("channel".to_owned(), "email".to_owned())].into(),
        retry_policy: Some(pb::RetryPolicy {
            minimum_backoff: secs(1),
            maximum_backoff: secs(5),
        }),
        dead_letter_policy: Some(pb::DeadLetterPolicy {
            dead_letter_topic: topic_name("dead"),
            max_delivery_attempts: 7,
        }),
        ..Default::default()
    };
    let created = api.create_subscription(wanted.clone()).await.unwrap();
    for got in [&created, &api.get_subscription(&wanted.name).await.unwrap()] {
        assert_eq!(got.name, wanted.name);
        assert_eq!(got.topic, wanted.topic);
        assert_eq!(got.push_config, wanted.push_config);
        assert_eq!(got.ack_deadline_seconds, 30);
        assert_eq!(got.message_retention_duration, secs(3600));
        assert_eq!(got.labels, wanted.labels);
        assert_eq!(got.retry_policy, wanted.retry_policy);
        assert_eq!(got.dead_letter_policy, wanted.dead_letter_policy);
    }

    let other = api.subscription("sms-service-sub", "orders", |_| {}).await;
    let (listed, next) = api.list_subscriptions("projects/p", 0, "").await.unwrap();
    let mut names: Vec<_> = listed.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, [wanted.name.as_str(), other.name.as_str()]);
    assert_eq!(next, "");
    let mut attached = api
        .list_topic_subscriptions(&topic_name("orders"))
        .await
        .unwrap();
    attached.sort();
    assert_eq!(attached, [wanted.name.clone(), other.name.clone()]);
    assert!(
        api.list_topic_subscriptions(&topic_name("dead"))
            .await
            .unwrap()
            .is_empty()
    );

    api.delete_subscription(&wanted.name).await.unwrap();
    expect_err(api.get_subscription(&wanted.name).await, Code::NotFound);
    expect_err(api.delete_subscription(&wanted.name).await, Code::NotFound);
    let attached = api
        .list_topic_subscriptions(&topic_name("orders"))
        .await
        .unwrap();
    assert_eq!(attached, [other.name]);
}

type Edit = Box<dyn Fn(&mut pb::Subscription)>;

async fn out_of_range_subscription_settings_name_the_field(_: &TestBroker, api: &impl Api) {
    api.topic("orders").await;
    api.topic("dead").await;
    let dead_letter = |attempts: i32| -> Edit {
        Box::new(move |s: &mut pb::Subscription| {
            s.dead_letter_policy = Some(pb::DeadLetterPolicy {
                dead_letter_topic: topic_name("dead"),
                max_delivery_attempts: attempts,
            })
        })
    };
    let retry = |min: i64, max: i64| -> Edit {
        Box::new(move |s: &mut pb::Subscription| {
            s.retry_policy = Some(pb::RetryPolicy {
                minimum_backoff: secs(min),
                maximum_backoff: secs(max),
            })
        })
    };
    let ack = ["ack_deadline_seconds", "ackDeadlineSeconds"];
    let retention = ["message_retention_duration", "messageRetentionDuration"];
    let attempts = ["max_delivery_attempts", "maxDeliveryAttempts"];
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        (
            "ack deadline 5",
            Box::new(|s| s.ack_deadline_seconds = 5),
            &ack,
        ),
        (
            "ack deadline 601",
            Box::new(|s| s.ack_deadline_seconds = 601),
            &ack,
        ),
        (
            "maximum backoff 700s",
            retry(1, 700),
            &["maximum_backoff", "maximumBackoff"],
        ),
        (
            "minimum backoff 700s",
            retry(700, 600),
            &["minimum_backoff", "minimumBackoff"],
        ),
        ("4 delivery attempts", dead_letter(4), &attempts),
        ("101 delivery attempts", dead_letter(101), &attempts),
        (
            "retention 5 minutes",
            Box::new(|s| s.message_retention_duration = secs(5 * 60)),
            &retention,
        ),
        (
            "retention 32 days",
            Box::new(|s| s.message_retention_duration = secs(32 * DAY)),
            &retention,
        ),
        (
            "a push endpoint that is not a URL",
            Box::new(|s| {
                s.push_config = Some(pb::PushConfig {
                    push_endpoint: "not a url".into(),
                    ..Default::default()
                })
            }),
            &["push_endpoint", "pushEndpoint"],
        ),
    ];
    for (case, edit, field) in cases {
        let mut sub = pb::Subscription {
            name: subscription_name("sub"),
            topic: topic_name("orders"),
            ..Default::default()
        };
        edit(&mut sub);
        match api.create_subscription(sub).await {
            Ok(created) => panic!("{case}: accepted: {created:?}"),
            Err(error) => {
                assert_eq!(error.code, Code::InvalidArgument, "{case}: {error:?}");
                error.assert_mentions(field);
            }
        }
        expect_err(
            api.get_subscription(&subscription_name("sub")).await,
            Code::NotFound,
        );
    }
    // The bounds themselves are valid.
    api.subscription("low", "orders", |s| {
        s.ack_deadline_seconds = 10;
        s.message_retention_duration = secs(10 * 60);
        dead_letter(5)(s);
        retry(0, 0)(s);
    })
    .await;
    api.subscription("high", "orders", |s| {
        s.ack_deadline_seconds = 600;
        s.message_retention_duration = secs(31 * DAY);
        dead_letter(100)(s);
        retry(600, 600)(s);
    })
    .await;
}

async fn subscription_errors(_: &TestBroker, api: &impl Api) {
    api.topic("orders").await;
    api.subscription("sub", "orders", |_| {}).await;
    let duplicate = pb::Subscription {
        name: subscription_name("sub"),
        topic: topic_name("orders"),
        ..Default::default()
    };
    expect_err(
        api.create_subscription(duplicate).await,
        Code::AlreadyExists,
    )
    .assert_mentions(&["sub"]);

    let no_dead_letter_topic = pb::Subscription {
        name: subscription_name("other"),
        topic: topic_name("orders"),
        dead_letter_policy: Some(pb::DeadLetterPolicy {
            dead_letter_topic: topic_name("nowhere"),
            max_delivery_attempts: 5,
        }),
        ..Default::default()
    };
    expect_err(
        api.create_subscription(no_dead_letter_topic).await,
        Code::NotFound,
    )
    .assert_mentions(&["nowhere"]);

    let missing = subscription_name("missing");
    let ids = ["1-1".to_owned()];
    expect_err(api.get_subscription(&missing).await, Code::NotFound).assert_mentions(&["missing"]);
    expect_err(api.delete_subscription(&missing).await, Code::NotFound);
    expect_err(api.pull(&missing, 1, true).await, Code::NotFound);
    expect_err(api.acknowledge(&missing, &ids).await, Code::NotFound);
    expect_err(
        api.modify_ack_deadline(&missing, &ids, 0).await,
        Code::NotFound,
    );
    expect_err(
        api.modify_push_config(&missing, pb::PushConfig::default())
            .await,
        Code::NotFound,
    );

    let sub = subscription_name("sub");
    expect_err(api.pull(&sub, 0, true).await, Code::InvalidArgument)
        .assert_mentions(&["max_messages", "maxMessages"]);
    expect_err(
        api.acknowledge(&sub, &["not-an-ack-id".to_owned()]).await,
        Code::InvalidArgument,
    )
    .assert_mentions(&["not-an-ack-id"]);
    let deadline = ["ack_deadline_seconds", "ackDeadlineSeconds"];
    expect_err(
        api.modify_ack_deadline(&sub, &ids, 601).await,
        Code::InvalidArgument,
    )
    .assert_mentions(&deadline);
    expect_err(
        api.modify_ack_deadline(&sub, &ids, -1).await,
        Code::InvalidArgument,
    )
    .assert_mentions(&deadline);
}

// ----- publish -----

async fn publish_limits(_: &TestBroker, api: &impl Api) {
    let topic = topic_name("orders");
    api.topic("orders").await;
    let mut seen = HashSet::new();
    let mut remember = |ids: Vec<String>| {
        for id in ids {
            assert!(
                id.parse::<u64>().is_ok(),
                "message id {id:?} is not decimal"
            );
            assert!(seen.insert(id.clone()), "message id {id} was given twice");
        }
    };

    let ids = api.publish(&topic, vec![message("one")]).await.unwrap();
    assert_eq!(ids.len(), 1);
    remember(ids);
    let thousand = (0..1000).map(|i| message(&i.to_string())).collect();
    let ids = api.publish(&topic, thousand).await.unwrap();
    assert_eq!(ids.len(), 1000);
    remember(ids);
    let attributes_only = pb::PubsubMessage {
        attributes: [("reportId".to_owned(), "12".to_owned())].into(),
        ..Default::default()
    };
    remember(api.publish(&topic, vec![attributes_only]).await.unwrap());
    let just_under_10_mb = pb::PubsubMessage {
        data: vec![b'x'; 9_999_000],
        ..Default::default()
    };
    remember(api.publish(&topic, vec![just_under_10_mb]).await.unwrap());

    let too_many = (0..1001).map(|i| message(&i.to_string())).collect();
    expect_err(api.publish(&topic, too_many).await, Code::InvalidArgument)
        .assert_mentions(&["1000"]);
    expect_err(api.publish(&topic, vec![]).await, Code::InvalidArgument);
    let empty = vec![message("fine"), pb::PubsubMessage::default()];
    expect_err(api.publish(&topic, empty).await, Code::InvalidArgument).assert_mentions(&[
        "data",
        "attributes",
        "empty",
    ]);
    let over_10_mb = pb::PubsubMessage {
        data: vec![b'x'; 10_000_001],
        ..Default::default()
    };
    expect_err(
        api.publish(&topic, vec![over_10_mb]).await,
        Code::InvalidArgument,
    );
}

async fn publish_carries_data_attributes_and_ordering_key(_: &TestBroker, api: &impl Api) {
    api.topic("orders").await;
    api.subscription("sub", "orders", |_| {}).await;
    let full = pb::PubsubMessage {
        data: vec![0, 1, 2, 0xfe, 0xff, b'{', b'}'],
        attributes: [
            ("reportId".to_owned(), "LR-2026-000123".to_owned()),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ]
        .into(),
        ordering_key: "pet-7".into(),
        ..Default::default()
    };
    let attributes_only = pb::PubsubMessage {
        attributes: [("reportId".to_owned(), "12".to_owned())].into(),
        ..Default::default()
    };
    let before = std::time::SystemTime::now();
    let ids = api
        .publish(
            &topic_name("orders"),
            vec![full.clone(), attributes_only.clone()],
        )
        .await
        .unwrap();

    let received = api.pull_n("sub", 2).await;
    for (sent, id) in [full, attributes_only].into_iter().zip(&ids) {
        let got = received
            .iter()
            .find(|r| r.message.as_ref().is_some_and(|m| &m.message_id == id))
            .unwrap_or_else(|| panic!("message {id} was not delivered: {received:?}"));
        assert!(!got.ack_id.is_empty());
        assert_eq!(
            got.delivery_attempt, 0,
            "no dead-letter policy, no attempt count"
        );
        let m = got.message.as_ref().unwrap();
        assert_eq!(m.data, sent.data);
        assert_eq!(m.attributes, sent.attributes);
        assert_eq!(m.ordering_key, sent.ordering_key);
        let published = m.publish_time.expect("a publish time");
        let published = std::time::SystemTime::try_from(published).unwrap();
        let skew = Duration::from_secs(2);
        assert!(
            published + skew >= before && published <= std::time::SystemTime::now() + skew,
            "publish time {published:?} is not about now"
        );
    }
}

// ----- delivery -----

async fn fan_out_reaches_subscriptions_attached_at_publish_time(_: &TestBroker, api: &impl Api) {
    api.topic("orders").await;
    api.subscription("email", "orders", |_| {}).await;
    api.subscription("sms", "orders", |_| {}).await;
    api.publish_data("orders", &["one"]).await;
    api.subscription("late", "orders", |_| {}).await;
    api.publish_data("orders", &["two"]).await;

    for sub in ["email", "sms"] {
        let mut got = data_of(&api.pull_n(sub, 2).await);
        got.sort();
        assert_eq!(got, ["one", "two"], "{sub} gets every message");
    }
    assert_eq!(data_of(&api.pull_n("late", 1).await), ["two"]);
    api.assert_empty("late").await;
}

async fn pull_acknowledge_and_max_messages(_: &TestBroker, api: &impl Api) {
    api.topic("orders").await;
    api.subscription("sub", "orders", |_| {}).await;
    api.publish_data("orders", &["a", "b", "c", "d", "e"]).await;
    let sub = subscription_name("sub");

    let first = api.pull(&sub, 2, true).await.unwrap();
    assert_eq!(first.len(), 2, "max_messages is respected: {first:?}");
    let mut received = first;
    received.extend(api.pull_n("sub", 3).await);
    let mut data = data_of(&received);
    data.sort();
    assert_eq!(data, ["a", "b", "c", "d", "e"]);
    api.assert_empty("sub").await;

    // Acknowledge four, nack all five: only the fifth comes back.
    let (keep, acked) = received.split_last().unwrap();
    api.ack("sub", acked).await;
    let all: Vec<String> = received.iter().map(|r| r.ack_id.clone()).collect();
    api.modify_ack_deadline(&sub, &all, 0).await.unwrap();
    let again = api.pull_n("sub", 1).await;
    assert_eq!(data_of(&again), data_of(std::slice::from_ref(keep)));
    api.ack("sub", &again).await;
    api.assert_quiet("sub", Duration::from_millis(500)).await;
}

async fn nack_redelivers_at_once(_: &TestBroker, api: &impl Api) {
    api.topic("orders").await;
    api.subscription("sub", "orders", |_| {}).await;
    let ids = api.publish_data("orders", &["report"]).await;
    let sub = subscription_name("sub");

    let first = api.pull_n("sub", 1).await;
    let nacked_at = Instant::now();
    api.modify_ack_deadline(&sub, &[first[0].ack_id.clone()], 0)
        .await
        .unwrap();
    let second = api.pull_n("sub", 1).await;
    assert!(
        nacked_at.elapsed() < Duration::from_secs(2),
        "a nack without retry policy redelivers promptly (took {:?})",
        nacked_at.elapsed()
    );
    assert_eq!(second[0].message.as_ref().unwrap().message_id, ids[0]);
    assert_ne!(
        second[0].ack_id, first[0].ack_id,
        "a new lease, a new ack id"
    );
    api.ack("sub", &second).await;
    api.assert_empty("sub").await;
}

async fn modify_ack_deadline_sets_when_the_lease_expires(_: &TestBroker, api: &impl Api) {
    api.topic("orders").await;
    api.subscription("sub", "orders", |_| {}).await;
    api.publish_data("orders", &["short", "extended"]).await;
    let sub = subscription_name("sub");
    let received = api.pull_n("sub", 2).await;
    let ack_id = |data: &str| {
        let i = data_of(&received).iter().position(|d| d == data).unwrap();
        vec![received[i].ack_id.clone()]
    };

    let start = Instant::now();
    api.modify_ack_deadline(&sub, &ack_id("short"), 1)
        .await
        .unwrap();
    api.modify_ack_deadline(&sub, &ack_id("extended"), 1)
        .await
        .unwrap();
    // A later modack replaces the deadline: "extended" now has 3 s.
    api.modify_ack_deadline(&sub, &ack_id("extended"), 3)
        .await
        .unwrap();

    let again = api.pull_n("sub", 1).await;
    let elapsed = start.elapsed();
    assert_eq!(data_of(&again), ["short"]);
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(2500),
        "the 1 s lease expired after {elapsed:?}"
    );
    api.ack("sub", &again).await;
    api.assert_empty("sub").await;

    let again = api.pull_n("sub", 1).await;
    let elapsed = start.elapsed();
    assert_eq!(data_of(&again), ["extended"]);
    assert!(
        elapsed >= Duration::from_millis(2900) && elapsed < Duration::from_millis(4500),
        "the extended lease expired after {elapsed:?}"
    );
}

async fn delivery_attempts_count_and_dead_letters_are_forwarded(_: &TestBroker, api: &impl Api) {
    api.topic("orders").await;
    api.topic("dead").await;
    api.subscription("dead-sub", "dead", |_| {}).await;
    api.subscription("sub", "orders", |s| {
        s.dead_letter_policy = Some(pb::DeadLetterPolicy {
            dead_letter_topic: topic_name("dead"),
            max_delivery_attempts: 5,
        })
    })
    .await;
    let poison = pb::PubsubMessage {
        data: b"poison".to_vec(),
        attributes: [("reportId".to_owned(), "12".to_owned())].into(),
        ..Default::default()
    };
    let ids = api
        .publish(&topic_name("orders"), vec![poison])
        .await
        .unwrap();
    let sub = subscription_name("sub");

    let mut publish_time = None;
    for attempt in 1..=5 {
        let got = api.pull_n("sub", 1).await;
        let m = got[0].message.as_ref().unwrap();
        assert_eq!(m.message_id, ids[0]);
        assert_eq!(got[0].delivery_attempt, attempt, "1 + nacks + expiries");
        publish_time = m.publish_time;
        let ack_ids = [got[0].ack_id.clone()];
        if attempt == 2 {
            // An expired lease counts as an attempt, like a nack.
            api.modify_ack_deadline(&sub, &ack_ids, 1).await.unwrap();
        } else {
            api.modify_ack_deadline(&sub, &ack_ids, 0).await.unwrap();
        }
    }

    let dead = api.pull_n("dead-sub", 1).await;
    let m = dead[0].message.as_ref().unwrap();
    assert_eq!(m.data, b"poison");
    assert_ne!(m.message_id, ids[0], "the forwarded copy is a new message");
    let attribute = |key: &str| {
        m.attributes
            .get(key)
            .unwrap_or_else(|| panic!("attribute {key} is missing: {:?}", m.attributes))
            .as_str()
    };
    assert_eq!(attribute("reportId"), "12");
    assert_eq!(attribute("CloudPubSubDeadLetterSourceDeliveryCount"), "5");
    assert_eq!(attribute("CloudPubSubDeadLetterSourceSubscription"), "sub");
    assert_eq!(
        attribute("CloudPubSubDeadLetterSourceSubscriptionProject"),
        "p"
    );
    let source_time = rfc3339_utc(attribute("CloudPubSubDeadLetterSourceTopicPublishTime"));
    assert_eq!(Some(source_time), publish_time);

    api.assert_quiet("sub", Duration::from_millis(1500)).await;
}

// ----- lease expiry at the subscription's own deadline -----

/// The one test that waits out a full 10 s ack deadline.
#[test]
fn lease_expires_after_the_subscription_ack_deadline() {
    run(async {
        let broker = spawn_broker().await;
        let api = broker.grpc().await;
        api.topic("orders").await;
        api.subscription("sub", "orders", |s| s.ack_deadline_seconds = 10)
            .await;
        let ids = api.publish_data("orders", &["report"]).await;
        let sub = subscription_name("sub");

        let first = api.pull_n("sub", 1).await;
        let leased_at = Instant::now();
        let again = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let got = api.pull(&sub, 1, false).await.unwrap();
                if !got.is_empty() {
                    return got;
                }
            }
        })
        .await
        .expect("the message is redelivered after its lease expires");
        let elapsed = leased_at.elapsed();
        assert!(
            elapsed >= Duration::from_millis(9500) && elapsed < Duration::from_secs(13),
            "redelivered after {elapsed:?}, not after the 10 s ack deadline"
        );
        assert_eq!(again[0].message.as_ref().unwrap().message_id, ids[0]);
        assert_ne!(again[0].ack_id, first[0].ack_id);
    });
}

// ----- restart -----

async fn state_survives_a_restart<A: Api>(connect: impl AsyncFn(&TestBroker) -> A) {
    let mut broker = spawn_broker().await;
    {
        let api = connect(&broker).await;
        api.topic("orders").await;
        api.subscription("sub", "orders", |s| s.ack_deadline_seconds = 20)
            .await;
        api.publish_data("orders", &["acked", "pending"]).await;
        let received = api.pull_n("sub", 2).await;
        let acked: Vec<_> = received
            .into_iter()
            .filter(|r| data_of(std::slice::from_ref(r)) == ["acked"])
            .collect();
        api.ack("sub", &acked).await;
    }
    broker.restart().await;
    let api = connect(&broker).await;
    api.get_topic(&topic_name("orders")).await.unwrap();
    let sub = api
        .get_subscription(&subscription_name("sub"))
        .await
        .unwrap();
    assert_eq!(sub.ack_deadline_seconds, 20);
    // The lease did not survive; the acknowledgement did.
    assert_eq!(data_of(&api.pull_n("sub", 1).await), ["pending"]);
    api.assert_empty("sub").await;
}

#[test]
fn state_survives_a_restart_over_grpc() {
    run(async {
        state_survives_a_restart(async |b: &TestBroker| b.grpc().await).await;
    });
}

#[test]
fn state_survives_a_restart_over_rest() {
    run(async {
        state_survives_a_restart(async |b: &TestBroker| b.rest()).await;
    });
}

// ----- StreamingPull (gRPC only) -----

mod streaming_pull {
    use std::time::{Duration, Instant};

    use labrelay_broker::pb;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use crate::common::{
        Api, ApiError, Code, EVENT_TIMEOUT, Grpc, TestBroker, data_of, run, spawn_broker,
        subscription_name, topic_name,
    };

    /// One open StreamingPull call.
    struct Stream {
        requests: mpsc::Sender<pb::StreamingPullRequest>,
        responses: tonic::Streaming<pb::StreamingPullResponse>,
    }

    fn first_request(
        sub_id: &str,
        edit: impl FnOnce(&mut pb::StreamingPullRequest),
    ) -> pb::StreamingPullRequest {
        let mut request = pb::StreamingPullRequest {
            subscription: subscription_name(sub_id),
            stream_ack_deadline_seconds: 10,
            client_id: "test-client".into(),
            ..Default::default()
        };
        edit(&mut request);
        request
    }

    impl Stream {
        async fn open(api: &Grpc, first: pb::StreamingPullRequest) -> Result<Stream, ApiError> {
            let (requests, rx) = mpsc::channel(16);
            requests
                .send(first)
                .await
                .expect("queueing the first request");
            let responses = api
                .subscriber()
                .streaming_pull(ReceiverStream::new(rx))
                .await?
                .into_inner();
            Ok(Stream {
                requests,
                responses,
            })
        }

        /// The error the broker ends the stream with, whether it refuses the
        /// call or fails the stream's first read.
        async fn open_err(api: &Grpc, first: pb::StreamingPullRequest) -> ApiError {
            match Stream::open(api, first).await {
                Err(error) => error,
                Ok(mut stream) => {
                    match tokio::time::timeout(EVENT_TIMEOUT, stream.responses.message()).await {
                        Ok(Err(status)) => status.into(),
                        other => panic!("expected the stream to fail, got {other:?}"),
                    }
                }
            }
        }

        async fn send(&self, request: pb::StreamingPullRequest) {
            self.requests
                .send(request)
                .await
                .expect("the stream is open");
        }

        /// The next delivered messages (skipping empty heartbeats).
        async fn receive(&mut self) -> Vec<pb::ReceivedMessage> {
            loop {
                let response = tokio::time::timeout(EVENT_TIMEOUT, self.responses.message())
                    .await
                    .expect("a StreamingPull response in time")
                    .expect("the stream stays healthy")
                    .expect("the stream stays open");
                if !response.received_messages.is_empty() {
                    return response.received_messages;
                }
            }
        }

        async fn receive_n(&mut self, n: usize) -> Vec<pb::ReceivedMessage> {
            let mut got = Vec::new();
            while got.len() < n {
                got.extend(self.receive().await);
            }
            assert_eq!(got.len(), n, "more messages than expected: {got:?}");
            got
        }

        async fn assert_quiet(&mut self, quiet: Duration) {
            if let Ok(response) = tokio::time::timeout(quiet, self.responses.message()).await {
                let response = response.expect("the stream stays healthy");
                assert!(
                    response
                        .as_ref()
                        .is_none_or(|r| r.received_messages.is_empty()),
                    "unexpected delivery: {response:?}"
                );
            }
        }
    }

    fn ack_ids(received: &[pb::ReceivedMessage]) -> Vec<String> {
        received.iter().map(|r| r.ack_id.clone()).collect()
    }

    async fn setup(edit: impl FnOnce(&mut pb::Subscription)) -> (TestBroker, Grpc) {
        let broker = spawn_broker().await;
        let api = broker.grpc().await;
        api.topic("orders").await;
        api.topic("dead").await;
        api.subscription("sub", "orders", edit).await;
        (broker, api)
    }

    #[test]
    fn delivers_and_takes_acks_and_nacks_on_the_stream() {
        run(async {
            let (_broker, api) = setup(|_| {}).await;
            let mut stream = Stream::open(&api, first_request("sub", |_| {}))
                .await
                .unwrap();
            api.publish_data("orders", &["a", "b", "c"]).await;
            let received = stream.receive_n(3).await;
            let mut data = data_of(&received);
            data.sort();
            assert_eq!(data, ["a", "b", "c"]);

            // Ack two and nack the third in one request; the nacked one comes
            // back on the stream, which also shows the request was applied.
            let (nacked, acked) = received.split_last().unwrap();
            stream
                .send(pb::StreamingPullRequest {
                    ack_ids: ack_ids(acked),
                    modify_deadline_ack_ids: vec![nacked.ack_id.clone()],
                    modify_deadline_seconds: vec![0],
                    ..Default::default()
                })
                .await;
            let again = stream.receive_n(1).await;
            assert_eq!(data_of(&again), data_of(std::slice::from_ref(nacked)));

            // A nack of the acknowledged ones through the unary RPC changes nothing.
            api.modify_ack_deadline(&subscription_name("sub"), &ack_ids(acked), 0)
                .await
                .unwrap();
            stream.assert_quiet(Duration::from_millis(700)).await;
            api.assert_empty("sub").await;
        });
    }

    #[test]
    fn modack_on_the_stream_sets_the_lease_and_attempts_are_counted() {
        run(async {
            let (_broker, api) = setup(|s| {
                s.dead_letter_policy = Some(pb::DeadLetterPolicy {
                    dead_letter_topic: topic_name("dead"),
                    max_delivery_attempts: 5,
                })
            })
            .await;
            let mut stream = Stream::open(&api, first_request("sub", |_| {}))
                .await
                .unwrap();
            api.publish_data("orders", &["report"]).await;
            let first = stream.receive_n(1).await;
            assert_eq!(first[0].delivery_attempt, 1);

            let start = Instant::now();
            stream
                .send(pb::StreamingPullRequest {
                    modify_deadline_ack_ids: ack_ids(&first),
                    modify_deadline_seconds: vec![1],
                    ..Default::default()
                })
                .await;
            let again = stream.receive_n(1).await;
            let elapsed = start.elapsed();
            assert!(
                elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(2500),
                "the 1 s lease expired after {elapsed:?}"
            );
            assert_eq!(again[0].delivery_attempt, 2);
            assert_ne!(again[0].ack_id, first[0].ack_id);
            assert_eq!(
                again[0].message.as_ref().unwrap().message_id,
                first[0].message.as_ref().unwrap().message_id
            );
        });
    }

    #[test]
    fn max_outstanding_messages_limits_deliveries_until_acks() {
        run(async {
            let (_broker, api) = setup(|_| {}).await;
            let first = first_request("sub", |r| r.max_outstanding_messages = 2);
            let mut stream = Stream::open(&api, first).await.unwrap();
            api.publish_data("orders", &["1", "2", "3", "4", "5"]).await;

            let mut outstanding = stream.receive_n(2).await;
            stream.assert_quiet(Duration::from_millis(700)).await;

            // An ack through the unary RPC frees one slot...
            let done = outstanding.remove(0);
            api.ack("sub", std::slice::from_ref(&done)).await;
            outstanding.extend(stream.receive_n(1).await);
            stream.assert_quiet(Duration::from_millis(500)).await;

            // ...and so does an ack on the stream.
            let done = outstanding.remove(0);
            stream
                .send(pb::StreamingPullRequest {
                    ack_ids: vec![done.ack_id],
                    ..Default::default()
                })
                .await;
            outstanding.extend(stream.receive_n(1).await);
            stream.assert_quiet(Duration::from_millis(500)).await;

            // A nack frees a slot too, and the nacked message takes it.
            let nacked = outstanding.remove(0);
            api.modify_ack_deadline(
                &subscription_name("sub"),
                std::slice::from_ref(&nacked.ack_id),
                0,
            )
            .await
            .unwrap();
            let again = stream.receive_n(1).await;
            assert_eq!(data_of(&again), data_of(std::slice::from_ref(&nacked)));
            outstanding.extend(again);

            api.ack("sub", &outstanding).await;
            assert_eq!(stream.receive_n(1).await.len(), 1, "the last of five");
        });
    }

    #[test]
    fn max_outstanding_bytes_limits_deliveries_but_never_below_one() {
        run(async {
            let (_broker, api) = setup(|_| {}).await;
            // One 8-byte message is over the limit; it is delivered anyway, and
            // then nothing more until it is acknowledged.
            let first = first_request("sub", |r| r.max_outstanding_bytes = 5);
            let mut stream = Stream::open(&api, first).await.unwrap();
            api.publish_data("orders", &["eight-by", "eight-by"]).await;

            let one = stream.receive_n(1).await;
            stream.assert_quiet(Duration::from_millis(700)).await;
            api.ack("sub", &one).await;
            stream.receive_n(1).await;
        });
    }

    #[test]
    fn bad_first_requests_are_rejected() {
        run(async {
            let (_broker, api) = setup(|_| {}).await;
            for deadline in [0, 5, 601] {
                let first = first_request("sub", |r| r.stream_ack_deadline_seconds = deadline);
                let error = Stream::open_err(&api, first).await;
                assert_eq!(
                    error.code,
                    Code::InvalidArgument,
                    "deadline {deadline}: {error:?}"
                );
                error.assert_mentions(&["stream_ack_deadline_seconds"]);
            }
            let error = Stream::open_err(&api, first_request("missing", |_| {})).await;
            assert_eq!(error.code, Code::NotFound, "{error:?}");
            let first = first_request("x", |r| {
                r.subscription = "projects/p/subscriptions/1x".into()
            });
            let error = Stream::open_err(&api, first).await;
            assert_eq!(error.code, Code::InvalidArgument, "{error:?}");

            // The subscription is still served normally.
            api.publish_data("orders", &["fine"]).await;
            assert_eq!(data_of(&api.pull_n("sub", 1).await), ["fine"]);
        });
    }
}

// ----- malformed input -----

mod malformed_grpc {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    use crate::common::{Api, ApiError, Code, run, spawn_broker, topic_name};

    /// Sends bytes as they are, reads the answer's bytes as they are.
    #[derive(Default)]
    struct RawCodec;

    impl Encoder for RawCodec {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawCodec {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawCodec;
        type Decoder = RawCodec;
        fn encoder(&mut self) -> RawCodec {
            RawCodec
        }
        fn decoder(&mut self) -> RawCodec {
            RawCodec
        }
    }

    /// A request body that is not a valid protobuf message (field 1 claims
    /// 16 bytes and has 1) is refused with a message, and nothing changes.
    /// gRPC libraries report request-parsing failures as INTERNAL
    /// (grpc/grpc doc/statuscodes.md); INVALID_ARGUMENT is as good.
    #[test]
    fn malformed_protobuf_is_refused() {
        run(async {
            let broker = spawn_broker().await;
            let channel = tonic::transport::Channel::from_shared(broker.url())
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = tonic::client::Grpc::new(channel);
            client.ready().await.unwrap();
            let path = "/google.pubsub.v1.Publisher/CreateTopic".parse().unwrap();
            let garbage = vec![0x0a, 0x10, b'a'];
            let status = client
                .unary(tonic::Request::new(garbage), path, RawCodec)
                .await
                .expect_err("a malformed message is refused");
            let error = ApiError::from(status);
            assert!(
                matches!(error.code, Code::InvalidArgument | Code::Internal),
                "{error:?}"
            );
            assert!(!error.message.is_empty());

            let api = broker.grpc().await;
            let (topics, _) = api.list_topics("projects/p", 0, "").await.unwrap();
            assert!(topics.is_empty(), "{topics:?}");
            api.topic("orders").await;
            api.get_topic(&topic_name("orders")).await.unwrap();
        });
    }
}

mod malformed_rest {
    use reqwest::Method;

    use crate::common::{Api, Code, run, spawn_broker, subscription_name, topic_name};

    const JSON: &str = "application/json";
    /// Words a message about unparsable JSON may use.
    const PARSE: &[&str] = &[
        "JSON", "json", "EOF", "pars", "expected", "invalid", "Invalid",
    ];

    /// Each malformed body gets 400 INVALID_ARGUMENT with a message naming
    /// `mentions`, and creates nothing.
    #[test]
    fn malformed_json_unknown_fields_and_wrong_types_are_400() {
        run(async {
            let broker = spawn_broker().await;
            let api = broker.rest();
            api.topic("orders").await;
            api.subscription("sub", "orders", |_| {}).await;
            let new_topic = "projects/p/topics/fresh";
            let new_sub = "projects/p/subscriptions/fresh";
            let publish = "projects/p/topics/orders:publish";
            let pull = "projects/p/subscriptions/sub:pull";
            let cases: [(&str, Method, &str, &str, &[&str]); 10] = [
                (
                    "truncated JSON",
                    Method::PUT,
                    new_topic,
                    r#"{"labels": "#,
                    PARSE,
                ),
                (
                    "not JSON at all",
                    Method::PUT,
                    new_sub,
                    "topic=orders",
                    PARSE,
                ),
                (
                    "unknown field",
                    Method::PUT,
                    new_sub,
                    r#"{"topic": "projects/p/topics/orders", "ackDeadline": 20}"#,
                    &["ackDeadline"],
                ),
                (
                    "string for an integer",
                    Method::PUT,
                    new_sub,
                    r#"{"topic": "projects/p/topics/orders", "ackDeadlineSeconds": "ten"}"#,
                    &["ackDeadlineSeconds", "ack_deadline_seconds"],
                ),
                (
                    "number for a string",
                    Method::PUT,
                    new_sub,
                    r#"{"topic": 5}"#,
                    &["topic"],
                ),
                (
                    "bad duration",
                    Method::PUT,
                    new_sub,
                    r#"{"topic": "projects/p/topics/orders", "messageRetentionDuration": "a week"}"#,
                    &[
                        "messageRetentionDuration",
                        "message_retention_duration",
                        "duration",
                    ],
                ),
                (
                    "data that is not base64",
                    Method::POST,
                    publish,
                    r#"{"messages": [{"data": "not base64!"}]}"#,
                    &["data", "base64"],
                ),
                (
                    "an array for the request",
                    Method::POST,
                    publish,
                    "[]",
                    PARSE,
                ),
                (
                    "unknown field in a message",
                    Method::POST,
                    publish,
                    r#"{"messages": [{"data": "eA==", "colour": "red"}]}"#,
                    &["colour"],
                ),
                (
                    "unknown field in pull",
                    Method::POST,
                    pull,
                    r#"{"maxMessage": 1}"#,
                    &["maxMessage"],
                ),
            ];
            // Every case is tried, and every problem reported together.
            let mut problems = Vec::new();
            for (case, method, path, body, mentions) in cases {
                let response = api.raw(method, path, JSON, body).await;
                if response.status != 400 {
                    problems.push(format!(
                        "{case}: HTTP {} {:?}",
                        response.status, response.body
                    ));
                    continue;
                }
                let error = response.error();
                if error.code != Code::InvalidArgument {
                    problems.push(format!("{case}: {error:?}"));
                } else if !mentions.iter().any(|m| error.message.contains(m)) {
                    problems.push(format!(
                        "{case}: the message {:?} names none of {mentions:?}",
                        error.message
                    ));
                }
            }
            assert!(problems.is_empty(), "{problems:#?}");
            expect_gone(&api, new_topic, new_sub).await;
            assert!(
                api.pull(&subscription_name("sub"), 10, true)
                    .await
                    .unwrap()
                    .is_empty(),
                "no malformed publish was stored"
            );
            // The broker still works.
            api.publish_data("orders", &["fine"]).await;
            api.pull_n("sub", 1).await;
        });
    }

    async fn expect_gone(api: &crate::common::Rest, topic: &str, sub: &str) {
        let topic = api.get_topic(topic).await;
        assert_eq!(topic.map_err(|e| e.code).unwrap_err(), Code::NotFound);
        let sub = api.get_subscription(sub).await;
        assert_eq!(sub.map_err(|e| e.code).unwrap_err(), Code::NotFound);
    }

    #[test]
    fn root_answers_ok_and_the_admin_clients_query_is_accepted() {
        run(async {
            let broker = spawn_broker().await;
            let root = reqwest::get(broker.url()).await.unwrap();
            assert_eq!(root.status(), 200);
            assert_eq!(root.text().await.unwrap().trim(), "Ok");

            // The official Rust admin client adds `$alt=json;enum-encoding=int`.
            let api = broker.rest();
            let query = "?$alt=json;enum-encoding=int";
            let path = format!("{}{query}", topic_name("orders"));
            let created = api.raw(Method::PUT, &path, JSON, "{}").await;
            assert_eq!(created.status, 200, "{created:?}");
            assert_eq!(created.json()["name"], topic_name("orders"));
            let got = api.raw(Method::GET, &path, JSON, "").await;
            assert_eq!(got.status, 200, "{got:?}");
            assert_eq!(got.json()["name"], topic_name("orders"));
        });
    }
}

/// A publish whose rows the store has queued is delivered even if its
/// request is dropped before the commit (a client's deadline, a closed
/// connection): enqueuing does not depend on the request still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_dropped_after_it_was_queued_is_still_delivered() {
    use std::future::Future as _;
    use std::task::Poll;

    let dir = tempfile::tempdir().unwrap();
    let config = labrelay_broker::BrokerConfig::new(dir.path(), "127.0.0.1:1".parse().unwrap());
    let broker = labrelay_broker::Broker::open(config).unwrap();
    let topic = "projects/p/topics/reports";
    let subscription = "projects/p/subscriptions/reader";
    broker
        .create_topic(labrelay_broker::pb::Topic {
            name: topic.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    broker
        .create_subscription(labrelay_broker::pb::Subscription {
            name: subscription.into(),
            topic: topic.into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let message = labrelay_broker::pb::PubsubMessage {
        data: b"kept".to_vec(),
        ..Default::default()
    };
    let mut publish = Box::pin(broker.publish(topic, vec![message]));
    // One poll hands the rows to the store's writer and then waits for the
    // commit (an fsync away); the caller gives up there.
    let polled = std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await;
    assert!(polled.is_pending(), "the commit was still in flight");
    drop(publish);

    let received = broker.pull(subscription, 10, false).await.unwrap();
    assert_eq!(received.len(), 1, "delivered without a restart");
    assert_eq!(received[0].message.as_ref().unwrap().data, b"kept");
    broker.close().await;
}
