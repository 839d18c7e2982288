//! `pgark verify` against a real repository: whole backups verify; a
//! flipped byte in one part is found and named while the other backups
//! still verify; a WAL segment missing from the middle of the archive is
//! named, with how far each backup can restore. `verify --wal` reads a
//! backup's own WAL and finds a segment whose record was changed, which
//! the presence check cannot; every run is recorded as `verify/latest`,
//! and backup-list --detail shows it.

use crate::common::*;

fn verify(src: &ArchivingCluster, args: &[&str]) -> (std::process::Output, serde_json::Value) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let out = src.pgark(&all);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, json)
}

#[test]
fn verify_finds_a_damaged_part_and_a_wal_gap() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "1", "-q"]).unwrap();
    let first = src.backup_push(&["--part-size", "4"]);
    c.pgbench(&["-t", "200", "-n"]).unwrap();
    let second = src.backup_push(&["--delta"]);
    for _ in 0..3 {
        c.pgbench(&["-t", "100", "-n"]).unwrap();
        src.archive_current_wal();
    }

    let (out, json) = verify(&src, &["--all"]);
    assert_code(&out, 0);
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
    assert!(
        json.as_array().unwrap().iter().all(|v| v["whole"] == true),
        "{json}"
    );
    assert!(json[1]["wal_gap"].is_null(), "{json}");

    // A WAL segment from the middle of the archive, after both backups.
    let newest = json[1]["wal_reaches"].as_str().unwrap().to_string();
    let gone = remove_segment_before_newest(src.repo.path(), &newest);
    let (out, json) = verify(&src, &[&second]);
    assert_code(&out, 5);
    assert_eq!(json[0]["wal_gap"], gone.as_str(), "{json}");
    assert!(json[0]["problems"].to_string().contains(&gone), "{json}");

    // A flipped byte in the middle of the first backup's first part: the
    // first backup, and the delta that needs it, are damaged, named by part.
    let part = src
        .repo
        .path()
        .join("backups")
        .join(&first)
        .join("part_00001.tar");
    let mut bytes = std::fs::read(&part).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&part, &bytes).unwrap();
    let (out, json) = verify(&src, &[&first]);
    assert_code(&out, 5);
    assert!(
        json[0]["problems"].to_string().contains("part_00001.tar"),
        "{json}"
    );
    assert!(stderr(&out).contains(&first), "{}", stderr(&out));
    // A backup that does not use the damaged part, taken after the WAL gap,
    // verifies.
    let third = src.backup_push(&[]);
    let (out, json) = verify(&src, &[&third]);
    assert_code(&out, 0);
    assert_eq!(json[0]["whole"], true, "{json}");
}

/// The record of the last verify run, decoded from the (unencrypted)
/// repository's `verify/latest`.
fn last_record(src: &ArchivingCluster) -> serde_json::Value {
    let stored = std::fs::read(src.repo.path().join("verify").join("latest")).expect("verify/latest exists");
    let (json, _) = pgark_codec::decode_to_vec(&stored).expect("verify/latest is a pgark object");
    serde_json::from_slice(&json).expect("verify/latest holds JSON")
}

fn listed(src: &ArchivingCluster, name: &str) -> serde_json::Value {
    src.backup_list()
        .into_iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("{name} is listed"))
}

fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

