//! The HTTP surface of a push receiver: `POST /` (one Pub/Sub push
//! envelope, behind the push-token check), `GET /healthz` and
//! `GET /metrics`; and the one push handler both channels run.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::{get, post};
use labrelay_contract::LabReport;
use labrelay_contract::push::PushEnvelope;
use labrelay_runtime::limits::{DEFAULT_MAX_IN_FLIGHT, Limits};
use prometheus_client::registry::Registry;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::channel::{Channel, Failure, NotSent};
use crate::dead_letter::{DeadLetters, PARK_TIMEOUT};
use crate::facts::Facts;
use crate::notify_log::{ClaimLimits, Dedupe, NotificationKey, SentRecord};
use crate::outcome::Outcome;
use crate::push_metrics::{self, Metrics};
use crate::settings::{PushAnswer, ReceiverSettings};

/// Push bodies up to this size are read: any message Pub/Sub or the broker
/// accepts (10 MB) once base64-encoded, in its envelope. The ingest's
/// limit (`MAX_BODY_BYTES`) is the operator's to raise, and a report it
/// accepted must not be refused here (413, and in the end a dead letter).
/// Memory stays bounded by the in-flight limit.
pub const MAX_PUSH_BODY: usize = 16 * 1024 * 1024;

/// What a push may take beyond waiting for its send: reading the body,
/// rendering.
const REQUEST_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// What the handlers share.
pub(crate) struct Receiver<C: Channel> {
    pub channel: C,
    /// The notification log, when `NOTIFY_LOG` is set.
    pub dedupe: Option<Dedupe>,
    /// Its suppressions and receipts, on this channel.
    pub facts: Option<Facts>,
    /// Where permanent failures are parked, when `DEAD_LETTER_TOPIC` is
    /// set.
    pub dead_letters: Option<DeadLetters>,
    /// How long a push waits for its notification before it is answered
    /// 503 while the work goes on ([`PushAnswer`]).
    pub answer_within: Duration,
    pub metrics: Arc<Metrics>,
}

/// The receiver's routes, with a metrics registry of their own, and what
/// their handlers share.
pub(crate) fn build<C: Channel>(
    channel: C,
    settings: &ReceiverSettings,
) -> anyhow::Result<(Router, Arc<Receiver<C>>)> {
    let limits = ClaimLimits::for_send_timeout(channel.answer_within());
    let dedupe =
        Dedupe::open_setting(&settings.notify_log, C::NOUN)?.map(|d| d.with_limits(limits));
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry, C::NAME));
    let facts = dedupe
        .as_ref()
        .map(|dedupe| facts_over(dedupe, settings, C::NAME, Arc::clone(&metrics)));
    let webhooks = channel.webhooks(facts.clone());
    let answer_within = match settings.push_answer {
        PushAnswer::Early => channel.answer_within(),
        // Claim, the channel's whole attempt and record at their limits,
        // and parking a permanent failure: everything the task does.
        PushAnswer::WhenDone => limits
            .task(channel.attempt_limit())
            .saturating_add(PARK_TIMEOUT),
    };
    // A push is answered within that, plus room to read it.
    let request_timeout = answer_within.saturating_add(REQUEST_TIMEOUT_MARGIN);
    let receiver = Arc::new(Receiver {
        channel,
        dedupe,
        facts,
        dead_letters: settings.dead_letters.clone().map(DeadLetters::new),
        answer_within,
        metrics: Arc::clone(&metrics),
    });
    let pushes = Router::new().route("/", post(push::<C>));
    let router = settings
        .push_auth
        .clone()
        .protect(pushes)
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BODY))
        .with_state(Arc::clone(&receiver))
        // Outside the push-token check: a provider signs its own calls.
        .merge(webhooks);
    let router = Limits {
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        request_timeout,
    }
    .apply(router)
    .layer(axum::middleware::from_fn_with_state(
        metrics,
        push_metrics::count_pushes,
    ))
    // Read-only and free of personal data: no push token needed. Its own
    // route, so the token check on `POST /` is untouched.
    .merge(labrelay_runtime::metrics::router(Arc::new(registry)));
    let router = labrelay_runtime::trace::apply(router, settings.trace_project.as_deref());
    Ok((router, receiver))
}

/// `channel`'s suppressions and receipts in the notification log of
/// `dedupe`, hashed with `SUPPRESSION_KEY` (an empty key, with a warning,
/// when it is not set).
pub(crate) fn facts_over(
    dedupe: &Dedupe,
    settings: &ReceiverSettings,
    channel: &'static str,
    metrics: Arc<Metrics>,
) -> Facts {
    let key = settings.suppression_key.as_ref().map_or_else(
        || {
            tracing::warn!(
                "SUPPRESSION_KEY is not set: suppressed recipients are stored under an unkeyed hash, \
                 which whoever reads the notification log can test guessed numbers and addresses against"
            );
            &[][..]
        },
        |key| key.expose().as_bytes(),
    );
    Facts::new(
        dedupe.log(),
        key,
        channel,
        metrics,
        settings.receipts.clone(),
    )
}

