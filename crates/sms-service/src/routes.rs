//! The HTTP surface: `POST /` for push deliveries, `GET /healthz`,
//! `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use labrelay_contract::LabReport;
use labrelay_contract::push::PushEnvelope;
use labrelay_receiver::notify_log::{Dedupe, NotificationKey, SentRecord, content_hash};
use prometheus_client::registry::Registry;
use tracing::Instrument as _;

use crate::metrics::{Metrics, OUTCOME_HEADER};
use crate::notice;
use crate::outcome::{Outcome, PushInfo};
use crate::phone::PhoneNumber;
use crate::settings::countries::AllowedCountries;
use crate::settings::{Channel, Settings};
use crate::transport::{Sms, Transport};

/// Push bodies up to this size are read: a 1 MiB report, base64-encoded,
/// in its envelope.
const MAX_PUSH_BYTES: usize = 2 * 1024 * 1024;

/// What the handlers share.
pub(crate) struct Service {
    pub transport: Transport,
    /// The notification log, when `NOTIFY_LOG` is set.
    pub dedupe: Option<Dedupe>,
}

/// The handlers' state.
struct Shared {
    service: Service,
    metrics: Arc<Metrics>,
    /// How long a push waits for its SMS before the broker is answered.
    answer_within: Duration,
    /// Where SMS may go (`SMS_ALLOWED_COUNTRIES`).
    allowed_countries: AllowedCountries,
}

/// The service's routes, with a metrics registry of their own.
pub(crate) fn router(service: Service, settings: &Settings) -> Router {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry, "sms"));
    if let Channel::Twilio(_) = settings.channel {
        settings.allowed_countries.log_at_start();
    }
    let pushes = Router::new().route("/", post(push));
    let router = settings
        .push_auth
        .clone()
        .protect(pushes)
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_PUSH_BYTES))
        .with_state(Arc::new(Shared {
            service,
            metrics: Arc::clone(&metrics),
            answer_within: crate::answer_within(&settings.channel),
            allowed_countries: settings.allowed_countries.clone(),
        }));
    let router = crate::limits(&settings.channel)
        .apply(router)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::count_pushes,
        ))
        // Read-only and free of personal data: no push token needed. Its
        // own route, so the token check on `POST /` is untouched.
        .merge(labrelay_contract::metrics::router(Arc::new(registry)));
    labrelay_runtime::trace::apply(router, settings.trace_project.as_deref())
}

async fn healthz() -> &'static str {
    "ok"
}

async fn push(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut info = PushInfo::default();
    let outcome = match PushEnvelope::parse(&body) {
        Err(error) => Outcome::Malformed(error),
        Ok(envelope) => {
            info.message_id = Some(envelope.message.message_id.clone());
            info.delivery_attempt = envelope.delivery_attempt;
            shared.metrics.delivery_attempt(envelope.delivery_attempt);
            match envelope.report() {
                Err(error) => Outcome::Malformed(error),
                Ok(report) => {
                    info.report_id = Some(report.id.to_string());
                    return handle(&shared, envelope, report, info).await;
                }
            }
        }
    };
    conclude(&shared.metrics, &outcome, &info, None);
    answer(outcome)
}

/// Delivers the SMS of a decoded push on a task of its own, which logs and
/// counts its outcome, and answers the broker with it, or with 503 when it
/// takes longer than the Twilio timeout.
async fn handle(
    shared: &Arc<Shared>,
    envelope: PushEnvelope,
    report: LabReport,
    info: PushInfo,
) -> Response {
    // ERROR level so that no level filter drops the span and the ids on
    // the lines logged inside; a span never prints by itself. The ids are
    // string values, which the log formats escape: whoever can push or
    // publish chooses them, and with `%` a newline in one would start a
    // forged line of the text log.
    let span = tracing::error_span!(
        "push",
        report_id = info.report_id.as_deref(),
        message_id = envelope.message.message_id.as_str(),
    );
    // On a task of its own: when the broker stops waiting (its ack
    // deadline passed, or it died) hyper drops this handler, and a claim →
    // send → record cut in the middle would send the SMS again on
    // redelivery. Only the wait is cancelled; the redelivery, waiting on
    // the key's lock, finds the record.
    let (on_task, task_info) = (Arc::clone(shared), info.clone());
    let handling = tokio::spawn(
        async move {
            let outcome = deliver(
                &on_task.service,
                &on_task.metrics,
                &on_task.allowed_countries,
                &envelope,
                &report,
            )
            .await;
            let publish_time = envelope.message.publish_time.as_str();
            conclude(&on_task.metrics, &outcome, &task_info, Some(publish_time));
            outcome
        }
        .instrument(span),
    );
    // A Twilio request still going on at the timeout goes on (see
    // `notify_log::attempt_limit`) and is recorded or released when it ends;
    // until then the redelivery waits on the key's lock.
    match tokio::time::timeout(shared.answer_within, handling).await {
        Ok(Ok(outcome)) => answer(outcome),
        Ok(Err(_)) => {
            let outcome = Outcome::Internal;
            conclude(&shared.metrics, &outcome, &info, None);
            answer(outcome)
        }
        Err(_) => {
            // Counted when the task ends, as what became of the SMS.
            let outcome = Outcome::InProgress(shared.answer_within);
            outcome.log(&info);
            answer(outcome)
        }
    }
}

