//! The matrix: every workload x every scheme x every restore strategy that
//! applies, each cell a whole next-kernel boot on the simulated machine.
//!
//! What is measured, per workload:
//! 1. for each scheme, one old kernel boots in-process
//!    ([`old_kernel_boot`]: the machine's RAM a memfd, the workload
//!    preserved through the scheme, finalized, the x86 `setup_data`
//!    hand-over written, unpreserved memory poisoned);
//! 2. the next kernel boots in-process from that image
//!    ([`new_kernel_boot`]: memblock init, the handover read and
//!    validated (`walk ms`), the preserved memory accounted by the strategy
//!    (`memblock ms`), `memmap_init` + `memblock_free_all` (`mm init ms`),
//!    every preserved byte verified, then a boot of the same memory with
//!    nothing preserved (`baseline ms`)), once per restore strategy the
//!    scheme's handover can feed ([`SchemeKind::strategies`]: the tracker
//!    x strategy matrix);
//! 3. repetitions interleave the cells of the workload (`for rep { for
//!    cell }`), rep 0 is a warm-up and is dropped, each figure is the median;
//! 4. the old-kernel side (preserve ns/block with 1 and 2 threads, finalize
//!    = handover preparation, metadata bytes, restore peak heap) comes from
//!    [`run_scheme`] over a [`VecArena`] with the same blocks, in the
//!    preserved order (2 threads: the blocks split in halves, ours through
//!    one [`kho::Cursor`] per thread, the peers through their `&self`
//!    preserve); median of the same reps. The restore peak heap is the
//!    strategy's (the coalesced list), read from the same arena.
//!
//! A cell's tracker costs (preserve, metadata, handover preparation) are
//! the same for every strategy of its scheme; its next-boot costs (walk,
//! memblock, mm init) are the pair's.

use std::collections::BTreeMap;
use std::time::Instant;

use kho::{Block, PAGE_SIZE, PhysAddr, PhysRange, RadixTree, RamMap, VecArena};
use kho_machine::{
    NewKernelConfig, OldKernelConfig, OldKernelImage, Scenario, Strategy, WorkloadKind,
    new_kernel_boot, old_kernel_boot, read_setup_data,
};
use serde::Serialize;

use super::BenchError;
use crate::peers::{MachineScheme, Recorder, SchemeError, SchemeKind, run_scheme};

/// A workload of the matrix.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Report name (`fragmented@1G`, `trace:bash.txt@1G`).
    pub name: String,
    /// Machine size, bytes.
    pub machine_size: u64,
    /// What the old kernel preserves.
    pub scenario: Scenario,
}

impl Workload {
    /// A preset at `size` bytes.
    pub fn preset(kind: WorkloadKind, label: &str, size: u64) -> Self {
        Self {
            name: format!("{label}@{}", human(size)),
            machine_size: size,
            scenario: Scenario::preset(kind, size),
        }
    }

    /// A trace replayed on a machine of `size` bytes.
    pub fn trace(label: &str, blocks: Vec<Block>, size: u64) -> Self {
        let mut scenario = Scenario::preset(WorkloadKind::Dense, size);
        scenario.replay = blocks;
        Self {
            name: format!("trace:{label}@{}", human(size)),
            machine_size: size,
            scenario,
        }
    }
}

/// `1G`, `256M`.
pub fn human(size: u64) -> String {
    if size >= 1 << 30 && size.is_multiple_of(1 << 30) {
        format!("{}G", size >> 30)
    } else {
        format!("{}M", size >> 20)
    }
}

