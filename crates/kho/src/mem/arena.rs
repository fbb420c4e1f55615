//! [`VecArena`]: physical pages on the heap, for host tools and tests.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{AtomicPage, MemError, PageAlloc, PageMap};
use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PhysAddr, PhysRange};

/// A heap-backed arena of physical pages, for host tools: `pages` pages of
/// the heap that stand for the physical range from `base`, with a
/// lock-free page allocator (a bitmap of used pages claimed by `fetch_or`).
/// It is both a [`PageAlloc`] and a [`PageMap`], so a tree can be written
/// into it and read back from it; pages outside the arena are not mapped.
///
/// Benches, the lab's old-kernel side and tests use it where a real
/// machine would hand out pages from its direct map. Under the `testing`
/// feature it also has test knobs: `claim` and `write_word` to build trees
/// by hand, and `set_limit` to make allocation fail.
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
mod tests;
