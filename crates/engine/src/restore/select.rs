//! Stage 1 of a restore: which backup, and why.
//!
//! A backup can serve a recovery target only if it was consistent before
//! the target: recovery that reaches its target before the backup's end
//! fails ("requested recovery stop point is before consistent recovery
//! point"). So:
//!
//! - `--target-time T`: a backup whose stop time is before T. The stop
//!   time is the *server's* clock when `pg_backup_stop` returned (recorded
//!   in the manifest since manifests carry `server_stop_time`), the clock
//!   commit timestamps come from; backups that predate that record fall
//!   back to pgark's own clock when the backup finished, and say so.
//! - `--target-lsn L`: a backup whose stop LSN is at or before L.
//! - no target, `--target-immediate`, `--target-name`, `--target-xid`:
//!   the newest backup (a name or an xid cannot be placed in time without
//!   reading WAL).
//!
//! `LATEST` takes the newest backup that qualifies; a named backup that
//! does not qualify is refused. When none can reach the target, the
//! restore stops here, before anything is touched. Reads manifests only.

use super::{BackupFetchOptions, BackupSelector, RecoveryTarget};
use crate::manifest_io::{list_summaries, load_manifest};
use crate::EngineError;
use chrono::{DateTime, Utc};
use pgark_catalog::{BackupManifest, BackupName, BackupSummary};
use pgark_pg::Lsn;
use pgark_store::ObjectStore;
use std::path::PathBuf;

/// The backup chosen, and a sentence saying why.
pub(super) struct Selected {
    pub manifest: BackupManifest,
    pub reason: String,
}

/// What the recovery target asks of the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Goal {
    /// Consistent before this time.
    Before(DateTime<Utc>),
    /// Consistent at or before this LSN.
    AtOrBefore(Lsn),
    /// Nothing the manifest can tell.
    Any,
}

impl Goal {
    pub(super) fn of(target: Option<&RecoveryTarget>) -> Result<Goal, EngineError> {
        Ok(match target {
            Some(RecoveryTarget::Time(t)) => Goal::Before(parse_target_time(t)?),
            Some(RecoveryTarget::Lsn(l)) => {
                Goal::AtOrBefore(l.parse().map_err(|_| EngineError::Rejected {
                    path: PathBuf::from("--target-lsn"),
                    reason: format!("{l:?} is not an LSN like 0/3000028"),
                })?)
            }
            _ => Goal::Any,
        })
    }

    /// Whether `m` can reach the goal; if not, why.
    fn reachable(&self, m: &BackupSummary) -> Result<(), String> {
        match *self {
            Goal::Any => Ok(()),
            Goal::Before(t) => {
                let (stop, clock) = stop_time(m);
                if stop < t {
                    Ok(())
                } else {
                    Err(format!(
                        "backup {} was consistent only at {} ({clock}), not before the target time {}",
                        m.name,
                        stop.to_rfc3339(),
                        t.to_rfc3339()
                    ))
                }
            }
            Goal::AtOrBefore(lsn) => match m.stop_lsn.parse::<Lsn>() {
                Ok(stop) if stop <= lsn => Ok(()),
                _ => Err(format!(
                    "backup {} was consistent only at LSN {}, after the target LSN {lsn}",
                    m.name, m.stop_lsn
                )),
            },
        }
    }
}

/// When the backup became consistent, and by which clock.
fn stop_time(m: &BackupSummary) -> (DateTime<Utc>, &'static str) {
    match m.server_stop_time {
        Some(t) => (t, "the server's clock at pg_backup_stop"),
        None => (
            m.finished_at,
            "pgark's clock when the backup finished; this backup records no server time",
        ),
    }
}

