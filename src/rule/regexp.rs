//! `regex` and `regex~`: Elasticsearch's regular expression syntax (Lucene's
//! `RegExp` with all optional operators, as the `regexp` query parses it),
//! compiled at load to a linear-time matcher (the `regex` crate).
//!
//! Contract: a pattern matches a whole value (Lucene patterns are always
//! anchored). Supported: `.`, `?`, `*`, `+`, `{n}`, `{n,}`, `{n,m}`, `|`,
//! `( )`, `[...]` and `[^...]` with ranges, `"quoted strings"`, `\`
//! escapes, `\d \D \s \S \w \W` (ASCII classes, as Lucene defines them),
//! `@` (any string) and `#` (the empty language). Lucene's intersection
//! (`&`), complement (`~`) and `<n-m>` intervals have no linear-time
//! equivalent here and are load errors naming the operator and its offset,
//! as is anything Lucene itself refuses. `regex~` folds ASCII letters of
//! literal characters and strings only, not ranges, as Lucene's
//! `ASCII_CASE_INSENSITIVE` does. `.` and negated classes also match one byte
//! of invalid UTF-8, so attacker-made bytes cannot break a `.*` (where
//! Elasticsearch would have matched a replacement character).

use std::fmt::Write as _;

/// A compiled pattern.
#[derive(Clone, Debug)]
pub struct Regexp {
    source: String,
    matcher: regex::bytes::Regex,
}

impl Regexp {
    /// Compiles `pattern`; an error gives the character offset in the pattern.
    pub fn compile(pattern: &str, case_insensitive: bool) -> Result<Regexp, (usize, String)> {
        let mut translator = Translator {
            chars: pattern.chars().collect(),
            pos: 0,
            fold: case_insensitive,
            out: String::with_capacity(pattern.len() * 4 + 8),
        };
        translator.out.push_str(r"\A(?:");
        translator.union()?;
        if translator.pos < translator.chars.len() {
            return Err((
                translator.pos,
                format!(
                    "unexpected `{}` in the regular expression",
                    translator.chars[translator.pos]
                ),
            ));
        }
        translator.out.push_str(r")\z");
        let matcher = regex::bytes::RegexBuilder::new(&translator.out)
            .build()
            .map_err(|e| (0, format!("regular expression too large or invalid: {e}")))?;
        Ok(Regexp {
            source: pattern.to_owned(),
            matcher,
        })
    }

    pub fn is_match(&self, value: &[u8]) -> bool {
        self.matcher.is_match(value)
    }

    /// The pattern as the `regex` crate compiled it.
    pub fn translated(&self) -> &str {
        self.matcher.as_str()
    }

    /// The pattern as written in the rule.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Any one character, or one byte that is not UTF-8.
const ANY: &str = r"(?:(?s:.)|(?-u:[\x80-\xFF]))";
const NOT_UTF8: &str = r"(?-u:[\x80-\xFF])";

struct Translator {
    chars: Vec<char>,
    pos: usize,
    fold: bool,
    out: String,
}

type Step = Result<(), (usize, String)>;

impl Translator {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn next(&mut self) -> Result<char, (usize, String)> {
        let c = self
            .peek()
            .ok_or((self.pos, "the regular expression ends too early".to_owned()))?;
        self.pos += 1;
        Ok(c)
    }

    fn union(&mut self) -> Step {
        self.concatenation()?;
        while self.eat('|') {
            self.out.push('|');
            self.concatenation()?;
        }
        Ok(())
    }

    fn concatenation(&mut self) -> Step {
        while let Some(c) = self.peek() {
            match c {
                ')' | '|' => break,
                '&' => return Err((self.pos, unsupported("intersection (`&`)"))),
                _ => self.repeat()?,
            }
        }
        Ok(())
    }

    fn repeat(&mut self) -> Step {
        let start = self.out.len();
        self.atom()?;
        while let Some(c) = self.peek() {
            let suffix = match c {
                '?' | '*' | '+' => {
                    self.pos += 1;
                    c.to_string()
                }
                '{' => {
                    self.pos += 1;
                    self.bounds()?
                }
                _ => break,
            };
            self.out.insert_str(start, "(?:");
            self.out.push(')');
            self.out.push_str(&suffix);
        }
        Ok(())
    }

