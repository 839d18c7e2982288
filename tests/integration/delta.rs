//! Delta backups end to end with a real PostgreSQL (initdb -k): a full
//! backup, then deltas after pgbench load and DDL; every backup of the
//! chain restores to exactly the data recorded when it ended, passes
//! pg_verifybackup and pg_checksums; the chain length cap holds; a corrupt
//! page is reported with its block number.

use crate::backup::{archiving_source, check_page_checksums, restore_and_start, Source};
use crate::common::*;
use pgark_catalog::BackupManifest;
use pgark_testkit::pg::PgCluster;

/// Table contents, in both databases, as one string.
fn digest(c: &PgCluster) -> String {
    let mut parts = Vec::new();
    for (table, key) in [
        ("pgbench_accounts", "aid"),
        ("pgbench_branches", "bid"),
        ("pgbench_tellers", "tid"),
        ("t", "id"),
    ] {
        parts.push(format!("{table}={}", table_digest(c, table, key)));
    }
    for extra in ["grown", "created_later"] {
        let exists = c
            .psql(&format!(
                "select count(*) from pg_class where relname = '{extra}'"
            ))
            .unwrap();
        if exists == "1" {
            parts.push(format!("{extra}={}", table_digest(c, extra, "id")));
        }
    }
    let db2 = c
        .psql("select count(*) from pg_database where datname = 'db2'")
        .unwrap();
    if db2 == "1" {
        let sum = c
            .psql_db(
                "db2",
                "select count(*) || ':' || md5(string_agg(v, ',' order by id)) from d",
            )
            .unwrap();
        parts.push(format!("db2.d={sum}"));
    }
    parts.join(" ")
}

fn manifest(src: &Source, name: &str) -> BackupManifest {
    let stored = std::fs::read(src.repo.path().join("backups").join(name).join("manifest")).unwrap();
    let (json, _) = pgark_codec::decode_to_vec(&stored).unwrap();
    BackupManifest::from_json(&json).unwrap()
}

fn push(src: &Source, extra: &[&str]) -> (String, String) {
    let mut args = vec!["backup-push", src.cluster.data_dir().to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = src.pgark(&args);
    assert_code(&out, 0);
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr(&out),
    )
}

