//! Arbitrary bytes into the vmalloc reader: it must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kho::testing::abi_fuzz::vmalloc_one(data);
});