    /// `{n}`, `{n,}`, `{n,m}` after the `{`.
    fn bounds(&mut self) -> Result<String, (usize, String)> {
        let at = self.pos;
        let min = self.number()?;
        let max = if self.eat(',') {
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                Some(self.number()?)
            } else {
                None
            }
        } else {
            Some(min)
        };
        if !self.eat('}') {
            return Err((self.pos, "expected `}`".to_owned()));
        }
        match max {
            Some(max) if max < min => {
                Err((at, format!("repetition {{{min},{max}}}: {min} > {max}")))
            }
            Some(max) if max == min => Ok(format!("{{{min}}}")),
            Some(max) => Ok(format!("{{{min},{max}}}")),
            None => Ok(format!("{{{min},}}")),
        }
    }

    fn number(&mut self) -> Result<u32, (usize, String)> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits: String = self.chars[start..self.pos].iter().collect();
        digits
            .parse()
            .map_err(|_| (start, "expected a number in `{...}`".to_owned()))
    }

    fn atom(&mut self) -> Step {
        let at = self.pos;
        match self.next()? {
            '~' => Err((at, unsupported("complement (`~`)"))),
            '<' => Err((at, unsupported("intervals and named automata (`<...>`)"))),
            '[' => self.class(),
            '.' => {
                self.out.push_str(ANY);
                Ok(())
            }
            '#' => {
                // The empty language: no string matches.
                self.out.push_str(r"[^\x{0}-\x{10FFFF}]");
                Ok(())
            }
            '@' => {
                write!(self.out, "(?:{ANY})*").ok();
                Ok(())
            }
            '"' => {
                while let Some(c) = self.peek().filter(|c| *c != '"') {
                    self.pos += 1;
                    self.literal(c);
                }
                if !self.eat('"') {
                    return Err((at, "unterminated `\"` in the regular expression".to_owned()));
                }
                Ok(())
            }
            '(' => {
                self.out.push_str("(?:");
                if !self.eat(')') {
                    self.union()?;
                    if !self.eat(')') {
                        return Err((self.pos, "expected `)`".to_owned()));
                    }
                }
                self.out.push(')');
                Ok(())
            }
            '\\' => match self.escape(at)? {
                Escaped::Class((set, false)) => {
                    write!(self.out, "[{set}]").ok();
                    Ok(())
                }
                Escaped::Class((set, true)) => {
                    write!(self.out, "(?:[^{set}]|{NOT_UTF8})").ok();
                    Ok(())
                }
                Escaped::Char(c) => {
                    self.literal(c);
                    Ok(())
                }
            },
            c => {
                self.literal(c);
                Ok(())
            }
        }
    }

    /// After a `\`: a predefined class or the character itself.
    fn escape(&mut self, at: usize) -> Result<Escaped, (usize, String)> {
        let c = self.next()?;
        if let Some(class) = predefined(c) {
            return Ok(Escaped::Class(class));
        }
        if c.is_ascii_alphabetic() {
            return Err((at, format!("invalid character class `\\{c}`")));
        }
        Ok(Escaped::Char(c))
    }

    fn literal(&mut self, c: char) {
        let other = if c.is_ascii_lowercase() {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        };
        if self.fold && other != c {
            write!(self.out, r"[\x{{{:X}}}\x{{{:X}}}]", c as u32, other as u32).ok();
        } else {
            write!(self.out, r"\x{{{:X}}}", c as u32).ok();
        }
    }

    /// `[...]` after the `[`.
    fn class(&mut self) -> Step {
        let negated = self.eat('^');
        let mut items = String::new();
        // A negated predefined class inside (`[a\S]`) takes invalid bytes too.
        let mut takes_other_bytes = false;
        loop {
            let at = self.pos;
            let c = match self.next()? {
                ']' if !items.is_empty() => break,
                '\\' => match self.escape(at)? {
                    Escaped::Class((set, negated_set)) => {
                        let caret = if negated_set { "^" } else { "" };
                        write!(items, "[{caret}{set}]").ok();
                        takes_other_bytes |= negated_set;
                        continue;
                    }
                    Escaped::Char(c) => c,
                },
                c => c,
            };
            if self.eat('-') {
                let to = match self.next()? {
                    '\\' => self.next()?,
                    to => to,
                };
                if to < c {
                    return Err((at, format!("invalid range `{c}-{to}`")));
                }
                write!(items, r"\x{{{:X}}}-\x{{{:X}}}", c as u32, to as u32).ok();
            } else {
                let before = std::mem::take(&mut self.out);
                self.literal(c);
                let single = std::mem::replace(&mut self.out, before);
                // A folded letter is `[xX]`: inside a class, its two members.
                items.push_str(
                    single
                        .strip_prefix('[')
                        .and_then(|s| s.strip_suffix(']'))
                        .unwrap_or(&single),
                );
            }
        }
        if negated != takes_other_bytes {
            let caret = if negated { "^" } else { "" };
            write!(self.out, "(?:[{caret}{items}]|{NOT_UTF8})").ok();
        } else if negated {
            write!(self.out, "[^{items}]").ok();
        } else {
            write!(self.out, "[{items}]").ok();
        }
        Ok(())
    }
}

