//! How the core reaches physical memory.
//!
//! The core never dereferences a physical address itself. It goes through
//! three small contracts, so the same code runs over a simulator's arena and
//! over a kernel's direct map:
//!
//! | trait         | who uses it     | contract                                           |
//! |---------------|-----------------|----------------------------------------------------|
//! | [`PageAlloc`] | writer          | hand out a zeroed 4 KiB page by address; take it back |
//! | [`PageMap`]   | writer, reader  | reach the page at an address as 512 atomic words    |
//! | [`RamMap`]    | reader          | which ranges are RAM, and where tree pages must not be |
//!
//! Pages are seen as [`AtomicPage`]: 512 `AtomicU64`. The writer installs
//! entries by compare-and-swap and sets bits by `fetch_or`; the reader loads
//! each word once (relaxed loads compile to plain moves), so memory that
//! changes under a reader can give it wrong values but never undefined
//! behaviour. The reader is bounded: it asks for one aligned page at a time,
//! and only for pages the [`RamMap`] says are RAM.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::addr::{PAGE_SIZE, PhysAddr, PhysRange};

/// Number of u64 words in a page.
pub const PAGE_WORDS: usize = 512;

/// One 4 KiB page seen as 512 atomic little-endian words (the host is
/// little-endian, as the KHO format is).
#[repr(C, align(4096))]
pub struct AtomicPage([AtomicU64; PAGE_WORDS]);

const _: () = assert!(core::mem::size_of::<AtomicPage>() as u64 == PAGE_SIZE);
const _: () = assert!(core::mem::align_of::<AtomicPage>() as u64 == PAGE_SIZE);

