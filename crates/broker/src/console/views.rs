//! What the console shows, computed from the engine and the observers:
//! the overview of topics and subscriptions, each journaled message with
//! the state of its channels, a report's journey, and the dead letters.
//!
//! A journey also shows what the provider said after the push: the
//! channel services publish each delivery receipt that moves a
//! notification forward to `RECEIPTS_TOPIC`
//! ([`labrelay_contract::receipt`]), journaled under the report's id like
//! the report itself. Each receipt becomes a step of the channel whose push
//! answered with the receipt's provider id (`X-Labrelay-Provider-Id`), after
//! the push's own "accepted by provider"; a receipt no push of the journey
//! claims stays a message of its own.

use std::collections::BTreeSet;
use std::time::SystemTime;

use labrelay_contract::headers::outcome;
use labrelay_contract::receipt::ReceiptAttributes;
use serde::Serialize;

use super::{Console, ConsoleError, Search};
use crate::dead_letter::{self, Source};
use crate::observe::journal::JournalMessage;
use crate::observe::stats::{self, StatsSnapshot, unix_millis};

/// Dead letters listed per dead-letter subscription.
const DEAD_LETTERS_SHOWN: usize = 200;

#[derive(Debug, Serialize)]
pub(super) struct Overview {
    pub(super) now_ms: i64,
    pub(super) show_data: bool,
    pub(super) journal_dropped: u64,
    pub(super) topics: Vec<TopicView>,
    pub(super) subscriptions: Vec<SubscriptionView>,
}

#[derive(Debug, Serialize)]
pub(super) struct TopicView {
    pub(super) name: String,
    pub(super) subscriptions: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct SubscriptionView {
    pub(super) name: String,
    pub(super) topic: String,
    /// `push` or `pull`.
    pub(super) kind: &'static str,
    pub(super) endpoint: Option<String>,
    pub(super) dead_letter_topic: Option<String>,
    /// Its dead-letter topic has no subscription: dead letters forwarded
    /// there are dropped ([`dead_letter::DROPPED`]).
    pub(super) drops_dead_letters: bool,
    /// A pull subscription of some subscription's dead-letter topic.
    pub(super) holds_dead_letters: bool,
    pub(super) backlog: usize,
    pub(super) in_flight: usize,
    pub(super) oldest_unacked_age_s: f64,
    #[serde(flatten)]
    pub(super) stats: StatsSnapshot,
}

pub(super) fn overview(console: &Console) -> Overview {
    let now = SystemTime::now();
    let subs = console.engine.all_subscriptions();
    let dead_letter_topics: BTreeSet<String> = subs
        .iter()
        .filter_map(|s| s.config().dead_letter_policy.map(|d| d.dead_letter_topic))
        .collect();
    let subscriptions = subs
        .iter()
        .map(|sub| {
            let config = sub.config();
            let counts = sub.counts();
            let endpoint = config
                .push_config
                .as_ref()
                .map(|p| p.push_endpoint.clone())
                .filter(|e| !e.is_empty());
            SubscriptionView {
                name: sub.name.to_string(),
                kind: if endpoint.is_some() { "push" } else { "pull" },
                holds_dead_letters: endpoint.is_none()
                    && dead_letter_topics.contains(&config.topic),
                endpoint,
                drops_dead_letters: console.engine.drops_dead_letters(&config),
                dead_letter_topic: config.dead_letter_policy.map(|d| d.dead_letter_topic),
                topic: config.topic,
                backlog: counts.backlog,
                in_flight: counts.in_flight,
                oldest_unacked_age_s: counts.oldest_age(now).as_secs_f64(),
                stats: stats::of(sub).snapshot(now),
            }
        })
        .collect();
    Overview {
        now_ms: unix_millis(now),
        show_data: console.observers.show_data,
        journal_dropped: console.observers.metrics.journal_dropped.get(),
        topics: console
            .engine
            .all_topics()
            .into_iter()
            .map(|(name, subscriptions)| TopicView {
                name,
                subscriptions,
            })
            .collect(),
        subscriptions,
    }
}

/// Where a message stands on one subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Channel {
    pub(super) subscription: String,
    /// `pending`, `retrying`, `delivered`, `skipped`, `duplicate`,
    /// `suppressed` (the recipient opted out or has no mailbox), `acked` (by a pull subscriber), `dead-lettered`, `parked` or
    /// `replayed`.
    pub(super) state: &'static str,
    pub(super) attempts: u32,
    pub(super) last_status: Option<u16>,
    pub(super) last_error: Option<String>,
    /// Why `suppressed` (`twilio 21610`, `smtp 550 5.1.1`), as the
    /// receiver said in `X-Labrelay-Reason`.
    pub(super) reason: Option<String>,
    /// What became of the notification after the push, oldest first:
    /// accepted by the provider, then its delivery receipts (journeys only).
    pub(super) steps: Vec<Step>,
}

