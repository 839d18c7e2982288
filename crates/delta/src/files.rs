//! Which files a delta backup diffs page by page.
//!
//! Only the **main fork** of a permanent relation (`<relfilenode>` and its segments
//! `<relfilenode>.<n>`, in `global/`, `base/<db>/` or a tablespace's database directory,
//! recognised by [`RelationFilePath::parse`], never by substring) is diffed by `pd_lsn`.
//! Every other file, the other forks included, is copied whole. The argument, fork by
//! fork (checked against PostgreSQL's `visibilitymap.c`, `freespace.c` and `bufmgr.c`):
//!
//! - **main**: every change to a page is WAL-logged and stamps the page with the LSN of
//!   its record (`PageSetLSN`), so a page whose `pd_lsn` is before the parent backup's
//!   start has not changed since the parent copied it. The exceptions are harmless or
//!   covered: hint bits (`MarkBufferDirtyHint`) change a page without WAL, but with data
//!   checksums or `wal_log_hints` the first such change after a checkpoint logs a full-page
//!   image and stamps the page (so the rule holds), and without them the parent's copy,
//!   lacking some hint bits, is a valid page that PostgreSQL re-derives the bits for; new
//!   pages are all zeros and always stored; pages the parent did not have are always
//!   stored.
//! - **`_vm`** (visibility map): setting a bit stamps the map page with the heap record's
//!   LSN, but *clearing* one does not: `visibilitymap_clear` changes the page without
//!   touching its LSN ("Clearing visibility map bits is not separately WAL-logged"), and
//!   the clear is redone only by replaying the heap record that caused it. A bit cleared
//!   between the parent's start and this backup's start leaves the page's LSN old, so a
//!   diff would restore the parent's page with the bit still set, and replay (which
//!   starts after the clearing record) would not clear it: index-only scans would return
//!   wrong rows and VACUUM would skip the page. Not diffable (see the test
//!   `cleared_visibility_bit_keeps_the_lsn`).
//! - **`_fsm`** (free space map): not WAL-logged at all. Updates go through
//!   `MarkBufferDirtyHint`, so without checksums they never stamp an LSN, and during
//!   recovery (a backup taken from a standby) they never do; the last page is also
//!   rewritten on truncation. Not diffable.
//! - **`_init`** (the init fork of an unlogged relation): written once, when the relation
//!   is created, and tiny; nothing to gain. Copied whole.
//!
//! The visibility map and the free space map are small (2 bits and about 1 byte per heap
//! page), so copying them whole costs little.
//!
//! The caller also needs, for each diffed file: the parent's size of the same path in
//! blocks (0 if the parent had no such file: the increment then stores every block), the
//! parent backup's start LSN, and the file's size, which must be a whole number of blocks
//! (a file that is not, e.g. caught mid-extension, is copied whole). One caveat is beyond
//! what pages can tell: `CREATE DATABASE ... STRATEGY FILE_COPY` (and `ALTER DATABASE ...
//! SET TABLESPACE`) copy pages with their old LSNs, so if such a copy lands on a path that
//! held *another* relation in the parent (a database OID reused after a drop), the old
//! pages would be taken from the wrong file. A caller that sees a database directory
//! appear, or reappear, since the parent should copy its files whole (`backup-push`
//! compares the directory's `PG_VERSION`, written whenever the directory is created:
//! see `Parent::same_database_dirs` in the engine).

use pgark_pg::layout::{ForkNumber, RelFileName, RelationFilePath};

use crate::DeltaError;

/// The relation file at `rel_path` (relative to the data directory, `/`-separated) if a
/// delta backup diffs it page by page: a permanent relation's main fork. `None` for every
/// other path, the `_fsm`, `_vm` and `_init` forks included.
///
/// ```
/// use pgark_delta::delta_relation_file;
///
/// assert!(delta_relation_file("base/16384/16385.2").is_some());
/// assert!(delta_relation_file("base/16384/16385_vm").is_none());
/// assert!(delta_relation_file("x/base/16384/16385").is_none());
/// ```
pub fn delta_relation_file(rel_path: &str) -> Option<RelationFilePath> {
    RelationFilePath::parse(rel_path).filter(|p| p.file.fork == ForkNumber::Main)
}

