//! Scratch areas: the memory the next kernel boots in.
//!
//! Glossary:
//!
//! - **scratch**: contiguous RAM the old kernel never hands to preserved
//!   data; the new kernel's memblock allocates only from it until every
//!   preserved block is reserved.
//! - **lowmem**: area 0, below [`ARCH_LOW_ADDRESS_LIMIT`], for allocations
//!   that must be low.
//! - **global**: area 1, anywhere, for allocations without a node.
//! - **node area**: areas 2.., one per NUMA node with memory (the machine
//!   has one).
//! - **kern size**: `memblock_reserved_kern_size(limit, nid)`: bytes of
//!   `memblock.reserved` regions flagged `MEMBLOCK_RSRV_KERN` (the kernel's
//!   own memblock allocations) below `limit` on `nid`.
//!
//! ## Sizing (Linux `kernel/liveupdate/kexec_handover.c`, formerly `kernel/kexec_handover.c`)
//!
//! `scratch_size_update()`, `scratch_size_node()` and `kho_reserve_scratch()`:
//!
//! ```text
//! scale   = 200 (percent), or kho_scratch=N%
//! lowmem  = round_up(kern_size(ARCH_LOW_ADDRESS_LIMIT, any node) * scale / 100, CMA_MIN_ALIGNMENT_BYTES)
//! global  = round_up(kern_size(anywhere, any node) * scale / 100 - lowmem,     CMA_MIN_ALIGNMENT_BYTES)
//! node n  = round_up(kern_size(anywhere, n) * scale / 100,                     CMA_MIN_ALIGNMENT_BYTES)
//! ```
//!
//! or, with `kho_scratch=l[KMG],g[KMG],n[KMG]`, the three explicit sizes
//! (the node size rounded up the same way). Allocation, in array order:
//! lowmem by `memblock_phys_alloc_range(size, CMA_MIN_ALIGNMENT_BYTES, 0,
//! ARCH_LOW_ADDRESS_LIMIT)`, global by `memblock_phys_alloc(size,
//! CMA_MIN_ALIGNMENT_BYTES)`, each node by `memblock_alloc_range_nid(...,
//! nid, exact_nid = true)`; on any failure every area already taken is freed
//! and KHO is disabled.
//!
//! Differences from Linux, both only where Linux would misbehave:
//! - `total * scale / 100 - lowmem` is a `phys_addr_t` subtraction that wraps
//!   when everything the kernel reserved lies low and rounding made `lowmem`
//!   larger; here it saturates at 0.
//! - every scale-derived area is at least [`SCRATCH_MIN_SIZE`] (one CMA
//!   granule): a machine whose kernel reserved almost nothing (ours, before
//!   memblock lands) would otherwise get zero-sized areas.
//!
//! On x86, `ARCH_LOW_ADDRESS_LIMIT` is memblock's default `0xffffffff`, an
//! inclusive limit; here it is the exclusive 4 GiB, the same at page
//! granularity. `CMA_MIN_ALIGNMENT_BYTES` is `PAGE_SIZE << pageblock_order`
//! = 2 MiB on x86-64.
//!
//! ## Preserved memory is never in scratch
//!
//! The old kernel allocates scratch first and keeps it reserved (in Linux it
//! becomes CMA pageblocks: movable allocations only, which KHO cannot
//! preserve), so allocations for preserved data come from elsewhere; and
//! [`ScratchAreas::check_preserve`] refuses any block that overlaps scratch,
//! as `kho_preserve_folio()` does with `kho_scratch_overlap()`.

use std::str::FromStr;

use kho::{PAGE_SIZE, PhysAddr, PhysRange};

use crate::memblock::{Memblock, MemblockFlags, NUMA_NO_NODE};

const MIB: u64 = 1 << 20;

