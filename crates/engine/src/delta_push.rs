//! The delta half of `backup-push`: choosing the parent backup, and
//! turning one relation file into an increment (`pgark-delta`'s format)
//! inside a part's tar stream.
//!
//! Which files are diffed is `pgark_delta::is_delta_file`: the main fork
//! of a permanent relation, by its path relative to the data directory or
//! tablespace root, never by substring. Free space maps and visibility
//! maps are rewritten without WAL in ways a page LSN does not show (the
//! FSM is not WAL-logged at all; VM bits are cleared as a side effect of
//! heap changes), so their pages' LSNs cannot tell whether they changed:
//! they, and every other file, are copied whole.
//!
//! An increment is written in two passes over the file: the first reads
//! every page (verifying checksums) and decides which to keep, which gives
//! the increment's exact size for the tar header; the second re-reads only
//! the kept pages. A page that changes between the passes was changed after
//! the backup started, so WAL replay rewrites it either way.

use crate::EngineError;
use pgark_catalog::{BackupManifest, BackupName};
use pgark_delta::{encoded_len, BlockSize, IncrementHeader, IncrementWriter, PageScanner, ScanOptions};
use pgark_pg::{Lsn, TimelineId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

/// Which backup a delta is based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaFrom {
    /// The newest completed backup, full or delta.
    Latest,
    /// The newest full backup.
    LatestFull,
    Named(BackupName),
}

impl std::str::FromStr for DeltaFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<DeltaFrom, String> {
        match s {
            "LATEST" => Ok(DeltaFrom::Latest),
            "LATEST_FULL" => Ok(DeltaFrom::LatestFull),
            name => BackupName::parse(name)
                .map(DeltaFrom::Named)
                .map_err(|e| format!("{name:?}: expected LATEST, LATEST_FULL or a backup name ({e})")),
        }
    }
}

/// A delta was asked for.
#[derive(Debug, Clone)]
pub struct DeltaOptions {
    pub from: DeltaFrom,
    /// The longest chain of deltas after a full backup; the delta that
    /// would exceed it is taken as a full backup instead.
    pub max_steps: u32,
}

/// The chosen parent: its manifest and the sizes of its files.
#[derive(Debug)]
pub(crate) struct Parent {
    pub manifest: BackupManifest,
    pub since: Lsn,
    files: HashMap<String, u64>,
    /// Modification time of each file, for the database directories'
    /// `PG_VERSION` (see [`Parent::same_database_dirs`]).
    mtimes: HashMap<String, i64>,
}

/// The database directory of a relation file: `base/<db oid>` or
/// `pg_tblspc/<ts oid>/<version dir>/<db oid>`; `None` elsewhere
/// (`global/` belongs to no database and is never re-created).
pub(crate) fn database_dir(rel: &str) -> Option<&str> {
    let (dir, _) = rel.rsplit_once('/')?;
    let depth = dir.split('/').count();
    let is_db_dir = (dir.starts_with("base/") && depth == 2) || (dir.starts_with("pg_tblspc/") && depth == 4);
    is_db_dir.then_some(dir)
}

/// [`Parent::same_database_dirs`], given the parent's `PG_VERSION` mtimes
/// (seconds) by path and its start time.
fn same_database_dirs<'a>(
    parent_mtimes: &HashMap<String, i64>,
    parent_started: chrono::DateTime<chrono::Utc>,
    files: impl IntoIterator<Item = (&'a str, i64, i64)>,
) -> std::collections::HashSet<String> {
    let started = (
        parent_started.timestamp(),
        i64::from(parent_started.timestamp_subsec_nanos()),
    );
    files
        .into_iter()
        .filter_map(|(rel, mtime, mtime_nsec)| {
            let dir = rel.strip_suffix("/PG_VERSION")?;
            let same = database_dir(rel) == Some(dir)
                && parent_mtimes.get(rel) == Some(&mtime)
                && (mtime, mtime_nsec) < started;
            same.then(|| dir.to_string())
        })
        .collect()
}

