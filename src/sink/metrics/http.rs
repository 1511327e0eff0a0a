//! The metrics endpoint: a small, read-only HTTP/1.0 server for `GET
//! /metrics`, `/healthz` and `/status`, on TCP or a unix socket.
//!
//! Contract: bounded in every dimension, so that no client, slow, hostile
//! or numerous, costs detection anything. One acceptor thread hands
//! connections to [`WORKERS`] worker threads through a queue of
//! [`QUEUED`]; a connection that finds the queue full is closed at once. A
//! request may take [`REQUEST_BYTES`] and [`DEADLINE`] in all, reading and
//! writing; past either the connection is closed. Nothing a client sends
//! reaches the pipeline: the handlers only read what it published.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Listen, Metrics};

const WORKERS: usize = 2;
const QUEUED: usize = 16;
const REQUEST_BYTES: usize = 8192;
const DEADLINE: Duration = Duration::from_secs(2);

/// A running endpoint; a unix socket's file is removed when it is dropped.
pub struct MetricsServer {
    unix_path: Option<PathBuf>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

enum Acceptor {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Acceptor {
    fn bind(listen: &Listen) -> io::Result<Acceptor> {
        let named = |e: io::Error, what: String| io::Error::new(e.kind(), format!("{what}: {e}"));
        match listen {
            Listen::Tcp(addr) => TcpListener::bind(addr)
                .map(Acceptor::Tcp)
                .map_err(|e| named(e, format!("[metrics] listen {addr}"))),
            Listen::Unix(path) => {
                // A socket file left by an earlier run; anything else there is
                // not ours to remove, and binding then fails and says so.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = std::fs::remove_file(path);
                }
                UnixListener::bind(path)
                    .map(Acceptor::Unix)
                    .map_err(|e| named(e, format!("[metrics] listen unix:{}", path.display())))
            }
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        match self {
            Acceptor::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Acceptor::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

impl MetricsServer {
    pub fn start(listen: &Listen, metrics: Arc<Metrics>) -> io::Result<MetricsServer> {
        let acceptor = Acceptor::bind(listen)?;
        let (tx, rx) = sync_channel::<Stream>(QUEUED);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..WORKERS {
            let rx = rx.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("mapwatch-http-{i}"))
                .spawn(move || work(&rx, &metrics))?;
        }
        std::thread::Builder::new()
            .name("mapwatch-http".into())
            .spawn(move || accept_loop(&acceptor, &tx, &metrics))?;
        Ok(MetricsServer {
            unix_path: match listen {
                Listen::Unix(path) => Some(path.clone()),
                Listen::Tcp(_) => None,
            },
        })
    }
}

fn accept_loop(acceptor: &Acceptor, tx: &SyncSender<Stream>, metrics: &Metrics) {
    loop {
        match acceptor.accept() {
            Ok(stream) => match tx.try_send(stream) {
                Ok(()) => {}
                // Dropping the stream closes it: busy workers are no reason
                // to queue without bound.
                Err(TrySendError::Full(_)) => metrics.http_rejected.inc(),
                Err(TrySendError::Disconnected(_)) => return,
            },
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                // Out of descriptors: wait for clients to go rather than spin.
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(_) => {}
        }
    }
}

fn work(rx: &Mutex<Receiver<Stream>>, metrics: &Metrics) {
    loop {
        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(mut stream) = next else { return };
        let _ = answer(&mut stream, metrics);
    }
}

/// Reads one request within the limits and answers it.
fn answer(stream: &mut Stream, metrics: &Metrics) -> io::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    let mut request = [0u8; REQUEST_BYTES];
    let mut len = 0;
    let head_end = loop {
        if let Some(end) = find_head_end(&request[..len]) {
            break end;
        }
        if len == request.len() {
            return respond(stream, deadline, 431, "text/plain", "request too large\n");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        stream.set_timeouts(left)?;
        match stream.read(&mut request[len..])? {
            0 => return Ok(()),
            n => len += n,
        }
    };
    let (status, content_type, body) = route(&request[..head_end], metrics);
    respond(stream, deadline, status, content_type, &body)
}

fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

fn route(head: &[u8], metrics: &Metrics) -> (u16, &'static str, String) {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|t| t.split(|b| *b == b'?').next().unwrap_or_default());
    match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => (200, Metrics::content_type(), metrics.exposition()),
        (Some(b"GET"), Some(b"/healthz")) => {
            let verdict = metrics.verdict();
            let body = match &verdict.reason {
                None => "{\"status\":\"ok\"}\n".to_owned(),
                Some(reason) => {
                    serde_json::json!({"status": "unhealthy", "reason": reason}).to_string() + "\n"
                }
            };
            (
                if verdict.healthy { 200 } else { 503 },
                "application/json",
                body,
            )
        }
        (Some(b"GET"), Some(b"/status")) => {
            (200, "application/json", metrics.status_document() + "\n")
        }
        (Some(b"GET"), Some(_)) => (
            404,
            "text/plain",
            "not found: /metrics, /healthz, /status\n".into(),
        ),
        (Some(_), Some(_)) => (405, "text/plain", "only GET\n".into()),
        _ => (400, "text/plain", "bad request\n".into()),
    }
}

fn respond(
    stream: &mut Stream,
    deadline: Instant,
    status: u16,
    content_type: &str,
    body: &str,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let head = format!(
        "HTTP/1.0 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    write_by(stream, deadline, head.as_bytes())?;
    write_by(stream, deadline, body.as_bytes())
}

/// Writes `bytes` unless the deadline passes first: each write may wait
/// only for what is left of it, so a client that does not read costs its
/// worker [`DEADLINE`] at most.
fn write_by(stream: &mut Stream, deadline: Instant, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_timeouts(left)?;
        match stream.write(bytes)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => bytes = &bytes[n..],
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(find_head_end(b"GET / HTTP/1.0\r\n\r\nbody"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.0\r\n"), None);
    }
}
