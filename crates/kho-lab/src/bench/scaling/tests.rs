use super::*;

#[test]
fn fit_recovers_exponents() {
    let lin: Vec<Point> = (10..16)
        .map(|k| Point {
            blocks: 1 << k,
            ms: (1u64 << k) as f64,
            metadata_bytes: 0,
        })
        .collect();
    assert!((exponent(&lin) - 1.0).abs() < 1e-9);
    let sq: Vec<Point> = (10..16)
        .map(|k| Point {
            blocks: 1 << k,
            ms: ((1u64 << k) as f64).powi(2),
            metadata_bytes: 0,
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
        &mut |_| {},
    )
    .unwrap();
    for s in &r {
        assert_eq!(s.capped_after, Some(1 << 6), "{s:?}");
        assert_eq!(s.points.len(), 1);
    }
}

#[test]
fn every_strategy_restores() {
    let r = measure_point(1 << 8, &SweepStrategy::all()).unwrap();
    assert_eq!(r.len(), SweepStrategy::all().len());
}
