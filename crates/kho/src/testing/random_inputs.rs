//! Deterministic streams of random byte strings for the harnesses' own
//! tests (the corpus seeds, the soak runs): one xorshift64 stream, so a
//! seed names the same inputs on every machine.

use alloc::vec::Vec;

/// `count` inputs from the stream seeded by `seed`, each of a length
/// below `max_len`.
pub(crate) fn random_inputs(seed: u64, count: u64, max_len: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count).map(move |_| {
        let len = next() % max_len;
        (0..len).map(|_| next() as u8).collect()
    })
}

/// The iterations of a soak run: `KHO_FUZZ_ITERS`, else 10,000.
pub(crate) fn soak_iters() -> u64 {
    extern crate std;
    std::env::var("KHO_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}
