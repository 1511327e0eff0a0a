//! fanotify on /proc: who opens and reads which `/proc/<pid>/maps`.
//!
//! Contract: one mount mark on the host's /proc, notification class,
//! `FAN_OPEN | FAN_ACCESS`, non-blocking under tokio. Each event's reader pid
//! is checked first (our own reads of /proc are dropped without a syscall);
//! then the event's fd is resolved to its path into a stack buffer and
//! closed, and only paths of the form `/proc/<pid>/.../maps` leave as
//! [`ReadEvent`]s, in batches, through a bounded channel (a full channel
//! drops and counts). An event whose file's process has already exited
//! cannot be resolved (ESRCH, reported as a negative fd by kernels with
//! `FAN_REPORT_FD_ERROR`, 6.13+): it is counted and reading goes on; so is
//! a queue overflow. Where fanotify is unavailable (no CAP_SYS_ADMIN, a
//! kernel refusing the mark) [`ProcWatch::open`] says why, and mapwatch runs
//! without read confirmation.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// Since Linux 6.13: an event whose file can't be opened for us carries
/// `-errno` in `fd` instead of failing the read.
const FAN_REPORT_FD_ERROR: u32 = 0x0000_2000;
const FAN_ACCESS: u64 = 0x0000_0001;
const FAN_OPEN: u64 = 0x0000_0020;
const FAN_Q_OVERFLOW: u64 = 0x0000_4000;
const METADATA_LEN: usize = 24;

/// What the reader did to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadMask {
    pub opened: bool,
    pub read: bool,
}

/// A process opened or read a memory map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadEvent {
    /// The reader (thread group id).
    pub pid: u32,
    pub mask: ReadMask,
    /// The file as the kernel names it: `/proc/<pid>/maps` or
    /// `/proc/<pid>/task/<tid>/maps` (`self` already resolved).
    pub path: Vec<u8>,
    pub seen: Instant,
}

impl ReadEvent {
    /// The process whose memory map this is.
    pub fn target_pid(&self) -> Option<u32> {
        maps_target(&self.path)
    }
}

