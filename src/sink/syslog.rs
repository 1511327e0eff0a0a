//! The syslog sink: alerts to a local syslog socket, UDP or TCP, as RFC 5424
//! (default) or RFC 3164 messages.
//!
//! Contract:
//! - A message is one line: `<summary> @cee:<ECS JSON document>`. The
//!   summary is escaped for terminals (no control byte, no newline) and its
//!   `@` is escaped too, so the first `@cee:` always starts the document; the
//!   document is JSON (control characters escaped). Nothing an attacker puts
//!   in argv can start a second message.
//! - TCP uses octet-counted framing (RFC 6587), so no byte of a message can
//!   end it early.
//! - A message larger than `max_message_bytes` is cut at a UTF-8 boundary
//!   and ends with a marker saying how many bytes were cut (the JSON file
//!   keeps the whole document).
//! - When the daemon is away (restart, socket gone), messages wait in a
//!   bounded queue and go out, in order, once it is back; a TCP connection
//!   the daemon closed is noticed before writing on it. Overflow of the queue
//!   drops the oldest and counts it. UDP has no acknowledgement: a message
//!   sent while nobody listens is lost, as with any UDP syslog.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::alert::{Alert, escape_for_terminal, rfc3339_millis};

/// Where messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Unix(PathBuf),
    Udp(String),
    Tcp(String),
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Rfc5424,
    Rfc3164,
}

/// Facility names of syslog(3), to their numbers.
pub fn facility_code(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u8)
}

/// Severity of an alert's rule as syslog severity.
fn severity_code(severity: &str) -> u8 {
    match severity {
        "critical" => 2,
        "high" => 3,
        "medium" => 4,
        _ => 5,
    }
}

/// `[syslog]`: whether and how alerts also go to syslog.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// Send alerts to syslog too.
    pub enabled: bool,
    /// `unix:PATH`, `udp:HOST:PORT` or `tcp:HOST:PORT`.
    pub address: String,
    pub format: Format,
    pub facility: String,
    pub app_name: String,
    /// Longer messages are cut (at a UTF-8 boundary, with a marker).
    pub max_message_bytes: usize,
    /// Messages kept while the daemon is away.
    pub queue: usize,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            enabled: false,
            address: "unix:/dev/log".into(),
            format: Format::Rfc5424,
            facility: "authpriv".into(),
            app_name: "mapwatch".into(),
            max_message_bytes: 8192,
            queue: 10_000,
        }
    }
}

impl SyslogConfig {
    /// The transport named by `address`.
    pub fn transport(&self) -> Option<Transport> {
        let (kind, rest) = self.address.split_once(':')?;
        match kind {
            "unix" if !rest.is_empty() => Some(Transport::Unix(PathBuf::from(rest))),
            "udp" if rest.contains(':') => Some(Transport::Udp(rest.to_owned())),
            "tcp" if rest.contains(':') => Some(Transport::Tcp(rest.to_owned())),
            _ => None,
        }
    }
}

impl SyslogConfig {
    /// The first key whose value cannot be used, and what it must be.
    pub fn invalid_key(&self) -> Option<(&'static str, &'static str)> {
        if self.transport().is_none() {
            return Some(("address", "`unix:PATH`, `udp:HOST:PORT` or `tcp:HOST:PORT`"));
        }
        if facility_code(&self.facility).is_none() {
            return Some(("facility", "a syslog facility name (e.g. authpriv, local0)"));
        }
        if self.max_message_bytes < 480 {
            return Some(("max_message_bytes", "at least 480"));
        }
        None
    }

    /// The sink these settings describe, `None` when syslog is off.
    pub fn open(&self, hostname: &str) -> Option<SyslogSink> {
        if !self.enabled {
            return None;
        }
        // Both were checked with the configuration ([`Self::invalid_key`]).
        let transport = self.transport()?;
        let facility = facility_code(&self.facility)?;
        tracing::info!(
            "alerts also go to syslog ({transport:?}, {:?}, {})",
            self.format,
            self.facility
        );
        Some(SyslogSink::new(SyslogOptions {
            transport,
            format: self.format,
            facility,
            app_name: self.app_name.clone(),
            hostname: hostname.to_owned(),
            max_message_bytes: self.max_message_bytes,
            queue: self.queue,
        }))
    }
}

pub struct SyslogOptions {
    pub transport: Transport,
    pub format: Format,
    pub facility: u8,
    pub app_name: String,
    pub hostname: String,
    pub max_message_bytes: usize,
    pub queue: usize,
}

