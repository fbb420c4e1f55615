//! `kho_memory_init`: the preserved memory kept from the allocators, per
//! restore [`Strategy`], and the head pages written (Linux:
//! `kho_memory_init()` and `kho_preserved_memory_reserve()` in
//! `kernel/liveupdate/kexec_handover.c`: the `per-block` strategy).
//!
//! Three parts, each a trait or a function, so that every tracker and
//! every caller shares one accounting:
//!
//! - a [`PreservedMap`] reads a tracker's map: ours is [`RadixMap`] (the
//!   radix tree through the validating walker); kho-lab's peers read their
//!   own formats;
//! - a [`ReservationSink`] takes the reservations and the head pages: the
//!   machine's [`MachineSink`] (memblock and the memmap), or a bare
//!   [`Memblock`] (the bench's sweep: no memmap, no heads);
//! - [`reserve_preserved`] (ours) is the accounting: one match arm per
//!   strategy, timed as below.
//!
//! # The restore strategies (DESIGN.md section 4) and how they are timed
//!
//! | strategy    | memblock work                                   | `walk`                                   | `memblock`        |
//! |-------------|-------------------------------------------------|------------------------------------------|-------------------|
//! | `per-block` | reserve + mark noinit per extent, as read; heads written in that pass | a read-only pass | the pass - `walk` |
//! | `coalesced` | reserve + mark noinit per coalesced range       | the coalesced list, every head written in the same pass | the calls |
//! | `bulk`      | one `memblock_reserve_sorted(.., RSRV_NOINIT)`  | same                                     | the one merge     |
//! | `skip`      | none: the ranges are [`crate::kho::Kho::skip_ranges`] | same                               | 0                 |
//!
//! The ranged strategies write the head pages from the runs the coalescing
//! walk merges ([`kho::RadixReader::coalesce_observed`]; a peer's map from
//! its extents as read): one pass over the metadata, and for the radix
//! tree the heads come in ascending address, so the memmap is written in
//! order. The reservations still wait for the whole map.
//!
//! An extent is what the tracker's reader hands over as one piece: a block
//! for the radix tree and the xarrays (mainline, 6.16), a record for maple.
//! Every strategy reads the whole map before it changes memblock (the
//! read-only pass of `per-block` validates it), so a corrupt map never
//! leaves half the preserved memory reserved. `skip` leaves the ranges to
//! `memblock_free_all_except` (ours: not Linux's; see DESIGN.md section 4).
//!
//! A new strategy is one arm of [`reserve_preserved`]; any map feeds every
//! arm (the list of coalesced ranges defaults to the extents merged).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use kho::{
    Block, NodeBudget, NodeSet, Order, PageMap, PhysAddr, PhysRange, RadixReader, RamMap, WalkError,
};
use serde::{Deserialize, Serialize};

use super::restore::KhoPageInfo;
use super::salvage::{DamageReport, SalvageMap, reserve_spans};
use super::{Kho, KhoError, KhoIn, OnCorruption, PeerScheme};
use crate::arena::prefetch;
use crate::boot::Machine;
use crate::memblock::{Memblock, MemblockError, MemblockFlags, NUMA_NO_NODE};
use crate::memmap::{MemMap, MemmapError, StructPage};

/// How many head pages the head pass looks ahead.
const HEADS_AHEAD: usize = 32;

/// A restore strategy of the new kernel (DESIGN.md section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// One `memblock_reserve` + `memblock_reserved_mark_noinit` per extent
    /// as the map is read: per block (mainline).
    PerBlock,
    /// One reservation per maximal coalesced range.
    Coalesced,
    /// memblock.reserved built in one linear merge.
    Bulk,
    /// Nothing reserved; the buddy hand-over skips preserved ranges.
    Skip,
    /// The smallest patch to mainline, step (a): adjacent blocks of one
    /// order merged in the walk callback, then mainline's two calls per
    /// merged range.
    MainlineFixA,
    /// Steps (a) + (b): each merged range reserved by one
    /// `__memblock_reserve(.., MEMBLOCK_RSRV_NOINIT)` (no isolate pass).
    MainlineFixAb,
    /// Steps (a) + (b) + (c): and `memblock_add_range` finds its first
    /// candidate region by binary search.
    MainlineFix,
}

impl Strategy {
    /// Every strategy, in report order.
    pub const ALL: [Strategy; 7] = [
        Self::PerBlock,
        Self::MainlineFixA,
        Self::MainlineFixAb,
        Self::MainlineFix,
        Self::Coalesced,
        Self::Bulk,
        Self::Skip,
    ];

