//! Test harness for the live tests: a running `mapwatch` whose alerts are
//! collected, target processes, shells started as entry leaders, and a guard
//! that puts the kernel's audit state back whatever happens.

#![allow(dead_code)]

pub mod auditd;
pub mod elastic;
pub mod logins;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use mapwatch::source::netlink::rules::has_our_key;
use mapwatch::source::netlink::socket::AuditSocket;
use netlink_packet_audit::StatusMessage;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mapwatch");
/// The shipped seed rule's `rule_id`.
pub const SEED_ID: &str = "2f95540c-923e-4f57-9dae-de30169c68b9";
/// The shipped extended rule's (any read of another process's map).
pub const EXTENDED_ID: &str = "aae83d04-dbb2-4b2f-befb-4943ec0f6bf3";
/// The shipped layout rule's (smaps, numa_maps, pagemap, map_files, ...).
pub const LAYOUT_ID: &str = "a8058e10-0e2c-42fc-b756-9f862b08aecc";
/// The shipped memory read rule's (`/proc/<pid>/mem`).
pub const MEM_ID: &str = "ab8c4dd6-0069-48cd-9060-e0f8d6914e3e";
/// The shipped memory write rule's.
pub const MEM_WRITE_ID: &str = "d6f9310e-937e-4680-b873-19d736ac8b9e";
/// The shipped ptrace rule's (pokes and register changes).
pub const PTRACE_ID: &str = "b46394f1-376c-466a-a924-8301dc329192";
/// The shipped process_vm_writev rule's.
pub const VM_WRITE_ID: &str = "061b29b1-d0de-465d-92a4-67981ad46377";
/// The shipped process_vm_readv rule's.
pub const VM_READ_ID: &str = "6bcf137a-7cc0-4118-80eb-d39eca03d289";
/// The shipped sequence rule's: a layout read, then a write by the same
/// process or a descendant.
pub const CHAIN_ID: &str = "0f6c806b-d86e-4754-a76d-c190b0486697";
pub const SHELLS: [&str; 8] = ["bash", "dash", "sh", "zsh", "ksh", "tcsh", "csh", "fish"];
const WAIT: Duration = Duration::from_secs(20);
/// Marks a stdout line that did not parse as JSON.
const NOT_JSON: &str = "NOT JSON: ";

/// Runs the mapwatch binary to completion.
pub fn mapwatch(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("running mapwatch")
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Tests that register the audit daemon must not overlap.
static AUDIT_LOCK: Mutex<()> = Mutex::new(());

pub fn audit_lock() -> MutexGuard<'static, ()> {
    require_root();
    AUDIT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: it uses the kernel audit subsystem over netlink (run the suite as root, as CI does)"
    );
}

pub fn require_program(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed: `apt-get install -y {package}` (.ci/run does)"
    );
}

/// The audit settings a test must find unchanged.
#[derive(Debug, PartialEq, Eq)]
pub struct KernelSnapshot {
    pub enabled: u32,
    pub pid: u32,
    pub backlog_limit: u32,
    pub backlog_wait_time: u32,
    pub rules: Vec<String>,
}

pub fn snapshot() -> KernelSnapshot {
    let mut socket = AuditSocket::open().expect("audit netlink socket");
    let status = socket.status().expect("audit status");
    let mut rules: Vec<String> = socket
        .list_rules()
        .expect("audit rules")
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    rules.sort();
    KernelSnapshot {
        enabled: status.enabled,
        pid: status.pid,
        backlog_limit: status.backlog_limit,
        backlog_wait_time: status.backlog_wait_time,
        rules,
    }
}

pub fn mapwatch_rule_count() -> usize {
    let mut socket = AuditSocket::open().expect("audit netlink socket");
    socket
        .list_rules()
        .expect("audit rules")
        .iter()
        .filter(|r| has_our_key(r))
        .count()
}

pub fn set_status(enabled: u32, backlog_limit: u32) {
    let mut socket = AuditSocket::open().expect("audit netlink socket");
    let mut status = StatusMessage::new();
    status.mask = 0x1 | 0x10;
    status.enabled = enabled;
    status.backlog_limit = backlog_limit;
    socket.set_status(status).expect("setting audit status");
}

pub fn set_backlog_wait_time(wait: u32) {
    let mut socket = AuditSocket::open().expect("audit netlink socket");
    let mut status = StatusMessage::new();
    status.mask = 0x20;
    status.backlog_wait_time = wait;
    socket
        .set_status(status)
        .expect("setting audit backlog_wait_time");
}

