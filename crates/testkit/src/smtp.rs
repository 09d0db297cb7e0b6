//! A real SMTP server for tests: `smtp_sink.py` (Python's aiosmtpd) run as a
//! child process.
//!
//! The sink stores what it accepts in a Maildir and reports each accepted
//! message on its stdout; [`SmtpSink`] turns those lines into events, so a
//! test awaits deliveries instead of polling. Its answers are switched at
//! any time with [`SmtpSink::set_mode`] (a control file the sink reads
//! before each RCPT and DATA), and it can be stopped and restarted on the
//! same port to play "SMTP down, then back".
//!
//! Needs `python3` (or `$PYTHON`) with `aiosmtpd`
//! (`python3 -m pip install aiosmtpd==1.4.6`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;

const SCRIPT: &str = include_str!("../smtp_sink.py");

/// How long the sink may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How the sink answers RCPT and DATA.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// 250: store the message.
    Accept,
    /// 451, a temporary failure.
    TempFail,
    /// 550, a permanent failure (5.7.1, rejected by policy).
    PermFail,
    /// 550 5.1.1 to RCPT: no such mailbox.
    NoSuchMailbox,
    /// 451 to the end of DATA only, once the client has sent the whole
    /// message; RCPT is accepted.
    TempFailAfterData,
    /// Wait this long before answering DATA, then accept. The message is kept
    /// even when the client gave up waiting, as a real server would keep it.
    Slow(Duration),
}

impl Mode {
    fn control_line(self) -> String {
        match self {
            Mode::Accept => "accept".into(),
            Mode::TempFail => "451".into(),
            Mode::PermFail => "550".into(),
            Mode::NoSuchMailbox => "550-mailbox".into(),
            Mode::TempFailAfterData => "451-data".into(),
            Mode::Slow(delay) => format!("slow {}", delay.as_secs_f64()),
        }
    }
}

/// A running (or stopped) aiosmtpd process with its Maildir. Dropping it
/// kills the process and removes the Maildir.
pub struct SmtpSink {
    // Declared first so that the process dies before its directory goes.
    process: Option<Running>,
    dir: tempfile::TempDir,
    port: u16,
    auth: Option<(String, String)>,
    accepted: watch::Sender<usize>,
    data_received: watch::Sender<usize>,
    rejected: watch::Sender<usize>,
    /// The Message-IDs refused once their data had arrived, in order.
    refused_data: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The Message-IDs held in [`Mode::Slow`], in order.
    slowed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

struct Running {
    child: Child,
    // Held open: the sink exits when its stdin closes, so it cannot outlive
    // this test process even if the process is killed without unwinding.
    _stdin: ChildStdin,
}

impl SmtpSink {
    /// Starts a sink that accepts everything, on a free port.
    pub async fn start() -> anyhow::Result<SmtpSink> {
        SmtpSink::start_inner(None).await
    }

    /// Starts a sink that requires SMTP AUTH (PLAIN or LOGIN, allowed without
    /// TLS) with exactly these credentials, and answers 535 otherwise.
    pub async fn start_with_auth(username: &str, password: &str) -> anyhow::Result<SmtpSink> {
        SmtpSink::start_inner(Some((username.to_string(), password.to_string()))).await
    }

    async fn start_inner(auth: Option<(String, String)>) -> anyhow::Result<SmtpSink> {
        check_aiosmtpd().await?;
        let dir = tempfile::Builder::new()
            .prefix("smtp-sink-")
            .tempdir()
            .context("creating the sink's directory")?;
        std::fs::write(dir.path().join("smtp_sink.py"), SCRIPT).context("writing smtp_sink.py")?;
        let mut sink = SmtpSink {
            process: None,
            dir,
            port: 0,
            auth,
            accepted: watch::Sender::new(0),
            data_received: watch::Sender::new(0),
            rejected: watch::Sender::new(0),
            refused_data: Default::default(),
            slowed: Default::default(),
        };
        sink.spawn(0).await?;
        Ok(sink)
    }

