//! `mapwatch.health` documents: events were lost somewhere between the
//! kernel and the sinks. They go wherever alerts go (a detector that is
//! blind for a while is itself something to alert on), never rate-limited,
//! and are alerts (`event.kind: alert`, medium): Elastic's "External
//! Alerts" promotes them, because an attacker who floods the audit backlog
//! to hide an exec is exactly what an analyst must see.
//!
//! Contract: [`LossWatch::check`] compares every loss counter with its value
//! at the last report and returns a document only when one of them grew;
//! the document names what grew by how much (`lost`) and every counter's
//! total since start (`totals`). [`UnresolvedReads`] gathers the reads whose
//! file could not be resolved and names their readers in one document per
//! report (at most [`MAX_NAMED_READERS`] processes; the rest are counted).

use serde_json::{Map, Value, json};

use super::{Alert, ecs_document, escape_bytes, escape_for_terminal, now_rfc3339};
use crate::process::host::HostInfo;

/// Counters that only grow when something was lost, last reported values.
#[derive(Default)]
pub struct LossWatch {
    reported: Vec<(&'static str, u64)>,
}

impl LossWatch {
    /// A health alert if any counter grew since the last one.
    pub fn check(&mut self, counters: &[(&'static str, u64)], host: &HostInfo) -> Option<Alert> {
        let mut lost = Map::new();
        for &(name, total) in counters {
            let before = self
                .reported
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, v)| *v);
            if total > before {
                lost.insert(name.to_owned(), json!(total - before));
            }
        }
        if lost.is_empty() {
            return None;
        }
        self.reported = counters.to_vec();
        let totals: Map<String, Value> = counters
            .iter()
            .map(|(name, total)| ((*name).to_owned(), json!(total)))
            .collect();
        let what: Vec<String> = lost.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let message = format!("mapwatch lost events: {}", what.join(" "));
        Some(health_alert(
            message,
            json!({"lost": lost, "totals": totals}),
            host,
        ))
    }
}

/// Readers named in one unresolved-reads report.
pub const MAX_NAMED_READERS: usize = 16;

/// Reads of a procfs file whose process exited before the file could be
/// opened for mapwatch: a maps (or smaps, mem, environ…) read of a process
/// gone at once, which is how a forked worker's map is read without a trace.
/// `ps` does it too, racing exiting processes: hence one report per
/// interval, by reader, not an alert per read.
#[derive(Default)]
pub struct UnresolvedReads {
    readers: Vec<UnresolvedReader>,
    /// Reads by readers beyond [`MAX_NAMED_READERS`].
    others: u64,
    /// Reads the kernel (before 6.13) dropped with their reader.
    no_reader: u64,
}

struct UnresolvedReader {
    executable: Option<Vec<u8>>,
    pid: u32,
    command_line: Option<Vec<u8>>,
    reads: u64,
}

impl UnresolvedReads {
    /// One read by `pid` (`None`: not said), running `executable`.
    pub fn add(
        &mut self,
        pid: Option<u32>,
        executable: Option<&[u8]>,
        command_line: Option<&[u8]>,
    ) {
        let Some(pid) = pid else {
            self.no_reader += 1;
            return;
        };
        if let Some(known) = self.readers.iter_mut().find(|r| r.pid == pid) {
            known.reads += 1;
            return;
        }
        if self.readers.len() == MAX_NAMED_READERS {
            self.others += 1;
            return;
        }
        self.readers.push(UnresolvedReader {
            executable: executable.map(<[u8]>::to_vec),
            pid,
            command_line: command_line.map(<[u8]>::to_vec),
            reads: 1,
        });
    }

