//! The command line: one file per subcommand, each thin glue over one
//! engine function.

mod backup_fetch;
mod backup_list;
mod backup_mark;
mod backup_push;
mod delete;
mod detach;
mod exporter;
pub mod help;
mod key;
mod restore_test;
mod status;
mod verify;
mod wal_fetch;

pub use wal_fetch::PREFETCH_WORKER_FLAG;
pub use wal_push::ARCHIVER_FLAG;
mod wal_push;

use crate::config::Settings;
use crate::exit::Failure;
use clap::{Args, Parser, Subcommand};
use pgark_codec::Compression;
use std::path::PathBuf;
use std::time::Duration;

/// pgark: PostgreSQL WAL archiving and physical backups.
#[derive(Debug, Parser)]
// The reference after the options (repositories, environment, exit codes)
// is added by help::command, from the definitions the code uses.
#[command(name = "pgark", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// TOML configuration file with defaults for any option.
    #[arg(long, global = true, env = "PGARK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Repository (its kinds are listed by help::command, from repo::KINDS).
    #[arg(long, global = true, env = "PGARK_REPO", value_name = "URL")]
    pub repo: Option<String>,

    /// Compression for new objects: zstd, lz4, lzma or none [default: zstd].
    #[arg(long, global = true, env = "PGARK_COMPRESSION", value_name = "CODEC", value_parser = parse_compression)]
    pub compression: Option<Compression>,

    /// Compression level: zstd 1-22 [default: 3], lzma 0-9 [default: 6]; lz4 and none take none.
    #[arg(
        long,
        global = true,
        env = "PGARK_COMPRESSION_LEVEL",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub compression_level: Option<i32>,

    /// Log verbosity on stderr: error, warn, info, debug or trace [default: warn].
    #[arg(long, global = true, env = "PGARK_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Attempts per repository operation when failures are transient [default: 5].
    #[arg(long, global = true, env = "PGARK_RETRY_ATTEMPTS", value_name = "N")]
    pub retry_attempts: Option<u32>,

    /// Time limit of the whole command: 600, 90s, 10m, 2h, 1h30m; 0 for none [default: 10m for
    /// wal-push, wal-fetch, backup-list and backup-mark; none for backup-push, backup-fetch, verify,
    /// delete and key rotate].
    /// Past it, every repository call fails and the command exits 10, leaving what any failure
    /// leaves (see docs/08-configuration.md).
    #[arg(long, global = true, env = "PGARK_COMMAND_TIMEOUT", value_name = "DURATION")]
    pub command_timeout: Option<String>,

    /// Exit with 128 + code on failures other than "not found", so that PostgreSQL aborts
    /// recovery instead of ending it early (see docs/01-archiving.md) [default: false].
    #[arg(
        long,
        global = true,
        env = "PGARK_ABORT_ON_ERROR",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub abort_on_error: Option<bool>,

    /// Encryption key: a file holding exactly 32 raw bytes. The key can also be given as text
    /// (64 hex digits or base64) in PGARK_ENCRYPTION_KEY; there is no flag for the key itself,
    /// so that it never shows in process titles. A key given to a new repository encrypts it.
    #[arg(long, global = true, env = "PGARK_ENCRYPTION_KEY_FILE", value_name = "PATH")]
    pub encryption_key_file: Option<PathBuf>,

    /// Encryption key: a command (run with sh -c) printing the key, as 32 raw bytes or text.
    #[arg(long, global = true, env = "PGARK_ENCRYPTION_KEY_COMMAND", value_name = "CMD")]
    pub encryption_key_command: Option<String>,

    /// Encryption key: a file holding a passphrase, stretched with Argon2id (or the passphrase
    /// itself in PGARK_ENCRYPTION_PASSPHRASE).
    #[arg(
        long,
        global = true,
        env = "PGARK_ENCRYPTION_PASSPHRASE_FILE",
        value_name = "PATH"
    )]
    pub encryption_passphrase_file: Option<PathBuf>,

    /// S3: endpoint URL of an S3-compatible store (https://minio.example:9000)
    /// [default: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS S3].
    #[arg(long, global = true, env = "PGARK_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// S3: the bucket's region [default: AWS_REGION, the AWS config file, instance metadata,
    /// else us-east-1].
    #[arg(long, global = true, env = "PGARK_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,

    /// S3: path-style requests (ENDPOINT/BUCKET/KEY), which most S3-compatible stores need
    /// [default: false].
    #[arg(
        long,
        global = true,
        env = "PGARK_S3_FORCE_PATH_STYLE",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub s3_force_path_style: Option<bool>,

    /// S3: server-side encryption of new objects: none, AES256 or aws:kms [default: none,
    /// i.e. the bucket's default encryption].
    #[arg(long, global = true, env = "PGARK_S3_SSE", value_name = "MODE")]
    pub s3_sse: Option<String>,

    /// S3: KMS key id, ARN or alias for aws:kms encryption (implies --s3-sse aws:kms)
    /// [default: the account's aws/s3 key].
    #[arg(long, global = true, env = "PGARK_S3_SSE_KMS_KEY_ID", value_name = "KEY")]
    pub s3_sse_kms_key_id: Option<String>,

    /// S3: storage class of new objects (STANDARD, STANDARD_IA, INTELLIGENT_TIERING, ...)
    /// [default: the bucket's default].
    #[arg(long, global = true, env = "PGARK_S3_STORAGE_CLASS", value_name = "CLASS")]
    pub s3_storage_class: Option<String>,

    /// S3: request checksums: when-supported (a CRC32 on every upload) or when-required
    /// (for S3-compatible stores that reject the SDK's checksums) [default: when-supported].
    #[arg(long, global = true, env = "PGARK_S3_CHECKSUM", value_name = "MODE")]
    pub s3_checksum: Option<String>,

    /// GCS: base URL of the JSON API, for emulators (http://127.0.0.1:4443) [default:
    /// STORAGE_EMULATOR_HOST, else Google Cloud Storage].
    #[arg(long, global = true, env = "PGARK_GCS_ENDPOINT", value_name = "URL")]
    pub gcs_endpoint: Option<String>,

    /// GCS: send requests without credentials, for emulators [default: true with
    /// STORAGE_EMULATOR_HOST, else false: application default credentials].
    #[arg(
        long,
        global = true,
        env = "PGARK_GCS_NO_AUTH",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub gcs_no_auth: Option<bool>,

    /// Azure: the storage account [default: AZURE_STORAGE_ACCOUNT].
    #[arg(long, global = true, env = "PGARK_AZURE_ACCOUNT", value_name = "NAME")]
    pub azure_account: Option<String>,

    /// Azure: the account's blob endpoint, for Azurite (http://127.0.0.1:10000/devstoreaccount1)
    /// or other clouds [default: https://ACCOUNT.blob.core.windows.net].
    #[arg(long, global = true, env = "PGARK_AZURE_ENDPOINT", value_name = "URL")]
    pub azure_endpoint: Option<String>,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse::<Compression>().map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    WalPush(wal_push::WalPushArgs),
    WalFetch(wal_fetch::WalFetchArgs),
    BackupPush(backup_push::BackupPushArgs),
    BackupFetch(backup_fetch::BackupFetchArgs),
    BackupList(backup_list::BackupListArgs),
    Verify(verify::VerifyArgs),
    Status(status::StatusArgs),
    Exporter(exporter::ExporterArgs),
    BackupMark(backup_mark::BackupMarkArgs),
    Delete(delete::DeleteArgs),
    RestoreTest(restore_test::RestoreTestArgs),
    #[command(subcommand)]
    Key(key::KeyCommand),
    Completions(help::CompletionsArgs),
    Man(help::ManArgs),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::WalPush(_) => "wal-push",
            Command::WalFetch(_) => "wal-fetch",
            Command::BackupPush(_) => "backup-push",
            Command::BackupFetch(_) => "backup-fetch",
            Command::BackupList(_) => "backup-list",
            Command::Verify(_) => "verify",
            Command::Status(_) => "status",
            Command::Exporter(_) => "exporter",
            Command::BackupMark(_) => "backup-mark",
            Command::Delete(_) => "delete",
            Command::RestoreTest(_) => "restore-test",
            Command::Key(key::KeyCommand::Rotate(_)) => "key rotate",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
        }
    }
}

