//! The live service: the audit session, the reader threads, one epoll loop
//! on one thread that owns the [`Detector`], and a clean stop.
//!
//! Contract: [`run`] sets up the audit session, logs `ready` once the rules
//! are installed (and tells systemd), and on SIGTERM/SIGINT/SIGQUIT removes
//! the rules and restores the kernel's audit status before it returns; what
//! was queued is still evaluated and delivered. The sink runs beside the
//! loop, joined by a bounded channel.

mod gauges;
mod inline_socket;
mod outlet;
mod readers;
mod reload;
mod schedule;
mod signals;

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::alert::limit::Limiter;
use crate::config::Config;
use crate::detector::Detector;
use crate::rule::RuleSet;
use crate::sink::metrics::{AgentInfo, HealthWindow, Metrics, MetricsOutput};
use crate::sink::{self, OutputFormat, SinkMessage, SinkStats, Sinks};
use crate::source::fanotify::ProcWatch;
use crate::source::netlink::{AuditError, AuditSession};
use crate::source::queue::Drained;
use gauges::Gauges;
use outlet::Outlet;
use readers::{Readers, Records, open_proc_watch};
use schedule::Schedule;
use signals::{Request, notify_systemd, service_signals};

/// Where live records come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// The kernel, over netlink (`mapwatch run`).
    Kernel,
    /// auditd's dispatcher, on stdin (`mapwatch replay -` as an auditd plugin).
    AuditdPlugin,
    /// The dispatcher of an auditd that aggregates other hosts' records
    /// (`[plugin] aggregator`): no audit rules, no procfs, no fanotify.
    AggregatorPlugin,
}

impl Feed {
    fn is_plugin(self) -> bool {
        matches!(self, Feed::AuditdPlugin | Feed::AggregatorPlugin)
    }
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

const ALERT_QUEUE: usize = 4096;
/// Records read in one go, about, before the loop looks at its other sources.
const MAX_BATCH: usize = 256;

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
    match options.feed {
        Feed::AggregatorPlugin => run_aggregator(options),
        Feed::Kernel | Feed::AuditdPlugin => run_on_this_host(options),
    }
}

/// The service on this host's audit records: kernel or auditd's feed.
fn run_on_this_host(options: RunOptions) -> Result<(), RunError> {
    let config = &options.config;
    let mut detector = Detector::new(config, options.rules.clone(), options.verbose);
    let seeded = detector.seed_process_table()?;
    let session_options = config.audit.session_options();
    let (session, records) = if options.feed == Feed::Kernel {
        let (session, socket) = AuditSession::start(&session_options).map_err(RunError::Audit)?;
        (session, Records::Kernel(socket))
    } else {
        (
            AuditSession::start_for_plugin().map_err(RunError::Audit)?,
            Records::Stdin,
        )
    };
    if session.stale_rules_removed > 0 {
        tracing::warn!(
            "removed {} stale audit rules of mapwatch (keyed `mapwatch`, and its record-type exclusions) left by an earlier run",
            session.stale_rules_removed
        );
    }
    // fanotify needs CAP_SYS_ADMIN: set up before the capabilities go.
    let proc_watch = open_proc_watch(&config.fanotify);
    if proc_watch.is_some() {
        // So that mapwatch's own procfs reads are not events of its mark.
        match crate::process::procfs::use_private_instance() {
            Ok(()) => {
                tracing::info!("reading processes through a procfs instance of mapwatch's own")
            }
            Err(why) => tracing::info!(
                "reading processes through /proc: a procfs instance of mapwatch's own was refused ({why}); its own reads of /proc are then events it discards"
            ),
        }
    }
    crate::privileges::drop_unneeded(proc_watch.is_some()).map_err(RunError::Io)?;
    spawn_pipeline(
        Started {
            detector,
            session: Some(session),
            records,
            proc_watch,
            seeded,
        },
        options,
    )
}

/// The plugin of an aggregation server: another host's records only, so
/// nothing of this host's kernel audit, procfs or fanotify is touched.
fn run_aggregator(options: RunOptions) -> Result<(), RunError> {
    let detector =
        Detector::for_aggregated_feed(&options.config, options.rules.clone(), options.verbose);
    crate::privileges::drop_unneeded(false).map_err(RunError::Io)?;
    spawn_pipeline(
        Started {
            detector,
            session: None,
            records: Records::Stdin,
            proc_watch: None,
            seeded: 0,
        },
        options,
    )
}

fn spawn_pipeline(started: Started, options: RunOptions) -> Result<(), RunError> {
    let pipeline = std::thread::Builder::new()
        .name("mapwatch".into())
        .spawn(move || serve(started, options))?;
    pipeline.join().unwrap_or_else(|_| {
        Err(RunError::Io(std::io::Error::other(
            "the pipeline thread panicked",
        )))
    })
}

/// What `run` sets up before the pipeline thread takes over.
struct Started {
    detector: Detector,
    /// `None` for an aggregation server's plugin, which has no rules.
    session: Option<AuditSession>,
    records: Records,
    proc_watch: Option<ProcWatch>,
    seeded: usize,
}

