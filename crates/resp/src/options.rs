//! Connection options, `redis://` / `rediss://` URLs and the redacting [`Password`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::decode::Limits;
use crate::error::Error;

/// A password that never shows itself in `Debug` or `Display` output (both print `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password itself, for sending it to the server. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Password {
        Password(s.to_owned())
    }
}

impl From<String> for Password {
    fn from(s: String) -> Password {
        Password(s)
    }
}

/// Which RESP version the connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2: no `HELLO`; credentials go with `AUTH`. Works with every server version.
    #[default]
    Resp2,
    /// RESP3: the handshake sends `HELLO 3` (with `AUTH` and `SETNAME` inside it). Redis >= 6.
    Resp3,
}

/// TLS settings for a `rediss://` connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) that sign the server's certificate. When `None`, the
    /// system bundle (`/etc/ssl/certs/ca-certificates.crt` and similar) is used.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require client certificates.
    pub cert_file: Option<PathBuf>,
    /// PEM private key matching `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate (no chain or name check). For tests only.
    pub insecure_skip_verify: bool,
    /// The name sent as SNI and checked against the certificate; defaults to the host.
    pub server_name: Option<String>,
}

/// Everything needed to open a [`crate::Connection`]. `Debug` shows the password as `***`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectOptions {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ACL user name; `None` authenticates as `default`.
    pub username: Option<String>,
    /// Password; `None` skips authentication.
    pub password: Option<Password>,
    /// Database selected after connecting (`SELECT` is sent when not 0).
    pub db: i64,
    /// RESP version to speak.
    pub protocol: Protocol,
    /// Name set with `CLIENT SETNAME` (or inside `HELLO`).
    pub client_name: Option<String>,
    /// Deadline for the TCP connect, the TLS handshake and the `HELLO`/`AUTH`/`SELECT` exchange.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes from the server while a reply is expected;
    /// `None` waits for ever.
    pub read_timeout: Option<Duration>,
    /// TCP keepalive: after this long without traffic the kernel probes the peer (every
    /// `tcp_keepalive` again, three probes), so a connection to a host that vanished (a partition, a
    /// powered-off machine) fails instead of hanging. `None` (the default here) leaves the socket's
    /// keepalive off; the sentinel pool and the cluster client turn it on by default.
    pub tcp_keepalive: Option<Duration>,
    /// TLS settings; `None` is plain TCP.
    pub tls: Option<TlsOptions>,
    /// Decoder limits.
    pub limits: Limits,
}

impl ConnectOptions {
    /// Options for `host:port` with no credentials, RESP2, db 0, a 5 s connect timeout, no
    /// read timeout and no TCP keepalive.
    pub fn new(host: impl Into<String>, port: u16) -> ConnectOptions {
        ConnectOptions {
            host: host.into(),
            port,
            username: None,
            password: None,
            db: 0,
            protocol: Protocol::Resp2,
            client_name: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: None,
            tcp_keepalive: None,
            tls: None,
            limits: Limits::default(),
        }
    }

