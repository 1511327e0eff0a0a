//! Per-rule rate limiting, as Elastic does it: at most `max_signals` alerts
//! per `interval` (100 per 5 minutes by default).
//!
//! Contract: a rule's window opens with its first alert and lasts its
//! interval; alerts past the limit in a window are suppressed and counted.
//! When a window that suppressed anything ends (or at shutdown), one summary
//! alert says how many alerts of which rule were suppressed, and when. It is
//! an alert (`event.kind: alert`, the rule's severity, the host): promoted
//! into Elastic Security beside the alerts it stands for, it tells the
//! analyst that a burst went past what they were shown. A
//! rule's limiter state is a few counters; windows of rules gone quiet are
//! dropped when they end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Alert, ecs_document, escape_for_terminal};
use crate::rule::RuleSet;

#[derive(Clone, Copy, Debug)]
struct Limit {
    max: u32,
    interval: Duration,
}

struct Window {
    opened: Instant,
    admitted: u32,
    suppressed: u64,
    first_suppressed: Option<Value>,
    last_suppressed: Option<Value>,
    /// The rule's fields and the first alert's severity and host, for the
    /// summary.
    rule: Value,
    threat: Value,
    severity: Value,
    risk_score: Value,
    host: Value,
}

pub struct Limiter {
    limits: HashMap<String, Limit>,
    windows: HashMap<String, Window>,
    /// Alerts suppressed in all, for the stats line.
    pub suppressed_total: u64,
}

impl Limiter {
    pub fn new(rules: &RuleSet) -> Self {
        Limiter {
            limits: rules
                .rules
                .iter()
                .map(|r| {
                    (
                        r.meta.rule_id.clone(),
                        Limit {
                            max: r.max_signals,
                            interval: r.interval,
                        },
                    )
                })
                .collect(),
            windows: HashMap::new(),
            suppressed_total: 0,
        }
    }

    /// Whether `alert` may leave now; counts it either way. Alerts of rules
    /// the limiter doesn't know (summaries, stats) always pass.
    pub fn admit(&mut self, alert: &Alert, now: Instant) -> bool {
        let Some(rule_id) = alert.document["rule"]["id"].as_str() else {
            return true;
        };
        let Some(limit) = self.limits.get(rule_id).copied() else {
            return true;
        };
        let window = self
            .windows
            .entry(rule_id.to_owned())
            .or_insert_with(|| Window {
                opened: now,
                admitted: 0,
                suppressed: 0,
                first_suppressed: None,
                last_suppressed: None,
                rule: alert.document["rule"].clone(),
                threat: alert.document["threat"].clone(),
                severity: alert.document["event"]["severity"].clone(),
                risk_score: alert.document["event"]["risk_score"].clone(),
                host: alert.document["host"].clone(),
            });
        if window.admitted < limit.max {
            window.admitted += 1;
            return true;
        }
        window.suppressed += 1;
        self.suppressed_total += 1;
        let stamp = alert.document["@timestamp"].clone();
        window.first_suppressed.get_or_insert_with(|| stamp.clone());
        window.last_suppressed = Some(stamp);
        false
    }

