//! `labrelay suppressions list | add | remove` against a running
//! `labrelay up` and its data directory, as an operator runs them: a
//! number added is not texted (its push answered `suppressed`, the SMS
//! outbox empty, the email sent as usual), also after a restart, since
//! `up` keeps its suppression key; `list` shows it without the number;
//! once removed, the same report posted again is texted. `labrelay
//! sms-webhooks` takes a signed STOP into a shared log and refuses a forged
//! one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use labrelay_receiver::notify_log::subject_hash;
use labrelay_testkit::metrics::Samples;
use labrelay_testkit::up;

use crate::LABRELAY;

/// A report `labrelay post` makes, and its owner's number.
const REPORT: &str = "12";

fn start_up(data_dir: &Path, log: &Path) -> up::Up {
    let mut command = up::up_command(LABRELAY, data_dir);
    command
        .env("RUST_LOG", "info")
        .env_remove("LOG_FORMAT")
        .env_remove("K_SERVICE")
        .env_remove("NOTIFY_LOG")
        .env_remove("SUPPRESSION_KEY")
        .env_remove("SUPPRESSION_KEY_FILE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    up::Up::start(command, data_dir)
}

/// `labrelay suppressions <args> --data-dir <data_dir>`, as an operator
/// runs it beside `up`: nothing but the data directory to go on.
fn suppressions(data_dir: &Path, args: &[&str]) -> String {
    let output = Command::new(LABRELAY)
        .arg("suppressions")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("NOTIFY_LOG")
        .env_remove("SUPPRESSION_KEY")
        .env_remove("SUPPRESSION_KEY_FILE")
        .env_remove("LABRELAY_DATA_DIR")
        .output()
        .unwrap();
    let text = printed(&output);
    assert!(output.status.success(), "suppressions {args:?}:\n{text}");
    assert!(
        !text.contains("warning"),
        "suppressions {args:?} found the key:\n{text}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
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
    assert!(stdout.starts_with(&format!("{id}\t204")), "{stdout}");
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml" || x == "json"))
        .collect()
}

/// Waits up to 30 s for `until` to hold.
async fn wait_for(what: &str, mut until: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !until().await {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sms_pushes(up: &up::Up, outcome: &str) -> f64 {
    Samples::scrape(&format!("{}/metrics", up.url("sms-service")))
        .await
        .sum(
            "labrelay_notifications_total",
            &format!("outcome=\"{outcome}\""),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_suppresses_a_number_lists_it_and_lifts_it() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let log = root.path().join("up.log");
    let (email_outbox, sms_outbox) = (data.join("outbox/email"), data.join("outbox/sms"));
    let report = labrelay::post::sample_report(REPORT);
    let phone = report["owner"]["phone"].as_str().unwrap().to_string();

    let up = start_up(&data, &log);
    assert_eq!(suppressions(&data, &["list"]), "no suppressions\n");
    assert_eq!(
        suppressions(&data, &["add", "sms", &phone]),
        "suppressed on sms\n"
    );

    // The key `up` made is kept: a suppression added on one run holds on
    // the next.
    let key_file = data.join("suppression-key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(key.trim().len(), 64, "32 bytes, hex");
    up.kill();
    let up = start_up(&data, &log);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);

    post(&data, REPORT);
    wait_for("the email", async || files(&email_outbox).len() == 1).await;
    wait_for("the SMS push answered suppressed", async || {
        sms_pushes(&up, "suppressed").await == 1.0
    })
    .await;
    assert_eq!(files(&sms_outbox), Vec::<PathBuf>::new());
    assert_eq!(sms_pushes(&up, "sent").await, 0.0);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text
            .lines()
            .any(|l| l.contains("outcome=\"suppressed\"") && l.contains("report_id=\"12\"")),
        "{log_text}"
    );

    // Channel, since, the hash's first 16 digits under `up`'s key, the
    // reason; never the number.
    let listed = suppressions(&data, &["list"]);
    let hash = subject_hash(key.trim().as_bytes(), "sms", &phone);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(lines[0].starts_with("channel"), "{listed}");
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(fields.len(), 4, "{listed}");
    assert_eq!(
        (fields[0], fields[2], fields[3]),
        ("sms", &hash[..16], "operator")
    );
    let digits = phone.trim_start_matches('+');
    for shown in [&phone[..], digits, &digits[digits.len() - 7..]] {
        assert!(!listed.contains(shown), "{shown} in:\n{listed}");
    }
    assert!(
        !log_text.contains("SUPPRESSION_KEY"),
        "no warning about the key:\n{log_text}"
    );
    assert!(!log_text.contains(digits), "the number in up's log");

    assert_eq!(
        suppressions(&data, &["remove", "sms", &phone]),
        "lifted on sms\n"
    );
    assert_eq!(
        suppressions(&data, &["remove", "sms", &phone]),
        "was not suppressed on sms\n"
    );
    assert_eq!(suppressions(&data, &["list"]), "no suppressions\n");

    // The same report again: texted now; its email was sent already.
    post(&data, REPORT);
    wait_for("the SMS", async || files(&sms_outbox).len() == 1).await;
    let sms: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files(&sms_outbox)[0]).unwrap()).unwrap();
    assert_eq!(sms["to"], phone.as_str());
    assert_eq!(sms["reportId"], REPORT);
    assert_eq!(sms_pushes(&up, "sent").await, 1.0);
    assert_eq!(files(&email_outbox).len(), 1, "the email is not sent twice");
}

/// `labrelay suppressions` with `env` set (and no key or log inherited).
fn suppressions_with(env: &[(&str, String)], data_dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(LABRELAY);
    command
        .arg("suppressions")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("NOTIFY_LOG")
        .env_remove("SUPPRESSION_KEY")
        .env_remove("SUPPRESSION_KEY_FILE");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

#[test]
fn without_up_data_or_a_log_it_says_what_is_missing() {
    let empty = tempfile::tempdir().unwrap();
    let output = suppressions_with(&[], empty.path(), &["list"]);
    assert!(!output.status.success());
    let text = printed(&output);
    assert!(
        text.contains("NOTIFY_LOG") && text.contains("--data-dir"),
        "{text}"
    );
}

/// A log named by NOTIFY_LOG (a shared store) and no key anywhere: `list`
/// works, `add` and `remove` refuse, since a hash under no key would match
/// nothing the services look up; with the services' key they work.
#[test]
fn adding_or_removing_needs_the_services_key() {
    let empty = tempfile::tempdir().unwrap();
    let log = format!(
        "sqlite://{}",
        empty.path().join("notifications.sqlite3").display()
    );
    let keyless = [("NOTIFY_LOG", log.clone())];
    let listed = suppressions_with(&keyless, empty.path(), &["list"]);
    assert!(listed.status.success(), "{}", printed(&listed));
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "no suppressions\n");
    for args in [
        ["add", "sms", "+15550001111"],
        ["remove", "sms", "+15550001111"],
    ] {
        let refused = suppressions_with(&keyless, empty.path(), &args);
        assert!(!refused.status.success(), "{args:?}");
        let text = printed(&refused);
        assert!(
            text.contains("no suppression key") && text.contains("SUPPRESSION_KEY"),
            "{text}"
        );
    }

    let keyed = [
        ("NOTIFY_LOG", log),
        ("SUPPRESSION_KEY", "the services' key".to_string()),
    ];
    let added = suppressions_with(&keyed, empty.path(), &["add", "sms", "+15550001111"]);
    assert_eq!(
        String::from_utf8_lossy(&added.stdout),
        "suppressed on sms\n"
    );
    let listed = suppressions_with(&keyed, empty.path(), &["list"]);
    let hash = subject_hash(b"the services' key", "sms", "+15550001111");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&hash[..16]),
        "{}",
        printed(&listed)
    );
}

