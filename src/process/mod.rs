//! Processes behind events: the process table, procfs reads, and the session
//! and entry leaders an event's rule and alert need.
//!
//! Contract: [`EventContext`] resolves each relation at most once per event,
//! and only when a rule or an alert asks for it, so events that fail a rule's
//! cheap predicates cost no procfs walk.

pub mod leader;
pub mod stat;
pub mod table;

use std::time::Instant;

use crate::audit::assemble::ExecEvent;
use leader::{EntryLeader, LeaderResolver, Related};
pub use table::ProcessTable;

/// An exec event with lazily resolved relations.
pub struct EventContext<'e, 't> {
    pub event: &'e ExecEvent,
    resolver: LeaderResolver<'t>,
    entry_leader: Option<Option<EntryLeader>>,
    session_leader: Option<Option<Related>>,
    parent: Option<Option<Related>>,
}

impl<'e, 't> EventContext<'e, 't> {
    pub fn new(event: &'e ExecEvent, table: &'t mut ProcessTable, now: Instant) -> Self {
        EventContext {
            event,
            resolver: LeaderResolver::new(table, event, now),
            entry_leader: None,
            session_leader: None,
            parent: None,
        }
    }

    pub fn entry_leader(&mut self) -> Option<&EntryLeader> {
        let pid = self.event.pid;
        let resolver = &mut self.resolver;
        self.entry_leader
            .get_or_insert_with(|| resolver.entry_leader(pid))
            .as_ref()
    }

    /// True when the entry leader was asked for and could not be resolved.
    pub fn entry_leader_unresolved(&self) -> bool {
        matches!(self.entry_leader, Some(None))
    }

    pub fn session_leader(&mut self) -> Option<&Related> {
        let pid = self.event.pid;
        let resolver = &mut self.resolver;
        self.session_leader
            .get_or_insert_with(|| resolver.session_leader(pid))
            .as_ref()
    }

    pub fn parent(&mut self) -> Option<&Related> {
        let ppid = self.event.ppid;
        let resolver = &mut self.resolver;
        self.parent
            .get_or_insert_with(|| resolver.parent(ppid))
            .as_ref()
    }
}
