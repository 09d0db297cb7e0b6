//! The production kit in `deploy/cloudrun/`, checked without a cloud:
//!
//! - every shell script passes `shellcheck`;
//! - `deploy.sh --dry-run` prints the whole plan (every resource and flag of
//!   issue 4), the same plan twice, with no gcloud installed, and no secret
//!   on any line;
//! - `deploy.sh` for real, against a stand-in `gcloud` that logs its calls
//!   (and a stand-in `curl` answering testIamPermissions), runs exactly the
//!   dry run's commands on an empty project, creates and changes nothing on
//!   a project it converged before, brings what the lab left to its
//!   settings with a warning, stops on a look-up that fails otherwise than
//!   NOT_FOUND and on missing permissions (naming them and their roles),
//!   and adds a secret version only with `--rotate-secrets`;
//! - the push services' ack deadline equals their request timeout; without
//!   the shared notification log they run on one instance; behind a load
//!   balancer they keep its ingress and audience;
//! - the three services, started with nothing but the environment Cloud Run
//!   gives them, listen on 0.0.0.0:$PORT, answer `/healthz`, log JSON lines
//!   in Cloud Logging's shape, stop cleanly on SIGTERM, and the
//!   lab-report-service goes to Google Cloud Pub/Sub (no emulator);
//! - with a Docker engine, the image builds and runs; without one, that part
//!   says it skipped.
//!
//! `cargo nextest run --test system deploy::`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::LABRELAY;

const PROJECT: &str = "demo-project";
const REGION: &str = "europe-west1";
const SMTP_PASSWORD: &str = "super-secret-smtp";
const TWILIO_AUTH_TOKEN: &str = "super-secret-twilio";
/// The ingest key the test's keys file holds the hash of.
const INGEST_KEY: &str = "lab-key-for-tests-0123456789";
/// The project number the stand-in gcloud reports.
const PROJECT_NUMBER: &str = "123456789012";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_script() -> PathBuf {
    repo().join("deploy/cloudrun/deploy.sh")
}

// --- shellcheck ----------------------------------------------------------------

/// Shell scripts under `dir`: `*.sh`, or a `#!` line naming a shell; not
/// those npm installed.
fn scripts_under(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !path.ends_with("node_modules") {
                scripts_under(&path, found);
            }
            continue;
        }
        let first_line = std::fs::read(&path)
            .ok()
            .and_then(|bytes| {
                let line = bytes.split(|b| *b == b'\n').next()?.to_vec();
                String::from_utf8(line).ok()
            })
            .unwrap_or_default();
        let shebang_shell = first_line.starts_with("#!")
            && ["sh", "bash", "dash"]
                .iter()
                .any(|shell| first_line.split(['/', ' ']).any(|word| word == *shell));
        if path.extension().is_some_and(|e| e == "sh") || shebang_shell {
            found.push(path);
        }
    }
}

#[test]
fn shellcheck_passes_on_every_script() {
    let mut scripts = Vec::new();
    for dir in ["deploy", "scripts", ".ci", "bench"] {
        scripts_under(&repo().join(dir), &mut scripts);
    }
    scripts.sort();
    for expected in [deploy_script(), repo().join("bench/c-clients.sh")] {
        assert!(
            scripts.contains(&expected),
            "{} not among {scripts:?}",
            expected.display()
        );
    }
    let output = match Command::new("shellcheck")
        .arg("--external-sources")
        .args(&scripts)
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "shellcheck is not installed; install it (Debian/Ubuntu: apt-get install -y shellcheck) \
             and run this test again"
        ),
        Err(error) => panic!("running shellcheck: {error}"),
    };
    assert!(
        output.status.success(),
        "shellcheck found problems in {scripts:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// --- deploy.sh -------------------------------------------------------------------

/// A directory for PATH holding `bash` alone (and whatever the test adds), so
/// the script finds no gcloud, nor any other tool of this machine.
fn bare_path_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let bash = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/bin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("bash"))
        .find(|candidate| candidate.is_file())
        .expect("bash is needed to run deploy.sh");
    std::os::unix::fs::symlink(&bash, bin.join("bash")).unwrap();
    bin
}

/// A keys file as issue 6 defines it: `lab-name:sha256-hex-of-key`.
fn keys_file(dir: &Path) -> PathBuf {
    let path = dir.join("lab-keys.txt");
    if !path.exists() {
        std::fs::write(&path, format!("pet-lab:{}\n", sha256_hex(INGEST_KEY))).unwrap();
    }
    path
}

/// `sha256sum`'s hex digest of `text`.
fn sha256_hex(text: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils) is needed to write the ingest keys file");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let digest = String::from_utf8(output.stdout).unwrap();
    digest.split_whitespace().next().unwrap().to_string()
}

/// Runs deploy.sh with only `path` on PATH and the deployer's settings (and
/// secrets) in the environment; it must succeed.
fn run_deploy(path: &Path, home: &Path, extra_env: &[(&str, String)], args: &[&str]) -> Output {
    let output = try_deploy(path, home, extra_env, args);
    assert!(
        output.status.success(),
        "deploy.sh {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// [`run_deploy`], whatever its exit status.
fn try_deploy(path: &Path, home: &Path, extra_env: &[(&str, String)], args: &[&str]) -> Output {
    let keys = keys_file(home);
    let mut command = Command::new(deploy_script());
    command
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("SMTP_PASSWORD", SMTP_PASSWORD)
        .env("TWILIO_AUTH_TOKEN", TWILIO_AUTH_TOKEN)
        .env("SMTP_URL", "smtp://smtp.example.com:587?tls=required")
        .env("SMTP_USERNAME", "results@clinic.example")
        .env("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef")
        .env("TWILIO_FROM", "+15551230000")
        .args(args)
        .args(["--project", PROJECT, "--region", REGION])
        .args([
            "--email-from",
            "Pet Theory, Downtown <results@clinic.example>",
        ])
        .arg("--ingest-keys-file")
        .arg(&keys)
        .stdin(Stdio::null());
    for (key, value) in extra_env {
        command.env(key, value);
    }
    command.output().expect("running deploy.sh")
}

/// The `+ gcloud ...` lines of a plan, without the `+ `.
fn plan_commands(stdout: &[u8]) -> Vec<String> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("+ "))
        .map(str::to_string)
        .collect()
}

/// Splits a line printed by deploy.sh back into arguments: words, single
/// quotes with `'\''` inside, and a trailing `<<<"$VAR"` (standard input,
/// not an argument).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            ' ' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words.retain(|w| !w.starts_with("<<<"));
    words
}

