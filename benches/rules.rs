//! Rule evaluation cost on the hot path: the shipped rules, then the shipped
//! rules with Elastic's 189 Linux exec rules (`../shared/testdata/
//! elastic-rules`, or `MAPWATCH_ELASTIC_RULES`), against exec events that
//! match none, exactly as the pipeline evaluates them (fresh EventContext
//! per event), with heap allocations counted.
//!
//! `cargo bench --bench rules`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mapwatch::audit::assemble::{Credentials, ExecEvent};
use mapwatch::config::Config;
use mapwatch::process::host::{HostInfo, UserNames};
use mapwatch::process::{EventContext, ProcessTable};
use mapwatch::rule::RuleSet;
use mapwatch::rule::live::ExecFields;

mod common;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

/// An exec by a process that has exited (as most have by the time their
/// records arrive), whose parent lives: this benchmark, so lookups of the
/// parent read procfs as they do in service.
fn exec(path: &str, args: &[&str]) -> ExecEvent {
    ExecEvent {
        pid: 4_000_000_000,
        ppid: std::process::id(),
        ids: Credentials {
            uid: Some(1000),
            euid: Some(1000),
            ..Credentials::default()
        },
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

fn corpus_dir() -> String {
    std::env::var("MAPWATCH_ELASTIC_RULES").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/testdata/elastic-rules"
        )
        .to_owned()
    })
}

fn bench(c: &mut Criterion) {
    let corpus = Config::parse(&format!("[rules]\ndirectories = [\"{}\"]\n", corpus_dir()))
        .expect("config")
        .load_rules()
        .expect("the corpus loads");
    assert!(corpus.rules.len() >= 189, "{} rules", corpus.rules.len());
    for (set, rules) in [
        (
            "seed_rule",
            Config::default().load_rules().expect("shipped rules load"),
        ),
        ("elastic_corpus", corpus),
    ] {
        bench_set(c, set, rules);
    }
}

fn bench_set(c: &mut Criterion, set: &str, rules: RuleSet) {
    let mut harness = Harness {
        rules,
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
        ("sh_c", exec("/usr/bin/dash", &["sh", "-c", "make -j2 all"])),
    ];
    for (name, event) in &events {
        assert_eq!(harness.evaluate(event), 0, "{name} must not match");
        let before = common::allocations();
        for _ in 0..10_000 {
            black_box(harness.evaluate(black_box(event)));
        }
        let allocations = common::allocations() - before;
        println!("{set}/{name}: {allocations} allocations in 10000 evaluations");
        c.bench_function(&format!("{set}_non_matching/{name}"), |b| {
            b.iter(|| harness.evaluate(black_box(event)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
