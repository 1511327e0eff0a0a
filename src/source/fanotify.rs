//! fanotify on /proc: who reads which `/proc/<pid>/maps`, and the other
//! files that give away a process's layout or memory (`smaps`,
//! `smaps_rollup`, `numa_maps`, `pagemap`, a listing of `map_files/`,
//! `mem`: [`Layout`]).
//!
//! Contract: a filesystem mark on every procfs instance the machine has
//! mounted (the host's at start, the others as a scan of every mount
//! namespace finds them: [`crate::process::procfs_instances`]), notification class,
//! `FAN_ACCESS` on files and directories (a read is what confirms; see
//! ARCHITECTURE.md; listing a directory is its read), `FAN_MODIFY` (a
//! write into `mem`: [`Access`]) and
//! `FAN_OPEN` (a maps file opened and not read, which an
//! `ioctl(PROCMAP_QUERY)` needs: [`MapOpen`]), read by a
//! thread of its own. Each event's reader pid
//! is checked first (our own reads of /proc are dropped without a syscall);
//! then the event's file is identified by one statx (a file already known
//! to be no layout file is closed there: [`crate::source::procfs_file`]),
//! its fd resolved to its path into a stack buffer and closed, and only
//! files the mount and path place as a layout file
//! ([`crate::process::proc_path`]) leave as [`ReadEvent`]s, with the pid
//! whose file it is, in batches, through a bounded channel (a full channel
//! drops and counts). An event whose file's process has already exited
//! cannot be resolved (ESRCH, reported as a negative fd by kernels with
//! `FAN_REPORT_FD_ERROR`, 6.13+): it is counted and reading goes on; so is
//! a queue overflow. Where fanotify is unavailable (no CAP_SYS_ADMIN, a
//! system-call filter, a kernel refusing the mark) [`ProcWatch::open`] says
//! which, and mapwatch runs without read confirmation.
//!
//! Nothing dates a fanotify event, and the thread that reads them can be
//! scheduled late. What orders a read against execs is the group's queue
//! itself ([`ReadOrder`]): each read(2) of the group is numbered before it
//! is made, so a read taken by a read(2) numbered above a [`ReadOrder::mark`]
//! was queued after the mark was taken. And what says that no read is still
//! on its way is the queue seen empty: each [`ReadBatch`] carries the moment
//! before which every queued read is in it or an earlier batch, and
//! [`CatchUp::ask`] has the thread send one (empty if need be) drained past
//! the moment of asking.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TrySendError;
use std::time::Duration;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
use rustc_hash::FxHashSet;
use serde::Deserialize;

use super::queue::Sender;
use crate::audit::record::Serial;
use crate::process::at_read::AtRead;
use crate::process::live::thread_group;
use crate::process::mountinfo::Dev;
use crate::process::pid_ns::{PidNamespaces, pid_namespace_of};
use crate::process::proc_path::{Layout, may_name_layout};
use crate::process::procfs;
use crate::process::procfs_instances::{Instances, ScanOutcome};
use crate::source::procfs_file::{NotLayout, ProcfsFile};

/// Since Linux 6.13: an event whose file can't be opened for us carries
/// `-errno` in `fd` instead of failing the read.
const FAN_REPORT_FD_ERROR: u32 = 0x0000_2000;
const FAN_Q_OVERFLOW: u64 = 0x0000_4000;
const METADATA_LEN: usize = 24;
/// The longest path of a read's file resolved: a container's procfs
/// seen through its root's mount point is a long one.
const PATH_BUF: usize = 512;
/// How long the reader lets events accumulate after a batch, when events
/// come closer than [`DENSE`].
const COALESCE: Duration = Duration::from_millis(2);
const DENSE: Duration = Duration::from_millis(5);
/// Wake-ups in a row, each within [`DENSE`] of the last, that make a burst.
const BURST: u32 = 16;

/// `[fanotify]`: read confirmation.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FanotifyConfig {
    /// Watch /proc with fanotify to confirm reads and see reads no argument names.
    pub enabled: bool,
    /// How long an exec alert waits at least for the read that confirms it, ms.
    pub confirm_window_ms: u64,
    /// How long a read waits for its exec event before the file rules see it, ms.
    pub hold_ms: u64,
    /// How often every mount namespace is looked at for procfs mounts, ms.
    pub procfs_scan_ms: u64,
    /// Procfs superblocks watched at most (each is a fanotify mark).
    pub max_procfs: usize,
}

impl Default for FanotifyConfig {
    fn default() -> Self {
        FanotifyConfig {
            enabled: true,
            confirm_window_ms: 250,
            hold_ms: 100,
            procfs_scan_ms: 1000,
            max_procfs: 4096,
        }
    }
}

