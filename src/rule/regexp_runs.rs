//! What text a regular expression cannot match without: the literal runs
//! drawn from it at load, for the prefilter ([`super::prefilter`]).
//!
//! Contract: [`required`] takes a pattern as the `regex` crate compiles it
//! (from [`super::regexp::Regexp`]) and gives sets of runs: every match
//! contains one run of each set. A run is a sequence the pattern fixes
//! byte by byte, across small classes (`\.`, `(pid|lock)`, `[0-9]\.`: at
//! most [`MAX_ALTERNATIVES`] strings a set, so a class of ten digits
//! before a dot is ten runs, and `[a-z]` ends a run), ASCII-lowercased
//! (the prefilter folds ASCII case in every search, so a run can only
//! admit more). A pattern whose every part is optional gives no set; what
//! is drawn is never more than the pattern requires, only less.

use regex_syntax::hir::{Class, Hir, HirKind};

/// Strings one set holds, at most: beyond it a class or a product of
/// classes says too little to search for.
const MAX_ALTERNATIVES: usize = 16;

/// A set of alternative strings, lowercased, without duplicates.
type Set = Vec<Vec<u8>>;

/// The sets of runs every match of `pattern` contains one of each; empty
/// when nothing is known (or the pattern does not parse, which a pattern
/// the `regex` crate compiled always does).
pub fn required(pattern: &str) -> Vec<Set> {
    let Ok(hir) = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(pattern)
    else {
        return Vec::new();
    };
    let mut needs = factors(&hir).needs;
    needs.retain(|set| !set.is_empty() && set.iter().all(|run| !run.is_empty()));
    needs.sort();
    needs.dedup();
    needs
}

/// What is known of the strings one piece of the pattern matches.
#[derive(Default)]
struct Factors {
    /// It matches exactly these strings.
    exact: Option<Set>,
    /// Every match begins with one of these.
    prefix: Option<Set>,
    /// Every match ends with one of these.
    suffix: Option<Set>,
    /// Every match contains one string of each.
    needs: Vec<Set>,
}

impl Factors {
    fn exactly(set: Set) -> Factors {
        Factors {
            prefix: Some(set.clone()),
            suffix: Some(set.clone()),
            needs: vec![set.clone()],
            exact: Some(set),
        }
    }
}

fn factors(hir: &Hir) -> Factors {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Factors::exactly(vec![Vec::new()]),
        HirKind::Literal(literal) => Factors::exactly(vec![literal.0.to_ascii_lowercase()]),
        HirKind::Class(class) => members(class).map_or_else(Factors::default, Factors::exactly),
        HirKind::Capture(capture) => factors(&capture.sub),
        HirKind::Repetition(repetition) if repetition.min == 0 => Factors::default(),
        HirKind::Repetition(repetition) => {
            let once = factors(&repetition.sub);
            Factors {
                exact: once.exact.clone().filter(|_| repetition.max == Some(1)),
                ..once
            }
        }
        HirKind::Concat(parts) => concat(parts.iter().map(factors).collect()),
        HirKind::Alternation(branches) => alternation(branches.iter().map(factors).collect()),
    }
}

/// The class's members (UTF-8 encoded, ASCII-lowercased) when few.
fn members(class: &Class) -> Option<Set> {
    let mut set = Set::new();
    let mut add = |member: Vec<u8>| {
        let member = member.to_ascii_lowercase();
        if !set.contains(&member) {
            set.push(member);
        }
        set.len() <= MAX_ALTERNATIVES
    };
    // A folded letter counts twice before folding.
    let bound = 2 * MAX_ALTERNATIVES as u32;
    match class {
        Class::Bytes(bytes) => {
            let size: u32 = bytes
                .ranges()
                .iter()
                .map(|r| u32::from(r.end() - r.start()) + 1)
                .sum();
            (size <= bound).then_some(())?;
            for range in bytes.ranges() {
                for byte in range.start()..=range.end() {
                    add(vec![byte]).then_some(())?;
                }
            }
        }
        Class::Unicode(chars) => {
            let size: u32 = chars
                .ranges()
                .iter()
                .map(|r| u32::from(r.end()) - u32::from(r.start()) + 1)
                .sum();
            (size <= bound).then_some(())?;
            for c in chars.iter().flat_map(|r| r.start()..=r.end()) {
                add(c.to_string().into_bytes()).then_some(())?;
            }
        }
    }
    Some(set)
}

