//! Detection rules as data: EQL queries in TOML rule files, compiled once and
//! evaluated against every event.
//!
//! Contract: [`RuleSet::load`] reads the shipped rules (compiled into the
//! binary from `rules/`) and every `*.toml` of the configured directories; a
//! file that fails to load stops the load with its `file:line:col` unless the
//! configuration says to skip it. A rule in a directory with the `rule_id` of
//! a shipped rule replaces it. A rule matches an event when the event has the
//! rule's category, its query is true, and neither one of its exceptions nor
//! one of the global exceptions is true.

pub mod eql;
pub mod eval;
pub mod field;
pub mod file;
pub mod index;
pub mod json;
pub mod live;
pub mod prefilter;
pub mod reach;
pub mod regexp;
pub mod regexp_runs;
pub mod wildcard;

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::ops::ControlFlow;

use eql::{Sequence, Shape, Step};
use eval::{Category, Event, Expr, Scalar};
use field::Field;
use file::{ExceptionSpec, RuleError, SourceText};
use index::RuleIndex;
use prefilter::{Found, Prefilter};

use serde::Deserialize;

/// `[rules]`: which rule files are loaded.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Load the rules shipped with mapwatch (compiled into the binary).
    pub shipped: bool,
    /// Directories whose `*.toml` rule files are loaded, in order.
    pub directories: Vec<PathBuf>,
    /// A rule file that fails to load: stop (`fail`) or log and go on (`skip`).
    pub on_error: OnRuleError,
    /// Rules (by `rule_id`) not to load.
    pub disabled: Vec<String>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            shipped: true,
            directories: vec![PathBuf::from("/etc/mapwatch/rules.d")],
            on_error: OnRuleError::Fail,
            disabled: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnRuleError {
    #[default]
    Fail,
    Skip,
}

/// A MITRE ATT&CK reference (`threat.tactic`, `threat.technique`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttackRef {
    pub id: String,
    pub name: String,
    pub reference: String,
}

/// One `[[rule.threat]]`: a tactic and its techniques (with sub-techniques).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Threat {
    pub framework: String,
    pub tactic: AttackRef,
    pub techniques: Vec<(AttackRef, Vec<AttackRef>)>,
}

/// What an alert says about the rule that raised it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMeta {
    pub name: String,
    pub rule_id: String,
    pub description: String,
    pub version: u32,
    pub severity: String,
    pub risk_score: u32,
    pub references: Vec<String>,
    pub author: Vec<String>,
    pub license: String,
    pub ruleset: String,
    pub tags: Vec<String>,
    pub threats: Vec<Threat>,
}

/// A condition that suppresses a match.
#[derive(Clone, Debug)]
pub struct Exception {
    pub description: String,
    pub condition: Expr,
}

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub meta: RuleMeta,
    /// One event's condition, or a sequence of them.
    pub body: Shape,
    pub query_text: String,
    pub exceptions: Vec<Exception>,
    /// The file it came from.
    pub source: String,
    pub interval: Duration,
    pub max_signals: u32,
    /// What to know about a rule that loads: comparisons on fields mapwatch
    /// never fills, a condition that can never hold on its events.
    pub warnings: Vec<RuleError>,
}

impl Rule {
    /// A single-event rule's query holds and no exception of the rule's own
    /// does; a sequence matches no single event.
    pub fn matches(&self, event: &mut dyn Event) -> bool {
        match &self.body {
            Shape::Event(step) => self.step_matches(step, event),
            Shape::Sequence(_) => false,
        }
    }

    /// The event is of the step's category, its condition holds, and no
    /// exception of the rule's own does (for a sequence, as Elastic applies
    /// exceptions to every event a sequence is built from).
    pub fn step_matches(&self, step: &Step, event: &mut dyn Event) -> bool {
        (step.category == Category::Any || event.is_category(step.category))
            && step.condition.matches(event)
            && !self.exceptions.iter().any(|e| e.condition.matches(event))
    }

    /// The single event's step; `None` for a sequence.
    pub fn event_step(&self) -> Option<&Step> {
        match &self.body {
            Shape::Event(step) => Some(step),
            Shape::Sequence(_) => None,
        }
    }

    pub fn sequence(&self) -> Option<&Sequence> {
        match &self.body {
            Shape::Sequence(sequence) => Some(sequence),
            Shape::Event(_) => None,
        }
    }

    /// `process`, `file`, `api`, or `sequence`.
    pub fn kind_name(&self) -> &'static str {
        match &self.body {
            Shape::Event(step) => step.category.as_str(),
            Shape::Sequence(_) => "sequence",
        }
    }
}

/// The rules shipped with mapwatch, as (file name, text).
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "proc_maps_discovery.toml",
        include_str!("../../rules/proc_maps_discovery.toml"),
    ),
    (
        "proc_maps_read_extended.toml",
        include_str!("../../rules/proc_maps_read_extended.toml"),
    ),
    (
        "proc_layout_read.toml",
        include_str!("../../rules/proc_layout_read.toml"),
    ),
    (
        "proc_mem_read.toml",
        include_str!("../../rules/proc_mem_read.toml"),
    ),
    (
        "proc_mem_write.toml",
        include_str!("../../rules/proc_mem_write.toml"),
    ),
    (
        "ptrace_poke.toml",
        include_str!("../../rules/ptrace_poke.toml"),
    ),
    (
        "process_vm_write.toml",
        include_str!("../../rules/process_vm_write.toml"),
    ),
    (
        "process_vm_read.toml",
        include_str!("../../rules/process_vm_read.toml"),
    ),
    (
        "proc_injection_chain.toml",
        include_str!("../../rules/proc_injection_chain.toml"),
    ),
];

