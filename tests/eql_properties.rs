//! Properties of the EQL engine over arbitrary input: parsing never panics;
//! evaluation agrees with an oracle of Elasticsearch's query semantics
//! (any value for a comparison, `must_not` for `!=`, `not in` and `not`,
//! missing fields matching the negations) and `not` is its complement; the
//! seed query agrees with an independent oracle of its semantics.

use mapwatch::rule::eql::{parse_condition, parse_query};
use mapwatch::rule::eval::Event;
use mapwatch::rule::field::{Field, Kind};
use mapwatch::rule::json::JsonEvent;
use mapwatch::rule::wildcard::{Wildcard, eq_folded};
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

/// One comparison, as generated: field, operator, literals.
#[derive(Clone, Debug)]
enum Op {
    Eq,
    NotEq,
    Colon,
    Like,
    LikeFolded,
    In,
    InFolded,
    NotIn,
    IsNull,
    NotNull,
}

#[derive(Clone, Debug)]
enum Cond {
    Cmp(Field, Op, Vec<Value>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => quoted(s),
        other => other.to_string(),
    }
}

impl Cond {
    fn eql(&self) -> String {
        match self {
            Cond::Cmp(field, op, values) => {
                let path = field.path();
                let one = values.first().map(literal).unwrap_or_default();
                let list = values.iter().map(literal).collect::<Vec<_>>().join(", ");
                match op {
                    Op::Eq => format!("{path} == {one}"),
                    Op::NotEq => format!("{path} != {one}"),
                    Op::Colon => format!("{path} : ({list})"),
                    Op::Like => format!("{path} like {one}"),
                    Op::LikeFolded => format!("{path} like~ ({list})"),
                    Op::In => format!("{path} in ({list})"),
                    Op::InFolded => format!("{path} in~ ({list})"),
                    Op::NotIn => format!("{path} not in ({list})"),
                    Op::IsNull => format!("{path} == null"),
                    Op::NotNull => format!("{path} != null"),
                }
            }
            Cond::And(a, b) => format!("({} and {})", a.eql(), b.eql()),
            Cond::Or(a, b) => format!("({} or {})", a.eql(), b.eql()),
            Cond::Not(a) => format!("not {}", a.eql()),
        }
    }

    /// What Elasticsearch returns for the query it translates the condition
    /// into: each comparison a leaf query that matches when any indexed
    /// value satisfies it (none when the field is missing, null, `[]` or
    /// `[null]`); `!=`, `not in` and `not` are `must_not` of the positive
    /// query; `== null` is `must_not exists`, `!= null` is `exists`. Single
    /// values are matched with the engine's own wildcard and case folding,
    /// which the semantics table pins on their own.
    fn oracle(&self, doc: &Value) -> bool {
        match self {
            Cond::And(a, b) => a.oracle(doc) && b.oracle(doc),
            Cond::Or(a, b) => a.oracle(doc) || b.oracle(doc),
            Cond::Not(a) => !a.oracle(doc),
            Cond::Cmp(field, op, literals) => {
                let values = indexed_values(doc, *field);
                let any = |pred: &dyn Fn(&Value) -> bool| values.iter().any(pred);
                let text = |v: &Value| v.as_str().map(str::to_owned);
                let strings: Vec<String> = literals.iter().filter_map(text).collect();
                match op {
                    Op::Eq | Op::In => any(&|v| literals.contains(v)),
                    Op::NotEq | Op::NotIn => !any(&|v| literals.contains(v)),
                    Op::Colon | Op::LikeFolded => any(&|v| {
                        text(v).is_some_and(|v| {
                            strings
                                .iter()
                                .any(|p| Wildcard::insensitive(p).matches(v.as_bytes()))
                        })
                    }),
                    Op::Like => any(&|v| {
                        text(v)
                            .is_some_and(|v| Wildcard::sensitive(&strings[0]).matches(v.as_bytes()))
                    }),
                    Op::InFolded => any(&|v| {
                        text(v).is_some_and(|v| {
                            strings
                                .iter()
                                .any(|p| eq_folded(v.as_bytes(), &p.to_lowercase()))
                        })
                    }),
                    Op::IsNull => values.is_empty(),
                    Op::NotNull => !values.is_empty(),
                }
            }
        }
    }
}

