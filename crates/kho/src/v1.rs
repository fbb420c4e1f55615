//! The kho-v1 chunk list: the preserved-memory map of Linux 6.16 and 6.17
//! handovers, read side ([`V1Reader`], whose documentation draws the layout
//! and lists the checks in order; a writer for tests is in `testing`).

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

use core::iter::{Enumerate, Take};
use core::slice::{ChunksExact, Iter};
use core::sync::atomic::Ordering;

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::addr::{Block, Order, PAGE_SHIFT, PAGE_SIZE, PhysAddr, PhysRange};
use crate::mem::{AtomicPage, AtomicU64, MemError, PAGE_WORDS, PageMap, RamMap};

/// Entries per chunk: `KHOSER_BITMAP_SIZE = (4096 - 16) / 16`.
pub const KHOSER_BITMAP_SIZE: usize = 255;

/// Chunk header, `struct khoser_mem_chunk_hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct KhoserMemChunkHdr {
    next: u64,
    order: u32,
    num_elms: u32,
}

/// One entry, `struct khoser_mem_bitmap_ptr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct KhoserMemBitmapPtr {
    phys_start: u64,
    bitmap: u64,
}

/// One chunk page, `struct khoser_mem_chunk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct KhoserMemChunk {
    hdr: KhoserMemChunkHdr,
    bitmaps: [KhoserMemBitmapPtr; KHOSER_BITMAP_SIZE],
}

const _: () = assert!(size_of::<KhoserMemChunkHdr>() == 16);
const _: () = assert!(size_of::<KhoserMemBitmapPtr>() == 16);
const _: () = assert!(size_of::<KhoserMemChunk>() == 4096);
/// Word index of `bitmaps[0]` within the chunk page.
const FIRST_ENTRY_WORD: usize = size_of::<KhoserMemChunkHdr>() / 8;

impl KhoserMemChunkHdr {
    /// Phys of the next chunk (zero ends the list).
    pub fn next(&self) -> PhysAddr {
        PhysAddr::new(self.next)
    }

    /// The raw order field (validated by the reader).
    pub fn order_raw(&self) -> u32 {
        self.order
    }

    /// The raw entry count (validated by the reader).
    pub fn num_elms(&self) -> u32 {
        self.num_elms
    }
}

impl KhoserMemBitmapPtr {
    /// An entry.
    pub fn new(phys_start: PhysAddr, bitmap: PhysAddr) -> Self {
        Self {
            phys_start: phys_start.as_u64(),
            bitmap: bitmap.as_u64(),
        }
    }

    /// First byte covered by the bitmap.
    pub fn phys_start(&self) -> PhysAddr {
        PhysAddr::new(self.phys_start)
    }

    /// Where the bitmap is.
    pub fn bitmap(&self) -> PhysAddr {
        PhysAddr::new(self.bitmap)
    }
}

impl KhoserMemChunk {
    /// An empty chunk for blocks of `order` (Linux `new_chunk()`).
    pub fn new(order: Order) -> Self {
        let mut chunk = Self::new_zeroed();
        chunk.hdr.order = order.as_u32();
        chunk
    }

    /// The header.
    pub fn hdr(&self) -> &KhoserMemChunkHdr {
        &self.hdr
    }

    /// Links the next chunk.
    pub fn set_next(&mut self, next: PhysAddr) {
        self.hdr.next = next.as_u64();
    }

    /// Appends an entry; `false` if the chunk is full.
    pub fn push(&mut self, entry: KhoserMemBitmapPtr) -> bool {
        let Ok(i) = usize::try_from(self.hdr.num_elms) else {
            return false;
        };
        match self.bitmaps.get_mut(i) {
            Some(slot) => {
                *slot = entry;
                self.hdr.num_elms = self.hdr.num_elms.saturating_add(1);
                true
            }
            None => false,
        }
    }

    /// The entries in use (at most 255, whatever `num_elms` says).
    pub fn entries(&self) -> &[KhoserMemBitmapPtr] {
        let n = usize::try_from(self.hdr.num_elms).unwrap_or(KHOSER_BITMAP_SIZE);
        self.bitmaps
            .get(..n.min(KHOSER_BITMAP_SIZE))
            .unwrap_or_default()
    }

    /// The page as 512 native-endian words.
    pub fn to_words(&self) -> [u64; PAGE_WORDS] {
        zerocopy::transmute!(*self)
    }

    /// A copy of the chunk held in `page` (relaxed loads).
    pub fn from_page(page: &AtomicPage) -> Self {
        zerocopy::transmute!(page.snapshot())
    }
}

/// The size of one bitmap: the caller must know which kernel wrote the list,
/// both shipped under the `kho-v1` compatible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BitmapSize {
    /// 512 bytes, 4096 bits, 512-byte aligned (Linux 6.16, early 6.17.y).
    Bytes512,
    /// One page, 32768 bits, page aligned (later 6.17.y).
    Page,
}

impl BitmapSize {
    /// Bytes of one bitmap.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Bytes512 => 512,
            Self::Page => PAGE_SIZE,
        }
    }

    /// Bits of one bitmap (`PRESERVE_BITS`).
    pub const fn bits(self) -> u32 {
        1 << self.bits_shift()
    }

    /// log2 of [`BitmapSize::bits`].
    pub const fn bits_shift(self) -> u32 {
        match self {
            Self::Bytes512 => 12,
            Self::Page => 15,
        }
    }

    /// u64 words of one bitmap.
    pub(crate) const fn words(self) -> usize {
        match self {
            Self::Bytes512 => 64,
            Self::Page => PAGE_WORDS,
        }
    }

    /// log2 of the bytes one bitmap of `order` covers (up to 15 + 63 = 78).
    pub const fn span_shift(self, order: Order) -> u32 {
        self.bits_shift().saturating_add(order.shift())
    }
}

