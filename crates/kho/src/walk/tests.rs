//! Byte-level tests of the walker: trees built by hand (raw u64 entries at
//! chosen addresses), one test per [`WalkError`] variant, and property tests
//! against a sorted-by-key oracle.

use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::addr::{Block, Order, PhysAddr, PhysRange};
use crate::coalesce::CoalesceSummary;
use crate::key::KeyError;
use crate::key::{LeafBit, Level, TableIndex};
use crate::mem::{MemError, RamMap, VecArena};
use crate::testing::{ARENA_BASE, TestTree, block, merged, range, sorted_by_key};

/// Page `n` of the hand-built arena.
const fn p(n: u64) -> u64 {
    ARENA_BASE + n * 0x1000
}

const RAM_END: u64 = 1 << 40;

fn ram() -> [PhysRange; 1] {
    [range(0x1000, RAM_END)]
}

fn arena() -> VecArena {
    let a = VecArena::new(PhysAddr::new(ARENA_BASE), 32);
    for n in 0..32 {
        a.claim(PhysAddr::new(p(n))).unwrap();
    }
    a
}

fn set(a: &VecArena, page: u64, word: usize, value: u64) {
    a.write_word(PhysAddr::new(page), word, value).unwrap();
}

fn walk_with(
    a: &VecArena,
    root: u64,
    map: RamMap<'_>,
    budget: u64,
) -> Result<Vec<Block>, WalkError> {
    RadixReader::open(
        a,
        map,
        PhysAddr::new(root),
        NodeSet::new(),
        NodeBudget::new(budget),
    )?
    .walk()
    .collect()
}

fn coalesce_with(
    a: &VecArena,
    root: u64,
    map: RamMap<'_>,
    budget: u64,
) -> Result<(Vec<PhysRange>, CoalesceSummary), WalkError> {
    let mut c = RadixReader::open(
        a,
        map,
        PhysAddr::new(root),
        NodeSet::new(),
        NodeBudget::new(budget),
    )?
    .coalesce();
    let ranges = c.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((ranges, *c.summary()))
}

fn walk(a: &VecArena, root: u64) -> Result<Vec<Block>, WalkError> {
    let ram = ram();
    walk_with(a, root, RamMap::new(&ram, &[]).unwrap(), 1000)
}

fn coalesce(a: &VecArena, root: u64) -> Result<(Vec<PhysRange>, CoalesceSummary), WalkError> {
    let ram = ram();
    coalesce_with(a, root, RamMap::new(&ram, &[]).unwrap(), 1000)
}

/// Both readers must report `expected`.
fn both_fail(a: &VecArena, root: u64, expected: WalkError) {
    assert_eq!(walk(a, root), Err(expected), "walk");
    assert_eq!(coalesce(a, root).err(), Some(expected), "coalesce");
}

/// Order 0 at 0x1234_5000: key 2^52 | 0x12345 -> root entry 2, levels 4..2
/// entry 0, level 1 entry 0x12345 >> 15 = 2, leaf bit 0x2345 = word 141 bit 5.
fn hand_order0(a: &VecArena) {
    set(a, p(0), 2, p(1));
    set(a, p(1), 0, p(2));
    set(a, p(2), 0, p(3));
    set(a, p(3), 0, p(4));
    set(a, p(4), 2, p(5));
    set(a, p(5), 141, 1 << 5);
}

/// Order 9 at 0x4000_0000: key 2^43 | 0x200 -> root entry 0, level 4 entry
/// 2 (bit 43), levels 3..1 entry 0, leaf bit 0x200 = word 8 bit 0.
fn hand_order9(a: &VecArena) {
    set(a, p(0), 0, p(6));
    set(a, p(6), 2, p(7));
    set(a, p(7), 0, p(8));
    set(a, p(8), 0, p(9));
    set(a, p(9), 0, p(10));
    set(a, p(10), 8, 1);
}

#[test]
fn golden_single_order0_block() {
    let a = arena();
    hand_order0(&a);
    assert_eq!(walk(&a, p(0)), Ok(vec![block(0x1234_5000, 0)]));
    let (ranges, summary) = coalesce(&a, p(0)).unwrap();
    assert_eq!(ranges, vec![range(0x1234_5000, 0x1234_6000)]);
    assert_eq!(summary.counts().get(Order::ZERO), 1);
    assert_eq!(summary.counts().total(), 1);
    assert_eq!(summary.ranges(), 1);
    assert_eq!(summary.bytes(), 0x1000);
}

