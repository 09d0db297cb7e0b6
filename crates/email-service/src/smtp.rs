//! SMTP connections kept open between messages, and reused only when their
//! last transaction finished.
//!
//! lettre's pool (0.11) takes a connection back whenever its handle is
//! dropped, unless lettre itself saw the connection fail; its check before
//! reuse is a NOOP, which any late reply satisfies. An attempt cut off at
//! the attempt limit while waiting for the reply to its final `.` would
//! so leave a connection one reply behind: the next message read each
//! command's reply from the command before, took DATA's 354 for the
//! server's acceptance of its data, and was recorded as sent whatever the
//! server answered to it.
//!
//! Here a connection is an owned value that goes back to the idle list in
//! one place only, after the server's positive reply to the final `.` was
//! read. An error, a timeout or a dropped future drops the connection,
//! which closes it (after a negative reply, with QUIT).
//!
//! A transaction has two deadlines ([`SmtpPool::send`]): the envelope, up
//! to the server's 354 to DATA, within the send timeout, and the message
//! with its final `.` and the server's answer to it within the data
//! timeout, which is long (RFC 5321 §4.5.3.2.6 gives the server ten
//! minutes to answer the `.`). Before the 354 the server cannot have the
//! message: a timeout there is "not sent". After it, the server may take
//! the message at any moment: cut off early, the attempt would not know
//! whether the email went out, and the redelivery after its claim lapsed
//! would send it again. lettre's `send` runs both phases as one future,
//! so the commands are sent here one by one (`command`, then `message`),
//! the way `send` does.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::Error;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};

/// At most this many idle connections are kept (lettre's default).
const MAX_IDLE: usize = 10;

/// An idle connection older than this is closed instead of reused
/// (lettre's default): servers close idle clients after a few minutes.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// How long an idle connection may take to answer NOOP before a new one
/// is opened instead.
const CHECK_LIMIT: Duration = Duration::from_secs(2);

/// How long closing a connection politely (QUIT) may take.
const QUIT_LIMIT: Duration = Duration::from_secs(2);

/// How a new connection is secured.
pub enum Security {
    None,
    /// STARTTLS when the server offers it.
    Opportunistic(TlsParameters),
    /// STARTTLS, or no connection.
    StartTls(TlsParameters),
    /// TLS from the first byte (SMTPS).
    Implicit(TlsParameters),
}

/// Where and how to connect.
pub struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub credentials: Option<Credentials>,
    /// Bounds opening the TCP connection.
    pub connect_timeout: Duration,
}

/// How long each phase of one transaction may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// A connection (a reused one checked, or a new one opened), MAIL,
    /// RCPT and DATA, up to the server's 354.
    pub envelope: Duration,
    /// The message, its final `.`, and the server's answer to it.
    pub data: Duration,
}

