//! Reading a configuration file: detect the layout, check every key, then read it into a [`SyncConfig`].

use std::borrow::Cow;

use serde::Serialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::schema::{self, line_of};
use super::{envsubst, redisshake, SyncConfig};
use crate::error::Error;

/// Which layout a file was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConfigFormat {
    /// ferry's own schema (docs/config.md).
    Ferry,
    /// RedisShake v3 (`type = "sync"`, `[source]`, `[target]`, `[advanced]`).
    RedisShakeV3,
    /// RedisShake v4 (`[sync_reader]`, `[redis_writer]`, `[filter]`, `[advanced]`, ...).
    RedisShakeV4,
}

/// A configuration read from a file, with its layout and the notes about keys accepted and not used.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadedConfig {
    /// The configuration.
    pub config: SyncConfig,
    /// The layout the file was written in.
    pub format: ConfigFormat,
    /// One line per key ferry accepted and does not use (RedisShake's `ncpu`, `pprof_port`, ...).
    pub notes: Vec<String>,
}

/// Detects the layout of `text`, checks its keys and reads it.
pub(crate) fn load(text: &str) -> Result<LoadedConfig, Error> {
    load_with_env(text, &|name| std::env::var(name).ok())
}

/// [`load`] with the environment of a RedisShake v4 file's `${VARIABLES}` given by `lookup`.
pub(crate) fn load_with_env(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, Error> {
    // A v4 file is substituted before it is read, as RedisShake does (an unquoted `port = ${PORT}` is not TOML
    // until then); other layouts are read as written.
    let substituted = match DeTable::parse(text) {
        Ok(doc) if detect(doc.get_ref()) != ConfigFormat::RedisShakeV4 => None,
        _ if text.contains('$') => {
            let (expanded, notes) = envsubst::expand(text, lookup)?;
            match DeTable::parse(&expanded) {
                Ok(doc) if detect(doc.get_ref()) == ConfigFormat::RedisShakeV4 => {
                    Some((expanded, notes))
                }
                Err(_) => Some((expanded, notes)),
                Ok(_) => None,
            }
        }
        _ => None,
    };
    let (text, env_notes) = match &substituted {
        Some((expanded, notes)) => (expanded.as_str(), notes.clone()),
        None => (text, Vec::new()),
    };
    let mut loaded = match load_text(text) {
        Ok(loaded) => loaded,
        // An unset variable is the likely cause of an empty address or a type error: say so.
        Err(e) if !env_notes.is_empty() && e.kind() == crate::ErrorKind::Config => {
            return Err(Error::config(format!("{e} ({})", env_notes.join("; "))));
        }
        Err(e) => return Err(e),
    };
    let mut notes = env_notes;
    notes.append(&mut loaded.notes);
    loaded.notes = notes;
    Ok(loaded)
}

/// Reads `text` as it is.
fn load_text(text: &str) -> Result<LoadedConfig, Error> {
    let doc = DeTable::parse(text).map_err(|e| toml_error(text, &e))?;
    let root = doc.get_ref();
    let format = detect(root);
    let (config, notes) = match format {
        ConfigFormat::Ferry => {
            schema::check(text, root, schema::FERRY)?;
            let config: SyncConfig = read_with_implied_types(text, doc, &["source", "target"])?;
            (config, Vec::new())
        }
        ConfigFormat::RedisShakeV3 => {
            let checked = schema::check(text, root, schema::SHAKE_V3)?;
            let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
            let mut notes = checked.notes.clone();
            let config = redisshake::from_v3(&table, &checked, &mut notes)?;
            (config, notes)
        }
        ConfigFormat::RedisShakeV4 => {
            let checked = schema::check(text, root, schema::SHAKE_V4)?;
            let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
            let mut notes = checked.notes.clone();
            let config = redisshake::from_v4(&table, &checked, &mut notes)?;
            (config, notes)
        }
    };
    config.validate()?;
    Ok(LoadedConfig {
        config,
        format,
        notes,
    })
}

/// The `type` a `[source]` or `[target]` written without one can only have, from its keys: `sentinels` is a
/// sentinel-managed group, `seeds` a cluster, a `url` alone a standalone server. A file source has to say
/// whether its `path` is an RDB or an AOF file, so it gets none.
pub(crate) fn implied_type(has: impl Fn(&str) -> bool) -> Option<&'static str> {
    if has("type") {
        None
    } else if has("sentinels") {
        Some("sentinel")
    } else if has("seeds") {
        Some("cluster")
    } else if has("url") && !has("path") {
        Some("standalone")
    } else {
        None
    }
}

