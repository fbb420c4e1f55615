use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::boot::{BootConfig, Machine};
use crate::testing::{GIB as G, MIB as M, mem, pfn as p, shuffle};

fn o(x: u8) -> Order {
    Order::new(x)
}

type Snapshot = Vec<(Order, Vec<Pfn>)>;

/// `memblock_free_all_except` frees exactly what `memblock_free_all`
/// frees when the skipped ranges are reserved instead.
#[test]
fn free_all_except_equals_reservation() {
    let mem = mem(128 * M);
    let r = |s: u64, e: u64| PhysRange::new(PhysAddr::new(s), PhysAddr::new(e)).unwrap();
    // Unaligned to max order, touching, and one at the end of RAM.
    let skip = [
        r(40 * M + 4096, 40 * M + 3 * 4096),
        r(40 * M + 3 * 4096, 44 * M),
        r(60 * M, 60 * M + 8192),
        r(127 * M, 128 * M),
    ];
    let boot = |with_skip: bool| {
        let mut m = Machine::new(&mem, BootConfig::default());
        m.memblock_init().unwrap();
        if !with_skip {
            for x in skip {
                m.memblock.memblock_reserve(x.start(), x.size()).unwrap();
            }
        }
        m.memblock.memblock_set_kho_scratch_only();
        m.memblock
            .memblock_mark_kho_scratch(PhysAddr::new(64 * M), 16 * M)
            .unwrap();
        m.alloc_memmap().unwrap();
        m.memmap_init().unwrap();
        let freed = m
            .memblock_free_all_except(if with_skip { &skip } else { &[] })
            .unwrap();
        assert!(!m.memblock.kho_scratch_only());
        (freed, m.buddy().unwrap().free_lists().unwrap())
    };
    assert_eq!(boot(true), boot(false));
}

#[test]
fn poison_on_alloc_fills_every_block_handed_out() {
    let mem = mem(64 * M);
    let m = Machine::boot(&mem).unwrap();
    let b = m.buddy().unwrap();
    let quiet = b.alloc_pages(o(1)).unwrap();
    assert_ne!(
        mem.page_at(quiet.phys()).unwrap().load(0),
        Some(crate::manifest::POISON)
    );
    b.set_poison_on_alloc(true);
    let pfn = b.alloc_pages(o(1)).unwrap();
    let second = pfn.checked_add(1).unwrap().phys();
    assert_eq!(
        mem.page_at(second).unwrap().load(511),
        Some(crate::manifest::POISON)
    );
    // PageAlloc still hands out zeroed pages.
    let z = b.alloc_zeroed_page().unwrap();
    assert!(mem.page_at(z).unwrap().is_zero());
}

/// The free lists of a booted 64 MiB machine, by hand: free ranges are
/// pfns 256..4096 (1 MiB to the kernel at 16 MiB) and 8192..15872 (32 MiB
/// to the memmap at 62 MiB), cut in naturally aligned chunks.
fn expected_boot_lists() -> Snapshot {
    let mut lists: Snapshot = (0..NR_PAGE_ORDERS as u8)
        .map(|i| (o(i), Vec::new()))
        .collect();
    lists[8].1 = vec![p(256)];
    lists[9].1 = vec![p(512), p(15360)];
    lists[10].1 = [1024, 2048, 3072]
        .into_iter()
        .chain((8192..15360).step_by(1024))
        .map(p)
        .collect();
    lists
}

#[test]
fn free_all_on_a_small_machine_frees_ram_minus_reserved() {
    let mem = mem(64 * M);
    let m = Machine::boot(&mem).unwrap();
    let b = m.buddy().unwrap();
    // RAM 640 KiB + 63 MiB; reserved the low 1 MiB, 16 MiB of kernel and
    // 2 MiB of memmap: 45 MiB free.
    assert_eq!(b.nr_free_pages(), 45 * M / 4096);
    assert_eq!(b.managed_pages(), 45 * M / 4096);
    assert_eq!(b.free_lists().unwrap(), expected_boot_lists());
    let mm = b.memmap();
    let kernel = mm.pfn_to_page(p(5000)).unwrap();
    assert!(kernel.is_reserved() && kernel.refcount() == 1);
    let head = mm.pfn_to_page(p(1024)).unwrap();
    assert!(head.is_buddy() && !head.is_reserved() && head.refcount() == 0);
    assert_eq!(head.buddy_order(), 10);
    let inner = mm.pfn_to_page(p(1025)).unwrap();
    assert!(!inner.is_buddy() && !inner.is_reserved() && inner.refcount() == 0);
    // Reserved regions were given node 0 by memmap_init_reserved_pages,
    // except the part of the low 1 MiB in the 640K-1M hole: no memory
    // there, so it keeps the NUMA_NO_NODE of memblock_reserve (as in Linux).
    let nids: Vec<(u64, i32)> = m
        .memblock
        .reserved
        .regions()
        .iter()
        .map(|r| (r.base.as_u64(), r.nid))
        .collect();
    assert_eq!(
        nids,
        vec![
            (0, 0),
            (640 << 10, crate::memblock::NUMA_NO_NODE),
            (16 * M, 0),
            (62 * M, 0)
        ]
    );
}

