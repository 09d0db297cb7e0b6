use std::time::Duration;

use labrelay_testkit::twilio::{Mode, TwilioStandIn};

use crate::helpers::*;

/// A push in flight when the shutdown signal arrives still gets its answer,
/// and `run` returns once it has.
#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let twilio = TwilioStandIn::start(SID, TOKEN).await.unwrap();
    let settings = with_twilio(twilio_settings(&twilio), |t| {
        t.timeout = Duration::from_millis(400)
    });
    let mut app = spawn_app(settings).await;
    twilio.set_mode(Mode::Hang);
    let push = envelope(&report("LR-30", Some("+15551234567")), "m30", 1);
    let (client, address) = (app.client.clone(), app.address.clone());
    let in_flight =
        tokio::spawn(async move { client.post(address).body(push.to_string()).send().await });
    twilio.wait_for_requests(1, WAIT).await.unwrap();

    app.begin_shutdown();
    let address = app.address.clone();
    tokio::time::timeout(WAIT, app.stopped())
        .await
        .unwrap()
        .unwrap();

    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight was answered");
    assert_eq!(response.status(), 503);
    let refused = reqwest::Client::new()
        .get(format!("{address}/healthz"))
        .send()
        .await;
    assert!(refused.is_err(), "no new connections after shutdown");
}

#[tokio::test]
async fn an_idle_service_stops_at_once() {
    let (_twilio, app) = spawn_with_twilio().await;
    assert_eq!(app.push_body("{}").await.status(), 400);
    tokio::time::timeout(WAIT, app.stop())
        .await
        .unwrap()
        .unwrap();
}
