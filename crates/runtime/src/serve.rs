//! Serving a router on a bound listener, with the timeouts `axum::serve`
//! lacks, so that a client cannot hold a connection (a file descriptor and
//! a task) forever by saying nothing:
//!
//! - a new connection must send its first byte within
//!   [`HEADER_READ_TIMEOUT`] (hyper reads it to tell HTTP/1.1 from HTTP/2,
//!   and neither protocol's own timeout starts before it);
//! - HTTP/1.1: a request's headers must be complete within the same time,
//!   also between the requests of a kept-alive connection (slowloris);
//! - HTTP/2: the connection is pinged whenever it has been silent that
//!   long, and closed when a ping goes as long unanswered. Every HTTP/2
//!   stack answers pings by itself, so a live client (the broker's push
//!   connection, a gRPC client) keeps its connection; a peer that is gone,
//!   or a socket that only pretends to be a client, does not.
//!
//! At most [`MAX_CONNECTIONS`] connections are served at once; beyond
//! that, new ones wait in the kernel's accept queue until one closes, so a
//! client that opens connections without end runs the process out of
//! neither file descriptors (outbox files and SQLite need some too) nor
//! memory. While every slot is taken, connections with no request in
//! flight (for a second or more) are closed gracefully, once a second, so
//! that HTTP/2 clients that answer pings but send nothing cannot keep the
//! slots from clients with work; a connection with a request in flight or
//! a streaming answer open (StreamingPull) is never closed for that, and
//! HTTP/2 clients open a new connection when they next need one. Bodies
//! are bounded by [`crate::limits`]' request timeout.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::origin_guard::AllowedHosts;

/// How long a client may take to send a request's headers, a new
/// connection its first byte, and an HTTP/2 peer to answer a ping.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections are served at once, at most. Far more than a
/// clinic's labs and the broker's push connections need, and half the
/// usual default limit of 1,024 open files.
pub const MAX_CONNECTIONS: usize = 512;

/// While every connection slot is taken, idle connections are closed this
/// often (a connection busy at one round may be idle at the next).
const RECLAIM_EVERY: Duration = Duration::from_secs(1);
/// How long a connection must have had no request in flight to count as
/// idle.
const RECLAIM_IDLE: Duration = Duration::from_secs(1);

/// What [`serve`] allows a connection (tests shrink it).
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_read_timeout: Duration,
    max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and waits for the connections in flight to finish their
/// requests. Every request passes [`crate::origin_guard`] first: requests a
/// web page made a browser send are refused, and so are hosts beyond
/// loopback that `allowed_hosts` does not name.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    allowed_hosts: AllowedHosts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Infallible> {
    let limits = Limits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        max_connections: MAX_CONNECTIONS,
    };
    serve_with(listener, allowed_hosts.guard(router), shutdown, limits).await
}

