//! The conformance suite for [`ObjectStore`] backends.
//!
//! Every backend runs [`run_all`]; it checks the contracts documented on
//! [`ObjectStore`] and [`MultipartUpload`](pgark_store::MultipartUpload):
//! atomic and exact round trips, create-only puts (also when racing),
//! multipart uploads (completed, conflicting, aborted, dropped),
//! [`put_stream`] (also of streams that end with an error), listing semantics, modification times, not-found reporting and idempotent
//! deletes.
//!
//! Every key the suite touches lives under the prefix it is given, so a
//! cloud backend can run it in a shared bucket under a fresh prefix such as
//! `conformance/<random>/`. The suite panics with a message naming the check
//! and the store at the first failed expectation.
//!
//! The individual checks are public too, to run one alone while working on a
//! backend. Each expects nothing to exist under its prefix when it starts and
//! may leave objects behind.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use pgark_store::{
    put_stream, ErrorKind, Key, ObjectMeta, ObjectStore, ObjectStoreExt, Operation, PutMode, StoreError,
    UploadOptions,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const MIB: usize = 1 << 20;

/// How many requests the suite keeps in flight when it writes or deletes
/// many objects.
const PARALLEL: usize = 32;

/// Runs every check against `store`, each under its own sub-prefix of
/// `prefix`, and finally checks that cleaning up leaves nothing under
/// `prefix`.
///
/// `prefix` should end with `/` (one is appended otherwise) and must form
/// valid keys with the suite's names appended. Objects already under it are
/// deleted first.
pub async fn run_all(store: Arc<dyn ObjectStore>, prefix: &str) {
    let base = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    };
    let s: &dyn ObjectStore = &*store;
    let sub = |name: &str| format!("{base}{name}/");
    clear(s, &base).await;

    check_round_trip(s, &sub("round-trip")).await;
    check_get_stream(s, &sub("get-stream")).await;
    check_overwrite(s, &sub("overwrite")).await;
    check_create_only(s, &sub("create-only")).await;
    check_racing_puts(&store, &sub("racing")).await;
    check_multipart(s, &sub("multipart")).await;
    check_multipart_create_conflict(s, &sub("multipart-conflict")).await;
    check_multipart_abort_and_drop(s, &sub("multipart-abort")).await;
    check_put_stream(s, &sub("put-stream")).await;
    check_put_stream_error(s, &sub("put-stream-error")).await;
    check_modified(s, &sub("modified")).await;
    check_list(s, &sub("list")).await;
    check_list_many(s, &sub("list-many")).await;
    check_not_found(s, &sub("not-found")).await;
    check_delete(s, &sub("delete")).await;
    check_delete_many(s, &sub("delete-many")).await;
    check_key_characters(s, &sub("key-chars")).await;

    clear(s, &base).await;
    let ck = Check::new("cleanup", s);
    let left = ck.list(&base).await;
    if !left.is_empty() {
        ck.fail(format!("deleting everything under {base:?} left {left:?}"));
    }
}

/// Put, head and get of objects of assorted sizes and contents: ordinary,
/// empty, one byte, every byte value, and a few MiB of random bytes.
pub async fn check_round_trip(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("round trip", store);
    let every_byte: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).cycle().take(4096).collect();
    let objects: Vec<(&str, Bytes)> = vec![
        ("hello", Bytes::from_static(b"hello, repository\n")),
        ("empty", Bytes::new()),
        ("one-byte", Bytes::from_static(&[0x42])),
        ("nul-byte", Bytes::from_static(&[0])),
        ("every-byte-value", Bytes::from(every_byte)),
        ("random-3MiB+5", pattern(3 * MIB + 5, 1)),
    ];
    for (name, data) in &objects {
        let key = ck.key(format!("{prefix}{name}"));
        ck.put(&key, data.clone(), PutMode::Overwrite).await;
        let head = ck.ok(store.head(&key).await, format!("head {key}"));
        ck.meta_is(&head, &key, data.len(), "head");
        ck.same_bytes(&ck.get(&key).await, data, &format!("get {key}"));
        if !ck.ok(store.exists(&key).await, format!("exists {key}")) {
            ck.fail(format!("exists({key}) is false after a put"));
        }
    }
    // Nothing else appeared.
    let listed = ck.list(prefix).await;
    let want: Vec<(String, u64)> = {
        let mut v: Vec<_> = objects
            .iter()
            .map(|(n, d)| (format!("{prefix}{n}"), d.len() as u64))
            .collect();
        v.sort();
        v
    };
    if listed != want {
        ck.fail(format!(
            "list({prefix:?}) after the puts gave {listed:?}, expected {want:?}"
        ));
    }
}

