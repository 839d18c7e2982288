//! `pgark status` against a real cluster archiving into its repository:
//! the recovery window's end is the commit time of the last transaction
//! archived (read from the WAL), its start the end of the oldest backup;
//! healthy while archiving keeps up, not healthy (exit 12, the segment
//! named) with a segment missing from the middle of the archive or an
//! archive that stopped; the Prometheus output parses.

use crate::common::*;
use chrono::{DateTime, Utc};

fn status(src: &ArchivingCluster, args: &[&str]) -> (std::process::Output, serde_json::Value) {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let out = src.pgark(&all);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, json)
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

/// Each sample line of the Prometheus text format: `name value`, names as
/// the format allows, values that parse; every metric has HELP and TYPE.
fn parse_prometheus(text: &str) -> std::collections::HashMap<String, f64> {
    let mut samples = std::collections::HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["gauge", "counter"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (name, value) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(
            !name.is_empty()
                && name.chars().next().unwrap().is_ascii_alphabetic()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name {name:?}"
        );
        assert!(typed.contains(name), "{name} has no TYPE line");
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(name.to_string(), v);
    }
    samples
}

#[test]
fn status_tells_the_recovery_window_and_archiving_health() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.psql("create table t (id bigserial primary key, v text)")
        .unwrap();
    c.psql("insert into t (v) select 'x' from generate_series(1, 1000)")
        .unwrap();
    let name = src.backup_push(&[]);
    c.psql("insert into t (v) select 'y' from generate_series(1, 1000)")
        .unwrap();
    // The last transaction: its commit time as the server saw it (within
    // the statement; the commit record is written just after).
    let before_commit: DateTime<Utc> = c
        .psql("insert into t (v) values ('last') returning to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        .unwrap()
        .parse()
        .unwrap();
    src.archive_current_wal();
    assert_code(&src.pgark(&["verify"]), 0);

    let (out, json) = status(&src, &[]);
    assert_code(&out, 0);
    assert_eq!(json["walArchivingHealthy"], true, "{json}");
    assert_eq!(json["lastVerify"]["whole"], true, "{json}");
    assert_eq!(json["lastVerify"]["target"], "latest", "{json}");
    assert_eq!(json["backupCount"], 1, "{json}");
    assert_eq!(json["lastBackupName"], name.as_str(), "{json}");
    let end = time(&json["recoveryWindowEnd"]);
    let lag = (end - before_commit).num_milliseconds();
    assert!(
        (0..1000).contains(&lag),
        "window end {end}, last commit at {before_commit} ({json})"
    );
    // The window starts where the backup ended (the server's clock).
    let listed = src.backup_list();
    let stop = listed[0]["server_stop_time"]
        .as_str()
        .or(listed[0]["finish_time"].as_str())
        .unwrap_or_else(|| panic!("{listed:?}"))
        .parse::<DateTime<Utc>>()
        .unwrap();
    let start = time(&json["recoveryWindowStart"]);
    assert!((start - stop).num_seconds().abs() <= 1, "{start} vs {stop}");
    assert!(json["archiver"]["failedCount"] == 0, "{json}");

    // Prometheus output parses, with the same figures.
    let out = src.pgark(&["status", "--format", "prometheus"]);
    assert_code(&out, 0);
    let samples = parse_prometheus(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(samples["pgark_wal_archive_healthy"], 1.0);
    assert_eq!(samples["pgark_backup_count"], 1.0);
    assert_eq!(
        samples["pgark_recovery_window_end_timestamp_seconds"].round() as i64,
        end.timestamp_micros().div_euclid(1_000_000) + i64::from(end.timestamp_subsec_micros() >= 500_000)
    );
    assert!(samples["pgark_repository_bytes"] > 0.0);
    assert_eq!(samples["pgark_last_verify_success"], 1.0);

    // The newest archived segment damaged in the repository: said, and
    // not healthy.
    let newest = json_str(&json["walContiguousTo"]);
    let stored = src.repo.path().join("wal").join(&newest[..16]).join(&newest);
    let original = std::fs::read(&stored).unwrap();
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    std::fs::write(&stored, &flipped).unwrap();
    let (out, damaged) = status(&src, &[]);
    assert_code(&out, 12);
    assert!(
        damaged["problems"]
            .to_string()
            .contains(&format!("{newest} (wal/")),
        "{damaged}"
    );
    std::fs::write(&stored, &original).unwrap();

    // An archive that stopped: the newest segment is older than the limit
    // and the server has a segment it did not archive.
    c.psql("insert into t (v) values ('unarchived')").unwrap();
    c.psql("alter system set archive_command = 'false'").unwrap();
    c.psql("select pg_reload_conf()").unwrap();
    c.switch_wal().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (out, json) = status(&src, &["--max-archive-age", "1s"]);
    assert_code(&out, 12);
    assert_eq!(json["walArchivingHealthy"], false, "{json}");
    assert!(json["problems"].to_string().contains("arrived"), "{json}");
    assert!(stderr(&out).contains("not healthy"), "{}", stderr(&out));
    assert_code(&src.pgark(&["status", "--max-archive-age", "1s", "--no-fail"]), 0);
    c.psql("alter system reset archive_command").unwrap();
    c.psql("select pg_reload_conf()").unwrap();
    src.archive_current_wal();

    // A segment missing from the middle of the archive: named.
    for _ in 0..2 {
        c.psql("insert into t (v) values ('more')").unwrap();
        src.archive_current_wal();
    }
    let newest = json_str(&status(&src, &[]).1["newestArchivedSegment"]);
    let gone = remove_segment_before_newest(src.repo.path(), &newest);
    let (out, json) = status(&src, &[]);
    assert_code(&out, 12);
    assert_eq!(json["firstWalGap"], gone.as_str(), "{json}");
    assert!(json["problems"].to_string().contains(&gone), "{json}");
    // The window now ends before the gap.
    assert!(time(&json["recoveryWindowEnd"]) < Utc::now());
    assert!(
        json["walContiguousTo"].as_str().unwrap() < gone.as_str(),
        "{json}"
    );

    // Archiving that succeeds, but not into this repository (a command
    // left pointing elsewhere): the server has nothing waiting, yet the
    // repository gets nothing. Not healthy.
    c.psql("alter system set archive_command = '/bin/true'").unwrap();
    c.psql("select pg_reload_conf()").unwrap();
    src.archive_current_wal();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (out, json) = status(&src, &["--max-archive-age", "1s"]);
    assert_code(&out, 12);
    assert_eq!(json["archiver"]["readySegments"], 0, "{json}");
    assert!(json["problems"].to_string().contains("arrived"), "{json}");
}

fn json_str(v: &serde_json::Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// `pgark exporter` serves the status as Prometheus metrics over HTTP,
/// refreshed on its interval: scraped with an HTTP client, the figures
/// parse and follow a new backup.
#[test]
fn exporter_serves_the_status_over_http() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.psql("create table t (id bigserial primary key, v text)")
        .unwrap();
    src.backup_push(&[]);
    src.archive_current_wal();
    let port = pgark_testkit::pg::free_port().unwrap();
    let mut cmd = src.pgark_command_on(c);
    cmd.args([
        "exporter",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--interval",
        "1s",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let scrape = |path: &str| {
        runtime.block_on(async {
            let resp = client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("").to_string())
                .unwrap_or_default();
            let body = resp.text().await?;
            Ok::<_, reqwest::Error>((status, content_type, body))
        })
    };
    // Until the first refresh is in (bounded).
    let wait_for = |what: &str, pred: &dyn Fn(&std::collections::HashMap<String, f64>) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok((200, content_type, body)) = scrape("/metrics") {
                assert!(
                    content_type.starts_with("text/plain; version=0.0.4"),
                    "{content_type}"
                );
                let samples = parse_prometheus(&body);
                if pred(&samples) {
                    return samples;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no scrape showed {what} within 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    };
    let samples = wait_for("a successful refresh", &|s| {
        s.get("pgark_exporter_refresh_success") == Some(&1.0)
    });
    assert_eq!(samples["pgark_backup_count"], 1.0);
    assert_eq!(samples["pgark_wal_archive_healthy"], 1.0);
    // A new backup shows in a later refresh.
    src.backup_push(&[]);
    wait_for("the second backup", &|s| {
        s.get("pgark_backup_count") == Some(&2.0)
    });
    let (status, _, _) = scrape("/other").unwrap();
    assert_eq!(status, 404);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Every time in `text`, as RFC 3339 (`2026-12-03T10:11:12` and what
/// follows it up to a space, `)` or `,`).
fn times_in(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    let mut out = Vec::new();
    let mut i = 0;
    while i + shape.len() <= b.len() {
        let fits = shape
            .iter()
            .zip(&b[i..])
            .all(|(s, c)| if *s == b'd' { c.is_ascii_digit() } else { s == c });
        if !fits {
            i += 1;
            continue;
        }
        let end = b[i..]
            .iter()
            .position(|c| c.is_ascii_whitespace() || *c == b')' || *c == b',')
            .map_or(b.len(), |n| i + n);
        out.push(text[i..end].to_string());
        i = end;
    }
    out
}

/// The text output gives every time to the second, in UTC
/// (`2026-12-03T10:11:12Z`), as backup-list does; --json keeps the times
/// as they were.
#[test]
fn status_text_prints_times_to_the_second() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.psql("create table t (v text)").unwrap();
    src.backup_push(&[]);
    c.psql("insert into t values ('after the backup')").unwrap();
    src.archive_current_wal();
    assert_code(&src.pgark(&["verify"]), 0);

    let out = src.pgark(&["status"]);
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let times = times_in(&text);
    // The last backup, the window's start and end, the newest segment's
    // arrival, the last verify, the server's last archiving.
    assert_eq!(times.len(), 6, "{times:?} in {text}");
    for t in &times {
        assert!(
            t.len() == "2026-12-03T10:11:12Z".len() && t.ends_with('Z'),
            "{t:?} in {text}"
        );
        t.parse::<DateTime<Utc>>()
            .unwrap_or_else(|e| panic!("{t:?}: {e}"));
    }
    let (out, json) = status(&src, &[]);
    assert_code(&out, 0);
    for field in [
        "lastBackupTime",
        "recoveryWindowStart",
        "recoveryWindowEnd",
        "statusTime",
    ] {
        time(&json[field]);
    }
}

/// A backup after which nothing is committed: the last commit archived is
/// older than the backup's end, and the window is that end alone (never a
/// window that ends before it starts); a commit after it ends the window.
#[test]
fn status_window_of_a_backup_with_nothing_committed_after_it() {
    // No autovacuum: its ANALYZE would commit during or after the backup.
    let src = ArchivingCluster::start("autovacuum = off");
    let c = &src.cluster;
    c.psql("create table t (v text)").unwrap();
    c.psql("insert into t select 'before' from generate_series(1, 1000)")
        .unwrap();
    // backup-push waits until its last segment is archived.
    let name = src.backup_push(&[]);

    let (out, json) = status(&src, &[]);
    assert_code(&out, 0);
    let start = time(&json["recoveryWindowStart"]);
    let end = time(&json["recoveryWindowEnd"]);
    assert_eq!(end, start, "{json}");
    assert_eq!(json["firstRestorableBackup"], name.as_str(), "{json}");
    // The last commit archived is still told as it is: before the backup.
    assert!(time(&json["lastTransaction"]["time"]) < start, "{json}");
    let out = src.pgark(&["status"]);
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!(
            "(the end of backup {name}: nothing committed after it is archived)"
        )),
        "{text}"
    );
    let samples = parse_prometheus(&String::from_utf8_lossy(
        &src.pgark(&["status", "--format", "prometheus"]).stdout,
    ));
    assert_eq!(
        samples["pgark_recovery_window_end_timestamp_seconds"],
        samples["pgark_recovery_window_start_timestamp_seconds"]
    );

    // A commit after the backup, archived: the window ends at it.
    c.psql("insert into t values ('after')").unwrap();
    src.archive_current_wal();
    let (out, json) = status(&src, &[]);
    assert_code(&out, 0);
    assert!(time(&json["recoveryWindowEnd"]) > start, "{json}");
    assert_eq!(
        json["recoveryWindowEnd"], json["lastTransaction"]["time"],
        "{json}"
    );
}
