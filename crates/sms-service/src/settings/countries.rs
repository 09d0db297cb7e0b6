//! Which countries the service texts (`SMS_ALLOWED_COUNTRIES`), by the
//! country calling code of the owner's number.
//!
//! Why: whoever can get a report published (a lab's key, or anything that
//! reaches the broker) chooses the number, and SMS to some destinations
//! costs the sender and pays whoever runs the receiving range ("SMS
//! pumping"). A clinic texts the few countries it serves; everything else
//! is skipped before Twilio is asked.
//!
//! Unset, every country is allowed but the non-geographic codes
//! ([`NON_GEOGRAPHIC`]: international freephone and shared-cost numbers,
//! satellite and international networks, premium rate), which no pet owner
//! needs and which are the classic pumping targets; the service warns at
//! start that the setting is recommended. Twilio's SMS Geo Permissions are
//! the second lock, on the account itself.
//!
//! Calling codes (ITU-T E.164) are one to three digits and prefix-free: no
//! code is the start of another, so the code of a number is read off its
//! first digits without a table of every country: `1` and `7` are whole
//! codes, the two-digit codes are listed in `TWO_DIGIT`, anything else
//! takes three digits.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::bail;

use crate::phone::PhoneNumber;

/// The two-digit country calling codes; every other code but `1` and `7`
/// has three digits.
const TWO_DIGIT: [u16; 44] = [
    20, 27, // Egypt, South Africa
    30, 31, 32, 33, 34, 36, 39, // Greece .. Italy
    40, 41, 43, 44, 45, 46, 47, 48, 49, // Romania .. Germany
    51, 52, 53, 54, 55, 56, 57, 58, // Peru .. Venezuela
    60, 61, 62, 63, 64, 65, 66, // Malaysia .. Thailand
    81, 82, 84, 86, // Japan, Korea, Viet Nam, China
    90, 91, 92, 93, 94, 95, 98, // Türkiye .. Iran
];

/// Not a country: refused unless `SMS_ALLOWED_COUNTRIES` lists them.
/// +800 international freephone, +808 shared cost, +870 Inmarsat, +878
/// universal personal telecommunications, +881 global mobile satellite,
/// +882 and +883 international networks, +888 disaster relief (OCHA),
/// +979 international premium rate, +991 trial public correspondence.
pub const NON_GEOGRAPHIC: [CallingCode; 10] = [
    CallingCode(800),
    CallingCode(808),
    CallingCode(870),
    CallingCode(878),
    CallingCode(881),
    CallingCode(882),
    CallingCode(883),
    CallingCode(888),
    CallingCode(979),
    CallingCode(991),
];

/// An E.164 country calling code, shown as `+44`. Logging it says which
/// country, never whose number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallingCode(u16);

impl CallingCode {
    /// The calling code `number` starts with.
    pub fn of(number: &PhoneNumber) -> CallingCode {
        let digits = &number.as_str()[1..];
        // A PhoneNumber has at least 8 digits, the first not 0.
        let code = &digits[..code_len(digits)];
        CallingCode(code.parse().expect("a PhoneNumber's first digits"))
    }

    /// One entry of `SMS_ALLOWED_COUNTRIES`: `+` and a whole calling code.
    pub fn parse(entry: &str) -> anyhow::Result<CallingCode> {
        let hint =
            "list country calling codes with their '+', like SMS_ALLOWED_COUNTRIES=+1,+44,+82";
        let Some(digits) = entry.strip_prefix('+') else {
            bail!("SMS_ALLOWED_COUNTRIES: {entry:?} is not a calling code; {hint}");
        };
        if digits.is_empty()
            || digits.len() > 3
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            bail!(
                "SMS_ALLOWED_COUNTRIES: {entry:?} is not a calling code (1 to 3 digits, the first not 0); {hint}"
            );
        }
        let len = code_len(digits);
        if len < digits.len() {
            bail!(
                "SMS_ALLOWED_COUNTRIES: {entry:?} is not a calling code: it starts with the calling code +{}, which covers every number starting {entry}; list +{} (numbers are allowed by whole country codes)",
                &digits[..len],
                &digits[..len]
            );
        }
        if len > digits.len() {
            bail!(
                "SMS_ALLOWED_COUNTRIES: {entry:?} is only the start of calling codes (ITU-T E.164 codes starting {digits} are longer); {hint}"
            );
        }
        Ok(CallingCode(digits.parse()?))
    }
}

