//! Restores as a DBA runs them after an incident: a PITR restore promoted
//! in place and backed up again, restores aimed at a running server, at a
//! directory that is not PostgreSQL's, at another cluster, at a live
//! tablespace, and a clone that archives into the source's repository.
//! Each asserts on the data and on the files left untouched.

use crate::common::*;
use pgark_testkit::pg::{chown_to_pg_user, scratch_dir, ClusterOptions, PgCluster, PgInstall};
use std::path::Path;
use std::time::Duration;

fn digest(c: &PgCluster) -> String {
    table_digest(c, "t", "id")
}

fn insert(c: &PgCluster, batch: &str, n: u32) {
    c.psql(&format!(
        "insert into t (batch) select '{batch}' from generate_series(1, {n})"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
}

fn source(extra_conf: &str) -> ArchivingCluster {
    let src = ArchivingCluster::start(extra_conf);
    src.cluster
        .psql("create table t (id bigserial primary key, batch text not null)")
        .unwrap();
    src
}

/// Starts a restored directory as it is (its own archive settings kept)
/// and waits until recovery has ended.
fn start_as_is(install: &PgInstall, dest: &Path) -> PgCluster {
    let c = PgCluster::from_data_dir(install, dest).unwrap_or_else(|e| panic!("{e}"));
    c.start().unwrap_or_else(|e| panic!("{e}"));
    c.wait_for("recovery to end", Duration::from_secs(180), || {
        c.psql("select pg_is_in_recovery()").is_ok_and(|r| r == "f")
    })
    .unwrap_or_else(|e| panic!("{}\n{}", e, c.log_tail(30)));
    c
}

/// The lines of a configuration file that set something (not comments).
fn active_settings(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// In-place disaster recovery: the source is lost, a PITR restore is
/// promoted and becomes the primary (same repository, timeline 2), and
/// is backed up. A restore of that backup to the end of WAL, with no
/// target, must replay everything: the PITR's recovery_target_time must
/// not come along in postgresql.auto.conf.
#[test]
fn a_promoted_pitr_restore_backs_up_and_restores_to_the_end() {
    let src = source("");
    let c = &src.cluster;
    insert(c, "a", 1000);
    let first = src.backup_push(&[]);
    insert(c, "b", 1000);
    std::thread::sleep(Duration::from_millis(1100));
    let target = c.psql("select clock_timestamp()::text").unwrap();
    let at_target = digest(c);
    std::thread::sleep(Duration::from_millis(1100));
    insert(c, "c", 1000);
    src.archive_current_wal();
    c.stop().unwrap();

    let pitr_dir = scratch_dir("pitr");
    let pitr = pitr_dir.path().join("data");
    let out = src.backup_fetch(
        &pitr,
        &first,
        &["--target-time", &target, "--target-action", "promote"],
    );
    assert_code(&out, 0);
    let settings = active_settings(&pitr.join("postgresql.auto.conf"));
    assert!(
        settings.iter().any(|l| l.starts_with("recovery_target_time")),
        "{settings:?}"
    );
    let primary = start_as_is(c.install(), &pitr);
    assert_eq!(digest(&primary), at_target);

    insert(&primary, "d", 1000);
    let out = src.pgark_on(&primary, &["backup-push", pitr.to_str().unwrap()]);
    assert_code(&out, 0);
    let second = String::from_utf8_lossy(&out.stdout).trim().to_string();
    insert(&primary, "e", 1000);
    archive_current_wal(&primary);
    let end = digest(&primary);
    primary.stop().unwrap();

    let again_dir = scratch_dir("again");
    let again = again_dir.path().join("data");
    let out = src.pgark(&["backup-fetch", again.to_str().unwrap(), "LATEST"]);
    assert_code(&out, 0);
    assert!(stderr(&out).contains(&second), "{}", stderr(&out));
    // The PITR's target is there, disabled, with pgark's note.
    let text = std::fs::read_to_string(again.join("postgresql.auto.conf")).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("# pgark") && l.contains("recovery_target_time")),
        "{text}"
    );
    // Every recovery target is unset ('').
    let settings = active_settings(&again.join("postgresql.auto.conf"));
    for target in [
        "recovery_target",
        "recovery_target_name",
        "recovery_target_time",
        "recovery_target_xid",
        "recovery_target_lsn",
    ] {
        let set: Vec<&String> = settings
            .iter()
            .filter(|l| l.split([' ', '=']).next() == Some(target))
            .collect();
        assert_eq!(
            set.last().map(|l| l.as_str()),
            Some(format!("{target} = ''").as_str()),
            "{settings:?}"
        );
    }
    let restored = start_restored(c.install(), &again);
    assert_eq!(
        digest(&restored),
        end,
        "the restore stopped before the end of WAL"
    );
    amcheck(&restored);
    restored.stop().unwrap();
}

/// Every file below `dir` with its content: a stopped directory must be
/// exactly as it was.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files_below(dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap_or_default();
            (f, bytes)
        })
        .collect()
}

