//! LZF decompression (the format Redis uses for compressed strings), with a bounded output.

/// Why an LZF block could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LzfError {
    /// A back reference points before the start of the output.
    BadBackReference,
    /// The input ended inside a literal run or back reference.
    TruncatedInput,
    /// The output would exceed the declared uncompressed length.
    OutputOverflow,
    /// The output is shorter than the declared uncompressed length.
    OutputShort,
}

impl std::fmt::Display for LzfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LzfError::BadBackReference => "LZF back reference before start of output",
            LzfError::TruncatedInput => "LZF input ends inside a run",
            LzfError::OutputOverflow => "LZF output longer than declared length",
            LzfError::OutputShort => "LZF output shorter than declared length",
        })
    }
}

/// Largest expansion LZF can produce: a 3-byte back reference yields up to 264 bytes.
pub const MAX_EXPANSION: usize = 88;

/// Decompresses `input` into exactly `out_len` bytes.
///
/// The caller must check `out_len` against the input size first (at most
/// `input.len() * MAX_EXPANSION`), so a forged length never allocates beyond what the input
/// can produce.
pub fn decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>, LzfError> {
    // Appended to a buffer of the declared capacity (never zeroed first, never grown: every write is checked
    // against `out_len` before it is made).
    let mut out = Vec::with_capacity(out_len);
    let mut ip = 0usize;
    while ip < input.len() {
        let ctrl = input[ip] as usize;
        ip += 1;
        let op = out.len();
        if ctrl < 32 {
            let run = ctrl + 1;
            if ip + run > input.len() {
                return Err(LzfError::TruncatedInput);
            }
            if op + run > out_len {
                return Err(LzfError::OutputOverflow);
            }
            out.extend_from_slice(&input[ip..ip + run]);
            ip += run;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                if ip >= input.len() {
                    return Err(LzfError::TruncatedInput);
                }
                len += input[ip] as usize;
                ip += 1;
            }
            len += 2;
            if ip >= input.len() {
                return Err(LzfError::TruncatedInput);
            }
            let back = ((ctrl & 0x1f) << 8) + input[ip] as usize + 1;
            ip += 1;
            if back > op {
                return Err(LzfError::BadBackReference);
            }
            if op + len > out_len {
                return Err(LzfError::OutputOverflow);
            }
            let start = op - back;
            if back >= len {
                out.extend_from_within(start..start + len);
            } else if back == 1 {
                // A run of one byte.
                let b = out[start];
                out.resize(op + len, b);
            } else {
                // Overlapping: the output repeats the `back` bytes from `start`. Each copy takes what is already
                // written of that pattern (doubling each time), so it only reads bytes written before it.
                let mut done = 0;
                while done < len {
                    let n = (back + done).min(len - done);
                    out.extend_from_within(start..start + n);
                    done += n;
                }
            }
        }
    }
    if out.len() != out_len {
        return Err(LzfError::OutputShort);
    }
    Ok(out)
}

