//! memblock: the boot-time memory manager, as Linux's `mm/memblock.c` has it.
//!
//! # DOC: memblock overview
//!
//! Memblock is a method of managing memory regions during the early boot
//! period when the usual kernel memory allocators are not up and running.
//!
//! Memblock views the system memory as collections of contiguous regions.
//! There are two types of these collections:
//!
//! * `memory` — describes the physical memory available to the kernel; this
//!   may differ from the actual physical memory installed in the system, for
//!   instance when the memory is restricted with `mem=`;
//! * `reserved` — describes the regions that were allocated.
//!
//! Each region is a [`MemblockRegion`] that holds its base address, size,
//! NUMA node and [`MemblockFlags`]. Each collection is a [`MemblockType`]:
//! a *sorted* array of regions (`regions`, of which `cnt` are used out of
//! `max` slots), the total size and the name. The whole state lives in one
//! [`Memblock`], together with the allocation direction (`bottom_up`, false:
//! allocations are placed top-down) and the allocation limit
//! (`current_limit`).
//!
//! The early architecture setup registers memory with [`Memblock::memblock_add`]
//! and marks what must be kept with [`Memblock::memblock_reserve`]. Memory is
//! then allocated with [`Memblock::memblock_phys_alloc`] and friends, which
//! search `memory` minus `reserved` top-down
//! (`__memblock_find_range_top_down` over `for_each_free_mem_range_reverse`)
//! and reserve what they find. At the end of early boot,
//! [`crate::buddy::memblock_free_all`] hands every free range to the buddy
//! allocator.
//!
//! # Cost model (the reason this module exists)
//!
//! The algorithms are Linux's, not better ones, because their cost is what the
//! project measures:
//!
//! * `memblock_add_range` scans the array linearly from its first region,
//!   counts the new regions it needs (first pass), doubles the array if they
//!   do not fit, then scans again and inserts each new region by `memmove`
//!   (second pass), and finally merges neighbours with equal flags and node,
//!   each merge being another `memmove`.
//! * `memblock_isolate_range` (behind every flag change and every removal)
//!   scans linearly and splits by `memmove`.
//! * `memblock_double_array` finds room for twice the slots with
//!   `memblock_find_in_range`, copies the array there, frees the old one (if
//!   it was not the static initial array) and reserves the new one.
//!
//! So N scattered `memblock_reserve` calls cost O(N^2) region visits: this is
//! the mainline KHO restore path, one `memblock_reserve` plus one
//! `memblock_reserved_mark_noinit` per preserved block. Every region a scan
//! looks at, every element a `memmove` shifts and every element a doubling
//! copies is counted in [`Memblock::stats`], so tests can show the quadratic
//! growth without timing anything.
//!
//! # Differences from Linux
//!
//! * An empty [`MemblockType`] has `cnt == 0`. Linux keeps one dummy region
//!   of size 0 (`cnt == 1`); every algorithm below treats that dummy exactly
//!   as an absent region, so the observable arrays are the same.
//! * The region arrays live on the host (a `Vec` whose capacity is held at
//!   `max`); their *physical* footprint is real: a doubled array's space is
//!   found with `memblock_find_in_range` and reserved, and the old one
//!   freed, exactly as Linux does, and both are reported by
//!   [`MemblockType::array_phys`].
//! * [`Memblock::memblock_reserve_sorted`] is *ours*, not Linux's: the `bulk`
//!   restore strategy of DESIGN.md section 4.
//!
//! Addresses are [`PhysAddr`] at the API; sizes are byte counts (`u64`), as
//! `phys_addr_t size` is in Linux. Inside, the algorithms compute on raw
//! `u64` values, as the C code does, capped so that `base + size` never
//! overflows (`memblock_cap_size`).

use core::cell::Cell;
use core::fmt;

use kho::{PAGE_SIZE, PhysAddr, PhysRange};

/// Number of slots of the static initial arrays (`INIT_MEMBLOCK_REGIONS`).
pub(crate) const INIT_MEMBLOCK_REGIONS: usize = 128;
/// Size of `struct memblock_region` on x86-64 with NUMA: base (8), size (8),
/// flags (4), nid (4).
pub(crate) const MEMBLOCK_REGION_SIZE: u64 = 24;
/// The largest physical address (`PHYS_ADDR_MAX`).
pub(crate) const PHYS_ADDR_MAX: u64 = u64::MAX;
/// `MEMBLOCK_ALLOC_ANYWHERE`: no allocation limit.
pub(crate) const MEMBLOCK_ALLOC_ANYWHERE: PhysAddr = PhysAddr::new(PHYS_ADDR_MAX);
/// `MEMBLOCK_ALLOC_ACCESSIBLE`: up to `current_limit`.
pub(crate) const MEMBLOCK_ALLOC_ACCESSIBLE: PhysAddr = PhysAddr::new(0);
/// No NUMA node (`NUMA_NO_NODE`).
pub(crate) const NUMA_NO_NODE: i32 = -1;
/// `MAX_NUMNODES` on x86-64 (`CONFIG_NODES_SHIFT=6`): the node of regions
/// added or reserved before NUMA init.
pub(crate) const MAX_NUMNODES: i32 = 64;
/// `SMP_CACHE_BYTES`: the alignment used when a caller passes 0.
pub(crate) const SMP_CACHE_BYTES: u64 = 64;

/// Flags of a memblock region (`enum memblock_flags`), a small bit set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MemblockFlags(u32);

impl MemblockFlags {
    /// No special request.
    pub const NONE: Self = Self(0);
    /// Hotpluggable region.
    pub const HOTPLUG: Self = Self(0x1);
    /// Mirrored region.
    pub const MIRROR: Self = Self(0x2);
    /// Don't add to the kernel direct mapping.
    pub const NOMAP: Self = Self(0x4);
    /// Always detected via a driver.
    pub const DRIVER_MANAGED: Self = Self(0x8);
    /// Don't initialise struct pages (reserved regions only).
    pub const RSRV_NOINIT: Self = Self(0x10);
    /// Memory reserved for the kernel (memblock allocations).
    pub const RSRV_KERN: Self = Self(0x20);
    /// Scratch memory for kexec handover.
    pub const KHO_SCRATCH: Self = Self(0x40);

    const NAMES: [(Self, &'static str); 7] = [
        (Self::HOTPLUG, "HOTPLUG"),
        (Self::MIRROR, "MIRROR"),
        (Self::NOMAP, "NOMAP"),
        (Self::DRIVER_MANAGED, "DRIVER_MANAGED"),
        (Self::RSRV_NOINIT, "RSRV_NOINIT"),
        (Self::RSRV_KERN, "RSRV_KERN"),
        (Self::KHO_SCRATCH, "KHO_SCRATCH"),
    ];

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// `self | other`.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// `self & !other`.
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl core::ops::BitOr for MemblockFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl fmt::Debug for MemblockFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("NONE");
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let unknown = self.0 & !0x7f;
        if unknown != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{unknown:#x}")?;
        }
        Ok(())
    }
}

/// One region (`struct memblock_region`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemblockRegion {
    /// Base address.
    pub base: PhysAddr,
    /// Size in bytes.
    pub size: u64,
    /// Flags.
    pub flags: MemblockFlags,
    /// NUMA node.
    pub nid: i32,
}

