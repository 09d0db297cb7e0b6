//! The fault suite: the whole system as separate `labrelay` processes, a
//! steady stream of hundreds of reports, and one fault per test while the
//! stream flows. Each test then waits for quiet and counts: reports
//! answered 204, emails and SMS delivered, duplicates, lost. Lost must be 0
//! on both channels; a duplicate is allowed only where a process died (or
//! the provider's answer was lost, or the attempt was cut off at its limit)
//! between the provider accepting a notification and the notification log
//! recording it, and the tests check each one against that window.
//!
//! Every test prints one `FAULT-SUMMARY {json}` line; docs/reliability.md's
//! table is made from them:
//! `cargo nextest run --test system faults:: --success-output immediate 2>&1 | grep -o 'FAULT-SUMMARY .*'`
//! (in parallel; `--no-capture` runs them one at a time).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use labrelay_testkit::system::{
    self, Part, Pipeline, Posted, Settings, Stream, Tally, now_ns, summary,
};
use labrelay_testkit::{smtp, twilio};
use serde_json::json;

use crate::LABRELAY;

/// Reports per scenario, the rate they are posted at and how many posters
/// post at once: hundreds of reports in a few seconds, so that every fault
/// lands mid-stream.
const REPORTS: usize = 300;
const RATE: f64 = 60.0;
const POSTERS: usize = 8;

/// Bounds for the waits; a healthy run takes a fraction of each.
const STREAM: Duration = Duration::from_secs(60);
const QUIET_LIMIT: Duration = Duration::from_secs(120);

/// How long after a SIGKILL the SMTP server may still store a message the
/// dead process had finished sending.
const IN_FLIGHT_MARGIN: Duration = Duration::from_millis(500);

fn start_stream(pipeline: &Pipeline) -> Stream {
    Stream::start(pipeline.lab_url(), REPORTS, RATE, POSTERS)
}

/// How long nothing may happen on either channel before the system counts
/// as quiet: longer than any retry backoff, so a pending redelivery shows.
fn quiet(settings: &Settings) -> Duration {
    settings.max_backoff + Duration::from_secs(2)
}

/// Waits until every report `posted` got a 204 for has been delivered on
/// both channels and nothing has happened for a while; see
/// `Pipeline::await_quiet`.
async fn settle(pipeline: &Pipeline, posted: &Posted) -> (Tally, Instant) {
    pipeline
        .await_quiet(&posted.accepted, quiet(&pipeline.settings), QUIET_LIMIT)
        .await
}

fn assert_nothing_lost(posted: &Posted, tally: &Tally) {
    assert!(
        posted.accepted.len() >= REPORTS / 2,
        "too few reports got through to mean anything: {posted:?}"
    );
    assert_eq!(
        tally.lost(&posted.accepted),
        (0, 0),
        "reports answered 204 but never delivered (email, sms)"
    );
}

