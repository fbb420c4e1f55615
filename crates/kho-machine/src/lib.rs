//! # kho-machine — a simulated machine whose boot-time memory management costs what Linux's costs
//!
//! Read in this order (each module opens with its own overview):
//!
//! | module       | what it holds                                                         |
//! |--------------|-----------------------------------------------------------------------|
//! | `arena`      | physical memory: a shared memfd mapping laid out by a RAM map         |
//! | `physio`     | byte copies in and out of physical memory                             |
//! | `memblock`   | the boot-time allocator: Linux's sorted region arrays, scans, merges  |
//! | `memmap`     | `struct page`: 64 bytes per page, kept in the simulated memory        |
//! | `buddy`      | the zone's `free_area[order]` lists, linked through struct pages      |
//! | `boot`       | the boot phases tying them together ([`Machine`])                     |
//! | `scratch`    | scratch areas sized like Linux's `kho_reserve_scratch`                |
//! | `manifest`   | the workload's manifest blob, data patterns, poison and verification  |
//! | `preserve`   | the old kernel's KHO: the tree's memory, preserving folios            |
//! | `workload`   | the old kernel's workloads: VM guests, memfd checkpoint, replay       |
//! | `kexec`      | the x86 hand-over in memory: setup_data, kho_data, kho_scratch        |
//! | `kho`        | the new kernel's KHO: populate, memory init (the strategies), restore |
//! | `liveupdate` | both kernels' main functions and the exec protocol between them      |
//!
//! The modules are private; what other crates use is re-exported here,
//! once.
#![warn(missing_docs)]
// Unsafe code lives in `arena` only (the mapping of the memfd).
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod arena;
mod boot;
mod buddy;
mod kexec;
mod kho;
mod liveupdate;
mod manifest;
mod memblock;
mod memmap;
mod physio;
mod preserve;
mod scratch;
mod workload;

#[cfg(test)]
mod testing;

pub use arena::{ArenaError, MemoryLayout, PhysMem};
pub use boot::{BootConfig, BootError, Machine};
pub use buddy::{Buddy, BuddyError, MAX_PAGE_ORDER};
pub use kexec::{KexecError, KhoHandover, read_setup_data, write_handover};
pub use kho::{
    CorruptClass, Corruption, DamageReport, OnCorruption, SalvageMap, UnknownCorruptClass,
    inject_corruption, kho_populate_with,
};
pub use kho::{
    Extent, KHO_PAGE_MAGIC, Kho, KhoError, KhoIn, KhoMemoryInitStats, KhoPageInfo, MachineSink,
    MapSummary, PeerError, PeerFdt, PeerHandover, PeerScheme, PreservedMap, RadixMap,
    RadixMapError, Recorder, ReservationSink, ReserveError, Strategy, UnknownStrategy,
    kho_memory_init, kho_populate, kho_restore_folio, kho_restore_pages, reserve_preserved,
};
pub use liveupdate::{
    BeforeExec, DEFAULT_SEED, ExecError, Generation, KernelArgs, LiveUpdateError, LuoFileReport,
    LuoFileWritten, MANIFEST_NODE, MAX_THREADS, MAX_UPDATES, NEW_KERNEL_SUBCOMMAND, NewKernelArgs,
    NewKernelConfig, OLD_KERNEL_SUBCOMMAND, OldKernelArgs, OldKernelConfig, OldKernelImage,
    RunReport, early_boot_fits, kernel_boot_config, new_kernel_boot, new_kernel_main,
    old_kernel_boot, old_kernel_main, parse_abi,
};
pub use liveupdate::{corrupt_handover, new_kernel_boot_with};
pub use manifest::{Checksum, Manifest, ManifestEntry, ManifestError};
pub use memblock::{Memblock, MemblockError, MemblockFlags, MemblockRegion, MemblockType};
pub use memmap::{MemMap, MemmapError, MemmapInitStats, MemmapMode, StructPage, UnknownMemmapMode};
pub use preserve::{PreserveError, Preserver, TreeAlloc};
pub use scratch::{ScratchAreas, ScratchError, ScratchSizing, memparse};
pub use workload::{Scenario, UnknownWorkload, WorkloadError, WorkloadKind};
