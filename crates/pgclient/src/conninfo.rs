//! libpq conninfo strings, in the two forms libpq takes: `key=value`
//! pairs (values optionally single-quoted, `\\` escapes) and
//! `postgresql://` URLs.
//!
//! tokio-postgres parses both but refuses keys it does not know, and knows
//! none of libpq's TLS file settings; [`split_tls_params`] takes those out
//! (and `sslmode`, which tokio-postgres only knows in part) before the rest
//! goes to it.

/// The TLS settings of a conninfo string: libpq's `sslmode`,
/// `sslrootcert`, `sslcert` and `sslkey` (fe-connect.c, PQconninfoOptions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsParams {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

impl TlsParams {
    /// Takes `key`'s value if it is one of the TLS settings.
    fn take(&mut self, key: &str, value: &str) -> bool {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            _ => return false,
        };
        *slot = Some(value.to_string());
        true
    }
}

/// Splits the TLS settings off `conninfo`: the rest, for tokio-postgres,
/// and the settings. A string that does not parse is returned whole, for
/// tokio-postgres to say what is wrong with it.
pub fn split_tls_params(conninfo: &str) -> (String, TlsParams) {
    let mut tls = TlsParams::default();
    let trimmed = conninfo.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        let Some((base, query)) = trimmed.split_once('?') else {
            return (conninfo.to_string(), tls);
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (percent_decode(k), percent_decode(v)) {
                (Some(k), Some(v)) if tls.take(&k, &v) => {}
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, tls);
    }
    let Some(pairs) = key_values(conninfo) else {
        return (conninfo.to_string(), tls);
    };
    if !pairs.iter().any(|(k, _)| TlsParams::default().take(k, "")) {
        return (conninfo.to_string(), tls);
    }
    let rest: Vec<String> = pairs
        .iter()
        .filter(|(k, v)| !tls.take(k, v))
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    (rest.join(" "), tls)
}

/// `%XX` escapes of a URL component; `None` if one is malformed or the
/// result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// A value quoted for a `key=value` conninfo string.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The pairs of a `key=value` conninfo string, in order; `None` if it does
/// not parse.
pub fn key_values(conninfo: &str) -> Option<Vec<(String, String)>> {
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
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next()?);
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
    Some(out)
}

/// The parts of a libpq conninfo string this client understands, as a
/// conninfo string again: a standby's `primary_conninfo`, written by
/// `pg_basebackup -R`, also carries `passfile`, `channel_binding`,
/// `sslsni`, `gssencmode`, ... which it would refuse. `None` if the string
/// does not parse.
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
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
    ];
    let pairs = key_values(conninfo)?;
    let kept: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| KNOWN.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    Some(kept.join(" "))
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
        }
    }

    #[test]
    fn tls_settings_are_split_off_both_forms() {
        let cases: &[(&str, &str, TlsParams)] = &[
            ("host=db user=u", "host=db user=u", TlsParams::default()),
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
                "postgresql://u@db:5432/postgres?application_name=x",
                params(Some("verify-ca"), Some("/etc/ca.crt"), None, None),
            ),
            (
                "postgres://db/x?sslcert=/c&sslkey=/k",
                "postgres://db/x",
                params(None, None, Some("/c"), Some("/k")),
            ),
            ("postgres://db/x", "postgres://db/x", TlsParams::default()),
            // Not parsed here: left whole for tokio-postgres to refuse.
            ("host='unterminated sslmode=require", "host='unterminated sslmode=require", TlsParams::default()),
            ("postgres://db/x?sslrootcert=%zz", "postgres://db/x?sslrootcert=%zz", TlsParams::default()),
        ];
        for (input, rest, tls) in cases {
            let got = split_tls_params(input);
            assert_eq!((got.0.as_str(), &got.1), (*rest, tls), "{input}");
        }
    }

    #[test]
    fn primary_conninfo_keeps_what_the_client_understands() {
        let pc = "user=postgres passfile='/var/lib/postgresql/.pgpass' channel_binding=prefer \
                  host=/tmp/pg port=5432 sslmode=prefer sslsni=1 sslrootcert=/r.crt gssencmode=prefer \
                  application_name='my \\'app'";
        let got = client_conninfo(pc).unwrap();
        assert_eq!(
            got,
            "user='postgres' host='/tmp/pg' port='5432' sslmode='prefer' sslrootcert='/r.crt' \
             application_name='my \\'app'"
        );
        assert_eq!(client_conninfo("host"), None);
        assert_eq!(client_conninfo("host='unterminated"), None);
        assert_eq!(client_conninfo("").as_deref(), Some(""));
    }
}