/// Reads the manifests and chooses (see the module docs).
pub(super) async fn select(
    store: &dyn ObjectStore,
    opts: &BackupFetchOptions,
) -> Result<Selected, EngineError> {
    let goal = Goal::of(opts.recovery.as_ref().and_then(|r| r.target.as_ref()))?;
    match &opts.backup {
        BackupSelector::Named(name) => {
            let manifest = load_manifest(store, name, &opts.keys).await?;
            goal.reachable(&BackupSummary::of(&manifest))
                .map_err(|why| EngineError::Rejected {
                    path: PathBuf::from(name.as_str()),
                    reason: format!("{why}: recovery could not stop at the target; choose an older backup"),
                })?;
            Ok(Selected {
                reason: format!("backup {name}, as named"),
                manifest,
            })
        }
        BackupSelector::Latest => {
            // Chosen from the summaries; only the chosen backup's manifest
            // is read. One that turns out damaged, or not what its summary
            // said, is passed over for the next.
            let mut summaries = list_summaries(store, &opts.keys).await?;
            let mut damage: Option<EngineError> = None;
            loop {
                let (chosen, reason) = match choose(&summaries, goal) {
                    Ok(c) => c,
                    // Every backup that could serve is damaged: that is the
                    // failure to report (exit 5), not "not found".
                    Err(e) if e.class() == crate::ErrorClass::NotFound && summaries.is_empty() => {
                        return Err(damage.unwrap_or(e))
                    }
                    Err(e) => return Err(e),
                };
                let manifest = match load_manifest(store, &chosen.name, &opts.keys).await {
                    Ok(m) if BackupSummary::of(&m) == chosen => m,
                    Ok(_) => {
                        tracing::warn!(
                            "skipping backup {}: its summary does not match its manifest",
                            chosen.name
                        );
                        summaries.retain(|s| s.name != chosen.name);
                        continue;
                    }
                    Err(e) if matches!(e.class(), crate::ErrorClass::Integrity) => {
                        tracing::warn!("skipping backup {}: {e}", chosen.name);
                        summaries.retain(|s| s.name != chosen.name);
                        damage.get_or_insert(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                return Ok(Selected { manifest, reason });
            }
        }
    }
}

/// The newest of `all` (oldest first) that can reach `goal`.
pub(super) fn choose(all: &[BackupSummary], goal: Goal) -> Result<(BackupSummary, String), EngineError> {
    let count = all.len();
    let mut refusals = Vec::new();
    // A delta restores only with its whole chain: one whose parent (or an
    // older link) is damaged or gone is skipped, saying so.
    let usable: std::collections::HashMap<BackupName, Option<BackupName>> =
        all.iter().map(|m| (m.name.clone(), m.parent.clone())).collect();
    let broken_link = |m: &BackupSummary| {
        let mut parent = m.parent.clone();
        for _ in 0..=usable.len() {
            match parent {
                None => return None,
                Some(p) => match usable.get(&p) {
                    Some(next) => parent = next.clone(),
                    None => return Some(p),
                },
            }
        }
        None
    };
    for m in all.iter().rev() {
        if let Some(missing) = broken_link(m) {
            tracing::warn!(
                "skipping backup {}: its delta chain needs backup {missing}, which is damaged or missing",
                m.name
            );
            refusals.push(format!(
                "backup {}'s delta chain needs {missing}, damaged or missing",
                m.name
            ));
            continue;
        }
        let m = m.clone();
        match goal.reachable(&m) {
            Ok(()) => {
                let reason = match goal {
                    Goal::Any => format!("backup {}, the newest", m.name),
                    Goal::Before(t) => {
                        let (stop, clock) = stop_time(&m);
                        format!(
                            "backup {}, the newest consistent before the target time {} (at {}, {clock})",
                            m.name,
                            t.to_rfc3339(),
                            stop.to_rfc3339()
                        )
                    }
                    Goal::AtOrBefore(lsn) => format!(
                        "backup {}, the newest consistent at or before the target LSN {lsn} (stop LSN {})",
                        m.name, m.stop_lsn
                    ),
                };
                return Ok((m, reason));
            }
            Err(why) => refusals.push(why),
        }
    }
    Err(EngineError::NotFound {
        what: match (count, refusals.last()) {
            (0, _) | (_, None) => "a completed backup".to_string(),
            (n, Some(oldest)) => format!(
                "a backup that can reach the recovery target (none of the {n} backups can; the oldest: {oldest})"
            ),
        },
        key: pgark_catalog::BACKUPS_PREFIX.to_string(),
    })
}

/// Parses the recovery target times PostgreSQL users write most:
/// RFC 3339, and `YYYY-MM-DD HH:MM:SS[.f][+TZ| UTC]`.
pub fn parse_target_time(s: &str) -> Result<DateTime<Utc>, EngineError> {
    let t = s.trim();
    let t = t
        .strip_suffix(" UTC")
        .map(|x| format!("{x}+00:00"))
        .unwrap_or_else(|| t.to_string());
    let formats = [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%#z",
    ];
    if let Ok(d) = DateTime::parse_from_rfc3339(&t) {
        return Ok(d.with_timezone(&Utc));
    }
    for f in formats {
        if let Ok(d) = DateTime::parse_from_str(&t, f) {
            return Ok(d.with_timezone(&Utc));
        }
    }
    Err(EngineError::Rejected {
        path: PathBuf::from("--target-time"),
        reason: format!("{s:?} is not a time with a zone, such as '2026-11-22 10:30:00+00'"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(name_time: &str, finished: &str, server_stop: Option<&str>, stop_lsn: &str) -> BackupManifest {
        let t = |s: &str| parse_target_time(s).unwrap();
        BackupManifest {
            format: 2,
            name: BackupName::new("000000010000000000000002", t(name_time)),
            tool_version: "0".into(),
            system_identifier: 1,
            pg_version_num: 170000,
            timeline: 1,
            start_lsn: "0/2000028".into(),
            stop_lsn: stop_lsn.into(),
            start_wal_segment: "000000010000000000000002".into(),
            stop_wal_segment: "000000010000000000000002".into(),
            wal_segment_size: 16 << 20,
            backup_from: "primary".into(),
            started_at: t(finished),
            finished_at: t(finished),
            server_stop_time: server_stop.map(t),
            original_size: 0,
            stored_size: 0,
            compression: "zstd".into(),
            backup_label: String::new(),
            tablespace_map: String::new(),
            tablespaces: vec![],
            parent: None,
            delta_depth: 0,
            delta_since_lsn: None,
            data_checksums: true,
            block_size: 8192,
            corrupt_pages: vec![],
            parts: vec![],
            directories: vec![],
            files: vec![],
        }
    }

    fn sums(all: &[BackupManifest]) -> Vec<BackupSummary> {
        all.iter().map(BackupSummary::of).collect()
    }

    fn time(s: &str) -> Goal {
        Goal::Before(parse_target_time(s).unwrap())
    }

    /// pgark's host clock ran an hour behind the server's: the choice
    /// follows the server's stop time, not the host's.
    #[test]
    fn target_time_follows_the_servers_clock() {
        let all = vec![
            backup(
                "2026-12-01 09:00:00+00",
                "2026-12-01 09:05:00+00",
                Some("2026-12-01 10:05:00+00"),
                "0/3000000",
            ),
            backup(
                "2026-12-01 10:00:00+00",
                "2026-12-01 10:05:00+00",
                Some("2026-12-01 11:05:00+00"),
                "0/5000000",
            ),
        ];
        let chosen = choose(&sums(&all), time("2026-12-01 10:30:00+00")).unwrap();
        assert_eq!(chosen.0.name, all[0].name, "{}", chosen.1);
        assert!(chosen.1.contains("server's clock"), "{}", chosen.1);
        let chosen = choose(&sums(&all), time("2026-12-01 11:06:00+00")).unwrap();
        assert_eq!(chosen.0.name, all[1].name);
        // Before every backup's end: none, and the message says why.
        let err = choose(&sums(&all), time("2026-12-01 10:00:00+00")).err().unwrap();
        assert_eq!(err.class(), crate::ErrorClass::NotFound);
        assert!(
            err.to_string().contains("consistent only at 2026-12-01T10:05:00"),
            "{err}"
        );
        // A backup recorded before server times: pgark's clock, said so.
        let old = vec![backup(
            "2026-12-01 09:00:00+00",
            "2026-12-01 09:05:00+00",
            None,
            "0/3000000",
        )];
        let chosen = choose(&sums(&old), time("2026-12-01 09:06:00+00")).unwrap();
        assert!(chosen.1.contains("records no server time"), "{}", chosen.1);
    }

    #[test]
    fn a_delta_whose_parent_is_gone_is_not_latest() {
        let full = backup(
            "2026-12-01 09:00:00+00",
            "2026-12-01 09:05:00+00",
            None,
            "0/3000000",
        );
        let mut delta = backup(
            "2026-12-01 10:00:00+00",
            "2026-12-01 10:05:00+00",
            None,
            "0/5000000",
        );
        delta.parent = Some(BackupName::parse("base_000000010000000000000001_20261201T080000Z").unwrap());
        let chosen = choose(&sums(&[full.clone(), delta.clone()]), Goal::Any).unwrap();
        assert_eq!(chosen.0.name, full.name);
        delta.parent = Some(full.name.clone());
        let chosen = choose(&sums(&[full.clone(), delta.clone()]), Goal::Any).unwrap();
        assert_eq!(chosen.0.name, delta.name);
    }

    #[test]
    fn target_lsn_follows_the_stop_lsn() {
        let all = vec![
            backup(
                "2026-12-01 09:00:00+00",
                "2026-12-01 09:05:00+00",
                None,
                "0/3000000",
            ),
            backup(
                "2026-12-01 10:00:00+00",
                "2026-12-01 10:05:00+00",
                None,
                "0/5000000",
            ),
        ];
        let lsn = |s: &str| Goal::AtOrBefore(s.parse().unwrap());
        assert_eq!(choose(&sums(&all), lsn("0/4FFFFFF")).unwrap().0.name, all[0].name);
        assert_eq!(choose(&sums(&all), lsn("0/5000000")).unwrap().0.name, all[1].name);
        assert!(choose(&sums(&all), lsn("0/2FFFFFF")).is_err());
        assert_eq!(choose(&sums(&all), Goal::Any).unwrap().0.name, all[1].name);
        assert!(choose(&[], Goal::Any).is_err());
    }
}