enum Connection {
    Unix(UnixDatagram),
    Udp(UdpSocket),
    Tcp(TcpStream),
}

pub struct SyslogSink {
    options: SyslogOptions,
    connection: Option<Connection>,
    queue: VecDeque<Vec<u8>>,
    next_attempt: Instant,
    down_since: Option<Instant>,
    pub sent: u64,
    pub dropped: u64,
    pub truncated: u64,
}

const RETRY: Duration = Duration::from_millis(500);

impl SyslogSink {
    pub fn new(options: SyslogOptions) -> Self {
        SyslogSink {
            options,
            connection: None,
            queue: VecDeque::new(),
            next_attempt: Instant::now(),
            down_since: None,
            sent: 0,
            dropped: 0,
            truncated: 0,
        }
    }

    /// Queues the alert and sends what can be sent.
    pub fn send(&mut self, alert: &Alert) {
        let message = self.format(alert);
        if self.queue.len() >= self.options.queue.max(1) {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(message);
        self.drain();
    }

    /// Sends queued messages, reconnecting when it is time to try again.
    pub fn drain(&mut self) {
        while !self.queue.is_empty() {
            if self.connection.is_none() && !self.connect() {
                return;
            }
            let Some(message) = self.queue.pop_front() else {
                return;
            };
            match self.write(&message) {
                Ok(()) => {
                    self.sent += 1;
                    if let Some(since) = self.down_since.take() {
                        tracing::info!("syslog is back after {:?}", since.elapsed());
                    }
                }
                Err(e) => {
                    // Not sent: it stays first in line.
                    self.queue.push_front(message);
                    self.connection = None;
                    self.went_down(&e);
                    return;
                }
            }
        }
    }

    /// Messages waiting for the daemon.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    fn went_down(&mut self, e: &io::Error) {
        if self.down_since.is_none() {
            tracing::warn!(
                "syslog ({:?}) unavailable: {e}; queueing alerts (at most {})",
                self.options.transport,
                self.options.queue
            );
            self.down_since = Some(Instant::now());
        }
        self.next_attempt = Instant::now() + RETRY;
    }

    fn connect(&mut self) -> bool {
        if Instant::now() < self.next_attempt {
            return false;
        }
        let connected = match &self.options.transport {
            Transport::Unix(path) => UnixDatagram::unbound()
                .and_then(|s| s.connect(path).map(|()| s))
                .map(Connection::Unix),
            Transport::Udp(addr) => UdpSocket::bind(("0.0.0.0", 0))
                .and_then(|s| s.connect(addr).map(|()| s))
                .map(Connection::Udp),
            Transport::Tcp(addr) => TcpStream::connect(addr).map(Connection::Tcp),
        };
        match connected {
            Ok(c) => {
                self.connection = Some(c);
                true
            }
            Err(e) => {
                self.went_down(&e);
                false
            }
        }
    }

    fn write(&mut self, message: &[u8]) -> io::Result<()> {
        match &mut self.connection {
            Some(Connection::Unix(s)) => s.send(message).map(|_| ()),
            Some(Connection::Udp(s)) => s.send(message).map(|_| ()),
            Some(Connection::Tcp(s)) => {
                if peer_closed(s) {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "the syslog daemon closed the connection",
                    ));
                }
                // RFC 6587 octet counting: "LEN SP MSG".
                let mut framed = format!("{} ", message.len()).into_bytes();
                framed.extend_from_slice(message);
                s.write_all(&framed)
            }
            None => Err(io::Error::other("not connected")),
        }
    }

    /// The message for an alert, within the size limit.
    pub fn format(&mut self, alert: &Alert) -> Vec<u8> {
        let o = &self.options;
        let severity = alert.document["rule"]["severity"]
            .as_str()
            .or(alert.document["mapwatch"]["rule"]["severity"].as_str())
            .map_or(5, severity_code);
        let priority = u16::from(o.facility) * 8 + u16::from(severity);
        let summary = escape_for_terminal(alert.summary.as_bytes()).replace('@', "\\x40");
        let document = serde_json::to_string(&alert.document).unwrap_or_default();
        let pid = std::process::id();
        let header = match o.format {
            Format::Rfc5424 => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let stamp = rfc3339_millis(now.as_secs(), now.subsec_millis() as u16);
                format!(
                    "<{priority}>1 {stamp} {} {} {pid} alert - ",
                    o.hostname, o.app_name
                )
            }
            Format::Rfc3164 => {
                format!(
                    "<{priority}>{} {} {}[{pid}]: ",
                    rfc3164_time(),
                    o.hostname,
                    o.app_name
                )
            }
        };
        let mut message = format!("{header}{summary} @cee:{document}").into_bytes();
        if message.len() > o.max_message_bytes {
            let cut = message.len();
            // Room for the marker at its longest.
            let mut keep = o
                .max_message_bytes
                .saturating_sub(format!("...[truncated {cut} bytes]").len());
            while keep > 0 && std::str::from_utf8(&message[..keep]).is_err() {
                keep -= 1;
            }
            message.truncate(keep);
            message.extend_from_slice(format!("...[truncated {} bytes]", cut - keep).as_bytes());
            self.truncated += 1;
        }
        message
    }
}