#[test]
fn golden_single_order9_block() {
    let a = arena();
    hand_order9(&a);
    let ram = ram();
    let reader = RadixReader::open(
        &a,
        RamMap::new(&ram, &[]).unwrap(),
        PhysAddr::new(p(0)),
        NodeSet::new(),
        NodeBudget::new(100),
    )
    .unwrap();
    assert_eq!(reader.orders(), OrderSet::EMPTY.with(Order::new(9)));
    // Root and the spine node at level 4 (root entry 0).
    assert_eq!(reader.nodes(), 2);
    assert_eq!(
        reader.walk().collect::<Result<Vec<_>, _>>(),
        Ok(vec![block(0x4000_0000, 9)])
    );
}

#[test]
fn golden_mixed_orders_walk_order_and_merge() {
    let a = arena();
    hand_order0(&a);
    hand_order9(&a);
    // Order 0 at 0x4020_0000 and 0x4020_1000, right after the 2 MiB block:
    // key 2^52 | 0x40200 -> root 2, level 1 entry 8, leaf bits 512, 513.
    set(&a, p(4), 8, p(11));
    set(&a, p(11), 8, 0b11);
    assert_eq!(
        walk(&a, p(0)),
        Ok(vec![
            block(0x4000_0000, 9),
            block(0x1234_5000, 0),
            block(0x4020_0000, 0),
            block(0x4020_1000, 0),
        ])
    );
    let (ranges, summary) = coalesce(&a, p(0)).unwrap();
    assert_eq!(
        ranges,
        vec![
            range(0x1234_5000, 0x1234_6000),
            range(0x4000_0000, 0x4020_2000)
        ]
    );
    assert_eq!(summary.counts().get(Order::new(9)), 1);
    assert_eq!(summary.counts().get(Order::ZERO), 3);
    assert_eq!(summary.bytes(), 0x1000 + 0x20_2000);
}

#[test]
fn golden_runs_across_words_and_leaves() {
    let a = arena();
    // Order 0, root entry 2, level 1 entries 0 and 1: two adjacent leaves.
    set(&a, p(0), 2, p(1));
    set(&a, p(1), 0, p(2));
    set(&a, p(2), 0, p(3));
    set(&a, p(3), 0, p(4));
    set(&a, p(4), 0, p(5));
    set(&a, p(4), 1, p(6));
    // Leaf 0: bits 60..=63, all of word 1, bits 0..=3 of word 2; then the
    // whole tail (words 500..512) joining leaf 1's words 0..2.
    set(&a, p(5), 0, 0xf << 60);
    set(&a, p(5), 1, !0);
    set(&a, p(5), 2, 0xf);
    for w in 500..512 {
        set(&a, p(5), w, !0);
    }
    set(&a, p(6), 0, !0);
    set(&a, p(6), 1, 0b1011);
    let (ranges, summary) = coalesce(&a, p(0)).unwrap();
    let page = |bit: u64| bit * 0x1000;
    assert_eq!(
        ranges,
        vec![
            range(page(60), page(132)),
            range(page(500 * 64), page(32768 + 64 + 2)),
            range(page(32768 + 64 + 3), page(32768 + 64 + 4)),
        ]
    );
    assert_eq!(summary.counts().get(Order::ZERO), 72 + 12 * 64 + 64 + 3);
    let walked = walk(&a, p(0)).unwrap();
    assert_eq!(walked.len(), 72 + 12 * 64 + 64 + 3);
    assert!(walked.windows(2).all(|w| w[0].phys() < w[1].phys()));
    assert_eq!(walked[0], block(page(60), 0));
}

