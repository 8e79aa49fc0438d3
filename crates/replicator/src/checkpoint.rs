//! Checkpoints: where in the source's replication stream the target is, stored in the target.
//!
//! A checkpoint is written by the sink in the same script (or `MULTI`/`EXEC`) as the writes it covers, so the
//! target holds exactly the writes up to the position it records, never more and never less. While a full sync
//! is being applied the key holds a `fullsync` marker instead: the RDB is not resumable, so a job restarted in
//! that state does the full sync again.
//!
//! # Format (version 2)
//!
//! ```text
//! v2 <replid> <offset> db=<db> part=<n> epoch=<e>[ node=<node id> slots=<a>-<b>,<c>-<d>...]
//! ```
//!
//! - `replid`, `offset`: the source's replication id and offset (counted like its `master_repl_offset`) the
//!   target is at; `offset` is always a place outside a source transaction, where PSYNC can continue.
//! - `db`: the database selected in the source's stream at `offset`. A source does not repeat `SELECT` after a
//!   partial resync, so the stream parser of a resumed session starts in this database.
//! - `part`: how many commands of the first unit after `offset` (a source `MULTI`/`EXEC` group) the target
//!   already holds. Non-zero only when the target refused a command inside a source transaction: the commands
//!   before it are applied and stay applied (neither Redis transactions nor scripts roll back), so a resume must
//!   skip exactly those and send the refused one and what follows.
//! - `epoch`: the fencing epoch of the job that wrote it (the DR state record's epoch for a job a `DrPair`
//!   runs, 0 for a plain job). A job refuses to start from a checkpoint of a higher epoch than its own.
//! - `node`, `slots`: on a cluster target, the node id of the master the checkpoint was written on and the slot
//!   ranges it owned then: the checkpoint covers the keys of exactly these slots.
//!
//! # Fenced
//!
//! ```text
//! fenced epoch=<e>
//! ```
//!
//! Written over a job's checkpoint when the direction of a DR pair changes ([`Checkpoint::Fenced`]): a running
//! job of that direction finds its chain broken by a fence at its next batch and stops with
//! [`Error::Fenced`] (not retried); a job started later refuses to start ([`admit`]). Only the pair itself
//! replaces a fence (with a seeded checkpoint of a newer epoch, or by deleting it for a full copy).
//!
//! A version 1 checkpoint (`<replid> <offset>`, written before the stream's database was recorded) still reads.
//! It resumes with database 0 and `part` 0: that is what the version that wrote it did on every resume, and it
//! is right for a source that writes only in database 0 (the common case); a source that used other databases
//! since its last `SELECT` before the checkpoint cannot be told apart, which is why version 2 records it.

use std::fmt::Write as _;

use crate::error::Error;

/// Prefix of the checkpoint keys in the target; the full name is `ferry:checkpoint:{<tag>}`.
pub const KEY_PREFIX: &str = "ferry:checkpoint:";

/// Prefix of the hashes of keys the target policy skipped, `ferry:skipped:{<tag>}` (the checkpoint's tag, so on
/// a cluster master it hashes to the slot of that master's checkpoint key): one field per key, `<db>:<key>`,
/// with what the target could not hold. Written in the same batch as the checkpoint that covers the skip.
pub const SKIPPED_PREFIX: &str = "ferry:skipped:";

/// Prefix of the hashes of keys the target policy converted with a loss, `ferry:converted:{<tag>}` (like
/// [`SKIPPED_PREFIX`]).
pub const CONVERTED_PREFIX: &str = "ferry:converted:";

/// The names of the stored report's hashes for a checkpoint tag: skipped keys, converted keys.
pub fn report_key_names(tag: &str) -> (String, String) {
    (
        format!("{SKIPPED_PREFIX}{{{tag}}}"),
        format!("{CONVERTED_PREFIX}{{{tag}}}"),
    )
}

/// The format version [`Checkpoint::encode`] writes.
pub const FORMAT_VERSION: u32 = 2;

/// The value of the checkpoint key while a full sync is being applied.
const FULL_SYNC_MARKER: &str = "fullsync";

