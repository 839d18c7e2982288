//! `pgark verify` against a real repository: whole backups verify; a
//! flipped byte in one part is found and named while the other backups
//! still verify; a WAL segment missing from the middle of the archive is
//! named, with how far each backup can restore.

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
    let seg_dir = src.repo.path().join("wal").join(&newest[..16]);
    let mut segments: Vec<String> = std::fs::read_dir(&seg_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| is_segment_name(n))
        .collect();
    segments.sort();
    let gone = segments[segments.len() - 2].clone();
    std::fs::remove_file(seg_dir.join(&gone)).unwrap();
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
