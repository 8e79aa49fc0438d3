//! RedisShake 4's command groups (`[filter] allow_command_group` / `block_command_group`): the group names it
//! uses (Redis's `COMMAND DOCS` groups, upper case, `SORTED_SET` for `sorted-set`) and the commands of each, as
//! `COMMAND DOCS` of Redis 7.0, Redis 8.2 and Valkey 9.1 group them (Redis 8's vector set commands form the
//! `MODULE` group), plus `SENTINEL` and the three Tair module commands RedisShake knows.

/// Each group and its commands (lower case).
const GROUPS: &[(&str, &[&str])] = &[
    (
        "BITMAP",
        &[
            "bitcount",
            "bitfield",
            "bitfield_ro",
            "bitop",
            "bitpos",
            "getbit",
            "setbit",
        ],
    ),
    (
        "CLUSTER",
        &["asking", "cluster", "clusterscan", "readonly", "readwrite"],
    ),
    (
        "CONNECTION",
        &[
            "auth", "client", "echo", "hello", "ping", "quit", "reset", "select",
        ],
    ),
    (
        "GENERIC",
        &[
            "copy",
            "del",
            "dump",
            "exists",
            "expire",
            "expireat",
            "expiretime",
            "keys",
            "migrate",
            "move",
            "object",
            "persist",
            "pexpire",
            "pexpireat",
            "pexpiretime",
            "pttl",
            "randomkey",
            "rename",
            "renamenx",
            "restore",
            "scan",
            "sort",
            "sort_ro",
            "touch",
            "ttl",
            "type",
            "unlink",
            "wait",
            "waitaof",
        ],
    ),
    (
        "GEO",
        &[
            "geoadd",
            "geodist",
            "geohash",
            "geopos",
            "georadius",
            "georadius_ro",
            "georadiusbymember",
            "georadiusbymember_ro",
            "geosearch",
            "geosearchstore",
        ],
    ),
    (
        "HASH",
        &[
            "hdel",
            "hexists",
            "hexpire",
            "hexpireat",
            "hexpiretime",
            "hget",
            "hgetall",
            "hgetdel",
            "hgetex",
            "hincrby",
            "hincrbyfloat",
            "hkeys",
            "hlen",
            "hmget",
            "hmset",
            "hpersist",
            "hpexpire",
            "hpexpireat",
            "hpexpiretime",
            "hpttl",
            "hrandfield",
            "hscan",
            "hset",
            "hsetex",
            "hsetnx",
            "hstrlen",
            "httl",
            "hvals",
        ],
    ),
    (
        "HYPERLOGLOG",
        &["pfadd", "pfcount", "pfdebug", "pfmerge", "pfselftest"],
    ),
    (
        "LIST",
        &[
            "blmove",
            "blmpop",
            "blpop",
            "brpop",
            "brpoplpush",
            "lindex",
            "linsert",
            "llen",
            "lmove",
            "lmpop",
            "lpop",
            "lpos",
            "lpush",
            "lpushx",
            "lrange",
            "lrem",
            "lset",
            "ltrim",
            "rpop",
            "rpoplpush",
            "rpush",
            "rpushx",
        ],
    ),
    (
        "MODULE",
        &[
            "vadd",
            "vcard",
            "vdim",
            "vemb",
            "vgetattr",
            "vinfo",
            "vismember",
            "vlinks",
            "vrandmember",
            "vrem",
            "vsetattr",
            "vsim",
        ],
    ),
    (
        "PUBSUB",
        &[
            "psubscribe",
            "publish",
            "pubsub",
            "punsubscribe",
            "spublish",
            "ssubscribe",
            "subscribe",
            "sunsubscribe",
            "unsubscribe",
        ],
    ),
    (
        "SCRIPTING",
        &[
            "eval",
            "eval_ro",
            "evalsha",
            "evalsha_ro",
            "fcall",
            "fcall_ro",
            "function",
            "script",
        ],
    ),
    (
        "SERVER",
        &[
            "acl",
            "bgrewriteaof",
            "bgsave",
            "command",
            "commandlog",
            "config",
            "dbsize",
            "debug",
            "failover",
            "flushall",
            "flushdb",
            "info",
            "lastsave",
            "latency",
            "lolwut",
            "memory",
            "module",
            "monitor",
            "psync",
            "replconf",
            "replicaof",
            "restore-asking",
            "role",
            "save",
            "shutdown",
            "slaveof",
            "slowlog",
            "swapdb",
            "sync",
            "time",
        ],
    ),
    (
        "SET",
        &[
            "sadd",
            "scard",
            "sdiff",
            "sdiffstore",
            "sinter",
            "sintercard",
            "sinterstore",
            "sismember",
            "smembers",
            "smismember",
            "smove",
            "spop",
            "srandmember",
            "srem",
            "sscan",
            "sunion",
            "sunionstore",
        ],
    ),
    (
        "SORTED_SET",
        &[
            "bzmpop",
            "bzpopmax",
            "bzpopmin",
            "zadd",
            "zcard",
            "zcount",
            "zdiff",
            "zdiffstore",
            "zincrby",
            "zinter",
            "zintercard",
            "zinterstore",
            "zlexcount",
            "zmpop",
            "zmscore",
            "zpopmax",
            "zpopmin",
            "zrandmember",
            "zrange",
            "zrangebylex",
            "zrangebyscore",
            "zrangestore",
            "zrank",
            "zrem",
            "zremrangebylex",
            "zremrangebyrank",
            "zremrangebyscore",
            "zrevrange",
            "zrevrangebylex",
            "zrevrangebyscore",
            "zrevrank",
            "zscan",
            "zscore",
            "zunion",
            "zunionstore",
        ],
    ),
    (
        "STREAM",
        &[
            "xack",
            "xackdel",
            "xadd",
            "xautoclaim",
            "xclaim",
            "xdel",
            "xdelex",
            "xgroup",
            "xinfo",
            "xlen",
            "xpending",
            "xrange",
            "xread",
            "xreadgroup",
            "xrevrange",
            "xsetid",
            "xtrim",
        ],
    ),
    (
        "STRING",
        &[
            "append",
            "decr",
            "decrby",
            "delifeq",
            "get",
            "getdel",
            "getex",
            "getrange",
            "getset",
            "incr",
            "incrby",
            "incrbyfloat",
            "lcs",
            "mget",
            "mset",
            "msetex",
            "msetnx",
            "psetex",
            "set",
            "setex",
            "setnx",
            "setrange",
            "strlen",
            "substr",
        ],
    ),
    (
        "TRANSACTIONS",
        &["discard", "exec", "multi", "unwatch", "watch"],
    ),
    ("SENTINEL", &["sentinel"]),
    // The Tair module commands RedisShake 4 knows.
    ("TAIRHASH", &["exhset"]),
    ("TAIRSTRING", &["exset"]),
    ("TAIRZSET", &["exzadd"]),
];

/// The commands of `group` (any case; `sorted-set` and `SORTED_SET` alike); `None` for a name that is no group.
pub(crate) fn commands(group: &str) -> Option<&'static [&'static str]> {
    let wanted = group.trim().to_ascii_uppercase().replace('-', "_");
    GROUPS
        .iter()
        .find(|(name, _)| *name == wanted)
        .map(|(_, commands)| *commands)
}

/// The group names, for an error that lists them.
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    GROUPS.iter().map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_by_either_spelling_and_hold_their_commands() {
        assert!(commands("STRING").unwrap().contains(&"set"));
        assert!(commands("sorted-set").unwrap().contains(&"zadd"));
        assert!(commands("SORTED_SET").unwrap().contains(&"zadd"));
        assert!(commands("scripting").unwrap().contains(&"function"));
        assert!(commands("HASH").unwrap().contains(&"hsetex"));
        assert_eq!(commands("TAIRHASH"), Some(&["exhset"][..]));
        assert_eq!(commands("STRINGS"), None);
        // Every command is in one group only.
        let mut seen = std::collections::HashSet::new();
        for (_, commands) in GROUPS {
            for c in *commands {
                assert!(seen.insert(*c), "{c} in two groups");
            }
        }
    }
}
