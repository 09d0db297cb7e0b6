//! The HTTP headers labrelay's processes read from each other.
//!
//! - [`OUTCOME`]: written by the push receivers on every answer to a push,
//!   read by the broker, whose console shows what became of each delivery;
//!   with it [`REASON`] (why a push was `suppressed`) and [`PROVIDER_ID`]
//!   (what the provider calls the notification sent).
//! - [`TRACEPARENT`] and [`X_CLOUD_TRACE_CONTEXT`]: the trace a request
//!   belongs to, written by Cloud Run (or any W3C-aware proxy) and read by
//!   every service, so Cloud Logging groups a request's lines.

/// `X-Labrelay-Outcome`: what became of a push; one of the values in
/// [`outcome`].
pub const OUTCOME: &str = "x-labrelay-outcome";

/// The values of [`OUTCOME`].
pub mod outcome {
    /// The notification went out.
    pub const SENT: &str = "sent";
    /// There was nothing to send (no address, a destination not allowed).
    pub const SKIPPED: &str = "skipped";
    /// The notification was sent before and was not sent again.
    pub const DUPLICATE: &str = "duplicate";
    /// It was not sent, whether a retry may help or not; the HTTP status
    /// tells which.
    pub const FAILED: &str = "failed";
    /// It can never be sent, and the receiver parked it on the dead-letter
    /// topic itself (answered 204, so the broker acknowledges it).
    pub const DEAD_LETTERED: &str = "dead-lettered";
    /// Not sent, and never will be while the recipient is suppressed
    /// (opted out, or a mailbox that does not exist): answered 204.
    pub const SUPPRESSED: &str = "suppressed";
}

/// `X-Labrelay-Reason`: why a push was answered `suppressed` (`twilio
/// 21610`, `inbound STOP`, `smtp 550 5.1.1`), for the console. Never
/// personal data. The broker keeps it only when it is short printable
/// ASCII ([`is_token_text`]).
pub const REASON: &str = "x-labrelay-reason";

/// `X-Labrelay-Provider-Id`: the provider's id of the notification a push
/// sent (`sent`) or found sent before (`duplicate`): Twilio's SID, the
/// email's Message-ID. The console links the channel's delivery receipts
/// ([`crate::receipt`]) to the push by it.
pub const PROVIDER_ID: &str = "x-labrelay-provider-id";

/// The longest [`REASON`] or [`PROVIDER_ID`] the broker keeps.
pub const MAX_TEXT: usize = 128;

/// Whether `value` is a header text the broker keeps ([`REASON`],
/// [`PROVIDER_ID`]): 1 to [`MAX_TEXT`] bytes of printable ASCII, spaces
/// included, so nothing in it can break a log line or the console's page.
pub fn is_token_text(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_TEXT
        && value.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// The W3C Trace Context header.
pub const TRACEPARENT: &str = "traceparent";
/// Google's legacy trace header, still set by Cloud Run.
pub const X_CLOUD_TRACE_CONTEXT: &str = "x-cloud-trace-context";
