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
//! the DATA frame ends the stream itself. Over hyper's HTTP/2 client that
//! still took two writes (hyper flushes the HEADERS first) and a task per
//! connection besides the one publishing; [`UnaryPublisher`] now speaks
//! through the `h2` crate directly and drives its connection in the
//! publishing task, so HEADERS and DATA are queued before the connection
//! writes and leave in one `writev`, as from `h2load`. Against hyper's,
//! in eight interleaved pairs: the bench's CPU per message fell from
//! 25–33 to 17–21 µs and the phase ran 12–28% faster (docs/benchmarks.md,
//! "Changes tried"). The server sees a plain gRPC unary call either way.

use std::pin::Pin;

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use bytes::Bytes;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as pb;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use prost::Message as _;

const PUBLISH_PATH: &str = "/google.pubsub.v1.Publisher/Publish";

/// Connects to the `host:port` of `uri`, without Nagle's delay.
async fn connect_to(uri: &hyper::Uri) -> anyhow::Result<(String, tokio::net::TcpStream)> {
    let authority = uri
        .authority()
        .with_context(|| format!("{uri} has no host"))?
        .to_string();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_nodelay(true)?;
    Ok((authority, stream))
}

/// One HTTP/2 connection to a Pub/Sub server, publishing one request at a
/// time. The connection is driven by the task that publishes, not a task
/// of its own, so an answer wakes the one task that waits for it.
pub(super) struct UnaryPublisher {
    sender: h2::client::SendRequest<Bytes>,
    connection: Pin<Box<h2::client::Connection<tokio::net::TcpStream, Bytes>>>,
    uri: hyper::Uri,
}

impl UnaryPublisher {
    /// Connects to `endpoint` (`http://host:port`), cleartext HTTP/2.
    pub(super) async fn connect(endpoint: &str) -> anyhow::Result<Self> {
        let uri: hyper::Uri = format!("{}{PUBLISH_PATH}", endpoint.trim_end_matches('/'))
            .parse()
            .with_context(|| format!("{endpoint} is not a URL"))?;
        let (authority, stream) = connect_to(&uri).await?;
        let (sender, connection) = h2::client::handshake(stream)
            .await
            .with_context(|| format!("HTTP/2 handshake with {authority}"))?;
        Ok(UnaryPublisher {
            sender,
            connection: Box::pin(connection),
            uri,
        })
    }

    /// Publishes `request` and waits for the server's answer: the ids of
    /// the published messages, one per message, or the gRPC error.
    pub(super) async fn publish(&mut self, request: &Framed) -> anyhow::Result<()> {
        let UnaryPublisher {
            sender,
            connection,
            uri,
        } = self;
        let call = async {
            std::future::poll_fn(|cx| sender.poll_ready(cx)).await?;
            let head = hyper::Request::post(uri.clone())
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())?;
            // HEADERS and the DATA frame that ends the stream are queued
            // before the connection is polled, so they leave in one write.
            let (response, mut body) = sender.send_request(head, false)?;
            body.send_data(request.bytes.clone(), true)?;
            let (head, mut body) = response.await?.into_parts();
            ensure!(head.status == 200, "HTTP status {}", head.status);
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk?;
                let _ = body.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            let trailers = body.trailers().await?;
            anyhow::Ok((head, bytes, trailers))
        };
        let (head, bytes, trailers) = tokio::select! {
            answer = call => answer?,
            closed = connection.as_mut() => {
                closed.context("the HTTP/2 connection failed")?;
                bail!("the server closed the HTTP/2 connection");
            }
        };
        // In the trailers, or in the headers of an answer that has nothing
        // else ("trailers-only").
        let grpc = |name: &str| {
            trailers
                .as_ref()
                .and_then(|t| t.get(name))
                .or_else(|| head.headers.get(name))
                .cloned()
        };
        let status = grpc("grpc-status");
        if status.as_ref().is_none_or(|s| s != "0") {
            let message = grpc("grpc-message");
            bail!("publish failed: grpc-status {status:?}: {message:?}");
        }
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
        let (authority, stream) = connect_to(&server).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A broker of our own on a free port, with topic `projects/p/topics/reports`
    /// and a subscription to it, so a publish is stored.
    async fn broker() -> (tempfile::TempDir, String, tokio::sync::oneshot::Sender<()>) {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let broker =
            labrelay_broker::Broker::open(labrelay_broker::BrokerConfig::new(dir.path(), addr))
                .unwrap();
        broker
            .create_topic(pb::Topic {
                name: "projects/p/topics/reports".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        broker
            .create_subscription(pb::Subscription {
                name: "projects/p/subscriptions/email".into(),
                topic: "projects/p/topics/reports".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(broker.serve(listener, async {
            let _ = stopped.await;
        }));
        (dir, format!("http://{addr}"), stop)
    }

    fn one_message_to(topic: &str) -> Framed {
        Framed::new(&pb::PublishRequest {
            topic: topic.into(),
            messages: vec![pb::PubsubMessage {
                data: vec![7; 1024],
                ..Default::default()
            }],
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_grpc_publish_is_answered_with_its_id_and_a_refusal_is_an_error() {
        let (_dir, endpoint, _stop) = broker().await;
        let mut client = UnaryPublisher::connect(&endpoint).await.unwrap();
        let stored = one_message_to("projects/p/topics/reports");
        for _ in 0..3 {
            client.publish(&stored).await.unwrap();
        }
        // A missing topic is answered with HTTP 200 and grpc-status 5
        // (NOT_FOUND): counting that as published would inflate the figure.
        let error = client
            .publish(&one_message_to("projects/p/topics/missing"))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("grpc-status"),
            "unexpected error: {error:#}"
        );
        // The connection is still good after a refusal.
        client.publish(&stored).await.unwrap();
    }

    #[tokio::test]
    async fn a_grpc_publish_fails_when_the_server_goes_away() {
        let (_dir, endpoint, stop) = broker().await;
        let mut client = UnaryPublisher::connect(&endpoint).await.unwrap();
        client
            .publish(&one_message_to("projects/p/topics/reports"))
            .await
            .unwrap();
        drop(stop);
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                if let Err(error) = client
                    .publish(&one_message_to("projects/p/topics/reports"))
                    .await
                {
                    break error;
                }
            }
        })
        .await;
        assert!(
            outcome.is_ok(),
            "publishing kept succeeding after the server stopped"
        );
    }

    #[tokio::test]
    async fn a_rest_publish_is_answered_with_its_id_and_a_refusal_is_an_error() {
        let (_dir, endpoint, _stop) = broker().await;
        let mut client = RestPublisher::connect(&endpoint, "projects/p/topics/reports", &[7; 1024])
            .await
            .unwrap();
        client.publish().await.unwrap();
        let mut missing =
            RestPublisher::connect(&endpoint, "projects/p/topics/missing", &[7; 1024])
                .await
                .unwrap();
        let error = missing.publish().await.unwrap_err();
        assert!(
            error.to_string().contains("404"),
            "unexpected error: {error:#}"
        );
    }
}
