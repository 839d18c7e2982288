//! libpq conninfo strings, in the two forms libpq takes: `key=value`
//! pairs (values optionally single-quoted, `\` escapes) and
//! `postgresql://` URLs, parsed here the way libpq parses them
//! (fe-connect.c: conninfo_parse, conninfo_uri_parse_options).
//!
//! This is the only parser: tokio-postgres gets the settings it knows back
//! as a `key='value'` string written here, without the TLS settings, so it
//! cannot read a setting differently (a `?` in a URL's password, a trailing
//! `\`) and apply a TLS mode of its own.

/// The TLS settings of a conninfo string: libpq's `sslmode`,
/// `sslrootcert`, `sslcert` and `sslkey` (fe-connect.c, PQconninfoOptions),
/// and `sslcrl`, `sslcrldir`, kept only to be refused (CRLs are not
/// supported).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsParams {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    pub sslcrl: Option<String>,
    pub sslcrldir: Option<String>,
}

impl TlsParams {
    /// Takes `key`'s value if it is one of the TLS settings.
    fn take(&mut self, key: &str, value: &str) -> bool {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "sslcrl" => &mut self.sslcrl,
            "sslcrldir" => &mut self.sslcrldir,
            _ => return false,
        };
        *slot = Some(value.to_string());
        true
    }
}

/// The settings of `conninfo` in order, each key once (a later value
/// replaces an earlier one, as in libpq); a `postgresql://` or
/// `postgres://` URL or `key=value` pairs. `Err` says why it does not
/// parse.
pub fn parse(conninfo: &str) -> Result<Vec<(String, String)>, String> {
    let pairs = match ["postgresql://", "postgres://"]
        .iter()
        .find_map(|p| conninfo.strip_prefix(p))
    {
        Some(rest) => parse_url(rest)?,
        None => key_values(conninfo)?,
    };
    let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match out.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    Ok(out)
}

/// The rest of a URL after its scheme (conninfo_uri_parse_options):
/// `[user[:password]@][host][:port][,...][/dbname][?param=value&...]`.
fn parse_url(uri: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = uri;
    // The credentials end at the first `@` before any `/`: a password may
    // hold `?`, `:` or `#`.
    let cred_end = rest.find(['@', '/']);
    if let Some(at) = cred_end.filter(|&i| rest.as_bytes()[i] == b'@') {
        let creds = &rest[..at];
        let (user, password) = match creds.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (creds, None),
        };
        if !user.is_empty() {
            out.push(("user".into(), uri_decode(user)?));
        }
        if let Some(p) = password.filter(|p| !p.is_empty()) {
            out.push(("password".into(), uri_decode(p)?));
        }
        rest = &rest[at + 1..];
    }
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    let mut any_port = false;
    let terminator = loop {
        let (host, after) = if let Some(v6) = rest.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or("end of string reached when looking for matching \"]\" in IPv6 host address in URI")?;
            if end == 0 {
                return Err("IPv6 host address may not be empty in URI".into());
            }
            let after = &v6[end + 1..];
            if let Some(c) = after.chars().next().filter(|c| !":/?,".contains(*c)) {
                return Err(format!(
                    "unexpected character {c:?} in URI (expected \":\" or \"/\")"
                ));
            }
            (&v6[..end], after)
        } else {
            let end = rest.find([':', '/', '?', ',']).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        hosts.push(uri_decode(host)?);
        rest = after;
        if let Some(p) = rest.strip_prefix(':') {
            let end = p.find(['/', '?', ',']).unwrap_or(p.len());
            ports.push(uri_decode(&p[..end])?);
            any_port = true;
            rest = &p[end..];
        } else {
            ports.push(String::new());
        }
        match rest.chars().next() {
            Some(',') => rest = &rest[1..],
            other => break other,
        }
    };
    if hosts.iter().any(|h| !h.is_empty()) || hosts.len() > 1 {
        out.push(("host".into(), hosts.join(",")));
    }
    if any_port {
        out.push(("port".into(), ports.join(",")));
    }
    let query = match terminator {
        None => None,
        Some('?') => Some(&rest[1..]),
        Some(_) => {
            // `/dbname`, then perhaps `?params`.
            let path = &rest[1..];
            let (db, query) = match path.split_once('?') {
                Some((db, q)) => (db, Some(q)),
                None => (path, None),
            };
            if !db.is_empty() {
                out.push(("dbname".into(), uri_decode(db)?));
            }
            query
        }
    };
    if let Some(query) = query {
        // conninfo_uri_parse_params: every parameter needs exactly one `=`.
        for param in query.split('&') {
            let Some((k, v)) = param.split_once('=') else {
                return Err(format!(
                    "missing key/value separator \"=\" in URI query parameter: {param:?}"
                ));
            };
            if v.contains('=') {
                return Err(format!(
                    "extra key/value separator \"=\" in URI query parameter: {k:?}"
                ));
            }
            let (k, v) = (uri_decode(k)?, uri_decode(v)?);
            // libpq's JDBC compatibility: ssl=true means sslmode=require.
            if k == "ssl" && v == "true" {
                out.push(("sslmode".into(), "require".into()));
            } else {
                out.push((k, v));
            }
        }
    }
    Ok(out)
}