impl MemblockRegion {
    fn start(&self) -> u64 {
        self.base.as_u64()
    }

    /// `base + size` (never overflows: sizes are capped on insertion).
    fn end(&self) -> u64 {
        self.base.as_u64().saturating_add(self.size)
    }

    /// The byte range the region covers.
    pub fn range(&self) -> PhysRange {
        PhysRange::new(self.base, PhysAddr::new(self.end())).unwrap_or_default()
    }
}

impl fmt::Debug for MemblockRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:#x}-{:#x}] {:?} nid {}",
            self.start(),
            self.end().wrapping_sub(1),
            self.flags,
            self.nid
        )
    }
}

/// One collection of regions (`struct memblock_type`).
///
/// `regions` is sorted by base, its regions never overlap, and `cnt() <=
/// max()`: the array has `max` slots, of which `cnt` are in use.
#[derive(Clone, PartialEq, Eq)]
pub struct MemblockType {
    regions: Vec<MemblockRegion>,
    max: usize,
    total_size: u64,
    name: &'static str,
    /// Where the array's slots live in physical memory; `None` while it is
    /// the static initial array (in the kernel image).
    array_phys: Option<PhysRange>,
}

impl MemblockType {
    fn new(name: &'static str) -> Self {
        Self {
            regions: Vec::with_capacity(INIT_MEMBLOCK_REGIONS),
            max: INIT_MEMBLOCK_REGIONS,
            total_size: 0,
            name,
            array_phys: None,
        }
    }

    /// The regions in use, sorted.
    pub fn regions(&self) -> &[MemblockRegion] {
        &self.regions
    }

    /// Number of regions in use.
    pub fn cnt(&self) -> usize {
        self.regions.len()
    }

    /// Number of slots.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Sum of the regions' sizes.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// The array's name ("memory" or "reserved").
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The physical space of the array's slots once it has been doubled
    /// (page aligned, reserved in `memblock.reserved`); `None` for the
    /// static initial array.
    pub fn array_phys(&self) -> Option<PhysRange> {
        self.array_phys
    }
}

impl fmt::Debug for MemblockType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemblockType")
            .field("name", &self.name)
            .field("cnt", &self.cnt())
            .field("max", &self.max)
            .field("total_size", &format_args!("{:#x}", self.total_size))
            .finish()
    }
}

/// Which collection an internal algorithm works on (Linux passes a
/// `struct memblock_type *`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Which {
    Memory,
    Reserved,
}

/// Errors of memblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemblockError {
    /// An array is full and resizing is not allowed yet (Linux panics).
    #[error("cannot resize the {name} array: memblock_allow_resize() was not called")]
    CannotResize {
        /// The array's name.
        name: &'static str,
    },
    /// No room was found for a doubled array.
    #[error("failed to double the {name} array from {max} to {} entries", max * 2)]
    DoubleFailed {
        /// The array's name.
        name: &'static str,
        /// Its number of slots.
        max: usize,
    },
    /// No free range fits an allocation.
    #[error("no free range of {size:#x} bytes aligned to {align:#x} within [{start}, {end})")]
    NoSpace {
        /// The size asked for.
        size: u64,
        /// The alignment asked for.
        align: u64,
        /// Lowest acceptable address.
        start: PhysAddr,
        /// Highest acceptable end.
        end: PhysAddr,
    },
    /// An alignment that is not a power of two.
    #[error("alignment {align:#x} is not a power of two")]
    BadAlign {
        /// The alignment asked for.
        align: u64,
    },
    /// Input of [`Memblock::memblock_reserve_sorted`] out of order.
    #[error("range {range} starts before the previous range {previous}")]
    Unsorted {
        /// The previous range.
        previous: PhysRange,
        /// The range that starts before it.
        range: PhysRange,
    },
}

/// Region visits of the algorithms: the cost model of memblock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemblockStats {
    /// Every region looked at plus every element moved or copied:
    /// `scanned + moved + copied`.
    pub visits: u64,
    /// Regions looked at by scans (add, isolate, merge, free-range
    /// iteration).
    pub scanned: u64,
    /// Elements shifted by `memmove` (insertion, merge, removal).
    pub moved: u64,
    /// Elements copied by `memblock_double_array`.
    pub copied: u64,
    /// Number of array doublings.
    pub doublings: u64,
}

#[derive(Default)]
struct Counters {
    scanned: Cell<u64>,
    moved: Cell<u64>,
    copied: Cell<u64>,
    doublings: Cell<u64>,
}

impl Counters {
    fn add(cell: &Cell<u64>, n: usize) {
        cell.set(cell.get().wrapping_add(n as u64));
    }
}

/// The memblock allocator state (`struct memblock`).
pub struct Memblock {
    /// Allocation direction: false = top-down (the default).
    pub bottom_up: bool,
    /// Allocations end below this address (`MEMBLOCK_ALLOC_ANYWHERE` by
    /// default).
    pub current_limit: PhysAddr,
    /// Usable memory.
    pub memory: MemblockType,
    /// Allocated or reserved memory.
    pub reserved: MemblockType,
    can_resize: bool,
    kho_scratch_only: bool,
    /// **Ours, off by default** (the `mainline-fix` strategy's step (c), and
    /// the array bookkeeping of [`Memblock::memblock_reserve_sorted`]):
    /// `memblock_add_range` and `memblock_isolate_range` find their first
    /// candidate region by binary search instead of scanning from index 0.
    add_range_bsearch: bool,
    stats: Counters,
}

impl fmt::Debug for Memblock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memblock")
            .field("bottom_up", &self.bottom_up)
            .field("current_limit", &self.current_limit)
            .field("memory", &self.memory)
            .field("reserved", &self.reserved)
            .field("kho_scratch_only", &self.kho_scratch_only)
            .finish()
    }
}

impl Default for Memblock {
    fn default() -> Self {
        Self::new()
    }
}

/// `memblock_cap_size`: clamps `size` so that `base + size` does not overflow.
fn memblock_cap_size(base: u64, size: u64) -> u64 {
    size.min(PHYS_ADDR_MAX - base)
}

