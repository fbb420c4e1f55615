//! Is the memblock model honest? The mainline restore path, run on the
//! model, against what Linux's own memblock code measured on this kind of
//! machine (compiled in user space, single thread, best of 3).
//!
//! Every comparison this project makes between restore strategies rests on
//! the model's `per-block` path costing what Linux's does: one
//! `memblock_reserve` plus one `memblock_reserved_mark_noinit` per preserved
//! block, in mainline walk order (ascending key: ascending address within an
//! order). These cases replay exactly that on an empty [`Memblock`] holding
//! one memory region, and report the model's time, its final reserved region
//! count and its ratio to Linux's figure. The model is honest when each ratio
//! lies within 0.5..=2.
//!
//! | case                | input                                          | Linux        |
//! |---------------------|------------------------------------------------|--------------|
//! | `random-2^16`       | 2^16 distinct random order-0 pages of 64 GiB   | 5.8 s, 65,250 regions |
//! | `contiguous-48g`    | every order-0 page of 48 GiB                   | 0.30 s       |
//!
//! (Linux's third published figure, a real process's 287,054 scattered pages
//! in 14.2 s, needs that process's trace; it joins when traces ship.)

use std::time::{Duration, Instant};

use kho::{PAGE_SIZE, PhysAddr};
use kho_machine::{Memblock, MemblockError};
use serde::Serialize;

const GIB: u64 = 1 << 30;

/// One fidelity case: its input and Linux's measured figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FidelityCase {
    /// 2^16 distinct random order-0 pages in a 64 GiB space.
    Random2p16,
    /// All order-0 pages of 48 GiB, ascending.
    Contiguous48G,
}

impl FidelityCase {
    /// Every case, in report order.
    pub const ALL: [Self; 2] = [Self::Random2p16, Self::Contiguous48G];

    /// The report name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Random2p16 => "random-2^16",
            Self::Contiguous48G => "contiguous-48g",
        }
    }

    /// Linux's figure: seconds, and final reserved regions where published.
    pub const fn linux(self) -> (f64, Option<u64>) {
        match self {
            Self::Random2p16 => (5.8, Some(65_250)),
            Self::Contiguous48G => (0.30, None),
        }
    }

    /// The pfns to reserve, in mainline walk order (ascending).
    pub fn pfns(self, seed: u64) -> (u64, Vec<u64>) {
        match self {
            Self::Random2p16 => {
                let space = 64 * GIB / PAGE_SIZE;
                let mut x = seed | 1;
                let mut set = std::collections::BTreeSet::new();
                while set.len() < 1 << 16 {
                    // xorshift64*
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    set.insert(x.wrapping_mul(0x2545_f491_4f6c_dd1d) % space);
                }
                (64 * GIB, set.into_iter().collect())
            }
            Self::Contiguous48G => (48 * GIB, (0..48 * GIB / PAGE_SIZE).collect()),
        }
    }
}

/// What one case measured.
#[derive(Debug, Clone, Serialize)]
pub struct FidelityResult {
    /// The case's name.
    pub case: &'static str,
    /// Blocks reserved.
    pub blocks: u64,
    /// The model's time for all the calls.
    pub model_s: f64,
    /// Linux's time.
    pub linux_s: f64,
    /// model / Linux.
    pub ratio: f64,
    /// Final `memblock.reserved` regions in the model.
    pub regions: u64,
    /// Linux's final regions, where published.
    pub linux_regions: Option<u64>,
    /// Regions looked at by the model's scans and merges.
    pub region_visits: u64,
}

/// Replays one case on a fresh memblock.
pub fn run_case(case: FidelityCase, seed: u64) -> Result<FidelityResult, MemblockError> {
    let (space, pfns) = case.pfns(seed);
    // Memory is a single region above the pages' space, so the doubled
    // arrays find room without touching the reserved pages' neighbourhood.
    let mut mb = Memblock::new();
    mb.memblock_add(PhysAddr::ZERO, space + GIB)?;
    mb.memblock_allow_resize();
    mb.reset_stats();
    let start = Instant::now();
    for &pfn in &pfns {
        let phys = PhysAddr::new(pfn * PAGE_SIZE);
        mb.memblock_reserve(phys, PAGE_SIZE)?;
        mb.memblock_reserved_mark_noinit(phys, PAGE_SIZE)?;
    }
    let elapsed: Duration = start.elapsed();
    let (linux_s, linux_regions) = case.linux();
    let model_s = elapsed.as_secs_f64();
    Ok(FidelityResult {
        case: case.name(),
        blocks: pfns.len() as u64,
        model_s,
        linux_s,
        ratio: model_s / linux_s,
        regions: mb.reserved.cnt() as u64,
        linux_regions,
        region_visits: mb.stats().visits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_what_linux_measured() {
        let (space, pfns) = FidelityCase::Random2p16.pfns(1);
        assert_eq!(space, 64 * GIB);
        assert_eq!(pfns.len(), 1 << 16);
        assert!(pfns.windows(2).all(|w| w[0] < w[1]), "ascending, distinct");
        assert!(pfns.iter().all(|&p| p < 64 * GIB / PAGE_SIZE));
        let (_, dense) = FidelityCase::Contiguous48G.pfns(1);
        assert_eq!(dense.len() as u64, 48 * GIB / PAGE_SIZE);
    }

    #[test]
    fn contiguous_pages_end_in_one_region() {
        // The same path as the 48 GiB case, on 64 MiB.
        let mut mb = Memblock::new();
        mb.memblock_add(PhysAddr::ZERO, GIB).unwrap();
        for pfn in 0..16_384u64 {
            let phys = PhysAddr::new(pfn * PAGE_SIZE);
            mb.memblock_reserve(phys, PAGE_SIZE).unwrap();
            mb.memblock_reserved_mark_noinit(phys, PAGE_SIZE).unwrap();
        }
        assert_eq!(mb.reserved.cnt(), 1);
    }
}
