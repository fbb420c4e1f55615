//! The scaling sweep: restore (walk + memblock) of `n` scattered order-0
//! blocks (every other page from 4 GiB up: as many ranges as blocks, the
//! worst case for memblock) per scheme and strategy, for `n` = 2^k.
//!
//! What is measured, per point (the median of five runs up to 2^14
//! blocks, one run above):
//! - the tracker is built once per `n` (preserve through the scheme into a
//!   [`VecArena`]) and finalized; then, into a fresh Linux-faithful
//!   [`Memblock`] holding the machine's RAM (resizable arrays):
//! - every strategy is the machine's own accounting,
//!   [`kho_machine::reserve_preserved`], into that memblock (a bare
//!   memblock is a [`kho_machine::ReservationSink`]); the peers through
//!   [`SchemeKind::restore`], ours per strategy over our tree (`per-block`
//!   reads it the way mainline does: the `radix-mainline` reader, same
//!   format);
//! - the time of a point is the accounting's own: walk + heads + memblock.
//!
//! Head pages are not written here (no memmap): every strategy writes the
//! same heads, so they do not change the comparison.
//!
//! A strategy stops after the first point whose time exceeds the cap; the
//! growth exponent is the least-squares slope of ln(ms) against ln(n).

use std::time::Duration;

use kho::{Block, PAGE_SIZE, PhysAddr, PhysRange, RamMap, VecArena};
use kho_machine::{Memblock, RadixMap, Strategy, reserve_preserved};
use serde::Serialize;

use super::BenchError;
use crate::peers::{SchemeError, SchemeKind};

const ARENA_BASE: u64 = 1 << 20;
const BLOCKS_AT: u64 = 4 << 30;
/// Points up to this many blocks are measured five times (median).
const SMALL_POINT: u64 = 1 << 14;

/// One strategy of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepStrategy {
    /// The scheme.
    pub scheme: SchemeKind,
    /// Its restore strategy (a peer's: the one its report names,
    /// [`SchemeKind::strategy`]).
    pub strategy: Strategy,
}

impl SweepStrategy {
    /// Every swept strategy: ours four, each peer its own.
    pub fn all() -> Vec<Self> {
        let mut v: Vec<Self> = Strategy::ALL
            .into_iter()
            .map(|strategy| Self {
                scheme: SchemeKind::Kho,
                strategy,
            })
            .collect();
        for scheme in [
            SchemeKind::RadixMainline,
            SchemeKind::XarrayPage,
            SchemeKind::Xarray512,
            SchemeKind::Maple,
        ] {
            v.push(Self {
                scheme,
                strategy: scheme.strategy().unwrap_or(Strategy::Coalesced),
            });
        }
        v
    }
}

/// One point: `blocks` restored in `ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Blocks.
    pub blocks: u64,
    /// Walk + memblock, ms.
    pub ms: f64,
    /// The scheme's metadata for these blocks (simulated pages x 4096 +
    /// modelled kernel objects), bytes.
    pub metadata_bytes: u64,
}

/// One strategy's curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scaling {
    /// Scheme name.
    pub scheme: String,
    /// Strategy name.
    pub strategy: String,
    /// Least-squares log-log slope (NaN with fewer than two points).
    pub exponent: f64,
    /// The measured points.
    pub points: Vec<Point>,
    /// The last measured size when a point went over the cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capped_after: Option<u64>,
    /// ms at 2^20 blocks: measured, or extrapolated from the fit.
    pub ms_at_2_20: Option<f64>,
    /// Whether `ms_at_2_20` is extrapolated.
    pub extrapolated: bool,
}

/// Least-squares slope and intercept of ln(y) against ln(x).
pub fn fit_loglog(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

/// The fitted exponent of `points`.
pub fn exponent(points: &[Point]) -> f64 {
    let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.blocks as f64, p.ms)).collect();
    fit_loglog(&xy).map_or(f64::NAN, |f| f.0)
}

/// The scattered order-0 blocks of a sweep point.
pub fn scattered(n: u64) -> Vec<Block> {
    (0..n)
        .filter_map(|i| {
            Block::new(
                PhysAddr::new(BLOCKS_AT + 2 * i * PAGE_SIZE),
                kho::Order::ZERO,
            )
            .ok()
        })
        .collect()
}

fn fresh_memblock(ram_end: u64) -> Result<Memblock, BenchError> {
    let mut mb = Memblock::new();
    mb.memblock_add(PhysAddr::new(0), ram_end)?;
    mb.memblock_allow_resize();
    mb.memblock_reserve(PhysAddr::new(0), ARENA_BASE)?;
    Ok(mb)
}

