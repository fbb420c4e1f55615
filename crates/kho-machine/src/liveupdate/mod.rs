//! The live update: the old kernel's and the new kernel's main functions,
//! and the exec protocol between the processes.
//!
//! ```text
//!  driver (kho run)                 old kernel (kho __old-kernel)           new kernel (kho __new-kernel)
//!  ---------------                  -----------------------------           -----------------------------
//!  spawn, stdout piped  ──────────▶ create RAM (memfd); boot: memblock,
//!                                   memmap, scratch (kho_reserve_scratch),
//!                                   1 GiB boot folios, memmap_init, buddy;
//!                                   workloads filled + preserved (radix),
//!                                   manifest + root FDT preserved,
//!                                   setup_data + scratch array in scratch;
//!                                   poison the rest
//!                                   exec (same PID) ─────────────────────▶  attach memfd, read setup_data
//!                                                                           -> kho_data -> scratch + manifest,
//!                                                                           verify every block
//!  read one JSON line  ◀─────────────────────────────────────────────────── print RunReport (stdout)
//! ```
//!
//! | module       | what it holds                                                        |
//! |--------------|----------------------------------------------------------------------|
//! | `exec`       | the exec protocol: both processes' argv ([`KernelArgs`]), the exec   |
//! | `old_kernel` | [`old_kernel_boot`] and [`old_kernel_main`]                          |
//! | `luo`        | the LUO sessions: written by the old kernel, retrieved by the new    |
//! | `new_kernel` | [`new_kernel_boot`] and [`new_kernel_main`]                          |
//! | `report`     | the new kernel's one JSON line ([`RunReport`], [`Generation`])       |
//! | `chain`      | chained live updates (`--updates N`): a new kernel preserves what it |
//! |              | restored again and execs the next; scratch reused as Linux does       |
//!
//! ## The contract between the two kernels
//!
//! The old kernel ([`old_kernel_boot`]) leaves, and the new kernel relies
//! on:
//!
//! - **setup_data + scratch array**: one `SETUP_KEXEC_KHO` node and the
//!   `kho_scratch` array right after it ([`crate::write_handover`]), at the
//!   last page of the global scratch area (a kexec segment in scratch);
//!   never poisoned; the new kernel must keep it (reserve it) before it
//!   allocates from scratch.
//! - **`kho_data.fdt_addr/size`**: the KHO root FDT, one 4 KiB page
//!   (`FDT_SIZE`) built by [`kho::KhoFdtBuilder`]: `compatible =
//!   "kho-v4"` (`"kho-v3"` with `--abi kho-v3`), `preserved-memory-map` =
//!   the [`kho::RadixTree`] root.
//! - **subnode `LUO`** (`kho-v4`): `preserved-data` = the `luo_ser` header,
//!   `blob-size` = its size; the memfd checkpoint and each VM guest as LUO
//!   files (`luo`'s module doc: sessions, tokens, what each handler
//!   writes). Their folios are listed in the manifest too (the checksums)
//!   but restored by the LUO path only.
//! - **subnode [`MANIFEST_NODE`]**: `preserved-data` = the manifest blob's
//!   phys, `blob-size` = its byte length ([`crate::Manifest::write`]'s
//!   range).
//! - **preserved (radix tree)**: every workload folio (its order as
//!   allocated: 18, 9, 0, 2..=4; a replayed trace's blocks with their
//!   orders), the manifest's pages (the `kho_preserve_pages` split), the
//!   FDT page (order 0), and (`kho-v4`) the LUO pages: header, chains, FLB
//!   page, handler records, vmalloc chunks and array pages (order 0).
//! - **manifest**: the workload's folios only (LUO files' included), each
//!   with its checksum;
//!   forgotten pages (fault injection) are listed but not preserved (they
//!   must come out lost).
//! - **not keys**: the radix tree's own pages, never preserved, kept from
//!   poison.
//! - **scratch**: `[lowmem, global, node 0]`, sized by Linux's formula from
//!   the old kernel's `RSRV_KERN` reservations (kernel image + memmap),
//!   200 % by default: room for the new kernel's memmap and memblock
//!   arrays; no preserved block overlaps it.
//! - **kernel image**: [`kernel_boot_config`]: both kernels reserve the
//!   same low 1 MiB and image range; nothing there is preserved.
//! - **poison**: every populated page except preserved blocks, tree pages
//!   and the hand-over image holds [`crate::manifest::POISON`].
//!
//! ## The new kernel
//!
//! [`new_kernel_boot`] boots the machine with [`crate::kho`] (kho_populate,
//! kho_memory_init with the strategy, memmap_init, memblock_free_all,
//! kho_restore_folio / kho_restore_pages) and reads the manifest from the
//! [`MANIFEST_NODE`] subnode of the root FDT that `kho_data.fdt_addr` names.

