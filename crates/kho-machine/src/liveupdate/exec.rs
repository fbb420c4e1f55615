//! The exec protocol: what crosses each process boundary of a live update,
//! as a command line. [`KernelArgs`] is the one type that builds and parses
//! both processes' argv; the `kho` binary only hands it its arguments.
//!
//! | process                  | argv after the program name                                       |
//! |--------------------------|-------------------------------------------------------------------|
//! | old kernel (driver: run) | `__old-kernel --machine-size N --strategy S [options]`            |
//! | new kernel (the exec)    | `__new-kernel --memfd N --e820 R --setup-data A --strategy S ...` |
//! | next generation (chain)  | the same with `--updates N --generation G+1`, the inherited memfd |
//!
//! Options are `--name value` or `--name=value`; a flag is `--name`.
//!
//! # The kexec
//!
//! The "kexec" is real process replacement ([`kexec_exec`]): the old
//! kernel's process `exec`s the same binary, which boots as the new kernel
//! with the same PID. Exactly three things cross, as they cross a real x86
//! kexec:
//!
//! | what                | how it crosses                                  | x86 counterpart            |
//! |---------------------|-------------------------------------------------|----------------------------|
//! | RAM                 | the memfd, inherited (FD_CLOEXEC cleared): `--memfd N` | the physical memory |
//! | firmware memory map | `--e820 start-end,...` (hex, half-open)         | `boot_params.e820_table`   |
//! | setup_data chain    | `--setup-data 0x<phys>`: the list's head        | `boot_params.hdr.setup_data` |
//!
//! Nothing else crosses: the environment is cleared, every other descriptor
//! is close-on-exec. The new kernel's own boot parameters (`--strategy`,
//! `--scheme`, a chain's `--updates` and `--generation`) are ordinary
//! options. What the setup_data chain holds is
//! [`crate::kexec`]'s.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kho::{KhoVersion, PhysAddr, PhysRange};

use super::old_kernel::DEFAULT_SEED;
use crate::arena::{ArenaError, MemoryLayout, PhysMem};
use crate::kho::{CorruptClass, OnCorruption, Strategy, UnknownCorruptClass, UnknownStrategy};
use crate::memmap::{MemmapMode, UnknownMemmapMode};
use crate::scratch::{ScratchError, ScratchSizing, memparse};
use crate::workload::{UnknownWorkload, WorkloadKind};

/// The hidden subcommand the old kernel runs as.
pub const OLD_KERNEL_SUBCOMMAND: &str = "__old-kernel";
/// The hidden subcommand the new kernel boots with.
pub const NEW_KERNEL_SUBCOMMAND: &str = "__new-kernel";

/// The `--scheme` of our own tracker.
const OURS: &str = "kho";

