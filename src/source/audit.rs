//! The kernel audit subsystem over netlink: status, registration as the audit
//! daemon, our rules, and the record socket.
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
//!   records can never fill the socket a reply must arrive on. An EPERM or
//!   ECONNREFUSED says who refused.
//! - [`RecordReader`] reads the record socket without blocking; with
//!   [`Backpressure::Userspace`], [`spawn_record_reader`] does so on a thread
//!   that drops and counts whole batches when the pipeline's queue is full.
//!   ENOBUFS is counted, not fatal.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TrySendError;
use std::time::{Duration, Instant};

use caps::Capability;
use netlink_packet_audit::{
    AuditMessage, RuleAction, RuleField, RuleFieldFlags, RuleFlags, RuleMessage, RuleSyscalls,
    StatusMessage,
};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_AUDIT};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, recv, setsockopt, sockopt};
use serde::{Deserialize, Serialize};

use super::RecordBatch;
use super::queue::Sender;
use crate::audit::syscall::{AbiSyscalls, native_syscalls};

/// The key on every rule mapwatch installs, and how stale ones are found.
pub const RULE_KEY: &str = "mapwatch";

const AUDIT_STATUS_ENABLED: u32 = 0x1;
const AUDIT_STATUS_PID: u32 = 0x4;
const AUDIT_STATUS_BACKLOG_LIMIT: u32 = 0x10;
const AUDIT_STATUS_BACKLOG_WAIT_TIME: u32 = 0x20;
const AUDIT_FILTER_TASK: u32 = 0x1;
const AUDIT_FILTER_EXIT: u32 = 0x4;
const AUDIT_FILTER_PREPEND: u32 = 0x10;
/// Kernel audit record types start here; lower ones are netlink and audit
/// control messages (acks, status replies).
const FIRST_RECORD_TYPE: u16 = 1100;
const AUDIT_REPLACE: u16 = 1329;
const NLMSG_HDRLEN: usize = 16;
/// MAX_AUDIT_MESSAGE_LENGTH is 8970; leave room for the header.
const RECORD_BUF_LEN: usize = 16 * 1024;
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the audit session could not be set up.
#[derive(Debug)]
pub enum AuditError {
    MissingCapability(Capability),
    Locked,
    DaemonRunning {
        pid: u32,
        name: String,
    },
    /// A live mapwatch owns rules keyed `mapwatch`: starting would delete
    /// them (they look stale to any other run).
    AnotherMapwatch(u32),
    Kernel {
        what: &'static str,
        source: io::Error,
        /// Who refused, when the kernel said EPERM or ECONNREFUSED.
        cause: Option<String>,
    },
    StateFile {
        path: PathBuf,
        source: io::Error,
    },
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditError::MissingCapability(cap) => write!(
                f,
                "missing capability {cap}: mapwatch must run as root (or with {cap}) to register as the audit daemon and install its rules"
            ),
            AuditError::Locked => f.write_str(
                "the kernel's audit configuration is locked (enabled=2, `auditctl -e 2`): no rule can be added until reboot",
            ),
            AuditError::DaemonRunning { pid, name } => write!(
                f,
                "another audit daemon is registered with the kernel: pid {pid} ({name}); stop it first (e.g. `systemctl stop auditd`)"
            ),
            AuditError::AnotherMapwatch(pid) => write!(
                f,
                "another mapwatch (pid {pid}) is running with its audit rules installed; stop it first (e.g. `systemctl stop mapwatch`): two would delete each other's rules"
            ),
            AuditError::Kernel {
                what,
                source,
                cause: None,
            } => write!(f, "audit netlink: {what}: {source}"),
            AuditError::Kernel {
                what,
                source,
                cause: Some(cause),
            } => write!(f, "audit netlink: {what}: {source}: {cause}"),
            AuditError::StateFile { path, source } => {
                write!(f, "audit state file {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for AuditError {}

fn kernel(what: &'static str) -> impl FnOnce(io::Error) -> AuditError {
    kernel_needing(what, Capability::CAP_AUDIT_CONTROL)
}

/// A kernel error of a request that needs `cap`, with who refused it.
fn kernel_needing(what: &'static str, cap: Capability) -> impl FnOnce(io::Error) -> AuditError {
    move |source| {
        let cause = match source.raw_os_error() {
            Some(libc::EPERM) => Some(crate::privileges::eperm_cause(what, cap)),
            // audit_netlink_ok(): only the initial user and pid namespaces.
            Some(libc::ECONNREFUSED) => Some(
                "the kernel takes audit requests only from the initial user and pid namespaces (not from a container, or a unit with PrivateUsers= or PrivatePIDs=)".to_owned(),
            ),
            _ => None,
        };
        AuditError::Kernel {
            what,
            source,
            cause,
        }
    }
}

/// A netlink audit socket speaking request/reply.
pub struct AuditSocket {
    socket: Socket,
    seq: u32,
}

impl AuditSocket {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_AUDIT)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        setsockopt(
            &socket,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0),
        )
        .map_err(io::Error::from)?;
        Ok(AuditSocket { socket, seq: 0 })
    }

