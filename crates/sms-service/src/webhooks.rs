//! Twilio's calls to the sms-service, both signed by Twilio and served
//! without the push-token check:
//!
//! - `POST /twilio/status`: a message's delivery receipt (`MessageSid`,
//!   `MessageStatus`, `ErrorCode`), recorded in the notification log by
//!   SID against the notification the callback URL names (`report`, `n`:
//!   the report id and the notification's content hash, set when the
//!   message was sent). A status never goes backwards; a final one is
//!   counted once; with `RECEIPTS_TOPIC` set, each status recorded is
//!   also published there for the broker's console (see
//!   [`labrelay_receiver::facts`]). A message that failed with 21610
//!   (unsubscribed) suppresses its number.
//! - `POST /twilio/inbound`: a text to the clinic's number. The whole
//!   message STOP, STOPALL, UNSUBSCRIBE, CANCEL, END or QUIT suppresses the
//!   sender's number; START, YES or UNSTOP lifts that. Anything else is
//!   ignored. Answered with an empty TwiML response: Twilio sends its own
//!   confirmation of an opt-out.
//!
//! A request whose `X-Twilio-Signature` is not Base64(HMAC-SHA1(auth
//! token, URL + each POST parameter's name and value, sorted by name)) is
//! refused 403 and nothing is recorded. The URL is the one Twilio called:
//! `PUBLIC_URL` and the request's path and query, never the `Host` header.
//! The signature is compared in constant time.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use labrelay_receiver::Facts;
use labrelay_receiver::notify_log::{DeliveryStatus, Receipt, ReceiptApplied, now_ms};
use labrelay_runtime::secret::Secret;
use sha1::Sha1;

use crate::phone::PhoneNumber;

/// The status callback's path under `PUBLIC_URL`.
pub(crate) const STATUS_PATH: &str = "/twilio/status";
/// The inbound messages' path under `PUBLIC_URL`.
pub(crate) const INBOUND_PATH: &str = "/twilio/inbound";

/// Twilio's "unsubscribed recipient".
const OPTED_OUT: u32 = 21610;

/// Whole messages that opt out, and that opt back in (Twilio's defaults).
const STOP_WORDS: [&str; 6] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];
const START_WORDS: [&str; 3] = ["START", "YES", "UNSTOP"];

struct Webhooks {
    auth_token: Secret,
    /// `PUBLIC_URL`, without a trailing `/`.
    public_url: String,
    facts: Facts,
}

/// The two routes.
pub(crate) fn router(auth_token: Secret, public_url: &str, facts: Facts) -> Router {
    let state = Arc::new(Webhooks {
        auth_token,
        public_url: public_url.trim_end_matches('/').to_string(),
        facts,
    });
    Router::new()
        .route(STATUS_PATH, post(status))
        .route(INBOUND_PATH, post(inbound))
        .with_state(state)
}

/// `X-Twilio-Signature` of a request to `url` with these form parameters.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(signing_mac(auth_token, url, params).finalize().into_bytes())
}

