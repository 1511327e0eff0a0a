//! `/proc/<pid>/stat` as bytes: the few fields leader resolution needs.
//!
//! Contract: [`read_stat`] does one open and one read into a stack buffer (no
//! heap allocation); [`parse_stat`] never panics. `comm` may hold any bytes,
//! including `)` and spaces, so the fields are found after the *last* `)`.

use std::io;

/// The kernel's `comm`: at most 15 bytes, any bytes.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Comm {
    bytes: [u8; 16],
    len: u8,
}

impl Comm {
    pub fn new(name: &[u8]) -> Self {
        let mut comm = Comm::default();
        let len = name.len().min(comm.bytes.len());
        comm.bytes[..len].copy_from_slice(&name[..len]);
        comm.len = len as u8;
        comm
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The fields of `/proc/<pid>/stat` mapwatch uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProcStat {
    pub pid: u32,
    pub comm: Comm,
    /// Field 3: the state letter (`R`, `S`, `Z` for a zombie, …).
    pub state: u8,
    pub ppid: u32,
    /// Field 5: the process group id (the pid of the group leader).
    pub pgrp: u32,
    /// Field 6: the session id (the pid of the session leader).
    pub sid: u32,
    /// Field 7: the controlling terminal, encoded as the kernel's `dev_t`.
    pub tty_nr: u32,
    /// Field 22: start time in clock ticks since boot; with the pid it
    /// identifies a process across pid reuse.
    pub start_ticks: u64,
}

/// Reads and parses `/proc/<pid>/stat`.
pub fn read_stat(pid: u32) -> io::Result<ProcStat> {
    let mut buf = [0u8; 1024];
    let filled = super::procfs::read_into(pid, "stat", &mut buf)?;
    parse_stat(&buf[..filled])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/<pid>/stat"))
}

/// Parses the text of a stat file.
pub fn parse_stat(text: &[u8]) -> Option<ProcStat> {
    let open = text.iter().position(|b| *b == b'(')?;
    let close = text.iter().rposition(|b| *b == b')')?;
    if close < open {
        return None;
    }
    let pid = parse_num(text[..open].trim_ascii())?;
    let comm = Comm::new(&text[open + 1..close]);
    // Fields after the comm, numbered from 3 (state).
    let mut fields = text
        .get(close + 1..)?
        .split(|b| *b == b' ')
        .filter(|f| !f.is_empty());
    let mut nth = |skip: usize| fields.nth(skip);
    let state = *nth(0)?.first()?;
    let ppid = parse_num(nth(0)?)?;
    let pgrp = parse_num(nth(0)?)?;
    let sid = parse_num(nth(0)?)?;
    let tty_nr = parse_signed_as_u32(nth(0)?)?;
    // Fields 8..=21 skipped; field 22 is starttime.
    let start_ticks = parse_num(nth(14)?.trim_ascii())?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
        sid,
        tty_nr,
        start_ticks,
    })
}

fn parse_num<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn parse_signed_as_u32(b: &[u8]) -> Option<u32> {
    parse_num::<i64>(b).map(|v| v as u32)
}

/// What kind of terminal a `tty_nr` is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TtyKind {
    None,
    /// A pseudo-terminal (ssh, terminal emulators, tmux): not a "real" tty.
    Pts,
    /// `/dev/console`.
    Console,
    /// A virtual console or serial line: someone at the machine.
    Tty,
}

/// Classifies a `tty_nr` by its device major and minor numbers.
pub fn tty_kind(tty_nr: u32) -> TtyKind {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match (major, minor) {
        (0, _) => TtyKind::None,
        (136..=143, _) => TtyKind::Pts,
        (5, 1) => TtyKind::Console,
        _ => TtyKind::Tty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_stat_line() {
        let line = b"2669 (sh) S 1 2669 2669 0 -1 4194560 120 0 0 0 0 0 0 0 20 0 1 0 123456 2576384 224 18446744073709551615 1 1 0 0 0 0 0 0 65538 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let st = parse_stat(line).expect("parses");
        assert_eq!(
            (st.pid, st.ppid, st.sid, st.tty_nr, st.start_ticks),
            (2669, 1, 2669, 0, 123456)
        );
        assert_eq!(st.comm.as_bytes(), b"sh");
    }

    #[test]
    fn hostile_comm_with_parens_and_spaces() {
        let line = b"7 (a) b (c) R 3 4 5 34816 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0\n";
        let st = parse_stat(line).expect("parses");
        assert_eq!(st.comm.as_bytes(), b"a) b (c");
        assert_eq!((st.ppid, st.sid, st.start_ticks), (3, 5, 99));
        assert_eq!(tty_kind(st.tty_nr), TtyKind::Pts);
    }

    #[test]
    fn truncated_or_garbage_is_none() {
        assert!(parse_stat(b"").is_none());
        assert!(parse_stat(b"1 (x) S 1 2").is_none());
        assert!(parse_stat(b") 1 (").is_none());
    }

    #[test]
    fn reads_own_stat() {
        let me = std::process::id();
        let st = read_stat(me).expect("own stat readable");
        assert_eq!(st.pid, me);
        assert!(st.start_ticks > 0);
    }

    #[test]
    fn tty_kinds() {
        assert_eq!(tty_kind(0), TtyKind::None);
        assert_eq!(tty_kind(34816), TtyKind::Pts); // 136:0
        assert_eq!(tty_kind(1025), TtyKind::Tty); // 4:1, tty1
        assert_eq!(tty_kind(1281), TtyKind::Console); // 5:1
        assert_eq!(tty_kind(1088), TtyKind::Tty); // 4:64, ttyS0
    }
}
