//! The settings both push receivers read the same way; each service adds
//! what its channel needs (`SMTP_*`, `EMAIL_*`; `TWILIO_*`, `SMS_*`).

use labrelay_runtime::origin_guard::AllowedHosts;
use labrelay_runtime::secret::{Secret, secret_from_vars};
use labrelay_runtime::trace;

use crate::dead_letter::{self, DeadLetterSetting};
use crate::notify_log::{self, NotifyLogSetting};
use crate::publish::TopicSetting;
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
    /// Where each delivery receipt that moves a notification forward is
    /// published, for the broker's console (`RECEIPTS_TOPIC`, through
    /// `PUBSUB_EMULATOR_HOST` when set; see [`crate::facts`]). `None`:
    /// receipts are only recorded in the notification log.
    pub receipts: Option<TopicSetting>,
    /// The project in the trace names of log lines
    /// (`logging.googleapis.com/trace`): `GOOGLE_CLOUD_PROJECT`, else
    /// `PUBSUB_PROJECT_ID`. `None`: log lines name no trace.
    pub trace_project: Option<String>,
    /// When a push is answered (`PUSH_ANSWER`): see [`PushAnswer`].
    pub push_answer: PushAnswer,
    /// Host names answered beyond loopback (`ALLOWED_HOSTS`; see
    /// [`labrelay_runtime::origin_guard`]). `None`: loopback names on a
    /// loopback address, any host beyond it.
    pub allowed_hosts: Option<AllowedHosts>,
    /// The key of the hash suppressed recipients are stored under
    /// (`SUPPRESSION_KEY` or `SUPPRESSION_KEY_FILE`; see
    /// [`subject_hash`](crate::notify_log::subject_hash)). Every service and
    /// `labrelay suppressions` sharing a notification log must use the same
    /// one; changing it forgets every suppression. `None`: an empty key,
    /// with a warning at start.
    pub suppression_key: Option<Secret>,
}

