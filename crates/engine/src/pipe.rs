//! Bridges between the synchronous codec stages (run on the blocking pool)
//! and the asynchronous store (run on the runtime). Each bridge is a bounded
//! channel of `Bytes` chunks, so memory per stream is at most
//! `CHANNEL_DEPTH x CHUNK_SIZE` plus the codec's own buffers.
//!
//! An upload's stream ends successfully only when its producer said so
//! ([`ChannelWriter::finish`], then returned `Ok`); a producer that fails,
//! panics or forgets to finish ends the stream with an error, so the store
//! discards the upload instead of storing a truncated object.

use crate::EngineError;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use pgark_codec::{CompressionSpec, DigestAlgorithm, ObjectReader, ObjectSummary, ObjectWriter};
use pgark_crypto::DataKey;
use pgark_store::{put_stream, ByteStream, Key, ObjectMeta, ObjectStore, StoreError, UploadOptions};
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Size of the chunks handed between the blocking pool and the runtime:
/// large enough that a chunk's hand-over costs nothing beside its encoding,
/// small enough that the chunks in flight of every stream stay a few MiB.
pub(crate) const CHUNK_SIZE: usize = 256 << 10;
/// Chunks in flight per upload stream.
pub(crate) const CHANNEL_DEPTH: usize = 4;
/// Chunks in flight per download, in the store's own chunk size (256 KiB
/// from a local repository, network reads otherwise): one being decoded,
/// one read ahead.
const DOWNLOAD_DEPTH: usize = 2;

/// How a producer's output is handed to the store: chunk size and chunks in
/// flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bridge {
    chunk: usize,
    depth: usize,
}

impl Bridge {
    /// Backups: `CHANNEL_DEPTH` chunks of `CHUNK_SIZE`.
    pub(crate) const DEFAULT: Bridge = Bridge {
        chunk: CHUNK_SIZE,
        depth: CHANNEL_DEPTH,
    };
    /// wal-push: one compressed segment (about 4 MiB at zstd's level 3), in
    /// process start-up to exit; 256 KiB in flight is plenty to keep a store
    /// busy and keeps its peak memory down.
    pub(crate) const SEGMENT: Bridge = Bridge {
        chunk: 128 << 10,
        depth: 2,
    };
}

