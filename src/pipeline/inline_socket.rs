//! The audit socket read by the pipeline thread itself (`backpressure =
//! "kernel"`, where the kernel's backlog is the only queue), paced by
//! [`crate::source::pacing`]: at each wake-up, or on an interval under a
//! dense stream.

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};

use super::outlet::Outlet;
use super::{MAX_BATCH, Source};
use crate::detector::Detector;
use crate::source::SourceStats;
use crate::source::fanotify::ReadOrder;
use crate::source::netlink::RecordReader;
use crate::source::pacing::{Pacing, Switch};

/// The audit socket, read by the pipeline itself (`backpressure =
/// "kernel"`), when [`Pacing`] says; `now` is when the pipeline woke.
pub(super) struct InlineSocket {
    reader: RecordReader,
    pacing: Pacing,
    stats: Arc<SourceStats>,
    read_order: Option<Arc<ReadOrder>>,
}

impl InlineSocket {
    pub(super) fn new(
        reader: RecordReader,
        pacing: Pacing,
        stats: Arc<SourceStats>,
        read_order: Option<Arc<ReadOrder>>,
    ) -> Self {
        InlineSocket {
            reader,
            pacing,
            stats,
            read_order,
        }
    }

    /// The fd that wakes the loop when records are queued.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.reader.fd()
    }

    /// When the socket is next due to be read, while it is polled.
    pub(super) fn next_poll(&self) -> Option<Instant> {
        self.pacing.next_poll()
    }

    /// The socket woke the pipeline: read it, and stop being woken by it
    /// if records are dense.
    pub(super) fn on_wakeup(
        &mut self,
        now: Instant,
        poller: &Epoll,
        detector: &mut Detector,
        outlet: &mut Outlet,
    ) -> std::io::Result<()> {
        self.read(MAX_BATCH, detector, outlet)?;
        match self.pacing.read_on_wakeup(now) {
            Switch::StartPolling => self.wake_on_socket(poller, false),
            _ => Ok(()),
        }
    }

    /// Reads of maps came: the execs they confirm may be waiting for the
    /// next poll, so read them now, and be woken by the rest of one if some
    /// is still on its way.
    pub(super) fn before_reads(
        &mut self,
        now: Instant,
        poller: &Epoll,
        detector: &mut Detector,
        outlet: &mut Outlet,
    ) -> std::io::Result<()> {
        if !self.pacing.is_polling() {
            return Ok(());
        }
        self.pacing.read_early(now);
        self.read_and_wake(poller, detector, outlet)
    }

    /// A sequence waits for a call: records are read as they come until
    /// `until`, and what waits for a poll is read now.
    pub(super) fn stay_prompt(
        &mut self,
        until: Instant,
        poller: &Epoll,
        detector: &mut Detector,
        outlet: &mut Outlet,
    ) -> std::io::Result<()> {
        if !self.pacing.stay_prompt(until) {
            return Ok(());
        }
        self.read_and_wake(poller, detector, outlet)
    }

    /// Polling stopped ahead of its time: what waits is read now, and the
    /// socket wakes the pipeline again.
    fn read_and_wake(
        &mut self,
        poller: &Epoll,
        detector: &mut Detector,
        outlet: &mut Outlet,
    ) -> std::io::Result<()> {
        self.read(MAX_BATCH, detector, outlet)?;
        self.wake_on_socket(poller, true)
    }

    pub(super) fn poll_if_due(
        &mut self,
        now: Instant,
        poller: &Epoll,
        detector: &mut Detector,
        outlet: &mut Outlet,
    ) -> std::io::Result<()> {
        if !self.pacing.poll_due(now) {
            return Ok(());
        }
        let records = self.read(MAX_BATCH, detector, outlet)?;
        self.stats.polls.fetch_add(1, Ordering::Relaxed);
        match self.pacing.polled(now, records, MAX_BATCH) {
            Switch::StopPolling => self.wake_on_socket(poller, true),
            _ => Ok(()),
        }
    }

    /// Everything still queued, at stop.
    pub(super) fn drain(
        &mut self,
        detector: &mut Detector,
        outlet: &mut Outlet,
    ) -> std::io::Result<()> {
        self.read(usize::MAX, detector, outlet).map(|_| ())
    }

    /// The queued records, about `max` at most, through the detector;
    /// returns how many. The execs among them are then placed against
    /// reads by the fanotify queue's order.
    fn read(
        &mut self,
        max: usize,
        detector: &mut Detector,
        outlet: &mut Outlet,
    ) -> std::io::Result<usize> {
        let read = self.reader.receive(max, &self.stats, &mut |now, t, text| {
            detector.on_netlink_record(t, text, now, &mut |a| outlet.emit(a))
        });
        if let Some(order) = &self.read_order {
            detector.order_execs_before_reads(order.mark());
        }
        read
    }

    /// Whether the socket wakes the pipeline.
    fn wake_on_socket(&self, poller: &Epoll, wake: bool) -> std::io::Result<()> {
        let flags = if wake {
            EpollFlags::EPOLLIN
        } else {
            EpollFlags::empty()
        };
        let mut event = EpollEvent::new(flags, Source::AuditSocket as u64);
        poller
            .modify(self.reader.fd(), &mut event)
            .map_err(std::io::Error::from)
    }
}
