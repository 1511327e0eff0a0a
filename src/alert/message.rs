//! The `message` of an alert: the one line an analyst reads first. Elastic
//! Security's promotion rule "External Alerts" titles each alert it promotes
//! with it (`rule_name_override = "message"`), so it names the rule, the
//! reader, the map and whose it is, and the entry leader.
//!
//! Contract: never empty; no control characters (every attacker-controlled
//! part goes through [`escape_for_terminal`]); each such part is cut to
//! [`MAX_PART`] characters, so a 128 KiB argument cannot make a title of
//! 128 KiB. The full values are in the document's own fields.

use serde_json::Value;

use super::escape::escape_for_terminal;
use crate::audit::assemble::MemoryAccess;
use crate::audit::syscall::{MemoryCall, PtraceRequest};
use crate::process::leader::EntryLeader;
use crate::process::proc_path::Layout;

/// Characters of one attacker-controlled part (a name, a path).
const MAX_PART: usize = 96;

/// The reader: who did it.
pub(super) struct Reader<'a> {
    pub name: &'a [u8],
    pub pid: u32,
    /// Its effective user's name, or the uid when the name is unknown.
    pub user: Option<String>,
}

/// What the reader did to whose map.
pub(super) enum Deed<'a> {
    /// An exec whose argument names a memory map (`path`), or the command
    /// line when no argument resolves to one.
    RanWith(&'a [u8]),
    RanCommand(&'a [u8]),
    /// A read fanotify saw, of one of the target's layout files.
    Read(&'a [u8], Layout),
    /// A write fanotify saw (into `mem`).
    Wrote(&'a [u8], Layout),
    /// A call into the target's memory audit saw.
    Called(CallDeed),
}

/// A call as a message tells it.
#[derive(Clone, Copy, Debug)]
pub(super) struct CallDeed {
    pub call: MemoryCall,
    pub request: Option<PtraceRequest>,
    pub success: bool,
}

impl CallDeed {
    pub(super) fn of(call: &MemoryAccess) -> Self {
        CallDeed {
            call: call.call,
            request: call.request,
            success: call.success,
        }
    }
}

impl Deed<'_> {
    /// What of the target it reaches: `memory map`, `memory`...
    pub(super) fn what(&self) -> &'static str {
        match self {
            Deed::Read(_, layout) | Deed::Wrote(_, layout) => what_it_gives(*layout),
            Deed::RanWith(_) | Deed::RanCommand(_) => "memory map",
            Deed::Called(_) => "memory",
        }
    }

    /// The verb of the reason line: `read the`, `called ptrace(...) on the`.
    pub(super) fn verb(&self) -> String {
        match self {
            Deed::RanWith(_) | Deed::RanCommand(_) | Deed::Read(..) => "read the".into(),
            Deed::Wrote(..) => "wrote into the".into(),
            Deed::Called(call) => format!("{} on the", call_text(call)),
        }
    }
}

/// `called ptrace(PTRACE_POKEDATA)`, `tried process_vm_writev` (failed).
fn call_text(call: &CallDeed) -> String {
    let verb = if call.success { "called" } else { "tried" };
    match call.request {
        Some(request) => format!("{verb} {}({})", call.call.name(), request.name()),
        None => format!("{verb} {}", call.call.name()),
    }
}

/// `RULE: READER (pid P, user U) DEED, TARGET; entry leader L`.
pub(super) fn alert_message(
    rule_name: &str,
    reader: &Reader<'_>,
    deed: &Deed<'_>,
    target: Option<&Value>,
    leader: Option<&EntryLeader>,
) -> String {
    let user = reader.user.as_deref().unwrap_or("?");
    let what = deed.what();
    let joint = match deed {
        Deed::Called(_) => " on",
        _ => ",",
    };
    let deed = deed_text(deed);
    let whose = target
        .map(|t| whose(t, reader.pid, what, joint))
        .unwrap_or_default();
    let leader = leader.map_or_else(
        || "unknown".to_owned(),
        |e| format!("{} (pid {}, {})", part(&e.name), e.pid, e.kind.as_str()),
    );
    format!(
        "{rule}: {name} (pid {pid}, user {user}) {deed}{whose}; entry leader {leader}",
        rule = escape_for_terminal(rule_name.as_bytes()),
        name = part(reader.name),
        pid = reader.pid,
        user = escape_for_terminal(user.as_bytes()),
    )
}

/// `NAME (pid N) DEED`: one step of a sequence, as its message tells it.
pub(super) fn step_deed(name: &[u8], pid: u32, deed: &Deed<'_>) -> String {
    format!("{} (pid {pid}) {}", part(name), deed_text(deed))
}

/// `ran ...`, `read PATH`, `called ptrace(...)`.
fn deed_text(deed: &Deed<'_>) -> String {
    match deed {
        Deed::RanWith(path) => format!("ran with {}", part(path)),
        Deed::RanCommand(command) => format!("ran {}", part(command)),
        Deed::Read(path, _) => format!("read {}", part(path)),
        Deed::Wrote(path, _) => format!("wrote into {}", part(path)),
        Deed::Called(call) => call_text(call),
    }
}

/// What a layout file gives away, as the message names it.
fn what_it_gives(layout: Layout) -> &'static str {
    match layout {
        Layout::Maps | Layout::Smaps | Layout::SmapsRollup | Layout::NumaMaps => "memory map",
        Layout::MapFiles => "mappings",
        Layout::Pagemap => "page map",
        Layout::Mem => "memory",
    }
}