#[test]
fn delta_chain_restores_every_backup_exactly() {
    let src = archiving_source();
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "2", "-q"]).unwrap();
    c.psql("insert into t (batch) select 'a' from generate_series(1, 1000)")
        .unwrap();
    c.psql("create table dropped_later (id int primary key, v text); insert into dropped_later select g, 'x' from generate_series(1, 5000) g")
        .unwrap();
    c.psql("create table grown (id int primary key, v text); insert into grown select g, repeat('g', 100) from generate_series(1, 2000) g")
        .unwrap();

    // Each backup is restored to a restore point made right after its
    // digest was recorded (the first delta runs under load, which goes on
    // after the backup ends).
    let mark = |i: usize| {
        c.psql(&format!("select pg_create_restore_point('after_{i}')"))
            .unwrap();
    };
    let (full, _) = push(&src, &[]);
    let mut expected = vec![(full.clone(), digest(c))];
    mark(0);

    // Changes: load, a new table, a dropped one, TRUNCATE, VACUUM FULL (a
    // new relfilenode), a new index, a new database.
    c.pgbench(&["-c", "1", "-t", "300", "-n"]).unwrap();
    c.psql("create table created_later (id int primary key, v text); insert into created_later select g, md5(g::text) from generate_series(1, 3000) g")
        .unwrap();
    c.psql("drop table dropped_later").unwrap();
    c.psql("truncate pgbench_history").unwrap();
    c.psql("vacuum full pgbench_tellers").unwrap();
    c.psql("create index on pgbench_accounts (abalance)").unwrap();
    c.psql("create database db2").unwrap();
    c.psql_db(
        "db2",
        "create table d (id int primary key, v text); insert into d select g, 'd' || g from generate_series(1, 1000) g",
    )
    .unwrap();
    // Load runs while the delta reads the files.
    let load = {
        let mut cmd = c.client_command("pgbench");
        cmd.args(["-c", "2", "-T", "5", "-n"]);
        std::thread::spawn(move || {
            pgark_testkit::pg::run_capture(&mut cmd, None, std::time::Duration::from_secs(120)).unwrap()
        })
    };
    let (d1, _) = push(&src, &["--delta"]);
    assert!(load.join().unwrap().status.success());
    expected.push((d1.clone(), digest(c)));
    mark(1);

    // Growth and shrinkage: more rows, then a DELETE + VACUUM that
    // truncates the table's tail.
    c.psql("insert into grown select g, repeat('h', 100) from generate_series(2001, 6000) g")
        .unwrap();
    c.pgbench(&["-c", "1", "-t", "200", "-n"]).unwrap();
    let (d2, _) = push(&src, &["--delta"]);
    expected.push((d2.clone(), digest(c)));
    mark(2);

    c.psql("delete from grown where id > 1000").unwrap();
    c.psql("vacuum grown").unwrap();
    c.psql("update t set batch = 'b' where id % 7 = 0").unwrap();
    let (d3, _) = push(&src, &["--delta", "--delta-max-steps", "3"]);
    expected.push((d3.clone(), digest(c)));
    mark(3);

    // The chain is at its cap: the next "delta" is a full backup, saying why.
    c.psql("insert into t (batch) select 'z' from generate_series(1, 10)")
        .unwrap();
    let (capped, why) = push(&src, &["--delta", "--delta-max-steps", "3"]);
    assert!(
        why.contains("full backup instead of a delta") && why.contains("maximum is 3"),
        "{why}"
    );
    expected.push((capped.clone(), digest(c)));
    mark(4);
    archive_current_wal(c);

    let m: Vec<BackupManifest> = [&full, &d1, &d2, &d3, &capped]
        .iter()
        .map(|n| manifest(&src, n))
        .collect();
    assert_eq!(m[0].parent, None);
    assert_eq!(m[1].parent.as_ref().map(|p| p.as_str()), Some(full.as_str()));
    assert_eq!(m[2].parent.as_ref().map(|p| p.as_str()), Some(d1.as_str()));
    assert_eq!(m[3].parent.as_ref().map(|p| p.as_str()), Some(d2.as_str()));
    assert_eq!([m[1].delta_depth, m[2].delta_depth, m[3].delta_depth], [1, 2, 3]);
    assert_eq!(m[4].parent, None, "the chain cap makes a full backup");
    for b in &m {
        assert!(b.data_checksums);
        assert!(b.corrupt_pages.is_empty(), "{}: {:?}", b.name, b.corrupt_pages);
    }
    // Deltas store less than the full backup (not much less here: the
    // table scans that set hint bits, each a full-page image with data
    // checksums, touch many pages; BENCHMARKS.md has the 1 % case), and
    // unchanged files are references.
    for d in &m[1..4] {
        let (stored_pages, pages): (u64, u64) = d
            .files
            .iter()
            .filter_map(|f| f.delta.as_ref())
            .map(|x| (u64::from(x.stored_pages), u64::from(x.blocks)))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let whole: u64 = d.files.iter().filter(|f| f.delta.is_none()).map(|f| f.size).sum();
        let mut biggest: Vec<(u64, &str)> = d
            .files
            .iter()
            .filter(|f| f.delta.is_none())
            .map(|f| (f.size, f.path.as_str()))
            .collect();
        biggest.sort();
        biggest.reverse();
        biggest.truncate(8);
        // The first delta ran under five seconds of load, which lands in it
        // or, when the backup is quicker than the load, in the second: the
        // size of these two has no fixed bound (it depends on the machine's
        // speed); they store fewer pages than the files hold all the same
        // (the load touches only the pgbench tables).
        if d.name.as_str() == d1 || d.name.as_str() == d2 {
            assert!(
                stored_pages < pages,
                "{}: {stored_pages} of {pages} pages stored",
                d.name
            );
        } else {
            assert!(
                d.stored_size < m[0].stored_size,
                "{}: {} vs {}; {stored_pages} of {pages} pages stored, {whole} bytes of whole files: {biggest:?}",
                d.name,
                d.stored_size,
                m[0].stored_size
            );
        }
        assert!(d
            .files
            .iter()
            .any(|f| f.delta.as_ref().is_some_and(|x| x.unchanged)));
        assert!(d
            .files
            .iter()
            .any(|f| f.delta.as_ref().is_some_and(|x| !x.unchanged)));
    }

    let list = src.pgark(&["backup-list", "--json", "--detail"]);
    assert_code(&list, 0);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed[1]["type"], "delta");
    assert_eq!(listed[1]["parent"], full.as_str());
    assert_eq!(listed[4]["type"], "full");

    // The dry run of a delta checks its parents' parts too.
    let dry = src.pgark(&["backup-fetch", "/nonexistent-dest", &d3, "--dry-run"]);
    assert_code(&dry, 0);

    for (i, (name, want)) in expected.iter().enumerate() {
        let point = format!("after_{i}");
        let (_dir, restored) = restore_and_start(
            &src,
            name,
            &["--target-name", &point, "--target-action", "promote"],
        );
        assert_eq!(
            &digest(&restored),
            want,
            "restore of {name}: data differs\n{}",
            restored.log_tail(30)
        );
        amcheck(&restored);
        check_page_checksums(&restored);
    }
}

