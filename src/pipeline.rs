//! The pipeline: one thread owns all mutable detection state and turns
//! records into alerts, in an epoll loop over the audit socket, its signals
//! and the queues of the reader threads (fanotify, the auditd feed); the
//! sink runs beside it, joined by a bounded channel.
//!
//! Contract: [`Detector`] is the synchronous core (records in, alerts out),
//! free of I/O other than procfs, so every source can drive it. [`run`] is
//! the live service: it sets up the audit session, logs `ready` once the
//! rules are installed (and tells systemd), and on SIGTERM/SIGINT removes
//! the rules and restores the kernel's audit status before it returns.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::alert::health::LossWatch;
use crate::alert::limit::Limiter;
use crate::alert::{self, Alert, AlertInputs, escape_for_terminal};
use crate::audit::assemble::{Assembler, AssemblerStats, ExecEvent};
use crate::audit::config_change::removes_our_rule;
use crate::audit::record::Record;
use crate::audit::serial::{SerialStats, SerialTracker};
use crate::config::Config;
use crate::correlate::{Correlator, CorrelatorStats};
use crate::maps::maps_args;
use crate::process::host::{HostInfo, UserNames};
use crate::process::{EventContext, ProcessTable};
use crate::rule::RuleSet;
use crate::rule::live::{ExecFields, ReadFields};
use crate::sink::json_file::JsonFile;
use crate::sink::syslog::{SyslogOptions, SyslogSink, facility_code};
use crate::sink::{self, OutputFormat, SinkMessage, SinkStats, Sinks};
use crate::source::fanotify::{ProcWatch, ReadEvent, WatchStats, spawn_reader};
use crate::source::log::spawn_stdin_reader;
use crate::source::netlink::{
    AuditError, AuditSession, Backpressure, RULE_KEY, RecordReader, RecordSocket, SessionOptions,
    spawn_record_reader,
};
use crate::source::pacing::{Pacing, Switch};
use crate::source::queue::{self, Drained};
use crate::source::{RecordBatch, SourceStats};

/// Counters of the detection core.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct DetectorStats {
    pub records: u64,
    pub malformed_records: u64,
    pub alerts: u64,
    pub unresolved_entry_leaders: u64,
}

/// How long a missing serial may be overtaken before it counts as lost.
const SERIAL_GRACE: Duration = Duration::from_secs(2);

