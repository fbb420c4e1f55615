//! `kho run --on-corruption salvage --corrupt CLASS` across the two real
//! processes: the old kernel flips a byte of its handover, the new kernel
//! salvages what validates and reports the damage by address.

use serde_json::Value;

mod common;
use common::{kho, run_rows, u};

fn row(extra: &[&str]) -> Value {
    let mut args = vec!["--machine-size", "256M", "--strategy", "bulk"];
    args.extend_from_slice(extra);
    let rows = run_rows(&args);
    assert_eq!(rows.len(), 1);
    rows[0].clone()
}

#[test]
fn salvage_keeps_the_blocks_outside_a_damaged_leaf() {
    for class in ["child-pointer", "leaf-word"] {
        let r = row(&["--on-corruption", "salvage", "--corrupt", class]);
        assert_eq!(r["on_corruption"], "salvage", "{class}");
        assert!(r.get("kho_error").is_none(), "{class}: KHO in use: {r}");
        let damage = r["damage"].as_array().unwrap();
        assert_eq!(damage.len(), 1, "{class}: {r}");
        let d = &damage[0];
        assert_eq!(u(d, "level"), 0, "{class}: a leaf");
        assert_eq!(u(d, "order"), 0, "{class}");
        // An order-0 leaf spans 128 MiB.
        assert_eq!(u(d, "end") - u(d, "start"), 128 << 20, "{class}");
        assert!(u(&r, "blocks") > 0, "{class}: blocks kept");
        assert!(u(&r, "damage_reserved_bytes") > 0, "{class}");
        assert!(u(&r, "verified_bytes") > 0, "{class}");
    }
}

#[test]
fn salvage_of_a_damaged_fdt_or_chunk_list_reserves_all_ram() {
    for extra in [
        &["--corrupt", "fdt-property"][..],
        &["--scheme", "xarray", "--corrupt", "chunk-header"][..],
    ] {
        let mut args = vec!["--on-corruption", "salvage"];
        args.extend_from_slice(extra);
        let r = row(&args);
        assert!(r["kho_error"].is_string(), "{extra:?}: KHO off: {r}");
        let damage = r["damage"].as_array().unwrap();
        assert_eq!(damage.len(), 1, "{extra:?}");
        assert_eq!(u(&damage[0], "level"), 5, "{extra:?}");
        assert_eq!(u(&r, "verified_bytes"), 0, "{extra:?}");
        // All RAM but scratch and the kernel image.
        assert!(u(&r, "damage_reserved_bytes") > 128 << 20, "{extra:?}: {r}");
    }
}

#[test]
fn reject_is_the_default_and_lists_no_damage() {
    let r = row(&["--corrupt", "child-pointer"]);
    assert!(r.get("on_corruption").is_none());
    assert!(r.get("damage").is_none());
    assert!(
        r["kho_error"].as_str().unwrap().contains("unaligned"),
        "{r}"
    );
}

#[test]
fn the_table_lists_the_damage_and_bad_names_are_usage_errors() {
    let out = kho()
        .args(["run", "--machine-size", "256M", "--strategy", "bulk"])
        .args(["--on-corruption", "salvage", "--corrupt", "leaf-word"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bulk: salvage kept"), "{text}");
    assert!(text.contains("(level 0, order 0): reserved"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("old kernel: corrupted leaf-word: byte at"),
        "{err}"
    );
    for bad in [
        &["--on-corruption", "ignore"][..],
        &["--corrupt", "bit-rot"][..],
        &["--updates", "3", "--on-corruption", "salvage"][..],
    ] {
        let out = kho().arg("run").args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    // chunk-header without a kho-v1 handover: one error line, exit 1.
    let out = kho()
        .args([
            "run",
            "--machine-size",
            "64M",
            "--strategy",
            "bulk",
            "--corrupt",
            "chunk-header",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chunk-header needs --scheme xarray"), "{err}");
}
