//! Tests of the new kernel's KHO: hand-overs built in-process by a small
//! old-kernel stand-in ([`Handover`]), booted with every strategy.

use std::sync::atomic::{AtomicU64, Ordering};

use kho::{
    AtomicPage, Block, FdtError, KhoFdtBuilder, KhoVersion, MemError, Order, PAGE_SIZE, PageAlloc,
    PageMap, Pfn, PhysAddr, PhysRange, RadixTree, WalkError,
};

use super::*;
use crate::arena::{MemoryLayout, PhysMem};
use crate::boot::{BootConfig, Machine};
use crate::kexec::KhoHandover;
use crate::liveupdate::{MANIFEST_NODE, new_kernel_boot};
use crate::manifest::{Checksum, Manifest, ManifestEntry, fill_pattern};
use crate::memblock::MemblockFlags;
use crate::memmap::MemmapMode;
use crate::physio::write_bytes;

use crate::testing::{KIB as K, MIB as M, block, pa, range};

const SEED: u64 = 7;

/// The old kernel's page allocator for the radix tree: a bump allocator
/// over `[next, end)` (outside scratch, as Linux's tree pages are).
struct Bump<'a> {
    mem: &'a PhysMem,
    next: AtomicU64,
    end: u64,
}

impl PageAlloc for Bump<'_> {
    fn alloc_zeroed_page(&self) -> Result<PhysAddr, MemError> {
        let p = self.next.fetch_add(PAGE_SIZE, Ordering::Relaxed);
        if p + PAGE_SIZE > self.end {
            return Err(MemError::OutOfMemory);
        }
        self.mem.page_at(pa(p))?.zero();
        Ok(pa(p))
    }

    fn free_page(&self, _phys: PhysAddr) {}
}

impl PageMap for Bump<'_> {
    fn page(&self, phys: PhysAddr) -> Result<&AtomicPage, MemError> {
        self.mem.page(phys)
    }
}

/// What the old kernel leaves for the new one, on a 128 MiB machine:
///
/// | range            | what                                               |
/// |------------------|----------------------------------------------------|
/// | 16-32 MiB        | the kernel image (the new kernel's, forbidden)     |
/// | 32-36, 36-48 MiB | scratch: lowmem, global; the array in its last page |
/// | 48-56 MiB        | radix tree pages                                   |
/// | 56 MiB           | the root FDT page, then the manifest's pages       |
/// | 64 MiB on        | the workload's folios (orders 0 to 11)             |
struct Handover {
    mem: PhysMem,
    handover: KhoHandover,
    /// Preserved folios (in the manifest too).
    folios: Vec<Block>,
    /// In the manifest, not preserved.
    forgotten: Vec<Block>,
    /// Every preserved block (folios, FDT page, manifest pages).
    preserved: Vec<Block>,
}

const FDT: u64 = 56 * M;
const SCRATCH: [(u64, u64); 2] = [(32 * M, 36 * M), (36 * M, 48 * M)];
const SCRATCH_ARRAY: u64 = 48 * M - 4 * K;

fn workload(machine: u64) -> (Vec<Block>, Vec<Block>) {
    let mut v = vec![
        block(64 * M, 11), // 8 MiB: above MAX_PAGE_ORDER
        block(72 * M, 9),
        // Touching blocks of mixed orders: one coalesced range.
        block(74 * M, 2),
        block(74 * M + 16 * K, 0),
        block(74 * M + 20 * K, 0),
        block(74 * M + 24 * K, 1),
        block(76 * M, 3),
        block(76 * M + 64 * K, 0),
        block(80 * M, 10),
    ];
    v.extend((0..5).map(|i| block(90 * M + 8 * K * i, 0)));
    if machine >= 512 * M {
        // Beyond first_deferred_pfn (256 MiB) under deferred init.
        v.extend([
            block(300 * M, 9),
            block(302 * M, 0),
            block(302 * M + 8 * K, 1),
            block(400 * M, 4),
        ]);
    }
    (v, vec![block(100 * M, 0)])
}

/// How to spoil the hand-over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    None,
    FdtMagic,
    Compatible,
    RootInScratch,
    RootOutsideRam,
}

impl Handover {
    fn build(fault: Fault) -> Self {
        Self::build_sized(128 * M, fault)
    }

    fn build_sized(machine: u64, fault: Fault) -> Self {
        let mem = PhysMem::create(MemoryLayout::pc(machine).unwrap()).unwrap();
        let (handover, folios, forgotten, preserved) = Self::write(&mem, machine, fault);
        Self {
            mem,
            handover,
            folios,
            forgotten,
            preserved,
        }
    }

