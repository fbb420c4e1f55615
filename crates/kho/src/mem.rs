//! How the core reaches physical memory: the contracts [`PageAlloc`],
//! [`PageMap`] and [`RamMap`] (drawn in the [crate] documentation), the
//! page as [`AtomicPage`], and a heap-backed arena ([`VecArena`]).

use core::fmt;
use core::ops::Index;
use core::sync::atomic::Ordering;

use crate::addr::{PAGE_SIZE, PhysAddr, PhysRange};
use crate::key::{LeafBit, TableIndex};

/// The atomic word of a page and of the writer's counters: `core`'s, or
/// loom's when the crate is built with `--cfg loom` for the model of the
/// writer (`tests/loom.rs`, docs/testing.md). Nothing else changes.
#[cfg(not(loom))]
pub(crate) use core::sync::atomic::AtomicU64;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicU64;

/// Number of u64 words in a page.
pub const PAGE_WORDS: usize = 512;

/// One 4 KiB page seen as 512 atomic little-endian words (the host is
/// little-endian, as the KHO format is).
#[repr(C, align(4096))]
pub struct AtomicPage([AtomicU64; PAGE_WORDS]);

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<AtomicPage>() as u64 == PAGE_SIZE);
const _: () = assert!(core::mem::align_of::<AtomicPage>() as u64 == PAGE_SIZE);

impl AtomicPage {
    /// A zeroed page.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; PAGE_WORDS])
    }

    /// A zeroed page (loom's atomics are made at run time, inside a
    /// model).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self(core::array::from_fn(|_| AtomicU64::new(0)))
    }

    /// The 512 words.
    pub const fn words(&self) -> &[AtomicU64; PAGE_WORDS] {
        &self.0
    }

    /// Loads word `i` (relaxed); `None` past the page.
    pub fn load(&self, i: usize) -> Option<u64> {
        self.0.get(i).map(|w| w.load(Ordering::Relaxed))
    }

    /// The word of a leaf that holds `bit` (see [`LeafBit::word`]); always
    /// in bounds (a bit is below 32768).
    #[inline(always)]
    pub fn word_of(&self, bit: LeafBit) -> &AtomicU64 {
        &self.0[bit.word()]
    }

    /// Stores zero in every word.
    pub fn zero(&self) {
        for w in &self.0 {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// Whether every word is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|w| w.load(Ordering::Relaxed) == 0)
    }

    /// Copies the page out (relaxed loads).
    pub fn snapshot(&self) -> [u64; PAGE_WORDS] {
        let mut out = [0u64; PAGE_WORDS];
        for (o, w) in out.iter_mut().zip(&self.0) {
            *o = w.load(Ordering::Relaxed);
        }
        out
    }
}

/// An inner node's entry: a page is indexed by [`TableIndex`], always in
/// bounds (an index is below 512).
impl Index<TableIndex> for AtomicPage {
    type Output = AtomicU64;

    #[inline(always)]
    fn index(&self, index: TableIndex) -> &AtomicU64 {
        &self.0[index.as_usize()]
    }
}

impl Default for AtomicPage {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for AtomicPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nonzero = self
            .0
            .iter()
            .filter(|w| w.load(Ordering::Relaxed) != 0)
            .count();
        write!(f, "AtomicPage {{ nonzero_words: {nonzero} }}")
    }
}

/// Errors of the memory contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// No page left to allocate.
    #[error("out of memory: no free page to allocate")]
    OutOfMemory,
    /// A page address that is not page aligned.
    #[error("page address {phys} is not page aligned")]
    Unaligned {
        /// The address asked for.
        phys: PhysAddr,
    },
    /// A page the map cannot reach.
    #[error("page {phys} is not mapped")]
    NotMapped {
        /// The address asked for.
        phys: PhysAddr,
    },
}

/// Hands out zeroed pages by physical address and takes them back.
///
/// Implementations must be callable from many threads at once (`&self`).
pub trait PageAlloc {
    /// Allocates one zeroed, page-aligned 4 KiB page.
    fn alloc_zeroed_page(&self) -> Result<PhysAddr, MemError>;
    /// Returns a page obtained from [`PageAlloc::alloc_zeroed_page`].
    fn free_page(&self, phys: PhysAddr);
}

