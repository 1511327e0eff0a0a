//! Records -> events, grouped by `(timestamp, serial)`, and exec events out.
//!
//! Contract: records of different events may interleave. An event is complete
//! at its PROCTITLE record, which the kernel writes last in every syscall
//! event, or at its EOE (auditd keeps EOE out of its log and its plugin
//! feed, so PROCTITLE is what ends an event there); one that gets neither is
//! flushed after
//! `timeout` by [`Assembler::flush_expired`], and at most `max_in_flight`
//! events are held (the oldest is flushed to make room). Successful
//! execve/execveat events come out as [`ExecEvent`]s; successful setsid
//! calls, the LOGIN records of a process setting its login uid (PAM's
//! pam_loginuid) and the USER_START records of a PAM session opened as
//! [`SessionChange`]s (taken with [`Assembler::take_sessions`] before the
//! exec events of the same push); successful PROCMAP_QUERY ioctls as
//! [`MapQuery`]s ([`Assembler::take_map_queries`]), the calls that reach
//! into another process's memory (ptrace requests, process_vm_readv and
//! process_vm_writev), successful or not, as [`MemoryAccess`]es
//! ([`Assembler::take_memory_accesses`]); everything else is only counted.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

use super::execve::{Argv, ArgvBuilder, ArgvDefects};
use super::record::{EventId, Record, RecordType, Serial, Value};
use super::syscall::{
    AuditArch, MemoryCall, PROCMAP_QUERY, PtraceRequest, is_exec, is_ioctl, is_setsid, memory_call,
};

/// `(uid_t)-1`: the kernel's "not set" for auid and ses.
const UNSET_ID: u32 = u32::MAX;

/// A process's user and group ids: real, effective, saved (the SYSCALL
/// record's, or procfs's `Uid:` and `Gid:` lines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub uid: Option<u32>,
    pub euid: Option<u32>,
    pub suid: Option<u32>,
    pub gid: Option<u32>,
    pub egid: Option<u32>,
    pub sgid: Option<u32>,
}

/// One successful exec, with what its records say about the process.
#[derive(Clone, Debug, Default)]
pub struct ExecEvent {
    pub id: Option<EventId>,
    pub arch: Option<AuditArch>,
    pub syscall: u32,
    pub pid: u32,
    pub ppid: u32,
    pub ids: Credentials,
    pub auid: Option<u32>,
    pub ses: Option<u32>,
    pub tty: Option<Vec<u8>>,
    pub comm: Option<Vec<u8>>,
    pub exe: Option<Vec<u8>>,
    pub argv: Argv,
    pub argv_defects: ArgvDefects,
    pub cwd: Option<Vec<u8>>,
    /// The path given to execve (PATH item 0's name), not the resolved
    /// executable.
    pub path: Option<Vec<u8>>,
    /// What an ENRICHED log names the ids by (the writing host's names).
    pub id_names: Option<Box<IdNames>>,
    /// False when the event was flushed without its EOE record.
    pub complete: bool,
}

/// A successful setsid: `pid` now leads a session of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStart {
    pub pid: u32,
    pub ppid: u32,
    pub comm: Option<Vec<u8>>,
}

/// The names auditd gave a SYSCALL record's ids in an ENRICHED log: its
/// lookups on the host that wrote the record, which may not be this one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdNames {
    pub users: Vec<(u32, Vec<u8>)>,
    pub groups: Vec<(u32, Vec<u8>)>,
}

/// The ids whose names an ENRICHED SYSCALL record gives, by the raw
/// field's name and the translation's.
const USER_IDS: [(&[u8], &[u8]); 4] = [
    (b"auid", b"AUID"),
    (b"uid", b"UID"),
    (b"euid", b"EUID"),
    (b"suid", b"SUID"),
];
const GROUP_IDS: [(&[u8], &[u8]); 3] = [(b"gid", b"GID"), (b"egid", b"EGID"), (b"sgid", b"SGID")];

/// A change of the sessions a process belongs to, in the log's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionChange {
    /// setsid(2).
    Setsid(SessionStart),
    /// LOGIN: a process set its login uid.
    Login(Login),
    /// USER_START: `pid` opened its PAM session (its session modules
    /// have run).
    PamOpened { pid: u32 },
}

/// A process set its login uid (LOGIN, with the SYSCALL record of the
/// write when the process was audited): it, and every process it forks
/// from now on, belongs to audit session `ses`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub pid: u32,
    pub ses: u32,
    /// From the SYSCALL record, when there is one.
    pub ppid: Option<u32>,
    pub comm: Option<Vec<u8>>,
}

/// A successful `ioctl(fd, PROCMAP_QUERY)`: `pid` asked the open maps
/// file `fd` for a mapping (which file it is, only the process's fds say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapQuery {
    /// Orders the query among its process's execs.
    pub serial: Serial,
    pub pid: u32,
    pub fd: u32,
    pub exe: Option<Vec<u8>>,
}

