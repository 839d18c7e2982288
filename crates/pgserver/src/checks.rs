//! The checks a restore test runs on the recovered server.
//!
//! Each check reports passed, failed (with what failed) or skipped (with
//! why); none stops the others. They run as the cluster's superuser over
//! the private socket. Programs run with the caller's `PG*` variables
//! removed, so nothing points them at another server.

use crate::{Server, ServerError};
use std::path::Path;
use std::process::Stdio;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Passed,
    Failed,
    Skipped,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    /// What failed or why it was skipped (empty when passed).
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, status: CheckStatus, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
        }
    }
}

/// A statement of a `--check-sql` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlCheck {
    /// The line it starts on (1-based).
    pub line: usize,
    pub sql: String,
}

impl SqlCheck {
    /// `check-sql line N: <the statement, shortened>`.
    pub fn name(&self) -> String {
        let one_line = self.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = one_line.chars().take(80).collect();
        let more = if short.len() < one_line.len() { "..." } else { "" };
        format!("check-sql line {}: {short}{more}", self.line)
    }
}

/// Splits a check file into statements: each ends with `;` at the end of
/// a line; lines starting with `--` and blank lines between statements are
/// ignored; a last statement without `;` counts too.
pub fn parse_check_sql(text: &str) -> Vec<SqlCheck> {
    let mut checks = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with("--")) {
            continue;
        }
        if current.is_empty() {
            start = i + 1;
        } else {
            current.push('\n');
        }
        current.push_str(line);
        if trimmed.ends_with(';') {
            let sql = current.trim().trim_end_matches(';').trim().to_string();
            if !sql.is_empty() {
                checks.push(SqlCheck { line: start, sql });
            }
            current.clear();
        }
    }
    let sql = current.trim().to_string();
    if !sql.is_empty() {
        checks.push(SqlCheck { line: start, sql });
    }
    checks
}

/// A check statement's rows pass when there is at least one, its first
/// column is boolean, and it is true in every row.
fn judge(rows: &[tokio_postgres::Row]) -> Result<(), String> {
    let Some(first) = rows.first() else {
        return Err("returned no row".into());
    };
    let column = first.columns().first().ok_or("returned no column")?;
    if *column.type_() != tokio_postgres::types::Type::BOOL {
        return Err(format!(
            "its first column ({}) is of type {}, not boolean",
            column.name(),
            column.type_()
        ));
    }
    for (i, row) in rows.iter().enumerate() {
        match row.get::<_, Option<bool>>(0) {
            Some(true) => {}
            Some(false) => return Err(format!("returned false (row {} of {})", i + 1, rows.len())),
            None => return Err(format!("returned null (row {} of {})", i + 1, rows.len())),
        }
    }
    Ok(())
}

fn first_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = lines[..lines.len().min(n)].join("\n");
    if lines.len() > n {
        out += &format!("\n... ({} more lines)", lines.len() - n);
    }
    out
}