use kho::{PhysAddr, PhysRange};

use crate::arena::ArenaError;
use crate::boot::{BootConfig, BootError};
use crate::kexec::KexecError;
use crate::kho::PeerError;
use crate::manifest::ManifestError;
use crate::scratch::ScratchError;
use crate::workload::WorkloadError;

mod chain;
mod exec;
mod luo;
mod new_kernel;
mod old_kernel;
mod report;

pub use chain::MAX_UPDATES;
pub use exec::{
    ExecError, KernelArgs, NEW_KERNEL_SUBCOMMAND, NewKernelArgs, OLD_KERNEL_SUBCOMMAND,
    OldKernelArgs, parse_abi,
};
pub use luo::{LuoFileReport, LuoFileWritten};
pub use new_kernel::{
    MAX_THREADS, NewKernelConfig, new_kernel_boot, new_kernel_boot_with, new_kernel_main,
};
pub use old_kernel::{
    BeforeExec, DEFAULT_SEED, OldKernelConfig, OldKernelImage, corrupt_handover, early_boot_fits,
    old_kernel_boot, old_kernel_main,
};
pub use report::{Generation, RunReport};

const MIB: u64 = 1 << 20;

/// The KHO subnode of the workload's manifest: `preserved-data` = the
/// manifest blob's physical address, `blob-size` = its length.
pub const MANIFEST_NODE: &str = "kho-run";

/// Errors of the live update.
#[derive(Debug, thiserror::Error)]
pub enum LiveUpdateError {
    /// Creating or attaching RAM failed.
    #[error(transparent)]
    Arena(#[from] ArenaError),
    /// The hand-over could not be written.
    #[error(transparent)]
    Kexec(#[from] KexecError),
    /// The exec, or a process's arguments, failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Scratch could not be reserved.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    /// The manifest failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Simulated memory refused an access.
    #[error("memory: {0}")]
    Mem(#[from] kho::MemError),
    /// The old kernel ran out of (non-scratch) memory.
    #[error("out of memory allocating {size:#x} bytes for {what}")]
    OutOfMemory {
        /// What for.
        what: &'static str,
        /// How much.
        size: u64,
    },
    /// A kernel's boot failed (in the new kernel, a KHO failure only
    /// disables KHO; this is the boot itself failing).
    #[error("boot: {0}")]
    Boot(#[from] BootError),
    /// A workload failed.
    #[error("workload: {0}")]
    Workload(#[from] WorkloadError),
    /// The radix tree refused an operation.
    #[error("radix tree: {0}")]
    Radix(#[from] kho::RadixError),
    /// The LUO sessions could not be written.
    #[error("LUO: {0}")]
    Luo(#[from] kho::WriteError),
    /// The root FDT could not be built.
    #[error("root FDT: {0}")]
    FdtBuild(#[from] kho::FdtBuildError),
    /// The old kernel's hook before the exec failed.
    #[error("before the exec: {0}")]
    BeforeExec(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A peer scheme failed in the old kernel.
    #[error("scheme {scheme}: {source}")]
    Scheme {
        /// The scheme.
        scheme: &'static str,
        /// Why.
        source: PeerError,
    },
}

/// What both kernels reserve at boot on a machine with `ram_bytes` of RAM:
/// the low 1 MiB, and the kernel image at 16 MiB, 16 MiB long on machines
/// of 1 GiB and more, `ram / 64` (2 MiB aligned, at least 2 MiB) on smaller
/// ones so that a 64 MiB test machine keeps room for scratch (sized from
/// the kernel's reservations) and a workload. The new kernel is "loaded"
/// at the same place: the old kernel never preserves memory there.
pub fn kernel_boot_config(ram_bytes: u64) -> BootConfig {
    let size = ((ram_bytes / 64).clamp(2 * MIB, 16 * MIB) / (2 * MIB)) * (2 * MIB);
    let r = |s: u64, e: u64| PhysRange::new(PhysAddr::new(s), PhysAddr::new(e)).unwrap_or_default();
    BootConfig {
        kernel: r(16 * MIB, 16 * MIB + size),
        low_reserve: r(0, MIB),
        memmap: crate::memmap::MemmapMode::Eager,
        threads: 1,
        parallel_memmap_init: false,
    }
}

#[cfg(test)]
mod tests;
