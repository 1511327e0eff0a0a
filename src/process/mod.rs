//! Processes behind events: the process table, procfs reads, and the session
//! and entry leaders an event's rule and alert need. This is the one seam
//! to other processes' procfs (`stat`, `live`) and to the grammar of its
//! paths (`proc_path`): the rest of mapwatch asks here.
//!
//! Contract: [`EventContext`] resolves each relation at most once per event,
//! and only when a rule or an alert asks for it, so events that fail a rule's
//! cheap predicates cost no procfs walk.

pub mod at_read;
pub mod container;
pub mod history;
pub mod host;
pub mod leader;
pub mod live;
pub mod mountinfo;
pub mod pid_ns;
pub mod proc_path;
pub mod procfs;
pub mod procfs_instances;
pub mod relative;
pub mod stat;
pub mod table;

use std::time::Instant;

use serde::Deserialize;

use leader::{EntryLeader, LeaderResolver, Related};
use relative::{Relation, Relative};
pub use table::ProcessTable;

/// `[process]`: the process table.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Processes remembered, live and recently gone.
    pub table_capacity: usize,
    /// How long a gone process stays in the table, seconds.
    pub gone_grace_secs: u64,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            table_capacity: 65536,
            gone_grace_secs: 10,
        }
    }
}

impl ProcessConfig {
    /// The first key whose value cannot be used, and what it must be.
    pub fn invalid_key(&self) -> Option<(&'static str, &'static str)> {
        (self.table_capacity < 1024).then_some(("table_capacity", "at least 1024"))
    }
}

/// The process an event is about, with lazily resolved relations.
pub struct EventContext<'t> {
    pid: u32,
    ppid: Option<u32>,
    resolver: LeaderResolver<'t>,
    entry_leader: Option<Option<EntryLeader>>,
    session_leader: Option<Option<Related>>,
    parent: Option<Option<Related>>,
    group_leader: Option<Option<Related>>,
    /// By [`Relation::index`].
    relatives: [Option<Option<Relative>>; 4],
}

impl<'t> EventContext<'t> {
    /// For an exec event: the parent is the event's ppid, and leader
    /// decisions see the exec'ing process as the program it was before.
    pub fn for_exec(pid: u32, ppid: u32, table: &'t mut ProcessTable, now: Instant) -> Self {
        Self::build(pid, Some(ppid), LeaderResolver::new(table, Some(pid), now))
    }

    /// For a read by `reader` ([`at_read::identify`]), seen at `seen` and
    /// taken off the fanotify queue by read(2) number `taken_by`, after the
    /// exec that made the reader what it was.
    pub fn for_read(
        reader: (u32, &at_read::Reader),
        table: &'t mut ProcessTable,
        seen: Instant,
        taken_by: u64,
    ) -> Self {
        let (pid, reader) = reader;
        let resolver = LeaderResolver::new(table, None, seen).placed(reader.exec_serial, taken_by);
        Self::build(pid, reader.ppid, resolver)
    }

    fn build(pid: u32, ppid: Option<u32>, resolver: LeaderResolver<'t>) -> Self {
        EventContext {
            pid,
            ppid,
            resolver,
            entry_leader: None,
            session_leader: None,
            parent: None,
            group_leader: None,
            relatives: Default::default(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn ppid(&self) -> Option<u32> {
        self.ppid
    }

    pub fn entry_leader(&mut self) -> Option<&EntryLeader> {
        let pid = self.pid;
        let resolver = &mut self.resolver;
        self.entry_leader
            .get_or_insert_with(|| resolver.entry_leader(pid))
            .as_ref()
    }

    /// True when the entry leader was asked for and could not be resolved.
    pub fn entry_leader_unresolved(&self) -> bool {
        matches!(self.entry_leader, Some(None))
    }

    /// Whether the entry leader, if resolved, was found by inference.
    pub fn entry_leader_inferred(&self) -> bool {
        matches!(&self.entry_leader, Some(Some(e)) if !e.inferred.is_empty())
    }

    pub fn session_leader(&mut self) -> Option<&Related> {
        let pid = self.pid;
        let resolver = &mut self.resolver;
        self.session_leader
            .get_or_insert_with(|| resolver.session_leader(pid))
            .as_ref()
    }

    pub fn parent(&mut self) -> Option<&Related> {
        let ppid = self.ppid;
        let resolver = &mut self.resolver;
        self.parent
            .get_or_insert_with(|| ppid.and_then(|ppid| resolver.parent(ppid)))
            .as_ref()
    }

    /// `process.parent.executable`: the table's (its exec event, or procfs
    /// read once while it lives); the log's exec history when replaying.
    pub fn parent_executable(&mut self) -> Option<&[u8]> {
        let (parent, table) = self.relative(Relation::Parent)?;
        parent.executable(table)
    }

    /// `process.group_leader`: the leader of the process group, from
    /// procfs while the process lives (a log does not record groups).
    pub fn group_leader(&mut self) -> Option<&Related> {
        let pid = self.pid;
        let resolver = &mut self.resolver;
        self.group_leader
            .get_or_insert_with(|| {
                if resolver.table().is_history() {
                    return None;
                }
                let pgrp = stat::read_stat(pid).ok()?.pgrp;
                (pgrp != 0).then(|| resolver.parent(pgrp)).flatten()
            })
            .as_ref()
    }

    /// A related process, for facts beyond its pid and name, with the
    /// table its facts are read from first.
    pub fn relative(&mut self, relation: Relation) -> Option<(&mut Relative, &mut ProcessTable)> {
        if self.relatives[relation.index()].is_none() {
            // Each is found by a table lookup, which refreshes its entry.
            let pid = match relation {
                Relation::Parent => self.parent().map(|p| p.pid),
                Relation::SessionLeader => self.session_leader().map(|r| r.pid),
                Relation::EntryLeader => self.entry_leader().map(|e| e.pid),
                Relation::GroupLeader => self.group_leader().map(|r| r.pid),
            };
            self.relatives[relation.index()] = Some(pid.map(Relative::new));
        }
        let relative = self.relatives[relation.index()].as_mut()?.as_mut()?;
        Some((relative, self.resolver.table()))
    }

    /// The process table, for lookups beyond the leaders.
    pub fn table(&mut self) -> &mut ProcessTable {
        self.resolver.table()
    }
}
