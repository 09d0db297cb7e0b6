//! The push worker: one per subscription, POSTing each message to the
//! subscription's endpoint (through [`PushHttp`](super::http::PushHttp),
//! over HTTP/2 where the endpoint speaks it).
//!
//! A 102/200/201/202/204 answer acknowledges the message; any other status
//! (a redirect too: it is never followed), a refused connection or no
//! answer within the ack deadline is a nack, and the message is redelivered
//! according to the retry policy. How many pushes are outstanding at once
//! follows [`PushWindow`]'s slow start; without a retry policy, failures
//! also pause the whole subscription ([`PushBackoff`]) so that a dead
//! endpoint is not hammered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use labrelay_contract::push::{PushEnvelopeRef, PushMessageRef};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use tokio::task::JoinSet;

use super::{PushFailure, Pusher};
use crate::engine::Engine;
use crate::engine::hooks::{PushResult, PushTrace};
use crate::engine::subscription::{Delivery, Subscription};
use crate::retry::{PushBackoff, PushWindow, is_push_ack};
use crate::settings::{PushSettings, SubscriptionSettings};

/// Leases outlive the push request a little, so that a request answered right
/// at its timeout is not also expired by the timer.
const LEASE_GRACE: Duration = Duration::from_secs(5);

/// The outcome of one push request.
#[derive(Debug)]
enum Outcome {
    Status(u16),
    Failed(String),
}

/// The push worker of one subscription. Handles: messages becoming
/// deliverable, push requests completing, configuration changes (a pull
/// subscription just waits), and the end of a backoff pause. Stops when the
/// subscription is deleted or the broker shuts down; pushes still in flight
/// are abandoned and their leases expire into redeliveries.
pub(crate) async fn run(pusher: Arc<Pusher>, engine: Engine, sub: Arc<Subscription>) {
    let mut window = PushWindow::new(pusher.max_window);
    let mut backoff = PushBackoff::default();
    let mut paused_until: Option<tokio::time::Instant> = None;
    let mut in_flight: JoinSet<(Delivery, Outcome, PushTrace)> = JoinSet::new();
    // The endpoint parsed once per configuration rather than once per push.
    // A refused endpoint (unparsable, or outside the broker's allowlist)
    // carries the reason each attempt fails with.
    let mut endpoint: Option<(Arc<SubscriptionSettings>, Result<reqwest::Url, String>)> = None;
    loop {
        let changed = sub.changed.notified();
        let reconfigured = sub.reconfigured.notified();
        tokio::pin!(changed, reconfigured);
        changed.as_mut().enable();
        reconfigured.as_mut().enable();

        let settings = sub.settings();
        if paused_until.is_some_and(|t| t <= tokio::time::Instant::now()) {
            paused_until = None;
        }
        if let Some(push) = settings.push.as_ref().filter(|_| paused_until.is_none()) {
            let room = (window.size() as usize).saturating_sub(in_flight.len());
            if room > 0 {
                // Either this fills the window or it empties the backlog;
                // both leave nothing to do until an event below.
                let deliveries = sub.lease(
                    room,
                    None,
                    settings.ack_deadline + LEASE_GRACE,
                    Instant::now(),
                );
                if endpoint
                    .as_ref()
                    .is_none_or(|(parsed_for, _)| !Arc::ptr_eq(parsed_for, &settings))
                {
                    let url = match pusher.endpoints.refusal(&push.endpoint) {
                        None => reqwest::Url::parse(&push.endpoint)
                            .map_err(|e| format!("push endpoint is not a URL: {e}")),
                        Some(why) => {
                            tracing::warn!(subscription = %sub.name, why = ?why, "not pushing");
                            Err(why)
                        }
                    };
                    endpoint = Some((settings.clone(), url));
                }
                let url = match &endpoint {
                    Some((_, url)) => url.as_ref().map_err(String::as_str),
                    None => Err("no push endpoint"),
                };
                for delivery in deliveries {
                    let request = build_request(&pusher, &sub, push, url, &settings, &delivery);
                    let pusher = pusher.clone();
                    in_flight.spawn(async move {
                        let started = Instant::now();
                        let mut trace = PushTrace::default();
                        let outcome = match request {
                            Ok(request) => match pusher.http.send(request).await {
                                Ok(response) => {
                                    trace = trace_of(&response, started);
                                    Outcome::Status(response.status().as_u16())
                                }
                                Err(failure) => Outcome::Failed(failure.describe().into()),
                            },
                            Err(error) => Outcome::Failed(error),
                        };
                        if trace.latency.is_zero() {
                            trace = PushTrace {
                                latency: started.elapsed(),
                                ..PushTrace::default()
                            };
                        }
                        (delivery, outcome, trace)
                    });
                }
            }
        }

        tokio::select! {
            Some(done) = in_flight.join_next() => {
                // Settle everything that has finished, so that the acks of a
                // busy window go to the store as one command and the window
                // is refilled in one lease.
                let mut acked = Vec::new();
                let mut next = Some(done);
                while let Some(done) = next {
                    if let Ok((delivery, outcome, trace)) = done {
                        let result = match &outcome {
                            Outcome::Status(code) => PushResult::Status(*code),
                            Outcome::Failed(why) => PushResult::Failed(why),
                        };
                        engine.observer().pushed(&sub, &delivery, result, trace);
                        if let Some(seq) = settle(&engine, &sub, &settings, delivery, outcome, &mut window, &mut backoff, &mut paused_until).await {
                            acked.push(seq);
                        }
                    }
                    next = in_flight.try_join_next();
                }
                if !acked.is_empty() {
                    engine.persist_push_acks(&sub, acked).await;
                }
            }
            _ = &mut changed, if settings.push.is_some() && paused_until.is_none()
                && in_flight.len() < window.size() as usize => {}
            _ = &mut reconfigured => {}
            _ = async { tokio::time::sleep_until(paused_until.unwrap_or_else(tokio::time::Instant::now)).await },
                if paused_until.is_some() => {}
            _ = sub.closed.cancelled() => return,
            _ = engine.shutdown().cancelled() => return,
        }
    }
}