/// Every rule in force, with the global exceptions.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub global_exceptions: Vec<Exception>,
    /// Files skipped under `on_error = "skip"`.
    pub skipped: Vec<RuleError>,
    /// Built once the rules are known; until then (or if `rules` changes
    /// in number) every rule is evaluated.
    index: RuleIndex,
    /// Likewise.
    prefilter: Prefilter,
}

impl RuleSet {
    /// The rules `settings` name, with the global `exceptions` of the
    /// configuration `config` (which their errors point into).
    pub fn load(
        settings: &RulesConfig,
        exceptions: &[ExceptionSpec],
        config: &SourceText<'_>,
    ) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet::default();
        if settings.shipped {
            for (name, text) in SHIPPED {
                set.rules
                    .push(file::parse_rule(text, &format!("rules/{name} (built in)"))?);
            }
        }
        set.rules
            .retain(|r| !settings.disabled.contains(&r.meta.rule_id));
        let shipped_count = set.rules.len();
        for dir in &settings.directories {
            for path in rule_files(dir)? {
                match file::load_rule_file(&path) {
                    Ok(rule) if settings.disabled.contains(&rule.meta.rule_id) => {}
                    Ok(rule) => {
                        for warning in &rule.warnings {
                            tracing::warn!("{warning}");
                        }
                        set.add_local(rule, shipped_count)?
                    }
                    Err(e) if settings.on_error == OnRuleError::Skip => {
                        tracing::error!("skipping rule file: {e}");
                        set.skipped.push(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        for spec in exceptions {
            let at = spec
                .query
                .as_ref()
                .or(spec.field.as_ref())
                .map_or(0, |s| s.span().start);
            set.global_exceptions.push(spec.compile(config, at)?);
        }
        set.index = RuleIndex::build(&set.rules);
        set.prefilter = Prefilter::build(&set.rules);
        if set.rules.is_empty() {
            return Err(RuleError {
                source: config.name.to_owned(),
                line: 0,
                column: 0,
                message: "no rules loaded: enable `rules.shipped` or add rule files to `rules.directories`".into(),
            });
        }
        Ok(set)
    }

    /// From a single file, for `mapwatch rules check|test`.
    pub fn from_rule(rule: Rule) -> RuleSet {
        let rules = vec![rule];
        RuleSet {
            index: RuleIndex::build(&rules),
            prefilter: Prefilter::build(&rules),
            rules,
            ..RuleSet::default()
        }
    }

    fn add_local(&mut self, rule: Rule, shipped_count: usize) -> Result<(), RuleError> {
        match self
            .rules
            .iter()
            .position(|r| r.meta.rule_id == rule.meta.rule_id)
        {
            Some(i) if i < shipped_count => {
                tracing::info!(
                    "{} replaces the shipped rule {} ({})",
                    rule.source,
                    rule.meta.rule_id,
                    rule.meta.name
                );
                self.rules[i] = rule;
                Ok(())
            }
            Some(i) => Err(RuleError {
                source: rule.source.clone(),
                line: 1,
                column: 1,
                message: format!(
                    "rule_id {} is also used by {}",
                    rule.meta.rule_id, self.rules[i].source
                ),
            }),
            None => {
                self.rules.push(rule);
                Ok(())
            }
        }
    }

    /// Calls `on_match` with the index of each rule that matches `event`,
    /// in rule order: the candidates the index gives for the event's
    /// `process.name`, or every rule when the index cannot tell.
    pub fn evaluate(&self, event: &mut dyn Event, on_match: &mut dyn FnMut(usize)) {
        let category = [Category::Process, Category::File, Category::Api]
            .into_iter()
            .find(|c| event.is_category(*c))
            .unwrap_or(Category::Any);
        let mut name = [0u8; index::MAX_NAME];
        let name = match (category, self.index.covers(self.rules.len())) {
            (_, false) => None,
            (Category::Process, true) => single_name(event, &mut name),
            (_, true) => Some(None),
        };
        let prefilter = Some(&self.prefilter).filter(|p| p.covers(self.rules.len()));
        let mut found = Found::new();
        let mut test = |index: usize| {
            if prefilter.is_none_or(|p| p.admits(index, event, &mut found))
                && self.rules[index].matches(event)
                && !self
                    .global_exceptions
                    .iter()
                    .any(|e| e.condition.matches(event))
            {
                on_match(index);
            }
        };
        match name {
            Some(name) => self.index.candidates(category, name, &mut test),
            None => (0..self.rules.len()).for_each(test),
        }
    }
}

/// The event's one `process.name`, copied into `buf`: `Some(None)` when it
/// has none, `None` when the index cannot be used (several names, or one
/// longer than a file name).
fn single_name<'b>(
    event: &mut dyn Event,
    buf: &'b mut [u8; index::MAX_NAME],
) -> Option<Option<&'b [u8]>> {
    let mut len = None;
    let mut count = 0;
    event.visit(Field::ProcessName, &mut |value| {
        count += 1;
        if let Scalar::Keyword(v) = value
            && v.len() <= buf.len()
        {
            buf[..v.len()].copy_from_slice(v);
            len = Some(v.len());
        }
        ControlFlow::Continue(())
    });
    match (count, len) {
        (0, _) => Some(None),
        (1, Some(len)) => Some(Some(&buf[..len])),
        _ => None,
    }
}

/// `*.toml` files of a directory, sorted; a missing directory has none.
fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, RuleError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(RuleError {
                source: dir.display().to_string(),
                line: 0,
                column: 0,
                message: e.to_string(),
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}
