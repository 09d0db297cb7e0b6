//! Typed settings, read from the environment the way Cloud Run passes them,
//! or built in code by `labrelay up`.
//!
//! Exactly one delivery: `SMS_URL=file:///dir` (a directory outbox, with
//! `SMS_FROM` as the sender it records), or Twilio (`TWILIO_ACCOUNT_SID`,
//! `TWILIO_AUTH_TOKEN` or `TWILIO_AUTH_TOKEN_FILE`, `TWILIO_FROM` or
//! `TWILIO_MESSAGING_SERVICE_SID`, optional `TWILIO_API_BASE` and
//! `TWILIO_TIMEOUT_SECS`, and `PUBLIC_URL`, where Twilio reaches this
//! service's webhooks). `SMS_ALLOWED_COUNTRIES` limits the destinations
//! (see [`countries`]). `DEFAULT_LOCALE` and `TEMPLATES_DIR` choose the
//! words ([`TemplateSettings`]). Empty variables count as unset.

pub mod countries;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use labrelay_receiver::ReceiverSettings;
use labrelay_runtime::secret::{Secret, secret_from_vars};
use labrelay_templates::TemplateSettings;

use crate::phone::PhoneNumber;
use countries::AllowedCountries;

/// Where Twilio's REST API lives.
pub const DEFAULT_TWILIO_API_BASE: &str = "https://api.twilio.com";
/// How long a push waits for its Twilio request, connection included,
/// before the broker is answered 503. The request itself goes on, up to
/// four times this but at most 45 s (inside the notification log's 60 s
/// claim lease), and is recorded or released when it ends. The broker waits
/// for the push up to the subscription's ack deadline (10 s by default):
/// keep this at or below it.
pub const DEFAULT_TWILIO_TIMEOUT: Duration = Duration::from_secs(10);
/// The `from` recorded in outbox messages unless `SMS_FROM` says otherwise.
pub const DEFAULT_OUTBOX_FROM: &str = "labrelay";

/// Everything the sms-service needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub delivery: Delivery,
    /// `SMS_ALLOWED_COUNTRIES`: owners whose number is elsewhere are not
    /// texted (the push is acknowledged as skipped). By default every
    /// country but the non-geographic codes.
    pub allowed_countries: AllowedCountries,
    /// What every push receiver reads: who may push (`PUSH_*`), the
    /// notification log (`NOTIFY_LOG`; SMS already sent are not sent
    /// again), the trace project and `ALLOWED_HOSTS`. Push tokens are
    /// verified by default when read from the environment; everything is
    /// off in the constructors for code and tests.
    pub receiver: ReceiverSettings,
    /// The clinic's default locale (`DEFAULT_LOCALE`) and its own
    /// templates (`TEMPLATES_DIR`); checked when the service starts.
    pub templates: TemplateSettings,
}

/// How messages leave the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// One JSON file per message in a directory (the local default).
    Outbox(OutboxSettings),
    Twilio(TwilioSettings),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxSettings {
    /// Created at start-up if missing.
    pub dir: PathBuf,
    /// Recorded as each message's `from`.
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioSettings {
    pub account_sid: String,
    pub auth_token: Secret,
    pub sender: TwilioSender,
    /// Scheme, host and optional port (and path prefix), without
    /// `/2010-04-01/...`; tests point it at a stand-in.
    pub api_base: String,
    /// `TWILIO_TIMEOUT_SECS`; see [`DEFAULT_TWILIO_TIMEOUT`].
    pub timeout: Duration,
    /// `PUBLIC_URL`: where Twilio reaches the webhooks, without a
    /// trailing path: this service's URL, or (on Cloud Run, where only
    /// Pub/Sub reaches the sms-service) that of a `labrelay sms-webhooks`
    /// sharing its log; the service serves them whenever this is set,
    /// unreachably and harmlessly in the second case. With it and `NOTIFY_LOG`,
    /// every message asks for delivery receipts at
    /// `PUBLIC_URL/twilio/status`, and STOP/START texted to the sender
    /// are taken at `PUBLIC_URL/twilio/inbound`; both check Twilio's
    /// signature against this URL. `None`: neither.
    pub public_url: Option<String>,
}

/// Who the message is from, as Twilio's `From` or `MessagingServiceSid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioSender {
    /// An E.164 number, a short code or an alphanumeric sender ID.
    From(String),
    MessagingService(String),
}

