//! The new kernel: boots from the hand-over, restores every preserved
//! folio and verifies it against the manifest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kho::{PAGE_SIZE, PhysAddr, PhysRange};

use super::exec::NewKernelArgs;
use super::luo::{LuoRestore, restore_luo};
use super::{LiveUpdateError, MANIFEST_NODE, RunReport, kernel_boot_config};
use crate::arena::PhysMem;
use crate::boot::{BootConfig, BootError, Machine};
use crate::buddy::Buddy;
use crate::kexec::{KHO_NODE_LEN, KexecError, KhoHandover, read_setup_data};
use crate::kho::{
    Kho, KhoError, KhoIn, OnCorruption, PeerScheme, Strategy, blob_pages, kho_memory_init,
    kho_populate_with, kho_preserved_order, kho_restore_folio, kho_restore_pages,
};
use crate::manifest::{Manifest, ManifestEntry, ManifestHeader, POISON, block_checksum};
use crate::memmap::MemmapMode;
use crate::physio::read_bytes;

/// The new kernel of `args`: attaches RAM, reads the hand-over and boots
/// ([`new_kernel_boot`]); `scheme` is the tracker `args.scheme` names
/// (resolved by the caller: the schemes live above this crate).
///
/// In a chained run (`args.updates` > 1, see the `chain` module) every
/// generation's report goes to `emit` as it is made; a generation before
/// the last then preserves everything it restored (and new folios) and
/// execs the next kernel, returning only on failure. The last generation's
/// report (or the only one) is returned, not emitted.
pub fn new_kernel_main(
    args: &NewKernelArgs,
    scheme: Option<Arc<dyn PeerScheme>>,
    emit: &mut dyn FnMut(&RunReport) -> std::io::Result<()>,
) -> Result<RunReport, LiveUpdateError> {
    let mem = args.attach()?;
    let handover = read_setup_data(&mem, args.setup_data);
    let config = NewKernelConfig {
        memmap: args.memmap,
        threads: args.threads,
        parallel_memmap_init: args.parallel_memmap_init,
    };
    if args.updates <= 1 {
        return new_kernel_boot_with(
            &mem,
            handover,
            args.strategy,
            config,
            scheme,
            args.on_corruption,
        );
    }
    super::chain::generation_main(&mem, handover, args, config, scheme, emit)
}

/// The most CPUs a new kernel's node is given (`--threads`).
pub const MAX_THREADS: u16 = 1024;

/// The new kernel's configuration: its struct-page init and its CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewKernelConfig {
    /// How struct pages are initialised ([`MemmapMode`]).
    pub memmap: MemmapMode,
    /// CPUs of the node: `deferred_init_memmap` splits over them.
    pub threads: usize,
    /// **Ours**: `memmap_init` split over the threads too.
    pub parallel_memmap_init: bool,
}

