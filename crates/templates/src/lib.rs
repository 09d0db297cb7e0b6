//! The words a pet's owner reads, in the owner's language.
//!
//! In labrelay's data flow this sits inside both channel services: the
//! email-service renders a report's subject, text and HTML with it, the
//! sms-service its notice. Everything the owner reads is a minijinja
//! template, built in for English (`en`) and Korean (`ko`) and overridable
//! file by file by the clinic (`TEMPLATES_DIR`), so a clinic's web person
//! can change the words without a new build. `docs/templates.md` is the
//! guide for writing one.
//!
//! Layout:
//! - [`settings`]: `DEFAULT_LOCALE` and `TEMPLATES_DIR`, read by both
//!   services.
//! - this file: [`Templates`], the built-in and the clinic's templates
//!   compiled once at start, which [`Locale`] a report is written in, and
//!   the errors, each naming the file, the line and the problem.
//! - `view`: the context the email templates see ([`ReportView`]).
//! - [`dates`]: `issuedAt` as each language writes it.
//! - `builtin/<locale>/<file>` (beside `src/`): the built-in templates,
//!   compiled in, laid out as a `TEMPLATES_DIR` is, so a clinic can copy
//!   them as a starting point.
//!
//! A template changes the words only: the notification log's key and the
//! email's Message-ID are made from the report and the recipient, never
//! from what a template made of them, so a redelivery after a template
//! change is still recognised as sent.

pub mod dates;
pub mod settings;
mod view;

use std::collections::HashMap;
use std::path::Path;

use labrelay_contract::{LabReport, LanguageTag};
use minijinja::{Environment, UndefinedBehavior};

pub use settings::TemplateSettings;
pub use view::{ClinicView, Flag, OwnerView, PetView, ReportView, TestView, one_line};

/// One template file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    EmailSubject,
    EmailText,
    EmailHtml,
    Sms,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::EmailSubject,
        Kind::EmailText,
        Kind::EmailHtml,
        Kind::Sms,
    ];

    /// The file's name in a locale's directory. `.html` turns HTML
    /// escaping on.
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::EmailSubject => "email_subject.txt",
            Kind::EmailText => "email.txt",
            Kind::EmailHtml => "email.html",
            Kind::Sms => "sms.txt",
        }
    }

    fn from_file_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.file_name() == name)
    }
}

/// The locales with built-in templates; the first is the last resort.
pub const BUILT_IN_LOCALES: [&str; 2] = ["en", "ko"];

/// The built-in templates, as `builtin/<locale>/<file>`.
const BUILT_IN: &[(&str, Kind, &str)] = &[
    (
        "en",
        Kind::EmailSubject,
        include_str!("../builtin/en/email_subject.txt"),
    ),
    (
        "en",
        Kind::EmailText,
        include_str!("../builtin/en/email.txt"),
    ),
    (
        "en",
        Kind::EmailHtml,
        include_str!("../builtin/en/email.html"),
    ),
    ("en", Kind::Sms, include_str!("../builtin/en/sms.txt")),
    (
        "ko",
        Kind::EmailSubject,
        include_str!("../builtin/ko/email_subject.txt"),
    ),
    (
        "ko",
        Kind::EmailText,
        include_str!("../builtin/ko/email.txt"),
    ),
    (
        "ko",
        Kind::EmailHtml,
        include_str!("../builtin/ko/email.html"),
    ),
    ("ko", Kind::Sms, include_str!("../builtin/ko/sms.txt")),
];

/// Why the templates cannot be used. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A template that does not compile or does not render the sample
    /// reports: `file`, `line` and the problem.
    #[error("template {file}, line {line}: {problem}")]
    Template {
        file: String,
        line: usize,
        problem: String,
    },
    /// A template that renders, but not something that can be sent.
    #[error("template {file}: {problem}")]
    Unusable { file: String, problem: String },
    #[error("TEMPLATES_DIR: {path}: {problem}")]
    Directory { path: String, problem: String },
    #[error(
        "DEFAULT_LOCALE={0} has no templates: the built-in locales are en and ko; \
         add TEMPLATES_DIR/{0}/ or choose one of those"
    )]
    DefaultLocale(String),
}

impl From<minijinja::Error> for TemplateError {
    fn from(error: minijinja::Error) -> TemplateError {
        let problem = match error.detail() {
            Some(detail) => format!("{}: {detail}", error.kind()),
            None => error.kind().to_string(),
        };
        TemplateError::Template {
            file: error.name().unwrap_or("(unnamed)").to_string(),
            line: error.line().unwrap_or(0),
            problem,
        }
    }
}

