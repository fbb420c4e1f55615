//! Memory images: a machine's physical memory saved to a file, read back as
//! a [`PageMap`] for the untrusted readers of the core.
//!
//! # Glossary
//!
//! | name       | meaning                                                                  |
//! |------------|--------------------------------------------------------------------------|
//! | core       | an ELF64 core file whose `PT_LOAD` segments carry physical addresses in `p_paddr` (QEMU `dump-guest-memory`, `virsh dump`, `/proc/vmcore`) |
//! | raw image  | bytes whose file offset `o` is physical address `base + o`               |
//! | segment    | one `PT_LOAD` (or the whole raw image): `[p_paddr, p_paddr + p_memsz)`, the first `p_filesz` bytes from the file at `p_offset`, the rest zero |
//! | RAM        | what the readers may touch: the segments, abutting ones merged           |
//!
//! # Reading ([`MemImage`])
//!
//! The headers are read with the `object` crate and checked in this order,
//! failing on the first broken rule with an [`ImageError`] that names the
//! file offset or the physical address: ELF header (magic, 64-bit,
//! little-endian), program header table, at least one `PT_LOAD`, then each
//! `PT_LOAD`: `p_paddr` page aligned, `p_filesz <= p_memsz`, the file bytes
//! inside the file, the physical range inside the address space; finally no
//! two segments share a physical page or a file byte. Pages are read lazily
//! (one `pread` per page the reader asks for) into owned [`AtomicPage`]s,
//! kept for the image's lifetime behind `OnceLock`s, so no `unsafe` and no
//! memory map: a walk costs its metadata pages, not the image size. The
//! bookkeeping is one slot per 2 MiB of file-backed bytes, plus 8 KiB per
//! 2 MiB touched; pages past `p_filesz` read as zero.
//!
//! # Writing ([`write_core`], [`dump_old_kernel`])
//!
//! What `kho run --dump-core FILE` writes, by hand with typed headers:
//!
//! | file offset          | bytes | what                                                         |
//! |----------------------|-------|--------------------------------------------------------------|
//! | 0                    | 64    | `Elf64_Ehdr`: ELFCLASS64, ELFDATA2LSB, `ET_CORE`, `EM_X86_64`, `e_phoff = 64`, no sections |
//! | 64 + 56 i            | 56    | `Elf64_Phdr` i: `PT_LOAD`, RWX, `p_paddr` = phys, `p_vaddr` = 0, `p_filesz = p_memsz`, `p_align` = 4096 |
//! | page aligned, ascending | `p_filesz` | the bytes of segment i                                 |
//!
//! One segment per populated extent of the machine's memfd
//! ([`PhysMem::populated`], clipped to RAM): pages never written are not in
//! the file. Beyond 65534 extents the smallest gaps inside a RAM range are
//! bridged (zero pages written) so that `e_phnum` never needs `PN_XNUM`.

use std::fs::File;
use std::io::{self, BufWriter, Cursor, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use kho::PAGE_WORDS;
use kho::{AtomicPage, MemError, PAGE_SHIFT, PAGE_SIZE, PageMap, PhysAddr, PhysRange};
use kho_machine::{OldKernelImage, PhysMem};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{Immutable, IntoBytes, KnownLayout};

/// Pages per lazily allocated group of page slots (2 MiB).
const GROUP_PAGES: u64 = 512;

/// Most program headers written without `PN_XNUM`.
const MAX_PHNUM: usize = 0xfffe;

/// A page that reads as zero: memory past a segment's file bytes.
static ZERO_PAGE: AtomicPage = AtomicPage::new();

/// Where an image error sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A byte offset in the image file.
    File(u64),
    /// A physical address.
    Phys(PhysAddr),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(o) => write!(f, "file offset {o:#x}"),
            Self::Phys(p) => write!(f, "phys {p}"),
        }
    }
}

