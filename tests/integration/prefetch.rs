//! Recovery through `wal-fetch` with prefetching, on a real PostgreSQL:
//! the data reached is the source's, with or without prefetching, with
//! prefetchers killed midway, and across a timeline switch.

use crate::common::*;
use pgark_testkit::pg::{
    expose_binary, run_checked, scratch_dir, shell_quote, ClusterOptions, PgCluster, PgInstall,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn quote(p: &Path) -> String {
    shell_quote(&p.to_string_lossy())
}

fn archiving_cluster(bin: &Path, repo: &Path) -> PgCluster {
    let command = format!("{} wal-push --repo {} %p", quote(bin), quote(repo));
    let opts = ClusterOptions::new(PgInstall::detect().expect("PostgreSQL is installed"))
        .with_archive_command(command);
    PgCluster::start_new(opts).expect("start a cluster")
}

fn digest(cluster: &PgCluster) -> String {
    cluster
        .psql("select count(*) || ':' || md5(string_agg(v, ',' order by id)) from t")
        .unwrap()
}

/// Archives the current segment and waits until PostgreSQL reports it.
fn archive_all(cluster: &PgCluster) {
    let last = cluster
        .psql("select pg_walfile_name(pg_current_wal_lsn())")
        .unwrap();
    cluster.psql("select pg_switch_wal()").unwrap();
    cluster
        .wait_for(
            "the last segment to be archived",
            Duration::from_secs(120),
            || {
                let done = cluster
                    .psql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
                    .unwrap();
                !done.is_empty() && done.as_str() >= last.as_str()
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tail(30)));
}

/// A base backup without WAL (recovery fetches every record it needs).
fn base_backup(cluster: &PgCluster, dir: &Path) {
    let mut basebackup = cluster.client_command("pg_basebackup");
    basebackup.arg("-D").arg(dir).args(["-X", "none", "-c", "fast"]);
    run_checked(&mut basebackup, None, Duration::from_secs(300)).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

/// Starts `data` in archive recovery through `restore_command`, with
/// `conf` added, and waits until it has promoted.
fn recover(install: &PgInstall, data: &Path, restore_command: &str, conf: &str) -> PgCluster {
    recover_archiving(install, data, restore_command, conf, None)
}

/// [`recover`], archiving with `archive_command` when given (from the
/// start, so that the new timeline's history file is archived).
fn recover_archiving(
    install: &PgInstall,
    data: &Path,
    restore_command: &str,
    conf: &str,
    archive_command: Option<&str>,
) -> PgCluster {
    let restored = PgCluster::from_data_dir(install, data).unwrap();
    restored.set_archive_command(archive_command).unwrap();
    restored.set_restore_command(restore_command).unwrap();
    if !conf.is_empty() {
        restored.append_conf(conf).unwrap();
    }
    restored.create_recovery_signal().unwrap();
    restored.start().unwrap();
    restored
        .wait_for("recovery to finish", Duration::from_secs(300), || {
            restored
                .psql("select pg_is_in_recovery()")
                .map(|r| r == "f")
                .unwrap_or(false)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", restored.log_tail(40)));
    restored
}

fn fetch_command(bin: &Path, repo: &Path, extra: &str) -> String {
    format!(
        "{} wal-fetch --repo {} --log-level info {extra} %f %p",
        quote(bin),
        quote(repo)
    )
}

/// The processes running as the prefetcher of `data`'s pg_wal.
fn prefetchers(data: &Path) -> Vec<i32> {
    background_processes("--prefetch-worker", data)
}

/// Once the server has stopped, its prefetcher ends and leaves its lock
/// only (after kills, what the last one killed left in the spool, which the
/// next prefetcher removes); no temporary file is left outside the spool.
fn assert_prefetch_cleaned_up(data: &Path, killed: bool) {
    let spool = data.join("pg_wal").join("pgark-prefetch");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !prefetchers(data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the prefetcher did not end after its server stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<String> = std::fs::read_dir(&spool)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        killed || left.iter().all(|n| n == "lock"),
        "the spool still holds {left:?}"
    );
    let tmp: Vec<String> = files_below(&data.join("pg_wal"))
        .into_iter()
        .filter(|n| n.contains("pgark-tmp") && !n.starts_with("pgark-prefetch/"))
        .collect();
    assert!(tmp.is_empty(), "temporary files left in pg_wal: {tmp:?}");
}

#[test]
fn recovery_through_prefetching_reaches_the_source_data_even_with_prefetchers_killed() {
    let bin = expose_binary(&pgark_bin());
    let repo = scratch_dir("repo");
    let primary = archiving_cluster(&bin, repo.path());
    primary
        .psql("create table t (id int primary key, v text)")
        .unwrap();
    primary
        .psql("insert into t select g, md5(g::text) from generate_series(1, 1000) g")
        .unwrap();
    let backups = scratch_dir("basebackups");
    let data = backups.path().join("prefetched");
    base_backup(&primary, &data);
    let plain = backups.path().join("plain");
    copy_tree(&data, &plain);
    let killed = backups.path().join("killed");
    copy_tree(&data, &killed);

    // About 25 segments of WAL, some of them switched early.
    for batch in 0..12 {
        let from = 1001 + batch * 20_000;
        primary
            .psql(&format!(
                "insert into t select g, md5(g::text) from generate_series({from}, {}) g",
                from + 19_999
            ))
            .unwrap();
        primary.psql("select pg_switch_wal()").unwrap();
    }
    primary.pgbench(&["-i", "-s", "2", "-q"]).unwrap();
    primary
        .psql("update t set v = 'changed' where id % 7 = 0")
        .unwrap();
    let expected = digest(&primary);
    let accounts = primary
        .psql("select sum(abalance) || ':' || count(*) from pgbench_accounts")
        .unwrap();
    archive_all(&primary);
    primary.stop().unwrap();
    let install = primary.install().clone();

    // With prefetching: the same data, and most segments handed over from
    // the spool.
    let restored = recover(
        &install,
        &data,
        &fetch_command(&bin, repo.path(), "--fetch-parallel 3"),
        "",
    );
    assert_eq!(digest(&restored), expected, "restored data differs");
    assert_eq!(
        restored
            .psql("select sum(abalance) || ':' || count(*) from pgbench_accounts")
            .unwrap(),
        accounts
    );
    amcheck(&restored);
    let log = restored.log();
    let fetched = log.matches("restored log file \"0").count();
    let prefetched = log.matches("bytes, prefetched)").count();
    assert!(
        fetched >= 15,
        "only {fetched} segments restored:\n{}",
        restored.log_tail(40)
    );
    assert!(
        prefetched * 2 >= fetched,
        "{prefetched} of {fetched} segments came from the spool:\n{}",
        restored.log_tail(40)
    );
    restored.stop().unwrap();
    assert_prefetch_cleaned_up(&data, false);

    // Without prefetching: the same data, and no spool.
    let restored = recover(
        &install,
        &plain,
        &fetch_command(&bin, repo.path(), "--fetch-parallel 1"),
        "",
    );
    assert_eq!(
        digest(&restored),
        expected,
        "restored data differs without prefetching"
    );
    assert!(!restored.log().contains("prefetched)"));
    restored.stop().unwrap();
    assert!(!plain.join("pg_wal").join("pgark-prefetch").exists());

    // Prefetchers killed with SIGKILL while recovery runs (at most 8).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let killed = killed.clone();
        std::thread::spawn(move || {
            let mut kills = 0;
            while kills < 8 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for pid in prefetchers(&killed) {
                    // SAFETY: a signal to a process found above.
                    if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                        kills += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(150));
            }
            kills
        })
    };
    let restored = recover(
        &install,
        &killed,
        &fetch_command(&bin, repo.path(), "--fetch-parallel 2"),
        "",
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.join().unwrap();
    assert!(kills > 0, "no prefetcher was seen to kill");
    assert_eq!(
        digest(&restored),
        expected,
        "restored data differs after {kills} prefetchers were killed"
    );
    amcheck(&restored);
    restored.stop().unwrap();
    assert_prefetch_cleaned_up(&killed, true);
}

#[test]
fn recovery_through_prefetching_follows_a_timeline_switch() {
    let bin = expose_binary(&pgark_bin());
    let repo = scratch_dir("repo");
    let primary = archiving_cluster(&bin, repo.path());
    primary
        .psql("create table t (id int primary key, v text)")
        .unwrap();
    let backups = scratch_dir("basebackups");
    let base: PathBuf = backups.path().join("base");
    base_backup(&primary, &base);
    let branch = backups.path().join("branch");
    copy_tree(&base, &branch);
    let follower = backups.path().join("follower");
    copy_tree(&base, &follower);

    // Timeline 1: a first batch, the branch point, then about 8 more
    // segments the new timeline will not have.
    primary
        .psql("insert into t select g, md5(g::text) from generate_series(1, 50000) g")
        .unwrap();
    let branch_lsn = primary.psql("select pg_current_wal_lsn()").unwrap();
    primary
        .psql("insert into t select g, 'timeline 1 only' from generate_series(50001, 150000) g")
        .unwrap();
    archive_all(&primary);
    primary.stop().unwrap();
    let install = primary.install().clone();

    // Timeline 2: recovery to the branch point, promoted, archiving into
    // the same repository, with its own writes.
    let push = format!("{} wal-push --repo {} %p", quote(&bin), quote(repo.path()));
    let second = recover_archiving(
        &install,
        &branch,
        &fetch_command(&bin, repo.path(), ""),
        &format!("recovery_target_lsn = '{branch_lsn}'\nrecovery_target_action = promote\n"),
        Some(&push),
    );
    assert_eq!(second.psql("select count(*) from t").unwrap(), "50000");
    second
        .psql("insert into t select g, 'timeline 2 ' || md5(g::text) from generate_series(200001, 300000) g")
        .unwrap();
    let expected = digest(&second);
    let timeline = second
        .psql("select timeline_id from pg_control_checkpoint()")
        .unwrap();
    archive_all(&second);
    second.stop().unwrap();
    assert_prefetch_cleaned_up(&branch, false);

    // A recovery of the base backup to the latest timeline: timeline 1 up to
    // the switch, then timeline 2, never timeline 1's later segments.
    let restored = recover(
        &install,
        &follower,
        &fetch_command(&bin, repo.path(), "--fetch-parallel 3"),
        "recovery_target_timeline = 'latest'\n",
    );
    assert_eq!(
        digest(&restored),
        expected,
        "the recovery did not follow timeline 2"
    );
    assert_eq!(
        restored
            .psql("select count(*) from t where v = 'timeline 1 only'")
            .unwrap(),
        "0"
    );
    let log = restored.log();
    assert!(
        log.contains(&format!(
            "restored log file \"{:08X}",
            timeline.parse::<u32>().unwrap()
        )),
        "no segment of the new timeline was restored:\n{}",
        restored.log_tail(40)
    );
    amcheck(&restored);
    restored.stop().unwrap();
    assert_prefetch_cleaned_up(&follower, false);
}

/// A prefetcher exits 0 whatever fails (a postmaster running as PID 1
/// reaps it, and takes another status for a crashed backend).
#[test]
fn a_failing_prefetcher_exits_zero() {
    // What it takes for a running server in recovery: this test process
    // plays the postmaster.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pg_wal/archive_status")).unwrap();
    std::fs::write(dir.path().join("recovery.signal"), b"").unwrap();
    std::fs::write(
        dir.path().join("postmaster.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let no_repo = dir.path().join("no-repository");
    let worker = |extra: &[&str]| {
        pgark()
            .current_dir(dir.path())
            .arg("--repo")
            .arg(&no_repo)
            .args(["wal-fetch", "000000010000000000000003", "pg_wal/RECOVERYXLOG"])
            .args(extra)
            .arg("--prefetch-worker")
            .output()
            .unwrap()
    };
    // No repository there.
    let out = worker(&[]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("the prefetcher stopped"),
        "{}",
        stderr(&out)
    );
    // A configuration file that cannot be read, an option it does not know.
    assert_code(&worker(&["--config", "/nonexistent/pgark.toml"]), 0);
    assert_code(&worker(&["--no-such-option"]), 0);
    // The same failure in wal-fetch itself is reported.
    let out = pgark()
        .current_dir(dir.path())
        .arg("--repo")
        .arg(&no_repo)
        .args(["wal-fetch", "000000010000000000000003", "pg_wal/RECOVERYXLOG"])
        .output()
        .unwrap();
    assert_code(&out, 11);
}
