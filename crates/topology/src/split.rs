//! Splitting a multi-key command (MSET, DEL, UNLINK, EXISTS, TOUCH, MGET) into one command per slot,
//! and merging the replies back, for the commands where that keeps their meaning.

use ferry_resp::Frame;

use crate::error::Error;
use crate::slot::key_slot;

/// How the replies of the per-slot parts combine into the reply of the whole command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Merge {
    /// Integer replies are added up (DEL, UNLINK, EXISTS, TOUCH).
    Sum,
    /// Array replies are put back in the order of the original keys (MGET).
    KeyOrder,
    /// Every part must answer OK; the merged reply is OK (MSET).
    AllOk,
}

/// One per-slot part of a split command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPart {
    /// The slot all keys of this part hash to.
    pub slot: u16,
    /// The command for this slot (name first).
    pub argv: Vec<Vec<u8>>,
    /// For each key of this part, its index among the original command's keys (for [`Merge::KeyOrder`]).
    pub key_indexes: Vec<usize>,
}

/// A multi-key command split by slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The parts, in the order their first key appears in the original command.
    pub parts: Vec<SplitPart>,
    /// How to merge their replies.
    pub merge: Merge,
    /// Number of keys in the original command.
    pub key_count: usize,
}

/// Splits `argv` by slot when it is one of MSET, DEL, UNLINK, EXISTS, TOUCH or MGET; `None` for any
/// other command. A command whose keys already share a slot gives a single part.
///
/// ```
/// use ferry_topology::split::{split_by_slot, Merge};
/// let split = split_by_slot(&["DEL", "a", "b", "{a}c"]).unwrap().unwrap();
/// assert_eq!(split.merge, Merge::Sum);
/// assert_eq!(split.parts.len(), 2); // "a" and "{a}c" share a slot
/// ```
pub fn split_by_slot<A: AsRef<[u8]>>(argv: &[A]) -> Option<Result<Split, Error>> {
    let name = String::from_utf8_lossy(argv.first()?.as_ref()).to_ascii_lowercase();
    let (merge, group) = match name.as_str() {
        "del" | "unlink" | "exists" | "touch" => (Merge::Sum, 1),
        "mget" => (Merge::KeyOrder, 1),
        "mset" => (Merge::AllOk, 2),
        _ => return None,
    };
    let args = &argv[1..];
    if args.is_empty() || !args.len().is_multiple_of(group) {
        return Some(Err(Error::WrongArity(name)));
    }
    let mut parts: Vec<SplitPart> = Vec::new();
    for (index, chunk) in args.chunks_exact(group).enumerate() {
        let slot = key_slot(chunk[0].as_ref());
        let part = match parts.iter_mut().position(|p| p.slot == slot) {
            Some(i) => &mut parts[i],
            None => {
                parts.push(SplitPart {
                    slot,
                    argv: vec![argv[0].as_ref().to_vec()],
                    key_indexes: Vec::new(),
                });
                parts.last_mut()?
            }
        };
        part.argv.extend(chunk.iter().map(|a| a.as_ref().to_vec()));
        part.key_indexes.push(index);
    }
    Some(Ok(Split {
        parts,
        merge,
        key_count: args.len() / group,
    }))
}

impl Split {
    /// Merges the parts' replies (in the order of [`Split::parts`]) into the reply the whole command
    /// would have given. An error reply in any part is returned as the error.
    pub fn merge_replies(&self, replies: Vec<Frame>) -> Result<Frame, Error> {
        if replies.len() != self.parts.len() {
            return Err(Error::parse(
                "split replies",
                format!("{} replies for {} parts", replies.len(), self.parts.len()),
            ));
        }
        match self.merge {
            Merge::Sum => {
                let mut total: i64 = 0;
                for reply in &replies {
                    let n = reply.as_integer().ok_or_else(|| {
                        Error::parse(
                            "split replies",
                            format!("expected an integer, got {reply:?}"),
                        )
                    })?;
                    total = total.saturating_add(n);
                }
                Ok(Frame::Integer(total))
            }
            Merge::AllOk => {
                for reply in &replies {
                    if reply.as_bytes() != Some(b"OK") {
                        return Err(Error::parse(
                            "split replies",
                            format!("expected OK, got {reply:?}"),
                        ));
                    }
                }
                Ok(Frame::Simple(bytes::Bytes::from_static(b"OK")))
            }
            Merge::KeyOrder => {
                let mut merged: Vec<Option<Frame>> = vec![None; self.key_count];
                for (part, reply) in self.parts.iter().zip(replies) {
                    let items = reply
                        .into_array()
                        .ok_or_else(|| Error::parse("split replies", "expected an array"))?;
                    if items.len() != part.key_indexes.len() {
                        return Err(Error::parse(
                            "split replies",
                            "array length differs from the part's key count",
                        ));
                    }
                    for (&index, item) in part.key_indexes.iter().zip(items) {
                        if let Some(slot) = merged.get_mut(index) {
                            *slot = Some(item);
                        }
                    }
                }
                Ok(Frame::Array(
                    merged
                        .into_iter()
                        .map(|f| f.unwrap_or(Frame::NullBulk))
                        .collect(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mget_replies_come_back_in_key_order() {
        let split = split_by_slot(&["MGET", "a", "b", "{a}x"]).unwrap().unwrap();
        assert_eq!(split.parts.len(), 2);
        assert_eq!(split.parts[0].key_indexes, vec![0, 2]);
        let replies = vec![
            Frame::Array(vec![Frame::bulk("va"), Frame::bulk("vx")]),
            Frame::Array(vec![Frame::bulk("vb")]),
        ];
        let merged = split.merge_replies(replies).unwrap();
        assert_eq!(
            merged,
            Frame::Array(vec![
                Frame::bulk("va"),
                Frame::bulk("vb"),
                Frame::bulk("vx")
            ])
        );
    }

    #[test]
    fn del_counts_are_summed() {
        let split = split_by_slot(&["DEL", "a", "b"]).unwrap().unwrap();
        let merged = split
            .merge_replies(vec![Frame::Integer(1), Frame::Integer(1)])
            .unwrap();
        assert_eq!(merged, Frame::Integer(2));
    }

    #[test]
    fn mset_pairs_stay_together() {
        let split = split_by_slot(&["MSET", "a", "1", "b", "2", "{a}c", "3"])
            .unwrap()
            .unwrap();
        assert_eq!(
            split.parts[0].argv,
            vec![
                b"MSET".to_vec(),
                b"a".to_vec(),
                b"1".to_vec(),
                b"{a}c".to_vec(),
                b"3".to_vec()
            ]
        );
        assert_eq!(
            split.parts[1].argv,
            vec![b"MSET".to_vec(), b"b".to_vec(), b"2".to_vec()]
        );
    }

    #[test]
    fn mset_with_a_missing_value_is_an_arity_error() {
        assert!(matches!(
            split_by_slot(&["MSET", "a"]),
            Some(Err(Error::WrongArity(_)))
        ));
    }

    #[test]
    fn other_commands_are_not_split() {
        assert!(split_by_slot(&["SUNIONSTORE", "d", "a", "b"]).is_none());
    }
}
