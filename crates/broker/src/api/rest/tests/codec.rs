//! The proto3 JSON mapping, through the routes: names in camelCase or
//! snake_case, defaults left out, enums, durations, int32, bytes.

use super::*;

#[tokio::test]
async fn create_topic_takes_camel_or_snake_case_and_the_name_from_the_path() {
    let (fake, app) = app();
    for body in [
        json!({"labels": {"team": "lab"}, "messageRetentionDuration": "600s", "kmsKeyName": "k"}),
        json!({"labels": {"team": "lab"}, "message_retention_duration": "600s", "kms_key_name": "k"}),
        json!({"name": "projects/p/topics/t", "labels": {"team": "lab"},
               "messageRetentionDuration": "600.000s", "kmsKeyName": "k"}),
    ] {
        let uri = "/v1/projects/p/topics/t?$alt=json;enum-encoding=int";
        let (status, answer) = send(&app, "PUT", uri, body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let want = pb::Topic {
            name: "projects/p/topics/t".into(),
            labels: HashMap::from([("team".into(), "lab".into())]),
            message_retention_duration: Some(seconds(600, 0)),
            kms_key_name: "k".into(),
            ..Default::default()
        };
        assert_eq!(fake.last::<pb::Topic>(), want);
        let want = json!({"name": "projects/p/topics/t", "labels": {"team": "lab"},
                          "messageRetentionDuration": "600s", "kmsKeyName": "k"});
        assert_eq!(answer, want);
    }
}

#[tokio::test]
async fn output_leaves_out_defaults_and_names_enums() {
    let (fake, app) = app();
    let (status, answer) = send(&app, "GET", "/v1/projects/p/topics/t", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        json!({"name": "projects/p/topics/t", "state": "ACTIVE"})
    );
    assert_eq!(
        fake.last::<pb::GetTopicRequest>().topic,
        "projects/p/topics/t"
    );

    let (_, answer) = send(&app, "GET", "/v1/projects/p/subscriptions/s", Body::empty()).await;
    let want = json!({"name": "projects/p/subscriptions/s", "topic": "projects/p/topics/t",
                      "pushConfig": {}, "ackDeadlineSeconds": 10});
    assert_eq!(answer, want);
}

#[tokio::test]
async fn enums_are_accepted_by_name_or_number() {
    let (fake, app) = app();
    for state in [json!("ACTIVE"), json!(1)] {
        let body = json!({"state": state}).to_string();
        let (status, answer) = send(&app, "PUT", "/v1/projects/p/topics/t", body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            fake.last::<pb::Topic>().state,
            pb::topic::State::Active as i32
        );
        assert_eq!(answer["state"], "ACTIVE");
    }
    let body = json!({"state": "SLEEPY"}).to_string();
    let (status, answer) = send(&app, "PUT", "/v1/projects/p/topics/t", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&answer).contains("SLEEPY"), "{answer}");
}

