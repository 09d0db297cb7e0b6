//! The push receivers' Prometheus metrics (email-service and sms-service
//! alike, told apart by the `channel` label), registered in the service's
//! own registry (served at `GET /metrics`), and the `X-Labrelay-Outcome`
//! header of every push answer.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `labrelay_push_requests_total` | `status` | every `POST /`, by the HTTP status answered (token refusals, overload and timeouts included) |
//! | `labrelay_notifications_total` | `channel`, `outcome` (`sent`, `skipped`, `duplicate`, `suppressed`, `failed_transient`, `failed_permanent`, `dead_lettered`) | every push that got past authentication |
//! | `labrelay_delivery_receipts_total` | `channel`, `status` (`delivered`, `undelivered`, `failed`) | final statuses the provider reported, each message counted once |
//! | `labrelay_suppression_changes_total` | `channel`, `change` (`added`, `lifted`) | recipients suppressed (an opt-out, a mailbox that does not exist) and lifted, by this service |
//! | `labrelay_notification_send_duration_seconds` | `channel` | histogram: one call to the provider (SMTP server, Twilio or an outbox), success or not |
//! | `labrelay_notification_delivery_latency_seconds` | `channel` | histogram: the message's `publishTime` to the notification sent |
//! | `labrelay_push_delivery_attempt` | | histogram: the envelope's `deliveryAttempt`, when the subscription sets it |

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use labrelay_contract::headers::outcome;

/// Says what became of a push, for the broker's console: `sent`,
/// `skipped` (nothing to send), `duplicate` (sent before) or `failed`.
pub(crate) const OUTCOME_HEADER: HeaderName =
    HeaderName::from_static(labrelay_contract::headers::OUTCOME);

/// What became of one push, as the metrics and the outcome header name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notification {
    Sent,
    Skipped,
    Duplicate,
    /// Not sent: the recipient is suppressed (204).
    Suppressed,
    /// The broker should redeliver (5xx).
    FailedTransient,
    /// It never can succeed (4xx); the broker dead-letters it eventually.
    FailedPermanent,
    /// It never can succeed, and the receiver parked it on the
    /// dead-letter topic (204).
    DeadLettered,
}

impl Notification {
    pub fn label(self) -> &'static str {
        match self {
            Notification::Sent => "sent",
            Notification::Skipped => "skipped",
            Notification::Duplicate => "duplicate",
            Notification::Suppressed => "suppressed",
            Notification::FailedTransient => "failed_transient",
            Notification::FailedPermanent => "failed_permanent",
            Notification::DeadLettered => "dead_lettered",
        }
    }

    /// The `X-Labrelay-Outcome` value.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Notification::Sent => outcome::SENT,
            Notification::Skipped => outcome::SKIPPED,
            Notification::Duplicate => outcome::DUPLICATE,
            Notification::Suppressed => outcome::SUPPRESSED,
            Notification::FailedTransient | Notification::FailedPermanent => outcome::FAILED,
            Notification::DeadLettered => outcome::DEAD_LETTERED,
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    channel: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiptLabels {
    channel: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SuppressionLabels {
    channel: &'static str,
    change: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: &'static str,
}

type Latencies = Family<ChannelLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(labrelay_runtime::metrics::latency_buckets())
}

