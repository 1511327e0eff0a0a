//! Session and entry leaders of an exec event.
//!
//! Contract: resolved when an event needs them, from procfs as it is then,
//! with the process table standing in for processes that are gone.
//! The entry leader follows Elastic's definition ("first process from
//! terminal or remote access via SSH, SSM, etc, or a service directly started
//! by the init process") as Elastic's public code (quark) computes it:
//! a session leader (pid == sid) is an entry leader when it holds a real
//! terminal (`terminal`; `console` for `login` on /dev/console), when its
//! parent is `ssm-session-worker` and it is on a pts (`ssm`), when its parent
//! is sshd and it is not sshd itself (`sshd`), when its parent is a container
//! runtime (`container`), or when its parent is pid 1 (`init`). Every other
//! process inherits its parent's entry leader. Unknown when the chain breaks;
//! replaying a log, whose history starts somewhere: above a process that
//! opened an audit login session, the service that forked it (type `init`,
//! as cron's daemon or sshd's listener is live); elsewhere the session
//! leader nearest to the break stands in, with type `unknown`. A leader
//! found through what the table inferred says how
//! ([`super::history::Inferences`]).

use smallvec::SmallVec;
use std::time::Instant;

use super::history::Inferences;
use super::stat::TtyKind;
use super::table::{Process, ProcessTable};
use crate::audit::record::Serial;

/// `process.entry_leader.entry_meta.type`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EntryType {
    Init,
    Kthread,
    Sshd,
    Ssm,
    Container,
    Terminal,
    Console,
    /// Replay only: the log's history ends above this session leader.
    Unknown,
}

impl EntryType {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::Init => "init",
            EntryType::Kthread => "kthread",
            EntryType::Sshd => "sshd",
            EntryType::Ssm => "ssm",
            EntryType::Container => "container",
            EntryType::Terminal => "terminal",
            EntryType::Console => "console",
            EntryType::Unknown => "unknown",
        }
    }
}

/// A related process named in an alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Related {
    pub pid: u32,
    pub name: Name,
}

/// A process's name, copied out of the table for one event: inline up to
/// the length of nearly every program's name, so resolving a parent or a
/// leader allocates nothing.
pub type Name = SmallVec<[u8; 32]>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryLeader {
    pub pid: u32,
    pub name: Name,
    pub kind: EntryType,
    /// How the log's silences were filled to find it (history only).
    pub inferred: Inferences,
}

/// Ancestry longer than this is treated as a loop (a corrupt table).
const MAX_DEPTH: usize = 256;

/// Session-leader names that never start an entry session of their own
/// (quark keeps the inherited leader for them).
const RUNTIME_PREFIXES: [&[u8]; 6] = [
    b"runc",
    b"containerd-shim",
    b"calico-node",
    b"check-status",
    b"pause",
    b"conmon",
];

const CONTAINER_PARENT_PREFIXES: [&[u8]; 4] = [b"containerd-shim", b"runc", b"crun", b"conmon"];

/// Resolves leaders for one event; borrows the table mutably because lookups
/// refresh it from procfs.
pub struct LeaderResolver<'t> {
    table: &'t mut ProcessTable,
    /// The process that just exec'd, if the event is an exec.
    exec_pid: Option<u32>,
    now: Instant,
    /// The serial of an exec event the event is known to come after.
    after_exec: Option<Serial>,
    /// For a read: the number of the fanotify read(2) that took it.
    read_taken_by: Option<u64>,
}

/// A copy of what a leader decision needs about one process.
#[derive(Clone)]
struct Node {
    pid: u32,
    ppid: u32,
    sid: Option<u32>,
    tty: TtyKind,
    name: Name,
    opened_session: bool,
    inferred: Inferences,
}

impl<'t> LeaderResolver<'t> {
    /// `exec_pid` is the process of an exec event (whose leader decisions
    /// use the program it ran before the exec), `None` for other events.
    pub fn new(table: &'t mut ProcessTable, exec_pid: Option<u32>, now: Instant) -> Self {
        LeaderResolver {
            table,
            exec_pid,
            now,
            after_exec: None,
            read_taken_by: None,
        }
    }