/// Why a chunk list was rejected: the first broken invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum V1Error {
    /// A chunk pointer that is not page aligned.
    #[error("chunk pointer {chunk} is not page aligned")]
    ChunkUnaligned {
        /// The pointer.
        chunk: PhysAddr,
    },
    /// A chunk page not wholly in RAM.
    #[error("chunk {chunk} is not in RAM")]
    ChunkOutsideRam {
        /// The chunk.
        chunk: PhysAddr,
    },
    /// A chunk page in a forbidden range (scratch, kernel, ...).
    #[error("chunk {chunk} lies in forbidden range {forbidden}")]
    ChunkForbidden {
        /// The chunk.
        chunk: PhysAddr,
        /// The forbidden range it touches.
        forbidden: PhysRange,
    },
    /// More chunks than the budget allows.
    #[error("chunk {chunk} is past the budget of {limit} chunks")]
    ChunkBudget {
        /// The first chunk over budget.
        chunk: PhysAddr,
        /// The budget.
        limit: u64,
    },
    /// The list loops: this chunk was reached twice.
    #[error("chunk {chunk} is reached twice: the list has a cycle")]
    ChunkCycle {
        /// A chunk on the cycle.
        chunk: PhysAddr,
    },
    /// A page the RAM map calls RAM that the page map cannot reach.
    #[error("page {phys} cannot be mapped: {source}")]
    Unmapped {
        /// The page.
        phys: PhysAddr,
        /// Why.
        source: MemError,
    },
    /// `num_elms` above 255.
    #[error("chunk {chunk} claims {num_elms} entries, at most {max} fit")]
    TooManyEntries {
        /// The chunk.
        chunk: PhysAddr,
        /// The claimed count.
        num_elms: u32,
        /// 255.
        max: u32,
    },
    /// An order above [`Order::MAX`].
    #[error("chunk {chunk} has order {order}, above the largest order {max}")]
    BadOrder {
        /// The chunk.
        chunk: PhysAddr,
        /// The raw order.
        order: u32,
        /// [`Order::MAX`].
        max: Order,
    },
    /// A bitmap pointer not aligned to the bitmap size.
    #[error("chunk {chunk} entry {entry}: bitmap {bitmap} is not {align}-byte aligned")]
    BitmapUnaligned {
        /// The chunk.
        chunk: PhysAddr,
        /// The entry index.
        entry: u32,
        /// The pointer.
        bitmap: PhysAddr,
        /// The alignment required.
        align: u64,
    },
    /// A bitmap not wholly in RAM.
    #[error("chunk {chunk} entry {entry}: bitmap {bitmap} is not in RAM")]
    BitmapOutsideRam {
        /// The chunk.
        chunk: PhysAddr,
        /// The entry index.
        entry: u32,
        /// The pointer.
        bitmap: PhysAddr,
    },
    /// A bitmap in a forbidden range.
    #[error("chunk {chunk} entry {entry}: bitmap {bitmap} lies in forbidden range {forbidden}")]
    BitmapForbidden {
        /// The chunk.
        chunk: PhysAddr,
        /// The entry index.
        entry: u32,
        /// The pointer.
        bitmap: PhysAddr,
        /// The forbidden range it touches.
        forbidden: PhysRange,
    },
    /// `phys_start` not a multiple of the bitmap's span.
    #[error(
        "chunk {chunk} entry {entry}: phys_start {phys_start} is not a multiple of the \
         2^{span_shift}-byte span of an order-{order} bitmap"
    )]
    PhysStartMisaligned {
        /// The chunk.
        chunk: PhysAddr,
        /// The entry index.
        entry: u32,
        /// The value found.
        phys_start: PhysAddr,
        /// The chunk's order.
        order: Order,
        /// log2 of the span in bytes.
        span_shift: u32,
    },
    /// A set bit whose block address does not fit in 64 bits.
    #[error(
        "chunk {chunk} entry {entry}: bit {bit} of order {order} from {phys_start} overflows \
         the physical address space"
    )]
    BlockOverflow {
        /// The chunk.
        chunk: PhysAddr,
        /// The entry index.
        entry: u32,
        /// The entry's phys_start.
        phys_start: PhysAddr,
        /// The order.
        order: Order,
        /// The bit.
        bit: u32,
    },
    /// A block not wholly inside one RAM range.
    #[error("chunk {chunk} entry {entry}: block {block:?} is not in RAM")]
    BlockOutsideRam {
        /// The chunk.
        chunk: PhysAddr,
        /// The entry index.
        entry: u32,
        /// The block.
        block: Block,
    },
    /// A block in a forbidden range.
    #[error("chunk {chunk} entry {entry}: block {block:?} lies in forbidden range {forbidden}")]
    BlockForbidden {
        /// The chunk.
        chunk: PhysAddr,
        /// The entry index.
        entry: u32,
        /// The block.
        block: Block,
        /// The forbidden range it touches.
        forbidden: PhysRange,
    },
    /// Two entries name the same bitmap (the same 512-byte slot, or the
    /// same page): Linux allocates one bitmap per entry, so a shared one
    /// is corruption (and would repeat every block it holds).
    #[error(
        "chunk {chunk} entry {entry}: bitmap {bitmap} is already the bitmap of chunk \
         {first_chunk} entry {first_entry}"
    )]
    BitmapShared {
        /// The bitmap.
        bitmap: PhysAddr,
        /// The chunk of the entry that named it first.
        first_chunk: PhysAddr,
        /// That entry's index.
        first_entry: u32,
        /// The chunk of the entry that names it again.
        chunk: PhysAddr,
        /// That entry's index.
        entry: u32,
    },
    /// A bitmap that lies in a chunk page of the list: chunks and bitmaps
    /// are separate allocations.
    #[error(
        "chunk {chunk} entry {entry}: bitmap {bitmap} lies in chunk page {list_chunk} of the list"
    )]
    BitmapInChunk {
        /// The chunk of the entry.
        chunk: PhysAddr,
        /// The entry index.
        entry: u32,
        /// The bitmap.
        bitmap: PhysAddr,
        /// The chunk page it lies in.
        list_chunk: PhysAddr,
    },
    /// Two blocks share pages (found by [`V1Reader::read_all`] and
    /// [`V1Reader::check`]).
    #[error("blocks {first:?} and {second:?} overlap")]
    Overlap {
        /// The earlier block (by address).
        first: Block,
        /// The block that starts inside it.
        second: Block,
    },
}

/// The work a chunk-list read has done, in units the tests count: chunks
/// entered, entries checked, bitmap words loaded, blocks yielded.
///
/// Every unit is bounded by the one before it: at most 255 entries per
/// chunk, [`BitmapSize::bytes`]` / 8` words per entry, 64 blocks per word;
/// so a read of `c` chunks costs at most [`V1Work::bound`]`(size, c)`
/// units, and the chunks are capped by the reader's chunk budget (by
/// default [`V1Reader::chunk_cap`], what the RAM can justify). A bitmap
/// named by two entries is rejected ([`V1Error::BitmapShared`]), so the
/// words loaded are distinct memory: no amplification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V1Work {
    /// Chunks entered.
    pub chunks: u64,
    /// Entries checked.
    pub entries: u64,
    /// Bitmap words loaded.
    pub words: u64,
    /// Blocks yielded.
    pub blocks: u64,
}

impl V1Work {
    /// All units.
    pub const fn total(&self) -> u64 {
        self.chunks
            .saturating_add(self.entries)
            .saturating_add(self.words)
            .saturating_add(self.blocks)
    }

