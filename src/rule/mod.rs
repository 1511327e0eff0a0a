//! Detection rules: their metadata and their evaluation against exec events.
//!
//! Contract: a rule decides on an [`EventContext`], asking for the cheap
//! fields of the event first and for procfs-backed relations (leaders) only
//! when those hold. The seed rule, "Suspicious /proc/maps Discovery" (Elastic,
//! v3), is built in with exactly its query's Elasticsearch semantics:
//!
//! ```text
//! process where host.os.type == "linux" and event.type == "start" and event.action == "exec" and
//! process.name in ("cat", "grep") and process.args : "/proc/*/maps" and process.entry_leader.name in (
//! "bash", "dash", "sh", "tcsh", "csh", "zsh", "ksh", "fish"
//! )
//! ```
//!
//! `in` is case-sensitive and exact; `:` is a case-insensitive whole-value
//! wildcard match; on the array `process.args` (argv[0] included) any element
//! may match; a missing field (an unresolved entry leader) never matches.

pub mod wildcard;

use crate::process::EventContext;
use wildcard::Wildcard;

/// A MITRE ATT&CK reference (`threat.tactic`, `threat.technique`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttackRef {
    pub id: String,
    pub name: String,
    pub reference: String,
}

/// What an alert says about the rule that raised it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMeta {
    pub name: String,
    pub rule_id: String,
    pub description: String,
    pub version: u32,
    pub severity: String,
    pub risk_score: u32,
    pub references: Vec<String>,
    pub author: Vec<String>,
    pub license: String,
    pub ruleset: String,
    pub framework: String,
    pub tactic: AttackRef,
    pub technique: AttackRef,
}

/// The seed rule, compiled.
pub struct ProcMapsDiscovery {
    meta: RuleMeta,
    names: [&'static [u8]; 2],
    args: Wildcard,
    entry_leader_names: [&'static [u8]; 8],
}

impl Default for ProcMapsDiscovery {
    fn default() -> Self {
        ProcMapsDiscovery {
            meta: seed_meta(),
            names: [b"cat", b"grep"],
            args: Wildcard::new(b"/proc/*/maps"),
            entry_leader_names: [
                b"bash", b"dash", b"sh", b"tcsh", b"csh", b"zsh", b"ksh", b"fish",
            ],
        }
    }
}

impl ProcMapsDiscovery {
    pub fn meta(&self) -> &RuleMeta {
        &self.meta
    }

    /// `host.os.type == "linux"`, `event.type == "start"` and
    /// `event.action == "exec"` hold for every [`EventContext`] (a successful
    /// exec on this Linux host); the rest is checked cheapest first.
    pub fn matches(&self, ctx: &mut EventContext<'_, '_>) -> bool {
        let event = ctx.event;
        self.names.contains(&event.name())
            && event.argv.iter().any(|arg| self.args.matches(arg))
            && ctx
                .entry_leader()
                .is_some_and(|leader| self.entry_leader_names.contains(&leader.name.as_slice()))
    }

    /// The maps files the event's arguments name (`file.path`).
    pub fn matching_args<'a>(&self, ctx: &EventContext<'a, '_>) -> Vec<&'a [u8]> {
        ctx.event
            .argv
            .iter()
            .filter(|arg| self.args.matches(arg))
            .collect()
    }
}

fn seed_meta() -> RuleMeta {
    RuleMeta {
        name: "Suspicious /proc/maps Discovery".into(),
        rule_id: "2f95540c-923e-4f57-9dae-de30169c68b9".into(),
        description: "Monitors for /proc/*/maps file reads. The /proc/*/maps file in Linux provides a memory map \
            for a specific process, detailing the memory segments, permissions, and what files are mapped to these \
            segments. Attackers may read a process's memory map to identify memory addresses for code injection or \
            process hijacking."
            .into(),
        version: 3,
        severity: "low".into(),
        risk_score: 21,
        references: Vec::new(),
        author: vec!["Elastic".into()],
        license: "Elastic License v2".into(),
        ruleset: "elastic-prebuilt".into(),
        framework: "MITRE ATT&CK".into(),
        tactic: AttackRef {
            id: "TA0007".into(),
            name: "Discovery".into(),
            reference: "https://attack.mitre.org/tactics/TA0007/".into(),
        },
        technique: AttackRef {
            id: "T1057".into(),
            name: "Process Discovery".into(),
            reference: "https://attack.mitre.org/techniques/T1057/".into(),
        },
    }
}