    /// The command-line and report name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PerBlock => "per-block",
            Self::Coalesced => "coalesced",
            Self::Bulk => "bulk",
            Self::Skip => "skip",
            Self::MainlineFixA => "mainline-fix-a",
            Self::MainlineFixAb => "mainline-fix-ab",
            Self::MainlineFix => "mainline-fix",
        }
    }

    /// Every strategy's name, in report order.
    pub const NAMES: [&'static str; 7] = [
        Self::PerBlock.as_str(),
        Self::MainlineFixA.as_str(),
        Self::MainlineFixAb.as_str(),
        Self::MainlineFix.as_str(),
        Self::Coalesced.as_str(),
        Self::Bulk.as_str(),
        Self::Skip.as_str(),
    ];

    /// Mainline or one of the steps of its smallest fix: reservations per
    /// extent (or per same-order run) in walk order, heads written as they
    /// go, a read-only validating pass first.
    pub const fn is_mainline(self) -> bool {
        matches!(
            self,
            Self::PerBlock | Self::MainlineFixA | Self::MainlineFixAb | Self::MainlineFix
        )
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is none of [`Strategy::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown strategy {0:?} (per-block, mainline-fix-a, mainline-fix-ab, mainline-fix, \
     coalesced, bulk, skip)"
)]
pub struct UnknownStrategy(pub String);

impl std::str::FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| UnknownStrategy(s.to_owned()))
    }
}

// ---------------------------------------------------------------------------
// The sink

/// Why the sink refused a reservation or a head page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// memblock refused.
    #[error("memblock, {what} {range}: {source}")]
    Memblock {
        /// What was being done.
        what: &'static str,
        /// On which range.
        range: PhysRange,
        /// Why it failed.
        source: MemblockError,
    },
    /// A head page's struct page could not be reached.
    #[error("struct page of {phys}: {source}")]
    Memmap {
        /// The head's address.
        phys: PhysAddr,
        /// Why.
        source: MemmapError,
    },
}

/// Where the accounting goes: `memblock.reserved` and the head pages.
pub trait ReservationSink {
    /// `memblock_reserve` + `memblock_reserved_mark_noinit` of `size`
    /// bytes at `base` (mainline's pair of calls).
    fn reserve_noinit(&mut self, base: PhysAddr, size: u64) -> Result<(), ReserveError>;
    /// `mainline-fix` (b): one `__memblock_reserve(base, size, nid,
    /// MEMBLOCK_RSRV_NOINIT)`; with `bsearch`, step (c) as well.
    /// By default, [`ReservationSink::reserve_noinit`] (a sink that does not
    /// model memblock's calls sees the same range either way).
    fn reserve_flagged_noinit(
        &mut self,
        base: PhysAddr,
        size: u64,
        bsearch: bool,
    ) -> Result<(), ReserveError> {
        let _ = bsearch;
        self.reserve_noinit(base, size)
    }
    /// **Ours**: `memblock_reserve_sorted(ranges, RSRV_NOINIT)`, one linear
    /// merge of the sorted, disjoint `ranges`.
    fn reserve_sorted_noinit(&mut self, ranges: &[PhysRange]) -> Result<(), ReserveError>;
    /// `page->private` = [`KhoPageInfo`] of `block`'s head page, now.
    fn write_head(&mut self, block: Block) -> Result<(), ReserveError>;
    /// The same in a pass over every head, which may batch the writes
    /// until [`ReservationSink::flush_heads`] (the machine prefetches).
    fn queue_head(&mut self, block: Block) -> Result<(), ReserveError> {
        self.write_head(block)
    }
    /// Writes the queued heads.
    fn flush_heads(&mut self) {}
    /// Regions of `memblock.reserved` now.
    fn reserved_regions(&self) -> u64;
}

fn memblock_err(what: &'static str, range: PhysRange) -> impl Fn(MemblockError) -> ReserveError {
    move |source| ReserveError::Memblock {
        what,
        range,
        source,
    }
}

/// A bare memblock (no memmap): reservations only, heads not written (the
/// bench's sweep, where every strategy would write the same heads).
impl ReservationSink for Memblock {
    fn reserve_noinit(&mut self, base: PhysAddr, size: u64) -> Result<(), ReserveError> {
        let range = PhysRange::from_start_size(base, size).unwrap_or_default();
        self.memblock_reserve(base, size)
            .map_err(memblock_err("reserving", range))?;
        self.memblock_reserved_mark_noinit(base, size)
            .map_err(memblock_err("marking noinit", range))
    }

    fn reserve_flagged_noinit(
        &mut self,
        base: PhysAddr,
        size: u64,
        bsearch: bool,
    ) -> Result<(), ReserveError> {
        let range = PhysRange::from_start_size(base, size).unwrap_or_default();
        self.set_add_range_bsearch(bsearch);
        // The node memblock_reserve gives, so that regions merge alike.
        let r = self.__memblock_reserve(base, size, NUMA_NO_NODE, MemblockFlags::RSRV_NOINIT);
        self.set_add_range_bsearch(false);
        r.map_err(memblock_err("reserving noinit", range))
    }

    fn reserve_sorted_noinit(&mut self, ranges: &[PhysRange]) -> Result<(), ReserveError> {
        let all = PhysRange::new(
            ranges.first().map_or(PhysAddr::ZERO, |r| r.start()),
            ranges.last().map_or(PhysAddr::ZERO, |r| r.end()),
        )
        .unwrap_or_default();
        self.memblock_reserve_sorted(ranges.iter().copied(), MemblockFlags::RSRV_NOINIT)
            .map_err(memblock_err("bulk reserving", all))
    }

    fn write_head(&mut self, _: Block) -> Result<(), ReserveError> {
        Ok(())
    }

    fn reserved_regions(&self) -> u64 {
        self.reserved.cnt() as u64
    }
}

/// The machine's sink: its memblock, and the head pages in its memmap.
/// Queued heads are looked up and prefetched `HEADS_AHEAD` blocks
/// before their store (head pages are scattered over the memmap: the cache
/// and TLB misses overlap).
pub struct MachineSink<'a, 'm> {
    memblock: &'a mut Memblock,
    memmap: &'a MemMap<'m>,
    ahead: VecDeque<(StructPage<'m>, KhoPageInfo)>,
}

impl std::fmt::Debug for MachineSink<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineSink")
            .field("queued", &self.ahead.len())
            .finish_non_exhaustive()
    }
}

impl<'a, 'm> MachineSink<'a, 'm> {
    /// The sink of `memblock` and `memmap`.
    pub fn new(memblock: &'a mut Memblock, memmap: &'a MemMap<'m>) -> Self {
        Self {
            memblock,
            memmap,
            ahead: VecDeque::with_capacity(HEADS_AHEAD),
        }
    }

    /// The head's struct page, through `kho_get_preserved_page` (which,
    /// under deferred init, initialises the block's struct pages first).
    fn head(&self, block: Block) -> Result<StructPage<'m>, ReserveError> {
        self.memmap
            .kho_get_preserved_page(block)
            .map_err(|source| ReserveError::Memmap {
                phys: block.phys(),
                source,
            })
    }
}

