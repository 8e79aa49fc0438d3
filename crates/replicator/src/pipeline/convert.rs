//! How a key of the source's RDB becomes commands for the target.

use bytes::Bytes;

/// What to do when a key of the RDB already exists on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// Stop the job with a clear error naming the key.
    #[default]
    Panic,
    /// Overwrite the target's key (`RESTORE ... REPLACE`).
    Rewrite,
    /// Keep the target's key and count it as skipped.
    Skip,
}

impl std::str::FromStr for ConflictPolicy {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "panic" => Ok(ConflictPolicy::Panic),
            "rewrite" => Ok(ConflictPolicy::Rewrite),
            "skip" => Ok(ConflictPolicy::Skip),
            other => Err(crate::error::Error::Config(format!(
                "conflict policy {other:?}: expected panic, rewrite or skip"
            ))),
        }
    }
}

/// The eviction hint kept with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionHint {
    /// Seconds since last access (LRU policies): `IDLETIME`.
    IdleSeconds(u64),
    /// The LFU counter: `FREQ`.
    Frequency(u8),
}

/// Builds `RESTORE key 0|<abs ms> payload ABSTTL [REPLACE] [IDLETIME s | FREQ f]`.
///
/// `expire_at_ms` is the absolute expiry time in Unix milliseconds (`None`: no expiry); with `ABSTTL` the
/// expiry is never recomputed as a relative TTL.
pub fn restore_command(
    key: Bytes,
    payload: Bytes,
    expire_at_ms: Option<i64>,
    replace: bool,
    hint: Option<EvictionHint>,
) -> Vec<Bytes> {
    let ttl = match expire_at_ms {
        Some(ms) if ms > 0 => Bytes::from(ms.to_string()),
        _ => Bytes::from_static(b"0"),
    };
    let mut argv = vec![
        Bytes::from_static(b"RESTORE"),
        key,
        ttl,
        payload,
        Bytes::from_static(b"ABSTTL"),
    ];
    if replace {
        argv.push(Bytes::from_static(b"REPLACE"));
    }
    match hint {
        Some(EvictionHint::IdleSeconds(s)) => {
            argv.push(Bytes::from_static(b"IDLETIME"));
            argv.push(Bytes::from(s.to_string()));
        }
        Some(EvictionHint::Frequency(f)) => {
            argv.push(Bytes::from_static(b"FREQ"));
            argv.push(Bytes::from(f.to_string()));
        }
        None => {}
    }
    argv
}

/// The newest RDB version a Redis version loads (`redis_version` of `INFO server`, e.g. `"7.0.15"`).
///
/// Unknown or unparsable versions are taken as the newest known (12), so an unknown newer server gets the
/// source's payloads as they are.
pub fn rdb_version_for(redis_version: &str) -> u16 {
    let mut parts = redis_version.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor) = match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b),
        _ => return 12,
    };
    match (major, minor) {
        (0..=2, _) => 6,
        (3, _) => 7,
        (4, _) => 8,
        (5, _) | (6, _) => 9,
        (7, 0) | (7, 1) => 10,
        (7, 2) | (7, 3) => 11,
        _ => 12,
    }
}

/// Most elements per element command (`RPUSH`, `SADD`, `HSET`, `ZADD`), so no command is huge.
pub const ELEMENTS_PER_COMMAND: usize = 512;

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn num(n: impl ToString) -> Bytes {
    Bytes::from(n.to_string())
}

/// A score as Redis parses it back exactly (`inf` written `+inf`).
pub fn score(f: f64) -> Bytes {
    if f == f64::INFINITY {
        b("+inf")
    } else if f == f64::NEG_INFINITY {
        b("-inf")
    } else {
        num(f)
    }
}