/// A `Write` that sends what it is given, in `CHUNK_SIZE` pieces, into a
/// bounded channel; blocks while the channel is full. The stream is whole
/// only after [`finish`](Self::finish).
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, StoreError>>,
    buf: BytesMut,
    chunk: usize,
    finished: Arc<AtomicBool>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Result<Bytes, StoreError>>, chunk: usize, finished: Arc<AtomicBool>) -> Self {
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(chunk),
            chunk,
            finished,
        }
    }

    /// Sends what is left and marks the stream complete. Without it, the
    /// upload is discarded however the producer ends.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.send_buf()?;
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.chunk {
            self.send_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// A `Read` over a bounded channel of chunks fed from the runtime.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, StoreError>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Runs `produce` on the blocking pool, giving it a [`ChannelWriter`], while
/// uploading everything it writes under `key`. Atomic per the store's
/// contract: if either side fails, nothing is visible under `key` (and an
/// object already there is untouched).
///
/// The stream handed to the store ends only once `produce` has called
/// [`ChannelWriter::finish`] and returned `Ok`; otherwise its last item is
/// an error, which makes [`put_stream`] abort (before the single put of a
/// small object, or instead of completing a multipart upload).
#[cfg(test)]
pub(crate) async fn upload_from<T, F>(
    store: &dyn ObjectStore,
    key: &Key,
    upload: UploadOptions,
    produce: F,
) -> Result<(ObjectMeta, T), EngineError>
where
    T: Send + 'static,
    F: FnOnce(ChannelWriter) -> Result<T, EngineError> + Send + 'static,
{
    upload_from_with(store, key, upload, Bridge::DEFAULT, produce).await
}

/// [`upload_from`] over a bridge of the given size.
async fn upload_from_with<T, F>(
    store: &dyn ObjectStore,
    key: &Key,
    upload: UploadOptions,
    bridge: Bridge,
    produce: F,
) -> Result<(ObjectMeta, T), EngineError>
where
    T: Send + 'static,
    F: FnOnce(ChannelWriter) -> Result<T, EngineError> + Send + 'static,
{
    let (uploaded, produced) = upload_and_produce_with(store, key, upload, bridge, produce).await?;
    match (uploaded, produced) {
        (Ok(meta), Ok(value)) => Ok((meta, value)),
        (Err(e), Ok(_)) => Err(e.into()),
        (_, Err(Produced::Failed(e))) => Err(e),
        (Err(e), Err(Produced::Stopped(_))) => Err(e.into()),
        (Ok(_), Err(Produced::Stopped(e))) => Err(e),
    }
}

/// How a producer ended when it did not succeed.
pub(crate) enum Produced {
    /// It failed on its own (a read error, a bug): the cause of the failure.
    Failed(EngineError),
    /// It stopped because the upload had failed (its channel was closed):
    /// only a consequence.
    Stopped(EngineError),
}

/// [`upload_from`], returning both sides' outcomes: the caller may want the
/// producer's value even though the store refused the upload (a create-only
/// put that met an earlier attempt's object).
pub(crate) async fn upload_and_produce<T, F>(
    store: &dyn ObjectStore,
    key: &Key,
    upload: UploadOptions,
    produce: F,
) -> Result<(Result<ObjectMeta, StoreError>, Result<T, Produced>), EngineError>
where
    T: Send + 'static,
    F: FnOnce(ChannelWriter) -> Result<T, EngineError> + Send + 'static,
{
    upload_and_produce_with(store, key, upload, Bridge::DEFAULT, produce).await
}

/// [`upload_and_produce`] over a bridge of the given size.
async fn upload_and_produce_with<T, F>(
    store: &dyn ObjectStore,
    key: &Key,
    upload: UploadOptions,
    bridge: Bridge,
    produce: F,
) -> Result<(Result<ObjectMeta, StoreError>, Result<T, Produced>), EngineError>
where
    T: Send + 'static,
    F: FnOnce(ChannelWriter) -> Result<T, EngineError> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(bridge.depth);
    let (done_tx, mut done_rx) = oneshot::channel::<bool>();
    let finished = Arc::new(AtomicBool::new(false));
    let writer = ChannelWriter::new(tx, bridge.chunk, finished.clone());
    let producer = tokio::task::spawn_blocking(move || {
        let out = produce(writer);
        // The writer is gone (dropped inside `produce`): the channel is
        // closed. Only now may the stream end, and only on success.
        let _ = done_tx.send(out.is_ok() && finished.load(Ordering::SeqCst));
        out
    });
    let source_failed = Arc::new(AtomicBool::new(false));
    let failed_flag = source_failed.clone();
    let store_name = store.to_string();
    let key_name = key.to_string();
    let mut ended = false;
    let chunks = Box::pin(futures::stream::poll_fn(move |cx| {
        use std::task::Poll;
        if ended {
            return Poll::Ready(None);
        }
        match rx.poll_recv(cx) {
            Poll::Ready(None) => {}
            other => return other,
        }
        let complete = match std::pin::Pin::new(&mut done_rx).poll(cx) {
            Poll::Pending => return Poll::Pending,
            // A producer that panicked never says.
            Poll::Ready(said) => said.unwrap_or(false),
        };
        ended = true;
        if complete {
            return Poll::Ready(None);
        }
        failed_flag.store(true, Ordering::SeqCst);
        Poll::Ready(Some(Err(StoreError::new(
            pgark_store::ErrorKind::Permanent,
            pgark_store::Operation::Put,
            &store_name,
            &key_name,
            "the data being uploaded could not be produced whole; the upload was discarded",
        ))))
    }));
    let uploaded = put_stream(store, key, chunks, upload).await;
    let produced = producer
        .await
        .map_err(|e| EngineError::Internal(format!("producer task failed: {e}")))?;
    let produced = match produced {
        Ok(_) if source_failed.load(Ordering::SeqCst) => Err(Produced::Failed(EngineError::Internal(
            format!("the producer of {key} ended without finishing its stream"),
        ))),
        Ok(value) => Ok(value),
        // A local read error is the cause even if the upload failed too.
        Err(e @ EngineError::LocalIo { .. }) => Err(Produced::Failed(e)),
        // If the upload failed, the receiver is gone and the producer
        // stopped at its next send; its error is then only a consequence.
        Err(e) if uploaded.is_err() && !source_failed.load(Ordering::SeqCst) => Err(Produced::Stopped(e)),
        Err(e) => Err(Produced::Failed(e)),
    };
    Ok((uploaded, produced))
}

