//! The restore's distance from the machine's limits, and preserve across
//! threads (issue 15's targets), measured in the same run as the rest of
//! the bench:
//!
//! - **memory bandwidth**: a sequential read (a sum of `u64`s) of a
//!   buffer, touched once before it is timed, the median of its passes:
//!   over 256 MiB (larger than any cache: DRAM), and over a buffer of each
//!   walk case's metadata size, read as often as the walk reads its tree
//!   (as warm in the caches as the walk's nodes);
//! - **walk + coalesce** of two trees built by the writer, as
//!   `crates/kho/benches/walk.rs` builds them: `sparse`, 2^20 random
//!   order-0 blocks in 64 GiB (xorshift, fixed seed; repeats skipped), and
//!   `dense`, 48 GiB of contiguous order-0 blocks (384 full leaves). Timed:
//!   [`RadixReader::open`] plus a full [`RadixReader::coalesce`] pass, the
//!   median of seven. The **physical limit** of a case is the bytes of
//!   metadata the pass reads (its nodes, one page each) divided by the
//!   bandwidth measured over a buffer of that size: no reader of this
//!   format can do better on this machine without reading less. The ratio
//!   is measured / limit;
//! - **preserve from two threads** against one, on 2^20 contiguous and
//!   2^20 random order-0 blocks: a fresh tree per run, the blocks split in
//!   halves, one [`kho::Cursor`] per thread; the two configurations run
//!   interleaved (one, two, one, two, ...) and each figure is the median
//!   of its runs, so that a noisy moment hits both.
//! - **the parallel next boot** (the full bench only): `kho run`'s default
//!   scenario on a 16 GiB machine (kho-v4, ours, `eager` memmap), one old
//!   kernel, then interleaved next-kernel boots under `bulk` with 2 CPUs
//!   and with 1, three measured each after one warm-up (medians). Each
//!   boot also boots the same machine with nothing preserved and the same
//!   CPUs (its baseline). The figures: next-boot memory init with 2 CPUs
//!   (walk + memblock + `mm_init`) over the 1-CPU baseline, and the KHO
//!   share, that init minus the 2-CPU baseline, as a fraction of the
//!   2-CPU baseline.
//!
//! The sizes are parameters ([`LimitSizes`]) so that the tests run the
//! same code on small trees.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kho::{
    Block, NodeBudget, NodeSet, Order, PAGE_SIZE, PhysAddr, PhysRange, RadixError, RadixReader,
    RadixTree, RamMap, VecArena,
};
use serde::Serialize;

use kho_machine::{
    MemmapMode, NewKernelConfig, OldKernelConfig, Scenario, Strategy, WorkloadKind,
    new_kernel_boot, old_kernel_boot, read_setup_data,
};

use super::BenchError;
use super::harness::median;
use crate::peers::{SchemeError, SchemeKind};

const GIB: u64 = 1 << 30;
/// Tree pages live here, inside the reader's RAM, above every block.
const TREE_AT: u64 = 120 * GIB;
/// RAM of the walk cases' reader.
const RAM_END: u64 = 128 * GIB;

/// How big each measurement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSizes {
    /// Bytes of the bandwidth buffer.
    pub bandwidth_bytes: u64,
    /// Random order-0 blocks of the sparse walk (in 64 GiB).
    pub sparse_blocks: u64,
    /// Bytes of contiguous order-0 blocks of the dense walk.
    pub dense_bytes: u64,
    /// Blocks of each preserve case.
    pub preserve_blocks: u64,
    /// Interleaved runs of each preserve configuration.
    pub preserve_reps: usize,
    /// The machine of the parallel next boot (`None`: not run).
    pub boot_machine: Option<u64>,
}

impl LimitSizes {
    /// Issue 15's cases: 2^20 random blocks in 64 GiB, 48 GiB dense,
    /// 2^20 blocks per preserve case, five runs each; a 256 MiB buffer.
    pub const FULL: Self = Self {
        bandwidth_bytes: 256 << 20,
        sparse_blocks: 1 << 20,
        dense_bytes: 48 * GIB,
        preserve_blocks: 1 << 20,
        preserve_reps: 5,
        boot_machine: Some(16 * GIB),
    };

    /// [`Self::FULL`] without the 16 GiB boots (`--quick`).
    pub const QUICK: Self = Self {
        boot_machine: None,
        ..Self::FULL
    };

    /// Small trees for tests (the figures mean nothing).
    pub const TINY: Self = Self {
        bandwidth_bytes: 1 << 20,
        sparse_blocks: 1 << 10,
        dense_bytes: 64 << 20,
        preserve_blocks: 1 << 10,
        preserve_reps: 1,
        boot_machine: Some(64 << 20),
    };
}

