//! Pushes over HTTP/2 with prior knowledge (h2c), spoken through the `h2`
//! crate directly: one connection per `host:port`, shared by every push in
//! flight to it.
//!
//! reqwest (hyper's client under it) is the push client everywhere else.
//! For h2c to an endpoint known to speak it, this path is cheaper: a
//! push's HEADERS and its DATA frame are queued together and leave in one
//! write (hyper flushes the HEADERS first and sends the body from a second
//! poll), and there is no pool, dispatch channel or timer wheel entry per
//! request besides the push's own deadline. In eight paired 20 s runs of
//! `labrelay-bench` the broker's CPU per report was 20–30% lower and the
//! whole pipeline's 5–14% (docs/benchmarks.md, "Changes tried").
//!
//! Each connection is driven by a task of its own, which pings the peer
//! every [`PING_INTERVAL`] and drops the connection when a ping goes
//! [`PING_TIMEOUT`] unanswered, so a peer that vanished without closing
//! it (a host down) does not hold later pushes: the next one connects
//! afresh. A connection with no push for [`IDLE_CLOSE`] is closed too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use labrelay_runtime::serve::{Activity, InFlight};
use reqwest::header::{CONTENT_LENGTH, HeaderValue, USER_AGENT};
use tokio::net::TcpStream;

use super::PushFailure;

/// How often a push connection is pinged, and how long an answer may take
/// before the connection is dropped.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(10);
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// A connection with no push in flight for this long is closed (an
/// endpoint no subscription pushes to any more is not kept open for ever).
const IDLE_CLOSE: Duration = Duration::from_secs(90);

/// An endpoint's connection, while it has one.
#[derive(Default)]
struct Endpoint {
    /// Read by every push without waiting.
    open: Mutex<Option<Open>>,
    /// Held while a connection is made, so pushes that find none make one
    /// between them.
    connecting: tokio::sync::Mutex<()>,
}

impl Endpoint {
    fn current(&self) -> Option<Open> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A connection, and the pushes on it.
#[derive(Clone)]
struct Open {
    sender: SendRequest<Bytes>,
    activity: Arc<Activity>,
}

/// The h2c connections, by `host:port`.
pub(crate) struct H2Pushes {
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    /// Sent with every push, as reqwest's client sends its own.
    user_agent: HeaderValue,
}

impl H2Pushes {
    pub(crate) fn new(user_agent: HeaderValue) -> H2Pushes {
        H2Pushes {
            endpoints: Mutex::default(),
            user_agent,
        }
    }

    /// Sends `request` to `key` (`host:port`, from its cleartext URL) and
    /// reads the whole answer, within the request's timeout.
    pub(crate) async fn send(
        &self,
        key: &str,
        request: reqwest::Request,
    ) -> Result<reqwest::Response, PushFailure> {
        let deadline = request.timeout().copied();
        let exchange = self.exchange(key, request);
        match deadline {
            Some(deadline) => tokio::time::timeout(deadline, exchange)
                .await
                .unwrap_or(Err(PushFailure::Timeout)),
            None => exchange.await,
        }
    }

    async fn exchange(
        &self,
        key: &str,
        request: reqwest::Request,
    ) -> Result<reqwest::Response, PushFailure> {
        let request =
            http::Request::<reqwest::Body>::try_from(request).map_err(|_| PushFailure::Failed)?;
        let body = request
            .body()
            .as_bytes()
            .map(Bytes::copy_from_slice)
            .unwrap_or_default();
        let (parts, _) = request.into_parts();
        let mut head = http::Request::from_parts(parts, ());
        let headers = head.headers_mut();
        headers.insert(USER_AGENT, self.user_agent.clone());
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        // A connection that was closed or refused the stream before it was
        // processed (GOAWAY, REFUSED_STREAM) is replaced and the push sent
        // once more on a fresh one: the receiver has not seen it.
        let mut fresh = false;
        loop {
            let (sender, activity) = self.connection(key, fresh).await?;
            let _in_flight = InFlight::start(&activity);
            match round_trip(sender, head.clone(), body.clone()).await {
                Err(error) if !fresh && not_processed(&error) => fresh = true,
                Err(_) => return Err(PushFailure::Failed),
                Ok(response) => return Ok(response),
            }
        }
    }