/// Restore time of `n` scattered blocks for every strategy in `strategies`
/// (one tree per scheme), with the scheme's metadata bytes, in order.
pub fn measure_point(
    n: u64,
    strategies: &[SweepStrategy],
) -> Result<Vec<(Duration, u64)>, BenchError> {
    let blocks = scattered(n);
    let arena_pages = usize::try_from(n / 64 + 2048).unwrap_or(usize::MAX);
    let ram_end = BLOCKS_AT + 2 * n * PAGE_SIZE + (1 << 30);
    let ram = [PhysRange::new(
        PhysAddr::new(ARENA_BASE),
        PhysAddr::new(ram_end),
    )?];
    let map = RamMap::new(&ram, &[])?;
    let mut out = Vec::with_capacity(strategies.len());
    let mut cache: Option<(SchemeKind, VecArena, PhysAddr, u64)> = None;
    for s in strategies {
        let (arena, root, md) = match &mut cache {
            Some((scheme, arena, root, md)) if *scheme == s.scheme => (&*arena, *root, *md),
            cache => {
                let arena = VecArena::new(PhysAddr::new(ARENA_BASE), arena_pages);
                let (root, md) = {
                    let mut t = s.scheme.tracker(&arena)?;
                    for &b in &blocks {
                        t.preserve(b)?;
                    }
                    let root = t.finalize()?.root;
                    let m = t.metadata();
                    (root, m.pages.len() as u64 * PAGE_SIZE + m.object_bytes)
                };
                let (_, arena, ..) = cache.insert((s.scheme, arena, root, md));
                (&*arena, root, md)
            }
        };
        let mut mb = fresh_memblock(ram_end)?;
        let st = match (s.scheme, s.strategy) {
            (SchemeKind::Kho, Strategy::PerBlock) => {
                SchemeKind::RadixMainline.restore(arena, map, root, &mut mb)?
            }
            (SchemeKind::Kho, strategy) => {
                let (st, skip) =
                    reserve_preserved(strategy, &mut RadixMap::new(arena, map, root), &mut mb)
                        .map_err(SchemeError::from)?;
                std::hint::black_box(&skip);
                st
            }
            (k, _) => k.restore(arena, map, root, &mut mb)?,
        };
        out.push((st.time(), md));
        drop(mb);
    }
    Ok(out)
}

/// Sweeps `sizes` (ascending) for `strategies`, stopping a strategy after
/// its first point over `cap`. `progress` is called once per point.
pub fn sweep(
    sizes: &[u64],
    strategies: &[SweepStrategy],
    cap: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Scaling>, BenchError> {
    if sizes.is_empty() {
        return Ok(Vec::new());
    }
    let mut res: Vec<Scaling> = strategies
        .iter()
        .map(|s| Scaling {
            scheme: s.scheme.name().to_owned(),
            strategy: s.strategy.as_str().to_owned(),
            exponent: f64::NAN,
            points: Vec::new(),
            capped_after: None,
            ms_at_2_20: None,
            extrapolated: false,
        })
        .collect();
    for &n in sizes {
        let live: Vec<usize> = (0..strategies.len())
            .filter(|&i| res[i].capped_after.is_none())
            .collect();
        if live.is_empty() {
            break;
        }
        let sel: Vec<SweepStrategy> = live.iter().map(|&i| strategies[i]).collect();
        progress(&format!("scaling 2^{}", n.trailing_zeros()));
        // Small points are noise-prone (microseconds): the median of 5.
        let runs = if n <= SMALL_POINT { 5 } else { 1 };
        let mut all: Vec<Vec<(Duration, u64)>> = Vec::with_capacity(runs);
        for _ in 0..runs {
            all.push(measure_point(n, &sel)?);
        }
        let times: Vec<(Duration, u64)> = (0..sel.len())
            .map(|j| {
                let mut v: Vec<(Duration, u64)> = all.iter().map(|r| r[j]).collect();
                v.sort();
                v[v.len() / 2]
            })
            .collect();
        for (&i, (d, md)) in live.iter().zip(times) {
            res[i].points.push(Point {
                blocks: n,
                ms: d.as_secs_f64() * 1e3,
                metadata_bytes: md,
            });
            if d > cap {
                res[i].capped_after = Some(n);
            }
        }
    }
    for s in &mut res {
        s.exponent = exponent(&s.points);
        const N20: u64 = 1 << 20;
        if let Some(p) = s.points.iter().find(|p| p.blocks == N20) {
            s.ms_at_2_20 = Some(p.ms);
        } else {
            // Fit on the largest points (the small ones are dominated by
            // fixed costs): the last three.
            let tail = &s.points[s.points.len().saturating_sub(3)..];
            let xy: Vec<(f64, f64)> = tail.iter().map(|p| (p.blocks as f64, p.ms)).collect();
            if let Some((b, a)) = fit_loglog(&xy) {
                s.ms_at_2_20 = Some((a + b * (N20 as f64).ln()).exp());
                s.extrapolated = true;
            }
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests;
