//! What a template sees of a report: a small, documented context (see
//! `docs/templates.md`), never the report's whole JSON, so a field a lab
//! adds does not reach an owner's inbox by accident. Every text is on one
//! line (runs of whitespace and control characters become one space), and
//! a field the report lacks is `none`.

use labrelay_contract::LabReport;
use labrelay_contract::report::TestResult;
use serde::Serialize;

use crate::Locale;
use crate::dates::format_issued;

/// The context of the email templates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportView {
    /// The locale the notification is written in, as its templates'
    /// directory is named: `en`, `ko`, `ko-KR`.
    pub locale: String,
    pub report_id: String,
    pub clinic: ClinicView,
    pub pet: PetView,
    pub owner: OwnerView,
    /// `issuedAt` as the locale's language writes it ([`format_issued`]).
    pub issued_at: Option<String>,
    /// `issuedAt` as sent.
    pub issued_at_sent: Option<String>,
    pub tests: Vec<TestView>,
    /// How many tests are flagged (`high`, `low` or `other`).
    pub flagged_count: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClinicView {
    pub name: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PetView {
    pub name: Option<String>,
    pub species: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OwnerView {
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestView {
    pub name: Option<String>,
    /// The value as a person reads it (`42`, `positive`).
    pub value: Option<String>,
    pub unit: Option<String>,
    /// The value with its unit (`42 U/L`); `none` without a value.
    pub result: Option<String>,
    pub range: Option<String>,
    /// `normal`, `high`, `low`, `other` (any other flag), or `none`.
    pub flag: Option<&'static str>,
    /// The flag as the lab sent it.
    pub flag_sent: Option<String>,
    /// `high`, `low` or `other`: worth the owner's attention.
    pub flagged: bool,
}

impl ReportView {
    pub fn new(report: &LabReport, locale: &Locale) -> ReportView {
        let tests: Vec<TestView> = report.tests.iter().map(TestView::new).collect();
        let text = |field: &Option<String>| field.as_deref().and_then(one_line);
        ReportView {
            locale: locale.name().to_string(),
            report_id: one_line(&report.id.to_string()).unwrap_or_default(),
            clinic: ClinicView {
                name: text(&report.clinic.name),
                phone: text(&report.clinic.phone),
            },
            pet: PetView {
                name: text(&report.pet.name),
                species: text(&report.pet.species),
            },
            owner: OwnerView {
                name: text(&report.owner.name),
            },
            issued_at: text(&report.issued_at).map(|at| format_issued(&at, &locale.language())),
            issued_at_sent: text(&report.issued_at),
            flagged_count: tests.iter().filter(|t| t.flagged).count(),
            tests,
        }
    }
}

impl TestView {
    fn new(test: &TestResult) -> TestView {
        let value = one_line(&test.value_text());
        let unit = test.unit.as_deref().and_then(one_line);
        let flag = Flag::parse(test.flag.as_deref());
        TestView {
            name: test.name.as_deref().and_then(one_line),
            result: value.as_ref().map(|value| match &unit {
                Some(unit) => format!("{value} {unit}"),
                None => value.clone(),
            }),
            value,
            unit,
            range: test.range.as_deref().and_then(one_line),
            flag: flag.name(),
            flag_sent: test.flag.as_deref().and_then(one_line),
            flagged: flag.is_flagged(),
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
    /// Any other flag ("abnormal", "positive", ...), treated as needing
    /// attention.
    Other,
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
            _ => Flag::Other,
        }
    }

    pub fn is_flagged(&self) -> bool {
        !matches!(self, Flag::None | Flag::Normal)
    }

    /// What templates see as `test.flag`.
    fn name(&self) -> Option<&'static str> {
        match self {
            Flag::None => None,
            Flag::Normal => Some("normal"),
            Flag::High => Some("high"),
            Flag::Low => Some("low"),
            Flag::Other => Some("other"),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
            (Some("abnormal"), Flag::Other),
        ];
        for (sent, want) in cases {
            assert_eq!(Flag::parse(sent), want, "{sent:?}");
        }
        assert!(!Flag::Normal.is_flagged() && !Flag::None.is_flagged());
        assert!(Flag::High.is_flagged() && Flag::Low.is_flagged() && Flag::Other.is_flagged());
    }

    #[test]
    fn one_line_collapses_whitespace_and_controls() {
        assert_eq!(one_line("  a\r\n\tb \u{7}c "), Some("a b c".into()));
        assert_eq!(one_line(" \n "), None);
    }
}
