//! The reader threads and queues of one run: the audit socket read in the
//! loop or on a thread of its own, auditd's feed on stdin, and fanotify.
//!
//! Contract: [`Readers::start`] starts what the configuration asks for and
//! hands the loop the fds to wait on; every queue is bounded, and a reader
//! whose queue is gone ends at its next wake-up.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::MAX_BATCH;
use super::inline_socket::InlineSocket;
use crate::config::Config;
use crate::detector::Detector;
use crate::source::fanotify::{
    CatchUp, FanotifyConfig, ProcWatch, ReadBatch, ReadOrder, WatchStats, spawn_reader,
};
use crate::source::log::spawn_stdin_reader;
use crate::source::netlink::{Backpressure, RecordReader, RecordSocket, spawn_record_reader};
use crate::source::pacing::Pacing;
use crate::source::queue::{self, Receiver};
use crate::source::{RecordBatch, SourceStats};

/// Where the loop gets records.
pub(super) enum Records {
    Kernel(RecordSocket),
    Stdin,
}

/// The fanotify group, if read confirmation is on and the kernel lets us.
/// Needs `CAP_SYS_ADMIN`: opened before the capabilities are dropped.
pub(super) fn open_proc_watch(config: &FanotifyConfig) -> Option<ProcWatch> {
    if !config.enabled {
        tracing::info!(
            "fanotify is off (fanotify.enabled = false): alerts carry no read confirmation"
        );
        return None;
    }
    ProcWatch::open(config)
        .inspect_err(|why| tracing::warn!("running without read confirmation: {why}"))
        .ok()
}

/// What the loop reads, and the counters the readers keep.
pub(super) struct Readers {
    /// The audit socket, when the loop reads it itself.
    pub inline: Option<InlineSocket>,
    /// Record batches from a reader thread (the socket's or stdin's).
    pub records: Receiver<RecordBatch>,
    pub reads: Receiver<ReadBatch>,
    /// Records that came while the registration was being acknowledged.
    pub early: RecordBatch,
    pub source_stats: Arc<SourceStats>,
    pub watch_stats: Arc<WatchStats>,
    watcher: Option<JoinHandle<()>>,
    read_order: Option<Arc<ReadOrder>>,
    catch_up: Option<CatchUp>,
}

impl Readers {
    /// Starts the readers of `records` and of `proc_watch`; with a watch,
    /// the detector confirms reads from now on.
    pub fn start(
        records: Records,
        proc_watch: Option<ProcWatch>,
        config: &Config,
        detector: &mut Detector,
    ) -> io::Result<Readers> {
        let source_stats = Arc::new(SourceStats::default());
        let read_order = proc_watch
            .as_ref()
            .map(ProcWatch::order)
            .transpose()?
            .map(Arc::new);
        let (record_tx, record_rx) = queue::bounded::<RecordBatch>(config.audit.queue_batches)?;
        // With the kernel as the only queue, the loop reads the socket
        // itself: a queue of its own would only add a wake-up per batch.
        // Dropping in user space needs a reader that keeps draining while
        // the loop is busy: a thread and a bounded queue.
        let mut inline = None;
        let mut early = RecordBatch::default();
        match records {
            Records::Kernel(socket) => {
                let (reader, arrived) = RecordReader::new(socket);
                source_stats.count_batch(arrived.len());
                early = arrived;
                match config.audit.backpressure {
                    Backpressure::Kernel => {
                        let interval = Duration::from_millis(config.audit.poll_interval_ms);
                        inline = Some(InlineSocket::new(
                            reader,
                            Pacing::new(interval),
                            source_stats.clone(),
                            read_order.clone(),
                        ));
                        drop(record_tx);
                    }
                    Backpressure::Userspace => {
                        spawn_record_reader(reader, record_tx, source_stats.clone(), MAX_BATCH)?;
                    }
                }
            }
            Records::Stdin => {
                // Ends with its input (auditd closes the pipe when it stops).
                spawn_stdin_reader(record_tx, source_stats.clone(), MAX_BATCH)?;
            }
        }

        let watch_stats = Arc::new(WatchStats::default());
        let (read_tx, read_rx) = queue::bounded::<ReadBatch>(config.audit.queue_batches)?;
        let catch_up = proc_watch.as_ref().map(ProcWatch::catch_up);
        let watcher = match proc_watch {
            Some(watch) => {
                detector.confirm_reads(
                    Duration::from_millis(config.fanotify.confirm_window_ms),
                    Duration::from_millis(config.fanotify.hold_ms),
                );
                Some(spawn_reader(watch, read_tx, watch_stats.clone())?)
            }
            None => None,
        };
        Ok(Readers {
            inline,
            records: record_rx,
            reads: read_rx,
            early,
            source_stats,
            watch_stats,
            watcher,
            read_order,
            catch_up,
        })
    }

    /// An alert waits to know that no read of its is still on its way: the
    /// fanotify reader is asked for a batch drained past now.
    pub fn catch_up_if_wanted(&self, detector: &mut Detector) {
        if detector.take_wants_catch_up()
            && let Some(catch_up) = &self.catch_up
        {
            catch_up.ask();
        }
    }

    /// Records from the queue went through the detector: their execs are
    /// placed against reads by the fanotify queue's order.
    pub fn order_queued_execs(&self, detector: &mut Detector) {
        if let Some(order) = &self.read_order {
            detector.order_execs_before_reads(order.mark());
        }
    }

    /// Whether fanotify reads come in.
    pub fn confirms_reads(&self) -> bool {
        self.watcher.is_some()
    }
}
