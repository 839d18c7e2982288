//! What a physical backup copies from a data directory.
//!
//! A base backup is a copy of the data directory, minus what PostgreSQL recreates or
//! clears at startup and what must not be restored. These are the rules `sendDir` applies
//! in `src/backend/backup/basebackup.c` (`src/backend/replication/basebackup.c` in 13 and
//! 14), as pure functions of paths relative to the data directory, so that a backup made
//! by pgark contains what `pg_basebackup` would have sent:
//!
//! - `excludeFiles`: `postgresql.auto.conf.tmp`, `current_logfiles.tmp`, `backup_label`,
//!   `tablespace_map`, `backup_manifest`, `postmaster.pid`, `postmaster.opts`, and any name
//!   starting with `pg_internal.init`, wherever they are.
//! - `excludeDirContents`: `pg_stat_tmp`, `pg_replslot`, `pg_dynshmem`, `pg_notify`,
//!   `pg_serial`, `pg_snapshots`, `pg_subtrans`, wherever they are: the directory is kept,
//!   empty. On 13 and 14, so is the `stats_temp_directory` (see
//!   [`BackupFilter::with_stats_temp_directory`]).
//! - `pg_wal` (top level only): kept empty, except for the empty directories
//!   [`wal_subdirectories`] lists, which a restore needs.
//! - Names starting with `pgsql_tmp` (temporary files and directories) anywhere, and
//!   `.DS_Store` (PostgreSQL 17 and later skip it; it is never PostgreSQL's).
//! - In a database directory, temporary relations (`t<backend>_<relfilenode>...`,
//!   `looks_like_temp_rel_name`), and every fork but the init fork of an unlogged relation
//!   (one with a `<relfilenode>_init` file beside it): see [`unlogged_relations`].
//! - `global/pg_control` is copied, but last ([`crate::ControlFile::PATH`]), so that its
//!   checkpoint is no earlier than anything the backup copied.
//!
//! `backup_label.old`, `tablespace_map.old` and `current_logfiles` are *not* excluded:
//! `basebackup.c` copies them.

use std::collections::HashSet;
use std::fmt;

/// `PG_TEMP_FILE_PREFIX` (`storage/fd.h`): temporary files and directories start with it.
pub const PG_TEMP_FILE_PREFIX: &str = "pgsql_tmp";

/// `excludeDirContents` of `basebackup.c`: directories whose contents PostgreSQL removes
/// or recreates at startup. Matched by name at any depth.
pub const EXCLUDE_DIR_CONTENTS: [&str; 7] = [
    "pg_stat_tmp",  // PG_STAT_TMP_DIR
    "pg_replslot",  // PG_REPLSLOT_DIR
    "pg_dynshmem",  // PG_DYNSHMEM_DIR
    "pg_notify",    // removed on startup, AsyncShmemInit()
    "pg_serial",    // not needed for normal operation, SerialInit()
    "pg_snapshots", // removed on startup, DeleteAllExportedSnapshotFiles()
    "pg_subtrans",  // zeroed on startup, StartupSUBTRANS()
];

/// `excludeFiles` of `basebackup.c` matched by exact name, at any depth.
pub const EXCLUDE_FILES: [&str; 7] = [
    "postgresql.auto.conf.tmp", // PG_AUTOCONF_FILENAME ".tmp"
    "current_logfiles.tmp",     // LOG_METAINFO_DATAFILE_TMP
    "backup_label",             // BACKUP_LABEL_FILE: the backup brings its own
    "tablespace_map",           // TABLESPACE_MAP: likewise
    "backup_manifest",          // belongs to the backup this server was restored from
    "postmaster.pid",
    "postmaster.opts",
];

/// `excludeFiles` of `basebackup.c` matched by prefix, at any depth:
/// `RELCACHE_INIT_FILENAME`, rebuilt at startup (its temporary files too).
pub const EXCLUDE_FILE_PREFIXES: [&str; 1] = ["pg_internal.init"];

/// A relation fork: PostgreSQL's `ForkNumber` (`common/relpath.h`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum ForkNumber {
    /// `MAIN_FORKNUM`: the data, no suffix.
    Main,
    /// `FSM_FORKNUM`: the free space map, `_fsm`.
    FreeSpaceMap,
    /// `VISIBILITYMAP_FORKNUM`: the visibility map, `_vm`.
    VisibilityMap,
    /// `INIT_FORKNUM`: the initial contents of an unlogged relation, `_init`.
    Init,
}

impl ForkNumber {
    /// Every fork, in `ForkNumber` order.
    pub const ALL: [ForkNumber; 4] = [
        ForkNumber::Main,
        ForkNumber::FreeSpaceMap,
        ForkNumber::VisibilityMap,
        ForkNumber::Init,
    ];

