//! `kho`: the live-update lab.
//!
//! `kho run` (the default) drives one live update per restore strategy.
//! Each is three processes' worth of work in two PIDs: the driver spawns the
//! old kernel (`kho __old-kernel`, stdout piped), which prepares the machine
//! and execs into the new kernel (`kho __new-kernel`, same PID, stdout
//! inherited), which prints its [`RunReport`] as one JSON line.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use kho::{PhysAddr, PhysRange};
use kho_lab::image::{MemImage, Source};
use kho_lab::peers::{MachineScheme, SchemeKind};
use kho_lab::trace::{Trace, TraceFormat};
use kho_lab::{FdtSource, FidelityCase, InspectOptions, MapFormat, dump_old_kernel, run_case};
use kho_machine::{
    KernelArgs, MemmapMode, NewKernelArgs, OldKernelArgs, OldKernelConfig, RunReport, Strategy,
    WorkloadKind, memparse, new_kernel_main, old_kernel_main,
};

const TOUCH_PAGES_SUBCOMMAND: &str = "__touch-pages";

const ABOUT: &str = "Kexec HandOver (KHO) live updates on a simulated machine";

const LONG_ABOUT: &str = "\
Kexec HandOver (KHO) live updates on a simulated machine.

`kho run` (the default) performs one live update per restore strategy. The old \
kernel is a real process: it creates the machine's RAM as a memfd with a PC \
memory map (holes below 1 MiB and below 4 GiB), reserves the KHO scratch \
areas, runs a workload that writes deterministic data into folios and \
preserves them, records a manifest (every block and a checksum of its \
contents), writes the x86 setup_data / kho_data / kho_scratch hand-over into \
simulated memory, overwrites every page it wrote but did not preserve with \
poison, and execs. The new kernel is the same binary in the same process, \
handed only the memfd, the firmware memory map and the setup_data address; \
it validates the hand-over, restores the preserved memory and verifies every \
byte against the manifest. One table row per strategy: blocks and bytes \
preserved, boot-time costs, verified and lost bytes.

The default run (a 16G machine, every strategy) takes about 60 s and 4.3 GiB \
of host memory on a 2-core, 24 GiB machine; host memory grows with \
--machine-size.

Sizes accept K, M, G, T suffixes (binary), e.g. 64M, 16G, 1T, or bytes.";

#[derive(Debug, Parser)]
#[command(name = "kho", version, about = ABOUT, long_about = LONG_ABOUT)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the live-update scenario once per restore strategy (the default).
    Run(RunArgs),
    /// Check the memblock model's mainline per-block path against Linux's own
    /// memblock timings (the honesty check behind every per-block figure).
    MemblockFidelity(FidelityArgs),
    /// Every tracker x every restore strategy it feeds x workload side by
    /// side in one run, plus a scaling sweep with fitted growth exponents.
    Bench(BenchArgs),
    /// Decode and validate a KHO handover from a memory image (ELF core or
    /// raw) and its root FDT.
    Inspect(InspectArgs),
    /// Capture the folios of running processes (root: /proc/PID/pagemap and
    /// /proc/kpageflags) into a trace file.
    Capture(CaptureArgs),
    /// A test helper: allocates and writes N pages, prints
    /// `ready ADDR BYTES`, waits for a line on stdin.
    #[command(name = TOUCH_PAGES_SUBCOMMAND, hide = true)]
    TouchPages {
        /// Pages to allocate and write.
        pages: u64,
    },
}

/// `--json [FILE]`, the same in every subcommand: `--json` alone prints
/// the JSON on stdout instead of the tables; `--json FILE` writes it to FILE
/// (created before any work, so a bad path fails at once) and the tables
/// still print.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JsonOut {
    Stdout,
    File(PathBuf),
}

impl JsonOut {
    /// Whether the JSON replaces the tables on stdout.
    fn is_stdout(out: Option<&JsonOut>) -> bool {
        matches!(out, Some(JsonOut::Stdout))
    }

    /// Creates FILE now (truncating it), so that a run never ends in
    /// "cannot write".
    fn create(out: Option<&JsonOut>) -> Result<Option<std::fs::File>> {
        match out {
            Some(JsonOut::File(p)) => std::fs::File::create(p).map(Some).map_err(|e| {
                usage(format!(
                    "--json {}: cannot create the file: {e}",
                    p.display()
                ))
            }),
            _ => Ok(None),
        }
    }

