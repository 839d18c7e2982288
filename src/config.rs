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
    pub command_timeout: Option<TimeoutValue>,
    pub abort_on_error: Option<bool>,
    pub pgdata: Option<std::path::PathBuf>,
    pub pg_conn: Option<String>,
    pub primary_conn: Option<String>,
    pub spread_checkpoint: Option<bool>,
    pub concurrency: Option<usize>,
    pub part_size: Option<u64>,
    pub archive_timeout: Option<u64>,
    pub delta: Option<bool>,
    pub full: Option<bool>,
    pub delta_from: Option<String>,
    pub delta_max_steps: Option<u32>,
    pub fail_on_corrupt_pages: Option<bool>,
    pub retain_count: Option<u32>,
    pub retain_max_age: Option<String>,
    pub garbage_age: Option<String>,
    pub max_archive_age: Option<String>,
    pub encryption_key_file: Option<PathBuf>,
    pub encryption_key_command: Option<String>,
    pub encryption_passphrase_file: Option<PathBuf>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_force_path_style: Option<bool>,
    pub s3_sse: Option<String>,
    pub s3_sse_kms_key_id: Option<String>,
    pub s3_storage_class: Option<String>,
    pub s3_checksum: Option<String>,
    pub gcs_endpoint: Option<String>,
    pub gcs_no_auth: Option<bool>,
    pub azure_account: Option<String>,
    pub azure_endpoint: Option<String>,
}

/// A time limit in the configuration file: seconds, or text as for the
/// flag (`"10m"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimeoutValue {
    Seconds(u64),
    Text(String),
}

/// The number of CPUs, the default of every `--concurrency`-like option
/// (2 when it cannot be read).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// Parses a time limit: whole seconds (`600`), or numbers with units
/// `d`, `h`, `m`, `s` (`10m`, `1h30m`); `0`, `off` or `none` mean no limit
/// (a zero duration).
pub fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim().to_ascii_lowercase();
    if t == "off" || t == "none" {
        return Ok(std::time::Duration::ZERO);
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let invalid = || format!("{text:?} is not a duration such as 600, 90s, 10m, 2h or 1h30m (0 for none)");
    let mut secs: u64 = 0;
    let mut number = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(invalid()),
        };
        let n: u64 = number.parse().map_err(|_| invalid())?;
        secs = n
            .checked_mul(unit)
            .and_then(|v| secs.checked_add(v))
            .ok_or_else(invalid)?;
        number.clear();
    }
    if !number.is_empty() || t.is_empty() {
        return Err(invalid());
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// Parses a retention age: a whole number and one unit, `s` (seconds),
/// `min` (minutes), `h` (hours), `d` (days), `w` (weeks), `m` (months of
/// 30 days) or `y` (years of 365 days): `30d`, `4w`, `6m`, `12h`. Zero
/// is refused (it would expire every backup the safety rules allow).
pub fn parse_retain_age(text: &str) -> Result<chrono::Duration, String> {
    let t = text.trim().to_ascii_lowercase();
    let invalid = || format!("{text:?} is not an age such as 30d, 4w, 6m (months), 12h, 90min or 1y");
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (number, unit) = t.split_at(split);
    let n: i64 = number.parse().map_err(|_| invalid())?;
    let unit_secs: i64 = match unit {
        "s" => 1,
        "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "m" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(invalid()),
    };
    if n == 0 {
        return Err(format!("{text:?}: a maximum age must be more than zero"));
    }
    n.checked_mul(unit_secs)
        .filter(|&secs| secs <= 100 * 365 * 86_400)
        .map(chrono::Duration::seconds)
        .ok_or_else(invalid)
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
    /// `--command-timeout` when given (zero: no limit); else the command's
    /// default applies.
    pub command_timeout: Option<std::time::Duration>,
    /// When the command must be over, and the limit it came from; set by
    /// `cli::run` once the command is known. Every repository call ends by
    /// it.
    pub deadline: Option<(std::time::Instant, std::time::Duration)>,
    pub abort_on_error: bool,
    /// Where the encryption key comes from (never the key itself).
    pub encryption: crate::encryption::KeySources,
    /// Options of S3 repositories.
    pub s3: S3Settings,
    /// Options of Google Cloud Storage repositories.
    pub gcs: GcsSettings,
    /// Options of Azure Blob Storage repositories.
    pub azure: AzureSettings,
    /// The configuration file, for subcommand options.
    pub file: FileConfig,
}

/// Options of S3 repositories (`--s3-*`), checked but not yet applied:
/// [`crate::repo::open`] turns them into the store's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// `--s3-endpoint`, else `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// `--s3-region`, else `AWS_REGION` or `AWS_DEFAULT_REGION`; the SDK
    /// looks further (config file, instance metadata) when unset.
    pub region: Option<String>,
    pub force_path_style: bool,
    /// `none`, `AES256` or `aws:kms`, as given.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    /// `when-supported` or `when-required`.
    pub checksum: Option<String>,
}

