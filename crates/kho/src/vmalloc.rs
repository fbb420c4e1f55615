//! Preserved vmalloc areas (`vmalloc-v1`): a descriptor and a chain of
//! page-sized chunks listing the area's physical pages.
//!
//! Glossary (Linux names in `code`):
//!
//! | name        | meaning                                                                 |
//! |-------------|-------------------------------------------------------------------------|
//! | area        | a vmalloc'ed buffer: virtually contiguous, physically scattered        |
//! | descriptor  | `struct kho_vmalloc`, embedded in its owner's record (memfd, kvm, ...) |
//! | chunk       | `struct kho_vmalloc_chunk`: one page, a `next` link and 511 entries    |
//! | entry       | the physical address of `2^order` contiguous pages of the area         |
//! | terminator  | the first zero entry of the last chunk                                 |
//!
//! # Layout (little-endian)
//!
//! Descriptor, 16 bytes:
//!
//! | offset | size | field (Linux)                        | meaning                                |
//! |--------|------|--------------------------------------|----------------------------------------|
//! | 0      | 8    | `first` (`DECLARE_KHOSER_PTR`)       | phys of the first chunk, 0 = no area   |
//! | 8      | 4    | `total_pages` (`unsigned int`)       | pages of the area (`vm->nr_pages`)     |
//! | 12     | 2    | `flags` (`unsigned short`)           | `KHO_VMALLOC_ALLOC` 1, `KHO_VMALLOC_HUGE_VMAP` 2 |
//! | 14     | 2    | `order` (`unsigned short`)           | order of every entry (`get_vm_area_page_order`) |
//!
//! Chunk, one 4096-byte page:
//!
//! | offset      | size | field (Linux)          | meaning                                      |
//! |-------------|------|------------------------|----------------------------------------------|
//! | 0           | 8    | `hdr.next`             | phys of the next chunk, 0 = last             |
//! | 8 + 8 i     | 8    | `phys[i]`, i < 511     | first byte of entry `i`, 0 = terminator      |
//!
//! How Linux writes an area (`kho_preserve_vmalloc()`): the first chunk is a
//! zeroed page preserved at order 0; every `2^order` pages of the area are
//! preserved with `kho_preserve_pages()` (one block of that order, as the
//! pages are aligned to it) and appended as one entry; when a chunk's 511
//! entries are used a fresh chunk is linked, even if no entry follows. So
//! every chunk but the last is full, and the last holds a terminator
//! (possibly in slot 0). How it reads one back (`kho_restore_vmalloc()`):
//! entries up to the first zero of each chunk, never more than
//! `total_pages`, and exactly `total_pages` in the end.
//!
//! Sources: linux-mm/linux-mm@873e8b59c82f `include/linux/kho/abi/vmalloc.h`
//! (the structures, split out of `kexec_handover.h`, where they are at
//! linux-mm/linux-mm@d3b55a6a3d6c and torvalds/linux@c17ee635fd3a);
//! linux-mm/linux-mm@f139137cacdf `kernel/liveupdate/kho_vmalloc.c`
//! (`KHO_VMALLOC_ALLOC`, `KHO_VMALLOC_HUGE_VMAP`, the writer and reader);
//! the RFC that names the format `KHO_VMALLOC_COMPATIBLE "vmalloc-v1"`.
//!
//! # Validation
//!
//! [`VmallocBlocks::new`] checks the descriptor: known flags, a valid order,
//! a first chunk if there are pages. [`VmallocBlocks`] then checks, and
//! stops at the first failure with a [`VmallocError`]:
//! 1. each chunk: page aligned, RAM and mapped, preserved at order 0 (with a
//!    tracker), no cycle (Brent);
//! 2. each entry: aligned to its order, its pages in RAM, preserved as one
//!    block of the descriptor's order (with a tracker), not past
//!    `total_pages`;
//! 3. each chunk's end: a full chunk has a successor; a terminated chunk has
//!    none, and only zeros after its terminator;
//! 4. the end: exactly `total_pages` pages.
//!
//! Work is bounded by the descriptor: a chunk is entered only after the one
//! before it is full, and entries never pass `total_pages`, so at most
//! `total_pages / 2^order / 511 + 1` chunks are read.
//!
//! [`VmallocArray`] reads an area as an array of fixed-size records (the
//! folio lists of memfd and guest_memfd, the attributes of kvm).

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