    /// Parses `redis://[[user][:password]@]host[:port][/db][?query]` or the same with
    /// `rediss://` (TLS). User and password are percent-decoded; an IPv6 host goes in brackets.
    /// The port defaults to 6379. Query keys: `protocol` (`resp2`/`2`/`resp3`/`3`), `db`,
    /// `client_name`, and for TLS `insecure` (`true` skips certificate checks) and `sni`.
    ///
    /// ```
    /// use ferry_resp::{ConnectOptions, Protocol};
    ///
    /// let o = ConnectOptions::from_url("rediss://app:p%40ss@cache.local:6380/2?protocol=3").unwrap();
    /// assert_eq!((o.host.as_str(), o.port, o.db), ("cache.local", 6380, 2));
    /// assert_eq!(o.username.as_deref(), Some("app"));
    /// assert_eq!(o.password.as_ref().map(|p| p.expose()), Some("p@ss"));
    /// assert_eq!(o.protocol, Protocol::Resp3);
    /// assert!(o.tls.is_some());
    /// assert!(!format!("{o:?}").contains("p@ss"));
    /// ```
    pub fn from_url(url: &str) -> Result<ConnectOptions, Error> {
        let bad = |why: &str| Error::InvalidUrl(format!("{why} in {}", redact_url(url)));
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("rediss://") {
            (true, rest)
        } else {
            return Err(bad("scheme must be redis:// or rediss://"));
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let mut opts = ConnectOptions::new(String::new(), 6379);
        if let Some(info) = userinfo {
            let (user, pass) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            let user = percent_decode(user).ok_or_else(|| bad("bad percent-encoding"))?;
            if !user.is_empty() {
                opts.username = Some(user);
            }
            if let Some(p) = pass {
                let p = percent_decode(p).ok_or_else(|| bad("bad percent-encoding"))?;
                opts.password = Some(Password(p));
            }
        }
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("bad host or port"))?;
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        opts.host = host.to_owned();
        if let Some(port) = port {
            opts.port = port;
        }
        if !path.is_empty() {
            opts.db = path.parse().map_err(|_| bad("bad database number"))?;
        }
        if tls {
            opts.tls = Some(TlsOptions::default());
        }
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).ok_or_else(|| bad("bad percent-encoding"))?;
            match k {
                "protocol" => {
                    opts.protocol = match v.to_ascii_lowercase().as_str() {
                        "2" | "resp2" => Protocol::Resp2,
                        "3" | "resp3" => Protocol::Resp3,
                        _ => return Err(bad("protocol must be resp2 or resp3")),
                    }
                }
                "db" => opts.db = v.parse().map_err(|_| bad("bad database number"))?,
                "client_name" => opts.client_name = Some(v),
                "insecure" | "sni" if !tls => return Err(bad("TLS option on a redis:// URL")),
                "insecure" => {
                    if let Some(t) = opts.tls.as_mut() {
                        t.insecure_skip_verify = matches!(v.as_str(), "" | "true" | "1" | "yes");
                    }
                }
                "sni" => {
                    if let Some(t) = opts.tls.as_mut() {
                        t.server_name = Some(v);
                    }
                }
                _ => return Err(bad(&format!("unknown query key {k:?}"))),
            }
        }
        Ok(opts)
    }

    /// `host:port` as a string (IPv6 hosts in brackets).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?.parse().ok()?))),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => Some((h, Some(p.parse().ok()?))),
            None => Some((s, None)),
        }
    }
}

/// Decodes `%XX` escapes; `None` on a bad escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with any password replaced by `***`, for error messages.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "<url>".into();
    };
    let after = &url[scheme_end + 3..];
    let auth_end = after.find(['/', '?']).unwrap_or(after.len());
    match after[..auth_end].rfind('@') {
        Some(at) => {
            let user = after[..at].split(':').next().unwrap_or("");
            format!(
                "{}{}:***@{}",
                &url[..scheme_end + 3],
                user,
                &after[at + 1..]
            )
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_debug_and_display_are_redacted() {
        let p = Password::new("hunter2");
        assert_eq!(format!("{p:?}"), "***");
        assert_eq!(format!("{p}"), "***");
        let mut o = ConnectOptions::new("h", 1);
        o.password = Some(p);
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    #[test]
    fn plain_url_has_defaults() {
        let o = ConnectOptions::from_url("redis://127.0.0.1").unwrap();
        assert_eq!((o.host.as_str(), o.port, o.db), ("127.0.0.1", 6379, 0));
        assert!(o.username.is_none() && o.password.is_none() && o.tls.is_none());
        assert_eq!(o.protocol, Protocol::Resp2);
    }

    #[test]
    fn password_only_url_keeps_default_user() {
        let o = ConnectOptions::from_url("redis://:s%3Acret%2F@h:7000/3").unwrap();
        assert!(o.username.is_none());
        assert_eq!(o.password.unwrap().expose(), "s:cret/");
        assert_eq!((o.port, o.db), (7000, 3));
    }

    #[test]
    fn ipv6_host_and_query_options_parse() {
        let o = ConnectOptions::from_url(
            "rediss://u@[::1]:6390?protocol=resp3&client_name=ferry&insecure=true&sni=redis.test",
        )
        .unwrap();
        assert_eq!(o.host, "::1");
        assert_eq!(o.addr(), "[::1]:6390");
        assert_eq!(o.username.as_deref(), Some("u"));
        assert!(o.password.is_none());
        assert_eq!(o.client_name.as_deref(), Some("ferry"));
        let tls = o.tls.unwrap();
        assert!(tls.insecure_skip_verify);
        assert_eq!(tls.server_name.as_deref(), Some("redis.test"));
    }

    #[test]
    fn bad_urls_are_rejected_without_showing_the_password() {
        for url in [
            "http://h",
            "redis://",
            "redis://h:notaport",
            "redis://h/x",
            "redis://u:pw%zz@h",
            "redis://h?insecure=true",
            "redis://h?what=1",
        ] {
            assert!(
                matches!(ConnectOptions::from_url(url), Err(Error::InvalidUrl(_))),
                "{url}"
            );
        }
        let err = ConnectOptions::from_url("redis://u:topsecret@h/x").unwrap_err();
        assert!(!err.to_string().contains("topsecret"), "{err}");
    }
}
