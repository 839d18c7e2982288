//! The help's reference: repositories, environment variables and exit
//! codes, built from the definitions the code uses (the repository kinds
//! `--repo` dispatches on, the `env` of every option, the exit-code enum),
//! shown by `--help` and in the man pages; and the `completions` and `man`
//! commands, generated from the same clap command the binary parses with.

use crate::exit::{Exit, FATAL_OFFSET};
use clap::{Args, CommandFactory, FromArgMatches};
use clap_mangen::roff::{bold, roman, Roff};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Shown after `-h`; `--help` shows the whole reference instead.
const SHORT: &str = "\
Every option is also an environment variable PGARK_<NAME> and a key <name> in the --config file \
(flag > environment > file). Repositories, environment variables and exit codes: --help, or \
man pgark.";

/// Write completions for a shell to stdout.
///
/// Install: pgark completions bash > /etc/bash_completion.d/pgark; zsh: into a directory of
/// $fpath as _pgark; fish: > ~/.config/fish/completions/pgark.fish. Exit 7 when stdout cannot be
/// written.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::aot::Shell,
}

/// Write the man pages: pgark.1 and one per subcommand (pgark-backup-push.1, ...).
///
/// Install: pgark man --dir /usr/local/share/man/man1. Each page is written whole (a temporary
/// file renamed into place). Exit 7 when the directory does not exist or a page cannot be
/// written.
#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Directory to write the pages into; it must exist [default: the current directory].
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// A local file could not be written (exit 7).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WriteError(pub String);

/// The command line, its help completed with the reference sections.
pub fn command() -> clap::Command {
    let cmd = super::Cli::command();
    let reference = text(&reference(&cmd));
    let repo_help = format!(
        "Repository: {}",
        crate::repo::KINDS
            .iter()
            .map(|k| k.form)
            .collect::<Vec<_>>()
            .join(", ")
    );
    decorate(cmd.mut_arg("repo", |a| a.help(repo_help)), &reference)
}

fn decorate(cmd: clap::Command, reference: &str) -> clap::Command {
    cmd.after_help(SHORT)
        .after_long_help(reference.to_owned())
        .mut_subcommands(|sub| decorate(sub, reference))
}

