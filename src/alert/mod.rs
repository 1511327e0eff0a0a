//! Alerts: the ECS document a rule match becomes, and its one-line summary.
//!
//! Contract: every field outside `mapwatch.*` is a real ECS field with its
//! ECS type (ids of users are keywords, pids are longs). Attacker-controlled
//! bytes (argv, paths, comm, exe) are carried losslessly: valid UTF-8 as is
//! (JSON escaping takes care of control characters), anything else through
//! [`escape_bytes`]. The text summary is escaped for a terminal.

mod escape;
mod time;

pub use escape::{escape_bytes, escape_for_terminal};
pub use time::rfc3339_millis;

use std::collections::HashMap;

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::audit::assemble::ExecEvent;
use crate::process::EventContext;
use crate::rule::RuleMeta;
use crate::rule::wildcard::Wildcard;

/// Facts about this host, gathered once.
#[derive(Clone, Debug)]
pub struct HostInfo {
    pub name: String,
    pub kernel: String,
}

impl HostInfo {
    pub fn detect() -> Self {
        let name = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        HostInfo { name, kernel }
    }
}

/// uid -> user name, looked up once per uid.
#[derive(Default)]
pub struct UserNames {
    cache: HashMap<u32, Option<String>>,
}

impl UserNames {
    pub fn name(&mut self, uid: u32) -> Option<&str> {
        self.cache
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .as_deref()
    }
}

/// One alert, ready for the sinks.
#[derive(Clone, Debug)]
pub struct Alert {
    pub document: Value,
    pub summary: String,
}

/// Everything an alert is built from besides the event itself.
pub struct AlertInputs<'a> {
    pub rule: &'a RuleMeta,
    pub host: &'a HostInfo,
}

/// Arguments naming a memory map: `file.path` and the target process.
static MAPS_PATH: LazyLock<Wildcard> = LazyLock::new(|| Wildcard::insensitive("/proc/*/maps"));

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

/// The pid a `/proc/<pid>/...` path names, resolving `self` and `thread-self`
/// to the reader.
pub fn target_pid(path: &[u8], reader_pid: u32) -> Option<u32> {
    let mut parts = path.split(|b| *b == b'/').filter(|p| !p.is_empty());
    if !parts.next()?.eq_ignore_ascii_case(b"proc") {
        return None;
    }
    match parts.next()? {
        b"self" | b"thread-self" => Some(reader_pid),
        digits => std::str::from_utf8(digits).ok()?.parse().ok(),
    }
}