/// Checks every duplicated email against the window a duplicate may come
/// from: the same message (same Message-ID), first stored by the SMTP
/// server before `window_end_ns` (the fault, plus a margin for what was
/// already on the wire): the server accepted it, then the push handling it
/// died (or lost the answer) before the notification log recorded it.
/// Returns, per duplicated report, when its first copy was stored relative
/// to the fault (ms, negative: before).
fn email_duplicates_within(tally: &Tally, fault_ns: u128, margin: Duration) -> Vec<i64> {
    let window_end_ns = fault_ns + margin.as_nanos();
    let mut offsets = Vec::new();
    for (report, copies) in tally.duplicated_emails() {
        assert!(
            copies.iter().all(|c| c.message_id == copies[0].message_id),
            "report {report} was emailed with different contents: {copies:?}"
        );
        let offset_ms = (copies[0].stored_ns as i128 - fault_ns as i128) / 1_000_000;
        assert!(
            copies[0].stored_ns <= window_end_ns,
            "report {report} was emailed {} times, the first {offset_ms} ms after the fault: {copies:?}",
            copies.len()
        );
        offsets.push(offset_ms as i64);
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_sigkilled_mid_stream_and_restarted_on_its_data() {
    let started = Instant::now();
    let mut pipeline = Pipeline::start(LABRELAY, Settings::default()).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 3, STREAM).await;

    pipeline.kill(Part::Broker);
    // While it is down the lab-report-service answers 503, not 204.
    stream.wait_refused(8, STREAM).await;
    pipeline.start_part(Part::Broker);
    let healed = Instant::now();

    let posted = stream.finish().await;
    let (tally, complete) = settle(&pipeline, &posted).await;
    summary(
        "broker SIGKILL mid-stream, restarted on the same data dir",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({}),
    );
    assert_nothing_lost(&posted, &tally);
    assert!(posted.refused.contains_key("503"), "{:?}", posted.refused);
    // No push service died: what the broker had in flight when it died is
    // still sent and recorded by the service, and the redelivery finds it.
    assert_eq!(tally.duplicates(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_service_sigkilled_and_restarted() {
    let started = Instant::now();
    let mut pipeline = Pipeline::start(LABRELAY, Settings::default()).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 3, STREAM).await;

    pipeline.kill(Part::Email);
    let killed_ns = now_ns();
    // Reports keep coming and are acknowledged while it is down.
    stream.wait_answered(2 * REPORTS / 3, STREAM).await;
    pipeline.start_part(Part::Email);
    let healed = Instant::now();

    let posted = stream.finish().await;
    let (tally, complete) = settle(&pipeline, &posted).await;
    let offsets = email_duplicates_within(&tally, killed_ns, IN_FLIGHT_MARGIN);
    summary(
        "email-service SIGKILL mid-stream, restarted",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({"duplicates_first_stored_ms_from_kill": offsets}),
    );
    assert_nothing_lost(&posted, &tally);
    assert_eq!(tally.duplicates().1, 0, "no SMS twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_sigterm_mid_stream_exits_cleanly_and_resumes() {
    let started = Instant::now();
    let mut pipeline = Pipeline::start(LABRELAY, Settings::default()).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 3, STREAM).await;

    let (status, took) = pipeline
        .terminate(Part::Broker, Duration::from_secs(15))
        .await;
    stream.wait_refused(8, STREAM).await;
    pipeline.start_part(Part::Broker);
    let healed = Instant::now();

    let posted = stream.finish().await;
    let (tally, complete) = settle(&pipeline, &posted).await;
    summary(
        "broker SIGTERM mid-stream, restarted on the same data dir",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({
            "exit_secs": (took.as_secs_f64() * 100.0).round() / 100.0,
            "exit_code": status.and_then(|s| s.code()),
        }),
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    assert_nothing_lost(&posted, &tally);
    assert_eq!(tally.duplicates(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_service_sigterm_drains_its_pushes() {
    let started = Instant::now();
    let mut pipeline = Pipeline::start(LABRELAY, Settings::default()).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 3, STREAM).await;

    let (status, took) = pipeline
        .terminate(Part::Email, Duration::from_secs(15))
        .await;
    stream.wait_answered(2 * REPORTS / 3, STREAM).await;
    pipeline.start_part(Part::Email);
    let healed = Instant::now();

    let posted = stream.finish().await;
    let (tally, complete) = settle(&pipeline, &posted).await;
    summary(
        "email-service SIGTERM mid-stream, restarted",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({
            "exit_secs": (took.as_secs_f64() * 100.0).round() / 100.0,
            "exit_code": status.and_then(|s| s.code()),
        }),
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    assert_nothing_lost(&posted, &tally);
    // A drain finishes what it started: sent and recorded, never sent twice.
    assert_eq!(tally.duplicates(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twilio_answers_500_then_429_with_retry_after() {
    let started = Instant::now();
    let pipeline = Pipeline::start(LABRELAY, Settings::default()).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 4, STREAM).await;

    pipeline.twilio.set_mode(twilio::Mode::ServerError);
    let before = pipeline.twilio.requests();
    pipeline
        .twilio
        .wait_for_requests(before + 60, STREAM)
        .await
        .unwrap();
    pipeline.twilio.set_mode(twilio::Mode::TooManyRequests {
        retry_after: Some(1),
    });
    let before = pipeline.twilio.requests();
    pipeline
        .twilio
        .wait_for_requests(before + 60, STREAM)
        .await
        .unwrap();
    pipeline.twilio.set_mode(twilio::Mode::Accept);
    let healed = Instant::now();

    let posted = stream.finish().await;
    let (tally, complete) = settle(&pipeline, &posted).await;
    let refused = pipeline.twilio.requests() - pipeline.twilio.messages().len();
    summary(
        "Twilio answers 500, then 429 with Retry-After: 1",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({"twilio_requests_refused": refused}),
    );
    assert_nothing_lost(&posted, &tally);
    assert!(refused >= 100, "{refused} requests refused");
    assert_eq!(tally.duplicates(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_server_down_then_back_on_the_same_port() {
    let started = Instant::now();
    let mut pipeline = Pipeline::start(LABRELAY, Settings::default()).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 3, STREAM).await;

    pipeline.smtp.stop().await.unwrap();
    let stopped_ns = now_ns();
    stream.wait_answered(2 * REPORTS / 3, STREAM).await;
    let backlog = stream.answered() - pipeline.tally().emails.len();
    pipeline.smtp.restart().await.unwrap();
    let healed = Instant::now();

    let posted = stream.finish().await;
    let (tally, complete) = settle(&pipeline, &posted).await;
    // Killing the server can lose its 250 for a message it stored.
    let offsets = email_duplicates_within(&tally, stopped_ns, Duration::ZERO);
    summary(
        "SMTP server down (killed), then back on the same port",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({"emails_waiting_at_restart": backlog, "duplicates_first_stored_ms_from_stop": offsets}),
    );
    assert_nothing_lost(&posted, &tally);
    assert!(backlog >= REPORTS / 4, "only {backlog} emails were held up");
    assert_eq!(tally.duplicates().1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_server_slower_than_the_ack_deadline() {
    let started = Instant::now();
    let settings = Settings {
        ack_deadline_secs: 10,
        // Longer than the ack deadline: the broker gives up on a push
        // before the email-service gives up on the SMTP server.
        smtp_timeout_secs: 30,
        ..Settings::default()
    };
    let slow = Duration::from_secs(12);
    let pipeline = Pipeline::start(LABRELAY, settings).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 3, STREAM).await;

    pipeline.smtp.set_mode(smtp::Mode::Slow(slow));
    let slow_from = Instant::now();
    let posted = stream.finish().await;
    // The fault lasts long enough for the first slowed pushes to pass their
    // deadline and be redelivered while the server is still slow.
    tokio::time::sleep_until((slow_from + slow + Duration::from_secs(2)).into()).await;
    pipeline.smtp.set_mode(smtp::Mode::Accept);
    let healed = Instant::now();
    // What the server is still sitting on comes out within `slow`.
    let received = pipeline.smtp.data_count();
    pipeline
        .smtp
        .wait_for_messages(received, slow + Duration::from_secs(5))
        .await
        .unwrap();

    let (tally, complete) = settle(&pipeline, &posted).await;
    // Redeliveries of pushes the broker gave up on, answered from the log.
    let redelivered = pipeline
        .metric(
            Part::Email,
            "labrelay_notifications_total",
            "outcome=\"duplicate\"",
        )
        .await;
    summary(
        "SMTP server answers DATA after 12 s, past the 10 s ack deadline",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({"redeliveries_not_sent_again": redelivered}),
    );
    assert!(
        redelivered >= 10.0,
        "{redelivered} redeliveries found the log"
    );
    assert_nothing_lost(&posted, &tally);
    // The broker gives up on each slow push and redelivers it, but the
    // first delivery still finishes: it sends, records, and the redelivery
    // (waiting on the same notification) finds the record.
    assert_eq!(tally.duplicates(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lab_report_service_sigterm_under_load() {
    let started = Instant::now();
    let mut pipeline = Pipeline::start(LABRELAY, Settings::default()).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 2, STREAM).await;

    // Hold the broker (SIGSTOP) so that every poster's report is in
    // flight, waiting for its publish, when the SIGTERM comes.
    let broker = pipeline.pid(Part::Broker);
    signal(broker, "STOP");
    stream.wait_in_flight(POSTERS, STREAM).await;
    // Nothing tells when the last post has reached the service (rather than
    // the listen queue); on loopback it takes far less than this.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let term_at = Instant::now();
    let resume = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        signal(broker, "CONT");
    };
    let ((status, took), ()) = tokio::join!(
        pipeline.terminate(Part::LabReport, Duration::from_secs(15)),
        resume
    );
    pipeline.start_part(Part::LabReport);
    let healed = Instant::now();

    let posted = stream.finish().await;
    let in_flight = posted.in_flight_at(term_at);
    let (tally, complete) = settle(&pipeline, &posted).await;
    summary(
        "lab-report-service SIGTERM under load (publishes held), then started again",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({
            "exit_secs": (took.as_secs_f64() * 100.0).round() / 100.0,
            "exit_code": status.and_then(|s| s.code()),
            "in_flight_at_sigterm": in_flight,
        }),
    );
    assert!(
        took < Duration::from_secs(10),
        "Cloud Run kills after 10 s; it took {took:?}"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    // The drain answered every report it had taken.
    assert_eq!(
        in_flight, ["204"; POSTERS],
        "answers to the posts in flight"
    );
    assert_nothing_lost(&posted, &tally);
    assert_eq!(tally.duplicates(), (0, 0));
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_message_ends_in_the_dead_letter_topic_while_reports_flow() {
    let started = Instant::now();
    let pipeline = Pipeline::start(LABRELAY, Settings::default()).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 2, STREAM).await;
    let poison: &[u8] = b"\xff\xfe not a lab report {";
    let poison_id = pipeline
        .publish_raw(poison, json!({"reportId": "poison-1"}))
        .await;

    let posted = stream.finish().await;
    let letters = pipeline.dead_letters(2, QUIET_LIMIT).await;
    let (tally, _) = settle(&pipeline, &posted).await;
    summary(
        "poison message (undecodable data) published mid-stream",
        &posted,
        &tally,
        None,
        started.elapsed(),
        json!({"dead_letters": letters.len()}),
    );
    assert_nothing_lost(&posted, &tally);
    assert_eq!(tally.duplicates(), (0, 0));
    assert!(
        tally
            .emails
            .keys()
            .chain(tally.sms.keys())
            .all(|id| id.starts_with("FR-")),
        "nothing but reports was sent"
    );
    let sources: BTreeSet<_> = letters
        .iter()
        .map(|m| {
            let attributes = &m["attributes"];
            assert_eq!(m["data"], json!(base64_of(poison)), "{m}");
            assert_eq!(attributes["reportId"], "poison-1", "{m}");
            // Parked by the receiver on its first delivery, not by the
            // subscription after its attempts.
            assert_eq!(
                attributes["CloudPubSubDeadLetterSourceDeliveryCount"], "1",
                "{m}"
            );
            assert_eq!(
                attributes["CloudPubSubDeadLetterSourceSubscriptionProject"],
                system::PROJECT,
                "{m}"
            );
            assert!(
                attributes["CloudPubSubDeadLetterSourceDeliveryErrorMessage"]
                    .as_str()
                    .is_some_and(|e| e.contains("HTTP 400")),
                "{m}"
            );
            attributes["CloudPubSubDeadLetterSourceSubscription"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        sources,
        BTreeSet::from([
            "email-service-sub".to_string(),
            "sms-service-sub".to_string()
        ]),
        "one dead letter from each subscription (message {poison_id})"
    );
}

fn base64_of(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("labrelay-full-disk-")
            .tempdir()
            .unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            output.status.success(),
            "this test mounts a small tmpfs for the broker's data and needs root (or CAP_SYS_ADMIN): \
             mount -t tmpfs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs { dir }
    }

    /// Writes a file until the file system is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_disk_full_then_space_returns() {
    let started = Instant::now();
    // Declared first, dropped (unmounted) after the broker is gone.
    let disk = Tmpfs::mount("32m");
    let settings = Settings {
        broker_data: Some(disk.dir.path().join("broker")),
        ..Settings::default()
    };
    let pipeline = Pipeline::start(LABRELAY, settings).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 3, STREAM).await;

    let filler = disk.fill();
    let filled_at = stream.snapshot();
    // Publishes fail: the lab is told 503, never 204.
    stream.wait_refused(10, STREAM).await;
    let answered_while_full = stream.answered() - filled_at.accepted.len();
    std::fs::remove_file(&filler).unwrap();
    let healed = Instant::now();
    let answered_at_heal = stream.answered();
    // The broker takes reports again.
    stream.wait_answered(answered_at_heal + 20, STREAM).await;

    let posted = stream.finish().await;
    let (tally, complete) = settle(&pipeline, &posted).await;
    summary(
        "broker's data dir full (tmpfs), then space freed",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({"answered_204_while_full": answered_while_full}),
    );
    assert_nothing_lost(&posted, &tally);
    assert!(posted.refused.contains_key("503"), "{:?}", posted.refused);
    assert_eq!(tally.duplicates(), (0, 0));
}

/// The email-service's `labrelay_notifications_total` by outcome, the
/// outcomes that occurred.
async fn email_outcomes(pipeline: &Pipeline, part: Part) -> serde_json::Value {
    let mut outcomes = serde_json::Map::new();
    for outcome in [
        "sent",
        "duplicate",
        "failed_transient",
        "failed_permanent",
        "dead_lettered",
    ] {
        let n = pipeline
            .metric(
                part,
                "labrelay_notifications_total",
                &format!("outcome=\"{outcome}\""),
            )
            .await;
        if n > 0.0 {
            outcomes.insert(outcome.into(), json!(n));
        }
    }
    outcomes.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_refuses_every_email_for_longer_than_five_attempts_allow() {
    let started = Instant::now();
    let pipeline = Pipeline::start(LABRELAY, Settings::default()).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 3, STREAM).await;

    // About ten attempts at 0.5–2 s backoff: twice what a 5-attempt
    // limit let a report live through.
    pipeline.smtp.set_mode(smtp::Mode::TempFail);
    tokio::time::sleep(Duration::from_secs(20)).await;
    pipeline.smtp.set_mode(smtp::Mode::Accept);
    let healed = Instant::now();

    let posted = stream.finish().await;
    let (tally, complete) = settle(&pipeline, &posted).await;
    let parked = pipeline.dead_letters_now().await;
    let attempts = pipeline
        .metric(Part::Email, "labrelay_push_delivery_attempt_count", "")
        .await;
    let up_to_five = pipeline
        .metric(
            Part::Email,
            "labrelay_push_delivery_attempt_bucket",
            "le=\"5.0\"",
        )
        .await;
    let outcomes = email_outcomes(&pipeline, Part::Email).await;
    summary(
        "SMTP server answers 451 to every email for 20 s, then accepts",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({
            "pushes_past_a_fifth_attempt": attempts - up_to_five,
            "dead_letters": parked.len(),
            "email_outcomes": outcomes,
        }),
    );
    assert_nothing_lost(&posted, &tally);
    assert_eq!(tally.duplicates(), (0, 0));
    assert!(
        attempts - up_to_five >= 10.0,
        "{} pushes past a fifth attempt: the outage was not longer than 5 attempts",
        attempts - up_to_five
    );
    assert!(parked.is_empty(), "parked: {parked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_answers_later_than_the_attempt_limit_then_refuses_after_the_data() {
    let started = Instant::now();
    // The envelope's limit 4 × 1 s, the wait for the answer to the data
    // SMTP_DATA_TIMEOUT_SECS (300 s); the claim's lease 10 + 4 + 10 + 5 =
    // 29 s, renewed while the attempt runs.
    let settings = Settings {
        smtp_timeout_secs: 1,
        ..Settings::default()
    };
    let slow = Duration::from_secs(6);
    let lease = Duration::from_secs(29);
    let pipeline = Pipeline::start(LABRELAY, settings).await;
    let stream = start_stream(&pipeline);
    // Early, so that reports still flow when the refusals come.
    stream.wait_answered(REPORTS / 6, STREAM).await;

    // Each attempt in this phase has its final "." answered after 6 s,
    // past the 4 s at which it used to be cut off (its outcome unknown,
    // sent again once its claim lapsed); the server keeps the message.
    let slow_from_ns = now_ns();
    pipeline.smtp.set_mode(smtp::Mode::Slow(slow));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Then every message is refused once its data is in: a connection
    // reused after a cut-off attempt would read the late answer to an
    // earlier "." as this one's, and record a refused email as sent.
    pipeline.smtp.set_mode(smtp::Mode::TempFailAfterData);
    let slow_until_ns = now_ns();
    pipeline.smtp.wait_for_rejections(20, STREAM).await.unwrap();
    pipeline.smtp.set_mode(smtp::Mode::Accept);
    let healed = Instant::now();

    let posted = stream.finish().await;
    let (_, complete) = settle(&pipeline, &posted).await;
    // A cut-off attempt kept its claim until the lease lapsed, and the
    // first delivery after that sent again: wait past that (lease and
    // answer from the last slowed message), so that such a copy would be
    // counted.
    let slowed = pipeline.smtp.slowed();
    let copies_of_slowed = || {
        let stored: Vec<_> = pipeline
            .smtp
            .messages()
            .into_iter()
            .filter_map(|m| m.message_id().map(str::to_string))
            .collect();
        slowed
            .iter()
            .filter(|id| stored.iter().filter(|s| s == id).count() >= 2)
            .count()
    };
    let bound = Instant::now() + lease + slow + Duration::from_secs(5);
    while copies_of_slowed() < slowed.len() && Instant::now() < bound {
        let events = pipeline.smtp.events();
        pipeline
            .smtp
            .wait_for_event_after(events, Duration::from_secs(1))
            .await;
    }
    let (tally, _) = settle(&pipeline, &posted).await;
    let refused = pipeline.smtp.refused_after_data();
    let outcomes = email_outcomes(&pipeline, Part::Email).await;
    let sent = pipeline
        .metric(
            Part::Email,
            "labrelay_notifications_total",
            "outcome=\"sent\"",
        )
        .await;
    let stored_ids: BTreeSet<_> = tally
        .emails
        .values()
        .flatten()
        .map(|e| e.message_id.clone())
        .collect();
    let duplicated: Vec<_> = tally
        .duplicated_emails()
        .into_iter()
        .map(|(report, copies)| (report.clone(), copies.len()))
        .collect();
    summary(
        "SMTP answers the final dot after 6 s (old attempt limit 4 s, SMTP_DATA_TIMEOUT_SECS 300 s) for 2 s, then 451 after the data 20 times",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({
            "slowed_messages": slowed.len(),
            "slowed_from_ns": slow_from_ns,
            "slowed_until_ns": slow_until_ns,
            "slowed_stored_twice": copies_of_slowed(),
            "waited_after_settling_s": (lease + slow + Duration::from_secs(5)).as_secs(),
            "duplicated_reports": duplicated,
            "refused_after_data": refused.len(),
            "email_outcomes": outcomes,
        }),
    );
    assert_nothing_lost(&posted, &tally);
    // Each slowed email waited for its answer and was recorded: none sent
    // again, by a redelivery or after a lapsed claim.
    assert_eq!(tally.duplicates(), (0, 0), "{duplicated:?}");
    assert_eq!(copies_of_slowed(), 0);
    assert!(
        !slowed.is_empty() && !refused.is_empty(),
        "the faults did not bite"
    );
    // Every message the server refused went out later: none was taken for
    // sent on a connection reading stale answers.
    let refused_never_stored: Vec<_> = refused
        .iter()
        .filter(|id| !stored_ids.contains(*id))
        .collect();
    assert!(refused_never_stored.is_empty(), "{refused_never_stored:?}");
    // One "sent" per report emailed: no refused email was counted as
    // sent.
    assert_eq!(sent as usize, tally.emails.len(), "{outcomes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_email_instances_with_other_templates_share_one_log_behind_a_balancer() {
    let started = Instant::now();
    let new_from = "Pet Theory Results <results@new-revision.example>";
    let settings = Settings {
        ack_deadline_secs: 10,
        smtp_timeout_secs: 30,
        second_email: Some(system::SecondEmail {
            from: new_from.into(),
            own_pid_namespace: true,
        }),
        ..Settings::default()
    };
    let slow = Duration::from_secs(12);
    let pipeline = Pipeline::start(LABRELAY, settings).await;
    let namespaced = pipeline.second_email_namespaced() == Some(true);
    eprintln!(
        "second email-service: {}",
        if namespaced {
            "in its own PID namespace (unshare)"
        } else {
            "a plain process (unshare refused)"
        }
    );
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 3, STREAM).await;

    // Slower than the ack deadline: the broker gives up on a push while
    // its instance still sends, and the redelivery may land on the other.
    pipeline.smtp.set_mode(smtp::Mode::Slow(slow));
    let slow_from = Instant::now();
    let posted = stream.finish().await;
    tokio::time::sleep_until((slow_from + slow + Duration::from_secs(2)).into()).await;
    pipeline.smtp.set_mode(smtp::Mode::Accept);
    let healed = Instant::now();
    let received = pipeline.smtp.data_count();
    pipeline
        .smtp
        .wait_for_messages(received, slow + Duration::from_secs(5))
        .await
        .unwrap();

    let (tally, complete) = settle(&pipeline, &posted).await;
    let first = email_outcomes(&pipeline, Part::Email).await;
    let second = email_outcomes(&pipeline, Part::SecondEmail).await;
    let held = |part| {
        pipeline
            .log(part)
            .lines()
            .filter(|l| l.contains("claim_held"))
            .count()
    };
    let (held_first, held_second) = (held(Part::Email), held(Part::SecondEmail));
    let from_new = pipeline
        .smtp
        .messages()
        .iter()
        .filter(|m| m.header("From").is_some_and(|f| f.contains("new-revision")))
        .count();
    summary(
        "two email-service instances (other EMAIL_FROM) on one SQLite log behind a round-robin proxy, SMTP answering after 12 s (ack deadline 10 s)",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({
            "second_in_own_pid_namespace": namespaced,
            "proxy_connections": pipeline.email_proxy_connections(),
            "first_outcomes": first,
            "second_outcomes": second,
            "claim_held_first": held_first,
            "claim_held_second": held_second,
            "emails_from_second": from_new,
        }),
    );
    assert_nothing_lost(&posted, &tally);
    assert_eq!(tally.duplicates(), (0, 0));
    let count = |outcomes: &serde_json::Value, key: &str| outcomes[key].as_f64().unwrap_or(0.0);
    // Both instances sent (the balancer spread the pushes, and the two
    // render differently), and redeliveries were answered from the shared
    // log, or held while the other instance was still sending.
    assert!(
        count(&first, "sent") > 0.0 && count(&second, "sent") > 0.0,
        "{first} {second}"
    );
    assert!(
        from_new > 0 && from_new < tally.emails_total(),
        "{from_new} from the second"
    );
    assert!(
        count(&first, "duplicate")
            + count(&second, "duplicate")
            + (held_first + held_second) as f64
            >= 10.0,
        "{first} {second} held {held_first} + {held_second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twilio_creates_the_message_and_cuts_its_answer_mid_body() {
    let started = Instant::now();
    let pipeline = Pipeline::start(LABRELAY, Settings::default()).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 4, STREAM).await;

    let cut = 40;
    let before = pipeline.twilio.requests();
    pipeline.twilio.fail_next(cut, twilio::Mode::CutBody);
    pipeline
        .twilio
        .wait_for_requests(before + cut, STREAM)
        .await
        .unwrap();
    let healed = Instant::now();

    let posted = stream.finish().await;
    let (tally, complete) = settle(&pipeline, &posted).await;
    let sent = pipeline
        .metric(
            Part::Sms,
            "labrelay_notifications_total",
            "outcome=\"sent\"",
        )
        .await;
    let outcomes = email_outcomes(&pipeline, Part::Sms).await;
    summary(
        "Twilio answers 201 and cuts the body halfway, for 40 requests",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({"answers_cut": cut, "sms_outcomes": outcomes}),
    );
    assert_nothing_lost(&posted, &tally);
    assert_eq!(tally.duplicates(), (0, 0));
    // Each SMS whose answer was cut counted as sent, once.
    assert_eq!(sent as usize, tally.sms.len(), "{outcomes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_sigkilled_while_dead_lettering_and_restarted_on_its_data() {
    let started = Instant::now();
    // The broker's own dead-letter policy at work: few attempts, quickly.
    let settings = Settings {
        max_delivery_attempts: 5,
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        ..Settings::default()
    };
    let mut pipeline = Pipeline::start(LABRELAY, settings).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 3, STREAM).await;

    pipeline.smtp.set_mode(smtp::Mode::TempFail);
    let fault_from = Instant::now();
    let dead_lettered = async || {
        pipeline
            .metric(
                Part::Broker,
                "labrelay_broker_dead_lettered_messages_total",
                "",
            )
            .await
    };
    let deadline = Instant::now() + STREAM;
    while dead_lettered().await < 5.0 {
        assert!(Instant::now() < deadline, "nothing was dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_kill = dead_lettered().await;
    pipeline.kill(Part::Broker);
    pipeline.start_part(Part::Broker);
    // Reports go on running out of attempts after the restart too.
    tokio::time::sleep_until((fault_from + Duration::from_secs(8)).into()).await;
    pipeline.smtp.set_mode(smtp::Mode::Accept);
    let healed = Instant::now();

    let posted = stream.finish().await;
    // Each report ends in one place: emailed, or one dead letter.
    let mut letters = Vec::new();
    let bound = Instant::now() + QUIET_LIMIT;
    let parked_ids = |letters: &[serde_json::Value]| -> Vec<String> {
        letters
            .iter()
            .map(|m| {
                m["attributes"]["reportId"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string()
            })
            .collect()
    };
    loop {
        letters.extend(pipeline.dead_letters_now().await);
        let parked: BTreeSet<_> = parked_ids(&letters).into_iter().collect();
        let tally = pipeline.tally();
        let open = posted
            .accepted
            .iter()
            .filter(|id| !parked.contains(*id) && !tally.emails.contains_key(*id))
            .count();
        if open == 0 || Instant::now() > bound {
            break;
        }
        let events = pipeline.smtp.events();
        pipeline
            .smtp
            .wait_for_event_after(events, Duration::from_secs(1))
            .await;
    }
    let parked: BTreeSet<_> = parked_ids(&letters).into_iter().collect();
    let expect_email: BTreeSet<_> = posted.accepted.difference(&parked).cloned().collect();
    let (tally, complete) = pipeline
        .await_quiet_for(
            &expect_email,
            &posted.accepted,
            quiet(&pipeline.settings),
            QUIET_LIMIT,
        )
        .await;
    letters.extend(pipeline.dead_letters_now().await);
    let ids = parked_ids(&letters);
    // A dead letter names its source message by the report and the time
    // it was published: two for one source message would be one message
    // dead-lettered twice. Two source messages of one report are the
    // publisher's retry of a publish whose answer died with the broker.
    let mut per_message = std::collections::BTreeMap::<(String, String), usize>::new();
    for m in &letters {
        let attributes = &m["attributes"];
        let source = (
            attributes["reportId"].as_str().unwrap_or("?").to_string(),
            attributes["CloudPubSubDeadLetterSourceTopicPublishTime"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        );
        *per_message.entry(source).or_default() += 1;
    }
    let mut per_report = std::collections::BTreeMap::<&str, usize>::new();
    for id in &ids {
        *per_report.entry(id).or_default() += 1;
    }
    let published_twice = per_report.values().filter(|n| **n > 1).count();
    let twice: Vec<_> = per_message.iter().filter(|(_, n)| **n > 1).collect();
    let both: Vec<_> = per_report
        .keys()
        .filter(|id| tally.emails.contains_key(**id))
        .collect();
    let neither: Vec<_> = posted
        .accepted
        .iter()
        .filter(|id| !per_report.contains_key(id.as_str()) && !tally.emails.contains_key(*id))
        .collect();
    summary(
        "SMTP 451 past a 5-attempt limit; broker SIGKILLed while dead-lettering, restarted on its data",
        &posted,
        &tally,
        Some(complete - healed),
        started.elapsed(),
        json!({
            "dead_lettered_before_kill": before_kill,
            "dead_letters": ids.len(),
            "reports_dead_lettered": per_report.len(),
            "reports_published_twice_both_dead_lettered": published_twice,
            "emailed_and_dead_lettered": both.len(),
            // `lost_email` above counts the dead letters as lost.
            "lost_email_counting_dead_letters": neither.len(),
        }),
    );
    assert!(twice.is_empty(), "dead-lettered twice: {twice:?}");
    assert!(both.is_empty(), "emailed and dead-lettered: {both:?}");
    assert!(
        neither.is_empty(),
        "neither emailed nor dead-lettered: {neither:?}"
    );
    assert!(
        per_report.len() >= 5,
        "the fault parked too little to mean anything"
    );
    assert!(
        letters.iter().all(
            |m| m["attributes"]["CloudPubSubDeadLetterSourceSubscription"] == "email-service-sub"
        ),
        "only emails were failing"
    );
    assert_eq!(tally.lost(&posted.accepted).1, 0, "SMS lost");
    assert_eq!(tally.duplicates(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lab_report_service_sigkilled_with_publishes_in_flight() {
    let started = Instant::now();
    let mut pipeline = Pipeline::start(LABRELAY, Settings::default()).await;
    let stream = start_stream(&pipeline);
    stream.wait_answered(REPORTS / 2, STREAM).await;

    // As for the SIGTERM: every poster's report waits for its publish.
    let broker = pipeline.pid(Part::Broker);
    signal(broker, "STOP");
    stream.wait_in_flight(POSTERS, STREAM).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kill_at = Instant::now();
    pipeline.kill(Part::LabReport);
    signal(broker, "CONT");
    pipeline.start_part(Part::LabReport);
    let healed = Instant::now();

    let posted = stream.finish().await;
    let in_flight = posted.in_flight_at(kill_at);
    let (tally, complete) = settle(&pipeline, &posted).await;
    // Reports the lab never got a 204 for, which the broker had stored.
    let stored_unanswered = posted
        .refused_ids
        .iter()
        .filter(|id| tally.emails.contains_key(*id))
        .count();
    let delivered = (tally.emails_total(), tally.sms_total());
    // A publish committed but never enqueued would come out of the store
    // only when the broker reads it again.
    pipeline.kill(Part::Broker);
    pipeline.start_part(Part::Broker);
    let (after_restart, _) = settle(&pipeline, &posted).await;
    summary(
        "lab-report-service SIGKILL under load (publishes held), then started again; broker restarted at the end",
        &posted,
        &after_restart,
        Some(complete - healed),
        started.elapsed(),
        json!({
            "in_flight_at_sigkill": in_flight,
            "unanswered_but_delivered": stored_unanswered,
            "delivered_only_after_broker_restart": (after_restart.emails_total() - delivered.0, after_restart.sms_total() - delivered.1),
        }),
    );
    assert_eq!(in_flight.len(), POSTERS, "{in_flight:?}");
    assert_nothing_lost(&posted, &tally);
    assert_eq!(tally.duplicates(), (0, 0));
    assert_eq!(
        (after_restart.emails_total(), after_restart.sms_total()),
        delivered,
        "delivered only after the broker restarted"
    );
}