    /// `smtp://127.0.0.1:PORT`, for `SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Maildir the sink writes to.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// Switches how the sink answers from the next RCPT or DATA on.
    pub fn set_mode(&self, mode: Mode) {
        let control = self.control_file();
        let tmp = control.with_extension("tmp");
        // Written whole and renamed, so the sink never reads half a line.
        std::fs::write(&tmp, mode.control_line())
            .and_then(|()| std::fs::rename(&tmp, &control))
            .expect("writing the sink's control file");
    }

    /// How many messages the sink has accepted since it was first started.
    pub fn accepted_count(&self) -> usize {
        *self.accepted.borrow()
    }

    /// Everything the sink has reported since it was first started: data
    /// received, messages accepted and attempts refused. It only grows, so
    /// a test waiting for quiet awaits it passing a value.
    pub fn events(&self) -> usize {
        *self.accepted.borrow() + *self.data_received.borrow() + *self.rejected.borrow()
    }

    /// How many messages' data the sink has received since it was first
    /// started, accepted by now or not (see [`SmtpSink::wait_for_data`]).
    pub fn data_count(&self) -> usize {
        *self.data_received.borrow()
    }

    /// The Message-IDs of the messages refused after their data had
    /// arrived (451 or 550 to the end of DATA), in order.
    pub fn refused_after_data(&self) -> Vec<String> {
        self.refused_data.lock().unwrap().clone()
    }

    /// The Message-IDs of the messages held in [`Mode::Slow`] (stored
    /// after the delay whatever the client did meanwhile), in order.
    pub fn slowed(&self) -> Vec<String> {
        self.slowed.lock().unwrap().clone()
    }

    /// Waits until [`SmtpSink::events`] exceeds `seen`; false when nothing
    /// happened within `timeout`.
    pub async fn wait_for_event_after(&self, seen: usize, timeout: Duration) -> bool {
        let (mut a, mut d, mut r) = (
            self.accepted.subscribe(),
            self.data_received.subscribe(),
            self.rejected.subscribe(),
        );
        let changed = async {
            while self.events() <= seen {
                tokio::select! {
                    _ = a.changed() => {}
                    _ = d.changed() => {}
                    _ = r.changed() => {}
                }
            }
        };
        tokio::time::timeout(timeout, changed).await.is_ok()
    }

    /// Waits until the sink has accepted at least `n` messages in all, then
    /// returns every stored message.
    pub async fn wait_for_messages(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReceivedMail>> {
        wait_for_count(&self.accepted, n, timeout, "accepted").await?;
        self.try_messages()
    }

    /// Waits until the sink has received the data of at least `n` messages
    /// in all, whether or not it then accepted them: with [`Mode::Slow`],
    /// the moment a client is waiting for the answer to DATA.
    pub async fn wait_for_data(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_for_count(&self.data_received, n, timeout, "received the data of").await
    }

    /// Waits until the sink has refused (451 or 550) at least `n` attempts
    /// in all: the evidence that a client is retrying.
    pub async fn wait_for_rejections(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_for_count(&self.rejected, n, timeout, "refused").await
    }

    /// Every message in the Maildir, in arrival order.
    ///
    /// # Panics
    /// When the Maildir cannot be read; use [`SmtpSink::try_messages`] to
    /// handle that.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.try_messages().expect("reading the sink's Maildir")
    }

    pub fn try_messages(&self) -> anyhow::Result<Vec<ReceivedMail>> {
        let maildir = self.maildir();
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let dir = maildir.join(sub);
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
            {
                files.push(entry?.path());
            }
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        files.iter().map(|path| ReceivedMail::read(path)).collect()
    }

