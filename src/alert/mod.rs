//! Alerts: the ECS document a rule match becomes, and its one-line summary.
//!
//! Contract: every field outside `mapwatch.*` is a real ECS field with its
//! ECS type (ids of users are keywords, pids are longs). Attacker-controlled
//! bytes (argv, paths, comm, exe) are carried losslessly: valid UTF-8 as is
//! (JSON escaping takes care of control characters), anything else through
//! [`escape_bytes`]. The text summary is escaped for a terminal.

mod escape;
pub mod health;
pub mod limit;
mod message;
pub mod stats;
mod step;
mod time;

pub use escape::{escape_bytes, escape_for_terminal};
pub use step::{StepFacts, act_step, exec_step};
pub use time::rfc3339_millis;

use serde_json::{Map, Value, json};

use self::message::{CallDeed, Deed, Reader, alert_message};
use crate::audit::assemble::ExecEvent;
use crate::audit::assemble::MemoryAccess;
use crate::audit::execve::Argv;
use crate::audit::record::EventId;
use crate::maps::MapsArg;
use crate::process::container::Container;
use crate::process::host::{HostInfo, UserNames};
use crate::process::leader::{EntryLeader, Related};
use crate::process::live::LiveProcess;
use crate::process::{EventContext, ProcessTable};
use crate::rule::RuleMeta;
use crate::rule::live::{Act, ActFields};
use crate::source::fanotify::{Access, Via};

/// The ECS version of every document's fields.
const ECS_VERSION: &str = "8.11.0";

/// `body` (a JSON object) as a document of mapwatch's: its time, the ECS
/// version and the agent that wrote it, then its own fields.
pub fn ecs_document(timestamp: impl Into<Value>, mut body: Value) -> Value {
    if let Value::Object(fields) = &mut body {
        fields.insert("@timestamp".into(), timestamp.into());
        fields.insert("ecs".into(), json!({"version": ECS_VERSION}));
        fields.insert(
            "agent".into(),
            json!({"type": "mapwatch", "name": "mapwatch", "version": env!("CARGO_PKG_VERSION")}),
        );
    }
    body
}

/// One alert, ready for the sinks.
#[derive(Clone, Debug, Default)]
pub struct Alert {
    pub document: Value,
    pub summary: String,
    pub timing: Timing,
}

/// When an alert's input arrived, and how long it waited for its read: the
/// metrics' latency histograms.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// When the input that raised it (the exec event's last records, or the
    /// read) reached mapwatch.
    pub raised: Option<std::time::Instant>,
    /// For a confirmed exec alert: from being raised to its read.
    pub confirmation: Option<std::time::Duration>,
}

/// Everything an alert is built from besides the event itself.
pub struct AlertInputs<'a> {
    pub rule: &'a RuleMeta,
    pub host: &'a HostInfo,
}

/// The threat fields of ECS, from every `[[rule.threat]]` of the rule.
fn threat_object(rule: &RuleMeta) -> Value {
    let mut tactic = (Vec::new(), Vec::new(), Vec::new());
    let mut technique = (Vec::new(), Vec::new(), Vec::new());
    let mut subtechnique = (Vec::new(), Vec::new(), Vec::new());
    for threat in &rule.threats {
        tactic.0.push(threat.tactic.id.clone());
        tactic.1.push(threat.tactic.name.clone());
        tactic.2.push(threat.tactic.reference.clone());
        for (tech, subs) in &threat.techniques {
            technique.0.push(tech.id.clone());
            technique.1.push(tech.name.clone());
            technique.2.push(tech.reference.clone());
            for sub in subs {
                subtechnique.0.push(sub.id.clone());
                subtechnique.1.push(sub.name.clone());
                subtechnique.2.push(sub.reference.clone());
            }
        }
    }
    let mut technique_obj =
        json!({"id": technique.0, "name": technique.1, "reference": technique.2});
    if !subtechnique.0.is_empty() {
        technique_obj["subtechnique"] =
            json!({"id": subtechnique.0, "name": subtechnique.1, "reference": subtechnique.2});
    }
    json!({
        "framework": rule.threats.first().map(|t| t.framework.as_str()).unwrap_or("MITRE ATT&CK"),
        "tactic": {"id": tactic.0, "name": tactic.1, "reference": tactic.2},
        "technique": technique_obj,
    })
}