/// A get stream yields exactly the object's bytes and then ends; a reader
/// that opened an object before it was overwritten or deleted sees the old
/// object whole or an error, never a mix; a stream dropped half-way does no
/// harm.
pub async fn check_get_stream(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("get stream", store);
    let key = ck.key(format!("{prefix}object"));
    let old = pattern(2 * MIB + 1, 2);
    ck.put(&key, old.clone(), PutMode::Overwrite).await;

    // Exact bytes, chunk by chunk.
    let got = ck.ok(store.get(&key).await, "get");
    ck.meta_is(&got.meta, &key, old.len(), "get");
    let mut offset = 0usize;
    let mut stream = got.stream;
    while let Some(chunk) = stream.next().await {
        let chunk = ck.ok(chunk, format!("reading {key} at offset {offset}"));
        if offset + chunk.len() > old.len() {
            ck.fail(format!(
                "the stream of {key} yields more than its {} bytes",
                old.len()
            ));
        }
        if chunk[..] != old[offset..offset + chunk.len()] {
            ck.fail(format!(
                "the stream of {key} yields wrong bytes at offset {offset}"
            ));
        }
        offset += chunk.len();
    }
    if offset != old.len() {
        ck.fail(format!(
            "the stream of {key} ended after {offset} of {} bytes",
            old.len()
        ));
    }

    // A reader that started before an overwrite.
    let new = pattern(2 * MIB + 1, 3);
    let mut got = ck.ok(store.get(&key).await, "get");
    let first = got.stream.next().await;
    ck.put(&key, new.clone(), PutMode::Overwrite).await;
    let rest: Result<Vec<Bytes>, StoreError> = got.stream.try_collect().await;
    if let (Some(Ok(first)), Ok(rest)) = (first, rest) {
        let mut read = first.to_vec();
        rest.iter().for_each(|c| read.extend_from_slice(c));
        if read[..] != old[..] {
            ck.fail("a read that began before an overwrite returned something other than the old object");
        }
    }
    ck.same_bytes(&ck.get(&key).await, &new, "get after the overwrite");

    // A reader that started before a delete.
    let mut got = ck.ok(store.get(&key).await, "get");
    let first = got.stream.next().await;
    ck.ok(store.delete(&key).await, "delete");
    let rest: Result<Vec<Bytes>, StoreError> = got.stream.try_collect().await;
    if let (Some(Ok(first)), Ok(rest)) = (first, rest) {
        let len = first.len() + rest.iter().map(Bytes::len).sum::<usize>();
        if len != new.len() {
            ck.fail(format!(
                "a read that began before a delete returned {len} bytes of {}",
                new.len()
            ));
        }
    }
    ck.expect_missing(&key).await;

    // Dropping a stream half-way.
    ck.put(&key, old.clone(), PutMode::Overwrite).await;
    let mut got = ck.ok(store.get(&key).await, "get");
    ck.ok(
        got.stream
            .next()
            .await
            .expect("a non-empty object yields a chunk"),
        "read",
    );
    drop(got);
    ck.same_bytes(&ck.get(&key).await, &old, "get after dropping a stream");
    ck.ok(store.delete(&key).await, "delete");
    ck.expect_missing(&key).await;
}

/// An overwriting put replaces the object, whatever the sizes.
pub async fn check_overwrite(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("overwrite", store);
    let key = ck.key(format!("{prefix}object"));
    for (i, len) in [1000usize, 10, 0, MIB + 17, 3].into_iter().enumerate() {
        let data = pattern(len, 10 + i as u64);
        ck.put(&key, data.clone(), PutMode::Overwrite).await;
        ck.same_bytes(&ck.get(&key).await, &data, &format!("get after overwrite #{i}"));
        let head = ck.ok(store.head(&key).await, "head");
        ck.meta_is(&head, &key, len, "head after overwrite");
    }
    let listed = ck.list(prefix).await;
    if listed != [(key.to_string(), 3)] {
        ck.fail(format!("overwrites left {listed:?}"));
    }
}

/// A create-only put succeeds on a new key, and on an existing one fails with
/// `AlreadyExists` and leaves the object untouched.
pub async fn check_create_only(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("create-only put", store);
    let key = ck.key(format!("{prefix}object"));
    let first = Bytes::from_static(b"first");
    ck.put(&key, first.clone(), PutMode::Create).await;
    ck.same_bytes(&ck.get(&key).await, &first, "get after create");

    for other in [Bytes::from_static(b"second, longer"), Bytes::new(), first.clone()] {
        match store.put(&key, other.clone(), PutMode::Create).await {
            Ok(meta) => ck.fail(format!(
                "a create-only put over an existing key succeeded: {meta:?}"
            )),
            Err(e) => ck.expect_kind(
                &e,
                ErrorKind::AlreadyExists,
                &key,
                "create-only put over an existing key",
            ),
        }
        ck.same_bytes(&ck.get(&key).await, &first, "get after a refused create");
    }

    // After a delete the key is free again.
    ck.ok(store.delete(&key).await, "delete");
    let again = Bytes::from_static(b"again");
    ck.put(&key, again.clone(), PutMode::Create).await;
    ck.same_bytes(&ck.get(&key).await, &again, "get after re-create");

    // Overwrite still overwrites.
    let last = Bytes::from_static(b"overwritten");
    ck.put(&key, last.clone(), PutMode::Overwrite).await;
    ck.same_bytes(&ck.get(&key).await, &last, "get after overwrite");
}

