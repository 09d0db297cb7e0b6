//! The words of the email: subject, plain text and HTML, rendered from the
//! askama templates in `templates/` (HTML auto-escaped).
//!
//! Rendering is a pure function of the report, so a redelivered report
//! renders to the same bytes and gets the same Message-ID.

use askama::Template;
use labrelay_contract::LabReport;
use labrelay_contract::report::TestResult;

/// A rendered email, before addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Longest pet name put into a subject line.
const SUBJECT_NAME_CHARS: usize = 60;

pub fn render(report: &LabReport) -> Result<Rendered, askama::Error> {
    let view = View::new(report);
    Ok(Rendered {
        subject: view.subject.clone(),
        text: TextEmail { v: &view }.render()?,
        html: seven_bit_html(&HtmlEmail { v: &view }.render()?),
    })
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

#[derive(Template)]
#[template(path = "report.txt")]
struct TextEmail<'a> {
    v: &'a View,
}

#[derive(Template)]
#[template(path = "report.html")]
struct HtmlEmail<'a> {
    v: &'a View,
}

impl std::ops::Deref for TextEmail<'_> {
    type Target = View;
    fn deref(&self) -> &View {
        self.v
    }
}

impl std::ops::Deref for HtmlEmail<'_> {
    type Target = View;
    fn deref(&self) -> &View {
        self.v
    }
}

/// What the templates show, every field already on one line.
struct View {
    subject: String,
    headline: String,
    greeting_name: String,
    pet_line: Option<String>,
    clinic_name: Option<String>,
    clinic_line: Option<String>,
    clinic_phone: Option<String>,
    clinic_or_us: String,
    issued: Option<String>,
    report_id: String,
    tests: Vec<TestRow>,
    flagged_count: usize,
    flagged_note: String,
}

struct TestRow {
    name: String,
    value: String,
    range: String,
    flag: Flag,
    flag_label: String,
    marker: &'static str,
}

impl TestRow {
    fn value_or_dash(&self) -> &str {
        if self.value.is_empty() {
            "—"
        } else {
            &self.value
        }
    }

    fn marker_text(&self) -> String {
        if self.flag.is_flagged() {
            format!("{} ", self.marker)
        } else {
            "- ".into()
        }
    }
}

/// How a result compares with its reference range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    /// No flag was sent.
    None,
    Normal,
    High,
    Low,
    /// Any other flag ("abnormal", "positive", ...), shown as sent and
    /// treated as needing attention.
    Other(String),
}

impl Flag {
    pub fn parse(flag: Option<&str>) -> Flag {
        let Some(sent) = flag.and_then(one_line) else {
            return Flag::None;
        };
        match sent.to_ascii_lowercase().as_str() {
            "normal" | "n" | "ok" | "wnl" | "within range" | "within normal limits" => Flag::Normal,
            "high" | "h" | "hi" | "hh" | "above" | "elevated" | "critical high" => Flag::High,
            "low" | "l" | "lo" | "ll" | "below" | "decreased" | "critical low" => Flag::Low,
            _ => Flag::Other(sent),
        }
    }

    pub fn is_flagged(&self) -> bool {
        !matches!(self, Flag::None | Flag::Normal)
    }

    fn label(&self) -> String {
        match self {
            Flag::None => String::new(),
            Flag::Normal => "Normal".into(),
            Flag::High => "High".into(),
            Flag::Low => "Low".into(),
            Flag::Other(sent) => sent.clone(),
        }
    }

    fn marker(&self) -> &'static str {
        match self {
            Flag::High => "▲",
            Flag::Low => "▼",
            Flag::Other(_) => "!",
            Flag::None | Flag::Normal => "",
        }
    }
}

impl View {
    fn new(report: &LabReport) -> View {
        let pet_name = report.pet.name.as_deref().and_then(one_line);
        let species = report.pet.species.as_deref().and_then(one_line);
        let clinic_name = report.clinic.name.as_deref().and_then(one_line);
        let clinic_phone = report.clinic.phone.as_deref().and_then(one_line);

        let subject = match &pet_name {
            Some(name) => format!(
                "Lab results for {} are ready",
                truncate(name, SUBJECT_NAME_CHARS)
            ),
            None => "Your pet's lab results are ready".to_string(),
        };
        let pet_line = match (&pet_name, &species) {
            (Some(name), Some(species)) => Some(format!("{name} ({species})")),
            (Some(one), None) | (None, Some(one)) => Some(one.clone()),
            (None, None) => None,
        };
        let clinic_line = match (&clinic_name, &clinic_phone) {
            (Some(name), Some(phone)) => Some(format!("{name}, {phone}")),
            (Some(one), None) | (None, Some(one)) => Some(one.clone()),
            (None, None) => None,
        };
        let tests: Vec<TestRow> = report
            .tests
            .iter()
            .enumerate()
            .map(|(i, t)| row(i, t))
            .collect();
        let flagged_count = tests.iter().filter(|t| t.flag.is_flagged()).count();
        let flagged_note = match flagged_count {
            1 => "1 result is outside its reference range and is marked.".to_string(),
            n => format!("{n} results are outside their reference ranges and are marked."),
        };
        View {
            headline: subject.clone(),
            subject,
            greeting_name: report
                .owner
                .name
                .as_deref()
                .and_then(one_line)
                .unwrap_or_else(|| "there".into()),
            pet_line,
            clinic_or_us: clinic_name.clone().unwrap_or_else(|| "your clinic".into()),
            clinic_name,
            clinic_line,
            clinic_phone,
            issued: report
                .issued_at
                .as_deref()
                .and_then(one_line)
                .map(|t| format_issued(&t)),
            report_id: one_line(&report.id.to_string()).unwrap_or_default(),
            tests,
            flagged_count,
            flagged_note,
        }
    }
}

