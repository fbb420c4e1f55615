//! KHO in the new kernel, as Linux's `kernel/liveupdate/kexec_handover.c`
//! has it: find the hand-over, keep the preserved memory away from the
//! allocators, give the folios back.
//!
//! # DOC: KHO boot overview
//!
//! | step                    | when (see [`crate::boot`])                    | what                                                                                   |
//! |-------------------------|-----------------------------------------------|----------------------------------------------------------------------------------------|
//! | [`kho_populate`]        | after `memblock_init`                         | validate the root FDT; mark the scratch areas `KHO_SCRATCH`; reserve the scratch array; scratch-only allocation |
//! | `alloc_memmap`          |                                               | the struct pages come from scratch                                                     |
//! | [`kho_memory_init`]     | before `memmap_init`                          | walk the radix tree; account the preserved memory per [`Strategy`]; write `{order, KHOP}` into head pages |
//! | `memmap_init`, `memblock_free_all` | ([`Kho::skip_ranges`] for `skip`)  | preserved struct pages are not initialised (noinit); preserved pages are not freed     |
//! | [`kho_restore_folio`], [`kho_restore_pages`] | buddy live              | check `{order, magic}`, initialise the struct pages, refcounts, compound page, managed pages |
//!
//! Anything wrong in the hand-over makes the kernel boot **without KHO**: the
//! first broken rule is kept as a [`KhoError`] in [`Kho::error`], nothing of
//! the hand-over is trusted, and the boot goes on normally (the scratch
//! marks are undone; scratch-only allocation is switched off).
//!
//! # Head page info (Linux's `union kho_page_info`)
//!
//! | bits of `page->private` | field                                  |
//! |-------------------------|----------------------------------------|
//! | 0..32                   | `order`                                |
//! | 32..64                  | `magic` = [`KHO_PAGE_MAGIC`] ("KHOP")  |
//!
//! # The restore strategies (DESIGN.md section 4) and how they are timed
//!
//! | strategy    | memblock work                                              | `walk`                      | `heads`                     | `memblock`                          |
//! |-------------|------------------------------------------------------------|-----------------------------|-----------------------------|-------------------------------------|
//! | `per-block` | `memblock_reserve` + `memblock_reserved_mark_noinit` per block, interleaved with the walk, as mainline | a walk-only pass first (it also validates the whole tree before anything is reserved) | 0 (written in the interleaved pass) | interleaved pass minus the walk-only pass |
//! | `coalesced` | the same two calls per coalesced range                     | `coalesce()` into a `Vec`   | a second walk (`next_run`)  | the calls                           |
//! | `bulk`      | one `memblock_reserve_sorted(ranges, RSRV_NOINIT)`         | same                        | same                        | the one merge                       |
//! | `skip`      | none: the ranges are kept ([`Kho::skip_ranges`]) for `memmap_init_skip` and `memblock_free_all_except` | same | same | 0                                   |
//!
//! Every strategy validates the whole tree before it changes memblock, so a
//! corrupt tree never leaves half the preserved memory reserved.
//!
//! # Peer schemes
//!
//! A handover written by another tracker design (`kho run --scheme`: Linux
//! 6.16's xarray and kho-v1 chunk list, mainline's radix tree, the maple
//! proposal) is read through a [`PeerScheme`], implemented in kho-lab:
//! [`kho_populate_scheme`] lets it parse the root FDT (its own compatible),
//! and [`kho_memory_init`] lets it account the preserved memory the way
//! its authors did, timed like `per-block`: a read-only pass first (`walk`,
//! which also validates the whole handover), then the pass that reserves
//! and writes the heads (`memblock` = that pass minus the read-only one).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kho::{
    Block, FdtError, KHO_FDT_MAX_SIZE, KhoFdt, KhoVersion, MemError, NodeBudget, NodeSet, Order,
    PAGE_SIZE, Pfn, PhysAddr, PhysRange, RadixReader, RamMap, RamMapError, WalkError,
};

use crate::arena::prefetch;
use crate::boot::Machine;
use crate::buddy::{Buddy, MAX_PAGE_ORDER, prep_compound_page};
use crate::kexec::KhoHandover;
use crate::liveupdate::Strategy;
use crate::memblock::{MemblockError, MemblockFlags};
use crate::memmap::{MemMap, MemmapError, StructPage};
use crate::physio::read_bytes;
use crate::workload::TreeAlloc;