/// Racing puts from parallel tasks: of 8 create-only puts of different
/// contents exactly one succeeds and its content is stored; of 8 overwriting
/// puts the object ends up as one of them, whole.
pub async fn check_racing_puts(store: &Arc<dyn ObjectStore>, prefix: &str) {
    const WRITERS: usize = 8;
    let ck = Check::new("racing puts", &**store);
    for round in 0..3 {
        for mode in [PutMode::Create, PutMode::Overwrite] {
            let key = ck.key(format!("{prefix}{mode:?}-{round}"));
            let contents: Vec<Bytes> = (0..WRITERS)
                .map(|i| Bytes::from(vec![i as u8 + 1; 64 * 1024 + i * 1000]))
                .collect();
            let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
            let tasks: Vec<_> = contents
                .iter()
                .map(|data| {
                    let (store, key, data, barrier) =
                        (store.clone(), key.clone(), data.clone(), barrier.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        store.put(&key, data, mode).await
                    })
                })
                .collect();
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.expect("put task panicked"));
            }
            let stored = ck.get(&key).await;
            match mode {
                PutMode::Create => {
                    let winners: Vec<usize> = (0..WRITERS).filter(|&i| results[i].is_ok()).collect();
                    if winners.len() != 1 {
                        ck.fail(format!(
                            "{} of {WRITERS} racing create-only puts of {key} succeeded",
                            winners.len()
                        ));
                    }
                    for e in results.iter().filter_map(|r| r.as_ref().err()) {
                        ck.expect_kind(e, ErrorKind::AlreadyExists, &key, "a losing create-only put");
                    }
                    ck.same_bytes(&stored, &contents[winners[0]], "the object after racing creates");
                }
                PutMode::Overwrite => {
                    for r in results {
                        ck.ok(r, format!("racing overwrite of {key}"));
                    }
                    if !contents.contains(&stored) {
                        ck.fail(format!(
                            "after racing overwrites {key} holds {} bytes that are none of the writers' objects",
                            stored.len()
                        ));
                    }
                }
            }
        }
    }
}

/// Multipart uploads of about 20 MiB in parts of assorted sizes (5 MiB, odd
/// sizes, single bytes) round-trip, in both modes, and nothing is visible
/// before `complete`.
pub async fn check_multipart(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("multipart upload", store);
    let sizes = [
        5 * MIB,
        1,
        3 * MIB + 7,
        5 * MIB,
        999_999,
        1,
        12_345,
        5 * MIB,
        MIB - 1,
    ];
    let data = pattern(sizes.iter().sum(), 20);
    for mode in [PutMode::Overwrite, PutMode::Create] {
        let key = ck.key(format!("{prefix}{mode:?}"));
        let mut upload = ck.ok(store.put_multipart(&key, mode).await, "put_multipart");
        let mut offset = 0;
        for (i, size) in sizes.iter().enumerate() {
            let part = data.slice(offset..offset + size);
            ck.ok(upload.put_part(part).await, format!("part #{i} ({size} bytes)"));
            offset += size;
            if i == 3 {
                ck.expect_missing(&key).await;
                if !ck.list(prefix).await.is_empty() {
                    ck.fail("an unfinished multipart upload is visible in list");
                }
            }
        }
        let meta = ck.ok(upload.complete().await, "complete");
        ck.meta_is(&meta, &key, data.len(), "complete");
        let head = ck.ok(store.head(&key).await, "head");
        ck.meta_is(&head, &key, data.len(), "head after complete");
        ck.same_bytes(&ck.get(&key).await, &data, "get after multipart upload");
        ck.ok(store.delete(&key).await, "delete");
    }

    // A multipart upload replaces an existing object.
    let key = ck.key(format!("{prefix}replaced"));
    ck.put(&key, Bytes::from_static(b"old"), PutMode::Overwrite).await;
    let mut upload = ck.ok(
        store.put_multipart(&key, PutMode::Overwrite).await,
        "put_multipart",
    );
    ck.ok(upload.put_part(data.slice(..6 * MIB)).await, "part");
    ck.same_bytes(
        &ck.get(&key).await,
        &Bytes::from_static(b"old"),
        "get before complete",
    );
    ck.ok(upload.put_part(data.slice(6 * MIB..6 * MIB + 3)).await, "part");
    ck.ok(upload.complete().await, "complete");
    ck.same_bytes(
        &ck.get(&key).await,
        &data.slice(..6 * MIB + 3),
        "get after complete",
    );
}

/// A create-only multipart upload onto an existing key fails with
/// `AlreadyExists` (at `complete` at the latest) and leaves the old object.
pub async fn check_multipart_create_conflict(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("multipart create conflict", store);
    let key = ck.key(format!("{prefix}object"));
    let old = Bytes::from_static(b"the original");
    ck.put(&key, old.clone(), PutMode::Create).await;
    let data = pattern(6 * MIB + 11, 30);
    let what = "create-only multipart upload over an existing key";
    match store.put_multipart(&key, PutMode::Create).await {
        // Refusing at once is allowed too.
        Err(e) => ck.expect_kind(&e, ErrorKind::AlreadyExists, &key, what),
        Ok(mut upload) => {
            ck.ok(upload.put_part(data.slice(..5 * MIB)).await, "part");
            ck.ok(upload.put_part(data.slice(5 * MIB..)).await, "part");
            match upload.complete().await {
                Ok(meta) => ck.fail(format!("a {what} completed: {meta:?}")),
                Err(e) => ck.expect_kind(&e, ErrorKind::AlreadyExists, &key, what),
            }
        }
    }
    ck.same_bytes(&ck.get(&key).await, &old, "get after the refused upload");
    let listed = ck.list(prefix).await;
    if listed != [(key.to_string(), old.len() as u64)] {
        ck.fail(format!(
            "after the refused upload list({prefix:?}) gave {listed:?}"
        ));
    }
}