    /// Its name in `forkNames` (`common/relpath.c`): `main`, `fsm`, `vm`, `init`.
    pub fn name(self) -> &'static str {
        match self {
            ForkNumber::Main => "main",
            ForkNumber::FreeSpaceMap => "fsm",
            ForkNumber::VisibilityMap => "vm",
            ForkNumber::Init => "init",
        }
    }

    /// The C enum's value (0 to 3).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// `forkname_chars`: the fork whose name `s` starts with, and that name's length.
    /// `main` is not matched: the main fork has no suffix.
    fn from_prefix(s: &str) -> Option<(ForkNumber, usize)> {
        ForkNumber::ALL[1..]
            .iter()
            .find(|f| s.starts_with(f.name()))
            .map(|&f| (f, f.name().len()))
    }
}

/// The name of a file of a permanent relation: `<relfilenode>[_<fork>][.<segno>]`, e.g.
/// `16384`, `16384_fsm`, `16384.2`, `16384_vm.1`.
///
/// Parsed like `parse_filename_for_nontemp_relation` of PostgreSQL 17 and later
/// (`common/relpath.c`), which is stricter than 13 to 16's (`storage/file/reinit.c`):
/// numbers have no leading zeros and fit in 32 bits, the relfilenode is not 0, and a
/// segment suffix is `.1` or more (segment 0 has none). PostgreSQL never names a relation
/// file otherwise.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RelFileName {
    /// The `RelFileNumber` (`relfilenode` in `pg_class`).
    pub relfilenode: u32,
    /// The fork.
    pub fork: ForkNumber,
    /// The 1 GB segment (`RELSEG_SIZE` blocks) the file holds; 0 for the first.
    pub segno: u32,
}

/// Parses a decimal number without sign or leading zero, that fits a `u32` and is not 0.
fn parse_positive_u32(s: &str) -> Option<u32> {
    match s.as_bytes().first() {
        Some(b'1'..=b'9') if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    }
}

impl RelFileName {
    /// Parses a file name (no directory) as a permanent relation's file; `None` for
    /// anything else, temporary relations included.
    pub fn parse(name: &str) -> Option<RelFileName> {
        let digits = name.bytes().take_while(u8::is_ascii_digit).count();
        let relfilenode = parse_positive_u32(&name[..digits])?;
        let mut rest = &name[digits..];
        let mut fork = ForkNumber::Main;
        if let Some(after) = rest.strip_prefix('_') {
            let (f, len) = ForkNumber::from_prefix(after)?;
            fork = f;
            rest = &after[len..];
        }
        let segno = match rest.strip_prefix('.') {
            None if rest.is_empty() => 0,
            None => return None,
            Some(seg) => parse_positive_u32(seg)?,
        };
        Some(RelFileName {
            relfilenode,
            fork,
            segno,
        })
    }
}

impl fmt::Display for RelFileName {
    /// The file name PostgreSQL gives it (`relpath` plus `mdfd` segment suffix).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.relfilenode)?;
        if self.fork != ForkNumber::Main {
            write!(f, "_{}", self.fork.name())?;
        }
        if self.segno != 0 {
            write!(f, ".{}", self.segno)?;
        }
        Ok(())
    }
}

/// Whether `name` is the file of a temporary relation: `t<digits>_<digits>`, optionally
/// `_<fork>`, optionally `.<digits>` (`looks_like_temp_rel_name`, `storage/file/fd.c`).
/// Temporary relations are never backed up.
pub fn looks_like_temp_rel_name(name: &str) -> bool {
    fn skip_digits(s: &str) -> (&str, usize) {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        (&s[n..], n)
    }
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let (rest, n) = skip_digits(rest);
    let Some(rest) = rest.strip_prefix('_').filter(|_| n > 0) else {
        return false;
    };
    let (mut rest, n) = skip_digits(rest);
    if n == 0 {
        return false;
    }
    if let Some(after) = rest.strip_prefix('_') {
        let Some((_, len)) = ForkNumber::from_prefix(after) else {
            return false;
        };
        rest = &after[len..];
    }
    if let Some(after) = rest.strip_prefix('.') {
        let (after, n) = skip_digits(after);
        if n == 0 {
            return false;
        }
        rest = after;
    }
    rest.is_empty()
}

/// The tablespace a relation file is in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Tablespace {
    /// `pg_global` (`GLOBALTABLESPACE_OID`): `global/`, shared catalogs.
    Global,
    /// `pg_default` (`DEFAULTTABLESPACE_OID`): `base/<db>/`.
    Default,
    /// A user tablespace: `pg_tblspc/<oid>/PG_<major>_<catversion>/<db>/`.
    Other(u32),
}

/// A relation file identified by its path relative to the data directory: where
/// PostgreSQL's `relpath()` puts a permanent relation's fork, plus the segment suffix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RelationFilePath {
    /// Its tablespace.
    pub tablespace: Tablespace,
    /// Its database's OID; `None` in `global/`.
    pub database: Option<u32>,
    /// The file name.
    pub file: RelFileName,
}

