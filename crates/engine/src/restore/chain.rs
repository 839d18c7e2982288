//! Files rebuilt from a delta chain: created empty, given their
//! increments newest first (each page written once, by the newest backup
//! that has it), then the blocks no increment wrote from their base copy,
//! and checked complete. See `pgark_delta`'s restore contracts: a failed
//! call can take the same increment or base piece again.
//!
//! What a failure leaves: a rebuilt file partly written (the caller
//! removes it with the rest of a failed restore; a `--delta` restore run
//! again finds it not matching and rebuilds it).

use super::plan::Plan;
use super::write::{finish_file, integrity, read_error, start_writeback};
use crate::EngineError;
use pgark_store::Key;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The restore of a file rebuilt from a chain.
pub(super) enum ChainState {
    /// Applying increments, newest first (`None` until the first).
    Increments(Option<pgark_delta::ChainRestore>),
    /// Filling from the base, possibly in pieces at once.
    Base(Arc<pgark_delta::BaseFill>),
    Done,
}

pub(super) struct ChainFile {
    file: std::fs::File,
    path: PathBuf,
    state: Mutex<ChainState>,
}

impl Plan {
    /// Creates the files rebuilt from chains, empty.
    pub(super) fn open_chain_files(mut self) -> Result<Plan, EngineError> {
        let key = Key::new("backups").expect("a valid key");
        for (i, fp) in self.files.iter().enumerate() {
            if fp.increments.is_empty() {
                continue;
            }
            let path = self.target(&fp.target.path, &key)?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| EngineError::local_io("cannot create", parent, e))?;
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| EngineError::local_io("cannot create", &path, e))?;
            self.chains.insert(
                i,
                ChainFile {
                    file,
                    path,
                    state: Mutex::new(ChainState::Increments(None)),
                },
            );
        }
        Ok(self)
    }

    /// Before the parts of `level`: files whose base is at this level stop
    /// taking increments and start taking their base.
    pub(super) fn start_level(&self, level: usize) -> Result<(), EngineError> {
        for (i, c) in &self.chains {
            if self.files[*i].base_level != level {
                continue;
            }
            let mut state = c.state.lock().expect("lock");
            let ChainState::Increments(restore) = std::mem::replace(&mut *state, ChainState::Done) else {
                return Err(EngineError::Internal(format!(
                    "{}: chain state out of order",
                    c.path.display()
                )));
            };
            let restore = restore.ok_or_else(|| {
                EngineError::Internal(format!(
                    "{}: no increment was applied before its base",
                    c.path.display()
                ))
            })?;
            let fill = restore.into_base_fill();
            let expected = u64::from(fill.base_blocks()) * u64::from(self.block_size.get());
            if self.files[*i].base.size != expected {
                return Err(EngineError::Integrity {
                    key: self.files[*i].base.path.clone(),
                    source: pgark_codec::CodecError::Io(std::io::Error::other(format!(
                        "the base copy has {} bytes, the chain needs {expected}",
                        self.files[*i].base.size
                    ))),
                });
            }
            *state = ChainState::Base(Arc::new(fill));
        }
        Ok(())
    }

    /// After the parts of `level`: files whose base was at this level are
    /// complete: that every block was written exactly once is checked, the
    /// file is read back for its CRC-32C (for the backup_manifest: it is
    /// not compared with the CRC-32C the delta backup computed while
    /// scanning, because the kept pages are read a second time to be
    /// stored, and a page written in between is stored in its newer
    /// version, which WAL replay makes right either way; each piece of the
    /// chain was verified on its own), and given its mode and mtime.
    pub(super) fn end_level(&self, level: usize) -> Result<(), EngineError> {
        for (i, c) in &self.chains {
            let fp = &self.files[*i];
            if fp.base_level != level {
                continue;
            }
            let state = std::mem::replace(&mut *c.state.lock().expect("lock"), ChainState::Done);
            let ChainState::Base(fill) = state else {
                return Err(EngineError::Internal(format!(
                    "{}: chain state out of order",
                    c.path.display()
                )));
            };
            let fill = Arc::try_unwrap(fill)
                .map_err(|_| EngineError::Internal(format!("{}: base still in use", c.path.display())))?;
            let blocks = fill.blocks();
            fill.finish().map_err(|e| EngineError::Integrity {
                key: fp.target.path.clone(),
                source: pgark_codec::CodecError::Io(std::io::Error::other(e.to_string())),
            })?;
            let len = u64::from(blocks) * u64::from(self.block_size.get());
            c.file
                .set_len(len)
                .map_err(|e| EngineError::local_io("cannot truncate", &c.path, e))?;
            let crc = crc_of_file(&c.file, &c.path, len)?;
            let crc = format!("{crc:08x}");
            if len != fp.target.size {
                return Err(EngineError::Integrity {
                    key: fp.target.path.clone(),
                    source: pgark_codec::CodecError::Io(std::io::Error::other(format!(
                        "rebuilt from the chain: {len} bytes, the backup read {} bytes",
                        fp.target.size
                    ))),
                });
            }
            start_writeback(&c.file, 0, len);
            finish_file(&c.file, &c.path, &fp.target)?;
            self.crc_override
                .lock()
                .expect("lock")
                .insert(fp.target.path.clone(), crc);
            self.restored.lock().expect("lock").push(fp.target.path.clone());
            if let Some(p) = &self.progress {
                p.advance(len);
            }
        }
        Ok(())
    }
}