/// Parses the process's arguments with [`command`].
pub fn parse() -> Result<super::Cli, clap::Error> {
    let mut cmd = command();
    let matches = cmd.try_get_matches_from_mut(std::env::args_os())?;
    super::Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

/// One part of the reference: a heading, words, then terms and their
/// meaning.
pub struct Block {
    /// 1: a section (`.SH` in a man page), 2: within one (`.SS`).
    pub level: u8,
    pub heading: String,
    pub intro: Option<String>,
    pub entries: Vec<(String, String)>,
}

impl Block {
    fn new(level: u8, heading: &str, intro: Option<&str>, entries: Vec<(String, String)>) -> Block {
        Block {
            level,
            heading: heading.to_owned(),
            intro: intro.map(str::to_owned),
            entries,
        }
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The reference of `cmd` (the whole command line, before it is built).
pub fn reference(cmd: &clap::Command) -> Vec<Block> {
    use crate::encryption::{KEY_ENV, NEW_KEY_ENV, NEW_PASSPHRASE_ENV, PASSPHRASE_ENV};
    let kinds = crate::repo::KINDS
        .iter()
        .map(|k| (k.form.to_owned(), k.what.to_owned()))
        .collect();
    let mut blocks = vec![
        Block::new(
            1,
            "Repositories (--repo)",
            Some(
                "A repository is a local directory or a prefix in an object store. A pgark built \
                 without a store's cargo feature refuses its URLs (exit 2).",
            ),
            kinds,
        ),
        Block::new(
            1,
            "Environment",
            Some(
                "Every option is also an environment variable PGARK_<NAME> and a key <name> in the \
                 TOML file given by --config (compression_level = 9); a flag beats the environment, \
                 which beats the file.",
            ),
            Vec::new(),
        ),
        Block::new(2, "Options", None, option_variables(cmd)),
        Block::new(
            2,
            "Without a flag",
            None,
            vec![
                (
                    KEY_ENV.into(),
                    "the encryption key as text: 64 hex digits or base64 of 32 bytes (no flag, so \
                     that it never shows in process titles)"
                        .into(),
                ),
                (PASSPHRASE_ENV.into(), "the encryption passphrase as text (Argon2id)".into()),
                (NEW_KEY_ENV.into(), "key rotate: the new key as text".into()),
                (NEW_PASSPHRASE_ENV.into(), "key rotate: the new passphrase as text".into()),
                (
                    "PGDATA".into(),
                    "backup-push: the data directory, when neither the argument, --pgdata nor \
                     PGARK_PGDATA gives it"
                        .into(),
                ),
            ],
        ),
        Block::new(
            2,
            "PostgreSQL connection (backup-push, status, exporter)",
            Some(
                "Read as libpq reads them, for what --pg-conn leaves out. status and exporter ask a \
                 server only with --pg-conn, PGHOST, PGPORT or PGSERVICE set.",
            ),
            pairs(&[
                ("PGHOST, PGHOSTADDR, PGPORT", "the server [default: the socket directories /var/run/postgresql and /tmp, then localhost; port 5432]"),
                ("PGUSER", "the user [default: USER, else LOGNAME, else postgres]"),
                ("PGPASSWORD", "the password"),
                ("PGDATABASE", "the database [default: the user's name]"),
                ("PGAPPNAME", "application_name [default: pgark]"),
                ("PGCONNECT_TIMEOUT", "seconds to connect [default: 30]"),
                ("PGCHANNELBINDING, PGTARGETSESSIONATTRS, PGLOADBALANCEHOSTS", "channel_binding, target_session_attrs, load_balance_hosts"),
                ("PGSSLMODE, PGSSLNEGOTIATION", "sslmode [default: prefer; verify-full with PGSSLROOTCERT=system], sslnegotiation"),
                ("PGSSLROOTCERT, PGSSLCERT, PGSSLKEY", "sslrootcert, sslcert, sslkey [default: the files in ~/.postgresql (HOME)]"),
                ("PGSSLCRL, PGSSLCRLDIR", "refused: certificate revocation lists are not supported"),
                ("PGSERVICE", "status, exporter: asks the server (service files are not read)"),
            ]),
        ),
        Block::new(
            2,
            "S3 repositories",
            Some("Credentials come from the AWS SDK's standard chain: the variables below, the shared config and credentials files, the container credentials endpoint, the instance metadata service."),
            pairs(&[
                ("AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL", "--s3-endpoint's default, in this order"),
                ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true: ignore those two"),
                ("AWS_REGION, AWS_DEFAULT_REGION", "--s3-region's default, in this order"),
                ("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN", "static credentials"),
                ("AWS_PROFILE", "the profile of the shared config and credentials files"),
                ("AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN", "a web identity token and the role it assumes"),
            ]),
        ),
        Block::new(
            2,
            "GCS repositories",
            None,
            pairs(&[
                ("GOOGLE_APPLICATION_CREDENTIALS", "the application default credentials file [default: gcloud's, under HOME, else the metadata server]"),
                ("STORAGE_EMULATOR_HOST", "an emulator's host:port: --gcs-endpoint's default, and no credentials"),
            ]),
        ),
        Block::new(
            2,
            "Azure repositories",
            Some("Credentials: the first found of an account key, a SAS token, Entra ID (workload identity, managed identity, the Azure CLI)."),
            pairs(&[
                ("AZURE_STORAGE_ACCOUNT", "--azure-account's default"),
                ("AZURE_STORAGE_ACCESS_KEY, AZURE_STORAGE_KEY", "the account key"),
                ("AZURE_STORAGE_SAS_TOKEN", "a SAS token"),
                ("AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID", "workload identity"),
                ("AZURE_CLIENT_ID", "a user-assigned managed identity"),
            ]),
        ),
    ];
    let mut codes = vec![("0".to_owned(), "success".to_owned())];
    codes.extend(
        Exit::ALL
            .iter()
            .map(|e| ((*e as u8).to_string(), e.meaning().to_owned())),
    );
    codes.push((
        "130, 143".into(),
        "restore-test: interrupted by SIGINT or SIGTERM (128 + the signal), after cleaning up".into(),
    ));
    let fatal = format!(
        "With --abort-on-error, every failure other than {} exits {FATAL_OFFSET} + code ({} -> {}), so \
         that PostgreSQL aborts recovery instead of ending it.",
        Exit::NotFound as u8,
        Exit::Storage as u8,
        Exit::Storage.code(true)
    );
    blocks.push(Block::new(1, "Exit codes", Some(fatal.as_str()), codes));
    blocks
}

/// Every environment variable an option reads (its `env`), with the flag
/// and, for a subcommand's option, the subcommands that take it.
fn option_variables(cmd: &clap::Command) -> Vec<(String, String)> {
    let mut vars: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    fn walk(cmd: &clap::Command, path: Option<String>, vars: &mut BTreeMap<String, (String, Vec<String>)>) {
        for arg in cmd.get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let flag = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => arg.get_id().to_string().to_uppercase(),
            };
            let entry = vars
                .entry(env.to_string_lossy().into_owned())
                .or_insert_with(|| (flag, Vec::new()));
            if let Some(p) = &path {
                entry.1.push(p.clone());
            }
        }
        for sub in cmd.get_subcommands() {
            let name = match &path {
                Some(p) => format!("{p} {}", sub.get_name()),
                None => sub.get_name().to_owned(),
            };
            walk(sub, Some(name), vars);
        }
    }
    walk(cmd, None, &mut vars);
    vars.into_iter()
        .map(|(env, (flag, commands))| match commands.is_empty() {
            true => (env, flag),
            false => (env, format!("{flag} ({})", commands.join(", "))),
        })
        .collect()
}

/// Width of the help's lines, and where an entry's meaning starts.
const WIDTH: usize = 100;
const TERM_COLUMN: usize = 28;

/// The reference as `--help` shows it.
pub fn text(blocks: &[Block]) -> String {
    let mut out = String::new();
    for block in blocks {
        let indent = if block.level == 1 { 0 } else { 2 };
        if block.level == 1 && !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&" ".repeat(indent));
        out.push_str(&block.heading);
        out.push_str(":\n");
        if let Some(intro) = &block.intro {
            wrap(&mut out, intro, indent + 2, indent + 2);
        }
        // Meanings start after the longest term, or at TERM_COLUMN.
        let longest = block.entries.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
        for (term, meaning) in &block.entries {
            let first = indent + 2;
            let column = first + TERM_COLUMN.min(longest + 2);
            out.push_str(&" ".repeat(first));
            out.push_str(term);
            if first + term.len() + 2 > column {
                out.push('\n');
                wrap(&mut out, meaning, column, column);
            } else {
                let start = first + term.len();
                wrap_from(&mut out, meaning, start, column, column);
            }
        }
    }
    out.trim_end().to_owned()
}

