//! `maple`: the proposal to track preserved memory as ranges (a maple tree,
//! a B-tree of ranges) instead of bits, serialized at finalize into a
//! chunk list of 24-byte records, restored with one reservation per range
//! (`coalesced`) or in one merge (`bulk`).
//! It was never merged: no Linux handover format exists, so the compatible
//! is this lab's own, [`MAPLE_COMPATIBLE`] = `"kho-maple-v1"`.
//!
//! # The tracker
//!
//! A B-tree map from ranges to a data word ([`rangemap::RangeMap`]).
//! Preserving a block inserts `[phys, phys + size)` with data = its order;
//! the map merges it with a neighbour that touches it *and carries the same
//! data word*: ranges of different orders never merge, so every range
//! decomposes back into the naturally aligned blocks of its order (the
//! folio order must come back for `kho_restore_folio`). Inserting over
//! preserved memory fails (`mtree_insert_range`'s `-EEXIST`); unpreserving
//! splits the range. One `Mutex` stands for the tree's lock.
//!
//! # What its preserve cost models, and the bias
//!
//! One `preserve` is `overlaps` (a B-tree descent) then `insert` (a second
//! descent, the neighbour merge, node splits) on a host
//! [`rangemap::RangeMap`] (a `BTreeMap` of ranges, nodes from the host
//! allocator), under one `Mutex`. The kernel's would be one
//! `mtree_insert_range` under the tree's spinlock: a descent that fails
//! with `-EEXIST` on overlap, then a store that, to stay safe for RCU
//! readers, writes a new copy of every node it changes (`maple_node_cache`
//! allocations, the old nodes freed after a grace period), plus the
//! neighbour lookups and the erase of a merged neighbour. Simplifications
//! and where each points:
//!
//! - no copy-on-write, no per-store node allocation or RCU free: the
//!   model's store is cheaper than the kernel's, **in maple's favour**
//!   (the dominant term);
//! - a separate overlap descent before the insert: dearer than the
//!   kernel's single descent, against maple (one extra O(log n) lookup);
//! - one `Mutex` for the spinlock: the same serialization, neutral (the
//!   two-thread figure serializes like the kernel's would);
//! - node memory packed full (below): **in maple's favour**.
//!
//! Overall the modelled preserve and metadata are lower bounds for a
//! kernel maple tracker: where maple loses to a bitmap or a radix tree on
//! preserve or metadata here, it would lose by more in the kernel.
//!
//! Metadata: the nodes live on the host heap and are counted as the
//! kernel's `struct maple_node` (256 bytes, 16 slots for `maple_range_64`).
//! A maple tree stores the gaps between ranges as NULL slots, so R ranges
//! take about 2R + 1 slots; nodes are counted as if packed full (leaves
//! `ceil((2R + 1) / 16)`, then `ceil(n / 16)` per level up to the root): a
//! lower bound, favourable to maple (real nodes are often half full).
//!
//! # Format (one 4096-byte page per chunk, native-endian u64 words)
//!
//! | offset      | size | field    | meaning                                         |
//! |-------------|------|----------|-------------------------------------------------|
//! | 0           | 8    | `next`   | phys of the next chunk, 0 = last                |
//! | 8           | 8    | `count`  | records in use, at most 170                     |
//! | 16 + 24 i   | 8    | `start`  | first byte of range i                           |
//! | 24 + 24 i   | 8    | `size`   | its bytes, a non-zero multiple of its block size |
//! | 32 + 24 i   | 8    | `data`   | the data word: the order of every block in it   |
//!
//! `(4096 - 16) / 24 = 170` records fill the page exactly.
//! Records are written in ascending address order; the root FDT's
//! `preserved-memory-map` is the first chunk (0 if nothing was preserved).
//! Chunks are pages from the old kernel's buddy, not themselves preserved
//! (like kho-v1's): the next kernel reads them before it allocates.
//!
//! # Restore
//!
//! Per chunk: page aligned, in RAM, clear of forbidden ranges (scratch,
//! kernel), within a budget of one chunk per RAM page; `count <= 170`; per
//! record: a valid order, `start` and `size` aligned to the block size,
//! `size` non-zero, the range in one RAM range and clear of forbidden
//! ranges. Every record is one extent, in list order (ascending address).
//! The proposal's restore, one `memblock_reserve` + mark_noinit per range
//! and the head page of each of its blocks, is the `coalesced` strategy
//! over this list (records merged where two of different orders touch, so
//! never more reservations than records); `bulk` takes the same ranges in
//! one merge. The list is read in place; the coalesced list is merged as
//! read (one range per maximal run, not per record).

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use kho::{Block, Order, PAGE_SIZE, PageAlloc, PageMap, PhysAddr, PhysRange, RamMap};
use rangemap::RangeMap;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use kho_machine::{Extent, MapSummary, PreservedMap, ReserveError};