impl fmt::Display for CallingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

/// How many of `digits` (no '+', the first not 0) form the calling code:
/// 1, 2 or 3. Fewer digits than that are no code at all.
fn code_len(digits: &str) -> usize {
    match digits.as_bytes() {
        [b'1' | b'7', ..] => 1,
        [a @ b'0'..=b'9', b @ b'0'..=b'9', ..]
            if TWO_DIGIT.contains(&(u16::from(a - b'0') * 10 + u16::from(b - b'0'))) =>
        {
            2
        }
        _ => 3,
    }
}

/// `SMS_ALLOWED_COUNTRIES`: where the service may send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedCountries {
    /// Unset: every calling code but [`NON_GEOGRAPHIC`].
    #[default]
    AllButNonGeographic,
    /// Only these.
    Only(BTreeSet<CallingCode>),
}

impl AllowedCountries {
    /// Parses the variable's value (`None`: unset): calling codes separated
    /// by commas, spaces around them ignored, repeats harmless.
    pub fn parse(value: Option<&str>) -> anyhow::Result<AllowedCountries> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(AllowedCountries::AllButNonGeographic);
        };
        let codes = value
            .split(',')
            .map(|entry| match entry.trim() {
                "" => bail!(
                    "SMS_ALLOWED_COUNTRIES has an empty entry in {value:?}; separate calling codes with single commas, like +1,+44"
                ),
                entry => CallingCode::parse(entry),
            })
            .collect::<anyhow::Result<BTreeSet<_>>>()?;
        Ok(AllowedCountries::Only(codes))
    }

    /// The calling code of `number`, as the error when it may not be sent to.
    pub fn check(&self, number: &PhoneNumber) -> Result<(), CallingCode> {
        let code = CallingCode::of(number);
        let allowed = match self {
            AllowedCountries::AllButNonGeographic => !NON_GEOGRAPHIC.contains(&code),
            AllowedCountries::Only(codes) => codes.contains(&code),
        };
        if allowed { Ok(()) } else { Err(code) }
    }

    /// The start-up line: a warning while unset, since the default still
    /// lets a forged report text any country.
    pub fn log_at_start(&self) {
        match self {
            AllowedCountries::AllButNonGeographic => tracing::warn!(
                "SMS_ALLOWED_COUNTRIES is unset: SMS may go to any country except the non-geographic calling codes ({}); set it to the calling codes your clinics serve (e.g. SMS_ALLOWED_COUNTRIES=+1) and limit Twilio's SMS Geo Permissions to the same countries",
                list(NON_GEOGRAPHIC.iter())
            ),
            AllowedCountries::Only(codes) => tracing::info!(
                allowed_countries = %list(codes.iter()),
                "SMS are sent only to these calling codes (SMS_ALLOWED_COUNTRIES)"
            ),
        }
    }
}

