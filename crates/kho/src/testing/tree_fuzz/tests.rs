//! The harness on a fixed stream of random descriptions: no oracle
//! violation, and the descriptions reach what they should (valid trees
//! with many blocks, full leaves, and rejected mutations).

extern crate std;

use alloc::vec::Vec;

use super::*;

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[test]
fn random_descriptions_agree_with_the_reference() {
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let (mut valid, mut rejected, mut mutated_valid, mut most) = (0, 0, 0, 0);
    for _ in 0..400 {
        let len = (next() % 400) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let out = run(&data);
        match &out.walk {
            Some(b) => {
                valid += 1;
                most = most.max(b.len());
                if out.mutations > 0 {
                    mutated_valid += 1;
                }
            }
            None => rejected += 1,
        }
    }
    std::eprintln!("valid {valid} (mutated {mutated_valid}), rejected {rejected}, most blocks {most}");
    assert!(valid > 50 && rejected > 50, "valid {valid}, rejected {rejected}");
    assert!(mutated_valid > 10, "mutated yet valid: {mutated_valid}");
    assert!(most >= 32768, "no description filled a leaf: {most}");
}

/// A stand-in for a fuzzing run where cargo-fuzz (nightly) is missing:
/// `KHO_FUZZ_ITERS=100000 cargo test --release -p kho --lib -- --ignored soak_tree`.
#[test]
#[ignore = "long: a soak run of the harness"]
fn soak_tree() {
    let iters: u64 = std::env::var("KHO_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..iters {
        let len = (next() % 600) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        run(&data);
    }
}
