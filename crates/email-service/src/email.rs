//! From a lab report to an addressed RFC 5322 message.
//!
//! The owner's address is parsed once here ([`Recipient`]); everything
//! downstream holds a valid mailbox. The Message-ID is the notification
//! log's hash of the report's content and the recipient
//! ([`labrelay_receiver::notify_log::notification_hash`]), not of the
//! rendered text: a redelivery of the same report produces the same
//! Message-ID, also after a template change (so inboxes and the file
//! outbox keep one copy), and the id reveals nothing about the owner.

use labrelay_contract::LabReport;
use labrelay_receiver::notify_log::notification_hash;
use labrelay_templates::Templates;
use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, Header, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart};

use crate::render::{self, one_line};

/// Why a report produces no email.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// Nothing to send: the report has no owner email. Not a failure.
    #[error("the report has no owner email")]
    NoAddress,
    /// The owner email can never be delivered to.
    #[error("the owner email is not a valid address")]
    InvalidAddress,
    #[error("rendering the email failed")]
    Render(#[from] labrelay_templates::TemplateError),
    #[error("building the email failed")]
    Build(#[from] lettre::error::Error),
}

/// The owner's mailbox, parsed from the report.
#[derive(Debug, Clone)]
pub struct Recipient(Mailbox);

impl Recipient {
    pub fn from_report(report: &LabReport) -> Result<Recipient, ComposeError> {
        let email = report
            .owner
            .email
            .as_deref()
            .map(str::trim)
            .unwrap_or_default();
        if email.is_empty() {
            return Err(ComposeError::NoAddress);
        }
        let address = email.parse().map_err(|_| ComposeError::InvalidAddress)?;
        let name = report.owner.name.as_deref().and_then(one_line);
        Ok(Recipient(Mailbox::new(name, address)))
    }
}

/// A message ready for delivery.
#[derive(Debug, Clone)]
pub struct Email {
    pub message: Message,
    /// The report's id, as in the `X-Report-Id` header.
    pub report_id: String,
    /// `<hex@labrelay>`, as in the header.
    pub message_id: String,
    /// The envelope's recipient, the owner's address.
    pub recipient: String,
}

impl Email {
    /// The Message-ID without angle brackets: a safe file name.
    pub fn id_left(&self) -> &str {
        self.message_id
            .trim_start_matches('<')
            .split('@')
            .next()
            .unwrap_or_default()
    }
}

pub struct Sender<'a> {
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
}

/// `report`'s email from `sender`, in the owner's locale (else the
/// clinic's default).
pub fn compose(
    report: &LabReport,
    sender: &Sender<'_>,
    templates: &Templates,
) -> Result<Email, ComposeError> {
    let Recipient(to) = Recipient::from_report(report)?;
    let rendered = render::render(templates, templates.locale_for(report), report)?;
    let report_id = one_line(&report.id.to_string()).unwrap_or_default();
    let recipient = to.email.to_string();
    let message_id = message_id(&notification_hash(report, &recipient));

    // Given, the envelope is not parsed back out of the From and To headers.
    let envelope = Envelope::new(Some(sender.from.email.clone()), vec![to.email.clone()])?;
    let mut builder = Message::builder()
        .envelope(envelope)
        .from(sender.from.clone())
        .to(to)
        .subject(rendered.subject.clone())
        .message_id(Some(message_id.clone()))
        .header(XReportId(report_id.clone()))
        .header(AutoSubmitted);
    if let Some(reply_to) = sender.reply_to {
        builder = builder.reply_to(reply_to.clone());
    }
    let message = builder.multipart(MultiPart::alternative_plain_html(
        crlf(&rendered.text),
        html_body(&rendered.html),
    ))?;
    Ok(Email {
        message,
        report_id,
        message_id,
        recipient,
    })
}

