//! The one push handler in process (`oneshot`), with a channel that
//! records what it was asked to send: what each push is answered, and that
//! the notification log keeps a redelivery from sending again, also when
//! the send outlives the channel's answer time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use labrelay_contract::LabReport;
use labrelay_receiver::notify_log::NotifyLogSetting;
use labrelay_receiver::settings::PushAnswer;
use labrelay_receiver::{Channel, Failure, NotSent, ReceiverSettings};
use labrelay_testkit::push::Push;
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// Sends to a list; `owner.phone` stands for the address. A `pet.name` of
/// "slow" makes the send take 300 ms, "refused" makes it fail for good,
/// "unanswered" makes the provider take the message and never answer.
#[derive(Clone, Default)]
struct ListChannel {
    sent: Arc<Mutex<Vec<String>>>,
    /// What the rendered text starts with: the template.
    template: &'static str,
    /// The text of each note sent.
    texts: Arc<Mutex<Vec<String>>>,
}

struct Note {
    to: String,
    pet: String,
    text: String,
}

impl Channel for ListChannel {
    type Message = Note;

    const NAME: &'static str = "test";
    const NOUN: &'static str = "note";
    const SERVICE: &'static str = "test-service";

    fn answer_within(&self) -> Duration {
        Duration::from_millis(100)
    }

    fn render(&self, report: &LabReport, _message_id: &str) -> Result<Note, NotSent> {
        let Some(to) = report.owner.phone.clone() else {
            return Err(NotSent::Skipped("no address"));
        };
        let pet = report.pet.name.clone().unwrap_or_default();
        let results: Vec<String> = report.tests.iter().map(|t| t.value_text()).collect();
        Ok(Note {
            to,
            text: format!("{}, {pet}: {}", self.template, results.join(", ")),
            pet,
        })
    }

    fn recipient<'m>(&self, note: &'m Note) -> &'m str {
        &note.to
    }

    async fn send(&self, note: &Note) -> Result<Option<String>, Failure> {
        match note.pet.as_str() {
            "refused" => return Err(Failure::permanent("refused", "refused", "refused")),
            "slow" => tokio::time::sleep(Duration::from_millis(300)).await,
            "unanswered" => {
                self.sent.lock().unwrap().push(note.to.clone());
                std::future::pending::<()>().await;
            }
            _ => {}
        }
        self.texts.lock().unwrap().push(note.text.clone());
        let mut sent = self.sent.lock().unwrap();
        sent.push(note.to.clone());
        Ok(Some(format!("note-{}", sent.len())))
    }

    fn describe(&self) -> String {
        "a list".into()
    }
}

fn push(report: Value, message_id: &str) -> Request<Body> {
    let push = Push::report("projects/p/subscriptions/test-sub", &report).message_id(message_id);
    Request::post("/")
        .header("content-type", "application/json")
        .body(Body::from(push.body()))
        .unwrap()
}

async fn answer(app: &axum::Router, request: Request<Body>) -> (StatusCode, String, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let outcome = response.headers()["x-labrelay-outcome"]
        .to_str()
        .unwrap()
        .to_string();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, outcome, body)
}

fn with_log(dir: &std::path::Path) -> ReceiverSettings {
    ReceiverSettings {
        notify_log: NotifyLogSetting::Sqlite(dir.join("n.db")),
        ..ReceiverSettings::default()
    }
}

#[tokio::test]
async fn answers_each_push_with_what_became_of_it() {
    let channel = ListChannel::default();
    let app = labrelay_receiver::app(channel.clone(), &ReceiverSettings::default()).unwrap();
    let cases = [
        (
            push(json!({"id": 1, "owner": {"phone": "a"}}), "1"),
            (StatusCode::NO_CONTENT, "sent"),
        ),
        (
            push(json!({"id": 2}), "2"),
            (StatusCode::NO_CONTENT, "skipped"),
        ),
        (
            push(
                json!({"id": 3, "owner": {"phone": "b"}, "pet": {"name": "refused"}}),
                "3",
            ),
            (StatusCode::UNPROCESSABLE_ENTITY, "failed"),
        ),
        (
            Request::post("/").body(Body::from("[]")).unwrap(),
            (StatusCode::BAD_REQUEST, "failed"),
        ),
    ];
    for (request, (status, outcome)) in cases {
        let (got_status, got_outcome, body) = answer(&app, request).await;
        assert_eq!((got_status, got_outcome.as_str()), (status, outcome));
        assert_eq!(body.get("error").is_some(), !status.is_success(), "{body}");
    }
    assert_eq!(*channel.sent.lock().unwrap(), ["a"]);
}

#[tokio::test]
async fn a_redelivery_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let channel = ListChannel::default();
    let app = labrelay_receiver::app(channel.clone(), &with_log(dir.path())).unwrap();
    let report = json!({"id": "R-1", "owner": {"phone": "a"}});
    let first = answer(&app, push(report.clone(), "1")).await;
    assert_eq!(
        (first.0, first.1.as_str()),
        (StatusCode::NO_CONTENT, "sent")
    );
    let again = answer(&app, push(report, "2")).await;
    assert_eq!(
        (again.0, again.1.as_str()),
        (StatusCode::NO_CONTENT, "duplicate")
    );
    assert_eq!(channel.sent.lock().unwrap().len(), 1);
}