    /// The most units a read of `chunks` chunks of `size` bitmaps can
    /// cost: `chunks * (1 + 255 * (1 + 65 * words))`.
    pub const fn bound(size: BitmapSize, chunks: u64) -> u64 {
        // Constants: 65 * 512 + 1 fits easily; the products saturate.
        let words = match size {
            BitmapSize::Bytes512 => 64u64,
            BitmapSize::Page => 512u64,
        };
        let per_entry = words.saturating_mul(65).saturating_add(1);
        let per_chunk = per_entry.saturating_mul(255).saturating_add(1);
        chunks.saturating_mul(per_chunk)
    }
}

/// Reads kho-v1 chunk lists from untrusted memory.
///
/// # Layout (one 4096-byte page, native-endian, little-endian on our hosts)
///
/// | offset    | size | field (Linux type)                   | meaning                         |
/// |-----------|------|--------------------------------------|---------------------------------|
/// | 0         | 8    | `hdr.next` (`DECLARE_KHOSER_PTR`)    | phys of the next chunk, 0: last |
/// | 8         | 4    | `hdr.order` (`unsigned int`)         | order of every block here       |
/// | 12        | 4    | `hdr.num_elms` (`unsigned int`)      | entries in use, at most 255     |
/// | 16 + 16 i | 8    | `bitmaps[i].phys_start` (`phys_addr_t`) | first byte the bitmap covers |
/// | 24 + 16 i | 8    | `bitmaps[i].bitmap` (`DECLARE_KHOSER_PTR`) | phys of the bitmap        |
///
/// `KHOSER_BITMAP_SIZE = (PAGE_SIZE - sizeof(hdr)) / sizeof(entry) = (4096 -
/// 16) / 16 = 255`, so a chunk is exactly one page (`static_assert` in Linux,
/// a `const` assertion here). Bit `b` of a bitmap is bit `b % 64` of its
/// u64 word `b / 64` (`DECLARE_BITMAP`, `for_each_set_bit`).
///
/// How Linux writes it (`kho_mem_serialize()`): for each order present, in
/// ascending order (`xa_for_each` over the order xarray), a fresh chunk; for
/// each bitmap of that order in ascending xarray index, one entry, starting
/// a new chunk when 255 are in use. `phys_start = (index * PRESERVE_BITS) <<
/// (order + PAGE_SHIFT)`, so it is a multiple of the span; the index is
/// `pfn >> order` divided by `PRESERVE_BITS`. Chunks and bitmaps are plain
/// `kzalloc` memory, not themselves preserved: the next kernel must read the
/// list from scratch memory before it allocates elsewhere.
///
/// Two bitmap sizes shipped under the same `kho-v1` compatible, so the caller
/// chooses ([`BitmapSize`]):
/// - 6.16 and early 6.17.y: `PRESERVE_BITS = 512 * 8`, bitmaps from
///   `kzalloc(512)`, hence 512-byte aligned (kmalloc aligns power-of-two
///   sizes naturally) and several to a page;
/// - later: `PRESERVE_BITS = PAGE_SIZE * 8`, bitmaps one page,
///   `static_assert(sizeof(struct kho_mem_phys_bits) == PAGE_SIZE)`, page
///   aligned.
///
/// Source: Linux 6.16 `kernel/kexec_handover.c` (`khoser_mem_chunk_hdr`,
/// `khoser_mem_bitmap_ptr`, `khoser_mem_chunk`, `kho_mem_serialize`,
/// `deserialize_bitmap`, `kho_mem_deserialize`), and the later patch
/// "kho: make preserved bitmaps PAGE_SIZE" (`PRESERVE_BITS (PAGE_SIZE * 8)`).
///
/// # Validation
///
/// The list is untrusted. [`V1Blocks`] checks, in this order, and stops at
/// the first failure with a [`V1Error`] that carries the addresses and
/// values (a whole-list check that also rejects overlaps without
/// collecting the blocks: [`V1Reader::check`]):
/// 1. each chunk: page aligned, wholly in RAM, clear of the forbidden ranges
///    (scratch, kernel, ...), within the chunk budget, not seen before
///    (Brent's cycle detection: no memory, detects a loop after at most two
///    more trips around it), mapped; then `num_elms <= 255` and a valid
///    [`Order`];
/// 2. each entry: bitmap aligned to its size, wholly in RAM, clear of the
///    forbidden ranges, mapped; `phys_start` a multiple of the span;
/// 3. each set bit: the block's address fits in 64 bits, the block lies in
///    one RAM range and clear of the forbidden ranges.
///
/// Under `alloc` the stream also remembers the chunk pages and the bitmaps
/// with a set bit it entered (8 to 24 bytes per entry; distinct memory
/// holding data, so at most 8 per page the image holds, whatever the list
/// claims): a bitmap named by two entries is [`V1Error::BitmapShared`]
/// (both entries named), a bitmap inside a chunk page of the list is
/// [`V1Error::BitmapInChunk`], and a chunk entered twice is a cycle at
/// once. A bitmap with no bit set is not remembered: it yields no block,
/// so naming it twice repeats nothing; one lying in a chunk page entered
/// later is found when the list ends, by reading the entries again.
/// Without `alloc` only Brent's check runs.
///
/// Blocks come out in list order, as Linux restores them. Overlaps between
/// blocks (the same bit in two entries, or blocks of different orders over
/// the same pages) cannot be seen in a stream: [`V1Reader::read_all`]
/// (under `alloc`) collects, sorts and checks them, at `O(N log N)` time and
/// 16 bytes per block; [`V1Reader::check`] finds the same overlaps from the
/// entries (24 bytes each), not the blocks. Work is bounded: at most
/// `budget` chunks of 255 entries, each bitmap read one word at a time and
/// each word loaded once ([`V1Work`]).
/// A consumer must treat any error as fatal for the whole handover: with a
/// cycle, blocks of the looping chunks may repeat before it is detected.
#[derive(Debug)]
pub struct V1Reader<'a, M: ?Sized> {
    map: &'a M,
    ram: RamMap<'a>,
    size: BitmapSize,
    budget: u64,
}

impl<M: ?Sized> Clone for V1Reader<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M: ?Sized> Copy for V1Reader<'_, M> {}

impl<'a, M: PageMap + ?Sized> V1Reader<'a, M> {
    /// A reader over `map`, checking against `ram`, for bitmaps of `size`.
    /// The chunk budget defaults to [`V1Reader::chunk_cap`].
    pub fn new(map: &'a M, ram: RamMap<'a>, size: BitmapSize) -> Self {
        Self {
            map,
            ram,
            size,
            budget: Self::chunk_cap(ram, size),
        }
    }

