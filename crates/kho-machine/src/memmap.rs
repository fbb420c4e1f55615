//! The memmap: one `struct page` of 64 bytes per page frame, kept in the
//! simulated physical memory, as `include/linux/mm_types.h`,
//! `mm/sparse.c` and `mm/mm_init.c` have it.
//!
//! # DOC: memmap overview
//!
//! Every page frame of present memory is described by a `struct page`. The
//! machine uses x86-64's SPARSEMEM_VMEMMAP model: physical memory is cut in
//! *sections* of 128 MiB (`SECTION_SIZE_BITS = 27`, 32768 pages); a section
//! that holds any memory is *present* and gets 2 MiB of struct pages. The
//! struct pages of all present sections are allocated from memblock in one
//! raw (not zeroed) block per node, as `sparse_init` does with its sparse
//! buffer, so their footprint (16 MiB per GiB of RAM) is real and lives in
//! [`PhysMem`]. [`MemMap`] keeps the host-side `mem_section[]` table: the
//! physical address of each present section's struct pages.
//!
//! The "virtual" memmap is the one Linux's vmemmap gives: the struct page of
//! frame `pfn` lives at `VMEMMAP_START + 64 * pfn`. Pointers stored *inside*
//! struct pages (list links, `compound_head`) are these virtual addresses, so
//! their bytes are the ones a kernel would write; [`vmemmap_to_pfn`] decodes
//! them.
//!
//! Struct pages are initialised as Linux initialises them in a kernel
//! without `CONFIG_DEFERRED_STRUCT_PAGE_INIT` (what mainline KHO requires:
//! `depends on !DEFERRED_STRUCT_PAGE_INIT`, torvalds/linux@8b66ed2c3f42),
//! pinned to torvalds/linux@40735a683bf844a453d7a0f91e5e3daa0abc659b
//! (v7.1-rc1, `mm/mm_init.c`, `mm/memblock.c`), in two passes:
//!
//! | pass | Linux | pages | result |
//! |------|-------|-------|--------|
//! | [`memmap_init`] (before `kho_memory_init`) | `memmap_init` -> `memmap_init_range` | every page of `memblock.memory`, NOMAP included; `memblock.reserved` is never read | `__init_single_page`: zeroed, links, refcount 1, mapcount -1 |
//! | | `init_unavailable_range` | holes inside a present section | same + `PG_reserved` |
//! | [`memmap_init_reserved_pages`] (in `memblock_free_all`) | `memmap_init_reserved_pages` -> `memmap_init_reserved_range` (ex `reserve_bootmem_region`) | reserved regions without `RSRV_NOINIT`; NOMAP memory | `PG_reserved` set, nothing else |
//! | | (skipped) | reserved with `RSRV_NOINIT` (KHO's preserved blocks) | as `memmap_init` left them, plus KHO's `{order, KHOP}` head info |
//!
//! # struct page layout (x86-64, 64 bytes)
//!
//! | word | bytes | field (order-0 / head page)                 | tail page                    | first tail (`folio` page 1)                    |
//! |------|-------|---------------------------------------------|------------------------------|------------------------------------------------|
//! | 0    | 0-7   | `flags` (PG_* bits, zone and node on top)   | `flags`                      | `_flags_1`: low byte = folio order             |
//! | 1    | 8-15  | `lru.next`                                  | `compound_head` = head \| 1  | `_head_1` = head \| 1                          |
//! | 2    | 16-23 | `lru.prev`                                  | (unused)                     | `_large_mapcount` \| `_entire_mapcount` << 32  |
//! | 3    | 24-31 | `mapping`                                   | `TAIL_MAPPING`               | `_nr_pages_mapped` \| `_pincount` << 32        |
//! | 4    | 32-39 | `index`                                     | `index`                      | `_folio_nr_pages` (low 32 bits)                |
//! | 5    | 40-47 | `private` (buddy: order; KHO: order \| magic << 32) | `private` = 0         | `private` = 0                                  |
//! | 6    | 48-55 | `_mapcount` / `page_type` (low 32) \| `_refcount` << 32 | same                  | same                                           |
//! | 7    | 56-63 | `memcg_data`                                | `memcg_data`                 | `memcg_data`                                   |
//!
//! `page_type` shares `_mapcount`: -1 (all ones) means "no type"; a free
//! buddy page has `PGTY_buddy << 24` (0xf000_0000) there and its order in
//! `private`.

use core::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use kho::{MemError, Order, PAGE_SHIFT, Pfn, PhysAddr, PhysRange};

use crate::arena::PhysMem;
use crate::memblock::{MEMBLOCK_ALLOC_ACCESSIBLE, Memblock, MemblockError, MemblockFlags};

/// Bytes of a `struct page`.
pub(crate) const STRUCT_PAGE_SIZE: u64 = 64;
/// Words of a `struct page`.
pub(crate) const STRUCT_PAGE_WORDS: usize = 8;
const _: () = assert!(STRUCT_PAGE_SIZE == 8 * STRUCT_PAGE_WORDS as u64);

/// log2 of a section's size in bytes (x86-64).
pub(crate) const SECTION_SIZE_BITS: u32 = 27;
/// log2 of the pages per section.
pub(crate) const PFN_SECTION_SHIFT: u32 = SECTION_SIZE_BITS - PAGE_SHIFT;
/// Pages per section.
pub(crate) const PAGES_PER_SECTION: u64 = 1 << PFN_SECTION_SHIFT;
/// Bytes of struct pages per section (2 MiB, one PMD).
pub(crate) const SECTION_MAP_SIZE: u64 = PAGES_PER_SECTION * STRUCT_PAGE_SIZE;
/// `PMD_SIZE`: the alignment of the memmap allocation.
pub(crate) const PMD_SIZE: u64 = 1 << 21;
/// `__pa(MAX_DMA_ADDRESS)`: the memmap is allocated above it.
pub(crate) const MAX_DMA_ADDRESS: u64 = 16 << 20;