impl RelationFilePath {
    /// Parses `global/<file>`, `base/<db>/<file>` or
    /// `pg_tblspc/<oid>/PG_<major>_<catversion>/<db>/<file>` where `<file>` is a
    /// [`RelFileName`] and the OIDs are decimal numbers; `None` for any other path
    /// (never by substring: `x/base/1/123` is not a relation file). Temporary relations
    /// are not matched.
    pub fn parse(rel_path: &str) -> Option<RelationFilePath> {
        let parts: Vec<&str> = rel_path.split('/').collect();
        let (tablespace, database, name) = match parts[..] {
            ["global", name] => (Tablespace::Global, None, name),
            ["base", db, name] => (Tablespace::Default, Some(parse_oid(db)?), name),
            ["pg_tblspc", spc, version_dir, db, name] if is_tablespace_version_directory(version_dir) => {
                (Tablespace::Other(parse_oid(spc)?), Some(parse_oid(db)?), name)
            }
            _ => return None,
        };
        Some(RelationFilePath {
            tablespace,
            database,
            file: RelFileName::parse(name)?,
        })
    }
}

/// Whether `rel_path` is the file of a permanent relation, whose contents are pages of
/// `BLCKSZ` bytes carrying checksums when data checksums are on: see
/// [`RelationFilePath::parse`], which also gives the fork (only the main fork's pages
/// hold tuples; all forks' pages carry checksums).
pub fn is_paged_relation_file(rel_path: &str) -> bool {
    RelationFilePath::parse(rel_path).is_some()
}

/// An OID in a path: decimal digits (`strspn(.., "0123456789")`), at most `u32::MAX`.
fn parse_oid(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether `name` has the form of a `TABLESPACE_VERSION_DIRECTORY`:
/// `PG_<major>_<catversion>` (`catalog/catalog.h`), e.g. `PG_16_202307071`.
pub fn is_tablespace_version_directory(name: &str) -> bool {
    let Some((major, catversion)) = name.strip_prefix("PG_").and_then(|s| s.split_once('_')) else {
        return false;
    };
    parse_positive_u32(major).is_some() && parse_positive_u32(catversion).is_some()
}

/// The `TABLESPACE_VERSION_DIRECTORY` of PostgreSQL `major` with catalog version
/// `catversion` (`"PG_" PG_MAJORVERSION "_" CATALOG_VERSION_NO`).
pub fn tablespace_version_directory(major: u32, catversion: u32) -> String {
    format!("PG_{major}_{catversion}")
}

/// Whether the directory `rel_dir` (relative to the data directory) holds relation files:
/// `global`, `base/<db>` or `pg_tblspc/<oid>/PG_<major>_<catversion>/<db>` (`sendDir`'s
/// `isRelationDir`).
pub fn is_relation_dir(rel_dir: &str) -> bool {
    database_dir(rel_dir).is_some() || rel_dir == "global"
}

/// The database OID of a database directory (`base/<db>` or
/// `pg_tblspc/<oid>/PG_<major>_<catversion>/<db>`), `None` for any other path.
fn database_dir(rel_dir: &str) -> Option<u32> {
    let parts: Vec<&str> = rel_dir.split('/').collect();
    match parts[..] {
        ["base", db] => parse_oid(db),
        ["pg_tblspc", spc, version_dir, db] if is_tablespace_version_directory(version_dir) => {
            parse_oid(spc)?;
            parse_oid(db)
        }
        _ => None,
    }
}

/// The relfilenodes of the unlogged relations among a database directory's files: those
/// with an init fork (`<relfilenode>_init`). `basebackup.c` copies only the init fork of
/// these; PostgreSQL rebuilds the other forks from it at startup.
pub fn unlogged_relations(dir_file_names: &[&str]) -> HashSet<u32> {
    dir_file_names
        .iter()
        .filter_map(|name| RelFileName::parse(name))
        .filter(|r| r.fork == ForkNumber::Init && r.segno == 0)
        .map(|r| r.relfilenode)
        .collect()
}

/// The empty directories a backup must have under `pg_wal` for PostgreSQL `major`:
/// `pg_wal/archive_status`, and from 17 `pg_wal/summaries` (`basebackup.c` sends them,
/// with `pg_wal` itself, as empty directories).
pub fn wal_subdirectories(major: u32) -> &'static [&'static str] {
    if major >= 17 {
        &["pg_wal/archive_status", "pg_wal/summaries"]
    } else {
        &["pg_wal/archive_status"]
    }
}

/// What a backup does with a path of the data directory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PathClass {
    /// Copy it (a directory: create it and look inside).
    Include,
    /// A directory to create empty: nothing inside it is copied.
    ExcludeContents,
    /// Leave it out (a directory: with everything inside).
    Exclude,
}

