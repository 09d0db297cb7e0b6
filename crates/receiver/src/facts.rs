//! What the providers say after the send, kept in the notification log:
//! who is not to be notified again (suppressions: an opt-out, a mailbox
//! that does not exist) and where each sent message stands (delivery
//! receipts). One channel's view of them, for the push handler (a
//! suppressed recipient is answered `suppressed` before any provider call)
//! and for the channel's webhooks (Twilio's status callbacks, STOP and
//! START texted to the clinic's number).
//!
//! Suppressions are stored under a keyed hash of the recipient
//! ([`subject_hash`]), so the store holds no address or number; receipts
//! under the provider's id, naming the notification they belong to.

use std::sync::Arc;

use crate::notify_log::{
    NotificationLog, Receipt, ReceiptApplied, Suppression, now_ms, subject_hash,
};
use crate::push_metrics::Metrics;

/// One channel's suppressions and receipts, over the notification log.
/// Cheap to clone.
#[derive(Clone)]
pub struct Facts {
    log: Arc<dyn NotificationLog>,
    key: Arc<[u8]>,
    channel: &'static str,
    metrics: Arc<Metrics>,
}

impl Facts {
    pub(crate) fn new(
        log: Arc<dyn NotificationLog>,
        key: &[u8],
        channel: &'static str,
        metrics: Arc<Metrics>,
    ) -> Facts {
        Facts {
            log,
            key: Arc::from(key),
            channel,
            metrics,
        }
    }

    /// `email` or `sms`.
    pub fn channel(&self) -> &'static str {
        self.channel
    }

    /// The suppression of `recipient` (normalized, as the channel's
    /// [`recipient`](crate::Channel::recipient) gives it), if any.
    pub async fn suppression(&self, recipient: &str) -> anyhow::Result<Option<Suppression>> {
        let subject = subject_hash(&self.key, self.channel, recipient);
        self.log.suppression(self.channel, &subject).await
    }

    /// Suppresses `recipient` from now on, for `reason`.
    pub async fn suppress(&self, recipient: &str, reason: &str) -> anyhow::Result<()> {
        self.log
            .suppress(Suppression {
                channel: self.channel.to_string(),
                subject: subject_hash(&self.key, self.channel, recipient),
                reason: reason.to_string(),
                since_ms: now_ms(),
            })
            .await?;
        self.metrics.suppression_changed("added");
        Ok(())
    }

    /// Lifts the suppression of `recipient`; whether there was one.
    pub async fn lift(&self, recipient: &str) -> anyhow::Result<bool> {
        let subject = subject_hash(&self.key, self.channel, recipient);
        let lifted = self.log.lift(self.channel, &subject).await?;
        if lifted {
            self.metrics.suppression_changed("lifted");
        }
        Ok(lifted)
    }

    /// Records a delivery receipt unless it is stale; a final status is
    /// counted once, when it is first recorded.
    pub async fn receipt(&self, receipt: Receipt) -> anyhow::Result<ReceiptApplied> {
        let status = receipt.status;
        let applied = self.log.record_receipt(receipt).await?;
        if applied == ReceiptApplied::Applied && status.is_final() {
            self.metrics.final_status(status.as_str());
        }
        Ok(applied)
    }

    /// The stored status of the provider's message `provider_id`.
    pub async fn stored_receipt(&self, provider_id: &str) -> anyhow::Result<Option<Receipt>> {
        self.log.receipt(provider_id).await
    }
}
