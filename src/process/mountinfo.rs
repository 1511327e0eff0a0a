//! The procfs lines of a `/proc/<pid>/mountinfo`: which procfs superblocks
//! a mount namespace has mounted, where, and which of their directories
//! each mount shows.
//!
//! Contract: [`procfs_mounts`] yields the lines whose filesystem type is
//! `proc`, each parsed into a [`MountLine`] whose paths are unescaped (the
//! kernel writes space, tab, newline and backslash as octal escapes); a
//! line that does not parse is skipped (the kernel writes none).

use crate::audit::record::parse_decimal;

/// A superblock's device number, as `major:minor` in mountinfo and
/// `stx_dev_major`/`stx_dev_minor` from statx: what tells procfs
/// instances apart (each procfs mount is a superblock of its own since
/// Linux 5.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dev {
    pub major: u32,
    pub minor: u32,
}

/// One procfs mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountLine {
    /// The mount's id (reused once the mount is gone).
    pub id: u32,
    pub dev: Dev,
    /// The directory of the procfs the mount shows: `/` for a whole
    /// procfs, `/42` for a bind mount of one pid's directory.
    pub root: Vec<u8>,
    /// Where it is mounted, relative to the namespace's root as the
    /// reading process sees it.
    pub point: Vec<u8>,
}

/// The procfs mounts listed in a mountinfo file.
pub fn procfs_mounts(mountinfo: &[u8]) -> impl Iterator<Item = MountLine> + '_ {
    mountinfo.split(|b| *b == b'\n').filter_map(procfs_line)
}

fn procfs_line(line: &[u8]) -> Option<MountLine> {
    // The optional fields end at a lone `-`; the filesystem type follows.
    let separator = line.windows(3).position(|w| w == b" - ")?;
    let (head, tail) = (&line[..separator], &line[separator + 3..]);
    if tail.split(|b| *b == b' ').next()? != b"proc" {
        return None;
    }
    let mut fields = head.split(|b| *b == b' ');
    let id = parse_decimal(fields.next()?)?;
    let _parent = fields.next()?;
    let (major, minor) = split_once(fields.next()?, b':')?;
    let dev = Dev {
        major: parse_decimal(major)?,
        minor: parse_decimal(minor)?,
    };
    let root = unescape(fields.next()?);
    let point = unescape(fields.next()?);
    Some(MountLine {
        id,
        dev,
        root,
        point,
    })
}

fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|b| *b == separator)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// Undoes the kernel's `\ooo` escapes of a mountinfo path.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_procfs_mounts_with_their_roots_and_escaped_points() {
        let mountinfo = b"22 27 0:21 / /proc rw,relatime - proc proc rw\n\
            27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
            43 27 0:21 /10391 /tmp/pd rw,relatime shared:5 master:2 - proc proc rw\n\
            65 46 0:39 / /srv/a\\040b\\134c rw,nosuid - proc proc rw,hidepid=2\n";
        let found: Vec<MountLine> = procfs_mounts(mountinfo).collect();
        assert_eq!(
            found,
            [
                MountLine {
                    id: 22,
                    dev: Dev {
                        major: 0,
                        minor: 21
                    },
                    root: b"/".to_vec(),
                    point: b"/proc".to_vec(),
                },
                MountLine {
                    id: 43,
                    dev: Dev {
                        major: 0,
                        minor: 21
                    },
                    root: b"/10391".to_vec(),
                    point: b"/tmp/pd".to_vec(),
                },
                MountLine {
                    id: 65,
                    dev: Dev {
                        major: 0,
                        minor: 39
                    },
                    root: b"/".to_vec(),
                    point: b"/srv/a b\\c".to_vec(),
                },
            ]
        );
    }

    #[test]
    fn a_mount_whose_source_says_proc_is_not_procfs() {
        let mountinfo = b"50 27 0:50 / /mnt rw - tmpfs proc rw\n51 27 0:51 / /x rw - procfs x rw\n";
        assert_eq!(procfs_mounts(mountinfo).count(), 0);
    }
}
