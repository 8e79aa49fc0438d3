//! What a server is and which databases hold keys, for a user that may not run `INFO`.
//!
//! `INFO` is in the `@dangerous` ACL category, which application users are often denied (`+@all -@dangerous`),
//! and Redis documents a replica's user as `+psync +replconf +ping`. These helpers ask `INFO` first and, when
//! it is refused (`NOPERM`), fall back to commands such users may run: `HELLO` (`@connection`; without
//! arguments, Redis 6.2 and later) for the server's name and version, `SELECT` and `DBSIZE` for the databases.

use bytes::Bytes;

use crate::{Connection, Error, Frame, ServerError};

/// Whether `e` is an ACL refusal (`NOPERM`).
pub fn is_refused(e: &Error) -> bool {
    e.server_error().is_some_and(|se| se.code() == "NOPERM")
}

fn text(f: &Frame) -> String {
    f.as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// The text of `INFO server`; for a user denied `INFO`, the lines ferry reads from it (`redis_version`, and for
/// Valkey `server_name:valkey` and `valkey_version`) made from `HELLO`. An error when both are refused.
pub async fn info_server(conn: &mut Connection) -> Result<String, Error> {
    match conn.call(&["INFO", "server"]).await {
        Ok(info) => Ok(text(&info)),
        Err(e) if is_refused(&e) => match conn.call(&["HELLO"]).await {
            Ok(hello) => Ok(info_of_hello(&hello)),
            Err(h) if h.server_error().is_some() => Err(Error::Server(ServerError::new(format!(
                "{e} (and HELLO: {h}): the server's version cannot be known"
            )))),
            Err(h) => Err(h),
        },
        Err(e) => Err(e),
    }
}

/// One field of a `HELLO` reply (a map in RESP3, pairs in an array in RESP2): `server`, `version`, `role`...
pub fn hello_field(hello: &Frame, name: &str) -> Option<String> {
    let items: Vec<&Frame> = match hello {
        Frame::Array(items) => items.iter().collect(),
        Frame::Map(pairs) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    };
    items
        .chunks_exact(2)
        .find(|kv| text(kv[0]) == name)
        .map(|kv| text(kv[1]))
}

/// `INFO server` lines made from a `HELLO` reply; empty when it names no version.
pub fn info_of_hello(hello: &Frame) -> String {
    let field = |name: &str| hello_field(hello, name);
    match (field("server").as_deref(), field("version")) {
        (_, None) => String::new(),
        (Some("valkey"), Some(v)) => {
            format!("redis_version:{v}\r\nserver_name:valkey\r\nvalkey_version:{v}\r\n")
        }
        (_, Some(v)) => format!("redis_version:{v}\r\n"),
    }
}

/// The major version in an `INFO server` text (`valkey_version` for Valkey, else `redis_version`), 0 if none.
pub fn major_version(info_server: &str) -> u32 {
    let field = |name: &str| {
        info_server
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
    };
    field("valkey_version")
        .or_else(|| field("redis_version"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
        .unwrap_or(0)
}

/// The databases holding keys, with their key counts: from `INFO keyspace`, or for a user denied `INFO`, from
/// `DBSIZE` in each database up to the first one `SELECT` refuses (then the connection is put back in `db`;
/// after an error it may be in another database).
pub async fn keyspace(conn: &mut Connection, db: i64) -> Result<Vec<(i64, u64)>, Error> {
    match conn.call(&["INFO", "keyspace"]).await {
        Ok(info) => return Ok(parse_keyspace(&text(&info))),
        Err(e) if is_refused(&e) => {}
        Err(e) => return Err(e),
    }
    let mut found = Vec::new();
    let mut first = 0i64;
    let result = 'all: loop {
        let cmds: Vec<Vec<Bytes>> = (first..first + 16)
            .flat_map(|n| {
                [
                    vec![Bytes::from_static(b"SELECT"), Bytes::from(n.to_string())],
                    vec![Bytes::from_static(b"DBSIZE")],
                ]
            })
            .collect();
        let replies = match conn.pipeline(&cmds).await {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        for (n, pair) in (first..).zip(replies.chunks_exact(2)) {
            match (&pair[0], &pair[1]) {
                (Frame::Error(e), _) if n == 0 => {
                    break 'all Err(Error::Server(ServerError::new(e)))
                }
                (Frame::Error(_), _) => break 'all Ok(()),
                (_, Frame::Integer(k)) if *k > 0 => found.push((n, *k as u64)),
                (_, Frame::Error(e)) => break 'all Err(Error::Server(ServerError::new(e))),
                _ => {}
            }
        }
        first += 16;
    };
    result?;
    conn.call(&["SELECT", &db.to_string()]).await?;
    Ok(found)
}

/// `db<N>:keys=<K>,...` lines of `INFO keyspace`.
pub fn parse_keyspace(info: &str) -> Vec<(i64, u64)> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(':')?;
            let db = name.strip_prefix("db")?.parse().ok()?;
            let keys = rest
                .split(',')
                .find_map(|f| f.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db, keys))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn hello_of_redis_and_valkey_in_both_protocols() {
        let redis = Frame::Array(vec![
            bulk("server"),
            bulk("redis"),
            bulk("version"),
            bulk("7.0.15"),
            bulk("proto"),
            Frame::Integer(2),
        ]);
        let info = info_of_hello(&redis);
        assert_eq!(info, "redis_version:7.0.15\r\n");
        assert_eq!(major_version(&info), 7);
        let valkey = Frame::Map(vec![
            (bulk("server"), bulk("valkey")),
            (bulk("version"), bulk("9.1.2")),
        ]);
        let info = info_of_hello(&valkey);
        assert!(info.contains("server_name:valkey"), "{info}");
        assert_eq!(major_version(&info), 9);
        assert_eq!(info_of_hello(&Frame::Null), "");
        assert_eq!(major_version(""), 0);
    }

    #[test]
    fn keyspace_lines() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb12:keys=7,expires=1,avg_ttl=5\r\n";
        assert_eq!(parse_keyspace(info), vec![(0, 3), (12, 7)]);
        // Valkey 9 adds fields; the order of `keys` does not matter.
        assert_eq!(
            parse_keyspace("db1:expires=0,keys=2,keys_with_volatile_items=0"),
            vec![(1, 2)]
        );
    }
}
