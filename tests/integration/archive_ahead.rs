//! Archiving ahead (`wal-push --archive-parallel`): a queue of ready WAL
//! drained by PostgreSQL's archiver through pgark and its background
//! archiver, every segment compared with a copy PostgreSQL handed over;
//! kill -9 of pgark in the middle of parallel pushes never leaves a spool
//! record of a segment the repository does not hold, and loses nothing; the
//! archiver ends with its server and when idle; a segment another process
//! is pushing is waited for, and pushed once that process is gone.

use crate::common::*;
use pgark_testkit::pg::{
    chown_to_pg_user, command_as_pg_user, expose_binary, scratch_dir, shell_quote, ClusterOptions, PgCluster,
    PgInstall,
};
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
    while ready_count(&cluster) < segments {
        cluster
            .psql("insert into t select g, md5(g::text) from generate_series(1, 20000) g; select pg_switch_wal()")
            .unwrap();
    }
    cluster
}

fn ready_count(cluster: &PgCluster) -> usize {
    marked(cluster.data_dir(), ".ready").len()
}

/// The segments of `data`'s pg_wal whose archive status file ends with
/// `suffix` (`.ready`: waiting; `.done`: archived), sorted.
fn marked(data: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("pg_wal/archive_status"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(suffix)
                .filter(|s| is_segment_name(s))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// Waits for the ready queue to drain; whether a background archiver was
/// seen meanwhile.
fn wait_drained(cluster: &PgCluster, limit: Duration) -> bool {
    let mut seen = false;
    cluster
        .wait_for("the ready queue to drain", limit, || {
            seen |= !archivers(cluster.data_dir()).is_empty();
            ready_count(cluster) == 0
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tail(40)));
    seen
}

/// The processes running as the background archiver of `data`'s pg_wal
/// (PostgreSQL runs archive_command in its data directory).
fn archivers(data: &Path) -> Vec<i32> {
    background_processes("--archiver", data)
}

/// Waits until no background archiver runs for `data` (it ends within its
/// idle time once nothing is left, or with its server).
fn wait_no_archiver(data: &Path, limit: Duration, why: &str) {
    let deadline = Instant::now() + limit;
    while !archivers(data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the background archiver did not end {why}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
        if !is_segment_name(&name) {
            // The archiver's lock, claims, temporary files.
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
    let seen = wait_drained(&cluster, Duration::from_secs(180));
    assert!(seen, "no background archiver was seen while the queue drained");
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
    let left = std::fs::read_dir(&spool)
        .map(|d| {
            d.flatten()
                .filter(|e| is_segment_name(&e.file_name().to_string_lossy()))
                .count()
        })
        .unwrap_or(0);
    assert!(left <= 4, "{left} records left in the spool");
    check_spool_records(&cluster, repo.path());
    // Nothing left to push: the archiver ends by itself.
    wait_no_archiver(
        cluster.data_dir(),
        Duration::from_secs(60),
        "after the queue drained",
    );
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
    let repo_arg = repo.path().display().to_string();
    let started = Instant::now();
    let mut kills = 0;
    // Bounded: 25 kills or 90 s, whichever comes first.
    while kills < 25 && started.elapsed() < Duration::from_secs(90) && ready_count(&cluster) > 0 {
        std::thread::sleep(Duration::from_millis(20 + rng() % 150));
        // Only this test's processes: other tests run wal-push too.
        let out = std::process::Command::new("pkill")
            .args(["-KILL", "-f", &format!("{bin_name} wal-push --repo {repo_arg}")])
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
    wait_no_archiver(
        cluster.data_dir(),
        Duration::from_secs(60),
        "after the queue drained",
    );
    // Every segment PostgreSQL counts as archived is in the repository.
    let stored = files_below(repo.path());
    for seg in marked(cluster.data_dir(), ".done") {
        assert!(
            stored.iter().any(|k| k.ends_with(&seg)),
            "{seg} is marked done but not in the repository ({kills} kills)"
        );
    }
}

#[test]
fn the_background_archiver_ends_with_its_server_and_records_only_stored_segments() {
    let bin = expose_binary(&pgark_bin());
    let repo = scratch_dir("repo");
    let cluster = queued_cluster(40);
    let command = format!(
        "{} wal-push --repo {} --archive-parallel 2 %p",
        quote(&bin),
        quote(repo.path())
    );
    cluster.set_archive_command(Some(&command)).unwrap();
    cluster.reload().unwrap();
    cluster
        .wait_for("a background archiver", Duration::from_secs(60), || {
            !archivers(cluster.data_dir()).is_empty()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tail(40)));
    // Frozen while its server stops, so that it still has segments to push
    // when it finds the server gone, however fast this machine is.
    let frozen = Frozen::stop(archivers(cluster.data_dir()));
    // Immediate: a fast shutdown would let PostgreSQL archive the rest.
    cluster.stop_immediate().unwrap();
    let left = marked(cluster.data_dir(), ".ready");
    let stored_at_stop = files_below(repo.path());
    let unpushed = left
        .iter()
        .filter(|n| !stored_at_stop.iter().any(|k| k.ends_with(n.as_str())))
        .count();
    drop(frozen);
    assert!(
        unpushed > 5,
        "the archiver had pushed all but {unpushed} of {} ready segments before it was frozen: the test \
         cannot tell whether it stops with its server",
        left.len()
    );
    // Its pushes in flight get 30 s to finish; well under a second here.
    wait_no_archiver(
        cluster.data_dir(),
        Duration::from_secs(40),
        "after its server stopped",
    );
    check_spool_records(&cluster, repo.path());
    // After the stop it finishes what it had in flight (2 pushes, and at
    // most 2 more started in the turn that last saw the server alive), and
    // PostgreSQL's own call of the moment at most one: nothing more.
    let after: Vec<String> = files_below(repo.path())
        .into_iter()
        .filter(|k| !stored_at_stop.contains(k))
        .collect();
    assert!(
        after.len() <= 5,
        "the archiver went on pushing after its server stopped ({unpushed} of {} ready segments were not \
         pushed then): {after:?}",
        left.len()
    );
    // Started again, the queue drains and every segment fetches back
    // identical to pg_wal's (wal_keep_size keeps them).
    cluster.start().unwrap();
    wait_drained(&cluster, Duration::from_secs(180));
    let archived: Vec<String> = marked(cluster.data_dir(), ".done");
    assert!(archived.len() >= 40, "only {} segments done", archived.len());
    let fetched = scratch_dir("fetched");
    for name in &archived {
        let dest = fetched.path().join(name);
        assert_code(&run(repo.path(), &["wal-fetch", name, dest.to_str().unwrap()]), 0);
        assert!(
            std::fs::read(&dest).unwrap()
                == std::fs::read(cluster.data_dir().join("pg_wal").join(name)).unwrap(),
            "{name}: the repository's copy differs from pg_wal's"
        );
    }
}

/// Processes stopped (SIGSTOP) until dropped.
struct Frozen(Vec<i32>);

impl Frozen {
    fn stop(pids: Vec<i32>) -> Frozen {
        for &pid in &pids {
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.0 {
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

/// Kills a process group when dropped (a test that fails leaves no holder).
struct GroupGuard(std::process::Child);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

#[test]
fn a_segment_another_process_pushes_is_waited_for_then_pushed_once_that_process_is_gone() {
    use std::os::unix::process::CommandExt;
    let repo = scratch_dir("repo");
    let cluster = queued_cluster(2);
    cluster.stop_immediate().unwrap();
    let pg_wal = cluster.data_dir().join("pg_wal");
    let ready = marked(cluster.data_dir(), ".ready");
    let name = ready[0].clone();
    let spool = pg_wal.join("pgark-archived");
    std::fs::create_dir_all(&spool).unwrap();
    // As PostgreSQL's account, the owner of pg_wal: a process that is not
    // keeps no spool there.
    chown_to_pg_user(&spool).unwrap();
    chown_to_pg_user(repo.path()).unwrap();
    let bin = expose_binary(&pgark_bin());
    // Another process holds the segment's claim, as the archiver does while
    // it pushes it.
    let busy = spool.join(format!("{name}.busy"));
    let holder = GroupGuard(
        command_as_pg_user("flock")
            .arg("-x")
            .arg(&busy)
            .args(["sleep", "120"])
            .process_group(0)
            .spawn()
            .expect("flock(1)"),
    );
    // Until flock(1) holds it, a non-blocking attempt succeeds.
    let deadline = Instant::now() + Duration::from_secs(30);
    while command_as_pg_user("flock")
        .args(["-n", "-x"])
        .arg(&busy)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "flock(1) did not take the claim");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut push = command_as_pg_user(&bin)
        .args([
            "--repo",
            repo.path().to_str().unwrap(),
            "wal-push",
            "--archive-parallel",
            "2",
        ])
        .arg(pg_wal.join(&name))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        push.try_wait().unwrap().is_none(),
        "wal-push returned while another process held its segment's claim"
    );
    let stored = files_below(repo.path());
    assert!(
        !stored.iter().any(|k| k.contains(&name)),
        "wal-push stored {name} while another process held its claim"
    );
    // The holder dies without a record (kill -9): wal-push pushes it itself.
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = push.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "wal-push did not end after the claim's holder died"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = push.wait_with_output().unwrap();
    assert!(
        status.success(),
        "wal-push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fetched = scratch_dir("fetched");
    let dest = fetched.path().join(&name);
    assert_code(
        &run(repo.path(), &["wal-fetch", &name, dest.to_str().unwrap()]),
        0,
    );
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(pg_wal.join(&name)).unwrap());
    // No claim is left behind.
    assert!(!spool.join(format!("{name}.busy")).exists());
    // Another account (root, by hand) keeps no spool in a pg_wal it does
    // not own: it pushes the file it is given, and writes nothing there.
    if pgark_testkit::pg::is_root() {
        let other = &ready[1];
        let out = run(
            repo.path(),
            &[
                "wal-push",
                "--archive-parallel",
                "2",
                pg_wal.join(other).to_str().unwrap(),
            ],
        );
        assert_code(&out, 0);
        let root_owned: Vec<String> = std::fs::read_dir(&spool)
            .unwrap()
            .flatten()
            .filter(|e| std::os::unix::fs::MetadataExt::uid(&e.metadata().unwrap()) == 0)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(root_owned.is_empty(), "root left {root_owned:?} in the spool");
    }
}
