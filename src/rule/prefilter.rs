//! What each rule cannot match without: a rule is evaluated only when
//! the event has, for each of its needs, one of the values or texts it
//! names.
//!
//! Contract: from each rule's query, at load, a set of needs is drawn,
//! each a list of alternatives on fields, of which one must hold of a
//! value of its field for the query to hold: an `==`, `in` or `in~` needs
//! a value equal to one of its literals; a `!=` needs the field missing or
//! a value other than its literal; a `:` or `like` pattern needs its
//! literal run in a value (for one pattern, each of its runs; for several,
//! each one's longest); a `regex` needs the runs the pattern fixes
//! ([`super::regexp_runs`]); an `and` needs what each of its terms needs;
//! an `or` needs one of what each branch needs (with two branches, each
//! pairing of their two best needs; then, up to the fourth, every
//! branch's k-th best together). `not`, ranges, null tests and
//! functions need nothing, nor do runs of one byte (in nearly every
//! value) other than whitespace (rare in names and paths, and what
//! masquerading puts in them). Comparisons on fields whose value is the
//! same on every live event of the rule's category (`event.type`,
//! `host.os.type`) are decided first, so a branch for another system
//! draws nothing. A field is looked at once per event,
//! when a rule's need first asks for it (cheap fields' needs first): its
//! values are looked up among the equality literals and searched, in one
//! pass of an Aho–Corasick automaton, for the runs; each hit marks the needs it
//! meets. Case folding is ASCII (more events admitted, never fewer), and a
//! non-ASCII value meets every case-insensitive need on its field (Unicode
//! folding can map it onto an ASCII literal). Admission only skips rules:
//! an admitted rule is then evaluated in full. Per event, nothing is
//! allocated: the needs met are a fixed bitset on the stack, and needs past
//! its size are not drawn.

use std::ops::ControlFlow;

use aho_corasick::automaton::{Automaton, OverlappingState};
use aho_corasick::dfa::DFA;
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{Input, MatchKind};
use rustc_hash::FxHashMap;

use super::Rule;
use super::eval::{Event, Expr, Literal, Scalar, Test};
use super::field::Field;
use super::reach::with_constants;
use super::regexp::Regexp;
use super::regexp_runs;

/// Needs drawn over all rules, at most (one bit each in [`Found`]).
const MAX_NEEDS: usize = 64 * 64;
/// Fields looked at, at most (one bit each in [`Found`]).
const MAX_FIELDS: usize = 64;
/// Shorter runs are in nearly every value: no need is drawn from them
/// (but for whitespace).
const MIN_RUN: usize = 2;
/// Needs of each branch of a two-branch `or` paired with the other's.
const PAIRED_NEEDS: usize = 2;
/// Needs of each branch of an `or` that are looked at, at most.
const MAX_OR_DEPTH: usize = 4;
/// Longest literal a case-insensitive equality is looked up with (the
/// value is lowercased on the stack).
const MAX_FOLDED: usize = 256;

/// A range of a flat list.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn of<T>(self, list: &[T]) -> &[T] {
        &list[self.start as usize..self.end as usize]
    }
}

/// How one field's values are looked at.
#[derive(Clone, Debug)]
struct Scan {
    field: Field,
    /// Values equal to a literal (case-sensitive), and the needs met.
    equal: FxHashMap<Vec<u8>, Span>,
    /// Literals of `!=`, and the needs met by a value that differs (or by
    /// no value at all).
    differ: Vec<(Vec<u8>, Span)>,
    /// Likewise for ASCII-lowercased values and literals.
    equal_folded: FxHashMap<Vec<u8>, Span>,
    /// The runs, searched together.
    runs: Option<Runs>,
    /// Per run (the automaton's pattern): the needs it meets.
    run_meets: Vec<Span>,
    /// Needs with a case-insensitive alternative on this field.
    folded: Vec<u32>,
}