impl S3Settings {
    /// Resolves the `--s3-*` options, reading the AWS_* variables the
    /// defaults come from through `env`.
    fn merge(
        args: &GlobalArgs,
        file: &FileConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<S3Settings, ConfigError> {
        let pick = |flag: &Option<String>, key: &Option<String>| {
            flag.clone()
                .or_else(|| key.clone())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let env_nonempty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let ignore_env_endpoints =
            env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let endpoint = pick(&args.s3_endpoint, &file.s3_endpoint);
        // Checked here only when given to pgark: the AWS variables may be
        // meant for other programs, and S3 repositories check them on open.
        if let Some(e) = &endpoint {
            let host = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"))
                .unwrap_or("");
            if host.is_empty() || host.starts_with('/') {
                return Err(ConfigError::Invalid {
                    name: "s3-endpoint",
                    message: format!("{e:?} is not an http:// or https:// URL"),
                });
            }
        }
        let endpoint = endpoint.or_else(|| {
            if ignore_env_endpoints {
                None
            } else {
                env_nonempty("AWS_ENDPOINT_URL_S3").or_else(|| env_nonempty("AWS_ENDPOINT_URL"))
            }
        });
        let region = pick(&args.s3_region, &file.s3_region)
            .or_else(|| env_nonempty("AWS_REGION"))
            .or_else(|| env_nonempty("AWS_DEFAULT_REGION"));
        let sse = pick(&args.s3_sse, &file.s3_sse);
        let sse_kms_key_id = pick(&args.s3_sse_kms_key_id, &file.s3_sse_kms_key_id);
        match sse.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("aws:kms") => {}
            Some("none" | "aes256") if sse_kms_key_id.is_some() => {
                return Err(ConfigError::Invalid {
                    name: "s3-sse-kms-key-id",
                    message: format!(
                        "a KMS key id needs --s3-sse aws:kms, not {:?}",
                        sse.as_deref().unwrap_or_default()
                    ),
                })
            }
            Some("none" | "aes256") => {}
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: "s3-sse",
                    message: format!(
                        "{:?} is not one of none, AES256, aws:kms",
                        sse.as_deref().unwrap_or_default()
                    ),
                })
            }
        }
        let checksum = pick(&args.s3_checksum, &file.s3_checksum).map(|c| c.to_ascii_lowercase());
        if let Some(c) = &checksum {
            if c != "when-supported" && c != "when-required" {
                return Err(ConfigError::Invalid {
                    name: "s3-checksum",
                    message: format!("{c:?} is not one of when-supported, when-required"),
                });
            }
        }
        Ok(S3Settings {
            endpoint,
            region,
            force_path_style: args
                .s3_force_path_style
                .or(file.s3_force_path_style)
                .unwrap_or(false),
            sse,
            sse_kms_key_id,
            storage_class: pick(&args.s3_storage_class, &file.s3_storage_class),
            checksum,
        })
    }

    /// These settings as command-line flags, for commands pgark writes for
    /// later (restore_command), which may run where neither PGARK_* nor
    /// AWS_* variables are set.
    pub fn to_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        let mut add = |name: &str, value: &Option<String>| {
            if let Some(v) = value {
                flags.push(format!("--{name}"));
                flags.push(v.clone());
            }
        };
        add("s3-endpoint", &self.endpoint);
        add("s3-region", &self.region);
        add("s3-sse", &self.sse);
        add("s3-sse-kms-key-id", &self.sse_kms_key_id);
        add("s3-storage-class", &self.storage_class);
        add("s3-checksum", &self.checksum);
        if self.force_path_style {
            flags.push("--s3-force-path-style".into());
        }
        flags
    }
}

