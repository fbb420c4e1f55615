//! Salvage of a kho-v1 handover (Linux 6.16's chunk list, written and read
//! by the `xarray` peer schemes): a chunk header flipped by
//! `kho_machine::corrupt_handover`, then the new kernel's boot under
//! `--on-corruption salvage`. Past a damaged chunk header nothing says what
//! the list covers: all RAM outside scratch and the kernel image is
//! reserved, no preserved page is freed, none is restored; under reject
//! (Linux) the same handover frees them.

use kho::{Block, KhoVersion, PhysRange};
use kho_lab::peers::MachineScheme;
use kho_machine::{
    BootConfig, CorruptClass, Machine, MemblockRegion, OldKernelConfig, OldKernelImage,
    OnCorruption, Strategy, corrupt_handover, kernel_boot_config, kho_memory_init,
    kho_populate_with, kho_restore_folio, old_kernel_boot, read_setup_data,
};

fn image(scheme: &str) -> OldKernelImage {
    let mut c = OldKernelConfig::new(128 << 20, Strategy::PerBlock).unwrap();
    c.abi = KhoVersion::V3;
    c.scheme = MachineScheme::by_name(scheme);
    old_kernel_boot(&c).unwrap()
}

fn covered(regions: &[MemblockRegion], r: PhysRange) -> bool {
    let mut at = r.start();
    for g in regions.iter().map(|g| g.range()) {
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

/// Boots `img` (handed over by `scheme`) under `mode` to a live buddy;
/// returns whether each preserved block is (reserved, in a free list,
/// restorable), and the damage listed.
fn boot(
    img: &OldKernelImage,
    scheme: &str,
    mode: OnCorruption,
) -> (Vec<(bool, bool, bool)>, usize) {
    let config = BootConfig {
        ..kernel_boot_config(img.mem.layout().ram_bytes())
    };
    let mut m = Machine::new(&img.mem, config);
    m.memblock_init().unwrap();
    let h = read_setup_data(&img.mem, img.setup_data).unwrap().unwrap();
    let mut kho = kho_populate_with(&mut m, &h, MachineScheme::by_name(scheme), mode);
    m.alloc_memmap().unwrap();
    m.memmap_init().unwrap();
    kho_memory_init(&mut m, &mut kho, Strategy::PerBlock);
    m.set_skip(kho.skip_ranges());
    let reserved = m.memblock.reserved.regions().to_vec();
    m.memblock_free_all().unwrap();
    m.page_alloc_init_late().unwrap();
    let buddy = m.buddy().unwrap();
    let free: Vec<PhysRange> = buddy
        .free_lists()
        .unwrap()
        .into_iter()
        .flat_map(|(o, pfns)| {
            pfns.into_iter()
                .map(move |p| Block::from_pfn(p, o).unwrap().range().unwrap())
        })
        .collect();
    let out = img
        .preserved
        .iter()
        .map(|b| {
            let r = b.range().unwrap();
            (
                covered(&reserved, r),
                free.iter().any(|f| f.overlaps(r)),
                kho_restore_folio(buddy, b.phys()).is_ok(),
            )
        })
        .collect();
    (out, kho.damage().len())
}

#[test]
fn a_damaged_chunk_header_reserves_everything_and_frees_nothing() {
    for scheme in ["xarray", "xarray-512"] {
        let img = image(scheme);
        let c = corrupt_handover(&img, CorruptClass::ChunkHeader).unwrap();
        assert!(c.what.contains("num_elms"), "{scheme}: {c}");
        let (blocks, damage) = boot(&img, scheme, OnCorruption::Salvage);
        assert_eq!(damage, 1, "{scheme}");
        assert!(!blocks.is_empty());
        for (i, &(reserved, free, restored)) in blocks.iter().enumerate() {
            let b = img.preserved[i];
            assert!(reserved, "{scheme}: {b:?} reserved");
            assert!(!free, "{scheme}: {b:?} in no free list");
            assert!(!restored, "{scheme}: {b:?} not restored");
        }
        // Linux's reject: KHO off, the preserved pages freed.
        let (blocks, damage) = boot(&img, scheme, OnCorruption::Reject);
        assert_eq!(damage, 0);
        assert!(
            blocks.iter().any(|&(_, free, _)| free),
            "{scheme}: reject frees"
        );
    }
}

#[test]
fn a_sound_kho_v1_handover_salvages_to_a_full_restore() {
    let img = image("xarray");
    let (blocks, damage) = boot(&img, "xarray", OnCorruption::Salvage);
    assert_eq!(damage, 0);
    assert!(
        blocks
            .iter()
            .all(|&(reserved, free, restored)| reserved && !free && restored)
    );
}
