//! Chained live updates (`kho run --updates N`): each new kernel restores
//! and verifies every byte, then becomes the old kernel of the next update.
//!
//! ```text
//!  driver          old kernel        new kernel 1             new kernel 2   ...   new kernel N
//!  spawn ────────▶ boot, preserve ─▶ restore, verify;        restore, verify;      restore, verify
//!                  exec              preserve again + new;    ... exec              (last: no exec)
//!                                    print report 1, exec ──▶ print report 2 ─▶ ... print report N
//!  N JSON lines ◀────────────────────────────────────────────────────────────────────────────────
//! ```
//!
//! Every kernel is one process image: `__new-kernel ... --updates N
//! --generation G` execs `--generation G+1` with the same PID, passing on
//! the memfd it inherited (the descriptor it reopened is close-on-exec).
//!
//! # What a generation does before its exec, as Linux does it
//!
//! Sources: torvalds/linux@40735a683bf8 `kernel/liveupdate/kexec_handover.c`,
//! torvalds/linux@0153094d03df `kernel/liveupdate/luo_core.c`.
//!
//! - **Scratch is the incoming scratch.** `kho_memory_init` calls
//!   `kho_reserve_scratch` only on a cold boot; a kernel booted by KHO
//!   takes the incoming array (`kho_scratch =
//!   phys_to_virt(kho_in.scratch_phys)`), marks the areas `MIGRATE_CMA`
//!   (`kho_release_scratch`) and hands the same array to the next kexec
//!   (`kho_fill_kimage`). So scratch cannot drift: every generation hands
//!   over the areas the first old kernel reserved, and the report shows
//!   them per generation.
//! - **Nothing unmovable lands in scratch.** Scratch pageblocks are
//!   `MIGRATE_CMA`: the tree's pages (`get_zeroed_page(GFP_KERNEL)`), the
//!   FDT and LUO pages (`kho_alloc_preserve`) and pinned folios never come
//!   from them, and `kho_preserve_folio` refuses a folio there
//!   (`kho_scratch_overlap`). Our buddy allocator has one migrate type, so
//!   this module models `MIGRATE_CMA` by holding every free scratch page
//!   (allocated, never used) before the generation allocates anything
//!   (**ours**, [`hold_scratch`]).
//! - **The restored folios are preserved again** with their orders (the
//!   manifest path's folios with `kho_preserve_folio`; the LUO files'
//!   through their handlers again), with the checksums the first writer
//!   recorded; plus [`NEW_FOLIO_ORDERS`] new folios of a small workload,
//!   filled and listed. A folio that failed its check is lost and not
//!   carried on.
//! - **A new tree, FDT and LUO header**: `kho_init` allocates a new tree
//!   root and FDT in every kernel; the LUO header counts
//!   `liveupdate_num` = the incoming count + 1 (`luo_fdt_setup`). The
//!   previous generation's metadata pages were restored and are not
//!   preserved again, so metadata does not accumulate.
//! - **The hand-over** (setup_data + scratch array) goes to the last page
//!   of the global scratch area, where the first old kernel put it: this
//!   kernel's `kho_populate` reserved that page (the scratch array), and
//!   writing it just before the exec is the kexec's segment copy.
//!
//! # The baseline
//!
//! A single live update times a baseline boot (nothing preserved) on the
//! same memory after the restore. In a chain that memory holds what the
//! next generation restores, so every generation (the last included, for
//! comparable rows) boots its baseline on fresh RAM of the same layout
//! instead (**ours**; the same configuration and pre-faulted memmap, so
//! the same work is timed).

use std::sync::Arc;

use kho::{Block, KhoVersion, Order, PAGE_SIZE, RadixTree};

use super::exec::{ExecError, NewKernelArgs, exec_new_kernel};
use super::luo::preserve_sessions;
use super::new_kernel::{Booted, NewKernelConfig, baseline_boot, boot_and_restore};
use super::old_kernel::{
    poison_all_but, preserve_fdt_page, preserve_manifest, root_fdt, write_fdt, write_kexec_handover,
};
use super::report::Generation;
use super::{LiveUpdateError, RunReport};
use crate::arena::PhysMem;
use crate::buddy::{Buddy, BuddyError, MAX_PAGE_ORDER};
use crate::kexec::{KexecError, KhoHandover};
use crate::kho::PeerScheme;
use crate::manifest::Manifest;
use crate::preserve::{Preserver, TreeAlloc};
use crate::scratch::ScratchAreas;

/// The most live updates one chain runs.
pub const MAX_UPDATES: u32 = 1000;

/// The orders of the folios each generation adds: orders the default
/// workload already uses, so that they join existing tree leaves.
pub(crate) const NEW_FOLIO_ORDERS: [u8; 4] = [0, 2, 3, 4];