impl ReservationSink for MachineSink<'_, '_> {
    fn reserve_noinit(&mut self, base: PhysAddr, size: u64) -> Result<(), ReserveError> {
        self.memblock.reserve_noinit(base, size)
    }

    fn reserve_flagged_noinit(
        &mut self,
        base: PhysAddr,
        size: u64,
        bsearch: bool,
    ) -> Result<(), ReserveError> {
        self.memblock.reserve_flagged_noinit(base, size, bsearch)
    }

    fn reserve_sorted_noinit(&mut self, ranges: &[PhysRange]) -> Result<(), ReserveError> {
        self.memblock.reserve_sorted_noinit(ranges)
    }

    fn write_head(&mut self, block: Block) -> Result<(), ReserveError> {
        KhoPageInfo::new(block.order()).write(&self.head(block)?);
        Ok(())
    }

    fn queue_head(&mut self, block: Block) -> Result<(), ReserveError> {
        let page = self.head(block)?;
        prefetch(page.private_word());
        if self.ahead.len() == HEADS_AHEAD
            && let Some((p, info)) = self.ahead.pop_front()
        {
            info.write(&p);
        }
        self.ahead
            .push_back((page, KhoPageInfo::new(block.order())));
        Ok(())
    }

    fn flush_heads(&mut self) {
        for (p, info) in self.ahead.drain(..) {
            info.write(&p);
        }
    }

    fn reserved_regions(&self) -> u64 {
        self.memblock.reserved_regions()
    }
}

/// A [`ReservationSink`] that records: the blocks in the order their
/// heads were written and the reservations in call order (the lab's
/// oracle side).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorder {
    /// Heads written.
    pub heads: Vec<Block>,
    /// Reservations made.
    pub reserved: Vec<PhysRange>,
}

impl ReservationSink for Recorder {
    fn reserve_noinit(&mut self, base: PhysAddr, size: u64) -> Result<(), ReserveError> {
        self.reserved
            .push(PhysRange::from_start_size(base, size).unwrap_or_default());
        Ok(())
    }

    fn reserve_sorted_noinit(&mut self, ranges: &[PhysRange]) -> Result<(), ReserveError> {
        self.reserved.extend_from_slice(ranges);
        Ok(())
    }

    fn write_head(&mut self, block: Block) -> Result<(), ReserveError> {
        self.heads.push(block);
        Ok(())
    }

    fn reserved_regions(&self) -> u64 {
        self.reserved.len() as u64
    }
}

// ---------------------------------------------------------------------------
// The map

/// What a tracker's reader hands over as one piece: `count` contiguous
/// blocks of one order from `first` (one block, or a maple record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    first: Block,
    count: u64,
}