/// A call that reaches into another process's memory: a ptrace request of
/// [`PtraceRequest`], `process_vm_readv` or `process_vm_writev`. Its
/// caller's facts are the SYSCALL record's, in `caller` (no argv: the
/// caller did not exec).
#[derive(Clone, Debug)]
pub struct MemoryAccess {
    pub call: MemoryCall,
    /// For `ptrace`, which request.
    pub request: Option<PtraceRequest>,
    pub caller: ExecEvent,
    pub success: bool,
    /// The target as the caller named it (a thread id in the caller's pid
    /// namespace).
    pub named_target: u32,
    /// The target as the kernel names it when it audits the attach
    /// (OBJ_PID: a thread group id in the initial namespace), and its comm.
    pub kernel_target: Option<(u32, Option<Vec<u8>>)>,
    /// Where a poke writes (the `addr` argument).
    pub address: Option<u64>,
}

impl MemoryAccess {
    /// `event.type`: a change of the target, or an access to it.
    pub fn changes_target(&self) -> bool {
        match self.call {
            MemoryCall::Ptrace => self.request.is_some_and(PtraceRequest::changes_tracee),
            MemoryCall::ProcessVmReadv => false,
            MemoryCall::ProcessVmWritev => true,
        }
    }
}

impl ExecEvent {
    /// `process.name`: the basename of the path given to execve (PATH item 0),
    /// which is what the process was started as; `comm` when that is missing.
    pub fn name(&self) -> &[u8] {
        self.path
            .as_deref()
            .map(basename)
            .filter(|n| !n.is_empty())
            .or(self.comm.as_deref())
            .unwrap_or_default()
    }

    /// `process.title`: the command line as the kernel's PROCTITLE record
    /// gives it for this exec (the new argv, NUL-joined, cut to 128 bytes,
    /// trailing NULs trimmed), with NULs shown as spaces; `None` where the
    /// kernel writes `(null)`. Derived from the argv rather than decoded
    /// from PROCTITLE on every exec: for an execve both hold the same
    /// bytes, and few events ever need the title.
    pub fn title(&self) -> Option<Vec<u8>> {
        let mut cmdline = Vec::with_capacity(self.argv.byte_len().min(PROCTITLE_LEN));
        for arg in self.argv.iter() {
            cmdline.extend_from_slice(arg);
            cmdline.push(0);
            if cmdline.len() >= PROCTITLE_LEN {
                break;
            }
        }
        cmdline.truncate(PROCTITLE_LEN);
        while cmdline.last() == Some(&0) {
            cmdline.pop();
        }
        for byte in &mut cmdline {
            if *byte == 0 {
                *byte = b' ';
            }
        }
        Some(cmdline).filter(|c| !c.is_empty())
    }
}

/// `MAX_PROCTITLE_AUDIT_LEN`: how much of the command line PROCTITLE holds.
const PROCTITLE_LEN: usize = 128;

/// The last path component (`/usr/bin/cat` -> `cat`).
pub fn basename(path: &[u8]) -> &[u8] {
    let trimmed = match path.iter().rposition(|b| *b != b'/') {
        Some(last) => &path[..=last],
        None => return path,
    };
    match trimmed.iter().rposition(|b| *b == b'/') {
        Some(slash) => &trimmed[slash + 1..],
        None => trimmed,
    }
}

/// What the assembler saw, for the stats line.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct AssemblerStats {
    pub exec_events: u64,
    pub failed_execs: u64,
    pub session_starts: u64,
    pub logins: u64,
    pub other_events: u64,
    pub flushed_without_eoe: u64,
    pub evicted: u64,
    pub malformed_argv: u64,
    pub map_queries: u64,
    pub memory_accesses: u64,
}

/// What a syscall event is, as far as mapwatch cares.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Exec,
    Setsid,
    /// An ioctl PROCMAP_QUERY on this fd.
    MapQuery(u32),
    Memory {
        call: MemoryCall,
        request: Option<PtraceRequest>,
        target: u32,
        address: Option<u64>,
    },
    /// A LOGIN record: `pid` is now audit session `ses`.
    Login {
        pid: u32,
        ses: u32,
    },
}

#[derive(Default)]
struct Pending {
    syscall: Option<ExecEvent>,
    success: bool,
    kind: Kind,
    ignored: bool,
    argv: ArgvBuilder,
    cwd: Option<Vec<u8>>,
    path: Option<Vec<u8>>,
    /// OBJ_PID's target and its comm.
    object: Option<(u32, Option<Vec<u8>>)>,
}

pub struct Assembler {
    pending: FxHashMap<EventId, Pending>,
    arrival: VecDeque<(EventId, Instant)>,
    timeout: Duration,
    max_in_flight: usize,
    stats: AssemblerStats,
    sessions: Vec<SessionChange>,
    map_queries: Vec<MapQuery>,
    memory_accesses: Vec<MemoryAccess>,
}

