//! The scaling sweep: restore (walk + memblock) of `n` scattered order-0
//! blocks (every other page from 4 GiB up: as many ranges as blocks, the
//! worst case for memblock) per tracker and strategy, for `n` = 2^k.
//!
//! What is measured, per point (the median of five runs up to 2^14
//! blocks, one run above):
//! - the tracker is built once per `n` and scheme (preserve through the
//!   scheme into a [`VecArena`], timed: `preserve_ms`) and finalized
//!   (`finalize_ms`); then, into a fresh Linux-faithful [`Memblock`]
//!   holding the machine's RAM (resizable arrays), each strategy its
//!   handover can feed runs the machine's own accounting,
//!   [`kho_machine::reserve_preserved`], through [`SchemeKind::restore`]
//!   (a bare memblock is a [`kho_machine::ReservationSink`]);
//! - the time of a point is the accounting's own: walk (the ranged strategies call the sink for every head page in it) + memblock.
//!
//! Head pages are not written here (no memmap): every strategy writes the
//! same heads, so they do not change the comparison.
//!
//! # The cap
//!
//! A curve stops after its first point over the cap, and does not run a
//! point that its last two points predict (log-log line) over the cap: the
//! curve says so (`stop`). One curve, the reference ([`Reference`]:
//! mainline, `radix-mainline` under `per-block`), is measured at every
//! point up to its own limit whatever the cap. Every figure at 2^20 that
//! was not measured is extrapolated from the last three points and says
//! so (`extrapolated`). The growth exponent is the least-squares slope of
//! ln(ms) against ln(n).

use std::time::{Duration, Instant};

use kho::{Block, PAGE_SIZE, PhysAddr, PhysRange, RamMap, VecArena};
use kho_machine::{Memblock, Strategy};
use serde::Serialize;

use super::BenchError;
use crate::peers::SchemeKind;

const ARENA_BASE: u64 = 1 << 20;
const BLOCKS_AT: u64 = 4 << 30;
/// Points up to this many blocks are measured five times (median).
const SMALL_POINT: u64 = 1 << 14;
/// 2^20.
const N20: u64 = 1 << 20;

/// One curve of the sweep: a tracker under a strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepStrategy {
    /// The tracker.
    pub scheme: SchemeKind,
    /// The restore strategy (one of [`SchemeKind::strategies`]).
    pub strategy: Strategy,
}

impl SweepStrategy {
    /// Every pair: each scheme (report order) under each strategy its
    /// handover can feed.
    pub fn all() -> Vec<Self> {
        SchemeKind::ALL
            .into_iter()
            .flat_map(|scheme| {
                scheme
                    .strategies()
                    .iter()
                    .map(move |&strategy| Self { scheme, strategy })
            })
            .collect()
    }

    /// The curve's name, `tracker/strategy`.
    pub fn label(self) -> String {
        format!("{}/{}", self.scheme, self.strategy)
    }
}

/// The curve measured at every point up to `max_blocks` whatever the cap
/// (the default run: mainline per-block to 2^18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    /// The curve.
    pub curve: SweepStrategy,
    /// Its last point exempt from the cap.
    pub max_blocks: u64,
}

impl Reference {
    /// Mainline (`radix-mainline` under `per-block`) up to 2^`pow`.
    pub fn mainline(pow: u32) -> Self {
        Self {
            curve: SweepStrategy {
                scheme: SchemeKind::RadixMainline,
                strategy: Strategy::PerBlock,
            },
            max_blocks: 1u64.checked_shl(pow).unwrap_or(u64::MAX),
        }
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
    /// The tracker's preserve of these blocks, ms (one thread).
    pub preserve_ms: f64,
    /// Its finalize (handover preparation), ms.
    pub finalize_ms: f64,
}

/// Why a curve stopped before the sweep's last size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stop {
    /// The last size measured.
    pub after: u64,
    /// The next size's time as its last two points predict it, ms
    /// (`None`: the last point itself went over the cap).
    pub predicted_ms: Option<f64>,
}