    /// The old kernel's work: returns (hand-over, folios, forgotten,
    /// preserved).
    fn write(
        mem: &PhysMem,
        machine: u64,
        fault: Fault,
    ) -> (KhoHandover, Vec<Block>, Vec<Block>, Vec<Block>) {
        let bump = Bump {
            mem,
            next: AtomicU64::new(48 * M),
            end: 56 * M,
        };
        let tree = RadixTree::new(&bump).unwrap();
        let (folios, forgotten) = workload(machine);
        let mut entries = Vec::new();
        for &b in folios.iter().chain(&forgotten) {
            let checksum: Checksum = fill_pattern(mem, b, SEED).unwrap();
            entries.push(ManifestEntry { block: b, checksum });
        }
        for &b in &folios {
            tree.preserve(b).unwrap();
        }
        let mut preserved = folios.clone();
        let manifest = Manifest {
            seed: SEED,
            entries,
        };
        let blob = pa(FDT + PAGE_SIZE);
        let blob_range = manifest.write(mem, blob).unwrap();
        let nr = blob_pages(blob_range.size());
        tree.preserve_pages(blob.pfn(), nr).unwrap();
        preserved.extend(kho::split_pages(blob.pfn(), nr).unwrap());
        tree.preserve(block(FDT, 0)).unwrap();
        preserved.push(block(FDT, 0));

        let root = match fault {
            Fault::RootInScratch => pa(40 * M),
            Fault::RootOutsideRam => pa(1 << 40),
            _ => tree.root(),
        };
        let mut b = KhoFdtBuilder::new(root);
        if fault == Fault::Compatible {
            b = b.version(KhoVersion::V1);
        }
        b.add_subnode(MANIFEST_NODE, blob, blob_range.size());
        let mut fdt = b.build().unwrap();
        if fault == Fault::FdtMagic {
            fdt[0] ^= 0xff;
        }
        write_bytes(mem, pa(FDT), &fdt).unwrap();
        let handover = KhoHandover {
            node: PhysAddr::ZERO,
            fdt: PhysRange::from_start_size(pa(FDT), PAGE_SIZE).unwrap(),
            scratch_array: PhysRange::from_start_size(pa(SCRATCH_ARRAY), 32).unwrap(),
            scratch: SCRATCH.iter().map(|&(s, e)| range(s, e)).collect(),
        };
        (handover, folios, forgotten, preserved)
    }
}

/// The new kernel's boot up to a live buddy allocator.
fn boot<'m>(
    h: &'m Handover,
    strategy: Strategy,
) -> (
    Machine<'m>,
    Kho,
    KhoMemoryInitStats,
    Vec<crate::MemblockRegion>,
) {
    boot_in(h, strategy, MemmapMode::Eager)
}

/// [`boot`] in a kernel configuration, through `page_alloc_init_late`.
fn boot_in<'m>(
    h: &'m Handover,
    strategy: Strategy,
    mode: MemmapMode,
) -> (
    Machine<'m>,
    Kho,
    KhoMemoryInitStats,
    Vec<crate::MemblockRegion>,
) {
    let config = BootConfig {
        memmap: mode,
        ..BootConfig::default()
    };
    boot_with(h, strategy, config)
}

/// [`boot`] with a whole boot configuration.
fn boot_with<'m>(
    h: &'m Handover,
    strategy: Strategy,
    config: BootConfig,
) -> (
    Machine<'m>,
    Kho,
    KhoMemoryInitStats,
    Vec<crate::MemblockRegion>,
) {
    let mode = config.memmap;
    let mut m = Machine::new(&h.mem, config);
    m.memblock_init().unwrap();
    let mut kho = kho_populate(&mut m, &h.handover, None);
    m.alloc_memmap().unwrap();
    let st = if mode == MemmapMode::Lazy {
        let st = kho_memory_init(&mut m, &mut kho, strategy);
        m.set_skip(kho.skip_ranges());
        m.memmap_init().unwrap();
        st
    } else {
        m.memmap_init().unwrap();
        let st = kho_memory_init(&mut m, &mut kho, strategy);
        m.set_skip(kho.skip_ranges());
        st
    };
    let reserved = m.memblock.reserved.regions().to_vec();
    m.memblock_free_all().unwrap();
    m.page_alloc_init_late().unwrap();
    assert!(!m.memblock.kho_scratch_only());
    (m, kho, st, reserved)
}

