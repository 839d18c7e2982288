//! What a physical backup copies from a data directory, by path relative to
//! it: the rules of pg_basebackup (backend/backup/basebackup.c:
//! excludeDirContents, excludeFiles, temporary and unlogged relations).
//! Pure functions over names; the caller walks the filesystem.

use std::collections::HashSet;

/// What to do with one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathClass {
    /// Copy it (a file), or copy it and descend (a directory).
    Include,
    /// Keep the directory, empty (mirrors excludeDirContents).
    ExcludeContents,
    /// Leave it out entirely.
    Exclude,
}

/// Directories whose contents are not copied (basebackup.c
/// excludeDirContents, plus pg_wal which the archive provides).
const EXCLUDE_DIR_CONTENTS: &[&str] = &[
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_replslot",
];

/// Files never copied, at the top level (basebackup.c excludeFiles).
const EXCLUDE_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label.old",
    "tablespace_map.old",
    "backup_label",
    "tablespace_map",
];

/// Relation forks (common/relpath.h ForkNumber).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForkNumber {
    /// MAIN_FORKNUM: the relation's data.
    Main,
    /// FSM_FORKNUM (`_fsm`).
    FreeSpaceMap,
    /// VISIBILITYMAP_FORKNUM (`_vm`).
    VisibilityMap,
    /// INIT_FORKNUM (`_init`): the empty image of an unlogged relation.
    Init,
}

/// A relation file name: `<relfilenode>[_fsm|_vm|_init][.<segno>]`
/// (mirrors parse_filename_for_nontemp_relation in common/relpath.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelFileName {
    /// RelFileNumber.
    pub relfilenode: u32,
    /// Which fork the file belongs to.
    pub fork: ForkNumber,
    /// Segment number (`.N` suffix; 0 when absent).
    pub segno: u32,
}

impl RelFileName {
    /// Parses a file name; `None` for anything that is not exactly a
    /// relation file name.
    pub fn parse(name: &str) -> Option<RelFileName> {
        let (stem, segno) = match name.split_once('.') {
            Some((stem, seg)) => (stem, parse_digits(seg)?),
            None => (name, 0),
        };
        let (node, fork) = match stem.split_once('_') {
            Some((node, "fsm")) => (node, ForkNumber::FreeSpaceMap),
            Some((node, "vm")) => (node, ForkNumber::VisibilityMap),
            Some((node, "init")) => (node, ForkNumber::Init),
            Some(_) => return None,
            None => (stem, ForkNumber::Main),
        };
        Some(RelFileName {
            relfilenode: parse_digits(node)?,
            fork,
            segno,
        })
    }
}

fn parse_digits(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A temporary relation file: `t<backend>_<relfilenode>[_fork][.seg]`
/// (looks_like_temp_rel_name in storage/file/fd.c).
pub fn is_temp_relation(name: &str) -> bool {
    name.strip_prefix('t')
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(backend, rel)| parse_digits(backend).is_some() && RelFileName::parse(rel).is_some())
}

/// The relfilenodes in one directory that have an init fork: unlogged
/// relations, of which only the init fork is copied.
pub fn unlogged_relations(names: &[&str]) -> HashSet<u32> {
    names
        .iter()
        .filter_map(|n| RelFileName::parse(n))
        .filter(|r| r.fork == ForkNumber::Init)
        .map(|r| r.relfilenode)
        .collect()
}

/// True for a directory that holds relation files: `base/<db>`, `global`,
/// `pg_tblspc/<oid>/<version dir>/<db>`.
fn is_relation_dir(parts: &[&str]) -> bool {
    matches!(parts, ["global"])
        || matches!(parts, ["base", db] if parse_digits(db).is_some())
        || matches!(parts, ["pg_tblspc", oid, _, db] if parse_digits(oid).is_some() && parse_digits(db).is_some())
}

