//! Filters: which databases, keys and commands go to the target.
//!
//! Allow lists, when not empty, must match; block lists must not. A key passes when it passes the prefix, suffix
//! and regex rules. A command passes when its name passes and every key passes; when only some of its keys pass,
//! the command is neither forwarded nor silently dropped: the decision says so, and the job reports it.

use regex::bytes::Regex;

use crate::error::Error;

/// Prefixes of ferry's own keys in a deployment: checkpoints, the target policy's stored report, the DR state
/// record, shard leases. They are never copied from a source, neither from its RDB nor from its stream,
/// whatever the filters say: a B -> A job must not carry the A -> B job's checkpoint back into A.
pub const RESERVED_KEY_PREFIXES: [&str; 5] = [
    crate::checkpoint::KEY_PREFIX,
    crate::checkpoint::SKIPPED_PREFIX,
    crate::checkpoint::CONVERTED_PREFIX,
    "ferry:state:",
    "ferry:lease:",
];

/// True for a key of ferry's own (see [`RESERVED_KEY_PREFIXES`]).
pub fn is_reserved_key(key: &[u8]) -> bool {
    key.starts_with(b"ferry:")
        && RESERVED_KEY_PREFIXES
            .iter()
            .any(|p| key.starts_with(p.as_bytes()))
}

/// The filter rules, as configured.
#[derive(Debug, Clone, Default)]
pub struct FilterConfig {
    /// Databases to copy (empty: all).
    pub allow_dbs: Vec<i64>,
    /// Databases never copied.
    pub block_dbs: Vec<i64>,
    /// Keys must start with one of these (empty: no rule).
    pub allow_key_prefixes: Vec<Vec<u8>>,
    /// Keys starting with one of these are not copied.
    pub block_key_prefixes: Vec<Vec<u8>>,
    /// Keys must end with one of these (empty: no rule).
    pub allow_key_suffixes: Vec<Vec<u8>>,
    /// Keys ending with one of these are not copied.
    pub block_key_suffixes: Vec<Vec<u8>>,
    /// Keys must match one of these regular expressions (empty: no rule).
    pub allow_key_regexes: Vec<String>,
    /// Keys matching one of these are not copied.
    pub block_key_regexes: Vec<String>,
    /// Commands (case-insensitive names) to forward (empty: all).
    pub allow_commands: Vec<String>,
    /// Commands never forwarded.
    pub block_commands: Vec<String>,
}

/// Compiled filter rules.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    cfg: FilterConfig,
    allow_re: Vec<Regex>,
    block_re: Vec<Regex>,
    allow_cmds: Vec<String>,
    block_cmds: Vec<String>,
}

/// What the filter decided for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward it.
    Pass,
    /// Do not forward it: its database, name or all its keys are filtered out.
    Drop,
    /// Some keys pass and some do not: the command cannot be forwarded as is. `blocked` lists the keys that
    /// did not pass, for the report.
    Partial {
        /// The keys that did not pass.
        blocked: Vec<Vec<u8>>,
    },
}

impl Filter {
    /// Compiles the rules; an invalid regular expression is a configuration error.
    pub fn new(cfg: FilterConfig) -> Result<Filter, Error> {
        let compile = |list: &[String]| -> Result<Vec<Regex>, Error> {
            list.iter()
                .map(|r| Regex::new(r).map_err(|e| Error::Config(format!("key regex {r:?}: {e}"))))
                .collect()
        };
        Ok(Filter {
            allow_re: compile(&cfg.allow_key_regexes)?,
            block_re: compile(&cfg.block_key_regexes)?,
            allow_cmds: cfg
                .allow_commands
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            block_cmds: cfg
                .block_commands
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            cfg,
        })
    }

    /// True when the filter lets everything through.
    pub fn is_pass_all(&self) -> bool {
        self.cfg.allow_dbs.is_empty()
            && self.cfg.block_dbs.is_empty()
            && !self.has_key_rules()
            && self.allow_cmds.is_empty()
            && self.block_cmds.is_empty()
    }

    /// True when some rule looks at keys (the job then needs the keys of each command).
    pub fn has_key_rules(&self) -> bool {
        !(self.cfg.allow_key_prefixes.is_empty()
            && self.cfg.block_key_prefixes.is_empty()
            && self.cfg.allow_key_suffixes.is_empty()
            && self.cfg.block_key_suffixes.is_empty()
            && self.allow_re.is_empty()
            && self.block_re.is_empty())
    }

    /// Whether source database `db` is copied.
    pub fn db_passes(&self, db: i64) -> bool {
        (self.cfg.allow_dbs.is_empty() || self.cfg.allow_dbs.contains(&db))
            && !self.cfg.block_dbs.contains(&db)
    }

