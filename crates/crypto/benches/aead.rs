//! Encrypt and decrypt throughput of the chunked AES-256-GCM stream, one
//! core, 16 MiB per iteration. See `benches/README.md` for measured
//! figures.
//!
//! Besides criterion's wall-clock figures, the bench prints throughput per
//! second of *thread CPU time* (`CLOCK_THREAD_CPUTIME_ID`), which a shared,
//! loaded machine distorts far less: that is the per-core figure.

use std::io::{Read, Write};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pgark_crypto::{DataKey, DecryptReader, EncryptWriter, Keyring, MasterKey};

const LEN: usize = 16 * 1024 * 1024;
const NAME: &str = "base/16384/2619";

fn data() -> Vec<u8> {
    let mut x: u64 = 0x0123_4567_89AB_CDEF;
    (0..LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn encrypt(key: &DataKey, plain: &[u8]) -> Vec<u8> {
    let mut w = EncryptWriter::new(
        Vec::with_capacity(plain.len() + plain.len() / 1000 + 128),
        key,
        NAME,
    )
    .unwrap();
    for piece in plain.chunks(1 << 20) {
        w.write_all(piece).unwrap();
    }
    w.finish().unwrap()
}

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// MiB per CPU-second of `f` over `rounds` runs of 16 MiB.
fn per_cpu_second(rounds: u32, mut f: impl FnMut()) -> f64 {
    f();
    let start = thread_cpu_seconds();
    for _ in 0..rounds {
        f();
    }
    (rounds as f64 * LEN as f64 / (1024.0 * 1024.0)) / (thread_cpu_seconds() - start)
}

fn decrypt_all(key: &DataKey, stored: &[u8], buf: &mut [u8]) {
    let mut r = DecryptReader::new(stored, key, NAME).unwrap();
    let mut total = 0;
    loop {
        let n = r.read(buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, LEN);
}

fn bench(c: &mut Criterion) {
    let key = DataKey::generate();
    let plain = data();
    let stored = encrypt(&key, &plain);

    let mut buf = vec![0u8; 128 * 1024];
    let enc = per_cpu_second(20, || {
        let mut w = EncryptWriter::new(std::io::sink(), &key, NAME).unwrap();
        w.write_all(&plain).unwrap();
        w.finish().unwrap();
    });
    let dec = per_cpu_second(20, || decrypt_all(&key, &stored, &mut buf));
    println!("per core (thread CPU time): encrypt {enc:.0} MiB/s, decrypt {dec:.0} MiB/s");

    let mut g = c.benchmark_group("aead");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(20);
    g.bench_function("encrypt/64KiB-chunks", |b| {
        b.iter(|| {
            let mut w = EncryptWriter::new(std::io::sink(), &key, NAME).unwrap();
            for piece in plain.chunks(1 << 20) {
                w.write_all(piece).unwrap();
            }
            w.finish().unwrap();
        })
    });
    g.bench_function("decrypt/64KiB-chunks", |b| {
        b.iter(|| decrypt_all(&key, &stored, &mut buf))
    });
    g.finish();

    let mut g = c.benchmark_group("keyring");
    g.sample_size(20);
    let master = MasterKey::generate();
    let (keyring, _) = Keyring::create(&master);
    g.bench_function("open", |b| b.iter(|| keyring.open(&master).unwrap()));
    g.bench_function("object_key", |b| {
        b.iter_batched(
            || [7u8; 16],
            |salt| key.object_key(NAME, &salt),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
