//! The procfs mapwatch reads other processes through: an instance of its
//! own where the kernel allows it (an unattached procfs mount, a superblock
//! of its own since Linux 5.8), so that mapwatch's own reads of
//! `/proc/<pid>/…` are not reads its fanotify mark on the host's procfs
//! reports back to it (each costing the kernel an event and an open file,
//! and the reader thread a wake-up); the host's `/proc` otherwise.
//!
//! Contract: [`use_private_instance`] is called once at start-up, while
//! mapwatch still has CAP_SYS_ADMIN; before it, and where the kernel or a
//! seccomp filter refuses the mount, [`base`] is `/proc`. The instance
//! shows the processes of mapwatch's pid namespace, as `/proc` does.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::signal::kill;
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::Pid;

/// The mount, kept open for the life of the process, and the path that
/// reaches it.
static PRIVATE: OnceLock<(OwnedFd, String)> = OnceLock::new();

/// The directory whose entries are the pids: `/proc`, or the private
/// instance through its mount fd (`/proc/self/fd/<fd>`). For listing pids;
/// files are opened relative to [`root`].
pub fn base() -> &'static str {
    PRIVATE.get().map_or("/proc", |(_, path)| path.as_str())
}

/// The same directory as an fd, which `openat` walks from: no path through
/// `/proc/self/fd` at every open; also what paths through a process's root
/// (`<pid>/root/...`) are walked from.
pub fn root() -> std::io::Result<BorrowedFd<'static>> {
    static HOST: OnceLock<Option<OwnedFd>> = OnceLock::new();
    if let Some((mount, _)) = PRIVATE.get() {
        return Ok(mount.as_fd());
    }
    HOST.get_or_init(|| {
        nix::fcntl::open(
            "/proc",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
    })
    .as_ref()
    .map(OwnedFd::as_fd)
    .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no procfs at /proc"))
}

/// `<pid>/<name>` (or `<pid>` alone), on the stack.
fn relative<'b>(pid: u32, name: &str, buf: &'b mut [u8; 64]) -> std::io::Result<&'b [u8]> {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    if name.is_empty() {
        write!(cursor, "{pid}")?;
    } else {
        write!(cursor, "{pid}/{name}")?;
    }
    let len = cursor.position() as usize;
    Ok(&buf[..len])
}

/// Whether a process `pid` exists (a zombie too): one `kill(pid, 0)`, an
/// order of magnitude cheaper than procfs's failed lookup of a gone pid,
/// which is what most exec'd programs are by the time their event is
/// evaluated.
pub fn exists(pid: u32) -> bool {
    // 0 and negative numbers name process groups, not a process.
    match i32::try_from(pid) {
        Ok(pid) if pid > 0 => !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH)),
        _ => false,
    }
}

/// Opens `<base>/<pid>/<name>`, the path built on the stack: a process
/// that is gone costs no allocation. Every read of another process's
/// procfs file opens it here.
pub fn open(pid: u32, name: &str) -> std::io::Result<std::fs::File> {
    let mut buf = [0u8; 64];
    let path = relative(pid, name, &mut buf)?;
    let fd = openat(
        root()?,
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(std::fs::File::from(fd))
}

/// The target of the link `<base>/<pid>/<name>` (`exe`, `cwd`).
pub fn read_link(pid: u32, name: &str) -> std::io::Result<Vec<u8>> {
    let mut buf = [0u8; 64];
    let path = relative(pid, name, &mut buf)?;
    Ok(readlinkat(root()?, path)?.into_vec())
}

/// The owner of `<base>/<pid>` (the process's effective uid).
pub fn owner(pid: u32) -> std::io::Result<u32> {
    let mut buf = [0u8; 64];
    let path = relative(pid, "", &mut buf)?;
    Ok(fstatat(root()?, path, AtFlags::empty())?.st_uid)
}

/// The pids in the base: every live process (thread group). A pid reused
/// since it was listed looks alive to whoever keeps the list.
pub fn pids() -> std::io::Result<impl Iterator<Item = u32>> {
    Ok(std::fs::read_dir(base())?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()))
}

