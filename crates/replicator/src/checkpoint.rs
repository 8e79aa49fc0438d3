//! Checkpoints: the source's replication id and offset, stored in the target.
//!
//! A checkpoint is written by the sink in the same `MULTI`/`EXEC` as the writes it covers, so the target holds
//! exactly the writes up to the offset it records, never more and never less. While a full sync is being applied
//! the key holds a `fullsync` marker instead: the RDB is not resumable, so a job restarted in that state does the
//! full sync again, overwriting what the first attempt wrote (`RESTORE ... REPLACE`).

use crate::error::Error;

/// Prefix of the checkpoint keys in the target; the full name is `ferry:checkpoint:{<tag>}`.
pub const KEY_PREFIX: &str = "ferry:checkpoint:";

/// The name of the checkpoint key for a tag (a job name, or a hash tag that routes to one cluster node).
pub fn key_name(tag: &str) -> String {
    format!("{KEY_PREFIX}{{{tag}}}")
}

/// What a checkpoint key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// Every write of the source up to `offset` (inclusive, counted like the source's
    /// `master_repl_offset`) in replication history `replid` is applied, and nothing after it.
    Committed {
        /// The source's replication id.
        replid: String,
        /// The source's replication offset the target is at.
        offset: u64,
    },
    /// A full sync started and was not finished: the target holds part of an RDB.
    FullSyncInProgress,
}

impl Checkpoint {
    /// The value written in the target.
    pub fn encode(&self) -> String {
        match self {
            Checkpoint::Committed { replid, offset } => format!("{replid} {offset}"),
            Checkpoint::FullSyncInProgress => "fullsync".to_string(),
        }
    }

    /// Parses a value written by [`Checkpoint::encode`].
    pub fn decode(value: &[u8]) -> Result<Checkpoint, Error> {
        let text = std::str::from_utf8(value)
            .map_err(|_| Error::Checkpoint("the value is not UTF-8".into()))?;
        if text == "fullsync" {
            return Ok(Checkpoint::FullSyncInProgress);
        }
        let mut parts = text.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(replid), Some(offset), None) if is_replid(replid) => {
                let offset = offset
                    .parse::<u64>()
                    .map_err(|_| Error::Checkpoint(format!("bad offset in {text:?}")))?;
                Ok(Checkpoint::Committed {
                    replid: replid.to_string(),
                    offset,
                })
            }
            _ => Err(Error::Checkpoint(format!(
                "expected \"<replid> <offset>\", found {text:?}"
            ))),
        }
    }

    /// The replication id and offset to ask PSYNC for, if the checkpoint allows a partial resync.
    pub fn resume_point(&self) -> Option<(&str, u64)> {
        match self {
            Checkpoint::Committed { replid, offset } => Some((replid, *offset)),
            Checkpoint::FullSyncInProgress => None,
        }
    }
}

/// The offset up to which a node whose checkpoint is `checkpoint` already holds the stream, when the stream
/// starts at `offset`: commands ending at or before it are not sent again.
pub(crate) fn skip_until(checkpoint: Option<&Option<Checkpoint>>, offset: u64) -> u64 {
    checkpoint
        .and_then(Option::as_ref)
        .and_then(Checkpoint::resume_point)
        .map_or(offset, |(_, o)| o.max(offset))
}

/// A replication id is 40 hexadecimal characters.
pub(crate) fn is_replid(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where a job resumes from, given the checkpoints of all its target nodes.
///
/// The job asks PSYNC for the smallest committed offset; each node then skips the commands that end at or
/// before its own checkpoint. If any node has no committed checkpoint the job does a full sync. Nodes can hold
/// different replication ids only after a PSYNC2 switch (a full sync rewrites every node's checkpoint), where
/// offsets continue across ids: the newest id (the one with the highest offset) is the one to ask for.
pub fn resume_from(checkpoints: &[Option<Checkpoint>]) -> Option<(String, u64)> {
    let mut min: Option<u64> = None;
    let mut newest: Option<(&str, u64)> = None;
    for cp in checkpoints {
        let (replid, offset) = cp.as_ref()?.resume_point()?;
        min = Some(min.map_or(offset, |m| m.min(offset)));
        if newest.map_or(true, |(_, o)| offset > o) {
            newest = Some((replid, offset));
        }
    }
    Some((newest?.0.to_string(), min?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8371b4fb1155b71f4a04d3e1bc3e18c4a990aeeb";

    #[test]
    fn committed_checkpoint_round_trips() {
        let cp = Checkpoint::Committed {
            replid: ID.into(),
            offset: 12345,
        };
        assert_eq!(Checkpoint::decode(cp.encode().as_bytes()).unwrap(), cp);
        assert_eq!(cp.resume_point(), Some((ID, 12345)));
    }

    #[test]
    fn fullsync_marker_gives_no_resume_point() {
        let cp = Checkpoint::decode(b"fullsync").unwrap();
        assert_eq!(cp, Checkpoint::FullSyncInProgress);
        assert_eq!(cp.resume_point(), None);
    }

    #[test]
    fn garbage_checkpoint_is_a_clear_error() {
        for bad in [
            &b"hello"[..],
            b"abc 12",
            b"",
            &[0xff, 0xfe],
            format!("{ID} x").as_bytes(),
        ] {
            let err = Checkpoint::decode(bad).unwrap_err();
            assert!(err.to_string().contains("invalid checkpoint"), "{err}");
        }
    }

    #[test]
    fn resume_uses_smallest_offset_and_newest_replid() {
        let a = Some(Checkpoint::Committed {
            replid: ID.into(),
            offset: 500,
        });
        let b = Some(Checkpoint::Committed {
            replid: ID.into(),
            offset: 300,
        });
        assert_eq!(
            resume_from(&[a.clone(), b.clone()]),
            Some((ID.to_string(), 300))
        );
        assert_eq!(resume_from(&[a.clone(), None]), None);
        assert_eq!(
            resume_from(&[a.clone(), Some(Checkpoint::FullSyncInProgress)]),
            None
        );
        // After a PSYNC2 switch: the newest id, the lowest offset.
        let newer = Some(Checkpoint::Committed {
            replid: "a".repeat(40),
            offset: 900,
        });
        assert_eq!(resume_from(&[a, newer]), Some(("a".repeat(40), 500)));
        assert_eq!(resume_from(&[]), None);
    }

    #[test]
    fn key_name_is_hash_tagged() {
        assert_eq!(key_name("job"), "ferry:checkpoint:{job}");
    }
}