/// `host`: its name, and its kernel where it is known (a node of an
/// aggregated log names only itself).
fn host_object(host: &HostInfo) -> Value {
    let mut os = json!({"type": "linux"});
    if !host.kernel.is_empty() {
        os["kernel"] = json!(host.kernel);
    }
    json!({"name": host.name, "hostname": host.name, "os": os})
}

/// ECS numeric severity of Elastic's severity names.
fn severity_number(severity: &str) -> u32 {
    match severity {
        "critical" => 99,
        "high" => 73,
        "medium" => 47,
        _ => 21,
    }
}

fn text(bytes: &[u8]) -> Value {
    Value::String(escape_bytes(bytes).into_owned())
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value);
    }
}

fn user_object(uid: Option<u32>, users: &mut UserNames) -> Option<Value> {
    let uid = uid?;
    let mut user = Map::new();
    user.insert("id".into(), Value::String(uid.to_string()));
    insert_some(
        &mut user,
        "name",
        users.name(uid).map(|n| Value::String(n.to_owned())),
    );
    Some(Value::Object(user))
}

/// The process an alert is about, as plain facts.
struct Subject<'a> {
    pid: u32,
    ppid: Option<u32>,
    name: &'a [u8],
    executable: Option<&'a [u8]>,
    args: Option<&'a Argv>,
    cwd: Option<&'a [u8]>,
    title: Option<Vec<u8>>,
    euid: Option<u32>,
    uid: Option<u32>,
}

/// What happened, in ECS terms.
struct Action<'a> {
    category: &'static str,
    kind: &'static str,
    name: &'static str,
    timestamp: String,
    file_path: Option<&'a [u8]>,
    reason: String,
    /// The one-line title (see [`message`]).
    message: String,
    target: Option<Value>,
    audit: Option<Value>,
}

/// The parts of the document about the process and its relations; returns
/// the process object and the pieces the summary line needs.
fn process_object(
    subject: &Subject<'_>,
    ctx: &mut EventContext<'_>,
    users: &mut UserNames,
) -> (Map<String, Value>, Option<Related>, Option<EntryLeader>) {
    let mut process = Map::new();
    process.insert("pid".into(), json!(subject.pid));
    process.insert("name".into(), text(subject.name));
    insert_some(&mut process, "executable", subject.executable.map(text));
    if let Some(args) = subject.args {
        process.insert("args".into(), Value::Array(args.iter().map(text).collect()));
        process.insert("args_count".into(), json!(args.len()));
        process.insert("command_line".into(), Value::String(command_line(args)));
    }
    insert_some(&mut process, "working_directory", subject.cwd.map(text));
    insert_some(&mut process, "title", subject.title.as_deref().map(text));
    insert_some(&mut process, "user", user_object(subject.euid, users));
    insert_some(&mut process, "real_user", user_object(subject.uid, users));

    let parent = ctx.parent().cloned();
    if let Some(ppid) = subject.ppid {
        let mut parent_obj = Map::new();
        parent_obj.insert("pid".into(), json!(ppid));
        if let Some(p) = &parent {
            parent_obj.insert("name".into(), text(&p.name));
        }
        insert_some(
            &mut parent_obj,
            "executable",
            ctx.parent_executable().map(text),
        );
        process.insert("parent".into(), Value::Object(parent_obj));
    }
    if let Some(s) = ctx.session_leader() {
        process.insert(
            "session_leader".into(),
            json!({"pid": s.pid, "name": text(&s.name)}),
        );
    }
    let entry_leader = ctx.entry_leader().cloned();
    if let Some(e) = &entry_leader {
        process.insert(
            "entry_leader".into(),
            json!({"pid": e.pid, "name": text(&e.name), "entry_meta": {"type": e.kind.as_str()}}),
        );
    }
    (process, parent, entry_leader)
}

fn command_line(args: &Argv) -> String {
    escape_bytes(args.joined()).into_owned()
}