/// What a generation preserved for the next one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Carried {
    /// Folios restored, verified and preserved again.
    pub carried: u64,
    /// Folios added.
    pub new: u64,
    /// The head of the setup_data list written (the next `--setup-data`;
    /// 0: nothing handed over).
    pub setup_data: kho::PhysAddr,
}

/// Generation `args.generation` of a chain of `args.updates`: boots and
/// restores (the report's `chain` filled), times the baseline on fresh
/// RAM, and, before the last generation, preserves everything again,
/// `emit`s the report and execs the next kernel (returning only on
/// failure). The last generation's report, or that of a generation that
/// booted without KHO (the chain cannot go on), is returned.
pub(crate) fn generation_main(
    mem: &PhysMem,
    handover: Result<Option<KhoHandover>, KexecError>,
    args: &NewKernelArgs,
    config: NewKernelConfig,
    scheme: Option<Arc<dyn PeerScheme>>,
    emit: &mut dyn FnMut(&RunReport) -> std::io::Result<()>,
) -> Result<RunReport, LiveUpdateError> {
    if scheme.is_some() {
        return Err(ExecError::BadArg {
            what: "scheme (a chained run needs our tracker, kho)",
            value: args.scheme.clone(),
        }
        .into());
    }
    let booted = boot_and_restore(mem, handover, args.strategy, config, None)?;
    let fresh = PhysMem::create(mem.layout().clone())?;
    let (baseline, pages) = baseline_boot(&fresh, booted.machine.config())?;
    drop(fresh);
    let mut report = booted.report.clone();
    report.baseline_mm_init_ms = baseline.as_secs_f64() * 1e3;
    report.baseline_memmap_inited_pages = pages;
    let mut generation = Generation {
        generation: args.generation,
        updates: args.updates,
        liveupdate_num: booted.restored.luo.liveupdate_num,
        tree_pages: booted.restored.tree_pages,
        luo_pages: booted.restored.luo.structure_pages,
        manifest_pages: booted.restored.manifest_pages,
        ..Generation::default()
    };
    if let Some(k) = &booted.incoming {
        generation.fdt_pages = k.fdt.size().div_ceil(PAGE_SIZE);
        generation.scratch = k
            .scratch
            .iter()
            .map(|r| (r.start().as_u64(), r.size()))
            .collect();
    }
    report.chain = Some(generation);
    if args.generation >= args.updates || booted.incoming.is_none() {
        return Ok(report);
    }
    let carried = preserve_again(mem, &booted, args.generation)?;
    debug_assert_ne!(carried.setup_data, kho::PhysAddr::ZERO);
    if let Some(g) = report.chain.as_mut() {
        g.carried_folios = carried.carried;
        g.new_folios = carried.new;
    }
    drop(booted);
    emit(&report).map_err(|source| ExecError::Io {
        what: "writing the generation's report",
        source,
    })?;
    let image = std::env::current_exe().map_err(|source| ExecError::Io {
        what: "locating this binary for the next kexec",
        source,
    })?;
    // The memfd this process inherited (still open, not close-on-exec);
    // the handover is where the first old kernel put it.
    let next = NewKernelArgs {
        generation: args.generation + 1,
        setup_data: carried.setup_data,
        ..args.clone()
    };
    Err(exec_new_kernel(&image, &next).into())
}

