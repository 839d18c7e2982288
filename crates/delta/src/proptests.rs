//! Whole-chain properties: scanning successive versions of a file, encoding increments,
//! decoding them and restoring gives exactly the newest version, each page written once.

use std::collections::HashMap;
use std::io;
use std::io::Read;

use pgark_pg::Lsn;
use proptest::prelude::*;

use crate::testpages::{heap_page, set_checksum, Rng};
use crate::*;

/// Start LSN of backup `j` (backup 0 is the full one).
fn start_lsn(j: usize) -> Lsn {
    Lsn(0x1_0000_0000 * (j as u64 + 1))
}

/// A change between two backups.
#[derive(Clone, Debug)]
enum Op {
    /// Rewrite the page at (index mod len): a WAL-logged change.
    Modify(usize),
    /// Make the page at (index mod len) all zeros (as truncation then extension leaves it).
    Zero(usize),
    /// Write garbage at (index mod len): an unparseable page.
    Garbage(usize),
    /// Truncate to (len * percent / 100) blocks.
    Shrink(u8),
    /// Append n pages: new (zeros) when `zeros`, else initialised.
    Grow(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<usize>().prop_map(Op::Modify),
        1 => any::<usize>().prop_map(Op::Zero),
        1 => any::<usize>().prop_map(Op::Garbage),
        1 => (0u8..=100).prop_map(Op::Shrink),
        2 => (1usize..80, any::<bool>()).prop_map(|(n, z)| Op::Grow(n, z)),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    block_size: u32,
    base_blocks: usize,
    base_zero_every: usize,
    /// Per increment: its changes, and the scan buffer size in pages.
    epochs: Vec<(Vec<Op>, usize)>,
    checksums: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(1024u32), Just(2048), Just(8192)],
        0usize..200,
        1usize..20,
        prop::collection::vec((prop::collection::vec(op(), 0..12), 1usize..150), 1..=4),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(block_size, base_blocks, base_zero_every, epochs, checksums, seed)| Case {
                block_size,
                base_blocks,
                base_zero_every,
                epochs,
                checksums,
                seed,
            },
        )
}

/// A page written at some point before `before` (and after `after`).
fn page_between(bs: usize, rng: &mut Rng, after: Lsn, before: Lsn, block: u32, checksums: bool) -> Vec<u8> {
    let lsn = Lsn(after.0 + rng.next() % (before.0 - after.0));
    let mut page = heap_page(bs, lsn, rng.next() as u32);
    if checksums {
        set_checksum(&mut page, block);
    }
    page
}

/// The successive versions of the file: version 0 is the base.
fn versions(c: &Case) -> Vec<Vec<Vec<u8>>> {
    let bs = c.block_size as usize;
    let mut rng = Rng(c.seed);
    let mut file: Vec<Vec<u8>> = (0..c.base_blocks)
        .map(|b| {
            if b % c.base_zero_every == 0 {
                vec![0; bs]
            } else {
                page_between(bs, &mut rng, Lsn(1), start_lsn(0), b as u32, c.checksums)
            }
        })
        .collect();
    let mut out = vec![file.clone()];
    for (j, (ops, _)) in c.epochs.iter().enumerate() {
        // Changes after backup j started, before backup j+1 starts.
        let (after, before) = (start_lsn(j), start_lsn(j + 1));
        for op in ops {
            let len = file.len();
            match *op {
                Op::Modify(i) if len > 0 => {
                    file[i % len] = page_between(bs, &mut rng, after, before, (i % len) as u32, c.checksums)
                }
                Op::Zero(i) if len > 0 => file[i % len] = vec![0; bs],
                Op::Garbage(i) if len > 0 => {
                    let mut g: Vec<u8> = (0..bs).map(|_| rng.next() as u8).collect();
                    g[10] = 0xFF; // undefined pd_flags bits
                    g[14] = 1; // pd_upper not 0
                    if c.checksums {
                        set_checksum(&mut g, (i % len) as u32);
                    }
                    file[i % len] = g;
                }
                Op::Shrink(pct) => file.truncate(len * pct as usize / 100),
                Op::Grow(n, zeros) => {
                    for _ in 0..n {
                        let b = file.len() as u32;
                        file.push(if zeros {
                            vec![0; bs]
                        } else {
                            page_between(bs, &mut rng, after, before, b, c.checksums)
                        });
                    }
                }
                _ => {}
            }
        }
        out.push(file.clone());
    }
    out
}