#[test]
fn verify_wal_reads_the_records_of_a_backups_wal_and_the_run_is_recorded() {
    let src = ArchivingCluster::start("");
    let c = &src.cluster;
    c.pgbench(&["-i", "-s", "1", "-q"]).unwrap();
    let name = src.backup_push(&[]);
    c.pgbench(&["-t", "100", "-n"]).unwrap();
    src.archive_current_wal();

    let (out, json) = verify(&src, &["--wal", "LATEST"]);
    assert_code(&out, 0);
    assert_eq!(json[0]["name"], name.as_str(), "{json}");
    assert_eq!(json[0]["whole"], true, "{json}");
    assert!(json[0]["wal_checked_segments"].as_u64().unwrap() >= 1, "{json}");
    let record = last_record(&src);
    assert_eq!(record["outcome"], "whole", "{record}");
    assert_eq!(record["target"], "latest", "{record}");
    assert_eq!(record["wal_level"], true, "{record}");
    assert_eq!(record["backups"][0]["name"], name.as_str(), "{record}");
    assert_eq!(record["backups"][0]["whole"], true, "{record}");
    assert!(record["pgark_version"].is_string(), "{record}");
    assert!(record["time"].as_str().unwrap().ends_with('Z'), "{record}");
    let entry = listed(&src, &name);
    assert_eq!(entry["last_verify"]["whole"], true, "{entry}");
    assert!(entry["last_verify"]["time"].is_string(), "{entry}");
    // Plain verify (no --wal) does not read the WAL's records.
    let (out, json) = verify(&src, &[]);
    assert_code(&out, 0);
    assert!(json[0]["wal_checked_segments"].is_null(), "{json}");
    assert_eq!(last_record(&src)["wal_level"], false);

    // The backup's start segment, with one byte of the record at its start
    // LSN changed, stored again by wal-push in a valid container.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.repo.path().join("repository.json")).unwrap()).unwrap();
    let seg_size = meta["wal_segment_size"].as_u64().unwrap();
    let segment = entry["start_wal_segment"].as_str().unwrap().to_string();
    let start_lsn = parse_lsn(entry["start_lsn"].as_str().unwrap());
    assert!(
        start_lsn < parse_lsn(entry["stop_lsn"].as_str().unwrap()),
        "{entry}"
    );
    let stored_path = src.repo.path().join("wal").join(&segment[..16]).join(&segment);
    let (mut bytes, _) = pgark_codec::decode_to_vec(&std::fs::read(&stored_path).unwrap()).unwrap();
    assert_eq!(bytes.len() as u64, seg_size);
    // 28 bytes in: past the record's 24-byte header and its 2-byte data
    // header, in its main data (the start LSN is where a record starts,
    // after any page header).
    let mut offset = (start_lsn % seg_size) as usize + 28;
    if offset % 8192 < 40 {
        offset += 40;
    }
    bytes[offset] ^= 0x5a;
    let scratch = pgark_testkit::pg::scratch_dir("damaged-wal");
    let damaged = scratch.path().join(&segment);
    std::fs::write(&damaged, &bytes).unwrap();
    std::fs::remove_file(&stored_path).unwrap();
    let out = src.pgark(&["wal-push", damaged.to_str().unwrap()]);
    assert_code(&out, 0);

    // The presence check finds nothing wrong: the object is whole.
    let (out, json) = verify(&src, &["LATEST"]);
    assert_code(&out, 0);
    assert_eq!(json[0]["whole"], true, "{json}");
    // Reading the records does.
    let (out, json) = verify(&src, &["--wal", "LATEST"]);
    assert_code(&out, 5);
    assert_eq!(json[0]["whole"], false, "{json}");
    let problems = json[0]["problems"].to_string();
    assert!(
        problems.contains(&format!("wal/{}/{segment}", &segment[..16])),
        "{json}"
    );
    assert!(problems.contains("stop LSN"), "{json}");
    // The changed byte is in a record's data: its CRC no longer matches.
    assert!(problems.contains("CRC-32C"), "{json}");
    assert!(stderr(&out).contains(&segment), "{}", stderr(&out));
    let record = last_record(&src);
    assert_eq!(record["outcome"], "damaged", "{record}");
    assert_eq!(record["backups"][0]["whole"], false, "{record}");
    assert!(
        record["backups"][0]["problems"].to_string().contains(&segment),
        "{record}"
    );
    let entry = listed(&src, &name);
    assert_eq!(entry["last_verify"]["whole"], false, "{entry}");

    // A backup the last run did not check shows no verify.
    let newer = src.backup_push(&[]);
    assert!(listed(&src, &newer)["last_verify"].is_null());

    // delete goes by backups/ and wal/: verify/latest stays, and listing
    // still works beside it.
    let out = src.pgark(&["delete", &name, "--confirm"]);
    assert_code(&out, 0);
    assert_eq!(last_record(&src)["outcome"], "damaged");
    let names: Vec<serde_json::Value> = src.backup_list().into_iter().map(|b| b["name"].clone()).collect();
    assert_eq!(names, vec![serde_json::Value::from(newer.as_str())]);
}
