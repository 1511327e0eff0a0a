//! Loss accounting under an exec storm, on the real kernel: with default
//! settings nothing is lost and every positive injected during the storm is
//! detected; with a tiny backlog the kernel drops records and mapwatch
//! reports exactly as many as the kernel counted, in its stats and in
//! `mapwatch.health` documents. Under a storm the socket is polled, and
//! reads are still placed among the execs around them. Needs root.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// Parallel `/bin/true` loops, killed when dropped.
struct Storm(Vec<Child>);

impl Storm {
    fn start(loops: usize) -> Storm {
        Storm(
            (0..loops)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do /bin/true; done"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("starting a storm loop")
                })
                .collect(),
        )
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The counters of the last stats line on stderr.
fn last_stats(stderr: &str) -> Vec<(String, u64)> {
    let line = stderr
        .lines()
        .rfind(|l| l.contains("stats: "))
        .unwrap_or_else(|| panic!("no stats line in:\n{stderr}"));
    let counters = &line[line.find("stats: ").map_or(0, |i| i + 7)..];
    counters
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

fn counter(stats: &[(String, u64)], name: &str) -> u64 {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no counter {name} in {stats:?}"))
}

#[test]
fn a_60_second_exec_storm_loses_nothing_and_every_positive_is_detected() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let storm = Storm::start(4);
    let started = Instant::now();
    let mut positives = Vec::new();
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(4));
        let target = Target::spawn();
        cat_maps_under_bash(&target, dir.path());
        positives.push(target);
    }
    drop(storm);
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");

    for target in &positives {
        let found = alerts
            .iter()
            .filter(|a| a["file"]["path"] == target.maps().as_str())
            .count();
        assert_eq!(found, 1, "positive {} during the storm", target.maps());
    }
    let stats = last_stats(&stderr);
    let execs = counter(&stats, "exec_events");
    eprintln!(
        "storm: {execs} exec events in {:.0} s ({:.0}/s), {} positives",
        started.elapsed().as_secs_f64(),
        execs as f64 / started.elapsed().as_secs_f64(),
        positives.len()
    );
    assert!(execs > 30_000, "the storm ran: {stats:?}");
    for loss in [
        "kernel_lost",
        "serial_gaps",
        "enobufs",
        "queue_dropped_records",
        "events_evicted",
        "alerts_dropped",
    ] {
        assert_eq!(counter(&stats, loss), 0, "{loss}: {stats:?}");
    }
    let health: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["event"]["dataset"] == "mapwatch.health")
        .collect();
    assert!(
        health.is_empty(),
        "no health report without loss: {health:#?}"
    );
}

/// Stopped in the middle of the storm: deleting its rules under a full
/// backlog loses their CONFIG_CHANGE records after the loop's last poll, so
/// the count must come from the stop itself. The final stats line and the
/// health documents equal the kernel's count over the whole run.
#[test]
fn with_a_tiny_backlog_losses_are_reported_as_the_kernel_counts_them() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let schema: Value =
        serde_json::from_str(include_str!("../docs/alert.schema.json")).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let lost_before = AuditSocketStatus::lost();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start_with(dir.path(), "backlog_limit = 4\n");
    let storm = Storm::start(6);
    std::thread::sleep(Duration::from_secs(8));
    let (status, stderr, alerts) = mapwatch.terminate_with_alerts();
    drop(storm);
    assert!(status.success(), "{stderr}");
    let kernel_lost = u64::from(AuditSocketStatus::lost().wrapping_sub(lost_before));

    assert!(
        kernel_lost > 0,
        "a backlog of 4 under a storm loses records"
    );
    let stats = last_stats(&stderr);
    assert_eq!(
        counter(&stats, "kernel_lost"),
        kernel_lost,
        "the last stats line counts what was lost while stopping: {stats:?}"
    );
    let health: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["event"]["dataset"] == "mapwatch.health")
        .collect();
    assert!(!health.is_empty(), "health documents: {stderr}");
    for doc in &health {
        let errors: Vec<String> = validator.iter_errors(doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}\n{doc:#}");
    }
    let reported: u64 = health
        .iter()
        .filter_map(|d| d["mapwatch"]["health"]["lost"]["kernel_lost"].as_u64())
        .sum();
    assert_eq!(
        reported, kernel_lost,
        "health documents add up to the kernel's count"
    );
    assert!(
        stderr.contains("mapwatch lost events: kernel_lost="),
        "{stderr}"
    );
}

