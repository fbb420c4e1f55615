use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;

use kho::{
    Block, CrossCheck, FileData, KhoFdt, KhoVersion, LUO_KHO_ENTRY_NAME, MEMFD_LUO_FOLIO_DIRTY,
    MEMFD_LUO_FOLIO_UPTODATE, NodeBudget, PAGE_SIZE, PhysReader, PreservedLookup, PreservedSet,
    RamMap,
};

use super::*;
use crate::kexec::read_setup_data;
use crate::kho::Strategy;
use crate::liveupdate::{
    MANIFEST_NODE, OldKernelConfig, OldKernelImage, new_kernel_boot, old_kernel_boot,
};
use crate::memmap::MemmapMode;
use crate::physio::read_bytes;

const MIB: u64 = 1 << 20;

fn boot(abi: KhoVersion) -> OldKernelImage {
    let mut c = OldKernelConfig::new(64 * MIB, Strategy::Bulk).unwrap();
    c.seed = 5;
    c.abi = abi;
    old_kernel_boot(&c).unwrap()
}

/// The handover as an inspector reads it: the root FDT's bytes, the
/// tracker (walked with scratch forbidden) and the LUO state.
fn read_back(img: &OldKernelImage) -> (Vec<u8>, PreservedSet, LuoState) {
    let fdt_bytes = read_bytes(&img.mem, img.fdt.start(), PAGE_SIZE as usize).unwrap();
    let fdt = KhoFdt::parse(&fdt_bytes).unwrap();
    let mut forbidden = img.scratch.as_slice().to_vec();
    forbidden.sort();
    let ram = img.mem.layout().ram().to_vec();
    let map = RamMap::new(&ram, &forbidden).unwrap();
    let (tracker, _) =
        PreservedSet::read_tree(&img.mem, map, fdt.root(), NodeBudget::for_ram(&map)).unwrap();
    let node = fdt.subnode(LUO_KHO_ENTRY_NAME).unwrap();
    let state = LuoState::read(
        PhysReader::new(&img.mem, map),
        Some(&tracker),
        node.data(),
        node.size(),
    )
    .unwrap();
    (fdt_bytes, tracker, state)
}

