//! The boot sequence of the machine's memory management.
//!
//! # DOC: boot overview
//!
//! A [`Machine`] boots in four phases, each a public method so that the KHO
//! boot can insert itself between them and time each one:
//!
//! | phase                          | Linux                                   | KHO hook              |
//! |--------------------------------|-----------------------------------------|-----------------------|
//! | [`Machine::memblock_init`]     | `e820__memblock_setup`, `early_reserve_memory`, `memblock_allow_resize`, NUMA init | after: `kho_populate` |
//! | [`Machine::alloc_memmap`]      | `sparse_init`                           | (`kho_memory_init` may also go after it) |
//! | [`Machine::memmap_init`]       | `memmap_init` (from `free_area_init`) | after: `kho_memory_init` |
//! | [`Machine::memblock_free_all`] | `memblock_free_all`: scratch-only cleared, `memmap_init_reserved_pages`, free ranges to the buddy allocator | |
//! | [`Machine::page_alloc_init_late`] | `page_alloc_init_late`: `deferred_init_memmap` | after: the folios restored |
//!
//! `kho_populate` adds and marks scratch `KHO_SCRATCH` and switches to
//! scratch-only allocation; `kho_memory_init` reserves the preserved
//! memory, noinit (with [`MemmapMode::Lazy`], ours, it runs before
//! `memmap_init`). The struct-page configuration is
//! [`BootConfig::memmap`].
//!
//! [`Machine::boot`] runs them all. After `memblock_free_all` the buddy
//! allocator is live ([`Machine::buddy`]).

use kho::{PhysAddr, PhysRange};

use crate::arena::PhysMem;
use crate::buddy::{Buddy, BuddyError};
use crate::memblock::{Memblock, MemblockError};
use crate::memmap::{MemMap, MemmapError, MemmapInitStats, MemmapMode};

const MIB: u64 = 1 << 20;

/// Errors of the boot sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    /// A memblock operation failed.
    #[error("memblock: {0}")]
    Memblock(#[from] MemblockError),
    /// The memmap failed.
    #[error("memmap: {0}")]
    Memmap(#[from] MemmapError),
    /// The buddy allocator failed.
    #[error("buddy: {0}")]
    Buddy(#[from] BuddyError),
    /// A phase called out of order.
    #[error("boot phase {phase} needs {needs} first")]
    Phase {
        /// The phase called.
        phase: &'static str,
        /// What it needs.
        needs: &'static str,
    },
}

/// What the boot reserves before anything is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootConfig {
    /// The kernel image with its bss (reserved `RSRV_KERN`).
    pub kernel: PhysRange,
    /// Low memory x86 always reserves (the first 1 MiB).
    pub low_reserve: PhysRange,
    /// How struct pages are initialised (the kernel configuration).
    pub memmap: MemmapMode,
    /// CPUs of the node: `deferred_init_memmap` splits over them (Linux's
    /// padata); 1 by default.
    pub threads: usize,
    /// **Ours**: `memmap_init` split over `threads` too (Linux runs it on
    /// the boot CPU before `smp_init`).
    pub parallel_memmap_init: bool,
}

impl Default for BootConfig {
    /// A 16 MiB kernel at 16 MiB, and the first 1 MiB.
    fn default() -> Self {
        let r =
            |s: u64, e: u64| PhysRange::new(PhysAddr::new(s), PhysAddr::new(e)).unwrap_or_default();
        Self {
            kernel: r(16 * MIB, 32 * MIB),
            low_reserve: r(0, MIB),
            memmap: MemmapMode::Eager,
            threads: 1,
            parallel_memmap_init: false,
        }
    }
}

/// A machine's memory management across boot.
#[derive(Debug)]
pub struct Machine<'m> {
    mem: &'m PhysMem,
    config: BootConfig,
    /// The memblock state (public: the KHO boot works on it between phases).
    pub memblock: Memblock,
    memmap: Option<MemMap<'m>>,
    buddy: Option<Buddy<'m>>,
    /// **Ours** (the `skip` strategy): preserved ranges memblock does not
    /// know, kept from the buddy allocator (and, lazy, from `memmap_init`).
    skip: Vec<PhysRange>,
}

impl<'m> Machine<'m> {
    /// A machine before boot: memblock is the static, empty state.
    pub fn new(mem: &'m PhysMem, config: BootConfig) -> Self {
        Self {
            mem,
            config,
            memblock: Memblock::new(),
            memmap: None,
            buddy: None,
            skip: Vec::new(),
        }
    }

    /// Runs every phase with the default configuration.
    pub fn boot(mem: &'m PhysMem) -> Result<Self, BootError> {
        Self::boot_with(mem, BootConfig::default())
    }

    /// Runs every phase.
    pub fn boot_with(mem: &'m PhysMem, config: BootConfig) -> Result<Self, BootError> {
        let mut m = Self::new(mem, config);
        m.memblock_init()?;
        m.alloc_memmap()?;
        m.memmap_init()?;
        m.memblock_free_all()?;
        m.page_alloc_init_late()?;
        Ok(m)
    }

