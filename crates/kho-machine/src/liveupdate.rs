//! The live update: the old kernel's and the new kernel's main functions.
//!
//! ```text
//!  driver (kho run)                 old kernel (kho __old-kernel)           new kernel (kho __new-kernel)
//!  ---------------                  -----------------------------           -----------------------------
//!  spawn, stdout piped  ──────────▶ create RAM (memfd), reserve scratch,
//!                                   write + preserve the workload,
//!                                   write manifest, setup_data, scratch
//!                                   array; poison the rest
//!                                   exec (same PID) ─────────────────────▶  attach memfd, read setup_data
//!                                                                           -> kho_data -> scratch + manifest,
//!                                                                           verify every block
//!  read one JSON line  ◀─────────────────────────────────────────────────── print RunReport (stdout)
//! ```
//!
//! What crosses the exec is described in [`crate::kexec`]: the memfd, the
//! firmware memory map and the setup_data address; plus the new kernel's own
//! boot parameter, the restore strategy (`--strategy`).
//!
//! ## Temporary, until the real KHO boot lands
//!
//! This is a small real payload that exercises the hand-over end to end;
//! the real boot (memblock, memmap, buddy, radix tree, walker, restore
//! strategies) replaces it:
//! - [`EarlyAlloc`] stands in for memblock in the old kernel (a top-down
//!   allocator over the RAM map), and the kernel's own memblock use is
//!   modelled as a kernel image and a memmap reservation that are never
//!   written;
//! - the blocks are "preserved" by being listed in the poison keep-list, not
//!   in a KHO radix tree;
//! - `kho_data.fdt_addr`/`fdt_size` point at the manifest blob instead of a
//!   KHO root FDT (which will carry the manifest as a subnode);
//!
//! The new kernel is real: [`new_kernel_boot`] boots the machine with
//! [`crate::kho`] (kho_populate, kho_memory_init with the strategy,
//! memmap_init, memblock_free_all, kho_restore_folio / kho_restore_pages)
//! and reads the manifest from the [`MANIFEST_NODE`] subnode of the root
//! FDT that `kho_data.fdt_addr` names.

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use kho::{Block, Order, PAGE_SIZE, PhysAddr, PhysRange};
use serde::{Deserialize, Serialize};

use crate::arena::{ArenaError, MemoryLayout, PhysMem};
use crate::boot::{BootConfig, BootError, Machine};
use crate::buddy::Buddy;
use crate::kexec::{
    KexecError, KhoHandover, NewKernelArgs, kexec_exec, read_setup_data, write_handover,
};
use crate::kho::{
    Kho, KhoError, KhoIn, blob_pages, kho_memory_init, kho_populate, kho_preserved_order,
    kho_restore_folio, kho_restore_pages,
};
use crate::manifest::{
    Manifest, ManifestEntry, ManifestError, POISON, block_checksum, fill_pattern, poison,
};
use crate::scratch::{
    ARCH_LOW_ADDRESS_LIMIT, KernReserved, ScratchAlloc, ScratchAreas, ScratchError, ScratchSizing,
    kho_reserve_scratch,
};

const MIB: u64 = 1 << 20;

/// The KHO subnode of the workload's manifest: `preserved-data` = the
/// manifest blob's physical address, `blob-size` = its length.
pub const MANIFEST_NODE: &str = "kho-run";

/// A restore strategy of the new kernel (DESIGN.md section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// One memblock_reserve + mark_noinit per block (mainline).
    PerBlock,
    /// One reservation per maximal coalesced range.
    Coalesced,
    /// memblock.reserved built in one linear merge.
    Bulk,
    /// Nothing reserved; the buddy hand-over skips preserved ranges.
    Skip,
}

impl Strategy {
    /// Every strategy, in report order.
    pub const ALL: [Strategy; 4] = [Self::PerBlock, Self::Coalesced, Self::Bulk, Self::Skip];

    /// The command-line and report name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PerBlock => "per-block",
            Self::Coalesced => "coalesced",
            Self::Bulk => "bulk",
            Self::Skip => "skip",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = LiveUpdateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| LiveUpdateError::BadStrategy(s.to_owned()))
    }
}

