//! Kernel-confirmed reads on the real kernel: fanotify on /proc confirms the
//! seed rule's exec alerts and catches the reads no argument names. Needs
//! root (audit registration and CAP_SYS_ADMIN for fanotify).

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

fn by_rule<'a>(alerts: &'a [Value], id: &str) -> Vec<&'a Value> {
    alerts.iter().filter(|a| a["rule"]["id"] == id).collect()
}

/// Alerts of `rule` about `target`'s maps, the sync sentinel left out.
fn about<'a>(alerts: &'a [Value], id: &str, target: &Target) -> Vec<&'a Value> {
    by_rule(alerts, id)
        .into_iter()
        .filter(|a| a["mapwatch"]["target"]["pid"] == target.pid())
        .collect()
}

#[test]
fn cat_of_a_live_process_map_is_confirmed() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    assert!(
        mapwatch.stderr().contains("read confirmation on"),
        "{}",
        mapwatch.stderr()
    );
    let target = Target::spawn();
    cat_maps_under_bash(&target, dir.path());
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    let seed = about(&alerts, SEED_ID, &target);
    assert_eq!(seed.len(), 1, "{alerts:#?}");
    assert_eq!(
        seed[0]["mapwatch"]["read"]["confirmed"], true,
        "{:#}",
        seed[0]
    );
    assert_eq!(
        seed[0]["mapwatch"]["read"]["paths"][0],
        target.maps().as_str()
    );
    assert_eq!(seed[0]["mapwatch"]["target"]["name"], "sleep");
    assert_eq!(
        seed[0]["mapwatch"]["target"]["executable"],
        "/usr/bin/sleep"
    );
    assert!(
        about(&alerts, EXTENDED_ID, &target).is_empty(),
        "one read, one alert: {alerts:#?}"
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

/// Paths through procfs's own links (`/proc/self/root/…`,
/// `/proc/thread-self/../../../…`, `/proc/self/cwd/…`) name the target as
/// the kernel resolves them: each cat's alert is confirmed by its read,
/// which it claims, so no extended alert repeats it.
#[test]
fn paths_through_procfs_links_are_confirmed_once() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let targets: Vec<Target> = (0..3).map(|_| Target::spawn()).collect();
    let paths = [
        format!("/proc/self/root/proc/{}/maps", targets[0].pid()),
        format!("/proc/thread-self/../../../{}/maps", targets[1].pid()),
        "/proc/self/cwd/maps".to_owned(),
    ];
    run_entry_leader(
        "bash",
        &format!(
            "cat {} > /dev/null; cat {} > /dev/null; cd /proc/{} && cat {} > /dev/null",
            paths[0],
            paths[1],
            targets[2].pid(),
            paths[2]
        ),
        dir.path(),
    );
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    for (target, path) in targets.iter().zip(&paths) {
        let seed = about(&alerts, SEED_ID, target);
        assert_eq!(seed.len(), 1, "{path}: {alerts:#?}");
        assert_eq!(
            seed[0]["mapwatch"]["read"]["confirmed"], true,
            "{path}: {:#}",
            seed[0]
        );
        assert!(
            about(&alerts, EXTENDED_ID, target).is_empty(),
            "{path}: the read is the seed alert's: {alerts:#?}"
        );
    }
}

/// A thread reading its own process's map by its thread id
/// (`/proc/<tid>/maps`, which the kernel serves as the process's map) is a
/// read of its own map: no extended alert. The same thread then reads
/// another process's map, which must raise one, and stays alive until that
/// alert is out: mapwatch asks which process a thread id belongs to when it
/// takes the read, and a thread gone by then can no longer be told (a
/// limit, issue 16).
#[test]
fn a_thread_reading_its_own_map_by_its_tid_raises_no_extended_alert() {
    require_program("python3", "python3");
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let target = Target::spawn();
    let go = dir.path().join("go");
    let script = format!(
        "import os, threading, time\ndef read():\n    tid = threading.get_native_id()\n    assert tid != os.getpid()\n    open(f'/proc/{{tid}}/maps').read()\n    open('/proc/{other}/maps').read()\n    while not os.path.exists({go:?}):\n        time.sleep(0.01)\nt = threading.Thread(target=read)\nt.start()\nt.join()\n",
        other = target.pid(),
        go = go.display().to_string(),
    );
    let mut reader = python(&script, &[]).spawn().expect("python3");
    let pid = reader.id();
    mapwatch.wait_for_alert("the thread's read of another process's map", |a| {
        a["rule"]["id"] == EXTENDED_ID && a["process"]["pid"] == pid
    });
    std::fs::write(&go, "").expect("the go file");
    assert!(reader.wait().expect("python3").success());
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    let by_reader: Vec<&Value> = by_rule(&alerts, EXTENDED_ID)
        .into_iter()
        .filter(|a| a["process"]["pid"] == pid)
        .collect();
    assert_eq!(
        by_reader.len(),
        1,
        "only the read of another process's map: {by_reader:#?}"
    );
    assert_eq!(by_reader[0]["mapwatch"]["target"]["pid"], target.pid());
}

