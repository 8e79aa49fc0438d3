//! `key_slot` (our table-driven CRC16/XMODEM with hash tags) against the `crc16` crate computing the
//! same slot, on keys of typical and large sizes.
//!
//! Run: `cargo bench -p ferry-benches --bench key_slot`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The slot as the `crc16` crate computes it, with the same hash-tag rule.
fn crc16_crate_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(ferry_topology::hash_tag(key)) & 0x3FFF
}

fn keys(len: usize, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut k = format!("user:{i}:").into_bytes();
            k.resize(len, b'x');
            k
        })
        .collect()
}

/// The sum of the slots of `keys` under `slot` (generic, so each use compiles to a direct call).
#[inline(always)]
fn slot_sum(keys: &[Vec<u8>], slot: impl Fn(&[u8]) -> u16) -> u64 {
    keys.iter().map(|k| slot(black_box(k)) as u64).sum()
}

fn bench(c: &mut Criterion) {
    for ck in keys(1000, 4) {
        assert_eq!(ferry_topology::key_slot(&ck), crc16_crate_slot(&ck));
    }
    let mut group = c.benchmark_group("key_slot");
    for len in [16usize, 64, 1024] {
        let batch = keys(len, 1000);
        let bytes: usize = batch.iter().map(Vec::len).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::new("ferry", len), &batch, |b, batch| {
            b.iter(|| slot_sum(batch, ferry_topology::key_slot))
        });
        group.bench_with_input(BenchmarkId::new("crc16_crate", len), &batch, |b, batch| {
            b.iter(|| slot_sum(batch, crc16_crate_slot))
        });
    }
    // Tagged keys: only the tag is hashed.
    let tagged: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("{{user:{i}}}:profile:settings").into_bytes())
        .collect();
    group.throughput(Throughput::Elements(tagged.len() as u64));
    group.bench_function("ferry/tagged", |b| {
        b.iter(|| slot_sum(&tagged, ferry_topology::key_slot))
    });
    group.bench_function("crc16_crate/tagged", |b| {
        b.iter(|| slot_sum(&tagged, crc16_crate_slot))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
