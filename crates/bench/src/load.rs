//! The load: lab reports POSTed to a lab-report-service, either as fast as
//! `concurrency` connections allow or at a fixed rate, for a number of
//! reports or a duration. Every POST's outcome goes to a channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

/// How much load, and how it arrives.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Stop after this many reports (with `duration`, whichever comes first).
    pub reports: Option<usize>,
    /// Stop issuing reports after this long.
    pub duration: Option<Duration>,
    /// Reports per second; `None`: as fast as `concurrency` allows.
    pub rate: Option<f64>,
    /// Requests in flight at most.
    pub concurrency: usize,
}

impl Plan {
    pub fn describe(&self) -> String {
        let amount = match (self.reports, self.duration) {
            (Some(n), None) => format!("{n} reports"),
            (None, Some(d)) => format!("{} s", d.as_secs_f64()),
            (Some(n), Some(d)) => format!("{n} reports or {} s", d.as_secs_f64()),
            (None, None) => "nothing".into(),
        };
        match self.rate {
            Some(rate) => format!(
                "{amount} at a fixed {rate} reports/s (at most {} in flight)",
                self.concurrency
            ),
            None => format!("{amount} at max concurrency {}", self.concurrency),
        }
    }
}

/// One POST: report `index`, when it was due to start (the send time, or
/// the scheduled time under a fixed rate, so a slow server cannot hide
/// latency by slowing the load), when its answer came, and the answer.
#[derive(Debug)]
pub struct Posted {
    pub index: usize,
    pub start: Instant,
    pub end: Instant,
    pub outcome: Result<u16, String>,
}

/// Where reports go and what they say.
#[derive(Clone)]
pub struct Target {
    pub client: reqwest::Client,
    pub url: String,
    pub api_key: Option<String>,
    /// Report ids are `{prefix}{index}`.
    pub prefix: String,
}

impl Target {
    pub fn new(
        url: String,
        api_key: Option<String>,
        prefix: String,
        concurrency: usize,
    ) -> anyhow::Result<Target> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(concurrency)
            .build()
            .context("building the HTTP client")?;
        Ok(Target {
            client,
            url,
            api_key,
            prefix,
        })
    }

    pub fn report_id(&self, index: usize) -> String {
        format!("{}{index}", self.prefix)
    }

    /// POSTs report `index`; the HTTP status, or why there was none.
    pub async fn post(&self, index: usize) -> Result<u16, String> {
        let body = serde_json::to_vec(&labrelay::post::sample_report(&self.report_id(index)))
            .map_err(|e| e.to_string())?;
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the body so the connection goes back to the pool.
                let _ = response.bytes().await;
                Ok(status)
            }
            Err(error) => Err(error.to_string()),
        }
    }
}

/// Runs the plan; returns how many reports were issued. `stop` ends it early.
pub async fn drive(
    target: Target,
    plan: Plan,
    results: UnboundedSender<Posted>,
    stop: Arc<AtomicBool>,
) -> usize {
    let started = Instant::now();
    let deadline = plan.duration.map(|d| started + d);
    let limit = plan.reports.unwrap_or(usize::MAX);
    let more = move |index: usize, now: Instant| {
        index < limit && deadline.is_none_or(|d| now < d) && !stop.load(Ordering::Relaxed)
    };
    match plan.rate {
        None => {
            let next = Arc::new(AtomicUsize::new(0));
            let issued = Arc::new(AtomicUsize::new(0));
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..plan.concurrency.max(1) {
                let (target, results, next, issued, more) = (
                    target.clone(),
                    results.clone(),
                    next.clone(),
                    issued.clone(),
                    more.clone(),
                );
                workers.spawn(async move {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let start = Instant::now();
                        if !more(index, start) {
                            return;
                        }
                        issued.fetch_add(1, Ordering::Relaxed);
                        let outcome = target.post(index).await;
                        let end = Instant::now();
                        let _ = results.send(Posted {
                            index,
                            start,
                            end,
                            outcome,
                        });
                    }
                });
            }
            while workers.join_next().await.is_some() {}
            issued.load(Ordering::Relaxed)
        }
        Some(rate) => {
            let in_flight = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
            let period = Duration::from_secs_f64(1.0 / rate);
            // rate × duration reports exactly, whatever the rounding of `due`.
            let scheduled = plan
                .duration
                .map_or(usize::MAX, |d| (d.as_secs_f64() * rate).round() as usize);
            let mut tasks = tokio::task::JoinSet::new();
            let mut index = 0;
            loop {
                let due = started + period.mul_f64(index as f64);
                tokio::time::sleep_until(due).await;
                if index >= scheduled || !more(index, due) {
                    break;
                }
                let permit = in_flight.clone().acquire_owned().await;
                let (target, results) = (target.clone(), results.clone());
                tasks.spawn(async move {
                    let _permit = permit;
                    let outcome = target.post(index).await;
                    let end = Instant::now();
                    let _ = results.send(Posted {
                        index,
                        start: due,
                        end,
                        outcome,
                    });
                });
                // Reap finished tasks so a long run does not keep them all.
                while tasks.try_join_next().is_some() {}
                index += 1;
            }
            while tasks.join_next().await.is_some() {}
            index
        }
    }
}
