//! The detector: records in, alerts out. The synchronous core that both
//! drivers run, the live service ([`crate::pipeline`]) and replay
//! ([`crate::replay`]).
//!
//! Contract: [`Detector`] owns all detection state (assembler, process
//! table, rules, correlator) and does no I/O other than procfs (none at
//! all for a recorded log's detector). Records go in one at a time or in a
//! batch, reads of memory maps as fanotify saw them; every alert leaves
//! through the `emit` callback, in the order it is decided. Malformed
//! records are counted and logged (sampled), never fatal.

use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alert::health::UnresolvedReads;
use crate::alert::{self, Alert, AlertInputs, StepFacts, escape_for_terminal};
use crate::audit::assemble::{
    Assembler, AssemblerStats, ExecEvent, MapQuery, MemoryAccess, SessionChange,
};
use crate::audit::config_change::removes_our_rule;
use crate::audit::record::{ParseError, Record};
use crate::audit::serial::{SerialStats, SerialTracker};
use crate::config::Config;
use crate::correlate::sequence::{Hit, MAX_ANCESTORS, SequenceStats, Sequences};
use crate::correlate::{Correlator, CorrelatorStats, Settle};
use crate::maps::{maps_args, to_host_pids};
use crate::process::at_read::{self, AtRead, Basis};
use crate::process::host::{HostInfo, UserNames};
use crate::process::live;
use crate::process::proc_path::Layout;
use crate::process::table::TableStats;
use crate::process::{EventContext, ProcessTable};
use crate::rule::RuleSet;
use crate::rule::eval::Category;
use crate::rule::live::{Act, ActFields, ExecFields};
use crate::source::RecordBatch;
use crate::source::fanotify::{Access, MapOpen, ReadBatch, ReadEvent, UnresolvedRead, Via};
use crate::source::netlink::RULE_KEY;

/// Counters of the detection core.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct DetectorStats {
    pub records: u64,
    pub malformed_records: u64,
    pub alerts: u64,
    pub unresolved_entry_leaders: u64,
    /// Entry leaders found through what a history table inferred.
    pub inferred_entry_leaders: u64,
    /// Reads whose reader was gone before anything but its pid was known.
    pub unattributed_reads: u64,
}

/// How long a missing serial may be overtaken before it counts as lost.
const SERIAL_GRACE: Duration = Duration::from_secs(2);

/// Malformed records logged in full before logging turns to sampling.
const MALFORMED_LOGGED: u64 = 10;
const MALFORMED_SAMPLE_EVERY: u64 = 1000;

/// Maps files opened and not read that are kept for PROCMAP_QUERY, and
/// queries waiting for their open, at most.
const MAX_MAP_OPENS: usize = 1024;
const MAX_HELD_QUERIES: usize = 4096;

/// Execs waiting for a moment when the fanotify queue is empty, at most;
/// past that (a sustained read burst), they are placed without it.
const MAX_UNORDERED_EXECS: usize = 4096;

/// Whether a reader still runs, as procfs says (a recorded log's readers
/// have long exited, so they are gone there too).
struct Procfs;

impl Settle for Procfs {
    fn still_runs(&self, pid: u32) -> bool {
        crate::process::live::still_runs(pid)
    }
}

/// Records in, alerts out.
pub struct Detector {
    assembler: Assembler,
    table: ProcessTable,
    rules: RuleSet,
    host: HostInfo,
    users: UserNames,
    stats: DetectorStats,
    events: Vec<ExecEvent>,
    matched: Vec<usize>,
    /// Read confirmation; `None` when fanotify is off or unavailable.
    correlator: Option<Correlator>,
    due_reads: Vec<ReadEvent>,
    unresolved_reads: UnresolvedReads,
    /// Maps files opened and not read, latest last, for PROCMAP_QUERY.
    map_opens: VecDeque<MapOpen>,
    /// PROCMAP_QUERY ioctls whose fd was gone, with when they were seen.
    queries_waiting: Vec<(MapQuery, Instant)>,
    /// The fanotify reader is to send a batch drained past now.
    wants_catch_up: bool,
    serials: SerialTracker,
    log_events: bool,
    /// Processes whose exec was evaluated since the last
    /// [`Detector::order_execs_before_reads`] that could place them.
    unordered_execs: Vec<u32>,
    /// A CONFIG_CHANGE record said a rule of ours may have been removed;
    /// the owner of the audit session checks ([`Detector::take_rules_touched`]).
    rules_touched: bool,
    sequences: Sequences,
    /// Calls' sequence steps, each with when it arrived: they join their
    /// sequences once every read queued before then is known, so a read
    /// made before a call is never taken as made after it.
    calls_waiting: VecDeque<(Vec<StepHit>, Arc<StepFacts>, Instant)>,
    /// Until when the audit records are wanted as they come, not on the
    /// pacing's interval ([`Detector::take_records_wanted`]): a sequence's
    /// next step may be a call, or a read's exec may still be on its way.
    records_wanted: Option<Instant>,
    /// Other hosts' records (`node=NAME`, from an auditd that aggregates):
    /// one detector of their own history per node, never this machine's
    /// procfs or fanotify.
    nodes: FxHashMap<Box<[u8]>, Detector>,
    /// What a node's detector is made with (with this detector's rules);
    /// `None` in a node's detector, which takes every record it is given.
    node_config: Option<Box<Config>>,
}

