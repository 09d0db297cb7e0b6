//! Delivery receipts and inbound opt-outs against the Twilio stand-in,
//! which calls the status callback as Twilio does, signed with the auth
//! token: statuses late, twice or out of order never go backwards; a
//! forged signature is refused and records nothing; STOP and START texted
//! to the clinic's number suppress and lift the number.

use std::path::{Path, PathBuf};

use labrelay_receiver::notify_log::{
    DeliveryStatus, NotificationLog as _, NotifyLogSetting, SqliteLog,
};
use labrelay_testkit::twilio::{Callback, TwilioStandIn};

use crate::helpers::*;

const NUMBER: &str = "+15551234567";

struct Setup {
    twilio: TwilioStandIn,
    app: TestApp,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The service with `PUBLIC_URL` its own address and a SQLite log.
async fn setup(plan: Vec<Callback>) -> Setup {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    twilio.set_callbacks(plan);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("n.db");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let mut settings = with_twilio(twilio_settings(&twilio), |t| t.public_url = Some(public));
    settings.receiver.notify_log = NotifyLogSetting::Sqlite(log.clone());
    let app = spawn_app_on(listener, settings).await;
    Setup {
        twilio,
        app,
        log,
        _dir: dir,
    }
}

async fn stored(log: &Path, sid: &str) -> Option<labrelay_receiver::notify_log::Receipt> {
    SqliteLog::open(log).unwrap().receipt(sid).await.unwrap()
}

#[tokio::test]
async fn twilio_calls_back_and_the_status_is_recorded_against_the_notification() {
    let s = setup(vec![
        Callback::status("sent"),
        Callback::status("delivered"),
    ])
    .await;
    let answer = s
        .app
        .push(&envelope(&report("LR-R1", Some(NUMBER)), "r1", 1))
        .await;
    assert_eq!(answer.status(), 204);
    let sent = s.twilio.wait_for_messages(1, WAIT).await.unwrap();
    let callback = sent[0].status_callback.clone().expect("a StatusCallback");
    assert!(callback.starts_with(&format!("{}/twilio/status?report=LR-R1&n=", s.app.address)));

    assert_eq!(
        s.twilio.wait_for_callback_answers(2, WAIT).await.unwrap(),
        [204, 204]
    );
    let receipt = stored(&s.log, &sent[0].sid).await.unwrap();
    assert_eq!(receipt.status, DeliveryStatus::Delivered);
    assert_eq!(receipt.report_id.as_deref(), Some("LR-R1"));
    assert_eq!(receipt.content_hash.as_ref().map(String::len), Some(64));

    let metrics = s
        .app
        .client
        .get(format!("{}/metrics", s.app.address))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"labrelay_delivery_receipts_total{channel="sms",status="delivered"} 1"#),
        "{metrics}"
    );
    s.app.stop().await.unwrap();
}

