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
//!    (default: the RAM's pages, which no valid map can exceed);
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

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use kho::KhoserMemChunk;
use kho::{
    BitmapSize, BitmapVerdict, Block, KhoFdt, KhoVersion, MemError, NodeBudget, NodeSet, ORDERS,
    PAGE_SIZE, PageMap, PhysAddr, PhysRange, PreservedSet, RadixReader, RamMap, TrackerPages,
    Undecided, V1Error, V1Reader, WalkError,
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

/// What [`inspect`] found. Serialized (`--json`) without the block and
/// range lists.
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
    /// The blocks, in walk (list) order.
    #[serde(skip)]
    pub block_list: Vec<Block>,
    /// The maximal ranges, ascending.
    #[serde(skip)]
    pub ranges: Vec<PhysRange>,
}

/// What one reading of the memory map gave.
#[derive(Debug, Default)]
struct Reading {
    blocks: Vec<Block>,
    metadata_pages: u64,
    errors: Vec<Finding>,
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

fn read_radix(image: &MemImage, map: RamMap<'_>, root: PhysAddr, max: u64) -> Reading {
    let mut out = Reading::default();
    let reader =
        match RadixReader::open(image, map, root, NodeSet::new(), NodeBudget::for_ram(&map)) {
            Ok(r) => r,
            Err(e) => {
                out.errors.push(walk_finding(&e, root));
                return out;
            }
        };
    let mut walk = reader.walk();
    for item in walk.by_ref() {
        match item {
            Ok(b) if u64::try_from(out.blocks.len()).unwrap_or(u64::MAX) >= max => {
                out.errors.push(too_many(b.phys(), max));
                break;
            }
            Ok(b) => out.blocks.push(b),
            Err(e) => {
                out.errors.push(walk_finding(&e, root));
                break;
            }
        }
    }
    out.metadata_pages = walk.nodes();
    out
}

fn read_v1(
    image: &MemImage,
    map: RamMap<'_>,
    head: PhysAddr,
    size: BitmapSize,
    max: u64,
) -> Reading {
    let mut out = Reading::default();
    let reader = V1Reader::new(image, map, size);
    for item in reader.blocks(head) {
        match item {
            Ok(b) if u64::try_from(out.blocks.len()).unwrap_or(u64::MAX) >= max => {
                out.errors.push(too_many(b.phys(), max));
                break;
            }
            Ok(b) => out.blocks.push(b),
            Err(e) => {
                out.errors.push(v1_finding(&e));
                break;
            }
        }
    }
    // Overlaps, from the entries (no second copy of the blocks).
    if out.errors.is_empty()
        && let Err(e) = reader.check(head, |_| ())
    {
        out.errors.push(v1_finding(&e));
    }
    out.metadata_pages = v1_metadata_pages(image, head, map.ram_bytes() / PAGE_SIZE);
    out
}

/// Chunks plus distinct bitmap pages of the list at `head`, following it
/// until its end, a page the image lacks, a chunk seen before or `budget`
/// chunks.
fn v1_metadata_pages(image: &MemImage, head: PhysAddr, budget: u64) -> u64 {
    let mut chunks = BTreeSet::new();
    let mut bitmaps = BTreeSet::new();
    let mut at = head;
    while at != PhysAddr::ZERO && u64::try_from(chunks.len()).unwrap_or(u64::MAX) < budget {
        let Ok(page) = image.page(at) else { break };
        if !chunks.insert(at) {
            break;
        }
        let chunk = KhoserMemChunk::from_page(page);
        for e in chunk.entries() {
            bitmaps.insert(e.bitmap().align_down(PAGE_SIZE));
        }
        at = chunk.hdr().next();
    }
    u64::try_from(chunks.len().saturating_add(bitmaps.len())).unwrap_or(u64::MAX)
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
    let max = opts.max_blocks.unwrap_or(map.ram_bytes() / PAGE_SIZE);
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
            (Some(f), read_as(image, map, root, f, max))
        }
        (None, KhoVersion::V2) => (Some(MapFormat::V2), read_radix(image, map, root, max)),
        // kho-v4 keeps kho-v3's radix tree (4 KiB pages).
        (None, KhoVersion::V3 | KhoVersion::V4) => {
            (Some(MapFormat::V3), read_radix(image, map, root, max))
        }
        (None, KhoVersion::V1) => detect_v1(image, map, root, max, &mut out.notes),
    };
    out.format = format.map(|f| f.as_str().to_owned());
    let complete = reading.errors.is_empty();
    out.errors.extend(reading.errors);
    out.metadata_pages = reading.metadata_pages;
    out.block_list = reading.blocks;
    summarize(&mut out);

    // The FDT page and the blobs must survive the kexec: preserved. Only
    // judged against a map read to its end.
    if !complete {
        return out;
    }
    // The FDT page and every blob must survive the kexec: the cross-layer
    // check claims them, with LUO's structures and memblock's regions.
    let given = match fdt_src {
        FdtSource::Phys(p) => Some(*p),
        FdtSource::File(_) => None,
    };
    // Above the tracker: LUO, memblock, the cross-layer check.
    let tree_pages = if format.and_then(MapFormat::bitmap_size).is_none() {
        match PreservedSet::read_tree(image, map, root, NodeBudget::for_ram(&map)) {
            Ok((_, pages)) => pages,
            Err(_) => TrackerPages::new(),
        }
    } else {
        TrackerPages::new()
    };
    let st = stack::read_stack(
        image,
        map,
        &fdt,
        &bytes,
        given,
        &out.block_list,
        &tree_pages,
    );
    out.errors.extend(st.errors);
    out.notes.extend(st.notes);
    out.luo = st.luo;
    out.orphans = st.orphans;
    out.fdt_phys = st.fdt_phys;
    out
}

