//! `kho run --scheme`: every peer design's handover survives the real
//! two-process kexec, restored the way its authors restored it.

use std::process::Command;

use serde_json::Value;

mod common;
use common::{run_rows, u};

fn run(scheme: &str) -> Value {
    let rows = run_rows(&["--machine-size", "128M", "--scheme", scheme]);
    assert!(!rows.is_empty());
    rows[0].clone()
}

#[test]
fn every_scheme_hands_over_without_loss() {
    for (scheme, strategy) in [
        ("xarray", "per-block"),
        ("xarray-512", "per-block"),
        ("radix-mainline", "per-block"),
        ("maple", "coalesced"),
    ] {
        let row = run(scheme);
        assert_eq!(row["scheme"], scheme, "{row}");
        assert_eq!(row["strategy"], strategy, "{row}");
        assert!(row.get("kho_error").is_none(), "{row}");
        assert!(u(&row, "blocks") > 0);
        assert_eq!(u(&row, "lost_bytes"), 0, "{scheme}");
        assert_eq!(
            u(&row, "verified_bytes"),
            u(&row, "preserved_bytes"),
            "{scheme}"
        );
    }
}

#[test]
fn the_default_scheme_is_ours() {
    let row = run("kho");
    assert_eq!(row["scheme"], "kho", "{row}");
    // Every row carries what the run was and the next-boot total.
    assert_eq!(row["workload"], "default", "{row}");
    assert_eq!(u(&row, "machine_size"), 128 << 20, "{row}");
    assert!(row["next_boot_init_ms"].as_f64().is_some(), "{row}");
    assert_eq!(u(&row, "lost_bytes"), 0);
    assert_eq!(u(&row, "verified_bytes"), u(&row, "preserved_bytes"));
}

#[test]
fn an_unknown_scheme_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_kho"))
        .args(["run", "--scheme", "btree"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'btree' for '--scheme") && err.contains("radix-mainline"),
        "{err}"
    );
}
