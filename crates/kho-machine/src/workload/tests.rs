use kho::{NodeBudget, NodeSet, RadixReader, RadixTree, RamMap};

use super::*;
use crate::arena::{MemoryLayout, PhysMem};
use crate::boot::Machine;
use crate::liveupdate::kernel_boot_config;
use crate::manifest::ManifestEntry;
use crate::preserve::{Preserver, TreeAlloc};
use crate::scratch::ScratchAreas;
use crate::scratch::{KernReserved, ScratchSizing, kho_reserve_scratch};
use crate::testing::{MIB as M, pfn_block as b, range as r};

fn machine(mem: &PhysMem) -> (Machine<'_>, ScratchAreas) {
    let mut m = Machine::new(mem, kernel_boot_config(mem.layout().ram_bytes()));
    m.memblock_init().unwrap();
    m.alloc_memmap().unwrap();
    let kern = KernReserved::from_memblock(&m.memblock);
    let scratch = kho_reserve_scratch(&ScratchSizing::default(), &kern, &mut m.memblock).unwrap();
    m.memmap_init().unwrap();
    m.memblock_free_all().unwrap();
    (m, scratch)
}

fn scenario() -> Scenario {
    Scenario {
        vm_1g_folios: 0,
        vm_2m_folios: 3,
        memfd_bytes: 8 * M,
        memfd_order0_percent: 70,
        forget_pages: 2,
        replay: Vec::new(),
    }
}

/// Runs the VM, checkpoint and forgotten-page workloads on a fresh
/// 128 MiB machine; the manifest entries, the preserved blocks and the
/// checkpoint's coalesced ranges (walked from the tree).
fn run(
    seed: u64,
) -> (
    Vec<ManifestEntry>,
    Vec<Block>,
    MemfdStats,
    Vec<kho::PhysRange>,
) {
    let mem = PhysMem::create(MemoryLayout::pc(128 * M).unwrap()).unwrap();
    let (m, scratch) = machine(&mem);
    let buddy = m.buddy().unwrap();
    let free_before = buddy.nr_free_pages();
    let tree_alloc = TreeAlloc::new(buddy);
    let tree = RadixTree::new(&tree_alloc).unwrap();
    let mut p = Preserver::new(&mem, tree.cursor(), &scratch, seed);
    let s = scenario();
    vm(buddy, &[], &s, FolioOwner::Direct, &mut p).unwrap();
    let stats = memfd_checkpoint(buddy, &s, seed, FolioOwner::Direct, &mut p).unwrap();
    forget_pages(buddy, s.forget_pages, &mut p).unwrap();
    let (entries, preserved) = p.finish();

    // The churn is all released: the buddy is short of exactly the
    // workload's folios and the tree's pages.
    let used: u64 = entries.iter().map(|e| e.block.order().pages()).sum();
    let tree_pages = u64::try_from(tree_alloc.pages().len()).unwrap();
    assert_eq!(buddy.nr_free_pages() + used + tree_pages, free_before);

    let mut forbidden = scratch.as_slice().to_vec();
    forbidden.sort();
    let ram = mem.layout().ram().to_vec();
    let map = RamMap::new(&ram, &forbidden).unwrap();
    let ranges = RadixReader::open(
        &mem,
        map,
        tree.root(),
        NodeSet::new(),
        NodeBudget::for_ram(&map),
    )
    .unwrap()
    .coalesce()
    .collect::<Result<Vec<_>, _>>()
    .unwrap();
    (entries, preserved, stats, ranges)
}

#[test]
fn workloads_are_deterministic_by_seed() {
    let a = run(5);
    let b = run(5);
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.3, b.3);
    let c = run(6);
    assert_ne!(a.0, c.0);
}

