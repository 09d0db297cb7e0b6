//! Credentials: read from the environment (or a file the environment names),
//! never printed; and the one a request presents in `Authorization: Bearer`
//! (a lab's API key, the broker's push token).

use std::fmt;

use axum::http::{HeaderMap, header};

/// A credential. `Debug` never shows it; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("set {0} or {0}_FILE, not both")]
    Both(String),
    #[error("reading {name}_FILE {path}: {source}")]
    File {
        name: String,
        path: String,
        source: std::io::Error,
    },
}

/// Reads the secret `name` from the variable `name` or from the file named
/// by `name_FILE` (how Secret Manager volumes and Docker secrets hand them
/// over; a trailing line break is dropped). Blank variables count as unset.
pub fn secret_from_vars(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<Secret>, SecretError> {
    let var = |key: &str| get(key).filter(|v| !v.trim().is_empty());
    let file_var = format!("{name}_FILE");
    match (var(name), var(&file_var)) {
        (Some(_), Some(_)) => Err(SecretError::Both(name.to_string())),
        (Some(value), None) => Ok(Some(Secret(value))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|source| SecretError::File {
                name: name.to_string(),
                path: path.clone(),
                source,
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            Ok(Some(Secret(
                text.strip_suffix('\r').unwrap_or(text).to_string(),
            )))
        }
        (None, None) => Ok(None),
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_variable_or_the_file_and_never_prints_it() {
        let dir = std::env::temp_dir().join(format!("labrelay-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-file\r\n").unwrap();
        let path = file.to_str().unwrap().to_string();
        let vars = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };

        let direct = secret_from_vars(&vars(vec![("TOKEN", "s3cret".into())]), "TOKEN").unwrap();
        assert_eq!(direct.as_ref().map(Secret::expose), Some("s3cret"));
        assert!(!format!("{direct:?}").contains("s3cret"));
        let from_file =
            secret_from_vars(&vars(vec![("TOKEN_FILE", path.clone())]), "TOKEN").unwrap();
        assert_eq!(from_file.unwrap().expose(), "from-file");
        assert!(
            secret_from_vars(&vars(vec![("TOKEN", " ".into())]), "TOKEN")
                .unwrap()
                .is_none()
        );
        let both = vars(vec![("TOKEN", "a".into()), ("TOKEN_FILE", path)]);
        assert!(
            secret_from_vars(&both, "TOKEN")
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let missing = vars(vec![("TOKEN_FILE", "/nonexistent/token".into())]);
        assert!(
            secret_from_vars(&missing, "TOKEN")
                .unwrap_err()
                .to_string()
                .contains("TOKEN_FILE")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
