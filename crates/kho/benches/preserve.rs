//! Preserve throughput of the radix tree writer, in ns per order-0 block.
//!
//! Reference figures (the Linux kernel's own radix code, as reported):
//! 13.2 ns/block for 48 GiB of contiguous order-0 blocks, 13.6 ns/block for
//! 2^20 random order-0 blocks in a 64 GiB space. Divide criterion's median
//! time by the element count (the throughput line gives blocks/s).
//!
//! Each iteration builds a fresh tree in a fresh arena (untimed) and times
//! only the preserves.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kho::{Block, Order, Pfn, PhysAddr, RadixTree, VecArena};

/// Tree pages live at 4 GiB; preserved blocks are elsewhere (unmapped).
const ARENA_BASE: u64 = 4 << 30;
/// Contiguous run: 2^22 order-0 blocks (16 GiB) starting at 16 GiB.
const CONTIGUOUS: u64 = 1 << 22;
const CONTIGUOUS_START: u64 = (16 << 30) >> 12;
/// Random sparse: 2^20 distinct order-0 blocks in a 64 GiB space.
const RANDOM: usize = 1 << 20;
const RANDOM_SPACE_PAGES: u64 = (64 << 30) >> 12;

fn block(pfn: u64) -> Block {
    let pfn = Pfn::new(pfn).expect("bench pfn fits");
    Block::from_pfn(pfn, Order::ZERO).expect("order 0 is always aligned")
}

fn contiguous_blocks() -> Vec<Block> {
    (CONTIGUOUS_START..CONTIGUOUS_START + CONTIGUOUS)
        .map(block)
        .collect()
}

/// Distinct random frames, deterministic (xorshift64), in random order.
fn random_blocks() -> Vec<Block> {
    let mut seen = vec![0u64; (RANDOM_SPACE_PAGES / 64) as usize];
    let mut out = Vec::with_capacity(RANDOM);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while out.len() < RANDOM {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let pfn = x % RANDOM_SPACE_PAGES;
        let (w, bit) = ((pfn / 64) as usize, 1u64 << (pfn % 64));
        if seen[w] & bit == 0 {
            seen[w] |= bit;
            out.push(block(pfn));
        }
    }
    out
}

/// Pages for the tree of either workload: 2^22 contiguous pages need 128
/// leaves; 64 GiB needs 512 leaves; plus a handful of inner nodes.
const ARENA_PAGES: usize = 1024;

#[derive(Clone, Copy, PartialEq)]
enum Api {
    /// `RadixTree::preserve`: a full descent per block.
    Plain,
    /// One `Cursor` per thread.
    Cursor,
    /// One `Cursor` per thread, each thread taking the blocks of every
    /// other leaf (128 MiB stripes) instead of half of the list: no two
    /// threads write the same cache line.
    CursorByLeaf,
}

fn run(blocks: &[Block], threads: usize, api: Api, iters: u64) -> Duration {
    // Each thread's share: half of the list, or every other leaf's blocks.
    let parts: Vec<Vec<Block>> = if api == Api::CursorByLeaf {
        (0..threads)
            .map(|t| {
                blocks
                    .iter()
                    .copied()
                    .filter(|b| (b.pfn().as_u64() >> 15) as usize % threads == t)
                    .collect()
            })
            .collect()
    } else {
        blocks
            .chunks(blocks.len().div_ceil(threads))
            .map(<[Block]>::to_vec)
            .collect()
    };
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let arena = VecArena::new(PhysAddr::new(ARENA_BASE), ARENA_PAGES);
        let tree = RadixTree::new(&arena).expect("root");
        let start = Instant::now();
        if threads == 1 {
            preserve_all(&tree, blocks, api);
        } else {
            std::thread::scope(|s| {
                for part in &parts {
                    let tree = &tree;
                    s.spawn(move || preserve_all(tree, part, api));
                }
            });
        }
        total += start.elapsed();
        black_box(tree.stats());
    }
    total
}

fn preserve_all(tree: &RadixTree<&VecArena>, blocks: &[Block], api: Api) {
    match api {
        Api::Plain => {
            for b in blocks {
                tree.preserve(*b).expect("preserve");
            }
        }
        Api::Cursor | Api::CursorByLeaf => {
            let mut cursor = tree.cursor();
            for b in blocks {
                cursor.preserve(*b).expect("preserve");
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let workloads = [
        ("contiguous_order0_2^22", contiguous_blocks()),
        ("random_order0_2^20_in_64GiB", random_blocks()),
    ];
    for (name, blocks) in &workloads {
        let mut group = c.benchmark_group(*name);
        group.throughput(Throughput::Elements(blocks.len() as u64));
        group.sample_size(20);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(4));
        for (label, api, threads) in [
            ("cursor", Api::Cursor, 1),
            ("cursor", Api::Cursor, 2),
            ("cursor_by_leaf", Api::CursorByLeaf, 2),
            ("plain", Api::Plain, 1),
            ("plain", Api::Plain, 2),
        ] {
            group.bench_with_input(
                BenchmarkId::new(format!("{label}_{threads}t"), blocks.len()),
                blocks,
                |b, blocks| b.iter_custom(|iters| run(blocks, threads, api, iters)),
            );
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
