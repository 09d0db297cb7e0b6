//! What arrived on each channel, per report.

use std::collections::{BTreeMap, BTreeSet};

use super::stream::report_id;

/// One email as it arrived.
#[derive(Debug, Clone)]
pub struct Email {
    pub message_id: String,
    /// When the SMTP server stored it (ns since the epoch).
    pub stored_ns: u128,
}

/// What arrived, per report id.
#[derive(Debug, Default)]
pub struct Tally {
    pub emails: BTreeMap<String, Vec<Email>>,
    /// When the Twilio stand-in accepted each SMS (ns since the epoch).
    pub sms: BTreeMap<String, Vec<u128>>,
}

impl Tally {
    pub fn emails_total(&self) -> usize {
        self.emails.values().map(Vec::len).sum()
    }

    pub fn sms_total(&self) -> usize {
        self.sms.values().map(Vec::len).sum()
    }

    /// Extra copies beyond the first, by channel.
    pub fn duplicates(&self) -> (usize, usize) {
        (
            self.emails_total() - self.emails.len(),
            self.sms_total() - self.sms.len(),
        )
    }

    /// Reports answered 204 that never arrived, by channel.
    pub fn lost(&self, accepted: &BTreeSet<String>) -> (usize, usize) {
        (
            accepted
                .iter()
                .filter(|id| !self.emails.contains_key(*id))
                .count(),
            accepted
                .iter()
                .filter(|id| !self.sms.contains_key(*id))
                .count(),
        )
    }

    /// Reports emailed more than once, with their copies.
    pub fn duplicated_emails(&self) -> Vec<(&String, &Vec<Email>)> {
        self.emails.iter().filter(|(_, e)| e.len() > 1).collect()
    }
}

pub(super) fn report_for_phone(phone: &str) -> String {
    phone
        .strip_prefix("+1555")
        .and_then(|n| n.parse::<usize>().ok())
        .map_or_else(|| format!("? {phone}"), report_id)
}