/// One step of a notification after its push.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Step {
    /// `accepted` (the push answered `sent`), else the receipt's status:
    /// `queued`, `sending`, `sent`, `delivered`, `undelivered`, `failed`.
    pub(super) kind: String,
    /// What the console prints: `accepted by provider`, `delivered to
    /// handset`, `undelivered (30003)`.
    pub(super) label: String,
    pub(super) at_ms: i64,
    /// False for `undelivered` and `failed`.
    pub(super) ok: bool,
    pub(super) provider_id: String,
    pub(super) error_code: Option<String>,
}

impl Step {
    fn of_receipt(receipt: &ReceiptAttributes<'_>, at_ms: i64) -> Step {
        let code = receipt
            .error_code
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        let label = match receipt.status {
            "queued" => "queued by provider".to_string(),
            "sent" => "sent to carrier".to_string(),
            "delivered" if receipt.channel == "sms" => "delivered to handset".to_string(),
            "undelivered" | "failed" => format!("{}{code}", receipt.status),
            other => other.to_string(),
        };
        Step {
            kind: receipt.status.to_string(),
            label,
            at_ms,
            ok: !matches!(receipt.status, "undelivered" | "failed"),
            provider_id: receipt.sid.to_string(),
            error_code: receipt.error_code.map(str::to_string),
        }
    }
}

/// A journaled message with the state of each of its channels.
#[derive(Debug, Serialize)]
pub(super) struct MessageView {
    #[serde(flatten)]
    pub(super) message: JournalMessage,
    pub(super) channels: Vec<Channel>,
}

/// The state of each channel of `message`, from its events: the last
/// acknowledged push says delivered (or what the receiver's
/// `X-Labrelay-Outcome` says: skipped, duplicate, dead-lettered); failures alone say
/// retrying; dead-lettering and replay override both.
pub(crate) fn channels(message: &JournalMessage) -> Vec<Channel> {
    let mut names: Vec<&str> = message.subscriptions.iter().map(String::as_str).collect();
    for event in &message.events {
        if !names.contains(&event.subscription.as_str()) {
            names.push(&event.subscription);
        }
    }
    let parked = message
        .attributes
        .keys()
        .any(|k| dead_letter::is_source_attribute(k));
    names
        .into_iter()
        .map(|name| {
            let events: Vec<_> = message
                .events
                .iter()
                .filter(|e| e.subscription == name)
                .collect();
            let pushes: Vec<_> = events.iter().filter(|e| e.kind == "push").collect();
            let acked = pushes
                .iter()
                .rev()
                .find(|e| e.status.is_some_and(crate::retry::is_push_ack));
            let state = if events.iter().any(|e| e.kind == "replayed") {
                "replayed"
            } else if events.iter().any(|e| e.kind == "dead-lettered") {
                "dead-lettered"
            } else if let Some(acked) = acked {
                match acked.outcome.as_deref() {
                    Some("skipped") => "skipped",
                    Some("duplicate") => "duplicate",
                    Some("suppressed") => "suppressed",
                    // The receiver parked it on the dead-letter topic.
                    Some("dead-lettered") => "dead-lettered",
                    _ => "delivered",
                }
            } else if events.iter().any(|e| e.kind == "acked") {
                "acked"
            } else if !pushes.is_empty() {
                "retrying"
            } else if parked {
                "parked"
            } else {
                "pending"
            };
            let last = pushes.last();
            let accepted = acked
                .filter(|e| e.outcome.as_deref() == Some(outcome::SENT))
                .and_then(|e| {
                    Some(Step {
                        kind: "accepted".into(),
                        label: "accepted by provider".into(),
                        at_ms: e.at_ms,
                        ok: true,
                        provider_id: e.provider_id.clone()?,
                        error_code: None,
                    })
                });
            Channel {
                subscription: name.to_string(),
                state,
                attempts: pushes.len() as u32,
                last_status: last.and_then(|e| e.status),
                last_error: last.and_then(|e| e.error.clone()),
                reason: acked
                    .filter(|_| state == "suppressed")
                    .and_then(|e| e.reason.clone()),
                steps: accepted.into_iter().collect(),
            }
        })
        .collect()
}

