//! The keys each configuration layout knows, checked against a file before it is read, so that an unknown key
//! or a typo is an error naming the key, its line and the nearest known key.

use std::collections::BTreeMap;

use toml::de::{DeTable, DeValue};

use crate::error::Error;

/// What a key holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Node {
    /// A value (string, number, boolean, or array of values).
    Leaf,
    /// A value ferry accepts and does not use; the note says why (one line).
    Unused(&'static str),
    /// A table with these keys.
    Table(&'static [(&'static str, Node)]),
    /// A table with any keys (a map).
    Map,
    /// An endpoint: a URL string or a table with these keys; also an array of them.
    Endpoints(&'static [(&'static str, Node)]),
}

const TLS: &[(&str, Node)] = &[
    ("ca_file", Node::Leaf),
    ("cert_file", Node::Leaf),
    ("key_file", Node::Leaf),
    ("insecure_skip_verify", Node::Leaf),
    ("server_name", Node::Leaf),
];

const ENDPOINT: &[(&str, Node)] = &[
    ("url", Node::Leaf),
    ("username", Node::Leaf),
    ("password", Node::Leaf),
    ("password_env", Node::Leaf),
    ("tls", Node::Table(TLS)),
];

const MASTER_AUTH: &[(&str, Node)] = &[
    ("username", Node::Leaf),
    ("password", Node::Leaf),
    ("password_env", Node::Leaf),
    ("tls", Node::Table(TLS)),
];

/// `[source]` of every kind (the union; serde then checks the fields of the chosen `type`).
const SOURCE: &[(&str, Node)] = &[
    ("type", Node::Leaf),
    ("url", Node::Leaf),
    ("username", Node::Leaf),
    ("password", Node::Leaf),
    ("password_env", Node::Leaf),
    ("tls", Node::Table(TLS)),
    ("seeds", Node::Endpoints(ENDPOINT)),
    ("shards", Node::Leaf),
    ("prefer_replica", Node::Leaf),
    ("sentinels", Node::Endpoints(ENDPOINT)),
    ("master", Node::Leaf),
    ("master_auth", Node::Table(MASTER_AUTH)),
    ("endpoint", Node::Endpoints(ENDPOINT)),
    ("dbs", Node::Leaf),
    ("notifications", Node::Leaf),
    ("cluster", Node::Leaf),
    ("path", Node::Leaf),
    ("timestamp", Node::Leaf),
];

const TARGET: &[(&str, Node)] = &[
    ("type", Node::Leaf),
    ("url", Node::Leaf),
    ("username", Node::Leaf),
    ("password", Node::Leaf),
    ("password_env", Node::Leaf),
    ("tls", Node::Table(TLS)),
    ("seeds", Node::Endpoints(ENDPOINT)),
    ("sentinels", Node::Endpoints(ENDPOINT)),
    ("master", Node::Leaf),
    ("master_auth", Node::Table(MASTER_AUTH)),
];

const FILTER: &[(&str, Node)] = &[
    ("allow_dbs", Node::Leaf),
    ("block_dbs", Node::Leaf),
    ("allow_keys", Node::Leaf),
    ("block_keys", Node::Leaf),
    ("allow_key_prefixes", Node::Leaf),
    ("block_key_prefixes", Node::Leaf),
    ("allow_key_suffixes", Node::Leaf),
    ("block_key_suffixes", Node::Leaf),
    ("allow_key_regexes", Node::Leaf),
    ("block_key_regexes", Node::Leaf),
    ("allow_commands", Node::Leaf),
    ("block_commands", Node::Leaf),
];

