//! Which process's memory map an exec argument names: `/proc/<pid>/maps`,
//! `self` and `thread-self`, `task/<tid>/`, and relative paths resolved
//! against the exec's working directory.
//!
//! Contract: [`maps_args`] lists, in order, the arguments after argv[0]
//! that match the seed rule's `/proc/*/maps` (case-insensitively) or
//! resolve to a maps path, each with the pid whose map it is when the path
//! can name a real file ([`crate::process::proc_path`]). Paths are resolved
//! as the kernel walks them through procfs's own links, before `..`
//! applies: `/proc/self` is the reader's directory, `/proc/thread-self` its
//! (only, at exec) thread's `task/<tid>`, `/proc/<pid>/cwd` a working
//! directory (the exec's own for the reader) and `/proc/<pid>/root` the
//! root, taken as `/` (a reader in another root is the containers issue's);
//! so `/proc/self/root/proc/42/maps` and `/proc/thread-self/../../../42/maps`
//! name 42's map.

use std::sync::LazyLock;

use std::time::Instant;

use crate::audit::assemble::ExecEvent;
use crate::process::ProcessTable;
use crate::process::live::thread_group;
use crate::process::proc_path::maps_owner;
use crate::rule::wildcard::Wildcard;

/// An argument naming a memory map, and whose map that is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsArg {
    pub arg: Vec<u8>,
    /// `None` when the path can't name a real maps file (e.g. `/PROC/1/MAPS`
    /// matches the rule's case-insensitive pattern but no file).
    pub target: Option<u32>,
    /// The target's pid as the argument gave it, when the reader's `/proc`
    /// is another pid namespace's (a container's): `target` is then the
    /// host pid it names.
    pub target_ns_pid: Option<u32>,
}

/// Turns targets the arguments name in another pid namespace's procfs
/// (the reader's `/proc` in a container) into host pids. A target not
/// found there (gone) is no target.
pub fn to_host_pids(
    maps: &mut [MapsArg],
    event: &ExecEvent,
    table: &mut ProcessTable,
    now: Instant,
) {
    let named = |m: &MapsArg| m.target.is_some_and(|t| t != event.pid);
    if !maps.iter().any(named) {
        return;
    }
    let Some(ns) = table.foreign_procfs_namespace(event.pid, event.ppid) else {
        return;
    };
    for arg in maps.iter_mut().filter(|m| named(m)) {
        let local = arg.target;
        arg.target = local.and_then(|l| table.host_pid(ns, l, now));
        arg.target_ns_pid = local;
    }
}

/// `/proc/*/maps`, case-insensitively, as the seed rule matches it.
static MAPS_PATTERN: LazyLock<Wildcard> = LazyLock::new(|| Wildcard::insensitive("/proc/*/maps"));

/// The arguments of `event` matching `/proc/*/maps` (case-insensitively, as
/// the seed rule does), with their targets: relative paths are resolved
/// against the exec's working directory; `self` and `thread-self` are the
/// reader.
/// `procfs` says whether this host's procfs describes the event's
/// processes (not when replaying a log): only then are other processes'
/// working directories and thread groups read from it.
pub fn maps_args(event: &ExecEvent, procfs: bool) -> Vec<MapsArg> {
    let mut out = Vec::new();
    for arg in event.argv.iter().skip(1) {
        let absolute = resolve(arg, event.cwd.as_deref(), event.pid, procfs);
        if MAPS_PATTERN.matches(arg)
            || absolute
                .as_deref()
                .is_some_and(|a| a.ends_with(b"/maps") && a.starts_with(b"/proc/"))
        {
            out.push(MapsArg {
                arg: arg.to_vec(),
                // `/proc/<tid>/maps` is the map of the thread's process.
                target: absolute
                    .as_deref()
                    .and_then(|a| maps_owner(a, event.pid))
                    .map(|pid| procfs.then(|| thread_group(pid)).flatten().unwrap_or(pid)),
                target_ns_pid: None,
            });
        }
    }
    out
}

/// Links of procfs that name a directory, as the kernel follows them.
enum ProcLink {
    /// `/proc/self`, `/proc/thread-self`: into the reader's directory.
    Reader { thread: bool },
    /// `/proc/<pid>/root`.
    Root,
    /// `/proc/<pid>/cwd`.
    Cwd(u32),
}