use core::fmt;
use core::marker::PhantomData;

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::addr::{Block, Order, PAGE_SHIFT, PhysAddr};
use crate::block::Brent;
use crate::mem::{AtomicPage, PageMap};
use crate::phys::{PAGE_BYTES, PhysReader, ReadError};
use crate::tracker::{Tracker, Unpreserved, expect_block, expect_page};

/// The vmalloc compatible string (a sub-component of `kho-v4;...` and
/// `memfd-v2;vmalloc-v1`).
pub const KHO_VMALLOC_COMPATIBLE: &str = "vmalloc-v1";
/// Entries per chunk: `(4096 - 8) / 8`.
pub const KHO_VMALLOC_SIZE: usize = 511;
/// Flag: the area came from `vmalloc()` (`VM_ALLOC`).
pub const KHO_VMALLOC_ALLOC: u16 = 0x0001;
/// Flag: the area may be mapped with huge pages (`VM_ALLOW_HUGE_VMAP`).
pub const KHO_VMALLOC_HUGE_VMAP: u16 = 0x0002;
/// The flags Linux restores.
pub const KHO_VMALLOC_SUPPORTED_FLAGS: u16 = KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP;

/// `struct kho_vmalloc`.
#[derive(
    Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct KhoVmalloc {
    first: U64,
    total_pages: U32,
    flags: U16,
    order: U16,
}

/// `struct kho_vmalloc_chunk`.
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct KhoVmallocChunk {
    next: U64,
    phys: [U64; KHO_VMALLOC_SIZE],
}

const _: () = assert!(size_of::<KhoVmalloc>() == 16);
const _: () = assert!(size_of::<KhoVmallocChunk>() == PAGE_BYTES);

impl KhoVmalloc {
    /// A descriptor.
    pub fn new(first: PhysAddr, total_pages: u32, flags: u16, order: u16) -> Self {
        Self {
            first: U64::new(first.as_u64()),
            total_pages: U32::new(total_pages),
            flags: U16::new(flags),
            order: U16::new(order),
        }
    }

    /// Phys of the first chunk (0: no area).
    pub fn first(&self) -> PhysAddr {
        PhysAddr::new(self.first.get())
    }

    /// Pages of the area.
    pub fn total_pages(&self) -> u32 {
        self.total_pages.get()
    }

    /// The raw flags.
    pub fn flags(&self) -> u16 {
        self.flags.get()
    }

    /// The raw order of every entry.
    pub fn order(&self) -> u16 {
        self.order.get()
    }

    /// Whether this is the all-zero descriptor of "no area".
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Debug for KhoVmalloc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KhoVmalloc")
            .field("first", &self.first())
            .field("total_pages", &self.total_pages())
            .field("flags", &format_args!("{:#x}", self.flags()))
            .field("order", &self.order())
            .finish()
    }
}

impl KhoVmallocChunk {
    /// An empty chunk.
    pub fn new() -> Self {
        Self::new_zeroed()
    }

    /// Phys of the next chunk.
    pub fn next(&self) -> PhysAddr {
        PhysAddr::new(self.next.get())
    }

    /// Links the next chunk.
    pub fn set_next(&mut self, next: PhysAddr) {
        self.next = U64::new(next.as_u64());
    }

    /// Entry `slot` (`None` past 511).
    pub fn entry(&self, slot: usize) -> Option<PhysAddr> {
        self.phys.get(slot).map(|p| PhysAddr::new(p.get()))
    }

