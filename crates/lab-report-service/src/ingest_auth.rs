//! Ingest API keys: how a lab proves who it is to the lab-report-service.
//!
//! A lab sends `Authorization: Bearer <key>`. The service knows only the
//! SHA-256 of each key, with the lab's name (`lab-name:sha256hex`), so a
//! leaked configuration does not leak keys. The digest of the presented key
//! is compared with every configured digest in constant time, so timing says
//! nothing about how close a guess was.
//!
//! Settings (read by [`IngestAuth::from_vars`]): `INGEST_API_KEYS_FILE` (one
//! entry a line, `#` comments and blank lines allowed), `INGEST_API_KEYS`
//! (entries separated by commas), `INGEST_OPEN=true` to accept reports
//! without a key.

use std::fmt;

use sha2::{Digest, Sha256};

/// Whether reports need a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestAuth {
    /// Anyone may post (`INGEST_OPEN=true`); logs a warning at start.
    Open,
    /// A key of one of these labs is required.
    Keys(IngestKeys),
}

/// The configured keys, as (lab name, SHA-256 of the key).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct IngestKeys {
    entries: Vec<(String, [u8; 32])>,
}

impl fmt::Debug for IngestKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes are not secrets, but there is no reason to print them.
        f.debug_list()
            .entries(self.entries.iter().map(|(lab, _)| lab))
            .finish()
    }
}

/// Settings that make no valid [`IngestAuth`].
#[derive(Debug, thiserror::Error)]
pub enum IngestAuthSettingsError {
    #[error(
        "no ingest API keys are configured: set INGEST_API_KEYS_FILE (a file with one \
         `lab-name:sha256hex` a line) or INGEST_API_KEYS (the same entries, comma-separated), \
         or INGEST_OPEN=true to accept reports from anyone"
    )]
    Nothing,
    #[error("{source_name}: entry {line} is not `lab-name:sha256hex` (64 hex digits)")]
    Entry { source_name: String, line: usize },
    #[error("reading INGEST_API_KEYS_FILE {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("INGEST_OPEN must be true or false, not {0:?}")]
    Open(String),
    #[error("INGEST_OPEN=true and API keys are both set; choose one")]
    Both,
}

/// Why a request was not let in. Its text is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IngestAuthError {
    #[error("no bearer API key")]
    Missing,
    #[error("unknown API key")]
    Unknown,
}

impl IngestAuth {
    /// Reads the `INGEST_*` settings through `get`; blank values count as unset.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<IngestAuth, IngestAuthSettingsError> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let open = match get("INGEST_OPEN")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false" | "0" | "no") => false,
            Some("true" | "1" | "yes") => true,
            Some(other) => return Err(IngestAuthSettingsError::Open(other.to_string())),
        };
        let mut keys = IngestKeys::default();
        if let Some(path) = get("INGEST_API_KEYS_FILE") {
            let text =
                std::fs::read_to_string(&path).map_err(|source| IngestAuthSettingsError::File {
                    path: path.clone(),
                    source,
                })?;
            keys.add_lines(&format!("INGEST_API_KEYS_FILE {path}"), text.lines())?;
        }
        if let Some(list) = get("INGEST_API_KEYS") {
            keys.add_lines("INGEST_API_KEYS", list.split(','))?;
        }
        match (open, keys.entries.is_empty()) {
            (true, true) => Ok(IngestAuth::Open),
            (true, false) => Err(IngestAuthSettingsError::Both),
            (false, true) => Err(IngestAuthSettingsError::Nothing),
            (false, false) => Ok(IngestAuth::Keys(keys)),
        }
    }
}

impl IngestKeys {
    /// Adds the key of `lab`, given as the key itself (for `labrelay up`).
    pub fn with_key(mut self, lab: &str, key: &str) -> IngestKeys {
        self.entries.push((lab.to_string(), digest(key)));
        self
    }

