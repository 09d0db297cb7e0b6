//! Typed settings, read once from the environment (Cloud Run's way) or
//! built in code (`labrelay up`).
//!
//! Secrets never reach `Debug` output or error messages: the password is a
//! [`Secret`], and `SMTP_URL` may not carry credentials at all.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use labrelay_receiver::ReceiverSettings;
use labrelay_runtime::secret::{Secret, secret_from_vars};
use labrelay_templates::TemplateSettings;
use lettre::message::Mailbox;

/// `EMAIL_FROM` when unset.
pub const DEFAULT_FROM: &str = "Pet Theory <results@pettheory.example>";
/// `SMTP_TIMEOUT_SECS` when unset. A push is acknowledged only by our
/// answer, so one delivery attempt must end well before the subscription's
/// ack deadline (10 s by default, 600 s at most).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_SEND_TIMEOUT: Duration = Duration::from_secs(600);
/// `SMTP_DATA_TIMEOUT_SECS` when unset: how long the server may take to
/// answer a message's final `.`. RFC 5321 §4.5.3.2.6 asks clients to wait
/// 10 minutes, because a server may check the whole message before it
/// answers; cut off earlier, the attempt cannot tell whether the email went
/// out. Half of that: real servers answer within seconds, and with the rest
/// of a push's work (claim, envelope, record, parking: 80 s) it fits within
/// Pub/Sub's longest ack deadline (600 s), which on Cloud Run is the
/// push's whole budget (`PUSH_ANSWER=when-done`).
pub const DEFAULT_DATA_TIMEOUT: Duration = Duration::from_secs(300);
/// RFC 5321's 10 minutes.
const MAX_DATA_TIMEOUT: Duration = Duration::from_secs(600);

/// Everything the email-service needs to run.
#[derive(Clone)]
pub struct Settings {
    /// Where messages go.
    pub delivery: Delivery,
    /// `From` of every message.
    pub from: Mailbox,
    /// `Reply-To`, e.g. the clinic's front desk.
    pub reply_to: Option<Mailbox>,
    /// How long a push waits for its delivery attempt before the broker is
    /// answered 503. The attempt itself goes on, up to
    /// [`attempt_limit`](labrelay_receiver::notify_log::attempt_limit) of
    /// this, and is recorded or released when it ends (cut off there, it
    /// keeps its claim until the lease lapses). Bounds an SMTP transaction
    /// up to the server's 354 to DATA (at that limit): a timeout there is
    /// "not sent".
    pub send_timeout: Duration,
    /// How long the SMTP server may take to answer the message's final
    /// `.` ([`DEFAULT_DATA_TIMEOUT`]): only past it is the outcome unknown.
    /// The claim is renewed meanwhile, so redeliveries wait.
    pub data_timeout: Duration,
    /// What every push receiver reads: who may push (`PUSH_*`), the
    /// notification log (`NOTIFY_LOG`; emails already sent are not sent
    /// again), the trace project and `ALLOWED_HOSTS`. Push tokens are
    /// verified by default when read from the environment; everything is
    /// off in [`Settings::new`], for code and tests.
    pub receiver: ReceiverSettings,
    /// The clinic's default locale (`DEFAULT_LOCALE`) and its own
    /// templates (`TEMPLATES_DIR`); checked when the service starts.
    pub templates: TemplateSettings,
}

/// Where messages go.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// An SMTP server.
    Smtp(SmtpServer),
    /// A directory outbox: one `<report id>-<hash>.eml` per message, the
    /// hash being its Message-ID's, so a redelivery replaces the file it
    /// wrote before.
    Directory(PathBuf),
}

/// An SMTP server and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub credentials: Option<SmtpCredentials>,
}

/// Transport security towards the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtp://host:port`: no TLS at all; for local sinks.
    None,
    /// `smtp://host:port?tls=opportunistic`: STARTTLS when offered.
    Opportunistic,
    /// `smtp://host:port?tls=required`: STARTTLS or fail.
    StartTls,
    /// `smtps://host:port`: TLS from the first byte.
    Implicit,
}

/// SMTP AUTH credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: Secret,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("delivery", &self.delivery)
            .field("from", &self.from.to_string())
            .field("reply_to", &self.reply_to.as_ref().map(Mailbox::to_string))
            .field("send_timeout", &self.send_timeout)
            .field("data_timeout", &self.data_timeout)
            .field("receiver", &self.receiver)
            .field("templates", &self.templates)
            .finish()
    }
}