impl Extent {
    /// One block.
    pub const fn block(block: Block) -> Self {
        Self {
            first: block,
            count: 1,
        }
    }

    /// `count` blocks of `first`'s order from `first`: `None` if `count`
    /// is 0 or the extent runs past the address space.
    pub fn new(first: Block, count: u64) -> Option<Self> {
        let size = count.checked_mul(first.size())?;
        first.phys().as_u64().checked_add(size)?;
        (count > 0).then_some(Self { first, count })
    }

    /// Where it starts.
    pub const fn phys(self) -> PhysAddr {
        self.first.phys()
    }

    /// Its blocks' order.
    pub const fn order(self) -> Order {
        self.first.order()
    }

    /// Its bytes.
    pub const fn size(self) -> u64 {
        self.count.saturating_mul(self.first.size())
    }

    /// The bytes it covers (`None` if it ends at the top of the address
    /// space).
    pub fn range(self) -> Option<PhysRange> {
        PhysRange::from_start_size(self.phys(), self.size()).ok()
    }

    /// Its blocks, ascending.
    pub fn blocks(self) -> impl Iterator<Item = Block> {
        let (start, step, order) = (self.phys().as_u64(), self.first.size(), self.order());
        // `new` checked that the last block's end fits in 64 bits.
        (0..self.count).map(move |i| {
            Block::containing(
                PhysAddr::new(start.wrapping_add(i.wrapping_mul(step))),
                order,
            )
        })
    }
}

/// What reading a whole map found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapSummary {
    /// Preserved blocks.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Nodes of the map entered (radix nodes; 0 where not counted).
    pub nodes: u64,
}

impl MapSummary {
    /// Counts `e`.
    pub fn add(&mut self, e: Extent) {
        self.blocks = self.blocks.saturating_add(e.count);
        self.bytes = self.bytes.saturating_add(e.size());
    }
}

/// A tracker's preserved-memory map as the new kernel reads it. Every
/// method reads (and validates) the whole map, and may be called again.
pub trait PreservedMap {
    /// The reader's error, into which the sink's converts.
    type Error: From<ReserveError>;

    /// Calls `f` on every extent, in the tracker's read order; stops at the
    /// first error, the map's or `f`'s.
    fn for_each_extent<F>(&mut self, f: F) -> Result<MapSummary, Self::Error>
    where
        F: FnMut(Extent) -> Result<(), ReserveError>;

    /// The preserved memory as maximal ranges (sorted, disjoint, touching
    /// ones merged), with what was read, calling `head` on every block (for
    /// its head page) in the same pass; by default, the extents merged.
    /// Nothing is reserved here: a map that fails part way leaves the
    /// heads of the blocks read before the failure written, as the
    /// per-block pass leaves its reservations.
    fn coalesced<F>(&mut self, mut head: F) -> Result<(Vec<PhysRange>, MapSummary), Self::Error>
    where
        F: FnMut(Block) -> Result<(), ReserveError>,
    {
        let mut ranges = Vec::new();
        let summary = self.for_each_extent(|e| {
            ranges.extend(e.range());
            e.blocks().try_for_each(&mut head)
        })?;
        Ok((kho::merge_ranges(ranges), summary))
    }
}

/// Why [`RadixMap`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RadixMapError {
    /// The tree is corrupt.
    #[error("preserved-memory map at {root}: {source}")]
    Walk {
        /// The radix root.
        root: PhysAddr,
        /// The first broken invariant.
        source: WalkError,
    },
    /// The sink refused.
    #[error(transparent)]
    Reserve(#[from] ReserveError),
}

impl From<RadixMapError> for KhoError {
    fn from(e: RadixMapError) -> Self {
        match e {
            RadixMapError::Walk { root, source } => Self::Walk { root, source },
            RadixMapError::Reserve(e) => Self::Reserve(e),
        }
    }
}

/// Ours: the radix tree (`kho-v2`, `kho-v3`) at `root`, read by the
/// validating walker over `ram`. Extents are blocks, in walk order.
#[derive(Debug)]
pub struct RadixMap<'m, 'r, M: PageMap + ?Sized> {
    mem: &'m M,
    ram: RamMap<'r>,
    root: PhysAddr,
}

impl<'m, 'r, M: PageMap + ?Sized> RadixMap<'m, 'r, M> {
    /// The tree at `root` in `mem`.
    pub fn new(mem: &'m M, ram: RamMap<'r>, root: PhysAddr) -> Self {
        Self { mem, ram, root }
    }

    fn open(&self) -> Result<RadixReader<'m, 'r, M, NodeSet>, RadixMapError> {
        RadixReader::open(
            self.mem,
            self.ram,
            self.root,
            NodeSet::new(),
            NodeBudget::for_ram(&self.ram),
        )
        .map_err(|e| self.walk_err(e))
    }

