use super::*;
use proptest::prelude::*;

use crate::testing::{GIB as G, KIB as K, MIB as M, pa as a, shuffle};

const N: MemblockFlags = MemblockFlags::NONE;
const NOINIT: MemblockFlags = MemblockFlags::RSRV_NOINIT;
const KERN: MemblockFlags = MemblockFlags::RSRV_KERN;

fn regs(t: &MemblockType) -> Vec<(u64, u64, MemblockFlags)> {
    t.regions()
        .iter()
        .map(|r| (r.base.as_u64(), r.size, r.flags))
        .collect()
}

fn ranges(it: impl Iterator<Item = PhysRange>) -> Vec<(u64, u64)> {
    it.map(|r| (r.start().as_u64(), r.end().as_u64())).collect()
}

fn machine(mem: u64) -> Memblock {
    let mut mb = Memblock::new();
    mb.memblock_add(a(0), mem).unwrap();
    mb.memblock_allow_resize();
    mb
}

#[test]
fn adjacent_reservations_merge() {
    let mut mb = Memblock::new();
    mb.memblock_reserve(a(0x2000), 0x1000).unwrap();
    mb.memblock_reserve(a(0x1000), 0x1000).unwrap();
    mb.memblock_reserve(a(0x3000), 0x1000).unwrap();
    assert_eq!(regs(&mb.reserved), vec![(0x1000, 0x3000, N)]);
    assert_eq!(mb.reserved.total_size(), 0x3000);
    // A gap stays a gap.
    mb.memblock_reserve(a(0x5000), 0x1000).unwrap();
    assert_eq!(
        regs(&mb.reserved),
        vec![(0x1000, 0x3000, N), (0x5000, 0x1000, N)]
    );
    // Filling it merges all three.
    mb.memblock_reserve(a(0x4000), 0x1000).unwrap();
    assert_eq!(regs(&mb.reserved), vec![(0x1000, 0x5000, N)]);
}

#[test]
fn overlapping_reserve_covers_the_union() {
    let mut mb = Memblock::new();
    mb.memblock_reserve(a(0x1000), 0x2000).unwrap();
    mb.memblock_reserve(a(0x6000), 0x1000).unwrap();
    mb.memblock_reserve(a(0x2000), 0x3000).unwrap();
    assert_eq!(
        regs(&mb.reserved),
        vec![(0x1000, 0x4000, N), (0x6000, 0x1000, N)]
    );
    // Overlapping both and beyond: one region, total counted once.
    mb.memblock_reserve(a(0), 0x10000).unwrap();
    assert_eq!(regs(&mb.reserved), vec![(0, 0x10000, N)]);
    assert_eq!(mb.reserved.total_size(), 0x10000);
    // Size capped at the top of the space.
    mb.memblock_reserve(a(u64::MAX - 0xfff), u64::MAX).unwrap();
    // (memblock_cap_size: base + size stops at PHYS_ADDR_MAX.)
    assert_eq!(mb.reserved.regions()[1].size, 0xfff);
}

#[test]
fn flags_and_nodes_prevent_merge() {
    let mut mb = Memblock::new();
    mb.memblock_reserve_kern(a(0x1000), 0x1000).unwrap();
    mb.memblock_reserve(a(0x2000), 0x1000).unwrap();
    assert_eq!(
        regs(&mb.reserved),
        vec![(0x1000, 0x1000, KERN), (0x2000, 0x1000, N)]
    );
    // Reserving over a flagged region keeps its flags.
    mb.memblock_reserve(a(0), 0x4000).unwrap();
    assert_eq!(
        regs(&mb.reserved),
        vec![(0, 0x1000, N), (0x1000, 0x1000, KERN), (0x2000, 0x2000, N)]
    );
    let mut mb = Memblock::new();
    mb.memblock_add_node(a(0), 0x1000, 0, N).unwrap();
    mb.memblock_add_node(a(0x1000), 0x1000, 1, N).unwrap();
    assert_eq!(mb.memory.cnt(), 2);
    mb.memblock_set_node(a(0), 0x2000, 0).unwrap();
    assert_eq!(regs(&mb.memory), vec![(0, 0x2000, N)]);
}

