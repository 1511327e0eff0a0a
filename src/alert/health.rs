//! `mapwatch.health` documents: events were lost somewhere between the
//! kernel and the sinks. They go wherever alerts go (a detector that is
//! blind for a while is itself something to alert on), never rate-limited,
//! and are alerts (`event.kind: alert`, medium): Elastic's "External
//! Alerts" promotes them, because an attacker who floods the audit backlog
//! to hide an exec is exactly what an analyst must see.
//!
//! Contract: [`LossWatch::check`] compares every loss counter with its value
//! at the last report and returns a document only when one of them grew;
//! the document names what grew by how much (`lost`) and every counter's
//! total since start (`totals`).

use serde_json::{Map, Value, json};

use super::{Alert, ecs_document, now_rfc3339};
use crate::process::host::HostInfo;

/// Counters that only grow when something was lost, last reported values.
#[derive(Default)]
pub struct LossWatch {
    reported: Vec<(&'static str, u64)>,
}

impl LossWatch {
    /// A health alert if any counter grew since the last one.
    pub fn check(&mut self, counters: &[(&'static str, u64)], host: &HostInfo) -> Option<Alert> {
        let mut lost = Map::new();
        for &(name, total) in counters {
            let before = self
                .reported
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, v)| *v);
            if total > before {
                lost.insert(name.to_owned(), json!(total - before));
            }
        }
        if lost.is_empty() {
            return None;
        }
        self.reported = counters.to_vec();
        let totals: Map<String, Value> = counters
            .iter()
            .map(|(name, total)| ((*name).to_owned(), json!(total)))
            .collect();
        let what: Vec<String> = lost.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let message = format!("mapwatch lost events: {}", what.join(" "));
        let document = ecs_document(
            now_rfc3339(),
            json!({
                "host": {"name": host.name, "hostname": host.name},
                "event": {
                    "kind": "alert",
                    "category": ["host"],
                    "type": ["info"],
                    "module": "mapwatch",
                    "dataset": "mapwatch.health",
                    "severity": 47,
                    "risk_score": 47,
                },
                "message": message,
                "mapwatch": {"health": {"lost": lost, "totals": totals}},
            }),
        );
        let summary = format!(
            "{} health  {message}",
            document["@timestamp"].as_str().unwrap_or_default()
        );
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

    fn host() -> HostInfo {
        HostInfo {
            name: "h".into(),
            kernel: "k".into(),
        }
    }

    #[test]
    fn reports_only_growth_and_only_once() {
        let mut watch = LossWatch::default();
        assert!(
            watch
                .check(&[("kernel_lost", 0), ("enobufs", 0)], &host())
                .is_none()
        );
        let alert = watch
            .check(&[("kernel_lost", 12), ("enobufs", 0)], &host())
            .expect("a loss is reported");
        let health = &alert.document["mapwatch"]["health"];
        assert_eq!(health["lost"], json!({"kernel_lost": 12}));
        assert_eq!(health["totals"], json!({"kernel_lost": 12, "enobufs": 0}));
        assert!(alert.summary.contains("kernel_lost=12"));
        assert!(
            watch
                .check(&[("kernel_lost", 12), ("enobufs", 0)], &host())
                .is_none()
        );
        let again = watch
            .check(&[("kernel_lost", 15), ("enobufs", 2)], &host())
            .expect("more loss");
        assert_eq!(
            again.document["mapwatch"]["health"]["lost"],
            json!({"kernel_lost": 3, "enobufs": 2})
        );
    }
}