impl Assembler {
    pub fn new(timeout: Duration, max_in_flight: usize) -> Self {
        Assembler {
            pending: FxHashMap::default(),
            arrival: VecDeque::new(),
            timeout,
            max_in_flight: max_in_flight.max(1),
            stats: AssemblerStats::default(),
            sessions: Vec::new(),
            map_queries: Vec::new(),
            memory_accesses: Vec::new(),
        }
    }

    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Session changes of the events completed so far, oldest first: apply
    /// them before the exec events completed by the same call.
    pub fn take_sessions(&mut self) -> std::vec::Drain<'_, SessionChange> {
        self.sessions.drain(..)
    }

    /// PROCMAP_QUERY ioctls completed so far, oldest first.
    pub fn take_map_queries(&mut self) -> std::vec::Drain<'_, MapQuery> {
        self.map_queries.drain(..)
    }

    /// Calls into another process's memory completed so far, oldest first.
    pub fn take_memory_accesses(&mut self) -> std::vec::Drain<'_, MemoryAccess> {
        self.memory_accesses.drain(..)
    }

    /// Adds one record; completed exec events are appended to `out`.
    pub fn push(&mut self, record: &Record<'_>, now: Instant, out: &mut Vec<ExecEvent>) {
        if record.rtype == RecordType::EOE {
            if let Some(pending) = self.pending.remove(&record.id) {
                self.finish(record.id, pending, true, out);
            }
            self.drop_stale_arrivals();
            return;
        }
        if record.rtype == RecordType::USER_START {
            // A record of its own (a user message): nothing to wait for.
            if let Some(pid) = record.get(b"pid").and_then(|v| v.decimal::<u32>()) {
                self.sessions.push(SessionChange::PamOpened { pid });
            }
            return;
        }
        if !is_event_part(record.rtype) {
            return;
        }
        if self.pending.len() >= self.max_in_flight && !self.pending.contains_key(&record.id) {
            self.evict_oldest(out);
        }
        let pending = self.pending.entry(record.id).or_insert_with(|| {
            self.arrival.push_back((record.id, now));
            Pending::default()
        });
        add_record(pending, record);
        if record.rtype == RecordType::PROCTITLE
            && let Some(pending) = self.pending.remove(&record.id)
        {
            self.finish(record.id, pending, true, out);
            self.drop_stale_arrivals();
        }
    }

    /// Flushes events older than the timeout (sources without EOE).
    pub fn flush_expired(&mut self, now: Instant, out: &mut Vec<ExecEvent>) {
        while let Some(&(id, arrived)) = self.arrival.front() {
            if !self.pending.contains_key(&id) {
                self.arrival.pop_front();
                continue;
            }
            if now.saturating_duration_since(arrived) < self.timeout {
                break;
            }
            self.arrival.pop_front();
            if let Some(pending) = self.pending.remove(&id) {
                self.stats.flushed_without_eoe += 1;
                self.finish(id, pending, false, out);
            }
        }
    }

    /// Flushes everything (end of input, shutdown).
    pub fn flush_all(&mut self, out: &mut Vec<ExecEvent>) {
        while let Some((id, _)) = self.arrival.pop_front() {
            if let Some(pending) = self.pending.remove(&id) {
                self.stats.flushed_without_eoe += 1;
                self.finish(id, pending, false, out);
            }
        }
    }

    fn evict_oldest(&mut self, out: &mut Vec<ExecEvent>) {
        while let Some((id, _)) = self.arrival.pop_front() {
            if let Some(pending) = self.pending.remove(&id) {
                self.stats.evicted += 1;
                self.finish(id, pending, false, out);
                return;
            }
        }
    }

    fn drop_stale_arrivals(&mut self) {
        while let Some((id, _)) = self.arrival.front() {
            if self.pending.contains_key(id) {
                break;
            }
            self.arrival.pop_front();
        }
    }

    fn finish(&mut self, id: EventId, pending: Pending, complete: bool, out: &mut Vec<ExecEvent>) {
        if let Kind::Login { pid, ses } = pending.kind {
            self.stats.logins += 1;
            let caller = pending.syscall.filter(|e| e.pid == pid);
            self.sessions.push(SessionChange::Login(Login {
                pid,
                ses,
                ppid: caller.as_ref().map(|e| e.ppid),
                comm: caller.and_then(|e| e.comm),
            }));
            return;
        }
        let Some(mut event) = pending.syscall.filter(|_| !pending.ignored) else {
            self.stats.other_events += 1;
            return;
        };
        match pending.kind {
            Kind::Exec => {}
            Kind::Setsid => {
                if pending.success {
                    self.stats.session_starts += 1;
                    self.sessions.push(SessionChange::Setsid(SessionStart {
                        pid: event.pid,
                        ppid: event.ppid,
                        comm: event.comm,
                    }));
                }
                return;
            }
            Kind::MapQuery(fd) => {
                if pending.success {
                    self.stats.map_queries += 1;
                    self.map_queries.push(MapQuery {
                        serial: id.serial,
                        pid: event.pid,
                        fd,
                        exe: event.exe,
                    });
                }
                return;
            }
            Kind::Memory {
                call,
                request,
                target,
                address,
            } => {
                self.stats.memory_accesses += 1;
                event.id = Some(id);
                event.complete = complete;
                self.memory_accesses.push(MemoryAccess {
                    call,
                    request,
                    caller: event,
                    success: pending.success,
                    named_target: target,
                    kernel_target: pending.object,
                    address,
                });
                return;
            }
            Kind::Login { .. } => return,
        }
        if !pending.success {
            self.stats.failed_execs += 1;
            return;
        }
        let (argv, defects) = pending.argv.finish();
        if defects.any() {
            self.stats.malformed_argv += 1;
        }
        event.id = Some(id);
        event.argv = argv;
        event.argv_defects = defects;
        event.cwd = pending.cwd;
        event.path = pending.path;
        event.complete = complete;
        self.stats.exec_events += 1;
        out.push(event);
    }
}

fn is_event_part(rtype: RecordType) -> bool {
    matches!(
        rtype,
        RecordType::SYSCALL
            | RecordType::EXECVE
            | RecordType::CWD
            | RecordType::PATH
            | RecordType::PROCTITLE
            | RecordType::OBJ_PID
            | RecordType::LOGIN
    )
}

