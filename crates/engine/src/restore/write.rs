//! Stage 5 of a restore: parts downloaded, verified and extracted. Each
//! part's tar stream is read through the verifying decoder; each entry goes
//! where the plan says (a whole file, a piece at its offset, an increment or
//! base of a chain file); each file is checked against its manifest entry
//! (size, CRC-32C), and each part's digest against the one its manifest
//! recorded when the backup was taken.
//!
//! What a failure leaves: the files written so far (the caller empties the
//! directories of a failed restore, or leaves a failed delta restore
//! without pg_control).

use super::chain::{apply_base, apply_increment};
use super::plan::{restored_entry, Action, Plan};
use super::workers::Workers;
use super::BackupFetchOptions;
use crate::pipe::{decode_object, ChannelReader};
use crate::EngineError;
use pgark_catalog::{BackupName, FileEntry, PartEntry};
use pgark_codec::ObjectReader;
use pgark_store::{Key, ObjectStore};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Downloads `part` of `name` (chain level `level`) and extracts it; the
/// digest the object's trailer verified must be the one the manifest
/// recorded for the part (a part of another backup, or an object replaced
/// in the repository, is refused even when its own checksums hold).
///
/// A transient failure (the download broken off halfway, throttling) reads
/// the part again from its start, as `opts.retry` allows: the entries
/// restored before the failure are skipped, and the entry it interrupted is
/// restored again from its beginning, which gives the same result (whole
/// files and pieces are rewritten; increments and bases keep the pages they
/// wrote and write the rest, see `pgark_delta`'s restore contracts).
///
/// The part is extracted by a worker of `workers`: counted from before it
/// is spawned until it returns, it stops before its next entry or chunk
/// once they are told to stop (see `workers`).
pub(super) async fn restore_part(
    store: &Arc<dyn ObjectStore>,
    opts: &BackupFetchOptions,
    plan: &Arc<Plan>,
    workers: &Workers,
    name: &BackupName,
    part: &PartEntry,
    level: usize,
) -> Result<(), EngineError> {
    let index = part.index;
    let key = name.part_key(index);
    let expected = part.digest.clone();
    let done: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    opts.retry
        .run(&format!("restore of part {index} of backup {name}"), || {
            let (key, plan, done, expected) = (key.clone(), plan.clone(), done.clone(), expected.clone());
            let workers = workers.clone();
            async move {
                let enlisted = workers.enlist();
                decode_object(
                    &**store,
                    &key.clone(),
                    opts.keys.data_key.as_ref(),
                    move |reader| {
                        let _enlisted = enlisted;
                        workers.check()?;
                        extract(&key, reader, &plan, level, &done, &workers)?;
                        check_digest(&key, reader, &expected).inspect_err(|_| discard(&plan, &done))
                    },
                )
                .await
            }
        })
        .await
        .map_err(|e| missing_part(e, name, index))
}

/// A part that is not in the repository: the backup is incomplete, which
/// is "not found", not a repository failure.
fn missing_part(e: EngineError, name: &BackupName, index: u32) -> EngineError {
    match e {
        EngineError::Store { source } if source.is_not_found() => EngineError::NotFound {
            what: format!("part {index} of backup {name}"),
            key: name.part_key(index).to_string(),
        },
        other => other,
    }
}