/// Gives the tables `sides` of `root` (`[source]` and `[target]`, a DR pair's `[a]` and `[b]`) their implied
/// `type` ([`implied_type`]); the value takes the table's place in the text, so errors about it name the
/// table's line.
fn add_implied_types(root: &mut DeTable<'_>, sides: &[&str]) {
    for (name, value) in root.iter_mut() {
        if !sides.contains(&name.get_ref().as_ref()) {
            continue;
        }
        let span = value.span();
        if let DeValue::Table(table) = value.get_mut() {
            let implied =
                implied_type(|key| table.iter().any(|(k, _)| k.get_ref().as_ref() == key));
            if let Some(kind) = implied {
                table.insert(
                    Spanned::new(span.clone(), Cow::Borrowed("type")),
                    Spanned::new(span, DeValue::String(Cow::Borrowed(kind))),
                );
            }
        }
    }
}

/// Reads the parsed `doc` of `text` as a `T`, the tables `sides` given their implied `type`; errors name the line.
fn read_with_implied_types<T: serde::de::DeserializeOwned>(
    text: &str,
    mut doc: Spanned<DeTable<'_>>,
    sides: &[&str],
) -> Result<T, Error> {
    add_implied_types(doc.get_mut(), sides);
    T::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| toml_error(text, &e))
}

/// [`read_with_implied_types`] of a TOML text.
pub(crate) fn toml_with_implied_types<T: serde::de::DeserializeOwned>(
    text: &str,
    sides: &[&str],
) -> Result<T, Error> {
    let doc = DeTable::parse(text).map_err(|e| toml_error(text, &e))?;
    read_with_implied_types(text, doc, sides)
}

/// The same for the JSON form: the objects `sides` of `value` get their implied `type`.
pub(crate) fn add_implied_json_types(value: &mut serde_json::Value, sides: &[&str]) {
    for side in sides {
        if let Some(serde_json::Value::Object(o)) = value.get_mut(*side) {
            if let Some(kind) = implied_type(|key| o.contains_key(key)) {
                o.insert("type".into(), kind.into());
            }
        }
    }
}

/// v4 has reader/writer tables; v3 has `type = "sync"|"restore"|"scan"` or a `[source]` with an `address`.
fn detect(root: &DeTable<'_>) -> ConfigFormat {
    let has = |name: &str| root.iter().any(|(k, _)| k.get_ref().as_ref() == name);
    let v4 = [
        "sync_reader",
        "scan_reader",
        "rdb_reader",
        "aof_reader",
        "redis_writer",
    ];
    if v4.iter().any(|k| has(k)) {
        return ConfigFormat::RedisShakeV4;
    }
    let typed_mode = root.iter().any(|(k, v)| {
        k.get_ref().as_ref() == "type"
            && matches!(v.get_ref(), DeValue::String(s) if ["sync", "restore", "scan"].contains(&s.as_ref()))
    });
    // RedisShake 3.0.x: `[source] type = "sync" | "restore"` (ferry's own source types are other words).
    let source_address = root.iter().any(|(k, v)| {
        k.get_ref().as_ref() == "source"
            && matches!(v.get_ref(), DeValue::Table(t) if t.iter().any(|(k, v)| {
                let k = k.get_ref().as_ref();
                k == "address"
                    || k == "rdb_file_path"
                    || (k == "type"
                        && matches!(v.get_ref(), DeValue::String(s) if ["sync", "restore"].contains(&s.as_ref())))
            }))
    });
    if typed_mode || source_address || has("advanced") {
        ConfigFormat::RedisShakeV3
    } else {
        ConfigFormat::Ferry
    }
}

/// A TOML syntax or type error with its line.
fn toml_error(text: &str, e: &toml::de::Error) -> Error {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => Error::config(format!("line {}: {message}", line_of(text, span.start))),
        None => Error::config(message.to_string()),
    }
}