/// Why a path is not copied (see [`BackupFilter::exclude_reason`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ExcludeReason {
    /// A temporary file or directory (`pgsql_tmp...`).
    TempFile,
    /// `.DS_Store`, a file macOS leaves behind.
    SystemFile,
    /// One of `basebackup.c`'s `excludeFiles` ([`EXCLUDE_FILES`],
    /// [`EXCLUDE_FILE_PREFIXES`]).
    ExcludedFile,
    /// A temporary relation's file in a database directory.
    TemporaryRelation,
    /// A fork other than the init fork of an unlogged relation.
    UnloggedRelation,
    /// A directory whose contents PostgreSQL recreates at startup
    /// ([`EXCLUDE_DIR_CONTENTS`], `stats_temp_directory`): kept empty.
    DirectoryContents,
    /// `pg_wal`: kept empty, the WAL comes from the archive (see
    /// [`wal_subdirectories`]).
    WalDirectory,
    /// Inside a directory kept empty or left out (for callers that classify every path
    /// of a walk without pruning it).
    InExcludedDirectory,
    /// In a tablespace, outside the version directory of the server being backed up
    /// (left there by another major version, e.g. before `pg_upgrade`); see
    /// [`BackupFilter::with_tablespace_version_directory`].
    OtherTablespaceVersion,
}

impl ExcludeReason {
    /// What a backup does with a path excluded for this reason.
    pub fn class(self) -> PathClass {
        match self {
            ExcludeReason::DirectoryContents | ExcludeReason::WalDirectory => PathClass::ExcludeContents,
            _ => PathClass::Exclude,
        }
    }
}

/// The rules of `basebackup.c`'s `sendDir` for one server. [`classify`] uses the defaults,
/// which suit PostgreSQL 15 and later (where `stats_temp_directory` is gone) and do not
/// check tablespace version directories.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct BackupFilter {
    stats_temp_directory: Option<String>,
    tablespace_version_directory: Option<String>,
}

impl BackupFilter {
    /// The default rules.
    pub fn new() -> BackupFilter {
        BackupFilter::default()
    }

    /// PostgreSQL 13 and 14: the contents of `stats_temp_directory` are not backed up
    /// either (`statrelpath` in `basebackup.c`). `rel_dir` is its path relative to the data
    /// directory (a setting outside the data directory needs no rule); the default,
    /// `pg_stat_tmp`, is excluded anyway.
    pub fn with_stats_temp_directory(mut self, rel_dir: &str) -> BackupFilter {
        let trimmed = rel_dir.trim_start_matches("./").trim_end_matches('/');
        self.stats_temp_directory = Some(trimmed.to_owned());
        self
    }

    /// Only this version directory of each tablespace is backed up (`sendTablespace`
    /// sends `<location>/TABLESPACE_VERSION_DIRECTORY` only): other entries directly under
    /// `pg_tblspc/<oid>/` are excluded. See [`tablespace_version_directory`].
    pub fn with_tablespace_version_directory(mut self, name: &str) -> BackupFilter {
        self.tablespace_version_directory = Some(name.to_owned());
        self
    }

    /// What a backup does with `rel_path` (relative to the data directory, `/`-separated,
    /// no leading `./`; a tablespace's files as `pg_tblspc/<oid>/...`), a directory if
    /// `is_dir`. `unlogged` holds the unlogged relations of the path's directory
    /// ([`unlogged_relations`] of its file names; an empty set outside database
    /// directories, or to leave that rule out).
    ///
    /// Paths inside a directory classified [`PathClass::ExcludeContents`] or
    /// [`PathClass::Exclude`] are [`PathClass::Exclude`], so a caller may classify every
    /// path of a walk without pruning it.
    pub fn classify(&self, rel_path: &str, is_dir: bool, unlogged: &HashSet<u32>) -> PathClass {
        self.exclude_reason(rel_path, is_dir, unlogged)
            .map_or(PathClass::Include, ExcludeReason::class)
    }

    /// Why [`BackupFilter::classify`] does not give [`PathClass::Include`]; `None` when it
    /// does.
    pub fn exclude_reason(
        &self,
        rel_path: &str,
        is_dir: bool,
        unlogged: &HashSet<u32>,
    ) -> Option<ExcludeReason> {
        let parts: Vec<&str> = rel_path.split('/').filter(|p| !p.is_empty()).collect();
        // An ancestor's verdict covers its descendants.
        for depth in 1..parts.len() {
            if self.reason_for_last(&parts[..depth], true).is_some() {
                return Some(ExcludeReason::InExcludedDirectory);
            }
        }
        let reason = self.reason_for_last(&parts, is_dir);
        if reason.is_some() || is_dir {
            return reason;
        }
        // sendDir: "Exclude all forks for unlogged tables except the init fork".
        let (name, parent) = parts.split_last()?;
        match RelFileName::parse(name) {
            Some(r)
                if is_relation_dir(&parent.join("/"))
                    && r.fork != ForkNumber::Init
                    && unlogged.contains(&r.relfilenode) =>
            {
                Some(ExcludeReason::UnloggedRelation)
            }
            _ => None,
        }
    }

