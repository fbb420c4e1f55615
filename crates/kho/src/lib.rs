//! # kho — Kexec HandOver memory preservation, byte-compatible with Linux
//!
//! A live update kexecs into a new kernel while some memory survives. The old
//! kernel records every preserved folio (a physical address and an order) in a
//! tracker; the new kernel must find them all before it allocates, keep them
//! away from its allocators and give each folio back with its order.
//!
//! This crate is the reusable core: `no_std`, free of `unsafe`, usable by a
//! Rust kernel, hypervisor or boot loader to produce or consume a Linux KHO
//! handover. Its whole API is re-exported here; the modules are private.
//!
//! # Read in this order
//!
//! | module     | what it holds                                                  |
//! |------------|----------------------------------------------------------------|
//! | `addr`     | address newtypes: [`PhysAddr`], [`Pfn`], [`Order`], [`Block`], |
//! |            | [`PhysRange`]                                                  |
//! | `key`      | the radix key of a block ([`RadixKey`], its layout drawn) and  |
//! |            | the indices it is cut into ([`Level`], [`TableIndex`],         |
//! |            | [`LeafBit`])                                                   |
//! | `mem`      | how the core reaches physical memory (below); [`AtomicPage`]   |
//! | `radix`    | the writer: [`RadixTree`] (kho-v2/v3 format, concurrency),     |
//! |            | [`Cursor`]                                                     |
//! | `walk`     | the reader: [`RadixReader`] (what it checks, in which order),  |
//! |            | [`Walk`]; its `engine` also drives the coalescer               |
//! | `coalesce` | the maximal preserved ranges, streamed: [`Coalesce`]           |
//! | `fdt`      | the KHO root FDT: [`KhoFdt`], [`KhoFdtBuilder`]                |
//! | `v1`       | the older kho-v1 chunk list, read side: [`V1Reader`]           |
//! | `compat`   | compound compatible strings (`kho-v4;radix-v1;vmalloc-v1`)     |
//! | `phys`     | bounded reads of untrusted memory: [`PhysReader`]; the page    |
//! |            | writer [`PageWriter`]                                          |
//! | `tracker`  | what the tracker preserved, as the structure readers ask it:   |
//! |            | [`PreservedLookup`], [`PreservedSet`]                          |
//! | `block`    | KHO serialization blocks (`block-v1` chains): [`BlockChain`]   |
//! | `vmalloc`  | preserved vmalloc areas (`vmalloc-v1`): [`VmallocBlocks`]      |
//! | `luo`      | the LUO handover: [`LuoHeader`], sessions, files, FLBs; memfd, |
//! |            | guest_memfd and kvm records; [`LuoState`], [`LuoBuilder`]     |
//! | `memblock` | memblock's `reserve_mem` subnode (`memblock-v1`):              |
//! |            | [`MemblockFdt`]                                                |
//! | `crosscheck` | cross-layer validation, claims against the tracker, orphans: |
//! |            | [`CrossCheck`]                                                 |
//!
//! # Memory
//!
//! The core never dereferences a physical address itself. It goes through
//! three small contracts, so the same code runs over a simulator's arena and
//! over a kernel's direct map:
//!
//! | trait         | who uses it    | contract                                          |
//! |---------------|----------------|---------------------------------------------------|
//! | [`PageAlloc`] | writer         | hand out a zeroed 4 KiB page by address; take it  |
//! |               |                | back                                              |
//! | [`PageMap`]   | writer, reader | reach the page at an address as 512 atomic words  |
//! | [`RamMap`]    | reader         | which ranges are RAM, and where tree pages must   |
//! |               |                | not be                                            |
//!
//! Pages are seen as [`AtomicPage`]: 512 `AtomicU64`. The writer installs
//! entries by compare-and-swap and sets bits by `fetch_or`; the reader loads
//! each word once (relaxed loads compile to plain moves), so memory that
//! changes under a reader can give it wrong values but never undefined
//! behaviour. The reader is bounded: it asks for one aligned page at a time,
//! and only for pages the [`RamMap`] says are RAM. With `alloc`, `VecArena`
//! is a heap-backed arena that implements both [`PageAlloc`] and
//! [`PageMap`], for host tools.
//!
//! # Conventions
//!
//! Every name in the crate means one thing, and each thing has one name
//! (as Linux `lib/xarray.c` fixes its own in a "coding conventions" block):
//!
//! - *phys*: a physical byte address ([`PhysAddr`]).
//! - *page*: 4 KiB of physical memory, page aligned ([`AtomicPage`]); its
//!   *pfn* is `phys >> PAGE_SHIFT` ([`Pfn`]).
//! - *order*: log2 of a block's size in pages, `0..=51` ([`Order`]).
//! - *block*: `2^order` pages, naturally aligned: what is preserved, a folio
//!   in Linux ([`Block`]).
//! - *range*: `[start, end)` bytes of physical memory ([`PhysRange`]).
//! - *key*: a block folded into one u64, `(1 << (52 - order)) | (phys >>
//!   (12 + order))` ([`RadixKey`]).
//! - *level*: a depth of the radix tree: 5 is the root, 1 the lowest inner
//!   level, 0 the leaf ([`Level`]).
//! - *node*: one page of the tree. An *inner node* holds 512 child
//!   addresses (0 = absent), picked by a *table index* ([`TableIndex`]).
//! - *leaf*: a node of level 0, a bitmap of 32768 keys, picked by a *leaf
//!   bit* ([`LeafBit`]).
//! - *path*: the nodes from the root to the leaf of one key.
//! - *spine*: the path of entries 0 from the root; every order's subtree
//!   hangs off it.
//! - *cursor*: the writer's per-thread handle that caches its last path
//!   ([`Cursor`]).
//! - *compact*: free the leaves with no bit set and the inner nodes with no
//!   child ([`RadixTree::compact`]).
//! - *run*: consecutive blocks of one order, that is consecutive set bits of
//!   one leaf ([`BlockRun`]).
//! - *scan*: a reader's pass over untrusted pages: a leaf's or a bitmap's
//!   set bits, a chunk's entries, one order's subtree (an *order scan*).
//! - *walk*: every block in Linux's order, ascending key ([`Walk`]).
//! - *coalesce*: merge adjacent runs of any orders into maximal ranges
//!   ([`Coalesce`]).
//! - *forbidden*: ranges that must hold neither tree pages nor preserved
//!   blocks: scratch, the kernel image ([`RamMap`]).
//! - *window*: a range known to be RAM and not forbidden, cached so that a
//!   run is checked in O(1).
//! - *budget*: the most nodes (or chunks) a reader may enter
//!   ([`NodeBudget`]).
//! - kho-v1 (Linux 6.16): a *chunk* is one page, `struct khoser_mem_chunk`,
//!   a header and up to 255 *entries* ([`KhoserMemChunk`]); the *list*
//!   links chunks by `hdr.next`; the *head* is its first chunk; an *entry*,
//!   `struct khoser_mem_bitmap_ptr`, is `{phys_start, bitmap}`
//!   ([`KhoserMemBitmapPtr`]); a *bitmap*, `struct kho_mem_phys_bits`, has
//!   one bit per block ([`BitmapSize`]); its *span* is the bytes it covers,
//!   `bits * (4096 << order)`.
//! - The root FDT: the *root FDT* is the one-page device tree the old kernel
//!   hands over ([`KhoFdt`]), with one *subnode* per KHO user, whose *blob*
//!   is that user's data.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod addr;
mod coalesce;
mod fdt;
mod key;
mod mem;
mod name;
mod radix;
mod v1;
mod walk;

