//! The writer and the reader against one oracle.
//!
//! Random sequences of preserve / unpreserve / preserve_pages /
//! unpreserve_pages run on the lock-free [`RadixTree`] and on a
//! `BTreeSet<Block>` that knows the rules (no two preserved blocks overlap;
//! unpreserving needs the exact block). After the sequence, the validating
//! walker must yield exactly the oracle's blocks in Linux walk order
//! (ascending key), and the coalescer exactly the oracle's maximal ranges
//! with the oracle's per-order counts. The writer's unit tests check its
//! bytes and the reader's check hand-built trees; this ties the two together.

use std::collections::BTreeSet;

use kho::{
    Block, NodeBudget, NodeSet, Order, Pfn, PhysAddr, PhysRange, RadixKey, RadixReader, RadixTree,
    RamMap, VecArena, split_pages,
};
use proptest::prelude::*;

/// Preserved blocks live in the first 64 GiB; tree pages in an arena above.
const SPACE_PAGES: u64 = 1 << 24;
const ARENA_BASE: u64 = 1 << 40;

#[derive(Debug, Clone)]
enum Op {
    Preserve(Block),
    Unpreserve(Block),
    PreservePages(Pfn, u64),
    UnpreservePages(Pfn, u64),
}

fn block() -> impl Strategy<Value = Block> {
    // Small orders often, large ones sometimes; addresses clustered so
    // blocks collide, overlap and merge.
    (
        prop_oneof![4 => 0u32..3, 2 => 3u32..10, 1 => 10u32..19],
        0u64..4096,
    )
        .prop_map(|(order, slot)| {
            let order = Order::try_new(order).unwrap();
            let pfn = (slot << order.as_u32()) % SPACE_PAGES;
            Block::from_pfn(Pfn::new(pfn).unwrap(), order).unwrap()
        })
}

fn op() -> impl Strategy<Value = Op> {
    let pages = (0u64..20_000, 1u64..700).prop_map(|(pfn, nr)| (Pfn::new(pfn).unwrap(), nr));
    prop_oneof![
        5 => block().prop_map(Op::Preserve),
        2 => block().prop_map(Op::Unpreserve),
        1 => pages.clone().prop_map(|(p, n)| Op::PreservePages(p, n)),
        1 => pages.prop_map(|(p, n)| Op::UnpreservePages(p, n)),
    ]
}

#[derive(Default)]
struct Oracle(BTreeSet<Block>);

impl Oracle {
    fn overlaps(&self, b: Block) -> bool {
        let r = b.range().unwrap();
        self.0.iter().any(|o| o.range().unwrap().overlaps(r))
    }

    fn preserve(&mut self, b: Block) -> bool {
        if self.overlaps(b) {
            return false;
        }
        self.0.insert(b)
    }

    fn unpreserve(&mut self, b: Block) -> bool {
        self.0.remove(&b)
    }

    /// All or nothing, like the writer.
    fn preserve_pages(&mut self, pfn: Pfn, nr: u64) -> bool {
        let blocks: Vec<Block> = split_pages(pfn, nr).unwrap().collect();
        let mut next = Oracle(self.0.clone());
        if blocks.iter().all(|&b| next.preserve(b)) {
            *self = next;
            true
        } else {
            false
        }
    }

    fn unpreserve_pages(&mut self, pfn: Pfn, nr: u64) -> bool {
        let blocks: Vec<Block> = split_pages(pfn, nr).unwrap().collect();
        if blocks.iter().all(|b| self.0.contains(b)) {
            for b in &blocks {
                self.0.remove(b);
            }
            true
        } else {
            false
        }
    }

    fn walk_order(&self) -> Vec<Block> {
        let mut v: Vec<Block> = self.0.iter().copied().collect();
        v.sort_by_key(|&b| RadixKey::encode(b));
        v
    }

    fn ranges(&self) -> Vec<PhysRange> {
        let mut by_addr: Vec<PhysRange> = self.0.iter().map(|b| b.range().unwrap()).collect();
        by_addr.sort();
        let mut out: Vec<PhysRange> = Vec::new();
        for r in by_addr {
            match out.last_mut() {
                Some(last) if last.end() == r.start() => {
                    *last = PhysRange::new(last.start(), r.end()).unwrap();
                }
                _ => out.push(r),
            }
        }
        out
    }
}

fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let arena = VecArena::new(PhysAddr::new(ARENA_BASE), 4096);
    let tree = RadixTree::new(&arena).unwrap();
    let mut oracle = Oracle::default();
    for op in ops {
        let (got, want) = match *op {
            Op::Preserve(b) => (tree.preserve(b).is_ok(), oracle.preserve(b)),
            Op::Unpreserve(b) => (tree.unpreserve(b).is_ok(), oracle.unpreserve(b)),
            Op::PreservePages(p, n) => (
                tree.preserve_pages(p, n).is_ok(),
                oracle.preserve_pages(p, n),
            ),
            Op::UnpreservePages(p, n) => (
                tree.unpreserve_pages(p, n).is_ok(),
                oracle.unpreserve_pages(p, n),
            ),
        };
        prop_assert_eq!(got, want, "{:?}", op);
    }

    let ram = [
        PhysRange::from_start_size(PhysAddr::ZERO, SPACE_PAGES << 12).unwrap(),
        arena.range(),
    ];
    let map = RamMap::new(&ram, &[]).unwrap();
    let open = || {
        RadixReader::open(
            &arena,
            map,
            tree.root(),
            NodeSet::new(),
            NodeBudget::for_ram(&map),
        )
        .unwrap()
    };
    let walked: Vec<Block> = open().walk().collect::<Result<_, _>>().unwrap();
    prop_assert_eq!(walked, oracle.walk_order());

    let mut coalesce = open().coalesce();
    let ranges: Vec<PhysRange> = coalesce.by_ref().collect::<Result<_, _>>().unwrap();
    prop_assert_eq!(&ranges, &oracle.ranges());
    let summary = *coalesce.summary();
    for order in Order::all() {
        let want = oracle.0.iter().filter(|b| b.order() == order).count() as u64;
        prop_assert_eq!(summary.counts().get(order), want, "order {}", order);
    }
    prop_assert_eq!(summary.ranges(), ranges.len() as u64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 128 }, ..ProptestConfig::default() })]

    #[test]
    fn writer_reader_and_oracle_agree(ops in proptest::collection::vec(op(), 1..80)) {
        check(&ops)?;
    }
}

#[test]
fn a_dense_run_and_a_gigantic_folio_coalesce_into_one_range() {
    // 2 MiB of order-0 pages right after a 1 GiB block: one range.
    let ops = [
        Op::Preserve(Block::new(PhysAddr::new(1 << 30), Order::new(18)).unwrap()),
        Op::PreservePages(Pfn::new(2 << 18).unwrap(), 512),
    ];
    check(&ops).unwrap();
}