impl FanotifyConfig {
    /// The first key whose value cannot be used, and what it must be.
    pub fn invalid_key(&self) -> Option<(&'static str, &'static str)> {
        if self.confirm_window_ms == 0 {
            return Some(("confirm_window_ms", "greater than 0"));
        }
        if self.hold_ms == 0 {
            return Some(("hold_ms", "greater than 0"));
        }
        if !(100..=60_000).contains(&self.procfs_scan_ms) {
            return Some(("procfs_scan_ms", "between 100 and 60000"));
        }
        if !(1..=65_536).contains(&self.max_procfs) {
            return Some(("max_procfs", "between 1 and 65536"));
        }
        None
    }
}

/// A process read a memory map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadEvent {
    /// The reader (thread group id).
    pub pid: u32,
    /// The process whose map was read (host pid).
    pub target: u32,
    /// Its pid in the procfs the file was read through, when that is
    /// another pid namespace's (a container's): what the reader named it.
    pub target_ns_pid: Option<u32>,
    /// Which of its layout files.
    pub layout: Layout,
    /// A read, or (of `mem`) a write.
    pub access: Access,
    /// The file as the kernel names it: `/proc/<pid>/maps` or
    /// `/proc/<pid>/task/<tid>/maps` (`self` already resolved), or through
    /// whatever mount the reader took (`/host/proc/...`, a bind mount); for
    /// a procfs of another mount namespace, relative to that namespace's
    /// root.
    pub path: Vec<u8>,
    /// When the read(2) that took it off the queue returned: the read
    /// happened before, by as long as the thread was late.
    pub seen: Instant,
    /// The number of that read(2) of the group ([`ReadOrder`]).
    pub taken_by: u64,
    /// Its place among the events that read(2) took: with `taken_by`, the
    /// event's id within a run.
    pub index: u32,
    /// The reader as procfs showed it once the read was taken, for reads of
    /// another process's map (`None` for its own, or when it was gone).
    pub reader: Option<Box<AtRead>>,
    pub via: Via,
}

/// What was done to the file. The kernel reports a write to
/// `/proc/<pid>/mem` (`FAN_MODIFY`) as it does a read: once it happened,
/// with the writer's pid; a write that failed is none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Access {
    #[default]
    Read,
    Write,
}

impl Access {
    /// `event.type` and `event.action`, as ECS names them.
    pub fn ecs(self) -> (&'static str, &'static str) {
        match self {
            Access::Read => ("access", "read"),
            Access::Write => ("change", "write"),
        }
    }
}

/// How the map was read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Via {
    /// read(2) and kin, seen by fanotify.
    #[default]
    Read,
    /// `ioctl(PROCMAP_QUERY)` (Linux 6.11+), seen by audit: no read(2),
    /// so fanotify sees nothing. Its audit serial orders it among its
    /// process's execs.
    MapQuery(Serial),
}

impl Via {
    /// `mapwatch.read.via`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Read => "read",
            Via::MapQuery(_) => "procmap_query",
        }
    }
}

/// A maps file opened, not (yet) read: what an `ioctl(PROCMAP_QUERY)`
/// by the same process, which audit sees with its fd alone, was made on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapOpen {
    pub pid: u32,
    pub target: u32,
    pub path: Vec<u8>,
    /// The number of the read(2) of the group that took it.
    pub taken_by: u64,
    pub reader: Option<Box<AtRead>>,
}

/// A read whose file could not be opened for us: the process whose file it
/// was had exited (a maps, smaps, mem, environ… file, which only open while
/// their process lives). Which file, and whose, is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnresolvedRead {
    /// The reader; `None` where the kernel (before 6.13) dropped the event.
    pub pid: Option<u32>,
    pub reader: Option<Box<AtRead>>,
}

/// What the reader thread sends the pipeline after each look at the queue.
#[derive(Debug)]
pub struct ReadBatch {
    pub reads: Vec<ReadEvent>,
    pub opens: Vec<MapOpen>,
    pub unresolved: Vec<UnresolvedRead>,
    /// Every read the kernel queued before this moment is in this batch or
    /// an earlier one: the queue was seen empty after it.
    pub drained_until: Instant,
}

/// Asks the reader thread for a [`ReadBatch`] drained past the moment of
/// asking, sent even when it holds no read: the pipeline's way to learn
/// that a read it waits for never happened, however late the thread runs.
pub struct CatchUp {
    asked: Arc<EventFd>,
}

impl CatchUp {
    pub fn ask(&self) {
        // Fails only when the counter would overflow: it is asked already.
        let _ = self.asked.write(1);
    }
}

/// Counters of the fanotify source.
#[derive(Default, Debug)]
pub struct WatchStats {
    pub events: AtomicU64,
    /// Reads of layout files (maps and the others: [`Layout`]).
    pub maps_events: AtomicU64,
    pub unresolved: AtomicU64,
    pub overflows: AtomicU64,
    pub dropped: AtomicU64,
    /// Reads of a layout file whose process has no host pid mapwatch can
    /// find (a thread named at the top of another namespace's procfs, a
    /// process of a namespace nested in it).
    pub unplaced: AtomicU64,
    /// Procfs superblocks watched, as of the last scan.
    pub procfs_watched: AtomicU64,
    /// Procfs superblocks found and not watched (each counted once): over
    /// `max_procfs`, or refused by the kernel (at its limit of marks).
    pub procfs_unwatched: AtomicU64,
}

