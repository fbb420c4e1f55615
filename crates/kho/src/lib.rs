//! # kho — Kexec HandOver memory preservation, byte-compatible with Linux
//!
//! A live update kexecs into a new kernel while some memory survives. The old
//! kernel records every preserved folio (a physical address and an order) in a
//! tracker; the new kernel must find them all before it allocates, keep them
//! away from its allocators and give each folio back with its order.
//!
//! This crate is the reusable core: `no_std`, free of `unsafe`, usable by a
//! Rust kernel, hypervisor or boot loader to produce or consume a Linux KHO
//! handover.
//!
//! | module      | what it holds                                                     |
//! |-------------|-------------------------------------------------------------------|
//! | [`addr`]    | address newtypes: [`PhysAddr`], [`Pfn`], [`Order`], [`Block`]     |
//! | [`key`]     | the radix key of a block and its table indices                    |
//! | [`mem`]     | how the core reaches physical memory: page allocation and mapping |
//! | [`radix`]   | the writer: the lock-free radix tree (kho-v2/v3 format)           |
//! | [`walk`]    | the reader: a validating walk of an untrusted radix tree          |
//! | [`coalesce`]| the maximal preserved ranges, streamed from the tree              |
//! | [`fdt`]     | the KHO root FDT (compatible, preserved-memory-map, subnodes)     |
//! | [`v1`]      | the older kho-v1 chunk list (read side)                           |
//! | [`compat`]  | compound compatible strings (`kho-v4;radix-v1;vmalloc-v1`)        |
//! | [`phys`]    | bounded reads of untrusted memory; the page writer                |
//! | [`tracker`] | what the tracker preserved, as the structure readers ask it       |
//! | [`block`]   | KHO serialization blocks (`block-v1` chains)                      |
//! | [`vmalloc`] | preserved vmalloc areas (`vmalloc-v1` descriptor and chunks)      |
//! | [`luo`]     | the LUO handover: header, sessions, files, FLBs, memfd, guest_memfd, kvm |
//! | [`memblock`]| memblock's `reserve_mem` subnode (`memblock-v1`)                  |
//! | [`crosscheck`] | cross-layer validation: claims against the tracker, orphans   |
//!
//! Physical memory is reached only through the small traits of [`mem`], so the
//! same code runs over a simulator's arena and over a real direct map.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod addr;
pub mod coalesce;
pub mod fdt;
pub mod key;
pub mod mem;
pub mod radix;
pub mod v1;
pub mod walk;

#[cfg(feature = "alloc")]
pub use addr::merge_ranges;
pub use addr::{AddrError, Block, Order, PAGE_SHIFT, PAGE_SIZE, Pfn, PhysAddr, PhysRange};
pub use coalesce::{Coalesce, CoalesceSummary};
#[cfg(feature = "alloc")]
pub use fdt::{FdtBuildError, KhoFdtBuilder};
pub use fdt::{FdtError, FdtName, KHO_FDT_MAX_SIZE, KhoFdt, KhoSubnode, KhoSubnodes, KhoVersion};
pub use key::{KeyError, LeafBit, Level, RadixKey, TableIndex};
#[cfg(feature = "alloc")]
pub use mem::VecArena;
pub use mem::{AtomicPage, MemError, PageAlloc, PageMap, RamMap, RamMapError};
pub use radix::{CompactStats, Cursor, PageSplit, RadixError, RadixStats, RadixTree, split_pages};
#[cfg(feature = "alloc")]
pub use v1::write_v1;
pub use v1::{
    BitmapSize, KHOSER_BITMAP_SIZE, KhoserMemBitmapPtr, KhoserMemChunk, KhoserMemChunkHdr,
    V1Blocks, V1Error, V1Reader,
};
#[cfg(feature = "alloc")]
pub use walk::NodeSet;
pub use walk::{
    BlockRun, NodeBudget, ORDERS, OrderCounts, OrderSet, RadixReader, RunBlocks, VisitedFull,
    VisitedSet, Walk, WalkError,
};

// ---- kho-v4 / LUO (issue 16): modules and re-exports --------------------
#[doc(hidden)]
pub mod abi_fuzz;
pub mod block;
pub mod compat;
#[cfg(feature = "alloc")]
pub mod crosscheck;
pub mod luo;
pub mod memblock;
pub mod phys;
pub mod tracker;
pub mod vmalloc;

pub use block::{BlockChain, BlockEntry, BlockError, KhoBlockHeaderSer};
pub use compat::{CompatError, Compound};
#[cfg(feature = "alloc")]
pub use crosscheck::{Claim, ClaimKind, CrossCheck, CrossReport, Expect, Finding, Orphans};
pub use fdt::{KhoCompat, KhoSubCompat};
#[cfg(feature = "alloc")]
pub use luo::state::{AreaPages, FileData, FileState, LuoState, SessionState};
#[cfg(feature = "alloc")]
pub use luo::writer::{
    FolioSpec, GuestMemfdSpec, KvmSpec, LuoBuilder, LuoWritten, MemfdSpec, RecordWritten,
    write_guest_memfd, write_kvm, write_memfd,
};
pub use luo::{
    FileContent, Flb, FolioEntry, GuestMemfdFile, HandlerError, HandlerKind, KvmFile,
    LUO_KHO_ENTRY_NAME, LuoCompat, LuoError, LuoFile, LuoHeader, LuoPath, MemfdFile, MemfdVersion,
    Session,
};
pub use memblock::{MemblockError, MemblockFdt, ReserveMem};
#[cfg(feature = "alloc")]
pub use phys::{PageWriter, WriteError};
pub use phys::{PhysReader, ReadError};
pub use tracker::{PreservedLookup, Tracker, Unpreserved};
#[cfg(feature = "alloc")]
pub use tracker::{PreservedSet, TrackerError, TrackerPages};
pub use vmalloc::{
    KhoVmalloc, KhoVmallocChunk, VmallocArray, VmallocBlock, VmallocBlocks, VmallocError,
    VmallocPage, VmallocPages,
};
// ---- end kho-v4 / LUO ------------------------------------------------------