/// Restores aimed at what they must not destroy are refused before
/// anything is touched: a running server's data directory (--force and
/// --delta), a running server's tablespace (restored elsewhere without
/// --tablespace-map), a directory that is not PostgreSQL's (--delta and
/// --force), and another cluster's data directory (--delta).
#[test]
fn restores_refuse_what_they_must_not_destroy() {
    let src = source("");
    let c = &src.cluster;
    let ts_root = scratch_dir("tsroot");
    let location = ts_root.path().join("ts1");
    std::fs::create_dir(&location).unwrap();
    chown_to_pg_user(&location).unwrap();
    c.psql(&format!(
        "create tablespace ts1 location '{}'",
        location.display()
    ))
    .unwrap();
    c.psql("create table in_ts (id int) tablespace ts1; insert into in_ts select generate_series(1, 1000)")
        .unwrap();
    insert(c, "a", 1000);
    let name = src.backup_push(&[]);
    let before = digest(c);
    let data = c.data_dir().to_path_buf();
    let relation = data.join(c.psql("select pg_relation_filepath('t')").unwrap());
    let ts_relation = data.join(c.psql("select pg_relation_filepath('in_ts')").unwrap());
    let ts_files = files_below(&location);
    assert!(!ts_files.is_empty());

    // The running server's own data directory.
    for mode in ["--force", "--delta"] {
        let out = src.backup_fetch(&data, &name, &[mode]);
        assert_code(&out, 3);
        assert!(stderr(&out).contains("running"), "{mode}: {}", stderr(&out));
        for f in ["PG_VERSION", "global/pg_control", "postgresql.conf"] {
            assert!(data.join(f).is_file(), "{mode} removed {f}");
        }
        assert!(
            relation.is_file() && ts_relation.is_file(),
            "{mode} removed relation files"
        );
    }

    // Its tablespace, from a restore elsewhere that did not remap it.
    let elsewhere = scratch_dir("elsewhere");
    let dest = elsewhere.path().join("data");
    let out = src.backup_fetch(&dest, &name, &["--force"]);
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains("in use by a running PostgreSQL"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        files_below(&location),
        ts_files,
        "the live tablespace was changed"
    );
    assert!(!dest.exists(), "a refused restore created its destination");
    assert_eq!(digest(c), before);

    // A directory that is not PostgreSQL's.
    let other = scratch_dir("notpg");
    std::fs::create_dir_all(other.path().join("docs")).unwrap();
    std::fs::write(other.path().join("docs/notes.txt"), b"keep me").unwrap();
    std::fs::write(other.path().join("important.db"), b"mine").unwrap();
    let untouched = snapshot(other.path());
    let map = format!(
        "--tablespace-map={}={}",
        c.psql("select oid from pg_tablespace where spcname = 'ts1'")
            .unwrap(),
        elsewhere.path().join("ts").display()
    );
    for mode in ["--force", "--delta"] {
        let out = src.backup_fetch(other.path(), &name, &[mode, &map]);
        assert_code(&out, 3);
        assert!(stderr(&out).contains("not a"), "{mode}: {}", stderr(&out));
        assert_eq!(
            snapshot(other.path()),
            untouched,
            "{mode} changed a directory that is not PostgreSQL's"
        );
    }

    // A tablespace mapped onto the destination itself.
    let oid = c
        .psql("select oid from pg_tablespace where spcname = 'ts1'")
        .unwrap();
    let onto = scratch_dir("onto");
    let onto_dest = onto.path().join("data");
    let out = src.backup_fetch(
        &onto_dest,
        &name,
        &["--tablespace-map", &format!("{oid}={}", onto_dest.display())],
    );
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains("holds, the destination"),
        "{}",
        stderr(&out)
    );
    assert!(!onto_dest.exists());

    // A location shared with another cluster's version directory (kept
    // after pg_upgrade): --force replaces only the backup's own.
    let shared = scratch_dir("shared");
    let old_version = shared.path().join("PG_99_209901011");
    std::fs::create_dir_all(old_version.join("16384")).unwrap();
    std::fs::write(old_version.join("16384/16385"), b"old cluster's table").unwrap();
    chown_to_pg_user(shared.path()).unwrap();
    let kept = snapshot(shared.path());
    let shared_dest = onto.path().join("shared-data");
    let out = src.backup_fetch(
        &shared_dest,
        &name,
        &[
            "--force",
            "--no-recovery",
            "--tablespace-map",
            &format!("{oid}={}", shared.path().display()),
        ],
    );
    assert_code(&out, 0);
    let after = snapshot(shared.path());
    for entry in &kept {
        assert!(after.contains(entry), "{} was changed", entry.0);
    }
    assert!(
        after.len() > kept.len(),
        "the tablespace was not restored beside the other version"
    );
    let out = src.backup_fetch(
        &shared_dest,
        &name,
        &[
            "--force",
            "--no-recovery",
            "--tablespace-map",
            &format!("{oid}={}", shared.path().display()),
        ],
    );
    assert_code(&out, 0);
    for entry in &kept {
        assert!(
            snapshot(shared.path()).contains(entry),
            "--force removed {}",
            entry.0
        );
    }

    // Another cluster's data directory, stopped.
    let foreign = PgCluster::init(ClusterOptions::new(c.install().clone())).unwrap_or_else(|e| panic!("{e}"));
    let foreign_files = snapshot(foreign.data_dir());
    let out = src.backup_fetch(foreign.data_dir(), &name, &["--delta", &map]);
    assert_code(&out, 3);
    assert!(stderr(&out).contains("another cluster"), "{}", stderr(&out));
    assert_eq!(
        snapshot(foreign.data_dir()),
        foreign_files,
        "--delta changed another cluster"
    );
}