#[test]
fn mark_noinit_isolates_sets_and_merges() {
    let mut mb = Memblock::new();
    mb.memblock_reserve(a(0x1000), 0x4000).unwrap();
    mb.memblock_reserved_mark_noinit(a(0x2000), 0x1000).unwrap();
    assert_eq!(
        regs(&mb.reserved),
        vec![
            (0x1000, 0x1000, N),
            (0x2000, 0x1000, NOINIT),
            (0x3000, 0x2000, N)
        ]
    );
    mb.memblock_reserved_mark_noinit(a(0x3000), 0x2000).unwrap();
    assert_eq!(
        regs(&mb.reserved),
        vec![(0x1000, 0x1000, N), (0x2000, 0x3000, NOINIT)]
    );
    assert_eq!(mb.reserved.total_size(), 0x4000);
    // Only reserved bytes get the flag: marking past them adds nothing.
    mb.memblock_reserved_mark_noinit(a(0x8000), 0x1000).unwrap();
    assert_eq!(mb.reserved.cnt(), 2);
}

#[test]
fn free_and_remove_split() {
    let mut mb = Memblock::new();
    mb.memblock_reserve(a(0x1000), 0x4000).unwrap();
    mb.memblock_phys_free(a(0x2000), 0x1000).unwrap();
    assert_eq!(
        regs(&mb.reserved),
        vec![(0x1000, 0x1000, N), (0x3000, 0x2000, N)]
    );
    assert_eq!(mb.reserved.total_size(), 0x3000);
    mb.memblock_phys_free(a(0), 0x10000).unwrap();
    assert_eq!(mb.reserved.cnt(), 0);
    assert_eq!(mb.reserved.total_size(), 0);
    mb.memblock_add(a(0), 16 * M).unwrap();
    mb.memblock_remove(a(4 * M), 4 * M).unwrap();
    assert_eq!(regs(&mb.memory), vec![(0, 4 * M, N), (8 * M, 8 * M, N)]);
    assert_eq!(mb.memblock_phys_mem_size(), 12 * M);
}

#[test]
fn doubling_reserves_the_array_itself() {
    let mut mb = Memblock::new();
    mb.memblock_add(a(0), G).unwrap();
    for i in 0..128 {
        mb.memblock_reserve(a(16 * M + i * 8 * K), 4 * K).unwrap();
    }
    assert_eq!(mb.reserved.cnt(), 128);
    // Full, and resizing not allowed yet.
    assert_eq!(
        mb.memblock_reserve(a(15 * M), 4 * K),
        Err(MemblockError::CannotResize { name: "reserved" })
    );
    mb.memblock_allow_resize();
    for i in 128..300 {
        mb.memblock_reserve(a(16 * M + i * 8 * K), 4 * K).unwrap();
    }
    assert_eq!(mb.reserved.max(), 512);
    assert_eq!(mb.stats().doublings, 2);
    // 300 pages plus the array: 512 * 24 bytes = 3 pages. The first
    // doubled array (256 slots, 2 pages) took the top of memory and was
    // still reserved when the second was placed below it, then freed.
    let arr = mb.reserved.array_phys().unwrap();
    assert_eq!(
        (arr.start().as_u64(), arr.size()),
        (G - 5 * 4 * K, 3 * 4 * K)
    );
    assert_eq!(mb.reserved.cnt(), 301);
    assert_eq!(
        mb.reserved.regions().last().map(|r| (r.base, r.size)),
        Some((arr.start(), arr.size()))
    );
    // The first doubled array (256 slots, 2 pages) was freed.
    assert_eq!(mb.reserved.total_size(), 300 * 4 * K + 3 * 4 * K);
    // memory doubles too, with its array reserved.
    let mut mb = machine(G);
    for i in 0..130 {
        mb.memblock_add(a(2 * G + i * 8 * K), 4 * K).unwrap();
    }
    assert_eq!(mb.memory.max(), 256);
    let arr = mb.memory.array_phys().unwrap();
    assert!(mb.memblock_is_region_reserved(arr.start(), arr.size()));
}

