//! Bridges between the synchronous codec stages (run on the blocking pool)
//! and the asynchronous store (run on the runtime). Each bridge is a bounded
//! channel of `Bytes` chunks, so memory per stream is at most
//! `CHANNEL_DEPTH x CHUNK_SIZE` plus the codec's own buffers.

use crate::EngineError;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use pgark_codec::{CompressionSpec, DigestAlgorithm, ObjectReader, ObjectSummary, ObjectWriter};
use pgark_crypto::DataKey;
use pgark_store::{put_stream, ByteStream, Key, ObjectMeta, ObjectStore, StoreError, UploadOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Size of the chunks handed between the blocking pool and the runtime.
pub(crate) const CHUNK_SIZE: usize = 1 << 20;
/// Chunks in flight per stream.
pub(crate) const CHANNEL_DEPTH: usize = 4;

/// A `Write` that sends what it is given, in `CHUNK_SIZE` pieces, into a
/// bounded channel; blocks while the channel is full.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, StoreError>>,
    buf: BytesMut,
}

impl ChannelWriter {
    pub(crate) fn new(tx: mpsc::Sender<Result<Bytes, StoreError>>) -> Self {
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK_SIZE),
        }
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
        if self.buf.len() >= CHUNK_SIZE {
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
/// contract: if either side fails, nothing is visible under `key`.
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
    let (tx, mut rx) = mpsc::channel(CHANNEL_DEPTH);
    let producer = tokio::task::spawn_blocking(move || produce(ChannelWriter::new(tx)));
    let chunks = Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let uploaded = put_stream(store, key, chunks, upload).await;
    // If the upload failed, the receiver is gone and the producer stops at
    // its next send; its error is then only a consequence.
    let produced = producer
        .await
        .map_err(|e| EngineError::Internal(format!("producer task failed: {e}")))?;
    match (uploaded, produced) {
        (Ok(meta), Ok(value)) => Ok((meta, value)),
        (_, Err(e @ EngineError::LocalIo { .. })) => Err(e),
        (Err(e), _) => Err(e.into()),
        (Ok(_), Err(e)) => Err(e),
    }
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
    upload_from(store, key, upload, move |sink| {
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
    let mut file = std::fs::File::open(path).map_err(|e| EngineError::local_io("cannot open", path, e))?;
    let mut writer = object_writer(sink, spec, DigestAlgorithm::Sha256, data_key, name)?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(EngineError::local_io("cannot read", path, e)),
        };
        writer.write_all(&buf[..n]).map_err(upload_stopped)?;
    }
    let (mut sink, summary) = writer
        .finish()
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    sink.flush().map_err(upload_stopped)?;
    Ok(summary)
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
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
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
