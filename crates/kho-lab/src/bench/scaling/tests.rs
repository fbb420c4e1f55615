use super::*;

#[test]
fn fit_recovers_exponents() {
    let lin: Vec<Point> = (10..16)
        .map(|k| Point {
            blocks: 1 << k,
            ms: (1u64 << k) as f64,
            metadata_bytes: 0,
            preserve_ms: 0.0,
            finalize_ms: 0.0,
        })
        .collect();
    assert!((exponent(&lin) - 1.0).abs() < 1e-9);
    let sq: Vec<Point> = (10..16)
        .map(|k| Point {
            blocks: 1 << k,
            ms: ((1u64 << k) as f64).powi(2),
            metadata_bytes: 0,
            preserve_ms: 0.0,
            finalize_ms: 0.0,
        })
        .collect();
    assert!((exponent(&sq) - 2.0).abs() < 1e-9);
    assert!(exponent(&sq[..1]).is_nan());
}

#[test]
fn a_tiny_cap_stops_a_strategy() {
    let strategies = [
        SweepStrategy {
            scheme: SchemeKind::Kho,
            strategy: Strategy::PerBlock,
        },
        SweepStrategy {
            scheme: SchemeKind::Kho,
            strategy: Strategy::Skip,
        },
    ];
    let r = sweep(
        &[1 << 6, 1 << 8, 1 << 10],
        &strategies,
        Duration::ZERO,
        None,
        &mut |_, _| {},
    )
    .unwrap();
    for s in &r {
        assert_eq!(s.capped_after, Some(1 << 6), "{s:?}");
        assert_eq!(
            s.stop,
            Some(Stop {
                after: 1 << 6,
                predicted_ms: None
            })
        );
        assert_eq!(s.points.len(), 1);
    }
}

#[test]
fn the_reference_runs_to_its_limit_whatever_the_cap() {
    let curves = [
        SweepStrategy {
            scheme: SchemeKind::RadixMainline,
            strategy: Strategy::PerBlock,
        },
        SweepStrategy {
            scheme: SchemeKind::Kho,
            strategy: Strategy::Bulk,
        },
    ];
    let r = sweep(
        &[1 << 6, 1 << 7, 1 << 8, 1 << 9],
        &curves,
        Duration::ZERO,
        Some(Reference::mainline(8)),
        &mut |_, _| {},
    )
    .unwrap();
    assert!(r[0].reference && !r[1].reference);
    // Mainline: 2^6..2^8 measured, then stopped (over the cap at its limit).
    assert_eq!(r[0].points.len(), 3, "{:?}", r[0]);
    assert_eq!(r[0].capped_after, Some(1 << 8));
    assert_eq!(r[1].points.len(), 1);
    // Nothing measured at 2^20: extrapolated, and said so.
    assert!(r[0].extrapolated && r[0].ms_at_2_20.is_some());
}

#[test]
fn a_predicted_point_over_the_cap_is_not_run() {
    let pts: Vec<Point> = [(1u64 << 10, 1.0), (1 << 11, 4.0)]
        .into_iter()
        .map(|(blocks, ms)| Point {
            blocks,
            ms,
            metadata_bytes: 0,
            preserve_ms: 0.0,
            finalize_ms: 0.0,
        })
        .collect();
    let p = predict(&pts, 1 << 12).unwrap();
    assert!((p - 16.0).abs() < 1e-6, "{p}");
    assert_eq!(predict(&pts[..1], 1 << 12), None);
}

#[test]
fn every_strategy_restores() {
    let all = SweepStrategy::all();
    // Every pair of the matrix: 3 + 3 + 4 + 2 + 7.
    assert_eq!(all.len(), 19);
    let r = measure_point(1 << 8, &all).unwrap();
    assert_eq!(r.len(), all.len());
    for (s, m) in all.iter().zip(&r) {
        assert!(m.metadata_bytes > 0, "{}", s.label());
        // A tracker's own costs are the same for each of its strategies.
        let first = all.iter().position(|x| x.scheme == s.scheme).unwrap();
        assert_eq!(r[first].metadata_bytes, m.metadata_bytes);
        assert_eq!(r[first].preserve, m.preserve);
    }
}