/// The whole of `<base>/<pid>/<name>`.
pub fn read_all(pid: u32, name: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open(pid, name)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `<pid>/root<path>`, relative to [`root`]: `path` (absolute) as the
/// process `pid` sees it, in its mount namespace and under its root.
pub fn through_root(pid: u32, path: &[u8]) -> Vec<u8> {
    let mut out = format!("{pid}/root").into_bytes();
    out.extend_from_slice(path);
    out
}

/// The target of the link at `path`, relative to [`root`] (a path through
/// another process's root: [`through_root`]).
pub fn read_link_path(path: &[u8]) -> std::io::Result<Vec<u8>> {
    Ok(readlinkat(root()?, path)?.into_vec())
}

/// The status of the file at `path`, relative to [`root`].
pub fn stat_path(path: &[u8]) -> std::io::Result<nix::sys::stat::FileStat> {
    Ok(fstatat(root()?, path, AtFlags::empty())?)
}

/// Reads `<base>/<pid>/<name>` into `buf` (the start of it, if longer);
/// the bytes read.
pub fn read_into(pid: u32, name: &str, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut file = open(pid, name)?;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Mounts a private procfs instance (not attached anywhere) and reads
/// procfs through it from now on. Returns why not when it cannot.
pub fn use_private_instance() -> Result<(), String> {
    if PRIVATE.get().is_some() {
        return Ok(());
    }
    let mount = private_mount()?;
    let path = format!("/proc/self/fd/{}", mount.as_raw_fd());
    // The instance must show this process, as /proc does.
    if std::fs::metadata(format!("{path}/{}/stat", std::process::id())).is_err() {
        return Err("the new procfs instance does not show mapwatch's own process".into());
    }
    let _ = PRIVATE.set((mount, path));
    Ok(())
}

/// `fsopen("proc")`, `fsconfig(CREATE)`, `fsmount`: a mount fd.
fn private_mount() -> Result<OwnedFd, String> {
    let failed = |call: &str| format!("{call}: {}", std::io::Error::last_os_error());
    // SAFETY: fsopen takes a NUL-terminated file system name and flags and
    // returns a new file descriptor, or -1.
    let context = unsafe {
        libc::syscall(
            libc::SYS_fsopen,
            c"proc".as_ptr(),
            libc::FSOPEN_CLOEXEC as libc::c_uint,
        )
    };
    if context < 0 {
        return Err(failed("fsopen(\"proc\")"));
    }
    // SAFETY: `context` is a file descriptor fsopen just returned, owned
    // by nobody else.
    let context = unsafe { OwnedFd::from_raw_fd(context as i32) };
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux (null, 0) on
    // the fs context fd.
    let created = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if created < 0 {
        return Err(failed("fsconfig(FSCONFIG_CMD_CREATE)"));
    }
    // SAFETY: fsmount takes the created context's fd, flags and mount
    // attributes (none) and returns a new mount fd, or -1.
    let mount = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC as libc::c_uint,
            0 as libc::c_uint,
        )
    };
    if mount < 0 {
        return Err(failed("fsmount"));
    }
    // SAFETY: `mount` is a file descriptor fsmount just returned, owned by
    // nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(mount as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};

    /// The files of this process's reads that a filesystem mark on `/proc`
    /// reports (root: fanotify needs CAP_SYS_ADMIN). A file of the private
    /// instance, an unattached mount, has a path outside `/proc`.
    fn own_reads_reported(group: &Fanotify) -> Vec<String> {
        let me = std::process::id() as i32;
        let mut paths = Vec::new();
        while let Ok(events) = group.read_events() {
            if events.is_empty() {
                break;
            }
            for event in events.iter().filter(|e| e.pid() == me) {
                if let Some(fd) = event.fd() {
                    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
                    let path = std::fs::read_link(link).unwrap_or_default();
                    paths.push(path.display().to_string());
                }
            }
        }
        paths
    }

    #[test]
    fn reads_through_the_private_instance_are_not_events_of_a_mark_on_proc() {
        let group = Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDONLY | EventFFlags::O_CLOEXEC,
        )
        .expect("fanotify_init (the unit tests run as root)");
        group
            .mark(
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM,
                MaskFlags::FAN_ACCESS,
                nix::fcntl::AT_FDCWD,
                Some("/proc"),
            )
            .expect("a filesystem mark on /proc");
        use_private_instance().expect("a procfs instance of our own (Linux 5.2+, root)");
        assert!(base().starts_with("/proc/self/fd/"), "{}", base());
        let me = std::process::id();
        own_reads_reported(&group);

        let private = std::fs::read(format!("{}/{me}/status", base())).expect("our status");
        assert!(private.starts_with(b"Name:"));
        std::fs::read(format!("/proc/{me}/status")).expect("our status");
        // Other tests of this process may read /proc meanwhile: only the
        // private instance's files are told apart, by their paths.
        let reported = own_reads_reported(&group);
        assert!(
            reported.iter().all(|p| p.starts_with("/proc/")),
            "a read through the private instance was reported: {reported:?}"
        );
        assert!(
            reported.contains(&format!("/proc/{me}/status")),
            "the mark must see the same read through /proc: {reported:?}"
        );
    }
}
