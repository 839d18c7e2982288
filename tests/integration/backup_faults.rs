//! Base backups when things go wrong: backup-push killed halfway, damaged
//! or missing objects at restore time, a non-empty destination, a server
//! that is down or refuses the password. Every successful restore here is
//! started and its data compared with the source.

use crate::common::*;
use pgark_testkit::pg::{chown_to_pg_user, scratch_dir, PgCluster};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

fn accounts_digest(cluster: &PgCluster) -> String {
    table_digest(cluster, "pgbench_accounts", "aid")
}

fn history_digest(cluster: &PgCluster) -> String {
    cluster
        .psql("select count(*) || ':' || coalesce(sum(delta), 0) from pgbench_history")
        .unwrap()
}

/// Backup directories in the repository (complete or not).
fn backup_dirs(repo: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo.join("backups"))
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Names of the complete data parts (`part_NNNNN.tar`) in `dir`.
fn parts_in(dir: &Path) -> Vec<String> {
    let mut parts: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("part_") && n.ends_with(".tar"))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    parts
}

fn flip_byte_in_the_middle(path: &Path) -> usize {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(path, &bytes).unwrap();
    at
}

/// After a failed restore, DEST must not hold pg_control, which PostgreSQL
/// needs to start; in fact it holds nothing at all: nothing half-restored
/// is left behind.
fn not_startable(dest: &Path, out: &Output) {
    assert!(
        !dest.join("global/pg_control").exists(),
        "a failed restore left a startable directory (global/pg_control present) in {}; it failed with: {}",
        dest.display(),
        stderr(out)
    );
    let left: Vec<String> = files_below(dest);
    assert!(
        left.is_empty(),
        "a failed restore left files in {}: {:?}",
        dest.display(),
        &left[..left.len().min(5)]
    );
}

#[test]
fn backup_push_killed_halfway_leaves_no_backup_and_a_new_one_restores() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "20", "-q"]).unwrap();
    c.pgbench(&["-c", "2", "-t", "200", "-n"]).unwrap();

    // Small parts, one at a time, so the first part is stored long before
    // the last one.
    let mut cmd = src.pgark_command_on(c);
    cmd.args([
        "backup-push",
        c.data_dir().to_str().unwrap(),
        "--part-size",
        "8",
        "--concurrency",
        "1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn backup-push");
    let repo = src.repo.path().to_path_buf();
    let first_part = c.wait_for(
        "the first backup part to be stored",
        Duration::from_secs(300),
        || backup_dirs(&repo).iter().any(|d| !parts_in(d).is_empty()),
    );
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    first_part.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        still_running,
        "backup-push ended ({status}) before it could be killed"
    );

    let leftovers = backup_dirs(&repo);
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    let killed_dir = leftovers[0].clone();
    assert!(!killed_dir.join("manifest").exists());
    let killed_parts = parts_in(&killed_dir);
    assert!(!killed_parts.is_empty());
    let list = src.backup_list();
    assert!(list.is_empty(), "a killed backup-push is listed: {list:?}");
    let out = src.backup_fetch(&scratch_dir("nothing").path().join("data"), "LATEST", &[]);
    assert_code(&out, 1);

    // The server forgot the killed run's backup: a new one starts and finishes.
    c.pgbench(&["-c", "2", "-t", "200", "-n"]).unwrap();
    let name = src.backup_push(&["--part-size", "64"]);
    assert_ne!(
        killed_dir.file_name().unwrap().to_str().unwrap(),
        name,
        "the new backup reused the killed run's directory"
    );
    let list = src.backup_list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], name.as_str());
    // The killed run's parts are still there, untouched and unread.
    assert_eq!(parts_in(&killed_dir), killed_parts);

    c.pgbench(&["-c", "1", "-t", "100", "-n"]).unwrap();
    let accounts = accounts_digest(c);
    let history = history_digest(c);
    src.archive_current_wal();

    let dir = scratch_dir("restore");
    let dest = dir.path().join("data");
    let out = src.backup_fetch(&dest, "LATEST", &[]);
    assert_code(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&name),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let restored = start_restored(c.install(), &dest);
    assert_eq!(accounts_digest(&restored), accounts);
    assert_eq!(history_digest(&restored), history);
    stop_and_check_page_checksums(&restored);
}

