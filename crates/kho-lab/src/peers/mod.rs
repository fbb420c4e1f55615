//! The peer designs behind one trait: every way Linux tracked preserved
//! memory, or was offered to, modelled as its authors built it, so that
//! every comparison is ours against theirs on the same machine.
//!
//! Glossary:
//!
//! | name        | meaning                                                                   |
//! |-------------|---------------------------------------------------------------------------|
//! | scheme      | a tracker design: [`SchemeKind`]                                          |
//! | tracker     | the old kernel's side of a scheme: a [`Scheme`] (preserve, finalize, ...) |
//! | finalize    | the hand-over preparation: serialization into physical memory             |
//! | handover    | what finalize leaves: `compatible`, `preserved-memory-map` ([`Handover`]) |
//! | metadata    | every byte the tracker holds, simulated or modelled ([`Metadata`])        |
//! | restore     | the new kernel's side ([`SchemeKind::restore`]): the map read as a [`PreservedMap`], per strategy |
//! | reservation | `memblock_reserve` + `memblock_reserved_mark_noinit` ([`ReservationSink`]) |
//!
//! Finalize is zero work for the radix trees, which *are* the format; the
//! metadata of xa_nodes and maple nodes is modelled from the kernel's
//! object sizes. The 6.16 bitmaps come from kmalloc-512; mainline's mutex
//! is held around every add and the walk.
//!
//! # The schemes
//!
//! | scheme           | tracker (old kernel)                                   | lock     |
//! |------------------|--------------------------------------------------------|----------|
//! | `xarray-512`     | Linux 6.16: per order an xarray of 4096-bit bitmaps    | `xa_lock` to install a bitmap; loads lock-free, atomic `set_bit` |
//! | `xarray`         | the same with 32768-bit page bitmaps (later 6.17.y)    | the same |
//! | `radix-mainline` | mainline's radix tree                                  | a mutex  |
//! | `maple`          | the range proposal: a B-tree of ranges (merged with same-data neighbours) | tree lock |
//! | `kho`            | ours: the lock-free radix tree                         | none     |
//!
//! # Tracker x strategy
//!
//! The tracker decides what the old kernel pays (preserve, metadata,
//! finalize) and what the new kernel reads (the handover's format and its
//! reader, a [`PreservedMap`]); the restore [`Strategy`] decides what
//! memblock does with it. Every scheme restores through the one
//! accounting, [`kho_machine::reserve_preserved`], under every strategy its
//! handover can feed ([`SchemeKind::strategies`]):
//!
//! | scheme           | handover (`compatible`, map)             | extents as read          | strategies                                     |
//! |------------------|------------------------------------------|--------------------------|------------------------------------------------|
//! | `xarray-512`     | `kho-v1`, chunk list (by finalize)       | one per set bit          | per-block (6.16 `deserialize_bitmap`), coalesced, bulk |
//! | `xarray`         | `kho-v1`, chunk list (by finalize)       | one per set bit          | per-block, coalesced, bulk                     |
//! | `radix-mainline` | `kho-v3`, radix root                     | one per set bit          | per-block (mainline), mainline-fix-a, -ab, mainline-fix |
//! | `maple`          | `kho-maple-v1`, chunk list (by finalize) | one per range record     | coalesced (one reservation per range: the proposal's), bulk |
//! | `kho`            | `kho-v3`, radix root                     | one per set bit          | all seven                                      |
//!
//! `skip` needs the machine's buddy hand-over to skip the ranges, which
//! only our path has.
//!
//! Each module opens with its format and its honest cost choices.

use std::time::Instant;

use kho::{Block, MemError, PageAlloc, PageMap, PhysAddr, PhysRange, RamMap};
use kho_machine::{
    KhoMemoryInitStats, PreservedMap, RadixMap, RadixMapError, ReservationSink, ReserveError,
    Strategy,
};

pub mod machine;
pub mod maple;
pub mod radix;
pub mod xarray;

