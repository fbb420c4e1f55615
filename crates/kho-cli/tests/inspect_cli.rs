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

/// Acceptance: `kho run --dump-core` of the default scenario (kho-v4)
/// inspects to exactly the LUO sessions, files and folios the new kernel
/// retrieved; nothing orphaned, no error.
#[test]
fn a_kho_v4_dump_inspects_to_the_luo_files_the_new_kernel_verified() {
    let core = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-luo.core");
    let core_s = core.to_str().unwrap();
    let fdt_s = format!("{core_s}.fdt");
    let out = kho(&[
        "run",
        "--json",
        "--machine-size",
        "64M",
        "--strategy",
        "per-block",
        "--dump-core",
        core_s,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &run["rows"][0];
    assert_eq!(row["lost_bytes"].as_u64(), Some(0));
    let verified = row["luo_files"].as_array().unwrap().clone();
    assert_eq!(verified.len(), 3, "memfd, kvm, guest_memfd: {row}");

    let out = kho(&["inspect", "--fdt", &fdt_s, "--mem", core_s, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fdt"]["compatible"], "kho-v4");
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(0));
    assert_eq!(v["orphans"]["blocks"].as_u64(), Some(0), "{}", v["orphans"]);
    assert_eq!(v["luo"]["compatible"], "luo-v5");
    let mut files = Vec::new();
    for s in v["luo"]["sessions"].as_array().unwrap() {
        for f in s["files"].as_array().unwrap() {
            files.push((s["name"].clone(), f.clone()));
        }
    }
    assert_eq!(files.len(), verified.len());
    for ((session, f), r) in files.iter().zip(&verified) {
        assert_eq!(session, &r["session"]);
        assert_eq!(f["token"], r["token"]);
        assert_eq!(f["compatible"], r["compatible"]);
        assert_eq!(f["folios"], r["folios"], "{f} {r}");
        assert_eq!(f["bytes"], r["bytes_verified"], "{f} {r}");
        assert_eq!(r["bytes_lost"].as_u64(), Some(0));
    }

    // The text tree names every session and file.
    let out = kho(&["inspect", "--fdt", &fdt_s, "--mem", core_s]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for r in &verified {
        assert!(
            text.contains(&format!("session `{}`", r["session"].as_str().unwrap())),
            "{text}"
        );
        assert!(
            text.contains(&format!("`{}`", r["compatible"].as_str().unwrap())),
            "{text}"
        );
    }
    assert!(text.contains("orphans        0 blocks"), "{text}");
}
