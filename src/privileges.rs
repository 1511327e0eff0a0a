//! Privileges: what the daemon keeps after start-up, and which files it
//! trusts.
//!
//! Contract: once the audit session is registered and the fanotify group
//! exists, [`drop_unneeded`] leaves the process with `CAP_AUDIT_CONTROL`
//! (status polls; removing its rules at exit), `CAP_SYS_PTRACE` and
//! `CAP_DAC_READ_SEARCH` (other processes' /proc links), and nothing else,
//! in every set; threads created afterwards inherit that. [`check_trusted`]
//! refuses, when running as root, a configuration or rule file that anyone
//! but root could have written.

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

/// Drops every capability but [`KEPT`] from this thread's sets (threads
/// spawned afterwards inherit them). Bounding-set drops are best effort:
/// under systemd the unit's `CapabilityBoundingSet=` already did it.
pub fn drop_unneeded() -> io::Result<()> {
    let current = caps::read(None, CapSet::Permitted).map_err(io::Error::other)?;
    let kept: CapsHashSet = KEPT
        .iter()
        .copied()
        .filter(|c| current.contains(c))
        .collect();
    let gone: Vec<Capability> = current.difference(&kept).copied().collect();
    caps::clear(None, CapSet::Ambient).map_err(io::Error::other)?;
    caps::clear(None, CapSet::Inheritable).map_err(io::Error::other)?;
    caps::set(None, CapSet::Effective, &kept).map_err(io::Error::other)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(io::Error::other)?;
    for cap in &gone {
        let _ = caps::drop(None, CapSet::Bounding, *cap);
    }
    tracing::debug!("capabilities kept: {kept:?}; dropped {}", gone.len());
    Ok(())
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
