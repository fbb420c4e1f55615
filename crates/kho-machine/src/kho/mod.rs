//! KHO in the new kernel, as Linux's `kernel/liveupdate/kexec_handover.c`
//! has it: find the hand-over, keep the preserved memory away from the
//! allocators, give the folios back.
//!
//! # DOC: KHO boot overview
//!
//! One preserved block, in the order the new kernel meets it (the boot
//! phases are [`crate::boot`]'s):
//!
//! | step (module)                         | when                      | what                                                    |
//! |---------------------------------------|---------------------------|---------------------------------------------------------|
//! | [`kho_populate`] (`populate`)         | after `memblock_init`     | root FDT validated; scratch marked; scratch-only        |
//! | `alloc_memmap`                        |                           | the struct pages come from scratch                      |
//! | [`kho_memory_init`] (`memory_init`)   | before `memmap_init`      | walk; reserve per [`Strategy`]; heads `{order, KHOP}`   |
//! | `memmap_init`, `memblock_free_all`    | ([`Kho::skip_ranges`])    | preserved pages: not initialised, not freed             |
//! | [`kho_restore_folio`] (`restore`)     | buddy live                | head checked ([`KhoPageInfo`]); the folio made live     |
//!
//! A handover written by another tracker design reaches the same steps
//! through a [`PeerScheme`] (`peer`).
//!
//! Anything wrong in the hand-over makes the kernel boot **without KHO**: the
//! first broken rule is kept as a [`KhoError`] in [`Kho::error`], nothing of
//! the hand-over is trusted, and the boot goes on normally (the scratch
//! marks are undone; scratch-only allocation is switched off). That is
//! Linux ([`OnCorruption::Reject`], the default).
//!
//! **Ours**, [`OnCorruption::Salvage`] ([`Kho::set_on_corruption`] before
//! [`kho_memory_init`], or [`kho_populate_with`]): every block that
//! validates is kept; each damaged node of the radix tree
//! ([`kho::SalvageWalk`]) has the whole span of its subtree reserved in
//! memblock, never freed and never restored (no block that meets it gets
//! a head page); a root FDT that cannot be read or used, a root that does
//! not open, or a peer scheme's map that fails (a kho-v1 chunk list: past
//! a damaged chunk header, nothing says what the list covers) reserves all
//! RAM outside the scratch areas and the boot goes on from scratch. What
//! was lost is [`Kho::damage`], by address (`salvage`).
//!
//! # Conventions
//!
//! | name        | meaning                                                                  |
//! |-------------|--------------------------------------------------------------------------|
//! | block       | `2^order` pages, naturally aligned, preserved by one `kho_preserve_*`    |
//! | head        | a block's first struct page; its `private` is the [`KhoPageInfo`]       |
//! | map         | a tracker's preserved-memory map as the new kernel reads it ([`PreservedMap`]) |
//! | extent      | what one tracker reservation covers: a block, or a run of one order ([`Extent`]) |
//! | sink        | where the accounting goes: memblock.reserved and the heads ([`ReservationSink`]) |
//! | strategy    | how the map is accounted in the sink ([`Strategy`], DESIGN.md section 4) |
//! | scheme      | a tracker design other than ours ([`PeerScheme`])                        |

use std::sync::Arc;

use kho::{FdtError, KhoVersion, MemError, PhysAddr, PhysRange, RamMapError, WalkError};

use crate::kexec::KexecError;
use crate::memblock::MemblockError;
use crate::memmap::MemmapError;

mod memory_init;
mod peer;
mod populate;
mod restore;
mod salvage;

pub use kho::OnCorruption;
pub use memory_init::{
    Extent, KhoMemoryInitStats, MachineSink, MapSummary, PreservedMap, RadixMap, RadixMapError,
    Recorder, ReservationSink, ReserveError, Strategy, UnknownStrategy, kho_memory_init,
    reserve_preserved,
};
pub use peer::{PeerError, PeerFdt, PeerHandover, PeerScheme};
pub use populate::{kho_populate, kho_populate_with};
pub use restore::{KHO_PAGE_MAGIC, KhoPageInfo, kho_restore_folio, kho_restore_pages};
pub(crate) use restore::{blob_pages, kho_preserved_order};
pub use salvage::{
    CorruptClass, Corruption, DamageReport, SalvageMap, UnknownCorruptClass, inject_corruption,
};