/// Why an image could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading or writing the file failed.
    #[error("{what} at file offset {offset:#x}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where in the file.
        offset: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is empty.
    #[error("the image is empty (file offset 0)")]
    Empty,
    /// The ELF header or program header table is malformed.
    #[error("ELF at file offset {offset:#x}: {reason}")]
    Elf {
        /// The header's offset (0, or `e_phoff`).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// No `PT_LOAD` segment: no memory.
    #[error("no PT_LOAD segment in the program header table at file offset {phoff:#x}")]
    NoLoadSegment {
        /// `e_phoff`.
        phoff: u64,
    },
    /// A segment's physical address is not page aligned.
    #[error("segment {index}: p_paddr {paddr} is not page aligned")]
    SegmentUnaligned {
        /// The program header's index.
        index: usize,
        /// `p_paddr`.
        paddr: PhysAddr,
    },
    /// A segment holds more file bytes than memory.
    #[error("segment {index} at {paddr}: p_filesz {filesz:#x} exceeds p_memsz {memsz:#x}")]
    FileLargerThanMemory {
        /// The index.
        index: usize,
        /// `p_paddr`.
        paddr: PhysAddr,
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// A segment's file bytes run past the end of the file.
    #[error(
        "segment {index} at {paddr}: file bytes [{offset:#x}, +{filesz:#x}) run past the end of the {len:#x}-byte file"
    )]
    PastEndOfFile {
        /// The index.
        index: usize,
        /// `p_paddr`.
        paddr: PhysAddr,
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        filesz: u64,
        /// The file's length.
        len: u64,
    },
    /// A segment's physical range leaves the 64-bit address space.
    #[error("segment {index} at {paddr}: p_memsz {memsz:#x} overflows the address space")]
    AddressOverflow {
        /// The index.
        index: usize,
        /// `p_paddr`.
        paddr: PhysAddr,
        /// `p_memsz`.
        memsz: u64,
    },
    /// Two segments share physical pages.
    #[error("segments overlap in physical memory: {first} and {second}")]
    Overlap {
        /// The lower segment.
        first: PhysRange,
        /// The segment starting inside it.
        second: PhysRange,
    },
    /// Two segments share file bytes.
    #[error("segments at {first} and {second} share file bytes from file offset {offset:#x}")]
    FileOverlap {
        /// The segment whose bytes come first in the file.
        first: PhysAddr,
        /// The segment whose bytes start inside them.
        second: PhysAddr,
        /// Where the second one's bytes start.
        offset: u64,
    },
    /// A raw image's base is not page aligned, or the image overflows.
    #[error("raw image base {base} is not page aligned or the image overflows the address space")]
    BadBase {
        /// The base.
        base: PhysAddr,
    },
    /// The machine has no FDT page to dump.
    #[error("reading the root FDT at {phys}: {source}")]
    Fdt {
        /// The FDT's address.
        phys: PhysAddr,
        /// Why.
        source: MemError,
    },
    /// The machine's memory could not be read.
    #[error("reading memory at {phys}: {source}")]
    Mem {
        /// The page.
        phys: PhysAddr,
        /// Why.
        source: MemError,
    },
    /// Finding the populated extents failed.
    #[error("finding populated memory: {0}")]
    Populated(#[source] kho_machine::ArenaError),
}

impl ImageError {
    /// Where the error sits (every error names an address).
    pub fn location(&self) -> Location {
        match self {
            Self::Io { offset, .. } => Location::File(*offset),
            Self::Empty | Self::Populated(_) => Location::File(0),
            Self::Elf { offset, .. } => Location::File(*offset),
            Self::NoLoadSegment { phoff } => Location::File(*phoff),
            Self::SegmentUnaligned { paddr, .. }
            | Self::FileLargerThanMemory { paddr, .. }
            | Self::PastEndOfFile { paddr, .. }
            | Self::AddressOverflow { paddr, .. } => Location::Phys(*paddr),
            Self::Overlap { second, .. } => Location::Phys(second.start()),
            Self::FileOverlap { offset, .. } => Location::File(*offset),
            Self::BadBase { base } => Location::Phys(*base),
            Self::Fdt { phys, .. } | Self::Mem { phys, .. } => Location::Phys(*phys),
        }
    }
}

/// Where the image's bytes come from.
#[derive(Debug)]
pub enum Source {
    /// A file, read with `pread`.
    File(File),
    /// Bytes in memory (tests, fuzzing).
    Bytes(Vec<u8>),
}

