use super::*;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

fn params(conninfo: &str) -> TlsParams {
    crate::conninfo::split_tls_params(conninfo).unwrap().1
}

/// Resolved with `env` and no passwd entry.
fn resolve(conninfo: &str, env: &[(&str, &str)]) -> Result<TlsOptions> {
    resolve_with_passwd(conninfo, env, None)
}

fn resolve_with_passwd(conninfo: &str, env: &[(&str, &str)], passwd: Option<&Path>) -> Result<TlsOptions> {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    TlsOptions::resolve_in(
        &params(conninfo),
        |k| env.get(k).cloned(),
        || passwd.map(Path::to_path_buf),
    )
}

/// A HOME with `.postgresql/` holding `files`.
fn home(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(".postgresql")).unwrap();
    for f in files {
        std::fs::write(dir.path().join(".postgresql").join(f), "").unwrap();
    }
    dir
}

#[test]
fn settings_resolve_like_libpq() {
    let empty = home(&[]);
    let full = home(&["root.crt", "postgresql.crt", "postgresql.key"]);
    let e = empty.path().to_str().unwrap();
    let f = full.path().to_str().unwrap();
    let pgdir = full.path().join(".postgresql");
    let file = |p: &str| Some(RootCert::File(p.into()));
    let default_client = Some(ClientCert {
        cert: pgdir.join("postgresql.crt"),
        key: pgdir.join("postgresql.key"),
    });
    // (conninfo, environment) -> (mode, root, client cert, what is checked)
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        SslMode,
        Option<RootCert>,
        Option<ClientCert>,
        Verify,
    );
    let cases: Vec<Case> = vec![
        ("", vec![], SslMode::Prefer, None, None, Verify::Nothing),
        (
            "",
            vec![("HOME", e)],
            SslMode::Prefer,
            None,
            None,
            Verify::Nothing,
        ),
        (
            "",
            vec![("PGSSLMODE", "require")],
            SslMode::Require,
            None,
            None,
            Verify::Nothing,
        ),
        // The conninfo wins over the environment.
        (
            "sslmode=disable",
            vec![("PGSSLMODE", "require")],
            SslMode::Disable,
            None,
            None,
            Verify::Nothing,
        ),
        (
            "postgresql://db/x?sslmode=verify-ca&sslrootcert=/ca.pem",
            vec![("PGSSLROOTCERT", "/other.pem")],
            SslMode::VerifyCa,
            file("/ca.pem"),
            None,
            Verify::Chain,
        ),
        (
            "sslmode=verify-full",
            vec![("PGSSLROOTCERT", "/ca.pem")],
            SslMode::VerifyFull,
            file("/ca.pem"),
            None,
            Verify::ChainAndName,
        ),
        // A root CA file makes require (and prefer) check the chain.
        (
            "sslmode=require sslrootcert=/ca.pem",
            vec![],
            SslMode::Require,
            file("/ca.pem"),
            None,
            Verify::Chain,
        ),
        // The files in ~/.postgresql that exist are used.
        (
            "sslmode=require",
            vec![("HOME", f)],
            SslMode::Require,
            Some(RootCert::File(pgdir.join("root.crt"))),
            default_client.clone(),
            Verify::Chain,
        ),
        (
            "",
            vec![("HOME", f)],
            SslMode::Prefer,
            Some(RootCert::File(pgdir.join("root.crt"))),
            default_client,
            Verify::Chain,
        ),
        (
            "sslcert=/c.crt",
            vec![("HOME", e), ("PGSSLKEY", "/k.key")],
            SslMode::Prefer,
            None,
            Some(ClientCert {
                cert: "/c.crt".into(),
                key: "/k.key".into(),
            }),
            Verify::Nothing,
        ),
        // A key named without a certificate is not used.
        (
            "sslkey=/k.key",
            vec![("HOME", e)],
            SslMode::Prefer,
            None,
            None,
            Verify::Nothing,
        ),
        // libpq 16: the system's roots default to verify-full.
        (
            "sslrootcert=system",
            vec![],
            SslMode::VerifyFull,
            Some(RootCert::System),
            None,
            Verify::ChainAndName,
        ),
        // An empty sslrootcert hides PGSSLROOTCERT (libpq): the default.
        (
            "sslrootcert=''",
            vec![("PGSSLROOTCERT", "/ca.pem")],
            SslMode::Prefer,
            None,
            None,
            Verify::Nothing,
        ),
    ];
    for (conninfo, env, mode, root, client, verify) in cases {
        let got = resolve(conninfo, &env).unwrap_or_else(|err| panic!("{conninfo} {env:?}: {err}"));
        assert_eq!(
            (got.mode, &got.root_cert, &got.client_cert, got.verify()),
            (mode, &root, &client, verify),
            "{conninfo} {env:?}"
        );
    }
}