/// Why KHO is not used, or why a restore failed: the first broken rule,
/// with where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KhoError {
    /// The setup_data list carries no KHO hand-over (a normal boot).
    #[error("no KHO hand-over in setup_data")]
    NoHandover,
    /// The setup_data list or the `kho_data` node is broken.
    #[error("hand-over rejected: {0}")]
    Handover(#[source] KexecError),
    /// The root FDT could not be read.
    #[error("root FDT at {fdt} could not be read: {source}")]
    FdtRead {
        /// Where it was said to be.
        fdt: PhysRange,
        /// Why.
        source: MemError,
    },
    /// The root FDT is malformed.
    #[error("root FDT at {fdt}: {source}")]
    Fdt {
        /// Where it is.
        fdt: PhysRange,
        /// The first broken rule.
        source: FdtError,
    },
    /// The root FDT is of a version this kernel does not restore.
    #[error("root FDT at {fdt} is {found}, this kernel restores kho-v2 and kho-v3")]
    Compatible {
        /// Where it is.
        fdt: PhysRange,
        /// The version found.
        found: KhoVersion,
    },
    /// A memblock operation on hand-over memory failed.
    #[error("memblock, {what} {range}: {source}")]
    Memblock {
        /// What was being done.
        what: &'static str,
        /// On which range.
        range: PhysRange,
        /// Why it failed.
        source: MemblockError,
    },
    /// Accounting the preserved memory failed.
    #[error(transparent)]
    Reserve(#[from] ReserveError),
    /// The RAM map given to the walker is inconsistent.
    #[error("RAM map for the walk: {0}")]
    RamMap(#[source] RamMapError),
    /// The preserved-memory map is corrupt.
    #[error("preserved-memory map at {root}: {source}")]
    Walk {
        /// The radix root.
        root: PhysAddr,
        /// The first broken invariant.
        source: WalkError,
    },
    /// A peer scheme refused the handover.
    #[error("{scheme}: {source}")]
    Scheme {
        /// The scheme.
        scheme: &'static str,
        /// Its first broken rule.
        source: PeerError,
    },
    /// `kho_memory_init` before `alloc_memmap`.
    #[error("kho_memory_init needs the memmap (alloc_memmap) first")]
    NoMemmap,
    /// A struct page could not be reached.
    #[error("struct page of {phys}: {source}")]
    Memmap {
        /// The address whose struct page was wanted.
        phys: PhysAddr,
        /// Why.
        source: MemmapError,
    },
    /// The head page does not carry the KHO magic: not preserved, or
    /// already restored.
    #[error(
        "restore of {phys}: page->private {private:#x} has no KHOP magic (not preserved, or restored already)"
    )]
    BadMagic {
        /// The address.
        phys: PhysAddr,
        /// The head page's `private`.
        private: u64,
    },
    /// The head page's order is impossible or not the one expected.
    #[error("restore of {phys}: order {order} in page->private is invalid ({reason})")]
    BadOrder {
        /// The address.
        phys: PhysAddr,
        /// The order found.
        order: u32,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

/// What [`kho_populate`] learned from a valid hand-over (`kho_in`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KhoIn {
    /// The root FDT page.
    pub fdt: PhysRange,
    /// Its version.
    pub version: KhoVersion,
    /// The radix root (`preserved-memory-map`).
    pub root: PhysAddr,
    /// The subnodes: `(name, preserved-data, blob-size)`.
    pub subnodes: Vec<(String, PhysAddr, Option<u64>)>,
    /// The scratch array.
    pub scratch_array: PhysRange,
    /// The scratch areas.
    pub scratch: Vec<PhysRange>,
}

impl KhoIn {
    /// The subnode `name`: its blob's address and size.
    pub fn subnode(&self, name: &str) -> Option<(PhysAddr, Option<u64>)> {
        self.subnodes
            .iter()
            .find(|(n, ..)| n == name)
            .map(|&(_, data, size)| (data, size))
    }
}

/// The new kernel's KHO state: in use ([`Kho::incoming`]) or not, and why
/// not ([`Kho::error`]).
#[derive(Debug, Clone, Default)]
pub struct Kho {
    incoming: Option<KhoIn>,
    error: Option<KhoError>,
    skip: Vec<PhysRange>,
    scheme: Option<Arc<dyn PeerScheme>>,
    on_corruption: OnCorruption,
    /// Salvage, root FDT unusable: the scratch areas (marked), so that
    /// `kho_memory_init` reserves all RAM outside them.
    unreadable_fdt: Option<Vec<PhysRange>>,
    damage: Vec<DamageReport>,
    damage_reserved: u64,
}

impl Kho {
    /// A boot without KHO, for `reason`.
    pub fn disabled(reason: KhoError) -> Self {
        Self {
            incoming: None,
            error: Some(reason),
            ..Self::default()
        }
    }

    /// What to do with a broken handover (before [`kho_memory_init`]).
    pub fn set_on_corruption(&mut self, mode: OnCorruption) {
        self.on_corruption = mode;
    }

    /// What is done with a broken handover.
    pub fn on_corruption(&self) -> OnCorruption {
        self.on_corruption
    }

    /// Salvage: every damaged node and the span reserved for it, in walk
    /// order (empty under reject, or when nothing is damaged).
    pub fn damage(&self) -> &[DamageReport] {
        &self.damage
    }

    /// Salvage: RAM bytes memblock reserved for the damage (its spans
    /// merged, inside RAM, outside scratch and the kernel image).
    pub fn damage_reserved_bytes(&self) -> u64 {
        self.damage_reserved
    }

    /// The validated hand-over, while KHO is in use.
    pub fn incoming(&self) -> Option<&KhoIn> {
        self.incoming.as_ref()
    }

    /// Whether KHO is in use.
    pub fn is_enabled(&self) -> bool {
        self.incoming.is_some()
    }

    /// Why KHO is not in use.
    pub fn error(&self) -> Option<&KhoError> {
        self.error.as_ref()
    }

    /// The preserved ranges `memmap_init` and `memblock_free_all` must skip
    /// (sorted, disjoint; empty unless the strategy is `skip`).
    pub fn skip_ranges(&self) -> &[PhysRange] {
        &self.skip
    }

    fn fail(&mut self, e: KhoError) {
        self.incoming = None;
        self.skip = Vec::new();
        self.error = Some(e);
    }
}

#[cfg(test)]
mod tests;