    /// Kills the sink: connections to its port are refused until
    /// [`SmtpSink::restart`]. Stored messages stay.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut running) = self.process.take() {
            running
                .child
                .kill()
                .await
                .context("killing the SMTP sink")?;
        }
        Ok(())
    }

    /// Starts the sink again on the same port, with the same Maildir and
    /// control file.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn(self.port).await
    }

    fn control_file(&self) -> PathBuf {
        self.dir.path().join("control")
    }

    async fn spawn(&mut self, port: u16) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let mut command = Command::new(python());
        command
            .arg("-u")
            .arg(dir.join("smtp_sink.py"))
            .arg(dir.join("port"))
            .arg(dir.join("maildir"))
            .arg(self.control_file())
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some((user, password)) = &self.auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        let mut child = command.spawn().context("starting smtp_sink.py")?;
        let stdin = child.stdin.take().context("the sink's stdin")?;
        let stdout = child.stdout.take().context("the sink's stdout")?;
        let mut lines = BufReader::new(stdout).lines();

        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .context("smtp_sink.py did not start listening in time")?
            .context("reading smtp_sink.py's stdout")?;
        let bound: u16 = match first.as_deref().and_then(|l| l.strip_prefix("listening ")) {
            Some(port) => port
                .trim()
                .parse()
                .context("the port smtp_sink.py printed")?,
            None => bail!(
                "smtp_sink.py exited or printed {first:?} instead of its port (is port {port} taken?)"
            ),
        };
        self.port = bound;

        let (accepted, data_received, rejected) = (
            self.accepted.clone(),
            self.data_received.clone(),
            self.rejected.clone(),
        );
        let (refused_data, slowed) = (self.refused_data.clone(), self.slowed.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words[..] {
                    ["rejected", _, message_id] => {
                        refused_data.lock().unwrap().push(message_id.to_string());
                    }
                    ["slowed", message_id] => {
                        slowed.lock().unwrap().push(message_id.to_string());
                    }
                    _ => {}
                }
                let counter = match line.split_whitespace().next() {
                    Some("accepted") => &accepted,
                    Some("data") => &data_received,
                    Some("rejected") => &rejected,
                    _ => continue,
                };
                counter.send_modify(|count| *count += 1);
            }
        });
        self.process = Some(Running {
            child,
            _stdin: stdin,
        });
        Ok(())
    }
}

