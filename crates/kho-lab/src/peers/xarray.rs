//! `xarray`: Linux 6.16's tracker (`kernel/kexec_handover.c`,
//! torvalds/linux@00c010e1, the file as 6.16 shipped it), and its later
//! page-bitmap variant, serialized into the kho-v1 chunk list.
//!
//! # The tracker, as 6.16 builds it
//!
//! ```text
//! struct kho_mem_track { struct xarray orders; }            order -> kho_mem_phys
//! struct kho_mem_phys  { struct xarray phys_bits; }         (pfn >> order) / PRESERVE_BITS -> bitmap
//! struct kho_mem_phys_bits { DECLARE_BITMAP(preserve, PRESERVE_BITS); }
//! ```
//!
//! `__kho_preserve_order(pfn, order)` takes no lock of its own. Twice (the
//! order's `kho_mem_phys` in `orders`, then the bitmap at `(pfn >> order) /
//! PRESERVE_BITS` in its `phys_bits`) it calls `xa_load_or_alloc`: an
//! `xa_load` (lock-free, under RCU); only when the slot is empty, a
//! `kzalloc` (outside any lock) and an `xa_cmpxchg(NULL -> new)`, which
//! takes that xarray's `xa_lock` for the store; the loser of a race frees
//! its allocation and uses the winner's. Then an atomic `set_bit((pfn >>
//! order) % PRESERVE_BITS)`. Unpreserve is two `xa_load`s and a
//! `clear_bit`; nothing is ever freed.
//!
//! # The model and its honest costs
//!
//! Linux, and how it is modelled here:
//!
//! - **`struct xarray`**: a radix tree of 64-slot `xa_node`s
//!   (`XA_CHUNK_SHIFT` 6), its height grown with the largest index; a lone
//!   entry at index 0 lives in `xa_head` without a node. Here: [`XArray`],
//!   the same shape (a head, a height, 64-slot nodes created along the
//!   path, the tree grown by putting the old head into slot 0 of a new
//!   root). Every slot is written once (KHO never erases), so a slot is a
//!   `OnceLock`: `xa_load` is a chain of acquire loads and takes no lock,
//!   as under RCU; a store ([`XArray::cmpxchg_empty`]) takes the xarray's
//!   own `Mutex` (its `xa_lock`), re-walks, grows, creates nodes and
//!   installs the entry only if the slot is still empty.
//! - **`xa_node`** from `radix_tree_node_cachep`, 576 bytes: host heap,
//!   counted as 576 bytes each; pages = whole objects per 4 KiB page (7),
//!   rounded up ([`Metadata::object_pages`]).
//! - **`kho_mem_phys`** from kmalloc-16: host heap, counted as 16 bytes
//!   (the installed ones: a loser's is freed).
//! - **bitmap**: `kzalloc(512)` (6.16) or one page (later): simulated
//!   memory from the old kernel's buddy, 512-byte bitmaps packed eight to a
//!   page as kmalloc-512 packs them (the slab's bookkeeping behind one
//!   `Mutex`, taken only to allocate or free a bitmap: Linux's per-CPU
//!   slab fast path takes none, so this errs against xarray on a bitmap
//!   allocation, once per 4096 or 32768 bits), page bitmaps one per page.
//! - **`set_bit` / `clear_bit`**: an atomic `fetch_or` / `fetch_and` on the
//!   bitmap's word in simulated memory (relaxed, as `set_bit` implies no
//!   barrier).
//! - **chunks**: `kzalloc(PAGE_SIZE)` at finalize: simulated memory from
//!   the buddy, one page each.
//!
//! # Finalize (`kho_mem_serialize`)
//!
//! For each order present, ascending (`xa_for_each` over `orders`): a fresh
//! chunk; for each bitmap, ascending index (`xa_for_each` over
//! `phys_bits`): one entry `{phys_start = (index * PRESERVE_BITS) << (order +
//! PAGE_SHIFT), bitmap}`, a new chunk when 255 are in use. Bitmaps whose
//! bits were all cleared are still written, as in Linux. Each entry is
//! stored straight into its chunk page and each chunk is linked from the
//! previous one as it is made (no host copy of the list). The chunk layout
//! is [`kho::V1Reader`]'s table; the root FDT's `preserved-memory-map` is
//! the first chunk (0 if nothing was preserved).
//!
//! # Restore (`kho_mem_deserialize` / `deserialize_bitmap`)
//!
//! Walk the list; every set bit is an extent of one block, in list order
//! (Linux: `memblock_reserve` + `memblock_reserved_mark_noinit` of each as
//! read, the `per-block` strategy; the lab also feeds `coalesced` and
//! `bulk` from the same list). The list is read in place by
//! [`kho::V1Reader`] (validating, bounded): no heap.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use kho::{
    BitmapSize, Block, KHOSER_BITMAP_SIZE, Order, PAGE_SIZE, PageAlloc, PageMap, PhysAddr, RamMap,
    V1Reader,
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
/// Levels of nodes that 64-bit indices need: ceil(64 / 6).
const MAX_HEIGHT: usize = 11;