/// Appends `words` wrapped at [`WIDTH`]: the first line indented by
/// `first`, the others by `rest`.
fn wrap(out: &mut String, words: &str, first: usize, rest: usize) {
    out.push_str(&" ".repeat(first));
    wrap_from(out, words, first, first, rest);
}

/// Appends `words` to a line at column `at`, starting them at column
/// `first`, further lines indented by `rest`.
fn wrap_from(out: &mut String, words: &str, at: usize, first: usize, rest: usize) {
    out.push_str(&" ".repeat(first.saturating_sub(at)));
    let mut column = first.max(at);
    let mut line_start = true;
    for word in words.split_whitespace() {
        if !line_start && column + 1 + word.len() > WIDTH {
            out.push('\n');
            out.push_str(&" ".repeat(rest));
            column = rest;
            line_start = true;
        }
        if !line_start {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += word.len();
        line_start = false;
    }
    out.push('\n');
}

/// The reference as sections of a man page.
fn roff(blocks: &[Block], out: &mut Roff) {
    const NO_ARGS: [&str; 0] = [];
    for block in blocks {
        let heading = match block.level {
            1 => block.heading.to_uppercase(),
            _ => block.heading.clone(),
        };
        out.control(if block.level == 1 { "SH" } else { "SS" }, [heading.as_str()]);
        if let Some(intro) = &block.intro {
            out.control("PP", NO_ARGS).text([roman(intro.as_str())]);
        }
        for (term, meaning) in &block.entries {
            out.control("TP", NO_ARGS)
                .text([bold(term.as_str())])
                .text([roman(meaning.as_str())]);
        }
    }
}

/// `pgark completions SHELL`.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::aot::generate(args.shell, &mut command(), "pgark", &mut script);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .map_err(|e| {
            WriteError(format!(
                "cannot write the {} completions to stdout: {e}",
                args.shell
            ))
        })?;
    Ok(())
}

/// Every man page: its file name and its text.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    let blocks = reference(&super::Cli::command());
    let mut pages = Vec::new();
    collect_pages(&cmd, &blocks, &mut pages);
    pages
}