#[cfg(test)]
mod tests;

pub use machine::MachineScheme;
pub use maple::{MAPLE_COMPATIBLE, MAPLE_RECORDS_PER_CHUNK, MapleChunk, MapleRecord, MapleScheme};
pub use radix::{KhoScheme, RadixMainline};
pub use xarray::XarrayScheme;

/// Errors of the schemes, both sides.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    /// Simulated memory refused an allocation or an access.
    #[error("memory: {0}")]
    Mem(#[from] MemError),
    /// The radix tree refused an operation.
    #[error("radix tree: {0}")]
    Radix(#[from] kho::RadixError),
    /// The block is (partly) preserved already.
    #[error("{block:?} overlaps preserved memory")]
    Overlap {
        /// The block.
        block: Block,
    },
    /// The block is not preserved (maple: not wholly inside one range of
    /// its order).
    #[error("{block:?} is not preserved")]
    NotPreserved {
        /// The block.
        block: Block,
    },
    /// The handover is corrupt (radix walk).
    #[error("radix walk: {0}")]
    Walk(#[from] kho::WalkError),
    /// The handover is corrupt (kho-v1 chunk list).
    #[error("kho-v1 chunk list: {0}")]
    V1(#[from] kho::V1Error),
    /// The handover is corrupt (maple chunk list).
    #[error("maple chunk list: {reason} (chunk at {chunk})")]
    Maple {
        /// The chunk.
        chunk: PhysAddr,
        /// The first broken rule.
        reason: &'static str,
    },
    /// The new kernel's memblock (or memmap) refused a reservation.
    #[error(transparent)]
    Reserve(#[from] ReserveError),
    /// A root FDT could not be written.
    #[error("root FDT: {0}")]
    FdtWrite(vm_fdt::Error),
    /// A kho root FDT could not be built.
    #[error("root FDT: {0}")]
    FdtBuild(#[from] kho::FdtBuildError),
    /// A root FDT larger than a page.
    #[error("root FDT of {size} bytes, above {max}", max = kho::KHO_FDT_MAX_SIZE)]
    FdtTooLarge {
        /// Its size.
        size: usize,
    },
    /// A kho root FDT that does not parse.
    #[error("root FDT: {0}")]
    Fdt(#[from] kho::FdtError),
    /// A maple root FDT that does not parse.
    #[error("maple root FDT: {0}")]
    MapleFdt(#[from] dtoolkit::error::FdtParseError),
    /// A root FDT that breaks the scheme's layout.
    #[error("root FDT: {reason}")]
    FdtLayout {
        /// The first broken rule.
        reason: &'static str,
    },
    /// A node without a property the scheme needs.
    #[error("root FDT node {node:?}: no {property}")]
    MissingProperty {
        /// The node (`""`: the root).
        node: String,
        /// The property.
        property: &'static str,
    },
    /// A u64 property whose value is not 8 bytes.
    #[error("root FDT property {property}: {len} bytes, not 8")]
    PropertySize {
        /// The property.
        property: &'static str,
        /// Its length.
        len: usize,
    },
    /// A root FDT of another scheme.
    #[error("compatible {found}, not {want}")]
    Compatible {
        /// The compatible found.
        found: String,
        /// The scheme's.
        want: &'static str,
    },
    /// A restore strategy the scheme's handover cannot feed
    /// ([`SchemeKind::strategies`]).
    #[error("scheme {scheme} cannot feed the {strategy} strategy (it feeds: {list})", list = strategy_list(*scheme))]
    Strategy {
        /// The scheme.
        scheme: SchemeKind,
        /// The strategy refused.
        strategy: Strategy,
    },
    /// Finalize was called twice, or preserve after finalize.
    #[error("the tracker is finalized")]
    Finalized,
}

fn strategy_list(scheme: SchemeKind) -> String {
    let names: Vec<&str> = scheme.strategies().iter().map(|s| s.as_str()).collect();
    names.join(", ")
}

/// A tracker design (the `--scheme` of `kho run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemeKind {
    /// Linux 6.16: xarrays of 512-byte (4096-bit) bitmaps, kho-v1.
    Xarray512,
    /// Later 6.17.y: xarrays of page (32768-bit) bitmaps, kho-v1.
    XarrayPage,
    /// Mainline's radix tree under one mutex; per-block restore.
    RadixMainline,
    /// The maple-tree range proposal.
    Maple,
    /// Ours.
    Kho,
}

impl SchemeKind {
    /// Every scheme, in report order.
    pub const ALL: [Self; 5] = [
        Self::Xarray512,
        Self::XarrayPage,
        Self::RadixMainline,
        Self::Maple,
        Self::Kho,
    ];

    /// The command-line and report name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Xarray512 => "xarray-512",
            Self::XarrayPage => "xarray",
            Self::RadixMainline => "radix-mainline",
            Self::Maple => "maple",
            Self::Kho => "kho",
        }
    }

    /// The scheme named `s` (`xarray-4k` and `xarray-page` are accepted as
    /// aliases).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "xarray-4k" => Some(Self::Xarray512),
            "xarray-page" => Some(Self::XarrayPage),
            _ => Self::ALL.into_iter().find(|k| k.name() == s),
        }
    }

    /// The root FDT `compatible` of its handover.
    pub const fn compatible(self) -> &'static str {
        match self {
            Self::Xarray512 | Self::XarrayPage => "kho-v1",
            Self::RadixMainline | Self::Kho => "kho-v3",
            Self::Maple => MAPLE_COMPATIBLE,
        }
    }

    /// A fresh tracker whose memory comes from `mem` (the old kernel's
    /// buddy allocator).
    pub fn tracker<'a, M: PageAlloc + PageMap + Sync + ?Sized>(
        self,
        mem: &'a M,
    ) -> Result<Box<dyn Scheme + 'a>, SchemeError> {
        Ok(match self {
            Self::Xarray512 => Box::new(XarrayScheme::new(mem, kho::BitmapSize::Bytes512)),
            Self::XarrayPage => Box::new(XarrayScheme::new(mem, kho::BitmapSize::Page)),
            Self::RadixMainline => Box::new(RadixMainline::new(mem)?),
            Self::Maple => Box::new(MapleScheme::new(mem)),
            Self::Kho => Box::new(KhoScheme::new(mem)?),
        })
    }

    /// The restore strategies its handover can feed, in report order
    /// ([`Strategy::ALL`]'s): the bitmaps (one extent per set bit) per
    /// block, coalesced and bulk; maple's ranges coalesced (one
    /// reservation per maximal range: its records, merged where records of
    /// two orders touch) and bulk; mainline's radix tree per block and the
    /// steps of its smallest fix; ours every strategy. `skip` needs the
    /// machine's own path (the buddy hand-over skips the ranges), so only
    /// ours has it.
    pub const fn strategies(self) -> &'static [Strategy] {
        use Strategy::{Bulk, Coalesced, MainlineFix, MainlineFixA, MainlineFixAb, PerBlock};
        match self {
            Self::Xarray512 | Self::XarrayPage => &[PerBlock, Coalesced, Bulk],
            Self::RadixMainline => &[PerBlock, MainlineFixA, MainlineFixAb, MainlineFix],
            Self::Maple => &[Coalesced, Bulk],
            Self::Kho => &Strategy::ALL,
        }
    }

    /// Whether its handover can feed `strategy` ([`SchemeKind::strategies`]).
    pub fn feeds(self, strategy: Strategy) -> bool {
        self.strategies().contains(&strategy)
    }

    /// The new kernel's restore: reads the handover whose map is at `root`
    /// from `mem` (checked against `ram`) as the scheme's [`PreservedMap`],
    /// and accounts every preserved block in `sink` per `strategy` with the
    /// machine's one accounting, [`kho_machine::reserve_preserved`]: the
    /// tracker decides what is read (its format and reader), the strategy
    /// what memblock does. Returns the accounting's figures and, for `skip`
    /// (ours only), the ranges the buddy hand-over must skip. A strategy
    /// the handover cannot feed is refused before anything is read.
    pub fn restore<M: PageMap + ?Sized, S: ReservationSink + ?Sized>(
        self,
        strategy: Strategy,
        mem: &M,
        ram: RamMap<'_>,
        root: PhysAddr,
        sink: &mut S,
    ) -> Result<(KhoMemoryInitStats, Vec<PhysRange>), SchemeError> {
        if !self.feeds(strategy) {
            return Err(SchemeError::Strategy {
                scheme: self,
                strategy,
            });
        }
        match self {
            Self::Xarray512 | Self::XarrayPage => {
                let size = match self {
                    Self::Xarray512 => kho::BitmapSize::Bytes512,
                    _ => kho::BitmapSize::Page,
                };
                let mut list = xarray::ChunkList::new(mem, ram, root, size);
                reserve(strategy, &mut list, sink)
            }
            Self::RadixMainline => radix::under_tree_lock(|| {
                reserve(strategy, &mut RadixMap::new(mem, ram, root), sink)
            }),
            Self::Maple => reserve(strategy, &mut maple::ChunkList::new(mem, ram, root), sink),
            Self::Kho => reserve(strategy, &mut RadixMap::new(mem, ram, root), sink),
        }
    }
}

