//! The lab report: what a lab POSTs and what travels, unchanged, as the
//! Pub/Sub message data.
//!
//! Only `id` is required (a JSON integer, or a non-empty string of at most
//! 128 characters with no control or invisible formatting characters); the
//! seed's test reports are exactly `{"id": 12}`. The
//! other fields are optional, but when present they must have the documented
//! types, so that a report accepted at ingest can always be rendered. Fields
//! this crate does not know are kept as sent.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest string id accepted.
pub const MAX_ID_CHARS: usize = 128;

/// Why a body is not a lab report. The message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("`id` is required")]
    MissingId,
    #[error(
        "`id` must be a JSON integer or a non-empty string of at most {MAX_ID_CHARS} characters"
    )]
    InvalidId,
    /// The id would be logged, and a newline, a carriage return or a
    /// right-to-left override in it could forge or disguise log lines.
    #[error(
        "`id` must not contain control, line-separator or invisible formatting characters \
         (it contains U+{:04X})",
        u32::from(*.0)
    )]
    IdCharacter(char),
    #[error("`{field}` {problem}")]
    InvalidField { field: String, problem: String },
}

/// A report's id, as the lab sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReportId {
    Number(i64),
    Text(String),
}

impl ReportId {
    pub fn parse(value: &Value) -> Result<ReportId, ReportError> {
        match value {
            Value::Number(n) => n
                .as_i64()
                .map(ReportId::Number)
                .ok_or(ReportError::InvalidId),
            Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_ID_CHARS => {
                match s.chars().find(|&c| refused_in_id(c)) {
                    Some(c) => Err(ReportError::IdCharacter(c)),
                    None => Ok(ReportId::Text(s.clone())),
                }
            }
            _ => Err(ReportError::InvalidId),
        }
    }
}

/// Characters an id may not contain: controls (Unicode category Cc: C0,
/// DEL, C1, so `\n`, `\r`, `\t`, NUL), the line and paragraph separators
/// (U+2028, U+2029), and the invisible format characters (category Cf:
/// bidi marks, embeddings, overrides and isolates, zero-width characters,
/// the BOM, tags).
fn refused_in_id(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_format(c)
}