/// One measured cell (medians).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    /// Workload name.
    pub workload: String,
    /// Scheme name (the tracker).
    pub scheme: String,
    /// The tracker (= `scheme`): what decides preserve, metadata and
    /// handover preparation.
    pub tracker: String,
    /// Restore strategy: what decides the next boot's memblock work.
    pub strategy: String,
    /// The next kernel's struct-page configuration (`eager`, `deferred`,
    /// `lazy`), the baseline's too.
    pub memmap: String,
    /// The next kernel's CPUs.
    pub threads: usize,
    /// Preserved blocks (as the next kernel found them).
    pub blocks: u64,
    /// Preserved pages.
    pub pages: u64,
    /// Preserve, ns per block, one thread.
    pub preserve_ns_per_block: f64,
    /// Preserve, ns per block, two threads (wall time / blocks).
    pub preserve_ns_per_block_2t: f64,
    /// Handover preparation (finalize), ms.
    pub prepare_ms: f64,
    /// Metadata: simulated pages x 4096 + modelled kernel objects.
    pub metadata_bytes: u64,
    /// Metadata bits per preserved page.
    pub metadata_bits_per_page: f64,
    /// Reading and validating the handover (and the head pages), ms.
    pub walk_ms: f64,
    /// Accounting the preserved memory in memblock, ms.
    pub memblock_ms: f64,
    /// Final `memblock.reserved` region count.
    pub reserved_regions: u64,
    /// memmap_init + memblock_free_all, ms.
    pub mm_init_ms: f64,
    /// The same with nothing preserved, ms.
    pub baseline_mm_init_ms: f64,
    /// walk + memblock + mm init, ms.
    pub next_boot_init_ms: f64,
    /// next_boot_init_ms / baseline_mm_init_ms.
    pub init_vs_baseline: f64,
    /// Peak heap bytes of the restore's own structures.
    pub restore_peak_bytes: u64,
    /// Bytes the next kernel lost (must be 0).
    pub lost_bytes: u64,
    /// Ours only: this cell's restore (walk + memblock) over each peer
    /// cell's on the same workload, by `tracker/strategy` (filled by
    /// [`super::run`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub restore_vs_peer: BTreeMap<String, f64>,
    /// Ours only: metadata bytes over each peer tracker's, by tracker.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata_vs_peer: BTreeMap<String, f64>,
}

/// The cells of one (workload, scheme): the strategies its handover can
/// feed.
pub fn strategies(kind: SchemeKind) -> Vec<Strategy> {
    kind.strategies().to_vec()
}

/// The median of `v` (the mean of the middle two for an even count;
/// NaN for none).
pub(super) fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The old-kernel side of one rep.
#[derive(Debug, Clone)]
struct OldSide {
    /// Preserve ns/block, one thread.
    preserve_1t: f64,
    /// The same, two threads.
    preserve_2t: f64,
    /// Finalize ms.
    finalize_ms: f64,
    /// Metadata bytes.
    metadata: u64,
    /// Restore peak heap bytes, per strategy of the scheme.
    peak: Vec<(Strategy, u64)>,
}

