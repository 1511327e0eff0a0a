//! Live events as rules see them: exec events ([`ExecFields`]) and acts on
//! another process ([`ActFields`]: reads of its layout files, writes into
//! its memory, calls into it), each an [`Event`] over an [`EventContext`].
//!
//! Contract: fields in the exec event are read in place; relations (parent,
//! leaders, the parent's executable) and user names are resolved only when a
//! rule reads them, once per event, and are shared by both kinds of event
//! ([`visit_common`]); the derived strings (command line, title) are built
//! on first use only. A non-matching event that fails on
//! `process.name` costs no allocation.

use std::ops::ControlFlow;

use super::eval::{Category, Event, Scalar};
use super::field::{Fact, Field};
use crate::audit::assemble::Credentials;
use crate::audit::assemble::{ExecEvent, MemoryAccess};
use crate::audit::execve::Argv;
use crate::process::EventContext;
use crate::process::at_read::{Basis, Reader};
use crate::process::host::{HostInfo, UserNames};
use crate::process::live::{LiveProcess, read_environ};
use crate::process::relative::Relation;
use crate::process::stat::TtyKind;
use crate::process::table::Program;
use crate::source::fanotify::ReadEvent;

/// The value a field has on every live event of a category: what rules
/// can be checked against at load ([`super::reach`]).
pub fn constant(category: Category, field: Field) -> Option<&'static [u8]> {
    Some(match (category, field) {
        (_, Field::HostOsType) => b"linux",
        (_, Field::EventKind) => b"event",
        (Category::Process, Field::EventCategory) => b"process",
        (Category::Process, Field::EventType) => b"start",
        (Category::Process, Field::EventAction) => b"exec",
        (Category::Process | Category::File, Field::EventOutcome) => b"success",
        (Category::File, Field::EventCategory) => b"file",
        (Category::Api, Field::EventCategory) => b"api",
        _ => return None,
    })
}

/// A live exec event with the host and user-name lookups it may need.
pub struct ExecFields<'c, 't> {
    event: &'c ExecEvent,
    ctx: &'c mut EventContext<'t>,
    host: &'c HostInfo,
    users: &'c mut UserNames,
    /// Built on first use; the inner `None` when the event has none.
    title: Option<Option<Vec<u8>>>,
    /// `/proc/<pid>/environ`, read on first use.
    environ: Option<Option<Argv>>,
}

impl<'c, 't> ExecFields<'c, 't> {
    pub fn new(
        event: &'c ExecEvent,
        ctx: &'c mut EventContext<'t>,
        host: &'c HostInfo,
        users: &'c mut UserNames,
    ) -> Self {
        ExecFields {
            event,
            ctx,
            host,
            users,
            title: None,
            environ: None,
        }
    }
}

