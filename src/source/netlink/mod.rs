//! The kernel audit subsystem over netlink: mapwatch's session with it and
//! the socket its records arrive on.
//!
//! Contract: [`session::AuditSession`] sets the kernel up (registration or
//! multicast, status, our rules) and undoes it on stop or drop;
//! [`reader::RecordReader`] reads the record socket without blocking. Every
//! error names the request that failed and, for EPERM or ECONNREFUSED, who
//! refused it.

pub mod reader;
pub mod rules;
pub mod session;
pub mod socket;

use std::io;
use std::path::PathBuf;

use caps::Capability;
use serde::Deserialize;

pub use reader::{RecordReader, spawn_record_reader};
pub use rules::RULE_KEY;
pub use session::{AuditSession, RecordSocket, SessionOptions};

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

/// `[audit]`: the session with the kernel and how its records are read.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `unicast` (the audit daemon), `multicast` (beside it), or `auto`.
    pub mode: AuditMode,
    /// Where records are dropped when mapwatch falls behind: `kernel` or
    /// `userspace`.
    pub backpressure: Backpressure,
    /// Kernel queue of records awaiting delivery (`auditctl -b`).
    pub backlog_limit: u32,
    /// SO_RCVBUF of the record socket, bytes.
    pub receive_buffer: usize,
    /// Where the pre-start audit status is kept until a clean shutdown.
    pub state_file: PathBuf,
    /// Events held waiting for their EOE record, at most.
    pub max_events_in_flight: usize,
    /// How long an event without EOE waits before it is flushed, ms.
    pub event_timeout_ms: u64,
    /// Record batches queued between the reader and the pipeline.
    pub queue_batches: usize,
    /// Under a dense stream of records, read the socket every this many ms
    /// instead of at every record's wake-up; 0: at every wake-up. 50: half
    /// of how long reads are held, and where a batch of a 1,000 exec/s
    /// storm pays for its wake-up and its cold caches (`source::pacing`).
    pub poll_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            mode: AuditMode::Auto,
            backpressure: Backpressure::Kernel,
            backlog_limit: 8192,
            receive_buffer: 8 << 20,
            state_file: PathBuf::from("/run/mapwatch/audit-state.json"),
            max_events_in_flight: 4096,
            event_timeout_ms: 500,
            queue_batches: 1024,
            poll_interval_ms: 50,
        }
    }
}

/// Beyond this, records would wait in the kernel longer than a detector
/// should take to see them.
const MAX_POLL_INTERVAL_MS: u64 = 100;

impl AuditConfig {
    /// The first key whose value cannot be used, and what it must be.
    pub fn invalid_key(&self) -> Option<(&'static str, &'static str)> {
        let checks = [
            ("backlog_limit", self.backlog_limit > 0, "greater than 0"),
            (
                "max_events_in_flight",
                self.max_events_in_flight > 0,
                "greater than 0",
            ),
            (
                "event_timeout_ms",
                self.event_timeout_ms > 0,
                "greater than 0",
            ),
            ("queue_batches", self.queue_batches > 0, "greater than 0"),
            (
                "poll_interval_ms",
                self.poll_interval_ms <= MAX_POLL_INTERVAL_MS,
                "at most 100",
            ),
            (
                "receive_buffer",
                self.receive_buffer >= 65536,
                "at least 65536",
            ),
        ];
        checks
            .into_iter()
            .find(|(_, ok, _)| !ok)
            .map(|(key, _, must_be)| (key, must_be))
    }

    /// What the audit session needs of these settings.
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            mode: self.mode,
            backpressure: self.backpressure,
            backlog_limit: self.backlog_limit,
            receive_buffer: self.receive_buffer,
            state_file: self.state_file.clone(),
        }
    }
}
