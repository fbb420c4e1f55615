use std::collections::BTreeSet;

use kho::{Block, KhoFdt, NodeBudget, NodeSet, Order, PAGE_SIZE, RadixReader, RamMap, split_pages};

use super::old_kernel::{FDT_SIZE, MAX_BUDDY_BYTES, manifest_max_bytes};
use super::*;
use crate::arena::{MemoryLayout, PhysMem};
use crate::boot::Machine;
use crate::kexec::read_setup_data;
use crate::kho::Strategy;
use crate::manifest::{Manifest, POISON};
use crate::physio::read_bytes;
use crate::scratch::{KernReserved, ScratchSizing, kho_reserve_scratch};
use crate::workload::Scenario;

fn cfg(size: u64, forget: u64) -> OldKernelConfig {
    let mut c = OldKernelConfig::new(size, Strategy::Bulk).unwrap();
    c.scenario.forget_pages = forget;
    c.seed = 9;
    // The direct path: every folio preserved by the workload (the kho-v4
    // LUO path has its own tests, `luo/tests.rs`).
    c.abi = kho::KhoVersion::V3;
    c
}

/// The manifest as a new kernel finds it: setup_data -> kho_data ->
/// root FDT -> subnode -> blob.
fn manifest_via_fdt(mem: &PhysMem, setup_data: PhysAddr) -> (Manifest, KhoHandoverView) {
    let handover = read_setup_data(mem, setup_data).unwrap().unwrap();
    assert_eq!(handover.fdt.size(), FDT_SIZE);
    let bytes = read_bytes(mem, handover.fdt.start(), 4096).unwrap();
    let fdt = KhoFdt::parse(&bytes).unwrap();
    assert!(matches!(
        fdt.version(),
        kho::KhoVersion::V3 | kho::KhoVersion::V4
    ));
    let node = fdt.subnode(MANIFEST_NODE).unwrap();
    let region = PhysRange::from_start_size(node.data(), node.size().unwrap()).unwrap();
    let manifest = Manifest::read(mem, region).unwrap();
    let view = KhoHandoverView {
        root: fdt.root(),
        fdt: handover.fdt,
        blob: region,
        scratch: handover.scratch.clone(),
    };
    (manifest, view)
}

/// Every block of the handed-over tree, walked by the validating reader
/// with the scratch areas forbidden.
fn walk_handover(mem: &PhysMem, view: &KhoHandoverView) -> BTreeSet<Block> {
    let mut forbidden = view.scratch.clone();
    forbidden.sort();
    let ram = mem.layout().ram().to_vec();
    let map = RamMap::new(&ram, &forbidden).unwrap();
    RadixReader::open(
        mem,
        map,
        view.root,
        NodeSet::new(),
        NodeBudget::for_ram(&map),
    )
    .unwrap()
    .walk()
    .collect::<Result<_, _>>()
    .unwrap()
}

struct KhoHandoverView {
    root: PhysAddr,
    fdt: PhysRange,
    blob: PhysRange,
    scratch: Vec<PhysRange>,
}

/// The old kernel's preparation, then a reading of its hand-over over a
/// second mapping of the same memfd.
fn run(size: u64, forget: u64) -> (OldKernelImage, PhysMem, Manifest) {
    let img = old_kernel_boot(&cfg(size, forget)).unwrap();
    let dup = img.mem.fd().try_clone_to_owned().unwrap();
    let other = PhysMem::attach(dup, img.mem.layout().clone()).unwrap();
    let (manifest, _) = manifest_via_fdt(&other, img.setup_data);
    (img, other, manifest)
}

#[test]
fn in_process_live_update_verifies_everything() {
    let (img, other, manifest) = run(128 * MIB, 0);
    assert_eq!(manifest, img.manifest);
    let v = manifest.verify(&other);
    assert!(manifest.preserved_bytes() >= img.manifest.preserved_bytes());
    assert_eq!(v.verified_bytes, manifest.preserved_bytes());
    assert_eq!(v.lost_bytes, 0);
}

#[test]
fn forgotten_pages_are_lost() {
    let (_, other, manifest) = run(64 * MIB, 3);
    let v = manifest.verify(&other);
    assert_eq!(v.lost_bytes, 3 * PAGE_SIZE);
    assert_eq!(v.verified_bytes + v.lost_bytes, manifest.preserved_bytes());
}

/// The walked tree is exactly the manifest's preserved blocks, the
/// manifest pages and the FDT page; nothing preserved (and no tree page)
/// is in scratch.
#[test]
fn the_handover_is_well_formed() {
    let img = old_kernel_boot(&cfg(128 * MIB, 2)).unwrap();
    let (manifest, view) = manifest_via_fdt(&img.mem, img.setup_data);
    assert_eq!(view.root, img.radix_root);
    assert_eq!(view.fdt, img.fdt);
    assert_eq!(view.blob, img.manifest_blob);
    assert_eq!(view.scratch, img.scratch.as_slice());
    assert_eq!(view.scratch.len(), 3);

    let walked = walk_handover(&img.mem, &view);

    // The manifest lists the workload's folios; the last two are the
    // forgotten pages.
    let n = manifest.entries.len();
    let mut want: BTreeSet<Block> = manifest.entries[..n - 2].iter().map(|e| e.block).collect();
    let blob_pages = view.blob.size().div_ceil(PAGE_SIZE);
    want.extend(split_pages(view.blob.start().pfn(), blob_pages).unwrap());
    want.insert(Block::new(view.fdt.start(), Order::ZERO).unwrap());
    assert_eq!(walked, want);
    assert_eq!(walked, img.preserved.iter().copied().collect());
    for e in &manifest.entries[n - 2..] {
        assert!(!walked.contains(&e.block));
    }

    for b in &walked {
        img.scratch.check_preserve(b.range().unwrap()).unwrap();
    }
    for &p in &img.tree_pages {
        let r = PhysRange::from_start_size(p, PAGE_SIZE).unwrap();
        img.scratch.check_preserve(r).unwrap();
        assert!(!walked.iter().any(|b| b.range().unwrap().overlaps(r)));
    }
    assert!(!img.tree_pages.is_empty());
    assert!(img.tree_pages.contains(&img.radix_root));
}