#[test]
fn memmap_modes_yield_the_same_buddy_and_folios() {
    let sorted = |m: &Machine<'_>| -> FreeLists {
        let mut l = m.buddy().unwrap().free_lists().unwrap();
        for (_, pfns) in &mut l {
            pfns.sort_unstable();
        }
        l
    };
    let h = Handover::build_sized(512 * M, Fault::None);
    let (m, ..) = boot_in(&h, Strategy::PerBlock, MemmapMode::Eager);
    let base = sorted(&m);
    let nr_free = m.buddy().unwrap().nr_free_pages();
    drop(m);
    for mode in MemmapMode::ALL {
        for s in [
            Strategy::PerBlock,
            Strategy::MainlineFix,
            Strategy::Bulk,
            Strategy::Skip,
        ] {
            let h = Handover::build_sized(512 * M, Fault::None);
            let (m, kho, ..) = boot_in(&h, s, mode);
            assert!(kho.is_enabled(), "{mode} {s}");
            assert_eq!(sorted(&m), base, "{mode} {s}: free lists");
            let buddy = m.buddy().unwrap();
            assert_eq!(buddy.nr_free_pages(), nr_free, "{mode} {s}");
            for b in &h.folios {
                assert_eq!(
                    kho_restore_folio(buddy, b.phys()),
                    Ok((b.pfn(), b.order())),
                    "{mode} {s}"
                );
            }
        }
    }
}

type FreeLists = Vec<(Order, Vec<Pfn>)>;
type Restores = Vec<Result<(Pfn, Order), KhoError>>;

/// Free lists, then a restore of every preserved folio and of a few
/// addresses that are not preserved heads.
fn outcome(h: &Handover, strategy: Strategy) -> (FreeLists, Restores, Vec<crate::MemblockRegion>) {
    let (m, kho, st, reserved) = boot(h, strategy);
    assert!(kho.is_enabled(), "{strategy}: {:?}", kho.error());
    assert_eq!(st.blocks, h.preserved.len() as u64);
    let buddy = m.buddy().unwrap();
    let free = buddy.free_lists().unwrap();
    let not_heads = [
        pa(74 * M + 4 * K), // inside an order-2 block
        pa(100 * M),        // forgotten
        pa(64 * M + 4 * M), // tail of the gigantic folio
        pa(120 * M),        // free memory
    ];
    let restores = h
        .folios
        .iter()
        .map(|b| b.phys())
        .chain(not_heads)
        .map(|p| kho_restore_folio(buddy, p))
        .collect();
    (free, restores, reserved)
}

#[test]
fn strategies_yield_the_same_buddy_and_folios() {
    let base = outcome(&Handover::build(Fault::None), Strategy::PerBlock);
    // Every folio comes back with its order; the others fail.
    let h = Handover::build(Fault::None);
    for (r, b) in base.1.iter().zip(&h.folios) {
        assert_eq!(r, &Ok((b.pfn(), b.order())));
    }
    assert!(base.1[h.folios.len()..].iter().all(|r| r.is_err()));
    let noinit: Vec<_> = base
        .2
        .iter()
        .filter(|r| r.flags.contains(MemblockFlags::RSRV_NOINIT))
        .map(|r| r.range())
        .collect();
    // 64-72 MiB (order 11), 72-74 MiB (order 9) and the four touching
    // blocks from 74 MiB are one RSRV_NOINIT region.
    assert!(noinit.contains(&range(64 * M, 74 * M + 32 * K)));
    for s in Strategy::ALL
        .into_iter()
        .filter(|s| *s != Strategy::PerBlock)
    {
        let o = outcome(&Handover::build(Fault::None), s);
        assert_eq!(o.0, base.0, "{s}: free lists");
        assert_eq!(o.1, base.1, "{s}: restores");
        if s != Strategy::Skip {
            assert_eq!(o.2, base.2, "{s}: memblock.reserved");
        } else {
            assert!(
                o.2.iter()
                    .all(|r| !r.flags.contains(MemblockFlags::RSRV_NOINIT))
            );
        }
    }
}

#[test]
fn restored_folios_are_live_and_counted() {
    let h = Handover::build(Fault::None);
    let (m, ..) = boot(&h, Strategy::Skip);
    let buddy = m.buddy().unwrap();
    let mm = buddy.memmap();
    let managed = buddy.managed_pages();
    let free = buddy.nr_free_pages();
    let big = block(64 * M, 11);
    assert_eq!(
        kho_restore_folio(buddy, big.phys()),
        Ok((big.pfn(), big.order()))
    );
    assert_eq!(buddy.managed_pages(), managed + 2048);
    assert_eq!(buddy.nr_free_pages(), free);
    assert_eq!(mm.folio_order(big.pfn()).unwrap(), big.order());
    let head = mm.pfn_to_page(big.pfn()).unwrap();
    assert_eq!((head.refcount(), head.private()), (1, 0));
    let tail = mm.pfn_to_page(big.pfn().checked_add(5).unwrap()).unwrap();
    assert_eq!(tail.refcount(), 0);
    assert_eq!(tail.compound_head(), Some(big.pfn()));
    // The forgotten page is no folio.
    assert!(kho_restore_folio(buddy, h.forgotten[0].phys()).is_err());
    // Pages: each with refcount 1.
    let fdt_pfn = kho_restore_pages(buddy, pa(FDT), 1).unwrap();
    assert_eq!(mm.pfn_to_page(fdt_pfn).unwrap().refcount(), 1);
    let b = block(80 * M, 10);
    kho_restore_folio(buddy, b.phys()).unwrap();
    buddy.folio_put(b.pfn()).unwrap();
    assert_eq!(buddy.nr_free_pages(), free + 1024);
}