/// Handles to the service's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// The `channel` label: `email` or `sms`.
    channel: &'static str,
    push_requests: Family<StatusLabels, Counter>,
    notifications: Family<NotificationLabels, Counter>,
    send_duration: Latencies,
    delivery_latency: Latencies,
    delivery_attempt: Histogram,
    receipts: Family<ReceiptLabels, Counter>,
    suppression_changes: Family<SuppressionLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics of the `channel` (`email`, `sms`) receiver and
    /// registers them in `registry`.
    pub fn register(registry: &mut Registry, channel: &'static str) -> Metrics {
        let metrics = Metrics {
            channel,
            push_requests: Family::default(),
            notifications: Family::default(),
            send_duration: Family::new_with_constructor(latency_histogram),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            delivery_attempt: Histogram::new([1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 50.0, 100.0]),
            receipts: Family::default(),
            suppression_changes: Family::default(),
        };
        registry.register(
            "labrelay_push_requests",
            "Push requests, by the HTTP status answered",
            metrics.push_requests.clone(),
        );
        registry.register(
            "labrelay_notifications",
            "Notifications by channel and outcome",
            metrics.notifications.clone(),
        );
        registry.register(
            "labrelay_notification_send_duration_seconds",
            "Time one provider call took (SMTP, Twilio or the outbox), success or not",
            metrics.send_duration.clone(),
        );
        registry.register(
            "labrelay_notification_delivery_latency_seconds",
            "Time from the message's publishTime to its notification being sent",
            metrics.delivery_latency.clone(),
        );
        registry.register(
            "labrelay_push_delivery_attempt",
            "The deliveryAttempt of push envelopes (set when the subscription has a dead-letter policy)",
            metrics.delivery_attempt.clone(),
        );
        registry.register(
            "labrelay_delivery_receipts",
            "Final statuses providers reported for sent notifications, each message once",
            metrics.receipts.clone(),
        );
        registry.register(
            "labrelay_suppression_changes",
            "Recipients suppressed (opted out, no such mailbox) and lifted",
            metrics.suppression_changes.clone(),
        );
        metrics
    }

    /// A provider reported `status` (`delivered`, ...) as a message's
    /// final one.
    pub fn final_status(&self, status: &'static str) {
        self.receipts
            .get_or_create(&ReceiptLabels {
                channel: self.channel,
                status,
            })
            .inc();
    }

    /// A recipient was suppressed (`added`) or lifted (`lifted`).
    pub fn suppression_changed(&self, change: &'static str) {
        self.suppression_changes
            .get_or_create(&SuppressionLabels {
                channel: self.channel,
                change,
            })
            .inc();
    }

    pub fn notification(&self, outcome: Notification) {
        self.notifications
            .get_or_create(&NotificationLabels {
                channel: self.channel,
                outcome: outcome.label(),
            })
            .inc();
    }

    pub fn send_took(&self, elapsed: Duration) {
        self.send_duration
            .get_or_create(&ChannelLabels {
                channel: self.channel,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A notification of the message published at `publish_time` went out
    /// now. A time that does not parse or lies in the future is not
    /// observed.
    pub fn delivered(&self, publish_time: &str) {
        if let Some(latency) = since(publish_time, SystemTime::now()) {
            self.delivery_latency
                .get_or_create(&ChannelLabels {
                    channel: self.channel,
                })
                .observe(latency.as_secs_f64());
        }
    }

    pub fn delivery_attempt(&self, attempt: Option<u32>) {
        if let Some(attempt) = attempt {
            self.delivery_attempt.observe(f64::from(attempt));
        }
    }
}

/// How long before `now` the RFC 3339 time `publish_time` was. It comes
/// from the network: anything odd is `None`.
fn since(publish_time: &str, now: SystemTime) -> Option<Duration> {
    if publish_time.len() > 64 {
        return None;
    }
    let published = prost_types::Timestamp::from_str(publish_time).ok()?;
    let published = SystemTime::try_from(published).ok()?;
    now.duration_since(published).ok()
}

/// Counts every answer to `POST /` by status and makes sure it carries
/// `X-Labrelay-Outcome` (answers the handler did not write, such as a
/// refused token or an overload, are `failed`). Put it outside every other
/// layer so it sees what the broker sees.
pub async fn count_pushes(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST || request.uri().path() != "/" {
        return next.run(request).await;
    }
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .entry(OUTCOME_HEADER)
        .or_insert(HeaderValue::from_static(outcome::FAILED));
    metrics
        .push_requests
        .get_or_create(&StatusLabels {
            status: response.status().as_u16(),
        })
        .inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_latency_comes_from_publish_time_and_tolerates_garbage() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let cases: &[(&str, Option<Duration>)] = &[
            ("2025-11-24T16:00:00Z", Some(Duration::from_secs(0))),
            ("2025-11-24T15:59:58.5Z", Some(Duration::from_millis(1500))),
            ("2025-11-24T17:59:58+02:00", Some(Duration::from_secs(2))),
            // In the future (clock skew): not observed.
            ("2025-11-24T16:00:01Z", None),
            ("", None),
            ("yesterday", None),
            ("2025-13-45T99:99:99Z", None),
            ("2025-11-24T16:00:00Zé", None),
            ("99999999-11-24T16:00:00Z", None),
        ];
        for (text, want) in cases {
            assert_eq!(since(text, now), *want, "{text:?}");
        }
        assert_eq!(since(&"9".repeat(10_000), now), None);
    }

    #[test]
    fn failures_share_one_header_value() {
        let values: Vec<_> = [
            Notification::Sent,
            Notification::Skipped,
            Notification::Duplicate,
            Notification::Suppressed,
            Notification::FailedTransient,
            Notification::FailedPermanent,
            Notification::DeadLettered,
        ]
        .map(|n| n.header_value())
        .into_iter()
        .collect();
        assert_eq!(
            values,
            [
                "sent",
                "skipped",
                "duplicate",
                "suppressed",
                "failed",
                "failed",
                "dead-lettered"
            ]
        );
    }
}
