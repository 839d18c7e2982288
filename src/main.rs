//! The `pgark` binary: command-line glue over `pgark-engine`.

mod cli;
mod config;
mod encryption;
mod exit;
mod progress;
mod repo;

use std::process::ExitCode;

fn main() -> ExitCode {
    bound_malloc();
    // A background process exits 0 whatever happens (see
    // cli::is_background), from its first instruction on.
    if cli::is_background_args() {
        let name = match std::env::args_os().any(|a| a == cli::PREFETCH_WORKER_FLAG) {
            true => "wal-fetch",
            false => "wal-push",
        };
        exit::install_panic_hook(name, false, true);
        // Its failures were logged as warnings.
        let _ = run();
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(code) => code,
        Err(code) => code,
    }
}

/// glibc's malloc raises its mmap threshold each time a large block is
/// freed (up to 32 MiB), after which the pipelines' 256 KiB and 1 MiB
/// buffers come from per-thread arenas that keep what they are given back:
/// a backup's peak RSS grew by about 20 MiB that way. A fixed threshold
/// keeps every buffer of 128 KiB or more in its own mapping, returned to the
/// kernel when freed, and two arenas bound what small allocations can
/// scatter across threads.
fn bound_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Parses, resolves the settings and runs the command; the exit code.
fn run() -> Result<ExitCode, ExitCode> {
    let cli = cli::help::parse().map_err(|e| {
        let _ = e.print();
        ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
    })?;
    let command = cli.command.name();
    // Generated from the command line alone: no settings, no runtime.
    let offline = match &cli.command {
        cli::Command::Completions(args) => Some(cli::help::completions(args)),
        cli::Command::Man(args) => Some(cli::help::man(args)),
        _ => None,
    };
    if let Some(result) = offline {
        return match result {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(error) => Err(exit::Failure::from_anyhow(error).report(command)),
        };
    }
    let settings = match config::Settings::resolve(&cli.global) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgark {command}: {e:#}");
            return Err(exit::Exit::Usage.into());
        }
    };
    exit::install_panic_hook(command, settings.abort_on_error, cli::is_background(&cli.command));
    init_logging(&settings);
    // wal-push runs once per segment, so its start-up counts: its work is
    // on the blocking pool (reading, compressing, hashing, the local
    // store's file operations) and in a few futures waiting on it, which
    // one thread drives as well as a pool of them (and fewer threads each
    // keep less of their own memory: stacks, allocator arenas).
    let builder = match cli.command {
        cli::Command::WalPush(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match { builder }.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgark {command}: cannot start the async runtime: {e}");
            return Err(exit::Exit::Internal.into());
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
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(failure) => Err(failure.report(command)),
    }
}

fn init_logging(settings: &config::Settings) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // `pgark=<level>,pgark_engine=<level>,warn` (targets match by prefix),
    // without EnvFilter, whose directive parser compiles regular
    // expressions at every start.
    let level: LevelFilter = settings.log_level.parse().unwrap_or(LevelFilter::WARN);
    let filter = Targets::new()
        .with_target("pgark", level)
        .with_target("pgark_engine", level)
        .with_default(LevelFilter::WARN);
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time();
    tracing_subscriber::registry().with(format).with(filter).init();
}
