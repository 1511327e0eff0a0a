//! Beside a real auditd (from the distribution, started here on its own log):
//! mapwatch in `auto` mode reads the multicast group, detects what it
//! detects as the audit daemon, and leaves auditd's registration, log and
//! rules alone. Needs root.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// A running `auditd -n` with its configuration and log in a directory of
/// ours; stopped (and its test rule removed) when dropped.
struct Auditd {
    child: Child,
    log: PathBuf,
}

impl Auditd {
    fn start(dir: &Path) -> Auditd {
        require_program("auditd", "auditd");
        let log = dir.join("audit.log");
        let plugins = dir.join("plugins.d");
        std::fs::create_dir_all(&plugins).expect("plugin dir");
        let conf = format!(
            "local_events = yes\nwrite_logs = yes\nlog_file = {}\nlog_group = root\nlog_format = RAW\nflush = INCREMENTAL_ASYNC\nfreq = 20\n\
             max_log_file = 50\nnum_logs = 2\npriority_boost = 0\nname_format = NONE\nmax_log_file_action = ROTATE\nspace_left = 75\n\
             space_left_action = IGNORE\nadmin_space_left = 50\nadmin_space_left_action = IGNORE\ndisk_full_action = IGNORE\n\
             disk_error_action = IGNORE\nuse_libwrap = no\ntcp_listen_queue = 5\ntcp_max_per_addr = 1\ntcp_client_max_idle = 0\n\
             transport = TCP\ndistribute_network = no\nq_depth = 2000\noverflow_action = SYSLOG\nmax_restarts = 10\nplugin_dir = {}\n\
             end_of_event_timeout = 2\n",
            log.display(),
            plugins.display()
        );
        let conf_path = dir.join("auditd.conf");
        std::fs::write(&conf_path, conf).expect("auditd.conf");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&conf_path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let child = Command::new("auditd")
            .arg("-n")
            .arg("-c")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting auditd");
        let auditd = Auditd { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while snapshot().pid != auditd.child.id() {
            assert!(Instant::now() < deadline, "auditd did not register");
            std::thread::sleep(Duration::from_millis(50));
        }
        auditd
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        let _ = Command::new("auditctl")
            .args(["-D", "-k", "mapwatch-test-auditd"])
            .stdout(Stdio::null())
            .status();
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

#[test]
fn beside_auditd_in_auto_mode_everything_is_detected_and_auditd_keeps_its_own() {
    let _lock = audit_lock();
    require_program("auditctl", "auditd");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let auditd = Auditd::start(dir.path());
    let added = Command::new("auditctl")
        .args([
            "-a",
            "always,exit",
            "-F",
            "arch=b64",
            "-S",
            "kill",
            "-k",
            "mapwatch-test-auditd",
        ])
        .status()
        .expect("auditctl");
    assert!(added.success());
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
    let mut runs = Vec::new();
    for shell in SHELLS {
        let target = Target::spawn();
        let body = format!(
            "cat {} > /dev/null; grep -c mapwatch-{shell} /proc/self/maps > /dev/null",
            target.maps()
        );
        let shell_pid = run_entry_leader(shell, &body, &run);
        runs.push((shell, shell_pid, target));
    }
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    for (shell, shell_pid, target) in &runs {
        let cat: Vec<&Value> = alerts
            .iter()
            .filter(|a| a["file"]["path"] == target.maps().as_str())
            .collect();
        assert_eq!(cat.len(), 1, "{shell}: {alerts:#?}");
        assert_eq!(cat[0]["process"]["entry_leader"]["pid"], *shell_pid);
        assert_eq!(cat[0]["process"]["entry_leader"]["name"], *shell);
        assert_eq!(cat[0]["mapwatch"]["read"]["confirmed"], true);
        let grep = alerts
            .iter()
            .filter(|a| args_of(a).contains(&format!("mapwatch-{shell}")))
            .count();
        assert_eq!(grep, 1, "{shell}: {alerts:#?}");
    }
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");

    // auditd's own log got the records, its registration and rules stay.
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(&auditd.log).expect("auditd's log");
    for (shell, _, target) in &runs {
        let quoted = format!("\"{}\"", target.maps());
        let hex: String = target.maps().bytes().map(|b| format!("{b:02X}")).collect();
        assert!(
            log.contains(&quoted) || log.contains(&hex),
            "{shell}: the exec of cat is in auditd's log"
        );
    }
    let after = snapshot();
    assert_eq!(after.pid, auditd.pid(), "auditd is still the audit daemon");
    assert_eq!(
        after.rules, rules_before,
        "auditd's rules intact, mapwatch's gone"
    );
    assert_eq!(mapwatch_rule_count(), 0, "mapwatch's rules removed");
}
