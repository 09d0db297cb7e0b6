//! [`PhoneNumber`]: an owner's phone number in E.164, parsed once.
//!
//! Accepted: `+`, then the country code and subscriber number, 8 to 15
//! digits in all, the first not 0. Spaces and hyphens between digits are
//! accepted and dropped, because labs copy numbers as people write them
//! ("+1 555-123-4567", ITU-T E.123's international notation). Anything else
//! (parentheses, letters, extensions, a national number without `+`) is
//! rejected rather than guessed at: a wrong guess texts a stranger.

use std::fmt;

/// Why a string is not an E.164 number. The messages never repeat the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("must start with '+' and the country code (E.164)")]
    MissingPlus,
    #[error("may contain only digits after the '+', optionally separated by spaces or hyphens")]
    InvalidCharacter,
    #[error("the country code cannot start with 0")]
    LeadingZero,
    #[error(
        "must have {min} to {max} digits, not {0}",
        min = PhoneNumber::MIN_DIGITS,
        max = PhoneNumber::MAX_DIGITS
    )]
    Length(usize),
}

/// An E.164 number: `+` and 8 to 15 digits, the first not 0.
///
/// `Debug` masks the middle digits so that a stray `{:?}` in a log line
/// does not leak a phone number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub const MIN_DIGITS: usize = 8;
    pub const MAX_DIGITS: usize = 15;

    pub fn parse(raw: &str) -> Result<PhoneNumber, PhoneError> {
        let rest = raw
            .trim()
            .strip_prefix('+')
            .ok_or(PhoneError::MissingPlus)?;
        let mut number = String::with_capacity(Self::MAX_DIGITS + 1);
        number.push('+');
        let mut digits = 0;
        for c in rest.chars() {
            match c {
                '0'..='9' => {
                    digits += 1;
                    if digits <= Self::MAX_DIGITS {
                        number.push(c);
                    }
                }
                ' ' | '-' => {}
                _ => return Err(PhoneError::InvalidCharacter),
            }
        }
        if !(Self::MIN_DIGITS..=Self::MAX_DIGITS).contains(&digits) {
            return Err(PhoneError::Length(digits));
        }
        if number.as_bytes()[1] == b'0' {
            return Err(PhoneError::LeadingZero);
        }
        Ok(PhoneNumber(number))
    }

    /// The number as Twilio wants it: `+` and digits only.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = &self.0[1..];
        let (head, tail) = (&digits[..2], &digits[digits.len() - 2..]);
        write!(f, "PhoneNumber(+{head}…{tail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_e164_with_optional_separators() {
        let cases = [
            ("+15551234567", "+15551234567"),
            ("+1 555 123 4567", "+15551234567"),
            ("+1-555-123-4567", "+15551234567"),
            ("  +44 20 7946 0958 ", "+442079460958"),
            ("+4930123456", "+4930123456"),
            ("+12345678", "+12345678"),
            ("+123456789012345", "+123456789012345"),
            ("+ 49-30 123 456", "+4930123456"),
        ];
        for (raw, want) in cases {
            let number = PhoneNumber::parse(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            assert_eq!(number.as_str(), want, "{raw:?}");
        }
    }

    #[test]
    fn rejects_what_is_not_e164_saying_why() {
        use PhoneError::*;
        let cases = [
            ("", MissingPlus),
            ("   ", MissingPlus),
            ("15551234567", MissingPlus),
            ("0015551234567", MissingPlus),
            ("(555) 123-4567", MissingPlus),
            ("++15551234567", InvalidCharacter),
            ("+1 (555) 123-4567", InvalidCharacter),
            ("+1.555.123.4567", InvalidCharacter),
            ("+1555123456x7", InvalidCharacter),
            ("+1555123456\t7", InvalidCharacter),
            ("+1555\u{a0}1234567", InvalidCharacter),
            ("+１５５５１２３４５６７", InvalidCharacter),
            ("+", Length(0)),
            ("+ - ", Length(0)),
            ("+1234567", Length(7)),
            ("+1234567890123456", Length(16)),
            ("+05551234567", LeadingZero),
            ("+0 555 123 4567", LeadingZero),
            ("+1 555 1234567 1234567", Length(18)),
        ];
        for (raw, want) in cases {
            assert_eq!(PhoneNumber::parse(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn errors_never_repeat_the_number() {
        for raw in ["+1555x1234567", "+1234", "5551234567", "+0551234567"] {
            let message = PhoneNumber::parse(raw).unwrap_err().to_string();
            assert!(!message.contains("1234"), "{message}");
        }
    }

    #[test]
    fn debug_masks_the_number() {
        let number = PhoneNumber::parse("+15551234567").unwrap();
        assert_eq!(format!("{number:?}"), "PhoneNumber(+15…67)");
        assert!(!format!("{number:?}").contains("5551234"));
    }

    /// Property test over generated strings (proptest is not a workspace
    /// dependency): whatever is accepted is canonical E.164 made of exactly
    /// the input's digits, parsing is idempotent, and whatever consists of
    /// `+` and a valid digit string with separators is accepted.
    #[test]
    fn parse_properties_hold_for_generated_inputs() {
        const ALPHABET: &[u8] = b"+0123456789 -()x.";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 22) as usize;
            let mut raw: String = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize] as char)
                .collect();
            if next() % 2 == 0 {
                raw.insert(0, '+');
            }
            let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
            match PhoneNumber::parse(&raw) {
                Ok(number) => {
                    let s = number.as_str();
                    assert_eq!(&s[1..], digits, "{raw:?}");
                    assert!(s.starts_with('+') && !s[1..].starts_with('0'), "{raw:?}");
                    assert!((8..=15).contains(&digits.len()), "{raw:?}");
                    assert_eq!(PhoneNumber::parse(s).as_ref(), Ok(&number));
                }
                Err(_) => {
                    let well_formed = raw.trim().strip_prefix('+').is_some_and(|rest| {
                        rest.chars()
                            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
                    });
                    assert!(
                        !well_formed
                            || !(8..=15).contains(&digits.len())
                            || digits.starts_with('0'),
                        "{raw:?} was rejected"
                    );
                }
            }
        }
    }
}