#[test]
fn restore_checks_are_linuxs() {
    let h = Handover::build(Fault::None);
    let (m, ..) = boot(&h, Strategy::Bulk);
    let buddy = m.buddy().unwrap();
    let mm = buddy.memmap();
    // PHYS_PFN: an address inside a preserved head's page restores that
    // folio (Linux does not check the alignment of phys).
    assert_eq!(
        kho_restore_folio(buddy, pa(72 * M + 8)),
        Ok((pa(72 * M).pfn(), Order::new(9)))
    );
    // Double restore: private was cleared.
    assert_eq!(
        kho_restore_folio(buddy, pa(72 * M)),
        Err(KhoError::BadMagic {
            phys: pa(72 * M),
            private: 0
        })
    );
    // Not preserved (free memory: a buddy page or a tail).
    assert!(matches!(
        kho_restore_folio(buddy, pa(120 * M)),
        Err(KhoError::BadMagic { .. })
    ));
    // The recorded order is trusted: an order-2 block asked for as one
    // page comes back as its four pages, each with refcount 1.
    assert_eq!(
        kho_restore_pages(buddy, pa(74 * M), 1),
        Ok(pa(74 * M).pfn())
    );
    for i in 0..4 {
        let p = mm.pfn_to_page(pa(74 * M + i * 4096).pfn()).unwrap();
        assert_eq!(p.refcount(), 1, "page {i}");
    }
    // The model's one bound: an order whose block runs past the memmap.
    let page = mm.pfn_to_page(pa(76 * M).pfn()).unwrap();
    KhoPageInfo {
        order: 60,
        magic: KHO_PAGE_MAGIC,
    }
    .write(&page);
    assert!(matches!(
        kho_restore_folio(buddy, pa(76 * M)),
        Err(KhoError::BadOrder { order: 60, .. })
    ));
    // A frame without a struct page (pfn_to_online_page fails).
    assert!(matches!(
        kho_restore_folio(buddy, pa(1 << 40)),
        Err(KhoError::Memmap { .. })
    ));
}

/// A boot with nothing preserved, for comparison.
fn plain_free_pages(h: &Handover) -> u64 {
    let mut m = Machine::new(&h.mem, BootConfig::default());
    m.memblock_init().unwrap();
    m.alloc_memmap().unwrap();
    m.memmap_init().unwrap();
    m.memblock_free_all().unwrap();
    m.buddy().unwrap().nr_free_pages()
}

#[test]
fn faults_boot_without_kho_and_lose_nothing_else() {
    for (fault, strategy) in [
        (Fault::FdtMagic, Strategy::PerBlock),
        (Fault::Compatible, Strategy::Coalesced),
        (Fault::RootInScratch, Strategy::Bulk),
        (Fault::RootOutsideRam, Strategy::Skip),
        (Fault::RootInScratch, Strategy::PerBlock),
    ] {
        let h = Handover::build(fault);
        let (m, kho, st, _) = boot(&h, strategy);
        let e = kho.error().cloned();
        assert!(!kho.is_enabled(), "{fault:?}");
        match fault {
            Fault::FdtMagic => assert!(matches!(
                e,
                Some(KhoError::Fdt {
                    source: FdtError::Malformed(_),
                    ..
                })
            )),
            Fault::Compatible => assert_eq!(
                e,
                Some(KhoError::Compatible {
                    fdt: h.handover.fdt,
                    found: KhoVersion::V1
                })
            ),
            Fault::RootInScratch => assert!(matches!(
                e,
                Some(KhoError::Walk {
                    source: WalkError::RootForbidden { .. },
                    ..
                })
            )),
            Fault::RootOutsideRam => assert!(matches!(
                e,
                Some(KhoError::Walk {
                    source: WalkError::RootOutsideRam { .. },
                    ..
                })
            )),
            Fault::None => unreachable!(),
        }
        assert_eq!(st.blocks, 0);
        assert!(kho.skip_ranges().is_empty());
        // The boot completed and every page a plain boot frees is free.
        let buddy = m.buddy().unwrap();
        assert!(buddy.free_lists().is_ok());
        let free = buddy.nr_free_pages();
        drop(m);
        // A walk that fails leaves what kho_populate reserved, as Linux
        // does (kho_mem_retrieve's failure only clears kho_in.fdt_phys):
        // the scratch array's page stays reserved.
        let kept = match fault {
            Fault::RootInScratch | Fault::RootOutsideRam => {
                let a = h.handover.scratch_array;
                (a.end().as_u64().div_ceil(4096)) - (a.start().as_u64() / 4096)
            }
            _ => 0,
        };
        assert_eq!(free, plain_free_pages(&h) - kept, "{fault:?}");
        // Nothing is restorable.
        let (m, ..) = boot(&h, strategy);
        assert!(kho_restore_folio(m.buddy().unwrap(), pa(72 * M)).is_err());
    }
}