/// Every string of `a` followed by every string of `b`, when few.
fn product(a: &Set, b: &Set) -> Option<Set> {
    if a.len() * b.len() > MAX_ALTERNATIVES {
        return None;
    }
    let mut out = Set::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            let joined = [x.as_slice(), y.as_slice()].concat();
            if !out.contains(&joined) {
                out.push(joined);
            }
        }
    }
    Some(out)
}

fn union(sets: impl Iterator<Item = Option<Set>>) -> Option<Set> {
    let mut out = Set::new();
    for set in sets {
        for s in set? {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    (out.len() <= MAX_ALTERNATIVES).then_some(out)
}

/// Parts in a row: runs join across the parts the pattern fixes, and a
/// run ends at a part that varies, joined to what that part begins with.
fn concat(parts: Vec<Factors>) -> Factors {
    let mut needs = Vec::new();
    // What the text just before the current part is fixed to end with.
    let mut run: Set = vec![Vec::new()];
    let mut exact: Option<Set> = Some(vec![Vec::new()]);
    for part in &parts {
        needs.extend(part.needs.iter().cloned());
        exact = match (&exact, &part.exact) {
            (Some(fixed), Some(more)) => product(fixed, more),
            _ => None,
        };
        run = match &part.exact {
            Some(more) => product(&run, more).unwrap_or_else(|| {
                needs.push(run.clone());
                more.clone()
            }),
            None => {
                let joined = part
                    .prefix
                    .as_ref()
                    .and_then(|begins| product(&run, begins));
                needs.push(joined.unwrap_or_else(|| run.clone()));
                part.suffix.clone().unwrap_or_else(|| vec![Vec::new()])
            }
        };
    }
    needs.push(run);
    match exact {
        Some(set) => Factors::exactly(set),
        None => Factors {
            exact: None,
            prefix: prefix_of(&parts),
            suffix: suffix_of(&parts),
            needs,
        },
    }
}

/// What a row of parts begins with: the fixed parts at its start, then
/// what the first varying part begins with.
fn prefix_of(parts: &[Factors]) -> Option<Set> {
    let mut head: Set = vec![Vec::new()];
    for part in parts {
        match (&part.exact, &part.prefix) {
            (Some(fixed), _) => head = product(&head, fixed)?,
            (None, Some(begins)) => return product(&head, begins).or(Some(head)),
            (None, None) => return Some(head),
        }
    }
    Some(head)
}

/// What a row of parts ends with: the fixed parts at its end, after what
/// the last varying part ends with.
fn suffix_of(parts: &[Factors]) -> Option<Set> {
    let mut tail: Set = vec![Vec::new()];
    for part in parts.iter().rev() {
        match (&part.exact, &part.suffix) {
            (Some(fixed), _) => tail = product(fixed, &tail)?,
            (None, Some(ends)) => return product(ends, &tail).or(Some(tail)),
            (None, None) => return Some(tail),
        }
    }
    Some(tail)
}

/// Branches: what they all fix, and for a need, one of each branch's.
fn alternation(branches: Vec<Factors>) -> Factors {
    if let Some(set) = union(branches.iter().map(|b| b.exact.clone())) {
        return Factors::exactly(set);
    }
    let best = |b: &Factors| {
        b.needs
            .iter()
            .filter(|set| set.iter().all(|s| !s.is_empty()))
            .max_by_key(|set| set.iter().map(Vec::len).min())
            .cloned()
    };
    Factors {
        exact: None,
        prefix: union(branches.iter().map(|b| b.prefix.clone())),
        suffix: union(branches.iter().map(|b| b.suffix.clone())),
        needs: union(branches.iter().map(best)).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::required;
    use crate::rule::regexp::Regexp;

    fn runs(pattern: &str, folded: bool) -> Vec<Vec<String>> {
        let regexp = Regexp::compile(pattern, folded).expect("compiles");
        required(regexp.translated())
            .into_iter()
            .map(|set| {
                set.into_iter()
                    .map(|s| String::from_utf8_lossy(&s).into_owned())
                    .collect()
            })
            .collect()
    }

    fn has(found: &[Vec<String>], set: &[&str]) -> bool {
        found.iter().any(|s| {
            let mut s = s.clone();
            s.sort();
            let mut want: Vec<String> = set.iter().map(|x| (*x).to_owned()).collect();
            want.sort();
            s == want
        })
    }

    #[test]
    fn literal_text_is_required() {
        let found = runs(r"/var/run/\w+\.(pid|lock|reboot)", true);
        assert!(has(&found, &["/var/run/"]), "{found:?}");
        assert!(has(&found, &[".pid", ".lock", ".reboot"]), "{found:?}");
    }

    #[test]
    fn small_classes_join_runs() {
        let found = runs(r".*[0-9]{1,3}\.[0-9]{1,3}:[0-9]+.*", false);
        let digit_dot: Vec<String> = (0..10).map(|d| format!("{d}.")).collect();
        let digit_dot: Vec<&str> = digit_dot.iter().map(String::as_str).collect();
        assert!(has(&found, &digit_dot), "{found:?}");
    }

    #[test]
    fn whitespace_after_a_wide_class_is_required() {
        let found = runs(r"/[a-z0-9\s_\-\\./]+\s", true);
        assert!(has(&found, &[" ", "\t", "\n", "\r"]), "{found:?}");
    }

    #[test]
    fn optional_parts_require_nothing() {
        assert!(runs(".*", false).is_empty());
        assert!(runs("(abc)?", false).is_empty());
        assert!(runs("(abc|.*)", false).is_empty());
        assert!(runs("[a-z]+", false).is_empty());
    }

    #[test]
    fn alternatives_need_one_of_each_branch() {
        let found = runs(".*(curl|wget.*-O).*", false);
        assert!(has(&found, &["curl", "wget"]), "{found:?}");
    }

    /// Whatever is drawn, every matching value contains one run of each
    /// set (ASCII case aside): checked on values the patterns match.
    #[test]
    fn every_match_contains_a_run_of_each_set() {
        let cases: &[(&str, bool, &[&str])] = &[
            (
                r"/var/run/\w+\.(pid|lock|reboot)",
                true,
                &["/VAR/run/x.Lock", "/var/run/a_1.reboot"],
            ),
            (
                r".*[0-9]{1,3}\.[0-9]{1,3}:[0-9]+.*",
                false,
                &["ssh -L 10.0:22 x", "1.2:3"],
            ),
            (r"/[a-z0-9\s_\-\\./]+\s", true, &["/usr/bin/ls ", "/a\t"]),
            (r"(a|bc)d?(ef)+g", false, &["aefg", "bcdefefg"]),
            (r"x{2,3}y", false, &["xxy", "xxxy"]),
        ];
        for (pattern, folded, values) in cases {
            let regexp = Regexp::compile(pattern, *folded).expect("compiles");
            for value in *values {
                assert!(regexp.is_match(value.as_bytes()), "{pattern} on {value}");
                let lower = value.to_ascii_lowercase();
                for set in required(regexp.translated()) {
                    assert!(
                        set.iter().any(|run| lower
                            .as_bytes()
                            .windows(run.len())
                            .any(|w| w == run.as_slice())),
                        "{pattern} matched {value:?}, which has none of {set:?}"
                    );
                }
            }
        }
    }
}