    /// Writes `json` (one line) where it goes: stdout, or the file made by
    /// [`JsonOut::create`].
    fn write(out: Option<&JsonOut>, file: Option<std::fs::File>, json: &str) -> Result<()> {
        match (out, file) {
            (Some(JsonOut::File(p)), Some(mut f)) => {
                writeln!(f, "{json}").with_context(|| format!("--json {}", p.display()))
            }
            (Some(JsonOut::Stdout), _) => {
                println!("{json}");
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn parse_json_out(s: &str) -> Result<JsonOut, String> {
    Ok(match s {
        "-" => JsonOut::Stdout,
        p => JsonOut::File(PathBuf::from(p)),
    })
}

/// `--strategy`: one of [`Strategy::NAMES`], or `all` (every strategy).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Strategies(Vec<Strategy>);

fn strategies_parser() -> impl TypedValueParser<Value = Strategies> {
    PossibleValuesParser::new(Strategy::NAMES.into_iter().chain(["all"])).map(|s| {
        Strategies(match s.parse() {
            Ok(one) => vec![one],
            Err(_) => Strategy::ALL.to_vec(),
        })
    })
}

fn memmap_parser() -> impl TypedValueParser<Value = MemmapMode> {
    PossibleValuesParser::new(MemmapMode::ALL.map(MemmapMode::as_str))
        .try_map(|s| s.parse::<MemmapMode>())
}

fn map_format_parser() -> impl TypedValueParser<Value = MapFormat> {
    PossibleValuesParser::new(MapFormat::ALL.map(MapFormat::as_str))
        .try_map(|s| s.parse::<MapFormat>())
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// One JSON object {"rows": [...]}: on stdout instead of the table, or,
    /// with FILE, written to FILE beside the table.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-", value_parser = parse_json_out)]
    json: Option<JsonOut>,
    /// Show every table column whatever the terminal width (by default the
    /// table fits `COLUMNS` or the terminal, dropping the breakdown columns).
    #[arg(long)]
    wide: bool,
    /// Restore strategy of the new kernel.
    #[arg(long, default_value = "all", value_parser = strategies_parser())]
    strategy: Strategies,
    /// The new kernel's struct-page configuration, for the KHO boot and its
    /// baseline alike: `eager` (no deferred struct-page init, what mainline
    /// KHO required), `deferred` (CONFIG_DEFERRED_STRUCT_PAGE_INIT with
    /// KHO's fix), `lazy` (ours: preserved struct pages initialised at
    /// restore; see docs/methodology.md for what it needs and gives up).
    #[arg(long, default_value = "eager", value_parser = memmap_parser())]
    memmap: MemmapMode,
    /// CPUs of the new kernel's node (default: this host's): `deferred`'s
    /// `deferred_init_memmap` splits over them as Linux's padata does; the
    /// baseline boot uses the same.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=i64::from(kho_machine::MAX_THREADS)))]
    threads: Option<u16>,
    /// Ours: split `memmap_init` over --threads too (Linux runs it on the
    /// boot CPU, before the other CPUs are up).
    #[arg(long)]
    parallel_memmap_init: bool,
    /// RAM of the simulated machine (16M..=1T, a multiple of 2M; a size too
    /// small for the memmap and KHO scratch areas, today below 28M, is
    /// refused naming the computed minimum).
    #[arg(long, default_value = "16G", value_parser = parse_machine_size)]
    machine_size: u64,
    /// Fault injection: pages the workload forgets to preserve.
    #[arg(long, hide = true, default_value_t = 0)]
    forget_pages: u64,
    /// Write the old kernel's memory at kexec time (after the poison, just
    /// before the exec) as an ELF core with physical-address PT_LOAD
    /// segments, and the root FDT as FILE.fdt. Written once, during the
    /// first strategy's live update (the old kernel's memory does not
    /// depend on the strategy). Try it with `kho inspect`.
    #[arg(long, value_name = "FILE")]
    dump_core: Option<PathBuf>,
    /// The tracker design: `kho` (ours, every restore strategy), `xarray`
    /// (Linux 6.16's xarrays of bitmaps and kho-v1 chunk list, page bitmaps;
    /// `xarray-512`: 6.16's 512-byte bitmaps), `radix-mainline` (mainline's
    /// radix tree under a mutex), `maple` (the range proposal). A peer runs
    /// the strategies of --strategy its handover can feed (xarray,
    /// xarray-512: per-block, coalesced, bulk; radix-mainline: per-block and
    /// the mainline-fix steps; maple: coalesced, bulk).
    #[arg(long, default_value = "kho", value_parser = scheme_parser())]
    scheme: SchemeKind,
    /// The old kernel's workload: default (VM guests + memfd checkpoint),
    /// vm, memfd, dense, fragmented, mixed; scaled to --machine-size.
    #[arg(long, default_value = "default", value_parser = workload_parser(), conflicts_with = "trace")]
    workload: WorkloadKind,
    /// Replay a trace file (binary or text, see README) instead of a
    /// workload: exactly its blocks, placed by the remap rule if needed.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// The handover the old kernel writes: kho-v4 (root `kho-v4`, the memfd
    /// checkpoint and each VM guest as LUO sessions of memfd, guest_memfd
    /// and kvm files) or kho-v3 (every folio preserved directly). With a
    /// peer --scheme the peer's format, no LUO.
    #[arg(long, default_value = "kho-v4", value_parser = parse_abi)]
    abi: kho::KhoVersion,
    /// Chained live updates: N consecutive updates per strategy, each new
    /// kernel restoring and verifying every byte, then preserving it again
    /// (plus a few new folios) and exec'ing the next; one row per
    /// generation (see docs/cli.md). Our tracker only.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(kho_machine::MAX_UPDATES)))]
    updates: u32,
    /// What the new kernel does with a handover that breaks an invariant:
    /// `reject` (Linux: boot without KHO, every preserved page freed) or
    /// `salvage` (ours: keep every block that validates, reserve the span
    /// of each damaged node, list the damage under the table).
    #[arg(long, default_value = "reject", value_parser = on_corruption_parser())]
    on_corruption: kho::OnCorruption,
    /// Fault injection: flip one byte of the handover just before the exec:
    /// `child-pointer` (a level-1 entry), `leaf-word` (a leaf byte naming
    /// blocks outside RAM or in scratch), `fdt-property` (the root FDT's
    /// preserved-memory-map), `chunk-header` (a kho-v1 chunk's num_elms;
    /// --scheme xarray or xarray-512).
    #[arg(long, value_name = "CLASS", value_parser = corrupt_parser())]
    corrupt: Option<kho_machine::CorruptClass>,
}

fn on_corruption_parser() -> impl TypedValueParser<Value = kho::OnCorruption> {
    PossibleValuesParser::new(kho::OnCorruption::ALL.map(kho::OnCorruption::as_str))
        .try_map(|s| s.parse::<kho::OnCorruption>())
}

fn corrupt_parser() -> impl TypedValueParser<Value = kho_machine::CorruptClass> {
    PossibleValuesParser::new(kho_machine::CorruptClass::ALL.map(kho_machine::CorruptClass::as_str))
        .try_map(|s| s.parse::<kho_machine::CorruptClass>())
}

fn parse_abi(s: &str) -> Result<kho::KhoVersion, String> {
    kho_machine::parse_abi(s).map_err(|_| format!("unknown ABI {s:?} (kho-v3, kho-v4)"))
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["pids", "all"])))]
struct CaptureArgs {
    /// A process to capture (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Capture every process.
    #[arg(long, conflicts_with = "pids")]
    all: bool,
    /// Only virtual addresses START-END (hex), e.g. 7f0000000000-7f0000100000.
    #[arg(long, value_name = "START-END", value_parser = parse_vrange)]
    vaddr: Option<(u64, u64)>,
    /// The trace file to write.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Write the text format (`pfn order` lines) instead of binary.
    #[arg(long)]
    text: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("fdt_src").required(true).args(["fdt", "fdt_phys"])))]
struct InspectArgs {
    /// The root FDT (e.g. saved from /sys/kernel/debug/kho/out/fdt, or the
    /// FILE.fdt of `kho run --dump-core FILE`).
    #[arg(long, value_name = "FILE")]
    fdt: Option<PathBuf>,
    /// The root FDT's physical address in the image instead.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    fdt_phys: Option<u64>,
    /// The memory image: an ELF core with physical-address PT_LOAD segments
    /// (QEMU dump-guest-memory, virsh dump, /proc/vmcore, kho run
    /// --dump-core), or a raw image with --base.
    #[arg(long, value_name = "FILE")]
    mem: PathBuf,
    /// The image is raw: the byte at file offset o is physical base + o.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    base: Option<u64>,
    /// The memory map's format (default: from the FDT's compatible; the
    /// kho-v1 bitmap size by trying both).
    #[arg(long, value_parser = map_format_parser())]
    format: Option<MapFormat>,
    /// The RAM map for validation, START-END,... (default: the image's
    /// segments).
    #[arg(long, value_name = "RANGES", value_parser = parse_ranges)]
    ram: Option<Ranges>,
    /// Ranges where no tree page or preserved block may lie (scratch,
    /// kernel image), START-END,...
    #[arg(long, value_name = "RANGES", value_parser = parse_ranges)]
    forbidden: Option<Ranges>,
    /// One JSON object (format, blocks, preserved_bytes, per_order,
    /// ranges_count, metadata_pages, subnodes, errors, ...): on stdout
    /// instead of the summary, or, with FILE, written to FILE beside it.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-", value_parser = parse_json_out)]
    json: Option<JsonOut>,
    /// List the blocks as `pfn order` lines (the plain trace format), in
    /// walk order; errors follow as `#` comments.
    #[arg(long, conflicts_with = "ranges")]
    blocks: bool,
    /// List the coalesced ranges as `start end` lines (hex, end exclusive).
    #[arg(long)]
    ranges: bool,
    /// In the tree, list the first N folios of each LUO file.
    #[arg(long, value_name = "N", default_value_t = 3)]
    folios: usize,
}

#[derive(Debug, Clone)]
struct Ranges(Vec<PhysRange>);

#[derive(Debug, Args)]
struct FidelityArgs {
    /// One JSON object {"cases": [...]}: on stdout instead of the table,
    /// or, with FILE, written to FILE beside it.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-", value_parser = parse_json_out)]
    json: Option<JsonOut>,
    /// Seed of the random case's pages.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn scheme_parser() -> impl TypedValueParser<Value = SchemeKind> {
    PossibleValuesParser::new(SchemeKind::ALL.map(SchemeKind::name)).try_map(|s| parse_scheme(&s))
}

fn workload_parser() -> impl TypedValueParser<Value = WorkloadKind> {
    PossibleValuesParser::new(WorkloadKind::ALL.map(WorkloadKind::as_str))
        .try_map(|s| parse_workload(&s))
}

fn parse_scheme(s: &str) -> Result<SchemeKind, String> {
    SchemeKind::from_name(s).ok_or_else(|| {
        format!("unknown scheme {s:?} (kho, xarray, xarray-512, radix-mainline, maple)")
    })
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    memparse(t).ok_or_else(|| format!("not a size: {s:?} (e.g. 64M, 16G, 1T or bytes)"))
}