fn old_side_once(kind: SchemeKind, blocks: &[Block]) -> Result<OldSide, BenchError> {
    let lo = blocks
        .iter()
        .map(|b| b.phys().as_u64())
        .min()
        .unwrap_or(1 << 30);
    let hi = blocks
        .iter()
        .map(|b| b.phys().as_u64().saturating_add(b.size()))
        .max()
        .unwrap_or(1 << 30);
    // The arena lies above every block, so it never overlaps one.
    let base = hi.next_multiple_of(1 << 30) + (1 << 30);
    let pages = blocks.len() / 32 + 4096;
    let ram = {
        let mut r = vec![PhysRange::new(
            PhysAddr::new(lo.min(base)),
            PhysAddr::new(hi.max(lo + 1)),
        )?];
        r.push(PhysRange::new(
            PhysAddr::new(base),
            PhysAddr::new(base + pages as u64 * PAGE_SIZE),
        )?);
        r
    };
    let map = RamMap::new(&ram, &[])?;
    let arena = VecArena::new(PhysAddr::new(base), pages);
    let strategies = kind.strategies();
    let first = strategies.first().copied().unwrap_or(Strategy::PerBlock);
    let mut rec = Recorder::default();
    let r = run_scheme(kind, first, &arena, map, blocks, &mut rec)?;
    let md = r.metadata.pages.len() as u64 * PAGE_SIZE + r.metadata.object_bytes;
    let mut peak = vec![(first, r.restore.peak_bytes)];
    for &s in strategies.iter().skip(1) {
        let (st, _) = kind.restore(s, &arena, map, r.root, &mut Recorder::default())?;
        peak.push((s, st.peak_bytes));
    }

    // Two threads.
    let arena2 = VecArena::new(PhysAddr::new(base), pages);
    let (a, b) = blocks.split_at(blocks.len() / 2);
    let t2 = if kind == SchemeKind::Kho {
        let tree = RadixTree::new(&arena2).map_err(SchemeError::from)?;
        let t = Instant::now();
        std::thread::scope(|s| -> Result<(), BenchError> {
            let h = s.spawn(|| -> Result<(), SchemeError> {
                let mut c = tree.cursor();
                for &x in a {
                    c.preserve(x)?;
                }
                Ok(())
            });
            let mut c = tree.cursor();
            for &x in b {
                c.preserve(x).map_err(SchemeError::from)?;
            }
            Ok(h.join().map_err(|_| BenchError::ThreadPanicked)??)
        })?;
        t.elapsed()
    } else {
        let tr = kind.tracker(&arena2)?;
        let tr = &*tr;
        let t = Instant::now();
        std::thread::scope(|s| -> Result<(), BenchError> {
            let h = s.spawn(|| -> Result<(), SchemeError> {
                for &x in a {
                    tr.preserve(x)?;
                }
                Ok(())
            });
            for &x in b {
                tr.preserve(x)?;
            }
            Ok(h.join().map_err(|_| BenchError::ThreadPanicked)??)
        })?;
        t.elapsed()
    };
    let n = blocks.len().max(1) as f64;
    Ok(OldSide {
        preserve_1t: r.preserve_ms * 1e6 / n,
        preserve_2t: t2.as_secs_f64() * 1e9 / n,
        finalize_ms: r.finalize_ms,
        metadata: md,
        peak,
    })
}

struct Acc {
    kind: SchemeKind,
    strategy: Strategy,
    img: usize,
    walk: Vec<f64>,
    memblock: Vec<f64>,
    mm: Vec<f64>,
    base: Vec<f64>,
    regions: u64,
    blocks: u64,
    lost: u64,
}

