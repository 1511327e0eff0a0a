//! Which container a process runs in: the id and runtime from its cgroup
//! path, and, where the runtime keeps them readable on the host, the
//! container's name and image.
//!
//! Contract: [`Containers::of_pid`] reads `/proc/<pid>/cgroup` once per
//! call (alerts only ask) and looks the path up in a cache keyed by the
//! cgroup path: a container's names are read once, when its first alert
//! is built. [`from_cgroup`] knows the paths Docker, containerd (CRI and
//! plain), CRI-O, podman (systemd and cgroupfs managers) and LXC make; a
//! runtime's own process (conmon, a shim) is not in a container. The
//! names come from the runtime's files: podman's `containers.json`,
//! Docker's `config.v2.json`, the OCI bundle annotations of CRI-O and
//! containerd; where none is readable, the id and runtime stand alone.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde_json::Value;

use super::procfs;

/// Cgroup paths remembered (each a container, or none).
const CACHE_CAPACITY: usize = 4096;
/// Files of a runtime's state read at most (a busy host's podman list).
const MAX_STATE_FILE: u64 = 16 << 20;

/// `container.*` of ECS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// `docker`, `containerd`, `cri-o`, `podman`, `lxc`.
    pub runtime: &'static str,
    pub name: Option<String>,
    pub image: Option<String>,
}

/// The runtime and id a cgroup path names, when it is a container's.
pub fn from_cgroup(path: &[u8]) -> Option<(&'static str, String)> {
    let parts: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    for (at, part) in parts.iter().enumerate().rev() {
        let part = part.strip_suffix(b".scope").unwrap_or(part);
        let prefixed = [
            (&b"docker-"[..], "docker"),
            (b"cri-containerd-", "containerd"),
            (b"crio-", "cri-o"),
            (b"libpod-", "podman"),
        ];
        for (prefix, runtime) in prefixed {
            if let Some(id) = part.strip_prefix(prefix).filter(|id| is_container_id(id)) {
                return Some((runtime, text(id)));
            }
        }
        let parent = at.checked_sub(1).map(|p| parts[p]);
        if is_container_id(part) {
            match parent {
                Some(b"docker") => return Some(("docker", text(part))),
                // Kubernetes with the cgroupfs driver: kubepods/<qos>/pod<uid>/<id>.
                Some(p) if p.starts_with(b"pod") => return Some(("containerd", text(part))),
                _ => {}
            }
        }
        // containerd's systemd driver on cgroup v1: `<slice>:cri-containerd:<id>`.
        if let Some(at) = part.windows(16).position(|w| w == b":cri-containerd:") {
            let id = &part[at + 16..];
            if is_container_id(id) {
                return Some(("containerd", text(id)));
            }
        }
        if let Some(name) = part.strip_prefix(b"lxc.payload.") {
            return Some(("lxc", text(name)));
        }
        if matches!(parent, Some(b"lxc" | b"lxc.payload")) {
            return Some(("lxc", text(part)));
        }
    }
    None
}