/// Books one finished push; returns the sequence number to record as
/// acknowledged when it was a success.
#[allow(clippy::too_many_arguments)]
async fn settle(
    engine: &Engine,
    sub: &Arc<Subscription>,
    settings: &SubscriptionSettings,
    delivery: Delivery,
    outcome: Outcome,
    window: &mut PushWindow,
    backoff: &mut PushBackoff,
    paused_until: &mut Option<tokio::time::Instant>,
) -> Option<u64> {
    if matches!(outcome, Outcome::Status(code) if is_push_ack(code)) {
        window.on_success();
        backoff.on_success();
        return sub.ack_lease(delivery.lease).then_some(delivery.lease.seq);
    }
    let reason = match &outcome {
        Outcome::Status(code) => format!("HTTP {code}"),
        Outcome::Failed(why) => why.clone(),
    };
    tracing::debug!(
        subscription = %sub.name,
        message_id = %delivery.message.pb.message_id,
        attempt = delivery.attempt,
        %reason,
        "push not acknowledged"
    );
    window.on_failure();
    if settings.retry.is_none() {
        *paused_until = Some(tokio::time::Instant::now() + backoff.on_failure());
    }
    let failures = sub.nack(&[delivery.lease], Instant::now());
    engine
        .settle_failures(sub, failures, &format!("push failed: {reason}"))
        .await;
    None
}

/// The push's latency, and what the receiver says it did
/// (`X-Labrelay-Outcome`) when that is a short token, with its reason and
/// the provider's id when those are short printable ASCII. Receivers write
/// only ids and codes there; a value that could be anything else (too
/// long, control characters, non-ASCII) is dropped rather than kept.
fn trace_of(response: &reqwest::Response, started: Instant) -> PushTrace {
    use labrelay_contract::headers;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let receiver_outcome = header(headers::OUTCOME)
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 32
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_ascii_lowercase);
    let text = |name: &str| {
        header(name)
            .filter(|v| headers::is_token_text(v))
            .map(str::to_string)
    };
    PushTrace {
        latency: started.elapsed(),
        receiver_outcome,
        receiver_reason: text(headers::REASON),
        provider_id: text(headers::PROVIDER_ID),
    }
}

fn describe(error: &reqwest::Error) -> String {
    PushFailure::from(error).describe().into()
}

fn build_request(
    pusher: &Pusher,
    sub: &Subscription,
    push: &PushSettings,
    url: Result<&reqwest::Url, &str>,
    settings: &SubscriptionSettings,
    delivery: &Delivery,
) -> Result<reqwest::Request, String> {
    let message = &delivery.message.pb;
    let publish_time = message
        .publish_time
        .map(|t| t.to_string())
        .unwrap_or_default();
    let url = url.map_err(str::to_string)?;
    let mut request = pusher.http.post(url.clone()).timeout(settings.ack_deadline);
    if let Some((email, audience)) = &push.oidc {
        let bearer = pusher
            .signer
            .authorization(email, audience)
            .map_err(|e| format!("could not sign a push token: {e:#}"))?;
        request = request.header(AUTHORIZATION, bearer);
    }
    let request = match push.no_wrapper {
        None => {
            let body = PushEnvelopeRef {
                message: PushMessageRef::new(
                    &message.data,
                    message
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                    &message.message_id,
                    &publish_time,
                    &message.ordering_key,
                ),
                subscription: sub.name.as_str(),
                delivery_attempt: settings.dead_letter.as_ref().map(|_| delivery.attempt),
            }
            .to_vec();
            request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body)
        }
        Some(write_metadata) => {
            let mut headers = reqwest::header::HeaderMap::new();
            if write_metadata {
                let metadata = [
                    ("x-goog-pubsub-subscription-name", sub.name.to_string()),
                    ("x-goog-pubsub-message-id", message.message_id.clone()),
                    ("x-goog-pubsub-publish-time", publish_time),
                    ("x-goog-pubsub-ordering-key", message.ordering_key.clone()),
                ];
                let attributes = message
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()));
                for (name, value) in metadata.into_iter().chain(attributes) {
                    // Attributes that are not valid header names or values
                    // cannot be carried, and those that would steer the
                    // request itself (its host, credentials, framing or
                    // type, or the metadata above) must not be; skipping
                    // them beats failing the push.
                    if let (Ok(name), Ok(value)) =
                        (HeaderName::try_from(name), HeaderValue::try_from(value))
                        && !value.is_empty()
                        && !headers.contains_key(&name)
                        && !is_reserved_header(&name)
                    {
                        headers.insert(name, value);
                    }
                }
            }
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
            }
            request.headers(headers).body(message.data.clone())
        }
    };
    request.build().map_err(|e| describe(&e))
}

/// Headers an attribute never sets on an unwrapped push: the request's
/// target, credentials, framing and body type, and the hop-by-hop headers
/// (RFC 9110 7.6.1).
fn is_reserved_header(name: &HeaderName) -> bool {
    const RESERVED: [&str; 14] = [
        "host",
        "authorization",
        "proxy-authorization",
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    ];
    RESERVED.contains(&name.as_str())
}
