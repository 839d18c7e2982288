//! Page scan throughput on in-memory relation data: see README.md beside this file.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgark_delta::{BlockSize, IncrementHeader, IncrementWriter, PageScanner, ScanOptions};
use pgark_pg::{pg_checksum_page, Lsn};

const BLCKSZ: usize = 8192;
/// 256 MiB of pages.
const TOTAL: usize = 256 << 20;
/// Read size of a backup: 8 MiB.
const BUFFER: usize = 8 << 20;
/// The parent backup's start LSN.
const SINCE: Lsn = Lsn(0x20_0000_0000);

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Heap-like pages with valid headers and checksums: 90 % unchanged since the parent
/// backup, 9 % changed, 1 % new (all zeros).
fn relation(rng: &mut Rng) -> Vec<u8> {
    let mut data = vec![0u8; TOTAL];
    for (blkno, page) in data.chunks_exact_mut(BLCKSZ).enumerate() {
        let roll = rng.next() % 100;
        if roll == 0 {
            continue; // new page
        }
        let lsn = if roll < 10 {
            SINCE.0 + rng.next() % 0x1_0000_0000
        } else {
            rng.next() % SINCE.0
        };
        let items = 20 + (rng.next() % 200) as usize;
        let lower = 24 + 4 * items;
        let upper = lower + (rng.next() % 64) as usize * 8;
        page[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        page[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        page[10..12].copy_from_slice(&4u16.to_le_bytes());
        page[12..14].copy_from_slice(&(lower as u16).to_le_bytes());
        page[14..16].copy_from_slice(&(upper as u16).to_le_bytes());
        page[16..18].copy_from_slice(&(BLCKSZ as u16).to_le_bytes());
        page[18..20].copy_from_slice(&(BLCKSZ as u16 | 4).to_le_bytes());
        for word in page[24..].chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next().to_le_bytes());
        }
        let sum = pg_checksum_page(page, blkno as u32);
        page[8..10].copy_from_slice(&sum.to_le_bytes());
    }
    data
}

fn options(verify: bool) -> ScanOptions {
    ScanOptions {
        block_size: BlockSize::DEFAULT,
        since: SINCE,
        parent_blocks: (TOTAL / BLCKSZ) as u32,
        verify_checksums: verify,
        first_block_no: 0,
    }
}

fn scan_all(data: &mut [u8], verify: bool) -> u64 {
    let mut scanner = PageScanner::new(options(verify));
    let mut stored = 0;
    for buf in data.chunks_mut(BUFFER) {
        let chunk = scanner
            .scan(buf, |_, _| panic!("no checksum failure in the bench data"))
            .unwrap();
        stored += u64::from(chunk.stored_count());
    }
    stored
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut data = relation(&mut rng);
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(20);
    for verify in [false, true] {
        let name = if verify { "checksums" } else { "lsn_only" };
        group.bench_function(BenchmarkId::new(name, "256MiB"), |b| {
            b.iter(|| black_box(scan_all(black_box(&mut data), verify)))
        });
    }
    // What a backup does per read: the read copies 8 MiB into the buffer (modelled by a
    // memcpy from memory), then the scan; the copy alone is the baseline.
    let mut buf = vec![0u8; BUFFER];
    for (name, scan) in [("copy_only", false), ("copy_and_scan", true)] {
        group.bench_function(BenchmarkId::new(name, "256MiB"), |b| {
            b.iter(|| {
                let mut scanner = PageScanner::new(options(false));
                let mut stored = 0;
                for piece in data.chunks(BUFFER) {
                    buf.copy_from_slice(black_box(piece));
                    if scan {
                        let chunk = scanner.scan(&mut buf, |_, _| unreachable!()).unwrap();
                        stored += chunk.stored_count();
                    }
                }
                black_box((stored, buf[0]))
            })
        });
    }
    // Scan and encode the increment (into a reused buffer): what a delta backup does per
    // file before compression.
    let mut out = Vec::with_capacity(TOTAL / 8);
    group.bench_function(BenchmarkId::new("scan_and_encode", "256MiB"), |b| {
        b.iter(|| {
            out.clear();
            let header = IncrementHeader {
                block_size: BlockSize::DEFAULT,
                blocks: (TOTAL / BLCKSZ) as u32,
                parent_blocks: (TOTAL / BLCKSZ) as u32,
                since: SINCE,
            };
            let mut scanner = PageScanner::new(options(false));
            let mut writer = IncrementWriter::new(&mut out, header).unwrap();
            for buf in data.chunks_mut(BUFFER) {
                let chunk = scanner.scan(buf, |_, _| unreachable!()).unwrap();
                writer.write_chunk(buf, &chunk).unwrap();
            }
            writer.finish().unwrap();
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