impl Default for ReceiverSettings {
    /// No push-token check, no notification log, no dead-letter topic, no
    /// trace project, the default hosts.
    fn default() -> ReceiverSettings {
        ReceiverSettings {
            push_auth: PushAuth::Off,
            notify_log: NotifyLogSetting::Off,
            dead_letters: None,
            receipts: None,
            push_answer: PushAnswer::Early,
            trace_project: None,
            allowed_hosts: None,
            suppression_key: None,
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
    ///   ([`dead_letter::setting_from_vars`]);
    /// - `RECEIPTS_TOPIC` (a full topic name), through the same
    ///   `PUBSUB_EMULATOR_HOST`;
    /// - `PUSH_ANSWER`: `early` or `when-done` ([`PushAnswer`]); unset:
    ///   `when-done` on Cloud Run (`K_SERVICE` set), else `early`;
    /// - `GOOGLE_CLOUD_PROJECT` (else `PUBSUB_PROJECT_ID`): the project the
    ///   trace names in log lines belong to;
    /// - `ALLOWED_HOSTS` ([`AllowedHosts::from_vars`]);
    /// - `SUPPRESSION_KEY` or `SUPPRESSION_KEY_FILE`: the key suppressions
    ///   are hashed with.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<ReceiverSettings> {
        Ok(ReceiverSettings {
            push_auth: PushAuth::from_vars(&get)?,
            notify_log: notify_log::setting_from_vars(&get)?,
            dead_letters: dead_letter::setting_from_vars(&get)?,
            receipts: TopicSetting::from_vars(&get, "RECEIPTS_TOPIC", "lab-report-receipts")?,
            push_answer: PushAnswer::from_vars(&get)?,
            trace_project: trace::project_from_vars(&get),
            allowed_hosts: AllowedHosts::from_vars(&get)?,
            suppression_key: secret_from_vars(&get, "SUPPRESSION_KEY")?,
        })
    }
}

impl ReceiverSettings {
    /// What a server of a channel's webhooks alone reads through `get`
    /// ([`run_webhooks`](crate::run_webhooks)): `NOTIFY_LOG`,
    /// `RECEIPTS_TOPIC` and `PUBSUB_EMULATOR_HOST`, the trace project,
    /// `ALLOWED_HOSTS`, `SUPPRESSION_KEY` or `SUPPRESSION_KEY_FILE`, each as
    /// [`ReceiverSettings::from_vars`] reads it. It serves no pushes, so
    /// it reads no `PUSH_*`, `DEAD_LETTER_TOPIC` or `PUSH_ANSWER`.
    pub fn webhooks_from_vars(
        get: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<ReceiverSettings> {
        Ok(ReceiverSettings {
            notify_log: notify_log::setting_from_vars(&get)?,
            receipts: TopicSetting::from_vars(&get, "RECEIPTS_TOPIC", "lab-report-receipts")?,
            trace_project: trace::project_from_vars(&get),
            allowed_hosts: AllowedHosts::from_vars(&get)?,
            suppression_key: secret_from_vars(&get, "SUPPRESSION_KEY")?,
            ..ReceiverSettings::default()
        })
    }
}

/// When a push is answered while its notification is still being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAnswer {
    /// 503 once the channel's send timeout has passed; the attempt goes
    /// on in the background and is recorded or released when it ends, and
    /// its redelivery waits for it. Keeps the answer within a short ack
    /// deadline (`up`'s 30 s).
    Early,
    /// Only once claim → send → record has ended, each within its limit
    /// ([`ClaimLimits::task`](crate::notify_log::ClaimLimits::task) of the
    /// channel's [`attempt_limit`](crate::Channel::attempt_limit), plus
    /// parking: 75 s for SMS, 380 s for email at the defaults): nothing runs
    /// after the answer. On Cloud Run, where an instance's CPU is
    /// throttled between requests, work after the answer would crawl and
    /// die with the instance; the subscription's ack deadline and the
    /// service's request timeout must outlast the wait.
    WhenDone,
}

impl PushAnswer {
    fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<PushAnswer> {
        let set = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        match set("PUSH_ANSWER").as_deref() {
            Some("early") => Ok(PushAnswer::Early),
            Some("when-done") => Ok(PushAnswer::WhenDone),
            Some(other) => {
                anyhow::bail!("PUSH_ANSWER must be `early` or `when-done`, not {other:?}")
            }
            None if labrelay_runtime::on_cloud_run(&get) => Ok(PushAnswer::WhenDone),
            None => Ok(PushAnswer::Early),
        }
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
        assert_eq!(settings.push_answer, PushAnswer::Early);
        let verify = ReceiverSettings::from_vars(vars(&[])).unwrap_err();
        assert!(verify.to_string().contains("PUSH_AUDIENCE"), "{verify}");
    }

    #[test]
    fn on_cloud_run_a_push_is_answered_when_its_work_is_done() {
        let answer = |pairs: &[(&str, &str)]| {
            let mut all = vec![("PUSH_AUTH", "off")];
            all.extend_from_slice(pairs);
            ReceiverSettings::from_vars(vars(&all)).map(|s| s.push_answer)
        };
        assert_eq!(answer(&[]).unwrap(), PushAnswer::Early);
        assert_eq!(
            answer(&[("K_SERVICE", "email-service")]).unwrap(),
            PushAnswer::WhenDone
        );
        assert_eq!(
            answer(&[("K_SERVICE", "email-service"), ("PUSH_ANSWER", "early")]).unwrap(),
            PushAnswer::Early
        );
        assert_eq!(
            answer(&[("PUSH_ANSWER", "when-done")]).unwrap(),
            PushAnswer::WhenDone
        );
        let error = answer(&[("PUSH_ANSWER", "later")]).unwrap_err();
        assert!(error.to_string().contains("PUSH_ANSWER"), "{error}");
    }
}
