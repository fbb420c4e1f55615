//! The old kernel: boots the machine, runs the workloads, preserves their
//! folios, writes the hand-over and execs the new kernel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use std::collections::HashSet;

use kho::{
    Block, KhoFdtBuilder, KhoVersion, LUO_KHO_ENTRY_NAME, Order, PAGE_SIZE, PageAlloc, PageMap,
    PhysAddr, PhysRange, RadixTree, split_pages,
};

use super::exec::{NewKernelArgs, OldKernelArgs, kexec_exec};
use super::luo::{LIVEUPDATE_NUM, LuoFileWritten, LuoFiles, preserve_sessions};
use super::{LiveUpdateError, MANIFEST_NODE, MIB, kernel_boot_config};
use crate::arena::{MemoryLayout, PhysMem};
use crate::boot::{BootError, Machine};
use crate::buddy::{Buddy, BuddyError, MAX_PAGE_ORDER};
use crate::kexec::write_handover;
use crate::kho::{
    CorruptClass, Corruption, OnCorruption, PeerHandover, PeerScheme, Strategy, inject_corruption,
};
use crate::manifest::{Manifest, poison};
use crate::memmap::MemmapMode;
use crate::physio::write_bytes;
use crate::preserve::{Preserver, TreeAlloc};
use crate::scratch::{KernReserved, ScratchAreas, ScratchSizing, kho_reserve_scratch};
use crate::workload::{self, FolioOwner, Scenario};

/// `kho_data.fdt_size`: the root FDT occupies (and is preserved as) one page.
pub(crate) const FDT_SIZE: u64 = PAGE_SIZE;

/// The workload's default seed.
pub const DEFAULT_SEED: u64 = 0x6b68_6f00;

/// The largest block the buddy allocator hands out (`MAX_PAGE_ORDER`,
/// 4 MiB): a manifest that may not fit is reserved from memblock instead.
pub(crate) const MAX_BUDDY_BYTES: u64 = PAGE_SIZE << MAX_PAGE_ORDER;

/// An upper bound of a manifest entry's encoded size: postcard varints of
/// the pfn (at most 10 bytes) and the checksum (10), and the order (1).
pub(crate) const MANIFEST_ENTRY_MAX_BYTES: u64 = 21;

/// An upper bound of the manifest blob's size for `max_blocks` entries
/// (header, seed and length varints, entries).
pub(crate) const fn manifest_max_bytes(max_blocks: u64) -> u64 {
    64u64.saturating_add(max_blocks.saturating_mul(MANIFEST_ENTRY_MAX_BYTES))
}

/// The old kernel's parameters.
#[derive(Debug, Clone)]
pub struct OldKernelConfig {
    /// Bytes of the machine (the PC layout's RAM, see [`MemoryLayout::pc`]).
    pub machine_size: u64,
    /// The new kernel's restore strategy.
    pub strategy: Strategy,
    /// The new kernel's struct-page configuration.
    pub memmap: MemmapMode,
    /// The new kernel's CPUs.
    pub threads: usize,
    /// Ours: the new kernel's `memmap_init` split over its CPUs.
    pub parallel_memmap_init: bool,
    /// The workloads' sizes (with `forget_pages`, the fault injection).
    pub scenario: Scenario,
    /// Seed of the workloads and of the data pattern.
    pub seed: u64,
    /// `kho_scratch=`.
    pub scratch: ScratchSizing,
    /// The binary to exec as the new kernel.
    pub image: PathBuf,
    /// Print the old kernel's phase times and sizes on stderr.
    pub print_phases: bool,
    /// The peer scheme that tracks the preserved memory (`None`: ours, the
    /// lock-free radix tree).
    pub scheme: Option<Arc<dyn PeerScheme>>,
    /// The handover's ABI: `kho-v4` (root `kho-v4`, the memfd checkpoint
    /// and the VM guests as LUO sessions, `super::luo`) or `kho-v3` (every
    /// folio preserved directly). A peer scheme writes its own format and
    /// no LUO sessions.
    pub abi: KhoVersion,
    /// What the new kernel does with a broken handover.
    pub on_corruption: OnCorruption,
    /// Fault injection: one byte of the handover flipped just before the
    /// exec ([`crate::inject_corruption`]), reported on stderr.
    pub corrupt: Option<CorruptClass>,
    /// Live updates of the chain (1: one; see the `chain` module).
    pub updates: u32,
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
            memmap: MemmapMode::Eager,
            threads: 1,
            parallel_memmap_init: false,
            scenario: Scenario::for_machine(machine_size),
            seed: DEFAULT_SEED,
            scratch: ScratchSizing::default(),
            image: PathBuf::new(),
            print_phases: false,
            scheme: None,
            abi: KhoVersion::V4,
            on_corruption: OnCorruption::Reject,
            corrupt: None,
            updates: 1,
        })
    }
}

