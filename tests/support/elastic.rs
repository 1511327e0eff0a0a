//! What Elastic does with mapwatch's documents once they are in a `logs-*`
//! data stream: the prebuilt promotion rule "External Alerts", evaluated as
//! Elasticsearch evaluates its KQL, and ECS's field types.
//!
//! The rule is elastic/detection-rules `rules/promotions/external_alerts.toml`
//! (rule_id `eb079c62-4481-4d6e-9643-3ca499df7aaa`, as of commit 03a941d0,
//! updated 2026/06/30):
//!
//! ```text
//! event.kind:alert and not event.module:(endgame or endpoint or cloud_defend) and
//!     not data_stream.dataset:(m365_defender.alert or m365_defender.incident)
//! ```
//!
//! with `severity = "medium"` and `risk_score = 47` as defaults,
//! `severity_mapping` of `event.severity` 21/47/73/99 to low/medium/high/
//! critical, `risk_score_mapping` from `event.risk_score`, and
//! `rule_name_override = "message"`. KQL's `field:value` is a term query
//! (any element of an array may match; a missing field matches nothing) and
//! its `not` a `must_not`, so a missing field satisfies `not field:(…)`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

/// An alert as Elastic Security shows it after promotion.
#[derive(Debug, PartialEq)]
pub struct Promoted {
    pub title: String,
    pub severity: &'static str,
    pub risk_score: f64,
}

/// The promotion rule's defaults.
const RULE_NAME: &str = "External Alerts";
const DEFAULT_SEVERITY: &str = "medium";
const DEFAULT_RISK_SCORE: f64 = 47.0;

/// The alert External Alerts makes of `doc`, or `None` if its query does
/// not match.
pub fn external_alerts(doc: &Value) -> Option<Promoted> {
    let matches = term(doc, "event.kind", &["alert"])
        && !term(
            doc,
            "event.module",
            &["endgame", "endpoint", "cloud_defend"],
        )
        && !term(
            doc,
            "data_stream.dataset",
            &["m365_defender.alert", "m365_defender.incident"],
        );
    if !matches {
        return None;
    }
    let severity = values(doc, "event.severity")
        .iter()
        .find_map(|v| match v.to_string().as_str() {
            "21" => Some("low"),
            "47" => Some("medium"),
            "73" => Some("high"),
            "99" => Some("critical"),
            _ => None,
        })
        .unwrap_or(DEFAULT_SEVERITY);
    let risk_score = values(doc, "event.risk_score")
        .iter()
        .find_map(|v| v.as_f64())
        .unwrap_or(DEFAULT_RISK_SCORE);
    let title = values(doc, "message")
        .iter()
        .find_map(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| RULE_NAME.to_owned());
    Some(Promoted {
        title,
        severity,
        risk_score,
    })
}

/// A KQL `field:(a or b …)` on a keyword: true when any value equals one.
fn term(doc: &Value, field: &str, wanted: &[&str]) -> bool {
    values(doc, field)
        .iter()
        .any(|v| v.as_str().is_some_and(|s| wanted.contains(&s)))
}

/// The values of a dotted field: none when missing or null, each element of
/// an array.
fn values<'a>(doc: &'a Value, field: &str) -> Vec<&'a Value> {
    let mut value = doc;
    for key in field.split('.') {
        match value.get(key) {
            Some(v) => value = v,
            None => return Vec::new(),
        }
    }
    match value {
        Value::Null => Vec::new(),
        Value::Array(list) => list.iter().filter(|v| !v.is_null()).collect(),
        one => vec![one],
    }
}

/// ECS's fields and their types, from `../shared/testdata/ecs/fields.csv`.
fn ecs_types() -> &'static HashMap<String, String> {
    static TYPES: OnceLock<HashMap<String, String>> = OnceLock::new();
    TYPES.get_or_init(|| {
        let path = std::env::var_os("MAPWATCH_ECS_FIELDS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../shared/testdata/ecs/fields.csv")
            });
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "ECS fields.csv not found at {}: {e}; check out shared/ beside the repository or set MAPWATCH_ECS_FIELDS",
                path.display()
            )
        });
        // ECS_Version,Indexed,Field_Set,Field,Type,…: no field or type has a comma.
        text.lines()
            .skip(1)
            .filter_map(|line| {
                let mut columns = line.split(',');
                let field = columns.nth(3)?;
                let kind = columns.next()?;
                Some((field.to_owned(), kind.to_owned()))
            })
            .collect()
    })
}

/// Every field of `doc` outside `mapwatch.*` that is not an ECS field or
/// whose value is not of its ECS type, as `path: why`.
pub fn ecs_type_errors(doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check_fields(doc, "", &mut errors);
    errors
}

