//! WAL archiving end to end with a real PostgreSQL: archive_command runs
//! `pgark wal-push`, restore_command runs `pgark wal-fetch`.

use crate::common::*;
use pgark_testkit::pg::{
    expose_binary, run_checked, scratch_dir, shell_quote, ClusterOptions, PgCluster, PgInstall,
};
use std::path::Path;
use std::time::Duration;

fn archiving_cluster(bin: &Path, repo: &Path, extra: &str) -> PgCluster {
    let command = format!("{} wal-push --repo {} %p{extra}", quote(bin), quote(repo));
    let opts = ClusterOptions::new(PgInstall::detect().expect("PostgreSQL is installed"))
        .with_archive_command(command);
    PgCluster::start_new(opts).expect("start a cluster")
}

fn quote(p: &Path) -> String {
    shell_quote(&p.to_string_lossy())
}

/// Waits until PostgreSQL reports `segment` archived.
fn wait_archived(cluster: &PgCluster, segment: &str) {
    cluster
        .wait_for(
            &format!("{segment} to be archived"),
            Duration::from_secs(120),
            || {
                let last = cluster
                    .psql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
                    .unwrap();
                !last.is_empty() && last.as_str() >= segment
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tail(30)));
}

#[test]
fn archives_every_segment_under_load_and_fetches_each_back() {
    let bin = expose_binary(&pgark_bin());
    let repo = scratch_dir("repo");
    let copies = scratch_dir("copies");
    // A second copy of each segment, taken only after pgark succeeded, is
    // what the archive must reproduce byte for byte.
    let extra = format!(" && cp %p {}/%f", quote(copies.path()));
    let cluster = archiving_cluster(&bin, repo.path(), &extra);
    cluster.pgbench(&["-i", "-s", "3", "-q"]).unwrap();
    cluster.pgbench(&["-c", "2", "-t", "300"]).unwrap();
    cluster.psql("select pg_switch_wal()").unwrap();
    cluster.pgbench(&["-c", "2", "-t", "100"]).unwrap();
    let last = cluster
        .psql("select pg_walfile_name(pg_current_wal_lsn())")
        .unwrap();
    cluster.psql("select pg_switch_wal()").unwrap();
    wait_archived(&cluster, &last);
    assert_eq!(
        cluster.psql("select failed_count from pg_stat_archiver").unwrap(),
        "0",
        "{}",
        cluster.log_tail(30)
    );

    let archived: Vec<String> = files_below(copies.path());
    assert!(archived.len() >= 4, "only {archived:?} archived");
    let stored: Vec<String> = files_below(repo.path())
        .into_iter()
        .filter_map(|k| {
            k.strip_prefix("wal/")
                .map(|r| r.rsplit('/').next().unwrap().to_string())
        })
        .collect();
    for name in &archived {
        assert!(
            stored.contains(name),
            "{name} was archived but is not in the repository"
        );
    }
    let fetched = tempfile::tempdir().unwrap();
    for name in &archived {
        let dest = fetched.path().join(name);
        let out = run(repo.path(), &["wal-fetch", name, dest.to_str().unwrap()]);
        assert_code(&out, 0);
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(copies.path().join(name)).unwrap(),
            "{name}: fetched bytes differ from what PostgreSQL archived"
        );
    }
}

#[test]
fn recovery_replays_archived_wal_through_wal_fetch() {
    let bin = expose_binary(&pgark_bin());
    let repo = scratch_dir("repo");
    let primary = archiving_cluster(&bin, repo.path(), "");
    primary
        .psql("create table t (id int primary key, v text)")
        .unwrap();
    primary
        .psql("insert into t select g, md5(g::text) from generate_series(1, 1000) g")
        .unwrap();

    // A file-level copy without WAL: recovery must fetch every record it
    // needs from the archive.
    let backup = scratch_dir("basebackup");
    let data = backup.path().join("data");
    let mut basebackup = primary.client_command("pg_basebackup");
    basebackup.arg("-D").arg(&data).args(["-X", "none", "-c", "fast"]);
    run_checked(&mut basebackup, None, Duration::from_secs(300)).unwrap();

    primary
        .psql("insert into t select g, md5(g::text) from generate_series(1001, 50000) g")
        .unwrap();
    primary.pgbench(&["-i", "-s", "1", "-q"]).unwrap();
    primary
        .psql("update t set v = 'changed' where id % 7 = 0")
        .unwrap();
    let expected = primary
        .psql("select count(*) || ':' || md5(string_agg(v, ',' order by id)) from t")
        .unwrap();
    let last = primary
        .psql("select pg_walfile_name(pg_current_wal_lsn())")
        .unwrap();
    primary.psql("select pg_switch_wal()").unwrap();
    wait_archived(&primary, &last);
    primary.stop().unwrap();

    let restored = PgCluster::from_data_dir(primary.install(), &data).unwrap();
    restored.set_archive_command(None).unwrap();
    restored
        .set_restore_command(&format!(
            "{} wal-fetch --repo {} %f %p",
            quote(&bin),
            quote(repo.path())
        ))
        .unwrap();
    restored.create_recovery_signal().unwrap();
    restored.start().unwrap();
    restored
        .wait_for("recovery to finish", Duration::from_secs(120), || {
            restored
                .psql("select pg_is_in_recovery()")
                .map(|r| r == "f")
                .unwrap_or(false)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", restored.log_tail(40)));
    let got = restored
        .psql("select count(*) || ':' || md5(string_agg(v, ',' order by id)) from t")
        .unwrap();
    assert_eq!(got, expected, "restored data differs");
    assert_eq!(
        restored.psql("select count(*) from pgbench_accounts").unwrap(),
        "100000"
    );
}