#[test]
fn alloc_free_round_trips_and_merges_back() {
    let mem = mem(64 * M);
    let m = Machine::boot(&mem).unwrap();
    let b = m.buddy().unwrap();
    let initial = b.free_lists().unwrap();
    // The smallest block that fits is split: order 8 at 256.
    let pfn = b.alloc_pages(o(3)).unwrap();
    assert_eq!(pfn, p(256));
    assert_eq!(b.nr_free_pages(), 11520 - 8);
    let lists = b.free_lists().unwrap();
    assert_eq!(lists[3].1, vec![p(264)]);
    assert_eq!(lists[7].1, vec![p(384)]);
    b.free_pages(pfn, o(3)).unwrap();
    assert_eq!(b.free_lists().unwrap(), initial);
    // Many order-0 pages freed in random order merge back to max order.
    let mut pages: Vec<Pfn> = (0..3000).map(|_| b.alloc_pages(o(0)).unwrap()).collect();
    assert_eq!(b.nr_free_pages(), 11520 - 3000);
    shuffle(&mut pages, 11);
    for pfn in pages {
        b.free_pages(pfn, o(0)).unwrap();
    }
    assert_eq!(b.free_lists().unwrap(), initial);
    // split_page: four order-0 pages freed one by one.
    let pfn = b.alloc_pages(o(2)).unwrap();
    b.split_page(pfn, o(2)).unwrap();
    for i in [2, 0, 3, 1] {
        b.free_pages(p(pfn.as_u64() + i), o(0)).unwrap();
    }
    assert_eq!(b.free_lists().unwrap(), initial);
}

#[test]
fn folios_are_compound_pages() {
    let mem = mem(64 * M);
    let m = Machine::boot(&mem).unwrap();
    let b = m.buddy().unwrap();
    let initial = b.free_lists().unwrap();
    let head = b.folio_alloc(o(4)).unwrap();
    let mm = b.memmap();
    assert_eq!(mm.folio_order(head), Ok(o(4)));
    let h = mm.pfn_to_page(head).unwrap();
    assert!(h.is_head() && h.refcount() == 1 && h.compound_head().is_none());
    let first = mm.pfn_to_page(p(head.as_u64() + 1)).unwrap();
    assert_eq!(first.words()[4].load(Ordering::Relaxed), 16);
    for i in 1..16 {
        let t = mm.pfn_to_page(p(head.as_u64() + i)).unwrap();
        assert_eq!(t.compound_head(), Some(head));
        if i > 1 {
            assert_eq!(t.mapping(), TAIL_MAPPING);
        }
    }
    assert_eq!(
        b.free_pages(head, o(3)),
        Err(BuddyError::BadPage {
            pfn: head,
            reason: "folio order differs from the order freed"
        })
    );
    b.folio_put(head).unwrap();
    assert_eq!(b.free_lists().unwrap(), initial);
    let t = mm.pfn_to_page(p(head.as_u64() + 5)).unwrap();
    assert_eq!(t.compound_head(), None);
}

#[test]
fn errors_name_the_bad_block() {
    let mem = mem(64 * M);
    let m = Machine::boot(&mem).unwrap();
    let b = m.buddy().unwrap();
    assert_eq!(
        b.alloc_pages(o(11)),
        Err(BuddyError::BadOrder { order: o(11) })
    );
    assert_eq!(
        b.free_pages(p(257), o(1)),
        Err(BuddyError::Misaligned {
            pfn: p(257),
            order: o(1)
        })
    );
    assert_eq!(
        b.free_pages(p(5000), o(0)),
        Err(BuddyError::BadPage {
            pfn: p(5000),
            reason: "PG_reserved"
        })
    );
    assert_eq!(
        b.free_pages(p(1024), o(0)),
        Err(BuddyError::BadPage {
            pfn: p(1024),
            reason: "already free (PageBuddy)"
        })
    );
    assert_eq!(
        b.free_pages(p(1025), o(0)),
        Err(BuddyError::BadPage {
            pfn: p(1025),
            reason: "refcount is not 1"
        })
    );
    assert!(matches!(
        b.free_pages(p(0x9000), o(0)),
        Err(BuddyError::Memmap(MemmapError::NoStructPage { .. }))
    ));
    for _ in 0..10 {
        b.alloc_pages(o(10)).unwrap();
    }
    assert_eq!(
        b.alloc_pages(o(10)),
        Err(BuddyError::NoMemory { order: o(10) })
    );
    // A corrupted link is reported, not followed.
    let first = b.free_lists().unwrap()[9].1[0];
    b.memmap().pfn_to_page(first).unwrap().set_lru_next(0x1234);
    assert!(matches!(
        b.free_lists(),
        Err(BuddyError::CorruptList { order: 9, .. })
    ));
}