    /// The event is a read taken off the fanotify queue by read(2) number
    /// `taken_by`, made after the exec event numbered `after_exec` (its own
    /// process's): any exec numbered no later came before it too, whenever
    /// its records were read.
    pub fn placed(mut self, after_exec: Option<Serial>, taken_by: u64) -> Self {
        self.after_exec = after_exec;
        self.read_taken_by = Some(taken_by);
        self
    }

    /// The process as a leader decision sees it. For the exec'ing process
    /// itself that is the program it ran when it called execve.
    fn node(&mut self, pid: u32) -> Option<Node> {
        let exec_pid = self.exec_pid;
        let window = self.event_window();
        let process = self.table.lookup(pid, self.now)?;
        Some(Node {
            pid,
            ppid: process.ppid,
            sid: process.sid,
            tty: process.tty.unwrap_or(TtyKind::None),
            name: Name::from_slice(leader_name(process, Some(pid) == exec_pid, window)),
            opened_session: process.opened_session,
            inferred: process.inferred,
        })
    }

    fn event_window(&self) -> EventWindow {
        EventWindow {
            latest: self.now,
            after_exec: self.after_exec,
            read_taken_by: self.read_taken_by,
        }
    }

    pub fn table(&mut self) -> &mut ProcessTable {
        self.table
    }

    /// `process.parent`: pid and name.
    pub fn parent(&mut self, ppid: u32) -> Option<Related> {
        self.node(ppid).map(|n| Related {
            pid: n.pid,
            name: n.name,
        })
    }

    /// `process.session_leader`: the process whose pid is our session id.
    /// A process gone before procfs was read has no known sid: it has its
    /// parent's, as fork gives it (cat and grep don't call setsid).
    pub fn session_leader(&mut self, pid: u32) -> Option<Related> {
        let mut current = pid;
        for _ in 0..MAX_DEPTH {
            let node = self.node(current)?;
            match node.sid {
                Some(0) => return None,
                Some(sid) => {
                    return self.node(sid).map(|n| Related {
                        pid: sid,
                        name: n.name,
                    });
                }
                None if node.ppid == 0 => return None,
                None => current = node.ppid,
            }
        }
        None
    }

    /// `process.entry_leader` with its `entry_meta.type`.
    pub fn entry_leader(&mut self, pid: u32) -> Option<EntryLeader> {
        let mut walk = Walk::default();
        let mut current = pid;
        for _ in 0..MAX_DEPTH {
            if current == 0 {
                return None;
            }
            let Some(node) = self.node(current) else {
                return self
                    .table
                    .is_history()
                    .then(|| walk.beyond_history(current))
                    .flatten();
            };
            walk.inferred |= node.inferred;
            if current == 1 {
                return Some(walk.leader(node, EntryType::Init));
            }
            if current == 2 || node.ppid == 2 {
                return Some(if node.sid == Some(current) {
                    walk.leader(node, EntryType::Kthread)
                } else {
                    EntryLeader {
                        pid: 2,
                        name: Name::from_slice(b"kthreadd"),
                        kind: EntryType::Kthread,
                        inferred: Inferences::NONE,
                    }
                });
            }
            current = node.ppid;
            if node.sid == Some(node.pid)
                && let Some(kind) = self.session_entry_type(&node)
            {
                return Some(walk.leader(node, kind));
            }
            walk.passed(node);
        }
        None
    }

    /// Whether a session leader starts an entry session, and of which type.
    fn session_entry_type(&mut self, node: &Node) -> Option<EntryType> {
        match node.tty {
            TtyKind::Tty => return Some(EntryType::Terminal),
            TtyKind::Console if node.name[..] == *b"login" => return Some(EntryType::Console),
            _ => {}
        }
        if RUNTIME_PREFIXES.iter().any(|p| node.name.starts_with(p)) {
            return None;
        }
        let parent_name = self.node(node.ppid).map(|p| p.name).unwrap_or_default();
        if node.tty == TtyKind::Pts && parent_name[..] == *b"ssm-session-worker" {
            return Some(EntryType::Ssm);
        }
        // OpenSSH 9.8 moved the per-session process to `sshd-session`.
        if is_sshd(&parent_name) && !is_sshd(&node.name) {
            return Some(EntryType::Sshd);
        }
        if CONTAINER_PARENT_PREFIXES
            .iter()
            .any(|p| parent_name.starts_with(p))
        {
            return Some(EntryType::Container);
        }
        if node.ppid == 1 {
            return Some(EntryType::Init);
        }
        None
    }
}

