//! Rate limiting, as Elastic does it for identical noise: at most
//! `max_signals` alerts per `interval` (100 per 5 minutes by default), kept
//! per rule **and per reader executable and target**, so that noise of one
//! kind (a thousand `cat /proc/self/maps`) never uses up the budget of a
//! read of another process's map.
//!
//! Contract: a window opens with the first alert of its rule, reader
//! executable (`process.executable`, else `process.name`) and target
//! (`mapwatch.target.pid`; every reader of its own map is one target) and
//! lasts the rule's interval; alerts
//! past the limit in a window are suppressed and counted. A rule has at most
//! [`MAX_WINDOWS_PER_RULE`] such windows open; alerts of further readers and
//! targets share one more window of the same limit. When a window that
//! suppressed anything ends (or at shutdown), one summary alert says how
//! many alerts of which rule, reader and target were suppressed, and when.
//! It is
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

/// Distinct (reader, target) windows a rule keeps open, at most: beyond,
/// one shared window, so memory and summaries stay bounded however many
/// targets an attacker reads.
pub const MAX_WINDOWS_PER_RULE: usize = 256;

/// Whose alerts share a window.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Scope {
    Pair {
        reader: String,
        target: Target,
    },
    /// Every reader and target past [`MAX_WINDOWS_PER_RULE`].
    Others,
}

