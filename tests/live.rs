//! Live detection on the real kernel: mapwatch registers as the audit daemon,
//! real shells run real `cat` and `grep`, and the alerts on stdout are
//! checked. Needs root; the tests take a lock because only one audit daemon
//! can be registered at a time.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn alerts_for<'a>(alerts: &'a [Value], pred: impl Fn(&Value) -> bool + 'a) -> Vec<&'a Value> {
    alerts.iter().filter(|a| pred(a)).collect()
}

fn assert_started_under_shell(
    alert: &Value,
    name: &str,
    args: &[String],
    shell: &str,
    shell_pid: u32,
) {
    let p = &alert["process"];
    assert_eq!(p["name"], name, "{alert:#}");
    assert_eq!(&args_of(alert), args, "{alert:#}");
    assert_eq!(p["args_count"], args.len(), "{alert:#}");
    let pid = p["pid"].as_u64().expect("process.pid");
    assert!(pid > 1 && pid != u64::from(shell_pid), "{alert:#}");
    assert_eq!(p["parent"]["pid"], shell_pid, "{alert:#}");
    assert_eq!(p["parent"]["name"], shell, "{alert:#}");
    assert_eq!(p["entry_leader"]["pid"], shell_pid, "{alert:#}");
    assert_eq!(p["entry_leader"]["name"], shell, "{alert:#}");
    assert_eq!(p["entry_leader"]["entry_meta"]["type"], "init", "{alert:#}");
    assert_eq!(p["session_leader"]["pid"], shell_pid, "{alert:#}");
    assert_eq!(alert["event"]["kind"], "alert");
    assert_eq!(alert["rule"]["id"], "2f95540c-923e-4f57-9dae-de30169c68b9");
    assert_eq!(alert["threat"]["technique"]["id"][0], "T1057");
}

#[test]
fn every_seed_shell_as_entry_leader_raises_one_alert_per_read() {
    let _lock = audit_lock();
    for shell in SHELLS {
        let package = match shell {
            "csh" => "csh",
            "sh" | "dash" => "dash",
            other => other,
        };
        require_program(shell, package);
    }
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());

    let mut runs = Vec::new();
    for shell in SHELLS {
        let target = Target::spawn();
        let grep_marker = format!("mapwatch-{shell}");
        let body = format!(
            "cat {} > /dev/null; grep -c {grep_marker} /proc/self/maps > /dev/null",
            target.maps()
        );
        let shell_pid = run_entry_leader(shell, &body, dir.path());
        runs.push((shell, shell_pid, target, grep_marker));
    }
    mapwatch.sync();
    // A grep gone before its read of its own map was taken is reported in
    // a health document, which is no alert of a rule.
    let alerts: Vec<Value> = mapwatch
        .alerts()
        .into_iter()
        .filter(|a| a["event"]["dataset"] != "mapwatch.health")
        .collect();

    for (shell, shell_pid, target, grep_marker) in &runs {
        let cat = alerts_for(&alerts, |a| a["file"]["path"] == target.maps().as_str());
        assert_eq!(
            cat.len(),
            1,
            "{shell}: cat alerts:{}\n{cat:#?}",
            brief(cat.iter().copied())
        );
        assert_started_under_shell(
            cat[0],
            "cat",
            &["cat".into(), target.maps()],
            shell,
            *shell_pid,
        );
        assert_eq!(cat[0]["mapwatch"]["target"]["pid"], target.pid());
        assert_eq!(cat[0]["mapwatch"]["target"]["name"], "sleep");
        assert_eq!(cat[0]["process"]["executable"], "/usr/bin/cat");

        let grep = alerts_for(&alerts, |a| args_of(a).contains(grep_marker));
        assert_eq!(
            grep.len(),
            1,
            "{shell}: grep alerts:{}\n{grep:#?}",
            brief(grep.iter().copied())
        );
        // fish's `grep` is a function running `command grep --color=auto $argv`.
        let color: &[&str] = if *shell == "fish" {
            &["--color=auto"]
        } else {
            &[]
        };
        let grep_args: Vec<String> = ["grep"]
            .iter()
            .chain(color)
            .chain(&["-c", grep_marker.as_str(), "/proc/self/maps"])
            .map(|s| s.to_string())
            .collect();
        assert_started_under_shell(grep[0], "grep", &grep_args, shell, *shell_pid);
        assert_eq!(grep[0]["file"]["path"], "/proc/self/maps");
        assert_eq!(
            grep[0]["mapwatch"]["target"]["pid"],
            grep[0]["process"]["pid"]
        );
    }
    let expected = SHELLS.len() * 2 + 2;
    assert_eq!(
        alerts.len(),
        expected,
        "one alert per read plus the two sync sentinels:{}\n{alerts:#?}",
        brief(&alerts)
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{status:?}\n{stderr}");
}