#[test]
fn missing_or_damaged_objects_fail_the_restore_naming_the_object() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "3", "-q"]).unwrap();
    let name = src.backup_push(&["--part-size", "4"]);
    let accounts = accounts_digest(c);
    src.archive_current_wal();
    let backup_dir = src.repo.path().join("backups").join(&name);
    let parts = parts_in(&backup_dir);
    assert!(parts.len() >= 3, "{parts:?}");
    let part_key = |file: &str| format!("backups/{name}/{file}");
    let scratch = scratch_dir("faults");
    let mut attempt = 0;
    let mut fresh_dest = || {
        attempt += 1;
        scratch.path().join(format!("dest{attempt}"))
    };

    // Everything present: the dry run says so and writes nothing.
    let dest = fresh_dest();
    let out = src.backup_fetch(&dest, &name, &["--dry-run"]);
    assert_code(&out, 0);
    assert!(!dest.exists());

    // A missing data part.
    let missing = backup_dir.join("part_00002.tar");
    let aside = scratch.path().join("part_00002.tar.aside");
    std::fs::rename(&missing, &aside).unwrap();
    let dest = fresh_dest();
    let out = src.backup_fetch(&dest, &name, &["--dry-run"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains(&part_key("part_00002.tar")),
        "dry run: {}",
        stderr(&out)
    );
    assert!(!dest.exists());
    let dest = fresh_dest();
    let out = src.backup_fetch(&dest, &name, &[]);
    // Fails naming the part. Its exit code should be the dry run's (see
    // missing_part_fails_the_restore_with_the_dry_runs_exit_code).
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&part_key("part_00002.tar")),
        "restore: {}",
        stderr(&out)
    );
    not_startable(&dest, &out);
    std::fs::rename(&aside, &missing).unwrap();

    // A damaged data part: one byte flipped in the middle.
    let damaged = backup_dir.join("part_00001.tar");
    let original = std::fs::read(&damaged).unwrap();
    flip_byte_in_the_middle(&damaged);
    let dest = fresh_dest();
    let out = src.backup_fetch(&dest, &name, &[]);
    assert_code(&out, 5);
    assert!(
        stderr(&out).contains(&part_key("part_00001.tar")),
        "restore: {}",
        stderr(&out)
    );
    not_startable(&dest, &out);
    // The dry run only checks presence.
    let out = src.backup_fetch(&fresh_dest(), &name, &["--dry-run"]);
    assert_code(&out, 0);
    std::fs::write(&damaged, &original).unwrap();

    // A damaged last part (pg_control). Whether DEST is then left without
    // pg_control: see damaged_pg_control_part_leaves_no_pg_control.
    let last = backup_dir.join(parts.last().unwrap());
    let original_last = std::fs::read(&last).unwrap();
    flip_byte_in_the_middle(&last);
    let dest = fresh_dest();
    let out = src.backup_fetch(&dest, &name, &[]);
    assert_code(&out, 5);
    assert!(
        stderr(&out).contains(&part_key(parts.last().unwrap())),
        "{}",
        stderr(&out)
    );
    std::fs::write(&last, &original_last).unwrap();

    // A damaged manifest: by name, LATEST and backup-list all fail, naming it.
    let manifest = backup_dir.join("manifest");
    let original_manifest = std::fs::read(&manifest).unwrap();
    flip_byte_in_the_middle(&manifest);
    for selector in [name.as_str(), "LATEST"] {
        let dest = fresh_dest();
        let out = src.backup_fetch(&dest, selector, &[]);
        assert_code(&out, 5);
        assert!(
            stderr(&out).contains(&part_key("manifest")),
            "{selector}: {}",
            stderr(&out)
        );
        assert!(!dest.exists());
        let out = src.backup_fetch(&dest, selector, &["--dry-run"]);
        assert_code(&out, 5);
    }
    let out = src.pgark(&["backup-list"]);
    assert_code(&out, 5);
    assert!(stderr(&out).contains(&part_key("manifest")), "{}", stderr(&out));
    std::fs::write(&manifest, &original_manifest).unwrap();

    // Put back as it was, the same backup restores and starts: the faults
    // above were the only reason those restores failed.
    let dest = fresh_dest();
    let out = src.backup_fetch(&dest, &name, &[]);
    assert_code(&out, 0);
    let restored = start_restored(c.install(), &dest);
    assert_eq!(accounts_digest(&restored), accounts);
    stop_and_check_page_checksums(&restored);
}

