//! Archiving ahead (`wal-push --archive-parallel`): a queue of ready WAL
//! drained by PostgreSQL's archiver through pgark, every segment compared
//! with a copy PostgreSQL handed over; kill -9 of pgark in the middle of
//! parallel pushes never leaves a spool record of a segment the repository
//! does not hold, and loses nothing.

use crate::common::*;
use pgark_testkit::pg::{expose_binary, scratch_dir, shell_quote, ClusterOptions, PgCluster, PgInstall};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn quote(p: &Path) -> String {
    shell_quote(&p.to_string_lossy())
}

/// A cluster whose archive_command fails, with `segments` ready segments
/// queued in pg_wal (wal_keep_size keeps them after archiving, for the
/// comparison).
fn queued_cluster(segments: usize) -> PgCluster {
    let opts = ClusterOptions::new(PgInstall::detect().expect("PostgreSQL is installed"))
        .with_archive_command("/bin/false")
        .with_conf("wal_keep_size = 2GB\nmax_wal_size = 4GB\ncheckpoint_timeout = 1h\n");
    let cluster = PgCluster::start_new(opts).expect("start a cluster");
    cluster.psql("create table t (id int, v text)").unwrap();
    let ready = |c: &PgCluster| {
        std::fs::read_dir(c.data_dir().join("pg_wal/archive_status"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
            .count()
    };
    while ready(&cluster) < segments {
        cluster
            .psql("insert into t select g, md5(g::text) from generate_series(1, 20000) g; select pg_switch_wal()")
            .unwrap();
    }
    cluster
}

fn ready_count(cluster: &PgCluster) -> usize {
    std::fs::read_dir(cluster.data_dir().join("pg_wal/archive_status"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        .count()
}

fn wait_drained(cluster: &PgCluster, limit: Duration) {
    cluster
        .wait_for("the ready queue to drain", limit, || ready_count(cluster) == 0)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tail(40)));
}

/// Every spool record names a segment the repository holds, with the bytes
/// of the file in pg_wal.
fn check_spool_records(cluster: &PgCluster, repo: &Path) {
    let spool = cluster.data_dir().join("pg_wal").join("pgark-archived");
    let Ok(entries) = std::fs::read_dir(&spool) else {
        return;
    };
    let fetched = scratch_dir("fetched");
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            continue;
        }
        let dest = fetched.path().join(&name);
        let out = run(repo, &["wal-fetch", &name, dest.to_str().unwrap()]);
        assert_code(&out, 0);
        assert!(
            std::fs::read(&dest).unwrap()
                == std::fs::read(cluster.data_dir().join("pg_wal").join(&name)).unwrap(),
            "the spool records {name}, and the repository's copy differs from pg_wal's"
        );
    }
}

/// Each segment PostgreSQL archived (copied by the archive_command after
/// pgark succeeded) fetches back identical.
fn check_every_copy(copies: &Path, repo: &Path) -> usize {
    let fetched = scratch_dir("fetched");
    let names: Vec<String> = files_below(copies);
    for name in &names {
        let dest: PathBuf = fetched.path().join(name);
        let out = run(repo, &["wal-fetch", name, dest.to_str().unwrap()]);
        assert_code(&out, 0);
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(copies.join(name)).unwrap(),
            "{name}: fetched bytes differ from what PostgreSQL archived"
        );
    }
    names.len()
}

#[test]
fn a_ready_queue_is_archived_ahead_and_every_segment_fetches_back_identical() {
    let bin = expose_binary(&pgark_bin());
    let repo = scratch_dir("repo");
    let copies = scratch_dir("copies");
    let cluster = queued_cluster(12);
    let command = format!(
        "PGARK_LOG_LEVEL=info {} wal-push --repo {} --archive-parallel 4 %p && cp %p {}/%f",
        quote(&bin),
        quote(repo.path()),
        quote(copies.path())
    );
    cluster.set_archive_command(Some(&command)).unwrap();
    cluster.reload().unwrap();
    cluster.psql("select pg_stat_reset_shared('archiver')").unwrap();
    // Load while the queue drains: new segments join it.
    cluster.pgbench(&["-i", "-s", "2", "-q"]).unwrap();
    cluster.psql("select pg_switch_wal()").unwrap();
    wait_drained(&cluster, Duration::from_secs(180));
    assert_eq!(
        cluster.psql("select failed_count from pg_stat_archiver").unwrap(),
        "0"
    );
    let n = check_every_copy(copies.path(), repo.path());
    assert!(n >= 12, "only {n} segments archived");
    let log = cluster.log();
    assert!(
        log.contains("was archived ahead by an earlier wal-push"),
        "no call was answered from the spool:\n{}",
        cluster.log_tail(40)
    );
    // The spool is bounded: records behind PostgreSQL are pruned.
    let spool = cluster.data_dir().join("pg_wal/pgark-archived");
    let left = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert!(left <= 4, "{left} records left in the spool");
    check_spool_records(&cluster, repo.path());
}

#[test]
fn kill_9_during_parallel_archiving_loses_nothing_and_never_records_an_unstored_segment() {
    let bin = expose_binary(&pgark_bin());
    let repo = scratch_dir("repo");
    let copies = scratch_dir("copies");
    let cluster = queued_cluster(16);
    let command = format!(
        "{} wal-push --repo {} --archive-parallel 4 %p && cp %p {}/%f",
        quote(&bin),
        quote(repo.path()),
        quote(copies.path())
    );
    cluster.set_archive_command(Some(&command)).unwrap();
    cluster.reload().unwrap();
    let mut rng = seeded_rng();
    let bin_name = bin.to_string_lossy().into_owned();
    let started = Instant::now();
    let mut kills = 0;
    // Bounded: 25 kills or 90 s, whichever comes first.
    while kills < 25 && started.elapsed() < Duration::from_secs(90) && ready_count(&cluster) > 0 {
        std::thread::sleep(Duration::from_millis(20 + rng() % 150));
        let out = std::process::Command::new("pkill")
            .args(["-KILL", "-f", &format!("{bin_name} wal-push")])
            .output()
            .unwrap();
        if out.status.success() {
            kills += 1;
        }
        check_spool_records(&cluster, repo.path());
    }
    assert!(kills > 0, "no wal-push was running to kill");
    wait_drained(&cluster, Duration::from_secs(180));
    check_spool_records(&cluster, repo.path());
    let n = check_every_copy(copies.path(), repo.path());
    assert!(n >= 16, "only {n} segments archived");
    // Every segment PostgreSQL counts as archived is in the repository.
    let stored = files_below(repo.path());
    for entry in std::fs::read_dir(cluster.data_dir().join("pg_wal/archive_status"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(seg) = name.strip_suffix(".done").filter(|s| is_segment_name(s)) {
            assert!(
                stored.iter().any(|k| k.ends_with(seg)),
                "{seg} is marked done but not in the repository ({kills} kills)"
            );
        }
    }
}
