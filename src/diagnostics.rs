//! Where mapwatch's own log lines go when stderr is not a terminal or a
//! file: auditd starts its plugins with stderr on /dev/null, so an auditd
//! plugin logs to the local syslog socket instead (journald and rsyslog both
//! read it); under systemd, stderr is a journal stream, and each line starts
//! with its level as `<N>` so that `journalctl -p warning` finds it.
//!
//! Contract: [`DevLog`] sends one datagram per log line,
//! `<PRI>mapwatch[PID]: text`, with facility daemon and the line's level as
//! severity; a syslog socket that is missing or full loses the line, never
//! blocks or fails the caller. [`JournalStderr`] writes each line to stderr
//! in one `write`, prefixed `<SEVERITY>`.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// True when stderr is /dev/null (or closed): log lines written there are lost.
pub fn stderr_is_discarded() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return true;
    };
    let null = std::fs::metadata("/dev/null");
    meta.file_type().is_char_device() && null.is_ok_and(|n| n.rdev() == meta.rdev())
}

/// True when stderr is the journal's stream for this service
/// (`JOURNAL_STREAM`, set by systemd, names its device and inode).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_str() == Some(&format!("{}:{}", meta.dev(), meta.ino()))
}

/// Log lines to stderr as the journal's stream, each with its level.
#[derive(Clone, Copy, Default)]
pub struct JournalStderr;

impl<'a> MakeWriter<'a> for JournalStderr {
    type Writer = LogLine;

    fn make_writer(&'a self) -> Self::Writer {
        journal_line(&Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        journal_line(meta.level())
    }
}

fn journal_line(level: &Level) -> LogLine {
    LogLine {
        to: Destination::Stderr,
        line: format!("<{}>", severity(level)).into_bytes(),
    }
}

/// Log lines to the local syslog socket.
#[derive(Clone)]
pub struct DevLog {
    socket: Option<Arc<UnixDatagram>>,
    pid: u32,
}

impl DevLog {
    pub fn connect(path: &str) -> Self {
        let socket = UnixDatagram::unbound()
            .and_then(|s| {
                s.connect(path)?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .ok()
            .map(Arc::new);
        DevLog {
            socket,
            pid: std::process::id(),
        }
    }
}

/// Where a finished line goes.
enum Destination {
    /// The syslog socket, if it could be connected.
    Syslog(Option<Arc<UnixDatagram>>),
    Stderr,
}

/// One log line, with its prefix, sent whole when the formatter is done
/// with it.
pub struct LogLine {
    to: Destination,
    line: Vec<u8>,
}

impl io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        match &self.to {
            Destination::Syslog(socket) => {
                while self.line.last() == Some(&b'\n') {
                    self.line.pop();
                }
                if let Some(socket) = socket {
                    let _ = socket.send(&self.line);
                }
            }
            // One write per line: lines of two threads never interleave.
            Destination::Stderr => {
                let _ = io::Write::write_all(&mut io::stderr(), &self.line);
            }
        }
    }
}

/// syslog severity of a log level.
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// syslog priority of a log level, facility daemon (3).
fn priority(level: &Level) -> u8 {
    3 * 8 + severity(level)
}

impl<'a> MakeWriter<'a> for DevLog {
    type Writer = LogLine;

    fn make_writer(&'a self) -> Self::Writer {
        self.line_for(&Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        self.line_for(meta.level())
    }
}

impl DevLog {
    fn line_for(&self, level: &Level) -> LogLine {
        LogLine {
            to: Destination::Syslog(self.socket.clone()),
            line: format!("<{}>mapwatch[{}]: ", priority(level), self.pid).into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn one_datagram_per_line_with_priority_and_tag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        let log = DevLog::connect(path.to_str().expect("utf-8 path"));
        {
            let mut line = log.line_for(&Level::WARN);
            line.write_all(b"kernel lost 3 records\n").expect("write");
        }
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).expect("a datagram");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert_eq!(
            text,
            format!(
                "<28>mapwatch[{}]: kernel lost 3 records",
                std::process::id()
            )
        );
    }

    #[test]
    fn journal_lines_start_with_their_severity() {
        // The prefix only: a dropped line is written to the test's stderr.
        let mut line = journal_line(&Level::WARN);
        assert_eq!(std::mem::take(&mut line.line), b"<4>");
        assert_eq!(
            std::mem::take(&mut journal_line(&Level::ERROR).line),
            b"<3>"
        );
        assert_eq!(std::mem::take(&mut journal_line(&Level::INFO).line), b"<6>");
    }

    #[test]
    fn a_missing_socket_loses_the_line_quietly() {
        let log = DevLog::connect("/nonexistent/dev-log");
        let mut line = log.line_for(&Level::ERROR);
        line.write_all(b"nobody hears this")
            .expect("write never fails");
    }
}
