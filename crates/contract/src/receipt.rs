//! A delivery receipt as the channel services publish it: each time a
//! provider's status callback moves a sent notification forward (Twilio's
//! `sent`, `delivered`, `undelivered`, `failed`), the sms-service publishes
//! a message to `RECEIPTS_TOPIC` whose attributes say so and whose data is
//! empty. The broker journals it under its `reportId` like any message, and
//! its console shows it as a step of the channel whose push answered with
//! the same provider id ([`crate::headers::PROVIDER_ID`]).
//!
//! Nothing here is personal data: ids, a status, an error code.

/// The report the receipt's notification belongs to.
pub const REPORT_ID: &str = "reportId";
/// The provider's id of the notification (Twilio's SID).
pub const SID: &str = "sid";
/// The provider's status, as the provider words it (`delivered`, ...).
pub const STATUS: &str = "status";
/// The provider's error code (Twilio's `ErrorCode`, e.g. `30003`); absent
/// without one.
pub const ERROR_CODE: &str = "errorCode";
/// `sms` or `email`.
pub const CHANNEL: &str = "channel";

/// A receipt's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptAttributes<'a> {
    pub report_id: &'a str,
    pub sid: &'a str,
    pub status: &'a str,
    pub error_code: Option<&'a str>,
    pub channel: &'a str,
}

impl<'a> ReceiptAttributes<'a> {
    /// The attributes of a message, if they are a receipt's: all of
    /// [`REPORT_ID`], [`SID`], [`STATUS`] and [`CHANNEL`] set.
    pub fn parse(get: impl Fn(&str) -> Option<&'a str>) -> Option<ReceiptAttributes<'a>> {
        let set = |name: &str| get(name).filter(|v| !v.is_empty());
        Some(ReceiptAttributes {
            report_id: set(REPORT_ID)?,
            sid: set(SID)?,
            status: set(STATUS)?,
            error_code: set(ERROR_CODE),
            channel: set(CHANNEL)?,
        })
    }

    /// The attributes to publish.
    pub fn to_attributes(&self) -> Vec<(String, String)> {
        let mut attributes = vec![
            (REPORT_ID.to_string(), self.report_id.to_string()),
            (SID.to_string(), self.sid.to_string()),
            (STATUS.to_string(), self.status.to_string()),
            (CHANNEL.to_string(), self.channel.to_string()),
        ];
        if let Some(code) = self.error_code {
            attributes.push((ERROR_CODE.to_string(), code.to_string()));
        }
        attributes
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn attributes_round_trip_and_a_report_is_not_a_receipt() {
        let receipt = ReceiptAttributes {
            report_id: "LR-1",
            sid: "SM1",
            status: "undelivered",
            error_code: Some("30003"),
            channel: "sms",
        };
        let map: HashMap<String, String> = receipt.to_attributes().into_iter().collect();
        assert_eq!(
            ReceiptAttributes::parse(|k| map.get(k).map(String::as_str)),
            Some(receipt)
        );
        let report: HashMap<&str, &str> = [("reportId", "LR-1")].into();
        assert_eq!(ReceiptAttributes::parse(|k| report.get(k).copied()), None);
    }
}
