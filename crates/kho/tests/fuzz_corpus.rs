//! Replays the fuzz corpus (fuzz/corpus/<target>/*) through the same entry
//! points the cargo-fuzz targets call, so stable CI exercises every input
//! that a fuzzing run ever kept. Each entry point must return without
//! panicking, whatever the bytes.

use std::fs;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).expect("read corpus file")))
        .collect()
}

fn replay(target: &str, entry: fn(&[u8])) {
    let inputs = corpus(target);
    assert!(!inputs.is_empty(), "corpus for {target} is empty");
    for (path, data) in inputs {
        eprintln!("{target}: {}", path.display());
        entry(&data);
    }
}

#[test]
#[cfg_attr(miri, ignore = "hundreds of harness runs: hours under Miri")]
fn walk_corpus() {
    replay("walk", kho::testing::fuzz_walk);
}

#[test]
#[cfg_attr(miri, ignore = "hundreds of harness runs: hours under Miri")]
fn v1_corpus() {
    replay("v1", kho::testing::fuzz_v1);
}

#[test]
#[cfg_attr(miri, ignore = "hundreds of harness runs: hours under Miri")]
fn tree_corpus() {
    replay("tree", kho::testing::fuzz_tree);
}

#[test]
#[cfg_attr(miri, ignore = "hundreds of harness runs: hours under Miri")]
fn v1_list_corpus() {
    replay("v1_list", kho::testing::fuzz_v1_list);
}

#[test]
#[cfg_attr(miri, ignore = "hundreds of harness runs: hours under Miri")]
fn fdt_corpus() {
    replay("fdt", kho::testing::fuzz_fdt);
}

#[test]
#[cfg_attr(miri, ignore = "hundreds of harness runs: hours under Miri")]
fn vmalloc_corpus() {
    replay("vmalloc", kho::testing::abi_fuzz::vmalloc_one);
}

#[test]
#[cfg_attr(miri, ignore = "hundreds of harness runs: hours under Miri")]
fn luo_corpus() {
    replay("luo", kho::testing::abi_fuzz::luo_one);
}
