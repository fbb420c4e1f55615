//! Cross-layer validation of a handover: every structure's claim on memory
//! against the tracker, against each other, and the reverse: preserved
//! memory that no structure claims.
//!
//! Glossary:
//!
//! | name     | meaning                                                                  |
//! |----------|--------------------------------------------------------------------------|
//! | claim    | a byte range a structure says it owns ([`Claim`]), and how the tracker must hold it ([`Expect`]) |
//! | tracker  | the preserved blocks ([`PreservedBlocks`]: a [`PreservedSet`], the tree itself ([`TreeTracker`]), a kho-v1 list's entries ([`crate::V1Tracker`])) and the tree's own pages ([`TrackerPages`]) |
//! | finding  | a broken cross-layer rule ([`Finding`]): what no single reader can see   |
//! | orphan   | a preserved block no claim touches ([`Orphans`])                        |
//!
//! No kernel runs these checks: each layer trusts the one below. Linux's
//! next kernel keeps every preserved block reserved until someone restores
//! it, and nothing restores a block no structure names, so an orphan is
//! memory lost until the next reboot; this report is its leak detector.
//!
//! # What is checked, in this order
//!
//! 1. Each claim against the tracker ([`Expect`]): structure pages and
//!    vmalloc chunks are order-0 blocks; vmalloc entries are blocks of the
//!    area's order; a memfd folio is the head of a block of any order (its
//!    order is the block's); a guest_memfd folio is an order-0 block (large
//!    folios are never preserved); blobs and `reserve_mem` regions are
//!    covered page by page.
//! 2. Each folio against its file: its page index lies within the file
//!    size, is aligned to the folio's order, and no two folios of a file
//!    cover one page index.
//! 3. Each guest_memfd's `vm_token` names a `kvm_vm_luo_v1` file of the same
//!    session; tokens are unique in a session; session names are unique.
//! 4. No two claims share a byte, and no claim lies on a tracker page.
//! 5. Orphans: preserved blocks no claim touches (count, bytes, the first
//!    [`Orphans::FIRST`]), counted run by run as the tracker enumerates
//!    them ([`PreservedBlocks::for_each_run`]): memory per claim, never per
//!    block. The root FDT's page is a claim when its address
//!    is known ([`CrossCheck::root_fdt`]); tracker pages are not blocks.
//!    Memory reached only through data this crate cannot parse (an unknown
//!    handler's or an FLB's data handle, a driver's blob pointing further)
//!    is not attributed and shows as orphans: the report says "no structure
//!    we read names it", not "leaked" for certain.
//!
//! An inspector builds a [`CrossCheck`] from what it read and runs it:
//!
//! ```text
//!   let report = CrossCheck::new(&tracker)
//!       .tracker_pages(&tree_pages)
//!       .kho_fdt(&fdt, Some(fdt_phys))   // root page + every subnode blob but LUO's
//!       .luo(&luo_state)                 // header, chains, records, arrays, folios
//!       .memblock(&memblock_fdt)         // reserve_mem regions
//!       .run();
//! ```

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

use alloc::vec::Vec;
use core::fmt;

use crate::addr::{Block, Order, PAGE_SIZE, PhysAddr, PhysRange};
use crate::fdt::KhoFdt;
use crate::luo::state::{FileData, LuoState};
use crate::luo::{HandlerKind, HandlerName, LUO_KHO_ENTRY_NAME, LuoPath, SessionName};
use crate::memblock::MemblockFdt;
use crate::name::FdtName;
use crate::tracker::{PreservedLookup, PreservedSet, TrackerPages};
use crate::walk::WalkError;

mod tree;

pub use tree::TreeTracker;

/// A tracker the cross-layer check can ask both ways: which block holds
/// an address ([`PreservedLookup`]), and every block (for the orphans).
pub trait PreservedBlocks: PreservedLookup {
    /// Calls `f(first, count)` for every run of `count` consecutive
    /// blocks of `first`'s order, together every preserved block once, in
    /// any order. An error ends the enumeration (a tree that no longer
    /// reads as it did).
    fn for_each_run(&self, f: &mut dyn FnMut(Block, u64)) -> Result<(), WalkError>;
}

impl PreservedBlocks for PreservedSet {
    fn for_each_run(&self, f: &mut dyn FnMut(Block, u64)) -> Result<(), WalkError> {
        for b in self.blocks() {
            f(*b, 1);
        }
        Ok(())
    }
}

