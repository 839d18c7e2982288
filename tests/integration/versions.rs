//! Backup and point-in-time recovery on the PostgreSQL majors other than the
//! default installation's: for each, a cluster of that version archiving
//! with `pgark wal-push`, `pgark backup-push` under a little load, writes
//! past a restore point, `pgark backup-fetch` to that restore point, and the
//! restored cluster started with the same version and compared. This runs
//! the PostgreSQL 13-14 code path (`pg_start_backup`/`pg_stop_backup`) and
//! the newer ones' (`pg_backup_start`/`pg_backup_stop`), and WAL of every
//! major through wal-push's checks.
//!
//! The extra majors are the server-only installations `.ci/install-deps.sh`
//! puts under `/opt/pgark-test` (or those in `$PGARK_TEST_EXTRA_PGBINS`);
//! `psql` and `pgbench` come from the distribution's installation, and
//! `pg_checksums` is run only where one of the same major exists.

use crate::common::*;
use pgark_testkit::pg::{
    expose_binary, run_capture, scratch_dir, shell_quote, ClusterOptions, PgCluster, PgInstall,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn checksum(cluster: &PgCluster) -> String {
    cluster
        .psql(
            "select count(*) || ':' || md5(coalesce(string_agg(id || batch, ',' order by id), '')) from t; \
             select sum(abalance) || ':' || count(*) from pgbench_accounts; \
             select sum(delta) || ':' || count(*) from pgbench_history",
        )
        .unwrap()
}

/// One installation per major other than the default one (the
/// distribution's when there are two of a major).
fn other_majors() -> Vec<PgInstall> {
    let default = PgInstall::detect().expect("PostgreSQL");
    let mut chosen: Vec<PgInstall> = Vec::new();
    for install in PgInstall::all_available() {
        if install.major != default.major && !chosen.iter().any(|c| c.major == install.major) {
            chosen.push(install);
        }
    }
    chosen
}

#[test]
fn backup_and_restore_point_recovery_on_other_majors() {
    let default = PgInstall::detect().expect("PostgreSQL");
    let installs = other_majors();
    if installs.is_empty() {
        // .ci/install-deps.sh installs PostgreSQL 13 and 17: without them
        // the oldest supported major goes untested, which is a failure,
        // not a skip (a developer can opt out for a local run).
        assert!(
            std::env::var_os("PGARK_TEST_ONE_MAJOR").is_some(),
            "only PostgreSQL {} is installed: run .ci/install-deps.sh (or set PGARK_TEST_EXTRA_PGBINS) to \
             test other majors; PGARK_TEST_ONE_MAJOR=1 skips this test on purpose",
            default.major
        );
        eprintln!("note: versions: PGARK_TEST_ONE_MAJOR is set; other majors not tested");
        return;
    }
    let mut failed = Vec::new();
    for install in &installs {
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| round_trip(install));
        let outcome = if result.is_ok() { "ok" } else { "FAILED" };
        eprintln!(
            "versions: PostgreSQL {} ({}): {outcome} in {:.1?}",
            install.version,
            install.bin_dir.display(),
            started.elapsed()
        );
        if result.is_err() {
            failed.push(install.version.clone());
        }
    }
    assert!(failed.is_empty(), "failed on PostgreSQL {}", failed.join(", "));
}