/// The start of a fence marker, `fenced epoch=<e>`.
const FENCE_MARKER: &str = "fenced";

/// The name of the checkpoint key for a tag (a job name, or a hash tag that routes to one cluster node).
pub fn key_name(tag: &str) -> String {
    format!("{KEY_PREFIX}{{{tag}}}")
}

/// A committed position in the source's replication stream, as stored in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Position {
    /// The format version it was read from (1 or 2); [`Position::new`] gives [`FORMAT_VERSION`].
    pub version: u32,
    /// The source's replication id.
    pub replid: String,
    /// The source's replication offset the target is at.
    pub offset: u64,
    /// The database selected in the source's stream at `offset`.
    pub db: i64,
    /// Commands of the first unit after `offset` already applied (see the module documentation).
    pub part: u32,
    /// Fencing epoch of the job that wrote it (see the module documentation).
    pub epoch: u64,
    /// Cluster targets: the id of the master the checkpoint lives on.
    pub node: Option<String>,
    /// Cluster targets: the slot ranges (inclusive) that master owned when it wrote the checkpoint.
    pub slots: Vec<(u16, u16)>,
}

impl Position {
    /// A version 2 position with `part` 0, epoch 0 and no cluster node.
    pub fn new(replid: impl Into<String>, offset: u64, db: i64) -> Position {
        Position {
            version: FORMAT_VERSION,
            replid: replid.into(),
            offset,
            db,
            part: 0,
            epoch: 0,
            node: None,
            slots: Vec::new(),
        }
    }

    /// Whether the checkpoint covers `slot` (always for a checkpoint that names no slots: a standalone target).
    pub fn covers_slot(&self, slot: u16) -> bool {
        self.node.is_none() || self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }

    /// The value written in the target, with the offset, database and part as given.
    fn encode_with(&self, offset: &str, db: &str, part: &str) -> String {
        let mut out = format!(
            "v{FORMAT_VERSION} {} {offset} db={db} part={part} epoch={}",
            self.replid, self.epoch
        );
        if let Some(node) = &self.node {
            let _ = write!(out, " node={node} slots={}", encode_slots(&self.slots));
        }
        out
    }

    /// The encoding with `{o}`, `{d}` and `{p}` in place of the offset, the database and the part: the batch
    /// script fills them in with the position it reached, so the codec stays here.
    pub fn template(&self) -> String {
        self.encode_with("{o}", "{d}", "{p}")
    }
}

/// What a checkpoint key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// Every write of the source up to the position (inclusive) is applied, and nothing after it.
    Committed(Position),
    /// A full sync started and was not finished: the target holds part of an RDB.
    FullSyncInProgress,
    /// The direction this checkpoint belongs to was fenced at `epoch` by a DR pair: no job may continue it.
    Fenced {
        /// The epoch of the DR state record that fenced it.
        epoch: u64,
    },
}

impl Checkpoint {
    /// The value written in the target (always the current format).
    pub fn encode(&self) -> String {
        match self {
            Checkpoint::Committed(p) => p.encode_with(
                &p.offset.to_string(),
                &p.db.to_string(),
                &p.part.to_string(),
            ),
            Checkpoint::FullSyncInProgress => FULL_SYNC_MARKER.to_string(),
            Checkpoint::Fenced { epoch } => format!("{FENCE_MARKER} epoch={epoch}"),
        }
    }

