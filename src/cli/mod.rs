//! The command line: one module per subcommand. Errors are reported here with `anyhow` and mapped
//! to documented exit codes.

pub mod bench;
pub mod bench_audit;
pub mod bench_daemon;
pub mod bench_digest;
pub mod bench_export;
pub mod bench_sim;
pub mod bench_status;
pub mod bench_sync;
pub mod common;
pub mod creds;
pub mod demo;
pub mod health;
pub mod jobs;
pub mod migrate;
pub mod run;
pub mod runs;
pub mod sim;
pub mod validate;
pub mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for a failure at run time (a job failed, a server could not start).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for invalid input: bad arguments, configuration or job files.
pub const EXIT_USAGE: u8 = 2;

/// Runs scheduled, headless jobs against the Asana REST API.
#[derive(Debug, Parser)]
#[command(name = "asana-worker", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `asana_worker=debug`; `demo`
    /// defaults to `warn` to keep its summary readable, everything else to `info`. The daemon
    /// (`run`) takes its level from the settings (`log.level`).
    #[arg(long, global = true, env = "ASANA_WORKER_LOG")]
    pub log: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: schedule and run the jobs in the jobs directory until SIGTERM.
    Run(run::RunArgs),
    /// Check the settings and every job file; exit 2 listing every problem.
    Validate(validate::ValidateArgs),
    /// Create or upgrade the database schema.
    Migrate(migrate::MigrateArgs),
    /// List jobs, or run one now.
    Jobs(jobs::JobsArgs),
    /// Inspect runs.
    Runs(runs::RunsArgs),
    /// Run the Asana simulator on loopback (for tests, demos and trying job files offline).
    Sim(sim::SimArgs),
    /// Start the built-in simulator and show the worker's main path against it.
    Demo(demo::DemoArgs),
    /// Benchmarks that print figures and ratios (`bench sim`, `bench budget`).
    Bench(bench::BenchArgs),
    /// Stored, encrypted credentials: add, list, delete, rotate the master key.
    Creds(creds::CredsArgs),
    /// Check a file sink's manifest chain and segments (exit 1 on any tampering).
    Verify(verify::VerifyArgs),
    /// Ask a running daemon whether it is alive (or ready, with --ready): exit 0 or 1.
    Health(health::HealthArgs),
}

/// Runs the parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    // A command whose output is piped into `head` ends quietly when the reader goes away, as
    // Unix tools do, instead of panicking in `println!`. The daemon, the simulator, the demo and
    // the benchmarks keep Rust's default (SIGPIPE ignored): their sockets report a gone peer
    // as an error to handle, not a signal.
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Sim(_) | Command::Demo(_) | Command::Bench(_)
    ) {
        end_quietly_on_closed_pipe();
    }
    // The daemon sets its logging up from its settings (text or JSON, OTLP).
    match (&cli.command, &cli.log) {
        (Command::Run(_), _) => {}
        (Command::Demo(_) | Command::Bench(_), None) => init_logging("warn"),
        (_, level) => init_logging(level.as_deref().unwrap_or("info")),
    }
    let command = match cli.command {
        // Runs its own runtimes: the simulator on one thread, the load on another.
        Command::Bench(bench::BenchArgs {
            target: bench::BenchTarget::Sim(args),
        }) => return exit_code(bench_sim::run(args)),
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    exit_code(runtime.block_on(run_async(command)))
}

/// Restores the default action of SIGPIPE (end the process), which Rust's runtime sets to
/// ignore.
fn end_quietly_on_closed_pipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler; called before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn run_async(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Validate(args) => validate::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Jobs(args) => jobs::run(args).await,
        Command::Runs(args) => runs::run(args).await,
        Command::Sim(args) => sim::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Creds(args) => creds::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Health(args) => health::run(args).await,
    }
}

fn exit_code(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            let usage = error.chain().any(|cause| {
                cause.is::<common::UsageError>()
                    || cause.is::<crate::config::settings::SettingsError>()
                    || cause.is::<crate::config::diagnostics::Diagnostics>()
            });
            ExitCode::from(if usage { EXIT_USAGE } else { EXIT_FAILURE })
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