#[test]
fn missing_part_fails_the_restore_with_the_dry_runs_exit_code() {
    let src = ArchivingCluster::start("");
    let name = src.backup_push(&[]);
    let part = src.repo.path().join("backups").join(&name).join("part_00001.tar");
    std::fs::remove_file(&part).unwrap();
    let key = format!("backups/{name}/part_00001.tar");
    let dir = scratch_dir("dest");
    let dry = src.backup_fetch(&dir.path().join("dry"), &name, &["--dry-run"]);
    assert_code(&dry, 1);
    assert!(stderr(&dry).contains(&key), "{}", stderr(&dry));
    let dest = dir.path().join("data");
    let out = src.backup_fetch(&dest, &name, &[]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains(&key), "{}", stderr(&out));
    not_startable(&dest, &out);
}

#[test]
fn damaged_pg_control_part_leaves_no_pg_control() {
    let src = ArchivingCluster::start("");
    // Uncompressed, so the byte to damage can be placed exactly: the last
    // part is a 16-byte header, a tar stream (a 512-byte header, then the
    // 8 KiB of global/pg_control) and a 52-byte trailer.
    let name = src.backup_push(&["--compression", "none"]);
    let backup_dir = src.repo.path().join("backups").join(&name);
    let last = parts_in(&backup_dir).pop().unwrap();
    let path = backup_dir.join(&last);
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[16..16 + 17], b"global/pg_control", "the tar header's name");
    // Past the part of pg_control its CRC covers: PostgreSQL would start
    // with this file, so only pgark's own checks stand in the way.
    bytes[16 + 512 + 4096] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let dir = scratch_dir("dest");
    let dest = dir.path().join("data");
    let out = src.backup_fetch(&dest, &name, &[]);
    assert_code(&out, 5);
    assert!(
        stderr(&out).contains(&format!("backups/{name}/{last}")),
        "{}",
        stderr(&out)
    );
    not_startable(&dest, &out);
}

#[test]
fn restore_into_a_non_empty_directory_needs_force() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "2", "-q"]).unwrap();
    let name = src.backup_push(&[]);
    c.pgbench(&["-c", "1", "-t", "100", "-n"]).unwrap();
    let accounts = accounts_digest(c);
    src.archive_current_wal();

    // DEST holds the remains of something else.
    let dir = scratch_dir("dest");
    let dest = dir.path().join("data");
    std::fs::create_dir_all(dest.join("base/1")).unwrap();
    std::fs::write(dest.join("base/1/12345"), b"stale relation").unwrap();
    std::fs::write(dest.join("PG_VERSION"), b"14\n").unwrap();
    std::fs::write(dest.join("stray"), b"x").unwrap();
    chown_to_pg_user(&dest).unwrap();
    let before = files_below(&dest);

    let out = src.backup_fetch(&dest, &name, &[]);
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains("not empty") && stderr(&out).contains(dest.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    assert_eq!(files_below(&dest), before, "a refused restore changed DEST");
    assert_eq!(std::fs::read(dest.join("stray")).unwrap(), b"x");

    let out = src.backup_fetch(&dest, &name, &["--force"]);
    assert_code(&out, 0);
    assert!(!dest.join("stray").exists());
    assert!(!dest.join("base/1/12345").exists());
    let restored = start_restored(c.install(), &dest);
    assert_eq!(accounts_digest(&restored), accounts);
    stop_and_check_page_checksums(&restored);
}