/// The fanotify group with its /proc mark.
pub struct ProcWatch {
    group: Fanotify,
    /// What every procfs mark asks for.
    mask: MaskFlags,
    /// The superblock marked at start (the host's procfs).
    host_dev: Option<Dev>,
    scan_every: Duration,
    max_procfs: usize,
    reads_begun: Arc<AtomicU64>,
    asked: Arc<EventFd>,
}

/// The order of reads among other events, as the group's queue has it.
///
/// The reader thread numbers each read(2) of the group before making it.
/// If the queue is empty when [`ReadOrder::mark`] looks, every event queued
/// before that moment was taken by a read(2) numbered no higher than the
/// mark (it began before the look). So a read taken by a read(2) numbered
/// above the mark happened after the mark was taken: after every exec whose
/// records the caller already had, however late either thread ran.
pub struct ReadOrder {
    group: OwnedFd,
    reads_begun: Arc<AtomicU64>,
}

impl ReadOrder {
    /// The number of the last read(2) begun, if the group's queue is empty
    /// now; `None` while events wait (nothing can be concluded).
    pub fn mark(&self) -> Option<u64> {
        let mut queued: libc::c_int = 0;
        // SAFETY: `group` is an open fanotify fd, whose FIONREAD writes one
        // int, the bytes of events queued, to the pointer it is given.
        let rc = unsafe { libc::ioctl(self.group.as_raw_fd(), libc::FIONREAD, &mut queued) };
        // The count is read after the queue was seen empty: a read(2) begun
        // after that look takes only events queued after it.
        (rc == 0 && queued == 0).then(|| self.reads_begun.load(Ordering::SeqCst))
    }
}

/// The procfs that the host's processes read: the one mounted in pid 1's
/// mount namespace. Under systemd's `ProtectKernelTunables=`,
/// `ProtectControlGroups=` or `ProcSubset=`, a service's own `/proc` is a
/// procfs instance of its own (another superblock), and a filesystem mark
/// there would see only the reads made inside the service.
pub const HOST_PROC: &str = "/proc/1/root/proc";

impl ProcWatch {
    /// Sets up the group and its mark on the host's procfs ([`HOST_PROC`];
    /// this process's `/proc` where pid 1's root can't be followed).
    pub fn open(config: &FanotifyConfig) -> Result<ProcWatch, String> {
        let base = InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC;
        let file_flags = EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC;
        let with_fd_errors = Fanotify::init(
            base | InitFlags::from_bits_retain(FAN_REPORT_FD_ERROR),
            file_flags,
        );
        let says_which_failed = with_fd_errors.is_ok();
        let group = with_fd_errors
            .or_else(|_| Fanotify::init(base, file_flags))
            .map_err(|e| refused("fanotify_init", e))?;
        let proc = watched_proc();
        // A filesystem mark sees every mount of that procfs, in every mount
        // namespace. Kernels before 4.20 only have mount marks, which see
        // the reads made through that one mount.
        // Opens cost a procfs burst a sixth more CPU (BENCHMARKS.md): only
        // where PROCMAP_QUERY exists to make them worth it.
        let mut mask = if kernel_has_procmap_query() {
            MaskFlags::FAN_ACCESS | MaskFlags::FAN_OPEN
        } else {
            MaskFlags::FAN_ACCESS
        };
        // Writes (into `mem`) and directory reads (listings of
        // `map_files/`) come with every other procfs write and listing,
        // some of processes about to exit, whose files the kernel then
        // cannot open. Before `FAN_REPORT_FD_ERROR` (6.13) such an event
        // fails the group's read(2) without saying what it was, and would
        // count as a lost read of a map: only where the kernel says.
        if says_which_failed {
            mask |= MaskFlags::FAN_MODIFY | MaskFlags::FAN_ONDIR;
        }
        let mark = |flags: MarkFlags| {
            group.mark(
                MarkFlags::FAN_MARK_ADD | flags,
                mask,
                nix::fcntl::AT_FDCWD,
                Some(proc),
            )
        };
        mark(MarkFlags::FAN_MARK_FILESYSTEM)
            .or_else(|e| match e {
                Errno::EINVAL => {
                    tracing::warn!(
                        "this kernel has no fanotify filesystem marks (Linux 4.20+): watching the mount {proc} only; reads through other mounts of it go unconfirmed"
                    );
                    mark(MarkFlags::FAN_MARK_MOUNT)
                }
                e => Err(e),
            })
            .map_err(|e| match e {
                Errno::EPERM => refused("fanotify_mark", e),
                e => format!("the kernel refused a fanotify mark on {proc}: {e}"),
            })?;
        let asked = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(|e| format!("eventfd for the fanotify reader: {e}"))?;
        tracing::info!(
            "watching reads of memory maps on {proc}, and on every other procfs mounted (looked for every {} ms)",
            config.procfs_scan_ms
        );
        let host_dev = nix::sys::stat::stat(proc).ok().map(|st| Dev {
            major: nix::sys::stat::major(st.st_dev) as u32,
            minor: nix::sys::stat::minor(st.st_dev) as u32,
        });
        Ok(ProcWatch {
            group,
            mask,
            host_dev,
            scan_every: Duration::from_millis(config.procfs_scan_ms),
            max_procfs: config.max_procfs,
            reads_begun: Arc::new(AtomicU64::new(0)),
            asked: Arc::new(asked),
        })
    }