#[tokio::test]
async fn late_duplicate_and_out_of_order_callbacks_never_go_backwards() {
    let s = setup(vec![
        Callback::status("delivered"),
        Callback::status("sent"),
        Callback::status("delivered"),
        Callback::status("queued"),
        Callback::error("undelivered", 30003),
    ])
    .await;
    s.app
        .push(&envelope(&report("LR-R2", Some(NUMBER)), "r2", 1))
        .await;
    let sid = s.twilio.wait_for_messages(1, WAIT).await.unwrap()[0]
        .sid
        .clone();
    assert_eq!(
        s.twilio.wait_for_callback_answers(5, WAIT).await.unwrap(),
        [204; 5]
    );
    let receipt = stored(&s.log, &sid).await.unwrap();
    assert_eq!(
        (receipt.status, receipt.error_code),
        (DeliveryStatus::Delivered, None)
    );
    let metrics = s
        .app
        .client
        .get(format!("{}/metrics", s.app.address))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"labrelay_delivery_receipts_total{channel="sms",status="delivered"} 1"#),
        "counted once: {metrics}"
    );
    assert!(!metrics.contains(r#"status="undelivered""#), "{metrics}");

    // Undelivered, with its error code, from another message.
    s.twilio.set_callbacks(vec![
        Callback::status("sent"),
        Callback::error("undelivered", 30003),
    ]);
    s.app
        .push(&envelope(&report("LR-R3", Some(NUMBER)), "r3", 1))
        .await;
    let sid = s.twilio.wait_for_messages(2, WAIT).await.unwrap()[1]
        .sid
        .clone();
    s.twilio.wait_for_callback_answers(7, WAIT).await.unwrap();
    let receipt = stored(&s.log, &sid).await.unwrap();
    assert_eq!(
        (receipt.status, receipt.error_code),
        (DeliveryStatus::Undelivered, Some(30003))
    );
    s.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_forged_signature_is_refused_and_records_nothing() {
    let s = setup(vec![]).await;
    let url = format!("{}/twilio/status?report=LR-F&n=00", s.app.address);
    let params = [("MessageSid", "SMforged"), ("MessageStatus", "delivered")];
    let forged = s.twilio.sign(
        &url,
        &[("MessageSid", "SMforged"), ("MessageStatus", "sent")],
    );
    for signature in [
        Some(forged.as_str()),
        Some("bm90IGEgc2lnbmF0dXJl"),
        Some(""),
    ] {
        let status = s
            .twilio
            .post_webhook(&url, &params, signature)
            .await
            .unwrap();
        assert_eq!(status, 403, "{signature:?}");
    }
    // Signed for another URL (another report).
    let other = s.twilio.sign(&url.replace("LR-F", "LR-G"), &params);
    assert_eq!(
        s.twilio
            .post_webhook(&url, &params, Some(&other))
            .await
            .unwrap(),
        403
    );
    assert_eq!(stored(&s.log, "SMforged").await, None);
    let inbound = format!("{}/twilio/inbound", s.app.address);
    let stop = [("From", NUMBER), ("Body", "STOP")];
    assert_eq!(
        s.twilio
            .post_webhook(&inbound, &stop, Some("AAAA"))
            .await
            .unwrap(),
        403
    );
    assert!(
        SqliteLog::open(&s.log)
            .unwrap()
            .suppressions()
            .await
            .unwrap()
            .is_empty()
    );

    // The same call, signed: accepted.
    assert_eq!(
        s.twilio.post_webhook(&url, &params, None).await.unwrap(),
        204
    );
    assert_eq!(
        stored(&s.log, "SMforged").await.unwrap().status,
        DeliveryStatus::Delivered
    );
    s.app.stop().await.unwrap();
}

#[tokio::test]
async fn stop_suppresses_the_number_and_start_lifts_it() {
    let s = setup(vec![]).await;
    let inbound = format!("{}/twilio/inbound", s.app.address);
    assert_eq!(
        s.twilio.inbound(&inbound, NUMBER, " stop ").await.unwrap(),
        200
    );

    let answer = s
        .app
        .push(&envelope(&report("LR-I1", Some(NUMBER)), "i1", 1))
        .await;
    assert_eq!(answer.status(), 204);
    assert_eq!(answer.headers()["x-labrelay-outcome"], "suppressed");
    assert_eq!(answer.headers()["x-labrelay-reason"], "inbound STOP");
    assert_eq!(s.twilio.requests(), 0);

    // Any other text changes nothing.
    assert_eq!(
        s.twilio
            .inbound(&inbound, NUMBER, "Stop texting me please")
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        s.twilio.inbound(&inbound, NUMBER, "unstop").await.unwrap(),
        200
    );
    let answer = s
        .app
        .push(&envelope(&report("LR-I2", Some(NUMBER)), "i2", 1))
        .await;
    assert_eq!(answer.headers()["x-labrelay-outcome"], "sent");
    assert_eq!(s.twilio.wait_for_messages(1, WAIT).await.unwrap().len(), 1);
    s.app.stop().await.unwrap();
}

/// A notification sent twice (Twilio took it, and the record was lost)
/// has two SIDs: the callbacks of both attach to it, the URL naming it.
#[tokio::test]
async fn both_sids_of_a_notification_sent_twice_attach_to_it() {
    let s = setup(vec![Callback::status("delivered")]).await;
    s.app
        .push(&envelope(&report("LR-T1", Some(NUMBER)), "t1", 1))
        .await;
    let first = s.twilio.wait_for_messages(1, WAIT).await.unwrap()[0].clone();
    // The lost send's SID, never recorded, reported on the same URL.
    let url = first.status_callback.clone().unwrap();
    let params = [
        ("MessageSid", "SMlostsend"),
        ("MessageStatus", "delivered"),
        ("To", NUMBER),
    ];
    assert_eq!(
        s.twilio.post_webhook(&url, &params, None).await.unwrap(),
        204
    );
    s.twilio.wait_for_callback_answers(1, WAIT).await.unwrap();
    let a = stored(&s.log, &first.sid).await.unwrap();
    let b = stored(&s.log, "SMlostsend").await.unwrap();
    assert_eq!(
        (&a.report_id, &a.content_hash),
        (&b.report_id, &b.content_hash)
    );
    assert_eq!(a.report_id.as_deref(), Some("LR-T1"));
    s.app.stop().await.unwrap();
}

/// A message that failed as unsubscribed (21610, reported late) suppresses
/// its number.
#[tokio::test]
async fn a_late_21610_suppresses_the_number() {
    let s = setup(vec![Callback::error("failed", 21610)]).await;
    s.app
        .push(&envelope(&report("LR-U1", Some(NUMBER)), "u1", 1))
        .await;
    s.twilio.wait_for_callback_answers(1, WAIT).await.unwrap();
    let answer = s
        .app
        .push(&envelope(&report("LR-U2", Some(NUMBER)), "u2", 1))
        .await;
    assert_eq!(answer.headers()["x-labrelay-outcome"], "suppressed");
    assert_eq!(s.twilio.requests(), 1);
    s.app.stop().await.unwrap();
}