    fn walk_err(&self, source: WalkError) -> RadixMapError {
        RadixMapError::Walk {
            root: self.root,
            source,
        }
    }
}

impl<M: PageMap + ?Sized> PreservedMap for RadixMap<'_, '_, M> {
    type Error = RadixMapError;

    fn for_each_extent<F>(&mut self, mut f: F) -> Result<MapSummary, RadixMapError>
    where
        F: FnMut(Extent) -> Result<(), ReserveError>,
    {
        let mut walk = self.open()?.walk();
        for b in walk.by_ref() {
            f(Extent::block(b.map_err(|e| self.walk_err(e))?))?;
        }
        Ok(MapSummary {
            blocks: walk.counts().total(),
            bytes: walk.counts().bytes(),
            nodes: walk.nodes(),
        })
    }

    /// The coalescing walker ([`kho::RadixReader::coalesce_observed`]): the
    /// heads of each run it merges, in the same pass, in ascending address
    /// (the memmap in order).
    fn coalesced<F>(&mut self, mut head: F) -> Result<(Vec<PhysRange>, MapSummary), RadixMapError>
    where
        F: FnMut(Block) -> Result<(), ReserveError>,
    {
        let mut failed: Option<ReserveError> = None;
        let mut c = self
            .open()?
            .coalesce_observed(|order: Order, r: PhysRange| {
                if failed.is_some() {
                    return;
                }
                let size = order.bytes();
                let mut p = r.start();
                while p < r.end() {
                    let Ok(b) = Block::new(p, order) else {
                        return;
                    };
                    if let Err(e) = head(b) {
                        failed = Some(e);
                        return;
                    }
                    p = PhysAddr::new(p.as_u64() + size);
                }
            });
        let ranges = c.by_ref().collect::<Result<Vec<_>, _>>();
        let summary = MapSummary {
            blocks: c.summary().counts().total(),
            bytes: c.summary().bytes(),
            nodes: c.nodes(),
        };
        drop(c);
        let ranges = ranges.map_err(|e| self.walk_err(e))?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok((ranges, summary))
    }
}

// ---------------------------------------------------------------------------
// The accounting

/// What [`reserve_preserved`] (and [`kho_memory_init`]) did and what it
/// cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KhoMemoryInitStats {
    /// Preserved blocks read.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Maximal coalesced ranges (0 for `per-block`, which does not
    /// coalesce).
    pub ranges: u64,
    /// Nodes of the map entered by the (first) read.
    pub nodes: u64,
    /// Extents or ranges handed to memblock (0 for `skip`).
    pub reservations: u64,
    /// Peak bytes of the accounting's own heap (the coalesced list),
    /// beyond the map it reads in place.
    pub peak_bytes: u64,
    /// The read (see the module doc for what each strategy counts; the
    /// ranged strategies write the head pages in it).
    pub walk: Duration,
    /// The memblock work.
    pub memblock: Duration,
    /// Regions of `memblock.reserved` afterwards.
    pub reserved_regions: u64,
    /// Scratch pageblocks `kho_release_scratch` marks `MIGRATE_CMA`.
    pub cma_pageblocks: u64,
}

impl KhoMemoryInitStats {
    /// The whole accounting: walk + memblock.
    pub fn time(&self) -> Duration {
        self.walk + self.memblock
    }

    fn read(&mut self, s: MapSummary) {
        self.blocks = s.blocks;
        self.bytes = s.bytes;
        self.nodes = s.nodes;
    }
}