fn round_trip(install: &PgInstall) {
    let bin: PathBuf = expose_binary(&pgark_bin());
    let repo = scratch_dir("repo");
    let command = format!(
        "{} wal-push --repo {} %p",
        shell_quote(&bin.to_string_lossy()),
        shell_quote(&repo.path().to_string_lossy())
    );
    let opts = ClusterOptions::new(install.clone()).with_archive_command(command);
    let c = PgCluster::start_new(opts).unwrap_or_else(|e| panic!("{e}"));
    let version_num: u32 = c.psql("show server_version_num").unwrap().parse().unwrap();
    assert_eq!(
        version_num / 10000,
        install.major,
        "the server runs another version"
    );

    c.psql("create table t (id bigserial primary key, batch text not null)")
        .unwrap();
    c.pgbench(&["-i", "-s", "1", "-q"]).unwrap();
    c.psql("insert into t (batch) select 'before' from generate_series(1, 1000)")
        .unwrap();

    // A little load while the backup copies files.
    let load = {
        let mut cmd = c.client_command("pgbench");
        cmd.args(["-c", "2", "-T", "3", "-n"]);
        std::thread::spawn(move || run_capture(&mut cmd, None, Duration::from_secs(120)).unwrap())
    };
    let out = pgark_as_pg(
        &bin,
        &c,
        repo.path(),
        &["backup-push", c.data_dir().to_str().unwrap()],
    );
    assert_code(&out, 0);
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(name.starts_with("base_"), "{name}");
    let load = load.join().unwrap();
    assert!(load.status.success(), "pgbench: {}", stderr(&load));

    let list = pgark_as_pg(&bin, &c, repo.path(), &["backup-list", "--json", "--detail"]);
    assert_code(&list, 0);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed[0]["name"], name.as_str());
    assert_eq!(listed[0]["pg_version"], version_num);

    // Writes after the backup, a restore point, and writes past it.
    c.psql("insert into t (batch) select 'after' from generate_series(1, 500)")
        .unwrap();
    c.pgbench(&["-c", "1", "-t", "100", "-n"]).unwrap();
    c.psql("select pg_create_restore_point('versions_rp')").unwrap();
    let expected = checksum(&c);
    c.psql("insert into t (batch) select 'past' from generate_series(1, 500)")
        .unwrap();
    c.pgbench(&["-c", "1", "-t", "50", "-n"]).unwrap();
    assert_ne!(checksum(&c), expected);
    let last = c.psql("select pg_walfile_name(pg_current_wal_lsn())").unwrap();
    c.psql("select pg_switch_wal()").unwrap();
    c.wait_for("last segment archived", Duration::from_secs(120), || {
        c.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
            .map(|w| w.as_str() >= last.as_str())
            .unwrap_or(false)
    })
    .unwrap_or_else(|e| panic!("{e}"));

    let dir = scratch_dir("restore");
    let dest = dir.path().join("data");
    let out = pgark_as_pg(
        &bin,
        &c,
        repo.path(),
        &[
            "backup-fetch",
            dest.to_str().unwrap(),
            "LATEST",
            "--target-name",
            "versions_rp",
            "--target-action",
            "promote",
        ],
    );
    assert_code(&out, 0);
    c.stop().unwrap();

    let restored = PgCluster::from_data_dir(install, &dest).unwrap();
    restored.set_archive_command(None).unwrap();
    restored.start().unwrap_or_else(|e| panic!("{e}"));
    restored
        .wait_for("recovery to end", Duration::from_secs(120), || {
            restored
                .psql("select pg_is_in_recovery()")
                .map(|r| r == "f")
                .unwrap_or(false)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        checksum(&restored),
        expected,
        "PostgreSQL {}: data restored to the restore point differs\n{}",
        install.version,
        restored.log_tail(30)
    );
    assert!(
        restored
            .log()
            .contains("recovery stopping at restore point \"versions_rp\""),
        "{}",
        restored.log_tail(30)
    );

    restored.stop().unwrap();
    if install.resolve_tool("pg_checksums").is_some() {
        let mut cmd = install.command("pg_checksums");
        cmd.arg("--check").arg("-D").arg(restored.data_dir());
        let out = run_capture(&mut cmd, None, Duration::from_secs(300)).unwrap();
        assert!(
            out.status.success(),
            "pg_checksums: {}{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        eprintln!(
            "note: versions: no pg_checksums of PostgreSQL {} is installed; checking the restored \
             cluster's page checksums by reading every page through the server instead",
            install.major
        );
        read_every_page(&restored);
    }
}

/// Starts the stopped `cluster` (so no page is in shared buffers) and reads every
/// page of every relation of database `postgres` and of the shared catalogs
/// into shared buffers with `pg_prewarm`, which makes the server verify each
/// page's checksum: a bad one fails the query. The stand-in for
/// `pg_checksums --check` where no `pg_checksums` of the cluster's major is
/// installed (`template0` and `template1` are not read).
fn read_every_page(cluster: &PgCluster) {
    cluster.start().unwrap_or_else(|e| panic!("{e}"));
    let available = cluster
        .psql("select count(*) from pg_available_extensions where name = 'pg_prewarm'")
        .unwrap();
    if available != "1" {
        eprintln!("note: versions: the installation has no pg_prewarm either; page checksums not checked");
        return;
    }
    let pages: u64 = cluster
        .psql(
            "create extension pg_prewarm; \
             select sum(pg_prewarm(c.oid::regclass, 'buffer')) from pg_class c \
             where c.relkind in ('r', 'i', 't', 'm', 'S') and c.relpersistence <> 't'",
        )
        .unwrap_or_else(|e| panic!("reading every page: {e}"))
        .parse()
        .unwrap();
    assert!(pages > 1000, "read only {pages} pages");
    let failures = cluster
        .psql("select coalesce(sum(checksum_failures), 0) from pg_stat_database")
        .unwrap();
    assert_eq!(failures, "0", "checksum failures\n{}", cluster.log_tail(30));
    let checksums = cluster.psql("show data_checksums").unwrap();
    assert_eq!(checksums, "on");
}