#[test]
fn the_checkpoint_is_scattered_and_has_its_mix() {
    let (entries, preserved, stats, ranges) = run(11);
    let s = scenario();
    // Forgotten pages are listed, not preserved.
    assert_eq!(entries.len(), preserved.len() + 2);
    assert_eq!(stats.bytes, s.memfd_bytes);
    let order0 = stats.folios[0] * PAGE_SIZE;
    // 70 % in order 0, plus the small-order tail of under 4 pages.
    let want0 = s.memfd_bytes * 70 / 100 / PAGE_SIZE * PAGE_SIZE;
    assert!(
        (want0..want0 + 4 * PAGE_SIZE).contains(&order0),
        "{order0:#x}"
    );
    assert!(stats.folios[2] > 0 && stats.folios[3] > 0 && stats.folios[4] > 0);
    assert!(stats.folios[1] <= 1);
    assert!(stats.churn_ops > 2 * s.memfd_bytes / PAGE_SIZE / 2);
    // Scattered: many ranges, yet fewer than blocks (some neighbours).
    // A real process's checkpoint had 287,054 pages in 21,997 ranges
    // (13 pages a range); this one has about 12.
    let blocks = preserved.len();
    assert!(ranges.len() >= 32, "{} ranges", ranges.len());
    assert!(
        ranges.len() > blocks / 16,
        "{} ranges for {blocks} blocks",
        ranges.len()
    );
    assert!(
        ranges.len() < blocks,
        "{} ranges for {blocks} blocks",
        ranges.len()
    );
}

#[test]
fn the_vm_workload_gives_guests_their_folios() {
    let mem = PhysMem::create(MemoryLayout::pc(4 << 30).unwrap()).unwrap();
    let mut m = Machine::new(&mem, kernel_boot_config(mem.layout().ram_bytes()));
    m.memblock_init().unwrap();
    m.alloc_memmap().unwrap();
    let kern = KernReserved::from_memblock(&m.memblock);
    let scratch = kho_reserve_scratch(&ScratchSizing::default(), &kern, &mut m.memblock).unwrap();
    let giga = vm_boot_alloc(&mut m.memblock, 1).unwrap();
    m.memmap_init().unwrap();
    vm_boot_prep(m.memmap().unwrap(), &giga).unwrap();
    m.memblock_free_all().unwrap();
    let buddy = m.buddy().unwrap();
    let tree_alloc = TreeAlloc::new(buddy);
    let tree = RadixTree::new(&tree_alloc).unwrap();
    let mut p = Preserver::new(&mem, tree.cursor(), &scratch, 1);
    let s = Scenario {
        vm_1g_folios: 1,
        vm_2m_folios: 2,
        memfd_bytes: 0,
        memfd_order0_percent: 70,
        forget_pages: 0,
        replay: Vec::new(),
    };
    let stats = vm(buddy, &giga, &s, FolioOwner::Direct, &mut p).unwrap();
    assert_eq!(stats.folios, 1 + 2 + 2 * VM_META_PAGES);
    assert_eq!(
        stats.bytes,
        (1 << 30) + (4 << 20) + 2 * VM_META_PAGES * PAGE_SIZE
    );
    let orders: Vec<u8> = p.preserved().iter().map(|b| b.order().as_u8()).collect();
    assert_eq!(orders, [18, 0, 0, 0, 0, 9, 9, 0, 0, 0, 0]);
    assert_eq!(
        m.memmap().unwrap().folio_order(giga[0]).unwrap(),
        GIGANTIC_ORDER
    );
    for b in p.preserved() {
        assert!(tree.is_preserved(*b).unwrap());
        assert!(scratch.overlap(b.range().unwrap()).is_none());
    }
}

/// The runs (maximal adjacent blocks) of a sorted block list, as ranges.
fn runs(blocks: &[Block]) -> Vec<PhysRange> {
    kho::merge_ranges(blocks.iter().map(|b| b.range().unwrap()).collect())
}

/// The pattern is kept: same orders in the same sequence, every block
/// aligned, inside free memory, the same number of runs with the same
/// lengths and the same block offsets inside each.
fn assert_same_pattern(trace: &[Block], placed: &[Block], free: &[PhysRange]) {
    assert_eq!(trace.len(), placed.len());
    for (t, p) in trace.iter().zip(placed) {
        assert_eq!(t.order(), p.order());
        assert!(p.phys().is_aligned(p.size()));
        assert!(
            free.iter().any(|f| f.contains_range(p.range().unwrap())),
            "{p:?}"
        );
    }
    let (rt, rp) = (runs(trace), runs(placed));
    assert_eq!(
        rt.iter().map(|r| r.size()).collect::<Vec<_>>(),
        rp.iter().map(|r| r.size()).collect::<Vec<_>>()
    );
    let mut sorted = placed.to_vec();
    sorted.sort();
    assert_eq!(sorted, placed, "runs keep their order");
}

