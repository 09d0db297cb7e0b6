//! The email-service's part of the one push handler
//! ([`labrelay_receiver`]): a report's email (the owner's address, parsed
//! once, and the rendered message), how it is delivered and how a failed
//! delivery classifies.

use std::time::Duration;

use anyhow::Context as _;
use labrelay_contract::LabReport;
use labrelay_receiver::notify_log::attempt_limit;
use labrelay_receiver::{Channel, Failure, NotSent};
use lettre::message::Mailbox;

use crate::email::{self, ComposeError, Email, Sender};
use crate::mailer::{Mailer, SendError};
use crate::render;
use crate::settings::Settings;
use crate::smtp::Deadlines;

/// What the push handler allows an attempt beyond its two deadlines
/// (scheduling, closing the connection), so that the mailer, not the
/// handler, decides how it ended.
const ATTEMPT_MARGIN: Duration = Duration::from_secs(5);
use labrelay_templates::Templates;

/// Email, through an SMTP server or into a directory outbox.
pub(crate) struct EmailChannel {
    mailer: Mailer,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    send_timeout: Duration,
    deadlines: Deadlines,
    templates: Templates,
}

impl EmailChannel {
    /// Fails when a template is broken (naming its file, line and
    /// problem) or the TLS settings cannot be built.
    pub fn new(settings: &Settings) -> anyhow::Result<EmailChannel> {
        let templates =
            render::templates(&settings.templates).context("checking the email templates")?;
        let mailer = Mailer::new(&settings.delivery, settings.send_timeout)
            .context("setting up email delivery")?;
        Ok(EmailChannel {
            mailer,
            from: settings.from.clone(),
            reply_to: settings.reply_to.clone(),
            send_timeout: settings.send_timeout,
            // Up to the 354 as long as a whole attempt used to be allowed;
            // then as long as the server may take to answer the data.
            deadlines: Deadlines {
                envelope: attempt_limit(settings.send_timeout),
                data: settings.data_timeout,
            },
            templates,
        })
    }
}

impl Channel for EmailChannel {
    type Message = Email;

    const NAME: &'static str = "email";
    const NOUN: &'static str = "email";
    const SERVICE: &'static str = "email-service";

    fn answer_within(&self) -> Duration {
        self.send_timeout
    }

    /// Both deadlines and a margin: the handler never cuts off an
    /// attempt whose server may still answer its data.
    fn attempt_limit(&self) -> Duration {
        self.deadlines
            .envelope
            .saturating_add(self.deadlines.data)
            .saturating_add(ATTEMPT_MARGIN)
    }

    fn render(&self, report: &LabReport, _message_id: &str) -> Result<Email, NotSent> {
        let sender = Sender {
            from: &self.from,
            reply_to: self.reply_to.as_ref(),
        };
        email::compose(report, &sender, &self.templates).map_err(not_sent)
    }

    fn recipient<'m>(&self, email: &'m Email) -> &'m str {
        &email.recipient
    }

    async fn send(&self, email: &Email) -> Result<Option<String>, Failure> {
        match self.mailer.send(email, self.deadlines).await {
            Ok(()) => Ok(Some(email.message_id.clone())),
            Err(err) => {
                // The server's own words may quote the recipient.
                tracing::debug!(error = ?err.source, email_message_id = %email.message_id, "delivery failed");
                Err(failure_of(err))
            }
        }
    }

    fn describe(&self) -> String {
        self.mailer.describe()
    }

    async fn shutdown(&self) {
        self.mailer.shutdown().await;
    }
}

/// Why a report gets no email.
fn not_sent(err: ComposeError) -> NotSent {
    match err {
        ComposeError::NoAddress => NotSent::Skipped("the report has no owner email"),
        ComposeError::InvalidAddress => NotSent::Failed(Failure::permanent(
            "invalid_address",
            err.to_string(),
            err.to_string(),
        )),
        ComposeError::Render(_) | ComposeError::Build(_) => {
            tracing::error!(error = ?anyhow::Error::new(err), "composing the email failed");
            NotSent::Internal
        }
    }
}

/// A failed delivery as the push handler answers and logs it: its summary
/// is safe for both.
fn failure_of(err: SendError) -> Failure {
    Failure {
        suppress: err.suppress.map(String::into_boxed_str),
        class: err.class,
        label: err.label,
        // No answer to the data: the server may have the message.
        maybe_sent: err.maybe_sent,
        public: err.summary.clone(),
        detail: err.summary,
        provider_code: None,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use labrelay_receiver::Class;
    use labrelay_receiver::outcome::Outcome;

    use super::*;

    fn status_and_label(result: Result<Option<String>, NotSent>) -> (u16, &'static str) {
        let outcome = match result {
            Ok(id) => Outcome::Sent(id),
            Err(NotSent::Skipped(reason)) => Outcome::Skipped(reason),
            Err(NotSent::Failed(failure)) => Outcome::Failed(failure),
            Err(NotSent::Internal) => Outcome::Internal("rendering"),
        };
        (outcome.status().as_u16(), outcome.label())
    }

    fn send_error(class: Class, label: &'static str) -> NotSent {
        NotSent::Failed(failure_of(SendError {
            class,
            label,
            suppress: None,
            summary: "the SMTP server answered 451".into(),
            maybe_sent: false,
            source: anyhow::anyhow!("451 try later"),
        }))
    }

    #[test]
    fn maps_each_result_to_one_status() {
        let cases = [
            (Ok(Some("<x@labrelay>".into())), (204, "sent")),
            (Err(not_sent(ComposeError::NoAddress)), (204, "skipped")),
            (
                Err(not_sent(ComposeError::InvalidAddress)),
                (422, "invalid_address"),
            ),
            (
                Err(send_error(Class::Permanent, "refused")),
                (422, "refused"),
            ),
            (
                Err(send_error(Class::Transient, "provider_error")),
                (503, "provider_error"),
            ),
            (Err(NotSent::Internal), (500, "internal_error")),
        ];
        for (result, want) in cases {
            assert_eq!(status_and_label(result), want);
        }
    }
}
