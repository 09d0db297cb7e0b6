//! The REST routes over a stand-in for the gRPC services ([`fake`]):
//! routing, custom methods, bodies, errors as Google's; the JSON mapping
//! itself is in [`codec`].

use std::collections::HashMap;

use axum::body::Body;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;

mod codec;
mod fake;

use fake::Fake;

fn topic(name: &str) -> pb::Topic {
    pb::Topic {
        name: name.into(),
        state: pb::topic::State::Active as i32,
        ..Default::default()
    }
}

fn at(seconds: i64, nanos: i32) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos }
}

fn seconds(seconds: i64, nanos: i32) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos }
}

fn app() -> (Fake, Router) {
    let fake = Fake::default();
    (fake.clone(), router(fake))
}

/// Sends `body` as `application/json`; answers the status and the body as
/// JSON, or as a JSON string when it is not JSON.
async fn send(app: &Router, method: &str, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let request = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap();
    read(app.clone().oneshot(request).await.unwrap()).await
}

async fn read(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn root_answers_ok_like_the_emulator() {
    let (_, app) = app();
    let response = app
        .oneshot(axum::http::Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(read(response).await.1, json!("Ok"));
}

#[tokio::test]
async fn subscription_methods_reach_the_service_and_answer_empty_objects() {
    let (fake, app) = app();
    let uri = "/v1/projects/p/subscriptions/s:acknowledge";
    let (status, answer) = send(
        &app,
        "POST",
        uri,
        json!({"ack_ids": ["a", "b"]}).to_string(),
    )
    .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_eq!(fake.last::<pb::AcknowledgeRequest>().ack_ids, ["a", "b"]);

    let uri = "/v1/projects/p/subscriptions/s:modifyPushConfig";
    let body = json!({"pushConfig": {"pushEndpoint": "http://h/"}}).to_string();
    let (status, answer) = send(&app, "POST", uri, body).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    let got = fake.last::<pb::ModifyPushConfigRequest>();
    assert_eq!(got.push_config.unwrap().push_endpoint, "http://h/");

    let uri = "/v1/projects/p/subscriptions/s:seek";
    let body = json!({"time": "2024-05-01T12:00:00.5Z"}).to_string();
    let (status, answer) = send(&app, "POST", uri, body).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    let target = fake.last::<pb::SeekRequest>().target;
    assert_eq!(
        target,
        Some(pb::seek_request::Target::Time(at(
            1_714_564_800,
            500_000_000
        )))
    );
    let body =
        json!({"time": "2024-05-01T12:00:00Z", "snapshot": "projects/p/snapshots/x"}).to_string();
    assert_eq!(
        send(&app, "POST", uri, body).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(&app, "POST", uri, r#"{"time": "yesterday"}"#).await.0,
        StatusCode::BAD_REQUEST
    );

    let (status, answer) = send(
        &app,
        "POST",
        "/v1/projects/p/subscriptions/s:detach",
        Body::empty(),
    )
    .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_eq!(
        fake.last::<pb::DetachSubscriptionRequest>().subscription,
        "projects/p/subscriptions/s"
    );

    let (status, answer) = send(
        &app,
        "DELETE",
        "/v1/projects/p/subscriptions/s",
        Body::empty(),
    )
    .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    let (status, answer) = send(&app, "DELETE", "/v1/projects/p/topics/t", Body::empty()).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_eq!(
        fake.last::<pb::DeleteTopicRequest>().topic,
        "projects/p/topics/t"
    );
}

#[tokio::test]
async fn updates_carry_the_mask_as_snake_case_paths() {
    let (fake, app) = app();
    for mask in [
        json!("ackDeadlineSeconds,pushConfig.pushEndpoint"),
        json!("ack_deadline_seconds,push_config.push_endpoint"),
        json!({"paths": "ackDeadlineSeconds,pushConfig.pushEndpoint"}),
        json!({"paths": ["ackDeadlineSeconds", "pushConfig.pushEndpoint"]}),
    ] {
        let body = json!({"subscription": {"ackDeadlineSeconds": 30}, "updateMask": mask});
        let (status, answer) = send(
            &app,
            "PATCH",
            "/v1/projects/p/subscriptions/s",
            body.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{mask}: {answer}");
        let got = fake.last::<pb::UpdateSubscriptionRequest>();
        assert_eq!(
            got.update_mask.unwrap().paths,
            ["ack_deadline_seconds", "push_config.push_endpoint"]
        );
        let subscription = got.subscription.unwrap();
        assert_eq!(
            (
                subscription.name.as_str(),
                subscription.ack_deadline_seconds
            ),
            ("projects/p/subscriptions/s", 30)
        );
    }
    let body = json!({"topic": {"labels": {"a": "b"}}, "update_mask": "labels"}).to_string();
    let (status, answer) = send(&app, "PATCH", "/v1/projects/p/topics/t", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        json!({"name": "projects/p/topics/t", "labels": {"a": "b"}})
    );
    let got = fake.last::<pb::UpdateTopicRequest>();
    assert_eq!(got.update_mask.unwrap().paths, ["labels"]);
    assert_eq!(got.topic.unwrap().name, "projects/p/topics/t");
    let body = json!({"updateMask": 7}).to_string();
    assert_eq!(
        send(&app, "PATCH", "/v1/projects/p/topics/t", body).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn lists_pass_the_page_and_ignore_alt() {
    let (fake, app) = app();
    let uri = "/v1/projects/p/topics?pageSize=2&pageToken=abc&%24alt=json%3Benum-encoding%3Dint";
    let (status, answer) = send(&app, "GET", uri, Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let got = fake.last::<pb::ListTopicsRequest>();
    assert_eq!(
        (got.project.as_str(), got.page_size, got.page_token.as_str()),
        ("projects/p", 2, "abc")
    );
    let want = json!({"topics": [{"name": "projects/p/topics/a", "state": "ACTIVE"},
                                 {"name": "projects/p/topics/b", "state": "ACTIVE"}],
                      "nextPageToken": "next"});
    assert_eq!(answer, want);

    // What Google's Rust admin client sends when the caller sets no page.
    let uri = "/v1/projects/p/subscriptions?pageSize=0&pageToken=&$alt=json;enum-encoding=int";
    let (status, answer) = send(&app, "GET", uri, Body::empty()).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    assert_eq!(fake.last::<pb::ListSubscriptionsRequest>().page_size, 0);

    let (_, answer) = send(
        &app,
        "GET",
        "/v1/projects/p/topics/t/subscriptions?page_size=5",
        Body::empty(),
    )
    .await;
    assert_eq!(
        answer,
        json!({"subscriptions": ["projects/p/subscriptions/s"]})
    );
    assert_eq!(
        fake.last::<pb::ListTopicSubscriptionsRequest>().page_size,
        5
    );
    let (_, answer) = send(
        &app,
        "GET",
        "/v1/projects/p/topics/t/snapshots",
        Body::empty(),
    )
    .await;
    assert_eq!(answer, json!({}));

    let (status, answer) = send(
        &app,
        "GET",
        "/v1/projects/p/topics?pageSize=many",
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&answer).contains("pageSize"), "{answer}");
}

#[tokio::test]
async fn snapshots_are_routed_to_the_snapshot_methods() {
    let (fake, app) = app();
    let body =
        json!({"subscription": "projects/p/subscriptions/s", "labels": {"a": "b"}}).to_string();
    let (status, answer) = send(&app, "PUT", "/v1/projects/p/snapshots/x", body).await;
    assert_eq!(status, StatusCode::OK);
    let want = json!({"name": "projects/p/snapshots/x", "topic": "projects/p/topics/t",
                      "expireTime": "2024-05-08T12:00:00Z", "labels": {"a": "b"}});
    assert_eq!(answer, want);
    let got = fake.last::<pb::CreateSnapshotRequest>();
    assert_eq!(
        (got.name.as_str(), got.subscription.as_str()),
        ("projects/p/snapshots/x", "projects/p/subscriptions/s")
    );

    *fake.fail.lock().unwrap() = Some(Status::unimplemented("Snapshots are not supported"));
    let (status, answer) = send(&app, "GET", "/v1/projects/p/snapshots/x", Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(answer["error"]["status"], "UNIMPLEMENTED");
    assert_eq!(
        fake.last::<pb::GetSnapshotRequest>().snapshot,
        "projects/p/snapshots/x"
    );

    for (method, uri, body) in [
        ("GET", "/v1/projects/p/snapshots?pageSize=1", ""),
        (
            "PATCH",
            "/v1/projects/p/snapshots/x",
            r#"{"snapshot": {"labels": {}}, "updateMask": "labels"}"#,
        ),
        ("DELETE", "/v1/projects/p/snapshots/x", ""),
    ] {
        assert_eq!(
            send(&app, method, uri, body).await.0,
            StatusCode::OK,
            "{method} {uri}"
        );
    }
    assert_eq!(
        fake.last::<pb::DeleteSnapshotRequest>().snapshot,
        "projects/p/snapshots/x"
    );
}

#[tokio::test]
async fn bad_requests_say_what_is_wrong() {
    let (_, app) = app();
    let subscription = "/v1/projects/p/subscriptions/s";
    for (body, needle) in [
        (r#"{"topic": "projects/p/topics/t", "foo": 1}"#, "foo"),
        (
            r#"{"pushConfig": {"pushEndpoint": "http://h/", "bar": 1}}"#,
            "bar",
        ),
        (r#"{"bigqueryConfig": {}}"#, "bigqueryConfig"),
        (r#"{"topic": "#, "EOF"),
        (r#"{"topic": 12}"#, "invalid type"),
        (r#"{"labels": {"a": 1}}"#, "invalid type"),
        ("[]", "must be a JSON object"),
        ("null", "must be a JSON object"),
    ] {
        let (status, answer) = send(&app, "PUT", subscription, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["error"]["code"], 400, "{body}");
        assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT", "{body}");
        let message = error_message(&answer);
        assert!(
            message.starts_with("Invalid JSON payload received."),
            "{message}"
        );
        assert!(message.contains(needle), "{body}: {message}");
    }
}

#[tokio::test]
async fn bodies_must_say_they_are_json_and_empty_ones_need_not() {
    let (fake, app) = app();
    let request = |content_type: Option<&str>, body: &'static str| {
        let mut request = axum::http::Request::put("/v1/projects/p/topics/t");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body)).unwrap()
    };
    for (content_type, body, ok) in [
        (None, "", true),
        (Some("application/json; charset=utf-8"), "{}", true),
        (Some("Application/JSON"), "{}", true),
        (Some("text/plain"), "", true),
        (Some("application/x-www-form-urlencoded"), "labels=a", false),
        (Some("text/plain"), "{}", false),
        // What a page's `fetch(url, {method, mode: "no-cors", body})`
        // sends with a Blob body: no Content-Type at all.
        (None, r#"{"labels": {}}"#, false),
    ] {
        let (status, answer) = read(
            app.clone()
                .oneshot(request(content_type, body))
                .await
                .unwrap(),
        )
        .await;
        if ok {
            assert_eq!(status, StatusCode::OK, "{content_type:?}: {answer}");
            assert_eq!(fake.last::<pb::Topic>().name, "projects/p/topics/t");
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{content_type:?}");
            assert!(
                error_message(&answer).contains("Content-Type must be application/json"),
                "{answer}"
            );
        }
    }
}

#[tokio::test]
async fn ten_megabyte_publishes_pass_and_larger_bodies_are_refused() {
    use base64::Engine;
    let (fake, app) = app();
    let data = vec![7u8; 10 * 1024 * 1024];
    let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
    let body = format!(r#"{{"messages": [{{"data": "{encoded}"}}]}}"#);
    let (status, answer) = send(&app, "POST", "/v1/projects/p/topics/t:publish", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        fake.last::<pb::PublishRequest>().messages[0].data.len(),
        data.len()
    );

    let body = format!(
        r#"{{"messages": [{{"data": "{}"}}]}}"#,
        "A".repeat(BODY_LIMIT)
    );
    let (status, answer) = send(&app, "POST", "/v1/projects/p/topics/t:publish", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_message(&answer).contains("exceeds the limit"),
        "{answer}"
    );
}

#[tokio::test]
async fn unknown_custom_methods_are_not_found() {
    let (_, app) = app();
    for uri in [
        "/v1/projects/p/topics/t:pull",
        "/v1/projects/p/topics/t",
        "/v1/projects/p/subscriptions/s:publish",
        "/v1/projects/p/subscriptions/s:",
    ] {
        let (status, answer) = send(&app, "POST", uri, "{}").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(answer["error"]["status"], "NOT_FOUND", "{uri}");
    }
}

#[test]
fn statuses_map_to_google_http_codes() {
    for (code, http, name) in [
        (Code::InvalidArgument, 400, "INVALID_ARGUMENT"),
        (Code::FailedPrecondition, 400, "FAILED_PRECONDITION"),
        (Code::OutOfRange, 400, "OUT_OF_RANGE"),
        (Code::Unauthenticated, 401, "UNAUTHENTICATED"),
        (Code::PermissionDenied, 403, "PERMISSION_DENIED"),
        (Code::NotFound, 404, "NOT_FOUND"),
        (Code::AlreadyExists, 409, "ALREADY_EXISTS"),
        (Code::Aborted, 409, "ABORTED"),
        (Code::ResourceExhausted, 429, "RESOURCE_EXHAUSTED"),
        (Code::Cancelled, 499, "CANCELLED"),
        (Code::Unimplemented, 501, "UNIMPLEMENTED"),
        (Code::Unavailable, 503, "UNAVAILABLE"),
        (Code::DeadlineExceeded, 504, "DEADLINE_EXCEEDED"),
        (Code::Internal, 500, "INTERNAL"),
        (Code::DataLoss, 500, "DATA_LOSS"),
        (Code::Unknown, 500, "UNKNOWN"),
        (Code::Ok, 500, "UNKNOWN"),
    ] {
        let response = status_to_response(Status::new(code, "what happened"));
        assert_eq!(response.status().as_u16(), http, "{code:?}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/json",
            "{code:?}"
        );
        let body = futures::executor::block_on(read(response)).1;
        let want = json!({"error": {"code": http, "message": "what happened", "status": name}});
        assert_eq!(body, want, "{code:?}");
    }
}

#[tokio::test]
async fn service_errors_reach_the_client_as_google_errors() {
    let (fake, app) = app();
    *fake.fail.lock().unwrap() = Some(Status::already_exists(
        "Resource already exists in the project",
    ));
    let (status, answer) = send(&app, "PUT", "/v1/projects/p/topics/t", "{}").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let want = json!({"error": {"code": 409, "message": "Resource already exists in the project",
                                "status": "ALREADY_EXISTS"}});
    assert_eq!(answer, want);
}

/// Garbage of every shape on every route: nothing panics and nothing is
/// blamed on the server.
#[tokio::test]
async fn no_input_makes_a_handler_panic() {
    let (_, app) = app();
    let bodies = [
        "",
        "null",
        "[]",
        "{",
        "\"x\"",
        "1e999",
        "{\"name\": {}}",
        "{\"messages\": [null]}",
        "{\"data\": \"====\"}",
        "{\"messages\": [{\"data\": \"=\"}]}",
        "{\"ackDeadlineSeconds\": 1e300}",
        "{\"time\": \"99999-01-01T00:00:00Z\"}",
        "{\"time\": \"0000-00-00T00:00:00Z\"}",
        "{\"messageRetentionDuration\": \"-9223372036854775808s\"}",
        "\u{0}",
        "{\"\u{ffff}\": 1}",
    ];
    let uris = [
        "/v1/projects/p/topics/t",
        "/v1/projects/p/topics/t:publish",
        "/v1/projects/p/topics",
        "/v1/projects/p/subscriptions/s",
        "/v1/projects/p/subscriptions/s:pull",
        "/v1/projects/p/subscriptions/s:seek",
        "/v1/projects/p/subscriptions/s:modifyPushConfig",
        "/v1/projects/p/subscriptions/s:modifyAckDeadline",
        "/v1/projects/p/snapshots/x",
        "/v1/projects/%FF/topics/%FE:publish",
        "/v1/projects/p/topics/:",
        "/v1/projects/p/topics/t::publish",
    ];
    for method in ["GET", "PUT", "PATCH", "POST", "DELETE"] {
        for uri in uris {
            for body in bodies {
                let (status, answer) = send(&app, method, uri, body).await;
                assert!(
                    !status.is_server_error(),
                    "{method} {uri} {body:?}: {status} {answer}"
                );
            }
        }
    }
}
