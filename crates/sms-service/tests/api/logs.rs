use labrelay_testkit::twilio::Mode;

use crate::helpers::*;

/// One info line per push naming report, message, attempt, outcome and the
/// Twilio code; never the phone number or the message body. The test runs
/// on one thread, so the server's tasks log to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn logs_one_line_per_push_without_personal_data() {
    let (captured, _guard) = labrelay_testkit::logs::capture(tracing::Level::INFO);
    let (twilio, app) = spawn_with_twilio().await;

    assert_eq!(
        app.push(&envelope(&report("LR-40", Some("+15551234567")), "m40", 1))
            .await
            .status(),
        204
    );
    twilio.set_mode(Mode::Reject {
        status: 400,
        code: 21614,
    });
    assert_eq!(
        app.push(&envelope(&report("LR-41", Some("+15551234567")), "m41", 2))
            .await
            .status(),
        422
    );
    // The stand-in's 21211 message quotes the number, as Twilio's does.
    twilio.set_mode(Mode::Accept);
    assert_eq!(
        app.push(&envelope(&report("LR-42", Some("+1555123456")), "m42", 1))
            .await
            .status(),
        204
    );
    assert_eq!(
        app.push(&envelope(&report("LR-43", Some("555")), "m43", 1))
            .await
            .status(),
        422
    );
    app.stop().await.unwrap();

    let logs = captured.text();
    let pushes: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("push handled"))
        .collect();
    assert_eq!(pushes.len(), 4, "{logs}");
    for (line, (id, message, outcome)) in pushes.iter().zip([
        ("LR-40", "m40", "sent"),
        ("LR-41", "m41", "refused"),
        ("LR-42", "m42", "sent"),
        ("LR-43", "m43", "invalid_number"),
    ]) {
        assert!(line.contains(&format!("report_id=\"{id}\"")), "{line}");
        assert!(
            line.contains(&format!("message_id=\"{message}\"")),
            "{line}"
        );
        assert!(line.contains(&format!("outcome=\"{outcome}\"")), "{line}");
        assert!(line.contains("delivery_attempt="), "{line}");
    }
    assert!(pushes[1].contains("provider_code=21614"), "{}", pushes[1]);
    assert!(pushes[0].contains("sent_id=\"SM"), "{}", pushes[0]);
    assert!(!logs.contains("555123456"), "a phone number leaked: {logs}");
    assert!(
        !logs.contains("lab results are ready"),
        "the body leaked: {logs}"
    );
    assert!(!logs.contains(TOKEN), "the token leaked: {logs}");
}