impl std::fmt::Display for SchemeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What finalize left in memory for the next kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// Root FDT `compatible`.
    pub compatible: &'static str,
    /// Root FDT `preserved-memory-map`: the radix root or the first chunk
    /// (zero: an empty chunk list).
    pub root: PhysAddr,
}

/// Every byte a tracker holds, counted exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Pages of simulated memory the tracker allocated (radix nodes,
    /// bitmaps, chunks), ascending: the next kernel reads them, so the old
    /// kernel must keep them from poison.
    pub pages: Vec<PhysAddr>,
    /// Bytes of kernel objects the model keeps on the host heap but counts
    /// as the kernel sizes them (xarray's `xa_node`, maple's nodes).
    pub object_bytes: u64,
    /// Those objects' slab pages: objects packed whole into 4 KiB pages,
    /// rounded up.
    pub object_pages: u64,
}

impl Metadata {
    /// All pages: simulated ones plus the objects' slab pages.
    pub fn total_pages(&self) -> u64 {
        (self.pages.len() as u64).saturating_add(self.object_pages)
    }
}

/// Slab pages for `n` objects of `size` bytes: whole objects per 4 KiB page.
pub fn slab_pages(n: u64, size: u64) -> u64 {
    let per_page = (kho::PAGE_SIZE / size.max(1)).max(1);
    n.div_ceil(per_page)
}