/// Reads the local file at `path`, encodes it as a pgark object and stores
/// it under `key`.
pub(crate) async fn upload_file(
    store: &dyn ObjectStore,
    key: &Key,
    path: &Path,
    spec: CompressionSpec,
    data_key: Option<&DataKey>,
    upload: UploadOptions,
) -> Result<(ObjectMeta, ObjectSummary), EngineError> {
    let src = path.to_path_buf();
    let data_key = data_key.cloned();
    let name = key.as_str().to_string();
    upload_from_with(store, key, upload, Bridge::SEGMENT, move |sink| {
        encode_file(&src, spec, data_key.as_ref(), &name, sink)
    })
    .await
}

/// A new object writer whose trailer records `digest`, encrypting under
/// `data_key` (for the object `name`) when the repository is encrypted.
pub(crate) fn object_writer<W: Write>(
    sink: W,
    spec: CompressionSpec,
    digest: DigestAlgorithm,
    data_key: Option<&DataKey>,
    name: &str,
) -> Result<ObjectWriter<W>, EngineError> {
    ObjectWriter::with_options(sink, spec, digest, data_key.map(|k| (k, name)))
        .map_err(|e| EngineError::Internal(e.to_string()))
}

/// A new verifying reader: with a data key the object must be encrypted
/// under it for `key` (an unencrypted object in an encrypted repository
/// was not written by pgark and is refused as damaged).
pub(crate) fn object_reader<R: Read>(
    source: R,
    data_key: Option<&DataKey>,
    key: &Key,
) -> Result<ObjectReader<R>, EngineError> {
    let reader =
        ObjectReader::new_with_key(source, data_key, key.as_str()).map_err(|e| classify_decode(key, e))?;
    if data_key.is_some() && !reader.is_encrypted() {
        return Err(EngineError::Integrity {
            key: key.to_string(),
            source: pgark_codec::CodecError::Crypto(pgark_crypto::CryptoError::NotEncryptedStream {
                reason: "an unencrypted object in an encrypted repository".into(),
            }),
        });
    }
    Ok(reader)
}

