//! Who is not to be notified ([`Suppression`]), stored under a keyed hash
//! of the recipient ([`subject_hash`]).

use sha2::Sha256;

/// A recipient who is not to be notified on a channel: they opted out
/// (Twilio's 21610, a STOP texted to the clinic's number), their mailbox
/// does not exist (an SMTP 5.1.x), or an operator said so. Stored under a
/// keyed hash of the recipient ([`subject_hash`]), never the address or
/// number itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    /// `email` or `sms`.
    pub channel: String,
    /// [`subject_hash`] of the recipient.
    pub subject: String,
    /// Why, in words safe to show and log: `twilio 21610`, `inbound STOP`,
    /// `smtp 550 5.1.1`, `operator`.
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub since_ms: i64,
}

/// The keyed hash a suppression is stored under: hex HMAC-SHA256, keyed
/// with `SUPPRESSION_KEY`, of the channel and the recipient as the
/// channel names it (an E.164 number; an email address as the report
/// writes it, case kept, since a mailbox's local part may be
/// case-sensitive). Unkeyed, a hash of a phone number is reversed by
/// trying every number; with the key, whoever reads the store without it
/// learns nothing but how many there are.
pub fn subject_hash(key: &[u8], channel: &str, recipient: &str) -> String {
    use hmac::Mac as _;
    let mut mac =
        hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for field in ["labrelay-suppression/1", channel, recipient] {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}
