//! The salvage walk on trees written by [`RadixTree`], then broken by
//! hand: each damage's span is exactly its subtree's, the walk yields
//! every block outside it, and a sound tree salvages to the plain walk.

use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::addr::{Block, PhysRange};
use crate::key::{RadixKey, TableIndex};
use crate::mem::VecArena;
use crate::radix::RadixTree;
use crate::testing::{block, range};
use crate::walk::NodeSet;

const BASE: u64 = 0x100_0000;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn ram() -> [PhysRange; 1] {
    [range(0x1000, 8 * GIB)]
}

/// Blocks in four order-0 leaves, and of orders 2 and 9.
fn blocks() -> Vec<Block> {
    vec![
        block(0x2000, 0),
        block(0x3000, 0),
        block(200 * MIB, 0),
        block(300 * MIB, 0),
        block(300 * MIB + 0x1000, 0),
        block(5 * GIB, 0),
        block(2 * MIB, 9),
        block(6 * GIB, 9),
        block(512 * MIB, 2),
    ]
}

fn tree() -> (VecArena, PhysAddr) {
    let arena = VecArena::new(PhysAddr::new(BASE), 128);
    let root = {
        let t = RadixTree::new(&arena).unwrap();
        for b in blocks() {
            t.preserve(b).unwrap();
        }
        t.root()
    };
    (arena, root)
}

/// The entry at `level` on `b`'s path: (node, index, value).
fn entry_on_path(
    a: &VecArena,
    root: PhysAddr,
    b: Block,
    level: Level,
) -> (PhysAddr, TableIndex, u64) {
    let key = RadixKey::encode(b);
    let mut node = root;
    let mut l = Level::ROOT;
    loop {
        let i = key.index(l);
        let v = a.page(node).unwrap().load(i.as_usize()).unwrap();
        if l == level {
            return (node, i, v);
        }
        node = PhysAddr::new(v);
        l = l.child().unwrap();
    }
}

fn salvage(a: &VecArena, root: PhysAddr) -> (Vec<Block>, Vec<Damage>) {
    let ram = ram();
    let map = RamMap::new(&ram, &[]).unwrap();
    let (mut blocks, mut damage) = (Vec::new(), Vec::new());
    for item in SalvageWalk::open(a, map, root, NodeSet::new(), NodeBudget::new(1000)) {
        match item {
            Salvaged::Run(r) => blocks.extend(r.blocks()),
            Salvaged::Damage(d) => damage.push(d),
        }
    }
    (blocks, damage)
}

fn plain(a: &VecArena, root: PhysAddr) -> Result<Vec<Block>, WalkError> {
    let ram = ram();
    let map = RamMap::new(&ram, &[]).unwrap();
    RadixReader::open(a, map, root, NodeSet::new(), NodeBudget::new(1000))?
        .walk()
        .collect()
}

/// The blocks a damage of `order` over `span` leaves.
fn outside(order: Order, span: PhysRange) -> Vec<Block> {
    let mut v: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| b.order() != order || !b.range().unwrap().overlaps(span))
        .collect();
    v.sort_by_key(|b| RadixKey::encode(*b));
    v
}

#[test]
fn a_sound_tree_salvages_to_the_plain_walk() {
    let (a, root) = tree();
    let (got, damage) = salvage(&a, root);
    assert!(damage.is_empty());
    assert_eq!(got, plain(&a, root).unwrap());
    assert_eq!(got.len(), blocks().len());
}

#[test]
fn a_child_pointer_damages_exactly_its_subtree() {
    // Order 0 at 300 MiB: a level-L entry covers 2^(shift(L) + 12) bytes.
    let b = block(300 * MIB, 0);
    for level in [1u8, 2, 3, 4] {
        let level = Level::new(level).unwrap();
        let (a, root) = tree();
        let (node, index, v) = entry_on_path(&a, root, b, level);
        a.write_word(node, index.as_usize(), v | 0x8).unwrap();
        assert!(matches!(
            plain(&a, root),
            Err(WalkError::ChildUnaligned { .. })
        ));
        let (got, damage) = salvage(&a, root);
        assert_eq!(damage.len(), 1, "{level:?}");
        let d = damage[0];
        assert_eq!(d.node, PhysAddr::new(v | 0x8));
        assert_eq!(d.level, level.child().unwrap());
        assert_eq!(d.order, Some(Order::ZERO));
        let size = 1u64 << (level.shift() + 12);
        let start = (300 * MIB) & !(size - 1);
        let hull_end = 8 * GIB;
        let want = range(start.max(0x1000), (start + size).min(hull_end));
        assert_eq!(d.span, want, "{level:?}");
        assert!(matches!(d.error, WalkError::ChildUnaligned { .. }));
        assert_eq!(got, outside(Order::ZERO, d.span), "{level:?}");
    }
}

