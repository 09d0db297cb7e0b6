//! The sms-service's part of the one push handler ([`labrelay_receiver`]):
//! a report's SMS (the owner's number, parsed once, where it may go, and
//! the notice), how it is sent and how a failure classifies.
//!
//! | what happened | outcome | HTTP |
//! | --- | --- | --- |
//! | no owner phone; a number outside `SMS_ALLOWED_COUNTRIES` | `skipped` | 204 |
//! | an invalid E.164 number | `invalid_number` | 422 |
//! | the owner's number is suppressed (opted out), or Twilio says so now (21610, which suppresses it) | `suppressed` | 204 |
//! | Twilio refused the message (21211, 21614, other 4xx) | `refused` | 422 |
//! | Twilio refused our credentials or sender (401/20003, 21606, ...): an operator can fix it | `misconfigured` | 503 |
//! | Twilio 429 | `rate_limited` | 503 |
//! | Twilio 5xx | `provider_error` | 503 |
//! | no answer by the request limit | `timeout` | 503 |
//! | Twilio unreachable | `unreachable` | 503 |
//! | the outbox write failed | `outbox_error` | 503 |

use std::time::Duration;

use anyhow::Context as _;
use labrelay_contract::LabReport;
use labrelay_receiver::notify_log::{NotifyLogSetting, notification_hash};
use labrelay_receiver::{Channel, Facts, Failure, NotSent};
use labrelay_runtime::secret::Secret;
use labrelay_templates::Templates;

use crate::notice;
use crate::phone::{PhoneError, PhoneNumber};
use crate::settings::countries::AllowedCountries;
use crate::settings::{DEFAULT_TWILIO_TIMEOUT, Delivery, Settings};
use crate::transport::{SendError, Transport};
use crate::webhooks;

/// One SMS to send.
pub(crate) struct Sms {
    pub report_id: String,
    /// The Pub/Sub message's id, recorded in outbox messages.
    pub message_id: String,
    pub to: PhoneNumber,
    pub body: String,
    /// Where Twilio posts this message's delivery receipts, naming its
    /// notification: `PUBLIC_URL/twilio/status?report=ID&n=HASH`.
    pub status_callback: Option<String>,
}

/// SMS, through Twilio or into a directory outbox.
pub(crate) struct SmsChannel {
    transport: Transport,
    /// Where SMS may go (`SMS_ALLOWED_COUNTRIES`).
    allowed_countries: AllowedCountries,
    answer_within: Duration,
    templates: Templates,
    /// With Twilio, `PUBLIC_URL` and the notification log: the auth token
    /// webhooks are signed with, and where Twilio reaches them.
    webhooks: Option<(Secret, String)>,
}

impl SmsChannel {
    /// Fails on a broken template (naming its file, line and problem),
    /// invalid settings or an outbox directory that cannot be created.
    pub fn new(settings: &Settings) -> anyhow::Result<SmsChannel> {
        let templates =
            notice::templates(&settings.templates).context("checking the SMS templates")?;
        let transport = Transport::new(settings)?;
        if let Delivery::Twilio(_) = settings.delivery {
            settings.allowed_countries.log_at_start();
        }
        let webhooks = match &settings.delivery {
            Delivery::Twilio(twilio) => match (&twilio.public_url, &settings.receiver.notify_log) {
                (Some(_), NotifyLogSetting::Off) => {
                    tracing::warn!(
                        "PUBLIC_URL is set but NOTIFY_LOG is not: no delivery receipts or inbound opt-outs, which are kept in the notification log"
                    );
                    None
                }
                (Some(url), _) => Some((twilio.auth_token.clone(), url.clone())),
                (None, _) => None,
            },
            Delivery::Outbox(_) => None,
        };
        Ok(SmsChannel {
            transport,
            allowed_countries: settings.allowed_countries.clone(),
            answer_within: answer_within(&settings.delivery),
            templates,
            webhooks,
        })
    }
}

/// How long a push waits for its SMS (the Twilio request or the file
/// write) before the broker is answered 503: the Twilio timeout.
fn answer_within(delivery: &Delivery) -> Duration {
    match delivery {
        Delivery::Twilio(twilio) => twilio.timeout,
        Delivery::Outbox(_) => DEFAULT_TWILIO_TIMEOUT,
    }
}

impl Channel for SmsChannel {
    type Message = Sms;

    const NAME: &'static str = "sms";
    const NOUN: &'static str = "SMS";
    const SERVICE: &'static str = "sms-service";

    fn answer_within(&self) -> Duration {
        self.answer_within
    }

    fn render(&self, report: &LabReport, message_id: &str) -> Result<Sms, NotSent> {
        let Some(raw) = report
            .owner
            .phone
            .as_deref()
            .filter(|p| !p.trim().is_empty())
        else {
            return Err(NotSent::Skipped("the report has no owner.phone"));
        };
        let to =
            PhoneNumber::parse(raw).map_err(|error| NotSent::Failed(invalid_number(&error)))?;
        // Acknowledged, not retried: another attempt would be refused the
        // same way, and the owner may still get the email.
        if let Err(calling_code) = self.allowed_countries.check(&to) {
            tracing::warn!(
                %calling_code,
                "not sending: the owner's phone number is in a country SMS_ALLOWED_COUNTRIES does not allow"
            );
            return Err(NotSent::Skipped(
                "the owner's phone number is outside SMS_ALLOWED_COUNTRIES",
            ));
        }
        let status_callback = self.webhooks.as_ref().map(|(_, public_url)| {
            let mut url = format!("{public_url}{}?", webhooks::STATUS_PATH);
            // The notification's key in the log, as the push handler makes
            // it: a receipt attaches to it whichever send's SID it carries.
            url.push_str(
                &form_urlencoded::Serializer::new(String::new())
                    .append_pair("report", &report.id.to_string())
                    .append_pair("n", &notification_hash(report, to.as_str()))
                    .finish(),
            );
            url
        });
        Ok(Sms {
            report_id: report.id.to_string(),
            message_id: message_id.to_string(),
            body: notice::compose(&self.templates, self.templates.locale_for(report), report)
                .map_err(|error| {
                    tracing::error!(error = %error, "rendering the SMS failed");
                    NotSent::Internal
                })?,
            to,
            status_callback,
        })
    }

