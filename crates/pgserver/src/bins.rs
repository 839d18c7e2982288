//! Finding the PostgreSQL programs of one major version.
//!
//! `postgres` must be of the backup's major version: a data directory only
//! starts under its own major. `pg_checksums` reads the on-disk format, so
//! it too must be of that major. `pg_amcheck` is a client: any of major 14
//! or later can check a server of 14 or later (it needs the server's
//! amcheck 1.3), so one of another installation is used when the server's
//! own is missing. Every candidate's `--version` is read; nothing is
//! trusted by its path alone.

use crate::ServerError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The programs a restore test runs.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    /// The directory `postgres` was found in.
    pub bin_dir: PathBuf,
    pub postgres: PathBuf,
    /// `postgres --version`'s version (`15.18`).
    pub version: String,
    pub major: u32,
    /// `pg_amcheck` of major 14 or later, when the server is 14 or later.
    pub pg_amcheck: Option<PathBuf>,
    /// `pg_checksums` of the same major.
    pub pg_checksums: Option<PathBuf>,
}

/// The major version and the version a program reports (`postgres
/// (PostgreSQL) 15.18 (Debian ...)` gives 15 and `15.18`).
pub fn program_version(program: &Path) -> Option<(u32, String)> {
    let out = Command::new(program).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_version(text: &str) -> Option<(u32, String)> {
    let rest = text.split("(PostgreSQL) ").nth(1)?;
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let major = version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, version))
}

/// Directories searched for `major`'s programs, in order: the usual
/// package locations (Debian and Ubuntu, Red Hat, Alpine, source builds),
/// then `PATH`.
pub fn search_dirs(major: u32) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = [
        format!("/usr/lib/postgresql/{major}/bin"),
        format!("/usr/pgsql-{major}/bin"),
        format!("/usr/libexec/postgresql{major}"),
        format!("/usr/local/pgsql-{major}/bin"),
        "/usr/local/pgsql/bin".to_string(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

/// Every other installation's bin directory on the host (for a client
/// program such as `pg_amcheck`).
fn other_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut found: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        found.sort();
        found.reverse();
        dirs.extend(found);
    }
    dirs
}

fn find_program(dirs: &[PathBuf], name: &str, accept: impl Fn(u32) -> bool) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .find(|p| program_version(p).is_some_and(|(major, _)| accept(major)))
}

/// The programs of `major`: from `pg_bin` when given (its `postgres` must
/// be of that major), else from [`search_dirs`].
pub fn find(major: u32, pg_bin: Option<&Path>) -> Result<PgBinaries, ServerError> {
    let (bin_dir, dirs) = match pg_bin {
        Some(dir) => {
            let postgres = dir.join("postgres");
            match program_version(&postgres) {
                Some((m, _)) if m == major => {}
                Some((m, v)) => {
                    return Err(ServerError::BadBinDir {
                        dir: dir.to_path_buf(),
                        reason: format!(
                            "its postgres is PostgreSQL {v} (major {m}); the backup is of PostgreSQL {major}"
                        ),
                    })
                }
                None => {
                    return Err(ServerError::BadBinDir {
                        dir: dir.to_path_buf(),
                        reason: format!("{} is missing or does not run", postgres.display()),
                    })
                }
            }
            let mut dirs = vec![dir.to_path_buf()];
            dirs.extend(search_dirs(major));
            (dir.to_path_buf(), dirs)
        }
        None => {
            let dirs = search_dirs(major);
            let postgres =
                find_program(&dirs, "postgres", |m| m == major).ok_or_else(|| ServerError::NoBinaries {
                    major,
                    searched: dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let dir = postgres.parent().unwrap_or(Path::new("/")).to_path_buf();
            (dir, dirs)
        }
    };
    let postgres = bin_dir.join("postgres");
    let (_, version) = program_version(&postgres).unwrap_or((major, major.to_string()));
    // The server's own directory first, then the others.
    let mut ordered = vec![bin_dir.clone()];
    ordered.extend(dirs.into_iter().filter(|d| *d != bin_dir));
    let pg_checksums = find_program(&ordered, "pg_checksums", |m| m == major);
    let pg_amcheck = if major >= 14 {
        let mut all = ordered.clone();
        all.extend(other_dirs());
        // Prefer the same major, else the newest found.
        find_program(&all, "pg_amcheck", |m| m == major)
            .or_else(|| find_program(&all, "pg_amcheck", |m| m >= 14))
    } else {
        None
    };
    Ok(PgBinaries {
        bin_dir,
        postgres,
        version,
        major,
        pg_amcheck,
        pg_checksums,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_programs_output() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some((15, "15.18".into()))
        );
        assert_eq!(
            parse_version("pg_amcheck (PostgreSQL) 17.10\n"),
            Some((17, "17.10".into()))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 18beta1\n"),
            Some((18, "18beta1".into()))
        );
        assert_eq!(parse_version("something else 1.2"), None);
    }

    #[test]
    fn a_bin_dir_of_another_major_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = find(15, Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("postgres is missing"), "{err}");
        assert_eq!(err.kind(), crate::ServerErrorKind::Setup);
        let err = find(99, None).unwrap_err();
        assert!(
            err.to_string().contains("no PostgreSQL 99 server programs"),
            "{err}"
        );
    }
}