pub(super) fn views(messages: Vec<JournalMessage>) -> Vec<MessageView> {
    messages
        .into_iter()
        .map(|message| MessageView {
            channels: channels(&message),
            message,
        })
        .collect()
}

/// The views of a report's messages, each delivery receipt
/// ([`ReceiptAttributes`]) turned into a step of the channel whose push
/// answered with its provider id (`sent`, or `duplicate` when the
/// notification had gone out before). The first such channel takes it;
/// receipts no channel claims are left as messages.
pub(super) fn journey_views(messages: Vec<JournalMessage>) -> Vec<MessageView> {
    let mut views = views(messages);
    let mut kept = Vec::with_capacity(views.len());
    let mut receipts = Vec::new();
    for view in views.drain(..) {
        let attributes = &view.message.attributes;
        if ReceiptAttributes::parse(|k| attributes.get(k).map(String::as_str)).is_some() {
            receipts.push(view);
        } else {
            kept.push(view);
        }
    }
    for receipt in receipts {
        let attributes = &receipt.message.attributes;
        let Some(parsed) = ReceiptAttributes::parse(|k| attributes.get(k).map(String::as_str))
        else {
            continue;
        };
        let claimed = kept.iter_mut().find_map(|view| {
            let events = &view.message.events;
            view.channels.iter_mut().find(|channel| {
                events.iter().any(|e| {
                    e.subscription == channel.subscription
                        && e.kind == "push"
                        && e.status.is_some_and(crate::retry::is_push_ack)
                        && matches!(
                            e.outcome.as_deref(),
                            Some(outcome::SENT | outcome::DUPLICATE)
                        )
                        && e.provider_id.as_deref() == Some(parsed.sid)
                })
            })
        });
        match claimed {
            Some(channel) => channel
                .steps
                .push(Step::of_receipt(&parsed, receipt.message.published_ms)),
            None => kept.push(receipt),
        }
    }
    kept
}

#[derive(Debug, Serialize)]
pub(super) struct Journey {
    pub(super) report: Option<String>,
    pub(super) message: Option<String>,
    pub(super) messages: Vec<MessageView>,
}

pub(super) async fn journey(console: &Console, search: &Search) -> Result<Journey, ConsoleError> {
    let observer = &console.observers;
    let show = observer.show_data;
    Ok(match search {
        Search::Report(report) => Journey {
            report: Some(report.0.clone()),
            message: None,
            messages: journey_views(observer.journal.by_report(report.0.clone(), show).await?),
        },
        Search::Message(id) => {
            // A message id leads to its whole report when it has one.
            let messages = match observer.journal.report_of(*id).await? {
                Some(report) => observer.journal.by_report(report, show).await?,
                None => observer.journal.by_message(*id, show).await?,
            };
            Journey {
                report: messages.first().and_then(|m| m.report_id.clone()),
                message: Some(id.to_string()),
                messages: journey_views(messages),
            }
        }
    })
}

