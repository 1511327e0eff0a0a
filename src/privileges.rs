//! Privileges: what the daemon keeps after start-up, and which files it
//! trusts.
//!
//! Contract: once the audit session is registered and the fanotify group
//! exists, [`drop_unneeded`] leaves the process with `CAP_AUDIT_CONTROL`
//! (status polls; removing its rules at exit), `CAP_SYS_PTRACE` and
//! `CAP_DAC_READ_SEARCH` (other processes' /proc links), and nothing else,
//! in every set; threads created afterwards inherit that. With fanotify
//! on, `CAP_SYS_ADMIN` stays permitted but not effective: a procfs mounted
//! after start (a container's) is marked by [`with_effective`], which
//! raises it in the calling thread for that one call. [`check_trusted`]
//! refuses, when running as root, a configuration or rule file that anyone
//! but root could have written. [`eperm_cause`] tells an operator which of
//! the two usual refusers said EPERM to a call: a missing capability, or a
//! system-call filter (systemd's `SystemCallFilter=` answers EPERM).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use caps::{CapSet, Capability, CapsHashSet};

/// What the running daemon still uses.
const KEPT: [Capability; 3] = [
    Capability::CAP_AUDIT_CONTROL,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_DAC_READ_SEARCH,
];

/// What marks a procfs with fanotify; kept permitted (not effective) while
/// procfs instances are watched.
pub const MARKING: Capability = Capability::CAP_SYS_ADMIN;

/// Drops every capability but [`KEPT`] (and, when `marking`, [`MARKING`]
/// from the effective set only) from this thread's sets (threads spawned
/// afterwards inherit them). Bounding-set drops are best effort: under
/// systemd the unit's `CapabilityBoundingSet=` already did it.
pub fn drop_unneeded(marking: bool) -> io::Result<()> {
    let current = caps::read(None, CapSet::Permitted).map_err(io::Error::other)?;
    let kept: CapsHashSet = KEPT
        .iter()
        .copied()
        .filter(|c| current.contains(c))
        .collect();
    let mut permitted = kept.clone();
    if marking && current.contains(&MARKING) {
        permitted.insert(MARKING);
    }
    let gone: Vec<Capability> = current.difference(&permitted).copied().collect();
    caps::clear(None, CapSet::Ambient).map_err(io::Error::other)?;
    caps::clear(None, CapSet::Inheritable).map_err(io::Error::other)?;
    caps::set(None, CapSet::Effective, &kept).map_err(io::Error::other)?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(io::Error::other)?;
    for cap in &gone {
        let _ = caps::drop(None, CapSet::Bounding, *cap);
    }
    tracing::debug!(
        "capabilities kept: {kept:?}, permitted {permitted:?}; dropped {}",
        gone.len()
    );
    Ok(())
}

/// Runs `f` with `cap` effective in this thread (and only for `f`): a
/// capability kept permitted for one call.
pub fn with_effective<T>(cap: Capability, f: impl FnOnce() -> T) -> T {
    let raised = !has_effective(cap) && caps::raise(None, CapSet::Effective, cap).is_ok();
    let result = f();
    if raised {
        let _ = caps::drop(None, CapSet::Effective, cap);
    }
    result
}

/// Whether this process holds `cap` in its effective set.
pub fn has_effective(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

/// Why `call` failed with EPERM, as an operator can act on it. A missing
/// capability is the first suspect; with the capability effective, a
/// seccomp filter (systemd's `SystemCallFilter=` with
/// `SystemCallErrorNumber=EPERM`) is the usual refuser; with neither, a
/// security module's policy.
pub fn eperm_cause(call: &str, cap: Capability) -> String {
    if !has_effective(cap) {
        return format!(
            "{call} needs {cap}, which this process does not have: run as root, or grant it (the unit's CapabilityBoundingSet=)"
        );
    }
    match seccomp_mode() {
        Some(mode) if mode != 0 => format!(
            "{call} was refused by a system-call filter (seccomp mode {mode}; {cap} is effective): allow {call} in the unit's SystemCallFilter=, after any ~@privileged line"
        ),
        _ => format!(
            "{call} was refused although {cap} is effective and no system-call filter is on: check the security module's policy (AppArmor, SELinux)"
        ),
    }
}

/// The `Seccomp:` field of /proc/self/status: 0 none, 1 strict, 2 filter.
fn seccomp_mode() -> Option<u8> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp:"))
        .and_then(|mode| mode.trim().parse().ok())
}

/// Refuses `path` when running as root and someone else could change it.
pub fn check_trusted(path: &Path) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let writable_by_others = meta.mode() & 0o022 != 0;
    if meta.uid() != 0 || writable_by_others {
        return Err(format!(
            "refusing a file that non-root users can change (owner uid {}, mode {:o}): make it root-owned and not group- or world-writable",
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}
