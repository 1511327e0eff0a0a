//! Golden tests, as laurel has them: recorded inputs go through the
//! detector, and every document that comes out is compared, field by field,
//! with a checked-in expected file.
//!
//! The inputs (`tests/golden/inputs/`, made by `tests/golden/record.sh`) are
//! a real auditd's log and the feed auditd gave its plugins while a scenario
//! of `/proc/<pid>/maps` reads ran, and the reads fanotify saw (reader pid
//! and path). The expected documents are in `tests/golden/expected/`.
//! Fields that depend on the machine running the test (its host name and
//! kernel, the wall-clock time of a read or a health check, the replay's
//! speed) are normalised first; everything else must match.
//!
//! After a deliberate change, `MAPWATCH_BLESS=1 cargo test --release --test golden`
//! rewrites the expected files; review every line of `git diff tests/golden`
//! before committing it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mapwatch::alert::Alert;
use mapwatch::alert::health::LossWatch;
use mapwatch::alert::limit::Limiter;
use mapwatch::config::Config;
use mapwatch::detector::Detector;
use mapwatch::process::host::HostInfo;
use mapwatch::process::proc_path::maps_owner;
use mapwatch::replay::{ReplayOptions, replay};
use mapwatch::rule::RuleSet;
use mapwatch::sink::OutputFormat;
use mapwatch::source::fanotify::{ReadBatch, ReadEvent};
use serde_json::{Value, json};

mod support;
use support::elastic::{Promoted, assert_promoted_as_documented, external_alerts};

const SEED_RULE: &str = "2f95540c-923e-4f57-9dae-de30169c68b9";

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn input(name: &str) -> PathBuf {
    golden_dir().join("inputs").join(name)
}

fn read_input(name: &str) -> String {
    std::fs::read_to_string(input(name)).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; record the inputs with tests/golden/record.sh",
            input(name).display()
        )
    })
}

fn test_host() -> HostInfo {
    HostInfo {
        name: "(host)".into(),
        kernel: "(kernel)".into(),
    }
}

/// The defaults, without this machine's rule directories.
fn config() -> Config {
    let mut config = Config::default();
    config.rules.directories.clear();
    config
}

fn shipped_rules() -> RuleSet {
    config().load_rules().expect("shipped rules load")
}

/// The documents and summary of `mapwatch replay FILE --format json`.
fn replay_file(name: &str) -> (Vec<Value>, String) {
    let options = ReplayOptions {
        config: config(),
        rules: shipped_rules(),
        paths: vec![input(name)],
        format: OutputFormat::Json,
        verbose: false,
    };
    let mut out = Vec::new();
    let summary = replay(options, &mut out);
    let documents = String::from_utf8(out)
        .expect("JSON output is UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON document"))
        .collect();
    (documents, normalised_summary(&summary.to_string()))
}

/// The summary without its timing (` in 0.012 s (41234 records/s)`).
fn normalised_summary(summary: &str) -> String {
    match summary.rsplit_once(" in ") {
        Some((counts, _)) => format!("{counts} in (time normalised)"),
        None => summary.to_owned(),
    }
}

/// The time of a log line's record (`msg=audit(SECONDS.MILLIS:SERIAL)`).
fn record_time(line: &str) -> Option<Duration> {
    let start = line.find("audit(")? + "audit(".len();
    let (secs, rest) = line[start..].split_once('.')?;
    let millis = rest.get(..3)?;
    Some(Duration::from_secs(secs.parse().ok()?) + Duration::from_millis(millis.parse().ok()?))
}

/// Which pid a log line's SYSCALL record is of, when it is one.
fn syscall_pid(line: &str) -> Option<u32> {
    if !line.contains("type=SYSCALL") {
        return None;
    }
    let start = line.find(" pid=")? + " pid=".len();
    line[start..].split(' ').next()?.parse().ok()
}