#[cfg(all(feature = "alloc", any(test, feature = "testing")))]
pub mod testing;

#[cfg(feature = "alloc")]
pub use addr::merge_ranges;
pub use addr::{AddrError, Block, Order, PAGE_SHIFT, PAGE_SIZE, Pfn, PhysAddr, PhysRange};
pub use coalesce::{Coalesce, CoalesceSummary, NoObserver, RunObserver};
#[cfg(feature = "alloc")]
pub use fdt::{FdtBuildError, KhoFdtBuilder};
pub use fdt::{
    FdtError, KHO_FDT_MAX_SIZE, KhoFdt, KhoSubnode, KhoSubnodes, KhoVersion, PROP_BLOB_SIZE,
    PROP_COMPATIBLE, PROP_PRESERVED_DATA, PROP_PRESERVED_MEMORY_MAP, PROP_SUB_FDT,
};
pub use key::{
    INNER_LEVELS, KeyError, LEAF_BITS, LEAF_SHIFT, LEVELS, LeafBit, Level, ORDER_0_MARKER,
    ROOT_ENTRIES_IN_USE, RadixKey, TABLE_ENTRIES, TABLE_SHIFT, TableIndex,
};
#[cfg(feature = "alloc")]
pub use mem::VecArena;
pub use mem::{AtomicPage, MemError, PAGE_WORDS, PageAlloc, PageMap, RamMap, RamMapError};
pub use name::FdtName;
pub use radix::{CompactStats, Cursor, PageSplit, RadixError, RadixStats, RadixTree, split_pages};
#[cfg(feature = "alloc")]
pub use v1::{
    BitmapEvidence, BitmapVerdict, Undecided, V1Ascending, V1Summary, V1Tracker, detect_bitmap_size,
};
pub use v1::{
    BitmapSize, KHOSER_BITMAP_SIZE, KhoserMemBitmapPtr, KhoserMemChunk, KhoserMemChunkHdr,
    V1Blocks, V1Error, V1Reader, V1Work,
};
#[cfg(feature = "alloc")]
pub use walk::NodeSet;
pub use walk::{
    BlockRun, NodeBudget, ORDERS, OrderCounts, OrderSet, RadixReader, RunBlocks, VisitedFull,
    VisitedSet, Walk, WalkError,
};
pub use walk::{Damage, OnCorruption, SalvageWalk, Salvaged, UnknownOnCorruption};

