//! Stage 2 of a restore: the plan. From the chain of manifests (the target
//! backup, then its parents down to its full backup), what each tar entry
//! of each part is for, which parts hold anything needed, and where every
//! file lands. Pure bookkeeping: reads manifests, touches no file.

use super::chain::ChainFile;
use super::BackupFetchOptions;
use crate::manifest_io::load_manifest;
use crate::EngineError;
use pgark_catalog::{piece_entry_name, BackupManifest, FileEntry};
use pgark_store::{Key, ObjectStore};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

pub(super) fn tablespace_locations(
    manifest: &BackupManifest,
    remap: &HashMap<u32, PathBuf>,
) -> HashMap<u32, PathBuf> {
    manifest
        .tablespaces
        .iter()
        .map(|t| {
            (
                t.oid,
                remap
                    .get(&t.oid)
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(&t.location)),
            )
        })
        .collect()
}

/// What a restore does with one file of the target backup.
pub(super) struct FilePlan {
    /// The target backup's entry: path, size, mode, mtime.
    pub(super) target: FileEntry,
    /// The entry holding the full copy the file is rebuilt from (the
    /// target's own entry unless the file is a delta).
    pub(super) base: FileEntry,
    /// The chain level (0 = the target backup) of `base`.
    pub(super) base_level: usize,
    /// Levels holding an increment of the file, newest first.
    pub(super) increments: Vec<usize>,
    /// The parts (level, part index) its restore reads.
    pub(super) needs: Vec<(usize, u32)>,
}

/// What a tar entry of a part is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    /// A directory (of the target backup).
    Dir,
    /// The whole file `.0`, as it is.
    Whole(usize),
    /// Piece `.1` of file `.0`.
    Piece(usize, usize),
    /// The increment of file `.0`.
    Increment(usize),
    /// The base of file `.0` (rebuilt from increments and this).
    BaseWhole(usize),
    /// Piece `.1` of the base of file `.0`.
    BasePiece(usize, usize),
    /// An entry of this backup the restore does not need.
    Skip,
}

/// Per backup of the chain: what its tar entries are for, and which of
/// its parts hold anything needed.
#[derive(Default)]
pub(super) struct LevelPlan {
    pub(super) actions: HashMap<String, Action>,
    pub(super) parts: std::collections::BTreeSet<u32>,
}

pub(super) struct Plan {
    pub(super) dest: PathBuf,
    pub(super) locations: HashMap<u32, PathBuf>,
    pub(super) files: Vec<FilePlan>,
    pub(super) levels: Vec<LevelPlan>,
    /// The target's part holding the directories.
    pub(super) dirs_part: Option<u32>,
    /// Files rebuilt from increments, by file index.
    pub(super) chains: HashMap<usize, ChainFile>,
    /// Pieces not yet restored, per file restored whole from pieces.
    pub(super) pieces_left: Mutex<HashMap<usize, usize>>,
    pub(super) restored: Mutex<Vec<String>>,
    /// CRC-32C of files rebuilt from a chain, as rebuilt, for the
    /// backup_manifest (see [`Plan::end_level`]).
    pub(super) crc_override: Mutex<HashMap<String, String>>,
    pub(super) block_size: pgark_delta::BlockSize,
    pub(super) progress: Option<Arc<dyn crate::ProgressSink>>,
}

/// Loads the parents of `target`, newest first, down to its full backup.
pub(super) async fn load_chain(
    store: &dyn ObjectStore,
    target: BackupManifest,
    keys: &crate::RepoKeys,
) -> Result<Vec<BackupManifest>, EngineError> {
    let mut chain = vec![target];
    while let Some(parent) = chain.last().and_then(|m| m.parent.clone()) {
        let child = chain.last().expect("not empty");
        let m = load_manifest(store, &parent, keys).await.map_err(|e| match e {
            EngineError::NotFound { key, .. } => EngineError::NotFound {
                what: format!("backup {parent}, the parent of delta backup {}", child.name),
                key,
            },
            other => other,
        })?;
        if m.system_identifier != child.system_identifier
            || m.delta_depth + 1 != child.delta_depth
            || chain.len() > 10_000
        {
            return Err(EngineError::Integrity {
                key: parent.manifest_key().to_string(),
                source: pgark_codec::CodecError::Io(std::io::Error::other(format!(
                    "backup {parent} does not fit as the parent of {} (system identifier or delta depth)",
                    child.name
                ))),
            });
        }
        chain.push(m);
    }
    Ok(chain)
}