/// Removes what was written from a part whose digest is not the
/// manifest's: its files passed their CRC-32C, which a forged part can
/// satisfy, so none of them may stay (a `--delta` restore run again would
/// keep them as matching).
fn discard(plan: &Plan, done: &Mutex<std::collections::HashSet<String>>) {
    let key = Key::new("backups").expect("a valid key");
    for rel in done.lock().expect("lock").iter() {
        let file = match rel.rsplit_once(pgark_catalog::PIECE_SUFFIX) {
            Some((file, _)) => file,
            None => rel.strip_suffix(".pgark-delta").unwrap_or(rel),
        };
        let file = if file == "global/pg_control" {
            PG_CONTROL_ASIDE
        } else {
            file
        };
        if let Ok(path) = plan.target(file, &key) {
            if path.is_file() {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Compares the digest the decoder verified (the object's trailer) with
/// the one the manifest recorded: `<algorithm>:<hex>`, or bare SHA-256
/// hex in manifests of format 1.
fn check_digest(key: &Key, reader: &ObjectReader<ChannelReader>, expected: &str) -> Result<(), EngineError> {
    let got = reader
        .summary()
        .ok_or_else(|| EngineError::Internal(format!("{key}: decoder ended without verification")))?
        .digest
        .to_string();
    if same_digest(&got, expected) {
        return Ok(());
    }
    Err(integrity(
        key,
        format!(
            "the part holds other content than the backup's manifest records (digest {got}, manifest {expected}): \
             the object was replaced or belongs to another backup"
        ),
    ))
}

/// Whether two recorded digests are the same (`sha256:<hex>` and bare
/// `<hex>` name the same SHA-256 digest).
pub(crate) fn same_digest(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim().to_ascii_lowercase();
        if s.contains(':') {
            s
        } else {
            format!("sha256:{s}")
        }
    };
    norm(a) == norm(b)
}

pub(super) fn integrity(key: &Key, msg: String) -> EngineError {
    EngineError::Integrity {
        key: key.to_string(),
        source: pgark_codec::CodecError::Io(std::io::Error::other(msg)),
    }
}

/// Extracts one part's tar stream, checking each file against the manifest.
/// Entries in `done` (restored by an earlier attempt at this part) are
/// skipped; each entry restored is added to it. Every chunk is read
/// through `workers`' stop check, and each entry starts with it.
fn extract(
    key: &Key,
    reader: &mut ObjectReader<ChannelReader>,
    plan: &Plan,
    level: usize,
    done: &Mutex<std::collections::HashSet<String>>,
    workers: &Workers,
) -> Result<(), EngineError> {
    let mut archive = tar::Archive::new(workers.reader(reader));
    let entries = archive
        .entries()
        .map_err(|e| integrity(key, format!("not a tar stream: {e}")))?;
    let mut buf = vec![0u8; 256 << 10];
    let delay = entry_delay();
    for entry in entries {
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        workers.check()?;
        let mut entry = entry.map_err(|e| read_error(key, e))?;
        let rel = entry
            .path()
            .map_err(|e| integrity(key, e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let rel = rel.trim_end_matches('/').to_string();
        if done.lock().expect("lock").contains(&rel) {
            continue;
        }
        let target = plan.target(&rel, key)?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                match plan.levels[level].actions.get(&rel) {
                    Some(Action::Dir) => {}
                    Some(_) | None if level > 0 => continue,
                    _ => return Err(integrity(key, format!("directory {rel} is not in the manifest"))),
                }
                std::fs::create_dir_all(&target)
                    .map_err(|e| EngineError::local_io("cannot create", &target, e))?;
                let mode = entry.header().mode().unwrap_or(0o700);
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| EngineError::local_io("cannot chmod", &target, e))?;
            }
            tar::EntryType::Regular => {
                let action = *plan.levels[level]
                    .actions
                    .get(&rel)
                    .ok_or_else(|| integrity(key, format!("{rel} is not in the manifest")))?;
                let len = match action {
                    Action::Dir => {
                        return Err(integrity(key, format!("{rel} is a directory in the manifest")))
                    }
                    Action::Skip => continue,
                    Action::Whole(i) => {
                        let fp = &plan.files[i];
                        let expected = restored_entry(fp);
                        let target = plan.target(&expected.path, key)?;
                        create_parent(&target)?;
                        let len = restore_file(key, &mut entry, &expected, &target, &mut buf)?;
                        plan.restored.lock().expect("lock").push(expected.path.clone());
                        len
                    }
                    Action::Piece(i, number) => {
                        let expected = restored_entry(&plan.files[i]);
                        let target = plan.target(&expected.path, key)?;
                        create_parent(&target)?;
                        restore_piece(key, &mut entry, &expected, i, number, &target, &mut buf, plan)?
                    }
                    Action::Increment(i) => apply_increment(key, &mut entry, plan, i)?,
                    Action::BaseWhole(i) => apply_base(key, &mut entry, plan, i, 0)?,
                    Action::BasePiece(i, number) => {
                        let offset = plan.files[i].base.pieces[number].offset;
                        apply_base(key, &mut entry, plan, i, offset)?
                    }
                };
                if let Some(p) = &plan.progress {
                    p.advance(len);
                }
            }
            other => {
                return Err(integrity(
                    key,
                    format!("{rel}: unexpected tar entry type {other:?}"),
                ))
            }
        }
        done.lock().expect("lock").insert(rel);
    }
    // Read to the end so the object's trailer (length, checksum) is verified.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(|e| read_error(key, e))?;
    Ok(())
}

/// A pause before each tar entry, from `PGARK_TEST_RESTORE_ENTRY_DELAY_MS`
/// (at most 1000 ms): a test hook that makes a small restore last long
/// enough to be interrupted while it writes. Unset in any real use.
fn entry_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        let ms: u64 = std::env::var("PGARK_TEST_RESTORE_ENTRY_DELAY_MS")
            .ok()?
            .parse()
            .ok()?;
        (ms > 0).then(|| std::time::Duration::from_millis(ms.min(1000)))
    })
}