/// **Ours**: accounts the preserved memory of `map` in `sink` per
/// `strategy` (see the module doc), writing every head page. Returns what
/// it did, and for `skip` the ranges the buddy hand-over must skip (empty
/// otherwise). Nothing is reserved unless the whole map reads.
pub fn reserve_preserved<M, S>(
    strategy: Strategy,
    map: &mut M,
    sink: &mut S,
) -> Result<(KhoMemoryInitStats, Vec<PhysRange>), M::Error>
where
    M: PreservedMap + ?Sized,
    S: ReservationSink + ?Sized,
{
    let mut st = KhoMemoryInitStats::default();
    let mut skip = Vec::new();
    match strategy {
        // Mainline: a read-only pass, then reserve, mark noinit and write
        // the heads per extent, in read order.
        Strategy::PerBlock => {
            let t = Instant::now();
            st.read(map.for_each_extent(|_| Ok(()))?);
            st.walk = t.elapsed();
            let t = Instant::now();
            let mut n = 0u64;
            map.for_each_extent(|e| {
                sink.reserve_noinit(e.phys(), e.size())?;
                n += 1;
                e.blocks().try_for_each(|b| sink.write_head(b))
            })?;
            st.reservations = n;
            st.memblock = t.elapsed().saturating_sub(st.walk);
        }
        // The smallest fix to mainline: the same pass, but adjacent blocks
        // of one order (the walk yields each order ascending) are merged
        // before they are reserved; heads still written per block.
        Strategy::MainlineFixA | Strategy::MainlineFixAb | Strategy::MainlineFix => {
            let t = Instant::now();
            st.read(map.for_each_extent(|_| Ok(()))?);
            st.walk = t.elapsed();
            let t = Instant::now();
            let mut n = 0u64;
            let mut run: Option<(PhysRange, Order)> = None;
            map.for_each_extent(|e| {
                let Some(r) = e.range() else {
                    return Ok(());
                };
                run = match run {
                    Some((cur, o)) if o == e.order() && cur.end() == r.start() => {
                        Some((PhysRange::new(cur.start(), r.end()).unwrap_or(cur), o))
                    }
                    Some((cur, _)) => {
                        reserve_run(sink, strategy, cur)?;
                        n += 1;
                        Some((r, e.order()))
                    }
                    None => Some((r, e.order())),
                };
                e.blocks().try_for_each(|b| sink.write_head(b))
            })?;
            if let Some((cur, _)) = run {
                reserve_run(sink, strategy, cur)?;
                n += 1;
            }
            st.reservations = n;
            st.memblock = t.elapsed().saturating_sub(st.walk);
        }
        Strategy::Coalesced => {
            let ranges = coalesce_and_write_heads(map, sink, &mut st)?;
            let t = Instant::now();
            for r in &ranges {
                sink.reserve_noinit(r.start(), r.size())?;
            }
            st.reservations = ranges.len() as u64;
            st.memblock = t.elapsed();
        }
        Strategy::Bulk => {
            let ranges = coalesce_and_write_heads(map, sink, &mut st)?;
            let t = Instant::now();
            sink.reserve_sorted_noinit(&ranges)?;
            st.reservations = ranges.len() as u64;
            st.memblock = t.elapsed();
        }
        Strategy::Skip => {
            let ranges = coalesce_and_write_heads(map, sink, &mut st)?;
            let t = Instant::now();
            skip = ranges;
            st.memblock = t.elapsed();
        }
    }
    st.reserved_regions = sink.reserved_regions();
    Ok((st, skip))
}

/// One same-order run of a `mainline-fix` step: (a) mainline's two calls,
/// (b) one `__memblock_reserve` with `RSRV_NOINIT`, (c) the same with the
/// binary search.
fn reserve_run<S>(sink: &mut S, strategy: Strategy, r: PhysRange) -> Result<(), ReserveError>
where
    S: ReservationSink + ?Sized,
{
    match strategy {
        Strategy::MainlineFixA => sink.reserve_noinit(r.start(), r.size()),
        _ => sink.reserve_flagged_noinit(r.start(), r.size(), strategy == Strategy::MainlineFix),
    }
}

/// The first pass of the ranged strategies: the map as coalesced ranges,
/// every head page written on the way (`walk`).
fn coalesce_and_write_heads<M, S>(
    map: &mut M,
    sink: &mut S,
    st: &mut KhoMemoryInitStats,
) -> Result<Vec<PhysRange>, M::Error>
where
    M: PreservedMap + ?Sized,
    S: ReservationSink + ?Sized,
{
    let t = Instant::now();
    let (ranges, summary) = map.coalesced(|b| sink.queue_head(b))?;
    sink.flush_heads();
    st.read(summary);
    st.ranges = ranges.len() as u64;
    st.peak_bytes = (ranges.capacity() * size_of::<PhysRange>()) as u64;
    st.walk = t.elapsed();
    Ok(ranges)
}

// ---------------------------------------------------------------------------
// kho_memory_init

