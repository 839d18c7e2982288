//! The default repository backend: a directory on a local (or mounted)
//! filesystem, [`LocalStore`].
//!
//! # Layout
//!
//! The object under key `a/b/c` is the regular file `<root>/a/b/c`; the
//! directories on the way are created on demand. Because a path cannot be a
//! file and a directory at once, a local repository cannot hold both an
//! object `a/b` and objects under `a/b/`; such a put fails with a permanent
//! error. pgark's own key layout never does this.
//!
//! # Guarantees
//!
//! - **Atomic puts.** Every put (single or multipart) writes a temporary file
//!   `<name>.<random hex>.pgark-tmp` in the object's directory, `fsync`s it,
//!   and only then publishes it under its final name. A reader sees the old
//!   object (or none) until the new one is complete.
//! - **Durable on return.** After publishing, the object's directory and each
//!   directory above it up to the root are `fsync`ed, so when a put returns
//!   the object and the directory entries leading to it survive a crash or a
//!   power loss (on filesystems that honour `fsync`).
//! - **Create-only puts are race-free.** [`PutMode::Overwrite`] publishes with
//!   `rename(2)`, which atomically replaces an existing object.
//!   [`PutMode::Create`] publishes with `link(2)`, which atomically fails with
//!   `EEXIST` if the key exists, so of two racing create-only puts, from this
//!   process or any other, exactly one wins. This needs a filesystem with hard
//!   links (every Unix filesystem does; some network and FUSE ones do not).
//! - **What a crash leaves behind.** At most some `*.pgark-tmp` files (and
//!   empty directories). No valid [`Key`] ends in `.pgark-tmp`, so these files
//!   are never mistaken for objects: `list` skips them, `get` cannot name
//!   them, and they are safe to delete whenever no pgark process is writing
//!   to the repository. A failed, aborted or dropped upload removes its own
//!   temporary file.
//! - **Deletes** unlink the object, remove directories left empty up to (not
//!   including) the root, and `fsync` the parent directory.
//!
//! Reads stream the file in 256 KiB pieces and never hold a whole
//! object in memory. A reader that opened an object keeps reading that
//! version even if it is overwritten or deleted meanwhile. All filesystem
//! work runs on Tokio's blocking thread pool, never on the async workers.

use crate::{
    ByteStream, ErrorKind, GetResult, Key, MultipartUpload, ObjectMeta, ObjectStore, Operation, PutMode,
    Result, StoreError,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Suffix of the temporary files puts write before publishing an object.
const TMP_SUFFIX: &str = ".pgark-tmp";

/// Size of the chunks a [`LocalStore::get`](ObjectStore::get) stream yields.
const READ_CHUNK: usize = 256 << 10;

/// Longest part of an object's file name kept in its temporary file's name,
/// so that the temporary name stays within the usual 255-byte name limit.
const TMP_STEM_MAX: usize = 128;

/// How often a put retries creating its temporary file when its directory
/// vanished meanwhile (a concurrent delete pruned it) or the random name
/// collided.
const TMP_ATTEMPTS: usize = 10;

/// A repository in a local directory. Cheap to clone; clones share the root.
///
/// The object under key `a/b/c` is the file `<root>/a/b/c`. Puts write a
/// `*.pgark-tmp` file next to it, `fsync` it, publish it with `rename(2)`
/// (overwrite) or `link(2)` (create-only, race-free), and `fsync` the
/// directories up to the root, so an object is atomic and durable once a put
/// returns. A crash leaves at most `*.pgark-tmp` files, which `list` ignores
/// and which are safe to delete while no pgark process writes. A key cannot
/// be both an object and a directory of objects (`a/b` and `a/b/c`).
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    url: String,
}

impl LocalStore {
    /// Opens the repository directory `root`, creating it and any missing
    /// parents (durably) if needed: for the commands that may initialise a
    /// repository.
    ///
    /// A relative `root` is made absolute against the current directory
    /// (symbolic links are kept as they are). Fails with a permanent
    /// [`Operation::Open`] error naming the path if it exists but is not a
    /// directory, or cannot be created. Writability is not checked here, so a
    /// read-only repository can still be opened for restores; the first put
    /// into an unwritable directory fails with a permanent error naming the
    /// path and the cause.
    pub fn new(root: impl Into<PathBuf>) -> Result<LocalStore> {
        LocalStore::open_root(root.into(), true)
    }

