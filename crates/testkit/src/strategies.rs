//! proptest strategies for the property tests of every parser that reads
//! JSON off the wire: the lab report, the push envelope, push tokens, the
//! broker's REST bodies.

use proptest::prelude::*;
use serde_json::{Value, json};

/// Arbitrary JSON values, nested up to four levels. Object keys are mostly
/// drawn from `keys` (the field names the parser under test looks for), so
/// that generated values get past "unknown field" and "missing field" into
/// the code that reads the fields; the rest are random names. `keys` must
/// not be empty.
pub fn json_value(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    assert!(!keys.is_empty(), "json_value needs a favoured key");
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        // Each favoured key as likely as a random name.
        let key = prop_oneof![
            keys.len() as u32 => prop::sample::select(keys).prop_map(str::to_string),
            1 => "[a-zA-Z]{1,10}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree as _;
    use proptest::test_runner::TestRunner;

    /// Objects use the favoured keys.
    #[test]
    fn favoured_keys_turn_up() {
        let mut runner = TestRunner::deterministic();
        let strategy = json_value(&["owner", "tests"]);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let value = strategy.new_tree(&mut runner).unwrap().current();
            collect_keys(&value, &mut seen);
        }
        assert!(seen.contains("owner") && seen.contains("tests"), "{seen:?}");
    }

    fn collect_keys(value: &Value, seen: &mut std::collections::BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    seen.insert(key.clone());
                    collect_keys(value, seen);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_keys(v, seen)),
            _ => {}
        }
    }
}
