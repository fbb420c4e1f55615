//! The old kernel's side of KHO: preserving. The radix tree's memory
//! ([`TreeAlloc`]) and the preservation of the workload's folios
//! ([`Preserver`]: `kho_preserve_folio` plus the manifest entry).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use kho::{AtomicPage, Block, Cursor, MemError, PageAlloc, PageMap, PhysAddr};

use crate::arena::PhysMem;
use crate::buddy::Buddy;
use crate::manifest::{Checksum, ManifestEntry, fill_pattern};
use crate::scratch::{ScratchAreas, ScratchError};

/// Why a block could not be preserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreserveError {
    /// Simulated memory refused an access.
    #[error("memory: {0}")]
    Mem(#[from] MemError),
    /// The radix tree refused a block.
    #[error("preserving {block:?}: {source}")]
    Radix {
        /// The block.
        block: Block,
        /// The tree's error.
        source: kho::RadixError,
    },
    /// A block would have been preserved inside scratch.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
}

/// The [`PageAlloc`] handed to the old kernel's [`kho::RadixTree`]: the
/// buddy allocator, with every page it hands out (and takes back) recorded,
/// so that the poison keep-list names the tree's pages exactly.
pub struct TreeAlloc<'b, 'm> {
    buddy: &'b Buddy<'m>,
    pages: Mutex<BTreeSet<PhysAddr>>,
}

impl std::fmt::Debug for TreeAlloc<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeAlloc")
            .field("pages", &self.pages().len())
            .finish()
    }
}

impl<'b, 'm> TreeAlloc<'b, 'm> {
    /// Nothing allocated yet.
    pub fn new(buddy: &'b Buddy<'m>) -> Self {
        Self {
            buddy,
            pages: Mutex::new(BTreeSet::new()),
        }
    }

    /// The pages the tree holds now, ascending.
    pub fn pages(&self) -> Vec<PhysAddr> {
        self.pages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

impl PageAlloc for TreeAlloc<'_, '_> {
    fn alloc_zeroed_page(&self) -> Result<PhysAddr, MemError> {
        let phys = self.buddy.alloc_zeroed_page()?;
        self.pages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(phys);
        Ok(phys)
    }

    fn free_page(&self, phys: PhysAddr) {
        self.pages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&phys);
        self.buddy.free_page(phys);
    }
}

impl PageMap for TreeAlloc<'_, '_> {
    fn page(&self, phys: PhysAddr) -> Result<&AtomicPage, MemError> {
        self.buddy.memmap().mem().page_at(phys)
    }
}

/// Fills, checks and preserves the workload's folios, and records them
/// (`kho_preserve_folio` plus the manifest).
pub struct Preserver<'c, 't, M: PageAlloc + PageMap> {
    mem: &'c PhysMem,
    cursor: Cursor<'t, M>,
    scratch: &'c ScratchAreas,
    seed: u64,
    entries: Vec<ManifestEntry>,
    preserved: Vec<Block>,
}

impl<M: PageAlloc + PageMap> std::fmt::Debug for Preserver<'_, '_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preserver")
            .field("entries", &self.entries.len())
            .field("preserved", &self.preserved.len())
            .finish()
    }
}

impl<'c, 't, M: PageAlloc + PageMap> Preserver<'c, 't, M> {
    /// Preserves into `cursor`'s tree data under `seed`, refusing scratch.
    pub fn new(
        mem: &'c PhysMem,
        cursor: Cursor<'t, M>,
        scratch: &'c ScratchAreas,
        seed: u64,
    ) -> Self {
        Self {
            mem,
            cursor,
            scratch,
            seed,
            entries: Vec::new(),
            preserved: Vec::new(),
        }
    }

    /// Writes `block`'s data, preserves it and lists it.
    pub fn folio(&mut self, block: Block) -> Result<(), PreserveError> {
        self.check(block)?;
        let checksum = fill_pattern(self.mem, block, self.seed)?;
        self.preserve(block, checksum)
    }