/// One curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scaling {
    /// Scheme name (the tracker).
    pub scheme: String,
    /// The tracker (= `scheme`).
    pub tracker: String,
    /// Strategy name.
    pub strategy: String,
    /// Least-squares log-log slope (NaN with fewer than two points).
    pub exponent: f64,
    /// The measured points.
    pub points: Vec<Point>,
    /// The last measured size when the cap stopped the curve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capped_after: Option<u64>,
    /// How the cap stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Whether this is the reference curve (measured whatever the cap up to
    /// `reference_max_blocks`).
    pub reference: bool,
    /// ms at 2^20 blocks: measured, or extrapolated from the fit.
    pub ms_at_2_20: Option<f64>,
    /// Whether `ms_at_2_20` is extrapolated.
    pub extrapolated: bool,
}

impl Scaling {
    /// The measured point at `blocks`.
    pub fn at(&self, blocks: u64) -> Option<&Point> {
        self.points.iter().find(|p| p.blocks == blocks)
    }
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

/// One curve at one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Measured {
    /// Walk + memblock.
    pub restore: Duration,
    /// The tracker's metadata, bytes.
    pub metadata_bytes: u64,
    /// The tracker's preserve.
    pub preserve: Duration,
    /// Its finalize.
    pub finalize: Duration,
}

/// Restore time of `n` scattered blocks for every curve in `strategies`
/// (one tracker per run of curves of one scheme), with the tracker's own
/// costs, in order.
pub fn measure_point(n: u64, strategies: &[SweepStrategy]) -> Result<Vec<Measured>, BenchError> {
    let blocks = scattered(n);
    let arena_pages = usize::try_from(n / 64 + 2048).unwrap_or(usize::MAX);
    let ram_end = BLOCKS_AT + 2 * n * PAGE_SIZE + (1 << 30);
    let ram = [PhysRange::new(
        PhysAddr::new(ARENA_BASE),
        PhysAddr::new(ram_end),
    )?];
    let map = RamMap::new(&ram, &[])?;
    let mut out = Vec::with_capacity(strategies.len());
    // The tracker of the last scheme: (scheme, arena, root, metadata,
    // preserve, finalize).
    let mut cache: Option<(SchemeKind, VecArena, PhysAddr, u64, Duration, Duration)> = None;
    for s in strategies {
        if cache.as_ref().is_none_or(|c| c.0 != s.scheme) {
            // The previous tracker's memory goes before the next is built.
            drop(cache.take());
            let arena = VecArena::new(PhysAddr::new(ARENA_BASE), arena_pages);
            let (root, md, pres, fin) = {
                let mut t = s.scheme.tracker(&arena)?;
                let start = Instant::now();
                for &b in &blocks {
                    t.preserve(b)?;
                }
                let pres = start.elapsed();
                let start = Instant::now();
                let root = t.finalize()?.root;
                let fin = start.elapsed();
                let m = t.metadata();
                (
                    root,
                    m.pages.len() as u64 * PAGE_SIZE + m.object_bytes,
                    pres,
                    fin,
                )
            };
            cache = Some((s.scheme, arena, root, md, pres, fin));
        }
        let Some((_, arena, root, md, pres, fin)) = &cache else {
            unreachable!("just built");
        };
        let mut mb = fresh_memblock(ram_end)?;
        let (st, skip) = s.scheme.restore(s.strategy, arena, map, *root, &mut mb)?;
        std::hint::black_box(&skip);
        out.push(Measured {
            restore: st.time(),
            metadata_bytes: *md,
            preserve: *pres,
            finalize: *fin,
        });
        drop(mb);
    }
    Ok(out)
}

