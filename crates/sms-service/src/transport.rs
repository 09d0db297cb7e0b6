//! The way a message leaves (Twilio or the outbox), and how sending it can
//! fail.

use std::time::Duration;

use crate::channel::Sms;
use crate::outbox::Outbox;
use crate::settings::{Delivery, Settings};
use crate::twilio::TwilioClient;

/// Why a message was not sent. `channel` decides which of these the broker
/// should retry; none of the messages carries personal data.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Twilio will never send this message (invalid, opted-out or
    /// non-mobile number, or a request Twilio calls malformed).
    #[error("Twilio refused the message (HTTP {status}, code {})", code_text(*.code))]
    Refused { status: u16, code: Option<u32> },
    /// Twilio refused our credentials, account or sender: an operator can
    /// fix that, after which the same message goes through.
    #[error("Twilio refused our configuration (HTTP {status}, code {})", code_text(*.code))]
    Misconfigured { status: u16, code: Option<u32> },
    #[error("Twilio is rate limiting (code {}, Retry-After {})", code_text(*.code), retry_after.as_deref().unwrap_or("not given"))]
    RateLimited {
        code: Option<u32>,
        retry_after: Option<String>,
    },
    /// A 5xx, or an answer that makes no sense for this request.
    #[error("Twilio failed (HTTP {status}, code {})", code_text(*.code))]
    Unavailable { status: u16, code: Option<u32> },
    #[error("Twilio did not answer within {0:?}")]
    Timeout(Duration),
    #[error("could not reach Twilio")]
    Unreachable(#[source] reqwest::Error),
    #[error("could not write the message to the outbox")]
    Outbox(#[source] std::io::Error),
}

impl SendError {
    /// The Twilio error code, when Twilio gave one.
    pub fn twilio_code(&self) -> Option<u32> {
        match self {
            SendError::Refused { code, .. }
            | SendError::Misconfigured { code, .. }
            | SendError::RateLimited { code, .. }
            | SendError::Unavailable { code, .. } => *code,
            SendError::Timeout(_) | SendError::Unreachable(_) | SendError::Outbox(_) => None,
        }
    }
}

fn code_text(code: Option<u32>) -> String {
    code.map_or_else(|| "none".to_string(), |c| c.to_string())
}

pub(crate) enum Transport {
    Twilio(TwilioClient),
    Outbox(Outbox),
}

impl Transport {
    pub fn new(settings: &Settings) -> anyhow::Result<Transport> {
        settings.validate()?;
        Ok(match &settings.delivery {
            Delivery::Twilio(twilio) => Transport::Twilio(TwilioClient::new(twilio)?),
            Delivery::Outbox(outbox) => Transport::Outbox(Outbox::new(outbox)?),
        })
    }

    /// Sends `sms`; on success, Twilio's message SID or the outbox file name.
    pub async fn send(&self, sms: &Sms) -> Result<Option<String>, SendError> {
        match self {
            Transport::Twilio(client) => {
                client
                    .send(&sms.to, &sms.body, sms.status_callback.as_deref())
                    .await
            }
            Transport::Outbox(outbox) => outbox.write(sms).await.map(Some),
        }
    }

    /// Where messages go, for the start-up log line (no secrets).
    pub fn describe(&self) -> String {
        match self {
            Transport::Twilio(client) => format!("Twilio at {}", client.api_base()),
            Transport::Outbox(outbox) => format!("outbox {}", outbox.dir().display()),
        }
    }
}
