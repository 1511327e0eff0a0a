//! The TOML configuration (`/etc/mapwatch/mapwatch.toml`): the settings of
//! each component, which owns and checks them, gathered in one file.
//!
//! Contract: every key has a default (documented in
//! `packaging/mapwatch.toml`); unknown keys and invalid values are errors that
//! name the file, the key and its line. A missing file at the default path
//! means "all defaults"; a missing file given with `--config` is an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::process::ProcessConfig;
use crate::rule::file::{ExceptionSpec, RuleError, SourceText};
use crate::rule::{RuleSet, RulesConfig};
use crate::sink::OutputConfig;
use crate::sink::metrics::MetricsConfig;
use crate::sink::syslog::SyslogConfig;
use crate::source::fanotify::FanotifyConfig;
use crate::source::log::PluginConfig;
use crate::source::netlink::AuditConfig;

pub const DEFAULT_PATH: &str = "/etc/mapwatch/mapwatch.toml";

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub audit: AuditConfig,
    pub process: ProcessConfig,
    pub log: LogConfig,
    pub fanotify: FanotifyConfig,
    pub output: OutputConfig,
    pub syslog: SyslogConfig,
    pub metrics: MetricsConfig,
    pub rules: RulesConfig,
    pub plugin: PluginConfig,
    /// Global exceptions: a match of any rule is suppressed when one holds.
    pub exceptions: Vec<ExceptionSpec>,
    /// The text the configuration was read from (for error positions).
    #[serde(skip)]
    pub source_text: String,
    #[serde(skip)]
    pub source_path: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Seconds between stats lines on stderr; 0 turns them off.
    pub stats_interval_secs: u64,
}

impl LogConfig {
    /// Zero: no stats line.
    pub fn stats_interval(&self) -> Duration {
        Duration::from_secs(self.stats_interval_secs)
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            stats_interval_secs: 60,
        }
    }
}

/// A configuration that cannot be used; the message names file, key and line.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads `path`, or the defaults when `path` is the default path and
    /// there is no file there.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        if path.exists()
            && let Err(message) = crate::privileges::check_trusted(&path)
        {
            return Err(ConfigError { path, message });
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => match Config::parse(&text) {
                Ok(config) => Ok(Config {
                    source_path: Some(path),
                    ..config
                }),
                Err(message) => Err(ConfigError { path, message }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(e) => Err(ConfigError {
                path,
                message: e.to_string(),
            }),
        }
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        config.validate(text)?;
        Ok(Config {
            source_text: text.to_owned(),
            ..config
        })
    }

    /// How errors name the configuration.
    pub fn source_name(&self) -> String {
        self.source_path.as_ref().map_or_else(
            || "(default configuration)".to_owned(),
            |p| p.display().to_string(),
        )
    }

    /// The rules this configuration loads, with its global exceptions.
    pub fn load_rules(&self) -> Result<RuleSet, RuleError> {
        let source = SourceText {
            name: &self.source_name(),
            text: &self.source_text,
        };
        RuleSet::load(&self.rules, &self.exceptions, &source)
    }

    /// Each component checks its own settings; the error names the key's
    /// line in `text`.
    fn validate(&self, text: &str) -> Result<(), String> {
        let checks = [
            ("syslog", self.syslog.invalid_key()),
            ("fanotify", self.fanotify.invalid_key()),
            ("audit", self.audit.invalid_key()),
            ("process", self.process.invalid_key()),
        ];
        if let Some((key, must_be)) = self.metrics.invalid_key() {
            let line = line_of_key(text, "metrics", key)
                .map(|l| format!("line {l}: "))
                .unwrap_or_default();
            return Err(format!("{line}`metrics.{key}` must be {must_be}"));
        }
        let Some((table, (key, must_be))) = checks
            .into_iter()
            .find_map(|(table, invalid)| Some((table, invalid?)))
        else {
            return Ok(());
        };
        let line = line_of_key(text, table, key)
            .map(|l| format!("line {l}: "))
            .unwrap_or_default();
        Err(format!("{line}`{table}.{key}` must be {must_be}"))
    }
}

/// The 1-based line where `key` is set inside `[table]`.
fn line_of_key(text: &str, table: &str, key: &str) -> Option<usize> {
    let header = format!("[{table}]");
    let mut in_table = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            in_table = line == header;
        } else if in_table && line.split('=').next().is_some_and(|k| k.trim() == key) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults() {
        let parsed = Config::parse("").expect("valid");
        assert_eq!(parsed.audit, Config::default().audit);
        assert_eq!(parsed.rules, Config::default().rules);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err =
            Config::parse("[audit]\nbacklog_limit = 100\nbacklog = 5\n").expect_err("unknown key");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("backlog"), "{err}");
    }

    #[test]
    fn unknown_table_is_an_error() {
        let err = Config::parse("[auditd]\n").expect_err("unknown table");
        assert!(err.contains("auditd"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let err = Config::parse("\n[audit]\nbacklog_limit = \"big\"\n").expect_err("wrong type");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn invalid_value_names_key_and_line() {
        let err = Config::parse("[audit]\n\nbacklog_limit = 0\n").expect_err("zero");
        assert_eq!(err, "line 3: `audit.backlog_limit` must be greater than 0");
    }

    #[test]
    fn shipped_default_config_is_valid_and_matches_defaults() {
        let text = include_str!("../packaging/mapwatch.toml");
        let shipped = Config::parse(text).expect("shipped config parses");
        let defaults = Config::default();
        assert_eq!(shipped.audit, defaults.audit);
        assert_eq!(shipped.process, defaults.process);
        assert_eq!(shipped.log, defaults.log);
        assert_eq!(shipped.fanotify, defaults.fanotify);
        assert_eq!(shipped.output, defaults.output);
        assert_eq!(shipped.syslog, defaults.syslog);
        assert_eq!(shipped.rules, defaults.rules);
        assert_eq!(shipped.exceptions, defaults.exceptions);
    }
}