/// Aborted and dropped uploads (neither completed nor aborted) leave nothing
/// under their key, and an existing object they would have replaced stays.
pub async fn check_multipart_abort_and_drop(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("multipart abort and drop", store);
    let data = pattern(5 * MIB + 1024, 40);
    let old = Bytes::from_static(b"keep me");
    let kept = ck.key(format!("{prefix}kept"));
    ck.put(&kept, old.clone(), PutMode::Overwrite).await;

    for (name, abort) in [("aborted", true), ("dropped", false)] {
        for parts in [0usize, 1, 2] {
            for mode in [PutMode::Overwrite, PutMode::Create] {
                let key = ck.key(format!("{prefix}{name}-{parts}-{mode:?}"));
                for target in [&key, &kept] {
                    let mut upload = ck.ok(store.put_multipart(target, mode).await, "put_multipart");
                    if parts >= 1 {
                        ck.ok(upload.put_part(data.slice(..5 * MIB)).await, "part");
                    }
                    if parts >= 2 {
                        ck.ok(upload.put_part(data.slice(5 * MIB..)).await, "part");
                    }
                    if abort {
                        ck.ok(upload.abort().await, format!("abort of an upload to {target}"));
                    } else {
                        drop(upload);
                    }
                }
                ck.expect_missing(&key).await;
                ck.same_bytes(
                    &ck.get(&kept).await,
                    &old,
                    &format!("{kept} after an {name} upload"),
                );
            }
        }
    }
    let listed = ck.list(prefix).await;
    if listed != [(kept.to_string(), old.len() as u64)] {
        ck.fail(format!(
            "aborted and dropped uploads left list({prefix:?}) = {listed:?}"
        ));
    }
}

/// [`put_stream`] stores small streams (one put) and large ones (multipart)
/// exactly, honours `Create`, and leaves nothing behind when the stream
/// fails.
pub async fn check_put_stream(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("put_stream", store);
    let opts = UploadOptions {
        part_size: 5 * MIB,
        mode: PutMode::Overwrite,
    };
    let cases: [(&str, usize, usize); 5] = [
        ("empty", 0, 1),
        ("small", 1000, 7),
        ("exactly-one-part", 5 * MIB, MIB),
        ("large", 13 * MIB + 5, MIB - 1),
        ("large-odd-chunks", 11 * MIB, 3 * MIB + 1),
    ];
    for (i, (name, len, chunk)) in cases.into_iter().enumerate() {
        let key = ck.key(format!("{prefix}{name}"));
        let data = pattern(len, 50 + i as u64);
        let meta = ck.ok(
            put_stream(store, &key, chunks_of(&data, chunk), opts).await,
            format!("put_stream {key}"),
        );
        ck.meta_is(&meta, &key, len, "put_stream");
        ck.same_bytes(&ck.get(&key).await, &data, &format!("get {key}"));
    }

    // Create-only, small and large, over an existing key.
    let key = ck.key(format!("{prefix}small"));
    let before = ck.get(&key).await;
    for len in [10, 7 * MIB] {
        let create = UploadOptions {
            mode: PutMode::Create,
            ..opts
        };
        let data = pattern(len, 60);
        match put_stream(store, &key, chunks_of(&data, MIB), create).await {
            Ok(meta) => ck.fail(format!("a create-only put_stream over {key} succeeded: {meta:?}")),
            Err(e) => ck.expect_kind(&e, ErrorKind::AlreadyExists, &key, "create-only put_stream"),
        }
        ck.same_bytes(&ck.get(&key).await, &before, "get after a refused put_stream");
    }

    // A stream that fails, before and after the first part is sent.
    for fail_after in [MIB, 7 * MIB] {
        let key = ck.key(format!("{prefix}failed-{fail_after}"));
        let data = pattern(fail_after, 70);
        let injected = StoreError::new(
            ErrorKind::Transient,
            Operation::Read,
            "conformance",
            "source",
            "injected stream failure",
        );
        let failing = chunks_of(&data, MIB).chain(futures::stream::iter([Err(injected)]));
        match put_stream(store, &key, failing, opts).await {
            Ok(meta) => ck.fail(format!("put_stream of a failing stream succeeded: {meta:?}")),
            Err(e) if e.to_string().contains("injected stream failure") => {}
            Err(e) => ck.fail(format!(
                "put_stream of a failing stream returned another error: {e}"
            )),
        }
        ck.expect_missing(&key).await;
    }
}

