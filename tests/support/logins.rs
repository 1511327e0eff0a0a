//! Real logins for tests: Debian's OpenSSH server on loopback with key
//! login and PAM (pam_loginuid opens an audit session per login), Debian's
//! cron running `@reboot` jobs, and an unprivileged user to log in as.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::require_program;

/// A local account the tests log in as, created when missing.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    pub fn ensure(name: &str) -> TestUser {
        require_program("useradd", "passwd");
        if !id(name, "-u").status.success() {
            let status = Command::new("useradd")
                .args(["--create-home", "--shell", "/bin/bash", name])
                .status()
                .expect("useradd");
            assert!(status.success(), "useradd {name} failed");
        }
        let number = |flag| {
            String::from_utf8_lossy(&id(name, flag).stdout)
                .trim()
                .parse()
                .expect("id prints a number")
        };
        TestUser {
            name: name.to_owned(),
            uid: number("-u"),
            gid: number("-g"),
        }
    }

    /// `program` run as this user (a target whose map the user may read).
    pub fn spawn(&self, program: &[&str]) -> Child {
        require_program("setpriv", "util-linux");
        Command::new("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .args(program)
            .stdin(Stdio::null())
            .spawn()
            .expect("setpriv")
    }
}

fn id(name: &str, flag: &str) -> Output {
    Command::new("id")
        .args([flag, name])
        .stderr(Stdio::null())
        .output()
        .expect("id")
}

/// `/usr/sbin/sshd` on 127.0.0.1, daemonized (its listener's parent is
/// init, as a service's is), accepting `user`'s key; stopped when dropped.
pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
}

impl Sshd {
    pub fn start(user: &TestUser) -> Sshd {
        require_program("sshd", "openssh-server");
        require_program("ssh", "openssh-client");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path();
        for key in ["host_key", "user_key"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path.join(key))
                .status()
                .expect("ssh-keygen");
            assert!(status.success(), "ssh-keygen failed");
        }
        std::fs::copy(path.join("user_key.pub"), path.join("authorized_keys"))
            .expect("authorized_keys");
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM yes\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
            dir = path.display()
        );
        std::fs::write(path.join("sshd_config"), config).expect("sshd_config");
        // The privilege-separation directory the package's unit would make.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let status = Command::new("/usr/sbin/sshd")
            .arg("-f")
            .arg(path.join("sshd_config"))
            .arg("-E")
            .arg(path.join("sshd.log"))
            .status()
            .expect("starting sshd");
        assert!(status.success(), "sshd did not start");
        let sshd = Sshd {
            dir,
            port,
            user: user.name.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd does not listen on {port}: {}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sshd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn client(&self, user: &str) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.arg("-i")
            .arg(self.dir.path().join("user_key"))
            .args(["-p", &self.port.to_string()])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{user}@127.0.0.1"));
        ssh
    }

    /// `ssh user@127.0.0.1 COMMAND`: the user's shell runs it (`bash -c`).
    pub fn run(&self, command: &str) -> Output {
        self.run_as(&self.user, command)
    }

    pub fn run_as(&self, user: &str, command: &str) -> Output {
        let out = self
            .client(user)
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("ssh");
        assert!(
            out.status.success(),
            "ssh {command:?}: {}\nsshd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out
    }

    /// An interactive login (`ssh -tt`, a pty and a login shell) typing
    /// `input`, which should end with `exit`.
    pub fn run_interactive(&self, input: &str) -> Output {
        let mut child = self
            .client(&self.user)
            .arg("-tt")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh -tt");
        child
            .stdin
            .take()
            .expect("stdin piped")
            .write_all(input.as_bytes())
            .expect("typing into ssh -tt");
        let out = child.wait_with_output().expect("ssh -tt");
        assert!(
            out.status.success(),
            "ssh -tt: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(pid) = pid_in(&self.dir.path().join("sshd.pid")) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn pid_in(file: &Path) -> Option<nix::unistd::Pid> {
    let text = std::fs::read_to_string(file).ok()?;
    Some(nix::unistd::Pid::from_raw(text.trim().parse().ok()?))
}

/// Debian's cron daemon, started (daemonized: its parent is init) with
/// `@reboot` jobs, which it runs at once when `/run/crond.reboot` is
/// missing; stopped, and its jobs removed, when dropped.
pub struct Cron {
    job_file: PathBuf,
}

const CRON_PID: &str = "/run/crond.pid";

impl Cron {
    /// `jobs`: `(user, command)` pairs.
    pub fn start_with_reboot_jobs(name: &str, jobs: &[(&str, &str)]) -> Cron {
        require_program("cron", "cron");
        assert!(
            pid_in(Path::new(CRON_PID))
                .is_none_or(|pid| nix::sys::signal::kill(pid, None).is_err()),
            "a cron daemon is already running (pid in {CRON_PID}): stop it to run this test"
        );
        let job_file = Path::new("/etc/cron.d").join(name);
        let text: String = jobs
            .iter()
            .map(|(user, command)| format!("@reboot {user} {command}\n"))
            .collect();
        std::fs::write(&job_file, text).expect("writing the cron job");
        let _ = std::fs::remove_file("/run/crond.reboot");
        let status = Command::new("cron").status().expect("starting cron");
        assert!(status.success(), "cron did not start");
        Cron { job_file }
    }
}

impl Drop for Cron {
    fn drop(&mut self) {
        if let Some(pid) = pid_in(Path::new(CRON_PID)) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let _ = std::fs::remove_file(&self.job_file);
    }
}
