//! mapwatch's session with the kernel audit subsystem.
//!
//! Contract:
//! - [`AuditSession::start`] refuses while another live mapwatch owns rules,
//!   saves the kernel's audit status, deletes stale rules of ours (a crashed
//!   run's: keyed `mapwatch`, or our record-type exclusions, known by their
//!   shape), sets the backlog limit, enables audit, registers our pid on the
//!   record socket, then adds a `never` rule for our own pid (prepended) and
//!   `always,exit` rules for execve, execveat and setsid on every ABI of this
//!   machine, all keyed `mapwatch`, and, as the only consumer, the exclusions
//!   of record types we never read. Beside another daemon (`auto`,
//!   `multicast`, plugin) only our rules are added and removed.
//! - [`AuditSession::stop`] (or dropping the session, e.g. on a panic) deletes
//!   our rules, unregisters and restores the saved status. The original status
//!   is also written to a state file, so that a run following a SIGKILL
//!   restores what the machine had before the crashed run, not what it left.
//! - [`AuditSession::reinstall_removed_rules`] puts our rules back when
//!   someone else deleted any of them.
//! - Status and rule requests go on a control socket of their own, so queued
//!   records can never fill the socket a reply must arrive on.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caps::Capability;
use netlink_packet_audit::{AuditMessage, StatusMessage};
use netlink_sys::{Socket, protocols::NETLINK_AUDIT};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use serde::{Deserialize, Serialize};

use super::rules::{RULE_KEY, UNUSED_RECORD_TYPES, exclude_rule, keyed_rules, self_excluded_pid};
use super::socket::{AUDIT_REPLACE, AuditSocket};
use super::{AuditError, AuditMode, Backpressure, kernel, kernel_needing};
use crate::process::live::LiveProcess;
use crate::source::RecordBatch;

const AUDIT_STATUS_ENABLED: u32 = 0x1;
const AUDIT_STATUS_PID: u32 = 0x4;
const AUDIT_STATUS_BACKLOG_LIMIT: u32 = 0x10;
const AUDIT_STATUS_BACKLOG_WAIT_TIME: u32 = 0x20;

/// The kernel settings mapwatch changes, as they were before it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedStatus {
    /// The mapwatch process that saved this (to tell a crashed run's file).
    pub saved_by: u32,
    pub enabled: u32,
    pub backlog_limit: u32,
    /// Absent from the state file of a version that did not change it.
    #[serde(default)]
    pub backlog_wait_time: Option<u32>,
}

/// How mapwatch gets records (`[audit] mode`).
/// Settings of the audit session.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub mode: AuditMode,
    pub backpressure: Backpressure,
    pub backlog_limit: u32,
    pub receive_buffer: usize,
    pub state_file: PathBuf,
}

/// How [`AuditSession::stop`] went.
pub struct Stopped {
    pub restored: io::Result<()>,
    /// The kernel's `lost` counter since the session began, read after the
    /// last change mapwatch made; `None` if the status could not be read.
    pub lost_since_start: Option<u32>,
}

/// Our registration with the kernel, undone on [`AuditSession::stop`] or drop.
pub struct AuditSession {
    control: AuditSocket,
    saved: SavedStatus,
    state_file: PathBuf,
    active: bool,
    registered: bool,
    /// Beside another daemon (as a multicast reader or as its plugin): its
    /// pid, 0 if none is registered yet. Its registration and status are not
    /// ours to change or restore.
    pub beside_daemon: Option<u32>,
    pub stale_rules_removed: usize,
    pub rules_installed: usize,
    /// As the only consumer of records, it excludes those it never reads.
    excludes_record_types: bool,
    /// The kernel's `lost` counter when the session began.
    pub lost_at_start: u32,
}

/// The socket records arrive on (registered, or a multicast member), plus
/// any records that arrived while registration was being acknowledged.
pub struct RecordSocket {
    pub(super) socket: Socket,
    /// Multicast copies carry a correct `nlmsg_len`; unicast ones don't.
    pub(super) multicast: bool,
    pub early_records: RecordBatch,
}

/// `AUDIT_NLGRP_READLOG`: the group every audit record is copied to.
const AUDIT_NLGRP_READLOG: u32 = 1;

fn join_multicast(receive_buffer: usize) -> io::Result<RecordSocket> {
    let mut socket = Socket::new(NETLINK_AUDIT)?;
    socket.bind_auto()?;
    if setsockopt(&socket, sockopt::RcvBufForce, &receive_buffer).is_err() {
        setsockopt(&socket, sockopt::RcvBuf, &receive_buffer).map_err(io::Error::from)?;
    }
    socket.add_membership(AUDIT_NLGRP_READLOG)?;
    socket.set_non_blocking(true)?;
    Ok(RecordSocket {
        socket,
        multicast: true,
        early_records: RecordBatch::default(),
    })
}