fn check_fields(value: &Value, path: &str, errors: &mut Vec<String>) {
    if path == "mapwatch" {
        return;
    }
    if let Value::Object(map) = value
        && !ecs_types().contains_key(path)
    {
        for (key, child) in map {
            let child_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            check_fields(child, &child_path, errors);
        }
        return;
    }
    let Some(kind) = ecs_types().get(path) else {
        errors.push(format!("{path}: not an ECS field"));
        return;
    };
    let elements: Vec<&Value> = match value {
        Value::Array(list) => list.iter().collect(),
        one => vec![one],
    };
    for element in elements {
        if !of_type(element, kind) {
            errors.push(format!("{path}: {element} is not a {kind}"));
        }
    }
}

fn of_type(value: &Value, kind: &str) -> bool {
    match kind {
        "keyword" | "constant_keyword" | "wildcard" | "match_only_text" | "text" | "ip" => {
            value.is_string()
        }
        "long" | "integer" | "short" | "byte" | "unsigned_long" => value.is_i64() || value.is_u64(),
        "float" | "half_float" | "scaled_float" | "double" => value.is_number(),
        "boolean" => value.is_boolean(),
        "date" => value.as_str().is_some_and(is_rfc3339),
        "object" | "flattened" | "nested" => value.is_object(),
        _ => false,
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form mapwatch writes (RFC 3339, UTC).
fn is_rfc3339(s: &str) -> bool {
    const FORM: &[u8] = b"0000-00-00T00:00:00.000Z";
    s.len() == FORM.len()
        && s.bytes().zip(FORM).all(|(b, f)| {
            if *f == b'0' {
                b.is_ascii_digit()
            } else {
                b == *f
            }
        })
}

/// Every document of `docs` reaches Elastic Security as README's "Send
/// alerts to Elastic" says: alerts and rate-limit summaries are promoted at
/// their rule's severity, titled by their `message`; health reports are
/// promoted at medium; stats never are. Every field is ECS-typed.
pub fn assert_promoted_as_documented(docs: &[Value]) {
    for doc in docs {
        let errors = ecs_type_errors(doc);
        assert!(errors.is_empty(), "{errors:#?}\n{doc:#}");
        let promoted = external_alerts(doc);
        let dataset = doc["event"]["dataset"].as_str().unwrap_or_default();
        let action = doc["event"]["action"].as_str().unwrap_or_default();
        match (dataset, action) {
            ("mapwatch.stats", _) => {
                assert_eq!(promoted, None, "stats are never promoted: {doc:#}");
                continue;
            }
            ("mapwatch.health", _) => {
                let p = promoted.unwrap_or_else(|| panic!("health is promoted: {doc:#}"));
                assert_eq!(p.severity, "medium", "{doc:#}");
            }
            ("mapwatch.alert", "alerts-suppressed") => {
                let p = promoted.unwrap_or_else(|| panic!("a summary is promoted: {doc:#}"));
                let rule = &doc["rule"]["id"];
                let of_its_alerts: Vec<&str> = docs
                    .iter()
                    .filter(|d| d["rule"]["id"] == *rule && d["event"]["action"] != action)
                    .filter_map(external_alerts)
                    .map(|a| a.severity)
                    .collect();
                assert!(
                    !of_its_alerts.is_empty(),
                    "a summary's rule has alerts among the documents to compare with: {doc:#}"
                );
                for severity in of_its_alerts {
                    assert_eq!(
                        p.severity, severity,
                        "a summary has its alerts' severity: {doc:#}"
                    );
                }
                assert!(p.title.contains("suppressed"), "{}", p.title);
            }
            ("mapwatch.alert", _) => {
                let p = promoted.unwrap_or_else(|| panic!("an alert is promoted: {doc:#}"));
                assert_eq!(
                    Some(p.severity),
                    doc["mapwatch"]["rule"]["severity"].as_str(),
                    "the rule's severity: {doc:#}"
                );
                assert_eq!(Some(p.risk_score), doc["event"]["risk_score"].as_f64());
            }
            _ => panic!("a document of no known kind: {doc:#}"),
        }
        let title = doc["message"].as_str().unwrap_or_default();
        let promoted_title = external_alerts(doc).map(|p| p.title).unwrap_or_default();
        assert_eq!(promoted_title, title, "titled by its message");
        assert!(
            !title.is_empty() && !title.chars().any(char::is_control),
            "a one-line title: {title:?}"
        );
        if let Some(rule_name) = doc["rule"]["name"].as_str() {
            assert!(
                title.starts_with(&format!("{rule_name}: ")),
                "the title names the rule: {title:?}"
            );
        }
    }
}
