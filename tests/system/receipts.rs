//! Issue 26's loop, closed on the console: `labrelay up` with the Twilio
//! stand-in, whose status callbacks reach the sms-service at the
//! `PUBLIC_URL` up gives it; each receipt recorded is published to up's
//! receipts topic, and the console's journey of the report shows it as a
//! step of the SMS channel after the push: "accepted by provider", "sent to
//! carrier", then "delivered to handset" or "undelivered (30003)".
//!
//! The final status of each message is posted by the test (signed by the
//! stand-in, as Twilio would post it) so that the time from the callback
//! to its step on the console can be measured; the test prints it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use labrelay_testkit::twilio::{Callback, TwilioStandIn};
use labrelay_testkit::up;
use serde_json::{Value, json};

use crate::LABRELAY;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "receipts-token";
/// How long any one thing may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

/// The labels of the SMS channel's steps in the journey's report message.
fn sms_steps(journey: &Value) -> Vec<String> {
    journey["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["channels"].as_array().into_iter().flatten())
        .filter(|c| {
            c["subscription"]
                .as_str()
                .is_some_and(|s| s.ends_with("/sms-service-sub"))
        })
        .flat_map(|c| c["steps"].as_array().into_iter().flatten())
        .map(|s| s["label"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Polls the console's journey of `report` (every 10 ms) until its SMS
/// steps are `want`; the journey.
async fn until_steps(http: &reqwest::Client, broker: &str, report: &str, want: &[&str]) -> Value {
    let url = format!("{broker}/console/api/journey?report={report}");
    let deadline = Instant::now() + WAIT;
    loop {
        let journey: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        if sms_steps(&journey) == want {
            return journey;
        }
        assert!(
            Instant::now() < deadline,
            "the journey of {report} did not show {want:?} within {WAIT:?}: {journey:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_receipts_show_as_steps_of_the_sms_channel() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    // The stand-in reports `sent`; the test posts the final status itself.
    twilio.set_callbacks(vec![Callback::status("sent")]);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let mut command = up::up_command(LABRELAY, &data_dir);
    command
        .env_remove("PUSH_AUTH")
        .env_remove("PUBLIC_URL")
        .env("TWILIO_ACCOUNT_SID", SID)
        .env("TWILIO_AUTH_TOKEN", TOKEN)
        .env("TWILIO_FROM", "+15550001111")
        .env("TWILIO_API_BASE", twilio.base_url())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let up = up::Up::start(command, &data_dir);
    let broker = up.broker_url();
    let api_key = std::fs::read_to_string(data_dir.join("ingest-api-key")).unwrap();
    let http = reqwest::Client::new();

    let finals = [
        (
            "RCPT-1",
            "+15551230001",
            Callback::status("delivered"),
            "delivered to handset",
        ),
        (
            "RCPT-2",
            "+15551230002",
            Callback::error("undelivered", 30003),
            "undelivered (30003)",
        ),
    ];
    for (report, phone, _, _) in &finals {
        let response = http
            .post(up.running.lab_report_url())
            .bearer_auth(api_key.trim())
            .json(&json!({
                "id": report,
                "clinic": {"name": "Pet Theory Downtown", "phone": "+15559870000"},
                "pet": {"name": "Max", "species": "dog"},
                "owner": {"name": "Alex Kim", "phone": phone},
                "tests": [{"name": "ALT", "value": 42, "unit": "U/L", "range": "10-100", "flag": "normal"}],
                "issuedAt": "2026-11-24T10:00:00Z",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{report}");
    }
    let messages = twilio.wait_for_messages(2, WAIT).await.unwrap();

    for (report, _, last, label) in finals {
        let sms = messages
            .iter()
            .find(|m| {
                m.status_callback
                    .as_deref()
                    .is_some_and(|u| u.contains(&format!("report={report}&")))
            })
            .unwrap_or_else(|| panic!("no message asked for {report}'s receipts: {messages:#?}"));
        let callback = sms.status_callback.clone().unwrap();
        until_steps(
            &http,
            &broker,
            report,
            &["accepted by provider", "sent to carrier"],
        )
        .await;

        let code = last.error_code.map(|c| c.to_string());
        let mut params = vec![
            ("AccountSid", SID),
            ("MessageSid", sms.sid.as_str()),
            ("MessageStatus", last.status),
            ("To", sms.to.as_str()),
        ];
        if let Some(code) = &code {
            params.push(("ErrorCode", code));
        }
        let called = Instant::now();
        let status = twilio.post_webhook(&callback, &params, None).await.unwrap();
        let answered = called.elapsed();
        assert_eq!(status, 204, "{report}'s {} callback", last.status);
        let journey = until_steps(
            &http,
            &broker,
            report,
            &["accepted by provider", "sent to carrier", label],
        )
        .await;
        let visible = called.elapsed();
        println!(
            "callback -> console, {report} {}: answered in {:.1} ms, on the console's journey in {:.1} ms",
            last.status,
            answered.as_secs_f64() * 1000.0,
            visible.as_secs_f64() * 1000.0
        );
        let text = journey.to_string();
        assert!(
            !text.contains(sms.to.as_str()),
            "no phone number on the console"
        );
        assert!(text.contains(&sms.sid), "the steps name the SID");
    }
    assert!(up.terminate().success());
}