impl Settings {
    /// Settings with the defaults for everything but where mail goes.
    pub fn new(delivery: Delivery) -> Settings {
        Settings {
            delivery,
            from: DEFAULT_FROM.parse().expect("the default From is a mailbox"),
            reply_to: None,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            data_timeout: DEFAULT_DATA_TIMEOUT,
            receiver: ReceiverSettings::default(),
            templates: TemplateSettings::default(),
        }
    }

    /// Reads the process environment; see [`Settings::from_vars`].
    pub fn from_env() -> anyhow::Result<Settings> {
        Settings::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads settings through `get`, which returns a variable's value:
    ///
    /// - `SMTP_URL` (required): `smtp://host[:port]` (plain),
    ///   `smtp://host[:port]?tls=required` (STARTTLS),
    ///   `smtp://host[:port]?tls=opportunistic`, `smtps://host[:port]`
    ///   (implicit TLS), or `file:///path/to/dir` (directory outbox).
    /// - `SMTP_USERNAME`, with `SMTP_PASSWORD` or `SMTP_PASSWORD_FILE` (a
    ///   file holding the password; one trailing newline is ignored). Only
    ///   with `smtps://` or `tls=required`, or to a loopback host (see
    ///   [`SmtpServer::check_credentials_are_encrypted`]).
    /// - `EMAIL_FROM` (default [`DEFAULT_FROM`]), `EMAIL_REPLY_TO`.
    /// - `SMTP_TIMEOUT_SECS` (default 10; fractions allowed; at most 600).
    /// - `SMTP_DATA_TIMEOUT_SECS` (default 300; fractions allowed; at most
    ///   600, RFC 5321's limit).
    /// - What every push receiver reads ([`ReceiverSettings::from_vars`]):
    ///   `PUSH_*`, `NOTIFY_LOG` (records every email sent and does not send
    ///   it again), `GOOGLE_CLOUD_PROJECT` (else `PUBSUB_PROJECT_ID`) and
    ///   `ALLOWED_HOSTS`.
    /// - `DEFAULT_LOCALE` (default `en`) and `TEMPLATES_DIR`
    ///   ([`TemplateSettings::from_vars`]).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Settings> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let url = get("SMTP_URL")
            .context("SMTP_URL is required (smtp://host:port, smtps://host:port or file:///dir)")?;
        let mut delivery = Delivery::parse(&url)?;
        let password = secret_from_vars(&get, "SMTP_PASSWORD")?;
        let credentials = match (get("SMTP_USERNAME"), password) {
            (Some(username), Some(password)) => Some(SmtpCredentials { username, password }),
            (None, None) => None,
            (Some(_), None) => {
                bail!("SMTP_USERNAME is set without SMTP_PASSWORD or SMTP_PASSWORD_FILE")
            }
            (None, Some(_)) => bail!("a password is set without SMTP_USERNAME"),
        };
        match (&mut delivery, credentials) {
            (Delivery::Smtp(server), credentials) => {
                server.credentials = credentials;
                server.check_credentials_are_encrypted()?;
            }
            (Delivery::Directory(_), None) => {}
            (Delivery::Directory(_), Some(_)) => {
                bail!("SMTP credentials are set but SMTP_URL is a file:// outbox")
            }
        }

        let mut settings = Settings::new(delivery);
        if let Some(from) = get("EMAIL_FROM") {
            settings.from = parse_mailbox("EMAIL_FROM", &from)?;
        }
        if let Some(reply_to) = get("EMAIL_REPLY_TO") {
            settings.reply_to = Some(parse_mailbox("EMAIL_REPLY_TO", &reply_to)?);
        }
        if let Some(secs) = get("SMTP_TIMEOUT_SECS") {
            settings.send_timeout = parse_timeout("SMTP_TIMEOUT_SECS", &secs, MAX_SEND_TIMEOUT)?;
        }
        if let Some(secs) = get("SMTP_DATA_TIMEOUT_SECS") {
            settings.data_timeout =
                parse_timeout("SMTP_DATA_TIMEOUT_SECS", &secs, MAX_DATA_TIMEOUT)?;
        }
        settings.templates = TemplateSettings::from_vars(get)?;
        settings.receiver = ReceiverSettings::from_vars(get)?;
        Ok(settings)
    }
}