/// A field's runs as one automaton, by its own type (not behind
/// `AhoCorasick`'s `dyn`, so each transition is inlined): a DFA, unless it
/// would be very large, then a contiguous NFA (a tenth of the size, each
/// byte a few more steps). With Elastic's corpus every field's is a DFA:
/// 3.2 MB in all, the largest `process.args` and `process.command_line`
/// at 1.3 MB each against 97 and 119 KB as NFAs; the corpus on
/// `sh -c "make -j2 all"` in 2.8 µs instead of 4.1 (in cache), on `cat`
/// 2.6 instead of 3.0, for 6 MB more resident memory (11.7 -> 17.7 MB)
/// and no change in the exec storm at 50 ms batches (19.1 against 19.0
/// µs per exec, 7 rounds). At 10 ms batches, where every batch found the
/// automata cold, the NFAs had cost 17.5 µs per exec against 24.4.
#[derive(Clone, Debug)]
enum Runs {
    Dfa(DFA),
    Nfa(NFA),
}

/// An NFA at most this large is made a DFA (5–14 times its size): a
/// corpus several times Elastic's keeps its largest fields' automata
/// under a few MB each.
const MAX_NFA_FOR_DFA: usize = 128 * 1024;

impl Runs {
    /// `None` only if the automaton cannot be built, which does not happen
    /// for runs this few and short.
    fn build(runs: &[Vec<u8>]) -> Option<Runs> {
        let nfa = NFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(runs)
            .ok()?;
        if nfa.memory_usage() > MAX_NFA_FOR_DFA {
            return Some(Runs::Nfa(nfa));
        }
        DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(runs)
            .ok()
            .map(Runs::Dfa)
    }

    /// Calls `hit` with the index of each run found in `text`.
    fn each_hit(&self, text: &[u8], hit: impl FnMut(usize)) {
        match self {
            Runs::Dfa(dfa) => each_hit(dfa, text, hit),
            Runs::Nfa(nfa) => each_hit(nfa, text, hit),
        }
    }
}

fn each_hit(automaton: &impl Automaton, text: &[u8], mut hit: impl FnMut(usize)) {
    let input = Input::new(text);
    let mut state = OverlappingState::start();
    // Unanchored, no limits: the search cannot fail.
    while automaton.try_find_overlapping(&input, &mut state).is_ok()
        && let Some(found) = state.get_match()
    {
        hit(found.pattern().as_usize());
    }
}

#[derive(Clone, Debug, Default)]
pub struct Prefilter {
    scans: Vec<Scan>,
    /// Per rule, in rule order: its needs, cheap fields' first.
    rules: Vec<Span>,
    /// Need ids: each rule's, then those each literal meets.
    ids: Vec<u32>,
    /// Per need: the scans its alternatives are on (a bit each).
    need_scans: Vec<u64>,
}

/// What one event's scans found so far.
pub struct Found {
    scanned: u64,
    met: [u64; MAX_NEEDS / 64],
}

impl Found {
    pub fn new() -> Self {
        Found {
            scanned: 0,
            met: [0; MAX_NEEDS / 64],
        }
    }

    fn has(&self, need: u32) -> bool {
        let i = need as usize;
        self.met[i / 64] & (1 << (i % 64)) != 0
    }

    fn meet(&mut self, need: u32) {
        let i = need as usize;
        self.met[i / 64] |= 1 << (i % 64);
    }

    fn meet_all(&mut self, needs: &[u32]) {
        for &need in needs {
            self.meet(need);
        }
    }
}

impl Default for Found {
    fn default() -> Self {
        Self::new()
    }
}

/// How an alternative holds of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    Equals,
    Differs,
    Contains,
}

/// One alternative of a need while it is drawn from the query.
#[derive(Clone, Debug)]
struct Alternative {
    field: Field,
    text: Vec<u8>,
    folded: bool,
    hold: Hold,
}

type Drawn = Vec<Alternative>;

