//! A real HTTP server playing Twilio's Messages API, for tests.
//!
//! It listens on `127.0.0.1` (port 0) in a task of the caller's tokio
//! runtime, so the services under test reach it over loopback whether they
//! run in the same process or as separate `labrelay` processes. It checks
//! what Twilio checks, in Twilio's order: the path
//! `/2010-04-01/Accounts/{sid}/Messages.json` (404, code 20404), the method
//! (405, 20004), HTTP Basic credentials (401, 20003), the form fields `To`
//! (21604; 21211 when not E.164), `From` or `MessagingServiceSid` (21603) and
//! `Body` (21602; 21617 over 1600 characters), each as a 400 with Twilio's
//! error JSON. A valid request is then answered according to the [`Mode`]:
//! accepted ones are recorded and answered 201 with a Message resource, at
//! once or, in [`Mode::Slow`], late.
//!
//! Segments are counted here independently of the sms-service, so a test can
//! check the service's own counting against `SentSms::num_segments`.
//!
//! Like Twilio, it calls a message's `StatusCallback` (form-encoded
//! `MessageSid`, `MessageStatus`, `ErrorCode`, `To`, ... signed with
//! `X-Twilio-Signature`, computed here independently of the sms-service),
//! once per status of the [`set_callbacks`](TwilioStandIn::set_callbacks)
//! plan, in its order, duplicates included: by default `sent` then
//! `delivered`. [`inbound`](TwilioStandIn::inbound) posts a text to the
//! clinic's number as Twilio would.

use std::collections::VecDeque;
use std::hash::{BuildHasher as _, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{FromRequest as _, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use tokio::sync::watch;

/// How the stand-in answers a valid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 201 with a queued Message resource; the message is recorded.
    Accept,
    /// 429, code 20429, with `Retry-After` when given.
    TooManyRequests { retry_after: Option<u64> },
    /// 500, code 20500.
    ServerError,
    /// `status` with Twilio error `code`, e.g. 400 and 21211 (invalid
    /// number), 21610 (unsubscribed recipient) or 21614 (not a mobile).
    Reject { status: u16, code: u32 },
    /// Never answers (until the stand-in is dropped).
    Hang,
    /// Accepts, like [`Mode::Accept`], after this long. Like Twilio, it
    /// goes on with a request whose client stopped waiting: the message is
    /// recorded (and so awaitable) when the time is up, answered or not.
    Slow(Duration),
    /// Accepts and records the message, answers 201 with its headers
    /// (`Content-Length` of the whole resource, padded to 1 MiB) and then
    /// closes the connection halfway through the body: Twilio created the
    /// message, and its client cannot read the answer.
    CutBody,
}

/// A message the stand-in accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentSms {
    /// The `SM...` SID it answered with.
    pub sid: String,
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    /// Counted by the stand-in: 160 GSM-7 septets / 70 UCS-2 units in one.
    pub num_segments: u32,
    /// When the stand-in accepted it.
    pub accepted_at: SystemTime,
    /// The `StatusCallback` it was sent with.
    pub status_callback: Option<String>,
}

struct Shared {
    account_sid: String,
    auth_token: String,
    mode: Mutex<Mode>,
    /// Answers for the next requests, before `mode` applies again.
    script: Mutex<VecDeque<Mode>>,
    requests: watch::Sender<usize>,
    messages: watch::Sender<Vec<SentSms>>,
    /// The statuses each accepted message's callback is called with.
    callbacks: Mutex<Vec<Callback>>,
    /// The HTTP status of every callback call, in order.
    callback_answers: watch::Sender<Vec<u16>>,
    stopping: watch::Sender<bool>,
}

/// The running stand-in. Dropping it stops the server and releases
/// requests held by [`Mode::Hang`].
pub struct TwilioStandIn {
    shared: Arc<Shared>,
    address: SocketAddr,
}

