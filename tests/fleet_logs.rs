//! Replaying the logs fleets keep. A real auditd records, with the
//! execve-only rule set fleets use, while real logins run: OpenSSH
//! sessions (key login, PAM) as a user and as root, an interactive `ssh
//! -tt`, setsid(1), and Debian's cron running jobs; mapwatch runs live
//! beside it. Replaying auditd's log, RAW or ENRICHED with a node name (and
//! as `ausearch --raw` prints it), gives exactly the exec alerts live gave,
//! with the same parents and session and entry leaders, though no record
//! says who led a session. Needs root.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::auditd::{Auditd, AuditdSetup, add_execve_only_rules, write_root_only};
use support::logins::{Cron, Sshd, TestUser};
use support::*;

/// A rule that alerts on every exec naming a map, whoever leads it, so
/// that every leader is compared, not only the seed rule's shells.
const PROBE_ID: &str = "5b0f8b4e-6a43-4d1e-9a57-1e1b1f0c0a11";

fn write_probe_rule(dir: &Path) {
    let probe = seed_rule_with(
        PROBE_ID,
        "process where event.action == \"exec\" and process.args : \"/proc/*/maps\"",
    )
    .replace(
        "name = \"Suspicious /proc/maps Discovery\"",
        "name = \"probe: any exec naming a map\"",
    );
    std::fs::create_dir_all(dir).expect("rules dir");
    std::fs::write(dir.join("probe.toml"), probe).expect("probe rule");
}

/// What must be equal between the live and the replayed alert of one exec.
fn identity(alert: &Value) -> String {
    let p = &alert["process"];
    format!(
        "{} pid={} args={} parent={}[{}] session_leader={}[{}] entry_leader={}[{}] type={}",
        alert["rule"]["id"],
        p["pid"],
        p["args"],
        p["parent"]["name"],
        p["parent"]["pid"],
        p["session_leader"]["name"],
        p["session_leader"]["pid"],
        p["entry_leader"]["name"],
        p["entry_leader"]["pid"],
        p["entry_leader"]["entry_meta"]["type"],
    )
}

fn exec_alerts<'a>(docs: impl IntoIterator<Item = &'a Value>) -> Vec<&'a Value> {
    docs.into_iter()
        .filter(|d| d["event"]["action"] == "exec")
        .collect()
}

/// The event ids (`SEC.MSEC:SERIAL`) of a log line.
fn event_id(line: &str) -> Option<&str> {
    line.split("msg=audit(").nth(1)?.split(')').next()
}

/// The log as auditd alone would have written it with its execve rules:
/// the events of mapwatch's own rules (keyed `mapwatch`: setsid calls,
/// ptrace requests...), which live detection beside auditd added, taken out.
fn execve_only(log: &str) -> String {
    let ours: HashSet<&str> = log
        .lines()
        .filter(|l| l.contains("type=SYSCALL") && l.contains("key=\"mapwatch\""))
        .filter_map(event_id)
        .collect();
    let kept: String = log
        .lines()
        .filter(|l| event_id(l).is_none_or(|id| !ours.contains(id)))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !kept
            .lines()
            .any(|l| l.contains("type=SYSCALL") && l.contains(" syscall=112 ")),
        "a setsid call is left in the execve-only log"
    );
    kept
}

fn replay(config: &Path, log: &Path) -> (Vec<Value>, String) {
    let out = Command::new(BIN)
        .args(["replay", "--config"])
        .arg(config)
        .arg(log)
        .output()
        .expect("mapwatch replay");
    let summary = stderr_of(&out);
    assert!(out.status.success(), "{summary}");
    let alerts = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    (alerts, summary)
}

fn sorted_identities<'a>(alerts: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    let mut ids: Vec<String> = alerts.into_iter().map(identity).collect();
    ids.sort();
    ids
}

