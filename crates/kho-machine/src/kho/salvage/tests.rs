//! The salvage invariant on real handovers: an old kernel boots into a
//! [`PhysMem`], preserves its workloads and writes the handover; one byte
//! of it is flipped per class; the new kernel boots under salvage. Then
//! every preserved block is either restored with its data verified, or
//! inside a reported reserved span; every block outside the spans is
//! restored; the spans are reserved in memblock and in no free list.

use std::collections::HashMap;

use kho::{Block, KhoVersion, PhysRange};

use super::*;

use crate::boot::{BootConfig, Machine};
use crate::kexec::read_setup_data;
use crate::kho::{
    Kho, KhoError, OnCorruption, Strategy, kho_memory_init, kho_populate_with, kho_restore_folio,
};
use crate::liveupdate::{
    OldKernelConfig, OldKernelImage, corrupt_handover, kernel_boot_config, old_kernel_boot,
};
use crate::manifest::block_checksum;
use crate::memblock::MemblockRegion;
use crate::memmap::MemmapMode;
use crate::testing::MIB;

fn image(size: u64, abi: KhoVersion) -> OldKernelImage {
    let mut c = OldKernelConfig::new(size, Strategy::PerBlock).unwrap();
    c.seed = 11;
    c.abi = abi;
    old_kernel_boot(&c).unwrap()
}

/// The new kernel's boot of `img` up to a live buddy, as
/// `new_kernel_boot` runs it; with the reserved regions before
/// `memblock_free_all`.
fn boot<'m>(
    img: &'m OldKernelImage,
    strategy: Strategy,
    memmap: MemmapMode,
    mode: OnCorruption,
) -> (Machine<'m>, Kho, Vec<MemblockRegion>) {
    let config = BootConfig {
        memmap,
        ..kernel_boot_config(img.mem.layout().ram_bytes())
    };
    let mut m = Machine::new(&img.mem, config);
    m.memblock_init().unwrap();
    let h = read_setup_data(&img.mem, img.setup_data).unwrap().unwrap();
    let mut kho = kho_populate_with(&mut m, &h, None, mode);
    m.alloc_memmap().unwrap();
    if memmap == MemmapMode::Lazy {
        kho_memory_init(&mut m, &mut kho, strategy);
        m.set_skip(kho.skip_ranges());
        m.memmap_init().unwrap();
    } else {
        m.memmap_init().unwrap();
        kho_memory_init(&mut m, &mut kho, strategy);
        m.set_skip(kho.skip_ranges());
    }
    let reserved = m.memblock.reserved.regions().to_vec();
    m.memblock_free_all().unwrap();
    m.page_alloc_init_late().unwrap();
    (m, kho, reserved)
}

/// Whether `r` is wholly covered by the (sorted) reserved regions.
fn covered(regions: &[MemblockRegion], r: PhysRange) -> bool {
    let mut at = r.start();
    for g in regions {
        let g = g.range();
        if g.end() <= at {
            continue;
        }
        if g.start() > at {
            return false;
        }
        at = g.end();
        if at >= r.end() {
            return true;
        }
    }
    at >= r.end()
}

/// What one salvage boot of a corrupted image gave.
#[derive(Debug, Default)]
struct Outcome {
    restored: u64,
    restored_bytes: u64,
    in_spans: u64,
    in_spans_bytes: u64,
    spans: Vec<PhysRange>,
}

