//! The lab's outage under `labrelay up`, with `up`'s own subscription
//! settings (nothing here changes them): the email channel's SMTP server
//! refuses every attempt for longer than a five-attempt dead-letter limit
//! would allow, and the report is not parked; once the server accepts, the
//! email arrives by itself, without a replay. A message the server refuses
//! for good is parked at once, not after the hour-long outage budget.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use labrelay_testkit::metrics::Samples;
use labrelay_testkit::smtp::{Mode, SmtpSink};
use labrelay_testkit::up;

use crate::LABRELAY;

/// Attempts the SMTP server refuses: one more than the dead-letter limit
/// `up` had (5), which parked the report after about 15 s of outage.
const REFUSED_ATTEMPTS: usize = 6;

fn start_up(data_dir: &Path, smtp: &SmtpSink) -> up::Up {
    let mut command = up::up_command(LABRELAY, data_dir);
    command
        .env("SMTP_URL", smtp.url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    up::Up::start(command, data_dir)
}

fn post(data_dir: &Path, id: &str) {
    let posted = Command::new(LABRELAY)
        .args(["post", "--data-dir"])
        .arg(data_dir)
        .arg(id)
        .env_remove("LABRELAY_API_KEY")
        .env_remove("LABRELAY_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&posted.stdout);
    assert!(posted.status.success(), "{stdout}");
    assert!(stdout.contains(&format!("{id}\t204")), "{stdout}");
}

/// `labrelay dead-letters list`: one line per parked message after the
/// header.
fn dead_letters(data_dir: &Path) -> Vec<String> {
    let listed = Command::new(LABRELAY)
        .args(["dead-letters", "list", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_past_the_old_limit_heals_by_itself() {
    let smtp = SmtpSink::start().await.unwrap();
    smtp.set_mode(Mode::TempFail);
    let data = tempfile::tempdir().unwrap();
    let up = start_up(data.path(), &smtp);

    post(data.path(), "OUTAGE-1");
    // 1 + 2 + 4 + 8 + 16 s of backoff, less the broker's jitter.
    smtp.wait_for_rejections(REFUSED_ATTEMPTS, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(dead_letters(data.path()), Vec::<String>::new());
    let email = Samples::scrape(&format!("{}/metrics", up.url("email-service"))).await;
    assert_eq!(
        email.sum(
            "labrelay_notifications_total",
            r#"outcome="failed_transient""#
        ),
        REFUSED_ATTEMPTS as f64
    );

    // The server is back: the next redelivery, at most a minute away,
    // sends the email, once.
    smtp.set_mode(Mode::Accept);
    let received = smtp
        .wait_for_messages(1, Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("X-Report-Id"),
        Some("OUTAGE-1"),
        "{:?}",
        received[0]
    );
    assert_eq!(dead_letters(data.path()), Vec::<String>::new());
    up.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_email_is_parked_on_its_first_attempt() {
    let smtp = SmtpSink::start().await.unwrap();
    smtp.set_mode(Mode::PermFail);
    let data = tempfile::tempdir().unwrap();
    let up = start_up(data.path(), &smtp);

    post(data.path(), "REFUSED-1");
    smtp.wait_for_rejections(1, Duration::from_secs(30))
        .await
        .unwrap();
    // Parked before the push is answered, so listed as soon as the
    // email-service has counted it.
    let metrics = format!("{}/metrics", up.url("email-service"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Samples::scrape(&metrics)
        .await
        .sum("labrelay_notifications_total", r#"outcome="dead_lettered""#)
        < 1.0
    {
        assert!(tokio::time::Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let parked = dead_letters(data.path());
    assert_eq!(parked.len(), 1, "{parked:?}");
    let fields: Vec<&str> = parked[0].split('\t').collect();
    assert_eq!(fields[1], "REFUSED-1", "{parked:?}");
    assert_eq!(fields[2], "email-service-sub", "{parked:?}");
    assert_eq!(fields[3], "1", "parked on its first attempt: {parked:?}");
    assert!(
        fields[5].contains("HTTP 422") && fields[5].contains("email-service"),
        "{parked:?}"
    );
    assert_eq!(smtp.accepted_count(), 0);
    up.terminate();
}
