//! Alerts through a real rsyslog (from the distribution, started here on its
//! own unix socket, UDP and TCP ports): every alert arrives once, as one
//! message, with the same document the JSON file has; a restart of rsyslog
//! loses nothing on the unix socket or TCP. Needs root.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mapwatch::sink::syslog::document_of;
use serde_json::Value;
use support::*;

struct Rsyslog {
    dir: PathBuf,
    child: Option<Child>,
    udp: u16,
    tcp: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Rsyslog {
    fn start(dir: &Path) -> Rsyslog {
        require_program("rsyslogd", "rsyslog");
        let mut r = Rsyslog {
            dir: dir.to_owned(),
            child: None,
            udp: free_port(),
            tcp: free_port(),
        };
        r.restart();
        r
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("log.sock")
    }

    fn output(&self, input: &str) -> PathBuf {
        self.dir.join(format!("{input}.log"))
    }

    fn restart(&mut self) {
        self.stop();
        let work = self.dir.join("work");
        std::fs::create_dir_all(&work).expect("rsyslog work dir");
        let conf = format!(
            r#"global(workDirectory="{work}" maxMessageSize="64k")
module(load="imuxsock" SysSock.Use="off")
module(load="imudp")
module(load="imtcp")
template(name="msgonly" type="string" string="%msg%\n")
input(type="imuxsock" Socket="{sock}" UseSpecialParser="off" ParseHostname="on" Ruleset="unix")
input(type="imudp" Address="127.0.0.1" Port="{udp}" Ruleset="udp")
input(type="imtcp" Address="127.0.0.1" Port="{tcp}" Ruleset="tcp")
ruleset(name="unix") {{ action(type="omfile" File="{unix_out}" Template="msgonly") }}
ruleset(name="udp") {{ action(type="omfile" File="{udp_out}" Template="msgonly") }}
ruleset(name="tcp") {{ action(type="omfile" File="{tcp_out}" Template="msgonly") }}
"#,
            work = work.display(),
            sock = self.socket().display(),
            udp = self.udp,
            tcp = self.tcp,
            unix_out = self.output("unix").display(),
            udp_out = self.output("udp").display(),
            tcp_out = self.output("tcp").display(),
        );
        let conf_path = self.dir.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).expect("rsyslog config");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(self.dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting rsyslogd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(self.socket().exists()
            && std::net::TcpStream::connect(("127.0.0.1", self.tcp)).is_ok())
        {
            assert!(Instant::now() < deadline, "rsyslogd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    /// The documents rsyslog wrote for `input`, each from one line.
    fn documents(&self, input: &str) -> Vec<Value> {
        std::fs::read_to_string(self.output(input))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                document_of(l)
                    .unwrap_or_else(|| panic!("{input}: a line that is not one alert: {l}"))
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn alerts_in_file(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d["event"]["kind"] == "alert")
        .collect()
}

/// `count` new targets whose maps one bash entry leader reads with cat;
/// the targets live as long as the returned handles.
fn cat_maps_of_new_targets(count: usize, dir: &Path) -> Vec<Target> {
    let targets: Vec<Target> = (0..count).map(|_| Target::spawn()).collect();
    let body: Vec<String> = targets
        .iter()
        .map(|t| format!("cat {} > /dev/null", t.maps()))
        .collect();
    run_entry_leader("bash", &body.join("; "), dir);
    targets
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const HOSTILE: &str = "/proc/1/maps\nJan  1 00:00:00 host sshd[1]: Accepted password for root";

#[test]
fn every_alert_reaches_rsyslog_once_over_each_transport_and_format() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let rsyslog = Rsyslog::start(dir.path());
    let addresses = [
        ("unix", format!("unix:{}", rsyslog.socket().display())),
        ("udp", format!("udp:127.0.0.1:{}", rsyslog.udp)),
        ("tcp", format!("tcp:127.0.0.1:{}", rsyslog.tcp)),
    ];
    for format in ["rfc5424", "rfc3164"] {
        for (input, address) in &addresses {
            let run = dir.path().join(format!("{format}-{input}"));
            std::fs::create_dir_all(&run).expect("run dir");
            let alerts_file = run.join("alerts.json");
            let extra = format!(
                "[output]\njson_file = \"{}\"\n[syslog]\nenabled = true\naddress = \"{address}\"\nformat = \"{format}\"\n",
                alerts_file.display()
            );
            let before = rsyslog.documents(input).len();
            let mapwatch = Mapwatch::start_service(&run, &extra);
            let targets: Vec<Target> = (0..3).map(|_| Target::spawn()).collect();
            let mut body: Vec<String> = targets
                .iter()
                .map(|t| format!("cat {} > /dev/null", t.maps()))
                .collect();
            // The hostile text rides along as a second argument of a matching cat.
            body.push(format!(
                "cat {} $'{}' > /dev/null 2>&1",
                targets[0].maps(),
                HOSTILE.replace('\n', "\\n")
            ));
            run_entry_leader("bash", &body.join("; "), &run);
            wait_until("4 alerts in the JSON file", || {
                alerts_in_file(&alerts_file).len() >= 4
            });
            wait_until("4 alerts in rsyslog", || {
                rsyslog.documents(input).len() >= before + 4
            });
            std::thread::sleep(Duration::from_millis(300));
            let (status, stderr) = mapwatch.terminate();
            assert!(status.success(), "{stderr}");

            let from_file = alerts_in_file(&alerts_file);
            let from_syslog: Vec<Value> = rsyslog.documents(input).split_off(before);
            assert_eq!(from_file.len(), 4, "{format}/{input}: {from_file:#?}");
            assert_eq!(
                from_syslog, from_file,
                "{format}/{input}: syslog and the JSON file carry the same documents"
            );
            let hostile: Vec<&Value> = from_syslog
                .iter()
                .filter(|d| d["process"]["args"][2] == HOSTILE)
                .collect();
            assert_eq!(
                hostile.len(),
                1,
                "{format}/{input}: the hostile argument arrives whole: {from_syslog:#?}"
            );
            let raw = std::fs::read_to_string(rsyslog.output(input)).expect("rsyslog output");
            let this_run: Vec<&str> = raw
                .lines()
                .filter(|l| !l.trim().is_empty())
                .skip(before)
                .collect();
            let lines = this_run
                .iter()
                .filter(|l| l.contains("Accepted password"))
                .count();
            assert_eq!(
                lines, 1,
                "{format}/{input}: one message for the hostile argument:\n{raw}"
            );
            assert!(
                !this_run.iter().any(|l| l.starts_with("Jan  1")),
                "{format}/{input}: no forged line:\n{raw}"
            );
        }
    }
}

#[test]
fn a_restart_of_rsyslog_loses_nothing_over_unix_or_tcp() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rsyslog = Rsyslog::start(dir.path());
    for input in ["unix", "tcp"] {
        let address = match input {
            "unix" => format!("unix:{}", rsyslog.socket().display()),
            _ => format!("tcp:127.0.0.1:{}", rsyslog.tcp),
        };
        let run = dir.path().join(format!("restart-{input}"));
        std::fs::create_dir_all(&run).expect("run dir");
        let alerts_file = run.join("alerts.json");
        let extra = format!(
            "[output]\njson_file = \"{}\"\n[syslog]\nenabled = true\naddress = \"{address}\"\n",
            alerts_file.display()
        );
        let mapwatch = Mapwatch::start_service(&run, &extra);
        let round = |n: usize| {
            let _targets = cat_maps_of_new_targets(3, &run);
            wait_until("the round's alerts in the JSON file", || {
                alerts_in_file(&alerts_file).len() >= n
            });
        };
        round(3);
        rsyslog.stop();
        round(6);
        rsyslog.restart();
        round(9);
        wait_until("9 alerts in rsyslog", || {
            rsyslog.documents(input).len() >= 9
        });
        let (status, stderr) = mapwatch.terminate();
        assert!(status.success(), "{stderr}");
        assert_eq!(
            rsyslog.documents(input),
            alerts_in_file(&alerts_file),
            "{input}: nothing lost, nothing twice"
        );
    }
}

/// A tmpfs of a few KiB mounted for the test, unmounted when dropped.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(path: &Path) -> TinyDisk {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16k,mode=0700", "mapwatch-test"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs (needs root)");
        TinyDisk(path.to_owned())
    }

    /// Fills the disk with a file of its own; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let block = [0u8; 4096];
        while file.write_all(&block).and_then(|()| file.flush()).is_ok() {}
        filler
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_under_the_alert_file_is_reported_and_syslog_keeps_working() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let rsyslog = Rsyslog::start(dir.path());
    let disk = TinyDisk::mount(&dir.path().join("disk"));
    let alerts_file = disk.0.join("alerts.json");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).expect("run dir");
    let extra = format!(
        "[output]\njson_file = \"{}\"\n[syslog]\nenabled = true\naddress = \"unix:{}\"\n",
        alerts_file.display(),
        rsyslog.socket().display()
    );
    let mapwatch = Mapwatch::start_service(&run, &extra);
    let filler = disk.fill();
    let _targets = cat_maps_of_new_targets(3, &run);
    wait_until("3 alerts and a health report in rsyslog", || {
        let docs = rsyslog.documents("unix");
        docs.iter()
            .filter(|d| d["event"]["action"] == "exec")
            .count()
            >= 3
            && docs
                .iter()
                .any(|d| d["mapwatch"]["health"]["lost"]["alert_file_failures"].as_u64() >= Some(3))
    });
    let stderr = mapwatch.stderr();
    assert!(stderr.contains("No space left on device"), "{stderr}");

    // Space again: the file works again, the daemon never stopped.
    std::fs::remove_file(&filler).expect("free the disk");
    let after = Target::spawn();
    run_entry_leader("bash", &format!("cat {} > /dev/null", after.maps()), &run);
    wait_until("the next alert in the file", || {
        alerts_in_file(&alerts_file)
            .iter()
            .any(|d| d["file"]["path"] == after.maps().as_str())
    });
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("works again"), "{stderr}");
    let in_syslog = rsyslog
        .documents("unix")
        .iter()
        .filter(|d| d["event"]["action"] == "exec")
        .count();
    assert_eq!(in_syslog, 4, "syslog got every alert");
}