/// Boots `img` under salvage and checks the invariant; returns what was
/// kept and what lay under the damage.
fn check_salvage(img: &OldKernelImage, strategy: Strategy, memmap: MemmapMode) -> Outcome {
    let what = format!("{strategy} {memmap}");
    let (m, kho, reserved) = boot(img, strategy, memmap, OnCorruption::Salvage);
    assert!(!kho.damage().is_empty(), "{what}: damage reported");
    let spans: Vec<PhysRange> = kho::merge_ranges(kho.damage().iter().map(|d| d.span()).collect());
    let buddy = m.buddy().unwrap();
    let checksums: HashMap<Block, _> = img
        .manifest
        .entries
        .iter()
        .map(|e| (e.block, e.checksum))
        .collect();
    // Under the damage: a block of a damaged node's order in its span, or
    // any block when all RAM is damaged.
    let under = |b: &Block| {
        let r = b.range().unwrap();
        kho.damage()
            .iter()
            .any(|d| d.order.is_none_or(|o| o == b.order().as_u8()) && d.span().overlaps(r))
    };
    let mut out = Outcome {
        spans: spans.clone(),
        ..Outcome::default()
    };
    // Free blocks of the buddy, as ranges.
    let free: Vec<PhysRange> = buddy
        .free_lists()
        .unwrap()
        .into_iter()
        .flat_map(|(order, pfns)| {
            pfns.into_iter()
                .map(move |p| Block::from_pfn(p, order).unwrap().range().unwrap())
        })
        .collect();
    for b in &img.preserved {
        let r = b.range().unwrap();
        if under(b) {
            // Under the damage: reserved whole, never freed, never restored.
            assert!(
                covered(&reserved, r),
                "{what}: {b:?} under damage is reserved"
            );
            assert!(
                !free.iter().any(|f| f.overlaps(r)),
                "{what}: {b:?} under damage is in no free list"
            );
            assert!(
                matches!(
                    kho_restore_folio(buddy, b.phys()),
                    Err(KhoError::BadMagic { .. })
                ),
                "{what}: {b:?} under damage is not restorable"
            );
            out.in_spans += 1;
            out.in_spans_bytes += b.size();
        } else {
            // Outside every span: restored, its data intact.
            assert_eq!(
                kho_restore_folio(buddy, b.phys()),
                Ok((b.pfn(), b.order())),
                "{what}: {b:?} outside the damage is restored"
            );
            if let Some(c) = checksums.get(b) {
                assert_eq!(
                    block_checksum(&img.mem, *b).unwrap(),
                    *c,
                    "{what}: {b:?} data"
                );
            }
            out.restored += 1;
            out.restored_bytes += b.size();
        }
    }
    // The damaged spans (inside RAM, outside scratch and the kernel image)
    // are reserved and in no free list.
    let mut forbidden = img.scratch.as_slice().to_vec();
    forbidden.push(kernel_boot_config(img.mem.layout().ram_bytes()).kernel);
    let kept: Vec<PhysRange> = kho::merge_ranges(
        img.preserved
            .iter()
            .filter(|b| !under(b))
            .filter_map(|b| b.range())
            .collect(),
    );
    forbidden.extend_from_slice(&kept);
    let forbidden = kho::merge_ranges(forbidden);
    let mut bytes = 0;
    for s in &spans {
        for p in pieces(*s, img.mem.layout().ram(), &forbidden) {
            assert!(covered(&reserved, p), "{what}: span piece {p} reserved");
            assert!(
                !free.iter().any(|f| f.overlaps(p)),
                "{what}: span piece {p} in no free list"
            );
            bytes += p.size();
        }
    }
    assert!(
        kho.damage_reserved_bytes() >= bytes,
        "{what}: reserved bytes"
    );
    out
}

/// A subtree's damage is the subtree's span only: most blocks survive.
fn assert_partial(o: &Outcome, img: &OldKernelImage, class: CorruptClass) {
    assert!(
        o.in_spans > 0,
        "{class}: the damage covers preserved blocks"
    );
    assert!(
        o.restored > 0,
        "{class}: blocks outside the damage restored"
    );
    let ram = img.mem.layout().ram_bytes();
    let span: u64 = o.spans.iter().map(|s| s.size()).sum();
    assert!(span < ram, "{class}: the span {span:#x} is not all RAM");
}

#[test]
fn salvage_keeps_what_validates_and_reserves_the_damage() {
    for class in [CorruptClass::ChildPointer, CorruptClass::LeafWord] {
        for (abi, strategies) in [
            (KhoVersion::V3, &Strategy::ALL[..]),
            (KhoVersion::V4, &[Strategy::PerBlock, Strategy::Skip][..]),
        ] {
            for &s in strategies {
                let img = image(256 * MIB, abi);
                let c = corrupt_handover(&img, class).unwrap();
                assert_eq!(c.class, class);
                let o = check_salvage(&img, s, MemmapMode::Eager);
                assert_partial(&o, &img, class);
            }
        }
    }
}