/// The HTML part's body. `render` writes the HTML as ASCII in lines of at
/// most [`render::HTML_LINE`], which lettre would send as 7bit after
/// scanning it for its encoding and for bare LFs; given as a finished 7bit
/// body it is not scanned again (a tenth of composing an email). A line
/// `render` could not break (a word longer than a line) leaves the choice
/// of encoding to lettre.
fn html_body(html: &str) -> Body {
    let (body, longest_line) = crlf_measured(html);
    if longest_line <= render::HTML_LINE && html.is_ascii() {
        Body::dangerous_pre_encoded(body.into_bytes(), ContentTransferEncoding::SevenBit)
    } else {
        Body::new(body)
    }
}

/// `text` with CRLF line endings, as the message carries it. lettre makes a
/// body's line endings CRLF itself, but by inserting each `\r` in place,
/// which moves the rest of the string every time: a tenth of the
/// email-service's CPU at load for a 4 KiB email.
fn crlf(text: &str) -> String {
    crlf_measured(text).0
}

/// [`crlf`], and the length of the longest line without its line break.
fn crlf_measured(text: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut longest = 0;
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        longest = longest.max(line.len());
        out.push_str(line);
    }
    (out, longest)
}

/// `<{first 32 hex digits of the notification hash}@labrelay>`.
fn message_id(notification_hash: &str) -> String {
    format!("<{}@labrelay>", &notification_hash[..32])
}

/// `X-Report-Id`: which report a message tells about.
#[derive(Debug, Clone)]
struct XReportId(String);