fn add_record(pending: &mut Pending, record: &Record<'_>) {
    if pending.ignored {
        return;
    }
    match record.rtype {
        RecordType::SYSCALL => {
            let (event, success, [a0, a1, a2]) = parse_syscall(record);
            if let Kind::Login { .. } = pending.kind {
                // The write to /proc/self/loginuid that LOGIN records.
                pending.syscall = Some(event);
                return;
            }
            let mut event = event;
            event.id_names = id_names(record, &event);
            let low = |arg: Option<u64>| arg.map(|v| v as u32);
            let kind = match event.arch {
                Some(arch) if is_exec(arch, event.syscall) => Kind::Exec,
                Some(arch) if is_setsid(arch, event.syscall) => Kind::Setsid,
                Some(arch) if is_ioctl(arch, event.syscall) && low(a1) == Some(PROCMAP_QUERY) => {
                    match low(a0) {
                        Some(fd) => Kind::MapQuery(fd),
                        None => return ignore(pending),
                    }
                }
                Some(arch) => match memory_kind(memory_call(arch, event.syscall), [a0, a1, a2]) {
                    Some(kind) => kind,
                    None => return ignore(pending),
                },
                // Drop what was buffered and skip the rest cheaply.
                None => return ignore(pending),
            };
            pending.syscall = Some(event);
            pending.success = success;
            pending.kind = kind;
        }
        RecordType::EXECVE => pending.argv.add_record(record),
        RecordType::OBJ_PID => pending.object = object_pid(record),
        // The kernel writes LOGIN during the write, before the SYSCALL
        // record of its exit.
        RecordType::LOGIN => match login(record) {
            Some(kind) => pending.kind = kind,
            None => ignore(pending),
        },
        RecordType::CWD => pending.cwd = untrusted(record.get(b"cwd")),
        RecordType::PATH => {
            if let Some(name) = path_item_zero(record) {
                pending.path = Some(name);
            }
        }
        _ => {}
    }
}

/// The names of an ENRICHED record's ids; `None` for other records.
fn id_names(record: &Record<'_>, event: &ExecEvent) -> Option<Box<IdNames>> {
    let mut enriched = record.enrichment().peekable();
    enriched.peek()?;
    let mut names = IdNames::default();
    let ids = &event.ids;
    let id_of = |raw: &[u8]| match raw {
        b"auid" => event.auid,
        b"uid" => ids.uid,
        b"euid" => ids.euid,
        b"suid" => ids.suid,
        b"gid" => ids.gid,
        b"egid" => ids.egid,
        b"sgid" => ids.sgid,
        _ => None,
    };
    for (key, value) in enriched {
        let Some(name) = value.untrusted().map(|n| n.into_owned()) else {
            continue;
        };
        if let Some((raw, _)) = USER_IDS.iter().find(|(_, k)| *k == key)
            && let Some(id) = id_of(raw)
        {
            names.users.push((id, name));
        } else if let Some((raw, _)) = GROUP_IDS.iter().find(|(_, k)| *k == key)
            && let Some(id) = id_of(raw)
        {
            names.groups.push((id, name));
        }
    }
    Some(Box::new(names))
}

/// What a memory call is about: ptrace's `(request, pid, addr)`, or
/// process_vm_*'s `pid`; `None` for a call that is none of them, or a
/// ptrace request mapwatch does not audit (another rule's).
fn memory_kind(call: Option<MemoryCall>, [a0, a1, a2]: [Option<u64>; 3]) -> Option<Kind> {
    let call = call?;
    let low = |arg: Option<u64>| arg.map(|v| v as u32);
    Some(match call {
        MemoryCall::Ptrace => {
            let request = PtraceRequest::from_number(low(a0)?)?;
            let pokes = matches!(
                request,
                PtraceRequest::PokeText | PtraceRequest::PokeData | PtraceRequest::PokeUser
            );
            Kind::Memory {
                call,
                request: Some(request),
                target: low(a1)?,
                address: a2.filter(|_| pokes),
            }
        }
        MemoryCall::ProcessVmReadv | MemoryCall::ProcessVmWritev => Kind::Memory {
            call,
            request: None,
            target: low(a0)?,
            address: None,
        },
    })
}

/// LOGIN: `pid=PID ... old-ses=N ses=N res=1`; `None` for a failed
/// change, or one that unset the session.
fn login(record: &Record<'_>) -> Option<Kind> {
    let (mut pid, mut ses, mut done) = (None, None, false);
    for (key, value) in record.fields() {
        match key {
            b"pid" => pid = value.decimal::<u32>(),
            b"ses" => ses = id_field(value),
            b"res" => done = value.raw() == b"1",
            _ => {}
        }
    }
    Some(Kind::Login {
        pid: pid?,
        ses: ses.filter(|_| done)?,
    })
}

/// OBJ_PID: `opid=PID ... ocomm="COMM"`, the process a ptrace attach took.
fn object_pid(record: &Record<'_>) -> Option<(u32, Option<Vec<u8>>)> {
    let pid = record.get(b"opid")?.decimal::<u32>()?;
    Some((pid, untrusted(record.get(b"ocomm"))))
}

fn ignore(pending: &mut Pending) {
    *pending = Pending {
        ignored: true,
        ..Pending::default()
    };
}

