//! What the console shows, computed from the engine and the observers:
//! the overview of topics and subscriptions, each journaled message with
//! the state of its channels, a report's journey, and the dead letters.

use std::collections::BTreeSet;
use std::time::SystemTime;

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
            Channel {
                subscription: name.to_string(),
                state,
                attempts: pushes.len() as u32,
                last_status: last.and_then(|e| e.status),
                last_error: last.and_then(|e| e.error.clone()),
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
            messages: views(observer.journal.by_report(report.0.clone(), show).await?),
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
                messages: views(messages),
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
}