    /// Opens the repository directory `root` as it is, creating nothing:
    /// for the commands that only read a repository, so that a mistyped path
    /// or an unmounted volume is not turned into a new, empty directory.
    ///
    /// A missing `root` is no error here: every get and head of it is
    /// [`ErrorKind::NotFound`], a list is empty, and a put fails with a
    /// permanent error ("the repository directory ... does not exist").
    /// Fails like [`LocalStore::new`] if `root` exists but is not a
    /// directory or cannot be examined.
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalStore> {
        LocalStore::open_root(root.into(), false)
    }

    fn open_root(given: PathBuf, create: bool) -> Result<LocalStore> {
        let open_err = |path: &Path, message: String, source: io::Error| {
            StoreError::new(
                ErrorKind::Permanent,
                Operation::Open,
                url_of(path),
                path.display(),
                message,
            )
            .with_source(source)
        };
        let root: PathBuf = std::path::absolute(&given)
            .map_err(|e| {
                open_err(
                    &given,
                    format!(
                        "cannot make repository path {:?} absolute: {e}",
                        given.display().to_string()
                    ),
                    e,
                )
            })?
            // Drops `.` components and trailing slashes.
            .components()
            .collect();
        match fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                let e = io::Error::from(io::ErrorKind::NotADirectory);
                return Err(open_err(
                    &root,
                    format!("repository path {} exists and is not a directory", root.display()),
                    e,
                ));
            }
            Err(e) if !create && e.kind() == io::ErrorKind::NotFound => {}
            Err(e)
                if create && matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) =>
            {
                create_dir_all_durable(&root, None).map_err(|f| {
                    let message = format!("cannot create repository directory {}: {}", root.display(), f.err);
                    let message = if f.what.ends_with(&format!(" {}", root.display())) {
                        message
                    } else {
                        // An ancestor could not be created: say which.
                        format!("{message} ({})", f.what)
                    };
                    open_err(&root, message, f.err)
                })?;
            }
            Err(e) => {
                return Err(open_err(
                    &root,
                    format!("cannot access repository directory {}: {e}", root.display()),
                    e,
                ));
            }
        }
        let url = url_of(&root);
        Ok(LocalStore {
            inner: Arc::new(Inner { root, url }),
        })
    }

    /// The repository's absolute root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The file that holds (or would hold) `key`.
    fn path_of(&self, key: &Key) -> PathBuf {
        let mut path = self.inner.root.clone();
        path.extend(key.as_str().split('/'));
        path
    }

    /// Turns a filesystem failure into a [`StoreError`], classified like
    /// [`StoreError::from_io`]. A missing file or directory while writing
    /// (say, the repository directory vanished) is permanent, not
    /// [`ErrorKind::NotFound`], which only means "no such object".
    fn fail(&self, op: Operation, target: impl fmt::Display, f: FsFail) -> StoreError {
        let mut kind = StoreError::from_io(op, "", "", io::Error::from(f.err.kind())).kind();
        if kind == ErrorKind::NotFound && !matches!(op, Operation::Get | Operation::Head | Operation::Read) {
            kind = ErrorKind::Permanent;
        }
        StoreError::new(kind, op, self, target, f.to_string()).with_source(f.err)
    }

    fn not_found(&self, op: Operation, key: &Key) -> StoreError {
        StoreError::new(ErrorKind::NotFound, op, self, key, "no such object")
    }

    /// Runs blocking filesystem work on Tokio's blocking pool.
    async fn blocking<T, F>(&self, op: Operation, target: &(dyn fmt::Display + Sync), f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        match tokio::task::spawn_blocking(f).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StoreError::new(
                ErrorKind::Transient,
                op,
                self,
                target,
                "the runtime is shutting down",
            )),
        }
    }

    /// Creates a fresh temporary file next to `path`, creating missing
    /// directories (below the root) on the way.
    fn create_tmp(&self, path: &Path) -> Result<(PathBuf, File), FsFail> {
        let dir = path.parent().expect("an object path lies below the root");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tmp = tmp_path_for(path);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(OBJECT_MODE)
                .open(&tmp)
            {
                Ok(file) => return Ok((tmp, file)),
                Err(e)
                    if attempt < TMP_ATTEMPTS
                        && matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) =>
                {
                    // The directory is missing (new, or pruned by a concurrent
                    // delete) or an object is in the way: create it or say why not.
                    create_dir_all_durable(dir, Some(&self.inner.root))?;
                }
                // A random-name collision; try another name.
                Err(e) if attempt < TMP_ATTEMPTS && e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(FsFail::new(format!("cannot create {}", tmp.display()), e)),
            }
        }
    }

    /// Publishes the complete, synced temporary file `tmp` as `path` and makes
    /// that durable. On failure the caller removes `tmp`.
    fn publish(&self, op: Operation, key: &Key, tmp: &Path, path: &Path, mode: PutMode) -> Result<()> {
        match mode {
            PutMode::Overwrite => {
                fs::rename(tmp, path).map_err(|e| {
                    let f = if path.is_dir() {
                        FsFail::new(
                            format!(
                                "cannot replace {}: it is a directory of other objects",
                                path.display()
                            ),
                            e,
                        )
                    } else {
                        FsFail::new(
                            format!("cannot rename {} to {}", tmp.display(), path.display()),
                            e,
                        )
                    };
                    self.fail(op, key, f)
                })?;
            }
            PutMode::Create => {
                if let Err(e) = fs::hard_link(tmp, path) {
                    return Err(if e.kind() == io::ErrorKind::AlreadyExists && !path.is_dir() {
                        StoreError::new(ErrorKind::AlreadyExists, op, self, key, "object already exists")
                            .with_source(e)
                    } else if e.kind() == io::ErrorKind::AlreadyExists {
                        let msg = format!(
                            "cannot create {}: it is a directory of other objects",
                            path.display()
                        );
                        StoreError::new(ErrorKind::Permanent, op, self, key, msg).with_source(e)
                    } else if matches!(
                        e.kind(),
                        io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
                    ) {
                        let what = format!(
                            "cannot link {} to {} (create-only puts need a filesystem with hard links)",
                            tmp.display(),
                            path.display()
                        );
                        self.fail(op, key, FsFail::new(what, e))
                    } else {
                        let what = format!("cannot link {} to {}", tmp.display(), path.display());
                        self.fail(op, key, FsFail::new(what, e))
                    });
                }
                // The object is published; a temporary name left behind by a
                // failed unlink is harmless litter.
                let _ = fs::remove_file(tmp);
            }
        }
        let dir = path.parent().expect("an object path lies below the root");
        sync_dirs_up_to(dir, &self.inner.root).map_err(|f| self.fail(op, key, f))
    }

    fn put_blocking(&self, key: &Key, data: &[u8], mode: PutMode) -> Result<ObjectMeta> {
        let path = self.path_of(key);
        let (tmp, mut file) = self
            .create_tmp(&path)
            .map_err(|f| self.fail(Operation::Put, key, f))?;
        let written = file
            .write_all(data)
            .and_then(|()| file.sync_all())
            .map_err(|e| FsFail::new(format!("cannot write {}", tmp.display()), e));
        drop(file);
        let result = written
            .map_err(|f| self.fail(Operation::Put, key, f))
            .and_then(|()| self.publish(Operation::Put, key, &tmp, &path, mode));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| ObjectMeta {
            key: key.clone(),
            size: data.len() as u64,
            modified: None,
        })
    }

    /// Opens `key` for reading: the file and its metadata.
    fn open_blocking(&self, op: Operation, key: &Key) -> Result<(File, fs::Metadata)> {
        let path = self.path_of(key);
        let file = File::open(&path).map_err(|e| self.read_fail(op, key, &path, e))?;
        let meta = file.metadata().map_err(|e| self.read_fail(op, key, &path, e))?;
        if !meta.is_file() {
            return Err(self.not_found(op, key));
        }
        Ok((file, meta))
    }

    fn head_blocking(&self, key: &Key) -> Result<ObjectMeta> {
        let path = self.path_of(key);
        let meta = fs::metadata(&path).map_err(|e| self.read_fail(Operation::Head, key, &path, e))?;
        if !meta.is_file() {
            return Err(self.not_found(Operation::Head, key));
        }
        Ok(ObjectMeta {
            key: key.clone(),
            size: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    /// A failed open or stat of an object's file: missing files and missing
    /// directories (a parent is an object, not a directory) mean "no such
    /// object".
    fn read_fail(&self, op: Operation, key: &Key, path: &Path, e: io::Error) -> StoreError {
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => self.not_found(op, key).with_source(e),
            _ => self.fail(op, key, FsFail::new(format!("cannot open {}", path.display()), e)),
        }
    }

    fn delete_blocking(&self, key: &Key) -> Result<(), FsFail> {
        let root = &self.inner.root;
        let path = self.path_of(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                return Ok(())
            }
            // A directory of other objects, not an object: nothing to delete.
            Err(_) if path.is_dir() => return Ok(()),
            Err(e) => return Err(FsFail::new(format!("cannot remove {}", path.display()), e)),
        }
        // Prune directories the delete left empty. A concurrent put into one
        // of them retries after recreating it (see `create_tmp`).
        let mut dir = path.parent().expect("an object path lies below the root");
        while dir != root && dir.starts_with(root) && fs::remove_dir(dir).is_ok() {
            dir = dir.parent().expect("a directory below the root has a parent");
        }
        // Make the removal durable. If a concurrent delete pruned the
        // directory meanwhile, its parent holds the change to sync.
        loop {
            match sync_dir(dir) {
                Err(f) if f.err.kind() == io::ErrorKind::NotFound && dir != root && dir.starts_with(root) => {
                    dir = dir.parent().expect("a directory below the root has a parent");
                }
                result => return result,
            }
        }
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectMeta>, FsFail> {
        let mut out = Vec::new();
        // Start at the deepest directory the prefix names in full.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let mut start = self.inner.root.clone();
        if !dir_part.is_empty() {
            for seg in dir_part[..dir_part.len() - 1].split('/') {
                let plausible =
                    !seg.is_empty() && seg != "." && seg != ".." && seg.bytes().all(|b| b.is_ascii_graphic());
                if !plausible {
                    // No valid key has such a segment.
                    return Ok(out);
                }
                start.push(seg);
            }
        }
        walk(&start, dir_part, prefix, &mut Vec::new(), &mut out)?;
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// Collects the objects under `dir` (whose keys start with `rel`) whose keys
/// start with `prefix`, descending only into directories that can hold such
/// keys.
///
/// `ancestors` holds the (device, inode) of the directories above `dir`, so
/// that a symbolic link back up the tree is not walked round and round.
fn walk(
    dir: &Path,
    rel: &str,
    prefix: &str,
    ancestors: &mut Vec<(u64, u64)>,
    out: &mut Vec<ObjectMeta>,
) -> Result<(), FsFail> {
    use std::os::unix::fs::MetadataExt;
    let list_fail = |e: io::Error| FsFail::new(format!("cannot list {}", dir.display()), e);
    // A missing directory, or an object where a directory would be:
    // nothing under it.
    let absent = |e: &io::Error| matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory);
    let id = match fs::metadata(dir) {
        Ok(meta) => (meta.dev(), meta.ino()),
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err(list_fail(e)),
    };
    if ancestors.contains(&id) {
        return Ok(());
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err(list_fail(e)),
    };
    ancestors.push(id);
    let result = walk_entries(dir, entries, rel, prefix, ancestors, out);
    ancestors.pop();
    result
}

/// The body of [`walk`]: the entries of `dir`.
fn walk_entries(
    dir: &Path,
    entries: fs::ReadDir,
    rel: &str,
    prefix: &str,
    ancestors: &mut Vec<(u64, u64)>,
    out: &mut Vec<ObjectMeta>,
) -> Result<(), FsFail> {
    let list_fail = |e: io::Error| FsFail::new(format!("cannot list {}", dir.display()), e);
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(list_fail(e)),
        };
        let Ok(name) = entry.file_name().into_string() else {
            continue; // Not a name pgark writes.
        };
        let full = format!("{rel}{name}");
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(list_fail(e)),
        };
        // Symbolic links are followed, as `get` follows them.
        let (is_dir, meta) = if file_type.is_dir() {
            (true, None)
        } else if file_type.is_file() && !full.starts_with(prefix) {
            continue;
        } else {
            let meta = if file_type.is_symlink() {
                fs::metadata(entry.path())
            } else {
                entry.metadata()
            };
            match meta {
                Ok(meta) => (meta.is_dir(), Some(meta)),
                // Deleted meanwhile, or a dangling link.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(list_fail(e)),
            }
        };
        if is_dir {
            let child = format!("{full}/");
            let may_hold_matches = child.starts_with(prefix) || prefix.starts_with(&child);
            if child.len() <= Key::MAX_LEN && may_hold_matches {
                walk(&entry.path(), &child, prefix, ancestors, out)?;
            }
        } else if let Some(meta) = meta.filter(|m| m.is_file()) {
            if full.starts_with(prefix) && !name.ends_with(TMP_SUFFIX) {
                // Skips files whose names are not keys (not written by pgark).
                if let Ok(key) = Key::new(full) {
                    out.push(ObjectMeta {
                        key,
                        size: meta.len(),
                        modified: meta.modified().ok(),
                    });
                }
            }
        }
    }
    Ok(())
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.url)
    }
}