/// ferry's own schema (docs/config.md).
pub(crate) const FERRY: &[(&str, Node)] = &[
    ("source", Node::Table(SOURCE)),
    ("target", Node::Table(TARGET)),
    ("filter", Node::Table(FILTER)),
    ("db_map", Node::Map),
    ("conflict", Node::Leaf),
    ("on_error", Node::Leaf),
    (
        "checkpoint",
        Node::Table(&[
            ("enabled", Node::Leaf),
            ("tag", Node::Leaf),
            ("db", Node::Leaf),
            ("epoch", Node::Leaf),
        ]),
    ),
    (
        "limits",
        Node::Table(&[
            ("window_commands", Node::Leaf),
            ("window_bytes", Node::Leaf),
            ("batch_commands", Node::Leaf),
            ("batch_bytes", Node::Leaf),
            ("max_restore_bytes", Node::Leaf),
            ("reply_timeout_ms", Node::Leaf),
            ("reconnect_backoff_ms", Node::Leaf),
            ("spool_memory_bytes", Node::Leaf),
            ("spool_max_bytes", Node::Leaf),
            ("spool_dir", Node::Leaf),
        ]),
    ),
    ("target_policy", Node::Leaf),
    ("until_caught_up", Node::Leaf),
    ("flush_target_on_resync", Node::Leaf),
    ("flush_target_before_copy", Node::Leaf),
    ("psync_commands", Node::Map),
    (
        "run",
        Node::Table(&[
            ("metrics_addr", Node::Leaf),
            ("status_addr", Node::Leaf),
            ("verify", Node::Leaf),
        ]),
    ),
];

const VERSION_NOTE: &str = "ferry asks the server for its version";
const LOG_NOTE: &str = "ferry logs to stderr (RUST_LOG and --log-format choose what and how)";
const NCPU_NOTE: &str = "ferry sizes its runtime itself";
const PPROF_NOTE: &str = "ferry has no pprof endpoint";
const BUF_NOTE: &str = "a server setting, not one of ferry's: ferry bounds its batches itself";

/// RedisShake v3 `sync.toml` (also `restore.toml` and `scan.toml`).
pub(crate) const SHAKE_V3: &[(&str, Node)] = &[
    ("type", Node::Leaf),
    (
        "source",
        Node::Table(&[
            // RedisShake 3.0.x: the mode (`sync` or `restore`) was here rather than at the top.
            ("type", Node::Leaf),
            ("version", Node::Unused(VERSION_NOTE)),
            ("address", Node::Leaf),
            ("username", Node::Leaf),
            ("password", Node::Leaf),
            ("tls", Node::Leaf),
            ("elasticache_psync", Node::Leaf),
            ("rdb_file_path", Node::Leaf),
            ("dbs", Node::Leaf),
            ("count", Node::Unused("ferry chooses its SCAN batch itself")),
        ]),
    ),
    (
        "target",
        Node::Table(&[
            ("type", Node::Leaf),
            ("version", Node::Unused(VERSION_NOTE)),
            ("address", Node::Leaf),
            // RedisShake 3.0.0-beta: a list (a cluster's masters, or the one standalone server).
            ("addresses", Node::Leaf),
            ("username", Node::Leaf),
            ("password", Node::Leaf),
            ("tls", Node::Leaf),
        ]),
    ),
    (
        "advanced",
        Node::Table(&[
            ("dir", Node::Leaf),
            ("ncpu", Node::Unused(NCPU_NOTE)),
            ("pprof_port", Node::Unused(PPROF_NOTE)),
            ("metrics_port", Node::Leaf),
            ("log_file", Node::Unused(LOG_NOTE)),
            ("log_level", Node::Unused(LOG_NOTE)),
            ("log_interval", Node::Unused(LOG_NOTE)),
            ("rdb_restore_command_behavior", Node::Leaf),
            ("pipeline_count_limit", Node::Leaf),
            (
                "target_redis_client_max_querybuf_len",
                Node::Unused(BUF_NOTE),
            ),
            ("target_redis_proto_max_bulk_len", Node::Leaf),
        ]),
    ),
];

const V4_SYNC_READER: &[(&str, Node)] = &[
    ("cluster", Node::Leaf),
    ("address", Node::Leaf),
    ("username", Node::Leaf),
    ("password", Node::Leaf),
    ("tls", Node::Leaf),
    ("sync_rdb", Node::Leaf),
    ("sync_aof", Node::Leaf),
    ("prefer_replica", Node::Leaf),
    (
        "try_diskless",
        Node::Unused("ferry reads disk-based and diskless full syncs alike"),
    ),
];

