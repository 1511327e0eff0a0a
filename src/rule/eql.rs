//! The EQL subset: lexer and parser, compiling a query to an [`Expr`].
//!
//! Contract: accepts `process where ...` and `file where ...` (and a bare
//! condition, for exceptions); `and`, `or`, `not`, parentheses; `==`, `!=`,
//! `in`, `in~`, `not in`, `not in~`, `:`, `like`, `like~` (one value or a
//! list); double-quoted strings with EQL escapes, `"""raw"""` strings,
//! integers, `true`/`false`, `null`; dotted and backquoted field names.
//! Anything else — an unknown field, a function call, a sequence, a pipe,
//! `<`/`>`, `regex`, a literal of the wrong type — is an [`EqlError`] with
//! the byte offset where it starts. Nothing here panics on any input.

use std::fmt;

use super::eval::{Category, Expr, Literal, Test};
use super::field::{Field, Kind};
use super::wildcard::Wildcard;

/// A load error and where in the query it is (byte offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EqlError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for EqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn error<T>(offset: usize, message: impl Into<String>) -> Result<T, EqlError> {
    Err(EqlError {
        offset,
        message: message.into(),
    })
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Int(i64),
    LParen,
    RParen,
    Comma,
    EqEq,
    NotEq,
    Colon,
    /// Operators outside the subset, kept to name them in the error.
    Unsupported(&'static str),
    Eof,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    offset: usize,
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '@'
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '@' || c == '.'
}

fn lex(src: &str) -> Result<Vec<Token>, EqlError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = src[i..].chars().next().unwrap_or(' ');
        let start = i;
        let simple = |tok: Tok, len: usize| (Token { tok, offset: start }, len);
        let (token, len) = match c {
            c if c.is_whitespace() => {
                i += c.len_utf8();
                continue;
            }
            '/' if bytes.get(i + 1) == Some(&b'/') => {
                i = src[i..].find('\n').map_or(bytes.len(), |n| i + n);
                continue;
            }
            '/' if bytes.get(i + 1) == Some(&b'*') => {
                match src[i + 2..].find("*/") {
                    Some(n) => i += n + 4,
                    None => return error(start, "unterminated comment"),
                }
                continue;
            }
            '(' => simple(Tok::LParen, 1),
            ')' => simple(Tok::RParen, 1),
            ',' => simple(Tok::Comma, 1),
            ':' => simple(Tok::Colon, 1),
            '=' if bytes.get(i + 1) == Some(&b'=') => simple(Tok::EqEq, 2),
            '=' => simple(Tok::Unsupported("="), 1),
            '!' if bytes.get(i + 1) == Some(&b'=') => simple(Tok::NotEq, 2),
            '<' if bytes.get(i + 1) == Some(&b'=') => simple(Tok::Unsupported("<="), 2),
            '>' if bytes.get(i + 1) == Some(&b'=') => simple(Tok::Unsupported(">="), 2),
            '<' => simple(Tok::Unsupported("<"), 1),
            '>' => simple(Tok::Unsupported(">"), 1),
            '|' => simple(Tok::Unsupported("|"), 1),
            '[' => simple(Tok::Unsupported("["), 1),
            ']' => simple(Tok::Unsupported("]"), 1),
            '"' => {
                let (text, len) = lex_string(src, i)?;
                (
                    Token {
                        tok: Tok::Str(text),
                        offset: start,
                    },
                    len,
                )
            }
            '\'' => {
                return error(
                    start,
                    "single-quoted strings are not EQL: use double quotes",
                );
            }
            '`' => {
                let (name, len) = lex_backquoted(src, i)?;
                (
                    Token {
                        tok: Tok::Word(name),
                        offset: start,
                    },
                    len,
                )
            }
            c if c.is_ascii_digit()
                || (c == '-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                let end = src[i + 1..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(bytes.len(), |n| i + 1 + n);
                if src[end..].starts_with('.') || src[end..].starts_with(['e', 'E']) {
                    return error(start, "floating-point numbers are not supported");
                }
                let Ok(n) = src[i..end].parse::<i64>() else {
                    return error(start, format!("number `{}` is out of range", &src[i..end]));
                };
                (
                    Token {
                        tok: Tok::Int(n),
                        offset: start,
                    },
                    end - i,
                )
            }
            c if is_word_start(c) => {
                let mut end = src[i..]
                    .find(|c: char| !is_word_char(c))
                    .map_or(bytes.len(), |n| i + n);
                // `in~` and `like~` are single operators.
                let word = &src[i..end];
                if (word == "in" || word == "like" || word == "regex")
                    && bytes.get(end) == Some(&b'~')
                {
                    end += 1;
                }
                (
                    Token {
                        tok: Tok::Word(src[i..end].to_owned()),
                        offset: start,
                    },
                    end - i,
                )
            }
            other => return error(start, format!("unexpected character `{other}`")),
        };
        tokens.push(token);
        i += len;
    }
    tokens.push(Token {
        tok: Tok::Eof,
        offset: bytes.len(),
    });
    Ok(tokens)
}