#[test]
fn doubling_fails_cleanly_without_room() {
    // 1 MiB of memory, every odd page reserved: no two free pages in a
    // row for a doubled array of 256 slots (2 pages).
    let mut mb = machine(M);
    for i in 0..128 {
        mb.memblock_reserve(a((2 * i + 1) * 4 * K), 4 * K).unwrap();
    }
    let before = mb.reserved.clone();
    assert_eq!(
        mb.memblock_reserve(a(2 * M), 4 * K),
        Err(MemblockError::DoubleFailed {
            name: "reserved",
            max: 128
        })
    );
    assert_eq!(mb.reserved, before);
}

#[test]
fn free_range_iteration_skips_reserved_and_nomap() {
    let mut mb = Memblock::new();
    mb.memblock_add(a(0), 16 * M).unwrap();
    mb.memblock_add(a(32 * M), 16 * M).unwrap();
    mb.memblock_mark_nomap(a(40 * M), 4 * M).unwrap();
    mb.memblock_reserve(a(M), M).unwrap();
    mb.memblock_reserve(a(15 * M), 18 * M).unwrap();
    let fwd = ranges(mb.for_each_free_mem_range(N));
    assert_eq!(
        fwd,
        vec![(0, M), (2 * M, 15 * M), (33 * M, 40 * M), (44 * M, 48 * M)]
    );
    let mut rev = ranges(mb.for_each_free_mem_range_reverse(N));
    rev.reverse();
    assert_eq!(rev, fwd);
    // NOMAP asked for explicitly.
    assert!(ranges(mb.for_each_free_mem_range(MemblockFlags::NOMAP)).contains(&(40 * M, 44 * M)));
    assert_eq!(
        ranges(mb.for_each_mem_range()),
        vec![(0, 16 * M), (32 * M, 40 * M), (44 * M, 48 * M)]
    );
    assert_eq!(mb.for_each_reserved_mem_region().count(), 2);
}

#[test]
fn top_down_allocation_picks_the_highest_fit() {
    let mut mb = Memblock::new();
    mb.memblock_add(a(M), 15 * M).unwrap();
    mb.memblock_add(a(32 * M), 8 * M).unwrap();
    mb.memblock_reserve(a(38 * M), 2 * M).unwrap();
    // Highest fit: below the reservation at 38M.
    assert_eq!(mb.memblock_phys_alloc(M, M), Ok(a(37 * M)));
    assert_eq!(mb.memblock_phys_alloc(4 * K, 4 * K), Ok(a(37 * M - 4 * K)));
    // Allocations are RSRV_KERN and merge with each other.
    assert_eq!(
        regs(&mb.reserved),
        vec![(37 * M - 4 * K, M + 4 * K, KERN), (38 * M, 2 * M, N)]
    );
    // Too large for the top range: the lower one.
    assert_eq!(mb.memblock_phys_alloc(8 * M, 2 * M), Ok(a(8 * M)));
    // Within bounds.
    assert_eq!(
        mb.memblock_phys_alloc_range(M, M, a(0), a(4 * M)),
        Ok(a(3 * M))
    );
    assert_eq!(
        mb.memblock_phys_alloc(32 * M, M),
        Err(MemblockError::NoSpace {
            size: 32 * M,
            align: M,
            start: a(0),
            end: MEMBLOCK_ALLOC_ANYWHERE
        })
    );
    assert_eq!(
        mb.memblock_phys_alloc(M, 3 * K),
        Err(MemblockError::BadAlign { align: 3 * K })
    );
    // Bottom-up when asked.
    mb.memblock_set_bottom_up(true);
    assert_eq!(mb.memblock_phys_alloc(M, M), Ok(a(M)));
}

#[test]
fn scratch_only_allocation_stays_in_scratch() {
    let mut mb = machine(256 * M);
    mb.memblock_mark_kho_scratch(a(16 * M), 4 * M).unwrap();
    mb.memblock_mark_kho_scratch(a(64 * M), M).unwrap();
    assert_eq!(mb.memory.cnt(), 5);
    mb.memblock_set_kho_scratch_only();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(mb.memblock_phys_alloc(M, M).unwrap().as_u64() / M);
    }
    assert_eq!(got, vec![64, 19, 18, 17, 16]);
    assert_eq!(
        mb.memblock_phys_alloc(4 * K, 4 * K),
        Err(MemblockError::NoSpace {
            size: 4 * K,
            align: 4 * K,
            start: a(0),
            end: MEMBLOCK_ALLOC_ANYWHERE
        })
    );
    mb.memblock_clear_kho_scratch_only();
    assert_eq!(mb.memblock_phys_alloc(M, M), Ok(a(255 * M)));
    mb.memblock_clear_kho_scratch(a(0), 256 * M).unwrap();
    assert_eq!(mb.memory.cnt(), 1);
}

