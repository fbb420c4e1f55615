//! The trackers that hold nothing per block against the one that does:
//! the radix tree read in place ([`TreeTracker`]) and a kho-v1 list's
//! entries ([`kho::V1Tracker`]) answer every lookup as a
//! [`PreservedSet`] of the same blocks does, enumerate exactly its blocks,
//! and give the cross-layer check the same orphans, which a naive
//! per-block reference computes too.

use std::collections::BTreeSet;

use kho::{
    BitmapSize, Block, CrossCheck, NodeBudget, Order, Orphans, PhysAddr, PhysRange,
    PreservedBlocks, PreservedLookup, PreservedSet, RadixTree, RamMap, TreeTracker, V1Reader,
    VecArena, testing::write_v1,
};
use proptest::prelude::*;

/// Blocks live in the first 64 GiB; tree and list pages in an arena above.
const SPACE: u64 = 64 << 30;
const ARENA_BASE: u64 = 1 << 40;
const ARENA_PAGES: usize = 2048;

fn ram() -> [PhysRange; 2] {
    [
        PhysRange::new(PhysAddr::ZERO, PhysAddr::new(SPACE)).unwrap(),
        PhysRange::from_start_size(PhysAddr::new(ARENA_BASE), ARENA_PAGES as u64 * 4096).unwrap(),
    ]
}

/// Disjoint blocks from raw (page, order) picks: a pick overlapping an
/// earlier block is dropped. Runs of neighbours come from `run`.
fn disjoint(picks: &[(u64, u8, u8)]) -> Vec<Block> {
    let mut taken: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut out = Vec::new();
    for &(page, order, run) in picks {
        let order = Order::new(order);
        let size = order.bytes();
        let start = (page * 4096) / size * size;
        for i in 0..u64::from(run) {
            let s = start + i * size;
            let e = s + size;
            if e > SPACE || taken.range(..(e, 0)).any(|&(a, b)| a < e && s < b) {
                continue;
            }
            taken.insert((s, e));
            out.push(Block::new(PhysAddr::new(s), order).unwrap());
        }
    }
    out
}

/// The orphans by the definition: blocks no claim touches, ascending.
fn reference_orphans(blocks: &[Block], claims: &[PhysRange]) -> Orphans {
    let mut sorted = blocks.to_vec();
    sorted.sort();
    let mut o = Orphans::default();
    for b in sorted {
        let r = b.range().unwrap();
        if !claims
            .iter()
            .any(|c| c.start() < r.end() && r.start() < c.end())
        {
            o.blocks += 1;
            o.bytes += b.size();
            if o.first.len() < Orphans::FIRST {
                o.first.push(b);
            }
        }
    }
    o
}

fn orphans(tracker: &dyn PreservedBlocks, claims: &[PhysRange]) -> Orphans {
    let mut check = CrossCheck::new(tracker);
    for (i, c) in claims.iter().enumerate() {
        check = check.blob(&format!("c{i}"), c.start(), Some(c.size()));
    }
    check.run().orphans
}

fn enumerated(tracker: &dyn PreservedBlocks) -> Vec<Block> {
    let mut out = Vec::new();
    tracker
        .for_each_run(&mut |first, count| {
            let mut at = first.phys();
            for _ in 0..count {
                out.push(Block::new(at, first.order()).unwrap());
                at = PhysAddr::new(at.as_u64() + first.size());
            }
        })
        .unwrap();
    out.sort();
    out
}

/// Addresses to look up: each block's start, middle and last byte, the
/// byte after it, and the picks' raw addresses.
fn queries(blocks: &[Block], extra: &[u64]) -> Vec<PhysAddr> {
    let mut q: Vec<PhysAddr> = extra.iter().map(|&a| PhysAddr::new(a % SPACE)).collect();
    for b in blocks {
        let s = b.phys().as_u64();
        q.extend([s, s + b.size() / 2, s + b.size() - 1, s + b.size()].map(PhysAddr::new));
    }
    q
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn trackers_agree_with_the_preserved_set(
        picks in prop::collection::vec((0u64..(SPACE >> 12), 0u8..12, 1u8..40), 0..24),
        extra in prop::collection::vec(any::<u64>(), 0..16),
        raw_claims in prop::collection::vec((0u64..SPACE, 1u64..(64 << 20)), 0..6),
        edges in prop::collection::vec((any::<prop::sample::Index>(), 1u64..(4 << 20), any::<bool>()), 0..4),
    ) {
        let blocks = disjoint(&picks);
        let mut sorted = blocks.clone();
        sorted.sort();
        let set = PreservedSet::from_blocks(blocks.iter().copied()).unwrap();
        let mut claims: Vec<PhysRange> = raw_claims
            .iter()
            .filter_map(|&(s, n)| PhysRange::from_start_size(PhysAddr::new(s), n.min(SPACE - s)).ok())
            .filter(|r| !r.is_empty())
            .collect();
        // Claims that end exactly where a block starts, or start exactly
        // where one ends: touching is sharing a byte, not a boundary.
        for (i, n, before) in &edges {
            let Some(b) = (!blocks.is_empty()).then(|| blocks[i.index(blocks.len())]) else {
                continue;
            };
            let r = b.range().unwrap();
            let c = if *before {
                let s = r.start().as_u64().saturating_sub(*n);
                PhysRange::new(PhysAddr::new(s), r.start())
            } else {
                PhysRange::new(r.end(), PhysAddr::new((r.end().as_u64() + n).min(SPACE)))
            };
            claims.extend(c.ok().filter(|c| !c.is_empty()));
        }
        let want = reference_orphans(&blocks, &claims);
        prop_assert_eq!(&orphans(&set, &claims), &want);
        let ram = ram();
        let map = RamMap::new(&ram, &[]).unwrap();
        let q = queries(&blocks, &extra);

        // The radix tree, read in place.
        let arena = VecArena::new(PhysAddr::new(ARENA_BASE), ARENA_PAGES);
        let tree = RadixTree::new(&arena).unwrap();
        for &b in &blocks {
            tree.preserve(b).unwrap();
        }
        let t = TreeTracker::open(&arena, map, tree.root(), NodeBudget::new(ARENA_PAGES as u64))
            .unwrap();
        for &a in &q {
            prop_assert_eq!(t.block_containing(a), set.block_containing(a), "{}", a);
        }
        prop_assert_eq!(&enumerated(&t), &sorted);
        prop_assert_eq!(&orphans(&t, &claims), &want);

        // kho-v1, both bitmap sizes.
        for size in [BitmapSize::Bytes512, BitmapSize::Page] {
            let arena = VecArena::new(PhysAddr::new(ARENA_BASE), ARENA_PAGES);
            let head = write_v1(&arena, &blocks, size).unwrap();
            let v = V1Reader::new(&arena, map, size).tracker(head, |_| ()).unwrap();
            prop_assert_eq!(v.summary().blocks, blocks.len() as u64);
            for &a in &q {
                prop_assert_eq!(v.block_containing(a), set.block_containing(a), "{:?} {}", size, a);
            }
            prop_assert_eq!(&enumerated(&v), &sorted);
            prop_assert_eq!(&v.ascending().collect::<Vec<_>>(), &sorted);
            prop_assert_eq!(&orphans(&v, &claims), &want);
        }
    }
}
