//! Walk and coalesce benches: the restore path's engine.
//!
//! Trees are built directly (word stores along the key path, leaves written
//! a word at a time), independent of the writer:
//! - dense: 48 GiB of contiguous order-0 blocks (384 full leaves);
//! - sparse: 2^20 random order-0 blocks in 64 GiB (xorshift, fixed seed);
//! - mixed: 1 GiB, 2 MiB, 64 KiB and 4 KiB blocks in adjacent regions.
//!
//! Each case times `RadixReader::open` plus a full pass: coalesce (ranges),
//! walk by runs, and walk block by block in Linux order.

use std::hint::black_box;
use std::sync::atomic::Ordering;

use criterion::{Criterion, criterion_group, criterion_main};
use kho::key::Level;
use kho::{
    Block, NodeBudget, NodeSet, Order, PageAlloc, PageMap, PhysAddr, PhysRange, RadixKey,
    RadixReader, RamMap, VecArena,
};

const GIB: u64 = 1 << 30;

struct Tree {
    arena: VecArena,
    root: PhysAddr,
}

impl Tree {
    fn new() -> Self {
        let arena = VecArena::new(PhysAddr::new(120 * GIB), 2048);
        let root = arena.alloc_zeroed_page().unwrap();
        Self { arena, root }
    }

    /// The leaf that holds `key`, allocating the path.
    fn leaf(&self, key: RadixKey) -> PhysAddr {
        let mut node = self.root;
        for level in Level::inner_top_down() {
            let i = key.index(level).as_usize();
            let page = self.arena.page(node).unwrap();
            let mut child = page.load(i).unwrap();
            if child == 0 {
                child = self.arena.alloc_zeroed_page().unwrap().as_u64();
                page.words()[i].store(child, Ordering::Relaxed);
            }
            node = PhysAddr::new(child);
        }
        node
    }

    fn insert(&self, block: Block) {
        let key = RadixKey::encode(block);
        let bit = key.leaf_bit();
        let leaf = self.leaf(key);
        self.arena.page(leaf).unwrap().words()[bit.word()].fetch_or(bit.mask(), Ordering::Relaxed);
    }

    /// Sets every block of `order` in `[start, end)`, a word at a time where
    /// a whole word fits.
    fn fill(&self, start: u64, end: u64, order: u8) {
        let order = Order::new(order);
        let mut phys = start;
        while phys < end {
            let b = Block::new(PhysAddr::new(phys), order).unwrap();
            let key = RadixKey::encode(b);
            let bit = key.leaf_bit();
            let word_bytes = 64 * order.bytes();
            if bit.as_u16().is_multiple_of(64) && end - phys >= word_bytes {
                let leaf = self.leaf(key);
                self.arena.page(leaf).unwrap().words()[bit.word()].store(!0, Ordering::Relaxed);
                phys += word_bytes;
            } else {
                self.insert(b);
                phys += order.bytes();
            }
        }
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
    for _ in 0..(1 << 20) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t.insert(block((x % pages) << 12, 0));
    }
    t
}

fn mixed() -> Tree {
    let t = Tree::new();
    // Two 1 GiB blocks at [1, 3) GiB.
    t.fill(GIB, 3 * GIB, 18);
    // 2 MiB blocks on every other slot of [3, 4) GiB (the first one joins
    // the 1 GiB blocks).
    for i in (0..512).step_by(2) {
        t.insert(block(3 * GIB + i * (2 << 20), 9));
    }
    // 64 KiB blocks on every other slot of [4, 5) GiB.
    for i in (0..16384).step_by(2) {
        t.insert(block(4 * GIB + i * (64 << 10), 4));
    }
    // 4 KiB blocks on every third page of [5, 6) GiB.
    for i in (0..262_144).step_by(3) {
        t.insert(block(5 * GIB + i * 4096, 0));
    }
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
    let open = || RadixReader::open(&t.arena, map, t.root, NodeSet::new(), budget).unwrap();

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
