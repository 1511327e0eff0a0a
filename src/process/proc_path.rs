//! The grammar of procfs paths that name one process's file:
//! `/proc/<pid>/<file>` and `/proc/<pid>/task/<tid>/<file>`, where `<pid>`
//! may be `self` or `thread-self` (the process that opens it).
//!
//! Contract: [`ProcFile::parse`] takes an absolute, normalised path (no
//! `.`, `..` or doubled `/`: what the kernel reports for an open file, or
//! what [`crate::maps`] makes of an argument) and borrows from it. It is
//! the one parser of these paths: the fanotify filter, the argument
//! analysis, the correlator, the rules and the alert all go through it.

use crate::audit::record::parse_decimal;

/// Which process a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Pid(u32),
    /// `self` or `thread-self`: whoever opens it.
    Opener,
}

/// A file of one process's procfs directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcFile<'p> {
    pub owner: Owner,
    /// Through `task/<tid>/`: a thread's view (threads share the map).
    pub thread: Option<u32>,
    /// The file's name in that directory (`maps`, `smaps`, `mem`, ...).
    pub name: &'p [u8],
}

impl<'p> ProcFile<'p> {
    /// The process file `path` names, if it names one.
    pub fn parse(path: &'p [u8]) -> Option<Self> {
        Self::parse_in_procfs(path.strip_prefix(b"/proc")?)
    }

    /// The process file a path from a procfs's own root (`/42/maps`)
    /// names, if it names one.
    pub fn parse_in_procfs(path: &'p [u8]) -> Option<Self> {
        let rest = path.strip_prefix(b"/")?;
        let mut parts = rest.split(|b| *b == b'/');
        let owner = match parts.next()? {
            b"self" | b"thread-self" => Owner::Opener,
            digits => Owner::Pid(parse_decimal(digits)?),
        };
        let (thread, name) = match (parts.next()?, parts.next(), parts.next()) {
            (name, None, None) => (None, name),
            (b"task", Some(tid), Some(name)) => (Some(parse_decimal(tid)?), name),
            _ => return None,
        };
        if name.is_empty() || parts.next().is_some() {
            return None;
        }
        Some(ProcFile {
            owner,
            thread,
            name,
        })
    }

    /// The pid whose file this is, when `opener` opens it.
    pub fn owner_pid(&self, opener: u32) -> u32 {
        match self.owner {
            Owner::Pid(pid) => pid,
            Owner::Opener => opener,
        }
    }
}

/// The files of a process that give away its memory layout or contents:
/// what injection needs to know, and what a dump reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    Maps,
    Smaps,
    SmapsRollup,
    NumaMaps,
    /// Physical frames and flags of each page.
    Pagemap,
    /// The directory whose entries are named after every mapping.
    MapFiles,
    /// The memory itself.
    Mem,
}

/// Each layout file and its name in a pid's directory: one table for both
/// directions.
const LAYOUT_NAMES: [(Layout, &str); 7] = [
    (Layout::Maps, "maps"),
    (Layout::Smaps, "smaps"),
    (Layout::SmapsRollup, "smaps_rollup"),
    (Layout::NumaMaps, "numa_maps"),
    (Layout::Pagemap, "pagemap"),
    (Layout::MapFiles, "map_files"),
    (Layout::Mem, "mem"),
];

impl Layout {
    pub fn from_name(name: &[u8]) -> Option<Layout> {
        LAYOUT_NAMES
            .iter()
            .find(|(_, n)| n.as_bytes() == name)
            .map(|(layout, _)| *layout)
    }

    /// The file's name, as `file.name` gives it.
    pub fn name(self) -> &'static str {
        LAYOUT_NAMES
            .iter()
            .find(|(layout, _)| *layout == self)
            .map_or("", |(_, name)| name)
    }
}

/// Whether the last letters of `path` can be a layout file's name. Most
/// procfs reads fanotify reports are of other files (`ps` reads stat,
/// status, cmdline): those are refused by this, unparsed.
pub fn may_name_layout(path: &[u8]) -> bool {
    path.ends_with(b"maps")
        || path.ends_with(b"_rollup")
        || path.ends_with(b"/pagemap")
        || path.ends_with(b"/map_files")
        || path.ends_with(b"/mem")
}

/// Whose layout file `path` is, and which, when `opener` opens it.
pub fn layout_owner(path: &[u8], opener: u32) -> Option<(u32, Layout)> {
    if !may_name_layout(path) {
        return None;
    }
    let file = ProcFile::parse(path)?;
    Some((file.owner_pid(opener), Layout::from_name(file.name)?))
}

/// Whose memory map `path` is, when `opener` opens it: `None` unless it
/// names a `maps` file.
pub fn maps_owner(path: &[u8], opener: u32) -> Option<u32> {
    layout_owner(path, opener).and_then(|(owner, layout)| (layout == Layout::Maps).then_some(owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_owner_of_maps_files() {
        assert_eq!(maps_owner(b"/proc/42/maps", 7), Some(42));
        assert_eq!(maps_owner(b"/proc/42/task/43/maps", 7), Some(42));
        assert_eq!(maps_owner(b"/proc/self/maps", 7), Some(7));
        assert_eq!(maps_owner(b"/proc/thread-self/maps", 7), Some(7));
        assert_eq!(maps_owner(b"/proc/self/task/9/maps", 7), Some(7));
    }

    #[test]
    fn refuses_what_is_not_one_process_file() {
        for path in [
            &b"/proc/42/smaps"[..],
            b"/proc/42/task/maps",
            b"/proc//maps",
            b"/proc/maps",
            b"/proc/42/x/43/maps",
            b"/proc/42/task/43/maps/x",
            b"/proc/4x/maps",
            b"/proc/42/task/4x/maps",
            b"/proc/99999999999/maps",
            b"/PROC/42/MAPS",
            b"proc/42/maps",
            b"/proc/42/",
        ] {
            assert_eq!(
                maps_owner(path, 7),
                None,
                "{}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn names_the_owner_of_layout_files() {
        assert_eq!(
            layout_owner(b"/proc/42/smaps", 7),
            Some((42, Layout::Smaps))
        );
        assert_eq!(
            layout_owner(b"/proc/42/task/43/smaps_rollup", 7),
            Some((42, Layout::SmapsRollup))
        );
        assert_eq!(
            layout_owner(b"/proc/self/numa_maps", 7),
            Some((7, Layout::NumaMaps))
        );
        assert_eq!(
            layout_owner(b"/proc/42/pagemap", 7),
            Some((42, Layout::Pagemap))
        );
        assert_eq!(
            layout_owner(b"/proc/42/map_files", 7),
            Some((42, Layout::MapFiles))
        );
        assert_eq!(layout_owner(b"/proc/42/mem", 7), Some((42, Layout::Mem)));
        assert_eq!(layout_owner(b"/proc/42/maps", 7), Some((42, Layout::Maps)));
        for path in [
            &b"/proc/42/status"[..],
            b"/proc/42/map_files/7f00-7f10",
            b"/proc/42/xmaps",
            b"/proc/42/fd/3/mem",
            b"/proc/mem",
        ] {
            assert_eq!(
                layout_owner(path, 7),
                None,
                "{}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn keeps_the_file_name_and_thread() {
        let file = ProcFile::parse(b"/proc/42/task/43/numa_maps");
        assert_eq!(
            file,
            Some(ProcFile {
                owner: Owner::Pid(42),
                thread: Some(43),
                name: b"numa_maps"
            })
        );
    }
}