fn list<'a>(codes: impl Iterator<Item = &'a CallingCode>) -> String {
    codes.map(ToString::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(raw: &str) -> PhoneNumber {
        PhoneNumber::parse(raw).unwrap()
    }

    #[test]
    fn reads_the_calling_code_of_a_number() {
        let cases = [
            ("+15551234567", "+1"),
            ("+1 242 555 0123", "+1"), // the Bahamas: in +1 too
            ("+74951234567", "+7"),
            ("+442079460958", "+44"),
            ("+4930123456", "+49"),
            ("+821012345678", "+82"),
            ("+201001234567", "+20"),
            ("+27821234567", "+27"),
            ("+35312345678", "+353"),
            ("+2121234567890", "+212"),
            ("+420601123456", "+420"),
            ("+85212345678", "+852"),
            ("+88212345678", "+882"),
            ("+8816 1234 5678", "+881"),
            ("+80012345678", "+800"),
            ("+97912345678", "+979"),
            ("+97212345678", "+972"),
            ("+99112345678", "+991"),
            ("+96612345678", "+966"),
            ("+59812345678", "+598"),
            ("+50212345678", "+502"),
            ("+6701234567", "+670"),
        ];
        for (raw, want) in cases {
            assert_eq!(CallingCode::of(&number(raw)).to_string(), want, "{raw}");
        }
    }

    #[test]
    fn the_two_digit_codes_are_prefix_free() {
        for code in TWO_DIGIT {
            assert!((20..100).contains(&code), "{code}");
            assert!(
                !matches!(code / 10, 1 | 7),
                "{code} starts with a whole code"
            );
        }
        let unique: BTreeSet<_> = TWO_DIGIT.iter().collect();
        assert_eq!(unique.len(), TWO_DIGIT.len());
        for code in NON_GEOGRAPHIC {
            assert_eq!(CallingCode::parse(&code.to_string()).unwrap(), code);
        }
    }

    #[test]
    fn parses_the_setting() {
        assert_eq!(
            AllowedCountries::parse(None).unwrap(),
            AllowedCountries::AllButNonGeographic
        );
        assert_eq!(
            AllowedCountries::parse(Some("  ")).unwrap(),
            AllowedCountries::AllButNonGeographic
        );
        let AllowedCountries::Only(codes) =
            AllowedCountries::parse(Some(" +1, +44 ,+82,+353,+1,+882")).unwrap()
        else {
            panic!("a list")
        };
        assert_eq!(list(codes.iter()), "+1,+44,+82,+353,+882");
    }

    #[test]
    fn rejects_what_is_not_a_calling_code_saying_what_to_write() {
        let cases = [
            ("US", "with their '+'"),
            ("44", "with their '+'"),
            ("+", "1 to 3 digits"),
            ("+044", "1 to 3 digits"),
            ("+4412", "1 to 3 digits"),
            ("+4a", "1 to 3 digits"),
            ("+ 44", "1 to 3 digits"),
            ("+12", "list +1"),
            ("+1242", "1 to 3 digits"),
            ("+441", "list +44"),
            ("+72", "list +7"),
            ("+3", "only the start"),
            ("+35", "only the start"),
            ("+8", "only the start"),
            ("+1,,+44", "empty entry"),
            ("+1,", "empty entry"),
            ("+1;+44", "1 to 3 digits"),
        ];
        for (value, want) in cases {
            let error = AllowedCountries::parse(Some(value))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("SMS_ALLOWED_COUNTRIES") && error.contains(want),
                "{value:?}: {error}"
            );
        }
    }

    #[test]
    fn allows_only_what_is_listed_or_by_default_all_but_non_geographic() {
        let default = AllowedCountries::default();
        for raw in [
            "+15551234567",
            "+442079460958",
            "+35312345678",
            "+85212345678",
        ] {
            assert_eq!(default.check(&number(raw)), Ok(()), "{raw}");
        }
        for raw in [
            "+88212345678",
            "+88312345678",
            "+80012345678",
            "+97912345678",
        ] {
            assert_eq!(
                default.check(&number(raw)).map_err(|c| c.to_string()),
                Err(raw[..4].to_string()),
                "{raw}"
            );
        }
        let listed = AllowedCountries::parse(Some("+1,+44,+882")).unwrap();
        assert_eq!(listed.check(&number("+15551234567")), Ok(()));
        assert_eq!(listed.check(&number("+447911123456")), Ok(()));
        assert_eq!(listed.check(&number("+88212345678")), Ok(()));
        assert_eq!(listed.check(&number("+821012345678")), Err(CallingCode(82)));
        // +4 is not +44: a number is matched by its whole calling code.
        assert_eq!(listed.check(&number("+4930123456")), Err(CallingCode(49)));
    }
}
