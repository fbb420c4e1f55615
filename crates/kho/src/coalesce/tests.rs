//! Coalescer tests on hand-built and builder-made trees.

use alloc::vec;
use alloc::vec::Vec;

use crate::addr::{Order, PhysAddr, PhysRange};
use crate::mem::{RamMap, VecArena};
use crate::testing::{ARENA_BASE, TestTree, block, range};
use crate::walk::WalkError;

use super::CoalesceSummary;

fn run(
    t: &TestTree,
    ram: &[PhysRange],
    forbidden: &[PhysRange],
) -> Result<(Vec<PhysRange>, CoalesceSummary), WalkError> {
    let map = RamMap::new(ram, forbidden).unwrap();
    let mut c = t.open(map)?.coalesce();
    let ranges = c.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((ranges, *c.summary()))
}

const RAM: [PhysRange; 1] = {
    match PhysRange::new(PhysAddr::new(0x1000), PhysAddr::new(1 << 40)) {
        Ok(r) => [r],
        Err(_) => panic!(),
    }
};

#[test]
fn full_leaf_and_word_runs() {
    // Hand-built: one full leaf (order 0, pages 0x8000..0x10000 i.e. level-1
    // entry 1) followed by leaf entry 2 with its first 70 bits set.
    let a = VecArena::new(PhysAddr::new(ARENA_BASE), 8);
    let p = |n: u64| PhysAddr::new(ARENA_BASE + n * 0x1000);
    for n in 0..8 {
        a.claim(p(n)).unwrap();
    }
    a.write_word(p(0), 2, p(1).as_u64()).unwrap();
    a.write_word(p(1), 0, p(2).as_u64()).unwrap();
    a.write_word(p(2), 0, p(3).as_u64()).unwrap();
    a.write_word(p(3), 0, p(4).as_u64()).unwrap();
    a.write_word(p(4), 1, p(5).as_u64()).unwrap();
    a.write_word(p(4), 2, p(6).as_u64()).unwrap();
    for w in 0..512 {
        a.write_word(p(5), w, !0).unwrap();
    }
    a.write_word(p(6), 0, !0).unwrap();
    a.write_word(p(6), 1, 0x3f).unwrap();
    let t = TestTree {
        arena: a,
        root: p(0),
    };
    let (ranges, summary) = run(&t, &RAM, &[]).unwrap();
    let page = |n: u64| n * 0x1000;
    assert_eq!(ranges, vec![range(page(32768), page(65536 + 70))]);
    assert_eq!(summary.counts().get(Order::ZERO), 32768 + 70);
    assert_eq!(summary.bytes(), page(32768 + 70));
}

#[test]
fn adjacent_blocks_of_many_orders_merge() {
    let t = TestTree::new(64);
    // 1 GiB at 1 GiB, then 2 MiB, 64 KiB, 4 KiB right after it; a gap; a
    // 4 KiB block before everything.
    t.insert(block(0x4000_0000, 18));
    t.insert(block(0x8000_0000, 9));
    t.insert(block(0x8020_0000, 4));
    t.insert(block(0x8021_0000, 0));
    t.insert(block(0x9000_0000, 0));
    t.insert(block(0x3fff_f000, 0));
    let (ranges, summary) = run(&t, &RAM, &[]).unwrap();
    assert_eq!(
        ranges,
        vec![
            range(0x3fff_f000, 0x8021_1000),
            range(0x9000_0000, 0x9000_1000)
        ]
    );
    let c = summary.counts();
    assert_eq!(
        [
            c.get(Order::new(18)),
            c.get(Order::new(9)),
            c.get(Order::new(4)),
            c.get(Order::ZERO)
        ],
        [1, 1, 1, 3]
    );
    assert_eq!(c.total(), 6);
    assert_eq!(summary.ranges(), 2);
}

#[test]
fn same_start_is_an_overlap_reported_with_the_larger_block() {
    let t = TestTree::new(64);
    t.insert(block(0x20_0000, 0));
    t.insert(block(0x20_0000, 9));
    assert_eq!(
        run(&t, &RAM, &[]).err(),
        Some(WalkError::Overlap {
            covering: block(0x20_0000, 9),
            covered: block(0x20_0000, 0)
        })
    );
}