async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> Result<(), Infallible> {
    let header_read_timeout = limits.header_read_timeout;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_read_timeout)
        .keep_alive_timeout(header_read_timeout);
    let builder = Arc::new(builder);
    // Tells every connection to finish what it is serving and close; also
    // ends the wait for the first byte of connections not yet served.
    let (stopping, stop_waiting) = watch::channel(false);
    // Bumped while every connection slot is taken: connections with no
    // request in flight then close (see `serve_connection`).
    let (reclaim, reclaim_wanted) = watch::channel(0u64);
    let mut shutdown = std::pin::pin!(shutdown);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut said_full = false;
    loop {
        let permit = match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                said_full = false;
                permit
            }
            Err(_) => {
                if !said_full {
                    said_full = true;
                    tracing::warn!(
                        max = limits.max_connections,
                        "connection limit reached; idle connections are closed, \
                         new ones wait until one closes"
                    );
                }
                let acquired = loop {
                    reclaim.send_modify(|generation| *generation += 1);
                    tokio::select! {
                        // Never closed, so never `Err`.
                        permit = connections.clone().acquire_owned() => break permit.ok(),
                        // Connections busy a moment ago may be idle now.
                        () = tokio::time::sleep(RECLAIM_EVERY) => {}
                        () = &mut shutdown => break None,
                    }
                };
                let Some(permit) = acquired else { break };
                permit
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let router = router.clone();
        let stopping = stop_waiting.clone();
        let reclaim = reclaim_wanted.clone();
        tokio::spawn(async move {
            // Held for as long as the connection lives.
            let _permit = permit;
            serve_connection(
                &builder,
                stream,
                router,
                stopping,
                reclaim,
                header_read_timeout,
            )
            .await;
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    // Every connection holds a permit until it has closed.
    let _ = connections
        .acquire_many(u32::try_from(limits.max_connections).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

/// Serves one connection until it closes: once its client has spoken
/// (within `header_read_timeout`), until the client closes it, the
/// protocol's timeouts do, the server stops (`stopping`: what is in flight
/// is finished first), or it has no request in flight while the server
/// wants slots back (`reclaim`). An HTTP/2 client that answers pings
/// would otherwise keep an unused connection, and its slot, for ever.
async fn serve_connection(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    router: Router,
    mut stopping: watch::Receiver<bool>,
    mut reclaim: watch::Receiver<u64>,
    header_read_timeout: Duration,
) {
    let spoke = tokio::select! {
        spoke = first_byte(&stream, header_read_timeout) => spoke,
        () = stopped(&mut stopping) => false,
    };
    if !spoke {
        return;
    }
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        ServiceExt::<hyper::Request<hyper::body::Incoming>>::map_future(router, move |response| {
            let guard = InFlight::start(&activity);
            async move {
                let response: Result<Response, Infallible> = response.await;
                // Counted until the body is done: a streaming answer
                // (StreamingPull, a long push) keeps its connection busy.
                response.map(|response| {
                    response.map(|body| {
                        Body::new(body.map_frame(move |frame| {
                            let _in_flight = &guard;
                            frame
                        }))
                    })
                })
            }
        })
    };
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    let mut connection = std::pin::pin!(connection);
    reclaim.mark_unchanged();
    let closing = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            () = stopped(&mut stopping) => {
                connection.as_mut().graceful_shutdown();
                break connection.as_mut().await;
            }
            Ok(()) = reclaim.changed() => {
                if activity.idle_for(RECLAIM_IDLE) {
                    tracing::debug!("closing an idle connection: every connection slot is taken");
                    connection.as_mut().graceful_shutdown();
                    break connection.as_mut().await;
                }
            }
        }
    };
    if let Err(error) = closing {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Completes once the server is stopping (also if it is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// What a connection is doing: requests in flight, and when it last
/// finished one (or started, before its first). The server's connections
/// keep one to find the idle ones to reclaim; the broker's push
/// connections keep one to close those no push has used for a while.
pub struct Activity {
    in_flight: AtomicUsize,
    since: Instant,
    /// Milliseconds from `since` to the end of the last request.
    last_done: AtomicU64,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity::new()
    }
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            since: Instant::now(),
            last_done: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// No request in flight, and none for at least `quiet`. The quiet time
    /// spares a connection whose request has arrived but is not yet being
    /// served.
    pub fn idle_for(&self, quiet: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self
                .now()
                .saturating_sub(self.last_done.load(Ordering::Acquire))
                >= u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX)
    }
}

/// One request on a connection, counted until dropped.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    pub fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_done.store(self.0.now(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A port on 127.0.0.1 that is free now, for a server that must be told
/// its address before it starts (a child process, a push endpoint named in
/// a token's audience). It is picked below the kernel's ephemeral range: a
/// port from that range, once released, can become the local end of any
/// outgoing connection on the machine before the server binds it ("address
/// in use"); below it, only another explicit bind can take it.
pub fn free_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher as _, Hasher as _};
    const LOWEST: u16 = 10_000;
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if first_ephemeral > LOWEST {
        let span = u64::from(first_ephemeral - LOWEST);
        for _ in 0..64 {
            // A fresh random seed per call: a random number without a
            // dependency.
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            let port = LOWEST + (random % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether `stream` has something to read within `timeout` (false at its
/// end, on an error, or when the time is up). Nothing is consumed.
async fn first_byte(stream: &TcpStream, timeout: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, stream.peek(&mut byte)).await,
        Ok(Ok(1))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn closes_connections_that_trickle_headers_and_drains_on_shutdown() {
        let (addr, stop, server) = start(Duration::from_millis(300));

        let answer = get_once(addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "a connection without complete headers stays open"
        );

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// `GET /` over HTTP/1.1, the connection closed after the answer.
    const GET_AND_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

    /// `GET /` over HTTP/1.1 on a connection of its own; the whole answer.
    async fn get_once(addr: std::net::SocketAddr) -> String {
        let mut connection = tokio::net::TcpStream::connect(addr).await.unwrap();
        connection.write_all(GET_AND_CLOSE).await.unwrap();
        let mut answer = String::new();
        connection.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// A server's address, the sender that stops it, and its task.
    type Started = (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), Infallible>>,
    );

    /// Starts `serve_with` on a free port; the sender stops it.
    fn start(header_read_timeout: Duration) -> Started {
        start_with(Limits {
            header_read_timeout,
            max_connections: MAX_CONNECTIONS,
        })
    }

    fn start_with(limits: Limits) -> Started {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(
            TcpListener::from_std(listener).unwrap(),
            Router::new()
                .route("/", get(|| async { "ok" }))
                // A request that stays in flight until its client goes.
                .route("/hold", get(std::future::pending::<&'static str>)),
            async {
                let _ = stopped.await;
            },
            limits,
        ));
        (addr, stop, server)
    }

    /// Reads until the server closes `stream`; fails if it is still open
    /// after five seconds.
    async fn assert_closed(mut stream: tokio::net::TcpStream, what: &str) {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "{what}: still open after 5 s");
    }

    #[test]
    fn free_ports_are_bindable_and_outside_the_ephemeral_range() {
        let first_ephemeral: u16 =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
        let ports: std::collections::HashSet<u16> = (0..20).map(|_| free_port().unwrap()).collect();
        assert!(ports.len() > 1, "always the same port: {ports:?}");
        for port in ports {
            assert!(port < first_ephemeral, "{port} is in the ephemeral range");
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }

    #[tokio::test]
    async fn closes_connections_that_say_nothing_in_either_protocol() {
        let (addr, _stop, _server) = start(Duration::from_millis(300));

        // Not a byte: hyper would wait for one forever to pick a protocol.
        let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_closed(silent, "a connection that sends nothing").await;

        // HTTP/2's preface and settings, then nothing, pings unanswered.
        let mut mute = tokio::net::TcpStream::connect(addr).await.unwrap();
        mute.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        assert_closed(mute, "an HTTP/2 connection that answers no ping").await;
    }

    #[tokio::test]
    async fn keeps_an_idle_http2_connection_whose_client_answers_pings() {
        use http_body_util::{BodyExt as _, Empty};
        let (addr, _stop, _server) = start(Duration::from_millis(200));
        let (mut client, connection) = http2_client(addr).await;

        // Idle for several ping rounds (every 200 ms, 200 ms to answer):
        // the client's HTTP/2 stack answers them, so the same connection
        // still serves. Real time on purpose: paused time would jump past
        // the ping timeout while the answer is still on the socket.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !connection.is_finished(),
            "the server closed a live connection"
        );
        let get = hyper::Request::get(format!("http://{addr}/"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let second = client.send_request(get).await.unwrap();
        assert_eq!(second.into_body().collect().await.unwrap().to_bytes(), "ok");
    }

    #[tokio::test]
    async fn a_connection_that_has_not_spoken_does_not_hold_up_shutdown() {
        let (addr, stop, server) = start(Duration::from_secs(60));
        let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Served connections are tracked from their first byte; make sure
        // this one was accepted before stopping.
        get_once(addr).await;

        stop.send(()).unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(
            stopped.is_ok(),
            "shutdown waited for a connection that never sent a byte"
        );
        assert_closed(silent, "the silent connection after shutdown").await;
    }

    #[tokio::test]
    async fn serves_at_most_max_connections_and_the_next_when_one_closes() {
        let (addr, _stop, _server) = start_with(Limits {
            header_read_timeout: Duration::from_secs(60),
            max_connections: 2,
        });
        let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let mut answer = [0u8; 256];
        let mut kept = Vec::new();
        for _ in 0..2 {
            // Served, then kept alive (idle, within the header timeout).
            let mut connection = tokio::net::TcpStream::connect(addr).await.unwrap();
            connection.write_all(request).await.unwrap();
            let n = connection.read(&mut answer).await.unwrap();
            assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
            kept.push(connection);
        }

        // The kernel accepts the third, but nobody serves it yet.
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        third.write_all(request).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut answer)).await;
        assert!(
            early.is_err(),
            "a third connection was served beyond the limit"
        );

        // One closes: the third is served.
        drop(kept.pop());
        let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut answer))
            .await
            .expect("the waiting connection was not served after one closed")
            .unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    }

    /// An HTTP/2 connection over which `GET /` was answered once; the
    /// client and the task driving its connection.
    async fn http2_client(
        addr: std::net::SocketAddr,
    ) -> (
        hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
        tokio::task::JoinHandle<hyper::Result<()>>,
    ) {
        use http_body_util::{BodyExt as _, Empty};
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut client, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        let connection = tokio::spawn(connection);
        let request = hyper::Request::get(format!("http://{addr}/"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let answer = client.send_request(request).await.unwrap();
        assert_eq!(answer.into_body().collect().await.unwrap().to_bytes(), "ok");
        (client, connection)
    }

    #[tokio::test]
    async fn idle_connections_give_up_their_slots_when_all_are_taken() {
        let (addr, _stop, _server) = start_with(Limits {
            header_read_timeout: Duration::from_secs(60),
            max_connections: 2,
        });
        // Two HTTP/2 clients that answer pings and then say nothing: before,
        // they held both slots for ever.
        let (_first, first) = http2_client(addr).await;
        let (_second, second) = http2_client(addr).await;

        let answer = tokio::time::timeout(Duration::from_secs(10), get_once(addr))
            .await
            .expect("a new connection waited behind idle ones");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The idle ones were told to go (GOAWAY) and their connections ended.
        for (connection, which) in [(first, "first"), (second, "second")] {
            tokio::time::timeout(Duration::from_secs(5), connection)
                .await
                .unwrap_or_else(|_| panic!("the {which} idle connection is still open"))
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test]
    async fn connections_with_a_request_in_flight_keep_their_slots() {
        use http_body_util::Empty;
        let (addr, _stop, _server) = start_with(Limits {
            header_read_timeout: Duration::from_secs(60),
            max_connections: 2,
        });
        let mut holders = Vec::new();
        for _ in 0..2 {
            let (mut client, connection) = http2_client(addr).await;
            let hold = hyper::Request::get(format!("http://{addr}/hold"))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let pending = tokio::spawn(client.send_request(hold));
            holders.push((client, connection, pending));
        }

        // Several rounds of reclaiming pass; neither busy connection closes,
        // so the newcomer is not served.
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        third.write_all(GET_AND_CLOSE).await.unwrap();
        let mut answer = Vec::new();
        let early = tokio::time::timeout(
            RECLAIM_EVERY * 3 + RECLAIM_IDLE,
            third.read_to_end(&mut answer),
        )
        .await;
        assert!(
            early.is_err(),
            "a busy connection was closed to serve another"
        );
        for (_, connection, pending) in &holders {
            assert!(!connection.is_finished(), "a busy connection was closed");
            assert!(!pending.is_finished(), "a request in flight was ended");
        }

        // One client goes (dropping a task's handle would not end it): its
        // slot is the newcomer's.
        let (_, connection, pending) = holders.pop().unwrap();
        pending.abort();
        connection.abort();
        tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer))
            .await
            .expect("the newcomer was not served after a slot freed")
            .unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
}