/// Backs up version `j` (j ≥ 1) against version j-1: scan, encode.
fn make_increment(c: &Case, versions: &[Vec<Vec<u8>>], j: usize) -> (Vec<u8>, ScanStats) {
    let bs = BlockSize::new(c.block_size).unwrap();
    let file: Vec<u8> = versions[j].concat();
    let opts = ScanOptions {
        block_size: bs,
        since: start_lsn(j - 1),
        parent_blocks: versions[j - 1].len() as u32,
        verify_checksums: c.checksums,
        first_block_no: 0,
    };
    let header = IncrementHeader {
        block_size: bs,
        blocks: versions[j].len() as u32,
        parent_blocks: opts.parent_blocks,
        since: opts.since,
    };
    let mut scanner = PageScanner::new(opts);
    let mut writer = IncrementWriter::new(Vec::new(), header).unwrap();
    let step = c.epochs[j - 1].1 * bs.bytes();
    for piece in file.chunks(step) {
        let mut buf = piece.to_vec();
        let chunk = scanner
            .scan(&mut buf, |_, _| -> io::Result<bool> {
                panic!("no checksum failures")
            })
            .unwrap();
        writer.write_chunk(&buf, &chunk).unwrap();
    }
    assert!(scanner.bad_pages().is_empty());
    (writer.finish().unwrap(), *scanner.stats())
}

fn restore_newest_first(c: &Case, base: &[u8], increments: &[Vec<u8>]) -> Result<Vec<u8>, DeltaError> {
    let bs = c.block_size as usize;
    let newest = IncrementReader::new(&increments[increments.len() - 1][..])?;
    let mut restore = ChainRestore::new(newest.header());
    let mut out = vec![0xA5u8; restore.blocks() as usize * bs];
    let mut writes: HashMap<u32, u32> = HashMap::new();
    let mut target = |block: u32, page: &[u8]| {
        *writes.entry(block).or_default() += 1;
        out[block as usize * bs..][..bs].copy_from_slice(page);
        Ok(())
    };
    for inc in increments.iter().rev() {
        let mut r = IncrementReader::new(&inc[..])?;
        restore.apply_increment(&mut r, &mut target)?;
    }
    restore.apply_base(base, &mut target)?;
    let stats = restore.finish()?;
    assert_eq!(stats.from_base + stats.from_increments, u64::from(stats.blocks));
    assert_eq!(writes.len(), stats.blocks as usize);
    assert!(writes.values().all(|&n| n == 1), "a page written twice");
    Ok(out)
}

/// Newest first, with the base in pieces of `piece_blocks` blocks applied in reverse
/// order through [`BaseFill`](crate::apply::BaseFill).
fn restore_with_base_pieces(
    c: &Case,
    base: &[u8],
    increments: &[Vec<u8>],
    piece_blocks: usize,
) -> Result<Vec<u8>, DeltaError> {
    let bs = c.block_size as usize;
    let newest = IncrementReader::new(&increments[increments.len() - 1][..])?;
    let mut restore = ChainRestore::new(newest.header());
    let mut out = vec![0xA5u8; restore.blocks() as usize * bs];
    let mut writes: HashMap<u32, u32> = HashMap::new();
    let mut target = |block: u32, page: &[u8]| {
        *writes.entry(block).or_default() += 1;
        out[block as usize * bs..][..bs].copy_from_slice(page);
        Ok(())
    };
    for inc in increments.iter().rev() {
        let mut r = IncrementReader::new(&inc[..])?;
        restore.apply_increment(&mut r, &mut target)?;
    }
    let fill = restore.into_base_fill();
    let pieces: Vec<(usize, &[u8])> = base.chunks(piece_blocks * bs).enumerate().collect();
    for (k, piece) in pieces.into_iter().rev() {
        fill.apply_range((k * piece_blocks) as u32, piece, &mut target)?;
    }
    let stats = fill.finish()?;
    assert_eq!(stats.from_base + stats.from_increments, u64::from(stats.blocks));
    assert_eq!(writes.len(), stats.blocks as usize);
    assert!(writes.values().all(|&n| n == 1), "a page written twice");
    Ok(out)
}

