//! `issuedAt` as each language writes a date and a time.
//!
//! The time is shown in the offset the report carries (the lab's clock,
//! normally the clinic's), never converted, and the offset is named after
//! it: `UTC` for `Z`, `(UTC+09:00)` for `+09:00`, nothing for a time sent
//! without one. Converting would need a time-zone database and a setting
//! for the clinic's zone; a report's own offset is what its lab meant.
//! Written by hand for the languages labrelay has templates for (English,
//! Korean); any other language gets the ISO order (`2026-12-07 10:30`).
//! Anything that is not an RFC 3339 date-time is shown as sent.

/// A date-time as the report sent it, its fields checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Issued<'a> {
    year: &'a str,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    zone: Zone<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Zone<'a> {
    Utc,
    /// `+02:00`, `-05:30`.
    Offset(&'a str),
    None,
}

impl Zone<'_> {
    fn suffix(&self) -> String {
        match self {
            Zone::Utc => " UTC".into(),
            Zone::Offset(offset) => format!(" (UTC{offset})"),
            Zone::None => String::new(),
        }
    }
}

fn parse(sent: &str) -> Option<Issued<'_>> {
    let (date, time) = sent.split_once(['T', 't', ' '])?;
    let mut ymd = date.splitn(3, '-');
    let (y, m, d) = (ymd.next()?, ymd.next()?, ymd.next()?);
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(y, 4) && digits(m, 2) && digits(d, 2)) {
        return None;
    }
    let month: u32 = m.parse().ok().filter(|m| (1..=12).contains(m))?;
    let day: u32 = d.parse().ok().filter(|d| (1..=31).contains(d))?;
    let (hh, mm) = (time.get(0..2)?, time.get(3..5)?);
    if !(digits(hh, 2) && digits(mm, 2) && time.get(2..3) == Some(":")) {
        return None;
    }
    let hour: u32 = hh.parse().ok().filter(|h| *h < 24)?;
    let minute: u32 = mm.parse().ok().filter(|m| *m < 60)?;
    let zone_at = time.find(['Z', 'z', '+', '-']);
    let clock = &time[..zone_at.unwrap_or(time.len())];
    if !clock
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
    {
        return None;
    }
    let zone = match zone_at.map(|i| &time[i..]) {
        Some("Z" | "z" | "+00:00") => Zone::Utc,
        Some(offset) if offset.len() == 6 && offset.as_bytes()[3] == b':' => Zone::Offset(offset),
        None => Zone::None,
        Some(_) => return None,
    };
    Some(Issued {
        year: y,
        month,
        day,
        hour,
        minute,
        zone,
    })
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `sent` as `language` (a primary language subtag, lower case) writes it:
///
/// | language | `2026-12-07T10:30:00Z` |
/// | --- | --- |
/// | `en` | `7 December 2026, 10:30 UTC` |
/// | `ko` | `2026년 12월 7일 오전 10:30 UTC` |
/// | any other | `2026-12-07 10:30 UTC` |
pub fn format_issued(sent: &str, language: &str) -> String {
    let Some(at) = parse(sent) else {
        return sent.to_string();
    };
    let zone = at.zone.suffix();
    let Issued {
        year,
        month,
        day,
        hour,
        minute,
        ..
    } = at;
    match language {
        "en" => format!(
            "{day} {} {year}, {hour:02}:{minute:02}{zone}",
            MONTHS[month as usize - 1]
        ),
        "ko" => {
            let (half, hour12) = match hour {
                0 => ("오전", 12),
                1..=11 => ("오전", hour),
                12 => ("오후", 12),
                _ => ("오후", hour - 12),
            };
            format!("{year}년 {month}월 {day}일 {half} {hour12}:{minute:02}{zone}")
        }
        _ => format!("{year}-{month:02}-{day:02} {hour:02}:{minute:02}{zone}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_issue_times_in_english() {
        let cases = [
            ("2026-11-24T10:00:00Z", "24 November 2026, 10:00 UTC"),
            ("2026-12-07T10:30:00Z", "7 December 2026, 10:30 UTC"),
            ("2026-01-05T07:30:12.345Z", "5 January 2026, 07:30 UTC"),
            (
                "2026-06-01T23:59:00+02:00",
                "1 June 2026, 23:59 (UTC+02:00)",
            ),
            (
                "2026-06-01T23:59:00-05:30",
                "1 June 2026, 23:59 (UTC-05:30)",
            ),
            ("2026-06-01 08:15", "1 June 2026, 08:15"),
            ("2026-13-01T00:00:00Z", "2026-13-01T00:00:00Z"),
            ("2026-06-01T24:00:00Z", "2026-06-01T24:00:00Z"),
            ("yesterday", "yesterday"),
            ("2026-06-01", "2026-06-01"),
            ("2026-06-01T08:15:00 garbage", "2026-06-01T08:15:00 garbage"),
        ];
        for (sent, want) in cases {
            assert_eq!(format_issued(sent, "en"), want, "{sent}");
        }
    }

    #[test]
    fn formats_issue_times_in_korean_with_the_twelve_hour_clock() {
        let cases = [
            ("2026-12-07T10:30:00Z", "2026년 12월 7일 오전 10:30 UTC"),
            (
                "2026-12-07T00:05:00+09:00",
                "2026년 12월 7일 오전 12:05 (UTC+09:00)",
            ),
            (
                "2026-12-07T12:00:00+09:00",
                "2026년 12월 7일 오후 12:00 (UTC+09:00)",
            ),
            (
                "2026-12-07T13:05:00+09:00",
                "2026년 12월 7일 오후 1:05 (UTC+09:00)",
            ),
            ("2026-03-01 23:59", "2026년 3월 1일 오후 11:59"),
            ("not a date", "not a date"),
        ];
        for (sent, want) in cases {
            assert_eq!(format_issued(sent, "ko"), want, "{sent}");
        }
    }

    #[test]
    fn other_languages_get_the_iso_order() {
        assert_eq!(
            format_issued("2026-12-07T10:30:00+01:00", "fr"),
            "2026-12-07 10:30 (UTC+01:00)"
        );
    }
}
