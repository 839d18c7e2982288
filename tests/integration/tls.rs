//! Connecting to PostgreSQL over TLS (issue 18): a real server with
//! `ssl = on` whose pg_hba.conf takes TCP connections only with TLS
//! (`hostssl`; one role by client certificate, one by SCRAM), certificates
//! made here (a CA, the server's for localhost and 127.0.0.1, a client's,
//! and a second CA that signed nothing of the server's). pgark runs as the
//! server's unprivileged user with its own HOME (so `~/.postgresql` is the
//! test's), over TCP, with libpq's sslmode, sslrootcert, sslcert and sslkey
//! in the conninfo or in PGSSL* variables. The role `plainuser` may also
//! connect without TLS, for what `prefer`, `allow` and `hostaddr` do
//! without it; which connection used TLS is read from the server log by
//! each connection's application_name.

use crate::common::*;
use pgark_testkit::pg::{
    chown_to_pg_user, command_as_pg_user, run_capture, scratch_dir, ClusterOptions, PgCluster, PgInstall,
};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// PEM files of the test's certificates, in a directory the server's user
/// owns.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Certs {
        let dir = scratch_dir("tls-certs");
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            (p.self_signed(&key).unwrap(), key)
        };
        let (ca_cert, ca_key) = ca("pgark test CA");
        let (other_ca, _) = ca("another CA");
        // A leaf signed by the CA, valid from `from` to `to` (years).
        let leaf_in = |names: Vec<String>, cn: &str, usage, (from, to): (i32, i32)| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![usage];
            p.not_before = date_time_ymd(from, 1, 1);
            p.not_after = date_time_ymd(to, 1, 1);
            (p.signed_by(&key, &ca_cert, &ca_key).unwrap(), key)
        };
        let leaf = |names, cn: &str, usage| leaf_in(names, cn, usage, (1975, 4096));
        let server_names = || vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (server, server_key) = leaf(server_names(), "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let (expired, expired_key) = leaf_in(
            server_names(),
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
            (2000, 2001),
        );
        let (future, future_key) = leaf_in(
            server_names(),
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
            (4000, 4096),
        );
        let (client, client_key) = leaf(vec![], "certuser", ExtendedKeyUsagePurpose::ClientAuth);
        let files = [
            ("ca.crt", ca_cert.pem()),
            ("other-ca.crt", other_ca.pem()),
            ("server.crt", server.pem()),
            ("server.key", server_key.serialize_pem()),
            ("client.crt", client.pem()),
            ("client.key", client_key.serialize_pem()),
            ("expired.crt", expired.pem()),
            ("expired.key", expired_key.serialize_pem()),
            ("future.crt", future.pem()),
            ("future.key", future_key.serialize_pem()),
        ];
        for (name, pem) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        chown_to_pg_user(dir.path()).unwrap();
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

/// A running cluster archiving into its repository, serving TLS, TCP
/// connections only over TLS but for the role `plainuser`, which may also
/// connect without.
struct TlsServer {
    src: ArchivingCluster,
    certs: Certs,
}

impl TlsServer {
    fn start() -> TlsServer {
        let certs = Certs::make();
        let src = ArchivingCluster::start("log_connections = on\n");
        let c = &src.cluster;
        c.psql(
            "create role certuser login superuser; create role scramuser login password 'secret'; \
             create role plainuser login superuser",
        )
        .unwrap();
        c.append_conf(&format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n",
            certs.arg("server.crt"),
            certs.arg("server.key"),
            certs.arg("ca.crt")
        ))
        .unwrap();
        // Overwritten in place: the file keeps its owner.
        std::fs::write(
            c.data_dir().join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all certuser 127.0.0.1/32 cert\n\
             hostssl all scramuser 127.0.0.1/32 scram-sha-256\n\
             hostssl all all 127.0.0.1/32 trust\n\
             host all plainuser 127.0.0.1/32 trust\n",
        )
        .unwrap();
        c.restart().unwrap_or_else(|e| panic!("{e}"));
        // The repository exists (wal-push made it) before pgark is asked.
        src.archive_current_wal();
        TlsServer { src, certs }
    }

    /// Serves `name`.crt and `name`.key from now on (a reload).
    fn serve_certificate(&self, name: &str) {
        let c = &self.src.cluster;
        c.append_conf(&format!(
            "ssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            self.certs.arg(&format!("{name}.crt")),
            self.certs.arg(&format!("{name}.key"))
        ))
        .unwrap();
        c.reload().unwrap();
        std::thread::sleep(Duration::from_secs(2));
    }

    /// `host=HOST port=PORT user=postgres dbname=postgres EXTRA`.
    fn conninfo(&self, host: &str, extra: &str) -> String {
        format!(
            "host={host} port={} user={} dbname=postgres {extra}",
            self.src.cluster.port(),
            self.src.cluster.superuser()
        )
    }
}

