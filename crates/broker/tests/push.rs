//! Push delivery against real HTTP receivers on port 0 (issue 2, items 6, 7
//! and 8): the wrapped and unwrapped bodies, which statuses acknowledge,
//! retries and their spacing, dead letters, OIDC tokens, switching between
//! push and pull, and the slow-start window.
//!
//! 102 is not tested: hyper (under both axum and reqwest) treats a 1xx as an
//! interim answer, so a receiver cannot send it as the final status and the
//! broker's client would keep waiting for one.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::future::join_all;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use labrelay_broker::pb;
use labrelay_broker::pb::push_config::{AuthenticationMethod, NoWrapper, OidcToken, Wrapper};
use serde_json::{Value, json};

use common::{
    Api, PushReceiver, PushRequest, TestBroker, both, closed_port_url, data_of, rfc3339_utc, run,
    spawn_broker_with, subscription_name, topic_name,
};

both!(
    wrapped_envelope_carries_every_field,
    success_statuses_acknowledge_once,
    failure_statuses_are_retried_promptly,
    redirects_are_failures_and_never_followed,
    pushes_are_http2_where_the_endpoint_speaks_it_and_http1_elsewhere,
    refused_connections_are_retried_and_dead_lettered,
    retry_policy_spaces_redeliveries,
    dead_letter_after_max_delivery_attempts,
    unwrapped_pushes_carry_the_raw_data_and_metadata_headers,
    oidc_tokens_verify_against_the_brokers_jwks,
    modify_push_config_switches_between_push_and_pull,
    slow_start_grows_the_window_after_successes,
    an_ordering_key_is_pushed_one_message_at_a_time,
);

const SERVICE_ACCOUNT: &str = "pubsub-cloud-run-invoker@p.iam.gserviceaccount.com";

fn push_to(url: &str) -> pb::PushConfig {
    pb::PushConfig {
        push_endpoint: url.to_owned(),
        ..Default::default()
    }
}

fn dead_letter_to(topic_id: &str) -> Option<pb::DeadLetterPolicy> {
    Some(pb::DeadLetterPolicy {
        dead_letter_topic: topic_name(topic_id),
        max_delivery_attempts: 5,
    })
}

fn keys(value: &Value) -> HashSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(items: &[&'a str]) -> HashSet<&'a str> {
    items.iter().copied().collect()
}

/// Asserts that `request` is a wrapped push and returns its body.
#[track_caller]
fn envelope(request: &PushRequest) -> Value {
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/push");
    let content_type = request.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}"
    );
    request.json()
}

async fn wrapped_envelope_carries_every_field(_: &TestBroker, api: &impl Api) {
    let mut receiver = PushReceiver::start().await;
    api.topic("orders").await;
    api.subscription("push", "orders", |s| {
        s.push_config = Some(push_to(&receiver.url()))
    })
    .await;
    let data = br#"{"id": 12, "pet": "M\u00e4x"}"#.to_vec();
    let full = pb::PubsubMessage {
        data: data.clone(),
        attributes: [("reportId".to_owned(), "12".to_owned())].into(),
        ordering_key: "pet-7".into(),
        ..Default::default()
    };
    let before = SystemTime::now();
    let ids = api
        .publish(&topic_name("orders"), vec![full])
        .await
        .unwrap();

    let body = envelope(&receiver.next().await);
    assert_eq!(keys(&body), set(&["message", "subscription"]), "{body}");
    assert_eq!(body["subscription"], subscription_name("push"));
    let m = &body["message"];
    assert_eq!(
        keys(m),
        set(&[
            "data",
            "attributes",
            "messageId",
            "message_id",
            "publishTime",
            "publish_time",
            "orderingKey"
        ]),
        "{m}"
    );
    let decoded = BASE64
        .decode(m["data"].as_str().expect("data is a string"))
        .expect("data is standard base64");
    assert_eq!(decoded, data);
    assert_eq!(m["attributes"], json!({"reportId": "12"}));
    assert_eq!(m["messageId"], ids[0].as_str());
    assert_eq!(m["message_id"], ids[0].as_str());
    let published = rfc3339_utc(m["publishTime"].as_str().expect("publishTime is a string"));
    assert_eq!(m["publish_time"], m["publishTime"]);
    let published = SystemTime::try_from(published).unwrap();
    let skew = Duration::from_secs(2);
    assert!(published + skew >= before && published <= SystemTime::now() + skew);
    assert_eq!(m["orderingKey"], "pet-7");

    // The minimal envelope: no ordering key, no attributes, no attempt count.
    let ids = api.publish_data("orders", &["plain"]).await;
    let body = envelope(&receiver.next().await);
    assert_eq!(keys(&body), set(&["message", "subscription"]), "{body}");
    let m = &body["message"];
    assert_eq!(m["messageId"], ids[0].as_str());
    assert_eq!(m["data"], BASE64.encode("plain"));
    assert!(m.get("orderingKey").is_none(), "{m}");
    assert!(m.get("attributes").is_none_or(|a| a == &json!({})), "{m}");
    receiver.assert_quiet(Duration::from_millis(500)).await;
}