fn is_sshd(name: &[u8]) -> bool {
    name == b"sshd" || name == b"sshd-session"
}

/// What a walk up the ancestry has passed on its way to the entry leader.
#[derive(Default)]
struct Walk {
    nearest_session_leader: Option<Node>,
    /// The last process passed.
    last: Option<Node>,
    inferred: Inferences,
}

impl Walk {
    fn passed(&mut self, node: Node) {
        if node.sid == Some(node.pid) && self.nearest_session_leader.is_none() {
            self.nearest_session_leader = Some(node.clone());
        }
        self.last = Some(node);
    }

    fn leader(self, node: Node, kind: EntryType) -> EntryLeader {
        EntryLeader {
            pid: node.pid,
            name: node.name,
            kind,
            inferred: self.inferred,
        }
    }

    /// The entry leader when the log's history ends at `unknown`: the
    /// service that forked a session's opener (a fork runs its parent's
    /// program), or the nearest session leader, of unknown type.
    fn beyond_history(self, unknown: u32) -> Option<EntryLeader> {
        if let Some(opener) = self.last.filter(|last| last.opened_session) {
            return Some(EntryLeader {
                pid: unknown,
                name: opener.name,
                kind: EntryType::Init,
                inferred: self.inferred | Inferences::SERVICE,
            });
        }
        let inferred = self.inferred;
        self.nearest_session_leader.map(|node| EntryLeader {
            pid: node.pid,
            name: node.name,
            kind: EntryType::Unknown,
            inferred,
        })
    }
}

/// When an event happened, as far as mapwatch can tell.
#[derive(Clone, Copy, Debug)]
struct EventWindow {
    /// It happened before this.
    latest: Instant,
    /// An exec the event is known to follow (its reader's own).
    after_exec: Option<Serial>,
    /// For a read: the number of the fanotify read(2) that took it.
    read_taken_by: Option<u64>,
}

/// The program a process ran when the event happened: the one before its
/// last exec for the exec'ing process itself, and for events that happened
/// before that exec.
fn leader_name(process: &Process, is_event_process: bool, event: EventWindow) -> &[u8] {
    if (is_event_process || exec_came_later(process, event))
        && let Some(before) = process.name_before_exec.as_deref()
    {
        return before;
    }
    &process.name
}