#[test]
fn server_down_or_wrong_password_fails_with_exit_8() {
    let src = ArchivingCluster::start("password_encryption = 'scram-sha-256'");
    let c = &src.cluster;
    let pgdata = c.data_dir().to_str().unwrap().to_string();

    // A role that must give its password over TCP on 127.0.0.1 (pg_hba.conf
    // is read top down, so the rule goes first).
    c.psql("create role backup_user login superuser password 'right-password'")
        .unwrap();
    let hba = c.data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all backup_user 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    c.reload().unwrap();
    let conn = |password: &str| {
        format!(
            "host=127.0.0.1 port={} user=backup_user dbname=postgres password={password} connect_timeout=10",
            c.port()
        )
    };

    let out = src.pgark(&["backup-push", &pgdata, "--pg-conn", &conn("wrong-password")]);
    assert_code(&out, 8);
    let msg = stderr(&out);
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(
        msg.contains("backup_user") && msg.contains(&c.port().to_string()),
        "{msg}"
    );
    assert!(!msg.contains("wrong-password"), "the password is printed: {msg}");
    // The same rule with the right password lets the backup through.
    let out = src.pgark(&["backup-push", &pgdata, "--pg-conn", &conn("right-password")]);
    assert_code(&out, 0);
    assert_eq!(src.backup_list().len(), 1);

    // Server down: the message says where pgark tried to connect.
    c.stop().unwrap();
    let out = src.pgark(&["backup-push", &pgdata]);
    assert_code(&out, 8);
    let msg = stderr(&out);
    assert!(
        msg.contains(c.socket_dir().to_str().unwrap()) && msg.contains(&format!("port {}", c.port())),
        "{msg}"
    );
    let out = src.pgark(&["backup-push", &pgdata, "--pg-conn", &conn("right-password")]);
    assert_code(&out, 8);
    let msg = stderr(&out);
    assert!(
        msg.contains("127.0.0.1") && msg.contains(&c.port().to_string()),
        "{msg}"
    );
    // Neither failure left a backup behind.
    assert_eq!(src.backup_list().len(), 1);
}

/// Reads the stored manifest of backup `name` (a usable one).
fn stored_manifest(src: &ArchivingCluster, name: &str) -> pgark_catalog::BackupManifest {
    let stored = std::fs::read(src.repo.path().join("backups").join(name).join("manifest")).unwrap();
    let (json, _) = pgark_codec::decode_to_vec(&stored).unwrap();
    pgark_catalog::BackupManifest::from_json(&json).unwrap()
}

