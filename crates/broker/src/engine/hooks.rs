//! What the engine asks of the layers around it, as traits it owns: an
//! [`Observer`] told what happens to messages (implemented by `observe`:
//! stats, metrics, the journal) and a [`PushDelivery`] that pushes the
//! messages of push subscriptions (implemented by `push`). The engine calls
//! them and knows nothing else of either; `server.rs` hands it the real ones.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::Engine;
use super::payloads::Message;
use super::subscription::{Delivery, Subscription};

/// Told what happens to messages, at four points: a publish committed, a
/// push ended, a pull subscriber acknowledged, a message reached the
/// dead-letter topic. The hooks run on the paths that make the broker
/// durable and fast, so an implementation never waits (for I/O, or for a
/// lock someone may hold long).
pub(crate) trait Observer: Send + Sync {
    /// Whether the messages handed to [`published`](Self::published) must
    /// keep their data (otherwise the engine drops it from those it no
    /// longer needs).
    fn keeps_data(&self) -> bool;

    /// After the store committed a publish: `messages` went to the
    /// subscriptions where `wanted[s][m]`.
    fn published(
        &self,
        topic: &str,
        messages: &[Arc<Message>],
        subscriptions: Vec<Arc<Subscription>>,
        wanted: Vec<Vec<bool>>,
        latency: Duration,
    );

    /// A push request ended, acknowledged or not.
    fn pushed(
        &self,
        sub: &Subscription,
        delivery: &Delivery,
        result: PushResult<'_>,
        trace: PushTrace,
    );

    /// Messages acknowledged by a pull subscriber (`Acknowledge`, or an ack
    /// on a StreamingPull stream).
    fn acked(&self, sub: &Subscription, seqs: &[u64]);

    /// A message used up its attempts on `sub` and reached its dead-letter
    /// `topic`, stored there as `dead_letter_id`; `None` when the topic has
    /// no subscription to keep it, so the message is gone.
    fn dead_lettered(
        &self,
        sub: &Subscription,
        message: &Message,
        attempts: u32,
        reason: &str,
        topic: &str,
        dead_letter_id: Option<&str>,
    );

    /// Finishes what the observer was given (the engine is closing).
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// How one push ended, as the push worker saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PushResult<'a> {
    Status(u16),
    Failed(&'a str),
}

/// Timing and the receiver's own account of one push.
#[derive(Debug, Default)]
pub(crate) struct PushTrace {
    pub latency: Duration,
    /// `X-Labrelay-Outcome` (`sent`, `skipped`, `duplicate`), when present
    /// and a short token.
    pub receiver_outcome: Option<String>,
    /// `X-Labrelay-Reason` (why `suppressed`: `twilio 21610`), when
    /// present and short printable ASCII.
    pub receiver_reason: Option<String>,
    /// `X-Labrelay-Provider-Id` (Twilio's SID of what was sent), likewise.
    pub provider_id: Option<String>,
}

/// Pushes the messages of push subscriptions.
pub(crate) trait PushDelivery: Send + Sync {
    /// Why pushes may not go to `endpoint`, when they may not: a push
    /// subscription is refused such an endpoint.
    fn refusal(&self, endpoint: &str) -> Option<String>;

    /// The push worker of `sub`, started with the subscription: it pushes
    /// while the subscription has a push endpoint and stops when the
    /// subscription is deleted or the engine shuts down.
    fn run(self: Arc<Self>, engine: Engine, sub: Arc<Subscription>) -> BoxFuture<'static, ()>;
}