    /// A handle on the order of reads, for the thread that sees the execs.
    pub fn order(&self) -> io::Result<ReadOrder> {
        Ok(ReadOrder {
            group: self.group.as_fd().try_clone_to_owned()?,
            reads_begun: self.reads_begun.clone(),
        })
    }

    /// A handle to ask the reader thread for a batch drained past now.
    pub fn catch_up(&self) -> CatchUp {
        CatchUp {
            asked: self.asked.clone(),
        }
    }
}

/// Whether this kernel (6.11+) answers `ioctl(PROCMAP_QUERY)` on a maps
/// file, which reads a map with no read(2): then opens of maps files are
/// watched too ([`MapOpen`]).
fn kernel_has_procmap_query() -> bool {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| release_at_least(u.release().as_encoded_bytes(), (6, 11)))
        .unwrap_or(true)
}

/// Whether a kernel release (`6.18.4-fc`, `5.10.0-32-amd64`) is at least
/// `major.minor`; `None` when it does not start with them.
fn release_at_least(release: &[u8], (major, minor): (u32, u32)) -> Option<bool> {
    let mut parts = release
        .split(|b| !b.is_ascii_digit())
        .map(crate::audit::record::parse_decimal);
    let found = (parts.next()??, parts.next()??);
    Some(found >= (major, minor))
}

/// [`HOST_PROC`] when it can be followed (it needs `CAP_SYS_PTRACE` over
/// pid 1) and is a procfs, else `/proc`.
fn watched_proc() -> &'static str {
    match nix::sys::statfs::statfs(HOST_PROC) {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC => HOST_PROC,
        Ok(_) => "/proc",
        Err(e) => {
            tracing::warn!(
                "cannot follow {HOST_PROC} ({e}): watching this process's /proc, which under a sandbox may not be the host's"
            );
            "/proc"
        }
    }
}

fn refused(call: &str, e: Errno) -> String {
    match e {
        Errno::EPERM => crate::privileges::eperm_cause(call, caps::Capability::CAP_SYS_ADMIN),
        e => format!("{call}: {e}"),
    }
}

/// Resolves an event's fd to its path, in `buf`, relative to an open
/// `/proc/self/fd` (saves walking `/proc/self` for every event).
fn fd_path<'b>(fd_dir: &OwnedFd, fd: RawFd, buf: &'b mut [u8; PATH_BUF]) -> Option<&'b [u8]> {
    let mut link = [0u8; 16];
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    let mut rest = fd.unsigned_abs();
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let len = digits.len() - start;
    link[..len].copy_from_slice(&digits[start..]);
    link[len] = 0;
    // SAFETY: `fd_dir` is an open directory fd; `link` is NUL-terminated
    // within its bounds; `buf` is writable for its whole length, which is
    // what we pass; readlinkat writes at most that many bytes.
    let len = unsafe {
        libc::readlinkat(
            fd_dir.as_raw_fd(),
            link.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    // A length equal to the buffer may be truncated: not a maps path anyway.
    usize::try_from(len)
        .ok()
        .filter(|l| *l < buf.len())
        .map(|l| &buf[..l])
}

fn close(fd: RawFd) {
    let _ = nix::unistd::close(fd);
}

/// Which process's file an event's file is: every procfs watched, its
/// mounts, and other pid namespaces' pids, kept by the reader thread.
struct Placer<'w> {
    watch: &'w ProcWatch,
    instances: Instances,
    namespaces: PidNamespaces,
    host_ns: Option<u64>,
    next_scan: Instant,
    /// Mounts a read came through that no scan had seen, since
    /// `unknown_since`: each makes one scan of its own per period.
    unknown_mounts: FxHashSet<u32>,
    unknown_since: Option<Instant>,
    scans: u64,
    /// Files whose path said they are no layout file: a reread of one
    /// costs no readlink.
    not_layout: NotLayout,
    /// Whether the kernel takes evictable ignore marks (5.19+).
    ignore_marks: bool,
}

/// Whose layout file a read was of.
enum Placement {
    /// Not a layout file (or not a file of a procfs watched).
    Other,
    /// Known by its own name, through a mount rooted at a directory, to be
    /// no layout file while its inode lives.
    NotLayout,
    /// A layout file of a process with no host pid to be found.
    Unplaced,
    Found {
        target: u32,
        target_ns_pid: Option<u32>,
        layout: Layout,
    },
}