#[tokio::test]
async fn create_subscription_maps_every_supported_field_both_ways() {
    let (fake, app) = app();
    let camel = json!({
        "topic": "projects/p/topics/t",
        "pushConfig": {
            "pushEndpoint": "http://127.0.0.1:8081/",
            "attributes": {"x-goog-version": "v1"},
            "oidcToken": {"serviceAccountEmail": "sa@p.iam.gserviceaccount.com", "audience": "aud"},
            "noWrapper": {"writeMetadata": true}
        },
        "ackDeadlineSeconds": 20,
        "retainAckedMessages": true,
        "messageRetentionDuration": "86400s",
        "labels": {"env": "test"},
        "enableMessageOrdering": true,
        "expirationPolicy": {"ttl": "2678400s"},
        "filter": "attributes:reportId",
        "deadLetterPolicy": {"deadLetterTopic": "projects/p/topics/dl", "maxDeliveryAttempts": 5},
        "retryPolicy": {"minimumBackoff": "10s", "maximumBackoff": "600s"},
        "detached": true,
        "enableExactlyOnceDelivery": true,
        "topicMessageRetentionDuration": "604800s",
        "state": "ACTIVE"
    });
    let snake = json!({
        "topic": "projects/p/topics/t",
        "push_config": {
            "push_endpoint": "http://127.0.0.1:8081/",
            "attributes": {"x-goog-version": "v1"},
            "oidc_token": {"service_account_email": "sa@p.iam.gserviceaccount.com", "audience": "aud"},
            "no_wrapper": {"write_metadata": true}
        },
        "ack_deadline_seconds": "20",
        "retain_acked_messages": true,
        "message_retention_duration": "86400s",
        "labels": {"env": "test"},
        "enable_message_ordering": true,
        "expiration_policy": {"ttl": "2678400s"},
        "filter": "attributes:reportId",
        "dead_letter_policy": {"dead_letter_topic": "projects/p/topics/dl", "max_delivery_attempts": "5"},
        "retry_policy": {"minimum_backoff": "10s", "maximum_backoff": "600s"},
        "detached": true,
        "enable_exactly_once_delivery": true,
        "topic_message_retention_duration": "604800s",
        "state": 1
    });
    let want = pb::Subscription {
        name: "projects/p/subscriptions/s".into(),
        topic: "projects/p/topics/t".into(),
        push_config: Some(pb::PushConfig {
            push_endpoint: "http://127.0.0.1:8081/".into(),
            attributes: HashMap::from([("x-goog-version".into(), "v1".into())]),
            authentication_method: Some(pb::push_config::AuthenticationMethod::OidcToken(
                pb::push_config::OidcToken {
                    service_account_email: "sa@p.iam.gserviceaccount.com".into(),
                    audience: "aud".into(),
                },
            )),
            wrapper: Some(pb::push_config::Wrapper::NoWrapper(
                pb::push_config::NoWrapper {
                    write_metadata: true,
                },
            )),
        }),
        ack_deadline_seconds: 20,
        retain_acked_messages: true,
        message_retention_duration: Some(seconds(86_400, 0)),
        labels: HashMap::from([("env".into(), "test".into())]),
        enable_message_ordering: true,
        expiration_policy: Some(pb::ExpirationPolicy {
            ttl: Some(seconds(2_678_400, 0)),
        }),
        filter: "attributes:reportId".into(),
        dead_letter_policy: Some(pb::DeadLetterPolicy {
            dead_letter_topic: "projects/p/topics/dl".into(),
            max_delivery_attempts: 5,
        }),
        retry_policy: Some(pb::RetryPolicy {
            minimum_backoff: Some(seconds(10, 0)),
            maximum_backoff: Some(seconds(600, 0)),
        }),
        detached: true,
        enable_exactly_once_delivery: true,
        topic_message_retention_duration: Some(seconds(604_800, 0)),
        state: pb::subscription::State::Active as i32,
        ..Default::default()
    };
    let mut echoed = camel.clone();
    echoed["name"] = json!("projects/p/subscriptions/s");
    for body in [camel, snake] {
        let (status, answer) = send(
            &app,
            "PUT",
            "/v1/projects/p/subscriptions/s",
            body.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(fake.last::<pb::Subscription>(), want);
        assert_eq!(answer, echoed);
    }
}

#[tokio::test]
async fn push_wrappers_and_empty_messages_round_trip() {
    let (fake, app) = app();
    let body = json!({"topic": "projects/p/topics/t", "pushConfig": {"pushEndpoint": "http://h/", "pubsubWrapper": {}},
                      "expirationPolicy": {}});
    let (status, answer) = send(
        &app,
        "PUT",
        "/v1/projects/p/subscriptions/s",
        body.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let got = fake.last::<pb::Subscription>();
    assert_eq!(
        got.push_config.unwrap().wrapper,
        Some(pb::push_config::Wrapper::PubsubWrapper(
            pb::push_config::PubsubWrapper {}
        ))
    );
    assert_eq!(
        got.expiration_policy,
        Some(pb::ExpirationPolicy { ttl: None })
    );
    assert_eq!(
        answer["pushConfig"],
        json!({"pushEndpoint": "http://h/", "pubsubWrapper": {}})
    );
    assert_eq!(answer["expirationPolicy"], json!({}));

    let body = json!({"pushConfig": {"pubsubWrapper": {}, "noWrapper": {}}}).to_string();
    let (status, answer) = send(&app, "PUT", "/v1/projects/p/subscriptions/s", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_message(&answer).contains("both pubsubWrapper and noWrapper"),
        "{answer}"
    );
}

#[tokio::test]
async fn durations_parse_and_print_in_proto3_form() {
    let (fake, app) = app();
    for (input, parsed, printed) in [
        ("600s", seconds(600, 0), "600s"),
        ("10.5s", seconds(10, 500_000_000), "10.500s"),
        ("0.000001s", seconds(0, 1_000), "0.000001s"),
        ("1.000000001s", seconds(1, 1), "1.000000001s"),
        ("-1.5s", seconds(-1, -500_000_000), "-1.500s"),
        (
            "315576000000s",
            seconds(315_576_000_000, 0),
            "315576000000s",
        ),
    ] {
        let body = json!({"messageRetentionDuration": input}).to_string();
        let (status, answer) = send(&app, "PUT", "/v1/projects/p/topics/t", body).await;
        assert_eq!(status, StatusCode::OK, "{input}: {answer}");
        assert_eq!(
            fake.last::<pb::Topic>().message_retention_duration,
            Some(parsed),
            "{input}"
        );
        assert_eq!(answer["messageRetentionDuration"], printed, "{input}");
    }
    for bad in [
        json!("10m"),
        json!("600"),
        json!("s"),
        json!("1.5.5s"),
        json!("315576000001s"),
        json!("1.0000000001s"),
        json!(600),
        json!("99999999999999999999s"),
    ] {
        let body = json!({"messageRetentionDuration": bad}).to_string();
        let (status, answer) = send(&app, "PUT", "/v1/projects/p/topics/t", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT", "{bad}");
    }
}

#[tokio::test]
async fn int32_fields_take_numbers_or_strings_within_range() {
    let (fake, app) = app();
    for (value, want) in [
        (json!(20), Some(20)),
        (json!("20"), Some(20)),
        (json!(20.0), Some(20)),
        (json!(-1), Some(-1)),
        (json!(2_147_483_648_u64), None),
        (json!("x"), None),
        (json!(1.5), None),
        (json!(true), None),
    ] {
        let body = json!({"ackIds": ["a"], "ackDeadlineSeconds": value}).to_string();
        let (status, answer) = send(
            &app,
            "POST",
            "/v1/projects/p/subscriptions/s:modifyAckDeadline",
            body,
        )
        .await;
        match want {
            Some(seconds) => {
                assert_eq!(status, StatusCode::OK, "{value}: {answer}");
                assert_eq!(answer, json!({}));
                let got = fake.last::<pb::ModifyAckDeadlineRequest>();
                assert_eq!(
                    (got.subscription.as_str(), got.ack_deadline_seconds),
                    ("projects/p/subscriptions/s", seconds)
                );
                assert_eq!(got.ack_ids, ["a"]);
            }
            None => assert_eq!(status, StatusCode::BAD_REQUEST, "{value}"),
        }
    }
}

#[tokio::test]
async fn publish_decodes_base64_with_the_method_plain_or_percent_encoded() {
    let (fake, app) = app();
    for uri in [
        "/v1/projects/p/topics/t:publish",
        "/v1/projects/p/topics/t%3Apublish",
        "/v1/projects/p/topics/t%3apublish?$alt=json;enum-encoding=int",
    ] {
        let body = json!({"messages": [
            {"data": "eyJpZCI6IDEyfQ==", "attributes": {"reportId": "12"}, "orderingKey": "k"},
            {"data": "eyJpZCI6IDEyfQ", "ordering_key": "k"},
            {"data": "-_8="},
            {"attributes": {"only": "attributes"}}
        ]});
        let (status, answer) = send(&app, "POST", uri, body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {answer}");
        assert_eq!(answer, json!({"messageIds": ["1", "2", "3", "4"]}));
        let got = fake.last::<pb::PublishRequest>();
        assert_eq!(got.topic, "projects/p/topics/t");
        let data: Vec<&[u8]> = got.messages.iter().map(|m| m.data.as_slice()).collect();
        assert_eq!(
            data,
            [
                b"{\"id\": 12}".as_slice(),
                b"{\"id\": 12}",
                &[0xfb, 0xff],
                b""
            ]
        );
        assert_eq!(got.messages[0].attributes["reportId"], "12");
        assert_eq!(
            (
                got.messages[0].ordering_key.as_str(),
                got.messages[1].ordering_key.as_str()
            ),
            ("k", "k")
        );
    }
    let body = json!({"messages": [{"data": "not base64!"}]}).to_string();
    let (status, answer) = send(&app, "POST", "/v1/projects/p/topics/t:publish", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_message(&answer).contains("invalid base64"),
        "{answer}"
    );
}

#[tokio::test]
async fn pull_prints_messages_as_proto3_json() {
    let (fake, app) = app();
    let body = json!({"maxMessages": 10, "returnImmediately": true}).to_string();
    let (status, answer) = send(&app, "POST", "/v1/projects/p/subscriptions/s:pull", body).await;
    assert_eq!(status, StatusCode::OK);
    let got = fake.last::<pb::PullRequest>();
    assert_eq!(
        (got.subscription.as_str(), got.max_messages),
        ("projects/p/subscriptions/s", 10)
    );
    #[expect(deprecated, reason = "the field is still on the wire")]
    let return_immediately = got.return_immediately;
    assert!(return_immediately);
    let want = json!({"receivedMessages": [
        {"ackId": "a1", "message": {"data": "eyJpZCI6IDEyfQ==", "attributes": {"reportId": "12"},
                                    "messageId": "1", "publishTime": "2024-05-01T12:00:00.500Z"}},
        {"ackId": "a2", "message": {"messageId": "2", "publishTime": "2024-05-01T12:00:01Z", "orderingKey": "k"},
         "deliveryAttempt": 3}
    ]});
    assert_eq!(answer, want);
}