impl AuditSession {
    pub fn start(options: &SessionOptions) -> Result<(AuditSession, RecordSocket), AuditError> {
        require_capability(Capability::CAP_AUDIT_CONTROL)?;
        let mut control = AuditSocket::open().map_err(kernel("opening the control socket"))?;
        let status = control
            .status()
            .map_err(kernel("reading the audit status"))?;
        if status.enabled == 2 {
            return Err(AuditError::Locked);
        }
        let me = std::process::id();
        refuse_beside_another_mapwatch(&mut control, me)?;
        let other_daemon = (status.pid != 0 && status.pid != me && process_alive(status.pid))
            .then_some(status.pid);
        match (options.mode, other_daemon) {
            (AuditMode::Unicast, Some(pid)) => return Err(daemon_running(pid)),
            (AuditMode::Multicast, daemon) => {
                return Self::start_multicast(control, status, daemon, options);
            }
            (AuditMode::Auto, Some(pid)) => {
                return Self::start_multicast(control, status, Some(pid), options);
            }
            _ => {}
        }
        let saved = original_status(&options.state_file, &status, me)?;
        write_state_file(&options.state_file, &saved)?;

        let mut session = Self::begin(
            control,
            saved,
            options.state_file.clone(),
            None,
            status.lost,
        )?;

        let mut enable = StatusMessage::new();
        enable.mask = AUDIT_STATUS_ENABLED | AUDIT_STATUS_BACKLOG_LIMIT;
        enable.enabled = 1;
        enable.backlog_limit = options.backlog_limit;
        if options.backpressure == Backpressure::Kernel {
            enable.mask |= AUDIT_STATUS_BACKLOG_WAIT_TIME;
            enable.backlog_wait_time = 0;
        }
        session
            .control
            .set_status(enable)
            .map_err(kernel("enabling audit and setting backlog_limit"))?;

        let records = register(me, options.receive_buffer).map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) => daemon_running(status.pid),
            _ => kernel("registering as the audit daemon")(e),
        })?;
        session.registered = true;
        session.add_rules(me)?;
        session.exclude_unused_record_types()?;
        Ok((session, records))
    }

    /// Beside a registered daemon (auditd): join the multicast group; add
    /// and later remove only our own rules; leave the daemon's registration,
    /// audit status and rules alone.
    fn start_multicast(
        control: AuditSocket,
        status: StatusMessage,
        daemon: Option<u32>,
        options: &SessionOptions,
    ) -> Result<(AuditSession, RecordSocket), AuditError> {
        require_capability(Capability::CAP_AUDIT_READ)?;
        let mut session = Self::beside_daemon(control, status, daemon)?;
        let records = join_multicast(options.receive_buffer).map_err(kernel_needing(
            "joining the audit multicast group",
            Capability::CAP_AUDIT_READ,
        ))?;
        session.add_rules(std::process::id())?;
        Ok((session, records))
    }

    /// As auditd's plugin: records come from auditd on stdin, so only our
    /// rules are ours to add and remove (auditd's may not audit execve).
    pub fn start_for_plugin() -> Result<AuditSession, AuditError> {
        require_capability(Capability::CAP_AUDIT_CONTROL)?;
        let mut control = AuditSocket::open().map_err(kernel("opening the control socket"))?;
        let status = control
            .status()
            .map_err(kernel("reading the audit status"))?;
        let daemon = (status.pid != 0).then_some(status.pid);
        refuse_beside_another_mapwatch(&mut control, std::process::id())?;
        let mut session = Self::beside_daemon(control, status, daemon)?;
        session.add_rules(std::process::id())?;
        Ok(session)
    }

    fn beside_daemon(
        control: AuditSocket,
        status: StatusMessage,
        daemon: Option<u32>,
    ) -> Result<AuditSession, AuditError> {
        if status.enabled == 0 {
            tracing::warn!(
                "audit is disabled (enabled=0): nothing arrives until the audit daemon enables it"
            );
        }
        let saved = SavedStatus {
            saved_by: std::process::id(),
            enabled: status.enabled,
            backlog_limit: status.backlog_limit,
            backlog_wait_time: None,
        };
        let beside = Some(daemon.unwrap_or(0));
        Self::begin(control, saved, PathBuf::new(), beside, status.lost)
    }

    /// A session on `control`, with the stale rules of ours deleted.
    fn begin(
        control: AuditSocket,
        saved: SavedStatus,
        state_file: PathBuf,
        beside_daemon: Option<u32>,
        lost_at_start: u32,
    ) -> Result<AuditSession, AuditError> {
        let mut session = AuditSession {
            control,
            saved,
            state_file,
            active: true,
            registered: false,
            beside_daemon,
            stale_rules_removed: 0,
            rules_installed: 0,
            excludes_record_types: false,
            lost_at_start,
        };
        session.stale_rules_removed = session
            .control
            .delete_our_rules()
            .map_err(kernel("deleting stale mapwatch rules"))?;
        Ok(session)
    }

    fn add_rules(&mut self, me: u32) -> Result<(), AuditError> {
        self.rules_installed = 0;
        for rule in keyed_rules(me) {
            self.control.add_rule(rule).map_err(kernel(
                "adding the self-exclusion, execve/setsid and PROCMAP_QUERY rules",
            ))?;
            self.rules_installed += 1;
        }
        Ok(())
    }

    /// As the only consumer of records (unicast), asks the kernel not to
    /// produce the record types mapwatch never reads: fewer records to
    /// format, queue, copy and receive per exec. Not beside another daemon,
    /// whose log wants them (auditd ends its events at EOE).
    ///
    /// The exclusions carry no key but a shape of their own
    /// ([`exclude_rule`]), so they are deleted with the keyed rules, at stop
    /// or by the next start after a crash, and an administrator's own
    /// exclusion of the same type is never touched.
    fn exclude_unused_record_types(&mut self) -> Result<(), AuditError> {
        for record_type in UNUSED_RECORD_TYPES {
            self.control
                .add_rule(exclude_rule(record_type))
                .map_err(kernel("adding the record-type exclusions"))?;
            self.rules_installed += 1;
        }
        self.excludes_record_types = true;
        Ok(())
    }

    /// Puts back our rules that someone removed (`auditctl -D`); returns
    /// how many were missing. Each rule is added again as it was first
    /// added (the self-exclusion prepended, so it stays first); the kernel
    /// answers EEXIST for the appended ones still there. Nothing is deleted: the
    /// remover may still be working through its own list of rules
    /// (`auditctl -D` deletes what it listed, and stops at the first rule
    /// it finds gone, leaving auditd's rules file unloaded).
    pub fn reinstall_removed_rules(&mut self) -> Result<usize, AuditError> {
        if !self.active {
            return Ok(0);
        }
        let me = std::process::id();
        // A prepended rule is added again even when an identical one is
        // there (no EEXIST for it), so the self-exclusion is looked for.
        let listed = self
            .control
            .list_rules()
            .map_err(kernel("listing the audit rules"))?;
        let has_self_exclusion = listed
            .iter()
            .any(|rule| self_excluded_pid(rule) == Some(me));
        let mut rules = keyed_rules(me);
        if has_self_exclusion {
            rules.remove(0);
        }
        if self.excludes_record_types {
            rules.extend(UNUSED_RECORD_TYPES.map(exclude_rule));
        }
        let mut missing = 0;
        for rule in rules {
            match self.control.add_rule(rule) {
                Ok(()) => missing += 1,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(kernel("reinstalling mapwatch's audit rules")(e)),
            }
        }
        Ok(missing)
    }

    /// Reads the kernel's counters (lost, backlog) on the control socket.
    pub fn kernel_status(&mut self) -> io::Result<StatusMessage> {
        self.control.status()
    }

    /// Deletes our rules, unregisters and restores the saved status; then
    /// reads the kernel's `lost` counter once more, so that records lost
    /// while stopping (the rule deletions' CONFIG_CHANGE records under a full
    /// backlog) are counted too.
    pub fn stop(mut self) -> Stopped {
        let restored = self.restore();
        let lost_since_start = self
            .control
            .status()
            .ok()
            .map(|status| status.lost.wrapping_sub(self.lost_at_start));
        Stopped {
            restored,
            lost_since_start,
        }
    }

    fn restore(&mut self) -> io::Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        let rules = self.control.delete_our_rules();
        if self.beside_daemon.is_some() {
            return rules.map(|_| ());
        }
        // Only the registered daemon may unregister (the kernel says EACCES
        // to anyone else): never touch a registration that isn't ours.
        let unregistered = if self.registered {
            let mut unregister = StatusMessage::new();
            unregister.mask = AUDIT_STATUS_PID;
            unregister.pid = 0;
            self.control.set_status(unregister)
        } else {
            Ok(())
        };
        let mut original = StatusMessage::new();
        original.mask = AUDIT_STATUS_ENABLED | AUDIT_STATUS_BACKLOG_LIMIT;
        original.enabled = self.saved.enabled;
        original.backlog_limit = self.saved.backlog_limit;
        if let Some(wait) = self.saved.backlog_wait_time {
            original.mask |= AUDIT_STATUS_BACKLOG_WAIT_TIME;
            original.backlog_wait_time = wait;
        }
        let restored = self.control.set_status(original);
        rules?;
        unregistered?;
        restored?;
        match fs::remove_file(&self.state_file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for AuditSession {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            tracing::error!(
                "restoring the kernel audit state failed: {e}; the next start of mapwatch deletes its rules, or run `auditctl -D -k {RULE_KEY}`, delete its `-a never,exclude -F msgtype=... -F uid>=0` rules, and check `auditctl -s`"
            );
        }
    }
}

