//! Text matching for rules: exact, case-insensitive, and wildcard (`*` any run
//! of characters including `/`, `?` exactly one character, whole value).
//!
//! Contract: patterns are compiled once, at rule load; matching never
//! allocates and is O(pattern × value) at worst (one backtrack point, no
//! exponential blow-up). Case-insensitive comparisons fold with Unicode
//! lowercase mappings, as Elasticsearch does; ASCII takes a fast path. Values
//! are bytes: a byte that is not part of valid UTF-8 is one character and
//! only matches `?`, `*` or itself (case-sensitive mode).

/// Case-insensitive equality of `value` with `lower`, a lowercased literal.
pub fn eq_folded(value: &[u8], lower: &str) -> bool {
    prefix_folded(value, lower) == Some(value.len())
}

/// When `value` starts with `lower` (case-insensitively), the number of
/// bytes of `value` it covers.
fn prefix_folded(value: &[u8], lower: &str) -> Option<usize> {
    let mut lit = lower.chars();
    let mut pending = lit.next();
    let mut used = 0;
    while let Some(want) = pending {
        let rest = &value[used..];
        let first = *rest.first()?;
        if first.is_ascii() {
            if first.to_ascii_lowercase() as u32 != want as u32 {
                return None;
            }
            used += 1;
            pending = lit.next();
            continue;
        }
        let (c, width) = decode_char(rest)?;
        for folded in c.to_lowercase() {
            if pending != Some(folded) {
                return None;
            }
            pending = lit.next();
        }
        used += width;
    }
    Some(used)
}

/// The UTF-8 character at the start of `bytes` and its width; `None` for an
/// invalid sequence.
fn decode_char(bytes: &[u8]) -> Option<(char, usize)> {
    let width = match bytes.first()? {
        b if *b < 0x80 => 1,
        b if b & 0xe0 == 0xc0 => 2,
        b if b & 0xf0 == 0xe0 => 3,
        b if b & 0xf8 == 0xf0 => 4,
        _ => return None,
    };
    let s = std::str::from_utf8(bytes.get(..width)?).ok()?;
    s.chars().next().map(|c| (c, width))
}

/// Width of one character at the start of `bytes` (1 for an invalid byte).
fn char_width(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(b) if b.is_ascii() => 1,
        _ => decode_char(bytes).map_or(1, |(_, w)| w),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// Lowercased when the pattern is case-insensitive.
    Literal(String),
    AnyOne,
    AnyRun,
}

/// A compiled wildcard pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wildcard {
    tokens: Vec<Token>,
    case_insensitive: bool,
}

impl Wildcard {
    /// `:` and `like~` patterns.
    pub fn insensitive(pattern: &str) -> Self {
        Self::compile(pattern, true)
    }

    /// `like` patterns.
    pub fn sensitive(pattern: &str) -> Self {
        Self::compile(pattern, false)
    }