    /// Parses a value written by [`Checkpoint::encode`] of this version or of version 1.
    pub fn decode(value: &[u8]) -> Result<Checkpoint, Error> {
        let text = std::str::from_utf8(value)
            .map_err(|_| Error::Checkpoint("the value is not UTF-8".into()))?;
        if text == FULL_SYNC_MARKER {
            return Ok(Checkpoint::FullSyncInProgress);
        }
        if let Some(rest) = text.strip_prefix(FENCE_MARKER) {
            // `fenced epoch=<e>`, then fields the fencing side may add for itself (ignored here).
            let epoch = rest
                .strip_prefix(" epoch=")
                .map(|r| r.split(' ').next().unwrap_or_default())
                .ok_or_else(|| {
                    Error::Checkpoint(format!("expected \"fenced epoch=<e>\", found {text:?}"))
                })?;
            return Ok(Checkpoint::Fenced {
                epoch: parse_num(epoch, "epoch", text)?,
            });
        }
        let fields: Vec<&str> = text.split(' ').collect();
        match fields.as_slice() {
            [replid, offset] if is_replid(replid) => Ok(Checkpoint::Committed(Position {
                version: 1,
                ..Position::new(*replid, parse_num(offset, "offset", text)?, 0)
            })),
            ["v2", replid, offset, rest @ ..] if is_replid(replid) => {
                let mut p = Position::new(*replid, parse_num(offset, "offset", text)?, 0);
                let (mut db, mut part, mut epoch) = (None, None, None);
                for field in rest {
                    let (name, value) = field.split_once('=').ok_or_else(|| {
                        Error::Checkpoint(format!("field {field:?} is not name=value in {text:?}"))
                    })?;
                    match name {
                        "db" => db = Some(parse_num(value, name, text)?),
                        "part" => part = Some(parse_num(value, name, text)?),
                        "epoch" => epoch = Some(parse_num(value, name, text)?),
                        "node" if !value.is_empty() => p.node = Some(value.to_string()),
                        "slots" => p.slots = decode_slots(value, text)?,
                        // Fields a newer version adds are not needed to resume.
                        _ => {}
                    }
                }
                let missing = |what: &str| Error::Checkpoint(format!("no {what} in {text:?}"));
                p.db = db.ok_or_else(|| missing("db"))?;
                p.part = part.ok_or_else(|| missing("part"))?;
                p.epoch = epoch.ok_or_else(|| missing("epoch"))?;
                if p.node.is_some() && p.slots.is_empty() {
                    return Err(missing("slots for its node"));
                }
                Ok(Checkpoint::Committed(p))
            }
            _ => Err(Error::Checkpoint(format!(
                "expected \"v2 <replid> <offset> db=.. part=.. epoch=..\" or \"<replid> <offset>\", found {text:?}"
            ))),
        }
    }

    /// The committed position, if the checkpoint allows a partial resync.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Checkpoint::Committed(p) => Some(p),
            Checkpoint::FullSyncInProgress | Checkpoint::Fenced { .. } => None,
        }
    }
}

/// Whether a job of `epoch` may continue from `checkpoint`: not from a fence, nor from a checkpoint a job of a
/// newer epoch wrote. The error is [`Error::Fenced`].
pub fn admit(checkpoint: &Checkpoint, epoch: u64) -> Result<(), Error> {
    match checkpoint {
        Checkpoint::Fenced { epoch: fenced } => Err(Error::Fenced(format!(
            "this direction was fenced at epoch {fenced} (the job's epoch is {epoch}): another direction of the DR pair is current"
        ))),
        Checkpoint::Committed(p) if p.epoch > epoch => Err(Error::Fenced(format!(
            "the checkpoint was written at epoch {} and the job's epoch is {epoch}: a newer job owns this target",
            p.epoch
        ))),
        _ => Ok(()),
    }
}

fn parse_num<T: std::str::FromStr>(value: &str, what: &str, text: &str) -> Result<T, Error> {
    value
        .parse()
        .map_err(|_| Error::Checkpoint(format!("bad {what} {value:?} in {text:?}")))
}

/// `0-5460,10923-16383`.
pub(crate) fn encode_slots(ranges: &[(u16, u16)]) -> String {
    let parts: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
    parts.join(",")
}

fn decode_slots(value: &str, text: &str) -> Result<Vec<(u16, u16)>, Error> {
    value
        .split(',')
        .map(|range| {
            let (a, b) = range.split_once('-').ok_or_else(|| {
                Error::Checkpoint(format!("bad slot range {range:?} in {text:?}"))
            })?;
            let (a, b): (u16, u16) = (parse_num(a, "slot", text)?, parse_num(b, "slot", text)?);
            if a > b || b >= ferry_topology::SLOT_COUNT {
                return Err(Error::Checkpoint(format!(
                    "bad slot range {range:?} in {text:?}"
                )));
            }
            Ok((a, b))
        })
        .collect()
}