/// A stream that breaks off (a connection reset) after `left` bytes.
struct BrokenAfter<'a> {
    data: &'a [u8],
    left: usize,
}

impl Read for BrokenAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut"));
        }
        let n = buf.len().min(self.left).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.left -= n;
        Ok(n)
    }
}

/// As [`restore_with_base_pieces`], but every increment and every piece of the base is
/// first read through a stream that breaks off after `cut` per mille of its bytes, then
/// applied again whole, as a download that is retried: the result is the same.
fn restore_after_broken_reads(
    c: &Case,
    base: &[u8],
    increments: &[Vec<u8>],
    piece_blocks: usize,
    cut: usize,
) -> Result<Vec<u8>, DeltaError> {
    let bs = c.block_size as usize;
    let newest = IncrementReader::new(&increments[increments.len() - 1][..])?;
    let mut restore = ChainRestore::new(newest.header());
    let mut out = vec![0xA5u8; restore.blocks() as usize * bs];
    let mut target = |block: u32, page: &[u8]| {
        out[block as usize * bs..][..bs].copy_from_slice(page);
        Ok(())
    };
    let broken = |data: &[u8]| data.len() * cut / 1000;
    for inc in increments.iter().rev() {
        let first = IncrementReader::new(BrokenAfter {
            data: inc,
            left: broken(inc),
        })
        .and_then(|mut r| restore.apply_increment(&mut r, &mut target));
        if first.is_err() {
            let mut r = IncrementReader::new(&inc[..])?;
            restore.apply_increment(&mut r, &mut target)?;
        }
    }
    let fill = restore.into_base_fill();
    let pieces: Vec<(usize, &[u8])> = base.chunks(piece_blocks * bs).enumerate().collect();
    for (k, piece) in pieces.into_iter().rev() {
        let first_block = (k * piece_blocks) as u32;
        let data = BrokenAfter {
            data: piece,
            left: broken(piece),
        };
        if fill.apply_range(first_block, data, &mut target).is_err() {
            fill.apply_range(first_block, piece, &mut target)?;
        }
    }
    let stats = fill.finish()?;
    assert_eq!(stats.from_base + stats.from_increments, u64::from(stats.blocks));
    Ok(out)
}