/// `n` in decimal, in `buf`.
fn decimal(n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn one(visit: &mut dyn FnMut(Scalar<'_>) -> ControlFlow<()>, value: Option<Scalar<'_>>) -> bool {
    match value {
        Some(v) => {
            let _ = visit(v);
            true
        }
        None => false,
    }
}

fn keyword(bytes: Option<&[u8]>) -> Option<Scalar<'_>> {
    bytes.map(Scalar::Keyword)
}

/// What an event knows of its process's credentials (a read event's may
/// need procfs, so it is asked only for the fields that need it).
type Creds<'a> = &'a mut dyn FnMut() -> Credentials;

fn id(visit: &mut dyn FnMut(Scalar<'_>) -> ControlFlow<()>, id: Option<u32>) -> bool {
    let mut buf = [0u8; 10];
    one(visit, id.map(|id| Scalar::Keyword(decimal(id, &mut buf))))
}

fn user_name(
    visit: &mut dyn FnMut(Scalar<'_>) -> ControlFlow<()>,
    users: &mut UserNames,
    uid: Option<u32>,
) -> bool {
    let name = uid.and_then(|uid| users.name(uid));
    one(visit, keyword(name.map(str::as_bytes)))
}

fn group_name(
    visit: &mut dyn FnMut(Scalar<'_>) -> ControlFlow<()>,
    users: &mut UserNames,
    gid: Option<u32>,
) -> bool {
    let name = gid.and_then(|gid| users.group_name(gid));
    one(visit, keyword(name.map(str::as_bytes)))
}

fn each(visit: &mut dyn FnMut(Scalar<'_>) -> ControlFlow<()>, args: Option<&Argv>) -> bool {
    let Some(args) = args.filter(|a| !a.is_empty()) else {
        return false;
    };
    for arg in args.iter() {
        if visit(Scalar::Keyword(arg)).is_break() {
            break;
        }
    }
    true
}

/// A fact of a related process (parent, leaders).
fn visit_fact(
    ctx: &mut EventContext<'_>,
    relation: Relation,
    fact: Fact,
    visit: &mut dyn FnMut(Scalar<'_>) -> ControlFlow<()>,
) -> bool {
    let Some((relative, table)) = ctx.relative(relation) else {
        return false;
    };
    match fact {
        Fact::Executable => one(visit, keyword(relative.executable(table))),
        Fact::Args => each(visit, relative.args(table)),
        Fact::ArgsCount => one(
            visit,
            relative.args(table).map(|a| Scalar::Long(a.len() as i64)),
        ),
        Fact::CommandLine => one(visit, keyword(relative.command_line(table))),
        Fact::WorkingDirectory => one(visit, keyword(relative.working_directory(table))),
        Fact::Interactive => one(visit, relative.interactive(table).map(Scalar::Boolean)),
        Fact::UserId => id(visit, relative.credentials(table).euid),
        Fact::RealUserId => id(visit, relative.credentials(table).uid),
        Fact::GroupId => id(visit, relative.credentials(table).egid),
        Fact::RealGroupId => id(visit, relative.credentials(table).gid),
    }
}

/// Fields that mean the same for every live event: the host, the users and
/// groups, and the process's relations (parent, leaders), all from the
/// event's context. `creds` is called only for user and group fields.
fn visit_common(
    field: Field,
    ctx: &mut EventContext<'_>,
    host: &HostInfo,
    users: &mut UserNames,
    creds: Creds<'_>,
    visit: &mut dyn FnMut(Scalar<'_>) -> ControlFlow<()>,
) -> bool {
    if let Some((relation, fact)) = field.of_relative() {
        return visit_fact(ctx, relation, fact, visit);
    }
    match field {
        Field::HostOsType => one(
            visit,
            constant(Category::Process, field).map(Scalar::Keyword),
        ),
        Field::HostName => one(visit, Some(Scalar::Keyword(host.name.as_bytes()))),
        Field::ProcessUserId | Field::UserId => id(visit, creds().euid),
        Field::ProcessRealUserId | Field::UserRealId => id(visit, creds().uid),
        Field::ProcessSavedUserId => id(visit, creds().suid),
        Field::ProcessGroupId | Field::GroupId => id(visit, creds().egid),
        Field::ProcessRealGroupId | Field::GroupRealId => id(visit, creds().gid),
        Field::ProcessSavedGroupId => id(visit, creds().sgid),
        Field::ProcessUserName | Field::UserName => user_name(visit, users, creds().euid),
        Field::ProcessRealUserName | Field::UserRealName => user_name(visit, users, creds().uid),
        Field::ProcessGroupName | Field::GroupName => group_name(visit, users, creds().egid),
        Field::ProcessRealGroupName | Field::GroupRealName => group_name(visit, users, creds().gid),
        Field::ProcessParentPid => one(visit, ctx.ppid().map(|p| Scalar::Long(p.into()))),
        Field::ProcessParentName => one(visit, keyword(ctx.parent().map(|p| p.name.as_slice()))),
        Field::ProcessParentExecutable => one(visit, keyword(ctx.parent_executable())),
        Field::ProcessSessionLeaderPid => one(
            visit,
            ctx.session_leader().map(|s| Scalar::Long(s.pid.into())),
        ),
        Field::ProcessSessionLeaderName => one(
            visit,
            keyword(ctx.session_leader().map(|s| s.name.as_slice())),
        ),
        Field::ProcessEntryLeaderPid => one(
            visit,
            ctx.entry_leader().map(|e| Scalar::Long(e.pid.into())),
        ),
        Field::ProcessEntryLeaderName => one(
            visit,
            keyword(ctx.entry_leader().map(|e| e.name.as_slice())),
        ),
        Field::ProcessEntryLeaderType => one(
            visit,
            keyword(ctx.entry_leader().map(|e| e.kind.as_str().as_bytes())),
        ),
        Field::ProcessGroupLeaderPid => one(
            visit,
            ctx.group_leader().map(|g| Scalar::Long(g.pid.into())),
        ),
        Field::ProcessGroupLeaderName => one(
            visit,
            keyword(ctx.group_leader().map(|g| g.name.as_slice())),
        ),
        // The event's own fields, which its kind visits itself.
        _ => false,
    }
}

impl Event for ExecFields<'_, '_> {
    fn is_category(&self, category: Category) -> bool {
        category == Category::Process
    }

    fn visit(
        &mut self,
        field: Field,
        visit: &mut dyn FnMut(Scalar<'_>) -> ControlFlow<()>,
    ) -> bool {
        let event = self.event;
        match field {
            Field::EventKind
            | Field::EventCategory
            | Field::EventType
            | Field::EventAction
            | Field::EventOutcome => one(
                visit,
                constant(Category::Process, field).map(Scalar::Keyword),
            ),
            Field::ProcessPid => one(visit, Some(Scalar::Long(event.pid.into()))),
            Field::ProcessName => one(visit, Some(Scalar::Keyword(event.name()))),
            Field::ProcessExecutable => one(visit, keyword(event.exe.as_deref())),
            Field::ProcessArgs => each(visit, Some(&event.argv)),
            Field::ProcessArgsCount => one(visit, Some(Scalar::Long(event.argv.len() as i64))),
            Field::ProcessCommandLine => one(visit, Some(Scalar::Keyword(event.argv.joined()))),
            Field::ProcessWorkingDirectory => one(visit, keyword(event.cwd.as_deref())),
            Field::ProcessTitle => {
                let title = self.title.get_or_insert_with(|| event.title());
                one(visit, keyword(title.as_deref()))
            }
            Field::ProcessInteractive => one(visit, Some(Scalar::Boolean(event.tty.is_some()))),
            Field::ProcessEnvVars => {
                // A log has no environment, and this host's procfs holds
                // other processes than the log's.
                let live = !self.ctx.table().is_history();
                let pid = event.pid;
                let environ = self
                    .environ
                    .get_or_insert_with(|| live.then(|| read_environ(pid)).flatten());
                each(visit, environ.as_ref())
            }
            // The program this exec replaced in the same process (none for
            // a fresh fork, which ran only its parent's copy).
            Field::ProcessPreviousExecutable => {
                let previous = self.ctx.table().get(event.pid).and_then(|p| {
                    p.program_before_exec
                        .as_deref()
                        .map(|before| &before.exe[..])
                });
                one(visit, keyword(previous))
            }
            Field::ProcessPreviousArgs => {
                let previous = self
                    .ctx
                    .table()
                    .get(event.pid)
                    .and_then(|p| p.program_before_exec.as_deref()?.args.as_ref());
                each(visit, previous)
            }
            Field::FilePath
            | Field::FileName
            | Field::TargetPid
            | Field::TargetName
            | Field::TargetExecutable
            | Field::ReadSelf => false,
            _ => {
                let mut creds = || event.ids;
                visit_common(field, self.ctx, self.host, self.users, &mut creds, visit)
            }
        }
    }
}

/// What an actor did to a target, as the act's event says it: a read (or
/// write) fanotify saw, or a call audit saw (on the target's thread group).
#[derive(Clone, Copy)]
pub enum Act<'c> {
    File(&'c ReadEvent),
    Call(&'c MemoryAccess, u32),
}

impl Act<'_> {
    /// The process that acted (thread group id).
    pub fn actor(self) -> u32 {
        match self {
            Act::File(read) => read.pid,
            Act::Call(call, _) => call.caller.pid,
        }
    }

    /// The process acted on (thread group id).
    pub fn target(self) -> u32 {
        match self {
            Act::File(read) => read.target,
            Act::Call(_, target) => target,
        }
    }

    pub fn category(self) -> Category {
        match self {
            Act::File(_) => Category::File,
            Act::Call(..) => Category::Api,
        }
    }

    /// `event.type` and `event.action`.
    pub fn ecs(self) -> (&'static str, &'static str) {
        match self {
            Act::File(read) => read.access.ecs(),
            Act::Call(call, _) if call.changes_target() => ("change", call.call.name()),
            Act::Call(call, _) => ("access", call.call.name()),
        }
    }

    /// `event.outcome`: a read or write fanotify reports has happened.
    pub fn succeeded(self) -> bool {
        match self {
            Act::File(_) => true,
            Act::Call(call, _) => call.success,
        }
    }
}

/// An act on another process (fanotify's reads and writes of its layout
/// files, audit's calls into its memory) as rules see it: a `file` or
/// `api` event whose process is the actor, as
/// [`crate::process::at_read::identify`] named it (the program it ran at
/// the act); what that leaves unknown (its terminal, environment,
/// credentials) is read lazily from procfs, except a call's credentials,
/// which its SYSCALL record gives.
pub struct ActFields<'c, 't> {
    pub act: Act<'c>,
    pub ctx: &'c mut EventContext<'t>,
    pub host: &'c HostInfo,
    pub users: &'c mut UserNames,
    pub target: LiveProcess,
    actor: LiveProcess,
    known: Reader,
}

impl<'c, 't> ActFields<'c, 't> {
    pub fn new(
        act: Act<'c>,
        known: Reader,
        ctx: &'c mut EventContext<'t>,
        host: &'c HostInfo,
        users: &'c mut UserNames,
    ) -> Self {
        let process = if ctx.table().is_history() {
            LiveProcess::elsewhere
        } else {
            LiveProcess::new
        };
        ActFields {
            actor: process(act.actor()),
            target: process(act.target()),
            act,
            ctx,
            host,
            users,
            known,
        }
    }

    /// `process.name`: the name the actor was exec'd as, else its comm.
    /// The actor's pid namespace and its pid there, when not the host's.
    pub fn actor_namespace_pid(&mut self) -> Option<(u64, u32)> {
        self.actor.namespace_pid()
    }

    pub fn name(&mut self) -> Option<&[u8]> {
        match (&self.known.name, self.act) {
            (Some(name), _) => Some(name),
            (None, Act::Call(call, _)) if call.caller.comm.is_some() => call.caller.comm.as_deref(),
            (None, _) => self.actor.comm(),
        }
    }

    pub fn executable(&mut self) -> Option<&[u8]> {
        match (&self.known.exe, self.act) {
            (Some(exe), _) => Some(exe),
            (None, Act::Call(call, _)) if call.caller.exe.is_some() => call.caller.exe.as_deref(),
            (None, _) => self.actor.exe(),
        }
    }

    pub fn args(&mut self) -> Option<&Argv> {
        match self.known.args {
            Some(ref args) => Some(args),
            None => self.actor.args(),
        }
    }

    pub fn cwd(&mut self) -> Option<&[u8]> {
        match self.known.cwd {
            Some(ref cwd) => Some(cwd),
            None => self.actor.cwd(),
        }
    }

    pub fn uid(&mut self) -> Option<u32> {
        match self.act {
            Act::Call(call, _) => call.caller.ids.euid,
            Act::File(_) => self.known.euid.or_else(|| self.actor.uid()),
        }
    }

    pub fn command_line(&mut self) -> Option<&[u8]> {
        self.args().map(Argv::joined)
    }

    /// Where the actor's identity came from.
    pub fn reader_basis(&self) -> Basis {
        self.known.basis
    }

    /// The actor's program before its last exec, if that may have made
    /// the act instead.
    pub fn reader_in_doubt(&self) -> Option<&Program> {
        self.known.in_doubt.as_deref()
    }

    /// The actor acted on itself.
    pub fn is_self(&self) -> bool {
        self.act.target() == self.act.actor()
    }
}

impl Event for ActFields<'_, '_> {
    fn is_category(&self, category: Category) -> bool {
        category == self.act.category()
    }

    fn visit(
        &mut self,
        field: Field,
        visit: &mut dyn FnMut(Scalar<'_>) -> ControlFlow<()>,
    ) -> bool {
        match field {
            Field::EventKind | Field::EventCategory => one(
                visit,
                constant(self.act.category(), field).map(Scalar::Keyword),
            ),
            Field::EventType => one(visit, Some(Scalar::Keyword(self.act.ecs().0.as_bytes()))),
            Field::EventAction => one(visit, Some(Scalar::Keyword(self.act.ecs().1.as_bytes()))),
            Field::EventOutcome => one(visit, Some(Scalar::Keyword(outcome(self.act.succeeded())))),
            Field::FilePath => match self.act {
                Act::File(read) => one(visit, Some(Scalar::Keyword(&read.path))),
                Act::Call(..) => false,
            },
            Field::FileName => match self.act {
                Act::File(read) => one(visit, Some(Scalar::Keyword(read.layout.name().as_bytes()))),
                Act::Call(..) => false,
            },
            Field::PtraceRequest => match self.act {
                Act::Call(call, _) => one(
                    visit,
                    call.request.map(|r| Scalar::Keyword(r.name().as_bytes())),
                ),
                Act::File(_) => false,
            },
            Field::ProcessPid => one(visit, Some(Scalar::Long(self.act.actor().into()))),
            Field::ProcessName => {
                let name = self.name();
                one(visit, keyword(name))
            }
            Field::ProcessExecutable => {
                let exe = self.executable();
                one(visit, keyword(exe))
            }
            Field::ProcessArgs => {
                let args = self.args();
                each(visit, args)
            }
            Field::ProcessArgsCount => {
                let count = self.args().map(|a| Scalar::Long(a.len() as i64));
                one(visit, count)
            }
            Field::ProcessCommandLine => {
                let line = self.command_line();
                one(visit, keyword(line))
            }
            Field::ProcessWorkingDirectory => {
                let cwd = self.cwd();
                one(visit, keyword(cwd))
            }
            Field::ProcessTitle | Field::ProcessPreviousExecutable | Field::ProcessPreviousArgs => {
                false
            }
            Field::ProcessInteractive => {
                let tty = self.actor.tty();
                one(visit, tty.map(|t| Scalar::Boolean(t != TtyKind::None)))
            }
            Field::ProcessEnvVars => {
                let environ = self.actor.environ();
                each(visit, environ)
            }
            Field::TargetPid => one(visit, Some(Scalar::Long(self.act.target().into()))),
            Field::TargetName => {
                let name = self.target.comm();
                one(visit, keyword(name))
            }
            Field::TargetExecutable => {
                let exe = self.target.exe();
                one(visit, keyword(exe))
            }
            Field::ReadSelf => match self.act {
                Act::File(_) => one(visit, Some(Scalar::Boolean(self.is_self()))),
                Act::Call(..) => false,
            },
            Field::TargetSelf => one(visit, Some(Scalar::Boolean(self.is_self()))),
            _ => {
                let ActFields {
                    ctx,
                    host,
                    users,
                    known,
                    actor,
                    act,
                    ..
                } = self;
                // A call's own record; else procfs while the actor lives,
                // else the euid of its exec.
                let mut creds = || match act {
                    Act::Call(call, _) => call.caller.ids,
                    Act::File(_) => actor.credentials().unwrap_or(Credentials {
                        euid: known.euid,
                        ..Credentials::default()
                    }),
                };
                visit_common(field, ctx, host, users, &mut creds, visit)
            }
        }
    }
}

fn outcome(succeeded: bool) -> &'static [u8] {
    if succeeded { b"success" } else { b"failure" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_formatting() {
        let mut buf = [0u8; 10];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(1000, &mut buf), b"1000");
        assert_eq!(decimal(u32::MAX, &mut buf), b"4294967295");
    }
}