#[test]
fn golden_spine_leaf_orders() {
    let a = arena();
    // Root entry 0 down the spine to the leaf at level 0.
    for n in 0..5 {
        set(&a, p(n), 0, p(n + 1));
    }
    // Bit 2: order 51 at 0 (key 2). Bit 16385: order 38 at 2^50 (key
    // 2^14 | 1) = word 256 bit 1.
    set(&a, p(5), 0, 1 << 2);
    set(&a, p(5), 256, 1 << 1);
    let big = [range(0, 1 << 63)];
    let map = RamMap::new(&big, &[]).unwrap();
    // Order 51 at 0 covers order 38 at 2^50.
    assert_eq!(
        walk_with(&a, p(0), map, 100),
        Err(WalkError::Overlap {
            covering: block(0, 51),
            covered: block(1 << 50, 38)
        })
    );
    set(&a, p(5), 0, 0);
    // Order 51's second block (key 3) ends at 2^64: not RAM.
    set(&a, p(5), 0, 1 << 3);
    assert_eq!(
        walk_with(&a, p(0), map, 100),
        Err(WalkError::BlockOutsideRam {
            block: block(1 << 63, 51)
        })
    );
    set(&a, p(5), 0, 0);
    assert_eq!(walk_with(&a, p(0), map, 100), Ok(vec![block(1 << 50, 38)]));
}

#[test]
fn empty_tree() {
    let a = arena();
    assert_eq!(walk(&a, p(0)), Ok(vec![]));
    let (ranges, summary) = coalesce(&a, p(0)).unwrap();
    assert!(ranges.is_empty());
    assert_eq!(summary, CoalesceSummary::default());
}

#[test]
fn err_root_unaligned() {
    let a = arena();
    let root = PhysAddr::new(p(0) + 8);
    both_fail(&a, p(0) + 8, WalkError::RootUnaligned { root });
}

#[test]
fn err_root_outside_ram() {
    let a = arena();
    both_fail(
        &a,
        0,
        WalkError::RootOutsideRam {
            root: PhysAddr::ZERO,
        },
    );
}

#[test]
fn err_root_forbidden() {
    let a = arena();
    let ram = ram();
    let forbidden = [range(p(0), p(1))];
    let map = RamMap::new(&ram, &forbidden).unwrap();
    let expected = WalkError::RootForbidden {
        root: PhysAddr::new(p(0)),
        forbidden: forbidden[0],
    };
    assert_eq!(walk_with(&a, p(0), map, 10), Err(expected));
    assert_eq!(coalesce_with(&a, p(0), map, 10).err(), Some(expected));
}

#[test]
fn err_root_entry_beyond_3() {
    let a = arena();
    hand_order0(&a);
    set(&a, p(0), 4, p(9));
    both_fail(
        &a,
        p(0),
        WalkError::RootEntryBeyond3 {
            root: PhysAddr::new(p(0)),
            index: TableIndex::new(4).unwrap(),
            entry: PhysAddr::new(p(9)),
        },
    );
}

fn child_err(
    parent: u64,
    level: u8,
    index: u16,
    child: u64,
) -> (PhysAddr, Level, TableIndex, PhysAddr) {
    (
        PhysAddr::new(parent),
        Level::new(level).unwrap(),
        TableIndex::new(index).unwrap(),
        PhysAddr::new(child),
    )
}

#[test]
fn err_child_unaligned() {
    let a = arena();
    hand_order0(&a);
    set(&a, p(3), 0, p(4) + 0x10);
    let (parent, level, index, child) = child_err(p(3), 2, 0, p(4) + 0x10);
    both_fail(
        &a,
        p(0),
        WalkError::ChildUnaligned {
            parent,
            level,
            index,
            child,
        },
    );
}

#[test]
fn err_child_outside_ram() {
    let a = arena();
    hand_order0(&a);
    set(&a, p(4), 2, RAM_END);
    let (parent, level, index, child) = child_err(p(4), 1, 2, RAM_END);
    both_fail(
        &a,
        p(0),
        WalkError::ChildOutsideRam {
            parent,
            level,
            index,
            child,
        },
    );
    // The last page of the space: its end does not fit in 64 bits.
    set(&a, p(4), 2, !0xfff_u64);
    let (parent, level, index, child) = child_err(p(4), 1, 2, !0xfff_u64);
    both_fail(
        &a,
        p(0),
        WalkError::ChildOutsideRam {
            parent,
            level,
            index,
            child,
        },
    );
}

#[test]
fn err_child_forbidden() {
    let a = arena();
    hand_order0(&a);
    let ram = ram();
    let forbidden = [range(p(5), p(6))];
    let map = RamMap::new(&ram, &forbidden).unwrap();
    let (parent, level, index, child) = child_err(p(4), 1, 2, p(5));
    let expected = WalkError::ChildForbidden {
        parent,
        level,
        index,
        child,
        forbidden: forbidden[0],
    };
    assert_eq!(walk_with(&a, p(0), map, 100), Err(expected));
    assert_eq!(coalesce_with(&a, p(0), map, 100).err(), Some(expected));
}