impl Source {
    fn len(&self) -> Result<u64, ImageError> {
        match self {
            Self::File(f) => f
                .metadata()
                .map(|m| m.len())
                .map_err(|source| ImageError::Io {
                    what: "reading the file's size",
                    offset: 0,
                    source,
                }),
            Self::Bytes(b) => Ok(u64::try_from(b.len()).unwrap_or(u64::MAX)),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Self::File(f) => f.read_exact_at(buf, offset),
            Self::Bytes(b) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|o| b.get(o..o.checked_add(buf.len())?))
                    .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

/// One segment of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The physical range (`p_memsz` rounded up to a page).
    pub phys: PhysRange,
    /// `p_offset`.
    pub offset: u64,
    /// `p_filesz`: the bytes present in the file.
    pub file_bytes: u64,
}

/// Up to [`GROUP_PAGES`] file-backed pages of a segment, allocated
/// together at the first use of one of them (one allocation, where a
/// page-aligned allocation per page would cost the allocator about a page
/// of padding each: twice the memory), each read from the file at its
/// first use (`loaded`: whether the read succeeded).
#[derive(Debug)]
struct Pages {
    pages: Box<[AtomicPage]>,
    loaded: Box<[OnceLock<bool>]>,
}

type Group = OnceLock<Pages>;

/// Physical memory read from an image file; see the module doc.
#[derive(Debug)]
pub struct MemImage {
    source: Source,
    /// Sorted by physical address, disjoint.
    segments: Vec<Segment>,
    /// Per segment, one group of page slots per 512 file-backed pages.
    groups: Vec<Vec<Group>>,
    ram: Vec<PhysRange>,
}

impl MemImage {
    /// Opens an ELF core: its `PT_LOAD` segments are the memory.
    pub fn open_elf(source: Source) -> Result<Self, ImageError> {
        let len = source.len()?;
        if len == 0 {
            return Err(ImageError::Empty);
        }
        let mut segments = Vec::new();
        {
            let reader: Box<dyn ReadSeek + '_> = match &source {
                Source::File(f) => Box::new(f),
                Source::Bytes(b) => Box::new(Cursor::new(b.as_slice())),
            };
            let cache = object::ReadCache::new(reader);
            let elf_err = |offset: u64| {
                move |e: object::Error| ImageError::Elf {
                    offset,
                    reason: e.to_string(),
                }
            };
            let header =
                elf::FileHeader64::<object::Endianness>::parse(&cache).map_err(elf_err(0))?;
            let endian = header.endian().map_err(elf_err(0))?;
            if endian != object::Endianness::Little {
                return Err(ImageError::Elf {
                    offset: 0,
                    reason: "big-endian ELF: KHO memory is little-endian".to_owned(),
                });
            }
            let phoff = header.e_phoff(endian);
            let phdrs = header
                .program_headers(endian, &cache)
                .map_err(elf_err(phoff))?;
            for (index, ph) in phdrs.iter().enumerate() {
                if ph.p_type(endian) != elf::PT_LOAD {
                    continue;
                }
                let paddr = PhysAddr::new(ph.p_paddr(endian));
                let (offset, filesz, memsz) =
                    (ph.p_offset(endian), ph.p_filesz(endian), ph.p_memsz(endian));
                segments.push(check_segment(index, paddr, offset, filesz, memsz, len)?);
            }
            if segments.is_empty() {
                return Err(ImageError::NoLoadSegment { phoff });
            }
        }
        Self::new(source, segments)
    }

    /// Opens a raw image: the byte at file offset `o` is `base + o`. A
    /// partial last page reads as zero past the file's end.
    pub fn open_raw(source: Source, base: PhysAddr) -> Result<Self, ImageError> {
        let len = source.len()?;
        if len == 0 {
            return Err(ImageError::Empty);
        }
        if !base.is_page_aligned() {
            return Err(ImageError::BadBase { base });
        }
        let seg =
            check_segment(0, base, 0, len, len, len).map_err(|_| ImageError::BadBase { base })?;
        Self::new(source, vec![seg])
    }