#[test]
fn page_alloc_hands_out_zeroed_pages() {
    let mem = mem(64 * M);
    let m = Machine::boot(&mem).unwrap();
    let b = m.buddy().unwrap();
    let a = b.alloc_zeroed_page().unwrap();
    mem.page_at(a).unwrap().words()[9].store(0xdead, Ordering::Relaxed);
    b.free_page(a);
    let again = b.alloc_zeroed_page().unwrap();
    assert_eq!(again, a);
    assert!(mem.page_at(again).unwrap().is_zero());
    b.free_page(again);
    b.free_page(again);
    b.free_page(PhysAddr::new(20 * M));
    assert_eq!(b.bad_pages(), 2);
    assert_eq!(b.free_lists().unwrap(), expected_boot_lists());
}

#[test]
fn gigantic_folio_from_the_boot_pool() {
    let mem = mem(3 * G);
    let mut m = Machine::new(&mem, BootConfig::default());
    m.memblock_init().unwrap();
    m.alloc_memmap().unwrap();
    // The memmap (24 sections, 48 MiB) took the top of [1M, 3G), so the
    // highest free aligned GiB is [1G, 2G).
    let head = alloc_bootmem_huge_page(&mut m.memblock, GIGANTIC_ORDER).unwrap();
    assert_eq!(head, PhysAddr::new(G).pfn());
    // memmap_init initialises the boot pool's struct pages too (Linux
    // reads no reservation there); prep_bootmem_huge_folio then makes the
    // folio.
    let st = m.memmap_init().unwrap();
    assert_eq!(st.noinit, 0);
    m.memblock_free_all().unwrap();
    let b = m.buddy().unwrap();
    let mm = b.memmap();
    // gather_bootmem_prealloc runs after memblock_free_all (hugetlb_init).
    prep_bootmem_huge_folio(mm, head, GIGANTIC_ORDER).unwrap();
    assert_eq!(mm.folio_order(head), Ok(GIGANTIC_ORDER));
    let tail = mm.pfn_to_page(p(head.as_u64() + 12345)).unwrap();
    assert_eq!(
        (tail.compound_head(), tail.refcount(), tail.is_reserved()),
        (Some(head), 0, false)
    );
    let h = mm.pfn_to_page(head).unwrap();
    assert!(h.is_head() && h.refcount() == 1 && !h.is_reserved());
    let free = 3 * G - M - 16 * M - 48 * M - G;
    assert_eq!(b.nr_free_pages(), free / 4096);
    b.free_lists().unwrap();
}

#[test]
fn no_room_for_a_gigantic_page() {
    let mem = mem(64 * M);
    let mut m = Machine::new(&mem, BootConfig::default());
    m.memblock_init().unwrap();
    assert!(matches!(
        alloc_bootmem_huge_page(&mut m.memblock, GIGANTIC_ORDER),
        Err(BuddyError::Memblock(MemblockError::NoSpace {
            size: G,
            align: G,
            ..
        }))
    ));
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(u8),
    Free(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..=5).prop_map(Op::Alloc),
        any::<usize>().prop_map(Op::Free),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn random_alloc_free_against_an_oracle(ops in proptest::collection::vec(op(), 1..200)) {
        let mem = mem(64 * M);
        let m = Machine::boot(&mem).unwrap();
        let b = m.buddy().unwrap();
        let initial = b.free_lists().unwrap();
        let total = b.nr_free_pages();
        // Oracle: allocated blocks by start pfn -> order.
        let mut live: BTreeMap<u64, u8> = BTreeMap::new();
        let mut used = 0u64;
        for op in ops {
            match op {
                Op::Alloc(order) => match b.alloc_pages(o(order)) {
                    Ok(pfn) => {
                        let (s, e) = (pfn.as_u64(), pfn.as_u64() + (1 << order));
                        prop_assert_eq!(s % (1 << order), 0);
                        if let Some((&ps, &po)) = live.range(..s).next_back() {
                            prop_assert!(ps + (1 << po) <= s, "overlap with {}", ps);
                        }
                        if let Some((&ns, _)) = live.range(s..).next() {
                            prop_assert!(e <= ns, "overlap with {}", ns);
                        }
                        live.insert(s, order);
                        used += 1 << order;
                    }
                    Err(BuddyError::NoMemory { .. }) => {
                        prop_assert!(total - used < (1 << order) || b.zone().nr_free(u32::from(order)) == 0);
                    }
                    Err(e) => prop_assert!(false, "{}", e),
                },
                Op::Free(i) => {
                    if live.is_empty() {
                        continue;
                    }
                    let (&s, &order) = live.iter().nth(i % live.len()).unwrap();
                    b.free_pages(p(s), o(order)).unwrap();
                    live.remove(&s);
                    used -= 1 << order;
                }
            }
            prop_assert_eq!(b.nr_free_pages() + used, total);
        }
        // Free blocks never overlap allocated ones.
        for (order, pfns) in b.free_lists().unwrap() {
            for f in pfns {
                let (s, e) = (f.as_u64(), f.as_u64() + order.pages());
                if let Some((&ls, &lo)) = live.range(..e).next_back() {
                    prop_assert!(ls + (1 << lo) <= s, "free {} overlaps allocated {}", s, ls);
                }
            }
        }
        for (s, order) in std::mem::take(&mut live) {
            b.free_pages(p(s), o(order)).unwrap();
        }
        prop_assert_eq!(b.free_lists().unwrap(), initial);
    }
}