fn encode_file(
    path: &Path,
    spec: CompressionSpec,
    data_key: Option<&DataKey>,
    name: &str,
    sink: ChannelWriter,
) -> Result<ObjectSummary, EngineError> {
    let file = std::fs::File::open(path).map_err(|e| EngineError::local_io("cannot open", path, e))?;
    let expected = file
        .metadata()
        .map_err(|e| EngineError::local_io("cannot stat", path, e))?
        .len();
    let writer = object_writer(sink, spec, DigestAlgorithm::Sha256, data_key, name)?;
    // The whole file in one call: a zstd object is then compressed from one
    // stable buffer (see `ObjectWriter::finish_from`). The source remembers
    // its own read errors and length, which tell a file that failed or
    // changed from an upload that stopped.
    let mut source = CountingSource {
        file,
        read: 0,
        ended: false,
        error: None,
    };
    let finished = writer.finish_from(&mut source, expected);
    if let Some(e) = source.error.take() {
        return Err(EngineError::local_io("cannot read", path, e));
    }
    // A file cut short (or grown) while it was read is not the file that
    // was checked: store nothing rather than a copy of another length. (A
    // read that merely stopped early, because the upload failed, is not.)
    if (source.ended && source.read < expected) || source.read > expected {
        let read = if source.read > expected {
            format!("more than {expected}")
        } else {
            source.read.to_string()
        };
        return Err(EngineError::local_io(
            "cannot read",
            path,
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file changed size while it was read ({expected} bytes, then {read})"),
            ),
        ));
    }
    let (sink, summary) = finished.map_err(|e| match e {
        pgark_codec::CodecError::Io(e) => upload_stopped(e),
        e => EngineError::Internal(e.to_string()),
    })?;
    sink.finish().map_err(upload_stopped)?;
    Ok(summary)
}

/// The file being pushed: counts what it hands out and keeps its read
/// error aside.
struct CountingSource {
    file: std::fs::File,
    read: u64,
    /// A read returned end of file.
    ended: bool,
    error: Option<io::Error>,
}

impl Read for CountingSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.file.read(buf) {
            Ok(n) => {
                self.read += n as u64;
                self.ended |= n == 0 && !buf.is_empty();
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let kind = e.kind();
                self.error = Some(e);
                Err(io::Error::new(kind, "the source could not be read"))
            }
        }
    }
}

fn upload_stopped(e: io::Error) -> EngineError {
    EngineError::Internal(format!("encoding stopped: {e}"))
}

/// Streams the object `key` through a verifying decoder and hands the
/// decoder to `consume` on the blocking pool. The decoder reports EOF only
/// after the object's length and checksum were verified.
pub(crate) async fn decode_object<T, F>(
    store: &dyn ObjectStore,
    key: &Key,
    data_key: Option<&DataKey>,
    consume: F,
) -> Result<T, EngineError>
where
    T: Send + 'static,
    F: FnOnce(&mut ObjectReader<ChannelReader>) -> Result<T, EngineError> + Send + 'static,
{
    let got = store.get(key).await?;
    let (tx, rx) = mpsc::channel(DOWNLOAD_DEPTH);
    let forward = forward_stream(got.stream, tx);
    let key_owned = key.clone();
    let data_key = data_key.cloned();
    let decoder = tokio::task::spawn_blocking(move || {
        let source = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        let mut reader = object_reader(source, data_key.as_ref(), &key_owned)?;
        consume(&mut reader)
    });
    let ((), decoded) = tokio::join!(forward, decoder);
    decoded.map_err(|e| EngineError::Internal(format!("decoder task failed: {e}")))?
}

async fn forward_stream(mut stream: ByteStream, tx: mpsc::Sender<Result<Bytes, StoreError>>) {
    while let Some(item) = stream.next().await {
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            return;
        }
    }
}

/// Reads and verifies the whole object `key` without keeping it.
pub(crate) async fn verify_object(
    store: &dyn ObjectStore,
    key: &Key,
    data_key: Option<&DataKey>,
) -> Result<ObjectSummary, EngineError> {
    let key_owned = key.clone();
    decode_object(store, key, data_key, move |reader| {
        copy_decoded(&key_owned, reader, &mut io::sink(), Path::new("/dev/null"))?;
        verified_summary(&key_owned, reader)
    })
    .await
}

