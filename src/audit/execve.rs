//! EXECVE records -> [`Argv`].
//!
//! Contract: the kernel writes `argc=N a0=.. a1=..`, splits an argument longer
//! than its chunk size as `aN_len=LEN aN[0]=.. aN[1]=..`, and spreads a long
//! argv over several EXECVE records of one event. `argc` is only a hint: a
//! missing argument becomes empty, an extra one is kept. Arguments are bytes;
//! nothing is lost to UTF-8 conversion. Malformed input is flagged, never a
//! panic, and cannot make the builder allocate more than the input's size
//! (plus [`MAX_FILLED_GAPS`] empty arguments).

use super::record::{Record, Value, parse_decimal};

/// Most empty arguments ever synthesised for gaps; beyond this a record
/// claiming a huge index is treated as malformed, not as a reason to
/// allocate millions of entries.
pub const MAX_FILLED_GAPS: usize = 1 << 16;

/// A process's arguments: every argument's bytes, in one buffer, one space
/// between two arguments. The buffer is then ECS's `command_line` (the
/// arguments joined by spaces) as it is, which rules ask of every exec.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Argv {
    bytes: Vec<u8>,
    /// Where each argument ends; the next starts one byte (the space) later.
    ends: Vec<usize>,
}

impl Argv {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of all arguments together, with the spaces between them.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The arguments joined by spaces (ECS's `command_line`).
    pub fn joined(&self) -> &[u8] {
        &self.bytes
    }

    pub fn get(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)?;
        let start = match index.checked_sub(1) {
            None => 0,
            Some(before) => self.ends[before] + 1,
        };
        Some(&self.bytes[start..end])
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }

    pub fn push(&mut self, arg: &[u8]) {
        self.start_argument();
        self.bytes.extend_from_slice(arg);
        self.ends.push(self.bytes.len());
    }

    /// The non-empty strings of a NUL-separated list (`/proc/PID/environ`),
    /// in place: the list's own buffer becomes the joined bytes, so
    /// reading one costs no copy and no growth.
    pub fn from_nul_separated(mut list: Vec<u8>) -> Argv {
        let mut ends = Vec::with_capacity(list.iter().filter(|b| **b == 0).count() + 1);
        let mut write = 0;
        let mut start = 0;
        while start < list.len() {
            let end = list[start..]
                .iter()
                .position(|b| *b == 0)
                .map_or(list.len(), |at| start + at);
            if end > start {
                if !ends.is_empty() {
                    list[write] = b' ';
                    write += 1;
                }
                list.copy_within(start..end, write);
                write += end - start;
                ends.push(write);
            }
            start = end + 1;
        }
        list.truncate(write);
        Argv { bytes: list, ends }
    }

    /// The separator before an argument that is not the first.
    fn start_argument(&mut self) {
        if !self.ends.is_empty() {
            self.bytes.push(b' ');
        }
    }
}

impl std::fmt::Debug for Argv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

impl<'a, I: IntoIterator<Item = &'a [u8]>> From<I> for Argv {
    fn from(args: I) -> Self {
        let mut argv = Argv::default();
        for arg in args {
            argv.push(arg);
        }
        argv
    }
}

/// Where one decoded piece of an argument sits in the builder's buffer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Piece {
    index: u32,
    /// `None` for a whole argument (`aN=`), `Some(i)` for chunk `aN[i]=`.
    chunk: Option<u32>,
    start: usize,
    end: usize,
}

/// What went wrong while reassembling; the argv is still produced.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct ArgvDefects {
    /// Fields that are not `argc`, `aN`, `aN_len` or `aN[i]`.
    pub unknown_fields: u32,
    /// Indices below `argc` that never arrived (filled with empty arguments).
    pub missing_args: u32,
    /// A split argument whose chunks don't add up to its `aN_len`.
    pub length_mismatches: u32,
    /// Indices so far past the rest that gaps were not filled.
    pub sparse: bool,
}

impl ArgvDefects {
    pub fn any(&self) -> bool {
        *self != ArgvDefects::default()
    }
}

/// Accumulates the EXECVE records of one event.
#[derive(Default, Debug)]
pub struct ArgvBuilder {
    argc: Option<u32>,
    buf: Vec<u8>,
    pieces: Vec<Piece>,
    declared_lens: Vec<(u32, usize)>,
    defects: ArgvDefects,
}

enum ArgKey {
    Argc,
    Whole(u32),
    Len(u32),
    Chunk(u32, u32),
}

