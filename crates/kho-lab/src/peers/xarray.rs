//! `xarray`: Linux 6.16's tracker (`kernel/kexec_handover.c`), and its
//! later page-bitmap variant, serialized into the kho-v1 chunk list.
//!
//! # The tracker, as 6.16 builds it
//!
//! ```text
//! struct kho_mem_track { struct xarray orders; }            order -> kho_mem_phys
//! struct kho_mem_phys  { struct xarray phys_bits; }         (pfn >> order) / PRESERVE_BITS -> bitmap
//! struct kho_mem_phys_bits { DECLARE_BITMAP(preserve, PRESERVE_BITS); }
//! ```
//!
//! `__kho_preserve_order(pfn, order)`: load (or kzalloc and cmpxchg in) the
//! order's `kho_mem_phys`; `xa_load_or_alloc` the bitmap at index
//! `(pfn >> order) / PRESERVE_BITS`; `set_bit((pfn >> order) %
//! PRESERVE_BITS)`. Unpreserve clears the bit; nothing is ever freed.
//!
//! # The model and its honest costs
//!
//! Linux, and how it is modelled here:
//!
//! - **`struct xarray`**: a radix tree of 64-slot `xa_node`s
//!   (`XA_CHUNK_SHIFT` 6), its height grown with the largest index; a lone
//!   entry at index 0 lives in `xa_head` without a node. Here: [`XArray`],
//!   the same shape (a head, a height, 64-slot nodes created along the
//!   path, the tree grown by pushing the old head into slot 0 of a new
//!   root).
//! - **`xa_node`** from `radix_tree_node_cachep`, 576 bytes: host heap,
//!   counted as 576 bytes each; pages = whole objects per 4 KiB page (7),
//!   rounded up ([`Metadata::object_pages`]).
//! - **`kho_mem_phys`** from kmalloc-16: host heap, counted as 16 bytes.
//! - **bitmap**: `kzalloc(512)` (6.16) or one page (later): simulated
//!   memory from the old kernel's buddy, 512-byte bitmaps packed eight to a
//!   page as kmalloc-512 packs them, page bitmaps one per page.
//! - **`xa_lock`** on stores, RCU loads: one `Mutex` per tracker around the
//!   whole preserve (loads included: an uncontended lock in the lab's
//!   single-threaded runs).
//! - **chunks**: `kzalloc(PAGE_SIZE)` at finalize: simulated memory from
//!   the buddy, one page each.
//!
//! # Finalize (`kho_mem_serialize`)
//!
//! For each order present, ascending (`xa_for_each` over `orders`): a fresh
//! chunk; for each bitmap, ascending index (`xa_for_each` over
//! `phys_bits`): one entry `{phys_start = (index * PRESERVE_BITS) << (order +
//! PAGE_SHIFT), bitmap}`, a new chunk when 255 are in use. Bitmaps whose
//! bits were all cleared are still written, as in Linux. The chunk layout
//! is [`kho::V1Reader`]'s table; the root FDT's `preserved-memory-map` is the
//! first chunk (0 if nothing was preserved).
//!
//! # Restore (`kho_mem_deserialize` / `deserialize_bitmap`)
//!
//! Walk the list; for every set bit, `memblock_reserve` +
//! `memblock_reserved_mark_noinit` of the block and its head page's
//! `private`: one reservation per block, reserved as read. The list is read
//! in place by [`kho::V1Reader`] (validating, bounded): no heap.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use kho::{
    BitmapSize, Block, KhoserMemBitmapPtr, KhoserMemChunk, Order, PAGE_SIZE, PageAlloc, PageMap,
    PhysAddr, RamMap, V1Reader,
};

use kho_machine::{Extent, MapSummary, PreservedMap, ReserveError};

use super::{Handover, Metadata, Scheme, SchemeError, SchemeKind, slab_pages};

/// `XA_CHUNK_SHIFT`.
pub const XA_CHUNK_SHIFT: u32 = 6;
/// `XA_CHUNK_SIZE`: slots per node.
pub const XA_CHUNK_SIZE: usize = 1 << XA_CHUNK_SHIFT;
/// `sizeof(struct xa_node)` on 64-bit (`radix_tree_node_cachep` objects).
pub const XA_NODE_BYTES: u64 = 576;
/// `sizeof(struct kho_mem_phys)` (one `struct xarray`), from kmalloc-16.
pub const KHO_MEM_PHYS_BYTES: u64 = 16;