fn line_with<'a>(commands: &'a [String], prefix: &str, parts: &[&str]) -> &'a str {
    let candidates: Vec<&String> = commands
        .iter()
        .filter(|c| c.starts_with(&format!("gcloud {prefix}")))
        .collect();
    for candidate in &candidates {
        if parts.iter().all(|part| candidate.contains(part)) {
            return candidate;
        }
    }
    panic!(
        "no `gcloud {prefix}` with {parts:?}; the plan has:\n{}",
        candidates
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn position(commands: &[String], prefix: &str) -> usize {
    commands
        .iter()
        .position(|c| c.starts_with(&format!("gcloud {prefix}")))
        .unwrap_or_else(|| panic!("no `gcloud {prefix}` in the plan"))
}

fn seconds_flag(line: &str, flag: &str) -> u64 {
    let value = line
        .split(' ')
        .find_map(|word| word.strip_prefix(&format!("{flag}=")))
        .unwrap_or_else(|| panic!("{flag} missing in {line}"));
    value.trim_end_matches('s').parse().unwrap()
}

#[test]
fn dry_run_prints_the_whole_plan_without_gcloud_or_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let bin = bare_path_dir(dir.path());
    let first = run_deploy(&bin, dir.path(), &[], &["--dry-run"]);
    let second = run_deploy(&bin, dir.path(), &[], &["--dry-run"]);
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&second.stdout),
        "two dry runs printed different plans"
    );
    // Even with a gcloud on PATH, a dry run calls none.
    let tripwire = dir.path().join("gcloud-was-called");
    let fake = bin.join("gcloud");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", tripwire.display()),
    )
    .unwrap();
    make_executable(&fake);
    let third = run_deploy(&bin, dir.path(), &[], &["--dry-run"]);
    assert!(!tripwire.exists(), "a dry run called gcloud");
    assert_eq!(first.stdout, third.stdout);

    let all_output = [&first.stdout[..], &first.stderr[..]].concat();
    let all_output = String::from_utf8_lossy(&all_output);
    for secret in [SMTP_PASSWORD, TWILIO_AUTH_TOKEN, INGEST_KEY] {
        assert!(
            !all_output.contains(secret),
            "a secret value appears in the dry run's output:\n{all_output}"
        );
    }

    let plan = plan_commands(&first.stdout);
    assert!(plan.len() > 40, "a short plan: {plan:#?}");
    for line in &plan {
        assert!(line.starts_with("gcloud "), "{line}");
        assert!(
            line.contains(PROJECT),
            "a command without the project: {line}"
        );
        if line.starts_with("gcloud run ") {
            assert!(line.contains(&format!("--region={REGION}")), "{line}");
        }
        for variable in ["SMTP_PASSWORD", "TWILIO_AUTH_TOKEN"] {
            assert!(
                !line.contains(&format!("{variable}=")) || line.contains("--set-secrets="),
                "{variable} outside --set-secrets: {line}"
            );
            if let Some(env) = line.split(' ').find(|w| w.contains("--set-env-vars=")) {
                assert!(
                    !env.contains(variable),
                    "{variable} as a plain value: {line}"
                );
            }
        }
    }

    let apis = line_with(&plan, "services enable", &[]);
    for api in [
        "run",
        "pubsub",
        "cloudbuild",
        "artifactregistry",
        "secretmanager",
        "iam",
    ] {
        assert!(apis.contains(&format!(" {api}.googleapis.com")), "{apis}");
    }
    line_with(
        &plan,
        "projects describe demo-project",
        &["value(projectNumber)"],
    );
    line_with(
        &plan,
        "artifacts repositories create labrelay",
        &["--location=europe-west1", "--repository-format=docker"],
    );
    let image = "europe-west1-docker.pkg.dev/demo-project/labrelay/labrelay:";
    line_with(
        &plan,
        "builds submit .",
        &[
            "--config=deploy/cloudrun/cloudbuild.yaml",
            "--ignore-file=deploy/cloudrun/.gcloudignore",
            &format!("--substitutions=_IMAGE={image}"),
        ],
    );
    line_with(&plan, "pubsub topics create new-lab-report ", &[]);
    line_with(
        &plan,
        "pubsub topics create new-lab-report-dead-letter ",
        &[],
    );
    line_with(
        &plan,
        "pubsub subscriptions create new-lab-report-dead-letter-sub ",
        &["--topic=new-lab-report-dead-letter"],
    );

    let invoker = "pubsub-cloud-run-invoker@demo-project.iam.gserviceaccount.com";
    let agent = "serviceAccount:service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com";
    line_with(
        &plan,
        "iam service-accounts create pubsub-cloud-run-invoker ",
        &[],
    );
    line_with(
        &plan,
        "pubsub topics add-iam-policy-binding new-lab-report ",
        &[
            "serviceAccount:labrelay-lab-report@demo-project.iam.gserviceaccount.com",
            "--role=roles/pubsub.publisher",
        ],
    );

    let lab = line_with(
        &plan,
        "run deploy lab-report-service ",
        &[
            &format!("--image={image}"),
            "--command=/labrelay",
            "--args=lab-report-service",
            "--allow-unauthenticated",
            "--service-account=labrelay-lab-report@demo-project.iam.gserviceaccount.com",
            "GOOGLE_CLOUD_PROJECT=demo-project",
            "INGEST_API_KEYS_FILE=/secrets/ingest/keys",
            // /metrics off the public port.
            "METRICS_PORT=9464",
            "--set-secrets=/secrets/ingest/keys=labrelay-ingest-api-keys:latest",
        ],
    );
    assert!(!lab.contains("PUBSUB_EMULATOR_HOST"), "{lab}");
    assert!(
        !lab.contains("INGEST_RATE_LIMIT"),
        "the public ingest keeps its limit: {lab}"
    );
    let email = line_with(
        &plan,
        "run deploy email-service ",
        &[
            "--command=/labrelay",
            "--args=email-service",
            "--no-allow-unauthenticated",
            "--service-account=labrelay-email@demo-project.iam.gserviceaccount.com",
            "SMTP_URL=smtp://smtp.example.com:587?tls=required",
            "SMTP_USERNAME=results@clinic.example",
            "EMAIL_FROM=Pet Theory, Downtown <results@clinic.example>",
            &format!("PUSH_ALLOWED_SERVICE_ACCOUNTS={invoker}"),
            "DEAD_LETTER_TOPIC=projects/demo-project/topics/new-lab-report-dead-letter",
            // The services refuse to start without an audience; the real
            // one is known after the first deploy (the update below).
            "PUSH_AUDIENCE=",
            "--set-secrets=SMTP_PASSWORD=labrelay-smtp-password:latest,\
             SUPPRESSION_KEY=labrelay-suppression-key:latest",
        ],
    );
    let sms = line_with(
        &plan,
        "run deploy sms-service ",
        &[
            "--command=/labrelay",
            "--args=sms-service",
            "--no-allow-unauthenticated",
            "--service-account=labrelay-sms@demo-project.iam.gserviceaccount.com",
            "TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef",
            "TWILIO_FROM=+15551230000",
            &format!("PUSH_ALLOWED_SERVICE_ACCOUNTS={invoker}"),
            "DEAD_LETTER_TOPIC=projects/demo-project/topics/new-lab-report-dead-letter",
            "PUSH_AUDIENCE=",
            "--set-secrets=TWILIO_AUTH_TOKEN=labrelay-twilio-auth-token:latest,\
             SUPPRESSION_KEY=labrelay-suppression-key:latest",
        ],
    );
    // Twilio's webhooks: a public service of their own, with its own
    // account, the token and the key, sharing the log; its URL is its own
    // PUBLIC_URL (set after the first deploy) and the sms-service's, so it
    // is deployed first.
    let webhooks_url = "https://sms-webhooks-PROJECT_NUMBER.europe-west1.run.app";
    let webhooks_sa = "labrelay-sms-webhooks@demo-project.iam.gserviceaccount.com";
    line_with(
        &plan,
        "iam service-accounts create labrelay-sms-webhooks ",
        &[],
    );
    let webhooks = line_with(
        &plan,
        "run deploy sms-webhooks ",
        &[
            "--command=/labrelay",
            "--args=sms-webhooks",
            "--allow-unauthenticated",
            "--ingress=all",
            "--max-instances=2",
            &format!("--service-account={webhooks_sa}"),
            "NOTIFY_LOG=firestore",
            "PUBLIC_URL=https://pending-first-deploy.invalid",
            "--set-secrets=TWILIO_AUTH_TOKEN=labrelay-twilio-auth-token:latest,\
             SUPPRESSION_KEY=labrelay-suppression-key:latest",
        ],
    );
    assert!(!webhooks.contains("PUSH_"), "{webhooks}");
    line_with(
        &plan,
        "run services update sms-webhooks ",
        &[&format!("--update-env-vars=PUBLIC_URL={webhooks_url}")],
    );
    assert!(sms.contains(&format!("PUBLIC_URL={webhooks_url}")), "{sms}");
    assert!(
        position(&plan, "run services update sms-webhooks ")
            < position(&plan, "run deploy sms-service ")
    );
    for (prefix, role) in [
        (
            "projects add-iam-policy-binding demo-project ",
            "roles/datastore.user",
        ),
        (
            "secrets add-iam-policy-binding labrelay-twilio-auth-token ",
            "roles/secretmanager.secretAccessor",
        ),
        (
            "secrets add-iam-policy-binding labrelay-suppression-key ",
            "roles/secretmanager.secretAccessor",
        ),
    ] {
        line_with(
            &plan,
            prefix,
            &[
                &format!("--member=serviceAccount:{webhooks_sa}"),
                &format!("--role={role}"),
            ],
        );
    }
    let granted_to_webhooks = plan
        .iter()
        .filter(|l| l.contains(&format!("serviceAccount:{webhooks_sa}")))
        .count();
    assert_eq!(granted_to_webhooks, 3, "least privilege: {plan:#?}");
    assert!(
        String::from_utf8_lossy(&first.stdout).contains(&format!(
            "messaging webhook (\"A message comes in\", HTTP POST) to {webhooks_url}/twilio/inbound"
        )),
        "the Twilio URL is not printed"
    );
    // Without --templates-bucket: no templates mounted, and a mount an
    // earlier run made is cleared with TEMPLATES_DIR.
    for name in ["email-service", "sms-service"] {
        line_with(
            &plan,
            &format!("run deploy {name} "),
            &["--clear-volumes", "--clear-volume-mounts"],
        );
    }
    assert!(
        !plan
            .iter()
            .any(|l| l.contains("TEMPLATES_DIR") || l.contains("--add-volume"))
    );

    for name in ["email-service", "sms-service"] {
        let url = format!("https://{name}-PROJECT_NUMBER.europe-west1.run.app");
        line_with(
            &plan,
            &format!("run services update {name} "),
            &[&format!("--update-env-vars=PUSH_AUDIENCE={url}")],
        );
        line_with(
            &plan,
            &format!("run services add-iam-policy-binding {name} "),
            &[
                &format!("--member=serviceAccount:{invoker}"),
                "--role=roles/run.invoker",
            ],
        );
        let subscription = line_with(
            &plan,
            &format!("pubsub subscriptions create {name}-sub "),
            &[
                "--topic=new-lab-report ",
                &format!("--push-endpoint={url}"),
                &format!("--push-auth-service-account={invoker}"),
                &format!("--push-auth-token-audience={url}"),
                "--ack-deadline=",
                "--min-retry-delay=",
                "--max-retry-delay=",
                "--dead-letter-topic=new-lab-report-dead-letter ",
                "--max-delivery-attempts=100",
            ],
        );
        let service = if name == "email-service" { email } else { sms };
        // For push the ack deadline is the HTTP timeout: one number, so
        // Pub/Sub never redelivers a push its service still runs, and Cloud
        // Run never cuts one Pub/Sub still waits for.
        assert_eq!(
            seconds_flag(subscription, "--ack-deadline"),
            seconds_flag(service, "--timeout"),
            "{name}: the ack deadline must equal the request timeout"
        );
        // What a push may take with PUSH_ANSWER=when-done, and 5 s to read
        // it: claim 10 s, the attempt (an email: 40 s up to DATA and
        // SMTP_DATA_TIMEOUT_SECS for the answer, + 5 s; an SMS: 40 s),
        // record 10 s, margin 5 s, parking 10 s.
        let needs = if name == "email-service" {
            assert!(service.contains("SMTP_DATA_TIMEOUT_SECS=300"), "{service}");
            10 + 40 + 300 + 5 + 10 + 5 + 10 + 5
        } else {
            10 + 40 + 10 + 5 + 10 + 5
        };
        assert!(seconds_flag(service, "--timeout") >= needs, "{service}");
        // Pub/Sub's longest ack deadline.
        assert!(
            seconds_flag(subscription, "--ack-deadline") <= 600,
            "{subscription}"
        );
        // Several instances share the Firestore notification log.
        assert!(service.contains("--max-instances=5"), "{service}");
        assert!(service.contains("NOTIFY_LOG=firestore"), "{service}");
        assert!(service.contains("--ingress=internal "), "{service}");
        line_with(
            &plan,
            &format!("pubsub subscriptions add-iam-policy-binding {name}-sub "),
            &[
                &format!("--member={agent}"),
                "--role=roles/pubsub.subscriber",
            ],
        );
        // Order: the service exists before it is bound, the subscription
        // before the agent may ack on it.
        assert!(
            position(&plan, &format!("run deploy {name} "))
                < position(
                    &plan,
                    &format!("run services add-iam-policy-binding {name} ")
                )
        );
        assert!(
            position(&plan, &format!("pubsub subscriptions create {name}-sub "))
                < position(
                    &plan,
                    &format!("pubsub subscriptions add-iam-policy-binding {name}-sub ")
                )
        );
    }
    line_with(
        &plan,
        "iam service-accounts add-iam-policy-binding pubsub-cloud-run-invoker@",
        &[
            &format!("--member={agent}"),
            "--role=roles/iam.serviceAccountTokenCreator",
        ],
    );
    // The agent parks what runs out of attempts; each push service parks
    // what it can never send.
    for member in [
        agent.to_string(),
        "serviceAccount:labrelay-email@demo-project.iam.gserviceaccount.com".to_string(),
        "serviceAccount:labrelay-sms@demo-project.iam.gserviceaccount.com".to_string(),
    ] {
        line_with(
            &plan,
            "pubsub topics add-iam-policy-binding new-lab-report-dead-letter ",
            &[
                &format!("--member={member}"),
                "--role=roles/pubsub.publisher",
            ],
        );
    }
    // Topics and secrets exist before what uses them.
    assert!(
        position(&plan, "pubsub topics create new-lab-report ")
            < position(&plan, "pubsub subscriptions create email-service-sub ")
    );
    assert!(
        position(&plan, "secrets create labrelay-smtp-password ")
            < position(&plan, "run deploy email-service ")
    );
    // The suppression key: made on the first run (its value never in the
    // plan: on standard input, made by the script), read by both push
    // services, before they start.
    line_with(
        &plan,
        "secrets create labrelay-suppression-key ",
        &["--replication-policy=automatic"],
    );
    let added = line_with(
        &plan,
        "secrets versions add labrelay-suppression-key ",
        &["--data-file=-"],
    );
    assert!(
        added.ends_with(r#" --data-file=- <<<"$SUPPRESSION_KEY""#),
        "{added}"
    );
    for account in ["labrelay-email", "labrelay-sms"] {
        line_with(
            &plan,
            "secrets add-iam-policy-binding labrelay-suppression-key ",
            &[
                &format!("--member=serviceAccount:{account}@demo-project.iam.gserviceaccount.com"),
                "--role=roles/secretmanager.secretAccessor",
            ],
        );
    }
    assert!(
        position(&plan, "secrets versions add labrelay-suppression-key ")
            < position(&plan, "run deploy email-service ")
    );
    assert!(position(&plan, "builds submit") < position(&plan, "run deploy "));

    // Describe before create: every create follows a look-up of the same thing.
    for (index, line) in plan.iter().enumerate() {
        let words = shell_words(line);
        let Some(verb) = words.iter().position(|w| w == "create" || w == "add") else {
            continue;
        };
        if line.starts_with("gcloud beta services identity create") {
            continue; // idempotent by itself
        }
        let name = &words[verb + 1];
        let group = words[..verb].join(" ");
        let looked_up = plan[..index].iter().any(|earlier| {
            earlier.starts_with(&format!("{group} describe"))
                && shell_words(earlier).iter().any(|w| {
                    w == name
                        || w.starts_with(&format!("{name}@"))
                        || w == &format!("--secret={name}")
                })
        });
        assert!(looked_up, "`{line}` is not preceded by a describe");
    }
}

