//! Chained live updates through the built `kho` binary: `kho run
//! --updates N`, every generation a real exec of the next kernel.

use serde_json::Value;

mod common;
use common::{kho, run_rows, u};

fn chain(row: &Value) -> &Value {
    &row["chain"]
}

/// The rows of one strategy's chain, checked generation by generation:
/// nothing lost, every byte verified, the generation and LUO counts one
/// more each time, scratch and metadata (tree + FDT + LUO pages) as in the
/// first generation, and each generation carrying four more folios.
fn check_chain(rows: &[Value], n: u64, luo: bool) {
    assert_eq!(rows.len() as u64, n);
    let first = chain(&rows[0]);
    let metadata = |c: &Value| u(c, "tree_pages") + u(c, "fdt_pages") + u(c, "luo_pages");
    for (i, r) in rows.iter().enumerate() {
        let g = i as u64 + 1;
        let c = chain(r);
        assert_eq!(u(c, "generation"), g, "{r}");
        assert_eq!(u(c, "updates"), n);
        assert_eq!(u(r, "lost_bytes"), 0, "generation {g}: {r}");
        assert_eq!(u(r, "verified_bytes"), u(r, "preserved_bytes"), "{r}");
        assert!(r.get("kho_error").is_none(), "{r}");
        if luo {
            assert_eq!(u(c, "liveupdate_num"), g, "{r}");
            assert!(u(c, "luo_pages") > 0);
        } else {
            assert!(c.get("liveupdate_num").is_none(), "{r}");
            assert_eq!(u(c, "luo_pages"), 0);
        }
        assert_eq!(
            c["scratch"], first["scratch"],
            "generation {g}: scratch moved"
        );
        assert_eq!(c["scratch"].as_array().unwrap().len(), 3);
        assert_eq!(u(c, "fdt_pages"), 1);
        assert_eq!(
            metadata(c),
            metadata(first),
            "generation {g}: metadata grew"
        );
        if g < n {
            assert_eq!(u(c, "new_folios"), 4, "{r}");
            assert!(u(c, "carried_folios") > 0, "{r}");
        } else {
            assert_eq!(u(c, "new_folios"), 0, "the last generation execs nothing");
        }
        if i > 0 {
            let prev = &rows[i - 1];
            assert_eq!(u(r, "blocks"), u(prev, "blocks") + 4, "{r}");
            // orders 0, 2, 3, 4: 29 pages more.
            assert_eq!(
                u(r, "preserved_bytes"),
                u(prev, "preserved_bytes") + 29 * 4096,
                "{r}"
            );
            // What the last generation preserved is what this one walked:
            // its folios, the LUO pages, the FDT page and the manifest's
            // pages (split into at most as many blocks as pages).
            let before = chain(prev);
            let fixed = u(before, "carried_folios")
                + u(before, "new_folios")
                + u(c, "luo_pages")
                + u(c, "fdt_pages");
            assert!(fixed < u(r, "blocks"), "{r}");
            assert!(u(r, "blocks") <= fixed + u(c, "manifest_pages"), "{r}");
        }
    }
}

#[test]
fn twenty_chained_updates_lose_nothing_and_stay_flat() {
    let rows = run_rows(&[
        "--machine-size",
        "64M",
        "--strategy",
        "bulk",
        "--updates",
        "20",
    ]);
    check_chain(&rows, 20, true);
}

#[test]
fn a_kho_v3_chain_per_block_with_lazy_struct_pages() {
    let rows = run_rows(&[
        "--machine-size",
        "64M",
        "--strategy",
        "per-block",
        "--memmap",
        "lazy",
        "--abi",
        "kho-v3",
        "--updates",
        "4",
    ]);
    check_chain(&rows, 4, false);
    assert!(rows.iter().all(|r| r["strategy"] == "per-block"));
    assert!(rows.iter().all(|r| r["memmap"] == "lazy"));
}

#[test]
fn the_chain_table_says_flat() {
    let out = kho()
        .args([
            "run",
            "--machine-size",
            "64M",
            "--strategy",
            "coalesced",
            "--updates",
            "3",
        ])
        .output()
        .expect("running kho");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("3 chained live updates on a 64.0 MiB machine, coalesced"),
        "{text}"
    );
    assert!(
        text.contains("lost 0 B in all; metadata pages")
            && text.contains("scratch the same in every generation"),
        "{text}"
    );
}

#[test]
fn a_chain_with_a_peer_scheme_is_a_usage_error() {
    let out = kho()
        .args([
            "run",
            "--machine-size",
            "64M",
            "--updates",
            "2",
            "--scheme",
            "xarray",
        ])
        .output()
        .expect("running kho");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(
        err.contains("--updates 2: a chained run needs our tracker"),
        "{err}"
    );
    let out = kho()
        .args(["run", "--updates", "0"])
        .output()
        .expect("running kho");
    assert_eq!(out.status.code(), Some(2));
}