impl Settings {
    /// A directory outbox at `dir`, recording the default sender.
    pub fn outbox(dir: impl Into<PathBuf>) -> Settings {
        Settings {
            delivery: Delivery::Outbox(OutboxSettings {
                dir: dir.into(),
                from: DEFAULT_OUTBOX_FROM.to_string(),
            }),
            allowed_countries: AllowedCountries::default(),
            receiver: ReceiverSettings::default(),
            templates: TemplateSettings::default(),
        }
    }

    /// Twilio with the default API base and timeout.
    pub fn twilio(account_sid: &str, auth_token: &str, sender: TwilioSender) -> Settings {
        Settings {
            delivery: Delivery::Twilio(TwilioSettings {
                account_sid: account_sid.to_string(),
                auth_token: Secret::new(auth_token),
                sender,
                api_base: DEFAULT_TWILIO_API_BASE.to_string(),
                timeout: DEFAULT_TWILIO_TIMEOUT,
                public_url: None,
            }),
            allowed_countries: AllowedCountries::default(),
            receiver: ReceiverSettings::default(),
            templates: TemplateSettings::default(),
        }
    }

    pub fn from_env() -> anyhow::Result<Settings> {
        Settings::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `get`, so tests need not touch the
    /// process environment.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Settings> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let delivery = match (var("SMS_URL"), var("TWILIO_ACCOUNT_SID")) {
            (Some(_), Some(_)) => bail!(
                "both SMS_URL and TWILIO_ACCOUNT_SID are set; set SMS_URL for a directory outbox or the TWILIO_* variables for Twilio, not both"
            ),
            (Some(url), None) => Delivery::Outbox(OutboxSettings {
                dir: outbox_dir(&url)?,
                from: var("SMS_FROM").unwrap_or_else(|| DEFAULT_OUTBOX_FROM.to_string()),
            }),
            (None, Some(account_sid)) => Delivery::Twilio(twilio_from_vars(account_sid, &var)?),
            (None, None) => bail!(
                "no SMS channel configured: set SMS_URL=file:///path/to/dir for a directory outbox, or TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM (or TWILIO_MESSAGING_SERVICE_SID) for Twilio"
            ),
        };
        let receiver = ReceiverSettings::from_vars(&get)?;
        let allowed_countries = AllowedCountries::parse(var("SMS_ALLOWED_COUNTRIES").as_deref())?;
        let settings = Settings {
            delivery,
            allowed_countries,
            receiver,
            templates: TemplateSettings::from_vars(&get)?,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what `from_vars` cannot express in types; `app` calls it too,
    /// for settings built in code.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let Delivery::Twilio(twilio) = &self.delivery else {
            return Ok(());
        };
        if !is_sid(&twilio.account_sid) {
            bail!(
                "TWILIO_ACCOUNT_SID must be letters and digits (like AC followed by 32 hex digits)"
            );
        }
        if twilio.auth_token.expose().is_empty() {
            bail!("the Twilio auth token is empty");
        }
        match &twilio.sender {
            TwilioSender::From(from) => check_from(from)?,
            TwilioSender::MessagingService(sid) if !is_sid(sid) => bail!(
                "TWILIO_MESSAGING_SERVICE_SID must be letters and digits (like MG followed by 32 hex digits)"
            ),
            TwilioSender::MessagingService(_) => {}
        }
        if twilio.timeout.is_zero() {
            bail!("TWILIO_TIMEOUT_SECS must be more than 0");
        }
        let base = reqwest::Url::parse(&twilio.api_base)
            .with_context(|| format!("TWILIO_API_BASE {:?} is not a URL", twilio.api_base))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("TWILIO_API_BASE must be an http:// or https:// URL");
        }
        if base.query().is_some() || !base.username().is_empty() || base.password().is_some() {
            bail!("TWILIO_API_BASE must not carry a query or credentials");
        }
        if let Some(public) = &twilio.public_url {
            check_public_url(public)?;
        }
        Ok(())
    }
}

/// What `labrelay sms-webhooks` needs: Twilio's webhooks alone, on a
/// public service beside an internal sms-service that shares its
/// notification log (on Cloud Run, where Pub/Sub alone reaches the
/// sms-service). It sends nothing, so it reads no sender or push settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// `TWILIO_AUTH_TOKEN` or `TWILIO_AUTH_TOKEN_FILE`: what Twilio signs
    /// its calls with.
    pub auth_token: Secret,
    /// `PUBLIC_URL`: this service's own URL, as Twilio calls it, without a
    /// trailing `/` (the sms-service's `PUBLIC_URL` names it too).
    pub public_url: String,
    /// The notification log (`NOTIFY_LOG`, required), `RECEIPTS_TOPIC`,
    /// `SUPPRESSION_KEY`, the trace project and `ALLOWED_HOSTS`
    /// ([`ReceiverSettings::webhooks_from_vars`]).
    pub receiver: ReceiverSettings,
}