/// Malformed records logged in full before logging turns to sampling.
const MALFORMED_LOGGED: u64 = 10;
const MALFORMED_SAMPLE_EVERY: u64 = 1000;

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
    serials: SerialTracker,
    log_events: bool,
    /// While records read on a poll go through: when the socket was read
    /// before, which is as early as they can have come.
    polled_since: Option<Instant>,
    /// A CONFIG_CHANGE record said a rule of ours may have been removed;
    /// the owner of the audit session checks ([`Detector::take_rules_touched`]).
    rules_touched: bool,
}

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
            rules,
            host: HostInfo::detect(),
            users: UserNames::default(),
            stats: DetectorStats::default(),
            events: Vec::new(),
            matched: Vec::new(),
            correlator: None,
            due_reads: Vec::new(),
            serials: SerialTracker::new(SERIAL_GRACE),
            log_events,
            polled_since: None,
            rules_touched: false,
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

    /// Reads of memory maps seen by fanotify.
    pub fn on_reads(&mut self, reads: Vec<ReadEvent>, now: Instant, emit: &mut dyn FnMut(Alert)) {
        let Some(correlator) = self.correlator.as_mut() else {
            return;
        };
        for read in reads {
            if self.log_events {
                tracing::debug!(
                    "read pid={} target={} path={}",
                    read.pid,
                    read.target,
                    escape_for_terminal(&read.path)
                );
            }
            correlator.read(read, now, emit);
        }
    }

    pub fn seed_process_table(&mut self) -> std::io::Result<usize> {
        self.table.seed_from_procfs(Instant::now())
    }

    pub fn stats(&self) -> DetectorStats {
        self.stats
    }

    /// Rules reloaded on SIGHUP take effect from the next event.
    pub fn set_rules(&mut self, rules: RuleSet) {
        self.rules = rules;
    }

    pub fn host(&self) -> &HostInfo {
        &self.host
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
        for session in self.assembler.take_sessions() {
            self.table.record_session_start(session, now);
        }
    }

    /// Whether a rule of ours may have been removed since the last call.
    pub fn take_rules_touched(&mut self) -> bool {
        std::mem::take(&mut self.rules_touched)
    }

    /// Events whose EOE never came, once their time is up.
    pub fn on_tick(&mut self, now: Instant, emit: &mut dyn FnMut(Alert)) {
        self.serials.expire(now);
        self.assembler.flush_expired(now, &mut self.events);
        self.evaluate_pending(now, emit);
        if let Some(correlator) = self.correlator.as_mut() {
            correlator.tick(now, emit, &mut self.due_reads);
        }
        self.evaluate_reads(emit);
    }

    /// End of input: every event still held is evaluated.
    pub fn flush(&mut self, emit: &mut dyn FnMut(Alert)) {
        self.serials.finish();
        self.assembler.flush_all(&mut self.events);
        let now = Instant::now();
        self.evaluate_pending(now, emit);
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
            // Relations as they were when the read happened.
            let mut ctx = EventContext::for_read(read.pid, table, read.after, read.seen);
            let mut fields = ReadFields::new(&read, &mut ctx, host, users);
            matched.clear();
            rules.evaluate(&mut fields, &mut |index| matched.push(index));
            for &index in matched.iter() {
                let inputs = AlertInputs {
                    rule: &rules.rules[index].meta,
                    host,
                };
                stats.alerts += 1;
                emit(alert::build_read(&mut fields, &inputs));
            }
        }
    }

    pub fn prune(&mut self, now: Instant) {
        self.table.prune(now);
    }

    fn malformed(
        &mut self,
        record_type: u16,
        text: &[u8],
        error: crate::audit::record::ParseError,
    ) {
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
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            self.evaluate(event, now, emit);
        }
        self.events = events;
    }

    /// The records that follow, until the next call, were read on a poll of
    /// the socket and came after `since` (`None`: as they came).
    pub fn records_polled_since(&mut self, since: Option<Instant>) {
        self.polled_since = since;
    }

    fn evaluate(&mut self, event: ExecEvent, now: Instant, emit: &mut dyn FnMut(Alert)) {
        self.table.record_exec(&event, now);
        if let Some(since) = self.polled_since {
            self.table.exec_came_after(event.pid, since);
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
                escape_for_terminal(&event.argv.iter().collect::<Vec<_>>().join(&b' '))
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
            ..
        } = self;
        let mut ctx = EventContext::for_exec(event.pid, event.ppid, table, now);
        matched.clear();
        rules.evaluate(
            &mut ExecFields::new(event, &mut ctx, host, users),
            &mut |index| matched.push(index),
        );
        if ctx.entry_leader_unresolved() {
            stats.unresolved_entry_leaders += 1;
        }
        if matched.is_empty() {
            return;
        }
        let maps = maps_args(event);
        let targets: Vec<u32> = maps.iter().filter_map(|m| m.target).collect();
        for &index in matched.iter() {
            let inputs = AlertInputs {
                rule: &rules.rules[index].meta,
                host,
            };
            let alert = alert::build(event, maps.first(), &mut ctx, &inputs, users);
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

/// Where live records come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// The kernel, over netlink (`mapwatch run`).
    Kernel,
    /// auditd's dispatcher, on stdin (`mapwatch replay -` as an auditd plugin).
    AuditdPlugin,
}

/// Options of `mapwatch run` (and of the auditd plugin).
pub struct RunOptions {
    pub feed: Feed,
    pub config: Config,
    /// The debugging mode: a hangup (closed terminal) stops it cleanly.
    pub foreground: bool,
    pub format: OutputFormat,
    pub verbose: bool,
    pub rules: RuleSet,
}

/// Why the service stopped with an error.
#[derive(Debug)]
pub enum RunError {
    Audit(AuditError),
    Io(std::io::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Audit(e) => e.fmt(f),
            RunError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RunError {}

impl From<std::io::Error> for RunError {
    fn from(e: std::io::Error) -> Self {
        RunError::Io(e)
    }
}

const TICK: Duration = Duration::from_millis(100);
const PRUNE_EVERY: Duration = Duration::from_secs(5);
/// How often the kernel's `lost` counter is read and losses are reported.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
const ALERT_QUEUE: usize = 4096;
const MAX_BATCH: usize = 256;

/// The signals the service acts on ([`Request::of_signal`]).
fn service_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        set.add(sig);
    }
    set
}

/// The live service, until SIGTERM, SIGINT or SIGQUIT (or SIGHUP in the
/// foreground).
///
/// The audit session is set up on the calling thread; the pipeline then
/// runs on a thread created afterwards, which the `never,task` rule leaves
/// unaudited (as are the reader threads it starts). The service's signals
/// are blocked first, in every thread to come, and read from a signalfd by
/// the pipeline: a SIGTERM during start-up waits instead of killing the
/// process with its rules installed.
pub fn run(options: RunOptions) -> Result<(), RunError> {
    service_signals()
        .thread_block()
        .map_err(std::io::Error::from)?;
    let config = &options.config;
    let mut detector = Detector::new(config, options.rules.clone(), options.verbose);
    let seeded = detector.seed_process_table()?;
    let session_options = SessionOptions {
        mode: config.audit.mode,
        backpressure: config.audit.backpressure,
        backlog_limit: config.audit.backlog_limit,
        receive_buffer: config.audit.receive_buffer,
        state_file: config.audit.state_file.clone(),
    };
    let (session, records) = match options.feed {
        Feed::Kernel => {
            let (session, socket) =
                AuditSession::start(&session_options).map_err(RunError::Audit)?;
            (session, Records::Kernel(socket))
        }
        Feed::AuditdPlugin => (
            AuditSession::start_for_plugin().map_err(RunError::Audit)?,
            Records::Stdin,
        ),
    };
    if session.stale_rules_removed > 0 {
        tracing::warn!(
            "removed {} stale audit rules of mapwatch (keyed `mapwatch`, and its record-type exclusions) left by an earlier run",
            session.stale_rules_removed
        );
    }
    // fanotify needs CAP_SYS_ADMIN: set up before the capabilities go.
    let proc_watch = open_proc_watch(config);
    crate::privileges::drop_unneeded().map_err(RunError::Io)?;
    let started = Started {
        detector,
        session,
        records,
        proc_watch,
        seeded,
    };
    let pipeline = std::thread::Builder::new()
        .name("mapwatch".into())
        .spawn(move || serve(started, options))?;
    pipeline.join().unwrap_or_else(|_| {
        Err(RunError::Io(std::io::Error::other(
            "the pipeline thread panicked",
        )))
    })
}

/// Where the pipeline thread reads records.
enum Records {
    Kernel(RecordSocket),
    Stdin,
}

/// What `run` sets up before the pipeline thread takes over.
struct Started {
    detector: Detector,
    session: AuditSession,
    records: Records,
    proc_watch: Option<ProcWatch>,
    seeded: usize,
}

fn open_proc_watch(config: &Config) -> Option<ProcWatch> {
    if !config.fanotify.enabled {
        tracing::info!(
            "fanotify is off (fanotify.enabled = false): alerts carry no read confirmation"
        );
        return None;
    }
    ProcWatch::open()
        .inspect_err(|why| tracing::warn!("running without read confirmation: {why}"))
        .ok()
}

fn serve(started: Started, options: RunOptions) -> Result<(), RunError> {
    let Started {
        mut detector,
        mut session,
        records,
        proc_watch,
        seeded,
    } = started;
    let mut config = options.config.clone();
    let rule_count = options.rules.rules.len();
    // Blocked in every thread since start-up: they wait for this fd.
    let signals = SignalFd::with_flags(
        &service_signals(),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;

    let source_stats = Arc::new(SourceStats::default());
    let (record_tx, record_rx) = queue::bounded::<RecordBatch>(config.audit.queue_batches)?;
    // With the kernel as the only queue, the pipeline reads the socket
    // itself: a queue of its own would only add a wake-up per batch.
    // Dropping in user space needs a reader that keeps draining while the
    // pipeline is busy: a thread and a bounded queue.
    let mut inline = None;
    let mut early = RecordBatch::default();
    match records {
        Records::Kernel(socket) => {
            let (reader, arrived) = RecordReader::new(socket);
            source_stats.count_batch(arrived.len());
            early = arrived;
            match config.audit.backpressure {
                Backpressure::Kernel => {
                    let interval = Duration::from_millis(config.audit.poll_interval_ms);
                    inline = Some(InlineSocket {
                        reader,
                        pacing: Pacing::new(interval),
                        stats: source_stats.clone(),
                    });
                    drop(record_tx);
                }
                Backpressure::Userspace => {
                    spawn_record_reader(reader, record_tx, source_stats.clone(), MAX_BATCH)?;
                }
            }
        }
        Records::Stdin => {
            // Ends with its input (auditd closes the pipe when it stops).
            spawn_stdin_reader(record_tx, source_stats.clone(), MAX_BATCH)?;
        }
    }

    let watch_stats = Arc::new(WatchStats::default());
    let (read_tx, read_rx) = queue::bounded::<Vec<ReadEvent>>(config.audit.queue_batches)?;
    let watcher = match proc_watch {
        Some(watch) => {
            detector.confirm_reads(
                Duration::from_millis(config.fanotify.confirm_window_ms),
                Duration::from_millis(config.fanotify.hold_ms),
            );
            Some(spawn_reader(watch, read_tx, watch_stats.clone())?)
        }
        None => None,
    };
    let fanotify_on = watcher.is_some();

    let (alert_tx, alert_rx) = std::sync::mpsc::sync_channel::<SinkMessage>(ALERT_QUEUE);
    let sinks = open_sinks(&config, options.foreground, options.format)?;
    let sink_stats = Arc::new(SinkStats::default());
    let sink = {
        let stats = sink_stats.clone();
        std::thread::Builder::new()
            .name("mapwatch-sink".into())
            .spawn(move || sink::deliver(alert_rx, sinks, &stats))?
    };
    let mut outlet = Outlet {
        tx: Some(alert_tx),
        dropped: 0,
        limiter: Limiter::new(&options.rules),
        sink_stats,
        losses: LossWatch::default(),
    };

    let poller = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(std::io::Error::from)?;
    let watch_for = |fd: BorrowedFd<'_>, source: Source| {
        poller
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, source as u64))
            .map_err(std::io::Error::from)
    };
    match &inline {
        Some(socket) => watch_for(socket.reader.fd(), Source::AuditSocket)?,
        None => watch_for(record_rx.fd(), Source::RecordQueue)?,
    }
    watch_for(signals.as_fd(), Source::Signals)?;
    if fanotify_on {
        watch_for(read_rx.fd(), Source::ReadQueue)?;
    }

    let how = match (options.feed, session.beside_daemon) {
        (Feed::AuditdPlugin, daemon) => format!(
            "reading the feed of the audit daemon (pid {}) on stdin as its plugin",
            daemon.unwrap_or(0)
        ),
        (Feed::Kernel, Some(daemon)) => {
            format!("listening beside the audit daemon (pid {daemon}) on the multicast group")
        }
        (Feed::Kernel, None) => format!(
            "registered as the audit daemon (pid {})",
            std::process::id()
        ),
    };
    tracing::info!(
        "ready: {how}, {} audit rules installed, {} detection rules, {} processes known, read confirmation {}",
        session.rules_installed,
        rule_count,
        seeded,
        if fanotify_on { "on" } else { "off" }
    );
    notify_systemd(b"READY=1");

    // Records that came while the registration was being acknowledged.
    detector.on_batch(&early, Instant::now(), &mut |a| outlet.emit(a));
    let mut gauges = Gauges {
        source: source_stats,
        watch: watch_stats,
        kernel_lost: 0,
    };
    let mut next_tick = Instant::now() + TICK;
    let mut last_prune = Instant::now();
    let mut last_poll = Instant::now();
    let mut last_stats = Instant::now();
    let mut ready = [EpollEvent::empty(); 4];
    let stop_signal = 'serve: loop {
        // The correlator's next deadline, the next poll of the socket or the
        // tick, whichever is first.
        let next_poll = inline.as_ref().and_then(|socket| socket.pacing.next_poll());
        let wake_at = [detector.next_deadline(), next_poll]
            .into_iter()
            .flatten()
            .fold(next_tick, Instant::min);
        let count = match poller.wait(&mut ready, timeout_until(wake_at)) {
            Ok(count) => count,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(RunError::Io(e.into())),
        };
        let woke = Instant::now();
        for event in &ready[..count] {
            match Source::from_token(event.data()) {
                Some(Source::AuditSocket) => {
                    if let Some(socket) = inline.as_mut()
                        && let Err(e) = socket.on_wakeup(woke, &poller, &mut detector, &mut outlet)
                    {
                        tracing::error!("reading audit records: {e}");
                        break 'serve "reader stopped";
                    }
                }
                Some(Source::RecordQueue) => {
                    let drained = record_rx.drain(|batch| {
                        detector.on_batch(&batch, Instant::now(), &mut |a| outlet.emit(a))
                    });
                    match drained {
                        Drained::Open => {}
                        Drained::Ended if options.feed == Feed::AuditdPlugin => {
                            break 'serve "end of the auditd feed";
                        }
                        Drained::Ended => break 'serve "reader stopped",
                    }
                }
                Some(Source::ReadQueue) => {
                    if let Some(socket) = inline.as_mut()
                        && let Err(e) =
                            socket.before_reads(woke, &poller, &mut detector, &mut outlet)
                    {
                        tracing::error!("reading audit records: {e}");
                        break 'serve "reader stopped";
                    }
                    let drained = read_rx.drain(|reads| {
                        detector.on_reads(reads, Instant::now(), &mut |a| outlet.emit(a))
                    });
                    // The watcher stopped and said why: detection goes on.
                    if drained == Drained::Ended {
                        let _ = poller.delete(read_rx.fd());
                    }
                }
                Some(Source::Signals) => {
                    while let Ok(Some(info)) = signals.read_signal() {
                        match Request::of_signal(info.ssi_signo) {
                            Some(Request::Stats) => gauges.report_stats(&detector, &mut outlet),
                            Some(Request::Stop(signal)) => break 'serve signal,
                            Some(Request::Reload) if options.foreground => break 'serve "SIGHUP",
                            Some(Request::Reload) => {
                                reload_in_place(&mut config, &options, &mut detector, &mut outlet)
                            }
                            None => {}
                        }
                    }
                }
                None => {}
            }
        }
        if let Some(socket) = inline.as_mut()
            && let Err(e) = socket.poll_if_due(woke, &poller, &mut detector, &mut outlet)
        {
            tracing::error!("reading audit records: {e}");
            break 'serve "reader stopped";
        }
        if detector.take_rules_touched() {
            reinstall_removed_rules(&mut session);
        }
        let now = Instant::now();
        let tick = now >= next_tick;
        if tick || detector.next_deadline().is_some_and(|d| d <= now) {
            detector.on_tick(now, &mut |a| outlet.emit(a));
        }
        if tick {
            next_tick = now + TICK;
            outlet.expire(now);
            if now.duration_since(last_prune) >= PRUNE_EVERY {
                detector.prune(now);
                last_prune = now;
            }
            if now.duration_since(last_poll) >= HEALTH_EVERY {
                gauges.poll_kernel_lost(&mut session);
                gauges.report_losses(&detector, &mut outlet);
                last_poll = now;
            }
            let stats_every = Duration::from_secs(config.log.stats_interval_secs);
            if !stats_every.is_zero() && now.duration_since(last_stats) >= stats_every {
                gauges.report_stats(&detector, &mut outlet);
                last_stats = now;
            }
        }
    };
    // Losses up to the end, before the counter is no longer ours to read.
    gauges.poll_kernel_lost(&mut session);
    tracing::info!("{stop_signal}: removing audit rules and restoring the audit status");
    let restored = session.stop();
    // What was already queued still gets evaluated.
    if let Some(socket) = inline.as_mut()
        && let Err(e) = socket.drain(&mut detector, &mut outlet)
    {
        tracing::error!("reading the last audit records: {e}");
    }
    record_rx.drain(|batch| detector.on_batch(&batch, Instant::now(), &mut |a| outlet.emit(a)));
    read_rx.drain(|reads| detector.on_reads(reads, Instant::now(), &mut |a| outlet.emit(a)));
    detector.flush(&mut |a| outlet.emit(a));
    gauges.report_losses(&detector, &mut outlet);
    // The reader threads end at their next wake-up (their queue is gone) or
    // with the process.
    drop(watcher);
    drop(read_rx);
    drop(record_rx);
    outlet.close();
    gauges.report_stats(&detector, &mut outlet);
    if sink.join().is_err() {
        tracing::error!("the sink thread panicked");
    }
    restored.map_err(RunError::Io)
}