impl fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStore")
            .field("root", &self.inner.root)
            .finish()
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    /// Parts are plain writes to the temporary file a single put writes
    /// too (same `fsync`, publication and directory `fsync`).
    fn streaming_part_size(&self) -> Option<usize> {
        Some(256 << 10)
    }

    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<ObjectMeta> {
        let this = self.clone();
        let k = key.clone();
        self.blocking(Operation::Put, key, move || this.put_blocking(&k, &data, mode))
            .await
    }

    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn MultipartUpload>> {
        let this = self.clone();
        let k = key.clone();
        self.blocking(Operation::Put, key, move || {
            let path = this.path_of(&k);
            let (tmp, file) = this
                .create_tmp(&path)
                .map_err(|f| this.fail(Operation::Put, &k, f))?;
            Ok(Box::new(LocalUpload {
                store: this,
                key: k,
                mode,
                path,
                tmp,
                file: Some(file),
                size: 0,
                finished: false,
            }) as Box<dyn MultipartUpload>)
        })
        .await
    }

    async fn get(&self, key: &Key) -> Result<GetResult> {
        let this = self.clone();
        let k = key.clone();
        let (file, file_meta) = self
            .blocking(Operation::Get, key, move || {
                this.open_blocking(Operation::Get, &k)
            })
            .await?;
        let size = file_meta.len();
        let meta = ObjectMeta {
            key: key.clone(),
            size,
            modified: file_meta.modified().ok(),
        };
        Ok(GetResult {
            meta,
            stream: read_stream(self.clone(), key.clone(), file, size),
        })
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let this = self.clone();
        let k = key.clone();
        self.blocking(Operation::Head, key, move || this.head_blocking(&k))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let this = self.clone();
        let p = prefix.to_owned();
        self.blocking(Operation::List, &prefix, move || {
            this.list_blocking(&p)
                .map_err(|f| this.fail(Operation::List, &p, f))
        })
        .await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let this = self.clone();
        let k = key.clone();
        self.blocking(Operation::Delete, key, move || {
            this.delete_blocking(&k)
                .map_err(|f| this.fail(Operation::Delete, &k, f))
        })
        .await
    }

    async fn leftovers(&self, before: std::time::SystemTime) -> Result<Vec<crate::Leftover>> {
        let this = self.clone();
        self.blocking(Operation::List, &"scratch files", move || {
            crate::scratch::find(&this.inner.root, TMP_SUFFIX, before).map_err(|e| {
                let what = format!(
                    "cannot look for scratch files under {}",
                    this.inner.root.display()
                );
                this.fail(Operation::List, "*.pgark-tmp", FsFail::new(what, e))
            })
        })
        .await
    }

    async fn remove_leftover(&self, leftover: &crate::Leftover) -> Result<()> {
        let crate::LeftoverHandle::File(path) = &leftover.handle else {
            return Ok(());
        };
        let this = self.clone();
        let path = path.clone();
        let name = leftover.name.clone();
        self.blocking(Operation::Delete, &leftover.name, move || {
            crate::scratch::remove(&path).map_err(|e| {
                this.fail(
                    Operation::Delete,
                    &name,
                    FsFail::new(format!("cannot remove {}", path.display()), e),
                )
            })
        })
        .await
    }
}

