//! Replay from the console: [`dead_letter::replay`] through the engine's
//! own methods, the same procedure `labrelay dead-letters replay` runs over
//! gRPC. Each replay is journaled.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Console, ConsoleError};
use crate::dead_letter::{self, PubSub, ReplayError, Replayed};
use crate::engine::Engine;
use crate::error::BrokerError;
use crate::observe::journal::Event;
use crate::pb;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayRequest {
    subscription: String,
    /// Dead-letter message ids; empty replays every ready dead letter.
    #[serde(default)]
    pub(super) message_ids: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct ReplayAnswer {
    replayed: Vec<Replayed>,
    not_found: Vec<String>,
}

/// Replays the dead letters of a pull subscription ([`dead_letter::replay`]).
pub(super) async fn replay(
    console: &Console,
    request: ReplayRequest,
) -> Result<ReplayAnswer, ConsoleError> {
    let name = request.subscription;
    let sub = console.engine.subscription(&name)?;
    if sub.settings().push.is_some() {
        return Err(ConsoleError::BadRequest(format!(
            "{name} is a push subscription; dead letters are replayed from a pull subscription"
        )));
    }
    let mut engine = InProcess(&console.engine);
    let outcome = dead_letter::replay(&mut engine, &name, &request.message_ids).await;
    for replayed in &outcome.replayed {
        if let Ok(seq) = replayed.message_id.parse() {
            console.observers.journal.send(Event::Replayed {
                message_id: seq,
                subscription: name.clone(),
                at: SystemTime::now(),
                new_id: replayed.new_id.clone(),
            });
        }
    }
    if let Some(error) = outcome.error {
        return Err(error.into());
    }
    Ok(ReplayAnswer {
        replayed: outcome.replayed,
        not_found: outcome.not_found,
    })
}

impl From<ReplayError<BrokerError>> for ConsoleError {
    fn from(error: ReplayError<BrokerError>) -> ConsoleError {
        match error {
            ReplayError::PubSub(error) => ConsoleError::Broker(error),
            ReplayError::NoSource { .. } => ConsoleError::BadRequest(error.to_string()),
            ReplayError::SourceGone { .. } | ReplayError::TopicDeleted { .. } => {
                ConsoleError::NotFound(error.to_string())
            }
        }
    }
}

/// The Pub/Sub calls of a replay, made on the engine in-process.
struct InProcess<'a>(&'a Engine);

impl PubSub for InProcess<'_> {
    type Error = BrokerError;

    async fn pull(&mut self, subscription: &str) -> Result<Vec<pb::ReceivedMessage>, BrokerError> {
        self.0.pull(subscription, 1000, true).await
    }

    async fn release(
        &mut self,
        subscription: &str,
        ack_ids: Vec<String>,
    ) -> Result<(), BrokerError> {
        self.0.modify_ack_deadline(subscription, &ack_ids, 0).await
    }

    async fn acknowledge(
        &mut self,
        subscription: &str,
        ack_ids: Vec<String>,
    ) -> Result<(), BrokerError> {
        self.0.acknowledge(subscription, &ack_ids).await
    }

    async fn topic_of(&mut self, subscription: &str) -> Result<Option<String>, BrokerError> {
        match self.0.get_subscription(subscription) {
            Ok(found) => Ok(Some(found.topic)),
            // A name that cannot be a subscription's names none.
            Err(BrokerError::NotFound(_) | BrokerError::InvalidArgument(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn publish(
        &mut self,
        topic: &str,
        message: pb::PubsubMessage,
    ) -> Result<String, BrokerError> {
        let ids = self.0.publish(topic, vec![message]).await?;
        Ok(ids.into_iter().next().unwrap_or_default())
    }
}
