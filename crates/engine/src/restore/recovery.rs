//! Stage 6 of a restore: the restored server's configuration.
//!
//! A backup carries the source's `postgresql.auto.conf`, and with it
//! whatever recovery settings the source had: a cluster that was itself
//! restored to a point in time and promoted still holds
//! `recovery_target_time` there, and a restore of its backups would stop
//! at that old target and promote, dropping every later transaction.
//! So, before pgark writes its own settings, every recovery setting of the
//! source in `postgresql.auto.conf` is commented out, with a note saying
//! why: the recovery targets, `restore_command`, `recovery_end_command`,
//! `archive_cleanup_command`, and `primary_conninfo`/`primary_slot_name`
//! unless the restore makes a standby. `postgresql.conf` is not edited
//! (it is the administrator's file); each recovery setting found there is
//! reported as a warning. With `--archive-mode off`, `archive_mode = off`
//! is written too, so a clone does not archive into the source's
//! repository.
//!
//! What a failure leaves: `postgresql.auto.conf` is replaced atomically
//! (written aside, renamed), so it is either the backup's or the new one.

use super::{ArchiveMode, RecoveryOptions, RecoveryTarget};
use crate::EngineError;
use chrono::Utc;
use pgark_catalog::BackupManifest;
use std::io::Write;
use std::path::Path;

/// Settings that steer archive recovery; none may come from the source.
const RECOVERY_SETTINGS: &[&str] = &[
    "restore_command",
    "recovery_end_command",
    "archive_cleanup_command",
    "recovery_target",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_inclusive",
    "recovery_target_action",
    "recovery_target_timeline",
    "promote_trigger_file",
];

/// The recovery targets, of which PostgreSQL accepts one.
const TARGETS: [&str; 5] = [
    "recovery_target",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
];

/// Settings that make a standby follow a primary (and lag behind it): kept
/// only when the restore makes a standby (or writes no recovery settings
/// at all).
const STANDBY_SETTINGS: &[&str] = &[
    "primary_conninfo",
    "primary_slot_name",
    "recovery_min_apply_delay",
];

/// Settings of archiving, disabled with `--archive-mode off`.
const ARCHIVE_SETTINGS: &[&str] = &["archive_mode", "archive_command", "archive_library"];

/// The note put before each line pgark comments out.
const DISABLED_NOTE: &str = "# pgark backup-fetch: setting of the backed-up server, disabled: ";

/// Rewrites the restored configuration (see the module docs) and creates
/// the signal file. `recovery` is `None` with `--no-recovery`: the
/// source's recovery targets and commands are still disabled, but nothing
/// is written in their place and no signal file is created (and with none
/// to disable, `postgresql.auto.conf` stays byte for byte the backup's).
pub(super) fn write_settings(
    dest: &Path,
    manifest: &BackupManifest,
    recovery: Option<&RecoveryOptions>,
    archive_mode: ArchiveMode,
) -> Result<(), EngineError> {
    let standby = recovery.is_none_or(|r| r.standby);
    let mut disable: Vec<&str> = RECOVERY_SETTINGS.to_vec();
    if !standby {
        disable.extend_from_slice(STANDBY_SETTINGS);
    }
    // postgresql.conf's archive settings are overridden by the
    // archive_mode = off written below: only recovery settings are worth
    // a warning there.
    warn_about_postgresql_conf(dest, &disable);
    if archive_mode == ArchiveMode::Off {
        disable.extend_from_slice(ARCHIVE_SETTINGS);
    }

    let auto = dest.join("postgresql.auto.conf");
    let old = match std::fs::read_to_string(&auto) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(EngineError::local_io("cannot read", &auto, e)),
    };
    let (mut text, disabled) = disable_settings(&old, &disable);
    if recovery.is_none() && disabled.is_empty() && archive_mode == ArchiveMode::Preserve {
        // --no-recovery and nothing to disable: the file stays the backup's.
        return Ok(());
    }
    for name in &disabled {
        tracing::info!("postgresql.auto.conf: the backed-up server's {name} is commented out");
    }
    text += &pgark_settings(manifest, recovery, archive_mode);
    replace_file(&auto, &text)?;

    if let Some(r) = recovery {
        let signal = dest.join(if r.standby {
            "standby.signal"
        } else {
            "recovery.signal"
        });
        super::finish::write_text(&signal, "")?;
    }
    Ok(())
}

/// The setting a configuration line assigns, lower-cased: `name = value`,
/// `name=value` or `name value`; `None` for comments and blank lines
/// (`include` directives come out as `include`, which is no setting pgark
/// disables).
fn setting_name(line: &str) -> Option<String> {
    let t = line.trim_start();
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$'))
        .unwrap_or(t.len());
    let name = &t[..end];
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return None;
    }
    let rest = t[end..].trim_start();
    (rest.starts_with('=') || !rest.is_empty()).then(|| name.to_ascii_lowercase())
}

/// Comments out every line of `text` that sets one of `names`; returns the
/// new text and the settings disabled.
fn disable_settings(text: &str, names: &[&str]) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len() + 256);
    let mut disabled = Vec::new();
    for line in text.lines() {
        match setting_name(line) {
            Some(name) if names.contains(&name.as_str()) => {
                out += DISABLED_NOTE;
                out += line;
                disabled.push(name);
            }
            _ => out += line,
        }
        out.push('\n');
    }
    (out, disabled)
}