/// One field's scan while building.
struct Building {
    field: Field,
    equal: FxHashMap<Vec<u8>, Vec<u32>>,
    equal_folded: FxHashMap<Vec<u8>, Vec<u32>>,
    differ: FxHashMap<Vec<u8>, Vec<u32>>,
    run_ids: FxHashMap<Vec<u8>, usize>,
    runs: Vec<Vec<u8>>,
    run_meets: Vec<Vec<u32>>,
    folded: Vec<u32>,
}

impl Building {
    fn new(field: Field) -> Self {
        Building {
            field,
            equal: FxHashMap::default(),
            equal_folded: FxHashMap::default(),
            differ: FxHashMap::default(),
            run_ids: FxHashMap::default(),
            runs: Vec::new(),
            run_meets: Vec::new(),
            folded: Vec::new(),
        }
    }

    fn add(&mut self, alternative: Alternative, need: u32) {
        let Alternative {
            text, folded, hold, ..
        } = alternative;
        let needs = match (hold, folded) {
            (Hold::Equals, false) => self.equal.entry(text).or_default(),
            (Hold::Equals, true) => self
                .equal_folded
                .entry(text.to_ascii_lowercase())
                .or_default(),
            (Hold::Differs, _) => self.differ.entry(text).or_default(),
            (Hold::Contains, _) => {
                // The search folds ASCII case for every run.
                let run = text.to_ascii_lowercase();
                let id = match self.run_ids.get(&run) {
                    Some(id) => *id,
                    None => {
                        self.runs.push(run.clone());
                        self.run_meets.push(Vec::new());
                        self.run_ids.insert(run, self.runs.len() - 1);
                        self.runs.len() - 1
                    }
                };
                &mut self.run_meets[id]
            }
        };
        push_once(needs, need);
        if folded {
            push_once(&mut self.folded, need);
        }
    }
}

fn push_once(list: &mut Vec<u32>, need: u32) {
    if list.last() != Some(&need) {
        list.push(need);
    }
}

impl Prefilter {
    pub fn build(rules: &[Rule]) -> Prefilter {
        let mut building: Vec<Building> = Vec::new();
        let mut prefilter = Prefilter::default();
        let mut rule_needs = Vec::with_capacity(rules.len());
        for rule in rules {
            let mut needs = match rule.event_step() {
                Some(step) => needs_of(&with_constants(&step.condition, step.category)),
                None => Vec::new(),
            };
            needs.sort_by_key(|need| need.iter().map(|alt| alt.field.cost()).max());
            let mut ids = Vec::with_capacity(needs.len());
            for need in needs {
                let id = prefilter.need_scans.len() as u32;
                if id as usize >= MAX_NEEDS || !need_fits(&building, &need) {
                    continue;
                }
                let mut scans = 0u64;
                for alternative in need {
                    let scan = match building.iter().position(|b| b.field == alternative.field) {
                        Some(scan) => scan,
                        None => {
                            building.push(Building::new(alternative.field));
                            building.len() - 1
                        }
                    };
                    scans |= 1 << scan;
                    building[scan].add(alternative, id);
                }
                prefilter.need_scans.push(scans);
                ids.push(id);
            }
            rule_needs.push(ids);
        }
        for ids in rule_needs {
            let span = prefilter.push_ids(ids);
            prefilter.rules.push(span);
        }
        for b in building {
            let runs = if b.runs.is_empty() {
                None
            } else {
                // Without the automaton, no rule is skipped.
                let Some(runs) = Runs::build(&b.runs) else {
                    return Prefilter::default();
                };
                Some(runs)
            };
            let spans = |prefilter: &mut Prefilter, map: FxHashMap<Vec<u8>, Vec<u32>>| {
                map.into_iter()
                    .map(|(text, needs)| (text, prefilter.push_ids(needs)))
                    .collect::<Vec<_>>()
            };
            let equal = spans(&mut prefilter, b.equal).into_iter().collect();
            let equal_folded = spans(&mut prefilter, b.equal_folded).into_iter().collect();
            let differ = spans(&mut prefilter, b.differ);
            let run_meets = b
                .run_meets
                .into_iter()
                .map(|needs| prefilter.push_ids(needs))
                .collect();
            prefilter.scans.push(Scan {
                field: b.field,
                equal,
                equal_folded,
                differ,
                runs,
                run_meets,
                folded: b.folded,
            });
        }
        prefilter
    }