/// `%XX` escapes of a URL component (conninfo_uri_decode): a malformed
/// escape, `%00` or a result that is not UTF-8 is refused.
fn uri_decode(s: &str) -> Result<String, String> {
    let bad = || format!("invalid percent-encoded token: {s:?}");
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
            let byte = std::str::from_utf8(&hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)?;
            if byte == 0 {
                return Err(format!("forbidden value %00 in percent-encoded value: {s:?}"));
            }
            out.push(byte);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// A value quoted for a `key=value` conninfo string.
pub(crate) fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The pairs of a `key=value` conninfo string, in order (conninfo_parse):
/// a `\` escapes the next character (one at the very end is dropped, as
/// libpq does); a quoted value must be closed.
fn key_values(conninfo: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("missing \"=\" after {key:?} in connection info string"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted string in connection info string".into()),
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Splits `conninfo` into the settings for tokio-postgres, in order, and
/// the TLS settings. Every other `ssl*` setting is refused unless it asks
/// for what pgark does anyway (`sslsni=1`, `sslcertmode=allow`,
/// `sslcompression`, a minimum protocol of TLS 1.2 or lower): none may be
/// dropped or left to tokio-postgres. `sslnegotiation` is tokio-postgres's.
pub fn split_tls_params(conninfo: &str) -> Result<(Vec<(String, String)>, TlsParams), String> {
    let mut tls = TlsParams::default();
    let mut rest = Vec::new();
    for (key, value) in parse(conninfo)? {
        if tls.take(&key, &value) {
            continue;
        }
        let same_as_pgark = match key.as_str() {
            "sslsni" => value == "1",
            "sslcertmode" => value == "allow",
            // Never compressed (libpq 17 ignores it too).
            "sslcompression" => true,
            "ssl_min_protocol_version" => ["", "TLSv1", "TLSv1.1", "TLSv1.2"].contains(&value.as_str()),
            "ssl_max_protocol_version" => value.is_empty(),
            "sslnegotiation" => {
                rest.push((key, value));
                continue;
            }
            k if k.starts_with("ssl") || k == "requiressl" => false,
            _ => {
                rest.push((key, value));
                continue;
            }
        };
        if !same_as_pgark {
            return Err(format!(
                "{key}={value:?} is not supported (pgark uses TLS 1.2 or 1.3, sends the host name (SNI), \
                 a client certificate when one is given and the server asks, and reads only unencrypted keys)"
            ));
        }
    }
    Ok((rest, tls))
}

/// Settings as a `key='value'` conninfo string.
pub(crate) fn to_conninfo(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The parts of a libpq conninfo string this client understands, as a
/// conninfo string again: a standby's `primary_conninfo`, written by
/// `pg_basebackup -R`, also carries `passfile`, `gssencmode`,
/// `krbsrvname`, ... which tokio-postgres would refuse. Every setting that
/// bears on security stays, to be applied or refused: the TLS settings,
/// `channel_binding`, `target_session_attrs`, `load_balance_hosts`. `None`
/// if the string does not parse.
pub fn client_conninfo(conninfo: &str) -> Option<String> {
    const KNOWN: &[&str] = &[
        "host",
        "hostaddr",
        "port",
        "user",
        "password",
        "dbname",
        "application_name",
        "connect_timeout",
        "options",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_retries",
        "tcp_user_timeout",
        "channel_binding",
        "target_session_attrs",
        "load_balance_hosts",
        "sslmode",
        "sslnegotiation",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "sslcrldir",
        "sslpassword",
        "sslsni",
        "sslcertmode",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
    ];
    let pairs = parse(conninfo).ok()?;
    let kept: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| KNOWN.contains(&k.as_str()))
        .collect();
    Some(to_conninfo(&kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mode: Option<&str>, root: Option<&str>, cert: Option<&str>, key: Option<&str>) -> TlsParams {
        TlsParams {
            sslmode: mode.map(String::from),
            sslrootcert: root.map(String::from),
            sslcert: cert.map(String::from),
            sslkey: key.map(String::from),
            ..TlsParams::default()
        }
    }

    fn split(conninfo: &str) -> Result<(String, TlsParams), String> {
        split_tls_params(conninfo).map(|(rest, tls)| (to_conninfo(&rest), tls))
    }

    #[test]
    fn tls_settings_are_split_off_both_forms() {
        let cases: &[(&str, &str, TlsParams)] = &[
            ("host=db user=u", "host='db' user='u'", TlsParams::default()),
            (
                "host=db sslmode=verify-full sslrootcert='/etc/my ca.crt' user=u",
                "host='db' user='u'",
                params(Some("verify-full"), Some("/etc/my ca.crt"), None, None),
            ),
            (
                " sslcert = /c.crt sslkey=/k\\ ey sslmode=require",
                "",
                params(Some("require"), None, Some("/c.crt"), Some("/k ey")),
            ),
            (
                "postgresql://u@db:5432/postgres?sslmode=verify-ca&application_name=x&sslrootcert=%2Fetc%2Fca.crt",
                "user='u' host='db' port='5432' dbname='postgres' application_name='x'",
                params(Some("verify-ca"), Some("/etc/ca.crt"), None, None),
            ),
            (
                "postgres://db/x?sslcert=/c&sslkey=/k",
                "host='db' dbname='x'",
                params(None, None, Some("/c"), Some("/k")),
            ),
            ("postgres://db/x", "host='db' dbname='x'", TlsParams::default()),
            // A password holding `?`: the query starts after the host.
            (
                "postgresql://u:s3cr?t@db/postgres?sslmode=require",
                "user='u' password='s3cr?t' host='db' dbname='postgres'",
                params(Some("require"), None, None, None),
            ),
            // A trailing `\` is dropped, as libpq does; the mode is still ours.
            (
                "host=db sslmode=require\\",
                "host='db'",
                params(Some("require"), None, None, None),
            ),
            // Later values replace earlier ones (libpq); hosts do not add up.
            ("host=a host=b sslmode=disable sslmode=require", "host='b'", params(Some("require"), None, None, None)),
            (
                "postgresql://[::1]:5433,db2/d?ssl=true",
                "host='::1,db2' port='5433,' dbname='d'",
                params(Some("require"), None, None, None),
            ),
            ("postgresql://%2Frun%2Fpg/d", "host='/run/pg' dbname='d'", TlsParams::default()),
            // What pgark does anyway is accepted.
            ("host=db sslsni=1 sslcertmode=allow ssl_min_protocol_version=TLSv1.2", "host='db'", TlsParams::default()),
            ("host=db sslnegotiation=direct", "host='db' sslnegotiation='direct'", TlsParams::default()),
        ];
        for (input, rest, tls) in cases {
            let got = split(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((got.0.as_str(), &got.1), (*rest, tls), "{input}");
        }
        let crl = split("host=db sslcrl=/c.crl sslcrldir=/d").unwrap().1;
        assert_eq!(
            (crl.sslcrl.as_deref(), crl.sslcrldir.as_deref()),
            (Some("/c.crl"), Some("/d"))
        );
    }

    #[test]
    fn what_does_not_parse_or_is_not_supported_is_refused() {
        for (input, want) in [
            ("host='unterminated sslmode=require", "unterminated quoted string"),
            ("host", "missing \"=\" after \"host\""),
            ("postgres://db/x?sslrootcert=%zz", "invalid percent-encoded token"),
            ("postgres://db/x?sslmode", "missing key/value separator"),
            ("postgres://db/x?sslmode=a=b", "extra key/value separator"),
            ("postgres://db/x?a=%00", "%00"),
            ("postgres://[::1/x", "matching \"]\""),
            ("host=db sslsni=0", "sslsni=\"0\" is not supported"),
            ("host=db sslpassword=x", "sslpassword=\"x\" is not supported"),
            (
                "host=db ssl_min_protocol_version=TLSv1.3",
                "ssl_min_protocol_version",
            ),
            ("host=db sslcertmode=require", "sslcertmode"),
            ("host=db sslfoo=1", "sslfoo"),
            ("postgresql://db/x?requiressl=1", "requiressl"),
        ] {
            let err = split(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn primary_conninfo_keeps_what_the_client_understands() {
        let pc = "user=postgres passfile='/var/lib/postgresql/.pgpass' channel_binding=require \
                  host=/tmp/pg port=5432 sslmode=prefer sslsni=1 sslrootcert=/r.crt gssencmode=prefer \
                  sslcrl=/r.crl target_session_attrs=read-write sslnegotiation=postgres \
                  load_balance_hosts=random application_name='my \\'app'";
        let got = client_conninfo(pc).unwrap();
        assert_eq!(
            got,
            "user='postgres' channel_binding='require' host='/tmp/pg' port='5432' sslmode='prefer' \
             sslsni='1' sslrootcert='/r.crt' sslcrl='/r.crl' target_session_attrs='read-write' \
             sslnegotiation='postgres' load_balance_hosts='random' application_name='my \\'app'"
        );
        assert_eq!(client_conninfo("host"), None);
        assert_eq!(client_conninfo("host='unterminated"), None);
        assert_eq!(client_conninfo("").as_deref(), Some(""));
        assert_eq!(
            client_conninfo("postgresql://u@db/d?passfile=/p&channel_binding=require").as_deref(),
            Some("user='u' host='db' dbname='d' channel_binding='require'")
        );
    }
}