mod block;
mod compat;
#[cfg(feature = "alloc")]
mod crosscheck;
mod luo;
mod memblock;
mod phys;
mod tracker;
mod vmalloc;

#[cfg(feature = "alloc")]
pub use block::write_chain;
pub use block::{
    BlockChain, BlockEntry, BlockError, KHO_BLOCK_COMPATIBLE, KHO_BLOCK_HEADER_SIZE,
    KHO_BLOCK_SIZE, KHO_MAX_BLOCKS, KhoBlockHeaderSer, capacity as block_capacity,
};
pub use compat::{CompatError, Compound, SEPARATOR as COMPAT_SEPARATOR};
#[cfg(feature = "alloc")]
pub use crosscheck::{
    Claim, ClaimKind, CrossCheck, CrossReport, Expect, Finding, Orphans, PreservedBlocks,
    TreeTracker,
};
pub use fdt::{KhoCompat, KhoSubCompat};
#[cfg(feature = "alloc")]
pub use luo::{
    AreaPages, FileData, FileSpec, FileState, FlbSpec, FolioSpec, GuestMemfdSpec, KvmSpec,
    LuoBuilder, LuoState, LuoWritten, MemfdSpec, RecordWritten, SessionSpec, SessionState,
    write_guest_memfd, write_kvm, write_memfd,
};
pub use luo::{
    CName, FileContent, Files, Flb, FlbName, Flbs, FolioEntry, Folios,
    GUEST_MEMFD_LUO_FH_COMPATIBLE, GUEST_MEMFD_LUO_FLAG_INIT_SHARED, GUEST_MEMFD_LUO_FLAG_MMAP,
    GUEST_MEMFD_LUO_FOLIO_UPTODATE, GUEST_MEMFD_LUO_SUPPORTED_FLAGS, GuestMemfdFile,
    GuestMemfdLuoFolioSer, GuestMemfdLuoSer, HandlerError, HandlerKind, HandlerName,
    KVM_LUO_FH_COMPATIBLE, KvmFile, KvmLuoMemAttr, KvmLuoSer, LIVEUPDATE_FLB_COMPAT_LENGTH,
    LIVEUPDATE_HNDL_COMPAT_LENGTH, LIVEUPDATE_SESSION_NAME_LENGTH, LUO_ABI_COMPAT_BASE,
    LUO_FLB_MAX, LUO_FLB_PGCNT, LUO_KHO_ENTRY_NAME, LuoCompat, LuoError, LuoFile, LuoFileSer,
    LuoFileSetSer, LuoFlbHeaderSer, LuoFlbSer, LuoHeader, LuoPath, LuoSerTail, LuoSerV5,
    LuoSerV5Block, LuoSessionSer, MEMFD_LUO_ALL_SEALS, MEMFD_LUO_FOLIO_DIRTY,
    MEMFD_LUO_FOLIO_UPTODATE, MEMFD_V1_COMPATIBLE, MEMFD_V2_COMPATIBLE, MemfdFile,
    MemfdLuoFolioSer, MemfdLuoSer, MemfdLuoSerV1, MemfdVersion, Session, SessionName, Sessions,
};
pub use memblock::{
    MEMBLOCK_KHO_FDT, MEMBLOCK_KHO_NODE_COMPATIBLE, MemblockError, MemblockFdt,
    RESERVE_MEM_KHO_NODE_COMPATIBLE, ReserveMem,
};
#[cfg(feature = "alloc")]
pub use memblock::{build_memblock_fdt, write_memblock};
pub use phys::{PAGE_BYTES, PhysReader, ReadError};
#[cfg(feature = "alloc")]
pub use phys::{PageWriter, WriteError};
pub use tracker::{PreservedLookup, Tracker, Unpreserved};
#[cfg(feature = "alloc")]
pub use tracker::{PreservedSet, TrackerError, TrackerPages};
pub use vmalloc::{
    ArrayEntry, KHO_VMALLOC_ALLOC, KHO_VMALLOC_COMPATIBLE, KHO_VMALLOC_HUGE_VMAP, KHO_VMALLOC_SIZE,
    KHO_VMALLOC_SUPPORTED_FLAGS, KhoVmalloc, KhoVmallocChunk, VmallocArray, VmallocBlock,
    VmallocBlocks, VmallocError, VmallocPage, VmallocPages,
};
#[cfg(feature = "alloc")]
pub use vmalloc::{VmallocWritten, write_vmalloc_blocks, write_vmalloc_bytes};