/// The reads fanotify saw, in order: `(reader, path)`.
fn recorded_reads() -> Vec<(u32, String)> {
    read_input("reads.txt")
        .lines()
        .map(|line| {
            let (pid, path) = line
                .split_once(' ')
                .expect("reads.txt: `PID PATH` per line");
            (pid.parse().expect("reads.txt: a pid"), path.to_owned())
        })
        .collect()
}

/// The recorded log with the recorded reads: each read is seen 1 ms after
/// its reader's exec, on a clock that follows the records' own times (so
/// the correlator's windows and holds behave as they did live), and the
/// detector ticks every 100 ms of that clock as the live loop does.
fn detect_with_reads() -> Vec<Value> {
    let log = read_input("audit.log");
    let reads = recorded_reads();
    let pids = reads.iter().map(|(pid, _)| *pid);
    let targets = reads
        .iter()
        .filter_map(|(pid, path)| maps_owner(path.as_bytes(), *pid));
    require_not_running(pids.chain(targets));

    let config = config();
    let mut detector = Detector::for_recorded_log(&config, shipped_rules(), false);
    detector.confirm_reads(
        Duration::from_millis(config.fanotify.confirm_window_ms),
        Duration::from_millis(config.fanotify.hold_ms),
    );
    let t0 = Instant::now();
    let first = log.lines().find_map(record_time).expect("timed records");
    let at = |time: Duration| t0 + time.saturating_sub(first);
    let mut out = Vec::new();
    let mut emit = |alert: Alert| out.push(alert.document);
    let mut next_tick = t0;
    let mut pending_reads = reads.into_iter().peekable();
    let mut last = t0;
    for line in log.lines() {
        let Some(time) = record_time(line) else {
            continue;
        };
        let now = at(time);
        while next_tick <= now {
            tick(&mut detector, next_tick, &mut emit);
            next_tick += Duration::from_millis(100);
        }
        detector.on_log_line(line.as_bytes(), now, &mut emit);
        // The last record of its exec (auditd drops EOE from its log): the
        // reader's read follows.
        if line.starts_with("type=PROCTITLE")
            && let Some(&(reader, _)) = pending_reads.peek()
            && exec_seen(&log, reader, line)
        {
            let (reader, path) = pending_reads.next().expect("peeked");
            let seen = now + Duration::from_millis(1);
            let read = ReadEvent {
                pid: reader,
                target: maps_owner(path.as_bytes(), reader).expect("reads.txt: maps paths"),
                target_ns_pid: None,
                layout: mapwatch::process::proc_path::Layout::Maps,
                access: mapwatch::source::fanotify::Access::Read,
                path: path.into_bytes(),
                seen,
                taken_by: 1,
                index: 0,
                reader: None,
                via: Default::default(),
            };
            let batch = ReadBatch {
                reads: vec![read],
                opens: Vec::new(),
                unresolved: Vec::new(),
                drained_until: seen,
            };
            detector.on_reads(batch, seen, &mut emit);
        }
        last = now;
    }
    assert!(
        pending_reads.peek().is_none(),
        "reads.txt names readers whose exec is not in audit.log"
    );
    let end = last + Duration::from_secs(1);
    while next_tick <= end {
        tick(&mut detector, next_tick, &mut emit);
        next_tick += Duration::from_millis(100);
    }
    detector.flush(&mut emit);
    out
}

/// The live loop's tick: when an alert waits for the reads to be known,
/// the fanotify reader answers at once (its queue holds nothing more).
fn tick(detector: &mut Detector, now: Instant, emit: &mut dyn FnMut(Alert)) {
    detector.on_tick(now, emit);
    if detector.take_wants_catch_up() {
        let drained = ReadBatch {
            reads: Vec::new(),
            opens: Vec::new(),
            unresolved: Vec::new(),
            drained_until: now,
        };
        detector.on_reads(drained, now, emit);
    }
}