enum Slot<T> {
    Empty,
    Entry(T),
    Node(Box<[Slot<T>; XA_CHUNK_SIZE]>),
}

fn new_node<T>() -> Box<[Slot<T>; XA_CHUNK_SIZE]> {
    Box::new(std::array::from_fn(|_| Slot::Empty))
}

/// The kernel's xarray, shape for shape: a head, a height, 64-slot nodes.
pub struct XArray<T> {
    head: Slot<T>,
    /// Levels of nodes: 0 = the head is the entry at index 0 (or empty).
    height: u32,
    nodes: u64,
}

impl<T> std::fmt::Debug for XArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XArray")
            .field("height", &self.height)
            .field("nodes", &self.nodes)
            .finish()
    }
}

impl<T> Default for XArray<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> XArray<T> {
    /// An empty xarray (`xa_init`).
    pub const fn new() -> Self {
        Self {
            head: Slot::Empty,
            height: 0,
            nodes: 0,
        }
    }

    /// `xa_node`s allocated (never freed: KHO never erases).
    pub fn nodes(&self) -> u64 {
        self.nodes
    }

    /// Levels of nodes.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The largest index a tree of `height` holds.
    fn max_index(height: u32) -> u64 {
        match height.saturating_mul(XA_CHUNK_SHIFT) {
            0 => 0,
            s if s >= 64 => u64::MAX,
            s => (1u64 << s) - 1,
        }
    }

    fn offset(index: u64, level: u32) -> usize {
        let shift = level.saturating_mul(XA_CHUNK_SHIFT);
        usize::try_from(index.checked_shr(shift).unwrap_or(0) & 63).unwrap_or(0)
    }

    /// `xa_load`.
    pub fn load_mut(&mut self, index: u64) -> Option<&mut T> {
        if index > Self::max_index(self.height) {
            return None;
        }
        let mut cur = &mut self.head;
        for level in (0..self.height).rev() {
            match cur {
                Slot::Node(n) => cur = &mut n[Self::offset(index, level)],
                _ => return None,
            }
        }
        match cur {
            Slot::Entry(v) => Some(v),
            _ => None,
        }
    }

    /// `xa_store` into an empty slot (`xas_expand` then `xas_create`);
    /// returns the stored entry.
    pub fn store(&mut self, index: u64, value: T) -> &mut T {
        while index > Self::max_index(self.height) {
            if matches!(self.head, Slot::Empty) {
                self.height += 1;
                continue;
            }
            let mut node = new_node();
            node[0] = std::mem::replace(&mut self.head, Slot::Empty);
            self.head = Slot::Node(node);
            self.nodes += 1;
            self.height += 1;
        }
        let mut cur = &mut self.head;
        for level in (0..self.height).rev() {
            if matches!(cur, Slot::Empty) {
                *cur = Slot::Node(new_node());
                self.nodes += 1;
            }
            match cur {
                Slot::Node(n) => cur = &mut n[Self::offset(index, level)],
                _ => unreachable!("an entry above the leaf level"),
            }
        }
        *cur = Slot::Entry(value);
        match cur {
            Slot::Entry(v) => v,
            _ => unreachable!("just stored"),
        }
    }

    /// `xa_for_each`: every entry, ascending index.
    pub fn for_each(&self, mut f: impl FnMut(u64, &T)) {
        fn go<T>(slot: &Slot<T>, level: u32, base: u64, f: &mut impl FnMut(u64, &T)) {
            match slot {
                Slot::Empty => {}
                Slot::Entry(v) => f(base, v),
                Slot::Node(n) => {
                    let below = level.saturating_sub(1);
                    for (i, s) in n.iter().enumerate() {
                        let i = i as u64;
                        let shift = below.saturating_mul(XA_CHUNK_SHIFT);
                        go(s, below, base | i.checked_shl(shift).unwrap_or(0), f);
                    }
                }
            }
        }
        go(&self.head, self.height, 0, &mut f);
    }
}

