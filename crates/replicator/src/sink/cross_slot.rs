//! Commands of the live stream whose keys hash to several slots of a cluster target.
//!
//! A standalone source runs multi-key commands on keys without a common hash tag; a cluster refuses them
//! (`CROSSSLOT`), and no command of its own does what they do across masters. `DEL`, `MSET` and the like are split
//! by slot ([`ferry_topology::split::split_by_slot`]); the commands here are applied as commands of single slots
//! with the same result:
//!
//! - written from other keys (`SUNIONSTORE`, `SINTERSTORE`, `SDIFFSTORE`, `ZUNIONSTORE`, `ZINTERSTORE`,
//!   `ZDIFFSTORE`, `ZRANGESTORE`, `GEOSEARCHSTORE`, `PFMERGE`, `BITOP`, `GEORADIUS ... STORE`, `SORT ... STORE`
//!   whose patterns name no key): each input outside the destination's slot
//!   is read from its master (`DUMP`) and restored into a scratch key `ferry:xslot:{<tag>}:<n>` of the
//!   destination's slot, the command runs there on the scratch keys, and the scratch keys are deleted, all in
//!   the one batch that applies the unit on the destination's master;
//! - `COPY src dst`, `RENAME`/`RENAMENX src dst`: `src`'s payload and absolute expiry are read and restored as
//!   `dst`; a rename then deletes `src`;
//! - `SMOVE src dst member`: `SREM` and `SADD`; `LMOVE`/`RPOPLPUSH` (and their blocking forms): the element at
//!   the end of `src` is read, pushed on `dst`, then popped from `src`;
//! - `MSETNX`: a source propagates it only when it set every key, so it goes as the `MSET` it was, split by slot.
//!
//! The target holds what the source held before the command (every earlier unit is applied and answered before
//! anything is read), so what is read is what the source read. A unit with such a command is applied in up to
//! two steps, each committed with its masters' checkpoints: first the masters of the keys written from what was
//! read, then the masters of the keys a move empties. A job stopped between the two continues with the second
//! (the first is covered by its checkpoints, and the second reads nothing), so nothing is lost or applied twice.
//! Only units of one command are applied this way (a source transaction of several commands that holds such a
//! command still stops the job, naming it).

use bytes::Bytes;

use crate::pipeline::command_name;

/// How a command whose keys hash to several slots is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrossSlot {
    /// Writes the key at `dest` (an index into argv) from the other keys, which it only reads.
    Store { dest: usize },
    /// `COPY src dst [REPLACE]`.
    Copy,
    /// `RENAME src dst` / `RENAMENX src dst`.
    Rename,
    /// `SMOVE src dst member`.
    Smove,
    /// `LMOVE src dst LEFT|RIGHT LEFT|RIGHT` and its blocking and `RPOPLPUSH` forms: pops from the left of
    /// `src` when `from_left`, pushes on the left of `dst` when `to_left`.
    Lmove { from_left: bool, to_left: bool },
    /// `MSETNX k v [k v ...]`.
    Msetnx,
}

/// What a command is, when it is one of those this module applies across slots (`None` otherwise, and for forms
/// it does not take: `COPY ... DB n`, a malformed command).
pub(crate) fn cross_slot_kind(argv: &[Bytes]) -> Option<CrossSlot> {
    let name = command_name(argv);
    let side = |a: &Bytes| {
        if a.eq_ignore_ascii_case(b"left") {
            Some(true)
        } else if a.eq_ignore_ascii_case(b"right") {
            Some(false)
        } else {
            None
        }
    };
    match name.as_str() {
        "sunionstore" | "sinterstore" | "sdiffstore" | "pfmerge" if argv.len() >= 3 => {
            Some(CrossSlot::Store { dest: 1 })
        }
        "zunionstore" | "zinterstore" | "zdiffstore" if argv.len() >= 4 => {
            Some(CrossSlot::Store { dest: 1 })
        }
        "zrangestore" if argv.len() >= 5 => Some(CrossSlot::Store { dest: 1 }),
        "geosearchstore" if argv.len() >= 4 => Some(CrossSlot::Store { dest: 1 }),
        "bitop" if argv.len() >= 4 => Some(CrossSlot::Store { dest: 2 }),
        "copy" if argv.len() >= 3 => {
            let plain = argv[3..].iter().all(|a| a.eq_ignore_ascii_case(b"replace"));
            plain.then_some(CrossSlot::Copy)
        }
        "rename" | "renamenx" if argv.len() == 3 => Some(CrossSlot::Rename),
        "smove" if argv.len() == 4 => Some(CrossSlot::Smove),
        "rpoplpush" if argv.len() == 3 => Some(CrossSlot::Lmove {
            from_left: false,
            to_left: true,
        }),
        "brpoplpush" if argv.len() == 4 => Some(CrossSlot::Lmove {
            from_left: false,
            to_left: true,
        }),
        "lmove" | "blmove" if argv.len() >= 5 => Some(CrossSlot::Lmove {
            from_left: side(&argv[3])?,
            to_left: side(&argv[4])?,
        }),
        "msetnx" if argv.len() >= 3 && argv.len() % 2 == 1 => Some(CrossSlot::Msetnx),
        "sort" => sort_store(argv).map(|dest| CrossSlot::Store { dest }),
        // GEORADIUS key lon lat radius unit [...] STORE|STOREDIST dst, GEORADIUSBYMEMBER key member radius unit ...
        "georadius" | "georadiusbymember" => {
            let from = if name == "georadius" { 6 } else { 5 };
            let at = (from..argv.len().saturating_sub(1)).rev().find(|&i| {
                argv[i].eq_ignore_ascii_case(b"store") || argv[i].eq_ignore_ascii_case(b"storedist")
            })?;
            Some(CrossSlot::Store { dest: at + 1 })
        }
        _ => None,
    }
}