impl<'w> Placer<'w> {
    fn new(watch: &'w ProcWatch) -> Self {
        let host_ns = pid_namespace_of(std::process::id());
        let mut instances = Instances::new(watch.max_procfs);
        if let Some(dev) = watch.host_dev {
            instances.adopt(dev, host_ns);
        }
        Placer {
            watch,
            instances,
            namespaces: PidNamespaces::default(),
            host_ns,
            next_scan: Instant::now(),
            unknown_mounts: FxHashSet::default(),
            unknown_since: None,
            scans: 0,
            not_layout: NotLayout::default(),
            ignore_marks: true,
        }
    }

    /// Looks at every mount namespace when it is time to.
    fn scan_if_due(&mut self, now: Instant, stats: &WatchStats) {
        if now < self.next_scan {
            return;
        }
        let watch = self.watch;
        let first = self.scans == 0;
        let outcome = self.instances.scan(&mut |path| mark(watch, path));
        self.scans += 1;
        if first {
            tracing::info!(
                "procfs: {} mount namespace(s) looked at, {} procfs mount(s), {} procfs instance(s) watched",
                outcome.namespaces,
                outcome.mounts,
                self.instances.watched()
            );
        }
        self.next_scan = now + watch.scan_every;
        if self
            .unknown_since
            .is_none_or(|at| now.saturating_duration_since(at) >= watch.scan_every)
        {
            self.unknown_mounts.clear();
            self.unknown_since = Some(now);
        }
        stats
            .procfs_watched
            .store(self.instances.watched() as u64, Ordering::Relaxed);
        self.note(outcome, stats);
    }

    fn note(&self, outcome: ScanOutcome, stats: &WatchStats) {
        let unwatched = outcome.refused + outcome.over_capacity;
        stats
            .procfs_unwatched
            .fetch_add(u64::from(unwatched), Ordering::Relaxed);
        if unwatched > 0 {
            tracing::warn!(
                "{} procfs instance(s) not watched ({} over fanotify.max_procfs = {}, {} refused by the kernel): reads through them are not seen",
                unwatched,
                outcome.over_capacity,
                self.watch.max_procfs,
                outcome.refused
            );
        }
        if outcome.added > 0 || outcome.gone > 0 {
            tracing::debug!(
                "procfs instances: {} new, {} gone, {} watched",
                outcome.added,
                outcome.gone,
                self.instances.watched()
            );
        }
    }

    /// A scan now: a read through a mount no namespace showed when last
    /// looked at. Each such mount asks once per scan period (one never
    /// attached anywhere, `open_tree(2)`'s, would ask at every read).
    fn scan_soon(&mut self, stats: &WatchStats) {
        let now = Instant::now();
        self.next_scan = now;
        self.scan_if_due(now, stats);
    }

    /// Stops the kernel reporting the file open at `fd`, which is no
    /// layout file: `ps` and `top` reread the same few files of every
    /// process, and each event costs the kernel a file opened for us. An
    /// evictable ignore mark goes with the inode, so a process gone leaves
    /// nothing behind. Where the kernel refuses one (before 5.19; out of
    /// marks), the file's rereads still cost one statx each.
    fn ignore(&mut self, fd: RawFd, file: &ProcfsFile, of_file: bool) {
        self.not_layout.remember(file);
        // A directory's ignore mask would speak for its children too.
        if !of_file || !self.ignore_marks {
            return;
        }
        let flags = MarkFlags::FAN_MARK_ADD
            | MarkFlags::FAN_MARK_IGNORED_MASK
            | MarkFlags::FAN_MARK_IGNORED_SURV_MODIFY
            | MarkFlags::FAN_MARK_EVICTABLE;
        let mask = self.watch.mask & !MaskFlags::FAN_ONDIR;
        // SAFETY: `fd` is the event's open fd, closed only after this call.
        let file_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if let Err(e) = self
            .watch
            .group
            .mark(flags, mask, file_fd, None::<&std::path::Path>)
        {
            tracing::info!(
                "procfs files that are no layout file stay reported, one statx each ({e} on an evictable ignore mark)"
            );
            self.ignore_marks = false;
        }
    }

    /// The time until the next scan.
    fn until_scan(&self) -> Duration {
        self.next_scan.saturating_duration_since(Instant::now())
    }