    /// Sets entry `slot`; `false` past 511.
    pub fn set_entry(&mut self, slot: usize, phys: PhysAddr) -> bool {
        match self.phys.get_mut(slot) {
            Some(p) => {
                *p = U64::new(phys.as_u64());
                true
            }
            None => false,
        }
    }
}

impl Default for KhoVmallocChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for KhoVmallocChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.phys.iter().take_while(|p| p.get() != 0).count();
        f.debug_struct("KhoVmallocChunk")
            .field("next", &self.next())
            .field("entries", &used)
            .finish()
    }
}

/// Why a vmalloc area was rejected: the first broken rule, with the chunk,
/// the slot and the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VmallocError {
    /// Flags Linux does not restore.
    #[error("descriptor flags {flags:#x} hold bits Linux does not restore (known: {known:#x})")]
    UnknownFlags {
        /// The flags.
        flags: u16,
        /// The known flags.
        known: u16,
    },
    /// An order whose blocks cannot exist.
    #[error("descriptor order {order} is above the largest order {max}")]
    BadOrder {
        /// The order.
        order: u16,
        /// The largest valid order.
        max: Order,
    },
    /// Pages, but no chunk to list them.
    #[error("descriptor lists {total_pages} pages but no first chunk")]
    MissingFirstChunk {
        /// `total_pages`.
        total_pages: u32,
    },
    /// A chunk pointer that is not page aligned.
    #[error("chunk pointer {chunk} is not page aligned")]
    ChunkUnaligned {
        /// The pointer.
        chunk: PhysAddr,
    },
    /// A chunk that is not RAM or cannot be mapped.
    #[error("chunk {chunk} cannot be read: {source}")]
    ChunkRead {
        /// The chunk.
        chunk: PhysAddr,
        /// Why.
        source: ReadError,
    },
    /// A chunk the tracker does not hold as an order-0 page.
    #[error("chunk {chunk}: {source}")]
    ChunkNotPreserved {
        /// The chunk.
        chunk: PhysAddr,
        /// How the tracker holds it.
        source: Unpreserved,
    },
    /// The chunk list comes back to a chunk it passed.
    #[error("chunk list loops back at chunk {chunk}")]
    ChunkCycle {
        /// A chunk on the loop.
        chunk: PhysAddr,
    },
    /// An entry not aligned to the descriptor's order.
    #[error("chunk {chunk} slot {slot}: page {page} is not aligned to order {order}")]
    PageUnaligned {
        /// The chunk.
        chunk: PhysAddr,
        /// The slot.
        slot: u16,
        /// The entry.
        page: PhysAddr,
        /// The descriptor's order.
        order: Order,
    },
    /// An entry whose pages are not all RAM.
    #[error("chunk {chunk} slot {slot}: {block:?} is not RAM")]
    PageOutsideRam {
        /// The chunk.
        chunk: PhysAddr,
        /// The slot.
        slot: u16,
        /// The entry's block.
        block: Block,
    },
    /// An entry the tracker does not hold as one block of the order.
    #[error("chunk {chunk} slot {slot}: {source}")]
    PageNotPreserved {
        /// The chunk.
        chunk: PhysAddr,
        /// The slot.
        slot: u16,
        /// How the tracker holds it.
        source: Unpreserved,
    },
    /// An entry past `total_pages`.
    #[error(
        "chunk {chunk} slot {slot}: {pages} pages listed so far plus this entry's exceed total_pages {total_pages}"
    )]
    CountOverflow {
        /// The chunk.
        chunk: PhysAddr,
        /// The slot.
        slot: u16,
        /// Pages listed before this entry.
        pages: u64,
        /// `total_pages`.
        total_pages: u32,
    },
    /// Fewer pages than `total_pages` at the end of the list.
    #[error("the chunks list {found} pages, the descriptor says {total_pages}")]
    CountShort {
        /// Pages listed.
        found: u64,
        /// `total_pages`.
        total_pages: u32,
    },
    /// The last chunk is full: Linux always links a fresh chunk after a full
    /// one, so the list has lost its end.
    #[error("chunk {chunk} is full but has no next chunk: the list is unterminated")]
    Unterminated {
        /// The chunk.
        chunk: PhysAddr,
    },
    /// A chunk terminated before it is full, yet linked to another.
    #[error("chunk {chunk} ends at slot {slot} but links chunk {next}")]
    EarlyTerminator {
        /// The chunk.
        chunk: PhysAddr,
        /// The terminator's slot.
        slot: u16,
        /// Its `next`.
        next: PhysAddr,
    },
    /// A non-zero entry after the terminator.
    #[error("chunk {chunk} slot {slot}: entry {value:#x} after the terminator")]
    TrailingEntry {
        /// The chunk.
        chunk: PhysAddr,
        /// The slot.
        slot: u16,
        /// The entry.
        value: u64,
    },
    /// An array of more records than the area's pages hold.
    #[error("{count} records of {size} bytes do not fit in the area's {total_pages} pages")]
    ArrayTooSmall {
        /// Records asked for.
        count: u64,
        /// Bytes per record.
        size: usize,
        /// `total_pages`.
        total_pages: u32,
    },
}

