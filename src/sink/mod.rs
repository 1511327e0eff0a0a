//! Sinks: where alerts go. The sink runs on its own thread behind a bounded
//! channel, so a slow consumer (a paused terminal, a full pipe) never stalls
//! the pipeline; alerts that find the channel full are dropped and counted.
//!
//! Contract: JSON output is exactly one ECS document per line and nothing
//! else on stdout; text output is one escaped line per alert.

use std::io::{self, Write};

use crate::alert::Alert;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One readable line per alert.
    Text,
    /// One ECS JSON document per line.
    Json,
}

/// Writes alerts to `out`, flushing after each, until the channel closes.
pub fn write_alerts(
    mut alerts: tokio::sync::mpsc::Receiver<Alert>,
    format: OutputFormat,
    out: impl Write,
) -> io::Result<()> {
    let mut out = io::BufWriter::new(out);
    while let Some(alert) = alerts.blocking_recv() {
        match format {
            OutputFormat::Json => serde_json::to_writer(&mut out, &alert.document)?,
            OutputFormat::Text => out.write_all(alert.summary.as_bytes())?,
        }
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}
