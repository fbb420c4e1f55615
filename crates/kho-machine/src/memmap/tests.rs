use super::*;
use crate::boot::{BootConfig, Machine};
use crate::testing::{MIB as M, mem, pfn as p};

/// Linux's `memmap_init` never reads `memblock.reserved`: with or without
/// reservations (`RSRV_NOINIT` ones included), the same counts and the same
/// struct pages.
#[test]
fn memmap_init_ignores_reservations() {
    let mem = mem(64 * M);
    let r = |s: u64, e: u64| PhysRange::new(PhysAddr::new(s), PhysAddr::new(e)).unwrap();
    let extra = [
        r(40 * M, 41 * M),
        r(41 * M + 8192, 41 * M + 12288),
        r(50 * M, 50 * M + 4096),
    ];
    let boot = |reserve: bool| {
        let mut m = Machine::new(&mem, BootConfig::default());
        m.memblock_init().unwrap();
        if reserve {
            for x in extra {
                m.memblock.memblock_reserve(x.start(), x.size()).unwrap();
                m.memblock
                    .memblock_reserved_mark_noinit(x.start(), x.size())
                    .unwrap();
            }
        }
        m.alloc_memmap().unwrap();
        let mm = m.memmap().unwrap();
        for a in mm.allocations() {
            mem.fill(*a, 0x5a5a).unwrap();
        }
        let st = m.memmap_init().unwrap();
        let mm = m.memmap().unwrap();
        let pages: Vec<_> = (0..PAGES_PER_SECTION)
            .map(|i| mm.pfn_to_page(p(i)).unwrap().snapshot())
            .collect();
        (st, pages)
    };
    let (a, b) = (boot(false), boot(true));
    assert_eq!(a.0, b.0);
    assert!(a.1 == b.1, "struct pages differ");
    assert_eq!(b.0.noinit, 0);
    assert_eq!(b.0.reserved, 0);
}

#[test]
fn struct_page_bytes_and_accessors() {
    let mem = mem(64 * M);
    let mut m = Machine::new(&mem, BootConfig::default());
    m.memblock_init().unwrap();
    m.alloc_memmap().unwrap();
    let mm = m.memmap().unwrap();
    // One present section: 2 MiB of struct pages, top-down, PMD aligned.
    let top = PhysRange::new(PhysAddr::new(62 * M), PhysAddr::new(64 * M)).unwrap();
    assert_eq!(mm.allocations(), &[top]);
    assert_eq!(mm.footprint(), 2 * M);
    assert_eq!(
        mm.struct_page_phys(p(0x1234)),
        Ok(PhysAddr::new(62 * M + 0x1234 * 64))
    );
    assert_eq!(
        mm.pfn_to_page(p(0x8000)).err(),
        Some(MemmapError::NoStructPage {
            pfn: p(0x8000),
            section: 1
        })
    );
    let page = mm.pfn_to_page(p(0x1234)).unwrap();
    mem.fill(
        PhysRange::from_start_size(top.start().checked_add(0x1234 * 64).unwrap(), 64).unwrap(),
        !0,
    )
    .unwrap();
    page.init_single_page(0);
    let lru = 0xffff_ea00_0000_0000 + 0x1234 * 64 + 8;
    assert_eq!(
        page.snapshot(),
        [2 << 62, lru, lru, 0, 0, 0, 0x1_ffff_ffff, 0]
    );
    assert_eq!(
        (page.refcount(), page.mapcount(), page.is_buddy()),
        (1, -1, false)
    );
    assert_eq!(MemMap::page_to_pfn(&page), p(0x1234));
    page.set_buddy();
    assert_eq!(
        (page.page_type(), page.is_buddy(), page.refcount()),
        (0xf000_0000, true, 1)
    );
    page.clear_buddy();
    assert_eq!(page.mapcount(), -1);
    page.set_refcount(7);
    page.ref_inc();
    assert_eq!((page.refcount(), page.mapcount()), (8, -1));
    assert!(!page.ref_dec_and_test());
    page.set_compound_head(p(0x1200));
    assert_eq!(page.lru_next(), 0xffff_ea00_0000_0000 + 0x1200 * 64 + 1);
    assert_eq!(page.compound_head(), Some(p(0x1200)));
    page.set_flag(pg::RESERVED);
    assert!(page.is_reserved() && page.flags() & (1 << 13) != 0);
    page.clear_flag(pg::RESERVED);
    assert!(!page.is_reserved());
}