impl From<MemmapMode> for NewKernelConfig {
    /// `memmap` on one CPU.
    fn from(memmap: MemmapMode) -> Self {
        Self {
            memmap,
            threads: 1,
            parallel_memmap_init: false,
        }
    }
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

/// The new kernel's boot on `mem` with what `read_setup_data` returned,
/// in Linux's order (torvalds/linux@40735a68: `setup_arch` ->
/// `e820__memblock_setup`, `kho_populate`, `paging_init` -> `sparse_init`,
/// `zone_sizes_init` -> `free_area_init` -> `memmap_init`; then
/// `mm_core_init` -> `kho_memory_init`, `memblock_free_all`; later
/// `page_alloc_init_late`). `config` is the kernel configuration
/// ([`NewKernelConfig`], or just a [`MemmapMode`] on one CPU); the baseline
/// boot uses the same.
///
/// 1. `memblock_init`; [`kho_populate`](crate::kho::kho_populate) (a missing or broken hand-over
///    boots without KHO, [`RunReport::kho_error`] says why);
/// 2. `alloc_memmap` (from scratch: scratch-only); `memmap_init` per
///    `memmap` ([`MemmapMode`]: every struct page of memory, or those up to
///    `first_deferred_pfn`);
/// 3. [`kho_memory_init`] with `strategy` (release scratch, walk,
///    reservations, head info; deferred: the preserved blocks' struct pages
///    too). With [`MemmapMode::Lazy`] (ours) it runs before `memmap_init`,
///    which then leaves the preserved struct pages alone;
/// 4. `memblock_free_all` (scratch-only cleared, `memmap_init_reserved_pages`,
///    free ranges to the buddy allocator); `page_alloc_init_late`
///    (`deferred_init_memmap`); from then on the buddy allocator poisons
///    every block it hands out. Steps 2-4 but the KHO work are timed into
///    `mm_init_ms`;
/// 5. the KHO metadata restored with [`kho_restore_pages`] (the FDT page,
///    the manifest's pages), the manifest read from the [`MANIFEST_NODE`]
///    subnode, every listed folio restored with [`kho_restore_folio`] and
///    its checksum verified (a folio that fails either is lost);
/// 6. the baseline: a fresh boot of the same memory with nothing
///    preserved, in the same configuration, timed the same way
///    (`baseline_mm_init_ms`).
///
/// `scheme` is the tracker that wrote the handover (`None`: ours): it
/// parses the root FDT and accounts the preserved memory, the rest of the
/// boot is the same.
pub fn new_kernel_boot(
    mem: &PhysMem,
    handover: Result<Option<KhoHandover>, KexecError>,
    strategy: Strategy,
    config: impl Into<NewKernelConfig>,
    scheme: Option<Arc<dyn PeerScheme>>,
) -> Result<RunReport, LiveUpdateError> {
    new_kernel_boot_with(
        mem,
        handover,
        strategy,
        config,
        scheme,
        OnCorruption::Reject,
    )
}

/// [`new_kernel_boot`] with `on_corruption` (**ours**: under
/// [`OnCorruption::Salvage`] a broken handover keeps what validates; the
/// report lists the damage, [`RunReport::damage`]).
pub fn new_kernel_boot_with(
    mem: &PhysMem,
    handover: Result<Option<KhoHandover>, KexecError>,
    strategy: Strategy,
    config: impl Into<NewKernelConfig>,
    scheme: Option<Arc<dyn PeerScheme>>,
    on_corruption: OnCorruption,
) -> Result<RunReport, LiveUpdateError> {
    let booted = boot_and_restore_with(
        mem,
        handover,
        strategy,
        config.into(),
        scheme,
        on_corruption,
    )?;
    let mut report = booted.report;
    let config = booted.machine.config();
    drop(booted.machine);
    // The baseline: nothing preserved, the same configuration.
    let (baseline, pages) = baseline_boot(mem, config)?;
    report.baseline_mm_init_ms = ms(baseline);
    report.baseline_memmap_inited_pages = pages;
    Ok(report)
}

/// The baseline boot on `mem`: memblock, memmap, `memmap_init`,
/// `memblock_free_all`, `page_alloc_init_late` with nothing preserved, in
/// `config`; its timed part and the struct pages it initialised.
pub(crate) fn baseline_boot(
    mem: &PhysMem,
    config: BootConfig,
) -> Result<(Duration, u64), LiveUpdateError> {
    let mut b = Machine::new(mem, config);
    b.memblock_init()?;
    b.alloc_memmap()?;
    prefault_memmap(&b)?;
    let t = Instant::now();
    b.memmap_init()?;
    b.memblock_free_all()?;
    b.page_alloc_init_late()?;
    let baseline = t.elapsed();
    Ok((baseline, b.memmap().map_or(0, |mm| mm.inited_pages())))
}

/// A new kernel after the restore: its machine (the buddy live, the
/// restored folios live), its report without the baseline, and what it
/// restored.
pub(crate) struct Booted<'m> {
    /// The machine.
    pub machine: Machine<'m>,
    /// The report; `baseline_*` are 0 until a baseline boot fills them.
    pub report: RunReport,
    /// The handover as validated, `None` if the boot went without KHO.
    pub incoming: Option<KhoIn>,
    /// What the restore verified.
    pub restored: Verified,
}

