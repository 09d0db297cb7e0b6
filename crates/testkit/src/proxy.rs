//! A round-robin TCP proxy: each accepted connection goes to the next
//! backend, as a load balancer spreads connections over a service's
//! instances.
//!
//! It can also play a front end that speaks HTTP/1.1 only
//! ([`RoundRobinProxy::start_http1`]): a connection opening with HTTP/2's
//! preface (h2c with prior knowledge) is answered `400` and closed, as an
//! HTTP/1.1 server answers it. The broker then pushes over HTTP/1.1, one
//! connection per push in flight, so its pushes (and the redeliveries of
//! one message) are spread over the backends instead of all riding one
//! HTTP/2 connection to one backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// HTTP/2's connection preface, as far as it tells h2c from HTTP/1.1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// A running proxy; dropping it stops accepting (connections already
/// proxied run to their end).
pub struct RoundRobinProxy {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundRobinProxy {
    /// Proxies connections to `listener` over `backends` in turn.
    pub fn start(listener: TcpListener, backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        Self::spawn(listener, backends, false)
    }

    /// As [`start`](Self::start), answering HTTP/2's preface as an
    /// HTTP/1.1 server does.
    pub fn start_http1(listener: TcpListener, backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        Self::spawn(listener, backends, true)
    }

    fn spawn(
        listener: TcpListener,
        backends: Vec<SocketAddr>,
        http1_only: bool,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!backends.is_empty(), "a proxy needs a backend");
        let address = listener.local_addr().context("the proxy's address")?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            let mut next = 0;
            while let Ok((client, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                let backend = backends[next % backends.len()];
                next += 1;
                tokio::spawn(relay(client, backend, http1_only));
            }
        });
        Ok(RoundRobinProxy {
            address,
            accepted,
            task,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for RoundRobinProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `client` to and from `backend` until either side closes; a
/// backend that refuses the connection closes the client's.
async fn relay(mut client: TcpStream, backend: SocketAddr, http1_only: bool) {
    let mut opening = Vec::new();
    if http1_only {
        let mut buf = [0u8; H2_PREFACE.len()];
        let mut read = 0;
        // Enough to tell h2c's preface from a request line.
        while read < buf.len() && H2_PREFACE.starts_with(&buf[..read]) {
            match client.read(&mut buf[read..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
        if buf[..read] == *H2_PREFACE {
            let _ = client
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                )
                .await;
            let _ = client.shutdown().await;
            return;
        }
        opening.extend_from_slice(&buf[..read]);
    }
    let Ok(mut server) = TcpStream::connect(backend).await else {
        return;
    };
    if server.write_all(&opening).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_backend(tag: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    let _ = stream.write_all(tag).await;
                    let _ = stream.write_all(&buf[..n]).await;
                });
            }
        });
        address
    }

    async fn ask(proxy: SocketAddr, what: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        stream.write_all(what).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn connections_go_to_each_backend_in_turn_and_h2c_is_refused() {
        let backends = vec![echo_backend(b"a:").await, echo_backend(b"b:").await];
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = RoundRobinProxy::start_http1(listener, backends).unwrap();
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(ask(proxy.address(), b"POST / HTTP/1.1\r\n").await);
        }
        assert_eq!(
            answers,
            [
                b"a:POST / HTTP/1.1\r\n".to_vec(),
                b"b:POST / HTTP/1.1\r\n".to_vec(),
                b"a:POST / HTTP/1.1\r\n".to_vec()
            ]
        );
        let refused = ask(proxy.address(), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        assert!(refused.starts_with(b"HTTP/1.1 400"), "{refused:?}");
        assert_eq!(proxy.connections(), 4);
    }
}
