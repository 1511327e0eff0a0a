//! Compiled conditions and their evaluation against an event.
//!
//! Contract: a condition is true or false, as the query Elasticsearch
//! translates an EQL condition into (x-pack/plugin/ql `ExpressionTranslators`,
//! x-pack/plugin/eql `QueryTranslator`): every comparison is a leaf query
//! (`term`, `terms`, `wildcard`, `exists`) that matches when **any** value
//! of the field satisfies it and never on a missing field; `!=` is
//! `must_not` of the `term` query and `not` is `must_not` of what it
//! negates, so both hold when **no** value satisfies the comparison,
//! including when the field is missing. `== null` is `must_not exists`,
//! `!= null` is `exists`; an explicit JSON null, `[]` and `[null]` are
//! missing, as for `exists`. `and`/`or` are `bool` `filter`/`should`.
//! tests/eql_semantics.rs pins each operator against its source.
//! Evaluation allocates nothing; values reach it through [`Event::visit`].

use std::ops::ControlFlow;

use super::field::{Cost, Field};
use super::regexp::Regexp;
use super::wildcard::{Wildcard, eq_folded};

/// The event categories rules can select.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Category {
    /// Execs.
    Process,
    /// Reads of layout files and writes into `mem` (fanotify).
    File,
    /// Calls into another process's memory (ptrace, process_vm_*).
    Api,
    /// Every event: a sequence's step only.
    Any,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Process => "process",
            Category::File => "file",
            Category::Api => "api",
            Category::Any => "any",
        }
    }
}

/// One value of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar<'a> {
    Keyword(&'a [u8]),
    Long(i64),
    Boolean(bool),
}

/// What rules evaluate: an event whose fields can be read by name.
pub trait Event {
    /// Whether the event belongs to `category` (`process where`, `file where`).
    fn is_category(&self, category: Category) -> bool;

    /// Calls `visit` with each value of `field` until it breaks; returns
    /// false when the event has no such field.
    fn visit(&mut self, field: Field, visit: &mut dyn FnMut(Scalar<'_>) -> ControlFlow<()>)
    -> bool;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Literal {
    Keyword(String),
    Long(i64),
    Boolean(bool),
}

impl Literal {
    fn equals(&self, value: Scalar<'_>) -> bool {
        match (self, value) {
            (Literal::Keyword(s), Scalar::Keyword(v)) => s.as_bytes() == v,
            (Literal::Long(n), Scalar::Long(v)) => *n == v,
            (Literal::Boolean(b), Scalar::Boolean(v)) => *b == v,
            _ => false,
        }
    }

    /// For `in~`: `self` is already lowercased.
    fn equals_folded(&self, value: Scalar<'_>) -> bool {
        match (self, value) {
            (Literal::Keyword(s), Scalar::Keyword(v)) => eq_folded(v, s),
            _ => self.equals(value),
        }
    }
}

/// `<`, `<=`, `>`, `>=`: a `range` query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Order {
    fn accepts(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Greater, Less};
        match self {
            Order::Less => ordering == Less,
            Order::LessOrEqual => ordering != Greater,
            Order::Greater => ordering == Greater,
            Order::GreaterOrEqual => ordering != Less,
        }
    }
}

/// What a comparison checks on each value of its field.
#[derive(Clone, Debug)]
pub enum Test {
    Equal(Literal),
    NotEqual(Literal),
    In(Vec<Literal>),
    /// Lowercased literals.
    InFolded(Vec<Literal>),
    Wildcard(Vec<Wildcard>),
    Regex(Vec<Regexp>),
    /// Numbers by value, strings by their bytes (Lucene's term order).
    Range(Order, Literal),
    IsNull,
    NotNull,
}

impl Test {
    /// Whether one value satisfies the leaf query. `NotEqual` is the `term`
    /// query of `Equal`, negated over the whole field in [`Expr::matches`].
    fn holds(&self, value: Scalar<'_>) -> bool {
        match self {
            Test::Equal(lit) | Test::NotEqual(lit) => lit.equals(value),
            Test::In(list) => list.iter().any(|lit| lit.equals(value)),
            Test::InFolded(list) => list.iter().any(|lit| lit.equals_folded(value)),
            Test::Wildcard(patterns) => match value {
                Scalar::Keyword(v) => patterns.iter().any(|p| p.matches(v)),
                Scalar::Long(_) | Scalar::Boolean(_) => false,
            },
            Test::Regex(patterns) => match value {
                Scalar::Keyword(v) => patterns.iter().any(|p| p.is_match(v)),
                Scalar::Long(_) | Scalar::Boolean(_) => false,
            },
            Test::Range(order, bound) => match (value, bound) {
                (Scalar::Long(v), Literal::Long(b)) => order.accepts(v.cmp(b)),
                (Scalar::Keyword(v), Literal::Keyword(b)) => order.accepts(v.cmp(b.as_bytes())),
                _ => false,
            },
            Test::IsNull | Test::NotNull => true,
        }
    }