/// x86-64 `VMEMMAP_START` (4-level paging, no KASLR).
pub(crate) const VMEMMAP_START: u64 = 0xffff_ea00_0000_0000;
/// Offset of `lru` in `struct page`.
pub(crate) const LRU_OFFSET: u64 = 8;
/// `POISON_POINTER_DELTA` on x86-64.
pub(crate) const POISON_POINTER_DELTA: u64 = 0xdead_0000_0000_0000;
/// `LIST_POISON1`: `lru.next` of a deleted list entry.
pub(crate) const LIST_POISON1: u64 = POISON_POINTER_DELTA + 0x100;
/// `LIST_POISON2`: `lru.prev` of a deleted list entry.
pub(crate) const LIST_POISON2: u64 = POISON_POINTER_DELTA + 0x122;
/// `TAIL_MAPPING`: `mapping` of tail pages (from page 2 on).
pub(crate) const TAIL_MAPPING: u64 = POISON_POINTER_DELTA + 0x400;

/// The page flag bits used here (`enum pageflags`,
/// include/linux/page-flags.h).
pub(crate) mod pg {
    /// Head of a compound page (must be bit 6).
    pub(crate) const HEAD: u32 = 6;
    /// Reserved: never handed to the buddy allocator.
    pub(crate) const RESERVED: u32 = 13;
}

/// The `page_type` value used here (top byte of the `_mapcount` word).
pub(crate) mod pgty {
    /// A free page in the buddy allocator.
    pub(crate) const BUDDY: u32 = 0xf0;
}

/// `ZONE_NORMAL` (the machine has a single zone, see [`crate::buddy`]).
pub(crate) const ZONE_NORMAL: u64 = 2;
/// Width of the zone field in `flags`.
pub(crate) const ZONES_WIDTH: u32 = 2;
/// Width of the node field in `flags` (`NODES_SHIFT`).
pub(crate) const NODES_WIDTH: u32 = 6;
/// Shift of the zone field in `flags`.
pub(crate) const ZONES_PGSHIFT: u32 = 64 - ZONES_WIDTH;
/// Shift of the node field in `flags`.
pub(crate) const NODES_PGSHIFT: u32 = ZONES_PGSHIFT - NODES_WIDTH;

/// `flags` of a freshly initialised page: `set_page_links(page, zone, nid)`.
pub(crate) const fn page_links(zone: u64, nid: u64) -> u64 {
    (zone << ZONES_PGSHIFT) | (nid << NODES_PGSHIFT)
}

/// The virtual address of `pfn`'s struct page (`pfn_to_page` under vmemmap).
pub(crate) const fn pfn_to_vmemmap(pfn: Pfn) -> u64 {
    VMEMMAP_START.wrapping_add(pfn.as_u64().wrapping_mul(STRUCT_PAGE_SIZE))
}

/// The frame whose struct page (or a field of it) is at virtual address
/// `addr`; `None` for an address outside the vmemmap.
pub(crate) fn vmemmap_to_pfn(addr: u64) -> Option<Pfn> {
    let off = addr.checked_sub(VMEMMAP_START)?;
    Pfn::new(off / STRUCT_PAGE_SIZE).filter(|_| off < (1 << 46))
}

/// Errors of the memmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemmapError {
    /// A frame with no struct page (its section is not present).
    #[error("pfn {pfn} has no struct page (section {section} not present)")]
    NoStructPage {
        /// The frame.
        pfn: Pfn,
        /// Its section.
        section: u64,
    },
    /// Memblock could not give the memmap its memory.
    #[error("memmap allocation: {0}")]
    Memblock(#[from] MemblockError),
    /// The simulated memory refused an access.
    #[error("memmap access: {0}")]
    Mem(#[from] MemError),
}

/// One struct page: typed access to its 8 words in the simulated memory.
#[derive(Clone, Copy)]
pub struct StructPage<'a> {
    w: &'a [AtomicU64; STRUCT_PAGE_WORDS],
    pfn: Pfn,
}

const W_FLAGS: usize = 0;
const W_LRU_NEXT: usize = 1;
const W_LRU_PREV: usize = 2;
const W_MAPPING: usize = 3;
const W_INDEX: usize = 4;
const W_PRIVATE: usize = 5;
const W_COUNTS: usize = 6;
const W_MEMCG: usize = 7;

impl<'a> StructPage<'a> {
    fn ld(&self, i: usize) -> u64 {
        self.w[i].load(Ordering::Relaxed)
    }

    fn st(&self, i: usize, v: u64) {
        self.w[i].store(v, Ordering::Relaxed)
    }

    /// The frame this struct page describes (`page_to_pfn`).
    pub fn pfn(&self) -> Pfn {
        self.pfn
    }