#[test]
fn corrupt_pages_are_reported_with_their_block() {
    let src = archiving_source();
    let c = &src.cluster;
    c.psql("create table victim (id int primary key, v text); insert into victim select g, repeat('v', 200) from generate_series(1, 2000) g")
        .unwrap();
    c.psql("checkpoint").unwrap();
    let rel = c.psql("select pg_relation_filepath('victim')").unwrap();
    c.stop().unwrap();
    let path = c.data_dir().join(&rel);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 3 * 8192, "victim has several pages");
    // Inside the tuple data of block 2: the header still parses, the
    // checksum fails.
    bytes[2 * 8192 + 4000] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    c.start().unwrap();

    let (name, err) = push(&src, &[]);
    assert!(err.contains(&rel) && err.contains("block(s) 2"), "{err}");
    let m = manifest(&src, &name);
    assert_eq!(m.corrupt_pages.len(), 1, "{:?}", m.corrupt_pages);
    assert_eq!(m.corrupt_pages[0].path, rel);
    assert_eq!(m.corrupt_pages[0].blocks, [2]);
    let list = src.pgark(&["backup-list", "--detail"]);
    assert_code(&list, 0);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains(&format!("corrupt pages in {rel}: block(s) 2")),
        "{text}"
    );

    // With --fail-on-corrupt-pages: exit 5, yet the backup is complete.
    let mut args = vec![
        "backup-push",
        c.data_dir().to_str().unwrap(),
        "--fail-on-corrupt-pages",
    ];
    let out = src.pgark(&args);
    assert_code(&out, 5);
    assert!(stderr(&out).contains("failed their checksum"), "{}", stderr(&out));
    let second = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(manifest(&src, &second).corrupt_pages.len() == 1);
    // A delta reports it too.
    args.push("--delta");
    let out = src.pgark(&args);
    assert_code(&out, 5);
}

/// `backup-fetch --delta` onto a copy of the cluster that went on after the
/// backup (a stale replica), and onto a directory that does not exist.
#[test]
fn delta_restore_onto_a_modified_cluster_and_an_empty_directory() {
    let src = archiving_source();
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "2", "-q"]).unwrap();
    c.psql("insert into t (batch) select 'a' from generate_series(1, 1000)")
        .unwrap();
    let (full, _) = push(&src, &[]);
    c.pgbench(&["-c", "1", "-t", "300", "-n"]).unwrap();
    c.psql("create table grown (id int primary key, v text); insert into grown select g, 'x' from generate_series(1, 3000) g")
        .unwrap();
    let (delta, _) = push(&src, &["--delta"]);
    assert_eq!(
        manifest(&src, &delta).parent.as_ref().map(|p| p.as_str()),
        Some(full.as_str())
    );
    let want = digest(c);
    c.psql("select pg_create_restore_point('after_delta')").unwrap();
    archive_current_wal(c);
    let recover = ["--target-name", "after_delta", "--target-action", "promote"];

    // A restore of the delta that then lives on: writes, DDL, a stray file.
    let (dir, stale) = restore_and_start(&src, &delta, &recover);
    assert_eq!(digest(&stale), want);
    stale.pgbench(&["-c", "1", "-t", "300", "-n"]).unwrap();
    stale
        .psql("create table only_here (id int); insert into only_here select generate_series(1, 5000); drop table grown")
        .unwrap();
    let dest = stale.data_dir().to_path_buf();
    let dest_s = dest.to_str().unwrap().to_string();

    // Refused while the server runs.
    let mut args = vec!["backup-fetch", dest_s.as_str(), delta.as_str(), "--delta"];
    args.extend_from_slice(&recover);
    let out = src.pgark(&args);
    assert_code(&out, 3);
    assert!(stderr(&out).contains("postmaster.pid"), "{}", stderr(&out));

    stale.stop().unwrap();
    std::fs::write(dest.join("base/stray-file"), b"not PostgreSQL's").unwrap();
    pgark_testkit::pg::chown_to_pg_user(&dest.join("base/stray-file")).unwrap();
    let mut logged = args.clone();
    logged.extend_from_slice(&["--log-level", "info"]);
    let out = src.pgark(&logged);
    assert_code(&out, 0);
    let log = stderr(&out);
    assert!(log.contains("files already match the backup"), "{log}");
    assert!(!dest.join("base/stray-file").exists());
    crate::backup::verify_backup(c.install(), &dest);
    let back = start_restored(c.install(), &dest);
    assert_eq!(
        digest(&back),
        want,
        "delta restore onto the modified cluster\n{}",
        back.log_tail(30)
    );
    assert_eq!(
        back.psql("select count(*) from pg_class where relname = 'only_here'")
            .unwrap(),
        "0"
    );
    check_page_checksums(&back);
    drop(dir);

    // Onto a directory that does not exist yet, and then again onto the
    // result, by timestamp: everything but pg_control is kept.
    let scratch = pgark_testkit::pg::scratch_dir("delta-empty");
    let fresh = scratch.path().join("data");
    let fresh_s = fresh.to_str().unwrap().to_string();
    let mut args = vec!["backup-fetch", fresh_s.as_str(), delta.as_str(), "--delta"];
    args.extend_from_slice(&recover);
    assert_code(&src.pgark(&args), 0);
    let mut again = args.clone();
    again.extend_from_slice(&["--delta-by-timestamp", "--log-level", "info"]);
    let out = src.pgark(&again);
    assert_code(&out, 0);
    // pg_control is removed first, postgresql.auto.conf got the first
    // restore's recovery settings: everything else is kept.
    let files = manifest(&src, &delta).files.len();
    let log = stderr(&out);
    let kept: usize = log
        .split("delta restore: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(kept, files - 2, "{log}");
    let restored = start_restored(c.install(), &fresh);
    assert_eq!(digest(&restored), want);
    amcheck(&restored);
    check_page_checksums(&restored);
}