/// The link `part` is when the walk so far is `parts`.
fn proc_link(parts: &[Vec<u8>], part: &[u8]) -> Option<ProcLink> {
    match (parts, part) {
        ([proc], b"self") if proc == b"proc" => Some(ProcLink::Reader { thread: false }),
        ([proc], b"thread-self") if proc == b"proc" => Some(ProcLink::Reader { thread: true }),
        ([proc, pid], b"root" | b"cwd") if proc == b"proc" => {
            let pid = crate::audit::record::parse_decimal(pid)?;
            Some(if part == b"root" {
                ProcLink::Root
            } else {
                ProcLink::Cwd(pid)
            })
        }
        _ => None,
    }
}

/// `path` (absolute) as its components, `.` and `..` applied.
fn components(path: &[u8], into: &mut Vec<Vec<u8>>) {
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                into.pop();
            }
            p => into.push(p.to_vec()),
        }
    }
}

/// `arg` as an absolute path with procfs's links followed and `.` and `..`
/// applied, as `reader` (whose working directory is `cwd`) would open it.
fn resolve(arg: &[u8], cwd: Option<&[u8]>, reader: u32, procfs: bool) -> Option<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    if !arg.starts_with(b"/") {
        components(cwd?, &mut parts);
    }
    for part in arg.split(|b| *b == b'/') {
        match (part, proc_link(&parts, part)) {
            (b"" | b".", _) => {}
            (b"..", _) => {
                parts.pop();
            }
            (_, Some(ProcLink::Reader { thread })) => {
                parts.push(reader.to_string().into_bytes());
                if thread {
                    // At its exec, the reader is one thread: tid = pid.
                    parts.push(b"task".to_vec());
                    parts.push(reader.to_string().into_bytes());
                }
            }
            (_, Some(ProcLink::Root)) => parts.clear(),
            (_, Some(ProcLink::Cwd(pid))) => {
                let target = if pid == reader {
                    cwd.map(<[u8]>::to_vec)
                } else if procfs {
                    crate::process::live::LiveProcess::new(pid)
                        .cwd()
                        .map(<[u8]>::to_vec)
                } else {
                    None
                };
                parts.clear();
                components(&target?, &mut parts);
            }
            (p, None) => parts.push(p.to_vec()),
        }
    }
    let mut out = Vec::with_capacity(arg.len());
    for part in parts {
        out.push(b'/');
        out.extend_from_slice(&part);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(args: &[&str], cwd: &str, pid: u32) -> ExecEvent {
        ExecEvent {
            pid,
            argv: args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>().into(),
            cwd: Some(cwd.as_bytes().to_vec()),
            ..ExecEvent::default()
        }
    }

    fn targets(args: &[&str], cwd: &str) -> Vec<Option<u32>> {
        maps_args(&exec(args, cwd, 7), false)
            .into_iter()
            .map(|m| m.target)
            .collect()
    }

    #[test]
    fn targets_from_arguments() {
        assert_eq!(targets(&["cat", "/proc/42/maps"], "/"), vec![Some(42)]);
        assert_eq!(targets(&["cat", "/proc/self/maps"], "/"), vec![Some(7)]);
        assert_eq!(
            targets(&["cat", "/proc/thread-self/maps"], "/"),
            vec![Some(7)]
        );
        assert_eq!(
            targets(&["cat", "/proc/42/task/43/maps"], "/"),
            vec![Some(42)]
        );
        assert_eq!(targets(&["cat", "/proc//42/maps"], "/"), vec![Some(42)]);
        assert_eq!(targets(&["cat", "maps"], "/proc/42"), vec![Some(42)]);
        assert_eq!(targets(&["cat", "../42/maps"], "/proc/1"), vec![Some(42)]);
        assert_eq!(targets(&["cat", "/PROC/42/MAPS"], "/"), vec![None]);
        // procfs's links, followed before `..` as the kernel does.
        assert_eq!(
            targets(&["cat", "/proc/self/root/proc/42/maps"], "/"),
            vec![Some(42)]
        );
        assert_eq!(
            targets(&["cat", "/proc/thread-self/../../../42/maps"], "/"),
            vec![Some(42)],
            "thread-self is /proc/7/task/7: three levels up is /proc"
        );
        assert_eq!(
            targets(&["cat", "/proc/thread-self/../../maps"], "/"),
            vec![Some(7)]
        );
        assert_eq!(
            targets(&["cat", "/proc/self/cwd/maps"], "/proc/42"),
            vec![Some(42)]
        );
        assert_eq!(
            targets(&["cat", "/proc/self/root/proc/self/maps"], "/"),
            vec![Some(7)]
        );
        assert_eq!(
            targets(&["cat", "/proc/42/smaps"], "/"),
            Vec::<Option<u32>>::new()
        );
        assert_eq!(
            targets(&["/proc/42/maps"], "/"),
            Vec::<Option<u32>>::new(),
            "argv[0] is the program"
        );
    }
}