    /// The `private` word (to prefetch it).
    pub fn private_word(&self) -> &'a AtomicU64 {
        &self.w[W_PRIVATE]
    }

    /// The eight words.
    pub fn words(&self) -> &'a [AtomicU64; STRUCT_PAGE_WORDS] {
        self.w
    }

    /// A copy of the 8 words.
    pub fn snapshot(&self) -> [u64; STRUCT_PAGE_WORDS] {
        core::array::from_fn(|i| self.ld(i))
    }

    /// `page->flags`.
    pub fn flags(&self) -> u64 {
        self.ld(W_FLAGS)
    }

    /// Sets `page->flags`.
    pub fn set_flags(&self, v: u64) {
        self.st(W_FLAGS, v)
    }

    /// Tests flag bit `bit` (a `pg` constant).
    pub fn test_flag(&self, bit: u32) -> bool {
        self.flags() & (1 << bit) != 0
    }

    /// `__SetPageX`: sets flag bit `bit` (non-atomic, as the `__` variants).
    pub fn set_flag(&self, bit: u32) {
        self.set_flags(self.flags() | (1 << bit))
    }

    /// `__ClearPageX`.
    pub fn clear_flag(&self, bit: u32) {
        self.set_flags(self.flags() & !(1 << bit))
    }

    /// `PageReserved`.
    pub fn is_reserved(&self) -> bool {
        self.test_flag(pg::RESERVED)
    }

    /// `PageHead`.
    pub fn is_head(&self) -> bool {
        self.test_flag(pg::HEAD)
    }

    /// `lru.next` (raw virtual address).
    pub fn lru_next(&self) -> u64 {
        self.ld(W_LRU_NEXT)
    }

    /// `lru.prev` (raw virtual address).
    pub fn lru_prev(&self) -> u64 {
        self.ld(W_LRU_PREV)
    }

    /// Sets `lru.next`.
    pub fn set_lru_next(&self, v: u64) {
        self.st(W_LRU_NEXT, v)
    }

    /// Sets `lru.prev`.
    pub fn set_lru_prev(&self, v: u64) {
        self.st(W_LRU_PREV, v)
    }

    /// The address of this page's `lru` (what list neighbours point to).
    pub fn lru_addr(&self) -> u64 {
        pfn_to_vmemmap(self.pfn).wrapping_add(LRU_OFFSET)
    }

    /// `PageTail`: the head of the compound page this tail belongs to
    /// (`compound_head` with bit 0 set), `None` for a non-tail page.
    pub fn compound_head(&self) -> Option<Pfn> {
        let v = self.ld(W_LRU_NEXT);
        if v & 1 == 1 {
            vmemmap_to_pfn(v & !1)
        } else {
            None
        }
    }

    /// `set_compound_head`: `compound_head = head | 1`.
    pub fn set_compound_head(&self, head: Pfn) {
        self.st(W_LRU_NEXT, pfn_to_vmemmap(head) | 1)
    }

    /// `page->mapping`.
    pub fn mapping(&self) -> u64 {
        self.ld(W_MAPPING)
    }

    /// Sets `page->mapping`.
    pub fn set_mapping(&self, v: u64) {
        self.st(W_MAPPING, v)
    }

    /// `page->index`.
    pub fn index(&self) -> u64 {
        self.ld(W_INDEX)
    }

    /// Sets `page->index`.
    pub fn set_index(&self, v: u64) {
        self.st(W_INDEX, v)
    }

    /// `page_private(page)`.
    pub fn private(&self) -> u64 {
        self.ld(W_PRIVATE)
    }

    /// `set_page_private`.
    pub fn set_private(&self, v: u64) {
        self.st(W_PRIVATE, v)
    }

    /// `page_ref_count`: `_refcount`.
    pub fn refcount(&self) -> i32 {
        (self.ld(W_COUNTS) >> 32) as u32 as i32
    }

    /// `set_page_count`.
    pub fn set_refcount(&self, v: i32) {
        let _ = self.w[W_COUNTS].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            Some((w & 0xffff_ffff) | (u64::from(v as u32) << 32))
        });
    }

    /// `page_ref_inc`.
    pub fn ref_inc(&self) {
        self.w[W_COUNTS].fetch_add(1 << 32, Ordering::Relaxed);
    }

    /// `page_ref_dec_and_test`: decrements, true when it reaches zero.
    pub fn ref_dec_and_test(&self) -> bool {
        let old = self.w[W_COUNTS].fetch_sub(1 << 32, Ordering::Relaxed);
        (old >> 32) as u32 == 1
    }

    /// `_mapcount` (-1: unmapped).
    pub fn mapcount(&self) -> i32 {
        self.page_type() as i32
    }

    /// `page_type` (the same 32 bits as `_mapcount`).
    pub fn page_type(&self) -> u32 {
        self.ld(W_COUNTS) as u32
    }

    /// Sets `page_type` / `_mapcount`.
    pub fn set_page_type(&self, v: u32) {
        let _ = self.w[W_COUNTS].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            Some((w & !0xffff_ffff) | u64::from(v))
        });
    }

    /// `PageBuddy`: a free page heading a buddy block.
    pub fn is_buddy(&self) -> bool {
        self.page_type() >> 24 == pgty::BUDDY
    }

    /// `__SetPageBuddy`.
    pub fn set_buddy(&self) {
        self.set_page_type(pgty::BUDDY << 24)
    }

    /// `__ClearPageBuddy`: back to "no type" (-1).
    pub fn clear_buddy(&self) {
        self.set_page_type(u32::MAX)
    }

    /// `buddy_order`: the order of a free buddy block (in `private`).
    pub fn buddy_order(&self) -> u64 {
        self.private()
    }

    /// `page->memcg_data`.
    pub fn memcg_data(&self) -> u64 {
        self.ld(W_MEMCG)
    }

    /// `__init_single_page(page, pfn, ZONE_NORMAL, nid)`: zero the page,
    /// set the zone and node links, refcount 1, mapcount -1, and an empty
    /// `lru`.
    pub fn init_single_page(&self, nid: u64) {
        init_words(self.w, self.pfn.as_u64(), page_links(ZONE_NORMAL, nid));
    }
}