/// `labrelay sms-webhooks` as the Cloud Run kit runs it, the public half
/// of an sms-service only Pub/Sub reaches: PUBLIC_URL its own URL (here
/// a name only; Twilio signs what it calls, whatever reaches us), the
/// shared log and the services' key. A signed STOP suppresses the number
/// in that log; a forged one is refused and records nothing; there is no
/// push endpoint.
#[tokio::test]
async fn sms_webhooks_takes_a_signed_stop_into_the_shared_log() {
    use std::io::BufRead as _;

    const PUBLIC_URL: &str = "https://sms-webhooks.example";
    const TOKEN: &str = "the auth token";
    let dir = tempfile::tempdir().unwrap();
    let log = format!("sqlite://{}", dir.path().join("n.sqlite3").display());
    let key = "the services' key".to_string();
    let mut child = Command::new(LABRELAY)
        .arg("sms-webhooks")
        .env_clear()
        .env("PORT", "0")
        .env("PUBLIC_URL", PUBLIC_URL)
        .env("TWILIO_AUTH_TOKEN", TOKEN)
        .env("NOTIFY_LOG", &log)
        .env("SUPPRESSION_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .strip_prefix("sms-webhooks listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let stop: Vec<(String, String)> = [
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("From", "+15550001111"),
        ("To", "+15005550006"),
        ("Body", "STOP"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let post = |signature: String| {
        http.post(format!("http://{addr}/twilio/inbound"))
            .header("X-Twilio-Signature", signature)
            .form(&stop)
            .send()
    };
    let signed = labrelay_sms_service::webhooks::signature(
        TOKEN,
        &format!("{PUBLIC_URL}/twilio/inbound"),
        &stop,
    );
    let forged = labrelay_sms_service::webhooks::signature(
        "another token",
        &format!("{PUBLIC_URL}/twilio/inbound"),
        &stop,
    );

    assert_eq!(post(forged).await.unwrap().status(), 403);
    let keyed = [
        ("NOTIFY_LOG", log.clone()),
        ("SUPPRESSION_KEY", key.clone()),
    ];
    let listed = suppressions_with(&keyed, dir.path(), &["list"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "no suppressions\n");

    let answer = post(signed).await.unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    assert!(answer.text().await.unwrap().contains("<Response"));
    let listed = suppressions_with(&keyed, dir.path(), &["list"]);
    let hash = subject_hash(key.as_bytes(), "sms", "+15550001111");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&hash[..16]),
        "{}",
        printed(&listed)
    );

    let push = http
        .post(format!("http://{addr}/"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(
        matches!(push.status().as_u16(), 404 | 405),
        "{}",
        push.status()
    );
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Without its own URL or the shared log it would take calls it cannot
/// check or keep: it refuses to start and says which is missing.
#[test]
fn sms_webhooks_needs_its_public_url_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = format!("sqlite://{}", dir.path().join("n.sqlite3").display());
    for (missing, env) in [
        ("PUBLIC_URL", vec![("NOTIFY_LOG", log.as_str())]),
        (
            "NOTIFY_LOG",
            vec![("PUBLIC_URL", "https://sms-webhooks.example")],
        ),
    ] {
        let output = Command::new(LABRELAY)
            .arg("sms-webhooks")
            .env_clear()
            .env("PORT", "0")
            .env("TWILIO_AUTH_TOKEN", "t")
            .envs(env)
            .output()
            .unwrap();
        assert!(!output.status.success(), "started without {missing}");
        let text = printed(&output);
        assert!(text.contains(&format!("{missing} is required")), "{text}");
    }
}