#[test]
fn err_node_reached_twice_shared() {
    let a = arena();
    hand_order0(&a);
    // Root entries 2 and 3 share the level-4 node.
    set(&a, p(0), 3, p(1));
    let (parent, level, index, child) = child_err(p(0), 5, 3, p(1));
    both_fail(
        &a,
        p(0),
        WalkError::NodeReachedTwice {
            parent,
            level,
            index,
            child,
        },
    );
}

#[test]
fn err_node_reached_twice_cycle() {
    let a = arena();
    hand_order0(&a);
    // Level 1 entry 3 points back at the root.
    set(&a, p(4), 3, p(0));
    let (parent, level, index, child) = child_err(p(4), 1, 3, p(0));
    both_fail(
        &a,
        p(0),
        WalkError::NodeReachedTwice {
            parent,
            level,
            index,
            child,
        },
    );
    // A spine node reached again from an order's subtree.
    let a = arena();
    hand_order9(&a);
    set(&a, p(9), 5, p(6));
    let (parent, level, index, child) = child_err(p(9), 1, 5, p(6));
    both_fail(
        &a,
        p(0),
        WalkError::NodeReachedTwice {
            parent,
            level,
            index,
            child,
        },
    );
}

#[test]
fn err_invalid_key() {
    for (bit, error) in [
        (0u16, KeyError::Zero),
        (1, KeyError::OrderTooLarge { key: 1, order: 52 }),
    ] {
        let a = arena();
        for n in 0..5 {
            set(&a, p(n), 0, p(n + 1));
        }
        set(&a, p(5), 0, 1 << bit);
        both_fail(
            &a,
            p(0),
            WalkError::InvalidKey {
                leaf: PhysAddr::new(p(5)),
                bit: LeafBit::new(bit).unwrap(),
                error,
            },
        );
    }
}

/// The lower layers' errors stay reachable as the source: the key's in
/// an invalid key, the page map's in a mapping failure.
#[test]
fn errors_keep_their_source() {
    use core::error::Error;

    let key = WalkError::InvalidKey {
        leaf: PhysAddr::new(p(5)),
        bit: LeafBit::new(0).unwrap(),
        error: KeyError::Zero,
    };
    let source = key.source().and_then(|s| s.downcast_ref::<KeyError>());
    assert_eq!(source, Some(&KeyError::Zero));
    let unmapped = MemError::NotMapped {
        phys: PhysAddr::new(p(40)),
    };
    let map = WalkError::from(unmapped);
    assert_eq!(map, WalkError::PageMap(unmapped));
    let source = map.source().and_then(|s| s.downcast_ref::<MemError>());
    assert_eq!(source, Some(&unmapped));
}

#[test]
fn err_block_outside_ram() {
    let a = arena();
    hand_order0(&a);
    // The tree pages (at 16 MiB) are RAM, the block is just past the end.
    let ram = [range(0x1000, 0x1234_5000)];
    let map = RamMap::new(&ram, &[]).unwrap();
    let expected = WalkError::BlockOutsideRam {
        block: block(0x1234_5000, 0),
    };
    assert_eq!(walk_with(&a, p(0), map, 100), Err(expected));
    assert_eq!(coalesce_with(&a, p(0), map, 100).err(), Some(expected));
    // Adjacent RAM ranges count as one span.
    let ram = [range(0x1000, 0x1234_5000), range(0x1234_5000, RAM_END)];
    let map = RamMap::new(&ram, &[]).unwrap();
    assert_eq!(
        walk_with(&a, p(0), map, 100),
        Ok(vec![block(0x1234_5000, 0)])
    );
}

#[test]
fn err_block_forbidden() {
    let a = arena();
    hand_order9(&a);
    let ram = ram();
    // A scratch page in the middle of the 2 MiB block.
    let forbidden = [range(0x4010_0000, 0x4010_1000)];
    let map = RamMap::new(&ram, &forbidden).unwrap();
    let expected = WalkError::BlockForbidden {
        block: block(0x4000_0000, 9),
        forbidden: forbidden[0],
    };
    assert_eq!(walk_with(&a, p(0), map, 100), Err(expected));
    assert_eq!(coalesce_with(&a, p(0), map, 100).err(), Some(expected));
}