fn wait_for_files(paths: &[&Path]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !paths.iter().all(|p| p.exists()) {
        assert!(Instant::now() < deadline, "not all of {paths:?} appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the logins ran, for the checks after.
struct Logins {
    target_maps: String,
}

/// What live detection raised and what it ran to know it had all.
struct Recorded {
    live: Vec<Value>,
    logins: Logins,
    sentinels: Sentinels,
}

impl Recorded {
    /// Exec alerts of the logins: the sync's sentinels left out.
    fn of_logins<'a>(&self, docs: &'a [Value]) -> Vec<&'a Value> {
        exec_alerts(docs)
            .into_iter()
            .filter(|a| !self.sentinels.raised(a))
            .collect()
    }
}

/// The logins of the scenario, while auditd records and mapwatch watches.
fn run_logins(user: &TestUser) -> Logins {
    let target = user.spawn(&["sleep", "600"]);
    let target = KillOnDrop(target);
    let maps = format!("/proc/{}/maps", target.0.id());
    let smaps = format!("/proc/{}/smaps", target.0.id());
    let sshd = Sshd::start(user);
    // As the user: sshd's unprivileged child, which never execs, forks
    // the session's shell.
    sshd.run(&format!("cat {maps} > /dev/null"));
    sshd.run(&format!("grep -c . {maps} > /dev/null"));
    sshd.run(&format!("bash -c 'cat {maps} > /dev/null; true'"));
    sshd.run(&format!("cat {maps} | head -1 > /dev/null"));
    sshd.run(&format!(
        "sh -c 'sh -c \"cat {maps} > /dev/null; true\"; true'"
    ));
    // A subshell: a fork of the session's shell that never execs.
    sshd.run(&format!("(cat {maps} > /dev/null; true) | cat > /dev/null"));
    // setsid(1): the program it runs leads a session of its own.
    sshd.run(&format!(
        "setsid -w sh -c 'cat {maps} > /dev/null; true'; true"
    ));
    // Negatives for the seed rule.
    sshd.run(&format!(
        "head -1 {maps} > /dev/null; cat {smaps} > /dev/null"
    ));
    sshd.run_interactive(&format!(
        "cat {maps} > /dev/null; grep -c . {maps} > /dev/null\nexit\n"
    ));
    // As root: sshd's monitor forks the shell itself.
    sshd.run_as("root", &format!("cat {maps} > /dev/null"));
    // Cron's jobs: a service's sessions. Their marks go where the user
    // may write.
    let marks = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(marks.path(), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod");
    }
    let (one, two) = (marks.path().join("cron-one"), marks.path().join("cron-two"));
    let _cron = Cron::start_with_reboot_jobs(
        "mapwatch-fleet-test",
        &[
            (
                "root",
                &format!("cat {maps} > /dev/null; touch {}", one.display()),
            ),
            (
                user.name.as_str(),
                &format!(
                    "bash -c 'cat {maps} > /dev/null; true'; touch {}",
                    two.display()
                ),
            ),
        ],
    );
    wait_for_files(&[&one, &two]);
    Logins { target_maps: maps }
}

/// Records the logins with auditd set up as `setup`, mapwatch live beside
/// it; the execve-only log is written to `dir/execve-only.log`.
fn record(dir: &Path, setup: &AuditdSetup<'_>, rules: &Path) -> Recorded {
    let auditd = Auditd::start_with(&dir.join("auditd"), setup);
    let _rules = add_execve_only_rules();
    let run = dir.join("mapwatch");
    std::fs::create_dir_all(&run).expect("run dir");
    let mapwatch = Mapwatch::start_with(
        &run,
        &format!(
            "mode = \"auto\"\n[rules]\ndirectories = [\"{}\"]\n",
            rules.display()
        ),
    );
    // A user of its own per test: the sessions' pids stay apart.
    let user = TestUser::ensure("mapwatch-fleet");
    let logins = run_logins(&user);
    let sentinels = mapwatch.sync();
    let (status, stderr, alerts) = mapwatch.terminate_with_alerts();
    assert!(status.success(), "{stderr}");
    // auditd writes on its own time: the sentinel's exec is the last.
    let deadline = Instant::now() + Duration::from_secs(20);
    let last = sentinels.confirmed.as_str();
    while !auditd.log_text().contains(&format!("\"{last}\"")) {
        assert!(
            Instant::now() < deadline,
            "the last exec never reached auditd's log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    auditd.stop();
    let log = std::fs::read_to_string(dir.join("auditd/audit.log")).expect("auditd's log");
    std::fs::write(dir.join("execve-only.log"), execve_only(&log)).expect("writing the log");
    let live = exec_alerts(&alerts)
        .into_iter()
        .filter(|a| !sentinels.raised(a))
        .cloned()
        .collect();
    Recorded {
        live,
        logins,
        sentinels,
    }
}

/// The checks of what live detection raised, before replay is compared
/// with it: each login's leader is what Elastic's definitions make it.
fn assert_live_leaders(live: &[Value], logins: &Logins) {
    let maps = logins.target_maps.as_str();
    let seed: Vec<&Value> = live.iter().filter(|a| a["rule"]["id"] == SEED_ID).collect();
    // cat, grep, bash -c, the pipeline, sh -c in sh -c, the subshell,
    // setsid -w, the interactive cat and grep, root's cat.
    assert_eq!(seed.len(), 10, "{}", brief(seed.iter().copied()));
    for alert in &seed {
        let leader = &alert["process"]["entry_leader"];
        // The session's shell, as it runs now: bash, or sh where bash
        // exec'd `sh -c`.
        assert!(
            leader["name"] == "bash" || leader["name"] == "sh",
            "{alert:#}"
        );
        assert_eq!(leader["entry_meta"]["type"], "sshd", "{alert:#}");
        assert!(args_of(alert).contains(&maps.to_owned()), "{alert:#}");
    }
    // Only setsid(1)'s sh leads a session that is not the login's.
    let own_sessions: Vec<&&Value> = seed
        .iter()
        .filter(|a| a["process"]["session_leader"]["pid"] != a["process"]["entry_leader"]["pid"])
        .collect();
    assert_eq!(own_sessions.len(), 1, "{}", brief(seed.iter().copied()));
    assert_eq!(own_sessions[0]["process"]["session_leader"]["name"], "sh");
    let cron: Vec<&Value> = live
        .iter()
        .filter(|a| a["rule"]["id"] == PROBE_ID && a["process"]["entry_leader"]["name"] == "cron")
        .collect();
    assert_eq!(
        cron.len(),
        2,
        "{:#?}",
        live.iter().map(identity).collect::<Vec<_>>()
    );
    for alert in cron {
        assert_eq!(
            alert["process"]["entry_leader"]["entry_meta"]["type"], "init",
            "{alert:#}"
        );
    }
}

fn assert_replay_is_live(recorded: &Recorded, replayed: &[Value], summary: &str) {
    let replayed_execs = recorded.of_logins(replayed);
    assert_eq!(
        sorted_identities(replayed_execs.iter().copied()),
        sorted_identities(&recorded.live),
        "replay summary: {summary}"
    );
    assert!(summary.contains("(0 malformed)"), "{summary}");
    assert!(summary.contains(" 0 unresolved entry leaders"), "{summary}");
    assert_follow_schema(replayed, "replayed alerts");
    assert!(
        replayed_execs
            .iter()
            .all(|a| a["mapwatch"]["entry_leader"]["inferred"].is_array()),
        "every leader of an execve-only log is inferred: {}",
        brief(replayed_execs.iter().copied())
    );
}

fn replay_config(dir: &Path, rules: &Path) -> std::path::PathBuf {
    let config = dir.join("replay.toml");
    write_root_only(
        &config,
        &format!("[rules]\ndirectories = [\"{}\"]\n", rules.display()),
    );
    config
}

#[test]
fn replaying_an_execve_only_raw_log_of_ssh_cron_and_setsid_gives_what_live_gave() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.d");
    write_probe_rule(&rules);
    let recorded = record(dir.path(), &AuditdSetup::default(), &rules);
    assert_live_leaders(&recorded.live, &recorded.logins);

    let config = replay_config(dir.path(), &rules);
    let (replayed, summary) = replay(&config, &dir.path().join("execve-only.log"));
    assert_replay_is_live(&recorded, &replayed, &summary);
    assert!(summary.contains(" 0 session starts"), "{summary}");
}

#[test]
fn replaying_an_enriched_log_with_a_node_name_and_ausearch_raw_gives_what_live_gave() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    require_program("ausearch", "auditd");
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.d");
    write_probe_rule(&rules);
    let setup = AuditdSetup {
        log_format: "ENRICHED",
        node_name: Some("fleet-node-7"),
        ..AuditdSetup::default()
    };
    let recorded = record(dir.path(), &setup, &rules);
    assert_live_leaders(&recorded.live, &recorded.logins);
    let log = dir.path().join("execve-only.log");
    let text = std::fs::read_to_string(&log).expect("the log");
    assert!(
        text.lines()
            .all(|l| l.starts_with("node=fleet-node-7 type=")),
        "every line carries the node name"
    );
    assert!(text.contains('\u{1d}'), "the log is enriched");

    let config = replay_config(dir.path(), &rules);
    let (replayed, summary) = replay(&config, &log);
    assert_replay_is_live(&recorded, &replayed, &summary);
    // Another host's users, named as that host named them (ENRICHED).
    for alert in recorded.of_logins(&replayed) {
        let twin = recorded
            .live
            .iter()
            .find(|l| identity(l) == identity(alert))
            .expect("paired above");
        assert!(twin["user"]["name"].is_string(), "{twin:#}");
        assert_eq!(alert["user"], twin["user"], "{alert:#}");
    }
    assert!(
        replayed
            .iter()
            .all(|a| a["host"]["name"] == "fleet-node-7" && a["host"]["hostname"] == "fleet-node-7"),
        "the node is each alert's host"
    );

    // ausearch regroups the records by event.
    let out = Command::new("ausearch")
        .args(["--raw", "--input"])
        .arg(&log)
        .output()
        .expect("ausearch");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let searched = dir.path().join("ausearch.log");
    std::fs::write(&searched, &out.stdout).expect("ausearch output");
    let (from_ausearch, summary) = replay(&config, &searched);
    assert_replay_is_live(&recorded, &from_ausearch, &summary);
}