impl Parent {
    /// The database directories (among those of `files`, the new backup's
    /// files with their mtimes in seconds and nanoseconds) that are the same
    /// directory as in the parent, so that their relation files may be
    /// diffed against it.
    ///
    /// Pages cannot tell: `CREATE DATABASE ... STRATEGY FILE_COPY` and
    /// `ALTER DATABASE ... SET TABLESPACE` copy pages with their old LSNs, so
    /// a database dropped and created again with the same OID (`OID = n`, or
    /// OID wrap-around) can hold, under the parent's paths, pages older than
    /// the parent that are not the parent's pages. The directory's identity
    /// is its `PG_VERSION`, which PostgreSQL writes anew whenever it creates
    /// a database directory (every strategy, and moves between tablespaces):
    /// a directory is the parent's when both have `PG_VERSION` with the same
    /// mtime (whole seconds, as the manifest keeps it) and the current one
    /// was written before the parent started (to the nanosecond, which
    /// closes the gap of a directory created, backed up and re-created within
    /// one second). Anything else (a new directory, one re-created, one
    /// without `PG_VERSION`) has its files copied whole; the cost is one full
    /// copy of that database.
    pub fn same_database_dirs<'a>(
        &self,
        files: impl IntoIterator<Item = (&'a str, i64, i64)>,
    ) -> std::collections::HashSet<String> {
        same_database_dirs(&self.mtimes, self.manifest.started_at, files)
    }

    /// The parent's copy of `rel` in blocks, when it can be diffed against:
    /// the parent has the file and its size is whole blocks.
    pub fn blocks_of(&self, rel: &str, bs: BlockSize) -> Option<u32> {
        let size = *self.files.get(rel)?;
        let bs = u64::from(bs.get());
        (size % bs == 0).then(|| u32::try_from(size / bs).ok()).flatten()
    }
}

/// What the new backup is, as [`choose_parent`] needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewBackup {
    pub system_identifier: u64,
    pub timeline: TimelineId,
    pub start_lsn: Lsn,
    pub block_size: u32,
}

/// Picks the parent of a delta among the completed backups `all` (sorted
/// oldest first), or says why the backup has to be a full one.
/// `history` reads a timeline history file (`<TLI>.history` text) of the
/// new backup's timeline, when it differs from the parent's.
pub(crate) fn choose_parent(
    all: Vec<BackupManifest>,
    req: &DeltaOptions,
    new: NewBackup,
    history: impl FnOnce(TimelineId) -> Option<String>,
) -> Result<Parent, String> {
    let parent = match &req.from {
        DeltaFrom::Latest => all.into_iter().next_back(),
        DeltaFrom::LatestFull => all.into_iter().rev().find(|m| !m.is_delta()),
        DeltaFrom::Named(name) => all.into_iter().find(|m| &m.name == name),
    };
    let parent = parent.ok_or_else(|| match &req.from {
        DeltaFrom::Named(name) => format!("there is no completed backup named {name}"),
        _ => "there is no completed backup to base it on".to_string(),
    })?;
    let name = &parent.name;
    if parent.system_identifier != new.system_identifier {
        return Err(format!(
            "the parent {name} is of system identifier {}, this cluster is {}",
            parent.system_identifier, new.system_identifier
        ));
    }
    if parent.delta_depth >= req.max_steps {
        return Err(format!(
            "the parent {name} is already {} delta(s) from its full backup and the maximum is {} \
             (--delta-max-steps)",
            parent.delta_depth, req.max_steps
        ));
    }
    if parent.block_size != new.block_size {
        return Err(format!(
            "the parent {name} has {}-byte pages, this cluster {}",
            parent.block_size, new.block_size
        ));
    }
    let lsn = |s: &str| {
        s.parse::<Lsn>()
            .map_err(|e| format!("the parent {name}'s manifest has a bad LSN {s:?}: {e}"))
    };
    let since = lsn(&parent.start_lsn)?;
    let stop = lsn(&parent.stop_lsn)?;
    if stop > new.start_lsn {
        return Err(format!(
            "the parent {name} stopped at {stop}, after this backup's start at {}: it is not in this \
             cluster's past",
            new.start_lsn
        ));
    }
    if parent.timeline != new.timeline.0 {
        let text = history(new.timeline).unwrap_or_default();
        let switch = history_switch_point(&text, parent.timeline);
        match switch {
            Some(end) if stop <= end => {}
            Some(end) => {
                return Err(format!(
                "the parent {name} ended at {stop} on timeline {}, after timeline {} branched off at {end}",
                parent.timeline, new.timeline.0
            ))
            }
            None => {
                return Err(format!(
                    "the parent {name} is on timeline {}, which is not an ancestor of timeline {} (per its \
                     history file)",
                    parent.timeline, new.timeline.0
                ))
            }
        }
    }
    let files = parent.files.iter().map(|f| (f.path.clone(), f.size)).collect();
    let mtimes = parent
        .files
        .iter()
        .filter(|f| f.path.ends_with("/PG_VERSION"))
        .map(|f| (f.path.clone(), f.mtime))
        .collect();
    Ok(Parent {
        manifest: parent,
        since,
        files,
        mtimes,
    })
}

