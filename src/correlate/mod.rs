//! Read confirmation: joins exec alerts with the fanotify reads that prove
//! the file was really read, and turns reads into file events.
//!
//! Contract:
//! - An exec alert naming maps files leaves as soon as a read by the same
//!   process of one of their targets is seen (`mapwatch.read.confirmed:
//!   true`). It leaves without one (`false`) only once its window has
//!   passed, its reader has exited (a process that runs may still read), and
//!   the fanotify reader has drained the queue past the moment the exit was
//!   seen (every read the reader made is then known), so the verdict holds
//!   however late any thread runs; or, whatever is still unknown, when
//!   [`GIVE_UP_AFTER`] has passed (counted as timed out). A read seen
//!   shortly *before* its exec event (the two come through different
//!   sockets) still confirms it.
//! - A read of another process's map by a process that also named it in an
//!   exec alert is that alert's; every other read (of a map, or of another
//!   layout file, which no exec alert names) becomes one file event per
//!   reader, target and file within a window (a `cat` of a map is several
//!   read(2)s) for the `file where` rules, after a short hold that lets the
//!   exec event arrive first.
//! - A process reading a file whose target differs from the one its
//!   arguments name (GNU grep reads its own /proc/self/maps at start-up)
//!   confirms nothing.
//! - Everything held is bounded; overflow releases the oldest early and
//!   counts it.

pub mod sequence;

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::alert::{Alert, escape_bytes};
use crate::process::proc_path::Layout;
use crate::source::fanotify::{Access, ReadEvent};

/// Held exec alerts, recent reads and held file events, each at most.
const MAX_HELD: usize = 16_384;

/// The longest an exec alert waits for its verdict: a reader that runs on
/// without reading, or a fanotify reader thread stalled (or dead).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

struct Pending {
    alert: Alert,
    reader: u32,
    targets: Vec<u32>,
    /// When the alert is next looked at.
    deadline: Instant,
    give_up_at: Instant,
    /// When the reader was first found gone: every read it made was queued
    /// before then.
    reader_gone: Option<Instant>,
}

/// What the correlator asks of the processes whose alerts wait: the live
/// service asks procfs, tests a list.
pub trait Settle {
    /// Whether `pid` still runs (and so may still read).
    fn still_runs(&self, pid: u32) -> bool;
}

struct RecentRead {
    reader: u32,
    target: u32,
    path: Vec<u8>,
    seen: Instant,
}

struct Held {
    read: ReadEvent,
    target: u32,
    due: Instant,
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CorrelatorStats {
    pub confirmed: u64,
    pub unconfirmed: u64,
    pub file_events: u64,
    pub covered_reads: u64,
    pub released_early: u64,
    /// Alerts released unconfirmed at [`GIVE_UP_AFTER`], their verdict unknown.
    pub timed_out: u64,
}

pub struct Correlator {
    window: Duration,
    hold: Duration,
    pending: VecDeque<Pending>,
    recent: VecDeque<RecentRead>,
    held: VecDeque<Held>,
    /// (reader, target) pairs an exec alert has claimed, and when.
    covered: VecDeque<(u32, u32, Instant)>,
    /// Last read (or write) per (reader, target, file), to raise one file
    /// event per open.
    last_read: FxHashMap<(u32, u32, Layout, Access), Instant>,
    /// Every read queued before this moment has been seen.
    reads_known_until: Option<Instant>,
    /// An alert waits for the reads to be known past a moment not yet
    /// reached: the read source should be asked to catch up.
    wants_catch_up: bool,
    stats: CorrelatorStats,
}

/// The alert with its read's verdict; a confirmation at `now` records how
/// long the alert waited for it.
fn with_read(mut alert: Alert, confirmed: bool, paths: &[Vec<u8>], now: Instant) -> Alert {
    if confirmed {
        alert.timing.confirmation = alert
            .timing
            .raised
            .map(|raised| now.saturating_duration_since(raised));
    }
    let paths: Vec<Value> = paths
        .iter()
        .map(|p| Value::String(escape_bytes(p).into_owned()))
        .collect();
    alert.document["mapwatch"]["read"] = json!({"confirmed": confirmed, "paths": paths});
    alert.summary.push_str(if confirmed {
        " read=confirmed"
    } else {
        " read=unconfirmed"
    });
    alert
}

impl Correlator {
    pub fn new(window: Duration, hold: Duration) -> Self {
        Correlator {
            window,
            hold,
            pending: VecDeque::new(),
            recent: VecDeque::new(),
            held: VecDeque::new(),
            covered: VecDeque::new(),
            last_read: FxHashMap::default(),
            reads_known_until: None,
            wants_catch_up: false,
            stats: CorrelatorStats::default(),
        }
    }

