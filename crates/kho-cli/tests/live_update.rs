//! The real two-process live update, through the built `kho` binary.

use std::process::Command;

use serde_json::Value;

mod common;
use common::{run_rows, u};

fn run(extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["--machine-size", "64M"];
    args.extend_from_slice(extra);
    run_rows(&args)
}

const KEYS: [&str; 22] = [
    "strategy",
    "memmap",
    "threads",
    "parallel_memmap_init",
    "memmap_inited_pages",
    "baseline_memmap_inited_pages",
    "restore_inited_pages",
    "deferred_init_ms",
    // kho-v4 (the default): one entry per LUO file.
    "luo_files",
    "blocks",
    "preserved_bytes",
    "walk_ms",
    "memblock_ms",
    "mm_init_ms",
    "baseline_mm_init_ms",
    "verified_bytes",
    "lost_bytes",
    "memblock_reserved_regions",
    "scheme",
    "workload",
    "machine_size",
    "next_boot_init_ms",
];

#[test]
fn every_strategy_verifies_everything_across_two_processes() {
    let rows = run(&[]);
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "per-block",
            "mainline-fix-a",
            "mainline-fix-ab",
            "mainline-fix",
            "coalesced",
            "bulk",
            "skip"
        ]
    );
    for row in &rows {
        let obj = row.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert!(u(row, "blocks") > 0);
        assert!(u(row, "preserved_bytes") >= 384 * 4096);
        assert_eq!(u(row, "verified_bytes"), u(row, "preserved_bytes"));
        assert_eq!(u(row, "lost_bytes"), 0);
        for f in row["luo_files"].as_array().unwrap() {
            assert_eq!(u(f, "bytes_lost"), 0, "{f}");
        }
        // eager: every struct page initialised once, as on the baseline.
        assert_eq!(row["memmap"], "eager");
        assert_eq!(
            u(row, "memmap_inited_pages"),
            u(row, "baseline_memmap_inited_pages")
        );
        assert_eq!(u(row, "restore_inited_pages"), 0);
    }
}

#[test]
fn every_memmap_mode_verifies_everything() {
    for mode in ["deferred", "lazy"] {
        let rows = run(&["--memmap", mode, "--strategy", "bulk"]);
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row["memmap"], mode);
        assert_eq!(u(row, "lost_bytes"), 0, "{mode}");
        assert_eq!(
            u(row, "verified_bytes"),
            u(row, "preserved_bytes"),
            "{mode}"
        );
        let before = u(row, "memmap_inited_pages");
        let restore = u(row, "restore_inited_pages");
        let baseline = u(row, "baseline_memmap_inited_pages");
        match mode {
            "lazy" => assert!(restore > 0 && before + restore <= baseline, "{row}"),
            _ => assert_eq!((before, restore), (baseline, 0), "{row}"),
        }
    }
}

#[test]
fn a_forgotten_page_is_reported_lost() {
    let rows = run(&["--strategy", "bulk", "--forget-pages", "2"]);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(u(row, "lost_bytes"), 2 * 4096);
    assert_eq!(
        u(row, "verified_bytes") + u(row, "lost_bytes"),
        u(row, "preserved_bytes")
    );
}

#[test]
fn the_new_kernel_refuses_garbage_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_kho"))
        .args([
            "__new-kernel",
            "--memfd",
            "0",
            "--e820",
            "0x0-0x4000000",
            "--setup-data",
            "0x1000",
            "--strategy",
            "skip",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("memfd"), "{err}");
}