impl Plan {
    pub(super) fn new(
        opts: &BackupFetchOptions,
        locations: &HashMap<u32, PathBuf>,
        chain: &[BackupManifest],
    ) -> Result<Plan, EngineError> {
        let target = &chain[0];
        let block_size = pgark_delta::BlockSize::new(target.block_size)
            .map_err(|e| EngineError::Internal(format!("backup {}: {e}", target.name)))?;
        let indexes: Vec<HashMap<&str, &FileEntry>> = chain
            .iter()
            .map(|m| m.files.iter().map(|f| (f.path.as_str(), f)).collect())
            .collect();
        let broken = |m: &BackupManifest, msg: String| EngineError::Integrity {
            key: m.name.manifest_key().to_string(),
            source: pgark_codec::CodecError::Io(std::io::Error::other(msg)),
        };
        let mut files = Vec::with_capacity(target.files.len());
        for f in &target.files {
            let mut increments = Vec::new();
            let mut level = 0;
            let base = loop {
                let e = indexes[level].get(f.path.as_str()).ok_or_else(|| {
                    broken(
                        &chain[level],
                        format!(
                            "{} is a delta in {} but is missing here",
                            f.path,
                            chain[level - 1].name
                        ),
                    )
                })?;
                match &e.delta {
                    None => break (*e).clone(),
                    Some(d) if !d.unchanged => increments.push(level),
                    Some(_) => {}
                }
                level += 1;
                if level == chain.len() {
                    return Err(broken(
                        &chain[level - 1],
                        format!("{}: no full copy in the chain", f.path),
                    ));
                }
            };
            if increments.is_empty() && base.size != f.size {
                return Err(broken(
                    &chain[level],
                    format!(
                        "{}: unchanged since this backup, but {} bytes here and {} in {}",
                        f.path, base.size, f.size, target.name
                    ),
                ));
            }
            files.push(FilePlan {
                target: f.clone(),
                base,
                base_level: level,
                increments,
                needs: Vec::new(),
            });
        }
        let mut levels: Vec<LevelPlan> = (0..chain.len()).map(|_| LevelPlan::default()).collect();
        for (level, m) in chain.iter().enumerate() {
            let actions = &mut levels[level].actions;
            for f in &m.files {
                if !f.has_content() {
                    continue;
                }
                if f.delta.is_some() {
                    actions.insert(pgark_catalog::delta_entry_name(&f.path), Action::Skip);
                } else if f.pieces.is_empty() {
                    actions.insert(f.path.clone(), Action::Skip);
                } else {
                    for n in 0..f.pieces.len() {
                        actions.insert(piece_entry_name(&f.path, n), Action::Skip);
                    }
                }
            }
            if level == 0 {
                for d in &m.directories {
                    actions.insert(d.path.clone(), Action::Dir);
                }
            }
        }
        let mut pieces_left = HashMap::new();
        for (i, fp) in files.iter_mut().enumerate() {
            let chained = !fp.increments.is_empty();
            for &level in &fp.increments {
                let e = indexes[level][fp.target.path.as_str()];
                levels[level]
                    .actions
                    .insert(pgark_catalog::delta_entry_name(&e.path), Action::Increment(i));
                levels[level].parts.insert(e.part);
                fp.needs.push((level, e.part));
            }
            let lp = &mut levels[fp.base_level];
            if fp.base.pieces.is_empty() {
                let action = if chained {
                    Action::BaseWhole(i)
                } else {
                    Action::Whole(i)
                };
                lp.actions.insert(fp.base.path.clone(), action);
                lp.parts.insert(fp.base.part);
                fp.needs.push((fp.base_level, fp.base.part));
            } else {
                if !chained {
                    pieces_left.insert(i, fp.base.pieces.len());
                }
                for (n, p) in fp.base.pieces.iter().enumerate() {
                    let action = if chained {
                        Action::BasePiece(i, n)
                    } else {
                        Action::Piece(i, n)
                    };
                    lp.actions.insert(piece_entry_name(&fp.base.path, n), action);
                    lp.parts.insert(p.part);
                    fp.needs.push((fp.base_level, p.part));
                }
            }
        }
        // The directories are in the target's first part.
        let dirs_part = target.parts.first().map(|p| p.index);
        if let Some(first) = dirs_part {
            levels[0].parts.insert(first);
        }
        let plan = Plan {
            dest: opts.dest.clone(),
            locations: locations.clone(),
            files,
            levels,
            dirs_part,
            chains: HashMap::new(),
            pieces_left: Mutex::new(pieces_left),
            restored: Mutex::new(Vec::new()),
            crc_override: Mutex::new(HashMap::new()),
            block_size,
            progress: opts.progress.clone(),
        };
        Ok(plan)
    }

