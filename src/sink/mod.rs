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

use std::io::{self, Write};

use crate::alert::Alert;
use json_file::JsonFile;

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
    /// A `mapwatch.stats` document: to the JSON file only.
    Stats(serde_json::Value),
    /// Reopen files (SIGHUP, after log rotation).
    Reopen,
}

/// The sinks in use.
pub struct Sinks {
    pub console: Option<OutputFormat>,
    pub file: Option<JsonFile>,
}

/// Delivers messages until the channel closes.
pub fn deliver(mut messages: tokio::sync::mpsc::Receiver<SinkMessage>, mut sinks: Sinks) {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    while let Some(message) = messages.blocking_recv() {
        let alert = match message {
            SinkMessage::Alert(alert) => alert,
            SinkMessage::Stats(document) => {
                if let Some(file) = &mut sinks.file {
                    file.write(&document);
                }
                continue;
            }
            SinkMessage::Reopen => {
                if let Some(file) = &mut sinks.file {
                    file.reopen();
                    tracing::info!("reopened {}", file.path().display());
                }
                continue;
            }
        };
        if let Some(format) = sinks.console
            && let Err(e) = write_console(&mut out, format, &alert)
        {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::error!("writing alerts to stdout: {e}");
            }
            // Nobody reads stdout any more: keep the other sinks going.
            sinks.console = None;
        }
        if let Some(file) = &mut sinks.file {
            file.write(&alert.document);
        }
    }
}

fn write_console(out: &mut impl Write, format: OutputFormat, alert: &Alert) -> io::Result<()> {
    match format {
        OutputFormat::Json => serde_json::to_writer(&mut *out, &alert.document)?,
        OutputFormat::Text => out.write_all(alert.summary.as_bytes())?,
    }
    out.write_all(b"\n")?;
    out.flush()
}