/// A channel's provider webhooks alone, with `GET /healthz`: no push
/// endpoint, so no push-token check. Fails without a notification log,
/// where everything the webhooks learn is kept.
pub(crate) fn build_webhooks(
    channel: &'static str,
    settings: &ReceiverSettings,
    webhooks: impl FnOnce(Facts) -> Router,
) -> anyhow::Result<Router> {
    let dedupe = Dedupe::open_setting(&settings.notify_log, "notification")?.ok_or_else(|| {
        anyhow::anyhow!(
            "NOTIFY_LOG is required: receipts and opt-outs are kept in the notification log"
        )
    })?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry, channel));
    let router =
        webhooks(facts_over(&dedupe, settings, channel, metrics)).route("/healthz", get(healthz));
    let router = Limits {
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        request_timeout: WEBHOOK_TIMEOUT,
    }
    .apply(router);
    Ok(labrelay_runtime::trace::apply(
        router,
        settings.trace_project.as_deref(),
    ))
}

/// How long a provider's call may take: recording it and publishing its
/// receipt ([`RECEIPT_PUBLISH_LIMIT`](crate::facts::RECEIPT_PUBLISH_LIMIT)),
/// within Twilio's 15 s.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(14);

async fn healthz() -> &'static str {
    "ok"
}

/// `POST /`: parse the envelope, open the push's span, then deliver on a
/// task of its own and answer with what became of it, or with 503 once
/// the channel's answer time has passed.
async fn push<C: Channel>(State(receiver): State<Arc<Receiver<C>>>, body: Bytes) -> Response {
    // ERROR level so that no level filter drops the span and with it the
    // ids on the lines logged inside; a span never prints by itself. Text
    // from the push (ids, the reportId attribute) is recorded as string
    // values, which the log formats escape: whoever can push or publish
    // chooses it, and with `%` a newline in it would start a forged line
    // of the text log.
    let span = tracing::error_span!(
        "push",
        report_id = Empty,
        message_id = Empty,
        delivery_attempt = Empty,
    );
    let envelope = match PushEnvelope::parse(&body) {
        Ok(envelope) => envelope,
        Err(error) => {
            return span.in_scope(|| {
                tracing::debug!(error = error.to_string(), "unreadable push body");
                receiver.conclude(Outcome::Malformed(error), None)
            });
        }
    };
    span.record("message_id", envelope.message.message_id.as_str());
    if let Some(attempt) = envelope.delivery_attempt {
        span.record("delivery_attempt", attempt);
    }
    receiver.metrics.delivery_attempt(envelope.delivery_attempt);
    let report = match envelope.report() {
        Ok(report) => report,
        Err(error) => {
            // The publisher's attribute is the best name the logs can give it.
            if let Some(id) = envelope.message.attributes.get("reportId") {
                span.record("report_id", id.as_str());
            }
            span.in_scope(|| {
                tracing::debug!(error = error.to_string(), "the push carries no lab report");
            });
            let outcome = receiver
                .park_if_permanent(&envelope, Outcome::Malformed(error))
                .instrument(span.clone())
                .await;
            return span.in_scope(|| receiver.conclude(outcome, None));
        }
    };
    span.record("report_id", report.id.to_string().as_str());

    // On a task of its own: when the broker stops waiting (its ack
    // deadline passed, or it died) hyper drops this handler, and a claim →
    // send → record cut in the middle would send the notification again on
    // redelivery (or leave a pooled connection mid-transaction). Only the
    // wait is cancelled; the redelivery, waiting on the key's lock, finds
    // the record.
    let answer_within = receiver.answer_within;
    let on_task = Arc::clone(&receiver);
    let handling = tokio::spawn(
        async move {
            let outcome = on_task.deliver(&envelope, &report).await;
            let outcome = on_task.park_if_permanent(&envelope, outcome).await;
            on_task.conclude(outcome, Some(&envelope.message.publish_time))
        }
        .instrument(span.clone()),
    );
    // The broker gets its answer within the channel's answer time; a send
    // still going on then goes on (to `Channel::attempt_limit`) and is
    // recorded or released when it ends. Until then its redelivery waits
    // on the key's lock, or, on another instance, finds the claim renewed.
    match tokio::time::timeout(answer_within, handling).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => span.in_scope(|| {
            receiver.conclude(Outcome::Internal("the push handler's task failed"), None)
        }),
        Err(_) => span.in_scope(|| {
            // Counted when the task ends, as what became of the
            // notification.
            let outcome = Outcome::InProgress(answer_within);
            outcome.log(C::NOUN);
            outcome.answer(C::NOUN)
        }),
    }
}

impl<C: Channel> Receiver<C> {
    /// Logs what became of a push, counts it and makes the broker's
    /// answer.
    fn conclude(&self, outcome: Outcome, publish_time: Option<&str>) -> Response {
        outcome.log(C::NOUN);
        self.metrics.notification(outcome.notification());
        if let (Outcome::Sent(_), Some(publish_time)) = (&outcome, publish_time) {
            self.metrics.delivered(publish_time);
        }
        outcome.answer(C::NOUN)
    }

