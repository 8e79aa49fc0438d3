//! Server addresses and the NAT address map.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A `host:port` pair as sentinels announce it or as the pool reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Addr {
    /// Builds an address.
    pub fn new(host: impl Into<String>, port: u16) -> Addr {
        Addr {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Error returned when a string is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseAddrError(String);

impl fmt::Display for ParseAddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a host:port address: {:?}", self.0)
    }
}

impl std::error::Error for ParseAddrError {}

impl FromStr for Addr {
    type Err = ParseAddrError;

    /// Parses `host:port` or `[v6]:port`.
    fn from_str(s: &str) -> Result<Addr, ParseAddrError> {
        let err = || ParseAddrError(s.to_string());
        let (host, port) = s.rsplit_once(':').ok_or_else(err)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err());
        }
        let port = port.parse::<u16>().map_err(|_| err())?;
        Ok(Addr::new(host, port))
    }
}

impl From<(&str, u16)> for Addr {
    fn from((host, port): (&str, u16)) -> Addr {
        Addr::new(host, port)
    }
}

impl From<(String, u16)> for Addr {
    fn from((host, port): (String, u16)) -> Addr {
        Addr::new(host, port)
    }
}

/// Maps addresses that sentinels announce (as seen inside a NAT or a container network) to the
/// addresses this process can reach. Applied to masters, replicas and discovered sentinels.
/// Addresses without an entry are used as announced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressMap {
    entries: HashMap<Addr, Addr>,
}

impl AddressMap {
    /// An empty map (every address is used as announced).
    pub fn new() -> AddressMap {
        AddressMap::default()
    }

    /// Adds `announced -> reachable`, replacing an earlier entry for `announced`.
    pub fn insert(&mut self, announced: Addr, reachable: Addr) -> &mut AddressMap {
        self.entries.insert(announced, reachable);
        self
    }

    /// Builder form of [`AddressMap::insert`].
    pub fn with(mut self, announced: Addr, reachable: Addr) -> AddressMap {
        self.insert(announced, reachable);
        self
    }

    /// The reachable address for an announced one.
    pub fn map(&self, announced: &Addr) -> Addr {
        self.entries
            .get(announced)
            .cloned()
            .unwrap_or_else(|| announced.clone())
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_host_port() {
        let a: Addr = "127.0.0.1:6379".parse().unwrap();
        assert_eq!(a, Addr::new("127.0.0.1", 6379));
        assert_eq!(a.to_string(), "127.0.0.1:6379");
        let v6: Addr = "[::1]:26379".parse().unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:26379");
        assert!("nohost".parse::<Addr>().is_err());
        assert!(":1".parse::<Addr>().is_err());
        assert!("h:99999".parse::<Addr>().is_err());
    }

    #[test]
    fn address_map_translates_only_known_addresses() {
        let m = AddressMap::new().with(Addr::new("10.0.0.5", 6379), Addr::new("127.0.0.1", 16379));
        assert_eq!(
            m.map(&Addr::new("10.0.0.5", 6379)),
            Addr::new("127.0.0.1", 16379)
        );
        assert_eq!(
            m.map(&Addr::new("10.0.0.6", 6379)),
            Addr::new("10.0.0.6", 6379)
        );
    }
}