fn page_align(size: u64) -> u64 {
    size.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

fn range(start: u64, end: u64) -> PhysRange {
    PhysRange::new(PhysAddr::new(start), PhysAddr::new(end)).unwrap_or_default()
}

impl Memblock {
    /// The static initial state: empty arrays of
    /// `INIT_MEMBLOCK_REGIONS` slots, top-down, no limit, resizing not yet
    /// allowed.
    pub fn new() -> Self {
        Self {
            bottom_up: false,
            current_limit: MEMBLOCK_ALLOC_ANYWHERE,
            memory: MemblockType::new("memory"),
            reserved: MemblockType::new("reserved"),
            can_resize: false,
            kho_scratch_only: false,
            add_range_bsearch: false,
            stats: Counters::default(),
        }
    }

    /// The visit counters.
    pub fn stats(&self) -> MemblockStats {
        let s = &self.stats;
        MemblockStats {
            visits: s
                .scanned
                .get()
                .wrapping_add(s.moved.get())
                .wrapping_add(s.copied.get()),
            scanned: s.scanned.get(),
            moved: s.moved.get(),
            copied: s.copied.get(),
            doublings: s.doublings.get(),
        }
    }

    /// Sets the visit counters back to zero.
    pub fn reset_stats(&self) {
        self.stats.scanned.set(0);
        self.stats.moved.set(0);
        self.stats.copied.set(0);
        self.stats.doublings.set(0);
    }

    /// `memblock_allow_resize`: from now on full arrays are doubled (before,
    /// the reserved regions that must not be overwritten are not known).
    pub fn memblock_allow_resize(&mut self) {
        self.can_resize = true;
    }

    /// `memblock_set_current_limit`.
    pub fn memblock_set_current_limit(&mut self, limit: PhysAddr) {
        self.current_limit = limit;
    }

    /// `memblock_set_bottom_up`.
    pub fn memblock_set_bottom_up(&mut self, enable: bool) {
        self.bottom_up = enable;
    }

    /// `memblock_set_kho_scratch_only`: allocations only from memory
    /// flagged [`MemblockFlags::KHO_SCRATCH`] until cleared.
    pub fn memblock_set_kho_scratch_only(&mut self) {
        self.kho_scratch_only = true;
    }

    /// `memblock_clear_kho_scratch_only`.
    pub fn memblock_clear_kho_scratch_only(&mut self) {
        self.kho_scratch_only = false;
    }

    /// Whether allocations are restricted to scratch memory.
    pub fn kho_scratch_only(&self) -> bool {
        self.kho_scratch_only
    }

    fn ty(&self, which: Which) -> &MemblockType {
        match which {
            Which::Memory => &self.memory,
            Which::Reserved => &self.reserved,
        }
    }

    fn ty_mut(&mut self, which: Which) -> &mut MemblockType {
        match which {
            Which::Memory => &mut self.memory,
            Which::Reserved => &mut self.reserved,
        }
    }

    // ---- low-level array operations -------------------------------------

    /// `memblock_insert_region`: `memmove` the tail up one slot and write the
    /// new region at `idx`.
    fn memblock_insert_region(
        &mut self,
        which: Which,
        idx: usize,
        base: u64,
        size: u64,
        nid: i32,
        flags: MemblockFlags,
    ) {
        let ty = self.ty_mut(which);
        // BUG_ON(type->cnt >= type->max): callers made room.
        assert!(ty.regions.len() < ty.max, "memblock {} overflow", ty.name);
        let moved = ty.regions.len().saturating_sub(idx);
        ty.regions.insert(
            idx,
            MemblockRegion {
                base: PhysAddr::new(base),
                size,
                flags,
                nid,
            },
        );
        ty.total_size = ty.total_size.wrapping_add(size);
        Counters::add(&self.stats.moved, moved);
    }

    /// `memblock_remove_region`: `memmove` the tail down over slot `r`.
    fn memblock_remove_region(&mut self, which: Which, r: usize) {
        let ty = self.ty_mut(which);
        if r >= ty.regions.len() {
            return;
        }
        let moved = ty.regions.len() - r - 1;
        let gone = ty.regions.remove(r);
        ty.total_size = ty.total_size.wrapping_sub(gone.size);
        Counters::add(&self.stats.moved, moved);
    }

    /// `memblock_merge_regions`: merges neighbours in
    /// `[start_rgn - 1, end_rgn]` that touch and have equal flags and node.
    fn memblock_merge_regions(&mut self, which: Which, start_rgn: usize, end_rgn: usize) {
        let ty = match which {
            Which::Memory => &mut self.memory,
            Which::Reserved => &mut self.reserved,
        };
        let mut i = start_rgn.saturating_sub(1);
        let mut end_rgn = end_rgn.min(ty.regions.len().saturating_sub(1));
        let mut scanned = 0usize;
        let mut moved = 0usize;
        while i < end_rgn {
            scanned += 1;
            let (this, next) = (ty.regions[i], ty.regions[i + 1]);
            if this.end() != next.start() || this.nid != next.nid || this.flags != next.flags {
                // BUG_ON(this->base + this->size > next->base)
                assert!(this.end() <= next.start(), "memblock {} overlap", ty.name);
                i += 1;
                continue;
            }
            ty.regions[i].size += next.size;
            moved += ty.regions.len() - (i + 2);
            ty.regions.remove(i + 1);
            end_rgn -= 1;
        }
        Counters::add(&self.stats.scanned, scanned);
        Counters::add(&self.stats.moved, moved);
    }

    /// `memblock_double_array`: finds room for twice the slots, copies the
    /// array there, frees the old space (unless static) and reserves the new
    /// one `RSRV_KERN`.
    /// For `reserved`, `[new_area_start, new_area_start + new_area_size)` is
    /// the range being added and is avoided.
    fn memblock_double_array(
        &mut self,
        which: Which,
        new_area_start: u64,
        new_area_size: u64,
    ) -> Result<(), MemblockError> {
        let (name, max) = (self.ty(which).name, self.ty(which).max);
        if !self.can_resize {
            return Err(MemblockError::CannotResize { name });
        }
        let old_size = (max as u64) * MEMBLOCK_REGION_SIZE;
        let new_size = old_size * 2;
        let old_alloc_size = page_align(old_size);
        let new_alloc_size = page_align(new_size);

        // Only exclude the range when doubling reserved.regions.
        let (area_start, area_size) = if which == Which::Reserved {
            (new_area_start, new_area_size)
        } else {
            (0, 0)
        };
        let limit = self.current_limit.as_u64();
        let mut addr = self.memblock_find_in_range(
            area_start.saturating_add(area_size),
            limit,
            new_alloc_size,
            PAGE_SIZE,
        );
        if addr.is_none() && area_size != 0 {
            addr = self.memblock_find_in_range(0, area_start.min(limit), new_alloc_size, PAGE_SIZE);
        }
        let addr = addr.ok_or(MemblockError::DoubleFailed { name, max })?;

        // Move the array over before reserving: it may be the reserved array
        // itself that is full. memcpy + memset of the new half.
        let ty = self.ty_mut(which);
        let mut new_array = Vec::with_capacity(max * 2);
        new_array.extend_from_slice(&ty.regions);
        let copied = ty.regions.len();
        ty.regions = new_array;
        ty.max = max * 2;
        let old_array = ty.array_phys.replace(range(addr, addr + new_alloc_size));
        Counters::add(&self.stats.copied, copied);
        Counters::add(&self.stats.doublings, 1);

        self.move_array_reservation(old_array, old_alloc_size, addr, new_alloc_size)
    }

    /// The end of `memblock_double_array`: frees the old array's space
    /// (`old`, unless the array was the static one) and reserves the new
    /// one's as `memblock_reserve_kern` does (BUG_ON on failure in Linux):
    /// `RSRV_KERN` and `NUMA_NO_NODE`, since "memblock: add
    /// MEMBLOCK_RSRV_KERN flag" (KHO series, v6.16; read at
    /// torvalds/linux@40735a683bf8, mm/memblock.c). It counts in
    /// `memblock_reserved_kern_size` and does not merge with plain
    /// reservations.
    fn move_array_reservation(
        &mut self,
        old: Option<PhysRange>,
        old_alloc_size: u64,
        addr: u64,
        new_alloc_size: u64,
    ) -> Result<(), MemblockError> {
        if let Some(old) = old {
            self.memblock_remove_range(Which::Reserved, old.start().as_u64(), old_alloc_size)?;
        }
        self.memblock_add_range(
            Which::Reserved,
            addr,
            new_alloc_size,
            NUMA_NO_NODE,
            MemblockFlags::RSRV_KERN,
        )
    }

    /// `memblock_add_range`: adds `[base, base + size)` to a collection. The
    /// parts that overlap existing regions are left alone; the new parts are
    /// inserted with `nid` and `flags`, and neighbours merged.
    fn memblock_add_range(
        &mut self,
        which: Which,
        base: u64,
        size: u64,
        nid: i32,
        flags: MemblockFlags,
    ) -> Result<(), MemblockError> {
        let size = memblock_cap_size(base, size);
        if size == 0 {
            return Ok(());
        }
        let obase = base;
        let end = base + size;

        // Special case for an empty array.
        if self.ty(which).regions.is_empty() {
            self.memblock_insert_region(which, 0, base, size, nid, flags);
            return Ok(());
        }

        // The worst case is when the new range overlaps all existing
        // regions: cnt + 1 new ones. If 2 * cnt + 1 slots fit, insert
        // directly; otherwise count first.
        let mut insert = {
            let ty = self.ty(which);
            // Linux: `type->cnt * 2 + 1 <= type->max`.
            ty.regions.len() * 2 < ty.max
        };
        loop {
            // The loop body runs at most twice: once with `insert` false to
            // count the regions needed, then with `insert` true.
            let mut base = obase;
            let mut nr_new = 0usize;
            let mut start_rgn: Option<usize> = None;
            let mut end_rgn = 0usize;
            // Linux scans from index 0. The `mainline-fix` option starts at
            // the first region that ends above `base` (the regions are
            // sorted and disjoint, so every region it skips is one Linux's
            // loop would pass over with `rend <= base`).
            let mut idx = if self.add_range_bsearch {
                self.ty(which).regions.partition_point(|r| r.end() <= base)
            } else {
                0
            };
            let mut scanned = 0usize;
            while idx < self.ty(which).regions.len() {
                scanned += 1;
                let rgn = self.ty(which).regions[idx];
                let (rbase, rend) = (rgn.start(), rgn.end());
                if rbase >= end {
                    break;
                }
                if rend <= base {
                    idx += 1;
                    continue;
                }
                // @rgn overlaps. If it separates the lower part of the new
                // area, insert that portion.
                if rbase > base {
                    nr_new += 1;
                    if insert {
                        start_rgn.get_or_insert(idx);
                        end_rgn = idx + 1;
                        self.memblock_insert_region(which, idx, base, rbase - base, nid, flags);
                        idx += 1;
                    }
                }
                // The area below @rend is dealt with, forget about it.
                base = rend.min(end);
                idx += 1;
            }
            Counters::add(&self.stats.scanned, scanned);

            // Insert the remaining portion.
            if base < end {
                nr_new += 1;
                if insert {
                    start_rgn.get_or_insert(idx);
                    end_rgn = idx + 1;
                    self.memblock_insert_region(which, idx, base, end - base, nid, flags);
                }
            }
            if nr_new == 0 {
                return Ok(());
            }
            if insert {
                self.memblock_merge_regions(which, start_rgn.unwrap_or(0), end_rgn);
                return Ok(());
            }
            while self.ty(which).regions.len() + nr_new > self.ty(which).max {
                self.memblock_double_array(which, obase, size)?;
            }
            insert = true;
        }
    }

    /// `memblock_isolate_range`: splits regions so that `[base, base + size)`
    /// is covered by whole regions; returns their index range
    /// `start_rgn..end_rgn` (empty if none).
    fn memblock_isolate_range(
        &mut self,
        which: Which,
        base: u64,
        size: u64,
    ) -> Result<(usize, usize), MemblockError> {
        let size = memblock_cap_size(base, size);
        let end = base + size;
        if size == 0 {
            return Ok((0, 0));
        }
        // We'll create at most two more regions.
        while self.ty(which).regions.len() + 2 > self.ty(which).max {
            self.memblock_double_array(which, base, size)?;
        }
        let (mut start_rgn, mut end_rgn) = (0usize, 0usize);
        // Linux scans from index 0; with the binary-search option (ours)
        // from the first region that ends above `base`, which is where the
        // scan's first split or record happens.
        let mut idx = if self.add_range_bsearch {
            self.ty(which).regions.partition_point(|r| r.end() <= base)
        } else {
            0
        };
        let mut scanned = 0usize;
        while idx < self.ty(which).regions.len() {
            scanned += 1;
            let rgn = self.ty(which).regions[idx];
            let (rbase, rend) = (rgn.start(), rgn.end());
            if rbase >= end {
                break;
            }
            if rend <= base {
                idx += 1;
                continue;
            }
            if rbase < base {
                // @rgn intersects from below. Split and continue to process
                // the next region - the new top half.
                let ty = self.ty_mut(which);
                ty.regions[idx].base = PhysAddr::new(base);
                ty.regions[idx].size -= base - rbase;
                ty.total_size -= base - rbase;
                self.memblock_insert_region(which, idx, rbase, base - rbase, rgn.nid, rgn.flags);
                idx += 1;
            } else if rend > end {
                // @rgn intersects from above. Split and redo the current
                // region - the new bottom half.
                let ty = self.ty_mut(which);
                ty.regions[idx].base = PhysAddr::new(end);
                ty.regions[idx].size -= end - rbase;
                ty.total_size -= end - rbase;
                self.memblock_insert_region(which, idx, rbase, end - rbase, rgn.nid, rgn.flags);
                // `idx--` then the loop's `idx++`: redo idx.
            } else {
                // @rgn is fully contained, record it.
                if end_rgn == 0 {
                    start_rgn = idx;
                }
                end_rgn = idx + 1;
                idx += 1;
            }
        }
        Counters::add(&self.stats.scanned, scanned);
        Ok((start_rgn, end_rgn))
    }

    /// `memblock_remove_range`.
    fn memblock_remove_range(
        &mut self,
        which: Which,
        base: u64,
        size: u64,
    ) -> Result<(), MemblockError> {
        let (start_rgn, end_rgn) = self.memblock_isolate_range(which, base, size)?;
        for i in (start_rgn..end_rgn).rev() {
            self.memblock_remove_region(which, i);
        }
        Ok(())
    }

    /// `memblock_setclr_flag`: sets or clears `flag` on the regions covering
    /// `[base, base + size)`, splitting at the bounds, then merges.
    fn memblock_setclr_flag(
        &mut self,
        which: Which,
        base: u64,
        size: u64,
        set: bool,
        flag: MemblockFlags,
    ) -> Result<(), MemblockError> {
        let (start_rgn, end_rgn) = self.memblock_isolate_range(which, base, size)?;
        let ty = self.ty_mut(which);
        for r in &mut ty.regions[start_rgn..end_rgn] {
            r.flags = if set {
                r.flags.union(flag)
            } else {
                r.flags.difference(flag)
            };
        }
        self.memblock_merge_regions(which, start_rgn, end_rgn);
        Ok(())
    }

    // ---- public API ---------------------------------------------------------

    /// `memblock_add`: registers `[base, base + size)` as memory.
    pub fn memblock_add(&mut self, base: PhysAddr, size: u64) -> Result<(), MemblockError> {
        self.memblock_add_range(
            Which::Memory,
            base.as_u64(),
            size,
            MAX_NUMNODES,
            MemblockFlags::NONE,
        )
    }

    /// `memblock_add_node`: registers memory of node `nid` with `flags`.
    pub fn memblock_add_node(
        &mut self,
        base: PhysAddr,
        size: u64,
        nid: i32,
        flags: MemblockFlags,
    ) -> Result<(), MemblockError> {
        self.memblock_add_range(Which::Memory, base.as_u64(), size, nid, flags)
    }

    /// `memblock_remove`: removes `[base, base + size)` from memory.
    pub fn memblock_remove(&mut self, base: PhysAddr, size: u64) -> Result<(), MemblockError> {
        self.memblock_remove_range(Which::Memory, base.as_u64(), size)
    }

    /// `memblock_reserve`: marks `[base, base + size)` reserved, node
    /// `NUMA_NO_NODE` (Linux's wrapper of `__memblock_reserve` since "memblock:
    /// add MEMBLOCK_RSRV_KERN flag"; MAX_NUMNODES before).
    pub fn memblock_reserve(&mut self, base: PhysAddr, size: u64) -> Result<(), MemblockError> {
        self.memblock_add_range(
            Which::Reserved,
            base.as_u64(),
            size,
            NUMA_NO_NODE,
            MemblockFlags::NONE,
        )
    }

    /// `__memblock_reserve(base, size, nid, flags)` (non-static in Linux,
    /// declared in `include/linux/memblock.h`): one reservation with its
    /// flags set at insertion, no isolate pass (`mainline-fix` step (b)
    /// calls it with [`MemblockFlags::RSRV_NOINIT`]).
    pub fn __memblock_reserve(
        &mut self,
        base: PhysAddr,
        size: u64,
        nid: i32,
        flags: MemblockFlags,
    ) -> Result<(), MemblockError> {
        self.memblock_add_range(Which::Reserved, base.as_u64(), size, nid, flags)
    }

    /// **Ours** (`mainline-fix` step (c), never Linux's default): turns the
    /// binary search for `memblock_add_range`'s first candidate region on
    /// or off. The result of every call is the same either way; only the
    /// scan is shorter.
    pub fn set_add_range_bsearch(&mut self, on: bool) {
        self.add_range_bsearch = on;
    }

    /// `memblock_reserve_kern`: a reservation flagged
    /// [`MemblockFlags::RSRV_KERN`] (the kernel image, memblock
    /// allocations).
    pub fn memblock_reserve_kern(
        &mut self,
        base: PhysAddr,
        size: u64,
    ) -> Result<(), MemblockError> {
        self.memblock_add_range(
            Which::Reserved,
            base.as_u64(),
            size,
            NUMA_NO_NODE,
            MemblockFlags::RSRV_KERN,
        )
    }

    /// `memblock_phys_free` (`memblock_free` on a physical address): drops
    /// the reservation of `[base, base + size)`.
    pub fn memblock_phys_free(&mut self, base: PhysAddr, size: u64) -> Result<(), MemblockError> {
        self.memblock_remove_range(Which::Reserved, base.as_u64(), size)
    }

    /// `memblock_reserved_mark_noinit`: struct pages of these reserved pages
    /// are not initialised at boot.
    pub fn memblock_reserved_mark_noinit(
        &mut self,
        base: PhysAddr,
        size: u64,
    ) -> Result<(), MemblockError> {
        self.memblock_setclr_flag(
            Which::Reserved,
            base.as_u64(),
            size,
            true,
            MemblockFlags::RSRV_NOINIT,
        )
    }

    /// `memblock_mark_kho_scratch`: flags memory as KHO scratch.
    pub fn memblock_mark_kho_scratch(
        &mut self,
        base: PhysAddr,
        size: u64,
    ) -> Result<(), MemblockError> {
        self.memblock_setclr_flag(
            Which::Memory,
            base.as_u64(),
            size,
            true,
            MemblockFlags::KHO_SCRATCH,
        )
    }

    /// `memblock_clear_kho_scratch`.
    pub fn memblock_clear_kho_scratch(
        &mut self,
        base: PhysAddr,
        size: u64,
    ) -> Result<(), MemblockError> {
        self.memblock_setclr_flag(
            Which::Memory,
            base.as_u64(),
            size,
            false,
            MemblockFlags::KHO_SCRATCH,
        )
    }

    /// `memblock_mark_nomap`: memory that is not mapped (and never given to
    /// the buddy allocator).
    pub fn memblock_mark_nomap(&mut self, base: PhysAddr, size: u64) -> Result<(), MemblockError> {
        self.memblock_setclr_flag(
            Which::Memory,
            base.as_u64(),
            size,
            true,
            MemblockFlags::NOMAP,
        )
    }

    /// `memblock_clear_nomap`.
    pub fn memblock_clear_nomap(&mut self, base: PhysAddr, size: u64) -> Result<(), MemblockError> {
        self.memblock_setclr_flag(
            Which::Memory,
            base.as_u64(),
            size,
            false,
            MemblockFlags::NOMAP,
        )
    }

    /// `memblock_set_node` on `memory`: assigns node `nid` to the memory
    /// covering `[base, base + size)`.
    pub fn memblock_set_node(
        &mut self,
        base: PhysAddr,
        size: u64,
        nid: i32,
    ) -> Result<(), MemblockError> {
        self.memblock_set_node_in(Which::Memory, base.as_u64(), size, nid)
    }

    /// `memblock_set_node` on `reserved` (as `memmap_init_reserved_pages`
    /// does to give reserved regions the node of their memory).
    pub fn memblock_set_reserved_node(
        &mut self,
        base: PhysAddr,
        size: u64,
        nid: i32,
    ) -> Result<(), MemblockError> {
        self.memblock_set_node_in(Which::Reserved, base.as_u64(), size, nid)
    }

    fn memblock_set_node_in(
        &mut self,
        which: Which,
        base: u64,
        size: u64,
        nid: i32,
    ) -> Result<(), MemblockError> {
        let (start_rgn, end_rgn) = self.memblock_isolate_range(which, base, size)?;
        for r in &mut self.ty_mut(which).regions[start_rgn..end_rgn] {
            r.nid = nid;
        }
        self.memblock_merge_regions(which, start_rgn, end_rgn);
        Ok(())
    }

    // ---- allocation -------------------------------------------------------

    /// `choose_memblock_flags`: scratch only during the KHO early boot.
    fn choose_memblock_flags(&self) -> MemblockFlags {
        if self.kho_scratch_only {
            MemblockFlags::KHO_SCRATCH
        } else {
            MemblockFlags::NONE
        }
    }

    /// `memblock_find_in_range`: a free, aligned range of `size` bytes within
    /// `[start, end)`, honouring the current flags; `None` if none.
    fn memblock_find_in_range(&self, start: u64, end: u64, size: u64, align: u64) -> Option<u64> {
        let flags = self.choose_memblock_flags();
        self.memblock_find_in_range_node(size, align, start, end, NUMA_NO_NODE, flags)
    }

    /// `memblock_find_in_range_node`.
    fn memblock_find_in_range_node(
        &self,
        size: u64,
        align: u64,
        start: u64,
        end: u64,
        nid: i32,
        flags: MemblockFlags,
    ) -> Option<u64> {
        // Pump up @end.
        let end = if end == MEMBLOCK_ALLOC_ACCESSIBLE.as_u64() {
            self.current_limit.as_u64()
        } else {
            end
        };
        // Avoid allocating the first page.
        let start = start.max(PAGE_SIZE);
        let end = end.max(start);
        if self.bottom_up {
            self.__memblock_find_range_bottom_up(start, end, size, align, nid, flags)
        } else {
            self.__memblock_find_range_top_down(start, end, size, align, nid, flags)
        }
    }

    /// `__memblock_find_range_top_down`: the highest fitting free range.
    #[allow(non_snake_case)]
    fn __memblock_find_range_top_down(
        &self,
        start: u64,
        end: u64,
        size: u64,
        align: u64,
        nid: i32,
        flags: MemblockFlags,
    ) -> Option<u64> {
        for r in self.for_each_free_mem_range_reverse_nid(nid, flags) {
            let this_start = r.start().as_u64().clamp(start, end);
            let this_end = r.end().as_u64().clamp(start, end);
            if this_end < size {
                continue;
            }
            let cand = (this_end - size) & !(align - 1);
            if cand >= this_start {
                return Some(cand);
            }
        }
        None
    }

    /// `__memblock_find_range_bottom_up`.
    #[allow(non_snake_case)]
    fn __memblock_find_range_bottom_up(
        &self,
        start: u64,
        end: u64,
        size: u64,
        align: u64,
        nid: i32,
        flags: MemblockFlags,
    ) -> Option<u64> {
        for r in self.for_each_free_mem_range_nid(nid, flags) {
            let this_start = r.start().as_u64().clamp(start, end);
            let this_end = r.end().as_u64().clamp(start, end);
            let cand = this_start.checked_add(align - 1)? & !(align - 1);
            if cand < this_end && this_end - cand >= size {
                return Some(cand);
            }
        }
        None
    }

    /// `memblock_alloc_range_nid`: finds and reserves (flagged
    /// [`MemblockFlags::RSRV_KERN`]) `size` bytes aligned to `align` within
    /// `[start, end)`. `end == MEMBLOCK_ALLOC_ACCESSIBLE` means
    /// `current_limit`. The memory is not touched (no zeroing).
    pub fn memblock_alloc_range_nid(
        &mut self,
        size: u64,
        align: u64,
        start: PhysAddr,
        end: PhysAddr,
        nid: i32,
        _exact_nid: bool,
    ) -> Result<PhysAddr, MemblockError> {
        let align = if align == 0 { SMP_CACHE_BYTES } else { align };
        if !align.is_power_of_two() {
            return Err(MemblockError::BadAlign { align });
        }
        let flags = self.choose_memblock_flags();
        let found =
            self.memblock_find_in_range_node(size, align, start.as_u64(), end.as_u64(), nid, flags);
        if let Some(found) = found {
            self.memblock_add_range(Which::Reserved, found, size, nid, MemblockFlags::RSRV_KERN)?;
            return Ok(PhysAddr::new(found));
        }
        Err(MemblockError::NoSpace {
            size,
            align,
            start,
            end: if end == MEMBLOCK_ALLOC_ACCESSIBLE {
                self.current_limit
            } else {
                end
            },
        })
    }

    /// `memblock_phys_alloc_range`.
    pub fn memblock_phys_alloc_range(
        &mut self,
        size: u64,
        align: u64,
        start: PhysAddr,
        end: PhysAddr,
    ) -> Result<PhysAddr, MemblockError> {
        self.memblock_alloc_range_nid(size, align, start, end, NUMA_NO_NODE, false)
    }

    /// `memblock_phys_alloc`: anywhere below `current_limit`.
    pub fn memblock_phys_alloc(
        &mut self,
        size: u64,
        align: u64,
    ) -> Result<PhysAddr, MemblockError> {
        self.memblock_phys_alloc_range(size, align, PhysAddr::ZERO, MEMBLOCK_ALLOC_ACCESSIBLE)
    }

    /// `memblock_alloc_try_nid_raw`: like `memblock_alloc_try_nid` but the
    /// memory is not zeroed (as the memmap and hugetlb's boot pages are
    /// allocated).
    pub fn memblock_alloc_try_nid_raw(
        &mut self,
        size: u64,
        align: u64,
        min_addr: PhysAddr,
        max_addr: PhysAddr,
        nid: i32,
    ) -> Result<PhysAddr, MemblockError> {
        self.memblock_alloc_range_nid(size, align, min_addr, max_addr, nid, false)
    }

    // ---- iteration -----------------------------------------------------------

    /// `for_each_mem_region`: every memory region, raw.
    pub fn for_each_mem_region(&self) -> impl Iterator<Item = &MemblockRegion> + '_ {
        self.memory.regions.iter()
    }

    /// `for_each_reserved_mem_region`: every reserved region, raw.
    pub fn for_each_reserved_mem_region(&self) -> impl Iterator<Item = &MemblockRegion> + '_ {
        self.reserved.regions.iter()
    }

    /// `for_each_mem_range`: memory ranges, skipping NOMAP ones (Linux asks
    /// for `MEMBLOCK_HOTPLUG | MEMBLOCK_DRIVER_MANAGED`).
    pub fn for_each_mem_range(&self) -> MemRangeIter<'_> {
        MemRangeIter {
            mb: self,
            idx_a: 0,
            idx_b: 0,
            nid: NUMA_NO_NODE,
            flags: MemblockFlags::HOTPLUG | MemblockFlags::DRIVER_MANAGED,
            with_reserved: false,
            done: false,
        }
    }

    /// `for_each_free_mem_range(NUMA_NO_NODE, flags)`: memory minus reserved,
    /// ascending, skipping regions `flags` excludes (NOMAP always unless
    /// asked; non-scratch when `flags` holds KHO_SCRATCH).
    pub fn for_each_free_mem_range(&self, flags: MemblockFlags) -> MemRangeIter<'_> {
        self.for_each_free_mem_range_nid(NUMA_NO_NODE, flags)
    }

    fn for_each_free_mem_range_nid(&self, nid: i32, flags: MemblockFlags) -> MemRangeIter<'_> {
        MemRangeIter {
            mb: self,
            idx_a: 0,
            idx_b: 0,
            nid,
            flags,
            with_reserved: true,
            done: false,
        }
    }

    /// `for_each_free_mem_range_reverse(NUMA_NO_NODE, flags)`: memory minus
    /// reserved, descending.
    pub fn for_each_free_mem_range_reverse(&self, flags: MemblockFlags) -> MemRangeRevIter<'_> {
        self.for_each_free_mem_range_reverse_nid(NUMA_NO_NODE, flags)
    }

    fn for_each_free_mem_range_reverse_nid(
        &self,
        nid: i32,
        flags: MemblockFlags,
    ) -> MemRangeRevIter<'_> {
        MemRangeRevIter {
            mb: self,
            idx_a: self.memory.regions.len() as isize - 1,
            idx_b: self.reserved.regions.len() as isize,
            nid,
            flags,
        }
    }

    /// `should_skip_region` for a memory region.
    fn should_skip_region(m: &MemblockRegion, nid: i32, flags: MemblockFlags) -> bool {
        // Only memory regions are associated with nodes.
        if nid != NUMA_NO_NODE && nid != MAX_NUMNODES && nid != m.nid {
            return true;
        }
        // (movable_node is never enabled here, so HOTPLUG is not skipped.)
        if flags.contains(MemblockFlags::MIRROR) && !m.flags.contains(MemblockFlags::MIRROR) {
            return true;
        }
        if !flags.contains(MemblockFlags::NOMAP) && m.flags.contains(MemblockFlags::NOMAP) {
            return true;
        }
        if !flags.contains(MemblockFlags::DRIVER_MANAGED)
            && m.flags.contains(MemblockFlags::DRIVER_MANAGED)
        {
            return true;
        }
        // In early alloc during kexec handover, only scratch memory.
        if flags.contains(MemblockFlags::KHO_SCRATCH)
            && !m.flags.contains(MemblockFlags::KHO_SCRATCH)
        {
            return true;
        }
        false
    }

    /// Whether `[base, base + size)` is wholly memory (`memblock_is_region_memory`).
    pub fn memblock_is_region_memory(&self, base: PhysAddr, size: u64) -> bool {
        let end = base
            .as_u64()
            .saturating_add(memblock_cap_size(base.as_u64(), size));
        self.memory
            .regions
            .iter()
            .any(|r| r.start() <= base.as_u64() && end <= r.end())
    }

    /// Whether any byte of `[base, base + size)` is reserved
    /// (`memblock_is_region_reserved`).
    pub fn memblock_is_region_reserved(&self, base: PhysAddr, size: u64) -> bool {
        let b = base.as_u64();
        let end = b.saturating_add(memblock_cap_size(b, size));
        self.reserved
            .regions
            .iter()
            .any(|r| r.start() < end && b < r.end())
    }

    /// Sum of the sizes of memory regions (`memblock_phys_mem_size`).
    pub fn memblock_phys_mem_size(&self) -> u64 {
        self.memory.total_size
    }

    /// Sum of the sizes of reserved regions (`memblock_reserved_size`).
    pub fn memblock_reserved_size(&self) -> u64 {
        self.reserved.total_size
    }

    // ---- ours: the bulk restore entry point ---------------------------------

    /// **Ours, not Linux's** (the `bulk` restore strategy, DESIGN.md section
    /// 4): reserves every range of `ranges` and sets `flags` on it, in one
    /// linear merge of the input with the existing reservations.
    ///
    /// The result is exactly what, for each range `r`,
    /// `memblock_reserve(r)` followed (if `flags` is not empty) by
    /// `memblock_setclr_flag(reserved, r, set, flags)` would give: bytes
    /// already reserved keep their node and gain `flags`, new bytes get
    /// `flags` and node `NUMA_NO_NODE`, and neighbours with equal flags and
    /// node merge. The cost is O(cnt + number of ranges): no per-range scan,
    /// no per-range `memmove`, and at most one doubling, straight to the
    /// final size.
    ///
    /// `ranges` must be sorted by start (they may overlap or touch).
    pub fn memblock_reserve_sorted(
        &mut self,
        ranges: impl IntoIterator<Item = PhysRange>,
        flags: MemblockFlags,
    ) -> Result<(), MemblockError> {
        let old = core::mem::take(&mut self.reserved.regions);
        let ranges = ranges.into_iter();
        // The merge writes straight into what becomes the array: one
        // allocation, no copy after (the old regions plus one per input
        // range, the common bound; `Vec` grows in place past it).
        let mut out: Vec<MemblockRegion> = Vec::with_capacity(
            old.len()
                .saturating_add(ranges.size_hint().0)
                .saturating_add(3),
        );
        let mut scanned = 0usize;
        // `total_size`, summed as the pieces are emitted (a merge of two
        // pieces keeps the sum), instead of a pass over the result.
        let mut total = 0u64;

        fn emit(out: &mut Vec<MemblockRegion>, total: &mut u64, r: MemblockRegion) {
            if r.size == 0 {
                return;
            }
            *total += r.size;
            if let Some(last) = out.last_mut()
                && last.end() == r.start()
                && last.flags == r.flags
                && last.nid == r.nid
            {
                last.size += r.size;
                return;
            }
            out.push(r);
        }
        let piece = |base: u64, end: u64, flags: MemblockFlags, nid: i32| MemblockRegion {
            base: PhysAddr::new(base),
            size: end - base,
            flags,
            nid,
        };

        let mut old_iter = old.iter().copied();
        let mut cur = old_iter.next();
        let mut previous: Option<PhysRange> = None;
        // Coalesce the input into maximal disjoint spans on the fly.
        let mut span: Option<(u64, u64)> = None;
        let mut spans = ranges.into_iter().map(Some).chain(core::iter::once(None));
        let result = loop {
            let Some(next) = spans.next() else {
                break Ok(());
            };
            if let Some(r) = next {
                if let Some(p) = previous
                    && r.start() < p.start()
                {
                    break Err(MemblockError::Unsorted {
                        previous: p,
                        range: r,
                    });
                }
                previous = Some(r);
                if r.is_empty() {
                    continue;
                }
                let (rs, re) = (r.start().as_u64(), r.end().as_u64());
                match &mut span {
                    Some((_, e)) if rs <= *e => {
                        *e = (*e).max(re);
                        continue;
                    }
                    _ => {}
                }
                let Some(done) = span.replace((rs, re)) else {
                    continue;
                };
                Self::bulk_span(
                    &mut out,
                    &mut total,
                    &mut cur,
                    &mut old_iter,
                    done,
                    flags,
                    &mut scanned,
                    emit,
                    piece,
                );
            } else {
                if let Some(done) = span.take() {
                    Self::bulk_span(
                        &mut out,
                        &mut total,
                        &mut cur,
                        &mut old_iter,
                        done,
                        flags,
                        &mut scanned,
                        emit,
                        piece,
                    );
                }
                break Ok(());
            }
        };
        if let Err(e) = result {
            self.reserved.regions = old;
            return Err(e);
        }
        while let Some(r) = cur {
            scanned += 1;
            emit(&mut out, &mut total, r);
            cur = old_iter.next();
        }
        Counters::add(&self.stats.scanned, scanned);

        // Size the array once: the result plus room for the array's own
        // reservation and for freeing the old one (a split: 2 more).
        let needed = out.len() + 3;
        let mut max = self.reserved.max;
        while max < needed {
            max *= 2;
        }
        if max != self.reserved.max && !self.can_resize {
            self.reserved.regions = old;
            return Err(MemblockError::CannotResize {
                name: self.reserved.name,
            });
        }
        self.reserved.total_size = total;
        self.reserved.regions = out;
        if max == self.reserved.max {
            return Ok(());
        }
        let old_alloc_size = page_align((self.reserved.max as u64) * MEMBLOCK_REGION_SIZE);
        let new_alloc_size = page_align((max as u64) * MEMBLOCK_REGION_SIZE);
        Counters::add(&self.stats.doublings, 1);
        let old_max = self.reserved.max;
        self.reserved.max = max;
        // Room for the new array, avoiding everything now reserved.
        let limit = self.current_limit.as_u64();
        let Some(addr) = self.memblock_find_in_range(0, limit, new_alloc_size, PAGE_SIZE) else {
            return Err(MemblockError::DoubleFailed {
                name: self.reserved.name,
                max: old_max,
            });
        };
        let old_array = self
            .reserved
            .array_phys
            .replace(range(addr, addr + new_alloc_size));
        // The array's own bookkeeping finds its place by binary search (as
        // `mainline-fix` step (c) does; the result is the same as Linux's
        // scan from index 0): this entry point is ours, and a scan of the
        // whole merged array for one region would cost as much as the merge.
        let bsearch = core::mem::replace(&mut self.add_range_bsearch, true);
        let result = self.move_array_reservation(old_array, old_alloc_size, addr, new_alloc_size);
        self.add_range_bsearch = bsearch;
        result
    }

    /// One coalesced input span `[s, e)` of [`Self::memblock_reserve_sorted`]:
    /// copies the old regions before it, splits and flags those it overlaps,
    /// fills the gaps with new regions, and leaves the remainder of an old
    /// region that extends past it in `cur`.
    #[allow(clippy::too_many_arguments)]
    fn bulk_span(
        out: &mut Vec<MemblockRegion>,
        total: &mut u64,
        cur: &mut Option<MemblockRegion>,
        old_iter: &mut impl Iterator<Item = MemblockRegion>,
        (s, e): (u64, u64),
        flags: MemblockFlags,
        scanned: &mut usize,
        emit: fn(&mut Vec<MemblockRegion>, &mut u64, MemblockRegion),
        piece: impl Fn(u64, u64, MemblockFlags, i32) -> MemblockRegion,
    ) {
        let e = s.saturating_add(memblock_cap_size(s, e - s));
        // Old regions wholly before the span.
        while let Some(r) = *cur
            && r.end() <= s
        {
            *scanned += 1;
            emit(out, total, r);
            *cur = old_iter.next();
        }
        let mut pos = s;
        while let Some(r) = *cur
            && r.start() < e
        {
            *scanned += 1;
            if r.start() < pos {
                // Only the first overlapping region can start before the span.
                emit(out, total, piece(r.start(), pos, r.flags, r.nid));
            } else if r.start() > pos {
                emit(out, total, piece(pos, r.start(), flags, NUMA_NO_NODE));
                pos = r.start();
            }
            let end = r.end().min(e);
            emit(out, total, piece(pos, end, r.flags.union(flags), r.nid));
            pos = end;
            if r.end() > e {
                *cur = Some(piece(e, r.end(), r.flags, r.nid));
                break;
            }
            *cur = old_iter.next();
        }
        if pos < e {
            emit(out, total, piece(pos, e, flags, NUMA_NO_NODE));
        }
    }
}

