//! When the pipeline reads the audit socket: at each wake-up while records
//! are sparse, on an interval while they are dense (what NAPI does for a
//! busy network card).
//!
//! Contract: [`Pacing`] only decides; the pipeline acts. After a read
//! prompted by the socket, [`Pacing::read_on_wakeup`] says whether to stop
//! being woken by it (the previous read was less than an interval ago);
//! while polling, the socket is read at [`Pacing::next_poll`], and a poll
//! that finds it empty ([`Pacing::polled`]) says to be woken by it again.
//! Records therefore wait at most one interval in the kernel, which never
//! drops them for that: the socket's buffer and the backlog hold seconds of
//! a storm. A read of a memory map needs its exec at once: the socket is
//! read then ([`Pacing::read_early`]) and wakes the pipeline again, so the
//! rest of an exec still on its way comes without waiting for a poll. When
//! records are wanted as they come for a while ([`Pacing::stay_prompt`]:
//! after a read of another process's map, whose exec can reach the socket
//! after the read reached fanotify, and while a sequence waits for a
//! call), there is no polling until then.
//!
//! Why: on a virtual machine a wake-up costs more than parsing an exec
//! event (the switch, and often the teardown of an exited program's
//! address space, which the kernel charges to whoever runs next), and at a
//! few hundred execs per second nearly every exec gets one. An interval of
//! 10 ms took mapwatch from 13.9–25.1 to 10.2–13.8 µs of CPU per exec at
//! 500 exec/s; 50 ms (the default since) from 20.2 to 14.2 µs at 1,000
//! exec/s, and from 29.2 to 18.8 µs with Elastic's 189 rules loaded, whose
//! data each batch finds cold (`bench/exec-storm.sh`, BENCHMARKS.md).

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Pacing {
    interval: Duration,
    last_read: Option<Instant>,
    /// Some while polling: when to read next.
    next_poll: Option<Instant>,
    /// No polling before then: records are wanted at once.
    prompt_until: Option<Instant>,
}

/// What the pipeline should do with the socket's readiness in its epoll set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// Keep things as they are.
    Stay,
    /// Stop waking on the socket; read it at [`Pacing::next_poll`].
    StartPolling,
    /// Wake on the socket again.
    StopPolling,
}

impl Pacing {
    /// `interval` zero: read at every wake-up, never poll.
    pub fn new(interval: Duration) -> Self {
        Pacing {
            interval,
            last_read: None,
            next_poll: None,
            prompt_until: None,
        }
    }

    /// Records are wanted as they come until `until`: polling stops (the
    /// caller reads the socket and wakes on it again when this returns
    /// true) and does not start before then.
    pub fn stay_prompt(&mut self, until: Instant) -> bool {
        self.prompt_until = Some(until).max(self.prompt_until);
        self.next_poll.take().is_some()
    }

    /// The socket woke the pipeline and was read at `now`.
    pub fn read_on_wakeup(&mut self, now: Instant) -> Switch {
        let dense = !self.interval.is_zero()
            && self.prompt_until.is_none_or(|until| until <= now)
            && self
                .last_read
                .is_some_and(|last| now.saturating_duration_since(last) < self.interval);
        self.last_read = Some(now);
        if dense && self.next_poll.is_none() {
            self.next_poll = Some(now + self.interval);
            Switch::StartPolling
        } else {
            Switch::Stay
        }
    }

    /// A read of a memory map came while polling: the socket is read at
    /// `now`, ahead of its poll, and wakes the pipeline again
    /// ([`Switch::StopPolling`]), since the exec that read confirms may
    /// still be on its way, a record or two short.
    pub fn read_early(&mut self, now: Instant) {
        self.next_poll = None;
        self.last_read = Some(now);
    }

    /// Whether a poll is due at `now`.
    pub fn poll_due(&self, now: Instant) -> bool {
        self.next_poll.is_some_and(|at| at <= now)
    }

    /// A poll read `records` records at `now`, of at most `limit`: one that
    /// stopped at its limit left records behind, so the next comes at once.
    pub fn polled(&mut self, now: Instant, records: usize, limit: usize) -> Switch {
        self.last_read = Some(now);
        if records == 0 {
            self.next_poll = None;
            Switch::StopPolling
        } else {
            let wait = if records >= limit {
                Duration::ZERO
            } else {
                self.interval
            };
            self.next_poll = Some(now + wait);
            Switch::Stay
        }
    }