impl TwilioStandIn {
    /// Starts a stand-in that accepts exactly these credentials.
    pub async fn start(account_sid: &str, auth_token: &str) -> anyhow::Result<TwilioStandIn> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the Twilio stand-in")?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
            mode: Mutex::new(Mode::Accept),
            script: Mutex::new(VecDeque::new()),
            requests: watch::Sender::new(0),
            messages: watch::Sender::new(Vec::new()),
            callbacks: Mutex::new(vec![
                Callback::status("sent"),
                Callback::status("delivered"),
            ]),
            callback_answers: watch::Sender::new(Vec::new()),
            stopping: watch::Sender::new(false),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let mut stopping = shared.stopping.subscribe();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stopping.wait_for(|s| *s).await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await;
        });
        Ok(TwilioStandIn { shared, address })
    }

    /// `http://127.0.0.1:PORT`, the value for `TWILIO_API_BASE`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// How valid requests are answered from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// The next `n` valid requests are answered with `mode`, then the mode
    /// set with [`set_mode`](Self::set_mode) applies again.
    pub fn fail_next(&self, n: usize, mode: Mode) {
        self.shared
            .script
            .lock()
            .unwrap()
            .extend(std::iter::repeat_n(mode, n));
    }

    /// The statuses each message accepted from now on is reported with,
    /// in this order (late, repeated or out of order as a test likes).
    pub fn set_callbacks(&self, plan: Vec<Callback>) {
        *self.shared.callbacks.lock().unwrap() = plan;
    }

    /// The HTTP status of every status callback call so far.
    pub fn callback_answers(&self) -> Vec<u16> {
        self.shared.callback_answers.borrow().clone()
    }

    /// Waits until `n` status callbacks were answered; returns the answers.
    pub async fn wait_for_callback_answers(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<u16>> {
        let mut answers = self.shared.callback_answers.subscribe();
        match tokio::time::timeout(timeout, answers.wait_for(|a| a.len() >= n)).await {
            Ok(Ok(answers)) => Ok(answers.clone()),
            _ => anyhow::bail!(
                "{} of {n} status callbacks were answered within {timeout:?}",
                self.callback_answers().len()
            ),
        }
    }

    /// `X-Twilio-Signature` of a request to `url` with `params`, signed
    /// with this stand-in's auth token.
    pub fn sign(&self, url: &str, params: &[(&str, &str)]) -> String {
        sign(&self.shared.auth_token, url, params)
    }

    /// Posts `params` to `url` as Twilio posts a webhook, with
    /// `signature` (a forged one) or else a valid one; the HTTP status.
    pub async fn post_webhook(
        &self,
        url: &str,
        params: &[(&str, &str)],
        signature: Option<&str>,
    ) -> anyhow::Result<u16> {
        let signature = signature.map_or_else(|| self.sign(url, params), str::to_string);
        let response = reqwest::Client::new()
            .post(url)
            .header("X-Twilio-Signature", signature)
            .form(params)
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    /// `from` texts `body` to the clinic's number: Twilio's inbound
    /// message webhook at `url`, signed. The HTTP status.
    pub async fn inbound(&self, url: &str, from: &str, body: &str) -> anyhow::Result<u16> {
        let account = self.shared.account_sid.clone();
        let params = [
            ("AccountSid", account.as_str()),
            ("MessageSid", "SMinbound0000000000000000000000000"),
            ("From", from),
            ("To", "+15005550006"),
            ("Body", body),
            ("NumMedia", "0"),
        ];
        self.post_webhook(url, &params, None).await
    }

    /// The messages accepted so far, in order.
    pub fn messages(&self) -> Vec<SentSms> {
        self.shared.messages.borrow().clone()
    }

    /// Every request received so far, valid or not, answered or not.
    pub fn requests(&self) -> usize {
        *self.shared.requests.borrow()
    }

    /// Waits until at least `n` messages were accepted; returns them all.
    pub async fn wait_for_messages(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<SentSms>> {
        let mut messages = self.shared.messages.subscribe();
        match tokio::time::timeout(timeout, messages.wait_for(|m| m.len() >= n)).await {
            Ok(Ok(messages)) => Ok(messages.clone()),
            _ => anyhow::bail!(
                "the Twilio stand-in accepted {} of {n} expected messages within {timeout:?}",
                self.messages().len()
            ),
        }
    }

    /// Waits until at least `n` requests arrived (accepted or not).
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> anyhow::Result<usize> {
        let mut requests = self.shared.requests.subscribe();
        match tokio::time::timeout(timeout, requests.wait_for(|r| *r >= n)).await {
            Ok(Ok(count)) => Ok(*count),
            _ => anyhow::bail!(
                "the Twilio stand-in received {} of {n} expected requests within {timeout:?}",
                self.requests()
            ),
        }
    }
}

impl Drop for TwilioStandIn {
    fn drop(&mut self) {
        self.shared.stopping.send_replace(true);
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.requests.send_modify(|n| *n += 1);

    let path: Vec<&str> = request.uri().path().split('/').collect();
    let path_sid = match path.as_slice() {
        ["", "2010-04-01", "Accounts", sid, "Messages.json"] => sid.to_string(),
        _ => {
            return twilio_error(
                StatusCode::NOT_FOUND,
                20404,
                "The requested resource was not found",
            );
        }
    };
    if request.method() != Method::POST {
        return twilio_error(StatusCode::METHOD_NOT_ALLOWED, 20004, "Method not allowed");
    }
    if !authorized(request.headers(), &shared) || path_sid != shared.account_sid {
        let mut response = twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
        return response;
    }
    // Without a form content type Twilio sees no parameters at all.
    let params = match Form::<Vec<(String, String)>>::from_request(request, &()).await {
        Ok(Form(params)) => params,
        Err(_) => Vec::new(),
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let (Some(to), from, service, body) = (
        param("To"),
        param("From"),
        param("MessagingServiceSid"),
        param("Body"),
    ) else {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        );
    };
    if from.is_none() && service.is_none() {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' phone number is required.",
        );
    }
    let Some(body) = body else {
        return twilio_error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    };
    let callback = param("StatusCallback");
    if body.chars().count() > 1600 {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    if !is_e164(&to) {
        // Like Twilio, the message quotes the number.
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21211,
            &format!("Invalid 'To' Phone Number: {to}"),
        );
    }

    let scripted = shared.script.lock().unwrap().pop_front();
    let mode = scripted.unwrap_or_else(|| shared.mode.lock().unwrap().clone());
    match mode {
        Mode::Accept | Mode::CutBody => {}
        Mode::TooManyRequests { retry_after } => {
            let mut response =
                twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return response;
        }
        Mode::ServerError => {
            return twilio_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                20500,
                "Internal Server Error",
            );
        }
        Mode::Reject { status, code } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return twilio_error(status, code, reject_message(code));
        }
        Mode::Hang => {
            let mut stopping = shared.stopping.subscribe();
            let _ = stopping.wait_for(|s| *s).await;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Mode::Slow(delay) => {
            // On a task, so that a client giving up does not cancel it.
            let shared = Arc::clone(&shared);
            let accepting = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                accept(&shared, to, from, service, body, callback)
            });
            return accepting
                .await
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
    }
    let cut = mode == Mode::CutBody;
    let response = accept(&shared, to, from, service, body, callback);
    if cut {
        cut_body(response).await
    } else {
        response
    }
}