/// The audit socket, read by the pipeline itself (`backpressure =
/// "kernel"`), when [`Pacing`] says; `now` is when the pipeline woke.
struct InlineSocket {
    reader: RecordReader,
    pacing: Pacing,
    stats: Arc<SourceStats>,
}

impl InlineSocket {
    /// The socket woke the pipeline: read it, and stop being woken by it
    /// if records are dense.
    fn on_wakeup(
        &mut self,
        now: Instant,
        poller: &Epoll,
        detector: &mut Detector,
        outlet: &mut Outlet,
    ) -> std::io::Result<()> {
        self.read(MAX_BATCH, None, detector, outlet)?;
        match self.pacing.read_on_wakeup(now) {
            Switch::StartPolling => self.wake_on_socket(poller, false),
            _ => Ok(()),
        }
    }

    /// Reads of maps came: the execs they confirm may be waiting for the
    /// next poll, so read them now, and be woken by the rest of one if some
    /// is still on its way.
    fn before_reads(
        &mut self,
        now: Instant,
        poller: &Epoll,
        detector: &mut Detector,
        outlet: &mut Outlet,
    ) -> std::io::Result<()> {
        if !self.pacing.is_polling() {
            return Ok(());
        }
        let since = self.pacing.read_early(now);
        self.read(MAX_BATCH, since, detector, outlet)?;
        self.wake_on_socket(poller, true)
    }