/// Streams `size` bytes of `file` in [`READ_CHUNK`] pieces, each read on the
/// blocking pool. Ends with an error if the file turns out shorter or longer
/// than `size`, so a consumer never takes a changed file for the object.
fn read_stream(store: LocalStore, key: Key, file: File, size: u64) -> ByteStream {
    struct State {
        store: LocalStore,
        key: Key,
        file: Option<File>,
        remaining: u64,
    }
    let state = State {
        store,
        key,
        file: Some(file),
        remaining: size,
    };
    Box::pin(futures::stream::try_unfold(state, |mut st| async move {
        let Some(file) = st.file.take() else {
            return Ok(None);
        };
        let key = st.key.clone();
        let remaining = st.remaining;
        // Below one chunk, ask for one byte more than is left, to notice a
        // file that grew; a short read means end of file.
        let want = remaining.min(READ_CHUNK as u64) + u64::from(remaining < READ_CHUNK as u64);
        let (file, buf, read) = st
            .store
            .blocking(Operation::Read, &key, move || {
                let mut buf = Vec::with_capacity(want as usize);
                let read = (&file).take(want).read_to_end(&mut buf);
                Ok((file, buf, read))
            })
            .await?;
        if let Err(e) = read {
            let what = format!("cannot read {}", st.store.path_of(&st.key).display());
            return Err(st.store.fail(Operation::Read, &st.key, FsFail::new(what, e)));
        }
        let got = buf.len() as u64;
        let eof = got < want;
        if got > remaining || (eof && got < remaining) {
            let msg = format!(
                "{} changed size while being read",
                st.store.path_of(&st.key).display()
            );
            return Err(StoreError::new(
                ErrorKind::Permanent,
                Operation::Read,
                &st.store,
                &st.key,
                msg,
            ));
        }
        if got == 0 {
            return Ok(None);
        }
        st.remaining -= got;
        if !eof {
            st.file = Some(file);
        }
        Ok(Some((Bytes::from(buf), st)))
    }))
}

