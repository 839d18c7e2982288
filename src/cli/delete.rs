use crate::config::{ConfigError, Settings};
use clap::Args;
use pgark_catalog::BackupName;
use pgark_engine::{ExpireReason, KeepReason, RetentionPlan, RetentionPolicy, WalPlan};
use serde_json::json;

/// Delete old backups by the retention policy, or one backup by name.
///
/// Without --confirm nothing changes: the plan is printed (what would be deleted and why,
/// what is kept and why, bytes freed). A backup is expired when it is beyond the newest
/// --retain-count backups OR finished more than --retain-max-age ago, except: permanent
/// backups, the newest full backup with every delta built on it, and every backup a kept
/// delta depends on are always kept. With NAME, deletes that backup; refused (exit 3) when
/// deltas depend on it (unless --with-dependents) or when it is permanent. An unknown NAME
/// exits 1; no repository at --repo exits 11. Deletion marks each backup (backups/NAME/
/// deleting), removes its manifest, then its other objects, then the mark, so a killed
/// delete never leaves a listed backup that does not restore, and what it leaves is garbage
/// for the next policy run. Then WAL segments before the start of the oldest kept non-permanent backup,
/// on its timeline and its ancestors, are deleted, except permanent backups' own WAL
/// (start to stop segment); timeline history files and .partial segments are kept.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// The one backup to delete (instead of applying the retention policy).
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Keep the newest N backups, full and delta alike.
    #[arg(long, env = "PGARK_RETAIN_COUNT", value_name = "N")]
    pub retain_count: Option<u32>,
    /// Keep backups that finished less than this long ago: 30d, 4w, 6m (months), 12h, 90min,
    /// 1y.
    #[arg(long, env = "PGARK_RETAIN_MAX_AGE", value_name = "AGE")]
    pub retain_max_age: Option<String>,
    /// Backups without a manifest (interrupted backup-push runs) that started longer ago than
    /// this, and uploads that never finished (*.pgark-tmp files, S3 multipart uploads) older
    /// than this, are garbage, deleted with the expired backups (not with NAME); younger ones
    /// may be running. At least 1h [default: 24h].
    #[arg(long, env = "PGARK_GARBAGE_AGE", value_name = "AGE")]
    pub garbage_age: Option<String>,
    /// Delete; without it, only print what would be deleted.
    #[arg(long)]
    pub confirm: bool,
    /// With NAME: also delete the delta backups that depend on it.
    #[arg(long, requires = "name")]
    pub with_dependents: bool,
    /// Print the plan (and what was done) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The retention policy of `delete` (and of `backup-push` when it applies
/// retention), from flags, environment and the configuration file.
pub fn resolve_policy(
    retain_count: Option<u32>,
    retain_max_age: Option<&str>,
    settings: &Settings,
) -> Result<RetentionPolicy, ConfigError> {
    let file = &settings.file;
    let age = retain_max_age.map(str::to_owned).or(file.retain_max_age.clone());
    Ok(RetentionPolicy {
        retain_count: retain_count.or(file.retain_count),
        retain_max_age: age
            .map(|a| crate::config::parse_retain_age(&a))
            .transpose()
            .map_err(|message| ConfigError::Invalid {
                name: "retain-max-age",
                message,
            })?,
    })
}

pub async fn run(args: DeleteArgs, settings: &Settings) -> anyhow::Result<()> {
    let policy = resolve_policy(args.retain_count, args.retain_max_age.as_deref(), settings)?;
    let name = args
        .name
        .as_deref()
        .map(BackupName::parse)
        .transpose()
        .map_err(|e| ConfigError::Invalid {
            name: "NAME",
            message: e.to_string(),
        })?;
    if name.is_none() && policy.is_empty() {
        return Err(ConfigError::Invalid {
            name: "retention",
            message: "nothing to apply: give --retain-count and/or --retain-max-age (or their \
                      PGARK_RETAIN_* variables or configuration keys), or a backup NAME"
                .into(),
        }
        .into());
    }
    let garbage_age = resolve_garbage_age(args.garbage_age, settings)?;
    let (store, keys) = crate::repo::open_existing_with_keys(settings).await?;
    let what = match name {
        Some(name) => What::One {
            name,
            with_dependents: args.with_dependents,
        },
        None => What::Policy { policy, garbage_age },
    };
    let done = execute(&*store, &keys, &what, args.confirm).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&done.to_json())?);
    } else {
        println!("{}", done.to_text());
    }
    Ok(())
}

