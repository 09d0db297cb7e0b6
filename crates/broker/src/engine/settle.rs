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
    /// the last delivery failed; [`dead_letter::forwarded`]), then
    /// acknowledges it on the subscription.
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
        let copy = dead_letter::forwarded(&message.pb, &sub.name, attempts, reason);
        match self.publish(policy.topic.as_str(), vec![copy]).await {
            Ok(ids) => {
                tracing::info!(
                    subscription = %sub.name,
                    message_id = %message.pb.message_id,
                    dead_letter_id = ids.first().map(String::as_str).unwrap_or(""),
                    attempts,
                    "message forwarded to the dead-letter topic"
                );
                sub.remove_parked(message.seq);
                self.inner.store.ack_later(sub.id, vec![message.seq]).await;
                let dead_letter_id = ids.first().map(String::as_str).unwrap_or("");
                let observer = &self.inner.observer;
                observer.dead_lettered(sub, message, attempts, reason, dead_letter_id);
            }
            Err(error) => {
                tracing::warn!(
                    subscription = %sub.name,
                    message_id = %message.pb.message_id,
                    %error,
                    "could not forward to the dead-letter topic; will try again"
                );
                sub.unpark(message.seq, DEAD_LETTER_RETRY, Instant::now());
            }
        }
    }
}