/// Whether the process's last exec came after the event. No thread's
/// clock can say: a read is dated only by when the fanotify thread took
/// it, an exec by when its records were read, and either thread can run
/// late. The kernel's own orders decide, in turn:
/// 1. audit serials: an exec numbered no later than the one the event
///    follows (its reader's) came before it (a shell that became `env`,
///    then `bash` again, then forked the reader);
/// 2. the fanotify queue: a read taken by a read(2) numbered above the
///    exec's mark was queued after the exec ([`crate::source::fanotify::ReadOrder`]),
///    however long ago that was;
/// 3. otherwise an exec numbered after the reader's came after the read (a
///    shell exec'ing its last command once the reader is done); with no
///    serials to compare, one the kernel began after the read was seen.
fn exec_came_later(process: &Process, event: EventWindow) -> bool {
    let Some(processed) = process.renamed_at else {
        return false;
    };
    if let (Some(own), Some(anchor)) = (process.exec_serial, event.after_exec)
        && own.is_not_after(anchor)
    {
        return false;
    }
    if let (Some(mark), Some(taken_by)) = (process.exec_read_mark, event.read_taken_by)
        && taken_by > mark
    {
        return false;
    }
    if process.exec_serial.is_some() && event.after_exec.is_some() {
        return true;
    }
    process.exec_began.unwrap_or(processed) > event.latest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::assemble::ExecEvent;
    use crate::audit::record::{AuditTimestamp, EventId};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    // Above pid_max's usual range: never live, the table alone answers.
    const SHELL: u32 = 4_000_000_000;

    fn exec(name: &str, serial: u64) -> ExecEvent {
        ExecEvent {
            id: Some(EventId {
                timestamp: AuditTimestamp { secs: 0, millis: 0 },
                serial: Serial(serial),
            }),
            pid: SHELL,
            ppid: 1,
            path: Some(format!("/usr/bin/{name}").into_bytes()),
            ..ExecEvent::default()
        }
    }

    fn exec_at(name: &str, serial: u64, began: SystemTime) -> ExecEvent {
        let since_epoch = began.duration_since(UNIX_EPOCH).expect("after 1970");
        let mut event = exec(name, serial);
        if let Some(id) = event.id.as_mut() {
            id.timestamp = AuditTimestamp {
                secs: since_epoch.as_secs(),
                millis: since_epoch.subsec_millis() as u16,
            };
        }
        event
    }

    /// The shell's name for a read seen at `seen`, taken by fanotify read(2)
    /// number `taken_by`, by a reader exec'd as `reader_exec`.
    fn name_for_read(
        table: &mut ProcessTable,
        seen: Instant,
        reader_exec: Option<u64>,
        taken_by: u64,
    ) -> Vec<u8> {
        let mut resolver =
            LeaderResolver::new(table, None, seen).placed(reader_exec.map(Serial), taken_by);
        resolver
            .parent(SHELL)
            .expect("the shell is known")
            .name
            .to_vec()
    }

    #[test]
    fn an_exec_numbered_before_the_readers_came_before_the_read_however_late_its_records() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut table = ProcessTable::new(100, Duration::from_secs(60));
        table.record_exec(&exec("env", 10), t0);
        // bash again, its records read 50 ms late, long after the fanotify
        // thread took the read of a reader exec'd as 12.
        table.record_exec(&exec("bash", 11), t0 + ms(50));
        assert_eq!(name_for_read(&mut table, t0 + ms(5), Some(12), 1), b"bash");
        // A reader exec'd before bash's exec (9): its read, as far as the
        // kernel's orders tell, came before it.
        assert_eq!(name_for_read(&mut table, t0 + ms(5), Some(9), 1), b"env");
    }

    #[test]
    fn a_read_taken_after_the_queue_was_seen_empty_past_an_exec_came_after_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut table = ProcessTable::new(100, Duration::from_secs(60));
        table.record_exec(&exec("bash", 10), t0);
        // The shell exec's touch (13) after its child, exec'd as 12, read
        // a map; the fanotify queue was empty when touch's records were in,
        // the last read(2) begun being number 7.
        table.record_exec(&exec("touch", 13), t0 + ms(3));
        table.exec_before_reads_above(SHELL, 7);
        // Taken by read(2) 7 or before, and seen late (+60 ms): before touch.
        assert_eq!(name_for_read(&mut table, t0 + ms(60), Some(12), 7), b"bash");
        // Taken by read(2) 8: queued after touch's records were in.
        assert_eq!(name_for_read(&mut table, t0 + ms(1), Some(12), 8), b"touch");
    }

    #[test]
    fn without_serials_a_read_is_placed_against_when_the_kernel_began_the_exec() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut table = ProcessTable::new(100, Duration::from_secs(60));
        table.record_exec(&exec("env", 10), t0);
        // bash's records, processed at +100 ms, say it began 90 ms before.
        let began = SystemTime::now() - ms(90);
        table.record_exec(&exec_at("bash", 11, began), t0 + ms(100));
        // A reader with no exec of its own (a fork): read seen at +50 ms,
        // after bash began...
        assert_eq!(name_for_read(&mut table, t0 + ms(50), None, 1), b"bash");
        // ...and at +5 ms, before.
        assert_eq!(name_for_read(&mut table, t0 + ms(5), None, 1), b"env");
    }

    #[test]
    fn serials_compare_across_the_kernels_32_bit_wrap() {
        assert!(Serial(u64::from(u32::MAX)).is_not_after(Serial(2)));
        assert!(!Serial(2).is_not_after(Serial(u64::from(u32::MAX))));
        assert!(Serial(7).is_not_after(Serial(7)));
    }
}
