//! Alert delivery as the service does it: the JSON file sink, rotated by the
//! real logrotate mid-run with the shipped snippet. Needs root.

mod support;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use serde_json::Value;
use support::*;

const SEED_ID: &str = "2f95540c-923e-4f57-9dae-de30169c68b9";

fn documents(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: torn or invalid line ({e}): {l}", path.display()))
        })
        .collect()
}

#[test]
fn logrotate_mid_run_loses_and_tears_no_line() {
    let _lock = audit_lock();
    require_program("logrotate", "logrotate");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let alerts = dir.path().join("log/alerts.json");
    let extra = format!("[output]\njson_file = \"{}\"\n", alerts.display());
    let mapwatch = Mapwatch::start_service(dir.path(), &extra);
    assert!(
        mapwatch.alerts().is_empty(),
        "a service writes nothing to stdout"
    );
    let mode = std::fs::metadata(&alerts)
        .expect("alert file created at start")
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // 60 positives, spread over about two seconds, with a rotation in the middle.
    let target = Target::spawn();
    let body = format!(
        "for i in $(seq 60); do cat {} > /dev/null; sleep 0.03; done",
        target.maps()
    );
    let dir_path = dir.path().to_owned();
    let writer = std::thread::spawn(move || run_entry_leader("bash", &body, &dir_path));
    std::thread::sleep(std::time::Duration::from_millis(800));
    let shipped = include_str!("../packaging/logrotate/mapwatch")
        .replace(
            "/var/log/mapwatch/alerts.json",
            &alerts.display().to_string(),
        )
        .replace("    compress\n    delaycompress\n", "");
    let conf = dir.path().join("logrotate.conf");
    std::fs::write(&conf, shipped).expect("logrotate config");
    let rotated = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(dir.path().join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("running logrotate");
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    writer.join().expect("the scenario ran");
    std::thread::sleep(std::time::Duration::from_millis(600));
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");

    let before = documents(&dir.path().join("log/alerts.json.1"));
    let after = documents(&alerts);
    assert!(
        !before.is_empty() && !after.is_empty(),
        "the rotation happened mid-run: {} + {}",
        before.len(),
        after.len()
    );
    let all: Vec<&Value> = before.iter().chain(after.iter()).collect();
    let ours = all
        .iter()
        .filter(|a| a["rule"]["id"] == SEED_ID && a["file"]["path"] == target.maps().as_str())
        .count();
    assert_eq!(
        ours,
        60,
        "every alert, once: {} before, {} after the rotation",
        before.len(),
        after.len()
    );
    assert_eq!(
        std::fs::metadata(&alerts).expect("new file").mode() & 0o777,
        0o600
    );
}

#[test]
fn sigusr1_reports_stats_on_stderr_and_in_the_json_file() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let alerts = dir.path().join("alerts.json");
    let extra = format!("[output]\njson_file = \"{}\"\n", alerts.display());
    let mapwatch = Mapwatch::start_service(dir.path(), &extra);
    run_entry_leader("bash", "true", dir.path());
    mapwatch.signal(nix::sys::signal::Signal::SIGUSR1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let stats = loop {
        let docs = documents(&alerts);
        if let Some(doc) = docs
            .into_iter()
            .find(|d| d["event"]["dataset"] == "mapwatch.stats")
        {
            break doc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stats document after SIGUSR1"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(stats["event"]["kind"], "metric");
    let counters = &stats["mapwatch"]["stats"];
    for key in [
        "records",
        "exec_events",
        "alerts",
        "alerts_suppressed",
        "alerts_dropped",
        "kernel_lost",
        "enobufs",
        "queue_dropped_records",
        "fanotify_overflows",
    ] {
        assert!(counters[key].is_u64(), "{key} missing: {stats:#}");
    }
    assert!(
        counters["exec_events"].as_u64().is_some_and(|n| n > 0),
        "{stats:#}"
    );
    assert!(
        mapwatch.stderr().contains("stats: records="),
        "{}",
        mapwatch.stderr()
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn every_document_of_the_json_file_follows_the_published_schema() {
    require_program("python3", "python3");
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let schema: Value =
        serde_json::from_str(include_str!("../docs/alert.schema.json")).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let dir = tempfile::tempdir().expect("tempdir");
    let alerts = dir.path().join("alerts.json");
    let rules_d = dir.path().join("rules.d");
    std::fs::create_dir(&rules_d).expect("rules.d");
    // The seed rule, limited to 2 alerts per window, to get a summary: the
    // third `cat` of the same map is suppressed.
    let limited = include_str!("../rules/proc_maps_discovery.toml")
        .replace("max_signals = 100", "max_signals = 2");
    std::fs::write(rules_d.join("seed.toml"), limited).expect("local rule");
    let extra = format!(
        "[output]\njson_file = \"{}\"\n[rules]\ndirectories = [\"{}\"]\n",
        alerts.display(),
        rules_d.display()
    );
    let mapwatch = Mapwatch::start_service(dir.path(), &extra);
    let target = Target::spawn();
    let body = format!(
        "cat {maps} > /dev/null; cat /proc/4000000/maps 2>/dev/null; cat {maps} $'\\xff\\x1b[31m\\n' > /dev/null 2>&1; cat < {maps} > /dev/null; cat {maps} > /dev/null",
        maps = target.maps()
    );
    run_entry_leader("bash", &body, dir.path());
    // A read of another layout file, and a write into memory.
    let script = write_mem_script(dir.path());
    run_entry_leader(
        "bash",
        &format!(
            "cat /proc/{pid}/smaps > /dev/null; python3 {} {pid}",
            script.display(),
            pid = target.pid()
        ),
        dir.path(),
    );
    // A ptrace poke after a read of the map: the call's alert, and the
    // chain's (as the write into mem above made one too).
    let inject = inject_script(dir.path());
    run_entry_leader(
        "bash",
        &format!(
            "python3 {inject} poke {pid}; python3 {inject} vm {pid}",
            inject = inject.display(),
            pid = target.pid()
        ),
        dir.path(),
    );
    // A read taken after its target was gone (mapwatch stopped meanwhile):
    // a health document naming the reader.
    mapwatch.signal(nix::sys::signal::Signal::SIGSTOP);
    read_maps_of_workers_that_exit(1, dir.path());
    mapwatch.signal(nix::sys::signal::Signal::SIGCONT);
    // A PROCMAP_QUERY of the target's map.
    assert!(
        procmap_query_walk(&target.maps()) > 0,
        "python3 queried a map"
    );
    std::thread::sleep(std::time::Duration::from_millis(1200));
    mapwatch.signal(nix::sys::signal::Signal::SIGUSR1);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");

    let docs = documents(&alerts);
    for doc in &docs {
        let errors: Vec<String> = validator
            .iter_errors(doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{doc:#}");
    }
    support::elastic::assert_promoted_as_documented(&docs);
    // The schema has teeth: an ECS type or an unknown field is caught.
    let alert = docs
        .iter()
        .find(|d| d["event"]["action"] == "exec")
        .expect("an exec alert");
    let mut wrong_type = alert.clone();
    wrong_type["process"]["pid"] = Value::String("1".into());
    assert!(
        !validator.is_valid(&wrong_type),
        "process.pid must be a long"
    );
    let mut forged = alert.clone();
    forged["message"] = Value::String("a\nfake second line".into());
    assert!(
        !validator.is_valid(&forged),
        "message has no control characters"
    );
    let mut untitled = alert.clone();
    untitled.as_object_mut().map(|d| d.remove("message"));
    assert!(!validator.is_valid(&untitled), "an alert has a message");
    let mut unknown = alert.clone();
    unknown["proces"] = serde_json::json!({});
    assert!(!validator.is_valid(&unknown), "no field outside the schema");
    let has = |pred: &dyn Fn(&Value) -> bool| docs.iter().any(pred);
    assert!(
        has(&|d| d["mapwatch"]["health"]["unresolved_reads"]["reads"].as_u64() >= Some(1)),
        "a report of unresolved reads: {docs:#?}"
    );
    assert!(
        has(&|d| d["mapwatch"]["ptrace"]["request"] == "PTRACE_POKEDATA"
            && d["event"]["category"][0] == "api"),
        "a ptrace poke's alert: {docs:#?}"
    );
    for call in ["process_vm_readv", "process_vm_writev"] {
        assert!(
            has(&|d| d["event"]["action"] == call && d["event"]["kind"] == "alert"),
            "a {call} alert: {docs:#?}"
        );
    }
    assert!(
        has(&|d| d["mapwatch"]["sequence"]["steps"][1]["event"]["action"] == "ptrace"),
        "a chain alert ending in a poke: {docs:#?}"
    );
    assert!(
        has(&|d| d["mapwatch"]["sequence"]["steps"][1]["event"]["action"] == "write"),
        "a chain alert ending in a write into mem: {docs:#?}"
    );
    assert!(
        has(&|d| d["mapwatch"]["read"]["via"] == "procmap_query"),
        "a PROCMAP_QUERY read: {docs:#?}"
    );
    assert!(
        has(&|d| d["mapwatch"]["read"]["confirmed"] == true && d["event"]["action"] == "exec"),
        "a confirmed exec alert: {docs:#?}"
    );
    assert!(
        has(&|d| d["event"]["action"] == "alerts-suppressed"
            && d["mapwatch"]["suppressed"]["reader_executable"] == "/usr/bin/cat"
            && d["mapwatch"]["suppressed"]["target_pid"] == target.pid()),
        "a summary naming the reader and the target: {docs:#?}"
    );
    assert!(
        has(&|d| d["event"]["action"] == "read"),
        "a file alert: {docs:#?}"
    );
    assert!(
        has(&|d| d["file"]["name"] == "smaps"),
        "a layout read: {docs:#?}"
    );
    assert!(
        has(&|d| d["event"]["action"] == "write" && d["file"]["name"] == "mem"),
        "a memory write: {docs:#?}"
    );
    assert!(
        has(&|d| d["event"]["dataset"] == "mapwatch.stats"),
        "a stats document: {docs:#?}"
    );
    assert!(
        has(&|d| d["process"]["args"][2] == "\\xff\u{1b}[31m\n"),
        "the non-UTF-8 argument, escaped: {docs:#?}"
    );
}

#[test]
fn sighup_reloads_configuration_and_rules_and_a_bad_configuration_changes_nothing() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (
        dir.path().join("first.json"),
        dir.path().join("second.json"),
    );
    let mapwatch = Mapwatch::start_service(
        dir.path(),
        &format!("[output]\njson_file = \"{}\"\n", first.display()),
    );
    let config_path = dir.path().join("mapwatch.toml");
    let harness = std::fs::read_to_string(&config_path).expect("the harness's config");
    // The harness's [audit] part, without the [output] given above.
    let base = harness
        .split("[output]")
        .next()
        .unwrap_or_default()
        .to_owned();
    let positive = |dir: &std::path::Path| {
        let target = Target::spawn();
        cat_maps_under_bash(&target, dir);
        target
    };
    let wait_for = |file: &std::path::Path, maps: &str, count: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let found = documents(file)
                .into_iter()
                .filter(|d| d["file"]["path"] == maps)
                .collect::<Vec<_>>();
            if found.len() >= count || std::time::Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let one = positive(dir.path());
    assert_eq!(wait_for(&first, &one.maps(), 1).len(), 1);

    // A new alert file and one more rule (a copy of the seed under another id).
    let rules_d = dir.path().join("rules.d");
    std::fs::create_dir(&rules_d).expect("rules.d");
    let copy = include_str!("../rules/proc_maps_discovery.toml")
        .replace(
            "rule_id = \"2f95540c-923e-4f57-9dae-de30169c68b9\"",
            "rule_id = \"6c1f0e65-0000-4000-8000-000000000001\"",
        )
        .replace(
            "name = \"Suspicious /proc/maps Discovery\"",
            "name = \"Reloaded copy\"",
        );
    std::fs::write(rules_d.join("copy.toml"), copy).expect("rule file");
    let reloaded = format!(
        "{base}[output]\njson_file = \"{}\"\n[rules]\ndirectories = [\"{}\"]\n",
        second.display(),
        rules_d.display()
    );
    std::fs::write(&config_path, &reloaded).expect("new config");
    mapwatch.signal(nix::sys::signal::Signal::SIGHUP);
    mapwatch.wait_for_stderr("SIGHUP: reloaded");
    let two = positive(dir.path());
    let alerts = wait_for(&second, &two.maps(), 2);
    let mut names: Vec<&str> = alerts
        .iter()
        .filter_map(|a| a["rule"]["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["Reloaded copy", "Suspicious /proc/maps Discovery"]);
    assert!(
        !documents(&first)
            .iter()
            .any(|d| d["file"]["path"] == two.maps().as_str()),
        "the old file is no longer written"
    );

    // A bad configuration is rejected, naming key and line; nothing changes.
    std::fs::write(&config_path, format!("{reloaded}bogus = 1\n")).expect("bad config");
    mapwatch.signal(nix::sys::signal::Signal::SIGHUP);
    let stderr = mapwatch.wait_for_stderr("the running configuration stays in force");
    assert!(stderr.contains("bogus"), "{stderr}");
    let three = positive(dir.path());
    assert_eq!(
        wait_for(&second, &three.maps(), 2).len(),
        2,
        "both rules still run"
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}
