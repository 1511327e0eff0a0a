//! Pids across pid namespaces: which host process a pid of another pid
//! namespace's procfs names, and a process's pid in its own namespace.
//!
//! Contract: [`PidNamespaces::host_pid`] answers from a cache of the
//! namespace's processes, each answer checked against the process's
//! `NSpid:` before it is given (a pid reused since is looked up again);
//! a miss lists the host's processes once (at most once per namespace per
//! [`RESCAN_AFTER`], so a flood of reads of a pid that does not resolve
//! costs one listing, not one per read). Processes of a namespace nested
//! below the one asked about are not found (their innermost namespace
//! differs): reads across two levels of pid namespaces are named by the
//! procfs's pid only.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::procfs;
use crate::audit::record::parse_decimal;

/// The least time between two listings of the host's processes for one
/// namespace.
pub const RESCAN_AFTER: Duration = Duration::from_millis(200);

/// The inode of a namespace link (`pid:[4026531836]`).
pub fn namespace_inode(link: &[u8]) -> Option<u64> {
    let start = link.iter().position(|b| *b == b'[')? + 1;
    let end = link.iter().rposition(|b| *b == b']')?;
    let digits = link.get(start..end)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// mapwatch's own pid namespace: the host's, whose pids alerts give.
pub fn host_namespace() -> Option<u64> {
    static HOST: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *HOST.get_or_init(|| pid_namespace_of(std::process::id()))
}

/// The pid namespace whose pids the procfs at `/proc` under `pid`'s root
/// gives (what its arguments' `/proc/<n>/...` name): a container's own,
/// or the host's where `/proc` is the host's procfs (a chroot with `/proc`
/// bound, `unshare -p` without a procfs of its own).
pub fn procfs_namespace_at_root(pid: u32) -> Option<u64> {
    let link = procfs::read_link_path(&procfs::through_root(pid, b"/proc/1/ns/pid")).ok()?;
    namespace_inode(&link)
}

/// The pid namespace of a live process.
pub fn pid_namespace_of(pid: u32) -> Option<u64> {
    namespace_inode(&procfs::read_link(pid, "ns/pid").ok()?)
}

/// A process's pid in each pid namespace it is in, outermost first
/// (`NSpid:` of its status).
pub fn nspids(pid: u32) -> Option<smallvec::SmallVec<[u32; 4]>> {
    let mut status = [0u8; 2048];
    let filled = procfs::read_into(pid, "status", &mut status).ok()?;
    let line = status[..filled]
        .split(|b| *b == b'\n')
        .find_map(|l| l.strip_prefix(b"NSpid:"))?;
    line.split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
        .map(parse_decimal)
        .collect()
}

/// The pid `pid` has in its own (innermost) pid namespace, when that is
/// not the host's.
pub fn own_namespace_pid(pid: u32) -> Option<u32> {
    let pids = nspids(pid)?;
    (pids.len() > 1).then(|| pids.last().copied()).flatten()
}

/// Host pids of other pid namespaces' processes.
#[derive(Default)]
pub struct PidNamespaces {
    /// (namespace, pid there) -> host pid.
    known: FxHashMap<(u64, u32), u32>,
    listed_at: FxHashMap<u64, Instant>,
}

impl PidNamespaces {
    /// The host pid of the process that is `local` in the pid namespace
    /// `ns`; `None` when no live process is.
    /// `likely` is tried first: the reader, for a read of its own map.
    pub fn host_pid(&mut self, ns: u64, local: u32, likely: u32, now: Instant) -> Option<u32> {
        if is_in(likely, ns, local) {
            return Some(likely);
        }
        if let Some(host) = self.known.get(&(ns, local)).copied() {
            if is_in(host, ns, local) {
                return Some(host);
            }
            self.known.remove(&(ns, local));
        }
        let listed_lately = self
            .listed_at
            .get(&ns)
            .is_some_and(|at| now.saturating_duration_since(*at) < RESCAN_AFTER);
        if listed_lately {
            return None;
        }
        self.list(ns, now);
        self.known.get(&(ns, local)).copied()
    }

    /// Every process of `ns`, from the host's list; what was known of the
    /// namespace before is forgotten.
    fn list(&mut self, ns: u64, now: Instant) {
        // Namespaces not asked about for a while (most have ended) are
        // forgotten with their last listing.
        self.listed_at
            .retain(|_, at| now.saturating_duration_since(*at) < RESCAN_AFTER * 50);
        self.listed_at.insert(ns, now);
        let listed = &self.listed_at;
        self.known
            .retain(|(n, _), _| *n != ns && listed.contains_key(n));
        let Ok(pids) = procfs::pids() else {
            return;
        };
        for host in pids {
            if pid_namespace_of(host) != Some(ns) {
                continue;
            }
            if let Some(local) = nspids(host).and_then(|p| p.last().copied()) {
                self.known.insert((ns, local), host);
            }
        }
    }

    /// Entries held (for the bound on memory).
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// Whether the live process `host` is `local` in `ns`.
fn is_in(host: u32, ns: u64, local: u32) -> bool {
    pid_namespace_of(host) == Some(ns)
        && nspids(host).and_then(|p| p.last().copied()) == Some(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_links_give_their_inode() {
        assert_eq!(namespace_inode(b"pid:[4026531836]"), Some(4_026_531_836));
        assert_eq!(namespace_inode(b"mnt:[4026532177]"), Some(4_026_532_177));
        assert_eq!(namespace_inode(b"pid:[]"), None);
        assert_eq!(namespace_inode(b"garbage"), None);
    }

    #[test]
    fn this_process_is_found_in_its_own_namespace() {
        let me = std::process::id();
        let ns = pid_namespace_of(me).expect("our pid namespace");
        let local = nspids(me)
            .and_then(|p| p.last().copied())
            .expect("our NSpid");
        let mut namespaces = PidNamespaces::default();
        assert_eq!(namespaces.host_pid(ns, local, 1, Instant::now()), Some(me));
    }
}