/// The user's name, or the uid when it has none.
fn user_text(euid: Option<u32>, users: &mut UserNames) -> Option<String> {
    let uid = euid?;
    Some(
        users
            .name(uid)
            .map(str::to_owned)
            .unwrap_or_else(|| uid.to_string()),
    )
}

fn leader_text(leader: Option<&EntryLeader>) -> String {
    leader
        .map(|e| {
            format!(
                "{} (pid {}, {})",
                escape_bytes(&e.name),
                e.pid,
                e.kind.as_str()
            )
        })
        .unwrap_or_else(|| "unknown".into())
}

fn document(
    subject: &Subject<'_>,
    action: Action<'_>,
    ctx: &mut EventContext<'_>,
    inputs: &AlertInputs<'_>,
    users: &mut UserNames,
) -> Alert {
    let rule = inputs.rule;
    let (process, parent, entry_leader) = process_object(subject, ctx, users);
    let container = ctx.table().container_of(subject.pid, subject.ppid);
    let mut mapwatch = Map::new();
    insert_some(&mut mapwatch, "audit", action.audit);
    insert_some(&mut mapwatch, "target", action.target);
    if let Some(leader) = entry_leader.as_ref().filter(|e| !e.inferred.is_empty()) {
        let inferred: Vec<&str> = leader.inferred.names().collect();
        mapwatch.insert("entry_leader".into(), json!({ "inferred": inferred }));
    }
    mapwatch.insert(
        "rule".into(),
        if rule.tags.is_empty() {
            json!({"severity": rule.severity})
        } else {
            json!({"severity": rule.severity, "tags": rule.tags})
        },
    );
    let mut document = ecs_document(
        action.timestamp.as_str(),
        json!({
            "event": {
                "kind": "alert",
                "category": [action.category],
                "type": [action.kind],
                "action": action.name,
                "module": "mapwatch",
                "dataset": "mapwatch.alert",
                "severity": severity_number(&rule.severity),
                "risk_score": rule.risk_score,
                "reason": action.reason,
            },
            "message": action.message,
            "rule": {
                "id": rule.rule_id,
                "uuid": rule.rule_id,
                "name": rule.name,
                "description": rule.description,
                "version": rule.version.to_string(),
                "author": rule.author,
                "license": rule.license,
                "ruleset": rule.ruleset,
            },
            "threat": threat_object(rule),
            "host": host_object(inputs.host),
            "process": Value::Object(process),
            "mapwatch": Value::Object(mapwatch),
        }),
    );
    if !rule.references.is_empty() {
        document["rule"]["reference"] = json!(rule.references);
    }
    if let Some(user) = user_object(subject.euid, users) {
        document["user"] = user;
    }
    if let Some(container) = container {
        document["container"] = container_object(&container);
    }
    if let Some(path) = action.file_path {
        let name = path.rsplit(|b| *b == b'/').next().unwrap_or_default();
        document["file"] = json!({"path": text(path), "name": text(name)});
    }
    let summary = format!(
        "{timestamp} {severity:<6} {rule_name}: pid={pid} user={user} {what} parent={parent}[{ppid}] entry_leader={leader}",
        timestamp = action.timestamp,
        severity = rule.severity,
        rule_name = rule.name,
        pid = subject.pid,
        user = user_text(subject.euid, users).unwrap_or_else(|| "?".into()),
        what = match (subject.args, action.file_path) {
            (Some(args), _) if action.name == "exec" =>
                escape_for_terminal(command_line(args).as_bytes()),
            (_, Some(path)) => format!(
                "{} read {}",
                escape_for_terminal(subject.name),
                escape_for_terminal(path)
            ),
            _ => escape_for_terminal(subject.name),
        },
        parent = parent
            .as_ref()
            .map(|p| escape_for_terminal(&p.name))
            .unwrap_or_else(|| "?".into()),
        ppid = subject
            .ppid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into()),
        leader = entry_leader
            .as_ref()
            .map(|e| format!(
                "{}[{}]({})",
                escape_for_terminal(&e.name),
                e.pid,
                e.kind.as_str()
            ))
            .unwrap_or_else(|| "unknown".into()),
    );
    Alert {
        document,
        summary,
        timing: Timing::default(),
    }
}