/// The per-order tracker under its lock.
#[derive(Debug, Default)]
struct Track {
    /// `track->orders`: order -> `kho_mem_phys` (its `phys_bits` xarray of
    /// bitmap addresses).
    orders: XArray<XArray<PhysAddr>>,
    /// kmalloc-512's current slab page and slots used.
    slab: Option<(PhysAddr, u64)>,
    /// Pages holding bitmaps.
    bitmap_pages: Vec<PhysAddr>,
    /// `kho_mem_phys` objects.
    physxa: u64,
}

/// Linux 6.16's tracker: see the module doc.
pub struct XarrayScheme<'a, M: ?Sized> {
    mem: &'a M,
    size: BitmapSize,
    track: Mutex<Track>,
    chunks: Vec<PhysAddr>,
    finalized: bool,
}

impl<M: ?Sized> std::fmt::Debug for XarrayScheme<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XarrayScheme")
            .field("size", &self.size)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl<'a, M: PageAlloc + PageMap + ?Sized> XarrayScheme<'a, M> {
    /// An empty tracker with bitmaps of `size`.
    pub fn new(mem: &'a M, size: BitmapSize) -> Self {
        Self {
            mem,
            size,
            track: Mutex::new(Track::default()),
            chunks: Vec::new(),
            finalized: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `kzalloc(sizeof(struct kho_mem_phys_bits))`.
    fn alloc_bitmap(&self, t: &mut Track) -> Result<PhysAddr, SchemeError> {
        let per_page = PAGE_SIZE / self.size.bytes();
        let (page, used) = match t.slab {
            Some((page, used)) if used < per_page => (page, used),
            _ => {
                let page = self.mem.alloc_zeroed_page()?;
                t.bitmap_pages.push(page);
                (page, 0)
            }
        };
        t.slab = Some((page, used + 1));
        page.checked_add(used * self.size.bytes())
            .ok_or(SchemeError::Mem(kho::MemError::OutOfMemory))
    }

    /// (bitmap index, bit) of `block`.
    fn position(&self, block: Block) -> (u64, u64) {
        let pfn_high = block.pfn().as_u64() >> block.order().as_u32();
        let bits = u64::from(self.size.bits());
        (pfn_high / bits, pfn_high % bits)
    }

    fn update_bit(&self, bitmap: PhysAddr, bit: u64, set: bool) -> Result<(), SchemeError> {
        let page = self.mem.page(bitmap.align_down(PAGE_SIZE))?;
        let word = (bitmap.as_u64() % PAGE_SIZE) / 8 + bit / 64;
        let w = &page.words()[usize::try_from(word).unwrap_or(0) % kho::PAGE_WORDS];
        let mask = 1u64 << (bit % 64);
        if set {
            w.fetch_or(mask, Ordering::Relaxed);
        } else {
            w.fetch_and(!mask, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl<M: PageAlloc + PageMap + Sync + ?Sized> Scheme for XarrayScheme<'_, M> {
    fn kind(&self) -> SchemeKind {
        match self.size {
            BitmapSize::Bytes512 => SchemeKind::Xarray512,
            BitmapSize::Page => SchemeKind::XarrayPage,
        }
    }

    fn preserve(&self, block: Block) -> Result<(), SchemeError> {
        if self.finalized {
            return Err(SchemeError::Finalized);
        }
        let (index, bit) = self.position(block);
        let order = u64::from(block.order().as_u32());
        let mut guard = self.lock();
        let t = &mut *guard;
        if t.orders.load_mut(order).is_none() {
            t.orders.store(order, XArray::new());
            t.physxa += 1;
        }
        let existing = t
            .orders
            .load_mut(order)
            .and_then(|x| x.load_mut(index).copied());
        let bitmap = match existing {
            Some(b) => b,
            None => {
                let b = self.alloc_bitmap(t)?;
                if let Some(x) = t.orders.load_mut(order) {
                    x.store(index, b);
                }
                b
            }
        };
        drop(guard);
        self.update_bit(bitmap, bit, true)
    }

    fn unpreserve(&self, block: Block) -> Result<(), SchemeError> {
        let (index, bit) = self.position(block);
        let order = u64::from(block.order().as_u32());
        let bitmap = self
            .lock()
            .orders
            .load_mut(order)
            .and_then(|x| x.load_mut(index).copied());
        match bitmap {
            Some(b) => self.update_bit(b, bit, false),
            // Linux returns quietly.
            None => Ok(()),
        }
    }

    fn finalize(&mut self) -> Result<Handover, SchemeError> {
        if self.finalized {
            return Err(SchemeError::Finalized);
        }
        self.finalized = true;
        let size = self.size;
        let mut entries: Vec<(Order, KhoserMemBitmapPtr)> = Vec::new();
        let track = self.track.get_mut().unwrap_or_else(|e| e.into_inner());
        track.orders.for_each(|order, physxa| {
            let order =
                Order::try_new(u32::try_from(order).unwrap_or(u32::MAX)).unwrap_or(Order::ZERO);
            physxa.for_each(|index, &bitmap| {
                // (index * PRESERVE_BITS) << (order + PAGE_SHIFT)
                let start = index.checked_shl(size.span_shift(order)).unwrap_or(0);
                entries.push((order, KhoserMemBitmapPtr::new(PhysAddr::new(start), bitmap)));
            });
        });
        // new_chunk() per order and per 255 entries, linked as made.
        let mut chunks: Vec<(PhysAddr, KhoserMemChunk)> = Vec::new();
        let mut last_order = None;
        for (order, entry) in entries {
            let fits =
                last_order == Some(order) && chunks.last_mut().is_some_and(|(_, c)| c.push(entry));
            if !fits {
                let phys = self.mem.alloc_zeroed_page()?;
                self.chunks.push(phys);
                if let Some((_, prev)) = chunks.last_mut() {
                    prev.set_next(phys);
                }
                let mut chunk = KhoserMemChunk::new(order);
                chunk.push(entry);
                chunks.push((phys, chunk));
                last_order = Some(order);
            }
        }
        for (phys, chunk) in &chunks {
            let page = self.mem.page(*phys)?;
            for (d, w) in page.words().iter().zip(chunk.to_words()) {
                d.store(w, Ordering::Relaxed);
            }
        }
        Ok(Handover {
            compatible: SchemeKind::Xarray512.compatible(),
            root: chunks.first().map_or(PhysAddr::ZERO, |(p, _)| *p),
        })
    }

    fn metadata(&self) -> Metadata {
        let t = self.lock();
        let mut nodes = t.orders.nodes();
        t.orders.for_each(|_, x| nodes += x.nodes());
        let mut pages: Vec<PhysAddr> = t.bitmap_pages.clone();
        pages.extend(&self.chunks);
        pages.sort_unstable();
        Metadata {
            pages,
            object_bytes: nodes * XA_NODE_BYTES + t.physxa * KHO_MEM_PHYS_BYTES,
            object_pages: slab_pages(nodes, XA_NODE_BYTES)
                + slab_pages(t.physxa, KHO_MEM_PHYS_BYTES),
        }
    }
}

/// `kho_mem_deserialize`'s input: the kho-v1 chunk list from `head`, as a
/// [`PreservedMap`]: every set bit an extent, in list order (one
/// reservation per set bit, as read).
pub(super) struct ChunkList<'a, M: PageMap + ?Sized> {
    reader: V1Reader<'a, M>,
    head: PhysAddr,
}

impl<'a, M: PageMap + ?Sized> ChunkList<'a, M> {
    /// The list at `head` in `mem`, checked against `ram`, of `size`
    /// bitmaps.
    pub(super) fn new(mem: &'a M, ram: RamMap<'a>, head: PhysAddr, size: BitmapSize) -> Self {
        Self {
            reader: V1Reader::new(mem, ram, size),
            head,
        }
    }
}

impl<M: PageMap + ?Sized> PreservedMap for ChunkList<'_, M> {
    type Error = SchemeError;

    fn for_each_extent<F>(&mut self, mut f: F) -> Result<MapSummary, SchemeError>
    where
        F: FnMut(Extent) -> Result<(), ReserveError>,
    {
        let mut summary = MapSummary::default();
        for b in self.reader.blocks(self.head) {
            let e = Extent::block(b?);
            f(e)?;
            summary.add(e);
        }
        Ok(summary)
    }
}