enum Escaped {
    /// A predefined class: its members, and whether it is their complement.
    Class((&'static str, bool)),
    Char(char),
}

/// Lucene's predefined classes (ASCII).
fn predefined(c: char) -> Option<(&'static str, bool)> {
    Some(match c {
        'd' => ("0-9", false),
        'D' => ("0-9", true),
        's' => (r" \t\n\r", false),
        'S' => (r" \t\n\r", true),
        'w' => ("a-zA-Z_0-9", false),
        'W' => ("a-zA-Z_0-9", true),
        _ => return None,
    })
}

fn unsupported(what: &str) -> String {
    format!("{what} in a regular expression is not supported (it has no linear-time match)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, value: &[u8]) -> bool {
        Regexp::compile(pattern, false)
            .unwrap_or_else(|e| panic!("{pattern}: {e:?}"))
            .is_match(value)
    }

    fn folded(pattern: &str, value: &[u8]) -> bool {
        Regexp::compile(pattern, true)
            .unwrap_or_else(|e| panic!("{pattern}: {e:?}"))
            .is_match(value)
    }

    #[test]
    fn whole_value_only() {
        assert!(matches("ab", b"ab"));
        assert!(!matches("ab", b"xab"));
        assert!(!matches("ab", b"abx"));
        assert!(matches(".*ab.*", b"xaby"));
    }

    #[test]
    fn lucene_operators() {
        assert!(matches("a{2,3}", b"aaa"));
        assert!(!matches("a{2,3}", b"aaaa"));
        assert!(matches("a{2,}", b"aaaaa"));
        assert!(matches("(ab)+c?", b"abab"));
        assert!(matches("x|y", b"y"));
        assert!(matches("[a-c]+", b"cab"));
        assert!(matches("[^-]*", b"abc"));
        assert!(!matches("[^-]*", b"a-c"));
        assert!(matches("\"a.b\"", b"a.b"));
        assert!(!matches("\"a.b\"", b"axb"));
        assert!(matches("@", b"anything"));
        assert!(!matches("#", b""));
        assert!(matches("a()b", b"ab"));
        assert!(matches(r"\.[a-z0-9_\-]+", b".x-1"));
    }

    #[test]
    fn predefined_classes_are_ascii() {
        assert!(matches(r"\d+", b"042"));
        assert!(matches(r"\w+", b"a_Z9"));
        assert!(!matches(r"\w", "é".as_bytes()));
        assert!(matches(r"\W", "é".as_bytes()));
        assert!(matches(r"\s", b"\t"));
        assert!(matches(r"[a\s]+", b"a a"));
    }

    #[test]
    fn case_folding_is_ascii_and_spares_ranges() {
        assert!(folded("php", b"PHP"));
        assert!(folded("\"ab\"", b"AB"));
        assert!(folded("[x]", b"X"));
        assert!(!folded("[a-z]", b"A"), "Lucene folds no range");
        assert!(!matches("php", b"PHP"));
    }

    #[test]
    fn invalid_utf8_is_one_character() {
        assert!(matches(".*1.*", b"\xff1\xfe"));
        assert!(matches("a.b", b"a\xffb"));
        assert!(matches("[^x]", b"\xff"));
    }

    #[test]
    fn refused_with_an_offset() {
        for (pattern, offset) in [
            ("a&b", 1),
            ("~a", 0),
            ("<1-5>", 0),
            ("(a", 2),
            ("a)", 1),
            ("[z-a]", 1),
            (r"\q", 0),
            ("a{3,1}", 2),
            ("\"ab", 0),
        ] {
            let err = Regexp::compile(pattern, false).expect_err(pattern);
            assert_eq!(err.0, offset, "{pattern}: {}", err.1);
        }
    }
}
