//! Rules indexed by the process name they need, so an exec event is tested
//! only against rules that could match it, whatever the number of rules.
//!
//! Contract: a `process` rule whose query can hold only when
//! `process.name` satisfies one of a set of tests (an `==`, `in`, `in~`,
//! `:`, `like` or `regex` of that field in the rule's every `or` branch, or
//! in one term of an `and`) is filed under those tests: exact names in a
//! hash map, case-insensitive names (ASCII) in another, and tests with a
//! regex in a list tried one by one. Every other rule (file rules, rules
//! without such a test, and those with wildcard patterns among their
//! tests, whose runs [`super::prefilter`] searches all in one pass) is a
//! candidate for every event.
//! [`RuleIndex::candidates`] gives the candidates in rule order, each once,
//! without allocating. The index only skips rules: a candidate is then
//! evaluated in full. A name with non-ASCII bytes makes every
//! case-insensitive rule a candidate (Unicode folding can map such a name
//! onto an ASCII one).

use rustc_hash::FxHashMap;

use super::Rule;
use super::eval::{Category, Expr, Literal, Test};
use super::field::Field;
use super::regexp::Regexp;
use super::wildcard::Wildcard;

/// A test on `process.name` a rule needs to pass.
#[derive(Clone, Debug)]
enum NameTest {
    Exact(Vec<u8>),
    /// Lowercased, ASCII.
    Folded(String),
    Pattern(Wildcard),
    Regex(Regexp),
}

impl NameTest {
    fn matches(&self, name: &[u8]) -> bool {
        match self {
            NameTest::Exact(n) => n == name,
            NameTest::Folded(n) => super::wildcard::eq_folded(name, n),
            NameTest::Pattern(p) => p.matches(name),
            NameTest::Regex(r) => r.is_match(name),
        }
    }
}

/// Rules picked per pass: a bitset of this many on the stack orders the
/// candidates of all lists at once, whatever their number.
const WINDOW: usize = 1024;

/// Longest name a case-insensitive lookup lowercases on the stack
/// (`NAME_MAX`: `process.name` is a file name or a comm).
pub const MAX_NAME: usize = 255;

#[derive(Clone, Debug, Default)]
pub struct RuleIndex {
    exact: FxHashMap<Vec<u8>, Vec<usize>>,
    folded: FxHashMap<Vec<u8>, Vec<usize>>,
    /// Every rule filed under `folded`, for names that are not ASCII.
    all_folded: Vec<usize>,
    /// Rules with a wildcard or regex among their tests, with all of them.
    tried: Vec<(usize, Vec<NameTest>)>,
    always: Vec<usize>,
    rule_count: usize,
}

impl RuleIndex {
    pub fn build(rules: &[Rule]) -> RuleIndex {
        let mut index = RuleIndex {
            rule_count: rules.len(),
            ..RuleIndex::default()
        };
        for (i, rule) in rules.iter().enumerate() {
            let tests = match rule.event_step() {
                Some(step) if step.category == Category::Process => name_tests(&step.condition),
                Some(_) => None,
                // A sequence is never a single event's candidate.
                None => continue,
            };
            match tests {
                None => index.always.push(i),
                Some(tests) if tests.iter().all(|t| matches!(t, NameTest::Exact(_))) => {
                    for test in tests {
                        if let NameTest::Exact(name) = test {
                            push_once(index.exact.entry(name).or_default(), i);
                        }
                    }
                }
                Some(tests) if tests.iter().all(|t| matches!(t, NameTest::Folded(_))) => {
                    for test in tests {
                        if let NameTest::Folded(name) = test {
                            push_once(index.folded.entry(name.into_bytes()).or_default(), i);
                        }
                    }
                    index.all_folded.push(i);
                }
                // Wildcard patterns are left to the prefilter, which
                // searches all their runs in one pass.
                Some(tests) if tests.iter().any(|t| matches!(t, NameTest::Regex(_))) => {
                    index.tried.push((i, tests))
                }
                Some(_) => index.always.push(i),
            }
        }
        index
    }

