//! `SMS_ALLOWED_COUNTRIES`: numbers outside it never reach Twilio (the
//! stand-in counts every request), and the push is acknowledged as skipped.

use labrelay_sms_service::Settings;
use labrelay_sms_service::settings::countries::AllowedCountries;
use labrelay_testkit::twilio::TwilioStandIn;

use crate::helpers::*;

fn outcome(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("x-labrelay-outcome")
        .and_then(|v| v.to_str().ok())
}

/// Twilio settings from environment-style variables, as Cloud Run passes them.
fn settings(twilio: &TwilioStandIn, extra: &[(&str, &str)]) -> Settings {
    let base = twilio.base_url();
    let mut vars = vec![
        ("TWILIO_ACCOUNT_SID", SID),
        ("TWILIO_AUTH_TOKEN", TOKEN),
        ("TWILIO_FROM", FROM),
        ("TWILIO_API_BASE", base.as_str()),
        ("TWILIO_TIMEOUT_SECS", "3"),
        ("PUSH_AUTH", "off"),
    ];
    vars.extend_from_slice(extra);
    Settings::from_vars(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
    .expect("valid test settings")
}

/// Unset: any country but the non-geographic codes. The skipped push logs a
/// warning naming the calling code, never the number; nothing is retried
/// (204) and nothing is sent. The test runs on one thread, so the server's
/// tasks log to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn by_default_non_geographic_numbers_are_skipped_and_the_rest_sent() {
    let (captured, _guard) = labrelay_testkit::logs::capture(tracing::Level::INFO);
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let app = spawn_app(settings(&twilio, &[])).await;

    let response = app
        .push(&envelope(
            &report("LR-C1", Some("+44 7700 900123")),
            "c1",
            1,
        ))
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(outcome(&response), Some("sent"));
    for (id, phone) in [
        ("LR-C2", "+882 1600 1234567"),
        ("LR-C3", "+883 5100 0987654"),
        ("LR-C4", "+979 1234 5678"),
    ] {
        let response = app.push(&envelope(&report(id, Some(phone)), id, 1)).await;
        assert_eq!(response.status(), 204, "{phone}");
        assert_eq!(outcome(&response), Some("skipped"), "{phone}");
        assert!(response.bytes().await.unwrap().is_empty());
    }

    assert_eq!(twilio.requests(), 1, "a skipped number reached Twilio");
    assert_eq!(twilio.messages()[0].to, "+447700900123");
    let scrape = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scrape.contains("labrelay_notifications_total{channel=\"sms\",outcome=\"skipped\"} 3"),
        "{scrape}"
    );
    app.stop().await.unwrap();

    let logs = captured.text();
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("SMS_ALLOWED_COUNTRIES is unset")),
        "no start-up warning: {logs}"
    );
    for code in ["+882", "+883", "+979"] {
        let line = logs
            .lines()
            .find(|l| l.contains(&format!("calling_code={code}")))
            .unwrap_or_else(|| panic!("no line names {code}: {logs}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("SMS_ALLOWED_COUNTRIES"), "{line}");
    }
    let skipped = logs
        .lines()
        .filter(|l| l.contains("push handled") && l.contains("outcome=\"skipped\""))
        .count();
    assert_eq!(skipped, 3, "{logs}");
    for digits in ["16001234567", "1600 1234567", "51000987654", "12345678"] {
        assert!(!logs.contains(digits), "a phone number leaked: {logs}");
    }
}

/// Set: only the listed calling codes, whole codes (+44 is not +4x), and a
/// non-geographic code when the operator lists it. With the notification
/// log on, a skipped push is recorded nowhere: its redelivery (say, after
/// the setting was widened) would be skipped or sent, never a duplicate.
#[tokio::test]
async fn only_listed_calling_codes_are_texted() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let log = tempfile::tempdir().unwrap();
    let log_url = format!("sqlite://{}", log.path().join("n.db").display());
    let app = spawn_app(settings(
        &twilio,
        &[
            ("SMS_ALLOWED_COUNTRIES", "+1, +44,+882"),
            ("NOTIFY_LOG", &log_url),
        ],
    ))
    .await;

    let cases = [
        ("+1 555 123 4567", "sent"),
        ("+44 20 7946 0958", "sent"),
        ("+882 1600 1234567", "sent"),
        ("+82 10 1234 5678", "skipped"),
        ("+49 30 123456", "skipped"),
        ("+353 1 234 5678", "skipped"),
        ("+7 495 123 4567", "skipped"),
        ("+883 5100 0987654", "skipped"),
    ];
    for (i, (phone, want)) in cases.iter().enumerate() {
        let id = format!("LR-L{i}");
        let body = envelope(&report(&id, Some(phone)), &id, 1);
        let response = app.push(&body).await;
        assert_eq!(response.status(), 204, "{phone}");
        assert_eq!(outcome(&response), Some(*want), "{phone}");
        if *want == "skipped" {
            // Redelivered: skipped again, not a duplicate of a send.
            let again = app.push(&body).await;
            assert_eq!(outcome(&again), Some("skipped"), "{phone}");
        }
    }
    let sent: Vec<String> = twilio.messages().into_iter().map(|m| m.to).collect();
    assert_eq!(sent, ["+15551234567", "+442079460958", "+88216001234567"]);
    assert_eq!(twilio.requests(), 3);
    app.stop().await.unwrap();
}

/// Settings built in code (as `labrelay up` and tests do) default to the
/// same rule and can carry a list.
#[tokio::test]
async fn settings_built_in_code_default_to_all_but_non_geographic() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let settings = twilio_settings(&twilio);
    assert_eq!(
        settings.allowed_countries,
        AllowedCountries::AllButNonGeographic
    );
    let settings = Settings {
        allowed_countries: AllowedCountries::parse(Some("+44")).unwrap(),
        ..settings
    };
    let app = spawn_app(settings).await;
    let skipped = app
        .push(&envelope(&report("LR-K1", Some("+15551234567")), "k1", 1))
        .await;
    assert_eq!(outcome(&skipped), Some("skipped"));
    let sent = app
        .push(&envelope(&report("LR-K2", Some("+447700900123")), "k2", 1))
        .await;
    assert_eq!(outcome(&sent), Some("sent"));
    assert_eq!(twilio.requests(), 1);
    app.stop().await.unwrap();
}
