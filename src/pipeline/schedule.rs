//! When the loop's periodic work is due: the tick (correlator, assembler
//! timeouts, rate-limit windows), pruning the process table, the health
//! check and the stats line. Times only: the loop does the work.

use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(100);
const PRUNE_EVERY: Duration = Duration::from_secs(5);
/// How often the kernel's `lost` counter is read and losses are reported.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// What is due at one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Due {
    pub prune: bool,
    pub health: bool,
    pub stats: bool,
}

pub(super) struct Schedule {
    next_tick: Instant,
    last_prune: Instant,
    last_health: Instant,
    last_stats: Instant,
    /// Zero: no stats line.
    stats_every: Duration,
}

impl Schedule {
    pub fn new(now: Instant, stats_every: Duration) -> Self {
        Schedule {
            next_tick: now + TICK,
            last_prune: now,
            last_health: now,
            last_stats: now,
            stats_every,
        }
    }

    /// A reload may change the stats interval.
    pub fn set_stats_every(&mut self, every: Duration) {
        self.stats_every = every;
    }

    pub fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// `None` before the next tick; at it, what else is due.
    pub fn tick(&mut self, now: Instant) -> Option<Due> {
        if now < self.next_tick {
            return None;
        }
        self.next_tick = now + TICK;
        let due = |last: &mut Instant, every: Duration| {
            let is_due = !every.is_zero() && now.duration_since(*last) >= every;
            if is_due {
                *last = now;
            }
            is_due
        };
        Some(Due {
            prune: due(&mut self.last_prune, PRUNE_EVERY),
            health: due(&mut self.last_health, HEALTH_EVERY),
            stats: due(&mut self.last_stats, self.stats_every),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_chore_comes_at_its_interval() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(t0, Duration::from_secs(60));
        assert_eq!(schedule.tick(t0 + Duration::from_millis(50)), None);
        assert_eq!(
            schedule.tick(t0 + Duration::from_millis(100)),
            Some(Due::default())
        );
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            schedule.tick(at(1)),
            Some(Due {
                health: true,
                ..Due::default()
            })
        );
        let due = schedule.tick(at(5)).expect("a tick");
        assert!(due.prune && due.health && !due.stats);
        assert!(schedule.tick(at(60)).expect("a tick").stats);
        schedule.set_stats_every(Duration::ZERO);
        assert!(!schedule.tick(at(200)).expect("a tick").stats);
    }
}
