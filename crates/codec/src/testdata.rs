//! Deterministic sample data for the tests and the benches (the benches
//! include this file with `#[path]`).
//!
//! `wal_like` imitates PostgreSQL WAL: 8 KiB pages with page headers, a
//! stream of records (heap inserts and updates of similar rows, btree index
//! inserts, commits, occasional full-page images) and zero-filled tails of
//! segments switched early. It compresses roughly like real WAL of an
//! insert-heavy workload: mostly, but not trivially.

/// splitmix64: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `len` incompressible bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

const PAGE: usize = 8192;
const WORDS: [&str; 12] = [
    "pending",
    "shipped",
    "delivered",
    "cancelled",
    "returned",
    "on-hold",
    "processing",
    "refunded",
    "new",
    "paid",
    "backordered",
    "archived",
];

struct WalGen {
    rng: Rng,
    lsn: u64,
    prev: u64,
    xid: u32,
    row_id: u64,
    ts: i64,
    block: u32,
}

impl WalGen {
    fn tuple(&mut self, out: &mut Vec<u8>) {
        // HeapTupleHeader-ish: xmin, xmax, cid/xvac, ctid, infomask2,
        // infomask, hoff; then the columns.
        out.extend_from_slice(&self.xid.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.block.to_le_bytes());
        out.extend_from_slice(&((self.row_id % 200) as u16 + 1).to_le_bytes());
        out.extend_from_slice(&[5, 0, 0x02, 0x08, 24]);
        self.row_id += 1;
        out.extend_from_slice(&self.row_id.to_le_bytes()); // id bigint
        self.ts += 1_000 + self.rng.below(50_000) as i64;
        out.extend_from_slice(&self.ts.to_le_bytes()); // created_at timestamptz
        let customer = 10_000 + self.rng.below(5_000) as u32;
        out.extend_from_slice(&customer.to_le_bytes());
        let amount = (self.rng.below(100_000) as u32).to_le_bytes();
        out.extend_from_slice(&amount); // numeric-ish
        let word = WORDS[self.rng.below(WORDS.len() as u64) as usize];
        out.push((word.len() as u8) << 1 | 1); // short varlena header
        out.extend_from_slice(word.as_bytes());
        let note = format!("order {} for customer {} via web", self.row_id, customer);
        out.push((note.len() as u8) << 1 | 1);
        out.extend_from_slice(note.as_bytes());
        // A few high-entropy bytes: a token / uuid column.
        let mut token = [0u8; 16];
        self.rng.fill(&mut token);
        out.extend_from_slice(&token);
    }

    fn record(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; 24]); // XLogRecord, filled below
        let kind = self.rng.below(100);
        let (rmid, info) = match kind {
            0..=54 => {
                // heap insert: block reference + tuple
                out.extend_from_slice(&[0, 0x20]);
                out.extend_from_slice(&[1663u32, 16384, 16402].map(u32::to_le_bytes).concat());
                out.extend_from_slice(&self.block.to_le_bytes());
                self.tuple(out);
                if self.rng.below(40) == 0 {
                    self.block += 1;
                }
                (10u8, 0x00u8)
            }
            55..=64 => {
                // heap update: old ctid + new tuple
                out.extend_from_slice(&[0, 0x20]);
                out.extend_from_slice(&[1663u32, 16384, 16402].map(u32::to_le_bytes).concat());
                let old_block = self.rng.below(self.block as u64 + 1) as u32;
                out.extend_from_slice(&old_block.to_le_bytes());
                self.tuple(out);
                (10, 0x20)
            }
            65..=84 => {
                // btree insert: key + heap tid
                out.extend_from_slice(&[0, 0x20]);
                out.extend_from_slice(&[1663u32, 16384, 16409].map(u32::to_le_bytes).concat());
                out.extend_from_slice(&((self.row_id / 300) as u32).to_le_bytes());
                out.extend_from_slice(&[16, 0, 0, 0]);
                out.extend_from_slice(&self.row_id.to_le_bytes());
                out.extend_from_slice(&self.block.to_le_bytes());
                out.extend_from_slice(&((self.row_id % 200) as u16).to_le_bytes());
                (11, 0x00)
            }
            85..=97 => {
                // commit: timestamp, a few flags
                out.extend_from_slice(&self.ts.to_le_bytes());
                out.extend_from_slice(&[0x30, 0, 0, 0]);
                self.xid += 1;
                (1, 0x00)
            }
            _ => {
                // full-page image of a heap page with the hole removed:
                // line pointers then tuples.
                out.extend_from_slice(&[0, 0x10]);
                out.extend_from_slice(&[1663u32, 16384, 16402].map(u32::to_le_bytes).concat());
                out.extend_from_slice(&self.block.to_le_bytes());
                let rows = 20 + self.rng.below(40) as usize;
                for i in 0..rows {
                    out.extend_from_slice(&((8192 - 90 * (i + 1)) as u16).to_le_bytes());
                    out.extend_from_slice(&[90, 0x80]);
                }
                for _ in 0..rows {
                    self.tuple(out);
                }
                (10, 0x40)
            }
        };
        let tot_len = (out.len() - start) as u32;
        let mut crc = [0u8; 4];
        self.rng.fill(&mut crc);
        let hdr = &mut out[start..start + 24];
        hdr[0..4].copy_from_slice(&tot_len.to_le_bytes());
        hdr[4..8].copy_from_slice(&self.xid.to_le_bytes());
        hdr[8..16].copy_from_slice(&self.prev.to_le_bytes());
        hdr[16] = info;
        hdr[17] = rmid;
        hdr[20..24].copy_from_slice(&crc);
        // MAXALIGN
        while out.len() % 8 != 0 {
            out.push(0);
        }
        self.prev = self.lsn;
        self.lsn += (out.len() - start) as u64;
    }
}

/// `len` bytes that look and compress like PostgreSQL WAL.
pub fn wal_like(len: usize, seed: u64) -> Vec<u8> {
    let mut g = WalGen {
        rng: Rng::new(seed),
        lsn: 0x0000_0003_2A00_0028,
        prev: 0x0000_0003_29FF_FF80,
        xid: 7_340_000,
        row_id: 1_000_000,
        ts: 780_000_000_000_000,
        block: 4_000,
    };
    // Record stream, cut into pages with headers below.
    let mut out = Vec::with_capacity(len + PAGE);
    let mut records = Vec::with_capacity(64 * 1024);
    let mut pageaddr = 0x0000_0003_2A00_0000u64;
    // Every 2 MiB of output, a "segment" ends early (archive_timeout or
    // pg_switch_wal): its last eighth stays zero.
    let segment = 2 << 20;
    while out.len() < len {
        let in_segment = out.len() % segment;
        if in_segment >= segment - segment / 8 {
            out.resize(out.len() + (segment - in_segment), 0);
            continue;
        }
        // Page header: magic, info, timeline, pageaddr, rem_len, padding.
        out.extend_from_slice(&0xD116u16.to_le_bytes());
        out.extend_from_slice(&0x0005u16.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&pageaddr.to_le_bytes());
        out.extend_from_slice(&(records.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        pageaddr += PAGE as u64;
        let room = PAGE - 24;
        while records.len() < room {
            g.record(&mut records);
        }
        out.extend_from_slice(&records[..room]);
        records.drain(..room);
    }
    out.truncate(len);
    out
}