/// A stream that ends with an error stores nothing, whether the error comes
/// before anything was sent, before the single put of a small object or in
/// the middle of a multipart upload: no object appears under a free key
/// (create-only or not), and an older object under the key is untouched.
/// (A producer that fails part-way, a read error in the middle of a file,
/// must never leave a truncated object under the final key.)
pub async fn check_put_stream_error(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("put_stream of a failing stream", store);
    let old = Bytes::from_static(b"the older object, kept");
    for (name, sent) in [
        ("at-once", 0),
        ("one-put", MIB + 3),
        ("multipart", 6 * MIB + 1),
        ("multipart-at-a-part-boundary", 10 * MIB),
    ] {
        for (mode, over_old) in [
            (PutMode::Create, false),
            (PutMode::Overwrite, false),
            (PutMode::Overwrite, true),
        ] {
            let key = ck.key(format!("{prefix}{name}-{mode:?}-{over_old}"));
            if over_old {
                ck.put(&key, old.clone(), PutMode::Overwrite).await;
            }
            let opts = UploadOptions {
                part_size: 5 * MIB,
                mode,
            };
            let data = pattern(sent, 80);
            let injected = StoreError::new(
                ErrorKind::Permanent,
                Operation::Read,
                "conformance",
                "source",
                "injected read error in the middle of the source",
            );
            let failing = chunks_of(&data, MIB).chain(futures::stream::iter([Err(injected)]));
            match put_stream(store, &key, failing, opts).await {
                Ok(meta) => ck.fail(format!(
                    "put_stream of a stream failing after {sent} bytes stored {meta:?}"
                )),
                Err(e) if e.to_string().contains("injected read error") => {}
                Err(e) => ck.fail(format!(
                    "put_stream of a stream failing after {sent} bytes returned another error: {e}"
                )),
            }
            if over_old {
                ck.same_bytes(
                    &ck.get(&key).await,
                    &old,
                    &format!("{key} after a failed put_stream over it"),
                );
            } else {
                ck.expect_missing(&key).await;
            }
        }
    }
    let listed = ck.list(prefix).await;
    if listed.len() != 4 || listed.iter().any(|(_, size)| *size != old.len() as u64) {
        ck.fail(format!(
            "failed streams left list({prefix:?}) = {listed:?}; expected only the 4 older objects"
        ));
    }
}

/// How far a store's modification time may be from this host's clock. The
/// suite runs against local emulators and against cloud stores, whose
/// clocks are synchronised; minutes leave room for slow runs.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// `list` and `head` report when an object was last written
/// ([`ObjectMeta::modified`]): set, within [`CLOCK_SKEW`] of this host's
/// clock around the put, for objects written in one piece and in parts;
/// and an overwrite a little later does not report an earlier time (the
/// times of S3's HEAD and Azure's are whole seconds, hence the pause).
pub async fn check_modified(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("modification time", store);
    let key = ck.key(format!("{prefix}object"));
    let before = SystemTime::now();
    ck.put(&key, Bytes::from_static(b"first"), PutMode::Overwrite)
        .await;
    let (head, listed) = ck.modified_of(&key, before, "after a put").await;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = SystemTime::now();
    ck.put(&key, Bytes::from_static(b"second, longer"), PutMode::Overwrite)
        .await;
    let (head2, listed2) = ck.modified_of(&key, before, "after an overwrite").await;
    if head2 < head {
        ck.fail(format!(
            "head({key}) went back in time after an overwrite: {head:?} then {head2:?}"
        ));
    }
    if listed2 < listed {
        ck.fail(format!(
            "list shows {key} going back in time after an overwrite: {listed:?} then {listed2:?}"
        ));
    }

    let parts = ck.key(format!("{prefix}in-parts"));
    let before = SystemTime::now();
    let mut upload = ck.ok(
        store.put_multipart(&parts, PutMode::Overwrite).await,
        format!("put_multipart {parts}"),
    );
    ck.ok(
        upload.put_part(Bytes::from_static(b"one part")).await,
        format!("put_part {parts}"),
    );
    ck.ok(upload.complete().await, format!("complete {parts}"));
    ck.modified_of(&parts, before, "after a multipart upload").await;
}

/// `list` is sorted by key (byte order, also across `/`), uses plain string
/// prefixes (`a/b` matches `a/b/c` and `a/bc`), reports sizes, and a prefix
/// nothing matches gives an empty list.
pub async fn check_list(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("list", store);
    let names = ["b", "a/c", "ab", "a/b/d/e", "a/bc", "a/b/c", "a/b.y", "a/b-x"];
    for (i, name) in names.iter().enumerate() {
        let key = ck.key(format!("{prefix}{name}"));
        ck.put(&key, Bytes::from(vec![b'x'; i]), PutMode::Overwrite).await;
    }
    let size_of = |name: &str| names.iter().position(|n| *n == name).expect("a known name") as u64;
    let cases: [(&str, &[&str]); 14] = [
        (
            "",
            &["a/b-x", "a/b.y", "a/b/c", "a/b/d/e", "a/bc", "a/c", "ab", "b"],
        ),
        ("a", &["a/b-x", "a/b.y", "a/b/c", "a/b/d/e", "a/bc", "a/c", "ab"]),
        ("a/", &["a/b-x", "a/b.y", "a/b/c", "a/b/d/e", "a/bc", "a/c"]),
        ("a/b", &["a/b-x", "a/b.y", "a/b/c", "a/b/d/e", "a/bc"]),
        ("a/b/", &["a/b/c", "a/b/d/e"]),
        ("a/b/c", &["a/b/c"]),
        ("a/b/c/", &[]),
        ("a/b/d", &["a/b/d/e"]),
        ("a/b/d/e", &["a/b/d/e"]),
        ("a/b/d/e/f", &[]),
        ("ab", &["ab"]),
        ("b", &["b"]),
        ("zzz", &[]),
        ("nothing/here/", &[]),
    ];
    for (sub, want) in cases {
        let p = format!("{prefix}{sub}");
        let got = ck.list(&p).await;
        let want: Vec<(String, u64)> = want
            .iter()
            .map(|n| (format!("{prefix}{n}"), size_of(n)))
            .collect();
        if got != want {
            ck.fail(format!("list({p:?}) gave {got:?}, expected {want:?}"));
        }
    }
}