    /// The most chunks a list Linux wrote for this RAM can have: Linux
    /// starts a fresh chunk per order and fills each with 255 entries, one
    /// per bitmap, and a bitmap exists only for a span (`bits << (order +
    /// 12)` bytes, aligned) that holds a preserved page, so a span that
    /// meets RAM. Hence `sum over orders of ceil(spans meeting RAM / 255)`,
    /// never more than the RAM's pages. For 1 TiB of RAM in one range:
    /// 564 chunks with 512-byte bitmaps, 115 with page bitmaps.
    pub fn chunk_cap(ram: RamMap<'_>, size: BitmapSize) -> u64 {
        let per_chunk = u64::try_from(KHOSER_BITMAP_SIZE).unwrap_or(1).max(1);
        let mut chunks = 0u64;
        for raw in 0..=Order::MAX.as_u32() {
            let Ok(order) = Order::try_new(raw) else {
                continue;
            };
            let shift = size.span_shift(order);
            let spans = ram
                .ram()
                .iter()
                .filter(|r| !r.is_empty())
                .map(|r| {
                    let first = r.start().as_u64().checked_shr(shift).unwrap_or(0);
                    let last = r
                        .end()
                        .as_u64()
                        .saturating_sub(1)
                        .checked_shr(shift)
                        .unwrap_or(0);
                    last.saturating_sub(first).saturating_add(1)
                })
                .fold(0u64, u64::saturating_add);
            chunks = chunks.saturating_add(spans.div_ceil(per_chunk));
        }
        chunks.min(ram.ram_bytes() >> PAGE_SHIFT)
    }

    /// The chunk budget in force.
    pub fn chunk_budget(&self) -> u64 {
        self.budget
    }

    /// The bitmap size this reader reads.
    pub fn bitmap_size(&self) -> BitmapSize {
        self.size
    }

    /// Stops with [`V1Error::ChunkBudget`] past `chunks` chunks.
    pub fn with_chunk_budget(mut self, chunks: u64) -> Self {
        self.budget = chunks;
        self
    }

    /// Caps the chunk budget by the metadata actually present: `pages`
    /// pages the memory holds as data (an image's file bytes), the rest
    /// reading as zero. A chunk on a zero page has `next = 0` and no
    /// entry, so it ends the list: a list has at most `pages + 1` chunks,
    /// whatever RAM the image declares.
    pub fn with_present_pages(mut self, pages: u64) -> Self {
        self.budget = self.budget.min(pages.saturating_add(1));
        self
    }

    /// The blocks of the list starting at `head` (zero: an empty list), in
    /// list order. The iterator ends after the first error.
    pub fn blocks(&self, head: PhysAddr) -> V1Blocks<'a, M> {
        V1Blocks {
            map: self.map,
            ram: self.ram,
            size: self.size,
            budget: self.budget,
            next_chunk: head,
            visited: 0,
            brent: Brent::new(),
            chunk: None,
            bitmap: None,
            done: false,
            work: V1Work::default(),
            #[cfg(feature = "alloc")]
            head,
            #[cfg(feature = "alloc")]
            seen: Seen::default(),
        }
    }

    /// Every block, sorted by address, after checking that no two overlap.
    /// Costs `O(N log N)` time and 16 bytes per block.
    #[cfg(feature = "alloc")]
    pub fn read_all(&self, head: PhysAddr) -> Result<alloc::vec::Vec<Block>, V1Error> {
        let mut blocks = self
            .blocks(head)
            .collect::<Result<alloc::vec::Vec<_>, _>>()?;
        blocks.sort_unstable();
        check_overlaps(&blocks)?;
        Ok(blocks)
    }
}

/// What [`V1Reader::check`] found in a valid list.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V1Summary {
    /// Blocks listed.
    pub blocks: u64,
    /// Bytes they cover.
    pub bytes: u64,
    /// Entries (bitmaps) listed.
    pub entries: u64,
    /// The work the stream did ([`V1Work`]); the overlap pass adds at most
    /// one word load per block and higher order present.
    pub work: V1Work,
}

/// A chunk list [`V1Reader::tracker`] validated, as a tracker: a
/// [`PreservedLookup`](crate::PreservedLookup) and the blocks again
/// ([`V1Tracker::for_each_run`], [`V1Tracker::ascending`]), read from the
/// bitmaps its entries name. It holds one record per entry with a set
/// bit (at most 8 per page of bitmaps), never one per block.
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct V1Tracker<'a, M: ?Sized> {
    reader: V1Reader<'a, M>,
    /// Sorted by (order, phys_start).
    entries: alloc::vec::Vec<EntryRec>,
    /// Bit `o`: an entry of order `o`.
    orders: u64,
    summary: V1Summary,
    bitmap_pages: u64,
}

#[cfg(feature = "alloc")]
impl<'a, M: PageMap + ?Sized> V1Tracker<'a, M> {
    /// What the check found.
    pub fn summary(&self) -> V1Summary {
        self.summary
    }

    /// Pages of the map itself: chunks entered, plus the distinct pages
    /// holding a bitmap with a set bit (a bitmap with none is not
    /// remembered, see [`V1Reader`]).
    pub fn metadata_pages(&self) -> u64 {
        self.summary.work.chunks.saturating_add(self.bitmap_pages)
    }

    /// Calls `f(first, count)` for every run of `count` consecutive blocks
    /// of one order (consecutive set bits of one bitmap), by entry in
    /// (order, phys_start) order, not list order.
    pub fn for_each_run(&self, mut f: impl FnMut(Block, u64)) {
        for e in &self.entries {
            let words = self.reader.bitmap_words(e.bitmap);
            let mut run: Option<(Block, u64, u64)> = None;
            for (w, word) in (0u64..).zip(words) {
                let mut bits = word.load(Ordering::Relaxed);
                while bits != 0 {
                    let t = bits.trailing_zeros();
                    bits &= bits.wrapping_sub(1);
                    let bit = w.saturating_mul(64).saturating_add(u64::from(t));
                    match run.as_mut() {
                        Some((_, n, last)) if last.checked_add(1) == Some(bit) => {
                            *n = n.saturating_add(1);
                            *last = bit;
                        }
                        _ => {
                            if let Some((b, n, _)) = run.take() {
                                f(b, n);
                            }
                            if let Some(b) = V1Reader::<M>::entry_block(e, bit) {
                                run = Some((b, 1, bit));
                            }
                        }
                    }
                }
            }
            if let Some((b, n, _)) = run {
                f(b, n);
            }
        }
    }