impl VmallocError {
    /// The address the error names: the broken page or its chunk (`None`:
    /// a descriptor error, at the owner's record).
    pub fn phys(&self) -> Option<PhysAddr> {
        match *self {
            Self::PageUnaligned { page, .. } => Some(page),
            Self::PageOutsideRam { block, .. } => Some(block.phys()),
            Self::ChunkUnaligned { chunk }
            | Self::ChunkRead { chunk, .. }
            | Self::ChunkNotPreserved { chunk, .. }
            | Self::ChunkCycle { chunk }
            | Self::PageNotPreserved { chunk, .. }
            | Self::CountOverflow { chunk, .. }
            | Self::Unterminated { chunk }
            | Self::EarlyTerminator { chunk, .. }
            | Self::TrailingEntry { chunk, .. } => Some(chunk),
            _ => None,
        }
    }
}

/// One entry of an area: `2^order` pages, with where it is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmallocBlock {
    /// The pages.
    pub block: Block,
    /// Index of the area's page the entry starts at.
    pub first_page: u64,
    /// The chunk that lists it.
    pub chunk: PhysAddr,
    /// Its slot in the chunk.
    pub slot: u16,
}

impl<'a, M: PageMap + ?Sized> VmallocBlocks<'a, M> {
    /// Checks `desc` and returns the iterator over its entries.
    pub fn new(
        reader: PhysReader<'a, 'a, M>,
        tracker: Tracker<'a>,
        desc: KhoVmalloc,
    ) -> Result<Self, VmallocError> {
        let flags = desc.flags();
        if flags & !KHO_VMALLOC_SUPPORTED_FLAGS != 0 {
            return Err(VmallocError::UnknownFlags {
                flags,
                known: KHO_VMALLOC_SUPPORTED_FLAGS,
            });
        }
        let order =
            Order::try_new(u32::from(desc.order())).map_err(|_| VmallocError::BadOrder {
                order: desc.order(),
                max: Order::MAX,
            })?;
        let total = u64::from(desc.total_pages());
        if desc.first() == PhysAddr::ZERO && total != 0 {
            return Err(VmallocError::MissingFirstChunk {
                total_pages: desc.total_pages(),
            });
        }
        Ok(Self {
            reader,
            tracker,
            desc,
            order,
            total,
            pages: 0,
            next: desc.first(),
            chunk: None,
            chunks: 0,
            last_chunk: None,
            brent: Brent::new(),
            done: false,
        })
    }
}