/// Whether a delta backup diffs `rel_path` page by page ([`delta_relation_file`]).
pub fn is_delta_file(rel_path: &str) -> bool {
    delta_relation_file(rel_path).is_some()
}

/// The absolute block number of the first block of `file`: its segment number times
/// `relseg_size` (`RELSEG_SIZE`, blocks per segment file, from `pg_control`), as data
/// checksums use it ([`ScanOptions::first_block_no`](crate::ScanOptions::first_block_no)).
pub fn first_block_no(file: &RelFileName, relseg_size: u32) -> Result<u32, DeltaError> {
    file.segno
        .checked_mul(relseg_size)
        .ok_or(DeltaError::BlockNumberOverflow {
            block: u64::from(file.segno) * u64::from(relseg_size),
            first_block_no: 0,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpages::heap_page;
    use crate::{classify_page, BlockSize, PageClass};
    use pgark_pg::{Lsn, PageHeader};

    #[test]
    fn only_the_main_fork_is_diffed() {
        let cases: &[(&str, bool)] = &[
            ("base/1/123", true),
            ("base/16384/16385.3", true),
            ("global/1262", true),
            ("pg_tblspc/16390/PG_16_202307071/5/16391.1", true),
            ("base/1/123_fsm", false),
            ("base/1/123_fsm.1", false),
            ("base/1/123_vm", false),
            ("base/1/123_init", false),
            ("global/1262_vm", false),
            ("pg_tblspc/16390/PG_16_202307071/5/16391_fsm", false),
            // Not relation files at all.
            ("base/1/t3_45", false),
            ("base/1/PG_VERSION", false),
            ("base/1/pg_filenode.map", false),
            ("global/pg_control", false),
            ("pg_xact/0000", false),
            ("pg_wal/000000010000000000000001", false),
            ("x/base/1/123", false),
            ("base/1/123/", false),
            ("base/1/0123", false),
            ("base/1/123.0", false),
            ("", false),
        ];
        for &(path, diffed) in cases {
            assert_eq!(is_delta_file(path), diffed, "{path}");
            assert_eq!(delta_relation_file(path).is_some(), diffed, "{path}");
        }
        let f = delta_relation_file("base/1/123.3").unwrap();
        assert_eq!(first_block_no(&f.file, 131_072).unwrap(), 3 * 131_072);
        let f = delta_relation_file("base/1/123.40000").unwrap();
        assert!(matches!(
            first_block_no(&f.file, 131_072),
            Err(DeltaError::BlockNumberOverflow { .. })
        ));
    }

    /// Why `_vm` is copied whole: `visibilitymap_clear` clears the bit of a heap page in
    /// the map page's contents and leaves `pd_lsn` alone, so the page reads as unchanged
    /// and a diff would keep the parent's copy, with the bit still set.
    #[test]
    fn cleared_visibility_bit_keeps_the_lsn() {
        const FIXTURE: &str = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/wal/heap/checksum_fixture_vm"
        );
        let parent_copy = std::fs::read(FIXTURE).unwrap();
        let header = PageHeader::parse(&parent_copy).unwrap();
        // The parent backup started after the map page was last stamped.
        let parent_start = Lsn(header.lsn.0 + 0x1000);
        // Map contents start after the MAXALIGNed header; find a set bit and clear it the
        // way visibilitymap_clear does.
        let contents = PageHeader::SIZE;
        let at = (contents..parent_copy.len())
            .find(|&i| parent_copy[i] != 0)
            .expect("the fixture's map has bits set");
        let mut now = parent_copy.clone();
        now[at] &= now[at] - 1;
        assert_ne!(now, parent_copy);
        assert_eq!(PageHeader::parse(&now).unwrap().lsn, header.lsn);
        assert_eq!(
            classify_page(&now, BlockSize::DEFAULT, parent_start),
            PageClass::Unchanged,
            "a diff would not store the changed map page"
        );
        assert!(!is_delta_file("base/5/16384_vm"));
        // A heap page changed the same way (any change) gets a new LSN and is stored.
        let heap = heap_page(8192, Lsn(parent_start.0 + 8), 1);
        assert_eq!(
            classify_page(&heap, BlockSize::DEFAULT, parent_start),
            PageClass::Changed
        );
    }
}