const V4_SCAN_READER: &[(&str, Node)] = &[
    ("cluster", Node::Leaf),
    ("address", Node::Leaf),
    ("username", Node::Leaf),
    ("password", Node::Leaf),
    ("tls", Node::Leaf),
    ("dbs", Node::Leaf),
    ("scan", Node::Leaf),
    ("ksn", Node::Leaf),
    ("count", Node::Unused("ferry chooses its SCAN batch itself")),
    // Read by `from_v4`, which notes that it is not used.
    ("prefer_replica", Node::Leaf),
];

/// RedisShake v4 `shake.toml`.
pub(crate) const SHAKE_V4: &[(&str, Node)] = &[
    ("function", Node::Leaf),
    ("sync_reader", Node::Table(V4_SYNC_READER)),
    ("scan_reader", Node::Table(V4_SCAN_READER)),
    ("rdb_reader", Node::Table(&[("filepath", Node::Leaf)])),
    (
        "aof_reader",
        Node::Table(&[("filepath", Node::Leaf), ("timestamp", Node::Leaf)]),
    ),
    (
        "redis_writer",
        Node::Table(&[
            ("cluster", Node::Leaf),
            ("sentinel", Node::Leaf),
            ("master", Node::Leaf),
            ("address", Node::Leaf),
            ("username", Node::Leaf),
            ("password", Node::Leaf),
            ("tls", Node::Leaf),
            (
                "off_reply",
                Node::Unused("ferry always reads the target's replies (its checkpoints need them)"),
            ),
        ]),
    ),
    (
        "filter",
        Node::Table(&[
            ("allow_keys", Node::Leaf),
            ("allow_key_prefix", Node::Leaf),
            ("allow_key_suffix", Node::Leaf),
            ("allow_key_regex", Node::Leaf),
            ("block_keys", Node::Leaf),
            ("block_key_prefix", Node::Leaf),
            ("block_key_suffix", Node::Leaf),
            ("block_key_regex", Node::Leaf),
            ("allow_db", Node::Leaf),
            ("block_db", Node::Leaf),
            ("allow_command", Node::Leaf),
            ("block_command", Node::Leaf),
            ("allow_command_group", Node::Leaf),
            ("block_command_group", Node::Leaf),
            ("function", Node::Leaf),
        ]),
    ),
    (
        "advanced",
        Node::Table(&[
            ("dir", Node::Leaf),
            ("ncpu", Node::Unused(NCPU_NOTE)),
            ("pprof_port", Node::Unused(PPROF_NOTE)),
            ("status_port", Node::Leaf),
            ("log_file", Node::Unused(LOG_NOTE)),
            ("log_level", Node::Unused(LOG_NOTE)),
            ("log_interval", Node::Unused(LOG_NOTE)),
            ("log_rotation", Node::Unused(LOG_NOTE)),
            // Later RedisShake 4 releases: the rotation's limits beside `log_rotation`.
            ("log_max_size", Node::Unused(LOG_NOTE)),
            ("log_max_age", Node::Unused(LOG_NOTE)),
            ("log_max_backups", Node::Unused(LOG_NOTE)),
            ("log_compress", Node::Unused(LOG_NOTE)),
            ("rdb_restore_command_behavior", Node::Leaf),
            ("pipeline_count_limit", Node::Leaf),
            (
                "target_redis_client_max_querybuf_len",
                Node::Unused(BUF_NOTE),
            ),
            ("target_redis_proto_max_bulk_len", Node::Leaf),
            ("aws_psync", Node::Leaf),
            ("empty_db_before_sync", Node::Leaf),
        ]),
    ),
    (
        "module",
        Node::Table(&[(
            "target_mbbloom_version",
            Node::Unused("ferry copies module values as RESTORE payloads, whatever their version"),
        )]),
    ),
];

/// What checking a file against a schema found: notes for accepted unused keys and the line of every key.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// One line per accepted key that ferry does not use.
    pub notes: Vec<String>,
    /// Dotted path -> line (1-based) of each key.
    pub lines: BTreeMap<String, usize>,
}

