//! `kho run`'s table fits the terminal: `COLUMNS` bounds every line, and
//! `--wide` shows every column; bench tables stack their columns.

mod common;
use common::kho;

fn table(columns: &str, extra: &[&str]) -> String {
    let out = kho()
        .args(["run", "--machine-size", "128M", "--strategy", "bulk"])
        .args(extra)
        .env("COLUMNS", columns)
        .output()
        .expect("running kho");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 table")
}

fn widest(s: &str) -> usize {
    s.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

#[test]
fn the_run_table_fits_80_and_120_columns() {
    for (columns, limit) in [("80", 80), ("120", 120)] {
        let t = table(columns, &[]);
        assert!(widest(&t) <= limit, "wider than {limit}:\n{t}");
        assert!(t.contains("next-boot"), "{t}");
        assert!(t.contains("bulk"), "{t}");
    }
}

#[test]
fn wide_shows_every_column() {
    let t = table("80", &["--wide"]);
    for h in ["walk ms", "baseline ms", "reserved regions", "verified"] {
        assert!(t.contains(h), "{h} missing:\n{t}");
    }
    assert!(widest(&t) > 80, "{t}");
}

#[test]
fn the_bench_tables_fit_80_columns_stacked() {
    let out = kho()
        .args(["bench", "--tiny", "--cap-seconds", "0.000001"])
        .env("COLUMNS", "80")
        .output()
        .expect("running kho bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(widest(&t) <= 80, "wider than 80:\n{t}");
    // Stacked, not dropped: every column's header is still there.
    for h in [
        "pres ns/blk",
        "md bytes",
        "mainline-fix-ab",
        "skip",
        "restore best/peer",
        "preserve ns/blk",
    ] {
        assert!(t.contains(h), "{h} missing:\n{t}");
    }
}

#[test]
fn the_chain_tables_fit_80_columns() {
    let t = table("80", &["--updates", "3"]);
    assert!(widest(&t) <= 80, "wider than 80:\n{t}");
    for h in [
        "LU#",
        "metadata pg",
        "scratch",
        "baseline ms",
        "lost 0 B in all",
    ] {
        assert!(t.contains(h), "{h} missing:\n{t}");
    }
}
