//! The node_exporter textfile: the exposition, rewritten every interval.
//!
//! Contract: the file is replaced atomically (written beside it, then
//! renamed), so the collector never reads half a file; a failure is a
//! warning when it starts and when it ends, not one per interval. Runs on a
//! thread of its own: a slow disk never holds up detection.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Metrics;

pub(super) fn start(path: PathBuf, every: Duration, metrics: Arc<Metrics>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("mapwatch-textfile".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                match write_atomically(&path, &metrics.exposition()) {
                    Ok(()) if failing => {
                        tracing::warn!("writing {} works again", path.display());
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        tracing::warn!("writing the metrics textfile {}: {e}", path.display());
                        failing = true;
                    }
                    Err(_) => {}
                }
                std::thread::sleep(every);
            }
        })
        .map(drop)
}

fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // node_exporter reads only `*.prom`: the temporary name is not one.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        // Readable by node_exporter's user, whatever the service's umask.
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