impl<M: crate::mem::PageMap + ?Sized> PreservedBlocks for crate::v1::V1Tracker<'_, M> {
    fn for_each_run(&self, f: &mut dyn FnMut(Block, u64)) -> Result<(), WalkError> {
        crate::v1::V1Tracker::for_each_run(self, f);
        Ok(())
    }
}

/// What owns a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// The root FDT page.
    RootFdt,
    /// A root FDT subnode's blob.
    Blob(FdtName),
    /// A `reserve_mem` region of the memblock blob.
    ReserveMem(FdtName),
    /// The LUO header.
    LuoHeader,
    /// A block of the session chain.
    SessionBlock,
    /// A block of a session's file chain.
    FileBlock(LuoPath),
    /// The FLB header page.
    FlbHeader,
    /// A file handler's record.
    Record(LuoPath),
    /// A chunk of a file's array.
    ArrayChunk(LuoPath),
    /// An entry of a file's array.
    ArrayPage(LuoPath),
    /// A folio of a file: its slot in the folio array.
    Folio(LuoPath, u64),
    /// A block a subnode's blob lists, in a format the caller reads (not
    /// one of this crate's): the index of the block in that list.
    Listed(FdtName, u64),
}

impl fmt::Display for ClaimKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RootFdt => f.write_str("root FDT"),
            Self::Blob(n) => write!(f, "subnode `{n}` blob"),
            Self::ReserveMem(n) => write!(f, "reserve_mem `{n}`"),
            Self::LuoHeader => f.write_str("LUO header"),
            Self::SessionBlock => f.write_str("LUO session block"),
            Self::FileBlock(p) => write!(f, "{p}: file block"),
            Self::FlbHeader => f.write_str("LUO FLB header"),
            Self::Record(p) => write!(f, "{p}: record"),
            Self::ArrayChunk(p) => write!(f, "{p}: array chunk"),
            Self::ArrayPage(p) => write!(f, "{p}: array page"),
            Self::Folio(p, slot) => write!(f, "{p} / folio {slot}"),
            Self::Listed(n, i) => write!(f, "subnode `{n}` / block {i}"),
        }
    }
}

/// How the tracker must hold a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// As exactly this block: the claim's start, this order.
    Block(Order),
    /// As the head of a block of any order (the claim grows to the block).
    Head,
    /// Every page inside some block.
    Covered,
}

/// A byte range a structure owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The bytes (after [`CrossCheck::run`], a head claim spans its block).
    pub range: PhysRange,
    /// The owner.
    pub kind: ClaimKind,
    /// How the tracker must hold it.
    pub expect: Expect,
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.range)
    }
}