    /// The blocks in ascending address order: a k-way merge of the
    /// entries' bitmaps (each ascending), memory per entry.
    pub fn ascending(&self) -> V1Ascending<'_, 'a, M> {
        let mut heap = alloc::collections::BinaryHeap::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(bit) = self.next_bit(e, 0)
                && let Some(b) = V1Reader::<M>::entry_block(e, bit)
            {
                heap.push(core::cmp::Reverse((b.phys(), i, bit)));
            }
        }
        V1Ascending {
            tracker: self,
            heap,
        }
    }

    /// The first set bit of `e` at or after `from`.
    fn next_bit(&self, e: &EntryRec, from: u64) -> Option<u64> {
        let words = self.reader.bitmap_words(e.bitmap);
        let mut w = usize::try_from(from / 64).ok()?;
        let mut mask = u64::MAX.checked_shl(u32::try_from(from % 64).ok()?)?;
        loop {
            let bits = words.get(w)?.load(Ordering::Relaxed) & mask;
            if bits != 0 {
                let w64 = u64::try_from(w).ok()?;
                return Some(
                    w64.saturating_mul(64)
                        .saturating_add(u64::from(bits.trailing_zeros())),
                );
            }
            w = w.checked_add(1)?;
            mask = u64::MAX;
        }
    }
}

#[cfg(feature = "alloc")]
impl<M: PageMap + ?Sized> crate::tracker::PreservedLookup for V1Tracker<'_, M> {
    fn block_containing(&self, phys: PhysAddr) -> Option<Block> {
        let mut orders = self.orders;
        while orders != 0 {
            let raw = orders.trailing_zeros();
            orders &= orders.wrapping_sub(1);
            let Ok(order) = Order::try_new(raw) else {
                continue;
            };
            let span_shift = self.reader.size.span_shift(order);
            let start = phys
                .as_u64()
                .checked_shr(span_shift)
                .and_then(|i| i.checked_shl(span_shift))
                .unwrap_or(0);
            let key = (order, PhysAddr::new(start));
            let lo = self
                .entries
                .partition_point(|e| (e.order, e.phys_start) < key);
            let bit = phys
                .as_u64()
                .wrapping_sub(start)
                .wrapping_shr(order.shift());
            let (Ok(w), m) = (
                usize::try_from(bit / 64),
                1u64.wrapping_shl(bit_in_word(bit)),
            ) else {
                continue;
            };
            for e in self.entries.get(lo..).unwrap_or_default() {
                if (e.order, e.phys_start) != key {
                    break;
                }
                let words = self.reader.bitmap_words(e.bitmap);
                if words
                    .get(w)
                    .is_some_and(|x| x.load(Ordering::Relaxed) & m != 0)
                {
                    return Some(Block::containing(phys, order));
                }
            }
        }
        None
    }
}

/// Bit `bit % 64` of a word.
#[cfg(feature = "alloc")]
fn bit_in_word(bit: u64) -> u32 {
    u32::try_from(bit % 64).unwrap_or(0)
}

/// The blocks of a [`V1Tracker`], ascending; see [`V1Tracker::ascending`].
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct V1Ascending<'t, 'a, M: ?Sized> {
    tracker: &'t V1Tracker<'a, M>,
    /// (next block's address, entry index, its bit), smallest first.
    heap: alloc::collections::BinaryHeap<core::cmp::Reverse<(PhysAddr, usize, u64)>>,
}

#[cfg(feature = "alloc")]
impl<M: PageMap + ?Sized> Iterator for V1Ascending<'_, '_, M> {
    type Item = Block;

    fn next(&mut self) -> Option<Block> {
        let core::cmp::Reverse((_, i, bit)) = self.heap.pop()?;
        let e = self.tracker.entries.get(i)?;
        let block = V1Reader::<M>::entry_block(e, bit)?;
        if let Some(next) = bit
            .checked_add(1)
            .and_then(|from| self.tracker.next_bit(e, from))
            && let Some(b) = V1Reader::<M>::entry_block(e, next)
        {
            self.heap.push(core::cmp::Reverse((b.phys(), i, next)));
        }
        Some(block)
    }
}

#[cfg(feature = "alloc")]
impl<'a, M: PageMap + ?Sized> V1Reader<'a, M> {
    /// Checks the whole list at `head` as [`V1Reader::read_all`] does
    /// (the stream's checks, then no two blocks overlapping) without
    /// collecting the blocks: memory is 40 bytes or so per entry, not per
    /// block, and `f` sees every block in list order.
    ///
    /// Overlaps are found from the entries: two entries' spans (aligned,
    /// of power-of-two sizes) are nested or disjoint, so a block of entry
    /// `A` can only meet a block of an entry `B` of a higher order whose
    /// span holds `A`'s, or of an entry of `A`'s very order and
    /// `phys_start`. Each set bit of `A` is looked up in each such `B`:
    /// at most one word load per block and higher order present.
    pub fn check<F: FnMut(Block)>(&self, head: PhysAddr, f: F) -> Result<V1Summary, V1Error> {
        self.tracker(head, f).map(|t| t.summary)
    }