/// The loop of the pipeline thread, until a stop is asked for or a reader
/// ends; then the session is stopped and what was queued delivered.
fn serve(started: Started, options: RunOptions) -> Result<(), RunError> {
    let Started {
        mut detector,
        mut session,
        records,
        proc_watch,
        seeded,
    } = started;
    let mut config = options.config.clone();
    // Blocked in every thread since start-up: they wait for this fd.
    let signals = SignalFd::with_flags(
        &service_signals(),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut readers = Readers::start(records, proc_watch, &config, &mut detector)?;
    let agent = AgentInfo {
        mode: match (options.feed, session.as_ref().and_then(|s| s.beside_daemon)) {
            (Feed::AggregatorPlugin, _) => "aggregator",
            (Feed::AuditdPlugin, _) => "plugin",
            (Feed::Kernel, Some(_)) => "multicast",
            (Feed::Kernel, None) => "unicast",
        },
    };
    let metrics = MetricsOutput::start(&config.metrics, &agent)?;
    let (sink, mut outlet) = start_sink(
        &config,
        &options,
        &detector,
        metrics.as_ref().map(|m| m.metrics.clone()),
    )?;
    let poller = watch_sources(&readers, &signals)?;
    log_ready(session.as_ref(), &options, seeded, readers.confirms_reads());
    notify_systemd(b"READY=1");

    let early = std::mem::take(&mut readers.early);
    detector.on_batch(&early, Instant::now(), &mut |a| outlet.emit(a));
    let mut gauges = Gauges::new(
        readers.source_stats.clone(),
        readers.watch_stats.clone(),
        metrics
            .as_ref()
            .map(|_| HealthWindow::new(config.metrics.interval())),
    );
    let mut schedule = Schedule::new(Instant::now(), config.log.stats_interval());
    let mut ready = [EpollEvent::empty(); 4];
    let stop_signal = 'serve: loop {
        // The correlator's next deadline, the next poll of the socket or the
        // tick, whichever is first.
        let next_poll = readers
            .inline
            .as_ref()
            .and_then(|socket| socket.next_poll());
        let wake_at = [detector.next_deadline(), next_poll]
            .into_iter()
            .flatten()
            .fold(schedule.next_tick(), Instant::min);
        let count = match poller.wait(&mut ready, timeout_until(wake_at)) {
            Ok(count) => count,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(RunError::Io(e.into())),
        };
        let woke = Instant::now();
        for event in &ready[..count] {
            match Source::from_token(event.data()) {
                Some(Source::AuditSocket) => {
                    if let Some(socket) = readers.inline.as_mut()
                        && let Err(e) = socket.on_wakeup(woke, &poller, &mut detector, &mut outlet)
                    {
                        tracing::error!("reading audit records: {e}");
                        break 'serve "reader stopped";
                    }
                }
                Some(Source::RecordQueue) => {
                    let drained = readers.records.drain(|batch| {
                        detector.on_batch(&batch, Instant::now(), &mut |a| outlet.emit(a))
                    });
                    readers.order_queued_execs(&mut detector);
                    match drained {
                        Drained::Open => {}
                        Drained::Ended if options.feed.is_plugin() => {
                            break 'serve "end of the auditd feed";
                        }
                        Drained::Ended => break 'serve "reader stopped",
                    }
                }
                Some(Source::ReadQueue) => {
                    if let Some(socket) = readers.inline.as_mut()
                        && let Err(e) =
                            socket.before_reads(woke, &poller, &mut detector, &mut outlet)
                    {
                        tracing::error!("reading audit records: {e}");
                        break 'serve "reader stopped";
                    }
                    let drained = readers.reads.drain(|reads| {
                        detector.on_reads(reads, Instant::now(), &mut |a| outlet.emit(a))
                    });
                    if let Some(until) = detector.take_records_wanted()
                        && let Some(socket) = readers.inline.as_mut()
                        && let Err(e) =
                            socket.stay_prompt(until, &poller, &mut detector, &mut outlet)
                    {
                        tracing::error!("reading audit records: {e}");
                        break 'serve "reader stopped";
                    }
                    // The watcher stopped and said why: detection goes on.
                    if drained == Drained::Ended {
                        let _ = poller.delete(readers.reads.fd());
                    }
                }
                Some(Source::Signals) => {
                    while let Ok(Some(info)) = signals.read_signal() {
                        match Request::of_signal(info.ssi_signo) {
                            Some(Request::Stats) => gauges.report_stats(&detector, &mut outlet),
                            Some(Request::Stop(signal)) => break 'serve signal,
                            Some(Request::Reload) if options.foreground => break 'serve "SIGHUP",
                            Some(Request::Reload) => {
                                reload::reload_in_place(
                                    &mut config,
                                    &options,
                                    &mut detector,
                                    &mut outlet,
                                );
                                schedule.set_stats_every(config.log.stats_interval());
                            }
                            None => {}
                        }
                    }
                }
                None => {}
            }
        }
        if let Some(socket) = readers.inline.as_mut()
            && let Err(e) = socket.poll_if_due(woke, &poller, &mut detector, &mut outlet)
        {
            tracing::error!("reading audit records: {e}");
            break 'serve "reader stopped";
        }
        if detector.take_rules_touched()
            && let Some(session) = session.as_mut()
        {
            reinstall_removed_rules(session);
        }
        let now = Instant::now();
        let due = schedule.tick(now);
        if due.is_some() || detector.next_deadline().is_some_and(|d| d <= now) {
            detector.on_tick(now, &mut |a| outlet.emit(a));
        }
        // At every wake-up: a call's sequence step waits for the reads
        // queued before it, and waits no tick for the ask.
        readers.catch_up_if_wanted(&mut detector);
        let Some(due) = due else { continue };
        outlet.expire(now);
        if due.prune {
            detector.prune(now);
        }
        if due.health {
            if let Some(session) = session.as_mut() {
                gauges.poll_kernel_lost(session);
            }
            gauges.report_losses(&mut detector, &mut outlet);
            if let Some(output) = &metrics {
                gauges.publish(&detector, &outlet, &output.metrics, &agent);
            }
        }
        if due.stats {
            gauges.report_stats(&detector, &mut outlet);
        }
    };
    let restored = match session {
        Some(session) => {
            tracing::info!("{stop_signal}: removing audit rules and restoring the audit status");
            // The last count of losses comes after the last rule change:
            // deleting rules under a full backlog loses their CONFIG_CHANGE
            // records too.
            let stopped = session.stop();
            gauges.set_final_kernel_lost(stopped.lost_since_start);
            stopped.restored
        }
        None => {
            tracing::info!("{stop_signal}: stopping");
            Ok(())
        }
    };
    // What was already queued still gets evaluated.
    if let Some(socket) = readers.inline.as_mut()
        && let Err(e) = socket.drain(&mut detector, &mut outlet)
    {
        tracing::error!("reading the last audit records: {e}");
    }
    readers
        .records
        .drain(|batch| detector.on_batch(&batch, Instant::now(), &mut |a| outlet.emit(a)));
    readers.order_queued_execs(&mut detector);
    readers
        .reads
        .drain(|reads| detector.on_reads(reads, Instant::now(), &mut |a| outlet.emit(a)));
    detector.flush(&mut |a| outlet.emit(a));
    gauges.report_losses(&mut detector, &mut outlet);
    // The reader threads end at their next wake-up (their queue is gone) or
    // with the process.
    drop(readers);
    outlet.close();
    gauges.report_stats(&detector, &mut outlet);
    if sink.join().is_err() {
        tracing::error!("the sink thread panicked");
    }
    restored.map_err(RunError::Io)
}

