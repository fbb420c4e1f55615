//! One test per class of user error: the message names the flag or the
//! file, is one plain line (no backtrace whatever `RUST_BACKTRACE` says),
//! and the exit code is 2 for usage errors, 1 for runtime failures.

mod common;
use common::kho;

/// Runs kho with `args` under `RUST_BACKTRACE=1`: (exit code, stderr).
fn fails(args: &[&str]) -> (i32, String) {
    let out = kho()
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("running kho");
    assert!(!out.status.success(), "kho {args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains("backtrace"),
        "a backtrace for {args:?}:\n{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    (out.status.code().expect("an exit code"), err)
}

#[test]
fn a_machine_size_below_the_minimum_is_a_usage_error() {
    let (code, err) = fails(&["run", "--machine-size", "3M"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--machine-size"), "{err}");
    assert!(err.contains("3.0 MiB"), "human units: {err}");
}

#[test]
fn a_machine_too_small_to_boot_names_the_computed_minimum() {
    let (code, err) = fails(&["run", "--machine-size", "20M", "--strategy", "bulk"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--machine-size 20.0 MiB: too small"), "{err}");
    // The named minimum really boots.
    let min = err
        .split("at least ")
        .nth(1)
        .and_then(|m| m.trim().strip_suffix(" MiB"))
        .expect("a minimum in MiB");
    let min = format!("{}M", min.trim_end_matches(".0"));
    let out = kho()
        .args([
            "run",
            "--json",
            "--strategy",
            "bulk",
            "--machine-size",
            &min,
        ])
        .output()
        .expect("running kho");
    assert!(
        out.status.success(),
        "{min}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_absent_trace_names_the_file() {
    let (code, err) = fails(&["run", "--machine-size", "128M", "--trace", "/nonexistent/t"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--trace /nonexistent/t"), "{err}");
}

#[test]
fn an_oversize_trace_is_refused_from_its_size() {
    let dir = std::env::temp_dir().join(format!("kho-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.trace");
    // 32 MiB of garbage: too large for a 128M machine, and never parsed
    // (parsing would report the bad syntax instead).
    std::fs::write(&path, vec![b'x'; 32 << 20]).unwrap();
    let p = path.to_str().unwrap();
    let (code, err) = fails(&["run", "--machine-size", "128M", "--trace", p]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--trace") && err.contains(p), "{err}");
    assert!(
        err.contains("32.0 MiB") && err.contains("128.0 MiB"),
        "{err}"
    );
}

#[test]
fn an_unwritable_output_fails_before_the_run() {
    // --json FILE is created before any work, in every subcommand: a usage
    // error (exit 2) naming the flag and the path.
    for args in [
        &["bench", "--tiny", "--json", "/nonexistent/x.json"][..],
        &[
            "run",
            "--machine-size",
            "64M",
            "--json",
            "/nonexistent/x.json",
        ][..],
        &["memblock-fidelity", "--json", "/nonexistent/x.json"][..],
    ] {
        let (code, err) = fails(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("--json /nonexistent/x.json"),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn out_of_range_flags_are_rejected_not_adjusted() {
    for (args, flag) in [
        (&["bench", "--reps", "0"][..], "--reps"),
        (&["bench", "--max-pow", "9"][..], "--max-pow"),
        (&["bench", "--max-pow", "64"][..], "--max-pow"),
    ] {
        let (code, err) = fails(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

#[test]
fn capturing_an_absent_process_says_so() {
    let (code, err) = fails(&["capture", "--pid", "999999", "-o", "/tmp/kho-never-written"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no process 999999"), "{err}");
}