#[test]
fn per_run_validation_names_the_first_bad_block() {
    let t = TestTree::new(64);
    for i in 0..1000u64 {
        t.insert(block(0x1_0000_0000 + i * 0x1000, 0));
    }
    // A forbidden page inside the run: block 500 is the first bad one.
    let forbidden = [range(0x1_001f_4000, 0x1_001f_5000)];
    assert_eq!(
        run(&t, &RAM, &forbidden).err(),
        Some(WalkError::BlockForbidden {
            block: block(0x1_001f_4000, 0),
            forbidden: forbidden[0]
        })
    );
    // RAM ends inside the run: block 700 is the first outside.
    let ram = [range(0x1000, 0x1_002b_c000)];
    assert_eq!(
        run(&t, &ram, &[]).err(),
        Some(WalkError::BlockOutsideRam {
            block: block(0x1_002b_c000, 0)
        })
    );
}

#[test]
fn an_error_mid_leaf_follows_exactly_the_ranges_closed_before_it() {
    // 300 single-page ranges in one leaf (every other page): more than a
    // fast-path batch. A bad run k stops the merge before run k - 1 is
    // merged and run k - 2 is still open, so runs 0..k-3 are yielded, then
    // the error, then nothing.
    let t = TestTree::new(64);
    let base = 0x1_0000_0000u64;
    for i in 0..300u64 {
        t.insert(block(base + i * 0x2000, 0));
    }
    for k in [1u64, 2, 3, 100, 257, 258, 299] {
        let bad = base + k * 0x2000;
        let forbidden = [range(bad, bad + 0x1000)];
        let map = RamMap::new(&RAM, &forbidden).unwrap();
        let c = t.open(map).unwrap().coalesce();
        let items: Vec<_> = c.collect();
        let oks = k.saturating_sub(2);
        assert_eq!(items.len() as u64, oks + 1, "k = {k}");
        for (i, r) in items.iter().take(oks as usize).enumerate() {
            let s = base + i as u64 * 0x2000;
            assert_eq!(*r, Ok(range(s, s + 0x1000)), "k = {k}, i = {i}");
        }
        assert_eq!(
            items.last().cloned(),
            Some(Err(WalkError::BlockForbidden {
                block: block(bad, 0),
                forbidden: forbidden[0]
            })),
            "k = {k}"
        );
    }
}

#[test]
fn the_observer_sees_every_block_once_in_the_same_pass() {
    // Slots of 4 MiB, each empty or holding one pattern: a 2 MiB block,
    // 100 contiguous pages (word runs for the fast path), every other
    // 64 KiB block, every third page.
    let t = TestTree::new(256);
    let mut want = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for slot in 0..300u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let base = 0x4000_0000 + slot * (4 << 20);
        let blocks: Vec<_> = match x % 5 {
            0 => vec![],
            1 => vec![block(base, 9)],
            2 => (0..100).map(|i| block(base + i * 0x1000, 0)).collect(),
            3 => (0..20).map(|i| block(base + i * 0x2_0000, 4)).collect(),
            _ => (0..50).map(|i| block(base + i * 0x3000, 0)).collect(),
        };
        for b in blocks {
            t.insert(b);
            want.push((b.order().as_u8(), b.phys().as_u64()));
        }
    }
    let map = RamMap::new(&RAM, &[]).unwrap();
    let mut seen = Vec::new();
    let observed = t
        .open(map)
        .unwrap()
        .coalesce_observed(|order: Order, r: PhysRange| {
            let size = order.bytes();
            let mut p = r.start().as_u64();
            while p < r.end().as_u64() {
                seen.push((order.as_u8(), p));
                p += size;
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let (plain, _) = run(&t, &RAM, &[]).unwrap();
    assert_eq!(observed, plain, "observing changes no range");
    seen.sort_unstable();
    want.sort_unstable();
    assert_eq!(seen.len(), want.len());
    assert_eq!(seen, want);
}