    /// [`Preserver::folio`] for many blocks: the data is written on every
    /// core (`fill_parallel`), then the blocks are preserved and listed in
    /// order.
    pub fn folios(&mut self, blocks: &[Block]) -> Result<(), PreserveError> {
        for &b in blocks {
            self.check(b)?;
        }
        let sums = fill_parallel(self.mem, blocks, self.seed)?;
        for (&block, checksum) in blocks.iter().zip(sums) {
            self.preserve(block, checksum)?;
        }
        Ok(())
    }

    /// Writes the data of `blocks` and lists them, without preserving them:
    /// folios a file handler preserves itself (`memfd_luo_preserve`,
    /// `kvm_gmem_luo_preserve` call `kho_preserve_folio`), which the
    /// caller records with [`Preserver::preserved_by_handler`].
    pub fn listed(&mut self, blocks: &[Block]) -> Result<(), PreserveError> {
        for &b in blocks {
            self.check(b)?;
        }
        let sums = fill_parallel(self.mem, blocks, self.seed)?;
        self.entries.extend(
            blocks
                .iter()
                .zip(sums)
                .map(|(&block, checksum)| ManifestEntry { block, checksum }),
        );
        Ok(())
    }

    /// Records blocks a file handler preserved in the same tracker (its
    /// folios, records, chains and arrays): they join
    /// [`Preserver::preserved`].
    pub fn preserved_by_handler(&mut self, blocks: &[Block]) {
        self.preserved.extend_from_slice(blocks);
    }

    /// Refuses a block in scratch.
    fn check(&self, block: Block) -> Result<(), PreserveError> {
        let range = block
            .range()
            .ok_or(MemError::NotMapped { phys: block.phys() })?;
        Ok(self.scratch.check_preserve(range)?)
    }

    /// `kho_preserve_folio` of `block`, listed with its `checksum`.
    fn preserve(&mut self, block: Block, checksum: Checksum) -> Result<(), PreserveError> {
        self.cursor
            .preserve(block)
            .map_err(|source| PreserveError::Radix { block, source })?;
        self.entries.push(ManifestEntry { block, checksum });
        self.preserved.push(block);
        Ok(())
    }

    /// Writes `block`'s data and lists it, but does not preserve it.
    pub fn forget(&mut self, block: Block) -> Result<(), PreserveError> {
        let checksum = fill_pattern(self.mem, block, self.seed)?;
        self.entries.push(ManifestEntry { block, checksum });
        Ok(())
    }

    /// The manifest entries, in the order the blocks were written.
    pub fn entries(&self) -> &[ManifestEntry] {
        &self.entries
    }

    /// The blocks actually preserved.
    pub fn preserved(&self) -> &[Block] {
        &self.preserved
    }

    /// The entries and the preserved blocks.
    pub fn finish(self) -> (Vec<ManifestEntry>, Vec<Block>) {
        (self.entries, self.preserved)
    }
}

/// [`fill_pattern`] over `blocks` on every available core (each thread
/// takes the next unfilled block); the checksums in `blocks`' order. The
/// data does not depend on which thread wrote it.
pub(crate) fn fill_parallel(
    mem: &PhysMem,
    blocks: &[Block],
    seed: u64,
) -> Result<Vec<Checksum>, MemError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(blocks.len());
    if threads <= 1 {
        return blocks.iter().map(|&b| fill_pattern(mem, b, seed)).collect();
    }
    let next = AtomicUsize::new(0);
    let parts: Vec<Result<Vec<(usize, Checksum)>, MemError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&b) = blocks.get(i) else {
                            return Ok(out);
                        };
                        out.push((i, fill_pattern(mem, b, seed)?));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(MemError::OutOfMemory)))
            .collect()
    });
    let mut sums = vec![None; blocks.len()];
    for part in parts {
        for (i, c) in part? {
            if let Some(slot) = sums.get_mut(i) {
                *slot = Some(c);
            }
        }
    }
    sums.into_iter()
        .zip(blocks)
        .map(|(c, b)| c.ok_or(MemError::NotMapped { phys: b.phys() }))
        .collect()
}