pub(super) fn delta_error(key: &Key, path: &str, e: pgark_delta::DeltaError) -> EngineError {
    match e {
        pgark_delta::DeltaError::Io(e) => read_error(key, e),
        e => integrity(key, format!("{path}: {e}")),
    }
}

/// Applies the increment of file `i` (newest first, see [`Plan`]).
pub(super) fn apply_increment(
    key: &Key,
    entry: &mut impl Read,
    plan: &Plan,
    i: usize,
) -> Result<u64, EngineError> {
    use std::os::unix::fs::FileExt;
    let path = &plan.files[i].target.path;
    let c = plan
        .chains
        .get(&i)
        .ok_or_else(|| EngineError::Internal(format!("{path}: no chain")))?;
    let mut state = c.state.lock().expect("lock");
    let ChainState::Increments(restore) = &mut *state else {
        return Err(EngineError::Internal(format!(
            "{path}: an increment after its base"
        )));
    };
    let mut reader = pgark_delta::IncrementReader::new(std::io::BufReader::with_capacity(256 << 10, entry))
        .map_err(|e| delta_error(key, path, e))?;
    let restore = restore.get_or_insert_with(|| pgark_delta::ChainRestore::new(reader.header()));
    let bs = u64::from(plan.block_size.get());
    let mut write = |block: u32, page: &[u8]| c.file.write_all_at(page, u64::from(block) * bs);
    let written = restore
        .apply_increment(&mut reader, &mut write)
        .map_err(|e| delta_error(key, path, e))?;
    tracing::debug!("{path}: {written} pages from the increment in {key}");
    Ok(0)
}

/// Applies the base of file `i` (whole, or the piece at `offset`): the
/// blocks no increment wrote. Checks the piece's CRC-32C.
pub(super) fn apply_base(
    key: &Key,
    entry: &mut impl Read,
    plan: &Plan,
    i: usize,
    offset: u64,
) -> Result<u64, EngineError> {
    use std::os::unix::fs::FileExt;
    let fp = &plan.files[i];
    let path = &fp.target.path;
    let c = plan
        .chains
        .get(&i)
        .ok_or_else(|| EngineError::Internal(format!("{path}: no chain")))?;
    let fill = match &*c.state.lock().expect("lock") {
        ChainState::Base(fill) => fill.clone(),
        _ => {
            return Err(EngineError::Internal(format!(
                "{path}: a base before its increments"
            )))
        }
    };
    let (size, crc) = match fp.base.pieces.iter().find(|p| p.offset == offset) {
        Some(p) => (p.size, p.crc32c.as_str()),
        None => (fp.base.size, fp.base.crc32c.as_str()),
    };
    let bs = u64::from(plan.block_size.get());
    let mut write = |block: u32, page: &[u8]| c.file.write_all_at(page, u64::from(block) * bs);
    let mut counted = CrcReader {
        inner: entry,
        crc: 0,
        len: 0,
    };
    let written = fill
        .apply_range((offset / bs) as u32, &mut counted, &mut write)
        .map_err(|e| delta_error(key, path, e))?;
    tracing::debug!("{path}: {written} pages from the base at offset {offset} in {key}");
    let got = format!("{:08x}", counted.crc);
    if counted.len != size || got != crc {
        return Err(integrity(
            key,
            format!(
                "{path}: base copy at offset {offset}: {} bytes with CRC-32C {got}, manifest says {size} bytes \
                 with CRC-32C {crc}",
                counted.len
            ),
        ));
    }
    Ok(0)
}

/// Counts and checksums what passes through.
struct CrcReader<R> {
    inner: R,
    crc: u32,
    len: u64,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// CRC-32C of the first `len` bytes of `file`.
fn crc_of_file(file: &std::fs::File, path: &Path, len: u64) -> Result<u32, EngineError> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0u32;
    let mut at = 0u64;
    while at < len {
        let want = buf.len().min((len - at) as usize);
        file.read_exact_at(&mut buf[..want], at)
            .map_err(|e| EngineError::local_io("cannot read back", path, e))?;
        crc = crc32c::crc32c_append(crc, &buf[..want]);
        at += want as u64;
    }
    Ok(crc)
}