/// The later of the two moments.
fn want_records_until(wanted: &mut Option<Instant>, until: Instant) {
    *wanted = Some(until).max(*wanted);
}

/// The host of an aggregation server's records that carry no `node=`.
pub const UNNAMED_NODE: &str = "unnamed-node";

/// How long after a step that a call may follow the audit records are
/// read as they come (no pacing): an injector attaches and pokes within
/// moments of reading the map.
const CALLS_AWAITED_FOR: Duration = Duration::from_secs(2);

/// How long after a read of another process's layout file the audit
/// records are read as they come: the reader's exec, which the read
/// confirms, can reach the socket after the read reached fanotify (the
/// kernel's audit thread sends records when it is scheduled), and would
/// otherwise wait for the next poll. As long as reads are held.
const EXEC_AWAITED_AFTER_READ: Duration = Duration::from_millis(100);

/// A step an event matched, with the event's alert for the step's rule
/// when the step is its last.
type StepHit = (Hit, Option<Alert>);

impl Detector {
    /// A detector of this machine's events, with procfs behind its table.
    pub fn new(config: &Config, rules: RuleSet, log_events: bool) -> Self {
        Detector {
            assembler: Assembler::new(
                Duration::from_millis(config.audit.event_timeout_ms),
                config.audit.max_events_in_flight,
            ),
            table: ProcessTable::new(
                config.process.table_capacity,
                Duration::from_secs(config.process.gone_grace_secs),
            ),
            host: HostInfo::detect(),
            users: UserNames::default(),
            stats: DetectorStats::default(),
            events: Vec::new(),
            matched: Vec::new(),
            correlator: None,
            due_reads: Vec::new(),
            unresolved_reads: UnresolvedReads::default(),
            map_opens: VecDeque::new(),
            queries_waiting: Vec::new(),
            wants_catch_up: false,
            serials: SerialTracker::new(SERIAL_GRACE),
            log_events,
            unordered_execs: Vec::new(),
            rules_touched: false,
            sequences: Sequences::build(&rules),
            calls_waiting: VecDeque::new(),
            records_wanted: None,
            nodes: FxHashMap::default(),
            node_config: Some(Box::new(config.clone())),
            rules,
        }
    }

    /// A detector of a recorded log's events: its process table knows only
    /// the log's history, never this machine's procfs.
    pub fn for_recorded_log(config: &Config, rules: RuleSet, log_events: bool) -> Self {
        Detector {
            table: ProcessTable::from_history(config.process.table_capacity),
            ..Self::new(config, rules, log_events)
        }
    }

    /// A detector of one node's records: its own history, and the node as
    /// its host.
    fn for_node(config: &Config, rules: RuleSet, log_events: bool, node: &[u8]) -> Self {
        Detector {
            node_config: None,
            ..Self::for_another_host(config, rules, log_events, node)
        }
    }

    /// A detector of an aggregation server's feed (`[plugin] aggregator`):
    /// every record is another host's, each node's in a detector of its
    /// own; records without `node=` (a sender without `name_format`) are
    /// this one's, of a host named [`UNNAMED_NODE`].
    pub fn for_aggregated_feed(config: &Config, rules: RuleSet, log_events: bool) -> Self {
        Self::for_another_host(config, rules, log_events, UNNAMED_NODE.as_bytes())
    }

    fn for_another_host(config: &Config, rules: RuleSet, log_events: bool, name: &[u8]) -> Self {
        Detector {
            host: HostInfo {
                name: crate::alert::escape_bytes(name).into_owned(),
                kernel: String::new(),
            },
            users: UserNames::of_another_host(),
            ..Self::for_recorded_log(config, rules, log_events)
        }
    }

    /// The detector that takes records of `node`: this one for its own
    /// host's name (an auditd with `name_format = hostname`) or when it is
    /// a node's, else that node's (made on its first record).
    fn node(&mut self, node: &[u8]) -> &mut Detector {
        let Some(config) = self.node_config.as_deref() else {
            return self;
        };
        if node == self.host.name.as_bytes() {
            return self;
        }
        // Looked up before it is made: a node's name is copied once.
        if !self.nodes.contains_key(node) {
            let detector = Detector::for_node(config, self.rules.clone(), self.log_events, node);
            self.nodes.insert(node.into(), detector);
        }
        self.nodes
            .get_mut(node)
            .expect("inserted above when missing")
    }

    /// How many other hosts' records came, and each one's detector.
    pub fn nodes(&self) -> impl Iterator<Item = &Detector> {
        self.nodes.values()
    }

    pub fn serial_stats(&self) -> SerialStats {
        self.serials.stats()
    }

    /// Turns on read confirmation (fanotify is running).
    pub fn confirm_reads(&mut self, window: Duration, hold: Duration) {
        self.correlator = Some(Correlator::new(window, hold));
    }

    pub fn correlator_stats(&self) -> Option<CorrelatorStats> {
        self.correlator.as_ref().map(Correlator::stats)
    }