// --- deploy.sh against a stand-in gcloud -----------------------------------------

/// A `gcloud` that logs every call (arguments separated by US, one call a
/// line; standard input of `--data-file=-` to `<log>.stdin`) and answers
/// look-ups as gcloud does: in `empty` mode nothing exists but what was
/// deployed in this run (a failed look-up says NOT_FOUND); in `existing`
/// mode everything exists, and a `--format=value[...]` look-up of a topic
/// or subscription prints `$FAKE_DESCRIBE_<name>` (dashes as underscores);
/// in `denied` mode every look-up fails with PERMISSION_DENIED.
const FAKE_GCLOUD: &str = r#"
log=$FAKE_GCLOUD_LOG
line=
for arg in "$@"; do line+=$arg$'\x1f'; done
printf '%s\n' "$line" >>"$log"
for arg in "$@"; do
    if [[ $arg == --data-file=- ]]; then
        IFS= read -r -d '' data || true
        printf '%s\n' "$data" >>"$log.stdin"
    fi
done
if [[ $1 == auth && $2 == print-access-token ]]; then echo fake-token; exit 0; fi
if [[ $1 == projects && $2 == describe ]]; then echo 123456789012; exit 0; fi
if [[ $1 == builds && $2 == get-default-service-account ]]; then
    echo projects/demo-project/serviceAccounts/BUILD_SA@developer.gserviceaccount.com; exit 0
