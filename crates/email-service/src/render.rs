//! The words of the email: subject, plain text and HTML, rendered from
//! the templates of the report's locale ([`labrelay_templates`]: built in,
//! or the clinic's), the HTML auto-escaped and then written as 7-bit ASCII
//! in short lines.
//!
//! Rendering is a pure function of the report and the templates, so a
//! redelivered report renders to the same bytes; the Message-ID does not
//! depend on either (see [`crate::email`]).

use labrelay_contract::LabReport;
use labrelay_templates::{Kind, Locale, ReportView, TemplateError, TemplateSettings, Templates};

/// A rendered email, before addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The templates an email is made of.
pub const KINDS: [Kind; 3] = [Kind::EmailSubject, Kind::EmailText, Kind::EmailHtml];

/// `report`'s email in `locale`: the subject on one line (a header), the
/// text and HTML bodies with the subject in their context.
pub fn render(
    templates: &Templates,
    locale: &Locale,
    report: &LabReport,
) -> Result<Rendered, TemplateError> {
    let view = minijinja::Value::from(minijinja::value::Serde(ReportView::new(report, locale)));
    let subject = templates.render(locale, Kind::EmailSubject, view.clone())?;
    let subject = one_line(&subject).unwrap_or_default();
    let body = minijinja::context! { subject => subject.clone(), ..view };
    Ok(Rendered {
        text: templates.render(locale, Kind::EmailText, body.clone())?,
        html: seven_bit_html(&templates.render(locale, Kind::EmailHtml, body)?),
        subject,
    })
}

/// The email templates, built in and the clinic's, compiled and checked
/// ([`check`]): what the service renders with, or why it cannot start.
pub fn templates(settings: &TemplateSettings) -> Result<Templates, TemplateError> {
    let templates = Templates::load(settings, &KINDS)?;
    check(&templates)?;
    Ok(templates)
}

/// Checks every locale's email templates at start, by rendering the
/// sample reports: a template that fails, or whose subject is empty, is
/// an error naming its file.
pub fn check(templates: &Templates) -> Result<(), TemplateError> {
    for locale in templates.locales() {
        for sample in labrelay_templates::sample_reports() {
            let rendered = render(templates, locale, &sample)?;
            if rendered.subject.is_empty() {
                return Err(TemplateError::Unusable {
                    file: templates.file(locale, Kind::EmailSubject),
                    problem: "the subject is empty".into(),
                });
            }
        }
    }
    Ok(())
}

/// Longest line of the HTML part. lettre sends a part whose lines are all
/// shorter than 76 characters (counting the line break, and the `\r` of
/// the CRLF endings the message is given in) and ASCII as 7bit, readable
/// as it is, and anything else as quoted-printable or base64, which costs
/// more to encode and to read in a file outbox.
pub(crate) const HTML_LINE: usize = 73;

/// The HTML as ASCII in short lines: every other character becomes a
/// numeric character reference, and a line longer than [`HTML_LINE`] is
/// broken at its last space within the limit (or its first space beyond
/// it). A line break is whitespace to HTML as a space is, in text and in
/// the attribute values of these templates, which preserve no whitespace.
fn seven_bit_html(html: &str) -> String {
    use std::fmt::Write as _;
    let ascii = if html.is_ascii() {
        std::borrow::Cow::Borrowed(html)
    } else {
        let mut ascii = String::with_capacity(html.len() + 64);
        for c in html.chars() {
            if c.is_ascii() {
                ascii.push(c);
            } else {
                let _ = write!(ascii, "&#x{:X};", u32::from(c));
            }
        }
        std::borrow::Cow::Owned(ascii)
    };
    let mut out = String::with_capacity(ascii.len() + 64);
    for (i, mut line) in ascii.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        while line.len() > HTML_LINE {
            let window = &line[..=HTML_LINE];
            let Some(space) = window
                .rfind(' ')
                .or_else(|| line[HTML_LINE..].find(' ').map(|at| at + HTML_LINE))
            else {
                break;
            };
            out.push_str(&line[..space]);
            out.push('\n');
            line = &line[space + 1..];
        }
        out.push_str(line);
    }
    out
}

