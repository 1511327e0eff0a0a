//! The operators' view, with the real programs operators run: Prometheus
//! (Debian's `prometheus`) scraping the endpoint, node_exporter (Debian's
//! `prometheus-node-exporter`) reading the textfile, `/healthz` and
//! `mapwatch status` following a forced kernel loss, and hostile clients
//! that change nothing in detection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on `127.0.0.1:port`: status code and body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// Waits until `probe` gives `Some`.
fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prometheus on loopback, scraping `target` every second.
fn prometheus(dir: &Path, target: u16) -> (Daemon, u16) {
    require_program("prometheus", "prometheus");
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mapwatch\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n"
        ),
    )
    .expect("prometheus.yml");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting prometheus");
    (Daemon(child), port)
}

/// A PromQL query's single value, once Prometheus has one.
fn query(port: u16, promql: &str) -> Option<f64> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (code, body) = get(port, &format!("/api/v1/query?query={encoded}"))?;
    if code != 200 {
        return None;
    }
    let answer: Value = serde_json::from_str(&body).ok()?;
    answer["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

fn kernel_lost() -> u32 {
    mapwatch::source::netlink::socket::AuditSocket::open()
        .expect("audit socket")
        .status()
        .expect("audit status")
        .lost
}

fn status_exit(config: &Path) -> (i32, String) {
    let out = mapwatch(&["status", "--config", &config.display().to_string()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &stderr_of(&out),
    )
}

/// Exec loops that overflow a small audit backlog.
struct Storm {
    _loops: Vec<Daemon>,
}

impl Storm {
    fn start(loops: usize) -> Storm {
        Storm {
            _loops: (0..loops)
                .map(|_| {
                    Daemon(
                        Command::new("sh")
                            .args(["-c", "while :; do /bin/true; done"])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .spawn()
                            .expect("a storm loop"),
                    )
                })
                .collect(),
        }
    }
}

/// The configuration of a service run with the endpoint on `port`.
fn with_metrics(dir: &Path, port: u16, audit: &str) -> String {
    format!(
        "{audit}[output]\njson_file = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\ninterval_secs = 2\n",
        dir.join("alerts.json").display()
    )
}

#[test]
fn prometheus_scrapes_alerts_and_losses_and_health_follows_them() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("mapwatch.toml");
    let (_prometheus, prom) = prometheus(dir.path(), port);

    // Five seed-rule positives, counted by rule.
    let mapwatch = Mapwatch::start_service(dir.path(), &with_metrics(dir.path(), port, ""));
    let target = Target::spawn();
    for _ in 0..5 {
        cat_maps_under_bash(&target, dir.path());
    }
    let seed = format!("mapwatch_alerts_total{{rule_id=\"{SEED_ID}\"}}");
    let alerts = wait_for("5 seed alerts in Prometheus", || {
        query(prom, &seed).filter(|v| *v >= 5.0)
    });
    assert_eq!(alerts, 5.0, "exactly the 5 positives");
    wait_for("healthy", || {
        get(port, "/healthz").filter(|(code, _)| *code == 200)
    });
    assert_eq!(status_exit(&config).0, 0);
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");

    // A storm against a backlog of 4: the kernel loses records, and says
    // how many.
    let lost_before = kernel_lost();
    let mapwatch = Mapwatch::start_service(
        dir.path(),
        &with_metrics(dir.path(), port, "backlog_limit = 4\n"),
    );
    let storm = Storm::start(6);
    let (_, body) = wait_for("/healthz to report the loss", || {
        get(port, "/healthz").filter(|(code, body)| *code == 503 && body.contains("kernel_lost"))
    });
    let reason: Value = serde_json::from_str(&body).expect("a JSON reason");
    assert!(
        reason["reason"]
            .as_str()
            .is_some_and(|r| r.contains("kernel_lost grew by")),
        "{body}"
    );
    let (exit, table) = status_exit(&config);
    assert_eq!(exit, 1, "status says unhealthy: {table}");
    assert!(table.contains("UNHEALTHY: kernel_lost grew by"), "{table}");
    drop(storm);
    // The next status polls (every second) see the last loss.
    std::thread::sleep(Duration::from_secs(2));
    let delta = f64::from(kernel_lost().wrapping_sub(lost_before));
    let seen = wait_for("Prometheus to show the kernel's count", || {
        query(prom, "mapwatch_kernel_lost_total").filter(|v| *v == delta)
    });
    assert_eq!(seen, delta);
    wait_for("/healthz back to 200 after a clean interval", || {
        get(port, "/healthz").filter(|(code, _)| *code == 200)
    });
    let (exit, table) = status_exit(&config);
    assert_eq!(exit, 0, "{table}");
    assert!(table.starts_with("health"), "{table}");
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");

    let unconfigured = dir.path().join("plain.toml");
    std::fs::write(&unconfigured, "").expect("a config without [metrics]");
    let (exit, message) = status_exit(&unconfigured);
    assert_eq!(exit, 2, "{message}");
    assert!(message.contains("[metrics] listen"), "{message}");
}

/// Raises this process's soft limit of open files to `want` (within the hard
/// limit, which root may raise too).
fn raise_open_files(want: libc::rlim_t) {
    let limit = libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(
        rc,
        0,
        "setrlimit(RLIMIT_NOFILE, {want}): {}",
        std::io::Error::last_os_error()
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .expect("VmRSS")
}

#[test]
fn a_thousand_hostile_clients_change_nothing_in_detection() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    // 1,000 sockets of our own, beside the test harness's.
    raise_open_files(4096);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mapwatch = Mapwatch::start_with(
        dir.path(),
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    wait_for("the endpoint", || get(port, "/metrics"));
    let rss_before = rss_kib(mapwatch.pid());

    let mut clients = Vec::new();
    for i in 0..1000 {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        let _ = match i % 4 {
            // Garbage, without an end.
            0 => stream.write_all(&[0xff; 600]),
            // A request that never finishes.
            1 => stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            // A header far over the limit.
            2 => stream.write_all(&vec![b'A'; 20_000]),
            // Nothing at all.
            _ => Ok(()),
        };
        clients.push(stream);
    }
    let clients_opened = clients.len();
    assert!(clients_opened >= 900, "{clients_opened} connections opened");

    let runs = run_spine_scenarios(dir.path());
    mapwatch.sync();
    assert_spine_alerts(&runs, &mapwatch.alerts());
    let rss_during = rss_kib(mapwatch.pid());
    drop(clients);
    let (code, _) = wait_for("the endpoint answering again", || {
        get(port, "/healthz").filter(|(code, _)| *code == 200)
    });
    assert_eq!(code, 200);
    eprintln!(
        "{} hostile connections: mapwatch RSS {rss_before} KiB before, {rss_during} KiB during",
        clients_opened
    );
    assert!(
        rss_during.saturating_sub(rss_before) < 8 * 1024,
        "memory grew from {rss_before} KiB to {rss_during} KiB"
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}

#[test]
fn node_exporters_textfile_collector_reads_the_textfile() {
    let _lock = audit_lock();
    let _audit = AuditStateGuard::new();
    require_program("prometheus-node-exporter", "prometheus-node-exporter");
    let dir = tempfile::tempdir().expect("tempdir");
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir(&textfiles).expect("textfile dir");
    let prom = textfiles.join("mapwatch.prom");
    let mapwatch = Mapwatch::start_with(
        dir.path(),
        &format!(
            "[metrics]\ntextfile = \"{}\"\ninterval_secs = 1\n",
            prom.display()
        ),
    );
    let target = Target::spawn();
    cat_maps_under_bash(&target, dir.path());
    mapwatch.sync();
    wait_for("the textfile with the seed alert", || {
        std::fs::read_to_string(&prom)
            .ok()
            .filter(|t| t.contains(&format!("mapwatch_alerts_total{{rule_id=\"{SEED_ID}\"")))
    });
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&prom).expect("textfile").permissions(),
    );
    assert_eq!(mode & 0o777, 0o644, "node_exporter's user can read it");

    let port = free_port();
    let _exporter = Daemon(
        Command::new("prometheus-node-exporter")
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!(
                "--collector.textfile.directory={}",
                textfiles.display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting node_exporter"),
    );
    let (_, body) = wait_for("node_exporter's metrics", || {
        get(port, "/metrics").filter(|(code, _)| *code == 200)
    });
    assert!(
        body.lines().any(|l| l == "node_textfile_scrape_error 0"),
        "node_exporter parsed the file without error:\n{body}"
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("mapwatch_alerts_total{") && l.contains(SEED_ID)),
        "{body}"
    );
    let (status, stderr) = mapwatch.terminate();
    assert!(status.success(), "{stderr}");
}
