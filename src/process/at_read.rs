//! Who made a read of a memory map: the reader as it was at the read, not
//! as it is when the read is evaluated.
//!
//! Contract: the fanotify thread takes an [`AtRead`] of the reader as soon
//! as it has taken the read off the queue (before the reader can exec
//! another program or exit and be reaped), for reads of another process's
//! map only; [`identify`] then names the reader from that and from the
//! process table. The table's program wins while it is the one procfs showed
//! at the read; when they differ the process exec'd after the read was taken
//! (or its exec's records are still on their way), and the program at the
//! read is the reader. A reader neither knows is [`Basis::Unknown`].

use super::live::{LiveProcess, executable};
use super::stat::{ProcStat, read_stat};
use super::table::{Process, ProcessTable, Program};
use crate::audit::execve::Argv;
use crate::audit::record::Serial;
use std::time::Instant;

/// The reader as procfs showed it just after its read was taken.
#[derive(Clone, PartialEq, Eq)]
pub struct AtRead {
    pub stat: ProcStat,
    /// `None` for a zombie (its memory is gone) or a kernel thread.
    pub exe: Option<Vec<u8>>,
    pub args: Option<Argv>,
    /// The owner of its procfs directory: its effective uid.
    pub euid: Option<u32>,
}

impl std::fmt::Debug for AtRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtRead")
            .field("stat", &self.stat)
            .field("exe", &self.exe.as_deref().map(String::from_utf8_lossy))
            .finish_non_exhaustive()
    }
}

impl AtRead {
    /// `None` when the process is already gone (reaped).
    pub fn take(pid: u32) -> Option<AtRead> {
        let stat = read_stat(pid).ok()?;
        let exe = executable(pid);
        let mut live = LiveProcess::new(pid);
        let args = live.args().cloned();
        let euid = live.uid();
        Some(AtRead {
            stat,
            exe,
            args,
            euid,
        })
    }
}

/// Where the reader's identity came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// Its exec event (the table): the program it was exec'd as.
    Exec,
    /// procfs when the read was taken (a fork that never exec'd, or a
    /// process that exec'd another program after the read).
    AtRead,
    /// procfs later (a process older than mapwatch, still running).
    Procfs,
    /// Gone before anything could be read: only its pid is known.
    Unknown,
}

impl Basis {
    /// `mapwatch.read.reader_from`.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Exec => "exec",
            Basis::AtRead => "read",
            Basis::Procfs => "procfs",
            Basis::Unknown => "unknown",
        }
    }
}

/// The reader of one read, as rules and the alert name it.
#[derive(Debug)]
pub struct Reader {
    pub basis: Basis,
    /// The program it ran before its last exec, when nothing proves that
    /// exec came before the read: then either may have made it.
    pub in_doubt: Option<Box<Program>>,
    pub name: Option<Vec<u8>>,
    pub exe: Option<Vec<u8>>,
    pub args: Option<Argv>,
    pub cwd: Option<Vec<u8>>,
    pub euid: Option<u32>,
    pub ppid: Option<u32>,
    /// The serial of the exec that made it the program named.
    pub exec_serial: Option<Serial>,
}

/// When and how a read was taken off the fanotify queue.
#[derive(Clone, Copy, Debug)]
pub struct Taken {
    pub seen: Instant,
    /// The number of the read(2) that took it
    /// ([`crate::source::fanotify::ReadOrder`]).
    pub by: u64,
    /// Its audit serial, for a read audit saw (PROCMAP_QUERY): it orders
    /// the read among its reader's execs exactly.
    pub serial: Option<Serial>,
}

/// Names the reader `pid` of a read taken as `taken`. A reader the table
/// did not know is kept in it as it was at the read, for the read's
/// relations.
pub fn identify(
    table: &mut ProcessTable,
    pid: u32,
    taken: Taken,
    at_read: Option<&AtRead>,
) -> Reader {
    let seen = taken.seen;
    let Some(known) = table.lookup(pid, seen) else {
        return match at_read {
            Some(s) => remember_fork(table, s, seen),
            None => unknown(),
        };
    };
    match at_read {
        Some(s) => of_known(known, s, taken),
        None => from_table(known, taken),
    }
}

