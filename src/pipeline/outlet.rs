//! Where alerts leave the loop: the rate limiter, then the bounded channel
//! to the sink thread (a full channel drops and counts, never blocks).

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use crate::alert::Alert;
use crate::alert::health::LossWatch;
use crate::alert::limit::Limiter;
use crate::process::host::HostInfo;
use crate::sink::metrics::Metrics;
use crate::sink::{SinkMessage, SinkStats, Sinks};

/// Where alerts leave the pipeline: the rate limiter, then the sink channel.
pub(super) struct Outlet {
    tx: Option<SyncSender<SinkMessage>>,
    pub(super) dropped: u64,
    pub(super) limiter: Limiter,
    pub(super) sink_stats: Arc<SinkStats>,
    losses: LossWatch,
    /// Counts each alert that leaves, with its latency.
    metrics: Option<Arc<Metrics>>,
}

impl Outlet {
    pub(super) fn new(
        tx: SyncSender<SinkMessage>,
        limiter: Limiter,
        sink_stats: Arc<SinkStats>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Outlet {
            tx: Some(tx),
            dropped: 0,
            limiter,
            sink_stats,
            losses: LossWatch::default(),
            metrics,
        }
    }

    pub(super) fn emit(&mut self, alert: Alert) {
        if self.limiter.admit(&alert, Instant::now()) {
            self.send(alert);
        }
    }

    fn send(&mut self, alert: Alert) {
        let Some(tx) = &self.tx else { return };
        let observed = self
            .metrics
            .as_ref()
            .and_then(|m| Some((m, m.observe(&alert, Instant::now())?)));
        match tx.try_send(SinkMessage::Alert(alert)) {
            Ok(()) => {
                if let Some((metrics, observation)) = observed {
                    metrics.record(observation);
                }
            }
            Err(_) => self.dropped += 1,
        }
    }

    /// A `mapwatch.health` report (and a warning) when a loss counter grew
    /// since the last report.
    pub(super) fn report_losses(&mut self, losses: &[(&'static str, u64)], host: &HostInfo) {
        if let Some(health) = self.losses.check(losses, host) {
            self.health(health);
        }
    }

    /// A `mapwatch.health` document of mapwatch's own losses (and a
    /// warning), never rate-limited.
    pub(super) fn health(&mut self, health: Alert) {
        tracing::warn!(
            "{}",
            health.document["message"].as_str().unwrap_or_default()
        );
        self.send_health(health);
    }

    /// A `mapwatch.health` document of reads the kernel could not name
    /// (logged at info): what processes did, not a loss of mapwatch's. On
    /// any busy host, short programs that read their own map as they
    /// start (glibc's `pthread_getattr_np` does) and exit at once make
    /// some; the document still reaches the sinks as an alert.
    pub(super) fn unresolved_reads(&mut self, report: Alert) {
        tracing::info!(
            "{}",
            report.document["message"].as_str().unwrap_or_default()
        );
        self.send_health(report);
    }

    fn send_health(&mut self, health: Alert) {
        if let Some(tx) = &self.tx
            && tx.try_send(SinkMessage::Health(health)).is_err()
        {
            self.dropped += 1;
        }
    }

    /// A stats document, for the file sink only.
    pub(super) fn stats(&mut self, document: serde_json::Value) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(SinkMessage::Stats(document));
        }
    }

    /// Reloaded sinks take over; queued alerts go to them. Waits for room:
    /// a reload must not be lost.
    pub(super) fn replace_sinks(&mut self, sinks: Sinks) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(SinkMessage::Replace(Box::new(sinks)));
        }
    }

    /// Summaries of rate-limit windows that ended.
    pub(super) fn expire(&mut self, now: Instant) {
        let mut summaries = Vec::new();
        self.limiter.expire(now, &mut summaries);
        for summary in summaries {
            self.send(summary);
        }
    }

    /// Shutdown: pending summaries leave, then the channel closes (which
    /// ends the sink thread).
    pub(super) fn close(&mut self) {
        let mut summaries = Vec::new();
        self.limiter.flush(&mut summaries);
        for summary in summaries {
            self.send(summary);
        }
        self.tx = None;
    }
}
