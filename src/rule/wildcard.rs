//! EQL's `:` wildcard match: `*` is any run of bytes (including `/`), `?` is
//! one character, the whole value must match, case-insensitively.
//!
//! Contract: a pattern is compiled once ([`Wildcard::new`]); matching never
//! allocates and runs in O(pattern × value) worst case, with no backtracking
//! blow-up. Case folding is ASCII; bytes outside ASCII compare exactly, and a
//! `?` matches one whole UTF-8 character (or one byte where the value is not
//! valid UTF-8).

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(Vec<u8>),
    AnyOne,
    AnyRun,
}

/// A compiled, case-insensitive wildcard pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wildcard {
    tokens: Vec<Token>,
}

impl Wildcard {
    pub fn new(pattern: &[u8]) -> Self {
        let mut tokens: Vec<Token> = Vec::new();
        for &b in pattern {
            match b {
                b'*' => {
                    if tokens.last() != Some(&Token::AnyRun) {
                        tokens.push(Token::AnyRun);
                    }
                }
                b'?' => tokens.push(Token::AnyOne),
                _ => match tokens.last_mut() {
                    Some(Token::Literal(lit)) => lit.push(b.to_ascii_lowercase()),
                    _ => tokens.push(Token::Literal(vec![b.to_ascii_lowercase()])),
                },
            }
        }
        Wildcard { tokens }
    }

    /// Whole-value, case-insensitive match.
    pub fn matches(&self, value: &[u8]) -> bool {
        match_tokens(&self.tokens, value)
    }
}

fn starts_with_folded(value: &[u8], lit: &[u8]) -> bool {
    value.len() >= lit.len()
        && value
            .iter()
            .zip(lit)
            .all(|(v, l)| v.to_ascii_lowercase() == *l)
}

/// Length of the character at the start of `value`: a UTF-8 sequence when
/// well-formed, else one byte.
fn char_len(value: &[u8]) -> usize {
    let width = match value.first() {
        Some(b) if *b < 0x80 => 1,
        Some(b) if b & 0xe0 == 0xc0 => 2,
        Some(b) if b & 0xf0 == 0xe0 => 3,
        Some(b) if b & 0xf8 == 0xf0 => 4,
        _ => 1,
    };
    if width > 1 && value.len() >= width && std::str::from_utf8(&value[..width]).is_ok() {
        width
    } else {
        1
    }
}

/// Greedy matching with a single backtrack point at the last `*`: linear in
/// practice, O(n·m) at worst.
fn match_tokens(tokens: &[Token], value: &[u8]) -> bool {
    let (mut t, mut v) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if t < tokens.len() {
            match &tokens[t] {
                Token::AnyRun => {
                    star = Some((t, v));
                    t += 1;
                    continue;
                }
                Token::AnyOne if v < value.len() => {
                    v += char_len(&value[v..]);
                    t += 1;
                    continue;
                }
                Token::Literal(lit) if starts_with_folded(&value[v..], lit) => {
                    v += lit.len();
                    t += 1;
                    continue;
                }
                _ => {}
            }
        } else if v == value.len() {
            return true;
        }
        // Mismatch: let the last `*` swallow one more character.
        match star {
            Some((star_t, star_v)) if star_v < value.len() => {
                let next_v = star_v + char_len(&value[star_v..]);
                star = Some((star_t, next_v));
                t = star_t + 1;
                v = next_v;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, value: &[u8]) -> bool {
        Wildcard::new(pattern.as_bytes()).matches(value)
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
    fn pathological_pattern_is_fast_enough_to_finish() {
        let value = vec![b'a'; 10_000];
        assert!(!m("*a*a*a*a*a*a*a*a*b", &value));
    }
}
