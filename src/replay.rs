//! `mapwatch replay FILE...`: the detector over recorded audit logs.
//!
//! Contract: files are read in the order given (a rotated set oldest first)
//! as one stream, so an event split across a rotation is still whole. The
//! process table is built from the log's own exec and setsid history, never
//! from this machine's procfs. Every alert goes to stdout (no rate limit: a
//! replay is an investigation); the end summary goes to stderr, with the
//! entry leaders the log's history could not resolve. A file that cannot be
//! read is reported and skipped, and makes the exit status 1.
//!
//! A log that several hosts' auditds wrote (an aggregation server's:
//! `node=NAME` before each record) is replayed node by node (the
//! detector keeps each node apart), and the summary counts the nodes.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Instant;

use crate::alert::Alert;
use crate::config::Config;
use crate::detector::Detector;
use crate::rule::RuleSet;
use crate::sink::{OutputFormat, write_console};
use crate::source::log::{open_log, read_line};

pub struct ReplayOptions {
    pub config: Config,
    pub rules: RuleSet,
    /// Log files, `-` for stdin.
    pub paths: Vec<PathBuf>,
    pub format: OutputFormat,
    pub verbose: bool,
}

/// What a replay did, for the summary line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplaySummary {
    pub files: usize,
    pub unreadable_files: usize,
    pub records: u64,
    pub malformed_records: u64,
    pub exec_events: u64,
    /// Events that never got their end record (flushed or evicted).
    pub events_without_end: u64,
    pub session_starts: u64,
    /// Audit login sessions opened (LOGIN records).
    pub logins: u64,
    /// ioctl(PROCMAP_QUERY) calls: map reads whose map a log cannot name
    /// (the querier's fd), counted, not alerted.
    pub map_queries: u64,
    pub alerts: u64,
    pub unresolved_entry_leaders: u64,
    /// Entry leaders the log did not record, inferred
    /// ([`crate::process::history`]).
    pub inferred_entry_leaders: u64,
    pub serial_gaps: u64,
    /// Hosts named by `node=` (0 for a single host's log).
    pub nodes: usize,
    pub seconds: f64,
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replayed {} files ({} unreadable{}): {} records ({} malformed), {} exec events ({} without an end record), {} session starts, {} logins, {} PROCMAP_QUERY ioctls, {} alerts, {} unresolved entry leaders, {} inferred entry leaders, {} serial gaps in {:.3} s ({:.0} records/s)",
            self.files,
            self.unreadable_files,
            match self.nodes {
                0 => String::new(),
                n => format!(", {n} nodes"),
            },
            self.records,
            self.malformed_records,
            self.exec_events,
            self.events_without_end,
            self.session_starts,
            self.logins,
            self.map_queries,
            self.alerts,
            self.unresolved_entry_leaders,
            self.inferred_entry_leaders,
            self.serial_gaps,
            self.seconds,
            self.records as f64 / self.seconds.max(1e-9),
        )
    }
}

/// Replays the files, writing alerts to `out`.
pub fn replay(options: ReplayOptions, out: &mut impl Write) -> ReplaySummary {
    let started = Instant::now();
    let mut detector = Detector::for_recorded_log(&options.config, options.rules, options.verbose);
    let mut summary = ReplaySummary::default();
    let mut output_error = None;
    let mut emit = |alert: Alert| {
        if output_error.is_none()
            && let Err(e) = write_console(out, options.format, false, &alert)
        {
            output_error = Some(e);
        }
    };
    let mut line = Vec::new();
    for path in &options.paths {
        summary.files += 1;
        let mut reader = match open_log(path) {
            Ok(reader) => reader,
            Err(e) => {
                tracing::error!("{}: {e}", path.display());
                summary.unreadable_files += 1;
                continue;
            }
        };
        loop {
            match read_line(&mut reader, &mut line) {
                Ok(true) if line.is_empty() => {}
                Ok(true) => detector.on_log_line(&line, Instant::now(), &mut emit),
                Ok(false) => break,
                Err(e) => {
                    tracing::error!("{}: {e}", path.display());
                    summary.unreadable_files += 1;
                    break;
                }
            }
        }
    }
    detector.flush(&mut emit);
    if let Some(e) = output_error
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        tracing::error!("writing alerts: {e}");
    }
    summary.add(&detector);
    for node in detector.nodes() {
        summary.add(node);
    }
    summary.nodes = detector.nodes().count();
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}

impl ReplaySummary {
    /// What one node's detector saw.
    fn add(&mut self, detector: &Detector) {
        let stats = detector.stats();
        let assembled = detector.assembler_stats();
        self.records += stats.records;
        self.malformed_records += stats.malformed_records;
        self.exec_events += assembled.exec_events;
        self.session_starts += assembled.session_starts;
        self.logins += assembled.logins;
        self.map_queries += assembled.map_queries;
        self.events_without_end += assembled.flushed_without_eoe + assembled.evicted;
        self.alerts += stats.alerts;
        self.unresolved_entry_leaders += stats.unresolved_entry_leaders;
        self.inferred_entry_leaders += stats.inferred_entry_leaders;
        self.serial_gaps += detector.serial_stats().gaps;
    }
}