impl Server {
    /// Every database that allows connections accepts one and answers.
    pub async fn check_connections(&mut self) -> Result<Vec<Check>, ServerError> {
        let client = self.connect_maintenance().await?;
        let rows = client
            .query(
                "select datname::text from pg_database where datallowconn order by 1",
                &[],
            )
            .await
            .map_err(|e| ServerError::Postgres {
                what: format!("could not list its databases: {e}"),
                log: self.spec().log.clone(),
                tail: self.log_tail(5),
            })?;
        let mut checks = Vec::new();
        for row in rows {
            let db: String = row.get(0);
            let name = format!("connect {db}");
            let outcome = match self.connect(&db).await {
                Ok(c) => c
                    .simple_query("select 1")
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            checks.push(match outcome {
                Ok(()) => Check::new(name, CheckStatus::Passed, ""),
                Err(e) => Check::new(name, CheckStatus::Failed, e),
            });
        }
        Ok(checks)
    }

    /// Runs each statement in `dbname`; each must return a row whose first
    /// column is true.
    pub async fn check_sql(&mut self, dbname: &str, statements: &[SqlCheck]) -> Vec<Check> {
        let client = match self.connect(dbname).await {
            Ok(c) => c,
            Err(e) => {
                return statements
                    .iter()
                    .map(|s| {
                        Check::new(
                            s.name(),
                            CheckStatus::Failed,
                            format!("cannot connect to {dbname}: {e}"),
                        )
                    })
                    .collect()
            }
        };
        let mut checks = Vec::new();
        for statement in statements {
            let outcome = match client.query(statement.sql.as_str(), &[]).await {
                Err(e) => Err(format!(
                    "failed: {}",
                    e.as_db_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or(e.to_string())
                )),
                Ok(rows) => judge(&rows),
            };
            checks.push(match outcome {
                Ok(()) => Check::new(statement.name(), CheckStatus::Passed, ""),
                Err(e) => Check::new(statement.name(), CheckStatus::Failed, e),
            });
        }
        checks
    }

    /// `pg_amcheck --all --heapallindexed` (installing the amcheck
    /// extension where missing: the cluster is thrown away), when the
    /// server is 14 or later and a pg_amcheck and the extension exist.
    pub async fn check_amcheck(&mut self, jobs: usize) -> Check {
        const NAME: &str = "pg_amcheck";
        let major = self.spec().bins.major;
        if major < 14 {
            return Check::new(
                NAME,
                CheckStatus::Skipped,
                format!("PostgreSQL {major} has no pg_amcheck"),
            );
        }
        let Some(program) = self.spec().bins.pg_amcheck.clone() else {
            return Check::new(
                NAME,
                CheckStatus::Skipped,
                "no pg_amcheck (PostgreSQL 14 or later) found on this host",
            );
        };
        let available = match self.connect_maintenance().await {
            Ok(c) => c
                .query_opt(
                    "select 1 from pg_available_extensions where name = 'amcheck'",
                    &[],
                )
                .await
                .map(|r| r.is_some()),
            Err(e) => return Check::new(NAME, CheckStatus::Failed, e.to_string()),
        };
        match available {
            Ok(true) => {}
            Ok(false) => {
                return Check::new(
                    NAME,
                    CheckStatus::Skipped,
                    format!("the amcheck extension is not installed for PostgreSQL {major} on this host"),
                )
            }
            Err(e) => return Check::new(NAME, CheckStatus::Failed, e.to_string()),
        }
        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg("--host")
            .arg(&self.spec().socket_dir)
            .arg("--port")
            .arg(self.spec().port.to_string())
            .arg("--username")
            .arg(self.user())
            .args(["--no-password", "--all", "--heapallindexed", "--install-missing"])
            .arg(format!("--jobs={}", jobs.max(1)));
        run_program(NAME, cmd).await
    }

    /// `pg_checksums --check` on the stopped cluster, as the server's
    /// account; skipped when the cluster has no data checksums or no
    /// pg_checksums of its major exists.
    pub async fn check_checksums(&self, data_checksums: bool) -> Check {
        const NAME: &str = "pg_checksums";
        if !data_checksums {
            return Check::new(NAME, CheckStatus::Skipped, "the cluster has no data checksums");
        }
        let Some(program) = self.spec().bins.pg_checksums.clone() else {
            return Check::new(
                NAME,
                CheckStatus::Skipped,
                format!("no pg_checksums of PostgreSQL {} found", self.spec().bins.major),
            );
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg("--check").arg("--pgdata").arg(&self.spec().data);
        if crate::account::is_root() {
            cmd.uid(self.spec().account.uid).gid(self.spec().account.gid);
        }
        run_program(NAME, cmd).await
    }
}

/// Runs a check program; passed on exit 0, else failed with the start of
/// its output.
async fn run_program(name: &str, mut cmd: tokio::process::Command) -> Check {
    for (var, _) in std::env::vars_os() {
        let v = var.to_string_lossy();
        if v.starts_with("PG") && !v.starts_with("PGARK_") {
            cmd.env_remove(&var);
        }
    }
    cmd.env("LC_MESSAGES", "C")
        .env("PGOPTIONS", crate::server::SESSION_OPTIONS)
        .current_dir(Path::new("/"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let program = format!("{:?}", cmd.as_std().get_program());
    match cmd.output().await {
        Err(e) => Check::new(name, CheckStatus::Failed, format!("cannot run {program}: {e}")),
        Ok(out) if out.status.success() => Check::new(name, CheckStatus::Passed, ""),
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Check::new(
                name,
                CheckStatus::Failed,
                format!(
                    "{} exited with {}: {}",
                    program,
                    out.status,
                    first_lines(&text, 20)
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_files_split_on_semicolons_at_line_ends() {
        let text = "-- the orders are there\nselect count(*) > 0\n  from orders;\n\nselect 'a;b' = 'a;b';\n-- last\nselect true";
        let checks = parse_check_sql(text);
        assert_eq!(checks.len(), 3);
        assert_eq!(
            checks[0],
            SqlCheck {
                line: 2,
                sql: "select count(*) > 0\n  from orders".into()
            }
        );
        assert_eq!(checks[1].line, 5);
        assert_eq!(checks[1].sql, "select 'a;b' = 'a;b'");
        assert_eq!(
            checks[2],
            SqlCheck {
                line: 7,
                sql: "select true".into()
            }
        );
        assert_eq!(
            checks[0].name(),
            "check-sql line 2: select count(*) > 0 from orders"
        );
        assert!(parse_check_sql("-- nothing\n\n").is_empty());
    }
}