    /// The rules about the last component of `parts`, its ancestors being included, but
    /// for unlogged relations.
    fn reason_for_last(&self, parts: &[&str], is_dir: bool) -> Option<ExcludeReason> {
        let (&name, parent) = parts.split_last()?; // the data directory itself: included
        if name.starts_with(PG_TEMP_FILE_PREFIX) {
            return Some(ExcludeReason::TempFile);
        }
        if name == ".DS_Store" {
            return Some(ExcludeReason::SystemFile);
        }
        if EXCLUDE_FILES.contains(&name) || EXCLUDE_FILE_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Some(ExcludeReason::ExcludedFile);
        }
        if database_dir(&parent.join("/")).is_some() && looks_like_temp_rel_name(name) {
            return Some(ExcludeReason::TemporaryRelation);
        }
        if let (Some(wanted), ["pg_tblspc", _, version_dir]) = (&self.tablespace_version_directory, parts) {
            if version_dir != wanted {
                return Some(ExcludeReason::OtherTablespaceVersion);
            }
        }
        if is_dir {
            let path = parts.join("/");
            if path == "pg_wal" {
                return Some(ExcludeReason::WalDirectory);
            }
            if EXCLUDE_DIR_CONTENTS.contains(&name)
                || self.stats_temp_directory.as_deref() == Some(path.as_str())
            {
                return Some(ExcludeReason::DirectoryContents);
            }
        }
        None
    }

    /// Classifies the entries of one directory, `(name, is_dir)` each, computing the
    /// directory's [`unlogged_relations`] from the names. The result is in the order of
    /// `entries`.
    pub fn classify_dir(&self, rel_dir: &str, entries: &[(&str, bool)]) -> Vec<PathClass> {
        let rel_dir = rel_dir.trim_end_matches('/');
        let names: Vec<&str> = entries.iter().map(|&(name, _)| name).collect();
        let unlogged = unlogged_relations(&names);
        entries
            .iter()
            .map(|&(name, is_dir)| {
                let path = if rel_dir.is_empty() {
                    name.to_owned()
                } else {
                    format!("{rel_dir}/{name}")
                };
                self.classify(&path, is_dir, &unlogged)
            })
            .collect()
    }
}