/// Restores `enabled` and `backlog_limit` and removes mapwatch's rules
/// (keyed, and its record-type exclusions), when dropped, even if the test
/// panicked (and killed a mapwatch that had no time to remove its own).
pub struct AuditStateGuard {
    enabled: u32,
    backlog_limit: u32,
    backlog_wait_time: u32,
}

impl AuditStateGuard {
    pub fn new() -> Self {
        let before = snapshot();
        AuditStateGuard {
            enabled: before.enabled,
            backlog_limit: before.backlog_limit,
            backlog_wait_time: before.backlog_wait_time,
        }
    }
}

/// The record types that exclusions of mapwatch's kind drop now.
pub fn excluded_record_types() -> Vec<u32> {
    AuditSocket::open()
        .and_then(|mut socket| socket.excluded_record_types())
        .expect("listing the kernel's audit rules")
}

impl Drop for AuditStateGuard {
    fn drop(&mut self) {
        if let Ok(mut socket) = AuditSocket::open() {
            let _ = socket.delete_our_rules();
        }
        set_status(self.enabled, self.backlog_limit);
        set_backlog_wait_time(self.backlog_wait_time);
    }
}

/// A running `mapwatch run --foreground --format json`.
pub struct Mapwatch {
    child: Child,
    alerts: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    /// Ends when mapwatch's stdout closes: every alert line is then in `alerts`.
    stdout_reader: Option<std::thread::JoinHandle<()>>,
}

impl Mapwatch {
    /// Starts mapwatch with its state file in `dir`, and waits for `ready`.
    pub fn start(dir: &Path) -> Mapwatch {
        Self::start_with(dir, "")
    }

    /// Like [`Mapwatch::start`], with more configuration appended.
    pub fn start_with(dir: &Path, extra_config: &str) -> Mapwatch {
        Self::launch(dir, extra_config, &["--foreground", "--format", "json"])
    }

    /// As the service runs: alerts go to the configured sinks, not stdout.
    pub fn start_service(dir: &Path, extra_config: &str) -> Mapwatch {
        Self::launch(dir, extra_config, &[])
    }