/// `--machine-size`: a size the simulated PC layout accepts, checked at
/// parse time so that a bad size is a usage error naming the flag.
fn parse_machine_size(s: &str) -> Result<u64, String> {
    let size = parse_size(s)?;
    kho_machine::MemoryLayout::pc(size).map_err(|_| {
        format!(
            "{} is outside 16 MiB..=1 TiB or not a multiple of 2 MiB",
            bytes(size)
        )
    })?;
    Ok(size)
}

/// `--reps`: at least one measured repetition.
fn parse_reps(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_addr(s: &str) -> Result<u64, String> {
    let t = s.replace('_', "");
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| format!("not an address: {s:?} (decimal or 0x-hex)"))
}

fn parse_ranges(s: &str) -> Result<Ranges, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (a, b) = part
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("not a range: {part:?} (START-END)"))?;
        let r = PhysRange::new(PhysAddr::new(parse_addr(a)?), PhysAddr::new(parse_addr(b)?))
            .map_err(|e| format!("{part:?}: {e}"))?;
        out.push(r);
    }
    out.sort();
    Ok(Ranges(out))
}

fn parse_workload(s: &str) -> Result<WorkloadKind, kho_machine::UnknownWorkload> {
    s.parse()
}

fn parse_vrange(s: &str) -> Result<(u64, u64), String> {
    let hex = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16);
    s.split_once('-')
        .and_then(|(a, b)| Some((hex(a).ok()?, hex(b).ok()?)))
        .filter(|(a, b)| a < b)
        .ok_or_else(|| format!("not a virtual range: {s:?} (START-END in hex)"))
}

/// A mistake in the command line found after parsing (a value out of range,
/// a flag combination): printed like clap's errors and exits 2.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A kernel process failed and already printed its error: exit with its
/// code, printing nothing more.
#[derive(Debug)]
struct ChildFailed(i32);

impl std::fmt::Display for ChildFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a kernel process exited with {}", self.0)
    }
}

impl std::error::Error for ChildFailed {}