/// Poison spares the tree pages (the walk above reads them) and the
/// hand-over, and overwrites an unpreserved page the old kernel wrote.
#[test]
fn poison_spares_the_tree_and_overwrites_the_rest() {
    let img = old_kernel_boot(&cfg(64 * MIB, 1)).unwrap();
    assert!(img.poisoned_pages > 0);
    let word =
        |p: PhysAddr| img.mem.words(p, 1).unwrap()[0].load(std::sync::atomic::Ordering::Relaxed);
    let is_poison = |p: PhysAddr| word(p) & !0xfff8 == POISON;
    for &p in &img.tree_pages {
        let page = img.mem.page_at(p).unwrap();
        assert!(
            !(0..512).any(|i| page.load(i).unwrap() & !0xfff8 == POISON),
            "tree page {p}"
        );
    }
    assert!(!is_poison(img.handover.start()));
    // The forgotten page was written, listed, not preserved: poisoned.
    let forgotten = img.manifest.entries.last().unwrap().block;
    assert!(is_poison(forgotten.phys()));
    // Every preserved block still verifies.
    let v = img.manifest.verify(&img.mem);
    assert_eq!(v.lost_bytes, PAGE_SIZE);
}

/// Scratch is sized from the kernel's reservations (image + memmap, at
/// 200 %) and leaves the new kernel room for its memmap in one area.
#[test]
fn scratch_holds_the_new_kernels_memmap() {
    for size in [64 * MIB, 128 * MIB, 256 * MIB, 16 << 30] {
        let mem = PhysMem::create(MemoryLayout::pc(size).unwrap()).unwrap();
        let boot = kernel_boot_config(mem.layout().ram_bytes());
        let mut m = Machine::new(&mem, boot);
        m.memblock_init().unwrap();
        m.alloc_memmap().unwrap();
        let memmap = m.memmap().unwrap().footprint();
        let kern = KernReserved::from_memblock(&m.memblock);
        assert_eq!(kern.total, memmap + boot.kernel.size());
        let scratch =
            kho_reserve_scratch(&ScratchSizing::default(), &kern, &mut m.memblock).unwrap();
        let largest = scratch.as_slice().iter().map(|r| r.size()).max().unwrap();
        // The memmap is one allocation; slack for memblock's arrays.
        assert!(
            largest >= memmap + 2 * MIB,
            "{size:#x}: {scratch:?} memmap {memmap:#x}"
        );
        assert!(scratch.total() >= 2 * kern.total);
        for r in scratch.as_slice() {
            assert!(m.memblock.memblock_is_region_reserved(r.start(), r.size()));
        }
    }
}

#[test]
fn the_default_scenario_scales_with_the_machine() {
    let s = Scenario::for_machine(16 << 30);
    assert_eq!(
        (s.vm_1g_folios, s.vm_2m_folios, s.memfd_bytes),
        (2, 256, 1 << 30)
    );
    let s = Scenario::for_machine(64 * MIB);
    assert_eq!(s.vm_1g_folios, 0);
    assert!(s.vm_2m_folios >= 1 && s.memfd_bytes >= MIB);
    assert!(s.bytes() < 16 * MIB);
    let big = Scenario::for_machine(1 << 40);
    assert_eq!(big, Scenario::for_machine(16 << 30));
}

/// The default `kho run` scenario on the 16 GiB machine, in process
/// (3.5 GiB written: run in release, `--ignored`): the manifest goes to
/// memblock, the hand-over reads back, the walk matches, every byte
/// verifies.
#[test]
#[ignore = "16 GiB scenario: 3.5 GiB of data; run with --release --ignored"]
fn default_16g_scenario_hands_over_everything() {
    let img = old_kernel_boot(&OldKernelConfig::new(16 << 30, Strategy::Skip).unwrap()).unwrap();
    let bound = manifest_max_bytes(Scenario::for_machine(16 << 30).max_blocks());
    assert!(bound > MAX_BUDDY_BYTES);
    let (manifest, view) = manifest_via_fdt(&img.mem, img.setup_data);
    assert_eq!(
        manifest.preserved_bytes(),
        (2 << 30) + (512 << 20) + (1 << 30) + 8 * PAGE_SIZE
    );
    let walked = walk_handover(&img.mem, &view);
    assert_eq!(walked, img.preserved.iter().copied().collect());
    let v = manifest.verify(&img.mem);
    assert_eq!(v.lost_bytes, 0);
    assert_eq!(v.verified_bytes, manifest.preserved_bytes());
}