/// Compresses `input` with a simple greedy LZF encoder (used by the writer for long strings).
/// Returns `None` when compression would not save at least 4 bytes.
pub fn compress(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() < 4 {
        return None;
    }
    const HSIZE: usize = 1 << 14;
    let mut table = vec![0usize; HSIZE]; // position + 1, 0 = empty
    let mut out: Vec<u8> = Vec::with_capacity(input.len());
    let mut lit_start = 0usize;
    let mut ip = 0usize;
    let flush_literals = |out: &mut Vec<u8>, from: usize, to: usize| {
        let mut s = from;
        while s < to {
            let n = (to - s).min(32);
            out.push((n - 1) as u8);
            out.extend_from_slice(&input[s..s + n]);
            s += n;
        }
    };
    while ip + 2 < input.len() {
        let h =
            ((input[ip] as usize) << 16 | (input[ip + 1] as usize) << 8 | input[ip + 2] as usize)
                .wrapping_mul(2654435761)
                >> 8
                & (HSIZE - 1);
        let cand = table[h];
        table[h] = ip + 1;
        if cand > 0 {
            let r = cand - 1;
            let off = ip - r - 1;
            if off < 8192 && input[r..r + 3] == input[ip..ip + 3] {
                let max = (input.len() - ip).min(264);
                let mut len = 3;
                while len < max && input[r + len] == input[ip + len] {
                    len += 1;
                }
                flush_literals(&mut out, lit_start, ip);
                let l = len - 2;
                if l < 7 {
                    out.push(((l << 5) | (off >> 8)) as u8);
                } else {
                    out.push(((7 << 5) | (off >> 8)) as u8);
                    out.push((l - 7) as u8);
                }
                out.push((off & 0xff) as u8);
                ip += len;
                lit_start = ip;
                if out.len() + 4 >= input.len() {
                    return None;
                }
                continue;
            }
        }
        ip += 1;
    }
    flush_literals(&mut out, lit_start, input.len());
    if out.len() + 4 >= input.len() {
        None
    } else {
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_compressible_data() {
        let data: Vec<u8> = b"abcabcabcabcabcabcabcabc hello hello hello hello".repeat(50);
        let c = compress(&data).expect("compressible");
        assert!(c.len() < data.len());
        assert_eq!(decompress(&c, data.len()).unwrap(), data);
    }

    #[test]
    fn overlapping_back_reference_repeats_what_it_writes() {
        // One literal 'x', then a back reference of distance 1 and length 9 (ctrl 7 << 5, extra 0): ten 'x'.
        assert_eq!(
            decompress(&[0, b'x', 0xe0, 0, 0], 10).unwrap(),
            b"x".repeat(10)
        );
        // Distance 2 over "ab": "abababab".
        assert_eq!(
            decompress(&[1, b'a', b'b', 0xc0, 0x01], 10).unwrap(),
            b"ab".repeat(5)
        );
        let runs: Vec<u8> = [b"x".repeat(300), b"yz".repeat(200)].concat();
        let c = compress(&runs).expect("compressible");
        assert_eq!(decompress(&c, runs.len()).unwrap(), runs);
    }

    #[test]
    fn overlapping_back_reference_of_any_distance_and_length_repeats_its_pattern() {
        // A literal run of `back` bytes, then one back reference of distance `back` and length `len`.
        for back in 1..=20usize {
            for len in 3..=264usize {
                if back >= len {
                    continue;
                }
                let lit: Vec<u8> = (0..back).map(|i| b'a' + i as u8).collect();
                let mut input = vec![(back - 1) as u8];
                input.extend_from_slice(&lit);
                let code = len - 2;
                if code < 7 {
                    input.push(((code as u8) << 5) | ((back - 1) >> 8) as u8);
                } else {
                    input.push((7 << 5) | ((back - 1) >> 8) as u8);
                    input.push((code - 7) as u8);
                }
                input.push((back - 1) as u8);
                let want: Vec<u8> = (0..back + len).map(|i| lit[i % back]).collect();
                assert_eq!(
                    decompress(&input, back + len).unwrap(),
                    want,
                    "back {back} len {len}"
                );
            }
        }
    }

    #[test]
    fn rejects_back_reference_before_start() {
        assert_eq!(
            decompress(&[0x20, 0x05], 3),
            Err(LzfError::BadBackReference)
        );
    }

    #[test]
    fn rejects_output_longer_than_declared() {
        assert_eq!(
            decompress(&[2, b'a', b'b', b'c'], 2),
            Err(LzfError::OutputOverflow)
        );
    }

    /// The format decoded one byte at a time, as the LZF reference decoder does: what `decompress` must agree
    /// with on any input, valid or not.
    fn decompress_bytewise(input: &[u8], out_len: usize) -> Result<Vec<u8>, LzfError> {
        let mut out = Vec::new();
        let mut ip = 0;
        while ip < input.len() {
            let ctrl = input[ip] as usize;
            ip += 1;
            if ctrl < 32 {
                // A whole literal run is checked before it is copied: a truncated run is reported as such.
                if ip + ctrl + 1 > input.len() {
                    return Err(LzfError::TruncatedInput);
                }
                if out.len() + ctrl + 1 > out_len {
                    return Err(LzfError::OutputOverflow);
                }
                for _ in 0..=ctrl {
                    out.push(input[ip]);
                    ip += 1;
                }
            } else {
                let mut len = ctrl >> 5;
                if len == 7 {
                    len += *input.get(ip).ok_or(LzfError::TruncatedInput)? as usize;
                    ip += 1;
                }
                len += 2;
                let low = *input.get(ip).ok_or(LzfError::TruncatedInput)? as usize;
                ip += 1;
                let back = ((ctrl & 0x1f) << 8) + low + 1;
                if back > out.len() {
                    return Err(LzfError::BadBackReference);
                }
                if out.len() + len > out_len {
                    return Err(LzfError::OutputOverflow);
                }
                for _ in 0..len {
                    out.push(out[out.len() - back]);
                }
            }
        }
        if out.len() != out_len {
            return Err(LzfError::OutputShort);
        }
        Ok(out)
    }

    /// Data of runs with short periods (what overlapping back references encode) and some noise.
    fn periodic() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..12), 0usize..400),
            1..8,
        )
        .prop_map(|parts| {
            parts
                .into_iter()
                .flat_map(|(pattern, n)| {
                    pattern
                        .iter()
                        .cycle()
                        .take(pattern.len() + n)
                        .copied()
                        .collect::<Vec<_>>()
                })
                .collect()
        })
    }

    proptest::proptest! {
        #[test]
        fn periodic_data_round_trips_and_matches_the_bytewise_decoder(data in periodic()) {
            if let Some(c) = compress(&data) {
                proptest::prop_assert_eq!(decompress(&c, data.len()).unwrap(), data.clone());
                proptest::prop_assert_eq!(decompress_bytewise(&c, data.len()).unwrap(), data);
            }
        }

        #[test]
        fn any_input_decodes_as_the_bytewise_decoder_decodes_it(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            out_len in 0usize..2000,
        ) {
            proptest::prop_assert_eq!(decompress(&input, out_len), decompress_bytewise(&input, out_len));
        }
    }
}