/// A rolling deploy that changes the template: the revision before and the
/// one after share the notification log, and the message is delivered to
/// each in turn.
#[tokio::test]
async fn a_template_change_between_two_deliveries_sends_once() {
    let dir = tempfile::tempdir().unwrap();
    let before = ListChannel {
        template: "Results are ready",
        ..ListChannel::default()
    };
    let after = ListChannel {
        template: "New results for your pet",
        ..before.clone()
    };
    let before_app = labrelay_receiver::app(before.clone(), &with_log(dir.path())).unwrap();
    let after_app = labrelay_receiver::app(after, &with_log(dir.path())).unwrap();
    let report = json!({"id": "R-T", "owner": {"phone": "a"}, "pet": {"name": "Max"},
        "tests": [{"name": "ALT", "value": 42}]});

    let first = answer(&before_app, push(report.clone(), "1")).await;
    assert_eq!(first.1, "sent");
    let redelivered = answer(&after_app, push(report.clone(), "1")).await;
    assert_eq!(
        (redelivered.0, redelivered.1.as_str()),
        (StatusCode::NO_CONTENT, "duplicate")
    );

    // A corrected report (same id, another result) is sent, in the new
    // template.
    let mut corrected = report;
    corrected["tests"][0]["value"] = json!(43);
    let sent = answer(&after_app, push(corrected, "2")).await;
    assert_eq!((sent.0, sent.1.as_str()), (StatusCode::NO_CONTENT, "sent"));
    assert_eq!(
        *before.texts.lock().unwrap(),
        [
            "Results are ready, Max: 42",
            "New results for your pet, Max: 43"
        ]
    );
}

#[tokio::test]
async fn a_send_outliving_the_answer_time_goes_on_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let channel = ListChannel::default();
    let app = labrelay_receiver::app(channel.clone(), &with_log(dir.path())).unwrap();
    let report = json!({"id": "R-2", "owner": {"phone": "a"}, "pet": {"name": "slow"}});
    let (status, outcome, body) = answer(&app, push(report.clone(), "1")).await;
    assert_eq!(
        (status, outcome.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "failed")
    );
    assert_eq!(body["error"], "the note is still being sent; retry later");
    // The send goes on and is recorded: redeliveries wait on the key's
    // lock (answered 503 while it is held), then find the record.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        let again = answer(&app, push(report.clone(), "2")).await;
        if again.0 != StatusCode::SERVICE_UNAVAILABLE {
            break again;
        }
        assert!(tokio::time::Instant::now() < deadline, "{again:?}");
    };
    assert_eq!(
        (again.0, again.1.as_str()),
        (StatusCode::NO_CONTENT, "duplicate")
    );
    assert_eq!(channel.sent.lock().unwrap().len(), 1);
}

/// With `PUSH_ANSWER=when-done` (Cloud Run's default) the same slow send
/// is waited for: answered once it is done, nothing left running after.
#[tokio::test]
async fn answered_when_done_a_slow_send_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let channel = ListChannel::default();
    let settings = ReceiverSettings {
        push_answer: PushAnswer::WhenDone,
        ..with_log(dir.path())
    };
    let app = labrelay_receiver::app(channel.clone(), &settings).unwrap();
    let report = json!({"id": "R-9", "owner": {"phone": "a"}, "pet": {"name": "slow"}});
    let (status, outcome, _) = answer(&app, push(report, "1")).await;
    assert_eq!((status, outcome.as_str()), (StatusCode::NO_CONTENT, "sent"));
    assert_eq!(channel.sent.lock().unwrap().len(), 1);
}

/// The provider takes the message and never answers: the handler cuts the
/// attempt off at its limit (4 × 100 ms) without knowing whether it went
/// out, so it keeps the claim, and the redeliveries queued behind it, or
/// arriving every 100 ms after it, are answered 503 instead of sending
/// once each.
#[tokio::test]
async fn a_send_cut_off_at_its_limit_keeps_its_claim_and_redeliveries_wait() {
    let dir = tempfile::tempdir().unwrap();
    let channel = ListChannel::default();
    let app = labrelay_receiver::app(channel.clone(), &with_log(dir.path())).unwrap();
    let report = json!({"id": "R-3", "owner": {"phone": "a"}, "pet": {"name": "unanswered"}});
    let started = tokio::time::Instant::now();
    let mut attempt = 0;
    let mut outcomes = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_millis(1500) {
        attempt += 1;
        let (status, outcome, body) =
            answer(&app, push(report.clone(), &attempt.to_string())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{outcome} {body}");
        outcomes.insert(body["error"].as_str().unwrap_or_default().to_string());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(attempt >= 6, "{attempt}");
    assert_eq!(*channel.sent.lock().unwrap(), ["a"], "{outcomes:?}");
}
