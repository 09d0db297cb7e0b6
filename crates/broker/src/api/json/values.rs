//! Proto3 JSON's encodings of the scalar and well-known types the messages
//! of [`super`] use: `google.protobuf.FieldMask`, `Duration` and
//! `Timestamp`, int32 as a number or a string, enums by name or number, and
//! bytes as base64.

use std::{fmt, marker::PhantomData};

use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig, general_purpose},
};
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, Unexpected, Visitor},
};

use crate::pb;

/// `google.protobuf.FieldMask`: in JSON one string of comma-separated
/// camelCase paths. The `{"paths": ...}` object that older Google Rust
/// clients send is accepted too.
#[derive(Debug, PartialEq)]
pub(crate) struct FieldMask(Vec<String>);

impl<'de> Deserialize<'de> for FieldMask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "a field mask: a string of comma-separated field paths"
        )]
        enum Repr {
            Joined(String),
            Object { paths: String },
            List { paths: Vec<String> },
        }
        let paths = match Repr::deserialize(deserializer)? {
            Repr::Joined(paths) | Repr::Object { paths } => {
                paths.split(',').map(str::to_owned).collect()
            }
            Repr::List { paths } => paths,
        };
        Ok(FieldMask(
            paths
                .iter()
                .map(|path| path.trim())
                .filter(|path| !path.is_empty())
                .map(snake_case)
                .collect(),
        ))
    }
}

impl From<FieldMask> for prost_types::FieldMask {
    fn from(mask: FieldMask) -> Self {
        prost_types::FieldMask { paths: mask.0 }
    }
}

/// `ackDeadlineSeconds` → `ack_deadline_seconds`; snake_case stays as is.
fn snake_case(path: &str) -> String {
    let mut snake = String::with_capacity(path.len() + 4);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

/// `google.protobuf.Duration` as `"600s"` or `"10.5s"`, within the range
/// the proto allows (about ±10 000 years).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Duration(pub prost_types::Duration);

const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // prost would silently drop digits past the nanoseconds.
        let nanos_fit = text
            .split_once('.')
            .is_none_or(|(_, fraction)| fraction.len() <= 10);
        text.parse::<prost_types::Duration>()
            .ok()
            .filter(|d| nanos_fit && d.seconds.abs() <= MAX_DURATION_SECONDS)
            .map(Duration)
            .ok_or_else(|| {
                de::Error::invalid_value(
                    Unexpected::Str(&text),
                    &"a duration in seconds ending in 's', such as \"600s\" or \"10.5s\"",
                )
            })
    }
}

/// `google.protobuf.Timestamp` as RFC 3339 (`"2024-05-01T12:00:00.5Z"`),
/// from year 1 to 9999 as the proto allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Timestamp(pub prost_types::Timestamp);

const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<prost_types::Timestamp>()
            .ok()
            .filter(|t| TIMESTAMP_SECONDS.contains(&t.seconds))
            .map(Timestamp)
            .ok_or_else(|| {
                de::Error::invalid_value(
                    Unexpected::Str(&text),
                    &"an RFC 3339 timestamp, such as \"2024-05-01T12:00:00Z\"",
                )
            })
    }
}

/// Proto3 JSON takes an int32 as a number or as a decimal string.
pub(super) fn int32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    deserializer.deserialize_any(Int32)
}

struct Int32;

impl Visitor<'_> for Int32 {
    type Value = i32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a 32-bit integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
        i32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
        i32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i32, E> {
        let in_range = (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&v);
        if v.fract() == 0.0 && in_range {
            Ok(v as i32)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i32, E> {
        v.parse()
            .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
    }
}

/// The names of a prost enumeration, which prost offers per type only.
pub(super) trait ProtoEnum {
    fn name(value: i32) -> Option<&'static str>;
    fn value(name: &str) -> Option<i32>;
}

impl ProtoEnum for pb::topic::State {
    fn name(value: i32) -> Option<&'static str> {
        Self::try_from(value).ok().map(|state| state.as_str_name())
    }

    fn value(name: &str) -> Option<i32> {
        Self::from_str_name(name).map(|state| state as i32)
    }
}

impl ProtoEnum for pb::subscription::State {
    fn name(value: i32) -> Option<&'static str> {
        Self::try_from(value).ok().map(|state| state.as_str_name())
    }

    fn value(name: &str) -> Option<i32> {
        Self::from_str_name(name).map(|state| state as i32)
    }
}

/// A value this build does not know is still printed, as its number.
pub(super) fn enum_name<E: ProtoEnum, S: Serializer>(
    value: &i32,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match E::name(*value) {
        Some(name) => serializer.serialize_str(name),
        None => serializer.serialize_i32(*value),
    }
}

pub(super) fn enum_value<'de, E: ProtoEnum, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<i32, D::Error> {
    struct EnumValue<E>(PhantomData<E>);

    impl<E: ProtoEnum> Visitor<'_> for EnumValue<E> {
        type Value = i32;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an enum value's name or number")
        }

        fn visit_i64<Er: de::Error>(self, v: i64) -> Result<i32, Er> {
            Int32.visit_i64(v)
        }

        fn visit_u64<Er: de::Error>(self, v: u64) -> Result<i32, Er> {
            Int32.visit_u64(v)
        }

        fn visit_str<Er: de::Error>(self, v: &str) -> Result<i32, Er> {
            E::value(v).ok_or_else(|| Er::invalid_value(Unexpected::Str(v), &self))
        }
    }

    deserializer.deserialize_any(EnumValue::<E>(PhantomData))
}

/// Proto3 JSON bytes: standard base64 out; standard or URL-safe, padded or
/// not, in.
pub(super) mod base64_bytes {
    use super::*;

    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

    pub(crate) fn serialize<S: Serializer>(data: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&general_purpose::STANDARD.encode(data))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct Base64;

        impl Visitor<'_> for Base64 {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("base64-encoded bytes")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                let engine = if v.contains(['-', '_']) {
                    &URL_SAFE
                } else {
                    &STANDARD
                };
                engine
                    .decode(v)
                    .map_err(|e| E::custom(format_args!("invalid base64 data: {e}")))
            }
        }

        deserializer.deserialize_str(Base64)
    }
}