/// `backup-list --json` (exit `code`), as (name, status) pairs.
fn listed_status(src: &ArchivingCluster, code: i32) -> Vec<(String, String)> {
    let out = src.pgark(&["backup-list", "--json"]);
    assert_code(&out, code);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    list.iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Issue 12, item 3: one damaged manifest (bytes flipped, or truncated) no
/// longer blocks backup-list, `backup-fetch LATEST` or `backup-push --delta`.
#[test]
fn one_damaged_manifest_does_not_block_list_latest_or_delta() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.psql("create table t (id int primary key, v text)").unwrap();
    let mut names = Vec::new();
    let mut digests = Vec::new();
    for round in 0..3 {
        c.psql(&format!(
            "insert into t select g, md5(g::text) from generate_series({}, {}) g",
            round * 1000 + 1,
            round * 1000 + 1000
        ))
        .unwrap();
        names.push(src.backup_push(&[]));
        digests.push(table_digest(c, "t", "id"));
    }
    src.archive_current_wal();
    let manifest_of = |name: &str| src.repo.path().join("backups").join(name).join("manifest");
    let scratch = scratch_dir("damaged-manifest");

    // The middle manifest with bytes flipped.
    let middle = manifest_of(&names[1]);
    let original_middle = std::fs::read(&middle).unwrap();
    flip_byte_in_the_middle(&middle);

    // backup-list prints all three, the damaged one marked, then exits 5
    // naming it.
    let listed = listed_status(&src, 5);
    let listed_names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(listed_names, names.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(listed[0].1, "ok");
    assert!(listed[1].1.starts_with("damaged: "), "{listed:?}");
    assert!(
        listed[1].1.contains(&format!("backups/{}/manifest", names[1])),
        "{listed:?}"
    );
    assert_eq!(listed[2].1, "ok");
    let out = src.pgark(&["backup-list"]);
    assert_code(&out, 5);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    for (i, name) in names.iter().enumerate() {
        let line = table.lines().find(|l| l.starts_with(name.as_str()));
        let line = line.unwrap_or_else(|| panic!("{name} missing from\n{table}"));
        assert_eq!(line.contains("damaged: "), i == 1, "{table}");
    }
    assert!(
        stderr(&out).contains(&format!("backups/{}/manifest", names[1])),
        "{}",
        stderr(&out)
    );

    // By name the damaged backup stays exit 5.
    let out = src.backup_fetch(&scratch.path().join("named"), &names[1], &[]);
    assert_code(&out, 5);

    // LATEST restores the newest, which starts with the source's data.
    let dest = scratch.path().join("latest");
    let out = src.backup_fetch(
        &dest,
        "LATEST",
        &["--target-immediate", "--target-action", "promote"],
    );
    assert_code(&out, 0);
    let restored = start_restored(c.install(), &dest);
    assert_eq!(table_digest(&restored, "t", "id"), digests[2]);
    restored.stop().unwrap();

    // The oldest manifest truncated, the middle one still damaged: a delta
    // push builds on the newest.
    let oldest = manifest_of(&names[0]);
    let bytes = std::fs::read(&oldest).unwrap();
    std::fs::write(&oldest, &bytes[..bytes.len() / 3]).unwrap();
    let listed = listed_status(&src, 5);
    assert!(listed[0].1.starts_with("damaged: "), "{listed:?}");
    assert!(listed[1].1.starts_with("damaged: "), "{listed:?}");
    c.psql("insert into t select g, 'delta' from generate_series(5001, 5100) g")
        .unwrap();
    let delta = src.backup_push(&["--delta"]);
    assert_eq!(
        stored_manifest(&src, &delta).parent.as_ref().map(|p| p.as_str()),
        Some(names[2].as_str())
    );

    // The newest (the delta) damaged too: the next delta's parent is the
    // newest usable backup, names[2], and LATEST restores that delta.
    let delta_manifest = manifest_of(&delta);
    let bytes = std::fs::read(&delta_manifest).unwrap();
    std::fs::write(&delta_manifest, &bytes[..bytes.len() - 7]).unwrap();
    c.psql("insert into t select g, 'delta2' from generate_series(5101, 5200) g")
        .unwrap();
    let delta2 = src.backup_push(&["--delta"]);
    let digest2 = table_digest(c, "t", "id");
    assert_eq!(
        stored_manifest(&src, &delta2).parent.as_ref().map(|p| p.as_str()),
        Some(names[2].as_str())
    );
    src.archive_current_wal();
    let dest = scratch.path().join("latest-delta");
    let out = src.backup_fetch(
        &dest,
        "LATEST",
        &["--target-immediate", "--target-action", "promote"],
    );
    assert_code(&out, 0);
    let restored = start_restored(c.install(), &dest);
    assert_eq!(table_digest(&restored, "t", "id"), digest2);
    stop_and_check_page_checksums(&restored);

    // Put back, the middle one lists as usable again.
    std::fs::write(&middle, &original_middle).unwrap();
    let listed = listed_status(&src, 5);
    assert_eq!(listed[1].1, "ok");
}
