//! RESP decoding, ferry-resp side by side with its peers in one run:
//! - `redis-protocol` 6: its `BytesMut` decoder (`decode_bytes_mut`, zero-copy `Bytes` frames) and
//!   its range decoder (`decode_range`, offsets into a borrowed slice, no `Bytes` built);
//! - the `redis` crate (redis-rs): its streaming `ValueCodec` (a tokio-util decoder over `BytesMut`,
//!   producing owned `Value`s).
//!
//! On the SET stream, ferry-resp also runs its command path (`Decoder::decode_command`: one
//! `Bytes` per command plus inline argument ranges), whole-buffer and 64 KiB reads.
//!
//! Two streams: about one million pipelined `SET key value` commands (what a server or a proxy
//! reads), and a reply-heavy RESP3 stream (bulks of varied size, arrays, maps, integers, nulls).
//! Each iteration decodes the whole stream from one buffer; building the buffer is not timed.
//! Run: `CARGO_TARGET_DIR=/work/target-resp cargo bench -p ferry-benches --bench resp_decode`.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use ferry_benches::Rng;
use ferry_resp::{encode_command, encode_frame, Decoder, Frame};
use tokio_util::codec::Decoder as _;

/// Number of SET commands in the command stream.
const SETS: usize = 1_000_000;

/// `SET key:<n> <value of 8..72 bytes>` one million times.
fn set_stream() -> Vec<u8> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = BytesMut::with_capacity(SETS * 64);
    let value = [b'v'; 80];
    for i in 0..SETS {
        let key = format!("key:{i:010}");
        let len = 8 + rng.below(64);
        encode_command(&[&b"SET"[..], key.as_bytes(), &value[..len]], &mut out);
    }
    out.to_vec()
}

/// RESP3 replies: bulks of 8 B to 16 KiB, arrays of bulks (MGET / LRANGE), maps (HGETALL),
/// integers, OKs and nulls, in a fixed pseudo-random mix.
fn reply_stream() -> (Vec<u8>, usize) {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut out = BytesMut::new();
    let blob = vec![b'x'; 16 * 1024];
    let mut frames = 0;
    let bulk = |rng: &mut Rng| {
        let len = match rng.below(100) {
            0..=59 => 8 + rng.below(56),
            60..=89 => 64 + rng.below(960),
            90..=98 => 1024 + rng.below(3072),
            _ => 4096 + rng.below(12 * 1024),
        };
        Frame::bulk(&blob[..len])
    };
    while out.len() < 48 * 1024 * 1024 {
        let frame = match rng.below(10) {
            0..=3 => bulk(&mut rng),
            4 | 5 => Frame::Array((0..1 + rng.below(20)).map(|_| bulk(&mut rng)).collect()),
            6 | 7 => Frame::Map(
                (0..1 + rng.below(16))
                    .map(|i| (Frame::bulk(format!("field:{i}")), bulk(&mut rng)))
                    .collect(),
            ),
            8 => Frame::Integer(rng.next_u64() as i64 >> 20),
            _ => {
                if rng.below(2) == 0 {
                    Frame::simple("OK")
                } else {
                    Frame::Null
                }
            }
        };
        encode_frame(&frame, &mut out);
        frames += 1;
    }
    (out.to_vec(), frames)
}

fn ferry_decode(data: &mut BytesMut) -> usize {
    let mut dec = Decoder::new();
    let mut n = 0;
    while let Some(frame) = dec.decode(data).expect("valid stream") {
        black_box(frame);
        n += 1;
    }
    n
}

/// Ours again, but fed as a socket would: 64 KiB at a time (exercises resumption).
fn ferry_decode_chunked(data: &[u8]) -> usize {
    let mut dec = Decoder::new();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut n = 0;
    for chunk in data.chunks(64 * 1024) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = dec.decode(&mut buf).expect("valid stream") {
            black_box(frame);
            n += 1;
        }
    }
    n
}

/// Our command path: one `Command` per SET (touching its arguments, as a router would).
fn ferry_commands(data: &mut BytesMut) -> usize {
    let mut dec = Decoder::new();
    let mut n = 0;
    while let Some(cmd) = dec.decode_command(data).expect("valid stream") {
        black_box(cmd.arg(1));
        black_box(cmd);
        n += 1;
    }
    n
}

/// The command path fed 64 KiB at a time.
fn ferry_commands_chunked(data: &[u8]) -> usize {
    let mut dec = Decoder::new();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut n = 0;
    for chunk in data.chunks(64 * 1024) {
        buf.extend_from_slice(chunk);
        while let Some(cmd) = dec.decode_command(&mut buf).expect("valid stream") {
            black_box(cmd.arg(1));
            black_box(cmd);
            n += 1;
        }
    }
    n
}

fn rp2_bytes_mut(data: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Some((frame, _, _)) =
        redis_protocol::resp2::decode::decode_bytes_mut(data).expect("valid stream")
    {
        black_box(frame);
        n += 1;
    }
    n
}

fn rp2_range(data: &[u8]) -> usize {
    let (mut off, mut n) = (0, 0);
    while let Some((frame, used)) =
        redis_protocol::resp2::decode::decode_range(&data[off..]).expect("valid stream")
    {
        black_box(frame);
        off += used;
        n += 1;
    }
    n
}

fn rp3_bytes_mut(data: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Some((frame, _, _)) =
        redis_protocol::resp3::decode::complete::decode_bytes_mut(data).expect("valid stream")
    {
        black_box(frame);
        n += 1;
    }
    n
}

