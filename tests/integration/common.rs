//! Running the built `pgark` binary, and driving it against real clusters.

use pgark_testkit::pg::{
    command_as_pg_user, expose_binary, run_capture, scratch_dir, shell_quote, ClusterOptions, PgCluster,
    PgInstall,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The pgark binary cargo built for these tests.
pub fn pgark_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pgark"))
}

/// A `pgark` command with no PGARK_* settings inherited from the caller.
pub fn pgark() -> Command {
    let mut cmd = Command::new(pgark_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("PGARK_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs `pgark --repo <repo> <args>`.
pub fn run(repo: &Path, args: &[&str]) -> Output {
    pgark()
        .arg("--repo")
        .arg(repo)
        .args(args)
        .output()
        .expect("pgark runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing stderr when it differs.
#[track_caller]
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "unexpected exit status; stderr:\n{}",
        stderr(out)
    );
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
}

/// Committed real WAL files of one kind from fixtures/wal (sorted):
/// 16 MiB segments, or the `.history` / `.backup` files.
pub fn fixture_files(dir: &str, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures().join(dir))
        .expect("fixture directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred))
        .collect();
    v.sort();
    v
}

pub fn is_segment_name(n: &str) -> bool {
    n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit())
}

/// All files below `root`, relative, sorted.
pub fn files_below(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// Backups of real clusters (backup_topology, backup_faults)
// ---------------------------------------------------------------------------

/// `path` quoted for a shell command line (archive_command).
pub fn sh_path(p: &Path) -> String {
    shell_quote(&p.to_string_lossy())
}

/// A running cluster whose archive_command is `pgark wal-push` into its own
/// repository, and the exposed pgark binary the unprivileged user runs.
pub struct ArchivingCluster {
    pub bin: PathBuf,
    pub repo: tempfile::TempDir,
    pub cluster: PgCluster,
}

impl ArchivingCluster {
    /// initdb (checksums on) and start, with `extra_conf` appended.
    pub fn start(extra_conf: &str) -> ArchivingCluster {
        let bin = expose_binary(&pgark_bin());
        let repo = scratch_dir("repo");
        let command = format!("{} wal-push --repo {} %p", sh_path(&bin), sh_path(repo.path()));
        let opts = ClusterOptions::new(PgInstall::detect().expect("PostgreSQL is installed"))
            .with_archive_command(command)
            .with_conf(extra_conf);
        let cluster = PgCluster::start_new(opts).unwrap_or_else(|e| panic!("{e}"));
        ArchivingCluster { bin, repo, cluster }
    }

    /// pgark as the unprivileged user (as cron or kubectl exec would run
    /// it), connected to `server` through PGHOST/PGPORT/PGUSER, with
    /// PGARK_REPO set to this repository.
    pub fn pgark_command_on(&self, server: &PgCluster) -> Command {
        let mut cmd = command_as_pg_user(&self.bin);
        cmd.env("PGHOST", server.socket_dir())
            .env("PGPORT", server.port().to_string())
            .env("PGUSER", server.superuser())
            .env("PGARK_REPO", self.repo.path());
        cmd
    }

    /// Runs [`ArchivingCluster::pgark_command_on`] `server` with `args`.
    pub fn pgark_on(&self, server: &PgCluster, args: &[&str]) -> Output {
        let mut cmd = self.pgark_command_on(server);
        cmd.args(args);
        run_capture(&mut cmd, None, Duration::from_secs(900)).expect("pgark runs")
    }

    /// Runs pgark connected to this cluster.
    pub fn pgark(&self, args: &[&str]) -> Output {
        self.pgark_on(&self.cluster, args)
    }

    /// backup-push of this cluster (extra flags after PGDATA); returns the
    /// backup's name.
    pub fn backup_push(&self, flags: &[&str]) -> String {
        let mut args = vec!["backup-push", self.cluster.data_dir().to_str().unwrap()];
        args.extend_from_slice(flags);
        let out = self.pgark(&args);
        assert_code(&out, 0);
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(name.starts_with("base_"), "backup-push printed {name:?}");
        name
    }

    /// `backup-list --json --detail`, parsed.
    pub fn backup_list(&self) -> Vec<serde_json::Value> {
        let out = self.pgark(&["backup-list", "--json", "--detail"]);
        assert_code(&out, 0);
        serde_json::from_slice(&out.stdout).expect("backup-list --json prints JSON")
    }

    /// Ends the current WAL segment and waits until PostgreSQL reports it
    /// archived, so a restore to LATEST replays everything committed so far.
    pub fn archive_current_wal(&self) {
        archive_current_wal(&self.cluster);
    }

    /// `backup-fetch DEST NAME flags...`.
    pub fn backup_fetch(&self, dest: &Path, name: &str, flags: &[&str]) -> Output {
        let mut args = vec!["backup-fetch", dest.to_str().unwrap(), name];
        args.extend_from_slice(flags);
        self.pgark(&args)
    }
}

/// Switches WAL on `cluster` and waits until the switched-from segment is
/// reported archived.
pub fn archive_current_wal(cluster: &PgCluster) {
    let segment = cluster.switch_wal().unwrap_or_else(|e| panic!("{e}"));
    cluster
        .wait_for(
            &format!("{segment} to be archived"),
            Duration::from_secs(120),
            || {
                cluster
                    .psql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
                    .is_ok_and(|last| !last.is_empty() && last.as_str() >= segment.as_str())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Wraps a restored data directory, turns archiving off (it must not write
/// into the source's repository), starts it and waits until recovery has
/// ended and it accepts writes.
pub fn start_restored(install: &PgInstall, data_dir: &Path) -> PgCluster {
    let restored = PgCluster::from_data_dir(install, data_dir).unwrap_or_else(|e| panic!("{e}"));
    restored.set_archive_command(None).unwrap();
    restored.start().unwrap_or_else(|e| panic!("{e}"));
    restored
        .wait_for("recovery to end", Duration::from_secs(180), || {
            restored
                .psql("select pg_is_in_recovery()")
                .is_ok_and(|r| r == "f")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    restored
}

/// Stops `cluster` cleanly and runs `pg_checksums --check` on it.
pub fn stop_and_check_page_checksums(cluster: &PgCluster) {
    cluster.stop().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = cluster.install().command("pg_checksums");
    cmd.arg("--check").arg("-D").arg(cluster.data_dir());
    let out = run_capture(&mut cmd, None, Duration::from_secs(600)).unwrap();
    assert!(
        out.status.success(),
        "pg_checksums --check failed: {}{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Row count and md5 of every row of `table` in primary-key order: equal
/// digests mean equal contents.
pub fn table_digest(cluster: &PgCluster, table: &str, key: &str) -> String {
    cluster
        .psql(&format!(
            "select count(*) || ':' || coalesce(md5(string_agg(x::text, ',' order by x.{key})), '') from {table} x"
        ))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A pgark command run as the unprivileged user (as cron or kubectl exec
/// would), connected to `cluster` through PGHOST/PGPORT/PGUSER, with
/// `repo` as the repository.
pub fn pgark_command(bin: &Path, cluster: &pgark_testkit::pg::PgCluster, repo: &Path) -> Command {
    let mut cmd = pgark_testkit::pg::command_as_pg_user(bin);
    cmd.env("PGHOST", cluster.socket_dir())
        .env("PGPORT", cluster.port().to_string())
        .env("PGUSER", cluster.superuser())
        .env("PGARK_REPO", repo);
    cmd
}

/// Runs [`pgark_command`] with `args`.
pub fn pgark_as_pg(bin: &Path, cluster: &pgark_testkit::pg::PgCluster, repo: &Path, args: &[&str]) -> Output {
    let mut cmd = pgark_command(bin, cluster, repo);
    cmd.args(args);
    pgark_testkit::pg::run_capture(&mut cmd, None, std::time::Duration::from_secs(600)).expect("pgark runs")
}

/// `pg_amcheck --heapallindexed` over every database of the running
/// `cluster` (amcheck installed where missing): every table and B-tree
/// index is whole and every heap tuple is in its indexes.
pub fn amcheck(cluster: &PgCluster) {
    let mut cmd = cluster.client_command("pg_amcheck");
    cmd.args(["--install-missing", "--heapallindexed", "--all"]);
    let out = run_capture(&mut cmd, None, Duration::from_secs(600)).unwrap();
    assert!(
        out.status.success(),
        "pg_amcheck: {}{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A small xorshift generator for tests that kill commands at random
/// points, seeded from the clock; the seed is printed, and setting
/// PGARK_TEST_SEED repeats a run.
pub fn seeded_rng() -> impl FnMut() -> u64 {
    let seed = std::env::var("PGARK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("PGARK_TEST_SEED={seed}");
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Removes from a local repository the archived segment before the
/// newest one of `newest`'s directory (a gap in the middle of the
/// archive); returns its name.
pub fn remove_segment_before_newest(repo: &Path, newest: &str) -> String {
    let seg_dir = repo.join("wal").join(&newest[..16]);
    let mut segments: Vec<String> = std::fs::read_dir(&seg_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| is_segment_name(n))
        .collect();
    segments.sort();
    let gone = segments[segments.len() - 2].clone();
    std::fs::remove_file(seg_dir.join(&gone)).unwrap();
    gone
}

/// The processes whose command line holds `flag` (a background process's
/// hidden flag) and whose working directory is in `data` (PostgreSQL runs
/// archive_command and restore_command in its data directory).
pub fn background_processes(flag: &str, data: &Path) -> Vec<i32> {
    let canonical = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        let in_data = cwd.starts_with(&canonical) || cwd.starts_with(data);
        if in_data && String::from_utf8_lossy(&cmdline).contains(flag) {
            pids.push(pid);
        }
    }
    pids
}