fn row(index: usize, test: &TestResult) -> TestRow {
    let value = one_line(&test.value_text()).unwrap_or_default();
    let unit = test.unit.as_deref().and_then(one_line);
    let flag = Flag::parse(test.flag.as_deref());
    TestRow {
        name: test
            .name
            .as_deref()
            .and_then(one_line)
            .unwrap_or_else(|| format!("Test {}", index + 1)),
        value: match unit {
            Some(unit) if !value.is_empty() => format!("{value} {unit}"),
            _ => value,
        },
        range: test.range.as_deref().and_then(one_line).unwrap_or_default(),
        flag_label: flag.label(),
        marker: flag.marker(),
        flag,
    }
}

/// Collapses all whitespace and control characters (line breaks included)
/// into single spaces; `None` when nothing is left.
pub fn one_line(text: &str) -> Option<String> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", text[..cut].trim_end()),
        None => text.to_string(),
    }
}

/// `2026-11-24T10:00:00Z` → `24 November 2026, 10:00 UTC`; an offset is
/// kept (`10:00 (UTC+02:00)`); anything else is shown as sent.
pub fn format_issued(sent: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let parse = || -> Option<String> {
        let (date, time) = sent.split_once(['T', 't', ' '])?;
        let mut ymd = date.splitn(3, '-');
        let (y, m, d) = (ymd.next()?, ymd.next()?, ymd.next()?);
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if !(digits(y, 4) && digits(m, 2) && digits(d, 2)) {
            return None;
        }
        let month = MONTHS.get(m.parse::<usize>().ok()?.checked_sub(1)?)?;
        let day: u32 = d.parse().ok().filter(|d| (1..=31).contains(d))?;
        let (hh, mm) = (time.get(0..2)?, time.get(3..5)?);
        if !(digits(hh, 2) && digits(mm, 2) && time.get(2..3) == Some(":")) {
            return None;
        }
        let zone_at = time.find(['Z', 'z', '+', '-']);
        let clock = &time[..zone_at.unwrap_or(time.len())];
        if !clock
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
        {
            return None;
        }
        let zone = match zone_at.map(|i| &time[i..]) {
            Some("Z" | "z" | "+00:00") => " UTC".to_string(),
            Some(offset) if offset.len() == 6 && offset.as_bytes()[3] == b':' => {
                format!(" (UTC{offset})")
            }
            None => String::new(),
            Some(_) => return None,
        };
        Some(format!("{day} {month} {y}, {hh}:{mm}{zone}"))
    };
    parse().unwrap_or_else(|| sent.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: &str) -> LabReport {
        LabReport::parse(json.as_bytes()).unwrap()
    }

    /// The HTML's text as a browser reads it: a line break is a space.
    fn as_read(html: &str) -> String {
        html.replace('\n', " ")
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

    #[test]
    fn classifies_flags() {
        let cases = [
            (None, Flag::None),
            (Some("  "), Flag::None),
            (Some("normal"), Flag::Normal),
            (Some("N"), Flag::Normal),
            (Some("High"), Flag::High),
            (Some("H"), Flag::High),
            (Some("critical high"), Flag::High),
            (Some("LOW"), Flag::Low),
            (Some("l"), Flag::Low),
            (Some("abnormal"), Flag::Other("abnormal".into())),
        ];
        for (sent, want) in cases {
            assert_eq!(Flag::parse(sent), want, "{sent:?}");
        }
        assert!(!Flag::Normal.is_flagged() && !Flag::None.is_flagged());
        assert!(
            Flag::High.is_flagged()
                && Flag::Low.is_flagged()
                && Flag::Other("x".into()).is_flagged()
        );
    }

    #[test]
    fn formats_issue_times() {
        let cases = [
            ("2026-11-24T10:00:00Z", "24 November 2026, 10:00 UTC"),
            ("2026-01-05T07:30:12.345Z", "5 January 2026, 07:30 UTC"),
            (
                "2026-06-01T23:59:00+02:00",
                "1 June 2026, 23:59 (UTC+02:00)",
            ),
            (
                "2026-06-01T23:59:00-05:30",
                "1 June 2026, 23:59 (UTC-05:30)",
            ),
            ("2026-06-01 08:15", "1 June 2026, 08:15"),
            ("2026-13-01T00:00:00Z", "2026-13-01T00:00:00Z"),
            ("yesterday", "yesterday"),
            ("2026-06-01", "2026-06-01"),
            ("2026-06-01T08:15:00 garbage", "2026-06-01T08:15:00 garbage"),
        ];
        for (sent, want) in cases {
            assert_eq!(format_issued(sent), want, "{sent}");
        }
    }

    #[test]
    fn one_line_collapses_whitespace_and_controls() {
        assert_eq!(one_line("  a\r\n\tb \u{7}c "), Some("a b c".into()));
        assert_eq!(one_line(" \n "), None);
    }
}