impl WebhookSettings {
    pub fn from_env() -> anyhow::Result<WebhookSettings> {
        WebhookSettings::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `get`; fails without `PUBLIC_URL`,
    /// `NOTIFY_LOG` or the auth token.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<WebhookSettings> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let public_url = var("PUBLIC_URL")
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .context(
                "PUBLIC_URL is required: this service's own URL, which Twilio calls and signs (like https://sms-webhooks-abc-uc.a.run.app)",
            )?;
        check_public_url(&public_url)?;
        let auth_token = secret_from_vars(&var, "TWILIO_AUTH_TOKEN")?
            .filter(|token| !token.expose().is_empty())
            .context("TWILIO_AUTH_TOKEN (or TWILIO_AUTH_TOKEN_FILE) is required: Twilio signs its calls with it")?;
        let receiver = ReceiverSettings::webhooks_from_vars(&get)?;
        if receiver.notify_log == labrelay_receiver::notify_log::NotifyLogSetting::Off {
            bail!(
                "NOTIFY_LOG is required: the notification log the sms-service writes, where receipts and opt-outs are kept"
            );
        }
        Ok(WebhookSettings {
            auth_token,
            public_url,
            receiver,
        })
    }
}

/// `PUBLIC_URL`: http or https, without a query, fragment or credentials.
fn check_public_url(public: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(public)
        .with_context(|| format!("PUBLIC_URL {public:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.cannot_be_a_base()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        bail!(
            "PUBLIC_URL must be an http:// or https:// URL without a query or credentials, like https://sms-service-abc-uc.a.run.app"
        );
    }
    Ok(())
}

fn twilio_from_vars(
    account_sid: String,
    var: &impl Fn(&str) -> Option<String>,
) -> anyhow::Result<TwilioSettings> {
    let auth_token = secret_from_vars(&var, "TWILIO_AUTH_TOKEN")?
        .context("TWILIO_AUTH_TOKEN (or TWILIO_AUTH_TOKEN_FILE) is required")?;
    let sender = match (var("TWILIO_FROM"), var("TWILIO_MESSAGING_SERVICE_SID")) {
        (Some(_), Some(_)) => {
            bail!("set TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID, not both")
        }
        (Some(from), None) => TwilioSender::From(from.trim().to_string()),
        (None, Some(sid)) => TwilioSender::MessagingService(sid.trim().to_string()),
        (None, None) => bail!("TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID is required"),
    };
    let timeout = match var("TWILIO_TIMEOUT_SECS") {
        None => DEFAULT_TWILIO_TIMEOUT,
        Some(secs) => secs
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .with_context(|| {
                format!("TWILIO_TIMEOUT_SECS must be a positive number of seconds, not {secs:?}")
            })?,
    };
    Ok(TwilioSettings {
        account_sid: account_sid.trim().to_string(),
        auth_token,
        sender,
        api_base: var("TWILIO_API_BASE")
            .map(|b| b.trim().to_string())
            .unwrap_or_else(|| DEFAULT_TWILIO_API_BASE.to_string()),
        timeout,
        public_url: var("PUBLIC_URL").map(|u| u.trim().trim_end_matches('/').to_string()),
    })
}

/// The directory of a `file://` URL (percent-decoded, absolute).
fn outbox_dir(url: &str) -> anyhow::Result<PathBuf> {
    let parsed =
        reqwest::Url::parse(url.trim()).with_context(|| format!("SMS_URL {url:?} is not a URL"))?;
    if parsed.scheme() != "file" {
        bail!(
            "SMS_URL must be a file:// URL naming a directory; for Twilio set TWILIO_ACCOUNT_SID and leave SMS_URL unset"
        );
    }
    parsed
        .to_file_path()
        .map_err(|()| anyhow::anyhow!("SMS_URL {url:?} must be file:///absolute/path"))
}