impl Command {
    /// The time limit when `--command-timeout` is not given: the commands
    /// PostgreSQL and scripts wait on are bounded; the copies of a whole
    /// cluster, whose length grows with it, are not (each of their requests
    /// is).
    pub fn default_timeout(&self) -> Duration {
        match self {
            Command::WalPush(_)
            | Command::WalFetch(_)
            | Command::BackupList(_)
            | Command::BackupMark(_)
            | Command::Status(_) => Duration::from_secs(600),
            Command::BackupPush(_)
            | Command::BackupFetch(_)
            | Command::Verify(_)
            | Command::Exporter(_)
            | Command::Delete(_)
            | Command::RestoreTest(_)
            | Command::Key(_)
            | Command::Completions(_)
            | Command::Man(_) => Duration::ZERO,
        }
    }
}

/// Whether this process is a background process: the prefetcher of
/// `wal-fetch` or the archiver of `wal-push`. Such a process exits 0
/// whatever happens, even on an internal error: where the postmaster is
/// PID 1 (a container started with `postgres` as its command) it reaps this
/// orphan, and takes any other exit status for a crashed backend and
/// restarts the server. Its failures are warnings in the server's log; the
/// command PostgreSQL calls next does what it could not, and reports that.
pub fn is_background(command: &Command) -> bool {
    match command {
        Command::WalFetch(args) => args.prefetch_worker,
        Command::WalPush(args) => args.archiver,
        _ => false,
    }
}

