//! Lean clients for one call, `Publisher.Publish`, one request at a time on
//! a connection of their own: what `--broker`'s "32 clients × 1 message"
//! phases drive the server with, over gRPC ([`UnaryPublisher`]) and over
//! REST ([`RestPublisher`]).
//!
//! tonic's client streams every request body: its HEADERS, its one DATA
//! frame and an empty DATA frame that ends the stream went out as three
//! writes, and the server read them as up to three segments. On the two
//! cores the clients share with the server, that was the load generator
//! spending CPU the server under test could have had (47% of the bench's
//! own CPU was in `writev`). Here the whole request is known up front, so
//! the DATA frame ends the stream itself: two writes (hyper flushes the
//! HEADERS first), measured about 7% faster in that phase. The server sees
//! a plain gRPC unary call either way.

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use bytes::Bytes;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;

const PUBLISH_PATH: &str = "/google.pubsub.v1.Publisher/Publish";

/// Connects to the `host:port` of `uri`, without Nagle's delay.
async fn connect_to(uri: &hyper::Uri) -> anyhow::Result<(String, TokioIo<tokio::net::TcpStream>)> {
    let authority = uri
        .authority()
        .with_context(|| format!("{uri} has no host"))?
        .to_string();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_nodelay(true)?;
    Ok((authority, TokioIo::new(stream)))
}

/// One HTTP/2 connection to a Pub/Sub server, publishing one request at a
/// time.
pub(super) struct UnaryPublisher {
    sender: SendRequest<Full<Bytes>>,
    uri: hyper::Uri,
}

impl UnaryPublisher {
    /// Connects to `endpoint` (`http://host:port`), cleartext HTTP/2.
    pub(super) async fn connect(endpoint: &str) -> anyhow::Result<Self> {
        let uri: hyper::Uri = format!("{}{PUBLISH_PATH}", endpoint.trim_end_matches('/'))
            .parse()
            .with_context(|| format!("{endpoint} is not a URL"))?;
        let (authority, io) = connect_to(&uri).await?;
        let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .with_context(|| format!("HTTP/2 handshake with {authority}"))?;
        tokio::spawn(connection);
        Ok(UnaryPublisher { sender, uri })
    }

    /// Publishes `request` and waits for the server's answer: the ids of
    /// the published messages, one per message, or the gRPC error.
    pub(super) async fn publish(&mut self, request: &Framed) -> anyhow::Result<()> {
        let http_request = hyper::Request::post(self.uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(request.bytes.clone()))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(http_request).await?;
        let (head, body) = response.into_parts();
        ensure!(head.status == 200, "HTTP status {}", head.status);
        let body = body.collect().await?;
        // In the trailers, or in the headers of an answer that has nothing
        // else ("trailers-only").
        let grpc = |name: &str| {
            body.trailers()
                .and_then(|t| t.get(name))
                .or_else(|| head.headers.get(name))
                .cloned()
        };
        let status = grpc("grpc-status");
        if status.as_ref().is_none_or(|s| s != "0") {
            let message = grpc("grpc-message");
            bail!("publish failed: grpc-status {status:?}: {message:?}");
        }
        let bytes = body.to_bytes();
        ensure!(bytes.len() >= 5, "publish answered without a message");
        let response = pb::PublishResponse::decode(&bytes[5..])?;
        ensure!(
            response.message_ids.len() == request.messages,
            "{} message ids for {} messages",
            response.message_ids.len(),
            request.messages
        );
        Ok(())
    }
}

/// A `PublishRequest` encoded once as a gRPC message (uncompressed flag,
/// big-endian length, protobuf), to be sent any number of times.
#[derive(Clone)]
pub(super) struct Framed {
    bytes: Bytes,
    messages: usize,
}

impl Framed {
    pub(super) fn new(request: &pb::PublishRequest) -> anyhow::Result<Framed> {
        let len = request.encoded_len();
        let mut framed = Vec::with_capacity(5 + len);
        framed.push(0);
        framed.extend_from_slice(&u32::try_from(len)?.to_be_bytes());
        request.encode(&mut framed)?;
        Ok(Framed {
            bytes: framed.into(),
            messages: request.messages.len(),
        })
    }
}

/// One HTTP/1.1 connection to a Pub/Sub server's REST API, publishing the
/// same one-message request (`POST /v1/{topic}:publish`, JSON, the data in
/// base64) one at a time.
pub(super) struct RestPublisher {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// `/v1/{topic}:publish`, sent in origin form.
    path: hyper::Uri,
    /// `host:port`, for the `Host` header.
    authority: String,
    body: Bytes,
}

/// The answer to a REST publish.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestPublished {
    message_ids: Vec<String>,
}

impl RestPublisher {
    /// Connects to `endpoint` (`http://host:port`) to publish `data` to
    /// `topic` (`projects/P/topics/T`).
    pub(super) async fn connect(endpoint: &str, topic: &str, data: &[u8]) -> anyhow::Result<Self> {
        let server: hyper::Uri = endpoint
            .parse()
            .with_context(|| format!("{endpoint} is not a URL"))?;
        let (authority, io) = connect_to(&server).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .with_context(|| format!("HTTP/1.1 handshake with {authority}"))?;
        tokio::spawn(connection);
        let body = serde_json::json!({
            "messages": [{ "data": base64::engine::general_purpose::STANDARD.encode(data) }]
        });
        let path = format!("/v1/{topic}:publish")
            .parse()
            .with_context(|| format!("{topic} is not a topic name"))?;
        Ok(RestPublisher {
            sender,
            path,
            authority,
            body: serde_json::to_vec(&body)?.into(),
        })
    }

    /// Publishes the message and waits for the server's answer: its id, or
    /// the error.
    pub(super) async fn publish(&mut self) -> anyhow::Result<()> {
        let request = hyper::Request::post(self.path.clone())
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .body(Full::new(self.body.clone()))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        ensure!(
            status == 200,
            "HTTP status {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let published: RestPublished =
            serde_json::from_slice(&body).context("reading the publish answer")?;
        ensure!(
            published.message_ids.len() == 1,
            "{} message ids for one message",
            published.message_ids.len()
        );
        Ok(())
    }
}