#[test]
fn a_trace_that_fits_stays_where_it_is() {
    let trace = [b(0x100, 0), b(0x101, 0), b(0x200, 9)];
    let free = [r(0x10_0000, 0x80_0000)];
    assert_eq!(place_blocks(&trace, &free).unwrap(), trace);
}

#[test]
fn a_trace_beyond_ram_is_packed_keeping_adjacency_and_alignment() {
    // 20 GiB up: an order-0 page glued to a 2 MiB folio glued to a
    // 64 KiB folio, a lone page, a 1 GiB folio with a page after it.
    let g = (20u64 << 30) >> 12;
    let trace = vec![
        b(g + 511, 0),
        b(g + 512, 9),
        b(g + 1024, 4),
        b(g + 5000, 0),
        b(g + (1 << 18), 18),
        b(g + (2 << 18), 0),
    ];
    let free = &[r(0x10_0000, 0x3000_0000), r(1 << 32, 6 << 30)][..];
    let placed = place_blocks(&trace, free).unwrap();
    assert_same_pattern(&trace, &placed, free);
    assert_eq!(runs(&placed).len(), 3);
    // The first run starts at the lowest address where its 2 MiB folio
    // is aligned: one page below 2 MiB.
    assert_eq!(placed[0].phys().as_u64(), (2 << 20) - 4096);
    // The lone page goes one page past the first run's end.
    assert_eq!(
        placed[3].phys().as_u64(),
        placed[2].range().unwrap().end().as_u64() + 4096
    );
    // The 1 GiB run does not fit under 3 GiB after the others: above 4 GiB.
    assert_eq!(placed[4].phys().as_u64(), 1 << 32);
}

#[test]
fn packing_keeps_a_fragmented_pattern_fragmented() {
    let trace = fragmented_blocks(Pfn::new(1 << 30).unwrap(), 1000);
    let free = [r(1 << 20, 64 << 20)];
    let placed = place_blocks(&trace, &free).unwrap();
    assert_same_pattern(&trace, &placed, &free);
    assert_eq!(runs(&placed).len(), 500);
    // Packed: every other page from the start of free memory.
    assert_eq!(placed[1].pfn().as_u64() - placed[0].pfn().as_u64(), 2);
    assert_eq!(placed[0].phys().as_u64(), 1 << 20);
}

