//! The database a URL names (`redis://host:port/2`, `?db=2`), and what it means for a sync job and a verify.
//!
//! A URL that names a database names the one the user means, as `redis-cli -n` and client libraries take it:
//! - on the source (a standalone or scan source): the job copies that database only, as `allow_dbs = [N]`;
//! - on the target (a standalone target), with the source's database named too: that database goes to this
//!   one, as `db_map = { "N" = M }`; with a cluster source (only database 0) database 0 goes to it;
//! - a target URL's `/0` with no database named on the source is the URL default and changes nothing; another
//!   number there is an error (which of the source's databases would go to it is not said), unless the database
//!   map sends one there;
//! - a cluster has only database 0 and a sentinel has none: another number in their URLs is an error.
//!
//! Conflicts with the filter or the map (the source's database blocked, not allowed, or mapped elsewhere) are
//! errors, never silently resolved.

use std::collections::BTreeMap;

use ferry_resp::ConnectOptions;

use super::{redact_url, Endpoint, FilterConfig, Source, Target};
use crate::error::Error;

impl Endpoint {
    /// The database the URL names (`/N` or `?db=N`), `None` when it names none (the connection then uses 0).
    pub fn url_db(&self) -> Result<Option<u32>, Error> {
        let opts = ConnectOptions::from_url(&self.url)
            .map_err(|e| Error::config(format!("endpoint {}: {e}", redact_url(&self.url))))?;
        if !names_db(&self.url) {
            return Ok(None);
        }
        u32::try_from(opts.db).map(Some).map_err(|_| {
            Error::config(format!(
                "endpoint {}: database {} is out of range",
                redact_url(&self.url),
                opts.db
            ))
        })
    }
}

/// Whether a URL that parses names a database: a path after the authority, or a `db` query key (the same
/// split as `ConnectOptions::from_url`).
fn names_db(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = rest.find('/').map_or("", |i| &rest[i + 1..]);
    !path.is_empty()
        || query
            .split('&')
            .any(|p| p.split_once('=').unwrap_or((p, "")).0 == "db")
}

/// Refuses a database other than 0 in the URLs of a cluster or a sentinel group.
fn no_db(endpoints: &[Endpoint], what: &str, instead: &str) -> Result<(), Error> {
    for e in endpoints {
        if let Some(db) = e.url_db()?.filter(|&d| d != 0) {
            return Err(Error::config(format!(
                "{what} {}: the URL names database {db}, but {instead}",
                redact_url(&e.url)
            )));
        }
    }
    Ok(())
}

/// The source database the source's URL names (checking the URLs that cannot name one).
fn source_db(source: &Source) -> Result<Option<u32>, Error> {
    match source {
        Source::Standalone(e) | Source::Scan { endpoint: e, .. } => {
            let db = e.url_db()?;
            if let (Some(n), Source::Scan { cluster, dbs, .. }) = (db, source) {
                if *cluster && n != 0 {
                    no_db(
                        std::slice::from_ref(e),
                        "source",
                        "a cluster has only database 0",
                    )?;
                }
                if let Some(dbs) = dbs.as_ref().filter(|d| !d.contains(&n)) {
                    return Err(Error::config(format!(
                        "the source URL names database {n}, which the scan's dbs {dbs:?} leave out"
                    )));
                }
            }
            Ok(db)
        }
        Source::Cluster { seeds, .. } => {
            no_db(seeds, "source", "a cluster has only database 0")?;
            Ok(None)
        }
        Source::Sentinel { sentinels, .. } => {
            no_db(
                sentinels,
                "source sentinel",
                "a sentinel has no databases (choose the master's with filter.allow_dbs)",
            )?;
            Ok(None)
        }
        Source::RdbFile { .. } | Source::AofFile { .. } => Ok(None),
    }
}

/// Whether every key of the source is in its database 0.
fn source_is_cluster(source: &Source) -> bool {
    matches!(
        source,
        Source::Cluster { .. } | Source::Scan { cluster: true, .. }
    )
}