impl SmtpServer {
    /// Credentials are sent only inside TLS that cannot be stripped: with
    /// `tls=opportunistic` whoever sits on the path deletes STARTTLS from
    /// the server's greeting and reads the password. A loopback host is the
    /// exception: nothing leaves the machine (a local relay or a sidecar
    /// listening on 127.0.0.1, which rarely has a certificate for it).
    /// `Mailer::new` checks again, for settings built in code.
    pub fn check_credentials_are_encrypted(&self) -> anyhow::Result<()> {
        let encrypted = matches!(self.tls, SmtpTls::StartTls | SmtpTls::Implicit);
        if self.credentials.is_none() || encrypted || is_loopback(&self.host) {
            return Ok(());
        }
        let how = match self.tls {
            SmtpTls::Opportunistic => {
                "only tls=opportunistic, which an attacker on the path can strip"
            }
            _ => "no TLS",
        };
        bail!(
            "SMTP_USERNAME and SMTP_PASSWORD[_FILE] are set but SMTP_URL asks for {how}, so the password \
             would cross the network in clear: use smtps://{host}:465 (implicit TLS) or \
             smtp://{host}:587?tls=required (STARTTLS required); plain smtp:// with credentials \
             is accepted only for a loopback host (localhost, 127.0.0.0/8, [::1])",
            host = shown_host(&self.host),
        )
    }
}

/// `localhost`, or an address in 127.0.0.0/8 or `::1`: names that never
/// leave the machine.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host as it is written in a URL (IPv6 in brackets).
fn shown_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn parse_mailbox(name: &str, value: &str) -> anyhow::Result<Mailbox> {
    value.trim().parse().with_context(|| {
        format!("{name} is not a mailbox like `Pet Theory <results@example.com>`: {value:?}")
    })
}

fn parse_timeout(name: &str, value: &str, max: Duration) -> anyhow::Result<Duration> {
    let secs: f64 = value
        .trim()
        .parse()
        .with_context(|| format!("{name} must be a number of seconds, not {value:?}"))?;
    let timeout = Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|t| !t.is_zero() && *t <= max);
    timeout.with_context(|| {
        format!(
            "{name} must be above 0 and at most {}, not {value:?}",
            max.as_secs()
        )
    })
}

impl Delivery {
    /// Parses `SMTP_URL`. The URL is echoed in errors only when it cannot
    /// hold a password.
    pub fn parse(url: &str) -> anyhow::Result<Delivery> {
        let url = url.trim();
        let shown = if url.contains('@') {
            "(not shown: it contains '@')"
        } else {
            url
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            bail!(
                "SMTP_URL must look like smtp://host:port, smtps://host:port or file:///dir, not {shown}"
            );
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                ensure!(
                    rest.starts_with('/') && !rest.contains(['?', '#']),
                    "a file outbox URL must be file:///absolute/path, not {shown}"
                );
                Ok(Delivery::Directory(PathBuf::from(percent_decode(rest)?)))
            }
            scheme @ ("smtp" | "smtps") => {
                let (authority, query) = match rest.split_once('?') {
                    Some((authority, query)) => (authority, Some(query)),
                    None => (rest, None),
                };
                let authority = authority.trim_end_matches('/');
                ensure!(
                    !authority.contains('@'),
                    "SMTP_URL must not carry credentials; set SMTP_USERNAME and SMTP_PASSWORD (or SMTP_PASSWORD_FILE)"
                );
                ensure!(
                    !authority.contains('/'),
                    "SMTP_URL has a path; expected {scheme}://host:port"
                );
                let tls_param = match query {
                    None | Some("") => None,
                    Some(query) => {
                        let mut tls = None;
                        for pair in query.split('&') {
                            match pair.split_once('=') {
                                Some(("tls", value)) => tls = Some(value),
                                _ => bail!(
                                    "SMTP_URL has an unknown parameter {pair:?}; only tls=required|opportunistic"
                                ),
                            }
                        }
                        tls
                    }
                };
                let tls = match (scheme, tls_param) {
                    ("smtp", None) => SmtpTls::None,
                    ("smtp", Some("required")) => SmtpTls::StartTls,
                    ("smtp", Some("opportunistic")) => SmtpTls::Opportunistic,
                    ("smtps", None) => SmtpTls::Implicit,
                    (_, Some(other)) => {
                        bail!(
                            "SMTP_URL: tls={other} is not supported with {scheme}://; use tls=required or tls=opportunistic with smtp://"
                        )
                    }
                    _ => unreachable!("scheme is smtp or smtps"),
                };
                let (host, port) = split_host_port(authority)?;
                let port = port.unwrap_or(match tls {
                    SmtpTls::None => 25,
                    SmtpTls::Opportunistic | SmtpTls::StartTls => 587,
                    SmtpTls::Implicit => 465,
                });
                Ok(Delivery::Smtp(SmtpServer {
                    host,
                    port,
                    tls,
                    credentials: None,
                }))
            }
            _ => bail!("SMTP_URL must start with smtp://, smtps:// or file://, not {shown}"),
        }
    }
}

