//! Delivery: an SMTP server through lettre (rustls), or a directory outbox.
//!
//! Every failure is classified once, here, as transient (the broker should
//! redeliver) or permanent (this message can never be delivered), by the
//! pure [`class_of`], and named for the push's log line by [`label_of`].
//! Summaries are safe to log and return: the server's own words, which may
//! quote the recipient, stay at debug level.

use std::time::Duration;

use anyhow::Context as _;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::TlsParameters;

use labrelay_receiver::Class;
use labrelay_receiver::group_write::{self, GroupWriter};

use crate::email::Email;
use crate::settings::{Delivery, SmtpServer, SmtpTls};
use crate::smtp::{Deadlines, Security, SendFailure, Server, SmtpPool};

pub enum Mailer {
    Smtp {
        pool: SmtpPool,
        /// For logs: `smtp://host:port (tls)`, never credentials.
        describe: String,
    },
    Directory(GroupWriter),
}

/// The outbox's temporary files are hidden, never `.eml`; the directory is
/// created again if it goes.
const WRITER: group_write::Options = group_write::Options {
    temp_prefix: ".tmp-",
    temp_suffix: ".part",
    create_dir: true,
};

/// A delivery that did not happen.
#[derive(Debug, thiserror::Error)]
#[error("{summary}")]
pub struct SendError {
    pub class: Class,
    /// What went wrong, in the push receivers' words (`refused`,
    /// `timeout`, ...): the `outcome` of the push's log line.
    pub label: &'static str,
    /// Safe to log at info and to return: no addresses, no server text.
    pub summary: String,
    /// The server (or the outbox) may have taken the message all the
    /// same: the attempt ended without its answer.
    pub maybe_sent: bool,
    /// The recipient's mailbox does not exist, and why (`smtp 550
    /// 5.1.1`): the push handler suppresses the address.
    pub suppress: Option<String>,
    #[source]
    pub source: anyhow::Error,
}

/// What went wrong talking to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpFailure {
    /// A negative reply with this code.
    Reply(u16),
    Timeout,
    Tls,
    /// The server lacks an extension the message needs (SMTPUTF8,
    /// 8BITMIME): another server, or another relay, is a configuration
    /// change.
    Unsupported,
    /// Refused, reset, unreadable reply, shut down: the conversation broke.
    Connection,
}

/// 5xx replies that are about our credentials, not about the message:
/// fixing the configuration makes the same message deliverable.
const AUTH_CODES: [u16; 4] = [530, 534, 535, 538];

/// Only a 5xx reply about the message itself is permanent.
pub fn class_of(failure: SmtpFailure) -> Class {
    match failure {
        SmtpFailure::Reply(code) if (500..600).contains(&code) && !AUTH_CODES.contains(&code) => {
            Class::Permanent
        }
        _ => Class::Transient,
    }
}

/// The name of a failure, in the words the sms-service uses for Twilio's.
pub fn label_of(failure: SmtpFailure) -> &'static str {
    match failure {
        SmtpFailure::Reply(code) if AUTH_CODES.contains(&code) => "misconfigured",
        SmtpFailure::Reply(code) if (500..600).contains(&code) => "refused",
        SmtpFailure::Reply(_) => "provider_error",
        SmtpFailure::Timeout => "timeout",
        SmtpFailure::Unsupported => "misconfigured",
        SmtpFailure::Tls => "tls_error",
        SmtpFailure::Connection => "unreachable",
    }
}

impl Mailer {
    pub fn new(delivery: &Delivery, send_timeout: Duration) -> anyhow::Result<Mailer> {
        match delivery {
            Delivery::Directory(dir) => Ok(Mailer::Directory(
                GroupWriter::start(dir.clone(), WRITER)
                    .context("starting the outbox's writer thread")?,
            )),
            Delivery::Smtp(server) => Ok(Mailer::Smtp {
                pool: smtp_pool(server, send_timeout)?,
                describe: describe(server),
            }),
        }
    }

    /// Where mail goes, for the startup log line.
    pub fn describe(&self) -> String {
        match self {
            Mailer::Smtp { describe, .. } => describe.clone(),
            Mailer::Directory(writer) => format!("directory outbox {}", writer.dir().display()),
        }
    }

    /// One delivery attempt: an SMTP transaction within `deadlines`
    /// (ended within their sum), or an outbox file written within
    /// [`Deadlines::envelope`].
    pub async fn send(&self, email: &Email, deadlines: Deadlines) -> Result<(), SendError> {
        match self {
            Mailer::Smtp { pool, .. } => send_smtp(pool, email, deadlines).await,
            Mailer::Directory(writer) => {
                let timeout = deadlines.envelope;
                match tokio::time::timeout(timeout, write_file(writer, email)).await {
                    Ok(result) => result,
                    // The writer thread may still rename the file in.
                    Err(_) => Err(SendError {
                        class: Class::Transient,
                        label: "timeout",
                        summary: format!("writing to the outbox did not finish within {timeout:?}"),
                        maybe_sent: true,
                        suppress: None,
                        source: anyhow::anyhow!("timed out"),
                    }),
                }
            }
        }
    }

