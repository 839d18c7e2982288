use crate::config::Settings;
use clap::Args;
use pgark_catalog::BackupManifest;
use pgark_engine::{ListedBackup, RestoreTestRecord, VerifyRecord};
use serde_json::json;

/// List completed backups, oldest first.
///
/// A repository without backups prints an empty list; no repository at --repo (no
/// repository.json) exits 11 and prints nothing on stdout. A backup whose manifest is damaged
/// is listed with status "damaged: <reason>" (its other fields unknown); after printing
/// everything, backup-list then exits 5.
///
/// Columns: name, status, start and finish time, start LSN and WAL segment, original and stored
/// size, PostgreSQL version (as PostgreSQL names it: 15.18, 9.6.24), whether it is permanent
/// (pgark backup-mark). --json prints the same fields (the version as server_version_num:
/// 150018; with --detail the rest of the manifest summary) as a JSON array for scripts. --detail also shows whether the last
/// `pgark verify` run (recorded in the repository) checked each backup, when, and what it found.
#[derive(Debug, Clone, Args)]
pub struct BackupListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Add stop LSN and segment, timeline, source, compression, file and part counts, full or
    /// delta (and its parent), pages that failed their data checksum, and the last verify run
    /// that checked the backup (time and whole or damaged).
    #[arg(long)]
    pub detail: bool,
}

/// What the last verify run found about `m`: (time, whole), if it checked it.
fn last_verify_of(record: Option<&VerifyRecord>, m: &BackupManifest) -> Option<(String, bool)> {
    let record = record?;
    let b = record.backup(m.name.as_str())?;
    Some((
        record.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        b.whole,
    ))
}

/// What the last restore test found about `m`: (time, passed), if it restored it.
fn last_restore_test_of(record: Option<&RestoreTestRecord>, m: &BackupManifest) -> Option<(String, bool)> {
    let record = record.filter(|r| r.backup == m.name.as_str())?;
    Some((
        record.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        record.passed(),
    ))
}