#[test]
fn kho_v4_preserves_the_checkpoint_and_the_guest_as_luo_files() {
    let img = boot(KhoVersion::V4);
    let (fdt_bytes, tracker, state) = read_back(&img);
    let fdt = KhoFdt::parse(&fdt_bytes).unwrap();
    assert_eq!(fdt.version(), KhoVersion::V4);
    assert_eq!(state.header.liveupdate_num, LIVEUPDATE_NUM);
    // A 64 MiB machine has no 1 GiB guest: guest 1 only.
    let names: Vec<String> = state
        .sessions
        .iter()
        .map(|s| s.session.name.to_string())
        .collect();
    assert_eq!(names, [MEMFD_SESSION, "kho-run-vm1"]);
    let sums: HashMap<Block, _> = img
        .manifest
        .entries
        .iter()
        .map(|e| (e.block, e.checksum))
        .collect();

    // The memfd: dense, every index aligned, DIRTY | UPTODATE, every folio
    // a manifest block at the order the tracker holds it.
    let memfd = &state.sessions[0].files[0];
    assert_eq!(memfd.file.token, MEMFD_TOKEN);
    assert_eq!(memfd.file.compatible.to_str(), Some(MEMFD_V2_COMPATIBLE));
    let FileData::Memfd { rec, folios, .. } = &memfd.data else {
        panic!("{:?}", memfd.data)
    };
    let scenario = crate::workload::Scenario::for_machine(64 * MIB);
    assert_eq!(rec.size, scenario.memfd_bytes);
    assert_eq!(rec.pos, rec.size);
    let mut next = 0u64;
    for e in folios {
        let phys = e.pfn.unwrap().phys();
        let b = tracker.block_containing(phys).unwrap();
        assert_eq!(b.phys(), phys);
        assert!(sums.contains_key(&b), "{b:?} not in the manifest");
        assert_eq!(e.index, next, "slot {}", e.slot);
        assert_eq!(e.index % b.order().pages(), 0);
        assert_eq!(e.flags, MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE);
        next += b.order().pages();
    }
    assert_eq!(next * PAGE_SIZE, rec.size);

    // The guest: kvm then guest_memfd naming it, order-0 pages.
    let vm = &state.sessions[1];
    assert_eq!(vm.files.len(), 2);
    assert_eq!(vm.files[0].file.token, KVM_TOKEN);
    assert!(matches!(vm.files[0].data, FileData::Kvm { .. }));
    let FileData::GuestMemfd { rec, folios, .. } = &vm.files[1].data else {
        panic!("{:?}", vm.files[1].data)
    };
    assert_eq!(vm.files[1].file.token, GUEST_MEMFD_TOKEN);
    assert_eq!(rec.vm_token, KVM_TOKEN);
    assert_eq!(folios.len(), 4);
    assert_eq!(rec.size, 4 * PAGE_SIZE);
    for e in folios {
        let b = tracker.block_containing(e.pfn.unwrap().phys()).unwrap();
        assert_eq!(b.order().as_u8(), 0);
        assert!(sums.contains_key(&b));
    }

    // The core's cross-layer check finds nothing broken; the orphans are
    // exactly the blocks preserved directly (guest RAM and whatever the
    // manifest lists outside LUO).
    let report = CrossCheck::new(&tracker)
        .kho_fdt(&fdt, Some(img.fdt.start()))
        .luo(&state)
        .run();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let in_luo: BTreeSet<PhysAddr> = state
        .files()
        .flat_map(|(_, f)| f.data.folios().iter().filter_map(|e| e.pfn))
        .map(|p| p.phys())
        .collect();
    let direct: u64 = img
        .manifest
        .entries
        .iter()
        .filter(|e| !in_luo.contains(&e.block.phys()))
        .map(|e| e.block.size())
        .sum();
    assert_eq!(report.orphans.bytes, direct);
}

#[test]
fn the_luo_pages_are_preserved_blocks_not_tree_pages() {
    let img = boot(KhoVersion::V4);
    let (_, tracker, state) = read_back(&img);
    let preserved: BTreeSet<Block> = img.preserved.iter().copied().collect();
    assert_eq!(preserved.len(), img.preserved.len(), "preserved twice");
    assert_eq!(
        preserved,
        tracker.blocks().iter().copied().collect::<BTreeSet<_>>()
    );
    let tree: BTreeSet<PhysAddr> = img.tree_pages.iter().copied().collect();
    assert!(!tree.contains(&state.header.blob));
    for s in &state.sessions {
        for f in &s.files {
            assert!(!tree.contains(&f.data.record().unwrap()));
        }
    }
    assert_eq!(
        img.luo.map(|r| r.start()),
        Some(state.header.blob),
        "the image names the LUO header"
    );
}

#[test]
fn the_new_kernel_retrieves_and_verifies_every_file() {
    let img = boot(KhoVersion::V4);
    let h = read_setup_data(&img.mem, img.setup_data);
    let r = new_kernel_boot(&img.mem, h, Strategy::Bulk, MemmapMode::Eager, None).unwrap();
    assert_eq!(r.kho_error, None);
    assert_eq!(r.luo_error, None);
    assert_eq!(r.lost_bytes, 0);
    assert_eq!(r.verified_bytes, r.preserved_bytes);
    let rows: Vec<(&str, u64, &str)> = r
        .luo_files
        .iter()
        .map(|f| (f.session.as_str(), f.token, f.compatible.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            (MEMFD_SESSION, MEMFD_TOKEN, MEMFD_V2_COMPATIBLE),
            ("kho-run-vm1", KVM_TOKEN, KVM_LUO_FH_COMPATIBLE),
            (
                "kho-run-vm1",
                GUEST_MEMFD_TOKEN,
                GUEST_MEMFD_LUO_FH_COMPATIBLE
            ),
        ]
    );
    let scenario = crate::workload::Scenario::for_machine(64 * MIB);
    assert_eq!(r.luo_files[0].bytes_verified, scenario.memfd_bytes);
    assert_eq!(r.luo_files[1].bytes_verified, 0);
    assert_eq!(r.luo_files[2].bytes_verified, 4 * PAGE_SIZE);
    assert!(r.luo_files.iter().all(|f| f.bytes_lost == 0));
}