#[derive(Debug, Serialize)]
pub(super) struct DeadLetterSubscription {
    pub(super) name: String,
    pub(super) total: usize,
    pub(super) messages: Vec<DeadLetter>,
}

#[derive(Debug, Serialize)]
pub(super) struct DeadLetter {
    pub(super) message_id: String,
    pub(super) report_id: Option<String>,
    pub(super) source_subscription: Option<String>,
    pub(super) delivery_attempts: Option<String>,
    pub(super) source_publish_time: Option<String>,
    pub(super) error: Option<String>,
    pub(super) dead_lettered_ms: i64,
}

pub(super) fn dead_letters(console: &Console) -> Vec<DeadLetterSubscription> {
    overview(console)
        .subscriptions
        .into_iter()
        .filter(|s| s.holds_dead_letters)
        .filter_map(|s| {
            let sub = console.engine.subscription(&s.name).ok()?;
            let messages = sub
                .peek(DEAD_LETTERS_SHOWN)
                .into_iter()
                .map(|(m, _)| {
                    let source = Source::of(&m.pb);
                    let owned = |value: Option<&str>| value.map(str::to_string);
                    DeadLetter {
                        message_id: m.pb.message_id.clone(),
                        report_id: m.pb.attributes.get("reportId").cloned(),
                        source_subscription: owned(source.subscription),
                        delivery_attempts: owned(source.delivery_count),
                        source_publish_time: owned(source.publish_time),
                        error: owned(source.error),
                        dead_lettered_ms: unix_millis(m.published_at),
                    }
                })
                .collect();
            Some(DeadLetterSubscription {
                name: s.name,
                total: s.backlog,
                messages,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::observe::journal::JournalEvent;

    fn event(sub: &str, kind: &str, status: Option<u16>, outcome: Option<&str>) -> JournalEvent {
        JournalEvent {
            subscription: sub.into(),
            kind: kind.into(),
            at_ms: 0,
            attempt: Some(1),
            status,
            error: status.filter(|s| *s >= 300).map(|s| format!("HTTP {s}")),
            latency_ms: Some(1.0),
            outcome: outcome.map(Into::into),
            related_id: None,
            reason: None,
            provider_id: None,
        }
    }

    fn message(events: Vec<JournalEvent>, attributes: &[&str]) -> JournalMessage {
        JournalMessage {
            message_id: "1".into(),
            topic: "t".into(),
            report_id: Some("12".into()),
            published_ms: 0,
            attributes: attributes
                .iter()
                .map(|k| (k.to_string(), "x".to_string()))
                .collect::<BTreeMap<_, _>>(),
            subscriptions: vec!["email".into(), "sms".into()],
            data: None,
            events,
        }
    }

    #[test]
    fn channel_states_follow_the_events() {
        let cases: Vec<(Vec<JournalEvent>, &[&str], [&str; 2])> = vec![
            (vec![], &[], ["pending", "pending"]),
            (
                vec![event("email", "push", Some(503), None)],
                &[],
                ["retrying", "pending"],
            ),
            (
                vec![
                    event("email", "push", Some(503), None),
                    event("email", "push", Some(204), Some("sent")),
                    event("sms", "push", Some(204), Some("skipped")),
                ],
                &[],
                ["delivered", "skipped"],
            ),
            (
                vec![
                    event("email", "push", Some(200), None),
                    event("sms", "push", Some(204), Some("duplicate")),
                ],
                &[],
                ["delivered", "duplicate"],
            ),
            (
                vec![
                    event("email", "push", Some(204), Some("suppressed")),
                    event("sms", "push", Some(204), Some("sent")),
                ],
                &[],
                ["suppressed", "delivered"],
            ),
            (
                vec![
                    event("email", "push", Some(550), None),
                    event("email", "dead-lettered", None, None),
                ],
                &[],
                ["dead-lettered", "pending"],
            ),
            (
                vec![
                    event("email", "push", Some(204), Some("dead-lettered")),
                    event("sms", "push", Some(204), Some("sent")),
                ],
                &[],
                ["dead-lettered", "delivered"],
            ),
            (
                vec![],
                &["CloudPubSubDeadLetterSourceSubscription"],
                ["parked", "parked"],
            ),
            (
                vec![event("sms", "acked", None, None)],
                &["CloudPubSubDeadLetterSourceSubscription"],
                ["parked", "acked"],
            ),
            (
                vec![event("email", "replayed", None, None)],
                &["CloudPubSubDeadLetterSourceSubscription"],
                ["replayed", "parked"],
            ),
        ];
        for (events, attributes, expected) in cases {
            let states: Vec<_> = channels(&message(events.clone(), attributes))
                .iter()
                .map(|c| c.state)
                .collect();
            assert_eq!(states, expected, "{events:?}");
        }
    }

    fn receipt(
        id: &str,
        sid: &str,
        status: &str,
        code: Option<&str>,
        at_ms: i64,
    ) -> JournalMessage {
        let attributes = ReceiptAttributes {
            report_id: "12",
            sid,
            status,
            error_code: code,
            channel: "sms",
        }
        .to_attributes()
        .into_iter()
        .collect();
        JournalMessage {
            message_id: id.into(),
            topic: "projects/p/topics/receipts".into(),
            report_id: Some("12".into()),
            published_ms: at_ms,
            attributes,
            subscriptions: Vec::new(),
            data: None,
            events: Vec::new(),
        }
    }

    fn sent(sub: &str, sid: &str, at_ms: i64) -> JournalEvent {
        JournalEvent {
            at_ms,
            provider_id: Some(sid.into()),
            ..event(sub, "push", Some(204), Some("sent"))
        }
    }

    fn steps(view: &MessageView, sub: &str) -> Vec<(String, String, i64, bool)> {
        let channel = view
            .channels
            .iter()
            .find(|c| c.subscription == sub)
            .unwrap();
        channel
            .steps
            .iter()
            .map(|s| (s.kind.clone(), s.label.clone(), s.at_ms, s.ok))
            .collect()
    }

    #[test]
    fn receipts_become_steps_of_the_channel_that_sent_them() {
        let report = message(
            vec![sent("email", "<m1@example>", 5), sent("sms", "SM1", 10)],
            &[],
        );
        let views = journey_views(vec![
            report,
            receipt("2", "SM1", "sent", None, 20),
            receipt("3", "SM1", "delivered", None, 30),
            // Another provider message, sent by no push of this journey.
            receipt("4", "SM9", "undelivered", Some("30003"), 40),
        ]);
        let ids: Vec<_> = views
            .iter()
            .map(|v| v.message.message_id.as_str())
            .collect();
        assert_eq!(ids, ["1", "4"], "claimed receipts are steps, not messages");
        let step = |kind: &str, label: &str, at: i64, ok: bool| (kind.into(), label.into(), at, ok);
        assert_eq!(
            steps(&views[0], "sms"),
            [
                step("accepted", "accepted by provider", 10, true),
                step("sent", "sent to carrier", 20, true),
                step("delivered", "delivered to handset", 30, true),
            ]
        );
        assert_eq!(
            steps(&views[0], "email"),
            [step("accepted", "accepted by provider", 5, true)]
        );

        let views = journey_views(vec![
            message(vec![sent("sms", "SM2", 10)], &[]),
            receipt("2", "SM2", "undelivered", Some("30003"), 20),
        ]);
        assert_eq!(
            steps(&views[0], "sms"),
            [
                step("accepted", "accepted by provider", 10, true),
                step("undelivered", "undelivered (30003)", 20, false),
            ]
        );
    }

    #[test]
    fn a_suppressed_channel_keeps_its_reason() {
        let suppressed = JournalEvent {
            reason: Some("twilio 21610".into()),
            ..event("sms", "push", Some(204), Some("suppressed"))
        };
        let channels = channels(&message(vec![suppressed], &[]));
        assert_eq!(channels[1].state, "suppressed");
        assert_eq!(channels[1].reason.as_deref(), Some("twilio 21610"));
        assert!(channels[1].steps.is_empty());
        assert_eq!(channels[0].reason, None);
    }
}