    fn new(source: Source, mut segments: Vec<Segment>) -> Result<Self, ImageError> {
        segments.sort_by_key(|s| s.phys.start());
        for w in segments.windows(2) {
            if let [a, b] = w
                && b.phys.start() < a.phys.end()
            {
                return Err(ImageError::Overlap {
                    first: a.phys,
                    second: b.phys,
                });
            }
        }
        let mut by_offset: Vec<&Segment> = segments.iter().filter(|s| s.file_bytes > 0).collect();
        by_offset.sort_by_key(|s| s.offset);
        for w in by_offset.windows(2) {
            if let [a, b] = w
                && b.offset < a.offset.saturating_add(a.file_bytes)
            {
                return Err(ImageError::FileOverlap {
                    first: a.phys.start(),
                    second: b.phys.start(),
                    offset: b.offset,
                });
            }
        }
        let groups = segments
            .iter()
            .map(|s| {
                let pages = s.file_bytes.div_ceil(PAGE_SIZE);
                let n = usize::try_from(pages.div_ceil(GROUP_PAGES)).unwrap_or(0);
                let mut v = Vec::with_capacity(n);
                v.resize_with(n, OnceLock::new);
                v
            })
            .collect();
        let ram = kho::merge_ranges(segments.iter().map(|s| s.phys).collect());
        Ok(Self {
            source,
            segments,
            groups,
            ram,
        })
    }

    /// The segments, by physical address.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The RAM the image holds: its segments, abutting ones merged.
    pub fn ram(&self) -> &[PhysRange] {
        &self.ram
    }

    /// The physical ranges whose bytes the file holds, ascending (the
    /// rest of the RAM reads as zero).
    pub fn held(&self) -> impl Iterator<Item = PhysRange> + '_ {
        self.segments.iter().filter_map(|s| {
            let bytes = s.file_bytes.div_ceil(PAGE_SIZE).checked_mul(PAGE_SIZE)?;
            PhysRange::from_start_size(s.phys.start(), bytes.min(s.phys.size()))
                .ok()
                .filter(|r| !r.is_empty())
        })
    }

    /// The pages whose bytes the file holds (`p_filesz`, rounded up per
    /// segment): the metadata a reader can find, whatever RAM the
    /// segments declare (`p_memsz`; the rest reads as zero). Segments
    /// never share file bytes, so this is at most the file's pages plus
    /// one per segment.
    pub fn present_pages(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.file_bytes.div_ceil(PAGE_SIZE))
            .fold(0, u64::saturating_add)
    }

    /// Up to `len` bytes from `phys` (8-byte aligned), stopping at the
    /// first byte the image does not hold; `None` if it holds none.
    pub fn read(&self, phys: PhysAddr, len: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len.min(1 << 20));
        let mut at = phys;
        while out.len() < len {
            let page_start = at.align_down(PAGE_SIZE);
            let Ok(page) = self.page(page_start) else {
                break;
            };
            let off = usize::try_from(at.offset_from(page_start)?).ok()?;
            let bytes = page.snapshot();
            let mut page_bytes = Vec::with_capacity(4096);
            for w in bytes {
                page_bytes.extend_from_slice(&w.to_le_bytes());
            }
            let want = len.saturating_sub(out.len());
            let chunk = page_bytes.get(off..)?;
            let chunk = chunk.get(..want.min(chunk.len()))?;
            out.extend_from_slice(chunk);
            at = page_start.checked_add(PAGE_SIZE)?;
        }
        (!out.is_empty()).then_some(out)
    }

    /// Reads page `page_index` of `seg` from the file into `page`.
    fn load(&self, seg: &Segment, page_index: u64, page: &AtomicPage) -> Option<()> {
        let start = page_index.checked_mul(PAGE_SIZE)?;
        let n = seg.file_bytes.checked_sub(start)?.min(PAGE_SIZE);
        let mut buf = [0u8; PAGE_SIZE as usize];
        let buf = buf.get_mut(..usize::try_from(n).ok()?)?;
        self.source
            .read_exact_at(buf, seg.offset.checked_add(start)?)
            .ok()?;
        for (w, chunk) in page.words().iter().zip(buf.chunks(8)) {
            let mut b = [0u8; 8];
            b.iter_mut().zip(chunk).for_each(|(d, s)| *d = *s);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        Some(())
    }
}

trait ReadSeek: io::Read + io::Seek {}
impl<T: io::Read + io::Seek> ReadSeek for T {}

