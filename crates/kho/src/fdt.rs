//! (being written)

/// Fuzz entry point: feeds arbitrary bytes to the reader; must never panic.
#[doc(hidden)]
pub fn fuzz_one(_data: &[u8]) {}
