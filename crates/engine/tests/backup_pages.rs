//! Data page checksums during backup-push, against a real PostgreSQL
//! (initdb -k): a page that fails its checksum is reported only when WAL
//! replay cannot explain it (issue 12, item 6). Pages are damaged on disk
//! right after the backup has started (from the progress callback, which
//! runs between the start call and the copy), so their LSNs can be set
//! relative to the backup's start LSN.

use pgark_engine::{backup_push, BackupPushOptions, DeltaFrom, DeltaOptions, ProgressSink};
use pgark_pg::{ControlFile, Lsn};
use pgark_pgclient::ConnectOptions;
use pgark_store::{LocalStore, ObjectStore};
use pgark_testkit::pg::{ClusterOptions, PgCluster, PgInstall};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

const BLCKSZ: u64 = 8192;

/// Where to put a damaged page's LSN.
#[derive(Debug, Clone, Copy)]
enum PageLsn {
    /// The backup's start LSN: written during the backup.
    BackupStart,
    /// An LSN far past anything the server wrote.
    Garbage,
}

/// At the start of the copy, rewrites blocks of `rel`: sets their LSN and
/// flips a byte of their tuple data, so their checksum fails (the same bytes
/// on every read).
#[derive(Debug)]
struct DamageAtStart {
    data_dir: PathBuf,
    rel: PathBuf,
    blocks: Vec<(u64, PageLsn)>,
    /// The start LSN as read from pg_control.
    start: Mutex<Option<Lsn>>,
}

impl ProgressSink for DamageAtStart {
    fn start(&self, _: u64) {
        // pg_backup_start's checkpoint is the latest: its redo pointer is
        // the backup's start LSN.
        let control = std::fs::read(self.data_dir.join("global/pg_control")).unwrap();
        let start = ControlFile::parse(&control).unwrap().checkpoint_copy.redo;
        *self.start.lock().unwrap() = Some(start);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.rel)
            .unwrap();
        for &(block, lsn) in &self.blocks {
            let lsn = match lsn {
                PageLsn::BackupStart => start,
                PageLsn::Garbage => Lsn(0xDEAD_BEEF_0000_0000),
            };
            let mut page = vec![0u8; BLCKSZ as usize];
            file.read_exact_at(&mut page, block * BLCKSZ).unwrap();
            // pd_lsn: xlogid (high half) then xrecoff, each little-endian.
            page[..4].copy_from_slice(&((lsn.0 >> 32) as u32).to_le_bytes());
            page[4..8].copy_from_slice(&(lsn.0 as u32).to_le_bytes());
            page[4000] ^= 0xFF;
            file.write_all_at(&page, block * BLCKSZ).unwrap();
        }
        file.sync_all().unwrap();
    }
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

fn options(c: &PgCluster, progress: Arc<DamageAtStart>) -> BackupPushOptions {
    let mut opts = BackupPushOptions::new(c.data_dir().to_path_buf());
    opts.connect = ConnectOptions {
        conninfo: Some(c.conninfo()),
        connect_timeout: None,
    };
    opts.archive_timeout = None;
    opts.concurrency = 2;
    opts.progress = Some(progress);
    opts
}

/// A page written during the backup (LSN at or after its start) is left to
/// WAL replay even though its checksum fails; one with an LSN past the
/// WAL's end is reported, and so is the first page once a later backup
/// starts after its LSN; in full and delta backups alike.
#[tokio::test(flavor = "multi_thread")]
async fn checksum_failures_on_pages_written_during_the_backup_are_not_reported() {
    let c =
        PgCluster::start_new(ClusterOptions::new(PgInstall::detect().expect("PostgreSQL"))).expect("start");
    c.psql(
        "create table victim (id int primary key, v text) with (autovacuum_enabled = off); \
         insert into victim select g, repeat('v', 200) from generate_series(1, 2000) g; \
         vacuum freeze victim; checkpoint",
    )
    .unwrap();
    let rel = c.psql("select pg_relation_filepath('victim')").unwrap();
    let path = c.data_dir().join(&rel);
    assert!(std::fs::metadata(&path).unwrap().len() > 4 * BLCKSZ);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")).unwrap());

    let damage = |blocks: Vec<(u64, PageLsn)>| {
        Arc::new(DamageAtStart {
            data_dir: c.data_dir().to_path_buf(),
            rel: path.clone(),
            blocks,
            start: Mutex::new(None),
        })
    };
    let first = damage(vec![(0, PageLsn::BackupStart), (1, PageLsn::Garbage)]);
    let full = backup_push(store.clone(), &options(&c, first.clone()))
        .await
        .expect("full backup");
    assert_eq!(
        Some(full.start_lsn.clone()),
        first.start.lock().unwrap().map(|l| l.to_string()),
        "the damaged page carries the backup's start LSN"
    );
    let reported: Vec<(String, Vec<u32>)> = full
        .corrupt_pages
        .iter()
        .map(|p| (p.path.clone(), p.blocks.clone()))
        .collect();
    assert_eq!(reported, [(rel.clone(), vec![1])], "full backup");

    // A delta taken later: block 0's LSN is now before its start (corrupt
    // on disk, nothing rewrote it); block 2 is damaged during this backup.
    let second = damage(vec![(2, PageLsn::BackupStart)]);
    let mut opts = options(&c, second);
    opts.delta = Some(DeltaOptions {
        from: DeltaFrom::Latest,
        max_steps: 3,
    });
    let delta = backup_push(store.clone(), &opts).await.expect("delta backup");
    assert!(delta.parent.is_some(), "a delta");
    let reported: Vec<(String, Vec<u32>)> = delta
        .corrupt_pages
        .iter()
        .map(|p| (p.path.clone(), p.blocks.clone()))
        .collect();
    assert_eq!(reported, [(rel.clone(), vec![0, 1])], "delta backup");

    // And a full one, through the plain copy rather than the delta scan.
    let third = damage(vec![(3, PageLsn::BackupStart)]);
    let full2 = backup_push(store, &options(&c, third))
        .await
        .expect("second full backup");
    let reported: Vec<Vec<u32>> = full2.corrupt_pages.iter().map(|p| p.blocks.clone()).collect();
    assert_eq!(reported, [vec![0, 1, 2]], "second full backup");
}
