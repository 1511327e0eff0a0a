//! The process table: what mapwatch knows of every process, live or recently
//! gone, so a short-lived `cat` can be placed in its tree after it exited.
//!
//! Contract: seeded from /proc, updated from every exec and setsid event
//! (without reading procfs: the exec path must stay cheap, and most exec'd
//! programs are gone before their event arrives), and refreshed from procfs
//! whenever a lookup (a rule or an alert needing relations) finds the
//! process alive. An entry is one
//! process, identified by `(pid, start time)`: when procfs shows a different
//! start time under the same pid, the old entry is replaced. Entries of gone
//! processes are kept for a grace period, then pruned; the table never holds
//! more than its capacity.
//!
//! A table built [`ProcessTable::from_history`] (replaying a recorded log)
//! never reads procfs, whose processes are not the log's: it knows only what
//! the log's exec, setsid and login events say, with a fork inheriting its
//! parent's session and a new ppid (other than init's, which adopts
//! orphans) meaning a new process under a reused pid; where the log is
//! silent, [`super::history`] infers sessions and unseen parents.

use rustc_hash::{FxHashMap, FxHashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use super::container::{Container, Containers};
use super::history::{self, AuditSessions, Inferences, Pam, ParentFacts};
use super::pid_ns::{PidNamespaces, host_namespace, procfs_namespace_at_root};
use super::procfs;
use super::stat::{ProcStat, TtyKind, read_stat, tty_kind};
use crate::audit::assemble::{ExecEvent, Login, SessionStart};
use crate::audit::execve::Argv;
use crate::audit::record::{AuditTimestamp, Serial};

/// How long what procfs showed of a live process is taken as current: a
/// busy parent (a build's `make`, a shell loop) is read once per interval,
/// not at every exec of its children. Short against a pid's reuse (the
/// kernel hands pids out in a cycle of `pid_max`) and against what a
/// lookup uses (parent, session, terminal), which rarely change and whose
/// changes by setsid and exec come through audit anyway.
const SEEN_ALIVE_HOLDS: Duration = Duration::from_millis(100);

/// argv bytes kept per process (the rest of a huge argv is dropped).
pub const MAX_KEPT_ARGV: usize = 4096;

fn kept_args(argv: &Argv) -> Argv {
    let mut kept = Argv::default();
    let mut budget = MAX_KEPT_ARGV;
    for arg in argv.iter() {
        let Some(rest) = budget.checked_sub(arg.len()) else {
            break;
        };
        budget = rest;
        kept.push(arg);
    }
    kept
}

/// A program a process ran.
#[derive(Clone, Debug)]
pub struct Program {
    pub name: Vec<u8>,
    pub exe: Vec<u8>,
    pub args: Option<Argv>,
}

/// What is known about one process.
#[derive(Clone, Debug)]
pub struct Process {
    pub pid: u32,
    pub start_ticks: Option<u64>,
    pub ppid: u32,
    pub sid: Option<u32>,
    pub tty: Option<TtyKind>,
    /// The program it runs: the name it was exec'd as, else its `comm`.
    pub name: Vec<u8>,
    /// The program it ran before its last exec (for a fresh fork: its
    /// parent's). An exec does not create a process: to the leader logic, an
    /// exec'ing process is still what it was when it called execve.
    pub name_before_exec: Option<Vec<u8>>,
    /// The program it ran before its last exec, when that was a program of
    /// its own (exec'd, or seen in procfs) and not a fork's copy of its
    /// parent: what a read just before that exec was made by.
    pub program_before_exec: Option<Box<Program>>,
    /// When mapwatch processed the exec that set `name`: the exec came
    /// before (by as long as its records waited).
    pub renamed_at: Option<Instant>,
    /// When that exec began, by the kernel's clock (its records' time,
    /// which is coarse and never late): the exec came after.
    pub exec_began: Option<Instant>,
    /// The serial of that exec event, which orders it among other execs
    /// whatever the time their records were read.
    pub exec_serial: Option<Serial>,
    /// Reads taken off the fanotify queue by a read(2) numbered above this
    /// came after that exec ([`crate::source::fanotify::ReadOrder`]).
    pub exec_read_mark: Option<u64>,
    pub exe: Option<Vec<u8>>,
    /// What its last exec event said, for events about it after it exited
    /// (a short-lived reader of a maps file). argv is cut at
    /// [`MAX_KEPT_ARGV`] bytes.
    pub args: Option<Argv>,
    pub cwd: Option<Vec<u8>>,
    pub euid: Option<u32>,
    /// Its audit login session (`ses`), as its last record said.
    pub ses: Option<u32>,
    /// It set its login uid (LOGIN): it opened audit session `ses`.
    pub opened_session: bool,
    /// Where it stands in the PAM session of its audit session.
    pub pam: Pam,
    /// What of it the table inferred rather than read from a record or
    /// procfs (history only).
    pub inferred: Inferences,
    /// procfs was read for what no exec event said (exe, args, cwd): once
    /// per process, even where procfs could not say.
    pub completed_from_procfs: bool,
    /// When procfs last showed it alive (as this process: same start time).
    seen_alive: Option<Instant>,
    gone_since: Option<Instant>,
    touched: Instant,
}

impl Process {
    fn new(pid: u32, ppid: u32, now: Instant) -> Self {
        Process {
            pid,
            start_ticks: None,
            ppid,
            sid: None,
            tty: None,
            name: Vec::new(),
            name_before_exec: None,
            program_before_exec: None,
            renamed_at: None,
            exec_began: None,
            exec_serial: None,
            exec_read_mark: None,
            exe: None,
            args: None,
            cwd: None,
            euid: None,
            ses: None,
            opened_session: false,
            pam: Pam::Unknown,
            inferred: Inferences::NONE,
            completed_from_procfs: false,
            seen_alive: None,
            gone_since: None,
            touched: now,
        }
    }
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
/// What the table holds and has done, for the stats line.
pub struct TableStats {
    pub entries: usize,
    pub pid_reuse: u64,
    pub pruned: u64,
}

pub struct ProcessTable {
    /// Boxed: growing or rehashing the map then moves a pointer per entry,
    /// not an entry (312 bytes), and its empty buckets cost 16 bytes, not
    /// 320 (measured in the exec storm: BENCHMARKS.md).
    entries: FxHashMap<u32, Box<Process>>,
    capacity: usize,
    grace: Duration,
    stats: TableStats,
    /// False when replaying a log: procfs describes other processes.
    procfs: bool,
    /// Audit login sessions opened in the log (history only).
    sessions: AuditSessions,
    /// Containers by cgroup path (live only).
    containers: Containers,
    /// Host pids of other pid namespaces' processes (live only).
    namespaces: PidNamespaces,
}

impl ProcessTable {
    /// A table of this machine's processes, kept current from procfs.
    pub fn new(capacity: usize, grace: Duration) -> Self {
        ProcessTable {
            entries: FxHashMap::default(),
            capacity: capacity.max(16),
            grace,
            stats: TableStats::default(),
            procfs: true,
            sessions: AuditSessions::default(),
            containers: Containers::default(),
            namespaces: PidNamespaces::default(),
        }
    }

    /// A table of a recorded log's processes, from the log alone.
    pub fn from_history(capacity: usize) -> Self {
        ProcessTable {
            procfs: false,
            ..Self::new(capacity, Duration::ZERO)
        }
    }

    /// True when the table knows only a log's history (no procfs).
    pub fn is_history(&self) -> bool {
        !self.procfs
    }

    /// The pid namespace of the procfs the live process `pid` (or, once it
    /// is gone, its parent `ppid`) sees at `/proc`, when it is not the
    /// host's: the namespace of the pids its arguments name.
    pub fn foreign_procfs_namespace(&self, pid: u32, ppid: u32) -> Option<u64> {
        if !self.procfs {
            return None;
        }
        let ns = procfs_namespace_at_root(pid).or_else(|| procfs_namespace_at_root(ppid))?;
        (Some(ns) != host_namespace()).then_some(ns)
    }

    /// The host pid of the process that is `local` in the pid namespace
    /// `ns`.
    pub fn host_pid(&mut self, ns: u64, local: u32, now: Instant) -> Option<u32> {
        self.namespaces.host_pid(ns, local, 0, now)
    }

    /// The container the live process `pid` runs in, else the one its
    /// parent `ppid` runs in (a short-lived reader is often gone by the
    /// time its alert is built; a process stays in its container's
    /// cgroup). Nothing for a log's processes.
    pub fn container_of(&mut self, pid: u32, ppid: Option<u32>) -> Option<Arc<Container>> {
        if !self.procfs {
            return None;
        }
        if procfs::exists(pid) {
            return self.containers.of_pid(pid);
        }
        self.containers.of_pid(ppid?)
    }

    fn read_stat(&self, pid: u32) -> Option<ProcStat> {
        if self.procfs {
            read_stat(pid).ok()
        } else {
            None
        }
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            entries: self.entries.len(),
            ..self.stats
        }
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.entries.get(&pid).map(Box::as_ref)
    }

    /// Keeps what procfs showed of a live process that no exec event
    /// described (it started before mapwatch), so later events about it
    /// need not read procfs again. Only fills what is unknown.
    pub fn remember_from_procfs(
        &mut self,
        pid: u32,
        exe: Option<&[u8]>,
        args: Option<&Argv>,
        cwd: Option<&[u8]>,
    ) {
        let Some(process) = self
            .entries
            .get_mut(&pid)
            .filter(|p| p.gone_since.is_none())
        else {
            return;
        };
        if process.exe.is_none() {
            process.exe = exe.map(<[u8]>::to_vec);
        }
        if process.args.is_none() {
            process.args = args.map(kept_args);
        }
        if process.cwd.is_none() {
            process.cwd = cwd.map(<[u8]>::to_vec);
        }
    }

    /// Keeps a process the table did not know as procfs showed it when one
    /// of its reads was taken (a fork that never exec'd, gone since), so its
    /// read's relations (parent, session, entry leader) can be resolved.
    pub fn remember_at_read(
        &mut self,
        stat: &ProcStat,
        exe: Option<&[u8]>,
        args: Option<&Argv>,
        euid: Option<u32>,
        now: Instant,
    ) {
        if self.entries.contains_key(&stat.pid) {
            return;
        }
        let process = self.insert_from_stat(stat, now);
        process.exe = exe.map(<[u8]>::to_vec);
        process.args = args.map(kept_args);
        process.euid = euid;
        process.completed_from_procfs = true;
    }

    /// Loads every process visible in /proc.
    pub fn seed_from_procfs(&mut self, now: Instant) -> std::io::Result<usize> {
        let mut seeded = 0;
        for pid in live_pids()? {
            if let Ok(stat) = read_stat(pid) {
                self.insert_from_stat(&stat, now);
                seeded += 1;
            }
        }
        Ok(seeded)
    }

    fn insert_from_stat(&mut self, stat: &ProcStat, now: Instant) -> &mut Process {
        let mut process = Process::new(stat.pid, stat.ppid, now);
        apply_stat(&mut process, stat, now);
        self.make_room();
        self.entries
            .entry(stat.pid)
            .insert_entry(Box::new(process))
            .into_mut()
    }

    /// Records an exec: the process now runs `event.name()`. What else the
    /// event says (exe, argv, cwd) comes after the rules, by move:
    /// [`ProcessTable::keep_exec_details`].
    pub fn record_exec(&mut self, event: &ExecEvent, now: Instant) {
        let same_process = match self.entries.get(&event.pid) {
            None => false,
            Some(known) if known.gone_since.is_some() => false,
            // An exec keeps the process; init adopts orphans.
            Some(known) if known.ppid == event.ppid || event.ppid == 1 => true,
            // A new parent: a reused pid, or an orphan adopted by a subreaper.
            // Only procfs tells them apart (a log can't: a reused pid).
            Some(known) => match (known.start_ticks, self.read_stat(event.pid)) {
                (Some(start), Some(live)) => start == live.start_ticks,
                _ => false,
            },
        };
        if !same_process {
            if self.entries.remove(&event.pid).is_some() {
                self.stats.pid_reuse += 1;
            }
            if self.is_history() {
                self.infer_unseen_parent(event.ppid, event.ses, now);
            }
            self.make_room();
            let process = self.forked(event.pid, event.ppid, now);
            self.entries.insert(event.pid, Box::new(process));
        }
        let started = self
            .is_history()
            .then(|| self.inferred_session(event, same_process))
            .flatten();
        let Some(process) = self.entries.get_mut(&event.pid) else {
            return;
        };
        let before = std::mem::replace(&mut process.name, event.name().to_vec());
        process.program_before_exec = None;
        if same_process {
            if let Some(exe) = process.exe.take() {
                process.program_before_exec = Some(Box::new(Program {
                    name: before.clone(),
                    exe,
                    args: process.args.take(),
                }));
            }
            process.name_before_exec = Some(before);
        }
        process.ppid = event.ppid;
        // The record's `tty=` is the controlling terminal at the exec,
        // `(none)` included.
        process.tty = Some(event.tty.as_deref().map_or(TtyKind::None, tty_kind_of_name));
        process.ses = event.ses;
        if let Some(inference) = started {
            // A recorded setsid already said so.
            if process.sid != Some(event.pid) {
                process.sid = Some(event.pid);
                process.inferred |= inference;
            }
            if let (true, Some(ses)) = (inference == Inferences::LAUNCHER, event.ses) {
                self.sessions.started_shell(ses, event.pid);
            }
        }
        process.renamed_at = Some(now);
        process.exec_began = event
            .id
            .and_then(|id| kernel_time_as_instant(id.timestamp, now));
        process.exec_serial = event.id.map(|id| id.serial);
        process.exec_read_mark = None;
        process.euid = event.ids.euid;
        process.touched = now;
    }

    /// A process seen for the first time: a fork of `ppid`, so it ran its
    /// parent's program before any exec, in its parent's sessions.
    fn forked(&self, pid: u32, ppid: u32, now: Instant) -> Process {
        let parent = self.entries.get(&ppid);
        let mut process = Process::new(pid, ppid, now);
        if let Some(parent) = parent {
            process.name_before_exec = Some(parent.name.clone());
            process.sid = parent.sid;
            process.tty = parent.tty;
            process.ses = parent.ses;
            process.pam = parent.pam;
        }
        process
    }

    /// Whether the process of an exec event leads a session no record
    /// started, and why ([`history::new_session`]).
    fn inferred_session(&self, event: &ExecEvent, same_process: bool) -> Option<Inferences> {
        let process = self.entries.get(&event.pid)?;
        let parent = self.entries.get(&event.ppid).map(|p| ParentFacts {
            name: &p.name,
            pam: p.pam,
        });
        // Called before the exec is recorded: a fresh fork still runs its
        // parent's program.
        let program_before = if same_process {
            Some(process.name.as_slice())
        } else {
            process.name_before_exec.as_deref()
        };
        history::new_session(program_before, !same_process, event.ppid, parent)
    }

    /// A parent the log never saw exec, of a process of an audit session
    /// opened in the log: a fork of the session's shell, or before the
    /// session had one, of its opener (sshd's unprivileged child, which
    /// forks the session's shell, never execs).
    fn infer_unseen_parent(&mut self, ppid: u32, ses: Option<u32>, now: Instant) {
        if ppid <= 1 || self.entries.contains_key(&ppid) {
            return;
        }
        let Some(session) = ses.and_then(|ses| self.sessions.get(ses)) else {
            return;
        };
        let Some(template) = session
            .shell
            .filter(|shell| self.entries.contains_key(shell))
            .or(Some(session.opener))
            .and_then(|pid| self.entries.get(&pid))
        else {
            return;
        };
        let mut parent = self.forked(ppid, template.pid, now);
        parent.name = template.name.clone();
        parent.inferred |= Inferences::AUDIT_SESSION;
        self.make_room();
        self.entries.insert(ppid, Box::new(parent));
    }

    /// Records a LOGIN: `login.pid` set its login uid, opening audit
    /// session `login.ses` for itself and what it forks from now on.
    pub fn record_login(&mut self, login: Login, now: Instant) {
        let ppid = login.ppid.unwrap_or(0);
        self.first_seen_without_exec(login.pid, ppid, login.comm, now);
        if let Some(process) = self.entries.get_mut(&login.pid) {
            process.ses = Some(login.ses);
            process.opened_session = true;
            process.pam = Pam::Opening;
            process.touched = now;
        }
        if self.is_history() {
            self.sessions.open(login.ses, login.pid);
        }
    }

    /// Adds a process first seen in a record other than its exec's: a
    /// fork, which runs its parent's program, unless its parent is init,
    /// which adopts orphans (a daemon's setsid after its parent exited):
    /// then, and when the parent is unknown, its `comm` names it.
    fn first_seen_without_exec(
        &mut self,
        pid: u32,
        ppid: u32,
        comm: Option<Vec<u8>>,
        now: Instant,
    ) {
        if self.entries.contains_key(&pid) {
            return;
        }
        self.make_room();
        let mut process = self.forked(pid, ppid, now);
        process.name = match process.name_before_exec.take() {
            Some(parent) if ppid > 1 => parent,
            _ => comm.unwrap_or_default(),
        };
        self.entries.insert(pid, Box::new(process));
    }

    /// Records a USER_START: `pid`'s PAM session is open.
    pub fn record_pam_opened(&mut self, pid: u32) {
        if let Some(process) = self.entries.get_mut(&pid)
            && process.pam == Pam::Opening
        {
            process.pam = Pam::Open;
        }
    }

    /// Records a setsid: `pid` leads a session of its own from now on.
    pub fn record_session_start(&mut self, session: SessionStart, now: Instant) {
        self.first_seen_without_exec(session.pid, session.ppid, session.comm, now);
        if let Some(process) = self.entries.get_mut(&session.pid) {
            process.sid = Some(session.pid);
            // setsid detaches from the controlling terminal.
            process.tty = Some(TtyKind::None);
            process.touched = now;
        }
    }

    /// Takes what an exec event says of its process that only later events
    /// need (a short-lived reader of a maps file, described after it exited).
    pub fn keep_exec_details(&mut self, event: ExecEvent) {
        let Some(process) = self.entries.get_mut(&event.pid) else {
            return;
        };
        process.exe = event.exe;
        process.cwd = event.cwd;
        process.args = Some(if event.argv.byte_len() <= MAX_KEPT_ARGV {
            event.argv
        } else {
            kept_args(&event.argv)
        });
    }

    /// The last exec recorded for `pid` came before any read taken by a
    /// read(2) of the fanotify group numbered above `mark`.
    pub fn exec_before_reads_above(&mut self, pid: u32, mark: u64) {
        if let Some(process) = self.entries.get_mut(&pid)
            && process.exec_read_mark.is_none()
        {
            process.exec_read_mark = Some(mark);
        }
    }

    /// The process as procfs shows it now, merged with what the table knows;
    /// the table alone when the process is gone. `None` when neither knows it.
    /// procfs is not asked again within [`SEEN_ALIVE_HOLDS`] of showing the
    /// process alive.
    pub fn lookup(&mut self, pid: u32, now: Instant) -> Option<&Process> {
        if self.is_history() {
            return self.get(pid);
        }
        let fresh = self.entries.get(&pid).is_some_and(|p| {
            p.gone_since.is_none()
                && p.seen_alive
                    .is_some_and(|seen| now.saturating_duration_since(seen) < SEEN_ALIVE_HOLDS)
        });
        if fresh {
            let process = self.entries.get_mut(&pid)?;
            process.touched = now;
            return Some(process);
        }
        match read_stat(pid) {
            Ok(live) => {
                let reused = self
                    .entries
                    .get(&pid)
                    .is_some_and(|p| p.start_ticks.is_some_and(|s| s != live.start_ticks));
                if reused {
                    self.stats.pid_reuse += 1;
                    self.entries.remove(&pid);
                }
                if !self.entries.contains_key(&pid) {
                    self.insert_from_stat(&live, now);
                }
                let process = self.entries.get_mut(&pid)?;
                apply_stat(process, &live, now);
                process.touched = now;
                Some(process)
            }
            Err(_) => {
                let process = self.entries.get_mut(&pid)?;
                process.gone_since.get_or_insert(now);
                Some(process)
            }
        }
    }

    /// Drops entries of processes gone for longer than the grace period.
    pub fn prune(&mut self, now: Instant) {
        if self.is_history() {
            // Nothing is known to be gone; capacity alone bounds the table.
            return;
        }
        let grace = self.grace;
        let before = self.entries.len();
        let live: FxHashSet<u32> = match live_pids() {
            Ok(pids) => pids.collect(),
            Err(e) => {
                tracing::warn!("listing /proc to find exited processes: {e}");
                return;
            }
        };
        for process in self.entries.values_mut() {
            match process.gone_since {
                None if !live.contains(&process.pid) => process.gone_since = Some(now),
                // Found gone by an earlier pass: it exited more than a
                // pass ago, long after any read of its could still be in
                // flight. Its ancestry stays; its exec details go (most of
                // an entry's memory under an exec storm).
                Some(_) => {
                    process.args = None;
                    process.cwd = None;
                    process.exe = None;
                }
                None => {}
            }
        }
        self.entries.retain(|_, p| {
            p.gone_since
                .is_none_or(|since| now.saturating_duration_since(since) < grace)
        });
        self.stats.pruned += (before - self.entries.len()) as u64;
    }

    /// Keeps the table within capacity: gone processes go first, then the
    /// least recently touched.
    fn make_room(&mut self) {
        if self.entries.len() < self.capacity {
            return;
        }
        let mut victims: Vec<(bool, Instant, u32)> = self
            .entries
            .values()
            .map(|p| (p.gone_since.is_none(), p.touched, p.pid))
            .collect();
        victims.sort_unstable();
        let excess = self.entries.len() + 1 - self.capacity;
        // Free a tenth at once so a full table doesn't sort on every insert.
        let count = excess.max(self.capacity / 10).min(victims.len());
        for (_, _, pid) in victims.into_iter().take(count) {
            self.entries.remove(&pid);
        }
        self.stats.pruned += count as u64;
    }
}

/// An audit timestamp (the wall clock's) as an `Instant`, by how long ago
/// it was on the wall clock now. `None` for a time the wall clock has not
/// reached (it was stepped back) or the monotonic clock cannot express.
fn kernel_time_as_instant(time: AuditTimestamp, now: Instant) -> Option<Instant> {
    let at =
        UNIX_EPOCH + Duration::from_secs(time.secs) + Duration::from_millis(u64::from(time.millis));
    let ago = SystemTime::now().duration_since(at).ok()?;
    now.checked_sub(ago)
}

fn apply_stat(process: &mut Process, live: &ProcStat, now: Instant) {
    process.seen_alive = Some(now);
    process.start_ticks = Some(live.start_ticks);
    process.ppid = live.ppid;
    process.sid = Some(live.sid);
    process.tty = Some(tty_kind(live.tty_nr));
    process.gone_since = None;
    if process.name.is_empty() {
        process.name = live.comm.as_bytes().to_vec();
    }
}

/// The kind of a terminal named as audit records name it (`tty=pts0`).
fn tty_kind_of_name(name: &[u8]) -> TtyKind {
    if name.starts_with(b"pts") {
        TtyKind::Pts
    } else if name == b"console" {
        TtyKind::Console
    } else if name.starts_with(b"tty") {
        TtyKind::Tty
    } else {
        TtyKind::None
    }
}

/// The pids in /proc: every live process. One directory listing per prune
/// pass, where checking each entry would cost a system call per exec'd
/// program (`kill(pid, 0)`) or a read of its stat file (one more fanotify
/// event for ourselves); listing the directory is neither a read of a file
/// nor, without `FAN_ONDIR`, an event. A pid reused since its entry was
/// made looks alive here; lookups and execs compare start times and replace
/// such entries.
fn live_pids() -> std::io::Result<impl Iterator<Item = u32>> {
    super::procfs::pids()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(pid: u32, ppid: u32, name: &str) -> ExecEvent {
        ExecEvent {
            pid,
            ppid,
            path: Some(format!("/usr/bin/{name}").into_bytes()),
            ..ExecEvent::default()
        }
    }

    // Pids above pid_max's usual range are never live: the table alone answers.
    const GONE: u32 = 4_000_000_000;

    #[test]
    fn exec_history_gives_the_name_before_exec() {
        let now = Instant::now();
        let mut table = ProcessTable::new(100, Duration::from_secs(60));
        table.record_exec(&exec(GONE, GONE - 1, "bash"), now);
        table.record_exec(&exec(GONE, GONE - 1, "cat"), now);
        let p = table.get(GONE).expect("known");
        assert_eq!(p.name, b"cat");
        assert_eq!(p.name_before_exec.as_deref(), Some(&b"bash"[..]));
    }

    #[test]
    fn fresh_fork_inherits_the_parent_name_as_before_exec() {
        let now = Instant::now();
        let mut table = ProcessTable::new(100, Duration::from_secs(60));
        table.record_exec(&exec(GONE - 1, 1, "zsh"), now);
        table.record_exec(&exec(GONE, GONE - 1, "grep"), now);
        assert_eq!(
            table.get(GONE).and_then(|p| p.name_before_exec.clone()),
            Some(b"zsh".to_vec())
        );
    }

    #[test]
    fn gone_processes_survive_the_grace_period_then_go() {
        let now = Instant::now();
        let mut table = ProcessTable::new(100, Duration::from_secs(60));
        table.record_exec(&exec(GONE, 1, "cat"), now);
        assert!(table.lookup(GONE, now).is_some());
        table.prune(now + Duration::from_secs(30));
        assert!(table.get(GONE).is_some());
        table.prune(now + Duration::from_secs(61));
        assert!(table.get(GONE).is_none());
    }

    #[test]
    fn capacity_is_enforced() {
        let now = Instant::now();
        let mut table = ProcessTable::new(50, Duration::from_secs(60));
        for i in 0..500 {
            table.record_exec(&exec(GONE - i, 1, "x"), now);
        }
        assert!(table.stats().entries <= 50);
    }

    #[test]
    fn history_table_follows_sessions_and_forks_without_procfs() {
        let now = Instant::now();
        let mut table = ProcessTable::from_history(100);
        // Our own pid is live, but a log's pid 1234 is not ours to look up.
        let me = std::process::id();
        table.record_exec(&exec(me, 1, "setsid"), now);
        table.record_session_start(
            SessionStart {
                pid: me + 1,
                ppid: me,
                comm: Some(b"setsid".to_vec()),
            },
            now,
        );
        table.record_exec(&exec(me + 1, me, "bash"), now);
        table.record_exec(&exec(me + 2, me + 1, "cat"), now);
        let shell = table.get(me + 1).expect("known from the log");
        assert_eq!(
            (
                shell.sid,
                shell.name.as_slice(),
                shell.name_before_exec.as_deref()
            ),
            (Some(me + 1), &b"bash"[..], Some(&b"setsid"[..]))
        );
        let cat = table.lookup(me + 2, now).expect("known from the log");
        assert_eq!(
            (cat.sid, cat.ppid, cat.start_ticks),
            (Some(me + 1), me + 1, None)
        );
    }

    #[test]
    fn history_table_treats_a_new_parent_as_a_reused_pid() {
        let now = Instant::now();
        let mut table = ProcessTable::from_history(100);
        table.record_exec(&exec(GONE, 10, "bash"), now);
        table.record_exec(&exec(GONE, 20, "cat"), now);
        let p = table.get(GONE).expect("known");
        assert_eq!(p.ppid, 20);
        assert_eq!(p.name_before_exec, None);
        assert_eq!(table.stats().pid_reuse, 1);
    }

    #[test]
    fn audit_tty_names() {
        assert_eq!(tty_kind_of_name(b"pts3"), TtyKind::Pts);
        assert_eq!(tty_kind_of_name(b"tty1"), TtyKind::Tty);
        assert_eq!(tty_kind_of_name(b"ttyS0"), TtyKind::Tty);
        assert_eq!(tty_kind_of_name(b"console"), TtyKind::Console);
    }

    #[test]
    fn seeding_sees_ourselves() {
        let mut table = ProcessTable::new(1 << 16, Duration::from_secs(60));
        let seeded = table
            .seed_from_procfs(Instant::now())
            .expect("/proc readable");
        assert!(seeded > 1);
        assert!(table.get(std::process::id()).is_some());
    }
}
