//! Counting the length of an SMS the way carriers (and Twilio) do.
//!
//! A message is sent in GSM-7 when every character is in the GSM 03.38 basic
//! table or its extension table; the extension characters (`^ { } \ [ ] ~ |
//! €` and form feed) need an escape and so take two septets. One character
//! outside both tables switches the whole message to UCS-2, counted in UTF-16
//! code units (an emoji outside the Basic Multilingual Plane takes two).
//! Twilio's `SmartEncoded` substitution is off by default, so none is assumed.

/// Septets in a single-segment GSM-7 message.
pub const GSM7_SINGLE: usize = 160;
/// UTF-16 code units in a single-segment UCS-2 message.
pub const UCS2_SINGLE: usize = 70;
/// Per segment once a GSM-7 message is split (the rest is the UDH).
const GSM7_CONCATENATED: usize = 153;
/// Per segment once a UCS-2 message is split.
const UCS2_CONCATENATED: usize = 67;

/// The GSM 03.38 basic table, in code order, without the escape (0x1B).
const GSM7_BASIC: &str = concat!(
    "@£$¥èéùìòÇ\nØø\rÅå",
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ",
    " !\"#¤%&'()*+,-./",
    "0123456789:;<=>?",
    "¡ABCDEFGHIJKLMNO",
    "PQRSTUVWXYZÄÖÑÜ§",
    "¿abcdefghijklmno",
    "pqrstuvwxyzäöñüà",
);

/// The GSM 03.38 extension table: each is sent as escape + character.
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// How a message is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// The encoded length of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    pub encoding: Encoding,
    /// Septets for GSM-7, UTF-16 code units for UCS-2.
    pub units: usize,
}

impl Length {
    /// What fits in one segment in this encoding.
    pub fn single_segment_limit(&self) -> usize {
        match self.encoding {
            Encoding::Gsm7 => GSM7_SINGLE,
            Encoding::Ucs2 => UCS2_SINGLE,
        }
    }

    pub fn fits_one_segment(&self) -> bool {
        self.units <= self.single_segment_limit()
    }

    /// Segments billed. Past one segment this is the usual estimate: it
    /// ignores that an escape pair or a surrogate pair is never split across
    /// segments, which can add one. This service only ever sends one.
    pub fn segments(&self) -> usize {
        if self.fits_one_segment() {
            return 1;
        }
        let per_segment = match self.encoding {
            Encoding::Gsm7 => GSM7_CONCATENATED,
            Encoding::Ucs2 => UCS2_CONCATENATED,
        };
        self.units.div_ceil(per_segment)
    }
}

/// Septets `c` takes in GSM-7, or `None` if it is not in GSM-7 at all.
pub fn gsm7_septets(c: char) -> Option<usize> {
    if c.is_ascii_alphanumeric() || GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// The encoding `text` needs and its length in that encoding.
pub fn measure(text: &str) -> Length {
    let mut septets = 0;
    for c in text.chars() {
        match gsm7_septets(c) {
            Some(n) => septets += n,
            None => {
                return Length {
                    encoding: Encoding::Ucs2,
                    units: text.encode_utf16().count(),
                };
            }
        }
    }
    Length {
        encoding: Encoding::Gsm7,
        units: septets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_have_the_standard_sizes() {
        assert_eq!(GSM7_BASIC.chars().count(), 127);
        assert_eq!(GSM7_EXTENSION.chars().count(), 10);
        assert!(GSM7_BASIC.chars().all(|c| !GSM7_EXTENSION.contains(c)));
    }

    #[test]
    fn counts_units_encoding_and_segments() {
        let gsm = |n: usize, s: &str| s.repeat(n);
        let cases: Vec<(String, Encoding, usize, usize)> = vec![
            (String::new(), Encoding::Gsm7, 0, 1),
            ("Hello".into(), Encoding::Gsm7, 5, 1),
            (gsm(160, "a"), Encoding::Gsm7, 160, 1),
            (gsm(161, "a"), Encoding::Gsm7, 161, 2),
            (gsm(306, "a"), Encoding::Gsm7, 306, 2),
            (gsm(307, "a"), Encoding::Gsm7, 307, 3),
            // Accented letters of the basic table are one septet each.
            (gsm(160, "é"), Encoding::Gsm7, 160, 1),
            ("@£$¥ÆßÉΔ¿¡§äöñüà".into(), Encoding::Gsm7, 16, 1),
            // Extension characters take two septets.
            (gsm(80, "€"), Encoding::Gsm7, 160, 1),
            (format!("{}^", gsm(159, "a")), Encoding::Gsm7, 161, 2),
            (format!("{}{{", gsm(158, "a")), Encoding::Gsm7, 160, 1),
            ("^{}\\[]~|€".into(), Encoding::Gsm7, 18, 1),
            // One character outside GSM-7 switches everything to UCS-2.
            (gsm(70, "ç"), Encoding::Ucs2, 70, 1),
            (format!("{}ç", gsm(69, "a")), Encoding::Ucs2, 70, 1),
            (format!("{}ç", gsm(70, "a")), Encoding::Ucs2, 71, 2),
            (format!("{}\u{2026}", gsm(69, "a")), Encoding::Ucs2, 70, 1),
            ("`".into(), Encoding::Ucs2, 1, 1),
            ("“quoted”".into(), Encoding::Ucs2, 8, 1),
            // Extension characters are one code unit in UCS-2.
            (format!("{}€ü", gsm(34, "中")), Encoding::Ucs2, 36, 1),
            // Astral-plane characters are two UTF-16 code units.
            (gsm(35, "🐶"), Encoding::Ucs2, 70, 1),
            (format!("{}a", gsm(35, "🐶")), Encoding::Ucs2, 71, 2),
            (gsm(134, "中"), Encoding::Ucs2, 134, 2),
            (gsm(135, "中"), Encoding::Ucs2, 135, 3),
            // Hangul is UCS-2, one code unit a syllable: 70 in one
            // segment, 67 a segment once split.
            ("검사 결과가 나왔습니다".into(), Encoding::Ucs2, 12, 1),
            (gsm(70, "한"), Encoding::Ucs2, 70, 1),
            (gsm(71, "한"), Encoding::Ucs2, 71, 2),
            (gsm(134, "한"), Encoding::Ucs2, 134, 2),
            (gsm(135, "한"), Encoding::Ucs2, 135, 3),
            (format!("{}a", gsm(69, "한")), Encoding::Ucs2, 70, 1),
        ];
        for (text, encoding, units, segments) in cases {
            let length = measure(&text);
            assert_eq!(
                (length.encoding, length.units, length.segments()),
                (encoding, units, segments),
                "{text:?}"
            );
            assert_eq!(length.fits_one_segment(), segments == 1, "{text:?}");
        }
    }

    #[test]
    fn classifies_characters() {
        for c in ['a', 'Z', '0', ' ', '\n', '\r', '@', '_', 'Ç', 'Ø', 'Ξ'] {
            assert_eq!(gsm7_septets(c), Some(1), "{c:?}");
        }
        for c in ['^', '{', '}', '\\', '[', ']', '~', '|', '€', '\u{0C}'] {
            assert_eq!(gsm7_septets(c), Some(2), "{c:?}");
        }
        for c in [
            'ç', '`', '\t', '\u{1B}', 'á', '…', '’', '中', '🐶', '\u{200D}',
        ] {
            assert_eq!(gsm7_septets(c), None, "{c:?}");
        }
    }
}
