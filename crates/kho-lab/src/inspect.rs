//! `kho inspect`: decode and validate a real handover from a memory image.
//!
//! # Glossary
//!
//! | name       | meaning                                                                     |
//! |------------|-----------------------------------------------------------------------------|
//! | image      | physical memory saved to a file ([`MemImage`]: ELF core or raw)             |
//! | root FDT   | the KHO root FDT, from a file or read from the image at a physical address |
//! | format     | how the memory map is read: [`MapFormat`] (`kho-v1-512`, `kho-v1`, `kho-v2`, `kho-v3`) |
//! | metadata   | the pages of the map itself: radix tree nodes, or kho-v1 chunks + bitmap pages |
//! | finding    | one validation error and the address it names ([`Finding`])                 |
//!
//! # What is checked, in order
//!
//! 1. the root FDT ([`KhoFdt::parse`]): header, compatible, memory map,
//!    subnodes; a broken FDT stops here;
//! 2. the format: `--format` if given, else from `compatible` (`kho-v2`,
//!    `kho-v3`: the radix tree). `kho-v1` shipped with two bitmap sizes under
//!    one string: the size is decided from the evidence in the image
//!    ([`kho::detect_bitmap_size`]: a bitmap not page aligned or a
//!    `phys_start` off the page span means 512 bytes, a page reading
//!    inconsistent with RAM means 512 bytes, bits past 4095 that no listed
//!    512-byte bitmap covers mean a page), and a note names the evidence.
//!    With no evidence both sizes give the same blocks: read as `kho-v1`,
//!    with a note naming the flags; only when neither reading validates
//!    and nothing decides is `--format` required, and the findings say so;
//! 3. the memory map against the RAM map (the image's segments, or
//!    `--ram`) and the forbidden ranges (`--forbidden`): the radix walker
//!    ([`RadixReader`]) or the chunk reader ([`V1Reader`], then its overlap
//!    check), stopping at the first error; at most `max_blocks` blocks
//!    (default: the RAM's pages, which no valid map can exceed), at most
//!    [`NodeBudget::for_image`] nodes or `pages + 1` chunks
//!    ([`V1Reader::with_present_pages`]) for the pages the image file
//!    holds ([`MemImage::present_pages`]), whatever RAM it declares. The
//!    blocks are counted, never stored: they stream to an [`InspectSink`]
//!    ([`inspect_to`]), the ranges come from a second, coalescing read,
//!    and the layers above ask the tree itself ([`kho::TreeTracker`]) or
//!    the kho-v1 entries ([`kho::V1Tracker`]);
//! 4. above the tracker ([`stack`](self)): the `LUO` subnode's sessions,
//!    files and folios ([`kho::LuoState`]), the `memblock` subnode, the
//!    simulator's `kho-run` manifest; then the core's cross-layer check
//!    ([`kho::CrossCheck`]): every subnode's blob, the root FDT's page
//!    (when its address is known: `--fdt-phys`, or the one preserved page
//!    holding the FDT file's bytes), every LUO structure and folio and
//!    every listed block preserved as it must be, no two claims sharing
//!    memory, and the preserved blocks nothing names ([`OrphanInfo`]).
//!
//! Every [`Finding`] carries an address: a physical address, or an offset
//! in the FDT or image file.

use std::fmt;
use std::str::FromStr;

use kho::{
    BitmapSize, BitmapVerdict, Block, KhoFdt, KhoVersion, MemError, NodeBudget, NodeSet, ORDERS,
    PAGE_SIZE, PhysAddr, PhysRange, PreservedBlocks, RadixReader, RamMap, TrackerPages,
    TreeTracker, Undecided, V1Error, V1Reader, V1Tracker, WalkError,
};
use serde::Serialize;

use crate::image::{ImageError, Location, MemImage, Source};

mod stack;

pub use stack::{
    FileInfo, FlagCount, FlbInfo, FolioRow, LuoInfo, OrphanInfo, SessionInfo, luo_tree,
};