/// `list` returns all of 1234 objects, sorted, whatever pagination the
/// backend needs underneath, and sub-prefixes cut them exactly.
pub async fn check_list_many(store: &dyn ObjectStore, prefix: &str) {
    const COUNT: usize = 1234;
    let ck = Check::new("list many", store);
    let keys: Vec<Key> = (0..COUNT).map(|i| ck.key(format!("{prefix}k/{i:05}"))).collect();
    let ck_ref = &ck;
    futures::stream::iter(keys.iter().enumerate())
        .for_each_concurrent(PARALLEL, |(i, key)| async move {
            ck_ref.put(key, Bytes::from(i.to_string()), PutMode::Create).await;
        })
        .await;
    let got = ck.list(prefix).await;
    let want: Vec<(String, u64)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), i.to_string().len() as u64))
        .collect();
    if got != want {
        let missing = want.iter().filter(|w| !got.contains(w)).count();
        ck.fail(format!(
            "list({prefix:?}) gave {} objects ({missing} expected ones missing), expected {COUNT}",
            got.len()
        ));
    }
    for (sub, count) in [
        ("k/00", 1000),
        ("k/01", 234),
        ("k/012", 34),
        ("k/0123", 4),
        ("k/01233", 1),
        ("k/02", 0),
    ] {
        let p = format!("{prefix}{sub}");
        let got = ck.list(&p).await;
        if got.len() != count || !got.iter().all(|(k, _)| k.starts_with(&p)) {
            ck.fail(format!(
                "list({p:?}) gave {} objects, expected {count}",
                got.len()
            ));
        }
    }
    clear(store, prefix).await;
}

/// Gets and heads of missing keys fail with `NotFound` naming the key,
/// including keys below an existing object and keys that are only a prefix
/// of existing objects.
pub async fn check_not_found(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("not found", store);
    let object = ck.key(format!("{prefix}object"));
    let inner = ck.key(format!("{prefix}dir/inner"));
    ck.put(&object, Bytes::from_static(b"x"), PutMode::Overwrite)
        .await;
    ck.put(&inner, Bytes::from_static(b"y"), PutMode::Overwrite).await;
    for name in [
        "missing",
        "missing/deeper/still",
        "object/below",
        "dir",
        "objec",
        "object2",
    ] {
        let key = ck.key(format!("{prefix}{name}"));
        ck.expect_missing(&key).await;
        if ck.ok(store.exists(&key).await, format!("exists {key}")) {
            ck.fail(format!("exists({key}) is true for a missing key"));
        }
        match store.get_bytes(&key).await {
            Ok(_) => ck.fail(format!("get_bytes({key}) of a missing key succeeded")),
            Err(e) => ck.expect_kind(&e, ErrorKind::NotFound, &key, "get_bytes of a missing key"),
        }
        // Deleting what is not there succeeds and touches nothing else.
        ck.ok(store.delete(&key).await, format!("delete of missing {key}"));
    }
    ck.same_bytes(
        &ck.get(&object).await,
        &Bytes::from_static(b"x"),
        "get after the misses",
    );
    ck.same_bytes(
        &ck.get(&inner).await,
        &Bytes::from_static(b"y"),
        "get after the misses",
    );
}

/// Deletes remove exactly their object, are idempotent, and the key can be
/// written again afterwards.
pub async fn check_delete(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("delete", store);
    let a = ck.key(format!("{prefix}x/a"));
    let ab = ck.key(format!("{prefix}x/ab"));
    let deep = ck.key(format!("{prefix}y/z/w/deep"));
    for key in [&a, &ab, &deep] {
        ck.put(key, Bytes::from(key.to_string()), PutMode::Overwrite)
            .await;
    }
    ck.ok(store.delete(&a).await, "delete");
    ck.expect_missing(&a).await;
    ck.same_bytes(
        &ck.get(&ab).await,
        &Bytes::from(ab.to_string()),
        "get of a sibling",
    );
    ck.ok(store.delete(&a).await, "second delete");
    ck.ok(store.delete(&deep).await, "delete");
    ck.expect_missing(&deep).await;
    let listed = ck.list(prefix).await;
    if listed != [(ab.to_string(), ab.as_str().len() as u64)] {
        ck.fail(format!("after deletes list({prefix:?}) gave {listed:?}"));
    }
    // Deleted keys can be written again, also deep ones.
    ck.put(&deep, Bytes::from_static(b"again"), PutMode::Create).await;
    ck.put(&a, Bytes::from_static(b"again"), PutMode::Create).await;
    ck.same_bytes(
        &ck.get(&deep).await,
        &Bytes::from_static(b"again"),
        "get after re-put",
    );
    for key in [&a, &ab, &deep] {
        ck.ok(store.delete(key).await, "delete");
    }
    let listed = ck.list(prefix).await;
    if !listed.is_empty() {
        ck.fail(format!(
            "after deleting everything list({prefix:?}) gave {listed:?}"
        ));
    }
}

