//! Arbitrary bytes into the v1 reader: it must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kho::v1::fuzz_one(data);
});
