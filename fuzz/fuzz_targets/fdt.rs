//! Arbitrary bytes into the fdt reader: it must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kho::testing::fuzz_fdt(data);
});
