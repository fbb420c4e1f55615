//! Bounded reads of untrusted physical memory, and the page writer the
//! kho-v4 / LUO writers share.
//!
//! Glossary:
//!
//! | name      | meaning                                                                |
//! |-----------|------------------------------------------------------------------------|
//! | reader    | a [`PhysReader`]: a [`PageMap`] plus the [`RamMap`] it must stay inside |
//! | structure | a fixed-size on-memory record (`struct luo_ser`, a block header, ...)   |
//! | page      | the one 4 KiB page a structure must lie in                             |
//! | writer    | a [`PageWriter`] (with `alloc`): allocates, fills and preserves pages  |
//!
//! # What a read checks
//!
//! Every structure the kho-v4 and LUO formats define lies inside one page:
//! block entries never straddle a page boundary, the handler records sit at
//! the start of their own page, vmalloc chunks are pages. So the reader only
//! reads within one page, and fails, in this order, if the structure:
//! 1. does not fit in the page that holds its first byte
//!    ([`ReadError::CrossesPage`]);
//! 2. lies outside RAM ([`ReadError::OutsideRam`]);
//! 3. cannot be mapped ([`ReadError::NotMapped`]).
//!
//! Bytes are gathered from the page's words with one relaxed load each, so
//! memory that changes under the reader gives wrong values, never undefined
//! behaviour. Structures are little-endian (the hosts KHO runs on); the
//! zerocopy types of the format modules use explicit little-endian fields,
//! which also makes them alignment-free like Linux's `__packed` structs.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

use core::fmt;

use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::addr::{PAGE_SIZE, PhysAddr, PhysRange};
use crate::mem::{AtomicPage, MemError, PageMap, RamMap};

/// Bytes in a page, as a `usize`.
pub const PAGE_BYTES: usize = 4096;
const _: () = assert!(PAGE_BYTES == 4096 && PAGE_SIZE == 4096);

/// Why a structure could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The structure runs past the end of the page that holds its start.
    #[error("{len} bytes at {phys} cross a page boundary")]
    CrossesPage {
        /// Its first byte.
        phys: PhysAddr,
        /// Its length.
        len: usize,
    },
    /// The page is not RAM.
    #[error("page {page} (for {len} bytes at {phys}) is outside RAM")]
    OutsideRam {
        /// The page.
        page: PhysAddr,
        /// The structure's first byte.
        phys: PhysAddr,
        /// Its length.
        len: usize,
    },
    /// The page map cannot reach the page.
    #[error("page {page} cannot be mapped: {source}")]
    NotMapped {
        /// The page.
        page: PhysAddr,
        /// The map's error.
        source: MemError,
    },
}

/// Reads structures from untrusted memory: one page at a time, only pages
/// the [`RamMap`] calls RAM, never past a page boundary.
pub struct PhysReader<'m, 'r, M: ?Sized> {
    map: &'m M,
    ram: RamMap<'r>,
}

impl<M: ?Sized> Clone for PhysReader<'_, '_, M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M: ?Sized> Copy for PhysReader<'_, '_, M> {}

impl<M: ?Sized> fmt::Debug for PhysReader<'_, '_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhysReader")
            .field("ram", &self.ram)
            .finish()
    }
}

impl<'m, 'r, M: PageMap + ?Sized> PhysReader<'m, 'r, M> {
    /// A reader of `map`, confined to the RAM of `ram`.
    pub fn new(map: &'m M, ram: RamMap<'r>) -> Self {
        Self { map, ram }
    }