/// An alert for an exec event; `maps` is the first argument naming a memory
/// map (`file.path`, and whose map it is), when there is one.
pub fn build(
    event: &ExecEvent,
    maps: Option<&MapsArg>,
    ctx: &mut EventContext<'_>,
    inputs: &AlertInputs<'_>,
    users: &mut UserNames,
) -> Alert {
    let first_path = maps.map(|m| m.arg.as_slice());
    let target = maps.and_then(|m| m.target);
    let title = event.title();
    let subject = Subject {
        pid: event.pid,
        ppid: Some(event.ppid),
        name: event.name(),
        executable: event.exe.as_deref(),
        args: Some(&event.argv),
        cwd: event.cwd.as_deref(),
        title,
        euid: event.ids.euid,
        uid: event.ids.uid,
    };
    let entry_leader = ctx.entry_leader().cloned();
    let mut audit = Map::new();
    insert_some(
        &mut audit,
        "sequence",
        event.id.map(|id| json!(id.serial.0)),
    );
    insert_some(&mut audit, "session", event.ses.map(|s| json!(s)));
    insert_some(&mut audit, "login_uid", event.auid.map(|a| json!(a)));
    audit.insert("complete".into(), json!(event.complete));
    let mut target = target.map(|pid| target_object(pid, event, ctx, users));
    if let Some(target) = target.as_mut() {
        if let Some(ns_pid) = maps.and_then(|m| m.target_ns_pid) {
            target["ns_pid"] = json!(ns_pid);
        }
        add_target_container(target, ctx.table());
    }
    let deed = match first_path {
        Some(path) => Deed::RanWith(path),
        None => Deed::RanCommand(event.argv.joined()),
    };
    let message = alert_message(
        &inputs.rule.name,
        &Reader {
            name: event.name(),
            pid: event.pid,
            user: user_text(event.ids.euid, users),
        },
        &deed,
        target.as_ref(),
        entry_leader.as_ref(),
    );
    let action = Action {
        category: "process",
        kind: "start",
        name: "exec",
        timestamp: event
            .id
            .map(|id| rfc3339_millis(id.timestamp.secs, id.timestamp.millis))
            .unwrap_or_else(now_rfc3339),
        file_path: first_path,
        reason: format!(
            "{} (pid {}) ran with argument {} under entry leader {}",
            escape_bytes(event.name()),
            event.pid,
            first_path.map(escape_bytes).unwrap_or_default(),
            leader_text(entry_leader.as_ref()),
        ),
        message,
        target,
        audit: Some(Value::Object(audit)),
    };
    document(&subject, action, ctx, inputs, users)
}

