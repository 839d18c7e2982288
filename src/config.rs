//! Settings: every option is a flag, an environment variable
//! `PGARK_<NAME>` and a key `<name>` in an optional TOML file, with
//! precedence flag > environment > file > default. clap reads flags and
//! environment (flags win); this module lays the file underneath.

use crate::cli::GlobalArgs;
use pgark_codec::{Compression, CompressionSpec};
use pgark_engine::RetryPolicy;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A bad configuration: unreadable file, unknown key, invalid value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("configuration file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("no repository given: use --repo, PGARK_REPO or `repo` in the configuration file")]
    NoRepository,
}

/// The configuration file: the same names as the flags, with underscores.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub repo: Option<String>,
    pub compression: Option<String>,
    pub compression_level: Option<i32>,
    pub log_level: Option<String>,
    pub retry_attempts: Option<u32>,
    pub abort_on_error: Option<bool>,
    pub pgdata: Option<std::path::PathBuf>,
    pub pg_conn: Option<String>,
    pub spread_checkpoint: Option<bool>,
    pub concurrency: Option<usize>,
    pub part_size: Option<u64>,
    pub archive_timeout: Option<u64>,
    pub encryption_key_file: Option<PathBuf>,
    pub encryption_key_command: Option<String>,
    pub encryption_passphrase_file: Option<PathBuf>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.message().to_string(),
        })
    }
}

/// Settings shared by every command, resolved from all sources.
#[derive(Debug, Clone)]
pub struct Settings {
    pub repo: Option<String>,
    pub compression: CompressionSpec,
    pub log_level: String,
    pub retry: RetryPolicy,
    pub abort_on_error: bool,
    /// Where the encryption key comes from (never the key itself).
    pub encryption: crate::encryption::KeySources,
    /// The configuration file, for subcommand options.
    pub file: FileConfig,
}

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

impl Settings {
    pub fn resolve(args: &GlobalArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    fn merge(args: &GlobalArgs, file: FileConfig) -> Result<Settings, ConfigError> {
        let codec = match (&args.compression, &file.compression) {
            (Some(c), _) => *c,
            (None, Some(s)) => s.parse::<Compression>().map_err(|e| ConfigError::Invalid {
                name: "compression",
                message: e.to_string(),
            })?,
            (None, None) => CompressionSpec::default().codec,
        };
        let level = args.compression_level.or(file.compression_level);
        let compression = CompressionSpec::new(codec, level).map_err(|e| ConfigError::Invalid {
            name: "compression-level",
            message: e.to_string(),
        })?;
        let log_level = args
            .log_level
            .clone()
            .or(file.log_level.clone())
            .unwrap_or_else(|| "warn".into())
            .to_lowercase();
        if !LOG_LEVELS.contains(&log_level.as_str()) {
            return Err(ConfigError::Invalid {
                name: "log-level",
                message: format!("{log_level:?} is not one of {}", LOG_LEVELS.join(", ")),
            });
        }
        let attempts = args
            .retry_attempts
            .or(file.retry_attempts)
            .unwrap_or(RetryPolicy::default().attempts);
        if attempts == 0 {
            return Err(ConfigError::Invalid {
                name: "retry-attempts",
                message: "must be at least 1".into(),
            });
        }
        let abort_on_error = args.abort_on_error.or(file.abort_on_error).unwrap_or(false);
        Ok(Settings {
            repo: args.repo.clone().or(file.repo.clone()),
            compression,
            log_level,
            retry: RetryPolicy {
                attempts,
                ..RetryPolicy::default()
            },
            abort_on_error,
            encryption: crate::encryption::KeySources::new(
                args.encryption_key_file
                    .clone()
                    .or(file.encryption_key_file.clone()),
                args.encryption_key_command
                    .clone()
                    .or(file.encryption_key_command.clone()),
                args.encryption_passphrase_file
                    .clone()
                    .or(file.encryption_passphrase_file.clone()),
                crate::encryption::KEY_ENV,
                crate::encryption::PASSPHRASE_ENV,
            ),
            file,
        })
    }

    pub fn repo(&self) -> Result<&str, ConfigError> {
        self.repo.as_deref().ok_or(ConfigError::NoRepository)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(argv: &[&str]) -> GlobalArgs {
        let mut full = vec!["pgark"];
        full.extend_from_slice(argv);
        full.extend_from_slice(&["wal-fetch", "000000010000000000000001", "/tmp/x"]);
        crate::cli::Cli::try_parse_from(full).unwrap().global
    }

    fn file(toml_text: &str) -> FileConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let f = file("repo = '/from/file'\ncompression = 'lz4'\nretry_attempts = 2\nabort_on_error = true\n");
        let s = Settings::merge(&args(&["--repo", "/from/flag"]), f.clone()).unwrap();
        assert_eq!(s.repo.as_deref(), Some("/from/flag"));
        assert_eq!(s.compression.codec, Compression::Lz4);
        assert_eq!(s.retry.attempts, 2);
        assert!(s.abort_on_error);
        let s = Settings::merge(&args(&["--abort-on-error=false", "--compression", "lzma"]), f).unwrap();
        assert_eq!(s.repo.as_deref(), Some("/from/file"));
        assert_eq!(s.compression.codec, Compression::Lzma);
        assert!(!s.abort_on_error);
        let s = Settings::merge(&args(&[]), FileConfig::default()).unwrap();
        assert_eq!(s.compression.codec, CompressionSpec::default().codec);
        assert_eq!(
            s.compression.effective_level(),
            CompressionSpec::default().effective_level()
        );
        assert_eq!(s.log_level, "warn");
        assert!(s.repo.is_none());
    }

    #[test]
    fn invalid_values_are_named() {
        let bad = |argv: &[&str], f: &str| Settings::merge(&args(argv), file(f)).unwrap_err().to_string();
        assert!(bad(&[], "compression = 'gzip'").contains("compression"));
        assert!(bad(&["--compression", "lz4", "--compression-level", "3"], "").contains("compression-level"));
        assert!(bad(&[], "log_level = 'loud'").contains("log-level"));
        assert!(bad(&[], "retry_attempts = 0").contains("retry-attempts"));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgark.toml");
        std::fs::write(&path, "repo = '/x'\ncompresion = 'zstd'\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("compresion") && err.contains("pgark.toml"), "{err}");
    }
}