/// A double-quoted string (with escapes) or a `"""raw"""` string.
fn lex_string(src: &str, start: usize) -> Result<(String, usize), EqlError> {
    let rest = &src[start..];
    if let Some(raw) = rest.strip_prefix("\"\"\"") {
        return match raw.find("\"\"\"") {
            Some(end) => Ok((raw[..end].to_owned(), end + 6)),
            None => error(start, "unterminated raw string"),
        };
    }
    let mut out = String::new();
    let mut chars = rest.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\\' => {
                let Some((j, esc)) = chars.next() else {
                    break;
                };
                match esc {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    '\\' => out.push('\\'),
                    'u' => {
                        let body = &rest[j + 1..];
                        let Some(close) = body.strip_prefix('{').and_then(|b| b.find('}')) else {
                            return error(start + j - 1, "a \\u escape is written \\u{HEX}");
                        };
                        let hex = &body[1..=close];
                        let Some(c) = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
                        else {
                            return error(
                                start + j - 1,
                                format!("invalid unicode escape \\u{{{hex}}}"),
                            );
                        };
                        out.push(c);
                        for _ in 0..close + 2 {
                            chars.next();
                        }
                    }
                    other => return error(start + j - 1, format!("unknown escape `\\{other}`")),
                }
            }
            c => out.push(c),
        }
    }
    error(start, "unterminated string")
}

fn lex_backquoted(src: &str, start: usize) -> Result<(String, usize), EqlError> {
    let rest = &src[start + 1..];
    let mut name = String::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '`' {
            if chars.peek().map(|(_, c)| *c) == Some('`') {
                chars.next();
                name.push('`');
                continue;
            }
            return Ok((name, i + 2));
        }
        name.push(c);
    }
    error(start, "unterminated backquoted field name")
}

/// A parsed query: its event category and condition.
#[derive(Clone, Debug)]
pub struct Query {
    pub category: Category,
    pub condition: Expr,
}

/// Parses `CATEGORY where CONDITION`.
pub fn parse_query(src: &str) -> Result<Query, EqlError> {
    let mut parser = Parser::new(src)?;
    let (category, offset) = match parser.next() {
        Token {
            tok: Tok::Word(w),
            offset,
        } => (w, offset),
        t => {
            return error(
                t.offset,
                "a query starts with an event category (`process where ...`)",
            );
        }
    };
    let category = match category.as_str() {
        "process" => Category::Process,
        "file" => Category::File,
        "sequence" | "sample" => {
            return error(offset, format!("`{category}` queries are not supported"));
        }
        "any" | "network" | "registry" | "library" | "driver" | "api" | "authentication"
        | "host" => {
            return error(
                offset,
                format!("event category `{category}` is not supported (process, file)"),
            );
        }
        _ => {
            return error(
                offset,
                format!("unknown event category `{category}` (process, file)"),
            );
        }
    };
    parser.expect_word("where")?;
    let condition = parser.expression()?;
    parser.end()?;
    Ok(Query {
        category,
        condition: condition.optimised(),
    })
}