/// Why a transaction did not end with the server's acceptance.
#[derive(Debug, thiserror::Error)]
pub enum SendFailure {
    /// A negative reply, a broken conversation, TLS: lettre's error.
    #[error(transparent)]
    Smtp(#[from] Error),
    /// No 354 to DATA within [`Deadlines::envelope`]: the server does not
    /// have the message.
    #[error("the SMTP server did not take the envelope within {0:?}")]
    EnvelopeTimeout(Duration),
    /// The message and its final `.` went out (or were going out) and the
    /// server did not answer within [`Deadlines::data`]: it may have taken
    /// the message.
    #[error("the SMTP server did not answer the message's data within {0:?}")]
    DataTimeout(Duration),
    /// The server lacks an extension the message needs.
    #[error("the SMTP server does not support {0}, which this message needs")]
    Unsupported(&'static str),
}

/// SMTP connections to one server.
pub struct SmtpPool {
    server: Server,
    hello: ClientId,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

impl SmtpPool {
    pub fn new(server: Server) -> SmtpPool {
        SmtpPool {
            server,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// One SMTP transaction (MAIL, RCPT, DATA, the message, `.`) on an
    /// idle connection that still answers, or on a new one, each phase
    /// within its deadline. Dropping the future closes the connection it
    /// was using.
    pub async fn send(
        &self,
        envelope: &Envelope,
        message: &[u8],
        deadlines: Deadlines,
    ) -> Result<(), SendFailure> {
        let opened = async {
            let mut conn = match self.reusable().await {
                Some(conn) => conn,
                None => self.connect().await?,
            };
            match start_data(&mut conn, envelope, message).await {
                Ok(()) => Ok(conn),
                Err(failure) => {
                    abort_in_background(conn);
                    Err(failure)
                }
            }
        };
        let mut conn = match tokio::time::timeout(deadlines.envelope, opened).await {
            Ok(conn) => conn?,
            Err(_) => return Err(SendFailure::EnvelopeTimeout(deadlines.envelope)),
        };
        match tokio::time::timeout(deadlines.data, conn.message(message)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                abort_in_background(conn);
                return Err(error.into());
            }
            Err(_) => return Err(SendFailure::DataTimeout(deadlines.data)),
        }
        // The one place a connection goes back: its reply to `.` was read.
        self.park(conn);
        Ok(())
    }

    /// Closes the idle connections with QUIT.
    pub async fn shutdown(&self) {
        let idle = std::mem::take(&mut *self.lock());
        let mut quits = tokio::task::JoinSet::new();
        for Idle { conn, .. } in idle {
            quits.spawn(quit(conn));
        }
        quits.join_all().await;
    }

    /// The most recently used idle connection that answers NOOP; older
    /// ones and those that do not answer are closed.
    async fn reusable(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let Idle { mut conn, since } = self.lock().pop()?;
            if since.elapsed() > IDLE_LIMIT {
                close_in_background(conn);
                continue;
            }
            if let Ok(true) = tokio::time::timeout(CHECK_LIMIT, conn.test_connected()).await {
                return Some(conn);
            }
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, Error> {
        let server = &self.server;
        let implicit = match &server.security {
            Security::Implicit(tls) => Some(tls.clone()),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (server.host.as_str(), server.port),
            Some(server.connect_timeout),
            &self.hello,
            implicit,
            None,
        )
        .await?;
        match &server.security {
            Security::Opportunistic(tls) if conn.can_starttls() => {
                conn.starttls(tls.clone(), &self.hello).await?;
            }
            Security::StartTls(tls) => conn.starttls(tls.clone(), &self.hello).await?,
            _ => {}
        }
        if let Some(credentials) = &server.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
    }

    fn park(&self, conn: AsyncSmtpConnection) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        } else {
            drop(idle);
            close_in_background(conn);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The list stays whole if a holder panicked: it only pushes and pops.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// MAIL (with SMTPUTF8 and 8BITMIME when the envelope or the message
/// needs them, as lettre's `send` does), RCPT for each recipient, DATA: the
/// server has answered 354 and waits for the message.
async fn start_data(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    message: &[u8],
) -> Result<(), SendFailure> {
    let mut options = Vec::new();
    let addresses = envelope.from().into_iter().chain(envelope.to());
    if addresses.map(AsRef::<str>::as_ref).any(|a| !a.is_ascii()) {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(SendFailure::Unsupported("SMTPUTF8"));
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(SendFailure::Unsupported("8BITMIME"));
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(envelope.from().cloned(), options))
        .await?;
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), Vec::new())).await?;
    }
    conn.command(Data).await?;
    Ok(())
}

/// QUIT and close, as lettre does after a failed command, waiting at most
/// [`QUIT_LIMIT`] for the server.
fn abort_in_background(mut conn: AsyncSmtpConnection) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(QUIT_LIMIT, conn.abort()).await;
    });
}

/// QUIT, waiting at most [`QUIT_LIMIT`] for the reply.
async fn quit(mut conn: AsyncSmtpConnection) {
    let _ = tokio::time::timeout(QUIT_LIMIT, conn.quit()).await;
}

fn close_in_background(conn: AsyncSmtpConnection) {
    tokio::spawn(quit(conn));
}