/// The commands that build `value` (or, for a chunk of a big value, add its elements) at `key`, for a target
/// loading RDB version `target_rdb` (stream metadata commands differ before 7.0). Each command is handed to
/// `emit`. The key is not deleted first and no expiry is set (see [`expire_command`]).
pub fn value_commands(
    key: &Bytes,
    value: &ferry_rdb::Value,
    target_rdb: u16,
    emit: &mut dyn FnMut(Vec<Bytes>),
) -> Result<(), crate::error::Error> {
    use ferry_rdb::Value;
    match value {
        Value::String(s) => emit(vec![b("SET"), key.clone(), s.clone()]),
        Value::List(items) => {
            for chunk in items.chunks(ELEMENTS_PER_COMMAND) {
                let mut argv = vec![b("RPUSH"), key.clone()];
                argv.extend(chunk.iter().cloned());
                emit(argv);
            }
        }
        Value::Set(members) => {
            for chunk in members.chunks(ELEMENTS_PER_COMMAND) {
                let mut argv = vec![b("SADD"), key.clone()];
                argv.extend(chunk.iter().cloned());
                emit(argv);
            }
        }
        Value::SortedSet(pairs) => {
            for chunk in pairs.chunks(ELEMENTS_PER_COMMAND) {
                let mut argv = vec![b("ZADD"), key.clone()];
                for (member, s) in chunk {
                    argv.push(score(*s));
                    argv.push(member.clone());
                }
                emit(argv);
            }
        }
        Value::Hash(fields) => {
            for chunk in fields.chunks(ELEMENTS_PER_COMMAND) {
                let mut argv = vec![b("HSET"), key.clone()];
                for f in chunk {
                    argv.push(f.field.clone());
                    argv.push(f.value.clone());
                }
                emit(argv);
            }
            for f in fields {
                if let Some(at) = f.expire_at_ms {
                    emit(vec![
                        b("HPEXPIREAT"),
                        key.clone(),
                        num(at),
                        b("FIELDS"),
                        b("1"),
                        f.field.clone(),
                    ]);
                }
            }
        }
        Value::Stream(stream) => stream_commands(key, stream, target_rdb, emit),
        Value::Module(m) => {
            return Err(crate::error::Error::Rdb(format!(
                "module value of type {} cannot be converted for this target",
                m.name
            )))
        }
    }
    Ok(())
}

fn stream_commands(
    key: &Bytes,
    stream: &ferry_rdb::Stream,
    target_rdb: u16,
    emit: &mut dyn FnMut(Vec<Bytes>),
) {
    for entry in &stream.entries {
        let mut argv = vec![b("XADD"), key.clone(), num(entry.id)];
        for (f, v) in &entry.fields {
            argv.push(f.clone());
            argv.push(v.clone());
        }
        emit(argv);
    }
    let zero = ferry_rdb::StreamId::default();
    if stream.entries.is_empty() && stream.groups.is_empty() && stream.last_id == zero {
        return;
    }
    if stream.entries.is_empty() {
        // Create the key empty: a group made with MKSTREAM, removed again.
        emit(vec![
            b("XGROUP"),
            b("CREATE"),
            key.clone(),
            b("ferry-tmp"),
            b("0"),
            b("MKSTREAM"),
        ]);
        emit(vec![b("XGROUP"), b("DESTROY"), key.clone(), b("ferry-tmp")]);
    }
    if stream.last_id != zero {
        let mut argv = vec![b("XSETID"), key.clone(), num(stream.last_id)];
        if target_rdb >= 10 {
            argv.extend([
                b("ENTRIESADDED"),
                num(stream.entries_added),
                b("MAXDELETEDID"),
                num(stream.max_deleted_id),
            ]);
        }
        emit(argv);
    }
    for group in &stream.groups {
        let mut argv = vec![
            b("XGROUP"),
            b("CREATE"),
            key.clone(),
            group.name.clone(),
            num(group.last_id),
        ];
        if let (Some(read), true) = (group.entries_read, target_rdb >= 10) {
            argv.extend([b("ENTRIESREAD"), num(read)]);
        }
        emit(argv);
        for consumer in &group.consumers {
            emit(vec![
                b("XGROUP"),
                b("CREATECONSUMER"),
                key.clone(),
                group.name.clone(),
                consumer.name.clone(),
            ]);
            for id in &consumer.pending {
                let pel = group.pending.iter().find(|p| p.id == *id);
                let mut argv = vec![
                    b("XCLAIM"),
                    key.clone(),
                    group.name.clone(),
                    consumer.name.clone(),
                    b("0"),
                    num(id),
                ];
                if let Some(p) = pel {
                    argv.extend([
                        b("TIME"),
                        num(p.delivery_time_ms),
                        b("RETRYCOUNT"),
                        num(p.delivery_count),
                    ]);
                }
                argv.extend([b("FORCE"), b("JUSTID")]);
                emit(argv);
            }
        }
    }
}

/// `PEXPIREAT key <ms>` for a key built with element commands.
pub fn expire_command(key: &Bytes, expire_at_ms: i64) -> Vec<Bytes> {
    vec![b("PEXPIREAT"), key.clone(), num(expire_at_ms)]
}