/// pgark as the server's user with `home` as HOME and `env` set.
fn pgark_in(src: &ArchivingCluster, home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = command_as_pg_user(&src.bin);
    cmd.env("HOME", home).env("PGARK_REPO", src.repo.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args);
    run_capture(&mut cmd, None, Duration::from_secs(600)).expect("pgark runs")
}

/// `status --json --no-fail --pg-conn CONNINFO`: exit 0 and the server's
/// archiver statistics in the output mean pgark connected and asked.
fn status_over(src: &ArchivingCluster, home: &Path, env: &[(&str, &str)], conninfo: &str) -> Output {
    pgark_in(
        src,
        home,
        env,
        &["status", "--json", "--no-fail", "--pg-conn", conninfo],
    )
}

#[track_caller]
fn assert_connected(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    assert!(
        json["archiver"].is_object(),
        "{what}: no server statistics in {json}"
    );
}

#[track_caller]
fn assert_refused(out: &Output, what: &str, wants: &[&str]) {
    assert_eq!(out.status.code(), Some(8), "{what}: {}", stderr(out));
    let err = stderr(out);
    eprintln!("{what}: {err}");
    for want in wants {
        assert!(err.contains(want), "{what}: {want:?} not in:\n{err}");
    }
}

/// A local TCP port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server log's `connection authorized` line of `application_name`.
#[track_caller]
fn authorized_line(cluster: &PgCluster, application_name: &str) -> String {
    let log = cluster.log();
    let want = format!("application_name={application_name}");
    log.lines()
        .find(|l| l.contains("connection authorized") && l.split_whitespace().any(|w| w == want))
        .unwrap_or_else(|| panic!("no connection authorized for {application_name} in the server log"))
        .to_string()
}

/// An empty HOME for pgark (no `~/.postgresql`), owned by the server's user.
fn empty_home() -> tempfile::TempDir {
    scratch_dir("tls-home")
}

#[test]
fn tls_require_verify_ca_and_verify_full_connect_and_back_up() {
    let server = TlsServer::start();
    let (src, certs) = (&server.src, &server.certs);
    let home = empty_home();
    let ca = certs.arg("ca.crt");
    let cases = [
        ("require, no CA", server.conninfo("127.0.0.1", "sslmode=require")),
        (
            "verify-ca",
            server.conninfo("127.0.0.1", &format!("sslmode=verify-ca sslrootcert={ca}")),
        ),
        (
            "verify-full by IP address",
            server.conninfo("127.0.0.1", &format!("sslmode=verify-full sslrootcert={ca}")),
        ),
        (
            "verify-full by name",
            server.conninfo("localhost", &format!("sslmode=verify-full sslrootcert={ca}")),
        ),
        (
            "verify-ca does not check the name",
            server.conninfo(
                "db.invalid",
                &format!("hostaddr=127.0.0.1 sslmode=verify-ca sslrootcert={ca}"),
            ),
        ),
        (
            "URL form",
            format!(
                "postgresql://{}@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
                src.cluster.superuser(),
                src.cluster.port()
            ),
        ),
        // hostaddr alone is a TCP host: TLS as sslmode says, not plain
        // (which pg_hba.conf would let plainuser do).
        (
            "hostaddr alone",
            format!(
                "hostaddr=127.0.0.1 port={} user=plainuser dbname=postgres sslmode=require \
                 application_name=pgark-hostaddr",
                src.cluster.port(),
            ),
        ),
        (
            "the first host down, the second used",
            format!(
                "host=127.0.0.1,localhost port={},{} user={} dbname=postgres sslmode=verify-full sslrootcert={ca}",
                closed_port(),
                src.cluster.port(),
                src.cluster.superuser()
            ),
        ),
        (
            "SCRAM with channel binding",
            format!(
                "host=127.0.0.1 port={} user=scramuser password=secret dbname=postgres sslmode=require \
                 channel_binding=require",
                src.cluster.port()
            ),
        ),
    ];
    for (what, conninfo) in &cases {
        assert_connected(&status_over(src, home.path(), &[], conninfo), what);
    }
    // Over TCP with TLS, not through a default socket directory.
    let line = authorized_line(&src.cluster, "pgark-hostaddr");
    assert!(line.contains("SSL enabled"), "hostaddr alone: {line}");
    // The same from the environment.
    let env = [
        ("PGHOST", "localhost"),
        ("PGPORT", &src.cluster.port().to_string()),
        ("PGUSER", src.cluster.superuser()),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", &ca),
    ];
    assert_connected(
        &pgark_in(src, home.path(), &env, &["status", "--json", "--no-fail"]),
        "PGSSLMODE=verify-full",
    );

    // A whole backup over verify-full with a client certificate (the
    // `cert` line of pg_hba.conf), then checked.
    let conninfo = format!(
        "host=localhost port={} user=certuser dbname=postgres sslmode=verify-full sslrootcert={ca} \
         sslcert={} sslkey={}",
        src.cluster.port(),
        certs.arg("client.crt"),
        certs.arg("client.key")
    );
    let pgdata = src.cluster.data_dir().to_str().unwrap().to_string();
    let out = pgark_in(
        src,
        home.path(),
        &[],
        &["backup-push", &pgdata, "--pg-conn", &conninfo],
    );
    assert_code(&out, 0);
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(name.starts_with("base_"), "backup-push printed {name:?}");
    assert_code(&pgark_in(src, home.path(), &[], &["verify", &name]), 0);
}

