//! The operators' view (`[metrics]`, off by default): Prometheus metrics,
//! a health verdict and a status document, served over HTTP on loopback or
//! a unix socket, and/or written as a node_exporter textfile.
//!
//! Contract: the pipeline thread is the only writer. It counts each alert
//! the sink channel took ([`Metrics::observe`] before the hand-over,
//! [`Metrics::record`] after it, atomics only; a dropped alert is in
//! `alerts_dropped_total` instead) and once a second
//! publishes its counters, the health verdict and the status document
//! ([`Metrics::publish`], a few atomic stores and one `try_lock` it never
//! waits on). Readers (the HTTP workers, the textfile writer) run on threads
//! of their own and only read. Every label set is bounded: rule ids and
//! names come from the loaded rules, the rest are fixed.

pub mod client;
pub mod health;
mod http;
mod textfile;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::alert::Alert;
pub use health::{HealthWindow, Verdict};
pub use http::MetricsServer;

/// `[metrics]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `HOST:PORT` (loopback, as a rule) or `unix:PATH`: serves `GET
    /// /metrics`, `/healthz` and `/status`. None: no endpoint.
    pub listen: Option<String>,
    /// A file for node_exporter's textfile collector, rewritten atomically
    /// every interval. None: no file.
    pub textfile: Option<PathBuf>,
    /// Seconds: the health window (a loss counter that grew within it makes
    /// the agent unhealthy) and the textfile's period.
    pub interval_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            textfile: None,
            interval_secs: 15,
        }
    }
}

/// Where the endpoint listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl MetricsConfig {
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.textfile.is_some()
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }

    /// The endpoint, if one is configured and well formed.
    pub fn endpoint(&self) -> Option<Result<Listen, String>> {
        let listen = self.listen.as_deref()?;
        Some(match listen.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => Ok(Listen::Unix(PathBuf::from(path))),
            Some(_) => Err("`unix:` and an absolute path".into()),
            None => listen
                .parse::<SocketAddr>()
                .map(Listen::Tcp)
                .map_err(|_| "`HOST:PORT` (e.g. \"127.0.0.1:9464\") or `unix:/PATH`".into()),
        })
    }

    /// The first setting that is invalid, and what it must be.
    pub fn invalid_key(&self) -> Option<(&'static str, String)> {
        if let Some(Err(must_be)) = self.endpoint() {
            return Some(("listen", must_be));
        }
        if !(1..=3600).contains(&self.interval_secs) {
            return Some(("interval_secs", "between 1 and 3600".into()));
        }
        if let Some(path) = &self.textfile
            && (!path.is_absolute() || path.extension().is_none_or(|e| e != "prom"))
        {
            return Some((
                "textfile",
                "an absolute path ending in `.prom` (node_exporter reads only those)".into(),
            ));
        }
        None
    }
}

/// Fixed facts of the running agent, for the info metric and `status`.
#[derive(Clone, Debug)]
pub struct AgentInfo {
    /// `unicast` (the audit daemon), `multicast` (beside one) or `plugin`.
    pub mode: &'static str,
}

/// Latency buckets, seconds: sub-millisecond to a few seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Stats counters that are levels, not totals.
const GAUGES: [&str; 5] = [
    "events_in_flight",
    "processes",
    "sequence_partials",
    "nodes",
    "procfs_instances_watched",
];

/// The registry and every metric in it.
pub struct Metrics {
    registry: Registry,
    alerts: IntCounterVec,
    alert_latency: Histogram,
    confirmation_delay: Histogram,
    healthy: IntGauge,
    rules: IntGauge,
    /// Connections the endpoint closed unanswered: every worker was busy.
    http_rejected: IntCounter,
    started: Instant,
    /// The stats counters, registered at their first publication (the
    /// pipeline names them) with the value last published.
    published: Mutex<HashMap<&'static str, Published>>,
    /// The latest `/status` document, rendered.
    status: Mutex<String>,
    verdict: Mutex<Verdict>,
}

/// An alert's contribution to the metrics, taken before it is handed to
/// the sink channel and recorded only if the channel took it.
pub struct Observation {
    alerts: IntCounter,
    latency: Option<Duration>,
    confirmation: Option<Duration>,
}

enum Published {
    Total(IntCounter, u64),
    Level(IntGauge),
}

fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: prometheus::Result<C>,
) -> prometheus::Result<C> {
    let collector = collector?;
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

impl Metrics {
    pub fn new(info: &AgentInfo) -> prometheus::Result<Arc<Metrics>> {
        let registry = Registry::new_custom(Some("mapwatch".into()), None)?;
        let alerts = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "alerts_total",
                    "Alerts that left for the sinks, by rule (rate-limited ones are alerts_suppressed_total).",
                ),
                &["rule_id", "rule_name"],
            ),
        )?;
        let latency = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            registered(&registry, Histogram::with_opts(opts))
        };
        let alert_latency = latency(
            "alert_latency_seconds",
            "From the arrival of the records (or the read) that raised an alert to the alert leaving for the sinks.",
        )?;
        let confirmation_delay = latency(
            "read_confirmation_delay_seconds",
            "How long a confirmed exec alert waited for the read that proved it.",
        )?;
        let healthy = registered(
            &registry,
            IntGauge::new(
                "healthy",
                "1 when registered or joined, records or status polls are recent and nothing was lost within the interval.",
            ),
        )?;
        let agent_info = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new("info", "The agent's version and audit mode (always 1)."),
                &["version", "mode"],
            ),
        )?;
        agent_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), info.mode])
            .set(1);
        let rules = registered(&registry, IntGauge::new("rules_loaded", "Rules in force."))?;
        let http_rejected = registered(
            &registry,
            IntCounter::new(
                "http_rejected_total",
                "Connections to this endpoint closed unanswered because both workers were busy.",
            ),
        )?;
        let start_time = registered(
            &registry,
            IntGauge::new("start_time_seconds", "When the agent started, Unix time."),
        )?;
        start_time.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        Ok(Arc::new(Metrics {
            registry,
            alerts,
            alert_latency,
            confirmation_delay,
            healthy,
            rules,
            http_rejected,
            started: Instant::now(),
            published: Mutex::new(HashMap::new()),
            status: Mutex::new("{}".into()),
            verdict: Mutex::new(Verdict::starting()),
        }))
    }

    /// What an alert about to leave, `now`, will count once it has left
    /// (`None` for documents that are not a rule's alert).
    pub fn observe(&self, alert: &Alert, now: Instant) -> Option<Observation> {
        let event = &alert.document["event"];
        let is_rule_alert = event["dataset"] == "mapwatch.alert"
            && matches!(event["action"].as_str(), Some("exec" | "read"));
        if !is_rule_alert {
            return None;
        }
        let rule = &alert.document["rule"];
        let id = rule["id"].as_str().unwrap_or_default();
        let name = rule["name"].as_str().unwrap_or_default();
        Some(Observation {
            alerts: self.alerts.with_label_values(&[id, name]),
            latency: alert
                .timing
                .raised
                .map(|raised| now.saturating_duration_since(raised)),
            confirmation: alert.timing.confirmation,
        })
    }

    /// An alert that has left for the sinks.
    pub fn record(&self, observation: Observation) {
        observation.alerts.inc();
        if let Some(latency) = observation.latency {
            self.alert_latency.observe(latency.as_secs_f64());
        }
        if let Some(delay) = observation.confirmation {
            self.confirmation_delay.observe(delay.as_secs_f64());
        }
    }

    /// The pipeline's counters, the verdict and what `status` shows. Never
    /// waits: when a reader holds a lock, this second's update is skipped.
    pub fn publish(
        &self,
        counters: &[(&'static str, u64)],
        verdict: &Verdict,
        info: &AgentInfo,
        rules: usize,
    ) {
        self.rules.set(rules as i64);
        self.healthy.set(i64::from(verdict.healthy));
        if let Ok(mut published) = self.published.try_lock() {
            for &(name, value) in counters {
                self.publish_one(&mut published, name, value);
            }
        }
        if let Ok(mut current) = self.verdict.try_lock() {
            *current = verdict.clone();
        }
        let document = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "mode": info.mode,
            "uptime_seconds": self.started.elapsed().as_secs(),
            "rules": rules,
            "healthy": verdict.healthy,
            "reason": verdict.reason,
            "counters": counters.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<serde_json::Map<String, Value>>(),
        });
        if let Ok(mut status) = self.status.try_lock() {
            *status = document.to_string();
        }
    }

    fn publish_one(
        &self,
        published: &mut HashMap<&'static str, Published>,
        name: &'static str,
        value: u64,
    ) {
        if !published.contains_key(name) {
            let Some(metric) = self.register_stat(name) else {
                return;
            };
            published.insert(name, metric);
        }
        match published.get_mut(name) {
            Some(Published::Total(counter, last)) => {
                counter.inc_by(value.saturating_sub(*last));
                *last = value.max(*last);
            }
            Some(Published::Level(gauge)) => gauge.set(value as i64),
            None => {}
        }
    }

    fn register_stat(&self, name: &'static str) -> Option<Published> {
        let help = format!("The stats line's `{name}`.");
        let metric = if GAUGES.contains(&name) {
            let gauge = IntGauge::new(name, help).ok()?;
            self.registry.register(Box::new(gauge.clone())).ok()?;
            Published::Level(gauge)
        } else {
            let counter = IntCounter::new(format!("{name}_total"), help).ok()?;
            self.registry.register(Box::new(counter.clone())).ok()?;
            Published::Total(counter, 0)
        };
        Some(metric)
    }

    /// `GET /metrics`: the Prometheus text exposition format.
    pub fn exposition(&self) -> String {
        let mut text = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut text) {
            tracing::warn!("encoding metrics: {e}");
        }
        text
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
            .lock()
            .map(|v| v.clone())
            .unwrap_or_else(|_| Verdict::starting())
    }

    pub fn status_document(&self) -> String {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| "{}".into())
    }

    /// The content type of [`Metrics::exposition`].
    pub fn content_type() -> &'static str {
        prometheus::TEXT_FORMAT
    }
}

/// What serves the metrics while the pipeline runs: the endpoint and the
/// textfile writer, each on a thread of its own.
pub struct MetricsOutput {
    pub metrics: Arc<Metrics>,
    /// Removes a unix socket's file when the pipeline ends.
    _server: Option<MetricsServer>,
}

impl MetricsOutput {
    /// Binds the endpoint (an error names the address) and starts the
    /// textfile writer.
    pub fn start(config: &MetricsConfig, info: &AgentInfo) -> std::io::Result<Option<Self>> {
        if !config.enabled() {
            return Ok(None);
        }
        let metrics = Metrics::new(info).map_err(std::io::Error::other)?;
        let server = match config.endpoint() {
            Some(Ok(listen)) => Some(MetricsServer::start(&listen, metrics.clone())?),
            Some(Err(must_be)) => {
                return Err(std::io::Error::other(format!(
                    "[metrics] listen must be {must_be}"
                )));
            }
            None => None,
        };
        if let Some(path) = &config.textfile {
            textfile::start(path.clone(), config.interval(), metrics.clone())?;
        }
        Ok(Some(MetricsOutput {
            metrics,
            _server: server,
        }))
    }
}
