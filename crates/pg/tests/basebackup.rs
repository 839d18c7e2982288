//! The backup-related parts of pgark-pg against a real base backup: `pg_basebackup` of a
//! running cluster (the newest installed PostgreSQL, or `$PGARK_TEST_PGBIN`), then
//!
//! - the files it copied are exactly those `layout` says a backup copies;
//! - its `backup_label` and `global/pg_control` parse, and agree with its manifest;
//! - a manifest rebuilt with `BackupManifestWriter` from the files on disk, checksums
//!   computed here, is byte for byte PostgreSQL's (given its file order and times), and
//!   `pg_verifybackup` accepts one written from a plain directory walk, and notices a
//!   damaged file.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use pgark_pg::layout::{unlogged_relations, wal_subdirectories, BackupFilter, PathClass};
use pgark_pg::{
    BackupLabel, BackupManifestWriter, ChecksumAlgorithm, ChecksumContext, ControlFile, FileChecksum, Lsn,
    ManifestVersion, TimelineId, WalRange,
};
use pgark_testkit::pg::{chown_to_pg_user, run_capture, run_checked, ClusterOptions, PgCluster, PgInstall};

const TIMEOUT: Duration = Duration::from_secs(300);

/// `rel/name` as bytes (paths in a data directory need not be UTF-8).
fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        [rel, b"/", name].concat()
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every regular file and directory below `root`, relative, as bytes.
fn walk_all(root: &Path, rel: &[u8], files: &mut BTreeSet<Vec<u8>>, dirs: &mut BTreeSet<Vec<u8>>) {
    for entry in fs::read_dir(root.join(OsStr::from_bytes(rel))).unwrap() {
        let entry = entry.unwrap();
        let path = join(rel, entry.file_name().as_bytes());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            dirs.insert(path.clone());
            walk_all(root, &path, files, dirs);
        } else if kind.is_file() {
            files.insert(path);
        }
    }
}

/// What `layout` says a backup of `root` holds: walks it, classifying each directory's
/// entries with the directory's unlogged relations, not descending where the class says
/// not to.
fn walk_classified(
    filter: &BackupFilter,
    root: &Path,
    rel: &[u8],
    files: &mut BTreeSet<Vec<u8>>,
    dirs: &mut BTreeSet<Vec<u8>>,
) {
    let entries: Vec<_> = fs::read_dir(root.join(OsStr::from_bytes(rel)))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let names: Vec<String> = entries.iter().map(|e| lossy(e.file_name().as_bytes())).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let unlogged = unlogged_relations(&name_refs);
    for entry in &entries {
        let path = join(rel, entry.file_name().as_bytes());
        let is_dir = entry.file_type().unwrap().is_dir();
        match filter.classify(&lossy(&path), is_dir, &unlogged) {
            PathClass::Exclude => {}
            PathClass::ExcludeContents => {
                dirs.insert(path);
            }
            PathClass::Include if is_dir => {
                dirs.insert(path.clone());
                walk_classified(filter, root, &path, files, dirs);
            }
            PathClass::Include => {
                files.insert(path);
            }
        }
    }
}

fn checksum_of(path: &Path, algorithm: ChecksumAlgorithm) -> FileChecksum {
    let mut ctx = ChecksumContext::new(algorithm);
    // Fed in uneven pieces, as a streaming copy would.
    let data = fs::read(path).unwrap();
    for piece in data.chunks(65_521) {
        ctx.update(piece);
    }
    ctx.finish()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A manifest's (path, last-modified text) pairs and WAL ranges, in its order, and the
/// whole document.
type Entries = (Vec<(Vec<u8>, String)>, Vec<WalRange>, serde_json::Value);

fn manifest_entries(text: &str) -> Entries {
    let json: serde_json::Value = serde_json::from_str(text).unwrap();
    let files = json["Files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let path = match f.get("Path") {
                Some(p) => p.as_str().unwrap().as_bytes().to_vec(),
                None => unhex(f["Encoded-Path"].as_str().unwrap()),
            };
            (path, f["Last-Modified"].as_str().unwrap().to_owned())
        })
        .collect();
    let ranges = json["WAL-Ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| WalRange {
            timeline: TimelineId(r["Timeline"].as_u64().unwrap() as u32),
            start: r["Start-LSN"].as_str().unwrap().parse().unwrap(),
            end: r["End-LSN"].as_str().unwrap().parse().unwrap(),
        })
        .collect();
    (files, ranges, json)
}

