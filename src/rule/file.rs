//! Rule files: Elastic's detection-rules TOML format, compiled to [`Rule`]s.
//!
//! Contract: a file holds one `[rule]`, and Elastic's free-form
//! `[metadata]` and `[transform]` (investigation-guide snippets), which are
//! accepted and not used, as are the `[rule]` keys of Elastic's format that
//! concern Kibana (listed in [`RuleSection`]). Unknown keys, a query
//! outside the EQL subset, an unknown field, a bad severity or interval:
//! each is a [`RuleError`] naming the file, line and column, and
//! [`check_rule`] gives every one a file has (after a TOML syntax error or
//! an EQL syntax error, the rest of that text is not read). A rule that
//! loads but can never fire on mapwatch's events carries a warning naming
//! why. Exceptions are a list of conditions that suppress a match: an EQL
//! condition (`query`) or a field with values (`field`, `values`, `match`).

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;

use super::eql::{EqlError, Shape, parse_condition, parse_query_all};
use super::eval::{Expr, Literal, Test};
use super::field::{Field, Kind};
use super::wildcard::Wildcard;
use super::{AttackRef, Exception, Rule, RuleMeta, Threat, reach};

/// A rule or exception that cannot be used, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub source: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.source, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for RuleError {}

/// A TOML document and its name, for positions in errors.
pub struct SourceText<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

