//! Every procfs and every path to one, on the real kernel: reads of another
//! process's map inside a new pid namespace (root and rootless), through a
//! second procfs mount, a procfs over /proc, a bind mount of /proc or of
//! one pid's directory, and a chroot with /proc bound each raise exactly
//! one alert naming the reader and the target by host pid; a process
//! reading its own map raises none. Needs root (audit registration,
//! fanotify), `unshare`, `setpriv` and `chroot` (util-linux, coreutils).

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// A scenario's shell, started in its namespaces: it starts a sibling
/// `sleep <marker>`, says `ready`, waits for `go`, then reads the
/// sibling's map (and its own) as the scenario says, and says `done`.
struct Scenario {
    dir: PathBuf,
    child: KillOnDrop,
    marker: u32,
}

/// How long a scenario's steps may take on a loaded machine.
const STEP: Duration = Duration::from_secs(30);

impl Scenario {
    /// `wrap` runs `sh -c <script>` in the scenario's namespaces;
    /// `setup` runs in the shell first, `read` with `$T` set to the
    /// sibling's pid as the shell sees it.
    fn start(wrap: &[&str], setup: &str, read: &str, marker: u32) -> Scenario {
        let dir = tempfile::Builder::new()
            .prefix("mapwatch-ns-")
            .tempdir()
            .expect("tempdir")
            .keep();
        // A rootless scenario's shell runs as nobody.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
        let d = dir.display();
        let script = format!(
            "{setup}\nsleep {marker} & T=$!\ntouch {d}/ready\n\
             while [ ! -e {d}/go ] && [ ! -e {d}/end ]; do sleep 0.05; done\n\
             if [ -e {d}/go ]; then {read}; cat /proc/self/maps > /dev/null; fi\n\
             touch {d}/done\n\
             while [ ! -e {d}/end ]; do sleep 0.05; done\nkill $T\n"
        );
        let child = Command::new(wrap[0])
            .args(&wrap[1..])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {wrap:?}: {e}"));
        let scenario = Scenario {
            dir,
            child: KillOnDrop(child),
            marker,
        };
        scenario.wait_for("ready");
        scenario
    }

    fn wait_for(&self, name: &str) {
        let path = self.dir.join(name);
        let deadline = Instant::now() + STEP;
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "the scenario did not reach {name:?} within {STEP:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sibling's host pid: the process `sleep <marker>`.
    fn sibling(&self) -> u32 {
        let out = Command::new("pgrep")
            .args(["-x", "-f", &format!("sleep {}", self.marker)])
            .output()
            .expect("pgrep");
        let text = String::from_utf8_lossy(&out.stdout);
        let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        assert_eq!(pids.len(), 1, "one `sleep {}`: {text}", self.marker);
        pids[0]
    }

    /// Lets the shell read, and waits until it has.
    fn go(&self) {
        std::fs::write(self.dir.join("go"), b"").expect("go");
        self.wait_for("done");
    }
}

impl Drop for Scenario {
    /// Lets the shell end (its sibling lives until then, so alerts can
    /// still name it), and waits for it.
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("end"), b"");
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Alerts (any rule) whose target is `pid`.
fn about(alerts: &[Value], pid: u32) -> Vec<&Value> {
    alerts
        .iter()
        .filter(|a| a["mapwatch"]["target"]["pid"] == pid && a["rule"]["id"].is_string())
        .collect()
}

/// Alerts on a reader's own map (target = reader) of the scenario's cats.
fn self_reads(alerts: &[Value], sentinels: &Sentinels) -> Vec<Value> {
    alerts
        .iter()
        .filter(|a| {
            a["rule"]["id"] == EXTENDED_ID
                && !sentinels.raised(a)
                && a["mapwatch"]["target"]["pid"] == a["process"]["pid"]
        })
        .cloned()
        .collect()
}

/// Runs one scenario under a fresh mapwatch and checks its one alert.
fn one_alert_for(name: &str, wrap: &[&str], setup: &str, read: &str, new_instance: bool) {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let marker = 6000 + std::process::id() % 1000;
    let scenario = Scenario::start(wrap, setup, read, marker);
    let sibling = scenario.sibling();
    if new_instance {
        wait_for_procfs_of(&mapwatch, sibling);
    }
    scenario.go();
    let sentinels = mapwatch.sync();
    drop(scenario);
    let alerts = mapwatch.alerts();
    let found = about(&alerts, sibling);
    assert_eq!(
        found.len(),
        1,
        "{name}: one alert on the sibling {sibling}: {}\nstderr:\n{}",
        brief(alerts.iter()),
        mapwatch.stderr()
    );
    let alert = found[0];
    assert_eq!(
        alert["mapwatch"]["read"]["confirmed"], true,
        "{name}: {alert:#}"
    );
    assert_eq!(alert["file"]["name"], "maps", "{name}: {alert:#}");
    assert_eq!(alert["process"]["name"], "cat", "{name}: {alert:#}");
    assert_eq!(
        alert["mapwatch"]["target"]["name"], "sleep",
        "{name}: {alert:#}"
    );
    assert!(
        self_reads(&alerts, &sentinels).is_empty(),
        "{name}: a read of one's own map is no alert: {alerts:#?}"
    );
    assert_follow_schema(&alerts, name);
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{name}: {stderr}");
}

#[test]
fn a_new_pid_namespace_with_its_own_procfs() {
    require_program("unshare", "util-linux");
    one_alert_for(
        "unshare -pf --mount-proc",
        &["unshare", "-pf", "--mount-proc"],
        "",
        "cat /proc/$T/maps > /dev/null",
        true,
    );
}

#[test]
fn a_rootless_user_and_pid_namespace() {
    require_program("setpriv", "util-linux");
    one_alert_for(
        "rootless unshare -Urpf --mount-proc as nobody",
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "unshare",
            "-Urpf",
            "--mount-proc",
        ],
        "",
        "cat /proc/$T/maps > /dev/null",
        true,
    );
}

