//! The settings both push receivers read the same way; each service adds
//! what its channel needs (`SMTP_*`, `EMAIL_*`; `TWILIO_*`, `SMS_*`).

use labrelay_runtime::origin_guard::AllowedHosts;
use labrelay_runtime::trace;

use crate::dead_letter::DeadLetterSetting;
use crate::notify_log::{self, NotifyLogSetting};
use crate::push_auth::PushAuth;

/// What a push receiver needs besides its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverSettings {
    /// Who may push (`PUSH_AUTH`, `PUSH_AUDIENCE`, ...; see
    /// [`crate::push_auth`]). Verified by default when read from the
    /// environment; off in [`ReceiverSettings::default`], for code and
    /// tests.
    pub push_auth: PushAuth,
    /// The notification log (`NOTIFY_LOG`: SQLite or Firestore):
    /// notifications already sent are not sent again. `Off` (the default):
    /// every push sends.
    pub notify_log: NotifyLogSetting,
    /// Where a push that can never be sent is parked
    /// (`DEAD_LETTER_TOPIC`, through `PUBSUB_EMULATOR_HOST` when set; see
    /// [`crate::dead_letter`]). `None`: it is answered 422 and the
    /// subscription's dead-letter policy parks it once its attempts run
    /// out.
    pub dead_letters: Option<DeadLetterSetting>,
    /// The project in the trace names of log lines
    /// (`logging.googleapis.com/trace`): `GOOGLE_CLOUD_PROJECT`, else
    /// `PUBSUB_PROJECT_ID`. `None`: log lines name no trace.
    pub trace_project: Option<String>,
    /// Host names answered beyond loopback (`ALLOWED_HOSTS`; see
    /// [`labrelay_runtime::origin_guard`]). `None`: loopback names on a
    /// loopback address, any host beyond it.
    pub allowed_hosts: Option<AllowedHosts>,
}

impl Default for ReceiverSettings {
    /// No push-token check, no notification log, no dead-letter topic, no
    /// trace project, the default hosts.
    fn default() -> ReceiverSettings {
        ReceiverSettings {
            push_auth: PushAuth::Off,
            notify_log: NotifyLogSetting::Off,
            dead_letters: None,
            trace_project: None,
            allowed_hosts: None,
        }
    }
}

impl ReceiverSettings {
    /// Reads, through `get` (blank values count as unset):
    /// - `PUSH_AUTH`, `PUSH_AUDIENCE`, `PUSH_ALLOWED_SERVICE_ACCOUNTS`,
    ///   `PUSH_TOKEN_ISSUERS`, `PUSH_JWKS_URL` ([`PushAuth::from_vars`]);
    /// - `NOTIFY_LOG`: `sqlite:///path/to/file.db` or `firestore[://...]`
    ///   ([`notify_log::setting_from_vars`]); unset or `off`: no log;
    /// - `DEAD_LETTER_TOPIC` and `PUBSUB_EMULATOR_HOST`
    ///   ([`DeadLetterSetting::from_vars`]);
    /// - `GOOGLE_CLOUD_PROJECT` (else `PUBSUB_PROJECT_ID`): the project the
    ///   trace names in log lines belong to;
    /// - `ALLOWED_HOSTS` ([`AllowedHosts::from_vars`]).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<ReceiverSettings> {
        Ok(ReceiverSettings {
            push_auth: PushAuth::from_vars(&get)?,
            notify_log: notify_log::setting_from_vars(&get)?,
            dead_letters: DeadLetterSetting::from_vars(&get)?,
            trace_project: trace::project_from_vars(&get),
            allowed_hosts: AllowedHosts::from_vars(&get)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn reads_what_both_receivers_share() {
        let settings = ReceiverSettings::from_vars(vars(&[
            ("PUSH_AUTH", "off"),
            ("NOTIFY_LOG", "sqlite:///var/lib/labrelay/n.db"),
            ("GOOGLE_CLOUD_PROJECT", " "),
            ("PUBSUB_PROJECT_ID", "pet-theory"),
            ("ALLOWED_HOSTS", "email.example.com"),
        ]))
        .unwrap();
        assert_eq!(settings.push_auth, PushAuth::Off);
        assert_eq!(
            settings.notify_log,
            NotifyLogSetting::Sqlite(PathBuf::from("/var/lib/labrelay/n.db"))
        );
        assert_eq!(settings.trace_project.as_deref(), Some("pet-theory"));
        assert_eq!(
            settings.allowed_hosts,
            Some(AllowedHosts::parse("email.example.com").unwrap())
        );
        let verify = ReceiverSettings::from_vars(vars(&[])).unwrap_err();
        assert!(verify.to_string().contains("PUSH_AUDIENCE"), "{verify}");
    }
}