#[derive(Clone, Copy)]
struct Chunk<'a> {
    phys: PhysAddr,
    page: &'a AtomicPage,
    next: PhysAddr,
    slot: usize,
}

/// The entries of an area in order; see the module doc for what is checked.
pub struct VmallocBlocks<'a, M: ?Sized> {
    reader: PhysReader<'a, 'a, M>,
    tracker: Tracker<'a>,
    desc: KhoVmalloc,
    order: Order,
    total: u64,
    pages: u64,
    next: PhysAddr,
    chunk: Option<Chunk<'a>>,
    chunks: u64,
    last_chunk: Option<PhysAddr>,
    brent: Brent,
    done: bool,
}

impl<M: ?Sized> fmt::Debug for VmallocBlocks<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmallocBlocks")
            .field("desc", &self.desc)
            .field("pages", &self.pages)
            .field("chunks", &self.chunks)
            .finish()
    }
}

fn slot16(slot: usize) -> u16 {
    u16::try_from(slot).unwrap_or(u16::MAX)
}

impl<'a, M: PageMap + ?Sized> VmallocBlocks<'a, M> {
    /// The descriptor.
    pub fn desc(&self) -> KhoVmalloc {
        self.desc
    }

    /// The order of every entry.
    pub fn order(&self) -> Order {
        self.order
    }

    /// Chunks entered so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The area's pages in order, each entry expanded to its `2^order`
    /// pages.
    pub fn pages(self) -> VmallocPages<'a, M> {
        VmallocPages {
            blocks: self,
            current: None,
        }
    }

    /// The chunk entered last (after the walk: the list's last chunk, which
    /// may list no entry).
    pub fn last_chunk(&self) -> Option<PhysAddr> {
        self.last_chunk
    }

    fn enter(&mut self, chunk: PhysAddr) -> Result<Chunk<'a>, VmallocError> {
        if !chunk.is_page_aligned() {
            return Err(VmallocError::ChunkUnaligned { chunk });
        }
        let page = self
            .reader
            .page(chunk)
            .map_err(|source| VmallocError::ChunkRead { chunk, source })?;
        expect_page(self.tracker, chunk)
            .map_err(|source| VmallocError::ChunkNotPreserved { chunk, source })?;
        if self.brent.visit(chunk) {
            return Err(VmallocError::ChunkCycle { chunk });
        }
        self.chunks = self.chunks.saturating_add(1);
        self.last_chunk = Some(chunk);
        Ok(Chunk {
            phys: chunk,
            page,
            next: PhysAddr::new(page.load(0).unwrap_or(0)),
            slot: 0,
        })
    }

    /// The entry at the chunk's current slot, or the chunk's end checks.
    fn step(&mut self) -> Result<Option<VmallocBlock>, VmallocError> {
        loop {
            let mut c = match self.chunk {
                Some(c) => c,
                None => {
                    if self.next == PhysAddr::ZERO {
                        if self.pages != self.total {
                            return Err(VmallocError::CountShort {
                                found: self.pages,
                                total_pages: self.desc.total_pages(),
                            });
                        }
                        return Ok(None);
                    }
                    let next = self.next;
                    self.enter(next)?
                }
            };
            if c.slot >= KHO_VMALLOC_SIZE {
                if c.next == PhysAddr::ZERO {
                    return Err(VmallocError::Unterminated { chunk: c.phys });
                }
                self.next = c.next;
                self.chunk = None;
                continue;
            }
            let word = c.page.load(c.slot.saturating_add(1)).unwrap_or(0);
            if word == 0 {
                for s in c.slot.saturating_add(1)..KHO_VMALLOC_SIZE {
                    let value = c.page.load(s.saturating_add(1)).unwrap_or(0);
                    if value != 0 {
                        return Err(VmallocError::TrailingEntry {
                            chunk: c.phys,
                            slot: slot16(s),
                            value,
                        });
                    }
                }
                if c.next != PhysAddr::ZERO {
                    return Err(VmallocError::EarlyTerminator {
                        chunk: c.phys,
                        slot: slot16(c.slot),
                        next: c.next,
                    });
                }
                self.next = PhysAddr::ZERO;
                self.chunk = None;
                continue;
            }
            let slot = slot16(c.slot);
            let page = PhysAddr::new(word);
            let block = Block::new(page, self.order).map_err(|_| VmallocError::PageUnaligned {
                chunk: c.phys,
                slot,
                page,
                order: self.order,
            })?;
            let after = self.pages.checked_add(self.order.pages());
            match after {
                Some(a) if a <= self.total => {}
                _ => {
                    return Err(VmallocError::CountOverflow {
                        chunk: c.phys,
                        slot,
                        pages: self.pages,
                        total_pages: self.desc.total_pages(),
                    });
                }
            }
            let in_ram = block.range().is_some_and(|r| self.reader.ram().is_ram(r));
            if !in_ram {
                return Err(VmallocError::PageOutsideRam {
                    chunk: c.phys,
                    slot,
                    block,
                });
            }
            if let Some(t) = self.tracker {
                expect_block(t, block).map_err(|source| VmallocError::PageNotPreserved {
                    chunk: c.phys,
                    slot,
                    source,
                })?;
            }
            let out = VmallocBlock {
                block,
                first_page: self.pages,
                chunk: c.phys,
                slot,
            };
            self.pages = after.unwrap_or(self.total);
            c.slot = c.slot.saturating_add(1);
            self.chunk = Some(c);
            return Ok(Some(out));
        }
    }
}

