//! The facts of one step of a sequence, as its alert lists them
//! (`mapwatch.sequence.steps`) and its message tells them.
//!
//! Contract: built when the step's event is seen, from the same fields its
//! own alerts are built from, so a sequence completed later needs nothing
//! of the event but these; `event.id` is the one the step's own alerts
//! carry, which links them. Attacker-controlled parts are escaped and cut
//! as in every message.

use serde_json::{Map, Value, json};

use super::message::{Deed, step_deed};
use super::{act_event_id, audit_event_id, rfc3339_millis, text};
use crate::audit::assemble::ExecEvent;
use crate::rule::live::{Act, ActFields};
use crate::source::fanotify::Access;

/// One step's event, kept while its sequence is partial.
#[derive(Debug)]
pub struct StepFacts {
    /// When it happened (a read: when it was taken off the fanotify
    /// queue), in milliseconds since the epoch.
    pub time_ms: u64,
    /// `NAME (pid N) read /proc/7/maps`: the message's words for it.
    pub deed: String,
    /// `@timestamp` (or, for a read, `event.created`), `event`, `process`
    /// and what it acted on.
    pub document: Value,
}

/// A read, write or call, at `time_ms`.
pub fn act_step(fields: &mut ActFields<'_, '_>, time_ms: u64) -> StepFacts {
    let act = fields.act;
    let name = fields.name().map(<[u8]>::to_vec).unwrap_or_default();
    let executable = fields.executable().map(text);
    let (kind, action) = act.ecs();
    let mut process = Map::new();
    process.insert("pid".into(), json!(act.actor()));
    process.insert("name".into(), text(&name));
    if let Some(executable) = executable {
        process.insert("executable".into(), executable);
    }
    let mut document = json!({
        "event": {"category": [act.category().as_str()], "type": [kind], "action": action},
        "process": Value::Object(process),
        "mapwatch": {"target": {"pid": act.target()}},
    });
    // fanotify events carry no time: a read's is when mapwatch took it
    // (`event.created`), at most a little after it happened.
    match act {
        Act::File(_) => document["event"]["created"] = json!(timestamp(time_ms)),
        Act::Call(..) => document["@timestamp"] = json!(timestamp(time_ms)),
    }
    if let Some(id) = act_event_id(act) {
        document["event"]["id"] = json!(id);
    }
    let deed = match act {
        Act::File(read) => {
            document["file"] = json!({"path": text(&read.path)});
            match read.access {
                Access::Read => Deed::Read(&read.path, read.layout),
                Access::Write => Deed::Wrote(&read.path, read.layout),
            }
        }
        Act::Call(call, _) => {
            if let Some(request) = call.request {
                document["mapwatch"]["ptrace"] = json!({"request": request.name()});
            }
            Deed::Called(call)
        }
    };
    StepFacts {
        time_ms,
        deed: step_deed(&name, act.actor(), &deed),
        document,
    }
}

/// An exec, at the time its audit record says.
pub fn exec_step(event: &ExecEvent) -> StepFacts {
    let time_ms = event.id.map_or(0, |id| {
        id.timestamp.secs * 1000 + u64::from(id.timestamp.millis)
    });
    let mut document = json!({
        "@timestamp": timestamp(time_ms),
        "event": {"category": ["process"], "type": ["start"], "action": "exec"},
        "process": {
            "pid": event.pid,
            "name": text(event.name()),
            "args": event.argv.iter().map(text).collect::<Vec<_>>(),
        },
    });
    if let Some(exe) = &event.exe {
        document["process"]["executable"] = text(exe);
    }
    if let Some(id) = event.id {
        document["event"]["id"] = json!(audit_event_id(id));
    }
    StepFacts {
        time_ms,
        deed: step_deed(
            event.name(),
            event.pid,
            &Deed::RanCommand(event.argv.joined()),
        ),
        document,
    }
}

fn timestamp(time_ms: u64) -> String {
    rfc3339_millis(time_ms / 1000, (time_ms % 1000) as u16)
}