/// How long a start waits for another mapwatch to finish stopping: auditd
/// restarting its plugins starts the new one while the old one may still
/// be removing its rules.
const OTHER_MAPWATCH_GRACE: Duration = Duration::from_secs(5);

/// Every mapwatch's first rule is `never,exit -F pid=ITS_PID -k mapwatch`
/// ([`self_exclusion_rule`]): a live pid there other than ours is a running
/// mapwatch, whose rules a start would take for a crashed run's.
fn refuse_beside_another_mapwatch(control: &mut AuditSocket, me: u32) -> Result<(), AuditError> {
    let rules = control
        .list_rules()
        .map_err(kernel("listing the audit rules"))?;
    let owner = rules
        .iter()
        .filter_map(self_excluded_pid)
        .find(|pid| *pid != me && process_alive(*pid));
    let Some(pid) = owner else {
        return Ok(());
    };
    let deadline = Instant::now() + OTHER_MAPWATCH_GRACE;
    while process_alive(pid) {
        if Instant::now() >= deadline {
            return Err(AuditError::AnotherMapwatch(pid));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn daemon_running(pid: u32) -> AuditError {
    let name = LiveProcess::new(pid)
        .comm()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_else(|| "unknown".into());
    AuditError::DaemonRunning { pid, name }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// What to restore at exit: the state file of a crashed run if there is one
/// (its saver is gone), otherwise the status as it is now.
fn original_status(path: &Path, now: &StatusMessage, me: u32) -> Result<SavedStatus, AuditError> {
    let crashed = fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<SavedStatus>(&text).ok())
        .filter(|saved| saved.saved_by != me && !process_alive(saved.saved_by));
    if let Some(saved) = crashed {
        tracing::warn!(
            "a previous mapwatch (pid {}) did not shut down cleanly; will restore the audit status it saved (enabled={}, backlog_limit={})",
            saved.saved_by,
            saved.enabled,
            saved.backlog_limit
        );
        return Ok(SavedStatus {
            saved_by: me,
            ..saved
        });
    }
    Ok(SavedStatus {
        saved_by: me,
        enabled: now.enabled,
        backlog_limit: now.backlog_limit,
        backlog_wait_time: Some(now.backlog_wait_time),
    })
}

fn write_state_file(path: &Path, saved: &SavedStatus) -> Result<(), AuditError> {
    let err = |source| AuditError::StateFile {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let text = serde_json::to_string(saved)
        .map_err(io::Error::other)
        .map_err(err)?;
    fs::write(path, text).map_err(err)
}

/// Opens the record socket and registers it as the audit daemon.
fn register(pid: u32, receive_buffer: usize) -> io::Result<RecordSocket> {
    let mut socket = AuditSocket::open()?;
    // Larger than the default so bursts wait in the kernel, not get lost.
    if setsockopt(&socket.socket, sockopt::RcvBufForce, &receive_buffer).is_err() {
        setsockopt(&socket.socket, sockopt::RcvBuf, &receive_buffer).map_err(io::Error::from)?;
    }
    let mut register = StatusMessage::new();
    register.mask = AUDIT_STATUS_PID;
    register.pid = pid;
    let mut early = RecordBatch::default();
    socket.request_ack(AuditMessage::SetStatus(register), &mut |t, text| {
        if t != AUDIT_REPLACE {
            early.push(t, text);
        }
    })?;
    socket.socket.set_non_blocking(true)?;
    Ok(RecordSocket {
        socket: socket.socket,
        multicast: false,
        early_records: early,
    })
}

/// Checks the effective capability set, to fail with the capability's name
/// rather than the kernel's bare EPERM.
fn require_capability(cap: Capability) -> Result<(), AuditError> {
    if crate::privileges::has_effective(cap) {
        Ok(())
    } else {
        Err(AuditError::MissingCapability(cap))
    }
}