/// A memfd folio whose data changed is lost in its file, once: the
/// manifest path does not restore it a second time.
#[test]
fn a_damaged_folio_is_lost_in_its_file_only() {
    let img = boot(KhoVersion::V4);
    let (_, tracker, state) = read_back(&img);
    let e = state.sessions[0].files[0].data.folios()[7];
    let b = tracker.block_containing(e.pfn.unwrap().phys()).unwrap();
    let w = &img.mem.words(b.phys(), 1).unwrap()[0];
    w.store(!w.load(Ordering::Relaxed), Ordering::Relaxed);
    let h = read_setup_data(&img.mem, img.setup_data);
    let r = new_kernel_boot(&img.mem, h, Strategy::PerBlock, MemmapMode::Eager, None).unwrap();
    assert_eq!(r.luo_files[0].bytes_lost, b.size());
    assert_eq!(r.lost_bytes, b.size());
    assert_eq!(r.verified_bytes + r.lost_bytes, r.preserved_bytes);
}

#[test]
fn kho_v3_writes_no_luo() {
    let img = boot(KhoVersion::V3);
    let bytes = read_bytes(&img.mem, img.fdt.start(), PAGE_SIZE as usize).unwrap();
    let fdt = KhoFdt::parse(&bytes).unwrap();
    assert_eq!(fdt.version(), KhoVersion::V3);
    assert!(fdt.subnode(LUO_KHO_ENTRY_NAME).is_none());
    assert!(fdt.subnode(MANIFEST_NODE).is_some());
    assert_eq!(img.luo, None);
    let h = read_setup_data(&img.mem, img.setup_data);
    let r = new_kernel_boot(&img.mem, h, Strategy::Bulk, MemmapMode::Eager, None).unwrap();
    assert!(r.luo_files.is_empty());
    assert_eq!(r.lost_bytes, 0);
}

#[test]
fn the_memfd_layout_is_dense_and_aligned() {
    let b = |pfn: u64, order: u8| {
        Block::from_pfn(kho::Pfn::new(pfn).unwrap(), Order::new(order)).unwrap()
    };
    let (specs, size) = memfd_layout(&[b(1, 0), b(16, 4), b(4, 2), b(2, 0)]);
    let got: Vec<(u64, u64)> = specs
        .iter()
        .map(|s| (s.block.pfn().as_u64(), s.index))
        .collect();
    assert_eq!(got, [(16, 0), (4, 16), (1, 20), (2, 21)]);
    assert_eq!(size, 22 * PAGE_SIZE);
}

/// A memfd entry pointed at a page nobody preserved: that page is lost in
/// the file (and counted as unpreserved), while the folio it replaced,
/// which no LUO file lists any more, is restored by the manifest path.
#[test]
fn an_entry_naming_an_unpreserved_page_is_lost_in_its_file() {
    let img = boot(KhoVersion::V4);
    let (_, _, state) = read_back(&img);
    let FileData::Memfd { area, .. } = &state.sessions[0].files[0].data else {
        panic!()
    };
    let array = area.blocks[0].phys();
    let w = &img.mem.words(array, 5).unwrap()[4];
    let old = w.load(Ordering::Relaxed);
    let bogus = img.scratch.as_slice()[1].start();
    w.store(
        (old & !((1 << 52) - 1)) | bogus.pfn().as_u64(),
        Ordering::Relaxed,
    );
    let h = read_setup_data(&img.mem, img.setup_data);
    let r = new_kernel_boot(&img.mem, h, Strategy::Bulk, MemmapMode::Eager, None).unwrap();
    assert_eq!(r.luo_files[0].bytes_lost, PAGE_SIZE);
    assert_eq!(r.lost_bytes, PAGE_SIZE);
    assert_eq!(r.verified_bytes + r.lost_bytes, r.preserved_bytes);
}