    /// Whether the index was built for `count` rules.
    pub fn covers(&self, count: usize) -> bool {
        self.rule_count == count
    }

    /// Calls `candidate` with the index of each rule that may match an
    /// event of `category` whose `process.name` is `name`, in rule order.
    pub fn candidates(
        &self,
        category: Category,
        name: Option<&[u8]>,
        candidate: &mut dyn FnMut(usize),
    ) {
        if category != Category::Process {
            for &i in &self.always {
                candidate(i);
            }
            return;
        }
        let empty: &[usize] = &[];
        let exact = name
            .and_then(|n| self.exact.get(n))
            .map_or(empty, Vec::as_slice);
        let mut lower = [0u8; MAX_NAME];
        let folded = match name {
            Some(n) if n.is_ascii() && n.len() <= MAX_NAME => {
                let lower = &mut lower[..n.len()];
                lower.copy_from_slice(n);
                lower.make_ascii_lowercase();
                self.folded.get(&*lower).map_or(empty, Vec::as_slice)
            }
            Some(_) => &self.all_folded,
            None => empty,
        };
        let tried = name.map_or(&[][..], |_| self.tried.as_slice());
        let mut cursors = [0usize; 4];
        let mut window = 0;
        while window < self.rule_count {
            let end = window + WINDOW;
            let mut picked = [0u64; WINDOW / 64];
            let mut pick = |i: usize| picked[(i - window) / 64] |= 1 << ((i - window) % 64);
            for (list, cursor) in [exact, folded, &self.always].into_iter().zip(&mut cursors) {
                while let Some(&i) = list.get(*cursor).filter(|i| **i < end) {
                    pick(i);
                    *cursor += 1;
                }
            }
            while let Some((i, tests)) = tried.get(cursors[3]).filter(|(i, _)| *i < end) {
                if name.is_some_and(|n| tests.iter().any(|t| t.matches(n))) {
                    pick(*i);
                }
                cursors[3] += 1;
            }
            for (word_index, mut word) in picked.into_iter().enumerate() {
                while word != 0 {
                    candidate(window + word_index * 64 + word.trailing_zeros() as usize);
                    word &= word - 1;
                }
            }
            window = end;
        }
    }
}

fn push_once(list: &mut Vec<usize>, i: usize) {
    if list.last() != Some(&i) {
        list.push(i);
    }
}

/// Tests on `process.name` of which one must pass for `expr` to hold;
/// `None` when no such set is known.
fn name_tests(expr: &Expr) -> Option<Vec<NameTest>> {
    match expr {
        Expr::Compare {
            field: Field::ProcessName,
            test,
        } => compare_tests(test),
        Expr::And(terms) => terms.iter().filter_map(name_tests).min_by_key(|tests| {
            tests
                .iter()
                .any(|t| !matches!(t, NameTest::Exact(_) | NameTest::Folded(_)))
        }),
        Expr::Or(terms) => {
            let mut all = Vec::new();
            for term in terms {
                all.extend(name_tests(term)?);
            }
            Some(all)
        }
        // Never true: no event is a candidate.
        Expr::Const(false) => Some(Vec::new()),
        _ => None,
    }
}

