//! A `FLUSHALL` or `FLUSHDB` in the stream of a cluster source's shard.
//!
//! On a cluster, a flush empties one master: the node it was sent to (cluster clients send it to every master,
//! one by one). Forwarded as it is, it would empty the whole target, deleting the keys the other shards copied
//! and their checkpoints; each of them would then take a full copy of itself. So a shard's flush is applied as
//! what it did on the source:
//!
//! 1. what the pipeline holds is committed first (the target then holds everything before the flush);
//! 2. the slots the shard's master serves are read ([`crate::cluster_source::ShardFollower::flush_scope`]),
//!    and the flushed target databases are scanned (every master of a cluster target) for keys of the job's
//!    domain in those slots (the job's filters and database map apply; ferry's own keys are never in it), which
//!    are deleted. A slot in a `MIGRATE` between the master and another node holds keys of both: a key found
//!    there is deleted only when the other node does not hold it;
//! 3. the flush's unit is then applied with each flush replaced by a `DEL` of the keys the unit's earlier
//!    commands wrote in the flushed databases (a transaction that writes and then flushes), and commits its
//!    checkpoint like any other unit.
//!
//! Exactness: the deletion is not atomic with the checkpoint, and need not be. Nothing else writes the shard's
//! slots on the target while its stream waits here (but the other node of a slot in migration, which step 2
//! asks), and a crash before the unit commits repeats steps 1 to 3
//! from the same checkpoint, which ends in the same state. A flush applied long after it ran (a lagging stream)
//! reads the master's slots as they are when it is applied: a slot the master gave away or got in between is
//! judged by its owner then.
//!
//! The cost is one scan of the flushed databases of the target per flush of each shard: a target of millions
//! of keys flushed by a client on every master is scanned once per master.

use std::collections::HashSet;

use bytes::Bytes;
use tracing::{info, warn};

use crate::cluster_source::ShardFollower;
use crate::error::Error;
use crate::job::Replicator;
use crate::pipeline::Unit;
use crate::redo::{scan_domain, Domain, Visit};
use crate::sink::Sink;

/// What a command flushes: every database (`FLUSHALL`), its own (`FLUSHDB`), or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    All,
    Db,
}

/// Whether `argv` is a `FLUSHALL` or a `FLUSHDB`.
pub(crate) fn flush_of(argv: &[Bytes]) -> Option<Flush> {
    let name = argv.first()?;
    if name.eq_ignore_ascii_case(b"flushall") {
        Some(Flush::All)
    } else if name.eq_ignore_ascii_case(b"flushdb") {
        Some(Flush::Db)
    } else {
        None
    }
}

/// Whether a unit (after the pipeline, its databases the target's) holds a flush.
pub(crate) fn has_flush(unit: &Unit) -> bool {
    unit.commands.iter().any(|c| flush_of(&c.argv).is_some())
}

/// The target databases a unit's flushes empty: `None` for all of them (a `FLUSHALL`).
fn flushed_dbs(unit: &Unit) -> Option<Vec<i64>> {
    let mut dbs = Vec::new();
    for c in &unit.commands {
        match flush_of(&c.argv) {
            Some(Flush::All) => return None,
            Some(Flush::Db) if !dbs.contains(&c.db) => dbs.push(c.db),
            _ => {}
        }
    }
    Some(dbs)
}

/// The unit with each flush replaced by a `DEL` of the keys its earlier commands wrote in the databases that
/// flush empties (one `DEL` per key, so a cluster target takes each in its slot); a flush after no such write
/// is left out. `keys_of` gives a command's keys.
pub(crate) fn without_flushes(mut unit: Unit, keys_of: impl Fn(&[Bytes]) -> Vec<Bytes>) -> Unit {
    let mut written: Vec<(i64, Bytes)> = Vec::new();
    let mut out = Vec::with_capacity(unit.commands.len());
    for cmd in unit.commands {
        match flush_of(&cmd.argv) {
            None => {
                for key in keys_of(&cmd.argv) {
                    written.push((cmd.db, key));
                }
                out.push(cmd);
            }
            Some(flush) => {
                let mut seen = HashSet::new();
                let (gone, kept): (Vec<_>, Vec<_>) = written
                    .into_iter()
                    .partition(|(db, _)| flush == Flush::All || *db == cmd.db);
                written = kept;
                for (db, key) in gone {
                    if seen.insert((db, key.clone())) {
                        out.push(crate::pipeline::Command {
                            db,
                            argv: vec![Bytes::from_static(b"DEL"), key],
                            end_offset: cmd.end_offset,
                        });
                    }
                }
            }
        }
    }
    unit.commands = out;
    unit
}

