//! The scaling sweep: restore (walk + memblock) of `n` scattered order-0
//! blocks (every other page from 4 GiB up: as many ranges as blocks, the
//! worst case for memblock) per scheme and strategy, for `n` = 2^k.
//!
//! What is measured, per point (the median of five runs up to 2^14
//! blocks, one run above):
//! - the tracker is built once per `n` (preserve through the scheme into a
//!   [`VecArena`]) and finalized; then, into a fresh Linux-faithful
//!   [`Memblock`] holding the machine's RAM (resizable arrays):
//! - `per-block` / `coalesced` (and the peers): [`SchemeKind::restore`]
//!   with `reserve` = `memblock_reserve` + `memblock_reserved_mark_noinit`
//!   (ours per-block reads the tree the way mainline does: the
//!   `radix-mainline` reader over our tree, which has the same format);
//! - `bulk`: as the machine's `kho_memory_init`: the validating coalescing
//!   walk into a list of ranges, the heads pass (a second walk), then one
//!   [`Memblock::memblock_reserve_sorted`] with `RSRV_NOINIT`;
//! - `skip`: the same two walks, memblock untouched.
//!
//! Head pages are not written here (no memmap): every strategy writes the
//! same heads, so they do not change the comparison.
//!
//! A strategy stops after the first point whose time exceeds the cap; the
//! growth exponent is the least-squares slope of ln(ms) against ln(n).

use std::time::{Duration, Instant};

use kho::{
    Block, NodeBudget, NodeSet, PAGE_SIZE, PhysAddr, PhysRange, RadixReader, RamMap, VecArena,
};
use kho_machine::memblock::{Memblock, MemblockFlags};
use serde::Serialize;

use crate::peers::{Reserve, SchemeError, SchemeKind};

const ARENA_BASE: u64 = 1 << 20;
const BLOCKS_AT: u64 = 4 << 30;
/// Points up to this many blocks are measured five times (median).
const SMALL_POINT: u64 = 1 << 14;

/// One strategy of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepStrategy {
    /// The scheme.
    pub scheme: SchemeKind,
    /// Its restore strategy name (`per-block`, `coalesced`, `bulk`, `skip`).
    pub strategy: &'static str,
}

impl SweepStrategy {
    /// Every swept strategy: ours four, each peer its own.
    pub fn all() -> Vec<Self> {
        let mut v: Vec<Self> = ["per-block", "coalesced", "bulk", "skip"]
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
                strategy: peer_strategy(scheme),
            });
        }
        v
    }
}

/// The reservation granularity of a peer.
pub fn peer_strategy(kind: SchemeKind) -> &'static str {
    match kind {
        SchemeKind::Maple => "coalesced",
        SchemeKind::Kho => "coalesced",
        _ => "per-block",
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

struct MemblockTarget<'a>(&'a mut Memblock);

impl Reserve for MemblockTarget<'_> {
    fn reserve(&mut self, r: PhysRange) -> Result<(), SchemeError> {
        let err = |e: kho_machine::memblock::MemblockError| SchemeError::Reserve {
            range: r,
            reason: e.to_string(),
        };
        self.0.memblock_reserve(r.start(), r.size()).map_err(err)?;
        self.0
            .memblock_reserved_mark_noinit(r.start(), r.size())
            .map_err(err)
    }

    fn head(&mut self, _: Block) -> Result<(), SchemeError> {
        Ok(())
    }
}

fn fresh_memblock(ram_end: u64) -> Result<Memblock, String> {
    let mut mb = Memblock::new();
    mb.memblock_add(PhysAddr::new(0), ram_end)
        .map_err(|e| e.to_string())?;
    mb.memblock_allow_resize();
    mb.memblock_reserve(PhysAddr::new(0), ARENA_BASE)
        .map_err(|e| e.to_string())?;
    Ok(mb)
}

/// Restore time of `n` scattered blocks for every strategy in `strategies`
/// (one tree per scheme); `ms` per strategy, in order.
pub fn measure_point(n: u64, strategies: &[SweepStrategy]) -> Result<Vec<(Duration, u64)>, String> {
    let blocks = scattered(n);
    let arena_pages = usize::try_from(n / 64 + 2048).map_err(|e| e.to_string())?;
    let ram_end = BLOCKS_AT + 2 * n * PAGE_SIZE + (1 << 30);
    let ram = [
        PhysRange::new(PhysAddr::new(ARENA_BASE), PhysAddr::new(ram_end))
            .map_err(|e| e.to_string())?,
    ];
    let map = RamMap::new(&ram, &[]).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(strategies.len());
    let mut cache: Option<(SchemeKind, VecArena, PhysAddr, u64)> = None;
    for s in strategies {
        if cache.as_ref().is_none_or(|c| c.0 != s.scheme) {
            let arena = VecArena::new(PhysAddr::new(ARENA_BASE), arena_pages);
            let (root, md) = {
                let mut t = s.scheme.tracker(&arena).map_err(|e| e.to_string())?;
                for &b in &blocks {
                    t.preserve(b).map_err(|e| e.to_string())?;
                }
                let root = t.finalize().map_err(|e| e.to_string())?.root;
                let m = t.metadata();
                (root, m.pages.len() as u64 * PAGE_SIZE + m.object_bytes)
            };
            cache = Some((s.scheme, arena, root, md));
        }
        let Some((_, arena, root, md)) = cache.as_ref() else {
            return Err("no tree".into());
        };
        let mut mb = fresh_memblock(ram_end)?;
        let t = Instant::now();
        match (s.scheme, s.strategy) {
            (SchemeKind::Kho, "per-block") => {
                SchemeKind::RadixMainline
                    .restore(arena, map, *root, &mut MemblockTarget(&mut mb))
                    .map_err(|e| e.to_string())?;
            }
            (SchemeKind::Kho, strategy @ ("bulk" | "skip")) => {
                // As the machine's kho_memory_init: the validating
                // coalescing walk into a list of ranges, a heads pass (a
                // second walk; the heads themselves are not written here),
                // then one sorted merge (bulk) or nothing (skip: the list
                // is what memmap init and memblock_free_all skip).
                let open = || {
                    RadixReader::open(arena, map, *root, NodeSet::new(), NodeBudget::for_ram(&map))
                        .map_err(|e| e.to_string())
                };
                let ranges = open()?
                    .coalesce()
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let mut walk = open()?.walk();
                let mut heads = 0u64;
                while let Some(run) = walk.next_run() {
                    heads += run.map_err(|e| e.to_string())?.blocks().count() as u64;
                }
                std::hint::black_box(heads);
                if strategy == "bulk" {
                    mb.memblock_reserve_sorted(ranges.iter().copied(), MemblockFlags::RSRV_NOINIT)
                        .map_err(|e| e.to_string())?;
                }
                std::hint::black_box(&ranges);
            }
            (k, _) => {
                k.restore(arena, map, *root, &mut MemblockTarget(&mut mb))
                    .map_err(|e| e.to_string())?;
            }
        }
        out.push((t.elapsed(), *md));
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
) -> Result<Vec<Scaling>, String> {
    if sizes.is_empty() {
        return Ok(Vec::new());
    }
    let mut res: Vec<Scaling> = strategies
        .iter()
        .map(|s| Scaling {
            scheme: s.scheme.name().to_owned(),
            strategy: s.strategy.to_owned(),
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
mod tests {
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
                strategy: "per-block",
            },
            SweepStrategy {
                scheme: SchemeKind::Kho,
                strategy: "skip",
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
}
