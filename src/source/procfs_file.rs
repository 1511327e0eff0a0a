//! What one `statx(2)` of a fanotify event's fd says about the procfs file
//! it is ([`ProcfsFile`]), and which of those files are already known not
//! to be layout files ([`NotLayout`]), so that a process's every reread of
//! its `stat` or `status` costs no `readlink` of the fd.
//!
//! Contract: a procfs file's identity is its superblock, inode number and
//! inode change time. procfs numbers the inodes of a pid's files from one
//! counter (`get_next_ino`) that wraps only after 2^32 inodes and stamps
//! each inode with the time it was made, so an inode number given again
//! comes with another time; what a file is (`/proc/N/stat`, not `maps`)
//! never changes while its inode lives. A file is remembered only once its
//! path has said it is none of the layout files; anything else is looked
//! at in full every time. The set is bounded: when full, it starts again
//! (only cost: readlinks until it refills).

use rustc_hash::FxHashSet;

use crate::process::mountinfo::Dev;

/// Files remembered before the set starts again: a busy host's processes
/// times the few files a `ps` or `top` reads of each.
const CAPACITY: usize = 65_536;

/// The open procfs file behind an event's fd.
#[derive(Clone, Copy, Debug)]
pub struct ProcfsFile {
    /// The mount it was opened through; 0 on kernels before 5.8, whose
    /// statx has no mount id.
    pub mount_id: u32,
    identity: Identity,
}

/// Superblock, inode number and change time: one file while its inode lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Identity {
    dev: Dev,
    ino: u64,
    ctime: (i64, u32),
}

impl ProcfsFile {
    /// The file open at `fd`, or `None` where statx fails (the kernel
    /// refuses, or before 4.11 has none).
    pub fn of(fd: std::os::fd::RawFd) -> Option<ProcfsFile> {
        const STATX_MNT_ID: u32 = 0x1000;
        // SAFETY: an all-zero statx is a valid value of the plain C struct.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is an open fd the event handed us; the empty path
        // with AT_EMPTY_PATH names it; `stx` is writable and sized for
        // statx.
        let rc = unsafe {
            libc::statx(
                fd,
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_INO | libc::STATX_CTIME | STATX_MNT_ID,
                &mut stx,
            )
        };
        if rc != 0 {
            return None;
        }
        let mount_id = if stx.stx_mask & STATX_MNT_ID != 0 {
            u32::try_from(stx.stx_mnt_id).unwrap_or(0)
        } else {
            0
        };
        Some(ProcfsFile {
            mount_id,
            identity: Identity {
                dev: Dev {
                    major: stx.stx_dev_major,
                    minor: stx.stx_dev_minor,
                },
                ino: stx.stx_ino,
                ctime: (stx.stx_ctime.tv_sec, stx.stx_ctime.tv_nsec),
            },
        })
    }

    /// The procfs instance (superblock).
    pub fn dev(&self) -> Dev {
        self.identity.dev
    }

    /// True where the kernel gave the inode number and change time, the
    /// identity [`NotLayout`] remembers files by.
    fn identified(&self) -> bool {
        self.identity.ino != 0
    }
}

/// The procfs files known to be no layout file.
#[derive(Default)]
pub struct NotLayout {
    files: FxHashSet<Identity>,
}

impl NotLayout {
    /// True for a file [`NotLayout::remember`] was told of, while its
    /// inode lives.
    pub fn contains(&self, file: &ProcfsFile) -> bool {
        file.identified() && self.files.contains(&file.identity)
    }

    /// Remembers `file`, whose path named no layout file.
    pub fn remember(&mut self, file: &ProcfsFile) {
        if !file.identified() {
            return;
        }
        if self.files.len() >= CAPACITY {
            self.files.clear();
        }
        self.files.insert(file.identity);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    fn open(path: &str) -> std::fs::File {
        std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn one_file_opened_twice_is_known_the_second_time() {
        let mut known = NotLayout::default();
        let first = ProcfsFile::of(open("/proc/self/stat").as_raw_fd()).expect("statx");
        assert!(!known.contains(&first));
        known.remember(&first);
        let again = ProcfsFile::of(open("/proc/self/stat").as_raw_fd()).expect("statx");
        assert!(known.contains(&again));
    }

    #[test]
    fn another_file_of_the_same_process_is_not_known() {
        let mut known = NotLayout::default();
        known.remember(&ProcfsFile::of(open("/proc/self/stat").as_raw_fd()).expect("statx"));
        let maps = ProcfsFile::of(open("/proc/self/maps").as_raw_fd()).expect("statx");
        assert!(!known.contains(&maps));
    }

    #[test]
    fn a_full_set_starts_again() {
        let mut known = NotLayout::default();
        let file = ProcfsFile::of(open("/proc/self/stat").as_raw_fd()).expect("statx");
        for ino in 1..=CAPACITY as u64 {
            known.remember(&ProcfsFile {
                identity: Identity {
                    ino: u64::MAX - ino,
                    ..file.identity
                },
                ..file
            });
        }
        known.remember(&file);
        assert_eq!(known.files.len(), 1);
        assert!(known.contains(&file));
    }
}
