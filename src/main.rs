//! The `pgark` binary: command-line glue over `pgark-engine`.

mod cli;
mod config;
mod encryption;
mod exit;
mod progress;
mod repo;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let command = cli.command.name();
    let settings = match config::Settings::resolve(&cli.global) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgark {command}: {e:#}");
            return exit::Exit::Usage.into();
        }
    };
    exit::install_panic_hook(command, settings.abort_on_error, cli::is_prefetcher(&cli.command));
    init_logging(&settings);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgark {command}: cannot start the async runtime: {e}");
            return exit::Exit::Internal.into();
        }
    };
    let result = runtime.block_on(cli::run(
        cli.command.clone(),
        &settings,
        cli.global.config.as_deref(),
    ));
    // Don't wait for stray blocking tasks (e.g. a stalled read) at exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(command),
    }
}

fn init_logging(settings: &config::Settings) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::new(format!("pgark={0},pgark_engine={0},warn", settings.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
}