/// True when the peer has closed the connection (readable with EOF).
fn peer_closed(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let closed = matches!(stream.peek(&mut probe), Ok(0));
    let _ = stream.set_nonblocking(false);
    closed
}

/// `Mmm dd hh:mm:ss` in UTC (RFC 3164 has no zone; UTC avoids depending on
/// the process's local-time database).
fn rfc3164_time() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = rfc3339_millis(now.as_secs(), 0);
    // YYYY-MM-DDTHH:MM:SS.mmmZ
    let month: usize = stamp.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    let day: u32 = stamp.get(8..10).and_then(|d| d.parse().ok()).unwrap_or(1);
    let time = stamp.get(11..19).unwrap_or("00:00:00");
    format!("{} {day:>2} {time}", MONTHS[month.clamp(1, 12) - 1])
}

/// The document in a message formatted by [`SyslogSink::format`].
pub fn document_of(message: &str) -> Option<serde_json::Value> {
    let start = message.find("@cee:")? + "@cee:".len();
    serde_json::from_str(&message[start..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sink(format: Format, max: usize) -> SyslogSink {
        SyslogSink::new(SyslogOptions {
            transport: Transport::Unix(PathBuf::from("/nonexistent")),
            format,
            facility: 10,
            app_name: "mapwatch".into(),
            hostname: "host".into(),
            max_message_bytes: max,
            queue: 4,
        })
    }

    fn alert(arg: &str) -> Alert {
        Alert {
            document: json!({"rule": {"severity": "low"}, "process": {"args": ["cat", arg]}}),
            summary: format!("low rule: cat {arg} @cee:{{\"forged\":1}}"),
            ..Alert::default()
        }
    }

    #[test]
    fn one_line_whatever_the_argument() {
        let hostile = "/proc/1/maps\nJan  1 00:00:00 host sshd[1]: Accepted password for root";
        for format in [Format::Rfc5424, Format::Rfc3164] {
            let message =
                String::from_utf8(sink(format, 65536).format(&alert(hostile))).expect("utf-8");
            assert!(
                !message.contains('\n') && !message.contains('\r'),
                "{message}"
            );
            assert!(message.starts_with("<85>"), "authpriv.notice: {message}");
            let doc = document_of(&message).expect("the document follows the first @cee:");
            assert_eq!(doc["process"]["args"][1], hostile, "recoverable");
            assert!(
                message.contains("\\x0aJan"),
                "the summary shows the escaped newline: {message}"
            );
        }
    }

    #[test]
    fn oversized_messages_are_cut_at_a_utf8_boundary_with_a_marker() {
        let mut s = sink(Format::Rfc5424, 300);
        let message = s.format(&alert(&"é".repeat(500)));
        let text = String::from_utf8(message).expect("still valid UTF-8");
        assert!(text.len() <= 300 + 40, "{}", text.len());
        assert!(text.contains("...[truncated "), "{text}");
        assert_eq!(s.truncated, 1);
    }

    #[test]
    fn a_missing_daemon_queues_boundedly() {
        let mut s = sink(Format::Rfc5424, 4096);
        for n in 0..10 {
            s.send(&alert(&n.to_string()));
        }
        assert_eq!(s.pending(), 4);
        assert_eq!(s.dropped, 6);
        assert_eq!(s.sent, 0);
    }

    #[test]
    fn facilities() {
        assert_eq!(facility_code("authpriv"), Some(10));
        assert_eq!(facility_code("local7"), Some(23));
        assert_eq!(facility_code("nope"), None);
    }
}
