//! SIGHUP: the configuration, rules and sinks built anew and swapped in;
//! on any error the running ones stay.

use super::RunOptions;
use super::outlet::Outlet;
use crate::alert::limit::Limiter;
use crate::config::Config;
use crate::detector::Detector;
use crate::rule::RuleSet;
use crate::sink::{OutputFormat, Sinks};

/// SIGHUP: the configuration, rules and sinks built anew and swapped in;
/// on any error the running ones stay.
pub(super) fn reload_in_place(
    config: &mut Config,
    options: &RunOptions,
    detector: &mut Detector,
    outlet: &mut Outlet,
) {
    match reload(
        config,
        &detector.host().name,
        options.foreground,
        options.format,
    ) {
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

/// SIGHUP as a service: the configuration, its rules and sinks, anew. Any
/// error leaves the running ones in force.
fn reload(
    current: &Config,
    hostname: &str,
    foreground: bool,
    format: OutputFormat,
) -> Result<(Config, RuleSet, Sinks), String> {
    let config = Config::load(current.source_path.as_deref())
        .map_err(|e| format!("configuration error: {e}"))?;
    let rules = config
        .load_rules()
        .map_err(|e| format!("rule error: {e}"))?;
    let sinks = Sinks::open(&config.output, &config.syslog, hostname, foreground, format)
        .map_err(|e| e.to_string())?;
    Ok((config, rules, sinks))
}

/// Sections a reload cannot change: they shaped the audit session, the
/// process table, fanotify and the metrics endpoint at start.
fn warn_restart_only(old: &Config, new: &Config) {
    for (section, changed) in [
        ("audit", old.audit != new.audit),
        ("process", old.process != new.process),
        ("fanotify", old.fanotify != new.fanotify),
        ("metrics", old.metrics != new.metrics),
    ] {
        if changed {
            tracing::warn!("SIGHUP: [{section}] changed; it takes effect at the next restart");
        }
    }
}
