//! `kho run --dump-core` then `kho inspect`, through the built binary.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn kho(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kho"))
        .args(args)
        .output()
        .expect("running kho")
}

#[test]
fn dump_core_then_inspect() {
    let core = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli.core");
    let core_s = core.to_str().unwrap();
    let fdt_s = format!("{core_s}.fdt");
    let out = kho(&[
        "run",
        "--json",
        "--machine-size",
        "64M",
        "--strategy",
        "bulk",
        "--dump-core",
        core_s,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    // "old kernel: dumped ... root FDT (N bytes at 0x...) to ..."
    let stderr = String::from_utf8_lossy(&out.stderr);
    let fdt_phys = stderr
        .split("bytes at ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("the dump's summary on stderr")
        .to_owned();
    let blocks = run["rows"][0]["blocks"].as_u64().unwrap();

    let out = kho(&["inspect", "--fdt", &fdt_s, "--mem", core_s, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format"], "kho-v3");
    assert_eq!(
        v["blocks"].as_u64(),
        Some(blocks),
        "the new kernel walked as many"
    );
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(0));

    // --blocks: the plain trace format, one `pfn order` line per block.
    let out = kho(&["inspect", "--fdt", &fdt_s, "--mem", core_s, "--blocks"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len() as u64, blocks);
    for l in &lines {
        let (pfn, order) = l.split_once(' ').unwrap();
        assert!(u64::from_str_radix(pfn.trim_start_matches("0x"), 16).is_ok());
        assert!(order.parse::<u8>().unwrap() < 52);
    }

    // The FDT read from the image instead: the same answer.
    let out = kho(&[
        "inspect",
        "--fdt-phys",
        &fdt_phys,
        "--mem",
        core_s,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(w, v);
    let out = kho(&["inspect", "--fdt", &fdt_s, "--mem", core_s, "--ranges"]);
    assert!(out.status.success());
    let ranges = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        ranges.lines().filter(|l| !l.starts_with('#')).count() as u64,
        v["ranges_count"].as_u64().unwrap()
    );

    // A raw reading of an ELF file is garbage: errors, exit status 1.
    let out = kho(&[
        "inspect", "--fdt", &fdt_s, "--mem", core_s, "--base", "0x100000",
    ]);
    assert_eq!(out.status.code(), Some(1));
    // Not an ELF without --base: a clear error.
    let out = kho(&["inspect", "--fdt", &fdt_s, "--mem", &fdt_s]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--base"));
}
