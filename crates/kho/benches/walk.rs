//! Walk and coalesce benches: the restore path's engine.
//!
//! Trees are built by the writer ([`RadixTree`] through a [`Cursor`](kho::Cursor)):
//! - dense: 48 GiB of contiguous order-0 blocks (384 full leaves);
//! - sparse: 2^20 random order-0 blocks in 64 GiB (xorshift, fixed seed);
//! - mixed: 1 GiB, 2 MiB, 64 KiB and 4 KiB blocks in adjacent regions.
//!
//! Each case times `RadixReader::open` plus a full pass: coalesce (ranges),
//! walk by runs, and walk block by block in Linux order.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kho::{
    Block, NodeBudget, NodeSet, Order, PhysAddr, PhysRange, RadixError, RadixReader, RadixTree,
    RamMap, VecArena,
};

const GIB: u64 = 1 << 30;

/// Tree pages live at 120 GiB, inside the readers' RAM, outside the blocks.
struct Tree {
    tree: RadixTree<VecArena>,
}

impl Tree {
    fn new() -> Self {
        let arena = VecArena::new(PhysAddr::new(120 * GIB), 2048);
        Self {
            tree: RadixTree::new(arena).unwrap(),
        }
    }

    /// Preserves `blocks`; a block already preserved is skipped (the random
    /// generator repeats itself).
    fn insert_all(&self, blocks: impl IntoIterator<Item = Block>) {
        let mut cursor = self.tree.cursor();
        for b in blocks {
            match cursor.preserve(b) {
                Ok(()) | Err(RadixError::AlreadyPreserved { .. }) => {}
                Err(e) => panic!("preserve {b:?}: {e}"),
            }
        }
    }

    /// Every block of `order` in `[start, end)`.
    fn fill(&self, start: u64, end: u64, order: u8) {
        let size = Order::new(order).bytes();
        self.insert_all((start..end).step_by(size as usize).map(|p| block(p, order)));
    }

    fn arena(&self) -> &VecArena {
        self.tree.mem()
    }

    fn root(&self) -> PhysAddr {
        self.tree.root()
    }
}

fn block(phys: u64, order: u8) -> Block {
    Block::new(PhysAddr::new(phys), Order::new(order)).unwrap()
}

fn dense() -> Tree {
    let t = Tree::new();
    t.fill(0, 48 * GIB, 0);
    t
}

fn sparse() -> Tree {
    let t = Tree::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let pages = (64 * GIB) >> 12;
    t.insert_all((0..(1 << 20)).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        block((x % pages) << 12, 0)
    }));
    t
}

fn mixed() -> Tree {
    let t = Tree::new();
    // Two 1 GiB blocks at [1, 3) GiB.
    t.fill(GIB, 3 * GIB, 18);
    // 2 MiB blocks on every other slot of [3, 4) GiB (the first one joins
    // the 1 GiB blocks).
    t.insert_all(
        (0..512)
            .step_by(2)
            .map(|i| block(3 * GIB + i * (2 << 20), 9)),
    );
    // 64 KiB blocks on every other slot of [4, 5) GiB.
    t.insert_all(
        (0..16384)
            .step_by(2)
            .map(|i| block(4 * GIB + i * (64 << 10), 4)),
    );
    // 4 KiB blocks on every third page of [5, 6) GiB.
    t.insert_all(
        (0..262_144)
            .step_by(3)
            .map(|i| block(5 * GIB + i * 4096, 0)),
    );
    t
}

fn ram() -> [PhysRange; 1] {
    [PhysRange::new(PhysAddr::ZERO, PhysAddr::new(128 * GIB)).unwrap()]
}

fn forbidden() -> [PhysRange; 1] {
    [PhysRange::from_start_size(PhysAddr::new(100 * GIB), 64 << 20).unwrap()]
}

fn bench_tree(c: &mut Criterion, name: &str, t: &Tree, per_block: bool) {
    let ram = ram();
    let forbidden = forbidden();
    let map = RamMap::new(&ram, &forbidden).unwrap();
    let budget = NodeBudget::for_ram(&map);
    let open = || RadixReader::open(t.arena(), map, t.root(), NodeSet::new(), budget).unwrap();

    // Sanity, outside the timed loops.
    let mut co = open().coalesce();
    let ranges = co.by_ref().filter(|r| r.is_ok()).count();
    let s = *co.summary();
    eprintln!(
        "{name}: {} blocks in {ranges} ranges, {} MiB, {} nodes",
        s.counts().total(),
        s.bytes() >> 20,
        co.nodes()
    );

    let mut g = c.benchmark_group(name);
    g.sample_size(20);
    g.bench_function("coalesce", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for r in open().coalesce() {
                n = n.wrapping_add(r.unwrap().size());
            }
            black_box(n)
        })
    });
    g.bench_function("walk_runs", |b| {
        b.iter(|| {
            let mut w = open().walk();
            let mut n = 0u64;
            while let Some(r) = w.next_run() {
                n = n.wrapping_add(r.unwrap().count());
            }
            black_box(n)
        })
    });
    if per_block {
        g.bench_function("walk_blocks", |b| {
            b.iter(|| {
                let mut n = 0u64;
                for blk in open().walk() {
                    n = n.wrapping_add(blk.unwrap().phys().as_u64());
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_tree(c, "dense_48g_order0", &dense(), true);
    bench_tree(c, "sparse_1m_in_64g", &sparse(), true);
    bench_tree(c, "mixed_orders", &mixed(), true);
}

criterion_group!(walk, benches);
criterion_main!(walk);