/// The generation as the next update's old kernel (see the module doc):
/// scratch held, every verified folio preserved again, new folios, the
/// LUO sessions again, manifest, root FDT, hand-over, poison. After it the
/// memory is as the exec leaves it (the machine's own struct pages
/// poisoned: only the exec may follow).
pub(crate) fn preserve_again(
    mem: &PhysMem,
    booted: &Booted<'_>,
    generation: u32,
) -> Result<Carried, LiveUpdateError> {
    let Some(k) = &booted.incoming else {
        return Ok(Carried::default());
    };
    let buddy = booted
        .machine
        .buddy()
        .ok_or(crate::boot::BootError::Phase {
            phase: "the next handover",
            needs: "memblock_free_all",
        })?;
    let restored = &booted.restored;
    let scratch = ScratchAreas::from_ranges(k.scratch.clone());
    hold_scratch(buddy, &scratch)?;

    let tree_alloc = TreeAlloc::new(buddy);
    let tree = RadixTree::new(&tree_alloc)?;
    let mut entries = Vec::new();
    let mut preserved = Vec::new();
    // The manifest path's folios, as they were.
    for e in &restored.direct {
        scratch.check_preserve(e.block.range().unwrap_or_default())?;
        tree.preserve(e.block)?;
        entries.push(*e);
        preserved.push(e.block);
    }
    let mut carried = Carried {
        carried: restored.direct.len() as u64,
        ..Carried::default()
    };
    // The new folios: a small workload's, filled under a seed of this
    // generation (the manifest keeps every folio's own checksum).
    let seed = restored.seed.unwrap_or_default();
    let gen_seed = seed ^ (u64::from(generation) << 32);
    let mut new_blocks = Vec::with_capacity(NEW_FOLIO_ORDERS.len());
    for o in NEW_FOLIO_ORDERS {
        let order = Order::new(o);
        let pfn = buddy
            .folio_alloc(order)
            .map_err(|_| LiveUpdateError::OutOfMemory {
                what: "a new folio of the generation",
                size: order.pages() * PAGE_SIZE,
            })?;
        new_blocks.push(
            Block::from_pfn(pfn, order).map_err(|_| LiveUpdateError::OutOfMemory {
                what: "a new folio of the generation",
                size: order.pages() * PAGE_SIZE,
            })?,
        );
    }
    let mut p = Preserver::new(mem, tree.cursor(), &scratch, gen_seed);
    p.folios(&new_blocks)
        .map_err(|e| LiveUpdateError::Workload(e.into()))?;
    let (new_entries, new_preserved) = p.finish();
    carried.new = new_entries.len() as u64;
    entries.extend(new_entries);
    preserved.extend(new_preserved);
    // The LUO files through their handlers again, one more live update.
    let luo = match (k.version, restored.luo.liveupdate_num) {
        (KhoVersion::V4, Some(num)) => {
            let again = restored.luo.files_again();
            let w = preserve_sessions(&tree, &again.files(), num.saturating_add(1))?;
            for b in &w.preserved {
                scratch.check_preserve(b.range().unwrap_or_default())?;
            }
            carried.carried += again.entries.len() as u64;
            entries.extend(again.entries);
            preserved.extend(w.preserved.iter().copied());
            Some((w.header, w.size))
        }
        _ => None,
    };
    let manifest = Manifest { seed, entries };
    let (blob, blob_blocks) = preserve_manifest(mem, buddy, &tree, &scratch, &manifest, None)?;
    preserved.extend(blob_blocks);
    let (fdt, fdt_block) = preserve_fdt_page(buddy, &tree, &scratch)?;
    preserved.push(fdt_block);
    write_fdt(mem, fdt, &root_fdt(tree.root(), k.version, blob, luo)?)?;
    let image = write_kexec_handover(mem, &scratch, fdt)?;
    poison_all_but(mem, &preserved, &tree_alloc.pages(), image.range)?;
    carried.setup_data = image.setup_data;
    Ok(carried)
}

/// **Ours**: `MIGRATE_CMA` for scratch. Takes every free block of the
/// buddy allocator; keeps (allocated, unused) the pages inside scratch and
/// gives every other page back, so that no allocation of this generation
/// can land in scratch. A block that straddles a scratch boundary is split
/// into pages. Returns the pages held.
pub(crate) fn hold_scratch(
    buddy: &Buddy<'_>,
    scratch: &ScratchAreas,
) -> Result<u64, LiveUpdateError> {
    let poison = buddy.poison_on_alloc();
    buddy.set_poison_on_alloc(false);
    let mut give_back: Vec<(kho::Pfn, Order)> = Vec::new();
    let mut held = 0u64;
    let in_scratch = |b: Block| b.range().is_some_and(|r| scratch.overlap(r).is_some());
    let inside = |b: Block| {
        b.range().is_some_and(|r| {
            scratch
                .as_slice()
                .iter()
                .any(|a| a.start() <= r.start() && r.end() <= a.end())
        })
    };
    let mut result = Ok(());
    'orders: for o in (0..=MAX_PAGE_ORDER).rev() {
        let order = Order::new(o as u8);
        loop {
            let pfn = match buddy.alloc_pages(order) {
                Ok(p) => p,
                Err(BuddyError::NoMemory { .. }) => break,
                Err(e) => {
                    result = Err(e);
                    break 'orders;
                }
            };
            let Ok(block) = Block::from_pfn(pfn, order) else {
                give_back.push((pfn, order));
                continue;
            };
            if !in_scratch(block) {
                give_back.push((pfn, order));
            } else if inside(block) {
                held += order.pages();
            } else {
                if let Err(e) = buddy.split_page(pfn, order) {
                    result = Err(e);
                    break 'orders;
                }
                for page in block_pages(block) {
                    if in_scratch(page) {
                        held += 1;
                    } else {
                        give_back.push((page.pfn(), Order::ZERO));
                    }
                }
            }
        }
    }
    for (pfn, order) in give_back {
        if let Err(e) = buddy.free_pages(pfn, order) {
            result = result.and(Err(e));
        }
    }
    buddy.set_poison_on_alloc(poison);
    result.map_err(crate::boot::BootError::Buddy)?;
    Ok(held)
}

/// The order-0 pages of `block`.
fn block_pages(block: Block) -> impl Iterator<Item = Block> {
    let start = block.pfn();
    (0..block.order().pages()).filter_map(move |i| {
        start
            .checked_add(i)
            .and_then(|p| Block::from_pfn(p, Order::ZERO).ok())
    })
}

#[cfg(test)]
mod tests;