    /// [`V1Reader::check`], keeping what it learnt as a [`V1Tracker`]: the
    /// entries, to look blocks up and enumerate them again without the
    /// list (memory per entry with a set bit, not per block).
    pub fn tracker<F: FnMut(Block)>(
        &self,
        head: PhysAddr,
        mut f: F,
    ) -> Result<V1Tracker<'a, M>, V1Error> {
        let mut it = self.blocks(head);
        let mut summary = V1Summary::default();
        for block in it.by_ref() {
            let block = block?;
            summary.blocks = summary.blocks.saturating_add(1);
            summary.bytes = summary.bytes.saturating_add(block.size());
            f(block);
        }
        summary.work = it.work;
        let mut entries = core::mem::take(&mut it.seen.entries);
        summary.entries = u64::try_from(entries.len()).unwrap_or(u64::MAX);
        entries.sort_unstable_by_key(|e| (e.order, e.phys_start));
        self.check_entry_overlaps(&entries)?;
        let mut orders = 0u64;
        for e in &entries {
            orders |= 1u64.checked_shl(e.order.as_u32()).unwrap_or(0);
        }
        let mut pages: alloc::vec::Vec<u64> = entries
            .iter()
            .map(|e| e.bitmap.align_down(PAGE_SIZE).as_u64())
            .collect();
        pages.sort_unstable();
        pages.dedup();
        let bitmap_pages = u64::try_from(pages.len()).unwrap_or(u64::MAX);
        Ok(V1Tracker {
            reader: *self,
            entries,
            orders,
            summary,
            bitmap_pages,
        })
    }

    /// The words of a bitmap the stream already checked.
    fn bitmap_words(&self, bitmap: PhysAddr) -> &'a [AtomicU64] {
        let page_phys = bitmap.align_down(PAGE_SIZE);
        let first = bitmap
            .offset_from(page_phys)
            .and_then(|off| usize::try_from(off / 8).ok())
            .unwrap_or(0);
        self.map
            .page(page_phys)
            .ok()
            .and_then(|p| p.words().get(first..first.checked_add(self.size.words())?))
            .unwrap_or_default()
    }

    /// The block of bit `bit` of entry `e` (checked by the stream).
    fn entry_block(e: &EntryRec, bit: u64) -> Option<Block> {
        let off = bit.checked_shl(e.order.shift())?;
        let phys = e.phys_start.checked_add(off)?;
        Block::new(phys, e.order).ok()
    }

    /// See [`V1Reader::check`]; `sorted` by (order, phys_start).
    fn check_entry_overlaps(&self, sorted: &[EntryRec]) -> Result<(), V1Error> {
        let mut present = 0u64;
        for e in sorted {
            present |= 1u64.checked_shl(e.order.as_u32()).unwrap_or(0);
        }
        for (i, a) in sorted.iter().enumerate() {
            let a_words = self.bitmap_words(a.bitmap);
            // Same order and phys_start, later in the sort: a common bit
            // is the same block twice.
            for b in sorted.get(i.saturating_add(1)..).unwrap_or_default() {
                if (b.order, b.phys_start) != (a.order, a.phys_start) {
                    break;
                }
                let b_words = self.bitmap_words(b.bitmap);
                for (w, (x, y)) in a_words.iter().zip(b_words).enumerate() {
                    let common = x.load(Ordering::Relaxed) & y.load(Ordering::Relaxed);
                    if common != 0 {
                        let bit = u64::try_from(w)
                            .unwrap_or(0)
                            .saturating_mul(64)
                            .saturating_add(u64::from(common.trailing_zeros()));
                        if let Some(block) = Self::entry_block(a, bit) {
                            return Err(V1Error::Overlap {
                                first: block,
                                second: block,
                            });
                        }
                    }
                }
            }
            // Higher orders, whose spans may hold this entry's span.
            let upto = 2u64.checked_shl(a.order.as_u32()).unwrap_or(0);
            let mut higher = present & !upto.wrapping_sub(1);
            while higher != 0 {
                let raw = higher.trailing_zeros();
                higher &= higher.wrapping_sub(1);
                let Ok(order) = Order::try_new(raw) else {
                    continue;
                };
                let span_shift = self.size.span_shift(order);
                let start = a
                    .phys_start
                    .as_u64()
                    .checked_shr(span_shift)
                    .and_then(|i| i.checked_shl(span_shift))
                    .unwrap_or(0);
                let key = (order, PhysAddr::new(start));
                let lo = sorted.partition_point(|e| (e.order, e.phys_start) < key);
                for b in sorted.get(lo..).unwrap_or_default() {
                    if (b.order, b.phys_start) != key {
                        break;
                    }
                    self.check_nested(a, a_words, b)?;
                }
            }
        }
        Ok(())
    }

    /// Fails if a set bit of `a` lies in a set block of `b` (of a higher
    /// order, whose span holds `a`'s).
    fn check_nested(
        &self,
        a: &EntryRec,
        a_words: &[AtomicU64],
        b: &EntryRec,
    ) -> Result<(), V1Error> {
        let b_words = self.bitmap_words(b.bitmap);
        let b_shift = b.order.shift();
        for (w, word) in a_words.iter().enumerate() {
            let mut bits = word.load(Ordering::Relaxed);
            while bits != 0 {
                let t = bits.trailing_zeros();
                bits &= bits.wrapping_sub(1);
                let bit = u64::try_from(w)
                    .unwrap_or(0)
                    .saturating_mul(64)
                    .saturating_add(u64::from(t));
                let Some(small) = Self::entry_block(a, bit) else {
                    continue;
                };
                let Some(b_bit) = small
                    .phys()
                    .offset_from(b.phys_start)
                    .and_then(|off| off.checked_shr(b_shift))
                else {
                    continue;
                };
                let Ok(b_word) = usize::try_from(b_bit / 64) else {
                    continue;
                };
                let set = b_words
                    .get(b_word)
                    .is_some_and(|x| x.load(Ordering::Relaxed) & (1u64 << (b_bit % 64)) != 0);
                if set && let Some(big) = Self::entry_block(b, b_bit) {
                    return Err(V1Error::Overlap {
                        first: big,
                        second: small,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Checks sorted blocks for shared pages.
#[cfg(feature = "alloc")]
fn check_overlaps(sorted: &[Block]) -> Result<(), V1Error> {
    // (block reaching furthest so far, its end); ends may be 2^64: u128.
    let mut reach: Option<(Block, u128)> = None;
    for &block in sorted {
        let start = u128::from(block.phys().as_u64());
        if let Some((first, end)) = reach
            && start < end
        {
            return Err(V1Error::Overlap {
                first,
                second: block,
            });
        }
        let end = start.saturating_add(u128::from(block.size()));
        if reach.is_none_or(|(_, e)| end > e) {
            reach = Some((block, end));
        }
    }
    Ok(())
}

/// Brent's cycle detection: a saved "tortoise" chunk, moved to the current
/// chunk whenever the step count reaches the next power of two. A cycle of
/// length `l` entered after `m` chunks is found within `m + 2l` steps or so,
/// with no memory.
#[derive(Debug, Clone, Copy)]
struct Brent {
    tortoise: Option<PhysAddr>,
    power: u64,
    steps: u64,
}

impl Brent {
    const fn new() -> Self {
        Self {
            tortoise: None,
            power: 1,
            steps: 0,
        }
    }

    /// Records a visit; `true` if `chunk` closes a cycle.
    fn visit(&mut self, chunk: PhysAddr) -> bool {
        if self.tortoise == Some(chunk) {
            return true;
        }
        self.steps = self.steps.saturating_add(1);
        if self.steps == self.power {
            self.tortoise = Some(chunk);
            self.power = self.power.saturating_mul(2);
            self.steps = 0;
        }
        false
    }
}

/// What the stream entered so far (under `alloc`): chunk pages, and each
/// bitmap with the entry that named it first.
#[cfg(feature = "alloc")]
#[derive(Debug, Default)]
struct Seen {
    chunks: alloc::collections::BTreeSet<u64>,
    /// Bitmap address -> index in `entries`.
    bitmaps: alloc::collections::BTreeMap<u64, usize>,
    entries: alloc::vec::Vec<EntryRec>,
}

/// One entry entered, for [`V1Reader::check`]'s overlap pass.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Copy)]
struct EntryRec {
    order: Order,
    phys_start: PhysAddr,
    bitmap: PhysAddr,
    chunk: PhysAddr,
    entry: u32,
}

/// The entries of one chunk still to read.
#[derive(Debug)]
struct ChunkScan<'a> {
    phys: PhysAddr,
    order: Order,
    entries: Enumerate<Take<ChunksExact<'a, AtomicU64>>>,
}

/// Where a bitmap sits: what a block error reports.
#[derive(Debug, Clone, Copy)]
struct EntryCtx {
    chunk: PhysAddr,
    entry: u32,
    order: Order,
    phys_start: PhysAddr,
}

/// The set bits of one bitmap still to yield.
#[derive(Debug)]
struct BitmapScan<'a> {
    ctx: EntryCtx,
    words: Enumerate<Iter<'a, AtomicU64>>,
    /// Index of the word in `bits`.
    word: usize,
    /// Bits of that word not yet yielded.
    bits: u64,
}

/// The blocks of a chunk list, in list order; see [`V1Reader::blocks`].
#[derive(Debug)]
pub struct V1Blocks<'a, M: ?Sized> {
    map: &'a M,
    ram: RamMap<'a>,
    size: BitmapSize,
    budget: u64,
    next_chunk: PhysAddr,
    visited: u64,
    brent: Brent,
    chunk: Option<ChunkScan<'a>>,
    bitmap: Option<BitmapScan<'a>>,
    done: bool,
    work: V1Work,
    #[cfg(feature = "alloc")]
    head: PhysAddr,
    #[cfg(feature = "alloc")]
    seen: Seen,
}

impl<'a, M: PageMap + ?Sized> V1Blocks<'a, M> {
    /// The work done so far.
    pub fn work(&self) -> V1Work {
        self.work
    }

    /// Pages of the map read so far: chunks entered, plus the distinct
    /// pages holding a bitmap with a set bit (the bitmaps the stream
    /// remembers, see [`V1Reader`]).
    #[cfg(feature = "alloc")]
    pub fn metadata_pages(&self) -> u64 {
        let mut pages = 0u64;
        let mut last = None;
        for &b in self.seen.bitmaps.keys() {
            let page = b.checked_shr(PAGE_SHIFT);
            if page != last {
                pages = pages.saturating_add(1);
                last = page;
            }
        }
        self.work.chunks.saturating_add(pages)
    }

    fn page(&self, phys: PhysAddr) -> Result<&'a AtomicPage, V1Error> {
        self.map
            .page(phys)
            .map_err(|source| V1Error::Unmapped { phys, source })
    }

    /// Checks and enters the chunk at `chunk`.
    fn enter_chunk(&mut self, chunk: PhysAddr) -> Result<ChunkScan<'a>, V1Error> {
        if !chunk.is_page_aligned() {
            return Err(V1Error::ChunkUnaligned { chunk });
        }
        let range = PhysRange::from_start_size(chunk, PAGE_SIZE)
            .map_err(|_| V1Error::ChunkOutsideRam { chunk })?;
        if !self.ram.is_ram(range) {
            return Err(V1Error::ChunkOutsideRam { chunk });
        }
        if let Some(forbidden) = self.ram.forbidden_overlap(range) {
            return Err(V1Error::ChunkForbidden { chunk, forbidden });
        }
        if self.visited >= self.budget {
            return Err(V1Error::ChunkBudget {
                chunk,
                limit: self.budget,
            });
        }
        self.visited = self.visited.saturating_add(1);
        if self.brent.visit(chunk) {
            return Err(V1Error::ChunkCycle { chunk });
        }
        #[cfg(feature = "alloc")]
        {
            if !self.seen.chunks.insert(chunk.as_u64()) {
                return Err(V1Error::ChunkCycle { chunk });
            }
            let end = chunk.as_u64().saturating_add(PAGE_SIZE);
            if let Some(owner) = self
                .seen
                .bitmaps
                .range(chunk.as_u64()..end)
                .next()
                .and_then(|(_, &i)| self.seen.entries.get(i))
            {
                return Err(V1Error::BitmapInChunk {
                    chunk: owner.chunk,
                    entry: owner.entry,
                    bitmap: owner.bitmap,
                    list_chunk: chunk,
                });
            }
        }
        self.work.chunks = self.work.chunks.saturating_add(1);
        let page = self.page(chunk)?;
        let words = page.words();
        let [next, packed] = [0, 1].map(|i| words.get(i).map_or(0, |w| w.load(Ordering::Relaxed)));
        let hdr: KhoserMemChunkHdr = zerocopy::transmute!([next, packed]);
        let max = u32::try_from(KHOSER_BITMAP_SIZE).unwrap_or(u32::MAX);
        if hdr.num_elms > max {
            return Err(V1Error::TooManyEntries {
                chunk,
                num_elms: hdr.num_elms,
                max,
            });
        }
        let order = Order::try_new(hdr.order).map_err(|_| V1Error::BadOrder {
            chunk,
            order: hdr.order,
            max: Order::MAX,
        })?;
        let num = usize::try_from(hdr.num_elms).unwrap_or(0);
        let entries = words
            .get(FIRST_ENTRY_WORD..)
            .unwrap_or_default()
            .chunks_exact(2)
            .take(num)
            .enumerate();
        self.next_chunk = hdr.next();
        Ok(ChunkScan {
            phys: chunk,
            order,
            entries,
        })
    }

    /// Checks one entry and opens its bitmap.
    fn enter_bitmap(
        &mut self,
        chunk: PhysAddr,
        order: Order,
        entry: u32,
        pair: &[AtomicU64],
    ) -> Result<BitmapScan<'a>, V1Error> {
        let mut raw = [0u64; 2];
        for (r, w) in raw.iter_mut().zip(pair) {
            *r = w.load(Ordering::Relaxed);
        }
        let ptr: KhoserMemBitmapPtr = zerocopy::transmute!(raw);
        let bitmap = ptr.bitmap();
        let align = self.size.bytes();
        let unaligned = V1Error::BitmapUnaligned {
            chunk,
            entry,
            bitmap,
            align,
        };
        if !bitmap.is_aligned(align) {
            return Err(unaligned);
        }
        let range =
            PhysRange::from_start_size(bitmap, align).map_err(|_| V1Error::BitmapOutsideRam {
                chunk,
                entry,
                bitmap,
            })?;
        if !self.ram.is_ram(range) {
            return Err(V1Error::BitmapOutsideRam {
                chunk,
                entry,
                bitmap,
            });
        }
        if let Some(forbidden) = self.ram.forbidden_overlap(range) {
            return Err(V1Error::BitmapForbidden {
                chunk,
                entry,
                bitmap,
                forbidden,
            });
        }
        let phys_start = ptr.phys_start();
        let span_shift = self.size.span_shift(order);
        let start = phys_start.as_u64();
        if start != 0 && start.trailing_zeros() < span_shift {
            return Err(V1Error::PhysStartMisaligned {
                chunk,
                entry,
                phys_start,
                order,
                span_shift,
            });
        }
        let page_phys = bitmap.align_down(PAGE_SIZE);
        #[cfg(feature = "alloc")]
        if self.seen.chunks.contains(&page_phys.as_u64()) {
            return Err(V1Error::BitmapInChunk {
                chunk,
                entry,
                bitmap,
                list_chunk: page_phys,
            });
        }
        let page = self.page(page_phys)?;
        // Word offset of the bitmap in its page; in range by the alignment.
        let first = bitmap
            .offset_from(page_phys)
            .and_then(|off| usize::try_from(off / 8).ok())
            .ok_or(unaligned)?;
        let words = first
            .checked_add(self.size.words())
            .and_then(|end| page.words().get(first..end))
            .ok_or(unaligned)?;
        // Only a bitmap with a set bit is remembered: one with none yields
        // no block, so naming it twice repeats nothing, and the bitmaps
        // remembered are distinct memory holding data (at most 8 per page
        // the image holds), whatever the list claims.
        #[cfg(feature = "alloc")]
        if words.iter().any(|w| w.load(Ordering::Relaxed) != 0) {
            if let Some(first) = self
                .seen
                .bitmaps
                .get(&bitmap.as_u64())
                .and_then(|&i| self.seen.entries.get(i))
            {
                return Err(V1Error::BitmapShared {
                    bitmap,
                    first_chunk: first.chunk,
                    first_entry: first.entry,
                    chunk,
                    entry,
                });
            }
            self.seen
                .bitmaps
                .insert(bitmap.as_u64(), self.seen.entries.len());
            self.seen.entries.push(EntryRec {
                order,
                phys_start,
                bitmap,
                chunk,
                entry,
            });
        }
        Ok(BitmapScan {
            ctx: EntryCtx {
                chunk,
                entry,
                order,
                phys_start,
            },
            words: words.iter().enumerate(),
            word: 0,
            bits: 0,
        })
    }

    /// Checks the block of bit `t` of word `word` of the bitmap at `ctx`.
    fn block(&self, ctx: EntryCtx, word: usize, t: u32) -> Result<Block, V1Error> {
        let EntryCtx {
            chunk,
            entry,
            order,
            phys_start,
        } = ctx;
        let bit = u32::try_from(word)
            .ok()
            .and_then(|w| w.checked_mul(64))
            .and_then(|b| b.checked_add(t))
            .unwrap_or(u32::MAX);
        let overflow = V1Error::BlockOverflow {
            chunk,
            entry,
            phys_start,
            order,
            bit,
        };
        let phys = u128::from(bit)
            .checked_shl(order.shift())
            .and_then(|off| off.checked_add(u128::from(phys_start.as_u64())))
            .and_then(|p| u64::try_from(p).ok())
            .ok_or(overflow)?;
        // phys_start is span aligned, so the block is aligned to its order.
        let block = Block::new(PhysAddr::new(phys), order).map_err(|_| overflow)?;
        let Some(range) = block.range() else {
            return Err(V1Error::BlockOutsideRam {
                chunk,
                entry,
                block,
            });
        };
        if !self.ram.is_ram(range) {
            return Err(V1Error::BlockOutsideRam {
                chunk,
                entry,
                block,
            });
        }
        if let Some(forbidden) = self.ram.forbidden_overlap(range) {
            return Err(V1Error::BlockForbidden {
                chunk,
                entry,
                block,
                forbidden,
            });
        }
        Ok(block)
    }

    /// At the end of the list: an entry whose bitmap lies in a chunk page
    /// entered after it. The stream catches a bitmap with a set bit as it
    /// goes; one with none is not remembered (see [`V1Reader`]), so the
    /// list is read again, entries only, against the chunk pages.
    #[cfg(feature = "alloc")]
    fn bitmaps_in_chunks(&self) -> Result<(), V1Error> {
        let mut at = self.head;
        for _ in 0..self.seen.chunks.len() {
            if at == PhysAddr::ZERO {
                break;
            }
            let words = self.page(at)?.words();
            let load = |i: usize| words.get(i).map_or(0, |w| w.load(Ordering::Relaxed));
            let hdr: KhoserMemChunkHdr = zerocopy::transmute!([load(0), load(1)]);
            let num = usize::try_from(hdr.num_elms)
                .unwrap_or(0)
                .min(KHOSER_BITMAP_SIZE);
            for i in 0..num {
                let word = i.saturating_mul(2).saturating_add(FIRST_ENTRY_WORD + 1);
                let bitmap = PhysAddr::new(load(word));
                let page = bitmap.align_down(PAGE_SIZE);
                if self.seen.chunks.contains(&page.as_u64()) {
                    return Err(V1Error::BitmapInChunk {
                        chunk: at,
                        entry: u32::try_from(i).unwrap_or(u32::MAX),
                        bitmap,
                        list_chunk: page,
                    });
                }
            }
            at = hdr.next();
        }
        Ok(())
    }

    fn fail(&mut self, e: V1Error) -> Option<Result<Block, V1Error>> {
        self.done = true;
        self.chunk = None;
        self.bitmap = None;
        Some(Err(e))
    }
}