    fn send(&mut self, message: AuditMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// Receives the replies to request `seq` until `done` says so. Messages
    /// that are records (on the registered socket) go to `on_record`.
    fn replies(
        &mut self,
        seq: u32,
        on_record: &mut dyn FnMut(u16, &[u8]),
        mut done: impl FnMut(&NetlinkPayload<AuditMessage>) -> bool,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let len = recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(io::Error::from)?;
            let mut offset = 0;
            while offset + NLMSG_HDRLEN <= len {
                let (msg_len, msg_type, msg_seq) = header_fields(&buf[offset..len]);
                if msg_type >= FIRST_RECORD_TYPE && msg_seq != seq {
                    // A record: the unicast framing omits the header from nlmsg_len.
                    let end = (offset + NLMSG_HDRLEN + msg_len).min(len);
                    on_record(msg_type, &buf[offset + NLMSG_HDRLEN..end]);
                    offset = align4(end);
                    continue;
                }
                let end = (offset + msg_len.max(NLMSG_HDRLEN)).min(len);
                let message = NetlinkMessage::<AuditMessage>::deserialize(&buf[offset..end]);
                offset = align4(end);
                let Ok(message) = message else { continue };
                if message.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(err) = &message.payload
                    && let Some(code) = err.code
                {
                    return Err(io::Error::from_raw_os_error(-code.get()));
                }
                if done(&message.payload) {
                    return Ok(());
                }
            }
        }
    }

    /// Sends a request that only expects an acknowledgement.
    fn request_ack(
        &mut self,
        message: AuditMessage,
        on_record: &mut dyn FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        let seq = self.send(message, NLM_F_REQUEST | NLM_F_ACK)?;
        self.replies(seq, on_record, |p| matches!(p, NetlinkPayload::Error(_)))
    }

    pub fn status(&mut self) -> io::Result<StatusMessage> {
        let seq = self.send(AuditMessage::GetStatus(None), NLM_F_REQUEST)?;
        let mut status = None;
        self.replies(seq, &mut |_, _| {}, |p| {
            if let NetlinkPayload::InnerMessage(AuditMessage::GetStatus(Some(s))) = p {
                status = Some(s.clone());
                true
            } else {
                false
            }
        })?;
        status.ok_or_else(|| io::Error::other("no status in the kernel's reply"))
    }

    pub fn set_status(&mut self, status: StatusMessage) -> io::Result<()> {
        self.request_ack(AuditMessage::SetStatus(status), &mut |_, _| {})
    }

