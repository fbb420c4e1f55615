//! The live update: the old kernel's and the new kernel's main functions.
//!
//! ```text
//!  driver (kho run)                 old kernel (kho __old-kernel)           new kernel (kho __new-kernel)
//!  ---------------                  -----------------------------           -----------------------------
//!  spawn, stdout piped  ──────────▶ create RAM (memfd); boot: memblock,
//!                                   memmap, scratch (kho_reserve_scratch),
//!                                   1 GiB boot folios, memmap_init, buddy;
//!                                   workloads filled + preserved (radix),
//!                                   manifest + root FDT preserved,
//!                                   setup_data + scratch array in scratch;
//!                                   poison the rest
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
//! ## The contract between the two kernels
//!
//! The old kernel ([`old_kernel_boot`]) leaves, and the new kernel relies on:
//!
//! | what                    | where / how                                                                 |
//! |-------------------------|-----------------------------------------------------------------------------|
//! | setup_data + scratch array | one `SETUP_KEXEC_KHO` node and the `kho_scratch` array right after it ([`write_handover`]), at the last page of the global scratch area (a kexec segment in scratch); never poisoned; the new kernel must keep it (reserve it) before allocating from scratch |
//! | `kho_data.fdt_addr/size`| the KHO root FDT: one 4 KiB page ([`FDT_SIZE`]), built by [`KhoFdtBuilder`]: `compatible = "kho-v3"`, `preserved-memory-map` = the [`RadixTree`] root |
//! | subnode [`MANIFEST_NODE`] | `preserved-data` = the manifest blob's phys, `blob-size` = its byte length ([`Manifest::write`]'s range) |
//! | preserved (radix tree)  | every workload folio (order as allocated: 18, 9, 0, 2..=4; a replayed trace's blocks with their orders), the manifest's pages (`kho_preserve_pages` split), the FDT page (order 0) |
//! | manifest                | the workload's folios only, each with its checksum; `--forget-pages` pages are listed but not preserved (they must come out lost) |
//! | not keys                | the radix tree's own pages: never preserved, kept from poison            |
//! | scratch                 | `[lowmem, global, node 0]`, sized by Linux's formula from the old kernel's `RSRV_KERN` reservations (kernel image + memmap), 200 % by default: room for the new kernel's memmap and memblock arrays; no preserved block overlaps it |
//! | kernel image            | [`kernel_boot_config`]: both kernels reserve the same low 1 MiB and image range; nothing there is preserved |
//! | poison                  | every populated page except preserved blocks, tree pages and the hand-over image holds [`crate::manifest::POISON`] |
//!
//! ## The new kernel
//!
//! [`new_kernel_boot`] boots the machine with [`crate::kho`] (kho_populate,
//! kho_memory_init with the strategy, memmap_init, memblock_free_all,
//! kho_restore_folio / kho_restore_pages) and reads the manifest from the
//! [`MANIFEST_NODE`] subnode of the root FDT that `kho_data.fdt_addr` names.

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kho::{Block, KhoFdtBuilder, Order, PAGE_SIZE, PhysAddr, PhysRange, RadixTree, split_pages};
use serde::{Deserialize, Serialize};

