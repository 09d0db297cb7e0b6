//! The lab's side: a steady stream of reports posted by concurrent
//! posters, and what each post was answered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{Semaphore, watch};

use super::API_KEY;

/// Report `i`'s id; its owner's phone number encodes `i` so that an SMS can
/// be traced back to its report.
pub fn report_id(i: usize) -> String {
    format!("FR-{i:05}")
}

/// A full report, as a lab posts it: one email and one SMS each.
pub fn report(i: usize) -> serde_json::Value {
    let (pet, species) = [("Max", "dog"), ("Luna", "cat"), ("Milo", "rabbit")][i % 3];
    json!({
        "id": report_id(i),
        "clinic": {"name": "Pet Theory Downtown", "phone": "+15551230000"},
        "pet": {"name": pet, "species": species},
        "owner": {
            "name": "Alex Kim",
            "email": format!("owner-{i}@example.com"),
            "phone": format!("+1555{i:07}"),
        },
        "tests": [
            {"name": "ALT", "value": 20 + i % 100, "unit": "U/L", "range": "10-100", "flag": "normal"},
            {"name": "Heartworm antigen", "value": "negative", "flag": "normal"},
        ],
        "issuedAt": "2026-11-24T10:00:00Z",
    })
}

/// What a stream of posts got back.
#[derive(Debug, Default, Clone)]
pub struct Posted {
    /// Ids answered 204.
    pub accepted: BTreeSet<String>,
    /// Every other answer: the status code, or why there was none
    /// ("refused": no connection; "no answer": the connection closed
    /// before an answer; "timeout").
    pub refused: BTreeMap<String, usize>,
    /// Ids answered otherwise.
    pub refused_ids: BTreeSet<String>,
    pub posted: usize,
    /// Every post: when it was sent, when it was answered, and how
    /// (as in `refused`, "204" for accepted).
    pub timeline: Vec<(Instant, Instant, String)>,
}

impl Posted {
    /// The posts that were sent before `at` and answered after it.
    pub fn in_flight_at(&self, at: Instant) -> Vec<&str> {
        self.timeline
            .iter()
            .filter(|(sent, answered, _)| *sent < at && *answered > at)
            .map(|(_, _, outcome)| outcome.as_str())
            .collect()
    }
}

/// What became of a post that got no HTTP answer.
fn no_answer(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "refused"
    } else if error.is_timeout() {
        "timeout"
    } else {
        "no answer"
    }
}

/// A steady stream of reports posted by a pool of concurrent posters.
pub struct Stream {
    answered: watch::Receiver<usize>,
    failed: watch::Receiver<usize>,
    in_flight: watch::Receiver<usize>,
    posted: Arc<Mutex<Posted>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream {
    /// Posts reports `0..n` to `url` at `rate` per second, at most
    /// `concurrency` at a time; each report is posted once.
    pub fn start(url: String, n: usize, rate: f64, concurrency: usize) -> Stream {
        let (answered_tx, answered) = watch::channel(0);
        let (failed_tx, failed) = watch::channel(0);
        let (in_flight_tx, in_flight) = watch::channel(0);
        let posted = Arc::new(Mutex::new(Posted::default()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let slots = Arc::new(Semaphore::new(concurrency));
        let record = posted.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut posts = tokio::task::JoinSet::new();
            for i in 0..n {
                ticks.tick().await;
                let slot = slots.clone().acquire_owned().await.unwrap();
                let (client, url, record) = (client.clone(), url.clone(), record.clone());
                let (answered_tx, failed_tx) = (answered_tx.clone(), failed_tx.clone());
                let in_flight_tx = in_flight_tx.clone();
                posts.spawn(async move {
                    let sent_at = Instant::now();
                    in_flight_tx.send_modify(|n| *n += 1);
                    let sent = client
                        .post(&url)
                        .bearer_auth(API_KEY)
                        .json(&report(i))
                        .send()
                        .await;
                    let answered_at = Instant::now();
                    in_flight_tx.send_modify(|n| *n -= 1);
                    drop(slot);
                    let outcome = match &sent {
                        Ok(response) => response.status().as_u16().to_string(),
                        Err(error) => no_answer(error).to_string(),
                    };
                    let mut record = record.lock().unwrap();
                    record.posted += 1;
                    record
                        .timeline
                        .push((sent_at, answered_at, outcome.clone()));
                    if outcome == "204" {
                        record.accepted.insert(report_id(i));
                        answered_tx.send_modify(|n| *n += 1);
                    } else {
                        *record.refused.entry(outcome).or_default() += 1;
                        record.refused_ids.insert(report_id(i));
                        failed_tx.send_modify(|n| *n += 1);
                    }
                });
            }
            while posts.join_next().await.is_some() {}
        });
        Stream {
            answered,
            failed,
            in_flight,
            posted,
            task,
        }
    }

    /// Waits until `n` reports were answered 204.
    pub async fn wait_answered(&self, n: usize, timeout: Duration) {
        let mut answered = self.answered.clone();
        tokio::time::timeout(timeout, answered.wait_for(|a| *a >= n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {n} reports answered 204 in time",
                    *self.answered.borrow()
                )
            })
            .unwrap();
    }

    /// Waits until `n` reports were answered otherwise (or not at all).
    pub async fn wait_refused(&self, n: usize, timeout: Duration) {
        let mut failed = self.failed.clone();
        tokio::time::timeout(timeout, failed.wait_for(|a| *a >= n))
            .await
            .unwrap_or_else(|_| panic!("{} of {n} reports refused in time", *self.failed.borrow()))
            .unwrap();
    }

    /// Waits until `n` posts are waiting for their answer at once.
    pub async fn wait_in_flight(&self, n: usize, timeout: Duration) {
        let mut in_flight = self.in_flight.clone();
        tokio::time::timeout(timeout, in_flight.wait_for(|a| *a >= n))
            .await
            .unwrap_or_else(|_| panic!("never {n} posts in flight at once"))
            .unwrap();
    }

    pub fn answered(&self) -> usize {
        *self.answered.borrow()
    }

    pub fn snapshot(&self) -> Posted {
        self.posted.lock().unwrap().clone()
    }

    /// Waits for the last post to be answered.
    pub async fn finish(self) -> Posted {
        self.task.await.unwrap();
        self.posted.lock().unwrap().clone()
    }
}