/// Classifies `rel_path` (relative to the data directory, `/`-separated;
/// tablespace contents as `pg_tblspc/<oid>/...`). `unlogged` holds the
/// unlogged relfilenodes of the path's directory (see
/// [`unlogged_relations`]).
pub fn classify(rel_path: &str, is_dir: bool, unlogged: &HashSet<u32>) -> PathClass {
    let parts: Vec<&str> = rel_path.split('/').collect();
    let (name, dir) = parts
        .split_last()
        .map(|(n, d)| (*n, d))
        .unwrap_or((rel_path, &[]));
    if name.starts_with("pgsql_tmp") {
        return PathClass::Exclude;
    }
    if is_dir {
        if dir.is_empty() && EXCLUDE_DIR_CONTENTS.contains(&name) {
            return PathClass::ExcludeContents;
        }
        return PathClass::Include;
    }
    if name == "pg_internal.init" {
        return PathClass::Exclude;
    }
    if dir.is_empty() && EXCLUDE_FILES.contains(&name) {
        return PathClass::Exclude;
    }
    if is_relation_dir(dir) {
        if is_temp_relation(name) {
            return PathClass::Exclude;
        }
        if let Some(rel) = RelFileName::parse(name) {
            if rel.fork != ForkNumber::Init && unlogged.contains(&rel.relfilenode) {
                return PathClass::Exclude;
            }
        }
    }
    PathClass::Include
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_file_names() {
        let ok = [
            ("16384", 16384, ForkNumber::Main, 0),
            ("16384.2", 16384, ForkNumber::Main, 2),
            ("16384_fsm", 16384, ForkNumber::FreeSpaceMap, 0),
            ("16384_vm.1", 16384, ForkNumber::VisibilityMap, 1),
            ("16384_init", 16384, ForkNumber::Init, 0),
        ];
        for (name, node, fork, seg) in ok {
            assert_eq!(
                RelFileName::parse(name),
                Some(RelFileName {
                    relfilenode: node,
                    fork,
                    segno: seg
                }),
                "{name}"
            );
        }
        for bad in [
            "",
            "123abc",
            "123.",
            ".1",
            "123_xyz",
            "t3_45",
            "PG_VERSION",
            "99999999999",
            "123_fsm_vm",
        ] {
            assert_eq!(RelFileName::parse(bad), None, "{bad}");
        }
        assert!(is_temp_relation("t3_45") && is_temp_relation("t12_345_fsm.1"));
        assert!(!is_temp_relation("t3") && !is_temp_relation("t_45") && !is_temp_relation("16384"));
    }

    #[test]
    fn basebackup_rules() {
        let unlogged: HashSet<u32> = unlogged_relations(&["100", "100_init", "100_fsm", "200"]);
        assert_eq!(unlogged, HashSet::from([100]));
        let cases = [
            ("pg_wal", true, PathClass::ExcludeContents),
            ("pg_stat_tmp", true, PathClass::ExcludeContents),
            ("pg_replslot", true, PathClass::ExcludeContents),
            ("base/1/pg_wal", true, PathClass::Include),
            ("postmaster.pid", false, PathClass::Exclude),
            ("base/postmaster.pid", false, PathClass::Include),
            ("backup_label.old", false, PathClass::Exclude),
            ("global/pg_internal.init", false, PathClass::Exclude),
            ("base/pgsql_tmp", true, PathClass::Exclude),
            ("pg_tblspc/16400/PG_15_1/pgsql_tmp", true, PathClass::Exclude),
            ("base/1/t3_45", false, PathClass::Exclude),
            ("base/1/100", false, PathClass::Exclude),
            ("base/1/100_fsm", false, PathClass::Exclude),
            ("base/1/100_init", false, PathClass::Include),
            ("base/1/200", false, PathClass::Include),
            ("pg_tblspc/16400/PG_15_1/5/100", false, PathClass::Exclude),
            ("pg_tblspc/16400/PG_15_1/5/200", false, PathClass::Include),
            ("global/pg_control", false, PathClass::Include),
            ("PG_VERSION", false, PathClass::Include),
            ("pg_xact/0000", false, PathClass::Include),
            ("pg_logical/mappings/100", false, PathClass::Include),
        ];
        for (path, is_dir, want) in cases {
            assert_eq!(classify(path, is_dir, &unlogged), want, "{path}");
        }
    }
}