/// Options of GCS repositories (`--gcs-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcsSettings {
    /// `--gcs-endpoint`, else `http://` + `STORAGE_EMULATOR_HOST`.
    pub endpoint: Option<String>,
    /// Anonymous requests: `--gcs-no-auth`, else true when the endpoint
    /// came from `STORAGE_EMULATOR_HOST`.
    pub no_auth: bool,
}

impl GcsSettings {
    fn merge(
        args: &GlobalArgs,
        file: &FileConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GcsSettings, ConfigError> {
        let endpoint = pick(&args.gcs_endpoint, &file.gcs_endpoint);
        if let Some(e) = &endpoint {
            check_url("gcs-endpoint", e)?;
        }
        let emulator = env("STORAGE_EMULATOR_HOST")
            .map(|v| v.trim().trim_end_matches('/').to_owned())
            .filter(|v| !v.is_empty())
            .map(|v| {
                if v.contains("://") {
                    v
                } else {
                    format!("http://{v}")
                }
            });
        let no_auth = args.gcs_no_auth.or(file.gcs_no_auth);
        Ok(match endpoint {
            Some(e) => GcsSettings {
                endpoint: Some(e),
                no_auth: no_auth.unwrap_or(false),
            },
            None => GcsSettings {
                no_auth: no_auth.unwrap_or(emulator.is_some()),
                endpoint: emulator,
            },
        })
    }

    /// These settings as command-line flags, for restore_command.
    pub fn to_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(e) = &self.endpoint {
            flags.push("--gcs-endpoint".into());
            flags.push(e.clone());
        }
        if self.no_auth {
            flags.push("--gcs-no-auth".into());
        }
        flags
    }
}

/// Options of Azure repositories (`--azure-*`). The credentials are not
/// settings: they come from the environment only (`AZURE_STORAGE_ACCESS_KEY`,
/// `AZURE_STORAGE_SAS_TOKEN`), read when the repository is opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AzureSettings {
    /// `--azure-account`, else `AZURE_STORAGE_ACCOUNT`.
    pub account: Option<String>,
    pub endpoint: Option<String>,
}

impl AzureSettings {
    fn merge(
        args: &GlobalArgs,
        file: &FileConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AzureSettings, ConfigError> {
        let endpoint = pick(&args.azure_endpoint, &file.azure_endpoint);
        if let Some(e) = &endpoint {
            check_url("azure-endpoint", e)?;
        }
        let account = pick(&args.azure_account, &file.azure_account).or_else(|| {
            env("AZURE_STORAGE_ACCOUNT")
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        });
        Ok(AzureSettings { account, endpoint })
    }

    /// These settings as command-line flags, for restore_command.
    pub fn to_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(a) = &self.account {
            flags.push("--azure-account".into());
            flags.push(a.clone());
        }
        if let Some(e) = &self.endpoint {
            flags.push("--azure-endpoint".into());
            flags.push(e.clone());
        }
        flags
    }
}