/// One walk case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WalkLimit {
    /// `sparse` or `dense`, with its size.
    pub case: String,
    /// Blocks the pass counted.
    pub blocks: u64,
    /// Ranges it yielded.
    pub ranges: u64,
    /// Nodes it read.
    pub nodes: u64,
    /// Their bytes (one page each).
    pub metadata_bytes: u64,
    /// Open + coalesce, median, ms.
    pub ms: f64,
    /// Sequential read bandwidth over a buffer of `metadata_bytes`, warm
    /// as the walk's nodes, GB/s.
    pub bandwidth_gbs: f64,
    /// `metadata_bytes` at that bandwidth, ms.
    pub limit_ms: f64,
    /// `ms / limit_ms`.
    pub ratio: f64,
}

/// One preserve case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreserveThreads {
    /// `contiguous` or `random`.
    pub case: String,
    /// Blocks preserved per run.
    pub blocks: u64,
    /// One thread, median, ms.
    pub one_thread_ms: f64,
    /// Two threads (wall time), median, ms.
    pub two_threads_ms: f64,
    /// `one_thread_ms / two_threads_ms`.
    pub speedup: f64,
}

/// The parallel next boot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootLimit {
    /// The machine, bytes.
    pub machine_bytes: u64,
    /// Preserved blocks.
    pub blocks: u64,
    /// Their bytes.
    pub preserved_bytes: u64,
    /// Next-boot memory init under `bulk`, 2 CPUs, median, ms.
    pub init_2t_ms: f64,
    /// The same with 1 CPU.
    pub init_1t_ms: f64,
    /// The baseline (nothing preserved) with 2 CPUs.
    pub baseline_2t_ms: f64,
    /// The baseline with 1 CPU.
    pub baseline_1t_ms: f64,
    /// `init_2t_ms / baseline_1t_ms`.
    pub vs_single_baseline: f64,
    /// `(init_2t_ms - baseline_2t_ms) / baseline_2t_ms` (negative: the
    /// KHO boot is the cheaper one).
    pub kho_share: f64,
    /// Bytes lost over all boots (must be 0).
    pub lost_bytes: u64,
}

/// Everything this module measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    /// Sequential read bandwidth over 256 MiB (DRAM), GB/s (10^9 bytes).
    pub bandwidth_gbs: f64,
    /// The walk cases.
    pub walks: Vec<WalkLimit>,
    /// The preserve cases.
    pub preserve: Vec<PreserveThreads>,
    /// The parallel next boot, if run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootLimit>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Sequential read bandwidth over `bytes`, bytes per second: the median
/// of `passes` reads after one untimed.
fn bandwidth(bytes: u64, passes: usize) -> f64 {
    let words = usize::try_from(bytes / 8).unwrap_or(usize::MAX).max(1);
    // Touched (written) once, so that no page fault is timed.
    let buf: Vec<u64> = (0..words as u64).collect();
    black_box(buf.iter().fold(0u64, |a, &w| a.wrapping_add(w)));
    let mut runs = (0..passes.max(1))
        .map(|_| {
            let t = Instant::now();
            let s = buf.iter().fold(0u64, |a, &w| a.wrapping_add(w));
            black_box(s);
            t.elapsed().as_secs_f64()
        })
        .collect::<Vec<_>>();
    let d = median(&mut runs).max(1e-9);
    (words as f64 * 8.0) / d
}

fn block(phys: u64) -> Result<Block, BenchError> {
    Ok(Block::new(PhysAddr::new(phys), Order::ZERO)?)
}

/// `n` random order-0 blocks below 64 GiB (xorshift, fixed seed), repeats
/// included: the preserving side skips them.
fn random_blocks(n: u64) -> Result<Vec<Block>, BenchError> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let pages = (64 * GIB) >> 12;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            block((x % pages) << 12)
        })
        .collect()
}

fn contiguous_blocks(n: u64) -> Result<Vec<Block>, BenchError> {
    (0..n).map(|i| block(i * PAGE_SIZE)).collect()
}

/// Tree pages for `blocks` order-0 blocks anywhere in 64 GiB: a leaf per
/// block at worst, capped by the leaves 64 GiB can have, plus the inner
/// nodes.
fn arena_pages(blocks: u64) -> usize {
    let leaves = blocks.min(((64 * GIB) >> 12) / 32_768 + 1);
    usize::try_from(leaves * 2 + 64).unwrap_or(usize::MAX)
}