/// Reserves `n` scattered pages (every other page) in random order and
/// returns the region visits it took.
fn scattered_visits(n: u64) -> (u64, Memblock) {
    let mut mb = machine(4 * G);
    let mut pages: Vec<u64> = (0..n).map(|i| 64 * M + i * 8 * K).collect();
    shuffle(&mut pages, 0x9e37_79b9_7f4a_7c15);
    mb.reset_stats();
    for p in pages {
        mb.memblock_reserve(a(p), 4 * K).unwrap();
        mb.memblock_reserved_mark_noinit(a(p), 4 * K).unwrap();
    }
    (mb.stats().visits, mb)
}

#[test]
fn scattered_reservations_cost_quadratic_visits() {
    let counts: Vec<u64> = [1 << 10, 1 << 11, 1 << 12]
        .into_iter()
        .map(|n| scattered_visits(n).0)
        .collect();
    for w in counts.windows(2) {
        let ratio = w[1] as f64 / w[0] as f64;
        assert!(
            (3.0..=5.0).contains(&ratio),
            "visits {counts:?}: ratio {ratio}"
        );
    }
    println!("visits for 2^10, 2^11, 2^12 scattered pages: {counts:?}");
}

#[test]
fn adjacent_reservations_in_any_order_merge_into_one() {
    let mut mb = machine(4 * G);
    let mut pages: Vec<u64> = (0..4096).map(|i| 64 * M + i * 4 * K).collect();
    shuffle(&mut pages, 7);
    for p in pages {
        mb.memblock_reserve(a(p), 4 * K).unwrap();
        mb.memblock_reserved_mark_noinit(a(p), 4 * K).unwrap();
    }
    // One region for the pages, one for the doubled array itself (reserved
    // RSRV_KERN, as memblock_reserve_kern does).
    let arr = mb.reserved.array_phys().unwrap();
    assert_eq!(
        regs(&mb.reserved),
        vec![
            (64 * M, 4096 * 4 * K, NOINIT),
            (arr.start().as_u64(), arr.size(), KERN)
        ]
    );
}

/// Existing reservations of every kind for the bulk comparisons.
fn with_existing() -> Memblock {
    let mut mb = machine(4 * G);
    mb.memblock_reserve(a(0), M).unwrap();
    mb.memblock_reserve_kern(a(16 * M), 16 * M).unwrap();
    mb.memblock_reserve(a(40 * M), 8 * K).unwrap();
    mb.memblock_reserve(a(41 * M), 8 * K).unwrap();
    mb.memblock_reserved_mark_noinit(a(41 * M), 4 * K).unwrap();
    mb
}

fn per_block(mb: &mut Memblock, rs: &[PhysRange], flags: MemblockFlags) {
    for r in rs {
        mb.memblock_reserve(r.start(), r.size()).unwrap();
        if !flags.is_empty() {
            mb.memblock_setclr_flag(Which::Reserved, r.start().as_u64(), r.size(), true, flags)
                .unwrap();
        }
    }
}

