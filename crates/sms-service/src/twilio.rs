//! The Twilio Messages API client: one form-encoded POST per message.
//!
//! Twilio has no idempotency key for creating messages, so a request cut
//! off after Twilio took the message, its claim released, would be sent
//! again by the broker's redelivery. A request is therefore not cut off at
//! `TWILIO_TIMEOUT_SECS`: the push is answered 503 then (see
//! [`labrelay_receiver`]), and
//! the request goes on to
//! [`attempt_limit`](labrelay_receiver::notify_log::attempt_limit), so its real outcome is
//! recorded (or its claim released) while the redelivery waits. A 429 or
//! 5xx is Twilio refusing: nothing was sent, and the retry sends once. A
//! request cut off at the limit, or whose connection breaks after the
//! message went out, may still text the owner twice; for a "your results
//! are ready" notice a rare duplicate is preferred to a lost one.

use std::time::Duration;

use labrelay_receiver::notify_log::attempt_limit;
use reqwest::header::RETRY_AFTER;
use reqwest::{StatusCode, Url};

use crate::phone::PhoneNumber;
use labrelay_runtime::secret::Secret;

use crate::settings::{TwilioSender, TwilioSettings};
use crate::transport::SendError;

/// Twilio codes that mean our account, credentials or sender are wrong
/// rather than this message: 20003 authentication, 20404 no such account,
/// 21212 invalid `From`, 21408 region not enabled, 21606 `From` cannot send
/// SMS, 21608 unverified recipient on a trial account.
const CONFIGURATION_CODES: &[u32] = &[20003, 20404, 21212, 21408, 21606, 21608];

/// Connecting may take this long at most, so that a dead host fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) struct TwilioClient {
    http: reqwest::Client,
    api_base: String,
    messages_url: Url,
    account_sid: String,
    auth_token: Secret,
    sender: TwilioSender,
    /// [`attempt_limit`] of the timeout.
    limit: Duration,
}

impl TwilioClient {
    pub fn new(settings: &TwilioSettings) -> anyhow::Result<TwilioClient> {
        let mut messages_url = Url::parse(&settings.api_base)?;
        messages_url
            .path_segments_mut()
            .map_err(|()| anyhow::anyhow!("TWILIO_API_BASE cannot be a base URL"))?
            .pop_if_empty()
            .extend([
                "2010-04-01",
                "Accounts",
                &settings.account_sid,
                "Messages.json",
            ]);
        let limit = attempt_limit(settings.timeout);
        let http = reqwest::Client::builder()
            .timeout(limit)
            .connect_timeout(CONNECT_TIMEOUT.min(settings.timeout))
            // A redirect would turn the POST into a GET; treat it as an error.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("labrelay-sms-service/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(TwilioClient {
            http,
            api_base: settings.api_base.clone(),
            messages_url,
            account_sid: settings.account_sid.clone(),
            auth_token: settings.auth_token.clone(),
            sender: settings.sender.clone(),
            limit,
        })
    }

    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// Creates the message, asking for its delivery receipts at
    /// `status_callback` when given; returns its SID (`SM...`) when Twilio
    /// gives one.
    pub async fn send(
        &self,
        to: &PhoneNumber,
        body: &str,
        status_callback: Option<&str>,
    ) -> Result<Option<String>, SendError> {
        let sender = match &self.sender {
            TwilioSender::From(from) => ("From", from.as_str()),
            TwilioSender::MessagingService(sid) => ("MessagingServiceSid", sid.as_str()),
        };
        let mut form = vec![("To", to.as_str()), sender, ("Body", body)];
        if let Some(url) = status_callback {
            form.push(("StatusCallback", url));
        }
        let response = self
            .http
            .post(self.messages_url.clone())
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .form(&form)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            // A 2xx is Twilio's word that the message was created, read
            // or not: counting it as not sent would send it again.
            Err(error) if status.is_success() => {
                tracing::warn!(
                    http_status = status.as_u16(),
                    error = error.without_url().to_string(),
                    "Twilio accepted the message but its answer could not be read; \
                     counted as sent, without its SID"
                );
                return Ok(None);
            }
            Err(error) => return Err(self.transport_error(error)),
        };
        let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        let field = |name: &str| json.as_ref().and_then(|j| j.get(name));

        if status.is_success() {
            let sid = field("sid").and_then(|s| s.as_str()).map(str::to_string);
            tracing::debug!(
                twilio_sid = sid.as_deref(),
                twilio_status = field("status").and_then(|s| s.as_str()),
                num_segments = field("num_segments").and_then(|s| s.as_str()),
                "Twilio accepted the message"
            );
            return Ok(sid);
        }
        let code = field("code")
            .and_then(|c| c.as_u64())
            .and_then(|c| u32::try_from(c).ok());
        // Twilio's message often quotes the phone number: debug level only.
        tracing::debug!(
            http_status = status.as_u16(),
            twilio_code = code,
            twilio_message = field("message").and_then(|m| m.as_str()),
            "Twilio refused the request"
        );
        Err(classify(status, code, retry_after))
    }

    fn transport_error(&self, error: reqwest::Error) -> SendError {
        if error.is_timeout() {
            SendError::Timeout(self.limit)
        } else {
            SendError::Unreachable(error.without_url())
        }
    }
}