    pub fn stats(&self) -> CorrelatorStats {
        self.stats
    }

    /// An exec alert whose arguments name the maps of `targets`.
    pub fn exec_alert(
        &mut self,
        alert: Alert,
        reader: u32,
        targets: Vec<u32>,
        now: Instant,
        emit: &mut dyn FnMut(Alert),
    ) {
        let earlier: Vec<Vec<u8>> = self
            .recent
            .iter()
            .filter(|r| r.reader == reader && targets.contains(&r.target))
            .map(|r| r.path.clone())
            .collect();
        if !earlier.is_empty() {
            self.claim(reader, &targets, now);
            self.stats.confirmed += 1;
            emit(with_read(alert, true, &earlier, now));
            return;
        }
        if targets.is_empty() {
            // Nothing a read could confirm (no such file can exist).
            self.stats.unconfirmed += 1;
            emit(with_read(alert, false, &[], now));
            return;
        }
        if self.pending.len() >= MAX_HELD
            && let Some(oldest) = self.pending.pop_front()
        {
            self.stats.released_early += 1;
            self.stats.unconfirmed += 1;
            emit(with_read(oldest.alert, false, &[], now));
        }
        // Claim now, so the file rules don't raise the same read twice.
        self.claim(reader, &targets, now + self.window);
        self.pending.push_back(Pending {
            alert,
            reader,
            targets,
            deadline: now + self.window,
            give_up_at: now + GIVE_UP_AFTER.max(self.window),
            reader_gone: None,
        });
    }

    fn claim(&mut self, reader: u32, targets: &[u32], until: Instant) {
        for target in targets {
            self.covered.push_back((reader, *target, until));
        }
        while self.covered.len() > MAX_HELD {
            self.covered.pop_front();
        }
    }

    fn is_covered(&self, reader: u32, target: u32, now: Instant) -> bool {
        self.covered.iter().any(|(r, t, until)| {
            *r == reader && *t == target && now.saturating_duration_since(*until) < self.window
        })
    }

    /// A read event from fanotify. Only a read of a `maps` file confirms
    /// or is claimed: that is what exec alerts name.
    pub fn read(&mut self, read: ReadEvent, now: Instant, emit: &mut dyn FnMut(Alert)) {
        if read.layout == Layout::Maps && read.access == Access::Read {
            self.confirm_with(&read, now, emit);
        }
        let fresh_open = self
            .last_read
            .insert((read.pid, read.target, read.layout, read.access), now)
            .is_none_or(|last| now.saturating_duration_since(last) >= self.window);
        if fresh_open {
            if self.held.len() >= MAX_HELD {
                self.held.pop_front();
                self.stats.released_early += 1;
            }
            self.held.push_back(Held {
                target: read.target,
                read,
                due: now + self.hold,
            });
        }
    }

    /// Exec alerts waiting for this read of a map leave confirmed.
    fn confirm_with(&mut self, read: &ReadEvent, now: Instant, emit: &mut dyn FnMut(Alert)) {
        let target = read.target;
        let mut i = 0;
        let mut confirmed_any = false;
        while i < self.pending.len() {
            if self.pending[i].reader == read.pid && self.pending[i].targets.contains(&target) {
                if let Some(p) = self.pending.remove(i) {
                    self.stats.confirmed += 1;
                    confirmed_any = true;
                    emit(with_read(
                        p.alert,
                        true,
                        std::slice::from_ref(&read.path),
                        now,
                    ));
                }
            } else {
                i += 1;
            }
        }
        if confirmed_any {
            // The alert may have waited past its first claim (a reader that
            // ran late): this read and the rest of the same file are its.
            self.claim(read.pid, &[target], now);
        }
        self.recent.push_back(RecentRead {
            reader: read.pid,
            target,
            path: read.path.clone(),
            seen: now,
        });
        if self.recent.len() > MAX_HELD {
            self.recent.pop_front();
        }
    }

