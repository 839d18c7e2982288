use crate::config::Settings;
use clap::Args;
use pgark_catalog::BackupName;
use pgark_engine::{BackupVerdict, EngineError, VerifyOptions, VerifyTarget};
use serde_json::json;

/// Read every object of a backup and check it, writing only the record of the run.
///
/// Every part is read whole: its length and digest against its trailer and against the
/// manifest, every file, piece and delta increment against the manifest's size and CRC-32C;
/// for a delta, its parents too. Then the WAL: the segments from the backup's start to its
/// stop must be archived, and the archive is followed from its start along its timeline and
/// the timelines descending from it to the first missing segment. With --wal, every WAL
/// segment from each backup's start to its stop is also read and decoded (digest checked) and
/// its records followed: valid page headers, records chained with valid CRCs up to the
/// backup's stop LSN. The run's result is recorded in the repository as verify/latest
/// (backup-list --detail shows it), unless the repository failed. Exit 0 when everything
/// checked is whole, 5 when something is damaged or missing (each named), 6 when the
/// repository fails.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Backup name (see backup-list) or LATEST.
    #[arg(default_value = "LATEST", conflicts_with = "all")]
    pub name: String,
    /// Verify every backup of the repository.
    #[arg(long)]
    pub all: bool,
    /// Also read every WAL segment from each backup's start to its stop and check its pages
    /// and records up to the stop LSN (downloads the backup's WAL, one segment at a time).
    #[arg(long)]
    pub wal: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Parts read at once [default: number of CPUs].
    #[arg(long, env = "PGARK_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
}

fn as_json(v: &BackupVerdict) -> serde_json::Value {
    json!({
        "name": v.name.as_str(),
        "whole": v.is_whole(),
        "parts": v.parts,
        "bytes": v.bytes,
        "wal_reaches": v.wal_reaches.map(|s| s.to_string()),
        "wal_gap": v.wal_gap.map(|s| s.to_string()),
        "wal_checked_segments": v.wal_checked_segments,
        "problems": v.problems,
    })
}

pub async fn run(args: VerifyArgs, settings: &Settings) -> anyhow::Result<()> {
    let (store, keys) = crate::repo::open_existing_with_keys(settings).await?;
    let target = if args.all {
        VerifyTarget::All
    } else if args.name == "LATEST" {
        VerifyTarget::Latest
    } else {
        VerifyTarget::Named(BackupName::parse(&args.name)?)
    };
    let concurrency = args
        .concurrency
        .or(settings.file.concurrency)
        .unwrap_or_else(crate::config::cpus);
    let opts = VerifyOptions {
        concurrency,
        wal_level: args.wal,
    };
    let verdicts = pgark_engine::verify(store.clone(), &target, &keys, &opts).await?;
    // Recorded whatever the outcome; a record that cannot be written does
    // not change it.
    let record = pgark_engine::verify_record(&target, args.wal, &verdicts);
    if let Err(e) = pgark_engine::record_verify(&*store, &keys, &record).await {
        tracing::warn!("the result of this verify run could not be recorded in the repository: {e}");
    }
    if args.json {
        let list: Vec<_> = verdicts.iter().map(as_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for v in &verdicts {
            let mut wal = match (&v.wal_reaches, &v.wal_gap) {
                (Some(r), None) => format!("WAL archived through {r}"),
                (Some(r), Some(g)) => format!("WAL archived through {r}, then {g} missing"),
                (None, _) => "none of its WAL archived".to_string(),
            };
            if let Some(n) = v.wal_checked_segments {
                wal += &format!("; {n} WAL segments read");
            }
            if v.is_whole() {
                println!(
                    "{}: whole ({} parts, {} bytes read; {wal})",
                    v.name, v.parts, v.bytes
                );
            } else {
                println!("{}: DAMAGED ({wal})", v.name);
                for p in &v.problems {
                    println!("  {p}");
                }
            }
        }
    }
    let damaged: Vec<&BackupVerdict> = verdicts.iter().filter(|v| !v.is_whole()).collect();
    if let Some(first) = damaged.first() {
        return Err(EngineError::Integrity {
            key: first.name.manifest_key().to_string(),
            source: pgark_codec::CodecError::Io(std::io::Error::other(format!(
                "{} of {} backups verified are damaged or incomplete; first: {}",
                damaged.len(),
                verdicts.len(),
                first.problems[0]
            ))),
        }
        .into());
    }
    Ok(())
}
