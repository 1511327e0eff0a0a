//! A live process as procfs shows it, read lazily: for events that are not
//! exec events (a fanotify read), whose process no audit record describes.
//!
//! Contract: each fact is read at most once, on first use, as bytes; a
//! process that is gone gives `None`, never an error.

use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;

use super::stat::read_stat;
use crate::audit::execve::Argv;

pub struct LiveProcess {
    pid: u32,
    comm: Option<Option<Vec<u8>>>,
    exe: Option<Option<Vec<u8>>>,
    args: Option<Option<Argv>>,
    cwd: Option<Option<Vec<u8>>>,
    uid: Option<Option<u32>>,
}

/// Whether `pid` still runs: it exists and is not a zombie (a zombie makes
/// no more system calls; only its parent's wait is pending).
pub fn still_runs(pid: u32) -> bool {
    read_stat(pid).is_ok_and(|stat| !matches!(stat.state, b'Z' | b'X' | b'x'))
}

/// The executable of a live process (`/proc/<pid>/exe`).
pub fn executable(pid: u32) -> Option<Vec<u8>> {
    link(pid, "exe")
}

fn link(pid: u32, name: &str) -> Option<Vec<u8>> {
    std::fs::read_link(format!("/proc/{pid}/{name}"))
        .ok()
        .map(|p| p.into_os_string().into_vec())
}

impl LiveProcess {
    pub fn new(pid: u32) -> Self {
        LiveProcess {
            pid,
            comm: None,
            exe: None,
            args: None,
            cwd: None,
            uid: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn comm(&mut self) -> Option<&[u8]> {
        let pid = self.pid;
        self.comm
            .get_or_insert_with(|| read_stat(pid).ok().map(|s| s.comm.as_bytes().to_vec()))
            .as_deref()
    }

    pub fn exe(&mut self) -> Option<&[u8]> {
        let pid = self.pid;
        self.exe.get_or_insert_with(|| link(pid, "exe")).as_deref()
    }

    pub fn cwd(&mut self) -> Option<&[u8]> {
        let pid = self.pid;
        self.cwd.get_or_insert_with(|| link(pid, "cwd")).as_deref()
    }

    /// argv from `/proc/<pid>/cmdline` (NUL-separated).
    pub fn args(&mut self) -> Option<&Argv> {
        let pid = self.pid;
        self.args
            .get_or_insert_with(|| {
                let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let trimmed = raw.strip_suffix(b"\0").unwrap_or(&raw);
                (!trimmed.is_empty()).then(|| trimmed.split(|b| *b == 0).collect::<Vec<_>>().into())
            })
            .as_ref()
    }

    /// The effective uid (owner of `/proc/<pid>`).
    pub fn uid(&mut self) -> Option<u32> {
        let pid = self.pid;
        *self.uid.get_or_insert_with(|| {
            std::fs::metadata(format!("/proc/{pid}"))
                .ok()
                .map(|m| m.uid())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let mut me = LiveProcess::new(std::process::id());
        assert!(me.comm().is_some());
        assert!(me.exe().is_some());
        assert!(me.args().is_some_and(|a| !a.is_empty()));
        assert!(me.cwd().is_some());
        assert_eq!(me.uid(), Some(nix::unistd::geteuid().as_raw()));
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