    /// Whether a key is copied (never one of ferry's own keys).
    pub fn key_passes(&self, key: &[u8]) -> bool {
        if is_reserved_key(key) {
            return false;
        }
        let c = &self.cfg;
        let allowed = (c.allow_key_prefixes.is_empty()
            || c.allow_key_prefixes.iter().any(|p| key.starts_with(p)))
            && (c.allow_key_suffixes.is_empty()
                || c.allow_key_suffixes.iter().any(|s| key.ends_with(s)))
            && (self.allow_re.is_empty() || self.allow_re.iter().any(|r| r.is_match(key)));
        allowed
            && !c.block_key_prefixes.iter().any(|p| key.starts_with(p))
            && !c.block_key_suffixes.iter().any(|s| key.ends_with(s))
            && !self.block_re.iter().any(|r| r.is_match(key))
    }

    /// Whether a command name (any case) is forwarded.
    pub fn command_passes(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        (self.allow_cmds.is_empty() || self.allow_cmds.contains(&name))
            && !self.block_cmds.contains(&name)
    }

    /// Decides for a command of database `db` named `name` whose keys are `keys`.
    pub fn decide(&self, db: i64, name: &str, keys: &[&[u8]]) -> Decision {
        if !self.db_passes(db) || !self.command_passes(name) {
            return Decision::Drop;
        }
        let blocked: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| !self.key_passes(k))
            .map(|k| k.to_vec())
            .collect();
        if blocked.is_empty() {
            Decision::Pass
        } else if blocked.len() == keys.len() {
            Decision::Drop
        } else {
            Decision::Partial { blocked }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(cfg: FilterConfig) -> Filter {
        Filter::new(cfg).unwrap()
    }

    #[test]
    fn empty_filter_passes_everything() {
        let f = filter(FilterConfig::default());
        assert!(f.is_pass_all());
        assert_eq!(f.decide(3, "SET", &[b"k"]), Decision::Pass);
    }

    #[test]
    fn databases_allowed_and_blocked() {
        let f = filter(FilterConfig {
            allow_dbs: vec![0, 1],
            block_dbs: vec![1],
            ..Default::default()
        });
        assert!(f.db_passes(0));
        assert!(!f.db_passes(1));
        assert!(!f.db_passes(2));
    }

    #[test]
    fn key_prefix_suffix_and_regex_rules_combine() {
        let f = filter(FilterConfig {
            allow_key_prefixes: vec![b"user:".to_vec()],
            block_key_suffixes: vec![b":tmp".to_vec()],
            block_key_regexes: vec!["^user:[0-9]+:secret$".into()],
            ..Default::default()
        });
        assert!(f.key_passes(b"user:1"));
        assert!(!f.key_passes(b"order:1"));
        assert!(!f.key_passes(b"user:1:tmp"));
        assert!(!f.key_passes(b"user:42:secret"));
        let g = filter(FilterConfig {
            allow_key_regexes: vec!["^a.c$".into()],
            ..Default::default()
        });
        assert!(g.key_passes(b"abc"));
        assert!(!g.key_passes(b"abcd"));
    }

    #[test]
    fn commands_allowed_and_blocked_case_insensitively() {
        let f = filter(FilterConfig {
            block_commands: vec!["FlushAll".into()],
            ..Default::default()
        });
        assert!(!f.command_passes("flushall"));
        assert!(f.command_passes("SET"));
        let g = filter(FilterConfig {
            allow_commands: vec!["set".into()],
            ..Default::default()
        });
        assert_eq!(g.decide(0, "DEL", &[b"k"]), Decision::Drop);
    }

    #[test]
    fn command_with_some_keys_filtered_is_partial_not_dropped() {
        let f = filter(FilterConfig {
            block_key_prefixes: vec![b"tmp:".to_vec()],
            ..Default::default()
        });
        assert_eq!(
            f.decide(0, "MSET", &[b"a", b"tmp:b"]),
            Decision::Partial {
                blocked: vec![b"tmp:b".to_vec()]
            }
        );
        assert_eq!(f.decide(0, "DEL", &[b"tmp:a", b"tmp:b"]), Decision::Drop);
        assert_eq!(f.decide(0, "DEL", &[b"a"]), Decision::Pass);
    }

    #[test]
    fn ferrys_own_keys_never_pass() {
        let f = filter(FilterConfig::default());
        assert!(!f.key_passes(b"ferry:checkpoint:{ferry}"));
        assert!(!f.key_passes(b"ferry:state:pair"));
        assert!(f.key_passes(b"ferry:counter:x"));
        assert_eq!(
            f.decide(0, "MSET", &[b"a", b"ferry:checkpoint:{x}"]),
            Decision::Partial {
                blocked: vec![b"ferry:checkpoint:{x}".to_vec()]
            }
        );
    }

    #[test]
    fn invalid_regex_is_a_config_error() {
        let err = Filter::new(FilterConfig {
            allow_key_regexes: vec!["(".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, Error::Config(_)));
    }
}
