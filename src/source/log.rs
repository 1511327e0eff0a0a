//! Audit records as text lines: auditd's log files (raw or enriched, a
//! rotated set read oldest first) and the feed auditd gives its plugins on
//! stdin.
//!
//! Contract: lines are handed over whole and unparsed (the detector parses
//! them, and counts the malformed ones); a line longer than
//! [`MAX_LINE`] is cut there, which the parser then rejects. The plugin
//! feed is read on a thread of its own and never dropped: when the pipeline
//! is behind, the reader waits and auditd's dispatcher queue holds the rest,
//! with auditd's own overflow policy.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::RecordBatch;
use super::SourceStats;
use super::queue::Sender;

/// `[plugin]`: mapwatch as an auditd plugin (`mapwatch replay -`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// The auditd is an aggregation server (`local_events = no`, records
    /// from other hosts' au-remote): every record is another host's, so
    /// mapwatch adds no audit rules and never asks this host's procfs.
    pub aggregator: bool,
}

/// The longest line kept whole; auditd's own limit is 8 KiB (MAX_AUDIT_MESSAGE_LENGTH).
pub const MAX_LINE: usize = 64 * 1024;

/// Reads one line into `line` (without its newline); false at end of input.
pub fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    let read = reader
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', line)?;
    if read == 0 {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if read == MAX_LINE {
        // The rest of an overlong line is skipped, not read as a record.
        skip_to_newline(reader)?;
    }
    Ok(true)
}

fn skip_to_newline(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|b| *b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(());
            }
            None => {
                let len = buffer.len();
                reader.consume(len);
            }
        }
    }
}

/// A log file, or stdin for `-`.
pub fn open_log(path: &Path) -> io::Result<Box<dyn BufRead>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            io::stdin().lock(),
        )));
    }
    let file = File::open(path)?;
    Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
}

/// Reads auditd's plugin feed (stdin) on a thread of its own, in batches of
/// at most `max_batch` lines (a batch goes as soon as no more input is
/// buffered). The thread ends at end of input or when the pipeline is gone.
pub fn spawn_stdin_reader(
    tx: Sender<RecordBatch>,
    stats: Arc<SourceStats>,
    max_batch: usize,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("mapwatch-stdin".into())
        .spawn(move || {
            let mut input = BufReader::with_capacity(1 << 16, io::stdin().lock());
            if let Err(e) = forward_lines(&mut input, &tx, &stats, max_batch) {
                tracing::error!("reading the auditd feed on stdin: {e}");
            }
        })
}

fn forward_lines(
    input: &mut BufReader<impl Read>,
    tx: &Sender<RecordBatch>,
    stats: &SourceStats,
    max_batch: usize,
) -> io::Result<()> {
    let mut line = Vec::new();
    let mut batch = RecordBatch::of_log_lines();
    loop {
        let more = read_line(input, &mut line)?;
        if more && !line.is_empty() {
            batch.push(0, &line);
        }
        let idle = input.buffer().is_empty();
        if !batch.is_empty() && (!more || idle || batch.len() >= max_batch) {
            stats.count_batch(batch.len());
            let full = std::mem::replace(&mut batch, RecordBatch::of_log_lines());
            if tx.send(full).is_err() {
                return Ok(());
            }
        }
        if !more {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn lines_lose_their_newline_and_the_last_may_lack_one() {
        let mut input = &b"type=A msg=x\ntype=B msg=y"[..];
        let mut line = Vec::new();
        assert!(read_line(&mut input, &mut line).expect("read"));
        assert_eq!(line, b"type=A msg=x");
        assert!(read_line(&mut input, &mut line).expect("read"));
        assert_eq!(line, b"type=B msg=y");
        assert!(!read_line(&mut input, &mut line).expect("read"));
    }

    #[test]
    fn an_overlong_line_is_cut_and_its_rest_skipped() {
        let mut text = vec![b'a'; MAX_LINE + 100];
        text.extend_from_slice(b"\nnext\n");
        let mut input = &text[..];
        let mut line = Vec::new();
        assert!(read_line(&mut input, &mut line).expect("read"));
        assert_eq!(line.len(), MAX_LINE);
        assert!(read_line(&mut input, &mut line).expect("read"));
        assert_eq!(line, b"next");
    }

    #[test]
    fn the_feed_is_forwarded_in_batches_and_nothing_is_dropped() {
        let text: String = (0..1000)
            .map(|i| format!("type=EOE msg=audit(1.000:{i}): \n"))
            .collect();
        let (tx, rx) = crate::source::queue::bounded(4).expect("queue");
        let stats = Arc::new(SourceStats::default());
        let reader = {
            let stats = stats.clone();
            std::thread::spawn(move || {
                let mut input = BufReader::with_capacity(512, text.as_bytes());
                forward_lines(&mut input, &tx, &stats, 64).expect("forwards")
            })
        };
        let mut lines = 0;
        while let Ok(batch) = rx.recv() {
            assert!(batch.is_log_lines() && batch.len() <= 64);
            lines += batch.len();
        }
        reader.join().expect("reader thread");
        assert_eq!(lines, 1000);
        assert_eq!(stats.records.load(Ordering::Relaxed), 1000);
    }
}