/// Restores one whole file from its tar entry: written, checked against
/// the manifest (size, CRC-32C), given its mode and mtime. pg_control is
/// written aside ([`PG_CONTROL_ASIDE`], fsynced) and left there: it makes
/// the directory startable, so [`place_pg_control`] renames it into place
/// only once its part's digest and the whole restore are verified.
fn restore_file(
    key: &Key,
    entry: &mut impl Read,
    expected: &FileEntry,
    final_target: &Path,
    buf: &mut [u8],
) -> Result<u64, EngineError> {
    let rel = &expected.path;
    let target = if rel == "global/pg_control" {
        final_target.with_file_name("pg_control.pgark-tmp")
    } else {
        final_target.to_path_buf()
    };
    let mut out =
        std::fs::File::create(&target).map_err(|e| EngineError::local_io("cannot create", &target, e))?;
    let mut crc = 0u32;
    let mut len = 0u64;
    loop {
        let n = entry.read(buf).map_err(|e| read_error(key, e))?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| EngineError::local_io("cannot write", &target, e))?;
        len += n as u64;
    }
    let crc = format!("{crc:08x}");
    if len != expected.size || crc != expected.crc32c {
        if target != final_target {
            let _ = std::fs::remove_file(&target);
        }
        return Err(integrity(
            key,
            format!(
                "{rel}: restored {len} bytes with CRC-32C {crc}, manifest says {} bytes with CRC-32C {}",
                expected.size, expected.crc32c
            ),
        ));
    }
    start_writeback(&out, 0, len);
    finish_file(&out, &target, expected)?;
    if target != final_target {
        out.sync_all()
            .map_err(|e| EngineError::local_io("cannot fsync", &target, e))?;
    }
    Ok(len)
}

/// Where pg_control waits, verified, until the restore has ended.
pub(super) const PG_CONTROL_ASIDE: &str = "global/pg_control.pgark-tmp";

/// Renames the verified pg_control into place and makes the rename
/// durable: the last step of a restore.
pub(super) fn place_pg_control(dest: &Path) -> Result<(), EngineError> {
    let aside = dest.join(PG_CONTROL_ASIDE);
    let target = dest.join("global/pg_control");
    std::fs::rename(&aside, &target).map_err(|e| EngineError::local_io("cannot rename into", &target, e))?;
    super::finish::fsync_path(&dest.join("global"))
}

/// Restores piece `number` of a split file at its offset (other pieces may
/// be written at the same time by other workers); the worker that writes
/// the last piece gives the file its mode and mtime and counts it restored.
#[allow(clippy::too_many_arguments)]
fn restore_piece(
    key: &Key,
    entry: &mut impl Read,
    expected: &FileEntry,
    index: usize,
    number: usize,
    target: &Path,
    buf: &mut [u8],
    plan: &Plan,
) -> Result<u64, EngineError> {
    use std::os::unix::fs::FileExt;
    let rel = &expected.path;
    let piece = &expected.pieces[number];
    if rel == "global/pg_control" {
        return Err(integrity(key, format!("{rel} is split into pieces")));
    }
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
        .map_err(|e| EngineError::local_io("cannot create", target, e))?;
    let mut crc = 0u32;
    let mut len = 0u64;
    loop {
        let n = entry.read(buf).map_err(|e| read_error(key, e))?;
        if n == 0 {
            break;
        }
        if len + n as u64 > piece.size {
            return Err(integrity(
                key,
                format!(
                    "{rel}: piece {number} is longer than the manifest's {} bytes",
                    piece.size
                ),
            ));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        out.write_all_at(&buf[..n], piece.offset + len)
            .map_err(|e| EngineError::local_io("cannot write", target, e))?;
        len += n as u64;
    }
    let crc = format!("{crc:08x}");
    if len != piece.size || crc != piece.crc32c {
        return Err(integrity(
            key,
            format!(
                "{rel}: piece {number} at offset {}: restored {len} bytes with CRC-32C {crc}, manifest says {} \
                 bytes with CRC-32C {}",
                piece.offset, piece.size, piece.crc32c
            ),
        ));
    }
    start_writeback(&out, piece.offset, len);
    let last = {
        let mut left = plan.pieces_left.lock().expect("lock");
        match left.get_mut(&index) {
            Some(n) if *n > 0 => {
                *n -= 1;
                *n == 0
            }
            _ => return Err(integrity(key, format!("{rel}: piece {number} appears twice"))),
        }
    };
    if last {
        finish_file(&out, target, expected)?;
        plan.restored.lock().expect("lock").push(rel.clone());
    }
    Ok(len)
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to
/// disk now, without waiting (sync_file_range(2) with
/// SYNC_FILE_RANGE_WRITE, as PostgreSQL's pg_flush_data does), so that the
/// final syncfs finds little left to do. Only a hint: durability comes
/// from that syncfs.
pub(super) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: the call only reads the descriptor, which `file` keeps open.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Gives a completely written file its mode and mtime, and counts it.
pub(super) fn finish_file(
    out: &std::fs::File,
    target: &Path,
    expected: &FileEntry,
) -> Result<(), EngineError> {
    out.set_permissions(std::fs::Permissions::from_mode(expected.mode))
        .map_err(|e| EngineError::local_io("cannot chmod", target, e))?;
    let mtime =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(expected.mtime).unwrap_or(0));
    out.set_modified(mtime)
        .map_err(|e| EngineError::local_io("cannot set mtime", target, e))
}

fn create_parent(target: &Path) -> Result<(), EngineError> {
    match target.parent() {
        Some(parent) => {
            std::fs::create_dir_all(parent).map_err(|e| EngineError::local_io("cannot create", parent, e))
        }
        None => Ok(()),
    }
}

pub(super) fn read_error(key: &Key, e: std::io::Error) -> EngineError {
    crate::pipe::classify_read_error(key, e)
}