/// Logs what became of a push and counts it.
fn conclude(metrics: &Metrics, outcome: &Outcome, info: &PushInfo, publish_time: Option<&str>) {
    outcome.log(info);
    metrics.notification(outcome.notification());
    if let (Outcome::Sent(_), Some(publish_time)) = (outcome, publish_time) {
        metrics.delivered(publish_time);
    }
}

/// The broker's answer, with the `X-Labrelay-Outcome` header.
fn answer(outcome: Outcome) -> Response {
    let notification = outcome.notification();
    let mut response = outcome.into_response();
    response
        .headers_mut()
        .insert(OUTCOME_HEADER, notification.header_value());
    response
}

async fn deliver(
    service: &Service,
    metrics: &Metrics,
    allowed_countries: &AllowedCountries,
    envelope: &PushEnvelope,
    report: &LabReport,
) -> Outcome {
    let Some(raw) = report
        .owner
        .phone
        .as_deref()
        .filter(|p| !p.trim().is_empty())
    else {
        return Outcome::Skipped("the report has no owner.phone");
    };
    let to = match PhoneNumber::parse(raw) {
        Ok(to) => to,
        Err(error) => return Outcome::InvalidNumber(error),
    };
    // Acknowledged, not retried: another attempt would be refused the same
    // way, and the owner may still get the email.
    if let Err(calling_code) = allowed_countries.check(&to) {
        tracing::warn!(
            %calling_code,
            "not sending: the owner's phone number is in a country SMS_ALLOWED_COUNTRIES does not allow"
        );
        return Outcome::Skipped("the owner's phone number is outside SMS_ALLOWED_COUNTRIES");
    }
    let body = notice::compose(report);
    let sms = Sms {
        report_id: &report.id,
        message_id: &envelope.message.message_id,
        to: &to,
        body: &body,
    };
    let Some(dedupe) = &service.dedupe else {
        return send(&service.transport, metrics, &sms).await;
    };
    let key = NotificationKey {
        report_id: report.id.to_string(),
        channel: "sms",
        content_hash: content_hash(&["labrelay-sms/1", &report.id.to_string(), to.as_str(), &body]),
    };
    // Held across lookup, send and record: a concurrent delivery of the
    // same SMS waits here and then finds the record.
    let _guard = dedupe.lock(&key).await;
    match dedupe.already_sent(&key).await {
        Ok(Some(record)) => return Outcome::Duplicate(record.provider_id),
        Ok(None) => {}
        Err(error) => return Outcome::LogUnavailable(error),
    }
    let outcome = send(&service.transport, metrics, &sms).await;
    if let Outcome::Sent(id) = &outcome
        && let Err(error) = dedupe.record_sent(&key, SentRecord::now(id.clone())).await
    {
        // The SMS went out: acknowledge it; a redelivery would send it again.
        tracing::error!(error = ?error, sent_id = id.as_deref(), "recording the sent SMS failed");
    }
    outcome
}

async fn send(transport: &Transport, metrics: &Metrics, sms: &Sms<'_>) -> Outcome {
    let started = std::time::Instant::now();
    let sent = transport.send(sms).await;
    metrics.send_took(started.elapsed());
    match sent {
        Ok(id) => Outcome::Sent(id),
        Err(error) => Outcome::Failed(error),
    }
}
