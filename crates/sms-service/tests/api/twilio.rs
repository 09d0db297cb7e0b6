use std::time::{Duration, Instant};

use labrelay_sms_service::segments;
use labrelay_sms_service::{Secret, TwilioSender};
use labrelay_testkit::twilio::{Mode, TwilioStandIn};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn sends_a_one_segment_notice_through_twilio() {
    let (twilio, app) = spawn_with_twilio().await;

    let response = app
        .push(&envelope(&report("LR-1", Some("+1 555-123-4567")), "m1", 1))
        .await;

    assert_eq!(response.status(), 204);
    let sent = twilio.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(sent.len(), 1);
    let sms = &sent[0];
    assert_eq!(sms.to, "+15551234567");
    assert_eq!(sms.from.as_deref(), Some(FROM));
    assert_eq!(sms.messaging_service_sid, None);
    assert_eq!(sms.body, notice("LR-1"));
    assert_eq!(sms.num_segments, 1, "the stand-in's own count");
    assert!(segments::measure(&sms.body).fits_one_segment());
    assert!(
        !sms.body.contains("4242") && !sms.body.contains("ALT"),
        "no results in an SMS"
    );
    assert_eq!(twilio.requests(), 1);
}

#[tokio::test]
async fn sends_through_a_messaging_service_when_configured() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let settings = with_twilio(twilio_settings(&twilio), |t| {
        t.sender = TwilioSender::MessagingService(SERVICE_SID.into());
    });
    let app = spawn_app(settings).await;

    let response = app
        .push(&envelope(&report("LR-2", Some("+447700900123")), "m2", 1))
        .await;

    assert_eq!(response.status(), 204);
    let sent = twilio.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(sent[0].to, "+447700900123");
    assert_eq!(sent[0].from, None);
    assert_eq!(sent[0].messaging_service_sid.as_deref(), Some(SERVICE_SID));
}

#[tokio::test]
async fn a_long_unicode_report_still_fits_one_segment() {
    let (twilio, app) = spawn_with_twilio().await;
    let report = json!({
        "id": "ÜBERWEISUNG-2026-🐾-".repeat(5),
        "clinic": {"name": "Tierklinik Sankt Bernhard am Wörthersee – Notdienst", "phone": "+43 463 123456"},
        "pet": {"name": "Prinzessin Flauschbärchen von Katzenstein 🐱"},
        "owner": {"email": "a@example.com", "phone": "+43 664 1234567"},
    });

    let response = app.push(&envelope(&report, "m3", 1)).await;

    assert_eq!(response.status(), 204);
    let sent = twilio.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(sent[0].num_segments, 1, "{}", sent[0].body);
    assert!(
        sent[0].body.contains("lab results are ready"),
        "{}",
        sent[0].body
    );
}

#[tokio::test]
async fn skips_a_report_without_an_owner_phone() {
    let (twilio, app) = spawn_with_twilio().await;

    for report in [
        report("LR-3", None),
        json!({"id": 12}),
        report("LR-4", Some("  ")),
    ] {
        let response = app.push(&envelope(&report, "m4", 1)).await;
        assert_eq!(response.status(), 204);
    }

    assert_eq!(twilio.requests(), 0);
}

#[tokio::test]
async fn an_invalid_number_is_422_and_nothing_is_sent() {
    let (twilio, app) = spawn_with_twilio().await;

    for phone in [
        "555-123-4567",
        "+1 (555) 123-4567",
        "+1555",
        "+05551234567",
        "call me",
    ] {
        let response = app
            .push(&envelope(&report("LR-5", Some(phone)), "m5", 1))
            .await;
        assert_eq!(response.status(), 422, "{phone}");
        let error = error_of(response).await;
        assert!(error.starts_with("owner.phone "), "{error}");
        assert!(
            !error.contains("555"),
            "no personal data in the answer: {error}"
        );
    }

    assert_eq!(twilio.requests(), 0);
}

#[tokio::test]
async fn twilio_rate_limits_and_server_errors_are_503() {
    let (twilio, app) = spawn_with_twilio().await;
    let modes = [
        Mode::TooManyRequests {
            retry_after: Some(7),
        },
        Mode::TooManyRequests { retry_after: None },
        Mode::ServerError,
        Mode::Reject {
            status: 503,
            code: 20503,
        },
    ];

    for (i, mode) in modes.into_iter().enumerate() {
        twilio.set_mode(mode.clone());
        let response = app
            .push(&envelope(&report("LR-6", Some("+15551234567")), "m6", 1))
            .await;
        assert_eq!(response.status(), 503, "{mode:?}");
        assert_eq!(
            error_of(response).await,
            "the SMS could not be sent now; retry later"
        );
        assert_eq!(
            twilio.requests(),
            i + 1,
            "one request per push, no retry loop inside"
        );
    }

    assert!(twilio.messages().is_empty());
}

#[tokio::test]
async fn a_hanging_twilio_is_503_after_the_timeout() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let settings = with_twilio(twilio_settings(&twilio), |t| {
        t.timeout = Duration::from_millis(300)
    });
    let app = spawn_app(settings).await;
    twilio.set_mode(Mode::Hang);

    let started = Instant::now();
    let response = app
        .push(&envelope(&report("LR-7", Some("+15551234567")), "m7", 1))
        .await;

    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(twilio.requests(), 1);
}