    /// The read source drained its queue up to `until`: alerts whose reader
    /// was gone by then have every read they will get, and leave
    /// unconfirmed.
    pub fn reads_drained_until(&mut self, until: Instant, emit: &mut dyn FnMut(Alert)) {
        if self.reads_known_until.is_some_and(|known| known >= until) {
            return;
        }
        self.reads_known_until = Some(until);
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i]
                .reader_gone
                .is_some_and(|gone| gone <= until)
            {
                if let Some(p) = self.pending.remove(i) {
                    self.stats.unconfirmed += 1;
                    emit(with_read(p.alert, false, &[], until));
                }
            } else {
                i += 1;
            }
        }
    }

    /// Whether an alert waits for the read source to catch up (cleared by
    /// the call): the owner of the source asks it then.
    pub fn take_wants_catch_up(&mut self) -> bool {
        std::mem::take(&mut self.wants_catch_up)
    }

    /// Releases what is due: alerts whose verdict is settled or that waited
    /// [`GIVE_UP_AFTER`] (emitted), held reads for the file rules (returned
    /// in `due_reads`).
    pub fn tick(
        &mut self,
        now: Instant,
        settle: &dyn Settle,
        emit: &mut dyn FnMut(Alert),
        due_reads: &mut Vec<ReadEvent>,
    ) {
        while self.pending.front().is_some_and(|p| p.deadline <= now) {
            let Some(mut p) = self.pending.pop_front() else {
                break;
            };
            if now >= p.give_up_at {
                self.stats.timed_out += 1;
                self.stats.unconfirmed += 1;
                emit(with_read(p.alert, false, &[], now));
                continue;
            }
            if p.reader_gone.is_none() && !settle.still_runs(p.reader) {
                p.reader_gone = Some(now);
            }
            match p.reader_gone {
                Some(gone) if self.reads_known_until.is_some_and(|known| known >= gone) => {
                    self.stats.unconfirmed += 1;
                    emit(with_read(p.alert, false, &[], now));
                }
                gone => {
                    self.wants_catch_up |= gone.is_some();
                    // Looked at again a window later (an answer to the ask
                    // releases it before), never after giving up.
                    p.deadline = (now + self.window).min(p.give_up_at);
                    let at = self.pending.partition_point(|q| q.deadline <= p.deadline);
                    self.pending.insert(at, p);
                }
            }
        }
        while self.held.front().is_some_and(|h| h.due <= now) {
            let Some(held) = self.held.pop_front() else {
                break;
            };
            if held.read.layout == Layout::Maps
                && held.read.access == Access::Read
                && self.is_covered(held.read.pid, held.target, now)
            {
                self.stats.covered_reads += 1;
            } else {
                self.stats.file_events += 1;
                due_reads.push(held.read);
            }
        }
        let horizon = self.window;
        while self
            .recent
            .front()
            .is_some_and(|r| now.saturating_duration_since(r.seen) > horizon)
        {
            self.recent.pop_front();
        }
        while self
            .covered
            .front()
            .is_some_and(|(_, _, until)| now.saturating_duration_since(*until) > horizon)
        {
            self.covered.pop_front();
        }
        if self.last_read.len() > MAX_HELD {
            self.last_read
                .retain(|_, last| now.saturating_duration_since(*last) < horizon);
        }
    }

    /// When [`Correlator::tick`] next has something to release.
    pub fn next_deadline(&self) -> Option<Instant> {
        let alert = self.pending.front().map(|p| p.deadline);
        let held = self.held.front().map(|h| h.due);
        match (alert, held) {
            (Some(a), Some(h)) => Some(a.min(h)),
            (a, h) => a.or(h),
        }
    }

    /// Shutdown: everything held leaves now; alerts still waiting for a
    /// read leave unconfirmed.
    pub fn flush(&mut self, emit: &mut dyn FnMut(Alert), due_reads: &mut Vec<ReadEvent>) {
        let now = Instant::now();
        for p in self.pending.drain(..) {
            self.stats.unconfirmed += 1;
            emit(with_read(p.alert, false, &[], now));
        }
        let far = now + self.window + self.hold + Duration::from_secs(1);
        self.tick(far, &Gone, emit, due_reads);
    }
}