    fn push_ids(&mut self, ids: Vec<u32>) -> Span {
        let start = self.ids.len() as u32;
        self.ids.extend(ids);
        Span {
            start,
            end: self.ids.len() as u32,
        }
    }

    /// Whether the prefilter was built for `count` rules.
    pub fn covers(&self, count: usize) -> bool {
        self.rules.len() == count
    }

    /// Whether rule `rule` may match `event`: each of its needs is met.
    /// Looks at each field the first time a need asks for it.
    pub fn admits(&self, rule: usize, event: &mut dyn Event, found: &mut Found) -> bool {
        let Some(needs) = self.rules.get(rule) else {
            return true;
        };
        let needs = needs.of(&self.ids);
        // A need on fields already looked at is decided for free: one
        // that failed refuses the rule before any other field is read.
        if needs
            .iter()
            .any(|&need| self.need_scans[need as usize] & !found.scanned == 0 && !found.has(need))
        {
            return false;
        }
        needs.iter().all(|&need| {
            let mut unscanned = self.need_scans[need as usize] & !found.scanned;
            while unscanned != 0 {
                self.scan(unscanned.trailing_zeros() as usize, event, found);
                unscanned &= unscanned - 1;
            }
            found.has(need)
        })
    }

    fn scan(&self, index: usize, event: &mut dyn Event, found: &mut Found) {
        let scan = &self.scans[index];
        found.scanned |= 1 << index;
        let mut non_ascii = false;
        let mut any_value = false;
        let mut lower = [0u8; MAX_FOLDED];
        event.visit(scan.field, &mut |value| {
            any_value = true;
            for (literal, needs) in &scan.differ {
                if value != Scalar::Keyword(literal) {
                    found.meet_all(needs.of(&self.ids));
                }
            }
            let Scalar::Keyword(text) = value else {
                return ControlFlow::Continue(());
            };
            non_ascii |= !text.is_ascii();
            if let Some(needs) = scan.equal.get(text) {
                found.meet_all(needs.of(&self.ids));
            }
            if !scan.equal_folded.is_empty() && text.len() <= MAX_FOLDED {
                let lower = &mut lower[..text.len()];
                lower.copy_from_slice(text);
                lower.make_ascii_lowercase();
                if let Some(needs) = scan.equal_folded.get(&*lower) {
                    found.meet_all(needs.of(&self.ids));
                }
            }
            if let Some(runs) = &scan.runs {
                runs.each_hit(text, |run| {
                    found.meet_all(scan.run_meets[run].of(&self.ids))
                });
            }
            ControlFlow::Continue(())
        });
        if non_ascii {
            found.meet_all(&scan.folded);
        }
        if !any_value {
            for (_, needs) in &scan.differ {
                found.meet_all(needs.of(&self.ids));
            }
        }
    }
}

/// Whether `need` adds at most the fields there is room for.
fn need_fits(building: &[Building], need: &Drawn) -> bool {
    let mut new_fields: Vec<Field> = Vec::new();
    for alt in need {
        if !building.iter().any(|b| b.field == alt.field) && !new_fields.contains(&alt.field) {
            new_fields.push(alt.field);
        }
    }
    building.len() + new_fields.len() <= MAX_FIELDS
}

