//! The command line's contract for bad input: usage and configuration errors
//! exit 2 with a message naming what is wrong; runtime errors exit 1; nothing
//! touches the kernel's audit state on the way out.

mod support;

use std::process::Command;

use support::{
    AuditStateGuard, BIN, KillOnDrop, Target, audit_lock, mapwatch, require_program, require_root,
    seed_rule_with, snapshot, stderr_of,
};

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = mapwatch(&["run", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("--frobnicate"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = mapwatch(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

#[test]
fn bad_format_value_is_a_usage_error() {
    let out = mapwatch(&["run", "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("xml"), "{}", stderr_of(&out));
}

#[test]
fn version_and_help() {
    let out = mapwatch(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = mapwatch(&["run", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--foreground"));
}

#[test]
fn bad_config_names_key_and_line_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[audit]\nbacklog_limit = 100\nbaklog_limit = 5\n")
        .expect("write config");
    let path = path.to_str().expect("utf-8 temp path");
    for args in [
        vec!["check-config", "--config", path],
        vec!["run", "--foreground", "--config", path],
    ] {
        let out = mapwatch(&args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("baklog_limit"), "{args:?}: {err}");
        assert!(err.contains("line 3"), "{args:?}: {err}");
        assert!(err.contains("bad.toml"), "{args:?}: {err}");
    }
}

#[test]
fn missing_explicit_config_exits_2() {
    let out = mapwatch(&["check-config", "--config", "/nonexistent/mapwatch.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("/nonexistent/mapwatch.toml"));
}

#[test]
fn shipped_config_checks_ok() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/mapwatch.toml");
    let out = mapwatch(&["check-config", "--config", shipped]);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn without_root_it_exits_1_naming_the_capability() {
    require_root();
    support::require_program("setpriv", "util-linux");
    let before = snapshot();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            BIN,
        ])
        .args(["run", "--foreground", "--format", "json"])
        .output()
        .expect("running setpriv");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("CAP_AUDIT_CONTROL"), "{err}");
    assert!(out.stdout.is_empty(), "nothing but alerts on stdout");
    assert_eq!(snapshot(), before, "a refused start changes nothing");
}

#[test]
fn a_config_others_can_write_is_refused() {
    require_root();
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mapwatch.toml");
    std::fs::write(&path, "").expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = mapwatch(&["check-config", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("refusing a file that non-root users can change"),
        "{}",
        stderr_of(&out)
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(
        mapwatch(&["check-config", "--config", path.to_str().expect("utf-8")])
            .status
            .success()
    );
}

/// A config file the root check accepts (tests run as root).
fn empty_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("empty.toml");
    std::fs::write(&path, "").expect("config");
    path
}

#[test]
fn replay_reports_an_unreadable_file_and_goes_on_with_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = empty_config(dir.path());
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/peer-laurel/fork-sleep-exec.txt"
    );
    let out = Command::new(BIN)
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .arg(dir.path().join("missing.log"))
        .arg(sample)
        .output()
        .expect("mapwatch replay");
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing.log"), "{stderr}");
    // Every non-empty line of the readable file is a record (or a malformed one).
    let lines = std::fs::read_to_string(sample)
        .expect("sample")
        .lines()
        .filter(|l| !l.is_empty())
        .count();
    assert!(
        stderr.contains(&format!("replayed 2 files (1 unreadable): {lines} records")),
        "the readable file was replayed whole: {stderr}"
    );
}

#[test]
fn replay_counts_malformed_lines_and_reads_a_recorded_log_on_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = empty_config(dir.path());
    let mut child = Command::new(BIN)
        .args(["replay", "--recorded", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mapwatch replay");
    let mut input = Vec::new();
    for i in 0..10_000 {
        writeln!(input, "garbage line {i} \x1b[31m type= msg=audit(").expect("write");
    }
    input.extend_from_slice(b"type=EOE msg=audit(1700000000.000:1): \n");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("replay finishes");
    writer.join().expect("writer").expect("stdin written");
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("10001 records (10000 malformed)"),
        "{stderr}"
    );
    // Logged with the attacker's escape sequence neutralised.
    assert!(!stderr.contains('\x1b'), "{stderr}");
}

/// Replays `events` exec events that never end (SYSCALL records only, no
/// PROCTITLE or EOE) and returns mapwatch's peak RSS in KiB, as the kernel
/// accounted it.
fn peak_rss_of_unended_events(dir: &std::path::Path, events: u32) -> u64 {
    use std::io::Write;
    let config = empty_config(dir);
    let log = dir.join(format!("no-end-{events}.log"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&log).expect("log"));
    for serial in 0..events {
        writeln!(
            out,
            "type=SYSCALL msg=audit(1700000000.000:{serial}): arch=c000003e syscall=59 success=yes exit=0 a0=0 a1=0 a2=0 a3=0 items=2 ppid=1 pid={} auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm=\"cat\" exe=\"/usr/bin/cat\" key=\"mapwatch\"",
            serial % 1000 + 2
        )
        .expect("write");
    }
    out.flush().expect("flush");
    drop(out);
    let measured = Command::new("python3")
        .args([
            "-c",
            "import resource, subprocess, sys\n\
             r = subprocess.run(sys.argv[1:], capture_output=True)\n\
             sys.stderr.write(r.stderr.decode())\n\
             print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
             sys.exit(r.returncode)",
            BIN,
            "replay",
            "--config",
        ])
        .arg(&config)
        .arg(&log)
        .output()
        .expect("python3");
    let stderr = stderr_of(&measured);
    assert!(measured.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{events} exec events ({events} without an end record)"
        )),
        "{stderr}"
    );
    String::from_utf8_lossy(&measured.stdout)
        .trim()
        .parse()
        .expect("ru_maxrss")
}

#[test]
fn a_flood_of_200_000_events_that_never_end_keeps_memory_bounded() {
    require_program("python3", "python3");
    let dir = tempfile::tempdir().expect("tempdir");
    // 50,000 is past the point where the in-flight cap (4,096 events) is
    // full and evictions have reached their steady state.
    let steady = peak_rss_of_unended_events(dir.path(), 50_000);
    let flood = peak_rss_of_unended_events(dir.path(), 200_000);
    eprintln!("peak RSS: {steady} KiB for 50,000 unended events, {flood} KiB for 200,000");
    assert!(
        flood < steady + 2 * 1024,
        "peak RSS grew from {steady} KiB to {flood} KiB: events in flight are not bounded"
    );
    assert!(flood < 64 * 1024, "peak RSS {flood} KiB");
}

/// One node's records of a session: `SHELL` (pid 100) starts a session
/// and runs `cat /proc/1/maps` (pid 101). Both nodes use the same pids,
/// times and serials, as two hosts' kernels may.
fn node_session(node: &str, shell: &str) -> [String; 6] {
    let syscall = |serial: u32, call: u32, pid: u32, ppid: u32, comm: &str, exe: &str| {
        format!(
            "node={node} type=SYSCALL msg=audit(1700000000.{serial:03}:{serial}): arch=c000003e syscall={call} success=yes exit=0 a0=0 a1=0 a2=0 a3=0 items=1 ppid={ppid} pid={pid} auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm=\"{comm}\" exe=\"{exe}\" key=\"mapwatch\""
        )
    };
    let end = |serial: u32| {
        format!(
            "node={node} type=PROCTITLE msg=audit(1700000000.{serial:03}:{serial}): proctitle=78"
        )
    };
    [
        syscall(1, 112, 100, 1, shell, &format!("/usr/bin/{shell}")),
        end(1),
        syscall(2, 59, 100, 1, shell, &format!("/usr/bin/{shell}"))
            + &format!(
                "\nnode={node} type=EXECVE msg=audit(1700000000.002:2): argc=1 a0=\"{shell}\""
            ),
        end(2),
        syscall(3, 59, 101, 100, "cat", "/usr/bin/cat")
            + &format!(
                "\nnode={node} type=EXECVE msg=audit(1700000000.003:3): argc=2 a0=\"cat\" a1=\"/proc/1/maps\""
            )
            + &format!(
                "\nnode={node} type=PATH msg=audit(1700000000.003:3): item=0 name=\"/usr/bin/cat\" inode=1 dev=fe:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL"
            ),
        end(3),
    ]
}

#[test]
fn replay_keeps_the_nodes_of_an_aggregated_log_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = empty_config(dir.path());
    let (alpha, beta) = (node_session("alpha", "bash"), node_session("beta", "zsh"));
    // Interleaved record by record, as a central auditd writes them.
    let mut log = String::new();
    for (a, b) in alpha.iter().zip(&beta) {
        log.push_str(a);
        log.push('\n');
        log.push_str(b);
        log.push('\n');
    }
    let path = dir.path().join("aggregated.log");
    std::fs::write(&path, log).expect("log");
    let out = Command::new(BIN)
        .args(["replay", "--format", "json", "--config"])
        .arg(&config)
        .arg(&path)
        .output()
        .expect("mapwatch replay");
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2 nodes"), "{stderr}");
    let alerts: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON alert"))
        .collect();
    assert_eq!(alerts.len(), 2, "one alert per node: {alerts:#?}");
    for (node, shell) in [("alpha", "bash"), ("beta", "zsh")] {
        let mine: Vec<&serde_json::Value> = alerts
            .iter()
            .filter(|a| a["host"]["name"] == node)
            .collect();
        assert_eq!(mine.len(), 1, "{node}: {alerts:#?}");
        let alert = mine[0];
        assert_eq!(alert["host"]["hostname"], node, "{alert:#}");
        assert_eq!(alert["process"]["pid"], 101, "{alert:#}");
        assert_eq!(
            alert["process"]["parent"]["name"], shell,
            "{node}: {alert:#}"
        );
        assert_eq!(
            alert["process"]["entry_leader"]["name"], shell,
            "{node}: {alert:#}"
        );
    }
}

#[test]
fn as_auditds_plugin_another_nodes_processes_are_never_read_from_local_procfs() {
    use std::io::Write;
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let alerts_file = dir.path().join("alerts.json");
    let config = dir.path().join("mapwatch.toml");
    // A rule on any `cat`: the seed rule needs an entry leader, which a
    // parent with no history cannot give.
    let rules_d = dir.path().join("rules.d");
    std::fs::create_dir(&rules_d).expect("rules.d");
    let any_cat = seed_rule_with(
        "5e8f43a1-0a3e-4d55-9c2a-3b1f7a9d2c10",
        "process where process.name == \"cat\"",
    );
    std::fs::write(rules_d.join("any_cat.toml"), any_cat).expect("rule");
    std::fs::write(
        &config,
        format!(
            "[audit]\nstate_file = \"{}\"\n[output]\njson_file = \"{}\"\n[rules]\ndirectories = [\"{}\"]\n",
            dir.path().join("audit-state.json").display(),
            alerts_file.display(),
            rules_d.display()
        ),
    )
    .expect("config");
    // A live local process whose pid another host's record names as the
    // parent of its `cat`, with nothing of it in that host's history.
    let local = Target::spawn();
    let remote: String = node_session("gamma", "bash")
        .join("\n")
        .replace("pid=101 auid", "pid=4190111 auid")
        .replace(
            "ppid=100 pid=4190111",
            &format!("ppid={} pid=4190111", local.pid()),
        )
        + "\n";
    let mut plugin = Command::new(BIN)
        .args(["replay", "--config"])
        .arg(&config)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mapwatch as a plugin");
    let mut feed = plugin.stdin.take().expect("stdin");
    feed.write_all(remote.as_bytes()).expect("feed");
    drop(feed);
    let out = plugin
        .wait_with_output()
        .expect("plugin ends with its feed");
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    let alerts: Vec<serde_json::Value> = std::fs::read_to_string(&alerts_file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON document"))
        .filter(|d: &serde_json::Value| {
            d["event"]["kind"] == "alert" && d["rule"]["id"].is_string()
        })
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:#?}\n{stderr}");
    let alert = &alerts[0];
    assert_eq!(alert["host"]["name"], "gamma", "{alert:#}");
    assert_eq!(alert["process"]["pid"], 4190111, "{alert:#}");
    // Its parent's pid is only a number there: this host's process of
    // that pid (a `sleep`) is not gamma's.
    assert_eq!(alert["process"]["parent"]["pid"], local.pid(), "{alert:#}");
    assert!(alert["process"]["parent"]["name"].is_null(), "{alert:#}");
    assert!(
        alert["mapwatch"]["read"].is_null(),
        "no local read confirms it: {alert:#}"
    );
}

#[test]
fn replay_never_reads_this_hosts_procfs_for_a_logs_pid() {
    // A local process, alive through the replay, whose pid a log's exec
    // and ptrace call use: its environment and name are not the log's.
    let local = Command::new("sleep")
        .arg("600")
        .env("MAPWATCH_LOCAL_ONLY", "1")
        .spawn()
        .expect("sleep");
    let pid = local.id();
    let mut local = KillOnDrop(local);
    let dir = tempfile::tempdir().expect("tempdir");
    let rules_d = dir.path().join("rules.d");
    std::fs::create_dir(&rules_d).expect("rules.d");
    std::fs::write(
        rules_d.join("env.toml"),
        seed_rule_with(
            "7d1f1c1e-0b7e-4c55-9a57-1e1b1f0c0a01",
            "process where event.action == \"exec\" and process.env_vars : \"MAPWATCH_LOCAL_ONLY=*\"",
        ),
    )
    .expect("env rule");
    std::fs::write(
        rules_d.join("target.toml"),
        seed_rule_with(
            "7d1f1c1e-0b7e-4c55-9a57-1e1b1f0c0a02",
            "api where event.action == \"ptrace\" and mapwatch.target.name == \"sleep\"",
        ),
    )
    .expect("target rule");
    let config = dir.path().join("mapwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[rules]\nshipped = false\ndirectories = [\"{}\"]\n",
            rules_d.display()
        ),
    )
    .expect("config");
    let log = format!(
        "type=SYSCALL msg=audit(1700000000.001:1): arch=c000003e syscall=59 success=yes exit=0 a0=0 a1=0 a2=0 a3=0 items=1 ppid=1 pid={pid} auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=3 comm=\"env\" exe=\"/usr/bin/env\" key=\"exec\"\n\
         type=EXECVE msg=audit(1700000000.001:1): argc=1 a0=\"env\"\n\
         type=PROCTITLE msg=audit(1700000000.001:1): proctitle=656E76\n\
         type=SYSCALL msg=audit(1700000000.002:2): arch=c000003e syscall=101 success=yes exit=0 a0=10 a1={pid:x} a2=0 a3=0 items=0 ppid=1 pid=4000000 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=3 comm=\"inject\" exe=\"/tmp/inject\" key=\"mapwatch\"\n\
         type=PROCTITLE msg=audit(1700000000.002:2): proctitle=696E6A656374\n"
    );
    let path = dir.path().join("audit.log");
    std::fs::write(&path, log).expect("log");
    let out = Command::new(BIN)
        .args(["replay", "--config"])
        .arg(&config)
        .arg(&path)
        .output()
        .expect("mapwatch replay");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        out.stdout.is_empty(),
        "a log's pid was read from this host's procfs: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The local process was there all along.
    assert!(local.0.try_wait().expect("sleep").is_none());
    let _ = &mut local;
}