/// A broken cross-layer rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Finding {
    /// No preserved block holds the claim's start.
    #[error("{claim}: not preserved")]
    NotPreserved {
        /// The claim.
        claim: Claim,
    },
    /// Preserved, but as another block than expected.
    #[error("{claim}: preserved as {found:?}, expected order {expected}")]
    OtherOrder {
        /// The claim.
        claim: Claim,
        /// The order expected.
        expected: Order,
        /// The block found.
        found: Block,
    },
    /// A folio inside a larger preserved block, not at its head.
    #[error("{claim}: inside the preserved {found:?}, not at its head")]
    NotHead {
        /// The claim.
        claim: Claim,
        /// The block found.
        found: Block,
    },
    /// A page of a blob or region that no block covers.
    #[error("{claim}: page {page} is not preserved")]
    Uncovered {
        /// The claim.
        claim: Claim,
        /// The first uncovered page.
        page: PhysAddr,
    },
    /// Two claims share memory.
    #[error("{first} and {second} claim the same memory")]
    Overlap {
        /// The claim that starts first.
        first: Claim,
        /// The claim that starts inside it.
        second: Claim,
    },
    /// A claim on a page of the radix tree itself.
    #[error("{claim} lies on tracker page {page}")]
    TrackerPage {
        /// The claim.
        claim: Claim,
        /// The tree page.
        page: PhysAddr,
    },
    /// A folio whose page index is past the file's size.
    #[error("{path} / folio {slot}: page index {index} lies beyond the file size {size:#x}")]
    IndexBeyondSize {
        /// The file.
        path: LuoPath,
        /// The folio's slot.
        slot: u64,
        /// Its page index.
        index: u64,
        /// The file size.
        size: u64,
    },
    /// A folio whose page index is not a multiple of its size.
    #[error("{path} / folio {slot}: page index {index} is not aligned to its order {order}")]
    IndexMisaligned {
        /// The file.
        path: LuoPath,
        /// The folio's slot.
        slot: u64,
        /// Its page index.
        index: u64,
        /// Its order.
        order: Order,
    },
    /// Two folios of a file covering one page index.
    #[error("{path}: folios {first} and {second} both cover page index {index}")]
    IndexOverlap {
        /// The file.
        path: LuoPath,
        /// The folio with the lower index.
        first: u64,
        /// The other.
        second: u64,
        /// The first page index both cover.
        index: u64,
    },
    /// A guest_memfd whose `vm_token` names no file of its session.
    #[error("{path}: vm_token {vm_token:#x} names no file of the session")]
    VmTokenUnknown {
        /// The guest_memfd.
        path: LuoPath,
        /// Its `vm_token`.
        vm_token: u64,
    },
    /// A guest_memfd whose `vm_token` names a file that is not a VM.
    #[error("{path}: vm_token {vm_token:#x} names {target} (`{compatible}`), not a kvm VM")]
    VmTokenNotKvm {
        /// The guest_memfd.
        path: LuoPath,
        /// Its `vm_token`.
        vm_token: u64,
        /// The file it names.
        target: LuoPath,
        /// That file's handler.
        compatible: HandlerName,
    },
    /// Two files of a session with one token.
    #[error("{session}: files {first} and {second} share token {token:#x}")]
    DuplicateToken {
        /// The session.
        session: LuoPath,
        /// The token.
        token: u64,
        /// The first file's index.
        first: u64,
        /// The second's.
        second: u64,
    },
    /// The tracker could not enumerate its blocks again (the orphans are
    /// then a lower bound).
    #[error("the preserved-memory map no longer reads as it did: {error}")]
    Reread {
        /// The error of the second reading.
        error: WalkError,
    },
    /// Two sessions with one name.
    #[error("sessions {first} and {second} are both named `{name}`")]
    DuplicateSession {
        /// The name.
        name: SessionName,
        /// The first session's index.
        first: u64,
        /// The second's.
        second: u64,
    },
}

/// Preserved blocks no structure claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Orphans {
    /// How many.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The first [`Orphans::FIRST`], ascending.
    pub first: Vec<Block>,
}

impl Orphans {
    /// How many orphans are listed by address.
    pub const FIRST: usize = 8;
}

/// The outcome of [`CrossCheck::run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrossReport {
    /// The broken rules, in check order.
    pub findings: Vec<Finding>,
    /// Unclaimed preserved memory.
    pub orphans: Orphans,
    /// Every claim, ascending by start (head claims grown to their block).
    pub claims: Vec<Claim>,
}

impl CrossReport {
    /// Whether every rule holds and no block is orphaned.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.orphans.blocks == 0
    }
}

#[derive(Debug, Clone, Copy)]
struct FolioRef {
    path: LuoPath,
    slot: u64,
    index: u64,
    size: u64,
    /// Its claim's index.
    claim: usize,
}

/// Collects claims, then runs the checks of the module doc.
#[derive(Debug)]
pub struct CrossCheck<'t> {
    tracker: &'t dyn PreservedBlocks,
    tracker_pages: Vec<PhysAddr>,
    claims: Vec<Claim>,
    folios: Vec<FolioRef>,
    findings: Vec<Finding>,
}

fn page_range(phys: PhysAddr) -> Option<PhysRange> {
    PhysRange::from_start_size(phys, PAGE_SIZE).ok()
}

impl fmt::Debug for dyn PreservedBlocks + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreservedBlocks")
    }
}

impl<'t> CrossCheck<'t> {
    /// A check against `tracker`.
    pub fn new(tracker: &'t dyn PreservedBlocks) -> Self {
        Self {
            tracker,
            tracker_pages: Vec::new(),
            claims: Vec::new(),
            folios: Vec::new(),
            findings: Vec::new(),
        }
    }

    /// The radix tree's own pages, which no structure may claim.
    pub fn tracker_pages(mut self, pages: &TrackerPages) -> Self {
        self.tracker_pages = pages.iter().collect();
        self
    }