/// The pid in a resolved maps path, if it is one.
pub fn maps_target(path: &[u8]) -> Option<u32> {
    let rest = path.strip_prefix(b"/proc/")?;
    let rest = rest.strip_suffix(b"/maps")?;
    let pid = rest.split(|b| *b == b'/').next()?;
    let valid_tail = match rest.get(pid.len()..) {
        Some(b"") => true,
        Some(tail) => {
            let tid = tail.strip_prefix(b"/task/").unwrap_or_default();
            !tid.is_empty() && tid.iter().all(u8::is_ascii_digit)
        }
        None => false,
    };
    if !valid_tail || pid.is_empty() || !pid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// Counters of the fanotify source.
#[derive(Default, Debug)]
pub struct WatchStats {
    pub events: AtomicU64,
    pub maps_events: AtomicU64,
    pub unresolved: AtomicU64,
    pub overflows: AtomicU64,
    pub dropped: AtomicU64,
}

/// The fanotify group with its /proc mark.
pub struct ProcWatch {
    group: Fanotify,
}

impl ProcWatch {
    /// Sets up the group and the mount mark on /proc.
    pub fn open() -> Result<ProcWatch, String> {
        let base = InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK;
        let file_flags = EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC;
        let group = Fanotify::init(
            base | InitFlags::from_bits_retain(FAN_REPORT_FD_ERROR),
            file_flags,
        )
        .or_else(|_| Fanotify::init(base, file_flags))
        .map_err(|e| match e {
            Errno::EPERM => "fanotify needs CAP_SYS_ADMIN".to_owned(),
            e => format!("fanotify_init: {e}"),
        })?;
        group
            .mark(
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_MOUNT,
                MaskFlags::FAN_OPEN | MaskFlags::FAN_ACCESS,
                nix::fcntl::AT_FDCWD,
                Some("/proc"),
            )
            .map_err(|e| format!("the kernel refused a fanotify mark on /proc: {e}"))?;
        Ok(ProcWatch { group })
    }
}

/// Resolves an event's fd to its path, in `buf`.
fn fd_path(fd: RawFd, buf: &mut [u8; 256]) -> Option<&[u8]> {
    let mut link = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    link[..prefix.len()].copy_from_slice(prefix);
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
    let end = prefix.len() + digits.len() - start;
    link[prefix.len()..end].copy_from_slice(&digits[start..]);
    link[end] = 0;
    // SAFETY: `link` is NUL-terminated within its bounds; `buf` is writable
    // for its whole length, which is what we pass; readlink writes at most
    // that many bytes and does not NUL-terminate.
    let len = unsafe { libc::readlink(link.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len()) };
    // A length equal to the buffer may be truncated: not a maps path anyway.
    usize::try_from(len)
        .ok()
        .filter(|l| *l < buf.len())
        .map(|l| &buf[..l])
}

fn close(fd: RawFd) {
    let _ = nix::unistd::close(fd);
}

fn is_maps_path(path: &[u8]) -> bool {
    path.starts_with(b"/proc/") && path.ends_with(b"/maps")
}

/// Parses one read() worth of events; returns the maps events.
fn parse_events(
    buf: &[u8],
    own_pid: u32,
    stats: &WatchStats,
    out: &mut Vec<ReadEvent>,
    now: Instant,
) {
    let mut offset = 0;
    let mut path_buf = [0u8; 256];
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
        if fd < 0 {
            // FAN_NOFD (overflow) or -errno (the file's process is gone).
            if fd != -1 {
                stats.unresolved.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        if pid == own_pid {
            close(fd);
            continue;
        }
        let path = fd_path(fd, &mut path_buf);
        close(fd);
        let Some(path) = path.filter(|p| is_maps_path(p)) else {
            continue;
        };
        stats.maps_events.fetch_add(1, Ordering::Relaxed);
        out.push(ReadEvent {
            pid,
            mask: ReadMask {
                opened: mask & FAN_OPEN != 0,
                read: mask & FAN_ACCESS != 0,
            },
            path: path.to_vec(),
            seen: now,
        });
    }
}

/// Reads events until `tx` closes.
pub async fn read_events(
    watch: ProcWatch,
    tx: mpsc::Sender<Vec<ReadEvent>>,
    stats: Arc<WatchStats>,
) -> io::Result<()> {
    let own_pid = std::process::id();
    // SAFETY: `register` requires the fd to stay open while registered; the
    // Fanotify group owns it and is moved into (and dropped with) the AsyncFd.
    let fd = unsafe { AsyncFd::register(watch.group) }.map_err(io::Error::from)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut guard = tokio::select! {
            ready = fd.readable() => ready?,
            _ = tx.closed() => return Ok(()),
        };
        let mut batch = Vec::new();
        loop {
            match nix::unistd::read(fd.get_ref(), &mut buf) {
                Ok(0) => break,
                Ok(len) => parse_events(&buf[..len], own_pid, &stats, &mut batch, Instant::now()),
                Err(Errno::EAGAIN) => {
                    guard.clear_ready();
                    break;
                }
                // Kernels without FAN_REPORT_FD_ERROR fail the read when the
                // file's process has exited: that event is lost, not fatal.
                Err(Errno::ESRCH | Errno::ENOENT | Errno::EINTR) => {
                    stats.unresolved.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !batch.is_empty() && tx.try_send(batch).is_err() {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_targets() {
        assert_eq!(maps_target(b"/proc/42/maps"), Some(42));
        assert_eq!(maps_target(b"/proc/42/task/43/maps"), Some(42));
        assert_eq!(maps_target(b"/proc/42/smaps"), None);
        assert_eq!(maps_target(b"/proc/42/task/maps"), None);
        assert_eq!(maps_target(b"/proc/self/maps"), None);
        assert_eq!(maps_target(b"/proc//maps"), None);
        assert_eq!(maps_target(b"/proc/42/x/43/maps"), None);
    }

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
    fn parses_overflow_fd_errors_and_truncation() {
        let stats = WatchStats::default();
        let mut out = Vec::new();
        let mut buf = metadata(FAN_Q_OVERFLOW, -1, 0);
        buf.extend(metadata(FAN_ACCESS, -3, 77));
        buf.extend_from_slice(&[1, 2, 3]);
        parse_events(&buf, 1, &stats, &mut out, Instant::now());
        assert!(out.is_empty());
        assert_eq!(stats.overflows.load(Ordering::Relaxed), 1);
        assert_eq!(stats.unresolved.load(Ordering::Relaxed), 1);
        assert_eq!(stats.events.load(Ordering::Relaxed), 2);
    }
}