/// `delete_many` of more keys than one S3 batch holds (1000), some of
/// them missing and some named twice, removes exactly those keys.
pub async fn check_delete_many(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("delete many", store);
    let keep = ck.key(format!("{prefix}keep"));
    ck.put(&keep, Bytes::from_static(b"kept"), PutMode::Overwrite)
        .await;
    let keys: Vec<Key> = (0..1203).map(|i| ck.key(format!("{prefix}d/{i:05}"))).collect();
    let ck = &ck;
    futures::stream::iter(keys.iter().step_by(2).map(|k| async move {
        ck.put(k, Bytes::from(k.to_string()), PutMode::Overwrite).await;
    }))
    .buffer_unordered(16)
    .collect::<Vec<()>>()
    .await;
    // Every other key was never written; one is named twice.
    let mut asked = keys.clone();
    asked.push(keys[0].clone());
    ck.ok(store.delete_many(&asked).await, "delete_many");
    let listed = ck.list(prefix).await;
    if listed != [(keep.to_string(), 4)] {
        ck.fail(format!(
            "after delete_many, list({prefix:?}) gave {} objects: {:?}",
            listed.len(),
            listed.iter().take(5).collect::<Vec<_>>()
        ));
    }
    ck.ok(store.delete_many(&asked).await, "second delete_many");
    ck.ok(store.delete_many(&[]).await, "delete_many of nothing");
    ck.ok(store.delete(&keep).await, "delete");
}

/// Every printable ASCII character a [`Key`] allows round-trips through put,
/// get, list and delete, including ones URLs and shells treat specially.
pub async fn check_key_characters(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("key characters", store);
    let names = [
        "!\"#$%&'()*+,-.:;<=>?@[\\]^_`{|}~",
        "UPPER.lower-0123_~",
        "%2F",
        "%20",
        "a+b",
        "q?x=1&y=2#frag",
        "...",
        ".hidden",
        "-dash",
        "x.pgark-tmpx",
    ];
    let mut want = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let key = ck.key(format!("{prefix}{name}"));
        let data = Bytes::from(format!("object {i}"));
        ck.put(&key, data.clone(), PutMode::Create).await;
        ck.same_bytes(&ck.get(&key).await, &data, &format!("get {key:?}"));
        want.push((key.to_string(), data.len() as u64));
    }
    want.sort();
    let listed = ck.list(prefix).await;
    if listed != want {
        ck.fail(format!("list({prefix:?}) gave {listed:?}, expected {want:?}"));
    }
    for (key, _) in &want {
        ck.ok(
            store.delete(&ck.key(key.clone())).await,
            format!("delete {key:?}"),
        );
    }
    if !ck.list(prefix).await.is_empty() {
        ck.fail("objects remain after deleting them all");
    }
}

/// Deletes everything under `prefix`.
async fn clear(store: &dyn ObjectStore, prefix: &str) {
    let ck = Check::new("cleanup", store);
    let listed = ck.ok(store.list(prefix).await, format!("list({prefix:?})"));
    let ck_ref = &ck;
    futures::stream::iter(listed)
        .for_each_concurrent(PARALLEL, |meta| async move {
            ck_ref.ok(store.delete(&meta.key).await, format!("delete {}", meta.key));
        })
        .await;
}

/// `data` as a stream of `chunk`-sized pieces.
fn chunks_of(data: &Bytes, chunk: usize) -> futures::stream::BoxStream<'static, Result<Bytes, StoreError>> {
    let pieces: Vec<Result<Bytes, StoreError>> = (0..data.len())
        .step_by(chunk.max(1))
        .map(|start| Ok(data.slice(start..(start + chunk).min(data.len()))))
        .collect();
    futures::stream::iter(pieces).boxed()
}

/// `len` pseudo-random bytes, the same for the same seed.
fn pattern(len: usize, seed: u64) -> Bytes {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    Bytes::from(data)
}

/// One check's context, for uniform failure messages.
struct Check<'a> {
    name: &'static str,
    store: &'a dyn ObjectStore,
}

impl<'a> Check<'a> {
    fn new(name: &'static str, store: &'a dyn ObjectStore) -> Self {
        Check { name, store }
    }

    #[track_caller]
    fn fail(&self, message: impl fmt::Display) -> ! {
        panic!(
            "store conformance check `{}` failed on {}: {message}",
            self.name, self.store
        )
    }

    #[track_caller]
    fn ok<T>(&self, result: Result<T, StoreError>, what: impl fmt::Display) -> T {
        match result {
            Ok(v) => v,
            Err(e) => self.fail(format!("{what}: unexpected error ({:?}): {e}", e.kind())),
        }
    }

