//! Arbitrary bytes into the walk reader: it must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kho::testing::fuzz_walk(data);
});