/// The locale a notification is written in: a built-in one or one of the
/// clinic's directories, as named there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale(String);

impl Locale {
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The primary language subtag, lower case.
    pub fn language(&self) -> String {
        self.0
            .split('-')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    /// The locales whose files stand in for a missing one, most specific
    /// first: `ko-KR`, then `ko`, then `en`.
    fn fallbacks(&self) -> Vec<String> {
        let mut chain = vec![self.0.to_ascii_lowercase()];
        for next in [self.language(), BUILT_IN_LOCALES[0].to_string()] {
            if !chain.contains(&next) {
                chain.push(next);
            }
        }
        chain
    }
}

/// Every template a service uses, compiled, with the clinic's default
/// locale.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    /// The clinic's files: (locale in lower case, kind) → template name
    /// (its path).
    overrides: HashMap<(String, Kind), String>,
    /// Every locale there are templates for, lower case → as named.
    locales: HashMap<String, Locale>,
    default: Locale,
}

impl Templates {
    /// Compiles the built-in templates of `kinds` and the clinic's, if
    /// `TEMPLATES_DIR` is set. A template that does not compile, a file or
    /// directory that is not a template's, or a default locale without
    /// templates is an error.
    pub fn load(settings: &TemplateSettings, kinds: &[Kind]) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("shorten", shorten);
        // A field the report lacks prints as nothing, not as `none`.
        env.set_formatter(|out, state, value| {
            if value.is_none() {
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        let mut locales: HashMap<String, Locale> = BUILT_IN_LOCALES
            .iter()
            .map(|l| (l.to_string(), Locale(l.to_string())))
            .collect();
        for (locale, kind, source) in BUILT_IN {
            if kinds.contains(kind) {
                env.add_template_owned(built_in_name(locale, *kind), *source)?;
            }
        }
        let mut overrides = HashMap::new();
        if let Some(dir) = &settings.dir {
            for (locale, kind, path) in clinic_files(dir)? {
                locales
                    .entry(locale.to_ascii_lowercase())
                    .or_insert_with(|| Locale(locale.clone()));
                if !kinds.contains(&kind) {
                    continue;
                }
                let name = path.display().to_string();
                let source =
                    std::fs::read_to_string(&path).map_err(|e| TemplateError::Directory {
                        path: name.clone(),
                        problem: format!("cannot be read as UTF-8 text: {e}"),
                    })?;
                env.add_template_owned(name.clone(), source)?;
                overrides.insert((locale.to_ascii_lowercase(), kind), name);
            }
        }
        let wanted = &settings.default_locale;
        let default = [wanted.as_str().to_ascii_lowercase(), wanted.language()]
            .iter()
            .find_map(|key| locales.get(key).cloned())
            .ok_or_else(|| TemplateError::DefaultLocale(wanted.to_string()))?;
        Ok(Templates {
            env,
            overrides,
            locales,
            default,
        })
    }

    /// The locale `report` is written in: its owner's (the exact tag, else
    /// its language), else the clinic's default.
    pub fn locale_for(&self, report: &LabReport) -> &Locale {
        report
            .owner
            .locale
            .as_ref()
            .and_then(|tag| {
                self.locales
                    .get(&tag.as_str().to_ascii_lowercase())
                    .or_else(|| self.locales.get(&tag.language()))
            })
            .unwrap_or(&self.default)
    }

    /// Every locale there are templates for, built-in and the clinic's.
    pub fn locales(&self) -> impl Iterator<Item = &Locale> {
        self.locales.values()
    }

    /// The file `locale` uses for `kind`: the clinic's for that locale,
    /// else the built-in one, else the same for its language, else
    /// English's.
    pub fn file(&self, locale: &Locale, kind: Kind) -> String {
        for key in locale.fallbacks() {
            if let Some(name) = self.overrides.get(&(key.clone(), kind)) {
                return name.clone();
            }
            if BUILT_IN_LOCALES.contains(&key.as_str()) {
                return built_in_name(&key, kind);
            }
        }
        built_in_name(BUILT_IN_LOCALES[0], kind)
    }

    /// Renders `locale`'s `kind` with `context`.
    pub fn render(
        &self,
        locale: &Locale,
        kind: Kind,
        context: minijinja::Value,
    ) -> Result<String, TemplateError> {
        let template = self.env.get_template(&self.file(locale, kind))?;
        Ok(template.render(context)?)
    }
}

/// A built-in template's name, which errors show: where it is in the
/// repository.
fn built_in_name(locale: &str, kind: Kind) -> String {
    format!("crates/templates/builtin/{locale}/{}", kind.file_name())
}

/// The clinic's template files: (locale as named, kind, path). Hidden
/// entries (`.DS_Store`, `.git`) are ignored; anything else that is not a
/// locale directory holding template files is an error, so a misspelt
/// name does not go unnoticed.
fn clinic_files(dir: &Path) -> Result<Vec<(String, Kind, std::path::PathBuf)>, TemplateError> {
    let problem = |path: &Path, problem: String| TemplateError::Directory {
        path: path.display().to_string(),
        problem,
    };
    let entries = |dir: &Path| {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| problem(dir, format!("cannot be read as a directory: {e}")))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        entries.sort();
        Ok::<_, TemplateError>(entries)
    };
    let mut files = Vec::new();
    for locale_dir in entries(dir)? {
        let name = locale_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if !locale_dir.is_dir() || LanguageTag::parse(&name).is_err() {
            return Err(problem(
                &locale_dir,
                "expected only directories named for a locale (en, ko, ko-KR, ...)".into(),
            ));
        }
        for path in entries(&locale_dir)? {
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let kind = Kind::from_file_name(&file).filter(|_| path.is_file()).ok_or_else(|| {
                problem(
                    &path,
                    "not a template file; expected email_subject.txt, email.txt, email.html or sms.txt"
                        .into(),
                )
            })?;
            files.push((name.clone(), kind, path));
        }
    }
    Ok(files)
}

/// `shorten(n)`: at most `n` characters, cut ones ending in `…`.
fn shorten(text: String, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", text[..cut].trim_end()),
        None => text,
    }
}