    /// The report of the reads gathered since the last one, if any.
    pub fn report(&mut self, host: &HostInfo) -> Option<Alert> {
        let total =
            self.readers.iter().map(|r| r.reads).sum::<u64>() + self.others + self.no_reader;
        if total == 0 {
            return None;
        }
        let gathered = std::mem::take(self);
        let named: Vec<String> = gathered
            .readers
            .iter()
            .map(|r| {
                let program = r
                    .executable
                    .as_deref()
                    .map_or("?".into(), escape_for_terminal);
                format!("{program} (pid {}) x{}", r.pid, r.reads)
            })
            .collect();
        let readers: Vec<Value> = gathered
            .readers
            .iter()
            .map(|r| {
                let mut reader = Map::new();
                reader.insert("pid".into(), json!(r.pid));
                reader.insert("reads".into(), json!(r.reads));
                if let Some(exe) = &r.executable {
                    reader.insert("executable".into(), json!(escape_bytes(exe)));
                }
                if let Some(line) = &r.command_line {
                    reader.insert("command_line".into(), json!(escape_bytes(line)));
                }
                Value::Object(reader)
            })
            .collect();
        let message = format!(
            "mapwatch could not resolve {total} read(s): which file and whose is lost (a procfs file whose process had exited: maps, smaps, mem, environ…; or the maps file of a PROCMAP_QUERY); readers: {}{}",
            if named.is_empty() {
                "unknown".into()
            } else {
                named.join(", ")
            },
            match (gathered.others, gathered.no_reader) {
                (0, 0) => String::new(),
                (others, no_reader) =>
                    format!(" (+{others} by other processes, {no_reader} with no reader said)"),
            }
        );
        Some(health_alert(
            message,
            json!({"unresolved_reads": {
                "reads": total,
                "readers": readers,
                "by_other_processes": gathered.others,
                "without_reader": gathered.no_reader,
            }}),
            host,
        ))
    }
}

/// A `mapwatch.health` document with its one-line summary: `health` is
/// what goes under `mapwatch.health`.
fn health_alert(message: String, health: Value, host: &HostInfo) -> Alert {
    let document = ecs_document(
        now_rfc3339(),
        json!({
            "host": {"name": host.name, "hostname": host.name},
            "event": {
                "kind": "alert",
                "category": ["host"],
                "type": ["info"],
                "module": "mapwatch",
                "dataset": "mapwatch.health",
                "severity": 47,
                "risk_score": 47,
            },
            "message": message,
            "mapwatch": {"health": health},
        }),
    );
    let summary = format!(
        "{} health  {message}",
        document["@timestamp"].as_str().unwrap_or_default()
    );
    Alert {
        document,
        summary,
        timing: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostInfo {
        HostInfo {
            name: "h".into(),
            kernel: "k".into(),
        }
    }

    #[test]
    fn unresolved_reads_are_reported_by_reader_once_then_start_again() {
        let mut reads = UnresolvedReads::default();
        assert!(reads.report(&host()).is_none());
        reads.add(Some(11), Some(b"/usr/bin/ps"), Some(b"ps aux"));
        reads.add(Some(11), Some(b"/usr/bin/ps"), Some(b"ps aux"));
        reads.add(Some(12), Some(b"/tmp/x\x1b]0;"), Some(b"/tmp/x -p 5"));
        reads.add(None, None, None);
        let alert = reads.report(&host()).expect("reads were gathered");
        let doc = &alert.document["mapwatch"]["health"]["unresolved_reads"];
        assert_eq!(doc["reads"], json!(4));
        assert_eq!(doc["without_reader"], json!(1));
        assert_eq!(doc["readers"][0]["reads"], json!(2));
        assert_eq!(doc["readers"][0]["pid"], json!(11));
        assert_eq!(doc["readers"][1]["executable"], json!("/tmp/x\u{1b}]0;"));
        assert!(alert.summary.contains("/usr/bin/ps (pid 11) x2"));
        assert!(!alert.summary.contains('\u{1b}'), "escaped for a terminal");
        assert!(reads.report(&host()).is_none());
        for pid in 0..40 {
            let exe = format!("/bin/p{pid}");
            reads.add(Some(pid), Some(exe.as_bytes()), None);
        }
        let doc = reads.report(&host()).expect("reads").document;
        let unresolved = &doc["mapwatch"]["health"]["unresolved_reads"];
        assert_eq!(
            unresolved["readers"].as_array().map(Vec::len),
            Some(MAX_NAMED_READERS)
        );
        assert_eq!(
            unresolved["by_other_processes"],
            json!(40 - MAX_NAMED_READERS)
        );
    }

    #[test]
    fn reports_only_growth_and_only_once() {
        let mut watch = LossWatch::default();
        assert!(
            watch
                .check(&[("kernel_lost", 0), ("enobufs", 0)], &host())
                .is_none()
        );
        let alert = watch
            .check(&[("kernel_lost", 12), ("enobufs", 0)], &host())
            .expect("a loss is reported");
        let health = &alert.document["mapwatch"]["health"];
        assert_eq!(health["lost"], json!({"kernel_lost": 12}));
        assert_eq!(health["totals"], json!({"kernel_lost": 12, "enobufs": 0}));
        assert!(alert.summary.contains("kernel_lost=12"));
        assert!(
            watch
                .check(&[("kernel_lost", 12), ("enobufs", 0)], &host())
                .is_none()
        );
        let again = watch
            .check(&[("kernel_lost", 15), ("enobufs", 2)], &host())
            .expect("more loss");
        assert_eq!(
            again.document["mapwatch"]["health"]["lost"],
            json!({"kernel_lost": 3, "enobufs": 2})
        );
    }
}