use super::{Handover, Metadata, Scheme, SchemeError, SchemeKind};

/// The root FDT `compatible` of a maple handover (this lab's own).
pub const MAPLE_COMPATIBLE: &str = "kho-maple-v1";
/// Records per chunk: `(4096 - 16) / 24`.
pub const MAPLE_RECORDS_PER_CHUNK: usize = 170;
/// `sizeof(struct maple_node)`.
pub const MAPLE_NODE_BYTES: u64 = 256;
/// Slots of a `maple_range_64` node.
pub const MAPLE_RANGE64_SLOTS: u64 = 16;

/// One range record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MapleRecord {
    /// First byte.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// The data word: the order of the range's blocks.
    pub data: u64,
}

/// One chunk page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MapleChunk {
    /// Phys of the next chunk, 0 = last.
    pub next: u64,
    /// Records in use.
    pub count: u64,
    /// The records.
    pub records: [MapleRecord; MAPLE_RECORDS_PER_CHUNK],
}

const _: () = assert!(size_of::<MapleRecord>() == 24);
const _: () = assert!(size_of::<MapleChunk>() == 4096);

impl MapleChunk {
    /// The page as 512 native-endian words.
    pub fn to_words(&self) -> [u64; 512] {
        zerocopy::transmute!(*self)
    }

    /// A copy of the chunk in `page`.
    pub fn from_page(page: &kho::AtomicPage) -> Self {
        zerocopy::transmute!(page.snapshot())
    }
}

/// The maple tracker: see the module doc.
pub struct MapleScheme<'a, M: ?Sized> {
    mem: &'a M,
    tree: Mutex<RangeMap<u64, u64>>,
    chunks: Vec<PhysAddr>,
    finalized: bool,
}

impl<M: ?Sized> std::fmt::Debug for MapleScheme<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapleScheme")
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

impl<'a, M: PageAlloc + PageMap + ?Sized> MapleScheme<'a, M> {
    /// An empty tree.
    pub fn new(mem: &'a M) -> Self {
        Self {
            mem,
            tree: Mutex::new(RangeMap::new()),
            chunks: Vec::new(),
            finalized: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RangeMap<u64, u64>> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ranges in the tree now.
    pub fn ranges(&self) -> u64 {
        self.lock().iter().count() as u64
    }
}

fn span(block: Block) -> Result<std::ops::Range<u64>, SchemeError> {
    let r = block.range().ok_or(SchemeError::NotPreserved { block })?;
    Ok(r.start().as_u64()..r.end().as_u64())
}

/// Maple nodes for `ranges` ranges, packed full (see the module doc).
pub fn maple_nodes(ranges: u64) -> u64 {
    if ranges == 0 {
        return 0;
    }
    let mut n = (2 * ranges + 1).div_ceil(MAPLE_RANGE64_SLOTS);
    let mut total = n;
    while n > 1 {
        n = n.div_ceil(MAPLE_RANGE64_SLOTS);
        total += n;
    }
    total
}

impl<M: PageAlloc + PageMap + Sync + ?Sized> Scheme for MapleScheme<'_, M> {
    fn kind(&self) -> SchemeKind {
        SchemeKind::Maple
    }

    fn preserve(&self, block: Block) -> Result<(), SchemeError> {
        if self.finalized {
            return Err(SchemeError::Finalized);
        }
        let r = span(block)?;
        let mut t = self.lock();
        if t.overlaps(&r) {
            return Err(SchemeError::Overlap { block });
        }
        t.insert(r, u64::from(block.order().as_u32()));
        Ok(())
    }

    fn unpreserve(&self, block: Block) -> Result<(), SchemeError> {
        let r = span(block)?;
        let mut t = self.lock();
        let inside = t
            .get_key_value(&r.start)
            .is_some_and(|(k, &d)| d == u64::from(block.order().as_u32()) && k.end >= r.end);
        if !inside {
            return Err(SchemeError::NotPreserved { block });
        }
        t.remove(r);
        Ok(())
    }

    fn finalize(&mut self) -> Result<Handover, SchemeError> {
        if self.finalized {
            return Err(SchemeError::Finalized);
        }
        self.finalized = true;
        let tree = self.tree.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut chunks: Vec<(PhysAddr, MapleChunk)> = Vec::new();
        for (r, &data) in tree.iter() {
            let rec = MapleRecord {
                start: r.start,
                size: r.end - r.start,
                data,
            };
            let full = chunks
                .last()
                .is_none_or(|(_, c)| c.count as usize == MAPLE_RECORDS_PER_CHUNK);
            if full {
                let phys = self.mem.alloc_zeroed_page()?;
                self.chunks.push(phys);
                if let Some((_, prev)) = chunks.last_mut() {
                    prev.next = phys.as_u64();
                }
                chunks.push((phys, MapleChunk::new_zeroed()));
            }
            if let Some((_, c)) = chunks.last_mut() {
                c.records[c.count as usize] = rec;
                c.count += 1;
            }
        }
        for (phys, chunk) in &chunks {
            let page = self.mem.page(*phys)?;
            for (d, w) in page.words().iter().zip(chunk.to_words()) {
                d.store(w, Ordering::Relaxed);
            }
        }
        Ok(Handover {
            compatible: MAPLE_COMPATIBLE,
            root: chunks.first().map_or(PhysAddr::ZERO, |(p, _)| *p),
        })
    }

    fn metadata(&self) -> Metadata {
        let nodes = maple_nodes(self.ranges());
        let mut pages = self.chunks.clone();
        pages.sort_unstable();
        Metadata {
            pages,
            object_bytes: nodes * MAPLE_NODE_BYTES,
            object_pages: super::slab_pages(nodes, MAPLE_NODE_BYTES),
        }
    }
}

/// The maple chunk list from `head`, as a [`PreservedMap`]: every record
/// an extent, in list order (one reservation per range, then the heads of
/// its blocks).
pub(super) struct ChunkList<'a, 'r, M: PageMap + ?Sized> {
    mem: &'a M,
    ram: RamMap<'r>,
    head: PhysAddr,
}

impl<'a, 'r, M: PageMap + ?Sized> ChunkList<'a, 'r, M> {
    /// The list at `head` in `mem`, checked against `ram`.
    pub(super) fn new(mem: &'a M, ram: RamMap<'r>, head: PhysAddr) -> Self {
        Self { mem, ram, head }
    }
}

impl<M: PageMap + ?Sized> PreservedMap for ChunkList<'_, '_, M> {
    type Error = SchemeError;