/// Errors of the exec protocol: a malformed command line, or the exec
/// itself.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A malformed argument.
    #[error("bad {what} argument {value:?}")]
    BadArg {
        /// Which argument.
        what: &'static str,
        /// Its text.
        value: String,
    },
    /// An option this process does not take.
    #[error("unknown argument {0:?}")]
    UnknownArg(String),
    /// A required option is missing.
    #[error("missing --{0}")]
    MissingArg(&'static str),
    /// An unknown `--strategy`.
    #[error(transparent)]
    Strategy(#[from] UnknownStrategy),
    /// An unknown memmap mode.
    #[error(transparent)]
    Memmap(#[from] UnknownMemmapMode),
    /// An unknown `--workload`.
    #[error(transparent)]
    Workload(#[from] UnknownWorkload),
    /// A bad `--kho-scratch`.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    /// An unknown `--on-corruption`.
    #[error(transparent)]
    OnCorruption(#[from] kho::UnknownOnCorruption),
    /// An unknown `--corrupt`.
    #[error(transparent)]
    Corrupt(#[from] UnknownCorruptClass),
    /// The inherited memfd could not be attached.
    #[error("attaching the inherited memfd {fd}: {source}")]
    Attach {
        /// The descriptor number.
        fd: RawFd,
        /// Why.
        source: ArenaError,
    },
    /// A system call of the exec path failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// One kernel process's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelArgs {
    /// `__old-kernel`.
    Old(OldKernelArgs),
    /// `__new-kernel`.
    New(NewKernelArgs),
}

impl KernelArgs {
    /// The arguments after the program name: the subcommand, then the
    /// options.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out = Options::default();
        match self {
            Self::Old(a) => {
                out.arg(OLD_KERNEL_SUBCOMMAND);
                a.write(&mut out);
            }
            Self::New(a) => {
                out.arg(NEW_KERNEL_SUBCOMMAND);
                a.write(&mut out);
            }
        }
        out.0
    }

    /// Parses the arguments after the program name: `None` if they do not
    /// start with a kernel subcommand (a user's command line).
    pub fn parse<I>(args: I) -> Result<Option<Self>, ExecError>
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        let mut args = args.into_iter().map(Into::into);
        let Some(first) = args.next() else {
            return Ok(None);
        };
        let options = || read_options(args, &["phases", "parallel-memmap-init"]);
        Ok(match first.to_str() {
            Some(OLD_KERNEL_SUBCOMMAND) => Some(Self::Old(OldKernelArgs::read(options()?)?)),
            Some(NEW_KERNEL_SUBCOMMAND) => Some(Self::New(NewKernelArgs::read(options()?)?)),
            _ => None,
        })
    }
}

/// The old kernel's command line: the live update to prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldKernelArgs {
    /// `--machine-size`: bytes of the machine ([`MemoryLayout::pc`]).
    pub machine_size: u64,
    /// `--strategy`: the new kernel's restore strategy.
    pub strategy: Strategy,
    /// `--memmap`: the new kernel's struct-page configuration.
    pub memmap: MemmapMode,
    /// `--threads`: the new kernel's CPUs (deferred init's padata split).
    pub threads: usize,
    /// `--parallel-memmap-init`: ours, `memmap_init` over the threads too.
    pub parallel_memmap_init: bool,
    /// `--workload`: the preset (scaled to the machine).
    pub workload: WorkloadKind,
    /// `--memfd-bytes`: the checkpoint's size instead of the preset's.
    pub memfd_bytes: Option<u64>,
    /// `--vm-1g-folios`: 1 GiB folios of VM guest 0 instead of the preset's.
    pub vm_1g_folios: Option<u64>,
    /// `--vm-2m-folios`: 2 MiB folios of VM guest 1 instead of the preset's.
    pub vm_2m_folios: Option<u64>,
    /// `--forget-pages`: order-0 pages written and listed in the manifest
    /// but not preserved (fault injection).
    pub forget_pages: u64,
    /// `--seed`: of the workloads and the data pattern.
    pub seed: u64,
    /// `--phases`: print the old kernel's phase times and sizes on stderr.
    pub print_phases: bool,
    /// `--kho-scratch`: `kho_scratch=`.
    pub kho_scratch: ScratchSizing,
    /// `--scheme`: the tracker design's name (`kho`: ours).
    pub scheme: String,
    /// `--trace`: a trace file to replay instead of the workload.
    pub trace: Option<PathBuf>,
    /// `--dump-core`: write the memory (ELF core) and FILE.fdt just before
    /// the exec.
    pub dump_core: Option<PathBuf>,
    /// `--abi`: the handover the old kernel writes ([`parse_abi`]).
    pub abi: KhoVersion,
    /// `--on-corruption`: what the new kernel does with a broken handover.
    pub on_corruption: OnCorruption,
    /// `--corrupt`: fault injection, one byte of the handover flipped
    /// before the exec ([`crate::inject_corruption`]).
    pub corrupt: Option<CorruptClass>,
    /// `--updates`: live updates of the chain (1: one; see
    /// the `chain` module).
    pub updates: u32,
}

impl OldKernelArgs {
    /// A machine of `machine_size` restored with `strategy`, everything
    /// else the default: the default workload and seed, nothing forgotten,
    /// `kho_scratch=200%`, our tracker.
    pub fn new(machine_size: u64, strategy: Strategy) -> Self {
        Self {
            machine_size,
            strategy,
            memmap: MemmapMode::Eager,
            threads: 1,
            parallel_memmap_init: false,
            workload: WorkloadKind::Default,
            memfd_bytes: None,
            vm_1g_folios: None,
            vm_2m_folios: None,
            forget_pages: 0,
            seed: DEFAULT_SEED,
            print_phases: false,
            kho_scratch: ScratchSizing::default(),
            scheme: OURS.to_owned(),
            trace: None,
            dump_core: None,
            abi: KhoVersion::V4,
            on_corruption: OnCorruption::Reject,
            corrupt: None,
            updates: 1,
        }
    }

    fn write(&self, out: &mut Options) {
        out.opt("machine-size", self.machine_size.to_string());
        out.opt("strategy", self.strategy.as_str());
        if self.memmap != MemmapMode::Eager {
            out.opt("memmap", self.memmap.as_str());
        }
        if self.threads != 1 {
            out.opt("threads", self.threads.to_string());
        }
        if self.parallel_memmap_init {
            out.arg("--parallel-memmap-init");
        }
        out.opt("forget-pages", self.forget_pages.to_string());
        out.opt("scheme", &self.scheme);
        out.opt("workload", self.workload.as_str());
        if let Some(t) = &self.trace {
            out.opt("trace", t);
        }
        if let Some(p) = &self.dump_core {
            out.opt("dump-core", p);
        }
        let counts = [
            ("memfd-bytes", self.memfd_bytes),
            ("vm-1g-folios", self.vm_1g_folios),
            ("vm-2m-folios", self.vm_2m_folios),
        ];
        for (name, v) in counts {
            if let Some(v) = v {
                out.opt(name, v.to_string());
            }
        }
        if self.seed != DEFAULT_SEED {
            out.opt("seed", self.seed.to_string());
        }
        if self.kho_scratch != ScratchSizing::default() {
            out.opt("kho-scratch", self.kho_scratch.to_string());
        }
        if self.print_phases {
            out.arg("--phases");
        }
        if self.abi != KhoVersion::V4 {
            out.opt("abi", self.abi.compatible());
        }
        if self.on_corruption != OnCorruption::Reject {
            out.opt("on-corruption", self.on_corruption.as_str());
        }
        if let Some(c) = self.corrupt {
            out.opt("corrupt", c.as_str());
        }
        if self.updates != 1 {
            out.opt("updates", self.updates.to_string());
        }
    }

    fn read(options: Vec<(String, OsString)>) -> Result<Self, ExecError> {
        let mut size = None;
        let mut strategy = None;
        let mut a = Self::new(0, Strategy::PerBlock);
        for (name, v) in options {
            match name.as_str() {
                "machine-size" => size = Some(parse_size("machine-size", &v)?),
                "strategy" => strategy = Some(text("strategy", &v)?.parse()?),
                "memmap" => a.memmap = text("memmap", &v)?.parse()?,
                "threads" => a.threads = parse_threads(&v)?,
                "parallel-memmap-init" => a.parallel_memmap_init = true,
                "workload" => a.workload = text("workload", &v)?.parse()?,
                "memfd-bytes" => a.memfd_bytes = Some(parse_size("memfd-bytes", &v)?),
                "vm-1g-folios" => a.vm_1g_folios = Some(parse_number("vm-1g-folios", &v)?),
                "vm-2m-folios" => a.vm_2m_folios = Some(parse_number("vm-2m-folios", &v)?),
                "forget-pages" => a.forget_pages = parse_number("forget-pages", &v)?,
                "seed" => a.seed = parse_number("seed", &v)?,
                "phases" => a.print_phases = true,
                "kho-scratch" => a.kho_scratch = text("kho-scratch", &v)?.parse()?,
                "scheme" => text("scheme", &v)?.clone_into(&mut a.scheme),
                "trace" => a.trace = Some(v.into()),
                "dump-core" => a.dump_core = Some(v.into()),
                "abi" => a.abi = parse_abi(text("abi", &v)?)?,
                "on-corruption" => a.on_corruption = text("on-corruption", &v)?.parse()?,
                "corrupt" => a.corrupt = Some(text("corrupt", &v)?.parse()?),
                "updates" => a.updates = parse_updates("updates", &v)?,
                _ => return Err(ExecError::UnknownArg(format!("--{name}"))),
            }
        }
        a.machine_size = size.ok_or(ExecError::MissingArg("machine-size"))?;
        a.strategy = strategy.ok_or(ExecError::MissingArg("strategy"))?;
        Ok(a)
    }
}

/// `--abi`: `kho-v4` (the default: root `kho-v4`, the scenario's files as
/// LUO sessions) or `kho-v3` (root `kho-v3`, every folio preserved
/// directly).
pub fn parse_abi(s: &str) -> Result<KhoVersion, ExecError> {
    match KhoVersion::from_compatible(s) {
        Some(v @ (KhoVersion::V3 | KhoVersion::V4)) => Ok(v),
        _ => Err(ExecError::BadArg {
            what: "abi (kho-v3, kho-v4)",
            value: s.to_owned(),
        }),
    }
}

/// The new kernel's command line: what crossed the exec, and its own boot
/// parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKernelArgs {
    /// `--memfd`: the inherited memfd's descriptor number.
    pub memfd: RawFd,
    /// `--e820`: the firmware memory map.
    pub e820: MemoryLayout,
    /// `--setup-data`: head of the setup_data list (0: none).
    pub setup_data: PhysAddr,
    /// `--strategy`: the restore strategy.
    pub strategy: Strategy,
    /// `--memmap`: the struct-page configuration of this kernel.
    pub memmap: MemmapMode,
    /// `--threads`: this kernel's CPUs.
    pub threads: usize,
    /// `--parallel-memmap-init`: ours, `memmap_init` over the threads.
    pub parallel_memmap_init: bool,
    /// `--scheme`: the tracker design the old kernel handed over with
    /// (`kho`: ours).
    pub scheme: String,
    /// `--on-corruption`: what to do with a broken handover (`reject`,
    /// Linux's, or ours, `salvage`).
    pub on_corruption: OnCorruption,
    /// `--updates`: live updates of the chain (1: this kernel is the only
    /// new kernel).
    pub updates: u32,
    /// `--generation`: which of them this kernel is, 1-based.
    pub generation: u32,
}

impl NewKernelArgs {
    /// The new kernel of `mem` (its memfd and memory map), the setup_data
    /// list at `setup_data`, restored with `strategy` from a handover
    /// written by `scheme` (`None`: ours).
    pub fn new(
        mem: &PhysMem,
        setup_data: PhysAddr,
        strategy: Strategy,
        scheme: Option<&str>,
    ) -> Self {
        Self {
            memfd: mem.fd().as_raw_fd(),
            e820: mem.layout().clone(),
            setup_data,
            strategy,
            memmap: MemmapMode::Eager,
            threads: 1,
            parallel_memmap_init: false,
            scheme: scheme.unwrap_or(OURS).to_owned(),
            on_corruption: OnCorruption::Reject,
            updates: 1,
            generation: 1,
        }
    }

    fn write(&self, out: &mut Options) {
        out.opt("memfd", self.memfd.to_string());
        out.opt("e820", format_e820(&self.e820));
        out.opt("setup-data", hex(self.setup_data.as_u64()));
        out.opt("strategy", self.strategy.as_str());
        if self.memmap != MemmapMode::Eager {
            out.opt("memmap", self.memmap.as_str());
        }
        if self.threads != 1 {
            out.opt("threads", self.threads.to_string());
        }
        if self.parallel_memmap_init {
            out.arg("--parallel-memmap-init");
        }
        if self.scheme != OURS {
            out.opt("scheme", &self.scheme);
        }
        if self.on_corruption != OnCorruption::Reject {
            out.opt("on-corruption", self.on_corruption.as_str());
        }
        if self.updates != 1 {
            out.opt("updates", self.updates.to_string());
            out.opt("generation", self.generation.to_string());
        }
    }

    fn read(options: Vec<(String, OsString)>) -> Result<Self, ExecError> {
        let (mut memfd, mut e820, mut setup_data, mut strategy) = (None, None, None, None);
        let mut scheme = OURS.to_owned();
        let mut on_corruption = OnCorruption::Reject;
        let mut memmap = MemmapMode::Eager;
        let (mut threads, mut parallel_memmap_init) = (1, false);
        let (mut updates, mut generation) = (1, 1);
        for (name, v) in options {
            match name.as_str() {
                "memfd" => {
                    let s = text("memfd", &v)?;
                    let fd = s.parse::<RawFd>().ok().filter(|fd| *fd >= 0);
                    memfd = Some(fd.ok_or_else(|| bad("memfd", s))?);
                }
                "e820" => e820 = Some(parse_e820(text("e820", &v)?)?),
                "setup-data" => setup_data = Some(parse_phys(text("setup-data", &v)?)?),
                "strategy" => strategy = Some(text("strategy", &v)?.parse()?),
                "scheme" => text("scheme", &v)?.clone_into(&mut scheme),
                "on-corruption" => on_corruption = text("on-corruption", &v)?.parse()?,
                "memmap" => memmap = text("memmap", &v)?.parse()?,
                "threads" => threads = parse_threads(&v)?,
                "parallel-memmap-init" => parallel_memmap_init = true,
                "updates" => updates = parse_updates("updates", &v)?,
                "generation" => generation = parse_updates("generation", &v)?,
                _ => return Err(ExecError::UnknownArg(format!("--{name}"))),
            }
        }
        if generation > updates {
            return Err(bad("generation (above --updates)", &generation.to_string()));
        }
        Ok(Self {
            updates,
            generation,
            memmap,
            threads,
            parallel_memmap_init,
            memfd: memfd.ok_or(ExecError::MissingArg("memfd"))?,
            e820: e820.ok_or(ExecError::MissingArg("e820"))?,
            setup_data: setup_data.ok_or(ExecError::MissingArg("setup-data"))?,
            strategy: strategy.ok_or(ExecError::MissingArg("strategy"))?,
            scheme,
            on_corruption,
        })
    }

    /// The scheme, `None` for ours.
    pub fn peer_scheme(&self) -> Option<&str> {
        Some(self.scheme.as_str()).filter(|s| *s != OURS)
    }

    /// Maps the inherited memfd as this kernel's RAM.
    ///
    /// Safe Rust cannot adopt a bare descriptor number, so the new kernel
    /// reopens it through `/proc/self/fd/N` (same memfd, a new open file
    /// description); the inherited number stays open and unused. The link
    /// must name a memfd.
    pub fn attach(&self) -> Result<PhysMem, ExecError> {
        let fd = self.memfd;
        let link = format!("/proc/self/fd/{fd}");
        let attach = |source| ExecError::Attach { fd, source };
        let io = |what, source| attach(ArenaError::Io { what, source });
        let target = std::fs::read_link(&link).map_err(|e| io("readlink /proc/self/fd", e))?;
        if !target.to_string_lossy().starts_with("/memfd:") {
            return Err(bad("memfd (not a memfd)", &target.to_string_lossy()));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&link)
            .map_err(|e| io("reopen memfd", e))?;
        PhysMem::attach(OwnedFd::from(file), self.e820.clone()).map_err(attach)
    }
}

/// kexec: replaces this process with `image` booted as the new kernel of
/// `args` (whose memfd is `mem`'s).
///
/// Clears FD_CLOEXEC on the memfd so it survives the exec, clears the
/// environment, and passes [`NEW_KERNEL_SUBCOMMAND`] and `args`. Standard
/// streams are inherited. Returns only if the exec failed.
pub(crate) fn kexec_exec(mem: &PhysMem, image: &Path, args: &NewKernelArgs) -> ExecError {
    let fd = mem.fd();
    if let Err(e) = rustix::io::fcntl_setfd(fd.as_fd(), rustix::io::FdFlags::empty()) {
        return ExecError::Io {
            what: "clear FD_CLOEXEC on the memfd",
            source: e.into(),
        };
    }
    exec_new_kernel(image, args)
}

/// The exec itself: `image` as the new kernel of `args`, whose `--memfd`
/// must already be open without FD_CLOEXEC (a chained generation passes
/// on the descriptor it inherited, the `chain` module). Returns only if the
/// exec failed.
pub(crate) fn exec_new_kernel(image: &Path, args: &NewKernelArgs) -> ExecError {
    let source = Command::new(image)
        .env_clear()
        .args(KernelArgs::New(args.clone()).to_args())
        .exec();
    ExecError::Io {
        what: "exec the new kernel",
        source,
    }
}

// ---------------------------------------------------------------------------
// Options

/// An argv under construction.
#[derive(Default)]
struct Options(Vec<OsString>);

impl Options {
    fn arg(&mut self, a: impl AsRef<OsStr>) {
        self.0.push(a.as_ref().to_owned());
    }

    fn opt(&mut self, name: &str, value: impl AsRef<OsStr>) {
        self.arg(format!("--{name}"));
        self.arg(value);
    }
}

/// The `(name, value)` pairs of `args`: `--name value`, `--name=value`,
/// or a bare `--flag` of `flags` (its value empty).
fn read_options(
    args: impl Iterator<Item = OsString>,
    flags: &[&str],
) -> Result<Vec<(String, OsString)>, ExecError> {
    let mut args = args;
    let mut out = Vec::new();
    while let Some(a) = args.next() {
        let s = text("option", &a)?;
        let name = s
            .strip_prefix("--")
            .ok_or_else(|| ExecError::UnknownArg(s.to_owned()))?;
        out.push(match name.split_once('=') {
            Some((n, v)) => (n.to_owned(), OsString::from(v)),
            None if flags.contains(&name) => (name.to_owned(), OsString::new()),
            None => {
                let v = args.next().ok_or(ExecError::BadArg {
                    what: "option without a value",
                    value: s.to_owned(),
                })?;
                (name.to_owned(), v)
            }
        });
    }
    Ok(out)
}

fn bad(what: &'static str, value: &str) -> ExecError {
    ExecError::BadArg {
        what,
        value: value.to_owned(),
    }
}

/// `v` as UTF-8.
fn text<'a>(what: &'static str, v: &'a OsStr) -> Result<&'a str, ExecError> {
    v.to_str().ok_or_else(|| bad(what, &v.to_string_lossy()))
}

/// `0x` + lowercase hex.
fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// Parses a `0x`-prefixed hex or a decimal u64.
fn parse_u64(what: &'static str, s: &str) -> Result<u64, ExecError> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).map_err(|_| bad(what, s)),
        None => s.parse().map_err(|_| bad(what, s)),
    }
}