/// `__next_mem_range`: ascending memory ranges, minus reserved ones when
/// `with_reserved` (the `for_each_free_mem_range` family).
#[derive(Debug)]
pub struct MemRangeIter<'a> {
    mb: &'a Memblock,
    idx_a: usize,
    idx_b: usize,
    nid: i32,
    flags: MemblockFlags,
    with_reserved: bool,
    done: bool,
}

impl Iterator for MemRangeIter<'_> {
    type Item = PhysRange;

    fn next(&mut self) -> Option<PhysRange> {
        if self.done {
            return None;
        }
        let (type_a, type_b) = (&self.mb.memory.regions, &self.mb.reserved.regions);
        let stats = &self.mb.stats;
        while let Some(m) = type_a.get(self.idx_a) {
            Counters::add(&stats.scanned, 1);
            let (m_start, m_end) = (m.start(), m.end());
            if Memblock::should_skip_region(m, self.nid, self.flags) {
                self.idx_a += 1;
                continue;
            }
            if !self.with_reserved {
                self.idx_a += 1;
                return Some(range(m_start, m_end));
            }
            // Scan areas before each reservation.
            while self.idx_b < type_b.len() + 1 {
                Counters::add(&stats.scanned, 1);
                let r_start = match self.idx_b.checked_sub(1).and_then(|i| type_b.get(i)) {
                    Some(prev) => prev.end(),
                    None => 0,
                };
                let r_end = type_b.get(self.idx_b).map_or(PHYS_ADDR_MAX, |r| r.start());
                // If idx_b advanced past idx_a, break out to advance idx_a.
                if r_start >= m_end {
                    break;
                }
                // If the two regions intersect, we're done.
                if m_start < r_end {
                    let out = range(m_start.max(r_start), m_end.min(r_end));
                    // The region which ends first is advanced.
                    if m_end <= r_end {
                        self.idx_a += 1;
                    } else {
                        self.idx_b += 1;
                    }
                    return Some(out);
                }
                self.idx_b += 1;
            }
            self.idx_a += 1;
        }
        self.done = true;
        None
    }
}