    /// When the next poll is due, if polling.
    pub fn next_poll(&self) -> Option<Instant> {
        self.next_poll
    }

    pub fn is_polling(&self) -> bool {
        self.next_poll.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn no_polling_while_records_are_wanted_at_once() {
        let t0 = Instant::now();
        let mut pacing = Pacing::new(INTERVAL);
        assert_eq!(pacing.read_on_wakeup(t0), Switch::Stay);
        assert_eq!(pacing.read_on_wakeup(t0 + ms(1)), Switch::StartPolling);
        assert!(pacing.stay_prompt(t0 + ms(100)), "polling stops");
        assert!(!pacing.is_polling());
        for i in 2..10 {
            assert_eq!(pacing.read_on_wakeup(t0 + ms(i)), Switch::Stay);
        }
        // Once the time is up, dense wake-ups poll again.
        assert_eq!(pacing.read_on_wakeup(t0 + ms(101)), Switch::Stay);
        assert_eq!(pacing.read_on_wakeup(t0 + ms(102)), Switch::StartPolling);
    }

    #[test]
    fn sparse_wakeups_never_poll() {
        let t0 = Instant::now();
        let mut pacing = Pacing::new(INTERVAL);
        for i in 0..5 {
            assert_eq!(pacing.read_on_wakeup(t0 + ms(20 * i)), Switch::Stay);
        }
        assert!(!pacing.is_polling());
    }

    #[test]
    fn a_wakeup_within_the_interval_starts_polling() {
        let t0 = Instant::now();
        let mut pacing = Pacing::new(INTERVAL);
        assert_eq!(pacing.read_on_wakeup(t0), Switch::Stay);
        assert_eq!(pacing.read_on_wakeup(t0 + ms(3)), Switch::StartPolling);
        assert_eq!(pacing.next_poll(), Some(t0 + ms(13)));
        assert!(!pacing.poll_due(t0 + ms(12)));
        assert!(pacing.poll_due(t0 + ms(13)));
    }

    #[test]
    fn polls_go_on_while_they_find_records_and_stop_at_an_empty_one() {
        let t0 = Instant::now();
        let mut pacing = Pacing::new(INTERVAL);
        pacing.read_on_wakeup(t0);
        pacing.read_on_wakeup(t0 + ms(1));
        assert_eq!(pacing.polled(t0 + ms(11), 12, 256), Switch::Stay);
        assert_eq!(pacing.next_poll(), Some(t0 + ms(21)));
        assert_eq!(pacing.polled(t0 + ms(21), 0, 256), Switch::StopPolling);
        assert!(!pacing.is_polling());
        // Woken again soon after the empty poll: dense again.
        assert_eq!(pacing.read_on_wakeup(t0 + ms(22)), Switch::StartPolling);
    }

    #[test]
    fn a_poll_that_hit_its_limit_is_followed_by_another_at_once() {
        let t0 = Instant::now();
        let mut pacing = Pacing::new(INTERVAL);
        pacing.read_on_wakeup(t0);
        pacing.read_on_wakeup(t0 + ms(1));
        assert_eq!(pacing.polled(t0 + ms(11), 256, 256), Switch::Stay);
        assert!(pacing.poll_due(t0 + ms(11)));
    }

    #[test]
    fn an_early_read_ends_polling() {
        let t0 = Instant::now();
        let mut pacing = Pacing::new(INTERVAL);
        pacing.read_on_wakeup(t0);
        pacing.read_on_wakeup(t0 + ms(1));
        assert!(pacing.is_polling());
        pacing.read_early(t0 + ms(4));
        assert!(!pacing.is_polling());
        // The rest of the exec wakes the pipeline, and polling resumes.
        assert_eq!(pacing.read_on_wakeup(t0 + ms(5)), Switch::StartPolling);
    }

    #[test]
    fn interval_zero_reads_at_every_wakeup() {
        let t0 = Instant::now();
        let mut pacing = Pacing::new(Duration::ZERO);
        for i in 0..5 {
            assert_eq!(
                pacing.read_on_wakeup(t0 + Duration::from_micros(i)),
                Switch::Stay
            );
        }
        assert_eq!(pacing.next_poll(), None);
    }
}