#[tokio::test]
async fn an_unreachable_twilio_is_503() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let app = spawn_app(with_twilio(twilio_settings(&twilio), |t| t.api_base = base)).await;

    let response = app
        .push(&envelope(&report("LR-8", Some("+15551234567")), "m8", 1))
        .await;

    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn numbers_twilio_refuses_are_422() {
    let (twilio, app) = spawn_with_twilio().await;

    // 21610 (unsubscribed) is no failure: see opt_out.rs.
    for code in [21211, 21614, 21612] {
        twilio.set_mode(Mode::Reject { status: 400, code });
        let response = app
            .push(&envelope(&report("LR-9", Some("+15551234567")), "m9", 1))
            .await;
        assert_eq!(response.status(), 422, "code {code}");
        let error = error_of(response).await;
        assert_eq!(
            error,
            format!("Twilio refused the message (HTTP 400, code {code})")
        );
    }

    assert!(twilio.messages().is_empty());
}

/// Bad credentials are an operator's fix, after which the same message
/// goes through: retry (503), do not dead-letter at once.
#[tokio::test]
async fn wrong_credentials_are_503() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let settings = with_twilio(twilio_settings(&twilio), |t| {
        t.auth_token = Secret::new("wrong")
    });
    let app = spawn_app(settings).await;

    let response = app
        .push(&envelope(&report("LR-10", Some("+15551234567")), "m10", 1))
        .await;

    assert_eq!(response.status(), 503);
    assert_eq!(twilio.requests(), 1);
    assert!(twilio.messages().is_empty());
}

#[tokio::test]
async fn malformed_pushes_are_400_and_nothing_is_sent() {
    let (twilio, app) = spawn_with_twilio().await;
    let mut bad_base64 = envelope(&report("LR-11", Some("+15551234567")), "m11", 1);
    bad_base64["message"]["data"] = json!("***not base64***");
    let cases = [
        ("not json".to_string(), "not a Pub/Sub push envelope"),
        ("{}".to_string(), "not a Pub/Sub push envelope"),
        (
            json!({"message": {}}).to_string(),
            "not a Pub/Sub push envelope",
        ),
        (bad_base64.to_string(), "not valid base64"),
        (
            envelope_bytes(b"not json", "m", 1).to_string(),
            "not a lab report",
        ),
        (
            envelope_bytes(b"{\"id\": null}", "m", 1).to_string(),
            "`id` must be",
        ),
        (envelope_bytes(b"", "m", 1).to_string(), "not a lab report"),
        (
            envelope_bytes(br#"{"id": 1, "owner": {"phone": 15551234567}}"#, "m", 1).to_string(),
            "`owner`",
        ),
    ];

    for (body, want) in cases {
        let response = app.push_body(body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let error = error_of(response).await;
        assert!(error.contains(want), "{body}: {error}");
    }

    assert_eq!(twilio.requests(), 0);
}

/// What the broker's redelivery achieves: 503 while Twilio fails, then 204.
#[tokio::test]
async fn redelivery_heals_after_transient_failures() {
    let (twilio, app) = spawn_with_twilio().await;
    twilio.fail_next(1, Mode::ServerError);
    twilio.fail_next(
        1,
        Mode::TooManyRequests {
            retry_after: Some(1),
        },
    );
    let push = envelope(&report("LR-12", Some("+15551234567")), "m12", 1);

    let statuses = [
        app.push(&push).await.status(),
        app.push(&push).await.status(),
        app.push(&push).await.status(),
    ];

    assert_eq!(statuses.map(|s| s.as_u16()), [503, 503, 204]);
    assert_eq!(twilio.wait_for_messages(1, WAIT).await.unwrap().len(), 1);
    assert_eq!(twilio.requests(), 3);
}

#[tokio::test]
async fn concurrent_pushes_each_send_one_message() {
    let (twilio, app) = spawn_with_twilio().await;

    let mut pushes = tokio::task::JoinSet::new();
    for i in 0..20 {
        let push = envelope(
            &report(&format!("LR-C{i}"), Some("+15551234567")),
            &format!("c{i}"),
            1,
        );
        let (client, address) = (app.client.clone(), app.address.clone());
        pushes.spawn(async move {
            let response = client
                .post(address)
                .body(push.to_string())
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        });
    }
    let statuses = pushes.join_all().await;

    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    let mut refs: Vec<String> = twilio
        .wait_for_messages(20, WAIT)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body.rsplit("Ref ").next().unwrap().to_string())
        .collect();
    refs.sort();
    refs.dedup();
    assert_eq!(refs.len(), 20);
}

#[tokio::test]
async fn healthz_answers() {
    let (_twilio, app) = spawn_with_twilio().await;
    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Twilio answered 201 and the connection broke mid-body: the message was
/// created, so the push is a send (204, `sent`), not a failure that would
/// send it again.
#[tokio::test]
async fn a_201_whose_body_is_cut_off_counts_as_sent() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (requests_tx, mut requests) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let requests_tx = requests_tx.clone();
            tokio::spawn(async move {
                // Read the request (headers and the small form body).
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") || request.len() < 64 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = requests_tx.send(());
                // A 201 announcing more body than it sends, then gone.
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\
                          Content-Length: 400\r\n\r\n{\"sid\": \"SM0123",
                    )
                    .await;
                let _ = socket.shutdown().await;
            });
        }
    });
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let app = spawn_app(with_twilio(twilio_settings(&twilio), |t| t.api_base = base)).await;

    let response = app
        .push(&envelope(
            &report("LR-201", Some("+15551234567")),
            "m201",
            1,
        ))
        .await;

    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["x-labrelay-outcome"], "sent");
    assert!(requests.recv().await.is_some(), "Twilio was called");
    assert!(requests.try_recv().is_err(), "and only once");
}