/// `CMA_MIN_ALIGNMENT_BYTES` on x86-64: one pageblock (order 9), 2 MiB.
pub(crate) const CMA_MIN_ALIGNMENT_BYTES: u64 = 2 * MIB;
/// The end (exclusive) of low memory for the lowmem area: 4 GiB.
pub(crate) const ARCH_LOW_ADDRESS_LIMIT: PhysAddr = PhysAddr::new(1 << 32);
/// `scratch_scale`'s default: 200 percent.
pub(crate) const DEFAULT_SCRATCH_SCALE: u32 = 200;
/// The smallest scale-derived area (ours; see the module doc).
pub(crate) const SCRATCH_MIN_SIZE: u64 = CMA_MIN_ALIGNMENT_BYTES;

/// Errors of scratch sizing and reservation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScratchError {
    /// A `kho_scratch=` value that is neither `N%` nor `l,g,n` sizes.
    #[error(
        "bad kho_scratch value {value:?}: expected N% or lowmem,global,pernode sizes (K/M/G suffixes)"
    )]
    Parse {
        /// The text.
        value: String,
    },
    /// An area could not be allocated; KHO is disabled.
    #[error("cannot allocate the {area} scratch area of {size:#x} bytes")]
    Alloc {
        /// Which area.
        area: ScratchKind,
        /// Its size.
        size: u64,
    },
    /// A block to preserve overlaps scratch.
    #[error("preserved range {range} overlaps the {area} scratch area {scratch}")]
    PreservedInScratch {
        /// The range to preserve.
        range: PhysRange,
        /// Which area.
        area: ScratchKind,
        /// The area's range.
        scratch: PhysRange,
    },
}

/// Which scratch area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchKind {
    /// Area 0, below 4 GiB.
    Lowmem,
    /// Area 1.
    Global,
    /// The area of a NUMA node.
    Node(usize),
}

impl std::fmt::Display for ScratchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lowmem => write!(f, "lowmem"),
            Self::Global => write!(f, "global"),
            Self::Node(n) => write!(f, "node {n}"),
        }
    }
}

/// How scratch is sized: the `kho_scratch=` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchSizing {
    /// `kho_scratch=N%`: N percent of the kernel's memblock use.
    Scale(u32),
    /// `kho_scratch=l,g,n`: explicit sizes in bytes.
    Explicit {
        /// The lowmem area.
        lowmem: u64,
        /// The global area.
        global: u64,
        /// Each node's area.
        pernode: u64,
    },
}

impl Default for ScratchSizing {
    fn default() -> Self {
        Self::Scale(DEFAULT_SCRATCH_SCALE)
    }
}

/// Linux's `memparse`: a decimal or `0x` hex number with an optional
/// K/M/G/T/P/E suffix (binary multiples, either case). `None` on garbage or
/// overflow.
pub fn memparse(s: &str) -> Option<u64> {
    let (digits, shift) = match s.chars().last()? {
        c @ ('k' | 'K' | 'm' | 'M' | 'g' | 'G' | 't' | 'T' | 'p' | 'P' | 'e' | 'E') => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                'P' => 50,
                _ => 60,
            };
            (&s[..s.len() - 1], shift)
        }
        _ => (s, 0),
    };
    let n = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(h) => u64::from_str_radix(h, 16).ok()?,
        None => digits.parse::<u64>().ok()?,
    };
    n.checked_mul(1u64 << shift)
}

impl FromStr for ScratchSizing {
    type Err = ScratchError;

    /// Parses a `kho_scratch=` value as `kho_parse_scratch_size()` does:
    /// `N%`, or three sizes of which at least one is non-zero.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ScratchError::Parse {
            value: s.to_owned(),
        };
        if let Some(pct) = s.strip_suffix('%') {
            return pct.parse().map(Self::Scale).map_err(|_| bad());
        }
        let sizes: Vec<u64> = s
            .split(',')
            .map(memparse)
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        match sizes[..] {
            [lowmem, global, pernode] if lowmem | global | pernode != 0 => Ok(Self::Explicit {
                lowmem,
                global,
                pernode,
            }),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for ScratchSizing {
    /// The `kho_scratch=` value [`ScratchSizing::from_str`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Scale(pct) => write!(f, "{pct}%"),
            Self::Explicit {
                lowmem,
                global,
                pernode,
            } => write!(f, "{lowmem},{global},{pernode}"),
        }
    }
}

