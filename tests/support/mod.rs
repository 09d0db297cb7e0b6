//! Real `labrelay` processes for whole-system tests.

#![allow(dead_code)] // each test file uses its own part of this module

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `labrelay` subcommand, killed when dropped.
pub struct Process {
    child: Child,
    /// The address it announced on its first line of output.
    pub addr: SocketAddr,
    name: String,
}

impl Process {
    /// Runs `labrelay ARGS` with `envs` and waits for its "... listening on
    /// ADDR" line. Logs go to the test's stderr.
    pub fn start(name: &str, args: &[&str], envs: &[(&str, String)]) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_labrelay"));
        command
            .args(args)
            .env_remove("PUBSUB_EMULATOR_HOST")
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{name} printed {line:?} instead of its address"));
        Process {
            child,
            addr,
            name: name.to_string(),
        }
    }

    pub fn broker(data_dir: &Path) -> Process {
        Self::start(
            "broker",
            &[
                "broker",
                "--port",
                "0",
                "--data-dir",
                data_dir.to_str().unwrap(),
            ],
            &[],
        )
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no chance to flush or drain anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            eprintln!("stopped {}", self.name);
        }
    }
}

/// `labrelay up` on `data_dir` with every port chosen by the system and no
/// provider, ingest, host or broker settings inherited from the test's
/// environment; callers add their own settings and stdio.
pub fn up_command(data_dir: &Path) -> Command {
    labrelay_testkit::up::up_command(env!("CARGO_BIN_EXE_labrelay"), data_dir)
}

/// Starts `command` (from [`up_command`]) and waits for its `up.json`.
pub fn start_up(command: Command, data_dir: &Path) -> labrelay_testkit::up::Up {
    labrelay_testkit::up::Up::start(command, data_dir)
}

/// A port that was free a moment ago, for a process that must come back on
/// the same address after a restart (outside the ephemeral range, so no
/// outgoing connection of a test running beside this one can take it).
pub fn free_port() -> u16 {
    labrelay_runtime::serve::free_port().unwrap()
}

/// What `labrelay up` creates on the broker (`src/up.rs`), paced for a test:
/// the reports topic, the dead-letter topic with its pull subscription, and
/// one OIDC-authenticated push subscription per channel with a retry policy
/// and a dead-letter policy.
pub struct Topology<'a> {
    pub project: &'a str,
    /// The service account the push tokens name.
    pub invoker: &'a str,
    pub email_endpoint: String,
    pub sms_endpoint: String,
    pub ack_deadline_secs: i32,
    pub min_backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
    pub max_delivery_attempts: i32,
}

impl Topology<'_> {
    /// Creates it on the broker at `broker_url`.
    pub async fn create(&self, broker_url: &str) {
        use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
        let channel = tonic::transport::Channel::from_shared(broker_url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut publisher = pb::publisher_client::PublisherClient::new(channel.clone());
        let mut subscriber = pb::subscriber_client::SubscriberClient::new(channel);
        let project = self.project;
        let topic = format!("projects/{project}/topics/new-lab-report");
        let dead_letter = format!("projects/{project}/topics/new-lab-report-dead-letter");
        for name in [&topic, &dead_letter] {
            publisher
                .create_topic(pb::Topic {
                    name: name.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        subscriber
            .create_subscription(pb::Subscription {
                name: format!("projects/{project}/subscriptions/new-lab-report-dead-letter-sub"),
                topic: dead_letter.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let duration = |d: std::time::Duration| {
            Some(prost_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            })
        };
        for (id, endpoint) in [
            ("email-service-sub", &self.email_endpoint),
            ("sms-service-sub", &self.sms_endpoint),
        ] {
            subscriber
                .create_subscription(pb::Subscription {
                    name: format!("projects/{project}/subscriptions/{id}"),
                    topic: topic.clone(),
                    ack_deadline_seconds: self.ack_deadline_secs,
                    push_config: Some(pb::PushConfig {
                        push_endpoint: endpoint.clone(),
                        authentication_method: Some(
                            pb::push_config::AuthenticationMethod::OidcToken(
                                pb::push_config::OidcToken {
                                    service_account_email: self.invoker.into(),
                                    audience: endpoint.clone(),
                                },
                            ),
                        ),
                        ..Default::default()
                    }),
                    retry_policy: Some(pb::RetryPolicy {
                        minimum_backoff: duration(self.min_backoff),
                        maximum_backoff: duration(self.max_backoff),
                    }),
                    dead_letter_policy: Some(pb::DeadLetterPolicy {
                        dead_letter_topic: dead_letter.clone(),
                        max_delivery_attempts: self.max_delivery_attempts,
                    }),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
}