/// Whose map an alert names. Every process reading its own map is one
/// kind of noise (a new pid each time), not a new target each time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Target {
    Other(u64),
    Itself,
    Unnamed,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    rule_id: String,
    scope: Scope,
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
    windows: HashMap<Key, Window>,
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
        let key = self.key_of(rule_id, alert);
        let window = self.windows.entry(key).or_insert_with(|| Window {
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

    /// The window `alert` counts in: its reader and target's, unless the
    /// rule already keeps [`MAX_WINDOWS_PER_RULE`] of those open.
    fn key_of(&self, rule_id: &str, alert: &Alert) -> Key {
        let process = &alert.document["process"];
        let reader = process["executable"]
            .as_str()
            .or_else(|| process["name"].as_str())
            .unwrap_or_default()
            .to_owned();
        let target = match alert.document["mapwatch"]["target"]["pid"].as_u64() {
            Some(pid) if Some(pid) == process["pid"].as_u64() => Target::Itself,
            Some(pid) => Target::Other(pid),
            None => Target::Unnamed,
        };
        let key = Key {
            rule_id: rule_id.to_owned(),
            scope: Scope::Pair { reader, target },
        };
        let crowded = || {
            self.windows
                .keys()
                .filter(|k| k.rule_id == rule_id && k.scope != Scope::Others)
                .count()
                >= MAX_WINDOWS_PER_RULE
        };
        if self.windows.contains_key(&key) || !crowded() {
            key
        } else {
            Key {
                rule_id: rule_id.to_owned(),
                scope: Scope::Others,
            }
        }
    }

    /// Ends the windows whose interval is over; summaries go to `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Alert>) {
        let ended: Vec<Key> = self
            .windows
            .iter()
            .filter(|(key, window)| {
                self.limits
                    .get(&key.rule_id)
                    .is_none_or(|l| now.saturating_duration_since(window.opened) >= l.interval)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in ended {
            if let Some(window) = self.windows.remove(&key)
                && let Some(summary) = self.summary(&key, window)
            {
                out.push(summary);
            }
        }
    }

    /// Shutdown: every window ends now.
    pub fn flush(&mut self, out: &mut Vec<Alert>) {
        let windows: Vec<(Key, Window)> = self.windows.drain().collect();
        for (key, window) in windows {
            if let Some(summary) = self.summary(&key, window) {
                out.push(summary);
            }
        }
    }

    /// When the next window ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.windows
            .iter()
            .filter_map(|(key, w)| self.limits.get(&key.rule_id).map(|l| w.opened + l.interval))
            .min()
    }

    fn summary(&self, key: &Key, window: Window) -> Option<Alert> {
        if window.suppressed == 0 {
            return None;
        }
        let rule_id = key.rule_id.as_str();
        let limit = self.limits.get(rule_id)?;
        let name = window.rule["name"].as_str().unwrap_or(rule_id).to_owned();
        let mut scope = serde_json::Map::new();
        scope.insert("count".into(), json!(window.suppressed));
        scope.insert("first".into(), json!(window.first_suppressed));
        scope.insert("last".into(), json!(window.last_suppressed));
        scope.insert("max_signals".into(), json!(limit.max));
        scope.insert("interval_seconds".into(), json!(limit.interval.as_secs()));
        let whose = match &key.scope {
            Scope::Pair { reader, target } => {
                scope.insert("reader_executable".into(), json!(reader));
                let reader = escape_for_terminal(reader.as_bytes());
                match target {
                    Target::Other(pid) => {
                        scope.insert("target_pid".into(), json!(pid));
                        format!("{reader} on pid {pid}")
                    }
                    Target::Itself => {
                        scope.insert("target_self".into(), json!(true));
                        format!("{reader} on its own map")
                    }
                    Target::Unnamed => reader,
                }
            }
            Scope::Others => format!("readers and targets past the first {MAX_WINDOWS_PER_RULE}"),
        };
        let reason = format!(
            "{} alerts of rule \"{name}\" ({whose}) were suppressed: its limit is {} per {} s",
            window.suppressed,
            limit.max,
            limit.interval.as_secs()
        );
        let message = format!(
            "{}: {} more alerts of {whose} suppressed, from {} to {} (at most {} per {} s)",
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
                "mapwatch": {"suppressed": scope},
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

    /// An alert of `rule_id` by `reader` naming `target`'s map.
    fn read_alert(rule_id: &str, reader: &str, target: u64, n: u32) -> Alert {
        Alert {
            document: json!({
                "@timestamp": format!("t{n}"),
                "rule": {"id": rule_id, "name": "R"},
                "threat": {},
                "process": {"executable": reader, "name": "cat"},
                "mapwatch": {"target": {"pid": target}},
            }),
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

    /// Issue 16: a thousand reads of its own map by `cat` must not hide
    /// one read of another process's; each pair has its own budget and its
    /// own summary, which names it.
    #[test]
    fn noise_of_one_reader_and_target_never_hides_another_target() {
        let mut l = limiter();
        let now = Instant::now();
        let noise = (0..1000)
            .filter(|n| l.admit(&read_alert(SEED, "/usr/bin/cat", 4242, *n), now))
            .count();
        assert_eq!(noise, 100);
        assert!(
            l.admit(&read_alert(SEED, "/usr/bin/cat", 777, 1000), now),
            "the victim"
        );
        assert!(
            l.admit(&read_alert(SEED, "/usr/bin/dd", 4242, 1001), now),
            "another reader"
        );
        let mut out = Vec::new();
        l.flush(&mut out);
        assert_eq!(out.len(), 1, "only the noise suppressed anything");
        let s = &out[0].document["mapwatch"]["suppressed"];
        assert_eq!(s["count"], 900);
        assert_eq!(s["reader_executable"], "/usr/bin/cat");
        assert_eq!(s["target_pid"], 4242);
        let message = out[0].document["message"].as_str().unwrap_or_default();
        assert!(message.contains("/usr/bin/cat on pid 4242"), "{message}");
    }

    /// Each `cat /proc/self/maps` is a new process reading its own map:
    /// one kind of noise, limited as one.
    #[test]
    fn readers_of_their_own_map_share_one_window() {
        let mut l = limiter();
        let now = Instant::now();
        let own = |pid: u64| Alert {
            document: json!({
                "@timestamp": format!("t{pid}"),
                "rule": {"id": SEED, "name": "R"},
                "threat": {},
                "process": {"executable": "/usr/bin/cat", "pid": pid},
                "mapwatch": {"target": {"pid": pid}},
            }),
            ..Alert::default()
        };
        let admitted = (1000..1150).filter(|pid| l.admit(&own(*pid), now)).count();
        assert_eq!(admitted, 100);
        let mut out = Vec::new();
        l.flush(&mut out);
        let s = &out[0].document["mapwatch"]["suppressed"];
        assert_eq!(
            (s["count"].as_u64(), s["target_self"].as_bool()),
            (Some(50), Some(true))
        );
    }

    /// However many targets are read, a rule keeps a bounded number of
    /// windows; the rest share one, with the same limit.
    #[test]
    fn windows_per_rule_are_bounded() {
        let mut l = limiter();
        let now = Instant::now();
        let pairs = MAX_WINDOWS_PER_RULE as u64 + 500;
        let admitted = (0..pairs)
            .filter(|t| l.admit(&read_alert(SEED, "/usr/bin/cat", *t, *t as u32), now))
            .count();
        assert_eq!(admitted, MAX_WINDOWS_PER_RULE + 100);
        assert_eq!(l.windows.len(), MAX_WINDOWS_PER_RULE + 1);
        let mut out = Vec::new();
        l.flush(&mut out);
        assert_eq!(out.len(), 1);
        let s = &out[0].document["mapwatch"]["suppressed"];
        assert_eq!(s["count"], 400);
        assert!(s.get("target_pid").is_none(), "{s}");
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