    /// The files of the target backup (index, and the entry a file already
    /// in place must match), for a delta restore's comparison.
    pub(super) fn targets(&self) -> impl Iterator<Item = (usize, FileEntry)> + '_ {
        self.files.iter().enumerate().map(|(i, fp)| {
            // A rebuilt file is compared with what the delta backup read.
            let entry = if fp.increments.is_empty() {
                restored_entry(fp)
            } else {
                fp.target.clone()
            };
            (i, entry)
        })
    }

    /// Where a file of the backup lands (tablespace files in their
    /// location).
    pub(super) fn local_path(&self, rel: &str) -> Result<PathBuf, EngineError> {
        self.target(rel, &Key::new("backups").expect("a valid key"))
    }

    /// Leaves the files `kept` (already right in the destination) out of
    /// the restore: their entries are skipped, and parts that hold nothing
    /// else needed are not read.
    pub(super) fn keep(&mut self, kept: &std::collections::HashSet<usize>) {
        for level in &mut self.levels {
            for action in level.actions.values_mut() {
                let file = match *action {
                    Action::Whole(i)
                    | Action::Piece(i, _)
                    | Action::Increment(i)
                    | Action::BaseWhole(i)
                    | Action::BasePiece(i, _) => i,
                    Action::Dir | Action::Skip => continue,
                };
                if kept.contains(&file) {
                    *action = Action::Skip;
                }
            }
            level.parts.clear();
        }
        if let Some(first) = self.dirs_part {
            self.levels[0].parts.insert(first);
        }
        for (i, fp) in self.files.iter_mut().enumerate() {
            if kept.contains(&i) {
                fp.increments.clear();
                continue;
            }
            for &(level, part) in &fp.needs {
                self.levels[level].parts.insert(part);
            }
        }
        self.restored
            .lock()
            .expect("lock")
            .extend(kept.iter().map(|&i| self.files[i].target.path.clone()));
        self.pieces_left
            .lock()
            .expect("lock")
            .retain(|i, _| !kept.contains(i));
    }

    /// Where a backup path lands: tablespace files in their location.
    pub(super) fn target(&self, rel: &str, key: &Key) -> Result<PathBuf, EngineError> {
        let bad = || EngineError::Integrity {
            key: key.to_string(),
            source: pgark_codec::CodecError::Io(std::io::Error::other(format!(
                "unsafe path {rel:?} in backup"
            ))),
        };
        let p = Path::new(rel);
        if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(bad());
        }
        if let Some(rest) = rel.strip_prefix("pg_tblspc/") {
            let (oid, inner) = rest.split_once('/').unwrap_or((rest, ""));
            if let Some(loc) = oid.parse::<u32>().ok().and_then(|o| self.locations.get(&o)) {
                return Ok(if inner.is_empty() {
                    loc.clone()
                } else {
                    loc.join(inner)
                });
            }
        }
        Ok(self.dest.join(p))
    }
}

/// The entry a file is restored with as it is: its full copy (in the
/// target backup, or in an older one when no delta since changed it) under
/// the target's path, mode and mtime.
pub(super) fn restored_entry(fp: &FilePlan) -> FileEntry {
    FileEntry {
        path: fp.target.path.clone(),
        mode: fp.target.mode,
        mtime: fp.target.mtime,
        ..fp.base.clone()
    }
}
