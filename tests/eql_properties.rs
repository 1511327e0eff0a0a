//! Properties of the EQL engine over arbitrary input: parsing never panics;
//! evaluation never panics and `not` is consistent with three-valued logic;
//! the seed query agrees with an independent oracle of its semantics.

use mapwatch::rule::eql::{parse_condition, parse_query};
use mapwatch::rule::eval::Event;
use mapwatch::rule::field::{Field, Kind};
use mapwatch::rule::json::JsonEvent;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a", "C", "/", "*", "?", "proc", "maps", "é", "Σ", " ", "\\", "\"", "1", "", "\u{212a}",
        ]),
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn comparison() -> impl Strategy<Value = String> {
    (
        prop::sample::select(Field::ALL.to_vec()),
        0..9usize,
        prop::collection::vec(text(), 1..4),
        -3i64..50,
    )
        .prop_map(|(field, op, values, n)| {
            let path = field.path();
            match field.kind() {
                Kind::Boolean => match op % 3 {
                    0 => format!("{path} == true"),
                    1 => format!("{path} != false"),
                    _ => format!("{path} == null"),
                },
                Kind::Long => match op % 4 {
                    0 => format!("{path} == {n}"),
                    1 => format!("{path} != {n}"),
                    2 => format!("{path} in ({n}, {})", n + 1),
                    _ => format!("{path} == null"),
                },
                Kind::Keyword => {
                    let list = values
                        .iter()
                        .map(|v| quoted(v))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let one = quoted(&values[0]);
                    match op {
                        0 => format!("{path} == {one}"),
                        1 => format!("{path} != {one}"),
                        2 => format!("{path} : ({list})"),
                        3 => format!("{path} like {one}"),
                        4 => format!("{path} like~ ({list})"),
                        5 => format!("{path} in ({list})"),
                        6 => format!("{path} in~ ({list})"),
                        7 => format!("{path} not in ({list})"),
                        _ => format!("{path} != null"),
                    }
                }
            }
        })
}

fn condition() -> impl Strategy<Value = String> {
    comparison().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} and {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} or {b})")),
            inner.prop_map(|a| format!("not {a}")),
        ]
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(Value::String),
        (-5i64..100).prop_map(|n| json!(n)),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::collection::vec(
            prop_oneof![text().prop_map(Value::String), Just(Value::Null)],
            0..4
        )
        .prop_map(Value::Array),
        Just(json!({"nested": "object"})),
    ]
}

fn event() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (prop::sample::select(Field::ALL.to_vec()), json_value()),
        0..12,
    )
    .prop_map(|fields| {
        let mut doc = Map::new();
        doc.insert("event.category".into(), json!(["process"]));
        for (field, value) in fields {
            doc.insert(field.path().to_owned(), value);
        }
        Value::Object(doc)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parsing_arbitrary_text_never_panics(s in "\\PC{0,80}") {
        let _ = parse_query(&s);
        let _ = parse_condition(&s);
    }

    #[test]
    fn parsing_token_soup_never_panics(parts in prop::collection::vec(prop::sample::select(vec![
        "process", "file", "where", "and", "or", "not", "in", "in~", "like", "like~", ":", "==", "!=", "(", ")",
        ",", "\"x\"", "\"\"\"r\"\"\"", "1", "-", "null", "true", "process.name", "process.args", "`a`", "\"\\u{", "|",
        "[", "]", "'", "/*", "*/", "//",
    ]), 0..20)) {
        let s = parts.join(" ");
        let _ = parse_query(&s);
        let _ = parse_condition(&s);
    }

    #[test]
    fn evaluation_never_panics_and_not_is_consistent(cond in condition(), doc in event()) {
        let expr = parse_condition(&cond).map_err(|e| TestCaseError::fail(format!("{cond}: {e}")))?;
        let negated = parse_condition(&format!("not ({cond})")).map_err(|e| TestCaseError::fail(e.message))?;
        let value = expr.evaluate(&mut JsonEvent::new(&doc));
        let not_value = negated.evaluate(&mut JsonEvent::new(&doc));
        prop_assert_eq!(not_value, value.map(|b| !b), "{}", cond);
    }
}

/// The seed rule's semantics, written out by hand from DESIGN.md.
fn seed_oracle(name: Option<&str>, args: &[&str], leader: Option<&str>) -> bool {
    fn maps_path(arg: &str) -> bool {
        let lower = arg.to_lowercase();
        lower.starts_with("/proc/")
            && lower.ends_with("/maps")
            && lower.len() >= "/proc//maps".len()
    }
    matches!(name, Some("cat" | "grep"))
        && args.iter().any(|a| maps_path(a))
        && matches!(
            leader,
            Some("bash" | "dash" | "sh" | "tcsh" | "csh" | "zsh" | "ksh" | "fish")
        )
}

const SEED: &str = include_str!("../rules/proc_maps_discovery.toml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    #[test]
    fn seed_query_agrees_with_the_oracle(
        name in prop::option::of(prop::sample::select(vec!["cat", "grep", "CAT", "Grep", "head", "kitty", "cat ", ""])),
        args in prop::collection::vec(prop::sample::select(vec![
            "cat", "/proc/1/maps", "/proc/self/maps", "/PROC/1/MAPS", "/proc//maps", "/proc/1/smaps", "//proc/1/maps",
            "/proc/1/task/2/maps", "--x=/proc/1/maps", "/proc/maps", "/etc/passwd", "/proc/é/maps", "/proc/1/maps/",
        ]), 0..4),
        leader in prop::option::of(prop::sample::select(vec![
            "bash", "dash", "sh", "tcsh", "csh", "zsh", "ksh", "fish", "Bash", "python3", "sshd", "bash ",
        ])),
    ) {
        let rule = mapwatch::rule::file::parse_rule(SEED, "seed").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut doc = json!({"event": {"category": ["process"], "type": ["start"], "action": "exec"},
                             "host": {"os": {"type": "linux"}}, "process": {"args": args}});
        if let Some(name) = name {
            doc["process"]["name"] = json!(name);
        }
        if let Some(leader) = leader {
            doc["process"]["entry_leader"] = json!({"name": leader});
        }
        let mut event = JsonEvent::new(&doc);
        prop_assert!(event.is_category(rule.category));
        prop_assert_eq!(rule.matches(&mut event), seed_oracle(name, &args, leader), "{}", doc);
    }
}