impl OldKernelConfig {
    /// The old kernel of a command line: `scheme` is the tracker
    /// `args.scheme` names and `replay` the blocks of the trace `args.trace`
    /// names (both resolved by the caller: they live above this crate);
    /// `image` is the binary to exec as the new kernel.
    pub fn from_args(
        args: &OldKernelArgs,
        scheme: Option<Arc<dyn PeerScheme>>,
        replay: Option<Vec<Block>>,
        image: PathBuf,
    ) -> Result<Self, LiveUpdateError> {
        let mut cfg = Self::new(args.machine_size, args.strategy)?;
        cfg.scratch = args.kho_scratch;
        cfg.memmap = args.memmap;
        cfg.threads = args.threads;
        cfg.parallel_memmap_init = args.parallel_memmap_init;
        cfg.seed = args.seed;
        cfg.print_phases = args.print_phases;
        cfg.scheme = scheme;
        cfg.image = image;
        cfg.abi = args.abi;
        cfg.on_corruption = args.on_corruption;
        cfg.corrupt = args.corrupt;
        cfg.updates = args.updates;
        cfg.scenario = match replay {
            Some(replay) => Scenario {
                replay,
                ..Scenario::default()
            },
            None => Scenario::preset(args.workload, args.machine_size),
        };
        let s = &mut cfg.scenario;
        s.memfd_bytes = args
            .memfd_bytes
            .map_or(s.memfd_bytes, |b| b.next_multiple_of(PAGE_SIZE));
        s.vm_1g_folios = args.vm_1g_folios.unwrap_or(s.vm_1g_folios);
        s.vm_2m_folios = args.vm_2m_folios.unwrap_or(s.vm_2m_folios);
        s.forget_pages = args.forget_pages;
        Ok(cfg)
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
    /// The root FDT page (`kho_data.fdt_addr`, `FDT_SIZE`).
    pub fdt: PhysRange,
    /// The radix tree's root (`preserved-memory-map`; with a peer scheme,
    /// its map: a chunk list head).
    pub radix_root: PhysAddr,
    /// The manifest (the workload's folios, forgotten ones included).
    pub manifest: Manifest,
    /// The manifest blob's bytes (the subnode's `preserved-data`,
    /// `blob-size`).
    pub manifest_blob: PhysRange,
    /// The `LUO` subnode's header (`preserved-data`, `blob-size`), in a
    /// `kho-v4` run.
    pub luo: Option<PhysRange>,
    /// The files preserved through LUO, as written (`kho-v4`).
    pub luo_files: Vec<LuoFileWritten>,
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

impl OldKernelImage {
    /// `mem` before the old kernel ran: nothing placed yet.
    fn empty(mem: PhysMem) -> Self {
        Self {
            mem,
            setup_data: PhysAddr::ZERO,
            handover: PhysRange::default(),
            fdt: PhysRange::default(),
            radix_root: PhysAddr::ZERO,
            manifest: Manifest::default(),
            manifest_blob: PhysRange::default(),
            luo: None,
            luo_files: Vec::new(),
            preserved: Vec::new(),
            tree_pages: Vec::new(),
            scratch: ScratchAreas::default(),
            kern: KernReserved::default(),
            memmap_bytes: 0,
            poisoned_pages: 0,
            phases: Vec::new(),
            peer: None,
        }
    }
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

/// A hook that sees the machine as the exec leaves it ([`old_kernel_main`]).
pub type BeforeExec<'a> =
    dyn FnMut(&OldKernelImage) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + 'a;

/// The old kernel: boots the machine, runs the workloads, writes the
/// hand-over, poisons what is not preserved and execs the new kernel.
/// `before_exec` sees the machine as the exec leaves it: after the poison,
/// just before the exec (`kho run --dump-core` writes the memory image
/// there); its error stops the old kernel before the exec. Returns only on
/// failure.
pub fn old_kernel_main(cfg: &OldKernelConfig, before_exec: &mut BeforeExec<'_>) -> LiveUpdateError {
    match old_kernel_boot(cfg) {
        Ok(img) => {
            if cfg.print_phases {
                print_phases(&img);
            }
            if let Some(class) = cfg.corrupt {
                match corrupt_handover(&img, class) {
                    Ok(c) => eprintln!("old kernel: corrupted {c}"),
                    Err(e) => return LiveUpdateError::BeforeExec(format!("--corrupt {e}").into()),
                }
            }
            if let Err(e) = before_exec(&img) {
                return LiveUpdateError::BeforeExec(e);
            }
            let scheme = cfg.scheme.as_ref().map(|s| s.name());
            let args = NewKernelArgs {
                memmap: cfg.memmap,
                threads: cfg.threads,
                parallel_memmap_init: cfg.parallel_memmap_init,
                on_corruption: cfg.on_corruption,
                updates: cfg.updates,
                ..NewKernelArgs::new(&img.mem, img.setup_data, cfg.strategy, scheme)
            };
            kexec_exec(&img.mem, &cfg.image, &args).into()
        }
        Err(e) => e,
    }
}

/// `--corrupt`: flips one byte of `img`'s handover ([`inject_corruption`]),
/// avoiding leaves whose span holds the handover's own metadata (every
/// preserved block that is no workload folio: FDT, manifest, LUO pages).
pub fn corrupt_handover(img: &OldKernelImage, class: CorruptClass) -> Result<Corruption, String> {
    let folios: HashSet<Block> = img.manifest.entries.iter().map(|e| e.block).collect();
    let keep: Vec<Block> = img
        .preserved
        .iter()
        .copied()
        .filter(|b| !folios.contains(b))
        .collect();
    let mut forbidden = img.scratch.as_slice().to_vec();
    forbidden.push(kernel_boot_config(img.mem.layout().ram_bytes()).kernel);
    let forbidden = kho::merge_ranges(forbidden);
    inject_corruption(&img.mem, class, img.fdt, img.radix_root, &forbidden, &keep)
}

/// `--phases`: the old kernel's phase times and sizes, on stderr.
fn print_phases(img: &OldKernelImage) {
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

/// Everything the old kernel does before the exec, in Linux's order:
///
/// 1. boot: `memblock_init` (RAM, low 1 MiB, kernel image as `RSRV_KERN`),
///    `alloc_memmap` (`sparse_init`: the memmap, `RSRV_KERN`);
/// 2. `kho_reserve_scratch`: sized from the `RSRV_KERN` reservations
///    (`KernReserved::from_memblock`, 200 % by default), allocated top-down
///    from memblock and kept reserved, so the buddy never sees scratch;
/// 3. the replayed blocks (a trace, `dense`, `fragmented`) placed in free
///    memory by `workload::place_blocks` and reserved
///    (`workload::replay_reserve`); hugetlb's boot pool: the 1 GiB guest
///    folios from memblock (after the
///    scratch sizing: as memblock allocations they are `RSRV_KERN` and would
///    otherwise inflate scratch by twice their size); and, if the manifest
///    may not fit one buddy block (`manifest_max_bytes` of the scenario's
///    [`Scenario::max_blocks`] above `MAX_BUDDY_BYTES`), its space from
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
    let mut img = OldKernelImage::empty(PhysMem::create(layout)?);
    prepare(&mut img, cfg)?;
    Ok(img)
}

/// The old kernel's early boot alone (memblock, the memmap allocation and
/// the KHO scratch areas sized by `scratch`) on a machine of
/// `machine_size`: whether a machine that small can start at all, checked
/// before any kernel process runs. The workload is not run.
pub fn early_boot_fits(machine_size: u64, scratch: &ScratchSizing) -> Result<(), LiveUpdateError> {
    let layout = MemoryLayout::pc(machine_size)?;
    let mem = PhysMem::create(layout)?;
    let mut m = Machine::new(&mem, kernel_boot_config(mem.layout().ram_bytes()));
    m.memblock_init()?;
    m.alloc_memmap()?;
    let kern = KernReserved::from_memblock(&m.memblock);
    kho_reserve_scratch(scratch, &kern, &mut m.memblock)?;
    Ok(())
}

fn oom(what: &'static str, size: u64) -> LiveUpdateError {
    LiveUpdateError::OutOfMemory { what, size }
}

/// Fills `img` (see [`old_kernel_boot`]).
fn prepare(img: &mut OldKernelImage, cfg: &OldKernelConfig) -> Result<(), LiveUpdateError> {
    let mem = &img.mem;
    let mut phases = Phases::new();
    let scenario = &cfg.scenario;

    // 1-2. memblock, memmap, scratch.
    let mut m = Machine::new(mem, kernel_boot_config(mem.layout().ram_bytes()));
    m.memblock_init()?;
    m.alloc_memmap()?;
    img.memmap_bytes = m.memmap().map_or(0, |mm| mm.footprint());
    img.kern = KernReserved::from_memblock(&m.memblock);
    img.scratch = kho_reserve_scratch(&cfg.scratch, &img.kern, &mut m.memblock)?;
    let scratch = &img.scratch;

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
    m.memblock_free_all()?;
    let buddy = m.buddy().ok_or(BootError::Phase {
        phase: "workload",
        needs: "memblock_free_all",
    })?;
    // hugetlb_init -> gather_bootmem_prealloc runs after memblock_free_all.
    workload::vm_boot_prep(buddy.memmap(), &gigantic)?;
    phases.mark("memmap_init, memblock_free_all");

    // 5. The workloads.
    let tree_alloc = TreeAlloc::new(buddy);
    let tree = RadixTree::new(&tree_alloc)?;
    let mut p = Preserver::new(mem, tree.cursor(), scratch, cfg.seed);
    workload::replay(&replayed, &mut p)?;
    let luo_abi = cfg.abi == KhoVersion::V4 && cfg.scheme.is_none();
    let owner = if luo_abi {
        FolioOwner::Handler
    } else {
        FolioOwner::Direct
    };
    let vm = workload::vm(buddy, &gigantic, scenario, owner, &mut p)?;
    phases.mark("replay, vm workload");
    let ckpt = workload::memfd_checkpoint(buddy, scenario, cfg.seed, owner, &mut p)?;
    workload::forget_pages(buddy, scenario.forget_pages, &mut p)?;
    phases.mark("memfd checkpoint workload");
    // 5b. kho-v4: the handlers preserve their files' folios, arrays and
    // records; LUO its sessions and header.
    let luo = if luo_abi {
        let files = LuoFiles {
            memfd: &ckpt.blocks,
            guests: &vm.guest_pages,
        };
        let w = preserve_sessions(&tree, &files, LIVEUPDATE_NUM)?;
        for b in &w.preserved {
            scratch.check_preserve(b.range().unwrap_or_default())?;
        }
        p.preserved_by_handler(&w.preserved);
        phases.mark("LUO sessions");
        Some(w)
    } else {
        None
    };
    let (entries, mut preserved) = p.finish();
    img.manifest = Manifest {
        seed: cfg.seed,
        entries,
    };
    let manifest = &img.manifest;

    // 6. The manifest blob and the root FDT, preserved.
    let (manifest_blob, blob_blocks) =
        preserve_manifest(mem, buddy, &tree, scratch, manifest, blob_reserved)?;
    img.manifest_blob = manifest_blob;
    preserved.extend(blob_blocks);
    let (fdt, fdt_block) = preserve_fdt_page(buddy, &tree, scratch)?;
    img.fdt = fdt;
    preserved.push(fdt_block);
    // A peer scheme: the same blocks, in the same order, preserved through
    // it, then its finalize (kho_finalize: serialize, then the FDT).
    let peer_alloc = TreeAlloc::new(buddy);
    let (fdt_bytes, peer) = match &cfg.scheme {
        None => (
            root_fdt(
                tree.root(),
                cfg.abi,
                manifest_blob,
                luo.as_ref().map(|l| (l.header, l.size)),
            )?,
            None,
        ),
        Some(s) => {
            let subnodes = [(MANIFEST_NODE, manifest_blob.start(), manifest_blob.size())];
            let h = s
                .hand_over(&peer_alloc, &preserved, &subnodes)
                .map_err(|source| LiveUpdateError::Scheme {
                    scheme: s.name(),
                    source,
                })?;
            (h.fdt.clone(), Some(h))
        }
    };
    write_fdt(mem, fdt, &fdt_bytes)?;

    // 7. The hand-over, in scratch.
    let image = write_kexec_handover(mem, scratch, fdt)?;
    img.setup_data = image.setup_data;
    img.handover = image.range;
    phases.mark("manifest, FDT, hand-over");

    // 8. Poison everything else (a peer scheme's radix tree above is
    // scratch work: its pages are poisoned, the peer's metadata is kept).
    // The LUO writer's pages came from the tree's allocator: preserved
    // blocks, not tree pages.
    let luo_pages: HashSet<PhysAddr> = luo.iter().flat_map(|l| l.pages.iter().copied()).collect();
    img.luo = luo
        .as_ref()
        .and_then(|l| PhysRange::from_start_size(l.header, l.size).ok());
    img.luo_files = luo.map(|l| l.files).unwrap_or_default();
    (img.tree_pages, img.radix_root) = match &peer {
        None => (
            tree_alloc
                .pages()
                .into_iter()
                .filter(|p| !luo_pages.contains(p))
                .collect(),
            tree.root(),
        ),
        Some(h) => (peer_alloc.pages(), h.root),
    };
    img.poisoned_pages = poison_all_but(mem, &preserved, &img.tree_pages, image.range)?;
    phases.mark("poison");

    img.preserved = preserved;
    img.phases = phases.out;
    img.peer = peer;
    Ok(())
}

/// The manifest blob of `manifest` written and preserved
/// (`kho_preserve_pages` of its pages) in `tree`: into `reserved` (space
/// taken from memblock at boot) or buddy pages. Returns the blob's range
/// and the blocks preserved.
pub(crate) fn preserve_manifest<M: PageAlloc + PageMap>(
    mem: &PhysMem,
    buddy: &Buddy<'_>,
    tree: &RadixTree<M>,
    scratch: &ScratchAreas,
    manifest: &Manifest,
    reserved: Option<PhysRange>,
) -> Result<(PhysRange, Vec<Block>), LiveUpdateError> {
    let blob_len = u64::try_from(manifest.to_bytes().len()).unwrap_or(u64::MAX);
    let blob_pages = blob_len.div_ceil(PAGE_SIZE);
    let blob_at = match reserved {
        Some(r) if r.size() >= blob_len => r.start(),
        Some(_) => return Err(oom("manifest (over its bound)", blob_len)),
        None => buddy
            .alloc_pages_exact(blob_pages)
            .map_err(|e| match e {
                BuddyError::BadOrder { .. } => {
                    oom("manifest (above MAX_PAGE_ORDER)", blob_pages * PAGE_SIZE)
                }
                _ => oom("manifest", blob_pages * PAGE_SIZE),
            })?
            .phys(),
    };
    let blob = manifest.write(mem, blob_at)?;
    let blob_range = PhysRange::from_start_size(blob_at, blob_pages * PAGE_SIZE)
        .map_err(|_| oom("manifest", blob_len))?;
    scratch.check_preserve(blob_range)?;
    tree.preserve_pages(blob_at.pfn(), blob_pages)?;
    Ok((blob, split_pages(blob_at.pfn(), blob_pages)?.collect()))
}

/// The root FDT's page: a buddy page preserved in `tree` (order 0, as
/// `kho_alloc_preserve(PAGE_SIZE)`).
pub(crate) fn preserve_fdt_page<M: PageAlloc + PageMap>(
    buddy: &Buddy<'_>,
    tree: &RadixTree<M>,
    scratch: &ScratchAreas,
) -> Result<(PhysRange, Block), LiveUpdateError> {
    let fdt_at = buddy
        .alloc_pages(Order::ZERO)
        .map_err(|_| oom("root FDT", FDT_SIZE))?
        .phys();
    let fdt =
        PhysRange::from_start_size(fdt_at, FDT_SIZE).map_err(|_| oom("root FDT", FDT_SIZE))?;
    scratch.check_preserve(fdt)?;
    let block = Block::new(fdt_at, Order::ZERO).map_err(|_| oom("root FDT", FDT_SIZE))?;
    tree.preserve(block)?;
    Ok((fdt, block))
}

/// Our root FDT: `compatible` of `abi`, the tree's `root`, the manifest
/// subnode and, `kho-v4`, the `LUO` subnode naming its header and size.
pub(crate) fn root_fdt(
    root: PhysAddr,
    abi: KhoVersion,
    manifest_blob: PhysRange,
    luo: Option<(PhysAddr, u64)>,
) -> Result<Vec<u8>, LiveUpdateError> {
    let mut builder = KhoFdtBuilder::new(root).version(abi);
    builder.add_subnode(MANIFEST_NODE, manifest_blob.start(), manifest_blob.size());
    if let Some((header, size)) = luo {
        builder.add_subnode(LUO_KHO_ENTRY_NAME, header, size);
    }
    Ok(builder.build()?)
}

/// Writes `bytes` into the (zeroed) FDT page `fdt`.
pub(crate) fn write_fdt(
    mem: &PhysMem,
    fdt: PhysRange,
    bytes: &[u8],
) -> Result<(), LiveUpdateError> {
    mem.page_at(fdt.start())?.zero();
    write_bytes(mem, fdt.start(), bytes)?;
    Ok(())
}

/// The hand-over (setup_data node + scratch array) naming `fdt`, at the
/// last page of the global scratch area: a kexec segment placed in
/// scratch, as `kho_locate_mem_hole` places them.
pub(crate) fn write_kexec_handover(
    mem: &PhysMem,
    scratch: &ScratchAreas,
    fdt: PhysRange,
) -> Result<crate::kexec::HandoverImage, LiveUpdateError> {
    let at = handover_address(scratch)?;
    Ok(write_handover(
        mem,
        at,
        PhysAddr::ZERO,
        fdt,
        scratch.as_slice(),
    )?)
}

/// Poison over every populated page except the `preserved` blocks, the
/// `tree_pages` and the hand-over image; returns the pages poisoned.
pub(crate) fn poison_all_but(
    mem: &PhysMem,
    preserved: &[Block],
    tree_pages: &[PhysAddr],
    handover: PhysRange,
) -> Result<u64, LiveUpdateError> {
    let mut keep: Vec<PhysRange> = preserved.iter().filter_map(|b| b.range()).collect();
    keep.extend(
        tree_pages
            .iter()
            .filter_map(|&p| PhysRange::from_start_size(p, PAGE_SIZE).ok()),
    );
    keep.push(handover);
    Ok(poison(mem, &keep)?)
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
