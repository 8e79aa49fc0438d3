//! Small plain strings of a full copy, gathered for one `MSET`/`MSETNX` each group: a group is one database of
//! a standalone target or one slot of a cluster target.
//!
//! A group holds its keys and values already in wire form (`$len\r\nkey\r\n$len\r\nvalue\r\n`, one buffer):
//! the decoder's key and value are copied once into it and freed at once, so gathering many keys (a cluster
//! target gathers up to [`GATHER_KEYS`] to give each slot's command several of them) holds compact memory,
//! not two allocations per key, and the command goes out as one copy of that buffer. A refused `MSETNX` gets
//! its pairs back from the same bytes ([`pairs`]).

use bytes::{Bytes, BytesMut};
use ferry_resp::{encode_array_header, encode_bulk, Decoder, Frame};

/// Keys a standalone target takes in one `MSET`/`MSETNX`.
pub(crate) const STANDALONE_GROUP_KEYS: usize = 128;

/// Keys of one slot that make its group's command go out at once on a cluster target (a dataset whose keys
/// share few slots, by hash tags, then writes like a standalone target).
pub(crate) const SLOT_GROUP_KEYS: usize = 256;

/// Keys a cluster sink gathers over all slots before writing every group (about 16 keys a slot when they spread
/// evenly over the 16384 slots).
pub(crate) const GATHER_KEYS: usize = 262_144;

/// Bytes (wire form) a cluster sink gathers over all slots before writing every group. Gathering 32 MiB (about
/// 32 keys a slot's `MSETNX`) cost the masters and their replicas no less CPU in the 3+3 bench and holds twice
/// the memory per source shard, so the gather stays at 16 MiB.
pub(crate) const GATHER_BYTES: usize = 16 * 1024 * 1024;

/// Keys and values for one `MSET`/`MSETNX`, in wire form.
#[derive(Debug)]
pub(crate) struct StringGroup {
    /// The target database.
    pub(crate) db: i64,
    count: usize,
    args: BytesMut,
}

impl StringGroup {
    /// An empty group for database `db`, with room for `capacity` bytes of keys and values in wire form.
    pub(crate) fn new(db: i64, capacity: usize) -> StringGroup {
        StringGroup {
            db,
            count: 0,
            args: BytesMut::with_capacity(capacity),
        }
    }

    /// Adds a key and its value.
    pub(crate) fn push(&mut self, key: &[u8], value: &[u8]) {
        self.args.reserve(key.len() + value.len() + 2 * 25);
        encode_bulk(key, &mut self.args);
        encode_bulk(value, &mut self.args);
        self.count += 1;
    }

    /// Adds a key and its value already in wire form (two bulk strings, as [`StringGroup::push`] writes them).
    fn push_wire(&mut self, pair: &[u8]) {
        self.args.extend_from_slice(pair);
        self.count += 1;
    }

    /// Keys in the group.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The command's head (`*n`, the command name) and its arguments, in wire form, and the number of keys.
    pub(crate) fn command(self, nx: bool) -> (Bytes, Bytes, usize) {
        let name: &[u8] = if nx { b"MSETNX" } else { b"MSET" };
        let mut head = BytesMut::with_capacity(32);
        encode_array_header(1 + 2 * self.count, &mut head);
        encode_bulk(name, &mut head);
        (head.freeze(), self.args.freeze(), self.count)
    }
}

/// In [`SlotGather`]: the slot of a pair already sent (slots are below 16384).
const TAKEN: u16 = u16::MAX;

/// Small strings of a cluster target's full copy, gathered for one `MSET`/`MSETNX` per slot.
///
/// The pairs are written in wire form to one buffer in the order they arrive, each with its slot; when the
/// groups are sent, the pairs are sorted by slot (a counting sort of their indices) and each slot's pairs copied
/// out. Writing every key to the end of one buffer keeps the gathering sequential in memory: a buffer per slot
/// (16,384 of them, each written a few bytes at a time in a random order) cost a cache miss per key and an
/// allocation per slot and flush; and the sorted indices let the copies of a slot's pairs run independently of
/// each other, where a chain of pairs would make each wait for the one before.
#[derive(Debug)]
pub(crate) struct SlotGather {
    /// Every pair gathered, in wire form, in arrival order (pairs already sent stay until [`SlotGather::clear`]).
    wire: BytesMut,
    /// Per pair: where it starts in `wire` (it ends where the next one starts, the last at the end of `wire`).
    starts: Vec<usize>,
    /// Per pair: its slot, or [`TAKEN`].
    slots: Vec<u16>,
    /// Per slot: what it holds.
    per_slot: Vec<SlotPairs>,
    /// Pairs gathered and not sent yet.
    keys: usize,
    /// The counting sort's work space, kept between drains.
    order: Vec<u32>,
    at: Vec<u32>,
}

/// The pairs of one slot in a [`SlotGather`]: the indices of its first and last, how many, and their bytes.
#[derive(Debug, Clone, Copy, Default)]
struct SlotPairs {
    first: u32,
    last: u32,
    count: u32,
    bytes: u32,
}