/// Downloads the object `key`, decodes and verifies it into `dest`.
///
/// Writes a temporary file beside `dest`, fsyncs it, renames it into place
/// and fsyncs the directory. On any failure the temporary file is removed
/// and `dest` is untouched.
pub(crate) async fn download_to_file(
    store: &dyn ObjectStore,
    key: &Key,
    dest: &Path,
    data_key: Option<&DataKey>,
) -> Result<ObjectSummary, EngineError> {
    let key_owned = key.clone();
    let dest_owned = dest.to_path_buf();
    decode_object(store, key, data_key, move |reader| {
        let tmp = TempFile::beside(&dest_owned)?;
        let mut out = std::io::BufWriter::with_capacity(256 << 10, &tmp.file);
        copy_decoded(&key_owned, reader, &mut out, &tmp.path)?;
        out.flush()
            .map_err(|e| EngineError::local_io("cannot write", &tmp.path, e))?;
        drop(out);
        let summary = verified_summary(&key_owned, reader)?;
        tmp.file
            .sync_all()
            .map_err(|e| EngineError::local_io("cannot fsync", &tmp.path, e))?;
        // On any error above, TempFile's Drop removes the partial file.
        tmp.persist(&dest_owned)?;
        Ok(summary)
    })
    .await
}

fn verified_summary<R: Read>(key: &Key, reader: &ObjectReader<R>) -> Result<ObjectSummary, EngineError> {
    reader
        .summary()
        .cloned()
        .ok_or_else(|| EngineError::Internal(format!("{key}: decoder ended without verification")))
}

fn copy_decoded<R: Read>(
    key: &Key,
    reader: &mut R,
    out: &mut impl Write,
    out_path: &Path,
) -> Result<(), EngineError> {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(classify_read_error(key, e)),
        };
        out.write_all(&buf[..n])
            .map_err(|e| EngineError::local_io("cannot write", out_path, e))?;
    }
}

/// A read error from the decoding chain is either the store failing (a
/// wrapped `StoreError`) or the object failing verification.
pub(crate) fn classify_read_error(key: &Key, e: io::Error) -> EngineError {
    use pgark_codec::CodecError;
    let ours = e
        .get_ref()
        .is_some_and(|i| i.is::<StoreError>() || i.is::<CodecError>());
    if !ours {
        // Anything else the decoder reports is a malformed object.
        return EngineError::Integrity {
            key: key.to_string(),
            source: CodecError::Io(e),
        };
    }
    let inner = e.into_inner().expect("get_ref returned Some");
    let inner = match inner.downcast::<StoreError>() {
        Ok(store) => return EngineError::Store { source: *store },
        Err(other) => other,
    };
    match inner.downcast::<CodecError>() {
        Ok(codec) => classify_decode(key, *codec),
        Err(other) => EngineError::Integrity {
            key: key.to_string(),
            source: CodecError::Io(io::Error::other(other)),
        },
    }
}

pub(crate) fn classify_decode(key: &Key, e: pgark_codec::CodecError) -> EngineError {
    match e {
        pgark_codec::CodecError::Io(io) => classify_read_error(key, io),
        other => EngineError::Integrity {
            key: key.to_string(),
            source: other,
        },
    }
}

/// A temporary file beside its destination, removed on drop unless
/// persisted.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    pub(crate) file: std::fs::File,
    persisted: bool,
}