/// Whether the event that `last` ends is the exec of `pid`.
fn exec_seen(log: &str, pid: u32, last: &str) -> bool {
    // `audit(SECONDS.MILLIS:SERIAL)`: the event a record belongs to.
    let serial = |line: &str| {
        let start = line.find("audit(")?;
        let end = start + line[start..].find(')')?;
        Some(line[start..end].to_owned())
    };
    let Some(event) = serial(last) else {
        return false;
    };
    log.lines()
        .filter(|line| serial(line).as_deref() == Some(event.as_str()))
        .any(|line| syscall_pid(line) == Some(pid) && line.contains(" syscall=59 "))
}

/// The read events' processes are looked up in this machine's procfs: the
/// recording gave them pids no process here has (record.sh), and this
/// checks it.
fn require_not_running(pids: impl Iterator<Item = u32>) {
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} of the recorded reads is a live process on this machine: its procfs facts would replace the recorded ones; record the inputs again with tests/golden/record.sh"
        );
    }
}

/// Fields that depend on the machine or the moment of the run.
fn normalise(document: &mut Value) {
    if document.pointer("/host/name").is_some() {
        document["host"]["name"] = json!("(host)");
        document["host"]["hostname"] = json!("(host)");
    }
    if document.pointer("/host/os/kernel").is_some() {
        document["host"]["os"]["kernel"] = json!("(kernel)");
    }
    // Read alerts and health documents are dated when they are raised.
    let action = document.pointer("/event/action").and_then(Value::as_str);
    let dataset = document.pointer("/event/dataset").and_then(Value::as_str);
    if action == Some("read") || dataset == Some("mapwatch.health") {
        document["@timestamp"] = json!("(now)");
    }
    // A fanotify event's id names the run it was seen in.
    if let Some(id) = document.pointer("/event/id").and_then(Value::as_str)
        && let Some(rest) = id.strip_prefix("fanotify:")
        && let Some((_, read)) = rest.split_once(':')
    {
        document["event"]["id"] = json!(format!("fanotify:(run):{read}"));
    }
}

/// Compares `actual` with the expected file `name`, field by field, or
/// writes it with `MAPWATCH_BLESS=1`.
fn assert_golden(name: &str, mut actual: Value) {
    for document in documents_in(&mut actual) {
        normalise(document);
    }
    let path = golden_dir().join("expected").join(name);
    let text = serde_json::to_string_pretty(&actual).expect("serialisable") + "\n";
    if std::env::var_os("MAPWATCH_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("expected dir");
        std::fs::write(&path, text).expect("writing the expected file");
        return;
    }
    let expected: Value = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; create it with MAPWATCH_BLESS=1 cargo test --release --test golden",
                path.display()
            )
        });
    let differences = differences(&expected, &actual);
    assert!(
        differences.is_empty(),
        "{name}: {} field(s) differ from the expected file {}:\n{}\nIf the change is meant, run MAPWATCH_BLESS=1 cargo test --release --test golden and review `git diff tests/golden`.",
        differences.len(),
        path.display(),
        differences.join("\n")
    );
}

/// The documents of a golden value: `{"documents": [...], ...}` or a list.
fn documents_in(value: &mut Value) -> Vec<&mut Value> {
    match value {
        Value::Array(list) => list.iter_mut().collect(),
        Value::Object(map) => match map.get_mut("documents") {
            Some(Value::Array(list)) => list.iter_mut().collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Every leaf of `value` by its path (`documents[3].process.args[1]`).
fn leaves(value: &Value, path: String, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaves(child, child_path, out);
            }
        }
        Value::Array(list) if !list.is_empty() => {
            for (i, child) in list.iter().enumerate() {
                leaves(child, format!("{path}[{i}]"), out);
            }
        }
        leaf => {
            out.insert(path, leaf.clone());
        }
    }
}

