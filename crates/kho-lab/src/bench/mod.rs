//! `kho bench`: every tracker x every restore strategy its handover can
//! feed x every workload, side by side in one run, plus a scaling sweep of
//! the same pairs with fitted growth exponents, rendered as tables (rows:
//! trackers with their own costs; columns: strategies), JSON and an
//! offline HTML report.
//!
//! - [`harness`]: the matrix cells (whole in-process machine boots);
//! - [`scaling`]: restore time against the number of scattered blocks;
//! - [`limits`]: the walk against the machine's memory bandwidth, and
//!   preserve from two threads against one;
//! - [`report`]: ratios, the terminal table, JSON and HTML.

pub mod harness;
pub mod limits;
pub mod report;
pub mod scaling;

use std::time::Duration;

use kho::{AddrError, Block};
use kho_machine::{KexecError, LiveUpdateError, MemblockError, Strategy, WorkloadKind};
use serde::Serialize;

pub use harness::{Cell, Workload};
pub use report::Ratio;
pub use scaling::{Point, Reference, Scaling, Stop, SweepStrategy};

use crate::peers::{SchemeError, SchemeKind};

/// Errors of the bench.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A workload name that is none of [`WORKLOADS`].
    #[error("unknown workload {0:?} (vm, memfd, dense, fragmented, mixed, default)")]
    UnknownWorkload(String),
    /// An old kernel of the matrix failed.
    #[error("{workload}: {scheme}: {source}")]
    OldKernel {
        /// The workload.
        workload: String,
        /// The scheme.
        scheme: SchemeKind,
        /// Why.
        source: LiveUpdateError,
    },
    /// An old kernel's hand-over does not read.
    #[error("{workload}: hand-over: {source}")]
    Handover {
        /// The workload.
        workload: String,
        /// Why.
        source: KexecError,
    },
    /// A new kernel of the matrix failed.
    #[error("{workload}: {scheme} {strategy}: {source}")]
    NewKernel {
        /// The workload.
        workload: String,
        /// The scheme.
        scheme: SchemeKind,
        /// The strategy.
        strategy: Strategy,
        /// Why.
        source: LiveUpdateError,
    },
    /// A new kernel of the matrix booted without KHO.
    #[error("{workload}: {scheme} {strategy}: booted without KHO: {kho_error}")]
    WithoutKho {
        /// The workload.
        workload: String,
        /// The scheme.
        scheme: SchemeKind,
        /// The strategy.
        strategy: Strategy,
        /// The report's reason.
        kho_error: String,
    },
    /// A scheme failed (preserve, finalize or restore).
    #[error(transparent)]
    Scheme(#[from] SchemeError),
    /// A preserving thread panicked.
    #[error("a preserving thread panicked")]
    ThreadPanicked,
    /// A range of the bench's own memory is invalid.
    #[error("bench memory: {0}")]
    Addr(#[from] AddrError),
    /// The bench's RAM map is invalid.
    #[error("bench RAM map: {0}")]
    RamMap(#[from] kho::RamMapError),
    /// The sweep's memblock refused its RAM.
    #[error("sweep memblock: {0}")]
    Memblock(#[from] MemblockError),
    /// The report could not be encoded.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A chart could not be drawn.
    #[error("chart: {0}")]
    Chart(#[from] plotters::drawing::DrawingAreaErrorKind<std::io::Error>),
    /// The HTML report could not be written.
    #[error("{path}: {source}")]
    Write {
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The workloads of the matrix.
    pub workloads: Vec<Workload>,
    /// The schemes of the matrix.
    pub schemes: Vec<SchemeKind>,
    /// Measured repetitions per cell (after one warm-up).
    pub reps: usize,
    /// Sizes of the scaling sweep (ascending); empty: no sweep.
    pub sweep: Vec<u64>,
    /// The sweep's curves.
    pub sweep_strategies: Vec<SweepStrategy>,
    /// A curve stops after a point over this, or before a point its last
    /// two predict over it.
    pub cap: Duration,
    /// The curve measured whatever the cap up to its limit.
    pub reference: Option<Reference>,
    /// The next kernel's configuration for every cell (`--memmap`,
    /// `--threads`): eager on one CPU by default.
    pub kernel: kho_machine::NewKernelConfig,
    /// The limit measurements ([`limits`]); `None`: not run.
    pub limits: Option<limits::LimitSizes>,
}

/// The reference's limit in the default run: mainline per-block measured
/// in full at 2^18 scattered blocks.
pub const REFERENCE_POW: u32 = 18;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

impl BenchConfig {
    /// The default matrix: vm, memfd, dense, fragmented, mixed at 1 GiB and
    /// 4 GiB; sweep 2^10..=2^24, mainline per-block measured to 2^18.
    pub fn full(traces: &[(String, Vec<Block>)]) -> Self {
        let mut c = Self::with(
            &[GIB, 4 * GIB],
            3,
            (10..=24).map(|k| 1 << k).collect(),
            traces,
        );
        c.reference = Some(Reference::mainline(REFERENCE_POW));
        c
    }

    /// The reduced matrix of `--quick`: vm, memfd, dense, fragmented at
    /// 256 MiB and 1 GiB, one rep, sweep 2^10..2^20 every other power (the
    /// quadratic curves stop at the cap; the linear ones reach 2^20).
    pub fn quick(traces: &[(String, Vec<Block>)]) -> Self {
        let mut c = Self::with(
            &[256 * MIB, GIB],
            1,
            (10..=20).step_by(2).map(|k| 1 << k).collect(),
            traces,
        );
        c.workloads.retain(|w| !w.name.starts_with("mixed"));
        c.limits = Some(limits::LimitSizes::QUICK);
        c
    }

    /// A tiny matrix for tests: dense and fragmented at 64 MiB, one rep, no
    /// sweep.
    pub fn tiny() -> Self {
        Self {
            workloads: vec![
                Workload::preset(WorkloadKind::Dense, "dense", 64 * MIB),
                Workload::preset(WorkloadKind::Fragmented, "fragmented", 64 * MIB),
            ],
            schemes: SchemeKind::ALL.to_vec(),
            reps: 1,
            sweep: vec![],
            sweep_strategies: SweepStrategy::all(),
            cap: Duration::from_secs(5),
            reference: None,
            kernel: kho_machine::MemmapMode::Eager.into(),
            limits: None,
        }
    }

    fn with(sizes: &[u64], reps: usize, sweep: Vec<u64>, traces: &[(String, Vec<Block>)]) -> Self {
        let kinds = [
            (WorkloadKind::Vm, "vm"),
            (WorkloadKind::Memfd, "memfd"),
            (WorkloadKind::Dense, "dense"),
            (WorkloadKind::Fragmented, "fragmented"),
            (WorkloadKind::Mixed, "mixed"),
        ];
        let mut workloads = Vec::new();
        for &size in sizes {
            for (k, name) in kinds {
                workloads.push(Workload::preset(k, name, size));
            }
        }
        let biggest = sizes.iter().copied().max().unwrap_or(GIB);
        for (name, blocks) in traces {
            workloads.push(Workload::trace(
                name,
                blocks.clone(),
                trace_machine(biggest),
            ));
        }
        Self {
            workloads,
            schemes: SchemeKind::ALL.to_vec(),
            reps,
            sweep,
            sweep_strategies: SweepStrategy::all(),
            cap: Duration::from_secs(5),
            reference: None,
            kernel: kho_machine::MemmapMode::Eager.into(),
            limits: Some(limits::LimitSizes::FULL),
        }
    }

    /// Progress steps [`run`] reports (an upper bound for the sweep).
    pub fn steps(&self) -> u64 {
        let cells: u64 = self
            .schemes
            .iter()
            .map(|&k| harness::strategies(k).len() as u64 + 1)
            .sum();
        let reps = self.reps as u64 + 1;
        let matrix: u64 = self
            .workloads
            .iter()
            .map(|w| {
                let unit = cell_weight(w.machine_size);
                self.schemes.len() as u64 * unit + cells * reps * unit
            })
            .sum();
        let sweep: u64 = self
            .sweep
            .iter()
            .map(|&n| sweep_weight(n, self.reference))
            .sum();
        let limits = self.limits.map_or(0, |_| LIMITS_STEPS * LIMITS_WEIGHT);
        matrix + sweep + limits
    }
}

/// The expected cost of one matrix step on a machine of `machine_size`
/// (a boot of it; one unit is about 0.1 s here): the progress bar's
/// weight.
pub fn cell_weight(machine_size: u64) -> u64 {
    (machine_size >> 29).max(1)
}

/// The expected cost of the sweep point of `n` blocks in the same units:
/// linear for the curves that scale, plus mainline's quadratic reference
/// where it is measured whatever the cap (2^18: about 80 s).
pub fn sweep_weight(n: u64, reference: Option<Reference>) -> u64 {
    let linear = (n >> 14).max(1);
    let quadratic = match reference {
        Some(r) if n <= r.max_blocks => (n >> 12).pow(2) / 4,
        _ => 0,
    };
    linear + quadratic
}

/// Steps of [`limits::measure`].
const LIMITS_STEPS: u64 = 6;
/// The expected cost of one of them (a few seconds at full size).
const LIMITS_WEIGHT: u64 = 20;

/// The smallest machine a trace is replayed on (the shipped traces need
/// up to about 300 MiB).
pub const TRACE_MACHINE_MIN: u64 = GIB;

/// The machine a trace is replayed on when the matrix's largest is
/// `biggest`: that one, or [`TRACE_MACHINE_MIN`] if larger.
pub fn trace_machine(biggest: u64) -> u64 {
    biggest.max(TRACE_MACHINE_MIN)
}

/// The preset workloads by name, in report order.
pub const WORKLOADS: [(WorkloadKind, &str); 6] = [
    (WorkloadKind::Vm, "vm"),
    (WorkloadKind::Memfd, "memfd"),
    (WorkloadKind::Dense, "dense"),
    (WorkloadKind::Fragmented, "fragmented"),
    (WorkloadKind::Mixed, "mixed"),
    (WorkloadKind::Default, "default"),
];

/// The presets named `names` at every size of `sizes` (size-major).
pub fn workloads(sizes: &[u64], names: &[String]) -> Result<Vec<Workload>, BenchError> {
    let mut kinds = Vec::new();
    for n in names {
        let k = WORKLOADS
            .iter()
            .find(|(_, name)| name == n)
            .ok_or_else(|| BenchError::UnknownWorkload(n.clone()))?;
        kinds.push(*k);
    }
    Ok(sizes
        .iter()
        .flat_map(|&size| {
            kinds
                .iter()
                .map(move |&(k, name)| Workload::preset(k, name, size))
        })
        .collect())
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// One per (workload, scheme, strategy).
    pub cells: Vec<Cell>,
    /// Ours against each peer, per workload.
    pub ratios: Vec<Ratio>,
    /// One per swept (tracker, strategy).
    pub scaling: Vec<Scaling>,
    /// The measured repetitions per cell.
    pub reps: usize,
    /// The cap of the sweep, seconds.
    pub cap_seconds: f64,
    /// The reference curve's limit (`None`: no curve exempt from the cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_max_blocks: Option<u64>,
    /// The limit measurements, if run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<limits::Limits>,
}

/// Runs the matrix then the sweep; `progress(step, weight)` is called
/// once per step with its expected cost ([`cell_weight`],
/// [`sweep_weight`]; they sum to at most [`BenchConfig::steps`]).
pub fn run(
    cfg: &BenchConfig,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<BenchReport, BenchError> {
    let mut cells = Vec::new();
    for w in &cfg.workloads {
        cells.extend(harness::run_workload(
            w,
            &cfg.schemes,
            cfg.reps,
            cfg.kernel,
            progress,
        )?);
    }
    report::fill_cell_ratios(&mut cells);
    let scaling = scaling::sweep(
        &cfg.sweep,
        &cfg.sweep_strategies,
        cfg.cap,
        cfg.reference,
        progress,
    )?;
    let limits = match cfg.limits {
        Some(sizes) => Some(limits::measure(sizes, &mut |m| progress(m, LIMITS_WEIGHT))?),
        None => None,
    };
    Ok(BenchReport {
        limits,
        ratios: report::ratios(&cells),
        cells,
        scaling,
        reps: cfg.reps,
        cap_seconds: cfg.cap.as_secs_f64(),
        reference_max_blocks: cfg.reference.map(|r| r.max_blocks),
    })
}

#[cfg(test)]
mod tests;