#[test]
fn impossible_settings_are_refused_with_their_names() {
    let empty = home(&[]);
    let e = empty.path().to_str().unwrap();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "sslmode=verify",
            &[],
            "sslmode: invalid sslmode value: \"verify\"",
        ),
        (
            "",
            &[("PGSSLMODE", "Require")],
            "PGSSLMODE: invalid sslmode value: \"Require\"",
        ),
        // Empty is invalid too (libpq), in the conninfo (hiding
        // PGSSLMODE) or the environment; not the default.
        (
            "sslmode=''",
            &[("PGSSLMODE", "require")],
            "sslmode: invalid sslmode value: \"\"",
        ),
        ("", &[("PGSSLMODE", "")], "PGSSLMODE: invalid sslmode value: \"\""),
        (
            "sslmode=verify-ca",
            &[("HOME", e)],
            "sslmode=verify-ca checks the server's certificate",
        ),
        ("sslmode=verify-full", &[("HOME", e)], ".postgresql/root.crt"),
        (
            "sslmode=require sslrootcert=system",
            &[],
            "weak sslmode \"require\" may not be used with sslrootcert=system (use \"verify-full\")",
        ),
        (
            "sslmode=disable sslrootcert=system",
            &[],
            "weak sslmode \"disable\" may not be used with sslrootcert=system",
        ),
        // CRLs are not supported: refused, not ignored.
        (
            "sslmode=verify-full sslrootcert=/ca.pem sslcrl=/r.crl",
            &[],
            "sslcrl=\"/r.crl\": certificate revocation lists (CRLs) are not supported",
        ),
        (
            "sslmode=require",
            &[("PGSSLCRLDIR", "/crls")],
            "PGSSLCRLDIR=\"/crls\": certificate revocation lists (CRLs) are not supported",
        ),
        ("sslcert=/c.crt", &[], "sslcert /c.crt is given without sslkey"),
    ];
    for (conninfo, env, want) in cases {
        let err = resolve(conninfo, env).unwrap_err().to_string();
        assert!(err.contains(want), "{conninfo} {env:?}: {err}");
    }
}

#[test]
fn files_that_cannot_be_used_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.crt");
    let empty = dir.path().join("empty.crt");
    std::fs::write(&empty, "not PEM\n").unwrap();
    let opts = |root: &Path| TlsOptions {
        mode: SslMode::VerifyFull,
        root_cert: Some(RootCert::File(root.into())),
        client_cert: None,
    };
    let err = opts(&missing).connector().err().unwrap().to_string();
    assert_eq!(err, format!("sslrootcert {} does not exist", missing.display()));
    let err = opts(&empty).connector().err().unwrap().to_string();
    assert_eq!(
        err,
        format!("sslrootcert {} holds no PEM certificate", empty.display())
    );

    // A usable CA, then client certificates that are not.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(vec!["ca".into()])
        .unwrap()
        .self_signed(&ca_key)
        .unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let cert_file = dir.path().join("client.crt");
    std::fs::write(&cert_file, ca.pem()).unwrap();
    let key_file = dir.path().join("client.key");
    let with_client = |key: &Path| TlsOptions {
        client_cert: Some(ClientCert {
            cert: cert_file.clone(),
            key: key.into(),
        }),
        ..opts(&ca_file)
    };
    let err = with_client(&key_file).connector().err().unwrap().to_string();
    assert!(
        err.starts_with(&format!("sslkey {} does not exist", key_file.display())),
        "{err}"
    );
    std::fs::write(&key_file, ca_key.serialize_pem()).unwrap();
    // The tests may run as root, owning the file: then 0640 is allowed.
    let as_root = unsafe { libc::geteuid() } == 0;
    let limit = if as_root {
        "0640 or less (u=rw,g=r) when owned by root"
    } else {
        "0600 or less (u=rw)"
    };
    for (mode, ok) in [
        (0o644, false),
        (0o640, as_root),
        (0o660, false),
        (0o604, false),
        (0o600, true),
        (0o400, true),
    ] {
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode)).unwrap();
        let got = with_client(&key_file).connector().err().map(|e| e.to_string());
        match (ok, got) {
            (true, None) => {}
            (false, Some(err)) => assert_eq!(
                err,
                format!(
                    "sslkey {} has permissions {mode:04o}: must be {limit}",
                    key_file.display()
                )
            ),
            (ok, got) => panic!("{mode:o}: expected ok={ok}, got {got:?}"),
        }
    }
    assert!(opts(&ca_file).connector().is_ok());
    // A directory (or any other non-regular file) is not a key.
    let err = with_client(dir.path()).connector().err().unwrap().to_string();
    assert_eq!(
        err,
        format!("sslkey {} is not a regular file", dir.path().display())
    );
}

