//! The old kernel's workloads: what a live update has to carry over.
//!
//! Glossary:
//!
//! - **folio**: a block (`2^order` pages, naturally aligned) one owner
//!   allocated.
//! - **guest**: a VM whose RAM is folios of one size (1 GiB or 2 MiB) plus
//!   metadata.
//! - **metadata**: order-0 pages per guest (vCPU state, page tables, ...),
//!   preserved too.
//! - **aging**: random alloc/free churn on the buddy (orders 0..=3) before
//!   the checkpoint, so the free lists fragment like a machine that has run
//!   for a while.
//! - **checkpoint**: a process's memory written into a memfd: order-0
//!   folios and small mTHP folios (orders 2..=4), scattered.
//! - **forgotten**: fault injection: pages written and listed in the
//!   manifest but never preserved (the new kernel must report them lost).
//! - **replay**: a given list of blocks (a captured trace, or the `dense` /
//!   `fragmented` patterns), placed in free memory by [`place_blocks`] and
//!   reserved in memblock at boot.
//! - **scenario**: the sizes of all of the above ([`Scenario`]);
//!   [`WorkloadKind`] names the presets.
//!
//! Every workload folio gets real data ([`crate::manifest::fill_pattern`]:
//! every word derived from the seed and the frame, checksummed) and is
//! preserved by [`crate::Preserver`] (`crate::preserve`): in the KHO radix
//! tree through a [`kho::Cursor`] (Linux's `kho_preserve_folio`), after
//! [`crate::ScratchAreas::check_preserve`]. The result is the manifest's
//! entries.
//!
//! Where the memory comes from, as in Linux:
//!
//! | folios                            | allocator                                             | when                        |
//! |-----------------------------------|-------------------------------------------------------|-----------------------------|
//! | 1 GiB (guest RAM)                 | memblock, [`alloc_bootmem_huge_page`] (hugetlb's boot pool) | before `memblock_free_all` (1) |
//! | 2 MiB (guest RAM)                 | buddy, `folio_alloc(9)` (THP)                         | after the buddy is live     |
//! | metadata, checkpoint, forgotten   | buddy, `folio_alloc(0..=4)`                           | after the buddy is live     |
//! | replay (trace, dense, fragmented) | memblock, `memblock_reserve` of the placed blocks ([`replay_reserve`]) | after scratch (1) |
//!
//! (1) and before `memblock_free_all`; the 1 GiB folios are prepped after
//! `memmap_init`.
//!
//! Scratch is reserved in memblock before the buddy takes over, so nothing
//! here can land in it; the preserver checks it for every block anyway.
//!
//! Everything is deterministic by seed: the same machine, scenario and seed
//! give the same blocks, the same data and the same manifest.

use std::sync::atomic::Ordering;

use kho::{Block, MemError, Order, PAGE_SIZE, PageAlloc, PageMap, Pfn, PhysAddr, PhysRange};

use crate::buddy::{
    Buddy, BuddyError, GIGANTIC_ORDER, alloc_bootmem_huge_page, prep_bootmem_huge_folio,
};
use crate::memblock::{Memblock, MemblockError};
use crate::memmap::{MemMap, MemmapError};
use crate::preserve::{PreserveError, Preserver};
use crate::scratch::ScratchError;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The machine size the default scenario is written for; smaller machines
/// get it scaled down in proportion, larger ones get it unchanged.
pub(crate) const REFERENCE_MACHINE: u64 = 16 * GIB;

/// The order of a THP-backed guest's folios (2 MiB).
pub(crate) const THP_ORDER: Order = Order::new(9);

/// The smallest and largest mTHP order of the checkpoint (16 KiB, 64 KiB).
pub(crate) const MTHP_ORDERS: (u8, u8) = (2, 4);

/// Metadata pages per guest.
pub(crate) const VM_META_PAGES: u64 = 4;