/// `kho_memory_init` (with `kho_preserved_memory_reserve`): releases the
/// scratch areas (`kho_release_scratch`), reads the preserved-memory map
/// and accounts it per `strategy` with [`reserve_preserved`] into the
/// machine's memblock and memmap (a peer scheme accounts its own way:
/// [`PeerScheme::reserve_preserved`]). Scratch-only allocation ends in
/// `memblock_free_all`, as in Linux.
///
/// Runs as Linux runs it (torvalds/linux@40735a68: `mm_core_init` calls
/// `kho_memory_init` just before `memblock_free_all`): after `memmap_init`
/// has initialised every struct page, so the head info it writes stays
/// (with [`crate::memmap::MemmapMode::Lazy`], ours, before `memmap_init`).
/// On an error KHO is disabled ([`Kho::error`]) and the boot goes on, as
/// Linux does when `kho_mem_retrieve` fails (it clears `kho_in.fdt_phys`):
/// the reservations made before the error and the scratch marks stay.
pub fn kho_memory_init(
    machine: &mut Machine<'_>,
    kho: &mut Kho,
    strategy: Strategy,
) -> KhoMemoryInitStats {
    let Some(incoming) = kho.incoming.clone() else {
        if let Some(scratch) = kho.unreadable_fdt.take() {
            // Salvage: the root FDT is unusable, the scratch areas known.
            let cma_pageblocks = kho_release_scratch(machine);
            let fdt_error = kho.error.clone();
            let error = fdt_error.map_or_else(String::new, |e| e.to_string());
            kho.damage_reserved =
                salvage_all(machine, kho, &scratch, PhysAddr::ZERO, error).unwrap_or(0);
            return KhoMemoryInitStats {
                reserved_regions: machine.memblock.reserved_regions(),
                cma_pageblocks,
                ..KhoMemoryInitStats::default()
            };
        }
        return KhoMemoryInitStats {
            reserved_regions: machine.memblock.reserved_regions(),
            ..KhoMemoryInitStats::default()
        };
    };
    let cma_pageblocks = kho_release_scratch(machine);
    if kho.on_corruption == OnCorruption::Salvage {
        return salvage_memory_init(machine, kho, &incoming, strategy, cma_pageblocks);
    }
    match memory_init(machine, &incoming, strategy, kho.scheme.as_deref()) {
        Ok(done) => accounted(kho, done, cma_pageblocks),
        Err(e) => {
            kho.fail(e);
            KhoMemoryInitStats {
                reserved_regions: machine.memblock.reserved_regions(),
                cma_pageblocks,
                ..KhoMemoryInitStats::default()
            }
        }
    }
}

/// A map accounted in full: its skip ranges kept for the buddy hand-over,
/// its statistics with the scratch pageblocks.
fn accounted(
    kho: &mut Kho,
    (stats, skip): (KhoMemoryInitStats, Vec<PhysRange>),
    cma_pageblocks: u64,
) -> KhoMemoryInitStats {
    kho.skip = skip;
    KhoMemoryInitStats {
        cma_pageblocks,
        ..stats
    }
}

/// **Ours**: [`kho_memory_init`] under [`OnCorruption::Salvage`] (see
/// `salvage`'s module doc): the radix tree read by the salvage walk, the
/// blocks outside every damaged span accounted per `strategy`, then the
/// spans reserved; a peer's map that fails, or damage that covers all RAM,
/// reserves all RAM outside scratch and leaves nothing to restore (KHO off,
/// the reason in [`Kho::error`]).
fn salvage_memory_init(
    machine: &mut Machine<'_>,
    kho: &mut Kho,
    k: &KhoIn,
    strategy: Strategy,
    cma_pageblocks: u64,
) -> KhoMemoryInitStats {
    let fallback = |machine: &Machine<'_>| KhoMemoryInitStats {
        reserved_regions: machine.memblock.reserved_regions(),
        cma_pageblocks,
        ..KhoMemoryInitStats::default()
    };
    if kho.scheme.is_some() {
        return match memory_init(machine, k, strategy, kho.scheme.as_deref()) {
            Ok(done) => accounted(kho, done, cma_pageblocks),
            Err(e) => {
                let node = k.root;
                let error = e.to_string();
                kho.fail(e);
                kho.damage_reserved =
                    salvage_all(machine, kho, &k.scratch, node, error).unwrap_or(0);
                fallback(machine)
            }
        };
    }
    let mem = machine.mem();
    let forbidden = kho_forbidden(machine, k);
    let ram_ranges = mem.layout().ram().to_vec();
    let ram = match RamMap::new(mem.layout().ram(), &forbidden) {
        Ok(ram) => ram,
        Err(e) => {
            kho.fail(KhoError::RamMap(e));
            return fallback(machine);
        }
    };
    let mut map = SalvageMap::new(mem, ram, k.root);
    kho.damage = map
        .damage()
        .iter()
        .map(|d| DamageReport::of(d, &ram_ranges, &forbidden))
        .collect();
    if map.is_total() {
        let spans = map.spans().to_vec();
        let error = map
            .damage()
            .iter()
            .find(|d| d.level == kho::Level::ROOT)
            .map(|d| KhoError::Walk {
                root: k.root,
                source: d.error,
            });
        let reserved = match reserve_spans(&mut machine.memblock, &spans, &ram_ranges, &forbidden) {
            Ok(b) => b,
            Err(e) => {
                kho.fail(e.into());
                return fallback(machine);
            }
        };
        let damage = std::mem::take(&mut kho.damage);
        if let Some(e) = error {
            kho.fail(e);
        }
        kho.damage = damage;
        kho.damage_reserved = reserved;
        return fallback(machine);
    }
    let spans = map.spans().to_vec();
    let (memblock, memmap) = machine.memblock_and_memmap();
    let Some(memmap) = memmap else {
        kho.fail(KhoError::NoMemmap);
        return fallback(machine);
    };
    let result = {
        let mut sink = MachineSink::new(&mut *memblock, memmap);
        reserve_preserved(strategy, &mut map, &mut sink)
    }
    .map_err(KhoError::from)
    .and_then(|r| {
        let bytes = reserve_spans(memblock, &spans, &ram_ranges, &forbidden)?;
        Ok((r, bytes))
    });
    match result {
        Ok(((stats, skip), bytes)) => {
            kho.skip = skip;
            kho.damage_reserved = bytes;
            KhoMemoryInitStats {
                reserved_regions: machine.memblock.reserved_regions(),
                cma_pageblocks,
                ..stats
            }
        }
        Err(e) => {
            let damage = std::mem::take(&mut kho.damage);
            kho.fail(e);
            kho.damage = damage;
            fallback(machine)
        }
    }
}

