//! Shared helpers for the criterion benches in this folder (each bench is its own target).

/// A small deterministic generator (xorshift64), so every run of a bench builds the same input bytes.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> usize {
        (self.next_u64() % n) as usize
    }
}
