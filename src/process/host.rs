//! Facts about this host and its users, looked up once: the host name and
//! kernel release every document carries, and uid -> user name.

use std::collections::HashMap;

use crate::audit::assemble::IdNames;

/// Facts about this host, gathered once at start.
#[derive(Clone, Debug)]
pub struct HostInfo {
    pub name: String,
    pub kernel: String,
}

impl HostInfo {
    pub fn detect() -> Self {
        let name = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        HostInfo { name, kernel }
    }
}

/// uid -> user name and gid -> group name, looked up once per id.
#[derive(Default)]
pub struct UserNames {
    cache: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
    /// The ids are another host's (an aggregated node's): this host's
    /// account database does not name them; only that host's own names,
    /// from ENRICHED records, do.
    other_host: bool,
}

impl UserNames {
    pub fn of_another_host() -> Self {
        UserNames {
            other_host: true,
            ..Self::default()
        }
    }

    /// Takes the names an ENRICHED record gives its ids, for another
    /// host's ids only: that host named them; this host's own are looked
    /// up here.
    pub fn learn(&mut self, names: &IdNames) {
        if !self.other_host {
            return;
        }
        let text = |name: &[u8]| Some(String::from_utf8_lossy(name).into_owned());
        for (uid, name) in &names.users {
            self.cache.insert(*uid, text(name));
        }
        for (gid, name) in &names.groups {
            self.groups.insert(*gid, text(name));
        }
    }

    pub fn name(&mut self, uid: u32) -> Option<&str> {
        if self.other_host {
            return self.cache.get(&uid).and_then(Option::as_deref);
        }
        self.cache
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .as_deref()
    }

    pub fn group_name(&mut self, gid: u32) -> Option<&str> {
        if self.other_host {
            return self.groups.get(&gid).and_then(Option::as_deref);
        }
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .as_deref()
    }
}