    #[track_caller]
    fn key(&self, s: String) -> Key {
        Key::new(s).unwrap_or_else(|e| self.fail(format!("the suite built an invalid key: {e}")))
    }

    #[track_caller]
    fn expect_kind(&self, e: &StoreError, kind: ErrorKind, key: &Key, what: &str) {
        if e.kind() != kind {
            self.fail(format!(
                "{what}: expected a {kind:?} error, got {:?}: {e}",
                e.kind()
            ));
        }
        if !e.to_string().contains(key.as_str()) {
            self.fail(format!("{what}: the error does not name the key {key}: {e}"));
        }
    }

    #[track_caller]
    fn meta_is(&self, meta: &ObjectMeta, key: &Key, size: usize, what: &str) {
        if meta.key != *key || meta.size != size as u64 {
            self.fail(format!(
                "{what}: got metadata {meta:?}, expected key {key} with size {size}"
            ));
        }
    }

    #[track_caller]
    fn same_bytes(&self, got: &Bytes, want: &Bytes, what: &str) {
        if got == want {
            return;
        }
        let at = got.iter().zip(want.iter()).position(|(g, w)| g != w);
        match at {
            Some(at) => self.fail(format!(
                "{what}: {} bytes differ from the expected {} bytes first at offset {at}",
                got.len(),
                want.len()
            )),
            None => self.fail(format!(
                "{what}: got {} bytes, expected {} (one is a prefix of the other)",
                got.len(),
                want.len()
            )),
        }
    }

    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> ObjectMeta {
        let len = data.len();
        let meta = self.ok(
            self.store.put(key, data, mode).await,
            format!("put {key} ({mode:?})"),
        );
        self.meta_is(&meta, key, len, "put");
        meta
    }

    /// The whole object, checking that the metadata matches what was read.
    async fn get(&self, key: &Key) -> Bytes {
        let got = self.ok(self.store.get(key).await, format!("get {key}"));
        let meta = got.meta.clone();
        let chunks: Vec<Bytes> = self.ok(got.stream.try_collect().await, format!("reading {key}"));
        let mut data = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
        chunks.iter().for_each(|c| data.extend_from_slice(c));
        self.meta_is(&meta, key, data.len(), "get (metadata vs bytes read)");
        Bytes::from(data)
    }

    async fn expect_missing(&self, key: &Key) {
        match self.store.head(key).await {
            Ok(meta) => self.fail(format!("head of {key}, which should be missing, gave {meta:?}")),
            Err(e) => self.expect_kind(&e, ErrorKind::NotFound, key, "head of a missing key"),
        }
        match self.store.get(key).await {
            Ok(got) => self.fail(format!(
                "get of {key}, which should be missing, gave {:?}",
                got.meta
            )),
            Err(e) => self.expect_kind(&e, ErrorKind::NotFound, key, "get of a missing key"),
        }
        let listed = self.list(key.as_str()).await;
        if listed.iter().any(|(k, _)| k == key.as_str()) {
            self.fail(format!("list shows {key}, which should be missing"));
        }
    }

    /// The modification times `head` and `list` report for `key`, written
    /// by a put that started at `before`, checking both are set and near
    /// this host's clock.
    async fn modified_of(&self, key: &Key, before: SystemTime, what: &str) -> (SystemTime, SystemTime) {
        let head = self.ok(self.store.head(key).await, format!("head {key}"));
        let listed = self.ok(self.store.list(key.as_str()).await, format!("list({key:?})"));
        let Some(listed) = listed.into_iter().find(|m| m.key == *key) else {
            self.fail(format!("list({key:?}) does not show {key} {what}"));
        };
        let after = SystemTime::now();
        let near = |meta: &ObjectMeta, how: &str| -> SystemTime {
            let Some(t) = meta.modified else {
                self.fail(format!(
                    "{how} of {key} {what} reports no modification time: {meta:?}"
                ));
            };
            let earliest = before - CLOCK_SKEW;
            let latest = after + CLOCK_SKEW;
            if t < earliest || t > latest {
                self.fail(format!(
                    "{how} of {key} {what} reports modification time {t:?}, more than {CLOCK_SKEW:?} \
                     outside this host's clock around the put ({before:?} to {after:?})"
                ));
            }
            t
        };
        (near(&head, "head"), near(&listed, "list"))
    }

    /// Keys and sizes under `prefix`, checking the listing is sorted, free of
    /// duplicates and inside the prefix.
    async fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let listed = self.ok(self.store.list(prefix).await, format!("list({prefix:?})"));
        let out: Vec<(String, u64)> = listed.into_iter().map(|m| (m.key.to_string(), m.size)).collect();
        if let Some(w) = out.windows(2).find(|w| w[0].0 >= w[1].0) {
            self.fail(format!(
                "list({prefix:?}) is not strictly sorted: {:?} comes before {:?}",
                w[0].0, w[1].0
            ));
        }
        if let Some((k, _)) = out.iter().find(|(k, _)| !k.starts_with(prefix)) {
            self.fail(format!("list({prefix:?}) returned {k:?}, outside the prefix"));
        }
        out
    }
}