/// The inputs of the scale sizing: `memblock_reserved_kern_size` figures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernReserved {
    /// `memblock_reserved_kern_size(ARCH_LOW_ADDRESS_LIMIT, NUMA_NO_NODE)`.
    pub below_low_limit: u64,
    /// `memblock_reserved_kern_size(MEMBLOCK_ALLOC_ANYWHERE, NUMA_NO_NODE)`.
    pub total: u64,
    /// `memblock_reserved_kern_size(MEMBLOCK_ALLOC_ANYWHERE, nid)` per node.
    pub per_node: Vec<u64>,
}

impl KernReserved {
    /// `memblock_reserved_kern_size` as Linux computes it, from the
    /// `RSRV_KERN` regions of `memblock.reserved` (the kernel image and
    /// every memblock allocation, the memmap included). One node: every
    /// region counts for node 0 (before `memmap_init_reserved_pages` Linux's
    /// reserved regions carry no node either).
    pub fn from_memblock(memblock: &Memblock) -> Self {
        let low = ARCH_LOW_ADDRESS_LIMIT.as_u64();
        let (mut below_low_limit, mut total) = (0u64, 0u64);
        for r in memblock
            .for_each_reserved_mem_region()
            .filter(|r| r.flags.contains(MemblockFlags::RSRV_KERN))
        {
            let start = r.base.as_u64();
            let end = r.range().end().as_u64();
            total = total.saturating_add(r.size);
            below_low_limit = below_low_limit.saturating_add(end.min(low).saturating_sub(start));
        }
        Self {
            below_low_limit,
            total,
            per_node: vec![total],
        }
    }
}

/// The sizes of the areas, in array order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScratchSizes {
    /// Area 0.
    pub lowmem: u64,
    /// Area 1.
    pub global: u64,
    /// Areas 2.., one per node.
    pub per_node: Vec<u64>,
}

fn round_up(size: u64, align: u64) -> u64 {
    size.div_ceil(align).saturating_mul(align)
}

fn scale(size: u64, percent: u32) -> u64 {
    // In u128: a 1 TiB machine times a large percentage must not wrap.
    let v = u128::from(size) * u128::from(percent) / 100;
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl ScratchSizing {
    /// The area sizes for a kernel that reserved `kern`.
    pub fn sizes(&self, kern: &KernReserved) -> ScratchSizes {
        let g = CMA_MIN_ALIGNMENT_BYTES;
        match *self {
            Self::Scale(pct) => {
                let lowmem = round_up(scale(kern.below_low_limit, pct), g);
                let global = round_up(scale(kern.total, pct).saturating_sub(lowmem), g);
                let per_node = kern
                    .per_node
                    .iter()
                    .map(|n| round_up(scale(*n, pct), g).max(SCRATCH_MIN_SIZE))
                    .collect();
                ScratchSizes {
                    lowmem: lowmem.max(SCRATCH_MIN_SIZE),
                    global: global.max(SCRATCH_MIN_SIZE),
                    per_node,
                }
            }
            Self::Explicit {
                lowmem,
                global,
                pernode,
            } => ScratchSizes {
                lowmem,
                global,
                per_node: vec![round_up(pernode, g); kern.per_node.len()],
            },
        }
    }
}

/// What scratch reservation needs from memblock (implemented by the old
/// kernel's memblock; by closures-backed fakes in tests).
pub(crate) trait ScratchAlloc {
    /// Allocates `size` bytes aligned to `align` wholly below `below`, on
    /// node `nid` exactly if given (`memblock_phys_alloc_range` /
    /// `memblock_alloc_range_nid`), and reserves them. `None` if impossible.
    fn alloc(
        &mut self,
        size: u64,
        align: u64,
        below: PhysAddr,
        nid: Option<usize>,
    ) -> Option<PhysAddr>;
    /// Frees a range `alloc` returned (`memblock_phys_free`).
    fn free(&mut self, range: PhysRange);
}

/// The old kernel's memblock reserves scratch: `memblock_alloc_range_nid`
/// top-down in `[0, below)` (`exact_nid` when a node is named), freed by
/// `memblock_phys_free`.
impl ScratchAlloc for Memblock {
    fn alloc(
        &mut self,
        size: u64,
        align: u64,
        below: PhysAddr,
        nid: Option<usize>,
    ) -> Option<PhysAddr> {
        let node = nid.map_or(Some(NUMA_NO_NODE), |n| i32::try_from(n).ok())?;
        self.memblock_alloc_range_nid(size, align, PhysAddr::ZERO, below, node, nid.is_some())
            .ok()
    }

    fn free(&mut self, range: PhysRange) {
        // Only ranges `alloc` returned: removing them cannot fail.
        let _ = self.memblock_phys_free(range.start(), range.size());
    }
}

/// The scratch areas, in array order `[lowmem, global, node 0, ...]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScratchAreas {
    areas: Vec<PhysRange>,
}