/// The LSN where timeline `tli` ended, from a timeline history file
/// (lines `<parent TLI> <switch LSN> <reason>`; `#` comments).
pub(crate) fn history_switch_point(text: &str, tli: u32) -> Option<Lsn> {
    crate::timelines::history_entries(text)
        .into_iter()
        .find_map(|(t, lsn)| (t.0 == tli).then_some(lsn))
}

/// What the first pass over a relation file found.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub header: IncrementHeader,
    /// Blocks to store, ascending.
    pub stored: Vec<u32>,
    /// CRC-32C of the file as read (zeros past a shrunken end).
    pub crc32c: u32,
    /// Blocks (in the file) whose checksum failed twice with the same
    /// bytes, with their `pd_lsn`.
    pub corrupt: Vec<(u32, Lsn)>,
}

impl Scanned {
    /// No page changed and the size did not: the parent's copy is this one.
    pub fn unchanged(&self) -> bool {
        self.stored.is_empty() && self.header.blocks == self.header.parent_blocks
    }

    /// The increment's exact size.
    pub fn increment_len(&self) -> u64 {
        encoded_len(&self.header, self.stored.len() as u32)
    }
}

/// How to read one relation file for an increment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanSpec {
    pub block_size: BlockSize,
    pub since: Lsn,
    pub parent_blocks: u32,
    pub verify_checksums: bool,
    pub first_block_no: u32,
}

/// The first pass: reads `size` bytes of `file` (whole blocks; a file that
/// shrank reads as zeros past its end) in 1 MiB buffers through a
/// [`PageScanner`].
pub(crate) fn scan_file(
    file: &std::fs::File,
    path: &Path,
    size: u64,
    spec: ScanSpec,
    buf: &mut Vec<u8>,
) -> Result<Scanned, EngineError> {
    let bs = spec.block_size.bytes();
    let blocks = u32::try_from(size / bs as u64).map_err(|_| EngineError::Rejected {
        path: path.to_path_buf(),
        reason: "too many blocks for a relation file".into(),
    })?;
    let mut scanner = PageScanner::new(ScanOptions {
        block_size: spec.block_size,
        since: spec.since,
        parent_blocks: spec.parent_blocks,
        verify_checksums: spec.verify_checksums,
        first_block_no: spec.first_block_no,
    });
    let chunk = (1 << 20) / bs * bs;
    buf.resize(chunk, 0);
    let mut stored = Vec::new();
    let mut crc = 0u32;
    let mut offset = 0u64;
    let delta_err = |e: pgark_delta::DeltaError| EngineError::Internal(format!("{}: {e}", path.display()));
    while offset < size {
        let want = chunk.min((size - offset) as usize);
        read_full_at(file, path, &mut buf[..want], offset)?;
        let first = (offset / bs as u64) as u32;
        let reread = |block: u32, page: &mut [u8]| -> std::io::Result<bool> {
            let at = u64::from(block) * bs as u64;
            let mut got = 0;
            while got < page.len() {
                match file.read_at(&mut page[got..], at + got as u64) {
                    Ok(0) => return Ok(false),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(true)
        };
        let scanned = scanner.scan(&mut buf[..want], reread).map_err(delta_err)?;
        stored.extend(scanned.stored_pages().map(|i| first + i));
        // Checksummed after the scan: a torn page is stored as re-read.
        crc = crc32c::crc32c_append(crc, &buf[..want]);
        offset += want as u64;
    }
    let corrupt = scanner
        .bad_pages()
        .iter()
        .filter(|p| p.class == pgark_delta::PageClass::Corrupt)
        .map(|p| (p.block, p.lsn))
        .collect();
    Ok(Scanned {
        header: IncrementHeader {
            block_size: spec.block_size,
            blocks,
            parent_blocks: spec.parent_blocks,
            since: spec.since,
        },
        stored,
        crc32c: crc,
        corrupt,
    })
}

/// Fills `buf` from `file` at `offset`; past the end of a file that shrank,
/// zeros (WAL replay truncates or rewrites those pages).
pub(crate) fn read_full_at(
    file: &std::fs::File,
    path: &Path,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), EngineError> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => {
                buf[got..].fill(0);
                break;
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(EngineError::local_io("cannot read", path, e)),
        }
    }
    Ok(())
}