/// `__next_mem_range_rev`: descending memory ranges minus reserved ones
/// (`for_each_free_mem_range_reverse`).
#[derive(Debug)]
pub struct MemRangeRevIter<'a> {
    mb: &'a Memblock,
    idx_a: isize,
    idx_b: isize,
    nid: i32,
    flags: MemblockFlags,
}

impl Iterator for MemRangeRevIter<'_> {
    type Item = PhysRange;

    fn next(&mut self) -> Option<PhysRange> {
        let (type_a, type_b) = (&self.mb.memory.regions, &self.mb.reserved.regions);
        let stats = &self.mb.stats;
        let at = |v: &'_ [MemblockRegion], i: isize| {
            usize::try_from(i).ok().and_then(|i| v.get(i)).copied()
        };
        while let Some(m) = at(type_a, self.idx_a) {
            Counters::add(&stats.scanned, 1);
            let (m_start, m_end) = (m.start(), m.end());
            if Memblock::should_skip_region(&m, self.nid, self.flags) {
                self.idx_a -= 1;
                continue;
            }
            // Scan areas before each reservation.
            while self.idx_b >= 0 {
                Counters::add(&stats.scanned, 1);
                let r_start = at(type_b, self.idx_b - 1).map_or(0, |p| p.end());
                let r_end = at(type_b, self.idx_b).map_or(PHYS_ADDR_MAX, |r| r.start());
                // If idx_b advanced past idx_a, break out to advance idx_a.
                if r_end <= m_start {
                    break;
                }
                // If the two regions intersect, we're done.
                if m_end > r_start {
                    let out = range(m_start.max(r_start), m_end.min(r_end));
                    if m_start >= r_start {
                        self.idx_a -= 1;
                    } else {
                        self.idx_b -= 1;
                    }
                    return Some(out);
                }
                self.idx_b -= 1;
            }
            self.idx_a -= 1;
        }
        None
    }
}

#[cfg(test)]
mod tests;
