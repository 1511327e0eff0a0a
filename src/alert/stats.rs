//! `mapwatch.stats` documents: every counter, for the JSON file.
//!
//! Contract: `event.kind` is `metric`, never `alert`, so no promotion rule
//! (Elastic's "External Alerts" matches `event.kind:alert`) turns a stats
//! report into an alert; the host is named so a fleet's reports can be told
//! apart.

use serde_json::{Map, Value, json};

use super::{ecs_document, now_rfc3339};
use crate::process::host::HostInfo;

/// The counters as a stats document, dated now.
pub fn document(counters: &[(&'static str, u64)], host: &HostInfo) -> Value {
    let stats: Map<String, Value> = counters
        .iter()
        .map(|(name, value)| ((*name).to_owned(), json!(value)))
        .collect();
    ecs_document(
        now_rfc3339(),
        json!({
            "host": {"name": host.name, "hostname": host.name},
            "event": {"kind": "metric", "module": "mapwatch", "dataset": "mapwatch.stats"},
            "mapwatch": {"stats": stats},
        }),
    )
}