    /// The machine's RAM map.
    pub fn ram(&self) -> RamMap<'r> {
        self.ram
    }

    /// The page that holds `[phys, phys + len)`, once it is known to be RAM
    /// and mapped; the offset of `phys` in it.
    fn page_for(&self, phys: PhysAddr, len: usize) -> Result<(&'m AtomicPage, usize), ReadError> {
        let page = phys.align_down(PAGE_SIZE);
        let offset = usize::try_from(phys.as_u64() & (PAGE_SIZE - 1)).unwrap_or(PAGE_BYTES);
        match offset.checked_add(len) {
            Some(end) if end <= PAGE_BYTES => {}
            _ => return Err(ReadError::CrossesPage { phys, len }),
        }
        let range = PhysRange::from_start_size(page, PAGE_SIZE)
            .map_err(|_| ReadError::OutsideRam { page, phys, len })?;
        if !self.ram.is_ram(range) {
            return Err(ReadError::OutsideRam { page, phys, len });
        }
        let p = self
            .map
            .page(page)
            .map_err(|source| ReadError::NotMapped { page, source })?;
        Ok((p, offset))
    }

    /// The whole page at `page` (page aligned; an unaligned address reads
    /// the page that holds it).
    pub fn page(&self, page: PhysAddr) -> Result<&'m AtomicPage, ReadError> {
        self.page_for(page.align_down(PAGE_SIZE), PAGE_BYTES)
            .map(|(p, _)| p)
    }

    /// Fills `out` with the bytes at `phys` (all in one page).
    pub fn read_bytes(&self, phys: PhysAddr, out: &mut [u8]) -> Result<(), ReadError> {
        let (page, offset) = self.page_for(phys, out.len())?;
        copy_out(page, offset, out);
        Ok(())
    }

    /// The structure at `phys` (all in one page).
    pub fn read<T: FromBytes + IntoBytes + FromZeros>(
        &self,
        phys: PhysAddr,
    ) -> Result<T, ReadError> {
        let mut v = T::new_zeroed();
        self.read_bytes(phys, v.as_mut_bytes())?;
        Ok(v)
    }

    /// The little-endian word at `phys` (8-byte aligned or not, in one page).
    pub fn read_u64(&self, phys: PhysAddr) -> Result<u64, ReadError> {
        let mut b = [0u8; 8];
        self.read_bytes(phys, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Copies bytes `offset..offset + out.len()` of `page` (clipped to the page).
pub(crate) fn copy_out(page: &AtomicPage, offset: usize, out: &mut [u8]) {
    for (i, o) in out.iter_mut().enumerate() {
        let Some(at) = offset.checked_add(i) else {
            return;
        };
        let Some(word) = page.load(at / 8) else {
            return;
        };
        let shift = u32::try_from((at % 8).saturating_mul(8)).unwrap_or(0);
        *o = (word >> shift).to_le_bytes().first().copied().unwrap_or(0);
    }
}

/// Stores `bytes` at byte `offset` of `page` (read-modify-write of the words
/// it touches; the page is the caller's own). Bytes past the page are
/// dropped.
#[cfg(feature = "alloc")]
pub(crate) fn copy_in(page: &AtomicPage, offset: usize, bytes: &[u8]) {
    use core::sync::atomic::Ordering;
    let words = page.words();
    let mut i = 0usize;
    while i < bytes.len() {
        let Some(at) = offset.checked_add(i) else {
            return;
        };
        let Some(w) = words.get(at / 8) else {
            return;
        };
        let mut b = w.load(Ordering::Relaxed).to_le_bytes();
        let mut j = at % 8;
        while j < 8 && i < bytes.len() {
            if let (Some(dst), Some(src)) = (b.get_mut(j), bytes.get(i)) {
                *dst = *src;
            }
            j = j.saturating_add(1);
            i = i.saturating_add(1);
        }
        w.store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
}

#[cfg(feature = "alloc")]
pub use writer::{PageWriter, WriteError};

#[cfg(feature = "alloc")]
mod writer {
    use core::fmt;

    use super::{PAGE_BYTES, copy_in};
    use crate::addr::{Block, Order, PhysAddr};
    use crate::mem::{MemError, PageAlloc, PageMap};
    use crate::radix::{RadixError, RadixTree};

    /// Why a kho-v4 / LUO structure could not be written.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum WriteError {
        /// No page to allocate, or a page the map cannot reach.
        #[error("page allocation or mapping failed: {0}")]
        Mem(#[from] MemError),
        /// The tracker refused to preserve a block.
        #[error("the tracker refused a block: {0}")]
        Radix(#[from] RadixError),
        /// The allocator handed out physical page 0, which every format here
        /// reads as "none".
        #[error("the page allocator returned physical page 0, which the formats read as null")]
        ZeroPage,
        /// More bytes than the structure's page holds.
        #[error("{what}: {len} bytes do not fit in one page")]
        TooLarge {
            /// The structure.
            what: &'static str,
            /// Bytes asked for.
            len: usize,
        },
        /// A string longer than its fixed field (NUL included), or holding a NUL.
        #[error("{what}: {len}-byte string does not fit a {max}-byte NUL-terminated field")]
        NameTooLong {
            /// The field.
            what: &'static str,
            /// The string's length.
            len: usize,
            /// The field's size.
            max: usize,
        },
        /// More entries than the format can count.
        #[error("{what}: {count} entries, at most {max}")]
        TooMany {
            /// The structure.
            what: &'static str,
            /// Entries asked for.
            count: u64,
            /// The format's limit.
            max: u64,
        },
        /// Vmalloc pages of several orders, or an area too large to count.
        #[error("vmalloc area: {reason}")]
        Vmalloc {
            /// What is wrong.
            reason: &'static str,
        },
    }

    /// Allocates pages, fills them and preserves them in the tracker at
    /// order 0, as Linux's `kho_alloc_preserve()` does for one page.
    pub struct PageWriter<'t, M: PageAlloc + PageMap> {
        tree: &'t RadixTree<M>,
    }

    impl<M: PageAlloc + PageMap> fmt::Debug for PageWriter<'_, M> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("PageWriter")
                .field("root", &self.tree.root())
                .finish()
        }
    }

    impl<M: PageAlloc + PageMap> Clone for PageWriter<'_, M> {
        fn clone(&self) -> Self {
            *self
        }
    }

    impl<M: PageAlloc + PageMap> Copy for PageWriter<'_, M> {}

    impl<'t, M: PageAlloc + PageMap> PageWriter<'t, M> {
        /// A writer that preserves its pages in `tree`.
        pub fn new(tree: &'t RadixTree<M>) -> Self {
            Self { tree }
        }

        /// The tracker.
        pub fn tree(&self) -> &'t RadixTree<M> {
            self.tree
        }

        /// A zeroed page, not preserved (the caller preserves it, or frees it).
        pub fn alloc_page(&self) -> Result<PhysAddr, WriteError> {
            let phys = self.tree.mem().alloc_zeroed_page()?;
            if phys == PhysAddr::ZERO {
                return Err(WriteError::ZeroPage);
            }
            Ok(phys)
        }

        /// A zeroed page, preserved at order 0.
        pub fn alloc_preserved(&self) -> Result<PhysAddr, WriteError> {
            let phys = self.alloc_page()?;
            let block = Block::new(phys, Order::ZERO).map_err(|_| WriteError::ZeroPage)?;
            if let Err(e) = self.tree.preserve(block) {
                self.tree.mem().free_page(phys);
                return Err(e.into());
            }
            Ok(phys)
        }

        /// A preserved page holding `bytes` at its start.
        pub fn write_preserved(
            &self,
            what: &'static str,
            bytes: &[u8],
        ) -> Result<PhysAddr, WriteError> {
            if bytes.len() > PAGE_BYTES {
                return Err(WriteError::TooLarge {
                    what,
                    len: bytes.len(),
                });
            }
            let phys = self.alloc_preserved()?;
            self.write(phys, 0, bytes)?;
            Ok(phys)
        }

        /// Stores `bytes` at byte `offset` of the page at `page` (which the
        /// caller owns).
        pub fn write(&self, page: PhysAddr, offset: usize, bytes: &[u8]) -> Result<(), WriteError> {
            match offset.checked_add(bytes.len()) {
                Some(end) if end <= PAGE_BYTES => {}
                _ => {
                    return Err(WriteError::TooLarge {
                        what: "page write",
                        len: offset.saturating_add(bytes.len()),
                    });
                }
            }
            let p = self.tree.mem().page(page)?;
            copy_in(p, offset, bytes);
            Ok(())
        }

        /// Preserves `block` (a folio the caller filled).
        pub fn preserve(&self, block: Block) -> Result<(), WriteError> {
            self.tree.preserve(block).map_err(WriteError::from)
        }
    }
}

#[cfg(all(test, feature = "alloc"))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::panic
)]
mod tests;