/// Preserves `blocks` through one cursor, skipping repeats.
fn preserve_all<M: kho::PageAlloc + kho::PageMap>(
    tree: &RadixTree<M>,
    blocks: &[Block],
) -> Result<(), SchemeError> {
    let mut c = tree.cursor();
    for &b in blocks {
        match c.preserve(b) {
            Ok(()) | Err(RadixError::AlreadyPreserved { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn walk_case(case: String, blocks: &[Block]) -> Result<WalkLimit, BenchError> {
    let arena = VecArena::new(PhysAddr::new(TREE_AT), arena_pages(blocks.len() as u64));
    let tree = RadixTree::new(&arena).map_err(SchemeError::from)?;
    preserve_all(&tree, blocks)?;
    let root = tree.root();
    let ram = [PhysRange::new(PhysAddr::ZERO, PhysAddr::new(RAM_END))?];
    let map = RamMap::new(&ram, &[])?;
    let budget = NodeBudget::for_ram(&map);
    let pass = || -> Result<(u64, u64, u64), BenchError> {
        let reader = RadixReader::open(&arena, map, root, NodeSet::new(), budget)
            .map_err(SchemeError::from)?;
        let mut c = reader.coalesce();
        let mut ranges = 0u64;
        for r in c.by_ref() {
            black_box(r.map_err(SchemeError::from)?);
            ranges += 1;
        }
        Ok((c.summary().counts().total(), ranges, c.nodes()))
    };
    let (blocks, ranges, nodes) = pass()?;
    let mut runs = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        black_box(pass()?);
        runs.push(ms(t.elapsed()));
    }
    let d = median(&mut runs);
    let metadata_bytes = nodes * PAGE_SIZE;
    let bps = bandwidth(metadata_bytes, 7);
    let limit_ms = metadata_bytes as f64 / bps * 1e3;
    Ok(WalkLimit {
        case,
        blocks,
        ranges,
        nodes,
        metadata_bytes,
        bandwidth_gbs: bps / 1e9,
        ms: d,
        limit_ms,
        ratio: d / limit_ms.max(1e-12),
    })
}

fn preserve_case(case: &str, blocks: &[Block], reps: usize) -> Result<PreserveThreads, BenchError> {
    let pages = arena_pages(blocks.len() as u64);
    let (a, b) = blocks.split_at(blocks.len() / 2);
    let mut one = Vec::new();
    let mut two = Vec::new();
    for _ in 0..reps.max(1) {
        let arena = VecArena::new(PhysAddr::new(TREE_AT), pages);
        let tree = RadixTree::new(&arena).map_err(SchemeError::from)?;
        let t = Instant::now();
        preserve_all(&tree, blocks)?;
        one.push(ms(t.elapsed()));

        let arena = VecArena::new(PhysAddr::new(TREE_AT), pages);
        let tree = RadixTree::new(&arena).map_err(SchemeError::from)?;
        let t = Instant::now();
        std::thread::scope(|s| -> Result<(), BenchError> {
            let h = s.spawn(|| preserve_all(&tree, a));
            preserve_all(&tree, b)?;
            Ok(h.join().map_err(|_| BenchError::ThreadPanicked)??)
        })?;
        two.push(ms(t.elapsed()));
    }
    let (one, two) = (median(&mut one), median(&mut two));
    Ok(PreserveThreads {
        case: case.to_owned(),
        blocks: blocks.len() as u64,
        one_thread_ms: one,
        two_threads_ms: two,
        speedup: one / two.max(1e-12),
    })
}

fn boot_case(machine: u64, reps: usize) -> Result<BootLimit, BenchError> {
    let workload = format!("limits: default@{}", super::harness::human(machine));
    let old_kernel = |source| BenchError::OldKernel {
        workload: workload.clone(),
        scheme: SchemeKind::Kho,
        source,
    };
    let mut cfg = OldKernelConfig::new(machine, Strategy::Bulk).map_err(old_kernel)?;
    cfg.scenario = Scenario::preset(WorkloadKind::Default, machine);
    let img = old_kernel_boot(&cfg).map_err(old_kernel)?;
    let mut init = [Vec::new(), Vec::new()];
    let mut base = [Vec::new(), Vec::new()];
    let (mut blocks, mut bytes, mut lost) = (0, 0, 0);
    for rep in 0..=reps {
        for (i, threads) in [2usize, 1].into_iter().enumerate() {
            let h = read_setup_data(&img.mem, img.setup_data).map_err(|source| {
                BenchError::Handover {
                    workload: workload.clone(),
                    source,
                }
            })?;
            let kernel = NewKernelConfig {
                memmap: MemmapMode::Eager,
                threads,
                parallel_memmap_init: false,
            };
            let r = new_kernel_boot(&img.mem, Ok(h), Strategy::Bulk, kernel, None).map_err(
                |source| BenchError::NewKernel {
                    workload: workload.clone(),
                    scheme: SchemeKind::Kho,
                    strategy: Strategy::Bulk,
                    source,
                },
            )?;
            if let Some(e) = r.kho_error {
                return Err(BenchError::WithoutKho {
                    workload: workload.clone(),
                    scheme: SchemeKind::Kho,
                    strategy: Strategy::Bulk,
                    kho_error: e,
                });
            }
            (blocks, bytes) = (r.blocks, r.preserved_bytes);
            lost += r.lost_bytes;
            if rep > 0 {
                init[i].push(r.walk_ms + r.memblock_ms + r.mm_init_ms);
                base[i].push(r.baseline_mm_init_ms);
            }
        }
    }
    let [mut i2, mut i1] = init;
    let [mut b2, mut b1] = base;
    let (i2, i1, b2, b1) = (
        median(&mut i2),
        median(&mut i1),
        median(&mut b2),
        median(&mut b1),
    );
    Ok(BootLimit {
        machine_bytes: machine,
        blocks,
        preserved_bytes: bytes,
        init_2t_ms: i2,
        init_1t_ms: i1,
        baseline_2t_ms: b2,
        baseline_1t_ms: b1,
        vs_single_baseline: i2 / b1,
        kho_share: (i2 - b2) / b2,
        lost_bytes: lost,
    })
}

fn pow2_label(n: u64) -> String {
    if n.is_power_of_two() {
        format!("2^{}", n.trailing_zeros())
    } else {
        n.to_string()
    }
}

/// Measures everything, in order: bandwidth, the two walks, the two
/// preserve cases; `progress` is called before each.
pub fn measure(sizes: LimitSizes, progress: &mut dyn FnMut(&str)) -> Result<Limits, BenchError> {
    progress("limits: memory bandwidth");
    let bps = bandwidth(sizes.bandwidth_bytes, 5);
    progress("limits: walk sparse");
    let sparse = walk_case(
        format!(
            "sparse: {} random order-0 in 64 GiB",
            pow2_label(sizes.sparse_blocks)
        ),
        &random_blocks(sizes.sparse_blocks)?,
    )?;
    progress("limits: walk dense");
    let dense_n = sizes.dense_bytes / PAGE_SIZE;
    let dense = walk_case(
        format!(
            "dense: {} GiB order-0",
            sizes.dense_bytes as f64 / GIB as f64
        ),
        &contiguous_blocks(dense_n)?,
    )?;
    progress("limits: preserve contiguous, 1 and 2 threads");
    let contiguous = preserve_case(
        "contiguous",
        &contiguous_blocks(sizes.preserve_blocks)?,
        sizes.preserve_reps,
    )?;
    progress("limits: preserve random, 1 and 2 threads");
    let random = preserve_case(
        "random",
        &random_blocks(sizes.preserve_blocks)?,
        sizes.preserve_reps,
    )?;
    let boot = match sizes.boot_machine {
        Some(machine) => {
            progress("limits: next boot with 2 CPUs and with 1");
            Some(boot_case(machine, 3)?)
        }
        None => None,
    };
    Ok(Limits {
        bandwidth_gbs: bps / 1e9,
        walks: vec![sparse, dense],
        preserve: vec![contiguous, random],
        boot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_limits_measure_what_they_claim() {
        let mut steps = Vec::new();
        let l = measure(LimitSizes::TINY, &mut |s| steps.push(s.to_owned())).unwrap();
        assert_eq!(steps.len(), 6);
        assert!(l.bandwidth_gbs > 0.0);
        let [sparse, dense] = &l.walks[..] else {
            panic!("two walk cases: {:?}", l.walks)
        };
        // The random generator repeats itself rarely: almost every block.
        assert!(
            sparse.blocks <= 1 << 10 && sparse.blocks > 1000,
            "{sparse:?}"
        );
        assert_eq!(
            sparse.ranges, sparse.blocks,
            "1024 random pages in 64 GiB never touch"
        );
        // 64 MiB contiguous: 16384 blocks, one range, half a leaf.
        assert_eq!((dense.blocks, dense.ranges), (16_384, 1));
        assert_eq!(dense.metadata_bytes, dense.nodes * PAGE_SIZE);
        assert!(dense.nodes >= 2 && dense.limit_ms > 0.0 && dense.ratio > 0.0);
        assert!(dense.bandwidth_gbs > 0.0);
        assert_eq!(l.preserve.len(), 2);
        for p in &l.preserve {
            assert_eq!(p.blocks, 1 << 10);
            assert!(p.one_thread_ms > 0.0 && p.two_threads_ms > 0.0 && p.speedup > 0.0);
        }
        let b = l.boot.expect("the tiny sizes boot a 64 MiB machine");
        assert_eq!((b.machine_bytes, b.lost_bytes), (64 << 20, 0));
        assert!(b.blocks > 0 && b.preserved_bytes > 0, "{b:?}");
        assert!(b.init_2t_ms > 0.0 && b.baseline_1t_ms > 0.0 && b.baseline_2t_ms > 0.0);
        assert!((b.vs_single_baseline - b.init_2t_ms / b.baseline_1t_ms).abs() < 1e-9);
    }
}
