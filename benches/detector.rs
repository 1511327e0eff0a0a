//! The per-exec cost of the detection core: one exec event (7 netlink
//! records, an `ls` that matches no rule) through `Detector`, as the
//! pipeline feeds it: parse, assemble, process table update (no procfs
//! read), rule evaluation. Record texts are built beforehand; allocations
//! counted.
//!
//! `cargo bench --bench detector`

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use mapwatch::config::Config;
use mapwatch::detector::Detector;

mod common;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

/// An exec of `ls` by this process (so its /proc/<pid>/stat exists).
fn records(serial: u64) -> Vec<(u16, String)> {
    let pid = std::process::id();
    let id = format!("audit(1700000000.100:{serial}):");
    vec![
        (
            1300,
            format!(
                "{id} arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=2 ppid=1 pid={pid} auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm=\"ls\" exe=\"/usr/bin/ls\" key=\"mapwatch\""
            ),
        ),
        (
            1309,
            format!("{id} argc=3 a0=\"ls\" a1=\"-la\" a2=\"/tmp\""),
        ),
        (1307, format!("{id} cwd=\"/home/user\"")),
        (
            1302,
            format!(
                "{id} item=0 name=\"/usr/bin/ls\" inode=1 dev=fe:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0"
            ),
        ),
        (
            1302,
            format!(
                "{id} item=1 name=\"/lib64/ld-linux-x86-64.so.2\" inode=2 dev=fe:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0"
            ),
        ),
        (1327, format!("{id} proctitle=6C73002D6C61002F746D70")),
        (1320, format!("{id} ")),
    ]
}

fn bench(c: &mut Criterion) {
    let config = Config::default();
    let mut detector = Detector::new(&config, config.load_rules().expect("shipped rules"), false);
    let mut serial = 0u64;
    let mut one_event = |detector: &mut Detector| {
        serial += 1;
        for (record_type, text) in records(serial) {
            detector.on_netlink_record(record_type, text.as_bytes(), Instant::now(), &mut |_| {});
        }
    };
    // The record texts are built outside the counted path below.
    let batches: Vec<Vec<(u16, String)>> = (0..10_000u64).map(|n| records(1_000_000 + n)).collect();
    one_event(&mut detector);
    let before = common::allocations();
    for batch in &batches {
        for (record_type, text) in batch {
            detector.on_netlink_record(*record_type, text.as_bytes(), Instant::now(), &mut |_| {});
        }
    }
    let per_event = (common::allocations() - before) as f64 / batches.len() as f64;
    println!("allocations per exec event: {per_event:.1}");
    assert_eq!(detector.stats().alerts, 0);
    // Serials keep growing, so every event is new to the assembler.
    let prebuilt: Vec<Vec<(u16, String)>> =
        (0..100_000u64).map(|n| records(2_000_000 + n)).collect();
    let mut next = 0usize;
    c.bench_function("detector/exec_event_no_match", |b| {
        b.iter(|| {
            let batch = &prebuilt[next % prebuilt.len()];
            next += 1;
            for (record_type, text) in batch {
                detector.on_netlink_record(
                    *record_type,
                    black_box(text.as_bytes()),
                    Instant::now(),
                    &mut |_| {},
                );
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
