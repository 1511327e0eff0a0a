//! Every procfs on the machine: the host's, each pid namespace's (a
//! container's, a rootless `unshare`'s), second mounts and mounts over
//! `/proc`, and the mounts that show part of one (bind mounts of `/proc` or
//! of one pid's directory); and, for a file of one of them, which process's
//! file it is, whatever path the reader took to it.
//!
//! Contract: [`Instances::scan`] walks every mount namespace (one process of
//! each, found through `/proc/<pid>/ns/mnt`), reads its mountinfo's procfs
//! lines, hands each superblock not yet watched to the caller's marker
//! (through `/proc/<pid>/root<mount point>`, after checking the path still
//! reaches that superblock) up to a capacity, and forgets the mounts and
//! superblocks no namespace has any more (the kernel drops a filesystem
//! mark with its superblock). [`Instances::learn`] does the same for one
//! process's namespace, without forgetting. [`Instances::place`] turns a
//! file's mount and the path the kernel gives for it into the procfs's
//! own path (the mount's root joined with the path below its mount point),
//! so bind mounts, chroots, `..` and symlinks do not matter, and says in
//! which pid namespace its pids are. No fd of an instance is held: that
//! would keep a gone namespace's procfs alive.

use rustc_hash::{FxHashMap, FxHashSet};

use super::mountinfo::{Dev, MountLine, procfs_mounts};
use super::pid_ns::{namespace_inode, pid_namespace_of};
use super::proc_path::{Layout, ProcFile};
use super::procfs;

/// What a scan did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Superblocks marked for the first time.
    pub added: u32,
    /// Superblocks no namespace mounts any more.
    pub gone: u32,
    /// Superblocks seen and not watched: over capacity.
    pub over_capacity: u32,
    /// Marks the kernel refused.
    pub refused: u32,
    /// Mount namespaces looked at.
    pub namespaces: u32,
    /// Procfs mounts seen in them.
    pub mounts: u32,
}

/// A procfs superblock being watched.
#[derive(Clone, Debug)]
pub struct Instance {
    /// The pid namespace whose pids its directories are.
    pub pid_ns: Option<u64>,
    seen: u64,
    /// Marked by the caller at start (the host's): kept, and not counted
    /// against the capacity.
    adopted: bool,
}

#[derive(Clone, Debug)]
struct Mount {
    dev: Dev,
    root: Box<[u8]>,
    point: Box<[u8]>,
    seen: u64,
}

/// A file of a procfs, as the procfs names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The pid (thread group) whose file it is, in `pid_ns`; for the
    /// top-level directory of a thread that is not a group's leader
    /// (`/<tid>/maps`), the thread's id.
    pub pid: u32,
    /// Named through a thread's directory at the top level: `pid` is a
    /// thread id, whose process is its thread group.
    pub maybe_thread: bool,
    pub layout: Layout,
    pub pid_ns: Option<u64>,
}

/// The procfs instances and mounts known, and which are watched.
pub struct Instances {
    mounts: FxHashMap<u32, Mount>,
    instances: FxHashMap<Dev, Instance>,
    /// Mounts whose root is a layout file itself (a bind mount of one
    /// `maps`): their files' paths end in no layout name.
    file_mounts: usize,
    generation: u64,
    capacity: usize,
    /// Superblocks not watched (over capacity, or the kernel would not mark
    /// them): not tried again, nor counted again, while they are mounted.
    refused: FxHashSet<Dev>,
    refused_seen: FxHashSet<Dev>,
    /// Superblocks marked in this scan.
    marked_now: usize,
}

/// Marks a superblock through a path relative to [`procfs::root`].
pub type Marker<'m> = dyn FnMut(&[u8]) -> nix::Result<()> + 'm;

impl Instances {
    pub fn new(capacity: usize) -> Self {
        Instances {
            mounts: FxHashMap::default(),
            instances: FxHashMap::default(),
            file_mounts: 0,
            generation: 0,
            capacity,
            refused: FxHashSet::default(),
            refused_seen: FxHashSet::default(),
            marked_now: 0,
        }
    }

    /// A superblock marked by the caller (the host's procfs, at start):
    /// watched until no namespace mounts it.
    pub fn adopt(&mut self, dev: Dev, pid_ns: Option<u64>) {
        self.instances.insert(
            dev,
            Instance {
                pid_ns,
                seen: self.generation,
                adopted: true,
            },
        );
    }

