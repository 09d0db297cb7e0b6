//! What a full run writes to its logs: `labrelay up` at RUST_LOG=info, with a
//! real SMTP server that wants a password and a Twilio stand-in that wants a
//! token, reports posted and delivered, then a clean stop. Nothing the
//! reports said about the owner (address, phone), no test result and no
//! credential may appear in anything the process printed.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use labrelay_testkit::smtp::SmtpSink;
use labrelay_testkit::twilio::TwilioStandIn;
use labrelay_testkit::up;
use serde_json::{Value, json};

use crate::LABRELAY;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "twilio-token-must-not-be-logged";
const SMTP_USER: &str = "results-mailer";
const SMTP_PASSWORD: &str = "smtp-password-must-not-be-logged";

/// Waits for `path` to contain `needle` `n` times, for at most 30 s. The
/// file is another process's output, so there is nothing to await but
/// the file itself.
fn wait_for_count(path: &Path, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.matches(needle).count() >= n || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_logs_no_personal_data_and_no_secrets() {
    let smtp = SmtpSink::start_with_auth(SMTP_USER, SMTP_PASSWORD)
        .await
        .unwrap();
    let twilio = TwilioStandIn::start(SID, TWILIO_TOKEN).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let stdout_path = data.path().join("up.stdout");
    let stderr_path = data.path().join("up.stderr");
    let data_dir = data.path().join("data");
    let mut command = up::up_command(LABRELAY, &data_dir);
    command
        .env("RUST_LOG", "info")
        .env_remove("LOG_FORMAT")
        .env_remove("PUSH_AUTH")
        .env("SMTP_URL", smtp.url())
        .env("SMTP_USERNAME", SMTP_USER)
        .env("SMTP_PASSWORD", SMTP_PASSWORD)
        .env("TWILIO_ACCOUNT_SID", SID)
        .env("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
        .env("TWILIO_FROM", "+15550001111")
        .env("TWILIO_API_BASE", twilio.base_url())
        .stdout(Stdio::from(std::fs::File::create(&stdout_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()));
    let up = up::Up::start(command, &data_dir);

    let lab_url = up.running.lab_report_url();
    let api_key = std::fs::read_to_string(data.path().join("data/ingest-api-key")).unwrap();

    // Reports with values that cannot turn up in a log by chance.
    let reports: Vec<_> = (1..=3)
        .map(|n| {
            json!({
                "id": format!("LOGS-{n}"),
                "clinic": {"name": "Pet Theory Downtown", "phone": "+15559870000"},
                "pet": {"name": "Biscuit", "species": "dog"},
                "owner": {
                    "name": format!("Owner Zyxwv{n}"),
                    "email": format!("owner.zyxwv{n}@example.com"),
                    "phone": format!("+1555314159{n}"),
                },
                "tests": [
                    {"name": "ALT", "value": 9876.5 + f64::from(n), "unit": "U/L", "range": "10-100", "flag": "high"},
                    {"name": "Heartworm antigen", "value": format!("qwerty-positive-{n}"), "flag": "abnormal"},
                ],
                "issuedAt": "2026-11-24T10:00:00Z",
            })
        })
        .collect();
    let http = reqwest::Client::new();
    for report in &reports {
        let response = http
            .post(&lab_url)
            .bearer_auth(api_key.trim())
            .json(report)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    smtp.wait_for_messages(3, Duration::from_secs(30))
        .await
        .unwrap();
    twilio
        .wait_for_messages(3, Duration::from_secs(30))
        .await
        .unwrap();
    // One report that is rejected, to cover the rejection log lines too.
    let rejected = http
        .post(&lab_url)
        .bearer_auth(api_key.trim())
        .json(&json!({"id": {"nested": "owner.zyxwv9@example.com"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 400);

    assert!(up.terminate().success());

    let logs = format!(
        "{}\n{}",
        std::fs::read_to_string(&stdout_path).unwrap(),
        std::fs::read_to_string(&stderr_path).unwrap()
    );
    assert!(
        logs.contains("report accepted"),
        "info logs were captured: {logs}"
    );
    assert!(logs.contains("push handled"), "{logs}");
    assert_eq!(
        logs.matches("push requests must carry a valid OIDC token")
            .count(),
        2,
        "both push services verify tokens under `up`: {logs}"
    );
    assert!(logs.contains("reports require an API key"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "a log written to a file carries no terminal colour codes: {logs}"
    );
    assert!(
        !logs.contains("SUPPRESSION_KEY"),
        "`up` gives both push services its suppression key: {logs}"
    );
    let suppression_key =
        std::fs::read_to_string(data.path().join("data/suppression-key")).unwrap();
    let mut forbidden = vec![
        // `up` names the key's file; the key stays in it.
        api_key.trim().to_string(),
        suppression_key.trim().to_string(),
        SMTP_PASSWORD.to_string(),
        TWILIO_TOKEN.to_string(),
        "owner.zyxwv9@example.com".to_string(),
        "+15559870000".to_string(),
        "Zyxwv".to_string(),
        "qwerty-positive".to_string(),
    ];
    for n in 1..=3 {
        // The results themselves (9877.5, ...): four bare digits can turn
        // up by chance in a timestamp's microseconds, a port or an id.
        forbidden.push(format!("{}", 9876.5 + f64::from(n)));
        forbidden.push(format!("owner.zyxwv{n}@example.com"));
        forbidden.push(format!("+1555314159{n}"));
        forbidden.push(format!("555314159{n}"));
    }
    for needle in forbidden {
        assert!(
            !logs.contains(&needle),
            "the logs contain {needle:?}:\n{logs}"
        );
    }
}

const PROJECT: &str = "logs-trace-project";
const W3C_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLOUD_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// `LOG_FORMAT=json`: every line is a Cloud Logging entry; a request with
/// a trace header (W3C or Google's) names its trace as Cloud Logging wants
/// it; every line about a report names the report and its message, and the
/// push services' lines carry the message id the lab-report-service got
/// from the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_trace_and_the_report_and_message_ids() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let stdout_path = data.path().join("up.stdout");
    let stderr_path = data.path().join("up.stderr");
    let mut command = up::up_command(LABRELAY, &data_dir);
    command
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .env("GOOGLE_CLOUD_PROJECT", PROJECT)
        .env_remove("PUBSUB_PROJECT_ID")
        .env_remove("PUSH_AUTH")
        .env_remove("K_SERVICE")
        .stdout(Stdio::from(std::fs::File::create(&stdout_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()));
    let up = up::Up::start(command, &data_dir);

    let lab_url = up.running.lab_report_url();
    let api_key = std::fs::read_to_string(data_dir.join("ingest-api-key")).unwrap();

    let http = reqwest::Client::new();
    let headers: [(&str, Option<(&str, String)>); 3] = [
        (
            "TRACE-W3C",
            Some(("traceparent", format!("00-{W3C_TRACE}-00f067aa0ba902b7-01"))),
        ),
        (
            "TRACE-GCP",
            Some(("x-cloud-trace-context", format!("{CLOUD_TRACE}/123;o=1"))),
        ),
        ("TRACE-NONE", None),
    ];
    for (id, header) in &headers {
        let report = json!({
            "id": id,
            "owner": {"name": "Owner Qwvx", "email": "owner.qwvx@example.com", "phone": "+15552718281"},
            "tests": [{"name": "ALT", "value": 7777.25, "unit": "U/L"}],
        });
        let mut request = http
            .post(&lab_url)
            .bearer_auth(api_key.trim())
            .json(&report);
        if let Some((name, value)) = header {
            request = request.header(*name, value);
        }
        assert_eq!(request.send().await.unwrap().status(), 204);
    }
    // One email and one SMS per report.
    let logs = wait_for_count(&stderr_path, "\"push handled\"", 6);
    assert_eq!(
        logs.matches("\"push handled\"").count(),
        6,
        "every push logged: {logs}"
    );

    // In one process, each port's /metrics still shows its service only.
    let url_of = |service: &str| up.url(service);
    let scrape = |base: String| {
        let http = http.clone();
        async move {
            let response = http.get(format!("{base}/metrics")).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    let lab = scrape(lab_url.trim_end_matches('/').to_string()).await;
    assert!(
        lab.contains(r#"labrelay_reports_received_total{outcome="stored",status="204"} 3"#),
        "{lab}"
    );
    assert!(!lab.contains("labrelay_notifications_total"), "{lab}");
    for (service, channel, other) in [
        ("email-service", "email", "sms"),
        ("sms-service", "sms", "email"),
    ] {
        let text = scrape(url_of(service)).await;
        assert!(
            text.contains(&format!(
                r#"labrelay_notifications_total{{channel="{channel}",outcome="sent"}} 3"#
            )),
            "{service}: {text}"
        );
        assert!(
            !text.contains(&format!(r#"channel="{other}""#)),
            "{service}: {text}"
        );
        assert!(
            !text.contains("labrelay_reports_received_total"),
            "{service}: {text}"
        );
    }

    assert!(up.terminate().success());

    let logs = std::fs::read_to_string(&stderr_path).unwrap();
    let lines: Vec<Value> = logs
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect();
    for line in &lines {
        assert!(line["severity"].is_string(), "{line:?}");
        assert!(line["message"].is_string(), "{line:?}");
        assert!(line["time"].is_string(), "{line:?}");
        // Every line naming a report names its message too.
        if line.get("report_id").is_some() {
            assert!(line["message_id"].is_string(), "{line:?}");
        }
    }
    let about = |id: &str, message: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["report_id"] == id && l["message"] == message)
            .collect()
    };
    let trace_key = "logging.googleapis.com/trace";
    let span_key = "logging.googleapis.com/spanId";
    let expected_trace = [
        (
            "TRACE-W3C",
            Some((
                format!("projects/{PROJECT}/traces/{W3C_TRACE}"),
                "00f067aa0ba902b7",
            )),
        ),
        (
            "TRACE-GCP",
            // Google's header gives the span id in decimal: 123.
            Some((
                format!("projects/{PROJECT}/traces/{CLOUD_TRACE}"),
                "000000000000007b",
            )),
        ),
        ("TRACE-NONE", None),
    ];
    for (id, trace) in expected_trace {
        let accepted = about(id, "report accepted");
        assert_eq!(accepted.len(), 1, "{id}: {logs}");
        let accepted = accepted[0];
        let message_id = accepted["message_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no message_id: {accepted:?}"));
        match &trace {
            Some((trace, span)) => {
                assert_eq!(accepted[trace_key], trace.as_str(), "{accepted:?}");
                assert_eq!(accepted[span_key], *span, "{accepted:?}");
                assert_eq!(
                    accepted["logging.googleapis.com/trace_sampled"], true,
                    "{accepted:?}"
                );
            }
            None => assert!(accepted.get(trace_key).is_none(), "{accepted:?}"),
        }
        // The email and the SMS of this report, under the broker's id.
        let pushes = about(id, "push handled");
        assert_eq!(pushes.len(), 2, "{id}: {pushes:?}");
        for push in pushes {
            assert_eq!(push["message_id"], message_id, "{push:?}");
            assert_eq!(push["outcome"], "sent", "{push:?}");
        }
    }
    for needle in ["owner.qwvx@example.com", "5552718281", "Qwvx", "7777.25"] {
        assert!(
            !logs.contains(needle),
            "the logs contain {needle:?}:\n{logs}"
        );
    }
}