#[test]
fn a_bad_leaf_run_damages_its_leaf_and_the_walk_goes_on() {
    let (a, root) = tree();
    // A bit of the 300 MiB leaf naming a page in a RAM hole at 320 MiB.
    let (leaf, ..) = {
        let (n, i, v) = entry_on_path(&a, root, block(300 * MIB, 0), Level::new(1).unwrap());
        (PhysAddr::new(v), n, i)
    };
    let bit = ((320 * MIB + 0x1000) >> 12) & 0x7fff;
    let w = (bit / 64) as usize;
    let old = a.page(leaf).unwrap().load(w).unwrap();
    a.write_word(leaf, w, old | 1 << (bit % 64)).unwrap();
    let ram = [
        range(0x1000, 320 * MIB),
        range(320 * MIB + 0x10_0000, 8 * GIB),
    ];
    let map = RamMap::new(&ram, &[]).unwrap();
    let items: Vec<Salvaged> =
        SalvageWalk::open(&a, map, root, NodeSet::new(), NodeBudget::new(1000)).collect();
    let damage: Vec<Damage> = items
        .iter()
        .filter_map(|i| match i {
            Salvaged::Damage(d) => Some(*d),
            Salvaged::Run(_) => None,
        })
        .collect();
    assert_eq!(damage.len(), 1);
    assert_eq!(damage[0].node, leaf);
    assert_eq!(damage[0].level, Level::LEAF);
    assert_eq!(damage[0].span, range(256 * MIB, 384 * MIB));
    assert!(matches!(damage[0].error, WalkError::BlockOutsideRam { .. }));
    // The other order-0 leaves and the other orders are all there.
    let got: Vec<Block> = items
        .iter()
        .filter_map(|i| match i {
            Salvaged::Run(r) => Some(r.blocks()),
            Salvaged::Damage(_) => None,
        })
        .flatten()
        .filter(|b| !(b.order() == Order::ZERO && damage[0].span.contains(b.phys())))
        .collect();
    assert_eq!(got, outside(Order::ZERO, damage[0].span));
}

#[test]
fn a_shared_node_or_a_bad_root_damages_all_ram() {
    // Two level-1 entries of order 0 to one leaf.
    let (a, root) = tree();
    let (_, _, leaf) = entry_on_path(&a, root, block(0x2000, 0), Level::new(1).unwrap());
    let (n, i, _) = entry_on_path(&a, root, block(200 * MIB, 0), Level::new(1).unwrap());
    a.write_word(n, i.as_usize(), leaf).unwrap();
    let (_, damage) = salvage(&a, root);
    assert_eq!(damage.len(), 1);
    assert_eq!(damage[0].level, Level::ROOT);
    assert_eq!(damage[0].order, None);
    assert_eq!(damage[0].span, range(0x1000, 8 * GIB));
    assert!(matches!(
        damage[0].error,
        WalkError::NodeReachedTwice { .. }
    ));
    // A root entry past 3: the tree does not open.
    let (a, root) = tree();
    a.write_word(root, 7, BASE).unwrap();
    let (got, damage) = salvage(&a, root);
    assert!(got.is_empty());
    assert_eq!(damage.len(), 1);
    assert_eq!(damage[0].node, root);
    assert!(matches!(
        damage[0].error,
        WalkError::RootEntryBeyond3 { .. }
    ));
}

#[test]
fn an_overlap_damages_both_leaves() {
    // An order-0 block inside the order-9 block at 2 MiB (the writer
    // refuses it: the bit set by hand).
    let (a, root) = tree();
    let (_, _, leaf) = entry_on_path(&a, root, block(0x2000, 0), Level::new(1).unwrap());
    let bit = (2 * MIB + 0x1000) >> 12;
    let w = (bit / 64) as usize;
    let old = a.page(PhysAddr::new(leaf)).unwrap().load(w).unwrap();
    a.write_word(PhysAddr::new(leaf), w, old | 1 << (bit % 64))
        .unwrap();
    assert!(matches!(plain(&a, root), Err(WalkError::Overlap { .. })));
    let (got, damage) = salvage(&a, root);
    assert_eq!(damage.len(), 2);
    assert_eq!(damage[0].order, Some(Order::ZERO));
    assert_eq!(damage[0].span, range(0x1000, 128 * MIB));
    assert_eq!(damage[1].order, Some(Order::new(9)));
    assert_eq!(damage[1].span, range(0x1000, 8 * GIB));
    // The bad run is never yielded (blocks of the leaf before it may be:
    // they lie in the span the caller drops); the walk goes on past it.
    assert!(!got.contains(&block(2 * MIB + 0x1000, 0)));
    for b in [
        block(200 * MIB, 0),
        block(300 * MIB, 0),
        block(5 * GIB, 0),
        block(512 * MIB, 2),
    ] {
        assert!(got.contains(&b), "{b:?}");
    }
}

#[test]
fn mode_names_round_trip() {
    for m in OnCorruption::ALL {
        assert_eq!(m.as_str().parse::<OnCorruption>(), Ok(m));
    }
    assert_eq!("drop".parse::<OnCorruption>(), Err(UnknownOnCorruption));
    assert_eq!(OnCorruption::default(), OnCorruption::Reject);
}