    fn poll_if_due(
        &mut self,
        now: Instant,
        poller: &Epoll,
        detector: &mut Detector,
        outlet: &mut Outlet,
    ) -> std::io::Result<()> {
        if !self.pacing.poll_due(now) {
            return Ok(());
        }
        let since = self.pacing.last_read();
        let records = self.read(MAX_BATCH, since, detector, outlet)?;
        self.stats.polls.fetch_add(1, Ordering::Relaxed);
        match self.pacing.polled(now, records, MAX_BATCH) {
            Switch::StopPolling => self.wake_on_socket(poller, true),
            _ => Ok(()),
        }
    }

    /// Everything still queued, at stop.
    fn drain(&mut self, detector: &mut Detector, outlet: &mut Outlet) -> std::io::Result<()> {
        let since = self.pacing.last_read().filter(|_| self.pacing.is_polling());
        self.read(usize::MAX, since, detector, outlet).map(|_| ())
    }

    /// The queued records, about `max` at most, through the detector;
    /// returns how many. `polled_since`: read on a poll, not at a wake-up,
    /// the socket having been read last then.
    fn read(
        &mut self,
        max: usize,
        polled_since: Option<Instant>,
        detector: &mut Detector,
        outlet: &mut Outlet,
    ) -> std::io::Result<usize> {
        detector.records_polled_since(polled_since);
        let read = self.reader.receive(max, &self.stats, &mut |now, t, text| {
            detector.on_netlink_record(t, text, now, &mut |a| outlet.emit(a))
        });
        detector.records_polled_since(None);
        read
    }