#[test]
fn a_trace_too_large_for_the_machine_is_refused() {
    let trace = dense_blocks(Pfn::new(1 << 30).unwrap(), 2048);
    let free = [r(1 << 20, 4 << 20), r(6 << 20, 8 << 20)];
    let e = place_blocks(&trace, &free).unwrap_err();
    assert!(
        matches!(e, WorkloadError::TraceDoesNotFit { blocks: 2048, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("does not fit"));
}

#[test]
fn presets_have_their_shapes() {
    let ram = 256 * M;
    let dense = Scenario::preset(WorkloadKind::Dense, ram);
    assert_eq!(dense.replay.len() as u64, ram / 16 / PAGE_SIZE);
    assert_eq!(runs(&dense.replay).len(), 1);
    assert_eq!((dense.memfd_bytes, dense.vm_2m_folios), (0, 0));
    let frag = Scenario::preset(WorkloadKind::Fragmented, ram);
    assert_eq!(runs(&frag.replay).len(), frag.replay.len());
    let mixed = Scenario::preset(WorkloadKind::Mixed, ram);
    assert_eq!(runs(&mixed.replay).len(), 1 + frag.replay.len() / 2);
    assert!(mixed.memfd_bytes > 0 && mixed.vm_2m_folios > 0);
    assert_eq!(
        Scenario::preset(WorkloadKind::Default, ram),
        Scenario::for_machine(ram)
    );
    assert_eq!(Scenario::preset(WorkloadKind::Vm, ram).memfd_bytes, 0);
    assert_eq!(Scenario::preset(WorkloadKind::Memfd, ram).vm_2m_folios, 0);
    for k in WorkloadKind::ALL {
        assert_eq!(k.as_str().parse::<WorkloadKind>().unwrap(), k);
    }
    assert!("huge".parse::<WorkloadKind>().is_err());
}

/// The old kernel replays a trace far above its RAM: placed, reserved,
/// preserved exactly (manifest = the placed blocks), and every byte
/// verifies.
#[test]
fn the_old_kernel_replays_a_remapped_trace() {
    use crate::kho::Strategy;
    use crate::liveupdate::{OldKernelConfig, old_kernel_boot};
    let g = (20u64 << 30) >> 12;
    let mut trace = vec![b(g + 511, 0), b(g + 512, 9), b(g + 1024, 4)];
    trace.extend(fragmented_blocks(Pfn::new(g + 4096).unwrap(), 64));
    let mut cfg = OldKernelConfig::new(128 * M, Strategy::Bulk).unwrap();
    cfg.scenario = Scenario {
        replay: trace.clone(),
        ..Scenario::default()
    };
    let img = old_kernel_boot(&cfg).unwrap();
    let listed: Vec<Block> = img.manifest.entries.iter().map(|e| e.block).collect();
    assert_eq!(listed.len(), trace.len());
    let ram = img.mem.layout().ram().to_vec();
    assert_same_pattern(&trace, &listed, &ram);
    for b in &listed {
        assert!(img.preserved.contains(b));
        img.scratch.check_preserve(b.range().unwrap()).unwrap();
    }
    let v = img.manifest.verify(&img.mem);
    assert_eq!(v.lost_bytes, 0);
    assert_eq!(
        v.verified_bytes,
        trace.iter().map(|b| b.size()).sum::<u64>()
    );
}

/// Next to a fragmented replay, the checkpoint's order-0 folios come
/// from the buddy: the guard pages keep them out of the pattern's
/// holes, so each replayed page stays a range of its own.
#[test]
fn guards_keep_other_allocations_out_of_a_replayed_pattern() {
    use crate::kho::Strategy;
    use crate::liveupdate::{OldKernelConfig, old_kernel_boot};
    let trace = fragmented_blocks(Pfn::new(1 << 30).unwrap(), 512);
    let mut cfg = OldKernelConfig::new(128 * M, Strategy::Bulk).unwrap();
    cfg.scenario = Scenario {
        memfd_bytes: 8 * M,
        memfd_order0_percent: 100,
        replay: trace.clone(),
        ..Scenario::default()
    };
    let img = old_kernel_boot(&cfg).unwrap();
    let placed: Vec<Block> = img.manifest.entries[..trace.len()]
        .iter()
        .map(|e| e.block)
        .collect();
    let mut preserved = img.preserved.clone();
    preserved.sort();
    let all = runs(&preserved);
    for b in &placed {
        let r = b.range().unwrap();
        assert!(all.contains(&r), "{b:?} was glued to a neighbour");
    }
}

#[test]
fn intersect_clips_to_both() {
    let a = [r(0, 0x3000), r(0x5000, 0x9000)];
    let b = [r(0x1000, 0x6000), r(0x8000, 0xa000)];
    assert_eq!(
        intersect(&a, &b),
        [r(0x1000, 0x3000), r(0x5000, 0x6000), r(0x8000, 0x9000)]
    );
}

#[test]
fn rng_is_reproducible_and_bounded() {
    let mut a = Rng::new(1, 2);
    let mut b = Rng::new(1, 2);
    let mut c = Rng::new(1, 3);
    let xs: Vec<u64> = (0..64).map(|_| a.below(10)).collect();
    let ys: Vec<u64> = (0..64).map(|_| b.below(10)).collect();
    let zs: Vec<u64> = (0..64).map(|_| c.below(10)).collect();
    assert_eq!(xs, ys);
    assert_ne!(xs, zs);
    assert!(xs.iter().all(|&x| x < 10));
    assert_eq!(a.below(0), 0);
}