    /// Ends the windows whose interval is over; summaries go to `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Alert>) {
        let ended: Vec<String> = self
            .windows
            .iter()
            .filter(|(rule_id, window)| {
                self.limits
                    .get(*rule_id)
                    .is_none_or(|l| now.saturating_duration_since(window.opened) >= l.interval)
            })
            .map(|(rule_id, _)| rule_id.clone())
            .collect();
        for rule_id in ended {
            if let Some(window) = self.windows.remove(&rule_id)
                && let Some(summary) = self.summary(&rule_id, window)
            {
                out.push(summary);
            }
        }
    }

    /// Shutdown: every window ends now.
    pub fn flush(&mut self, out: &mut Vec<Alert>) {
        let windows: Vec<(String, Window)> = self.windows.drain().collect();
        for (rule_id, window) in windows {
            if let Some(summary) = self.summary(&rule_id, window) {
                out.push(summary);
            }
        }
    }

    /// When the next window ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.windows
            .iter()
            .filter_map(|(id, w)| self.limits.get(id).map(|l| w.opened + l.interval))
            .min()
    }

    fn summary(&self, rule_id: &str, window: Window) -> Option<Alert> {
        if window.suppressed == 0 {
            return None;
        }
        let limit = self.limits.get(rule_id)?;
        let name = window.rule["name"].as_str().unwrap_or(rule_id).to_owned();
        let reason = format!(
            "{} alerts of rule \"{name}\" were suppressed: its limit is {} per {} s",
            window.suppressed,
            limit.max,
            limit.interval.as_secs()
        );
        let message = format!(
            "{}: {} more alerts suppressed, from {} to {} (at most {} per {} s)",
            escape_for_terminal(name.as_bytes()),
            window.suppressed,
            window
                .first_suppressed
                .as_ref()
                .and_then(Value::as_str)
                .unwrap_or("?"),
            window
                .last_suppressed
                .as_ref()
                .and_then(Value::as_str)
                .unwrap_or("?"),
            limit.max,
            limit.interval.as_secs()
        );
        let document = ecs_document(
            window.last_suppressed.clone().unwrap_or(Value::Null),
            json!({
                "event": {
                    "kind": "alert",
                    "type": ["info"],
                    "action": "alerts-suppressed",
                    "module": "mapwatch",
                    "dataset": "mapwatch.alert",
                    "severity": window.severity,
                    "risk_score": window.risk_score,
                    "reason": reason,
                },
                "message": message,
                "host": window.host,
                "rule": window.rule,
                "threat": window.threat,
                "mapwatch": {"suppressed": {
                    "count": window.suppressed,
                    "first": window.first_suppressed,
                    "last": window.last_suppressed,
                    "max_signals": limit.max,
                    "interval_seconds": limit.interval.as_secs(),
                }},
            }),
        );
        let summary = format!("suppressed: {reason}");
        Some(Alert {
            document,
            summary,
            timing: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::RulesConfig;
    use crate::rule::file::SourceText;

    fn alert(rule_id: &str, n: u32) -> Alert {
        Alert {
            document: json!({"@timestamp": format!("t{n}"), "rule": {"id": rule_id, "name": "R"}, "threat": {}}),
            ..Alert::default()
        }
    }

    fn limiter() -> Limiter {
        let none = SourceText {
            name: "(none)",
            text: "",
        };
        Limiter::new(&RuleSet::load(&RulesConfig::default(), &[], &none).expect("shipped rules"))
    }

    const SEED: &str = "2f95540c-923e-4f57-9dae-de30169c68b9";

    #[test]
    fn a_burst_is_cut_at_max_signals_and_summarised() {
        let mut l = limiter();
        let now = Instant::now();
        let admitted = (0..1000).filter(|n| l.admit(&alert(SEED, *n), now)).count();
        assert_eq!(admitted, 100);
        let mut out = Vec::new();
        l.expire(now + Duration::from_secs(299), &mut out);
        assert!(out.is_empty(), "the window is still open");
        l.expire(now + Duration::from_secs(300), &mut out);
        assert_eq!(out.len(), 1);
        let s = &out[0].document["mapwatch"]["suppressed"];
        assert_eq!(
            (s["count"].as_u64(), s["first"].as_str(), s["last"].as_str()),
            (Some(900), Some("t100"), Some("t999"))
        );
        assert_eq!(out[0].document["rule"]["id"], SEED);
        assert!(
            l.admit(&alert(SEED, 0), now + Duration::from_secs(301)),
            "a new window"
        );
    }

    #[test]
    fn quiet_windows_end_without_a_summary_and_unknown_rules_pass() {
        let mut l = limiter();
        let now = Instant::now();
        assert!(l.admit(&alert(SEED, 0), now));
        assert!(l.admit(&alert("not-a-rule", 0), now));
        let mut out = Vec::new();
        l.expire(now + Duration::from_secs(400), &mut out);
        l.flush(&mut out);
        assert!(out.is_empty());
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn shutdown_flushes_pending_summaries() {
        let mut l = limiter();
        let now = Instant::now();
        for n in 0..150 {
            l.admit(&alert(SEED, n), now);
        }
        let mut out = Vec::new();
        l.flush(&mut out);
        assert_eq!(out[0].document["mapwatch"]["suppressed"]["count"], 50);
    }
}