/// `, the memory map of NAME (pid N)`, from the document's target object.
fn whose(target: &Value, reader_pid: u32, what: &str, joint: &str) -> String {
    let pid = target["pid"].as_u64();
    if pid == Some(u64::from(reader_pid)) {
        return format!("{joint} its own {what}");
    }
    let pid = pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
    match target["name"].as_str() {
        Some(name) => format!(
            "{joint} the {what} of {} (pid {pid})",
            part(name.as_bytes())
        ),
        None => format!("{joint} the {what} of pid {pid}"),
    }
}

/// An attacker-controlled part: escaped, and cut to [`MAX_PART`] characters.
fn part(bytes: &[u8]) -> String {
    let escaped = escape_for_terminal(bytes);
    match escaped.char_indices().nth(MAX_PART) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::leader::EntryType;
    use serde_json::json;

    fn reader(name: &[u8]) -> Reader<'_> {
        Reader {
            name,
            pid: 4242,
            user: Some("root".into()),
        }
    }

    #[test]
    fn names_rule_reader_map_target_and_entry_leader() {
        let leader = EntryLeader {
            pid: 800,
            name: b"sshd"[..].into(),
            kind: EntryType::Sshd,
            inferred: Default::default(),
        };
        let message = alert_message(
            "Suspicious /proc/maps Discovery",
            &reader(b"cat"),
            &Deed::RanWith(b"/proc/812/maps"),
            Some(&json!({"pid": 812, "name": "nginx"})),
            Some(&leader),
        );
        assert_eq!(
            message,
            "Suspicious /proc/maps Discovery: cat (pid 4242, user root) ran with /proc/812/maps, the memory map of nginx (pid 812); entry leader sshd (pid 800, sshd)"
        );
    }

    #[test]
    fn a_self_read_and_an_unknown_target_say_so() {
        let own = alert_message(
            "R",
            &reader(b"python3"),
            &Deed::Read(b"/proc/self/maps", Layout::Maps),
            Some(&json!({"pid": 4242})),
            None,
        );
        assert!(own.contains("read /proc/self/maps, its own memory map; entry leader unknown"));
        let gone = alert_message(
            "R",
            &reader(b"cat"),
            &Deed::RanCommand(b"cat /proc/9/maps"),
            Some(&json!({"pid": 9})),
            None,
        );
        assert!(gone.contains("ran cat /proc/9/maps, the memory map of pid 9;"));
    }

    #[test]
    fn attacker_bytes_are_escaped_and_cut() {
        let long = [b'a'; 5000];
        let message = alert_message(
            "R",
            &reader(b"x\n\x1b[31mfake alert\r"),
            &Deed::Read(&long, Layout::Maps),
            None,
            None,
        );
        assert!(!message.chars().any(char::is_control), "{message}");
        assert!(message.contains("x\\x0a\\x1b[31mfake alert\\x0d"));
        assert!(message.len() < 300, "{} bytes", message.len());
        assert!(message.contains(&format!("read {}…", "a".repeat(MAX_PART))));
    }
}