/// Applies the databases the URLs of `source` and `target` name to a job's (or a verify's) filter and database
/// map; see the module documentation. Returns a line describing what was applied, if anything was.
pub(crate) fn apply_url_dbs(
    source: &Source,
    target: &Target,
    filter: &mut FilterConfig,
    db_map: &mut BTreeMap<String, u32>,
) -> Result<Option<String>, Error> {
    let from = source_db(source)?;
    let to = match target {
        Target::Standalone(e) => e.url_db()?,
        Target::Cluster { seeds } => {
            no_db(seeds, "target", "a cluster has only database 0")?;
            None
        }
        Target::Sentinel { sentinels, .. } => {
            no_db(
                sentinels,
                "target sentinel",
                "a sentinel has no databases (map the source's with db_map)",
            )?;
            None
        }
    };
    let mut applied = Vec::new();
    if let Some(n) = from {
        if filter.block_dbs.contains(&n) {
            return Err(Error::config(format!(
                "the source URL names database {n}, which filter.block_dbs blocks"
            )));
        }
        if !filter.allow_dbs.is_empty() && !filter.allow_dbs.contains(&n) {
            return Err(Error::config(format!(
                "the source URL names database {n}, which filter.allow_dbs {:?} does not allow",
                filter.allow_dbs
            )));
        }
        filter.allow_dbs = vec![n];
        applied.push(format!("source database {n} only"));
    }
    let from = match (from, to) {
        (_, None) => None,
        (Some(n), Some(_)) => Some(n),
        (None, Some(0)) => None,
        (None, Some(_)) if source_is_cluster(source) => Some(0),
        // The map already says which database goes there.
        (None, Some(m)) if db_map.values().any(|&to| to == m) => None,
        (None, Some(m)) => {
            let name = match source {
                Source::RdbFile { .. } | Source::AofFile { .. } => {
                    "map the file's database with db_map"
                }
                Source::Sentinel { .. } => "map the master's database with db_map",
                _ => "name it in the source URL (redis://host:port/N), or map it with db_map",
            };
            return Err(Error::config(format!(
                "the target URL names database {m}, but which of the source's databases goes there is not \
                 said: {name} (`--db-map N:{m}`, or `[db_map] \"N\" = {m}`)"
            )));
        }
    };
    if let (Some(n), Some(m)) = (from, to) {
        match db_map.get(&n.to_string()) {
            Some(&mapped) if mapped != m => {
                return Err(Error::config(format!(
                    "the URLs send source database {n} to target database {m}, but db_map sends it to {mapped}"
                )))
            }
            _ => {}
        }
        db_map.insert(n.to_string(), m);
        if applied.is_empty() {
            applied.push(format!("source database {n}"));
        }
        applied.push(format!("into target database {m}"));
    }
    Ok((!applied.is_empty()).then(|| format!("the URLs name databases: {}", applied.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(
        source: Source,
        target: Target,
    ) -> Result<(FilterConfig, BTreeMap<String, u32>), Error> {
        let (mut f, mut m) = (FilterConfig::default(), BTreeMap::new());
        apply_url_dbs(&source, &target, &mut f, &mut m)?;
        Ok((f, m))
    }

    #[test]
    fn a_url_names_a_database_by_its_path_or_its_db_query_key() {
        let db = |u: &str| Endpoint::new(u).url_db().unwrap();
        assert_eq!(db("redis://h:1"), None);
        assert_eq!(db("redis://h:1/"), None);
        assert_eq!(db("redis://h:1/0"), Some(0));
        assert_eq!(db("redis://u:p@h:1/3"), Some(3));
        assert_eq!(db("rediss://h:1?db=4&protocol=3"), Some(4));
        assert_eq!(db("redis://h:1?protocol=3"), None);
        assert!(Endpoint::new("redis://h:1/x").url_db().is_err());
    }

    #[test]
    fn the_source_database_is_the_only_one_copied_and_goes_to_the_target_database() {
        let (f, m) = apply(
            Source::standalone("redis://s:1/2"),
            Target::standalone("redis://t:1/5"),
        )
        .unwrap();
        assert_eq!(f.allow_dbs, vec![2]);
        assert_eq!(m.get("2"), Some(&5));
        let (f, m) = apply(
            Source::standalone("redis://s:1/2"),
            Target::standalone("redis://t:1"),
        )
        .unwrap();
        assert_eq!((f.allow_dbs, m.len()), (vec![2], 0));
        // No database named: nothing changes; a target's /0 alone is the URL default.
        for t in ["redis://t:1", "redis://t:1/0"] {
            let (f, m) = apply(Source::standalone("redis://s:1"), Target::standalone(t)).unwrap();
            assert_eq!((f, m.len()), (FilterConfig::default(), 0));
        }
        // A cluster source has only database 0.
        let cluster = Source::Cluster {
            seeds: vec![Endpoint::new("redis://s:1")],
            shards: None,
            prefer_replica: false,
        };
        let (_, m) = apply(cluster, Target::standalone("redis://t:1/7")).unwrap();
        assert_eq!(m.get("0"), Some(&7));
        // A target database the map already sends a database to.
        let mut m = BTreeMap::from([("1".to_string(), 3)]);
        let note = apply_url_dbs(
            &Source::rdb_file("dump.rdb"),
            &Target::standalone("redis://t:1/3"),
            &mut FilterConfig::default(),
            &mut m,
        )
        .unwrap();
        assert_eq!((note, m.len()), (None, 1));
    }

    #[test]
    fn what_the_urls_cannot_mean_is_an_error_that_says_what_to_do() {
        let err = |s: Source, t: Target| apply(s, t).unwrap_err().to_string();
        let e = err(
            Source::standalone("redis://s:1"),
            Target::standalone("redis://t:1/5"),
        );
        assert!(e.contains("--db-map N:5"), "{e}");
        let sentinel = Source::Sentinel {
            sentinels: vec![Endpoint::new("redis://s:26379")],
            master: "m".into(),
            master_auth: Default::default(),
        };
        let e = err(sentinel, Target::standalone("redis://t:1/5"));
        assert!(e.contains("map the master's database with db_map"), "{e}");
        let e = err(
            Source::standalone("redis://s:1"),
            Target::cluster("redis://t:1/1"),
        );
        assert!(e.contains("only database 0"), "{e}");
        let mut f = FilterConfig {
            allow_dbs: vec![1],
            ..Default::default()
        };
        let e = apply_url_dbs(
            &Source::standalone("redis://s:1/2"),
            &Target::standalone("redis://t:1"),
            &mut f,
            &mut BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not allow"), "{e}");
        let mut m = BTreeMap::from([("2".to_string(), 3)]);
        let e = apply_url_dbs(
            &Source::standalone("redis://s:1/2"),
            &Target::standalone("redis://t:1/5"),
            &mut FilterConfig::default(),
            &mut m,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("db_map sends it to 3"), "{e}");
        let scan = Source::Scan {
            endpoint: Endpoint::new("redis://s:1/4"),
            dbs: Some(vec![0, 1]),
            notifications: false,
            cluster: false,
        };
        let e = err(scan, Target::standalone("redis://t:1"));
        assert!(e.contains("leave out"), "{e}");
    }
}