    /// Whether the socket wakes the pipeline.
    fn wake_on_socket(&self, poller: &Epoll, wake: bool) -> std::io::Result<()> {
        let flags = if wake {
            EpollFlags::EPOLLIN
        } else {
            EpollFlags::empty()
        };
        let mut event = EpollEvent::new(flags, Source::AuditSocket as u64);
        poller
            .modify(self.reader.fd(), &mut event)
            .map_err(std::io::Error::from)
    }
}

/// SIGHUP: the configuration, rules and sinks built anew and swapped in;
/// on any error the running ones stay.
fn reload_in_place(
    config: &mut Config,
    options: &RunOptions,
    detector: &mut Detector,
    outlet: &mut Outlet,
) {
    match reload(config, options.foreground, options.format) {
        Ok((new, rules, sinks)) => {
            warn_restart_only(config, &new);
            tracing::info!(
                "SIGHUP: reloaded {} ({} detection rules); alert files reopened",
                new.source_name(),
                rules.rules.len()
            );
            outlet.limiter = Limiter::new(&rules);
            outlet.replace_sinks(sinks);
            detector.set_rules(rules);
            *config = new;
        }
        Err(message) => {
            tracing::error!("SIGHUP: {message}; the running configuration stays in force")
        }
    }
}

/// The counters kept outside the detector, and the kernel's `lost` as last
/// read: what the stats line and the health check report beside the
/// detector's own.
struct Gauges {
    source: Arc<SourceStats>,
    watch: Arc<WatchStats>,
    /// The kernel's `lost` counter since start.
    kernel_lost: u32,
}