/// [`BackupFilter::classify`] with the default rules.
pub fn classify(rel_path: &str, is_dir: bool, unlogged: &HashSet<u32>) -> PathClass {
    BackupFilter::default().classify(rel_path, is_dir, unlogged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(relfilenode: u32, fork: ForkNumber, segno: u32) -> Option<RelFileName> {
        Some(RelFileName {
            relfilenode,
            fork,
            segno,
        })
    }

    #[test]
    fn relation_file_names() {
        use ForkNumber::*;
        let cases: &[(&str, Option<RelFileName>)] = &[
            ("123", rel(123, Main, 0)),
            ("1", rel(1, Main, 0)),
            ("123.1", rel(123, Main, 1)),
            ("123.42", rel(123, Main, 42)),
            ("123_fsm", rel(123, FreeSpaceMap, 0)),
            ("123_vm", rel(123, VisibilityMap, 0)),
            ("123_init", rel(123, Init, 0)),
            ("123_fsm.3", rel(123, FreeSpaceMap, 3)),
            ("123_init.1", rel(123, Init, 1)),
            ("4294967295", rel(u32::MAX, Main, 0)),
            ("16384.4294967295", rel(16384, Main, u32::MAX)),
            // Not relation files.
            ("", None),
            ("0", None),
            ("0123", None),
            ("4294967296", None),
            ("99999999999999999999", None),
            ("123abc", None),
            ("123.", None),
            ("123.0", None),
            ("123.01", None),
            ("123.4294967296", None),
            ("123.1.2", None),
            ("123.-1", None),
            ("123.+1", None),
            ("123_", None),
            ("123_main", None),
            ("123_fsmx", None),
            ("123_vm_fsm", None),
            ("123_FSM", None),
            ("123_init_", None),
            ("123__fsm", None),
            (".123", None),
            ("_fsm", None),
            ("+123", None),
            (" 123", None),
            ("123 ", None),
            ("t3_45", None),
            ("pg_internal.init", None),
            ("PG_VERSION", None),
            ("pg_filenode.map", None),
            ("١٢٣", None),
        ];
        for &(name, expected) in cases {
            assert_eq!(RelFileName::parse(name), expected, "{name:?}");
            if let Some(r) = expected {
                assert_eq!(r.to_string(), name, "{name:?}");
            }
        }
    }

    #[test]
    fn temp_relation_names() {
        let cases: &[(&str, bool)] = &[
            ("t3_45", true),
            ("t3_45_fsm", true),
            ("t3_45_vm", true),
            ("t3_45_init", true),
            ("t3_45.1", true),
            ("t3_45_fsm.12", true),
            ("t0_0", true),
            ("t007_0123", true),
            ("t3_45.0", true),
            ("t3_45.", false),
            ("t3_45_main", false),
            ("t3_45_", false),
            ("t3_45x", false),
            ("t3_", false),
            ("t_45", false),
            ("t345", false),
            ("t", false),
            ("T3_45", false),
            ("3_45", false),
            ("tt3_45", false),
            ("t3_45.1.2", false),
            ("t3_45_vmx", false),
            ("", false),
        ];
        for &(name, expected) in cases {
            assert_eq!(looks_like_temp_rel_name(name), expected, "{name:?}");
        }
    }

    #[test]
    fn relation_paths() {
        use ForkNumber::*;
        let f = |relfilenode, fork, segno| RelFileName {
            relfilenode,
            fork,
            segno,
        };
        type Parsed = (Tablespace, Option<u32>, RelFileName);
        let cases: &[(&str, Option<Parsed>)] = &[
            (
                "base/1/123",
                Some((Tablespace::Default, Some(1), f(123, Main, 0))),
            ),
            (
                "base/16384/16385.3",
                Some((Tablespace::Default, Some(16384), f(16385, Main, 3))),
            ),
            (
                "base/1/123_vm",
                Some((Tablespace::Default, Some(1), f(123, VisibilityMap, 0))),
            ),
            (
                "base/1/123_init",
                Some((Tablespace::Default, Some(1), f(123, Init, 0))),
            ),
            ("global/1262", Some((Tablespace::Global, None, f(1262, Main, 0)))),
            (
                "global/1262_fsm",
                Some((Tablespace::Global, None, f(1262, FreeSpaceMap, 0))),
            ),
            (
                "pg_tblspc/16390/PG_16_202307071/5/16391.1",
                Some((Tablespace::Other(16390), Some(5), f(16391, Main, 1))),
            ),
            (
                "pg_tblspc/16390/PG_18_202506291/16384/16400_fsm",
                Some((Tablespace::Other(16390), Some(16384), f(16400, FreeSpaceMap, 0))),
            ),
            ("base/1/123abc", None),
            ("base/1/123.", None),
            ("base/1/t3_45", None),
            ("base/1/PG_VERSION", None),
            ("base/1/pg_filenode.map", None),
            ("base/1/pg_internal.init", None),
            ("base/pgsql_tmp/x", None),
            ("base/pgsql_tmp/123", None),
            ("base/123", None),
            ("base/x/123", None),
            ("base//123", None),
            ("base/1/2/123", None),
            ("base/4294967296/123", None),
            ("/base/1/123", None),
            ("./base/1/123", None),
            ("x/base/1/123", None),
            ("base/1/123/", None),
            ("global/pg_control", None),
            ("global/pg_filenode.map", None),
            ("global/1/123", None),
            ("pg_wal/archive_status", None),
            ("pg_wal/000000010000000000000001", None),
            ("pg_xact/0000", None),
            ("pg_tblspc/16390/16391", None),
            ("pg_tblspc/16390/PG_16_202307071/16391", None),
            ("pg_tblspc/16390/PG_16/5/16391", None),
            ("pg_tblspc/16390/pg_16_202307071/5/16391", None),
            ("pg_tblspc/x/PG_16_202307071/5/16391", None),
            ("pg_tblspc/16390/PG_16_202307071/5/t3_16391", None),
            ("", None),
        ];
        for &(path, expected) in cases {
            let parsed = RelationFilePath::parse(path);
            assert_eq!(
                parsed,
                expected.map(|(tablespace, database, file)| RelationFilePath {
                    tablespace,
                    database,
                    file
                }),
                "{path:?}"
            );
            assert_eq!(is_paged_relation_file(path), expected.is_some(), "{path:?}");
        }
    }

    #[test]
    fn relation_dirs() {
        for dir in [
            "global",
            "base/1",
            "base/16384",
            "pg_tblspc/16390/PG_15_202209061/5",
        ] {
            assert!(is_relation_dir(dir), "{dir}");
        }
        for dir in [
            "",
            "base",
            "base/x",
            "base/1/2",
            "base/pgsql_tmp",
            "global/1",
            "pg_tblspc/16390",
            "pg_tblspc/16390/PG_15_202209061",
            "pg_tblspc/16390/other/5",
            "pg_wal",
            "x/global",
        ] {
            assert!(!is_relation_dir(dir), "{dir}");
        }
        assert_eq!(tablespace_version_directory(16, 202307071), "PG_16_202307071");
        for name in ["PG_13_202007201", "PG_18_202506291", "PG_1_1"] {
            assert!(is_tablespace_version_directory(name), "{name}");
        }
        for name in [
            "PG_",
            "PG_16",
            "PG_16_",
            "PG__1",
            "PG_016_1",
            "pg_16_1",
            "PG_16_1_2",
            "PG_16_x",
        ] {
            assert!(!is_tablespace_version_directory(name), "{name}");
        }
    }

    #[test]
    fn classification() {
        use ExcludeReason::*;
        let none = HashSet::new();
        // (path, is_dir, why it is not included; None: included)
        let cases: &[(&str, bool, Option<ExcludeReason>)] = &[
            ("", true, None),
            ("PG_VERSION", false, None),
            ("postgresql.conf", false, None),
            ("postgresql.auto.conf", false, None),
            ("postgresql.auto.conf.tmp", false, Some(ExcludedFile)),
            ("current_logfiles", false, None),
            ("current_logfiles.tmp", false, Some(ExcludedFile)),
            ("postmaster.pid", false, Some(ExcludedFile)),
            ("postmaster.opts", false, Some(ExcludedFile)),
            ("postmaster.pid.old", false, None),
            ("backup_label", false, Some(ExcludedFile)),
            ("backup_label.old", false, None),
            ("tablespace_map", false, Some(ExcludedFile)),
            ("tablespace_map.old", false, None),
            ("backup_manifest", false, Some(ExcludedFile)),
            ("standby.signal", false, None),
            ("global/pg_control", false, None),
            ("global/pg_filenode.map", false, None),
            ("global/pg_internal.init", false, Some(ExcludedFile)),
            ("global/pg_internal.init.12345", false, Some(ExcludedFile)),
            ("base/5/pg_internal.init", false, Some(ExcludedFile)),
            // excludeFiles are matched by name at any depth.
            ("base/5/postmaster.pid", false, Some(ExcludedFile)),
            ("global/1262", false, None),
            ("base", true, None),
            ("base/1", true, None),
            ("base/1/123", false, None),
            ("base/1/123abc", false, None),
            ("base/1/123.", false, None),
            ("base/1/123_init", false, None),
            ("base/1/123_vm", false, None),
            ("base/1/t3_45", false, Some(TemporaryRelation)),
            ("base/1/t3_45_fsm.2", false, Some(TemporaryRelation)),
            (
                "pg_tblspc/16390/PG_15_202209061/5/t3_45",
                false,
                Some(TemporaryRelation),
            ),
            // Temporary relations live only in database directories.
            ("global/t3_45", false, None),
            ("t3_45", false, None),
            ("base/t3_45", false, None),
            ("base/pgsql_tmp", true, Some(TempFile)),
            ("base/pgsql_tmp/x", false, Some(InExcludedDirectory)),
            ("base/pgsql_tmp/pgsql_tmp123.4", false, Some(InExcludedDirectory)),
            ("pgsql_tmp", true, Some(TempFile)),
            ("pg_tblspc/16390/PG_15_202209061/pgsql_tmp", true, Some(TempFile)),
            ("base/1/pgsql_tmp_anything", false, Some(TempFile)),
            ("base/1/.DS_Store", false, Some(SystemFile)),
            ("pg_wal", true, Some(WalDirectory)),
            ("pg_wal/archive_status", true, Some(InExcludedDirectory)),
            (
                "pg_wal/000000010000000000000001",
                false,
                Some(InExcludedDirectory),
            ),
            ("pg_wal/summaries", true, Some(InExcludedDirectory)),
            // pg_wal is matched at the top only.
            ("base/pg_wal", true, None),
            ("pg_wal", false, None),
            ("pg_stat_tmp", true, Some(DirectoryContents)),
            ("pg_stat_tmp/global.stat", false, Some(InExcludedDirectory)),
            ("pg_stat", true, None),
            ("pg_stat/pgstat.stat", false, None),
            ("pg_replslot", true, Some(DirectoryContents)),
            ("pg_replslot/slot1/state", false, Some(InExcludedDirectory)),
            ("pg_dynshmem", true, Some(DirectoryContents)),
            ("pg_notify", true, Some(DirectoryContents)),
            ("pg_notify/0000", false, Some(InExcludedDirectory)),
            ("pg_serial", true, Some(DirectoryContents)),
            ("pg_snapshots", true, Some(DirectoryContents)),
            ("pg_subtrans", true, Some(DirectoryContents)),
            ("pg_subtrans/0000", false, Some(InExcludedDirectory)),
            // excludeDirContents is matched by name at any depth, for directories.
            ("base/1/pg_notify", true, Some(DirectoryContents)),
            ("pg_notify", false, None),
            ("pg_xact", true, None),
            ("pg_xact/0000", false, None),
            ("pg_multixact/offsets/0000", false, None),
            ("pg_logical/snapshots", true, None),
            ("pg_logical/mappings/100", false, None),
            ("pg_tblspc", true, None),
            ("pg_tblspc/16390", true, None),
            ("pg_tblspc/16390/PG_15_202209061", true, None),
            ("pg_tblspc/16390/PG_14_202107181", true, None),
            ("pg_tblspc/16390/PG_15_202209061/5/16391", false, None),
            ("log/postgresql.log", false, None),
            ("weird\"name", false, None),
            ("base//1/123", false, None),
        ];
        for &(path, is_dir, reason) in cases {
            let filter = BackupFilter::new();
            assert_eq!(
                filter.exclude_reason(path, is_dir, &none),
                reason,
                "{path:?} dir={is_dir}"
            );
            let class = reason.map_or(PathClass::Include, ExcludeReason::class);
            assert_eq!(classify(path, is_dir, &none), class, "{path:?} dir={is_dir}");
        }
        assert_eq!(DirectoryContents.class(), PathClass::ExcludeContents);
        assert_eq!(WalDirectory.class(), PathClass::ExcludeContents);
        assert_eq!(TempFile.class(), PathClass::Exclude);
    }

    #[test]
    fn version_specific_rules() {
        use ExcludeReason::*;
        let none = HashSet::new();
        let filter = BackupFilter::new()
            .with_stats_temp_directory("./stats_tmp/")
            .with_tablespace_version_directory(&tablespace_version_directory(14, 202107181));
        let cases: &[(&str, bool, Option<ExcludeReason>)] = &[
            ("stats_tmp", true, Some(DirectoryContents)),
            ("stats_tmp/global.stat", false, Some(InExcludedDirectory)),
            ("pg_stat_tmp", true, Some(DirectoryContents)),
            ("base/stats_tmp", true, None),
            ("pg_tblspc/16390/PG_14_202107181", true, None),
            ("pg_tblspc/16390/PG_14_202107181/5/16391", false, None),
            (
                "pg_tblspc/16390/PG_13_202007201",
                true,
                Some(OtherTablespaceVersion),
            ),
            (
                "pg_tblspc/16390/PG_13_202007201/5/16391",
                false,
                Some(InExcludedDirectory),
            ),
            ("pg_tblspc/16390/stray", false, Some(OtherTablespaceVersion)),
            ("pg_tblspc/16390", true, None),
        ];
        for &(path, is_dir, reason) in cases {
            assert_eq!(filter.exclude_reason(path, is_dir, &none), reason, "{path:?}");
        }
        assert_eq!(wal_subdirectories(13), ["pg_wal/archive_status"]);
        assert_eq!(wal_subdirectories(16), ["pg_wal/archive_status"]);
        assert_eq!(
            wal_subdirectories(17),
            ["pg_wal/archive_status", "pg_wal/summaries"]
        );
        assert_eq!(
            wal_subdirectories(18),
            ["pg_wal/archive_status", "pg_wal/summaries"]
        );
    }

    #[test]
    fn unlogged_relations_keep_only_their_init_fork() {
        use PathClass::*;
        let names = [
            "123",
            "123_fsm",
            "123_vm",
            "123_init",
            "123.1",
            "456",
            "456_fsm",
            "789_init.1",
            "789",
            "0123_init",
            "t3_45_init",
            "t3_45",
            "PG_VERSION",
            "pg_internal.init",
        ];
        let unlogged = unlogged_relations(&names);
        assert_eq!(unlogged, HashSet::from([123]));
        let entries: Vec<(&str, bool)> = names.iter().map(|&n| (n, false)).collect();
        let got = BackupFilter::new().classify_dir("base/5", &entries);
        let want = [
            Exclude, Exclude, Exclude, Include, Exclude, Include, Include,
            Include, // 789_init.1 alone does not make 789 unlogged
            Include, Include, Exclude, Exclude, Include, Exclude,
        ];
        for ((name, got), want) in names.iter().zip(&got).zip(want) {
            assert_eq!(*got, want, "{name}");
        }
        assert_eq!(
            BackupFilter::new().exclude_reason("base/5/123_vm", false, &unlogged),
            Some(ExcludeReason::UnloggedRelation)
        );
        // The same names outside a database directory: no relation rules.
        let got = BackupFilter::new().classify_dir("pg_xact", &entries);
        assert!(got[..10].iter().all(|&e| e == Include), "{got:?}");
        assert_eq!(classify("pg_xact/123", false, &unlogged), Include);
        assert_eq!(classify("global/123", false, &unlogged), Exclude);
        // A tablespace's database directory follows the same rules; the trailing slash
        // is ignored.
        let got = BackupFilter::new().classify_dir("pg_tblspc/16390/PG_16_202307071/5/", &entries);
        assert_eq!(got[0], Exclude);
        assert_eq!(got[3], Include);
        // The top directory.
        let got = BackupFilter::new()
            .classify_dir("", &[("pg_wal", true), ("postmaster.pid", false), ("base", true)]);
        assert_eq!(got, [ExcludeContents, Exclude, Include]);
    }

    #[test]
    fn fork_numbers() {
        let names: Vec<&str> = ForkNumber::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["main", "fsm", "vm", "init"]);
        let numbers: Vec<u8> = ForkNumber::ALL.iter().map(|f| f.number()).collect();
        assert_eq!(numbers, [0, 1, 2, 3]);
    }
}