#[test]
fn shell_that_execs_its_only_command_is_still_the_entry_leader() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let target = Target::spawn();
    // bash -c with a single simple command replaces itself with cat: cat then
    // is the session leader, and the shell it was is the entry leader.
    let status = Command::new("setsid")
        .args(["-f", "bash", "-c"])
        .arg(format!("cat {}", target.maps()))
        .stdout(Stdio::null())
        .status()
        .expect("setsid");
    assert!(status.success());
    let alert = mapwatch.wait_for_alert("exec-optimised bash -c cat", |a| {
        a["file"]["path"] == target.maps().as_str() && a["event"]["action"] == "exec"
    });
    let p = &alert["process"];
    assert_eq!(p["name"], "cat");
    assert_eq!(p["entry_leader"]["pid"], p["pid"], "{alert:#}");
    assert_eq!(p["entry_leader"]["name"], "bash", "{alert:#}");
    assert_eq!(p["entry_leader"]["entry_meta"]["type"], "init", "{alert:#}");
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn no_alert_for_what_the_seed_rule_does_not_cover() {
    let _lock = audit_lock();
    require_program("python3", "python3");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());

    // A python3 session leader (not a shell) running cat.
    let py_target = Target::spawn();
    let py_done = dir.path().join("done-python");
    let code = format!(
        "import subprocess, time\ntime.sleep(0.2)\nsubprocess.run(['cat', '{}'], stdout=subprocess.DEVNULL)\nopen('{}', 'w').close()\n",
        py_target.maps(),
        py_done.display()
    );
    let status = Command::new("setsid")
        .args(["-f", "python3", "-c", &code])
        .status()
        .expect("setsid python3");
    assert!(status.success());
    wait_for_file(&py_done);

    // Under a bash entry leader: other /proc files, another reader, a failed
    // exec of something named cat, and a copy of cat named CAT.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    std::fs::copy("/usr/bin/cat", bin.join("CAT")).expect("copy cat to CAT");
    std::fs::write(bin.join("cat"), "not a program").expect("write non-executable cat");
    let head_target = Target::spawn();
    let failed_target = Target::spawn();
    let upper_target = Target::spawn();
    let body = format!(
        "cat /proc/1/smaps > /dev/null; cat /proc/1/status > /dev/null; head {} > /dev/null; {}/cat {}; {}/CAT {} > /dev/null",
        head_target.maps(),
        bin.display(),
        failed_target.maps(),
        bin.display(),
        upper_target.maps()
    );
    run_entry_leader("bash", &body, dir.path());

    let sentinel = mapwatch.sync();
    let alerts = mapwatch.alerts();
    let seed: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"]["id"] == SEED_ID)
        .collect();
    let unexpected: Vec<&&Value> = seed.iter().filter(|a| !sentinel.raised(a)).collect();
    assert!(
        unexpected.is_empty(),
        "unexpected seed-rule alerts: {unexpected:#?}"
    );
    assert_eq!(seed.len(), 2, "the two sentinels'");
    // What the seed rule leaves out, the kernel still saw: head and the copy
    // named CAT really read another process's map (the extended rule's).
    for (reader, target) in [("head", &head_target), ("CAT", &upper_target)] {
        let extended: Vec<&Value> = alerts
            .iter()
            .filter(|a| {
                a["rule"]["id"] == EXTENDED_ID && a["file"]["path"] == target.maps().as_str()
            })
            .collect();
        assert_eq!(extended.len(), 1, "{reader}: {alerts:#?}");
        assert_eq!(extended[0]["process"]["name"], reader);
    }
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn sigterm_restores_the_kernel_audit_state() {
    let _lock = audit_lock();
    require_program("auditctl", "auditd");
    let _audit = AuditStateGuard::new();
    // A distinctive starting state: audit off, an unusual backlog limit and
    // a rule of someone else's that must survive.
    set_status(0, 321);
    let foreign = [
        "-a",
        "always,exit",
        "-F",
        "arch=b64",
        "-S",
        "kill",
        "-k",
        "mapwatch-test-foreign",
    ];
    let added = Command::new("auditctl")
        .args(foreign)
        .status()
        .expect("auditctl");
    assert!(added.success(), "adding a foreign rule with auditctl");
    let _foreign = scopeguard(|| {
        let _ = Command::new("auditctl")
            .args(["-D", "-k", "mapwatch-test-foreign"])
            .stdout(Stdio::null())
            .status();
    });
    let before = snapshot();

    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let during = snapshot();
    assert_eq!(during.enabled, 1);
    assert_eq!(during.pid, mapwatch.pid());
    assert_eq!(during.backlog_limit, 8192);
    assert_eq!(
        mapwatch_rule_count(),
        14,
        "never exit and task rules, and for b64 and b32: the exec rule, the PROCMAP_QUERY rule, three ptrace rules and the process_vm rule"
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_eq!(snapshot(), before, "audit state after SIGTERM");
    assert!(
        !dir.path().join("audit-state.json").exists(),
        "state file removed on clean exit"
    );
}

#[test]
fn after_sigkill_a_new_start_cleans_up_and_works() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    set_status(0, 321);
    let before = snapshot();
    let dir = tempfile::tempdir().expect("tempdir");

    let crashed = Mapwatch::start(dir.path());
    let crashed_pid = crashed.pid();
    crashed.kill();
    assert_eq!(
        mapwatch_rule_count(),
        14,
        "a SIGKILLed run leaves its rules behind"
    );
    assert_eq!(snapshot().pid, crashed_pid);
    assert_eq!(
        snapshot().rules.len(),
        before.rules.len() + 14 + 2,
        "and its two unkeyed record-type exclusions"
    );
    assert_eq!(
        excluded_record_types(),
        mapwatch::source::netlink::rules::UNUSED_RECORD_TYPES
    );

    let mapwatch = Mapwatch::start(dir.path());
    let stderr = mapwatch.stderr();
    assert!(
        stderr.contains("removed 16 stale audit rules"),
        "its 14 keyed rules and two exclusions: {stderr}"
    );
    assert!(stderr.contains("did not shut down cleanly"), "{stderr}");
    assert_eq!(snapshot().pid, mapwatch.pid());
    assert_eq!(mapwatch_rule_count(), 14);
    mapwatch.sync();
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        snapshot(),
        before,
        "the state from before the crashed run is restored, exclusions included"
    );
}