impl Gauges {
    fn poll_kernel_lost(&mut self, session: &mut AuditSession) {
        self.kernel_lost = poll_kernel_lost(session, self.kernel_lost);
    }

    /// A health document if a loss counter grew.
    fn report_losses(&self, detector: &Detector, outlet: &mut Outlet) {
        let losses = loss_counters(detector, self, outlet);
        outlet.report_losses(&losses, detector.host());
    }

    /// The stats line, and a `mapwatch.stats` document.
    /// The stats line on stderr, and a `mapwatch.stats` document for the
    /// JSON file (not the console, whose stdout carries alerts only).
    fn report_stats(&self, detector: &Detector, outlet: &mut Outlet) {
        let counters = stats_counters(detector, self, outlet);
        let line: Vec<String> = counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        tracing::info!("stats: {}", line.join(" "));
        let stats: serde_json::Map<String, serde_json::Value> = counters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
            .collect();
        outlet.stats(serde_json::json!({
            "@timestamp": crate::alert::now_rfc3339(),
            "ecs": {"version": "8.11.0"},
            "agent": {"type": "mapwatch", "name": "mapwatch", "version": env!("CARGO_PKG_VERSION")},
            "event": {"kind": "metric", "module": "mapwatch", "dataset": "mapwatch.stats"},
            "mapwatch": {"stats": stats},
        }));
    }
}

/// What the pipeline's epoll set watches; the value is the event's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    AuditSocket = 0,
    RecordQueue = 1,
    ReadQueue = 2,
    Signals = 3,
}

impl Source {
    fn from_token(token: u64) -> Option<Self> {
        [
            Source::AuditSocket,
            Source::RecordQueue,
            Source::ReadQueue,
            Source::Signals,
        ]
        .into_iter()
        .find(|source| *source as u64 == token)
    }
}

/// The epoll timeout that wakes the loop at `at`: rounded up to the next
/// millisecond, so a deadline is never woken for just before it is due.
fn timeout_until(at: Instant) -> EpollTimeout {
    let wait = at.saturating_duration_since(Instant::now());
    let millis = wait.as_nanos().div_ceil(1_000_000);
    EpollTimeout::from(u16::try_from(millis).unwrap_or(u16::MAX))
}