impl TempFile {
    pub(crate) fn beside(dest: &Path) -> Result<TempFile, EngineError> {
        let dir = parent_dir(dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = dir.join(format!(".{name}.{:016x}.pgark-tmp", rand::random::<u64>()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| EngineError::local_io("cannot create", &path, e))?;
        Ok(TempFile {
            path,
            file,
            persisted: false,
        })
    }

    /// Renames into place and fsyncs the directory.
    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), EngineError> {
        std::fs::rename(&self.path, dest)
            .map_err(|e| EngineError::local_io("cannot rename into", dest, e))?;
        self.persisted = true;
        let dir = parent_dir(dest);
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| EngineError::local_io("cannot fsync directory", &dir, e))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgark_store::{LocalStore, MemoryStore, ObjectStoreExt, PutMode};

    const MIB: usize = 1 << 20;

    fn stores(dir: &Path) -> Vec<Arc<dyn ObjectStore>> {
        vec![
            Arc::new(MemoryStore::new()),
            Arc::new(LocalStore::new(dir.join("repo")).expect("local store")),
        ]
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Writes `len` bytes, then fails as a read error in the middle of a
    /// source file would.
    fn read_error_after(len: usize) -> impl FnOnce(ChannelWriter) -> Result<(), EngineError> + Send {
        move |mut sink| {
            sink.write_all(&pattern(len))
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            Err(EngineError::local_io(
                "cannot read",
                "/source/000000010000000000000004",
                io::Error::other("injected read error"),
            ))
        }
    }

    /// Issue 12, item 1: a producer that fails part-way used to close its
    /// channel like a finished one, and the store kept what had arrived
    /// under the final key. Small (one put) and large (multipart) objects,
    /// onto a free key (create-only) and over an older object (overwrite).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_producer_error_stores_nothing_and_leaves_an_older_object() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let old = Bytes::from_static(b"the older object");
            for (name, part_size, fail_after) in [
                ("nothing-sent", 8 * MIB, 1000),
                ("one-put", 8 * MIB, 3 * MIB + 5),
                ("multipart", MIB, 5 * MIB + 17),
            ] {
                for mode in [PutMode::Create, PutMode::Overwrite] {
                    let key = Key::new(format!("t/{name}-{mode:?}")).unwrap();
                    if mode == PutMode::Overwrite {
                        store.put(&key, old.clone(), PutMode::Overwrite).await.unwrap();
                    }
                    let opts = UploadOptions { part_size, mode };
                    let err = upload_from(&*store, &key, opts, read_error_after(fail_after))
                        .await
                        .expect_err("a failed producer fails the upload");
                    assert!(
                        matches!(err, EngineError::LocalIo { .. }) && err.to_string().contains("injected"),
                        "{store} {name} {mode:?}: the producer's error is reported: {err}"
                    );
                    match mode {
                        PutMode::Create => assert!(
                            !store.exists(&key).await.unwrap(),
                            "{store} {name}: a truncated object was stored"
                        ),
                        PutMode::Overwrite => assert_eq!(
                            store.get_bytes(&key).await.unwrap(),
                            old,
                            "{store} {name}: the older object was replaced"
                        ),
                    }
                    // The next attempt, whole, is stored.
                    let data = pattern(fail_after * 2);
                    let (meta, ()) = upload_from(&*store, &key, opts, move |mut sink| {
                        sink.write_all(&data).unwrap();
                        sink.finish().map_err(|e| EngineError::Internal(e.to_string()))
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{store} {name} {mode:?}: the retry fails: {e}"));
                    assert_eq!(meta.size, (fail_after * 2) as u64);
                    assert!(store.get_bytes(&key).await.unwrap() == pattern(fail_after * 2));
                }
            }
        }
    }

    /// A producer that returns `Ok` without finishing its stream (a bug)
    /// or panics stores nothing either.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_unfinished_or_panicking_producer_stores_nothing() {
        let store = MemoryStore::new();
        let opts = UploadOptions {
            part_size: MIB,
            mode: PutMode::Create,
        };
        let key = Key::new("t/unfinished").unwrap();
        let err = upload_from(&store, &key, opts, |mut sink| {
            sink.write_all(&pattern(2 * MIB + 1)).unwrap();
            Ok(())
        })
        .await
        .expect_err("an unfinished stream is not stored");
        assert!(err.to_string().contains("without finishing"), "{err}");
        assert!(!store.exists(&key).await.unwrap());

        let key = Key::new("t/panicked").unwrap();
        let res = upload_from(&store, &key, opts, |mut sink| -> Result<(), EngineError> {
            sink.write_all(&pattern(MIB / 2)).unwrap();
            panic!("producer bug");
        })
        .await;
        assert!(res.is_err());
        assert!(!store.exists(&key).await.unwrap());
    }
}