impl<'a, M: PageMap + ?Sized> Iterator for V1Blocks<'a, M> {
    type Item = Result<Block, V1Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            if let Some(bm) = self.bitmap.as_mut() {
                if bm.bits != 0 {
                    let t = bm.bits.trailing_zeros();
                    bm.bits &= bm.bits.wrapping_sub(1);
                    let (ctx, word) = (bm.ctx, bm.word);
                    return match self.block(ctx, word, t) {
                        Ok(block) => {
                            self.work.blocks = self.work.blocks.saturating_add(1);
                            Some(Ok(block))
                        }
                        Err(e) => self.fail(e),
                    };
                }
                match bm.words.next() {
                    Some((i, w)) => {
                        bm.word = i;
                        bm.bits = w.load(Ordering::Relaxed);
                        self.work.words = self.work.words.saturating_add(1);
                    }
                    None => self.bitmap = None,
                }
                continue;
            }
            if let Some(ch) = self.chunk.as_mut() {
                match ch.entries.next() {
                    Some((i, pair)) => {
                        let (chunk, order) = (ch.phys, ch.order);
                        let entry = u32::try_from(i).unwrap_or(u32::MAX);
                        self.work.entries = self.work.entries.saturating_add(1);
                        match self.enter_bitmap(chunk, order, entry, pair) {
                            Ok(bm) => self.bitmap = Some(bm),
                            Err(e) => return self.fail(e),
                        }
                    }
                    None => self.chunk = None,
                }
                continue;
            }
            let chunk = self.next_chunk;
            if chunk == PhysAddr::ZERO {
                #[cfg(feature = "alloc")]
                if let Err(e) = self.bitmaps_in_chunks() {
                    return self.fail(e);
                }
                self.done = true;
                return None;
            }
            match self.enter_chunk(chunk) {
                Ok(ch) => self.chunk = Some(ch),
                Err(e) => return self.fail(e),
            }
        }
    }
}

impl<M: PageMap + ?Sized> core::iter::FusedIterator for V1Blocks<'_, M> {}

#[cfg(feature = "alloc")]
mod detect;
#[cfg(feature = "alloc")]
pub use detect::{BitmapEvidence, BitmapVerdict, Undecided, detect_bitmap_size};

#[cfg(all(test, feature = "alloc"))]
mod tests;