fn summary(
    m: &BackupManifest,
    permanent: bool,
    detail: bool,
    verified: Option<&VerifyRecord>,
    tested: Option<&RestoreTestRecord>,
) -> serde_json::Value {
    let mut v = json!({
        "name": m.name.as_str(),
        "status": "ok",
        "start_time": m.started_at.to_rfc3339(),
        "finish_time": m.finished_at.to_rfc3339(),
        "server_stop_time": m.server_stop_time.map(|t| t.to_rfc3339()),
        "start_lsn": m.start_lsn,
        "start_wal_segment": m.start_wal_segment,
        "original_size": m.original_size,
        "stored_size": m.stored_size,
        "pg_version": m.pg_version_num,
        "permanent": permanent,
    });
    if detail {
        let extra = json!({
            "stop_lsn": m.stop_lsn,
            "stop_wal_segment": m.stop_wal_segment,
            "timeline": m.timeline,
            "system_identifier": m.system_identifier.to_string(),
            "backup_from": m.backup_from,
            "compression": m.compression,
            "files": m.files.len(),
            "parts": m.parts.len(),
            "tablespaces": m.tablespaces.len(),
            "tool_version": m.tool_version,
            "type": if m.is_delta() { "delta" } else { "full" },
            "parent": m.parent.as_ref().map(|p| p.as_str()),
            "delta_depth": m.delta_depth,
            "data_checksums": m.data_checksums,
            "corrupt_pages": m
                .corrupt_pages
                .iter()
                .map(|c| json!({"path": c.path, "blocks": c.blocks}))
                .collect::<Vec<_>>(),
            "last_verify": last_verify_of(verified, m).map(|(time, whole)| json!({"time": time, "whole": whole})),
            "last_restore_test": last_restore_test_of(tested, m).map(|(time, passed)| json!({"time": time, "passed": passed})),
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
    }
    v
}

fn damaged_summary(name: &str, reason: &str) -> serde_json::Value {
    json!({
        "name": name,
        "status": format!("damaged: {reason}"),
    })
}

pub async fn run(args: BackupListArgs, settings: &Settings) -> anyhow::Result<()> {
    let (store, keys) = crate::repo::open_existing_with_keys(settings).await?;
    let backups = pgark_engine::list_backups_detailed(&*store, &keys).await?;
    let permanent = pgark_engine::permanent_marks(&*store).await?;
    let verified = if args.detail {
        match pgark_engine::last_verify(&*store, &keys).await {
            Ok(record) => record,
            Err(e) if e.class() == pgark_engine::ErrorClass::Integrity => {
                tracing::warn!("the record of the last verify run is unusable: {e}");
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let tested = if args.detail {
        match pgark_engine::last_restore_test(&*store, &keys).await {
            Ok(record) => record,
            Err(e) if e.class() == pgark_engine::ErrorClass::Integrity => {
                tracing::warn!("the record of the last restore test is unusable: {e}");
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    if args.json {
        let list: Vec<_> = backups
            .iter()
            .map(|b| match b {
                ListedBackup::Ok(m) => summary(
                    m,
                    permanent.contains(&m.name),
                    args.detail,
                    verified.as_ref(),
                    tested.as_ref(),
                ),
                ListedBackup::Damaged { name, reason, .. } => damaged_summary(name.as_str(), reason),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return damage_outcome(backups);
    }
    let mut header = format!(
        "{:<46} {:<7} {:<20} {:<20} {:<12} {:<24} {:>12} {:>12} {:>7} {:<9}",
        "name",
        "status",
        "start_time",
        "finish_time",
        "start_lsn",
        "start_wal_segment",
        "original",
        "stored",
        "pg",
        "permanent"
    );
    if args.detail {
        header += &format!(
            " {:<12} {:<24} {:>3} {:<8} {:<5} {:>6} {:<7} {:<46} {:>7} {:<20} {:<8} {:<20} {:<6}",
            "stop_lsn",
            "stop_wal_segment",
            "tli",
            "from",
            "codec",
            "files",
            "type",
            "parent",
            "corrupt",
            "last_verify",
            "verified",
            "last_restore_test",
            "tested"
        );
    }
    println!("{header}");
    for b in &backups {
        let m = match b {
            ListedBackup::Ok(m) => m,
            ListedBackup::Damaged { name, reason, .. } => {
                println!("{:<46} damaged: {reason}", name.as_str());
                continue;
            }
        };
        let mut line = format!(
            "{:<46} {:<7} {:<20} {:<20} {:<12} {:<24} {:>12} {:>12} {:>7} {:<9}",
            m.name.as_str(),
            "ok",
            m.started_at.format("%Y-%m-%dT%H:%M:%SZ"),
            m.finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
            m.start_lsn,
            m.start_wal_segment,
            m.original_size,
            m.stored_size,
            pg_version(m.pg_version_num),
            if permanent.contains(&m.name) { "yes" } else { "no" }
        );
        if args.detail {
            let (verify_time, verify_outcome) = match last_verify_of(verified.as_ref(), m) {
                Some((time, whole)) => (time, if whole { "whole" } else { "damaged" }),
                None => ("-".to_string(), "-"),
            };
            let (test_time, test_outcome) = match last_restore_test_of(tested.as_ref(), m) {
                Some((time, passed)) => (time, if passed { "passed" } else { "FAILED" }),
                None => ("-".to_string(), "-"),
            };
            line += &format!(
                " {:<12} {:<24} {:>3} {:<8} {:<5} {:>6} {:<7} {:<46} {:>7} {:<20} {:<8} {:<20} {:<6}",
                m.stop_lsn,
                m.stop_wal_segment,
                m.timeline,
                m.backup_from,
                m.compression,
                m.files.len(),
                if m.is_delta() { "delta" } else { "full" },
                m.parent.as_ref().map_or("-", |p| p.as_str()),
                m.corrupt_pages.iter().map(|c| c.blocks.len()).sum::<usize>(),
                verify_time,
                verify_outcome,
                test_time,
                test_outcome
            );
        }
        println!("{line}");
        if args.detail {
            for c in &m.corrupt_pages {
                let blocks: Vec<String> = c.blocks.iter().map(u32::to_string).collect();
                println!("  corrupt pages in {}: block(s) {}", c.path, blocks.join(", "));
            }
        }
    }
    damage_outcome(backups)
}

/// A `server_version_num` as PostgreSQL names the version: `15.18` for
/// 150018 (from 10 on, major and minor), `9.6.24` for 90624 (before 10,
/// two numbers make the major version).
fn pg_version(num: u32) -> String {
    if num >= 100_000 {
        format!("{}.{}", num / 10_000, num % 10_000)
    } else {
        format!("{}.{}.{}", num / 10_000, num / 100 % 100, num % 100)
    }
}

/// Everything is printed; a damaged backup still makes the command fail
/// (exit 5), reporting the first damaged manifest (the listing names all).
fn damage_outcome(backups: Vec<ListedBackup>) -> anyhow::Result<()> {
    let first = backups.into_iter().find_map(|b| match b {
        ListedBackup::Damaged { error, .. } => Some(error),
        ListedBackup::Ok(_) => None,
    });
    match first {
        None => Ok(()),
        Some(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::pg_version;

    #[test]
    fn pg_version_is_printed_as_postgresql_names_it() {
        assert_eq!(pg_version(150018), "15.18");
        assert_eq!(pg_version(170000), "17.0");
        assert_eq!(pg_version(100023), "10.23");
        assert_eq!(pg_version(180001), "18.1");
        assert_eq!(pg_version(90624), "9.6.24");
        assert_eq!(pg_version(90500), "9.5.0");
    }
}