fi
if [[ $1 == run && $2 == deploy ]]; then : >"$FAKE_GCLOUD_STATE/$3"; exit 0; fi
for arg in "$@"; do
    [[ $arg == describe ]] || continue
    if [[ $FAKE_GCLOUD_MODE == denied ]]; then
        echo "ERROR: (gcloud) PERMISSION_DENIED: The caller does not have permission" >&2; exit 1
    fi
    if [[ $1 == run && $3 == describe && -e $FAKE_GCLOUD_STATE/$4 ]] || [[ $FAKE_GCLOUD_MODE == existing ]]; then
        if [[ " $* " == *"value(status.url)"* ]]; then echo "https://$4-123456789012.europe-west1.run.app"; fi
        if [[ " $* " == *"--format=value(type)"* ]]; then echo "${FAKE_FIRESTORE_TYPE:-FIRESTORE_NATIVE}"; fi
        if [[ " $* " == *"--format=value[separator="* ]]; then
            var=FAKE_DESCRIBE_${4//-/_}
            printf '%s\n' "${!var}"
        fi
        exit 0
    fi
    echo "ERROR: (gcloud) NOT_FOUND: Resource not found (resource=$4)." >&2; exit 1
done
exit 0
"#;

/// A `curl` answering Resource Manager's testIamPermissions: every
/// permission asked for, but those in `$FAKE_DENY` (space-separated).
const FAKE_CURL: &str = r#"
data=
while (($#)); do
    [[ $1 == --data ]] && data=$2
    shift
done
list=${data#*[}
list=${list%]*}
IFS=, read -ra asked <<<"$list"
granted=()
for permission in "${asked[@]}"; do
    [[ " $FAKE_DENY " == *" ${permission//\"/} "* ]] || granted+=("$permission")
done
IFS=,
printf '{"permissions": [%s]}\n' "${granted[*]}"
"#;

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// What a project the kit converged answers for each topic and
/// subscription it manages: the label, then the fields `converge` asks for.
fn converged() -> Vec<(&'static str, String)> {
    let topic = "labrelay|labrelay|europe-west1".to_string();
    let push = |name: &str| {
        let url = format!("https://{name}-123456789012.europe-west1.run.app");
        format!(
            "labrelay|projects/demo-project/topics/new-lab-report|{url}|\
             pubsub-cloud-run-invoker@demo-project.iam.gserviceaccount.com|{url}|600|10s|600s|\
             projects/demo-project/topics/new-lab-report-dead-letter|100|604800s||labrelay"
        )
    };
    vec![
        ("FAKE_DESCRIBE_new_lab_report", topic.clone()),
        ("FAKE_DESCRIBE_new_lab_report_dead_letter", topic),
        (
            "FAKE_DESCRIBE_new_lab_report_dead_letter_sub",
            "labrelay|projects/demo-project/topics/new-lab-report-dead-letter|60|2678400s||labrelay"
                .to_string(),
        ),
        ("FAKE_DESCRIBE_email_service_sub", push("email-service")),
        ("FAKE_DESCRIBE_sms_service_sub", push("sms-service")),
    ]
}

/// One run of deploy.sh for real against the stand-ins.
struct FakeRun {
    /// gcloud's calls, each its arguments.
    calls: Vec<Vec<String>>,
    /// What arrived on gcloud's standard input.
    stdin: String,
    output: Output,
}

impl FakeRun {
    fn joined(&self) -> Vec<String> {
        self.calls.iter().map(|call| call.join(" ")).collect()
    }

    fn assert_success(&self) {
        assert!(
            self.output.status.success(),
            "deploy.sh failed:\n{}",
            self.stderr()
        );
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Runs deploy.sh for real against the stand-in gcloud in `mode`, with
/// `env` and `args` added, whatever its exit status.
fn fake_run(mode: &str, env: &[(&str, String)], args: &[&str]) -> FakeRun {
    let dir = tempfile::tempdir().unwrap();
    let bin = bare_path_dir(dir.path());
    let bash = std::fs::read_link(bin.join("bash")).unwrap();
    for (name, script) in [("gcloud", FAKE_GCLOUD), ("curl", FAKE_CURL)] {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!{}\n{script}", bash.display())).unwrap();
        make_executable(&path);
    }
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let log = dir.path().join("gcloud.log");
    let mut all_env = vec![
        ("FAKE_GCLOUD_LOG", log.display().to_string()),
        ("FAKE_GCLOUD_STATE", state.display().to_string()),
        ("FAKE_GCLOUD_MODE", mode.to_string()),
    ];
    all_env.extend_from_slice(env);
    let output = try_deploy(&bin, dir.path(), &all_env, args);
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            line.trim_end_matches('\x1f')
                .split('\x1f')
                .map(str::to_string)
                .collect()
        })
        .collect();
    let stdin = std::fs::read_to_string(log.with_extension("log.stdin")).unwrap_or_default();
    FakeRun {
        calls,
        stdin,
        output,
    }
}

/// Runs deploy.sh for real against the stand-in; it must succeed. Returns
/// the calls and what arrived on standard input.
fn run_against_fake(mode: &str) -> (Vec<Vec<String>>, String) {
    let env = if mode == "existing" {
        converged()
    } else {
        Vec::new()
    };
    let run = fake_run(mode, &env, &[]);
    assert!(
        run.output.status.success(),
        "deploy.sh against a {mode} project failed:\n{}",
        run.stderr()
    );
    (run.calls, run.stdin)
}

#[test]
fn a_real_run_does_what_the_dry_run_says_and_a_rerun_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bin = bare_path_dir(dir.path());
    let dry = run_deploy(&bin, dir.path(), &[], &["--dry-run"]);
    let keys = keys_file(dir.path()).display().to_string();
    let planned: Vec<Vec<String>> = plan_commands(&dry.stdout)
        .iter()
        .map(|line| {
            shell_words(&line.replace("PROJECT_NUMBER", PROJECT_NUMBER))
                .into_iter()
                .skip(1) // gcloud
                .map(|w| w.replace(&keys, "KEYS"))
                .collect()
        })
        .collect();

    let (calls, stdin) = run_against_fake("empty");
    let calls: Vec<Vec<String>> = calls
        .into_iter()
        // The token of the permission check, which a dry run does not ask.
        .filter(|call| call[..] != ["auth", "print-access-token"])
        .map(|call| {
            call.into_iter()
                .map(|w| {
                    // The keys file lives in each run's own temporary directory.
                    if w.starts_with("--data-file=/") {
                        "--data-file=KEYS".to_string()
                    } else {
                        w
                    }
                })
                .collect()
        })
        .collect();
    let planned: Vec<Vec<String>> = planned
        .into_iter()
        .map(|call| {
            call.into_iter()
                .map(|w| {
                    if w.starts_with("--data-file=/") || w == "--data-file=KEYS" {
                        "--data-file=KEYS".to_string()
                    } else {
                        w
                    }
                })
                .collect()
        })
        .collect();
    assert_eq!(
        calls, planned,
        "on an empty project the real run differs from the dry run's plan"
    );
    // The secrets went to Secret Manager on standard input, and only there.
    assert!(
        stdin.contains(SMTP_PASSWORD) && stdin.contains(TWILIO_AUTH_TOKEN),
        "{stdin:?}"
    );
    for call in &calls {
        let joined = call.join(" ");
        assert!(
            !joined.contains(SMTP_PASSWORD) && !joined.contains(TWILIO_AUTH_TOKEN),
            "a secret on a command line: {joined}"
        );
    }

    // Everything exists: nothing is created, built, replaced or added again;
    // the push services keep their audience in the same deploy.
    let (calls, stdin) = run_against_fake("existing");
    assert!(stdin.is_empty(), "a re-run added a secret version");
    for call in &calls {
        let joined = call.join(" ");
        let creates =
            call.iter().any(|w| w == "create") && !joined.starts_with("beta services identity");
        assert!(!creates, "a re-run created something: {joined}");
        assert!(
            !joined.starts_with("builds submit"),
            "a re-run rebuilt: {joined}"
        );
        assert!(!joined.starts_with("secrets versions add"), "{joined}");
        assert!(!joined.starts_with("run services update"), "{joined}");
        assert!(
            !(joined.starts_with("pubsub") && call.iter().any(|w| w == "update")),
            "a re-run on a converged project changed a topic or subscription: {joined}"
        );
    }
    for name in ["email-service", "sms-service"] {
        let deploy = calls
            .iter()
            .map(|call| call.join(" "))
            .find(|c| c.starts_with(&format!("run deploy {name} ")))
            .unwrap_or_else(|| panic!("{name} not deployed on a re-run"));
        assert!(
            deploy.contains(&format!(
                "PUSH_AUDIENCE=https://{name}-123456789012.europe-west1.run.app"
            )),
            "{deploy}"
        );
    }
    // The webhooks service keeps its own URL, and the sms-service names it.
    for name in ["sms-webhooks", "sms-service"] {
        let deploy = calls
            .iter()
            .map(|call| call.join(" "))
            .find(|c| c.starts_with(&format!("run deploy {name} ")))
            .unwrap_or_else(|| panic!("{name} not deployed on a re-run"));
        assert!(
            deploy.contains("PUBLIC_URL=https://sms-webhooks-123456789012.europe-west1.run.app"),
            "{deploy}"
        );
    }
    let (again, _) = run_against_fake("existing");
    assert_eq!(calls, again, "two re-runs made different calls");
}

/// A project that ran the lab (or was changed by hand): its topic and push
/// subscriptions exist without the kit's label, dead-letter policy or
/// retry policy. A run brings each to the kit's settings, saying what it
/// changes, and warns that it takes them over.
#[test]
fn a_run_brings_what_the_lab_left_to_the_kits_settings() {
    let url = "https://email-service-123456789012.europe-west1.run.app";
    let invoker = "pubsub-cloud-run-invoker@demo-project.iam.gserviceaccount.com";
    let mut env: Vec<(&str, String)> = converged()
        .into_iter()
        .filter(|(k, _)| {
            *k != "FAKE_DESCRIBE_new_lab_report" && *k != "FAKE_DESCRIBE_email_service_sub"
        })
        .collect();
    env.push(("FAKE_DESCRIBE_new_lab_report", "||".to_string()));
    env.push((
        "FAKE_DESCRIBE_email_service_sub",
        format!(
            "|projects/demo-project/topics/new-lab-report|{url}|{invoker}|{url}|10|||||604800s|2678400s|"
        ),
    ));
    let run = fake_run("existing", &env, &[]);
    run.assert_success();
    let calls = run.joined();
    let updates: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("pubsub") && c.contains(" update "))
        .collect();
    assert_eq!(
        updates,
        [
            "pubsub topics update new-lab-report --project=demo-project \
             --update-labels=app=labrelay --message-storage-policy-allowed-regions=europe-west1",
            "pubsub subscriptions update email-service-sub --project=demo-project --ack-deadline=600 \
             --min-retry-delay=10s --max-retry-delay=600s --dead-letter-topic=new-lab-report-dead-letter \
             --max-delivery-attempts=100 --expiration-period=never --update-labels=app=labrelay",
        ],
        "{calls:#?}"
    );
    let stderr = run.stderr();
    for said in [
        "WARNING: topic new-lab-report was not created by this kit",
        "WARNING: subscription email-service-sub was not created by this kit",
        "subscription email-service-sub: ackDeadlineSeconds '10' -> '600'",
        "subscription email-service-sub: deadLetterPolicy.maxDeliveryAttempts '' -> '100'",
    ] {
        assert!(stderr.contains(said), "{said:?} not in:\n{stderr}");
    }
    assert!(!stderr.contains("sms-service-sub"), "{stderr}");
}

/// A look-up that fails for another reason than "not found" (here
/// PERMISSION_DENIED) stops the run: taken for "not found", it would create
/// what exists, or add an old key back to a secret.
#[test]
fn a_look_up_that_fails_otherwise_than_not_found_stops_the_run() {
    let run = fake_run("denied", &[], &[]);
    assert!(!run.output.status.success());
    let stderr = run.stderr();
    assert!(
        stderr.contains("PERMISSION_DENIED") && stderr.contains("stops"),
        "{stderr}"
    );
    let changes: Vec<String> = run
        .joined()
        .into_iter()
        .filter(|c| c.contains(" create ") || c.contains(" add ") || c.starts_with("builds submit"))
        // Idempotent by itself, run before any look-up.
        .filter(|c| !c.starts_with("beta services identity create"))
        .collect();
    assert!(
        changes.is_empty(),
        "changed after a failed look-up: {changes:#?}"
    );
}

/// The deployer's permissions are asked first (testIamPermissions): what
/// is missing is named with its role, and nothing is changed.
#[test]
fn missing_permissions_stop_the_run_before_any_change() {
    let deny = "run.services.create resourcemanager.projects.setIamPolicy";
    let run = fake_run("empty", &[("FAKE_DENY", deny.to_string())], &[]);
    assert!(!run.output.status.success());
    let stderr = run.stderr();
    for named in [
        "run.services.create (roles/run.admin)",
        "resourcemanager.projects.setIamPolicy (roles/resourcemanager.projectIamAdmin)",
    ] {
        assert!(stderr.contains(named), "{named} not in:\n{stderr}");
    }
    assert!(!stderr.contains("pubsub.topics.create"), "{stderr}");
    assert_eq!(run.joined(), ["auth print-access-token"]);
}

/// A secret that has a version gets a new one only with --rotate-secrets.
#[test]
fn secrets_get_a_new_version_only_when_asked() {
    let run = fake_run("existing", &converged(), &[]);
    run.assert_success();
    assert!(run.stdin.is_empty());
    assert!(
        run.stderr()
            .contains("secret labrelay-ingest-api-keys has a version already"),
        "{}",
        run.stderr()
    );

    let run = fake_run("existing", &converged(), &["--rotate-secrets"]);
    run.assert_success();
    let added: Vec<String> = run
        .joined()
        .into_iter()
        .filter(|c| c.starts_with("secrets versions add "))
        .collect();
    assert_eq!(added.len(), 3, "{added:#?}");
    assert!(
        run.stdin.contains(SMTP_PASSWORD) && run.stdin.contains(TWILIO_AUTH_TOKEN),
        "{}",
        run.stdin
    );
}

/// The suppression key is made by the script on the first run (32 random
/// bytes, hex: a fresh one each time), reaches Secret Manager on standard
/// input alone, and is never given a new version, not even with
/// --rotate-secrets: a new key would forget every opt-out.
#[test]
fn the_suppression_key_is_made_once_never_shown_and_never_rotated() {
    let made = |run: &FakeRun| -> String {
        run.assert_success();
        let keys: Vec<&str> = run
            .stdin
            .lines()
            .filter(|line| line.len() == 64 && line.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        assert_eq!(keys.len(), 1, "{:?}", run.stdin);
        let key = keys[0].to_string();
        assert!(!key.bytes().any(|b| b.is_ascii_uppercase()), "{key}");
        let shown = [&run.output.stdout[..], &run.output.stderr[..]].concat();
        assert!(
            !String::from_utf8_lossy(&shown).contains(&key),
            "the key was printed"
        );
        for call in run.joined() {
            assert!(!call.contains(&key), "the key on a command line: {call}");
        }
        key
    };
    let first = made(&fake_run("empty", &[], &[]));
    let second = made(&fake_run("empty", &[], &[]));
    assert_ne!(first, second, "each first run makes its own key");

    let run = fake_run("existing", &converged(), &["--rotate-secrets"]);
    run.assert_success();
    let calls = run.joined();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("secrets versions add labrelay-suppression-key ")),
        "{calls:#?}"
    );
    assert!(
        run.stderr()
            .contains("secret labrelay-suppression-key is not rotated"),
        "{}",
        run.stderr()
    );
    for name in ["email-service", "sms-service"] {
        let deploy = calls
            .iter()
            .find(|c| c.starts_with(&format!("run deploy {name} ")))
            .unwrap();
        assert!(
            deploy.contains("SUPPRESSION_KEY=labrelay-suppression-key:latest"),
            "{deploy}"
        );
    }
}