impl fmt::Debug for StructPage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "page(pfn {}: flags {:#x} lru {:#x}/{:#x} mapping {:#x} index {:#x} private {:#x} type {:#x} ref {})",
            self.pfn,
            self.flags(),
            self.lru_next(),
            self.lru_prev(),
            self.mapping(),
            self.index(),
            self.private(),
            self.page_type(),
            self.refcount()
        )
    }
}

/// `_refcount` 1, `_mapcount` -1.
const INIT_COUNTS: u64 = (1 << 32) | 0xffff_ffff;

/// The tight core of `__init_single_page`: 8 stores.
#[inline(always)]
fn init_words(w: &[AtomicU64], pfn: u64, flags: u64) {
    let lru = VMEMMAP_START
        .wrapping_add(pfn.wrapping_mul(STRUCT_PAGE_SIZE))
        .wrapping_add(LRU_OFFSET);
    if let [w0, w1, w2, w3, w4, w5, w6, w7] = w {
        w0.store(flags, Ordering::Relaxed);
        w1.store(lru, Ordering::Relaxed);
        w2.store(lru, Ordering::Relaxed);
        w3.store(0, Ordering::Relaxed);
        w4.store(0, Ordering::Relaxed);
        w5.store(0, Ordering::Relaxed);
        w6.store(INIT_COUNTS, Ordering::Relaxed);
        w7.store(0, Ordering::Relaxed);
    }
}

/// The memmap: the `mem_section[]` table of a machine and its memory.
pub struct MemMap<'m> {
    mem: &'m PhysMem,
    /// Physical address of each present section's struct pages, by section
    /// number (`section_mem_map`).
    section_mem_map: Vec<Option<PhysAddr>>,
    /// The memblock allocations holding the struct pages.
    allocations: Vec<PhysRange>,
    nid: u64,
    /// The kernel configuration of struct-page initialisation.
    mode: MemmapMode,
    /// `pgdat->first_deferred_pfn` (`u64::MAX`: nothing deferred).
    first_deferred_pfn: AtomicU64,
    /// Struct pages initialised so far (`__init_single_page` calls).
    inited: AtomicU64,
    /// The CPUs of the node (`--threads`): `deferred_init_memmap` splits
    /// its work over them as Linux's padata does; `None`: one.
    pool: Option<std::sync::Arc<rayon::ThreadPool>>,
    /// **Ours** (`--parallel-memmap-init`): `memmap_init` split over the
    /// same threads (Linux runs it on the boot CPU, before `smp_init`).
    parallel_init: bool,
}

impl fmt::Debug for MemMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemMap")
            .field("present_sections", &self.present_sections())
            .field("allocations", &self.allocations)
            .field("mode", &self.mode)
            .field("first_deferred_pfn", &self.first_deferred_pfn())
            .finish()
    }
}

/// Counts of `memmap_init` ([`Machine::memmap_init`](crate::Machine::memmap_init)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemmapInitStats {
    /// Struct pages of free memory initialised.
    pub free: u64,
    /// Struct pages of reserved (or NOMAP) memory initialised and marked
    /// `PG_reserved`.
    pub reserved: u64,
    /// Struct pages of holes initialised and marked `PG_reserved`.
    pub unavailable: u64,
    /// Struct pages of `RSRV_NOINIT` memory left untouched.
    pub noinit: u64,
    /// Struct pages of memory deferred ([`MemmapMode::Deferred`]).
    pub deferred: u64,
}

/// The kernel configuration of struct-page initialisation (`kho run
/// --memmap`, `kho bench --memmap`). The baseline boot of a run always uses
/// the same one.
///
/// | mode | Linux | struct pages of memory before `memblock_free_all` | preserved pages |
/// |------|-------|---------------------------------------------------|-----------------|
/// | `eager` (default) | `CONFIG_DEFERRED_STRUCT_PAGE_INIT=n`, what mainline KHO required (`depends on !DEFERRED_STRUCT_PAGE_INIT`), torvalds/linux@40735a68 | all, by `memmap_init` | initialised by `memmap_init`; restore only sets refcounts |
/// | `deferred` | `CONFIG_DEFERRED_STRUCT_PAGE_INIT=y` with the KHO fix that initialises preserved pages in the reserve path (`kho_get_preserved_page` -> `init_deferred_page`), linux-mm/linux-mm@65660710 | up to `first_deferred_pfn`; reserved ones later by `memmap_init_reserved_pages`; free ones by `deferred_init_memmap` in `page_alloc_init_late` | initialised by `kho_memory_init` |
/// | `lazy` (**ours**) | not in Linux | all but `RSRV_NOINIT` reservations (and `skip`) | initialised when restored |
///
/// `lazy` needs these kernel changes: `kho_memory_init` before
/// `free_area_init` (the walk needs only the direct map), `memmap_init_range`
/// consulting `memblock.reserved` for `RSRV_NOINIT`, and
/// `kho_restore_folio`/`kho_restore_pages` running `__init_single_page`
/// over the block. It gives up the invariant that every struct page of
/// memory is initialised once `mm_core_init` returns: every pfn walker
/// that runs before the last folio is restored (`set_zone_contiguous` and
/// `page_ext_init` at the end of `page_alloc_init_late`, compaction's
/// scanners, `page_owner`, `/proc/kpageflags`, memory hot-remove) would
/// read garbage there, and a preserved block nobody restores keeps
/// uninitialised struct pages for the kernel's lifetime. See
/// docs/methodology.md.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum MemmapMode {
    /// No deferred struct-page init: `memmap_init` initialises all.
    #[default]
    Eager,
    /// Deferred struct-page init with KHO's fix.
    Deferred,
    /// Ours: preserved struct pages initialised at restore.
    Lazy,
}