/// A slot's content: an entry, or a node below it.
enum Slot<T> {
    Entry(T),
    Node(Arc<Node<T>>),
}

impl<T: Clone> Clone for Slot<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Entry(v) => Self::Entry(v.clone()),
            Self::Node(n) => Self::Node(Arc::clone(n)),
        }
    }
}

/// An `xa_node`: 64 slots, each written at most once.
struct Node<T> {
    slots: [OnceLock<Slot<T>>; XA_CHUNK_SIZE],
}

impl<T> Node<T> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            slots: std::array::from_fn(|_| OnceLock::new()),
        })
    }
}

/// The kernel's xarray, shape for shape: a head, a height, 64-slot nodes;
/// loads lock-free, stores under its own lock (see the module doc).
pub struct XArray<T> {
    /// `heads[h]`: the head while the height is `h` (a grown tree's old
    /// heads stay, as RCU readers may still be under them: each is the
    /// new head's leftmost subtree).
    heads: [OnceLock<Slot<T>>; MAX_HEIGHT + 1],
    /// Levels of nodes: 0 = the head is the entry at index 0 (or empty).
    height: AtomicU32,
    /// `xa_lock`.
    lock: Mutex<()>,
    nodes: AtomicU64,
}

impl<T> std::fmt::Debug for XArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XArray")
            .field("height", &self.height.load(Ordering::Relaxed))
            .field("nodes", &self.nodes.load(Ordering::Relaxed))
            .finish()
    }
}

impl<T: Clone> Default for XArray<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> XArray<T> {
    /// An empty xarray (`xa_init`).
    pub fn new() -> Self {
        Self {
            heads: std::array::from_fn(|_| OnceLock::new()),
            height: AtomicU32::new(0),
            lock: Mutex::new(()),
            nodes: AtomicU64::new(0),
        }
    }

    /// `xa_node`s allocated (never freed: KHO never erases).
    pub fn nodes(&self) -> u64 {
        self.nodes.load(Ordering::Relaxed)
    }