/// Waits until `counter` reaches `n`; the error says how far it got.
async fn wait_for_count(
    counter: &watch::Sender<usize>,
    n: usize,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<()> {
    let mut count = counter.subscribe();
    match tokio::time::timeout(timeout, count.wait_for(|c| *c >= n)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => unreachable!("the sender lives in the sink"),
        Err(_) => bail!(
            "the SMTP sink {what} {} message(s) within {timeout:?}, expected {n}",
            *counter.borrow()
        ),
    }
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

async fn check_aiosmtpd() -> anyhow::Result<()> {
    let python = python();
    let status = Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .with_context(|| format!("running {python} (needed for the SMTP sink)"))?;
    if !status.success() {
        bail!("{python} cannot import aiosmtpd; run `{python} -m pip install aiosmtpd==1.4.6`");
    }
    Ok(())
}

/// One message from the sink's Maildir.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub path: PathBuf,
    /// The file as stored: the sink's `X-MailFrom`/`X-RcptTo` lines, then
    /// the message exactly as received.
    pub raw: String,
    /// The top-level headers, unfolded, in order; encoded words decoded.
    pub headers: Vec<(String, String)>,
    /// SMTP envelope sender.
    pub mail_from: String,
    /// SMTP envelope recipients.
    pub rcpt_to: Vec<String>,
    /// The leaf parts in order (a single-part message has one), with their
    /// transfer encoding undone.
    pub parts: Vec<MailPart>,
}

/// A leaf MIME part.
#[derive(Debug, Clone)]
pub struct MailPart {
    pub headers: Vec<(String, String)>,
    /// The media type alone, lower case: `text/plain`.
    pub content_type: String,
    pub body: String,
}

impl MailPart {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

impl ReceivedMail {
    pub fn read(path: &Path) -> anyhow::Result<ReceivedMail> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        let mut mail = ReceivedMail::parse(&raw)?;
        mail.path = path.to_path_buf();
        Ok(mail)
    }

    /// Parses a message as the sink stores it.
    pub fn parse(raw: &str) -> anyhow::Result<ReceivedMail> {
        let raw_norm = raw.replace("\r\n", "\n");
        let (headers, body) = split_headers(&raw_norm);
        let mail_from = find_header(&headers, "X-MailFrom")
            .unwrap_or_default()
            .to_string();
        let rcpt_to = find_header(&headers, "X-RcptTo")
            .map(|v| {
                v.split(',')
                    .map(|a| a.trim().to_string())
                    .filter(|a| !a.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let mut parts = Vec::new();
        collect_parts(&headers, body, &mut parts)?;
        Ok(ReceivedMail {
            path: PathBuf::new(),
            raw: raw.to_string(),
            headers,
            mail_from,
            rcpt_to,
            parts,
        })
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every header with this name.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn message_id(&self) -> Option<&str> {
        self.header("Message-ID")
    }

    pub fn subject(&self) -> Option<&str> {
        self.header("Subject")
    }

    /// The top-level media type, lower case.
    pub fn content_type(&self) -> String {
        media_type(self.header("Content-Type"))
    }

    /// The first part of this media type.
    pub fn part(&self, content_type: &str) -> Option<&MailPart> {
        self.parts
            .iter()
            .find(|p| p.content_type.eq_ignore_ascii_case(content_type))
    }

    /// The body of the first text/plain part.
    pub fn text(&self) -> Option<&str> {
        self.part("text/plain").map(|p| p.body.as_str())
    }

    /// The body of the first text/html part.
    pub fn html(&self) -> Option<&str> {
        self.part("text/html").map(|p| p.body.as_str())
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Splits `\n`-separated text into unfolded headers and the body.
fn split_headers(text: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = match text.find("\n\n") {
        Some(i) => (&text[..i], &text[i + 2..]),
        None if text.starts_with('\n') => ("", &text[1..]),
        None => (text, ""),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    for (_, value) in &mut headers {
        *value = decode_encoded_words(value);
    }
    (headers, body)
}

fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("text/plain")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn parameter(content_type: &str, name: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"').to_string())
    })
}

fn collect_parts(
    headers: &[(String, String)],
    body: &str,
    parts: &mut Vec<MailPart>,
) -> anyhow::Result<()> {
    let content_type = find_header(headers, "Content-Type").unwrap_or("text/plain");
    let media = media_type(Some(content_type));
    if media.starts_with("multipart/") {
        let boundary =
            parameter(content_type, "boundary").context("a multipart without boundary")?;
        let delimiter = format!("--{boundary}");
        let mut current: Option<Vec<&str>> = None;
        for line in body.split('\n') {
            if line.trim_end() == delimiter || line.trim_end() == format!("{delimiter}--") {
                if let Some(lines) = current.take() {
                    let part = lines.join("\n");
                    let (part_headers, part_body) = split_headers(&part);
                    collect_parts(&part_headers, part_body, parts)?;
                }
                if line.trim_end() != delimiter {
                    break;
                }
                current = Some(Vec::new());
            } else if let Some(lines) = current.as_mut() {
                lines.push(line);
            }
        }
        return Ok(());
    }
    let encoding = find_header(headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    let body = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .context("a base64 part that does not decode")?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        "quoted-printable" => decode_quoted_printable(body),
        _ => body.to_string(),
    };
    parts.push(MailPart {
        headers: headers.to_vec(),
        content_type: media,
        body,
    });
    Ok(())
}

fn decode_quoted_printable(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
            {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`);
/// whitespace between two encoded words is dropped, as the RFC says.
fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        let Some((word, after)) = encoded_word(candidate) else {
            out.push_str(before);
            out.push_str("=?");
            rest = &candidate[2..];
            last_was_word = false;
            continue;
        };
        if !(last_was_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        out.push_str(&word);
        rest = after;
        last_was_word = true;
    }
    out.push_str(rest);
    out
}

fn encoded_word(text: &str) -> Option<(String, &str)> {
    let inner = text.strip_prefix("=?")?;
    let (_charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let (payload, after) = (&inner[..end], &inner[end + 2..]);
    let bytes = match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .ok()?,
        "q" | "Q" => decode_quoted_printable(&payload.replace('_', " ")).into_bytes(),
        _ => return None,
    };
    Some((String::from_utf8_lossy(&bytes).into_owned(), after))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Folded lines start with a space, which a `\` line continuation would eat.
    const SAMPLE: &[&str] = &[
        "X-MailFrom: from@x.test",
        "X-RcptTo: a@y.test, b@y.test",
        "Subject: =?utf-8?b?TGFiIHJlc3VsdHMgZm9yIE3DoXg=?=",
        " =?utf-8?q?_are_ready?=",
        "Message-ID: <abc@labrelay>",
        "MIME-Version: 1.0",
        "Content-Type: multipart/alternative;",
        " boundary=\"XYZ\"",
        "",
        "--XYZ",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "Hello M=C3=A1x, a long line=",
        " continued",
        "--XYZ",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        "",
        "PHA+SGk8L3A+",
        "--XYZ--",
        "",
    ];

    #[test]
    fn parses_envelope_headers_and_parts() {
        let mail = ReceivedMail::parse(&SAMPLE.join("\r\n")).unwrap();
        assert_eq!(mail.mail_from, "from@x.test");
        assert_eq!(mail.rcpt_to, ["a@y.test", "b@y.test"]);
        assert_eq!(mail.subject(), Some("Lab results for Máx are ready"));
        assert_eq!(mail.message_id(), Some("<abc@labrelay>"));
        assert_eq!(mail.content_type(), "multipart/alternative");
        let types: Vec<_> = mail.parts.iter().map(|p| p.content_type.as_str()).collect();
        assert_eq!(types, ["text/plain", "text/html"]);
        assert_eq!(mail.text(), Some("Hello Máx, a long line continued"));
        assert_eq!(mail.html(), Some("<p>Hi</p>"));
    }

    #[test]
    fn decodes_words_and_leaves_plain_text_alone() {
        assert_eq!(decode_encoded_words("plain =? text"), "plain =? text");
        assert_eq!(decode_encoded_words("=?utf-8?q?a_b?= c"), "a b c");
    }

    #[tokio::test]
    async fn accepts_fails_on_demand_and_comes_back_on_the_same_port() {
        let mut sink = SmtpSink::start().await.unwrap();
        let port = sink.port();
        sink.set_mode(Mode::TempFail);
        assert_eq!(send(port, "<one@t>").await, "451");
        sink.set_mode(Mode::PermFail);
        assert_eq!(send(port, "<two@t>").await, "550");
        sink.set_mode(Mode::Accept);
        assert_eq!(send(port, "<three@t>").await, "250");
        let mails = sink
            .wait_for_messages(1, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].message_id(), Some("<three@t>"));
        assert_eq!(mails[0].rcpt_to, ["to@y.test"]);

        sink.stop().await.unwrap();
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        );
        sink.restart().await.unwrap();
        assert_eq!(sink.port(), port);
        assert_eq!(send(port, "<four@t>").await, "250");
        let mails = sink
            .wait_for_messages(2, Duration::from_secs(5))
            .await
            .unwrap();
        let ids: Vec<_> = mails.iter().filter_map(|m| m.message_id()).collect();
        assert_eq!(ids, ["<three@t>", "<four@t>"]);
    }

    #[tokio::test]
    async fn waiting_for_more_than_arrives_times_out() {
        let sink = SmtpSink::start().await.unwrap();
        let err = sink
            .wait_for_messages(1, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("accepted 0 message(s)"), "{err}");
    }

    /// A minimal SMTP client; returns the code of the first negative reply,
    /// or "250" once the message is accepted.
    async fn send(port: u16, message_id: &str) -> String {
        use tokio::io::AsyncWriteExt as _;
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut reply = async || loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line[..3].to_string();
            }
        };
        assert_eq!(reply().await, "220");
        let data = format!("Message-ID: {message_id}\r\nSubject: t\r\n\r\nbody\r\n.\r\n");
        for (command, want) in [
            ("EHLO client.test\r\n".to_string(), "250"),
            ("MAIL FROM:<from@x.test>\r\n".into(), "250"),
            ("RCPT TO:<to@y.test>\r\n".into(), "250"),
            ("DATA\r\n".into(), "354"),
            (data, "250"),
        ] {
            write.write_all(command.as_bytes()).await.unwrap();
            let code = reply().await;
            if code != want {
                return code;
            }
        }
        write.write_all(b"QUIT\r\n").await.unwrap();
        "250".into()
    }
}