/// `response` announcing its whole length (`Content-Length`), of which
/// the server sends half and then closes the connection.
///
/// The resource is padded with leading whitespace (valid JSON) to 1 MiB,
/// so that the half sent is more than hyper buffers (about 400 KiB): it
/// writes the head and that half before it finds the body short, and
/// then closes the connection. With a small body the head would still be
/// in the buffer at that moment and the client would see no answer at all.
async fn cut_body(response: Response) -> Response {
    const PADDED: usize = 1 << 20;
    let (mut parts, body) = response.into_parts();
    let resource = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut padded = vec![b' '; PADDED.saturating_sub(resource.len())];
    padded.extend_from_slice(&resource);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(padded.len()));
    padded.truncate(padded.len() / 2);
    // Through a stream, so that the body's own length is unknown and the
    // header is what the server goes by.
    let half = axum::body::Body::from(padded);
    Response::from_parts(
        parts,
        axum::body::Body::from_stream(half.into_data_stream()),
    )
}

/// Records the message and answers 201 with its Message resource.
fn accept(
    shared: &Shared,
    to: String,
    from: Option<String>,
    service: Option<String>,
    body: String,
    callback: Option<String>,
) -> Response {
    let sent = SentSms {
        sid: message_sid(),
        num_segments: segments(&body),
        to,
        from,
        messaging_service_sid: service,
        body,
        accepted_at: SystemTime::now(),
        status_callback: callback.clone(),
    };
    let resource = message_resource(&shared.account_sid, &sent);
    if let Some(url) = callback {
        let plan = shared.callbacks.lock().unwrap().clone();
        tokio::spawn(call_back(
            shared.auth_token.clone(),
            shared.account_sid.clone(),
            shared.callback_answers.clone(),
            url,
            sent.clone(),
            plan,
        ));
    }
    shared.messages.send_modify(|m| m.push(sent));
    (StatusCode::CREATED, Json(resource)).into_response()
}

/// One status callback call: the status, and Twilio's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub status: &'static str,
    pub error_code: Option<u32>,
}

impl Callback {
    pub fn status(status: &'static str) -> Callback {
        Callback {
            status,
            error_code: None,
        }
    }

    /// `undelivered` or `failed` with this error code (30003, 21610, ...).
    pub fn error(status: &'static str, code: u32) -> Callback {
        Callback {
            status,
            error_code: Some(code),
        }
    }
}

