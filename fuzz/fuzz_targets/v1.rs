//! Arbitrary bytes into the v1 reader: it must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kho::testing::fuzz_v1(data);
});