/// The reports templates are checked with at start: one with every field
/// (flagged results, every kind of value), and the seed's bare `{"id": 12}`,
/// so that a template that only works when a field is there is found
/// before a real report comes.
pub fn sample_reports() -> [LabReport; 2] {
    const FULL: &str = r#"{
        "id": "LR-2026-000123",
        "clinic": {"name": "Pet Theory Downtown", "phone": "+15551230000"},
        "pet": {"name": "Max", "species": "dog"},
        "owner": {"name": "Alex Kim", "email": "alex@example.com", "phone": "+15551234567"},
        "tests": [
            {"name": "ALT", "value": 42, "unit": "U/L", "range": "10-100", "flag": "normal"},
            {"name": "Glucose", "value": 180.5, "unit": "mg/dL", "range": "70-140", "flag": "high"},
            {"name": "Platelets", "value": "90", "unit": "10^9/L", "range": "150-500", "flag": "L"},
            {"name": "Heartworm", "value": "positive", "flag": "abnormal"},
            {"value": 3}
        ],
        "issuedAt": "2026-11-24T10:00:00Z"
    }"#;
    [FULL, r#"{"id": 12}"#]
        .map(|json| LabReport::parse(json.as_bytes()).expect("the sample reports are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(default: &str, dir: Option<&Path>) -> TemplateSettings {
        TemplateSettings {
            default_locale: LanguageTag::parse(default).unwrap(),
            dir: dir.map(Path::to_path_buf),
        }
    }

    fn report(locale: Option<&str>) -> LabReport {
        let json = serde_json::json!({"id": 1, "owner": {"locale": locale}});
        LabReport::parse(json.to_string().as_bytes()).unwrap()
    }

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_report_is_written_in_its_owners_locale_else_the_clinics_else_english() {
        let templates = Templates::load(&settings("en", None), &Kind::ALL).unwrap();
        let cases = [
            (Some("ko-KR"), "ko"),
            (Some("KO"), "ko"),
            (Some("en-US"), "en"),
            (Some("fr-FR"), "en"),
            (None, "en"),
        ];
        for (tag, want) in cases {
            assert_eq!(templates.locale_for(&report(tag)).name(), want, "{tag:?}");
        }
        let korean_clinic = Templates::load(&settings("ko-KR", None), &Kind::ALL).unwrap();
        assert_eq!(korean_clinic.locale_for(&report(Some("fr"))).name(), "ko");
        assert_eq!(korean_clinic.locale_for(&report(None)).name(), "ko");
        assert_eq!(
            korean_clinic.locale_for(&report(Some("en-GB"))).name(),
            "en"
        );
    }

    #[test]
    fn a_clinics_file_overrides_the_built_in_one_file_by_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ko/sms.txt", "{{ pet.name }} 결과");
        write(
            dir.path(),
            "ko-KR/email_subject.txt",
            "제목 {{ report_id }}",
        );
        write(
            dir.path(),
            "fr/email_subject.txt",
            "Résultats {{ report_id }}",
        );
        write(dir.path(), ".DS_Store", "ignored");
        let templates = Templates::load(&settings("en", Some(dir.path())), &Kind::ALL).unwrap();
        let ko_kr = templates.locale_for(&report(Some("ko-KR"))).clone();
        assert_eq!(ko_kr.name(), "ko-KR");
        let path = |file: &str| dir.path().join(file).display().to_string();
        assert_eq!(
            templates.file(&ko_kr, Kind::EmailSubject),
            path("ko-KR/email_subject.txt")
        );
        assert_eq!(templates.file(&ko_kr, Kind::Sms), path("ko/sms.txt"));
        assert_eq!(
            templates.file(&ko_kr, Kind::EmailText),
            "crates/templates/builtin/ko/email.txt"
        );
        let fr = templates.locale_for(&report(Some("fr-CA"))).clone();
        assert_eq!(fr.name(), "fr");
        assert_eq!(
            templates.file(&fr, Kind::EmailHtml),
            "crates/templates/builtin/en/email.html"
        );
        let subject = templates
            .render(
                &fr,
                Kind::EmailSubject,
                minijinja::context! { report_id => "R-1" },
            )
            .unwrap();
        assert_eq!(subject, "Résultats R-1");
        // A clinic's locale directory makes its locale a default one may choose.
        assert!(Templates::load(&settings("fr", Some(dir.path())), &Kind::ALL).is_ok());
    }

    #[test]
    fn html_templates_escape_what_they_show() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "en/email.html", "<p>{{ pet.name }}</p>");
        let templates = Templates::load(&settings("en", Some(dir.path())), &Kind::ALL).unwrap();
        let en = templates.locale_for(&report(None)).clone();
        let context = minijinja::context! { pet => minijinja::context! { name => "<b>Max</b>" } };
        let html = templates
            .render(&en, Kind::EmailHtml, context.clone())
            .unwrap();
        assert_eq!(html, "<p>&lt;b&gt;Max&lt;&#x2f;b&gt;</p>");
        let text = templates.render(&en, Kind::EmailSubject, context).unwrap();
        assert_eq!(text, "Lab results for <b>Max</b> are ready");
        let none = minijinja::context! { pet => minijinja::context! { name => () } };
        let html = templates.render(&en, Kind::EmailHtml, none).unwrap();
        assert_eq!(html, "<p></p>", "a missing field prints as nothing");
    }

    #[test]
    fn a_broken_template_is_named_with_its_line_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "ko/email.txt",
            "안녕하세요\n{% if pet.name %}\n{{ pet.name }}\n",
        );
        let error = Templates::load(&settings("en", Some(dir.path())), &Kind::ALL).unwrap_err();
        let message = error.to_string();
        let file = dir.path().join("ko/email.txt").display().to_string();
        assert!(
            message.starts_with(&format!("template {file}, line ")),
            "{message}"
        );
        assert!(message.contains("syntax error"), "{message}");
        // The services that do not use the file do not stop for it.
        assert!(Templates::load(&settings("en", Some(dir.path())), &[Kind::Sms]).is_ok());

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "en/sms.txt", "line one\n{{ pet.nmae }}");
        let templates = Templates::load(&settings("en", Some(dir.path())), &[Kind::Sms]).unwrap();
        let en = templates.locale_for(&report(None)).clone();
        let context = minijinja::context! { pet => minijinja::context! { name => "Max" } };
        let error = templates.render(&en, Kind::Sms, context).unwrap_err();
        let file = dir.path().join("en/sms.txt").display().to_string();
        assert_eq!(
            error.to_string(),
            format!("template {file}, line 2: undefined value: `pet.nmae` is undefined")
        );
    }

    #[test]
    fn refuses_what_is_not_a_template_and_a_default_without_templates() {
        for (file, said) in [
            ("en/email.htm", "not a template file"),
            (
                "en_US/sms.txt",
                "expected only directories named for a locale",
            ),
            ("notes.txt", "expected only directories named for a locale"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), file, "x");
            let error = Templates::load(&settings("en", Some(dir.path())), &Kind::ALL)
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("TEMPLATES_DIR: ") && error.contains(said),
                "{error}"
            );
        }
        let error = Templates::load(&settings("fr-FR", None), &Kind::ALL).unwrap_err();
        assert_eq!(
            error.to_string(),
            "DEFAULT_LOCALE=fr-FR has no templates: the built-in locales are en and ko; \
             add TEMPLATES_DIR/fr-FR/ or choose one of those"
        );
    }
}