/// What a signal asks of the service. Left at its default, SIGHUP (a
/// dropped ssh session) would kill the process without removing its rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Stop(&'static str),
    Reload,
    Stats,
}

impl Request {
    fn of_signal(signo: u32) -> Option<Self> {
        let signal = Signal::try_from(i32::try_from(signo).ok()?).ok()?;
        Some(match signal {
            Signal::SIGTERM => Request::Stop("SIGTERM"),
            Signal::SIGINT => Request::Stop("SIGINT"),
            Signal::SIGQUIT => Request::Stop("SIGQUIT"),
            Signal::SIGHUP => Request::Reload,
            Signal::SIGUSR1 => Request::Stats,
            _ => return None,
        })
    }
}

/// Someone removed rules of ours (`auditctl -D`; auditd's `augenrules
/// --load`, which runs after auditd has started its plugins): without them
/// no exec is seen, so they are put back at once, and the operator told.
fn reinstall_removed_rules(session: &mut AuditSession) {
    match session.reinstall_removed_rules() {
        Ok(0) => {}
        Ok(missing) => tracing::warn!(
            "{missing} of mapwatch's audit rules were removed by another program (auditctl -D, augenrules --load): reinstalled"
        ),
        Err(e) => tracing::error!("reinstalling mapwatch's removed audit rules: {e}"),
    }
}

/// The kernel's `lost` counter since start (the health check reports growth).
fn poll_kernel_lost(session: &mut AuditSession, last: u32) -> u32 {
    match session.kernel_status() {
        Ok(status) => status.lost.wrapping_sub(session.lost_at_start),
        Err(e) => {
            tracing::warn!("reading the kernel audit status: {e}");
            last
        }
    }
}

/// SIGHUP as a service: the configuration, its rules and sinks, anew. Any
/// error leaves the running ones in force.
fn reload(
    current: &Config,
    foreground: bool,
    format: OutputFormat,
) -> Result<(Config, RuleSet, Sinks), String> {
    let config = Config::load(current.source_path.as_deref())
        .map_err(|e| format!("configuration error: {e}"))?;
    let rules = RuleSet::load(&config).map_err(|e| format!("rule error: {e}"))?;
    let sinks = open_sinks(&config, foreground, format).map_err(|e| e.to_string())?;
    Ok((config, rules, sinks))
}

/// Sections a reload cannot change: they shaped the audit session, the
/// process table and fanotify at start.
fn warn_restart_only(old: &Config, new: &Config) {
    for (section, changed) in [
        ("audit", old.audit != new.audit),
        ("process", old.process != new.process),
        ("fanotify", old.fanotify != new.fanotify),
    ] {
        if changed {
            tracing::warn!("SIGHUP: [{section}] changed; it takes effect at the next restart");
        }
    }
}

/// The sinks of this run: stdout in the foreground, the JSON file as a
/// service. An unusable alert file is a start-up error, not a silent loss.
fn open_sinks(config: &Config, foreground: bool, format: OutputFormat) -> Result<Sinks, RunError> {
    let path = &config.output.json_file;
    let syslog = open_syslog(config);
    let (console, file) = if foreground {
        (Some(format), None)
    } else if path.as_os_str().is_empty() {
        (None, None)
    } else if path.as_os_str() == "-" {
        (Some(OutputFormat::Json), None)
    } else {
        let file = JsonFile::open(path).map_err(|e| {
            RunError::Io(std::io::Error::new(
                e.kind(),
                format!("alert file {}: {e}", path.display()),
            ))
        })?;
        tracing::info!("alerts go to {}", path.display());
        (None, Some(file))
    };
    let color = sink::color_wanted(
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    Ok(Sinks {
        console,
        color,
        file,
        syslog,
    })
}

fn open_syslog(config: &Config) -> Option<SyslogSink> {
    let c = &config.syslog;
    if !c.enabled {
        return None;
    }
    // Both were validated with the configuration.
    let transport = c.transport()?;
    let facility = facility_code(&c.facility)?;
    tracing::info!(
        "alerts also go to syslog ({transport:?}, {:?}, {})",
        c.format,
        c.facility
    );
    Some(SyslogSink::new(SyslogOptions {
        transport,
        format: c.format,
        facility,
        app_name: c.app_name.clone(),
        hostname: HostInfo::detect().name,
        max_message_bytes: c.max_message_bytes,
        queue: c.queue,
    }))
}

/// Where alerts leave the pipeline: the rate limiter, then the sink channel.
struct Outlet {
    tx: Option<std::sync::mpsc::SyncSender<SinkMessage>>,
    dropped: u64,
    limiter: Limiter,
    sink_stats: Arc<SinkStats>,
    losses: LossWatch,
}

impl Outlet {
    fn emit(&mut self, alert: Alert) {
        if self.limiter.admit(&alert, Instant::now()) {
            self.send(alert);
        }
    }

    fn send(&mut self, alert: Alert) {
        if let Some(tx) = &self.tx
            && tx.try_send(SinkMessage::Alert(alert)).is_err()
        {
            self.dropped += 1;
        }
    }

    /// A `mapwatch.health` report (and a warning) when a loss counter grew
    /// since the last report.
    fn report_losses(&mut self, losses: &[(&'static str, u64)], host: &HostInfo) {
        let Some(health) = self.losses.check(losses, host) else {
            return;
        };
        tracing::warn!(
            "{}",
            health.document["message"].as_str().unwrap_or_default()
        );
        if let Some(tx) = &self.tx
            && tx.try_send(SinkMessage::Health(health)).is_err()
        {
            self.dropped += 1;
        }
    }

    /// A stats document, for the file sink only.
    fn stats(&mut self, document: serde_json::Value) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(SinkMessage::Stats(document));
        }
    }

    /// Reloaded sinks take over; queued alerts go to them. Waits for room:
    /// a reload must not be lost.
    fn replace_sinks(&mut self, sinks: Sinks) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(SinkMessage::Replace(Box::new(sinks)));
        }
    }

    /// Summaries of rate-limit windows that ended.
    fn expire(&mut self, now: Instant) {
        let mut summaries = Vec::new();
        self.limiter.expire(now, &mut summaries);
        for summary in summaries {
            self.send(summary);
        }
    }

    /// Shutdown: pending summaries leave, then the channel closes (which
    /// ends the sink thread).
    fn close(&mut self) {
        let mut summaries = Vec::new();
        self.limiter.flush(&mut summaries);
        for summary in summaries {
            self.send(summary);
        }
        self.tx = None;
    }
}