/// Reaches the page at a physical address.
///
/// For the writer the pages are its own; for the reader they are untrusted
/// and the call must fail, not fault, for anything unmapped.
pub trait PageMap {
    /// The page at `phys` (page aligned).
    fn page(&self, phys: PhysAddr) -> Result<&AtomicPage, MemError>;
}

impl<T: PageAlloc + ?Sized> PageAlloc for &T {
    fn alloc_zeroed_page(&self) -> Result<PhysAddr, MemError> {
        (**self).alloc_zeroed_page()
    }
    fn free_page(&self, phys: PhysAddr) {
        (**self).free_page(phys)
    }
}

impl<T: PageMap + ?Sized> PageMap for &T {
    fn page(&self, phys: PhysAddr) -> Result<&AtomicPage, MemError> {
        (**self).page(phys)
    }
}

/// Errors building a [`RamMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RamMapError {
    /// A range whose bounds are not page aligned.
    #[error("range {range} is not page aligned")]
    Unaligned {
        /// The range.
        range: PhysRange,
    },
    /// Ranges out of order or overlapping.
    #[error("range {range} does not start after the previous range {previous}")]
    Unsorted {
        /// The previous range.
        previous: PhysRange,
        /// The range that should have started after it.
        range: PhysRange,
    },
}

/// The machine as the reader must see it: which ranges are RAM, and which
/// must not hold tree pages or preserved blocks (the scratch areas, the
/// kernel image, ...). Both lists are sorted, disjoint and page aligned.
#[derive(Clone, Copy, Debug)]
pub struct RamMap<'a> {
    ram: &'a [PhysRange],
    forbidden: &'a [PhysRange],
}

impl<'a> RamMap<'a> {
    /// Checks and wraps the two lists.
    pub fn new(ram: &'a [PhysRange], forbidden: &'a [PhysRange]) -> Result<Self, RamMapError> {
        check_sorted(ram)?;
        check_sorted(forbidden)?;
        Ok(Self { ram, forbidden })
    }

    /// The RAM ranges.
    pub fn ram(&self) -> &'a [PhysRange] {
        self.ram
    }

    /// The forbidden ranges.
    pub fn forbidden(&self) -> &'a [PhysRange] {
        self.forbidden
    }

    /// The RAM range that wholly holds `range`, if any.
    pub fn ram_containing(&self, range: PhysRange) -> Option<PhysRange> {
        // First RAM range whose end is past range.start.
        let i = self.ram.partition_point(|r| r.end() <= range.start());
        self.ram
            .get(i)
            .copied()
            .filter(|r| r.contains_range(range) && !range.is_empty())
    }

    /// Whether `range` lies wholly inside one RAM range.
    pub fn is_ram(&self, range: PhysRange) -> bool {
        self.ram_containing(range).is_some()
    }

    /// The first forbidden range that shares a byte with `range`, if any.
    pub fn forbidden_overlap(&self, range: PhysRange) -> Option<PhysRange> {
        let i = self.forbidden.partition_point(|r| r.end() <= range.start());
        self.forbidden.get(i).copied().filter(|r| r.overlaps(range))
    }

    /// Total RAM bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.ram.iter().map(|r| r.size()).sum()
    }
}

fn check_sorted(ranges: &[PhysRange]) -> Result<(), RamMapError> {
    let mut previous: Option<PhysRange> = None;
    for &range in ranges {
        if !range.start().is_page_aligned() || !range.end().is_page_aligned() {
            return Err(RamMapError::Unaligned { range });
        }
        if let Some(p) = previous
            && range.start() < p.end()
        {
            return Err(RamMapError::Unsorted { previous: p, range });
        }
        previous = Some(range);
    }
    Ok(())
}

#[cfg(feature = "alloc")]
pub use arena::VecArena;

#[cfg(feature = "alloc")]
mod arena;

#[cfg(test)]
mod tests;
