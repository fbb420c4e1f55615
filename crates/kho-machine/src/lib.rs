//! # kho-machine — a simulated machine whose boot-time memory management costs what Linux's costs
//!
//! | module         | what it holds                                                            |
//! |----------------|--------------------------------------------------------------------------|
//! | [`arena`]      | physical memory: a shared memfd mapping laid out by a RAM map            |
//! | [`physio`]     | byte copies in and out of physical memory                                |
//! | [`memblock`]   | the boot-time allocator: Linux's sorted region arrays, scans, merges     |
//! | [`memmap`]     | `struct page`: 64 bytes per page, kept in the simulated memory           |
//! | [`buddy`]      | the zone's `free_area[order]` lists, linked through struct pages         |
//! | [`boot`]       | the boot phases tying them together ([`Machine`])                        |
//! | [`kho`]        | KHO in the new kernel: kho_populate, kho_memory_init, the restore strategies, kho_restore_folio/pages |
//! | [`kexec`]      | the hand-over: setup_data / kho_data / kho_scratch, the exec, its args   |
//! | [`scratch`]    | scratch areas sized like Linux's `kho_reserve_scratch`                   |
//! | [`manifest`]   | the workload's manifest blob, data patterns, poison and verification     |
//! | [`workload`]   | the old kernel's workloads: VM guests, memfd checkpoint, preservation    |
//! | [`liveupdate`] | the old and the new kernel's main functions                              |
#![warn(missing_docs)]
// Unsafe code lives in `arena` only (the mapping of the memfd).
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod arena;
pub mod boot;
pub mod buddy;
pub mod kexec;
pub mod kho;
pub mod liveupdate;
pub mod manifest;
pub mod memblock;
pub mod memmap;
pub mod physio;
pub mod scratch;
pub mod workload;

#[cfg(test)]
mod testing;

pub use arena::{ArenaError, MemoryLayout, PhysMem};
pub use boot::{BootError, Machine};
pub use buddy::{Buddy, BuddyError, MAX_PAGE_ORDER, NR_PAGE_ORDERS, Zone};
pub use kexec::{
    KexecError, KhoHandover, NewKernelArgs, kexec_exec, read_setup_data, write_handover,
};
pub use kho::{
    Kho, KhoError, KhoIn, KhoMemoryInitStats, kho_memory_init, kho_populate, kho_restore_folio,
    kho_restore_pages,
};
pub use liveupdate::{LiveUpdateError, NewKernelConfig, OldKernelConfig, RunReport, Strategy};
pub use manifest::{Checksum, Manifest, ManifestEntry, ManifestError};
pub use memblock::{
    Memblock, MemblockError, MemblockFlags, MemblockRegion, MemblockStats, MemblockType,
};
pub use memmap::{MemMap, MemmapError, StructPage};
pub use scratch::{ScratchAreas, ScratchError, ScratchSizing};
pub use workload::{Scenario, WorkloadError};