    fn recipient<'m>(&self, sms: &'m Sms) -> &'m str {
        sms.to.as_str()
    }

    async fn send(&self, sms: &Sms) -> Result<Option<String>, Failure> {
        self.transport
            .send(sms)
            .await
            .map_err(|error| failure_of(&error))
    }

    fn describe(&self) -> String {
        self.transport.describe()
    }

    fn webhooks(&self, facts: Option<Facts>) -> axum::Router {
        match (&self.webhooks, facts) {
            (Some((auth_token, public_url)), Some(facts)) => {
                webhooks::router(auth_token.clone(), public_url, facts)
            }
            _ => axum::Router::new(),
        }
    }
}

fn invalid_number(error: &PhoneError) -> Failure {
    let text = format!("owner.phone {error}");
    Failure::permanent("invalid_number", text.clone(), text)
}

/// Twilio's "Attempt to send to unsubscribed recipient": the owner texted
/// STOP to our sender.
const OPTED_OUT: u32 = 21610;

/// What the broker is told and the log says about a send that failed.
/// Only Twilio refusing the message itself is permanent; everything else
/// (our configuration included: an operator can fix it) is retried.
fn failure_of(error: &SendError) -> Failure {
    const RETRY_LATER: &str = "the SMS could not be sent now; retry later";
    let detail = error_chain(error);
    let mut failure = match error {
        SendError::Refused { .. } => Failure::permanent("refused", error.to_string(), detail),
        SendError::Misconfigured { .. } => Failure::transient("misconfigured", RETRY_LATER, detail),
        SendError::RateLimited { .. } => Failure::transient("rate_limited", RETRY_LATER, detail),
        SendError::Unavailable { .. } => Failure::transient("provider_error", RETRY_LATER, detail),
        // Twilio may have created the message before the request was cut.
        SendError::Timeout(_) => Failure::transient("timeout", RETRY_LATER, detail).maybe_sent(),
        SendError::Unreachable(_) => Failure::transient("unreachable", RETRY_LATER, detail),
        SendError::Outbox(_) => Failure::transient("outbox_error", RETRY_LATER, detail),
    };
    failure.provider_code = error.twilio_code();
    if let SendError::Refused {
        code: Some(code @ OPTED_OUT),
        ..
    } = error
    {
        failure = failure.suppresses(format!("twilio {code}"));
    }
    if let SendError::RateLimited { retry_after, .. } = error {
        failure.retry_after.clone_from(retry_after);
    }
    failure
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use labrelay_receiver::outcome::Outcome;

    use super::*;

    #[test]
    fn maps_every_outcome_to_one_status() {
        let failed = |error: SendError| Outcome::Failed(failure_of(&error));
        let cases = [
            (
                Outcome::Failed(invalid_number(&PhoneError::MissingPlus)),
                422,
                "invalid_number",
            ),
            (
                failed(SendError::Refused {
                    status: 400,
                    code: Some(21211),
                }),
                422,
                "refused",
            ),
            (
                failed(SendError::Refused {
                    status: 400,
                    code: Some(21610),
                }),
                422,
                "refused",
            ),
            (
                failed(SendError::Refused {
                    status: 400,
                    code: Some(21614),
                }),
                422,
                "refused",
            ),
            (
                failed(SendError::Misconfigured {
                    status: 401,
                    code: Some(20003),
                }),
                503,
                "misconfigured",
            ),
            (
                failed(SendError::RateLimited {
                    code: Some(20429),
                    retry_after: Some("5".into()),
                }),
                503,
                "rate_limited",
            ),
            (
                failed(SendError::Unavailable {
                    status: 500,
                    code: Some(20500),
                }),
                503,
                "provider_error",
            ),
            (
                failed(SendError::Timeout(Duration::from_secs(1))),
                503,
                "timeout",
            ),
            (
                failed(SendError::Outbox(std::io::Error::other("disk full"))),
                503,
                "outbox_error",
            ),
        ];
        for (outcome, status, label) in cases {
            assert_eq!(
                (outcome.status().as_u16(), outcome.label()),
                (status, label)
            );
        }
    }

    #[test]
    fn our_failures_get_a_generic_message_and_a_detailed_log() {
        let outcome = Outcome::Failed(failure_of(&SendError::Outbox(std::io::Error::other(
            "disk full",
        ))));
        assert_eq!(
            outcome.public_error("SMS").unwrap(),
            "the SMS could not be sent now; retry later"
        );
        assert_eq!(
            outcome.log_detail("SMS").unwrap(),
            "could not write the message to the outbox: disk full"
        );
        let refused = failure_of(&SendError::Refused {
            status: 400,
            code: Some(21610),
        });
        assert_eq!(
            refused.public,
            "Twilio refused the message (HTTP 400, code 21610)"
        );
        assert_eq!(refused.provider_code, Some(21610));
        assert_eq!(refused.suppress.as_deref(), Some("twilio 21610"));
        let invalid = failure_of(&SendError::Refused {
            status: 400,
            code: Some(21211),
        });
        assert_eq!(invalid.suppress, None);
        let limited = failure_of(&SendError::RateLimited {
            code: Some(20429),
            retry_after: Some("5".into()),
        });
        assert_eq!(limited.retry_after.as_deref(), Some("5"));
    }
}