    /// Whose layout file the open file `fd`, at `path`, read by `reader`,
    /// is.
    fn place(
        &mut self,
        file: &ProcfsFile,
        path: &[u8],
        reader: u32,
        stats: &WatchStats,
    ) -> Placement {
        let (dev, mount_id) = (file.dev(), file.mount_id);
        let layout_name = may_name_layout(path);
        if !layout_name {
            // Through a mount rooted at a directory, a path's last name is
            // the file's own, which no mount made later changes.
            if self.instances.names_files_by_path(mount_id, dev) {
                return Placement::NotLayout;
            }
            // A mount no scan has seen may be a file's bind mount under any
            // name: looked at below.
            let known = mount_id == 0 || self.instances.knows_mount(mount_id, dev);
            if known && !self.instances.has_file_mounts() {
                return Placement::Other;
            }
        }
        // 0: a kernel before 5.8, whose statx has no mount id; then only
        // whole procfs mounts are placed, by their path's last components.
        if mount_id != 0 && !self.instances.knows_mount(mount_id, dev) {
            // Mounted since the last scan: the reader's namespace has it,
            // or (the reader gone) some namespace still does.
            let watch = self.watch;
            let outcome = self.instances.learn(reader, &mut |path| mark(watch, path));
            self.note(outcome, stats);
            if !self.instances.knows_mount(mount_id, dev) && self.unknown_mounts.insert(mount_id) {
                self.scan_soon(stats);
            }
            if !self.instances.knows_mount(mount_id, dev) {
                // A path alone would name whatever a bind mount's name says.
                return if layout_name {
                    Placement::Unplaced
                } else {
                    Placement::Other
                };
            }
        }
        let Some(placed) = self.instances.place(dev, mount_id, path) else {
            tracing::debug!(
                "not placed: {} on mount {mount_id} of {dev:?}",
                String::from_utf8_lossy(path)
            );
            return Placement::Other;
        };
        let foreign = placed.pid_ns.is_some() && placed.pid_ns != self.host_ns;
        let target = match (foreign, placed.pid_ns) {
            (true, Some(ns)) => self
                .namespaces
                .host_pid(ns, placed.pid, reader, Instant::now()),
            // A thread's directory at the top of procfs names its process.
            _ if placed.maybe_thread => Some(thread_group(placed.pid).unwrap_or(placed.pid)),
            _ => Some(placed.pid),
        };
        match target {
            Some(target) => Placement::Found {
                target,
                target_ns_pid: foreign.then_some(placed.pid),
                layout: placed.layout,
            },
            None => {
                tracing::debug!(
                    "no host pid for pid {} of pid namespace {:?} (read by {reader}, host namespace {:?})",
                    placed.pid,
                    placed.pid_ns,
                    self.host_ns
                );
                Placement::Unplaced
            }
        }
    }
}

/// Marks the procfs at `path` (relative to the procfs mapwatch reads) as
/// the host's is marked.
fn mark(watch: &ProcWatch, path: &[u8]) -> nix::Result<()> {
    let dir = procfs::root().map_err(|_| Errno::ENOENT)?;
    crate::privileges::with_effective(crate::privileges::MARKING, || {
        watch.group.mark(
            MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM,
            watch.mask,
            dir,
            Some(path),
        )
    })
}