pub fn build(
    event: &ExecEvent,
    ctx: &mut EventContext<'_>,
    inputs: &AlertInputs<'_>,
    users: &mut UserNames,
) -> Alert {
    let rule = inputs.rule;
    let name = event.name();
    let args: Vec<Value> = event.argv.iter().map(text).collect();
    let command_line = event
        .argv
        .iter()
        .map(|a| escape_bytes(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");

    let mut process = Map::new();
    process.insert("pid".into(), json!(event.pid));
    process.insert("name".into(), text(name));
    insert_some(&mut process, "executable", event.exe.as_deref().map(text));
    process.insert("args".into(), Value::Array(args));
    process.insert("args_count".into(), json!(event.argv.len()));
    process.insert("command_line".into(), Value::String(command_line.clone()));
    insert_some(
        &mut process,
        "working_directory",
        event.cwd.as_deref().map(text),
    );
    insert_some(
        &mut process,
        "title",
        event.proctitle.as_deref().map(|t| {
            let spaced: Vec<u8> = t.iter().map(|b| if *b == 0 { b' ' } else { *b }).collect();
            text(&spaced)
        }),
    );
    insert_some(&mut process, "user", user_object(event.euid, users));
    insert_some(&mut process, "real_user", user_object(event.uid, users));

    let parent = ctx.parent().cloned();
    let mut parent_obj = Map::new();
    parent_obj.insert("pid".into(), json!(event.ppid));
    if let Some(p) = &parent {
        parent_obj.insert("name".into(), text(&p.name));
    }
    insert_some(
        &mut parent_obj,
        "executable",
        live_executable(event.ppid).map(|e| text(&e)),
    );
    process.insert("parent".into(), Value::Object(parent_obj));

    let session_leader = ctx.session_leader().cloned();
    if let Some(s) = &session_leader {
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

    let first_path = event.argv.iter().find(|arg| MAPS_PATH.matches(arg));
    let target = first_path.and_then(|p| target_pid(p, event.pid));
    let reason = format!(
        "{} (pid {}) ran with argument {} under entry leader {}",
        escape_bytes(name),
        event.pid,
        first_path.map(escape_bytes).unwrap_or_default(),
        entry_leader
            .as_ref()
            .map(|e| format!(
                "{} (pid {}, {})",
                escape_bytes(&e.name),
                e.pid,
                e.kind.as_str()
            ))
            .unwrap_or_else(|| "unknown".into()),
    );

    let mut mapwatch = Map::new();
    let mut audit = Map::new();
    insert_some(
        &mut audit,
        "sequence",
        event.id.map(|id| json!(id.serial.0)),
    );
    insert_some(&mut audit, "session", event.ses.map(|s| json!(s)));
    insert_some(&mut audit, "login_uid", event.auid.map(|a| json!(a)));
    audit.insert("complete".into(), json!(event.complete));
    mapwatch.insert("audit".into(), Value::Object(audit));
    if let Some(target_pid) = target {
        mapwatch.insert("target".into(), target_object(target_pid, event));
    }

    let timestamp = event
        .id
        .map(|id| rfc3339_millis(id.timestamp.secs, id.timestamp.millis))
        .unwrap_or_default();

    let mut document = json!({
        "@timestamp": timestamp,
        "ecs": {"version": "8.11.0"},
        "agent": {"type": "mapwatch", "name": "mapwatch", "version": env!("CARGO_PKG_VERSION")},
        "event": {
            "kind": "alert",
            "category": ["process"],
            "type": ["start"],
            "action": "exec",
            "module": "mapwatch",
            "dataset": "mapwatch.alert",
            "severity": severity_number(&rule.severity),
            "risk_score": rule.risk_score,
            "reason": reason,
        },
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
        "host": {"name": inputs.host.name, "hostname": inputs.host.name, "os": {"type": "linux", "kernel": inputs.host.kernel}},
        "process": Value::Object(process),
        "mapwatch": Value::Object(mapwatch),
    });
    if !rule.references.is_empty() {
        document["rule"]["reference"] = json!(rule.references);
    }
    if !rule.tags.is_empty() {
        document["mapwatch"]["rule"] = json!({"tags": rule.tags, "severity": rule.severity});
    } else {
        document["mapwatch"]["rule"] = json!({"severity": rule.severity});
    }
    if let Some(user) = user_object(event.euid, users) {
        document["user"] = user;
    }
    if let Some(path) = first_path {
        document["file"] = json!({"path": text(path)});
    }

    let summary = format!(
        "{timestamp} {severity:<6} {rule_name}: pid={pid} user={user} {command} parent={parent}[{ppid}] entry_leader={leader}",
        severity = rule.severity,
        rule_name = rule.name,
        pid = event.pid,
        user = event
            .euid
            .map(|uid| users
                .name(uid)
                .map(str::to_owned)
                .unwrap_or_else(|| uid.to_string()))
            .unwrap_or_else(|| "?".into()),
        command = escape_for_terminal(command_line.as_bytes()),
        parent = parent
            .as_ref()
            .map(|p| escape_for_terminal(&p.name))
            .unwrap_or_else(|| "?".into()),
        ppid = event.ppid,
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
    Alert { document, summary }
}

/// The process whose map is read. A reader of its own map (`self`) is
/// described by its exec event, since it has often exited by now.
fn target_object(pid: u32, event: &ExecEvent) -> Value {
    let mut target = Map::new();
    target.insert("pid".into(), json!(pid));
    if pid == event.pid {
        target.insert("name".into(), text(event.name()));
        insert_some(&mut target, "executable", event.exe.as_deref().map(text));
    } else {
        if let Ok(stat) = crate::process::stat::read_stat(pid) {
            target.insert("name".into(), text(stat.comm.as_bytes()));
        }
        insert_some(
            &mut target,
            "executable",
            live_executable(pid).map(|e| text(&e)),
        );
    }
    Value::Object(target)
}

/// The executable of a live process (`/proc/<pid>/exe`).
pub fn live_executable(pid: u32) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.into_os_string().into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_pids() {
        assert_eq!(target_pid(b"/proc/42/maps", 7), Some(42));
        assert_eq!(target_pid(b"/proc/self/maps", 7), Some(7));
        assert_eq!(target_pid(b"/proc/thread-self/maps", 7), Some(7));
        assert_eq!(target_pid(b"/proc//42/maps", 7), Some(42));
        assert_eq!(target_pid(b"/PROC/42/MAPS", 7), Some(42));
        assert_eq!(target_pid(b"/proc/x/maps", 7), None);
        assert_eq!(target_pid(b"/tmp/42/maps", 7), None);
    }
}