/// Without the shared notification log each push service runs on one
/// instance, and says so; a Firestore database in Datastore mode is
/// refused, naming the way out.
#[test]
fn once_holds_without_the_shared_log_by_running_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    let bin = bare_path_dir(dir.path());
    let off = run_deploy(&bin, dir.path(), &[], &["--dry-run", "--notify-log", "off"]);
    let plan = plan_commands(&off.stdout);
    for name in ["email-service", "sms-service"] {
        let deploy = line_with(
            &plan,
            &format!("run deploy {name} "),
            &["--max-instances=1"],
        );
        assert!(!deploy.contains("NOTIFY_LOG"), "{deploy}");
    }
    assert!(!plan.iter().any(|l| l.contains("firestore")), "{plan:#?}");
    // Receipts and STOP are kept in the shared log: no log, no webhooks.
    assert!(
        !plan.iter().any(|l| l.contains("sms-webhooks")),
        "{plan:#?}"
    );
    assert!(
        !line_with(&plan, "run deploy sms-service ", &[]).contains("PUBLIC_URL"),
        "{plan:#?}"
    );
    let said = String::from_utf8_lossy(&off.stderr);
    assert!(said.contains("no sms-webhooks service"), "{said}");

    let named = run_deploy(
        &bin,
        dir.path(),
        &[],
        &["--dry-run", "--firestore-database", "labrelay"],
    );
    let plan = plan_commands(&named.stdout);
    line_with(
        &plan,
        "firestore databases create",
        &["--database=labrelay", "--type=firestore-native"],
    );
    line_with(
        &plan,
        "run deploy email-service ",
        &["NOTIFY_LOG=firestore://projects/demo-project/databases/labrelay"],
    );

    let mut env = converged();
    env.push(("FAKE_FIRESTORE_TYPE", "DATASTORE_MODE".to_string()));
    let datastore = fake_run("existing", &env, &[]);
    assert!(!datastore.output.status.success());
    let stderr = datastore.stderr();
    assert!(
        stderr.contains("DATASTORE_MODE") && stderr.contains("--firestore-database"),
        "{stderr}"
    );
}