fn restore_merged(base: &[u8], increments: &[Vec<u8>]) -> Result<Vec<u8>, DeltaError> {
    let mut readers = increments
        .iter()
        .map(|i| IncrementReader::new(&i[..]))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    let stats = merge_chain(Some(base), &mut readers, &mut out)?;
    assert_eq!(stats.from_base + stats.from_increments, u64::from(stats.blocks));
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn chain_restores_the_newest_version(c in case()) {
        let versions = versions(&c);
        let base = versions[0].concat();
        let mut increments = Vec::new();
        for j in 1..versions.len() {
            let (inc, stats) = make_increment(&c, &versions, j);
            prop_assert_eq!(inc.len() as u64, encoded_len(
                IncrementReader::new(&inc[..]).unwrap().header(), stats.stored as u32));
            // Every page that differs from the parent's is stored.
            let mut r = IncrementReader::new(&inc[..]).unwrap();
            let mut stored = Vec::new();
            while let Some(b) = r.peek_block().unwrap() {
                stored.push(b);
                r.skip_page().unwrap();
            }
            for (b, page) in versions[j].iter().enumerate() {
                if versions[j - 1].get(b) != Some(page) {
                    prop_assert!(stored.contains(&(b as u32)), "block {} changed, not stored", b);
                }
            }
            increments.push(inc);
        }
        let newest = versions.last().unwrap().concat();
        let a = restore_newest_first(&c, &base, &increments).unwrap();
        prop_assert!(a == newest, "newest-first restore differs");
        let b = restore_merged(&base, &increments).unwrap();
        prop_assert!(b == newest, "merged restore differs");
        for piece_blocks in [1, 3] {
            let p = restore_with_base_pieces(&c, &base, &increments, piece_blocks).unwrap();
            prop_assert!(p == newest, "restore with the base in pieces of {} blocks differs", piece_blocks);
        }
        for cut in [0, 1, 500, 999] {
            let p = restore_after_broken_reads(&c, &base, &increments, 2, cut).unwrap();
            prop_assert!(p == newest, "restore after reads broken at {} per mille differs", cut);
        }
        // Any suffix of the chain restores from the matching version as its base.
        for from in 1..increments.len() {
            let base = versions[from].concat();
            prop_assert!(restore_merged(&base, &increments[from..]).unwrap() == newest);
        }
    }

    #[test]
    fn encode_decode_round_trip(
        block_size in prop_oneof![Just(1024u32), Just(4096), Just(32768)],
        blocks in 0u32..300,
        parent in 0u32..350,
        since: u64,
        picks in prop::collection::vec(any::<bool>(), 300),
    ) {
        let bs = BlockSize::new(block_size).unwrap();
        let h = IncrementHeader { block_size: bs, blocks, parent_blocks: parent, since: Lsn(since) };
        let stored: Vec<u32> = (0..blocks).filter(|&b| b >= parent || picks[b as usize]).collect();
        let page = |b: u32| -> Vec<u8> { (0..bs.bytes()).map(|i| (i as u32 ^ b) as u8).collect() };
        let mut w = IncrementWriter::new(Vec::new(), h).unwrap();
        for &b in &stored {
            w.push_page(b, &page(b)).unwrap();
        }
        prop_assert_eq!(w.stored() as usize, stored.len());
        let bytes = w.finish().unwrap();
        prop_assert_eq!(bytes.len() as u64, encoded_len(&h, stored.len() as u32));
        let mut r = IncrementReader::new(&bytes[..]).unwrap();
        prop_assert_eq!(*r.header(), h);
        let mut buf = vec![0u8; bs.bytes()];
        let mut got = Vec::new();
        while let Some(b) = r.next_page(&mut buf).unwrap() {
            prop_assert!(buf == page(b));
            got.push(b);
        }
        prop_assert_eq!(got, stored);
    }

    /// Damaged increments are rejected with an error, never a panic, wherever the damage
    /// is (a flipped bitmap bit that a later misread compensates included: the CRC).
    #[test]
    fn decoder_rejects_mutations(
        blocks in 1u32..200,
        parent in 0u32..200,
        picks in prop::collection::vec(any::<bool>(), 200),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
        mode in 0u8..4,
    ) {
        let bs = BlockSize::new(1024).unwrap();
        let h = IncrementHeader { block_size: bs, blocks, parent_blocks: parent, since: Lsn(77) };
        let mut w = IncrementWriter::new(Vec::new(), h).unwrap();
        for b in (0..blocks).filter(|&b| b >= parent || picks[b as usize]) {
            w.push_page(b, &vec![b as u8; 1024]).unwrap();
        }
        let good = w.finish().unwrap();
        let mut bad = good.clone();
        match mode {
            0 => {
                // Flip bytes anywhere.
                for (at, x) in &mutations {
                    let i = at.index(bad.len());
                    bad[i] ^= x;
                }
            }
            1 => {
                bad.truncate(cut.index(bad.len()));
            }
            2 => {
                let i = cut.index(bad.len() + 1);
                bad.insert(i, mutations[0].1);
            }
            _ => {
                // Flip a bit of a bitmap word.
                let bitmaps: Vec<usize> = bitmap_offsets(&good);
                let at = bitmaps[mutations[0].0.index(bitmaps.len())];
                bad[at + (mutations[0].1 % 8) as usize] ^= 1 << (mutations[0].1 % 8);
            }
        }
        // Two flips of the same byte may cancel out.
        prop_assume!(bad != good);
        // Every change is detected (the CRC covers page contents too).
        prop_assert!(decode_all(&bad).is_err(), "damage not detected");
    }
}