impl SlotGather {
    /// An empty gather for `slots` slots.
    pub(crate) fn new(slots: usize) -> SlotGather {
        SlotGather {
            wire: BytesMut::new(),
            starts: Vec::new(),
            slots: Vec::new(),
            per_slot: vec![SlotPairs::default(); slots],
            keys: 0,
            order: Vec::new(),
            at: Vec::new(),
        }
    }

    /// Adds a key of `slot` and its value; returns how many pairs the slot now holds.
    pub(crate) fn push(&mut self, slot: usize, key: &[u8], value: &[u8]) -> usize {
        if self.wire.capacity() == 0 {
            // The sink drains at GATHER_BYTES; the headroom keeps the pair that crosses it from regrowing the buffer.
            self.wire.reserve(GATHER_BYTES + 64 * 1024);
        }
        let start = self.wire.len();
        self.wire.reserve(key.len() + value.len() + 2 * 25);
        encode_bulk(key, &mut self.wire);
        encode_bulk(value, &mut self.wire);
        // Fewer than 2^32 pairs: the sink drains at GATHER_KEYS.
        let index = self.starts.len() as u32;
        self.starts.push(start);
        self.slots.push(slot as u16);
        let p = &mut self.per_slot[slot];
        if p.count == 0 {
            p.first = index;
        }
        p.last = index;
        p.count += 1;
        // A pair of a small string is far below 4 GiB, and the sink drains at GATHER_BYTES.
        p.bytes = p.bytes.saturating_add((self.wire.len() - start) as u32);
        self.keys += 1;
        p.count as usize
    }

    /// Pairs gathered and not sent yet.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.keys
    }

    /// True when every group must be sent: the gather holds [`GATHER_KEYS`] pairs or [`GATHER_BYTES`] bytes
    /// (pairs sent early by [`SlotGather::take`] count until the next [`SlotGather::clear`]).
    pub(crate) fn is_full(&self) -> bool {
        self.keys >= GATHER_KEYS || self.wire.len() >= GATHER_BYTES
    }

    /// The wire form of pair `i`.
    fn pair(&self, i: usize) -> &[u8] {
        let end = self.starts.get(i + 1).copied().unwrap_or(self.wire.len());
        &self.wire[self.starts[i]..end]
    }

    /// The group of `slot` (empty when it holds nothing), which then holds nothing.
    pub(crate) fn take(&mut self, slot: usize) -> StringGroup {
        let p = std::mem::take(&mut self.per_slot[slot]);
        let mut group = StringGroup::new(0, p.bytes as usize);
        if p.count > 0 {
            for i in p.first as usize..=p.last as usize {
                if usize::from(self.slots[i]) == slot {
                    group.push_wire(self.pair(i));
                    self.slots[i] = TAKEN;
                }
            }
        }
        self.keys -= group.len();
        group
    }

    /// Sorts the pairs not taken by slot, for [`SlotGather::sorted`]; returns the slots that hold pairs, in
    /// order. [`SlotGather::clear`] ends the round.
    pub(crate) fn sort(&mut self) -> Vec<usize> {
        // Where each slot's indices start in `order`, then a counting sort of the pairs not taken; `at` ends at
        // the end of each slot's indices.
        self.at.clear();
        let mut sum = 0u32;
        let mut slots = Vec::new();
        for (slot, p) in self.per_slot.iter().enumerate() {
            self.at.push(sum);
            sum += p.count;
            if p.count > 0 {
                slots.push(slot);
            }
        }
        self.order.clear();
        self.order.resize(sum as usize, 0);
        for (i, &slot) in self.slots.iter().enumerate() {
            if slot != TAKEN {
                let at = &mut self.at[usize::from(slot)];
                self.order[*at as usize] = i as u32;
                *at += 1;
            }
        }
        slots
    }

    /// The group of `slot`, after [`SlotGather::sort`]. Built when it is sent, so the groups of a round are
    /// not all held at once beside the buffer.
    pub(crate) fn sorted(&self, slot: usize) -> StringGroup {
        let p = self.per_slot[slot];
        let end = self.at.get(slot).map_or(0, |&at| at as usize);
        let mut group = StringGroup::new(0, p.bytes as usize);
        for &i in &self.order[end.saturating_sub(p.count as usize)..end] {
            group.push_wire(self.pair(i as usize));
        }
        group
    }

    /// Empties the gather (its buffer kept for the next pairs).
    pub(crate) fn clear(&mut self) {
        self.wire.clear();
        self.starts.clear();
        self.slots.clear();
        self.per_slot.fill(SlotPairs::default());
        self.order.clear();
        self.at.clear();
        self.keys = 0;
    }

    /// Every slot's group, in slot order, and an empty gather.
    #[cfg(test)]
    fn drain(&mut self) -> Vec<(usize, StringGroup)> {
        let groups = self
            .sort()
            .into_iter()
            .map(|slot| (slot, self.sorted(slot)))
            .collect();
        self.clear();
        groups
    }
}