fn parse_arg_key(key: &[u8]) -> Option<ArgKey> {
    if key == b"argc" {
        return Some(ArgKey::Argc);
    }
    let rest = key.strip_prefix(b"a")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let index = parse_decimal::<u32>(&rest[..digits])?;
    match &rest[digits..] {
        b"" => Some(ArgKey::Whole(index)),
        b"_len" => Some(ArgKey::Len(index)),
        [b'[', chunk @ .., b']'] => Some(ArgKey::Chunk(index, parse_decimal(chunk)?)),
        _ => None,
    }
}

impl ArgvBuilder {
    pub fn add_record(&mut self, record: &Record<'_>) {
        for (key, value) in record.fields() {
            self.add_field(key, value);
        }
    }

    fn add_field(&mut self, key: &[u8], value: Value<'_>) {
        match parse_arg_key(key) {
            Some(ArgKey::Argc) => match value.decimal::<u32>() {
                Some(n) => self.argc = Some(n),
                None => self.defects.unknown_fields += 1,
            },
            Some(ArgKey::Whole(index)) => self.add_piece(index, None, value),
            Some(ArgKey::Chunk(index, chunk)) => self.add_piece(index, Some(chunk), value),
            Some(ArgKey::Len(index)) => match value.decimal::<usize>() {
                Some(len) => self.declared_lens.push((index, len)),
                None => self.defects.unknown_fields += 1,
            },
            None => self.defects.unknown_fields += 1,
        }
    }

    fn add_piece(&mut self, index: u32, chunk: Option<u32>, value: Value<'_>) {
        // As `Argv` lays arguments out, so that in the plain case the
        // buffer is the argv.
        if !self.pieces.is_empty() {
            self.buf.push(b' ');
        }
        let start = self.buf.len();
        // An absent value is still an argument the process received: keep it empty.
        value.untrusted_into(&mut self.buf);
        self.pieces.push(Piece {
            index,
            chunk,
            start,
            end: self.buf.len(),
        });
    }

    /// What the kernel writes for any argv under 7,500 bytes an argument:
    /// `argc` and `a0..aN` in order, each whole. Anything else (split
    /// arguments, gaps, reordering, a wrong `argc`) takes the general path.
    fn is_plain(&self) -> bool {
        self.declared_lens.is_empty()
            && self
                .argc
                .is_some_and(|argc| argc as usize == self.pieces.len())
            && self
                .pieces
                .iter()
                .enumerate()
                .all(|(i, p)| p.chunk.is_none() && p.index as usize == i)
    }

    /// The reassembled argv and what was wrong with the input.
    pub fn finish(mut self) -> (Argv, ArgvDefects) {
        if self.is_plain() {
            // Already in order and whole: the buffer is the argv.
            let ends = self.pieces.iter().map(|p| p.end).collect();
            return (
                Argv {
                    bytes: self.buf,
                    ends,
                },
                self.defects,
            );
        }
        // The kernel emits pieces in order; sorting is only for hostile or
        // reordered input, and is a no-op check otherwise.
        if !self.pieces.is_sorted() {
            self.pieces.sort();
        }
        let highest = self
            .pieces
            .last()
            .map(|p| p.index as usize + 1)
            .unwrap_or(0);
        let declared = self.argc.map(|n| n as usize).unwrap_or(0);
        let wanted = highest.max(declared);
        let distinct = count_distinct_indices(&self.pieces);
        let fill_gaps = wanted - distinct <= MAX_FILLED_GAPS;
        self.defects.sparse = !fill_gaps;

        let mut argv = Argv {
            bytes: Vec::with_capacity(self.buf.len()),
            ends: Vec::with_capacity(if fill_gaps { wanted } else { distinct }),
        };
        let mut next_index = 0usize;
        let mut pieces = self.pieces.iter().peekable();
        while let Some(first) = pieces.next() {
            let index = first.index as usize;
            if fill_gaps {
                while next_index < index {
                    argv.push(b"");
                    self.defects.missing_args += 1;
                    next_index += 1;
                }
            }
            argv.start_argument();
            argv.bytes
                .extend_from_slice(&self.buf[first.start..first.end]);
            let mut len = first.end - first.start;
            while let Some(more) = pieces.next_if(|p| p.index == first.index) {
                argv.bytes
                    .extend_from_slice(&self.buf[more.start..more.end]);
                len += more.end - more.start;
            }
            argv.ends.push(argv.bytes.len());
            if let Some((_, declared_len)) =
                self.declared_lens.iter().find(|(i, _)| *i == first.index)
            {
                // The kernel declares the logged length: hex digits when the
                // argument was hex-encoded, bytes when it was quoted.
                if *declared_len != len && *declared_len != 2 * len {
                    self.defects.length_mismatches += 1;
                }
            }
            next_index = index + 1;
        }
        if fill_gaps {
            while next_index < declared {
                argv.push(b"");
                self.defects.missing_args += 1;
                next_index += 1;
            }
        }
        (argv, self.defects)
    }
}

