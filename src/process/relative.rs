//! Facts of a process an event's process relates to (its parent, its
//! leaders) beyond the pid and name the leader logic gives: executable,
//! argv, working directory, credentials, terminal.
//!
//! Contract: what the process table kept of the relative's last exec wins
//! (what it ran when the event happened, and all a replay has); procfs fills
//! the rest while the relative lives, never when replaying. Each fact is
//! `None` when neither knows it. Gathered at most once per event and
//! relation, and only when a rule or an alert asks.

use super::ProcessTable;
use super::live::{Credentials, LiveProcess};
use super::stat::TtyKind;
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

/// What is known of a related process.
#[derive(Clone, Debug, Default)]
pub struct Details {
    pub executable: Option<Vec<u8>>,
    pub args: Option<Argv>,
    /// `args` joined by spaces, as ECS's `command_line`.
    pub command_line: Option<Vec<u8>>,
    pub working_directory: Option<Vec<u8>>,
    pub credentials: Credentials,
    /// Whether it has a controlling terminal.
    pub interactive: Option<bool>,
}

impl Details {
    pub fn gather(pid: u32, table: &mut ProcessTable) -> Details {
        let known = table.get(pid);
        let mut details = Details {
            executable: known.and_then(|p| p.exe.clone()),
            args: known.and_then(|p| p.args.clone()),
            command_line: None,
            working_directory: known.and_then(|p| p.cwd.clone()),
            credentials: Credentials {
                euid: known.and_then(|p| p.euid),
                ..Credentials::default()
            },
            interactive: known.and_then(|p| p.tty).map(|t| t != TtyKind::None),
        };
        if !table.is_history() {
            let mut live = LiveProcess::new(pid);
            if details.executable.is_none() {
                details.executable = live.exe().map(<[u8]>::to_vec);
            }
            if details.args.is_none() {
                details.args = live.args().cloned();
            }
            if details.working_directory.is_none() {
                details.working_directory = live.cwd().map(<[u8]>::to_vec);
            }
            if let Some(credentials) = live.credentials() {
                details.credentials = credentials;
            }
            if details.interactive.is_none() {
                details.interactive = live.tty().map(|t| t != TtyKind::None);
            }
        }
        details.command_line = details
            .args
            .as_ref()
            .map(|a| a.iter().collect::<Vec<_>>().join(&b' '));
        details
    }
}
