//! What the CLI tests share: running the built `kho` binary and reading its
//! `kho run --json` rows.
#![allow(dead_code)]

use std::process::Command;

use serde_json::Value;

/// The built `kho` binary.
pub(crate) fn kho() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kho"))
}

/// `kho run --json ARGS`: the rows; fails the test, with kho's stderr, if
/// the command fails.
pub(crate) fn run_rows(args: &[&str]) -> Vec<Value> {
    let out = kho()
        .args(["run", "--json"])
        .args(args)
        .output()
        .expect("running kho");
    assert!(
        out.status.success(),
        "kho run {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    v["rows"].as_array().expect("a rows list").clone()
}

/// An unsigned field of a row.
pub(crate) fn u(row: &Value, key: &str) -> u64 {
    row[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {row}"))
}