/// What `expr` needs; empty when nothing is known.
fn needs_of(expr: &Expr) -> Vec<Drawn> {
    match expr {
        Expr::Compare { field, test } => compare_needs(*field, test),
        Expr::And(terms) => terms.iter().flat_map(needs_of).collect(),
        Expr::Or(terms) => {
            // Whichever branch holds meets all its needs: a need made of
            // one need of each branch is met. Two branches (the set-uid
            // rules' real and effective ids) pair their two best needs;
            // then the k-th best of every branch (its last where it has
            // fewer) make one more, so that a branch's weaker needs still
            // count (`process.name in (shells)` and `process.args ==
            // "-c"` are met by every `sh -c`, the run that follows is not).
            let mut branches = Vec::with_capacity(terms.len());
            for term in terms {
                let mut needs = needs_of(term);
                if needs.is_empty() {
                    return Vec::new();
                }
                needs.sort_by_key(|need| std::cmp::Reverse(selectivity(need)));
                branches.push(needs);
            }
            let kept = if terms.len() == 2 { PAIRED_NEEDS } else { 1 };
            let mut merged = vec![Drawn::new()];
            for needs in &branches {
                merged = merged
                    .iter()
                    .flat_map(|so_far| {
                        needs
                            .iter()
                            .take(kept)
                            .map(move |need| [so_far.as_slice(), need].concat())
                    })
                    .collect();
            }
            let deepest = branches.iter().map(Vec::len).max().unwrap_or(0);
            for k in kept..deepest.min(MAX_OR_DEPTH) {
                merged.push(
                    branches
                        .iter()
                        .flat_map(|needs| needs[k.min(needs.len() - 1)].iter().cloned())
                        .collect(),
                );
            }
            merged
        }
        Expr::Not(_) | Expr::Function(_) | Expr::Const(_) => Vec::new(),
    }
}

/// How rarely a need is met, roughly: equalities over runs, longer runs
/// over shorter ones, inequalities last, judged by its weakest alternative.
fn selectivity(need: &Drawn) -> usize {
    need.iter()
        .map(|alt| match alt.hold {
            Hold::Equals => usize::MAX,
            Hold::Contains => alt.text.len(),
            Hold::Differs => 0,
        })
        .min()
        .unwrap_or(0)
}

/// What one value must be or contain for `test` to hold on it: a need of
/// alternatives (one per listed value or pattern); for a single pattern,
/// a need per literal run of it.
fn compare_needs(field: Field, test: &Test) -> Vec<Drawn> {
    let equal = |lit: &Literal, folded: bool| match lit {
        Literal::Keyword(s) => Some(Alternative {
            field,
            text: s.as_bytes().to_vec(),
            folded,
            hold: Hold::Equals,
        }),
        Literal::Long(_) | Literal::Boolean(_) => None,
    };
    let run = |text: &str, folded: bool| Alternative {
        field,
        text: text.as_bytes().to_vec(),
        folded,
        hold: Hold::Contains,
    };
    let needs: Vec<Drawn> = match test {
        Test::Equal(lit) => one_of(std::iter::once(equal(lit, false))),
        Test::In(list) => one_of(list.iter().map(|lit| equal(lit, false))),
        Test::InFolded(list) => one_of(list.iter().map(|lit| equal(lit, true))),
        Test::Wildcard(patterns) => match patterns.as_slice() {
            [one] => one
                .literal_runs()
                .map(|text| vec![run(text, one.is_case_insensitive())])
                .collect(),
            many => one_of(many.iter().map(|p| {
                let longest = p.literal_runs().max_by_key(|text| text.len())?;
                Some(run(longest, p.is_case_insensitive()))
            })),
        },
        Test::NotEqual(Literal::Keyword(s)) => vec![vec![Alternative {
            field,
            text: s.as_bytes().to_vec(),
            folded: false,
            hold: Hold::Differs,
        }]],
        Test::Regex(patterns) => match patterns.as_slice() {
            [one] => regex_needs(one)
                .into_iter()
                .map(|set| set.into_iter().map(|text| raw_run(field, text)).collect())
                .collect(),
            many => {
                let mut merged = Drawn::new();
                for pattern in many {
                    let Some(best) = regex_needs(pattern)
                        .into_iter()
                        .max_by_key(|set| set.iter().map(Vec::len).min())
                    else {
                        return Vec::new();
                    };
                    merged.extend(best.into_iter().map(|text| raw_run(field, text)));
                }
                vec![merged]
            }
        },
        Test::NotEqual(_) | Test::Range(..) | Test::IsNull | Test::NotNull => Vec::new(),
    };
    needs
        .into_iter()
        .filter(|need| !need.is_empty() && need.iter().all(usable))
        .collect()
}