/// Whether the command line starts a background process (before it is
/// parsed: see [`is_background`]).
pub fn is_background_args() -> bool {
    std::env::args_os().any(|a| a == PREFETCH_WORKER_FLAG || a == ARCHIVER_FLAG)
}

/// How long after its deadline a command is ended even if it is waiting on
/// something other than the repository (PostgreSQL, say): its repository
/// calls fail at the deadline and it normally ends at once, through its
/// ordinary failure path.
const DEADLINE_GRACE: Duration = Duration::from_secs(30);

/// Runs one subcommand within its time limit; the error carries its exit
/// code.
pub async fn run(
    command: Command,
    settings: &Settings,
    config: Option<&std::path::Path>,
) -> Result<(), Failure> {
    // A prefetcher or an archiver lives as long as its work; each of its
    // requests has its own time limits.
    let limit = match is_background(&command) {
        true => Duration::ZERO,
        false => settings
            .command_timeout
            .unwrap_or_else(|| command.default_timeout()),
    };
    if limit.is_zero() {
        return run_command(command, settings, config).await;
    }
    let mut bounded = settings.clone();
    bounded.deadline = Some((std::time::Instant::now() + limit, limit));
    match tokio::time::timeout(limit + DEADLINE_GRACE, run_command(command, &bounded, config)).await {
        Ok(result) => result,
        Err(_) => Err(Failure {
            exit: crate::exit::Exit::TimedOut,
            abort_on_error: settings.abort_on_error,
            quiet: false,
            error: anyhow::anyhow!(
                "the command's time limit of {} ran out (--command-timeout), and it did not end within \
                 {} after that",
                pgark_store::format_duration(limit),
                pgark_store::format_duration(DEADLINE_GRACE)
            ),
        }),
    }
}

async fn run_command(
    command: Command,
    settings: &Settings,
    config: Option<&std::path::Path>,
) -> Result<(), Failure> {
    let result = match command {
        Command::WalPush(args) => wal_push::run(args, settings).await,
        Command::WalFetch(args) => wal_fetch::run(args, settings).await,
        Command::BackupPush(args) => backup_push::run(args, settings, config).await,
        Command::BackupFetch(args) => backup_fetch::run(args, settings, config).await,
        Command::BackupList(args) => backup_list::run(args, settings).await,
        Command::Verify(args) => verify::run(args, settings).await,
        Command::Status(args) => status::run(args, settings).await,
        Command::Exporter(args) => exporter::run(args, settings).await,
        Command::BackupMark(args) => backup_mark::run(args, settings).await,
        Command::Delete(args) => delete::run(args, settings).await,
        Command::RestoreTest(args) => restore_test::run(args, settings, config).await,
        Command::Key(key::KeyCommand::Rotate(args)) => key::rotate(args, settings).await,
        Command::Completions(args) => help::completions(&args),
        Command::Man(args) => help::man(&args),
    };
    result.map_err(|error| {
        let mut failure = Failure::from_anyhow(error);
        failure.abort_on_error = settings.abort_on_error;
        failure
    })
}