/// The values Elasticsearch indexes for `field` in the (flat) document,
/// coerced to the field's type as its mappings do: a number or boolean
/// into a keyword as its text, an integer string into a long. Nulls,
/// objects and values that do not coerce are not indexed.
fn indexed_values(doc: &Value, field: Field) -> Vec<Value> {
    let coerce = |v: &Value| match (field.kind(), v) {
        (Kind::Keyword, Value::String(_)) => Some(v.clone()),
        (Kind::Keyword, Value::Number(n)) => Some(json!(n.to_string())),
        (Kind::Keyword, Value::Bool(b)) => Some(json!(b.to_string())),
        (Kind::Long, Value::Number(n)) => n.as_i64().map(|n| json!(n)),
        (Kind::Long, Value::String(s)) => s.parse::<i64>().ok().map(|n| json!(n)),
        (Kind::Boolean, Value::Bool(_)) => Some(v.clone()),
        _ => None,
    };
    match doc.get(field.path()) {
        Some(Value::Array(list)) => list.iter().filter_map(coerce).collect(),
        Some(v) => coerce(v).into_iter().collect(),
        None => Vec::new(),
    }
}

fn comparison() -> impl Strategy<Value = Cond> {
    (
        prop::sample::select(Field::ALL.to_vec()),
        0..10usize,
        prop::collection::vec(text(), 1..4),
        -3i64..50,
    )
        .prop_map(|(field, op, values, n)| {
            let strings = || values.iter().map(|v| json!(v)).collect::<Vec<_>>();
            let (op, literals) = match field.kind() {
                Kind::Boolean => match op % 4 {
                    0 => (Op::Eq, vec![json!(true)]),
                    1 => (Op::NotEq, vec![json!(false)]),
                    2 => (Op::IsNull, vec![]),
                    _ => (Op::NotNull, vec![]),
                },
                Kind::Long => match op % 5 {
                    0 => (Op::Eq, vec![json!(n)]),
                    1 => (Op::NotEq, vec![json!(n)]),
                    2 => (Op::In, vec![json!(n), json!(n + 1)]),
                    3 => (Op::NotIn, vec![json!(n)]),
                    _ => (Op::IsNull, vec![]),
                },
                Kind::Keyword => match op {
                    0 => (Op::Eq, strings()),
                    1 => (Op::NotEq, strings()),
                    2 => (Op::Colon, strings()),
                    3 => (Op::Like, strings()),
                    4 => (Op::LikeFolded, strings()),
                    5 => (Op::In, strings()),
                    6 => (Op::InFolded, strings()),
                    7 => (Op::NotIn, strings()),
                    8 => (Op::IsNull, vec![]),
                    _ => (Op::NotNull, vec![]),
                },
            };
            // `==`, `!=` and `like` take one value.
            let literals = match op {
                Op::Eq | Op::NotEq | Op::Like => literals.into_iter().take(1).collect(),
                _ => literals,
            };
            Cond::Cmp(field, op, literals)
        })
}

fn condition() -> impl Strategy<Value = Cond> {
    comparison().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Cond::Not(Box::new(a))),
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
    fn evaluation_agrees_with_elasticsearchs_query_semantics(cond in condition(), doc in event()) {
        let eql = cond.eql();
        let expr = parse_condition(&eql).map_err(|e| TestCaseError::fail(format!("{eql}: {e}")))?;
        let negated = parse_condition(&format!("not ({eql})")).map_err(|e| TestCaseError::fail(e.message))?;
        let value = expr.matches(&mut JsonEvent::new(&doc));
        prop_assert_eq!(value, cond.oracle(&doc), "{} on {}", eql, doc);
        prop_assert_eq!(negated.matches(&mut JsonEvent::new(&doc)), !value, "not ({})", eql);
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
        prop_assert!(rule.event_step().is_some_and(|step| event.is_category(step.category)));
        prop_assert_eq!(rule.matches(&mut event), seed_oracle(name, &args, leader), "{}", doc);
    }
}