#[test]
fn bulk_matches_per_block_reservation() {
    let r = |s: u64, e: u64| PhysRange::new(a(s), a(e)).unwrap();
    let rs = vec![
        r(512 * K, 2 * M),                  // straddles the low reservation
        r(15 * M, 16 * M + 4 * K),          // touches and enters the kernel
        r(20 * M, 20 * M + 4 * K),          // inside the kernel
        r(40 * M - 4 * K, 40 * M + 4 * K),  // into a plain region
        r(40 * M + 4 * K, 40 * M + 12 * K), // overlaps the previous end
        r(41 * M, 41 * M + 4 * K),          // equal to a NOINIT region
        r(41 * M + 8 * K, 41 * M + 12 * K), // adjacent to a plain one
        r(50 * M, 50 * M),                  // empty
        r(60 * M, 60 * M + 4 * K),
        r(60 * M + 4 * K, 60 * M + 8 * K), // adjacent input
    ];
    for flags in [NOINIT, N] {
        let mut slow = with_existing();
        per_block(&mut slow, &rs, flags);
        let mut fast = with_existing();
        fast.memblock_reserve_sorted(rs.iter().copied(), flags)
            .unwrap();
        assert_eq!(fast.reserved, slow.reserved, "{flags:?}");
    }
    let mut mb = with_existing();
    assert_eq!(
        mb.memblock_reserve_sorted([rs[1], rs[0]], NOINIT),
        Err(MemblockError::Unsorted {
            previous: rs[1],
            range: rs[0]
        })
    );
    assert_eq!(mb.reserved, with_existing().reserved);
}

#[test]
fn bulk_matches_per_block_beyond_doubling() {
    let mut blocks: Vec<PhysRange> = (0..3000u64)
        .map(|i| {
            let order = (i * 7) % 5;
            let start = 64 * M + i * 64 * K;
            PhysRange::from_start_size(a(start), (4 * K) << order).unwrap()
        })
        .collect();
    let mut slow = with_existing();
    let mut order = blocks.clone();
    shuffle(&mut order, 3);
    slow.reset_stats();
    per_block(&mut slow, &order, NOINIT);
    let slow_visits = slow.stats().visits;
    let mut fast = with_existing();
    blocks.sort();
    fast.reset_stats();
    fast.memblock_reserve_sorted(blocks, NOINIT).unwrap();
    let fast_visits = fast.stats().visits;
    assert_eq!(fast.stats().doublings, 1);
    assert_eq!(fast.reserved.max(), slow.reserved.max());
    // The arrays themselves sit at the top of memory; below, identical.
    let low = |mb: &Memblock| -> Vec<MemblockRegion> {
        mb.reserved
            .regions()
            .iter()
            .copied()
            .filter(|r| r.end() <= 2 * G)
            .collect()
    };
    assert_eq!(low(&fast), low(&slow));
    assert!(
        fast_visits * 100 < slow_visits,
        "{fast_visits} vs {slow_visits}"
    );
}

proptest! {
    #[test]
    fn bulk_equals_per_block(
        mut pieces in proptest::collection::vec((0u64..256, 0u64..6), 0..40),
        noinit in any::<bool>(),
    ) {
        let flags = if noinit { NOINIT } else { N };
        pieces.sort();
        let rs: Vec<PhysRange> = pieces
            .iter()
            .map(|&(p, len)| PhysRange::from_start_size(a(38 * M + p * 16 * K), len * 8 * K).unwrap())
            .collect();
        let mut slow = with_existing();
        per_block(&mut slow, &rs, flags);
        let mut fast = with_existing();
        fast.memblock_reserve_sorted(rs, flags).unwrap();
        prop_assert_eq!(fast.reserved, slow.reserved);
    }
}

/// `mainline-fix` step (c): the binary search for the first candidate
/// region changes what `memblock_add_range` looks at, never what it does.
#[test]
fn add_range_bsearch_gives_linux_result_with_fewer_scans() {
    let mut order: Vec<u64> = (0..3000).collect();
    shuffle(&mut order, 7);
    let run = |bsearch: bool| {
        let mut mb = machine(64 * G);
        mb.set_add_range_bsearch(bsearch);
        for &i in &order {
            // Scattered pages, every third pair touching, some overlapping.
            let base = a(G + i * 12 * K);
            let size = if i % 5 == 0 { 16 * K } else { 4 * K };
            mb.__memblock_reserve(base, size, NUMA_NO_NODE, NOINIT)
                .unwrap();
        }
        (regs(&mb.reserved), mb.stats())
    };
    let (linux, linux_stats) = run(false);
    let (fast, fast_stats) = run(true);
    assert_eq!(fast, linux);
    assert!(
        fast_stats.scanned * 10 < linux_stats.scanned,
        "{fast_stats:?} vs {linux_stats:?}"
    );
    assert_eq!(fast_stats.moved, linux_stats.moved);
}