/// The 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Checks `table` against `schema`: every key must be known.
pub(crate) fn check(
    text: &str,
    table: &DeTable<'_>,
    schema: &[(&str, Node)],
) -> Result<Checked, Error> {
    let mut out = Checked::default();
    walk(text, table, schema, "", &mut out)?;
    Ok(out)
}

fn walk(
    text: &str,
    table: &DeTable<'_>,
    schema: &[(&str, Node)],
    path: &str,
    out: &mut Checked,
) -> Result<(), Error> {
    for (key, value) in table.iter() {
        let name: &str = key.get_ref().ref_str();
        let line = line_of(text, key.span().start);
        let full = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        out.lines.insert(full.clone(), line);
        let Some((_, node)) = schema.iter().find(|(k, _)| *k == name) else {
            return Err(unknown_key(&full, name, line, path, schema));
        };
        match (node, value.get_ref()) {
            (Node::Leaf, _) | (Node::Map, DeValue::Table(_)) => {}
            (Node::Unused(why), _) => out.notes.push(format!(
                "`{full}` (line {line}) is accepted and not used: {why}"
            )),
            (Node::Table(inner), DeValue::Table(t)) => walk(text, t, inner, &full, out)?,
            (Node::Endpoints(inner), v) => walk_endpoints(text, v, inner, &full, out)?,
            (Node::Table(_) | Node::Map, _) => {
                return Err(Error::config(format!(
                    "line {line}: `{full}` must be a table"
                )))
            }
        }
    }
    Ok(())
}

fn walk_endpoints(
    text: &str,
    value: &DeValue<'_>,
    schema: &[(&str, Node)],
    path: &str,
    out: &mut Checked,
) -> Result<(), Error> {
    match value {
        DeValue::Table(t) => walk(text, t, schema, path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_endpoints(text, item.get_ref(), schema, &format!("{path}[{i}]"), out)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

trait RefStr {
    fn ref_str(&self) -> &str;
}

impl RefStr for std::borrow::Cow<'_, str> {
    fn ref_str(&self) -> &str {
        self.as_ref()
    }
}

/// "unknown key `x` in [t] at line n; did you mean `y`?"
fn unknown_key(full: &str, name: &str, line: usize, path: &str, schema: &[(&str, Node)]) -> Error {
    let section = if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in [{path}]")
    };
    let best = schema
        .iter()
        .map(|(k, _)| (strsim::damerau_levenshtein(name, k), *k))
        .min();
    let hint = match best {
        Some((d, k)) if d <= (name.len().max(k.len()) / 2).max(2) => {
            format!("; did you mean `{k}`?")
        }
        _ => format!(
            "; known keys: {}",
            schema
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Error::config(format!("line {line}: unknown key `{full}` {section}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_names_the_line_and_the_nearest_key() {
        let text = "[source]\ntype = \"standalone\"\nulr = \"redis://a:1\"\n";
        let table = DeTable::parse(text).unwrap();
        let err = check(text, table.get_ref(), FERRY).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("`source.ulr`"), "{msg}");
        assert!(msg.contains("did you mean `url`?"), "{msg}");
    }

    #[test]
    fn unused_redisshake_keys_give_one_note_each() {
        let text = "type = \"sync\"\n[advanced]\nncpu = 4\npprof_port = 0\n";
        let table = DeTable::parse(text).unwrap();
        let checked = check(text, table.get_ref(), SHAKE_V3).unwrap();
        assert_eq!(checked.notes.len(), 2, "{:?}", checked.notes);
        assert!(checked.notes[0].contains("advanced.ncpu"));
        assert_eq!(checked.lines["advanced.pprof_port"], 4);
    }

    #[test]
    fn the_log_rotation_keys_of_later_redisshake_4_releases_are_noted() {
        let text = "[advanced]\nlog_rotation = true\nlog_max_size = 512\nlog_max_age = 7\n\
                    log_max_backups = 3\nlog_compress = true\n";
        let table = DeTable::parse(text).unwrap();
        let checked = check(text, table.get_ref(), SHAKE_V4).unwrap();
        assert_eq!(checked.notes.len(), 5, "{:?}", checked.notes);
        assert_eq!(checked.lines["advanced.log_compress"], 6);
    }
}