async fn success_statuses_acknowledge_once(_: &TestBroker, api: &impl Api) {
    api.topic("orders").await;
    let mut receivers = Vec::new();
    for status in [200, 201, 202, 204] {
        let receiver = PushReceiver::answering(status).await;
        api.subscription(&format!("ack-{status}"), "orders", |s| {
            s.push_config = Some(push_to(&receiver.url()))
        })
        .await;
        receivers.push((status, receiver));
    }
    let ids = &api.publish_data("orders", &["report"]).await;
    join_all(receivers.iter_mut().map(|(status, receiver)| async move {
        let request = receiver.next().await;
        assert_eq!(request.message_id(), ids[0], "status {status}");
        // A nack would be retried within a few hundred milliseconds.
        receiver.assert_quiet(Duration::from_millis(1200)).await;
    }))
    .await;
}

/// Topic `orders` with one push subscription per status, `{prefix}-{status}`,
/// each to a receiver of its own that answers its first push with that
/// status and 204 after.
async fn first_answered_with(
    api: &impl Api,
    prefix: &str,
    statuses: &[u16],
) -> Vec<(u16, PushReceiver)> {
    api.topic("orders").await;
    let mut receivers = Vec::new();
    for &status in statuses {
        let receiver = PushReceiver::start().await;
        receiver.then_answer([status]);
        api.subscription(&format!("{prefix}-{status}"), "orders", |s| {
            s.push_config = Some(push_to(&receiver.url()))
        })
        .await;
        receivers.push((status, receiver));
    }
    receivers
}

async fn failure_statuses_are_retried_promptly(_: &TestBroker, api: &impl Api) {
    let mut receivers = first_answered_with(api, "nack", &[203, 400, 404, 429, 500, 503]).await;
    let ids = &api.publish_data("orders", &["report"]).await;
    join_all(receivers.iter_mut().map(|(status, receiver)| async move {
        let [failed, retried] = <[PushRequest; 2]>::try_from(receiver.take(2).await).unwrap();
        assert_eq!(failed.status, *status);
        assert_eq!(failed.message_id(), ids[0]);
        assert_eq!(
            retried.message_id(),
            ids[0],
            "after {status}, the same message"
        );
        let gap = retried.at - failed.at;
        assert!(
            gap < Duration::from_secs(2),
            "without a retry policy, {status} is retried promptly (after {gap:?})"
        );
        receiver.assert_quiet(Duration::from_millis(700)).await;
    }))
    .await;
}

/// A redirect is an answer other than 102/200/201/202/204, so for Pub/Sub
/// a negative acknowledgement: it is never followed, and the message is
/// pushed again to the same endpoint. A client that followed a 301, 302 or
/// 303 would fetch the new location with a GET, and a 200 there would
/// acknowledge a message nobody received.
async fn redirects_are_failures_and_never_followed(_: &TestBroker, api: &impl Api) {
    let mut receivers = first_answered_with(api, "redirect", &[301, 302, 303, 307, 308]).await;
    let ids = &api.publish_data("orders", &["report"]).await;
    join_all(receivers.iter_mut().map(|(status, receiver)| async move {
        let [redirected, retried] = <[PushRequest; 2]>::try_from(receiver.take(2).await).unwrap();
        assert_eq!(redirected.status, *status);
        for request in [&redirected, &retried] {
            assert_eq!(
                (request.method.as_str(), request.path.as_str()),
                ("POST", "/push"),
                "after {status}"
            );
            assert_eq!(request.message_id(), ids[0]);
        }
        receiver.assert_quiet(Duration::from_millis(700)).await;
    }))
    .await;
}