impl Header for XReportId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Report-Id")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(XReportId(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834), so that auto-responders
/// stay quiet.
#[derive(Debug, Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"id": "LR-1", "pet": {"name": "Max"}, "owner": {"name": "Alex Kim", "email": "alex@example.com"},
        "tests": [{"name": "ALT", "value": 42}]}"#;

    fn sender() -> (Mailbox, Mailbox) {
        (
            "Pet Theory <results@pettheory.example>".parse().unwrap(),
            "desk@clinic.example".parse().unwrap(),
        )
    }

    fn compose_json(json: &str) -> Result<Email, ComposeError> {
        let (from, reply_to) = sender();
        let templates = render::templates(&Default::default()).unwrap();
        compose(
            &LabReport::parse(json.as_bytes()).unwrap(),
            &Sender {
                from: &from,
                reply_to: Some(&reply_to),
            },
            &templates,
        )
    }

    fn formatted(email: &Email) -> String {
        String::from_utf8(email.message.formatted()).unwrap()
    }

    #[test]
    fn builds_the_documented_headers() {
        let email = compose_json(REPORT).unwrap();
        let text = formatted(&email);
        for want in [
            "From: \"Pet Theory\" <results@pettheory.example>\r\n",
            "Reply-To: desk@clinic.example\r\n",
            "To: \"Alex Kim\" <alex@example.com>\r\n",
            "Subject: Lab results for Max are ready\r\n",
            "X-Report-Id: LR-1\r\n",
            "Auto-Submitted: auto-generated\r\n",
            "Content-Type: multipart/alternative;",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(
            text.contains(&format!("Message-ID: {}\r\n", email.message_id)),
            "{text}"
        );
        let plain = text.find("Content-Type: text/plain").unwrap();
        let html = text.find("Content-Type: text/html").unwrap();
        assert!(plain < html, "text/plain comes first");
    }

    /// The `Content-Transfer-Encoding` of each part, in order.
    fn encodings(text: &str) -> Vec<&str> {
        text.split("\r\n")
            .filter_map(|line| line.strip_prefix("Content-Transfer-Encoding: "))
            .collect()
    }

    #[test]
    fn line_endings_become_crlf_once() {
        assert_eq!(crlf("a\nb\r\nc\n"), "a\r\nb\r\nc\r\n");
        assert_eq!(crlf("\n"), "\r\n");
        assert_eq!(crlf("one line"), "one line");
        assert_eq!(crlf(""), "");
        assert_eq!(crlf_measured("ab\r\nabc\nx").1, 3);
    }

    #[test]
    fn an_ascii_report_goes_out_as_7bit_text_readable_as_it_is() {
        let email = compose_json(REPORT).unwrap();
        let text = formatted(&email);
        assert_eq!(encodings(&text), ["7bit", "7bit"], "{text}");
        assert!(text.contains("<td style="), "HTML as written:\n{text}");
    }

    #[test]
    fn the_html_part_stays_7bit_with_markers_and_names_beyond_ascii() {
        let flagged = REPORT
            .replace("\"Max\"", "\"Chloé\"")
            .replace(r#""value": 42}"#, r#""value": 420, "flag": "high"}"#);
        let email = compose_json(&flagged).unwrap();
        let text = formatted(&email);
        // The plain text keeps its ▲ and é, so it is encoded; the HTML
        // carries them as character references.
        assert_eq!(encodings(&text), ["quoted-printable", "7bit"], "{text}");
        assert!(text.contains("Chlo&#xE9;"), "{text}");
        assert!(text.contains("&#x25B2;&nbsp;High"), "{text}");
    }

    #[test]
    fn an_html_line_too_long_to_break_is_encoded_by_lettre() {
        let name = "Max".repeat(40);
        let email = compose_json(&REPORT.replace("\"Max\"", &format!("\"{name}\""))).unwrap();
        let text = formatted(&email);
        let html = &text[text.find("Content-Type: text/html").unwrap()..];
        assert_eq!(encodings(html), ["quoted-printable"], "{html}");
        // Every line on the wire is short; the name is whole once decoded.
        assert!(text.split("\r\n").all(|line| line.len() <= 76), "{text}");
        assert!(html.replace("=\r\n", "").contains(&name), "{html}");
    }

    #[test]
    fn message_id_is_stable_and_carries_no_personal_data() {
        let a = compose_json(REPORT).unwrap();
        let b = compose_json(REPORT).unwrap();
        assert_eq!(a.message_id, b.message_id);
        assert_eq!(a.id_left().len(), 32);
        assert!(a.id_left().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.message_id, format!("<{}@labrelay>", a.id_left()));
        for personal in ["alex", "Max", "LR-1"] {
            assert!(!a.message_id.contains(personal));
        }

        let other_recipient =
            compose_json(&REPORT.replace("alex@example.com", "sam@example.com")).unwrap();
        let other_content = compose_json(&REPORT.replace("42", "43")).unwrap();
        let other_report = compose_json(&REPORT.replace("LR-1", "LR-2")).unwrap();
        for other in [other_recipient, other_content, other_report] {
            assert_ne!(other.message_id, a.message_id);
        }
    }

    #[test]
    fn message_id_is_the_notification_logs_key_for_the_report_and_recipient() {
        let email = compose_json(REPORT).unwrap();
        let report = LabReport::parse(REPORT.as_bytes()).unwrap();
        let key = notification_hash(&report, "alex@example.com");
        assert_eq!(email.message_id, format!("<{}@labrelay>", &key[..32]));
        assert_eq!(email.recipient, "alex@example.com");
    }

    #[test]
    fn no_address_is_a_skip_and_a_bad_one_is_invalid() {
        for json in [
            r#"{"id": 12}"#,
            r#"{"id": 1, "owner": {"name": "A"}}"#,
            r#"{"id": 1, "owner": {"email": "  "}}"#,
        ] {
            assert!(
                matches!(compose_json(json), Err(ComposeError::NoAddress)),
                "{json}"
            );
        }
        for bad in [
            "not-an-address",
            "a@b@c",
            "alex@",
            "@example.com",
            "alex example@example.com",
        ] {
            let json = format!(r#"{{"id": 1, "owner": {{"email": "{bad}"}}}}"#);
            assert!(
                matches!(compose_json(&json), Err(ComposeError::InvalidAddress)),
                "{bad}"
            );
        }
    }

    #[test]
    fn header_values_cannot_inject_headers() {
        // (An id with a line break is refused at parse; names keep theirs.)
        let json = r#"{"id": "x", "pet": {"name": "Max\r\nBcc: b@evil.test"},
            "owner": {"name": "Al\r\nBcc: c@evil.test", "email": "alex@example.com"}}"#;
        let text = formatted(&compose_json(json).unwrap());
        assert!(!text.contains("\r\nBcc:"), "{text}");
    }
}
