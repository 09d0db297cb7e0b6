//! What the provider said about a message after accepting it: its
//! delivery receipts ([`Receipt`]), whose status only moves forward.

/// Where a provider's message stands, as its delivery receipts say
/// (Twilio's `MessageStatus`). Receipts arrive late, twice or out of
/// order; a status only ever moves forward ([`rank`](Self::rank)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Queued,
    Sending,
    Sent,
    Delivered,
    Undelivered,
    Failed,
}

impl DeliveryStatus {
    /// Twilio's `MessageStatus` value; `None` for the statuses of messages
    /// we do not send (`received`, `read`, ...).
    pub fn parse(status: &str) -> Option<DeliveryStatus> {
        Some(match status {
            "queued" | "accepted" | "scheduled" => DeliveryStatus::Queued,
            "sending" => DeliveryStatus::Sending,
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            "undelivered" => DeliveryStatus::Undelivered,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Undelivered => "undelivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// How far along: a receipt replaces the stored status only if it
    /// ranks higher. The three final statuses rank alike, so the first one
    /// stands: a late `sent` never undoes `delivered`, and a carrier's
    /// second opinion does not rewrite the first.
    pub fn rank(self) -> u8 {
        match self {
            DeliveryStatus::Queued => 0,
            DeliveryStatus::Sending => 1,
            DeliveryStatus::Sent => 2,
            DeliveryStatus::Delivered | DeliveryStatus::Undelivered | DeliveryStatus::Failed => 3,
        }
    }

    pub fn is_final(self) -> bool {
        self.rank() == 3
    }
}

/// One provider message's latest status, stored by the provider's id
/// (Twilio's SID). It names the notification it belongs to (the
/// [`NotificationKey`](super::NotificationKey)'s report id and content hash), which the status
/// callback's URL carries: a notification sent twice (the duplicate window
/// of the module doc) has two SIDs, both attached to it, even the one
/// whose send was never recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub provider_id: String,
    /// `email` or `sms`.
    pub channel: String,
    pub report_id: Option<String>,
    pub content_hash: Option<String>,
    pub status: DeliveryStatus,
    /// The provider's error code (Twilio's `ErrorCode`, e.g. 30003).
    pub error_code: Option<u32>,
    /// When this status was recorded, in ms since the Unix epoch.
    pub at_ms: i64,
}

/// What [`NotificationLog::record_receipt`](super::NotificationLog::record_receipt) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptApplied {
    /// Stored: it is the message's status now.
    Applied,
    /// Not newer than what is stored (a duplicate, or late): ignored.
    Stale { current: DeliveryStatus },
}