/// Contents of table `t` in database `db`.
fn db_digest(c: &PgCluster, db: &str) -> String {
    c.psql_db(
        db,
        "select count(*) || ':' || md5(string_agg(id || '=' || v, ',' order by id)) from t",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `pg_amcheck --install-missing --all --heapallindexed` on a running cluster.
fn amcheck(c: &PgCluster) {
    let mut cmd = c.install().command("pg_amcheck");
    cmd.args(["--install-missing", "--all", "--heapallindexed"])
        .arg("-h")
        .arg(c.socket_dir())
        .arg("-p")
        .arg(c.port().to_string())
        .arg("-U")
        .arg(c.superuser());
    let out = pgark_testkit::pg::run_capture(&mut cmd, None, std::time::Duration::from_secs(300)).unwrap();
    assert!(
        out.status.success(),
        "pg_amcheck: {}{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Issue 12, item 4: a database dropped and created again with the same OID
/// (`CREATE DATABASE ... OID = n STRATEGY FILE_COPY`) after the parent, from
/// a template whose pages are older than the parent, lands on the parent's
/// paths (same relfilenodes) with old page LSNs. The delta must copy it
/// whole, not take the parent's pages of the dropped database.
#[test]
fn delta_after_a_database_oid_is_reused_restores_the_new_database() {
    let src = ArchivingCluster::start("autovacuum = off");
    let c = &src.cluster;
    c.psql("create database tmpl").unwrap();
    c.psql_db(
        "tmpl",
        "create table t (id int primary key, v text); \
         insert into t select g, 'first ' || g from generate_series(1, 20000) g",
    )
    .unwrap();
    let oid: u32 = 40000;
    c.psql(&format!(
        "create database d oid = {oid} template tmpl strategy file_copy"
    ))
    .unwrap();
    // The template changes before the parent: its pages' LSNs are older
    // than the parent's start, as is every page d will copy from it later.
    c.psql_db(
        "tmpl",
        "update t set v = 'second ' || id where id % 3 = 0; \
         delete from t where id % 7 = 0; vacuum t",
    )
    .unwrap();
    c.psql("checkpoint").unwrap();
    let before = db_digest(c, "d");
    let full = src.backup_push(&[]);

    c.psql("drop database d").unwrap();
    c.psql(&format!(
        "create database d oid = {oid} template tmpl strategy file_copy"
    ))
    .unwrap();
    let after = db_digest(c, "d");
    assert_ne!(before, after);
    let t_file = c.psql_db("d", "select pg_relation_filepath('t')").unwrap();
    let delta = src.backup_push(&["--delta"]);
    let m = manifest_of(&src, &delta);
    assert_eq!(m.parent.as_ref().map(|p| p.as_str()), Some(full.as_str()));
    assert!(
        manifest_of(&src, &full).files.iter().any(|f| f.path == t_file),
        "the re-created table is not at the parent's path {t_file}"
    );
    src.archive_current_wal();

    // Only up to consistency: replaying CREATE DATABASE would copy the
    // template again and hide wrong pages.
    let scratch = pgark_testkit::pg::scratch_dir("oid-reuse");
    let dest = scratch.path().join("data");
    let out = src.backup_fetch(
        &dest,
        &delta,
        &["--target-immediate", "--target-action", "promote"],
    );
    assert_code(&out, 0);
    let restored = start_restored(c.install(), &dest);
    assert_eq!(db_digest(&restored, "d"), after);
    amcheck(&restored);
    stop_and_check_page_checksums(&restored);
}

fn manifest_of(src: &ArchivingCluster, name: &str) -> BackupManifest {
    let stored = std::fs::read(src.repo.path().join("backups").join(name).join("manifest")).unwrap();
    let (json, _) = pgark_codec::decode_to_vec(&stored).unwrap();
    BackupManifest::from_json(&json).unwrap()
}