fn signing_mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Whether `claimed` (the header's value) signs this request, compared in
/// constant time.
fn verify(auth_token: &str, url: &str, params: &[(String, String)], claimed: &str) -> bool {
    let Ok(claimed) = STANDARD.decode(claimed.trim()) else {
        return false;
    };
    signing_mac(auth_token, url, params)
        .verify_slice(&claimed)
        .is_ok()
}

impl Webhooks {
    /// The form's parameters, if Twilio signed this request.
    fn signed(&self, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Option<Vec<(String, String)>> {
        let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let claimed = headers.get("x-twilio-signature")?.to_str().ok()?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", self.public_url);
        verify(self.auth_token.expose(), &url, &params, claimed).then_some(params)
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn forbidden() -> Response {
    tracing::warn!("refused a Twilio webhook call whose signature does not match");
    (StatusCode::FORBIDDEN, "invalid X-Twilio-Signature").into_response()
}

fn unavailable(error: &anyhow::Error, what: &str) -> Response {
    tracing::warn!(error = format!("{error:#}"), "{what} failed");
    (StatusCode::SERVICE_UNAVAILABLE, "retry later").into_response()
}

/// `POST /twilio/status`.
async fn status(
    State(hooks): State<Arc<Webhooks>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(params) = hooks.signed(&uri, &headers, &body) else {
        return forbidden();
    };
    let (Some(sid), Some(raw_status)) = (
        param(&params, "MessageSid"),
        param(&params, "MessageStatus"),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            "MessageSid and MessageStatus are required",
        )
            .into_response();
    };
    let Some(status) = DeliveryStatus::parse(raw_status) else {
        // A status of a message we do not send (received, read, ...).
        tracing::debug!(status = raw_status, "ignored a status callback");
        return StatusCode::NO_CONTENT.into_response();
    };
    let error_code = param(&params, "ErrorCode").and_then(|c| c.trim().parse::<u32>().ok());
    let report_id = query_param(&uri, "report");
    let receipt = Receipt {
        provider_id: sid.to_string(),
        channel: hooks.facts.channel().to_string(),
        report_id: report_id.clone(),
        content_hash: query_param(&uri, "n"),
        status,
        error_code,
        at_ms: now_ms(),
    };
    let applied = match hooks.facts.receipt(receipt).await {
        Ok(applied) => applied,
        Err(error) => return unavailable(&error, "recording a delivery receipt"),
    };
    if error_code == Some(OPTED_OUT)
        && let Some(to) = param(&params, "To").and_then(|to| PhoneNumber::parse(to).ok())
        && let Err(error) = hooks.facts.suppress(to.as_str(), "twilio 21610").await
    {
        return unavailable(&error, "recording an opt-out");
    }
    let stale = matches!(applied, ReceiptApplied::Stale { .. });
    tracing::info!(
        report_id = report_id.as_deref(),
        twilio_sid = sid,
        status = status.as_str(),
        error_code,
        stale,
        "delivery receipt"
    );
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /twilio/inbound`.
async fn inbound(
    State(hooks): State<Arc<Webhooks>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(params) = hooks.signed(&uri, &headers, &body) else {
        return forbidden();
    };
    let text = param(&params, "Body")
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase();
    let from = param(&params, "From").and_then(|from| PhoneNumber::parse(from).ok());
    let change = match (from, text.as_str()) {
        (Some(from), word) if STOP_WORDS.contains(&word) => hooks
            .facts
            .suppress(from.as_str(), &format!("inbound {word}"))
            .await
            .map(|()| "opted out"),
        (Some(from), word) if START_WORDS.contains(&word) => hooks
            .facts
            .lift(from.as_str())
            .await
            .map(|_| "opted back in"),
        _ => Ok("ignored"),
    };
    match change {
        // The keyword only: never the number or any other text.
        Ok(change) => tracing::info!(
            keyword = if change == "ignored" {
                None
            } else {
                Some(text.as_str())
            },
            "inbound message: {change}"
        ),
        Err(error) => return unavailable(&error, "recording an inbound opt-out"),
    }
    (
        [(header::CONTENT_TYPE, "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Twilio's documented example (twilio.com/docs/usage/security).
    #[test]
    fn signs_like_twilio() {
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let token = "12345";
        assert_eq!(
            signature(token, url, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert!(verify(token, url, &params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
        let mut reordered = params.clone();
        reordered.reverse();
        assert!(verify(
            token,
            url,
            &reordered,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        for forged in ["", "not base64!", "1/KCTR6DLpKmkAf8muzZqo1nDgQ="] {
            assert!(!verify(token, url, &params, forged), "{forged}");
        }
        assert!(!verify(
            "other",
            url,
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!verify(
            token,
            "https://mycompany.com/myapp.php",
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }
}