/// A flag's value, else the file's, trimmed, empty meaning unset.
fn pick(flag: &Option<String>, key: &Option<String>) -> Option<String> {
    flag.clone()
        .or_else(|| key.clone())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Checks that `url` is an http(s) URL with a host.
fn check_url(name: &'static str, url: &str) -> Result<(), ConfigError> {
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or("");
    if host.is_empty() || host.starts_with('/') {
        return Err(ConfigError::Invalid {
            name,
            message: format!("{url:?} is not an http:// or https:// URL"),
        });
    }
    Ok(())
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
        let command_timeout = match (&args.command_timeout, &file.command_timeout) {
            (Some(text), _) | (None, Some(TimeoutValue::Text(text))) => {
                Some(parse_timeout(text).map_err(|message| ConfigError::Invalid {
                    name: "command-timeout",
                    message,
                })?)
            }
            (None, Some(TimeoutValue::Seconds(secs))) => Some(std::time::Duration::from_secs(*secs)),
            (None, None) => None,
        };
        let abort_on_error = args.abort_on_error.or(file.abort_on_error).unwrap_or(false);
        let env = |name: &str| std::env::var(name).ok();
        let s3 = S3Settings::merge(args, &file, &env)?;
        let gcs = GcsSettings::merge(args, &file, &env)?;
        let azure = AzureSettings::merge(args, &file, &env)?;
        Ok(Settings {
            repo: args.repo.clone().or(file.repo.clone()),
            compression,
            log_level,
            retry: RetryPolicy {
                attempts,
                ..RetryPolicy::default()
            },
            command_timeout,
            deadline: None,
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
            s3,
            gcs,
            azure,
            file,
        })
    }

    pub fn repo(&self) -> Result<&str, ConfigError> {
        self.repo.as_deref().ok_or(ConfigError::NoRepository)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn retention_ages_parse_with_their_units() {
        let day = 86_400;
        for (text, secs) in [
            ("30d", 30 * day),
            ("4w", 28 * day),
            ("6m", 180 * day),
            ("12h", 43_200),
            ("90min", 5_400),
            ("1s", 1),
            ("1y", 365 * day),
            (" 2D ", 2 * day),
        ] {
            assert_eq!(
                super::parse_retain_age(text),
                Ok(chrono::Duration::seconds(secs)),
                "{text}"
            );
        }
        for text in ["", "30", "d", "0d", "-1d", "1.5d", "3x", "1d2h", "999999999999y"] {
            assert!(super::parse_retain_age(text).is_err(), "{text}");
        }
    }

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
        assert!(bad(&["--command-timeout", "10 minutes"], "").contains("command-timeout"));
        assert!(bad(&[], "command_timeout = '5x'").contains("command-timeout"));
    }

    #[test]
    fn command_timeouts() {
        use std::time::Duration;
        for (text, secs) in [
            ("600", 600),
            ("90s", 90),
            ("10m", 600),
            ("1h30m", 5400),
            ("2d", 172_800),
            ("0", 0),
            ("off", 0),
            (" 5M ", 300),
        ] {
            assert_eq!(parse_timeout(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        for text in ["", "m", "10x", "1.5h", "-1", "10m5", "99999999999999999999d"] {
            assert!(parse_timeout(text).is_err(), "{text}");
        }
        let s = Settings::merge(&args(&[]), file("command_timeout = 120")).unwrap();
        assert_eq!(s.command_timeout, Some(Duration::from_secs(120)));
        let s = Settings::merge(
            &args(&["--command-timeout", "1m"]),
            file("command_timeout = '2h'"),
        )
        .unwrap();
        assert_eq!(s.command_timeout, Some(Duration::from_secs(60)));
        let s = Settings::merge(&args(&[]), file("command_timeout = '2h'")).unwrap();
        assert_eq!(s.command_timeout, Some(Duration::from_secs(7200)));
        assert_eq!(
            Settings::merge(&args(&[]), FileConfig::default())
                .unwrap()
                .command_timeout,
            None
        );
    }

    #[test]
    fn s3_settings_flag_beats_env_beats_file_beats_aws_variables() {
        let aws = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let f = file(
            "s3_endpoint = 'http://file:9000'\ns3_region = 'eu-west-1'\ns3_force_path_style = true\n\
             s3_sse = 'aws:kms'\ns3_sse_kms_key_id = 'alias/k'\ns3_storage_class = 'STANDARD_IA'\n\
             s3_checksum = 'when-required'\n",
        );
        let vars = aws(&[
            ("AWS_ENDPOINT_URL", "http://aws-env:1"),
            ("AWS_REGION", "ap-south-1"),
        ]);
        let s = S3Settings::merge(&args(&[]), &f, &vars).unwrap();
        assert_eq!(
            s,
            S3Settings {
                endpoint: Some("http://file:9000".into()),
                region: Some("eu-west-1".into()),
                force_path_style: true,
                sse: Some("aws:kms".into()),
                sse_kms_key_id: Some("alias/k".into()),
                storage_class: Some("STANDARD_IA".into()),
                checksum: Some("when-required".into()),
            }
        );
        let s = S3Settings::merge(
            &args(&[
                "--s3-endpoint",
                "https://flag",
                "--s3-region",
                "us-west-2",
                "--s3-force-path-style=false",
                "--s3-sse",
                "AES256",
                "--s3-sse-kms-key-id",
                "",
                "--s3-checksum",
                "WHEN-SUPPORTED",
            ]),
            &file("s3_region = 'eu-west-1'\ns3_checksum = 'when-required'\n"),
            &vars,
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("https://flag"));
        assert_eq!(s.region.as_deref(), Some("us-west-2"));
        assert!(!s.force_path_style);
        assert_eq!(s.sse.as_deref(), Some("AES256"));
        assert_eq!(s.sse_kms_key_id, None);
        assert_eq!(s.checksum.as_deref(), Some("when-supported"));
        // The AWS variables fill in what nothing else sets.
        let s = S3Settings::merge(&args(&["--s3-force-path-style"]), &FileConfig::default(), &vars).unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://aws-env:1"));
        assert_eq!(s.region.as_deref(), Some("ap-south-1"));
        assert!(s.force_path_style);
        let s = S3Settings::merge(
            &args(&[]),
            &FileConfig::default(),
            &aws(&[
                ("AWS_ENDPOINT_URL", "http://generic"),
                ("AWS_ENDPOINT_URL_S3", "http://s3-specific"),
                ("AWS_DEFAULT_REGION", "sa-east-1"),
            ]),
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://s3-specific"));
        assert_eq!(s.region.as_deref(), Some("sa-east-1"));
        let s = S3Settings::merge(
            &args(&[]),
            &FileConfig::default(),
            &aws(&[
                ("AWS_ENDPOINT_URL", "http://generic"),
                ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(s, S3Settings::default());
        assert!(s.to_flags().is_empty());
    }

    #[test]
    fn s3_settings_are_checked_and_become_flags() {
        let none = |_: &str| None;
        let bad = |argv: &[&str]| {
            S3Settings::merge(&args(argv), &FileConfig::default(), &none)
                .unwrap_err()
                .to_string()
        };
        assert!(bad(&["--s3-sse", "des"]).contains("s3-sse"));
        assert!(bad(&["--s3-sse", "AES256", "--s3-sse-kms-key-id", "k"]).contains("s3-sse-kms-key-id"));
        assert!(bad(&["--s3-checksum", "always"]).contains("s3-checksum"));
        assert!(bad(&["--s3-endpoint", "127.0.0.1:9000"]).contains("s3-endpoint"));
        // A malformed AWS_ENDPOINT_URL meant for another program does not
        // stop pgark (an S3 repository refuses it when opened).
        let odd = |name: &str| (name == "AWS_ENDPOINT_URL").then(|| "localhost:4566".to_string());
        let s = S3Settings::merge(&args(&[]), &FileConfig::default(), &odd).unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("localhost:4566"));
        let s = S3Settings::merge(
            &args(&[
                "--s3-endpoint",
                "http://127.0.0.1:9000",
                "--s3-force-path-style",
                "--s3-sse-kms-key-id",
                "arn:aws:kms:k",
                "--s3-checksum",
                "when-required",
            ]),
            &FileConfig::default(),
            &none,
        )
        .unwrap();
        assert_eq!(
            s.to_flags(),
            [
                "--s3-endpoint",
                "http://127.0.0.1:9000",
                "--s3-sse-kms-key-id",
                "arn:aws:kms:k",
                "--s3-checksum",
                "when-required",
                "--s3-force-path-style"
            ]
        );
        // The flags parse back to the same settings.
        let mut argv: Vec<&str> = Vec::new();
        let flags = s.to_flags();
        argv.extend(flags.iter().map(String::as_str));
        assert_eq!(
            S3Settings::merge(&args(&argv), &FileConfig::default(), &none).unwrap(),
            s
        );
    }

    #[test]
    fn gcs_and_azure_settings() {
        let vars = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let none = vars(&[]);
        let emulator = vars(&[
            ("STORAGE_EMULATOR_HOST", "127.0.0.1:4443"),
            ("AZURE_STORAGE_ACCOUNT", "envacct"),
        ]);
        // Defaults: Google Cloud with credentials; the emulator variable
        // means its endpoint, anonymously.
        let g = GcsSettings::merge(&args(&[]), &FileConfig::default(), &none).unwrap();
        assert_eq!(g, GcsSettings::default());
        let g = GcsSettings::merge(&args(&[]), &FileConfig::default(), &emulator).unwrap();
        assert_eq!(g.endpoint.as_deref(), Some("http://127.0.0.1:4443"));
        assert!(g.no_auth);
        assert_eq!(
            g.to_flags(),
            ["--gcs-endpoint", "http://127.0.0.1:4443", "--gcs-no-auth"]
        );
        // A flag or file endpoint wins and keeps credentials unless told.
        let f = file(
            "gcs_endpoint = 'http://file:1'\nazure_account = 'fileacct'\nazure_endpoint = 'http://az:2/a'\n",
        );
        let g = GcsSettings::merge(&args(&[]), &f, &emulator).unwrap();
        assert_eq!((g.endpoint.as_deref(), g.no_auth), (Some("http://file:1"), false));
        let g = GcsSettings::merge(
            &args(&["--gcs-endpoint", "https://flag", "--gcs-no-auth"]),
            &f,
            &none,
        )
        .unwrap();
        assert_eq!((g.endpoint.as_deref(), g.no_auth), (Some("https://flag"), true));
        let a = AzureSettings::merge(&args(&[]), &FileConfig::default(), &emulator).unwrap();
        assert_eq!(a.account.as_deref(), Some("envacct"));
        let a = AzureSettings::merge(&args(&[]), &f, &emulator).unwrap();
        assert_eq!(
            a.to_flags(),
            ["--azure-account", "fileacct", "--azure-endpoint", "http://az:2/a"]
        );
        let a = AzureSettings::merge(&args(&["--azure-account", "flagacct"]), &f, &emulator).unwrap();
        assert_eq!(a.account.as_deref(), Some("flagacct"));
        // Bad endpoints are named.
        let err = GcsSettings::merge(&args(&["--gcs-endpoint", "127.0.0.1:4443"]), &f, &none).unwrap_err();
        assert!(err.to_string().contains("gcs-endpoint"), "{err}");
        let err = AzureSettings::merge(&args(&["--azure-endpoint", "ftp://x"]), &f, &none).unwrap_err();
        assert!(err.to_string().contains("azure-endpoint"), "{err}");
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