/// How many head pages the head pass looks ahead.
const HEADS_AHEAD: usize = 32;

/// `KHO_PAGE_MAGIC`: the high half of a restorable head page's `private`.
pub const KHO_PAGE_MAGIC: u32 = 0x4b48_4f50;

/// `page->private` of a preserved head page of `order`.
pub const fn kho_page_info(order: Order) -> u64 {
    ((KHO_PAGE_MAGIC as u64) << 32) | order.as_u32() as u64
}

/// Why KHO is not used, or why a restore failed: the first broken rule,
/// with where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KhoError {
    /// The setup_data list carries no KHO hand-over (a normal boot).
    #[error("no KHO hand-over in setup_data")]
    NoHandover,
    /// The setup_data list or the `kho_data` node is broken.
    #[error("hand-over rejected: {reason}")]
    Handover {
        /// The reader's error, as text.
        reason: String,
    },
    /// The root FDT could not be read.
    #[error("root FDT at {fdt} could not be read: {source}")]
    FdtRead {
        /// Where it was said to be.
        fdt: PhysRange,
        /// Why.
        source: MemError,
    },
    /// The root FDT is malformed.
    #[error("root FDT at {fdt}: {source}")]
    Fdt {
        /// Where it is.
        fdt: PhysRange,
        /// The first broken rule.
        source: FdtError,
    },
    /// The root FDT is of a version this kernel does not restore.
    #[error("root FDT at {fdt} is {found}, this kernel restores kho-v2 and kho-v3")]
    Compatible {
        /// Where it is.
        fdt: PhysRange,
        /// The version found.
        found: KhoVersion,
    },
    /// A memblock operation on hand-over memory failed.
    #[error("memblock, {what} {range}: {source}")]
    Memblock {
        /// What was being done.
        what: &'static str,
        /// On which range.
        range: PhysRange,
        /// Why it failed.
        source: MemblockError,
    },
    /// The RAM map given to the walker is inconsistent.
    #[error("RAM map for the walk: {0}")]
    RamMap(RamMapError),
    /// The preserved-memory map is corrupt.
    #[error("preserved-memory map at {root}: {source}")]
    Walk {
        /// The radix root.
        root: PhysAddr,
        /// The first broken invariant.
        source: WalkError,
    },
    /// A peer scheme refused the handover.
    #[error("{scheme}: {reason}")]
    Scheme {
        /// The scheme.
        scheme: &'static str,
        /// Its first broken rule, as text.
        reason: String,
    },
    /// `kho_memory_init` before `alloc_memmap`.
    #[error("kho_memory_init needs the memmap (alloc_memmap) first")]
    NoMemmap,
    /// A struct page could not be reached.
    #[error("struct page of {phys}: {source}")]
    Memmap {
        /// The address whose struct page was wanted.
        phys: PhysAddr,
        /// Why.
        source: MemmapError,
    },
    /// A restore of an address that is not page aligned.
    #[error("restore of {phys}: not page aligned")]
    Unaligned {
        /// The address.
        phys: PhysAddr,
    },
    /// The head page does not carry the KHO magic: not preserved, or
    /// already restored.
    #[error(
        "restore of {phys}: page->private {private:#x} has no KHOP magic (not preserved, or restored already)"
    )]
    BadMagic {
        /// The address.
        phys: PhysAddr,
        /// The head page's `private`.
        private: u64,
    },
    /// The head page's order is impossible or not the one expected.
    #[error("restore of {phys}: order {order} in page->private is invalid ({reason})")]
    BadOrder {
        /// The address.
        phys: PhysAddr,
        /// The order found.
        order: u32,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

/// What [`kho_populate`] learned from a valid hand-over (`kho_in`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KhoIn {
    /// The root FDT page.
    pub fdt: PhysRange,
    /// Its version.
    pub version: KhoVersion,
    /// The radix root (`preserved-memory-map`).
    pub root: PhysAddr,
    /// The subnodes: `(name, preserved-data, blob-size)`.
    pub subnodes: Vec<(String, PhysAddr, Option<u64>)>,
    /// The scratch array.
    pub scratch_array: PhysRange,
    /// The scratch areas.
    pub scratch: Vec<PhysRange>,
}

