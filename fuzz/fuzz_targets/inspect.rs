//! Arbitrary bytes as a memory image and a root FDT into `kho inspect`: it
//! must never panic, and every error it reports names an address.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kho_lab::testing::fuzz_one(data);
});