fn untrusted(value: Option<Value<'_>>) -> Option<Vec<u8>> {
    value.and_then(|v| v.untrusted()).map(|c| c.into_owned())
}

fn id_field(value: Value<'_>) -> Option<u32> {
    value.decimal::<u32>().filter(|id| *id != UNSET_ID)
}

/// The SYSCALL record's event, whether it succeeded, and its first three
/// arguments (hex in the record).
fn parse_syscall(record: &Record<'_>) -> (ExecEvent, bool, [Option<u64>; 3]) {
    let mut event = ExecEvent::default();
    let mut success = false;
    let mut args = [None; 3];
    for (key, value) in record.fields() {
        match key {
            b"a0" => args[0] = value.hex_u64(),
            b"a1" => args[1] = value.hex_u64(),
            b"a2" => args[2] = value.hex_u64(),
            b"arch" => event.arch = value.hex_u32().map(AuditArch),
            b"syscall" => event.syscall = value.decimal().unwrap_or(u32::MAX),
            b"success" => success = value.raw() == b"yes",
            b"pid" => event.pid = value.decimal().unwrap_or(0),
            b"ppid" => event.ppid = value.decimal().unwrap_or(0),
            b"uid" => event.ids.uid = id_field(value),
            b"euid" => event.ids.euid = id_field(value),
            b"suid" => event.ids.suid = id_field(value),
            b"gid" => event.ids.gid = id_field(value),
            b"egid" => event.ids.egid = id_field(value),
            b"sgid" => event.ids.sgid = id_field(value),
            b"auid" => event.auid = id_field(value),
            b"ses" => event.ses = id_field(value),
            b"tty" => event.tty = Some(value.raw().to_vec()).filter(|t| t != b"(none)"),
            b"comm" => event.comm = untrusted(Some(value)),
            b"exe" => {
                event.exe = untrusted(Some(value));
                // The kernel writes exe after every field used here; what
                // follows (subj, key) is not scanned.
                break;
            }
            _ => {}
        }
    }
    (event, success, args)
}