fn differences(expected: &Value, actual: &Value) -> Vec<String> {
    let (mut want, mut got) = (BTreeMap::new(), BTreeMap::new());
    leaves(expected, String::new(), &mut want);
    leaves(actual, String::new(), &mut got);
    let mut out = Vec::new();
    for (path, value) in &want {
        match got.get(path) {
            None => out.push(format!("  {path}: expected {value}, missing")),
            Some(other) if other != value => {
                out.push(format!("  {path}: expected {value}, got {other}"))
            }
            Some(_) => {}
        }
    }
    for (path, value) in &got {
        if !want.contains_key(path) {
            out.push(format!("  {path}: unexpected {value}"));
        }
    }
    out
}

#[test]
fn replaying_auditds_log_gives_the_seed_rules_alerts_and_summary() {
    let (documents, summary) = replay_file("audit.log");
    assert!(
        documents
            .iter()
            .any(|d| d["rule"]["id"] == SEED_RULE && d["mapwatch"]["read"].is_null()),
        "the recorded log holds seed-rule positives"
    );
    assert_golden(
        "replay-audit-log.json",
        json!({"documents": documents, "summary": summary}),
    );
}

#[test]
fn replaying_auditds_plugin_feed_gives_the_same_alerts() {
    let (documents, summary) = replay_file("plugin-feed.log");
    let (from_log, _) = replay_file("audit.log");
    assert_eq!(
        documents.len(),
        from_log.len(),
        "the plugin feed and the log carry the same events"
    );
    assert_golden(
        "replay-plugin-feed.json",
        json!({"documents": documents, "summary": summary}),
    );
}

#[test]
fn reads_confirm_exec_alerts_and_raise_the_extended_rules_alerts() {
    let documents = detect_with_reads();
    let extended = documents
        .iter()
        .filter(|d| d["event"]["action"] == "read")
        .count();
    assert!(extended > 0, "reads no argument names raise file alerts");
    assert!(
        documents
            .iter()
            .any(|d| d["mapwatch"]["read"]["confirmed"] == true && d["event"]["action"] == "exec"),
        "a read confirms the exec alert that named it"
    );
    assert_golden("reads.json", Value::Array(documents));
}

/// The recorded log's alerts through a limiter of 1 per minute: what it
/// admitted (by argv), then its summaries. The limit is per reader and
/// target: of the log's five alerts, only the second `cat` naming no map
/// repeats a pair.
fn rate_limited(alerts: Vec<Value>) -> (Vec<Value>, Vec<Alert>) {
    let mut rules = shipped_rules();
    for rule in &mut rules.rules {
        rule.max_signals = 1;
        rule.interval = Duration::from_secs(60);
    }
    let mut limiter = Limiter::new(&rules);
    let t0 = Instant::now();
    let mut admitted = Vec::new();
    for (i, document) in alerts.into_iter().enumerate() {
        let alert = Alert {
            document,
            ..Alert::default()
        };
        if limiter.admit(&alert, t0 + Duration::from_millis(i as u64)) {
            admitted.push(json!({"admitted": alert.document["process"]["args"]}));
        }
    }
    let mut summaries = Vec::new();
    limiter.expire(t0 + Duration::from_secs(61), &mut summaries);
    (admitted, summaries)
}

#[test]
fn the_rate_limit_passes_the_first_alerts_and_summarises_the_rest() {
    let (alerts, _) = replay_file("audit.log");
    let (mut out, summaries) = rate_limited(alerts);
    assert!(!summaries.is_empty(), "suppressed alerts are summarised");
    out.extend(summaries.into_iter().map(|s| s.document));
    assert_golden("rate-limit.json", Value::Array(out));
}

