//! The console's JSON API, the journal behind it, the delivery stats and
//! `/metrics` (issue 9), against a real broker over HTTP and a real push
//! endpoint that answers like labrelay's receivers, with
//! `X-Labrelay-Outcome`.

// The harness's `both!` macro (gRPC and REST scenarios) is not used here.
#[allow(unused_macros, unused_imports)]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use common::{EVENT_TIMEOUT, TestBroker, run, spawn_broker, spawn_broker_with};

const TOPIC: &str = "projects/p/topics/reports";
const DEAD_TOPIC: &str = "projects/p/topics/reports-dead";
const DEAD_SUB: &str = "projects/p/subscriptions/reports-dead-sub";
const EMAIL: &str = "projects/p/subscriptions/email";

/// A push receiver answering with a status that can be switched, and
/// `X-Labrelay-Outcome: <outcome>` (and any other headers set) on success.
struct Receiver {
    addr: std::net::SocketAddr,
    status: Arc<AtomicU16>,
    outcome: Arc<std::sync::Mutex<&'static str>>,
    headers: Arc<std::sync::Mutex<Vec<(&'static str, String)>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(204));
        let outcome = Arc::new(std::sync::Mutex::new("sent"));
        let headers = Arc::new(std::sync::Mutex::new(Vec::<(&str, String)>::new()));
        let (s, o, h) = (status.clone(), outcome.clone(), headers.clone());
        let app = axum::Router::new().fallback(move || {
            let (s, o, h) = (s.clone(), o.clone(), h.clone());
            async move {
                let code = axum::http::StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap();
                let mut answer = axum::http::HeaderMap::new();
                answer.insert("x-labrelay-outcome", (*o.lock().unwrap()).parse().unwrap());
                for (name, value) in h.lock().unwrap().iter() {
                    answer.insert(
                        *name,
                        axum::http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
                    );
                }
                (code, answer)
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            addr,
            status,
            outcome,
            headers,
        }
    }

    /// Headers answered with every push from now on, besides the outcome.
    fn headers(&self, headers: &[(&'static str, &str)]) {
        *self.headers.lock().unwrap() = headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
    }

    fn answer(&self, status: u16, outcome: &'static str) {
        self.status.store(status, Ordering::SeqCst);
        *self.outcome.lock().unwrap() = outcome;
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(broker: &TestBroker) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: broker.url(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn text(&self, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    async fn put(&self, path: &str, body: Value) {
        let response = self
            .http
            .put(format!("{}/v1/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "PUT {path}: {}",
            response.text().await.unwrap()
        );
    }

    async fn publish(&self, report: &str, data: &str) -> String {
        self.publish_to(
            TOPIC,
            json!({"messages": [{
                "data": base64::engine::general_purpose::STANDARD.encode(data),
                "attributes": {"reportId": report},
            }]}),
        )
        .await
    }

    async fn publish_to(&self, topic: &str, body: Value) -> String {
        let response = self
            .http
            .post(format!("{}/v1/{topic}:publish", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let answer: Value = response.json().await.unwrap();
        answer["messageIds"][0].as_str().unwrap().to_string()
    }

    async fn replay(&self, content_type: &str, marked: bool, body: Value) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/console/api/dead-letters/replay", self.base))
            .header("content-type", content_type)
            .body(body.to_string());
        if marked {
            request = request.header("x-labrelay-console", "1");
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls `path` until `done` holds for its answer (the console has no
    /// push channel to await; it is polled, as the page polls it).
    async fn until(&self, what: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let body = self.ok(path).await;
            if done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last answer of {path}: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn topology(client: &Client, receiver: &Receiver) {
    for topic in [TOPIC, DEAD_TOPIC] {
        client.put(topic, json!({})).await;
    }
    client.put(DEAD_SUB, json!({"topic": DEAD_TOPIC})).await;
    client
        .put(
            EMAIL,
            json!({
                "topic": TOPIC,
                "pushConfig": {"pushEndpoint": format!("http://{}/", receiver.addr)},
                "retryPolicy": {"minimumBackoff": "0s", "maximumBackoff": "0s"},
                "deadLetterPolicy": {"deadLetterTopic": DEAD_TOPIC, "maxDeliveryAttempts": 5},
            }),
        )
        .await;
}

fn subscription<'a>(overview: &'a Value, name: &str) -> &'a Value {
    overview["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {overview:#}"))
}

fn channel_states(journey: &Value) -> Vec<(String, String, String)> {
    journey["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| {
            m["channels"].as_array().unwrap().iter().map(move |c| {
                (
                    m["message_id"].as_str().unwrap().to_string(),
                    c["subscription"].as_str().unwrap().to_string(),
                    c["state"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect()
}

fn has_state(journey: &Value, sub: &str, state: &str) -> bool {
    channel_states(journey)
        .iter()
        .any(|(_, s, st)| s == sub && st == state)
}

fn series_total(sub: &Value, key: &str) -> u64 {
    sub["series"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

/// A series' value in a scrape, e.g.
/// `metric(&text, "labrelay_broker_backlog_messages{subscription=\"x\"}")`.
fn metric(text: &str, series: &str) -> Option<f64> {
    labrelay_testkit::metrics::Samples::parse(text).get(series)
}

#[test]
fn a_report_is_delivered_fails_is_dead_lettered_and_replayed_as_the_console_shows() {
    run(async {
        let broker = spawn_broker().await;
        let client = Client::new(&broker);
        let receiver = Receiver::start().await;
        topology(&client, &receiver).await;

        // Delivered: the journey and the stats say so.
        let first = client.publish("LR-1", r#"{"owner":"private"}"#).await;
        let journey = client
            .until("LR-1 delivered", "/console/api/journey?report=LR-1", |j| {
                has_state(j, EMAIL, "delivered")
            })
            .await;
        let message = &journey["messages"][0];
        assert_eq!(message["message_id"], first);
        assert_eq!(message["topic"], TOPIC);
        assert_eq!(message["attributes"]["reportId"], "LR-1");
        assert_eq!(message["subscriptions"], json!([EMAIL]));
        assert!(
            message.get("data").is_none(),
            "data shown without the flag: {message}"
        );
        let attempt = &message["events"][0];
        assert_eq!(
            (attempt["kind"].as_str(), attempt["status"].as_u64()),
            (Some("push"), Some(204))
        );
        assert_eq!(attempt["outcome"], "sent");
        assert!(attempt["latency_ms"].as_f64().unwrap() >= 0.0);
        let overview = client
            .until("the push counted", "/console/api/overview", |o| {
                subscription(o, EMAIL)["pushes_ok"] == 1
            })
            .await;
        let email = subscription(&overview, EMAIL);
        assert_eq!(email["kind"], "push");
        assert_eq!(email["backlog"], 0);
        assert_eq!(series_total(email, "success"), 1);
        assert_eq!(email["series"]["success"].as_array().unwrap().len(), 180);
        assert!(email["last_error"].is_null());
        assert!(
            subscription(&overview, DEAD_SUB)["holds_dead_letters"]
                .as_bool()
                .unwrap()
        );

        // Broken: five failed attempts, then the dead-letter subscription holds it.
        receiver.answer(503, "");
        let second = client.publish("LR-2", "{}").await;
        let journey = client
            .until(
                "LR-2 dead-lettered",
                "/console/api/journey?report=LR-2",
                |j| has_state(j, EMAIL, "dead-lettered"),
            )
            .await;
        let events = journey["messages"][0]["events"].as_array().unwrap();
        let pushes: Vec<_> = events.iter().filter(|e| e["kind"] == "push").collect();
        assert_eq!(pushes.len(), 5, "{events:#?}");
        assert!(
            pushes
                .iter()
                .all(|e| e["status"] == 503 && e["error"] == "HTTP 503")
        );
        let dead_letter = events
            .iter()
            .find(|e| e["kind"] == "dead-lettered")
            .unwrap();
        assert_eq!(dead_letter["error"], "push failed: HTTP 503");
        let dead_id = dead_letter["related_id"].as_str().unwrap().to_string();
        // The dead letter itself is journaled under the same report, parked.
        let journey = client
            .until(
                "the dead letter journaled",
                "/console/api/journey?report=LR-2",
                |j| has_state(j, DEAD_SUB, "parked"),
            )
            .await;
        assert_eq!(journey["messages"][1]["message_id"], dead_id.as_str());
        // A message id leads to the whole report.
        let by_message = client
            .ok(&format!("/console/api/journey?message={second}"))
            .await;
        assert_eq!(by_message["report"], "LR-2");
        assert_eq!(by_message["messages"].as_array().unwrap().len(), 2);

        let overview = client.ok("/console/api/overview").await;
        let email = subscription(&overview, EMAIL);
        assert_eq!(email["pushes_failed"], 5);
        assert_eq!(email["dead_lettered"], 1);
        assert_eq!(series_total(email, "failure"), 5);
        assert_eq!(email["last_error"]["status"], 503);
        assert_eq!(email["last_error"]["message_id"], second.as_str());
        assert_eq!(email["last_error"]["attempt"], 5);
        let dead_sub = subscription(&overview, DEAD_SUB);
        assert_eq!(dead_sub["backlog"], 1);
        assert!(dead_sub["oldest_unacked_age_s"].as_f64().unwrap() >= 0.0);

        let dead_letters = client.ok("/console/api/dead-letters").await;
        let listed = &dead_letters["subscriptions"][0];
        assert_eq!(listed["name"], DEAD_SUB);
        assert_eq!(listed["total"], 1);
        let parked = &listed["messages"][0];
        assert_eq!(parked["message_id"], dead_id.as_str());
        assert_eq!(parked["report_id"], "LR-2");
        assert_eq!(parked["source_subscription"], "email");
        assert_eq!(parked["delivery_attempts"], "5");
        assert_eq!(parked["error"], "push failed: HTTP 503");

        // Metrics agree.
        let (status, headers, text) = client.text("/metrics").await;
        assert_eq!(status, 200);
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let email_label = format!("subscription=\"{EMAIL}\"");
        assert_eq!(
            metric(
                &text,
                &format!("labrelay_broker_push_attempts_total{{{email_label},code=\"503\"}}")
            ),
            Some(5.0),
            "{text}"
        );
        assert_eq!(
            metric(
                &text,
                &format!("labrelay_broker_push_attempts_total{{{email_label},code=\"204\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(
                &text,
                &format!("labrelay_broker_published_messages_total{{topic=\"{TOPIC}\"}}")
            ),
            Some(2.0)
        );
        assert_eq!(
            metric(
                &text,
                &format!("labrelay_broker_dead_lettered_messages_total{{{email_label}}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(
                &text,
                &format!("labrelay_broker_backlog_messages{{subscription=\"{DEAD_SUB}\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(
                &text,
                &format!("labrelay_broker_in_flight_messages{{{email_label}}}")
            ),
            Some(0.0)
        );
        assert_eq!(
            metric(
                &text,
                &format!("labrelay_broker_delivery_latency_seconds_count{{{email_label}}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(
                &text,
                &format!("labrelay_broker_push_latency_seconds_count{{{email_label}}}")
            ),
            Some(6.0)
        );
        assert_eq!(
            metric(
                &text,
                &format!("labrelay_broker_publish_latency_seconds_count{{topic=\"{TOPIC}\"}}")
            ),
            Some(2.0)
        );
        assert!(
            text.contains("labrelay_broker_oldest_unacked_message_age_seconds{"),
            "{text}"
        );
        assert_eq!(
            metric(&text, "labrelay_broker_journal_dropped_events_total"),
            Some(0.0)
        );
        // The store and the journal are open: their page caches hold
        // something, far from a runaway.
        let sqlite = metric(&text, "labrelay_broker_sqlite_memory_bytes").unwrap();
        assert!((1024.0..64e6).contains(&sqlite), "{sqlite}");

        // Replay refuses what a cross-site form could send.
        let request = json!({"subscription": DEAD_SUB, "message_ids": [dead_id]});
        let (status, _) = client
            .replay("application/x-www-form-urlencoded", true, request.clone())
            .await;
        assert_eq!(status, 403);
        let (status, _) = client
            .replay("application/json", false, request.clone())
            .await;
        assert_eq!(status, 403);
        let (status, body) = client
            .replay("application/json", true, json!({"subscription": EMAIL}))
            .await;
        assert_eq!(status, 400, "{body}");
        let (status, _) = client
            .replay(
                "application/json",
                true,
                json!({"subscription": "projects/p/subscriptions/nope"}),
            )
            .await;
        assert_eq!(status, 404);
        assert_eq!(
            subscription(&client.ok("/console/api/overview").await, DEAD_SUB)["backlog"],
            1
        );

        // Replay: the channel is back (and says it skipped this one).
        receiver.answer(204, "skipped");
        let (status, answer) = client
            .replay("application/json; charset=utf-8", true, request)
            .await;
        assert_eq!(status, 200, "{answer}");
        let replayed = &answer["replayed"][0];
        assert_eq!(replayed["message_id"], dead_id.as_str());
        assert_eq!(replayed["topic"], TOPIC);
        assert_eq!(replayed["report_id"], "LR-2");
        assert_eq!(answer["not_found"], json!([]));
        let new_id = replayed["new_id"].as_str().unwrap().to_string();
        let journey = client
            .until(
                "the replay delivered",
                "/console/api/journey?report=LR-2",
                |j| channel_states(j).contains(&(new_id.clone(), EMAIL.into(), "skipped".into())),
            )
            .await;
        assert!(has_state(&journey, DEAD_SUB, "replayed"), "{journey:#}");
        let dead_message = journey["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["message_id"] == dead_id.as_str())
            .unwrap();
        let kinds: Vec<&str> = dead_message["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert!(
            kinds.contains(&"acked") && kinds.contains(&"replayed"),
            "{kinds:?}"
        );
        let replayed_message = journey["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["message_id"] == new_id.as_str())
            .unwrap();
        assert!(
            replayed_message["attributes"]
                .as_object()
                .unwrap()
                .keys()
                .all(|k| !k.starts_with("CloudPubSubDeadLetterSource")),
            "{replayed_message}"
        );
        let dead_letters = client.ok("/console/api/dead-letters").await;
        assert_eq!(dead_letters["subscriptions"][0]["total"], 0);
        let (status, answer) = client
            .replay(
                "application/json",
                true,
                json!({"subscription": DEAD_SUB, "message_ids": ["999"]}),
            )
            .await;
        assert_eq!((status, &answer["not_found"]), (200, &json!(["999"])));

        // Recent messages, newest first, with their channels.
        let recent = client.ok("/console/api/recent").await;
        let ids: Vec<&str> = recent["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                new_id.as_str(),
                dead_id.as_str(),
                second.as_str(),
                first.as_str()
            ]
        );
    });
}

#[test]
fn the_page_renders_and_network_input_is_validated() {
    run(async {
        let broker = spawn_broker().await;
        let client = Client::new(&broker);
        let receiver = Receiver::start().await;
        topology(&client, &receiver).await;
        client.publish("LR-<9>", "{}").await;
        client
            .until("the report journaled", "/console/api/recent", |r| {
                r["messages"].as_array().is_some_and(|m| !m.is_empty())
            })
            .await;

        let (status, headers, html) = client.text("/console?report=LR-%3C9%3E").await;
        assert_eq!(status, 200);
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(
            html.contains(&format!("data-subscription=\"{EMAIL}\"")),
            "{html}"
        );
        assert!(html.contains("Journey of report"));
        // The id is escaped, never markup.
        assert!(
            html.contains("LR-&#60;9&#62;") || html.contains("LR-&lt;9&gt;"),
            "{html}"
        );
        assert!(!html.contains("LR-<9>"));

        let (status, _, html) = client
            .text(&format!("/console?report={}", "x".repeat(129)))
            .await;
        assert_eq!(status, 400);
        assert!(html.contains("at most 128 characters"));
        let (status, _, _) = client.text("/console?report=a%00b").await;
        assert_eq!(status, 400);
        for bad in [
            "/console/api/journey",
            "/console/api/journey?message=abc",
            "/console/api/journey?message=1&report=2",
            "/console/api/journey?report=%01",
            "/console/api/recent?limit=0",
            "/console/api/recent?limit=x",
        ] {
            let (status, body) = client.get(bad).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert!(body["error"].is_string(), "{bad}: {body}");
        }
        let (status, body) = client.get("/console/api/journey?report=unknown").await;
        assert_eq!((status, &body["messages"]), (200, &json!([])));
        for asset in ["/console/console.js", "/console/console.css"] {
            let (status, _, text) = client.text(asset).await;
            assert_eq!(status, 200);
            assert!(text.len() > 500, "{asset}");
        }
    });
}

#[test]
fn message_data_is_shown_only_with_the_flag() {
    run(async {
        let broker = spawn_broker_with(|c| c.console_show_data = true).await;
        let client = Client::new(&broker);
        let receiver = Receiver::start().await;
        topology(&client, &receiver).await;
        client.publish("LR-D", r#"{"pet":"Max"}"#).await;
        let journey = client
            .until("LR-D journaled", "/console/api/journey?report=LR-D", |j| {
                j["messages"].as_array().is_some_and(|m| !m.is_empty())
            })
            .await;
        assert_eq!(journey["messages"][0]["data"], r#"{"pet":"Max"}"#);
        assert_eq!(client.ok("/console/api/overview").await["show_data"], true);
    });
}

#[test]
fn the_journal_survives_a_restart() {
    run(async {
        let mut broker = spawn_broker().await;
        let receiver = Receiver::start().await;
        {
            let client = Client::new(&broker);
            topology(&client, &receiver).await;
            client.publish("LR-R", "{}").await;
            client
                .until("LR-R delivered", "/console/api/journey?report=LR-R", |j| {
                    has_state(j, EMAIL, "delivered")
                })
                .await;
        }
        broker.restart().await;
        let client = Client::new(&broker);
        let journey = client.ok("/console/api/journey?report=LR-R").await;
        assert!(has_state(&journey, EMAIL, "delivered"), "{journey:#}");
    });
}

#[test]
fn a_dead_letter_topic_without_a_subscription_is_flagged_and_its_losses_counted() {
    run(async {
        let broker = spawn_broker().await;
        let client = Client::new(&broker);
        let receiver = Receiver::start().await;
        receiver.answer(500, "failed");
        topology(&client, &receiver).await;
        client
            .http
            .delete(format!("{}/v1/{DEAD_SUB}", client.base))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        let gauge = format!(
            "labrelay_broker_dead_letter_topic_unsubscribed{{subscription=\"{EMAIL}\",topic=\"{DEAD_TOPIC}\"}}"
        );
        let dropped =
            format!("labrelay_broker_dead_letters_dropped_total{{topic=\"{DEAD_TOPIC}\"}}");

        // Flagged before anything is lost: the overview, the page, /metrics.
        let overview = client.ok("/console/api/overview").await;
        assert_eq!(subscription(&overview, EMAIL)["drops_dead_letters"], true);
        let (_, _, page) = client.text("/console").await;
        assert!(
            page.contains(&format!("data-drops-dead-letters=\"{EMAIL}\"")),
            "no warning on the page"
        );
        let (_, _, scrape) = client.text("/metrics").await;
        assert_eq!(metric(&scrape, &gauge), Some(1.0), "{scrape}");

        // The dead letter is dropped: counted, and the journey says so.
        client.publish("LR-LOST", "{}").await;
        let journey = client
            .until(
                "LR-LOST dead-lettered",
                "/console/api/journey?report=LR-LOST",
                |j| has_state(j, EMAIL, "dead-lettered"),
            )
            .await;
        let said = journey["messages"][0]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| {
                e["kind"] == "dead-lettered"
                    && e["error"].as_str().is_some_and(|e| e.contains("dropped"))
                    && e["related_id"].is_null()
            });
        assert!(said, "the journey does not say it was dropped: {journey:#}");
        let (_, _, scrape) = client.text("/metrics").await;
        assert_eq!(metric(&scrape, &dropped), Some(1.0), "{scrape}");
        assert_eq!(
            subscription(&client.ok("/console/api/overview").await, EMAIL)["backlog"],
            0
        );

        // A subscription on the dead-letter topic clears the flag.
        client.put(DEAD_SUB, json!({"topic": DEAD_TOPIC})).await;
        let overview = client.ok("/console/api/overview").await;
        assert_eq!(subscription(&overview, EMAIL)["drops_dead_letters"], false);
        let (_, _, scrape) = client.text("/metrics").await;
        assert_eq!(metric(&scrape, &gauge), Some(0.0));
    });
}

/// The channel of `sub` in the journey's first message.
fn journey_channel<'a>(journey: &'a Value, sub: &str) -> Option<&'a Value> {
    journey["messages"]
        .get(0)?
        .get("channels")?
        .as_array()?
        .iter()
        .find(|c| c["subscription"] == sub)
}

fn step_labels(journey: &Value, sub: &str) -> Vec<String> {
    journey_channel(journey, sub)
        .and_then(|c| c["steps"].as_array())
        .map(|steps| {
            steps
                .iter()
                .map(|s| s["label"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 26: what the provider said after the push. The receiver answers
/// `sent` with the provider's id; receipts published to a topic without
/// subscriptions (as the sms-service publishes them to `RECEIPTS_TOPIC`)
/// become the channel's steps, after "accepted by provider". A suppressed
/// push keeps the receiver's reason; a reason that is not short printable
/// ASCII is dropped.
#[test]
fn receipts_are_steps_of_the_journey_and_a_suppression_shows_its_reason() {
    run(async {
        let broker = spawn_broker().await;
        let client = Client::new(&broker);
        let receiver = Receiver::start().await;
        topology(&client, &receiver).await;
        let receipts = "projects/p/topics/receipts";
        client.put(receipts, json!({})).await;

        receiver.headers(&[("x-labrelay-provider-id", "SM0001")]);
        client.publish("R-RECEIPT", "{}").await;
        let path = "/console/api/journey?report=R-RECEIPT";
        client
            .until("the push accepted", path, |j| {
                step_labels(j, EMAIL) == ["accepted by provider"]
            })
            .await;
        for (status, code) in [("sent", None), ("undelivered", Some("30003"))] {
            let mut attributes = json!({
                "reportId": "R-RECEIPT", "sid": "SM0001", "status": status, "channel": "sms",
            });
            if let Some(code) = code {
                attributes["errorCode"] = json!(code);
            }
            client
                .publish_to(receipts, json!({"messages": [{"attributes": attributes}]}))
                .await;
        }
        let journey = client
            .until("the receipts as steps", path, |j| {
                step_labels(j, EMAIL).len() == 3
            })
            .await;
        assert_eq!(
            step_labels(&journey, EMAIL),
            [
                "accepted by provider",
                "sent to carrier",
                "undelivered (30003)"
            ]
        );
        let steps = &journey_channel(&journey, EMAIL).unwrap()["steps"];
        assert_eq!(steps[2]["ok"], false);
        assert_eq!(steps[2]["provider_id"], "SM0001");
        assert_eq!(
            journey["messages"].as_array().unwrap().len(),
            1,
            "claimed receipts are not listed as messages: {journey:#}"
        );
        let (_, _, html) = client.text("/console?report=R-RECEIPT").await;
        assert!(html.contains("undelivered (30003)"), "{html}");

        receiver.answer(204, "suppressed");
        for (report, reason, kept) in [
            ("R-OPTED-OUT", "twilio 21610", Some("twilio 21610")),
            ("R-LONG", &"x".repeat(129) as &str, None),
            ("R-CONTROL", "smtp\t550", None),
        ] {
            receiver.headers(&[("x-labrelay-reason", reason)]);
            client.publish(report, "{}").await;
            let path = format!("/console/api/journey?report={report}");
            let journey = client
                .until("the suppression", &path, |j| {
                    has_state(j, EMAIL, "suppressed")
                })
                .await;
            let channel = journey_channel(&journey, EMAIL).unwrap();
            assert_eq!(channel["reason"].as_str(), kept, "{report}");
        }
        let recent = client.ok("/console/api/recent").await;
        assert!(recent.to_string().contains("twilio 21610"), "{recent:#}");
        let (_, _, html) = client.text("/console?report=R-OPTED-OUT").await;
        assert!(html.contains("(twilio 21610)"), "{html}");
    });
}