/// Cleartext endpoints get HTTP/2 (h2c) when they speak it. One that speaks
/// only HTTP/1.1 gets every push over HTTP/1.1, each once and each as a
/// first delivery: the HTTP/2 attempt it turned away was not a failed
/// delivery. Every push carries Pub/Sub's user agent and its length.
async fn pushes_are_http2_where_the_endpoint_speaks_it_and_http1_elsewhere(
    _: &TestBroker,
    api: &impl Api,
) {
    api.topic("orders").await;
    api.topic("dead").await;
    let mut modern = PushReceiver::start().await;
    let mut old = PushReceiver::http1_only().await;
    for (name, receiver) in [("modern", &modern), ("old", &old)] {
        api.subscription(name, "orders", |s| {
            s.push_config = Some(push_to(&receiver.url()));
            // Pushes then carry their delivery attempt.
            s.dead_letter_policy = dead_letter_to("dead");
        })
        .await;
    }
    let ids: HashSet<String> = api
        .publish_data("orders", &["one", "two", "three"])
        .await
        .into_iter()
        .collect();
    for (receiver, version) in [
        (&mut modern, axum::http::Version::HTTP_2),
        (&mut old, axum::http::Version::HTTP_11),
    ] {
        let pushes = receiver.take(3).await;
        for push in &pushes {
            assert_eq!(push.version, version);
            assert_eq!(envelope(push)["deliveryAttempt"], 1);
            // The same headers whichever client sent it: the first push to
            // an endpoint probes for h2c through reqwest, later ones go
            // through the broker's own h2c connection.
            assert!(
                push.header("user-agent")
                    .is_some_and(|ua| ua.starts_with("APIs-Google")),
                "{:?}",
                push.headers
            );
            assert_eq!(push.header("content-type"), Some("application/json"));
            assert_eq!(
                push.header("content-length"),
                Some(push.body.len().to_string().as_str())
            );
        }
        let got: HashSet<String> = pushes.iter().map(PushRequest::message_id).collect();
        assert_eq!(got, ids, "over {version:?}");
        receiver.assert_quiet(Duration::from_millis(700)).await;
    }
}

async fn refused_connections_are_retried_and_dead_lettered(_: &TestBroker, api: &impl Api) {
    api.topic("orders").await;
    api.topic("dead").await;
    api.subscription("dead-sub", "dead", |_| {}).await;
    let nowhere = closed_port_url();
    api.subscription("dead-lettered", "orders", |s| {
        s.push_config = Some(push_to(&nowhere));
        s.dead_letter_policy = dead_letter_to("dead");
    })
    .await;
    api.subscription("retried", "orders", |s| {
        s.push_config = Some(push_to(&nowhere))
    })
    .await;
    let ids = api.publish_data("orders", &["report"]).await;

    // Five refused connections count as five failed attempts...
    let dead = api.pull_n("dead-sub", 1).await;
    let attributes = &dead[0].message.as_ref().unwrap().attributes;
    assert_eq!(
        attributes
            .get("CloudPubSubDeadLetterSourceDeliveryCount")
            .map(String::as_str),
        Some("5"),
        "{attributes:?}"
    );
    assert_eq!(
        attributes
            .get("CloudPubSubDeadLetterSourceSubscription")
            .map(String::as_str),
        Some("dead-lettered")
    );

    // ...and without a dead-letter policy the message waits for the endpoint.
    let mut receiver = PushReceiver::start().await;
    api.modify_push_config(&subscription_name("retried"), push_to(&receiver.url()))
        .await
        .unwrap();
    assert_eq!(receiver.next().await.message_id(), ids[0]);
    receiver.assert_quiet(Duration::from_millis(500)).await;
}

async fn retry_policy_spaces_redeliveries(_: &TestBroker, api: &impl Api) {
    let mut receiver = PushReceiver::start().await;
    receiver.then_answer([500, 500]);
    api.topic("orders").await;
    api.subscription("push", "orders", |s| {
        s.push_config = Some(push_to(&receiver.url()));
        s.retry_policy = Some(pb::RetryPolicy {
            minimum_backoff: common::secs(1),
            maximum_backoff: common::secs(2),
        });
    })
    .await;
    let ids = api.publish_data("orders", &["report"]).await;

    let requests = receiver.take(3).await;
    assert!(requests.iter().all(|r| r.message_id() == ids[0]));
    let first_gap = requests[1].at - requests[0].at;
    let second_gap = requests[2].at - requests[1].at;
    assert!(
        first_gap >= Duration::from_millis(950) && first_gap < Duration::from_millis(2500),
        "the first retry waits the 1 s minimum backoff (waited {first_gap:?})"
    );
    assert!(
        second_gap >= Duration::from_millis(1450) && second_gap < Duration::from_millis(3000),
        "the second retry waits about twice as long, capped at 2 s (waited {second_gap:?})"
    );
    receiver.assert_quiet(Duration::from_millis(500)).await;
}