    /// Levels of nodes.
    pub fn height(&self) -> u32 {
        self.height.load(Ordering::Acquire)
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

    fn head(&self, height: u32) -> &OnceLock<Slot<T>> {
        &self.heads[usize::try_from(height)
            .unwrap_or(MAX_HEIGHT)
            .min(MAX_HEIGHT)]
    }

    /// `xa_load`: lock-free (acquire loads down the path).
    pub fn load(&self, index: u64) -> Option<&T> {
        let height = self.height();
        if index > Self::max_index(height) {
            return None;
        }
        let mut slot = self.head(height).get()?;
        for level in (0..height).rev() {
            match slot {
                Slot::Node(n) => slot = n.slots[Self::offset(index, level)].get()?,
                Slot::Entry(_) => return None,
            }
        }
        match slot {
            Slot::Entry(v) => Some(v),
            Slot::Node(_) => None,
        }
    }

    /// `xa_cmpxchg(xa, index, NULL, value)`: under the xarray's lock, grows
    /// the tree (`xas_expand`), creates the nodes on the path
    /// (`xas_create`) and stores `value` if the slot is still empty.
    /// `Ok`: the entry stored; `Err`: the entry another store put there
    /// first (the caller frees `value`'s allocation).
    pub fn cmpxchg_empty(&self, index: u64, value: T) -> Result<&T, &T> {
        let _xa_lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut height = self.height();
        while index > Self::max_index(height) {
            // A new root whose slot 0 is the old head (an empty tree grows
            // without a node).
            if let Some(old) = self.head(height).get() {
                let root = Node::new();
                let _ = root.slots[0].set(old.clone());
                let _ = self.head(height + 1).set(Slot::Node(root));
                self.nodes.fetch_add(1, Ordering::Relaxed);
            }
            height += 1;
            self.height.store(height, Ordering::Release);
        }
        let mut cell = self.head(height);
        for level in (0..height).rev() {
            let slot = cell.get_or_init(|| {
                self.nodes.fetch_add(1, Ordering::Relaxed);
                Slot::Node(Node::new())
            });
            match slot {
                Slot::Node(n) => cell = &n.slots[Self::offset(index, level)],
                Slot::Entry(_) => unreachable!("an entry above the leaf level"),
            }
        }
        let mut value = Some(value);
        let stored = cell.get_or_init(|| Slot::Entry(value.take().expect("taken once")));
        let Slot::Entry(v) = stored else {
            unreachable!("a node at the leaf level")
        };
        if value.is_none() { Ok(v) } else { Err(v) }
    }

    /// `xa_for_each`: every entry, ascending index; stops at `f`'s first
    /// error.
    pub fn try_for_each<E>(&self, mut f: impl FnMut(u64, &T) -> Result<(), E>) -> Result<(), E> {
        fn go<T, E>(
            slot: &Slot<T>,
            level: u32,
            base: u64,
            f: &mut impl FnMut(u64, &T) -> Result<(), E>,
        ) -> Result<(), E> {
            match slot {
                Slot::Entry(v) => f(base, v),
                Slot::Node(n) => {
                    let below = level.saturating_sub(1);
                    let shift = below.saturating_mul(XA_CHUNK_SHIFT);
                    for (i, s) in n.slots.iter().enumerate() {
                        if let Some(s) = s.get() {
                            let i = i as u64;
                            go(s, below, base | i.checked_shl(shift).unwrap_or(0), f)?;
                        }
                    }
                    Ok(())
                }
            }
        }
        let height = self.height();
        match self.head(height).get() {
            Some(s) => go(s, height, 0, &mut f),
            None => Ok(()),
        }
    }

    /// `xa_for_each` without errors.
    pub fn for_each(&self, mut f: impl FnMut(u64, &T)) {
        let _ = self.try_for_each::<std::convert::Infallible>(|i, v| {
            f(i, v);
            Ok(())
        });
    }
}

/// `struct kho_mem_phys`: one order's bitmaps.
#[derive(Debug, Default)]
struct KhoMemPhys {
    /// `phys_bits`: bitmap index -> the bitmap's address.
    phys_bits: XArray<PhysAddr>,
}

/// kmalloc-512 (or the page allocator, for page bitmaps) as the model
/// keeps its books: the current slab page, its slots used, slots freed,
/// every page it holds.
#[derive(Debug, Default)]
struct Slab {
    current: Option<(PhysAddr, u64)>,
    free: Vec<PhysAddr>,
    pages: Vec<PhysAddr>,
}

/// Linux 6.16's tracker: see the module doc.
pub struct XarrayScheme<'a, M: ?Sized> {
    mem: &'a M,
    size: BitmapSize,
    /// `track->orders`.
    orders: XArray<Arc<KhoMemPhys>>,
    /// `kho_mem_phys` objects installed.
    physxa: AtomicU64,
    slab: Mutex<Slab>,
    /// The first chunk and the number of chunks, once finalized.
    chunks: Option<(PhysAddr, u64)>,
}

