//! What a recorded log implies where it is silent: which processes lead a
//! session, and what the parents it never saw exec were.
//!
//! Contract: used only by a table built from history (replay, another
//! node's records), whose logs are usually what fleets record: execve
//! alone, no setsid calls. It infers from what auditd always records:
//! - the programs that start a session before they exec a child
//!   ([`Launcher`]): sshd's session child, login's shell, cron's job,
//!   and every program init or systemd starts, once the launcher's PAM
//!   session is open (USER_START) where PAM opens one;
//! - the exec of `setsid(1)`, which exec's its command (in a fork when it
//!   had to) in a session of its own;
//! - audit login sessions (`ses`, set by pam_loginuid: LOGIN): a process
//!   of session N whose parent the log never saw exec is taken for a fork
//!   of the session's shell, or before it had one, of the process that
//!   opened the session (sshd's unprivileged child is such a fork).
//!
//! What was inferred is kept with the process ([`Inferences`]) and named
//! in alerts, so an analyst can tell it from what was recorded.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

/// The ways a leader can be inferred rather than recorded, as a set.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Inferences(u8);

impl Inferences {
    pub const NONE: Self = Self(0);
    /// Session leader: its launcher starts a session before exec.
    pub const LAUNCHER: Self = Self(1);
    /// Session leader: exec'd by `setsid(1)`.
    pub const SETSID_PROGRAM: Self = Self(1 << 1);
    /// A parent never exec'd, taken from its audit login session.
    pub const AUDIT_SESSION: Self = Self(1 << 2);
    /// The service that forked a session's opener (init's child).
    pub const SERVICE: Self = Self(1 << 3);

    const NAMES: [(Self, &'static str); 4] = [
        (Self::LAUNCHER, "launcher"),
        (Self::SETSID_PROGRAM, "setsid_program"),
        (Self::AUDIT_SESSION, "audit_session"),
        (Self::SERVICE, "service"),
    ];

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the inferences, for `mapwatch.entry_leader.inferred`.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(flag, _)| self.contains(*flag))
            .map(|(_, name)| name)
    }
}

impl std::ops::BitOr for Inferences {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for Inferences {
    fn bitor_assign(&mut self, other: Self) {
        self.0 |= other.0;
    }
}

/// Where a process stands in the PAM session that set its audit session.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub enum Pam {
    #[default]
    Unknown,
    /// Its login uid is set (LOGIN) and PAM's session modules are running:
    /// what it forks now are PAM's helpers (pam_motd's scripts).
    Opening,
    /// The PAM session is open (USER_START): what it, or a fork of it,
    /// starts now is the session's.
    Open,
}

/// A program that starts a session for the children it execs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Launcher {
    /// Once its PAM session is open: sshd's session child (OpenSSH calls
    /// setsid before it execs the shell), login's shell, cron's job.
    AfterPam,
    /// Always: init and systemd start every service in a session of its own.
    Always,
}

fn launcher(name: &[u8]) -> Option<Launcher> {
    match name {
        b"sshd" | b"sshd-session" | b"login" | b"cron" | b"crond" => Some(Launcher::AfterPam),
        b"systemd" | b"init" => Some(Launcher::Always),
        _ => None,
    }
}

/// What a new process's parent tells of it, for [`new_session`].
pub struct ParentFacts<'a> {
    pub name: &'a [u8],
    pub pam: Pam,
}

/// Whether a process that just exec'd leads a session the log did not
/// record (no setsid call), and why: `program_before` is the program it
/// ran before this exec (its own, or for a fresh fork its parent's),
/// `fresh_fork` whether the log first sees it now, `parent` its parent as
/// the table knows it.
pub fn new_session(
    program_before: Option<&[u8]>,
    fresh_fork: bool,
    ppid: u32,
    parent: Option<ParentFacts<'_>>,
) -> Option<Inferences> {
    if program_before == Some(b"setsid") {
        return Some(Inferences::SETSID_PROGRAM);
    }
    if !fresh_fork {
        return None;
    }
    // A fork of init that execs is a service (orphans adopted by init
    // were seen before, with their first parent).
    if ppid == 1 {
        return Some(Inferences::LAUNCHER);
    }
    let parent = parent?;
    match launcher(parent.name)? {
        Launcher::Always => Some(Inferences::LAUNCHER),
        Launcher::AfterPam if parent.pam == Pam::Open => Some(Inferences::LAUNCHER),
        Launcher::AfterPam => None,
    }
}

/// Audit login sessions opened in the log: who opened each, and the
/// session's shell once one was started. Bounded: the oldest go first.
#[derive(Default)]
pub struct AuditSessions {
    by_id: FxHashMap<u32, AuditSession>,
    order: VecDeque<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditSession {
    /// The process that set its login uid (LOGIN).
    pub opener: u32,
    /// The latest process a launcher started in the session.
    pub shell: Option<u32>,
}

impl AuditSessions {
    /// More sessions than a table's worth of processes could use.
    const MAX: usize = 1 << 14;

    pub fn get(&self, ses: u32) -> Option<AuditSession> {
        self.by_id.get(&ses).copied()
    }

    pub fn open(&mut self, ses: u32, opener: u32) {
        let session = AuditSession {
            opener,
            shell: None,
        };
        if self.by_id.insert(ses, session).is_none() {
            self.order.push_back(ses);
        }
        while self.order.len() > Self::MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }

    pub fn started_shell(&mut self, ses: u32, pid: u32) {
        if let Some(session) = self.by_id.get_mut(&ses) {
            session.shell = Some(pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(name: &'static [u8], pam: Pam) -> Option<ParentFacts<'static>> {
        Some(ParentFacts { name, pam })
    }

    #[test]
    fn sshds_session_child_leads_a_session_once_pam_opened_it() {
        let open = new_session(Some(b"sshd"), true, 10, parent(b"sshd", Pam::Open));
        assert_eq!(open, Some(Inferences::LAUNCHER));
        // pam_motd's scripts run while the session is opening.
        assert_eq!(
            new_session(Some(b"sshd"), true, 10, parent(b"sshd", Pam::Opening)),
            None
        );
        // A shell's children are its own, whatever the shell's parent.
        assert_eq!(
            new_session(Some(b"bash"), true, 10, parent(b"bash", Pam::Open)),
            None
        );
    }

    #[test]
    fn setsid_programs_and_services_lead_sessions() {
        assert_eq!(
            new_session(Some(b"setsid"), false, 10, parent(b"bash", Pam::Unknown)),
            Some(Inferences::SETSID_PROGRAM)
        );
        assert_eq!(
            new_session(Some(b"systemd"), true, 1, None),
            Some(Inferences::LAUNCHER)
        );
        // An orphan init adopted was seen before: not a fresh fork.
        assert_eq!(new_session(Some(b"bash"), false, 1, None), None);
    }

    #[test]
    fn audit_sessions_are_bounded_oldest_first() {
        let mut sessions = AuditSessions::default();
        for ses in 0..(AuditSessions::MAX as u32 + 10) {
            sessions.open(ses, ses + 1);
        }
        assert_eq!(sessions.by_id.len(), AuditSessions::MAX);
        assert_eq!(sessions.get(0), None);
        sessions.started_shell(20, 99);
        assert_eq!(
            sessions.get(20),
            Some(AuditSession {
                opener: 21,
                shell: Some(99)
            })
        );
    }

    #[test]
    fn inference_names() {
        let both = Inferences::AUDIT_SESSION | Inferences::LAUNCHER;
        assert_eq!(
            both.names().collect::<Vec<_>>(),
            ["launcher", "audit_session"]
        );
        assert!(Inferences::NONE.is_empty());
    }
}