    fn claim(&mut self, range: Option<PhysRange>, kind: ClaimKind, expect: Expect) {
        if let Some(range) = range.filter(|r| !r.is_empty()) {
            self.claims.push(Claim {
                range,
                kind,
                expect,
            });
        }
    }

    fn page(&mut self, phys: PhysAddr, kind: ClaimKind) {
        self.claim(page_range(phys), kind, Expect::Block(Order::ZERO));
    }

    /// The root FDT's page, preserved at order 0.
    pub fn root_fdt(mut self, phys: PhysAddr) -> Self {
        self.page(phys, ClaimKind::RootFdt);
        self
    }

    /// Block `index` of the list in subnode `name`'s blob, a format the
    /// caller parsed: preserved as exactly this block.
    pub fn listed(mut self, name: &str, index: u64, block: Block) -> Self {
        self.claim(
            block.range(),
            ClaimKind::Listed(FdtName::new(name), index),
            Expect::Block(block.order()),
        );
        self
    }

    /// A subnode's blob: `size` bytes at `phys` (a page when unknown),
    /// every page preserved.
    pub fn blob(mut self, name: &str, phys: PhysAddr, size: Option<u64>) -> Self {
        let size = size.unwrap_or(PAGE_SIZE);
        self.claim(
            PhysRange::from_start_size(phys, size).ok(),
            ClaimKind::Blob(FdtName::new(name)),
            Expect::Covered,
        );
        self
    }

    /// The root FDT's page (when its address is known) and every subnode's
    /// blob except LUO's, which [`CrossCheck::luo`] claims structure by
    /// structure.
    pub fn kho_fdt(mut self, fdt: &KhoFdt<'_>, phys: Option<PhysAddr>) -> Self {
        if let Some(p) = phys {
            self = self.root_fdt(p);
        }
        for n in fdt.subnodes() {
            if n.name() != LUO_KHO_ENTRY_NAME {
                self = self.blob(n.name(), n.data(), n.size());
            }
        }
        self
    }

    /// The `reserve_mem` regions of a memblock blob.
    pub fn memblock(mut self, blob: &MemblockFdt<'_>) -> Self {
        for r in blob.regions() {
            self.claim(
                Some(r.range),
                ClaimKind::ReserveMem(FdtName::new(r.name)),
                Expect::Covered,
            );
        }
        self
    }