impl<M: PageMap + ?Sized> Iterator for VmallocBlocks<'_, M> {
    type Item = Result<VmallocBlock, VmallocError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

impl<M: PageMap + ?Sized> core::iter::FusedIterator for VmallocBlocks<'_, M> {}

/// One page of an area: its index in the area and its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmallocPage {
    /// Index in the area.
    pub index: u64,
    /// Its address.
    pub phys: PhysAddr,
}

/// The pages of an area in order; see [`VmallocBlocks::pages`].
pub struct VmallocPages<'a, M: ?Sized> {
    blocks: VmallocBlocks<'a, M>,
    /// The entry being expanded and the next page of it.
    current: Option<(VmallocBlock, u64)>,
}

impl<M: ?Sized> fmt::Debug for VmallocPages<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmallocPages")
            .field("blocks", &self.blocks)
            .field("current", &self.current)
            .finish()
    }
}

impl<M: PageMap + ?Sized> Iterator for VmallocPages<'_, M> {
    type Item = Result<VmallocPage, VmallocError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((b, k)) = self.current {
                if k < b.block.order().pages() {
                    self.current = Some((b, k.saturating_add(1)));
                    let phys = b
                        .block
                        .phys()
                        .checked_add(k << PAGE_SHIFT)
                        .unwrap_or(b.block.phys());
                    return Some(Ok(VmallocPage {
                        index: b.first_page.saturating_add(k),
                        phys,
                    }));
                }
                self.current = None;
            }
            match self.blocks.next()? {
                Ok(b) => self.current = Some((b, 0)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// One record of a [`VmallocArray`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayEntry<T> {
    /// Its index in the array.
    pub slot: u64,
    /// Its physical address.
    pub phys: PhysAddr,
    /// The record.
    pub value: T,
}

/// An area read as `count` records of `T`, then walked to its end so the
/// list's end rules are checked too. Records never straddle a page (the
/// record size divides the page size).
pub struct VmallocArray<'a, M: ?Sized, T> {
    blocks: VmallocBlocks<'a, M>,
    count: u64,
    slot: u64,
    /// The entry that holds the next record.
    current: Option<VmallocBlock>,
    done: bool,
    _record: PhantomData<fn() -> T>,
}