fn check_segment(
    index: usize,
    paddr: PhysAddr,
    offset: u64,
    filesz: u64,
    memsz: u64,
    len: u64,
) -> Result<Segment, ImageError> {
    if !paddr.is_page_aligned() {
        return Err(ImageError::SegmentUnaligned { index, paddr });
    }
    if filesz > memsz {
        return Err(ImageError::FileLargerThanMemory {
            index,
            paddr,
            filesz,
            memsz,
        });
    }
    if offset.checked_add(filesz).is_none_or(|end| end > len) {
        return Err(ImageError::PastEndOfFile {
            index,
            paddr,
            offset,
            filesz,
            len,
        });
    }
    let overflow = ImageError::AddressOverflow {
        index,
        paddr,
        memsz,
    };
    let size = memsz.checked_next_multiple_of(PAGE_SIZE).ok_or(overflow)?;
    let phys =
        PhysRange::from_start_size(paddr, size).map_err(|_| ImageError::AddressOverflow {
            index,
            paddr,
            memsz,
        })?;
    Ok(Segment {
        phys,
        offset,
        file_bytes: filesz,
    })
}

impl PageMap for MemImage {
    fn page(&self, phys: PhysAddr) -> Result<&AtomicPage, MemError> {
        if !phys.is_page_aligned() {
            return Err(MemError::Unaligned { phys });
        }
        let not_mapped = MemError::NotMapped { phys };
        let i = self.segments.partition_point(|s| s.phys.end() <= phys);
        let seg = self
            .segments
            .get(i)
            .filter(|s| s.phys.contains(phys))
            .ok_or(not_mapped)?;
        let page_index = phys.offset_from(seg.phys.start()).ok_or(not_mapped)? >> PAGE_SHIFT;
        if page_index >= seg.file_bytes.div_ceil(PAGE_SIZE) {
            return Ok(&ZERO_PAGE);
        }
        let groups = self.groups.get(i).ok_or(not_mapped)?;
        let group = usize::try_from(page_index / GROUP_PAGES).map_err(|_| not_mapped)?;
        let slot = usize::try_from(page_index % GROUP_PAGES).map_err(|_| not_mapped)?;
        let first = page_index - page_index % GROUP_PAGES;
        let group = groups.get(group).ok_or(not_mapped)?.get_or_init(|| {
            let n = seg
                .file_bytes
                .div_ceil(PAGE_SIZE)
                .saturating_sub(first)
                .min(GROUP_PAGES);
            let n = usize::try_from(n).unwrap_or(0);
            let mut pages = Vec::with_capacity(n);
            pages.resize_with(n, AtomicPage::new);
            let mut loaded = Vec::with_capacity(n);
            loaded.resize_with(n, OnceLock::new);
            Pages {
                pages: pages.into_boxed_slice(),
                loaded: loaded.into_boxed_slice(),
            }
        });
        let page = group.pages.get(slot).ok_or(not_mapped)?;
        let ok = group
            .loaded
            .get(slot)
            .ok_or(not_mapped)?
            .get_or_init(|| self.load(seg, page_index, page).is_some());
        if *ok { Ok(page) } else { Err(not_mapped) }
    }
}

// ---------------------------------------------------------------------------
// Writing

const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;
const ET_CORE: u16 = 4;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PF_RWX: u32 = 7;

/// `Elf64_Ehdr`.
#[derive(IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Elf64Ehdr {
    e_ident: [u8; 16],
    e_type: U16,
    e_machine: U16,
    e_version: U32,
    e_entry: U64,
    e_phoff: U64,
    e_shoff: U64,
    e_flags: U32,
    e_ehsize: U16,
    e_phentsize: U16,
    e_phnum: U16,
    e_shentsize: U16,
    e_shnum: U16,
    e_shstrndx: U16,
}

/// `Elf64_Phdr`.
#[derive(IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Elf64Phdr {
    p_type: U32,
    p_flags: U32,
    p_offset: U64,
    p_vaddr: U64,
    p_paddr: U64,
    p_filesz: U64,
    p_memsz: U64,
    p_align: U64,
}

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const _: () = assert!(size_of::<Elf64Ehdr>() == EHDR_SIZE);
const _: () = assert!(size_of::<Elf64Phdr>() == PHDR_SIZE);

/// The extents to write: populated, clipped to RAM, at most
/// [`MAX_PHNUM`] of them (the smallest gaps inside a RAM range bridged).
fn core_segments(mem: &PhysMem) -> Result<Vec<PhysRange>, ImageError> {
    let populated = mem.populated().map_err(ImageError::Populated)?;
    let ram = mem.layout().ram();
    let mut segs: Vec<PhysRange> = Vec::new();
    for p in populated {
        for r in ram {
            let start = p.start().max(r.start());
            let end = p.end().min(r.end());
            if let Ok(x) = PhysRange::new(start, end)
                && !x.is_empty()
            {
                segs.push(x);
            }
        }
    }
    segs.sort();
    Ok(bridge_gaps(segs, ram, MAX_PHNUM))
}

