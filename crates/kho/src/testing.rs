//! Test support, not API: builders, oracles and fuzz entry points shared by
//! the crate's unit tests, its integration tests (`tests/`), its benches and
//! the fuzz targets (`fuzz/`).
//!
//! Compiled for `cfg(test)` and under the `testing` feature, which the
//! crate's own dev-dependency on itself and `fuzz/Cargo.toml` turn on; a
//! normal build (and `cargo doc`) never sees it.
//!
//! | item                      | what it is                                               |
//! |---------------------------|----------------------------------------------------------|
//! | [`fuzz_walk`]             | the walk's fuzz entry point, input in [`walk_input`]     |
//! | [`fuzz_v1`]               | the kho-v1 reader's fuzz entry point, input in [`v1_input`] |
//! | [`fuzz_fdt`]              | the root FDT parser's fuzz entry point                   |
//! | [`write_v1`]              | a kho-v1 chunk list writer (Linux's layout)              |
//! | [`TestTree`], [`merged`], [`sorted_by_key`] | a bare tree builder and the reader's oracles |
//!
//! [`crate::VecArena`]'s test knobs (`claim`, `write_word`, `set_limit`) are
//! under the same switch.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

pub mod abi_fuzz;
pub mod fuzz_bytes;
#[cfg(test)]
#[allow(clippy::panic, clippy::as_conversions, clippy::result_large_err)]
pub(crate) mod luo_fixture;
#[cfg(test)]
mod random_inputs;
mod tree;
pub mod tree_fuzz;
pub mod v1_fuzz;
pub mod v1_input;
mod v1_writer;
pub mod walk_input;

pub use tree::{ARENA_BASE, TestTree, block, merged, range, sorted_by_key};
pub use v1_writer::write_v1;

use crate::fdt::KhoFdt;

/// Whether a corpus file's name is one a fuzzing run gave it (libFuzzer
/// names each input it keeps by its SHA-1: 40 hex digits) rather than a
/// named seed. The seed tests check what a seed's name says; the replay
/// tests replay both.
pub fn fuzzer_named(name: &str) -> bool {
    name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Fuzz entry point of the walk: arbitrary bytes describe a small machine
/// and a tree ([`walk_input`]); the walk and the coalescer run to
/// completion and are checked against a reference walk. Panics on a wrong
/// answer, not only on a crash.
pub fn fuzz_walk(data: &[u8]) {
    let _ = walk_input::run(data);
}

/// Fuzz entry point of the kho-v1 reader: arbitrary bytes are a chunk list
/// ([`v1_input`]), read and checked against a reference reader. Panics on a
/// wrong answer, not only on a crash.
pub fn fuzz_v1(data: &[u8]) {
    v1_input::run(data);
}

/// Structure-aware fuzz entry point of the walk and the coalescer: a
/// tree described by the bytes is written, mutated and checked against a
/// reference walk ([`tree_fuzz`]). Panics on a wrong answer, not only on a
/// crash.
pub fn fuzz_tree(data: &[u8]) {
    let _ = tree_fuzz::run(data);
}

/// Structure-aware fuzz entry point of the kho-v1 reader: a chunk list
/// described by the bytes is written, mutated and checked against a
/// reference reader ([`v1_fuzz`]). Panics on a wrong answer, not only on a
/// crash.
pub fn fuzz_v1_list(data: &[u8]) {
    let _ = v1_fuzz::run(data);
}

/// Fuzz entry point of the root FDT parser: arbitrary bytes are parsed and
/// everything parsed is formatted. Must never panic.
pub fn fuzz_fdt(data: &[u8]) {
    use core::fmt::{self, Write};

    /// Formats into nothing: exercises every `Display` path.
    struct Sink;
    impl Write for Sink {
        fn write_str(&mut self, _: &str) -> fmt::Result {
            Ok(())
        }
    }

    match KhoFdt::parse(data) {
        Ok(fdt) => {
            let _ = write!(
                Sink,
                "{} {} {}",
                fdt.version(),
                fdt.root(),
                fdt.total_size()
            );
            for s in fdt.subnodes() {
                let _ = write!(Sink, "{} {} {:?}", s.name(), s.data(), s.size());
                // Lookup by name finds this very node: names are unique.
                let found = fdt.subnode(s.name());
                debug_assert_eq!(found, Some(s));
            }
        }
        Err(e) => {
            let _ = write!(Sink, "{e} {e:?}");
        }
    }
}