fn split_host_port(authority: &str) -> anyhow::Result<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .context("SMTP_URL has an unclosed '[' in its host")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    ensure!(!host.is_empty(), "SMTP_URL has no host");
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .with_context(|| format!("SMTP_URL has an invalid port {p:?}"))
        })
        .transpose()?;
    Ok((host.to_string(), port))
}

fn percent_decode(path: &str) -> anyhow::Result<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .context("the file:// URL has a malformed %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the file:// URL is not UTF-8 once decoded")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use labrelay_receiver::push_auth::PushAuth;

    use super::*;

    /// The variables, with push verification off unless they say otherwise.
    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !map.keys().any(|k| k.starts_with("PUSH_")) {
            map.insert("PUSH_AUTH".into(), "off".into());
        }
        move |name| map.get(name).cloned()
    }

    fn smtp(host: &str, port: u16, tls: SmtpTls) -> Delivery {
        Delivery::Smtp(SmtpServer {
            host: host.into(),
            port,
            tls,
            credentials: None,
        })
    }

    #[test]
    fn parses_every_documented_url() {
        let cases = [
            (
                "smtp://127.0.0.1:2525",
                smtp("127.0.0.1", 2525, SmtpTls::None),
            ),
            (
                "smtp://mail.example.com",
                smtp("mail.example.com", 25, SmtpTls::None),
            ),
            (
                "smtp://mail.example.com?tls=required",
                smtp("mail.example.com", 587, SmtpTls::StartTls),
            ),
            (
                "smtp://mail.example.com:2587/?tls=opportunistic",
                smtp("mail.example.com", 2587, SmtpTls::Opportunistic),
            ),
            (
                "smtps://mail.example.com",
                smtp("mail.example.com", 465, SmtpTls::Implicit),
            ),
            (
                "SMTPS://mail.example.com:4650",
                smtp("mail.example.com", 4650, SmtpTls::Implicit),
            ),
            ("smtp://[::1]:2525", smtp("::1", 2525, SmtpTls::None)),
            (
                "file:///var/lib/labrelay/outbox%20email",
                Delivery::Directory("/var/lib/labrelay/outbox email".into()),
            ),
        ];
        for (url, want) in cases {
            assert_eq!(Delivery::parse(url).unwrap(), want, "{url}");
        }
    }

    #[test]
    fn rejects_bad_urls_saying_why_without_echoing_secrets() {
        let cases = [
            ("", "must look like"),
            ("mail.example.com:25", "must look like"),
            ("http://mail.example.com", "must start with"),
            ("smtp://", "no host"),
            ("smtp://host:0", "invalid port"),
            ("smtp://host:99999", "invalid port"),
            (
                "smtp://host:25?tls=sometimes",
                "tls=sometimes is not supported",
            ),
            ("smtps://host?tls=required", "not supported"),
            ("smtp://host?foo=bar", "unknown parameter"),
            ("smtp://host/helo", "has a path"),
            ("smtp://user:hunter2@host:25", "must not carry credentials"),
            ("file://relative/dir", "file:///absolute/path"),
        ];
        for (url, want) in cases {
            let err = format!("{:#}", Delivery::parse(url).unwrap_err());
            assert!(err.contains(want), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[test]
    fn reads_the_environment_with_defaults() {
        let settings = Settings::from_vars(vars(&[("SMTP_URL", "smtp://localhost:1025")])).unwrap();
        assert_eq!(settings.delivery, smtp("localhost", 1025, SmtpTls::None));
        assert_eq!(settings.from.to_string(), DEFAULT_FROM);
        assert_eq!(settings.reply_to, None);
        assert_eq!(settings.send_timeout, Duration::from_secs(10));
        assert_eq!(settings.data_timeout, Duration::from_secs(300));

        let settings = Settings::from_vars(vars(&[
            ("SMTP_URL", "smtps://smtp.example.com"),
            ("SMTP_USERNAME", "apikey"),
            ("SMTP_PASSWORD", "s3cr3t-value"),
            ("EMAIL_FROM", "Clinic <lab@clinic.example>"),
            ("EMAIL_REPLY_TO", "desk@clinic.example"),
            ("SMTP_TIMEOUT_SECS", "2.5"),
            ("SMTP_DATA_TIMEOUT_SECS", "120"),
        ]))
        .unwrap();
        let Delivery::Smtp(server) = &settings.delivery else {
            panic!("smtp expected")
        };
        let credentials = server.credentials.as_ref().unwrap();
        assert_eq!(
            (credentials.username.as_str(), credentials.password.expose()),
            ("apikey", "s3cr3t-value")
        );
        assert_eq!(settings.from.email.to_string(), "lab@clinic.example");
        assert_eq!(
            settings.reply_to.unwrap().to_string(),
            "desk@clinic.example"
        );
        assert_eq!(settings.send_timeout, Duration::from_millis(2500));
        assert_eq!(settings.data_timeout, Duration::from_secs(120));
    }

    #[test]
    fn reads_the_password_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "from-a-file\n").unwrap();
        let settings = Settings::from_vars(vars(&[
            ("SMTP_URL", "smtp://host:25?tls=required"),
            ("SMTP_USERNAME", "user"),
            ("SMTP_PASSWORD_FILE", path.to_str().unwrap()),
        ]))
        .unwrap();
        let Delivery::Smtp(server) = settings.delivery else {
            panic!("smtp expected")
        };
        assert_eq!(server.credentials.unwrap().password.expose(), "from-a-file");
    }

    #[test]
    fn verifies_pushes_unless_told_not_to() {
        let error = Settings::from_vars(vars(&[("SMTP_URL", "smtp://h"), ("PUSH_AUTH", "verify")]))
            .unwrap_err();
        assert!(error.to_string().contains("PUSH_AUDIENCE"), "{error}");
        let settings = Settings::from_vars(vars(&[
            ("SMTP_URL", "smtp://h"),
            ("PUSH_AUDIENCE", "https://email-service-abc-uc.a.run.app/"),
            (
                "PUSH_ALLOWED_SERVICE_ACCOUNTS",
                "pubsub-cloud-run-invoker@p.iam.gserviceaccount.com",
            ),
        ]))
        .unwrap();
        assert!(matches!(settings.receiver.push_auth, PushAuth::Verify(_)));
        let off = Settings::from_vars(vars(&[("SMTP_URL", "smtp://h")])).unwrap();
        assert_eq!(off.receiver.push_auth, PushAuth::Off);
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let settings = Settings::from_vars(vars(&[
            ("SMTP_URL", "smtp://host:25?tls=required"),
            ("SMTP_USERNAME", "user"),
            ("SMTP_PASSWORD", "s3cr3t-value"),
        ]))
        .unwrap();
        let debug = format!("{settings:?} {settings:#?}");
        assert!(!debug.contains("s3cr3t-value"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
        assert!(debug.contains("user"), "{debug}");
    }

    #[test]
    fn credentials_need_tls_that_cannot_be_stripped_unless_on_loopback() {
        let with_credentials = |url: &str| {
            Settings::from_vars(vars(&[
                ("SMTP_URL", url),
                ("SMTP_USERNAME", "apikey"),
                ("SMTP_PASSWORD", "s3cr3t-value"),
            ]))
        };
        for url in [
            "smtps://smtp.example.com",
            "smtps://smtp.example.com:4650",
            "smtp://smtp.example.com:587?tls=required",
            "smtp://203.0.113.7?tls=required",
            "smtp://127.0.0.1:2525",
            "smtp://127.8.9.10:25?tls=opportunistic",
            "smtp://localhost:1025",
            "smtp://LocalHost",
            "smtp://[::1]:2525",
        ] {
            let settings = with_credentials(url).unwrap_or_else(|e| panic!("{url}: {e:#}"));
            let Delivery::Smtp(server) = settings.delivery else {
                panic!("{url}: smtp expected")
            };
            assert!(server.credentials.is_some(), "{url}");
        }
        for (url, how) in [
            ("smtp://smtp.example.com", "no TLS"),
            ("smtp://smtp.example.com:587", "no TLS"),
            (
                "smtp://smtp.example.com:587?tls=opportunistic",
                "opportunistic",
            ),
            ("smtp://10.0.0.5:25", "no TLS"),
            ("smtp://[2001:db8::1]:25", "no TLS"),
            ("smtp://[::ffff:127.0.0.1]:25", "no TLS"),
            ("smtp://localhost.evil.example", "no TLS"),
            ("smtp://0.0.0.0:25", "no TLS"),
        ] {
            let err = format!("{:#}", with_credentials(url).unwrap_err());
            for want in [
                "SMTP_USERNAME",
                "SMTP_URL",
                how,
                "smtps://",
                "?tls=required",
                "loopback",
            ] {
                assert!(err.contains(want), "{url}: {want:?} not in {err}");
            }
            assert!(!err.contains("s3cr3t-value"), "{err}");
        }
        let err = format!(
            "{:#}",
            with_credentials("smtp://[2001:db8::1]:25").unwrap_err()
        );
        assert!(err.contains("smtps://[2001:db8::1]:465"), "{err}");
        // Without credentials nothing secret is sent: plain SMTP stays
        // allowed, e.g. for a relay that trusts the sender's address.
        let plain = Settings::from_vars(vars(&[("SMTP_URL", "smtp://smtp.example.com")])).unwrap();
        assert_eq!(plain.delivery, smtp("smtp.example.com", 25, SmtpTls::None));
    }

    #[test]
    fn rejects_bad_settings() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "SMTP_URL is required"),
            (&[("SMTP_URL", "  ")], "SMTP_URL is required"),
            (
                &[("SMTP_URL", "smtp://h"), ("EMAIL_FROM", "not an address")],
                "EMAIL_FROM",
            ),
            (
                &[("SMTP_URL", "smtp://h"), ("EMAIL_REPLY_TO", "@@")],
                "EMAIL_REPLY_TO",
            ),
            (
                &[("SMTP_URL", "smtp://h"), ("SMTP_TIMEOUT_SECS", "0")],
                "above 0",
            ),
            (
                &[("SMTP_URL", "smtp://h"), ("SMTP_TIMEOUT_SECS", "601")],
                "at most 600",
            ),
            (
                &[("SMTP_URL", "smtp://h"), ("SMTP_TIMEOUT_SECS", "ten")],
                "number of seconds",
            ),
            (
                &[("SMTP_URL", "smtp://h"), ("SMTP_DATA_TIMEOUT_SECS", "601")],
                "SMTP_DATA_TIMEOUT_SECS must be above 0 and at most 600",
            ),
            (
                &[("SMTP_URL", "smtp://h"), ("SMTP_USERNAME", "u")],
                "without SMTP_PASSWORD",
            ),
            (
                &[("SMTP_URL", "smtp://h"), ("SMTP_PASSWORD", "p")],
                "without SMTP_USERNAME",
            ),
            (
                &[
                    ("SMTP_URL", "smtp://h"),
                    ("SMTP_USERNAME", "u"),
                    ("SMTP_PASSWORD", "p"),
                    ("SMTP_PASSWORD_FILE", "/x"),
                ],
                "not both",
            ),
            (
                &[
                    ("SMTP_URL", "smtp://h"),
                    ("SMTP_USERNAME", "u"),
                    ("SMTP_PASSWORD_FILE", "/nonexistent/pw"),
                ],
                "SMTP_PASSWORD_FILE",
            ),
            (
                &[
                    ("SMTP_URL", "file:///tmp/x"),
                    ("SMTP_USERNAME", "u"),
                    ("SMTP_PASSWORD", "p"),
                ],
                "file:// outbox",
            ),
        ];
        for (pairs, want) in cases {
            let err = format!("{:#}", Settings::from_vars(vars(pairs)).unwrap_err());
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
    }
}