    /// Renders the report's notification and sends it, at most once per
    /// notification with the notification log: its key's lock and claim
    /// are held across the lookup, the send and the record.
    async fn deliver(&self, envelope: &PushEnvelope, report: &LabReport) -> Outcome {
        let message = match self.channel.render(report, &envelope.message.message_id) {
            Ok(message) => message,
            Err(NotSent::Skipped(reason)) => return Outcome::Skipped(reason),
            Err(NotSent::Failed(failure)) => return Outcome::Failed(failure),
            Err(NotSent::Internal) => {
                return Outcome::Internal("rendering the notification failed");
            }
        };
        let recipient = self.channel.recipient(&message);
        if let Some(facts) = &self.facts {
            // Before any provider call: an opt-out is answered, not retried.
            match facts.suppression(recipient).await {
                Ok(Some(suppression)) => return Outcome::Suppressed(suppression.reason),
                Ok(None) => {}
                Err(error) => return Outcome::LogUnavailable(error),
            }
        }
        let Some(dedupe) = &self.dedupe else {
            return self
                .suppress_if_told(self.send(&message).await, recipient)
                .await;
        };
        let key = NotificationKey {
            report_id: report.id.to_string(),
            channel: C::NAME,
            content_hash: crate::notify_log::notification_hash(report, recipient),
        };
        // Held across lookup, send and record: a concurrent delivery of the
        // same notification waits here and then finds the record.
        let _guard = dedupe.lock(&key).await;
        match dedupe.already_sent(&key).await {
            Ok(Some(record)) => return Outcome::Duplicate(record.provider_id),
            Ok(None) => {}
            Err(error) => return Outcome::LogUnavailable(error),
        }
        // Cut off at the channel's attempt limit, past which the channel
        // has decided (sent, not sent, or unknown) whatever the provider
        // does; the claim is renewed until then.
        let attempt = self.channel.attempt_limit();
        let outcome = match tokio::time::timeout(attempt, self.send(&message)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Failed(
                Failure::transient(
                    "timeout",
                    format!("the {} could not be sent now; retry later", C::NOUN),
                    format!("the attempt did not end within {attempt:?} and was cut off"),
                )
                .maybe_sent(),
            ),
        };
        match &outcome {
            Outcome::Sent(id) => {
                if let Err(error) = dedupe.record_sent(&key, SentRecord::now(id.clone())).await {
                    // It went out: acknowledge it; a redelivery would send it again.
                    tracing::error!(error = ?error, sent_id = id.as_deref(), "recording the sent notification failed");
                }
            }
            Outcome::Failed(failure) if failure.maybe_sent => {
                // Released, the claim would let every redelivery queued
                // behind this one send again.
                dedupe.keep_claim(&key).await;
                tracing::warn!(
                    "the provider may have taken the {} after all; its claim is kept until its lease lapses, so no delivery sends it before then",
                    C::NOUN
                );
            }
            // Not sent: the claim is released when the guard drops.
            _ => {}
        }
        self.suppress_if_told(outcome, recipient).await
    }

    /// A send the provider refused because the recipient opted out (or
    /// has no mailbox) suppresses the recipient and is answered
    /// `suppressed`. If the suppression cannot be recorded the push is
    /// retried: the provider refuses it again, and it is recorded then.
    async fn suppress_if_told(&self, outcome: Outcome, recipient: &str) -> Outcome {
        let Outcome::Failed(Failure {
            suppress: Some(reason),
            ..
        }) = &outcome
        else {
            return outcome;
        };
        if let Some(facts) = &self.facts
            && let Err(error) = facts.suppress(recipient, reason).await
        {
            return Outcome::LogUnavailable(
                error.context(format!("recording the suppression ({reason})")),
            );
        }
        Outcome::Suppressed(reason.to_string())
    }

    /// Parks a permanent failure on the dead-letter topic, when one is
    /// set, so the broker acknowledges it instead of retrying it for the
    /// hours its dead-letter policy allows an outage.
    async fn park_if_permanent(&self, envelope: &PushEnvelope, outcome: Outcome) -> Outcome {
        let Some(dead_letters) = &self.dead_letters else {
            return outcome;
        };
        if !outcome.is_permanent_failure() {
            return outcome;
        }
        // As the broker words a failed push, naming who refused it and why.
        let reason = format!(
            "push failed: HTTP {} ({}: {})",
            outcome.status().as_u16(),
            C::SERVICE,
            outcome.label()
        );
        match dead_letters.park(envelope, &reason).await {
            Ok(dead_letter_id) => Outcome::Parked {
                dead_letter_id,
                cause: Box::new(outcome),
            },
            Err(error) => Outcome::ParkFailed {
                error,
                cause: Box::new(outcome),
            },
        }
    }

    async fn send(&self, message: &C::Message) -> Outcome {
        let started = std::time::Instant::now();
        let sent = self.channel.send(message).await;
        self.metrics.send_took(started.elapsed());
        match sent {
            Ok(id) => Outcome::Sent(id),
            Err(failure) => Outcome::Failed(failure),
        }
    }
}
