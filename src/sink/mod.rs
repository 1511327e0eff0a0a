//! Sinks: where alerts go. They run on a thread of their own behind a
//! bounded channel, so a slow consumer (a paused terminal, a full disk)
//! never stalls the pipeline; alerts that find the channel full are dropped
//! and counted.
//!
//! Contract: in the foreground, alerts go to stdout (one ECS JSON document
//! per line, or one escaped line of text each); as a service, to the JSON
//! file (`output.json_file`, `-` for stdout). A sink that fails does not
//! stop the others or the pipeline.

pub mod json_file;
pub mod metrics;
pub mod syslog;

use std::io::{self, Write};
use std::path::PathBuf;

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::alert::Alert;
use json_file::JsonFile;
use syslog::{SyslogConfig, SyslogSink};

/// `[output]`: where the service writes its alerts.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One readable line per alert.
    Text,
    /// One ECS JSON document per line.
    Json,
}

/// What the pipeline tells the sink thread.
pub enum SinkMessage {
    Alert(Alert),
    /// A `mapwatch.health` report: delivered like an alert, but a sink that
    /// fails to take it does not count a new loss (that would report itself
    /// again every second while, say, the disk stays full).
    Health(Alert),
    /// A `mapwatch.stats` document: to the JSON file only.
    Stats(serde_json::Value),
    /// Sinks reloaded on SIGHUP (files reopened, after log rotation).
    Replace(Box<Sinks>),
}

/// The sinks in use.
pub struct Sinks {
    pub console: Option<OutputFormat>,
    /// Colour the text lines (a terminal, and no `NO_COLOR`).
    pub color: bool,
    pub file: Option<JsonFile>,
    pub syslog: Option<SyslogSink>,
}

impl Sinks {
    /// The sinks of a run: stdout in the foreground, the JSON file as a
    /// service, and syslog when enabled. An unusable alert file is a
    /// start-up error, not a silent loss.
    pub fn open(
        output: &OutputConfig,
        syslog: &SyslogConfig,
        hostname: &str,
        foreground: bool,
        format: OutputFormat,
    ) -> io::Result<Sinks> {
        let path = &output.json_file;
        let syslog = syslog.open(hostname);
        let (console, file) = if foreground {
            (Some(format), None)
        } else if path.as_os_str().is_empty() {
            (None, None)
        } else if path.as_os_str() == "-" {
            (Some(OutputFormat::Json), None)
        } else {
            let file = JsonFile::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("alert file {}: {e}", path.display()))
            })?;
            tracing::info!("alerts go to {}", path.display());
            (None, Some(file))
        };
        let color = color_wanted(
            io::IsTerminal::is_terminal(&io::stdout()),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        Ok(Sinks {
            console,
            color,
            file,
            syslog,
        })
    }
}

/// Alerts a sink could not take, shared with the pipeline's health check.
#[derive(Default, Debug)]
pub struct SinkStats {
    /// Documents the JSON file could not be written (a full disk...).
    pub file_lost: std::sync::atomic::AtomicU64,
    /// Messages dropped from a full syslog queue.
    pub syslog_dropped: std::sync::atomic::AtomicU64,
}

/// How often a syslog daemon that went away is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(200);
/// How long shutdown waits for a syslog daemon to take what is queued.
const DRAIN_AT_EXIT: Duration = Duration::from_secs(2);

/// Delivers messages until the channel closes.
pub fn deliver(messages: Receiver<SinkMessage>, mut sinks: Sinks, stats: &SinkStats) {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    loop {
        let message = match messages.recv_timeout(RETRY_EVERY) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(syslog) = &mut sinks.syslog {
                    syslog.drain();
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let (alert, counted) = match message {
            SinkMessage::Alert(alert) => (alert, true),
            SinkMessage::Health(alert) => (alert, false),
            SinkMessage::Stats(document) => {
                if let Some(file) = &mut sinks.file {
                    file.write(&document);
                }
                continue;
            }
            SinkMessage::Replace(new) => {
                if let Some(syslog) = &mut sinks.syslog {
                    syslog.drain();
                }
                sinks = *new;
                continue;
            }
        };
        if let Some(format) = sinks.console
            && let Err(e) = write_console(&mut out, format, sinks.color, &alert)
        {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::error!("writing alerts to stdout: {e}");
            }
            // Nobody reads stdout any more: keep the other sinks going.
            sinks.console = None;
        }
        if let Some(file) = &mut sinks.file {
            let before = file.lost;
            file.write(&alert.document);
            if counted {
                stats
                    .file_lost
                    .fetch_add(file.lost - before, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if let Some(syslog) = &mut sinks.syslog {
            let before = syslog.dropped;
            syslog.send(&alert);
            if counted {
                stats.syslog_dropped.fetch_add(
                    syslog.dropped - before,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
    }
    if let Some(syslog) = &mut sinks.syslog {
        let deadline = Instant::now() + DRAIN_AT_EXIT;
        while syslog.pending() > 0 && Instant::now() < deadline {
            std::thread::sleep(RETRY_EVERY);
            syslog.drain();
        }
        if syslog.pending() > 0 || syslog.dropped > 0 {
            tracing::error!(
                "syslog: {} alerts never delivered ({} still queued at exit, {} dropped from a full queue)",
                syslog.pending() as u64 + syslog.dropped,
                syslog.pending(),
                syslog.dropped
            );
        }
    }
}

/// Whether text may be coloured: only on a terminal, and never when
/// `NO_COLOR` is set to anything (<https://no-color.org>).
pub fn color_wanted(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The SGR colour of an alert's severity.
fn severity_color(alert: &Alert) -> Option<&'static str> {
    match alert.document["mapwatch"]["rule"]["severity"].as_str()? {
        "low" => Some("36"),
        "medium" => Some("33"),
        "high" => Some("31"),
        "critical" => Some("1;31"),
        _ => None,
    }
}

/// One alert on a console stream: a JSON document or a summary line.
pub fn write_console(
    out: &mut impl Write,
    format: OutputFormat,
    color: bool,
    alert: &Alert,
) -> io::Result<()> {
    match format {
        OutputFormat::Json => serde_json::to_writer(&mut *out, &alert.document)?,
        OutputFormat::Text => match color.then(|| severity_color(alert)).flatten() {
            Some(code) => write!(out, "\x1b[{code}m{}\x1b[0m", alert.summary)?,
            None => out.write_all(alert.summary.as_bytes())?,
        },
    }
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alert(severity: &str) -> Alert {
        Alert {
            document: json!({"mapwatch": {"rule": {"severity": severity}}}),
            summary: "summary".into(),
            ..Alert::default()
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(color_wanted(true, None));
        assert!(color_wanted(true, Some(std::ffi::OsStr::new(""))));
        assert!(!color_wanted(true, Some(std::ffi::OsStr::new("1"))));
        assert!(!color_wanted(false, None));
    }

    #[test]
    fn text_lines_are_coloured_by_severity_or_plain() {
        let mut out = Vec::new();
        write_console(&mut out, OutputFormat::Text, true, &alert("medium")).expect("write");
        write_console(&mut out, OutputFormat::Text, false, &alert("medium")).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "\x1b[33msummary\x1b[0m\nsummary\n"
        );
    }
}