/// Steps 1-5 of [`new_kernel_boot`].
pub(crate) fn boot_and_restore<'m>(
    mem: &'m PhysMem,
    handover: Result<Option<KhoHandover>, KexecError>,
    strategy: Strategy,
    k: NewKernelConfig,
    scheme: Option<Arc<dyn PeerScheme>>,
) -> Result<Booted<'m>, LiveUpdateError> {
    boot_and_restore_with(mem, handover, strategy, k, scheme, OnCorruption::Reject)
}

/// [`boot_and_restore`] with `on_corruption` ([`new_kernel_boot_with`]).
pub(crate) fn boot_and_restore_with<'m>(
    mem: &'m PhysMem,
    handover: Result<Option<KhoHandover>, KexecError>,
    strategy: Strategy,
    k: NewKernelConfig,
    scheme: Option<Arc<dyn PeerScheme>>,
    on_corruption: OnCorruption,
) -> Result<Booted<'m>, LiveUpdateError> {
    let scheme_name = scheme.as_ref().map(|s| s.name().to_owned());
    let memmap = k.memmap;
    let config = BootConfig {
        memmap,
        threads: k.threads.max(1),
        parallel_memmap_init: k.parallel_memmap_init,
        ..kernel_boot_config(mem.layout().ram_bytes())
    };
    let mut m = Machine::new(mem, config);
    m.memblock_init()?;
    // x86's early_reserve_memory -> memblock_x86_reserve_range_setup_data
    // (torvalds/linux@007b75605338 arch/x86/kernel/setup.c): every
    // setup_data node stays reserved, `sizeof(*data) + data->len` bytes.
    if let Ok(Some(h)) = &handover {
        m.memblock
            .memblock_reserve(h.node, KHO_NODE_LEN)
            .map_err(BootError::Memblock)?;
    }
    let mut kho = match handover {
        Ok(Some(h)) => kho_populate_with(&mut m, &h, scheme, on_corruption),
        Ok(None) => Kho::disabled(KhoError::NoHandover),
        Err(e) => Kho::disabled(KhoError::Handover(e)),
    };
    m.alloc_memmap()?;
    prefault_memmap(&m)?;
    let (init, memmap_init) = if memmap == MemmapMode::Lazy {
        // Ours: the preserved memory is known before memmap_init.
        let init = kho_memory_init(&mut m, &mut kho, strategy);
        m.set_skip(kho.skip_ranges());
        let t = Instant::now();
        m.memmap_init()?;
        (init, t.elapsed())
    } else {
        let t = Instant::now();
        m.memmap_init()?;
        let memmap_init = t.elapsed();
        let init = kho_memory_init(&mut m, &mut kho, strategy);
        m.set_skip(kho.skip_ranges());
        (init, memmap_init)
    };
    let t = Instant::now();
    m.memblock_free_all()?;
    let free_all = t.elapsed();
    let t = Instant::now();
    m.page_alloc_init_late()?;
    let deferred = t.elapsed();
    let mm_init = memmap_init + free_all + deferred;
    let buddy = m.buddy().ok_or(BootError::Phase {
        phase: "restore",
        needs: "memblock_free_all",
    })?;
    let memmap_inited_pages = buddy.memmap().inited_pages();
    buddy.set_poison_on_alloc(true);

    let damage = kho.damage().to_vec();
    let damage_reserved_bytes = kho.damage_reserved_bytes();
    let v = match kho.incoming() {
        Some(k) => restore_and_verify(mem, buddy, k, init.bytes),
        None => Verified::default(),
    };
    let restore_inited_pages = buddy.memmap().inited_pages() - memmap_inited_pages;
    let report = RunReport {
        strategy,
        memmap,
        threads: config.threads,
        parallel_memmap_init: config.parallel_memmap_init,
        blocks: init.blocks,
        preserved_bytes: init.bytes.saturating_add(v.unpreserved),
        walk_ms: ms(init.walk),
        memblock_ms: ms(init.memblock),
        mm_init_ms: ms(mm_init),
        deferred_init_ms: ms(deferred),
        baseline_mm_init_ms: 0.0,
        memmap_inited_pages,
        baseline_memmap_inited_pages: 0,
        restore_inited_pages,
        verified_bytes: v.verified,
        lost_bytes: v.lost,
        memblock_reserved_regions: init.reserved_regions,
        kho_error: kho.error().map(|e| e.to_string()),
        scheme: scheme_name,
        luo_files: v.luo.files.clone(),
        luo_error: v.luo.error.clone(),
        on_corruption,
        damage,
        damage_reserved_bytes,
        chain: None,
    };
    let mut restored = v;
    restored.tree_pages = init.nodes;
    Ok(Booted {
        incoming: kho.incoming().cloned(),
        machine: m,
        report,
        restored,
    })
}