impl<M: ?Sized, T> fmt::Debug for VmallocArray<'_, M, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmallocArray")
            .field("blocks", &self.blocks)
            .field("count", &self.count)
            .field("slot", &self.slot)
            .finish()
    }
}

impl<'a, M, T> VmallocArray<'a, M, T>
where
    M: PageMap + ?Sized,
    T: FromBytes + IntoBytes + FromZeros,
{
    const SIZE: u64 = {
        assert!(size_of::<T>() > 0 && PAGE_BYTES.is_multiple_of(size_of::<T>()));
        #[allow(clippy::as_conversions)] // usize -> u64: lossless on 64-bit targets
        let size = size_of::<T>() as u64;
        size
    };

    /// The first `count` records of the area `desc` describes.
    pub fn new(
        reader: PhysReader<'a, 'a, M>,
        tracker: Tracker<'a>,
        desc: KhoVmalloc,
        count: u64,
    ) -> Result<Self, VmallocError> {
        let blocks = VmallocBlocks::new(reader, tracker, desc)?;
        let fits = count
            .checked_mul(Self::SIZE)
            .is_some_and(|b| b <= u64::from(desc.total_pages()) << PAGE_SHIFT);
        if !fits {
            return Err(VmallocError::ArrayTooSmall {
                count,
                size: size_of::<T>(),
                total_pages: desc.total_pages(),
            });
        }
        Ok(Self {
            blocks,
            count,
            slot: 0,
            current: None,
            done: false,
            _record: PhantomData,
        })
    }

    /// The entries (blocks) of the area seen so far: the underlying walk.
    pub fn blocks(&self) -> &VmallocBlocks<'a, M> {
        &self.blocks
    }

    fn step(&mut self) -> Result<Option<ArrayEntry<T>>, VmallocError> {
        if self.slot >= self.count {
            // Drain the list so its end is checked.
            for b in self.blocks.by_ref() {
                b?;
            }
            return Ok(None);
        }
        let byte = self.slot.saturating_mul(Self::SIZE);
        let page = byte >> PAGE_SHIFT;
        let within = |b: &VmallocBlock| {
            page.checked_sub(b.first_page)
                .is_some_and(|d| d < b.block.order().pages())
        };
        let b = match self.current {
            Some(b) if within(&b) => b,
            _ => match self.blocks.next() {
                Some(Ok(b)) if within(&b) => b,
                Some(Ok(_)) | None => {
                    // The list ended, or skipped, before the record: the
                    // page count check above makes this unreachable for a
                    // well-formed list; report it as a short list.
                    return Err(VmallocError::CountShort {
                        found: self.blocks.pages,
                        total_pages: self.blocks.desc.total_pages(),
                    });
                }
                Some(Err(e)) => return Err(e),
            },
        };
        self.current = Some(b);
        let offset = byte.saturating_sub(b.first_page << PAGE_SHIFT);
        let phys = b.block.phys().checked_add(offset).unwrap_or(b.block.phys());
        let value =
            self.blocks
                .reader
                .read::<T>(phys)
                .map_err(|source| VmallocError::ChunkRead {
                    chunk: b.chunk,
                    source,
                })?;
        let entry = ArrayEntry {
            slot: self.slot,
            phys,
            value,
        };
        self.slot = self.slot.saturating_add(1);
        Ok(Some(entry))
    }
}