impl AtomicPage {
    /// A zeroed page.
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; PAGE_WORDS])
    }

    /// The 512 words.
    pub const fn words(&self) -> &[AtomicU64; PAGE_WORDS] {
        &self.0
    }

    /// Loads word `i` (relaxed); `None` past the page.
    pub fn load(&self, i: usize) -> Option<u64> {
        self.0.get(i).map(|w| w.load(Ordering::Relaxed))
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
mod arena {
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::{AtomicPage, MemError, PageAlloc, PageMap};
    use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PhysAddr, PhysRange};

    /// A Vec-backed stand-in for physical memory: `pages` pages starting at
    /// `base`, with a lock-free page allocator (a bitmap of used pages
    /// claimed by `fetch_or`) and an optional allocation limit for
    /// out-of-memory tests. Pages outside the arena are not mapped.
    pub struct VecArena {
        base: PhysAddr,
        pages: Vec<AtomicPage>,
        used: Vec<AtomicU64>,
        hint: AtomicUsize,
        allocated: AtomicUsize,
        limit: AtomicUsize,
    }

    impl core::fmt::Debug for VecArena {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("VecArena")
                .field("base", &self.base)
                .field("pages", &self.pages.len())
                .field("allocated", &self.allocated())
                .finish()
        }
    }

    impl VecArena {
        /// An arena of `pages` zeroed pages at `base` (page aligned).
        pub fn new(base: PhysAddr, pages: usize) -> Self {
            assert!(
                base.is_page_aligned(),
                "arena base {base} is not page aligned"
            );
            let mut v = Vec::with_capacity(pages);
            v.resize_with(pages, AtomicPage::new);
            let mut used = Vec::new();
            used.resize_with(pages.div_ceil(64), || AtomicU64::new(0));
            // Bits past the last page are permanently used.
            if !pages.is_multiple_of(64)
                && let Some(last) = used.last()
            {
                last.store(!0u64 << (pages % 64), Ordering::Relaxed);
            }
            Self {
                base,
                pages: v,
                used,
                hint: AtomicUsize::new(0),
                allocated: AtomicUsize::new(0),
                limit: AtomicUsize::new(usize::MAX),
            }
        }

        /// The arena's first address.
        pub fn base(&self) -> PhysAddr {
            self.base
        }

        /// The physical range the arena covers.
        pub fn range(&self) -> PhysRange {
            let size = (self.pages.len() as u64) << PAGE_SHIFT;
            PhysRange::from_start_size(self.base, size).expect("arena fits the address space")
        }

        /// Pages currently allocated.
        pub fn allocated(&self) -> usize {
            self.allocated.load(Ordering::Relaxed)
        }

        #[cfg(any(test, feature = "testing"))]
        /// Makes allocation fail once `pages` pages are allocated.
        pub fn set_limit(&self, pages: usize) {
            self.limit.store(pages, Ordering::Relaxed);
        }

        #[cfg(any(test, feature = "testing"))]
        /// Marks the page at `phys` used without zeroing it, so a test can
        /// build a tree by hand at chosen addresses.
        pub fn claim(&self, phys: PhysAddr) -> Result<&AtomicPage, MemError> {
            let i = self.index(phys)?;
            let bit = 1u64 << (i % 64);
            let prev = self.used[i / 64].fetch_or(bit, Ordering::AcqRel);
            if prev & bit == 0 {
                self.allocated.fetch_add(1, Ordering::Relaxed);
            }
            Ok(&self.pages[i])
        }

        #[cfg(any(test, feature = "testing"))]
        /// Stores `value` in word `word` of the page at `phys` (test helper
        /// for hand-built trees).
        pub fn write_word(&self, phys: PhysAddr, word: usize, value: u64) -> Result<(), MemError> {
            let page = self.page(phys)?;
            page.words()[word].store(value, Ordering::Relaxed);
            Ok(())
        }

        fn index(&self, phys: PhysAddr) -> Result<usize, MemError> {
            if !phys.is_page_aligned() {
                return Err(MemError::Unaligned { phys });
            }
            let off = phys
                .offset_from(self.base)
                .ok_or(MemError::NotMapped { phys })?;
            let i = usize::try_from(off >> PAGE_SHIFT).map_err(|_| MemError::NotMapped { phys })?;
            if i < self.pages.len() {
                Ok(i)
            } else {
                Err(MemError::NotMapped { phys })
            }
        }
    }

    impl PageAlloc for VecArena {
        fn alloc_zeroed_page(&self) -> Result<PhysAddr, MemError> {
            // Reserve against the limit first, so concurrent callers cannot
            // overshoot it.
            let prev = self.allocated.fetch_add(1, Ordering::AcqRel);
            if prev >= self.limit.load(Ordering::Relaxed) {
                self.allocated.fetch_sub(1, Ordering::AcqRel);
                return Err(MemError::OutOfMemory);
            }
            let words = self.used.len();
            let start = self.hint.load(Ordering::Relaxed);
            for step in 0..words {
                let w = (start + step) % words;
                let mut cur = self.used[w].load(Ordering::Relaxed);
                while cur != !0 {
                    let bit = 1u64 << (!cur).trailing_zeros();
                    let prev = self.used[w].fetch_or(bit, Ordering::AcqRel);
                    if prev & bit == 0 {
                        self.hint.store(w, Ordering::Relaxed);
                        let i = w * 64 + bit.trailing_zeros() as usize;
                        self.pages[i].zero();
                        let phys = self.base.checked_add((i as u64) * PAGE_SIZE);
                        return phys.ok_or(MemError::OutOfMemory);
                    }
                    cur = prev | bit;
                }
            }
            self.allocated.fetch_sub(1, Ordering::AcqRel);
            Err(MemError::OutOfMemory)
        }

        fn free_page(&self, phys: PhysAddr) {
            let i = self.index(phys).expect("freeing a page outside the arena");
            let bit = 1u64 << (i % 64);
            let prev = self.used[i / 64].fetch_and(!bit, Ordering::AcqRel);
            assert!(prev & bit != 0, "double free of page {phys}");
            self.allocated.fetch_sub(1, Ordering::AcqRel);
        }
    }

    impl PageMap for VecArena {
        fn page(&self, phys: PhysAddr) -> Result<&AtomicPage, MemError> {
            Ok(&self.pages[self.index(phys)?])
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn allocates_every_page_once_then_fails() {
            let arena = VecArena::new(PhysAddr::new(0x10_0000), 70);
            let mut got: Vec<_> = (0..70)
                .map(|_| arena.alloc_zeroed_page().unwrap())
                .collect();
            assert_eq!(arena.alloc_zeroed_page(), Err(MemError::OutOfMemory));
            got.sort();
            got.dedup();
            assert_eq!(got.len(), 70);
            assert!(got.iter().all(|p| arena.range().contains(*p)));
            arena.page(got[3]).unwrap().words()[7].store(5, Ordering::Relaxed);
            arena.free_page(got[3]);
            let again = arena.alloc_zeroed_page().unwrap();
            assert_eq!(again, got[3]);
            assert!(arena.page(again).unwrap().is_zero());
        }

        #[test]
        fn limit_and_mapping() {
            let arena = VecArena::new(PhysAddr::new(0x10_0000), 8);
            arena.set_limit(1);
            assert!(arena.alloc_zeroed_page().is_ok());
            assert_eq!(arena.alloc_zeroed_page(), Err(MemError::OutOfMemory));
            let past = PhysAddr::new(0x10_0000 + 8 * 4096);
            assert_eq!(
                arena.page(past).err(),
                Some(MemError::NotMapped { phys: past })
            );
            let odd = PhysAddr::new(0x10_0008);
            assert_eq!(
                arena.page(odd).err(),
                Some(MemError::Unaligned { phys: odd })
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u64, b: u64) -> PhysRange {
        PhysRange::new(PhysAddr::new(a), PhysAddr::new(b)).unwrap()
    }

    #[test]
    fn ram_map_lookups() {
        let ram = [r(0, 0xa_0000), r(0x10_0000, 0x4000_0000)];
        let forbidden = [r(0x20_0000, 0x40_0000)];
        let map = RamMap::new(&ram, &forbidden).unwrap();
        assert!(map.is_ram(r(0x10_0000, 0x10_1000)));
        assert!(!map.is_ram(r(0x9_f000, 0x10_1000)));
        assert!(!map.is_ram(r(0xa_0000, 0xa_1000)));
        assert_eq!(
            map.forbidden_overlap(r(0x3f_f000, 0x40_1000)),
            Some(forbidden[0])
        );
        assert_eq!(map.forbidden_overlap(r(0x40_0000, 0x40_1000)), None);
        assert_eq!(map.ram_bytes(), 0xa_0000 + 0x3ff0_0000);
    }

    #[test]
    fn ram_map_errors() {
        let bad = [r(0, 0x1001)];
        assert_eq!(
            RamMap::new(&bad, &[]).err(),
            Some(RamMapError::Unaligned { range: bad[0] })
        );
        let unsorted = [r(0x2000, 0x3000), r(0x1000, 0x2000)];
        assert_eq!(
            RamMap::new(&unsorted, &[]).err(),
            Some(RamMapError::Unsorted {
                previous: unsorted[0],
                range: unsorted[1]
            })
        );
    }
}