/// Behind a load balancer (docs/production.md, "Past one region"): the
/// push services admit it, and the balancer's URL is where Pub/Sub pushes,
/// the token's audience and the service's `PUSH_AUDIENCE`, on every run.
#[test]
fn push_services_behind_a_load_balancer_keep_its_ingress_and_audience() {
    let dir = tempfile::tempdir().unwrap();
    let bin = bare_path_dir(dir.path());
    let balancer = "https://push.clinic.example/email";
    let run = run_deploy(
        &bin,
        dir.path(),
        &[],
        &[
            "--dry-run",
            "--push-ingress",
            "internal-and-cloud-load-balancing",
            "--email-push-url",
            balancer,
        ],
    );
    let plan = plan_commands(&run.stdout);
    line_with(
        &plan,
        "run deploy email-service ",
        &[
            "--ingress=internal-and-cloud-load-balancing",
            &format!("PUSH_AUDIENCE={balancer}"),
        ],
    );
    line_with(
        &plan,
        "run services update email-service ",
        &[&format!("--add-custom-audiences={balancer}")],
    );
    line_with(
        &plan,
        "pubsub subscriptions create email-service-sub ",
        &[
            &format!("--push-endpoint={balancer}"),
            &format!("--push-auth-token-audience={balancer}"),
        ],
    );
    // The SMS channel keeps its own URL.
    line_with(
        &plan,
        "pubsub subscriptions create sms-service-sub ",
        &["--push-endpoint=https://sms-service-PROJECT_NUMBER.europe-west1.run.app"],
    );
}

