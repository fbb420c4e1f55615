use std::collections::BTreeSet;

use super::*;

#[test]
fn a_tiny_matrix_has_one_cell_per_combination_and_every_key() {
    let mut cfg = BenchConfig::tiny();
    cfg.sweep = vec![1 << 8, 1 << 10];
    cfg.sweep_strategies = vec![
        SweepStrategy {
            scheme: SchemeKind::Kho,
            strategy: Strategy::Bulk,
        },
        SweepStrategy {
            scheme: SchemeKind::Maple,
            strategy: Strategy::Coalesced,
        },
    ];
    let mut steps = 0u64;
    let r = run(&cfg, &mut |_, w| steps += w).unwrap();
    assert!(steps <= cfg.steps());
    assert!(steps > 0);
    let mut want = BTreeSet::new();
    for w in &cfg.workloads {
        for &k in &cfg.schemes {
            for s in harness::strategies(k) {
                want.insert((w.name.clone(), k.name().to_owned(), s.as_str().to_owned()));
            }
        }
    }
    let got: Vec<_> = r
        .cells
        .iter()
        .map(|c| (c.workload.clone(), c.scheme.clone(), c.strategy.clone()))
        .collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
    for c in &r.cells {
        assert_eq!(c.lost_bytes, 0, "{c:?}");
        assert!(c.blocks > 0 && c.metadata_bytes > 0, "{c:?}");
    }

    let v: serde_json::Value = serde_json::from_str(&report::json(&r).unwrap()).unwrap();
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), r.cells.len());
    for c in cells {
        for k in [
            "workload",
            "scheme",
            "tracker",
            "strategy",
            "blocks",
            "preserve_ns_per_block",
            "prepare_ms",
            "metadata_bytes",
            "walk_ms",
            "memblock_ms",
            "mm_init_ms",
            "baseline_mm_init_ms",
            "reserved_regions",
        ] {
            assert!(c.get(k).is_some(), "cell without {k}: {c}");
        }
    }
    // The pairs the issue names are all there.
    for (tracker, strategy) in [
        ("maple", "bulk"),
        ("xarray", "coalesced"),
        ("xarray", "bulk"),
        ("radix-mainline", "mainline-fix"),
        ("kho", "mainline-fix"),
    ] {
        assert!(
            cells
                .iter()
                .any(|c| c["tracker"] == tracker && c["strategy"] == strategy),
            "no cell {tracker}/{strategy}"
        );
    }
    for c in cells.iter().filter(|c| c["tracker"] == "kho") {
        // Every peer cell: xarray and xarray-512 3 each, mainline 4, maple 2.
        assert_eq!(c["restore_vs_peer"].as_object().unwrap().len(), 12, "{c}");
        assert_eq!(c["metadata_vs_peer"].as_object().unwrap().len(), 4, "{c}");
        assert_eq!(c["metadata_vs_peer"]["radix-mainline"], 1.0, "{c}");
    }
    // A tracker's own costs are one figure for all its strategies.
    for k in SchemeKind::ALL {
        let md: BTreeSet<u64> = r
            .cells
            .iter()
            .filter(|c| c.tracker == k.name() && c.workload == r.cells[0].workload)
            .map(|c| c.metadata_bytes)
            .collect();
        assert_eq!(md.len(), 1, "{k}");
    }
    let w = &r.cells[0].workload;
    let pivot = report::pivot_table(&r, w, report::PivotValue::Memblock).to_string();
    for k in SchemeKind::ALL {
        assert!(pivot.contains(k.name()), "{pivot}");
    }
    for s in Strategy::NAMES {
        assert!(pivot.contains(s), "{pivot}");
    }
    let scaling = v["scaling"].as_array().unwrap();
    assert_eq!(scaling.len(), 2);
    for s in scaling {
        for k in [
            "scheme",
            "tracker",
            "strategy",
            "exponent",
            "points",
            "extrapolated",
        ] {
            assert!(s.get(k).is_some(), "scaling entry without {k}: {s}");
        }
        assert_eq!(s["points"].as_array().unwrap().len(), 2);
    }

    let dir = std::env::temp_dir().join(format!("kho-bench-test-{}", std::process::id()));
    report::write_html(&r, &dir).unwrap();
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(html.contains("<svg"));
    assert!(html.contains("Tracker x strategy"));
    assert!(!html.contains("http://") && !html.contains("https://"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn axis_numbers_are_rounded_with_units() {
    use super::report::axis_number;
    let cases = [
        (0.1 + 0.2, "0.3"),
        (1_000_000.0, "1M"),
        (100_000.0, "100k"),
        (10_000.0, "10k"),
        (1024.0, "1.02k"),
        (0.001, "0.001"),
        (0.0, "0"),
        (5.0, "5"),
        (12.5, "12.5"),
        (3e9, "3G"),
    ];
    for (v, want) in cases {
        assert_eq!(axis_number(v), want, "{v}");
    }
}