#[test]
fn a_second_daemon_is_refused_naming_the_first() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Mapwatch::start(dir.path());
    let second_dir = tempfile::tempdir().expect("tempdir");
    let config = second_dir.path().join("mapwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[audit]\nstate_file = \"{}\"\n",
            second_dir.path().join("state.json").display()
        ),
    )
    .expect("config");
    let output = Command::new(BIN)
        .args(["run", "--foreground", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .expect("running a second mapwatch");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
    assert_eq!(
        snapshot().pid,
        first.pid(),
        "the first daemon keeps its registration"
    );
    assert_eq!(
        mapwatch_rule_count(),
        14,
        "the first daemon keeps its rules"
    );
    first.sync();
    let (status, stderr) = first.terminate();
    assert!(status.success(), "{stderr}");
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[test]
fn hostile_argument_stays_one_json_line_and_recoverable() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    // Matches /proc/*/maps; carries a forged log line, an ANSI escape and a
    // byte that is not UTF-8. cat fails to open it, but the exec happened.
    let body = r"cat $'/proc/1/\nJan  1 00:00:00 host sshd[1]: Accepted password for root\x1b[31m\xff/maps' 2>/dev/null";
    run_entry_leader("bash", body, dir.path());
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    let hostile: Vec<&Value> = alerts
        .iter()
        .filter(|a| args_of(a).iter().any(|x| x.contains("Accepted")))
        .collect();
    assert_eq!(hostile.len(), 1, "{alerts:#?}");
    let expected =
        "/proc/1/\nJan  1 00:00:00 host sshd[1]: Accepted password for root\u{1b}[31m\\xff/maps";
    assert_eq!(args_of(hostile[0])[1], expected);
    assert_eq!(hostile[0]["file"]["path"], expected);
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn exceptions_and_local_rules_apply_to_live_events() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let rules_d = dir.path().join("rules.d");
    std::fs::create_dir(&rules_d).expect("mkdir rules.d");
    // A local copy of the seed rule (same rule_id: it replaces the shipped
    // one) with an exception for zsh sessions; a global exception for dash.
    let local = include_str!("../rules/proc_maps_discovery.toml").replace(
        "[[rule.threat]]",
        "[[rule.exceptions]]\ndescription = \"zsh users\"\nfield = \"process.entry_leader.name\"\nvalues = [\"zsh\"]\n\n[[rule.threat]]",
    );
    std::fs::write(rules_d.join("seed-local.toml"), local).expect("write local rule");
    let extra = format!(
        "[rules]\ndirectories = [\"{}\"]\n\n[[exceptions]]\ndescription = \"dash\"\nquery = 'process.parent.name == \"dash\"'\n",
        rules_d.display()
    );
    let mapwatch = Mapwatch::start_with(dir.path(), &extra);
    let targets: Vec<(&str, Target)> = ["bash", "dash", "zsh"]
        .into_iter()
        .map(|s| (s, Target::spawn()))
        .collect();
    for (shell, target) in &targets {
        run_entry_leader(
            shell,
            &format!("cat {} > /dev/null", target.maps()),
            dir.path(),
        );
    }
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    let count = |rule: &str, target: &Target| {
        alerts
            .iter()
            .filter(|a| a["rule"]["id"] == rule && a["file"]["path"] == target.maps().as_str())
            .count()
    };
    assert_eq!(
        count(SEED_ID, &targets[0].1),
        1,
        "bash: no exception applies"
    );
    assert_eq!(
        count(SEED_ID, &targets[1].1) + count(EXTENDED_ID, &targets[1].1),
        0,
        "dash: the global exception applies to every rule"
    );
    assert_eq!(
        count(SEED_ID, &targets[2].1),
        0,
        "zsh: the local rule's exception applies"
    );
    assert_eq!(
        count(EXTENDED_ID, &targets[2].1),
        1,
        "zsh: a rule's exception is its own; the extended rule still sees the read"
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_burst_is_cut_at_the_rules_max_signals_with_one_summary() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let target = Target::spawn();
    let body = format!(
        "for i in $(seq 1000); do cat {} > /dev/null; done",
        target.maps()
    );
    run_entry_leader("bash", &body, dir.path());
    // The limited alerts are gone; the summary leaves when the rule's
    // 5-minute window ends, or at shutdown.
    mapwatch.wait_for_alert("the 100th alert", |a| {
        a["rule"]["id"] == SEED_ID && a["mapwatch"]["read"]["confirmed"] == true
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (status, stderr, alerts) = mapwatch.terminate_with_alerts();
    assert!(status.success(), "{stderr}");
    let raised = alerts
        .iter()
        .filter(|a| a["rule"]["id"] == SEED_ID && a["event"]["action"] == "exec")
        .count();
    let summaries: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["event"]["action"] == "alerts-suppressed")
        .collect();
    assert_eq!(
        raised, 100,
        "max_signals of the seed rule; stderr:\n{stderr}"
    );
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    assert_eq!(summaries[0]["rule"]["id"], SEED_ID);
    assert_eq!(summaries[0]["mapwatch"]["suppressed"]["count"], 900);
    assert!(stderr.contains("alerts_suppressed=900"), "{stderr}");
}

/// Issue 16: noise of one kind (150 processes reading their own map) uses
/// up its own budget, not that of a read of another process's map by
/// another reader, which still raises its alert; the summary names and
/// counts the noise.
#[test]
fn noise_of_one_kind_never_hides_a_read_of_another_target() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let victim = Target::spawn();
    let body = format!(
        "for i in $(seq 150); do cat /proc/self/maps > /dev/null; done; grep -c x {} > /dev/null",
        victim.maps()
    );
    run_entry_leader("bash", &body, dir.path());
    let victim_pid = victim.pid();
    mapwatch.wait_for_alert("the victim's read", |a| {
        a["rule"]["id"] == SEED_ID && a["mapwatch"]["target"]["pid"] == victim_pid
    });
    let (status, stderr, alerts) = mapwatch.terminate_with_alerts();
    assert!(status.success(), "{stderr}");
    let seed = |a: &&Value| a["rule"]["id"] == SEED_ID && a["event"]["action"] == "exec";
    let own: Vec<&Value> = alerts
        .iter()
        .filter(seed)
        .filter(|a| a["process"]["name"] == "cat")
        .collect();
    assert_eq!(
        own.len(),
        100,
        "max_signals for the noise:{}",
        brief(own.iter().copied())
    );
    let victim_alerts: Vec<&Value> = alerts
        .iter()
        .filter(seed)
        .filter(|a| a["mapwatch"]["target"]["pid"] == victim_pid)
        .collect();
    assert_eq!(
        victim_alerts.len(),
        1,
        "{}",
        brief(victim_alerts.iter().copied())
    );
    assert_eq!(victim_alerts[0]["process"]["name"], "grep");
    assert_eq!(victim_alerts[0]["mapwatch"]["read"]["confirmed"], true);
    let summaries: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["event"]["action"] == "alerts-suppressed")
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    let suppressed = &summaries[0]["mapwatch"]["suppressed"];
    assert_eq!(suppressed["count"], 50, "{suppressed}");
    assert_eq!(suppressed["reader_executable"], "/usr/bin/cat");
    assert_eq!(suppressed["target_self"], true);
}

#[test]
fn after_start_up_only_the_needed_capabilities_remain() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    // CAP_AUDIT_CONTROL (30), CAP_SYS_PTRACE (19), CAP_DAC_READ_SEARCH (2)
    // effective; CAP_SYS_ADMIN (21) permitted too, raised by the fanotify
    // thread only for each mark of a procfs found after start.
    let kept: u64 = (1 << 30) | (1 << 19) | (1 << 2);
    let permitted = kept | (1 << 21);
    let tasks = std::fs::read_dir(format!("/proc/{}/task", mapwatch.pid())).expect("task dir");
    let mut threads = 0;
    for task in tasks {
        let status =
            std::fs::read_to_string(task.expect("task").path().join("status")).expect("status");
        for (set, expected) in [("CapEff:", kept), ("CapPrm:", permitted), ("CapInh:", 0)] {
            let value = status
                .lines()
                .find_map(|l| l.strip_prefix(set))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .expect("capability set");
            assert_eq!(value, expected, "{set} {value:x} of a thread:\n{status}");
        }
        threads += 1;
    }
    assert!(
        threads >= 3,
        "main, pipeline, sink and fanotify threads: {threads}"
    );
    // And it still works.
    mapwatch.sync();
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn backpressure_kernel_sets_no_wait_and_userspace_leaves_the_wait_alone_and_detects() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let before = snapshot().backlog_wait_time;
    assert_ne!(before, 0, "the kernel's default wait is not 0");
    let dir = tempfile::tempdir().expect("tempdir");

    // Default: the kernel drops rather than stall processes on a full queue.
    let mapwatch = Mapwatch::start(dir.path());
    assert_eq!(snapshot().backlog_wait_time, 0);
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
    assert_eq!(snapshot().backlog_wait_time, before, "restored at stop");

    let mapwatch = Mapwatch::start_with(dir.path(), "backpressure = \"userspace\"\n");
    assert_eq!(
        snapshot().backlog_wait_time,
        before,
        "userspace leaves it alone"
    );
    // Records then come through the reader thread and its queue: a
    // positive is still detected, and its read confirmed.
    let path = mapwatch.sync().confirmed;
    let alerts = mapwatch.alerts();
    let alert = alerts
        .iter()
        .find(|a| a["rule"]["id"] == SEED_ID && a["file"]["path"] == path.as_str())
        .expect("the seed rule's alert on the positive");
    assert_eq!(alert["mapwatch"]["read"]["confirmed"], true, "{alert:#}");
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
    assert_eq!(snapshot().backlog_wait_time, before);
}

