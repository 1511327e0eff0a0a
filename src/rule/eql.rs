//! The EQL subset: lexer and parser, compiling a query to an [`Expr`].
//!
//! Contract: accepts `process where ...`, `file where ...` and `api where
//! ...` (and a bare condition, for exceptions), and `sequence [by FIELD,
//! ...] with maxspan=N(ms|s|m|h) [CATEGORY where ...] [...]` of 2 to
//! [`MAX_STEPS`] steps, whose categories may also be `any`; `and`, `or`, `not`, parentheses; `==`, `!=`,
//! `in`, `in~`, `not in`, `not in~`, `:`, `like`, `like~` (one value or a
//! list); double-quoted strings with EQL escapes, `"""raw"""` strings,
//! integers, `true`/`false`, `null`; dotted and backquoted field names.
//! Anything else — an unknown field, a function call, a sequence, a pipe,
//! `<`/`>`, `regex`, a literal of the wrong type — is an [`EqlError`] with
//! the byte offset where it starts. Nothing here panics on any input.

use std::fmt;
use std::time::Duration;

use super::eval::{Arg, Category, Expr, Function, Literal, Order, StringOp, Test};
use super::field::Field;
use super::field::{Kind, Named};
use super::regexp::Regexp;
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
    Order(Order),
    LBracket,
    RBracket,
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