    pub fn list_rules(&mut self) -> io::Result<Vec<RuleMessage>> {
        let seq = self.send(AuditMessage::ListRules(None), NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut rules = Vec::new();
        self.replies(seq, &mut |_, _| {}, |p| match p {
            NetlinkPayload::InnerMessage(AuditMessage::ListRules(Some(rule))) => {
                rules.push(rule.clone());
                false
            }
            NetlinkPayload::Done(_) => true,
            _ => false,
        })?;
        Ok(rules)
    }

    pub fn add_rule(&mut self, rule: RuleMessage) -> io::Result<()> {
        self.request_ack(AuditMessage::AddRule(rule), &mut |_, _| {})
    }

    pub fn delete_rule(&mut self, rule: RuleMessage) -> io::Result<()> {
        self.request_ack(AuditMessage::DelRule(rule), &mut |_, _| {})
    }

    /// Record types that mapwatch's exclusions (see [`UNUSED_RECORD_TYPES`])
    /// drop right now.
    pub fn excluded_record_types(&mut self) -> io::Result<Vec<u32>> {
        Ok(self
            .list_rules()?
            .iter()
            .filter_map(our_excluded_type)
            .collect())
    }

    /// Deletes every rule of ours: those carrying our key and our
    /// record-type exclusions (known by their shape); returns how many.
    pub fn delete_our_rules(&mut self) -> io::Result<usize> {
        let stale: Vec<RuleMessage> = self.list_rules()?.into_iter().filter(is_ours).collect();
        let count = stale.len();
        for rule in stale {
            match self.delete_rule(rule) {
                // Deleted meanwhile by someone else (`auditctl -D`).
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                other => other?,
            }
        }
        Ok(count)
    }
}

fn header_fields(buf: &[u8]) -> (usize, u16, u32) {
    let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let msg_type = u16::from_ne_bytes([buf[4], buf[5]]);
    let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
    (len, msg_type, seq)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// True for the rules mapwatch installs: keyed `mapwatch`, or one of its
/// unkeyed record-type exclusions.
pub fn is_ours(rule: &RuleMessage) -> bool {
    has_our_key(rule) || our_excluded_type(rule).is_some()
}

/// True for rules whose key list includes ours (auditctl joins several keys
/// with \x01).
pub fn has_our_key(rule: &RuleMessage) -> bool {
    rule.fields.iter().any(|(field, _)| {
        matches!(field, RuleField::Filterkey(key) if key.split('\x01').any(|k| k == RULE_KEY))
    })
}

fn exit_rule(action: RuleAction, prepend: bool) -> RuleMessage {
    let mut rule = RuleMessage::new();
    let flags = AUDIT_FILTER_EXIT | if prepend { AUDIT_FILTER_PREPEND } else { 0 };
    rule.flags = RuleFlags::from(flags);
    rule.action = action;
    rule
}

/// Record types of an exec event that mapwatch never reads: EOE (PROCTITLE,
/// always the last record of a syscall event, ends it) and BPRM_FCAPS
/// (file capabilities of the new program).
pub const UNUSED_RECORD_TYPES: [u32; 2] = [1320, 1321];

/// `AUDIT_FILTER_EXCLUDE`: the list that drops records by type.
const AUDIT_FILTER_EXCLUDE: u32 = 0x05;

/// `-a never,exclude -F msgtype=TYPE -F uid>=0`. The kernel ignores an
/// exclude rule that carries a key (and every exclude rule after it), so
/// this one is marked by its shape instead: `uid>=0` holds for every
/// record (uids compare unsigned), so it changes nothing the rule does, but
/// tells it from an administrator's `-a never,exclude -F msgtype=EOE`, and
/// lets any later run find and delete it, state file or not.
fn exclude_rule(record_type: u32) -> RuleMessage {
    let mut rule = RuleMessage::new();
    rule.flags = RuleFlags::from(AUDIT_FILTER_EXCLUDE);
    rule.action = RuleAction::Never;
    rule.fields
        .push((RuleField::Msgtype(record_type), RuleFieldFlags::Equal));
    rule.fields
        .push((RuleField::Uid(0), RuleFieldFlags::GreaterThanOrEqual));
    rule
}

/// The record type `rule` drops, if it is one of our exclusions: exactly
/// the shape of [`exclude_rule`], for one of [`UNUSED_RECORD_TYPES`].
fn our_excluded_type(rule: &RuleMessage) -> Option<u32> {
    let list = u32::from(rule.flags) & !AUDIT_FILTER_PREPEND;
    match rule.fields.as_slice() {
        [
            (RuleField::Msgtype(record_type), RuleFieldFlags::Equal),
            (RuleField::Uid(0), RuleFieldFlags::GreaterThanOrEqual),
        ] if rule.action == RuleAction::Never
            && list == AUDIT_FILTER_EXCLUDE
            && UNUSED_RECORD_TYPES.contains(record_type) =>
        {
            Some(*record_type)
        }
        _ => None,
    }
}

/// Every rule keyed `mapwatch` that a session adds, in order: the
/// self-exclusion first (prepended), then the task rule and one exec rule
/// per ABI.
fn keyed_rules(me: u32) -> Vec<RuleMessage> {
    let mut rules = vec![self_exclusion_rule(me), unaudited_threads_rule(me)];
    rules.extend(native_syscalls().iter().map(syscall_rule));
    rules
}

/// The pid whose syscalls `rule` keeps out of audit, if it is a
/// [`self_exclusion_rule`] as the kernel lists it (its syscall mask as the
/// kernel keeps it, so the rule is recognised, not compared).
fn self_excluded_pid(rule: &RuleMessage) -> Option<u32> {
    let on_exit = u32::from(rule.flags) & !AUDIT_FILTER_PREPEND == AUDIT_FILTER_EXIT;
    if !on_exit || rule.action != RuleAction::Never || !has_our_key(rule) {
        return None;
    }
    rule.fields.iter().find_map(|(field, _)| match field {
        RuleField::Pid(pid) => Some(*pid),
        _ => None,
    })
}

/// `-a never,exit -F pid=OURS -k mapwatch`, first in the list: our own
/// activity must never feed back into our input.
fn self_exclusion_rule(pid: u32) -> RuleMessage {
    let mut rule = exit_rule(RuleAction::Never, true);
    rule.syscalls = RuleSyscalls::new_maxed();
    rule.fields
        .push((RuleField::Pid(pid), RuleFieldFlags::Equal));
    rule.fields
        .push((RuleField::Filterkey(RULE_KEY.into()), RuleFieldFlags::Equal));
    rule
}

/// `-a never,task -F pid=OURS -k mapwatch`: threads we create afterwards
/// get no audit context at all, so our own syscalls (a read confirmation
/// costs three per event) skip the audit entry and exit paths.
fn unaudited_threads_rule(pid: u32) -> RuleMessage {
    let mut rule = RuleMessage::new();
    rule.flags = RuleFlags::from(AUDIT_FILTER_TASK);
    rule.action = RuleAction::Never;
    rule.syscalls = RuleSyscalls::new_maxed();
    rule.fields
        .push((RuleField::Pid(pid), RuleFieldFlags::Equal));
    rule.fields
        .push((RuleField::Filterkey(RULE_KEY.into()), RuleFieldFlags::Equal));
    rule
}

/// `-a always,exit -F arch=ARCH -S execve,execveat,setsid -k mapwatch`.
/// setsid is rare and tells a replayed log where sessions begin.
fn syscall_rule(abi: &AbiSyscalls) -> RuleMessage {
    let mut rule = exit_rule(RuleAction::Always, false);
    for syscall in abi.all() {
        rule.syscalls.set(syscall);
    }
    rule.fields
        .push((RuleField::Arch(abi.arch.0), RuleFieldFlags::Equal));
    rule.fields
        .push((RuleField::Filterkey(RULE_KEY.into()), RuleFieldFlags::Equal));
    rule
}

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
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditMode {
    /// Registered as the audit daemon (replaces auditd).
    Unicast,
    /// A reader of the multicast group, beside the registered daemon.
    Multicast,
    /// Multicast when another live audit daemon is registered, else unicast:
    /// installing mapwatch never takes auditd's place.
    #[default]
    Auto,
}

/// Where records are dropped when mapwatch cannot keep up (`[audit]
/// backpressure`), in the spirit of auditbeat's `backpressure_strategy`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backpressure {
    /// mapwatch never drops: its reader waits, the backlog builds up in the
    /// kernel, and the kernel drops once `backlog_limit` is reached (counted
    /// in its `lost`), with `backlog_wait_time` set to 0 so that no process
    /// ever stalls on the audit queue. As the audit daemon only.
    #[default]
    Kernel,
    /// The reader keeps draining the socket and drops whole batches when the
    /// pipeline's queue is full (counted as `queue_dropped_records`); the
    /// kernel's `backlog_wait_time` is left as it is.
    Userspace,
}

/// Settings of the audit session.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub mode: AuditMode,
    pub backpressure: Backpressure,
    pub backlog_limit: u32,
    pub receive_buffer: usize,
    pub state_file: PathBuf,
}

