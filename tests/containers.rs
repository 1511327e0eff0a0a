//! A real container runtime: Debian's podman (with runc: crun refuses this
//! host's hybrid cgroups) running a Debian rootfs made with debootstrap.
//! Reads of maps inside the container raise one confirmed alert each,
//! naming the container (`container.id` as `podman inspect` gives it, the
//! runtime, the name) and the host pids; the host reading a container
//! process's map names the target's container. Needs root, podman, runc
//! and debootstrap (with Debian's mirror reachable, the first time).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const STEP: Duration = Duration::from_secs(60);

/// A minimal Debian rootfs, made once per machine (debootstrap takes
/// about half a minute) and kept for later runs.
fn rootfs() -> PathBuf {
    let root = PathBuf::from("/var/tmp/mapwatch-test-rootfs");
    if root.join("usr/bin/cat").exists() {
        return root;
    }
    require_program("debootstrap", "debootstrap");
    let building = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&building);
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&building)
        .arg("http://deb.debian.org/debian")
        .output()
        .expect("running debootstrap");
    assert!(
        out.status.success(),
        "debootstrap could not make the container's rootfs (is deb.debian.org reachable?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&building, &root).expect("rootfs in place");
    root
}

/// podman as this machine runs it: runc, cgroupfs, no systemd or journal.
fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args([
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
    ]);
    command
}

/// A running container, removed on drop.
struct Container {
    name: String,
}

impl Container {
    fn run(name: &str, rootfs: &Path, script: &str) -> Container {
        let _ = podman().args(["rm", "-f", "-t", "0", name]).output();
        let out = podman()
            .args(["run", "-d", "--name", name, "--network", "none"])
            .args([
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=32768:32768",
            ])
            .arg("--rootfs")
            .arg(rootfs)
            .args(["/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("running podman");
        assert!(
            out.status.success(),
            "podman run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Container {
            name: name.to_owned(),
        }
    }

    fn inspect(&self, format: &str) -> String {
        let out = podman()
            .args(["inspect", "-f", format, &self.name])
            .output()
            .expect("podman inspect");
        assert!(out.status.success(), "podman inspect {}", self.name);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
    }
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + STEP;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {STEP:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid_of(pattern: &str) -> u32 {
    let out = Command::new("pgrep")
        .args(["-x", "-f", pattern])
        .output()
        .expect("pgrep");
    let text = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(pids.len(), 1, "one {pattern:?}: {text}");
    pids[0]
}

/// The test's alerts by reader name and target pid.
fn by(alerts: &[Value], reader: &str, target: u32) -> Vec<Value> {
    alerts
        .iter()
        .filter(|a| {
            a["rule"]["id"].is_string()
                && a["process"]["name"] == reader
                && a["mapwatch"]["target"]["pid"] == target
        })
        .cloned()
        .collect()
}

#[test]
fn reads_inside_a_podman_container_name_the_container() {
    require_root();
    require_program("podman", "podman");
    require_program("runc", "runc");
    let rootfs = rootfs();
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());

    let marker = 8000 + std::process::id() % 1000;
    let name = format!("mapwatch-test-{}", std::process::id());
    // The container and the test meet in a directory of the rootfs.
    let meet = format!("/tmp/{name}");
    let host_meet = rootfs.join(meet.trim_start_matches('/'));
    let _ = std::fs::remove_dir_all(&host_meet);
    std::fs::create_dir_all(&host_meet).expect("meeting directory");
    let script = format!(
        "sleep {marker} & S=$!\necho $S > {meet}/sibling\ntouch {meet}/ready\n\
         while [ ! -e {meet}/go ]; do sleep 0.05; done\n\
         cat /proc/$S/maps > /dev/null\nhead -1 /proc/$S/maps > /dev/null\n\
         cat < /proc/1/maps > /dev/null\ncat /proc/self/maps > /dev/null\n\
         touch {meet}/done\nwhile [ ! -e {meet}/end ]; do sleep 0.05; done\n"
    );
    let container = Container::run(&name, &rootfs, &script);
    wait_for(&host_meet.join("ready"));
    let id = container.inspect("{{.Id}}");
    let init = container
        .inspect("{{.State.Pid}}")
        .parse::<u32>()
        .expect("the container's init pid");
    let sibling = pid_of(&format!("sleep {marker}"));
    let sibling_in_container: u64 = std::fs::read_to_string(host_meet.join("sibling"))
        .expect("the sibling's pid in the container")
        .trim()
        .parse()
        .expect("a pid");
    wait_for_procfs_of(&mapwatch, sibling);
    std::fs::write(host_meet.join("go"), b"").expect("go");
    wait_for(&host_meet.join("done"));
    // The host reads a container process's map.
    let host_cat = Command::new("cat")
        .arg(format!("/proc/{sibling}/maps"))
        .stdout(Stdio::null())
        .status()
        .expect("cat on the host");
    assert!(host_cat.success());
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    std::fs::write(host_meet.join("end"), b"").expect("end");
    drop(container);
    let _ = std::fs::remove_dir_all(&host_meet);

    let inside = [
        ("cat", sibling, sibling_in_container),
        ("head", sibling, sibling_in_container),
        ("cat", init, 1),
    ];
    for (reader, target, ns_pid) in inside {
        let found: Vec<Value> = by(&alerts, reader, target)
            .into_iter()
            .filter(|a| a["container"]["id"].is_string())
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one alert for {reader} reading {target}'s map in the container: {}\nstderr:\n{}",
            brief(alerts.iter()),
            mapwatch.stderr()
        );
        let alert = &found[0];
        assert_eq!(alert["mapwatch"]["read"]["confirmed"], true, "{alert:#}");
        assert_eq!(alert["container"]["id"], id.as_str(), "{alert:#}");
        assert_eq!(alert["container"]["runtime"], "podman", "{alert:#}");
        assert_eq!(alert["container"]["name"], name.as_str(), "{alert:#}");
        assert_eq!(
            alert["mapwatch"]["target"]["container"]["id"],
            id.as_str(),
            "{alert:#}"
        );
        assert_eq!(
            alert["process"]["entry_leader"]["entry_meta"]["type"], "container",
            "{alert:#}"
        );
        // The pid the reader's namespace gives its target, beside the host's.
        assert_eq!(
            alert["mapwatch"]["target"]["ns_pid"], ns_pid,
            "the target's pid in the container: {alert:#}"
        );
    }
    let from_host: Vec<Value> = by(&alerts, "cat", sibling)
        .into_iter()
        .filter(|a| a["container"].is_null())
        .collect();
    assert_eq!(
        from_host.len(),
        1,
        "the host's read of the container's process: {}",
        brief(alerts.iter())
    );
    assert_eq!(
        from_host[0]["mapwatch"]["target"]["container"]["id"],
        id.as_str(),
        "{:#}",
        from_host[0]
    );
    assert_follow_schema(&alerts, "a container's alerts");
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}
