//! The range stream into memblock: `bulk`'s one linear merge
//! ([`Memblock::memblock_reserve_sorted`]) of `n` scattered ranges (every
//! other page from 4 GiB up: as many regions as ranges, the worst case),
//! into a fresh memblock as the sweep of `kho bench` builds it, for `n` =
//! 2^16, 2^18 and 2^20; beside it mainline-fix's per-range
//! `__memblock_reserve` with the binary search (step (c)) at 2^16.
//!
//! Each iteration starts from a fresh memblock (built outside the timing)
//! so that every run grows the reserved array from the boot size, as the
//! next kernel does.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kho::{PAGE_SIZE, PhysAddr, PhysRange};
use kho_machine::{Memblock, MemblockFlags};

/// `NUMA_NO_NODE`, the node `memblock_reserve` gives.
const NUMA_NO_NODE: i32 = -1;

const BLOCKS_AT: u64 = 4 << 30;

fn scattered(n: u64) -> Vec<PhysRange> {
    (0..n)
        .map(|i| {
            PhysRange::from_start_size(PhysAddr::new(BLOCKS_AT + 2 * i * PAGE_SIZE), PAGE_SIZE)
                .unwrap()
        })
        .collect()
}

fn fresh(n: u64) -> Memblock {
    let mut mb = Memblock::new();
    mb.memblock_add(PhysAddr::new(0), BLOCKS_AT + 2 * n * PAGE_SIZE + (1 << 30))
        .unwrap();
    mb.memblock_allow_resize();
    mb.memblock_reserve(PhysAddr::new(0), 1 << 20).unwrap();
    mb
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("range_stream");
    g.sample_size(10);
    for pow in [16u32, 18, 20] {
        let n = 1u64 << pow;
        let ranges = scattered(n);
        g.bench_function(format!("reserve_sorted_2^{pow}"), |b| {
            b.iter_batched(
                || fresh(n),
                |mut mb| {
                    mb.memblock_reserve_sorted(ranges.iter().copied(), MemblockFlags::RSRV_NOINIT)
                        .unwrap();
                    black_box(mb.reserved.cnt());
                    mb
                },
                BatchSize::LargeInput,
            );
        });
    }
    let n = 1u64 << 16;
    let ranges = scattered(n);
    g.bench_function("mainline_fix_c_2^16", |b| {
        b.iter_batched(
            || fresh(n),
            |mut mb| {
                mb.set_add_range_bsearch(true);
                for r in &ranges {
                    mb.__memblock_reserve(
                        r.start(),
                        r.size(),
                        NUMA_NO_NODE,
                        MemblockFlags::RSRV_NOINIT,
                    )
                    .unwrap();
                }
                black_box(mb.reserved.cnt());
                mb
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(range_stream, benches);
criterion_main!(range_stream);
