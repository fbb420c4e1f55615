use std::sync::atomic::Ordering as AtomicOrdering;

use kho::{KhoVersion, PhysAddr};

use super::*;
use crate::buddy::Buddy;
use crate::kexec::read_setup_data;
use crate::kho::Strategy;
use crate::liveupdate::{OldKernelConfig, old_kernel_boot};
use crate::memmap::MemmapMode;

const MIB: u64 = 1 << 20;

fn old_kernel(abi: KhoVersion) -> crate::liveupdate::OldKernelImage {
    let mut c = OldKernelConfig::new(64 * MIB, Strategy::Bulk).unwrap();
    c.abi = abi;
    old_kernel_boot(&c).unwrap()
}

/// One generation in process: boot and restore from `setup_data`, then
/// (unless `last`) preserve again. The report and, for a next generation,
/// what was carried.
fn generation(
    mem: &PhysMem,
    setup_data: PhysAddr,
    strategy: Strategy,
    n: u32,
) -> (RunReport, Vec<crate::manifest::ManifestEntry>, Carried) {
    let h = read_setup_data(mem, setup_data);
    let booted = boot_and_restore(mem, h, strategy, MemmapMode::Eager.into(), None).unwrap();
    let report = booted.report.clone();
    let direct = booted.restored.direct.clone();
    assert_eq!(report.kho_error, None, "generation {n}");
    let tree_pages = booted.restored.tree_pages;
    let luo_num = booted.restored.luo.liveupdate_num;
    let carried = preserve_again(mem, &booted, n).unwrap();
    let mut r = report;
    r.chain = Some(Generation {
        generation: n,
        tree_pages,
        liveupdate_num: luo_num,
        ..Generation::default()
    });
    (r, direct, carried)
}

/// Ten generations in one process: nothing lost, the LUO count one more
/// per generation, the tree as large in every generation, the scratch
/// areas the first old kernel reserved, and each generation carrying what
/// the last verified plus its new folios.
#[test]
fn ten_generations_keep_everything_flat() {
    let img = old_kernel(KhoVersion::V4);
    let scratch = img.scratch.as_slice().to_vec();
    let mut setup_data = img.setup_data;
    let mut first_tree = None;
    let mut blocks = None;
    for n in 1..=10u32 {
        let h = read_setup_data(&img.mem, setup_data).unwrap().unwrap();
        assert_eq!(h.scratch, scratch, "generation {n}: scratch moved");
        assert_eq!(h.node, img.setup_data, "the hand-over's page");
        let (r, _, carried) = generation(&img.mem, setup_data, Strategy::Bulk, n);
        assert_eq!(r.lost_bytes, 0, "generation {n}");
        assert_eq!(r.verified_bytes, r.preserved_bytes, "generation {n}");
        let g = r.chain.unwrap();
        assert_eq!(g.liveupdate_num, Some(u64::from(n)));
        assert_eq!(*first_tree.get_or_insert(g.tree_pages), g.tree_pages);
        // Each generation adds its new folios (and nothing else).
        if let Some(b) = blocks {
            assert_eq!(
                r.blocks,
                b + NEW_FOLIO_ORDERS.len() as u64,
                "generation {n}"
            );
        }
        blocks = Some(r.blocks);
        assert_eq!(carried.new, NEW_FOLIO_ORDERS.len() as u64);
        setup_data = carried.setup_data;
    }
}

/// A carried folio damaged between two generations is lost in the next
/// one, and only there: it is not carried on, and the generation after
/// loses nothing.
#[test]
fn a_folio_damaged_between_generations_is_lost_once() {
    let img = old_kernel(KhoVersion::V3);
    let (r1, direct, carried) = generation(&img.mem, img.setup_data, Strategy::PerBlock, 1);
    assert_eq!(r1.lost_bytes, 0);
    let victim = direct[direct.len() / 2].block;
    let w = &img.mem.words(victim.phys(), 1).unwrap()[0];
    w.store(!w.load(AtomicOrdering::Relaxed), AtomicOrdering::Relaxed);
    let (r2, direct2, carried2) = generation(&img.mem, carried.setup_data, Strategy::PerBlock, 2);
    assert_eq!(r2.lost_bytes, victim.size());
    assert!(!direct2.iter().any(|e| e.block == victim));
    assert_eq!(carried2.carried, direct2.len() as u64);
    let h = read_setup_data(&img.mem, carried2.setup_data);
    let booted = boot_and_restore(
        &img.mem,
        h,
        Strategy::Coalesced,
        MemmapMode::Eager.into(),
        None,
    )
    .unwrap();
    assert_eq!(booted.report.lost_bytes, 0);
    assert_eq!(booted.report.verified_bytes, booted.report.preserved_bytes);
    assert!(!booted.restored.direct.iter().any(|e| e.block == victim));
}

/// After [`hold_scratch`] nothing the buddy allocator hands out lies in
/// scratch, and everything outside scratch is still there.
#[test]
fn held_scratch_is_never_allocated() {
    let img = old_kernel(KhoVersion::V4);
    let h = read_setup_data(&img.mem, img.setup_data);
    let booted =
        boot_and_restore(&img.mem, h, Strategy::Bulk, MemmapMode::Eager.into(), None).unwrap();
    let buddy: &Buddy<'_> = booted.machine.buddy().unwrap();
    let scratch = ScratchAreas::from_ranges(booted.incoming.as_ref().unwrap().scratch.clone());
    let free_before = buddy.nr_free_pages();
    let held = hold_scratch(buddy, &scratch).unwrap();
    assert!(held > 0);
    assert_eq!(buddy.nr_free_pages(), free_before - held);
    buddy.set_poison_on_alloc(false);
    let mut got = 0u64;
    while let Ok(pfn) = buddy.alloc_pages(Order::ZERO) {
        let r = Block::from_pfn(pfn, Order::ZERO).unwrap().range().unwrap();
        assert_eq!(scratch.overlap(r), None, "{pfn:?} is in scratch");
        got += 1;
    }
    assert_eq!(got, free_before - held);
}