#[test]
fn tls_refusals_name_the_cause_and_write_nothing() {
    let server = TlsServer::start();
    let (src, certs) = (&server.src, &server.certs);
    let home = empty_home();
    let other = certs.arg("other-ca.crt");
    let pgdata = src.cluster.data_dir().to_str().unwrap().to_string();
    let repo_files = || {
        files_below(src.repo.path())
            .into_iter()
            .filter(|f| !f.starts_with("wal/"))
            .collect::<Vec<_>>()
    };
    let before = repo_files();

    // A backup over verify-full with the wrong CA: refused before anything
    // is written.
    let conninfo = server.conninfo("127.0.0.1", &format!("sslmode=verify-full sslrootcert={other}"));
    let out = pgark_in(
        src,
        home.path(),
        &[],
        &["backup-push", &pgdata, "--pg-conn", &conninfo],
    );
    assert_refused(
        &out,
        "verify-full, wrong CA",
        &[
            "cannot connect to PostgreSQL at 127.0.0.1 port",
            &format!("the server's certificate is not signed by the CA in {other} (sslmode=verify-full)"),
        ],
    );
    assert_eq!(
        repo_files(),
        before,
        "a refused backup-push left something in the repository"
    );

    let ca = certs.arg("ca.crt");
    let key_0644 = home.path().join("client-0644.key");
    std::fs::copy(certs.path("client.key"), &key_0644).unwrap();
    std::fs::set_permissions(&key_0644, std::fs::Permissions::from_mode(0o644)).unwrap();
    chown_to_pg_user(&key_0644).unwrap();
    let missing = certs.path("missing.crt");
    let closed = closed_port();
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "verify-ca, wrong CA",
            server.conninfo("127.0.0.1", &format!("sslmode=verify-ca sslrootcert={other}")),
            vec![format!("the server's certificate is not signed by the CA in {other} (sslmode=verify-ca)")],
        ),
        (
            "every host fails: each one reported",
            format!(
                "host=127.0.0.1,localhost port={closed},{} user={} dbname=postgres sslmode=verify-full \
                 sslrootcert={other}",
                src.cluster.port(),
                src.cluster.superuser()
            ),
            vec![
                "cannot connect to PostgreSQL at any of its 2 hosts (sslmode=verify-full):".into(),
                format!("\n  at 127.0.0.1 port {closed} as user {}: error connecting to server", src.cluster.superuser()),
                format!(
                    "\n  at localhost port {} as user {}: the server's certificate is not signed by the CA in {other}",
                    src.cluster.port(),
                    src.cluster.superuser()
                ),
            ],
        ),
        (
            "verify-full, another host name",
            server.conninfo(
                "db.invalid",
                &format!("hostaddr=127.0.0.1 sslmode=verify-full sslrootcert={ca}"),
            ),
            vec![
                "the server's certificate is not issued for host db.invalid (it names localhost, 127.0.0.1)"
                    .into(),
            ],
        ),
        (
            "require with the wrong CA",
            server.conninfo("127.0.0.1", &format!("sslmode=require sslrootcert={other}")),
            vec![format!("not signed by the CA in {other} (sslmode=require)")],
        ),
        (
            "disable against hostssl only",
            server.conninfo("127.0.0.1", "sslmode=disable"),
            vec![
                "FATAL: no pg_hba.conf entry for host \"127.0.0.1\"".into(),
                "no encryption".into(),
            ],
        ),
        (
            "a missing root certificate",
            server.conninfo(
                "127.0.0.1",
                &format!("sslmode=verify-ca sslrootcert={}", missing.display()),
            ),
            vec![format!("sslrootcert {} does not exist", missing.display())],
        ),
        (
            "a key others may read",
            server.conninfo(
                "127.0.0.1",
                &format!(
                    "user=certuser sslcert={} sslkey={}",
                    certs.arg("client.crt"),
                    key_0644.display()
                ),
            ),
            vec![format!(
                "sslkey {} has permissions 0644: must be 0600 or less (u=rw)",
                key_0644.display()
            )],
        ),
        (
            "the cert line without a client certificate",
            server.conninfo("127.0.0.1", "user=certuser sslmode=require"),
            vec!["connection requires a valid client certificate".into()],
        ),
    ];
    for (what, conninfo, wants) in &cases {
        let wants: Vec<&str> = wants.iter().map(String::as_str).collect();
        assert_refused(&status_over(src, home.path(), &[], conninfo), what, &wants);
    }

    // libpq's rule: ~/.postgresql/root.crt makes require check the chain.
    let pgdir = home.path().join(".postgresql");
    std::fs::create_dir(&pgdir).unwrap();
    std::fs::copy(certs.path("other-ca.crt"), pgdir.join("root.crt")).unwrap();
    chown_to_pg_user(&pgdir).unwrap();
    assert_refused(
        &status_over(
            src,
            home.path(),
            &[("PGSSLMODE", "require")],
            &server.conninfo("127.0.0.1", ""),
        ),
        "require with a wrong ~/.postgresql/root.crt",
        &[&format!(
            "not signed by the CA in {}",
            pgdir.join("root.crt").display()
        )],
    );
    assert_eq!(repo_files(), before);

    // prefer does not go without TLS after a refusal that is not TLS's:
    // the server does not allow writes (target_session_attrs).
    src.cluster
        .psql("create role rouser login superuser; alter role rouser set default_transaction_read_only = on")
        .unwrap();
    let plain_home = empty_home();
    let out = status_over(
        src,
        plain_home.path(),
        &[],
        &server.conninfo(
            "127.0.0.1",
            "user=rouser sslmode=prefer target_session_attrs=read-write",
        ),
    );
    assert_refused(
        &out,
        "prefer, read-only server",
        &["database does not allow writes"],
    );
    assert!(!stderr(&out).contains("without TLS"), "{}", stderr(&out));

    // verify-ca checks the validity dates: an expired certificate, one
    // not valid yet, both signed by the right CA.
    let verify_ca = server.conninfo("127.0.0.1", &format!("sslmode=verify-ca sslrootcert={ca}"));
    for (cert, want) in [
        (
            "expired",
            "the server's certificate has expired (sslmode=verify-ca)",
        ),
        (
            "future",
            "the server's certificate is not valid yet (sslmode=verify-ca)",
        ),
    ] {
        server.serve_certificate(cert);
        assert_refused(
            &status_over(src, plain_home.path(), &[], &verify_ca),
            cert,
            &[want],
        );
    }
    server.serve_certificate("server");
    assert_connected(
        &status_over(src, plain_home.path(), &[], &verify_ca),
        "verify-ca, valid again",
    );
}

