//! The health verdict of `/healthz`, `mapwatch_healthy` and `mapwatch
//! status`: the audit source is ours (registered, or joined beside the
//! daemon), it answered recently, and nothing was lost within the interval.
//!
//! Contract: [`HealthWindow::judge`] is given, once a second, the loss
//! counters' totals and when the source last answered; it is unhealthy
//! while any loss counter is higher than it was one interval ago, and
//! healthy again once a whole interval passed without growth.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// A source that has not answered (a record, a status poll) for this long
/// is stale: status polls come every second.
const STALE_AFTER: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub healthy: bool,
    /// Why not, in one line.
    pub reason: Option<String>,
}

impl Verdict {
    /// Before the first judgement.
    pub fn starting() -> Self {
        Verdict {
            healthy: false,
            reason: Some("starting".into()),
        }
    }
}

/// What the source looks like now.
#[derive(Clone, Copy, Debug)]
pub struct SourceState {
    /// Registered as the audit daemon, or joined beside one.
    pub attached: bool,
    /// The last record or successful status poll.
    pub last_heard: Instant,
}

pub struct HealthWindow {
    interval: Duration,
    /// Loss totals, one sample a judgement, the oldest at most an interval old.
    samples: VecDeque<(Instant, Vec<(&'static str, u64)>)>,
}

impl HealthWindow {
    pub fn new(interval: Duration) -> Self {
        HealthWindow {
            interval,
            samples: VecDeque::new(),
        }
    }

    pub fn judge(
        &mut self,
        now: Instant,
        losses: &[(&'static str, u64)],
        source: SourceState,
    ) -> Verdict {
        while self
            .samples
            .get(1)
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.interval)
        {
            self.samples.pop_front();
        }
        let grew = self.samples.front().and_then(|(_, before)| {
            losses.iter().find_map(|&(name, total)| {
                let then = before
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0, |(_, v)| *v);
                (total > then).then(|| format!("{name} grew by {}", total - then))
            })
        });
        self.samples.push_back((now, losses.to_vec()));
        let reason = if !source.attached {
            Some("the audit source is not registered or joined".to_owned())
        } else if now.saturating_duration_since(source.last_heard) > STALE_AFTER {
            Some(format!(
                "no record or audit status for {} s",
                now.saturating_duration_since(source.last_heard).as_secs()
            ))
        } else {
            grew.map(|what| format!("{what} in the last {} s", self.interval.as_secs()))
        };
        Verdict {
            healthy: reason.is_none(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_makes_it_unhealthy_for_one_interval() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut window = HealthWindow::new(Duration::from_secs(10));
        let source = |s| SourceState {
            attached: true,
            last_heard: at(s),
        };
        assert!(
            window
                .judge(at(0), &[("kernel_lost", 0)], source(0))
                .healthy
        );
        let lost = window.judge(at(1), &[("kernel_lost", 7)], source(1));
        assert_eq!(
            lost.reason.as_deref(),
            Some("kernel_lost grew by 7 in the last 10 s")
        );
        for s in 2..11 {
            assert!(
                !window
                    .judge(at(s), &[("kernel_lost", 7)], source(s))
                    .healthy,
                "{s}"
            );
        }
        assert!(
            window
                .judge(at(11), &[("kernel_lost", 7)], source(11))
                .healthy
        );
    }

    #[test]
    fn a_silent_or_detached_source_is_unhealthy() {
        let t0 = Instant::now();
        let mut window = HealthWindow::new(Duration::from_secs(10));
        let stale = SourceState {
            attached: true,
            last_heard: t0,
        };
        let verdict = window.judge(t0 + Duration::from_secs(6), &[], stale);
        assert_eq!(
            verdict.reason.as_deref(),
            Some("no record or audit status for 6 s")
        );
        let detached = SourceState {
            attached: false,
            last_heard: t0,
        };
        assert!(!window.judge(t0, &[], detached).healthy);
    }
}