/// A replication id is 40 hexadecimal characters.
pub(crate) fn is_replid(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where a job continues the source's stream: what it asks PSYNC for and the database its stream parser
/// starts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The replication id to ask for.
    pub replid: String,
    /// The offset to continue from (the smallest any target node committed).
    pub offset: u64,
    /// The database selected in the source's stream at `offset`.
    pub db: i64,
}

/// Where a job resumes from, given the checkpoints of all its target nodes.
///
/// The job asks PSYNC for the smallest committed offset (with the stream's database at that offset); each node
/// then skips what its own checkpoint covers. If any node has no committed checkpoint the job does a full sync.
/// Nodes can hold different replication ids only after a PSYNC2 switch, where offsets continue across ids: the
/// newest id (the one with the highest offset) is the one to ask for.
pub fn resume_from(checkpoints: &[Option<Checkpoint>]) -> Option<ResumePoint> {
    let mut min: Option<&Position> = None;
    let mut newest: Option<&Position> = None;
    for cp in checkpoints {
        let p = cp.as_ref()?.position()?;
        if min.is_none_or(|m| p.offset < m.offset) {
            min = Some(p);
        }
        if newest.is_none_or(|n| p.offset > n.offset) {
            newest = Some(p);
        }
    }
    let (min, newest) = (min?, newest?);
    Some(ResumePoint {
        replid: newest.replid.clone(),
        offset: min.offset,
        db: min.db,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8371b4fb1155b71f4a04d3e1bc3e18c4a990aeeb";

    fn committed(replid: &str, offset: u64, db: i64) -> Option<Checkpoint> {
        Some(Checkpoint::Committed(Position::new(replid, offset, db)))
    }

    #[test]
    fn v2_checkpoint_round_trips_with_db_part_and_cluster_slots() {
        let mut p = Position::new(ID, 12345, 2);
        p.part = 3;
        p.epoch = 7;
        let cp = Checkpoint::Committed(p.clone());
        assert_eq!(
            cp.encode(),
            format!("v2 {ID} 12345 db=2 part=3 epoch=7"),
            "the documented format"
        );
        assert_eq!(Checkpoint::decode(cp.encode().as_bytes()).unwrap(), cp);
        p.node = Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca".into());
        p.slots = vec![(0, 5460), (10923, 16383)];
        let cp = Checkpoint::Committed(p);
        assert!(cp.encode().ends_with("slots=0-5460,10923-16383"));
        assert_eq!(Checkpoint::decode(cp.encode().as_bytes()).unwrap(), cp);
    }

    #[test]
    fn template_fills_in_to_the_encoding() {
        let mut p = Position::new(ID, 0, 0);
        p.node = Some("n1".into());
        p.slots = vec![(5, 9)];
        let filled = p
            .template()
            .replace("{o}", "77")
            .replace("{d}", "4")
            .replace("{p}", "1");
        let mut expected = p.clone();
        expected.offset = 77;
        expected.db = 4;
        expected.part = 1;
        assert_eq!(
            Checkpoint::decode(filled.as_bytes()).unwrap(),
            Checkpoint::Committed(expected)
        );
    }

    #[test]
    fn v1_checkpoint_reads_and_resumes_in_db_0() {
        let cp = Checkpoint::decode(format!("{ID} 12345").as_bytes()).unwrap();
        let p = cp.position().unwrap();
        assert_eq!((p.version, p.offset, p.db, p.part), (1, 12345, 0, 0));
        assert_eq!(
            resume_from(&[Some(cp.clone())]),
            Some(ResumePoint {
                replid: ID.into(),
                offset: 12345,
                db: 0
            })
        );
        // Rewritten, it becomes version 2.
        assert!(cp.encode().starts_with("v2 "));
    }

    #[test]
    fn fullsync_marker_gives_no_resume_point() {
        let cp = Checkpoint::decode(b"fullsync").unwrap();
        assert_eq!(cp, Checkpoint::FullSyncInProgress);
        assert_eq!(cp.position(), None);
        assert_eq!(cp.encode(), "fullsync");
    }

    #[test]
    fn fence_marker_round_trips_and_refuses_every_job() {
        let cp = Checkpoint::Fenced { epoch: 4 };
        assert_eq!(cp.encode(), "fenced epoch=4");
        assert_eq!(Checkpoint::decode(b"fenced epoch=4").unwrap(), cp);
        assert_eq!(cp.position(), None);
        for epoch in [0, 4, 9] {
            assert!(matches!(admit(&cp, epoch), Err(Error::Fenced(_))));
        }
        assert_eq!(
            Checkpoint::decode(b"fenced epoch=4 at=ab:10").unwrap(),
            cp,
            "fields after the epoch are the fencer's"
        );
        assert!(Checkpoint::decode(b"fenced").is_err());
        assert!(Checkpoint::decode(b"fenced epoch=x").is_err());
    }

    #[test]
    fn a_job_older_than_the_checkpoint_is_refused() {
        let mut p = Position::new(ID, 10, 0);
        p.epoch = 3;
        let cp = Checkpoint::Committed(p);
        assert!(matches!(admit(&cp, 2), Err(Error::Fenced(_))));
        assert!(admit(&cp, 3).is_ok() && admit(&cp, 5).is_ok());
        assert!(admit(&Checkpoint::FullSyncInProgress, 0).is_ok());
    }

    #[test]
    fn garbage_checkpoint_is_a_clear_error() {
        for bad in [
            &b"hello"[..],
            b"abc 12",
            b"",
            &[0xff, 0xfe],
            format!("{ID} x").as_bytes(),
            format!("{ID} 1 2").as_bytes(),
            format!("v2 {ID} 1").as_bytes(),
            format!("v2 {ID} 1 db=x part=0 epoch=0").as_bytes(),
            format!("v2 {ID} 1 db=0 part=0 epoch=0 bogus").as_bytes(),
            format!("v2 {ID} 1 db=0 part=0 epoch=0 node=n slots=9-3").as_bytes(),
            format!("v2 {ID} 1 db=0 part=0 epoch=0 node=n slots=0-16384").as_bytes(),
            format!("v2 {ID} 1 db=0 part=0 epoch=0 node=n").as_bytes(),
            format!("v3 {ID} 1 db=0 part=0 epoch=0").as_bytes(),
        ] {
            let err = Checkpoint::decode(bad).unwrap_err();
            assert!(err.to_string().contains("invalid checkpoint"), "{err}");
        }
    }

    #[test]
    fn resume_uses_smallest_offset_its_db_and_newest_replid() {
        let a = committed(ID, 500, 1);
        let b = committed(ID, 300, 2);
        let point = |replid: &str, offset, db| {
            Some(ResumePoint {
                replid: replid.into(),
                offset,
                db,
            })
        };
        assert_eq!(resume_from(&[a.clone(), b.clone()]), point(ID, 300, 2));
        assert_eq!(resume_from(&[a.clone(), None]), None);
        assert_eq!(
            resume_from(&[a.clone(), Some(Checkpoint::FullSyncInProgress)]),
            None
        );
        // After a PSYNC2 switch: the newest id, the lowest offset.
        let newer = committed(&"a".repeat(40), 900, 0);
        assert_eq!(resume_from(&[a, newer]), point(&"a".repeat(40), 500, 1));
        assert_eq!(resume_from(&[]), None);
    }

    #[test]
    fn slots_of_a_cluster_checkpoint_are_what_it_covers() {
        let mut p = Position::new(ID, 1, 0);
        assert!(p.covers_slot(9000), "a standalone checkpoint covers all");
        p.node = Some("n".into());
        p.slots = vec![(0, 10), (20, 30)];
        assert!(p.covers_slot(10) && p.covers_slot(20));
        assert!(!p.covers_slot(15) && !p.covers_slot(31));
    }

    #[test]
    fn key_name_is_hash_tagged() {
        assert_eq!(key_name("job"), "ferry:checkpoint:{job}");
    }
}