async fn dead_letter_after_max_delivery_attempts(_: &TestBroker, api: &impl Api) {
    let mut receiver = PushReceiver::answering(500).await;
    api.topic("orders").await;
    api.topic("dead").await;
    api.subscription("dead-sub", "dead", |_| {}).await;
    api.subscription("push", "orders", |s| {
        s.push_config = Some(push_to(&receiver.url()));
        s.dead_letter_policy = dead_letter_to("dead");
    })
    .await;
    let message = pb::PubsubMessage {
        data: b"poison".to_vec(),
        attributes: [("reportId".to_owned(), "12".to_owned())].into(),
        ..Default::default()
    };
    let ids = api
        .publish(&topic_name("orders"), vec![message])
        .await
        .unwrap();

    let requests = receiver.take(5).await;
    for (attempt, request) in (1..).zip(&requests) {
        let body = envelope(request);
        assert_eq!(body["deliveryAttempt"], attempt, "{body}");
        assert_eq!(body["message"]["messageId"], ids[0].as_str());
    }
    let dead = api.pull_n("dead-sub", 1).await;
    let m = dead[0].message.as_ref().unwrap();
    assert_eq!(data_of(&dead), ["poison"]);
    let attribute = |key: &str| m.attributes.get(key).map(String::as_str);
    assert_eq!(attribute("reportId"), Some("12"));
    assert_eq!(
        attribute("CloudPubSubDeadLetterSourceDeliveryCount"),
        Some("5")
    );
    assert_eq!(
        attribute("CloudPubSubDeadLetterSourceSubscription"),
        Some("push")
    );
    assert_eq!(
        attribute("CloudPubSubDeadLetterSourceSubscriptionProject"),
        Some("p")
    );
    let source_time = attribute("CloudPubSubDeadLetterSourceTopicPublishTime")
        .expect("CloudPubSubDeadLetterSourceTopicPublishTime");
    assert_eq!(
        rfc3339_utc(source_time),
        rfc3339_utc(
            envelope(&requests[0])["message"]["publishTime"]
                .as_str()
                .unwrap()
        )
    );
    receiver.assert_quiet(Duration::from_millis(1500)).await;
}