/// The counters that grow only when events were lost on their way.
fn loss_counters(
    detector: &Detector,
    gauges: &Gauges,
    outlet: &Outlet,
) -> [(&'static str, u64); 10] {
    let (source, watch) = (&gauges.source, &gauges.watch);
    [
        ("kernel_lost", u64::from(gauges.kernel_lost)),
        ("serial_gaps", detector.serial_stats().gaps),
        ("enobufs", source.enobufs.load(Ordering::Relaxed)),
        (
            "queue_dropped_records",
            source.dropped_records.load(Ordering::Relaxed),
        ),
        (
            "fanotify_overflows",
            watch.overflows.load(Ordering::Relaxed),
        ),
        (
            "read_batches_dropped",
            watch.dropped.load(Ordering::Relaxed),
        ),
        ("events_evicted", detector.assembler_stats().evicted),
        ("alerts_dropped", outlet.dropped),
        (
            "alert_file_failures",
            outlet.sink_stats.file_lost.load(Ordering::Relaxed),
        ),
        (
            "syslog_dropped",
            outlet.sink_stats.syslog_dropped.load(Ordering::Relaxed),
        ),
    ]
}

/// Every counter, in the order the stats line gives them: what was seen,
/// then what was lost.
fn stats_counters(
    detector: &Detector,
    gauges: &Gauges,
    outlet: &Outlet,
) -> Vec<(&'static str, u64)> {
    let watch = &gauges.watch;
    let d = detector.stats();
    let a = detector.assembler_stats();
    let c = detector.correlator_stats().unwrap_or_default();
    let mut counters = vec![
        ("records", d.records),
        (
            "record_batches",
            gauges.source.batches.load(Ordering::Relaxed),
        ),
        ("socket_polls", gauges.source.polls.load(Ordering::Relaxed)),
        ("malformed_records", d.malformed_records),
        ("exec_events", a.exec_events),
        ("failed_execs", a.failed_execs),
        ("events_without_eoe", a.flushed_without_eoe),
        ("alerts", d.alerts),
        ("alerts_suppressed", outlet.limiter.suppressed_total),
        ("unresolved_entry_leaders", d.unresolved_entry_leaders),
        ("proc_events", watch.events.load(Ordering::Relaxed)),
        ("maps_reads", watch.maps_events.load(Ordering::Relaxed)),
        ("unresolved_reads", watch.unresolved.load(Ordering::Relaxed)),
        ("confirmed", c.confirmed),
        ("unconfirmed", c.unconfirmed),
        ("file_events", c.file_events),
        ("events_in_flight", detector.in_flight() as u64),
    ];
    counters.extend(loss_counters(detector, gauges, outlet));
    counters
}

/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.
fn notify_systemd(message: &[u8]) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.as_encoded_bytes();
    let addr = match path.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path)),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(message, &addr));
    if let Err(e) = sent {
        tracing::warn!("notifying systemd: {e}");
    }
}