/// Adapts a live command of a newer source for an older target: the stream arguments Redis 7.0 added and
/// propagates (`ENTRIESREAD` of `XGROUP CREATE/SETID`, `ENTRIESADDED`/`MAXDELETEDID` of `XSETID`) are removed
/// for a target before 7.0 (RDB version below 10), which would refuse the whole command.
pub fn adapt_for_target(argv: &mut Vec<Bytes>, target_rdb: u16) {
    if target_rdb >= 10 || argv.is_empty() {
        return;
    }
    let name = argv[0].to_ascii_lowercase();
    let (from, options): (usize, &[&[u8]]) = match name.as_slice() {
        b"xgroup" => (5, &[b"entriesread"]),
        b"xsetid" => (3, &[b"entriesadded", b"maxdeletedid"]),
        _ => return,
    };
    let mut i = from.min(argv.len());
    while i + 1 < argv.len() {
        let opt = argv[i].to_ascii_lowercase();
        if options.contains(&opt.as_slice()) {
            argv.drain(i..i + 2);
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(argv: &[Bytes]) -> Vec<String> {
        argv.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn restore_without_expiry_uses_zero_ttl_and_abs_flag() {
        let argv = restore_command(
            Bytes::from_static(b"k"),
            Bytes::from_static(b"P"),
            None,
            false,
            None,
        );
        assert_eq!(strs(&argv), ["RESTORE", "k", "0", "P", "ABSTTL"]);
    }

    #[test]
    fn restore_keeps_absolute_expiry_replace_and_hints() {
        let argv = restore_command(
            Bytes::from_static(b"k"),
            Bytes::from_static(b"P"),
            Some(1_900_000_000_000),
            true,
            Some(EvictionHint::IdleSeconds(12)),
        );
        assert_eq!(
            strs(&argv),
            [
                "RESTORE",
                "k",
                "1900000000000",
                "P",
                "ABSTTL",
                "REPLACE",
                "IDLETIME",
                "12"
            ]
        );
        let argv = restore_command(
            Bytes::from_static(b"k"),
            Bytes::from_static(b"P"),
            None,
            false,
            Some(EvictionHint::Frequency(5)),
        );
        assert_eq!(strs(&argv)[5..], ["FREQ", "5"]);
    }

    #[test]
    fn element_commands_are_chunked_and_scores_round_trip() {
        let key = Bytes::from_static(b"z");
        let pairs: Vec<(Bytes, f64)> = (0..1000)
            .map(|i| (Bytes::from(format!("m{i}")), i as f64 / 3.0))
            .collect();
        let mut out = Vec::new();
        value_commands(&key, &ferry_rdb::Value::SortedSet(pairs), 10, &mut |c| {
            out.push(c)
        })
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), 2 + 2 * ELEMENTS_PER_COMMAND);
        let s: f64 = std::str::from_utf8(&out[0][2 + 2])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(s, 1.0 / 3.0);
        assert_eq!(score(f64::INFINITY), Bytes::from_static(b"+inf"));
    }

    #[test]
    fn stream_arguments_new_in_7_are_removed_for_older_targets() {
        let mut argv: Vec<Bytes> = ["XGROUP", "SETID", "s", "g", "5-0", "ENTRIESREAD", "3"]
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let original = argv.clone();
        adapt_for_target(&mut argv, 10);
        assert_eq!(argv, original);
        adapt_for_target(&mut argv, 9);
        assert_eq!(argv, original[..5].to_vec());
        let mut xsetid: Vec<Bytes> = [
            "XSETID",
            "s",
            "5-0",
            "ENTRIESADDED",
            "9",
            "MAXDELETEDID",
            "2-0",
        ]
        .iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect();
        adapt_for_target(&mut xsetid, 9);
        assert_eq!(xsetid.len(), 3);
    }

    #[test]
    fn rdb_version_follows_the_server_version() {
        assert_eq!(rdb_version_for("7.0.15"), 10);
        assert_eq!(rdb_version_for("6.2.14"), 9);
        assert_eq!(rdb_version_for("7.2.4"), 11);
        assert_eq!(rdb_version_for("5.0.7"), 9);
        assert_eq!(rdb_version_for("garbage"), 12);
    }

    #[test]
    fn conflict_policy_parses_from_config_words() {
        assert_eq!(
            "Rewrite".parse::<ConflictPolicy>().unwrap(),
            ConflictPolicy::Rewrite
        );
        assert_eq!(
            "skip".parse::<ConflictPolicy>().unwrap(),
            ConflictPolicy::Skip
        );
        assert_eq!(
            "panic".parse::<ConflictPolicy>().unwrap(),
            ConflictPolicy::Panic
        );
        assert!("merge".parse::<ConflictPolicy>().is_err());
    }
}