/// The name of PATH item 0 (the path given to execve); `None` for the
/// other items (the interpreter, the dynamic loader), which nothing uses.
/// The kernel writes `item` and `name` first: the fields after them are
/// not scanned.
fn path_item_zero(record: &Record<'_>) -> Option<Vec<u8>> {
    let mut fields = record.fields();
    let (b"item", item) = fields.next()? else {
        return None;
    };
    if item.decimal::<u32>() != Some(0) {
        return None;
    }
    fields
        .find(|(key, _)| *key == b"name")
        .and_then(|(_, name)| untrusted(Some(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(assembler: &mut Assembler, text: &str, now: Instant) -> Vec<ExecEvent> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let record = Record::parse_log_line(line.as_bytes()).expect("test record parses");
            assembler.push(&record, now, &mut out);
        }
        out
    }

    const CAT_EVENT: &str = r#"type=SYSCALL msg=audit(1700000000.100:42): arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=2 ppid=100 pid=101 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="cat" exe="/usr/bin/cat" key="mapwatch"
type=EXECVE msg=audit(1700000000.100:42): argc=2 a0="cat" a1="/proc/1/maps"
type=CWD msg=audit(1700000000.100:42): cwd="/root"
type=PATH msg=audit(1700000000.100:42): item=0 name="/usr/bin/cat" inode=1 dev=fe:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0
type=PATH msg=audit(1700000000.100:42): item=1 name="/lib64/ld-linux-x86-64.so.2" inode=2 dev=fe:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0
type=PROCTITLE msg=audit(1700000000.100:42): proctitle=636174002F70726F632F312F6D617073
type=EOE msg=audit(1700000000.100:42):
"#;

    #[test]
    fn complete_exec_event() {
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        let events = feed(&mut a, CAT_EVENT, Instant::now());
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            (e.pid, e.ppid, e.ids.uid, e.auid, e.ses),
            (101, 100, Some(0), Some(1000), Some(3))
        );
        assert_eq!(e.name(), b"cat");
        assert_eq!(e.exe.as_deref(), Some(&b"/usr/bin/cat"[..]));
        assert_eq!(e.argv.get(1), Some(&b"/proc/1/maps"[..]));
        assert_eq!(e.cwd.as_deref(), Some(&b"/root"[..]));
        assert_eq!(e.title().as_deref(), Some(&b"cat /proc/1/maps"[..]));
        assert_eq!(e.tty.as_deref(), Some(&b"pts0"[..]));
        assert!(e.complete);
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn interleaved_events_are_kept_apart() {
        let other = CAT_EVENT
            .replace(":42)", ":43)")
            .replace("pid=101", "pid=201")
            .replace("/proc/1/maps", "/etc/hosts");
        let mut lines: Vec<&str> = Vec::new();
        for (a, b) in CAT_EVENT.lines().zip(other.lines()) {
            lines.push(a);
            lines.push(b);
        }
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        let events = feed(&mut a, &lines.join("\n"), Instant::now());
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].pid, events[0].argv.get(1)),
            (101, Some(&b"/proc/1/maps"[..]))
        );
        assert_eq!(
            (events[1].pid, events[1].argv.get(1)),
            (201, Some(&b"/etc/hosts"[..]))
        );
    }

    #[test]
    fn proctitle_ends_an_event_as_in_auditd_logs_without_eoe() {
        let without_eoe: String = CAT_EVENT
            .lines()
            .filter(|l| !l.starts_with("type=EOE"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut a = Assembler::new(Duration::from_secs(60), 16);
        let events = feed(&mut a, &without_eoe, Instant::now());
        assert_eq!(events.len(), 1);
        assert!(events[0].complete);
        assert_eq!(a.in_flight(), 0);
        // A late EOE for a finished event is ignored.
        assert!(
            feed(
                &mut a,
                CAT_EVENT.lines().last().unwrap_or_default(),
                Instant::now()
            )
            .is_empty()
        );
        assert_eq!(a.stats().exec_events, 1);
    }

    #[test]
    fn failed_exec_is_not_an_event() {
        let failed = CAT_EVENT.replace("success=yes exit=0", "success=no exit=-2");
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        assert!(feed(&mut a, &failed, Instant::now()).is_empty());
        assert_eq!(a.stats().failed_execs, 1);
    }

    #[test]
    fn event_without_end_is_flushed_by_the_timer() {
        let no_eoe: String = CAT_EVENT
            .lines()
            .filter(|l| !l.starts_with("type=EOE") && !l.starts_with("type=PROCTITLE"))
            .collect::<Vec<_>>()
            .join("\n");
        let start = Instant::now();
        let mut a = Assembler::new(Duration::from_millis(100), 16);
        assert!(feed(&mut a, &no_eoe, start).is_empty());
        let mut out = Vec::new();
        a.flush_expired(start + Duration::from_millis(50), &mut out);
        assert!(out.is_empty());
        a.flush_expired(start + Duration::from_millis(150), &mut out);
        assert_eq!(out.len(), 1);
        assert!(!out[0].complete);
        assert_eq!(out[0].argv.get(1), Some(&b"/proc/1/maps"[..]));
    }

    #[test]
    fn in_flight_events_are_capped() {
        let mut a = Assembler::new(Duration::from_secs(60), 4);
        let now = Instant::now();
        let mut out = Vec::new();
        for serial in 0..100 {
            let line = format!(
                "type=SYSCALL msg=audit(1.000:{serial}): arch=c000003e syscall=59 success=yes pid={serial} ppid=1"
            );
            let record = Record::parse_log_line(line.as_bytes()).expect("parses");
            a.push(&record, now, &mut out);
        }
        assert!(a.in_flight() <= 4);
        assert_eq!(a.stats().evicted, 96);
        assert_eq!(out.len(), 96);
    }

    #[test]
    fn non_exec_syscalls_are_dropped() {
        let open = CAT_EVENT.replace("syscall=59", "syscall=257");
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        assert!(feed(&mut a, &open, Instant::now()).is_empty());
        assert_eq!(a.stats().other_events, 1);
    }

    /// Debian's cron opening a job's PAM session, as auditd logged it with
    /// an execve-only rule set: LOGIN with the write's SYSCALL record
    /// (their order in the log), then USER_START.
    const CRON_LOGIN: &str = "type=LOGIN msg=audit(1796275381.217:12675136): pid=13637 uid=0 old-auid=4294967295 auid=0 tty=(none) old-ses=4294967295 ses=4 res=1\n\
type=SYSCALL msg=audit(1796275381.217:12675136): arch=c000003e syscall=1 success=yes exit=1 a0=6 a1=7ffcf6b52f60 a2=1 a3=7ffcf6b52c77 items=0 ppid=13632 pid=13637 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4 comm=\"cron\" exe=\"/usr/sbin/cron\" key=(null)\n\
type=PROCTITLE msg=audit(1796275381.217:12675136): proctitle=2F7573722F7362696E2F63726F6E002D66\n\
type=USER_START msg=audit(1796275381.217:12675137): pid=13637 uid=0 auid=0 ses=4 msg='op=PAM:session_open grantors=pam_loginuid,pam_env,pam_env,pam_permit,pam_unix,pam_limits acct=\"root\" exe=\"/usr/sbin/cron\" hostname=? addr=? terminal=cron res=success'\n";

    #[test]
    fn a_login_names_its_process_session_and_parent_and_user_start_follows() {
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        assert!(feed(&mut a, CRON_LOGIN, Instant::now()).is_empty());
        let changes: Vec<SessionChange> = a.take_sessions().collect();
        assert_eq!(
            changes,
            [
                SessionChange::Login(Login {
                    pid: 13637,
                    ses: 4,
                    ppid: Some(13632),
                    comm: Some(b"cron".to_vec()),
                }),
                SessionChange::PamOpened { pid: 13637 },
            ]
        );
        assert_eq!(a.stats().logins, 1);
        // A login that failed, or unset the session, changes nothing.
        let failed = CRON_LOGIN.replace("ses=4 res=1", "ses=4 res=0");
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        feed(&mut a, &failed, Instant::now());
        assert_eq!(
            a.take_sessions().collect::<Vec<_>>(),
            [SessionChange::PamOpened { pid: 13637 }]
        );
    }

    #[test]
    fn an_enriched_syscall_record_names_its_ids_as_the_writing_host_did() {
        let enriched = "node=fleet-node-7 type=SYSCALL msg=audit(1796276440.269:12706534): arch=c000003e syscall=59 success=yes exit=0 a0=7ffc9de03790 a1=7ffc9de03b28 a2=7ffc9de03b40 a3=691916c3c86fa29b items=1 ppid=29875 pid=29902 auid=1000 uid=1002 gid=1003 euid=0 suid=1002 fsuid=1002 egid=1003 sgid=1003 fsgid=1003 tty=(none) ses=3 comm=\"cat\" exe=\"/usr/bin/cat\" key=\"exec\"\x1dARCH=x86_64 SYSCALL=execve AUID=\"alice\" UID=\"mapwatch-fleet\" GID=\"fleet\" EUID=\"root\" SUID=\"mapwatch-fleet\" FSUID=\"mapwatch-fleet\" EGID=\"fleet\" SGID=\"fleet\" FSGID=\"fleet\"\nnode=fleet-node-7 type=PROCTITLE msg=audit(1796276440.269:12706534): proctitle=636174\n";
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        let events = feed(&mut a, enriched, Instant::now());
        let names = events[0].id_names.as_deref().expect("names");
        let name = |list: &[(u32, Vec<u8>)], id: u32| {
            list.iter()
                .find(|(i, _)| *i == id)
                .map(|(_, n)| String::from_utf8_lossy(n).into_owned())
        };
        assert_eq!(name(&names.users, 1000).as_deref(), Some("alice"));
        assert_eq!(name(&names.users, 1002).as_deref(), Some("mapwatch-fleet"));
        assert_eq!(name(&names.users, 0).as_deref(), Some("root"));
        assert_eq!(name(&names.groups, 1003).as_deref(), Some("fleet"));
        // A RAW line has none.
        let raw = enriched.replace(
            "\x1dARCH=x86_64 SYSCALL=execve AUID=\"alice\" UID=\"mapwatch-fleet\" GID=\"fleet\" EUID=\"root\" SUID=\"mapwatch-fleet\" FSUID=\"mapwatch-fleet\" EGID=\"fleet\" SGID=\"fleet\" FSGID=\"fleet\"",
            "",
        );
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        assert!(feed(&mut a, &raw, Instant::now())[0].id_names.is_none());
    }

    #[test]
    fn setsid_is_a_session_start_not_an_exec() {
        let setsid = "type=SYSCALL msg=audit(1700000000.200:50): arch=c000003e syscall=112 success=yes exit=4242 a0=0 a1=0 a2=0 a3=0 items=0 ppid=4241 pid=4242 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm=\"setsid\" exe=\"/usr/bin/setsid\" key=\"mapwatch\"\ntype=EOE msg=audit(1700000000.200:50):\n";
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        assert!(feed(&mut a, setsid, Instant::now()).is_empty());
        let sessions: Vec<SessionChange> = a.take_sessions().collect();
        assert_eq!(
            sessions,
            [SessionChange::Setsid(SessionStart {
                pid: 4242,
                ppid: 4241,
                comm: Some(b"setsid".to_vec()),
            })]
        );
        assert_eq!(a.stats().session_starts, 1);
        assert_eq!(a.stats().exec_events, 0);
    }

    #[test]
    fn a_procmap_query_ioctl_is_a_map_query_and_other_ioctls_are_not() {
        let query = |a1: &str, success: &str| {
            format!(
                "type=SYSCALL msg=audit(1700000000.300:60): arch=c000003e syscall=16 success={success} exit=0 a0=3 a1={a1} a2=7ffd0 a3=0 items=0 ppid=1 pid=4300 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=1 comm=\"q\" exe=\"/tmp/q\" key=\"mapwatch\"\ntype=PROCTITLE msg=audit(1700000000.300:60): proctitle=71\n"
            )
        };
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        assert!(feed(&mut a, &query("c0686611", "yes"), Instant::now()).is_empty());
        let queries: Vec<MapQuery> = a.take_map_queries().collect();
        assert_eq!(
            queries,
            [MapQuery {
                serial: Serial(60),
                pid: 4300,
                fd: 3,
                exe: Some(b"/tmp/q".to_vec())
            }]
        );
        // Sign-extended, as a 64-bit register may hold it.
        feed(&mut a, &query("ffffffffc0686611", "yes"), Instant::now());
        assert_eq!(a.take_map_queries().count(), 1);
        // Another request, or a failed query: nothing.
        feed(&mut a, &query("5401", "yes"), Instant::now());
        feed(&mut a, &query("c0686611", "no"), Instant::now());
        assert_eq!(a.take_map_queries().count(), 0);
        assert_eq!(a.stats().map_queries, 2);
    }

    #[test]
    fn name_is_basename_of_path_item_zero_not_of_exe() {
        let sh = CAT_EVENT
            .replace("name=\"/usr/bin/cat\"", "name=\"/bin/sh\"")
            .replace("exe=\"/usr/bin/cat\"", "exe=\"/usr/bin/dash\"");
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        let events = feed(&mut a, &sh, Instant::now());
        assert_eq!(events[0].name(), b"sh");
    }

    fn with_args(args: &[&[u8]]) -> ExecEvent {
        ExecEvent {
            argv: args.to_vec().into(),
            ..ExecEvent::default()
        }
    }

    #[test]
    fn title_is_what_proctitle_holds_for_the_exec() {
        // PROCTITLE=636174002F70726F632F312F6D617073 for `cat /proc/1/maps`.
        assert_eq!(
            with_args(&[b"cat", b"/proc/1/maps"]).title().as_deref(),
            Some(&b"cat /proc/1/maps"[..])
        );
        // Trailing NULs (empty last arguments) are trimmed, as the kernel does.
        assert_eq!(
            with_args(&[b"a", b"", b""]).title().as_deref(),
            Some(&b"a"[..])
        );
        assert_eq!(
            with_args(&[b"a", b"", b"b"]).title().as_deref(),
            Some(&b"a  b"[..])
        );
        // 128 bytes of the NUL-joined command line at most.
        let long = vec![b'x'; 100];
        let title = with_args(&[&long, &long]).title().expect("a title");
        assert_eq!(title.len(), 128);
        assert_eq!(title[100], b' ');
        assert_eq!(with_args(&[]).title(), None);
        assert_eq!(with_args(&[b""]).title(), None);
    }

    #[test]
    fn only_path_item_zero_is_kept_whatever_the_order() {
        let mut lines: Vec<&str> = CAT_EVENT.lines().collect();
        let (zero, one) = (
            lines
                .iter()
                .position(|l| l.contains("item=0"))
                .expect("item 0"),
            lines
                .iter()
                .position(|l| l.contains("item=1"))
                .expect("item 1"),
        );
        lines.swap(zero, one);
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        let events = feed(&mut a, &lines.join("\n"), Instant::now());
        assert_eq!(events[0].path.as_deref(), Some(&b"/usr/bin/cat"[..]));
        assert_eq!(events[0].name(), b"cat");
    }

    #[test]
    fn basenames() {
        assert_eq!(basename(b"/usr/bin/cat"), b"cat");
        assert_eq!(basename(b"cat"), b"cat");
        assert_eq!(basename(b"/usr/bin/"), b"bin");
        assert_eq!(basename(b"/"), b"/");
        assert_eq!(basename(b""), b"");
    }

    /// A ptrace attach, a poke and a process_vm_writev, as auditd logged
    /// them (Linux 6.18, python3 through ctypes).
    const MEMORY_CALLS: &str = r#"type=SYSCALL msg=audit(1796264411.069:10481759): arch=c000003e syscall=101 success=yes exit=0 a0=10 a1=4a3f a2=0 a3=0 items=0 ppid=18986 pid=19008 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="python3" exe="/usr/bin/python3.11" key="mapwatch"
type=OBJ_PID msg=audit(1796264411.069:10481759): opid=19007 oauid=-1 ouid=0 oses=-1 ocomm="sleep"
type=PROCTITLE msg=audit(1796264411.069:10481759): proctitle=707974686F6E3300696E6A6563742E7079
type=SYSCALL msg=audit(1796264411.069:10481760): arch=c000003e syscall=101 success=yes exit=0 a0=5 a1=4a3f a2=5596efca4000 a3=5596efc9c036 items=0 ppid=18986 pid=19008 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="python3" exe="/usr/bin/python3.11" key="mapwatch"
type=PROCTITLE msg=audit(1796264411.069:10481760): proctitle=707974686F6E3300696E6A6563742E7079
type=SYSCALL msg=audit(1796264411.161:10481762): arch=c000003e syscall=311 success=no exit=-1 a0=4a3f a1=7f4123fed570 a2=1 a3=7f4123fed690 items=0 ppid=18986 pid=19049 auid=4294967295 uid=1000 gid=0 euid=1000 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="python3" exe="/usr/bin/python3.11" key="mapwatch"
type=PROCTITLE msg=audit(1796264411.161:10481762): proctitle=707974686F6E3300696E6A6563742E7079
type=SYSCALL msg=audit(1796264411.200:10481763): arch=c000003e syscall=101 success=yes exit=0 a0=2 a1=4a3f a2=0 a3=0 items=0 ppid=18986 pid=19008 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="python3" exe="/usr/bin/python3.11" key="other"
type=PROCTITLE msg=audit(1796264411.200:10481763): proctitle=707974686F6E3300696E6A6563742E7079
"#;

    #[test]
    fn memory_calls_come_out_with_their_target_and_request() {
        let mut a = Assembler::new(Duration::from_secs(1), 16);
        let execs = feed(&mut a, MEMORY_CALLS, Instant::now());
        assert!(execs.is_empty());
        let calls: Vec<MemoryAccess> = a.take_memory_accesses().collect();
        assert_eq!(calls.len(), 3, "the peek (another rule's) is not one");
        let attach = &calls[0];
        assert_eq!(
            (
                attach.call,
                attach.request,
                attach.named_target,
                attach.success
            ),
            (
                MemoryCall::Ptrace,
                Some(PtraceRequest::Attach),
                0x4a3f,
                true
            )
        );
        assert_eq!(attach.kernel_target, Some((19007, Some(b"sleep".to_vec()))));
        assert!(!attach.changes_target());
        assert_eq!(attach.caller.pid, 19008);
        assert_eq!(attach.caller.comm.as_deref(), Some(&b"python3"[..]));
        let poke = &calls[1];
        assert_eq!(poke.request, Some(PtraceRequest::PokeData));
        assert_eq!(poke.address, Some(0x5596_efca_4000));
        assert_eq!(poke.kernel_target, None);
        assert!(poke.changes_target());
        let write = &calls[2];
        assert_eq!(
            (write.call, write.request, write.named_target, write.success),
            (MemoryCall::ProcessVmWritev, None, 0x4a3f, false)
        );
        assert_eq!(write.caller.ids.euid, Some(1000));
        assert!(write.changes_target());
        assert_eq!(a.stats().memory_accesses, 3);
    }
}
