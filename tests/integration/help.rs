//! The help, shell completions and man pages, from outside.

use crate::common::{assert_code, pgark, stderr};
use std::path::Path;

fn stdout(args: &[&str]) -> String {
    let out = pgark().args(args).output().unwrap();
    assert_code(&out, 0);
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands `pgark --help` lists, and theirs (`key rotate`).
fn subcommands() -> Vec<String> {
    fn listed(help: &str) -> Vec<String> {
        let commands = &help[help.find("Commands:\n").unwrap() + 10..];
        commands
            .lines()
            .take_while(|l| l.starts_with("  "))
            // A command's line, not the continuation of its description.
            .filter(|l| !l.starts_with("   "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| *name != "help")
            .map(str::to_owned)
            .collect()
    }
    let mut all = Vec::new();
    for name in listed(&stdout(&["--help"])) {
        let help = stdout(&[&name, "--help"]);
        if help.contains("Commands:\n") {
            all.extend(listed(&help).into_iter().map(|sub| format!("{name} {sub}")));
        }
        all.push(name);
    }
    assert!(all.len() > 10, "{all:?}");
    all
}

#[test]
fn long_help_has_the_reference_and_short_help_points_to_it() {
    for command in std::iter::once(String::new()).chain(subcommands()) {
        let mut args: Vec<&str> = command.split_whitespace().collect();
        args.push("--help");
        let long = stdout(&args);
        for needle in [
            "Repositories (--repo):",
            "azure://container[/prefix]",
            "Environment:",
            "PGSSLMODE",
            "Exit codes:",
            "\n  10 ",
            "\n  13 ",
        ] {
            assert!(
                long.contains(needle),
                "`pgark {command} --help` lacks {needle:?}:\n{long}"
            );
        }
        args.pop();
        args.push("-h");
        let short = stdout(&args);
        assert!(
            !short.contains("Exit codes:") && short.contains("--help"),
            "{short}"
        );
    }
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&["completions", shell]);
        assert!(
            script.contains("backup-push") && script.contains("--repo"),
            "{shell}:\n{script}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgark.bash");
    std::fs::write(&file, stdout(&["completions", "bash"])).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = pgark().args(["completions", "tcsh"]).output().unwrap();
    assert_code(&out, 2);
}

fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[test]
fn man_pages_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let written = stdout(&["man", "--dir", dir.path().to_str().unwrap()]);
    let mut expected = vec!["pgark.1".to_owned()];
    expected.extend(
        subcommands()
            .iter()
            .map(|c| format!("pgark-{}.1", c.replace(' ', "-"))),
    );
    for name in &expected {
        let path = dir.path().join(name);
        let page = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            page.starts_with(".ie") || page.contains("\n.TH "),
            "{name}:\n{page}"
        );
        assert!(page.contains("EXIT CODES"), "{name}");
        assert!(written.contains(path.to_str().unwrap()), "{written}");
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    // Nothing else: no temporary file left behind.
    assert_eq!(on_disk, expected_sorted);
    render(&dir.path().join("pgark-backup-push.1"));
}

/// Formats a page as `man` would, if man or groff is installed.
fn render(page: &Path) {
    let out = if installed("man") {
        std::process::Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap()
    } else if installed("groff") {
        std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .arg(page)
            .output()
            .unwrap()
    } else {
        eprintln!("neither man nor groff is installed: the page was not rendered");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{warnings}");
    assert!(
        !warnings.contains("warning"),
        "warnings rendering {}: {warnings}",
        page.display()
    );
    for needle in ["SYNOPSIS", "EXIT CODES", "PGSSLMODE", "PGARK_PG_CONN"] {
        assert!(text.contains(needle), "rendered page lacks {needle}:\n{text}");
    }
}

#[test]
fn man_into_a_missing_directory_names_it() {
    let out = pgark()
        .args(["man", "--dir", "/nonexistent/man1"])
        .output()
        .unwrap();
    assert_code(&out, 7);
    let err = stderr(&out);
    assert!(
        err.contains("pgark man:") && err.contains("/nonexistent/man1"),
        "{err}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = pgark().args(["man", "--dir"]).arg(file.path()).output().unwrap();
    assert_code(&out, 7);
    assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));
}