/// The source crashes (its postmaster killed: a stale postmaster.pid
/// stays), and is restored in place with --delta and --archive-mode off to
/// the end of the backup: the stale pid file does not block it, the data
/// is the backup's, and the restored server does not archive.
#[test]
fn a_crashed_server_is_restored_in_place_over_its_stale_postmaster_pid() {
    let src = source("");
    let c = &src.cluster;
    insert(c, "a", 5000);
    let name = src.backup_push(&[]);
    let at_backup = digest(c);
    insert(c, "after", 5000);
    src.archive_current_wal();
    let data = c.data_dir().to_path_buf();
    let pid = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    c.wait_for("the server's processes to end", Duration::from_secs(60), || {
        c.psql("select 1").is_err()
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        data.join("postmaster.pid").exists(),
        "kill -9 leaves postmaster.pid"
    );

    // WAL the crashed server had not archived: refused, named.
    let ready = data.join("pg_wal/archive_status/0000000100000000000000F0.ready");
    std::fs::write(&ready, b"").unwrap();
    let out = src.backup_fetch(&data, &name, &["--delta"]);
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains("0000000100000000000000F0"),
        "{}",
        stderr(&out)
    );
    assert!(
        data.join("global/pg_control").exists(),
        "a refused restore changed the directory"
    );
    std::fs::remove_file(&ready).unwrap();

    let out = src.backup_fetch(
        &data,
        &name,
        &[
            "--delta",
            "--target-immediate",
            "--target-action",
            "promote",
            "--archive-mode",
            "off",
        ],
    );
    assert_code(&out, 0);
    assert!(!data.join("pgark_restore_in_progress").exists());
    let settings = active_settings(&data.join("postgresql.auto.conf"));
    assert!(
        settings.iter().any(|l| l == "archive_mode = 'off'"),
        "{settings:?}"
    );
    let restored = start_as_is(c.install(), &data);
    assert_eq!(digest(&restored), at_backup);
    assert_eq!(restored.psql("show archive_mode").unwrap(), "off");
    amcheck(&restored);
    restored.stop().unwrap();
}

/// A clone restored from the repository keeps the source's archive
/// settings (preserve) and is promoted while the source goes on: two
/// timelines grow in one archive, and the next restore says so.
#[test]
fn a_clone_archiving_into_the_sources_repository_is_reported() {
    let src = source("");
    let c = &src.cluster;
    insert(c, "a", 1000);
    let name = src.backup_push(&[]);

    let clone_dir = scratch_dir("clone");
    let clone_data = clone_dir.path().join("data");
    let out = src.backup_fetch(
        &clone_data,
        &name,
        &["--target-immediate", "--target-action", "promote"],
    );
    assert_code(&out, 0);
    let clone = start_as_is(c.install(), &clone_data);
    insert(&clone, "clone", 100);
    archive_current_wal(&clone);
    clone.stop().unwrap();

    insert(c, "source", 100);
    src.archive_current_wal();
    insert(c, "source2", 100);
    src.archive_current_wal();

    let probe = scratch_dir("probe");
    let out = src.pgark(&[
        "backup-fetch",
        probe.path().join("data").to_str().unwrap(),
        "LATEST",
        "--dry-run",
    ]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("timeline 2 forked from timeline 1") && stderr(&out).contains("both grew"),
        "{}",
        stderr(&out)
    );
    // Issue 14: status reports the fork and is not healthy.
    let out = src.pgark(&["status", "--json"]);
    assert_code(&out, 12);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["timelineForks"][0]["timeline"], 2, "{json}");
    assert_eq!(json["timelineForks"][0]["parent"], 1, "{json}");
    assert!(json["problems"].to_string().contains("forked"), "{json}");
}

