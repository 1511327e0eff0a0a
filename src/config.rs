//! The TOML configuration (`/etc/mapwatch/mapwatch.toml`).
//!
//! Contract: every key has a default (documented in
//! `packaging/mapwatch.toml`); unknown keys and invalid values are errors that
//! name the file, the key and its line. A missing file at the default path
//! means "all defaults"; a missing file given with `--config` is an error.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::rule::file::ExceptionSpec;

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
    pub rules: RulesConfig,
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
pub struct OutputConfig {
    /// ECS JSON lines file of the service (`-`: stdout, empty: none). In
    /// the foreground, stdout takes its place.
    pub json_file: PathBuf,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            json_file: PathBuf::from("/var/log/mapwatch/alerts.json"),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// Send alerts to syslog too.
    pub enabled: bool,
    /// `unix:PATH`, `udp:HOST:PORT` or `tcp:HOST:PORT`.
    pub address: String,
    pub format: crate::sink::syslog::Format,
    pub facility: String,
    pub app_name: String,
    /// Longer messages are cut (at a UTF-8 boundary, with a marker).
    pub max_message_bytes: usize,
    /// Messages kept while the daemon is away.
    pub queue: usize,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            enabled: false,
            address: "unix:/dev/log".into(),
            format: crate::sink::syslog::Format::Rfc5424,
            facility: "authpriv".into(),
            app_name: "mapwatch".into(),
            max_message_bytes: 8192,
            queue: 10_000,
        }
    }
}

impl SyslogConfig {
    /// The transport named by `address`.
    pub fn transport(&self) -> Option<crate::sink::syslog::Transport> {
        use crate::sink::syslog::Transport;
        let (kind, rest) = self.address.split_once(':')?;
        match kind {
            "unix" if !rest.is_empty() => Some(Transport::Unix(PathBuf::from(rest))),
            "udp" if rest.contains(':') => Some(Transport::Udp(rest.to_owned())),
            "tcp" if rest.contains(':') => Some(Transport::Tcp(rest.to_owned())),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FanotifyConfig {
    /// Watch /proc with fanotify to confirm reads and see reads no argument names.
    pub enabled: bool,
    /// How long an exec alert waits for the read that confirms it, ms.
    pub confirm_window_ms: u64,
    /// How long a read waits for its exec event before the file rules see it, ms.
    pub hold_ms: u64,
}

impl Default for FanotifyConfig {
    fn default() -> Self {
        FanotifyConfig {
            enabled: true,
            confirm_window_ms: 250,
            hold_ms: 100,
        }
    }
}

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

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `unicast` (the audit daemon), `multicast` (beside it), or `auto`.
    pub mode: crate::source::netlink::AuditMode,
    /// Where records are dropped when mapwatch falls behind: `kernel` or
    /// `userspace`.
    pub backpressure: crate::source::netlink::Backpressure,
    /// Kernel queue of records awaiting delivery (`auditctl -b`).
    pub backlog_limit: u32,
    /// SO_RCVBUF of the record socket, bytes.
    pub receive_buffer: usize,
    /// Where the pre-start audit status is kept until a clean shutdown.
    pub state_file: PathBuf,
    /// Events held waiting for their EOE record, at most.
    pub max_events_in_flight: usize,
    /// How long an event without EOE waits before it is flushed, ms.
    pub event_timeout_ms: u64,
    /// Record batches queued between the reader and the pipeline.
    pub queue_batches: usize,
    /// Under a dense stream of records, read the socket every this many ms
    /// instead of at every record's wake-up; 0: at every wake-up.
    pub poll_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            mode: crate::source::netlink::AuditMode::Auto,
            backpressure: crate::source::netlink::Backpressure::Kernel,
            backlog_limit: 8192,
            receive_buffer: 8 << 20,
            state_file: PathBuf::from("/run/mapwatch/audit-state.json"),
            max_events_in_flight: 4096,
            event_timeout_ms: 500,
            queue_batches: 1024,
            poll_interval_ms: 10,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Processes remembered, live and recently gone.
    pub table_capacity: usize,
    /// How long a gone process stays in the table, seconds.
    pub gone_grace_secs: u64,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            table_capacity: 65536,
            gone_grace_secs: 10,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Seconds between stats lines on stderr; 0 turns them off.
    pub stats_interval_secs: u64,
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

    fn validate(&self, text: &str) -> Result<(), String> {
        let checks: [(&str, &str, bool); 12] = [
            ("syslog", "address", self.syslog.transport().is_some()),
            (
                "syslog",
                "facility",
                crate::sink::syslog::facility_code(&self.syslog.facility).is_some(),
            ),
            (
                "syslog",
                "max_message_bytes",
                self.syslog.max_message_bytes >= 480,
            ),
            (
                "fanotify",
                "confirm_window_ms",
                self.fanotify.confirm_window_ms > 0,
            ),
            ("fanotify", "hold_ms", self.fanotify.hold_ms > 0),
            ("audit", "backlog_limit", self.audit.backlog_limit > 0),
            (
                "audit",
                "max_events_in_flight",
                self.audit.max_events_in_flight > 0,
            ),
            ("audit", "event_timeout_ms", self.audit.event_timeout_ms > 0),
            ("audit", "queue_batches", self.audit.queue_batches > 0),
            (
                "audit",
                "poll_interval_ms",
                self.audit.poll_interval_ms <= MAX_POLL_INTERVAL_MS,
            ),
            (
                "audit",
                "receive_buffer",
                self.audit.receive_buffer >= 65536,
            ),
            (
                "process",
                "table_capacity",
                self.process.table_capacity >= 1024,
            ),
        ];
        for (table, key, ok) in checks {
            if !ok {
                let line = line_of_key(text, table, key)
                    .map(|l| format!("line {l}: "))
                    .unwrap_or_default();
                let limit = match key {
                    "address" => "`unix:PATH`, `udp:HOST:PORT` or `tcp:HOST:PORT`",
                    "facility" => "a syslog facility name (e.g. authpriv, local0)",
                    "max_message_bytes" => "at least 480",
                    "receive_buffer" => "at least 65536",
                    "table_capacity" => "at least 1024",
                    "poll_interval_ms" => "at most 100",
                    _ => "greater than 0",
                };
                return Err(format!("{line}`{table}.{key}` must be {limit}"));
            }
        }
        Ok(())
    }
}

/// Beyond this, records would wait in the kernel longer than a detector
/// should take to see them.
const MAX_POLL_INTERVAL_MS: u64 = 100;

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