/// `--garbage-age`, `PGARK_GARBAGE_AGE` or `garbage_age`, else 24 h.
pub fn resolve_garbage_age(
    flag: Option<String>,
    settings: &Settings,
) -> Result<chrono::Duration, ConfigError> {
    match flag.or(settings.file.garbage_age.clone()) {
        Some(a) => {
            let age = crate::config::parse_retain_age(&a).map_err(|message| ConfigError::Invalid {
                name: "garbage-age",
                message,
            })?;
            // Shorter, a running backup-push's parts and uploads would count
            // as garbage.
            if age < chrono::Duration::hours(1) {
                return Err(ConfigError::Invalid {
                    name: "garbage-age",
                    message: format!("{a:?} is less than 1h: a backup-push still running would be garbage"),
                });
            }
            Ok(age)
        }
        None => Ok(pgark_engine::DEFAULT_GARBAGE_AGE),
    }
}

/// What a delete applies to.
pub enum What {
    Policy {
        policy: RetentionPolicy,
        garbage_age: chrono::Duration,
    },
    One {
        name: BackupName,
        with_dependents: bool,
    },
}

/// The plan of a delete, and whether it was carried out.
pub struct Done {
    pub plan: RetentionPlan,
    pub garbage: Vec<(BackupName, u64)>,
    /// Scratch data of interrupted uploads older than the garbage age.
    pub unfinished: Vec<pgark_store::Leftover>,
    pub wal: WalPlan,
    pub confirmed: bool,
    pub objects_deleted: Option<usize>,
}

/// Plans and, with `confirm`, carries out a delete: expired backups
/// (manifests first), then garbage, then WAL. Each step is idempotent, so
/// after a failure or a kill the same command finishes the job.
pub async fn execute(
    store: &dyn pgark_store::ObjectStore,
    keys: &pgark_engine::RepoKeys,
    what: &What,
    confirm: bool,
) -> anyhow::Result<Done> {
    let inventory = pgark_engine::backup_inventory(store, keys).await?;
    let now = chrono::Utc::now();
    let (plan, garbage, unfinished) = match what {
        What::One {
            name,
            with_dependents,
        } => (
            pgark_engine::plan_delete_backup(&inventory, name, *with_dependents)?,
            Vec::new(),
            Vec::new(),
        ),
        What::Policy { policy, garbage_age } => (
            pgark_engine::plan_retention(&inventory.backups, policy, now),
            pgark_engine::garbage(&inventory, now, *garbage_age),
            // Finding them needs more permission (S3:
            // s3:ListBucketMultipartUploads) than the rest: without it,
            // retention goes on and says so.
            match pgark_engine::unfinished_uploads(store, now - *garbage_age).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!("unfinished uploads not looked for: {e}");
                    eprintln!("pgark delete: warning: unfinished uploads not looked for: {e}");
                    Vec::new()
                }
            },
        ),
    };
    let objects_deleted = if confirm {
        let outcome = pgark_engine::apply_plan(store, &plan).await?;
        let garbage_objects = pgark_engine::delete_garbage(store, &garbage).await?;
        if let Err(e) = pgark_engine::remove_unfinished_uploads(store, &unfinished).await {
            eprintln!("pgark delete: warning: unfinished uploads not all removed: {e}");
        }
        Some(outcome.objects_deleted + garbage_objects)
    } else {
        None
    };
    // WAL after backups: a kill in between leaves WAL a rerun removes.
    // Backups with parts but no manifest (running, or interrupted) that
    // are not garbage keep the WAL from their start.
    let incomplete: Vec<BackupName> = inventory
        .incomplete
        .iter()
        .filter(|(n, _)| !garbage.iter().any(|(g, _)| g == n))
        .map(|(n, _)| n.clone())
        .collect();
    let wal = pgark_engine::plan_wal_deletion(store, keys, &plan, &incomplete).await?;
    let objects_deleted = match objects_deleted {
        Some(n) => Some(n + pgark_engine::apply_wal_plan(store, &wal).await?),
        None => None,
    };
    Ok(Done {
        plan,
        garbage,
        unfinished,
        wal,
        confirmed: confirm,
        objects_deleted,
    })
}