/// A reader the table knows, seen at the read as `s`.
fn of_known(known: &Process, s: &AtRead, taken: Taken) -> Reader {
    // A zombie at the read has no exe: whatever the table says came
    // before it.
    if s.exe.is_some() && known.exe.is_some() && s.exe != known.exe {
        Reader {
            // Its arguments of then; its directory and uid, the table's.
            cwd: known.cwd.clone(),
            euid: known.euid,
            ..from_snapshot(s)
        }
    } else {
        from_table(known, taken)
    }
}

/// Names the reader `pid` as [`identify`] would, without touching the
/// table (no procfs lookup, nothing remembered): for a look at a read on
/// arrival (a sequence's step), before the read's own evaluation, whose
/// naming must not depend on it.
pub fn peek(table: &ProcessTable, pid: u32, taken: Taken, at_read: Option<&AtRead>) -> Reader {
    match (table.get(pid), at_read) {
        (Some(known), Some(s)) => of_known(known, s, taken),
        (Some(known), None) => from_table(known, taken),
        (None, Some(s)) => from_snapshot(s),
        (None, None) => unknown(),
    }
}

fn unknown() -> Reader {
    Reader {
        basis: Basis::Unknown,
        in_doubt: None,
        name: None,
        exe: None,
        args: None,
        cwd: None,
        euid: None,
        ppid: None,
        exec_serial: None,
    }
}

/// A reader the table does not know (a fork that never exec'd), kept in it
/// as it was at the read. Exited by the time it was looked at (a zombie, no
/// exe), it runs its parent's program.
fn remember_fork(table: &mut ProcessTable, s: &AtRead, seen: Instant) -> Reader {
    let mut reader = from_snapshot(s);
    if reader.exe.is_none()
        && let Some(parent) = table.lookup(s.stat.ppid, seen)
    {
        (reader.exe, reader.args) = program_forked_from(parent, s.stat.comm.as_bytes());
    }
    table.remember_at_read(
        &s.stat,
        reader.exe.as_deref(),
        reader.args.as_ref(),
        s.euid,
        seen,
    );
    reader
}

/// The table's program; and the one before, unless the fanotify queue
/// proves the last exec came before the read (see
/// [`crate::source::fanotify::ReadOrder`]): nothing dates a read more
/// closely than the moment it was taken, which can be long after.
fn from_table(p: &Process, taken: Taken) -> Reader {
    let exec_before_read = p.exec_read_mark.is_some_and(|mark| taken.by > mark)
        || matches!((p.exec_serial, taken.serial), (Some(exec), Some(read)) if exec.is_not_after(read));
    Reader {
        in_doubt: p.program_before_exec.clone().filter(|_| !exec_before_read),
        basis: if p.renamed_at.is_some() {
            Basis::Exec
        } else {
            Basis::Procfs
        },
        name: Some(p.name.clone()).filter(|n| !n.is_empty()),
        exe: p.exe.clone(),
        args: p.args.clone(),
        cwd: p.cwd.clone(),
        euid: p.euid,
        ppid: Some(p.ppid),
        exec_serial: p.exec_serial,
    }
}

/// The program of `parent` that a fork named `comm` was copied from: the
/// one it runs, or the one before its last exec (a shell exec's its last
/// command, often before its fork's read is evaluated). `comm` is cut at
/// 15 bytes.
fn program_forked_from(parent: &Process, comm: &[u8]) -> (Option<Vec<u8>>, Option<Argv>) {
    let named = |name: &[u8]| !comm.is_empty() && name.starts_with(comm);
    if named(&parent.name) {
        return (parent.exe.clone(), parent.args.clone());
    }
    match parent.program_before_exec.as_deref() {
        Some(before) if named(&before.name) => (Some(before.exe.clone()), before.args.clone()),
        _ => (None, None),
    }
}

