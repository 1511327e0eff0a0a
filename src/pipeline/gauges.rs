//! The counters kept beside the detector's (sources, fanotify, sinks, the
//! kernel's `lost`): the stats line, `mapwatch.stats` documents, the loss
//! counters the health check watches, and what the metrics publish.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::outlet::Outlet;
use crate::detector::Detector;
use crate::sink::metrics::health::SourceState;
use crate::sink::metrics::{AgentInfo, HealthWindow, Metrics};
use crate::source::SourceStats;
use crate::source::fanotify::WatchStats;
use crate::source::netlink::AuditSession;

/// The counters kept outside the detector, and the kernel's `lost` as last
/// read: what the stats line and the health check report beside the
/// detector's own.
pub(super) struct Gauges {
    source: Arc<SourceStats>,
    watch: Arc<WatchStats>,
    /// The kernel's `lost` counter since start.
    kernel_lost: u32,
    /// The source as the last status poll found it.
    source_state: SourceState,
    health: Option<HealthWindow>,
}

impl Gauges {
    pub(super) fn new(
        source: Arc<SourceStats>,
        watch: Arc<WatchStats>,
        health: Option<HealthWindow>,
    ) -> Self {
        Gauges {
            source,
            watch,
            kernel_lost: 0,
            source_state: SourceState {
                attached: true,
                last_heard: Instant::now(),
            },
            health,
        }
    }

    /// The kernel's `lost` counter, and whether the source is still ours:
    /// registered (`pid` is this process) unless beside another daemon.
    pub(super) fn poll_kernel_lost(&mut self, session: &mut AuditSession) {
        match session.kernel_status() {
            Ok(status) => {
                self.kernel_lost = status.lost.wrapping_sub(session.lost_at_start);
                self.source_state = SourceState {
                    attached: session.beside_daemon.is_some() || status.pid == std::process::id(),
                    last_heard: Instant::now(),
                };
            }
            Err(e) => tracing::warn!("reading the kernel audit status: {e}"),
        }
    }

    /// The kernel's `lost` counter as the stopped session last read it.
    pub(super) fn set_final_kernel_lost(&mut self, lost_since_start: Option<u32>) {
        if let Some(lost) = lost_since_start {
            self.kernel_lost = lost;
        }
    }

    /// Counters, the health verdict and the status document, to the metrics.
    pub(super) fn publish(
        &mut self,
        detector: &Detector,
        outlet: &Outlet,
        metrics: &Metrics,
        info: &AgentInfo,
    ) {
        let losses = loss_counters(detector, self, outlet);
        let counters = stats_counters(detector, self, outlet);
        let source = self.source_state;
        let Some(window) = self.health.as_mut() else {
            return;
        };
        let verdict = window.judge(Instant::now(), &losses, source);
        metrics.publish(&counters, &verdict, info, detector.rule_count());
    }

    /// A health document if a loss counter grew, and one naming the
    /// readers of reads that could not be resolved, if there were any.
    pub(super) fn report_losses(&self, detector: &mut Detector, outlet: &mut Outlet) {
        let losses = loss_counters(detector, self, outlet);
        outlet.report_losses(&losses, detector.host());
        if let Some(report) = detector.report_unresolved_reads() {
            outlet.unresolved_reads(report);
        }
    }

    /// The stats line on stderr, and a `mapwatch.stats` document for the
    /// JSON file (not the console, whose stdout carries alerts only).
    pub(super) fn report_stats(&self, detector: &Detector, outlet: &mut Outlet) {
        let counters = stats_counters(detector, self, outlet);
        let line: Vec<String> = counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        tracing::info!("stats: {}", line.join(" "));
        outlet.stats(crate::alert::stats::document(&counters, detector.host()));
    }
}