impl MemmapMode {
    /// Every mode, the default first.
    pub const ALL: [MemmapMode; 3] = [Self::Eager, Self::Deferred, Self::Lazy];
    /// Their names, for help texts.
    pub const NAMES: &'static str = "eager, deferred, lazy";

    /// The name used on the command line and in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Eager => "eager",
            Self::Deferred => "deferred",
            Self::Lazy => "lazy",
        }
    }

    /// Whether Linux has it (`lazy` is ours).
    pub const fn is_linux(self) -> bool {
        !matches!(self, Self::Lazy)
    }
}

impl fmt::Display for MemmapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--memmap` value that names no [`MemmapMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown memmap mode {0:?} ({names})", names = MemmapMode::NAMES)]
pub struct UnknownMemmapMode(pub String);

impl core::str::FromStr for MemmapMode {
    type Err = UnknownMemmapMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMemmapMode(s.to_owned()))
    }
}

fn pfn_up(addr: u64) -> u64 {
    addr.div_ceil(1 << PAGE_SHIFT)
}

fn pfn_down(addr: u64) -> u64 {
    addr >> PAGE_SHIFT
}

fn pfn(raw: u64) -> Pfn {
    Pfn::new(raw).unwrap_or(Pfn::MAX)
}

impl<'m> MemMap<'m> {
    /// `sparse_init` for the single node 0: marks every section that holds
    /// memory present (`memory_present`), then allocates their struct pages
    /// with one raw memblock allocation of `2 MiB * present sections`, PMD
    /// aligned, above `MAX_DMA_ADDRESS` (`sparse_buffer_init`). The struct
    /// pages are *not* initialised.
    ///
    /// The node has `threads` CPUs (at least 1); with `parallel_init`
    /// (ours), `memmap_init` is split over them.
    pub fn alloc(
        mem: &'m PhysMem,
        memblock: &mut Memblock,
        mode: MemmapMode,
        threads: usize,
        parallel_init: bool,
    ) -> Result<Self, MemmapError> {
        let mut present: Vec<bool> = Vec::new();
        for r in memblock.for_each_mem_region() {
            let (start, end) = (pfn_down(r.base.as_u64()), pfn_up(r.range().end().as_u64()));
            if start >= end {
                continue;
            }
            let (s0, s1) = (start >> PFN_SECTION_SHIFT, (end - 1) >> PFN_SECTION_SHIFT);
            let need = usize::try_from(s1 + 1).unwrap_or(usize::MAX);
            if present.len() < need {
                present.resize(need, false);
            }
            for s in s0..=s1 {
                if let Some(p) = usize::try_from(s).ok().and_then(|s| present.get_mut(s)) {
                    *p = true;
                }
            }
        }
        let nr = present.iter().filter(|p| **p).count() as u64;
        let mut section_mem_map = vec![None; present.len()];
        let mut allocations = Vec::new();
        if nr > 0 {
            let size = nr * SECTION_MAP_SIZE;
            let base = memblock.memblock_alloc_try_nid_raw(
                size,
                PMD_SIZE,
                PhysAddr::new(MAX_DMA_ADDRESS),
                MEMBLOCK_ALLOC_ACCESSIBLE,
                0,
            )?;
            let mut next = base;
            for (slot, _) in section_mem_map
                .iter_mut()
                .zip(&present)
                .filter(|(_, p)| **p)
            {
                *slot = Some(next);
                next = next.checked_add(SECTION_MAP_SIZE).unwrap_or(next);
            }
            allocations.push(PhysRange::new(base, next).unwrap_or_default());
        }
        Ok(Self {
            mem,
            section_mem_map,
            allocations,
            nid: 0,
            mode,
            first_deferred_pfn: AtomicU64::new(u64::MAX),
            inited: AtomicU64::new(0),
            pool: (threads > 1)
                .then(|| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .ok()
                        .map(std::sync::Arc::new)
                })
                .flatten(),
            parallel_init,
        })
    }

    /// The threads the node's CPUs give (`--threads`): 1 without a pool.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// Runs `f` over `jobs` on the node's threads (in order on one).
    pub(crate) fn run_jobs<T: Sync, E: Send>(
        &self,
        jobs: &[T],
        f: impl Fn(&T) -> Result<(), E> + Sync + Send,
    ) -> Result<(), E> {
        use rayon::prelude::*;
        match &self.pool {
            Some(pool) if jobs.len() > 1 => pool.install(|| jobs.par_iter().try_for_each(&f)),
            _ => jobs.iter().try_for_each(f),
        }
    }

    /// The kernel configuration this memmap is initialised under.
    pub fn mode(&self) -> MemmapMode {
        self.mode
    }

    /// `pgdat->first_deferred_pfn`: the first frame whose struct page
    /// `memmap_init` deferred (`None`: nothing deferred).
    pub fn first_deferred_pfn(&self) -> Option<Pfn> {
        match self.first_deferred_pfn.load(Ordering::Relaxed) {
            u64::MAX => None,
            p => Pfn::new(p),
        }
    }

    /// Struct pages initialised so far (every `__init_single_page`).
    pub fn inited_pages(&self) -> u64 {
        self.inited.load(Ordering::Relaxed)
    }

    /// `early_page_initialised`: whether `memmap_init` initialised `pfn`'s
    /// struct page (always, unless deferred init left it for later).
    pub fn early_page_initialised(&self, pfn: Pfn) -> bool {
        pfn.as_u64() < self.first_deferred_pfn.load(Ordering::Relaxed)
    }

    /// `init_deferred_page` (linux-mm@65660710 `mm/mm_init.c`): initialises
    /// `pfn`'s struct page if deferred init left it uninitialised; a no-op
    /// below `first_deferred_pfn` and without deferred init.
    pub fn init_deferred_page(&self, pfn: Pfn) -> Result<(), MemmapError> {
        if self.early_page_initialised(pfn) {
            return Ok(());
        }
        self.pfn_to_page(pfn)?.init_single_page(self.nid);
        self.inited.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// `kho_get_preserved_page` (linux-mm@65660710
    /// `kernel/liveupdate/kexec_handover.c`, the fix that lets KHO run with
    /// deferred struct-page init): under [`MemmapMode::Deferred`],
    /// `init_deferred_page` for every page of the preserved `block` before
    /// its head info is written (`RSRV_NOINIT` then keeps
    /// `memmap_init_reserved_pages` off it, and the deferred pass only
    /// walks free ranges). Returns the head's struct page.
    pub fn kho_get_preserved_page(&self, block: kho::Block) -> Result<StructPage<'m>, MemmapError> {
        let head = block.pfn();
        if self.mode == MemmapMode::Deferred && !self.early_page_initialised(head) {
            let end = pfn(head.as_u64().saturating_add(block.order().pages()));
            self.init_range(head, end, false, false)?;
        }
        self.pfn_to_page(head)
    }

    /// The physical memory.
    pub fn mem(&self) -> &'m PhysMem {
        self.mem
    }

    /// Number of present sections.
    pub fn present_sections(&self) -> usize {
        self.section_mem_map.iter().filter(|s| s.is_some()).count()
    }

    /// The physical ranges holding struct pages.
    pub fn allocations(&self) -> &[PhysRange] {
        &self.allocations
    }

    /// Bytes of struct pages.
    pub fn footprint(&self) -> u64 {
        self.allocations.iter().map(|r| r.size()).sum()
    }

    /// One past the highest frame with a struct page.
    pub fn max_pfn(&self) -> Pfn {
        pfn((self.section_mem_map.len() as u64) << PFN_SECTION_SHIFT)
    }

    /// Whether `pfn` has a struct page (`pfn_valid`).
    pub fn pfn_valid(&self, pfn: Pfn) -> bool {
        self.section_base(pfn.as_u64()).is_some()
    }

    fn section_base(&self, pfn: u64) -> Option<PhysAddr> {
        let s = usize::try_from(pfn >> PFN_SECTION_SHIFT).ok()?;
        *self.section_mem_map.get(s)?
    }

    /// Physical address of `pfn`'s struct page.
    pub fn struct_page_phys(&self, pfn: Pfn) -> Result<PhysAddr, MemmapError> {
        let raw = pfn.as_u64();
        let base = self.section_base(raw).ok_or(MemmapError::NoStructPage {
            pfn,
            section: raw >> PFN_SECTION_SHIFT,
        })?;
        let off = (raw & (PAGES_PER_SECTION - 1)) * STRUCT_PAGE_SIZE;
        base.checked_add(off).ok_or(MemmapError::NoStructPage {
            pfn,
            section: raw >> PFN_SECTION_SHIFT,
        })
    }

    /// `pfn_to_page`.
    pub fn pfn_to_page(&self, pfn: Pfn) -> Result<StructPage<'m>, MemmapError> {
        let phys = self.struct_page_phys(pfn)?;
        let words = self.mem.words(phys, STRUCT_PAGE_WORDS)?;
        let w: &[AtomicU64; STRUCT_PAGE_WORDS] =
            words.try_into().map_err(|_| MemError::NotMapped { phys })?;
        Ok(StructPage { w, pfn })
    }

    /// `page_to_pfn`.
    pub fn page_to_pfn(page: &StructPage<'_>) -> Pfn {
        page.pfn
    }

    /// `folio_order` of the folio headed at `head`: 0 for a non-head page,
    /// else the low byte of the first tail page's flags (`_flags_1`).
    pub fn folio_order(&self, head: Pfn) -> Result<Order, MemmapError> {
        let page = self.pfn_to_page(head)?;
        if !page.is_head() {
            return Ok(Order::ZERO);
        }
        let tail = self.pfn_to_page(pfn(head.as_u64().wrapping_add(1)))?;
        Ok(Order::try_new((tail.flags() & 0xff) as u32).unwrap_or(Order::MAX))
    }

    /// Calls `f(first_pfn, words)` for each run of struct pages of
    /// `[start, end)` that is contiguous in memory (one per section at most);
    /// frames without struct pages are skipped when `skip_absent`, an error
    /// otherwise.
    pub fn for_each_chunk(
        &self,
        start: Pfn,
        end: Pfn,
        skip_absent: bool,
        mut f: impl FnMut(u64, &'m [AtomicU64]),
    ) -> Result<(), MemmapError> {
        let (mut p, end) = (start.as_u64(), end.as_u64());
        while p < end {
            let section_end = (p | (PAGES_PER_SECTION - 1)).saturating_add(1).min(end);
            match self.section_base(p) {
                Some(base) => {
                    let off = (p & (PAGES_PER_SECTION - 1)) * STRUCT_PAGE_SIZE;
                    let phys = base.checked_add(off).unwrap_or(base);
                    let n =
                        usize::try_from((section_end - p) * STRUCT_PAGE_WORDS as u64).unwrap_or(0);
                    f(p, self.mem.words(phys, n)?);
                }
                None if skip_absent => {}
                None => {
                    return Err(MemmapError::NoStructPage {
                        pfn: pfn(p),
                        section: p >> PFN_SECTION_SHIFT,
                    });
                }
            }
            p = section_end;
        }
        Ok(())
    }

    /// `__init_single_page` over `[start, end)`, setting `PG_reserved` when
    /// `reserved` (the `reserve_bootmem_region` / `init_unavailable_range`
    /// flavour). The loop is the measured hot path: 8 stores per page.
    pub fn init_range(
        &self,
        start: Pfn,
        end: Pfn,
        reserved: bool,
        skip_absent: bool,
    ) -> Result<u64, MemmapError> {
        let flags =
            page_links(ZONE_NORMAL, self.nid) | if reserved { 1 << pg::RESERVED } else { 0 };
        let mut count = 0u64;
        self.for_each_chunk(start, end, skip_absent, |first, words| {
            let mut p = first;
            for w in words.chunks_exact(STRUCT_PAGE_WORDS) {
                init_words(w, p, flags);
                p += 1;
            }
            count += p - first;
        })?;
        self.inited.fetch_add(count, Ordering::Relaxed);
        Ok(count)
    }
}