fn from_snapshot(s: &AtRead) -> Reader {
    Reader {
        in_doubt: None,
        basis: Basis::AtRead,
        name: Some(s.stat.comm.as_bytes().to_vec()).filter(|n| !n.is_empty()),
        exe: s.exe.clone(),
        args: s.args.clone(),
        cwd: None,
        euid: s.euid,
        ppid: Some(s.stat.ppid),
        exec_serial: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::assemble::ExecEvent;
    use crate::audit::record::{AuditTimestamp, EventId};
    use crate::process::stat::Comm;
    use std::time::Duration;

    // Above pid_max's usual range: never live, the table alone answers.
    const READER: u32 = 4_000_000_001;

    fn snapshot(comm: &str, exe: &str, ppid: u32) -> AtRead {
        AtRead {
            stat: ProcStat {
                pid: READER,
                comm: Comm::new(comm.as_bytes()),
                state: b'S',
                ppid,
                pgrp: 0,
                sid: 0,
                tty_nr: 0,
                start_ticks: 1,
            },
            exe: Some(exe.as_bytes().to_vec()),
            args: Some(vec![comm.as_bytes()].into()),
            euid: Some(0),
        }
    }

    fn taken(by: u64) -> Taken {
        Taken {
            seen: Instant::now(),
            by,
            serial: None,
        }
    }

    fn exec(table: &mut ProcessTable, name: &str) {
        exec_numbered(table, name, None);
    }

    fn exec_numbered(table: &mut ProcessTable, name: &str, serial: Option<u64>) {
        let event = ExecEvent {
            id: serial.map(|serial| EventId {
                timestamp: AuditTimestamp { secs: 0, millis: 0 },
                serial: Serial(serial),
            }),
            pid: READER,
            ppid: 7,
            path: Some(format!("/usr/bin/{name}").into_bytes()),
            exe: Some(format!("/usr/bin/{name}").into_bytes()),
            ..ExecEvent::default()
        };
        table.record_exec(&event, Instant::now());
        table.keep_exec_details(event);
    }

    fn table_with_exec(name: &str) -> ProcessTable {
        let mut table = ProcessTable::new(1024, Duration::from_secs(60));
        exec(&mut table, name);
        table
    }

    #[test]
    fn the_program_before_an_exec_not_proven_to_precede_the_read_is_in_doubt() {
        let mut table = table_with_exec("bash");
        exec(&mut table, "touch");
        let reader = identify(&mut table, READER, taken(3), None);
        assert_eq!(reader.name.as_deref(), Some(&b"touch"[..]));
        let doubt = reader.in_doubt.expect("bash may have read it");
        assert_eq!(doubt.exe, b"/usr/bin/bash");
        // The queue was seen empty after touch's exec, at read(2) 2: a read
        // taken by read(2) 3 came after it.
        table.exec_before_reads_above(READER, 2);
        assert!(
            identify(&mut table, READER, taken(3), None)
                .in_doubt
                .is_none()
        );
        assert!(
            identify(&mut table, READER, taken(2), None)
                .in_doubt
                .is_some()
        );
        // A fork's exec: before it, the fork ran its parent's copy, no
        // program of its own.
        let mut fresh = table_with_exec("cat");
        assert!(
            identify(&mut fresh, READER, taken(1), None)
                .in_doubt
                .is_none()
        );
    }

    #[test]
    fn a_process_that_exec_d_after_its_read_is_named_as_it_was_at_the_read() {
        let mut table = table_with_exec("touch");
        let at_read = snapshot("bash", "/usr/bin/bash", 7);
        let reader = identify(&mut table, READER, taken(1), Some(&at_read));
        assert_eq!(reader.basis, Basis::AtRead);
        assert_eq!(reader.name.as_deref(), Some(&b"bash"[..]));
        assert_eq!(reader.exe.as_deref(), Some(&b"/usr/bin/bash"[..]));
    }

    #[test]
    fn the_exec_event_names_a_reader_still_running_the_same_program() {
        let mut table = table_with_exec("cat");
        let at_read = snapshot("cat", "/usr/bin/cat", 7);
        let reader = identify(&mut table, READER, taken(1), Some(&at_read));
        assert_eq!(reader.basis, Basis::Exec);
        assert_eq!(reader.name.as_deref(), Some(&b"cat"[..]));
    }

    #[test]
    fn a_fork_that_never_exec_d_is_named_from_the_read_and_else_unknown() {
        let mut table = ProcessTable::new(1024, Duration::from_secs(60));
        let at_read = snapshot("python3", "/usr/bin/python3.13", 42);
        let reader = identify(&mut table, READER, taken(1), Some(&at_read));
        assert_eq!(reader.basis, Basis::AtRead);
        assert_eq!(reader.ppid, Some(42));
        assert_eq!(reader.name.as_deref(), Some(&b"python3"[..]));
        // Kept: a later read by it is named alike.
        let again = identify(&mut table, READER, taken(1), None);
        assert_eq!(again.name.as_deref(), Some(&b"python3"[..]));
        let mut empty = ProcessTable::new(1024, Duration::from_secs(60));
        let unknown = identify(&mut empty, READER, taken(1), None);
        assert_eq!(unknown.basis, Basis::Unknown);
        assert_eq!(unknown.name, None);
    }
}
