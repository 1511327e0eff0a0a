//! Facts of a process an event's process relates to (its parent, its
//! leaders) beyond the pid and name the leader logic gives: executable,
//! argv, working directory, credentials, terminal.
//!
//! Contract: the relative was looked up in the process table for this
//! event (so its entry is this process, not an earlier one under its pid).
//! What the table kept of its last exec wins (what it ran when the event
//! happened, and all a replay has); procfs gives the rest while it lives,
//! never when replaying, and what procfs gave of its executable, argv and
//! working directory is kept in the table for later events. Each fact is
//! read on first use only, and is `None` when neither knows it.

use super::ProcessTable;
use super::live::LiveProcess;
use super::stat::TtyKind;
use crate::audit::assemble::Credentials;
use crate::audit::execve::Argv;

/// A process an event's process relates to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Relation {
    Parent,
    SessionLeader,
    EntryLeader,
    GroupLeader,
}

impl Relation {
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One related process, its facts read lazily.
pub struct Relative {
    pid: u32,
    live: LiveProcess,
}

impl Relative {
    pub fn new(pid: u32) -> Self {
        Relative {
            pid,
            live: LiveProcess::new(pid),
        }
    }

    /// procfs, unless the table is a log's history.
    fn live<'a>(&'a mut self, table: &ProcessTable) -> Option<&'a mut LiveProcess> {
        (!table.is_history()).then_some(&mut self.live)
    }

    /// Reads what the table lacks of executable, argv and working
    /// directory from procfs once, and keeps it there.
    fn complete(&mut self, table: &mut ProcessTable) {
        let Some(known) = table.get(self.pid) else {
            return;
        };
        let complete = known.exe.is_some() && known.args.is_some() && known.cwd.is_some();
        if complete || known.completed_from_procfs || table.is_history() {
            return;
        }
        let (pid, live) = (self.pid, &mut self.live);
        let exe = live.exe().map(<[u8]>::to_vec);
        let args = live.args().cloned();
        let cwd = live.cwd().map(<[u8]>::to_vec);
        table.remember_from_procfs(pid, exe.as_deref(), args.as_ref(), cwd.as_deref());
    }

    pub fn executable<'a>(&'a mut self, table: &'a mut ProcessTable) -> Option<&'a [u8]> {
        self.complete(table);
        match table.get(self.pid).and_then(|p| p.exe.as_deref()) {
            Some(exe) => Some(exe),
            None => self.live(table)?.exe(),
        }
    }

    pub fn args<'a>(&'a mut self, table: &'a mut ProcessTable) -> Option<&'a Argv> {
        self.complete(table);
        match table.get(self.pid).and_then(|p| p.args.as_ref()) {
            Some(args) => Some(args),
            None => self.live(table)?.args(),
        }
    }

    pub fn command_line<'a>(&'a mut self, table: &'a mut ProcessTable) -> Option<&'a [u8]> {
        self.args(table).map(Argv::joined)
    }

    pub fn working_directory<'a>(&'a mut self, table: &'a mut ProcessTable) -> Option<&'a [u8]> {
        self.complete(table);
        match table.get(self.pid).and_then(|p| p.cwd.as_deref()) {
            Some(cwd) => Some(cwd),
            None => self.live(table)?.cwd(),
        }
    }

    /// procfs while it lives (all six ids); else the effective uid of its
    /// last exec.
    pub fn credentials(&mut self, table: &ProcessTable) -> Credentials {
        let known = Credentials {
            euid: table.get(self.pid).and_then(|p| p.euid),
            ..Credentials::default()
        };
        self.live(table)
            .and_then(|live| live.credentials())
            .unwrap_or(known)
    }

    /// Whether it has a controlling terminal.
    pub fn interactive(&mut self, table: &ProcessTable) -> Option<bool> {
        match table.get(self.pid).and_then(|p| p.tty) {
            Some(tty) => Some(tty != TtyKind::None),
            None => self.live(table)?.tty().map(|t| t != TtyKind::None),
        }
    }
}