fn rp3_range(data: &[u8]) -> usize {
    let (mut off, mut n) = (0, 0);
    while let Some((frame, used)) =
        redis_protocol::resp3::decode::complete::decode_range(&data[off..]).expect("valid stream")
    {
        black_box(frame);
        off += used;
        n += 1;
    }
    n
}

fn redis_rs_codec(data: &mut BytesMut) -> usize {
    let mut codec = redis::ValueCodec::default();
    let mut n = 0;
    while let Some(value) = codec.decode(data).expect("valid stream") {
        black_box(value);
        n += 1;
    }
    n
}

/// How one implementation reads the stream.
#[derive(Clone, Copy)]
enum Input {
    /// Consumes a fresh `BytesMut` copy of the stream (made before the clock starts).
    Buffer(fn(&mut BytesMut) -> usize),
    /// Reads the stream as a borrowed slice.
    Slice(fn(&[u8]) -> usize),
}

impl Input {
    fn run(self, buf: &mut BytesMut, data: &[u8]) -> usize {
        match self {
            Input::Buffer(f) => f(buf),
            Input::Slice(f) => f(data),
        }
    }
}

/// One implementation in a comparison: a name and how it runs.
type Run = (&'static str, Input);

/// The implementations compared on the SET command stream.
const SET_RUNS: [Run; 7] = [
    ("ferry-resp Decoder", Input::Buffer(ferry_decode)),
    (
        "ferry-resp Decoder, 64KiB reads",
        Input::Slice(ferry_decode_chunked),
    ),
    ("ferry-resp decode_command", Input::Buffer(ferry_commands)),
    (
        "ferry-resp decode_command, 64KiB reads",
        Input::Slice(ferry_commands_chunked),
    ),
    (
        "redis-protocol decode_bytes_mut",
        Input::Buffer(rp2_bytes_mut),
    ),
    ("redis-protocol decode_range", Input::Slice(rp2_range)),
    ("redis ValueCodec", Input::Buffer(redis_rs_codec)),
];

/// The implementations compared on the RESP3 reply stream.
const REPLY_RUNS: [Run; 5] = [
    ("ferry-resp Decoder", Input::Buffer(ferry_decode)),
    (
        "ferry-resp Decoder, 64KiB reads",
        Input::Slice(ferry_decode_chunked),
    ),
    (
        "redis-protocol decode_bytes_mut",
        Input::Buffer(rp3_bytes_mut),
    ),
    ("redis-protocol decode_range", Input::Slice(rp3_range)),
    ("redis ValueCodec", Input::Buffer(redis_rs_codec)),
];

/// One criterion group: every implementation in `runs` over `data`, after checking that each
/// one sees the same `items` frames.
fn bench_group(c: &mut Criterion, group: &str, data: &[u8], items: usize, runs: &[Run]) {
    let buf = || BytesMut::from(data);
    for &(_, input) in runs {
        assert_eq!(input.run(&mut buf(), data), items);
    }
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));
    for &(name, input) in runs {
        g.bench_function(name, |b| match input {
            Input::Buffer(f) => b.iter_batched(buf, |mut d| f(&mut d), BatchSize::PerIteration),
            Input::Slice(f) => b.iter(|| f(data)),
        });
    }
    g.finish();
}

fn bench_sets(c: &mut Criterion) {
    let data = set_stream();
    bench_group(c, "resp_decode/1M_SET", &data, SETS, &SET_RUNS);
}

fn bench_replies(c: &mut Criterion) {
    let (data, frames) = reply_stream();
    let group = format!("resp_decode/replies_{frames}");
    bench_group(c, &group, &data, frames, &REPLY_RUNS);
}

/// Times each implementation once per round, in rotating order, and prints the minimum and the
/// median per implementation. Interleaving keeps a load spike on the shared machine from landing
/// on one implementation only; the minimum is the least disturbed run.
fn interleaved(title: &str, data: &[u8], items: usize, runs: &[Run], rounds: usize) {
    use std::time::Instant;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    for round in 0..rounds {
        for k in 0..runs.len() {
            let j = (k + round) % runs.len();
            let (_, input) = runs[j];
            let mut buf = BytesMut::from(data);
            let start = Instant::now();
            let n = black_box(input.run(&mut buf, black_box(data)));
            times[j].push(start.elapsed().as_secs_f64());
            assert_eq!(n, items);
        }
    }
    let stats: Vec<(f64, f64)> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            (t[0], t[t.len() / 2])
        })
        .collect();
    let base = runs
        .iter()
        .position(|(n, _)| *n == "redis-protocol decode_bytes_mut")
        .unwrap_or(0);
    let mb = data.len() as f64 / 1e6;
    println!("\n{title}: {items} frames, {mb:.1} MB, {rounds} interleaved rounds");
    println!(
        "| implementation | min time | median time | MB/s (min) | speed vs redis-protocol decode_bytes_mut (min / median) |"
    );
    println!("|---|---|---|---|---|");
    for ((name, _), (min, med)) in runs.iter().zip(&stats) {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.0} | {:.2}x / {:.2}x |",
            min * 1e3,
            med * 1e3,
            mb / min,
            stats[base].0 / min,
            stats[base].1 / med
        );
    }
}

/// The interleaved comparison of every implementation on both streams.
fn paired_report() {
    let rounds = std::env::var("FERRY_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(9);
    let sets = set_stream();
    interleaved("1M pipelined SET commands", &sets, SETS, &SET_RUNS, rounds);
    drop(sets);
    let (replies, frames) = reply_stream();
    interleaved("RESP3 reply stream", &replies, frames, &REPLY_RUNS, rounds);
}

criterion_group!(benches, bench_sets, bench_replies);

fn main() {
    paired_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