fn count_distinct_indices(sorted: &[Piece]) -> usize {
    let mut count = 0;
    let mut last = None;
    for piece in sorted {
        if last != Some(piece.index) {
            count += 1;
            last = Some(piece.index);
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(lines: &[&str]) -> (Argv, ArgvDefects) {
        let mut builder = ArgvBuilder::default();
        for line in lines {
            let record = Record::parse_log_line(line.as_bytes()).expect("test record parses");
            builder.add_record(&record);
        }
        builder.finish()
    }

    #[test]
    fn a_nul_separated_list_keeps_its_non_empty_strings_in_order() {
        for (list, want) in [
            (&b"A=1\0B=2\0"[..], &["A=1", "B=2"][..]),
            (b"\0\0A=1\0\0B=\0", &["A=1", "B="]),
            (b"LAST=no-nul", &["LAST=no-nul"]),
            (b"", &[]),
            (b"\0", &[]),
        ] {
            let argv = Argv::from_nul_separated(list.to_vec());
            let want: Vec<&[u8]> = want.iter().map(|s| s.as_bytes()).collect();
            assert_eq!(argv, Argv::from(want.iter().copied()), "{list:?}");
            assert_eq!(argv.joined(), want.join(&b' ').as_slice());
        }
    }

    fn args(argv: &Argv) -> Vec<Vec<u8>> {
        argv.iter().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn the_whole_in_order_argv_is_reassembled_as_the_general_path_would() {
        let plain = ["type=EXECVE msg=audit(1.000:1): argc=3 a0=\"cat\" a1=\"\" a2=2F70726F63"];
        // The same arguments out of order, and with argc not yet seen: the
        // general path, which must give the same argv.
        let reordered = ["type=EXECVE msg=audit(1.000:1): a2=2F70726F63 a0=\"cat\" a1=\"\" argc=3"];
        let mut builder = ArgvBuilder::default();
        builder.add_record(&Record::parse_log_line(plain[0].as_bytes()).expect("parses"));
        assert!(builder.is_plain());
        let mut builder = ArgvBuilder::default();
        builder.add_record(&Record::parse_log_line(reordered[0].as_bytes()).expect("parses"));
        assert!(!builder.is_plain());
        let (fast, fast_defects) = build(&plain);
        let (general, general_defects) = build(&reordered);
        assert_eq!(fast, general);
        assert_eq!(
            args(&fast),
            vec![b"cat".to_vec(), Vec::new(), b"/proc".to_vec()]
        );
        assert_eq!(fast_defects, general_defects);
        // argc says more than came: not plain, the missing one is filled.
        let (short, defects) = build(&["type=EXECVE msg=audit(1.000:1): argc=2 a0=\"cat\""]);
        assert_eq!(args(&short), vec![b"cat".to_vec(), Vec::new()]);
        assert_eq!(defects.missing_args, 1);
    }

    /// `command_line` is the arguments joined by one space each, on both
    /// paths, whatever the arguments hold (spaces, nothing, split chunks).
    #[test]
    fn joined_is_the_arguments_separated_by_one_space() {
        let plain =
            ["type=EXECVE msg=audit(1.000:1): argc=4 a0=\"sh\" a1=\"\" a2=2D632061 a3=\"b\""];
        let split = [
            "type=EXECVE msg=audit(1.000:1): argc=3 a0=\"sh\" a1_len=4 a1[0]=\"-c\" a1[1]=2061 a2=\"b\"",
        ];
        let gap = ["type=EXECVE msg=audit(1.000:1): argc=3 a0=\"sh\" a2=\"b\""];
        for (lines, want, argc) in [
            (&plain[..], &b"sh  -c a b"[..], 4),
            (&split[..], b"sh -c a b", 3),
            (&gap[..], b"sh  b", 3),
        ] {
            let (argv, _) = build(lines);
            assert_eq!(argv.joined(), want, "{lines:?}");
            assert_eq!(argv.len(), argc);
            let rejoined = argv.iter().collect::<Vec<_>>().join(&b' ');
            assert_eq!(argv.joined(), rejoined);
        }
        let pushed = Argv::from([&b"a"[..], b"", b" c"]);
        assert_eq!(pushed.joined(), b"a   c");
        assert_eq!(
            args(&pushed),
            vec![b"a".to_vec(), Vec::new(), b" c".to_vec()]
        );
        assert_eq!(Argv::default().joined(), b"");
    }

    #[test]
    fn plain_quoted_and_hex_arguments() {
        let (argv, defects) = build(&[
            "type=EXECVE msg=audit(1.000:1): argc=3 a0=\"cat\" a1=2F70726F632F312F6D617073 a2=\"-n\"",
        ]);
        assert_eq!(
            args(&argv),
            vec![b"cat".to_vec(), b"/proc/1/maps".to_vec(), b"-n".to_vec()]
        );
        assert!(!defects.any());
    }

    #[test]
    fn split_argument_is_joined_in_chunk_order() {
        let (argv, defects) = build(&[
            "type=EXECVE msg=audit(1.000:1): argc=2 a0=\"echo\" a1_len=12 a1[1]=646566 a1[0]=616263",
        ]);
        assert_eq!(args(&argv), vec![b"echo".to_vec(), b"abcdef".to_vec()]);
        assert!(!defects.any());
    }

    #[test]
    fn split_argument_length_mismatch_is_flagged() {
        let (argv, defects) =
            build(&["type=EXECVE msg=audit(1.000:1): argc=1 a0_len=9 a0[0]=616263"]);
        assert_eq!(args(&argv), vec![b"abc".to_vec()]);
        assert_eq!(defects.length_mismatches, 1);
    }

    #[test]
    fn argv_spanning_several_records() {
        let (argv, _) = build(&[
            "type=EXECVE msg=audit(1.000:1): argc=4 a0=\"x\" a1=\"y\"",
            "type=EXECVE msg=audit(1.000:1): a2=\"z\" a3=\"w\"",
        ]);
        assert_eq!(argv.len(), 4);
        assert_eq!(argv.get(3), Some(&b"w"[..]));
    }

    #[test]
    fn argc_is_a_hint_missing_become_empty_extra_are_kept() {
        let (argv, defects) = build(&["type=EXECVE msg=audit(1.000:1): argc=4 a0=\"x\" a2=\"z\""]);
        assert_eq!(
            args(&argv),
            vec![b"x".to_vec(), vec![], b"z".to_vec(), vec![]]
        );
        assert_eq!(defects.missing_args, 2);

        let (argv, _) = build(&["type=EXECVE msg=audit(1.000:1): argc=1 a0=\"x\" a1=\"extra\""]);
        assert_eq!(argv.len(), 2);
    }

    #[test]
    fn no_argc_at_all() {
        let (argv, _) = build(&["type=EXECVE msg=audit(1.000:1): a0=\"x\""]);
        assert_eq!(args(&argv), vec![b"x".to_vec()]);
    }

    #[test]
    fn huge_index_does_not_allocate_gaps() {
        let (argv, defects) =
            build(&["type=EXECVE msg=audit(1.000:1): argc=4294967295 a0=\"x\" a4294967294=\"y\""]);
        assert_eq!(args(&argv), vec![b"x".to_vec(), b"y".to_vec()]);
        assert!(defects.sparse);
    }

    #[test]
    fn index_above_u32_is_an_unknown_field() {
        let (argv, defects) =
            build(&["type=EXECVE msg=audit(1.000:1): argc=1 a0=\"x\" a4294967296=\"y\""]);
        assert_eq!(argv.len(), 1);
        assert_eq!(defects.unknown_fields, 1);
    }

    #[test]
    fn huge_argv_of_thousands_of_arguments() {
        let mut line = String::from("type=EXECVE msg=audit(1.000:1): argc=5000");
        for i in 0..5000 {
            line.push_str(&format!(" a{i}=\"arg{i}\""));
        }
        let (argv, defects) = build(&[&line]);
        assert_eq!(argv.len(), 5000);
        assert_eq!(argv.get(4999), Some(&b"arg4999"[..]));
        assert!(!defects.any());
    }

    #[test]
    fn absent_argument_stays_an_empty_argument() {
        let (argv, _) = build(&["type=EXECVE msg=audit(1.000:1): argc=2 a0=\"x\" a1=(null)"]);
        assert_eq!(args(&argv), vec![b"x".to_vec(), vec![]]);
    }
}
