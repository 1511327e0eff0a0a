//! Sources: where audit records and reads come from. Records stay raw text
//! until the detector parses them: the audit socket is read by the pipeline
//! itself (or, with userspace backpressure, by a thread of its own), the
//! auditd feed and fanotify by threads that hand it [`RecordBatch`]es and
//! reads through [`queue`]s.

pub mod fanotify;
pub mod log;
pub mod netlink;
pub mod pacing;
pub mod procfs_file;
pub mod queue;

use std::sync::atomic::{AtomicU64, Ordering};

/// Records read in one go: their types and texts in one buffer (one
/// allocation per batch, not per record).
#[derive(Default, Debug, Clone)]
pub struct RecordBatch {
    bytes: Vec<u8>,
    spans: Vec<(u16, usize, usize)>,
    log_lines: bool,
}

impl RecordBatch {
    /// A batch of whole log lines (`type=NAME msg=audit(...): ...`), whose
    /// record type is in the text (the pairs' type is 0).
    pub fn of_log_lines() -> Self {
        RecordBatch {
            log_lines: true,
            ..Self::default()
        }
    }

    /// True for log lines, false for netlink records (type, then text).
    pub fn is_log_lines(&self) -> bool {
        self.log_lines
    }

    pub fn push(&mut self, record_type: u16, text: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(text);
        self.spans.push((record_type, start, self.bytes.len()));
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// `(record type, text)` pairs in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &[u8])> + '_ {
        self.spans
            .iter()
            .map(|&(t, start, end)| (t, &self.bytes[start..end]))
    }
}

/// Counters shared between the record readers and the stats reporter.
#[derive(Default, Debug)]
pub struct SourceStats {
    pub records: AtomicU64,
    pub batches: AtomicU64,
    /// Reads of the socket on an interval, under load
    /// ([`crate::source::pacing`]).
    pub polls: AtomicU64,
    pub enobufs: AtomicU64,
    pub dropped_records: AtomicU64,
}

impl SourceStats {
    /// `records` records came in one go.
    pub fn count_batch(&self, records: usize) {
        if records > 0 {
            self.records.fetch_add(records as u64, Ordering::Relaxed);
            self.batches.fetch_add(1, Ordering::Relaxed);
        }
    }
}