/// Operators and functions with a case-insensitive `~` form.
const CASE_FOLDED: [&str; 6] = [
    "in",
    "like",
    "regex",
    "startsWith",
    "endsWith",
    "stringContains",
];

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
            '<' if bytes.get(i + 1) == Some(&b'=') => simple(Tok::Order(Order::LessOrEqual), 2),
            '>' if bytes.get(i + 1) == Some(&b'=') => simple(Tok::Order(Order::GreaterOrEqual), 2),
            '<' => simple(Tok::Order(Order::Less), 1),
            '>' => simple(Tok::Order(Order::Greater), 1),
            '|' => simple(Tok::Unsupported("|"), 1),
            '[' => simple(Tok::LBracket, 1),
            ']' => simple(Tok::RBracket, 1),
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
            // `?field`: an optional field, one word with its `?`.
            c if is_word_start(c)
                || (c == '?'
                    && src[i + 1..].starts_with(|c: char| is_word_start(c) || c == '`')) =>
            {
                if src[i + 1..].starts_with('`') {
                    let (name, len) = lex_backquoted(src, i + 1)?;
                    tokens.push(Token {
                        tok: Tok::Word(format!("?{name}")),
                        offset: start,
                    });
                    i += len + 1;
                    continue;
                }
                let mut end = src[i + 1..]
                    .find(|c: char| !is_word_char(c))
                    .map_or(bytes.len(), |n| i + 1 + n);
                // `in~`, `like~`, `regex~`, `startsWith~`…: single words.
                let word = &src[i..end];
                if CASE_FOLDED.contains(&word) && bytes.get(end) == Some(&b'~') {
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

/// Something to know about a query that loads: a comparison on an ECS
/// field mapwatch never fills, decided as on a missing field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EqlNotice {
    pub offset: usize,
    pub message: String,
}

/// A parsed query: what it matches, and what to know about it.
#[derive(Clone, Debug)]
pub struct Query {
    pub shape: Shape,
    pub notices: Vec<EqlNotice>,
}

/// What a query matches.
#[derive(Clone, Debug)]
pub enum Shape {
    /// One event: `CATEGORY where CONDITION`.
    Event(Step),
    Sequence(Sequence),
}

/// `CATEGORY where CONDITION`: one event, or one step of a sequence.
#[derive(Clone, Debug)]
pub struct Step {
    pub category: Category,
    pub condition: Expr,
}

/// `sequence by FIELDS with maxspan=SPAN [STEP] [STEP] ...`: events
/// matching each step in turn, with equal values of the `by` fields,
/// the first and last at most `maxspan` apart.
#[derive(Clone, Debug)]
pub struct Sequence {
    pub by: Vec<Field>,
    pub maxspan: Duration,
    pub steps: Vec<Step>,
}

/// The most steps a sequence has: each is state held per join key.
pub const MAX_STEPS: usize = 8;

/// The longest `maxspan`: what a sequence holds lives that long.
pub const MAX_SPAN: Duration = Duration::from_secs(3600);

/// Parses `CATEGORY where CONDITION`; the first error, if any.
pub fn parse_query(src: &str) -> Result<Query, EqlError> {
    parse_query_all(src).map_err(|mut errors| errors.swap_remove(0))
}

/// Parses `CATEGORY where CONDITION`, with every error the parser can
/// find: after an unknown field, a wrong literal or an unsupported
/// function it goes on; after a syntax error it stops.
pub fn parse_query_all(src: &str) -> Result<Query, Vec<EqlError>> {
    let mut parser = Parser::new(src).map_err(|e| vec![e])?;
    if parser.peek_word("sequence") {
        parser.next();
        let sequence = parser.sequence();
        return match parser.keep(sequence) {
            Some(sequence) if parser.errors.is_empty() => Ok(Query {
                shape: Shape::Sequence(sequence),
                notices: parser.notices,
            }),
            _ => Err(parser.errors),
        };
    }
    let start = parser.peek().offset;
    let category = parser.category().map_err(|e| vec![e])?;
    if category == Category::Any {
        return Err(vec![EqlError {
            offset: start,
            message: "`any where` is supported as a step of a sequence only".into(),
        }]);
    }
    let condition = parser.where_clause();
    match parser.keep(condition) {
        Some(condition) if parser.errors.is_empty() => Ok(Query {
            shape: Shape::Event(Step {
                category,
                condition: condition.optimised(),
            }),
            notices: parser.notices,
        }),
        _ => Err(parser.errors),
    }
}

/// Parses a bare condition (exceptions).
pub fn parse_condition(src: &str) -> Result<Expr, EqlError> {
    let mut parser = Parser::new(src)?;
    let condition = parser.expression().and_then(|c| parser.end().map(|()| c));
    let condition = parser.keep(condition);
    match condition {
        Some(condition) if parser.errors.is_empty() => Ok(condition.optimised()),
        _ => Err(parser.errors.swap_remove(0)),
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Errors found so far that did not stop the parse.
    errors: Vec<EqlError>,
    notices: Vec<EqlNotice>,
}

/// EQL's functions; those outside [`Parser::function`]'s are refused by name.
const FUNCTIONS: [&str; 15] = [
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
    "stringContains",
    "substring",
];

/// The left side of a comparison, resolved.
struct Subject {
    path: String,
    kind: Option<Kind>,
    target: Target,
}

enum Target {
    Field(super::field::Field),
    /// Never present: an ECS field mapwatch never fills, an unknown
    /// optional field, or an unknown field (already an error).
    Missing,
}

impl Parser {
    fn new(src: &str) -> Result<Self, EqlError> {
        Ok(Parser {
            tokens: lex(src)?,
            pos: 0,
            errors: Vec::new(),
            notices: Vec::new(),
        })
    }

    /// The value, or `None` with its error recorded.
    fn keep<T>(&mut self, result: Result<T, EqlError>) -> Option<T> {
        result.map_err(|e| self.errors.push(e)).ok()
    }

    /// Records an error the parse goes on after.
    fn soft_error(&mut self, offset: usize, message: impl Into<String>) {
        self.errors.push(EqlError {
            offset,
            message: message.into(),
        });
    }

    fn category(&mut self) -> Result<Category, EqlError> {
        let (category, offset) = match self.next() {
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
        match category.as_str() {
            "process" => Ok(Category::Process),
            "file" => Ok(Category::File),
            "api" => Ok(Category::Api),
            "any" => Ok(Category::Any),
            "sequence" => error(offset, "a sequence's steps are single events"),
            "sample" => error(offset, format!("`{category}` queries are not supported")),
            "network" | "registry" | "library" | "driver" | "authentication" | "host" => error(
                offset,
                format!("event category `{category}` is not supported (process, file, api)"),
            ),
            _ => error(
                offset,
                format!("unknown event category `{category}` (process, file, api)"),
            ),
        }
    }

    /// After `sequence`: `[by FIELD, ...] with maxspan=SPAN [STEP] [STEP] ...`.
    fn sequence(&mut self) -> Result<Sequence, EqlError> {
        let mut by = Vec::new();
        if self.peek_word("by") {
            self.next();
            loop {
                by.push(self.join_field()?);
                if self.peek().tok != Tok::Comma {
                    break;
                }
                self.next();
            }
        }
        let maxspan = self.maxspan()?;
        let mut steps = Vec::new();
        while self.peek().tok == Tok::LBracket {
            let bracket = self.next().offset;
            if steps.len() == MAX_STEPS {
                return error(bracket, format!("a sequence has at most {MAX_STEPS} steps"));
            }
            let category = self.category()?;
            self.expect_word("where")?;
            let condition = self.expression()?.optimised();
            self.expect(Tok::RBracket, "`]` after the step's condition")?;
            if self.peek_word("by") {
                return error(
                    self.peek().offset,
                    "`by` per step is not supported: join every step by the sequence's `by`",
                );
            }
            steps.push(Step {
                category,
                condition,
            });
        }
        let at = self.peek().offset;
        if self.peek_word("until") {
            return error(at, "`until` is not supported");
        }
        if steps.len() < 2 {
            return error(at, "a sequence has at least two steps: `[...] [...]`");
        }
        self.end()?;
        Ok(Sequence { by, maxspan, steps })
    }

    /// A `by` field: one mapwatch fills, of one value on every event.
    fn join_field(&mut self) -> Result<Field, EqlError> {
        let token = self.next();
        let Tok::Word(name) = token.tok else {
            return error(token.offset, "expected a field name after `by`");
        };
        match Named::lookup(&name) {
            Some(Named::Filled(field)) if field.is_single_valued() => Ok(field),
            Some(Named::Filled(_)) => error(
                token.offset,
                format!("`{name}` has several values: a sequence joins on single-valued fields"),
            ),
            _ => error(
                token.offset,
                format!("a sequence joins on fields mapwatch fills; `{name}` is not one"),
            ),
        }
    }

    /// `with maxspan=N(ms|s|m|h)`, required: it bounds how long a
    /// partial sequence is held.
    fn maxspan(&mut self) -> Result<Duration, EqlError> {
        let at = self.peek().offset;
        if !self.peek_word("with") {
            return error(
                at,
                "a sequence needs `with maxspan=...` (say `30s`): it bounds what mapwatch holds",
            );
        }
        self.next();
        self.expect_word("maxspan")?;
        self.expect(Tok::Unsupported("="), "`=`")?;
        let number = self.next();
        let Tok::Int(n) = number.tok else {
            return error(number.offset, "expected a duration like `30s`");
        };
        let unit = self.next();
        let span = match (u64::try_from(n), &unit.tok) {
            (Ok(n), Tok::Word(u)) if u == "ms" => Duration::from_millis(n),
            (Ok(n), Tok::Word(u)) if u == "s" => Duration::from_secs(n),
            (Ok(n), Tok::Word(u)) if u == "m" => Duration::from_secs(n.saturating_mul(60)),
            (Ok(n), Tok::Word(u)) if u == "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return error(unit.offset, "expected a unit: `ms`, `s`, `m` or `h`"),
        };
        if span.is_zero() || span > MAX_SPAN {
            return error(number.offset, "maxspan is more than 0 and at most 1h");
        }
        Ok(span)
    }

    fn where_clause(&mut self) -> Result<Expr, EqlError> {
        self.expect_word("where")?;
        let condition = self.expression()?;
        self.end()?;
        Ok(condition)
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

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), EqlError> {
        let token = self.next();
        if token.tok == tok {
            Ok(())
        } else {
            error(token.offset, format!("expected {what}"))
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
                self.expect(Tok::RParen, "`)`")?;
                Ok(inner)
            }
            Tok::Word(w) if w == "true" => Ok(Expr::Const(true)),
            Tok::Word(w) if w == "false" => Ok(Expr::Const(false)),
            Tok::Word(w) if matches!(self.peek().tok, Tok::LParen) => {
                self.function(&w, token.offset)
            }
            Tok::Word(w) => self.comparison(&w, token.offset),
            Tok::Eof => error(token.offset, "the condition ends too early"),
            Tok::Unsupported(op) => {
                error(token.offset, format!("operator `{op}` is not supported"))
            }
            _ => error(token.offset, "expected a field name, `not` or `(`"),
        }
    }

    /// Resolves a field name (`?name` is optional); an unknown one is an
    /// error recorded, and the parse goes on.
    fn subject(&mut self, name: &str, offset: usize) -> Result<Subject, EqlError> {
        let (optional, path) = match name.strip_prefix('?') {
            Some(path) => (true, path),
            None => (false, name),
        };
        if ["and", "or", "not", "where", "in", "in~", "like", "like~"].contains(&path) {
            return error(offset, format!("expected a field name before `{path}`"));
        }
        let (kind, target) = match Named::lookup(path) {
            Some(Named::Filled(field)) => (Some(field.kind()), Target::Field(field)),
            Some(Named::NeverFilled(kind)) => {
                if !optional {
                    self.notices.push(EqlNotice {
                        offset,
                        message: format!(
                            "`{path}` is an ECS field mapwatch never fills: compared as missing"
                        ),
                    });
                }
                (kind, Target::Missing)
            }
            None if optional => (None, Target::Missing),
            None => {
                self.soft_error(
                    offset,
                    format!(
                        "unknown field `{path}` (write `?{path}` if it may be missing from every event)"
                    ),
                );
                (None, Target::Missing)
            }
        };
        Ok(Subject {
            path: path.to_owned(),
            kind,
            target,
        })
    }

    fn comparison(&mut self, name: &str, offset: usize) -> Result<Expr, EqlError> {
        let subject = self.subject(name, offset)?;
        let op = self.next();
        let (test, negated) = match op.tok {
            Tok::EqEq => (self.equality(&subject, false)?, false),
            Tok::NotEq => (self.equality(&subject, true)?, false),
            Tok::Order(order) => (self.range(&subject, order)?, false),
            Tok::Colon => (self.patterns(&subject, Wildcard::insensitive)?, false),
            Tok::Word(w) => match w.as_str() {
                "in" => (self.membership(&subject, false)?, false),
                "in~" => (self.membership(&subject, true)?, false),
                "like" => (self.patterns(&subject, Wildcard::sensitive)?, false),
                "like~" => (self.patterns(&subject, Wildcard::insensitive)?, false),
                "regex" => (self.regexes(&subject, false)?, false),
                "regex~" => (self.regexes(&subject, true)?, false),
                "not" => {
                    let next = self.next();
                    let test = match next.tok {
                        Tok::Word(w) if w == "in" => self.membership(&subject, false)?,
                        Tok::Word(w) if w == "in~" => self.membership(&subject, true)?,
                        _ => return error(next.offset, "expected `in` or `in~` after `not`"),
                    };
                    (test, true)
                }
                _ => {
                    return error(
                        op.offset,
                        format!("expected an operator after `{}`", subject.path),
                    );
                }
            },
            Tok::Unsupported(op_text) => {
                return error(op.offset, format!("operator `{op_text}` is not supported"));
            }
            _ => {
                return error(
                    op.offset,
                    format!("expected an operator after `{}`", subject.path),
                );
            }
        };
        let compare = match subject.target {
            Target::Field(field) => Expr::Compare { field, test },
            Target::Missing => Expr::Const(test.on_missing_field()),
        };
        Ok(if negated {
            Expr::Not(Box::new(compare))
        } else {
            compare
        })
    }

    /// A literal of the subject's kind (any kind when it has none).
    fn literal(&mut self, subject: &Subject) -> Result<Option<Literal>, EqlError> {
        let token = self.next();
        let path = &subject.path;
        let literal = match (token.tok, subject.kind) {
            (Tok::Word(w), _) if w == "null" => return Ok(None),
            (Tok::Str(s), Some(Kind::Keyword) | None) => Literal::Keyword(s),
            (Tok::Int(n), Some(Kind::Long) | None) => Literal::Long(n),
            (Tok::Word(w), Some(Kind::Boolean) | None) if w == "true" || w == "false" => {
                Literal::Boolean(w == "true")
            }
            (Tok::Str(_) | Tok::Int(_), Some(Kind::Boolean)) => {
                self.soft_error(
                    token.offset,
                    format!("`{path}` is a boolean: compare it with true or false"),
                );
                Literal::Boolean(false)
            }
            (Tok::Str(_), Some(Kind::Long)) => {
                self.soft_error(
                    token.offset,
                    format!("`{path}` is a number: compare it with a number"),
                );
                Literal::Long(0)
            }
            (Tok::Int(_), Some(Kind::Keyword)) => {
                self.soft_error(
                    token.offset,
                    format!("`{path}` is a string: compare it with a string"),
                );
                Literal::Keyword(String::new())
            }
            (Tok::Word(w), _) if w == "true" || w == "false" => {
                self.soft_error(token.offset, format!("`{path}` is not a boolean"));
                Literal::Boolean(false)
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

    fn equality(&mut self, subject: &Subject, negated: bool) -> Result<Test, EqlError> {
        Ok(match (self.literal(subject)?, negated) {
            (None, false) => Test::IsNull,
            (None, true) => Test::NotNull,
            (Some(lit), false) => Test::Equal(lit),
            (Some(lit), true) => Test::NotEqual(lit),
        })
    }

    /// `< <= > >=`: numbers by value, strings by their bytes.
    fn range(&mut self, subject: &Subject, order: Order) -> Result<Test, EqlError> {
        let at = self.peek().offset;
        match self.literal(subject)? {
            Some(lit @ (Literal::Long(_) | Literal::Keyword(_))) => Ok(Test::Range(order, lit)),
            Some(Literal::Boolean(_)) => {
                self.soft_error(at, "booleans have no order: use == or !=");
                Ok(Test::Range(order, Literal::Long(0)))
            }
            None => error(at, "`null` has no order: use == null or != null"),
        }
    }

    /// `( value, ... )`, or one value where a list may stand.
    fn values(
        &mut self,
        subject: &Subject,
        list_required: bool,
    ) -> Result<Vec<(Literal, usize)>, EqlError> {
        let open = self.peek().clone();
        if !matches!(open.tok, Tok::LParen) {
            if list_required {
                return error(open.offset, "expected a list: `(\"a\", \"b\")`");
            }
            return match self.literal(subject)? {
                Some(lit) => Ok(vec![(lit, open.offset)]),
                None => error(open.offset, "`null` is not a pattern"),
            };
        }
        self.next();
        let mut values = Vec::new();
        loop {
            let at = self.peek().offset;
            match self.literal(subject)? {
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

    fn membership(&mut self, subject: &Subject, case_insensitive: bool) -> Result<Test, EqlError> {
        let values = self.values(subject, true)?.into_iter().map(|(lit, _)| lit);
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

    /// The string values of a pattern operator, each with its offset.
    fn pattern_texts(
        &mut self,
        subject: &Subject,
        what: &str,
    ) -> Result<Vec<(String, usize)>, EqlError> {
        let at = self.peek().offset;
        let is_number = matches!(subject.kind, Some(Kind::Long | Kind::Boolean));
        if is_number {
            self.soft_error(
                at,
                format!(
                    "`{}` is not a string: {what} apply to strings",
                    subject.path
                ),
            );
        }
        let string_subject = Subject {
            path: subject.path.clone(),
            kind: Some(Kind::Keyword),
            target: Target::Missing,
        };
        let values = self.values(&string_subject, false)?;
        Ok(values
            .into_iter()
            .filter_map(|(lit, at)| match lit {
                Literal::Keyword(s) => Some((s, at)),
                Literal::Long(_) | Literal::Boolean(_) => None,
            })
            .collect())
    }

    fn patterns(
        &mut self,
        subject: &Subject,
        compile: fn(&str) -> Wildcard,
    ) -> Result<Test, EqlError> {
        let texts = self.pattern_texts(subject, "wildcards")?;
        Ok(Test::Wildcard(
            texts.iter().map(|(text, _)| compile(text)).collect(),
        ))
    }

    fn regexes(&mut self, subject: &Subject, case_insensitive: bool) -> Result<Test, EqlError> {
        let texts = self.pattern_texts(subject, "regular expressions")?;
        let mut compiled = Vec::with_capacity(texts.len());
        for (text, at) in texts {
            match Regexp::compile(&text, case_insensitive) {
                Ok(regexp) => compiled.push(regexp),
                // The offset is in the pattern's characters: point at the
                // string, which may hold escapes.
                Err((_, message)) => self.soft_error(at, format!("in `{text}`: {message}")),
            }
        }
        Ok(Test::Regex(compiled))
    }

    /// `name(args)`, after its name: `length(field) OP n`, or a string
    /// function of fields and strings.
    fn function(&mut self, name: &str, offset: usize) -> Result<Expr, EqlError> {
        let (base, folded) = match name.strip_suffix('~') {
            Some(base) => (base, true),
            None => (name, false),
        };
        let string_op = match base {
            "startsWith" => Some(StringOp::StartsWith),
            "endsWith" => Some(StringOp::EndsWith),
            "stringContains" => Some(StringOp::Contains),
            _ => None,
        };
        let supported = string_op.is_some() || (base == "length" && !folded);
        if !supported {
            let what = if FUNCTIONS.contains(&base) {
                "function"
            } else {
                "unknown function"
            };
            return error(offset, format!("{what} `{name}()` is not supported"));
        }
        self.next(); // `(`
        let args = self.arguments()?;
        let Some(op) = string_op else {
            return self.length(args, offset);
        };
        let [source, search] = <[_; 2]>::try_from(args).map_err(|_| EqlError {
            offset,
            message: format!("`{name}()` takes two arguments"),
        })?;
        Ok(match (source, search) {
            // Elasticsearch makes a query of these (a `prefix` query; a
            // `wildcard` query `*text*`): any value, negated as queries are.
            (Some(Arg::Field(field)), Some(Arg::Text(text)))
                if op == StringOp::StartsWith || (op == StringOp::Contains && !folded) =>
            {
                let contained = op == StringOp::Contains;
                Expr::Compare {
                    field,
                    test: Test::Wildcard(vec![Wildcard::literal_in(&text, folded, contained)]),
                }
            }
            (Some(source), Some(search)) => Expr::Function(Box::new(Function::Strings {
                op,
                source,
                search,
                folded,
            })),
            // A missing argument makes the function null.
            _ => Expr::Function(Box::new(Function::Null)),
        })
    }

    /// `length(field) OP n` after the arguments.
    fn length(&mut self, args: Vec<Option<Arg>>, offset: usize) -> Result<Expr, EqlError> {
        let field = match <[_; 1]>::try_from(args) {
            Ok([Some(Arg::Field(field))]) => Some(field),
            Ok([None]) => None,
            _ => return error(offset, "`length()` takes one field"),
        };
        let subject = Subject {
            path: "length()".to_owned(),
            kind: Some(Kind::Long),
            target: Target::Missing,
        };
        let op = self.next();
        let test = match op.tok {
            Tok::EqEq => self.equality(&subject, false)?,
            Tok::NotEq => self.equality(&subject, true)?,
            Tok::Order(order) => self.range(&subject, order)?,
            _ => return error(op.offset, "expected a comparison after `length(...)`"),
        };
        Ok(match field {
            Some(field) => Expr::Function(Box::new(Function::Length { field, test })),
            None => Expr::Function(Box::new(Function::Null)),
        })
    }

    /// `( arg, ... )` after the `(`: fields (`None` when never present)
    /// and strings.
    fn arguments(&mut self) -> Result<Vec<Option<Arg>>, EqlError> {
        let mut args = Vec::new();
        loop {
            let token = self.next();
            match token.tok {
                Tok::Str(s) => args.push(Some(Arg::Text(s))),
                Tok::Word(w) => {
                    let subject = self.subject(&w, token.offset)?;
                    match (subject.target, subject.kind) {
                        (Target::Field(field), Some(Kind::Keyword)) => {
                            args.push(Some(Arg::Field(field)))
                        }
                        (Target::Field(_), _) => {
                            self.soft_error(token.offset, format!("`{w}` is not a string"));
                            args.push(None);
                        }
                        (Target::Missing, _) => args.push(None),
                    }
                }
                _ => return error(token.offset, "expected a field or a string"),
            }
            let sep = self.next();
            match sep.tok {
                Tok::Comma => continue,
                Tok::RParen => return Ok(args),
                _ => return error(sep.offset, "expected `,` or `)`"),
            }
        }
    }
}
