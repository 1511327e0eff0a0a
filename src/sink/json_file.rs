//! The JSON file sink: ECS documents, one per line, appended to a file that
//! log shippers (Filebeat, Elastic Agent, Vector, Fluent Bit) follow.
//!
//! Contract: the file is opened for appending and created with mode 0600
//! (its directory 0750); each alert is written with one `write` and flushed,
//! so a reader never sees half a line. The file is reopened on request
//! (SIGHUP) and whenever the path no longer names the open file (logrotate
//! moved it); `copytruncate` needs nothing, as appends go to the new end.
//! A failed write is reported once per failure streak and the alert is
//! counted as lost; the sink keeps going.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub struct JsonFile {
    path: PathBuf,
    file: Option<File>,
    line: Vec<u8>,
    failing: bool,
    pub written: u64,
    pub lost: u64,
}

fn open(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

impl JsonFile {
    pub fn open(path: &Path) -> io::Result<JsonFile> {
        Ok(JsonFile {
            path: path.to_owned(),
            file: Some(open(path)?),
            line: Vec::with_capacity(4096),
            failing: false,
            written: 0,
            lost: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes and reopens the path (after logrotate moved the file).
    pub fn reopen(&mut self) {
        self.file = None;
        match open(&self.path) {
            Ok(file) => self.file = Some(file),
            Err(e) => tracing::error!("reopening {}: {e}", self.path.display()),
        }
    }

    /// True when the path names another file than the open one, or none.
    fn moved(&self) -> bool {
        let Some(file) = &self.file else { return true };
        match (file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(open), Ok(named)) => open.ino() != named.ino() || open.dev() != named.dev(),
            _ => true,
        }
    }

    pub fn write(&mut self, document: &serde_json::Value) {
        if self.moved() {
            self.reopen();
        }
        self.line.clear();
        if serde_json::to_writer(&mut self.line, document).is_err() {
            self.lost += 1;
            return;
        }
        self.line.push(b'\n');
        let result = match &mut self.file {
            // One write of the whole line: with O_APPEND it lands whole.
            Some(file) => file.write_all(&self.line).and_then(|()| file.flush()),
            None => Err(io::Error::other("not open")),
        };
        match result {
            Ok(()) => {
                self.written += 1;
                if self.failing {
                    tracing::info!("writing alerts to {} works again", self.path.display());
                    self.failing = false;
                }
            }
            Err(e) => {
                self.lost += 1;
                if !self.failing {
                    tracing::error!(
                        "writing an alert to {}: {e}; alerts are lost until it works",
                        self.path.display()
                    );
                    self.failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn appends_one_line_per_alert_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/alerts.json");
        let mut sink = JsonFile::open(&path).expect("open");
        sink.write(&json!({"a": "x\ny"}));
        sink.write(&json!({"b": 2}));
        assert_eq!(lines(&path), vec![r#"{"a":"x\ny"}"#, r#"{"b":2}"#]);
        let mode = std::fs::metadata(&path).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn follows_a_moved_file_to_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alerts.json");
        let mut sink = JsonFile::open(&path).expect("open");
        sink.write(&json!({"n": 1}));
        std::fs::rename(&path, dir.path().join("alerts.json.1")).expect("rotate");
        sink.write(&json!({"n": 2}));
        assert_eq!(lines(&dir.path().join("alerts.json.1")), vec![r#"{"n":1}"#]);
        assert_eq!(lines(&path), vec![r#"{"n":2}"#]);
    }

    #[test]
    fn copytruncate_keeps_appending_at_the_new_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alerts.json");
        let mut sink = JsonFile::open(&path).expect("open");
        sink.write(&json!({"n": 1}));
        std::fs::copy(&path, dir.path().join("alerts.json.1")).expect("copy");
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        sink.write(&json!({"n": 2}));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "{\"n\":2}\n");
    }
}
