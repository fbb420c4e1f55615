//! The radix-tree schemes: `radix-mainline` (Linux as it runs today) and
//! `kho` (ours). Same on-memory format (DESIGN.md section 2, `kho-v3`): the
//! tree is the handover, so finalize does no work.
//!
//! - **preserve**: mainline: [`kho::RadixTree::preserve`] under one
//!   `Mutex` (the `kho_radix_tree` lock around every add); ours: the
//!   lock-free tree, no lock.
//! - **nodes**: mainline never frees them (compaction is never called);
//!   ours does not during preservation.
//! - **walk**: mainline under the same mutex; ours lock-free.
//! - **restore**: mainline one `memblock_reserve` + mark_noinit per set
//!   bit, as walked (`per-block`), or a step of its smallest fix
//!   (`mainline-fix-a`, `-ab`, `mainline-fix`); ours any strategy, the
//!   ranged ones through the coalescing walker. The same format feeds
//!   every strategy: `radix-mainline` against `kho` under one strategy
//!   measures the tracker (the mutex), under two the strategy.
//! - **restore heap**: the mainline strategies none (the walk's stack of
//!   six levels); the ranged ones the coalesced ranges, 16 bytes each,
//!   collected before anything is reserved (the whole tree is validated
//!   first).

use std::sync::Mutex;

use kho::{Block, PageAlloc, PageMap, PhysAddr, RadixTree};

use super::{Handover, Metadata, Scheme, SchemeError, SchemeKind};

/// Every page a tree holds: its tree pages are recorded by the allocator
/// wrapper.
struct Recording<'a, M: ?Sized> {
    mem: &'a M,
    pages: Mutex<Vec<PhysAddr>>,
}

impl<M: PageAlloc + ?Sized> PageAlloc for Recording<'_, M> {
    fn alloc_zeroed_page(&self) -> Result<PhysAddr, kho::MemError> {
        let p = self.mem.alloc_zeroed_page()?;
        self.pages.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        Ok(p)
    }

    fn free_page(&self, phys: PhysAddr) {
        self.pages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != phys);
        self.mem.free_page(phys);
    }
}

impl<M: PageMap + ?Sized> PageMap for Recording<'_, M> {
    fn page(&self, phys: PhysAddr) -> Result<&kho::AtomicPage, kho::MemError> {
        self.mem.page(phys)
    }
}

fn metadata<M: ?Sized>(r: &Recording<'_, M>) -> Metadata {
    let mut pages = r.pages.lock().unwrap_or_else(|e| e.into_inner()).clone();
    pages.sort_unstable();
    Metadata {
        pages,
        object_bytes: 0,
        object_pages: 0,
    }
}

/// Mainline's tracker: the radix tree, one mutex around every operation.
pub struct RadixMainline<'a, M: PageAlloc + PageMap + ?Sized> {
    tree: Mutex<RadixTree<Recording<'a, M>>>,
}

impl<M: PageAlloc + PageMap + ?Sized> std::fmt::Debug for RadixMainline<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadixMainline").finish_non_exhaustive()
    }
}

impl<'a, M: PageAlloc + PageMap + ?Sized> RadixMainline<'a, M> {
    /// An empty tree (its root allocated).
    pub fn new(mem: &'a M) -> Result<Self, SchemeError> {
        let rec = Recording {
            mem,
            pages: Mutex::new(Vec::new()),
        };
        Ok(Self {
            tree: Mutex::new(RadixTree::new(rec)?),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RadixTree<Recording<'a, M>>> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<M: PageAlloc + PageMap + Sync + ?Sized> Scheme for RadixMainline<'_, M> {
    fn kind(&self) -> SchemeKind {
        SchemeKind::RadixMainline
    }

    fn preserve(&self, block: Block) -> Result<(), SchemeError> {
        Ok(self.lock().preserve(block)?)
    }

    fn unpreserve(&self, block: Block) -> Result<(), SchemeError> {
        Ok(self.lock().unpreserve(block)?)
    }

    fn finalize(&mut self) -> Result<Handover, SchemeError> {
        Ok(Handover {
            compatible: SchemeKind::RadixMainline.compatible(),
            root: self.lock().root(),
        })
    }

    fn metadata(&self) -> Metadata {
        metadata(self.lock().mem())
    }
}

/// Ours: the lock-free radix tree.
pub struct KhoScheme<'a, M: PageAlloc + PageMap + ?Sized> {
    tree: RadixTree<Recording<'a, M>>,
}

impl<M: PageAlloc + PageMap + ?Sized> std::fmt::Debug for KhoScheme<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KhoScheme").finish_non_exhaustive()
    }
}

impl<'a, M: PageAlloc + PageMap + ?Sized> KhoScheme<'a, M> {
    /// An empty tree (its root allocated).
    pub fn new(mem: &'a M) -> Result<Self, SchemeError> {
        let rec = Recording {
            mem,
            pages: Mutex::new(Vec::new()),
        };
        Ok(Self {
            tree: RadixTree::new(rec)?,
        })
    }
}

impl<M: PageAlloc + PageMap + Sync + ?Sized> Scheme for KhoScheme<'_, M> {
    fn kind(&self) -> SchemeKind {
        SchemeKind::Kho
    }

    fn preserve(&self, block: Block) -> Result<(), SchemeError> {
        Ok(self.tree.preserve(block)?)
    }

    fn unpreserve(&self, block: Block) -> Result<(), SchemeError> {
        Ok(self.tree.unpreserve(block)?)
    }

    fn finalize(&mut self) -> Result<Handover, SchemeError> {
        Ok(Handover {
            compatible: SchemeKind::Kho.compatible(),
            root: self.tree.root(),
        })
    }

    fn metadata(&self) -> Metadata {
        metadata(self.tree.mem())
    }
}

/// Mainline's walk runs under the tree's mutex (uncontended this early in
/// boot): `f` under it.
pub(super) fn under_tree_lock<T>(f: impl FnOnce() -> T) -> T {
    static TREE_LOCK: Mutex<()> = Mutex::new(());
    let _guard = TREE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    f()
}