    /// Every structure of a LUO handover, and its file-level rules.
    pub fn luo(mut self, state: &LuoState) -> Self {
        self.page(state.header.blob, ClaimKind::LuoHeader);
        for b in &state.session_blocks {
            self.page(*b, ClaimKind::SessionBlock);
        }
        if let Some(h) = state.flb_header {
            self.page(h, ClaimKind::FlbHeader);
        }
        for (i, s) in state.sessions.iter().enumerate() {
            let spath = s.session.path();
            if let Some(first) = state
                .sessions
                .iter()
                .take(i)
                .find(|o| o.session.name == s.session.name)
            {
                self.findings.push(Finding::DuplicateSession {
                    name: s.session.name,
                    first: first.session.index,
                    second: s.session.index,
                });
            }
            for b in &s.file_blocks {
                self.page(*b, ClaimKind::FileBlock(spath));
            }
            for (j, f) in s.files.iter().enumerate() {
                let path = f.file.path;
                if let Some(first) = s
                    .files
                    .iter()
                    .take(j)
                    .find(|o| o.file.token == f.file.token)
                {
                    self.findings.push(Finding::DuplicateToken {
                        session: spath,
                        token: f.file.token,
                        first: first.file.index,
                        second: f.file.index,
                    });
                }
                if let Some(rec) = f.data.record() {
                    self.page(rec, ClaimKind::Record(path));
                }
                if let Some(area) = f.data.area() {
                    for c in &area.chunks {
                        self.page(*c, ClaimKind::ArrayChunk(path));
                    }
                    for b in &area.blocks {
                        self.claim(
                            b.range(),
                            ClaimKind::ArrayPage(path),
                            Expect::Block(b.order()),
                        );
                    }
                }
                let (expect, size) = match &f.data {
                    FileData::Memfd { rec, .. } => (Expect::Head, rec.size),
                    FileData::GuestMemfd { rec, .. } => (Expect::Block(Order::ZERO), rec.size),
                    FileData::Kvm { .. } | FileData::Unknown { .. } => (Expect::Covered, 0),
                };
                for e in f.data.folios() {
                    let Some(pfn) = e.pfn else { continue };
                    let claim = self.claims.len();
                    self.claim(
                        page_range(pfn.phys()),
                        ClaimKind::Folio(path, e.slot),
                        expect,
                    );
                    if self.claims.len() > claim {
                        self.folios.push(FolioRef {
                            path,
                            slot: e.slot,
                            index: e.index,
                            size,
                            claim,
                        });
                    }
                }
                if let FileData::GuestMemfd { rec, .. } = &f.data {
                    match s.files.iter().find(|o| o.file.token == rec.vm_token) {
                        None => self.findings.push(Finding::VmTokenUnknown {
                            path,
                            vm_token: rec.vm_token,
                        }),
                        Some(t) if t.file.kind() != HandlerKind::Kvm => {
                            self.findings.push(Finding::VmTokenNotKvm {
                                path,
                                vm_token: rec.vm_token,
                                target: t.file.path,
                                compatible: t.file.compatible,
                            });
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        self
    }

    /// Checks claim `i` against the tracker; grows a head claim to its block.
    fn check_claim(&mut self, i: usize) {
        let Some(c) = self.claims.get(i).copied() else {
            return;
        };
        let start = c.range.start();
        match c.expect {
            Expect::Block(order) => match self.tracker.block_containing(start) {
                None => self.findings.push(Finding::NotPreserved { claim: c }),
                Some(found) if found.phys() == start && found.order() == order => {}
                Some(found) => self.findings.push(Finding::OtherOrder {
                    claim: c,
                    expected: order,
                    found,
                }),
            },
            Expect::Head => match self.tracker.block_containing(start) {
                None => self.findings.push(Finding::NotPreserved { claim: c }),
                Some(found) if found.phys() == start => {
                    if let (Some(r), Some(slot)) = (found.range(), self.claims.get_mut(i)) {
                        slot.range = r;
                    }
                }
                Some(found) => self.findings.push(Finding::NotHead { claim: c, found }),
            },
            Expect::Covered => {
                let mut page = start.align_down(PAGE_SIZE);
                while page < c.range.end() {
                    match self.tracker.block_containing(page).and_then(|b| b.range()) {
                        Some(r) => page = r.end(),
                        None => {
                            self.findings.push(Finding::Uncovered { claim: c, page });
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Folio rules: index within size, aligned to the order, no overlap.
    fn check_folios(&mut self) {
        let mut spans: Vec<(LuoPath, u64, u64, u64)> = Vec::with_capacity(self.folios.len());
        for f in &self.folios {
            let Some(c) = self.claims.get(f.claim) else {
                continue;
            };
            if f.index.checked_mul(PAGE_SIZE).is_none_or(|b| b >= f.size) {
                self.findings.push(Finding::IndexBeyondSize {
                    path: f.path,
                    slot: f.slot,
                    index: f.index,
                    size: f.size,
                });
            }
            let pages = c.range.size() >> crate::addr::PAGE_SHIFT;
            let order = Order::try_new(pages.trailing_zeros()).unwrap_or(Order::ZERO);
            if !f.index.is_multiple_of(pages.max(1)) {
                self.findings.push(Finding::IndexMisaligned {
                    path: f.path,
                    slot: f.slot,
                    index: f.index,
                    order,
                });
            }
            spans.push((f.path, f.index, f.index.saturating_add(pages), f.slot));
        }
        // Per file (files are contiguous runs of `spans`), sort by index.
        let mut start = 0;
        while start < spans.len() {
            let path = spans.get(start).map(|s| s.0);
            let end = spans
                .iter()
                .skip(start)
                .position(|s| Some(s.0) != path)
                .map_or(spans.len(), |n| start.saturating_add(n));
            if let Some(run) = spans.get_mut(start..end) {
                run.sort_unstable_by_key(|s| (s.1, s.3));
                for pair in run.windows(2) {
                    if let [a, b] = pair
                        && b.1 < a.2
                    {
                        self.findings.push(Finding::IndexOverlap {
                            path: a.0,
                            first: a.3,
                            second: b.3,
                            index: b.1,
                        });
                    }
                }
            }
            start = end;
        }
    }

    /// Runs the checks.
    pub fn run(mut self) -> CrossReport {
        for i in 0..self.claims.len() {
            self.check_claim(i);
        }
        self.check_folios();
        let mut claims = core::mem::take(&mut self.claims);
        claims.sort_unstable_by_key(|c| (c.range.start(), c.range.end()));
        // Overlaps: each claim against the one reaching furthest before it.
        let mut reach: Option<Claim> = None;
        for c in &claims {
            if let Some(r) = reach {
                if c.range.start() < r.range.end() {
                    self.findings.push(Finding::Overlap {
                        first: r,
                        second: *c,
                    });
                }
                if c.range.end() > r.range.end() {
                    reach = Some(*c);
                }
            } else {
                reach = Some(*c);
            }
        }
        // Tracker pages.
        self.tracker_pages.sort_unstable();
        for c in &claims {
            let i = self
                .tracker_pages
                .partition_point(|p| *p < c.range.start().align_down(PAGE_SIZE));
            if let Some(&page) = self.tracker_pages.get(i)
                && page < c.range.end()
            {
                self.findings.push(Finding::TrackerPage { claim: *c, page });
            }
        }
        // Orphans: blocks that touch no claim (claims sorted by start, with
        // a running furthest end).
        let mut merged: Vec<PhysRange> = Vec::new();
        for c in &claims {
            match merged.last_mut() {
                Some(last) if c.range.start() <= last.end() => {
                    if c.range.end() > last.end()
                        && let Ok(r) = PhysRange::new(last.start(), c.range.end())
                    {
                        *last = r;
                    }
                }
                _ => merged.push(c.range),
            }
        }
        let mut orphans = Orphans::default();
        let counted = self
            .tracker
            .for_each_run(&mut |first, count| orphan_run(&merged, first, count, &mut orphans));
        if let Err(error) = counted {
            self.findings.push(Finding::Reread { error });
        }
        CrossReport {
            findings: self.findings,
            orphans,
            claims,
        }
    }
}

/// Counts the blocks of the run of `count` blocks from `first` that touch
/// no range of `merged` (sorted, disjoint) into `orphans`, keeping the
/// [`Orphans::FIRST`] lowest addresses.
fn orphan_run(merged: &[PhysRange], first: Block, count: u64, orphans: &mut Orphans) {
    let size = u128::from(first.size());
    let start = u128::from(first.phys().as_u64());
    let end = start.saturating_add(size.saturating_mul(u128::from(count)));
    let as_u128 = |a: PhysAddr| u128::from(a.as_u64());
    // The block index (from the run's start) holding byte `at`, `at >= start`.
    let index = |at: u128| at.saturating_sub(start).checked_div(size).unwrap_or(0);
    let mut pos = start;
    while pos < end {
        let i = merged.partition_point(|m| as_u128(m.end()) <= pos);
        let (free_end, next) = match merged.get(i) {
            Some(m) if as_u128(m.start()) < end => {
                let s = as_u128(m.start()).max(pos);
                let touched_from = start.saturating_add(index(s).saturating_mul(size));
                let e = as_u128(m.end()).min(end);
                let touched_to = start.saturating_add(
                    index(e.saturating_add(size).saturating_sub(1)).saturating_mul(size),
                );
                (
                    touched_from,
                    touched_to.max(touched_from.saturating_add(size)),
                )
            }
            _ => (end, end),
        };
        let blocks = free_end.saturating_sub(pos).checked_div(size).unwrap_or(0);
        orphans.blocks = orphans
            .blocks
            .saturating_add(u64::try_from(blocks).unwrap_or(u64::MAX));
        orphans.bytes = orphans
            .bytes
            .saturating_add(u64::try_from(free_end.saturating_sub(pos)).unwrap_or(u64::MAX));
        let mut at = pos;
        while at < free_end {
            let Ok(a) = u64::try_from(at) else { break };
            let b = Block::containing(PhysAddr::new(a), first.order());
            let slot = orphans.first.partition_point(|x| x.phys() < b.phys());
            if slot >= Orphans::FIRST {
                break;
            }
            orphans.first.insert(slot, b);
            orphans.first.truncate(Orphans::FIRST);
            at = at.saturating_add(size);
        }
        pos = next;
    }
}

#[cfg(all(test, feature = "alloc"))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::panic
)]
mod tests;