/// Calls `url` once per status of `plan`, in order, after the 201 went
/// out, each call signed as Twilio signs it.
async fn call_back(
    auth_token: String,
    account_sid: String,
    answers: watch::Sender<Vec<u16>>,
    url: String,
    sms: SentSms,
    plan: Vec<Callback>,
) {
    let client = reqwest::Client::new();
    let sender = sms.from.clone().unwrap_or_default();
    for callback in plan {
        let code = callback.error_code.map(|c| c.to_string());
        let mut params = vec![
            ("AccountSid", account_sid.as_str()),
            ("ApiVersion", "2010-04-01"),
            ("From", sender.as_str()),
            ("MessageSid", sms.sid.as_str()),
            ("MessageStatus", callback.status),
            ("SmsSid", sms.sid.as_str()),
            ("SmsStatus", callback.status),
            ("To", sms.to.as_str()),
        ];
        if let Some(code) = &code {
            params.push(("ErrorCode", code));
        }
        let status = client
            .post(&url)
            .header("X-Twilio-Signature", sign(&auth_token, &url, &params))
            .form(&params)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        answers.send_modify(|a| a.push(status));
    }
}

/// Base64(HMAC-SHA1(auth token, URL + each parameter's name and value,
/// sorted by name)): Twilio's `X-Twilio-Signature`.
pub fn sign(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    use hmac::Mac as _;
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

fn authorized(headers: &HeaderMap, shared: &Shared) -> bool {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
        return false;
    };
    decoded == format!("{}:{}", shared.account_sid, shared.auth_token).as_bytes()
}

fn is_e164(to: &str) -> bool {
    to.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

fn reject_message(code: u32) -> &'static str {
    match code {
        21211 => "Invalid 'To' Phone Number",
        21610 => "Attempt to send to unsubscribed recipient",
        21612 => "The 'To' phone number is not currently reachable via SMS",
        21614 => "'To' number is not a valid mobile number",
        21408 => {
            "Permission to send an SMS has not been enabled for the region indicated by the 'To' number"
        }
        21606 => {
            "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination/account"
        }
        _ => "The request was rejected",
    }
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

/// Twilio's Message resource as the 2010 API returns it on creation
/// (numbers such as `num_segments` are strings there, dates RFC 2822).
fn message_resource(account_sid: &str, sms: &SentSms) -> serde_json::Value {
    let now = rfc2822(SystemTime::now());
    let uri = format!("/2010-04-01/Accounts/{account_sid}/Messages/{}", sms.sid);
    json!({
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": sms.body,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": sms.from,
        "messaging_service_sid": sms.messaging_service_sid,
        "num_media": "0",
        "num_segments": sms.num_segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sms.sid,
        "status": if sms.from.is_some() { "queued" } else { "accepted" },
        "subresource_uris": {"media": format!("{uri}/Media.json")},
        "to": sms.to,
        "uri": format!("{uri}.json"),
    })
}

/// `SM` and 32 hex digits: random per process, a counter within it.
fn message_sid() -> String {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| RandomState::new().hash_one(SystemTime::now()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("SM{process:016x}{n:016x}")
}

/// Segments as a carrier counts them; see the sms-service's `segments`
/// module for the rules (this is an independent implementation).
pub fn segments(body: &str) -> u32 {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENDED: &str = "\u{0C}^{}\\[~]|€";
    let septets: Option<usize> = body
        .chars()
        .map(|c| {
            if BASIC.contains(c) {
                Some(1)
            } else if EXTENDED.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (units, single, multi) = match septets {
        Some(septets) => (septets, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    if units <= single {
        1
    } else {
        units.div_ceil(multi) as u32
    }
}

/// `Tue, 25 Nov 2026 16:05:00 +0000`.
fn rfc2822(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {h:02}:{m:02}:{s:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates_like_twilio() {
        assert_eq!(rfc2822(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_622_700);
        assert_eq!(rfc2822(t), "Wed, 25 Nov 2026 16:05:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc2822(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn counts_segments() {
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        assert_eq!(segments(&"ç".repeat(70)), 1);
        assert_eq!(segments(&"🐶".repeat(36)), 2);
    }

    #[test]
    fn sids_look_like_twilio_sids() {
        let (a, b) = (message_sid(), message_sid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 34);
        assert!(a.starts_with("SM") && a[2..].bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[tokio::test]
    async fn a_cut_body_is_answered_201_and_cannot_be_read_but_the_message_exists() {
        let twilio = TwilioStandIn::start("AC1", "token").await.unwrap();
        twilio.fail_next(1, Mode::CutBody);
        let response = reqwest::Client::new()
            .post(format!(
                "{}/2010-04-01/Accounts/AC1/Messages.json",
                twilio.base_url()
            ))
            .basic_auth("AC1", Some("token"))
            .form(&[
                ("To", "+15550001234"),
                ("From", "+15550009999"),
                ("Body", "hi"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert!(response.bytes().await.is_err(), "the body was readable");
        assert_eq!(twilio.messages().len(), 1);
    }
}