/// Under a storm the socket is read on an interval (`audit.poll_interval_ms`),
/// so execs wait there while reads arrive at once, and the fanotify thread
/// can see a read late. Leaders must still be named as of the read: bash,
/// not the `touch` it exec's as its last command right after the read, nor
/// the `env` it ran just before it became bash again and forked the reader,
/// nor the `env` it ran after forking a reader that read a second later.
/// The seed rule's alerts must stay confirmed.
#[test]
fn under_a_storm_the_socket_is_polled_and_reads_are_placed_among_execs_as_they_happened() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mapwatch = Mapwatch::start(dir.path());
    let storm = Storm::start(2);
    std::thread::sleep(Duration::from_secs(1));
    let done = dir.path().join("done-bash");
    let fifo = dir.path().join("release");
    let cases = [
        // bash exec's its last command, touch, just after cat's read.
        (EXTENDED_ID, "cat < {maps} > /dev/null"),
        // bash becomes env, then bash again, just before it forks cat; the
        // trailing `:` keeps it bash to the end.
        (
            EXTENDED_ID,
            "exec env bash -c 'cat < {maps} > /dev/null; touch {done}; :'",
        ),
        (
            SEED_ID,
            "exec env bash -c 'cat {maps} > /dev/null; touch {done}; :'",
        ),
        // bash forks cat, which waits on a fifo, then becomes env and bash
        // again; a second later it releases cat, which reads the map, and
        // waits until cat is done.
        (
            EXTENDED_ID,
            "cat {fifo} - < {maps} > /dev/null & exec env CAT=$! bash -c '\
             sleep 1; : > {fifo}; \
             while ! grep -qs \"^State:.[ZX]\" /proc/$CAT/status && [ -e /proc/$CAT ]; do sleep 0.05; done; \
             touch {done}; :'",
        ),
    ];
    let mut runs = Vec::new();
    for _ in 0..5 {
        for (id, body) in cases {
            let target = Target::spawn();
            let _ = std::fs::remove_file(&fifo);
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
            let body = body
                .replace("{maps}", &target.maps())
                .replace("{done}", &done.display().to_string())
                .replace("{fifo}", &fifo.display().to_string());
            run_entry_leader("bash", &body, dir.path());
            runs.push((id, target));
        }
    }
    drop(storm);
    mapwatch.sync();
    let alerts = mapwatch.alerts();
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");

    let about = |id: &str, target: &Target| -> Vec<&Value> {
        alerts
            .iter()
            .filter(|a| a["rule"]["id"] == id && a["file"]["path"] == target.maps().as_str())
            .collect()
    };
    for (id, target) in &runs {
        let found = about(id, target);
        assert_eq!(found.len(), 1, "{id} on {}: {alerts:#?}", target.maps());
        let alert = found[0];
        assert_eq!(alert["mapwatch"]["read"]["confirmed"], true, "{alert:#}");
        assert_eq!(alert["process"]["name"], "cat", "{alert:#}");
        assert_eq!(alert["process"]["parent"]["name"], "bash", "{alert:#}");
        assert_eq!(
            alert["process"]["entry_leader"]["name"], "bash",
            "{alert:#}"
        );
    }
    let stats = last_stats(&stderr);
    assert!(
        counter(&stats, "socket_polls") > 0,
        "the socket was polled: {stats:?}"
    );
}

/// The kernel's audit `lost` counter.
struct AuditSocketStatus;

impl AuditSocketStatus {
    fn lost() -> u32 {
        mapwatch::source::netlink::socket::AuditSocket::open()
            .expect("audit socket")
            .status()
            .expect("audit status")
            .lost
    }
}