impl<M, T> Iterator for VmallocArray<'_, M, T>
where
    M: PageMap + ?Sized,
    T: FromBytes + IntoBytes + FromZeros,
{
    type Item = Result<ArrayEntry<T>, VmallocError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

#[cfg(feature = "alloc")]
pub use writer::{VmallocWritten, write_vmalloc_blocks, write_vmalloc_bytes};

#[cfg(feature = "alloc")]
mod writer {
    use alloc::vec::Vec;

    use super::{KHO_VMALLOC_ALLOC, KHO_VMALLOC_SIZE, KhoVmalloc};
    use crate::addr::{Block, Order, PhysAddr};
    use crate::mem::{PageAlloc, PageMap};
    use crate::phys::{PAGE_BYTES, PageWriter, WriteError};

    /// What [`write_vmalloc_blocks`] wrote.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct VmallocWritten {
        /// The descriptor to embed in the owner's record.
        pub desc: KhoVmalloc,
        /// The chunks, in list order.
        pub chunks: Vec<PhysAddr>,
        /// The area's blocks, in order.
        pub blocks: Vec<Block>,
    }

    /// Preserves an area made of `blocks` (all of one order, already
    /// filled) and writes its chunk list as `kho_preserve_vmalloc()` does.
    /// No blocks: the all-zero descriptor and nothing written.
    pub fn write_vmalloc_blocks<M: PageAlloc + PageMap>(
        w: &PageWriter<'_, M>,
        blocks: &[Block],
        flags: u16,
    ) -> Result<VmallocWritten, WriteError> {
        let Some(first) = blocks.first() else {
            return Ok(VmallocWritten::default());
        };
        let order = first.order();
        if blocks.iter().any(|b| b.order() != order) {
            return Err(WriteError::Vmalloc {
                reason: "blocks of more than one order",
            });
        }
        let total = u64::try_from(blocks.len())
            .ok()
            .and_then(|n| n.checked_mul(order.pages()))
            .and_then(|p| u32::try_from(p).ok())
            .ok_or(WriteError::Vmalloc {
                reason: "more pages than total_pages can count",
            })?;
        let order16 = u16::from(order.as_u8());
        for b in blocks {
            w.preserve(*b)?;
        }
        // Every full chunk gets a successor, even an empty one, as Linux
        // links one: len / 511 + 1 chunks.
        let n = (blocks.len() / KHO_VMALLOC_SIZE).saturating_add(1);
        let mut chunks = Vec::with_capacity(n);
        for _ in 0..n {
            chunks.push(w.alloc_preserved()?);
        }
        for (i, &chunk) in chunks.iter().enumerate() {
            let next = chunks
                .get(i.saturating_add(1))
                .copied()
                .unwrap_or(PhysAddr::ZERO);
            w.write(chunk, 0, &next.as_u64().to_le_bytes())?;
            let start = i.saturating_mul(KHO_VMALLOC_SIZE);
            for (slot, b) in blocks.iter().skip(start).take(KHO_VMALLOC_SIZE).enumerate() {
                let off = slot.saturating_add(1).saturating_mul(8);
                w.write(chunk, off, &b.phys().as_u64().to_le_bytes())?;
            }
        }
        let desc = KhoVmalloc::new(
            chunks.first().copied().unwrap_or(PhysAddr::ZERO),
            total,
            flags,
            order16,
        );
        Ok(VmallocWritten {
            desc,
            chunks,
            blocks: blocks.to_vec(),
        })
    }

    /// Copies `bytes` into fresh order-0 pages (as `vcalloc()` would hold
    /// them) and preserves them as a vmalloc area (`KHO_VMALLOC_ALLOC`).
    /// Empty `bytes`: the all-zero descriptor.
    pub fn write_vmalloc_bytes<M: PageAlloc + PageMap>(
        w: &PageWriter<'_, M>,
        bytes: &[u8],
    ) -> Result<VmallocWritten, WriteError> {
        let mut blocks = Vec::new();
        for part in bytes.chunks(PAGE_BYTES) {
            let page = w.alloc_page()?;
            w.write(page, 0, part)?;
            blocks.push(Block::new(page, Order::ZERO).map_err(|_| WriteError::ZeroPage)?);
        }
        write_vmalloc_blocks(w, &blocks, KHO_VMALLOC_ALLOC)
    }
}

#[cfg(all(test, feature = "alloc"))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::panic,
    clippy::as_conversions
)]
mod tests;
