//! The email-service: emails each lab report to the pet's owner.
//!
//! In labrelay's data flow it is the push endpoint of the subscription
//! `email-service-sub`: the broker POSTs one Pub/Sub push envelope per lab
//! report, and the service renders the report into a multipart/alternative
//! email and hands it to an SMTP server (lettre over rustls) or writes it to
//! a directory outbox. Its HTTP status is the acknowledgement: 204 when the
//! email went out (or there was no address to send to), 503 when delivery
//! may work later (the broker redelivers), 4xx when it never can (the broker
//! eventually dead-letters the message).
//!
//! Layout:
//! - [`settings`]: [`Settings`] from the environment (`SMTP_URL`,
//!   `EMAIL_FROM`, ... and what every push receiver reads,
//!   [`ReceiverSettings`]) or built in code; secrets never reach `Debug`.
//! - `channel`: the email-service's part of the one push handler
//!   ([`labrelay_receiver`]): compose a report's email, deliver it once,
//!   classify a failed delivery.
//! - [`render`]: subject, plain text and HTML from the templates of the
//!   report's locale ([`labrelay_templates`]: built in, or the clinic's
//!   `TEMPLATES_DIR`), checked at start against sample reports.
//! - [`email`]: the addressed message, its content-derived Message-ID and the
//!   `X-Report-Id` and `Auto-Submitted` headers.
//! - `mailer`: SMTP or directory delivery, and the transient/permanent
//!   classification of failures.
//! - `smtp`: SMTP connections (lettre's), kept open between messages and
//!   reused only after a finished transaction, never after one cut off.
//!   The directory outbox writes through
//!   [`labrelay_receiver::group_write`] (group commit).
//!
//! The push handler, its answers (one mapping from what happened to the
//! HTTP status, the `X-Labrelay-Outcome` header, the metrics and the log
//! line), the push-token check, the metrics at `GET /metrics` and the
//! trace spans are [`labrelay_receiver`]'s, the same as the sms-service's.
//!
//! Duplicates: with `NOTIFY_LOG` set, every email sent is recorded
//! (report id, channel `email`, SHA-256 of the report and the recipient,
//! not of the rendered email; see
//! [`labrelay_receiver::notify_log`]) and a push whose email is already
//! recorded is acknowledged without sending, whether it is a redelivery or
//! the lab posting the same report again. A corrected report (other
//! content) is sent. A delivery cut off at its attempt limit keeps its
//! claim until the lease lapses, so redeliveries wait instead of sending.
//! The duplicates left: the service dies (or the record fails, or the
//! delivery was cut off) after the SMTP server accepted the message and
//! before the record is committed; once the claim has lapsed the broker
//! redelivers and the owner gets the same email again, with the same
//! Message-ID.
//!
//! [`app`] builds the router from [`Settings`]; [`run`] serves it on an
//! already-bound listener until a shutdown future completes.

mod channel;
pub mod email;
mod mailer;
pub mod render;
pub mod settings;
mod smtp;

use std::future::Future;

use axum::Router;

use channel::EmailChannel;

pub use labrelay_receiver::ReceiverSettings;
pub use labrelay_runtime::secret::Secret;
pub use settings::{Delivery, Settings, SmtpCredentials, SmtpServer, SmtpTls};

/// The service's routes: `POST /` (push), `GET /healthz` and `GET /metrics`.
///
/// Fails when the TLS settings cannot be built or the notification log
/// cannot be opened.
pub fn app(settings: Settings) -> anyhow::Result<Router> {
    labrelay_receiver::app(EmailChannel::new(&settings)?, &settings.receiver)
}

/// Serves the email-service on `listener` until `shutdown` completes, then
/// stops accepting, lets in-flight pushes finish (each is answered within
/// the send timeout) and closes idle SMTP connections. An SMTP attempt
/// still going on after its push was answered ends with the process; its
/// claim is taken over at once by the next start on this host (SQLite log;
/// on Firestore it lapses with its lease).
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let channel = EmailChannel::new(&settings)?;
    labrelay_receiver::run(channel, settings.receiver, listener, shutdown).await
}