/// Salvage, nothing of the map readable: all RAM outside `scratch` and the
/// kernel image reserved, one [`DamageReport`] for it (`node`: the map's
/// root, or 0 when the root FDT itself is unusable).
fn salvage_all(
    machine: &mut Machine<'_>,
    kho: &mut Kho,
    scratch: &[PhysRange],
    node: PhysAddr,
    error: String,
) -> Result<u64, ReserveError> {
    let mut forbidden = scratch.to_vec();
    forbidden.push(machine.config().kernel);
    let forbidden = kho::merge_ranges(forbidden);
    let ram = machine.mem().layout().ram().to_vec();
    let hull = PhysRange::new(
        ram.first().map_or(PhysAddr::ZERO, |r| r.start()),
        ram.last().map_or(PhysAddr::ZERO, |r| r.end()),
    )
    .unwrap_or_default();
    kho.damage = vec![DamageReport::new(
        node, 5, None, hull, error, &ram, &forbidden,
    )];
    reserve_spans(&mut machine.memblock, &[hull], &ram, &forbidden)
}

/// `pageblock_order` on x86-64 (`HPAGE_PMD_ORDER`).
const PAGEBLOCK_ORDER: u32 = 9;

/// `kho_release_scratch` (torvalds/linux@40735a68; linux-mm@65660710 has
/// dropped it from `kho_memory_init`): `memmap_init_kho_scratch_pages`,
/// a no-op without deferred init (and not called at all in the deferred
/// configuration, which is pinned to linux-mm@65660710), then every
/// pageblock of the `KHO_SCRATCH` memory is marked `MIGRATE_CMA` so that
/// no unmovable allocation lands there and the next kexec finds it free.
/// The buddy allocator here has one migrate type, so the marking is
/// counted, not stored: returns the pageblocks Linux marks (0 in the
/// deferred configuration).
pub(crate) fn kho_release_scratch(machine: &Machine<'_>) -> u64 {
    if machine.config().memmap == crate::memmap::MemmapMode::Deferred {
        return 0;
    }
    let pageblock = 1u64 << PAGEBLOCK_ORDER;
    machine
        .memblock
        .for_each_mem_region()
        .filter(|r| r.flags.contains(MemblockFlags::KHO_SCRATCH))
        .map(|r| {
            let start = r.base.as_u64() >> kho::PAGE_SHIFT;
            let end = r.range().end().as_u64().div_ceil(kho::PAGE_SIZE);
            end.div_ceil(pageblock) - start / pageblock
        })
        .sum()
}

fn memory_init(
    machine: &mut Machine<'_>,
    k: &KhoIn,
    strategy: Strategy,
    scheme: Option<&dyn PeerScheme>,
) -> Result<(KhoMemoryInitStats, Vec<PhysRange>), KhoError> {
    let mem = machine.mem();
    let forbidden = kho_forbidden(machine, k);
    let ram = RamMap::new(mem.layout().ram(), &forbidden).map_err(KhoError::RamMap)?;
    let (memblock, memmap) = machine.memblock_and_memmap();
    let mut sink = MachineSink::new(memblock, memmap.ok_or(KhoError::NoMemmap)?);
    match scheme {
        None => Ok(reserve_preserved(
            strategy,
            &mut RadixMap::new(mem, ram, k.root),
            &mut sink,
        )?),
        Some(s) => s
            .reserve_preserved(strategy, mem, ram, k.root, &mut sink)
            .map(|st| (st, Vec::new()))
            .map_err(|source| KhoError::Scheme {
                scheme: s.name(),
                source,
            }),
    }
}

/// What no preserved block (and no handover page) may touch: the scratch
/// areas and the kernel image, sorted and merged.
pub(crate) fn kho_forbidden(machine: &Machine<'_>, k: &KhoIn) -> Vec<PhysRange> {
    let mut forbidden = k.scratch.clone();
    forbidden.push(machine.config().kernel);
    kho::merge_ranges(forbidden)
}