/// Seconds since 1970 of `YYYY-MM-DD HH:MM:SS GMT`.
fn parse_gmt(text: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap();
    let (year, month, day) = (n(0..4), n(5..7), n(8..10));
    // Days from 1970-01-01 (the inverse of the civil calendar, March-based years).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

fn verifybackup(cluster: &PgCluster, dir: &Path) -> std::process::Output {
    let mut cmd = cluster.install().command("pg_verifybackup");
    cmd.arg("-n").arg(dir);
    run_capture(&mut cmd, None, TIMEOUT).unwrap()
}

fn write_as_pg_user(path: &Path, contents: &[u8]) {
    fs::write(path, contents).unwrap();
    chown_to_pg_user(path).unwrap();
}

#[test]
fn real_base_backup() {
    let install = PgInstall::detect().expect("PostgreSQL is installed");
    let cluster =
        PgCluster::start_new(ClusterOptions::new(install.clone()).with_data_checksums(true)).unwrap();
    cluster
        .psql(
            "create table t as select g, md5(g::text) as m from generate_series(1, 20000) g;
             create index on t (g);
             create unlogged table u as select g from generate_series(1, 1000) g;
             checkpoint;",
        )
        .unwrap();
    let db_oid = cluster
        .psql("select oid from pg_database where datname = 'postgres'")
        .unwrap();
    let unlogged_node = cluster
        .psql("select relfilenode from pg_class where relname = 'u'")
        .unwrap();

    // Strays that exercise the exclusion rules and the manifest's escaping.
    let data = cluster.data_dir().to_path_buf();
    let db_dir = data.join("base").join(&db_oid);
    write_as_pg_user(&db_dir.join("t3_99999"), &[0; 8192]); // a temporary relation
    write_as_pg_user(&db_dir.join("t3_99999_fsm"), &[0; 8192]);
    let tmp_dir = data.join("base/pgsql_tmp");
    fs::create_dir_all(&tmp_dir).unwrap();
    chown_to_pg_user(&tmp_dir).unwrap();
    write_as_pg_user(&tmp_dir.join("pgsql_tmp1234.0"), b"spill");
    write_as_pg_user(&data.join("backup_label.old"), b"kept\n");
    write_as_pg_user(&data.join("current_logfiles.tmp"), b"dropped\n");
    write_as_pg_user(&data.join("pg_notify/stray"), b"dropped");
    write_as_pg_user(&data.join("we\"ird\\name"), b"quote");
    write_as_pg_user(&data.join("ctl\u{1}x\ttab"), b"ctl");
    write_as_pg_user(&data.join(OsStr::from_bytes(b"caf\xe9")), b"latin1");

    let backup = cluster.make_subdir("backup").unwrap();
    let mut cmd = cluster.client_command("pg_basebackup");
    cmd.arg("-D")
        .arg(&backup)
        .args(["-Fp", "-X", "none", "-c", "fast", "--manifest-checksums=CRC32C"]);
    run_checked(&mut cmd, None, TIMEOUT).unwrap();

    // The control file and the label, and what they say about each other.
    let control = ControlFile::parse(&fs::read(backup.join("global/pg_control")).unwrap()).unwrap();
    let major = control.pg_major().expect("a known major version");
    assert_eq!(major, install.major);
    assert!(control.data_checksums());
    let label = BackupLabel::parse(&fs::read_to_string(backup.join("backup_label")).unwrap()).unwrap();
    label.check_segment_size(control.wal_segment_size).unwrap();
    assert!(control.checkpoint >= label.checkpoint_lsn);
    assert_eq!(label.label, "pg_basebackup base backup");

    // 1. The files: those the layout rules keep, no more, no fewer.
    let filter = if major <= 14 {
        BackupFilter::new().with_stats_temp_directory("pg_stat_tmp")
    } else {
        BackupFilter::new()
    };
    let (mut want_files, mut want_dirs) = (BTreeSet::new(), BTreeSet::new());
    walk_classified(&filter, &data, b"", &mut want_files, &mut want_dirs);
    for dir in wal_subdirectories(major) {
        want_dirs.insert(dir.as_bytes().to_vec());
    }
    let (mut got_files, mut got_dirs) = (BTreeSet::new(), BTreeSet::new());
    walk_all(&backup, b"", &mut got_files, &mut got_dirs);
    for added in ["backup_label", "backup_manifest"] {
        assert!(got_files.remove(added.as_bytes()), "{added}");
    }
    let show = |set: &BTreeSet<Vec<u8>>| set.iter().map(|p| lossy(p)).collect::<Vec<_>>();
    assert_eq!(show(&got_files), show(&want_files), "files");
    assert_eq!(show(&got_dirs), show(&want_dirs), "directories");
    let db_rel = format!("base/{db_oid}");
    for (path, present) in [
        (format!("{db_rel}/{unlogged_node}_init"), true),
        (format!("{db_rel}/{unlogged_node}"), false),
        (format!("{db_rel}/t3_99999"), false),
        ("backup_label.old".to_owned(), true),
        ("current_logfiles.tmp".to_owned(), false),
        ("pg_notify/stray".to_owned(), false),
        ("base/pgsql_tmp/pgsql_tmp1234.0".to_owned(), false),
    ] {
        assert_eq!(got_files.contains(path.as_bytes()), present, "{path}");
    }

    // 2. The manifest, rebuilt in PostgreSQL's order with its times, checksums computed
    //    here from the files: byte for byte PostgreSQL's.
    let original = fs::read_to_string(backup.join("backup_manifest")).unwrap();
    let (entries, ranges, json) = manifest_entries(&original);
    assert_eq!(ranges[0].start, label.start_lsn);
    assert_eq!(ranges[0].timeline, label.start_timeline);
    assert!(ranges[0].end > Lsn(label.start_lsn.0));
    let version = ManifestVersion::for_pg_major(major, control.system_identifier);
    if let ManifestVersion::V2 { system_identifier } = version {
        assert_eq!(json["System-Identifier"].as_u64(), Some(system_identifier));
    }
    let mut writer = BackupManifestWriter::new(version);
    let mut rebuilt = String::new();
    for (i, (path, modified)) in entries.iter().enumerate() {
        let file = backup.join(OsStr::from_bytes(path));
        let size = fs::metadata(&file).unwrap().len();
        let checksum = checksum_of(&file, ChecksumAlgorithm::Crc32c);
        writer
            .add_file(path, size, parse_gmt(modified), Some(&checksum))
            .unwrap();
        if i % 100 == 0 {
            rebuilt.push_str(&writer.take_output());
        }
    }
    for &range in &ranges {
        writer.add_wal_range(range);
    }
    rebuilt.push_str(&writer.finish());
    assert_eq!(rebuilt, original);
    assert_eq!(
        entries.len(),
        got_files.len() + 1,
        "every file but backup_manifest is listed"
    );

    // 3. A manifest written from a plain walk of the directory (its own order, the files'
    //    times, SHA-256 this time) passes pg_verifybackup.
    let listed: HashSet<&Vec<u8>> = entries.iter().map(|(p, _)| p).collect();
    let mut writer = BackupManifestWriter::new(version);
    let mut all = BTreeSet::new();
    walk_all(&backup, b"", &mut all, &mut BTreeSet::new());
    for path in all.iter().rev().filter(|p| p.as_slice() != b"backup_manifest") {
        assert!(listed.contains(path), "{}", lossy(path));
        let file = backup.join(OsStr::from_bytes(path));
        let meta = fs::metadata(&file).unwrap();
        let checksum = checksum_of(&file, ChecksumAlgorithm::Sha256);
        writer
            .add_file(path, meta.len(), meta.mtime(), Some(&checksum))
            .unwrap();
    }
    for &range in &ranges {
        writer.add_wal_range(range);
    }
    let ours = writer.finish();
    assert_ne!(ours, original);
    write_as_pg_user(&backup.join("backup_manifest"), ours.as_bytes());
    let out = verifybackup(&cluster, &backup);
    assert!(
        out.status.success(),
        "pg_verifybackup rejected our manifest: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // And it does check what we wrote: a damaged file is noticed.
    let victim = backup.join("PG_VERSION");
    let mut bytes = fs::read(&victim).unwrap();
    bytes[0] ^= 1;
    fs::write(&victim, &bytes).unwrap();
    let out = verifybackup(&cluster, &backup);
    assert!(!out.status.success(), "pg_verifybackup missed a damaged file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
}
