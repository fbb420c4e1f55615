//! # kho-machine — a simulated machine whose boot-time memory management costs what Linux's costs
//!
//! | module       | what it holds                                                        |
//! |--------------|----------------------------------------------------------------------|
//! | [`arena`]    | physical memory: a shared memfd mapping laid out by a RAM map        |
//! | [`memblock`] | the boot-time allocator: Linux's sorted region arrays, scans, merges |
//! | [`memmap`]   | `struct page`: 64 bytes per page, kept in the simulated memory       |
//! | [`buddy`]    | the zone's `free_area[order]` lists, linked through struct pages     |
//! | [`boot`]     | the boot phases tying them together ([`Machine`])                    |
#![warn(missing_docs)]

pub mod arena;
pub mod boot;
pub mod buddy;
pub mod memblock;
pub mod memmap;

pub use arena::{ArenaError, MemoryLayout, PhysMem};
pub use boot::{BootError, Machine};
pub use buddy::{Buddy, BuddyError, MAX_PAGE_ORDER, NR_PAGE_ORDERS, Zone};
pub use memblock::{
    Memblock, MemblockError, MemblockFlags, MemblockRegion, MemblockStats, MemblockType,
};
pub use memmap::{MemMap, MemmapError, StructPage};
