//! A real auditd from the distribution, started by a test on a
//! configuration and log of its own: as the audit daemon (local events),
//! or as an aggregation server that only receives other hosts' records.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{require_program, snapshot};

/// How a test's auditd is set up.
pub struct AuditdSetup<'a> {
    /// `RAW` or `ENRICHED`.
    pub log_format: &'a str,
    /// `name_format = user` with this name (records then start `node=NAME`).
    pub node_name: Option<&'a str>,
    /// The text of a plugins.d file to start auditd with.
    pub plugin: Option<&'a str>,
    /// False for an aggregation server: it takes no records from the
    /// kernel, only from its network listener.
    pub local_events: bool,
    /// Listen for other hosts' auditd (au-remote) on PORT, and hand
    /// their records to the plugins (`distribute_network`).
    pub tcp_listen_port: Option<u16>,
}

impl Default for AuditdSetup<'_> {
    fn default() -> Self {
        AuditdSetup {
            log_format: "RAW",
            node_name: None,
            plugin: None,
            local_events: true,
            tcp_listen_port: None,
        }
    }
}

/// A running `auditd -n` with its configuration and log in a directory of
/// ours; stopped when dropped.
pub struct Auditd {
    child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
}

/// The key of the audit rules a test adds through auditctl.
pub const TEST_KEY: &str = "mapwatch-test-auditd";

impl Auditd {
    pub fn start(dir: &Path) -> Auditd {
        Self::start_with(dir, &AuditdSetup::default())
    }

    pub fn start_with_plugin(dir: &Path, plugin: Option<&str>) -> Auditd {
        Self::start_with(
            dir,
            &AuditdSetup {
                plugin,
                ..AuditdSetup::default()
            },
        )
    }

    pub fn start_with(dir: &Path, setup: &AuditdSetup<'_>) -> Auditd {
        require_program("auditd", "auditd");
        std::fs::create_dir_all(dir).expect("auditd dir");
        let log = dir.join("audit.log");
        let plugins = dir.join("plugins.d");
        std::fs::create_dir_all(&plugins).expect("plugin dir");
        if let Some(plugin) = setup.plugin {
            write_root_only(&plugins.join("plugin.conf"), plugin);
        }
        write_root_only(&dir.join("auditd.conf"), &config(setup, &log, &plugins));
        // Kept for diagnostics (auditd itself gives its plugins /dev/null).
        let stderr = std::fs::File::create(dir.join("auditd.stderr")).expect("stderr file");
        let child = Command::new("auditd")
            .arg("-n")
            .arg("-c")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting auditd");
        let auditd = Auditd {
            child,
            dir: dir.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        if setup.local_events {
            while snapshot().pid != auditd.child.id() {
                assert!(
                    Instant::now() < deadline,
                    "auditd did not register; its stderr:\n{}",
                    auditd.stderr()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Some(port) = setup.tcp_listen_port {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "auditd does not listen on port {port}; its stderr:\n{}",
                    auditd.stderr()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        auditd
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("auditd.stderr")).unwrap_or_default()
    }

    /// The log as written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops auditd (and with it its plugins) and waits for it.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The audit rules a test added (keyed [`TEST_KEY`]), removed when dropped.
#[must_use = "the rules are removed when this is dropped"]
pub struct TestRules(());

impl Drop for TestRules {
    fn drop(&mut self) {
        let _ = Command::new("auditctl")
            .args(["-D", "-k", TEST_KEY])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Adds an audit rule keyed [`TEST_KEY`] (`auditctl -a` arguments).
pub fn add_test_rule(args: &[&str]) -> TestRules {
    add_keyed(args);
    TestRules(())
}

fn add_keyed(args: &[&str]) {
    require_program("auditctl", "auditd");
    let status = Command::new("auditctl")
        .args(args)
        .args(["-k", TEST_KEY])
        .stdout(Stdio::null())
        .status()
        .expect("auditctl");
    assert!(status.success(), "auditctl {args:?} failed");
}

/// The rule set fleets record with: every execve, nothing else, and a
/// backlog for bursts (a login's PAM records come at once; the kernel
/// drops records past it). [`super::AuditStateGuard`] restores the
/// backlog limit.
pub fn add_execve_only_rules() -> TestRules {
    let status = Command::new("auditctl")
        .args(["-b", "8192"])
        .stdout(Stdio::null())
        .status()
        .expect("auditctl -b");
    assert!(status.success(), "auditctl -b 8192 failed");
    add_keyed(&[
        "-a",
        "always,exit",
        "-F",
        "arch=b32",
        "-S",
        "execve,execveat",
    ]);
    add_test_rule(&[
        "-a",
        "always,exit",
        "-F",
        "arch=b64",
        "-S",
        "execve,execveat",
    ])
}

pub fn write_root_only(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("writing a config file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn config(setup: &AuditdSetup<'_>, log: &Path, plugins: &Path) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let name = match setup.node_name {
        Some(name) => format!("name_format = user\nname = {name}\n"),
        None => "name_format = NONE\n".to_owned(),
    };
    let listen = match setup.tcp_listen_port {
        Some(port) => format!(
            "tcp_listen_port = {port}\ntcp_listen_queue = 5\ntcp_client_ports = 1-65535\ndistribute_network = yes\n"
        ),
        None => "distribute_network = no\n".to_owned(),
    };
    format!(
        "local_events = {local}\nwrite_logs = yes\nlog_file = {log}\nlog_group = root\nlog_format = {format}\n\
         flush = INCREMENTAL_ASYNC\nfreq = 20\n{name}{listen}\
         max_log_file = 50\nnum_logs = 2\npriority_boost = 0\nmax_log_file_action = ROTATE\nspace_left = 75\n\
         space_left_action = IGNORE\nadmin_space_left = 50\nadmin_space_left_action = IGNORE\ndisk_full_action = IGNORE\n\
         disk_error_action = IGNORE\nuse_libwrap = no\ntcp_max_per_addr = 1\ntcp_client_max_idle = 0\n\
         transport = TCP\nq_depth = 2000\noverflow_action = SYSLOG\nmax_restarts = 10\nplugin_dir = {plugins}\n\
         end_of_event_timeout = 2\n",
        local = yes_no(setup.local_events),
        log = log.display(),
        format = setup.log_format,
        plugins = plugins.display(),
    )
}

/// The shipped auditd plugin config, made active, pointed at this build
/// and at the mapwatch configuration `config`.
pub fn shipped_plugin(config: &Path) -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/auditd/mapwatch.conf"),
    )
    .expect("packaging/auditd/mapwatch.conf");
    assert!(shipped.contains("\nargs = replay -\n") && shipped.contains("\nformat = string\n"));
    shipped
        .replace("active = no", "active = yes")
        .replace(
            "path = /usr/sbin/mapwatch",
            &format!("path = {}", super::BIN),
        )
        .replace(
            "args = replay -",
            &format!("args = replay --config={}", config.display()),
        )
}