/// Merges sorted, disjoint `segs` across their smallest gaps (only gaps
/// inside one RAM range) until at most `max` remain, or no gap can go.
fn bridge_gaps(segs: Vec<PhysRange>, ram: &[PhysRange], max: usize) -> Vec<PhysRange> {
    let Some(excess) = segs.len().checked_sub(max).filter(|&e| e > 0) else {
        return segs;
    };
    let same_ram = |a: PhysRange, b: PhysRange| {
        ram.iter()
            .any(|r| r.contains(a.start()) && r.contains(b.start()))
    };
    let mut gaps: Vec<(u64, usize)> = segs
        .windows(2)
        .enumerate()
        .filter_map(|(i, w)| match w {
            [a, b] if same_ram(*a, *b) => Some((b.start().offset_from(a.end())?, i)),
            _ => None,
        })
        .collect();
    gaps.sort_unstable();
    let bridge: std::collections::BTreeSet<usize> =
        gaps.iter().take(excess).map(|&(_, i)| i).collect();
    let mut out: Vec<PhysRange> = Vec::with_capacity(segs.len().saturating_sub(excess));
    for (i, s) in segs.into_iter().enumerate() {
        let merged = match out.last_mut() {
            Some(last) if i > 0 && bridge.contains(&(i - 1)) => {
                PhysRange::new(last.start(), s.end())
                    .ok()
                    .map(|m| *last = m)
            }
            _ => None,
        };
        if merged.is_none() {
            out.push(s);
        }
    }
    out
}

/// Writes `mem` as an ELF64 core (see the module doc) to `out`; returns
/// the segments written.
pub fn write_core(mem: &PhysMem, out: &mut impl Write) -> Result<Vec<PhysRange>, ImageError> {
    let segs = core_segments(mem)?;
    write_elf(mem, &segs, out)?;
    Ok(segs)
}

/// Writes the pages of `segs` (page aligned, at most 65534) from `mem` as
/// an ELF64 core, one `PT_LOAD` each (see the module doc).
pub fn write_elf(
    mem: &(impl PageMap + ?Sized),
    segs: &[PhysRange],
    out: &mut impl Write,
) -> Result<(), ImageError> {
    write_elf_with_memsz(mem, segs, &[], out)
}