    /// Superblocks watched.
    pub fn watched(&self) -> usize {
        self.instances.len()
    }

    /// Whether any mount shows a single layout file: then a file's path
    /// alone cannot tell that it is one.
    pub fn has_file_mounts(&self) -> bool {
        self.file_mounts > 0
    }

    /// Every mount namespace's procfs mounts: new superblocks marked, gone
    /// ones forgotten.
    pub fn scan(&mut self, marker: &mut Marker<'_>) -> ScanOutcome {
        self.generation += 1;
        self.refused_seen.clear();
        self.marked_now = 0;
        let mut outcome = ScanOutcome::default();
        let mut namespaces = FxHashSet::default();
        let Ok(pids) = procfs::pids() else {
            return outcome;
        };
        // A chrooted process's mountinfo shows only what is under its root:
        // a namespace is read through a process at its root, else through
        // the first one found.
        let mut chrooted_only: FxHashMap<u64, u32> = FxHashMap::default();
        for pid in pids {
            let Some(mnt_ns) = procfs::read_link(pid, "ns/mnt")
                .ok()
                .and_then(|l| namespace_inode(&l))
            else {
                continue;
            };
            if namespaces.contains(&mnt_ns) {
                continue;
            }
            if !at_namespace_root(pid) {
                chrooted_only.entry(mnt_ns).or_insert(pid);
                continue;
            }
            namespaces.insert(mnt_ns);
            chrooted_only.remove(&mnt_ns);
            self.read_namespace(pid, marker, &mut outcome);
        }
        for (mnt_ns, pid) in chrooted_only {
            namespaces.insert(mnt_ns);
            self.read_namespace(pid, marker, &mut outcome);
        }
        outcome.namespaces = u32::try_from(namespaces.len()).unwrap_or(u32::MAX);
        outcome.mounts = self
            .mounts
            .values()
            .filter(|m| m.seen == self.generation)
            .count() as u32;
        let generation = self.generation;
        self.mounts.retain(|_, m| m.seen == generation);
        let before = self.instances.len();
        self.instances
            .retain(|_, i| i.seen == generation || i.adopted);
        outcome.gone = u32::try_from(before - self.instances.len()).unwrap_or(u32::MAX);
        std::mem::swap(&mut self.refused, &mut self.refused_seen);
        self.count_file_mounts();
        outcome
    }

    /// The namespace of `pid` (a reader whose mount was not known yet).
    pub fn learn(&mut self, pid: u32, marker: &mut Marker<'_>) -> ScanOutcome {
        let mut outcome = ScanOutcome::default();
        self.read_namespace(pid, marker, &mut outcome);
        self.count_file_mounts();
        outcome
    }

    /// Whether the mount `id` of `dev` is known.
    pub fn knows_mount(&self, id: u32, dev: Dev) -> bool {
        self.mounts.get(&id).is_some_and(|m| m.dev == dev)
    }

    /// Whether the mount `id` of `dev` is known and rooted at a directory:
    /// a path through it ends in the file's own name.
    pub fn names_files_by_path(&self, id: u32, dev: Dev) -> bool {
        self.mounts
            .get(&id)
            .is_some_and(|m| m.dev == dev && !root_is_a_file(&m.root))
    }

    fn count_file_mounts(&mut self) {
        self.file_mounts = self
            .mounts
            .values()
            .filter(|m| root_is_a_file(&m.root))
            .count();
    }

    fn read_namespace(&mut self, pid: u32, marker: &mut Marker<'_>, outcome: &mut ScanOutcome) {
        let Ok(mountinfo) = procfs::read_all(pid, "mountinfo") else {
            return;
        };
        for line in procfs_mounts(&mountinfo) {
            self.note_mount(pid, line, marker, outcome);
        }
    }