#[test]
fn health_documents_report_what_grew_since_the_last() {
    let mut watch = LossWatch::default();
    let mut out = Vec::new();
    let rounds: [&[(&'static str, u64)]; 4] = [
        &[("kernel_lost", 0), ("enobufs", 0)],
        &[("kernel_lost", 3), ("enobufs", 0)],
        &[("kernel_lost", 3), ("enobufs", 0)],
        &[("kernel_lost", 10), ("enobufs", 1)],
    ];
    for counters in rounds {
        match watch.check(counters, &test_host()) {
            Some(alert) => out.push(json!({"document": alert.document, "summary": alert.summary})),
            None => out.push(json!({"document": null})),
        }
    }
    for entry in &mut out {
        if !entry["document"].is_null() {
            normalise(&mut entry["document"]);
        }
        // The summary line begins with the time it was raised.
        if let Some((_, rest)) = entry["summary"].as_str().and_then(|s| s.split_once(' ')) {
            entry["summary"] = json!(format!("(now) {rest}"));
        }
    }
    assert_golden("health.json", Value::Array(out));
}

/// Elastic's promotion rule (tests/support/elastic.rs) on one document of
/// every kind mapwatch writes: exec alerts (plain and confirmed), read
/// alerts of the extended rule, rate-limit summaries, health reports and
/// stats, as the detector makes them from the recorded inputs.
#[test]
fn every_document_kind_reaches_elastic_security_as_documented() {
    let (replayed, _) = replay_file("audit.log");
    let mut documents = detect_with_reads();
    let (_, summaries) = rate_limited(replayed.clone());
    documents.extend(replayed);
    documents.extend(summaries.into_iter().map(|s| s.document));
    let mut watch = LossWatch::default();
    let health = watch
        .check(&[("kernel_lost", 3)], &test_host())
        .expect("a loss is reported");
    documents.push(health.document);
    documents.push(mapwatch::alert::stats::document(
        &[("records", 10), ("kernel_lost", 3)],
        &test_host(),
    ));
    for (dataset, action) in [
        ("mapwatch.alert", "exec"),
        ("mapwatch.alert", "read"),
        ("mapwatch.alert", "alerts-suppressed"),
        ("mapwatch.health", ""),
        ("mapwatch.stats", ""),
    ] {
        assert!(
            documents.iter().any(|d| d["event"]["dataset"] == dataset
                && (action.is_empty() || d["event"]["action"] == action)),
            "no {dataset} {action} document to check"
        );
    }
    assert_promoted_as_documented(&documents);
    let seed = documents
        .iter()
        .find(|d| d["rule"]["id"] == SEED_RULE && d["event"]["action"] == "exec")
        .expect("a seed-rule alert");
    let title = external_alerts(seed).expect("promoted").title;
    assert!(
        title.starts_with("Suspicious /proc/maps Discovery: ") && title.contains("entry leader "),
        "{title}"
    );
}

/// The checker itself, on documents made to sit on each side of the rule.
#[test]
fn the_promotion_rule_is_evaluated_as_elasticsearch_runs_its_kql() {
    let alert = json!({"event": {"kind": "alert", "module": "mapwatch", "severity": 73, "risk_score": 21}, "message": "m"});
    assert_eq!(
        external_alerts(&alert),
        Some(Promoted {
            title: "m".into(),
            severity: "high",
            risk_score: 21.0
        })
    );
    let endpoint = json!({"event": {"kind": "alert", "module": "endpoint"}});
    assert_eq!(external_alerts(&endpoint), None, "Elastic Defend's own");
    let m365 =
        json!({"event": {"kind": "alert"}, "data_stream": {"dataset": "m365_defender.alert"}});
    assert_eq!(external_alerts(&m365), None);
    let metric = json!({"event": {"kind": "metric", "module": "mapwatch"}});
    assert_eq!(external_alerts(&metric), None);
    let bare = json!({"event": {"kind": ["event", "alert"]}});
    assert_eq!(
        external_alerts(&bare),
        Some(Promoted {
            title: "External Alerts".into(),
            severity: "medium",
            risk_score: 47.0
        }),
        "missing fields satisfy the negations; the rule's defaults apply"
    );
}