#[test]
fn err_overlap() {
    let a = arena();
    hand_order9(&a);
    // Order 0 at 0x4000_1000: key 2^52 | 0x40001 -> root 2, level 1 entry
    // 8, leaf bit 1.
    set(&a, p(0), 2, p(1));
    set(&a, p(1), 0, p(2));
    set(&a, p(2), 0, p(3));
    set(&a, p(3), 0, p(4));
    set(&a, p(4), 8, p(5));
    set(&a, p(5), 0, 0b10);
    both_fail(
        &a,
        p(0),
        WalkError::Overlap {
            covering: block(0x4000_0000, 9),
            covered: block(0x4000_1000, 0),
        },
    );
}

#[test]
fn err_budget_exceeded() {
    let a = arena();
    hand_order0(&a);
    let ram = ram();
    let map = RamMap::new(&ram, &[]).unwrap();
    // The tree has 6 nodes.
    assert!(walk_with(&a, p(0), map, 6).is_ok());
    let expected = WalkError::BudgetExceeded {
        budget: NodeBudget::new(5),
    };
    assert_eq!(walk_with(&a, p(0), map, 5), Err(expected));
    assert_eq!(coalesce_with(&a, p(0), map, 5).err(), Some(expected));
    assert_eq!(
        walk_with(&a, p(0), map, 0),
        Err(WalkError::BudgetExceeded {
            budget: NodeBudget::new(0)
        })
    );
}

/// A visited set that holds at most `cap` nodes.
struct Capped(NodeSet, usize);

impl VisitedSet for Capped {
    fn insert(&mut self, node: PhysAddr) -> Result<bool, VisitedFull> {
        if self.0.len() >= self.1 {
            return Err(VisitedFull);
        }
        self.0.insert(node)
    }
}

#[test]
fn err_visited_set_full() {
    let a = arena();
    hand_order0(&a);
    let ram = ram();
    let map = RamMap::new(&ram, &[]).unwrap();
    let open = |cap| {
        RadixReader::open(
            &a,
            map,
            PhysAddr::new(p(0)),
            Capped(NodeSet::new(), cap),
            NodeBudget::new(100),
        )
    };
    assert_eq!(open(6).unwrap().walk().count(), 1);
    assert_eq!(
        open(4).unwrap().walk().collect::<Result<Vec<_>, _>>(),
        Err(WalkError::VisitedSetFull {
            node: PhysAddr::new(p(4))
        })
    );
    assert_eq!(
        open(0).err(),
        Some(WalkError::VisitedSetFull {
            node: PhysAddr::new(p(0))
        })
    );
}

#[test]
fn err_page_map() {
    let a = arena();
    hand_order0(&a);
    // In RAM, but not in the arena: the map cannot reach it.
    set(&a, p(4), 2, p(40));
    both_fail(
        &a,
        p(0),
        WalkError::PageMap(MemError::NotMapped {
            phys: PhysAddr::new(p(40)),
        }),
    );
}

#[test]
fn errors_fuse_the_iterators() {
    let a = arena();
    hand_order0(&a);
    set(&a, p(4), 1, p(40));
    let ram = ram();
    let map = RamMap::new(&ram, &[]).unwrap();
    let mut w = RadixReader::open(
        &a,
        map,
        PhysAddr::new(p(0)),
        NodeSet::new(),
        NodeBudget::new(100),
    )
    .unwrap()
    .walk();
    assert!(matches!(w.next(), Some(Err(WalkError::PageMap(_)))));
    assert!(w.next().is_none());
}

#[test]
fn block_runs_in_walk_order() {
    let t = TestTree::new(64);
    for i in 0..100u64 {
        t.insert(block(0x8000_0000 + i * 0x1000, 0));
    }
    t.insert(block(0x4000_0000, 18));
    let ram = ram();
    let map = RamMap::new(&ram, &[]).unwrap();
    let mut w = t.open(map).unwrap().walk();
    let r1 = w.next_run().unwrap().unwrap();
    assert_eq!((r1.first(), r1.count()), (block(0x4000_0000, 18), 1));
    let r2 = w.next_run().unwrap().unwrap();
    assert_eq!(
        (r2.first(), r2.count(), r2.order()),
        (block(0x8000_0000, 0), 100, Order::ZERO)
    );
    assert_eq!(r2.range(), range(0x8000_0000, 0x8006_4000));
    assert_eq!(r2.blocks().nth(99), Some(block(0x8006_3000, 0)));
    assert!(w.next_run().is_none());
    assert_eq!(w.counts().get(Order::ZERO), 100);
    assert_eq!(w.counts().get(Order::new(18)), 1);
}