/// Unicode general category Cf (Unicode 16.0), which the standard library
/// does not expose.
fn is_format(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

impl fmt::Display for ReportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportId::Number(n) => write!(f, "{n}"),
            ReportId::Text(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Clinic {
    pub name: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pet {
    pub name: Option<String>,
    pub species: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    pub name: Option<String>,
    /// As sent; the email-service checks that it is an address.
    pub email: Option<String>,
    /// As sent; the sms-service checks that it is E.164.
    pub phone: Option<String>,
    /// The language the owner reads (`ko-KR`, `en-US`). Checked for the
    /// shape of a tag here; one no template speaks falls back when the
    /// notification is written (to the clinic's default, then English).
    pub locale: Option<LanguageTag>,
}

/// A BCP 47 language tag, checked for its shape only (RFC 5646's
/// `langtag`: a 2-8 letter language, then subtags of 1-8 letters or
/// digits, split by `-`), not against the registry: `ko-KR`, `en`,
/// `zh-Hant-TW`, `es-419`. Kept as sent; compared without regard to case,
/// as the RFC says tags are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LanguageTag(String);

/// Longest tag accepted; real ones are far shorter.
const MAX_TAG_CHARS: usize = 35;

impl LanguageTag {
    pub fn parse(tag: &str) -> Result<LanguageTag, ReportError> {
        let mut subtags = tag.split('-');
        let language = subtags.next().unwrap_or_default();
        let well_formed = tag.len() <= MAX_TAG_CHARS
            && (2..=8).contains(&language.len())
            && language.bytes().all(|b| b.is_ascii_alphabetic())
            && subtags.all(|s| {
                (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        if well_formed {
            Ok(LanguageTag(tag.to_string()))
        } else {
            Err(ReportError::InvalidField {
                field: "owner.locale".into(),
                problem: "must be a BCP 47 language tag such as `ko-KR` or `en-US`".into(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The primary language subtag, lower case: `ko` for `ko-KR`.
    pub fn language(&self) -> String {
        self.0
            .split('-')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }
}

impl TryFrom<String> for LanguageTag {
    type Error = ReportError;
    fn try_from(tag: String) -> Result<LanguageTag, ReportError> {
        LanguageTag::parse(&tag)
    }
}

impl From<LanguageTag> for String {
    fn from(tag: LanguageTag) -> String {
        tag.0
    }
}

impl fmt::Display for LanguageTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One test result. `value` may be a number or a string ("positive").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub name: Option<String>,
    pub value: Option<Value>,
    pub unit: Option<String>,
    pub range: Option<String>,
    pub flag: Option<String>,
}

impl TestResult {
    /// The value as a person would read it.
    pub fn value_text(&self) -> String {
        match &self.value {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    }
}

/// A validated lab report.
#[derive(Debug, Clone, PartialEq)]
pub struct LabReport {
    pub id: ReportId,
    pub clinic: Clinic,
    pub pet: Pet,
    pub owner: Owner,
    pub tests: Vec<TestResult>,
    pub issued_at: Option<String>,
    /// The whole body as sent, unknown fields included.
    raw: Raw,
}

/// A report's JSON as sent: parsed at ingest, the bytes of a published one.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Object(serde_json::Map<String, Value>),
    Bytes(Vec<u8>),
}

/// The known fields of a report, read in one pass (unknown ones skipped).
#[derive(Deserialize)]
struct Known {
    id: Option<Value>,
    clinic: Option<Clinic>,
    pet: Option<Pet>,
    owner: Option<Owner>,
    tests: Option<Vec<TestResult>>,
    #[serde(rename = "issuedAt")]
    issued_at: Option<String>,
}

fn typed<T: for<'de> Deserialize<'de> + Default>(
    raw: &serde_json::Map<String, Value>,
    field: &str,
) -> Result<T, ReportError> {
    match raw.get(field) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(value) => T::deserialize(value).map_err(|e| {
            bad_locale(field, value).unwrap_or_else(|| ReportError::InvalidField {
                field: field.to_string(),
                problem: format!("has the wrong shape: {e}"),
            })
        }),
    }
}

/// `owner.locale`'s own error, when that is what is wrong with `owner`.
fn bad_locale(field: &str, value: &Value) -> Option<ReportError> {
    match value.get("locale")? {
        Value::String(tag) if field == "owner" => LanguageTag::parse(tag).err(),
        _ => None,
    }
}

/// The index of the first test whose value is an array or an object (a
/// value must be a number or a string).
fn structured_value(tests: &[TestResult]) -> Option<usize> {
    tests
        .iter()
        .position(|t| matches!(t.value, Some(Value::Array(_)) | Some(Value::Object(_))))
}

impl LabReport {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<LabReport, ReportError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ReportError::Json(e.to_string()))?;
        let Value::Object(raw) = value else {
            return Err(ReportError::NotAnObject);
        };
        let id = ReportId::parse(raw.get("id").ok_or(ReportError::MissingId)?)?;
        let tests: Vec<TestResult> = typed(&raw, "tests")?;
        if let Some(i) = structured_value(&tests) {
            return Err(ReportError::InvalidField {
                field: format!("tests[{i}].value"),
                problem: "must be a number or a string".into(),
            });
        }
        Ok(LabReport {
            id,
            clinic: typed(&raw, "clinic")?,
            pet: typed(&raw, "pet")?,
            owner: typed(&raw, "owner")?,
            tests,
            issued_at: typed::<Option<String>>(&raw, "issuedAt")?,
            raw: Raw::Object(raw),
        })
    }

    /// Reads the data of a published message: a report that was validated
    /// by [`LabReport::parse`] at ingest. The known fields are read in one
    /// pass, with no tree of every value built and dropped (a tenth of a
    /// push receiver's CPU); anything that pass refuses (a malformed or
    /// invalid report, a duplicate field) goes through [`LabReport::parse`],
    /// which decides and words the error. It accepts what `parse` accepts,
    /// and also a number out of `f64`'s range in a field it does not read.
    pub fn from_published(data: Vec<u8>) -> Result<LabReport, ReportError> {
        let known = std::str::from_utf8(&data)
            .ok()
            .and_then(|text| serde_json::from_str::<Known>(text).ok());
        let report = known.and_then(|known| {
            let tests = known.tests.unwrap_or_default();
            if structured_value(&tests).is_some() {
                return None;
            }
            Some(LabReport {
                id: ReportId::parse(known.id.as_ref()?).ok()?,
                clinic: known.clinic.unwrap_or_default(),
                pet: known.pet.unwrap_or_default(),
                owner: known.owner.unwrap_or_default(),
                tests,
                issued_at: known.issued_at,
                raw: Raw::Bytes(Vec::new()),
            })
        });
        match report {
            Some(report) => Ok(LabReport {
                raw: Raw::Bytes(data),
                ..report
            }),
            None => LabReport::parse(&data),
        }
    }

    /// The report as JSON, exactly the fields that were sent.
    pub fn to_json(&self) -> Vec<u8> {
        match &self.raw {
            Raw::Object(raw) => serde_json::to_vec(raw).unwrap_or_default(),
            Raw::Bytes(bytes) => bytes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
        "id": "LR-2026-000123",
        "clinic": {"name": "Pet Theory Downtown", "phone": "+15551230000"},
        "pet": {"name": "Max", "species": "dog"},
        "owner": {"name": "Alex Kim", "email": "alex@example.com", "phone": "+15551234567"},
        "tests": [{"name": "ALT", "value": 42, "unit": "U/L", "range": "10-100", "flag": "normal"}],
        "issuedAt": "2026-11-24T10:00:00Z",
        "labReference": "kept as sent"
    }"#;

    #[test]
    fn parses_the_documented_report_and_keeps_unknown_fields() {
        let report = LabReport::parse(FULL.as_bytes()).unwrap();
        assert_eq!(report.id, ReportId::Text("LR-2026-000123".into()));
        assert_eq!(report.pet.name.as_deref(), Some("Max"));
        assert_eq!(report.owner.email.as_deref(), Some("alex@example.com"));
        assert_eq!(report.tests[0].value_text(), "42");
        let back: Value = serde_json::from_slice(&report.to_json()).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(FULL).unwrap());
    }

    #[test]
    fn a_published_report_reads_as_parse_reads_it() {
        let seed = br#"{"id": 12}"#.as_slice();
        let duplicate = br#"{"id": 1, "pet": {"name": "A"}, "pet": {"name": "B"}}"#.as_slice();
        for body in [FULL.as_bytes(), seed, duplicate] {
            let published = LabReport::from_published(body.to_vec()).unwrap();
            let parsed = LabReport::parse(body).unwrap();
            let back: Value = serde_json::from_slice(&published.to_json()).unwrap();
            assert_eq!(back, serde_json::from_slice::<Value>(body).unwrap());
            assert_eq!(
                (published.id, published.clinic, published.pet),
                (parsed.id, parsed.clinic, parsed.pet)
            );
            assert_eq!(
                (published.owner, published.tests, published.issued_at),
                (parsed.owner, parsed.tests, parsed.issued_at)
            );
        }
        // The last of a duplicate field wins, as in `parse`.
        let published = LabReport::from_published(duplicate.to_vec()).unwrap();
        assert_eq!(published.pet.name.as_deref(), Some("B"));
    }

    #[test]
    fn a_bad_published_report_is_refused_as_parse_refuses_it() {
        let long = format!(r#"{{"id": "{}"}}"#, "x".repeat(129));
        let cases: &[&[u8]] = &[
            b"",
            b"{",
            b"[1]",
            b"{}",
            br#"{"id": null}"#,
            br#"{"id": 1.5}"#,
            long.as_bytes(),
            br#"{"id": 1, "owner": "alex"}"#,
            br#"{"id": 1, "tests": [{"value": [1]}]}"#,
            b"{\"id\": 1, \"pet\": {\"name\": \"\xff\"}}",
        ];
        for body in cases {
            assert_eq!(
                LabReport::from_published(body.to_vec()).unwrap_err(),
                LabReport::parse(body).unwrap_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn accepts_the_seed_body() {
        let report = LabReport::parse(br#"{"id": 12}"#).unwrap();
        assert_eq!(report.id.to_string(), "12");
        assert_eq!(report.owner, Owner::default());
        assert!(report.tests.is_empty());
    }

    #[test]
    fn rejects_bad_bodies_saying_why() {
        let long = format!(r#"{{"id": "{}"}}"#, "x".repeat(129));
        let cases: &[(&str, &str)] = &[
            ("", "not valid JSON"),
            ("{", "not valid JSON"),
            ("[1]", "JSON object"),
            ("{}", "`id` is required"),
            (r#"{"id": null}"#, "`id` must be"),
            (r#"{"id": ""}"#, "`id` must be"),
            (r#"{"id": 1.5}"#, "`id` must be"),
            (r#"{"id": true}"#, "`id` must be"),
            (&long, "`id` must be"),
            (r#"{"id": 1, "owner": "alex"}"#, "`owner`"),
            (r#"{"id": 1, "owner": {"email": 7}}"#, "`owner`"),
            (r#"{"id": 1, "tests": {}}"#, "`tests`"),
            (
                r#"{"id": 1, "tests": [{"value": [1]}]}"#,
                "`tests[0].value`",
            ),
        ];
        for (body, want) in cases {
            let err = LabReport::parse(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
        let max = format!(r#"{{"id": "{}"}}"#, "é".repeat(128));
        assert!(LabReport::parse(max.as_bytes()).is_ok());
    }

    #[test]
    fn an_owner_locale_must_have_the_shape_of_a_language_tag() {
        for tag in [
            "ko-KR",
            "en",
            "en-US",
            "zh-Hant-TW",
            "es-419",
            "KO-kr",
            "xx-YY",
        ] {
            let body = serde_json::json!({"id": 1, "owner": {"locale": tag}}).to_string();
            let report = LabReport::parse(body.as_bytes()).unwrap();
            assert_eq!(
                report.owner.locale.as_ref().map(LanguageTag::as_str),
                Some(tag)
            );
            let published = LabReport::from_published(body.into_bytes()).unwrap();
            assert_eq!(published.owner, report.owner);
        }
        assert_eq!(LanguageTag::parse("KO-kr").unwrap().language(), "ko");
        for bad in [
            "",
            "k",
            "ko_KR",
            "ko-",
            "-KR",
            "한국어",
            "ko KR",
            "ko-KR-toolongsubtag",
            "1a",
        ] {
            let body = serde_json::json!({"id": 1, "owner": {"locale": bad}}).to_string();
            let error = LabReport::parse(body.as_bytes()).unwrap_err();
            assert_eq!(
                error.to_string(),
                "`owner.locale` must be a BCP 47 language tag such as `ko-KR` or `en-US`",
                "{bad:?}"
            );
            assert_eq!(
                LabReport::from_published(body.into_bytes()).unwrap_err(),
                error
            );
        }
        let body = br#"{"id": 1, "owner": {"locale": 7}}"#;
        assert!(
            LabReport::parse(body)
                .unwrap_err()
                .to_string()
                .contains("`owner`")
        );
    }

    #[test]
    fn refuses_ids_that_could_forge_or_disguise_log_lines() {
        let cases: &[(&str, &str)] = &[
            ("LR-1\nWARN forged", "U+000A"),
            ("LR-1\r", "U+000D"),
            ("\tLR-1", "U+0009"),
            ("LR\u{0}1", "U+0000"),
            ("LR\u{7f}1", "U+007F"),
            ("LR\u{85}1", "U+0085"),
            ("LR\u{9b}1", "U+009B"),
            ("LR-1\u{2028}", "U+2028"),
            ("LR-\u{200e}1", "U+200E"),
            ("LR-\u{200f}1", "U+200F"),
            ("LR-\u{202e}1-gpj.exe", "U+202E"),
            ("LR-\u{202a}1", "U+202A"),
            ("LR-\u{2066}1\u{2069}", "U+2066"),
            ("LR-\u{200b}1", "U+200B"),
            ("\u{feff}LR-1", "U+FEFF"),
            ("LR-1\u{e0041}", "U+E0041"),
        ];
        for (id, code) in cases {
            let body = serde_json::json!({ "id": id }).to_string();
            let error = LabReport::parse(body.as_bytes()).unwrap_err();
            assert!(matches!(error, ReportError::IdCharacter(_)), "{id:?}");
            let message = error.to_string();
            assert!(message.contains(code), "{id:?}: {message}");
            assert!(
                message.contains("`id` must not contain control"),
                "{message}"
            );
            assert!(
                !message.contains(id),
                "the message repeats the id: {message}"
            );
            // A published message is held to the same rule.
            assert_eq!(
                LabReport::from_published(body.into_bytes()).unwrap_err(),
                error
            );
        }
        for id in [
            "LR-2026-000123",
            "é-ü-ß",
            "ラボ-12",
            "a b",
            "LR/1:2#3",
            "\u{1f415}",
        ] {
            let body = serde_json::json!({ "id": id }).to_string();
            assert_eq!(
                LabReport::parse(body.as_bytes()).unwrap().id,
                ReportId::Text(id.to_string())
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// One character an id may not contain, from each kind.
        fn refused_char() -> impl Strategy<Value = char> {
            prop_oneof![
                (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
                (0x7fu32..0xa0).prop_map(|c| char::from_u32(c).unwrap()),
                prop::sample::select(vec![
                    '\u{ad}',
                    '\u{61c}',
                    '\u{180e}',
                    '\u{200b}',
                    '\u{200c}',
                    '\u{200d}',
                    '\u{200e}',
                    '\u{200f}',
                    '\u{2028}',
                    '\u{2029}',
                    '\u{202a}',
                    '\u{202b}',
                    '\u{202c}',
                    '\u{202d}',
                    '\u{202e}',
                    '\u{2060}',
                    '\u{2066}',
                    '\u{2067}',
                    '\u{2068}',
                    '\u{2069}',
                    '\u{feff}',
                    '\u{fff9}',
                    '\u{e0001}',
                    '\u{e007f}',
                ]),
            ]
        }

        proptest! {
            /// Any string id with a refused character anywhere is refused,
            /// naming the first such character.
            #[test]
            fn an_id_with_a_refused_character_is_refused(
                before in "[a-zA-Z0-9-]{0,20}",
                bad in refused_char(),
                after in "\\PC{0,20}",
            ) {
                let id = format!("{before}{bad}{after}");
                prop_assert_eq!(
                    ReportId::parse(&Value::String(id)),
                    Err(ReportError::IdCharacter(bad))
                );
            }

            /// Printable ids of 1 to 128 characters (letters, marks,
            /// numbers, punctuation, symbols, spaces of any script) are
            /// kept exactly, and print as sent.
            #[test]
            fn a_printable_id_is_kept_as_sent(id in "[\\pL\\pM\\pN\\pP\\pS ]{1,128}") {
                let parsed = ReportId::parse(&Value::String(id.clone())).unwrap();
                prop_assert_eq!(parsed.to_string(), id.clone());
                prop_assert_eq!(parsed, ReportId::Text(id));
            }

            /// Whatever the string, an accepted id has no character that
            /// could break a log line.
            #[test]
            fn an_accepted_id_has_no_refused_character(id in "\\PC{0,20}|.{0,20}|[\\x00-\\x{ff}]{0,20}") {
                if let Ok(ReportId::Text(text)) = ReportId::parse(&Value::String(id)) {
                    prop_assert!(!text.chars().any(refused_in_id), "{:?}", text);
                }
            }
        }
    }
}