impl SourceText<'_> {
    pub fn error_at(&self, offset: usize, message: impl Into<String>) -> RuleError {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        RuleError {
            source: self.name.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn toml_error(&self, e: &toml::de::Error) -> RuleError {
        let offset = e.span().map_or(0, |s| s.start);
        self.error_at(offset, e.message().trim_end().to_owned())
    }

    /// Maps an offset inside a string value back to the file: exact when the
    /// string holds no escapes, else the start of the string.
    fn error_in_string(&self, span: Range<usize>, value: &str, e: &EqlError) -> RuleError {
        let raw = self.text.get(span.clone()).unwrap_or_default();
        let (open, close) = ["'''", "\"\"\"", "'", "\""]
            .iter()
            .find(|d| raw.len() >= 2 * d.len() && raw.starts_with(**d) && raw.ends_with(**d))
            .map_or((0, 0), |d| (d.len(), d.len()));
        let mut start = span.start + open;
        let mut inner = raw.get(open..raw.len() - close).unwrap_or_default();
        // TOML drops a newline right after an opening triple quote.
        if open == 3 {
            for newline in ["\r\n", "\n"] {
                if let Some(rest) = inner.strip_prefix(newline) {
                    start += newline.len();
                    inner = rest;
                    break;
                }
            }
        }
        let offset = if inner == value {
            start + e.offset
        } else {
            span.start
        };
        self.error_at(offset, e.message.clone())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    transform: Option<IgnoredAny>,
    rule: RuleSection,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSection {
    name: String,
    rule_id: String,
    description: String,
    #[serde(default = "default_version")]
    version: u32,
    severity: Spanned<String>,
    risk_score: Spanned<u32>,
    #[serde(rename = "type")]
    rule_type: Spanned<String>,
    #[serde(default)]
    language: Option<Spanned<String>>,
    query: Spanned<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default = "default_interval")]
    interval: Spanned<String>,
    #[serde(default = "default_max_signals")]
    max_signals: Spanned<u32>,
    #[serde(default)]
    references: Vec<String>,
    #[serde(default)]
    author: Vec<String>,
    #[serde(default)]
    license: String,
    #[serde(default)]
    ruleset: Option<String>,
    #[serde(default)]
    threat: Vec<ThreatSection>,
    #[serde(default)]
    exceptions: Vec<ExceptionSpec>,
    // Keys of Elastic's format for Kibana (schedule window, timeline,
    // integrations, response actions...), accepted and not used.
    #[serde(default)]
    #[allow(dead_code)]
    actions: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    alert_suppression: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    building_block_type: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    data_view_id: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    enabled: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    event_category_override: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    exceptions_list: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    false_positives: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    filters: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    from: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    index: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    investigation_fields: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    meta: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    output_index: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    related_integrations: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    required_fields: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    response_actions: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    revision: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    risk_score_mapping: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    rule_name_override: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    setup: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    severity_mapping: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    throttle: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    tiebreaker_field: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    timeline_id: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    timeline_title: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    timestamp_field: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    timestamp_override: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    to: Option<IgnoredAny>,
}

fn default_version() -> u32 {
    1
}

fn default_interval() -> Spanned<String> {
    Spanned::new(0..0, "5m".to_owned())
}

fn default_max_signals() -> Spanned<u32> {
    Spanned::new(0..0, 100)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThreatSection {
    framework: String,
    tactic: AttackRefSection,
    #[serde(default)]
    technique: Vec<TechniqueSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttackRefSection {
    id: String,
    name: String,
    reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TechniqueSection {
    id: String,
    name: String,
    reference: String,
    #[serde(default)]
    subtechnique: Vec<AttackRefSection>,
}

impl From<AttackRefSection> for AttackRef {
    fn from(s: AttackRefSection) -> Self {
        AttackRef {
            id: s.id,
            name: s.name,
            reference: s.reference,
        }
    }
}

/// How `values` of a field exception compare.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// Case-sensitive equality (`in`).
    #[default]
    Exact,
    /// Case-insensitive equality (`in~`).
    Insensitive,
    /// Case-insensitive wildcards (`:`).
    Wildcard,
}

/// One exception as written: an EQL condition, or a field and its values.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExceptionSpec {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub query: Option<Spanned<String>>,
    #[serde(default)]
    pub field: Option<Spanned<String>>,
    #[serde(default)]
    pub values: Option<Spanned<Vec<String>>>,
    #[serde(default, rename = "match")]
    pub match_mode: MatchMode,
}

impl ExceptionSpec {
    /// Compiles the exception; `span` locates it for errors.
    pub fn compile(&self, src: &SourceText<'_>, span: usize) -> Result<Exception, RuleError> {
        let condition = match (&self.query, &self.field, &self.values) {
            (Some(query), None, None) => parse_condition(query.get_ref())
                .map_err(|e| src.error_in_string(query.span(), query.get_ref(), &e))?,
            (None, Some(field), Some(values)) => {
                field_exception(src, field, values, self.match_mode)?
            }
            (None, Some(field), None) => {
                return Err(src.error_at(
                    field.span().start,
                    "an exception with `field` needs `values`",
                ));
            }
            _ => {
                return Err(src.error_at(
                    span,
                    "an exception has either `query`, or `field` and `values`",
                ));
            }
        };
        Ok(Exception {
            description: self.description.clone(),
            condition,
        })
    }
}

fn field_exception(
    src: &SourceText<'_>,
    field: &Spanned<String>,
    values: &Spanned<Vec<String>>,
    mode: MatchMode,
) -> Result<Expr, RuleError> {
    let Some(id) = Field::from_path(field.get_ref()) else {
        return Err(src.error_at(
            field.span().start,
            format!("unknown field `{}`", field.get_ref()),
        ));
    };
    if values.get_ref().is_empty() {
        return Err(src.error_at(values.span().start, "`values` is empty"));
    }
    let literal = |v: &String| -> Result<Literal, RuleError> {
        match id.kind() {
            Kind::Keyword => Ok(Literal::Keyword(v.clone())),
            Kind::Long => v.parse().map(Literal::Long).map_err(|_| {
                src.error_at(
                    values.span().start,
                    format!("`{}` takes numbers", id.path()),
                )
            }),
            Kind::Boolean => v.parse().map(Literal::Boolean).map_err(|_| {
                src.error_at(
                    values.span().start,
                    format!("`{}` takes true or false", id.path()),
                )
            }),
        }
    };
    let test = match mode {
        MatchMode::Exact => Test::In(
            values
                .get_ref()
                .iter()
                .map(literal)
                .collect::<Result<_, _>>()?,
        ),
        MatchMode::Insensitive => Test::InFolded(
            values
                .get_ref()
                .iter()
                .map(|v| literal(&v.to_lowercase()))
                .collect::<Result<_, _>>()?,
        ),
        MatchMode::Wildcard => {
            if id.kind() != Kind::Keyword {
                return Err(src.error_at(
                    field.span().start,
                    format!("`{}` is a number: no wildcards", id.path()),
                ));
            }
            Test::Wildcard(
                values
                    .get_ref()
                    .iter()
                    .map(|v| Wildcard::insensitive(v))
                    .collect(),
            )
        }
    };
    Ok(Expr::Compare { field: id, test })
}

const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// Parses a rule file's text; the first error, if any.
pub fn parse_rule(text: &str, source: &str) -> Result<Rule, RuleError> {
    check_rule(text, source).map_err(|mut errors| errors.swap_remove(0))
}

/// Parses a rule file's text, with every error it has.
pub fn check_rule(text: &str, source: &str) -> Result<Rule, Vec<RuleError>> {
    let src = SourceText { name: source, text };
    let file: RuleFile = toml::from_str(text).map_err(|e| vec![src.toml_error(&e)])?;
    let r = file.rule;
    let mut errors = Vec::new();

    for (key, value) in [
        ("type", &r.rule_type),
        ("language", r.language.as_ref().unwrap_or(&r.rule_type)),
    ] {
        if value.get_ref() != "eql" {
            errors.push(src.error_at(
                value.span().start,
                format!(
                    "rule {key} `{}` is not supported (only `eql`)",
                    value.get_ref()
                ),
            ));
        }
    }
    if !SEVERITIES.contains(&r.severity.get_ref().as_str()) {
        errors.push(src.error_at(
            r.severity.span().start,
            format!(
                "severity `{}` is not one of low, medium, high, critical",
                r.severity.get_ref()
            ),
        ));
    }
    if *r.risk_score.get_ref() > 100 {
        errors.push(src.error_at(r.risk_score.span().start, "risk_score is 0 to 100"));
    }
    if r.rule_id.trim().is_empty() {
        errors.push(src.error_at(0, "rule_id is empty"));
    }
    if *r.max_signals.get_ref() == 0 {
        errors.push(src.error_at(r.max_signals.span().start, "max_signals must be at least 1"));
    }
    let interval = parse_interval(r.interval.get_ref());
    if interval.is_none() {
        errors.push(src.error_at(
            r.interval.span().start,
            format!(
                "interval `{}` is not a duration like `30s`, `5m` or `1h`",
                r.interval.get_ref()
            ),
        ));
    }
    let in_query = |e: &EqlError| src.error_in_string(r.query.span(), r.query.get_ref(), e);
    let query = parse_query_all(r.query.get_ref())
        .map_err(|query_errors| errors.extend(query_errors.iter().map(in_query)))
        .ok();
    let mut exceptions = Vec::with_capacity(r.exceptions.len());
    for spec in &r.exceptions {
        let at = spec
            .query
            .as_ref()
            .or(spec.field.as_ref())
            .map_or(0, |s| s.span().start);
        match spec.compile(&src, at) {
            Ok(exception) => exceptions.push(exception),
            Err(e) => errors.push(e),
        }
    }
    let (Some(query), Some(interval), true) = (query, interval, errors.is_empty()) else {
        return Err(errors);
    };
    let mut warnings: Vec<RuleError> = query
        .notices
        .iter()
        .map(|n| {
            in_query(&EqlError {
                offset: n.offset,
                message: n.message.clone(),
            })
        })
        .collect();
    let steps = match &query.shape {
        Shape::Event(step) => std::slice::from_ref(step),
        Shape::Sequence(sequence) => sequence.steps.as_slice(),
    };
    for (i, step) in steps.iter().enumerate() {
        if let Some(why) = reach::never_fires(&step.condition, step.category) {
            let which = match query.shape {
                Shape::Event(_) => "this rule".to_owned(),
                Shape::Sequence(_) => format!("step {} of this sequence", i + 1),
            };
            warnings.push(src.error_at(
                r.query.span().start,
                format!("{which} can never fire on mapwatch's events: {why}"),
            ));
        }
    }

    let threats = r
        .threat
        .into_iter()
        .map(|t| Threat {
            framework: t.framework,
            tactic: t.tactic.into(),
            techniques: t
                .technique
                .into_iter()
                .map(|tech| {
                    (
                        AttackRef {
                            id: tech.id,
                            name: tech.name,
                            reference: tech.reference,
                        },
                        tech.subtechnique.into_iter().map(AttackRef::from).collect(),
                    )
                })
                .collect(),
        })
        .collect();

    Ok(Rule {
        meta: RuleMeta {
            name: r.name,
            rule_id: r.rule_id,
            description: r.description,
            version: r.version,
            severity: r.severity.into_inner(),
            risk_score: r.risk_score.into_inner(),
            references: r.references,
            author: r.author,
            license: r.license,
            ruleset: r.ruleset.unwrap_or_else(|| "custom".to_owned()),
            tags: r.tags,
            threats,
        },
        body: query.shape,
        query_text: r.query.into_inner(),
        exceptions,
        source: source.to_owned(),
        interval,
        max_signals: r.max_signals.into_inner(),
        warnings,
    })
}

/// Reads and parses a rule file; the first error, if any.
pub fn load_rule_file(path: &Path) -> Result<Rule, RuleError> {
    check_rule_file(path).map_err(|mut errors| errors.swap_remove(0))
}

/// Reads and parses a rule file, with every error it has.
pub fn check_rule_file(path: &Path) -> Result<Rule, Vec<RuleError>> {
    let source = path.display().to_string();
    let whole_file = |message: String| {
        vec![RuleError {
            source: source.clone(),
            line: 0,
            column: 0,
            message,
        }]
    };
    crate::privileges::check_trusted(path).map_err(whole_file)?;
    let text = std::fs::read_to_string(path).map_err(|e| whole_file(e.to_string()))?;
    check_rule(&text, &source)
}

/// `30s`, `5m`, `1h`, `1d`.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = text[..unit_at].parse().ok()?;
    let secs = match &text[unit_at..] {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}
