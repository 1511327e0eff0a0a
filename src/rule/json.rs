//! ECS documents (JSON) as rules see them, for `mapwatch rules test`.
//!
//! Contract: a field is found through nested objects, dotted keys, or any
//! mix of the two (`{"process": {"entry_leader.name": "bash"}}`). `null` is
//! a missing value; arrays are multi-valued; numbers read as keywords give
//! their decimal text, as Elasticsearch coerces them. The event category
//! comes from `event.category`.

use std::ops::ControlFlow;

use serde_json::Value;

use super::eval::{Category, Event, Scalar};
use super::field::{Field, Kind};

pub struct JsonEvent<'a> {
    doc: &'a Value,
    categories: Vec<Category>,
}

impl<'a> JsonEvent<'a> {
    pub fn new(doc: &'a Value) -> Self {
        let mut categories = Vec::new();
        if let Some(value) = lookup(doc, "event.category") {
            for_each_element(value, &mut |v| {
                match v.as_str() {
                    Some("process") => categories.push(Category::Process),
                    Some("file") => categories.push(Category::File),
                    _ => {}
                }
                ControlFlow::Continue(())
            });
        }
        JsonEvent { doc, categories }
    }

    pub fn has_category(&self, category: Category) -> bool {
        self.categories.contains(&category)
    }
}

/// The value at a dotted path.
fn lookup<'v>(doc: &'v Value, path: &str) -> Option<&'v Value> {
    let object = doc.as_object()?;
    if let Some(v) = object.get(path) {
        return Some(v);
    }
    path.match_indices('.').find_map(|(dot, _)| {
        object
            .get(&path[..dot])
            .and_then(|child| lookup(child, &path[dot + 1..]))
    })
}

fn for_each_element(value: &Value, f: &mut dyn FnMut(&Value) -> ControlFlow<()>) {
    match value {
        Value::Array(items) => {
            for item in items {
                if f(item).is_break() {
                    return;
                }
            }
        }
        other => {
            let _ = f(other);
        }
    }
}

impl Event for JsonEvent<'_> {
    fn is_category(&self, category: Category) -> bool {
        self.has_category(category)
    }

    fn visit(
        &mut self,
        field: Field,
        visit: &mut dyn FnMut(Scalar<'_>) -> ControlFlow<()>,
    ) -> bool {
        let Some(value) = lookup(self.doc, field.path()) else {
            return false;
        };
        let mut present = false;
        for_each_element(value, &mut |element| {
            let text;
            let scalar = match (element, field.kind()) {
                (Value::String(s), Kind::Keyword) => Scalar::Keyword(s.as_bytes()),
                (Value::Number(n), Kind::Long) => match n.as_i64() {
                    Some(n) => Scalar::Long(n),
                    None => return ControlFlow::Continue(()),
                },
                (Value::String(s), Kind::Long) => match s.parse() {
                    Ok(n) => Scalar::Long(n),
                    Err(_) => return ControlFlow::Continue(()),
                },
                (Value::Number(n), Kind::Keyword) => {
                    text = n.to_string();
                    Scalar::Keyword(text.as_bytes())
                }
                (Value::Bool(b), Kind::Keyword) => {
                    Scalar::Keyword(if *b { b"true" } else { b"false" })
                }
                (Value::Bool(b), Kind::Boolean) => Scalar::Boolean(*b),
                _ => return ControlFlow::Continue(()),
            };
            present = true;
            visit(scalar)
        });
        present
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(doc: &Value, field: Field) -> Option<Vec<String>> {
        let mut event = JsonEvent::new(doc);
        let mut out = Vec::new();
        let present = event.visit(field, &mut |v| {
            out.push(match v {
                Scalar::Keyword(k) => String::from_utf8_lossy(k).into_owned(),
                Scalar::Long(n) => n.to_string(),
                Scalar::Boolean(b) => b.to_string(),
            });
            ControlFlow::Continue(())
        });
        present.then_some(out)
    }

    #[test]
    fn nested_dotted_and_mixed_paths() {
        let nested = json!({"process": {"entry_leader": {"name": "bash"}}});
        let dotted = json!({"process.entry_leader.name": "bash"});
        let mixed = json!({"process": {"entry_leader.name": "bash"}});
        for doc in [nested, dotted, mixed] {
            assert_eq!(
                values(&doc, Field::ProcessEntryLeaderName),
                Some(vec!["bash".into()]),
                "{doc}"
            );
        }
    }

    #[test]
    fn arrays_nulls_and_coercion() {
        let doc = json!({"process": {"args": ["cat", null, "/proc/1/maps"], "pid": "42", "name": null}, "user": {"id": 0}});
        assert_eq!(
            values(&doc, Field::ProcessArgs),
            Some(vec!["cat".into(), "/proc/1/maps".into()])
        );
        assert_eq!(values(&doc, Field::ProcessPid), Some(vec!["42".into()]));
        assert_eq!(values(&doc, Field::ProcessName), None);
        assert_eq!(values(&doc, Field::UserId), Some(vec!["0".into()]));
        assert_eq!(values(&doc, Field::HostName), None);
    }

    #[test]
    fn categories_from_event_category() {
        let doc = json!({"event": {"category": ["process"]}});
        assert!(JsonEvent::new(&doc).has_category(Category::Process));
        assert!(!JsonEvent::new(&json!({})).has_category(Category::Process));
    }
}