impl Done {
    pub fn to_json(&self) -> serde_json::Value {
        let backup = |b: &pgark_engine::RetentionCandidate, reason: String| {
            json!({
                "name": b.name.as_str(),
                "type": if b.parent.is_some() { "delta" } else { "full" },
                "parent": b.parent.as_ref().map(BackupName::as_str),
                "finish_time": b.finished_at.to_rfc3339(),
                "size": b.size,
                "permanent": b.permanent,
                "reason": reason,
            })
        };
        let plan = &self.plan;
        json!({
            "deleted": self.confirmed,
            "expired": plan.expired.iter().map(|e| backup(&e.backup, e.reason.to_string())).collect::<Vec<_>>(),
            "kept": plan.kept.iter().map(|k| backup(&k.backup, k.reason.to_string())).collect::<Vec<_>>(),
            "bytes_freed": plan.bytes_freed,
            "objects_deleted": self.objects_deleted,
            "garbage": self.garbage.iter().map(|(n, size)| json!({"name": n.as_str(), "size": size})).collect::<Vec<_>>(),
            "unfinished_uploads": self.unfinished.iter().map(|l| json!({
                "name": l.name,
                "since": chrono::DateTime::<chrono::Utc>::from(l.since).to_rfc3339(),
                "size": l.size,
            })).collect::<Vec<_>>(),
            "wal": {
                "before_segment": self.wal.cutoff.map(|s| s.to_string()),
                "files": self.wal.keys.len(),
                "bytes_freed": self.wal.bytes,
            },
        })
    }

    pub fn to_text(&self) -> String {
        let mut out = print_plan(&self.plan, &self.wal, self.confirmed);
        for (n, size) in &self.garbage {
            out += &format!(
                "\n{} garbage {n} ({size} bytes: parts of a backup that never completed, or half deleted)",
                if self.confirmed { "deleted" } else { "would delete" }
            );
        }
        for l in &self.unfinished {
            out += &format!(
                "\n{} unfinished upload {} (since {}{}: left by an interrupted upload)",
                if self.confirmed { "removed" } else { "would remove" },
                l.name,
                chrono::DateTime::<chrono::Utc>::from(l.since).format("%Y-%m-%dT%H:%M:%SZ"),
                l.size.map(|s| format!(", {s} bytes")).unwrap_or_default()
            );
        }
        out
    }
}

fn print_plan(plan: &RetentionPlan, wal: &WalPlan, confirmed: bool) -> String {
    let mut lines: Vec<String> = Vec::new();
    let verb = if confirmed { "deleted" } else { "would delete" };
    for e in &plan.expired {
        let why = match &e.reason {
            ExpireReason::Requested => String::new(),
            r => format!(": {r}"),
        };
        lines.push(format!(
            "{verb} {} (finished {}, {} bytes){why}",
            e.backup.name,
            e.backup.finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
            e.backup.size
        ));
    }
    for k in plan.kept.iter().filter(|k| k.reason != KeepReason::NotRequested) {
        lines.push(format!(
            "keep {} (finished {}): {}",
            k.backup.name,
            k.backup.finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
            k.reason
        ));
    }
    lines.push(match wal.cutoff {
        Some(cutoff) => format!(
            "{verb} {} WAL file(s), {} bytes, before {cutoff} (the oldest kept non-permanent backup's start)",
            wal.keys.len(),
            wal.bytes
        ),
        None => "WAL: no non-permanent backup is kept, so no WAL is deleted".to_owned(),
    });
    let n = plan.expired.len();
    lines.push(if confirmed {
        format!("{n} backup(s) deleted, {} bytes freed", plan.bytes_freed)
    } else if n == 0 {
        "nothing to delete".to_owned()
    } else {
        format!(
            "{n} backup(s) would be deleted, {} bytes freed; nothing was changed (--confirm deletes)",
            plan.bytes_freed
        )
    });
    lines.join("\n")
}