#[test]
fn kho_populate_marks_scratch_and_reserves_the_array() {
    let h = Handover::build(Fault::None);
    let mut m = Machine::new(&h.mem, BootConfig::default());
    m.memblock_init().unwrap();
    let kho = kho_populate(&mut m, &h.handover, None);
    let k = kho.incoming().unwrap();
    assert_eq!(k.version, KhoVersion::V3);
    assert!(k.subnode(MANIFEST_NODE).is_some());
    assert!(m.memblock.kho_scratch_only());
    assert!(
        m.memblock
            .memblock_is_region_reserved(pa(SCRATCH_ARRAY), 32)
    );
    let scratch: Vec<_> = m
        .memblock
        .memory
        .regions()
        .iter()
        .filter(|r| r.flags.contains(MemblockFlags::KHO_SCRATCH))
        .map(|r| (r.range(), r.nid))
        .collect();
    assert_eq!(scratch, vec![(range(32 * M, 48 * M), 0)]);
    // The memmap comes from scratch.
    m.alloc_memmap().unwrap();
    let memmap = m.memmap().unwrap().allocations()[0];
    assert!(range(32 * M, 48 * M).contains_range(memmap));
}

#[test]
fn kho_memory_init_before_alloc_memmap_disables_kho() {
    let h = Handover::build(Fault::None);
    let mut m = Machine::new(&h.mem, BootConfig::default());
    m.memblock_init().unwrap();
    let mut kho = kho_populate(&mut m, &h.handover, None);
    kho_memory_init(&mut m, &mut kho, Strategy::Coalesced);
    assert_eq!(kho.error(), Some(&KhoError::NoMemmap));
    // Scratch-only ends in memblock_free_all, as in Linux, not here.
    assert!(m.memblock.kho_scratch_only());
}

#[test]
fn missing_or_broken_handover_boots_without_kho() {
    let h = Handover::build(Fault::None);
    let r = new_kernel_boot(&h.mem, Ok(None), Strategy::Bulk, MemmapMode::Eager, None).unwrap();
    assert_eq!(
        r.kho_error.as_deref(),
        Some("no KHO hand-over in setup_data")
    );
    assert_eq!((r.blocks, r.verified_bytes, r.lost_bytes), (0, 0, 0));
    let r = new_kernel_boot(
        &h.mem,
        Err(crate::kexec::KexecError::ChainTooLong {
            head: PhysAddr::ZERO,
            max: 64,
        }),
        Strategy::Bulk,
        MemmapMode::Eager,
        None,
    );
    assert!(
        r.unwrap()
            .kho_error
            .unwrap()
            .starts_with("hand-over rejected")
    );
}

#[test]
fn new_kernel_boot_verifies_every_byte_for_every_strategy_and_memmap_mode() {
    for (s, mode) in Strategy::ALL
        .into_iter()
        .flat_map(|s| MemmapMode::ALL.map(|m| (s, m)))
    {
        let h = Handover::build(Fault::None);
        let r = new_kernel_boot(&h.mem, Ok(Some(h.handover.clone())), s, mode, None).unwrap();
        assert_eq!(r.kho_error, None);
        assert_eq!(r.memmap, mode);
        // Every struct page is initialised exactly once before the
        // restore, as on the baseline boot, except under lazy, whose
        // restore initialises the restored folios' pages.
        match mode {
            MemmapMode::Lazy => {
                assert!(r.restore_inited_pages > 0, "{s} {mode}");
                assert!(
                    r.memmap_inited_pages + r.restore_inited_pages
                        <= r.baseline_memmap_inited_pages,
                    "{s} {mode}"
                );
            }
            _ => {
                assert_eq!(
                    r.memmap_inited_pages, r.baseline_memmap_inited_pages,
                    "{s} {mode}"
                );
                assert_eq!(r.restore_inited_pages, 0, "{s} {mode}");
            }
        }
        assert_eq!(r.blocks, h.preserved.len() as u64);
        let lost: u64 = h.forgotten.iter().map(|b| b.size()).sum();
        assert_eq!(r.lost_bytes, lost, "{s}: the forgotten page is lost");
        let walked: u64 = h.preserved.iter().map(|b| b.size()).sum();
        assert_eq!(r.verified_bytes, walked, "{s}");
        assert_eq!(r.preserved_bytes, walked + lost, "{s}");
        assert!(r.memblock_reserved_regions > 0);
    }
}

