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
//!
//! With `RECEIPTS_TOPIC` set, each receipt that moves a notification
//! forward (not a stale or repeated one) is also published there, with the
//! attributes of [`labrelay_contract::receipt`] and no data, for the
//! broker's console, which shows them as the channel's steps after the
//! push. Publishing is best effort: the receipt is recorded first, and a
//! publish that fails (or takes longer than [`RECEIPT_PUBLISH_LIMIT`]) is
//! logged and leaves the console a step short, nothing else.

use std::sync::Arc;
use std::time::Duration;

use google_cloud_pubsub::model::Message;
use labrelay_contract::receipt::ReceiptAttributes;

use crate::notify_log::{
    NotificationLog, Receipt, ReceiptApplied, Suppression, now_ms, subject_hash,
};
use crate::publish::{TopicPublisher, TopicSetting};
use crate::push_metrics::Metrics;

/// How long publishing one receipt may take. The provider's callback waits
/// for it (Twilio gives up on a webhook after 15 s).
pub const RECEIPT_PUBLISH_LIMIT: Duration = Duration::from_secs(5);

/// One channel's suppressions and receipts, over the notification log.
/// Cheap to clone.
#[derive(Clone)]
pub struct Facts {
    log: Arc<dyn NotificationLog>,
    key: Arc<[u8]>,
    channel: &'static str,
    metrics: Arc<Metrics>,
    receipts: Option<Arc<TopicPublisher>>,
}

impl Facts {
    pub(crate) fn new(
        log: Arc<dyn NotificationLog>,
        key: &[u8],
        channel: &'static str,
        metrics: Arc<Metrics>,
        receipts: Option<TopicSetting>,
    ) -> Facts {
        Facts {
            log,
            key: Arc::from(key),
            channel,
            metrics,
            receipts: receipts
                .map(|setting| Arc::new(TopicPublisher::new(setting, RECEIPT_PUBLISH_LIMIT))),
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
    /// counted once, when it is first recorded. One recorded is published
    /// to `RECEIPTS_TOPIC` when that is set (see the module doc).
    pub async fn receipt(&self, receipt: Receipt) -> anyhow::Result<ReceiptApplied> {
        let status = receipt.status;
        let applied = self.log.record_receipt(receipt.clone()).await?;
        if applied == ReceiptApplied::Applied {
            if status.is_final() {
                self.metrics.final_status(status.as_str());
            }
            self.publish(&receipt).await;
        }
        Ok(applied)
    }

    /// Publishes `receipt` to `RECEIPTS_TOPIC`, if set and the receipt
    /// names its report; logs a failure.
    async fn publish(&self, receipt: &Receipt) {
        let (Some(publisher), Some(report_id)) = (&self.receipts, &receipt.report_id) else {
            return;
        };
        let error_code = receipt.error_code.map(|c| c.to_string());
        let attributes = ReceiptAttributes {
            report_id,
            sid: &receipt.provider_id,
            status: receipt.status.as_str(),
            error_code: error_code.as_deref(),
            channel: &receipt.channel,
        }
        .to_attributes();
        let message = Message::new().set_attributes(attributes);
        if let Err(error) = publisher.publish(message).await {
            tracing::warn!(
                error = format!("{error:#}"),
                report_id = report_id.as_str(),
                "could not publish a delivery receipt; the console will not show it"
            );
        }
    }

    /// The stored status of the provider's message `provider_id`.
    pub async fn stored_receipt(&self, provider_id: &str) -> anyhow::Result<Option<Receipt>> {
        self.log.receipt(provider_id).await
    }
}