/// An upload into a temporary file, published by [`MultipartUpload::complete`].
struct LocalUpload {
    store: LocalStore,
    key: Key,
    mode: PutMode,
    path: PathBuf,
    tmp: PathBuf,
    /// `None` only while a part is being written, or after such a write was
    /// cancelled half-way (the upload is then unusable).
    file: Option<File>,
    size: u64,
    /// Completed or aborted: the temporary file is no longer ours to remove.
    finished: bool,
}

impl LocalUpload {
    fn interrupted(&self, op: Operation) -> StoreError {
        StoreError::new(
            ErrorKind::Permanent,
            op,
            &self.store,
            &self.key,
            "the upload was interrupted by a cancelled part write; abort it",
        )
    }
}

#[async_trait]
impl MultipartUpload for LocalUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| self.interrupted(Operation::PutPart))?;
        let len = data.len() as u64;
        let (file, written) = self
            .store
            .blocking(Operation::PutPart, &self.key, move || {
                let written = file.write_all(&data);
                Ok((file, written))
            })
            .await?;
        self.file = Some(file);
        match written {
            Ok(()) => {
                self.size += len;
                Ok(())
            }
            Err(e) => {
                let what = format!("cannot write {}", self.tmp.display());
                Err(self
                    .store
                    .fail(Operation::PutPart, &self.key, FsFail::new(what, e)))
            }
        }
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta> {
        let Some(file) = self.file.take() else {
            return Err(self.interrupted(Operation::Complete));
        };
        // From here on the blocking task owns the temporary file, removes it
        // on failure, and runs to the end even if this future is dropped.
        self.finished = true;
        let store = self.store.clone();
        let key = self.key.clone();
        let (tmp, path, mode, size) = (self.tmp.clone(), self.path.clone(), self.mode, self.size);
        drop(self);
        let k = key.clone();
        store
            .clone()
            .blocking(Operation::Complete, &key, move || {
                let result = file
                    .sync_all()
                    .map_err(|e| {
                        let what = format!("cannot sync {}", tmp.display());
                        store.fail(Operation::Complete, &k, FsFail::new(what, e))
                    })
                    .and_then(|()| {
                        drop(file);
                        store.publish(Operation::Complete, &k, &tmp, &path, mode)
                    });
                if result.is_err() {
                    let _ = fs::remove_file(&tmp);
                }
                result.map(|()| ObjectMeta {
                    key: k,
                    size,
                    modified: None,
                })
            })
            .await
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.finished = true;
        self.file = None;
        let tmp = self.tmp.clone();
        let key = self.key.clone();
        let store = self.store.clone();
        drop(self);
        let (s, k) = (store.clone(), key.clone());
        store
            .blocking(Operation::Abort, &key, move || match fs::remove_file(&tmp) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => {
                    let what = format!("cannot remove {}", tmp.display());
                    Err(s.fail(Operation::Abort, &k, FsFail::new(what, e)))
                }
            })
            .await
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if !self.finished {
            // Neither completed nor aborted: discard. One unlink is cheap
            // enough to do on an async worker.
            self.file = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A failed filesystem step: what was being done (naming the path) and why.
#[derive(Debug)]
struct FsFail {
    what: String,
    err: io::Error,
}

impl FsFail {
    fn new(what: impl Into<String>, err: io::Error) -> Self {
        FsFail {
            what: what.into(),
            err,
        }
    }
}

impl fmt::Display for FsFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.err)
    }
}