#[test]
fn report_json_has_the_seventeen_keys_and_kho_error_only_when_set() {
    let h = Handover::build(Fault::None);
    let r = new_kernel_boot(
        &h.mem,
        Ok(Some(h.handover.clone())),
        Strategy::Skip,
        MemmapMode::Eager,
        None,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 17, "{keys:?}");
    for k in ["memmap", "memmap_inited_pages", "restore_inited_pages"] {
        assert!(v.get(k).is_some(), "{k} in {keys:?}");
    }
    assert_eq!(v["memmap"], "eager");
    let h = Handover::build(Fault::RootOutsideRam);
    let r = new_kernel_boot(
        &h.mem,
        Ok(Some(h.handover.clone())),
        Strategy::Skip,
        MemmapMode::Eager,
        None,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    let e = v["kho_error"].as_str().unwrap();
    assert!(e.contains("is not inside RAM"), "{e}");
}

#[test]
fn strategy_names_round_trip() {
    for s in Strategy::ALL {
        assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
    }
    assert!("fast".parse::<Strategy>().is_err());
}

/// A tracker's map as a plain list of blocks: the [`PreservedMap`]
/// defaults (coalescing by merge, heads from the extents).
struct ListMap(Vec<Block>);

impl PreservedMap for ListMap {
    type Error = ReserveError;

    fn for_each_extent<F>(&mut self, mut f: F) -> Result<MapSummary, ReserveError>
    where
        F: FnMut(Extent) -> Result<(), ReserveError>,
    {
        let mut summary = MapSummary::default();
        for &b in &self.0 {
            f(Extent::block(b))?;
            summary.add(Extent::block(b));
        }
        Ok(summary)
    }
}

/// Any map feeds every strategy: the radix tree and the same blocks as a
/// plain list are accounted alike (the same memory reserved, the same
/// heads, the same skip list), and the ranged strategies reserve exactly
/// the maximal ranges.
#[test]
fn any_map_feeds_every_strategy() {
    let h = Handover::build(Fault::None);
    let mut m = Machine::new(&h.mem, BootConfig::default());
    m.memblock_init().unwrap();
    let kho = kho_populate(&mut m, &h.handover, None);
    let k = kho.incoming().unwrap();
    let forbidden = memory_init::kho_forbidden(&m, k);
    let ram = kho::RamMap::new(h.mem.layout().ram(), &forbidden).unwrap();
    let mut blocks = Vec::new();
    RadixMap::new(&h.mem, ram, k.root)
        .for_each_extent(|e| {
            blocks.extend(e.blocks());
            Ok(())
        })
        .unwrap();
    let maximal = kho::merge_ranges(blocks.iter().filter_map(|b| b.range()).collect());
    for s in Strategy::ALL {
        let (mut radix, mut list) = (Recorder::default(), Recorder::default());
        let (a, a_skip) =
            reserve_preserved(s, &mut RadixMap::new(&h.mem, ram, k.root), &mut radix).unwrap();
        let (b, b_skip) = reserve_preserved(s, &mut ListMap(blocks.clone()), &mut list).unwrap();
        assert_eq!((a.blocks, a.bytes), (b.blocks, b.bytes), "{s}");
        assert_eq!(a.blocks, h.preserved.len() as u64, "{s}");
        assert_eq!(a_skip, b_skip, "{s}");
        let heads = |r: &Recorder| {
            r.heads
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(heads(&radix), heads(&list), "{s}");
        assert_eq!(radix.heads.len(), blocks.len(), "{s}");
        match s {
            Strategy::PerBlock => {
                assert_eq!(radix.reserved, list.reserved);
                assert_eq!(radix.reserved.len(), blocks.len());
            }
            Strategy::MainlineFixA | Strategy::MainlineFixAb | Strategy::MainlineFix => {
                // Same-order runs, in walk order: fewer calls than blocks,
                // together exactly the preserved memory.
                assert_eq!(radix.reserved, list.reserved, "{s}");
                assert!(radix.reserved.len() < blocks.len(), "{s}");
                assert!(radix.reserved.len() >= maximal.len(), "{s}");
                assert_eq!(kho::merge_ranges(radix.reserved.clone()), maximal, "{s}");
            }
            Strategy::Coalesced | Strategy::Bulk => {
                assert_eq!(radix.reserved, maximal, "{s}");
                assert_eq!(list.reserved, maximal, "{s}");
            }
            Strategy::Skip => {
                assert!(radix.reserved.is_empty() && list.reserved.is_empty());
                assert_eq!(a_skip, maximal);
            }
        }
    }
}

/// What Linux's rules give a struct page after `memblock_free_all` (and
/// `page_alloc_init_late`), from memblock's state and the preserved blocks
/// alone: the oracle of [`struct_pages_follow_linuxs_rules_page_for_page`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Untouched since the poison (lazy's preserved pages); `private` is
    /// the KHO head info on a head.
    Poison { private: Option<u64> },
    /// Initialised, `PG_reserved`, refcount 1 (holes, reserved memory).
    Reserved,
    /// Initialised, not reserved, refcount 1, `private` the KHO head info
    /// on a head, else 0 (preserved memory, eager and deferred).
    Preserved { private: u64 },
    /// Initialised and freed: not reserved, refcount 0.
    Free,
}

fn expected_struct_page(
    pfn: u64,
    memory: &[crate::MemblockRegion],
    reserved: &[crate::MemblockRegion],
    heads: &std::collections::HashMap<u64, Order>,
    preserved: &[Block],
    mode: MemmapMode,
) -> Expect {
    let addr = pfn * PAGE_SIZE;
    let inside = |r: &crate::MemblockRegion| r.range().contains(pa(addr));
    if !memory.iter().any(inside) {
        return Expect::Reserved;
    }
    let head_info = heads.get(&pfn).map(|o| KhoPageInfo::new(*o).to_private());
    if preserved
        .iter()
        .any(|b| b.range().is_some_and(|r| r.contains(pa(addr))))
    {
        return match mode {
            MemmapMode::Lazy => Expect::Poison { private: head_info },
            _ => Expect::Preserved {
                private: head_info.unwrap_or(0),
            },
        };
    }
    if reserved.iter().any(inside) {
        return Expect::Reserved;
    }
    Expect::Free
}

#[test]
fn struct_pages_follow_linuxs_rules_page_for_page() {
    use crate::manifest::POISON;
    use crate::memmap::pg;
    for mode in MemmapMode::ALL {
        let h = Handover::build_sized(512 * M, Fault::None);
        let config = BootConfig {
            memmap: mode,
            ..BootConfig::default()
        };
        let mut m = Machine::new(&h.mem, config);
        m.memblock_init().unwrap();
        let mut kho = kho_populate(&mut m, &h.handover, None);
        m.alloc_memmap().unwrap();
        for r in m.memmap().unwrap().allocations() {
            h.mem.fill(*r, POISON).unwrap();
        }
        if mode == MemmapMode::Lazy {
            kho_memory_init(&mut m, &mut kho, Strategy::Bulk);
            m.memmap_init().unwrap();
        } else {
            m.memmap_init().unwrap();
            kho_memory_init(&mut m, &mut kho, Strategy::Bulk);
        }
        assert!(kho.error().is_none(), "{mode}");
        let memory = m.memblock.memory.regions().to_vec();
        let reserved = m.memblock.reserved.regions().to_vec();
        m.memblock_free_all().unwrap();
        m.page_alloc_init_late().unwrap();
        let buddy = m.buddy().unwrap();
        let mm = buddy.memmap();
        match mode {
            MemmapMode::Deferred => assert_eq!(mm.first_deferred_pfn(), Pfn::new(65536)),
            _ => assert_eq!(mm.first_deferred_pfn(), None),
        }
        let heads: std::collections::HashMap<u64, Order> = h
            .preserved
            .iter()
            .map(|b| (b.pfn().as_u64(), b.order()))
            .collect();
        let buddy_heads: std::collections::HashMap<u64, Order> = buddy
            .free_lists()
            .unwrap()
            .into_iter()
            .flat_map(|(o, pfns)| pfns.into_iter().map(move |p| (p.as_u64(), o)))
            .collect();
        let max = mm.max_pfn().as_u64();
        let mut counts = std::collections::HashMap::<&str, u64>::new();
        for pfn in 0..max {
            let page = mm.pfn_to_page(Pfn::new(pfn).unwrap()).unwrap();
            let w = page.snapshot();
            let want = expected_struct_page(pfn, &memory, &reserved, &heads, &h.preserved, mode);
            let what = format!("{mode}: pfn {pfn:#x} {want:?} {page:?}");
            match want {
                Expect::Poison { private } => {
                    for (i, word) in w.iter().enumerate() {
                        let expect = if i == 5 {
                            private.unwrap_or(POISON)
                        } else {
                            POISON
                        };
                        assert_eq!(*word, expect, "{what} word {i}");
                    }
                    *counts.entry("poison").or_default() += 1;
                }
                Expect::Reserved => {
                    assert!(page.is_reserved(), "{what}");
                    assert_eq!((page.refcount(), page.private()), (1, 0), "{what}");
                    assert_eq!(page.memcg_data(), 0, "{what}");
                    *counts.entry("reserved").or_default() += 1;
                }
                Expect::Preserved { private } => {
                    assert!(!page.is_reserved(), "{what}");
                    assert_eq!((page.refcount(), page.private()), (1, private), "{what}");
                    assert_eq!(page.memcg_data(), 0, "{what}");
                    *counts.entry("preserved").or_default() += 1;
                }
                Expect::Free => {
                    assert!(!page.is_reserved(), "{what}");
                    assert_eq!(page.refcount(), 0, "{what}");
                    assert_eq!(page.memcg_data(), 0, "{what}");
                    match buddy_heads.get(&pfn) {
                        Some(o) => {
                            assert!(page.is_buddy(), "{what}");
                            assert_eq!(page.buddy_order(), u64::from(o.as_u32()), "{what}");
                        }
                        None => assert!(!page.is_buddy() && page.private() == 0, "{what}"),
                    }
                    *counts.entry("free").or_default() += 1;
                }
            }
        }
        let preserved_pages: u64 = h.preserved.iter().map(|b| b.order().pages()).sum();
        let key = if mode == MemmapMode::Lazy {
            "poison"
        } else {
            "preserved"
        };
        assert_eq!(counts[key], preserved_pages, "{mode}: {counts:?}");
        assert!(counts["free"] > 0 && counts["reserved"] > 0, "{mode}");

        // After restore: every folio live, its struct pages initialised
        // (under lazy, by the restore), head refcount 1, tails 0.
        for b in &h.folios {
            assert_eq!(
                kho_restore_folio(buddy, b.phys()),
                Ok((b.pfn(), b.order())),
                "{mode}"
            );
            let head = mm.pfn_to_page(b.pfn()).unwrap();
            assert_eq!((head.refcount(), head.private()), (1, 0), "{mode} {b:?}");
            assert!(!head.is_reserved(), "{mode} {b:?}");
            assert_eq!(
                head.test_flag(pg::HEAD),
                b.order().as_u32() > 0,
                "{mode} {b:?}"
            );
            for i in 1..b.order().pages() {
                let t = mm.pfn_to_page(b.pfn().checked_add(i).unwrap()).unwrap();
                assert_eq!(t.refcount(), 0, "{mode} {b:?} tail {i}");
                assert_eq!(t.compound_head(), Some(b.pfn()), "{mode} {b:?} tail {i}");
                assert_eq!(t.memcg_data(), 0, "{mode} {b:?} tail {i}");
            }
        }
    }
}

#[test]
fn results_are_independent_of_the_thread_count() {
    let sorted = |m: &Machine<'_>| -> FreeLists {
        let mut l = m.buddy().unwrap().free_lists().unwrap();
        for (_, pfns) in &mut l {
            pfns.sort_unstable();
        }
        l
    };
    for mode in MemmapMode::ALL {
        for s in [Strategy::PerBlock, Strategy::Bulk, Strategy::Skip] {
            let mut seen = Vec::new();
            for (threads, parallel_memmap_init) in [(1, false), (2, false), (2, true), (4, true)] {
                let h = Handover::build_sized(512 * M, Fault::None);
                let config = BootConfig {
                    memmap: mode,
                    threads,
                    parallel_memmap_init,
                    ..BootConfig::default()
                };
                let (m, kho, st, reserved) = boot_with(&h, s, config);
                assert!(kho.is_enabled());
                assert_eq!(m.memmap().unwrap().threads(), threads);
                let buddy = m.buddy().unwrap();
                let restores: Restores = h
                    .folios
                    .iter()
                    .map(|b| kho_restore_folio(buddy, b.phys()))
                    .collect();
                assert!(restores.iter().all(Result::is_ok), "{mode} {s} {threads}");
                let inited = buddy.memmap().inited_pages();
                seen.push((sorted(&m), restores, reserved, st.blocks, inited));
            }
            for (i, o) in seen.iter().enumerate().skip(1) {
                assert_eq!(o, &seen[0], "{mode} {s}: run {i} differs from one thread");
            }
        }
    }
}