    /// Closes idle SMTP connections politely.
    pub async fn shutdown(&self) {
        if let Mailer::Smtp { pool, .. } = self {
            pool.shutdown().await;
        }
    }
}

fn describe(server: &SmtpServer) -> String {
    let (scheme, tls) = match server.tls {
        SmtpTls::None => ("smtp", "no TLS"),
        SmtpTls::Opportunistic => ("smtp", "STARTTLS when offered"),
        SmtpTls::StartTls => ("smtp", "STARTTLS required"),
        SmtpTls::Implicit => ("smtps", "implicit TLS"),
    };
    let auth = if server.credentials.is_some() {
        ", with AUTH"
    } else {
        ""
    };
    format!("{scheme}://{}:{} ({tls}{auth})", server.host, server.port)
}

fn smtp_pool(server: &SmtpServer, send_timeout: Duration) -> anyhow::Result<SmtpPool> {
    server.check_credentials_are_encrypted()?;
    let tls = || TlsParameters::new(server.host.clone());
    let security = match server.tls {
        SmtpTls::None => Security::None,
        SmtpTls::Opportunistic => Security::Opportunistic(tls()?),
        SmtpTls::StartTls => Security::StartTls(tls()?),
        SmtpTls::Implicit => Security::Implicit(tls()?),
    };
    Ok(SmtpPool::new(Server {
        host: server.host.clone(),
        port: server.port,
        security,
        credentials: server.credentials.as_ref().map(|credentials| {
            Credentials::new(
                credentials.username.clone(),
                credentials.password.expose().to_string(),
            )
        }),
        connect_timeout: send_timeout,
    }))
}

async fn send_smtp(pool: &SmtpPool, email: &Email, deadlines: Deadlines) -> Result<(), SendError> {
    let message = &email.message;
    match pool
        .send(message.envelope(), &message.formatted(), deadlines)
        .await
    {
        Ok(()) => Ok(()),
        Err(err) => {
            let failure = smtp_failure(&err);
            let summary = match (&err, failure) {
                (SendFailure::DataTimeout(wait), _) => format!(
                    "the SMTP server did not answer the message's data within {wait:?}; it may have taken it"
                ),
                (SendFailure::Unsupported(extension), _) => {
                    format!("the SMTP server does not support {extension}, which the email needs")
                }
                (_, SmtpFailure::Reply(code)) if AUTH_CODES.contains(&code) => {
                    format!("the SMTP server refused our credentials ({code})")
                }
                (_, SmtpFailure::Reply(code)) => format!("the SMTP server answered {code}"),
                (_, SmtpFailure::Timeout) => "the SMTP server did not answer in time".into(),
                (_, SmtpFailure::Tls) => "TLS with the SMTP server failed".into(),
                (_, SmtpFailure::Unsupported | SmtpFailure::Connection) => {
                    "the conversation with the SMTP server failed".into()
                }
            };
            let suppress = match (&err, failure) {
                (SendFailure::Smtp(smtp), SmtpFailure::Reply(code))
                    if class_of(failure) == Class::Permanent =>
                {
                    suppression_reason(code, &server_text(smtp))
                }
                _ => None,
            };
            Err(SendError {
                class: class_of(failure),
                label: label_of(failure),
                summary,
                // Only once the server waits for the data can it take the
                // message; a timeout before that is a plain "not sent".
                maybe_sent: matches!(err, SendFailure::DataTimeout(_)),
                suppress,
                source: anyhow::Error::new(err),
            })
        }
    }
}

/// What the server said after the reply code (lettre keeps it as the
/// error's source); it may quote the address, so it is never logged above
/// debug.
fn server_text(err: &lettre::transport::smtp::Error) -> String {
    std::error::Error::source(err).map_or_else(String::new, |source| source.to_string())
}

/// The enhanced status code (RFC 3463) that opens a reply's text: `5.1.1`.
pub fn enhanced_status(text: &str) -> Option<(u8, u16, u16)> {
    let token = text.split_whitespace().next()?;
    let mut parts = token.split('.');
    let class = parts.next()?.parse::<u8>().ok()?;
    let subject = parts.next()?.parse::<u16>().ok()?;
    let detail = parts.next()?.parse::<u16>().ok()?;
    (parts.next().is_none() && matches!(class, 2 | 4 | 5) && subject < 1000 && detail < 1000)
        .then_some((class, subject, detail))
}