/// Nothing runs any more (shutdown).
struct Gone;

impl Settle for Gone {
    fn still_runs(&self, _: u32) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::proc_path::maps_owner;

    fn alert() -> Alert {
        Alert {
            document: json!({"mapwatch": {}}),
            ..Alert::default()
        }
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// A 200 ms window and a 20 ms hold.
    fn correlator() -> Correlator {
        Correlator::new(ms(200), ms(20))
    }

    /// The processes that still run.
    struct Running(Vec<u32>);

    impl Settle for Running {
        fn still_runs(&self, pid: u32) -> bool {
            self.0.contains(&pid)
        }
    }

    fn read(pid: u32, path: &str, now: Instant) -> ReadEvent {
        ReadEvent {
            pid,
            target: maps_owner(path.as_bytes(), pid).expect("a maps path"),
            target_ns_pid: None,
            layout: crate::process::proc_path::Layout::Maps,
            access: crate::source::fanotify::Access::Read,
            path: path.as_bytes().to_vec(),
            seen: now,
            taken_by: 1,
            index: 0,
            reader: None,
            via: Default::default(),
        }
    }

    #[test]
    fn a_read_confirms_its_alert_at_once() {
        let now = Instant::now();
        let mut c = correlator();
        let mut out = Vec::new();
        c.exec_alert(alert(), 10, vec![42], now, &mut |a| out.push(a));
        assert!(out.is_empty());
        c.read(read(10, "/proc/42/maps", now), now, &mut |a| out.push(a));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].document["mapwatch"]["read"]["confirmed"], true);
        assert_eq!(
            out[0].document["mapwatch"]["read"]["paths"][0],
            "/proc/42/maps"
        );
        let mut due = Vec::new();
        c.tick(now + ms(50), &Gone, &mut |a| out.push(a), &mut due);
        assert!(due.is_empty(), "the read belongs to the exec alert");
    }

    #[test]
    fn a_read_before_its_exec_event_still_confirms() {
        let now = Instant::now();
        let mut c = correlator();
        let mut out = Vec::new();
        c.read(read(10, "/proc/42/maps", now), now, &mut |a| out.push(a));
        c.exec_alert(alert(), 10, vec![42], now, &mut |a| out.push(a));
        assert_eq!(out[0].document["mapwatch"]["read"]["confirmed"], true);
        let mut due = Vec::new();
        c.tick(now + ms(50), &Gone, &mut |a| out.push(a), &mut due);
        assert!(due.is_empty());
    }

    #[test]
    fn unconfirmed_alerts_leave_once_the_reader_is_gone_and_its_reads_are_known() {
        let now = Instant::now();
        let mut c = correlator();
        let mut out = Vec::new();
        let mut due = Vec::new();
        c.exec_alert(alert(), 10, vec![42], now, &mut |a| out.push(a));
        // Another process's read, and the reader's read of another map
        // (grep's own /proc/self/maps), confirm nothing.
        c.read(read(11, "/proc/42/maps", now), now, &mut |a| out.push(a));
        c.read(read(10, "/proc/10/maps", now), now, &mut |a| out.push(a));
        c.tick(now + ms(199), &Gone, &mut |a| out.push(a), &mut due);
        assert!(out.is_empty());
        assert_eq!(c.next_deadline(), Some(now + ms(200)));
        // At the end of the window the reader is gone, but a read it made
        // may still be queued: the source is asked to drain past now.
        c.tick(now + ms(200), &Gone, &mut |a| out.push(a), &mut due);
        assert!(out.is_empty(), "no verdict before the reads are known");
        assert!(c.take_wants_catch_up());
        // A drain that ended before the exit was seen says nothing yet.
        c.reads_drained_until(now + ms(150), &mut |a| out.push(a));
        assert!(out.is_empty());
        c.reads_drained_until(now + ms(201), &mut |a| out.push(a));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].document["mapwatch"]["read"]["confirmed"], false);
        let readers: Vec<u32> = due.iter().map(|r| r.pid).collect();
        assert_eq!(readers, vec![11, 10], "both reads go to the file rules");
    }

    #[test]
    fn a_late_read_by_a_reader_that_still_runs_confirms() {
        let now = Instant::now();
        let mut c = correlator();
        let mut out = Vec::new();
        let mut due = Vec::new();
        c.exec_alert(alert(), 10, vec![42], now, &mut |a| out.push(a));
        // The reader runs on (scheduled late): no verdict, no ask.
        for at in [200, 400, 600, 800] {
            c.tick(
                now + ms(at),
                &Running(vec![10]),
                &mut |a| out.push(a),
                &mut due,
            );
            c.reads_drained_until(now + ms(at), &mut |a| out.push(a));
        }
        assert!(out.is_empty());
        assert!(!c.take_wants_catch_up());
        c.read(
            read(10, "/proc/42/maps", now + ms(900)),
            now + ms(900),
            &mut |a| out.push(a),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].document["mapwatch"]["read"]["confirmed"], true);
    }

    #[test]
    fn an_alert_whose_verdict_stays_unknown_gives_up_and_is_counted() {
        let now = Instant::now();
        let mut c = correlator();
        let mut out = Vec::new();
        let mut due = Vec::new();
        c.exec_alert(alert(), 10, vec![42], now, &mut |a| out.push(a));
        c.exec_alert(alert(), 11, vec![42], now, &mut |a| out.push(a));
        // 10 runs on without reading; 11 is gone but the source never
        // answers (its thread stalled).
        let running = Running(vec![10]);
        let mut at = now;
        while at < now + GIVE_UP_AFTER {
            c.tick(at, &running, &mut |a| out.push(a), &mut due);
            assert!(out.is_empty(), "released {:?} early", at - now);
            at = c.next_deadline().expect("both still wait");
        }
        assert_eq!(at, now + GIVE_UP_AFTER, "never looked at after giving up");
        c.tick(at, &running, &mut |a| out.push(a), &mut due);
        assert_eq!(out.len(), 2);
        assert_eq!(c.stats().timed_out, 2);
        assert_eq!(c.stats().unconfirmed, 2);
    }

    #[test]
    fn one_file_event_per_reader_and_target_per_window() {
        let now = Instant::now();
        let mut c = correlator();
        let mut due = Vec::new();
        // cat reads a map in several read(2)s: one event.
        for _ in 0..3 {
            c.read(read(5, "/proc/42/maps", now), now, &mut |_| {});
        }
        c.tick(now + ms(30), &Gone, &mut |_| {}, &mut due);
        assert_eq!(due.len(), 1);
        // Another target, or the same one after the window, is another.
        c.read(
            read(5, "/proc/43/maps", now + ms(40)),
            now + ms(40),
            &mut |_| {},
        );
        c.read(
            read(5, "/proc/42/maps", now + ms(250)),
            now + ms(250),
            &mut |_| {},
        );
        c.tick(now + ms(300), &Gone, &mut |_| {}, &mut due);
        assert_eq!(due.len(), 3);
    }

    #[test]
    fn held_state_is_bounded() {
        let now = Instant::now();
        let mut c = Correlator::new(Duration::from_secs(60), Duration::from_secs(60));
        let mut released = 0;
        for pid in 0..(MAX_HELD as u32 + 100) {
            c.exec_alert(alert(), pid, vec![1], now, &mut |_| released += 1);
            c.read(read(pid + 1_000_000, "/proc/1/maps", now), now, &mut |_| {});
        }
        assert!(c.pending.len() <= MAX_HELD);
        assert_eq!(released, 100);
        assert!(c.held.len() <= MAX_HELD && c.recent.len() <= MAX_HELD);
    }
}
