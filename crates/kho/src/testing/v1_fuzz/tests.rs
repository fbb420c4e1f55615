//! The harness on a fixed stream of random descriptions: no oracle
//! violation, and the descriptions reach what they should (valid lists
//! with many blocks, and rejected mutations).

extern crate std;

use super::*;
use crate::testing::random_inputs::{random_inputs, soak_iters};

#[test]
#[cfg_attr(
    miri,
    ignore = "heavy for Miri: 1 ms or more natively, thousands of times that interpreted"
)]
fn random_descriptions_agree_with_the_reference() {
    let (mut valid, mut rejected, mut mutated_valid, mut most) = (0, 0, 0, 0);
    for data in random_inputs(0x1234_5678_9abc_def1, 400, 400) {
        let out = run(&data);
        match &out.blocks {
            Some(b) => {
                valid += 1;
                most = most.max(b.len());
                if out.mutations > 0 {
                    mutated_valid += 1;
                }
            }
            None => rejected += 1,
        }
    }
    std::eprintln!(
        "valid {valid} (mutated {mutated_valid}), rejected {rejected}, most blocks {most}"
    );
    assert!(
        valid > 50 && rejected > 50,
        "valid {valid}, rejected {rejected}"
    );
    assert!(mutated_valid > 10, "mutated yet valid: {mutated_valid}");
    assert!(most >= 1000, "no description wrote many blocks: {most}");
}

/// A stand-in for a fuzzing run where cargo-fuzz (nightly) is missing:
/// `KHO_FUZZ_ITERS=100000 cargo test --release -p kho --lib -- --ignored soak_v1`.
#[test]
#[ignore = "long: a soak run of the harness"]
fn soak_v1() {
    let iters = soak_iters();
    for data in random_inputs(0x9e37_79b9_7f4a_7c15, iters, 600) {
        run(&data);
    }
}

/// Regenerates the corpus seeds of the `v1_list` target from the same
/// random stream: `cargo test --release -p kho --lib -- --ignored write_v1_list_seeds`.
#[test]
#[ignore = "writes fuzz/corpus/v1_list"]
fn write_v1_list_seeds() {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/v1_list");
    std::fs::create_dir_all(&dir).unwrap();
    let mut wanted = [
        ("valid-unmutated", 3usize),
        ("valid-mutated", 3),
        ("rejected", 4),
    ];
    for data in random_inputs(0x1234_5678_9abc_def1, 400, 400) {
        let out = run(&data);
        let class = match (&out.blocks, out.mutations) {
            (Some(_), 0) => 0,
            (Some(_), _) => 1,
            (None, _) => 2,
        };
        let (name, left) = &mut wanted[class];
        if *left > 0 {
            *left -= 1;
            std::fs::write(dir.join(std::format!("{name}-{left}")), &data).unwrap();
        }
    }
}

/// Each seed of fuzz/corpus/v1_list does what its name says.
#[test]
#[cfg_attr(
    miri,
    ignore = "heavy for Miri: 1 ms or more natively, thousands of times that interpreted"
)]
fn v1_list_seeds_do_what_their_names_say() {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/v1_list");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = std::string::String::from(path.file_name().unwrap().to_str().unwrap());
        if crate::testing::fuzzer_named(&name) {
            continue;
        }
        let out = run(&std::fs::read(&path).unwrap());
        let class = match (&out.blocks, out.mutations) {
            (Some(_), 0) => "valid-unmutated",
            (Some(_), _) => "valid-mutated",
            (None, _) => "rejected",
        };
        assert!(name.starts_with(class), "{name} is {class}");
        n += 1;
    }
    assert!(n >= 10, "{n} seeds");
}