/// Stored block numbers of an increment (page contents ignored).
fn decode_all(bytes: &[u8]) -> Result<Vec<u32>, DeltaError> {
    let mut r = IncrementReader::new(bytes)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; r.header().block_size.bytes()];
    while let Some(b) = r.next_page(&mut buf)? {
        out.push(b);
    }
    Ok(out)
}

/// Offsets of the bitmap words of a valid increment.
fn bitmap_offsets(bytes: &[u8]) -> Vec<usize> {
    let h = IncrementHeader::decode(bytes[..HEADER_LEN].try_into().unwrap()).unwrap();
    let mut at = HEADER_LEN;
    let mut out = Vec::new();
    for _ in 0..h.blocks.div_ceil(GROUP_BLOCKS) {
        out.push(at);
        let word = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        at += 8 + word.count_ones() as usize * h.block_size.bytes();
    }
    out
}

fn inc(blocks: u32, parent: u32, since: u64, stored: &[u32], fill: u8) -> Vec<u8> {
    let h = IncrementHeader {
        block_size: BlockSize::new(1024).unwrap(),
        blocks,
        parent_blocks: parent,
        since: Lsn(since),
    };
    let mut w = IncrementWriter::new(Vec::new(), h).unwrap();
    for &b in stored {
        w.push_page(b, &[fill; 1024]).unwrap();
    }
    w.finish().unwrap()
}

fn readers<'a>(incs: &[&'a Vec<u8>]) -> Vec<IncrementReader<&'a [u8]>> {
    incs.iter()
        .map(|i| IncrementReader::new(&i[..]).unwrap())
        .collect()
}

/// A genuine all-zero page in a newer increment replaces a non-zero page of the base:
/// no content is mistaken for "not restored".
#[test]
fn zero_pages_are_restored_as_zeros() {
    let base = [vec![1u8; 1024], vec![2; 1024]].concat();
    let i1 = inc(2, 2, 10, &[1], 0);
    let i2 = inc(2, 2, 20, &[], 0);
    let mut out = Vec::new();
    merge_chain(Some(&base[..]), &mut readers(&[&i1, &i2]), &mut out).unwrap();
    assert_eq!(out, [vec![1u8; 1024], vec![0; 1024]].concat());
    let c = Case {
        block_size: 1024,
        base_blocks: 0,
        base_zero_every: 1,
        epochs: vec![],
        checksums: false,
        seed: 0,
    };
    assert_eq!(restore_newest_first(&c, &base, &[i1, i2]).unwrap(), out);
}

#[test]
fn truncation_to_zero_and_regrowth() {
    let base = [vec![1u8; 1024], vec![2; 1024], vec![3; 1024]].concat();
    let i1 = inc(0, 3, 10, &[], 0);
    let i2 = inc(2, 0, 20, &[0, 1], 9);
    let mut out = Vec::new();
    let stats = merge_chain(Some(&base[..]), &mut readers(&[&i1, &i2]), &mut out).unwrap();
    assert_eq!(out, vec![9u8; 2048]);
    assert_eq!((stats.from_base, stats.from_increments), (0, 2));
    // The newest truncates to nothing.
    let mut out = Vec::new();
    merge_chain(Some(&base[..]), &mut readers(&[&i1]), &mut out).unwrap();
    assert!(out.is_empty());
    // A file that is new in the chain: no base.
    let mut out = Vec::new();
    merge_chain(None::<&[u8]>, &mut readers(&[&i2]), &mut out).unwrap();
    assert_eq!(out, vec![9u8; 2048]);
    let mut r = IncrementReader::new(&i2[..]).unwrap();
    let mut restore = ChainRestore::new(r.header());
    let mut file = io::Cursor::new(Vec::new());
    restore
        .apply_increment(&mut r, &mut seek_target(&mut file, BlockSize::new(1024).unwrap()))
        .unwrap();
    assert_eq!(restore.finish().unwrap().from_increments, 2);
    assert_eq!(file.into_inner(), vec![9u8; 2048]);
}