/// [`write_elf`], with segment `i` declaring `memsz[i]` bytes of RAM
/// (`p_memsz`, at least its file bytes; missing entries: the file bytes):
/// RAM past the file bytes reads as zero. What a dump that leaves out
/// zero pages writes, and how a hostile image claims RAM it does not
/// carry.
pub fn write_elf_with_memsz(
    mem: &(impl PageMap + ?Sized),
    segs: &[PhysRange],
    memsz: &[u64],
    out: &mut impl Write,
) -> Result<(), ImageError> {
    let io_err = |what: &'static str, offset: u64| {
        move |source| ImageError::Io {
            what,
            offset,
            source,
        }
    };
    let phnum = u16::try_from(segs.len())
        .ok()
        .filter(|&n| usize::from(n) <= MAX_PHNUM)
        .ok_or_else(|| ImageError::Elf {
            offset: 0,
            reason: format!(
                "{} segments: more than {MAX_PHNUM} need PN_XNUM",
                segs.len()
            ),
        })?;
    let headers = (EHDR_SIZE + PHDR_SIZE * segs.len()) as u64;
    let mut ident = [0u8; 16];
    ident[..4].copy_from_slice(b"\x7fELF");
    ident[4] = ELFCLASS64;
    ident[5] = ELFDATA2LSB;
    ident[6] = EV_CURRENT;
    let ehdr = Elf64Ehdr {
        e_ident: ident,
        e_type: U16::new(ET_CORE),
        e_machine: U16::new(EM_X86_64),
        e_version: U32::new(u32::from(EV_CURRENT)),
        e_entry: U64::new(0),
        e_phoff: U64::new(EHDR_SIZE as u64),
        e_shoff: U64::new(0),
        e_flags: U32::new(0),
        e_ehsize: U16::new(EHDR_SIZE as u16),
        e_phentsize: U16::new(PHDR_SIZE as u16),
        e_phnum: U16::new(phnum),
        e_shentsize: U16::new(0),
        e_shnum: U16::new(0),
        e_shstrndx: U16::new(0),
    };
    out.write_all(ehdr.as_bytes())
        .map_err(io_err("writing the ELF header", 0))?;
    let mut offset = headers.next_multiple_of(PAGE_SIZE);
    let data_start = offset;
    for (i, s) in segs.iter().enumerate() {
        let ph = Elf64Phdr {
            p_type: U32::new(PT_LOAD),
            p_flags: U32::new(PF_RWX),
            p_offset: U64::new(offset),
            p_vaddr: U64::new(0),
            p_paddr: U64::new(s.start().as_u64()),
            p_filesz: U64::new(s.size()),
            p_memsz: U64::new(memsz.get(i).map_or(s.size(), |&m| m.max(s.size()))),
            p_align: U64::new(PAGE_SIZE),
        };
        let at = (EHDR_SIZE + PHDR_SIZE * i) as u64;
        out.write_all(ph.as_bytes())
            .map_err(io_err("writing a program header", at))?;
        offset += s.size();
    }
    let pad = vec![0u8; usize::try_from(data_start - headers).unwrap_or(0)];
    out.write_all(&pad)
        .map_err(io_err("padding the headers", headers))?;
    let mut offset = data_start;
    let mut buf = Vec::with_capacity(4096);
    for s in segs {
        let mut p = s.start();
        while p < s.end() {
            let page = mem
                .page(p)
                .map_err(|source| ImageError::Mem { phys: p, source })?;
            buf.clear();
            for w in page.words() {
                buf.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
            }
            out.write_all(&buf)
                .map_err(io_err("writing memory", offset))?;
            offset += PAGE_SIZE;
            p = p.checked_add(PAGE_SIZE).unwrap_or(s.end());
        }
    }
    out.flush().map_err(io_err("flushing", offset))?;
    Ok(())
}

/// The root FDT's file beside a core: `FILE.fdt`.
pub fn fdt_path(core: &Path) -> PathBuf {
    let mut s = core.as_os_str().to_owned();
    s.push(".fdt");
    PathBuf::from(s)
}

/// What [`dump_old_kernel`] wrote.
#[derive(Debug, Clone)]
pub struct DumpSummary {
    /// The core's segments.
    pub segments: Vec<PhysRange>,
    /// Bytes of memory in the core.
    pub bytes: u64,
    /// The FDT file.
    pub fdt_path: PathBuf,
    /// The FDT's physical address.
    pub fdt_phys: PhysAddr,
    /// The FDT's `totalsize`.
    pub fdt_bytes: u64,
}

/// What `kho run --dump-core FILE` does in the old kernel after the poison,
/// just before the exec: the memory as an ELF core at `path`
/// ([`write_core`]) and the root FDT's `totalsize` bytes at `FILE.fdt`.
pub fn dump_old_kernel(img: &OldKernelImage, path: &Path) -> Result<DumpSummary, ImageError> {
    let fdt_phys = img.fdt.start();
    let page = img
        .mem
        .page_at(fdt_phys)
        .map_err(|source| ImageError::Fdt {
            phys: fdt_phys,
            source,
        })?;
    let mut fdt = Vec::with_capacity(PAGE_WORDS * 8);
    for w in page.snapshot() {
        fdt.extend_from_slice(&w.to_le_bytes());
    }
    let totalsize = fdt
        .get(4..8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes);
    fdt.truncate(
        usize::try_from(totalsize)
            .unwrap_or(usize::MAX)
            .min(fdt.len()),
    );
    let fdt_path = fdt_path(path);
    let io_err = |what: &'static str| {
        move |source| ImageError::Io {
            what,
            offset: 0,
            source,
        }
    };
    std::fs::write(&fdt_path, &fdt).map_err(io_err("writing the FDT file"))?;
    let file = File::create(path).map_err(io_err("creating the core file"))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let segments = write_core(&img.mem, &mut out)?;
    Ok(DumpSummary {
        bytes: segments.iter().map(|s| s.size()).sum(),
        segments,
        fdt_path,
        fdt_phys,
        fdt_bytes: u64::try_from(fdt.len()).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests;