/// The old kernel's side of a scheme.
///
/// `preserve` and `unpreserve` take `&self`: the kernel calls them from many
/// threads, and each scheme pays its own synchronisation (a mutex for the
/// peers, none for ours).
pub trait Scheme: Send + Sync {
    /// Which scheme.
    fn kind(&self) -> SchemeKind;
    /// `kho_preserve_folio` of `block`.
    fn preserve(&self, block: Block) -> Result<(), SchemeError>;
    /// `kho_unpreserve_folio` of `block`.
    fn unpreserve(&self, block: Block) -> Result<(), SchemeError>;
    /// The hand-over preparation: serializes into memory where the scheme
    /// needs it. Called once, after the last preserve.
    fn finalize(&mut self) -> Result<Handover, SchemeError>;
    /// Every byte the tracker holds now.
    fn metadata(&self) -> Metadata;
}

/// [`kho_machine::reserve_preserved`] of `map` per `strategy`.
fn reserve<M, S>(
    strategy: Strategy,
    map: &mut M,
    sink: &mut S,
) -> Result<(KhoMemoryInitStats, Vec<PhysRange>), SchemeError>
where
    M: PreservedMap + ?Sized,
    S: ReservationSink + ?Sized,
    SchemeError: From<M::Error>,
{
    Ok(kho_machine::reserve_preserved(strategy, map, sink)?)
}

