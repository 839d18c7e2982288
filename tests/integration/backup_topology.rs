//! Backups of clusters that are not a single primary with everything in
//! PGDATA: a backup taken from a streaming standby, and a cluster with a
//! tablespace outside PGDATA, restored in place and remapped. Each restore
//! is started and its data compared with the source.

use crate::common::*;
use pgark_testkit::pg::{chown_to_pg_user, run_capture, run_checked, scratch_dir, PgCluster};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn digest_t(cluster: &PgCluster) -> String {
    table_digest(cluster, "t", "id")
}

fn insert_batch(cluster: &PgCluster, batch: &str, n: u32) {
    cluster
        .psql(&format!(
            "insert into t (batch, pad) select '{batch}', repeat(md5(g::text), 4) from generate_series(1, {n}) g"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The target of the symbolic link `pg_tblspc/<oid>` of `data_dir`.
fn tablespace_link(data_dir: &Path, oid: &str) -> PathBuf {
    let link = data_dir.join("pg_tblspc").join(oid);
    let meta = std::fs::symlink_metadata(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
    assert!(
        meta.file_type().is_symlink(),
        "{} is not a symlink",
        link.display()
    );
    std::fs::read_link(&link).unwrap()
}

/// A standby made with `pg_basebackup -R` streaming from `primary`.
fn start_streaming_standby(primary: &PgCluster) -> (tempfile::TempDir, PgCluster) {
    let dir = scratch_dir("standby");
    let data = dir.path().join("data");
    let mut cmd = primary.client_command("pg_basebackup");
    cmd.arg("-D")
        .arg(&data)
        .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
    run_checked(&mut cmd, None, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    let standby = PgCluster::from_data_dir(primary.install(), &data).unwrap_or_else(|e| panic!("{e}"));
    // postgresql.conf came from the primary: archive_mode = on, which a
    // standby ignores (only `always` archives in recovery). The primary's
    // archive_command is what puts WAL into the repository.
    standby.append_conf("hot_standby = on").unwrap();
    standby.start().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(standby.psql("select pg_is_in_recovery()").unwrap(), "t");
    (dir, standby)
}

/// Waits until `standby` has replayed everything `primary` has written.
fn wait_replayed(primary: &PgCluster, standby: &PgCluster) {
    let lsn = primary.psql("select pg_current_wal_lsn()::text").unwrap();
    standby
        .wait_for(&format!("replay up to {lsn}"), Duration::from_secs(120), || {
            standby
                .psql(&format!("select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"))
                .is_ok_and(|r| r == "t")
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A primary archiving into a repository, a streaming standby of it, and
/// a backup taken from the standby while the primary is written to.
struct StandbyBackup {
    src: ArchivingCluster,
    _standby_dir: tempfile::TempDir,
    standby: PgCluster,
    name: String,
}

fn standby_backup() -> StandbyBackup {
    let src = ArchivingCluster::start("");
    let primary = &src.cluster;
    primary
        .psql("create table t (id bigserial primary key, batch text not null, pad text)")
        .unwrap();
    primary.pgbench(&["-i", "-s", "2", "-q"]).unwrap();
    insert_batch(primary, "before-standby", 2000);
    let (standby_dir, standby) = start_streaming_standby(primary);
    insert_batch(primary, "before-backup", 2000);
    wait_replayed(primary, &standby);

    // backup-push runs against the standby and waits until its stop
    // segment is archived, which only the primary does: end segments on the
    // primary (with writes in between) until the backup is done.
    let push = {
        let mut cmd = src.pgark_command_on(&standby);
        cmd.args([
            "backup-push",
            standby.data_dir().to_str().unwrap(),
            "--archive-timeout",
            "300",
        ]);
        std::thread::spawn(move || run_capture(&mut cmd, None, Duration::from_secs(900)).unwrap())
    };
    while !push.is_finished() {
        insert_batch(primary, "during-backup", 100);
        primary.psql("select pg_switch_wal()").unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = push.join().unwrap();
    assert_code(&out, 0);
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(name.starts_with("base_"), "{name}");

    let listed = src.backup_list();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], name.as_str());
    assert_eq!(listed[0]["backup_from"], "standby");
    assert_eq!(
        listed[0]["system_identifier"].as_str().unwrap(),
        primary.controldata().unwrap()["Database system identifier"]
    );
    StandbyBackup {
        src,
        _standby_dir: standby_dir,
        standby,
        name,
    }
}

#[test]
fn backup_from_a_streaming_standby_restores_and_recovers() {
    let sb = standby_backup();
    let (src, name) = (&sb.src, &sb.name);
    let primary = &src.cluster;

    // Writes after the backup, a restore point, and more writes past it.
    insert_batch(primary, "after-backup", 2000);
    primary
        .pgbench(&["-c", "1", "-t", "300", "-n"])
        .unwrap_or_else(|e| panic!("{e}"));
    primary
        .psql("select pg_create_restore_point('rp_after')")
        .unwrap();
    let at_target = digest_t(primary);
    let accounts_at_target = primary
        .psql("select sum(abalance) from pgbench_accounts")
        .unwrap();
    insert_batch(primary, "past-target", 500);
    src.archive_current_wal();
    // The standby is done: the restore needs only the repository.
    sb.standby.stop().unwrap();

    let dir = scratch_dir("restore");
    let dest = dir.path().join("data");
    let out = src.backup_fetch(
        &dest,
        name,
        &["--target-name", "rp_after", "--target-action", "promote"],
    );
    assert_code(&out, 0);
    assert!(dest.join("recovery.signal").exists());
    // Workaround for the standby.signal the backup copied from the standby
    // (see restore_of_a_standby_backup_without_standby_is_not_a_standby):
    // without it removed, the restored server would start as a standby.
    let _ = std::fs::remove_file(dest.join("standby.signal"));
    let restored = start_restored(primary.install(), &dest);
    assert_eq!(digest_t(&restored), at_target, "{}", restored.log_tail(30));
    assert_eq!(
        restored
            .psql("select sum(abalance) from pgbench_accounts")
            .unwrap(),
        accounts_at_target
    );
    assert_eq!(
        restored
            .psql("select count(*) from t where batch = 'past-target'")
            .unwrap(),
        "0"
    );
    // Promoted onto a new timeline: writable.
    restored
        .psql("insert into t (batch) values ('restored')")
        .unwrap();
    stop_and_check_page_checksums(&restored);
}

#[test]
fn restore_of_a_standby_backup_without_standby_is_not_a_standby() {
    let sb = standby_backup();
    let (src, name) = (&sb.src, &sb.name);
    let primary = &src.cluster;
    insert_batch(primary, "after-backup", 2000);
    let latest = digest_t(primary);
    src.archive_current_wal();
    sb.standby.stop().unwrap();

    let dir = scratch_dir("restore");
    let dest = dir.path().join("data");
    let out = src.backup_fetch(&dest, name, &[]);
    assert_code(&out, 0);
    assert!(dest.join("recovery.signal").exists());
    assert!(
        !dest.join("standby.signal").exists(),
        "backup-fetch without --standby left standby.signal (copied from the standby) in {}",
        dest.display()
    );
    // Recovers to the end of the archive and promotes; a standby would stay
    // in recovery, streaming from the old primary through the
    // primary_conninfo that came along from the standby.
    let restored = start_restored(primary.install(), &dest);
    assert_eq!(digest_t(&restored), latest);
    restored.stop().unwrap();
}

/// `create tablespace` in a fresh directory owned by the server's user.
fn tablespace_source() -> (ArchivingCluster, tempfile::TempDir, PathBuf, String) {
    let src = ArchivingCluster::start("");
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
    let oid = c
        .psql("select oid from pg_tablespace where spcname = 'ts1'")
        .unwrap();
    c.psql(
        "create table t (id bigserial primary key, batch text not null, pad text) tablespace ts1;
         create index t_batch on t (batch) tablespace ts1",
    )
    .unwrap();
    (src, ts_root, location, oid)
}

#[test]
fn tablespace_outside_pgdata_survives_backup_and_restore() {
    let (src, _ts_root, location, oid) = tablespace_source();
    let c = &src.cluster;
    insert_batch(c, "before", 20_000);
    let name = src.backup_push(&[]);
    insert_batch(c, "after", 5_000);
    c.psql("delete from t where id % 7 = 0").unwrap();
    let expected = digest_t(c);
    src.archive_current_wal();
    let listed = src.backup_list();
    assert_eq!(listed[0]["tablespaces"], 1, "{listed:?}");
    c.stop().unwrap();
    // The original location must be free for a restore that keeps it.
    let moved = location.with_file_name("ts1.source");
    std::fs::rename(&location, &moved).unwrap();
    let ts_files = |dir: &Path| {
        files_below(dir)
            .into_iter()
            .filter(|f| f.starts_with("PG_"))
            .count()
    };
    assert!(ts_files(&moved) > 0);

    // (b) remapped with --tablespace-map: the original location stays untouched.
    let remap_root = scratch_dir("tsnew");
    let new_location = remap_root.path().join("elsewhere").join("ts1");
    let dir_b = scratch_dir("restore-b");
    let dest_b = dir_b.path().join("data");
    let map = format!("{oid}={}", new_location.display());
    let out = src.backup_fetch(&dest_b, &name, &["--tablespace-map", &map]);
    assert_code(&out, 0);
    assert_eq!(tablespace_link(&dest_b, &oid), new_location);
    assert!(ts_files(&new_location) > 0);
    assert!(
        !location.exists(),
        "a remapped restore wrote into the original location {}",
        location.display()
    );
    let restored_b = start_restored(c.install(), &dest_b);
    assert_eq!(digest_t(&restored_b), expected);
    assert_eq!(
        restored_b
            .psql(&format!("select pg_tablespace_location({oid})"))
            .unwrap(),
        new_location.to_str().unwrap()
    );
    assert_eq!(
        restored_b
            .psql("select count(*) from t where batch = 'before'")
            .unwrap(),
        restored_b
            .psql("select count(*) from t where batch = 'before' and id % 7 <> 0")
            .unwrap()
    );
    // Recovery re-creates the links from tablespace_map: it must name the new place.
    assert_eq!(tablespace_link(&dest_b, &oid), new_location);
    stop_and_check_page_checksums(&restored_b);
    assert!(!location.exists());

    // (a) into the original location.
    let dir_a = scratch_dir("restore-a");
    let dest_a = dir_a.path().join("data");
    let out = src.backup_fetch(&dest_a, &name, &[]);
    assert_code(&out, 0);
    assert_eq!(tablespace_link(&dest_a, &oid), location);
    let restored_a = start_restored(c.install(), &dest_a);
    assert_eq!(digest_t(&restored_a), expected);
    assert_eq!(
        restored_a
            .psql(&format!("select pg_tablespace_location({oid})"))
            .unwrap(),
        location.to_str().unwrap()
    );
    assert_eq!(tablespace_link(&dest_a, &oid), location);
    // Both restored clusters are independent: writing to one leaves the other alone.
    restored_a
        .psql("insert into t (batch) values ('only-in-a')")
        .unwrap();
    stop_and_check_page_checksums(&restored_a);
    let restored_b = start_restored(c.install(), &dest_b);
    assert_eq!(digest_t(&restored_b), expected);
    restored_b.stop().unwrap();
}

/// A backup from a standby of a primary on which nothing happens: the
/// backup's last segment is archived only when the primary switches to a
/// new one, so backup-push asks it to (through the standby's
/// primary_conninfo) instead of waiting until --archive-timeout runs out.
#[test]
fn backup_from_a_standby_of_an_idle_primary_asks_the_primary_to_switch() {
    let src = ArchivingCluster::start("");
    let primary = &src.cluster;
    primary
        .psql("create table t (id bigserial primary key, batch text not null, pad text)")
        .unwrap();
    insert_batch(primary, "before-standby", 2000);
    let (_standby_dir, standby) = start_streaming_standby(primary);
    // Written after the standby's pg_basebackup switched segments: the
    // backup's last segment is the primary's current one.
    insert_batch(primary, "before-backup", 2000);
    wait_replayed(primary, &standby);
    let at_backup = digest_t(primary);
    // From here on nothing is written to the primary.
    let mut cmd = src.pgark_command_on(&standby);
    cmd.args([
        "backup-push",
        standby.data_dir().to_str().unwrap(),
        "--archive-timeout",
        "60",
        "--log-level",
        "info",
    ]);
    let out = run_capture(&mut cmd, None, Duration::from_secs(300)).unwrap();
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("asked the primary to switch WAL"),
        "{}",
        stderr(&out)
    );
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dir = scratch_dir("idle");
    let dest = dir.path().join("data");
    let out = src.backup_fetch(
        &dest,
        &name,
        &["--target-immediate", "--target-action", "promote"],
    );
    assert_code(&out, 0);
    let restored = start_restored(primary.install(), &dest);
    assert_eq!(digest_t(&restored), at_backup);
    restored.stop().unwrap();
}