/// backup-fetch killed with SIGKILL at random points (ten kills) into the
/// same directory: after every kill the directory either cannot start (no
/// pg_control) or is a whole restore (pg_verifybackup passes); a plain
/// restore refuses the leftovers; a --delta restore takes them over, and
/// the data it restores equals the source's at the backup.
#[test]
fn backup_fetch_killed_at_random_points_never_leaves_a_startable_half_restore() {
    let src = source("");
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "3", "-q"]).unwrap();
    let name = src.backup_push(&["--part-size", "4"]);
    let at_backup = table_digest(c, "pgbench_accounts", "aid");
    let dir = scratch_dir("killed");
    let dest = dir.path().join("data");
    let dest_s = dest.to_str().unwrap().to_string();
    let args = [
        "backup-fetch",
        dest_s.as_str(),
        name.as_str(),
        "--delta",
        "--target-immediate",
        "--target-action",
        "promote",
        "--archive-mode",
        "off",
    ];
    // How long the restore the kills interrupt takes here (a --delta run
    // over a finished restore whose `base` was taken away, page cache
    // warm), to spread the kills over it.
    assert_code(&src.pgark(&args), 0);
    std::fs::remove_dir_all(dest.join("base")).unwrap();
    let started = std::time::Instant::now();
    assert_code(&src.pgark(&args), 0);
    let whole = started.elapsed().as_millis() as u64 + 20;
    std::fs::remove_dir_all(dest.join("base")).unwrap();
    let mut rng = seeded_rng();
    let mut refused_once = false;
    let mut kills = 0;
    // Set while the directory is as this test left it (a finished restore
    // with `base` taken away) and no run has removed its pg_control yet.
    let mut tampered = true;
    // Until ten runs were killed halfway (bounded: a run that finishes
    // before its kill counts as a round, not a kill).
    for round in 0..40 {
        if kills == 10 {
            break;
        }
        let mut cmd = src.pgark_command_on(c);
        cmd.args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let after = Duration::from_millis(rng() % whole);
        std::thread::sleep(after);
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            kills += 1;
        }
        let control = dest.join("global/pg_control").exists();
        let marker = dest.join("pgark_restore_in_progress").exists();
        eprintln!("round {round}: killed after {after:?} ({status}); pg_control {control}, marker {marker}");
        if control && tampered && !dest.join("base").exists() {
            // Still as this test left it: the run was killed before it
            // removed pg_control, its first change after the marker.
        } else if control {
            // Startable only when whole.
            let mut cmd = c.install().command("pg_verifybackup");
            cmd.args(["-n", "-i", "pgark_restore_in_progress"]).arg(&dest);
            let out = pgark_testkit::pg::run_capture(&mut cmd, None, Duration::from_secs(300)).unwrap();
            assert!(
                out.status.success(),
                "round {round}: pg_control present in a partial restore: {}",
                stderr(&out)
            );
        }
        if control && !marker {
            // The run finished before the kill: take most of the data away
            // again, so the next run has it to restore.
            // (Already gone when this round was killed before pgark
            // touched anything after the last round's removal.)
            match std::fs::remove_dir_all(dest.join("base")) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("round {round}: cannot remove base/: {e}"),
            }
            tampered = true;
        } else if !control {
            tampered = false;
        }
        if marker && !refused_once {
            // A plain restore does not take over what a killed one left.
            let out = src.backup_fetch(&dest, &name, &[]);
            assert_code(&out, 3);
            assert!(stderr(&out).contains("--delta"), "{}", stderr(&out));
            refused_once = true;
        }
    }
    assert_eq!(kills, 10, "ten runs killed halfway in 40 rounds");
    let out = src.pgark(&args);
    assert_code(&out, 0);
    assert!(!dest.join("pgark_restore_in_progress").exists());
    crate::backup::verify_backup(c.install(), &dest);
    let restored = start_restored(c.install(), &dest);
    assert_eq!(table_digest(&restored, "pgbench_accounts", "aid"), at_backup);
    restored.stop().unwrap();
}