/// The byte length of the manifest blob at `blob`, from its header.
fn manifest_size(mem: &PhysMem, blob: PhysAddr) -> Option<u64> {
    use zerocopy::FromBytes;
    let bytes = read_bytes(mem, blob, size_of::<ManifestHeader>()).ok()?;
    let h = ManifestHeader::read_from_bytes(&bytes).ok()?;
    h.len.get().checked_add(size_of::<ManifestHeader>() as u64)
}

/// What [`restore_and_verify`] found.
#[derive(Debug, Default)]
pub(crate) struct Verified {
    /// Bytes whose contents matched the manifest (metadata included).
    pub verified: u64,
    /// Bytes that did not, or could not be restored.
    pub lost: u64,
    /// Bytes of manifest folios that are no preserved head at all (lost,
    /// and added to the preserved bytes so that verified + lost =
    /// preserved).
    pub unpreserved: u64,
    /// The LUO files (their verified folios among them).
    pub luo: LuoRestore,
    /// The manifest's seed (`None`: no manifest read).
    pub seed: Option<u64>,
    /// The manifest entries the manifest path restored and verified (the
    /// LUO files' folios are in `luo`).
    pub direct: Vec<ManifestEntry>,
    /// The manifest blob's pages restored.
    pub manifest_pages: u64,
    /// Radix tree pages the walk entered (filled by the boot).
    pub tree_pages: u64,
}

/// Restores the metadata and every manifest folio; `preserved` is what
/// the walk found: if the manifest cannot be read, whatever was not
/// verified is lost.
fn restore_and_verify(mem: &PhysMem, buddy: &Buddy<'_>, k: &KhoIn, preserved: u64) -> Verified {
    let mut v = Verified::default();
    // The FDT page: it parsed in kho_populate.
    match kho_restore_pages(buddy, k.fdt.start(), 1) {
        Ok(_) => v.verified += PAGE_SIZE,
        Err(_) => v.lost += PAGE_SIZE,
    }
    let unread = |mut v: Verified| {
        v.lost = preserved.saturating_sub(v.verified);
        v
    };
    // kho-v1 subnodes carry no size (6.16's `fdt` names a self-describing
    // FDT): the manifest's header gives it.
    let Some((blob, size)) = k.subnode(MANIFEST_NODE) else {
        return unread(v);
    };
    let Some(size) = size.or_else(|| manifest_size(mem, blob)) else {
        return unread(v);
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
        return unread(v);
    };
    v.verified += nr * PAGE_SIZE;
    v.manifest_pages = nr;
    v.seed = Some(manifest.seed);
    // One owner per folio: a LUO file's folios are restored there.
    v.luo = restore_luo(mem, buddy, k, &manifest);
    v.verified += v.luo.verified;
    v.lost += v.luo.lost;
    v.unpreserved += v.luo.unpreserved;
    for e in &manifest.entries {
        if v.luo.owns(e.block.phys()) {
            continue;
        }
        let restored = kho_restore_folio(buddy, e.block.phys());
        if matches!(restored, Err(KhoError::BadMagic { .. })) {
            v.unpreserved += e.block.size();
        }
        let ok = restored.is_ok_and(|(_, order)| order == e.block.order())
            && block_checksum(mem, e.block).is_ok_and(|c| c == e.checksum);
        if ok {
            v.verified += e.block.size();
            v.direct.push(*e);
        } else {
            v.lost += e.block.size();
        }
    }
    v
}