    fn note_mount(
        &mut self,
        pid: u32,
        line: MountLine,
        marker: &mut Marker<'_>,
        outcome: &mut ScanOutcome,
    ) {
        let generation = self.generation;
        self.mounts.insert(
            line.id,
            Mount {
                dev: line.dev,
                root: line.root.into_boxed_slice(),
                point: line.point.clone().into_boxed_slice(),
                seen: generation,
            },
        );
        // Marked once per scan: a device number is reused by the next
        // superblock soon after one goes, so a known number is no proof
        // that this superblock is the one marked (marking it again is a
        // no-op for the kernel).
        let known = self.instances.get(&line.dev);
        if known.is_some_and(|i| i.seen == generation) {
            return;
        }
        let adopted = known.is_some_and(|i| i.adopted);
        // Counted once while it stays unwatched.
        let counted = self.refused.contains(&line.dev);
        self.refused_seen.insert(line.dev);
        if self.marked_now >= self.capacity && !adopted {
            if !counted {
                outcome.over_capacity += 1;
            }
            return;
        }
        let path = procfs::through_root(pid, &line.point);
        // The mount may have been replaced since mountinfo was read.
        let found = dev_at(&path);
        if found != Some(line.dev) {
            tracing::debug!(
                "the procfs at {:?} of pid {pid} is {:?} in mountinfo, {found:?} through its root: not marked now",
                String::from_utf8_lossy(&line.point),
                line.dev
            );
            return;
        }
        if let Err(e) = marker(&path) {
            if !counted {
                outcome.refused += 1;
            }
            tracing::debug!(
                "fanotify refused a mark on the procfs at {:?} of pid {pid}: {e}",
                String::from_utf8_lossy(&line.point)
            );
            return;
        }
        self.refused_seen.remove(&line.dev);
        let mut ns_link = path;
        ns_link.extend_from_slice(b"/1/ns/pid");
        let pid_ns = procfs::read_link_path(&ns_link)
            .ok()
            .and_then(|l| namespace_inode(&l))
            .or_else(|| pid_namespace_of(pid));
        let new = self
            .instances
            .get(&line.dev)
            .is_none_or(|i| i.pid_ns != pid_ns);
        if new {
            // The namespace by its own name too: the pid may be gone soon
            // (a `mount` that read through what it mounted).
            let mount_ns = procfs::read_link_path(format!("{pid}/ns/mnt").as_bytes())
                .ok()
                .and_then(|l| namespace_inode(&l))
                .map_or_else(|| "?".to_owned(), |n| n.to_string());
            tracing::info!(
                "watching the procfs at {:?} in the mount namespace mnt:[{mount_ns}] of pid {pid} (device {}:{})",
                String::from_utf8_lossy(&line.point),
                line.dev.major,
                line.dev.minor
            );
            outcome.added += 1;
        }
        if !adopted {
            self.marked_now += 1;
        }
        self.instances.insert(
            line.dev,
            Instance {
                pid_ns,
                seen: generation,
                adopted,
            },
        );
    }

    /// Which process's file the file at `path` (as the kernel names it),
    /// on mount `mount_id` of superblock `dev`, is.
    pub fn place(&self, dev: Dev, mount_id: u32, path: &[u8]) -> Option<Placed> {
        let instance = self.instances.get(&dev)?;
        let mount = self.mounts.get(&mount_id).filter(|m| m.dev == dev);
        let mut own = Vec::with_capacity(path.len());
        match mount {
            Some(m) => match below(path, &m.point) {
                Some(rest) => {
                    own.extend_from_slice(&m.root);
                    if !rest.is_empty() {
                        if own.last() != Some(&b'/') {
                            own.push(b'/');
                        }
                        own.extend_from_slice(rest.strip_prefix(b"/").unwrap_or(rest));
                    }
                }
                // A path from outside the namespace's root the mount was
                // read from: only a whole procfs's tail can be trusted.
                None if &*m.root == b"/" => own.extend_from_slice(&tail(path)?),
                None => return None,
            },
            None => own.extend_from_slice(&tail(path)?),
        }
        let file = ProcFile::parse_in_procfs(&own)?;
        let layout = Layout::from_name(file.name)?;
        let pid = file.owner_pid(0);
        Some(Placed {
            pid,
            maybe_thread: file.thread.is_none(),
            layout,
            pid_ns: instance.pid_ns,
        })
    }
}

/// Whether `pid`'s root is its mount namespace's root.
fn at_namespace_root(pid: u32) -> bool {
    procfs::read_link(pid, "root").is_ok_and(|l| l == b"/")
}

fn root_is_a_file(root: &[u8]) -> bool {
    root.rsplit(|b| *b == b'/')
        .next()
        .is_some_and(|name| Layout::from_name(name).is_some())
}

/// The superblock of the file at `path` (relative to [`procfs::root`]).
fn dev_at(path: &[u8]) -> Option<Dev> {
    let stat = procfs::stat_path(path).ok()?;
    Some(Dev {
        major: nix::sys::stat::major(stat.st_dev) as u32,
        minor: nix::sys::stat::minor(stat.st_dev) as u32,
    })
}

