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

/// Bytes (wire form) a cluster sink gathers over all slots before writing every group.
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

    /// Keys in the group.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Bytes of the keys and values in wire form.
    pub(crate) fn bytes(&self) -> usize {
        self.args.len()
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
    fn an_mset_head_counts_every_argument() {
        let mut g = StringGroup::new(0, 16);
        for i in 0..5 {
            g.push(format!("k{i}").as_bytes(), b"v");
        }
        let (head, _, _) = g.command(false);
        assert_eq!(&head[..], b"*11\r\n$4\r\nMSET\r\n");
    }
}
