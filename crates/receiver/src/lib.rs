//! What labrelay's push receivers share: the email-service and the
//! sms-service are the push endpoints of the subscriptions on
//! `new-lab-report`, and everything between the broker's POST and the
//! provider call that is not about email or SMS lives here.
//!
//! Layout:
//! - [`push_auth`]: the OIDC bearer-token check in front of every push
//!   endpoint (RS256, JWKS cached, issuer, audience, service account).
//! - [`notify_log`]: which notifications were sent (report id, channel,
//!   content hash), so redeliveries do not notify twice; SQLite or
//!   Firestore, and the claim protocol around them.
//! - [`group_write`]: group commit for the receivers' directory outboxes
//!   (one writer thread per directory; each caller answered after its
//!   file is durable).
//! - [`push_metrics`]: the receivers' Prometheus metrics and the
//!   `X-Labrelay-Outcome` header on every push answer.

pub mod group_write;
pub mod notify_log;
pub mod push_auth;
pub mod push_metrics;