/// The value written into the first word of each aging (churn) page: data
/// the old kernel wrote but does not preserve, which poison must overwrite.
pub(crate) const CHURN_MARK: u64 = 0x6368_7572_6e00_0000;

/// The checkpoint's random stream ("memfd").
const MEMFD_STREAM: u64 = u64::from_le_bytes(*b"memfd\0\0\0");

/// Errors of the workloads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// The buddy allocator failed (out of memory, ...).
    #[error("{what}: {source}")]
    Buddy {
        /// What was being allocated or freed.
        what: &'static str,
        /// The allocator's error.
        source: BuddyError,
    },
    /// A struct page could not be reached.
    #[error(transparent)]
    Memmap(#[from] MemmapError),
    /// Simulated memory refused an access.
    #[error("memory: {0}")]
    Mem(#[from] MemError),
    /// A folio could not be preserved.
    #[error(transparent)]
    Preserve(#[from] PreserveError),
    /// A block would have been preserved inside scratch.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    /// A replayed trace does not fit the machine's free memory.
    #[error(
        "the trace ({blocks} blocks, {bytes:#x} bytes) does not fit the machine: its runs need memory up to {needed}, {free:#x} bytes are free (use a larger --machine-size)"
    )]
    TraceDoesNotFit {
        /// Blocks of the trace.
        blocks: u64,
        /// Their bytes.
        bytes: u64,
        /// Where the first run that did not fit would have ended.
        needed: PhysAddr,
        /// Free bytes of the machine.
        free: u64,
    },
    /// memblock refused the replayed blocks.
    #[error("reserving the replayed blocks: {0}")]
    Reserve(#[source] MemblockError),
    /// A frame that does not form a block of its order.
    #[error("pfn {pfn} is not a block of order {order}")]
    NotABlock {
        /// The frame.
        pfn: Pfn,
        /// The order.
        order: Order,
    },
}

fn block(pfn: Pfn, order: Order) -> Result<Block, WorkloadError> {
    Block::from_pfn(pfn, order).map_err(|_| WorkloadError::NotABlock { pfn, order })
}

// ---------------------------------------------------------------------------
// Randomness

/// splitmix64: a tiny deterministic generator (the workloads need
/// reproducibility, not quality).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for `seed` and a stream name (so that workloads sharing
    /// a seed do not share their stream).
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        let mut r = Self(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; 0 for `n == 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift; the bias is irrelevant here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `percent` / 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---------------------------------------------------------------------------
// The scenario

/// The sizes of the old kernel's workloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scenario {
    /// 1 GiB folios of guest 0 (hugetlb boot pool).
    pub vm_1g_folios: u64,
    /// 2 MiB folios of guest 1 (THP).
    pub vm_2m_folios: u64,
    /// Bytes of the memfd checkpoint (a multiple of 4 KiB).
    pub memfd_bytes: u64,
    /// Percentage of the checkpoint's bytes in order-0 folios; the rest is
    /// orders 2..=4.
    pub memfd_order0_percent: u8,
    /// Order-0 pages written and listed but not preserved (fault injection).
    pub forget_pages: u64,
    /// Blocks replayed as they are laid out (a captured trace, the `dense`
    /// and `fragmented` patterns): placed in free memory by
    /// `place_blocks`, reserved in memblock at boot, filled and
    /// preserved. Sorted, no two overlapping.
    pub replay: Vec<Block>,
}

impl Scenario {
    /// The `kho run` scenario for a machine of `ram_bytes` (nominal). On the
    /// 16 GiB reference machine: guest 0 with 2 GiB of 1 GiB folios, guest 1
    /// with 512 MiB of 2 MiB folios, 4 metadata pages each, and a 1 GiB
    /// checkpoint of 70 % order-0 and 30 % 16-64 KiB folios by bytes. A
    /// smaller machine gets every size scaled by `ram / 16 GiB` (at least
    /// one 2 MiB folio and 1 MiB of checkpoint), and no 1 GiB folios below
    /// 4 GiB of RAM; a larger machine gets the same sizes.
    pub fn for_machine(ram_bytes: u64) -> Self {
        let scale = |x: u64| -> u64 {
            let v = u128::from(x) * u128::from(ram_bytes.min(REFERENCE_MACHINE))
                / u128::from(REFERENCE_MACHINE);
            u64::try_from(v).unwrap_or(x)
        };
        Self {
            vm_1g_folios: if ram_bytes >= 4 * GIB {
                scale(2).max(1)
            } else {
                0
            },
            vm_2m_folios: scale(256).max(1),
            memfd_bytes: (scale(GIB).max(MIB) / PAGE_SIZE) * PAGE_SIZE,
            memfd_order0_percent: 70,
            forget_pages: 0,
            replay: Vec::new(),
        }
    }

    /// The preset `kind` for a machine of `ram_bytes` (nominal), every size
    /// scaled like [`Scenario::for_machine`]:
    ///
    /// | kind         | what                                                              |
    /// |--------------|-------------------------------------------------------------------|
    /// | `default`    | [`Scenario::for_machine`]: the VM guests and the checkpoint        |
    /// | `vm`         | the VM guests alone (1 GiB and 2 MiB folios, metadata pages)       |
    /// | `memfd`      | the checkpoint alone                                              |
    /// | `dense`      | `ram / 16` of contiguous order-0 pages (`dense_blocks`)          |
    /// | `fragmented` | every other page of `ram / 16` (`fragmented_blocks`)             |
    /// | `mixed`      | the VM guests, the checkpoint, and half of `dense` and `fragmented` |
    pub fn preset(kind: WorkloadKind, ram_bytes: u64) -> Self {
        let base = Self::for_machine(ram_bytes);
        let span_pages = (ram_bytes.min(REFERENCE_MACHINE) / 16 / PAGE_SIZE).max(16);
        let none = Self {
            vm_1g_folios: 0,
            vm_2m_folios: 0,
            memfd_bytes: 0,
            ..base.clone()
        };
        match kind {
            WorkloadKind::Default => base,
            WorkloadKind::Vm => Self {
                memfd_bytes: 0,
                ..base
            },
            WorkloadKind::Memfd => Self {
                vm_1g_folios: 0,
                vm_2m_folios: 0,
                ..base
            },
            WorkloadKind::Dense => Self {
                replay: dense_blocks(Pfn::default(), span_pages),
                ..none
            },
            WorkloadKind::Fragmented => Self {
                replay: fragmented_blocks(Pfn::default(), span_pages),
                ..none
            },
            WorkloadKind::Mixed => {
                let half = span_pages / 2;
                let mut replay = dense_blocks(Pfn::default(), half);
                // One page of gap: the two patterns stay apart.
                replay.extend(fragmented_blocks(
                    Pfn::new(half + 1).unwrap_or_default(),
                    half,
                ));
                Self { replay, ..base }
            }
        }
    }

    /// An upper bound on the manifest's entries: every folio counted, the
    /// checkpoint as if it were all order-0.
    pub fn max_blocks(&self) -> u64 {
        self.vm_1g_folios
            .saturating_add(self.vm_2m_folios)
            .saturating_add(2 * VM_META_PAGES)
            .saturating_add(self.memfd_bytes / PAGE_SIZE)
            .saturating_add(self.forget_pages)
            .saturating_add(u64::try_from(self.replay.len()).unwrap_or(u64::MAX))
    }

    /// Bytes of the workload's folios (forgotten pages included).
    pub fn bytes(&self) -> u64 {
        self.vm_1g_folios
            .saturating_mul(GIGANTIC_ORDER.bytes())
            .saturating_add(self.vm_2m_folios.saturating_mul(THP_ORDER.bytes()))
            .saturating_add(2 * VM_META_PAGES * PAGE_SIZE)
            .saturating_add(self.memfd_bytes)
            .saturating_add(self.forget_pages.saturating_mul(PAGE_SIZE))
            .saturating_add(self.replay.iter().map(|b| b.size()).sum::<u64>())
    }
}

/// The workload presets of `kho run --workload` ([`Scenario::preset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// The VM guests and the checkpoint ([`Scenario::for_machine`]).
    Default,
    /// VM guests: 1 GiB and 2 MiB folios, metadata pages.
    Vm,
    /// The memfd checkpoint from an aged buddy allocator.
    Memfd,
    /// One contiguous range of order-0 pages.
    Dense,
    /// Every other page: the worst case for ranges.
    Fragmented,
    /// Several of the above at once.
    Mixed,
}

impl WorkloadKind {
    /// Every preset.
    pub const ALL: [Self; 6] = [
        Self::Default,
        Self::Vm,
        Self::Memfd,
        Self::Dense,
        Self::Fragmented,
        Self::Mixed,
    ];

    /// The command-line name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Vm => "vm",
            Self::Memfd => "memfd",
            Self::Dense => "dense",
            Self::Fragmented => "fragmented",
            Self::Mixed => "mixed",
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is none of [`WorkloadKind::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown workload {0:?} (default, vm, memfd, dense, fragmented, mixed)")]
pub struct UnknownWorkload(pub String);

impl std::str::FromStr for WorkloadKind {
    type Err = UnknownWorkload;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownWorkload(s.to_owned()))
    }
}

/// `dense`: `pages` contiguous order-0 pages from `start`.
pub(crate) fn dense_blocks(start: Pfn, pages: u64) -> Vec<Block> {
    (0..pages)
        .filter_map(|i| start.checked_add(i))
        .filter_map(|p| Block::from_pfn(p, Order::ZERO).ok())
        .collect()
}

/// `fragmented`: every other page of a span of `span_pages` from `start`
/// (`span_pages / 2` order-0 blocks, none adjacent): as many ranges as
/// blocks, the worst case for range-based trackers.
pub(crate) fn fragmented_blocks(start: Pfn, span_pages: u64) -> Vec<Block> {
    (0..span_pages / 2)
        .filter_map(|i| start.checked_add(2 * i))
        .filter_map(|p| Block::from_pfn(p, Order::ZERO).ok())
        .collect()
}

// ---------------------------------------------------------------------------
// Replay: placing a list of blocks in the machine

/// Where a list of blocks goes in a machine whose free memory is `free`
/// (ascending, disjoint; the old kernel passes memblock's free ranges after
/// scratch and the kernel image are reserved). `blocks` must be sorted and
/// disjoint (a validated trace).
///
/// The rule keeps the pattern: adjacency and natural alignment.
///
/// 1. If every block already lies in free memory, nothing moves.
/// 2. Otherwise the blocks are cut into *runs*: maximal ranges of adjacent
///    blocks (each block starts where the previous one ends). Runs keep
///    their trace order and their internal layout; run `r`, whose largest
///    block is `A_r` bytes, moves by a multiple of `A_r` (so every block in
///    it stays naturally aligned) to the lowest address at or above a
///    cursor where it fits in one free range. The cursor starts at the
///    lowest free address and, after each run, is set one page past the
///    run's new end: two runs never become adjacent (the number of
///    coalesced ranges is unchanged) and no run overlaps another.
/// 3. If a run finds no room, the placement fails with
///    [`WorkloadError::TraceDoesNotFit`].
///
/// Cost: O(blocks + free ranges).
pub(crate) fn place_blocks(
    blocks: &[Block],
    free: &[PhysRange],
) -> Result<Vec<Block>, WorkloadError> {
    let fits_as_is = blocks.iter().all(|b| {
        b.range()
            .is_some_and(|r| free.iter().any(|f| f.contains_range(r)))
    });
    if fits_as_is {
        return Ok(blocks.to_vec());
    }
    let too_big = |needed: u64| WorkloadError::TraceDoesNotFit {
        blocks: u64::try_from(blocks.len()).unwrap_or(u64::MAX),
        bytes: blocks.iter().map(|b| b.size()).sum(),
        needed: PhysAddr::new(needed),
        free: free.iter().map(|f| f.size()).sum(),
    };
    let mut out = Vec::with_capacity(blocks.len());
    let mut fi = 0usize;
    let mut cursor = free.first().map_or(0, |f| f.start().as_u64());
    let mut i = 0usize;
    while i < blocks.len() {
        // The run blocks[i..j].
        let first = blocks[i];
        let start = first.phys().as_u64();
        let mut end = start.saturating_add(first.size());
        let mut align = first.size();
        let mut j = i + 1;
        while let Some(b) = blocks.get(j)
            && b.phys().as_u64() == end
        {
            end = end.saturating_add(b.size());
            align = align.max(b.size());
            j += 1;
        }
        let len = end - start;
        // The lowest `at >= cursor`, `at == start (mod align)`, in a free range.
        let placed = loop {
            let Some(f) = free.get(fi) else {
                return Err(too_big(cursor.saturating_add(len)));
            };
            let lo = cursor.max(f.start().as_u64());
            let delta = (start % align).wrapping_sub(lo % align) % align;
            let at = lo.checked_add(delta).ok_or_else(|| too_big(u64::MAX))?;
            if at.checked_add(len).is_some_and(|e| e <= f.end().as_u64()) {
                break at;
            }
            fi += 1;
        };
        for b in &blocks[i..j] {
            let phys = PhysAddr::new(placed + (b.phys().as_u64() - start));
            out.push(
                Block::new(phys, b.order()).map_err(|_| WorkloadError::NotABlock {
                    pfn: phys.pfn(),
                    order: b.order(),
                })?,
            );
        }
        cursor = placed + len + PAGE_SIZE;
        i = j;
    }
    Ok(out)
}

/// Boot time, after scratch and before the boot folios and
/// `memblock_free_all`: places `scenario.replay` in memblock's free memory
/// ([`place_blocks`]) and reserves the placed blocks (one sorted merge,
/// [`Memblock::memblock_reserve_sorted`]), so the buddy never sees them.
/// Each run is reserved with a guard page on either side (where that page
/// is free memory): the guards are neither preserved nor handed to the
/// buddy, so no later allocation of the old kernel (the tree's pages, the
/// manifest, another workload's folios) can land next to a run and glue
/// two runs together: the preserved memory has exactly the trace's
/// coalesced ranges. The placed blocks, to be filled and preserved once
/// the buddy is live ([`replay`]).
pub(crate) fn replay_reserve(
    memblock: &mut Memblock,
    scenario: &Scenario,
) -> Result<Vec<Block>, WorkloadError> {
    if scenario.replay.is_empty() {
        return Ok(Vec::new());
    }
    let free: Vec<PhysRange> = memblock
        .for_each_free_mem_range(crate::memblock::MemblockFlags::NONE)
        .collect();
    let placed = place_blocks(&scenario.replay, &free)?;
    let runs = kho::merge_ranges(placed.iter().filter_map(|b| b.range()).collect());
    let guarded = kho::merge_ranges(
        runs.iter()
            .filter_map(|r| {
                let start = r.start().checked_sub(PAGE_SIZE).unwrap_or(r.start());
                let end = r.end().checked_add(PAGE_SIZE).unwrap_or(r.end());
                PhysRange::new(start, end).ok()
            })
            .collect(),
    );
    let ranges = intersect(&guarded, &free);
    memblock
        .memblock_reserve_sorted(ranges, crate::memblock::MemblockFlags::NONE)
        .map_err(WorkloadError::Reserve)?;
    Ok(placed)
}

/// The intersection of two sorted lists of disjoint ranges, sorted.
fn intersect(a: &[PhysRange], b: &[PhysRange]) -> Vec<PhysRange> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        let start = x.start().max(y.start());
        let end = x.end().min(y.end());
        if let Ok(r) = PhysRange::new(start, end)
            && !r.is_empty()
        {
            out.push(r);
        }
        if x.end() <= y.end() {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The replayed blocks ([`replay_reserve`]) filled and preserved.
pub(crate) fn replay<M: PageAlloc + PageMap>(
    placed: &[Block],
    p: &mut Preserver<'_, '_, M>,
) -> Result<(), WorkloadError> {
    Ok(p.folios(placed)?)
}

// ---------------------------------------------------------------------------
// VM

/// Boot time, before `memblock_free_all`: guest 0's 1 GiB folios from
/// memblock (hugetlb's `alloc_bootmem_huge_page`).
pub(crate) fn vm_boot_alloc(
    memblock: &mut Memblock,
    folios: u64,
) -> Result<Vec<Pfn>, WorkloadError> {
    (0..folios)
        .map(|_| {
            alloc_bootmem_huge_page(memblock, GIGANTIC_ORDER).map_err(|source| {
                WorkloadError::Buddy {
                    what: "1 GiB boot folio",
                    source,
                }
            })
        })
        .collect()
}

/// Boot time, after `memblock_free_all` (as Linux's `hugetlb_init` ->
/// `gather_bootmem_prealloc`): the 1 GiB folios become folios.
pub(crate) fn vm_boot_prep(memmap: &MemMap<'_>, folios: &[Pfn]) -> Result<(), WorkloadError> {
    for &head in folios {
        prep_bootmem_huge_folio(memmap, head, GIGANTIC_ORDER)?;
    }
    Ok(())
}

/// What the VM workload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VmStats {
    /// Folios preserved (RAM and metadata).
    pub folios: u64,
    /// Their bytes.
    pub bytes: u64,
    /// With [`FolioOwner::Handler`], each existing guest's number and its
    /// order-0 pages (guest 0 first), filled and listed but left for its
    /// guest_memfd handler to preserve; empty with [`FolioOwner::Direct`].
    pub guest_pages: Vec<(usize, Vec<Block>)>,
}

/// Who preserves the folios a file handler can own (the memfd
/// checkpoint's folios, a guest's order-0 pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FolioOwner {
    /// The workload itself, directly (`kho_preserve_folio`, kho-v3 runs).
    Direct,
    /// The file's LUO handler (memfd, guest_memfd), after the workload
    /// filled and listed them: the workload does not preserve them.
    Handler,
}

fn alloc(buddy: &Buddy<'_>, order: Order, what: &'static str) -> Result<Pfn, WorkloadError> {
    buddy
        .folio_alloc(order)
        .map_err(|source| WorkloadError::Buddy { what, source })
}

/// The VM workload: guest 0's RAM is the boot-time 1 GiB folios `gigantic`,
/// guest 1's is `vm_2m_folios` THP folios from the buddy; each guest also
/// has [`VM_META_PAGES`] order-0 pages. Everything is filled and preserved.
/// No guest RAM at all (a scenario without VMs): nothing, not even metadata.
pub(crate) fn vm<M: PageAlloc + PageMap>(
    buddy: &Buddy<'_>,
    gigantic: &[Pfn],
    scenario: &Scenario,
    owner: FolioOwner,
    p: &mut Preserver<'_, '_, M>,
) -> Result<VmStats, WorkloadError> {
    if gigantic.is_empty() && scenario.vm_2m_folios == 0 {
        return Ok(VmStats::default());
    }
    let mut blocks = Vec::new();
    for &head in gigantic {
        blocks.push(block(head, GIGANTIC_ORDER)?);
    }
    let mut meta = [Vec::new(), Vec::new()];
    for _ in 0..VM_META_PAGES {
        meta[0].push(block(
            alloc(buddy, Order::ZERO, "guest 0 metadata")?,
            Order::ZERO,
        )?);
    }
    blocks.extend(meta[0].iter().copied());
    for _ in 0..scenario.vm_2m_folios {
        blocks.push(block(
            alloc(buddy, THP_ORDER, "guest 1 2 MiB folio")?,
            THP_ORDER,
        )?);
    }
    for _ in 0..VM_META_PAGES {
        meta[1].push(block(
            alloc(buddy, Order::ZERO, "guest 1 metadata")?,
            Order::ZERO,
        )?);
    }
    blocks.extend(meta[1].iter().copied());
    // A guest exists when it has RAM; only an existing guest's pages can
    // belong to its guest_memfd.
    let exists = [!gigantic.is_empty(), scenario.vm_2m_folios > 0];
    let guest_pages: Vec<(usize, Vec<Block>)> = match owner {
        FolioOwner::Direct => Vec::new(),
        FolioOwner::Handler => meta
            .iter()
            .zip(exists)
            .enumerate()
            .filter(|&(_, (_, e))| e)
            .map(|(i, (m, _))| (i, m.clone()))
            .collect(),
    };
    let handled: Vec<Block> = guest_pages
        .iter()
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    let direct: Vec<Block> = blocks
        .iter()
        .copied()
        .filter(|b| !handled.contains(b))
        .collect();
    p.folios(&direct)?;
    p.listed(&handled)?;
    let stats = VmStats {
        folios: u64::try_from(blocks.len()).unwrap_or(u64::MAX),
        bytes: blocks.iter().map(|b| b.size()).sum(),
        guest_pages,
    };
    Ok(stats)
}

// ---------------------------------------------------------------------------
// memfd checkpoint

/// What the checkpoint workload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MemfdStats {
    /// Folios preserved, per order 0..=4.
    pub folios: [u64; 5],
    /// Their bytes.
    pub bytes: u64,
    /// Aging allocations and frees.
    pub churn_ops: u64,
    /// Most pages the churn held at once.
    pub churn_peak_pages: u64,
    /// The checkpoint's folios, in allocation order.
    pub blocks: Vec<Block>,
}

/// The aging churn: blocks of orders 0..=3 held, released at random.
struct Churn<'b, 'm> {
    buddy: &'b Buddy<'m>,
    held: Vec<(Pfn, Order)>,
    held_pages: u64,
    peak: u64,
    ops: u64,
}

impl Churn<'_, '_> {
    fn alloc(&mut self, rng: &mut Rng) -> Result<(), WorkloadError> {
        let order = Order::new(u8::try_from(rng.below(4)).unwrap_or(0));
        let pfn = alloc(self.buddy, order, "aging churn")?;
        // Stale data the old kernel never preserves.
        if let Some(w) = self.buddy.memmap().mem().words(pfn.phys(), 1)?.first() {
            w.store(CHURN_MARK | pfn.as_u64(), Ordering::Relaxed);
        }
        self.held.push((pfn, order));
        self.held_pages += order.pages();
        self.peak = self.peak.max(self.held_pages);
        self.ops += 1;
        Ok(())
    }

    fn free(&mut self, rng: &mut Rng) -> Result<(), WorkloadError> {
        let n = u64::try_from(self.held.len()).unwrap_or(0);
        let i = usize::try_from(rng.below(n)).unwrap_or(0);
        if i < self.held.len() {
            let (pfn, order) = self.held.swap_remove(i);
            self.release(pfn, order)?;
        }
        Ok(())
    }

    fn release(&mut self, pfn: Pfn, order: Order) -> Result<(), WorkloadError> {
        self.buddy
            .free_pages(pfn, order)
            .map_err(|source| WorkloadError::Buddy {
                what: "aging churn free",
                source,
            })?;
        self.held_pages -= order.pages();
        self.ops += 1;
        Ok(())
    }

    /// One random step: allocate while under `target` pages (65 %), else
    /// free one.
    fn step(&mut self, rng: &mut Rng, target: u64) -> Result<(), WorkloadError> {
        if self.held.is_empty() || (self.held_pages < target && rng.chance(65)) {
            self.alloc(rng)
        } else {
            self.free(rng)
        }
    }

    fn release_all(&mut self) -> Result<(), WorkloadError> {
        while let Some((pfn, order)) = self.held.pop() {
            self.release(pfn, order)?;
        }
        Ok(())
    }
}

/// The memfd checkpoint: an aging phase (random churn of orders 0..=3
/// holding up to half the checkpoint's size), then the checkpoint's folios
/// (`memfd_order0_percent` of the bytes in order 0, the rest in orders
/// 2..=4, interleaved at random) with churn continuing between them (one
/// step after about every fourth folio), then the churn released. Every
/// checkpoint folio is filled and preserved. An empty checkpoint does
/// nothing (no aging either).
pub(crate) fn memfd_checkpoint<M: PageAlloc + PageMap>(
    buddy: &Buddy<'_>,
    scenario: &Scenario,
    seed: u64,
    owner: FolioOwner,
    p: &mut Preserver<'_, '_, M>,
) -> Result<MemfdStats, WorkloadError> {
    if scenario.memfd_bytes == 0 {
        return Ok(MemfdStats::default());
    }
    let mut rng = Rng::new(seed, MEMFD_STREAM);
    let pages = scenario.memfd_bytes / PAGE_SIZE;
    let order0_pages = pages * u64::from(scenario.memfd_order0_percent.min(100)) / 100;
    let target = (pages / 2).max(16);
    let mut churn = Churn {
        buddy,
        held: Vec::new(),
        held_pages: 0,
        peak: 0,
        ops: 0,
    };
    for _ in 0..pages.max(64) {
        churn.step(&mut rng, target)?;
    }

    let mut stats = MemfdStats::default();
    let mut blocks = Vec::new();
    let (mut left0, mut left_small) = (order0_pages, pages - order0_pages);
    let (lo, hi) = MTHP_ORDERS;
    while left0 + left_small > 0 {
        let order = if rng.below(left0 + left_small) < left0 {
            left0 -= 1;
            Order::ZERO
        } else {
            let want = lo + u8::try_from(rng.below(u64::from(hi - lo + 1))).unwrap_or(0);
            // The tail (under 4 pages): the largest order that still fits,
            // down to 1 and 0.
            let mut o = Order::new(want);
            while o.pages() > left_small && o.as_u8() > 0 {
                o = Order::new(o.as_u8() - 1);
            }
            left_small -= o.pages();
            o
        };
        let b = block(alloc(buddy, order, "checkpoint folio")?, order)?;
        blocks.push(b);
        if let Some(n) = stats.folios.get_mut(usize::from(order.as_u8())) {
            *n += 1;
        }
        stats.bytes += b.size();
        if rng.chance(25) {
            churn.step(&mut rng, target)?;
        }
    }
    match owner {
        FolioOwner::Direct => p.folios(&blocks)?,
        FolioOwner::Handler => p.listed(&blocks)?,
    }
    stats.blocks = blocks;
    stats.churn_peak_pages = churn.peak;
    churn.release_all()?;
    stats.churn_ops = churn.ops;
    Ok(stats)
}

/// Fault injection: `n` order-0 pages written and listed but not preserved.
pub(crate) fn forget_pages<M: PageAlloc + PageMap>(
    buddy: &Buddy<'_>,
    n: u64,
    p: &mut Preserver<'_, '_, M>,
) -> Result<(), WorkloadError> {
    for _ in 0..n {
        p.forget(block(
            alloc(buddy, Order::ZERO, "forgotten page")?,
            Order::ZERO,
        )?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