    /// When the detector next has something to release on its own.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.correlator.as_ref().and_then(Correlator::next_deadline)
    }

    /// Reads of memory maps seen by fanotify, and how far they are known.
    pub fn on_reads(&mut self, batch: ReadBatch, now: Instant, emit: &mut dyn FnMut(Alert)) {
        for unresolved in &batch.unresolved {
            self.gather_unresolved(unresolved, now);
        }
        for open in batch.opens {
            if self.map_opens.len() == MAX_MAP_OPENS {
                self.map_opens.pop_front();
            }
            self.map_opens.push_back(open);
        }
        self.settle_map_queries(Some(batch.drained_until), now, emit);
        if self.correlator.is_none() {
            return;
        }
        for read in batch.reads {
            if self.log_events {
                tracing::debug!(
                    "read pid={} target={} path={}",
                    read.pid,
                    read.target,
                    escape_for_terminal(&read.path)
                );
            }
            self.take_read(read, now, emit);
        }
        if let Some(correlator) = self.correlator.as_mut() {
            correlator.reads_drained_until(batch.drained_until, emit);
        }
        self.release_calls(Some(batch.drained_until), emit);
    }

    /// A read (or write) seen: a sequence step at once, then to the
    /// correlator (exec alerts it confirms, file events after the hold).
    fn take_read(&mut self, read: ReadEvent, now: Instant, emit: &mut dyn FnMut(Alert)) {
        if read.target != read.pid {
            want_records_until(&mut self.records_wanted, now + EXEC_AWAITED_AFTER_READ);
        }
        if self.sequences.wants(Category::File) {
            self.read_as_step(&read, now, emit);
        }
        if let Some(correlator) = self.correlator.as_mut() {
            correlator.read(read, now, emit);
        }
    }

    /// The sequence steps a read matches join their sequences now: the
    /// fanotify queue gives reads and writes in the kernel's order.
    fn read_as_step(&mut self, read: &ReadEvent, now: Instant, emit: &mut dyn FnMut(Alert)) {
        let Detector {
            table,
            rules,
            host,
            users,
            sequences,
            stats,
            records_wanted,
            ..
        } = self;
        let taken = taken_of(read);
        // Named without touching the table: the read's own evaluation,
        // after the hold, names it as it always has.
        let reader = at_read::peek(table, read.pid, taken, read.reader.as_deref());
        let mut ctx = EventContext::for_read((read.pid, &reader), table, read.seen, read.taken_by);
        let mut fields = ActFields::new(Act::File(read), reader, &mut ctx, host, users);
        let hits = sequences.hits(Category::File, &mut fields, rules);
        if hits.is_empty() {
            return;
        }
        if hits.iter().any(|hit| sequences.call_may_follow(hit)) {
            want_records_until(records_wanted, now + CALLS_AWAITED_FOR);
        }
        let facts = Arc::new(alert::act_step(&mut fields, wall_ms(read.seen, now)));
        let hits = act_hits(hits, &mut fields, sequences, rules, host, read.seen);
        offer_hits(sequences, hits, &facts, stats, emit);
    }

    /// Calls' steps that waited for the reads queued before them: those
    /// that arrived by `drained_until` (every one, at the end of input).
    fn release_calls(&mut self, drained_until: Option<Instant>, emit: &mut dyn FnMut(Alert)) {
        while let Some((_, _, arrived)) = self.calls_waiting.front() {
            if drained_until.is_some_and(|d| d < *arrived) {
                self.wants_catch_up = true;
                return;
            }
            if let Some((hits, facts, _)) = self.calls_waiting.pop_front() {
                offer_hits(&mut self.sequences, hits, &facts, &mut self.stats, emit);
            }
        }
    }

    /// The reader of a read whose file could not be resolved, as it was
    /// when the read was taken, else as the table knows it.
    fn gather_unresolved(&mut self, read: &UnresolvedRead, now: Instant) {
        let Some(pid) = read.pid else {
            self.unresolved_reads.add(None, None, None);
            return;
        };
        let taken = at_read::Taken {
            seen: now,
            by: 0,
            serial: None,
        };
        let reader = at_read::identify(&mut self.table, pid, taken, read.reader.as_deref());
        self.unresolved_reads.add(
            Some(pid),
            reader.exe.as_deref().or(reader.name.as_deref()),
            reader.args.as_ref().map(|a| a.joined()),
        );
    }

    /// The `mapwatch.health` report of reads that could not be resolved
    /// since the last one, if there were any.
    pub fn report_unresolved_reads(&mut self) -> Option<Alert> {
        self.unresolved_reads.report(&self.host)
    }

    /// PROCMAP_QUERY ioctls become reads of the maps file their fd is: the
    /// fd itself while the querier still holds it, else the maps file it
    /// last opened, once the fanotify queue is known drained past the query
    /// (the open came before it); neither is an unresolved read.
    fn resolve_map_queries(&mut self, now: Instant, emit: &mut dyn FnMut(Alert)) {
        if self.correlator.is_none() {
            // Reads are followed with fanotify on only; a log's queries
            // name an fd of a process long gone. The assembler counts them.
            self.assembler.take_map_queries().for_each(drop);
            return;
        }
        let queries: Vec<MapQuery> = self.assembler.take_map_queries().collect();
        for query in queries {
            match live::maps_fd(query.pid, query.fd) {
                Some((path, target)) => {
                    let open = self.latest_open(query.pid).filter(|o| o.path == path);
                    let (taken_by, reader) = match open {
                        Some(open) => (open.taken_by, open.reader),
                        None => (0, None),
                    };
                    let reader = reader.or_else(|| {
                        (target != query.pid)
                            .then(|| AtRead::take(query.pid).map(Box::new))
                            .flatten()
                    });
                    self.read_by_query(&query, (path, target, taken_by), reader, now, emit);
                }
                None if self.queries_waiting.len() < MAX_HELD_QUERIES => {
                    self.queries_waiting.push((query, now));
                    self.wants_catch_up = true;
                }
                None => self
                    .unresolved_reads
                    .add(Some(query.pid), query.exe.as_deref(), None),
            }
        }
    }

    /// Queries waiting for their open, once every open queued before them
    /// is known (`drained_until`); all of them at the end of input.
    fn settle_map_queries(
        &mut self,
        drained_until: Option<Instant>,
        now: Instant,
        emit: &mut dyn FnMut(Alert),
    ) {
        let mut waiting = std::mem::take(&mut self.queries_waiting);
        waiting.retain(|(query, at)| {
            if drained_until.is_some_and(|d| d < *at) {
                return true;
            }
            match self.latest_open(query.pid) {
                Some(open) => self.read_by_query(
                    query,
                    (open.path, open.target, open.taken_by),
                    open.reader,
                    now,
                    emit,
                ),
                None => self
                    .unresolved_reads
                    .add(Some(query.pid), query.exe.as_deref(), None),
            }
            false
        });
        self.queries_waiting = waiting;
    }

    /// The maps file `pid` opened last (and did not read), if kept.
    fn latest_open(&self, pid: u32) -> Option<MapOpen> {
        self.map_opens.iter().rev().find(|o| o.pid == pid).cloned()
    }

    /// A query on the maps file `path` of `target`, opened by a read(2) of
    /// the fanotify group numbered `taken_by` (0: not known), which orders
    /// the query after the execs its open came after.
    fn read_by_query(
        &mut self,
        query: &MapQuery,
        (path, target, taken_by): (Vec<u8>, u32, u64),
        reader: Option<Box<AtRead>>,
        now: Instant,
        emit: &mut dyn FnMut(Alert),
    ) {
        if self.correlator.is_none() {
            return;
        }
        let read = ReadEvent {
            pid: query.pid,
            target,
            target_ns_pid: None,
            layout: Layout::Maps,
            access: Access::Read,
            path,
            seen: now,
            taken_by,
            index: 0,
            reader,
            via: Via::MapQuery(query.serial),
        };
        self.take_read(read, now, emit);
    }

    /// Whether an alert waits for the read source to drain its queue past
    /// now (cleared by the call): the driver asks the source then.
    pub fn take_wants_catch_up(&mut self) -> bool {
        std::mem::take(&mut self.wants_catch_up)
            | self
                .correlator
                .as_mut()
                .is_some_and(Correlator::take_wants_catch_up)
    }

    pub fn seed_process_table(&mut self) -> std::io::Result<usize> {
        self.table.seed_from_procfs(Instant::now())
    }

    pub fn stats(&self) -> DetectorStats {
        self.stats
    }

    /// Rules in force.
    pub fn rule_count(&self) -> usize {
        self.rules.rules.len()
    }

    /// Rules reloaded on SIGHUP take effect from the next event.
    /// Partial sequences are dropped with the rules they belonged to.
    pub fn set_rules(&mut self, rules: RuleSet) {
        for node in self.nodes.values_mut() {
            node.set_rules(rules.clone());
        }
        self.sequences = Sequences::build(&rules);
        self.calls_waiting.clear();
        self.rules = rules;
    }

    /// Until when the audit records are wanted at once, if a read just
    /// seen may wait for its exec or a step for a call.
    pub fn take_records_wanted(&mut self) -> Option<Instant> {
        self.records_wanted.take()
    }

    pub fn sequence_stats(&self) -> SequenceStats {
        self.sequences.stats()
    }

    pub fn host(&self) -> &HostInfo {
        &self.host
    }

    pub fn table_stats(&self) -> TableStats {
        self.table.stats()
    }

    pub fn assembler_stats(&self) -> AssemblerStats {
        self.assembler.stats()
    }

    pub fn in_flight(&self) -> usize {
        self.assembler.in_flight()
    }

    /// One record in netlink form (type from the header).
    pub fn on_netlink_record(
        &mut self,
        record_type: u16,
        text: &[u8],
        now: Instant,
        emit: &mut dyn FnMut(Alert),
    ) {
        self.stats.records += 1;
        match Record::parse_netlink(record_type, text) {
            Ok(record) => self.on_record(&record, now),
            Err(e) => self.malformed(record_type, text, e),
        }
        self.evaluate_pending(now, emit);
    }

    /// A batch from a source, in whichever form it has.
    pub fn on_batch(&mut self, batch: &RecordBatch, now: Instant, emit: &mut dyn FnMut(Alert)) {
        if batch.is_log_lines() {
            for (_, line) in batch.iter() {
                self.on_log_line(line, now, emit);
            }
        } else {
            for (record_type, text) in batch.iter() {
                self.on_netlink_record(record_type, text, now, emit);
            }
        }
    }

    /// One record in log form (`type=NAME msg=audit(...): ...`), raw or
    /// enriched, as auditd writes it to its log and to its plugins.
    pub fn on_log_line(&mut self, line: &[u8], now: Instant, emit: &mut dyn FnMut(Alert)) {
        let detector = match node_of(line) {
            Some(node) => self.node(node),
            None => self,
        };
        detector.take_log_line(line, now, emit);
    }

    fn take_log_line(&mut self, line: &[u8], now: Instant, emit: &mut dyn FnMut(Alert)) {
        self.stats.records += 1;
        match Record::parse_log_line(line) {
            Ok(record) => self.on_record(&record, now),
            Err(e) => self.malformed(0, line, e),
        }
        self.evaluate_pending(now, emit);
    }

    fn on_record(&mut self, record: &Record<'_>, now: Instant) {
        // auditd numbers its own DAEMON_* records from a counter of its own.
        if !record.rtype.is_from_audit_daemon() {
            self.serials.see(record.id.serial, now);
        }
        self.rules_touched |= removes_our_rule(record, RULE_KEY);
        self.assembler.push(record, now, &mut self.events);
        for change in self.assembler.take_sessions() {
            match change {
                SessionChange::Setsid(start) => self.table.record_session_start(start, now),
                SessionChange::Login(login) => self.table.record_login(login, now),
                SessionChange::PamOpened { pid } => self.table.record_pam_opened(pid),
            }
        }
    }

    /// Whether a rule of ours may have been removed since the last call.
    pub fn take_rules_touched(&mut self) -> bool {
        std::mem::take(&mut self.rules_touched)
    }

    /// Events whose EOE never came, once their time is up.
    pub fn on_tick(&mut self, now: Instant, emit: &mut dyn FnMut(Alert)) {
        for node in self.nodes.values_mut() {
            node.on_tick(now, emit);
        }
        self.serials.expire(now);
        self.assembler.flush_expired(now, &mut self.events);
        self.evaluate_pending(now, emit);
        if let Some(correlator) = self.correlator.as_mut() {
            correlator.tick(now, &Procfs, emit, &mut self.due_reads);
        }
        self.evaluate_reads(emit);
    }

    /// End of input: every event still held is evaluated.
    pub fn flush(&mut self, emit: &mut dyn FnMut(Alert)) {
        for node in self.nodes.values_mut() {
            node.flush(emit);
        }
        self.serials.finish();
        self.assembler.flush_all(&mut self.events);
        let now = Instant::now();
        self.evaluate_pending(now, emit);
        self.settle_map_queries(None, now, emit);
        self.release_calls(None, emit);
        if let Some(correlator) = self.correlator.as_mut() {
            correlator.flush(emit, &mut self.due_reads);
        }
        self.evaluate_reads(emit);
    }

    /// Reads released by the correlator go to the `file where` rules.
    fn evaluate_reads(&mut self, emit: &mut dyn FnMut(Alert)) {
        let Detector {
            table,
            rules,
            host,
            users,
            stats,
            matched,
            due_reads,
            ..
        } = self;
        for read in due_reads.drain(..) {
            let reader =
                at_read::identify(table, read.pid, taken_of(&read), read.reader.as_deref());
            if reader.basis == Basis::Unknown {
                stats.unattributed_reads += 1;
            }
            // Relations as they were when the read happened.
            let mut ctx =
                EventContext::for_read((read.pid, &reader), table, read.seen, read.taken_by);
            let mut fields = ActFields::new(Act::File(&read), reader, &mut ctx, host, users);
            alert_act(
                &mut fields,
                (rules, host),
                (matched, stats),
                read.seen,
                emit,
            );
        }
    }

    pub fn prune(&mut self, now: Instant) {
        for node in self.nodes.values_mut() {
            node.prune(now);
        }
        self.table.prune(now);
    }

    fn malformed(&mut self, record_type: u16, text: &[u8], error: ParseError) {
        self.stats.malformed_records += 1;
        let n = self.stats.malformed_records;
        if n <= MALFORMED_LOGGED || n.is_multiple_of(MALFORMED_SAMPLE_EVERY) {
            let preview = &text[..text.len().min(200)];
            tracing::warn!(
                "malformed audit record #{n} (type {record_type}): {error}: {}",
                escape_for_terminal(preview)
            );
        }
    }

    fn evaluate_pending(&mut self, now: Instant, emit: &mut dyn FnMut(Alert)) {
        self.resolve_map_queries(now, emit);
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            self.evaluate(event, now, emit);
        }
        self.events = events;
        let calls: Vec<MemoryAccess> = self.assembler.take_memory_accesses().collect();
        for call in calls {
            if let Some(names) = &call.caller.id_names {
                self.users.learn(names);
            }
            self.evaluate_call(&call, now, emit);
        }
    }

    /// A call into another process's memory goes to the `api where` rules,
    /// its caller named as the table knows it at the call's serial.
    fn evaluate_call(&mut self, call: &MemoryAccess, now: Instant, emit: &mut dyn FnMut(Alert)) {
        let Detector {
            table,
            rules,
            host,
            users,
            stats,
            matched,
            sequences,
            correlator,
            calls_waiting,
            wants_catch_up,
            ..
        } = self;
        let pid = call.caller.pid;
        let target = match call.kernel_target {
            Some((tgid, _)) => tgid,
            // A thread id names its process; a log's processes are gone.
            None if table.is_history() => call.named_target,
            None => live::thread_group(call.named_target).unwrap_or(call.named_target),
        };
        if self.log_events {
            tracing::debug!("call pid={pid} {} target={target}", call.call.name());
        }
        let taken = at_read::Taken {
            seen: now,
            by: 0,
            serial: call.caller.id.map(|id| id.serial),
        };
        // A caller the table never saw exec (a forked helper) is taken as
        // procfs shows it, for its ancestors.
        let at_call = (!table.is_history() && table.get(pid).is_none())
            .then(|| AtRead::take(pid))
            .flatten();
        let mut caller = at_read::identify(table, pid, taken, at_call.as_ref());
        // The record's parent is the caller's at the call, whether or not
        // it was still there to look at.
        caller.ppid = Some(call.caller.ppid).filter(|p| *p != 0).or(caller.ppid);
        let mut ctx = EventContext::for_read((pid, &caller), table, now, 0);
        let mut fields = ActFields::new(Act::Call(call, target), caller, &mut ctx, host, users);
        alert_act(&mut fields, (rules, host), (matched, stats), now, emit);
        let hits = sequences.hits(Category::Api, &mut fields, rules);
        if hits.is_empty() {
            return;
        }
        let time_ms = call.caller.id.map_or_else(
            || wall_ms(now, now),
            |id| id.timestamp.secs * 1000 + u64::from(id.timestamp.millis),
        );
        let facts = Arc::new(alert::act_step(&mut fields, time_ms));
        let hits = act_hits(hits, &mut fields, sequences, rules, host, now);
        if correlator.is_some() {
            calls_waiting.push_back((hits, facts, now));
            *wants_catch_up = true;
        } else {
            offer_hits(sequences, hits, &facts, stats, emit);
        }
    }

    /// Every exec evaluated so far came before the reads taken by a
    /// fanotify read(2) numbered above `mark` (`None`: nothing can be said
    /// yet; they wait for the next mark).
    pub fn order_execs_before_reads(&mut self, mark: Option<u64>) {
        let Some(mark) = mark else {
            if self.unordered_execs.len() > MAX_UNORDERED_EXECS {
                self.unordered_execs.clear();
            }
            return;
        };
        for pid in self.unordered_execs.drain(..) {
            self.table.exec_before_reads_above(pid, mark);
        }
    }

    fn evaluate(&mut self, event: ExecEvent, now: Instant, emit: &mut dyn FnMut(Alert)) {
        if let Some(names) = &event.id_names {
            self.users.learn(names);
        }
        self.table.record_exec(&event, now);
        if self.correlator.is_some() {
            self.unordered_execs.push(event.pid);
        }
        self.match_exec(&event, now, emit);
        self.table.keep_exec_details(event);
    }

    fn match_exec(&mut self, event: &ExecEvent, now: Instant, emit: &mut dyn FnMut(Alert)) {
        if self.log_events {
            tracing::debug!(
                "exec pid={} ppid={} name={} argv={}",
                event.pid,
                event.ppid,
                escape_for_terminal(event.name()),
                escape_for_terminal(event.argv.joined())
            );
        }
        let Detector {
            table,
            rules,
            host,
            users,
            stats,
            matched,
            correlator,
            sequences,
            ..
        } = self;
        let mut ctx = EventContext::for_exec(event.pid, event.ppid, table, now);
        matched.clear();
        let mut fields = ExecFields::new(event, &mut ctx, host, users);
        rules.evaluate(&mut fields, &mut |index| matched.push(index));
        let hits = if sequences.wants(Category::Process) {
            sequences.hits(Category::Process, &mut fields, rules)
        } else {
            Vec::new()
        };
        if ctx.entry_leader_unresolved() {
            stats.unresolved_entry_leaders += 1;
        }
        if ctx.entry_leader_inferred() {
            stats.inferred_entry_leaders += 1;
        }
        if matched.is_empty() && hits.is_empty() {
            return;
        }
        let mut maps = maps_args(event, !ctx.table().is_history());
        to_host_pids(&mut maps, event, ctx.table(), now);
        if !hits.is_empty() {
            let facts = Arc::new(alert::exec_step(event));
            let hits = hits
                .into_iter()
                .map(|mut hit| {
                    if hit.wants_ancestors() {
                        hit.add_ancestors(&ancestors(ctx.table(), event.pid, Some(event.ppid)));
                    }
                    let last = hit.is_last(sequences).then(|| {
                        let inputs = AlertInputs {
                            rule: &rules.rules[hit.rule(sequences)].meta,
                            host,
                        };
                        let mut alert = alert::build(event, maps.first(), &mut ctx, &inputs, users);
                        alert.timing.raised = Some(now);
                        alert
                    });
                    (hit, last)
                })
                .collect();
            offer_hits(sequences, hits, &facts, stats, emit);
        }
        let targets: Vec<u32> = maps.iter().filter_map(|m| m.target).collect();
        for &index in matched.iter() {
            let inputs = AlertInputs {
                rule: &rules.rules[index].meta,
                host,
            };
            let mut alert = alert::build(event, maps.first(), &mut ctx, &inputs, users);
            alert.timing.raised = Some(now);
            stats.alerts += 1;
            match correlator.as_mut() {
                // An alert about maps files waits for proof of the read.
                Some(correlator) if !maps.is_empty() => {
                    correlator.exec_alert(alert, event.pid, targets.clone(), now, emit)
                }
                _ => emit(alert),
            }
        }
    }
}

