//! `key_slot` against the server's own `CLUSTER KEYSLOT`, on a real cluster-enabled node.

use ferry_testkit::{Server, ServerOptions, Version};
use ferry_topology::{crc16_xmodem, key_slot};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Keys that probe the hash-tag rules: braces at every place, empty tags, nested tags, binary bytes.
fn edge_case_keys() -> Vec<Vec<u8>> {
    let fixed: &[&[u8]] = &[
        b"",
        b"{",
        b"}",
        b"{}",
        b"}{",
        b"{{",
        b"}}",
        b"{{}}",
        b"{}{}",
        b"{a}",
        b"a{b}c",
        b"foo{}{bar}",
        b"foo{{bar}}zap",
        b"foo{bar}{zap}",
        b"{user1000}.following",
        b"{user1000}.followers",
        b"a{",
        b"a}",
        b"{a",
        b"a{}",
        b"{}a",
        b"\x00",
        b"\x00{\x00}",
        b"\xff\xfe{\x80}",
        b"{\n}",
        b"123456789",
        b"{123456789}",
        b" {x} ",
        b"{{x}",
        b"{x}}",
        b"}{x}",
    ];
    fixed.iter().map(|k| k.to_vec()).collect()
}

fn generated_keys(n: usize) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5107);
    let alphabet: &[u8] = b"ab{}:x0\x00\xff";
    let mut keys = edge_case_keys();
    while keys.len() < n {
        let len = rng.gen_range(0..48);
        let key: Vec<u8> = match keys.len() % 3 {
            // Arbitrary binary keys.
            0 => (0..len).map(|_| rng.gen()).collect(),
            // Keys made mostly of braces and a few letters, so tags of every shape appear.
            1 => (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect(),
            // prefix{tag}suffix with random parts, the tag sometimes empty.
            _ => {
                let mut k: Vec<u8> = (0..rng.gen_range(0..8))
                    .map(|_| rng.gen_range(b'a'..=b'z'))
                    .collect();
                k.push(b'{');
                k.extend((0..rng.gen_range(0..6)).map(|_| rng.gen::<u8>()));
                k.push(b'}');
                k.extend(
                    (0..rng.gen_range(0..8)).map(|_| alphabet[rng.gen_range(0..alphabet.len())]),
                );
                k
            }
        };
        keys.push(key);
    }
    keys
}

fn assert_slots_match(version: Version) {
    let server = Server::start(ServerOptions::new(version).cluster())
        .expect("start a cluster-enabled server");
    let mut con = server.client();
    let keys = generated_keys(10_000);
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("CLUSTER").arg("KEYSLOT").arg(key.as_slice());
    }
    let expected: Vec<u16> = pipe.query(&mut con).expect("CLUSTER KEYSLOT pipeline");
    assert_eq!(expected.len(), keys.len());
    let mut mismatches = Vec::new();
    for (key, server_slot) in keys.iter().zip(&expected) {
        if key_slot(key) != *server_slot {
            mismatches.push(format!(
                "{:?}: ours {} server {}",
                String::from_utf8_lossy(key),
                key_slot(key),
                server_slot
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} keys differ on {version}:\n{}",
        mismatches.len(),
        keys.len(),
        mismatches.join("\n")
    );
}

#[test]
fn key_slot_equals_cluster_keyslot_for_10000_keys_on_7_0() {
    assert_slots_match(Version::V7_0);
}

#[test]
fn key_slot_equals_cluster_keyslot_for_10000_keys_on_6_2() {
    assert_slots_match(Version::V6_2);
}

#[test]
fn spec_test_vector_123456789_is_0x31c3() {
    assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
}

#[test]
fn table_driven_crc_equals_the_crc16_crate() {
    for key in generated_keys(2_000) {
        assert_eq!(
            crc16_xmodem(&key),
            crc16::State::<crc16::XMODEM>::calculate(&key)
        );
    }
}
