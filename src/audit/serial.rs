//! Serial-gap accounting: the kernel numbers audit events from one 32-bit
//! counter, so a serial that never arrives is an event lost on its way to
//! us (a full socket buffer, the kernel's hold queue overflowing), a loss the
//! kernel's `lost` counter does not always show.
//!
//! Contract: events may arrive out of order (they complete on different
//! CPUs), so a missing serial is a *hole* until [`SerialTracker::expire`]
//! finds it older than the grace period; only then is it counted as lost.
//! Comparisons wrap at 2^32, as the kernel's counter does. At most
//! [`MAX_HOLES`] holes are held: a larger jump is counted at once. A jump
//! backwards by more than that, or forwards by more than [`MAX_JUMP`], is a
//! new sequence (another boot, an unrelated log), not a loss.

use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

use super::record::Serial;

/// Holes held while waiting for late arrivals.
pub const MAX_HOLES: u32 = 4096;

/// A forward jump beyond this is a new sequence: the kernel counts a loss
/// that size in its own `lost` counter, which is polled beside this.
pub const MAX_JUMP: u32 = 1 << 20;

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct SerialStats {
    /// Serials that never arrived.
    pub gaps: u64,
    /// Times the sequence restarted (counted, not treated as loss).
    pub restarts: u64,
}

pub struct SerialTracker {
    highest: Option<u32>,
    holes: FxHashMap<u32, Instant>,
    grace: Duration,
    stats: SerialStats,
}

impl SerialTracker {
    pub fn new(grace: Duration) -> Self {
        SerialTracker {
            highest: None,
            holes: FxHashMap::default(),
            grace,
            stats: SerialStats::default(),
        }
    }

    pub fn stats(&self) -> SerialStats {
        self.stats
    }

    /// Holes not yet counted.
    pub fn open_holes(&self) -> usize {
        self.holes.len()
    }

    /// One record's serial (every record of an event carries the same one).
    pub fn see(&mut self, serial: Serial, now: Instant) {
        // The kernel's counter is 32 bits wide; logs print it unsigned.
        let serial = serial.0 as u32;
        let Some(highest) = self.highest else {
            self.highest = Some(serial);
            return;
        };
        let ahead = serial.wrapping_sub(highest) as i32;
        if ahead == 0 {
            return;
        }
        if ahead < 0 {
            if self.holes.remove(&serial).is_none() && ahead.unsigned_abs() > MAX_HOLES {
                self.restart(serial);
            }
            return;
        }
        let missing = ahead as u32 - 1;
        if missing > MAX_JUMP {
            self.restart(serial);
            return;
        }
        let held = missing.min(MAX_HOLES.saturating_sub(self.holes.len() as u32));
        self.stats.gaps += u64::from(missing - held);
        for offset in 1..=held {
            self.holes.insert(highest.wrapping_add(offset), now);
        }
        self.highest = Some(serial);
    }

    /// Counts the holes older than the grace period as lost.
    pub fn expire(&mut self, now: Instant) {
        if self.holes.is_empty() {
            return;
        }
        let grace = self.grace;
        let before = self.holes.len();
        self.holes
            .retain(|_, noticed| now.saturating_duration_since(*noticed) < grace);
        self.stats.gaps += (before - self.holes.len()) as u64;
    }

    /// End of input: every hole is a loss.
    pub fn finish(&mut self) {
        self.stats.gaps += self.holes.len() as u64;
        self.holes.clear();
    }

    fn restart(&mut self, serial: u32) {
        self.stats.restarts += 1;
        self.stats.gaps += self.holes.len() as u64;
        self.holes.clear();
        self.highest = Some(serial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(2);

    fn feed(serials: &[u64]) -> SerialTracker {
        let now = Instant::now();
        let mut t = SerialTracker::new(GRACE);
        for s in serials {
            t.see(Serial(*s), now);
        }
        t
    }

    #[test]
    fn consecutive_and_repeated_serials_are_no_loss() {
        let mut t = feed(&[10, 10, 11, 12, 12, 13]);
        t.finish();
        assert_eq!(t.stats().gaps, 0);
    }

    #[test]
    fn late_arrivals_fill_their_holes() {
        let mut t = feed(&[10, 13, 11, 12, 14]);
        t.finish();
        assert_eq!(t.stats().gaps, 0);
    }

    #[test]
    fn holes_become_losses_after_the_grace_period() {
        let start = Instant::now();
        let mut t = SerialTracker::new(GRACE);
        t.see(Serial(100), start);
        t.see(Serial(105), start);
        t.expire(start + Duration::from_secs(1));
        assert_eq!((t.stats().gaps, t.open_holes()), (0, 4));
        t.expire(start + Duration::from_secs(3));
        assert_eq!((t.stats().gaps, t.open_holes()), (4, 0));
    }

    #[test]
    fn the_counter_wraps_at_32_bits() {
        let mut t = feed(&[u64::from(u32::MAX) - 1, u64::from(u32::MAX), 0, 2]);
        t.finish();
        assert_eq!(t.stats().gaps, 1);
    }

    #[test]
    fn a_huge_jump_is_counted_without_holding_every_hole() {
        let mut t = feed(&[1, 100_002]);
        assert_eq!(t.open_holes(), MAX_HOLES as usize);
        t.finish();
        assert_eq!(t.stats().gaps, 100_000);
    }

    #[test]
    fn a_jump_far_backwards_or_forwards_is_a_restart_not_a_loss() {
        let mut t = feed(&[5_000_000, 5_000_001, 7, 8, 90_000_000, 90_000_001]);
        t.finish();
        assert_eq!(
            t.stats(),
            SerialStats {
                gaps: 0,
                restarts: 2
            }
        );
    }
}