/// One row of the report: what the new kernel measured for one strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The restore strategy.
    pub strategy: Strategy,
    /// Preserved blocks (walked in the radix tree).
    pub blocks: u64,
    /// Their bytes, plus the bytes of manifest folios that are not in the
    /// tree (the workload forgot them: they are lost), so that
    /// `verified_bytes + lost_bytes == preserved_bytes`.
    pub preserved_bytes: u64,
    /// Walking the radix tree, ms (see [`crate::kho`] for what each
    /// strategy counts).
    pub walk_ms: f64,
    /// Accounting the preserved memory in memblock, ms.
    pub memblock_ms: f64,
    /// memmap_init + memblock_free_all of the KHO boot, ms.
    pub mm_init_ms: f64,
    /// The same on a boot with nothing preserved, ms.
    pub baseline_mm_init_ms: f64,
    /// Bytes whose contents matched the manifest.
    pub verified_bytes: u64,
    /// Bytes that did not.
    pub lost_bytes: u64,
    /// Regions of memblock.reserved after the reservation.
    pub memblock_reserved_regions: u64,
    /// Why the new kernel booted without KHO (`None`: KHO was used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kho_error: Option<String>,
}

/// Errors of the live update.
#[derive(Debug, thiserror::Error)]
pub enum LiveUpdateError {
    /// An unknown strategy name.
    #[error("unknown strategy {0:?} (per-block, coalesced, bulk, skip)")]
    BadStrategy(String),
    /// Creating or attaching RAM failed.
    #[error(transparent)]
    Arena(#[from] ArenaError),
    /// The hand-over failed.
    #[error(transparent)]
    Kexec(#[from] KexecError),
    /// Scratch could not be reserved.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    /// The manifest failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Simulated memory refused an access.
    #[error("memory: {0}")]
    Mem(#[from] kho::MemError),
    /// The new kernel's boot failed (not KHO: that only disables KHO).
    #[error("boot: {0}")]
    Boot(#[from] BootError),
    /// The old kernel ran out of (non-scratch) memory.
    #[error("out of memory allocating {size:#x} bytes for {what}")]
    OutOfMemory {
        /// What for.
        what: &'static str,
        /// How much.
        size: u64,
    },
    /// The setup_data list carries no KHO hand-over.
    #[error("no SETUP_KEXEC_KHO hand-over in the setup_data list at {0}")]
    NoHandover(PhysAddr),
}

// ---------------------------------------------------------------------------
// Old kernel

/// Stand-in for memblock in the old kernel (temporary): a top-down
/// allocator over the RAM map that keeps its reservations sorted and merged.
#[derive(Debug, Clone)]
pub struct EarlyAlloc {
    ram: Vec<PhysRange>,
    reserved: Vec<PhysRange>,
}

impl EarlyAlloc {
    /// Nothing reserved.
    pub fn new(layout: &MemoryLayout) -> Self {
        Self {
            ram: layout.ram().to_vec(),
            reserved: Vec::new(),
        }
    }

    /// The reservations, sorted and merged.
    pub fn reserved(&self) -> &[PhysRange] {
        &self.reserved
    }

    fn reserve(&mut self, r: PhysRange) {
        let i = self.reserved.partition_point(|x| x.end() < r.start());
        let mut merged = r;
        while let Some(x) = self
            .reserved
            .get(i)
            .copied()
            .filter(|x| x.start() <= merged.end())
        {
            merged = PhysRange::new(merged.start().min(x.start()), merged.end().max(x.end()))
                .unwrap_or(merged);
            self.reserved.remove(i);
        }
        self.reserved.insert(i, merged);
    }

    fn free_gaps(&self) -> Vec<PhysRange> {
        let mut out = Vec::new();
        for ram in &self.ram {
            let mut start = ram.start();
            for r in self.reserved.iter().filter(|r| r.overlaps(*ram)) {
                if r.start() > start {
                    out.extend(PhysRange::new(start, r.start()).ok());
                }
                start = start.max(r.end());
            }
            if start < ram.end() {
                out.extend(PhysRange::new(start, ram.end()).ok());
            }
        }
        out
    }

    /// `size` bytes aligned to `align`, as high as possible below `below`.
    pub fn alloc_below(&mut self, size: u64, align: u64, below: PhysAddr) -> Option<PhysRange> {
        for gap in self.free_gaps().into_iter().rev() {
            let end = gap.end().min(below);
            let Some(start) = end.checked_sub(size).map(|s| s.align_down(align)) else {
                continue;
            };
            if start >= gap.start() {
                let r = PhysRange::from_start_size(start, size).ok()?;
                self.reserve(r);
                return Some(r);
            }
        }
        None
    }

    fn free(&mut self, r: PhysRange) {
        let old = std::mem::take(&mut self.reserved);
        for x in old {
            if !x.overlaps(r) {
                self.reserved.push(x);
                continue;
            }
            if x.start() < r.start() {
                self.reserved
                    .extend(PhysRange::new(x.start(), r.start()).ok());
            }
            if r.end() < x.end() {
                self.reserved.extend(PhysRange::new(r.end(), x.end()).ok());
            }
        }
    }
}

impl ScratchAlloc for EarlyAlloc {
    fn alloc(
        &mut self,
        size: u64,
        align: u64,
        below: PhysAddr,
        _nid: Option<usize>,
    ) -> Option<PhysAddr> {
        // One node: every allocation is on node 0.
        self.alloc_below(size, align, below).map(|r| r.start())
    }

    fn free(&mut self, range: PhysRange) {
        EarlyAlloc::free(self, range);
    }
}

/// The old kernel's parameters.
#[derive(Debug, Clone)]
pub struct OldKernelConfig {
    /// Bytes of RAM.
    pub machine_size: u64,
    /// The new kernel's restore strategy.
    pub strategy: Strategy,
    /// About how many pages the workload preserves.
    pub payload_pages: u64,
    /// Pages the workload writes and lists in its manifest but forgets to
    /// preserve (fault injection: they must be reported lost).
    pub forget_pages: u64,
    /// Seed of the data pattern.
    pub seed: u64,
    /// `kho_scratch=`.
    pub scratch: ScratchSizing,
    /// The binary to exec as the new kernel.
    pub image: PathBuf,
}

/// The kernel's own memblock use, modelled (temporary): an 8 MiB "kernel
/// image" below 4 GiB and a memmap of 64 bytes per page, reserved top-down.
fn reserve_kernel(
    early: &mut EarlyAlloc,
    layout: &MemoryLayout,
) -> Result<KernReserved, LiveUpdateError> {
    let image_size = 8 * MIB;
    let image = early
        .alloc_below(image_size, 2 * MIB, ARCH_LOW_ADDRESS_LIMIT)
        .ok_or(LiveUpdateError::OutOfMemory {
            what: "kernel image",
            size: image_size,
        })?;
    let memmap_size = (layout.ram_bytes() / PAGE_SIZE * 64).next_multiple_of(PAGE_SIZE);
    let memmap = early
        .alloc_below(memmap_size, PAGE_SIZE, PhysAddr::new(u64::MAX))
        .ok_or(LiveUpdateError::OutOfMemory {
            what: "memmap",
            size: memmap_size,
        })?;
    let low = |r: PhysRange| {
        r.end()
            .min(ARCH_LOW_ADDRESS_LIMIT)
            .as_u64()
            .saturating_sub(r.start().as_u64())
    };
    let total = image.size() + memmap.size();
    Ok(KernReserved {
        below_low_limit: low(image) + low(memmap),
        total,
        per_node: vec![total],
    })
}

/// The workload's block orders: one order-6 folio, then a repeating mix of
/// order 0 to 3 until `pages` is reached.
fn workload_orders(pages: u64) -> Vec<Order> {
    const CYCLE: [u8; 8] = [0, 0, 2, 0, 1, 0, 0, 3];
    let mut out = vec![Order::new(6)];
    let mut total = 64u64;
    for o in CYCLE.iter().cycle() {
        if total >= pages {
            break;
        }
        out.push(Order::new(*o));
        total += 1 << o;
    }
    out
}

/// The old kernel: boots the machine, runs the workload, writes the
/// hand-over, poisons what is not preserved and execs the new kernel.
/// Returns only on failure.
pub fn old_kernel_main(cfg: &OldKernelConfig) -> LiveUpdateError {
    match old_kernel_prepare(cfg) {
        Ok((mem, setup_data)) => {
            let cmdline = new_kernel_cmdline(cfg.strategy);
            kexec_exec(&mem, &cfg.image, setup_data, &cmdline).into()
        }
        Err(e) => e,
    }
}

/// The new kernel's own boot parameters (after the hand-over arguments).
pub fn new_kernel_cmdline(strategy: Strategy) -> Vec<OsString> {
    vec!["--strategy".into(), strategy.as_str().into()]
}

/// Everything the old kernel does before the exec; returns the memory and
/// the setup_data address.
pub fn old_kernel_prepare(cfg: &OldKernelConfig) -> Result<(PhysMem, PhysAddr), LiveUpdateError> {
    let layout = MemoryLayout::pc(cfg.machine_size)?;
    let mem = PhysMem::create(layout.clone())?;
    let mut early = EarlyAlloc::new(&layout);
    let kern = reserve_kernel(&mut early, &layout)?;
    let scratch = kho_reserve_scratch(&cfg.scratch, &kern, &mut early)?;

    // The workload: allocate outside scratch (scratch is reserved), fill,
    // preserve. Each block is taken from twice its size so blocks scatter.
    let mut keep = Vec::new();
    let mut manifest = Manifest {
        seed: cfg.seed,
        entries: Vec::new(),
    };
    let orders = workload_orders(cfg.payload_pages);
    let forgotten = (0..cfg.forget_pages).map(|_| Order::ZERO);
    for (i, order) in orders.into_iter().chain(forgotten).enumerate() {
        let preserve = i < manifest_len_preserved(cfg);
        let r = early
            .alloc_below(
                2 * order.bytes(),
                2 * order.bytes(),
                PhysAddr::new(u64::MAX),
            )
            .ok_or(LiveUpdateError::OutOfMemory {
                what: "workload folio",
                size: 2 * order.bytes(),
            })?;
        let block = Block::new(r.start(), order).map_err(|_| LiveUpdateError::OutOfMemory {
            what: "aligned workload folio",
            size: order.bytes(),
        })?;
        let range = block
            .range()
            .ok_or(kho::MemError::NotMapped { phys: block.phys() })?;
        let checksum = fill_pattern(&mem, block, cfg.seed)?;
        if preserve {
            scratch.check_preserve(range)?;
            keep.push(range);
        }
        manifest.entries.push(ManifestEntry { block, checksum });
    }

    // The manifest blob, in preserved pages outside scratch.
    let blob_len = manifest.to_bytes().len() as u64;
    let blob_pages = blob_len.div_ceil(PAGE_SIZE).next_power_of_two();
    let blob = early
        .alloc_below(
            blob_pages * PAGE_SIZE,
            blob_pages * PAGE_SIZE,
            PhysAddr::new(u64::MAX),
        )
        .ok_or(LiveUpdateError::OutOfMemory {
            what: "manifest",
            size: blob_pages * PAGE_SIZE,
        })?;
    scratch.check_preserve(blob)?;
    manifest.write(&mem, blob.start())?;
    keep.push(blob);

    // The hand-over: a kexec segment at the top of the global scratch area,
    // as kexec_file_load places segments in scratch.
    let handover_at = handover_address(&scratch)?;
    // TEMPORARY: the "FDT" is the manifest blob until the KHO root FDT exists.
    let image = write_handover(&mem, handover_at, PhysAddr::ZERO, blob, scratch.as_slice())?;
    keep.push(image.range);

    poison(&mem, &keep)?;
    Ok((mem, image.setup_data))
}

/// How many of the workload's blocks are preserved: all but the forgotten.
fn manifest_len_preserved(cfg: &OldKernelConfig) -> usize {
    workload_orders(cfg.payload_pages).len()
}

/// The last page of the global scratch area.
fn handover_address(scratch: &ScratchAreas) -> Result<PhysAddr, LiveUpdateError> {
    scratch
        .as_slice()
        .get(1)
        .and_then(|g| g.end().checked_sub(PAGE_SIZE))
        .ok_or(LiveUpdateError::OutOfMemory {
            what: "hand-over segment",
            size: PAGE_SIZE,
        })
}

// ---------------------------------------------------------------------------
// New kernel

/// The new kernel's parameters.
#[derive(Debug, Clone)]
pub struct NewKernelConfig {
    /// What crossed the exec.
    pub handover: NewKernelArgs,
    /// The restore strategy.
    pub strategy: Strategy,
}

/// The new kernel: attaches RAM, reads the hand-over and boots
/// ([`new_kernel_boot`]).
pub fn new_kernel_main(cfg: &NewKernelConfig) -> Result<RunReport, LiveUpdateError> {
    let mem = cfg.handover.attach()?;
    let handover = read_setup_data(&mem, cfg.handover.setup_data);
    new_kernel_boot(&mem, handover, cfg.strategy)
}

/// Pre-faults the memmap's memory (untimed) with poison, as firmware would
/// leave garbage there: the timed phases then measure struct-page work,
/// not the host's first-touch page faults, in the KHO boot and the
/// baseline alike.
fn prefault_memmap(m: &Machine<'_>) -> Result<(), LiveUpdateError> {
    if let Some(mm) = m.memmap() {
        for r in mm.allocations() {
            m.mem().fill(*r, POISON)?;
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The new kernel's boot on `mem` with what `read_setup_data` returned:
///
/// 1. `memblock_init`; [`kho_populate`] (a missing or broken hand-over
///    boots without KHO, [`RunReport::kho_error`] says why);
/// 2. `alloc_memmap` (from scratch: scratch-only); [`kho_memory_init`]
///    with `strategy`;
/// 3. `memmap_init` + `memblock_free_all` (timed: `mm_init_ms`); from then
///    on the buddy allocator poisons every block it hands out;
/// 4. the KHO metadata restored with [`kho_restore_pages`] (the FDT page,
///    the manifest's pages), the manifest read from the [`MANIFEST_NODE`]
///    subnode, every listed folio restored with [`kho_restore_folio`] and
///    its checksum verified (a folio that fails either is lost);
/// 5. the baseline: a fresh boot of the same memory with nothing
///    preserved, timed the same way (`baseline_mm_init_ms`).
pub fn new_kernel_boot(
    mem: &PhysMem,
    handover: Result<Option<KhoHandover>, KexecError>,
    strategy: Strategy,
) -> Result<RunReport, LiveUpdateError> {
    let mut m = Machine::new(mem, BootConfig::default());
    m.memblock_init()?;
    let mut kho = match handover {
        Ok(Some(h)) => kho_populate(&mut m, &h),
        Ok(None) => Kho::disabled(KhoError::NoHandover),
        Err(e) => Kho::disabled(KhoError::Handover {
            reason: e.to_string(),
        }),
    };
    m.alloc_memmap()?;
    prefault_memmap(&m)?;
    let init = kho_memory_init(&mut m, &mut kho, strategy);
    let t = Instant::now();
    m.memmap_init_skip(kho.skip_ranges())?;
    m.memblock_free_all_except(kho.skip_ranges())?;
    let mm_init = t.elapsed();
    let buddy = m.buddy().ok_or(BootError::Phase {
        phase: "restore",
        needs: "memblock_free_all",
    })?;
    buddy.set_poison_on_alloc(true);

    let (verified_bytes, lost_bytes, unpreserved) = match kho.incoming() {
        Some(k) => restore_and_verify(mem, buddy, k, init.bytes),
        None => (0, 0, 0),
    };
    drop(m);

    // The baseline: nothing preserved.
    let mut b = Machine::new(mem, BootConfig::default());
    b.memblock_init()?;
    b.alloc_memmap()?;
    prefault_memmap(&b)?;
    let t = Instant::now();
    b.memmap_init()?;
    b.memblock_free_all()?;
    let baseline = t.elapsed();

    Ok(RunReport {
        strategy,
        blocks: init.blocks,
        preserved_bytes: init.bytes.saturating_add(unpreserved),
        walk_ms: ms(init.walk + init.heads),
        memblock_ms: ms(init.memblock),
        mm_init_ms: ms(mm_init),
        baseline_mm_init_ms: ms(baseline),
        verified_bytes,
        lost_bytes,
        memblock_reserved_regions: init.reserved_regions,
        kho_error: kho.error().map(|e| e.to_string()),
    })
}

/// Restores the metadata and every manifest folio; returns (verified,
/// lost, unpreserved) bytes, where unpreserved counts the manifest's folios
/// that are no preserved head at all (listed by the workload, absent from
/// the tree: lost, and added to the preserved bytes so that verified +
/// lost = preserved). `preserved` is what the walk found: if the manifest
/// cannot be read, whatever was not verified is lost.
fn restore_and_verify(
    mem: &PhysMem,
    buddy: &Buddy<'_>,
    k: &KhoIn,
    preserved: u64,
) -> (u64, u64, u64) {
    let mut verified = 0u64;
    let mut lost = 0u64;
    let mut unpreserved = 0u64;
    // The FDT page: it parsed in kho_populate.
    match kho_restore_pages(buddy, k.fdt.start(), 1) {
        Ok(_) => verified += PAGE_SIZE,
        Err(_) => lost += PAGE_SIZE,
    }
    let Some((blob, Some(size))) = k.subnode(MANIFEST_NODE) else {
        return (verified, preserved.saturating_sub(verified), 0);
    };
    // The manifest's pages: preserved either with kho_preserve_pages
    // (Linux's split of its pages) or as one block of a larger order.
    let mut nr = blob_pages(size);
    if let Some(o) = kho_preserved_order(buddy, blob)
        && o.pages() > nr
    {
        nr = o.pages();
    }
    let manifest = kho_restore_pages(buddy, blob, nr)
        .ok()
        .and_then(|_| PhysRange::from_start_size(blob, size).ok())
        .and_then(|r| Manifest::read(mem, r).ok());
    let Some(manifest) = manifest else {
        return (verified, preserved.saturating_sub(verified), 0);
    };
    verified += nr * PAGE_SIZE;
    for e in &manifest.entries {
        let restored = kho_restore_folio(buddy, e.block.phys());
        if matches!(restored, Err(KhoError::BadMagic { .. })) {
            unpreserved += e.block.size();
        }
        let ok = restored.is_ok_and(|(_, order)| order == e.block.order())
            && block_checksum(mem, e.block).is_ok_and(|c| c == e.checksum);
        if ok {
            verified += e.block.size();
        } else {
            lost += e.block.size();
        }
    }
    (verified, lost, unpreserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(forget: u64) -> OldKernelConfig {
        OldKernelConfig {
            machine_size: 64 * MIB,
            strategy: Strategy::Bulk,
            payload_pages: 300,
            forget_pages: forget,
            seed: 9,
            scratch: ScratchSizing::default(),
            image: PathBuf::new(),
        }
    }

    /// Both halves in one process: the old kernel's preparation, then the
    /// new kernel's reading over a second mapping of the same memfd.
    fn run(forget: u64) -> RunReport {
        let (mem, setup_data) = old_kernel_prepare(&cfg(forget)).unwrap();
        let dup = mem.fd().try_clone_to_owned().unwrap();
        let other = PhysMem::attach(dup, mem.layout().clone()).unwrap();
        let handover = read_setup_data(&other, setup_data).unwrap().unwrap();
        assert_eq!(handover.scratch.len(), 3);
        let manifest = Manifest::read(&other, handover.fdt).unwrap();
        let v = manifest.verify(&other);
        RunReport {
            strategy: Strategy::Bulk,
            blocks: manifest.entries.len() as u64,
            preserved_bytes: manifest.preserved_bytes(),
            walk_ms: 0.0,
            memblock_ms: 0.0,
            mm_init_ms: 0.0,
            baseline_mm_init_ms: 0.0,
            verified_bytes: v.verified_bytes,
            lost_bytes: v.lost_bytes,
            memblock_reserved_regions: 0,
            kho_error: None,
        }
    }

    #[test]
    fn in_process_live_update_verifies_everything() {
        let r = run(0);
        assert!(r.preserved_bytes >= 300 * PAGE_SIZE);
        assert_eq!(r.verified_bytes, r.preserved_bytes);
        assert_eq!(r.lost_bytes, 0);
    }

    #[test]
    fn forgotten_pages_are_lost() {
        let r = run(3);
        assert_eq!(r.lost_bytes, 3 * PAGE_SIZE);
        assert_eq!(r.verified_bytes + r.lost_bytes, r.preserved_bytes);
    }

    #[test]
    fn early_alloc_is_top_down_and_frees() {
        let layout = MemoryLayout::pc(64 * MIB).unwrap();
        let mut e = EarlyAlloc::new(&layout);
        let a = e
            .alloc_below(2 * MIB, 2 * MIB, PhysAddr::new(u64::MAX))
            .unwrap();
        assert_eq!(a.start(), PhysAddr::new(62 * MIB));
        let b = e.alloc_below(MIB, MIB, PhysAddr::new(8 * MIB)).unwrap();
        assert_eq!(b.start(), PhysAddr::new(7 * MIB));
        assert_eq!(e.reserved().len(), 2);
        EarlyAlloc::free(&mut e, a);
        assert_eq!(e.reserved(), &[b]);
        assert!(
            e.alloc_below(128 * MIB, PAGE_SIZE, PhysAddr::new(u64::MAX))
                .is_none()
        );
    }

    #[test]
    fn strategy_names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
        }
        assert!("fast".parse::<Strategy>().is_err());
    }
}