/// How the memory map is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapFormat {
    /// kho-v1 chunk list, 512-byte bitmaps (Linux 6.16, early 6.17.y).
    V1Bytes512,
    /// kho-v1 chunk list, page bitmaps (later 6.17.y).
    V1Page,
    /// kho-v2 radix tree.
    V2,
    /// kho-v3 radix tree.
    V3,
}

impl MapFormat {
    /// Every format, in `--format` order.
    pub const ALL: [Self; 4] = [Self::V1Bytes512, Self::V1Page, Self::V2, Self::V3];

    /// The `--format` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V1Bytes512 => "kho-v1-512",
            Self::V1Page => "kho-v1",
            Self::V2 => "kho-v2",
            Self::V3 => "kho-v3",
        }
    }

    /// The bitmap size of a kho-v1 format.
    pub const fn bitmap_size(self) -> Option<BitmapSize> {
        match self {
            Self::V1Bytes512 => Some(BitmapSize::Bytes512),
            Self::V1Page => Some(BitmapSize::Page),
            Self::V2 | Self::V3 => None,
        }
    }
}

impl fmt::Display for MapFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is none of [`MapFormat::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?} (kho-v1-512, kho-v1, kho-v2, kho-v3)")]
pub struct UnknownMapFormat(pub String);

impl FromStr for MapFormat {
    type Err = UnknownMapFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownMapFormat(s.to_owned()))
    }
}

/// Where the root FDT comes from.
#[derive(Debug, Clone)]
pub enum FdtSource {
    /// The bytes of an FDT file (`--fdt FILE`).
    File(Vec<u8>),
    /// A physical address in the image (`--fdt-phys ADDR`).
    Phys(PhysAddr),
}

/// Options of [`inspect`].
#[derive(Debug, Clone, Default)]
pub struct InspectOptions {
    /// `--format`; `None`: detected.
    pub format: Option<MapFormat>,
    /// `--ram`: the RAM map; `None`: the image's segments.
    pub ram: Option<Vec<PhysRange>>,
    /// `--forbidden`: ranges where no tree page or block may be.
    pub forbidden: Vec<PhysRange>,
    /// Stop after this many blocks; `None`: the RAM's pages.
    pub max_blocks: Option<u64>,
}

/// What kind of address a [`Finding`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Space {
    /// A physical address.
    Phys,
    /// A byte offset in the FDT file.
    FdtFile,
    /// A byte offset in the image file.
    ImageFile,
}

/// One validation error and the address it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The address, `0x`-hex.
    #[serde(serialize_with = "hex")]
    pub address: u64,
    /// What the address is.
    pub space: Space,
    /// The error.
    pub message: String,
}

impl Finding {
    fn phys(at: PhysAddr, message: impl fmt::Display) -> Self {
        Self {
            address: at.as_u64(),
            space: Space::Phys,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let space = match self.space {
            Space::Phys => "phys",
            Space::FdtFile => "FDT file offset",
            Space::ImageFile => "image file offset",
        };
        write!(f, "at {space} {:#x}: {}", self.address, self.message)
    }
}

impl From<&ImageError> for Finding {
    fn from(e: &ImageError) -> Self {
        let (address, space) = match e.location() {
            Location::File(o) => (o, Space::ImageFile),
            Location::Phys(p) => (p.as_u64(), Space::Phys),
        };
        Self {
            address,
            space,
            message: e.to_string(),
        }
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// One subnode of the root FDT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubnodeInfo {
    /// The node name.
    pub name: String,
    /// The blob's address (`preserved-data`, `fdt` in kho-v1).
    #[serde(serialize_with = "hex")]
    pub phys: u64,
    /// `blob-size` (kho-v3).
    pub size: Option<u64>,
}

/// Blocks of one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OrderCount {
    /// The order.
    pub order: u8,
    /// Blocks of that order.
    pub blocks: u64,
}

/// The root FDT as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FdtInfo {
    /// `compatible`.
    pub compatible: String,
    /// `preserved-memory-map`.
    #[serde(serialize_with = "hex")]
    pub preserved_memory_map: u64,
    /// `totalsize`.
    pub size: u64,
}

/// What [`inspect`] found: counts, never a list of the blocks (those
/// stream to an [`InspectSink`], see [`inspect_to`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inspection {
    /// The format read (`None`: not determined).
    pub format: Option<String>,
    /// Blocks read (up to the first error).
    pub blocks: u64,
    /// Their bytes.
    pub preserved_bytes: u64,
    /// Blocks per order, orders with none left out.
    pub per_order: Vec<OrderCount>,
    /// Maximal ranges of preserved memory.
    pub ranges_count: u64,
    /// Pages of the map itself (tree nodes; chunks + bitmap pages).
    pub metadata_pages: u64,
    /// The root FDT's subnodes.
    pub subnodes: Vec<SubnodeInfo>,
    /// Every validation error, with its address.
    pub errors: Vec<Finding>,
    /// The root FDT.
    pub fdt: Option<FdtInfo>,
    /// Remarks that are not errors (how the format was chosen).
    pub notes: Vec<String>,
    /// The `LUO` subnode's sessions, files and FLBs, when there is one and
    /// the map was read to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub luo: Option<LuoInfo>,
    /// Preserved blocks no structure read names (the core's cross-layer
    /// check), when the map was read to its end.
    pub orphans: Option<OrphanInfo>,
    /// The root FDT's address: `--fdt-phys`, or the one preserved page
    /// that holds the FDT file's bytes.
    #[serde(skip)]
    pub fdt_phys: Option<PhysAddr>,
}

/// Where [`inspect_to`] streams the blocks and ranges it reads, so that
/// nothing is held per block: a `--blocks` or `--ranges` listing writes
/// them as they come.
pub trait InspectSink {
    /// Whether [`InspectSink::block`] is to be called (otherwise runs of
    /// blocks are counted whole).
    fn wants_blocks(&self) -> bool {
        false
    }

    /// A block, in walk (list) order, up to the first error.
    fn block(&mut self, _block: Block) {}

    /// A maximal range of preserved memory, ascending; only for a map read
    /// to its end.
    fn range(&mut self, _range: PhysRange) {}
}

/// Discards everything.
impl InspectSink for () {}

/// Collects the blocks and ranges: for tests and small images (16 bytes
/// per block).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collect {
    /// The blocks, in walk (list) order.
    pub blocks: Vec<Block>,
    /// The maximal ranges, ascending.
    pub ranges: Vec<PhysRange>,
}

impl InspectSink for Collect {
    fn wants_blocks(&self) -> bool {
        true
    }

    fn block(&mut self, block: Block) {
        self.blocks.push(block);
    }

    fn range(&mut self, range: PhysRange) {
        self.ranges.push(range);
    }
}

/// The tracker a complete reading leaves, for the ranges and the layers
/// above.
enum Tracked<'a> {
    Tree(TreeTracker<'a, 'a, MemImage>, TrackerPages),
    V1(V1Tracker<'a, MemImage>),
}

/// What one reading of the memory map gave.
struct Reading<'a> {
    per_order: [u64; ORDERS],
    blocks: u64,
    bytes: u64,
    metadata_pages: u64,
    errors: Vec<Finding>,
    tracker: Option<Tracked<'a>>,
}

impl Default for Reading<'_> {
    fn default() -> Self {
        Self {
            per_order: [0; ORDERS],
            blocks: 0,
            bytes: 0,
            metadata_pages: 0,
            errors: Vec::new(),
            tracker: None,
        }
    }
}

impl Reading<'_> {
    /// Counts `count` blocks of `first`'s order from `first`, and streams
    /// them when the sink wants them; stops (with a finding) past `max`.
    fn add_run(&mut self, first: Block, count: u64, max: u64, sink: &mut dyn InspectSink) -> bool {
        let room = max.saturating_sub(self.blocks);
        let take = count.min(room);
        if let Some(c) = self.per_order.get_mut(usize::from(first.order().as_u8())) {
            *c = c.saturating_add(take);
        }
        self.blocks = self.blocks.saturating_add(take);
        self.bytes = self.bytes.saturating_add(take.saturating_mul(first.size()));
        if sink.wants_blocks() {
            let mut at = first.phys();
            for _ in 0..take {
                sink.block(Block::containing(at, first.order()));
                at = PhysAddr::new(at.as_u64().wrapping_add(first.size()));
            }
        }
        if take < count {
            let at = take
                .checked_mul(first.size())
                .and_then(|off| first.phys().checked_add(off))
                .unwrap_or(first.phys());
            self.errors.push(too_many(at, max));
            return false;
        }
        true
    }
}

/// The address a walk error names: where the broken word or block is.
fn walk_finding(e: &WalkError, root: PhysAddr) -> Finding {
    let at = match *e {
        WalkError::RootUnaligned { root }
        | WalkError::RootOutsideRam { root }
        | WalkError::RootForbidden { root, .. }
        | WalkError::RootEntryBeyond3 { root, .. } => root,
        WalkError::ChildUnaligned { parent, .. }
        | WalkError::ChildOutsideRam { parent, .. }
        | WalkError::ChildForbidden { parent, .. }
        | WalkError::NodeReachedTwice { parent, .. } => parent,
        WalkError::InvalidKey { leaf, .. } => leaf,
        WalkError::BlockOutsideRam { block } | WalkError::BlockForbidden { block, .. } => {
            block.phys()
        }
        WalkError::Overlap { covered, .. } => covered.phys(),
        WalkError::BudgetExceeded { .. } => root,
        WalkError::VisitedSetFull { node } => node,
        WalkError::PageMap(m) => mem_addr(m, root),
    };
    Finding::phys(at, e)
}

fn mem_addr(e: MemError, default: PhysAddr) -> PhysAddr {
    match e {
        MemError::Unaligned { phys } | MemError::NotMapped { phys } => phys,
        MemError::OutOfMemory => default,
    }
}

/// The address a chunk-list error names.
fn v1_finding(e: &V1Error) -> Finding {
    let at = match *e {
        V1Error::ChunkUnaligned { chunk }
        | V1Error::ChunkOutsideRam { chunk }
        | V1Error::ChunkForbidden { chunk, .. }
        | V1Error::ChunkBudget { chunk, .. }
        | V1Error::ChunkCycle { chunk }
        | V1Error::TooManyEntries { chunk, .. }
        | V1Error::BadOrder { chunk, .. }
        | V1Error::BitmapUnaligned { chunk, .. }
        | V1Error::BitmapOutsideRam { chunk, .. }
        | V1Error::BitmapForbidden { chunk, .. }
        | V1Error::PhysStartMisaligned { chunk, .. }
        | V1Error::BlockOverflow { chunk, .. }
        | V1Error::BitmapShared { chunk, .. }
        | V1Error::BitmapInChunk { chunk, .. } => chunk,
        V1Error::Unmapped { phys, .. } => phys,
        V1Error::BlockOutsideRam { block, .. } | V1Error::BlockForbidden { block, .. } => {
            block.phys()
        }
        V1Error::Overlap { second, .. } => second.phys(),
    };
    Finding::phys(at, e)
}

fn too_many(at: PhysAddr, max: u64) -> Finding {
    Finding::phys(
        at,
        format!("more than {max} blocks: the map claims more than the RAM can hold"),
    )
}

/// The work caps of a reading: the most blocks, and the pages the image
/// holds (the node and chunk budgets follow from them, not from the RAM
/// the image declares).
#[derive(Debug, Clone, Copy)]
struct Caps {
    max_blocks: u64,
    present_pages: u64,
}

fn read_radix<'a>(
    image: &'a MemImage,
    map: RamMap<'a>,
    root: PhysAddr,
    caps: Caps,
    sink: &mut dyn InspectSink,
) -> Reading<'a> {
    let mut out = Reading::default();
    let budget = NodeBudget::for_image(&map, caps.present_pages);
    let mut pages = TrackerPages::new();
    let reader = match RadixReader::open(image, map, root, &mut pages, budget) {
        Ok(r) => r,
        Err(e) => {
            out.errors.push(walk_finding(&e, root));
            return out;
        }
    };
    let mut walk = reader.walk();
    while let Some(item) = walk.next_run() {
        match item {
            Ok(run) => {
                if !out.add_run(run.first(), run.count(), caps.max_blocks, sink) {
                    break;
                }
            }
            Err(e) => {
                out.errors.push(walk_finding(&e, root));
                break;
            }
        }
    }
    out.metadata_pages = walk.nodes();
    if out.errors.is_empty() {
        match TreeTracker::open(image, map, root, budget) {
            Ok(t) => out.tracker = Some(Tracked::Tree(t, pages)),
            Err(e) => out.errors.push(walk_finding(&e, root)),
        }
    }
    out
}

fn read_v1<'a>(
    image: &'a MemImage,
    map: RamMap<'a>,
    head: PhysAddr,
    size: BitmapSize,
    caps: Caps,
    sink: &mut dyn InspectSink,
) -> Reading<'a> {
    let mut out = Reading::default();
    let reader = V1Reader::new(image, map, size).with_present_pages(caps.present_pages);
    let mut blocks = reader.blocks(head);
    for item in blocks.by_ref() {
        match item {
            Ok(b) => {
                if !out.add_run(b, 1, caps.max_blocks, sink) {
                    break;
                }
            }
            Err(e) => {
                out.errors.push(v1_finding(&e));
                break;
            }
        }
    }
    out.metadata_pages = blocks.metadata_pages();
    drop(blocks);
    // Overlaps, from the entries (memory per entry, not per block).
    if out.errors.is_empty() {
        match reader.tracker(head, |_| ()) {
            Ok(t) => out.tracker = Some(Tracked::V1(t)),
            Err(e) => out.errors.push(v1_finding(&e)),
        }
    }
    out
}

/// Streams the maximal ranges of a complete reading, ascending, to `sink`;
/// returns how many.
fn ranges(
    image: &MemImage,
    map: RamMap<'_>,
    root: PhysAddr,
    caps: Caps,
    tracked: &Tracked<'_>,
    sink: &mut dyn InspectSink,
    errors: &mut Vec<Finding>,
) -> u64 {
    let mut n = 0u64;
    match tracked {
        Tracked::Tree(..) => {
            let budget = NodeBudget::for_image(&map, caps.present_pages);
            let reader = match RadixReader::open(image, map, root, NodeSet::new(), budget) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(walk_finding(&e, root));
                    return 0;
                }
            };
            for r in reader.coalesce() {
                match r {
                    Ok(r) => {
                        n = n.saturating_add(1);
                        sink.range(r);
                    }
                    Err(e) => {
                        errors.push(walk_finding(&e, root));
                        break;
                    }
                }
            }
        }
        Tracked::V1(t) => {
            let mut cur: Option<PhysRange> = None;
            for b in t.ascending() {
                let Some(r) = b.range() else { continue };
                match cur {
                    Some(c) if c.end() == r.start() => {
                        cur = PhysRange::new(c.start(), r.end()).ok().or(Some(c));
                    }
                    _ => {
                        if let Some(c) = cur.replace(r) {
                            n = n.saturating_add(1);
                            sink.range(c);
                        }
                    }
                }
            }
            if let Some(c) = cur {
                n = n.saturating_add(1);
                sink.range(c);
            }
        }
    }
    n
}

/// Reads the root FDT's bytes; a finding if there are none.
fn fdt_bytes(image: &MemImage, src: &FdtSource) -> Result<(Vec<u8>, Finding), Finding> {
    match src {
        FdtSource::File(b) => Ok((
            b.clone(),
            Finding {
                address: 0,
                space: Space::FdtFile,
                message: String::new(),
            },
        )),
        FdtSource::Phys(p) => {
            let bytes = if p.is_aligned(8) {
                image.read(*p, kho::KHO_FDT_MAX_SIZE)
            } else {
                None
            };
            match bytes {
                Some(b) => Ok((b, Finding::phys(*p, ""))),
                None => Err(Finding::phys(
                    *p,
                    format!("the root FDT address {p} is not 8-byte aligned memory of the image"),
                )),
            }
        }
    }
}

/// Decodes and validates the handover in `image` (see the module doc).
pub fn inspect(image: &MemImage, fdt_src: &FdtSource, opts: &InspectOptions) -> Inspection {
    inspect_to(image, fdt_src, opts, &mut ())
}

/// [`inspect`], streaming the blocks (walk order) and the ranges
/// (ascending) to `sink` as they are read. Memory is bounded by the
/// metadata the image holds, not by the blocks it claims: per-order
/// counts, the node or entry records the readers keep, the claims of the
/// layers above.
pub fn inspect_to(
    image: &MemImage,
    fdt_src: &FdtSource,
    opts: &InspectOptions,
    sink: &mut dyn InspectSink,
) -> Inspection {
    let mut out = Inspection::default();
    let (bytes, at) = match fdt_bytes(image, fdt_src) {
        Ok(x) => x,
        Err(f) => {
            out.errors.push(f);
            return out;
        }
    };
    let fdt = match KhoFdt::parse(&bytes) {
        Ok(f) => f,
        Err(e) => {
            out.errors.push(Finding {
                message: format!("root FDT: {e}"),
                ..at
            });
            return out;
        }
    };
    out.fdt = Some(FdtInfo {
        compatible: fdt.compat().to_string(),
        preserved_memory_map: fdt.root().as_u64(),
        size: u64::try_from(fdt.total_size()).unwrap_or(0),
    });
    out.subnodes = fdt
        .subnodes()
        .map(|s| SubnodeInfo {
            name: s.name().to_owned(),
            phys: s.data().as_u64(),
            size: s.size(),
        })
        .collect();

    let ram_list: Vec<PhysRange> = opts.ram.clone().unwrap_or_else(|| image.ram().to_vec());
    let mut forbidden = kho::merge_ranges(opts.forbidden.clone());
    forbidden.sort();
    let map = match RamMap::new(&ram_list, &forbidden) {
        Ok(m) => m,
        Err(e) => {
            let r = match e {
                kho::RamMapError::Unaligned { range }
                | kho::RamMapError::Unsorted { range, .. } => range,
            };
            out.errors
                .push(Finding::phys(r.start(), format!("RAM map: {e}")));
            return out;
        }
    };
    let caps = Caps {
        max_blocks: opts.max_blocks.unwrap_or(map.ram_bytes() / PAGE_SIZE),
        present_pages: image.present_pages(),
    };
    let root = fdt.root();

    let (format, reading) = match (opts.format, fdt.version()) {
        (Some(f), v) => {
            if matches!(
                (f, v),
                (
                    MapFormat::V1Bytes512 | MapFormat::V1Page,
                    KhoVersion::V2 | KhoVersion::V3 | KhoVersion::V4
                ) | (MapFormat::V2 | MapFormat::V3, KhoVersion::V1)
            ) {
                out.notes
                    .push(format!("--format {f} overrides the FDT's compatible {v}"));
            }
            (Some(f), read_as(image, map, root, f, caps, sink))
        }
        (None, KhoVersion::V2) => (
            Some(MapFormat::V2),
            read_radix(image, map, root, caps, sink),
        ),
        // kho-v4 keeps kho-v3's radix tree (4 KiB pages).
        (None, KhoVersion::V3 | KhoVersion::V4) => (
            Some(MapFormat::V3),
            read_radix(image, map, root, caps, sink),
        ),
        (None, KhoVersion::V1) => detect_v1(image, map, root, caps, sink, &mut out.notes),
    };
    out.format = format.map(|f| f.as_str().to_owned());
    out.errors.extend(reading.errors);
    out.metadata_pages = reading.metadata_pages;
    out.per_order = reading
        .per_order
        .iter()
        .zip(0u8..)
        .filter(|(n, _)| **n > 0)
        .map(|(&blocks, order)| OrderCount { order, blocks })
        .collect();
    out.blocks = reading.blocks;
    out.preserved_bytes = reading.bytes;

    // The ranges, LUO, memblock and the cross-layer check: only against a
    // map read to its end.
    let Some(tracked) = reading.tracker else {
        return out;
    };
    out.ranges_count = ranges(image, map, root, caps, &tracked, sink, &mut out.errors);
    let given = match fdt_src {
        FdtSource::Phys(p) => Some(*p),
        FdtSource::File(_) => None,
    };
    let none = TrackerPages::new();
    let (tracker, tree_pages): (&dyn PreservedBlocks, &TrackerPages) = match &tracked {
        Tracked::Tree(t, pages) => (t, pages),
        Tracked::V1(t) => (t, &none),
    };
    let st = stack::read_stack(image, map, &fdt, &bytes, given, tracker, tree_pages);
    out.errors.extend(st.errors);
    out.notes.extend(st.notes);
    out.luo = st.luo;
    out.orphans = st.orphans;
    out.fdt_phys = st.fdt_phys;
    out
}

fn read_as<'a>(
    image: &'a MemImage,
    map: RamMap<'a>,
    root: PhysAddr,
    f: MapFormat,
    caps: Caps,
    sink: &mut dyn InspectSink,
) -> Reading<'a> {
    match f.bitmap_size() {
        Some(size) => read_v1(image, map, root, size, caps, sink),
        None => read_radix(image, map, root, caps, sink),
    }
}

/// kho-v1 without `--format`: the bitmap size decided from the evidence
/// in the image ([`kho::detect_bitmap_size`], see the module doc).
fn detect_v1<'a>(
    image: &'a MemImage,
    map: RamMap<'a>,
    head: PhysAddr,
    caps: Caps,
    sink: &mut dyn InspectSink,
    notes: &mut Vec<String>,
) -> (Option<MapFormat>, Reading<'a>) {
    const FORCE: &str = "--format kho-v1-512 or --format kho-v1 forces a size";
    match kho::detect_bitmap_size(image, map, head) {
        BitmapVerdict::Decided { size, evidence } => {
            let format = match size {
                BitmapSize::Bytes512 => MapFormat::V1Bytes512,
                BitmapSize::Page => MapFormat::V1Page,
            };
            notes.push(format!(
                "kho-v1 bitmap size detected: {} ({format}), from the evidence: {evidence}",
                bitmap_size_name(size)
            ));
            (Some(format), read_v1(image, map, head, size, caps, sink))
        }
        BitmapVerdict::Undecided(why @ Undecided::NoEvidence { .. }) => {
            notes.push(format!(
                "kho-v1 bitmap size undecided, read as page bitmaps: {why}; {FORCE}"
            ));
            (
                Some(MapFormat::V1Page),
                read_v1(image, map, head, BitmapSize::Page, caps, sink),
            )
        }
        BitmapVerdict::Undecided(Undecided::NeitherValidates { bytes512, page }) => {
            let mut r = Reading::default();
            r.errors.push(Finding::phys(
                head,
                format!(
                    "kho-v1 bitmap size undecided: neither 512-byte nor page bitmaps validate \
                     and the layout decides nothing (errors follow); {FORCE}"
                ),
            ));
            for (name, e) in [("512-byte bitmaps", bytes512), ("page bitmaps", page)] {
                let mut f = v1_finding(&e);
                f.message = format!("as {name}: {}", f.message);
                r.errors.push(f);
            }
            (None, r)
        }
    }
}

fn bitmap_size_name(size: BitmapSize) -> &'static str {
    match size {
        BitmapSize::Bytes512 => "512-byte bitmaps",
        BitmapSize::Page => "page bitmaps",
    }
}

/// Opens an image from bytes, as the fuzz target and the tests do.
pub fn open_image(source: Source, base: Option<PhysAddr>) -> Result<MemImage, ImageError> {
    match base {
        Some(b) => MemImage::open_raw(source, b),
        None => MemImage::open_elf(source),
    }
}

#[cfg(test)]
mod tests;