/// Measures every cell of `w` (`reps` measured repetitions after one
/// warm-up). `progress` is called once per cell run.
pub fn run_workload(
    w: &Workload,
    schemes: &[SchemeKind],
    reps: usize,
    kernel: NewKernelConfig,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<Vec<Cell>, BenchError> {
    let unit = super::cell_weight(w.machine_size);
    let mut images: Vec<(SchemeKind, OldKernelImage)> = Vec::new();
    for &kind in schemes {
        progress(&format!("{}: old kernel ({kind})", w.name), unit);
        let old_kernel = |source| BenchError::OldKernel {
            workload: w.name.clone(),
            scheme: kind,
            source,
        };
        let mut cfg = OldKernelConfig::new(w.machine_size, Strategy::Bulk).map_err(old_kernel)?;
        cfg.scenario = w.scenario.clone();
        cfg.scheme = MachineScheme::by_name(kind.name());
        // kho-v3 for every tracker: the same blocks in every row (under
        // kho-v4 ours alone would add its LUO sessions' pages).
        cfg.abi = kho::KhoVersion::V3;
        let img = old_kernel_boot(&cfg).map_err(old_kernel)?;
        images.push((kind, img));
    }
    let mut accs: Vec<Acc> = Vec::new();
    for (i, (kind, _)) in images.iter().enumerate() {
        for s in strategies(*kind) {
            accs.push(Acc {
                kind: *kind,
                strategy: s,
                img: i,
                walk: vec![],
                memblock: vec![],
                mm: vec![],
                base: vec![],
                regions: 0,
                blocks: 0,
                lost: 0,
            });
        }
    }
    let mut old: Vec<Vec<OldSide>> = vec![Vec::new(); images.len()];
    for rep in 0..=reps {
        for a in &mut accs {
            progress(
                &format!("{}: {} {} (rep {rep}/{reps})", w.name, a.kind, a.strategy),
                unit,
            );
            let (kind, img) = &images[a.img];
            let h = read_setup_data(&img.mem, img.setup_data).map_err(|source| {
                BenchError::Handover {
                    workload: w.name.clone(),
                    source,
                }
            })?;
            let r = new_kernel_boot(
                &img.mem,
                Ok(h),
                a.strategy,
                kernel,
                MachineScheme::by_name(kind.name()),
            )
            .map_err(|source| BenchError::NewKernel {
                workload: w.name.clone(),
                scheme: *kind,
                strategy: a.strategy,
                source,
            })?;
            if let Some(e) = &r.kho_error {
                return Err(BenchError::WithoutKho {
                    workload: w.name.clone(),
                    scheme: *kind,
                    strategy: a.strategy,
                    kho_error: e.clone(),
                });
            }
            if rep > 0 {
                a.walk.push(r.walk_ms);
                a.memblock.push(r.memblock_ms);
                a.mm.push(r.mm_init_ms);
                a.base.push(r.baseline_mm_init_ms);
            }
            a.regions = r.memblock_reserved_regions;
            a.blocks = r.blocks;
            a.lost = a.lost.max(r.lost_bytes);
        }
        for (i, (kind, img)) in images.iter().enumerate() {
            progress(
                &format!("{}: preserve ({kind}, rep {rep}/{reps})", w.name),
                unit,
            );
            let o = old_side_once(*kind, &img.preserved)?;
            if rep > 0 {
                old[i].push(o);
            }
        }
    }
    let mut cells = Vec::new();
    for a in &mut accs {
        let (_, img) = &images[a.img];
        let pages: u64 = img.preserved.iter().map(|b| b.size() / PAGE_SIZE).sum();
        let o = &old[a.img];
        let col = |f: fn(&OldSide) -> f64| {
            let mut v: Vec<f64> = o.iter().map(f).collect();
            median(&mut v)
        };
        let md = o.first().map_or(0, |x| x.metadata);
        let peak = o
            .first()
            .and_then(|x| x.peak.iter().find(|(s, _)| *s == a.strategy))
            .map_or(0, |x| x.1);
        let walk = median(&mut a.walk);
        let memblock = median(&mut a.memblock);
        let mm = median(&mut a.mm);
        let base = median(&mut a.base);
        let total = walk + memblock + mm;
        cells.push(Cell {
            memmap: kernel.memmap.to_string(),
            threads: kernel.threads,
            workload: w.name.clone(),
            scheme: a.kind.name().to_owned(),
            tracker: a.kind.name().to_owned(),
            strategy: a.strategy.as_str().to_owned(),
            blocks: a.blocks,
            pages,
            preserve_ns_per_block: col(|x| x.preserve_1t),
            preserve_ns_per_block_2t: col(|x| x.preserve_2t),
            prepare_ms: col(|x| x.finalize_ms),
            metadata_bytes: md,
            metadata_bits_per_page: md as f64 * 8.0 / pages.max(1) as f64,
            walk_ms: walk,
            memblock_ms: memblock,
            reserved_regions: a.regions,
            mm_init_ms: mm,
            baseline_mm_init_ms: base,
            next_boot_init_ms: total,
            init_vs_baseline: total / base,
            restore_peak_bytes: peak,
            lost_bytes: a.lost,
            restore_vs_peer: BTreeMap::new(),
            metadata_vs_peer: BTreeMap::new(),
        });
    }
    Ok(cells)
}