/// Whether an alternative can stand in a need: a short run is in nearly
/// every value, but whitespace is rare in names and paths; a folded
/// non-ASCII literal may be met by text the ASCII folding misses; a folded
/// equality is looked up within a bound.
fn usable(alt: &Alternative) -> bool {
    let long_enough = match alt.hold {
        Hold::Equals => !alt.folded || alt.text.len() <= MAX_FOLDED,
        Hold::Differs => true,
        Hold::Contains => alt.text.len() >= MIN_RUN || alt.text.iter().all(u8::is_ascii_whitespace),
    };
    long_enough && (!alt.folded || alt.text.is_ascii())
}

/// The runs a regular expression cannot match without, as sets of texts.
fn regex_needs(pattern: &Regexp) -> Vec<Vec<Vec<u8>>> {
    regexp_runs::required(pattern.translated())
}

/// A run of a regular expression: its case is as the pattern spells it.
fn raw_run(field: Field, text: Vec<u8>) -> Alternative {
    Alternative {
        field,
        text,
        folded: false,
        hold: Hold::Contains,
    }
}

/// One need of these alternatives; none when one of them is no text.
fn one_of(alternatives: impl Iterator<Item = Option<Alternative>>) -> Vec<Drawn> {
    alternatives
        .collect::<Option<Drawn>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use regex_syntax::hir::{Class, Hir, HirKind};
    use serde_json::{Map, Value, json};

    use crate::rule::RuleSet;
    use crate::rule::eval::{Category, Expr, Literal, Order, Test};
    use crate::rule::json::JsonEvent;
    use crate::rule::live::constant;

    /// xorshift64: the same events on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }

        /// `text` with some letters in upper case, and some `k`s as the
        /// KELVIN SIGN, which Unicode lowercases to `k`.
        fn shout(&mut self, text: &str) -> String {
            text.chars()
                .map(|c| match c {
                    'k' if self.chance(30) => '\u{212A}',
                    c if self.chance(50) => c.to_ascii_uppercase(),
                    c => c,
                })
                .collect()
        }
    }

    /// A value for `test` to hold on, most of the time; sometimes one
    /// that misses by a character, so rules are tested near their edges.
    fn value_for(test: &Test, rng: &mut Rng) -> Option<Value> {
        let keyword = |lit: &Literal| match lit {
            Literal::Keyword(s) => Value::String(s.clone()),
            Literal::Long(n) => json!(n),
            Literal::Boolean(b) => json!(b),
        };
        let value = match test {
            Test::Equal(lit) => keyword(lit),
            Test::In(list) => keyword(&list[rng.below(list.len())]),
            Test::InFolded(list) => match &list[rng.below(list.len())] {
                Literal::Keyword(s) => Value::String(rng.shout(s)),
                other => keyword(other),
            },
            Test::Wildcard(patterns) => {
                let p = &patterns[rng.below(patterns.len())];
                let example = p.example(["x", "/tmp/a b", "-c", "ÄÖ", ""][rng.below(5)]);
                Value::String(if p.is_case_insensitive() {
                    rng.shout(&example)
                } else {
                    example
                })
            }
            Test::Range(order, Literal::Long(n)) => json!(match order {
                Order::Less => n - 1,
                Order::LessOrEqual | Order::GreaterOrEqual => *n,
                Order::Greater => n + 1,
            }),
            Test::NotNull => json!("x"),
            Test::NotEqual(Literal::Keyword(s)) => match rng.below(3) {
                0 => return None,
                1 => Value::String(s.clone()),
                _ => Value::String(format!("{s}1")),
            },
            Test::Regex(patterns) => {
                let p = &patterns[rng.below(patterns.len())];
                let hir = regex_syntax::ParserBuilder::new()
                    .utf8(false)
                    .build()
                    .parse(p.translated())
                    .expect("a compiled pattern parses");
                let mut example = Vec::new();
                regex_example(&hir, rng, &mut example);
                Value::String(String::from_utf8_lossy(&example).into_owned())
            }
            _ => return None,
        };
        Some(match value {
            Value::String(s) if rng.chance(15) && !s.is_empty() => {
                let mut s = s;
                let at = s
                    .char_indices()
                    .map(|(i, _)| i)
                    .nth(rng.below(s.chars().count()));
                if let Some(at) = at {
                    s.insert(at, 'q');
                }
                Value::String(s)
            }
            other => other,
        })
    }

    /// Some text `hir` matches, picked at random.
    fn regex_example(hir: &Hir, rng: &mut Rng, out: &mut Vec<u8>) {
        match hir.kind() {
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Literal(literal) => out.extend_from_slice(&literal.0),
            HirKind::Class(Class::Bytes(class)) => {
                let range = class.ranges()[rng.below(class.ranges().len())];
                let span = usize::from(range.end() - range.start()) + 1;
                out.push(range.start() + rng.below(span) as u8);
            }
            HirKind::Class(Class::Unicode(class)) => {
                let range = class.ranges()[rng.below(class.ranges().len())];
                let span = (u32::from(range.end()) - u32::from(range.start()) + 1) as usize;
                let c = char::from_u32(u32::from(range.start()) + rng.below(span) as u32)
                    .unwrap_or(range.start());
                out.extend_from_slice(c.to_string().as_bytes());
            }
            HirKind::Capture(capture) => regex_example(&capture.sub, rng, out),
            HirKind::Repetition(repetition) => {
                let most = repetition
                    .max
                    .unwrap_or(repetition.min + 3)
                    .min(repetition.min + 3);
                let times =
                    repetition.min as usize + rng.below((most - repetition.min) as usize + 1);
                for _ in 0..times {
                    regex_example(&repetition.sub, rng, out);
                }
            }
            HirKind::Concat(parts) => parts.iter().for_each(|p| regex_example(p, rng, out)),
            HirKind::Alternation(branches) => {
                regex_example(&branches[rng.below(branches.len())], rng, out)
            }
        }
    }

    /// Fields set so that `expr` likely holds: every term of an `and`, one
    /// branch of an `or`, nothing under a `not`; fields that are the same
    /// on every live event of the category (`host.os.type`) as they are
    /// there, as the prefilter assumes.
    fn satisfy(expr: &Expr, category: Category, rng: &mut Rng, doc: &mut Map<String, Value>) {
        match expr {
            Expr::And(terms) => terms.iter().for_each(|t| satisfy(t, category, rng, doc)),
            Expr::Or(terms) => satisfy(&terms[rng.below(terms.len())], category, rng, doc),
            Expr::Compare { field, .. } if constant(category, *field).is_some() => {
                let value = constant(category, *field).unwrap_or_default();
                let value = String::from_utf8_lossy(value).into_owned();
                doc.insert(field.path().to_owned(), Value::String(value));
            }
            Expr::Compare { field, test } => {
                if let Some(value) = value_for(test, rng) {
                    match doc.get_mut(field.path()) {
                        Some(Value::Array(values)) => values.push(value),
                        Some(old) => *old = json!([old.take(), value]),
                        None => {
                            doc.insert(field.path().to_owned(), value);
                        }
                    }
                }
            }
            Expr::Not(_) | Expr::Function(_) | Expr::Const(_) => {}
        }
    }

    fn corpus() -> RuleSet {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/testdata/elastic-rules"
        );
        assert!(
            std::path::Path::new(dir).is_dir(),
            "{dir} is missing: the corpus of Elastic's rules sits beside the repository"
        );
        crate::config::Config::parse(&format!("[rules]\ndirectories = [\"{dir}\"]\n"))
            .expect("config")
            .load_rules()
            .expect("the corpus loads")
    }

    /// The single-event rules of the corpus the prefilter admits for `doc`
    /// (a sequence is never a single event's candidate).
    fn admitted(set: &RuleSet, doc: &Value) -> Vec<String> {
        let mut found = super::Found::new();
        let mut event = JsonEvent::new(doc);
        (0..set.rules.len())
            .filter(|&i| set.rules[i].event_step().is_some())
            .filter(|&i| set.prefilter.admits(i, &mut event, &mut found))
            .map(|i| set.rules[i].source.clone())
            .collect()
    }

    /// Plain execs, by root and by a user, are evaluated by no rule of the
    /// corpus: not the set-uid rules (real and effective ids pair up), not
    /// the rules whose other branch is for Windows or macOS (decided at
    /// load), not the regex rules (their literal runs), not the rules on
    /// whitespace in names.
    #[test]
    fn plain_execs_are_admitted_by_no_rule_of_the_corpus() {
        let set = corpus();
        for (uid, exe, args) in [
            ("0", "/usr/bin/true", &["/bin/true"][..]),
            ("1000", "/usr/bin/ls", &["ls", "-la", "/tmp"][..]),
            (
                "0",
                "/usr/bin/cat",
                &["cat", "/etc/hosts", "/proc/1/smaps"][..],
            ),
            // A shell's `-c` meets the first needs of many branches for
            // shells; their later needs must still be looked at.
            ("1000", "/usr/bin/sh", &["sh", "-c", "make -j2 all"][..]),
        ] {
            let name = exe.rsplit('/').next().unwrap_or(exe);
            let doc = json!({
                "event.category": ["process"], "event.type": ["start"],
                "event.action": "exec", "host.os.type": "linux",
                "process.name": name, "process.executable": exe,
                "process.args": args, "process.args_count": args.len(),
                "process.command_line": args.join(" "),
                "process.working_directory": "/root",
                "process.parent.name": "bash", "process.parent.executable": "/usr/bin/bash",
                "process.parent.args": ["bash"], "process.parent.command_line": "bash",
                "user.id": uid, "user.name": "someone",
                "process.user.id": uid, "process.real_user.id": uid,
                "process.group.id": uid, "process.real_group.id": uid,
                "process.parent.user.id": uid, "process.parent.group.id": uid,
                "process.env_vars": ["PATH=/usr/bin:/bin", "HOME=/root"],
            });
            let admitted = admitted(&set, &doc);
            assert!(
                admitted.is_empty(),
                "{exe} by {uid} is admitted by {admitted:#?}"
            );
        }
    }

    /// Over Elastic's corpus and the shipped rules, with events built to
    /// match each rule (and near misses of them): the index and the
    /// prefilter skip only rules that do not match. Each rule's own events
    /// must match it often enough that the comparison means something.
    #[test]
    fn the_shortcuts_skip_only_rules_that_cannot_match() {
        let shortcut = corpus();
        let linear = RuleSet {
            index: Default::default(),
            prefilter: Default::default(),
            ..shortcut.clone()
        };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut events, mut own_hits, mut rules_hit) = (0, 0, 0);
        for (i, rule) in shortcut.rules.iter().enumerate() {
            let mut hit = false;
            for _ in 0..40 {
                let mut doc = Map::new();
                let Some(step) = rule.event_step() else {
                    continue;
                };
                doc.insert("event.category".into(), json!([step.category.as_str()]));
                satisfy(&step.condition, step.category, &mut rng, &mut doc);
                let doc = Value::Object(doc);
                let run = |set: &RuleSet| {
                    let mut hits = Vec::new();
                    set.evaluate(&mut JsonEvent::new(&doc), &mut |i| hits.push(i));
                    hits
                };
                let hits = run(&shortcut);
                assert_eq!(hits, run(&linear), "{}: {doc:#}", rule.source);
                events += 1;
                if hits.contains(&i) {
                    own_hits += 1;
                    hit = true;
                }
            }
            rules_hit += usize::from(hit);
        }
        assert!(
            rules_hit * 10 >= shortcut.rules.len() * 8,
            "only {rules_hit} of {} rules matched an event built for them ({own_hits} of {events} events)",
            shortcut.rules.len()
        );
    }
}