fn url_of(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A fresh temporary name next to `path`: `<name>.<16 hex>.pgark-tmp`.
fn tmp_path_for(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    // Keys are ASCII, so any byte offset is a character boundary; the check
    // keeps this panic-free for any name.
    let mut stem_len = name.len().min(TMP_STEM_MAX);
    while !name.is_char_boundary(stem_len) {
        stem_len -= 1;
    }
    let tmp = format!("{}.{:016x}{TMP_SUFFIX}", &name[..stem_len], rand::random::<u64>());
    path.with_file_name(tmp)
}

/// `fsync`s a directory, making the entries created, renamed or removed in
/// it durable. Filesystems that cannot sync directories (they say
/// `EINVAL`/`ENOTSUP`) are accepted as they are.
fn sync_dir(dir: &Path) -> Result<(), FsFail> {
    let result = File::open(dir).and_then(|d| d.sync_all());
    match result {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.kind(), io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported) => Ok(()),
        Err(e) => Err(FsFail::new(format!("cannot sync directory {}", dir.display()), e)),
    }
}

/// `fsync`s `dir` and every directory above it up to and including `root`.
/// For directories whose entries are already durable this costs little, and
/// it also covers directories that a concurrent put created but has not yet
/// synced.
fn sync_dirs_up_to(dir: &Path, root: &Path) -> Result<(), FsFail> {
    let mut dir = dir;
    loop {
        match sync_dir(dir) {
            // Pruned by a concurrent delete (of this very object, as the
            // directory held it): nothing left to make durable here.
            Err(f) if f.err.kind() == io::ErrorKind::NotFound && dir != root => {}
            result => result?,
        }
        if dir == root || !dir.starts_with(root) {
            return Ok(());
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => return Ok(()),
        }
    }
}