/// [`PreservedMap::coalesced`] of a chunk list whose extents come
/// ascending within runs (per order for the bitmaps; the whole list for
/// maple): touching extents merged as they are read, then the runs merged
/// (sorted) if they are not in order already; `head` sees every block in
/// the same pass. The heap holds the merged runs, not one range per
/// extent.
fn coalesce_as_read<M, F>(
    map: &mut M,
    mut head: F,
) -> Result<(Vec<PhysRange>, kho_machine::MapSummary), M::Error>
where
    M: PreservedMap + ?Sized,
    F: FnMut(Block) -> Result<(), kho_machine::ReserveError>,
{
    let mut ranges: Vec<PhysRange> = Vec::new();
    let mut sorted = true;
    let summary = map.for_each_extent(|e| {
        e.blocks().try_for_each(&mut head)?;
        let Some(r) = e.range() else {
            return Ok(());
        };
        match ranges.last_mut() {
            Some(last) if last.end() == r.start() => {
                *last = PhysRange::new(last.start(), r.end()).unwrap_or(*last);
            }
            Some(last) => {
                sorted &= last.end() < r.start();
                ranges.push(r);
            }
            None => ranges.push(r),
        }
        Ok(())
    })?;
    let ranges = if sorted {
        ranges
    } else {
        kho::merge_ranges(ranges)
    };
    Ok((ranges, summary))
}

impl From<vm_fdt::Error> for SchemeError {
    fn from(e: vm_fdt::Error) -> Self {
        Self::FdtWrite(e)
    }
}

impl From<RadixMapError> for SchemeError {
    fn from(e: RadixMapError) -> Self {
        match e {
            RadixMapError::Walk { source, .. } => Self::Walk(source),
            RadixMapError::Reserve(e) => Self::Reserve(e),
        }
    }
}

pub use kho_machine::Recorder;

/// One scheme's preserve / finalize / restore, measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemeRun {
    /// Which.
    pub kind: SchemeKind,
    /// Preserving every block, ms.
    pub preserve_ms: f64,
    /// Finalize (the hand-over preparation), ms.
    pub finalize_ms: f64,
    /// Metadata after finalize.
    pub metadata: Metadata,
    /// The handover's map (read again for other strategies).
    pub root: PhysAddr,
    /// The restore.
    pub restore: KhoMemoryInitStats,
}

/// Preserves `blocks` through `kind` with memory from `mem`, finalizes and
/// restores into `sink` from the same memory per `strategy`.
pub fn run_scheme<M: PageAlloc + PageMap + Sync + ?Sized>(
    kind: SchemeKind,
    strategy: Strategy,
    mem: &M,
    ram: RamMap<'_>,
    blocks: &[Block],
    sink: &mut dyn ReservationSink,
) -> Result<SchemeRun, SchemeError> {
    let mut s = kind.tracker(mem)?;
    let t = Instant::now();
    for &b in blocks {
        s.preserve(b)?;
    }
    let preserve = t.elapsed();
    let t = Instant::now();
    let h = s.finalize()?;
    let finalize = t.elapsed();
    let metadata = s.metadata();
    drop(s);
    let (restore, skip) = kind.restore(strategy, mem, ram, h.root, sink)?;
    std::hint::black_box(skip);
    Ok(SchemeRun {
        kind,
        preserve_ms: preserve.as_secs_f64() * 1e3,
        finalize_ms: finalize.as_secs_f64() * 1e3,
        metadata,
        root: h.root,
        restore,
    })
}