pub use labrelay_templates::one_line;

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: &str) -> LabReport {
        LabReport::parse(json.as_bytes()).unwrap()
    }

    /// `report`'s email in its locale, from the built-in templates.
    fn render(report: &LabReport) -> Result<Rendered, TemplateError> {
        let templates = templates(&Default::default()).unwrap();
        super::render(&templates, templates.locale_for(report), report)
    }

    /// The HTML's text as a browser reads it: a line break is a space, an
    /// escaped `/` (minijinja escapes it too) a `/`.
    fn as_read(html: &str) -> String {
        html.replace('\n', " ").replace("&#x2f;", "/")
    }

    const FULL: &str = r#"{
        "id": "LR-2026-000123",
        "clinic": {"name": "Pet Theory Downtown", "phone": "+15551230000"},
        "pet": {"name": "Max", "species": "dog"},
        "owner": {"name": "Alex Kim", "email": "alex@example.com", "phone": "+15551234567"},
        "tests": [
            {"name": "ALT", "value": 42, "unit": "U/L", "range": "10-100", "flag": "normal"},
            {"name": "Glucose", "value": 180.5, "unit": "mg/dL", "range": "70-140", "flag": "high"},
            {"name": "Platelets", "value": "90", "unit": "10^9/L", "range": "150-500", "flag": "L"},
            {"name": "Heartworm", "value": "positive", "flag": "abnormal"}
        ],
        "issuedAt": "2026-11-24T10:00:00Z"
    }"#;

    #[test]
    fn renders_every_part_of_a_full_report() {
        let r = render(&report(FULL)).unwrap();
        assert_eq!(r.subject, "Lab results for Max are ready");
        for body in [&r.text, &as_read(&r.html)] {
            for want in [
                "Alex Kim",
                "Max (dog)",
                "Pet Theory Downtown",
                "+15551230000",
                "24 November 2026, 10:00 UTC",
                "LR-2026-000123",
                "42 U/L",
                "10-100",
                "180.5 mg/dL",
                "70-140",
                "90 10^9/L",
                "150-500",
                "positive",
                "3 results are outside their reference ranges",
            ] {
                assert!(body.contains(want), "{want:?} missing from:\n{body}");
            }
        }
        assert!(
            r.text.contains("▲ Glucose: 180.5 mg/dL (High)"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("▼ Platelets: 90 10^9/L (Low)"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("! Heartworm: positive (abnormal)"),
            "{}",
            r.text
        );
        assert!(
            r.text
                .contains("- ALT: 42 U/L (Normal)\n  Reference range: 10-100"),
            "{}",
            r.text
        );
        assert!(r.html.contains("&#x25B2;&nbsp;High"), "{}", r.html);
        assert!(r.html.contains("max-width:600px"));
        for line in r.html.lines() {
            assert!(line.len() <= HTML_LINE && line.is_ascii(), "{line:?}");
        }
        assert!(!r.html.contains("<img"), "no images, external or not");
        assert!(
            !r.text.contains('<'),
            "the text part carries no markup:\n{}",
            r.text
        );
    }

    #[test]
    fn the_plain_text_reads_well() {
        let r = render(&report(FULL)).unwrap();
        let want = "\
Hello Alex Kim,

Lab results for Max are ready.

Pet:     Max (dog)
Clinic:  Pet Theory Downtown, +15551230000
Issued:  24 November 2026, 10:00 UTC
Report:  LR-2026-000123

RESULTS

3 results are outside their reference ranges and are marked.

- ALT: 42 U/L (Normal)
  Reference range: 10-100

▲ Glucose: 180.5 mg/dL (High)
  Reference range: 70-140

▼ Platelets: 90 10^9/L (Low)
  Reference range: 150-500

! Heartworm: positive (abnormal)

Questions? Call Pet Theory Downtown at +15551230000.

--
This message was sent automatically; your veterinarian will discuss
the results with you.";
        assert_eq!(r.text.trim_end(), want);
    }

    #[test]
    fn falls_back_when_fields_are_missing() {
        let r = render(&report(r#"{"id": 12}"#)).unwrap();
        let want = "\
Hello there,

Your pet's lab results are ready.

Report:  12

Your clinic will go through the details with you.

Questions? Contact your clinic.

--";
        assert!(r.text.starts_with(want), "{}", r.text);
        assert_eq!(r.subject, "Your pet's lab results are ready");
        assert!(r.text.starts_with("Hello there,"), "{}", r.text);
        assert!(r.text.contains("Report:  12"), "{}", r.text);
        assert!(
            r.text
                .contains("Your clinic will go through the details with you.")
        );
        assert!(r.text.contains("Questions? Contact your clinic."));
        assert!(!r.text.contains("Pet:"), "{}", r.text);
        assert!(as_read(&r.html).contains("Your clinic will go through the details with you."));

        let r = render(&report(
            r#"{"id": 1, "tests": [{"value": 3}, {"name": "X", "unit": "g"}]}"#,
        ))
        .unwrap();
        assert!(r.text.contains("- Test 1: 3\n"), "{}", r.text);
        assert!(r.text.contains("- X: —\n"), "{}", r.text);
    }

    #[test]
    fn escapes_html_and_keeps_headers_on_one_line() {
        // (An id with a line break is refused at parse; names keep theirs.)
        let hostile = r#"{"id": "a", "pet": {"name": "<script>alert(1)</script>\r\nBcc: x@evil.test"},
            "clinic": {"phone": "\"><b>"}, "tests": [{"name": "<b>ALT</b>", "value": "<i>1</i>"}]}"#;
        let r = render(&report(hostile)).unwrap();
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(!r.html.contains("<b>"), "{}", r.html);
        assert!(!r.html.contains("<i>"), "{}", r.html);
        assert!(
            r.html.contains("&#60;script&#62;") || r.html.contains("&lt;script&gt;"),
            "{}",
            r.html
        );
        assert!(!r.subject.contains(['\r', '\n']), "{}", r.subject);
        assert!(
            r.text
                .contains("<script>alert(1)</script> Bcc: x@evil.test"),
            "the text part is not HTML"
        );
    }

    #[test]
    fn long_names_are_cut_in_the_subject_only() {
        let name = "N".repeat(200);
        let r = render(&report(&format!(
            r#"{{"id": 1, "pet": {{"name": "{name}"}}}}"#
        )))
        .unwrap();
        assert_eq!(
            r.subject,
            format!("Lab results for {}… are ready", "N".repeat(60))
        );
        assert!(r.text.contains(&name));
    }

    #[test]
    fn renders_the_same_bytes_every_time() {
        assert_eq!(
            render(&report(FULL)).unwrap(),
            render(&report(FULL)).unwrap()
        );
    }
}