    /// Values that start with `text` (taken literally: `*` and `?` are
    /// characters), or contain it: Elasticsearch's `prefix` query and its
    /// `wildcard` query `*text*`.
    pub fn literal_in(text: &str, case_insensitive: bool, contained: bool) -> Self {
        let literal = if case_insensitive {
            text.chars().flat_map(char::to_lowercase).collect()
        } else {
            text.to_owned()
        };
        let mut tokens = Vec::with_capacity(3);
        if contained {
            tokens.push(Token::AnyRun);
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        tokens.push(Token::AnyRun);
        Wildcard {
            tokens,
            case_insensitive,
        }
    }

    fn compile(pattern: &str, case_insensitive: bool) -> Self {
        let mut tokens: Vec<Token> = Vec::new();
        for c in pattern.chars() {
            match c {
                '*' if tokens.last() == Some(&Token::AnyRun) => {}
                '*' => tokens.push(Token::AnyRun),
                '?' => tokens.push(Token::AnyOne),
                c => {
                    if !matches!(tokens.last(), Some(Token::Literal(_))) {
                        tokens.push(Token::Literal(String::new()));
                    }
                    if let Some(Token::Literal(lit)) = tokens.last_mut() {
                        if case_insensitive {
                            lit.extend(c.to_lowercase());
                        } else {
                            lit.push(c);
                        }
                    }
                }
            }
        }
        Wildcard {
            tokens,
            case_insensitive,
        }
    }

    /// The one literal a pattern without `*` or `?` is (lowercased when
    /// case-insensitive), and whether it is case-insensitive.
    pub fn as_literal(&self) -> Option<(&str, bool)> {
        match self.tokens.as_slice() {
            [Token::Literal(lit)] => Some((lit, self.case_insensitive)),
            [] => Some(("", self.case_insensitive)),
            _ => None,
        }
    }

    /// The runs of literal characters every matching value contains
    /// (lowercased when case-insensitive).
    pub fn literal_runs(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().filter_map(|t| match t {
            Token::Literal(lit) => Some(lit.as_str()),
            Token::AnyOne | Token::AnyRun => None,
        })
    }

    pub fn is_case_insensitive(&self) -> bool {
        self.case_insensitive
    }

    /// A value the pattern matches: `*` and `?` filled with `fill`'s
    /// characters (for tests that need positives).
    #[cfg(test)]
    pub fn example(&self, fill: &str) -> String {
        let mut fill = fill.chars().cycle();
        self.tokens
            .iter()
            .map(|t| match t {
                Token::Literal(lit) => lit.clone(),
                Token::AnyOne => fill.next().map(String::from).unwrap_or_default(),
                Token::AnyRun => fill.next().map(String::from).unwrap_or_default(),
            })
            .collect()
    }

    /// Whole-value match.
    pub fn matches(&self, value: &[u8]) -> bool {
        let (mut t, mut v) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        // In ASCII, no other byte folds onto an ASCII letter: a `*` can
        // skip to the next byte that can start the literal after it.
        let ascii = value.is_ascii();
        loop {
            if t < self.tokens.len() {
                match &self.tokens[t] {
                    Token::AnyRun => {
                        star = Some((t, v));
                        t += 1;
                        continue;
                    }
                    Token::AnyOne if v < value.len() => {
                        v += char_width(&value[v..]);
                        t += 1;
                        continue;
                    }
                    Token::Literal(lit) => {
                        if let Some(used) = self.literal_at(&value[v..], lit) {
                            v += used;
                            t += 1;
                            continue;
                        }
                    }
                    Token::AnyOne => {}
                }
            } else if v == value.len() {
                return true;
            }
            // Mismatch: let the last `*` take one more character.
            match star {
                Some((star_t, star_v)) if star_v < value.len() => {
                    let mut next = star_v + char_width(&value[star_v..]);
                    if ascii {
                        match self.next_start(star_t + 1, &value[next..]) {
                            Some(skip) => next += skip,
                            None => return false,
                        }
                    }
                    star = Some((star_t, next));
                    t = star_t + 1;
                    v = next;
                }
                _ => return false,
            }
        }
    }

    /// In an ASCII `rest`, the offset of the first byte where token `t`
    /// (after a `*`) can start; `None` when it can start nowhere.
    fn next_start(&self, t: usize, rest: &[u8]) -> Option<usize> {
        let first = match self.tokens.get(t) {
            Some(Token::Literal(lit)) => *lit.as_bytes().first()?,
            _ => return Some(0),
        };
        if !first.is_ascii() {
            // A non-ASCII literal never matches ASCII bytes.
            return None;
        }
        if self.case_insensitive {
            memchr::memchr2(first, first.to_ascii_uppercase(), rest)
        } else {
            memchr::memchr(first, rest)
        }
    }

    fn literal_at(&self, value: &[u8], lit: &str) -> Option<usize> {
        if self.case_insensitive {
            prefix_folded(value, lit)
        } else {
            value.starts_with(lit.as_bytes()).then_some(lit.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, value: &[u8]) -> bool {
        Wildcard::insensitive(pattern).matches(value)
    }

    #[test]
    fn seed_pattern_semantics_from_design() {
        let p = "/proc/*/maps";
        for yes in [
            "/proc/self/maps",
            "/proc/1/task/1/maps",
            "/proc//1/maps",
            "/PROC/1/MAPS",
            "/proc/1234/maps",
        ] {
            assert!(m(p, yes.as_bytes()), "{yes} should match");
        }
        for no in [
            "/proc/1/smaps",
            "/proc/1/numa_maps",
            "//proc/1/maps",
            "--file=/proc/1/maps",
            "/proc/1/maps2",
            "/proc/maps",
        ] {
            assert!(!m(p, no.as_bytes()), "{no} should not match");
        }
    }

    #[test]
    fn question_mark_is_exactly_one_character() {
        assert!(m("a?c", b"abc"));
        assert!(!m("a?c", b"ac"));
        assert!(!m("a?c", b"abbc"));
        assert!(m("a?c", "aéc".as_bytes()));
        assert!(m("a?c", b"a\xffc"));
    }

    #[test]
    fn star_edge_cases() {
        assert!(m("*", b""));
        assert!(m("*", b"anything/at/all"));
        assert!(m("**a**", b"xxa"));
        assert!(!m("", b"x"));
        assert!(m("", b""));
        assert!(m("*a*b*c", b"xaxbxc"));
        assert!(!m("*a*b*c", b"xaxbxcx"));
    }

    #[test]
    fn unicode_case_folding() {
        assert!(m("ÉTÉ*", "été.txt".as_bytes()));
        assert!(eq_folded("ΣΟΦΙΑ".as_bytes(), "σοφια"));
        assert!(eq_folded("KELVIN\u{212a}".as_bytes(), "kelvink"));
        assert!(!eq_folded(b"cat\xff", "cat"));
        assert!(!eq_folded(b"ca", "cat"));
    }

    #[test]
    fn sensitive_patterns_keep_case() {
        let like = Wildcard::sensitive("/proc/*/maps");
        assert!(like.matches(b"/proc/1/maps"));
        assert!(!like.matches(b"/PROC/1/MAPS"));
    }

    #[test]
    fn pathological_pattern_finishes() {
        let value = vec![b'a'; 10_000];
        assert!(!m("*a*a*a*a*a*a*a*a*b", &value));
    }
}
