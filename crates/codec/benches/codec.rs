//! Encode and decode throughput of stored objects per codec at default
//! levels, on 16 MiB of WAL-like data, plus plain SHA-256 throughput.
//! Throughput is in original (uncompressed) bytes. See README.md here.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgark_codec::{encode_to_vec, Compression, CompressionSpec, ObjectReader, ObjectWriter};
use sha2::{Digest, Sha256};

#[allow(dead_code)]
#[path = "../src/testdata.rs"]
mod testdata;

const LEN: usize = 16 << 20;

fn encode(c: &mut Criterion) {
    let data = testdata::wal_like(LEN, 2024);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(10));
    for codec in Compression::ALL {
        let spec = CompressionSpec::new(codec, None).unwrap();
        let (stored, _) = encode_to_vec(&data, spec).unwrap();
        eprintln!(
            "{spec}: {} -> {} bytes (ratio {:.2})",
            data.len(),
            stored.len(),
            data.len() as f64 / stored.len() as f64
        );
        group.bench_function(codec.name(), |b| {
            b.iter(|| {
                let mut w = ObjectWriter::new(io::sink(), spec).unwrap();
                // 1 MiB writes, like a file being streamed to a store.
                for chunk in data.chunks(1 << 20) {
                    w.write_all(chunk).unwrap();
                }
                black_box(w.finish().unwrap().1)
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let data = testdata::wal_like(LEN, 2024);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(6));
    for codec in Compression::ALL {
        let spec = CompressionSpec::new(codec, None).unwrap();
        let (stored, _) = encode_to_vec(&data, spec).unwrap();
        let mut buf = vec![0u8; 128 << 10];
        group.bench_function(codec.name(), |b| {
            b.iter(|| {
                let mut r = ObjectReader::new(&stored[..]).unwrap();
                while r.read(&mut buf).unwrap() > 0 {}
                black_box(*r.summary().unwrap())
            })
        });
    }
    group.finish();
}

fn sha256(c: &mut Criterion) {
    let data = testdata::wal_like(LEN, 2024);
    let mut group = c.benchmark_group("sha256");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.sample_size(20);
    group.bench_function("sha2", |b| b.iter(|| black_box(Sha256::digest(&data))));
    group.finish();
}

criterion_group!(benches, encode, decode, sha256);
criterion_main!(benches);
