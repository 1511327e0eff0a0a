//! Parser and assembler on real audit records: the peer-laurel samples in
//! `../shared/testdata` (raw auditd logs, some ENRICHED, some interleaved).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mapwatch::audit::assemble::{Assembler, ExecEvent};
use mapwatch::audit::record::Record;
use mapwatch::config::Config;
use mapwatch::detector::Detector;

fn testdata_dir() -> PathBuf {
    let dir = std::env::var_os("MAPWATCH_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/peer-laurel")
        });
    assert!(
        dir.is_dir(),
        "audit record samples not found at {}: check out shared/ beside the repository or set MAPWATCH_TESTDATA",
        dir.display()
    );
    dir
}

fn record_lines(name: &str) -> Vec<Vec<u8>> {
    let text =
        std::fs::read(testdata_dir().join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"));
    text.split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"type=") || l.starts_with(b"node="))
        .map(<[u8]>::to_vec)
        .collect()
}

fn all_sample_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(testdata_dir())
        .expect("testdata readable")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 30,
        "expected the full sample set, found {}",
        names.len()
    );
    names
}

fn exec_events(name: &str) -> Vec<ExecEvent> {
    let mut assembler = Assembler::new(Duration::from_secs(1), 1024);
    let mut out = Vec::new();
    let now = Instant::now();
    for line in record_lines(name) {
        let record = Record::parse_log_line(&line).expect("sample record parses");
        assembler.push(&record, now, &mut out);
    }
    assembler.flush_all(&mut out);
    out
}

#[test]
fn every_sample_record_parses() {
    let mut total = 0;
    for name in all_sample_files() {
        for line in record_lines(&name) {
            total += 1;
            if let Err(e) = Record::parse_log_line(&line) {
                panic!("{name}: {e}: {}", String::from_utf8_lossy(&line));
            }
        }
    }
    assert!(total > 400, "only {total} records found");
}

#[test]
fn truncated_sample_records_never_panic() {
    for name in all_sample_files() {
        for line in record_lines(&name) {
            for cut in 0..line.len().min(400) {
                if let Ok(record) = Record::parse_log_line(&line[..cut]) {
                    for (_, value) in record.fields() {
                        let _ = value.untrusted();
                    }
                }
            }
        }
    }
}

#[test]
fn plain_execve() {
    let events = exec_events("record-execve.txt");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.argv.iter().collect::<Vec<_>>(), vec![&b"whoami"[..]]);
    assert_eq!(e.name(), b"whoami");
    assert_eq!(e.exe.as_deref(), Some(&b"/usr/bin/whoami"[..]));
    assert_eq!(e.cwd.as_deref(), Some(&b"/home/user/tmp"[..]));
    assert_eq!((e.pid, e.ppid, e.auid), (10884, 10883, Some(1000)));
}

#[test]
fn long_argument_split_over_three_records() {
    let events = exec_events("record-execve-long.txt");
    assert_eq!(events.len(), 1);
    let argv = &events[0].argv;
    assert_eq!(argv.len(), 2);
    assert_eq!(argv.get(0), Some(&b"/bin/echo"[..]));
    let long = argv.get(1).expect("second argument");
    // a1_len=16384 counts the hex digits of the encoded argument.
    assert_eq!(long.len(), 8192);
    assert!(
        long.starts_with(b"baaa"),
        "{:?}",
        String::from_utf8_lossy(&long[..8])
    );
    assert!(
        !events[0].argv_defects.any(),
        "{:?}",
        events[0].argv_defects
    );
}

#[test]
fn hex_encoded_script_argument() {
    let events = exec_events("record-perl-reverse-shell.txt");
    assert_eq!(events.len(), 1);
    let script = events[0].argv.get(2).expect("perl -e script");
    assert!(
        script.starts_with(b"use Socket;$i=\"10.0.0.1\";"),
        "{}",
        String::from_utf8_lossy(script)
    );
    assert_eq!(events[0].name(), b"perl");
}

#[test]
fn interleaved_shell_traces_yield_every_successful_exec() {
    for name in [
        "shell-proc-trace.txt",
        "shell-proc-trace-reordered.txt",
        "shell-proc-trace-confusion.txt",
    ] {
        let expected = record_lines(name)
            .iter()
            .filter(|l| {
                let l = String::from_utf8_lossy(l);
                l.contains("type=SYSCALL")
                    && (l.contains("success=yes") || l.contains("success=\"yes\""))
                    && (l.contains("syscall=59 ") || l.contains("syscall=execve"))
            })
            .count();
        let events = exec_events(name);
        assert_eq!(events.len(), expected, "{name}");
        assert!(
            events.iter().all(|e| !e.argv.is_empty()),
            "{name}: an exec without argv"
        );
    }
}

#[test]
fn enriched_apt_tree_samples() {
    for i in 0..=16 {
        let name = format!("tree_{i:02}.txt");
        let events = exec_events(&name);
        assert_eq!(events.len(), 1, "{name}");
        assert!(!events[0].name().is_empty(), "{name}");
        assert!(events[0].complete, "{name}");
    }
}

#[test]
fn detector_counts_malformed_records_and_keeps_going() {
    let config = Config::default();
    let rules = config.load_rules().expect("shipped rules load");
    let mut detector = Detector::new(&config, rules, false);
    let now = Instant::now();
    let mut alerts = Vec::new();
    let garbage: [&[u8]; 6] = [
        b"",
        b"garbage",
        b"audit(",
        b"audit(1.2:3",
        b"audit(x.1:2): a=1",
        b"\xff\xfe\x00",
    ];
    for text in garbage {
        detector.on_netlink_record(1300, text, now, &mut |a| alerts.push(a));
    }
    // Valid records after the garbage are still assembled into events.
    for line in record_lines("record-execve.txt") {
        let record = Record::parse_log_line(&line).expect("sample parses");
        let text = &line[line
            .windows(6)
            .position(|w| w == b"audit(")
            .expect("header")..];
        detector.on_netlink_record(record.rtype.0, text, now, &mut |a| alerts.push(a));
    }
    assert_eq!(detector.assembler_stats().exec_events, 1);
    assert_eq!(detector.stats().malformed_records, 6);
    assert_eq!(
        detector.stats().records,
        6 + record_lines("record-execve.txt").len() as u64
    );
    assert!(alerts.is_empty());
}