/// `memmap_init` (torvalds/linux@40735a68 `mm/mm_init.c`): initialises the
/// struct page of every page of `memblock.memory` (`for_each_mem_pfn_range`,
/// NOMAP regions included) and marks the holes inside present sections
/// `PG_reserved` (`init_unavailable_range`), up to the end of the last
/// present section. It never reads `memblock.reserved`: reserved and
/// `RSRV_NOINIT` pages are initialised like free ones. Counts go to
/// [`MemmapInitStats::free`] (pages of memory) and
/// [`MemmapInitStats::unavailable`] (holes).
///
/// Per [`MemMap::mode`]:
/// - [`MemmapMode::Eager`]: as above.
/// - [`MemmapMode::Deferred`]: `memmap_init_range` stops at the frame where
///   `defer_init` says so (one section of pages initialised in the node's
///   highest zone, then the next section boundary becomes
///   `first_deferred_pfn`); the rest of memory is left to
///   [`crate::buddy::deferred_init_memmap`] and to `init_deferred_page`.
///   Holes are initialised in full, as Linux does. The deferred pages are
///   counted in [`MemmapInitStats::deferred`].
/// - [`MemmapMode::Lazy`] (ours): the pages of `RSRV_NOINIT` reservations
///   and of `skip` (sorted, disjoint) are left untouched (counted in
///   [`MemmapInitStats::noinit`]): the preserved folios' struct pages are
///   initialised when they are restored. Needs `kho_memory_init` to have
///   run before.
pub(crate) fn memmap_init(
    memblock: &Memblock,
    memmap: &MemMap<'_>,
    skip: &[PhysRange],
) -> Result<MemmapInitStats, MemmapError> {
    let mut st = MemmapInitStats::default();
    let lazy_skip = match memmap.mode {
        MemmapMode::Lazy => lazy_exclusions(memblock, skip),
        _ => Vec::new(),
    };
    // The plan: (start, end, hole) page ranges to initialise, in order.
    let mut plan: Vec<(u64, u64, bool)> = Vec::new();
    let mut si = 0usize;
    let mut defer = DeferInit::default();
    let mut hole_pfn = 0u64;
    for m in memblock.for_each_mem_region() {
        let (start, end) = (pfn_up(m.base.as_u64()), pfn_down(m.range().end().as_u64()));
        if start >= end {
            continue;
        }
        match memmap.mode {
            MemmapMode::Eager => plan.push((start, end, false)),
            MemmapMode::Deferred => {
                let stop = defer.stop(start, end);
                plan.push((start, stop, false));
                st.deferred += end - stop;
            }
            MemmapMode::Lazy => {
                st.noinit += for_each_piece_outside(start, end, &lazy_skip, &mut si, |s, e| {
                    plan.push((s, e, false));
                    Ok::<(), core::convert::Infallible>(())
                })
                .unwrap_or_else(|never| match never {});
            }
        }
        if hole_pfn < start {
            plan.push((hole_pfn, start, true));
        }
        hole_pfn = hole_pfn.max(end);
    }
    if let Some(f) = defer.first_deferred_pfn {
        memmap.first_deferred_pfn.store(f, Ordering::Relaxed);
    }
    // The tail of the last present section.
    let tail = hole_pfn.div_ceil(PAGES_PER_SECTION) * PAGES_PER_SECTION;
    if hole_pfn < tail {
        plan.push((hole_pfn, tail, true));
    }
    plan.retain(|(s, e, _)| s < e);
    let counts = if memmap.parallel_init && memmap.threads() > 1 {
        // Ours: one job per section of each piece, over the node's threads.
        let jobs: Vec<(u64, u64, bool)> = plan
            .iter()
            .flat_map(|&(s, e, hole)| {
                let mut v = Vec::new();
                let mut p = s;
                while p < e {
                    let q = ((p / PAGES_PER_SECTION + 1) * PAGES_PER_SECTION).min(e);
                    v.push((p, q, hole));
                    p = q;
                }
                v
            })
            .collect();
        let free = AtomicU64::new(0);
        let holes = AtomicU64::new(0);
        memmap.run_jobs(&jobs, |&(s, e, hole)| {
            let n = memmap.init_range(pfn(s), pfn(e), hole, hole)?;
            if hole { &holes } else { &free }.fetch_add(n, Ordering::Relaxed);
            Ok::<(), MemmapError>(())
        })?;
        (free.into_inner(), holes.into_inner())
    } else {
        let (mut free, mut holes) = (0, 0);
        for &(s, e, hole) in &plan {
            let n = memmap.init_range(pfn(s), pfn(e), hole, hole)?;
            if hole {
                holes += n;
            } else {
                free += n;
            }
        }
        (free, holes)
    };
    st.free += counts.0;
    st.unavailable += counts.1;
    Ok(st)
}