    fn launch(dir: &Path, extra_config: &str, mode: &[&str]) -> Mapwatch {
        let config = dir.join("mapwatch.toml");
        std::fs::write(
            &config,
            format!(
                "[audit]\nstate_file = \"{}\"\n{extra_config}",
                dir.join("audit-state.json").display()
            ),
        )
        .expect("writing test config");
        let mut child = Command::new(BIN)
            .arg("run")
            .args(mode)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning mapwatch");
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout piped");
        let sink = alerts.clone();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Kept, not panicked on: a panic here, off the test's thread,
                // would fail nothing. `alerts()` rejects it instead.
                let doc = serde_json::from_str(&line)
                    .unwrap_or_else(|e| Value::String(format!("{NOT_JSON}{e}: {line}")));
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(doc);
            }
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let err_sink = stderr.clone();
        let child_stderr = child.stderr.take().expect("stderr piped");
        std::thread::spawn(move || {
            for line in BufReader::new(child_stderr).lines().map_while(Result::ok) {
                let ready = line.contains("ready");
                {
                    let mut log = err_sink.lock().unwrap_or_else(|p| p.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
                // Logged first, so a test that saw `ready` sees the line.
                if ready {
                    let _ = ready_tx.send(());
                }
            }
        });
        let mut mapwatch = Mapwatch {
            child,
            stdout_reader: Some(stdout_reader),
            alerts,
            stderr,
        };
        if ready_rx.recv_timeout(WAIT).is_err() {
            let _ = mapwatch.child.kill();
            let _ = mapwatch.child.wait();
            panic!(
                "mapwatch did not become ready; stderr:\n{}",
                mapwatch.stderr()
            );
        }
        mapwatch
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The alerts so far; fails the test if any stdout line was not one
    /// JSON document.
    pub fn alerts(&self) -> Vec<Value> {
        let alerts = self
            .alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let broken: Vec<&Value> = alerts
            .iter()
            .filter(|a| a.as_str().is_some_and(|s| s.starts_with(NOT_JSON)))
            .collect();
        assert!(
            broken.is_empty(),
            "stdout lines that are not one JSON document: {broken:#?}"
        );
        alerts
    }

    /// Waits until an alert satisfies `pred`.
    pub fn wait_for_alert(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(alert) = self.alerts().into_iter().find(|a| pred(a)) {
                return alert;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no alert for {what} within {WAIT:?}; alerts: {:#?}\nstderr:\n{}",
            self.alerts(),
            self.stderr()
        );
    }

    /// Waits until mapwatch's stderr has `needle` (a reload's verdict, say).
    pub fn wait_for_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let stderr = self.stderr();
            if stderr.contains(needle) {
                return stderr;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on mapwatch's stderr within {WAIT:?}:\n{stderr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Raises a fresh positive and waits for the seed rule's alert on it
    /// (not the extended rule's, which fanotify alone would raise), then for
    /// the alert on a `cat` of a map that no process has, which leaves
    /// unconfirmed when its confirmation window ends (at once with fanotify
    /// off): exec alerts leave in
    /// the order their windows end, so every alert of an earlier exec is in
    /// by then, however late mapwatch runs.
    pub fn sync(&self) -> Sentinels {
        let target = Target::spawn();
        let path = format!("/proc/{}/maps", target.pid());
        let dir = tempfile::tempdir().expect("tempdir");
        run_entry_leader("bash", &format!("cat {path} > /dev/null"), dir.path());
        self.wait_for_alert("the sync sentinel", |a| {
            a["rule"]["id"] == SEED_ID && a["file"]["path"] == path.as_str()
        });
        // Above the largest pid_max (2^22): no process has it.
        static SYNCS: AtomicU32 = AtomicU32::new(0);
        let nobody = 4_194_304 + 1 + SYNCS.fetch_add(1, Ordering::Relaxed);
        let nobody = format!("/proc/{nobody}/maps");
        run_entry_leader("bash", &format!("cat {nobody} 2> /dev/null; :"), dir.path());
        self.wait_for_alert("the unconfirmed sync sentinel", |a| {
            a["rule"]["id"] == SEED_ID
                && a["file"]["path"] == nobody.as_str()
                // Absent with fanotify off: alerts then leave at once.
                && a["mapwatch"]["read"]["confirmed"] != true
        });
        Sentinels {
            confirmed: path,
            unconfirmed: nobody,
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal(self.child.id(), sig);
    }

    pub fn terminate(mut self) -> (ExitStatus, String) {
        signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let status = wait_with_timeout(&mut self.child);
        (status, self.stderr())
    }

    /// SIGTERM, then every alert it wrote, the last ones (summaries left
    /// at shutdown) included: read until its stdout closed.
    pub fn terminate_with_alerts(mut self) -> (ExitStatus, String, Vec<Value>) {
        signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let status = wait_with_timeout(&mut self.child);
        let stderr = self.stderr();
        // The child has exited, so its stdout is closed and the reader ends.
        if let Some(reader) = self.stdout_reader.take() {
            let _ = reader.join();
        }
        let alerts = self
            .alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (status, stderr, alerts)
    }

    pub fn kill(mut self) {
        signal(self.child.id(), nix::sys::signal::Signal::SIGKILL);
        wait_with_timeout(&mut self.child);
    }
}

/// The maps paths of a [`Mapwatch::sync`]'s two positives.
pub struct Sentinels {
    /// A live process's map, read: its alert is confirmed.
    pub confirmed: String,
    unconfirmed: String,
}

impl Sentinels {
    /// Whether `alert` is about one of the sentinels, not the test's events.
    pub fn raised(&self, alert: &Value) -> bool {
        let path = &alert["file"]["path"];
        path == self.confirmed.as_str() || path == self.unconfirmed.as_str()
    }
}

impl Drop for Mapwatch {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32"));
    nix::sys::signal::kill(pid, sig).expect("signalling mapwatch");
}

fn wait_with_timeout(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for mapwatch") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mapwatch did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A live process whose memory map tests read (`sleep`), killed on drop.
pub struct Target(Child);

impl Target {
    pub fn spawn() -> Target {
        Target(
            Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("spawning sleep"),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn maps(&self) -> String {
        format!("/proc/{}/maps", self.pid())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `$$` in every shell of the seed list but fish.
pub fn own_pid_var(shell: &str) -> &'static str {
    if shell == "fish" { "$fish_pid" } else { "$$" }
}

/// One spine scenario: `shell`, started as an entry leader, read `target`'s
/// map with cat and its own with grep (marked `mapwatch-<shell>`).
pub struct ShellRun {
    pub shell: &'static str,
    pub shell_pid: u32,
    pub target: Target,
}

/// The spine's scenario for every seed shell, one after the other.
pub fn run_spine_scenarios(dir: &Path) -> Vec<ShellRun> {
    SHELLS
        .iter()
        .map(|&shell| {
            let target = Target::spawn();
            let body = format!(
                "cat {} > /dev/null; grep -c mapwatch-{shell} /proc/self/maps > /dev/null",
                target.maps()
            );
            let shell_pid = run_entry_leader(shell, &body, dir);
            ShellRun {
                shell,
                shell_pid,
                target,
            }
        })
        .collect()
}

/// The spine's expectations: for every run, exactly one alert about the
/// target's map (entry leader the shell, read confirmed) and exactly one
/// about grep's own map.
pub fn assert_spine_alerts(runs: &[ShellRun], alerts: &[Value]) {
    for run in runs {
        let shell = run.shell;
        let cat: Vec<&Value> = alerts
            .iter()
            .filter(|a| a["file"]["path"] == run.target.maps().as_str())
            .collect();
        assert_eq!(cat.len(), 1, "{shell}: {alerts:#?}");
        assert_eq!(cat[0]["process"]["entry_leader"]["pid"], run.shell_pid);
        assert_eq!(cat[0]["process"]["entry_leader"]["name"], shell);
        assert_eq!(cat[0]["mapwatch"]["read"]["confirmed"], true, "{shell}");
        let grep = alerts
            .iter()
            .filter(|a| args_of(a).contains(&format!("mapwatch-{shell}")))
            .count();
        assert_eq!(grep, 1, "{shell}: {alerts:#?}");
    }
}

/// Runs `body` in `shell` started as an entry leader (`setsid -f`, so its
/// parent becomes pid 1), and waits until it has finished. Returns the
/// shell's pid.
pub fn run_entry_leader(shell: &str, body: &str, dir: &Path) -> u32 {
    run_detached(&[shell, "-c"], shell, body, dir)
}

/// The seed rule's plainest positive: `cat` of `target`'s map, run by a
/// bash entry leader. Returns the shell's pid.
pub fn cat_maps_under_bash(target: &Target, dir: &Path) -> u32 {
    run_entry_leader("bash", &format!("cat {} > /dev/null", target.maps()), dir)
}

/// Like [`run_entry_leader`] for any interpreter given as argv prefix.
pub fn run_detached(prefix: &[&str], shell: &str, body: &str, dir: &Path) -> u32 {
    let done = dir.join(format!("done-{shell}"));
    let pid_file = dir.join(format!("pid-{shell}"));
    let _ = std::fs::remove_file(&done);
    // The sleep lets `setsid -f`'s parent exit, so the shell is reparented to
    // pid 1 before it runs anything.
    let script = format!(
        "echo {} > {}; sleep 0.2; {body}; touch {}",
        own_pid_var(shell),
        pid_file.display(),
        done.display()
    );
    let status = Command::new("setsid")
        .arg("-f")
        .args(prefix)
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running setsid");
    assert!(status.success(), "setsid -f {prefix:?} failed");
    wait_for_file(&done);
    std::fs::read_to_string(&pid_file)
        .expect("shell wrote its pid")
        .trim()
        .parse()
        .expect("pid is a number")
}

/// Elastic's rule file `name` from the corpus of its Linux exec rules
/// (`../shared/testdata/elastic-rules`, or `MAPWATCH_ELASTIC_RULES`).
pub fn elastic_rule_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("MAPWATCH_ELASTIC_RULES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/testdata/elastic-rules")
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "Elastic's rule {} not found: check out shared/ beside the repository or set MAPWATCH_ELASTIC_RULES",
        path.display()
    );
    path
}

pub fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn args_of(alert: &Value) -> Vec<String> {
    alert["process"]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One line per alert with what tells alerts apart (rule, action, reader,
/// read verdict, audit serial): printed before the full documents, which a
/// CI log may cut.
pub fn brief<'a>(alerts: impl IntoIterator<Item = &'a Value>) -> String {
    alerts
        .into_iter()
        .map(|a| {
            format!(
                "\n  {} rule={} action={} pid={} args={:?} file={} target={} confirmed={} paths={} seq={} complete={}",
                a["@timestamp"],
                a["rule"]["name"],
                a["event"]["action"],
                a["process"]["pid"],
                args_of(a),
                a["file"]["path"],
                a["mapwatch"]["target"]["pid"],
                a["mapwatch"]["read"]["confirmed"],
                a["mapwatch"]["read"]["paths"],
                a["mapwatch"]["audit"]["sequence"],
                a["mapwatch"]["audit"]["complete"],
            )
        })
        .collect()
}

/// `python3 -c SCRIPT ARGS...`.
pub fn python(script: &str, args: &[&str]) -> Command {
    let mut command = Command::new("/usr/bin/python3");
    command.arg("-c").arg(script).args(args);
    command
}

/// Walks every mapping of the maps file `argv[1]` with
/// `ioctl(PROCMAP_QUERY)` (Linux 6.11+), as the kernel's selftests do (the
/// covering or next mapping from an address, then from its end), with no
/// read(2); prints how many.
pub const PROCMAP_QUERY_WALK: &str = "import errno, fcntl, os, struct, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\naddr, n = 0, 0\nwhile True:\n    q = bytearray(struct.pack('QQQQQQQQQIIIIQQ', 104, 0x10, addr, *([0] * 12)))\n    try:\n        fcntl.ioctl(fd, 0xC0686611, q, True)\n    except OSError as e:\n        if e.errno == errno.ENOENT:\n            break\n        raise\n    addr = struct.unpack_from('QQ', q, 24)[1]\n    n += 1\nprint(n)\n";

/// Runs [`PROCMAP_QUERY_WALK`] on `maps`; returns how many mappings it got.
pub fn procmap_query_walk(maps: &str) -> u32 {
    let out = python(PROCMAP_QUERY_WALK, &[maps])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "PROCMAP_QUERY: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count")
}

/// A python3 process that forks `workers` children one at a time, reads
/// each one's map, kills and reaps it at once (a forked worker's map, gone
/// right after the read); returns its pid and the workers' pids.
pub fn read_maps_of_workers_that_exit(workers: usize, dir: &Path) -> (u32, Vec<u64>) {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let pids_file = dir.join(format!("workers-{}", RUNS.fetch_add(1, Ordering::Relaxed)));
    let script = format!(
        "import os, signal\npids = []\nfor _ in range({workers}):\n    r, w = os.pipe()\n    pid = os.fork()\n    if pid == 0:\n        os.read(r, 1)\n        os._exit(0)\n    with open(f'/proc/{{pid}}/maps') as f:\n        f.read()\n    os.kill(pid, signal.SIGKILL)\n    os.waitpid(pid, 0)\n    pids.append(pid)\nopen({pids_file:?}, 'w').write(' '.join(map(str, pids)))\n",
        pids_file = pids_file.display().to_string(),
    );
    let mut reader = python(&script, &[]).spawn().expect("python3");
    let pid = reader.id();
    assert!(reader.wait().expect("python3").success());
    let pids: Vec<u64> = std::fs::read_to_string(&pids_file)
        .expect("the workers' pids")
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), workers);
    (pid, pids)
}

/// Writes back into the target's first writable mapping the 16 bytes it
/// holds (harmless, and a write all the same).
pub const WRITE_MEM: &str = r#"
import sys
pid = sys.argv[1]
with open(f"/proc/{pid}/maps") as maps:
    start = next(int(l.split("-")[0], 16) for l in maps if l.split()[1].startswith("rw"))
with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
    mem.seek(start)
    held = mem.read(16)
    mem.seek(start)
    assert mem.write(held) == 16
"#;

/// [`WRITE_MEM`] as a script in `dir`, to run as `python3 SCRIPT PID`.
pub fn write_mem_script(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("write_mem.py");
    std::fs::write(&script, WRITE_MEM).expect("write the script");
    script
}

/// Injection as a test program does it, `python3 SCRIPT MODE PID [ADDR]`:
/// - `poke`: read the target's map, attach with ptrace, read a word of its
///   first writable mapping and poke it back (`PTRACE_POKEDATA`), detach;
/// - `vm`: read the map, then 16 bytes with process_vm_readv, written back
///   with process_vm_writev;
/// - `helper`: read the map, then fork a child that does what `vm` does
///   after the read;
/// - `addr`: read the map and print that address; `poke-at ADDR`: the
///   poke alone, with no read of the map.
///
/// PID `self` is the script's own process.
pub const INJECT: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.process_vm_readv.restype = ctypes.c_ssize_t
libc.process_vm_writev.restype = ctypes.c_ssize_t
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
mode = sys.argv[1]
pid = os.getpid() if sys.argv[2] == "self" else int(sys.argv[2])

def writable():
    with open(f"/proc/{pid}/maps") as maps:
        return next(int(l.split("-")[0], 16) for l in maps if l.split()[1].startswith("rw"))

def check(ok, what):
    if not ok:
        sys.exit(f"{what}: {os.strerror(ctypes.get_errno())}")

def poke(at):
    check(libc.ptrace(16, pid, None, None) == 0, "PTRACE_ATTACH")
    os.waitpid(pid, 0)
    ctypes.set_errno(0)
    word = libc.ptrace(2, pid, ctypes.c_void_p(at), None)
    check(ctypes.get_errno() == 0, "PTRACE_PEEKDATA")
    check(libc.ptrace(5, pid, ctypes.c_void_p(at), ctypes.c_void_p(word & 0xffffffffffffffff)) == 0, "PTRACE_POKEDATA")
    check(libc.ptrace(17, pid, None, None) == 0, "PTRACE_DETACH")

def vm(at):
    buf = ctypes.create_string_buffer(16)
    local = iovec(ctypes.cast(buf, ctypes.c_void_p), 16)
    remote = iovec(ctypes.c_void_p(at), 16)
    check(libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) == 16, "process_vm_readv")
    check(libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) == 16, "process_vm_writev")

if mode == "poke":
    poke(writable())
elif mode == "vm":
    vm(writable())
elif mode == "helper":
    at = writable()
    child = os.fork()
    if child == 0:
        vm(at)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
elif mode == "addr":
    print(writable())
elif mode == "poke-at":
    poke(int(sys.argv[3]))
"#;

/// [`INJECT`] as a script in `dir`, to run as `python3 SCRIPT MODE PID`.
pub fn inject_script(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("inject.py");
    std::fs::write(&script, INJECT).expect("write the script");
    script
}

/// The shipped seed rule with another `rule_id` and query: a test rule in
/// Elastic's format.
pub fn seed_rule_with(rule_id: &str, query: &str) -> String {
    let seed = include_str!("../../rules/proc_maps_discovery.toml");
    let (head, rest) = seed.split_once("query = '''").expect("the seed's query");
    let (_, tail) = rest.split_once("'''").expect("the seed query's end");
    format!("{head}query = '''\n{query}\n'''{tail}").replace(SEED_ID, rule_id)
}

/// The JSON documents of a file, one per line.
pub fn json_documents(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect()
}

/// A child process killed (and reaped) when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The marks of a process's fanotify group, from its fdinfo.
pub struct FanotifyMarks {
    /// Filesystem marks: one per procfs instance watched.
    pub filesystems: usize,
    /// Inode marks: the ignore marks of files that are no layout file.
    pub inodes: usize,
}

/// The marks of `pid`'s (mapwatch's) fanotify group.
pub fn fanotify_marks(pid: u32) -> FanotifyMarks {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("mapwatch's fds");
    for fd in fds.map_while(Result::ok) {
        let link = std::fs::read_link(fd.path()).unwrap_or_default();
        if link.as_os_str() != "anon_inode:[fanotify]" {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .expect("fdinfo");
        // One line per mark, its kind first; the group's flags are none.
        let count = |kind: &str| info.lines().filter(|l| l.starts_with(kind)).count();
        return FanotifyMarks {
            filesystems: count("fanotify sdev:"),
            inodes: count("fanotify ino:"),
        };
    }
    panic!("mapwatch has no fanotify fd")
}

/// Waits (30 s at most) until mapwatch says it watches a procfs of `pid`'s
/// mount namespace ("... in the mount namespace mnt:[N] of pid ...").
pub fn wait_for_procfs_of(mapwatch: &Mapwatch, pid: u32) {
    let wanted = std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .unwrap_or_else(|e| panic!("the mount namespace of pid {pid}: {e}"));
    let wanted = format!("namespace {} of pid", wanted.display());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stderr = mapwatch.stderr();
        if stderr
            .lines()
            .any(|l| l.contains("watching the procfs at") && l.contains(&wanted))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no procfs of pid {pid}'s mount namespace watched within 30 s:\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that every alert follows the published schema
/// (docs/alert.schema.json).
pub fn assert_follow_schema<'a>(alerts: impl IntoIterator<Item = &'a Value>, context: &str) {
    let schema: Value =
        serde_json::from_str(include_str!("../../docs/alert.schema.json")).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    for alert in alerts {
        let errors: Vec<String> = validator
            .iter_errors(alert)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{context}: {errors:#?}\n{alert:#}");
    }
}