/// A reader that reads long after its exec (blocked on a FIFO first, as a
/// reader the scheduler runs late would be): its alert waits while it runs,
/// and the read confirms it. A verdict at the end of the window alone would
/// have called the read that came unconfirmed.
#[test]
fn a_reader_that_reads_after_the_window_is_still_confirmed() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let target = Target::spawn();
    let gate = dir.path().join("gate");
    let made = Command::new("mkfifo").arg(&gate).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", gate.display());
    // cat opens the FIFO first and blocks there until a writer comes: four
    // confirmation windows (250 ms) and more after its exec, whatever the
    // load. Opening blocks until cat has opened its end; closing lets it
    // go on to the map.
    let writer = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(1));
            drop(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&gate)
                    .expect("the FIFO's writing end"),
            );
        })
    };
    run_entry_leader(
        "bash",
        &format!("cat {} {} > /dev/null", gate.display(), target.maps()),
        dir.path(),
    );
    writer.join().expect("the FIFO's writer");
    let seed = mapwatch.wait_for_alert("the late reader's alert", |a| {
        a["rule"]["id"] == SEED_ID && a["mapwatch"]["target"]["pid"] == target.pid()
    });
    assert_eq!(seed["mapwatch"]["read"]["confirmed"], true, "{seed:#}");
    assert_eq!(seed["mapwatch"]["read"]["paths"][0], target.maps().as_str());
    mapwatch.sync();
    assert!(
        about(&mapwatch.alerts(), EXTENDED_ID, &target).is_empty(),
        "one read, one alert"
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn refused_or_impossible_reads_are_unconfirmed() {
    let _lock = audit_lock();
    require_program("setpriv", "util-linux");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    // nobody may not read root's maps: the open fails with EACCES.
    let target = Target::spawn();
    let script = dir.path().join("refused.sh");
    std::fs::write(
        &script,
        format!("cat {} > /dev/null 2>&1; true\n", target.maps()),
    )
    .expect("script");
    let status = Command::new("setsid")
        .args([
            "-f",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
        ])
        .arg(&script)
        .status()
        .expect("setsid setpriv");
    assert!(status.success());
    // A pid that does not exist.
    run_entry_leader(
        "bash",
        "cat /proc/4000000/maps 2>/dev/null; true",
        dir.path(),
    );
    let refused = mapwatch.wait_for_alert("the refused read", |a| {
        a["file"]["path"] == target.maps().as_str()
    });
    assert_eq!(
        refused["mapwatch"]["read"]["confirmed"], false,
        "{refused:#}"
    );
    assert_eq!(refused["process"]["user"]["id"], "65534");
    let missing = mapwatch.wait_for_alert("the missing pid", |a| {
        a["file"]["path"] == "/proc/4000000/maps"
    });
    assert_eq!(
        missing["mapwatch"]["read"]["confirmed"], false,
        "{missing:#}"
    );
    assert_eq!(missing["mapwatch"]["read"]["paths"], serde_json::json!([]));
    mapwatch.sync();
    assert!(
        by_rule(&mapwatch.alerts(), EXTENDED_ID).is_empty(),
        "nothing was read"
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn reads_no_argument_names_raise_one_extended_alert_each() {
    let _lock = audit_lock();
    require_program("python3", "python3");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let kitty = dir.path().join("kitty");
    std::fs::copy("/usr/bin/cat", &kitty).expect("copy cat to kitty");
    let cases: Vec<(&str, Target, String)> = vec![
        ("cat", Target::spawn(), "cat < {maps} > /dev/null".into()),
        (
            "cat",
            Target::spawn(),
            "cd /proc/{pid} && cat maps > /dev/null".into(),
        ),
        (
            "python3",
            Target::spawn(),
            "python3 -c \"open('{maps}').read()\"".into(),
        ),
        (
            "kitty",
            Target::spawn(),
            format!("{} {{maps}} > /dev/null", kitty.display()),
        ),
    ];
    for (_, target, body) in &cases {
        let body = body
            .replace("{maps}", &target.maps())
            .replace("{pid}", &target.pid().to_string());
        run_entry_leader("bash", &body, dir.path());
    }
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    for (reader, target, body) in &cases {
        let extended = about(&alerts, EXTENDED_ID, target);
        assert_eq!(extended.len(), 1, "`{body}`: {alerts:#?}");
        let a = extended[0];
        assert_eq!(a["process"]["name"], *reader, "`{body}`: {a:#}");
        assert!(a["process"]["pid"].as_u64().is_some_and(|p| p > 1), "{a:#}");
        assert_eq!(a["mapwatch"]["target"]["name"], "sleep", "{a:#}");
        assert_eq!(a["file"]["path"], target.maps().as_str(), "{a:#}");
        assert_eq!(a["event"]["category"][0], "file");
        assert_eq!(a["event"]["action"], "read");
        assert_eq!(a["mapwatch"]["read"]["confirmed"], true);
        assert_eq!(a["process"]["entry_leader"]["name"], "bash", "{a:#}");
        assert!(
            about(&alerts, SEED_ID, target).is_empty(),
            "`{body}` is not the seed rule's: {alerts:#?}"
        );
    }
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

/// Reads 16 bytes of the target's memory at the start of its first
/// readable mapping, as a dump does (a read of unmapped memory fails, and a
/// failed read is no access to fanotify).
const READ_MEM: &str = r#"
import sys
pid = sys.argv[1]
with open(f"/proc/{pid}/maps") as maps:
    start = next(int(l.split("-")[0], 16) for l in maps if l.split()[1].startswith("r"))
with open(f"/proc/{pid}/mem", "rb") as mem:
    mem.seek(start)
    assert len(mem.read(16)) == 16
"#;

#[test]
fn reads_of_the_other_layout_files_and_of_mem_raise_one_alert_each() {
    let _lock = audit_lock();
    require_program("python3", "python3");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let script = dir.path().join("read_mem.py");
    std::fs::write(&script, READ_MEM).expect("write the script");
    // (reader, file.name, rule, command with {dir} for /proc/<target>)
    let cases: Vec<(&str, &str, &str, String)> = vec![
        ("cat", "smaps", LAYOUT_ID, "cat {dir}/smaps".into()),
        (
            "cat",
            "smaps_rollup",
            LAYOUT_ID,
            "cat {dir}/smaps_rollup".into(),
        ),
        ("cat", "numa_maps", LAYOUT_ID, "cat {dir}/numa_maps".into()),
        ("ls", "map_files", LAYOUT_ID, "ls {dir}/map_files".into()),
        (
            "dd",
            "pagemap",
            LAYOUT_ID,
            "dd if={dir}/pagemap bs=8 count=4 status=none".into(),
        ),
        (
            "python3",
            "mem",
            MEM_ID,
            format!("python3 {} {{pid}}", script.display()),
        ),
    ];
    let targets: Vec<Target> = cases.iter().map(|_| Target::spawn()).collect();
    for ((_, _, _, command), target) in cases.iter().zip(&targets) {
        let command = command
            .replace("{dir}", &format!("/proc/{}", target.pid()))
            .replace("{pid}", &target.pid().to_string());
        run_entry_leader("bash", &format!("{command} > /dev/null"), dir.path());
    }
    // Own reads: none.
    run_entry_leader(
        "bash",
        &format!(
            "cat /proc/self/smaps /proc/self/numa_maps > /dev/null; ls /proc/self/map_files > /dev/null; python3 {} self",
            script.display()
        ),
        dir.path(),
    );
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    for ((reader, name, rule, command), target) in cases.iter().zip(&targets) {
        let mine = about(&alerts, rule, target);
        assert_eq!(mine.len(), 1, "`{command}`: {alerts:#?}");
        let a = mine[0];
        assert_eq!(a["process"]["name"], *reader, "`{command}`: {a:#}");
        assert_eq!(a["file"]["name"], *name, "`{command}`: {a:#}");
        assert_eq!(a["mapwatch"]["target"]["name"], "sleep", "{a:#}");
        assert_eq!(a["event"]["action"], "read", "{a:#}");
        assert_eq!(a["process"]["entry_leader"]["name"], "bash", "{a:#}");
        assert!(
            a["message"]
                .as_str()
                .is_some_and(|m| m.contains("of sleep (pid")),
            "{a:#}"
        );
        let other = if *rule == LAYOUT_ID {
            MEM_ID
        } else {
            LAYOUT_ID
        };
        assert!(
            about(&alerts, other, target).is_empty(),
            "`{command}`: {alerts:#?}"
        );
    }
    let own: Vec<&Value> = [LAYOUT_ID, MEM_ID]
        .iter()
        .flat_map(|id| by_rule(&alerts, id))
        .filter(|a| a["mapwatch"]["target"]["pid"] == a["process"]["pid"])
        .collect();
    assert!(own.is_empty(), "own reads raised: {own:#?}");
    let layout_or_mem = by_rule(&alerts, LAYOUT_ID).len() + by_rule(&alerts, MEM_ID).len();
    assert_eq!(layout_or_mem, cases.len(), "{alerts:#?}");
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_write_into_another_process_memory_raises_one_critical_alert() {
    let _lock = audit_lock();
    require_program("python3", "python3");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let script = write_mem_script(dir.path());
    let target = Target::spawn();
    run_entry_leader(
        "bash",
        &format!("python3 {} {}", script.display(), target.pid()),
        dir.path(),
    );
    // Its own memory: no alert.
    run_entry_leader(
        "bash",
        &format!("python3 {} self", script.display()),
        dir.path(),
    );
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    let writes = by_rule(&alerts, MEM_WRITE_ID);
    assert_eq!(writes.len(), 1, "{alerts:#?}");
    let w = writes[0];
    assert_eq!(w["mapwatch"]["target"]["pid"], target.pid(), "{w:#}");
    assert_eq!(w["mapwatch"]["target"]["name"], "sleep", "{w:#}");
    assert_eq!(w["process"]["name"], "python3", "{w:#}");
    assert_eq!(w["file"]["name"], "mem", "{w:#}");
    assert_eq!(w["event"]["action"], "write", "{w:#}");
    assert_eq!(w["event"]["type"][0], "change", "{w:#}");
    assert_eq!(w["mapwatch"]["rule"]["severity"], "critical", "{w:#}");
    let message = w["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "wrote into /proc/{}/mem, the memory of sleep",
            target.pid()
        )),
        "{message}"
    );
    // The steps before it are alerts of their own: the map, then the read.
    assert_eq!(about(&alerts, EXTENDED_ID, &target).len(), 1, "{alerts:#?}");
    assert_eq!(about(&alerts, MEM_ID, &target).len(), 1, "{alerts:#?}");
    // With mapwatch stopped, the read and the write wait in the queue,
    // which merges them into one event: both are still reported.
    let paused = Target::spawn();
    mapwatch.signal(nix::sys::signal::Signal::SIGSTOP);
    run_entry_leader(
        "bash",
        &format!("python3 {} {}", script.display(), paused.pid()),
        dir.path(),
    );
    mapwatch.signal(nix::sys::signal::Signal::SIGCONT);
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    for rule in [MEM_ID, MEM_WRITE_ID] {
        let mine = about(&alerts, rule, &paused);
        assert_eq!(mine.len(), 1, "{rule} after the pause: {alerts:#?}");
        assert_eq!(mine[0]["file"]["name"], "mem", "{:#}", mine[0]);
    }
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

/// The read, write, call and chain rules' alerts about `target`.
fn layout_alerts<'a>(alerts: &'a [Value], target: &Target) -> Vec<&'a Value> {
    [
        EXTENDED_ID,
        LAYOUT_ID,
        MEM_ID,
        MEM_WRITE_ID,
        PTRACE_ID,
        VM_READ_ID,
        VM_WRITE_ID,
        CHAIN_ID,
    ]
    .iter()
    .flat_map(|id| about(alerts, id, target))
    .collect()
}

#[test]
fn packaged_debuggers_tracers_and_profilers_are_exceptions_and_copies_are_not() {
    let _lock = audit_lock();
    require_program("gdb", "gdb");
    require_program("strace", "strace");
    require_program("perf", "linux-perf");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    // It reads the map, then the memory, then writes a byte back.
    let gdb = "gdb -p {pid} -batch -ex 'x/4xb $sp' -ex 'set var {char}$sp = {char}$sp'";
    let packaged = [
        gdb.to_owned(),
        "timeout 1 strace -o /dev/null -p {pid}".to_owned(),
        "perf record -q -o {dir}/perf.data -p {pid} -- sleep 0.3".to_owned(),
    ];
    let targets: Vec<Target> = packaged.iter().map(|_| Target::spawn()).collect();
    for (command, target) in packaged.iter().zip(&targets) {
        let command = command
            .replace("{pid}", &target.pid().to_string())
            .replace("{dir}", &dir.path().display().to_string());
        run_entry_leader("bash", &format!("{command} > /dev/null 2>&1"), dir.path());
    }
    // The same gdb under another name is no exception: its reads of the
    // target's memory are seen and raised.
    let copy = dir.path().join("debugger");
    std::fs::copy("/usr/bin/gdb", &copy).expect("copy gdb");
    let control = Target::spawn();
    run_entry_leader(
        "bash",
        &format!(
            "{} > /dev/null 2>&1",
            gdb.replace("gdb", &copy.display().to_string())
                .replace("{pid}", &control.pid().to_string())
        ),
        dir.path(),
    );
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    for (command, target) in packaged.iter().zip(&targets) {
        let raised = layout_alerts(&alerts, target);
        assert!(raised.is_empty(), "`{command}` raised: {raised:#?}");
    }
    let mem = about(&alerts, MEM_ID, &control);
    assert_eq!(mem.len(), 1, "the copy of gdb: {alerts:#?}");
    let wrote =
        about(&alerts, MEM_WRITE_ID, &control).len() + about(&alerts, PTRACE_ID, &control).len();
    assert!(wrote > 0, "the copy of gdb's write: {alerts:#?}");
    assert_eq!(
        about(&alerts, CHAIN_ID, &control).len(),
        1,
        "the copy of gdb: {alerts:#?}"
    );
    assert_eq!(
        mem[0]["process"]["executable"],
        copy.display().to_string(),
        "{:#}",
        mem[0]
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn own_map_reads_and_ordinary_proc_readers_raise_no_extended_alert() {
    let _lock = audit_lock();
    require_program("ps", "procps");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let file = dir.path().join("some-file");
    std::fs::write(&file, "bar\n").expect("write");
    // cat reads its own map, then waits on its stdin, a FIFO, until its
    // alert is out: a map can only be resolved while its process lives, and
    // a short cat may be gone before a late fanotify thread looks (then the
    // read is an `unresolved_reads`, and the alert unconfirmed).
    let gate = dir.path().join("gate");
    let made = Command::new("mkfifo").arg(&gate).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", gate.display());
    let body = format!(
        "grep foo {} ; cat /proc/self/maps - < {} > /dev/null; ps aux > /dev/null; true",
        file.display(),
        gate.display()
    );
    let shell = {
        let dir = dir.path().to_owned();
        std::thread::spawn(move || run_entry_leader("bash", &body, &dir))
    };
    // Blocks until the shell has opened the FIFO for cat.
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&gate)
        .expect("the FIFO's writing end");
    let own = mapwatch.wait_for_alert("cat's alert about its own map", |a| {
        a["rule"]["id"] == SEED_ID && args_of(a).iter().any(|arg| arg == "/proc/self/maps")
    });
    drop(writer);
    shell.join().expect("the shell");
    // `cat /proc/self/maps` is the seed rule's, confirmed by its own read.
    assert_eq!(own["mapwatch"]["read"]["confirmed"], true, "{own:#}");
    assert_eq!(own["mapwatch"]["target"]["pid"], own["process"]["pid"]);
    let sentinel = mapwatch.sync();
    let alerts = mapwatch.alerts();
    let extended = by_rule(&alerts, EXTENDED_ID);
    assert!(extended.is_empty(), "{extended:#?}");
    let seed: Vec<&Value> = by_rule(&alerts, SEED_ID)
        .into_iter()
        .filter(|a| !sentinel.raised(a))
        .collect();
    assert_eq!(seed.len(), 1, "{seed:#?}");
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn fanotify_can_be_turned_off() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start_with(dir.path(), "[fanotify]\nenabled = false\n");
    assert!(
        mapwatch.stderr().contains("read confirmation off"),
        "{}",
        mapwatch.stderr()
    );
    let target = Target::spawn();
    cat_maps_under_bash(&target, dir.path());
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    let seed = about(&alerts, SEED_ID, &target);
    assert_eq!(seed.len(), 1, "{alerts:#?}");
    assert!(
        seed[0]["mapwatch"].get("read").is_none(),
        "no confirmation without fanotify: {:#}",
        seed[0]
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn the_extended_rule_can_be_turned_off() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    // fanotify stays on: only the rule is off, so a read that only it
    // would report must raise nothing.
    let mapwatch = Mapwatch::start_with(
        dir.path(),
        &format!("[rules]\ndisabled = [\"{EXTENDED_ID}\"]\n"),
    );
    assert!(
        mapwatch.stderr().contains("8 detection rules"),
        "{}",
        mapwatch.stderr()
    );
    assert!(
        mapwatch.stderr().contains("read confirmation on"),
        "{}",
        mapwatch.stderr()
    );
    let target = Target::spawn();
    run_entry_leader(
        "bash",
        &format!("cat < {} > /dev/null", target.maps()),
        dir.path(),
    );
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    assert!(
        about(&alerts, EXTENDED_ID, &target).is_empty(),
        "{alerts:#?}"
    );
    assert!(by_rule(&alerts, EXTENDED_ID).is_empty(), "{alerts:#?}");
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_fanotify_queue_overflow_is_reported_and_detection_goes_on() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    require_program("python3", "python3");
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    // Stopped, mapwatch reads nothing: 20,000 reads of /proc by as many
    // processes (forks without exec, so no audit records, and no two events
    // alike for the kernel to merge) overflow its 16,384-event queue.
    mapwatch.signal(nix::sys::signal::Signal::SIGSTOP);
    let flood = Command::new("python3")
        .args([
            "-c",
            "import os\n\
             for _ in range(20000):\n\
             \x20   pid = os.fork()\n\
             \x20   if pid == 0:\n\
             \x20       open('/proc/self/stat').read()\n\
             \x20       os._exit(0)\n\
             \x20   os.waitpid(pid, 0)\n",
        ])
        .status();
    mapwatch.signal(nix::sys::signal::Signal::SIGCONT);
    assert!(flood.expect("python3").success());
    let health = mapwatch.wait_for_alert("a health report of the overflow", |a| {
        a["mapwatch"]["health"]["lost"]["fanotify_overflows"].as_u64() >= Some(1)
    });
    assert_eq!(health["event"]["dataset"], "mapwatch.health");
    let target = Target::spawn();
    cat_maps_under_bash(&target, dir.path());
    let alert = mapwatch.wait_for_alert("a positive after the overflow", |a| {
        a["file"]["path"] == target.maps().as_str()
    });
    assert_eq!(alert["mapwatch"]["read"]["confirmed"], true);
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("fanotify_overflows="), "{stderr}");
}

/// A reader is the program that made the read, at the time of the read
/// (issue 16, case 4): a shell that reads a map and then execs another
/// program, and forks that read and exit without ever exec'ing, are named
/// as they were when they read, with their parent and entry leader. Where
/// the thread that takes reads ran too late to see the reader as it was,
/// the alert says so rather than name the wrong program alone: a shell that
/// exec'd is named with its program before the exec, in doubt; a fork gone
/// before it could be read is an unattributed read, with a health document.
#[test]
fn readers_are_named_as_they_were_at_the_read() {
    require_program("python3", "python3");
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let touched = dir.path().join("touched");
    // (what reads, the body run by a bash entry leader; `{maps}` is the
    // target's map.)
    let execs_after: Vec<(Target, String)> = [
        // Taken off the queue long before the exec, however busy the host,
        // and evaluated after it (reads wait 100 ms for their exec events).
        "bash -c 'read l < {maps}; sleep 0.05; exec touch {touched}'",
        "bash -c 'read l < {maps}; exec touch {touched}'",
        "bash -c 'v=$(< {maps}); exec touch {touched}'",
    ]
    .iter()
    .map(|body| {
        (
            Target::spawn(),
            body.replace("{touched}", &touched.display().to_string()),
        )
    })
    .collect();
    let forks: Vec<(&str, Target, String)> = vec![
        ("bash", Target::spawn(), "( read l < {maps} ); true".into()),
        (
            "python3",
            Target::spawn(),
            "python3 -c \"import os\nif os.fork() == 0:\n    open('{maps}').read(); os._exit(0)\nos.wait()\"".into(),
        ),
    ];
    let bodies = execs_after
        .iter()
        .map(|(t, b)| (t, b))
        .chain(forks.iter().map(|(_, t, b)| (t, b)));
    let mut shells = Vec::new();
    for (target, body) in bodies {
        shells.push(run_entry_leader(
            "bash",
            &body.replace("{maps}", &target.maps()),
            dir.path(),
        ));
    }
    mapwatch.sync();
    let (status, stderr, alerts) = mapwatch.terminate_with_alerts();
    assert!(status.success(), "{stderr}");
    let read_of = |target: &Target, body: &str| {
        let extended = about(&alerts, EXTENDED_ID, target);
        assert_eq!(extended.len(), 1, "`{body}`: {}", brief(&alerts));
        extended[0].clone()
    };
    let mut outcomes = Vec::new();
    let first = read_of(&execs_after[0].0, &execs_after[0].1);
    assert_eq!(
        first["process"]["name"], "bash",
        "a read 50 ms before the exec: {first:#}"
    );
    assert_eq!(
        first["mapwatch"]["read"]["reader_from"], "read",
        "{first:#}"
    );
    for ((target, body), shell) in execs_after.iter().zip(&shells) {
        let a = read_of(target, body);
        assert_ne!(a["process"]["pid"], *shell, "`{body}`: {a:#}");
        assert_eq!(
            a["process"]["entry_leader"]["pid"], *shell,
            "`{body}`: {a:#}"
        );
        let read = &a["mapwatch"]["read"];
        if a["process"]["name"] == "bash" {
            assert_eq!(read["reader_from"], "read", "`{body}`: {a:#}");
            assert_eq!(
                a["process"]["executable"], "/usr/bin/bash",
                "`{body}`: {a:#}"
            );
            outcomes.push("named at the read");
        } else {
            // Taken after the exec: touch, but never touch alone.
            assert_eq!(a["process"]["name"], "touch", "`{body}`: {a:#}");
            let before = &read["reader_before_exec"];
            assert_eq!(before["executable"], "/usr/bin/bash", "`{body}`: {a:#}");
            assert!(
                a["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("/usr/bin/bash")),
                "{a:#}"
            );
            outcomes.push("in doubt");
        }
    }
    for ((name, target, body), shell) in forks.iter().zip(&shells[execs_after.len()..]) {
        let a = read_of(target, body);
        if a["mapwatch"]["read"]["reader_from"] == "read" {
            assert_eq!(a["process"]["name"], *name, "`{body}`: {a:#}");
            assert!(
                a["process"]["executable"]
                    .as_str()
                    .is_some_and(|e| e.contains(name)),
                "`{body}`: {a:#}"
            );
            assert!(a["process"]["parent"]["pid"].is_u64(), "`{body}`: {a:#}");
            // (Its name is its program's when the read was evaluated: the
            // shell has exec'd its last command by then.)
            assert_eq!(
                a["process"]["entry_leader"]["pid"], *shell,
                "`{body}`: {a:#}"
            );
            outcomes.push("named at the read");
        } else {
            assert_eq!(
                a["mapwatch"]["read"]["reader_from"], "unknown",
                "`{body}`: {a:#}"
            );
            let health = alerts
                .iter()
                .find(|h| h["mapwatch"]["health"]["lost"]["unattributed_reads"].is_u64());
            assert!(
                health.is_some(),
                "`{body}`: an unattributed read without a health document: {}",
                brief(&alerts)
            );
            outcomes.push("unattributed");
        }
    }
    eprintln!("outcomes: {outcomes:?}");
}

/// A target that exits right after its map was read (a forked worker,
/// which shares its parent's layout) is reported every time (issue 16,
/// case 3): by an alert naming it when mapwatch took the read while it
/// lived, else by a `mapwatch.health` document naming the reader, since the
/// kernel can no longer say which file it was. First with mapwatch stopped
/// (SIGSTOP) until the workers are gone, so every read is taken too late;
/// then racing it.
#[test]
fn a_read_of_a_target_that_exits_at_once_is_never_silent() {
    require_program("python3", "python3");
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    const READS: usize = 10;
    mapwatch.signal(nix::sys::signal::Signal::SIGSTOP);
    let stopped = read_maps_of_workers_that_exit(READS, dir.path());
    mapwatch.signal(nix::sys::signal::Signal::SIGCONT);
    let racing = read_maps_of_workers_that_exit(READS, dir.path());
    mapwatch.sync();
    // Health documents go out once a second.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (status, stderr, alerts) = mapwatch.terminate_with_alerts();
    assert!(status.success(), "{stderr}");
    let reported = |(reader, workers): &(u32, Vec<u64>)| {
        let alerted = workers
            .iter()
            .filter(|w| {
                by_rule(&alerts, EXTENDED_ID).iter().any(|a| {
                    a["mapwatch"]["target"]["pid"] == **w && a["process"]["pid"] == *reader
                })
            })
            .count();
        let unresolved: u64 = alerts
            .iter()
            .filter_map(|h| h["mapwatch"]["health"]["unresolved_reads"]["readers"].as_array())
            .flatten()
            .filter(|r| r["pid"] == *reader)
            .map(|r| {
                assert!(
                    r["executable"]
                        .as_str()
                        .is_some_and(|e| e.contains("python3")),
                    "the reader is named: {r:#}"
                );
                r["reads"].as_u64().unwrap_or_default()
            })
            .sum();
        (alerted, unresolved as usize)
    };
    let (alerted, unresolved) = reported(&stopped);
    assert_eq!(
        (alerted, unresolved),
        (0, READS),
        "every read taken after its target was gone is in a health document: {:#?}",
        alerts
            .iter()
            .filter(|a| a["event"]["dataset"] == "mapwatch.health")
            .collect::<Vec<_>>()
    );
    let (alerted, unresolved) = reported(&racing);
    eprintln!("outcomes racing: {alerted} alerts, {unresolved} unresolved reads reported");
    assert!(
        alerted + unresolved >= READS,
        "{READS} reads: {alerted} alerts and {unresolved} unresolved reads reported: {}",
        brief(&alerts)
    );
}

/// `ioctl(PROCMAP_QUERY)` (Linux 6.11+) hands out every mapping of an open
/// maps file without a read(2), so fanotify sees no read (issue 16, case
/// 2): audit sees the ioctl, and the maps file it was made on (its fd, or
/// the maps file the querier opened) names the target. A query of the
/// querier's own map raises nothing.
#[test]
fn a_procmap_query_of_another_process_raises_an_alert_naming_reader_and_target() {
    require_program("python3", "python3");
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let target = Target::spawn();
    let query = |maps: &str| {
        let mappings = procmap_query_walk(maps);
        assert!(mappings > 5, "the query gave every mapping ({mappings})");
    };
    query(&target.maps());
    query("/proc/self/maps");
    mapwatch.sync();
    let (status, stderr, alerts) = mapwatch.terminate_with_alerts();
    assert!(status.success(), "{stderr}");
    let queries: Vec<&Value> = by_rule(&alerts, EXTENDED_ID)
        .into_iter()
        .filter(|a| a["mapwatch"]["read"]["via"] == "procmap_query")
        .collect();
    assert_eq!(
        queries.len(),
        1,
        "one alert, for the other process's map: {}",
        brief(&alerts)
    );
    let a = queries[0];
    assert_eq!(a["mapwatch"]["target"]["pid"], target.pid(), "{a:#}");
    assert_eq!(a["mapwatch"]["target"]["name"], "sleep", "{a:#}");
    assert_eq!(a["process"]["name"], "python3", "{a:#}");
    assert!(
        a["process"]["args"]
            .as_array()
            .is_some_and(|args| args.iter().any(|x| x == target.maps().as_str())),
        "{a:#}"
    );
    assert!(
        a["mapwatch"]["read"]["reader_before_exec"].is_null(),
        "{a:#}"
    );
    assert_eq!(a["file"]["path"], target.maps().as_str(), "{a:#}");
}

/// Runs `python3 INJECT MODE TARGET [EXTRA]` as an entry leader's command
/// (TARGET a pid, or `self`); fails the test with the script's error if it
/// failed. Returns its standard output.
fn inject(
    script: &std::path::Path,
    mode: &str,
    target: impl std::fmt::Display,
    extra: &str,
    dir: &std::path::Path,
) -> String {
    let (out, err, status) = (dir.join("out"), dir.join("err"), dir.join("status"));
    run_entry_leader(
        "bash",
        &format!(
            "python3 {} {mode} {target} {extra} > {} 2> {}; echo $? > {}",
            script.display(),
            out.display(),
            err.display(),
            status.display()
        ),
        dir,
    );
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(
        read(&status).trim(),
        "0",
        "python3 inject.py {mode} {target}: {}",
        read(&err)
    );
    read(&out)
}

/// The one alert of rule `id` about `target`.
fn one<'a>(alerts: &'a [Value], id: &str, target: &Target) -> &'a Value {
    let mine = about(alerts, id, target);
    assert_eq!(
        mine.len(),
        1,
        "rule {id} about {}: {alerts:#?}",
        target.pid()
    );
    mine[0]
}

#[test]
fn a_map_read_then_a_write_raises_one_chain_alert_linked_to_its_steps() {
    let _lock = audit_lock();
    require_program("python3", "python3");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let inject_py = inject_script(dir.path());
    let write_mem_py = write_mem_script(dir.path());
    // Through /proc/PID/mem, a ptrace poke, and process_vm_writev.
    let ways = [
        ("mem", MEM_WRITE_ID),
        ("poke", PTRACE_ID),
        ("vm", VM_WRITE_ID),
    ];
    let targets: Vec<Target> = ways.iter().map(|_| Target::spawn()).collect();
    for ((way, _), target) in ways.iter().zip(&targets) {
        match *way {
            "mem" => {
                run_entry_leader(
                    "bash",
                    &format!("python3 {} {}", write_mem_py.display(), target.pid()),
                    dir.path(),
                );
            }
            mode => {
                inject(&inject_py, mode, target.pid(), "", dir.path());
            }
        }
    }
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    for ((way, write_rule), target) in ways.iter().zip(&targets) {
        let chain = one(&alerts, CHAIN_ID, target);
        let read = one(&alerts, EXTENDED_ID, target);
        let write = one(&alerts, write_rule, target);
        assert_eq!(
            chain["mapwatch"]["rule"]["severity"], "critical",
            "{chain:#}"
        );
        assert_eq!(chain["process"]["name"], "python3", "{way}: {chain:#}");
        let steps = chain["mapwatch"]["sequence"]["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("{way}: no steps in {chain:#}"));
        assert_eq!(steps.len(), 2, "{way}: {chain:#}");
        // Each step names the event its own alert was raised on.
        assert_eq!(
            steps[0]["event"]["id"], read["event"]["id"],
            "{way}: {chain:#}"
        );
        assert_eq!(
            steps[1]["event"]["id"], write["event"]["id"],
            "{way}: {chain:#}"
        );
        assert_eq!(
            chain["event"]["id"], write["event"]["id"],
            "{way}: {chain:#}"
        );
        assert_eq!(steps[0]["file"]["path"], target.maps(), "{way}: {chain:#}");
        assert_eq!(
            steps[0]["process"]["pid"], steps[1]["process"]["pid"],
            "{way}: {chain:#}"
        );
        let message = chain["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("read {}, then", target.maps())),
            "{way}: {message}"
        );
    }
    // The calls' own alerts: the request, the outcome, the target.
    let poke = one(&alerts, PTRACE_ID, &targets[1]);
    assert_eq!(
        poke["mapwatch"]["ptrace"]["request"], "PTRACE_POKEDATA",
        "{poke:#}"
    );
    assert_eq!(poke["event"]["category"][0], "api", "{poke:#}");
    assert_eq!(poke["event"]["outcome"], "success", "{poke:#}");
    assert_eq!(poke["mapwatch"]["target"]["name"], "sleep", "{poke:#}");
    let read = one(&alerts, VM_READ_ID, &targets[2]);
    assert_eq!(read["event"]["action"], "process_vm_readv", "{read:#}");
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_helper_child_that_writes_is_joined_to_its_parents_map_read() {
    let _lock = audit_lock();
    require_program("python3", "python3");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let script = inject_script(dir.path());
    let target = Target::spawn();
    inject(&script, "helper", target.pid(), "", dir.path());
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    let chain = one(&alerts, CHAIN_ID, &target);
    let steps = chain["mapwatch"]["sequence"]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {chain:#}"));
    let reader = &steps[0]["process"]["pid"];
    let writer = &steps[1]["process"]["pid"];
    assert_ne!(reader, writer, "{chain:#}");
    assert_eq!(&chain["process"]["parent"]["pid"], reader, "{chain:#}");
    assert_eq!(
        steps[1]["event"]["action"], "process_vm_writev",
        "{chain:#}"
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_write_by_a_process_that_read_no_map_of_its_target_is_no_chain() {
    let _lock = audit_lock();
    require_program("python3", "python3");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let script = inject_script(dir.path());
    let target = Target::spawn();
    // One process reads the map, another (no descendant of it) pokes.
    let address = inject(&script, "addr", target.pid(), "", dir.path());
    inject(&script, "poke-at", target.pid(), address.trim(), dir.path());
    // Its own memory: no alert of any rule.
    inject(&script, "vm", "self", "", dir.path());
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    assert_eq!(about(&alerts, PTRACE_ID, &target).len(), 1, "{alerts:#?}");
    let chains = by_rule(&alerts, CHAIN_ID);
    assert!(chains.is_empty(), "{chains:#?}");
    for rule in [VM_READ_ID, VM_WRITE_ID] {
        let raised = by_rule(&alerts, rule);
        assert!(raised.is_empty(), "its own memory: {raised:#?}");
    }
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

/// Reads `/proc/T/smaps_rollup` of every target pid of `argv[1]`
/// (comma-separated) from each of `argv[2]` forked readers in turn: as
/// many (reader, target) pairs as reads.
const MANY_LAYOUT_READS: &str = r#"
import os, sys
targets = [int(t) for t in sys.argv[1].split(",")]
for _ in range(int(sys.argv[2])):
    child = os.fork()
    if child == 0:
        for t in targets:
            with open(f"/proc/{t}/smaps_rollup", "rb") as f:
                f.read()
        os._exit(0)
    os.waitpid(child, 0)
"#;

/// A counter of the stats line mapwatch logs as it stops.
fn stat(stderr: &str, name: &str) -> u64 {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("stats: "))
        .unwrap_or_else(|| panic!("no stats line: {stderr}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

#[test]
fn a_hundred_thousand_layout_reads_with_no_write_keep_the_chain_state_bounded() {
    let _lock = audit_lock();
    require_program("python3", "python3");
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    // The layout rule is off (its alerts would be 100,000 lines of
    // output); the chain rule still takes every read as its first step.
    let mapwatch = Mapwatch::start_with(
        dir.path(),
        &format!("[rules]\ndisabled = [\"{LAYOUT_ID}\"]\n"),
    );
    let targets: Vec<Target> = (0..100).map(|_| Target::spawn()).collect();
    let pids: Vec<String> = targets.iter().map(|t| t.pid().to_string()).collect();
    let status = python(MANY_LAYOUT_READS, &[&pids.join(","), "1000"])
        .status()
        .expect("python3");
    assert!(status.success(), "the readers failed");
    mapwatch.sync();
    let status_file = std::fs::read_to_string(format!("/proc/{}/status", mapwatch.pid()))
        .expect("mapwatch's status");
    let kib = |key: &str| -> u64 {
        status_file
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {status_file}"))
    };
    let (rss, peak) = (kib("VmRSS:"), kib("VmHWM:"));
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
    let (started, partials, evicted) = (
        stat(&stderr, "sequences_started"),
        stat(&stderr, "sequence_partials"),
        stat(&stderr, "sequences_evicted"),
    );
    eprintln!(
        "{started} first steps, {partials} partial sequences held, {evicted} evicted; VmRSS {rss} KiB, VmHWM {peak} KiB"
    );
    // Most reads reached the chain (fanotify may drop some in a burst,
    // counted apart), far more than it may hold: the bound was hit.
    assert!(started > 50_000, "{stderr}");
    assert!(evicted > 0, "{stderr}");
    assert!(
        partials <= mapwatch::correlate::sequence::MAX_PARTIALS as u64,
        "{stderr}"
    );
    assert!(
        peak <= 20 * 1024,
        "VmHWM {peak} KiB after {started} first steps: over the 20 MiB steady target"
    );
}

/// The inode numbers of the marks in `pid`'s fanotify group that ignore
/// reads (`ignored_mask` with `FAN_ACCESS`), from its fdinfo.
fn ignored_inodes(pid: u32) -> Vec<u64> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("mapwatch's fds");
    for fd in fds.map_while(Result::ok) {
        if std::fs::read_link(fd.path())
            .unwrap_or_default()
            .as_os_str()
            != "anon_inode:[fanotify]"
        {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .expect("fdinfo");
        let field = |line: &str, name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| u64::from_str_radix(v, 16).ok())
        };
        return info
            .lines()
            .filter(|l| l.starts_with("fanotify ino:"))
            .filter(|l| field(l, "ignored_mask:").is_some_and(|m| m & 1 != 0))
            .filter_map(|l| field(l, "ino:"))
            .collect();
    }
    panic!("mapwatch has no fanotify fd")
}

/// `ps` and `top` reread the same few files of every process: a file that
/// is no layout file is reported once, then an evictable ignore mark keeps
/// the kernel from reporting it again, and goes with the process. A maps
/// file is never ignored.
#[test]
fn files_that_are_no_layout_file_are_ignored_until_their_process_goes() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let mut sleepers: Vec<KillOnDrop> = (0..100)
        .map(|_| KillOnDrop(Command::new("sleep").arg("600").spawn().expect("sleep")))
        .collect();
    let files: Vec<String> = sleepers
        .iter()
        .flat_map(|s| ["stat", "status"].map(|f| format!("/proc/{}/{f}", s.0.id())))
        .collect();
    let status = Command::new("cat")
        .args(&files)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("cat");
    assert!(status.success());
    let maps = format!("/proc/{}/maps", sleepers[0].0.id());
    let status = Command::new("cat")
        .arg(&maps)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("cat");
    assert!(status.success());
    // The sentinel's read comes after these in the queue.
    mapwatch.sync();
    let inode = |path: &String| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("a sleeper's file"))
    };
    let inodes: Vec<u64> = files.iter().map(inode).collect();
    let ignored = ignored_inodes(mapwatch.pid());
    let missing: Vec<&String> = files
        .iter()
        .zip(&inodes)
        .filter(|(_, ino)| !ignored.contains(ino))
        .map(|(f, _)| f)
        .collect();
    assert!(missing.is_empty(), "not ignored: {missing:?}");
    assert!(
        !ignored.contains(&inode(&maps)),
        "a maps file must never be ignored"
    );
    let alerts = mapwatch.alerts();
    assert!(
        alerts.iter().any(|a| a["rule"]["id"] == EXTENDED_ID
            && a["mapwatch"]["target"]["pid"] == sleepers[0].0.id()),
        "the maps read still raises its alert: {}",
        brief(alerts.iter())
    );
    // Gone with their processes: nothing left behind.
    for sleeper in &mut sleepers {
        let _ = sleeper.0.kill();
        let _ = sleeper.0.wait();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ignored = ignored_inodes(mapwatch.pid());
        let left = inodes.iter().filter(|i| ignored.contains(i)).count();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} ignore marks of gone processes' files left after 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}