impl<M: ?Sized> std::fmt::Debug for XarrayScheme<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XarrayScheme")
            .field("size", &self.size)
            .field("chunks", &self.chunks)
            .finish_non_exhaustive()
    }
}

/// `kho_mem_serialize`'s output, written in place: the chunk being filled
/// (its page, order and entries in use), the first chunk, chunks made.
struct ChunkWriter<'m, M: ?Sized> {
    mem: &'m M,
    cur: Option<(&'m kho::AtomicPage, Order, u32)>,
    first: PhysAddr,
    made: u64,
}

impl<'m, M: PageAlloc + PageMap + ?Sized> ChunkWriter<'m, M> {
    /// `new_chunk()`: a zeroed page for `order`, linked from the previous
    /// chunk.
    fn new_chunk(&mut self, order: Order) -> Result<(), SchemeError> {
        let phys = self.mem.alloc_zeroed_page()?;
        let page = self.mem.page(phys)?;
        match self.cur {
            Some((prev, ..)) => prev.words()[0].store(phys.as_u64(), Ordering::Relaxed),
            None => self.first = phys,
        }
        page.words()[1].store(chunk_hdr_word(order, 0), Ordering::Relaxed);
        self.cur = Some((page, order, 0));
        self.made += 1;
        Ok(())
    }