#[test]
fn salvage_holds_in_every_memmap_mode() {
    for memmap in MemmapMode::ALL {
        for class in [CorruptClass::ChildPointer, CorruptClass::LeafWord] {
            let img = image(256 * MIB, KhoVersion::V3);
            corrupt_handover(&img, class).unwrap();
            let o = check_salvage(&img, Strategy::Bulk, memmap);
            assert_partial(&o, &img, class);
        }
    }
}

#[test]
fn a_damaged_fdt_reserves_all_ram_outside_scratch_and_boots_from_scratch() {
    // The root pointer's top byte: the tree does not open.
    let img = image(128 * MIB, KhoVersion::V3);
    let c = corrupt_handover(&img, CorruptClass::FdtProperty).unwrap();
    assert_eq!(c.old ^ c.new, 0xff);
    let o = check_salvage(&img, Strategy::PerBlock, MemmapMode::Eager);
    assert_eq!(o.restored, 0, "nothing restored");
    assert_eq!(o.in_spans as usize, img.preserved.len());
    // The FDT itself unparsable (its magic): KHO off, all RAM reserved.
    let img = image(128 * MIB, KhoVersion::V3);
    let fdt = img.fdt.start();
    crate::physio::write_bytes(&img.mem, fdt, &[0]).unwrap();
    let (m, kho, _) = boot(
        &img,
        Strategy::PerBlock,
        MemmapMode::Eager,
        OnCorruption::Salvage,
    );
    assert!(!kho.is_enabled());
    assert!(matches!(kho.error(), Some(KhoError::Fdt { .. })));
    assert_eq!(kho.damage().len(), 1);
    let buddy = m.buddy().unwrap();
    // The buddy has scratch only (minus what the boot took from it).
    let scratch: u64 = img.scratch.as_slice().iter().map(|r| r.size()).sum();
    assert!(buddy.nr_free_pages() * kho::PAGE_SIZE <= scratch);
    assert!(buddy.nr_free_pages() > 0);
    drop(m);
    let o = check_salvage(&img, Strategy::PerBlock, MemmapMode::Eager);
    assert_eq!(o.restored, 0);
}

#[test]
fn reject_is_linuxs_and_salvage_of_a_sound_handover_changes_nothing() {
    let img = image(128 * MIB, KhoVersion::V3);
    let free = |mode| {
        let (m, kho, reserved) = boot(&img, Strategy::PerBlock, MemmapMode::Eager, mode);
        assert!(kho.is_enabled(), "{mode}");
        assert!(kho.damage().is_empty());
        let mut l = m.buddy().unwrap().free_lists().unwrap();
        for (_, p) in &mut l {
            p.sort_unstable();
        }
        (l, reserved)
    };
    assert_eq!(free(OnCorruption::Reject), free(OnCorruption::Salvage));
    // A corrupt tree under reject: KHO off, no damage listed.
    let img = image(128 * MIB, KhoVersion::V3);
    corrupt_handover(&img, CorruptClass::ChildPointer).unwrap();
    let (_, kho, _) = boot(
        &img,
        Strategy::PerBlock,
        MemmapMode::Eager,
        OnCorruption::Reject,
    );
    assert!(!kho.is_enabled());
    assert!(matches!(kho.error(), Some(KhoError::Walk { .. })));
    assert!(kho.damage().is_empty());
}

#[test]
fn chunk_header_needs_a_kho_v1_handover() {
    let img = image(64 * MIB, KhoVersion::V3);
    let e = corrupt_handover(&img, CorruptClass::ChunkHeader).unwrap_err();
    assert!(e.contains("chunk"), "{e}");
}

#[test]
fn class_and_mode_names_round_trip() {
    for c in CorruptClass::ALL {
        assert_eq!(c.as_str().parse::<CorruptClass>(), Ok(c));
    }
    assert!("bit-rot".parse::<CorruptClass>().is_err());
    for m in OnCorruption::ALL {
        assert_eq!(m.as_str().parse::<OnCorruption>(), Ok(m));
    }
    assert!("ignore".parse::<OnCorruption>().is_err());
}