/// A runtime's id: 64 hex digits (conmon's and shims' own cgroups are
/// `libpod-conmon-<id>`, `crio-conmon-<id>`: not ids).
fn is_container_id(id: &[u8]) -> bool {
    id.len() == 64 && id.iter().all(u8::is_ascii_hexdigit)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The cgroup path of a `/proc/<pid>/cgroup`: the unified hierarchy's
/// (`0::`), else the first controller's line that names a container.
pub fn cgroup_path(cgroup: &[u8]) -> Option<&[u8]> {
    let lines = || {
        cgroup
            .split(|b| *b == b'\n')
            .filter_map(|l| l.splitn(3, |b| *b == b':').nth(2))
    };
    lines()
        .find(|path| from_cgroup(path).is_some())
        .or_else(|| lines().next())
}

/// Containers by cgroup path.
#[derive(Default)]
pub struct Containers {
    by_cgroup: FxHashMap<Box<[u8]>, Option<Arc<Container>>>,
}

impl Containers {
    /// The container of the live process `pid`; `None` when it is in none
    /// (or gone).
    pub fn of_pid(&mut self, pid: u32) -> Option<Arc<Container>> {
        let mut buf = [0u8; 4096];
        let filled = procfs::read_into(pid, "cgroup", &mut buf).ok()?;
        let path = cgroup_path(&buf[..filled])?;
        if let Some(known) = self.by_cgroup.get(path) {
            return known.clone();
        }
        let found = from_cgroup(path).map(|(runtime, id)| Arc::new(described(runtime, id)));
        if self.by_cgroup.len() >= CACHE_CAPACITY {
            self.by_cgroup.clear();
        }
        self.by_cgroup.insert(path.into(), found.clone());
        found
    }
}

/// The container with what its runtime's files say of it.
fn described(runtime: &'static str, id: String) -> Container {
    let (name, image) = match runtime {
        "podman" => podman_names(&id),
        "docker" => docker_names(&id),
        "cri-o" => bundle_names(
            &format!("/run/containers/storage/overlay-containers/{id}/userdata/config.json"),
            "io.kubernetes.container.name",
            "io.kubernetes.cri-o.ImageName",
        ),
        "containerd" => bundle_names(
            &format!("/run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"),
            "io.kubernetes.cri.container-name",
            "io.kubernetes.cri.image-name",
        ),
        _ => (None, None),
    };
    Container {
        id,
        runtime,
        name,
        image,
    }
}

type Names = (Option<String>, Option<String>);

fn read_json(path: &str) -> Option<Value> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_STATE_FILE).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn non_empty(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Podman (root): containers/storage's list of containers.
fn podman_names(id: &str) -> Names {
    let Some(Value::Array(list)) =
        read_json("/var/lib/containers/storage/overlay-containers/containers.json")
    else {
        return (None, None);
    };
    let Some(entry) = list.iter().find(|c| c["id"].as_str() == Some(id)) else {
        return (None, None);
    };
    let name = non_empty(entry["names"].get(0));
    let metadata: Option<Value> = entry["metadata"]
        .as_str()
        .and_then(|m| serde_json::from_str(m).ok());
    let image = non_empty(metadata.as_ref().and_then(|m| m.get("image-name")));
    (name, image)
}

/// Docker: the container's own config.
fn docker_names(id: &str) -> Names {
    let Some(config) = read_json(&format!("/var/lib/docker/containers/{id}/config.v2.json")) else {
        return (None, None);
    };
    let name = non_empty(config.get("Name")).map(|n| n.trim_start_matches('/').to_owned());
    (name, non_empty(config["Config"].get("Image")))
}

/// An OCI bundle's annotations (CRI runtimes write the pod's names there).
fn bundle_names(path: &str, name_key: &str, image_key: &str) -> Names {
    let Some(config) = read_json(path) else {
        return (None, None);
    };
    let annotations = &config["annotations"];
    (
        non_empty(annotations.get(name_key)),
        non_empty(annotations.get(image_key)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "086a42608ea6e1ffe347a0470751bcecd0c03fe03ccd06f55352bcf948732dcc";

    #[test]
    fn runtimes_are_known_by_their_cgroup_paths() {
        let cases = [
            (format!("/libpod_parent/libpod-{ID}"), Some("podman")),
            (format!("/machine.slice/libpod-{ID}.scope"), Some("podman")),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), None),
            (format!("/system.slice/docker-{ID}.scope"), Some("docker")),
            (format!("/docker/{ID}"), Some("docker")),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope"
                ),
                Some("containerd"),
            ),
            (
                format!("/kubepods/besteffort/pod0f1e-22/{ID}"),
                Some("containerd"),
            ),
            (
                format!("/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"),
                Some("cri-o"),
            ),
            (
                format!("/kubepods.slice/kubepods-pod1.slice/crio-conmon-{ID}.scope"),
                None,
            ),
            ("/user.slice/user-0.slice/session-3.scope".to_owned(), None),
            ("/".to_owned(), None),
        ];
        for (path, runtime) in cases {
            let found = from_cgroup(path.as_bytes());
            assert_eq!(found.as_ref().map(|(r, _)| *r), runtime, "{path}");
            if let Some((_, id)) = found {
                assert_eq!(id, ID, "{path}");
            }
        }
        assert_eq!(
            from_cgroup(b"/lxc.payload.web1"),
            Some(("lxc", "web1".to_owned()))
        );
        assert_eq!(from_cgroup(b"/lxc/db"), Some(("lxc", "db".to_owned())));
    }

    #[test]
    fn the_path_naming_a_container_is_taken_from_a_hybrid_hierarchy() {
        let cgroup = format!(
            "9:name=systemd:/libpod_parent/libpod-{ID}\n4:memory:/libpod_parent/libpod-{ID}\n0::/\n"
        );
        assert_eq!(
            cgroup_path(cgroup.as_bytes()),
            Some(format!("/libpod_parent/libpod-{ID}").as_bytes())
        );
        assert_eq!(cgroup_path(b"0::/user.slice\n"), Some(&b"/user.slice"[..]));
    }
}