/// `--updates`, `--generation`: 1..=[`super::MAX_UPDATES`].
fn parse_updates(what: &'static str, v: &OsStr) -> Result<u32, ExecError> {
    let s = text(what, v)?;
    s.parse::<u32>()
        .ok()
        .filter(|n| (1..=super::MAX_UPDATES).contains(n))
        .ok_or_else(|| bad(what, s))
}

/// `--threads`: 1..=[`super::MAX_THREADS`] CPUs.
fn parse_threads(v: &OsStr) -> Result<usize, ExecError> {
    let s = text("threads", v)?;
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=usize::from(super::MAX_THREADS)).contains(n))
        .ok_or_else(|| bad("threads", s))
}

fn parse_number(what: &'static str, v: &OsStr) -> Result<u64, ExecError> {
    parse_u64(what, text(what, v)?)
}

/// A size: bytes, or with a K/M/G/T suffix ([`memparse`]).
fn parse_size(what: &'static str, v: &OsStr) -> Result<u64, ExecError> {
    let s = text(what, v)?;
    memparse(s).ok_or_else(|| bad(what, s))
}

/// A physical address argument (`0x...` or decimal).
pub(crate) fn parse_phys(s: &str) -> Result<PhysAddr, ExecError> {
    parse_u64("physical address", s).map(PhysAddr::new)
}

/// The firmware memory map as the `--e820` argument: `start-end` pairs in
/// hex, half-open, comma separated, ascending.
fn format_e820(layout: &MemoryLayout) -> String {
    layout
        .ram()
        .iter()
        .map(|r| format!("{}-{}", hex(r.start().as_u64()), hex(r.end().as_u64())))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses [`format_e820`]'s output back into a validated layout.
pub(crate) fn parse_e820(s: &str) -> Result<MemoryLayout, ExecError> {
    let mut ram = Vec::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').ok_or_else(|| bad("e820", s))?;
        let (a, b) = (parse_u64("e820", a)?, parse_u64("e820", b)?);
        ram.push(PhysRange::new(PhysAddr::new(a), PhysAddr::new(b)).map_err(|_| bad("e820", s))?);
    }
    MemoryLayout::from_ranges(ram).map_err(|_| bad("e820", s))
}

#[cfg(test)]
mod tests;
