//! The database map: source database numbers to target database numbers.
//!
//! Besides the database a command runs in, a few commands name databases in their arguments (`MOVE key db`,
//! `COPY src dst DB db`, `SWAPDB a b`); those arguments are mapped too.

use std::collections::HashMap;

use bytes::Bytes;

/// Maps source databases to target databases; a database not in the map keeps its number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbMap {
    map: HashMap<i64, i64>,
}

impl DbMap {
    /// A map from `(source, target)` pairs.
    pub fn new(pairs: impl IntoIterator<Item = (i64, i64)>) -> DbMap {
        DbMap {
            map: pairs.into_iter().collect(),
        }
    }

    /// True when no database is renumbered.
    pub fn is_identity(&self) -> bool {
        self.map.iter().all(|(s, t)| s == t)
    }

    /// The target database of source database `db`.
    pub fn target(&self, db: i64) -> i64 {
        self.map.get(&db).copied().unwrap_or(db)
    }

    /// The source databases whose writes land in target database `db` (the reverse of [`DbMap::target`]).
    pub fn sources_of(&self, db: i64) -> Vec<i64> {
        let mut out: Vec<i64> = self
            .map
            .iter()
            .filter(|&(_, &t)| t == db)
            .map(|(&s, _)| s)
            .collect();
        if !self.map.contains_key(&db) {
            out.push(db);
        }
        out
    }

    /// Rewrites the database numbers in the arguments of `MOVE`, `COPY ... DB` and `SWAPDB`.
    pub fn map_arguments(&self, argv: &mut [Bytes]) {
        if self.is_identity() || argv.is_empty() {
            return;
        }
        let name = argv[0].to_ascii_lowercase();
        let positions: Vec<usize> = match name.as_slice() {
            b"move" => vec![2],
            b"swapdb" => vec![1, 2],
            b"copy" => (3..argv.len().saturating_sub(1))
                .filter(|&i| argv[i].eq_ignore_ascii_case(b"db"))
                .map(|i| i + 1)
                .collect(),
            _ => Vec::new(),
        };
        for i in positions {
            let Some(arg) = argv.get(i) else { continue };
            let parsed = std::str::from_utf8(arg)
                .ok()
                .and_then(|s| s.parse::<i64>().ok());
            if let Some(db) = parsed {
                argv[i] = Bytes::from(self.target(db).to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    #[test]
    fn unmapped_databases_keep_their_number() {
        let map = DbMap::new([(1, 5)]);
        assert_eq!(map.target(1), 5);
        assert_eq!(map.target(2), 2);
        // Target 5 gets source 1 and its own source 5.
        let mut five = map.sources_of(5);
        five.sort_unstable();
        assert_eq!(five, vec![1, 5]);
        assert_eq!(map.sources_of(2), vec![2]);
        assert!(map.sources_of(1).is_empty());
    }

    #[test]
    fn database_arguments_of_move_copy_swapdb_are_mapped() {
        let map = DbMap::new([(1, 5), (2, 6)]);
        let mut m = argv(&["MOVE", "k", "1"]);
        map.map_arguments(&mut m);
        assert_eq!(m, argv(&["MOVE", "k", "5"]));
        let mut s = argv(&["swapdb", "1", "2"]);
        map.map_arguments(&mut s);
        assert_eq!(s, argv(&["swapdb", "5", "6"]));
        let mut c = argv(&["COPY", "a", "b", "DB", "2", "REPLACE"]);
        map.map_arguments(&mut c);
        assert_eq!(c, argv(&["COPY", "a", "b", "DB", "6", "REPLACE"]));
        let mut other = argv(&["SET", "1", "2"]);
        map.map_arguments(&mut other);
        assert_eq!(other, argv(&["SET", "1", "2"]));
    }
}