/// An alert for an act on another process: a read or write fanotify saw
/// (confirmed by construction), or a call into its memory audit saw.
pub fn build_act(fields: &mut ActFields<'_, '_>, inputs: &AlertInputs<'_>) -> Alert {
    let name = fields.name().map(<[u8]>::to_vec).unwrap_or_default();
    let act = fields.act;
    let (actor, target) = (act.actor(), act.target());
    let target_name = fields.target.comm().map(<[u8]>::to_vec);
    let mut target_obj = live_target_object(&mut fields.target, fields.users);
    // Pids as the actor's pid namespace gives them, where it is not the host's.
    let actor_ns = fields.actor_namespace_pid();
    // A read through another pid namespace's procfs: the pid the reader
    // named; else, for a live actor in a namespace of its own, the
    // target's pid there.
    let named = match act {
        Act::File(read) => read.target_ns_pid,
        Act::Call(..) => None,
    };
    let target_ns_pid = named.or_else(|| {
        let (actor_ns, _) = actor_ns?;
        let (target_ns, pid) = fields.target.namespace_pid()?;
        (target_ns == actor_ns).then_some(pid)
    });
    if let Some(pid) = target_ns_pid {
        target_obj["ns_pid"] = json!(pid);
    }
    add_target_container(&mut target_obj, fields.ctx.table());
    let target_obj = Some(target_obj);
    let executable = fields.executable().map(<[u8]>::to_vec);
    let cwd = fields.cwd().map(<[u8]>::to_vec);
    let euid = fields.uid();
    let args = fields.args().cloned();
    let subject = Subject {
        pid: actor,
        ppid: fields.ctx.ppid(),
        name: &name,
        executable: executable.as_deref(),
        args: args.as_ref(),
        cwd: cwd.as_deref(),
        title: None,
        euid,
        uid: match act {
            Act::Call(call, _) => call.caller.ids.uid,
            Act::File(_) => None,
        },
    };
    let entry_leader = fields.ctx.entry_leader().cloned();
    let (kind, verb) = act.ecs();
    let deed = match act {
        Act::File(read) => match read.access {
            Access::Read => Deed::Read(&read.path, read.layout),
            Access::Write => Deed::Wrote(&read.path, read.layout),
        },
        Act::Call(call, _) => Deed::Called(CallDeed::of(call)),
    };
    let detail = match act {
        Act::File(read) => format!(": {}", escape_bytes(&read.path)),
        Act::Call(call, _) => call
            .address
            .map(|a| format!(" at {a:#x}"))
            .unwrap_or_default(),
    };
    let reason = format!(
        "{} (pid {}) {} {} of {} (pid {}){detail}; entry leader {}",
        escape_bytes(&name),
        actor,
        deed.verb(),
        deed.what(),
        target_name
            .as_deref()
            .map(escape_bytes)
            .unwrap_or_else(|| "?".into()),
        target,
        leader_text(entry_leader.as_ref()),
    );
    let message = alert_message(
        &inputs.rule.name,
        &Reader {
            name: &name,
            pid: actor,
            user: user_text(euid, fields.users),
        },
        &deed,
        target_obj.as_ref(),
        entry_leader.as_ref(),
    );
    let (category, file_path, timestamp, audit) = match act {
        Act::File(read) => ("file", Some(read.path.as_slice()), now_rfc3339(), None),
        Act::Call(call, _) => (
            "api",
            None,
            call.caller
                .id
                .map(|id| rfc3339_millis(id.timestamp.secs, id.timestamp.millis))
                .unwrap_or_else(now_rfc3339),
            Some(call_audit_object(call)),
        ),
    };
    let action = Action {
        category,
        kind,
        name: verb,
        timestamp,
        file_path,
        reason,
        message,
        target: target_obj,
        audit,
    };
    let mut alert = document(&subject, action, fields.ctx, inputs, fields.users);
    alert.document["event"]["outcome"] = json!(if act.succeeded() {
        "success"
    } else {
        "failure"
    });
    if let Some(id) = act_event_id(act) {
        alert.document["event"]["id"] = json!(id);
    }
    if let Some((_, pid)) = actor_ns {
        alert.document["mapwatch"]["process"] = json!({ "ns_pid": pid });
    }
    match act {
        Act::File(read) => {
            // What the file is, whatever the path the reader took to it.
            alert.document["file"]["name"] = json!(read.layout.name());
            let mut facts = json!({
                "confirmed": true,
                "paths": [text(&read.path)],
                "self": fields.is_self(),
                "reader_from": fields.reader_basis().as_str(),
                "via": read.via.as_str(),
            });
            if let Some(before) = fields.reader_in_doubt() {
                facts["reader_before_exec"] = json!({
                    "name": text(&before.name),
                    "executable": text(&before.exe),
                    "args": before.args.as_ref().map(|a| a.iter().map(text).collect::<Vec<_>>()),
                });
                if let Some(message) = alert.document["message"].as_str() {
                    let message = format!(
                        "{message} (or its program before its exec: {})",
                        escape_bytes(&before.exe)
                    );
                    alert.document["message"] = json!(message);
                }
            }
            alert.document["mapwatch"]["read"] = facts;
        }
        Act::Call(call, _) => {
            let mut facts = json!({
                "syscall": call.call.name(),
                "named_pid": call.named_target,
                "actor_from": fields.reader_basis().as_str(),
            });
            if let Some(request) = call.request {
                alert.document["mapwatch"]["ptrace"] = json!({"request": request.name()});
            }
            if let Some(address) = call.address {
                facts["address"] = json!(format!("{address:#x}"));
            }
            alert.document["mapwatch"]["call"] = facts;
        }
    }
    alert
}

