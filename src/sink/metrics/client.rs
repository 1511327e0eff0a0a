//! `mapwatch status`: asks the running daemon over its metrics endpoint and
//! renders the answer for a terminal or a Nagios-style check.
//!
//! Contract: one `GET /status` within `TIMEOUT` (5 s); the answer is shown as a
//! table of mode, uptime, rules, health and every counter. What the daemon
//! sent is printed escaped: the endpoint could be someone else's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use super::Listen;
use crate::alert::escape_for_terminal;

const TIMEOUT: Duration = Duration::from_secs(5);
/// An answer larger than this is not mapwatch's.
const MAX_ANSWER: u64 = 1 << 20;

/// The daemon's status document.
pub fn fetch_status(listen: &Listen) -> Result<Value, String> {
    let request = b"GET /status HTTP/1.0\r\nHost: mapwatch\r\n\r\n";
    let mut answer = Vec::new();
    let read = match listen {
        Listen::Tcp(addr) => TcpStream::connect_timeout(addr, TIMEOUT).and_then(|mut s| {
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            s.write_all(request)?;
            s.take(MAX_ANSWER).read_to_end(&mut answer)
        }),
        Listen::Unix(path) => UnixStream::connect(path).and_then(|mut s| {
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            s.write_all(request)?;
            s.take(MAX_ANSWER).read_to_end(&mut answer)
        }),
    };
    let where_ = match listen {
        Listen::Tcp(addr) => addr.to_string(),
        Listen::Unix(path) => format!("unix:{}", path.display()),
    };
    read.map_err(|e| {
        format!(
            "asking mapwatch at {where_}: {e}; is the service running with [metrics] listen set?"
        )
    })?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{where_} sent no HTTP answer"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(format!(
            "{where_} answered {}",
            escape_for_terminal(status.as_bytes())
        ));
    }
    serde_json::from_str(body).map_err(|e| format!("{where_} sent a status that is not JSON: {e}"))
}

/// The status as a table.
pub fn render(status: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => escape_for_terminal(s.as_bytes()),
        Value::Null => "-".to_owned(),
        other => escape_for_terminal(other.to_string().as_bytes()),
    };
    let healthy = status["healthy"].as_bool() == Some(true);
    let mut rows = vec![
        (
            "health".to_owned(),
            if healthy {
                "OK".to_owned()
            } else {
                format!("UNHEALTHY: {}", text(&status["reason"]))
            },
        ),
        ("version".into(), text(&status["version"])),
        ("audit mode".into(), text(&status["mode"])),
        ("uptime".into(), uptime(status["uptime_seconds"].as_u64())),
        ("rules".into(), text(&status["rules"])),
        (
            "procfs watched".into(),
            text(&status["procfs_instances_watched"]),
        ),
    ];
    if let Some(counters) = status["counters"].as_object() {
        rows.extend(
            counters
                .iter()
                .map(|(name, value)| (escape_for_terminal(name.as_bytes()), text(value))),
        );
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

fn uptime(seconds: Option<u64>) -> String {
    let Some(s) = seconds else {
        return "-".into();
    };
    format!(
        "{}d {:02}:{:02}:{:02}",
        s / 86400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_shows_health_first_and_escapes_what_it_was_sent() {
        let table = render(&json!({
            "healthy": false, "reason": "kernel_lost grew by 3\u{1b}[2J", "mode": "unicast",
            "uptime_seconds": 90061, "rules": 2, "counters": {"records": 10}
        }));
        let first = table.lines().next().unwrap_or_default();
        assert!(first.starts_with("health"), "{table}");
        assert!(
            first.contains("UNHEALTHY: kernel_lost grew by 3\\x1b[2J"),
            "{table}"
        );
        assert!(table.contains("1d 01:01:01"), "{table}");
        assert!(table.contains("records"), "{table}");
    }
}
