//! What a web page in the operator's browser can do to `labrelay up`:
//! nothing. Each test runs the real `up` and sends what a browser sends
//! for a hostile page: a cross-site `fetch()` in `no-cors` mode (no
//! Content-Type, no preflight), and requests after DNS rebinding (the
//! page's own name in `Host`, or in gRPC's `:authority`). The system's own
//! clients keep working beside them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
use labrelay_testkit::up;
use serde_json::Value;

use crate::LABRELAY;

/// `labrelay up` with `args`, and where its parts listen.
struct Up {
    process: labrelay_testkit::up::Up,
    broker: SocketAddr,
    /// Each part's name and address, the broker first.
    ports: Vec<(&'static str, SocketAddr)>,
}

impl Up {
    fn start(data_dir: &Path, args: &[&str]) -> Up {
        let mut command = up::up_command(LABRELAY, data_dir);
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        let process = up::Up::start(command, data_dir);
        let running = &process.running;
        let ports = vec![
            ("broker", running.broker),
            ("lab-report-service", running.lab_report_service),
            ("email-service", running.email_service),
            ("sms-service", running.sms_service),
        ];
        Up {
            broker: running.broker,
            ports,
            process,
        }
    }

    fn subscription_url(&self, id: &str) -> String {
        format!(
            "{}/v1/projects/labrelay-local/subscriptions/{id}",
            self.process.broker_url()
        )
    }
}

async fn answer(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn error_text(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match &value["error"] {
        Value::String(message) => message.clone(),
        error => error["message"].as_str().unwrap_or(body).to_string(),
    }
}

#[tokio::test]
async fn a_cross_site_no_cors_post_is_refused_on_every_port_and_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path(), &[]);
    let http = reqwest::Client::new();
    let before: Value = http
        .get(up.subscription_url("email-service-sub"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint = before["pushConfig"]["pushEndpoint"].as_str().unwrap();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{before}");

    // `fetch(url, {method: "POST", mode: "no-cors", body: new Blob([json])})`
    // from https://evil.example: the body goes without a Content-Type.
    let hijack = r#"{"pushConfig": {"pushEndpoint": "http://127.0.0.1:9/steal"}}"#;
    let browser_post = |url: String, body: &'static str| {
        http.post(url)
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site")
            .header("sec-fetch-mode", "no-cors")
            .body(body)
    };
    let (status, body) = answer(
        browser_post(
            format!(
                "{}:modifyPushConfig",
                up.subscription_url("email-service-sub")
            ),
            hijack,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(error_text(&body).contains("cross-site"), "{body}");
    let publish = format!(
        "http://{}/v1/projects/labrelay-local/topics/new-lab-report:publish",
        up.broker
    );
    let forged = r#"{"messages": [{"data": "eyJpZCI6IDF9", "attributes": {"lab": "x"}}]}"#;
    let (status, _) = answer(browser_post(publish.clone(), forged).send().await.unwrap()).await;
    assert_eq!(status, 403);
    // Only `Sec-Fetch-Site` (another port of the same host is same-site).
    let (status, _) = answer(
        http.post(&publish)
            .header("sec-fetch-site", "same-site")
            .header("content-type", "application/json")
            .body(forged)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    // Every other port refuses the same, before its own checks.
    for (part, addr) in &up.ports[1..] {
        let (status, body) = answer(
            browser_post(format!("http://{addr}/"), r#"{"id": 1}"#)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403, "{part}: {body}");
    }

    // Without a browser's marks, a body must still say it is JSON.
    let (status, body) = answer(
        http.post(format!(
            "{}:modifyPushConfig",
            up.subscription_url("email-service-sub")
        ))
        .body(hijack)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("Content-Type must be application/json"));

    let after: Value = http
        .get(up.subscription_url("email-service-sub"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after, before, "the subscription was not changed");

    // The console's own requests are same-origin and pass.
    let console = format!("http://{}/console/api/overview", up.broker);
    let (status, body) = answer(
        http.get(&console)
            .header("origin", format!("http://{}", up.broker))
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn foreign_host_names_are_refused_unless_allowed() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path(), &["--allowed-hosts", "relay.clinic.example"]);
    let http = reqwest::Client::new();
    let port = up.broker.port();
    let console = format!("http://{}/console/api/overview", up.broker);

    // DNS rebinding: the attacker's name in Host.
    let (status, body) = answer(
        http.get(&console)
            .header("host", format!("evil.example:{port}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let why = error_text(&body);
    assert!(
        why.contains("evil.example") && why.contains("ALLOWED_HOSTS"),
        "{why}"
    );
    let topic = format!("http://{}/v1/projects/demo/topics/rebound", up.broker);
    let (status, _) = answer(
        http.put(&topic)
            .header("host", "rebind.attacker.example")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = answer(http.get(&topic).send().await.unwrap()).await;
    assert_eq!(status, 404, "the rebound request created nothing");
    for (part, addr) in &up.ports {
        let (status, body) = answer(
            http.get(format!("http://{addr}/healthz"))
                .header("host", "evil.example")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403, "{part}: {body}");
    }

    // Names the operator allowed, and every loopback name, are answered.
    for host in [
        format!("relay.clinic.example:{port}"),
        format!("localhost:{port}"),
        format!("app.localhost:{port}"),
        format!("127.0.0.2:{port}"),
    ] {
        let (status, body) = answer(
            http.get(&console)
                .header("host", &host)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{host}: {body}");
    }

    // gRPC carries the host as `:authority`.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", up.broker))
        .unwrap()
        .origin(format!("http://evil.example:{port}").parse().unwrap());
    let mut publisher = pb::publisher_client::PublisherClient::new(endpoint.connect_lazy());
    let refused = publisher
        .get_topic(pb::GetTopicRequest {
            topic: "projects/labrelay-local/topics/new-lab-report".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("ALLOWED_HOSTS"), "{refused:?}");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", up.broker))
        .unwrap()
        .connect_lazy();
    pb::publisher_client::PublisherClient::new(channel)
        .get_topic(pb::GetTopicRequest {
            topic: "projects/labrelay-local/topics/new-lab-report".into(),
        })
        .await
        .expect("a client naming the broker's own address is answered");
}

#[tokio::test]
async fn the_broker_under_up_pushes_only_to_its_own_services() {
    let data = tempfile::tempdir().unwrap();
    let up = Up::start(data.path(), &[]);
    let http = reqwest::Client::new();
    for endpoint in [
        "http://127.0.0.1:9/",
        "http://169.254.169.254/computeMetadata/v1/",
    ] {
        let (status, body) = answer(
            http.put(up.subscription_url("exfiltrate"))
                .header("content-type", "application/json")
                .body(
                    serde_json::json!({
                        "topic": "projects/labrelay-local/topics/new-lab-report",
                        "pushConfig": {"pushEndpoint": endpoint},
                    })
                    .to_string(),
                )
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403, "{endpoint}: {body}");
        assert!(
            error_text(&body).contains("--allowed-push-endpoints"),
            "{body}"
        );
    }
    let (status, _) = answer(
        http.get(up.subscription_url("exfiltrate"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
}