impl KhoIn {
    /// The subnode `name`: its blob's address and size.
    pub fn subnode(&self, name: &str) -> Option<(PhysAddr, Option<u64>)> {
        self.subnodes
            .iter()
            .find(|(n, ..)| n == name)
            .map(|&(_, data, size)| (data, size))
    }
}

/// The new kernel's KHO state: in use ([`Kho::incoming`]) or not, and why
/// not ([`Kho::error`]).
#[derive(Debug, Clone, Default)]
pub struct Kho {
    incoming: Option<KhoIn>,
    error: Option<KhoError>,
    skip: Vec<PhysRange>,
    scheme: Option<Arc<dyn PeerScheme>>,
}

impl Kho {
    /// A boot without KHO, for `reason`.
    pub fn disabled(reason: KhoError) -> Self {
        Self {
            incoming: None,
            error: Some(reason),
            skip: Vec::new(),
            scheme: None,
        }
    }

    /// The validated hand-over, while KHO is in use.
    pub fn incoming(&self) -> Option<&KhoIn> {
        self.incoming.as_ref()
    }

    /// Whether KHO is in use.
    pub fn is_enabled(&self) -> bool {
        self.incoming.is_some()
    }

    /// Why KHO is not in use.
    pub fn error(&self) -> Option<&KhoError> {
        self.error.as_ref()
    }

    /// The preserved ranges `memmap_init` and `memblock_free_all` must skip
    /// (sorted, disjoint; empty unless the strategy is `skip`).
    pub fn skip_ranges(&self) -> &[PhysRange] {
        &self.skip
    }

    fn fail(&mut self, e: KhoError) {
        self.incoming = None;
        self.skip = Vec::new();
        self.error = Some(e);
    }
}

/// `kho_populate`: validates the root FDT of `handover`, marks the scratch
/// areas `KHO_SCRATCH` (they lie in RAM that `memblock_init` added: marked,
/// not added, so they keep node 0), reserves the scratch array and switches
/// memblock to scratch-only allocation.
///
/// Never fails the boot: on any error the marks made are undone and the
/// returned [`Kho`] is disabled with the reason.
pub fn kho_populate(machine: &mut Machine<'_>, handover: &KhoHandover) -> Kho {
    kho_populate_scheme(machine, handover, None)
}

/// [`kho_populate`] for a handover written by `scheme` (`None`: the
/// built-in radix tree, `kho-v2`/`kho-v3`): the scheme parses the root
/// FDT, and [`kho_memory_init`] will account the memory through it.
pub fn kho_populate_scheme(
    machine: &mut Machine<'_>,
    handover: &KhoHandover,
    scheme: Option<Arc<dyn PeerScheme>>,
) -> Kho {
    match populate(machine, handover, scheme.as_deref()) {
        Ok(k) => Kho {
            incoming: Some(k),
            error: None,
            skip: Vec::new(),
            scheme,
        },
        Err(e) => Kho::disabled(e),
    }
}

/// A preserved-memory tracker other than the built-in radix tree, as both
/// kernels see it: kho-lab's peer schemes implement it, `kho run --scheme`
/// picks one (see the module doc).
pub trait PeerScheme: std::fmt::Debug + Send + Sync {
    /// The scheme's name (`--scheme`).
    fn name(&self) -> &'static str;
    /// The old kernel: preserves `blocks`, in order, through a fresh
    /// tracker whose memory comes from `alloc`, finalizes it, and builds
    /// the root FDT around its handover with `subnodes` (name, blob, size).
    fn hand_over(
        &self,
        alloc: &TreeAlloc<'_, '_>,
        blocks: &[Block],
        subnodes: &[(&str, PhysAddr, u64)],
    ) -> Result<PeerHandover, String>;
    /// The new kernel: parses the root FDT, refusing any compatible but
    /// the scheme's.
    fn parse_fdt(&self, bytes: &[u8]) -> Result<PeerFdt, String>;
    /// The new kernel's `kho_memory_init` for this scheme: reads the
    /// handover at `k.root`, reserves the preserved memory and writes the
    /// head pages, as the scheme's authors did.
    fn memory_init(
        &self,
        machine: &mut Machine<'_>,
        k: &KhoIn,
    ) -> Result<KhoMemoryInitStats, KhoError>;
}