/// A permanent reply whose enhanced status says the recipient's mailbox
/// or domain does not take mail (5.1.1 no such mailbox, 5.1.2 no such
/// domain, 5.1.3 a malformed address, 5.1.6 mailbox moved, 5.1.10 null
/// MX): the address is suppressed, with this reason. The other 5.1.x are
/// about the sender (5.1.7, 5.1.8) or say too little (5.1.0, 5.1.4), and
/// every other permanent error stays a failure.
pub fn suppression_reason(code: u16, text: &str) -> Option<String> {
    match enhanced_status(text)? {
        (5, 1, detail @ (1 | 2 | 3 | 6 | 10)) => Some(format!("smtp {code} 5.1.{detail}")),
        _ => None,
    }
}

fn smtp_failure(err: &SendFailure) -> SmtpFailure {
    let err = match err {
        SendFailure::Smtp(err) => err,
        SendFailure::EnvelopeTimeout(_) | SendFailure::DataTimeout(_) => {
            return SmtpFailure::Timeout;
        }
        SendFailure::Unsupported(_) => return SmtpFailure::Unsupported,
    };
    if let Some(code) = err.status().and_then(|c| c.to_string().parse().ok()) {
        SmtpFailure::Reply(code)
    } else if err.is_timeout() {
        SmtpFailure::Timeout
    } else if err.is_tls() {
        SmtpFailure::Tls
    } else {
        SmtpFailure::Connection
    }
}

/// Writes `<dir>/<report id>-<Message-ID hash>.eml` atomically: a hidden
/// temporary file in the same directory, synced, then renamed over any
/// earlier copy (see [`labrelay_receiver::group_write`]).
async fn write_file(writer: &GroupWriter, email: &Email) -> Result<(), SendError> {
    let name = group_write::file_name(&email.report_id, email.id_left(), "eml");
    writer
        .write(name, email.message.formatted())
        .await
        .map_err(|err| SendError {
            class: Class::Transient,
            label: "outbox_error",
            summary: "writing to the outbox directory failed".into(),
            maybe_sent: false,
            suppress: None,
            source: anyhow::Error::new(err),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_5xx_about_the_message_is_permanent() {
        use Class::*;
        use SmtpFailure::*;
        let cases = [
            (Reply(421), Transient),
            (Reply(450), Transient),
            (Reply(451), Transient),
            (Reply(452), Transient),
            (Reply(550), Permanent),
            (Reply(551), Permanent),
            (Reply(552), Permanent),
            (Reply(553), Permanent),
            (Reply(554), Permanent),
            (Reply(530), Transient),
            (Reply(534), Transient),
            (Reply(535), Transient),
            (Reply(538), Transient),
            (Timeout, Transient),
            (Unsupported, Transient),
            (Tls, Transient),
            (Connection, Transient),
        ];
        for (failure, want) in cases {
            assert_eq!(class_of(failure), want, "{failure:?}");
        }
    }

    #[test]
    fn only_a_missing_recipient_mailbox_is_suppressed() {
        let cases = [
            (
                550,
                "5.1.1 <alex@example.com>: Recipient address rejected",
                Some("smtp 550 5.1.1"),
            ),
            (550, "5.1.10 null MX", Some("smtp 550 5.1.10")),
            (553, "5.1.3 bad address syntax", Some("smtp 553 5.1.3")),
            (551, "5.1.6 moved", Some("smtp 551 5.1.6")),
            (556, "5.1.2 no such domain", Some("smtp 556 5.1.2")),
            // The sender's address, or too vague.
            (553, "5.1.7 bad sender", None),
            (553, "5.1.8 bad sender domain", None),
            (550, "5.1.0 address rejected", None),
            // Other permanent errors stay failures.
            (554, "5.7.1 rejected by policy", None),
            (552, "5.2.2 mailbox full", None),
            (550, "Mailbox unavailable", None),
            (550, "", None),
            (550, "5.1 short", None),
            (550, "5.1.1.1 long", None),
        ];
        for (code, text, want) in cases {
            assert_eq!(suppression_reason(code, text).as_deref(), want, "{text}");
        }
        assert_eq!(enhanced_status("4.2.0 try later"), Some((4, 2, 0)));
        assert_eq!(enhanced_status("6.1.1 nope"), None);
    }

    #[test]
    fn names_each_failure() {
        use SmtpFailure::*;
        let cases = [
            (Reply(451), "provider_error"),
            (Reply(550), "refused"),
            (Reply(554), "refused"),
            (Reply(535), "misconfigured"),
            (Timeout, "timeout"),
            (Unsupported, "misconfigured"),
            (Tls, "tls_error"),
            (Connection, "unreachable"),
        ];
        for (failure, want) in cases {
            assert_eq!(label_of(failure), want, "{failure:?}");
        }
    }

    #[test]
    fn describes_the_server_without_credentials() {
        let server = SmtpServer {
            host: "smtp.example.com".into(),
            port: 587,
            tls: SmtpTls::StartTls,
            credentials: Some(crate::settings::SmtpCredentials {
                username: "apikey".into(),
                password: crate::Secret::new("s3cr3t"),
            }),
        };
        let text = describe(&server);
        assert_eq!(
            text,
            "smtp://smtp.example.com:587 (STARTTLS required, with AUTH)"
        );
    }
}
