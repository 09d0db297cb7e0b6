//! `<data-dir>/up.json`: where a running `labrelay up` can be reached.
//!
//! `up` writes it (atomically, mode 0600) once every part listens, and
//! removes it on a clean stop; `labrelay post`, `labrelay dead-letters`, the
//! bench and the whole-system tests read it instead of the human banner, so
//! ports chosen by the system (`--broker-port 0`) are found the same way as
//! the defaults. A file left by a process that was killed names a pid that
//! is gone; readers that care check it ([`UpFile::is_running`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name inside the data directory.
pub const UP_FILE: &str = "up.json";

/// What `up.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpFile {
    /// The `labrelay` version that wrote it.
    pub version: String,
    /// The process serving every part.
    pub pid: u32,
    /// The Pub/Sub project of the topics and subscriptions.
    pub project: String,
    /// The broker (gRPC and REST): `PUBSUB_EMULATOR_HOST` for clients.
    pub broker: SocketAddr,
    pub lab_report_service: SocketAddr,
    pub email_service: SocketAddr,
    pub sms_service: SocketAddr,
    /// The file holding the ingest API key of the lab `local-lab`.
    pub api_key_file: PathBuf,
}

/// Why `up.json` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UpFileError {
    #[error("no labrelay up is running on {0} (no {UP_FILE} there)")]
    Missing(PathBuf),
    #[error("reading {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not what labrelay up writes: {source}")]
    Malformed {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl UpFile {
    /// Where the file of the `up` using `data_dir` lives.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(UP_FILE)
    }

    /// Reads the file of the `up` using `data_dir`.
    pub fn read(data_dir: &Path) -> Result<UpFile, UpFileError> {
        let path = UpFile::path(data_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(UpFileError::Missing(data_dir.to_path_buf()));
            }
            Err(source) => return Err(UpFileError::Unreadable { path, source }),
        };
        serde_json::from_slice(&bytes).map_err(|source| UpFileError::Malformed { path, source })
    }

    /// The file's JSON, as `up` writes it.
    pub fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("an UpFile serializes");
        json.push(b'\n');
        json
    }

    /// `http://<lab-report-service>/`, where labs post.
    pub fn lab_report_url(&self) -> String {
        format!("http://{}/", self.lab_report_service)
    }

    /// Whether the process that wrote the file is still there (Linux:
    /// `/proc/<pid>`; elsewhere it is assumed to be).
    pub fn is_running(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            Path::new("/proc").join(self.pid.to_string()).exists()
        }
        #[cfg(not(target_os = "linux"))]
        {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_it_reads_and_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let error = UpFile::read(dir.path()).unwrap_err();
        assert!(matches!(error, UpFileError::Missing(_)), "{error}");
        assert!(error.to_string().contains("no labrelay up is running"));

        let file = UpFile {
            version: "0.1.0".into(),
            pid: std::process::id(),
            project: "labrelay-local".into(),
            broker: "127.0.0.1:8085".parse().unwrap(),
            lab_report_service: "127.0.0.1:8080".parse().unwrap(),
            email_service: "127.0.0.1:8081".parse().unwrap(),
            sms_service: "127.0.0.1:8082".parse().unwrap(),
            api_key_file: dir.path().join("ingest-api-key"),
        };
        std::fs::write(UpFile::path(dir.path()), file.to_json()).unwrap();
        assert_eq!(UpFile::read(dir.path()).unwrap(), file);
        assert!(file.is_running());
        assert_eq!(file.lab_report_url(), "http://127.0.0.1:8080/");
        let json: serde_json::Value = serde_json::from_slice(&file.to_json()).unwrap();
        assert_eq!(json["labReportService"], "127.0.0.1:8080");
        assert_eq!(json["apiKeyFile"], serde_json::json!(file.api_key_file));

        std::fs::write(UpFile::path(dir.path()), b"{}").unwrap();
        let error = UpFile::read(dir.path()).unwrap_err();
        assert!(matches!(error, UpFileError::Malformed { .. }), "{error}");
    }
}
