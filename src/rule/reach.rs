//! Whether a rule can fire on mapwatch's events at all, decided at load.
//!
//! Contract: [`never_fires`] evaluates a compiled condition with what every
//! live event of the rule's category has (`event.*`, `host.os.type`:
//! [`super::live::constant`]) and everything else unknown, in three
//! values; when the condition is false whatever the unknown fields hold,
//! it names the fields that decide it. Fields mapwatch never fills were
//! folded to constants by the parser, so they decide here too.
//! [`with_constants`] gives the condition as every live event of the
//! category sees it, for what is drawn from it at load (the prefilter).

use std::ops::ControlFlow;

use super::eval::{Category, Event, Expr, Scalar};
use super::field::Field;
use super::live::constant;

/// Why a condition is false on every event of `category`, if it is.
pub fn never_fires(condition: &Expr, category: Category) -> Option<String> {
    let mut deciding = Vec::new();
    match decide(condition, category, &mut deciding) {
        Some(false) => {
            let mut fields: Vec<Field> = Vec::new();
            for field in deciding {
                if !fields.contains(&field) {
                    fields.push(field);
                }
            }
            let values: Vec<String> = fields
                .iter()
                .filter_map(|f| {
                    constant(category, *f)
                        .map(|v| format!("`{}` is \"{}\"", f.path(), String::from_utf8_lossy(v)))
                })
                .collect();
            Some(if values.is_empty() {
                "its condition is false on every event (it names only fields mapwatch never fills)"
                    .to_owned()
            } else {
                format!(
                    "its condition is false on every {} event mapwatch makes ({})",
                    category.as_str(),
                    values.join(", ")
                )
            })
        }
        _ => None,
    }
}

/// `condition` with each comparison on a field that is the same on every
/// live event of `category` replaced by its value there, then folded: a
/// branch no live event can take is gone.
pub fn with_constants(condition: &Expr, category: Category) -> Expr {
    substitute(condition, category).optimised()
}

fn substitute(expr: &Expr, category: Category) -> Expr {
    let each = |terms: &[Expr]| terms.iter().map(|t| substitute(t, category)).collect();
    match expr {
        Expr::And(terms) => Expr::And(each(terms)),
        Expr::Or(terms) => Expr::Or(each(terms)),
        Expr::Not(inner) => Expr::Not(Box::new(substitute(inner, category))),
        Expr::Compare { .. } => match decide(expr, category, &mut Vec::new()) {
            Some(value) => Expr::Const(value),
            None => expr.clone(),
        },
        Expr::Const(_) | Expr::Function(_) => expr.clone(),
    }
}

/// `Some(value)` when the condition has that value on every event of the
/// category; `None` when it depends on fields that vary.
fn decide(expr: &Expr, category: Category, deciding: &mut Vec<Field>) -> Option<bool> {
    match expr {
        Expr::Const(value) => Some(*value),
        Expr::Not(inner) => decide(inner, category, deciding).map(|v| !v),
        Expr::And(terms) => combine(terms, category, deciding, false),
        Expr::Or(terms) => combine(terms, category, deciding, true),
        Expr::Function(_) => None,
        Expr::Compare { field, .. } => {
            let value = constant(category, *field)?;
            deciding.push(*field);
            Some(expr.matches(&mut OneValue {
                field: *field,
                value,
            }))
        }
    }
}

/// `and` (`absorbing` false) or `or` (`absorbing` true).
fn combine(
    terms: &[Expr],
    category: Category,
    deciding: &mut Vec<Field>,
    absorbing: bool,
) -> Option<bool> {
    let mut all_known = true;
    for term in terms {
        match decide(term, category, deciding) {
            Some(v) if v == absorbing => return Some(absorbing),
            Some(_) => {}
            None => all_known = false,
        }
    }
    all_known.then_some(!absorbing)
}

/// An event with one field of one value.
struct OneValue {
    field: Field,
    value: &'static [u8],
}

impl Event for OneValue {
    fn is_category(&self, _: Category) -> bool {
        true
    }

    fn visit(
        &mut self,
        field: Field,
        visit: &mut dyn FnMut(Scalar<'_>) -> ControlFlow<()>,
    ) -> bool {
        if field != self.field {
            return false;
        }
        let _ = visit(Scalar::Keyword(self.value));
        true
    }
}