    /// The physical memory.
    pub fn mem(&self) -> &'m PhysMem {
        self.mem
    }

    /// The boot configuration.
    pub fn config(&self) -> BootConfig {
        self.config
    }

    /// Phase 1: `memblock_add` of every RAM range, node 0 for all memory,
    /// reservation of the low 1 MiB and of the kernel image, then
    /// `memblock_allow_resize`.
    pub fn memblock_init(&mut self) -> Result<(), BootError> {
        for r in self.mem.layout().ram() {
            self.memblock.memblock_add(r.start(), r.size())?;
        }
        self.memblock
            .memblock_set_node(PhysAddr::ZERO, u64::MAX, 0)?;
        let low = self.config.low_reserve;
        self.memblock.memblock_reserve(low.start(), low.size())?;
        let k = self.config.kernel;
        self.memblock.memblock_reserve_kern(k.start(), k.size())?;
        self.memblock.memblock_allow_resize();
        Ok(())
    }

    /// Phase 2: `sparse_init`: the struct pages' memory from memblock.
    pub fn alloc_memmap(&mut self) -> Result<(), BootError> {
        self.memmap = Some(MemMap::alloc(
            self.mem,
            &mut self.memblock,
            self.config.memmap,
            self.config.threads,
            self.config.parallel_memmap_init,
        )?);
        Ok(())
    }

    /// Phase 3: `memmap_init`: every struct page of memory initialised
    /// (reservations are not read; `PG_reserved` comes in
    /// `memblock_free_all`), or, deferred, those up to
    /// `first_deferred_pfn`; lazy (ours), all but the preserved ones.
    /// `kho_memory_init` runs after it (lazy: before).
    pub fn memmap_init(&mut self) -> Result<MemmapInitStats, BootError> {
        let memmap = self.memmap.as_ref().ok_or(BootError::Phase {
            phase: "memmap_init",
            needs: "alloc_memmap",
        })?;
        Ok(crate::memmap::memmap_init(
            &self.memblock,
            memmap,
            &self.skip,
        )?)
    }

    /// Phase 4: `memblock_free_all`: the buddy allocator takes every free
    /// page (deferred: those below `first_deferred_pfn`), except the
    /// [`Machine::set_skip`] ranges. Returns the number of pages freed.
    pub fn memblock_free_all(&mut self) -> Result<u64, BootError> {
        let memmap = self.memmap.take().ok_or(BootError::Phase {
            phase: "memblock_free_all",
            needs: "alloc_memmap",
        })?;
        let buddy = Buddy::new(memmap);
        let freed = crate::buddy::memblock_free_all(&mut self.memblock, &buddy, &self.skip)?;
        self.buddy = Some(buddy);
        Ok(freed)
    }

    /// **Ours** (the `skip` restore strategy): the ranges (sorted,
    /// disjoint) that [`Machine::memblock_free_all`] and
    /// [`Machine::page_alloc_init_late`] do not free although memblock does
    /// not know them as reserved (see
    /// `crate::buddy::memblock_free_all`), and that
    /// [`Machine::memmap_init`] leaves alone under [`MemmapMode::Lazy`].
    pub fn set_skip(&mut self, skip: &[PhysRange]) {
        self.skip = skip.to_vec();
    }

    /// [`Machine::set_skip`] then [`Machine::memblock_free_all`].
    pub fn memblock_free_all_except(&mut self, skip: &[PhysRange]) -> Result<u64, BootError> {
        self.set_skip(skip);
        self.memblock_free_all()
    }

    /// Phase 5: `page_alloc_init_late`: `deferred_init_memmap`, which
    /// initialises and frees the deferred free pages (nothing without
    /// deferred init). Returns the pages freed.
    pub fn page_alloc_init_late(&mut self) -> Result<u64, BootError> {
        let buddy = self.buddy.as_ref().ok_or(BootError::Phase {
            phase: "page_alloc_init_late",
            needs: "memblock_free_all",
        })?;
        Ok(crate::buddy::deferred_init_memmap(
            &self.memblock,
            buddy,
            &self.skip,
        )?)
    }

    /// memblock and the memmap together (before `memblock_free_all`): the
    /// KHO boot reserves preserved memory while it writes head pages.
    pub fn memblock_and_memmap(&mut self) -> (&mut Memblock, Option<&MemMap<'m>>) {
        (&mut self.memblock, self.memmap.as_ref())
    }

    /// The memmap (before or after `memblock_free_all`).
    pub fn memmap(&self) -> Option<&MemMap<'m>> {
        self.memmap
            .as_ref()
            .or_else(|| self.buddy.as_ref().map(|b| b.memmap()))
    }

    /// The buddy allocator, once `memblock_free_all` has run.
    pub fn buddy(&self) -> Option<&Buddy<'m>> {
        self.buddy.as_ref()
    }
}

#[cfg(test)]
mod tests;
