//! Failed deliveries: a nack, an expired lease or a failed push is an
//! attempt; its count is persisted, and when it uses up the dead-letter
//! policy's attempts the message is forwarded to the dead-letter topic and
//! acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Engine;
use super::payloads::Message;
use super::subscription::{Failure, Subscription};
use crate::dead_letter;

/// How long a dead letter waits before forwarding is tried again when the
/// dead-letter topic is missing or the store refused it.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(10);

impl Engine {
    /// Persists failed attempts and forwards dead letters; `reason` says why
    /// the last delivery failed (kept on a dead letter).
    pub(crate) async fn settle_failures(
        &self,
        sub: &Arc<Subscription>,
        failures: Vec<Failure>,
        reason: &str,
    ) {
        let inner = &self.inner;
        for failure in failures {
            match failure.dead_letter {
                None => {
                    inner
                        .store
                        .record_attempts(sub.id, failure.seq, failure.attempts)
                        .await
                }
                Some(stored) => {
                    let Some(message) = inner.payloads.fetch(&stored).await else {
                        tracing::warn!(
                            subscription = %sub.name,
                            seq = stored.seq,
                            "could not read a message to dead-letter; will try again"
                        );
                        sub.unpark(stored.seq, DEAD_LETTER_RETRY, Instant::now());
                        continue;
                    };
                    self.forward_dead_letter(sub, &message, failure.attempts, reason)
                        .await
                }
            }
        }
    }

    /// Publishes a copy of `message` to the subscription's dead-letter topic,
    /// with Pub/Sub's `CloudPubSubDeadLetterSource*` attributes (and the reason
    /// the last delivery failed; [`dead_letter::forwarded`]), and
    /// acknowledges it on the subscription in the same commit: a crash
    /// leaves the copy and the ack both on disk or neither, so the message
    /// is dead-lettered once and not delivered again. The copy carries the
    /// final attempt count.
    ///
    /// A dead-letter topic without a subscription stores nothing, as in
    /// Pub/Sub: the message is then gone, which is logged as a loss and
    /// counted (`labrelay_broker_dead_letters_dropped_total`).
    async fn forward_dead_letter(
        &self,
        sub: &Arc<Subscription>,
        message: &Message,
        attempts: u32,
        reason: &str,
    ) {
        let Some(policy) = sub.settings().dead_letter.clone() else {
            sub.unpark(message.seq, Duration::ZERO, Instant::now());
            return;
        };
        let topic = policy.topic.as_str();
        let copy = dead_letter::forwarded(&message.pb, &sub.name, attempts, reason);
        let settles = Some((sub.clone(), message.seq));
        match self.publish_settling(topic, vec![copy], settles).await {
            Ok(published) => {
                let id = published.ids.first().map(String::as_str).unwrap_or("");
                let stored = published.stored_for.first().is_some_and(|n| *n > 0);
                if stored {
                    tracing::info!(
                        subscription = %sub.name,
                        message_id = %message.pb.message_id,
                        dead_letter_id = id,
                        attempts,
                        "message forwarded to the dead-letter topic"
                    );
                } else {
                    tracing::warn!(
                        subscription = %sub.name,
                        message_id = %message.pb.message_id,
                        dead_letter_topic = topic,
                        attempts,
                        "dead letter dropped: the dead-letter topic has no subscription, \
                         so the message is lost"
                    );
                }
                let observer = &self.inner.observer;
                let dead_letter_id = stored.then_some(id);
                observer.dead_lettered(sub, message, attempts, reason, topic, dead_letter_id);
            }
            Err(error) => {
                tracing::warn!(
                    subscription = %sub.name,
                    message_id = %message.pb.message_id,
                    %error,
                    "could not forward to the dead-letter topic; will try again"
                );
                // The message stays, with every attempt it used up.
                let store = &self.inner.store;
                store.record_attempts(sub.id, message.seq, attempts).await;
                sub.unpark(message.seq, DEAD_LETTER_RETRY, Instant::now());
            }
        }
    }
}