/// What a [`PeerScheme`] left in the old kernel's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerHandover {
    /// The root FDT's bytes.
    pub fdt: Vec<u8>,
    /// Its `preserved-memory-map`.
    pub root: PhysAddr,
    /// Finalize (the handover preparation), ms.
    pub finalize_ms: f64,
    /// The tracker's metadata pages, counted exactly (simulated pages plus
    /// the slab pages of its modelled kernel objects).
    pub metadata_pages: u64,
}

/// A root FDT as a [`PeerScheme`] parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFdt {
    /// The subnode format (`kho-v1`: `fdt`, no size; `kho-v3`:
    /// `preserved-data` and `blob-size`).
    pub version: KhoVersion,
    /// `preserved-memory-map`.
    pub root: PhysAddr,
    /// The subnodes: `(name, data, size)`.
    pub subnodes: Vec<(String, PhysAddr, Option<u64>)>,
}

fn populate(
    machine: &mut Machine<'_>,
    h: &KhoHandover,
    scheme: Option<&dyn PeerScheme>,
) -> Result<KhoIn, KhoError> {
    let fdt = h.fdt;
    let len = usize::try_from(fdt.size())
        .unwrap_or(usize::MAX)
        .min(KHO_FDT_MAX_SIZE);
    let bytes = read_bytes(machine.mem(), fdt.start(), len)
        .map_err(|source| KhoError::FdtRead { fdt, source })?;
    let (version, root, subnodes) = match scheme {
        Some(s) => {
            let p = s.parse_fdt(&bytes).map_err(|reason| KhoError::Scheme {
                scheme: s.name(),
                reason,
            })?;
            (p.version, p.root, p.subnodes)
        }
        None => {
            let parsed = KhoFdt::parse(&bytes).map_err(|source| KhoError::Fdt { fdt, source })?;
            let version = parsed.version();
            if !matches!(version, KhoVersion::V2 | KhoVersion::V3) {
                return Err(KhoError::Compatible {
                    fdt,
                    found: version,
                });
            }
            let subnodes = parsed
                .subnodes()
                .map(|n| (n.name().to_owned(), n.data(), n.size()))
                .collect();
            (version, parsed.root(), subnodes)
        }
    };

    let mb = &mut machine.memblock;
    let mut marked = 0usize;
    let mut result = Ok(());
    for area in &h.scratch {
        if let Err(source) = mb.memblock_mark_kho_scratch(area.start(), area.size()) {
            result = Err(KhoError::Memblock {
                what: "marking scratch",
                range: *area,
                source,
            });
            break;
        }
        marked += 1;
    }
    if result.is_ok() {
        let a = h.scratch_array;
        result = mb
            .memblock_reserve(a.start(), a.size())
            .map_err(|source| KhoError::Memblock {
                what: "reserving the scratch array",
                range: a,
                source,
            });
    }
    if let Err(e) = result {
        for area in h.scratch.iter().take(marked) {
            // Best effort: the flag only restricts allocations, which are
            // not restricted without scratch-only mode.
            let _ = mb.memblock_clear_kho_scratch(area.start(), area.size());
        }
        return Err(e);
    }
    mb.memblock_set_kho_scratch_only();
    Ok(KhoIn {
        fdt,
        version,
        root,
        subnodes,
        scratch_array: h.scratch_array,
        scratch: h.scratch.clone(),
    })
}

/// What [`kho_memory_init`] did and what it cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KhoMemoryInitStats {
    /// Preserved blocks walked.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Maximal coalesced ranges (0 for `per-block`, which does not
    /// coalesce).
    pub ranges: u64,
    /// Radix nodes entered by the (first) walk.
    pub nodes: u64,
    /// The walk (see the module doc for what each strategy counts).
    pub walk: Duration,
    /// The head-page pass (`coalesced`, `bulk`, `skip`).
    pub heads: Duration,
    /// The memblock work.
    pub memblock: Duration,
    /// Regions of `memblock.reserved` afterwards.
    pub reserved_regions: u64,
}