/// `path` below the mount point `point`: `Some(b"")` for the point
/// itself.
fn below<'p>(path: &'p [u8], point: &[u8]) -> Option<&'p [u8]> {
    if point == b"/" {
        return Some(path);
    }
    let rest = path.strip_prefix(point)?;
    (rest.is_empty() || rest.starts_with(b"/")).then_some(rest)
}

/// The last components of a path into a whole procfs that name one
/// process's file: `/<pid>/<file>` or `/<pid>/task/<tid>/<file>`.
fn tail(path: &[u8]) -> Option<Vec<u8>> {
    let parts: Vec<&[u8]> = path.rsplit(|b| *b == b'/').take(4).collect();
    let threaded = parts.len() == 4 && parts[2] == b"task";
    let take = if threaded { 4 } else { 2 };
    let mut out = Vec::new();
    for part in parts.get(..take)?.iter().rev() {
        out.push(b'/');
        out.extend_from_slice(part);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instances_with(mounts: &[(u32, Dev, &str, &str)]) -> Instances {
        let mut instances = Instances::new(8);
        for (id, dev, root, point) in mounts {
            instances.mounts.insert(
                *id,
                Mount {
                    dev: *dev,
                    root: root.as_bytes().into(),
                    point: point.as_bytes().into(),
                    seen: 0,
                },
            );
            instances.instances.insert(
                *dev,
                Instance {
                    pid_ns: Some(u64::from(dev.minor)),
                    seen: 0,
                    adopted: false,
                },
            );
        }
        instances
    }

    const HOST: Dev = Dev {
        major: 0,
        minor: 21,
    };

    fn placed(pid: u32, layout: Layout, thread: bool) -> Option<Placed> {
        Some(Placed {
            pid,
            maybe_thread: thread,
            layout,
            pid_ns: Some(21),
        })
    }

    #[test]
    fn the_mount_root_names_the_process_not_the_path() {
        let instances = instances_with(&[
            (22, HOST, "/", "/proc"),
            (43, HOST, "/10391", "/tmp/99"),
            (44, HOST, "/", "/tmp/7/task"),
            (45, HOST, "/55/maps", "/tmp/innocent"),
            (46, HOST, "/", "/srv/jail/proc"),
        ]);
        assert_eq!(
            instances.place(HOST, 22, b"/proc/42/maps"),
            placed(42, Layout::Maps, true)
        );
        assert_eq!(
            instances.place(HOST, 22, b"/proc/42/task/43/smaps"),
            placed(42, Layout::Smaps, false)
        );
        // A pid directory bound at a path of digits: the root says whose.
        assert_eq!(
            instances.place(HOST, 43, b"/tmp/99/maps"),
            placed(10391, Layout::Maps, true)
        );
        assert_eq!(
            instances.place(HOST, 43, b"/tmp/99/task/10392/maps"),
            placed(10391, Layout::Maps, false)
        );
        assert_eq!(
            instances.place(HOST, 44, b"/tmp/7/task/43/maps"),
            placed(43, Layout::Maps, true)
        );
        assert_eq!(
            instances.place(HOST, 45, b"/tmp/innocent"),
            placed(55, Layout::Maps, true)
        );
        assert_eq!(
            instances.place(HOST, 46, b"/srv/jail/proc/1/mem"),
            placed(1, Layout::Mem, true)
        );
        assert_eq!(instances.place(HOST, 22, b"/proc/42/status"), None);
    }

    #[test]
    fn another_namespaces_paths_are_placed_by_their_whole_procfs_tail() {
        let instances = instances_with(&[(65, HOST, "/", "/var/lib/c/merged/proc")]);
        // Seen from outside that namespace: relative to its root.
        assert_eq!(
            instances.place(HOST, 65, b"/proc/1/maps"),
            placed(1, Layout::Maps, true)
        );
        // An unknown mount of a known superblock: taken as a whole procfs.
        assert_eq!(
            instances.place(HOST, 99, b"/x/5/task/6/maps"),
            placed(5, Layout::Maps, false)
        );
        // An unknown superblock is not placed.
        let other = Dev {
            major: 0,
            minor: 77,
        };
        assert_eq!(instances.place(other, 65, b"/proc/1/maps"), None);
    }

    #[test]
    fn a_bound_pid_directory_seen_from_elsewhere_is_not_guessed() {
        let instances = instances_with(&[(43, HOST, "/10391", "/tmp/99")]);
        assert_eq!(instances.place(HOST, 43, b"/99/maps"), None);
    }
}