/// The key-value pairs of a group's arguments (as [`StringGroup::command`] gave them): each is a bulk string
/// of its own, read back with the RESP decoder.
pub(crate) fn pairs(args: &Bytes) -> Vec<(Bytes, Bytes)> {
    let mut buf = BytesMut::from(&args[..]);
    let mut decoder = Decoder::new();
    let mut next = || match decoder.decode(&mut buf) {
        Ok(Some(Frame::Bulk(b))) => Some(b),
        _ => None,
    };
    let mut out = Vec::new();
    while let (Some(key), Some(value)) = (next(), next()) {
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_the_wire_form_of_its_command_and_gives_its_pairs_back() {
        let mut g = StringGroup::new(2, 0);
        g.push(b"k1", b"");
        g.push(b"key\r\n2", &[b'v'; 12]);
        assert_eq!(g.len(), 2);
        let (head, args, count) = g.command(true);
        assert_eq!(count, 2);
        let mut wire = head.to_vec();
        wire.extend_from_slice(&args);
        let mut expected = bytes::BytesMut::new();
        ferry_resp::encode_command(
            &[&b"MSETNX"[..], b"k1", b"", b"key\r\n2", &[b'v'; 12]],
            &mut expected,
        );
        assert_eq!(wire, expected.to_vec());
        let back = pairs(&args);
        assert_eq!(back.len(), 2);
        assert_eq!((&back[0].0[..], &back[0].1[..]), (&b"k1"[..], &b""[..]));
        assert_eq!(&back[1].0[..], b"key\r\n2");
        assert_eq!(&back[1].1[..], &[b'v'; 12]);
    }

    #[test]
    fn a_slot_gather_gives_each_slot_its_pairs_in_order_and_forgets_what_it_gave() {
        let mut g = SlotGather::new(4);
        assert_eq!(g.push(2, b"a", b"1"), 1);
        assert_eq!(g.push(0, b"b", b"22"), 1);
        assert_eq!(g.push(2, b"c", b""), 2);
        assert_eq!(g.push(3, b"d\r\n", b"4444"), 1);
        assert_eq!(g.keys(), 4);
        let two = g.take(2);
        assert_eq!(g.keys(), 2);
        let got: Vec<_> = pairs(&two.command(true).1).into_iter().collect();
        assert_eq!(
            got,
            vec![
                (b"a"[..].into(), b"1"[..].into()),
                (b"c"[..].into(), b""[..].into())
            ]
        );
        assert_eq!(g.take(2).len(), 0);
        assert_eq!(g.push(2, b"e", b"5"), 1);
        let groups = g.drain();
        let slots: Vec<_> = groups.iter().map(|(s, grp)| (*s, grp.len())).collect();
        assert_eq!(slots, vec![(0, 1), (2, 1), (3, 1)]);
        let mut expected = BytesMut::new();
        encode_bulk(b"d\r\n", &mut expected);
        encode_bulk(b"4444", &mut expected);
        let (_, last) = groups.into_iter().last().unwrap();
        assert_eq!(&last.command(false).1[..], &expected[..]);
        assert_eq!((g.keys(), g.wire.len()), (0, 0));
        assert!(g.drain().is_empty());
    }

    proptest::proptest! {
        /// Whatever the order of pushes, early takes and drains, each slot's pairs come out once, in the order
        /// they were pushed.
        #[test]
        fn a_slot_gather_gives_what_a_map_of_lists_would(
            ops in proptest::collection::vec((0usize..6, 0u8..3, 0usize..40), 1..300),
        ) {
            let mut g = SlotGather::new(6);
            let mut model: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); 6];
            let mut n = 0u32;
            let check = |slot: usize, group: StringGroup, model: &mut Vec<Vec<(Vec<u8>, Vec<u8>)>>| {
                let got: Vec<(Vec<u8>, Vec<u8>)> = pairs(&group.command(true).1)
                    .into_iter()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect();
                assert_eq!(got, std::mem::take(&mut model[slot]), "slot {slot}");
            };
            for (slot, op, len) in ops {
                match op {
                    0 | 1 => {
                        n += 1;
                        let key = format!("k{n}").into_bytes();
                        let value = vec![b'v'; len];
                        g.push(slot, &key, &value);
                        model[slot].push((key, value));
                    }
                    _ if len % 2 == 0 => check(slot, g.take(slot), &mut model),
                    _ => {
                        let groups = g.drain();
                        let mut seen: Vec<usize> = groups.iter().map(|(s, _)| *s).collect();
                        seen.dedup();
                        proptest::prop_assert_eq!(seen.len(), groups.len());
                        for (s, group) in groups {
                            check(s, group, &mut model);
                        }
                        proptest::prop_assert!(model.iter().all(Vec::is_empty));
                    }
                }
                proptest::prop_assert_eq!(g.keys(), model.iter().map(Vec::len).sum::<usize>());
            }
        }
    }

    #[test]
    fn an_mset_head_counts_every_argument() {
        let mut g = StringGroup::new(0, 16);
        for i in 0..5 {
            g.push(format!("k{i}").as_bytes(), b"v");
        }
        let (head, _, _) = g.command(false);
        assert_eq!(&head[..], b"*11\r\n$4\r\nMSET\r\n");
    }
}