/// `event.id` of an act: the audit event's id (`SECONDS.MILLIS:SERIAL`, as
/// `ausearch -a SERIAL` finds it) for a call, the read's own for a read.
pub fn act_event_id(act: Act<'_>) -> Option<String> {
    match act {
        Act::Call(call, _) => call.caller.id.map(audit_event_id),
        Act::File(read) => Some(match read.via {
            Via::Read => format!(
                "fanotify:{}:{}.{}",
                run_started(),
                read.taken_by,
                read.index
            ),
            Via::MapQuery(serial) => format!("procmap_query:{}:{}", run_started(), serial.0),
        }),
    }
}

/// When this run began (seconds since the epoch), the first time it is
/// asked: what tells one run's fanotify event ids from another's.
fn run_started() -> u64 {
    static STARTED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

/// `SECONDS.MILLIS:SERIAL`.
pub fn audit_event_id(id: EventId) -> String {
    format!(
        "{}.{:03}:{}",
        id.timestamp.secs, id.timestamp.millis, id.serial.0
    )
}

/// `mapwatch.audit` of a call: its serial, session and login uid.
fn call_audit_object(call: &MemoryAccess) -> Value {
    let mut audit = Map::new();
    insert_some(
        &mut audit,
        "sequence",
        call.caller.id.map(|id| json!(id.serial.0)),
    );
    insert_some(&mut audit, "session", call.caller.ses.map(|s| json!(s)));
    insert_some(&mut audit, "login_uid", call.caller.auid.map(|a| json!(a)));
    audit.insert("complete".into(), json!(call.caller.complete));
    Value::Object(audit)
}

/// Now, as an RFC 3339 timestamp with milliseconds.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_millis(now.as_secs(), now.subsec_millis() as u16)
}

/// ECS `container`.
fn container_object(container: &Container) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), json!(container.id));
    obj.insert("runtime".into(), json!(container.runtime));
    insert_some(&mut obj, "name", container.name.as_ref().map(|n| json!(n)));
    if let Some(image) = &container.image {
        obj.insert("image".into(), json!({ "name": image }));
    }
    Value::Object(obj)
}

/// The target's container under `mapwatch.target.container`.
fn add_target_container(target: &mut Value, table: &mut ProcessTable) {
    let Some(pid) = target["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) else {
        return;
    };
    if let Some(container) = table.container_of(pid, None) {
        target["container"] = container_object(&container);
    }
}

fn live_target_object(target: &mut LiveProcess, users: &mut UserNames) -> Value {
    let mut obj = Map::new();
    obj.insert("pid".into(), json!(target.pid()));
    insert_some(&mut obj, "name", target.comm().map(text));
    insert_some(&mut obj, "executable", target.exe().map(text));
    insert_some(&mut obj, "user", user_object(target.uid(), users));
    Value::Object(obj)
}

/// The process whose map is read. A reader of its own map (`self`) is
/// described by its exec event, since it has often exited by now; in a
/// replayed log every target is described by the log's history.
fn target_object(
    pid: u32,
    event: &ExecEvent,
    ctx: &mut EventContext<'_>,
    users: &mut UserNames,
) -> Value {
    if pid == event.pid {
        return described_target(
            pid,
            event.name(),
            event.exe.as_deref(),
            event.ids.euid,
            users,
        );
    }
    let table = ctx.table();
    if table.is_history() {
        return match table.get(pid) {
            Some(p) => described_target(pid, &p.name, p.exe.as_deref(), p.euid, users),
            None => json!({"pid": pid}),
        };
    }
    live_target_object(&mut LiveProcess::new(pid), users)
}

fn described_target(
    pid: u32,
    name: &[u8],
    executable: Option<&[u8]>,
    euid: Option<u32>,
    users: &mut UserNames,
) -> Value {
    let mut target = Map::new();
    target.insert("pid".into(), json!(pid));
    target.insert("name".into(), text(name));
    insert_some(&mut target, "executable", executable.map(text));
    insert_some(&mut target, "user", user_object(euid, users));
    Value::Object(target)
}