impl ScratchAreas {
    /// From an array read in the new kernel (already validated by the
    /// hand-over reader) or built by hand.
    pub fn from_ranges(areas: Vec<PhysRange>) -> Self {
        Self { areas }
    }

    /// All areas in array order.
    pub fn as_slice(&self) -> &[PhysRange] {
        &self.areas
    }

    /// The kind of area `i` of the array.
    pub fn kind(i: usize) -> ScratchKind {
        match i {
            0 => ScratchKind::Lowmem,
            1 => ScratchKind::Global,
            n => ScratchKind::Node(n - 2),
        }
    }

    /// Total bytes.
    pub fn total(&self) -> u64 {
        self.areas.iter().map(|r| r.size()).sum()
    }

    /// The first area `range` overlaps (`kho_scratch_overlap`).
    pub fn overlap(&self, range: PhysRange) -> Option<(ScratchKind, PhysRange)> {
        self.areas
            .iter()
            .enumerate()
            .find(|(_, a)| a.overlaps(range))
            .map(|(i, a)| (Self::kind(i), *a))
    }

    /// Refuses to preserve `range` if it overlaps scratch.
    pub fn check_preserve(&self, range: PhysRange) -> Result<(), ScratchError> {
        match self.overlap(range) {
            None => Ok(()),
            Some((area, scratch)) => Err(ScratchError::PreservedInScratch {
                range,
                area,
                scratch,
            }),
        }
    }
}

/// `kho_reserve_scratch()`: sizes and allocates the areas; on failure frees
/// what it took and reports which area failed.
pub(crate) fn kho_reserve_scratch(
    sizing: &ScratchSizing,
    kern: &KernReserved,
    alloc: &mut impl ScratchAlloc,
) -> Result<ScratchAreas, ScratchError> {
    let sizes = sizing.sizes(kern);
    let anywhere = PhysAddr::new(u64::MAX);
    let mut plan = vec![
        (
            ScratchKind::Lowmem,
            sizes.lowmem,
            ARCH_LOW_ADDRESS_LIMIT,
            None,
        ),
        (ScratchKind::Global, sizes.global, anywhere, None),
    ];
    plan.extend(
        sizes
            .per_node
            .iter()
            .enumerate()
            .map(|(nid, s)| (ScratchKind::Node(nid), *s, anywhere, Some(nid))),
    );
    let mut areas = Vec::with_capacity(plan.len());
    for (area, size, below, nid) in plan {
        let got = alloc
            .alloc(size, CMA_MIN_ALIGNMENT_BYTES, below, nid)
            .and_then(|a| PhysRange::from_start_size(a, size).ok());
        match got {
            Some(r) => areas.push(r),
            None => {
                for r in areas.into_iter().rev() {
                    alloc.free(r);
                }
                return Err(ScratchError::Alloc { area, size });
            }
        }
    }
    debug_assert!(areas.iter().all(|r| r.start().is_aligned(PAGE_SIZE)));
    Ok(ScratchAreas { areas })
}

#[cfg(test)]
mod tests;