    /// The comparison's result on an event without the field (a field
    /// mapwatch never fills, or an unknown optional `?field`).
    pub fn on_missing_field(&self) -> bool {
        matches!(self, Test::NotEqual(_) | Test::IsNull)
    }

    /// Whether the comparison is true on `value` as the field's only value.
    fn on_single(&self, value: Scalar<'_>) -> bool {
        match self {
            Test::IsNull => false,
            Test::NotEqual(lit) => !lit.equals(value),
            other => other.holds(value),
        }
    }
}

/// One argument of a string function: a field, or a string.
#[derive(Clone, Debug)]
pub enum Arg {
    Field(Field),
    Text(String),
}

/// `startsWith`, `endsWith`, `stringContains`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringOp {
    StartsWith,
    EndsWith,
    Contains,
}

impl StringOp {
    fn holds(self, source: &[u8], search: &[u8], folded: bool) -> bool {
        if search.len() > source.len() {
            return false;
        }
        let eq = |a: &[u8], b: &[u8]| {
            if folded {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match self {
            StringOp::StartsWith => eq(&source[..search.len()], search),
            StringOp::EndsWith => eq(&source[source.len() - search.len()..], search),
            StringOp::Contains => {
                source.windows(search.len().max(1)).any(|w| eq(w, search)) || search.is_empty()
            }
        }
    }
}

/// A function in a condition. Elasticsearch runs a function as a script,
/// which reads one value of each field: the first of its doc values, which
/// are sorted, so the smallest. A missing field makes the function null:
/// no filter matches it, and `not` of it is null too (the script negates
/// inside, three-valued).
#[derive(Clone, Debug)]
pub enum Function {
    /// `length(field) <op> n`: the number of characters of the value.
    Length { field: Field, test: Test },
    Strings {
        op: StringOp,
        source: Arg,
        search: Arg,
        /// The `~` form: ASCII case folded.
        folded: bool,
    },
    /// A function of a field that no event has (an ECS field mapwatch never
    /// fills, an unknown `?field`).
    Null,
}

/// The value a script reads of a keyword argument: its smallest value.
fn script_value(event: &mut dyn Event, arg: &Arg) -> Option<Vec<u8>> {
    match arg {
        Arg::Text(text) => Some(text.as_bytes().to_vec()),
        Arg::Field(field) => {
            let mut smallest: Option<Vec<u8>> = None;
            event.visit(*field, &mut |value| {
                if let Scalar::Keyword(v) = value
                    && smallest.as_deref().is_none_or(|s| v < s)
                {
                    smallest = Some(v.to_vec());
                }
                ControlFlow::Continue(())
            });
            smallest
        }
    }
}

impl Function {
    /// True, false, or null (`None`).
    fn value(&self, event: &mut dyn Event) -> Option<bool> {
        match self {
            Function::Length { field, test } => {
                let value = script_value(event, &Arg::Field(*field))?;
                let length = String::from_utf8_lossy(&value).chars().count() as i64;
                Some(test.on_single(Scalar::Long(length)))
            }
            Function::Strings {
                op,
                source,
                search,
                folded,
            } => {
                let search = script_value(event, search)?;
                let source = script_value(event, source)?;
                Some(op.holds(&source, &search, *folded))
            }
            Function::Null => None,
        }
    }

    fn cost(&self) -> Cost {
        // A script, after the queries: its arguments are copied.
        Cost::Lookup
    }
}

/// A compiled condition.
#[derive(Clone, Debug)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Compare { field: Field, test: Test },
    Function(Box<Function>),
    Const(bool),
}

impl Expr {
    /// Whether the event matches: two-valued, as a query-DSL filter is.
    pub fn matches(&self, event: &mut dyn Event) -> bool {
        match self {
            Expr::And(terms) => terms.iter().all(|term| term.matches(event)),
            Expr::Or(terms) => terms.iter().any(|term| term.matches(event)),
            Expr::Not(inner) => match &**inner {
                Expr::Function(function) => function.value(event) == Some(false),
                other => !other.matches(event),
            },
            Expr::Const(value) => *value,
            Expr::Function(function) => function.value(event) == Some(true),
            Expr::Compare { field, test } => {
                let mut any = false;
                let present = event.visit(*field, &mut |value| {
                    if test.holds(value) {
                        any = true;
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                });
                match test {
                    Test::IsNull => !present,
                    Test::NotNull => present,
                    // `must_not term`: no value equals, or there is none.
                    Test::NotEqual(_) => !any,
                    _ => any,
                }
            }
        }
    }

    fn cost(&self) -> Cost {
        match self {
            Expr::And(terms) | Expr::Or(terms) => {
                terms.iter().map(Expr::cost).max().unwrap_or(Cost::Event)
            }
            Expr::Not(inner) => inner.cost(),
            Expr::Compare { field, .. } => field.cost(),
            Expr::Function(function) => function.cost(),
            Expr::Const(_) => Cost::Event,
        }
    }

    /// Flattens nested `and`/`or`, folds constants (comparisons on fields
    /// mapwatch never fills are constants) and puts cheap terms first.
    /// Reordering is sound: `and` and `or` are commutative, and terms have
    /// no side effects beyond (cached) lookups.
    pub fn optimised(self) -> Expr {
        match self {
            Expr::And(terms) => fold(flatten(terms, true), true),
            Expr::Or(terms) => fold(flatten(terms, false), false),
            Expr::Not(inner) => match inner.optimised() {
                Expr::Const(value) => Expr::Const(!value),
                // As Elasticsearch's optimizer: `not not x` is `x`.
                Expr::Not(twice) => *twice,
                inner => Expr::Not(Box::new(inner)),
            },
            other => other,
        }
    }
}

fn flatten(terms: Vec<Expr>, and: bool) -> Vec<Expr> {
    let mut out = Vec::with_capacity(terms.len());
    for term in terms.into_iter().map(Expr::optimised) {
        match term {
            Expr::And(inner) if and => out.extend(inner),
            Expr::Or(inner) if !and => out.extend(inner),
            other => out.push(other),
        }
    }
    out.sort_by_key(Expr::cost);
    out
}

/// `and` (or `or`) of flattened terms, without its neutral constants; the
/// absorbing one decides it.
fn fold(mut terms: Vec<Expr>, and: bool) -> Expr {
    if terms
        .iter()
        .any(|t| matches!(t, Expr::Const(v) if *v != and))
    {
        return Expr::Const(!and);
    }
    terms.retain(|t| !matches!(t, Expr::Const(_)));
    match terms.len() {
        0 => Expr::Const(and),
        1 => terms.remove(0),
        _ if and => Expr::And(terms),
        _ => Expr::Or(terms),
    }
}
