//! Rule evaluation cost on the hot path: the shipped seed rule (loaded from
//! its TOML file) against exec events that do not match, exactly as the
//! pipeline evaluates them (fresh EventContext per event), with heap
//! allocations counted.
//!
//! `cargo bench --bench rules`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mapwatch::audit::assemble::ExecEvent;
use mapwatch::config::Config;
use mapwatch::process::host::{HostInfo, UserNames};
use mapwatch::process::{EventContext, ProcessTable};
use mapwatch::rule::RuleSet;
use mapwatch::rule::live::ExecFields;

mod common;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

fn exec(path: &str, args: &[&str]) -> ExecEvent {
    ExecEvent {
        pid: 4_000_000_000,
        ppid: 4_000_000_001,
        euid: Some(1000),
        uid: Some(1000),
        exe: Some(path.as_bytes().to_vec()),
        argv: args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>().into(),
        path: Some(path.as_bytes().to_vec()),
        complete: true,
        ..ExecEvent::default()
    }
}

struct Harness {
    rules: RuleSet,
    table: ProcessTable,
    host: HostInfo,
    users: UserNames,
    matched: Vec<usize>,
}

impl Harness {
    fn evaluate(&mut self, event: &ExecEvent) -> usize {
        let mut ctx =
            EventContext::for_exec(event.pid, event.ppid, &mut self.table, Instant::now());
        self.matched.clear();
        let matched = &mut self.matched;
        self.rules.evaluate(
            &mut ExecFields::new(event, &mut ctx, &self.host, &mut self.users),
            &mut |i| matched.push(i),
        );
        matched.len()
    }
}

fn bench(c: &mut Criterion) {
    let config = Config::default();
    let mut harness = Harness {
        rules: config.load_rules().expect("shipped rules load"),
        table: ProcessTable::new(65536, Duration::from_secs(60)),
        host: HostInfo::detect(),
        users: UserNames::default(),
        matched: Vec::with_capacity(8),
    };
    let events = [
        ("ls", exec("/usr/bin/ls", &["ls", "-la", "/tmp"])),
        (
            "cat_other_file",
            exec(
                "/usr/bin/cat",
                &["cat", "/etc/hosts", "/var/log/syslog", "/proc/1/smaps"],
            ),
        ),
    ];
    for (name, event) in &events {
        assert_eq!(harness.evaluate(event), 0, "{name} must not match");
        let before = common::allocations();
        for _ in 0..10_000 {
            black_box(harness.evaluate(black_box(event)));
        }
        let allocations = common::allocations() - before;
        println!("{name}: {allocations} allocations in 10000 evaluations");
        c.bench_function(&format!("seed_rule_non_matching/{name}"), |b| {
            b.iter(|| harness.evaluate(black_box(event)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