// --- the services under Cloud Run's environment -----------------------------------

/// One service process with stderr (the logs) collected line by line.
struct CloudRunService {
    name: &'static str,
    child: Child,
    port: u16,
    logs: Arc<Mutex<Vec<String>>>,
}

impl CloudRunService {
    /// Starts `labrelay NAME` with nothing but what Cloud Run sets (PORT,
    /// K_SERVICE, K_REVISION, K_CONFIGURATION), what deploy.sh sets, and
    /// `own`; then checks it announces 0.0.0.0:PORT.
    fn start(name: &'static str, own: &[(&str, String)]) -> CloudRunService {
        let port = std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(LABRELAY);
        command
            .arg(name)
            .env_clear()
            .env("PORT", port.to_string())
            .env("K_SERVICE", name)
            .env("K_REVISION", format!("{name}-00001-abc"))
            .env("K_CONFIGURATION", name)
            .env("GOOGLE_CLOUD_PROJECT", PROJECT)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in own {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("starting labrelay");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut announced = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut announced)
            .unwrap();
        let service = CloudRunService {
            name,
            child,
            port,
            logs,
        };
        assert_eq!(
            announced.trim(),
            format!("{name} listening on 0.0.0.0:{port}"),
            "{name} did not listen on 0.0.0.0:$PORT; logs:\n{}",
            service.logs()
        );
        service.assert_listens_on_all_interfaces();
        service
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The kernel's view: a listening socket on 0.0.0.0:PORT (Linux).
    fn assert_listens_on_all_interfaces(&self) {
        let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
            return;
        };
        let local = format!("00000000:{:04X}", self.port);
        let listening = table.lines().skip(1).any(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            fields.len() > 3 && fields[1] == local && fields[3] == "0A"
        });
        assert!(listening, "{}: no LISTEN socket on {local}", self.name);
    }

    fn healthz(&self) {
        let (status, body) = http(self.port, "GET", "/healthz", &[], "");
        assert_eq!(
            status, 200,
            "{}: /healthz answered {status} {body}",
            self.name
        );
    }

    /// SIGTERM as Cloud Run sends it; the process must be gone within its
    /// 10 s grace period, successfully. Returns the log lines.
    fn terminate(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} still running 10 s after SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM",
            self.name
        );
        // The reader thread sees EOF once the process is gone.
        std::thread::sleep(Duration::from_millis(100));
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for CloudRunService {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request to 127.0.0.1:PORT; the status and body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Every line is one JSON object that Cloud Logging reads as a structured
/// entry: `severity` (its names), `message`, and a time.
fn assert_cloud_logging_shape(name: &str, lines: &[String]) {
    assert!(!lines.is_empty(), "{name} logged nothing");
    for line in lines {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{name}: a log line that is not JSON ({e}): {line}"));
        let severity = entry.get("severity").and_then(|s| s.as_str());
        assert!(
            matches!(
                severity,
                Some("DEBUG" | "INFO" | "NOTICE" | "WARNING" | "ERROR" | "CRITICAL")
            ),
            "{name}: Cloud Logging needs `severity` (DEBUG, INFO, WARNING, ERROR...) on every line, got {severity:?}: {line}"
        );
        assert!(
            entry.get("message").is_some_and(|m| m.is_string()),
            "{name}: no string `message`: {line}"
        );
        assert!(
            entry
                .get("time")
                .or_else(|| entry.get("timestamp"))
                .is_some(),
            "{name}: no time: {line}"
        );
    }
}

#[test]
fn services_run_under_cloud_runs_environment() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path());
    let email_outbox = dir.path().join("email");
    let sms_outbox = dir.path().join("sms");
    let invoker = format!("pubsub-cloud-run-invoker@{PROJECT}.iam.gserviceaccount.com");

    // What deploy.sh sets, with a local keys file where Cloud Run mounts the
    // secret, and no PUBSUB_EMULATOR_HOST.
    let lab = CloudRunService::start(
        "lab-report-service",
        &[
            ("LAB_REPORT_TOPIC", "new-lab-report".into()),
            ("INGEST_API_KEYS_FILE", keys.display().to_string()),
            ("PUBLISH_TIMEOUT_SECS", "2".into()),
        ],
    );
    let email = CloudRunService::start(
        "email-service",
        &[
            ("SMTP_URL", format!("file://{}", email_outbox.display())),
            ("PUSH_ALLOWED_SERVICE_ACCOUNTS", invoker.clone()),
            (
                "PUSH_AUDIENCE",
                "https://email-service-123456789012.europe-west1.run.app".into(),
            ),
        ],
    );
    let sms = CloudRunService::start(
        "sms-service",
        &[
            ("SMS_URL", format!("file://{}", sms_outbox.display())),
            ("PUSH_ALLOWED_SERVICE_ACCOUNTS", invoker),
            (
                "PUSH_AUDIENCE",
                "https://sms-service-123456789012.europe-west1.run.app".into(),
            ),
        ],
    );
    for service in [&lab, &email, &sms] {
        service.healthz();
    }
    // Push verification is on: a push without Pub/Sub's token is refused.
    for service in [&email, &sms] {
        let (status, body) = http(
            service.port,
            "POST",
            "/",
            &[("Content-Type", "application/json")],
            r#"{"message": {"data": "e30=", "messageId": "1"}, "subscription": "projects/demo-project/subscriptions/x"}"#,
        );
        assert_eq!(
            status, 401,
            "{}: an unauthenticated push got {status} {body}",
            service.name
        );
    }

    // No emulator: the report goes to Google Cloud Pub/Sub with Application
    // Default Credentials, which on Cloud Run come from the metadata server.
    // There is none here, so the lab gets a 503 within the publish timeout
    // and nothing was sent to a local broker.
    let started = Instant::now();
    let bearer = format!("Bearer {INGEST_KEY}");
    let (status, body) = http(
        lab.port,
        "POST",
        "/",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
        ],
        r#"{"id": 12}"#,
    );
    let elapsed = started.elapsed();
    assert_eq!(
        status,
        503,
        "POST / answered {status} {body}; logs:\n{}",
        lab.logs()
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "the 503 took {elapsed:?}, more than the publish timeout (2 s) allows"
    );

    let lab_logs = lab.terminate();
    let email_logs = email.terminate();
    let sms_logs = sms.terminate();
    let lab_text = lab_logs.join("\n");
    assert!(
        lab_text.contains("metadata.google.internal"),
        "the lab-report-service did not try Google's credentials (the metadata server):\n{lab_text}"
    );
    assert!(
        !lab_text.contains("127.0.0.1:8085"),
        "the lab-report-service talked to a local broker:\n{lab_text}"
    );
    assert!(
        lab_text.contains("pet-lab"),
        "the lab-report-service did not read the keys file at INGEST_API_KEYS_FILE:\n{lab_text}"
    );
    // The push services check tokens against Google's keys.
    for (name, logs) in [("email-service", &email_logs), ("sms-service", &sms_logs)] {
        assert!(
            logs.iter()
                .any(|line| line.contains("https://www.googleapis.com/oauth2/v3/certs")),
            "{name} does not verify push tokens with Google's keys:\n{}",
            logs.join("\n")
        );
    }
    assert_cloud_logging_shape("lab-report-service", &lab_logs);
    assert_cloud_logging_shape("email-service", &email_logs);
    assert_cloud_logging_shape("sms-service", &sms_logs);
}