/// A directory for a scenario's mount points, removed afterwards.
fn mount_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mapwatch-mnt-")
        .tempdir()
        .expect("tempdir")
}

#[test]
fn a_second_procfs_mount() {
    let mnt = mount_dir();
    let p = mnt.path().display();
    one_alert_for(
        "a second procfs",
        &["unshare", "-m"],
        &format!("mount -t proc proc {p}"),
        &format!("cat {p}/$T/maps > /dev/null"),
        true,
    );
}

#[test]
fn a_procfs_mounted_over_proc() {
    one_alert_for(
        "a procfs over /proc",
        &["unshare", "-m"],
        "mount -t proc proc /proc",
        "cat /proc/$T/maps > /dev/null",
        true,
    );
}

#[test]
fn a_bind_mount_of_proc() {
    let mnt = mount_dir();
    let p = mnt.path().display();
    one_alert_for(
        "a bind mount of /proc",
        &["unshare", "-m"],
        &format!("mount --bind /proc {p}"),
        &format!("cat {p}/$T/maps > /dev/null"),
        false,
    );
}

/// One maps file bound under another name (`stat`), after mapwatch last
/// looked at the mounts: the file, not its name, is what counts, and that
/// read hides none of the file's later reads by its own name.
#[test]
fn a_maps_file_bound_under_another_name() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    // No scan until long after the reads: only the read itself can make
    // mapwatch look at the new mount.
    let mapwatch = Mapwatch::start_with(dir.path(), "[fanotify]\nprocfs_scan_ms = 60000\n");
    let mnt = mount_dir();
    let f = mnt.path().join("stat");
    std::fs::write(&f, b"").expect("the mount point");
    let f = f.display();
    let marker = 6500 + std::process::id() % 1000;
    let scenario = Scenario::start(
        &["unshare", "-m"],
        "",
        &format!(
            "mount --bind /proc/$T/maps {f} && cat < {f} > /dev/null; umount {f}; head -c 1 /proc/$T/maps > /dev/null"
        ),
        marker,
    );
    let sibling = scenario.sibling();
    scenario.go();
    mapwatch.sync();
    drop(scenario);
    let alerts = mapwatch.alerts();
    let mut readers: Vec<&str> = about(&alerts, sibling)
        .into_iter()
        .filter(|a| a["rule"]["id"] == EXTENDED_ID)
        .inspect(|a| {
            assert_eq!(a["mapwatch"]["read"]["confirmed"], true, "{a:#}");
            assert_eq!(a["file"]["name"], "maps", "{a:#}");
        })
        .filter_map(|a| a["process"]["name"].as_str())
        .collect();
    readers.sort_unstable();
    assert_eq!(
        readers,
        ["cat", "head"],
        "one extended-rule alert each for the read through the bound file and the later read: {}\nstderr:\n{}",
        brief(alerts.iter()),
        mapwatch.stderr()
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

/// Bound at a directory named like another pid: the mount's root, not the
/// path, says whose map it is.
#[test]
fn a_bind_mount_of_one_pid_directory() {
    let mnt = mount_dir();
    let decoy = mnt.path().join("1");
    std::fs::create_dir(&decoy).expect("mkdir");
    let d = decoy.display();
    one_alert_for(
        "a bind mount of /proc/<pid>",
        &["unshare", "-m"],
        "",
        &format!("mount --bind /proc/$T {d} && cat {d}/maps > /dev/null"),
        false,
    );
}

#[test]
fn a_chroot_with_proc_bound() {
    require_program("chroot", "coreutils");
    let jail = mount_dir();
    let root = jail.path();
    for dir in ["proc", "usr"] {
        std::fs::create_dir(root.join(dir)).expect("mkdir");
    }
    for link in ["bin", "lib", "lib64", "sbin"] {
        std::os::unix::fs::symlink(format!("usr/{link}"), root.join(link)).expect("symlink");
    }
    let r = root.display();
    one_alert_for(
        "a chroot with /proc bound",
        &["unshare", "-m"],
        &format!("mount --bind /usr {r}/usr && mount --bind /proc {r}/proc"),
        &format!("chroot {r} /usr/bin/cat /proc/$T/maps > /dev/null"),
        false,
    );
}

/// Creates and ends `count` pid namespaces, each with its own procfs, as
/// fast as `fork` allows (a Python loop over unshare(2) and mount(2)).
const NAMESPACE_STORM: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWPID = 0x20000, 0x20000000
MS_REC, MS_PRIVATE = 0x4000, 0x40000
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        if libc.unshare(CLONE_NEWNS | CLONE_NEWPID) != 0:
            os._exit(1)
        inner = os.fork()
        if inner == 0:
            libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
            ok = libc.mount(b"proc", b"/proc", b"proc", 0, None) == 0
            os._exit(0 if ok else 2)
        _, status = os.waitpid(inner, 0)
        os._exit(os.waitstatus_to_exitcode(status))
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("a namespace failed: %d" % os.waitstatus_to_exitcode(status))
"#;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// 10,000 pid namespaces with a procfs each, created and gone: once they
/// are, mapwatch holds no more marks and no more memory than before them
/// (one scan later); and a namespace that lives through the storm is
/// watched: its read raises its alert.
#[test]
fn ten_thousand_short_lived_pid_namespaces_leave_nothing_behind() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    // Namespaces of tests before this one may still be going.
    let marks_before = settled_marks(&mapwatch, 1);
    let rss_before = rss_kib(mapwatch.pid());
    // The namespace that lives: started mid-storm, read after it.
    let marker = 7000 + std::process::id() % 1000;
    let mut storm = python(NAMESPACE_STORM, &["5000"])
        .spawn()
        .expect("namespace storm");
    let lives = Scenario::start(
        &["unshare", "-pf", "--mount-proc"],
        "",
        "cat /proc/$T/maps > /dev/null",
        marker,
    );
    assert!(
        storm.wait().expect("storm").success(),
        "the first half of the storm failed"
    );
    let status = python(NAMESPACE_STORM, &["5000"]).status().expect("storm");
    assert!(status.success(), "the second half of the storm failed");
    let sibling = lives.sibling();
    wait_for_procfs_of(&mapwatch, sibling);
    let marks_with_one = settled_marks(&mapwatch, 2);
    let rss_with_one = rss_kib(mapwatch.pid());
    lives.go();
    mapwatch.sync();
    drop(lives);
    let marks_after = settled_marks(&mapwatch, 1);
    let rss_after = rss_kib(mapwatch.pid());
    let alerts = mapwatch.alerts();
    assert_eq!(
        about(&alerts, sibling).len(),
        1,
        "the living namespace's read: {}",
        brief(alerts.iter())
    );
    eprintln!(
        "marks: {marks_before} before, {marks_with_one} with the living namespace, {marks_after} after; VmRSS {rss_before} KiB before, {rss_with_one} KiB with it, {rss_after} KiB after"
    );
    assert_eq!(
        marks_before,
        1,
        "the host's procfs alone is marked at first:\n{}",
        mapwatch.stderr()
    );
    assert_eq!(marks_with_one, 2, "the living namespace's procfs is marked");
    assert_eq!(
        marks_after, 1,
        "the host's procfs alone is marked at the end"
    );
    // What 10,000 namespaces would leave, kept, is far above this: the
    // allowance is the allocator's and the detector's own warm-up.
    assert!(
        rss_after <= rss_before + 2048,
        "VmRSS grew from {rss_before} to {rss_after} KiB"
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

/// The marks once a scan has seen what is mounted now: waits until the
/// group holds `expected` (the kernel drops a superblock's mark with it).
fn settled_marks(mapwatch: &Mapwatch, expected: usize) -> usize {
    let deadline = Instant::now() + STEP;
    loop {
        let marks = fanotify_marks(mapwatch.pid()).filesystems;
        if marks == expected || Instant::now() > deadline {
            return marks;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Beyond `max_procfs` (the host's procfs aside), a procfs found is not
/// watched, and that is said:
/// a `mapwatch.health` document counts it (`procfs_unwatched`).
#[test]
fn a_procfs_over_max_procfs_is_reported_not_watched() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start_with(dir.path(), "[fanotify]\nmax_procfs = 1\n");
    // The host's procfs, marked at start, is not counted: two more go
    // over a maximum of one.
    let marker = 5000 + std::process::id() % 1000;
    let scenarios: Vec<Scenario> = (0..2)
        .map(|i| {
            Scenario::start(
                &["unshare", "-pf", "--mount-proc"],
                "",
                "cat /proc/$T/maps > /dev/null",
                marker + i,
            )
        })
        .collect();
    let health = mapwatch.wait_for_alert("a health report of an unwatched procfs", |a| {
        a["mapwatch"]["health"]["lost"]["procfs_unwatched"].as_u64() >= Some(1)
    });
    assert_eq!(health["event"]["dataset"], "mapwatch.health", "{health:#}");
    assert!(
        mapwatch.stderr().contains("not watched"),
        "{}",
        mapwatch.stderr()
    );
    assert_eq!(
        fanotify_marks(mapwatch.pid()).filesystems,
        2,
        "the host's procfs and one more"
    );
    drop(scenarios);
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}