#[test]
fn key_permissions_follow_libpq() {
    const ME: u32 = 1000;
    // (owner, mode, allowed)
    for (owner, mode, ok) in [
        // Root-owned: 0640 or less, for a group-mounted secret.
        (0, 0o100640, true),
        (0, 0o100600, true),
        (0, 0o100440, true),
        (0, 0o100660, false),
        (0, 0o100650, false),
        (0, 0o100644, false),
        (0, 0o100604, false),
        // Owned by the user, or by another one: 0600 or less.
        (ME, 0o100600, true),
        (ME, 0o100400, true),
        (ME, 0o100640, false),
        (ME, 0o100604, false),
        (ME, 0o100700, true),
        (2000, 0o100600, true),
        (2000, 0o100640, false),
        (2000, 0o100644, false),
    ] {
        let got = key_permissions(owner, ME, mode, true);
        assert_eq!(got.is_ok(), ok, "owner {owner} mode {mode:o}: {got:?}");
    }
    assert_eq!(
        key_permissions(2000, ME, 0o100644, true).unwrap_err(),
        "has permissions 0644 (owned by uid 2000): must be 0600 or less (u=rw)"
    );
    assert_eq!(
        key_permissions(0, 0, 0o100644, true).unwrap_err(),
        "has permissions 0644: must be 0640 or less (u=rw,g=r) when owned by root"
    );
    // As root, a root-owned 0640 key is fine; a user's 0640 key is not.
    assert!(key_permissions(0, 0, 0o100640, true).is_ok());
    assert!(key_permissions(ME, 0, 0o100640, true).is_err());
    assert_eq!(
        key_permissions(ME, ME, 0o600, false).unwrap_err(),
        "is not a regular file"
    );
}

#[test]
fn home_falls_back_to_the_passwd_entry() {
    let passwd = home(&["root.crt", "root.crl"]);
    let pgdir = passwd.path().join(".postgresql");
    // No HOME, or an empty one: the passwd entry's home directory.
    for env in [vec![], vec![("HOME", "")]] {
        let got = resolve_with_passwd("sslmode=disable", &env, Some(passwd.path())).unwrap();
        assert_eq!(
            got.root_cert,
            Some(RootCert::File(pgdir.join("root.crt"))),
            "{env:?}"
        );
    }
    // HOME wins when set.
    let other = home(&[]);
    let got = resolve_with_passwd(
        "sslmode=require",
        &[("HOME", other.path().to_str().unwrap())],
        Some(passwd.path()),
    )
    .unwrap();
    assert_eq!(got.root_cert, None);
    // The real lookup finds the effective user's entry.
    assert!(passwd_home().is_some());
}

#[test]
fn a_default_crl_is_refused_when_verifying() {
    let with_crl = home(&["root.crt", "root.crl"]);
    let h = with_crl.path().to_str().unwrap();
    for mode in ["require", "verify-ca", "prefer"] {
        let err = resolve(&format!("sslmode={mode}"), &[("HOME", h)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("root.crl exists, and certificate revocation lists (CRLs) are not supported"),
            "{mode}: {err}"
        );
    }
    // Without a root CA (nothing verified), or without TLS, it is not read.
    assert!(resolve("sslmode=disable", &[("HOME", h)]).is_ok());
    let crl_only = home(&["root.crl"]);
    assert!(resolve("sslmode=require", &[("HOME", crl_only.path().to_str().unwrap())]).is_ok());
}

#[test]
fn no_root_ca_under_verification_fails_closed() {
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
        let opts = TlsOptions {
            mode,
            root_cert: None,
            client_cert: None,
        };
        let err = opts.connector().err().unwrap().to_string();
        assert!(err.contains("no root CA is set"), "{err}");
    }
}
