//! Structure-aware: the bytes describe a structure that is written,
//! mutated and checked against a reference (kho::testing::v1_fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kho::testing::fuzz_v1_list(data);
});