#[test]
fn rules_removed_by_auditctl_are_reinstalled_and_detection_goes_on() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    require_program("auditctl", "auditd");
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    mapwatch.sync();
    let ours = snapshot().rules;
    // As auditd's augenrules does when it loads its rules file (and as an
    // intruder might): every rule deleted, ours with them, then the file's
    // own rules added. Our reinstall must not break the file's load
    // (auditctl stops at the first error), so it runs a few times.
    let rules_file = dir.path().join("audit.rules");
    std::fs::write(
        &rules_file,
        "-D\n-a always,exit -F arch=b64 -S kill -k mapwatch-test-foreign\n",
    )
    .expect("rules file");
    let _foreign = scopeguard(|| {
        let _ = Command::new("auditctl")
            .args(["-D", "-k", "mapwatch-test-foreign"])
            .stdout(Stdio::null())
            .status();
    });
    for round in 0..5 {
        let loaded = Command::new("auditctl")
            .arg("-R")
            .arg(&rules_file)
            .output()
            .expect("auditctl -R");
        assert!(
            loaded.status.success(),
            "round {round}: auditctl -R failed beside mapwatch: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let ours_back = || {
            let now = snapshot().rules;
            ours.iter()
                .all(|rule| now.iter().filter(|r| *r == rule).count() == 1)
                && now.len() == ours.len() + 1
        };
        while !ours_back() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let now = snapshot().rules;
        assert!(
            ours_back(),
            "round {round}: each rule of ours once, and the file's rule: {now:#?}\n{}",
            mapwatch.stderr()
        );
        let listed = Command::new("auditctl")
            .arg("-l")
            .output()
            .expect("auditctl -l");
        let listed = String::from_utf8_lossy(&listed.stdout);
        let first_exit_rule = listed.lines().find(|l| l.contains(",exit"));
        assert!(
            first_exit_rule
                .is_some_and(|l| l.starts_with("-a never,exit") && l.contains("key=mapwatch")),
            "round {round}: the self-exclusion is still the first exit rule:\n{listed}"
        );
    }
    mapwatch.sync();
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("of mapwatch's audit rules were removed by another program"),
        "{stderr}"
    );
}

#[test]
fn after_sigkill_with_the_state_file_lost_every_rule_of_ours_still_goes() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let before = snapshot();
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = Mapwatch::start(dir.path());
    crashed.kill();
    assert_eq!(
        excluded_record_types(),
        mapwatch::source::netlink::rules::UNUSED_RECORD_TYPES,
        "a SIGKILLed run leaves its exclusions behind"
    );
    // As systemd did before RuntimeDirectoryPreserve=, or a reboot of /run.
    std::fs::remove_file(dir.path().join("audit-state.json")).expect("removing the state file");

    let mapwatch = Mapwatch::start(dir.path());
    mapwatch.sync();
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
    assert!(
        excluded_record_types().is_empty(),
        "the exclusions are known by their shape, not from the state file"
    );
    assert_eq!(snapshot().rules, before.rules, "no rule of ours is left");
}