    fn for_each_extent<F>(&mut self, mut f: F) -> Result<MapSummary, SchemeError>
    where
        F: FnMut(Extent) -> Result<(), ReserveError>,
    {
        let ram = self.ram;
        let mut summary = MapSummary::default();
        let mut budget = ram.ram_bytes() / PAGE_SIZE;
        let mut next = self.head;
        while next != PhysAddr::ZERO {
            let chunk = next;
            let bad = |reason| SchemeError::Maple { chunk, reason };
            budget = budget
                .checked_sub(1)
                .ok_or(bad("more chunks than RAM pages (a loop?)"))?;
            if !chunk.is_page_aligned() {
                return Err(bad("chunk not page aligned"));
            }
            let page_range = PhysRange::from_start_size(chunk, PAGE_SIZE)
                .map_err(|_| bad("chunk past the address space"))?;
            if !ram.is_ram(page_range) || ram.forbidden_overlap(page_range).is_some() {
                return Err(bad("chunk outside usable RAM"));
            }
            let c = MapleChunk::from_page(self.mem.page(chunk)?);
            let count = usize::try_from(c.count)
                .ok()
                .filter(|&n| n <= MAPLE_RECORDS_PER_CHUNK)
                .ok_or(bad("count above 170"))?;
            for rec in c.records.iter().take(count) {
                let order = u32::try_from(rec.data)
                    .ok()
                    .and_then(|o| Order::try_new(o).ok())
                    .ok_or(bad("record data is not an order"))?;
                let bsize = order.bytes();
                if rec.size == 0 || rec.size % bsize != 0 || rec.start % bsize != 0 {
                    return Err(bad("record not aligned to its order"));
                }
                let range = PhysRange::from_start_size(PhysAddr::new(rec.start), rec.size)
                    .map_err(|_| bad("record past the address space"))?;
                if !ram.is_ram(range) || ram.forbidden_overlap(range).is_some() {
                    return Err(bad("record outside usable RAM"));
                }
                let first = Block::new(range.start(), order).map_err(|_| bad("block"))?;
                let e = Extent::new(first, rec.size / bsize).ok_or(bad("block past the end"))?;
                f(e)?;
                summary.add(e);
            }
            next = PhysAddr::new(c.next);
        }
        Ok(summary)
    }

    /// Touching extents merged as read ([`super::coalesce_as_read`]),
    /// heads in the same pass.
    fn coalesced<F>(&mut self, head: F) -> Result<(Vec<kho::PhysRange>, MapSummary), SchemeError>
    where
        F: FnMut(kho::Block) -> Result<(), ReserveError>,
    {
        super::coalesce_as_read(self, head)
    }
}