#[test]
fn memmap_errors() {
    let mem = mem(64 * M);
    // Scratch-only with no scratch: memblock cannot place the memmap.
    let mut m = Machine::new(&mem, BootConfig::default());
    m.memblock_init().unwrap();
    m.memblock.memblock_set_kho_scratch_only();
    assert!(matches!(
        m.alloc_memmap(),
        Err(crate::boot::BootError::Memmap(MemmapError::Memblock(
            MemblockError::NoSpace { .. }
        )))
    ));
    // memblock believes in memory the machine does not have: the memmap
    // lands there and touching it fails.
    let mut m = Machine::new(&mem, BootConfig::default());
    m.memblock_init().unwrap();
    // (Node 0: memory added with MAX_NUMNODES would be skipped by the
    // node-0 memmap allocation, as in Linux.)
    m.memblock
        .memblock_add_node(PhysAddr::new(64 * M), 128 * M, 0, MemblockFlags::NONE)
        .unwrap();
    m.alloc_memmap().unwrap();
    assert_eq!(
        m.memmap().unwrap().allocations()[0].start(),
        PhysAddr::new(188 * M)
    );
    assert!(matches!(
        m.memmap_init(),
        Err(crate::boot::BootError::Memmap(MemmapError::Mem(
            MemError::NotMapped { .. }
        )))
    ));
}

/// The struct pages of an eager (no deferred init) boot, page for page,
/// against Linux's rules (torvalds/linux@40735a68, `mm/mm_init.c`,
/// `mm/memblock.c`): `memmap_init` initialises every page of memory and
/// marks holes reserved; `memblock_free_all` sets `PG_reserved` on reserved
/// pages except `RSRV_NOINIT` ones, then frees the rest to the buddy.
#[test]
fn eager_boot_struct_pages_follow_linux() {
    let mem = mem(64 * M);
    let mut m = Machine::new(&mem, BootConfig::default());
    m.memblock_init().unwrap();
    let noinit = PhysAddr::new(40 * M);
    m.memblock.memblock_reserve(noinit, 64 << 10).unwrap();
    m.memblock
        .memblock_reserved_mark_noinit(noinit, 64 << 10)
        .unwrap();
    m.alloc_memmap().unwrap();
    let mm = m.memmap().unwrap();
    // Garbage everywhere, a recognisable pattern on the noinit pages.
    mem.fill(mm.allocations()[0], 0xa5a5_a5a5_a5a5_a5a5)
        .unwrap();
    let first = mm.struct_page_phys(noinit.pfn()).unwrap();
    mem.fill(
        PhysRange::from_start_size(first, 16 * 64).unwrap(),
        0x5a5a_5a5a_5a5a_5a5a,
    )
    .unwrap();
    let st = m.memmap_init().unwrap();
    // Hand-computed: RAM pfns 0..160 and 256..16384, every one initialised
    // (reserved or not); holes 160..256 and 16384..32768 (rest of section 0).
    assert_eq!(
        st,
        MemmapInitStats {
            free: 160 + 16128,
            reserved: 0,
            unavailable: 96 + 16384,
            noinit: 0,
            deferred: 0,
        }
    );
    let mm = m.memmap().unwrap();
    for pfn in 0..PAGES_PER_SECTION {
        let page = mm.pfn_to_page(p(pfn)).unwrap();
        let hole = (160..256).contains(&pfn) || pfn >= 16384;
        assert_eq!(page.is_reserved(), hole, "pfn {pfn:#x}");
        assert_eq!(
            page.snapshot()[1..],
            [page.lru_addr(), page.lru_addr(), 0, 0, 0, 0x1_ffff_ffff, 0],
            "pfn {pfn:#x}"
        );
    }
    m.memblock_free_all().unwrap();
    let mm = m.buddy().unwrap().memmap();
    for pfn in 0..PAGES_PER_SECTION {
        let page = mm.pfn_to_page(p(pfn)).unwrap();
        let noinit = (10240..10256).contains(&pfn);
        // The low 1 MiB (with its hole), the kernel, the memmap; holes.
        let reserved = pfn < 256 || (4096..8192).contains(&pfn) || pfn >= 15872;
        assert_eq!(page.is_reserved(), reserved, "pfn {pfn:#x}");
        if noinit || reserved {
            // As memmap_init left them: refcount 1, no type, private 0.
            assert_eq!(page.refcount(), 1, "pfn {pfn:#x}");
            assert_eq!(page.private(), 0, "pfn {pfn:#x}");
        } else {
            // Handed to the buddy: __free_pages_core zeroes the refcount.
            assert_eq!(page.refcount(), 0, "pfn {pfn:#x}");
        }
    }
}