/// Objects are readable by the owner and group only: a repository holds a
/// copy of the whole database. (The process umask can narrow this further.)
const OBJECT_MODE: u32 = 0o640;
/// Directories likewise.
const DIR_MODE: u32 = 0o750;

fn mkdir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(DIR_MODE).create(dir)
}

/// Nothing is at `path` any more (not even a dangling link).
fn vanished(path: &Path) -> bool {
    matches!(fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// Creates `dir` and its missing ancestors, `fsync`ing the parent of each
/// directory it creates. With `floor` set, never creates `floor` itself (the
/// repository root): if it has vanished, that is an error rather than
/// something to paper over (it may be an unmounted disk).
fn create_dir_all_durable(dir: &Path, floor: Option<&Path>) -> Result<(), FsFail> {
    if dir.is_dir() {
        return Ok(());
    }
    if Some(dir) == floor {
        return Err(FsFail::new(
            format!("the repository directory {} does not exist", dir.display()),
            io::Error::from(io::ErrorKind::NotFound),
        ));
    }
    let mkdir_fail = |e: io::Error| {
        let in_the_way = matches!(
            e.kind(),
            io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory
        );
        if in_the_way && floor.is_some() {
            // Inside the repository, something that is not a directory is in
            // the way: most likely an object whose key is a prefix of this one.
            let what = format!(
                "cannot create directory {}: an object or other file is in the way \
                 (a local repository cannot hold both an object `x` and objects under `x/`)",
                dir.display()
            );
            FsFail::new(what, io::Error::new(io::ErrorKind::NotADirectory, e))
        } else {
            FsFail::new(format!("cannot create directory {}", dir.display()), e)
        }
    };
    let parent = dir.parent();
    match mkdir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && (dir.is_dir() || vanished(dir)) => {
            // There, or there and since pruned by a concurrent delete (the
            // caller then finds it missing and creates it again).
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && parent.is_some() => {
            // A concurrent delete may prune the parent again between our
            // mkdirs (it removes empty directories): try a few times.
            let mut attempt = 0;
            loop {
                attempt += 1;
                create_dir_all_durable(parent.expect("checked"), floor)?;
                match mkdir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && (dir.is_dir() || vanished(dir)) => {
                        return Ok(())
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < TMP_ATTEMPTS => {}
                    Err(e) => return Err(mkdir_fail(e)),
                }
            }
        }
        Err(e) => return Err(mkdir_fail(e)),
    }
    match parent.map(sync_dir) {
        // A concurrent delete pruned `dir` (still empty) and then its
        // parent: nothing to make durable; the caller finds the directory
        // missing and creates it again.
        Some(Err(f)) if f.err.kind() == io::ErrorKind::NotFound => Ok(()),
        Some(result) => result,
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_never_keys_and_stay_short() {
        let tmp = tmp_path_for(Path::new("/r/wal/000000010000000000000001"));
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("000000010000000000000001."), "{name}");
        assert!(name.ends_with(TMP_SUFFIX), "{name}");
        assert!(Key::new(format!("wal/{name}")).is_err());
        assert_ne!(tmp, tmp_path_for(Path::new("/r/wal/000000010000000000000001")));

        let long = "x".repeat(250);
        let tmp = tmp_path_for(&Path::new("/r").join(&long));
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(name.len() <= 255, "{} bytes", name.len());
        assert!(Key::new(name).is_err());
    }

    #[test]
    fn implausible_list_prefixes_match_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        fs::write(dir.path().join("a"), b"x").unwrap();
        for prefix in ["../", "/", "//a", "./a", "a/../", "x/../a"] {
            assert!(store.list_blocking(prefix).unwrap().is_empty(), "{prefix}");
        }
        assert_eq!(store.list_blocking("").unwrap().len(), 1);
    }

    #[test]
    fn root_is_absolute_and_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let with_dot = dir.path().join(".").join("repo").join("");
        let store = LocalStore::new(&with_dot).unwrap();
        assert_eq!(store.root(), dir.path().join("repo"));
        assert_eq!(
            store.to_string(),
            format!("file://{}", dir.path().join("repo").display())
        );
        assert!(store.to_string().starts_with("file:///"));
    }
}
