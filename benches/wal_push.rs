//! wal-push of a real 16 MiB WAL segment into a local-directory
//! repository, per codec: the whole engine path (validate, compress,
//! checksum, durable create-only store). See benches/README.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pgark_codec::{Compression, CompressionSpec};
use pgark_engine::{wal_push, WalPushOptions};
use pgark_store::{Key, LocalStore, ObjectStore};
use std::path::PathBuf;
use std::sync::Arc;

/// The first full 16 MiB segment among the committed fixtures.
fn fixture_segment() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wal"));
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/wal exists")
        .map(|e| e.expect("readable fixture dir").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 24)
        })
        .filter(|p| p.metadata().map(|m| m.len() == 16 << 20).unwrap_or(false))
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .expect("a 16 MiB segment in fixtures/wal")
}

fn bench_wal_push(c: &mut Criterion) {
    let segment = fixture_segment();
    let name = segment.file_name().unwrap().to_str().unwrap().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("wal_push_16MiB");
    group.throughput(Throughput::Bytes(16 << 20));
    group.sample_size(20);
    for codec in [
        Compression::Zstd,
        Compression::Lz4,
        Compression::Lzma,
        Compression::None,
    ] {
        let repo = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(repo.path()).unwrap());
        let opts = WalPushOptions {
            compression: CompressionSpec::new(codec, None).unwrap(),
            ..Default::default()
        };
        let key = Key::new(format!("wal/{}/{name}", &name[..16])).unwrap();
        group.bench_function(codec.to_string(), |b| {
            b.iter_batched(
                // Steady state: the repository exists, the segment is new.
                || runtime.block_on(store.delete(&key)).unwrap(),
                |()| {
                    runtime
                        .block_on(wal_push(store.clone(), &segment, &opts))
                        .unwrap()
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_wal_push);
criterion_main!(benches);