/// The counters that grow only when events were lost on their way.
fn loss_counters(
    detector: &Detector,
    gauges: &Gauges,
    outlet: &Outlet,
) -> [(&'static str, u64); 14] {
    let (source, watch) = (&gauges.source, &gauges.watch);
    let correlator = detector.correlator_stats().unwrap_or_default();
    [
        ("kernel_lost", u64::from(gauges.kernel_lost)),
        ("serial_gaps", detector.serial_stats().gaps),
        ("enobufs", source.enobufs.load(Ordering::Relaxed)),
        (
            "queue_dropped_records",
            source.dropped_records.load(Ordering::Relaxed),
        ),
        (
            "fanotify_overflows",
            watch.overflows.load(Ordering::Relaxed),
        ),
        (
            "read_batches_dropped",
            watch.dropped.load(Ordering::Relaxed),
        ),
        ("events_evicted", detector.assembler_stats().evicted),
        // Procfs instances mounted and not watched: over `max_procfs`, or
        // refused by the kernel (at its limit of marks).
        (
            "procfs_unwatched",
            watch.procfs_unwatched.load(Ordering::Relaxed),
        ),
        // A read whose reader was gone before anything but its pid was known.
        ("unattributed_reads", detector.stats().unattributed_reads),
        // Read proof that never settled: the fanotify reader fell behind.
        ("confirmations_timed_out", correlator.timed_out),
        // Partial sequences dropped to stay within their bound (a flood of
        // first steps), so a later step could not complete them.
        ("sequences_evicted", detector.sequence_stats().evicted),
        ("alerts_dropped", outlet.dropped),
        (
            "alert_file_failures",
            outlet.sink_stats.file_lost.load(Ordering::Relaxed),
        ),
        (
            "syslog_dropped",
            outlet.sink_stats.syslog_dropped.load(Ordering::Relaxed),
        ),
    ]
}

/// Every counter, in the order the stats line gives them: what was seen,
/// then what was lost.
fn stats_counters(
    detector: &Detector,
    gauges: &Gauges,
    outlet: &Outlet,
) -> Vec<(&'static str, u64)> {
    let watch = &gauges.watch;
    let d = detector.stats();
    let a = detector.assembler_stats();
    let c = detector.correlator_stats().unwrap_or_default();
    let t = detector.table_stats();
    let q = detector.sequence_stats();
    let mut counters = vec![
        ("records", d.records),
        (
            "record_batches",
            gauges.source.batches.load(Ordering::Relaxed),
        ),
        ("socket_polls", gauges.source.polls.load(Ordering::Relaxed)),
        ("malformed_records", d.malformed_records),
        ("exec_events", a.exec_events),
        ("failed_execs", a.failed_execs),
        ("events_without_eoe", a.flushed_without_eoe),
        ("alerts", d.alerts),
        ("alerts_suppressed", outlet.limiter.suppressed_total),
        ("unresolved_entry_leaders", d.unresolved_entry_leaders),
        (
            "procfs_instances_watched",
            watch.procfs_watched.load(Ordering::Relaxed),
        ),
        ("proc_events", watch.events.load(Ordering::Relaxed)),
        ("maps_reads", watch.maps_events.load(Ordering::Relaxed)),
        ("unresolved_reads", watch.unresolved.load(Ordering::Relaxed)),
        // Reads of a layout file of another pid namespace's procfs whose
        // process was gone before its host pid was found: most are a
        // short-lived process's read of its own map.
        ("unplaced_reads", watch.unplaced.load(Ordering::Relaxed)),
        ("confirmed", c.confirmed),
        ("unconfirmed", c.unconfirmed),
        ("file_events", c.file_events),
        ("memory_calls", a.memory_accesses),
        ("sequence_partials", q.partials as u64),
        ("sequences_started", q.started),
        ("sequences_completed", q.completed),
        ("sequences_expired", q.expired),
        ("events_in_flight", detector.in_flight() as u64),
        // Other hosts' records, from an auditd that aggregates.
        ("nodes", detector.nodes().count() as u64),
        (
            "node_records",
            detector.nodes().map(|n| n.stats().records).sum(),
        ),
        ("processes", t.entries as u64),
        ("pids_reused", t.pid_reuse),
        ("processes_pruned", t.pruned),
    ];
    counters.extend(loss_counters(detector, gauges, outlet));
    counters
}