/// The sink thread and the outlet that feeds it.
fn start_sink(
    config: &Config,
    options: &RunOptions,
    detector: &Detector,
    metrics: Option<Arc<Metrics>>,
) -> Result<(JoinHandle<()>, Outlet), RunError> {
    let (alert_tx, alert_rx) = std::sync::mpsc::sync_channel::<SinkMessage>(ALERT_QUEUE);
    let sinks = Sinks::open(
        &config.output,
        &config.syslog,
        &detector.host().name,
        options.foreground,
        options.format,
    )?;
    let sink_stats = Arc::new(SinkStats::default());
    let sink = {
        let stats = sink_stats.clone();
        std::thread::Builder::new()
            .name("mapwatch-sink".into())
            .spawn(move || sink::deliver(alert_rx, sinks, &stats))?
    };
    let outlet = Outlet::new(alert_tx, Limiter::new(&options.rules), sink_stats, metrics);
    Ok((sink, outlet))
}

/// One epoll set over the record source, the signals and the reads.
fn watch_sources(readers: &Readers, signals: &SignalFd) -> std::io::Result<Epoll> {
    let poller = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let watch_for = |fd: BorrowedFd<'_>, source: Source| {
        poller.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, source as u64))
    };
    match &readers.inline {
        Some(socket) => watch_for(socket.fd(), Source::AuditSocket)?,
        None => watch_for(readers.records.fd(), Source::RecordQueue)?,
    }
    watch_for(signals.as_fd(), Source::Signals)?;
    if readers.confirms_reads() {
        watch_for(readers.reads.fd(), Source::ReadQueue)?;
    }
    Ok(poller)
}

fn log_ready(
    session: Option<&AuditSession>,
    options: &RunOptions,
    seeded: usize,
    confirms_reads: bool,
) {
    let how = match (options.feed, session.and_then(|s| s.beside_daemon)) {
        (Feed::AggregatorPlugin, _) => "reading the feed of an aggregating audit daemon on stdin as its plugin: every record is another host's".to_owned(),
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
        session.map_or(0, |s| s.rules_installed),
        options.rules.rules.len(),
        seeded,
        if confirms_reads { "on" } else { "off" }
    );
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