fn compare_tests(test: &Test) -> Option<Vec<NameTest>> {
    let keywords = |list: &[Literal]| -> Vec<Vec<u8>> {
        list.iter()
            .filter_map(|lit| match lit {
                Literal::Keyword(s) => Some(s.as_bytes().to_vec()),
                _ => None,
            })
            .collect()
    };
    let folded = |name: Vec<u8>| {
        let name = String::from_utf8_lossy(&name).into_owned();
        // Non-ASCII literals fold in ways an ASCII lookup cannot see.
        if name.is_ascii() {
            NameTest::Folded(name)
        } else {
            NameTest::Pattern(Wildcard::insensitive(&name))
        }
    };
    Some(match test {
        Test::Equal(lit) => keywords(std::slice::from_ref(lit))
            .into_iter()
            .map(NameTest::Exact)
            .collect(),
        Test::In(list) => keywords(list).into_iter().map(NameTest::Exact).collect(),
        Test::InFolded(list) => keywords(list).into_iter().map(folded).collect(),
        Test::Wildcard(patterns) => patterns
            .iter()
            .map(|p| match p.as_literal() {
                Some((lit, false)) => NameTest::Exact(lit.as_bytes().to_vec()),
                Some((lit, true)) => folded(lit.as_bytes().to_vec()),
                None => NameTest::Pattern(p.clone()),
            })
            .collect(),
        Test::Regex(patterns) => patterns.iter().cloned().map(NameTest::Regex).collect(),
        Test::NotEqual(_) | Test::Range(..) | Test::IsNull | Test::NotNull => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::rule::file::parse_rule;
    use crate::rule::json::JsonEvent;
    use crate::rule::{Rule, RuleSet};
    use serde_json::json;

    fn rule(id: &str, query: &str) -> Rule {
        let text = format!(
            "[rule]\nname = \"{id}\"\nrule_id = \"{id}\"\ndescription = \"d\"\nseverity = \"low\"\nrisk_score = 1\ntype = \"eql\"\nquery = '''{query}'''\n"
        );
        parse_rule(&text, id).expect("rule loads")
    }

    /// Indexed and linear evaluation agree on every event.
    #[test]
    fn the_index_skips_only_rules_that_cannot_match() {
        let queries = [
            r#"process where process.name == "cat" and process.args == "x""#,
            r#"process where process.name in~ ("CURL", "wget") and process.args == "x""#,
            r#"process where process.name : ("nc", "python*") and process.args == "x""#,
            r#"process where process.name regex~ "php[0-9]?" and process.args == "x""#,
            r#"process where (process.name == "a" or process.name like~ "B*") and process.args == "x""#,
            r#"process where process.name != "cat" and process.args == "x""#,
            r#"process where process.args == "x""#,
            r#"process where process.name == "kill" and process.args == "x""#,
            r#"process where process.name : "kill" and process.args == "x""#,
            r#"file where process.name == "cat" and process.args == "x""#,
            r#"process where process.name == "zz1" or process.args == "x""#,
        ];
        let rules: Vec<Rule> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| rule(&format!("r{i}"), q))
            .collect();
        let mut indexed = RuleSet::from_rule(rules[0].clone());
        indexed.rules = rules.clone();
        indexed.index = super::RuleIndex::build(&rules);
        let mut linear = indexed.clone();
        linear.index = super::RuleIndex::default();
        let names = [
            json!("cat"),
            json!("CAT"),
            json!("curl"),
            json!("Curl"),
            json!("wget"),
            json!("nc"),
            json!("python3"),
            json!("PHP7"),
            json!("php"),
            json!("a"),
            json!("b1"),
            json!("kill"),
            // KELVIN SIGN: folds to `k` under Unicode lowercase.
            json!("\u{212A}ill"),
            json!(["zz", "cat"]),
            json!(null),
            json!("x".repeat(300)),
        ];
        let mut hits_seen = 0;
        for name in names {
            for category in ["process", "file"] {
                let doc = json!({"event": {"category": [category]}, "process": {"name": name, "args": ["x"]}});
                let run = |set: &RuleSet| {
                    let mut hits = Vec::new();
                    set.evaluate(&mut JsonEvent::new(&doc), &mut |i| hits.push(i));
                    hits
                };
                let hits = run(&indexed);
                hits_seen += hits.len();
                assert_eq!(hits, run(&linear), "{doc}");
            }
        }
        assert!(hits_seen > 20, "{hits_seen}");
        assert!(indexed.index.exact.contains_key(b"cat".as_slice()));
        assert_eq!(indexed.index.always, vec![2, 4, 5, 6, 9, 10]);
    }
}