/// Parses a bare condition (exceptions).
pub fn parse_condition(src: &str) -> Result<Expr, EqlError> {
    let mut parser = Parser::new(src)?;
    let condition = parser.expression()?;
    parser.end()?;
    Ok(condition.optimised())
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

const FUNCTIONS: [&str; 14] = [
    "add",
    "between",
    "cidrMatch",
    "concat",
    "divide",
    "endsWith",
    "indexOf",
    "length",
    "modulo",
    "multiply",
    "number",
    "startsWith",
    "string",
    "substring",
];

impl Parser {
    fn new(src: &str) -> Result<Self, EqlError> {
        Ok(Parser {
            tokens: lex(src)?,
            pos: 0,
        })
    }

    fn peek(&self) -> &Token {
        let last = self.tokens.len() - 1;
        &self.tokens[self.pos.min(last)]
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w == word)
    }

    fn expect_word(&mut self, word: &str) -> Result<(), EqlError> {
        let token = self.next();
        match token.tok {
            Tok::Word(w) if w == word => Ok(()),
            _ => error(token.offset, format!("expected `{word}`")),
        }
    }

    fn end(&mut self) -> Result<(), EqlError> {
        let token = self.next();
        match token.tok {
            Tok::Eof => Ok(()),
            Tok::Unsupported("|") => error(token.offset, "pipes (`|`) are not supported"),
            _ => error(
                token.offset,
                "unexpected text after the end of the condition",
            ),
        }
    }

    fn expression(&mut self) -> Result<Expr, EqlError> {
        let mut terms = vec![self.conjunction()?];
        while self.peek_word("or") {
            self.next();
            terms.push(self.conjunction()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn conjunction(&mut self) -> Result<Expr, EqlError> {
        let mut terms = vec![self.negation()?];
        while self.peek_word("and") {
            self.next();
            terms.push(self.negation()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn negation(&mut self) -> Result<Expr, EqlError> {
        if self.peek_word("not") {
            self.next();
            return Ok(Expr::Not(Box::new(self.negation()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, EqlError> {
        let token = self.next();
        match token.tok {
            Tok::LParen => {
                let inner = self.expression()?;
                let close = self.next();
                match close.tok {
                    Tok::RParen => Ok(inner),
                    _ => error(close.offset, "expected `)`"),
                }
            }
            Tok::Word(w) if w == "true" => Ok(Expr::Const(true)),
            Tok::Word(w) if w == "false" => Ok(Expr::Const(false)),
            Tok::Word(w) => {
                if matches!(self.peek().tok, Tok::LParen) {
                    let what = if FUNCTIONS.contains(&w.as_str()) {
                        "function"
                    } else {
                        "unknown function"
                    };
                    return error(token.offset, format!("{what} `{w}()` is not supported"));
                }
                self.comparison(&w, token.offset)
            }
            Tok::Eof => error(token.offset, "the condition ends too early"),
            Tok::Unsupported(op) => {
                error(token.offset, format!("operator `{op}` is not supported"))
            }
            _ => error(token.offset, "expected a field name, `not` or `(`"),
        }
    }

    fn comparison(&mut self, path: &str, offset: usize) -> Result<Expr, EqlError> {
        let Some(field) = Field::from_path(path) else {
            if ["and", "or", "not", "where", "in", "in~", "like", "like~"].contains(&path) {
                return error(offset, format!("expected a field name before `{path}`"));
            }
            return error(offset, format!("unknown field `{path}`"));
        };
        let op = self.next();
        let test = match op.tok {
            Tok::EqEq => self.equality(field, false)?,
            Tok::NotEq => self.equality(field, true)?,
            Tok::Colon => Test::Wildcard(self.patterns(field, Wildcard::insensitive)?),
            Tok::Word(w) => match w.as_str() {
                "in" => self.membership(field, false)?,
                "in~" => self.membership(field, true)?,
                "like" => Test::Wildcard(self.patterns(field, Wildcard::sensitive)?),
                "like~" => Test::Wildcard(self.patterns(field, Wildcard::insensitive)?),
                "not" => {
                    let next = self.next();
                    let test = match next.tok {
                        Tok::Word(w) if w == "in" => self.membership(field, false)?,
                        Tok::Word(w) if w == "in~" => self.membership(field, true)?,
                        _ => return error(next.offset, "expected `in` or `in~` after `not`"),
                    };
                    return Ok(Expr::Not(Box::new(Expr::Compare { field, test })));
                }
                "regex" | "regex~" => {
                    return error(op.offset, format!("operator `{w}` is not supported"));
                }
                _ => return error(op.offset, format!("expected an operator after `{path}`")),
            },
            Tok::Unsupported(op_text) => {
                return error(op.offset, format!("operator `{op_text}` is not supported"));
            }
            _ => return error(op.offset, format!("expected an operator after `{path}`")),
        };
        Ok(Expr::Compare { field, test })
    }

    fn literal(&mut self, field: Field) -> Result<Option<Literal>, EqlError> {
        let token = self.next();
        let literal = match (token.tok, field.kind()) {
            (Tok::Word(w), _) if w == "null" => return Ok(None),
            (Tok::Str(s), Kind::Keyword) => Literal::Keyword(s),
            (Tok::Int(n), Kind::Long) => Literal::Long(n),
            (Tok::Word(w), Kind::Boolean) if w == "true" || w == "false" => {
                Literal::Boolean(w == "true")
            }
            (_, Kind::Boolean) => {
                return error(
                    token.offset,
                    format!(
                        "`{}` is a boolean: compare it with true or false",
                        field.path()
                    ),
                );
            }
            (Tok::Str(_), Kind::Long) => {
                return error(
                    token.offset,
                    format!("`{}` is a number: compare it with a number", field.path()),
                );
            }
            (Tok::Int(_), Kind::Keyword) => {
                return error(
                    token.offset,
                    format!("`{}` is a string: compare it with a string", field.path()),
                );
            }
            (Tok::Word(w), _) if w == "true" || w == "false" => {
                return error(token.offset, format!("`{}` is not a boolean", field.path()));
            }
            (Tok::Word(w), _) => {
                return error(
                    token.offset,
                    format!("comparing two fields (`{w}`) is not supported: use a literal"),
                );
            }
            _ => return error(token.offset, "expected a value"),
        };
        Ok(Some(literal))
    }

    fn equality(&mut self, field: Field, negated: bool) -> Result<Test, EqlError> {
        Ok(match (self.literal(field)?, negated) {
            (None, false) => Test::IsNull,
            (None, true) => Test::NotNull,
            (Some(lit), false) => Test::Equal(lit),
            (Some(lit), true) => Test::NotEqual(lit),
        })
    }

    /// `( value, ... )`, or one value where a list may stand.
    fn values(
        &mut self,
        field: Field,
        list_required: bool,
    ) -> Result<Vec<(Literal, usize)>, EqlError> {
        let open = self.peek().clone();
        if !matches!(open.tok, Tok::LParen) {
            if list_required {
                return error(open.offset, "expected a list: `(\"a\", \"b\")`");
            }
            return match self.literal(field)? {
                Some(lit) => Ok(vec![(lit, open.offset)]),
                None => error(open.offset, "`null` is not a pattern"),
            };
        }
        self.next();
        let mut values = Vec::new();
        loop {
            let at = self.peek().offset;
            match self.literal(field)? {
                Some(lit) => values.push((lit, at)),
                None => return error(at, "`null` cannot be in a list"),
            }
            let sep = self.next();
            match sep.tok {
                Tok::Comma => continue,
                Tok::RParen => return Ok(values),
                _ => return error(sep.offset, "expected `,` or `)`"),
            }
        }
    }

    fn membership(&mut self, field: Field, case_insensitive: bool) -> Result<Test, EqlError> {
        let values = self.values(field, true)?.into_iter().map(|(lit, _)| lit);
        Ok(if case_insensitive {
            Test::InFolded(
                values
                    .map(|lit| match lit {
                        Literal::Keyword(s) => Literal::Keyword(s.to_lowercase()),
                        other => other,
                    })
                    .collect(),
            )
        } else {
            Test::In(values.collect())
        })
    }

    fn patterns(
        &mut self,
        field: Field,
        compile: fn(&str) -> Wildcard,
    ) -> Result<Vec<Wildcard>, EqlError> {
        if field.kind() != Kind::Keyword {
            return error(
                self.peek().offset,
                format!("`{}` is a number: wildcards apply to strings", field.path()),
            );
        }
        self.values(field, false)?
            .into_iter()
            .map(|(lit, at)| match lit {
                Literal::Keyword(s) => Ok(compile(&s)),
                Literal::Long(_) | Literal::Boolean(_) => {
                    error(at, "wildcard patterns are strings")
                }
            })
            .collect()
    }
}