/// What an error answer from Twilio means for this message. A 502 or 504
/// (a gateway in front of the API, which may have passed the request on)
/// is retried like every 5xx: possibly one duplicate SMS rather than a lost
/// one (docs/reliability.md).
pub(crate) fn classify(
    status: StatusCode,
    code: Option<u32>,
    retry_after: Option<String>,
) -> SendError {
    let status_code = status.as_u16();
    match (status_code, code) {
        (429, _) | (_, Some(20429)) => SendError::RateLimited { code, retry_after },
        (500..=599 | 408, _) => SendError::Unavailable {
            status: status_code,
            code,
        },
        (_, Some(c)) if CONFIGURATION_CODES.contains(&c) => SendError::Misconfigured {
            status: status_code,
            code,
        },
        (401 | 403 | 404 | 405 | 300..=399, _) => SendError::Misconfigured {
            status: status_code,
            code,
        },
        (400..=499, _) => SendError::Refused {
            status: status_code,
            code,
        },
        _ => SendError::Unavailable {
            status: status_code,
            code,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_twilio_answers() {
        #[derive(Debug, PartialEq)]
        enum Class {
            Refused,
            Misconfigured,
            RateLimited,
            Unavailable,
        }
        let cases = [
            (429, Some(20429), Class::RateLimited),
            (429, None, Class::RateLimited),
            (500, Some(20500), Class::Unavailable),
            (502, None, Class::Unavailable),
            (503, Some(20503), Class::Unavailable),
            (408, None, Class::Unavailable),
            (400, Some(21211), Class::Refused),
            (400, Some(21610), Class::Refused),
            (400, Some(21614), Class::Refused),
            (400, Some(21612), Class::Refused),
            (400, Some(21604), Class::Refused),
            (400, Some(21617), Class::Refused),
            (400, None, Class::Refused),
            (422, None, Class::Refused),
            (401, Some(20003), Class::Misconfigured),
            (401, None, Class::Misconfigured),
            (403, None, Class::Misconfigured),
            (404, Some(20404), Class::Misconfigured),
            (400, Some(21212), Class::Misconfigured),
            (400, Some(21606), Class::Misconfigured),
            (400, Some(21608), Class::Misconfigured),
            (400, Some(21408), Class::Misconfigured),
            (301, None, Class::Misconfigured),
            (100, None, Class::Unavailable),
        ];
        for (status, code, want) in cases {
            let got = match classify(StatusCode::from_u16(status).unwrap(), code, None) {
                SendError::Refused { .. } => Class::Refused,
                SendError::Misconfigured { .. } => Class::Misconfigured,
                SendError::RateLimited { .. } => Class::RateLimited,
                SendError::Unavailable { .. } => Class::Unavailable,
                other => panic!("{other}"),
            };
            assert_eq!(got, want, "HTTP {status} code {code:?}");
        }
    }

    #[test]
    fn builds_the_messages_url_under_the_base() {
        let url = |base: &str| {
            let settings = TwilioSettings {
                account_sid: "AC123".into(),
                auth_token: Secret::new("t"),
                sender: TwilioSender::From("+15551230000".into()),
                api_base: base.into(),
                timeout: Duration::from_secs(1),
                public_url: None,
            };
            TwilioClient::new(&settings)
                .unwrap()
                .messages_url
                .to_string()
        };
        let want = "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages.json";
        assert_eq!(url("https://api.twilio.com"), want);
        assert_eq!(url("https://api.twilio.com/"), want);
        assert_eq!(
            url("http://127.0.0.1:9/twilio/"),
            "http://127.0.0.1:9/twilio/2010-04-01/Accounts/AC123/Messages.json"
        );
    }
}