/// How a read was taken off the fanotify queue, for naming its reader.
fn taken_of(read: &ReadEvent) -> at_read::Taken {
    at_read::Taken {
        seen: read.seen,
        by: read.taken_by,
        serial: match read.via {
            Via::MapQuery(serial) => Some(serial),
            Via::Read => None,
        },
    }
}

/// An act through the single-event rules: an alert for each that matches,
/// raised when the act's input arrived.
fn alert_act(
    fields: &mut ActFields<'_, '_>,
    (rules, host): (&RuleSet, &HostInfo),
    (matched, stats): (&mut Vec<usize>, &mut DetectorStats),
    raised: Instant,
    emit: &mut dyn FnMut(Alert),
) {
    matched.clear();
    rules.evaluate(fields, &mut |index| matched.push(index));
    for &index in matched.iter() {
        let inputs = AlertInputs {
            rule: &rules.rules[index].meta,
            host,
        };
        stats.alerts += 1;
        let mut alert = alert::build_act(fields, &inputs);
        alert.timing.raised = Some(raised);
        emit(alert);
    }
}

/// `NAME` of a log line that starts `node=NAME `.
fn node_of(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"node=")?;
    let end = memchr::memchr(b' ', rest)?;
    Some(&rest[..end])
}

/// `at` (a moment this run saw, `now` or before) in milliseconds since the
/// epoch.
fn wall_ms(at: Instant, now: Instant) -> u64 {
    let wall = std::time::SystemTime::now()
        .checked_sub(now.saturating_duration_since(at))
        .unwrap_or_else(std::time::SystemTime::now);
    wall.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An act's hits with the ancestors a `process.pid` join may take, and
/// the act's alert for the rule of each hit on a last step.
fn act_hits(
    hits: Vec<Hit>,
    fields: &mut ActFields<'_, '_>,
    sequences: &Sequences,
    rules: &RuleSet,
    host: &HostInfo,
    raised: Instant,
) -> Vec<StepHit> {
    hits.into_iter()
        .map(|mut hit| {
            if hit.wants_ancestors() {
                let parent = fields.ctx.ppid();
                hit.add_ancestors(&ancestors(fields.ctx.table(), fields.act.actor(), parent));
            }
            let last = hit.is_last(sequences).then(|| {
                let inputs = AlertInputs {
                    rule: &rules.rules[hit.rule(sequences)].meta,
                    host,
                };
                let mut alert = alert::build_act(fields, &inputs);
                alert.timing.raised = Some(raised);
                alert
            });
            (hit, last)
        })
        .collect()
}

/// The ancestors of `pid`, nearest first: its `parent` as the event gave
/// it (else the table's), then their parents as the table knows them.
fn ancestors(table: &ProcessTable, pid: u32, parent: Option<u32>) -> Vec<u32> {
    let mut ancestors = Vec::new();
    let mut next = parent.or_else(|| table.get(pid).map(|p| p.ppid));
    while let Some(ppid) = next {
        if ppid <= 1 || ppid == pid || ancestors.contains(&ppid) || ancestors.len() == MAX_ANCESTORS
        {
            break;
        }
        ancestors.push(ppid);
        next = table.get(ppid).map(|p| p.ppid);
    }
    ancestors
}

/// Offers an event's hits to the sequences, last steps first; a completed
/// sequence's alert is emitted.
fn offer_hits(
    sequences: &mut Sequences,
    hits: Vec<StepHit>,
    facts: &Arc<StepFacts>,
    stats: &mut DetectorStats,
    emit: &mut dyn FnMut(Alert),
) {
    for (hit, last) in hits {
        if let Some(alert) = sequences.offer(hit, facts, last) {
            stats.alerts += 1;
            emit(alert);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::proc_path::Layout;

    /// Far above any live pid: the table alone answers for them.
    const INJECTOR: u32 = 4_190_101;
    const TARGET: u32 = 4_190_102;

    /// A PTRACE_POKEDATA by [`INJECTOR`] into [`TARGET`], as auditd logs
    /// it, `after` now.
    fn poke(after: Duration) -> String {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            + after;
        let id = format!("{}.{:03}:901", at.as_secs(), at.subsec_millis());
        format!(
            "type=SYSCALL msg=audit({id}): arch=c000003e syscall=101 success=yes exit=0 a0=5 a1={TARGET:x} a2=5596efca4000 a3=0 items=0 ppid=1 pid={INJECTOR} auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm=\"inject\" exe=\"/tmp/inject\" key=\"mapwatch\"\n\
             type=PROCTITLE msg=audit({id}): proctitle=696E6A656374"
        )
    }

    fn map_read(seen: Instant) -> ReadEvent {
        ReadEvent {
            pid: INJECTOR,
            target: TARGET,
            target_ns_pid: None,
            layout: Layout::Maps,
            access: Access::Read,
            path: format!("/proc/{TARGET}/maps").into_bytes(),
            seen,
            taken_by: 1,
            index: 0,
            reader: None,
            via: Via::Read,
        }
    }

    fn detector() -> Detector {
        let mut config = Config::default();
        config.rules.directories.clear();
        let rules = config.load_rules().expect("shipped rules load");
        let mut detector = Detector::for_recorded_log(&config, rules, false);
        detector.confirm_reads(Duration::from_millis(250), Duration::from_millis(100));
        detector
    }

    fn chains(alerts: &[Alert]) -> usize {
        alerts
            .iter()
            .filter(|a| a.document["mapwatch"]["sequence"].is_object())
            .count()
    }

    /// The pipeline reads the audit socket before it takes a batch of
    /// reads: a poke can be processed before the map read it followed.
    /// It joins its sequence once the reads queued before it are known.
    #[test]
    fn a_call_processed_before_the_read_it_followed_still_completes_the_chain() {
        let mut detector = detector();
        let mut alerts = Vec::new();
        let t0 = Instant::now();
        let read_taken = t0 + Duration::from_millis(1);
        for line in poke(Duration::ZERO).lines() {
            detector.on_log_line(line.as_bytes(), t0 + Duration::from_millis(2), &mut |a| {
                alerts.push(a)
            });
        }
        assert_eq!(chains(&alerts), 0, "no read known yet");
        let poked = |a: &Alert| a.document["mapwatch"]["ptrace"]["request"] == "PTRACE_POKEDATA";
        assert!(
            alerts.iter().any(poked),
            "the poke's own alert: {alerts:#?}"
        );
        assert!(
            detector.take_wants_catch_up(),
            "the call asks for the reads"
        );
        let batch = ReadBatch {
            reads: vec![map_read(read_taken)],
            opens: Vec::new(),
            unresolved: Vec::new(),
            drained_until: t0 + Duration::from_millis(3),
        };
        detector.on_reads(batch, t0 + Duration::from_millis(3), &mut |a| {
            alerts.push(a)
        });
        assert_eq!(chains(&alerts), 1, "{alerts:#?}");
    }

    /// A read of another process's map may come before its reader's exec
    /// reaches the socket: the records are then wanted as they come for a
    /// while, not on the pacing's interval. A read of one's own map asks
    /// for nothing (glibc reads it at every program's start).
    #[test]
    fn a_read_of_another_process_map_wants_records_at_once_and_a_read_of_ones_own_does_not() {
        // No sequence rule, whose step would want the records for longer.
        let mut config = Config::default();
        config.rules.directories.clear();
        let mut rules = config.load_rules().expect("shipped rules load");
        rules.rules.retain(|rule| rule.event_step().is_some());
        let mut detector = Detector::for_recorded_log(&config, rules, false);
        detector.confirm_reads(Duration::from_millis(250), Duration::from_millis(100));
        let t0 = Instant::now();
        let own = ReadEvent {
            target: INJECTOR,
            path: b"/proc/self/maps".to_vec(),
            ..map_read(t0)
        };
        let batch = |read| ReadBatch {
            reads: vec![read],
            opens: Vec::new(),
            unresolved: Vec::new(),
            drained_until: t0,
        };
        detector.on_reads(batch(own), t0, &mut |_| {});
        assert_eq!(detector.take_records_wanted(), None);
        detector.on_reads(batch(map_read(t0)), t0, &mut |_| {});
        assert_eq!(
            detector.take_records_wanted(),
            Some(t0 + EXEC_AWAITED_AFTER_READ)
        );
        assert_eq!(detector.take_records_wanted(), None, "taken once");
    }

    /// A read queued after the call was processed is no step before it.
    #[test]
    fn a_read_known_to_come_after_the_call_is_no_chain() {
        let mut detector = detector();
        let mut alerts = Vec::new();
        let t0 = Instant::now();
        for line in poke(Duration::ZERO).lines() {
            detector.on_log_line(line.as_bytes(), t0, &mut |a| alerts.push(a));
        }
        let drained = ReadBatch {
            reads: Vec::new(),
            opens: Vec::new(),
            unresolved: Vec::new(),
            drained_until: t0 + Duration::from_millis(1),
        };
        detector.on_reads(drained, t0 + Duration::from_millis(1), &mut |a| {
            alerts.push(a)
        });
        let later = ReadBatch {
            reads: vec![map_read(t0 + Duration::from_millis(2))],
            opens: Vec::new(),
            unresolved: Vec::new(),
            drained_until: t0 + Duration::from_millis(2),
        };
        detector.on_reads(later, t0 + Duration::from_millis(2), &mut |a| {
            alerts.push(a)
        });
        detector.flush(&mut |a| alerts.push(a));
        assert_eq!(chains(&alerts), 0, "{alerts:#?}");
    }

    /// A write longer than the rule's maxspan (5 minutes) after the read
    /// completes nothing.
    #[test]
    fn a_call_past_the_maxspan_of_its_read_is_no_chain() {
        let mut detector = detector();
        let mut alerts = Vec::new();
        let t0 = Instant::now();
        let batch = ReadBatch {
            reads: vec![map_read(t0)],
            opens: Vec::new(),
            unresolved: Vec::new(),
            drained_until: t0,
        };
        detector.on_reads(batch, t0, &mut |a| alerts.push(a));
        for line in poke(Duration::from_secs(301)).lines() {
            detector.on_log_line(line.as_bytes(), t0, &mut |a| alerts.push(a));
        }
        detector.flush(&mut |a| alerts.push(a));
        assert_eq!(chains(&alerts), 0, "{alerts:#?}");
        assert_eq!(detector.sequence_stats().expired, 1);
    }
}
