//! `kho bench` through the built binary: the tiny matrix with a trace, the
//! JSON shape, the HTML report, a capped strategy.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn bench_tiny_writes_table_json_and_html() {
    let dir = std::env::temp_dir().join(format!("kho-test-{}-bench", std::process::id()));
    let json = dir.join("bench.json");
    let html = dir.join("html");
    std::fs::create_dir_all(&dir).unwrap();
    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../traces/bash.txt");
    let out = Command::new(env!("CARGO_BIN_EXE_kho"))
        .args(["bench", "--tiny", "--cap-seconds", "0.000001", "--trace"])
        .arg(&trace)
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .expect("running kho bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("over cap"), "{stdout}");
    assert!(stdout.contains("cap hit"), "{stdout}");
    assert!(stdout.contains("targets"), "{stdout}");

    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let cells = v["cells"].as_array().unwrap();
    // 3 workloads (dense, fragmented, the trace) x every tracker under
    // every strategy it feeds: xarray and xarray-512 3 each, radix-mainline
    // 4, maple 2, ours 7.
    assert_eq!(cells.len(), 3 * (3 + 3 + 4 + 2 + 7));
    for c in cells {
        assert_eq!(c["tracker"], c["scheme"], "{c}");
        assert!(c["strategy"].is_string(), "{c}");
    }
    assert!(cells.iter().any(|c| c["workload"] == "trace:bash.txt@64M"));
    // Every target the bench checks, structured: {name, value, target, met,
    // text}; met is a bool for a checked target, null for a listed figure.
    let targets = v["targets"].as_array().unwrap();
    assert!(!targets.is_empty());
    for t in targets {
        assert!(t["name"].is_string() && t["text"].is_string(), "{t}");
        assert!(t["met"].is_boolean() || t["met"].is_null(), "{t}");
        assert_eq!(t["met"].is_null(), t["target"].is_null(), "{t}");
    }
    assert!(targets.iter().any(|t| t["met"].is_boolean()));
    let scaling = v["scaling"].as_array().unwrap();
    assert!(!scaling.is_empty());
    for s in scaling {
        assert!(s["capped_after"].as_u64().is_some(), "{s}");
    }
    let page = std::fs::read_to_string(html.join("index.html")).unwrap();
    assert!(page.contains("<svg"));
    assert!(!page.contains("http://") && !page.contains("https://"));
    std::fs::remove_dir_all(&dir).unwrap();
}