/// A `Vec` that the increment writer appends to and the reader drains.
#[derive(Clone, Default)]
struct SharedBuf(Rc<RefCell<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The second pass, as a reader of the increment's bytes: re-reads the
/// stored pages one by one and encodes them; yields exactly
/// [`Scanned::increment_len`] bytes or fails. Checksums what it yields.
pub(crate) struct IncrementSource<'a> {
    file: &'a std::fs::File,
    path: &'a Path,
    blocks: std::vec::IntoIter<u32>,
    writer: Option<IncrementWriter<SharedBuf>>,
    out: SharedBuf,
    pos: usize,
    page: Vec<u8>,
    expected: u64,
    produced: u64,
    pub crc: u32,
    pub error: Option<EngineError>,
}

impl<'a> IncrementSource<'a> {
    pub fn new(file: &'a std::fs::File, path: &'a Path, scanned: &Scanned) -> Result<Self, EngineError> {
        let out = SharedBuf::default();
        let writer = IncrementWriter::new(out.clone(), scanned.header)
            .map_err(|e| EngineError::Internal(format!("{}: {e}", path.display())))?;
        Ok(IncrementSource {
            file,
            path,
            blocks: scanned.stored.clone().into_iter(),
            writer: Some(writer),
            out,
            pos: 0,
            page: vec![0; scanned.header.block_size.bytes()],
            expected: scanned.increment_len(),
            produced: 0,
            crc: 0,
            error: None,
        })
    }

    fn fail(&mut self, e: EngineError) -> std::io::Error {
        let msg = e.to_string();
        self.error = Some(e);
        std::io::Error::other(msg)
    }