/// Parses one read() worth of events into the batch: maps reads, and
/// reads that could not be resolved.
#[allow(clippy::too_many_arguments)]
fn parse_events(
    buf: &[u8],
    fd_dir: &OwnedFd,
    own_pid: u32,
    placer: &mut Placer<'_>,
    stats: &WatchStats,
    out: &mut ReadBatch,
    seen: Instant,
    taken_by: u64,
) {
    let mut offset = 0;
    let mut path_buf = [0u8; PATH_BUF];
    let mut index = 0u32;
    while offset + METADATA_LEN <= buf.len() {
        let m = &buf[offset..];
        let event_len = u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize;
        let mask = u64::from_ne_bytes([m[8], m[9], m[10], m[11], m[12], m[13], m[14], m[15]]);
        let fd = i32::from_ne_bytes([m[16], m[17], m[18], m[19]]);
        let pid = i32::from_ne_bytes([m[20], m[21], m[22], m[23]]) as u32;
        if event_len < METADATA_LEN {
            break;
        }
        offset += event_len;
        stats.events.fetch_add(1, Ordering::Relaxed);
        if mask & FAN_Q_OVERFLOW != 0 {
            stats.overflows.fetch_add(1, Ordering::Relaxed);
        }
        if pid == own_pid {
            if fd >= 0 {
                close(fd);
            }
            continue;
        }
        // A listing is a directory's read; only files' reads are lost
        // reads of a map when unresolved.
        let read = mask & MaskFlags::FAN_ACCESS.bits() != 0;
        let of_file = mask & MaskFlags::FAN_ONDIR.bits() == 0;
        // The queue merges a read and a write of one file by one process
        // into one event: both are reported.
        let write = mask & MaskFlags::FAN_MODIFY.bits() != 0;
        if fd < 0 {
            // FAN_NOFD (overflow) or -errno (the file's process is gone);
            // an open alone is no read (its read, if any, comes next).
            if fd != -1 && read && of_file {
                stats.unresolved.fetch_add(1, Ordering::Relaxed);
                out.unresolved.push(UnresolvedRead {
                    pid: Some(pid),
                    reader: AtRead::take(pid).map(Box::new),
                });
            }
            continue;
        }
        let file = ProcfsFile::of(fd).filter(|file| !placer.not_layout.contains(file));
        let path_len = file
            .as_ref()
            .and_then(|_| fd_path(fd_dir, fd, &mut path_buf))
            .map(<[u8]>::len);
        let placement = match (file, path_len) {
            (Some(file), Some(len)) => placer.place(&file, &path_buf[..len], pid, stats),
            _ => Placement::Other,
        };
        if let (Placement::NotLayout, Some(file)) = (&placement, &file) {
            placer.ignore(fd, file, of_file);
        }
        close(fd);
        let (target, target_ns_pid, layout) = match placement {
            Placement::Other | Placement::NotLayout => continue,
            // Most often a process's read of its own map, both gone
            // already: counted, as nothing says whose map it was.
            Placement::Unplaced => {
                stats.unplaced.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Placement::Found {
                target,
                target_ns_pid,
                layout,
            } => (target, target_ns_pid, layout),
        };
        let path = &path_buf[..path_len.unwrap_or(0)];
        // The reader first, before it can exec another program or be
        // reaped; not for a read of its own map.
        let reader = (target != pid)
            .then(|| AtRead::take(pid).map(Box::new))
            .flatten();
        let write = write && layout == Layout::Mem;
        if !read && !write {
            if layout != Layout::Maps {
                continue;
            }
            out.opens.push(MapOpen {
                pid,
                target,
                path: path.to_vec(),
                taken_by,
                reader,
            });
            continue;
        }
        let accesses = [(read, Access::Read), (write, Access::Write)];
        for (_, access) in accesses.into_iter().filter(|(happened, _)| *happened) {
            stats.maps_events.fetch_add(1, Ordering::Relaxed);
            out.reads.push(ReadEvent {
                pid,
                target,
                target_ns_pid,
                layout,
                access,
                path: path.to_vec(),
                seen,
                taken_by,
                index,
                reader: reader.clone(),
                via: Via::Read,
            });
            index += 1;
        }
    }
}

/// Reads events on a thread of its own until the pipeline is gone.
///
/// A thread of its own, not a source in the pipeline's epoll set: there the
/// group's fd would wake the pipeline for every event queued while the
/// reader lets a burst accumulate; here the first event of a burst wakes the
/// thread once, and the rest are read together.
pub fn spawn_reader(
    watch: ProcWatch,
    tx: Sender<ReadBatch>,
    stats: Arc<WatchStats>,
) -> io::Result<std::thread::JoinHandle<()>> {
    let fd_dir: OwnedFd = std::fs::File::open("/proc/self/fd")?.into();
    std::thread::Builder::new()
        .name("mapwatch-proc".into())
        .spawn(move || {
            if let Err(e) = read_loop(&watch, &fd_dir, &tx, &stats) {
                tracing::error!("reading fanotify events stopped: {e}");
            }
        })
}

fn read_loop(
    watch: &ProcWatch,
    fd_dir: &OwnedFd,
    tx: &Sender<ReadBatch>,
    stats: &WatchStats,
) -> io::Result<()> {
    let own_pid = std::process::id();
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_wake: Option<Instant> = None;
    let mut dense_streak = 0u32;
    let mut placer = Placer::new(watch);
    loop {
        placer.scan_if_due(Instant::now(), stats);
        let mut batch = ReadBatch {
            reads: Vec::new(),
            opens: Vec::new(),
            unresolved: Vec::new(),
            drained_until: Instant::now(),
        };
        let mut any = false;
        let mut asked = false;
        // Waits for the first event (or an ask, or the next scan); then
        // drains what is queued until a look at a known moment finds the
        // queue empty.
        let mut wait = timeout(placer.until_scan());
        let drained_until = loop {
            let looked = Instant::now();
            let ready = match wait_for_events(watch, wait) {
                Ok(ready) => ready,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            asked |= ready.asked;
            if !ready.events {
                if wait == PollTimeout::ZERO {
                    break looked;
                }
                if !ready.asked {
                    // Nothing came before the next scan was due.
                    placer.scan_if_due(Instant::now(), stats);
                    wait = timeout(placer.until_scan());
                    continue;
                }
                // Woken by an ask alone, at no known moment: look again.
                wait = PollTimeout::ZERO;
                continue;
            }
            wait = PollTimeout::ZERO;
            // Numbered before it is made: see `ReadOrder`.
            let taken_by = watch.reads_begun.fetch_add(1, Ordering::SeqCst) + 1;
            match nix::unistd::read(&watch.group, &mut buf) {
                Ok(0) => {}
                Ok(len) => {
                    any = true;
                    let seen = Instant::now();
                    parse_events(
                        &buf[..len],
                        fd_dir,
                        own_pid,
                        &mut placer,
                        stats,
                        &mut batch,
                        seen,
                        taken_by,
                    );
                }
                // Kernels without FAN_REPORT_FD_ERROR fail the read when the
                // file's process has exited: that event is lost, not fatal.
                Err(Errno::ESRCH | Errno::ENOENT) => {
                    stats.unresolved.fetch_add(1, Ordering::Relaxed);
                    batch.unresolved.push(UnresolvedRead {
                        pid: None,
                        reader: None,
                    });
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        };
        batch.drained_until = drained_until;
        let carries_reads =
            !batch.reads.is_empty() || !batch.opens.is_empty() || !batch.unresolved.is_empty();
        if carries_reads || asked {
            match tx.try_send(batch) {
                Ok(()) => {}
                // An empty answer lost costs the pipeline one more ask.
                Err(TrySendError::Full(_)) if carries_reads => {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => return Ok(()),
            }
        }
        // /proc is read in bursts (ps, top): in a sustained burst, let the
        // rest of it queue up and read it at once. Anything short of that
        // (a few reads in a row, like `grep; cat /proc/self/maps`) is read
        // at once: a short-lived reader's own map can only be resolved while
        // it lives.
        if any {
            let now = Instant::now();
            if last_wake.is_some_and(|t| now.duration_since(t) < DENSE) {
                dense_streak += 1;
            } else {
                dense_streak = 0;
            }
            last_wake = Some(now);
            if dense_streak >= BURST {
                std::thread::sleep(COALESCE);
            }
        }
    }
}

/// A poll timeout of at least `wait` (rounded up to a millisecond).
fn timeout(wait: Duration) -> PollTimeout {
    let ms = wait.as_micros().div_ceil(1000);
    PollTimeout::try_from(i32::try_from(ms).unwrap_or(i32::MAX)).unwrap_or(PollTimeout::MAX)
}

/// What a wait found: events queued, an ask (taken, so it is answered once).
struct Ready {
    events: bool,
    asked: bool,
}

/// Waits at most `timeout` for events or an ask. The wait is a poll, not a
/// blocking read(2): a read(2) is numbered when it begins, and one that sat
/// blocked would carry a number older than its events.
fn wait_for_events(watch: &ProcWatch, timeout: PollTimeout) -> Result<Ready, Errno> {
    let mut poll = [
        PollFd::new(watch.group.as_fd(), PollFlags::POLLIN),
        PollFd::new(watch.asked.as_fd(), PollFlags::POLLIN),
    ];
    nix::poll::poll(&mut poll, timeout)?;
    let readable = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
    let events = readable(&poll[0]);
    let asked = readable(&poll[1]) && watch.asked.read().is_ok();
    Ok(Ready { events, asked })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(mask: u64, fd: i32, pid: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(METADATA_LEN as u32).to_ne_bytes());
        m.extend_from_slice(&[3, 0]);
        m.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        m.extend_from_slice(&mask.to_ne_bytes());
        m.extend_from_slice(&fd.to_ne_bytes());
        m.extend_from_slice(&pid.to_ne_bytes());
        m
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert_eq!(release_at_least(b"6.18.44-fc-v669", (6, 11)), Some(true));
        assert_eq!(release_at_least(b"6.11.0", (6, 11)), Some(true));
        assert_eq!(release_at_least(b"6.1.0-28-amd64", (6, 11)), Some(false));
        assert_eq!(release_at_least(b"5.10.0-32-amd64", (6, 11)), Some(false));
        assert_eq!(release_at_least(b"7.2", (6, 11)), Some(true));
        assert_eq!(release_at_least(b"linux", (6, 11)), None);
    }

    #[test]
    fn parses_overflow_fd_errors_and_truncation() {
        let stats = WatchStats::default();
        let mut out = ReadBatch {
            reads: Vec::new(),
            opens: Vec::new(),
            unresolved: Vec::new(),
            drained_until: Instant::now(),
        };
        let mut buf = metadata(FAN_Q_OVERFLOW, -1, 0);
        buf.extend(metadata(
            MaskFlags::FAN_ACCESS.bits(),
            -3,
            4_000_000_000u32 as i32,
        ));
        buf.extend_from_slice(&[1, 2, 3]);
        let fd_dir: OwnedFd = std::fs::File::open("/proc/self/fd")
            .expect("/proc/self/fd")
            .into();
        let now = Instant::now();
        let watch = ProcWatch::open(&FanotifyConfig::default()).expect("a fanotify group");
        let mut placer = Placer::new(&watch);
        parse_events(&buf, &fd_dir, 1, &mut placer, &stats, &mut out, now, 1);
        assert!(out.reads.is_empty());
        // The reader of a file gone with its process is still named.
        assert_eq!(
            out.unresolved,
            [UnresolvedRead {
                pid: Some(4_000_000_000),
                reader: None
            }]
        );
        assert_eq!(stats.overflows.load(Ordering::Relaxed), 1);
        assert_eq!(stats.unresolved.load(Ordering::Relaxed), 1);
        assert_eq!(stats.events.load(Ordering::Relaxed), 2);
    }
}
