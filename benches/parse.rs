//! Record parsing: mapwatch's zero-copy `audit::record` against
//! `linux-audit-parser` (laurel's parser) on the same corpus, in records/s,
//! plus heap allocations per record, counted by a wrapping global allocator.
//!
//! Corpus: every record of `../shared/testdata/peer-laurel` (real auditd
//! logs, raw and ENRICHED) and a typical exec event as mapwatch receives it.
//!
//! `cargo bench --bench parse`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mapwatch::audit::record::Record;

mod common;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

const EXEC_EVENT: &str = r#"type=SYSCALL msg=audit(1700000000.100:42): arch=c000003e syscall=59 success=yes exit=0 a0=55d0c9 a1=55d0ca a2=55d0cb a3=8 items=2 ppid=1000 pid=1001 auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm="cat" exe="/usr/bin/cat" key="mapwatch"
type=EXECVE msg=audit(1700000000.100:42): argc=2 a0="cat" a1="/proc/1/maps"
type=CWD msg=audit(1700000000.100:42): cwd="/home/user"
type=PATH msg=audit(1700000000.100:42): item=0 name="/usr/bin/cat" inode=1311 dev=fe:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0
type=PATH msg=audit(1700000000.100:42): item=1 name="/lib64/ld-linux-x86-64.so.2" inode=1312 dev=fe:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0
type=PROCTITLE msg=audit(1700000000.100:42): proctitle=636174002F70726F632F312F6D617073
type=EOE msg=audit(1700000000.100:42):"#;

fn corpus() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/peer-laurel");
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read(&path).unwrap_or_default();
        lines.extend(
            text.split(|b| *b == b'\n')
                .filter(|l| l.starts_with(b"type=") || l.starts_with(b"node="))
                .map(|l| {
                    let mut line = l.to_vec();
                    line.push(b'\n');
                    line
                }),
        );
    }
    lines
}

fn exec_lines() -> Vec<Vec<u8>> {
    EXEC_EVENT
        .lines()
        .map(|l| format!("{l}\n").into_bytes())
        .collect()
}

/// Fields the kernel writes as untrusted strings (quoted or hex).
fn is_string_field(key: &[u8]) -> bool {
    matches!(
        key,
        b"comm" | b"exe" | b"name" | b"cwd" | b"proctitle" | b"key" | b"path"
    ) || (key.first() == Some(&b'a')
        && key.get(1).is_some_and(u8::is_ascii_digit)
        && !key.ends_with(b"_len"))
}

/// What linux-audit-parser does for every record: split every field, decode
/// the string ones (numbers stay text, as they do there until asked for).
fn ours(lines: &[Vec<u8>]) -> usize {
    let mut n = 0;
    for line in lines {
        if let Ok(record) = Record::parse_log_line(line) {
            for (key, value) in record.fields() {
                n += key.len();
                n += if is_string_field(key) {
                    value.untrusted().map_or(0, |v| v.len())
                } else {
                    value.raw().len()
                };
            }
        }
    }
    n
}

fn theirs(lines: &[Vec<u8>]) -> usize {
    let mut n = 0;
    for line in lines {
        if let Ok(message) = linux_audit_parser::parse(line, true) {
            n += message.body.len();
        }
    }
    n
}

fn allocations_per_record(lines: &[Vec<u8>], f: fn(&[Vec<u8>]) -> usize) -> f64 {
    let before = common::allocations();
    black_box(f(black_box(lines)));
    (common::allocations() - before) as f64 / lines.len() as f64
}

fn bench(c: &mut Criterion) {
    for (name, lines) in [("samples", corpus()), ("exec_event", exec_lines())] {
        let theirs_ok = lines
            .iter()
            .filter(|l| linux_audit_parser::parse(l, true).is_ok())
            .count();
        let ours_ok = lines
            .iter()
            .filter(|l| Record::parse_log_line(l).is_ok())
            .count();
        println!(
            "{name}: {} records; parsed ok: mapwatch {ours_ok}, linux-audit-parser {theirs_ok}; \
             allocations/record: mapwatch {:.2}, linux-audit-parser {:.2}",
            lines.len(),
            allocations_per_record(&lines, ours),
            allocations_per_record(&lines, theirs),
        );
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(lines.len() as u64));
        group.bench_function("mapwatch", |b| b.iter(|| ours(black_box(&lines))));
        group.bench_function("linux-audit-parser", |b| {
            b.iter(|| theirs(black_box(&lines)))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