/// Random blocks of any order in [0, 2^63), biased to low orders.
fn any_block() -> impl Strategy<Value = Block> {
    let order = prop_oneof![
        6 => 0u8..=2,
        3 => 0u8..=20,
        1 => 0u8..=51,
    ];
    // Addresses clustered in a few regions so blocks touch and merge.
    let base = prop_oneof![Just(0u64), Just(0x4000_0000), Just(1 << 40), any::<u64>()];
    (order, base, 0u64..4096).prop_map(|(o, base, off)| {
        let order = Order::new(o);
        let phys = (base & ((1 << 63) - 1)).wrapping_add(off << order.shift()) & ((1 << 63) - 1);
        Block::containing(PhysAddr::new(phys), order)
    })
}

fn overlaps(a: Block, b: Block) -> bool {
    a != b && a.range().unwrap().overlaps(b.range().unwrap())
}

/// Keeps the blocks that overlap none kept before.
fn disjoint(blocks: Vec<Block>) -> Vec<Block> {
    let mut kept: Vec<Block> = Vec::new();
    for b in blocks {
        if !kept.iter().any(|k| overlaps(*k, b)) {
            kept.push(b);
        }
    }
    kept
}

fn big_map() -> [PhysRange; 1] {
    [range(0x1000, 1 << 63)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 128 }))]

    #[test]
    fn walk_and_coalesce_match_the_oracle(blocks in proptest::collection::vec(any_block(), 0..200)) {
        let blocks: Vec<Block> = disjoint(blocks).into_iter().filter(|b| b.phys().as_u64() != 0).collect();
        let t = TestTree::new(2048);
        for b in &blocks {
            t.insert(*b);
        }
        let ram = big_map();
        let map = RamMap::new(&ram, &[]).unwrap();
        let budget = NodeBudget::new(4096);
        let walked: Vec<Block> = RadixReader::open(&t.arena, map, t.root, NodeSet::new(), budget)
            .unwrap().walk().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(&walked, &sorted_by_key(&blocks));
        let mut c = RadixReader::open(&t.arena, map, t.root, NodeSet::new(), budget).unwrap().coalesce();
        let ranges: Vec<PhysRange> = c.by_ref().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(&ranges, &merged(&blocks));
        let mut counts = OrderCounts::ZERO;
        for b in sorted_by_key(&blocks) {
            counts.add(b.order(), 1);
        }
        prop_assert_eq!(c.summary().counts(), &counts);
        prop_assert_eq!(c.summary().ranges(), ranges.len() as u64);
    }

    #[test]
    fn overlaps_are_always_found(blocks in proptest::collection::vec(any_block(), 0..60)) {
        let blocks: Vec<Block> = blocks.into_iter().filter(|b| b.phys().as_u64() != 0).collect();
        let t = TestTree::new(1024);
        for b in &blocks {
            t.insert(*b);
        }
        let ram = big_map();
        let map = RamMap::new(&ram, &[]).unwrap();
        let budget = NodeBudget::new(4096);
        let any_overlap = blocks.iter().any(|a| blocks.iter().any(|b| overlaps(*a, *b)));
        let walked = RadixReader::open(&t.arena, map, t.root, NodeSet::new(), budget)
            .unwrap().walk().collect::<Result<Vec<_>, _>>();
        let ranges = RadixReader::open(&t.arena, map, t.root, NodeSet::new(), budget)
            .unwrap().coalesce().collect::<Result<Vec<_>, _>>();
        for result in [walked.as_ref().err(), ranges.as_ref().err()] {
            match result {
                None => prop_assert!(!any_overlap),
                Some(WalkError::Overlap { covering, covered }) => {
                    prop_assert!(any_overlap);
                    prop_assert!(blocks.contains(covering) && blocks.contains(covered));
                    prop_assert!(covering.order() > covered.order());
                    prop_assert!(overlaps(*covering, *covered));
                }
                Some(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}

mod seeds;

// ---- bounded work: nodes counted, not time ----

#[test]
fn node_budget_for_ram_is_what_the_ram_justifies() {
    // 1 TiB in one range: 16,398 leaves and 143 inner nodes for orders
    // 0..=28 (larger blocks do not fit), not 2^28 pages.
    let tib = [range(0, 1 << 40)];
    let map = RamMap::new(&tib, &[]).unwrap();
    assert_eq!(NodeBudget::for_ram(&map).nodes(), 16_541);
    // Tiny RAM: never more nodes than pages.
    let tiny = [range(0x1000, 0x5000)];
    let map = RamMap::new(&tiny, &[]).unwrap();
    assert_eq!(NodeBudget::for_ram(&map).nodes(), 4);
    // A real tree always fits its budget: the writer's tree of 40 blocks
    // of four orders spread over 1 GiB of RAM.
    let t = TestTree::new(64);
    for i in 0..10u64 {
        t.insert(block(i << 26, 0));
        t.insert(block((i << 26) + (1 << 21), 9));
        t.insert(block((i << 26) + (1 << 22), 4));
        t.insert(block((i << 26) + (1 << 23), 1));
    }
    let gib = [range(0, 1 << 30)];
    let map = RamMap::new(&gib, &[]).unwrap();
    let budget = NodeBudget::for_ram(&map).nodes();
    let mut walk = t.open(map).unwrap().walk();
    assert_eq!(walk.by_ref().filter(Result::is_ok).count(), 40);
    assert!(walk.nodes() <= budget, "{} nodes > {budget}", walk.nodes());
}

#[test]
fn dag_of_one_shared_child_stops_at_the_first_second_reference() {
    // Every entry of every inner node names the same child: unchecked,
    // 4 * 512^4 = 2^38 paths to one leaf. The reader enters the six
    // nodes of the spine once and stops at the next reference to one of
    // them.
    let a = arena();
    for n in 0..5u64 {
        let entries = if n == 0 { 4 } else { 512 };
        for w in 0..entries {
            set(&a, p(n), w, p(n + 1));
        }
    }
    let ram = ram();
    let map = RamMap::new(&ram, &[]).unwrap();
    let open = || {
        RadixReader::open(
            &a,
            map,
            PhysAddr::new(p(0)),
            NodeSet::new(),
            NodeBudget::for_ram(&map),
        )
        .unwrap()
    };
    let reader = open();
    assert_eq!(reader.nodes(), 6);
    let mut walk = reader.walk();
    let err = walk.by_ref().find_map(Result::err).unwrap();
    assert!(matches!(err, WalkError::NodeReachedTwice { .. }), "{err}");
    assert_eq!(walk.nodes(), 6);
    let mut c = open().coalesce();
    assert!(matches!(
        c.by_ref().find_map(Result::err),
        Some(WalkError::NodeReachedTwice { .. })
    ));
    assert_eq!(c.nodes(), 6);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "heavy for Miri: 1 ms or more natively, thousands of times that interpreted"
)]
fn all_ones_leaves_cost_their_pages() {
    // Sixteen leaves of all ones under one level-1 node (order 0, 2 GiB
    // from pfn 0x10000): 524,288 blocks, one coalesced range, and exactly
    // 5 + 16 nodes entered, the pages the tree has.
    let a = VecArena::new(PhysAddr::new(ARENA_BASE), 32);
    for n in 0..32 {
        a.claim(PhysAddr::new(p(n))).unwrap();
    }
    set(&a, p(0), 2, p(1));
    set(&a, p(1), 0, p(2));
    set(&a, p(2), 0, p(3));
    set(&a, p(3), 0, p(4));
    for leaf in 0..16u64 {
        set(&a, p(4), 2 + leaf as usize, p(5 + leaf));
        for w in 0..512 {
            set(&a, p(5 + leaf), w, !0);
        }
    }
    let ram = ram();
    let map = RamMap::new(&ram, &[]).unwrap();
    let open = || {
        RadixReader::open(
            &a,
            map,
            PhysAddr::new(p(0)),
            NodeSet::new(),
            NodeBudget::for_ram(&map),
        )
        .unwrap()
    };
    let mut walk = open().walk();
    assert_eq!(walk.by_ref().filter(Result::is_ok).count(), 16 * 32768);
    assert_eq!(walk.nodes(), 21);
    let mut c = open().coalesce();
    let ranges: Vec<_> = c.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(ranges, vec![range(0x1000_0000, 0x1000_0000 + (16 << 27))]);
    assert_eq!(c.nodes(), 21);
    assert_eq!(c.summary().counts().total(), 16 * 32768);
}
