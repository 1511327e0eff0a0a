//! A live process as procfs shows it, read lazily: for events that are not
//! exec events (a fanotify read), whose process no audit record describes.
//!
//! Contract: each fact is read at most once, on first use, as bytes; a
//! process that is gone gives `None`, never an error.

use super::procfs;
use super::stat::{TtyKind, read_stat, tty_kind};
use crate::audit::assemble::Credentials;
use crate::audit::execve::Argv;

/// The environment read is cut here: `process.env_vars` is for matching
/// variables such as `LD_PRELOAD`, not for copying a huge environment.
pub const MAX_ENVIRON: usize = 64 * 1024;
/// What is read first: more than most environments need.
const TYPICAL_ENVIRON: usize = 4096;

pub struct LiveProcess {
    pid: u32,
    /// Whether the process exists, asked before its first file.
    exists: Option<bool>,
    comm: Option<Option<Vec<u8>>>,
    exe: Option<Option<Vec<u8>>>,
    args: Option<Option<Argv>>,
    cwd: Option<Option<Vec<u8>>>,
    uid: Option<Option<u32>>,
    credentials: Option<Option<Credentials>>,
    environ: Option<Option<Argv>>,
}

/// Whether `pid` still runs: it exists and is not a zombie (a zombie makes
/// no more system calls; only its parent's wait is pending).
pub fn still_runs(pid: u32) -> bool {
    read_stat(pid).is_ok_and(|stat| !matches!(stat.state, b'Z' | b'X' | b'x'))
}