use crate::arena::{ArenaError, MemoryLayout, PhysMem};
use crate::boot::{BootConfig, BootError, Machine};
use crate::buddy::{Buddy, MAX_PAGE_ORDER};
use crate::kexec::{
    KexecError, KhoHandover, NewKernelArgs, kexec_exec, read_setup_data, write_handover,
};
use crate::kho::{
    Kho, KhoError, KhoIn, PeerHandover, PeerScheme, blob_pages, kho_memory_init,
    kho_populate_scheme, kho_preserved_order, kho_restore_folio, kho_restore_pages,
};
use crate::manifest::{Manifest, ManifestError, ManifestHeader, POISON, block_checksum, poison};
use crate::physio::{read_bytes, write_bytes};
use crate::scratch::{
    KernReserved, ScratchAreas, ScratchError, ScratchSizing, kho_reserve_scratch,
};
use crate::workload::{self, Preserver, Scenario, TreeAlloc, WorkloadError};

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
    /// The peer scheme that tracked and restored the memory (`None`: ours,
    /// `kho`, restored with `strategy`; a peer restores its own way and
    /// `strategy` names the closest: `per-block` or, for maple's one
    /// reservation per range, `coalesced`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
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
    /// The old kernel ran out of (non-scratch) memory.
    #[error("out of memory allocating {size:#x} bytes for {what}")]
    OutOfMemory {
        /// What for.
        what: &'static str,
        /// How much.
        size: u64,
    },
    /// A kernel's boot failed (in the new kernel, a KHO failure only
    /// disables KHO; this is the boot itself failing).
    #[error("boot: {0}")]
    Boot(#[from] BootError),
    /// A workload failed.
    #[error("workload: {0}")]
    Workload(#[from] WorkloadError),
    /// The radix tree refused an operation.
    #[error("radix tree: {0}")]
    Radix(#[from] kho::RadixError),
    /// The root FDT could not be built.
    #[error("root FDT: {0}")]
    FdtBuild(#[from] kho::FdtBuildError),
    /// The old kernel's hook before the exec failed.
    #[error("before the exec: {0}")]
    BeforeExec(String),
    /// A peer scheme failed in the old kernel.
    #[error("scheme {scheme}: {reason}")]
    Scheme {
        /// The scheme.
        scheme: &'static str,
        /// Why.
        reason: String,
    },
    /// The setup_data list carries no KHO hand-over.
    #[error("no SETUP_KEXEC_KHO hand-over in the setup_data list at {0}")]
    NoHandover(PhysAddr),
}

// ---------------------------------------------------------------------------
// Old kernel

/// `kho_data.fdt_size`: the root FDT occupies (and is preserved as) one page.
pub const FDT_SIZE: u64 = PAGE_SIZE;

/// The workload's default seed.
pub const DEFAULT_SEED: u64 = 0x6b68_6f00;

/// The largest block the buddy allocator hands out (`MAX_PAGE_ORDER`,
/// 4 MiB): a manifest that may not fit is reserved from memblock instead.
pub const MAX_BUDDY_BYTES: u64 = PAGE_SIZE << MAX_PAGE_ORDER;

/// An upper bound of a manifest entry's encoded size: postcard varints of
/// the pfn (at most 10 bytes) and the checksum (10), and the order (1).
pub const MANIFEST_ENTRY_MAX_BYTES: u64 = 21;

/// An upper bound of the manifest blob's size for `max_blocks` entries
/// (header, seed and length varints, entries).
pub const fn manifest_max_bytes(max_blocks: u64) -> u64 {
    64u64.saturating_add(max_blocks.saturating_mul(MANIFEST_ENTRY_MAX_BYTES))
}

/// What both kernels reserve at boot on a machine with `ram_bytes` of RAM:
/// the low 1 MiB, and the kernel image at 16 MiB, 16 MiB long on machines
/// of 1 GiB and more, `ram / 64` (2 MiB aligned, at least 2 MiB) on smaller
/// ones so that a 64 MiB test machine keeps room for scratch (sized from
/// the kernel's reservations) and a workload. The new kernel is "loaded"
/// at the same place: the old kernel never preserves memory there.
pub fn kernel_boot_config(ram_bytes: u64) -> BootConfig {
    let size = ((ram_bytes / 64).clamp(2 * MIB, 16 * MIB) / (2 * MIB)) * (2 * MIB);
    let r = |s: u64, e: u64| PhysRange::new(PhysAddr::new(s), PhysAddr::new(e)).unwrap_or_default();
    BootConfig {
        kernel: r(16 * MIB, 16 * MIB + size),
        low_reserve: r(0, MIB),
    }
}

/// The old kernel's parameters.
#[derive(Debug, Clone)]
pub struct OldKernelConfig {
    /// Bytes of the machine (the PC layout's RAM, see [`MemoryLayout::pc`]).
    pub machine_size: u64,
    /// The new kernel's restore strategy.
    pub strategy: Strategy,
    /// The workloads' sizes (with `forget_pages`, the fault injection).
    pub scenario: Scenario,
    /// Seed of the workloads and of the data pattern.
    pub seed: u64,
    /// `kho_scratch=`.
    pub scratch: ScratchSizing,
    /// The binary to exec as the new kernel.
    pub image: PathBuf,
    /// Print the old kernel's phase times and sizes on stderr.
    pub trace: bool,
    /// The peer scheme that tracks the preserved memory (`None`: ours, the
    /// lock-free radix tree).
    pub scheme: Option<Arc<dyn PeerScheme>>,
}

impl OldKernelConfig {
    /// The `kho run` scenario for `machine_size` ([`Scenario::for_machine`]
    /// of the nominal size: a 16 GiB machine has a little less RAM, 16 GiB
    /// less its holes, and must still get the full scenario), the default
    /// seed and scratch sizing, no image.
    pub fn new(machine_size: u64, strategy: Strategy) -> Result<Self, LiveUpdateError> {
        MemoryLayout::pc(machine_size)?;
        Ok(Self {
            machine_size,
            strategy,
            scenario: Scenario::for_machine(machine_size),
            seed: DEFAULT_SEED,
            scratch: ScratchSizing::default(),
            image: PathBuf::new(),
            trace: false,
            scheme: None,
        })
    }
}

/// Everything the old kernel left behind at the exec: the memory and, for
/// tests and traces, where it put what.
#[derive(Debug)]
pub struct OldKernelImage {
    /// RAM.
    pub mem: PhysMem,
    /// The head of the setup_data list (the new kernel's `--setup-data`).
    pub setup_data: PhysAddr,
    /// The hand-over image in scratch: setup_data node and scratch array.
    pub handover: PhysRange,
    /// The root FDT page (`kho_data.fdt_addr`, [`FDT_SIZE`]).
    pub fdt: PhysRange,
    /// The radix tree's root (`preserved-memory-map`; with a peer scheme,
    /// its map: a chunk list head).
    pub radix_root: PhysAddr,
    /// The manifest (the workload's folios, forgotten ones included).
    pub manifest: Manifest,
    /// The manifest blob's bytes (the subnode's `preserved-data`,
    /// `blob-size`).
    pub manifest_blob: PhysRange,
    /// Every block preserved: the workload's, the manifest pages', the FDT
    /// page.
    pub preserved: Vec<Block>,
    /// The radix tree's own pages (kept from poison, never preserved; with
    /// a peer scheme, the peer's metadata pages).
    pub tree_pages: Vec<PhysAddr>,
    /// The scratch areas `[lowmem, global, node 0]`.
    pub scratch: ScratchAreas,
    /// The kernel's reservations scratch was sized from.
    pub kern: KernReserved,
    /// Bytes of the old kernel's memmap.
    pub memmap_bytes: u64,
    /// Pages overwritten with poison.
    pub poisoned_pages: u64,
    /// The phases' wall-clock times, ms, in order.
    pub phases: Vec<(&'static str, f64)>,
    /// What the peer scheme handed over (`None`: ours).
    pub peer: Option<PeerHandover>,
}

struct Phases {
    t: Instant,
    out: Vec<(&'static str, f64)>,
}

impl Phases {
    fn new() -> Self {
        Self {
            t: Instant::now(),
            out: Vec::new(),
        }
    }

    fn mark(&mut self, name: &'static str) {
        self.out.push((name, self.t.elapsed().as_secs_f64() * 1e3));
        self.t = Instant::now();
    }
}

/// The old kernel: boots the machine, runs the workloads, writes the
/// hand-over, poisons what is not preserved and execs the new kernel.
/// Returns only on failure.
pub fn old_kernel_main(cfg: &OldKernelConfig) -> LiveUpdateError {
    old_kernel_main_with(cfg, &mut |_| Ok(()))
}

/// [`old_kernel_main`] with a hook that sees the machine as the exec
/// leaves it: after the poison, just before the exec (`kho run
/// --dump-core` writes the memory image there). A hook error stops the
/// old kernel before the exec.
pub fn old_kernel_main_with(
    cfg: &OldKernelConfig,
    before_exec: &mut dyn FnMut(&OldKernelImage) -> Result<(), String>,
) -> LiveUpdateError {
    match old_kernel_boot(cfg) {
        Ok(img) => {
            if cfg.trace {
                trace(&img);
            }
            if let Err(reason) = before_exec(&img) {
                return LiveUpdateError::BeforeExec(reason);
            }
            let mut cmdline = new_kernel_cmdline(cfg.strategy);
            if let Some(s) = &cfg.scheme {
                cmdline.extend(["--scheme".into(), s.name().into()]);
            }
            kexec_exec(&img.mem, &cfg.image, img.setup_data, &cmdline).into()
        }
        Err(e) => e,
    }
}

fn trace(img: &OldKernelImage) {
    let total: f64 = img.phases.iter().map(|(_, ms)| ms).sum();
    let mut forbidden = img.scratch.as_slice().to_vec();
    forbidden.sort();
    let ram = img.mem.layout().ram();
    let ranges = kho::RamMap::new(ram, &forbidden).ok().and_then(|map| {
        let budget = kho::NodeBudget::for_ram(&map);
        kho::RadixReader::open(&img.mem, map, img.radix_root, kho::NodeSet::new(), budget)
            .ok()
            .map(|r| r.coalesce().count())
    });
    for (name, ms) in &img.phases {
        eprintln!("old kernel: {name:<32} {ms:>9.1} ms");
    }
    eprintln!("old kernel: {:<32} {total:>9.1} ms", "total");
    if let Some(p) = &img.peer {
        eprintln!(
            "old kernel: scheme finalize {:.3} ms, {} metadata pages",
            p.finalize_ms, p.metadata_pages
        );
    }
    eprintln!(
        "old kernel: kern reserved {} MiB (low {} MiB), memmap {} MiB, scratch {:?} ({} MiB)",
        img.kern.total / MIB,
        img.kern.below_low_limit / MIB,
        img.memmap_bytes / MIB,
        img.scratch.as_slice(),
        img.scratch.total() / MIB,
    );
    eprintln!(
        "old kernel: {} manifest entries ({} MiB), {} blocks preserved in {ranges:?} coalesced ranges, manifest blob {} KiB, {} tree pages, {} pages poisoned",
        img.manifest.entries.len(),
        img.manifest.preserved_bytes() / MIB,
        img.preserved.len(),
        img.manifest_blob.size() / 1024,
        img.tree_pages.len(),
        img.poisoned_pages,
    );
}

/// The new kernel's own boot parameters (after the hand-over arguments).
pub fn new_kernel_cmdline(strategy: Strategy) -> Vec<OsString> {
    vec!["--strategy".into(), strategy.as_str().into()]
}

/// Everything the old kernel does before the exec; returns the memory and
/// the setup_data address.
pub fn old_kernel_prepare(cfg: &OldKernelConfig) -> Result<(PhysMem, PhysAddr), LiveUpdateError> {
    old_kernel_boot(cfg).map(|img| (img.mem, img.setup_data))
}

/// Everything the old kernel does before the exec, in Linux's order:
///
/// 1. boot: `memblock_init` (RAM, low 1 MiB, kernel image as `RSRV_KERN`),
///    `alloc_memmap` (`sparse_init`: the memmap, `RSRV_KERN`);
/// 2. `kho_reserve_scratch`: sized from the `RSRV_KERN` reservations
///    ([`KernReserved::from_memblock`], 200 % by default), allocated top-down
///    from memblock and kept reserved, so the buddy never sees scratch;
/// 3. the replayed blocks (a trace, `dense`, `fragmented`) placed in free
///    memory by [`workload::place_blocks`] and reserved
///    ([`workload::replay_reserve`]); hugetlb's boot pool: the 1 GiB guest
///    folios from memblock (after the
///    scratch sizing: as memblock allocations they are `RSRV_KERN` and would
///    otherwise inflate scratch by twice their size); and, if the manifest
///    may not fit one buddy block ([`manifest_max_bytes`] of the scenario's
///    [`Scenario::max_blocks`] above [`MAX_BUDDY_BYTES`]), its space from
///    memblock, preserved as far as the blob reaches;
/// 4. `memmap_init`, the boot folios prepped, `memblock_free_all`: the buddy
///    is live;
/// 5. the workloads (VM guests, memfd checkpoint, forgotten pages), every
///    folio filled and preserved in a [`RadixTree`] whose pages come from
///    the buddy through a recording [`TreeAlloc`];
/// 6. the manifest blob written and preserved (`kho_preserve_pages`), the
///    root FDT built into a buddy page and preserved;
/// 7. the hand-over (setup_data + scratch array) at the top of the global
///    scratch area, like a kexec segment;
/// 8. poison over every populated page except the preserved blocks, the
///    tree pages and the hand-over image.
pub fn old_kernel_boot(cfg: &OldKernelConfig) -> Result<OldKernelImage, LiveUpdateError> {
    let layout = MemoryLayout::pc(cfg.machine_size)?;
    let mem = PhysMem::create(layout)?;
    let parts = boot_and_prepare(&mem, cfg)?;
    Ok(OldKernelImage {
        mem,
        setup_data: parts.setup_data,
        handover: parts.handover,
        fdt: parts.fdt,
        radix_root: parts.radix_root,
        manifest: parts.manifest,
        manifest_blob: parts.manifest_blob,
        preserved: parts.preserved,
        tree_pages: parts.tree_pages,
        scratch: parts.scratch,
        kern: parts.kern,
        memmap_bytes: parts.memmap_bytes,
        poisoned_pages: parts.poisoned_pages,
        phases: parts.phases,
        peer: parts.peer,
    })
}

struct Parts {
    setup_data: PhysAddr,
    handover: PhysRange,
    fdt: PhysRange,
    radix_root: PhysAddr,
    manifest: Manifest,
    manifest_blob: PhysRange,
    preserved: Vec<Block>,
    tree_pages: Vec<PhysAddr>,
    scratch: ScratchAreas,
    kern: KernReserved,
    memmap_bytes: u64,
    poisoned_pages: u64,
    phases: Vec<(&'static str, f64)>,
    peer: Option<PeerHandover>,
}

fn oom(what: &'static str, size: u64) -> LiveUpdateError {
    LiveUpdateError::OutOfMemory { what, size }
}

fn boot_and_prepare(mem: &PhysMem, cfg: &OldKernelConfig) -> Result<Parts, LiveUpdateError> {
    let mut phases = Phases::new();
    let scenario = &cfg.scenario;

    // 1-2. memblock, memmap, scratch.
    let mut m = Machine::new(mem, kernel_boot_config(mem.layout().ram_bytes()));
    m.memblock_init()?;
    m.alloc_memmap()?;
    let memmap_bytes = m.memmap().map_or(0, |mm| mm.footprint());
    let kern = KernReserved::from_memblock(&m.memblock);
    let scratch = kho_reserve_scratch(&cfg.scratch, &kern, &mut m.memblock)?;

    // 3. Boot-time allocations outside scratch (scratch is reserved): the
    // replayed blocks (a trace, dense, fragmented) placed and reserved, then
    // the 1 GiB boot folios.
    let replayed = workload::replay_reserve(&mut m.memblock, scenario)?;
    let gigantic = workload::vm_boot_alloc(&mut m.memblock, scenario.vm_1g_folios)?;
    let blob_bound = manifest_max_bytes(scenario.max_blocks()).next_multiple_of(PAGE_SIZE);
    let blob_reserved = if blob_bound > MAX_BUDDY_BYTES {
        let at = m
            .memblock
            .memblock_phys_alloc(blob_bound, PAGE_SIZE)
            .map_err(|_| oom("manifest (memblock)", blob_bound))?;
        Some(PhysRange::from_start_size(at, blob_bound).map_err(|_| oom("manifest", blob_bound))?)
    } else {
        None
    };
    phases.mark("memblock, memmap alloc, scratch");

    // 4. The buddy takes over.
    m.memmap_init()?;
    let memmap = m.memmap().ok_or(BootError::Phase {
        phase: "prep_bootmem_huge_folio",
        needs: "alloc_memmap",
    })?;
    workload::vm_boot_prep(memmap, &gigantic)?;
    m.memblock_free_all()?;
    let buddy = m.buddy().ok_or(BootError::Phase {
        phase: "workload",
        needs: "memblock_free_all",
    })?;
    phases.mark("memmap_init, memblock_free_all");

    // 5. The workloads.
    let tree_alloc = TreeAlloc::new(buddy);
    let tree = RadixTree::new(&tree_alloc)?;
    let mut p = Preserver::new(mem, tree.cursor(), &scratch, cfg.seed);
    workload::replay(&replayed, &mut p)?;
    workload::vm(buddy, &gigantic, scenario, &mut p)?;
    phases.mark("replay, vm workload");
    workload::memfd_checkpoint(buddy, scenario, cfg.seed, &mut p)?;
    workload::forget_pages(buddy, scenario.forget_pages, &mut p)?;
    phases.mark("memfd checkpoint workload");
    let (entries, mut preserved) = p.finish();
    let manifest = Manifest {
        seed: cfg.seed,
        entries,
    };

    // 6. The manifest blob and the root FDT, preserved.
    let blob_len = u64::try_from(manifest.to_bytes().len()).unwrap_or(u64::MAX);
    let blob_pages = blob_len.div_ceil(PAGE_SIZE);
    let blob_at = match blob_reserved {
        Some(r) if r.size() >= blob_len => r.start(),
        Some(_) => return Err(oom("manifest (over its bound)", blob_len)),
        None => alloc_pages_exact(buddy, blob_pages)?,
    };
    let manifest_blob = manifest.write(mem, blob_at)?;
    let blob_range = PhysRange::from_start_size(blob_at, blob_pages * PAGE_SIZE)
        .map_err(|_| oom("manifest", blob_len))?;
    scratch.check_preserve(blob_range)?;
    tree.preserve_pages(blob_at.pfn(), blob_pages)?;
    preserved.extend(split_pages(blob_at.pfn(), blob_pages)?);

    let fdt_at = buddy
        .alloc_pages(Order::ZERO)
        .map_err(|_| oom("root FDT", FDT_SIZE))?
        .phys();
    let fdt =
        PhysRange::from_start_size(fdt_at, FDT_SIZE).map_err(|_| oom("root FDT", FDT_SIZE))?;
    scratch.check_preserve(fdt)?;
    let fdt_block = Block::new(fdt_at, Order::ZERO).map_err(|_| oom("root FDT", FDT_SIZE))?;
    tree.preserve(fdt_block)?;
    preserved.push(fdt_block);
    // A peer scheme: the same blocks, in the same order, preserved through
    // it, then its finalize (kho_finalize: serialize, then the FDT).
    let peer_alloc = TreeAlloc::new(buddy);
    let (fdt_bytes, peer) = match &cfg.scheme {
        None => {
            let mut builder = KhoFdtBuilder::new(tree.root());
            builder.add_subnode(MANIFEST_NODE, manifest_blob.start(), manifest_blob.size());
            (builder.build()?, None)
        }
        Some(s) => {
            let subnodes = [(MANIFEST_NODE, manifest_blob.start(), manifest_blob.size())];
            let h = s
                .hand_over(&peer_alloc, &preserved, &subnodes)
                .map_err(|reason| LiveUpdateError::Scheme {
                    scheme: s.name(),
                    reason,
                })?;
            (h.fdt.clone(), Some(h))
        }
    };
    mem.page_at(fdt_at)?.zero();
    write_bytes(mem, fdt_at, &fdt_bytes)?;

    // 7. The hand-over, in scratch.
    let handover_at = handover_address(&scratch)?;
    let image = write_handover(mem, handover_at, PhysAddr::ZERO, fdt, scratch.as_slice())?;
    phases.mark("manifest, FDT, hand-over");

    // 8. Poison everything else (a peer scheme's radix tree above is
    // scratch work: its pages are poisoned, the peer's metadata is kept).
    let (tree_pages, radix_root) = match &peer {
        None => (tree_alloc.pages(), tree.root()),
        Some(h) => (peer_alloc.pages(), h.root),
    };
    let mut keep: Vec<PhysRange> = preserved.iter().filter_map(|b| b.range()).collect();
    keep.extend(
        tree_pages
            .iter()
            .filter_map(|&p| PhysRange::from_start_size(p, PAGE_SIZE).ok()),
    );
    keep.push(image.range);
    let poisoned_pages = poison(mem, &keep)?;
    phases.mark("poison");

    Ok(Parts {
        setup_data: image.setup_data,
        handover: image.range,
        fdt,
        radix_root,
        manifest,
        manifest_blob,
        preserved,
        tree_pages,
        scratch,
        kern,
        memmap_bytes,
        poisoned_pages,
        phases: phases.out,
        peer,
    })
}

/// `alloc_pages_exact`: `pages` contiguous pages from the buddy (a block of
/// the next order, split, its tail freed).
fn alloc_pages_exact(buddy: &Buddy<'_>, pages: u64) -> Result<PhysAddr, LiveUpdateError> {
    let bytes = pages * PAGE_SIZE;
    let order = Order::try_new(pages.max(1).next_power_of_two().ilog2())
        .ok()
        .filter(|o| o.as_u32() <= MAX_PAGE_ORDER)
        .ok_or(oom("manifest (above MAX_PAGE_ORDER)", bytes))?;
    let head = buddy
        .alloc_pages(order)
        .map_err(|_| oom("manifest", bytes))?;
    buddy
        .split_page(head, order)
        .map_err(|_| oom("manifest", bytes))?;
    for i in pages..order.pages() {
        let pfn = head.checked_add(i).ok_or(oom("manifest", bytes))?;
        buddy
            .free_pages(pfn, Order::ZERO)
            .map_err(|_| oom("manifest", bytes))?;
    }
    Ok(head.phys())
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
    /// The peer scheme the old kernel handed over with (`None`: ours).
    pub scheme: Option<Arc<dyn PeerScheme>>,
}

/// The new kernel: attaches RAM, reads the hand-over and boots
/// ([`new_kernel_boot`]).
pub fn new_kernel_main(cfg: &NewKernelConfig) -> Result<RunReport, LiveUpdateError> {
    let mem = cfg.handover.attach()?;
    let handover = read_setup_data(&mem, cfg.handover.setup_data);
    new_kernel_boot_scheme(&mem, handover, cfg.strategy, cfg.scheme.clone())
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
    new_kernel_boot_scheme(mem, handover, strategy, None)
}

/// [`new_kernel_boot`] of a handover written by `scheme` (`None`: ours):
/// the scheme parses the root FDT and accounts the preserved memory, the
/// rest of the boot is the same.
pub fn new_kernel_boot_scheme(
    mem: &PhysMem,
    handover: Result<Option<KhoHandover>, KexecError>,
    strategy: Strategy,
    scheme: Option<Arc<dyn PeerScheme>>,
) -> Result<RunReport, LiveUpdateError> {
    let scheme_name = scheme.as_ref().map(|s| s.name().to_owned());
    let mut m = Machine::new(mem, kernel_boot_config(mem.layout().ram_bytes()));
    m.memblock_init()?;
    let mut kho = match handover {
        Ok(Some(h)) => kho_populate_scheme(&mut m, &h, scheme),
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
    let mut b = Machine::new(mem, kernel_boot_config(mem.layout().ram_bytes()));
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
        scheme: scheme_name,
    })
}

/// The byte length of the manifest blob at `blob`, from its header.
fn manifest_size(mem: &PhysMem, blob: PhysAddr) -> Option<u64> {
    use zerocopy::FromBytes;
    let bytes = read_bytes(mem, blob, size_of::<ManifestHeader>()).ok()?;
    let h = ManifestHeader::read_from_bytes(&bytes).ok()?;
    h.len.get().checked_add(size_of::<ManifestHeader>() as u64)
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
    // kho-v1 subnodes carry no size (6.16's `fdt` names a self-describing
    // FDT): the manifest's header gives it.
    let Some((blob, size)) = k.subnode(MANIFEST_NODE) else {
        return (verified, preserved.saturating_sub(verified), 0);
    };
    let Some(size) = size.or_else(|| manifest_size(mem, blob)) else {
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
mod tests;