/// `page->private = {order, KHOP}` of `block`'s head page.
pub fn write_head(mm: &MemMap<'_>, block: Block) -> Result<(), KhoError> {
    let page = mm
        .pfn_to_page(block.pfn())
        .map_err(|source| KhoError::Memmap {
            phys: block.phys(),
            source,
        })?;
    page.set_private(kho_page_info(block.order()));
    Ok(())
}

fn block_range(block: Block) -> PhysRange {
    block.range().unwrap_or_default()
}

/// `kho_memory_init` (with `kho_preserved_memory_reserve`): walks the
/// preserved-memory map and accounts the preserved memory per `strategy`
/// (see the module doc), writing `{order, KHOP}` into every head page.
/// Then scratch-only allocation ends, except under `skip` where memblock
/// does not know the preserved memory: it ends in
/// [`crate::buddy::memblock_free_all_except`].
///
/// Runs after `alloc_memmap`, before `memmap_init`. On a walk error KHO is
/// disabled ([`Kho::error`]), the scratch array's reservation and the
/// scratch marks are dropped, and the boot goes on without KHO.
pub fn kho_memory_init(
    machine: &mut Machine<'_>,
    kho: &mut Kho,
    strategy: Strategy,
) -> KhoMemoryInitStats {
    let Some(incoming) = kho.incoming.clone() else {
        return KhoMemoryInitStats {
            reserved_regions: machine.memblock.reserved.cnt() as u64,
            ..KhoMemoryInitStats::default()
        };
    };
    let result = match kho.scheme.clone() {
        Some(s) => s.memory_init(machine, &incoming).map(|st| (st, Vec::new())),
        None => memory_init(machine, &incoming, strategy),
    };
    match result {
        Ok((stats, skip)) => {
            kho.skip = skip;
            if strategy != Strategy::Skip || kho.scheme.is_some() {
                machine.memblock.memblock_clear_kho_scratch_only();
            }
            stats
        }
        Err(e) => {
            kho.fail(e);
            // Nothing of the hand-over is trusted: give back what
            // kho_populate took (best effort; the boot goes on regardless).
            let mb = &mut machine.memblock;
            let a = incoming.scratch_array;
            let _ = mb.memblock_phys_free(a.start(), a.size());
            for area in &incoming.scratch {
                let _ = mb.memblock_clear_kho_scratch(area.start(), area.size());
            }
            mb.memblock_clear_kho_scratch_only();
            KhoMemoryInitStats {
                reserved_regions: machine.memblock.reserved.cnt() as u64,
                ..KhoMemoryInitStats::default()
            }
        }
    }
}

