//! Which process's memory map an exec argument names: `/proc/<pid>/maps`,
//! `self` and `thread-self`, `task/<tid>/`, and relative paths resolved
//! against the exec's working directory.
//!
//! Contract: [`maps_args`] lists, in order, the arguments after argv[0]
//! that match the seed rule's `/proc/*/maps` (case-insensitively) or
//! resolve to a maps path, each with the pid whose map it is when the path
//! can name a real file ([`crate::process::proc_path`]).

use std::sync::LazyLock;

use crate::audit::assemble::ExecEvent;
use crate::process::proc_path::maps_owner;
use crate::rule::wildcard::Wildcard;

/// An argument naming a memory map, and whose map that is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsArg {
    pub arg: Vec<u8>,
    /// `None` when the path can't name a real maps file (e.g. `/PROC/1/MAPS`
    /// matches the rule's case-insensitive pattern but no file).
    pub target: Option<u32>,
}

/// `/proc/*/maps`, case-insensitively, as the seed rule matches it.
static MAPS_PATTERN: LazyLock<Wildcard> = LazyLock::new(|| Wildcard::insensitive("/proc/*/maps"));

/// The arguments of `event` matching `/proc/*/maps` (case-insensitively, as
/// the seed rule does), with their targets: relative paths are resolved
/// against the exec's working directory; `self` and `thread-self` are the
/// reader.
pub fn maps_args(event: &ExecEvent) -> Vec<MapsArg> {
    let mut out = Vec::new();
    for arg in event.argv.iter().skip(1) {
        let absolute = resolve(arg, event.cwd.as_deref());
        if MAPS_PATTERN.matches(arg)
            || absolute
                .as_deref()
                .is_some_and(|a| a.ends_with(b"/maps") && a.starts_with(b"/proc/"))
        {
            out.push(MapsArg {
                arg: arg.to_vec(),
                target: absolute.as_deref().and_then(|a| maps_owner(a, event.pid)),
            });
        }
    }
    out
}

/// `arg` as an absolute, normalised path.
fn resolve(arg: &[u8], cwd: Option<&[u8]>) -> Option<Vec<u8>> {
    let joined;
    let path = if arg.starts_with(b"/") {
        arg
    } else {
        let cwd = cwd?;
        joined = [cwd, b"/", arg].concat();
        &joined
    };
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for part in parts {
        out.push(b'/');
        out.extend_from_slice(part);
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
        maps_args(&exec(args, cwd, 7))
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
