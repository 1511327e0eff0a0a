//! The `mapwatch` command line: parses arguments, loads the configuration
//! and rules, and hands over to the library. Exit codes: 0 ok, 1 runtime
//! error, 2 usage, configuration or rule error.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mapwatch::config::Config;
use mapwatch::pipeline::{self, Feed, RunOptions};
use mapwatch::replay::{ReplayOptions, replay};
use mapwatch::rule::RuleSet;
use mapwatch::rule::file::{check_rule_file, load_rule_file};
use mapwatch::rule::json::JsonEvent;
use mapwatch::sink::OutputFormat;

/// Real-time detection of /proc/<pid>/maps reads (MITRE ATT&CK T1057) from
/// kernel audit events.
#[derive(Parser)]
#[command(name = "mapwatch", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the detector: register as the audit daemon, install the exec
    /// rules, and report alerts until SIGTERM/SIGINT.
    Run {
        /// Configuration file [default: /etc/mapwatch/mapwatch.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Debugging mode: alerts on stdout, diagnostics on stderr.
        #[arg(long, short)]
        foreground: bool,
        /// Alert format on stdout [default: text on a terminal, else json]
        #[arg(long, value_enum)]
        format: Option<OutputFormat>,
        /// Also log every exec event as it is seen (on stderr).
        #[arg(long, short)]
        verbose: bool,
    },
    /// Detect in recorded audit logs, or, reading stdin, as an auditd plugin.
    ///
    /// With files (a rotated set oldest first: audit.log.2 audit.log.1
    /// audit.log), every alert goes to stdout and a summary to stderr;
    /// process relations come from the log's own history. With `-` or no
    /// file, the records are auditd's live plugin feed: procfs and fanotify
    /// enrich them, and alerts go to the configured sinks as with `run`.
    Replay {
        /// Configuration file [default: /etc/mapwatch/mapwatch.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Alert format on stdout (files only) [default: json]
        #[arg(long, value_enum)]
        format: Option<OutputFormat>,
        /// Read stdin as a recorded log, not as auditd's live feed.
        #[arg(long)]
        recorded: bool,
        /// Also log every exec event as it is seen (on stderr).
        #[arg(long, short)]
        verbose: bool,
        /// Audit log files in order, or `-` for stdin [default: -]
        files: Vec<PathBuf>,
    },
    /// Validate the configuration file and the rules it loads, and exit.
    CheckConfig {
        /// Configuration file [default: /etc/mapwatch/mapwatch.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Ask the running daemon for its health and counters, over its
    /// `[metrics] listen` endpoint. Exit 0 healthy, 1 unhealthy, 2 when it
    /// cannot be asked (not running, no endpoint configured).
    Status {
        /// Configuration file [default: /etc/mapwatch/mapwatch.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Work with detection rules.
    Rules {
        #[command(subcommand)]
        action: RulesCommand,
    },
    /// Print the mapwatch(8) man page (roff), for packaging.
    #[command(hide = true)]
    Manpage,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// List the rules in force: shipped ones and those of the configured
    /// directories.
    List {
        /// Configuration file [default: /etc/mapwatch/mapwatch.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check rule files; errors name file, line and column.
    Check {
        /// Rule files (TOML)
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Evaluate a rule against ECS events (one JSON document per line) and
    /// print the matching ones.
    Test {
        /// Rule file (TOML)
        rule: PathBuf,
        /// Events file, or `-` for stdin [default: -]
        events: Option<PathBuf>,
    },
}

/// `mapwatch status`.
fn status(config: Option<&Path>) -> ExitCode {
    let config = match Config::load(config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mapwatch: {e}");
            return ExitCode::from(2);
        }
    };
    let listen = match config.metrics.endpoint() {
        Some(Ok(listen)) => listen,
        Some(Err(must_be)) => {
            eprintln!(
                "mapwatch: {}: `metrics.listen` must be {must_be}",
                config.source_name()
            );
            return ExitCode::from(2);
        }
        None => {
            eprintln!(
                "mapwatch: {} has no `[metrics] listen`: mapwatch status asks the daemon over it (e.g. listen = \"unix:/run/mapwatch/metrics.sock\")",
                config.source_name()
            );
            return ExitCode::from(2);
        }
    };
    match mapwatch::sink::metrics::client::fetch_status(&listen) {
        Ok(status) => {
            print!("{}", mapwatch::sink::metrics::client::render(&status));
            if status["healthy"].as_bool() == Some(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(message) => {
            eprintln!("mapwatch: {message}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(config.as_deref()),
        Command::Status { config } => status(config.as_deref()),
        Command::Manpage => {
            let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).section("8");
            match man.render(&mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mapwatch: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Rules { action } => match action {
            RulesCommand::List { config } => list_rules(config.as_deref()),
            RulesCommand::Check { files } => check_rules(&files),
            RulesCommand::Test { rule, events } => test_rule(&rule, events.as_deref()),
        },
        Command::Replay {
            config,
            format,
            recorded,
            verbose,
            files,
        } => {
            let stdin_only = files.is_empty() || files == [Path::new("-")];
            let plugin = stdin_only && !recorded;
            if plugin && mapwatch::diagnostics::stderr_is_discarded() {
                init_logging_to(verbose, mapwatch::diagnostics::DevLog::connect("/dev/log"));
            } else {
                init_logging(verbose);
            }
            let Some((config, rules)) = load_or_log(config.as_deref()) else {
                return ExitCode::from(2);
            };
            if plugin {
                return run(RunOptions {
                    feed: if config.plugin.aggregator {
                        Feed::AggregatorPlugin
                    } else {
                        Feed::AuditdPlugin
                    },
                    config,
                    foreground: false,
                    format: format.unwrap_or(OutputFormat::Json),
                    verbose,
                    rules,
                });
            }
            let paths = if files.is_empty() {
                vec![PathBuf::from("-")]
            } else {
                files
            };
            let summary = replay(
                ReplayOptions {
                    config,
                    rules,
                    paths,
                    format: format.unwrap_or(OutputFormat::Json),
                    verbose,
                },
                &mut std::io::stdout().lock(),
            );
            eprintln!("mapwatch: {summary}");
            if summary.unreadable_files > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Run {
            config,
            foreground,
            format,
            verbose,
        } => {
            init_logging(verbose);
            let Some((config, rules)) = load_or_log(config.as_deref()) else {
                return ExitCode::from(2);
            };
            let format = format.unwrap_or(if foreground && std::io::stdout().is_terminal() {
                OutputFormat::Text
            } else {
                OutputFormat::Json
            });
            run(RunOptions {
                feed: Feed::Kernel,
                config,
                foreground,
                format,
                verbose,
                rules,
            })
        }
    }
}

/// The configuration and the rules it names.
fn load(path: Option<&Path>) -> Result<(Config, RuleSet), String> {
    let config = Config::load(path).map_err(|e| format!("configuration error: {e}"))?;
    let rules = config
        .load_rules()
        .map_err(|e| format!("rule error: {e}"))?;
    Ok((config, rules))
}

/// [`load`] for the commands that log: an error is logged, `None` returned
/// (the caller exits 2).
fn load_or_log(path: Option<&Path>) -> Option<(Config, RuleSet)> {
    load(path)
        .inspect_err(|message| tracing::error!("{message}"))
        .ok()
}

fn check_config(path: Option<&Path>) -> ExitCode {
    match load(path) {
        Ok((config, rules)) => {
            println!(
                "{}: OK, {} rules, {} global exceptions",
                config.source_name(),
                rules.rules.len(),
                rules.global_exceptions.len()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("mapwatch: {message}");
            ExitCode::from(2)
        }
    }
}

fn list_rules(path: Option<&Path>) -> ExitCode {
    let rules = match load(path) {
        Ok((_, rules)) => rules,
        Err(message) => {
            eprintln!("mapwatch: {message}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<38} {:<8} {:<8} {:<4} {:<40} SOURCE",
        "RULE_ID", "SEVERITY", "CATEGORY", "EXC", "NAME"
    );
    for rule in &rules.rules {
        let _ = writeln!(
            out,
            "{:<38} {:<8} {:<8} {:<4} {:<40} {}",
            rule.meta.rule_id,
            rule.meta.severity,
            rule.kind_name(),
            rule.exceptions.len(),
            rule.meta.name,
            rule.source
        );
    }
    if !rules.global_exceptions.is_empty() {
        let _ = writeln!(out, "{} global exceptions", rules.global_exceptions.len());
    }
    ExitCode::SUCCESS
}

fn check_rules(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        match check_rule_file(file) {
            Ok(rule) => {
                println!(
                    "{}: OK: {} ({})",
                    file.display(),
                    rule.meta.name,
                    rule.meta.rule_id
                );
                for warning in &rule.warnings {
                    eprintln!("{warning} (warning)");
                }
            }
            Err(errors) => {
                for e in errors {
                    eprintln!("{e}");
                }
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn test_rule(rule_path: &Path, events: Option<&Path>) -> ExitCode {
    let rule = match load_rule_file(rule_path) {
        Ok(rule) => rule,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (name, reader): (String, Box<dyn BufRead>) = match events {
        None => ("<stdin>".into(), Box::new(std::io::stdin().lock())),
        Some(p) if p == Path::new("-") => ("<stdin>".into(), Box::new(std::io::stdin().lock())),
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => (
                p.display().to_string(),
                Box::new(std::io::BufReader::new(f)),
            ),
            Err(e) => {
                eprintln!("mapwatch: {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
    };
    let mut out = std::io::stdout().lock();
    let (mut total, mut matched, mut invalid) = (0u64, 0u64, 0u64);
    for (number, line) in reader.lines().enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("mapwatch: {name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        total += 1;
        let doc: serde_json::Value = match serde_json::from_str(&line) {
            Ok(doc) => doc,
            Err(e) => {
                eprintln!("{name}:{}: not a JSON document: {e}", number + 1);
                invalid += 1;
                continue;
            }
        };
        if rule.matches(&mut JsonEvent::new(&doc)) {
            matched += 1;
            if writeln!(out, "{line}").is_err() {
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!("{total} events, {matched} matched, {invalid} invalid");
    if invalid > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn run(options: RunOptions) -> ExitCode {
    match pipeline::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn log_filter(verbose: bool) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let default = if verbose {
        "mapwatch=debug"
    } else {
        "mapwatch=info"
    };
    EnvFilter::try_from_env("MAPWATCH_LOG").unwrap_or_else(|_| EnvFilter::new(default))
}

fn init_logging(verbose: bool) {
    if mapwatch::diagnostics::stderr_is_journal() {
        // The journal stamps lines and keeps their level from the prefix.
        tracing_subscriber::fmt()
            .with_env_filter(log_filter(verbose))
            .with_writer(mapwatch::diagnostics::JournalStderr)
            .with_ansi(false)
            .with_target(false)
            .without_time()
            .with_level(false)
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(verbose))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// As auditd's plugin, whose stderr is /dev/null: to syslog, which stamps
/// lines itself.
fn init_logging_to(verbose: bool, writer: mapwatch::diagnostics::DevLog) {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(verbose))
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .with_level(false)
        .init();
}