/// Counters shared between the record readers and the stats reporter.
#[derive(Default, Debug)]
pub struct SourceStats {
    pub records: AtomicU64,
    pub batches: AtomicU64,
    /// Reads of the socket on an interval, under load
    /// ([`crate::source::pacing`]).
    pub polls: AtomicU64,
    pub enobufs: AtomicU64,
    pub dropped_records: AtomicU64,
}

impl SourceStats {
    /// `records` records came in one go.
    pub fn count_batch(&self, records: usize) {
        if records > 0 {
            self.records.fetch_add(records as u64, Ordering::Relaxed);
            self.batches.fetch_add(1, Ordering::Relaxed);
        }
    }
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
    socket: Socket,
    /// Multicast copies carry a correct `nlmsg_len`; unicast ones don't.
    multicast: bool,
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

        let mut session = AuditSession {
            control,
            saved,
            state_file: options.state_file.clone(),
            active: true,
            registered: false,
            beside_daemon: None,
            stale_rules_removed: 0,
            rules_installed: 0,
            excludes_record_types: false,
            lost_at_start: status.lost,
        };
        session.stale_rules_removed = session
            .control
            .delete_our_rules()
            .map_err(kernel("deleting stale mapwatch rules"))?;

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
        let mut session = AuditSession {
            control,
            saved: SavedStatus {
                saved_by: std::process::id(),
                enabled: status.enabled,
                backlog_limit: status.backlog_limit,
                backlog_wait_time: None,
            },
            state_file: PathBuf::new(),
            active: true,
            registered: false,
            beside_daemon: Some(daemon.unwrap_or(0)),
            stale_rules_removed: 0,
            rules_installed: 0,
            excludes_record_types: false,
            lost_at_start: status.lost,
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
            self.control
                .add_rule(rule)
                .map_err(kernel("adding the self-exclusion and execve/setsid rules"))?;
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

    /// Deletes our rules, unregisters and restores the saved status.
    pub fn stop(mut self) -> io::Result<()> {
        self.restore()
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
    let name = fs::read(format!("/proc/{pid}/comm"))
        .map(|c| String::from_utf8_lossy(c.trim_ascii_end()).into_owned())
        .unwrap_or_else(|_| "unknown".into());
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

/// The record socket and the buffers it is read into. The pipeline reads it
/// itself (no queue, no copy) with [`Backpressure::Kernel`], where the
/// kernel's backlog is the only queue; [`spawn_record_reader`] reads it on a
/// thread of its own with [`Backpressure::Userspace`].
pub struct RecordReader {
    socket: Socket,
    datagrams: Datagrams,
    multicast: bool,
}

impl RecordReader {
    /// Takes the socket over; returns the reader and the records that
    /// arrived while registration was being acknowledged.
    pub fn new(socket: RecordSocket) -> (Self, RecordBatch) {
        let reader = RecordReader {
            socket: socket.socket,
            datagrams: Datagrams::new(),
            multicast: socket.multicast,
        };
        (reader, socket.early_records)
    }

    /// Readable when records are queued: the fd to wait on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Hands each queued record (its arrival time, type and text) to
    /// `each`, without waiting, until the socket's queue is empty or about
    /// `max` records came; returns how many.
    pub fn receive(
        &mut self,
        max: usize,
        stats: &SourceStats,
        each: &mut impl FnMut(Instant, u16, &[u8]),
    ) -> io::Result<usize> {
        let now = Instant::now();
        let fd = self.socket.as_raw_fd();
        let mut records = 0;
        loop {
            match self.datagrams.receive(fd) {
                Ok(count) => {
                    for datagram in self.datagrams.iter(count) {
                        records += split_records(datagram, self.multicast, &mut |t, text| {
                            each(now, t, text)
                        });
                    }
                    // Fewer than asked for: the queue was empty a moment
                    // ago, no need for an EAGAIN round trip.
                    if count < DATAGRAMS_PER_CALL || records >= max {
                        break;
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::ENOBUFS) => {
                    stats.enobufs.fetch_add(1, Ordering::Relaxed);
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        stats.count_batch(records);
        Ok(records)
    }
}

/// Reads records on a thread of its own until the pipeline is gone, so the
/// kernel keeps being drained while the pipeline is busy: each wake-up's
/// records (at most about `max_batch`) go on as one batch, dropped and
/// counted when the queue is full ([`Backpressure::Userspace`]).
pub fn spawn_record_reader(
    mut reader: RecordReader,
    tx: Sender<RecordBatch>,
    stats: Arc<SourceStats>,
    max_batch: usize,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("mapwatch-audit".into())
        .spawn(move || {
            loop {
                let mut ready = [PollFd::new(reader.fd(), PollFlags::POLLIN)];
                match poll(&mut ready, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        tracing::error!("waiting for audit records: {e}");
                        return;
                    }
                }
                let mut batch = RecordBatch::default();
                let read = reader.receive(max_batch, &stats, &mut |_, t, text| batch.push(t, text));
                if let Err(e) = read {
                    tracing::error!("reading audit records: {e}");
                    return;
                }
                if !batch.is_empty() && !send_or_drop(&tx, batch, &stats) {
                    return;
                }
            }
        })
}

/// Queues `batch`, or drops and counts it when the queue is full; false
/// once the pipeline is gone.
fn send_or_drop(tx: &Sender<RecordBatch>, batch: RecordBatch, stats: &SourceStats) -> bool {
    let count = batch.len() as u64;
    match tx.try_send(batch) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            stats.dropped_records.fetch_add(count, Ordering::Relaxed);
            true
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

/// Datagrams received per system call: the records of a few exec events.
const DATAGRAMS_PER_CALL: usize = 32;

/// Buffers for `recvmmsg(2)`: one slot per datagram. Every audit record is
/// one datagram, so one call per wake-up instead of one per record.
struct Datagrams {
    buf: Vec<u8>,
    lens: [usize; DATAGRAMS_PER_CALL],
}

impl Datagrams {
    fn new() -> Self {
        Datagrams {
            buf: vec![0u8; RECORD_BUF_LEN * DATAGRAMS_PER_CALL],
            lens: [0; DATAGRAMS_PER_CALL],
        }
    }

    /// Receives what is queued, up to [`DATAGRAMS_PER_CALL`] datagrams,
    /// without waiting; returns how many.
    fn receive(&mut self, fd: RawFd) -> Result<usize, Errno> {
        let mut iovecs: [libc::iovec; DATAGRAMS_PER_CALL] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.buf[i * RECORD_BUF_LEN..].as_mut_ptr().cast(),
            iov_len: RECORD_BUF_LEN,
        });
        // SAFETY: an all-zero mmsghdr is valid (null name and control).
        let mut headers: [libc::mmsghdr; DATAGRAMS_PER_CALL] = unsafe { std::mem::zeroed() };
        for (header, iov) in headers.iter_mut().zip(iovecs.iter_mut()) {
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at one iovec of this frame, each
        // covering a disjoint RECORD_BUF_LEN slice of `self.buf`, all alive
        // for the call; the kernel writes at most iov_len bytes per slot.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                DATAGRAMS_PER_CALL as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let count = usize::try_from(received).map_err(|_| Errno::last())?;
        for (len, header) in self.lens.iter_mut().zip(&headers[..count]) {
            *len = (header.msg_len as usize).min(RECORD_BUF_LEN);
        }
        Ok(count)
    }

    /// The first `count` datagrams of the last [`Datagrams::receive`].
    fn iter(&self, count: usize) -> impl Iterator<Item = &[u8]> + '_ {
        self.lens[..count]
            .iter()
            .enumerate()
            .map(|(i, len)| &self.buf[i * RECORD_BUF_LEN..i * RECORD_BUF_LEN + len])
    }
}

/// Splits a datagram into records, handing each to `each`; returns how
/// many. Unicast records carry an `nlmsg_len` that omits the 16-byte header
/// (a kernel quirk kept for auditd's sake); multicast copies are correct.
pub fn split_records(datagram: &[u8], multicast: bool, each: &mut impl FnMut(u16, &[u8])) -> usize {
    let mut offset = 0;
    let mut records = 0;
    while offset + NLMSG_HDRLEN <= datagram.len() {
        let (len, msg_type, _) = header_fields(&datagram[offset..]);
        let payload_len = if multicast {
            len.saturating_sub(NLMSG_HDRLEN)
        } else {
            len
        };
        let start = offset + NLMSG_HDRLEN;
        let end = start.saturating_add(payload_len).min(datagram.len());
        if msg_type >= FIRST_RECORD_TYPE && msg_type != AUDIT_REPLACE {
            each(msg_type, &datagram[start..end]);
            records += 1;
        }
        offset = align4(end.max(start));
        if payload_len == 0 {
            break;
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(msg_type: u16, text: &[u8], header_in_len: bool) -> Vec<u8> {
        let len = text.len() + if header_in_len { NLMSG_HDRLEN } else { 0 };
        let mut d = Vec::new();
        d.extend_from_slice(&(len as u32).to_ne_bytes());
        d.extend_from_slice(&msg_type.to_ne_bytes());
        d.extend_from_slice(&0u16.to_ne_bytes());
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(text);
        d
    }

    #[test]
    fn unicast_quirk_framing() {
        let text = b"audit(1.000:1): argc=1 a0=\"x\"";
        let mut batch = RecordBatch::default();
        split_records(&datagram(1309, text, false), false, &mut |t, x| {
            batch.push(t, x)
        });
        split_records(&datagram(1309, text, true), true, &mut |t, x| {
            batch.push(t, x)
        });
        let records: Vec<_> = batch.iter().collect();
        assert_eq!(records, vec![(1309, &text[..]), (1309, &text[..])]);
    }

    #[test]
    fn truncated_and_replace_messages() {
        let mut batch = RecordBatch::default();
        let mut push = |t, x: &[u8]| batch.push(t, x);
        assert_eq!(
            split_records(
                &datagram(1300, b"audit(1.000:1): x=1", true),
                false,
                &mut push
            ),
            1
        );
        assert_eq!(
            split_records(
                &datagram(AUDIT_REPLACE, b"audit(1.000:2): pid=1", false),
                false,
                &mut push,
            ),
            0
        );
        assert_eq!(split_records(&[1, 2, 3], false, &mut push), 0);
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn rule_key_detection() {
        assert!(has_our_key(&syscall_rule(&native_syscalls()[0])));
        assert!(has_our_key(&self_exclusion_rule(1)));
        let mut other = exit_rule(RuleAction::Always, false);
        other.fields.push((
            RuleField::Filterkey("exec\x01mapwatch".into()),
            RuleFieldFlags::Equal,
        ));
        assert!(has_our_key(&other));
        other.fields[0] = (
            RuleField::Filterkey("mapwatcher".into()),
            RuleFieldFlags::Equal,
        );
        assert!(!has_our_key(&other));
    }

    #[test]
    fn our_exclusions_are_known_by_their_shape() {
        for record_type in UNUSED_RECORD_TYPES {
            let ours = exclude_rule(record_type);
            assert_eq!(our_excluded_type(&ours), Some(record_type));
            assert!(is_ours(&ours));
        }
        // An administrator's `-a never,exclude -F msgtype=EOE` is theirs.
        let mut plain = exclude_rule(1320);
        plain.fields.truncate(1);
        assert!(!is_ours(&plain));
        // The same shape for a type mapwatch never excludes is not ours.
        assert!(!is_ours(&exclude_rule(1300)));
        // Nor the same fields on another list.
        let mut on_exit = exclude_rule(1320);
        on_exit.flags = RuleFlags::from(AUDIT_FILTER_EXIT);
        assert!(!is_ours(&on_exit));
    }
}