    /// One entry `{start, bitmap}`, in a new chunk when this one holds 255.
    fn push(&mut self, order: Order, start: u64, bitmap: PhysAddr) -> Result<(), SchemeError> {
        if self
            .cur
            .is_none_or(|(_, _, n)| n as usize == KHOSER_BITMAP_SIZE)
        {
            self.new_chunk(order)?;
        }
        if let Some((page, order, n)) = &mut self.cur {
            let at = 2 + 2 * *n as usize;
            page.words()[at].store(start, Ordering::Relaxed);
            page.words()[at + 1].store(bitmap.as_u64(), Ordering::Relaxed);
            *n += 1;
            page.words()[1].store(chunk_hdr_word(*order, *n), Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Word 1 of a chunk page: `hdr.order` and `hdr.num_elms`, two
/// native-endian u32s.
fn chunk_hdr_word(order: Order, num_elms: u32) -> u64 {
    zerocopy::transmute!([order.as_u32(), num_elms])
}

impl<'a, M: PageAlloc + PageMap + ?Sized> XarrayScheme<'a, M> {
    /// An empty tracker with bitmaps of `size`.
    pub fn new(mem: &'a M, size: BitmapSize) -> Self {
        Self {
            mem,
            size,
            orders: XArray::new(),
            physxa: AtomicU64::new(0),
            slab: Mutex::new(Slab::default()),
            chunks: None,
        }
    }

    fn slab(&self) -> std::sync::MutexGuard<'_, Slab> {
        self.slab.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `kzalloc(sizeof(struct kho_mem_phys_bits))`.
    fn alloc_bitmap(&self) -> Result<PhysAddr, SchemeError> {
        let mut s = self.slab();
        if let Some(b) = s.free.pop() {
            return Ok(b);
        }
        let per_page = PAGE_SIZE / self.size.bytes();
        let (page, used) = match s.current {
            Some((page, used)) if used < per_page => (page, used),
            _ => {
                let page = self.mem.alloc_zeroed_page()?;
                s.pages.push(page);
                (page, 0)
            }
        };
        s.current = Some((page, used + 1));
        page.checked_add(used * self.size.bytes())
            .ok_or(SchemeError::Mem(kho::MemError::OutOfMemory))
    }

    /// `kfree` of a bitmap that lost the `xa_cmpxchg` race (still zero).
    fn free_bitmap(&self, bitmap: PhysAddr) {
        self.slab().free.push(bitmap);
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

    /// `xa_load_or_alloc(&track->orders, order, ..)`.
    fn physxa(&self, order: u64) -> &KhoMemPhys {
        if let Some(p) = self.orders.load(order) {
            return p;
        }
        match self
            .orders
            .cmpxchg_empty(order, Arc::new(KhoMemPhys::default()))
        {
            Ok(p) => {
                self.physxa.fetch_add(1, Ordering::Relaxed);
                p
            }
            // Lost the race: ours is dropped (kfree), theirs used.
            Err(p) => p,
        }
    }

    /// `xa_load_or_alloc(&physxa->phys_bits, index, ..)`.
    fn bitmap(&self, physxa: &KhoMemPhys, index: u64) -> Result<PhysAddr, SchemeError> {
        if let Some(&b) = physxa.phys_bits.load(index) {
            return Ok(b);
        }
        let new = self.alloc_bitmap()?;
        match physxa.phys_bits.cmpxchg_empty(index, new) {
            Ok(&b) => Ok(b),
            Err(&b) => {
                self.free_bitmap(new);
                Ok(b)
            }
        }
    }

    /// Every chunk page, in list order.
    fn chunk_pages(&self) -> Vec<PhysAddr> {
        let mut out = Vec::new();
        let Some((mut next, n)) = self.chunks else {
            return out;
        };
        for _ in 0..n {
            out.push(next);
            next = self.mem.page(next).map_or(PhysAddr::ZERO, |p| {
                PhysAddr::new(p.words()[0].load(Ordering::Relaxed))
            });
        }
        out
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
        if self.chunks.is_some() {
            return Err(SchemeError::Finalized);
        }
        let (index, bit) = self.position(block);
        let physxa = self.physxa(u64::from(block.order().as_u32()));
        let bitmap = self.bitmap(physxa, index)?;
        self.update_bit(bitmap, bit, true)
    }

    fn unpreserve(&self, block: Block) -> Result<(), SchemeError> {
        let (index, bit) = self.position(block);
        let bitmap = self
            .orders
            .load(u64::from(block.order().as_u32()))
            .and_then(|p| p.phys_bits.load(index).copied());
        match bitmap {
            Some(b) => self.update_bit(b, bit, false),
            // Linux returns quietly.
            None => Ok(()),
        }
    }

    fn finalize(&mut self) -> Result<Handover, SchemeError> {
        if self.chunks.is_some() {
            return Err(SchemeError::Finalized);
        }
        let size = self.size;
        let mut w = ChunkWriter {
            mem: self.mem,
            cur: None,
            first: PhysAddr::ZERO,
            made: 0,
        };
        self.orders.try_for_each(|order, physxa| {
            let order =
                Order::try_new(u32::try_from(order).unwrap_or(u32::MAX)).unwrap_or(Order::ZERO);
            w.new_chunk(order)?;
            physxa.phys_bits.try_for_each(|index, &bitmap| {
                // (index * PRESERVE_BITS) << (order + PAGE_SHIFT)
                let start = index.checked_shl(size.span_shift(order)).unwrap_or(0);
                w.push(order, start, bitmap)
            })
        })?;
        let (first, made) = (w.first, w.made);
        self.chunks = Some((first, made));
        Ok(Handover {
            compatible: SchemeKind::Xarray512.compatible(),
            root: first,
        })
    }

    fn metadata(&self) -> Metadata {
        let mut nodes = self.orders.nodes();
        self.orders.for_each(|_, x| nodes += x.phys_bits.nodes());
        let physxa = self.physxa.load(Ordering::Relaxed);
        let mut pages: Vec<PhysAddr> = self.slab().pages.clone();
        pages.extend(self.chunk_pages());
        pages.sort_unstable();
        Metadata {
            pages,
            object_bytes: nodes * XA_NODE_BYTES + physxa * KHO_MEM_PHYS_BYTES,
            object_pages: slab_pages(nodes, XA_NODE_BYTES) + slab_pages(physxa, KHO_MEM_PHYS_BYTES),
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

    /// Touching extents merged as read ([`super::coalesce_as_read`]),
    /// heads in the same pass.
    fn coalesced<F>(&mut self, head: F) -> Result<(Vec<kho::PhysRange>, MapSummary), SchemeError>
    where
        F: FnMut(kho::Block) -> Result<(), ReserveError>,
    {
        super::coalesce_as_read(self, head)
    }
}
