//! The facts of one step of a sequence, as its alert lists them
//! (`mapwatch.sequence.steps`) and its message tells them.
//!
//! Contract: taken when the step's event is seen, from the same fields its
//! own alerts are built from, so a sequence completed later needs nothing
//! of the event but these; `event.id` is the one the step's own alerts
//! carry, which links them. Kept compact (a few hundred bytes: thousands
//! may be held) and rendered only when the sequence completes.
//! Attacker-controlled parts are escaped and cut as in every message.

use serde_json::{Value, json};

use super::message::{CallDeed, Deed, step_deed};
use super::{act_event_id, audit_event_id, rfc3339_millis, text};
use crate::audit::assemble::ExecEvent;
use crate::process::proc_path::Layout;
use crate::rule::live::{Act, ActFields};
use crate::source::fanotify::Access;

/// One step's event, kept while its sequence is partial.
#[derive(Debug)]
pub struct StepFacts {
    /// When it happened (a read: when it was taken off the fanotify
    /// queue), in milliseconds since the epoch.
    pub time_ms: u64,
    event_id: Option<Box<str>>,
    pid: u32,
    name: Box<[u8]>,
    executable: Option<Box<[u8]>>,
    deed: StepDeed,
}

#[derive(Debug)]
enum StepDeed {
    Exec {
        command_line: Box<[u8]>,
    },
    Read {
        path: Box<[u8]>,
        layout: Layout,
        target: u32,
    },
    Write {
        path: Box<[u8]>,
        layout: Layout,
        target: u32,
    },
    Call {
        call: CallDeed,
        target: u32,
        changes: bool,
    },
}

/// A read, write or call, at `time_ms`.
pub fn act_step(fields: &mut ActFields<'_, '_>, time_ms: u64) -> StepFacts {
    let act = fields.act;
    let deed = match act {
        Act::File(read) => {
            let (path, layout, target) = (read.path.as_slice().into(), read.layout, read.target);
            match read.access {
                Access::Read => StepDeed::Read {
                    path,
                    layout,
                    target,
                },
                Access::Write => StepDeed::Write {
                    path,
                    layout,
                    target,
                },
            }
        }
        Act::Call(call, target) => StepDeed::Call {
            call: CallDeed::of(call),
            target,
            changes: call.changes_target(),
        },
    };
    StepFacts {
        time_ms,
        event_id: act_event_id(act).map(String::into_boxed_str),
        pid: act.actor(),
        name: fields.name().unwrap_or_default().into(),
        executable: fields.executable().map(Into::into),
        deed,
    }
}

/// An exec, at the time its audit record says.
pub fn exec_step(event: &ExecEvent) -> StepFacts {
    StepFacts {
        time_ms: event.id.map_or(0, |id| {
            id.timestamp.secs * 1000 + u64::from(id.timestamp.millis)
        }),
        event_id: event.id.map(|id| audit_event_id(id).into_boxed_str()),
        pid: event.pid,
        name: event.name().into(),
        executable: event.exe.as_deref().map(Into::into),
        deed: StepDeed::Exec {
            command_line: event.argv.joined().into(),
        },
    }
}

impl StepFacts {
    /// `NAME (pid N) read /proc/7/maps`: the message's words for it.
    pub fn deed(&self) -> String {
        let deed = match &self.deed {
            StepDeed::Exec { command_line } => Deed::RanCommand(command_line),
            StepDeed::Read { path, layout, .. } => Deed::Read(path, *layout),
            StepDeed::Write { path, layout, .. } => Deed::Wrote(path, *layout),
            StepDeed::Call { call, .. } => Deed::Called(*call),
        };
        step_deed(&self.name, self.pid, &deed)
    }

    /// Step `number` of `mapwatch.sequence.steps`: `@timestamp` (for a
    /// read, `event.created`: fanotify events carry no time), `event`,
    /// `process` and what it acted on.
    pub fn document(&self, number: usize) -> Value {
        let (category, kind, action) = match &self.deed {
            StepDeed::Exec { .. } => ("process", "start", "exec"),
            StepDeed::Read { .. } => ("file", "access", "read"),
            StepDeed::Write { .. } => ("file", "change", "write"),
            StepDeed::Call { call, changes, .. } => (
                "api",
                if *changes { "change" } else { "access" },
                call.call.name(),
            ),
        };
        let time = rfc3339_millis(self.time_ms / 1000, (self.time_ms % 1000) as u16);
        let mut doc = json!({
            "step": number,
            "event": {"category": [category], "type": [kind], "action": action},
            "process": {"pid": self.pid, "name": text(&self.name)},
        });
        if let Some(id) = &self.event_id {
            doc["event"]["id"] = json!(id);
        }
        if let Some(executable) = &self.executable {
            doc["process"]["executable"] = text(executable);
        }
        match &self.deed {
            StepDeed::Exec { command_line } => {
                doc["@timestamp"] = json!(time);
                doc["process"]["command_line"] = text(command_line);
            }
            StepDeed::Read { path, target, .. } | StepDeed::Write { path, target, .. } => {
                doc["event"]["created"] = json!(time);
                doc["file"] = json!({"path": text(path)});
                doc["mapwatch"] = json!({"target": {"pid": target}});
            }
            StepDeed::Call { call, target, .. } => {
                doc["@timestamp"] = json!(time);
                doc["mapwatch"] = json!({"target": {"pid": target}});
                if let Some(request) = call.request {
                    doc["mapwatch"]["ptrace"] = json!({"request": request.name()});
                }
            }
        }
        doc
    }
}