// --- the image ----------------------------------------------------------------------

#[test]
fn the_image_builds_and_runs_where_docker_is() {
    let engine = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !engine {
        println!("skipped: no Docker engine (`docker info` failed); the image was not built");
        return;
    }
    let tag = format!("labrelay-deploy-test:{}", std::process::id());
    let build = Command::new("docker")
        .env("DOCKER_BUILDKIT", "1")
        .args([
            "build",
            "--file",
            "deploy/cloudrun/Dockerfile",
            "--tag",
            &tag,
            ".",
        ])
        .current_dir(repo())
        .status()
        .unwrap();
    assert!(build.success(), "docker build failed");
    let run = Command::new("docker")
        .args(["run", "--rm", &tag, "--help"])
        .output()
        .unwrap();
    let inspect = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Config.User}} {{json .Config.Entrypoint}}",
            &tag,
        ])
        .output()
        .unwrap();
    let _ = Command::new("docker")
        .args(["rmi", "--force", &tag])
        .status();
    let help = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "labrelay --help failed in the image: {help}"
    );
    for command in ["lab-report-service", "email-service", "sms-service"] {
        assert!(
            help.contains(command),
            "{command} missing from --help: {help}"
        );
    }
    let config = String::from_utf8_lossy(&inspect.stdout);
    assert_eq!(config.trim(), r#"nonroot:nonroot ["/labrelay"]"#);
}

/// The clinic's templates from a bucket: mounted read-only at /templates
/// in both push services, which read them there, and readable by their
/// accounts alone; the deployer may grant that.
#[test]
fn a_templates_bucket_is_mounted_read_only_in_both_push_services() {
    let dir = tempfile::tempdir().unwrap();
    let bin = bare_path_dir(dir.path());
    let run = run_deploy(
        &bin,
        dir.path(),
        &[],
        &["--dry-run", "--templates-bucket", "gs://clinic-templates"],
    );
    let plan = plan_commands(&run.stdout);
    for (name, account) in [
        ("email-service", "labrelay-email"),
        ("sms-service", "labrelay-sms"),
    ] {
        line_with(
            &plan,
            &format!("run deploy {name} "),
            &[
                "TEMPLATES_DIR=/templates",
                "--clear-volumes",
                "--add-volume=name=templates,type=cloud-storage,bucket=clinic-templates,readonly=true",
                "--clear-volume-mounts",
                "--add-volume-mount=volume=templates,mount-path=/templates",
            ],
        );
        line_with(
            &plan,
            "storage buckets add-iam-policy-binding gs://clinic-templates ",
            &[
                &format!("--member=serviceAccount:{account}@demo-project.iam.gserviceaccount.com"),
                "--role=roles/storage.objectViewer",
            ],
        );
        assert!(
            position(&plan, "storage buckets add-iam-policy-binding ")
                < position(&plan, &format!("run deploy {name} "))
        );
    }
    assert_eq!(
        plan.iter()
            .filter(|l| l.contains("storage buckets"))
            .count(),
        2,
        "{plan:#?}"
    );
    for name in ["lab-report-service", "sms-webhooks"] {
        let deploy = line_with(&plan, &format!("run deploy {name} "), &[]);
        assert!(
            !deploy.contains("volume") && !deploy.contains("TEMPLATES_DIR"),
            "{deploy}"
        );
    }
    // The deployer needs to grant on the bucket: checked first.
    let run = fake_run(
        "empty",
        &[("FAKE_DENY", "storage.buckets.setIamPolicy".to_string())],
        &["--templates-bucket", "clinic-templates"],
    );
    assert!(!run.output.status.success());
    assert!(
        run.stderr().contains("storage.buckets.setIamPolicy"),
        "{}",
        run.stderr()
    );

    let bad = try_deploy(
        &bin,
        dir.path(),
        &[],
        &["--dry-run", "--templates-bucket", "Not A Bucket"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--templates-bucket"));
}