/// `defer_init` (linux-mm@65660710 `mm/mm_init.c`) for the machine's one
/// zone (`ZONE_NORMAL`, the node's highest: its end is the node's end, so
/// deferral applies): a static count of the pages `memmap_init_range` has
/// considered; once it exceeds `PAGES_PER_SECTION`, the first
/// section-aligned frame becomes `first_deferred_pfn` and every later frame
/// is deferred.
#[derive(Debug, Default)]
struct DeferInit {
    nr_initialised: u64,
    first_deferred_pfn: Option<u64>,
}

impl DeferInit {
    /// The frame of `[start, end)` at which `memmap_init_range` stops.
    fn stop(&mut self, start: u64, end: u64) -> u64 {
        if self.first_deferred_pfn.is_some() {
            return start;
        }
        // The first frame p >= start with nr_initialised + (p - start) + 1 >
        // PAGES_PER_SECTION and p section-aligned.
        let need = PAGES_PER_SECTION.saturating_sub(self.nr_initialised);
        let earliest = start + need;
        let p = earliest.div_ceil(PAGES_PER_SECTION) * PAGES_PER_SECTION;
        if p < end {
            self.nr_initialised += p - start + 1;
            self.first_deferred_pfn = Some(p);
            p
        } else {
            self.nr_initialised += end - start;
            end
        }
    }
}

