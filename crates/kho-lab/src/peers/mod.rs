//! The peer designs behind one trait: every way Linux tracked preserved
//! memory, or was offered to, modelled as its authors built it, so that
//! every comparison is ours against theirs on the same machine.
//!
//! Glossary:
//!
//! | name          | meaning                                                                        |
//! |---------------|--------------------------------------------------------------------------------|
//! | scheme        | a tracker design: [`SchemeKind`]                                               |
//! | tracker       | the old kernel's side of a scheme: a [`Scheme`] (preserve, unpreserve, finalize) |
//! | finalize      | the hand-over preparation: serialization into physical memory (zero work for the radix trees, which *are* the format) |
//! | handover      | what finalize leaves: the root FDT `compatible` and `preserved-memory-map` ([`Handover`]) |
//! | metadata      | every byte the tracker holds, in simulated memory or (xa_node, maple node) modelled from the kernel's object sizes ([`Metadata`]) |
//! | restore       | the new kernel's side: read the handover and account the memory in memblock the way the scheme's authors did ([`SchemeKind::restore`]) |
//! | reservation   | one `memblock_reserve` + `memblock_reserved_mark_noinit` pair ([`Reserve`])   |
//!
//! # The schemes
//!
//! | scheme             | tracker (old kernel)                                              | lock          | handover (`compatible`, map)             | restore (new kernel)                  |
//! |--------------------|-------------------------------------------------------------------|---------------|------------------------------------------|---------------------------------------|
//! | `xarray-512`       | Linux 6.16: per order an xarray (64-slot radix) of 4096-bit bitmaps from kmalloc-512 | xa_lock (a Mutex) | `kho-v1`, chunk list head (written by finalize) | one reservation per set bit (6.16 `deserialize_bitmap`) |
//! | `xarray`           | the same with 32768-bit page bitmaps (later 6.17.y)               | xa_lock       | `kho-v1`, chunk list head                | one reservation per set bit           |
//! | `radix-mainline`   | mainline's radix tree, one mutex around every add and the walk    | a Mutex       | `kho-v3`, radix root (no serialization)  | one reservation per set bit           |
//! | `maple`            | the range proposal: a B-tree of ranges merged with neighbours of the same data word | the tree lock (a Mutex) | `kho-maple-v1`, chunk list head (written by finalize) | one reservation per range |
//! | `kho`              | ours: the lock-free radix tree                                   | none          | `kho-v3`, radix root (no serialization)  | coalesced: one reservation per maximal range (the machine offers every strategy) |
//!
//! Each module opens with its format and its honest cost choices.

use std::time::{Duration, Instant};

use kho::{Block, MemError, PageAlloc, PageMap, PhysAddr, PhysRange, RamMap};

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// The new kernel's memblock refused a reservation.
    #[error("reserving {range}: {reason}")]
    Reserve {
        /// The range.
        range: PhysRange,
        /// Why.
        reason: String,
    },
    /// Finalize was called twice, or preserve after finalize.
    #[error("the tracker is finalized")]
    Finalized,
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

    /// The new kernel's restore: reads the handover whose map is at `root`
    /// from `mem` (checked against `ram`), and accounts every preserved
    /// block in `target` the way the scheme's authors did. Validation
    /// happens before the first reservation only where the scheme's
    /// authors did it (kho); the others reserve as they read, as Linux did.
    pub fn restore<M: PageMap + ?Sized>(
        self,
        mem: &M,
        ram: RamMap<'_>,
        root: PhysAddr,
        target: &mut dyn Reserve,
    ) -> Result<RestoreStats, SchemeError> {
        let t = Instant::now();
        let mut st = match self {
            Self::Xarray512 => xarray::restore(mem, ram, root, kho::BitmapSize::Bytes512, target),
            Self::XarrayPage => xarray::restore(mem, ram, root, kho::BitmapSize::Page, target),
            Self::RadixMainline => radix::restore_per_block(mem, ram, root, target),
            Self::Maple => maple::restore(mem, ram, root, target),
            Self::Kho => radix::restore_coalesced(mem, ram, root, target),
        }?;
        st.time = t.elapsed();
        Ok(st)
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

/// The new kernel's memblock as restore sees it.
pub trait Reserve {
    /// `memblock_reserve` + `memblock_reserved_mark_noinit` of `range`.
    fn reserve(&mut self, range: PhysRange) -> Result<(), SchemeError>;
    /// `page->private = {order, KHOP}` of `block`'s head page (6.16 wrote
    /// only the order; the word written costs the same).
    fn head(&mut self, block: Block) -> Result<(), SchemeError>;
}

/// What a restore did and needed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Blocks found.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Reservations made ([`Reserve::reserve`] calls).
    pub reservations: u64,
    /// Peak bytes of the restore's own data structures (heap), beyond the
    /// handover it reads in place.
    pub peak_bytes: u64,
    /// Wall time of the whole restore.
    pub time: Duration,
}

impl RestoreStats {
    fn block(&mut self, b: Block) {
        self.blocks = self.blocks.saturating_add(1);
        self.bytes = self.bytes.saturating_add(b.size());
    }
}

/// The per-block reservation of mainline and 6.16: reserve, mark noinit,
/// head, for one block.
fn reserve_block(
    target: &mut dyn Reserve,
    st: &mut RestoreStats,
    b: Block,
) -> Result<(), SchemeError> {
    let range = b.range().ok_or(SchemeError::NotPreserved { block: b })?;
    target.reserve(range)?;
    target.head(b)?;
    st.block(b);
    st.reservations = st.reservations.saturating_add(1);
    Ok(())
}

/// A [`Reserve`] that records: the blocks in the order their heads were
/// written and the reservations in call order (the lab's oracle side).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorder {
    /// Heads written.
    pub heads: Vec<Block>,
    /// Reservations made.
    pub reserved: Vec<PhysRange>,
}

impl Reserve for Recorder {
    fn reserve(&mut self, range: PhysRange) -> Result<(), SchemeError> {
        self.reserved.push(range);
        Ok(())
    }

    fn head(&mut self, block: Block) -> Result<(), SchemeError> {
        self.heads.push(block);
        Ok(())
    }
}

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
    /// The restore.
    pub restore: RestoreStats,
}

/// Preserves `blocks` through `kind` with memory from `mem`, finalizes and
/// restores into `target` from the same memory.
pub fn run_scheme<M: PageAlloc + PageMap + Sync + ?Sized>(
    kind: SchemeKind,
    mem: &M,
    ram: RamMap<'_>,
    blocks: &[Block],
    target: &mut dyn Reserve,
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
    let restore = kind.restore(mem, ram, h.root, target)?;
    Ok(SchemeRun {
        kind,
        preserve_ms: preserve.as_secs_f64() * 1e3,
        finalize_ms: finalize.as_secs_f64() * 1e3,
        metadata,
        restore,
    })
}
