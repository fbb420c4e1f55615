//! Arbitrary bytes into the LUO reader and the cross-layer check: they must
//! never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kho::testing::abi_fuzz::luo_one(data);
});
