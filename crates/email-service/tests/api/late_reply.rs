//! An SMTP server that answers a message's final `.` too late: the attempt
//! stops waiting at its data timeout, and its connection must not carry the next
//! message, which would read every reply one command late and take DATA's
//! 354 for the acceptance of its data.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use labrelay_testkit::metrics::sample;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{PATIENCE, TestApp, envelope, full_report, settings, spawn_app};

/// A few lines of SMTP: the first message's `.` is answered only when the
/// client sends its next command on that connection (so a client that
/// reuses it is one reply behind from then on), the second message is
/// refused with 554 at the end of its data, every later one is accepted.
struct LateServer {
    addr: SocketAddr,
    /// The `X-Report-Id` of each message accepted, in order.
    accepted: watch::Receiver<Vec<String>>,
}

struct Shared {
    messages: AtomicUsize,
    accepted: watch::Sender<Vec<String>>,
}

impl LateServer {
    async fn start() -> LateServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, accepted_rx) = watch::channel(Vec::new());
        let shared = Arc::new(Shared {
            messages: AtomicUsize::new(0),
            accepted,
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(converse(stream, Arc::clone(&shared)));
            }
        });
        LateServer {
            addr,
            accepted: accepted_rx,
        }
    }

    fn accepted(&self) -> Vec<String> {
        self.accepted.borrow().clone()
    }
}

async fn converse(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 late.test ESMTP\r\n").await?;
    // The reply owed for the last message's data, and its report id.
    let mut owed: Option<(&[u8], String)> = None;
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            // Closed before its reply was sent: that message is not taken.
            return Ok(());
        }
        if let Some((reply, report_id)) = owed.take() {
            write.write_all(reply).await?;
            shared.accepted.send_modify(|ids| ids.push(report_id));
        }
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 late.test\r\n",
            "MAIL" | "RCPT" | "NOOP" | "RSET" => b"250 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            "DATA" => {
                write.write_all(b"354 end with .\r\n").await?;
                let report_id = read_data(&mut read).await?;
                match shared.messages.fetch_add(1, Ordering::SeqCst) {
                    0 => {
                        owed = Some((b"250 OK, late\r\n", report_id));
                        continue;
                    }
                    1 => b"554 refused\r\n",
                    _ => {
                        shared.accepted.send_modify(|ids| ids.push(report_id));
                        b"250 OK\r\n"
                    }
                }
            }
            _ => b"500 what?\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// Reads a message up to its final `.`; its `X-Report-Id`.
async fn read_data(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<String> {
    let mut report_id = String::new();
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == ".\r\n" {
            return Ok(report_id);
        }
        if let Some(id) = line.strip_prefix("X-Report-Id: ") {
            report_id = id.trim().to_string();
        }
    }
}

/// Waits until the service has counted `n` failed notifications: an
/// attempt answered 503 at the send timeout is counted when it ends.
async fn wait_for_failed(app: &TestApp, n: f64) {
    let series = r#"labrelay_notifications_total{channel="email",outcome="failed_transient"}"#;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let scrape = app.get("/metrics").await;
        let scrape = String::from_utf8(scrape.body).unwrap();
        if sample(&scrape, series) >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed notification counted:\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_message_refused_after_a_late_reply_is_not_recorded_and_is_sent_later() {
    let server = LateServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = format!("sqlite://{}", dir.path().join("n.sqlite3").display());
    let url = format!("smtp://{}", server.addr);
    // Answered 503 at 0.5 s; the attempt stops waiting for the answer to
    // its data after 1 s.
    let app = spawn_app(settings(&[
        ("SMTP_URL", &url),
        ("NOTIFY_LOG", &log),
        ("SMTP_TIMEOUT_SECS", "0.5"),
        ("SMTP_DATA_TIMEOUT_SECS", "1"),
    ]))
    .await;

    let first = app
        .push(&envelope(&full_report("LR-LATE-1"), "5001", 1))
        .await;
    assert_eq!(first.status(), 503, "{}", first.head);
    wait_for_failed(&app, 1.0).await;

    // The next message: refused at the end of its data.
    let report = full_report("LR-LATE-2");
    let refused = app.push(&envelope(&report, "5002", 1)).await;
    assert_eq!(
        (refused.status(), refused.header("x-labrelay-outcome")),
        (422, Some("failed")),
        "the server refused this message: {}",
        refused.head
    );
    assert_eq!(server.accepted(), Vec::<String>::new());

    // Redelivered: nothing recorded it as sent, so it goes out now.
    let redelivered = app.push(&envelope(&report, "5002", 2)).await;
    assert_eq!(
        (
            redelivered.status(),
            redelivered.header("x-labrelay-outcome")
        ),
        (204, Some("sent")),
        "{}",
        redelivered.head
    );
    assert_eq!(server.accepted(), ["LR-LATE-2"]);

    // And now it is recorded.
    let again = app.push(&envelope(&report, "5002", 3)).await;
    assert_eq!(again.header("x-labrelay-outcome"), Some("duplicate"));
    assert_eq!(server.accepted(), ["LR-LATE-2"]);
    app.shutdown().await.unwrap();
}