async fn unwrapped_pushes_carry_the_raw_data_and_metadata_headers(_: &TestBroker, api: &impl Api) {
    let mut bare = PushReceiver::start().await;
    let mut with_metadata = PushReceiver::start().await;
    api.topic("orders").await;
    let unwrapped = |url: &str, write_metadata: bool| pb::PushConfig {
        push_endpoint: url.to_owned(),
        wrapper: Some(Wrapper::NoWrapper(NoWrapper { write_metadata })),
        ..Default::default()
    };
    api.subscription("bare", "orders", |s| {
        s.push_config = Some(unwrapped(&bare.url(), false))
    })
    .await;
    api.subscription("meta", "orders", |s| {
        s.push_config = Some(unwrapped(&with_metadata.url(), true))
    })
    .await;
    let message = pb::PubsubMessage {
        data: br#"{"id": 12}"#.to_vec(),
        attributes: [
            ("color".to_owned(), "blue".to_owned()),
            // Attributes that would steer the request are never headers.
            ("Content-Type".to_owned(), "text/html".to_owned()),
            ("Authorization".to_owned(), "Bearer chosen".to_owned()),
            ("Host".to_owned(), "metadata.google.internal".to_owned()),
            ("Transfer-Encoding".to_owned(), "chunked".to_owned()),
            ("Connection".to_owned(), "upgrade".to_owned()),
            ("x-goog-pubsub-message-id".to_owned(), "forged".to_owned()),
        ]
        .into(),
        ordering_key: "pet-7".into(),
        ..Default::default()
    };
    let ids = api
        .publish(&topic_name("orders"), vec![message])
        .await
        .unwrap();

    let request = bare.next().await;
    assert_eq!(request.method, "POST");
    assert_eq!(&request.body[..], br#"{"id": 12}"#);
    let pubsub_headers: Vec<_> = request
        .headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-goog-"))
        .collect();
    assert!(pubsub_headers.is_empty(), "{pubsub_headers:?}");
    assert!(
        request.header("color").is_none(),
        "attributes stay out without writeMetadata"
    );
    assert!(request.header("authorization").is_none());

    let request = with_metadata.next().await;
    assert_eq!(&request.body[..], br#"{"id": 12}"#);
    assert_eq!(
        request.header("x-goog-pubsub-subscription-name"),
        Some(subscription_name("meta").as_str())
    );
    assert_eq!(
        request.header("x-goog-pubsub-message-id"),
        Some(ids[0].as_str())
    );
    rfc3339_utc(
        request
            .header("x-goog-pubsub-publish-time")
            .expect("x-goog-pubsub-publish-time"),
    );
    assert_eq!(request.header("x-goog-pubsub-ordering-key"), Some("pet-7"));
    assert_eq!(request.header("color"), Some("blue"));
    assert_eq!(
        request.header("content-type"),
        Some("application/octet-stream")
    );
    assert!(request.header("authorization").is_none());
    assert!(request.header("transfer-encoding").is_none());
    assert_ne!(request.header("host"), Some("metadata.google.internal"));
    assert_ne!(request.header("connection"), Some("upgrade"));

    bare.assert_quiet(Duration::from_millis(300)).await;
    with_metadata.assert_quiet(Duration::from_millis(300)).await;
}

/// Verifies `token` as a receiver would, with the key the broker publishes
/// for the token's `kid`, and returns its claims.
async fn verify(
    broker: &TestBroker,
    token: &str,
    audience: &str,
) -> jsonwebtoken::errors::Result<Value> {
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", broker.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token)?;
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("the token names its key");
    let jwk = jwks["keys"]
        .as_array()
        .expect("a JWK set")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} is not in the JWKS {jwks}"));
    let key = DecodingKey::from_rsa_components(
        jwk["n"].as_str().expect("n"),
        jwk["e"].as_str().expect("e"),
    )?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[broker.issuer()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    Ok(jsonwebtoken::decode::<Value>(token, &key, &validation)?.claims)
}

fn bearer(request: &PushRequest) -> String {
    request
        .header("authorization")
        .expect("an Authorization header")
        .strip_prefix("Bearer ")
        .expect("a bearer token")
        .to_owned()
}

async fn oidc_tokens_verify_against_the_brokers_jwks(broker: &TestBroker, api: &impl Api) {
    let mut explicit = PushReceiver::start().await;
    let mut implicit = PushReceiver::start().await;
    let mut anonymous = PushReceiver::start().await;
    let oidc = |url: &str, audience: &str| pb::PushConfig {
        push_endpoint: url.to_owned(),
        authentication_method: Some(AuthenticationMethod::OidcToken(OidcToken {
            service_account_email: SERVICE_ACCOUNT.into(),
            audience: audience.into(),
        })),
        ..Default::default()
    };
    api.topic("orders").await;
    let audience = "https://email-service.example";
    api.subscription("explicit", "orders", |s| {
        s.push_config = Some(oidc(&explicit.url(), audience))
    })
    .await;
    api.subscription("implicit", "orders", |s| {
        s.push_config = Some(oidc(&implicit.url(), ""))
    })
    .await;
    api.subscription("anonymous", "orders", |s| {
        s.push_config = Some(push_to(&anonymous.url()))
    })
    .await;
    api.publish_data("orders", &["report"]).await;

    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let implicit_audience = implicit.url();
    for (receiver, audience) in [
        (&mut explicit, audience.to_owned()),
        (&mut implicit, implicit_audience),
    ] {
        let token = bearer(&receiver.next().await);
        let claims = verify(broker, &token, &audience)
            .await
            .unwrap_or_else(|e| panic!("the token does not verify for {audience}: {e}"));
        assert_eq!(claims["iss"], broker.issuer());
        assert_eq!(claims["aud"], audience.as_str());
        assert_eq!(claims["email"], SERVICE_ACCOUNT);
        assert_eq!(claims["email_verified"], true);
        assert!(
            claims["sub"].as_str().is_some_and(|s| !s.is_empty()),
            "{claims}"
        );
        let iat = claims["iat"].as_u64().expect("iat");
        let exp = claims["exp"].as_u64().expect("exp");
        assert_eq!(exp - iat, 3600);
        assert!(
            iat.abs_diff(now) <= 10,
            "iat {iat} is not about now ({now})"
        );
        assert!(
            verify(broker, &token, "https://someone-else.example")
                .await
                .is_err(),
            "a token is only good for its audience"
        );
    }
    let request = anonymous.next().await;
    assert!(
        request.header("authorization").is_none(),
        "no oidcToken, no token"
    );

    let discovery: Value =
        reqwest::get(format!("{}/.well-known/openid-configuration", broker.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(discovery["issuer"], broker.issuer());
    assert_eq!(
        discovery["jwks_uri"],
        format!("{}/.well-known/jwks.json", broker.issuer())
    );
}

async fn modify_push_config_switches_between_push_and_pull(_: &TestBroker, api: &impl Api) {
    let mut first = PushReceiver::start().await;
    let mut second = PushReceiver::start().await;
    api.topic("orders").await;
    api.subscription("was-push", "orders", |s| {
        s.push_config = Some(push_to(&first.url()))
    })
    .await;
    api.subscription("was-pull", "orders", |_| {}).await;
    let one = api.publish_data("orders", &["one"]).await;
    assert_eq!(first.next().await.message_id(), one[0]);

    api.modify_push_config(&subscription_name("was-push"), pb::PushConfig::default())
        .await
        .unwrap();
    api.modify_push_config(&subscription_name("was-pull"), push_to(&second.url()))
        .await
        .unwrap();
    let now_pull = api
        .get_subscription(&subscription_name("was-push"))
        .await
        .unwrap();
    assert!(
        now_pull
            .push_config
            .as_ref()
            .is_none_or(|p| p.push_endpoint.is_empty()),
        "{:?}",
        now_pull.push_config
    );
    let now_push = api
        .get_subscription(&subscription_name("was-pull"))
        .await
        .unwrap();
    assert_eq!(now_push.push_config, Some(push_to(&second.url())));

    // The backlog of the former pull subscription is pushed.
    assert_eq!(second.next().await.message_id(), one[0]);

    let two = api.publish_data("orders", &["two"]).await;
    let pulled = api.pull_n("was-push", 1).await;
    assert_eq!(pulled[0].message.as_ref().unwrap().message_id, two[0]);
    assert_eq!(second.next().await.message_id(), two[0]);
    first.assert_quiet(Duration::from_millis(700)).await;
    second.assert_quiet(Duration::from_millis(300)).await;
}

/// Held requests count as in flight; the receiver sees exactly as many at
/// once as the broker's window allows.
async fn slow_start_grows_the_window_after_successes(_: &TestBroker, api: &impl Api) {
    let mut receiver = PushReceiver::gated().await;
    api.topic("orders").await;
    api.subscription("push", "orders", |s| {
        s.push_config = Some(push_to(&receiver.url()))
    })
    .await;
    let data: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let data: Vec<&str> = data.iter().map(String::as_str).collect();
    let ids = api.publish_data("orders", &data).await;

    let mut seen = Vec::new();
    let quiet = Duration::from_millis(400);
    // Window 1, then one success makes it 2, two more make it 4.
    for (in_flight, released_before) in [(1, 0), (2, 1), (4, 2)] {
        if released_before > 0 {
            receiver.release(released_before);
        }
        seen.extend(receiver.take(in_flight).await);
        receiver.assert_quiet(quiet).await;
    }
    receiver.release(100);
    seen.extend(receiver.take(3).await);
    let pushed: HashSet<String> = seen.iter().map(PushRequest::message_id).collect();
    assert_eq!(pushed, ids.into_iter().collect(), "every message, once");
    receiver.assert_quiet(Duration::from_millis(300)).await;
}

/// The window never exceeds `max_push_window`.
#[test]
fn push_window_is_capped_by_the_setting() {
    run(async {
        let broker = spawn_broker_with(|config| config.max_push_window = 2).await;
        let api = broker.grpc().await;
        let mut receiver = PushReceiver::gated().await;
        api.topic("orders").await;
        api.subscription("push", "orders", |s| {
            s.push_config = Some(push_to(&receiver.url()))
        })
        .await;
        api.publish_data("orders", &["1", "2", "3", "4", "5", "6", "7"])
            .await;

        let quiet = Duration::from_millis(400);
        receiver.take(1).await;
        receiver.release(1);
        receiver.take(2).await;
        receiver.assert_quiet(quiet).await;
        receiver.release(2);
        receiver.take(2).await;
        receiver.assert_quiet(quiet).await;
        receiver.release(2);
        receiver.take(2).await;
        receiver.release(2);
        receiver.assert_quiet(quiet).await;
    });
}

/// With message ordering, a push subscription has at most one message of a
/// key outstanding, pushes a key's messages in publish order, and keeps the
/// key blocked while a failed push waits for its redelivery.
async fn an_ordering_key_is_pushed_one_message_at_a_time(_: &TestBroker, api: &impl Api) {
    let mut receiver = PushReceiver::gated().await;
    api.topic("ordered").await;
    api.subscription("push", "ordered", |s| {
        s.enable_message_ordering = true;
        s.push_config = Some(push_to(&receiver.url()));
    })
    .await;
    let keyed = |data: &str| pb::PubsubMessage {
        data: data.as_bytes().to_vec(),
        ordering_key: "max".into(),
        ..Default::default()
    };
    // The first push will fail: the same message must come back before the
    // others.
    receiver.then_answer([500]);
    api.publish(
        &topic_name("ordered"),
        vec![keyed("1"), keyed("2"), keyed("3")],
    )
    .await
    .unwrap();
    let data = |r: &PushRequest| {
        r.json()["message"]["orderingKey"]
            .as_str()
            .map(str::to_owned)
    };
    let first = receiver.next().await;
    assert_eq!(data(&first).as_deref(), Some("max"));
    receiver.assert_quiet(Duration::from_millis(400)).await;
    receiver.release(1);
    let mut order = vec![first.message_id()];
    for _ in 0..3 {
        let next = receiver.next().await;
        order.push(next.message_id());
        receiver.release(1);
    }
    assert_eq!(order[0], order[1], "redelivered first");
    let ids: Vec<u64> = order[1..].iter().map(|id| id.parse().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "publish order: {order:?}"
    );
    receiver.assert_quiet(Duration::from_millis(300)).await;
}

#[test]
fn push_endpoints_outside_the_allowlist_are_refused_and_never_pushed() {
    run(async {
        let mut receiver = PushReceiver::start().await;
        let mut broker = spawn_broker_with(|_| {}).await;
        let api = broker.grpc().await;
        api.topic("orders").await;
        api.subscription("push", "orders", |s| {
            s.push_config = Some(push_to(&receiver.url()))
        })
        .await;
        api.publish_data("orders", &["1"]).await;
        receiver.next().await;

        // Restarted with an allowlist that leaves the receiver out: the
        // stored subscription is not pushed to, and no new one can name it.
        let allowed = labrelay_broker::PushEndpoints::parse("127.0.0.1:9").unwrap();
        broker
            .restart_with(|config| config.push_endpoints = allowed)
            .await;
        let api = broker.grpc().await;
        api.publish_data("orders", &["2"]).await;
        receiver.assert_quiet(Duration::from_millis(500)).await;
        for (protocol, refused) in [
            (
                "grpc",
                api.modify_push_config(&subscription_name("push"), push_to(&receiver.url()))
                    .await
                    .unwrap_err(),
            ),
            (
                "rest",
                broker
                    .rest()
                    .create_subscription(pb::Subscription {
                        name: subscription_name("other"),
                        topic: topic_name("orders"),
                        push_config: Some(push_to(&receiver.url())),
                        ..Default::default()
                    })
                    .await
                    .unwrap_err(),
            ),
        ] {
            assert_eq!(refused.code, common::Code::PermissionDenied, "{protocol}");
            assert!(
                refused.message.contains("--allowed-push-endpoints"),
                "{protocol}: {}",
                refused.message
            );
        }

        // Allowed again, the message held back is delivered: nothing lost.
        broker
            .restart_with(|config| config.push_endpoints = labrelay_broker::PushEndpoints::any())
            .await;
        // ("1" may come again first: its ack was not yet stored when the
        // broker stopped.)
        loop {
            let pushed = envelope(&receiver.next().await);
            let data = BASE64
                .decode(pushed["message"]["data"].as_str().unwrap())
                .unwrap();
            if data == b"2" {
                break;
            }
            assert_eq!(data, b"1");
        }
    });
}