/// Twilio SIDs are two letters and 32 hex digits; anything URL-safe and
/// alphanumeric is accepted so that stand-ins can use short ones.
fn is_sid(sid: &str) -> bool {
    !sid.is_empty() && sid.len() <= 64 && sid.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `From` is an E.164 number, a short code (3 to 8 digits) or an
/// alphanumeric sender ID (1 to 11 letters, digits and spaces, at least one
/// letter).
fn check_from(from: &str) -> anyhow::Result<()> {
    if from.starts_with('+') {
        PhoneNumber::parse(from).context("TWILIO_FROM is not an E.164 number")?;
        return Ok(());
    }
    let short_code = (3..=8).contains(&from.len()) && from.bytes().all(|b| b.is_ascii_digit());
    let alphanumeric = (1..=11).contains(&from.len())
        && from.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && from.bytes().any(|b| b.is_ascii_alphabetic());
    if short_code || alphanumeric {
        Ok(())
    } else {
        bail!(
            "TWILIO_FROM must be an E.164 number (+15551230000), a short code or an alphanumeric sender ID of up to 11 characters"
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use labrelay_receiver::push_auth::PushAuth;

    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";

    /// Settings from `vars`, with push verification off unless they set a
    /// `PUSH_*` variable.
    fn from(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let mut vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !vars.keys().any(|k| k.starts_with("PUSH_")) {
            vars.insert("PUSH_AUTH".into(), "off".into());
        }
        Settings::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn reads_a_file_outbox() {
        let settings = from(&[("SMS_URL", "file:///var/lib/labrelay/outbox/sms")]).unwrap();
        assert_eq!(settings, Settings::outbox("/var/lib/labrelay/outbox/sms"));
        let settings = from(&[
            ("SMS_URL", "file:///tmp/my%20outbox"),
            ("SMS_FROM", "+15550000000"),
        ])
        .unwrap();
        let Delivery::Outbox(outbox) = settings.delivery else {
            panic!()
        };
        assert_eq!(outbox.dir, PathBuf::from("/tmp/my outbox"));
        assert_eq!(outbox.from, "+15550000000");
    }

    #[test]
    fn verifies_pushes_unless_told_not_to() {
        let url = ("SMS_URL", "file:///tmp/sms");
        let error = from(&[url, ("PUSH_AUTH", "verify")]).unwrap_err();
        assert!(error.to_string().contains("PUSH_AUDIENCE"), "{error}");
        let settings = from(&[
            url,
            ("PUSH_AUDIENCE", "https://sms-service-abc-uc.a.run.app/"),
            (
                "PUSH_ALLOWED_SERVICE_ACCOUNTS",
                "pubsub-cloud-run-invoker@p.iam.gserviceaccount.com",
            ),
        ])
        .unwrap();
        assert!(matches!(settings.receiver.push_auth, PushAuth::Verify(_)));
        assert_eq!(from(&[url]).unwrap().receiver.push_auth, PushAuth::Off);
    }

    #[test]
    fn reads_twilio_with_defaults() {
        let settings = from(&[
            ("TWILIO_ACCOUNT_SID", SID),
            ("TWILIO_AUTH_TOKEN", "tok3n"),
            ("TWILIO_FROM", "+15551230000"),
            ("SMS_URL", ""),
        ])
        .unwrap();
        assert_eq!(
            settings,
            Settings::twilio(SID, "tok3n", TwilioSender::From("+15551230000".into()))
        );
    }

    #[test]
    fn reads_every_twilio_variable() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "from-a-file\n").unwrap();
        let settings = from(&[
            ("TWILIO_ACCOUNT_SID", SID),
            ("TWILIO_AUTH_TOKEN_FILE", token_file.to_str().unwrap()),
            (
                "TWILIO_MESSAGING_SERVICE_SID",
                "MG0123456789abcdef0123456789abcdef",
            ),
            ("TWILIO_API_BASE", "http://127.0.0.1:4010"),
            ("TWILIO_TIMEOUT_SECS", "2.5"),
        ])
        .unwrap();
        let Delivery::Twilio(twilio) = settings.delivery else {
            panic!()
        };
        assert_eq!(twilio.auth_token.expose(), "from-a-file");
        assert_eq!(
            twilio.sender,
            TwilioSender::MessagingService("MG0123456789abcdef0123456789abcdef".into())
        );
        assert_eq!(twilio.api_base, "http://127.0.0.1:4010");
        assert_eq!(twilio.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn rejects_incomplete_or_ambiguous_settings_saying_what_to_set() {
        let twilio = [
            ("TWILIO_ACCOUNT_SID", SID),
            ("TWILIO_AUTH_TOKEN", "t"),
            ("TWILIO_FROM", "+15551230000"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = twilio.to_vec();
            for &(k, v) in extra {
                vars.retain(|&(name, _)| name != k);
                vars.push((k, v));
            }
            vars
        };
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![], "no SMS channel configured"),
            (vec![("SMS_URL", "smtp://localhost")], "file:// URL"),
            (vec![("SMS_URL", "not a url")], "not a URL"),
            (
                vec![("SMS_URL", "file://host/dir")],
                "file:///absolute/path",
            ),
            (with(&[("SMS_URL", "file:///tmp")]), "not both"),
            (
                twilio[..2].to_vec(),
                "TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID",
            ),
            (vec![twilio[0], twilio[2]], "TWILIO_AUTH_TOKEN"),
            (with(&[("TWILIO_AUTH_TOKEN_FILE", "/x")]), "not both"),
            (with(&[("TWILIO_AUTH_TOKEN", " ")]), "TWILIO_AUTH_TOKEN"),
            (with(&[("TWILIO_MESSAGING_SERVICE_SID", "MG1")]), "not both"),
            (
                with(&[("TWILIO_ACCOUNT_SID", "AC/../x")]),
                "TWILIO_ACCOUNT_SID",
            ),
            (with(&[("TWILIO_FROM", "+1555")]), "TWILIO_FROM"),
            (with(&[("TWILIO_FROM", "555-1230")]), "TWILIO_FROM"),
            (with(&[("TWILIO_FROM", "PetTheoryClinic")]), "TWILIO_FROM"),
            (with(&[("TWILIO_TIMEOUT_SECS", "0")]), "TWILIO_TIMEOUT_SECS"),
            (
                with(&[("TWILIO_TIMEOUT_SECS", "-1")]),
                "TWILIO_TIMEOUT_SECS",
            ),
            (
                with(&[("TWILIO_TIMEOUT_SECS", "ten")]),
                "TWILIO_TIMEOUT_SECS",
            ),
            (
                with(&[("TWILIO_API_BASE", "api.twilio.com")]),
                "TWILIO_API_BASE",
            ),
            (
                with(&[("TWILIO_API_BASE", "ftp://api.twilio.com")]),
                "TWILIO_API_BASE",
            ),
            (
                with(&[("TWILIO_API_BASE", "https://u:p@api.twilio.com")]),
                "TWILIO_API_BASE",
            ),
        ];
        for (vars, want) in cases {
            let err = format!("{:#}", from(&vars).unwrap_err());
            assert!(err.contains(want), "{vars:?}: {err}");
        }
        let missing_file = vec![
            twilio[0],
            twilio[2],
            ("TWILIO_AUTH_TOKEN_FILE", "/nonexistent/t"),
        ];
        let err = format!("{:#}", from(&missing_file).unwrap_err());
        assert!(err.contains("reading TWILIO_AUTH_TOKEN_FILE"), "{err}");
    }

    #[test]
    fn reads_the_allowed_countries() {
        let twilio = [
            ("TWILIO_ACCOUNT_SID", SID),
            ("TWILIO_AUTH_TOKEN", "t"),
            ("TWILIO_FROM", "+15551230000"),
        ];
        let with = |value: &'static str| {
            let mut vars = twilio.to_vec();
            vars.push(("SMS_ALLOWED_COUNTRIES", value));
            from(&vars)
        };
        assert_eq!(
            from(&twilio).unwrap().allowed_countries,
            AllowedCountries::AllButNonGeographic
        );
        assert_eq!(
            with(" ").unwrap().allowed_countries,
            AllowedCountries::AllButNonGeographic
        );
        let listed = with("+1,+44,+82").unwrap().allowed_countries;
        assert_eq!(
            listed,
            AllowedCountries::parse(Some("+82, +44, +1")).unwrap()
        );
        let outbox = from(&[
            ("SMS_URL", "file:///tmp/sms"),
            ("SMS_ALLOWED_COUNTRIES", "+1"),
        ])
        .unwrap();
        assert_eq!(outbox.allowed_countries, listed_one("+1"));
        for (value, want) in [
            ("US,GB", "\"US\""),
            ("+1,+4", "\"+4\""),
            ("+1,,+44", "empty"),
        ] {
            let error = format!("{:#}", with(value).unwrap_err());
            assert!(
                error.contains("SMS_ALLOWED_COUNTRIES") && error.contains(want),
                "{value}: {error}"
            );
        }
    }

    fn listed_one(code: &str) -> AllowedCountries {
        AllowedCountries::parse(Some(code)).unwrap()
    }

    #[test]
    fn accepts_short_codes_and_alphanumeric_senders() {
        for sender in ["+15551230000", "12345", "PetTheory", "Pet Theory"] {
            let vars = [
                ("TWILIO_ACCOUNT_SID", SID),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("TWILIO_FROM", sender),
            ];
            assert!(from(&vars).is_ok(), "{sender}");
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let settings = Settings::twilio(
            SID,
            "super-secret-token",
            TwilioSender::From("+1555".into()),
        );
        let debug = format!("{settings:?} {settings:#?}");
        assert!(!debug.contains("super-secret-token"), "{debug}");
        assert!(debug.contains("Secret(***)"), "{debug}");
    }
}