/// The time at `n` that the last two points of `points` predict (a line
/// through them in log-log), ms.
pub fn predict(points: &[Point], n: u64) -> Option<f64> {
    let [a, b] = points.get(points.len().checked_sub(2)?..)? else {
        return None;
    };
    let xy = [(a.blocks as f64, a.ms), (b.blocks as f64, b.ms)];
    let (slope, icpt) = fit_loglog(&xy)?;
    Some((icpt + slope * (n as f64).ln()).exp())
}

/// Sweeps `sizes` (ascending) for `strategies` under `cap` (see the module
/// doc), `reference` exempt up to its limit. `progress` is called once
/// per point.
pub fn sweep(
    sizes: &[u64],
    strategies: &[SweepStrategy],
    cap: Duration,
    reference: Option<Reference>,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<Vec<Scaling>, BenchError> {
    if sizes.is_empty() {
        return Ok(Vec::new());
    }
    let is_ref = |s: &SweepStrategy| reference.is_some_and(|r| r.curve == *s);
    let exempt =
        |s: &SweepStrategy, n: u64| reference.is_some_and(|r| r.curve == *s && n <= r.max_blocks);
    let mut res: Vec<Scaling> = strategies
        .iter()
        .map(|s| Scaling {
            scheme: s.scheme.name().to_owned(),
            tracker: s.scheme.name().to_owned(),
            strategy: s.strategy.as_str().to_owned(),
            exponent: f64::NAN,
            points: Vec::new(),
            capped_after: None,
            stop: None,
            reference: is_ref(s),
            ms_at_2_20: None,
            extrapolated: false,
        })
        .collect();
    let cap_ms = cap.as_secs_f64() * 1e3;
    for &n in sizes {
        // A curve runs this point unless it stopped, or its last two points
        // predict it over the cap (the reference up to its limit runs).
        for (i, s) in strategies.iter().enumerate() {
            let c = &mut res[i];
            if c.stop.is_some() || exempt(s, n) {
                continue;
            }
            if let Some(ms) = predict(&c.points, n).filter(|&ms| ms > cap_ms)
                && let Some(last) = c.points.last()
            {
                c.stop = Some(Stop {
                    after: last.blocks,
                    predicted_ms: Some(ms),
                });
                c.capped_after = Some(last.blocks);
            }
        }
        let live: Vec<usize> = (0..strategies.len())
            .filter(|&i| res[i].stop.is_none())
            .collect();
        if live.is_empty() {
            break;
        }
        let sel: Vec<SweepStrategy> = live.iter().map(|&i| strategies[i]).collect();
        progress(
            &format!("scaling 2^{}", n.trailing_zeros()),
            super::sweep_weight(n, reference),
        );
        // Small points are noise-prone (microseconds): the median of 5.
        let runs = if n <= SMALL_POINT { 5 } else { 1 };
        let mut all: Vec<Vec<Measured>> = Vec::with_capacity(runs);
        for _ in 0..runs {
            all.push(measure_point(n, &sel)?);
        }
        for (j, &i) in live.iter().enumerate() {
            let mut v: Vec<Measured> = all.iter().map(|r| r[j]).collect();
            v.sort();
            let m = v[v.len() / 2];
            let c = &mut res[i];
            c.points.push(Point {
                blocks: n,
                ms: m.restore.as_secs_f64() * 1e3,
                metadata_bytes: m.metadata_bytes,
                preserve_ms: m.preserve.as_secs_f64() * 1e3,
                finalize_ms: m.finalize.as_secs_f64() * 1e3,
            });
            // The reference goes on to its limit even over the cap.
            let goes_on = reference.is_some_and(|r| r.curve == strategies[i] && n < r.max_blocks);
            if m.restore > cap && !goes_on {
                c.stop = Some(Stop {
                    after: n,
                    predicted_ms: None,
                });
                c.capped_after = Some(n);
            }
        }
    }
    for s in &mut res {
        s.exponent = exponent(&s.points);
        if let Some(p) = s.at(N20) {
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
