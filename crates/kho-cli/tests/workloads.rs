//! Workloads, captures and traces, through the built `kho` binary.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kho_lab::trace::Trace;
use serde_json::Value;

mod common;
use common::{kho, run_rows, u};

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kho-test-{}-{name}", std::process::id()))
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../traces")
        .join(name)
}

/// `kho run --json` with `args`; the rows.
fn run(args: &[&str]) -> Vec<Value> {
    run_rows(args)
}

fn assert_nothing_lost(rows: &[Value]) {
    assert!(!rows.is_empty());
    for r in rows {
        assert_eq!(u(r, "lost_bytes"), 0, "{r}");
        assert_eq!(u(r, "verified_bytes"), u(r, "preserved_bytes"), "{r}");
        assert!(r.get("kho_error").is_none(), "{r}");
    }
}

/// A child that touched a known number of pages, captured as root: the
/// trace holds exactly those pages when restricted to the child's buffer,
/// and at least those pages when the whole process is captured.
#[test]
fn capture_of_a_child_holds_the_pages_it_touched() {
    const PAGES: u64 = 300;
    let mut child = kho()
        .args(["__touch-pages", &PAGES.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the child");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.first(), Some(&"ready"), "{line:?}");
    let (start, end) = (f[1].trim_start_matches("0x"), f[2].trim_start_matches("0x"));
    let pid = child.id().to_string();

    let exact = tmp("child-window.trace");
    let whole = tmp("child-whole.txt");
    let a = kho()
        .args([
            "capture",
            "--pid",
            &pid,
            "--vaddr",
            &format!("{start}-{end}"),
        ])
        .arg("-o")
        .arg(&exact)
        .output()
        .unwrap();
    let b = kho()
        .args(["capture", "--text", "--pid", &pid, "-o"])
        .arg(&whole)
        .output()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    child.wait().unwrap();
    for o in [&a, &b] {
        let err = String::from_utf8_lossy(&o.stderr);
        if err.contains("run as root") {
            eprintln!("not root: {err}");
            return;
        }
        assert!(o.status.success(), "{err}");
    }
    let window = Trace::read(&exact).unwrap().stats();
    assert_eq!(window.pages, PAGES, "{window:?}");
    let all = Trace::read(&whole).unwrap().stats();
    assert!(all.pages >= PAGES, "{all:?}");
    std::fs::remove_file(exact).ok();
    std::fs::remove_file(whole).ok();
}

/// The traces shipped in `traces/` read, and hold what their capture said.
#[test]
fn shipped_traces_read() {
    let total: u64 = ["python-100m.trace", "rustc-kho-machine.trace", "bash.txt"]
        .iter()
        .map(|n| std::fs::metadata(shipped(n)).unwrap().len())
        .sum();
    assert!(total < 2 << 20, "{total} bytes");
    // A python process that wrote 100 MB (64 MB THP-advised, 36 MB plain).
    let py = Trace::read(&shipped("python-100m.trace")).unwrap().stats();
    assert!(py.pages >= (100 << 20) / 4096, "{py:?}");
    // rustc compiling kho-machine: large folios of the page cache too.
    let rustc = Trace::read(&shipped("rustc-kho-machine.trace"))
        .unwrap()
        .stats();
    assert!(rustc.blocks > 50_000, "{rustc:?}");
    assert!(rustc.orders.keys().any(|&o| o > 0), "{rustc:?}");
    assert!(rustc.ranges < rustc.blocks);
    // An interactive shell, in the text format.
    let bash = Trace::read(&shipped("bash.txt")).unwrap().stats();
    assert!(bash.blocks > 100 && bash.ranges < bash.blocks, "{bash:?}");
}

/// A captured trace replayed by the old kernel (remapped into a small
/// machine): every byte verifies under every strategy.
#[test]
fn run_replays_a_shipped_trace() {
    let path = shipped("bash.txt");
    let trace = Trace::read(&path).unwrap();
    let rows = run(&["--machine-size", "64M", "--trace", path.to_str().unwrap()]);
    assert_eq!(rows.len(), 7);
    assert_nothing_lost(&rows);
    let n = trace.blocks().len() as u64;
    let bytes: u64 = trace.blocks().iter().map(|b| b.size()).sum();
    for r in &rows {
        // The trace's blocks, plus the manifest pages and the FDT page.
        assert!(u(r, "blocks") > n && u(r, "blocks") < n + 64, "{r}");
        assert!(u(r, "preserved_bytes") > bytes, "{r}");
    }
}

#[test]
fn run_replays_the_python_trace() {
    let path = shipped("python-100m.trace");
    let rows = run(&[
        "--machine-size",
        "256M",
        "--strategy",
        "skip",
        "--trace",
        path.to_str().unwrap(),
    ]);
    assert_nothing_lost(&rows);
}

#[test]
fn every_workload_preset_verifies() {
    for w in ["vm", "memfd", "dense", "fragmented", "mixed", "default"] {
        let rows = run(&[
            "--machine-size",
            "128M",
            "--strategy",
            "bulk",
            "--workload",
            w,
        ]);
        assert_nothing_lost(&rows);
        let blocks = u(&rows[0], "blocks");
        if w == "fragmented" {
            // 128M / 16 / 2 pages, none adjacent.
            assert!(blocks >= 1024, "{w}: {blocks}");
            assert!(u(&rows[0], "memblock_reserved_regions") >= 1024);
        }
    }
}

#[test]
fn a_bad_trace_is_refused_naming_the_line() {
    let path = tmp("bad.txt");
    std::fs::write(&path, "# bad\n0x200 9\n0x201 1\n").unwrap();
    let out = kho()
        .args(["run", "--machine-size", "64M", "--trace"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3: pfn 0x201 is misaligned for order 1"),
        "{err}"
    );
    std::fs::remove_file(path).ok();
}

#[test]
fn a_trace_too_large_for_the_machine_is_refused() {
    let out = kho()
        .args([
            "run",
            "--machine-size",
            "64M",
            "--strategy",
            "bulk",
            "--trace",
        ])
        .arg(shipped("python-100m.trace"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not fit the machine"), "{err}");
}

/// Without CAP_SYS_ADMIN the kernel hides PFNs: the capture says so. As
/// root, `setpriv` drops to `nobody`, whose own pagemap reads as zeros.
#[test]
fn capture_without_root_names_the_cause() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["sh", "-c", r#"exec "$0" capture --pid $$ -o /dev/null"#])
        .arg(env!("CARGO_BIN_EXE_kho"))
        .output();
    let Ok(out) = out else {
        eprintln!("no setpriv: skipped");
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("setpriv:") {
        eprintln!("cannot drop privileges: {err}");
        return;
    }
    assert!(!out.status.success());
    assert!(
        err.contains("pagemap PFNs are zero: run as root (CAP_SYS_ADMIN)"),
        "{err}"
    );
}
