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
use super::wildcard::{Wildcard, eq_folded};

/// The event categories rules can select.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Category {
    Process,
    File,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Process => "process",
            Category::File => "file",
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

/// What a comparison checks on each value of its field.
#[derive(Clone, Debug)]
pub enum Test {
    Equal(Literal),
    NotEqual(Literal),
    In(Vec<Literal>),
    /// Lowercased literals.
    InFolded(Vec<Literal>),
    Wildcard(Vec<Wildcard>),
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
            Test::IsNull | Test::NotNull => true,
        }
    }
}

/// A compiled condition.
#[derive(Clone, Debug)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Compare { field: Field, test: Test },
    Const(bool),
}

impl Expr {
    /// Whether the event matches: two-valued, as a query-DSL filter is.
    pub fn matches(&self, event: &mut dyn Event) -> bool {
        match self {
            Expr::And(terms) => terms.iter().all(|term| term.matches(event)),
            Expr::Or(terms) => terms.iter().any(|term| term.matches(event)),
            Expr::Not(inner) => !inner.matches(event),
            Expr::Const(value) => *value,
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
            Expr::Const(_) => Cost::Event,
        }
    }

    /// Flattens nested `and`/`or` and puts cheap terms first. Reordering is
    /// sound: `and` and `or` are commutative, and terms have no side effects
    /// beyond (cached) lookups.
    pub fn optimised(self) -> Expr {
        match self {
            Expr::And(terms) => Expr::And(flatten(terms, true)),
            Expr::Or(terms) => Expr::Or(flatten(terms, false)),
            Expr::Not(inner) => Expr::Not(Box::new(inner.optimised())),
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