/// The whole of `<base>/<pid>/<name>`.
fn read_all(pid: u32, name: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    procfs::open(pid, name).ok()?.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// The process `pid` is a thread of (its `Tgid:`): `/proc/<tid>/maps` is
/// the map of the thread's process. `None` when it is gone.
pub fn thread_group(pid: u32) -> Option<u32> {
    let mut status = [0u8; 512];
    let filled = procfs::read_into(pid, "status", &mut status).ok()?;
    tgid_of_status(&status[..filled])
}

/// The `Tgid:` of a status file; `None` for 0, what a task already
/// released by its parent shows when its status was opened before (its
/// pids are gone: nothing says whose thread it was).
fn tgid_of_status(status: &[u8]) -> Option<u32> {
    let line = status
        .split(|b| *b == b'\n')
        .find_map(|l| l.strip_prefix(b"Tgid:"))?;
    crate::audit::record::parse_decimal(line.trim_ascii()).filter(|tgid| *tgid != 0)
}

/// The maps file a process's open `fd` is, with the process whose map it
/// is: `None` when the process or the fd is gone, or it is another file.
pub fn maps_fd(pid: u32, fd: u32) -> Option<(Vec<u8>, u32)> {
    let path = link(pid, &format!("fd/{fd}"))?;
    let target = super::proc_path::maps_owner(&path, pid)?;
    Some((path, thread_group(target).unwrap_or(target)))
}

/// The executable of a live process (`/proc/<pid>/exe`).
pub fn executable(pid: u32) -> Option<Vec<u8>> {
    link(pid, "exe")
}

fn link(pid: u32, name: &str) -> Option<Vec<u8>> {
    procfs::read_link(pid, name).ok()
}

impl LiveProcess {
    pub fn new(pid: u32) -> Self {
        LiveProcess {
            pid,
            exists: None,
            comm: None,
            exe: None,
            args: None,
            cwd: None,
            uid: None,
            credentials: None,
            environ: None,
        }
    }

    /// Another host's process (a log's, a node's): this host's procfs
    /// holds some other process under its pid, so nothing is read.
    pub fn elsewhere(pid: u32) -> Self {
        LiveProcess {
            exists: Some(false),
            ..Self::new(pid)
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its pid namespace and its pid there, when that is not the host's.
    pub fn namespace_pid(&mut self) -> Option<(u64, u32)> {
        if !self.exists() {
            return None;
        }
        let ns = super::pid_ns::pid_namespace_of(self.pid)?;
        if Some(ns) == super::pid_ns::host_namespace() {
            return None;
        }
        Some((ns, super::pid_ns::own_namespace_pid(self.pid)?))
    }

    /// Whether there is a process to read: asked once, with a check that
    /// costs a tenth of procfs's failed lookup, since most processes an
    /// exec event names are gone by the time it is evaluated.
    fn exists(&mut self) -> bool {
        let pid = self.pid;
        *self.exists.get_or_insert_with(|| procfs::exists(pid))
    }

    pub fn comm(&mut self) -> Option<&[u8]> {
        if !self.exists() {
            return None;
        }
        let pid = self.pid;
        self.comm
            .get_or_insert_with(|| read_stat(pid).ok().map(|s| s.comm.as_bytes().to_vec()))
            .as_deref()
    }

    pub fn exe(&mut self) -> Option<&[u8]> {
        if !self.exists() {
            return None;
        }
        let pid = self.pid;
        self.exe.get_or_insert_with(|| link(pid, "exe")).as_deref()
    }

    pub fn cwd(&mut self) -> Option<&[u8]> {
        if !self.exists() {
            return None;
        }
        let pid = self.pid;
        self.cwd.get_or_insert_with(|| link(pid, "cwd")).as_deref()
    }

    /// argv from `/proc/<pid>/cmdline` (NUL-separated).
    pub fn args(&mut self) -> Option<&Argv> {
        if !self.exists() {
            return None;
        }
        let pid = self.pid;
        self.args
            .get_or_insert_with(|| {
                let raw = read_all(pid, "cmdline")?;
                let trimmed = raw.strip_suffix(b"\0").unwrap_or(&raw);
                (!trimmed.is_empty()).then(|| trimmed.split(|b| *b == 0).collect::<Vec<_>>().into())
            })
            .as_ref()
    }

    /// Real, effective and saved ids (the `Uid:` and `Gid:` lines of
    /// `/proc/<pid>/status`).
    pub fn credentials(&mut self) -> Option<Credentials> {
        if !self.exists() {
            return None;
        }
        let pid = self.pid;
        *self.credentials.get_or_insert_with(|| {
            let status = read_all(pid, "status")?;
            parse_credentials(&status)
        })
    }

    /// The controlling terminal's kind.
    pub fn tty(&mut self) -> Option<TtyKind> {
        if !self.exists() {
            return None;
        }
        read_stat(self.pid).ok().map(|s| tty_kind(s.tty_nr))
    }

    /// `KEY=VALUE` strings of `/proc/<pid>/environ` (the environment the
    /// program was exec'd with), up to [`MAX_ENVIRON`] bytes.
    pub fn environ(&mut self) -> Option<&Argv> {
        if !self.exists() {
            return None;
        }
        let pid = self.pid;
        self.environ.get_or_insert_with(|| environ_of(pid)).as_ref()
    }

    /// The effective uid (owner of `/proc/<pid>`).
    pub fn uid(&mut self) -> Option<u32> {
        if !self.exists() {
            return None;
        }
        let pid = self.pid;
        *self.uid.get_or_insert_with(|| procfs::owner(pid).ok())
    }
}

/// The ids of the `Uid:` and `Gid:` lines of a status file.
fn parse_credentials(status: &[u8]) -> Option<Credentials> {
    let ids = |key: &[u8]| -> Option<[u32; 3]> {
        let line = status
            .split(|b| *b == b'\n')
            .find_map(|l| l.strip_prefix(key))?;
        let mut fields = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty())
            .map(|f| std::str::from_utf8(f).ok()?.parse::<u32>().ok());
        Some([fields.next()??, fields.next()??, fields.next()??])
    };
    let [uid, euid, suid] = ids(b"Uid:")?;
    let [gid, egid, sgid] = ids(b"Gid:")?;
    Some(Credentials {
        uid: Some(uid),
        euid: Some(euid),
        suid: Some(suid),
        gid: Some(gid),
        egid: Some(egid),
        sgid: Some(sgid),
    })
}

/// `KEY=VALUE` strings of `/proc/<pid>/environ`, up to [`MAX_ENVIRON`]
/// bytes; `None` when the process is gone. An exec rule asks this of
/// every exec it cannot decide otherwise, most of them gone by then: a
/// gone process costs one `kill(pid, 0)`, a live one an open, one read
/// and a close (procfs copies as much of the environment as a read asks
/// for, so a read that leaves the buffer unfilled has reached its end).
pub fn read_environ(pid: u32) -> Option<Argv> {
    if !procfs::exists(pid) {
        return None;
    }
    environ_of(pid)
}

/// [`read_environ`] of a process known to exist.
fn environ_of(pid: u32) -> Option<Argv> {
    use std::io::Read;
    let mut file = procfs::open(pid, "environ").ok()?;
    let mut raw = vec![0; TYPICAL_ENVIRON];
    let mut len = 0;
    loop {
        let read = file.read(&mut raw[len..]).ok()?;
        len += read;
        if read == 0 || len < raw.len() || raw.len() == MAX_ENVIRON {
            break;
        }
        raw.resize((raw.len() * 2).min(MAX_ENVIRON), 0);
    }
    raw.truncate(len);
    Some(Argv::from_nul_separated(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task released by its parent between the open of its status and
    /// the read shows `Tgid: 0`: no process, not pid 0 (which would make a
    /// process's read of its own map look like a read of another's).
    #[test]
    fn a_released_tasks_thread_group_is_unknown() {
        assert_eq!(
            tgid_of_status(b"Name:\tgrep\nUmask:\t0022\nState:\tZ\nTgid:\t4242\nPid:\t4243\n"),
            Some(4242)
        );
        assert_eq!(
            tgid_of_status(b"Name:\tgrep\nState:\tX (dead)\nTgid:\t0\nNgid:\t0\nPid:\t0\n"),
            None
        );
        assert_eq!(tgid_of_status(b"Name:\tgrep\n"), None);
    }

    #[test]
    fn credentials_from_a_status_file() {
        let status = b"Name:\tsu\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t5\t100\n";
        assert_eq!(
            parse_credentials(status),
            Some(Credentials {
                uid: Some(1000),
                euid: Some(0),
                suid: Some(0),
                gid: Some(100),
                egid: Some(100),
                sgid: Some(5),
            })
        );
        assert_eq!(parse_credentials(b"Uid:\t1\n"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let mut me = LiveProcess::new(std::process::id());
        assert!(me.comm().is_some());
        assert!(me.exe().is_some());
        assert!(me.args().is_some_and(|a| !a.is_empty()));
        assert!(me.cwd().is_some());
        assert_eq!(me.uid(), Some(nix::unistd::geteuid().as_raw()));
        let ids = me.credentials().expect("our status");
        assert_eq!(ids.euid, Some(nix::unistd::geteuid().as_raw()));
        assert_eq!(ids.gid, Some(nix::unistd::getgid().as_raw()));
        assert!(
            me.environ()
                .is_some_and(|e| e.iter().any(|v| v.starts_with(b"PATH=")))
        );
    }

    #[test]
    fn a_gone_process_has_no_facts() {
        let mut gone = LiveProcess::new(4_000_000_000);
        assert!(
            gone.comm().is_none()
                && gone.exe().is_none()
                && gone.args().is_none()
                && gone.uid().is_none()
        );
    }
}