#[test]
fn tls_prefer_allow_and_default_client_certificates() {
    let server = TlsServer::start();
    let (src, certs) = (&server.src, &server.certs);
    let home = empty_home();
    // prefer (the default) and allow reach a server that takes TCP only
    // over TLS: each of them used TLS.
    for (mode, app) in [
        ("", "pgark-default"),
        ("sslmode=prefer", "pgark-prefer"),
        ("sslmode=allow", "pgark-allow"),
    ] {
        assert_connected(
            &status_over(
                src,
                home.path(),
                &[],
                &server.conninfo("127.0.0.1", &format!("{mode} application_name={app}")),
            ),
            app,
        );
        let line = authorized_line(&src.cluster, app);
        assert!(line.contains("SSL enabled"), "{app} did not use TLS: {line}");
    }
    // prefer goes without TLS when TLS fails (a wrong CA), to a role the
    // server lets in without.
    let other = certs.arg("other-ca.crt");
    assert_connected(
        &status_over(
            src,
            home.path(),
            &[],
            &server.conninfo(
                "127.0.0.1",
                &format!("user=plainuser sslrootcert={other} application_name=pgark-fallback"),
            ),
        ),
        "prefer after a TLS failure",
    );
    let line = authorized_line(&src.cluster, "pgark-fallback");
    assert!(!line.contains("SSL enabled"), "{line}");
    // A host name a certificate cannot be checked against (a space):
    // prefer goes without TLS, as libpq would.
    let out = status_over(
        src,
        home.path(),
        &[],
        &format!(
            "host='db name' hostaddr=127.0.0.1 port={} user=plainuser dbname=postgres \
             application_name=pgark-badname",
            src.cluster.port()
        ),
    );
    assert_connected(&out, "prefer with a host name TLS cannot use");
    assert!(!authorized_line(&src.cluster, "pgark-badname").contains("SSL enabled"));
    // A default key that cannot be used is read only when TLS is: allow
    // connects without it; prefer gives up TLS (as libpq).
    let bad_home = empty_home();
    let bad_pgdir = bad_home.path().join(".postgresql");
    std::fs::create_dir(&bad_pgdir).unwrap();
    std::fs::copy(certs.path("client.crt"), bad_pgdir.join("postgresql.crt")).unwrap();
    std::fs::copy(certs.path("client.key"), bad_pgdir.join("postgresql.key")).unwrap();
    std::fs::set_permissions(
        bad_pgdir.join("postgresql.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    chown_to_pg_user(&bad_pgdir).unwrap();
    for (mode, app) in [("allow", "pgark-badkey-allow"), ("prefer", "pgark-badkey-prefer")] {
        assert_connected(
            &status_over(
                src,
                bad_home.path(),
                &[],
                &server.conninfo(
                    "127.0.0.1",
                    &format!("user=plainuser sslmode={mode} application_name={app}"),
                ),
            ),
            app,
        );
        assert!(!authorized_line(&src.cluster, app).contains("SSL enabled"));
    }
    // The client certificate and key in ~/.postgresql, used without being
    // named (and root.crt with them: require checks the chain).
    let pgdir = home.path().join(".postgresql");
    std::fs::create_dir(&pgdir).unwrap();
    for (from, to) in [
        ("client.crt", "postgresql.crt"),
        ("client.key", "postgresql.key"),
        ("ca.crt", "root.crt"),
    ] {
        std::fs::copy(certs.path(from), pgdir.join(to)).unwrap();
    }
    chown_to_pg_user(&pgdir).unwrap();
    assert_connected(
        &status_over(
            src,
            home.path(),
            &[("PGSSLMODE", "require")],
            &server.conninfo("127.0.0.1", "user=certuser"),
        ),
        "client certificate from ~/.postgresql",
    );
    // PGSSLCERT and PGSSLKEY name them.
    let env = [
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", &certs.arg("ca.crt")),
        ("PGSSLCERT", &certs.arg("client.crt")),
        ("PGSSLKEY", &certs.arg("client.key")),
    ];
    assert_connected(
        &status_over(
            src,
            empty_home().path(),
            &env,
            &server.conninfo("localhost", "user=certuser"),
        ),
        "client certificate from PGSSLCERT, PGSSLKEY",
    );
}

#[test]
fn tls_required_from_a_server_without_tls() {
    let install = PgInstall::detect().expect("PostgreSQL is installed");
    let cluster = PgCluster::start_new(ClusterOptions::new(install)).unwrap_or_else(|e| panic!("{e}"));
    let bin = pgark_testkit::pg::expose_binary(&pgark_bin());
    let repo = scratch_dir("repo");
    let home = empty_home();
    let conninfo = |mode: &str| {
        format!(
            "host=127.0.0.1 port={} user={} dbname=postgres sslmode={mode}",
            cluster.port(),
            cluster.superuser()
        )
    };
    let pgdata = cluster.data_dir().to_str().unwrap().to_string();
    let run = |mode: &str| {
        let mut cmd = command_as_pg_user(&bin);
        cmd.env("HOME", home.path()).env("PGARK_REPO", repo.path()).args([
            "backup-push",
            &pgdata,
            "--archive-timeout",
            "0",
            "--pg-conn",
            &conninfo(mode),
        ]);
        run_capture(&mut cmd, None, Duration::from_secs(600)).expect("pgark runs")
    };
    assert_refused(
        &run("require"),
        "require",
        &["server does not support TLS (sslmode=require)"],
    );
    assert!(
        files_below(repo.path()).is_empty(),
        "{:?}",
        files_below(repo.path())
    );
    // prefer goes without.
    assert_code(&run("prefer"), 0);
}
