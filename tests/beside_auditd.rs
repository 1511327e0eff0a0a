//! Beside a real auditd (from the distribution, started here on its own log):
//! mapwatch in `auto` mode reads the multicast group, detects what it
//! detects as the audit daemon, and leaves auditd's registration, log and
//! rules alone; as auditd's plugin (the shipped plugin config) it raises the
//! same alerts; and `mapwatch replay` of auditd's log raises them again.
//! Needs root.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::auditd::{Auditd, add_test_rule, shipped_plugin, write_root_only};
use support::*;

#[test]
fn beside_auditd_in_auto_mode_everything_is_detected_and_auditd_keeps_its_own() {
    let _lock = audit_lock();
    require_program("auditctl", "auditd");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let auditd = Auditd::start(dir.path());
    let _rules = add_test_rule(&["-a", "always,exit", "-F", "arch=b64", "-S", "kill"]);
    let rules_before = snapshot().rules;

    let run = dir.path().join("mapwatch");
    std::fs::create_dir(&run).expect("run dir");
    let mapwatch = Mapwatch::start_with(&run, "mode = \"auto\"\n");
    let stderr = mapwatch.stderr();
    assert!(
        stderr.contains(&format!(
            "listening beside the audit daemon (pid {})",
            auditd.pid()
        )),
        "{stderr}"
    );
    assert_eq!(
        snapshot().pid,
        auditd.pid(),
        "auditd keeps its registration"
    );

    // The spine's scenario: every seed shell as an entry leader.
    let runs = run_spine_scenarios(&run);
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    assert_spine_alerts(&runs, &alerts);
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");

    // auditd's own log got the records (it writes them on its own time),
    // its registration and rules stay.
    let deadline = Instant::now() + Duration::from_secs(20);
    for ShellRun { shell, target, .. } in &runs {
        let quoted = format!("\"{}\"", target.maps());
        let hex: String = target.maps().bytes().map(|b| format!("{b:02X}")).collect();
        loop {
            let log = std::fs::read_to_string(&auditd.log).expect("auditd's log");
            if log.contains(&quoted) || log.contains(&hex) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{shell}: the exec of cat is not in auditd's log"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let after = snapshot();
    assert_eq!(after.pid, auditd.pid(), "auditd is still the audit daemon");
    assert_eq!(
        after.rules, rules_before,
        "auditd's rules intact, mapwatch's gone"
    );
    assert_eq!(mapwatch_rule_count(), 0, "mapwatch's rules removed");
}

fn exec_alerts(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .filter(|d| d["event"]["action"] == "exec")
        .cloned()
        .collect()
}

/// What must be equal between the live and the replayed alert of one exec.
fn identity(alert: &Value) -> String {
    format!(
        "{} pid={} args={} parent={} entry_leader={}[{}]",
        alert["rule"]["id"],
        alert["process"]["pid"],
        alert["process"]["args"],
        alert["process"]["parent"]["pid"],
        alert["process"]["entry_leader"]["name"],
        alert["process"]["entry_leader"]["pid"],
    )
}

#[test]
fn as_an_auditd_plugin_the_same_alerts_and_replaying_auditd_log_gives_them_again() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("mapwatch");
    std::fs::create_dir(&run).expect("run dir");
    let alerts_file = run.join("alerts.json");
    let config = run.join("mapwatch.toml");
    write_root_only(
        &config,
        &format!("[output]\njson_file = \"{}\"\n", alerts_file.display()),
    );
    let plugin = shipped_plugin(&config);
    let auditd = Auditd::start_with_plugin(dir.path(), Some(&plugin));
    let stderr_path = dir.path().join("auditd.stderr");
    let deadline = Instant::now() + Duration::from_secs(20);
    while mapwatch_rule_count() == 0 {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "the plugin did not install its rules; auditd's stderr:\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Rules go in before the feed is read: give it a moment to start.
    std::thread::sleep(Duration::from_millis(200));

    let runs = run_spine_scenarios(&run);
    let deadline = Instant::now() + Duration::from_secs(20);
    while exec_alerts(&json_documents(&alerts_file)).len() < 2 * SHELLS.len() {
        assert!(
            Instant::now() < deadline,
            "plugin alerts: {:#?}\nstderr:\n{}",
            json_documents(&alerts_file),
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Anything late (a duplicate) would show here.
    std::thread::sleep(Duration::from_millis(500));
    let live = json_documents(&alerts_file);
    let live_execs = exec_alerts(&live);
    assert_spine_alerts(&runs, &live_execs);
    assert_eq!(live_execs.len(), 2 * SHELLS.len(), "{live:#?}");

    auditd.stop();
    // auditd passes its SIGTERM on to its plugins; it need not wait for
    // them to finish.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mapwatch_rule_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        mapwatch_rule_count(),
        0,
        "the plugin removed its rules when auditd stopped it"
    );

    // Replay auditd's log: the same alerts, from the log's history alone.
    let log = dir.path().join("audit.log");
    let out = Command::new(BIN)
        .args(["replay", "--config"])
        .arg(&config)
        .arg(&log)
        .output()
        .expect("mapwatch replay");
    let summary = stderr_of(&out);
    assert!(out.status.success(), "{summary}");
    let replayed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    let mut live_ids: Vec<String> = live_execs.iter().map(identity).collect();
    let mut replay_ids: Vec<String> = replayed.iter().map(identity).collect();
    live_ids.sort();
    replay_ids.sort();
    assert_eq!(replay_ids, live_ids, "replay summary: {summary}");
    // Entry-leader types only procfs knows (a shell reparented to pid 1
    // after its exec) may differ: listed, not failed.
    for a in &live_execs {
        let twin = replayed
            .iter()
            .find(|r| identity(r) == identity(a))
            .expect("paired above");
        let (live_type, replay_type) = (
            &a["process"]["entry_leader"]["entry_meta"]["type"],
            &twin["process"]["entry_leader"]["entry_meta"]["type"],
        );
        if live_type != replay_type {
            eprintln!(
                "entry-leader type differs for {}: live {live_type}, replay {replay_type}",
                identity(a)
            );
        }
    }
    assert!(summary.contains("(0 malformed)"), "{summary}");
    assert!(summary.contains(" 0 unresolved entry leaders"), "{summary}");

    // The same log as a rotated set cut mid-event, given oldest first.
    let text = std::fs::read_to_string(&log).expect("auditd's log");
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines
        .iter()
        .position(|l| l.starts_with("type=EXECVE") && l.contains("/proc/"))
        .expect("an exec of a maps reader in the log");
    let (older, newer) = (
        dir.path().join("audit.log.1"),
        dir.path().join("audit.log.0"),
    );
    std::fs::write(&older, lines[..cut].join("\n") + "\n").expect("older half");
    std::fs::write(&newer, lines[cut..].join("\n") + "\n").expect("newer half");
    let out = Command::new(BIN)
        .args(["replay", "--config"])
        .arg(&config)
        .arg(&older)
        .arg(&newer)
        .output()
        .expect("mapwatch replay");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mut rotated_ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| identity(&serde_json::from_str(l).expect("JSON")))
        .collect();
    rotated_ids.sort();
    assert_eq!(rotated_ids, live_ids, "{}", stderr_of(&out));
}
