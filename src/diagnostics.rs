//! Where mapwatch's own log lines go when nobody reads its stderr: auditd
//! starts its plugins with stderr on /dev/null, so an auditd plugin logs to
//! the local syslog socket instead (journald and rsyslog both read it).
//!
//! Contract: one datagram per log line, `<PRI>mapwatch[PID]: text`, with
//! facility daemon and the line's level as severity; a syslog socket that
//! is missing or full loses the line, never blocks or fails the caller.

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

/// One log line, sent when the formatter is done with it.
pub struct DevLogLine {
    socket: Option<Arc<UnixDatagram>>,
    line: Vec<u8>,
}

impl io::Write for DevLogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for DevLogLine {
    fn drop(&mut self) {
        while self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        if let Some(socket) = &self.socket {
            let _ = socket.send(&self.line);
        }
    }
}

/// syslog severity of a log level (facility daemon = 3).
fn priority(level: &Level) -> u8 {
    let severity = match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    };
    3 * 8 + severity
}

impl<'a> MakeWriter<'a> for DevLog {
    type Writer = DevLogLine;

    fn make_writer(&'a self) -> Self::Writer {
        self.line_for(&Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        self.line_for(meta.level())
    }
}

impl DevLog {
    fn line_for(&self, level: &Level) -> DevLogLine {
        DevLogLine {
            socket: self.socket.clone(),
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
    fn a_missing_socket_loses_the_line_quietly() {
        let log = DevLog::connect("/nonexistent/dev-log");
        let mut line = log.line_for(&Level::ERROR);
        line.write_all(b"nobody hears this")
            .expect("write never fails");
    }
}