impl Replicator {
    /// Step 2 of the module documentation: deletes, on the target, the keys `shard`'s flush in `unit` emptied
    /// on its master. Returns how many.
    pub(crate) async fn delete_flushed(
        &self,
        sink: &mut Sink,
        shard: &ShardFollower,
        unit: &Unit,
    ) -> Result<u64, Error> {
        let dbs = flushed_dbs(unit);
        let scope = shard.flush_scope().await?;
        if !scope.slots.contains(&true) {
            warn!(
                shard = shard.name(),
                "a FLUSHALL/FLUSHDB of a source shard whose master is not known now or serves no slot (it gave its \
                 slots away since): nothing deleted on the target; check with `ferry verify`"
            );
            return Ok(0);
        }
        let mut domain = Domain::new(&self.filter, &self.config.db_map).in_slots(&scope.slots);
        if let Some(dbs) = &dbs {
            domain = domain.in_dbs(dbs);
        }
        let deleted = scan_domain(sink, &domain, Visit::Flush(&scope)).await?;
        info!(
            shard = shard.name(),
            deleted,
            "a FLUSHALL/FLUSHDB of a source shard: deleted the keys of the slots its master serves on the target"
        );
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Command;

    fn cmd(db: i64, words: &[&str]) -> Command {
        Command {
            db,
            argv: words
                .iter()
                .map(|w| Bytes::copy_from_slice(w.as_bytes()))
                .collect(),
            end_offset: 0,
        }
    }

    fn unit(commands: Vec<Command>) -> Unit {
        Unit {
            commands,
            transaction: true,
            end_offset: 10,
            end_db: 0,
            report: Vec::new(),
        }
    }

    fn words(u: &Unit) -> Vec<String> {
        u.commands
            .iter()
            .map(|c| {
                let w: Vec<String> = c
                    .argv
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                format!("{}:{}", c.db, w.join(" "))
            })
            .collect()
    }

    fn first_key(argv: &[Bytes]) -> Vec<Bytes> {
        argv.get(1).cloned().into_iter().collect()
    }

    #[test]
    fn flushes_are_told_by_name_in_any_case() {
        let b = |w: &str| vec![Bytes::copy_from_slice(w.as_bytes())];
        assert_eq!(flush_of(&b("flushall")), Some(Flush::All));
        assert_eq!(flush_of(&b("FlushDB")), Some(Flush::Db));
        assert_eq!(flush_of(&b("flush")), None);
        assert_eq!(flush_of(&[]), None);
    }

    #[test]
    fn a_flush_becomes_a_del_of_what_the_unit_wrote_before_it_in_the_flushed_databases() {
        let u = unit(vec![
            cmd(0, &["SET", "a", "1"]),
            cmd(1, &["SET", "b", "1"]),
            cmd(0, &["INCR", "a"]),
            cmd(0, &["FLUSHDB"]),
            cmd(0, &["SET", "c", "1"]),
        ]);
        assert_eq!(flushed_dbs(&u), Some(vec![0]));
        assert_eq!(
            words(&without_flushes(u, first_key)),
            ["0:SET a 1", "1:SET b 1", "0:INCR a", "0:DEL a", "0:SET c 1"]
        );
        // A FLUSHALL empties every database; a flush after nothing disappears.
        let u = unit(vec![
            cmd(0, &["FLUSHALL"]),
            cmd(0, &["SET", "a", "1"]),
            cmd(1, &["SET", "b", "1"]),
            cmd(0, &["FLUSHALL", "ASYNC"]),
        ]);
        assert_eq!(flushed_dbs(&u), None);
        assert_eq!(
            words(&without_flushes(u, first_key)),
            ["0:SET a 1", "1:SET b 1", "0:DEL a", "1:DEL b"]
        );
    }
}
