//! The `mapwatch` command line: parses arguments, loads the configuration
//! and hands over to the library. Exit codes: 0 ok, 1 runtime error, 2 usage
//! or configuration error.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mapwatch::config::Config;
use mapwatch::pipeline::{self, RunOptions};
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
    /// Validate the configuration file and exit.
    CheckConfig {
        /// Configuration file [default: /etc/mapwatch/mapwatch.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(config.as_deref()) {
            Ok(_) => {
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mapwatch: configuration error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            config,
            foreground,
            format,
            verbose,
        } => {
            init_logging(verbose);
            let config = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            let format = format.unwrap_or(if foreground && std::io::stdout().is_terminal() {
                OutputFormat::Text
            } else {
                OutputFormat::Json
            });
            run(RunOptions {
                config,
                foreground,
                format,
                verbose,
            })
        }
    }
}

fn run(options: RunOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mapwatch")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pipeline::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if verbose {
        "mapwatch=debug"
    } else {
        "mapwatch=info"
    };
    let filter =
        EnvFilter::try_from_env("MAPWATCH_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
