//! Where a [`MasterKey`] comes from: a key file, key text (the
//! `PGARK_ENCRYPTION_KEY` environment variable), a key command, or a
//! passphrase stretched with Argon2id.
//!
//! Errors describe the *shape* of what was found (a path, a size, a
//! length in characters) and never its content. Intermediate buffers that
//! held key material are wiped.

use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::keys::{KdfParams, MasterKey, KEY_LEN};

/// Environment variable holding the key as text (64 hex digits or base64).
pub const KEY_ENV: &str = "PGARK_ENCRYPTION_KEY";

/// How long a key command may run by default.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Most stdout a key command may print (more is refused, unread).
const MAX_COMMAND_OUTPUT: usize = 64 * 1024;
/// Most stderr kept for the error message.
const MAX_STDERR_SHOWN: usize = 2048;

/// Why `text` (already trimmed) is not a key, or the key.
fn parse_key_text(text: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    if text.is_empty() {
        return Err("it is empty".into());
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if text.len() == 2 * KEY_LEN && text.iter().all(u8::is_ascii_hexdigit) {
        hex::decode_to_slice(text, &mut key[..]).map_err(|_| "bad hex".to_string())?;
        return Ok(key);
    }
    if text.iter().all(u8::is_ascii_hexdigit) && text.len() % 2 == 0 && text.len() < 2 * KEY_LEN {
        return Err(format!(
            "{} hex digits ({} bytes; a key is 64 hex digits, 32 bytes)",
            text.len(),
            text.len() / 2
        ));
    }
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for engine in engines {
        if let Ok(decoded) = engine.decode(text) {
            let decoded = Zeroizing::new(decoded);
            if decoded.len() == KEY_LEN {
                key.copy_from_slice(&decoded);
                return Ok(key);
            }
            return Err(format!(
                "{} characters of base64 decoding to {} bytes (a key is 32 bytes)",
                text.len(),
                decoded.len()
            ));
        }
    }
    Err(format!("{} characters, neither hex nor base64", text.len()))
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

impl MasterKey {
    /// Reads a key file holding exactly 32 raw bytes. Any other size is
    /// refused, naming the path and the size (the content is never shown).
    pub fn from_file(path: impl AsRef<Path>) -> Result<MasterKey, CryptoError> {
        let path = path.as_ref();
        let read_err = |source| CryptoError::KeyFileRead {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let size = file.metadata().map_err(read_err)?.len();
        if size != KEY_LEN as u64 {
            return Err(CryptoError::KeyFileSize {
                path: path.to_path_buf(),
                size,
            });
        }
        // Read one byte more than a key, in case the file grew meanwhile.
        let mut buf = Zeroizing::new([0u8; KEY_LEN + 1]);
        let mut got = 0;
        loop {
            match file.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    if got == buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_err(e)),
            }
        }
        if got != KEY_LEN {
            return Err(CryptoError::KeyFileSize {
                path: path.to_path_buf(),
                size: got as u64,
            });
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&buf[..KEY_LEN]);
        Ok(MasterKey::build(key, None))
    }

    /// Parses key text: 64 hex digits, or the base64 (standard or URL-safe,
    /// padded or not) of 32 bytes. Surrounding whitespace is ignored.
    pub fn from_text(text: &str) -> Result<MasterKey, CryptoError> {
        parse_key_text(trim_ascii(text.as_bytes()))
            .map(|key| MasterKey::build(key, None))
            .map_err(|reason| CryptoError::KeyText { reason })
    }

    /// The key in [`KEY_ENV`] (`PGARK_ENCRYPTION_KEY`), if it is set and
    /// not empty.
    pub fn from_env() -> Result<Option<MasterKey>, CryptoError> {
        match std::env::var_os(KEY_ENV) {
            None => Ok(None),
            Some(value) => {
                let value = Zeroizing::new(value.into_encoded_bytes());
                let text = trim_ascii(&value);
                if text.is_empty() {
                    return Ok(None);
                }
                let text = std::str::from_utf8(text).map_err(|_| CryptoError::KeyText {
                    reason: format!("{KEY_ENV} is not UTF-8 text"),
                })?;
                MasterKey::from_text(text).map(Some)
            }
        }
    }

    /// Runs `command` with `sh -c` (stdin closed) and takes the key from
    /// its stdout: exactly 32 bytes are the raw key, anything else is
    /// trimmed and parsed as key text. Fails if the command exits
    /// unsuccessfully (its stderr is in the error) or runs longer than
    /// [`DEFAULT_COMMAND_TIMEOUT`].
    pub fn from_command(command: &str) -> Result<MasterKey, CryptoError> {
        MasterKey::from_command_with_timeout(command, DEFAULT_COMMAND_TIMEOUT)
    }

    /// [`MasterKey::from_command`] with another time limit. On timeout the
    /// command's whole process group is killed.
    pub fn from_command_with_timeout(command: &str, timeout: Duration) -> Result<MasterKey, CryptoError> {
        use std::os::unix::process::CommandExt;

        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|source| CryptoError::KeyCommandSpawn { source })?;
        let mut stdout = child.stdout.take().expect("stdout piped");
        let mut stderr = child.stderr.take().expect("stderr piped");
        let out_reader = std::thread::spawn(move || {
            let mut out = Zeroizing::new(Vec::new());
            let res = (&mut stdout)
                .take(MAX_COMMAND_OUTPUT as u64 + 1)
                .read_to_end(&mut out);
            // Drain anything beyond the limit so the command is not blocked.
            let _ = io::copy(&mut stdout, &mut io::sink());
            res.map(|_| out)
        });
        let err_reader = std::thread::spawn(move || {
            let mut err = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut err);
            let _ = io::copy(&mut stderr, &mut io::sink());
            err
        });

        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    // Kill the group `sh` leads, so its children go too and
                    // release the pipes; the reader threads are left to end.
                    let pid = child.id() as libc::pid_t;
                    // SAFETY: kill(2) with a negative pid signals the process
                    // group we created for this child; no memory is touched.
                    unsafe {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CryptoError::KeyCommandTimeout {
                        seconds: timeout.as_secs_f64().ceil() as u64,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(source) => return Err(CryptoError::KeyCommandSpawn { source }),
            }
        };
        let out = out_reader
            .join()
            .map_err(|_| CryptoError::KeyCommandOutput {
                reason: "reading it failed".into(),
            })?
            .map_err(|e| CryptoError::KeyCommandOutput {
                reason: format!("reading it failed: {e}"),
            })?;
        let err = err_reader.join().unwrap_or_default();
        if !status.success() {
            let mut shown = String::from_utf8_lossy(trim_ascii(&err)).into_owned();
            if shown.len() > MAX_STDERR_SHOWN {
                let mut cut = MAX_STDERR_SHOWN;
                while !shown.is_char_boundary(cut) {
                    cut -= 1;
                }
                shown.truncate(cut);
                shown.push_str("...");
            }
            return Err(CryptoError::KeyCommandFailed {
                status: status.to_string(),
                stderr: shown,
            });
        }
        if out.len() > MAX_COMMAND_OUTPUT {
            return Err(CryptoError::KeyCommandOutput {
                reason: format!("more than {MAX_COMMAND_OUTPUT} bytes"),
            });
        }
        if out.len() == KEY_LEN {
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            key.copy_from_slice(&out);
            return Ok(MasterKey::build(key, None));
        }
        parse_key_text(trim_ascii(&out))
            .map(|key| MasterKey::build(key, None))
            .map_err(|reason| CryptoError::KeyCommandOutput {
                reason: format!("{} bytes: {reason}", out.len()),
            })
    }

    /// Stretches a passphrase with Argon2id under `params` (whose salt and
    /// costs are then recorded in the keyring with the wrap this key
    /// opens). The same passphrase and parameters always give the same key.
    pub fn from_passphrase(
        passphrase: impl AsRef<[u8]>,
        params: &KdfParams,
    ) -> Result<MasterKey, CryptoError> {
        let passphrase = passphrase.as_ref();
        if passphrase.is_empty() {
            return Err(CryptoError::Passphrase {
                reason: "it is empty",
            });
        }
        let key = params.derive(passphrase)?;
        Ok(MasterKey::build(key, Some(params.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const KEY: [u8; 32] = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01,
        0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
    ];

    fn id() -> crate::KeyId {
        MasterKey::from_bytes(&KEY).id()
    }

    fn key_file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn key_file_of_32_bytes() {
        let f = key_file(&KEY);
        assert_eq!(MasterKey::from_file(f.path()).unwrap().id(), id());
    }

    #[test]
    fn key_files_of_other_sizes_are_refused_naming_path_and_size() {
        for size in [0usize, 31, 33, 64, 65] {
            let content: Vec<u8> = (0..size).map(|i| b'a' + (i % 6) as u8).collect();
            let f = key_file(&content);
            let err = MasterKey::from_file(f.path()).unwrap_err();
            assert!(
                matches!(&err, CryptoError::KeyFileSize { size: s, .. } if *s == size as u64),
                "{size}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&f.path().display().to_string()), "{msg}");
            assert!(msg.contains(&format!("holds {size} bytes")), "{msg}");
            if size > 0 {
                assert!(!msg.contains(std::str::from_utf8(&content[..6.min(size)]).unwrap()) || size < 6);
            }
        }
        let err = MasterKey::from_file("/nonexistent/pgark.key").unwrap_err();
        assert!(matches!(err, CryptoError::KeyFileRead { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/pgark.key"));
    }

    #[test]
    fn key_text_hex_and_base64() {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let hex_lower = hex::encode(KEY);
        let texts = [
            hex_lower.clone(),
            hex_lower.to_uppercase(),
            format!("  {hex_lower}\n"),
            STANDARD.encode(KEY),
            format!("{}\n", STANDARD.encode(KEY)),
            STANDARD_NO_PAD.encode(KEY),
            URL_SAFE_NO_PAD.encode(KEY),
        ];
        for t in &texts {
            assert_eq!(MasterKey::from_text(t).unwrap().id(), id(), "{t:?}");
        }
    }

    #[test]
    fn bad_key_text_is_described_not_echoed() {
        let hex31 = hex::encode(&KEY[..31]);
        let b64_31 = base64::engine::general_purpose::STANDARD.encode(&KEY[..31]);
        let b64_33 = base64::engine::general_purpose::STANDARD.encode([KEY.as_slice(), &[1]].concat());
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            (hex31.as_str(), "62 hex digits (31 bytes"),
            (b64_31.as_str(), "decoding to 31 bytes"),
            (b64_33.as_str(), "decoding to 33 bytes"),
            ("not a key at all!", "17 characters, neither hex nor base64"),
        ];
        for (text, expected) in cases {
            let err = MasterKey::from_text(text).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, CryptoError::KeyText { .. }), "{text:?}: {err:?}");
            assert!(msg.contains(expected), "{text:?}: {msg}");
            if text.trim().len() > 4 {
                assert!(!msg.contains(text.trim()), "{msg}");
            }
        }
    }

    #[test]
    fn key_command_raw_hex_and_base64() {
        let f = key_file(&KEY);
        let raw = format!("cat '{}'", f.path().display());
        assert_eq!(MasterKey::from_command(&raw).unwrap().id(), id());
        let hex_cmd = format!("echo {}", hex::encode(KEY));
        assert_eq!(MasterKey::from_command(&hex_cmd).unwrap().id(), id());
        let b64_cmd = format!(
            "printf '%s' '{}'",
            base64::engine::general_purpose::STANDARD.encode(KEY)
        );
        assert_eq!(MasterKey::from_command(&b64_cmd).unwrap().id(), id());
    }

    #[test]
    fn key_command_failures() {
        let err = MasterKey::from_command("echo vault sealed >&2; exit 3").unwrap_err();
        match &err {
            CryptoError::KeyCommandFailed { status, stderr } => {
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr, "vault sealed");
            }
            other => panic!("{other:?}"),
        }
        let err = MasterKey::from_command("echo 0011").unwrap_err();
        assert!(matches!(err, CryptoError::KeyCommandOutput { .. }), "{err:?}");
        assert!(!err.to_string().contains("0011"), "{err}");
        let err = MasterKey::from_command("true").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");

        let start = Instant::now();
        let err = MasterKey::from_command_with_timeout("sleep 30; echo late", Duration::from_millis(300))
            .unwrap_err();
        assert!(
            matches!(err, CryptoError::KeyCommandTimeout { seconds: 1 }),
            "{err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn passphrase_is_deterministic_per_salt_and_params() {
        let p = KdfParams::new(256, 1, 1).unwrap();
        let a = MasterKey::from_passphrase("correct horse", &p).unwrap();
        let b = MasterKey::from_passphrase(b"correct horse", &p).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.kdf(), Some(&p));
        assert_ne!(
            a.id(),
            MasterKey::from_passphrase("correct horsf", &p).unwrap().id()
        );
        let other_salt = KdfParams::new(256, 1, 1).unwrap();
        assert_ne!(
            a.id(),
            MasterKey::from_passphrase("correct horse", &other_salt)
                .unwrap()
                .id()
        );
        let mut costlier = p.clone();
        costlier.iterations = 2;
        assert_ne!(
            a.id(),
            MasterKey::from_passphrase("correct horse", &costlier)
                .unwrap()
                .id()
        );
        assert!(matches!(
            MasterKey::from_passphrase("", &p),
            Err(CryptoError::Passphrase { .. })
        ));
    }

    /// Known answer from the reference Argon2 command-line tool:
    /// `echo -n password | argon2 somesaltsomesalt -id -t 2 -m 16 -p 1 -l 32 -r`
    /// (`-m 16` is 2^16 KiB).
    #[test]
    fn passphrase_matches_reference_argon2id() {
        let p = KdfParams {
            algorithm: crate::KdfAlgorithm::Argon2id,
            version: 0x13,
            memory_kib: 65536,
            iterations: 2,
            parallelism: 1,
            salt: *b"somesaltsomesalt",
        };
        let key = MasterKey::from_passphrase("password", &p).unwrap();
        assert_eq!(
            key.expose_hex().as_str(),
            "fc33b78139231d34b71626bd6245c1d72efa190ad605c3d8166a72adcedfa2c2"
        );
    }
}
