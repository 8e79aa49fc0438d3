//! Hash slots: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384.

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// Lookup tables for CRC16/XMODEM (polynomial 0x1021, initial value 0, no reflection), computed at
/// compile time. `TABLES[0][b]` is the CRC of the byte `b`; `TABLES[k][b]` is the CRC of `b` followed by
/// `k` zero bytes, so eight bytes can be folded in with eight independent lookups ("slicing-by-8").
static TABLES: [[u16; 256]; 8] = build_tables();

const fn build_tables() -> [[u16; 256]; 8] {
    let mut tables = [[0u16; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev << 8) ^ tables[0][(prev >> 8) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

/// CRC16 as Redis Cluster uses it (XMODEM: polynomial 0x1021, initial value 0, no reflection, no
/// final xor). `crc16_xmodem(b"123456789") == 0x31C3`.
pub fn crc16_xmodem(data: &[u8]) -> u16 {
    let t = &TABLES;
    let mut crc: u16 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let [hi, lo] = crc.to_be_bytes();
        crc = t[7][usize::from(c[0] ^ hi)]
            ^ t[6][usize::from(c[1] ^ lo)]
            ^ t[5][usize::from(c[2])]
            ^ t[4][usize::from(c[3])]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    for &byte in chunks.remainder() {
        crc = (crc << 8) ^ t[0][usize::from(((crc >> 8) as u8) ^ byte)];
    }
    crc
}

/// CRC16/XMODEM one byte at a time (the plain table-driven form), kept to check the sliced one.
#[cfg(test)]
fn crc16_bytewise(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc = (crc << 8) ^ TABLES[0][usize::from(((crc >> 8) as u8) ^ byte)];
    }
    crc
}

/// The part of `key` that is hashed: the hash tag when the key has a non-empty one, else the whole key.
///
/// The tag is what lies between the first `{` and the first `}` after it. An empty tag (`{}`) does not
/// count, and nothing after it is looked at: `foo{}{bar}` hashes whole, `foo{{bar}}zap` hashes `{bar`.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

/// The cluster hash slot (0..16384) that `key` belongs to, as `CLUSTER KEYSLOT` computes it.
///
/// ```
/// use ferry_topology::key_slot;
/// assert_eq!(key_slot(b"123456789"), 0x31C3 % 16384);
/// assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    crc16_xmodem(hash_tag(key)) & (SLOT_COUNT - 1)
}

/// A short hash tag whose keys land in `slot`: `key_slot(format!("{{{tag}}}:anything"))` is `slot`.
/// Useful to put a key (a checkpoint, a lock) on a node that owns a given slot. `None` for a slot
/// outside 0..16384.
///
/// ```
/// use ferry_topology::{key_slot, tag_for_slot};
/// let tag = tag_for_slot(42).unwrap();
/// assert_eq!(key_slot(format!("{{{tag}}}:checkpoint").as_bytes()), 42);
/// ```
pub fn tag_for_slot(slot: u16) -> Option<String> {
    if slot >= SLOT_COUNT {
        return None;
    }
    static TAGS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        // The smallest decimal number hashing to each slot; all slots are hit below 110,000.
        let mut tags = vec![u32::MAX; usize::from(SLOT_COUNT)];
        let mut missing = tags.len();
        let mut n = 0u32;
        while missing > 0 && n < 10_000_000 {
            let slot = usize::from(key_slot(n.to_string().as_bytes()));
            if tags[slot] == u32::MAX {
                tags[slot] = n;
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    tags.get(usize::from(slot))
        .filter(|&&n| n != u32::MAX)
        .map(|n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_test_vector_is_0x31c3() {
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"123456789"), 0x31C3 & 0x3FFF);
    }

    #[test]
    fn hash_tags_follow_the_cluster_spec() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{}"), b"{}");
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(hash_tag(b"}{a}"), b"a");
        assert_eq!(hash_tag(b"no tag"), b"no tag");
        assert_eq!(hash_tag(b""), b"");
    }

    #[test]
    fn sliced_crc_equals_bytewise_crc_for_every_length() {
        let data: Vec<u8> = (0..600u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for len in 0..data.len() {
            assert_eq!(
                crc16_xmodem(&data[..len]),
                crc16_bytewise(&data[..len]),
                "length {len}"
            );
        }
    }

    #[test]
    fn every_slot_has_a_tag() {
        for slot in 0..SLOT_COUNT {
            let tag = tag_for_slot(slot).expect("a tag");
            assert_eq!(key_slot(format!("x{{{tag}}}y").as_bytes()), slot);
        }
        assert_eq!(tag_for_slot(SLOT_COUNT), None);
    }

    #[test]
    fn empty_key_is_slot_zero() {
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn known_slots_match_redis() {
        // Values from CLUSTER KEYSLOT on a real server.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"somekey"), 11058);
    }
}