fn read_as(image: &MemImage, map: RamMap<'_>, root: PhysAddr, f: MapFormat, max: u64) -> Reading {
    match f.bitmap_size() {
        Some(size) => read_v1(image, map, root, size, max),
        None => read_radix(image, map, root, max),
    }
}

/// kho-v1 without `--format`: the bitmap size decided from the evidence
/// in the image ([`kho::detect_bitmap_size`], see the module doc).
fn detect_v1(
    image: &MemImage,
    map: RamMap<'_>,
    head: PhysAddr,
    max: u64,
    notes: &mut Vec<String>,
) -> (Option<MapFormat>, Reading) {
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
            (Some(format), read_v1(image, map, head, size, max))
        }
        BitmapVerdict::Undecided(why @ Undecided::NoEvidence { .. }) => {
            notes.push(format!(
                "kho-v1 bitmap size undecided, read as page bitmaps: {why}; {FORCE}"
            ));
            (
                Some(MapFormat::V1Page),
                read_v1(image, map, head, BitmapSize::Page, max),
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

/// Fills the counts and the ranges from the block list.
fn summarize(out: &mut Inspection) {
    let mut per_order = [0u64; ORDERS];
    for b in &out.block_list {
        if let Some(c) = per_order.get_mut(usize::from(b.order().as_u8())) {
            *c = c.saturating_add(1);
        }
    }
    out.per_order = per_order
        .iter()
        .zip(0u8..)
        .filter(|(n, _)| **n > 0)
        .map(|(&blocks, order)| OrderCount { order, blocks })
        .collect();
    out.blocks = u64::try_from(out.block_list.len()).unwrap_or(u64::MAX);
    out.preserved_bytes = out
        .block_list
        .iter()
        .map(|b| b.size())
        .fold(0u64, u64::saturating_add);
    out.ranges = kho::merge_ranges(out.block_list.iter().filter_map(|b| b.range()).collect());
    out.ranges_count = u64::try_from(out.ranges.len()).unwrap_or(u64::MAX);
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