    /// Moves the encoder forward until it has output (or is done).
    fn refill(&mut self) -> Result<bool, EngineError> {
        self.out.0.borrow_mut().clear();
        self.pos = 0;
        let bs = self.page.len() as u64;
        while self.out.0.borrow().is_empty() {
            if let Some(block) = self.blocks.next() {
                read_full_at(self.file, self.path, &mut self.page, u64::from(block) * bs)?;
                self.writer
                    .as_mut()
                    .expect("writer lives until the blocks are done")
                    .push_page(block, &self.page)
                    .map_err(|e| EngineError::Internal(format!("{}: {e}", self.path.display())))?;
            } else if let Some(w) = self.writer.take() {
                w.finish()
                    .map_err(|e| EngineError::Internal(format!("{}: {e}", self.path.display())))?;
            } else {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Read for IncrementSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.out.0.borrow().len() {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => {
                    if self.produced != self.expected {
                        let e = EngineError::Internal(format!(
                            "{}: the increment is {} bytes, {} were announced",
                            self.path.display(),
                            self.produced,
                            self.expected
                        ));
                        return Err(self.fail(e));
                    }
                    return Ok(0);
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        let out = self.out.0.borrow();
        let n = buf.len().min(out.len() - self.pos);
        buf[..n].copy_from_slice(&out[self.pos..self.pos + n]);
        drop(out);
        self.pos += n;
        self.produced += n as u64;
        if self.produced > self.expected {
            let e = EngineError::Internal(format!(
                "{}: the increment is longer than the {} bytes announced",
                self.path.display(),
                self.expected
            ));
            return Err(self.fail(e));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_files_give_switch_points() {
        let text = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000A28\tbefore 2026-11-22\n";
        assert_eq!(history_switch_point(text, 1), Some(Lsn(0x300_0000)));
        assert_eq!(history_switch_point(text, 2), Some(Lsn(0x500_0A28)));
        assert_eq!(history_switch_point(text, 3), None);
        assert_eq!(history_switch_point("# comment\n", 1), None);
    }

    #[test]
    fn database_dirs_of_relation_files() {
        let table = [
            ("base/16384/16385", Some("base/16384")),
            ("base/16384/PG_VERSION", Some("base/16384")),
            (
                "pg_tblspc/16400/PG_15_202209061/16384/16385",
                Some("pg_tblspc/16400/PG_15_202209061/16384"),
            ),
            ("global/1262", None),
            ("base/16384", None),
            ("pg_tblspc/16400/PG_15_202209061/16385", None),
            ("PG_VERSION", None),
            ("pg_wal/000000010000000000000001", None),
        ];
        for (rel, dir) in table {
            assert_eq!(database_dir(rel), dir, "{rel}");
        }
    }

    #[test]
    fn a_database_directory_is_the_parents_only_if_its_pg_version_is_unchanged_and_older() {
        let started = chrono::DateTime::from_timestamp(1_000_000, 500_000_000).unwrap();
        let parent: HashMap<String, i64> = [
            ("base/1/PG_VERSION", 500),
            ("base/5/PG_VERSION", 500),
            ("base/16384/PG_VERSION", 900_000),
            ("base/16390/PG_VERSION", 1_000_000),
            ("base/16391/PG_VERSION", 1_000_000),
            ("pg_tblspc/16400/PG_15_202209061/16384/PG_VERSION", 900_000),
        ]
        .into_iter()
        .map(|(p, m)| (p.to_string(), m))
        .collect();
        let now = [
            ("base/1/PG_VERSION", 500, 0),                                    // unchanged
            ("base/5/PG_VERSION", 1_000_100, 0),                              // re-created after the parent
            ("base/16384/PG_VERSION", 900_000, 999_999_999),                  // unchanged
            ("base/16390/PG_VERSION", 1_000_000, 400_000_000), // created just before the parent
            ("base/16391/PG_VERSION", 1_000_000, 600_000_000), // re-created in the parent's second
            ("base/16500/PG_VERSION", 500, 0),                 // not in the parent
            ("pg_tblspc/16400/PG_15_202209061/16384/PG_VERSION", 900_000, 0), // unchanged
            ("PG_VERSION", 500, 0),                            // not a database's
            ("base/1/1259", 500, 0),
        ];
        let mut same: Vec<String> = same_database_dirs(&parent, started, now).into_iter().collect();
        same.sort();
        assert_eq!(
            same,
            [
                "base/1",
                "base/16384",
                "base/16390",
                "pg_tblspc/16400/PG_15_202209061/16384"
            ]
        );
    }

    #[test]
    fn delta_from_parses() {
        assert_eq!("LATEST".parse::<DeltaFrom>().unwrap(), DeltaFrom::Latest);
        assert_eq!("LATEST_FULL".parse::<DeltaFrom>().unwrap(), DeltaFrom::LatestFull);
        assert!(matches!(
            "base_000000010000000000000002_20261122T031500Z".parse::<DeltaFrom>(),
            Ok(DeltaFrom::Named(_))
        ));
        assert!("latest".parse::<DeltaFrom>().is_err());
    }
}