    /// A connection to `key` ready for a new stream: the one open, unless
    /// `fresh` (it turned a push away) or it has closed, else a new one.
    async fn connection(
        &self,
        key: &str,
        fresh: bool,
    ) -> Result<(SendRequest<Bytes>, Arc<Activity>), PushFailure> {
        let endpoint = {
            let mut endpoints = self
                .endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match endpoints.get(key) {
                Some(endpoint) => endpoint.clone(),
                None => endpoints.entry(key.to_owned()).or_default().clone(),
            }
        };
        let seen = endpoint.current();
        if !fresh
            && let Some(open) = &seen
            && let Ok(ready) = open.sender.clone().ready().await
        {
            return Ok((ready, open.activity.clone()));
        }
        // Pushes to one endpoint wait for its connection being made; those
        // to other endpoints do not.
        let _connecting = endpoint.connecting.lock().await;
        // Another push may have replaced the connection meanwhile.
        if let Some(open) = endpoint.current()
            && !seen
                .as_ref()
                .is_some_and(|seen| Arc::ptr_eq(&seen.activity, &open.activity))
            && let Ok(ready) = open.sender.clone().ready().await
        {
            return Ok((ready, open.activity));
        }
        let stream = TcpStream::connect(key)
            .await
            .map_err(|_| PushFailure::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = h2::client::handshake(stream)
            .await
            .map_err(|_| PushFailure::Connect)?;
        let activity = Arc::new(Activity::new());
        tokio::spawn(drive(connection, activity.clone()));
        *endpoint.open.lock().unwrap_or_else(PoisonError::into_inner) = Some(Open {
            sender: sender.clone(),
            activity: activity.clone(),
        });
        let ready = sender.ready().await.map_err(|_| PushFailure::Failed)?;
        Ok((ready, activity))
    }
}

/// One request and its whole answer on `sender`.
async fn round_trip(
    mut sender: SendRequest<Bytes>,
    head: http::Request<()>,
    body: Bytes,
) -> Result<reqwest::Response, h2::Error> {
    let end_of_stream = body.is_empty();
    let (response, mut stream) = sender.send_request(head, end_of_stream)?;
    if !end_of_stream {
        // Queued with the HEADERS: both leave in the connection's next write.
        // Unless the connection (driven on another thread) already sent the
        // HEADERS and the peer answered and ended the stream without the
        // body: then this fails, and the answer is still in `response`.
        let _ = stream.send_data(body, true);
    }
    let (parts, mut answer) = response.await?.into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = answer.data().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            // A peer that answered before reading the whole push may end
            // the stream with RST_STREAM(NO_ERROR) to stop the rest of the
            // body: the answer stands (RFC 9113, section 8.1), as in hyper.
            Err(error) if error.reason() == Some(h2::Reason::NO_ERROR) => break,
            Err(error) => return Err(error),
        };
        let _ = answer.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Ok(reqwest::Response::from(http::Response::from_parts(
        parts, bytes,
    )))
}

/// Whether the peer turned the stream away before processing it.
fn not_processed(error: &h2::Error) -> bool {
    error.is_go_away() || error.reason() == Some(h2::Reason::REFUSED_STREAM)
}

/// Drives `connection` until it ends, a ping goes unanswered, or it has
/// been idle for [`IDLE_CLOSE`]; dropping it closes it (a push that finds
/// it closed connects afresh).
async fn drive(mut connection: h2::client::Connection<TcpStream, Bytes>, activity: Arc<Activity>) {
    // Taken once, here, so never `None`; without it the connection could
    // still be driven, only not pinged.
    let Some(mut pings) = connection.ping_pong() else {
        let _ = connection.await;
        return;
    };
    let mut connection = std::pin::pin!(connection);
    loop {
        tokio::select! {
            _ = &mut connection => return,
            () = tokio::time::sleep(PING_INTERVAL) => {}
        }
        if activity.idle_for(IDLE_CLOSE) {
            return;
        }
        let pong = tokio::time::timeout(PING_TIMEOUT, pings.ping(h2::Ping::opaque()));
        tokio::select! {
            _ = &mut connection => return,
            answered = pong => {
                if !matches!(answered, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn push(key: &str) -> reqwest::Request {
        reqwest::Client::new()
            .post(format!("http://{key}/push"))
            .body(vec![b'x'; 1024])
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// Three pushes to `key`, each expected to be answered `status`.
    async fn pushes_are_answered(key: &str, status: u16) {
        let pushes = H2Pushes::new(HeaderValue::from_static("test"));
        for _ in 0..3 {
            let answer = pushes.send(key, push(key)).await;
            assert_eq!(
                answer
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.describe()),
                Ok(status),
                "a push to a receiver that answered {status} early"
            );
        }
    }

    /// A receiver on the `h2` crate that answers `status` as soon as a
    /// push's HEADERS arrive, without reading its body (it lets in only 16
    /// bytes of it). Dropping the unread body makes h2 follow the answer
    /// with RST_STREAM(NO_ERROR), as hyper's server (and so axum) does.
    async fn h2_early_answerer(status: u16) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let key = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::Builder::new()
                .initial_window_size(16)
                .handshake::<_, Bytes>(socket)
                .await
                .unwrap();
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                drop(request);
                let answer = http::Response::builder().status(status).body(()).unwrap();
                respond.send_response(answer, true).unwrap();
            }
        });
        key
    }

    /// A receiver speaking raw HTTP/2 frames: on each push's HEADERS it
    /// writes its answer's HEADERS (`status` 204 or 503, without
    /// END_STREAM) and RST_STREAM(NO_ERROR) in one write, so the reset
    /// always reaches the pusher while the answer is still open.
    async fn raw_early_answerer(status: u16) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let key = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut preface = [0; 24];
            socket.read_exact(&mut preface).await.unwrap();
            let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
                let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
                frame.extend([kind, flags]);
                frame.extend(stream.to_be_bytes());
                frame.extend(payload);
                frame
            };
            socket.write_all(&frame(0x4, 0, 0, &[])).await.unwrap(); // SETTINGS
            let mut head = [0; 9];
            while socket.read_exact(&mut head).await.is_ok() {
                let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0; length];
                socket.read_exact(&mut payload).await.unwrap();
                let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                let mut answer = Vec::new();
                match (head[3], head[4] & 0x1) {
                    (0x4, 0) => answer = frame(0x4, 0x1, 0, &[]), // SETTINGS ACK
                    (0x1, _) => {
                        // HPACK: 204 is static entry 9; 503 a literal with
                        // the static name `:status` (entry 8).
                        let status: &[u8] = match status {
                            204 => &[0x89],
                            _ => &[0x08, 0x03, b'5', b'0', b'3'],
                        };
                        answer = frame(0x1, 0x4, stream, status); // END_HEADERS
                        answer.extend(frame(0x3, 0, stream, &0u32.to_be_bytes()));
                    }
                    _ => {}
                }
                socket.write_all(&answer).await.unwrap();
            }
        });
        key
    }

    #[tokio::test]
    async fn an_answer_followed_by_a_no_error_reset_is_the_pushes_answer() {
        for status in [204, 503] {
            pushes_are_answered(&h2_early_answerer(status).await, status).await;
            pushes_are_answered(&raw_early_answerer(status).await, status).await;
        }
    }
}