/// What [`MemmapMode::Lazy`] leaves uninitialised: the `RSRV_NOINIT`
/// reservations and `skip`, as sorted, merged page ranges.
fn lazy_exclusions(memblock: &Memblock, skip: &[PhysRange]) -> Vec<(u64, u64)> {
    let noinit = memblock
        .reserved
        .regions()
        .iter()
        .filter(|r| r.flags.contains(MemblockFlags::RSRV_NOINIT))
        .map(|r| r.range());
    page_ranges(&kho::merge_ranges(
        noinit.chain(skip.iter().copied()).collect(),
    ))
}

/// The page frames `ranges` touch, as `(first, end)` pfn pairs (start
/// rounded down, end up), in order.
pub(crate) fn page_ranges(ranges: &[PhysRange]) -> Vec<(u64, u64)> {
    ranges
        .iter()
        .map(|r| (pfn_down(r.start().as_u64()), pfn_up(r.end().as_u64())))
        .filter(|(s, e)| s < e)
        .collect()
}

/// Calls `f` on each piece of the pfn range `[start, end)` outside `excl`
/// (pfn ranges sorted by start); `cursor` is the place in `excl`, carried
/// across calls with ascending ranges so that a whole pass is one walk of
/// `excl`. Returns the pages left out.
pub(crate) fn for_each_piece_outside<E>(
    start: u64,
    end: u64,
    excl: &[(u64, u64)],
    cursor: &mut usize,
    mut f: impl FnMut(u64, u64) -> Result<(), E>,
) -> Result<u64, E> {
    let mut left_out = 0;
    let mut pos = start;
    while let Some(&(xs, xe)) = excl.get(*cursor) {
        if xe <= pos {
            *cursor += 1;
            continue;
        }
        if xs >= end {
            break;
        }
        if xs > pos {
            f(pos, xs)?;
        }
        let stop = xe.min(end);
        left_out += stop - xs.max(pos);
        pos = stop;
        if xe > end {
            break;
        }
        *cursor += 1;
    }
    if pos < end {
        f(pos, end)?;
    }
    Ok(left_out)
}

/// The struct-page half of `memmap_init_reserved_pages`
/// (torvalds/linux@40735a68 `mm/memblock.c`), run by `memblock_free_all`:
/// `PG_reserved` on the pages of every NOMAP memory region and of every
/// reserved region not flagged [`MemblockFlags::RSRV_NOINIT`]
/// (`memmap_init_reserved_range`: `init_deferred_page`, a no-op without
/// deferred init or below `first_deferred_pfn`, then `PG_reserved`). Pages
/// of `RSRV_NOINIT` regions are left as `memmap_init` (or, deferred,
/// `kho_get_preserved_page`) made them (counted in
/// [`MemmapInitStats::noinit`]).
/// Returns the counts of this pass: `reserved` and `noinit`.
pub(crate) fn memmap_init_reserved_pages(
    memblock: &Memblock,
    memmap: &MemMap<'_>,
) -> Result<MemmapInitStats, MemmapError> {
    let mut st = MemmapInitStats::default();
    let mark = |start: u64, end: u64, st: &mut MemmapInitStats| -> Result<(), MemmapError> {
        for p in start..end {
            if !memmap.pfn_valid(pfn(p)) {
                continue;
            }
            memmap.init_deferred_page(pfn(p))?;
            let page = memmap.pfn_to_page(pfn(p))?;
            page.set_flag(pg::RESERVED);
            st.reserved += 1;
        }
        Ok(())
    };
    for r in memblock.reserved.regions() {
        let (start, end) = (pfn_down(r.base.as_u64()), pfn_up(r.range().end().as_u64()));
        if r.flags.contains(MemblockFlags::RSRV_NOINIT) {
            st.noinit += end.saturating_sub(start);
            continue;
        }
        mark(start, end, &mut st)?;
    }
    for m in memblock.for_each_mem_region() {
        if m.flags.contains(MemblockFlags::NOMAP) {
            let (start, end) = (pfn_up(m.base.as_u64()), pfn_down(m.range().end().as_u64()));
            mark(start, end, &mut st)?;
        }
    }
    Ok(st)
}

#[cfg(test)]
mod tests;