fn memory_init(
    machine: &mut Machine<'_>,
    k: &KhoIn,
    strategy: Strategy,
) -> Result<(KhoMemoryInitStats, Vec<PhysRange>), KhoError> {
    let mem = machine.mem();
    let ram = mem.layout().ram();
    let forbidden = kho_forbidden(machine, k);
    let map = RamMap::new(ram, &forbidden).map_err(KhoError::RamMap)?;
    let root = k.root;
    let werr = |source| KhoError::Walk { root, source };
    let open = || {
        RadixReader::open(mem, map, root, NodeSet::new(), NodeBudget::for_ram(&map)).map_err(werr)
    };
    let mut st = KhoMemoryInitStats::default();
    let mut skip = Vec::new();

    // The walk: validates everything before memblock changes.
    let t = Instant::now();
    let ranges = if strategy == Strategy::PerBlock {
        let mut walk = open()?.walk();
        for b in walk.by_ref() {
            b.map_err(werr)?;
        }
        st.nodes = walk.nodes();
        st.blocks = walk.counts().total();
        st.bytes = walk.counts().bytes();
        Vec::new()
    } else {
        let mut c = open()?.coalesce();
        let ranges = c.by_ref().collect::<Result<Vec<_>, _>>().map_err(werr)?;
        st.nodes = c.nodes();
        st.blocks = c.summary().counts().total();
        st.bytes = c.summary().bytes();
        st.ranges = ranges.len() as u64;
        ranges
    };
    st.walk = t.elapsed();

    let (mb, mm) = machine.memblock_and_memmap();
    let mm = mm.ok_or(KhoError::NoMemmap)?;
    let mb_err = |what, range, source| KhoError::Memblock {
        what,
        range,
        source,
    };
    match strategy {
        Strategy::PerBlock => {
            // Mainline: reserve, mark noinit and write the head, per block,
            // in walk order.
            let t = Instant::now();
            for b in open()?.walk() {
                let b = b.map_err(werr)?;
                let (phys, size) = (b.phys(), b.size());
                mb.memblock_reserve(phys, size)
                    .map_err(|e| mb_err("reserving", block_range(b), e))?;
                mb.memblock_reserved_mark_noinit(phys, size)
                    .map_err(|e| mb_err("marking noinit", block_range(b), e))?;
                write_head(mm, b)?;
            }
            st.memblock = t.elapsed().saturating_sub(st.walk);
        }
        Strategy::Coalesced | Strategy::Bulk | Strategy::Skip => {
            let t = Instant::now();
            let mut walk = open()?.walk();
            // Head pages are scattered over the memmap: look each one up
            // and prefetch it HEADS_AHEAD blocks before its store, so the
            // cache and TLB misses overlap.
            let mut ring: VecDeque<(StructPage<'_>, u64)> = VecDeque::with_capacity(HEADS_AHEAD);
            while let Some(run) = walk.next_run() {
                let run = run.map_err(werr)?;
                let info = kho_page_info(run.order());
                for b in run.blocks() {
                    let page = mm.pfn_to_page(b.pfn()).map_err(|source| KhoError::Memmap {
                        phys: b.phys(),
                        source,
                    })?;
                    prefetch(page.private_word());
                    if ring.len() == HEADS_AHEAD
                        && let Some((p, v)) = ring.pop_front()
                    {
                        p.set_private(v);
                    }
                    ring.push_back((page, info));
                }
            }
            for (p, v) in ring {
                p.set_private(v);
            }
            st.heads = t.elapsed();
            let t = Instant::now();
            match strategy {
                Strategy::Coalesced => {
                    for r in &ranges {
                        mb.memblock_reserve(r.start(), r.size())
                            .map_err(|e| mb_err("reserving", *r, e))?;
                        mb.memblock_reserved_mark_noinit(r.start(), r.size())
                            .map_err(|e| mb_err("marking noinit", *r, e))?;
                    }
                }
                Strategy::Bulk => {
                    let all = PhysRange::new(
                        ranges.first().map_or(PhysAddr::ZERO, |r| r.start()),
                        ranges.last().map_or(PhysAddr::ZERO, |r| r.end()),
                    )
                    .unwrap_or_default();
                    mb.memblock_reserve_sorted(ranges.iter().copied(), MemblockFlags::RSRV_NOINIT)
                        .map_err(|e| mb_err("bulk reserving", all, e))?;
                }
                _ => skip = ranges,
            }
            st.memblock = t.elapsed();
        }
    }
    st.reserved_regions = mb.reserved.cnt() as u64;
    Ok((st, skip))
}

/// What no preserved block (and no handover page) may touch: the scratch
/// areas and the kernel image, sorted and merged.
pub fn kho_forbidden(machine: &Machine<'_>, k: &KhoIn) -> Vec<PhysRange> {
    let mut forbidden = k.scratch.clone();
    forbidden.push(machine.config().kernel);
    kho::merge_ranges(forbidden)
}

/// The order recorded in the head page at `phys`, if it carries the KHO
/// magic (a peek: nothing is changed).
pub fn kho_preserved_order(buddy: &Buddy<'_>, phys: PhysAddr) -> Option<Order> {
    let page = buddy.memmap().pfn_to_page(phys.pfn()).ok()?;
    let info = page.private();
    if (info >> 32) as u32 != KHO_PAGE_MAGIC {
        return None;
    }
    Order::try_new((info & 0xffff_ffff) as u32).ok()
}

/// `kho_restore_page`: checks `{order, magic}` of the head page at `phys`
/// (and, if given, that the order is `expect`), then makes the block live:
/// struct pages initialised (they were noinit), head refcount 1, tails 0
/// for a folio or 1 for pages, compound page for a folio of order > 0,
/// managed pages counted.
fn kho_restore_page(
    buddy: &Buddy<'_>,
    phys: PhysAddr,
    is_folio: bool,
    expect: Option<Order>,
) -> Result<(Pfn, Order), KhoError> {
    if !phys.is_page_aligned() {
        return Err(KhoError::Unaligned { phys });
    }
    let mm = buddy.memmap();
    let pfn = phys.pfn();
    let memmap_err = |source| KhoError::Memmap { phys, source };
    let page = mm.pfn_to_page(pfn).map_err(memmap_err)?;
    let private = page.private();
    if (private >> 32) as u32 != KHO_PAGE_MAGIC {
        return Err(KhoError::BadMagic { phys, private });
    }
    let raw = (private & 0xffff_ffff) as u32;
    let bad = |reason| KhoError::BadOrder {
        phys,
        order: raw,
        reason,
    };
    let order = Order::try_new(raw).map_err(|_| bad("beyond the largest order"))?;
    if !is_folio && raw > MAX_PAGE_ORDER {
        return Err(bad(
            "pages are restored in blocks of at most MAX_PAGE_ORDER",
        ));
    }
    if expect.is_some_and(|e| e != order) {
        return Err(bad("not the order of the block asked for"));
    }
    if pfn.trailing_zeros() < raw {
        return Err(bad("the address is not aligned to it"));
    }
    let nr = order.pages();
    let end = pfn
        .checked_add(nr)
        .filter(|e| e.checked_sub(1).is_some_and(|last| mm.pfn_valid(last)))
        .ok_or_else(|| bad("the block runs past the memmap"))?;
    // Clear private first, as Linux does, so a later restore fails.
    page.set_private(0);
    // The struct pages were not initialised at boot (noinit).
    mm.init_range(pfn, end, false, false).map_err(memmap_err)?;
    if is_folio {
        let mut p = pfn;
        while let Some(next) = p.checked_add(1).filter(|n| *n < end) {
            mm.pfn_to_page(next).map_err(memmap_err)?.set_refcount(0);
            p = next;
        }
        if raw > 0 {
            prep_compound_page(mm, pfn, order).map_err(memmap_err)?;
        }
    }
    buddy.adjust_managed_page_count(i64::try_from(nr).unwrap_or(i64::MAX));
    Ok((pfn, order))
}

/// `kho_restore_folio`: the preserved folio whose head is at `phys`, as a
/// live folio: its head pfn and order.
///
/// Differs from Linux in one point: orders above `MAX_PAGE_ORDER` are
/// accepted (gigantic 1 GiB folios come back as folios, as hugetlb's boot
/// pool makes them); Linux's `kho_restore_page` refuses them.
pub fn kho_restore_folio(buddy: &Buddy<'_>, phys: PhysAddr) -> Result<(Pfn, Order), KhoError> {
    kho_restore_page(buddy, phys, true, None)
}

/// `kho_restore_pages`: `nr_pages` order-0 pages at `phys` preserved with
/// `kho_preserve_pages`, i.e. as the blocks of Linux's split
/// ([`kho::split_pages`]), each page with refcount 1. Returns the first
/// pfn. As in Linux, a block above `MAX_PAGE_ORDER` is refused.
///
/// Stricter than Linux: each block's recorded order must be the split's
/// order (Linux trusts the recorded order).
pub fn kho_restore_pages(
    buddy: &Buddy<'_>,
    phys: PhysAddr,
    nr_pages: u64,
) -> Result<Pfn, KhoError> {
    if !phys.is_page_aligned() {
        return Err(KhoError::Unaligned { phys });
    }
    let start = phys.pfn();
    let split = kho::split_pages(start, nr_pages).map_err(|_| KhoError::BadOrder {
        phys,
        order: 0,
        reason: "the page range runs past the last frame",
    })?;
    for block in split {
        kho_restore_page(buddy, block.phys(), false, Some(block.order()))?;
    }
    Ok(start)
}

/// Pages a blob of `size` bytes spans.
pub fn blob_pages(size: u64) -> u64 {
    size.div_ceil(PAGE_SIZE)
}

#[cfg(test)]
mod tests;