    /// The configured lab names.
    pub fn labs(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(lab, _)| lab.as_str())
    }

    fn add_lines<'a>(
        &mut self,
        source_name: &str,
        lines: impl Iterator<Item = &'a str>,
    ) -> Result<(), IngestAuthSettingsError> {
        for (index, line) in lines.enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let entry = parse_entry(line).ok_or_else(|| IngestAuthSettingsError::Entry {
                source_name: source_name.to_string(),
                line: index + 1,
            })?;
            self.entries.push(entry);
        }
        Ok(())
    }

    /// The lab whose key `headers` present.
    pub fn check(&self, headers: &axum::http::HeaderMap) -> Result<&str, IngestAuthError> {
        let key =
            labrelay_runtime::secret::bearer_token(headers).ok_or(IngestAuthError::Missing)?;
        self.lab_of(key).ok_or(IngestAuthError::Unknown)
    }

    /// The lab whose key is `key`. Compares with every entry, always, in
    /// constant time per entry.
    pub fn lab_of(&self, key: &str) -> Option<&str> {
        let presented = digest(key);
        let mut found = None;
        for (lab, hash) in &self.entries {
            if constant_time_eq(&presented, hash) && found.is_none() {
                found = Some(lab.as_str());
            }
        }
        found
    }
}

fn parse_entry(line: &str) -> Option<(String, [u8; 32])> {
    let (lab, hex) = line.rsplit_once(':')?;
    let lab = lab.trim();
    let hex = hex.trim();
    if lab.is_empty() || hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((lab.to_string(), hash))
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The `sha256hex` to configure for `key`.
pub fn hash_key(key: &str) -> String {
    hex::encode(digest(key))
}

/// Equal or not, in time independent of where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn keys_from_the_list_and_the_file() {
        let dir = tempfile_dir();
        let file = dir.join("keys");
        std::fs::write(
            &file,
            format!("# labs\n\nidexx:{}  # main lab\n", hash_key("key-one")),
        )
        .unwrap();
        let list = format!("antech:{}", hash_key("key-two"));
        let auth = IngestAuth::from_vars(vars(&[
            ("INGEST_API_KEYS_FILE", file.to_str().unwrap()),
            ("INGEST_API_KEYS", &list),
        ]))
        .unwrap();
        let IngestAuth::Keys(keys) = auth else {
            panic!("expected keys")
        };
        assert_eq!(keys.lab_of("key-one"), Some("idexx"));
        assert_eq!(keys.lab_of("key-two"), Some("antech"));
        assert_eq!(keys.lab_of("key-three"), None);
        assert_eq!(keys.lab_of(""), None);
        assert!(!format!("{keys:?}").contains(&hash_key("key-one")));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_to_start_without_keys_or_an_explicit_open() {
        let error = IngestAuth::from_vars(vars(&[])).unwrap_err().to_string();
        assert!(error.contains("INGEST_API_KEYS_FILE"), "{error}");
        assert!(error.contains("INGEST_OPEN=true"), "{error}");
        assert_eq!(
            IngestAuth::from_vars(vars(&[("INGEST_OPEN", "true")])).unwrap(),
            IngestAuth::Open
        );
        for bad in ["lab", "lab:abc", ":", &format!(":{}", hash_key("k"))] {
            assert!(
                IngestAuth::from_vars(vars(&[("INGEST_API_KEYS", bad)])).is_err(),
                "{bad}"
            );
        }
        let both = hash_key("k");
        assert!(
            IngestAuth::from_vars(vars(&[
                ("INGEST_OPEN", "true"),
                ("INGEST_API_KEYS", &format!("lab:{both}"))
            ]))
            .is_err()
        );
    }

    #[test]
    fn reads_the_bearer_key() {
        use axum::http::{HeaderMap, HeaderValue, header};
        let keys = IngestKeys::default().with_key("local-lab", "s3cret");
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(keys.check(&with("Bearer s3cret")), Ok("local-lab"));
        assert_eq!(keys.check(&with("bearer  s3cret ")), Ok("local-lab"));
        assert_eq!(
            keys.check(&with("Bearer wrong")),
            Err(IngestAuthError::Unknown)
        );
        assert_eq!(
            keys.check(&with("Basic s3cret")),
            Err(IngestAuthError::Missing)
        );
        assert_eq!(keys.check(&HeaderMap::new()), Err(IngestAuthError::Missing));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "labrelay-ingest-auth-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