fn collect_pages(cmd: &clap::Command, blocks: &[Block], pages: &mut Vec<(String, Vec<u8>)>) {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    let render = |page: &mut Vec<u8>| -> std::io::Result<()> {
        man.render_title(page)?;
        man.render_name_section(page)?;
        man.render_synopsis_section(page)?;
        man.render_description_section(page)?;
        if cmd.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(page)?;
        }
        if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
            man.render_subcommands_section(page)?;
        }
        let mut extra = Roff::new();
        roff(blocks, &mut extra);
        extra.to_writer(page)?;
        // Subcommands have no version of their own.
        if cmd.get_version().is_some() {
            man.render_version_section(page)?;
        }
        Ok(())
    };
    // Writing into a Vec cannot fail.
    render(&mut page).expect("rendering into memory");
    pages.push((man.get_filename(), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect_pages(sub, blocks, pages);
    }
}

/// `pgark man --dir DIR`: every page, each written whole (a temporary
/// file renamed into place).
pub fn man(args: &ManArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(WriteError(format!("man page directory {} is not a directory", dir.display())).into())
        }
        Err(e) => {
            return Err(WriteError(format!("man page directory {}: {e}", dir.display())).into());
        }
    }
    for (name, page) in man_pages() {
        let path = dir.join(&name);
        write_whole(&path, &page)
            .map_err(|e| WriteError(format!("cannot write man page {}: {e}", path.display())))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it to
/// `path`: a reader sees the old file or the new one, never a part.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The root command and every subcommand, each with its long help
    /// (`--help`) and its short help (`-h`).
    fn helps() -> Vec<(String, String, String)> {
        fn walk(cmd: &mut clap::Command, out: &mut Vec<(String, String, String)>) {
            let name = cmd.get_bin_name().unwrap_or(cmd.get_name()).to_owned();
            out.push((
                name,
                cmd.render_long_help().to_string(),
                cmd.render_help().to_string(),
            ));
            for sub in cmd.get_subcommands_mut() {
                // clap's own `help` subcommand prints the others' help.
                if sub.get_name() != "help" {
                    walk(sub, out);
                }
            }
        }
        let mut cmd = command();
        cmd.build();
        let mut out = Vec::new();
        walk(&mut cmd, &mut out);
        assert!(out.len() > 10, "{} commands", out.len());
        out
    }

    /// Every variable named in pgark's own code (the binary and the
    /// workspace crates it runs, outside tests) that looks like one it
    /// reads: PGARK_*, PG*, AWS_*, GOOGLE_*, AZURE_*, STORAGE_EMULATOR_HOST.
    fn variables_in_code() -> BTreeMap<String, String> {
        // Literals of that shape that are not variables pgark reads.
        const NOT_READ: &[(&str, &str)] = &[
            ("PGAE", "object format magic"),
            ("PGARK", "object format magic"),
            ("PGARKINC", "delta format magic"),
            ("PGAT", "object format magic"),
            ("PGIE", "delta format magic"),
            ("PGARK_", "a prefix, kept when clearing PG* for child programs"),
            ("PGOPTIONS", "set for restore-test's check programs, not read"),
            (
                "PGARK_TEST_RESTORE_ENTRY_DELAY_MS",
                "a hook of the tests (a pause per restored file), not a setting",
            ),
        ];
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        let mut dirs = vec![root.join("src")];
        for crate_dir in std::fs::read_dir(root.join("crates")).unwrap() {
            let crate_dir = crate_dir.unwrap().path();
            // The test kit is not part of the binary.
            if !crate_dir.ends_with("testkit") {
                dirs.push(crate_dir.join("src"));
            }
        }
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    if name != "tests" {
                        dirs.push(path);
                    }
                } else if name.ends_with(".rs") && name != "tests.rs" {
                    files.push(path);
                }
            }
        }
        assert!(files.len() > 50, "{} source files", files.len());
        let mut found = BTreeMap::new();
        for file in files {
            let source = std::fs::read_to_string(&file).unwrap();
            let code = without_test_items(&source);
            let quotes: Vec<usize> = code.match_indices('"').map(|(i, _)| i).collect();
            for pair in quotes.windows(2) {
                let literal = &code[pair[0] + 1..pair[1]];
                let shaped = literal.len() >= 4
                    && literal
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                    && (literal.starts_with("PGARK_")
                        || (literal.starts_with("PG") && literal.as_bytes()[2].is_ascii_uppercase())
                        || ["AWS_", "GOOGLE_", "AZURE_"]
                            .iter()
                            .any(|p| literal.starts_with(p))
                        || literal == "STORAGE_EMULATOR_HOST");
                if shaped && !NOT_READ.iter().any(|(n, _)| *n == literal) {
                    found.insert(literal.to_owned(), file.display().to_string());
                }
            }
        }
        found
    }

    /// `source` without its top-level `#[cfg(test)]` items (rustfmt's
    /// layout: an item ends at the first line that is a lone `}`).
    fn without_test_items(source: &str) -> String {
        let mut out = String::new();
        let mut lines = source.lines().peekable();
        while let Some(line) = lines.next() {
            if line.starts_with("#[cfg(test)]") {
                if lines.peek().is_some_and(|next| next.trim_end().ends_with(';')) {
                    lines.next();
                    continue;
                }
                for inner in lines.by_ref() {
                    if inner == "}" {
                        break;
                    }
                }
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    #[test]
    fn every_variable_the_code_reads_is_in_every_help() {
        let vars = variables_in_code();
        // The scan sees what it must: an option's, a libpq, a cloud's.
        for known in [
            "PGARK_REPO",
            "PGARK_ENCRYPTION_KEY",
            "PGSSLMODE",
            "AWS_REGION",
            "AZURE_CLIENT_ID",
        ] {
            assert!(vars.contains_key(known), "the scan missed {known}: {vars:?}");
        }
        for (name, long, _) in helps() {
            for (var, file) in &vars {
                assert!(
                    long.contains(var.as_str()),
                    "`{name} --help` lacks {var}, which {file} reads:\n{long}"
                );
            }
        }
    }

    #[test]
    fn every_exit_code_is_in_every_help() {
        for (i, exit) in Exit::ALL.iter().enumerate() {
            assert_eq!(*exit as usize, i + 1, "Exit::ALL is every code, in order");
            assert!(exit.code(false) <= 125);
        }
        for (name, long, short) in helps() {
            let codes = &long[long.find("Exit codes:").expect(&name)..];
            for code in std::iter::once(0).chain(Exit::ALL.iter().map(|e| *e as u8)) {
                let line = format!("\n  {code} ");
                assert!(
                    codes.contains(&line),
                    "`{name} --help` lacks exit code {code}:\n{codes}"
                );
            }
            assert!(
                codes.contains("130, 143") && codes.contains("128 + code"),
                "{codes}"
            );
            // -h stays short, and says where the rest is.
            assert!(
                !short.contains("Exit codes:") && short.contains("--help"),
                "{short}"
            );
        }
    }

    #[test]
    fn every_repository_kind_is_in_every_help() {
        for (name, long, _) in helps() {
            let repos = &long[long.find("Repositories (--repo):").expect(&name)..];
            for kind in &crate::repo::KINDS {
                assert!(repos.contains(kind.form), "`{name} --help` lacks {}", kind.form);
            }
            // And in --repo's own line.
            let repo_line: String = long[long.find("--repo <URL>").expect(&name)..]
                .chars()
                .take(300)
                .collect();
            assert!(repo_line.contains("azure://container"), "{repo_line}");
        }
    }

    /// docs/09-exit-codes.md's table has the same codes as the help.
    #[test]
    fn the_docs_list_the_same_exit_codes() {
        let section = include_str!("../../docs/09-exit-codes.md");
        let mut documented: Vec<String> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| "))
            .filter_map(|l| l.split_once(" |"))
            .map(|(code, _)| code.trim().to_owned())
            .filter(|code| code.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        documented.sort();
        let mut helped: Vec<String> = std::iter::once("0".to_owned())
            .chain(Exit::ALL.iter().map(|e| (*e as u8).to_string()))
            .chain(["130, 143".to_owned()])
            .collect();
        helped.sort();
        assert_eq!(documented, helped);
    }

    #[test]
    fn a_man_page_for_each_command() {
        let pages = man_pages();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "pgark.1",
            "pgark-wal-push.1",
            "pgark-backup-push.1",
            "pgark-key.1",
            "pgark-key-rotate.1",
            "pgark-completions.1",
            "pgark-man.1",
        ] {
            assert!(names.contains(&expected), "{expected} not in {names:?}");
        }
        for (name, page) in &pages {
            let page = String::from_utf8(page.clone()).unwrap();
            assert!(page.contains(".TH"), "{name}");
            assert!(
                page.contains(".SH \"EXIT CODES\"") || page.contains(".SH EXIT"),
                "{name}:\n{page}"
            );
        }
    }

    #[test]
    fn help_lines_fit() {
        for (name, long, _) in helps() {
            let reference = &long[long.find("Repositories (--repo):").unwrap()..];
            for line in reference.lines() {
                assert!(line.chars().count() <= WIDTH, "`{name} --help`: {line:?}");
            }
        }
    }
}