/// Where the destination of `SORT key [BY p] [LIMIT o c] [GET p ...] [ASC|DESC] [ALPHA] STORE dst` is, when its
/// patterns name no other key (no `*`: `BY nosort`, `GET #`); `None` otherwise (the keys a pattern names are not
/// on the command line) and for a `SORT` without `STORE`.
fn sort_store(argv: &[Bytes]) -> Option<usize> {
    let mut dest = None;
    let mut i = 2;
    while i < argv.len() {
        let word = argv[i].to_ascii_lowercase();
        match word.as_slice() {
            b"by" | b"get" => {
                if argv.get(i + 1)?.contains(&b'*') {
                    return None;
                }
                i += 2;
            }
            b"limit" => i += 3,
            b"store" => {
                argv.get(i + 1)?;
                dest = Some(i + 1);
                i += 2;
            }
            _ => i += 1,
        }
    }
    dest
}

/// The name of scratch key `n` in the slot of hash tag `tag`.
pub(crate) fn scratch_key(tag: &str, n: usize) -> Bytes {
    Bytes::from(format!("ferry:xslot:{{{tag}}}:{n}"))
}

pub(crate) fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn the_commands_applied_across_slots_are_recognized_with_their_destination() {
        let kind = |w: &[&str]| cross_slot_kind(&argv(w));
        assert_eq!(
            kind(&["SUNIONSTORE", "d", "a", "b"]),
            Some(CrossSlot::Store { dest: 1 })
        );
        assert_eq!(
            kind(&["bitop", "AND", "d", "a", "b"]),
            Some(CrossSlot::Store { dest: 2 })
        );
        assert_eq!(
            kind(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
            Some(CrossSlot::Store { dest: 1 })
        );
        assert_eq!(kind(&["COPY", "a", "b", "REPLACE"]), Some(CrossSlot::Copy));
        assert_eq!(kind(&["COPY", "a", "b", "DB", "3"]), None);
        assert_eq!(kind(&["RENAMENX", "a", "b"]), Some(CrossSlot::Rename));
        assert_eq!(
            kind(&["RPOPLPUSH", "a", "b"]),
            Some(CrossSlot::Lmove {
                from_left: false,
                to_left: true
            })
        );
        assert_eq!(
            kind(&["BLMOVE", "a", "b", "left", "RIGHT", "0"]),
            Some(CrossSlot::Lmove {
                from_left: true,
                to_left: false
            })
        );
        assert_eq!(kind(&["LMOVE", "a", "b", "UP", "LEFT"]), None);
        assert_eq!(
            kind(&["MSETNX", "a", "1", "b", "2"]),
            Some(CrossSlot::Msetnx)
        );
        assert_eq!(kind(&["MSETNX", "a", "1", "b"]), None);
        assert_eq!(kind(&["SMOVE", "a", "b", "m"]), Some(CrossSlot::Smove));
        assert_eq!(
            kind(&["SORT", "a", "LIMIT", "0", "5", "ALPHA", "STORE", "d"]),
            Some(CrossSlot::Store { dest: 7 })
        );
        assert_eq!(
            kind(&["sort", "a", "BY", "nosort", "GET", "#", "store", "d", "DESC"]),
            Some(CrossSlot::Store { dest: 7 })
        );
        assert_eq!(kind(&["SORT", "a", "BY", "w_*", "STORE", "d"]), None);
        assert_eq!(kind(&["SORT", "a", "GET", "o_*->f", "STORE", "d"]), None);
        assert_eq!(kind(&["SORT", "a", "ALPHA"]), None);
        assert_eq!(
            kind(&[
                "GEORADIUS",
                "g",
                "15",
                "37",
                "200",
                "km",
                "ASC",
                "STORE",
                "d"
            ]),
            Some(CrossSlot::Store { dest: 8 })
        );
        assert_eq!(
            kind(&["georadiusbymember", "g", "m", "200", "km", "storedist", "d"]),
            Some(CrossSlot::Store { dest: 6 })
        );
        assert_eq!(kind(&["GEORADIUS", "g", "15", "37", "200", "km"]), None);
        assert_eq!(kind(&["SINTERCARD", "2", "a", "b"]), None);
        assert_eq!(kind(&["EVAL", "return 1", "2", "a", "b"]), None);
        assert_eq!(&scratch_key("12", 3)[..], b"ferry:xslot:{12}:3");
    }
}