/// Exit codes: 2 for usage errors (clap's and [`UsageError`]), 1 for
/// runtime failures. Errors print as one line (`error: what: why`), without
/// a backtrace whatever `RUST_BACKTRACE` says; bugs panic and keep theirs.
fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if let Some(ChildFailed(code)) = e.downcast_ref::<ChildFailed>() {
                return std::process::ExitCode::from(u8::try_from(*code).unwrap_or(1));
            }
            eprintln!("error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

fn real_main() -> Result<()> {
    // The two kernel processes speak the exec protocol, not the user's CLI.
    match KernelArgs::parse(std::env::args_os().skip(1)).context("kernel arguments")? {
        Some(KernelArgs::Old(a)) => return old_kernel(&a),
        Some(KernelArgs::New(a)) => return new_kernel(&a),
        None => {}
    }
    let cli = Cli::parse();
    match cli.cmd {
        None => run(&cli.run),
        Some(Cmd::Run(a)) => run(&a),
        Some(Cmd::MemblockFidelity(a)) => memblock_fidelity(&a),
        Some(Cmd::Bench(a)) => bench(&a),
        Some(Cmd::Inspect(a)) => inspect(&a),
        Some(Cmd::Capture(a)) => capture(&a),
        Some(Cmd::TouchPages { pages }) => touch_pages(pages),
    }
}

#[derive(Debug, Clone, Args)]
struct BenchArgs {
    /// The reduced matrix (256M and 1G machines, one rep, sweep 2^10..2^20
    /// every other power, no curve exempt from the cap): about 2.5 minutes
    /// on 2 cores (153 s measured 2026-12-02).
    #[arg(long)]
    quick: bool,
    /// A tiny matrix (dense and fragmented at 64M, sweep 2^8 and 2^10): a
    /// smoke test of the whole pipeline in seconds.
    #[arg(long, hide = true, conflicts_with = "quick")]
    tiny: bool,
    /// Measured repetitions per cell, after one warm-up (default 3; 1 with
    /// --quick).
    #[arg(long, value_parser = parse_reps)]
    reps: Option<usize>,
    /// Adds a trace (binary or text) as a workload; repeatable. The
    /// shipped real traces (traces/ in the repository, built into the
    /// binary) are workloads too unless --no-shipped-traces.
    #[arg(long = "trace", value_name = "FILE")]
    traces: Vec<PathBuf>,
    /// Leave out the shipped real traces (bash.txt, python-100m.trace,
    /// rustc-kho-machine.trace).
    #[arg(long)]
    no_shipped_traces: bool,
    /// Stop a curve of the scaling sweep after its first point over this,
    /// or before a point its last two points predict over it; the table
    /// says where the cap was hit.
    #[arg(long, default_value_t = 5.0)]
    cap_seconds: f64,
    /// Measure mainline (radix-mainline per-block) at every sweep point up
    /// to 2^N whatever the cap (default 18: about 80-90 s of Linux's
    /// memblock code at 2^18; none with --quick; 0: none).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=40))]
    mainline_pow: Option<u32>,
    /// Largest sweep point, as a power of two, 10..=40 (default 24; 20 with
    /// --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(10..=40))]
    max_pow: Option<u32>,
    /// Machine sizes of the matrix, comma-separated (default 1G,4G;
    /// 256M,1G with --quick); `--machine-size`, as `kho run` spells it,
    /// is the same flag.
    #[arg(long, visible_alias = "machine-size", value_delimiter = ',', value_parser = parse_size)]
    sizes: Vec<u64>,
    /// Workloads of the matrix, comma-separated: vm, memfd, dense,
    /// fragmented, mixed, default (default: the first five; no mixed with
    /// --quick).
    #[arg(long, visible_alias = "workload", value_delimiter = ',')]
    workloads: Vec<String>,
    /// The next kernel's struct-page configuration in every cell, for the
    /// KHO boot and its baseline alike (see `kho run --memmap`).
    #[arg(long, default_value = "eager", value_parser = memmap_parser())]
    memmap: MemmapMode,
    /// The next kernel's CPUs in every cell (deferred init's padata split).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=i64::from(kho_machine::MAX_THREADS)))]
    threads: u16,
    /// Skip the scaling sweep.
    #[arg(long)]
    no_scaling: bool,
    /// Skip the limit measurements (memory bandwidth, the walk against its
    /// physical limit, preserve from 2 threads against 1: a few seconds).
    #[arg(long)]
    no_limits: bool,
    /// One JSON object {"cells": [...], "ratios": [...], "scaling": [...]}:
    /// on stdout instead of the tables, or, with FILE, written to FILE
    /// beside them.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-", value_parser = parse_json_out)]
    json: Option<JsonOut>,
    /// Print the tables as wide as their content instead of fitting them to
    /// `COLUMNS` or the terminal.
    #[arg(long)]
    wide: bool,
    /// Write a self-contained report to DIR/index.html.
    #[arg(long, value_name = "DIR")]
    html: Option<PathBuf>,
}

/// The real traces shipped in traces/, built in: `kho bench` replays them
/// by default.
const SHIPPED_TRACES: [(&str, &[u8]); 3] = [
    ("bash.txt", include_bytes!("../../../traces/bash.txt")),
    (
        "python-100m.trace",
        include_bytes!("../../../traces/python-100m.trace"),
    ),
    (
        "rustc-kho-machine.trace",
        include_bytes!("../../../traces/rustc-kho-machine.trace"),
    ),
];

fn bench(a: &BenchArgs) -> Result<()> {
    use kho_lab::bench::{self, BenchConfig, report};
    // Outputs first: a run must not end in "cannot write".
    let json_file = JsonOut::create(a.json.as_ref())?;
    if let Some(dir) = &a.html {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--html {}: cannot create the directory", dir.display()))?;
    }
    let mut traces = Vec::new();
    if !a.no_shipped_traces && !a.tiny {
        for (name, bytes) in SHIPPED_TRACES {
            let t = kho_lab::trace::Trace::parse(bytes)
                .with_context(|| format!("shipped trace {name}"))?;
            traces.push((name.to_owned(), t.into_blocks()));
        }
    }
    for path in &a.traces {
        let t = read_trace(path)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        traces.push((name, t.into_blocks()));
    }
    let mut cfg = if a.tiny {
        let mut c = BenchConfig::tiny();
        c.sweep = vec![1 << 8, 1 << 10];
        for (name, blocks) in &traces {
            c.workloads
                .push(bench::Workload::trace(name, blocks.clone(), 64 << 20));
        }
        c
    } else if a.quick {
        BenchConfig::quick(&traces)
    } else {
        BenchConfig::full(&traces)
    };
    if let Some(r) = a.reps {
        cfg.reps = r;
    }
    if !a.sizes.is_empty() || !a.workloads.is_empty() {
        let sizes = if a.sizes.is_empty() {
            let mut v: Vec<u64> = cfg.workloads.iter().map(|w| w.machine_size).collect();
            v.sort_unstable();
            v.dedup();
            v
        } else {
            a.sizes.clone()
        };
        let names = if a.workloads.is_empty() {
            let mut v: Vec<String> = Vec::new();
            for w in &cfg.workloads {
                let n = w.name.split('@').next().unwrap_or_default().to_owned();
                if !n.starts_with("trace:") && !v.contains(&n) {
                    v.push(n);
                }
            }
            v
        } else {
            a.workloads.clone()
        };
        let biggest = bench::trace_machine(sizes.iter().copied().max().unwrap_or(1 << 30));
        cfg.workloads = bench::workloads(&sizes, &names)?;
        for (name, blocks) in &traces {
            cfg.workloads
                .push(bench::Workload::trace(name, blocks.clone(), biggest));
        }
    }
    if let Some(p) = a.max_pow {
        cfg.sweep.retain(|n| n.trailing_zeros() <= p);
    }
    match a.mainline_pow {
        Some(0) => cfg.reference = None,
        Some(p) => cfg.reference = Some(bench::Reference::mainline(p)),
        None => {}
    }
    if a.no_scaling {
        cfg.sweep.clear();
    }
    if a.no_limits {
        cfg.limits = None;
    }
    if !(a.cap_seconds > 0.0 && a.cap_seconds.is_finite()) {
        return Err(usage(format!(
            "--cap-seconds {}: must be positive",
            a.cap_seconds
        )));
    }
    cfg.cap = std::time::Duration::from_secs_f64(a.cap_seconds);
    cfg.kernel = kho_machine::NewKernelConfig {
        memmap: a.memmap,
        threads: usize::from(a.threads),
        parallel_memmap_init: false,
    };
    let started = std::time::Instant::now();
    let pb = indicatif::ProgressBar::new(cfg.steps());
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {percent:>3}% (eta {eta}) {wide_msg}",
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .progress_chars("=> "),
    );
    // The clock keeps moving through long steps (a sweep point at 2^20).
    pb.enable_steady_tick(std::time::Duration::from_millis(250));
    // A step is counted when the next one starts: the bar shows work done.
    let mut pending = 0u64;
    let r = bench::run(&cfg, &mut |msg, weight| {
        pb.inc(pending);
        pending = weight;
        pb.set_message(msg.to_owned());
    })
    .context("bench")?;
    pb.finish_and_clear();
    if !JsonOut::is_stdout(a.json.as_ref()) {
        print_bench_tables(&r, a.wide);
    }
    JsonOut::write(a.json.as_ref(), json_file, &report::json(&r)?)?;
    if let Some(d) = &a.html {
        report::write_html(&r, d)?;
    }
    eprintln!("kho bench: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The bench's tables on stdout, fitted to the terminal unless `wide`.
fn print_bench_tables(r: &kho_lab::bench::BenchReport, wide: bool) {
    use kho_lab::bench::report;
    let width = if wide { None } else { table_width() };
    println!(
        "{}",
        wrap(
            "tracker x strategy per workload: rows are trackers with their own costs \
             (preserve ns/block with 1 and 2 threads, handover preparation ms, metadata); \
             strategy columns hold the next boot's memblock ms (-: the tracker's handover \
             cannot feed that strategy). Every cell's full figures: --json or --html.",
            "",
            width
        )
    );
    for w in report::workloads(&r.cells) {
        println!();
        println!("{w}:");
        println!(
            "{}",
            fit(
                report::pivot_table(r, &w, report::PivotValue::Memblock),
                1,
                width
            )
        );
    }
    println!();
    println!("ours / peer (below 1: ours is smaller or faster); restore = walk + memblock");
    println!("{}", fit(report::ratios_table(r), 3, width));
    if !r.scaling.is_empty() {
        println!();
        println!(
            "{}",
            wrap(
                "scaling: restore (walk + memblock) of scattered order-0 blocks (every other page), \
                 median of 5 runs per point up to 2^14, one above; exponent = least-squares log-log slope; \
                 2^20 marked measured or extrapolated (from the last three points); \
                 the note says where the cap stopped a curve",
                "",
                width
            )
        );
        println!("{}", fit(report::scaling_table(r), 2, width));
        println!();
        println!("the trackers' own costs in the sweep:");
        println!("{}", fit(report::tracker_scaling_table(r), 2, width));
    }
    println!();
    println!("targets (issues 6, 12 and 15), checked against this run:");
    for t in report::targets(r) {
        println!("{}", wrap(&format!("- {}", t.text), "  ", width));
    }
}

fn memblock_fidelity(a: &FidelityArgs) -> Result<()> {
    let json_file = JsonOut::create(a.json.as_ref())?;
    let mut results = Vec::new();
    for case in FidelityCase::ALL {
        eprintln!("memblock fidelity: {} ...", case.name());
        results.push(run_case(case, a.seed).with_context(|| case.name())?);
    }
    let json = serde_json::json!({ "cases": results }).to_string();
    JsonOut::write(a.json.as_ref(), json_file, &json)?;
    if JsonOut::is_stdout(a.json.as_ref()) {
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "case",
        "blocks",
        "model s",
        "Linux s",
        "model/Linux",
        "regions",
        "Linux regions",
        "region visits",
    ]);
    for r in &results {
        t.add_row([
            r.case.to_string(),
            r.blocks.to_string(),
            format!("{:.3}", r.model_s),
            format!("{:.2}", r.linux_s),
            format!("{:.2}x", r.ratio),
            r.regions.to_string(),
            r.linux_regions.map_or("-".into(), |n| n.to_string()),
            r.region_visits.to_string(),
        ]);
    }
    println!("{t}");
    println!(
        "memblock_reserve + memblock_reserved_mark_noinit per block, ascending; \
         honest when model/Linux lies within 0.5x..2x"
    );
    Ok(())
}

/// The tracker `name`d on a kernel's command line (`None`: ours).
fn scheme(name: &str) -> Result<Option<std::sync::Arc<dyn kho_machine::PeerScheme>>> {
    parse_scheme(name).map_err(anyhow::Error::msg)?;
    Ok(MachineScheme::by_name(name))
}

fn old_kernel(a: &OldKernelArgs) -> Result<()> {
    let replay = match &a.trace {
        Some(path) => Some(read_trace(path)?.into_blocks()),
        None => None,
    };
    let image = std::env::current_exe().context("locating this binary for kexec")?;
    let cfg = OldKernelConfig::from_args(a, scheme(&a.scheme)?, replay, image)
        .context("--machine-size")?;
    // Returns only if the machine could not be prepared or the exec failed.
    let err = match &a.dump_core {
        None => old_kernel_main(&cfg, &mut |_| Ok(())),
        Some(path) => old_kernel_main(&cfg, &mut |img| {
            let d = dump_old_kernel(img, path).context("--dump-core")?;
            eprintln!(
                "old kernel: dumped {} in {} segments to {}, root FDT ({} bytes at {}) to {}",
                bytes(d.bytes),
                d.segments.len(),
                path.display(),
                d.fdt_bytes,
                d.fdt_phys,
                d.fdt_path.display()
            );
            Ok(())
        }),
    };
    Err(err).context("old kernel")
}

fn new_kernel(a: &NewKernelArgs) -> Result<()> {
    // A chained generation prints its report before it execs the next.
    let mut emit = |r: &RunReport| -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(r)?)?;
        out.flush()
    };
    let report = new_kernel_main(a, scheme(&a.scheme)?, &mut emit).context("new kernel")?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `--threads`, by default the host's CPUs.