/// The block pgark appends: what this restore asks for.
fn pgark_settings(
    manifest: &BackupManifest,
    r: Option<&RecoveryOptions>,
    archive_mode: ArchiveMode,
) -> String {
    let mut lines = format!(
        "# Settings written by pgark backup-fetch of {} at {}\n",
        manifest.name,
        Utc::now().to_rfc3339()
    );
    if archive_mode == ArchiveMode::Off {
        lines += "archive_mode = 'off'\n";
    }
    let Some(r) = r else {
        return lines;
    };
    if let Some(cmd) = &r.restore_command {
        lines += &format!("restore_command = {}\n", conf_quote(cmd));
    }
    // Every kind of target is written, the ones not asked for as '' (unset):
    // the last occurrence of a setting wins, so a target that
    // postgresql.conf or a file it includes still sets cannot meet this one
    // ("multiple recovery targets specified") or stop recovery early.
    let (kind, value) = match &r.target {
        Some(RecoveryTarget::Time(t)) => ("recovery_target_time", t.as_str()),
        Some(RecoveryTarget::Xid(x)) => ("recovery_target_xid", x.as_str()),
        Some(RecoveryTarget::Name(n)) => ("recovery_target_name", n.as_str()),
        Some(RecoveryTarget::Lsn(l)) => ("recovery_target_lsn", l.as_str()),
        Some(RecoveryTarget::Immediate) => ("recovery_target", "immediate"),
        None => ("", ""),
    };
    // The unset ones first: PostgreSQL refuses to assign any target, even
    // '', while another kind is set.
    for name in TARGETS.iter().filter(|&&n| n != kind) {
        lines += &format!("{name} = ''\n");
    }
    if !kind.is_empty() {
        lines += &format!("{kind} = {}\n", conf_quote(value));
    }
    // The rest at what was asked, else at PostgreSQL's defaults.
    lines += "recovery_target_inclusive = 'on'\n";
    lines += &format!(
        "recovery_target_action = {}\n",
        conf_quote(r.action.as_deref().unwrap_or("pause"))
    );
    lines += &format!(
        "recovery_target_timeline = {}\n",
        conf_quote(r.timeline.as_deref().unwrap_or("latest"))
    );
    lines
}

/// Warns about each recovery setting `postgresql.conf` (in the restored
/// directory) sets: pgark does not edit that file, and a target set there
/// meets the one pgark writes ("multiple recovery targets specified") or
/// stops recovery where the source's administrator once wanted.
fn warn_about_postgresql_conf(dest: &Path, names: &[&str]) {
    let path = dest.join("postgresql.conf");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    for (n, line) in text.lines().enumerate() {
        if let Some(name) = setting_name(line).filter(|s| names.contains(&s.as_str())) {
            tracing::warn!(
                "{} line {} sets {name}: pgark does not edit postgresql.conf, and this setting of the \
                 backed-up server applies to the restored one (remove it unless it is meant: \"{}\")",
                path.display(),
                n + 1,
                line.trim()
            );
        }
    }
}

/// A postgresql.conf string literal.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Writes `text` beside `path`, fsyncs it and renames it into place.
fn replace_file(path: &Path, text: &str) -> Result<(), EngineError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("conf.pgark-tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| EngineError::local_io("cannot create", &tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
        .and_then(|()| f.sync_all())
        .map_err(|e| EngineError::local_io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::local_io("cannot rename into", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_names_are_read_as_postgresql_reads_them() {
        assert_eq!(
            setting_name("recovery_target_time = '2026-01-01'").as_deref(),
            Some("recovery_target_time")
        );
        assert_eq!(
            setting_name("  Recovery_Target_LSN='0/3000000'").as_deref(),
            Some("recovery_target_lsn")
        );
        assert_eq!(
            setting_name("restore_command 'cp %p %f'").as_deref(),
            Some("restore_command")
        );
        assert_eq!(setting_name("# recovery_target_time = 'x'"), None);
        assert_eq!(setting_name(""), None);
        assert_eq!(setting_name("   "), None);
        assert_eq!(setting_name("include 'other.conf'").as_deref(), Some("include"));
        assert_eq!(setting_name("recovery_target_timeline"), None);
    }

    #[test]
    fn the_sources_recovery_settings_are_commented_out() {
        let text = "# Do not edit this file manually!\n\
                    work_mem = '64MB'\n\
                    recovery_target_time = '2026-11-01 10:00:00+00'\n\
                    restore_command = 'old %f %p'\n\
                    recovery_target_action = 'promote'\n\
                    primary_conninfo = 'host=old'\n\
                    archive_command = 'pgark wal-push %p'\n";
        let (out, disabled) = disable_settings(text, RECOVERY_SETTINGS);
        assert_eq!(
            disabled,
            [
                "recovery_target_time",
                "restore_command",
                "recovery_target_action"
            ]
        );
        assert!(out.contains("work_mem = '64MB'\n"));
        assert!(out.contains("\nprimary_conninfo = 'host=old'\n"));
        assert!(out.contains(&format!(
            "{DISABLED_NOTE}recovery_target_time = '2026-11-01 10:00:00+00'\n"
        )));
        for line in out.lines() {
            assert!(
                line.starts_with('#')
                    || !line.contains("recovery_target") && !line.contains("restore_command"),
                "{line}"
            );
        }
        let mut names = RECOVERY_SETTINGS.to_vec();
        names.extend_from_slice(STANDBY_SETTINGS);
        names.extend_from_slice(ARCHIVE_SETTINGS);
        let (out, disabled) = disable_settings(text, &names);
        assert_eq!(disabled.len(), 5);
        assert!(out
            .lines()
            .filter(|l| !l.starts_with('#'))
            .eq(["work_mem = '64MB'"]));
    }
}