#[test]
fn chains_put_together_wrongly_are_refused() {
    let base = [vec![1u8; 1024], vec![2; 1024]].concat();
    let i1 = inc(3, 2, 10, &[2], 5);
    let i2 = inc(3, 3, 20, &[0], 6);
    let ok = |b: &[u8], incs: &[&Vec<u8>]| merge_chain(Some(b), &mut readers(incs), &mut Vec::new());
    ok(&base, &[&i1, &i2]).unwrap();
    // Oldest first is required: reversed, the sizes do not follow.
    assert!(matches!(
        ok(&base, &[&i2, &i1]),
        Err(DeltaError::ChainSizeMismatch {
            expected: 2,
            found: 3
        })
    ));
    // The same sizes, LSNs out of order.
    let i2_early = inc(3, 3, 5, &[0], 6);
    assert!(matches!(
        ok(&base, &[&i1, &i2_early]),
        Err(DeltaError::ChainOrder { .. })
    ));
    // A base of the wrong size, shorter or longer.
    assert!(matches!(
        ok(&base[..1024], &[&i1, &i2]),
        Err(DeltaError::BaseSizeMismatch {
            found: 1024,
            expected_blocks: 2,
            ..
        })
    ));
    let long = [base.clone(), vec![0; 1024]].concat();
    assert!(matches!(
        ok(&long, &[&i1, &i2]),
        Err(DeltaError::BaseSizeMismatch { found: 3072, .. })
    ));
    assert!(matches!(
        ok(&base[..1000], &[&i1, &i2]),
        Err(DeltaError::BaseSizeMismatch { found: 1000, .. })
    ));
    assert!(matches!(
        merge_chain(None::<&[u8]>, &mut readers(&[&i1, &i2]), &mut Vec::new()),
        Err(DeltaError::BaseSizeMismatch { found: 0, .. })
    ));
    // Other block size.
    let other = {
        let h = IncrementHeader {
            block_size: BlockSize::new(2048).unwrap(),
            blocks: 3,
            parent_blocks: 3,
            since: Lsn(20),
        };
        IncrementWriter::new(Vec::new(), h).unwrap().finish().unwrap()
    };
    assert!(matches!(
        ok(&base, &[&i1, &other]),
        Err(DeltaError::ChainBlockSize {
            expected: 2048,
            found: 1024
        })
    ));

    // The same checks newest first.
    let newest_first = |b: &[u8], incs: &[&Vec<u8>]| -> Result<RestoreStats, DeltaError> {
        let mut rs = readers(incs);
        let mut restore = ChainRestore::new(rs[0].header());
        let mut sink = |_: u32, _: &[u8]| Ok(());
        for r in &mut rs {
            restore.apply_increment(r, &mut sink)?;
        }
        restore.apply_base(b, &mut sink)?;
        restore.finish()
    };
    newest_first(&base, &[&i2, &i1]).unwrap();
    assert!(matches!(
        newest_first(&base, &[&i1, &i2]),
        Err(DeltaError::ChainSizeMismatch {
            expected: 2,
            found: 3
        })
    ));
    assert!(matches!(
        newest_first(&base, &[&i2_early, &i1]),
        Err(DeltaError::ChainOrder { .. })
    ));
    assert!(matches!(
        newest_first(&base[..1024], &[&i2, &i1]),
        Err(DeltaError::BaseSizeMismatch { found: 1024, .. })
    ));
    assert!(matches!(
        newest_first(&long, &[&i2, &i1]),
        Err(DeltaError::BaseSizeMismatch { .. })
    ));
    // Without the base, blocks are missing.
    let mut rs = readers(&[&i2, &i1]);
    let mut restore = ChainRestore::new(rs[0].header());
    for r in &mut rs {
        restore.apply_increment(r, &mut |_, _| Ok(())).unwrap();
    }
    assert_eq!(restore.remaining(), 1);
    assert!(matches!(restore.finish(), Err(DeltaError::ChainGap { block: 1 })));
}

#[test]
fn no_increments_copies_the_base() {
    let base = vec![4u8; 3000];
    let mut out = Vec::new();
    let mut none: Vec<IncrementReader<&[u8]>> = Vec::new();
    merge_chain(Some(&base[..]), &mut none, &mut out).unwrap();
    assert_eq!(out, base);
}
