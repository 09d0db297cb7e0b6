//! What both channel services read to choose their words:
//!
//! - `DEFAULT_LOCALE` (default `en`): the locale of a report whose owner
//!   has none, or one no template speaks; a BCP 47 tag with templates
//!   (built in: `en`, `ko`; or a directory of `TEMPLATES_DIR`).
//! - `TEMPLATES_DIR`: a directory of the clinic's templates,
//!   `<locale>/<file>`, each overriding the built-in one.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use labrelay_contract::LanguageTag;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSettings {
    pub default_locale: LanguageTag,
    pub dir: Option<PathBuf>,
}

impl Default for TemplateSettings {
    fn default() -> TemplateSettings {
        TemplateSettings {
            default_locale: LanguageTag::parse("en").expect("en is a language tag"),
            dir: None,
        }
    }
}

impl TemplateSettings {
    /// Reads `DEFAULT_LOCALE` and `TEMPLATES_DIR` through `get` (empty
    /// counts as unset). Whether the locale has templates and the
    /// directory holds good ones is checked when they are loaded.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<TemplateSettings> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut settings = TemplateSettings::default();
        if let Some(locale) = get("DEFAULT_LOCALE") {
            settings.default_locale = LanguageTag::parse(locale.trim())
                .ok()
                .with_context(|| {
                    format!("DEFAULT_LOCALE={locale:?} is not a BCP 47 language tag such as ko-KR or en-US")
                })?;
        }
        if let Some(dir) = get("TEMPLATES_DIR") {
            let dir = PathBuf::from(dir);
            if !dir.is_dir() {
                bail!("TEMPLATES_DIR={} is not a directory", dir.display());
            }
            settings.dir = Some(dir);
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> anyhow::Result<TemplateSettings> {
        TemplateSettings::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn reads_the_default_locale_and_the_directory() {
        assert_eq!(read(&[]).unwrap(), TemplateSettings::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let settings = read(&[("DEFAULT_LOCALE", "ko-KR"), ("TEMPLATES_DIR", path)]).unwrap();
        assert_eq!(settings.default_locale.as_str(), "ko-KR");
        assert_eq!(settings.dir.as_deref(), Some(dir.path()));
    }

    #[test]
    fn refuses_bad_values_saying_why() {
        let error = read(&[("DEFAULT_LOCALE", "ko_KR")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("DEFAULT_LOCALE") && error.contains("BCP 47"),
            "{error}"
        );
        let error = read(&[("TEMPLATES_DIR", "/no/such/dir")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("TEMPLATES_DIR=/no/such/dir is not a directory"),
            "{error}"
        );
    }
}