fn run_threads(a: &RunArgs) -> usize {
    a.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    )
}

/// One live update (or a chain of `--updates`): spawn the old kernel,
/// collect the new kernels' reports, one per generation.
fn live_update(
    exe: &PathBuf,
    a: &RunArgs,
    strategy: Strategy,
    dump_core: Option<&PathBuf>,
) -> Result<Vec<RunReport>> {
    let args = OldKernelArgs {
        forget_pages: a.forget_pages,
        scheme: a.scheme.name().to_owned(),
        workload: a.workload,
        trace: a.trace.clone(),
        dump_core: dump_core.cloned(),
        memmap: a.memmap,
        threads: run_threads(a),
        parallel_memmap_init: a.parallel_memmap_init,
        abi: a.abi,
        on_corruption: a.on_corruption,
        corrupt: a.corrupt,
        updates: a.updates,
        ..OldKernelArgs::new(a.machine_size, strategy)
    };
    let out = Command::new(exe)
        .args(KernelArgs::Old(args).to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("spawning the old kernel")?;
    if !out.status.success() {
        use std::os::unix::process::ExitStatusExt;
        if let Some(code) = out.status.code() {
            // The kernel printed its own one-line error: do not add another.
            return Err(ChildFailed(code).into());
        }
        if out.status.signal() == Some(9) {
            let avail = mem_available().map_or_else(String::new, |b| {
                format!(" (the host has {} available)", bytes(b))
            });
            bail!(
                "live update ({strategy}) was killed (SIGKILL), most likely by the host's \
                 out-of-memory killer: the {} machine's RAM is a memfd whose written pages \
                 are host memory, and this run needed up to {} of it{avail}; try a smaller \
                 --machine-size",
                bytes(a.machine_size),
                bytes(a.machine_size)
            );
        }
        bail!("live update ({strategy}) failed: {}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    if a.updates <= 1 {
        let line = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .with_context(|| format!("the new kernel ({strategy}) printed no report"))?;
        let r = serde_json::from_str(line)
            .with_context(|| format!("parsing the new kernel's report {line:?}"))?;
        return Ok(vec![r]);
    }
    let rows = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|line| {
            serde_json::from_str::<RunReport>(line)
                .with_context(|| format!("parsing a new kernel's report {line:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    if rows.len() != a.updates as usize {
        let why = rows
            .last()
            .and_then(|r| r.kho_error.clone())
            .map_or_else(String::new, |e| {
                format!(": generation {} booted without KHO: {e}", rows.len())
            });
        bail!(
            "the chain of {} live updates ({strategy}) stopped after {} reports{why}",
            a.updates,
            rows.len()
        );
    }
    Ok(rows)
}

/// Refuses, before any kernel process starts, a machine too small for the
/// old kernel's early boot (memmap and KHO scratch), naming the smallest
/// size that boots: found by trying the early boot itself at every 2 MiB
/// step from 16 MiB, not a constant.
fn check_machine_size(machine_size: u64) -> Result<()> {
    let scratch = kho_machine::ScratchSizing::default();
    if let Err(e) = kho_machine::early_boot_fits(machine_size, &scratch) {
        let min = (8..=512u64)
            .map(|n| n << 21)
            .find(|&s| s > machine_size && kho_machine::early_boot_fits(s, &scratch).is_ok());
        return Err(usage(match min {
            Some(min) => format!(
                "--machine-size {}: too small: the old kernel's memmap and KHO scratch areas \
                 need a machine of at least {}",
                bytes(machine_size),
                bytes(min)
            ),
            None => format!(
                "--machine-size {}: the early boot fails: {e}",
                bytes(machine_size)
            ),
        }));
    }
    Ok(())
}

fn run(a: &RunArgs) -> Result<()> {
    check_machine_size(a.machine_size)?;
    if a.updates > 1 && (a.on_corruption != kho::OnCorruption::Reject || a.corrupt.is_some()) {
        return Err(usage(format!(
            "--updates {}: chained updates run with --on-corruption reject and no --corrupt              (salvage and fault injection apply to a single update)",
            a.updates
        )));
    }
    let json_file = JsonOut::create(a.json.as_ref())?;
    // The machine's RAM is a memfd: every page written is host memory. The
    // workload writes part of it (4.3 GiB of a 16 GiB machine by default),
    // so a size over MemAvailable is a risk, not a certainty.
    if let Some(avail) = mem_available().filter(|&m| m < a.machine_size) {
        eprintln!(
            "warning: --machine-size {} is more than the host's available memory ({}); \
             the run is killed if the workload writes more than that",
            bytes(a.machine_size),
            bytes(avail)
        );
    }
    if let Some(path) = &a.trace {
        // Refuse a bad trace here, before any old kernel starts.
        check_trace_size(path, a.machine_size)?;
        let s = read_trace(path)?.stats();
        eprintln!(
            "trace {}: {} blocks, {} in {} ranges",
            path.display(),
            s.blocks,
            bytes(s.bytes),
            s.ranges
        );
    }
    if a.updates > 1 && a.scheme.name() != "kho" {
        return Err(usage(format!(
            "--updates {}: a chained run needs our tracker (--scheme kho), not {}",
            a.updates, a.scheme
        )));
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let strategies: Vec<Strategy> = a
        .strategy
        .0
        .iter()
        .copied()
        .filter(|&s| a.scheme.feeds(s))
        .collect();
    if strategies.is_empty() {
        let feeds: Vec<&str> = a.scheme.strategies().iter().map(|s| s.as_str()).collect();
        return Err(usage(format!(
            "--scheme {}: cannot feed --strategy {} (it feeds: {})",
            a.scheme,
            a.strategy
                .0
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
            feeds.join(", ")
        )));
    }
    // One live update per strategy; a progress bar on stderr (hidden when
    // stderr is not a terminal) says which one is running.
    let bar = indicatif::ProgressBar::new(strategies.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} live update {pos}/{len}: {msg} [{elapsed}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut rows = Vec::with_capacity(strategies.len());
    for (i, s) in strategies.into_iter().enumerate() {
        bar.set_message(format!("{} on a {} machine", s, bytes(a.machine_size)));
        rows.extend(live_update(
            &exe,
            a,
            s,
            a.dump_core.as_ref().filter(|_| i == 0),
        )?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if a.json.is_some() {
        // Every row carries the same keys: the report's, plus what the run
        // was (scheme, workload, machine size) and the next-boot total.
        let workload = match &a.trace {
            Some(p) => format!("trace:{}", p.display()),
            None => a.workload.to_string(),
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut v = serde_json::to_value(r)?;
            if let Some(o) = v.as_object_mut() {
                o.entry("scheme").or_insert_with(|| a.scheme.name().into());
                o.insert("workload".into(), workload.clone().into());
                o.insert("machine_size".into(), a.machine_size.into());
                o.insert(
                    "next_boot_init_ms".into(),
                    (r.walk_ms + r.memblock_ms + r.mm_init_ms).into(),
                );
            }
            out.push(v);
        }
        let json = serde_json::json!({ "rows": out }).to_string();
        JsonOut::write(a.json.as_ref(), json_file, &json)?;
    }
    if !JsonOut::is_stdout(a.json.as_ref()) {
        if a.updates > 1 {
            print_chain_tables(&rows, a.machine_size, a.memmap, a.wide);
        } else {
            print_table(&rows, a.machine_size, a.memmap, run_threads(a), a.wide);
        }
    }
    Ok(())
}

/// A time of a report, ms.
type ReportTime = fn(&RunReport) -> f64;

/// `--updates N`: one table per strategy, one row per generation, then
/// whether metadata and scratch stayed flat.
fn print_chain_tables(rows: &[RunReport], machine_size: u64, memmap: MemmapMode, wide: bool) {
    let width = if wide { None } else { table_width() };
    let mut strategies: Vec<Strategy> = rows.iter().map(|r| r.strategy).collect();
    strategies.dedup();
    for s in strategies {
        let gens: Vec<&RunReport> = rows.iter().filter(|r| r.strategy == s).collect();
        println!(
            "{} chained live updates on a {} machine, {s}, struct pages {memmap}",
            gens.len(),
            bytes(machine_size)
        );
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_content_arrangement(ContentArrangement::Disabled);
        t.set_header([
            "gen",
            "LU#",
            "blocks",
            "preserved",
            "lost",
            "tree pg",
            "FDT pg",
            "LUO pg",
            "metadata pg",
            "manifest pg",
            "scratch",
            "walk ms",
            "memblock ms",
            "mm init ms",
            "baseline ms",
        ]);
        let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
        for r in &gens {
            let g = r.chain.clone().unwrap_or_default();
            // Short: the areas' total and lowest base (the full list is in
            // the JSON and below the table).
            let scratch = format!(
                "{} @{:#x}",
                bytes(g.scratch.iter().map(|&(_, sz)| sz).sum()),
                g.scratch.iter().map(|&(b, _)| b).min().unwrap_or(0)
            );
            t.add_row([
                right(g.generation.to_string()),
                right(
                    g.liveupdate_num
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                ),
                right(thousands(r.blocks)),
                right(bytes(r.preserved_bytes)),
                right(bytes(r.lost_bytes)),
                right(thousands(g.tree_pages)),
                right(thousands(g.fdt_pages)),
                right(thousands(g.luo_pages)),
                right(thousands(g.tree_pages + g.fdt_pages + g.luo_pages)),
                right(thousands(g.manifest_pages)),
                Cell::new(scratch),
                right(millis(r.walk_ms)),
                right(millis(r.memblock_ms)),
                right(millis(r.mm_init_ms)),
                right(millis(r.baseline_mm_init_ms)),
            ]);
        }
        println!("{}", fit(t, 1, width));
        if let Some(g) = gens.first().and_then(|r| r.chain.as_ref()) {
            let areas: Vec<String> = g
                .scratch
                .iter()
                .map(|&(b, sz)| format!("{b:#x}+{}", bytes(sz)))
                .collect();
            println!(
                "{}",
                wrap(
                    &format!("scratch areas of generation 1: {}", areas.join(", ")),
                    "  ",
                    width
                )
            );
        }
        let meta: Vec<u64> = gens
            .iter()
            .filter_map(|r| r.chain.as_ref())
            .map(|g| g.tree_pages + g.fdt_pages + g.luo_pages)
            .collect();
        let scratch_same = gens.windows(2).all(|w| {
            w[0].chain.as_ref().map(|g| &g.scratch) == w[1].chain.as_ref().map(|g| &g.scratch)
        });
        let lost: u64 = gens.iter().map(|r| r.lost_bytes).sum();
        // Medians of the first and the last quarter: flat or growing,
        // whatever one noisy generation did.
        let quarter = gens.len().div_ceil(4);
        let median = |part: &[&RunReport], f: ReportTime| {
            let mut v: Vec<f64> = part.iter().map(|r| f(r)).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let (head, tail) = (&gens[..quarter], &gens[gens.len() - quarter..]);
        let times: [(&str, ReportTime); 3] = [
            ("walk", |r| r.walk_ms),
            ("memblock", |r| r.memblock_ms),
            ("mm init", |r| r.mm_init_ms),
        ];
        let times: Vec<String> = times
            .iter()
            .map(|&(name, f)| {
                format!(
                    "{name} {} / {}",
                    millis(median(head, f)),
                    millis(median(tail, f))
                )
            })
            .collect();
        println!(
            "{}",
            wrap(
                &format!(
                    "median ms of the first / last {quarter} generations: {}",
                    times.join(", ")
                ),
                "  ",
                width
            )
        );
        println!(
            "lost {} in all; metadata pages {}..{}; scratch {}",
            bytes(lost),
            meta.iter().min().copied().unwrap_or(0),
            meta.iter().max().copied().unwrap_or(0),
            if scratch_same {
                "the same in every generation"
            } else {
                "MOVED between generations"
            }
        );
        for r in &gens {
            if let Some(e) = &r.kho_error {
                println!("{s}: booted without KHO: {e}");
            }
            if let Some(e) = &r.luo_error {
                println!("{s}: LUO not retrieved: {e}");
            }
        }
        println!();
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

fn bytes(b: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        if b >= 1 << shift {
            return format!("{:.1} {unit}", b as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{b} B")
}

/// `n` and `noun`, plural unless `n` is 1: `1 segment`, `3 segments`.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", thousands(n))
    }
}

/// An integer with thousands separators: `1234567` -> `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds with three decimals and thousands separators.
fn millis(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return format!("{ms:.3}");
    }
    let micros = (ms * 1000.0).round() as u64;
    format!("{}.{:03}", thousands(micros / 1000), micros % 1000)
}

/// The width the run table must fit: `COLUMNS` when set, else the
/// terminal's width, else none (a pipe gets every column).
fn table_width() -> Option<u16> {
    if let Some(w) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|&w| w > 0)
    {
        return Some(w);
    }
    Table::new().width()
}

/// `text` word-wrapped to `width` columns, continuation lines indented by
/// `indent` (`None`: one line). A word longer than the width stays whole.
fn wrap(text: &str, indent: &str, width: Option<u16>) -> String {
    let Some(w) = width.map(usize::from) else {
        return text.to_owned();
    };
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > w {
            out.push_str(&line);
            out.push('\n');
            line = indent.to_owned();
        }
        if !line.is_empty() && !line.ends_with(' ') {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out
}

/// `t` fitted to `width` columns (`None`: as wide as its content). A table
/// too wide is stacked: several tables, each repeating the first `keys`
/// columns (what a row is) followed by as many of the others as fit; cells
/// wrap only when even one column does not fit.
fn fit(t: Table, keys: usize, width: Option<u16>) -> String {
    let Some(w) = width else {
        return t.to_string();
    };
    let header: Vec<String> = t
        .header()
        .map(|h| h.cell_iter().map(|c| c.content()).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = t
        .row_iter()
        .map(|r| r.cell_iter().map(|c| c.content()).collect())
        .collect();
    let col_width = |i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .chain(header.get(i))
            .flat_map(|c| c.lines())
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0)
            + 3
    };
    let total: usize = (0..header.len()).map(col_width).sum::<usize>() + 1;
    let stacked_table = |cols: &[usize]| {
        let mut part = Table::new();
        part.load_preset(UTF8_FULL_CONDENSED);
        part.set_content_arrangement(ContentArrangement::Dynamic);
        part.set_width(w);
        part.set_header(cols.iter().map(|&i| header[i].clone()));
        for r in &rows {
            part.add_row(cols.iter().map(|&i| {
                let c = Cell::new(r.get(i).cloned().unwrap_or_default());
                if i < keys {
                    c
                } else {
                    c.set_alignment(CellAlignment::Right)
                }
            }));
        }
        part.to_string()
    };
    let keys = keys.min(header.len());
    if total <= usize::from(w) || header.len() <= keys {
        return stacked_table(&(0..header.len()).collect::<Vec<_>>());
    }
    let key_width: usize = (0..keys).map(col_width).sum::<usize>() + 1;
    let mut parts = Vec::new();
    let mut cols: Vec<usize> = (0..keys).collect();
    let mut used = key_width;
    for i in keys..header.len() {
        if cols.len() > keys && used + col_width(i) > usize::from(w) {
            parts.push(stacked_table(&cols));
            cols.truncate(keys);
            used = key_width;
        }
        cols.push(i);
        used += col_width(i);
    }
    parts.push(stacked_table(&cols));
    parts.join("\n")
}

/// The run table, fitted to `width` columns (`None`: every column, no
/// limit). Narrow widths keep the columns that answer "did it work and what
/// did it cost" and drop the breakdown; `--wide` shows everything.
fn run_table(rows: &[RunReport], width: Option<u16>) -> Table {
    // (header, minimum width at which the column is shown)
    const COLUMNS: [(&str, u16); 12] = [
        ("strategy", 0),
        ("blocks", 0),
        ("preserved", 0),
        ("walk ms", 120),
        ("memblock ms", 120),
        ("mm init ms", 120),
        ("next-boot init ms", 0),
        ("baseline ms", 150),
        ("vs baseline", 0),
        ("verified", 100),
        ("lost", 0),
        ("reserved regions", 150),
    ];
    let shown = |i: usize| width.is_none_or(|w| w >= COLUMNS[i].1);
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    if let Some(w) = width {
        t.set_content_arrangement(ContentArrangement::Dynamic);
        t.set_width(w);
    } else {
        t.set_content_arrangement(ContentArrangement::Disabled);
    }
    t.set_header(
        COLUMNS
            .iter()
            .enumerate()
            .filter(|&(i, _)| shown(i))
            .map(|(_, (h, _))| *h),
    );
    for r in rows {
        let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
        // Next-boot memory init: walk + memblock + memmap and buddy.
        let total = r.walk_ms + r.memblock_ms + r.mm_init_ms;
        let cells = [
            Cell::new(match &r.scheme {
                Some(s) => format!("{s} ({})", r.strategy),
                None => r.strategy.to_string(),
            }),
            right(thousands(r.blocks)),
            right(bytes(r.preserved_bytes)),
            right(millis(r.walk_ms)),
            right(millis(r.memblock_ms)),
            right(millis(r.mm_init_ms)),
            right(millis(total)),
            right(millis(r.baseline_mm_init_ms)),
            right(if r.baseline_mm_init_ms > 0.0 {
                format!("{:.2}x", total / r.baseline_mm_init_ms)
            } else {
                "-".to_owned()
            }),
            right(bytes(r.verified_bytes)),
            right(bytes(r.lost_bytes)),
            right(thousands(r.memblock_reserved_regions)),
        ];
        t.add_row(
            cells
                .into_iter()
                .enumerate()
                .filter(|&(i, _)| shown(i))
                .map(|(_, c)| c),
        );
    }
    t
}

fn print_table(
    rows: &[RunReport],
    machine_size: u64,
    memmap: MemmapMode,
    threads: usize,
    wide: bool,
) {
    let width = if wide { None } else { table_width() };
    let mut t = run_table(rows, width);
    println!(
        "live update on a {} machine, struct pages {memmap}, {}",
        bytes(machine_size),
        plural(threads as u64, "CPU")
    );
    println!("{t}");
    if t.column_count() < 12 {
        println!(
            "(some columns hidden to fit {} columns; --wide shows all)",
            width.unwrap_or(0)
        );
    }
    for r in rows {
        if let Some(e) = &r.kho_error {
            println!("{}: booted without KHO: {e}", r.strategy);
        }
        if let Some(e) = &r.luo_error {
            println!("{}: LUO not retrieved: {e}", r.strategy);
        }
    }
    print_luo_files(rows);
    print_damage(rows);
}

/// Salvage (`--on-corruption salvage`): per live update, what was kept and
/// each damaged node with the span reserved for it.
fn print_damage(rows: &[RunReport]) {
    for r in rows.iter().filter(|r| !r.damage.is_empty()) {
        println!(
            "{}: salvage kept {} blocks ({} verified); {} reserved for {}:",
            r.strategy,
            thousands(r.blocks),
            bytes(r.verified_bytes),
            bytes(r.damage_reserved_bytes),
            plural(r.damage.len() as u64, "damaged node")
        );
        for d in &r.damage {
            println!("  {d}");
        }
    }
}

/// One line per LUO file: the bytes of its folios verified (the least of
/// any live update of the run) and lost (the most), each live update
/// retrieving the same files.
fn print_luo_files(rows: &[RunReport]) {
    let Some(first) = rows.first().filter(|r| !r.luo_files.is_empty()) else {
        return;
    };
    println!("LUO files (each live update):");
    for (i, f) in first.luo_files.iter().enumerate() {
        let same: Vec<_> = rows
            .iter()
            .filter_map(|r| r.luo_files.get(i))
            .filter(|g| g.session == f.session && g.token == f.token)
            .collect();
        let verified = same.iter().map(|g| g.bytes_verified).min().unwrap_or(0);
        let lost = same.iter().map(|g| g.bytes_lost).max().unwrap_or(0);
        let missing = if same.len() < rows.len() {
            format!(" (absent from {} live updates)", rows.len() - same.len())
        } else {
            String::new()
        };
        println!(
            "  {} token {} {}: {} folios, {} verified, lost {}{missing}",
            f.session,
            f.token,
            f.compatible,
            thousands(f.folios),
            bytes(verified),
            bytes(lost)
        );
    }
}

fn inspect(a: &InspectArgs) -> Result<()> {
    if JsonOut::is_stdout(a.json.as_ref()) && (a.blocks || a.ranges) {
        return Err(usage(
            "--json without FILE prints the JSON on stdout: it cannot be combined with \
             --blocks or --ranges (use --json FILE)",
        ));
    }
    let json_file = JsonOut::create(a.json.as_ref())?;
    let file = std::fs::File::open(&a.mem).with_context(|| format!("--mem {}", a.mem.display()))?;
    let opened = match a.base {
        Some(base) => MemImage::open_raw(Source::File(file), PhysAddr::new(base)),
        None => {
            let mut magic = [0u8; 4];
            let is_elf = std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 0).is_ok()
                && magic == *b"\x7fELF";
            if !is_elf {
                bail!(
                    "--mem {}: not an ELF core (no ELF magic at file offset 0); for a raw image pass --base ADDR",
                    a.mem.display()
                );
            }
            MemImage::open_elf(Source::File(file))
        }
    };
    let image = opened.with_context(|| format!("--mem {}", a.mem.display()))?;
    let src = match (&a.fdt, a.fdt_phys) {
        (Some(path), _) => FdtSource::File(
            std::fs::read(path).with_context(|| format!("--fdt {}", path.display()))?,
        ),
        (None, Some(p)) => FdtSource::Phys(PhysAddr::new(p)),
        (None, None) => bail!("--fdt FILE or --fdt-phys ADDR is required"),
    };
    let opts = InspectOptions {
        format: a.format,
        ram: a.ram.clone().map(|r| r.0),
        forbidden: a.forbidden.clone().map(|r| r.0).unwrap_or_default(),
        max_blocks: None,
    };
    // --blocks and --ranges stream their lines as the map is read.
    let mut listing = Listing {
        w: std::io::BufWriter::new(std::io::stdout().lock()),
        blocks: a.blocks,
        ranges: a.ranges,
        failed: None,
    };
    if a.blocks || a.ranges {
        let what = if a.blocks {
            "pfn order, walk order"
        } else {
            "start end (exclusive), ascending"
        };
        let header = writeln!(listing.w, "# kho inspect {}: {what}", a.mem.display());
        listing.fail(header);
    }
    let out = kho_lab::inspect_to(&image, &src, &opts, &mut listing);
    if json_file.is_some() {
        JsonOut::write(a.json.as_ref(), json_file, &serde_json::to_string(&out)?)?;
    }
    let written = match listing.failed.take() {
        Some(e) => Err(e),
        None => write_inspection(a, &image, &out, &mut listing.w),
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r.context("writing to stdout")?,
    }
    if !out.errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// The `--blocks` / `--ranges` lines, written as `kho inspect` reads them.
struct Listing<W: Write> {
    w: W,
    blocks: bool,
    ranges: bool,
    /// The first write error: nothing more is written after it.
    failed: Option<std::io::Error>,
}

impl<W: Write> Listing<W> {
    fn fail(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r {
            self.failed.get_or_insert(e);
        }
    }
}

impl<W: Write> kho_lab::InspectSink for Listing<W> {
    fn wants_blocks(&self) -> bool {
        self.blocks && self.failed.is_none()
    }

    fn block(&mut self, b: kho::Block) {
        if self.failed.is_none() {
            let r = writeln!(self.w, "{:#x} {}", b.pfn().as_u64(), b.order().as_u8());
            self.fail(r);
        }
    }

    fn range(&mut self, r: kho::PhysRange) {
        if self.ranges && self.failed.is_none() {
            let res = writeln!(self.w, "{:#x} {:#x}", r.start().as_u64(), r.end().as_u64());
            self.fail(res);
        }
    }
}

fn write_inspection(
    a: &InspectArgs,
    image: &MemImage,
    out: &kho_lab::Inspection,
    w: &mut impl Write,
) -> std::io::Result<()> {
    if JsonOut::is_stdout(a.json.as_ref()) {
        serde_json::to_writer(&mut *w, out)?;
        writeln!(w)?;
    } else if a.blocks || a.ranges {
        for e in &out.errors {
            writeln!(w, "# error {e}")?;
        }
    } else {
        print_inspection(w, image, out, a.folios)?;
    }
    w.flush()
}

fn print_inspection(
    w: &mut impl Write,
    image: &MemImage,
    out: &kho_lab::Inspection,
    folios: usize,
) -> std::io::Result<()> {
    let ram: u64 = image.ram().iter().map(|r| r.size()).sum();
    writeln!(
        w,
        "image          {}, {} of memory",
        plural(image.segments().len() as u64, "segment"),
        bytes(ram)
    )?;
    match &out.fdt {
        Some(f) => writeln!(
            w,
            "root FDT       compatible {:?}, {} bytes{}, preserved-memory-map {:#x}",
            f.compatible,
            f.size,
            out.fdt_phys
                .map_or_else(String::new, |p| format!(" at {p}")),
            f.preserved_memory_map
        )?,
        None => writeln!(w, "root FDT       -")?,
    }
    let v4 = out
        .fdt
        .as_ref()
        .is_some_and(|f| f.compatible.starts_with("kho-v4"));
    writeln!(
        w,
        "format         {}{}",
        out.format.as_deref().unwrap_or("undetermined"),
        if v4 && out.format.as_deref() == Some("kho-v3") {
            " (the radix tree kho-v4 keeps)"
        } else {
            ""
        }
    )?;
    for n in &out.notes {
        writeln!(w, "               ({n})")?;
    }
    writeln!(w, "subnodes       {}", out.subnodes.len())?;
    for s in &out.subnodes {
        let size = s.size.map_or("-".to_owned(), |n| format!("{n} bytes"));
        writeln!(w, "  {:<24} blob {:#x}, {size}", s.name, s.phys)?;
        if s.name == kho::LUO_KHO_ENTRY_NAME
            && let Some(l) = &out.luo
        {
            for line in kho_lab::inspect::luo_tree(l, folios) {
                writeln!(w, "  {line}")?;
            }
        }
    }
    writeln!(
        w,
        "blocks         {} ({} preserved)",
        out.blocks,
        bytes(out.preserved_bytes)
    )?;
    for c in &out.per_order {
        writeln!(w, "  order {:<2}     {}", c.order, c.blocks)?;
    }
    writeln!(w, "ranges         {} coalesced", out.ranges_count)?;
    writeln!(w, "metadata pages {}", out.metadata_pages)?;
    if let Some(o) = &out.orphans {
        writeln!(
            w,
            "orphans        {} blocks ({}){}{}",
            o.blocks,
            bytes(o.bytes),
            if o.first.is_empty() { "" } else { ", first " },
            o.first.join(" ")
        )?;
    }
    if out.errors.is_empty() {
        writeln!(w, "errors         none")?;
    } else {
        writeln!(w, "errors         {}", out.errors.len())?;
        for e in &out.errors {
            writeln!(w, "  {e}")?;
        }
    }
    Ok(())
}

fn read_trace(path: &std::path::Path) -> Result<Trace> {
    Trace::read(path).with_context(|| format!("--trace {}", path.display()))
}

/// Generous upper bound on the bytes one block takes in a trace file (a
/// text line `PFN ORDER` with a 20-digit PFN is 24 bytes; binary is smaller).
const TRACE_BYTES_PER_BLOCK: u64 = 64;

/// Refuses, from its size alone, a trace that cannot fit the machine: a
/// machine of `machine_size` holds at most one block per 4 KiB page, so a
/// file over [`TRACE_BYTES_PER_BLOCK`] bytes per page is not read at all.
fn check_trace_size(path: &std::path::Path, machine_size: u64) -> Result<()> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("--trace {}", path.display()))?
        .len();
    let pages = machine_size / 4096;
    if len > pages.saturating_mul(TRACE_BYTES_PER_BLOCK) {
        return Err(usage(format!(
            "--trace {}: the file is {} but a {} machine holds at most {} blocks \
             (at most {} of trace); use a larger --machine-size",
            path.display(),
            bytes(len),
            bytes(machine_size),
            thousands(pages),
            bytes(pages * TRACE_BYTES_PER_BLOCK)
        )));
    }
    Ok(())
}

fn capture(a: &CaptureArgs) -> Result<()> {
    let pids = if a.all {
        kho_lab::capture::all_pids()?
    } else {
        for pid in &a.pids {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                bail!("--pid {pid}: no process {pid}");
            }
        }
        a.pids.clone()
    };
    let c = kho_lab::capture::capture(&pids, a.vaddr, a.all)?;
    let format = if a.text {
        TraceFormat::Text
    } else {
        TraceFormat::Binary
    };
    c.trace.write(&a.output, format)?;
    let s = c.trace.stats();
    eprintln!(
        "captured {} processes ({} skipped): {} present pages, {} distinct frames ({} in compound pages, {} irregular)",
        c.stats.processes,
        c.stats.skipped,
        c.stats.present_pages,
        c.stats.frames,
        c.stats.compound_frames,
        c.stats.irregular
    );
    let orders: Vec<String> = s.orders.iter().map(|(o, n)| format!("{o}:{n}")).collect();
    eprintln!(
        "{}: {} blocks, {} pages ({}), {} ranges, orders {}",
        a.output.display(),
        s.blocks,
        s.pages,
        bytes(s.bytes),
        s.ranges,
        orders.join(" ")
    );
    Ok(())
}

/// `__touch-pages N`: N freshly allocated pages, each written, so that a
/// test can capture them; the process waits for stdin to close or send a
/// line.
fn touch_pages(pages: u64) -> Result<()> {
    use std::io::{BufRead, Write};
    const PAGE: usize = 4096;
    let n = usize::try_from(pages).context("page count")?;
    // One page more than asked: the N whole pages from the first page
    // boundary are inside the buffer, whatever malloc's alignment.
    let mut buf: Vec<u8> = vec![0; (n + 1) * PAGE];
    for (i, page) in buf.chunks_mut(PAGE).enumerate() {
        if let Some(b) = page.first_mut() {
            *b = 1 + u8::try_from(i % 255).unwrap_or(0);
        }
    }
    let addr = buf.as_ptr() as u64;
    let start = addr.next_multiple_of(PAGE as u64);
    let end = start + pages * PAGE as u64;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {start:#x} {end:#x}")?;
    out.flush()?;
    drop(out);
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    std::hint::black_box(&buf);
    Ok(())
}
