//! Test support, not API: small handovers built in memory and the `kho
//! inspect` fuzz entry point, shared by the crate's unit tests, its
//! integration tests (`tests/`) and the fuzz target (`fuzz/`).
//!
//! Compiled under the `testing` feature (which turns on `kho/testing`): the
//! crate's dev-dependency on itself and `fuzz/Cargo.toml` enable it; a
//! normal build never sees it.
//!
//! The fixtures are a kho-v3 radix tree in an ELF core ([`tiny_v3`]) and
//! kho-v1 chunk lists in raw images ([`v1_raw`]).

use kho::testing::write_v1;
use kho::{
    BitmapSize, Block, KhoFdtBuilder, KhoVersion, Order, PAGE_SIZE, PageAlloc, PageMap, PhysAddr,
    PhysRange, RadixTree, VecArena,
};

use crate::image::{Source, write_elf};
use crate::inspect::{
    FdtSource, Finding, InspectOptions, Inspection, MapFormat, inspect, open_image,
};

/// Fuzz entry point: arbitrary bytes as an image and a root FDT; must never
/// panic, and every finding names an address (a [`Finding`] always does).
///
/// | bytes    | meaning                                                             |
/// |----------|---------------------------------------------------------------------|
/// | 0        | flags: bit 0, a raw image at 1 MiB (else an ELF core);              |
/// |          | bits 1..=3, the format (0 detect, 1..=4 [`MapFormat::ALL`]);           |
/// |          | bit 4, the FDT is read from the image at the address below          |
/// |          | (else it is the bytes below);                                       |
/// |          | bits 5..=6, the block cap: 4096, 2^16, 2^20, or none given (inspect's default, the RAM's pages); |
/// |          | bit 7, the machine part below is present                             |
/// | 1..9     | the FDT's physical address (LE u64)                                 |
/// | 9..11    | `n`: the FDT file's length (LE u16)                                 |
/// | 14 bytes | only with bit 7, the machine: `--ram` as a first and an end page frame number (LE u32 each; end 0: the image's segments) and `--forbidden` as a first page frame number (LE u32) and a page count (LE u16; 0: none) |
/// | n bytes  | the FDT file                                                        |
/// | rest     | the image                                                           |
pub fn fuzz_one(data: &[u8]) {
    let _ = fuzz_run(data);
}

/// [`fuzz_one`], returning what inspect made of the input (`None`: header
/// too short).
pub fn fuzz_run(data: &[u8]) -> Option<Result<Inspection, Finding>> {
    let (&flags, rest) = data.split_first()?;
    let (phys, rest) = rest.split_at_checked(8)?;
    let phys = PhysAddr::new(u64::from_le_bytes(phys.try_into().ok()?));
    let (n, rest) = rest.split_at_checked(2)?;
    let n = usize::from(u16::from_le_bytes(n.try_into().ok()?));
    let (machine, rest) = if flags & 0x80 != 0 {
        let (m, rest) = rest.split_at_checked(14)?;
        (Some(Machine::parse(m)?), rest)
    } else {
        (None, rest)
    };
    let (fdt, image) = rest.split_at_checked(n.min(rest.len()))?;
    let base = (flags & 1 != 0).then_some(PhysAddr::new(0x10_0000));
    let image = match open_image(Source::Bytes(image.to_vec()), base) {
        Ok(i) => i,
        Err(e) => {
            let f = Finding::from(&e);
            let _ = f.to_string();
            return Some(Err(f));
        }
    };
    let format = match (flags >> 1) & 7 {
        0 => None,
        k => MapFormat::ALL
            .get(usize::from(k).saturating_sub(1))
            .copied(),
    };
    let src = if flags & 0x10 != 0 {
        FdtSource::Phys(phys)
    } else {
        FdtSource::File(fdt.to_vec())
    };
    let max_blocks = match (flags >> 5) & 3 {
        0 => Some(4096),
        1 => Some(1 << 16),
        2 => Some(1 << 20),
        _ => None,
    };
    let machine = machine.unwrap_or_default();
    let opts = InspectOptions {
        format,
        ram: machine.ram,
        forbidden: machine.forbidden,
        max_blocks,
    };
    let out = inspect(&image, &src, &opts);
    for f in &out.errors {
        let _ = f.to_string();
    }
    Some(Ok(out))
}

/// The machine part of a fuzz input (see [`fuzz_one`]): `--ram` and
/// `--forbidden`, from page frame numbers so they are always aligned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// `--ram`: `None`, the image's segments.
    pub ram: Option<Vec<PhysRange>>,
    /// `--forbidden`.
    pub forbidden: Vec<PhysRange>,
}

impl Machine {
    fn parse(b: &[u8]) -> Option<Self> {
        let u32_at = |i: usize| -> Option<u64> {
            Some(u64::from(u32::from_le_bytes(
                b.get(i..i + 4)?.try_into().ok()?,
            )))
        };
        let (first, end, forbidden) = (u32_at(0)?, u32_at(4)?, u32_at(8)?);
        let pages = u64::from(u16::from_le_bytes(b.get(12..14)?.try_into().ok()?));
        let pages_range = |pfn: u64, count: u64| {
            PhysRange::from_start_size(PhysAddr::new(pfn * PAGE_SIZE), count * PAGE_SIZE).ok()
        };
        let ram = (end != 0).then(|| {
            let (lo, hi) = (first.min(end), first.max(end));
            pages_range(lo, hi - lo).into_iter().collect()
        });
        let forbidden = (pages != 0)
            .then(|| pages_range(forbidden, pages))
            .flatten()
            .into_iter()
            .collect();
        Some(Self { ram, forbidden })
    }

    /// The 14 bytes [`fuzz_one`] reads after the FDT's length when flag
    /// bit 7 is set: `ram` and `forbidden` as page frame numbers.
    pub fn bytes(ram: Option<(u32, u32)>, forbidden: Option<(u32, u16)>) -> Vec<u8> {
        let (first, end) = ram.unwrap_or((0, 0));
        let (start, pages) = forbidden.unwrap_or((0, 0));
        let mut out = Vec::new();
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&pages.to_le_bytes());
        out
    }
}

/// A handover: the image bytes, the FDT bytes, where the FDT is in the
/// image, the blocks preserved (sorted) and the map's pages.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The image (ELF core or raw).
    pub image: Vec<u8>,
    /// The root FDT.
    pub fdt: Vec<u8>,
    /// The root FDT's address in the image.
    pub fdt_phys: PhysAddr,
    /// Every preserved block, sorted.
    pub blocks: Vec<Block>,
}

fn put(arena: &VecArena, at: PhysAddr, bytes: &[u8]) {
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b.iter_mut().zip(chunk).for_each(|(d, s)| *d = *s);
        arena
            .write_word(at, i, u64::from_le_bytes(b))
            .expect("FDT fits its page");
    }
}

/// The arena's pages as a raw image.
pub fn raw(arena: &VecArena) -> Vec<u8> {
    let mut out = Vec::new();
    let mut p = arena.range().start();
    while p < arena.range().end() {
        for w in arena.page(p).expect("arena page").snapshot() {
            out.extend_from_slice(&w.to_le_bytes());
        }
        p = p.checked_add(PAGE_SIZE).expect("arena fits");
    }
    out
}

/// kho-v3: 16 pages at 1 MiB as one ELF segment; blocks of orders 0
/// and 1 at its top and the FDT page (order 0), a blob subnode "demo"
/// on the order-1 block.
pub fn tiny_v3() -> Fixture {
    let base = 0x10_0000u64;
    let arena = VecArena::new(PhysAddr::new(base), 16);
    let page = |i: u64| PhysAddr::new(base + i * PAGE_SIZE);
    let mut blocks = vec![
        Block::new(page(12), Order::new(0)).expect("aligned"),
        Block::new(page(14), Order::new(1)).expect("aligned"),
    ];
    for i in 12..16 {
        arena.claim(page(i)).expect("arena page");
    }
    let tree = RadixTree::new(&arena).expect("tree");
    let fdt_phys = arena.alloc_zeroed_page().expect("FDT page");
    let mut b = KhoFdtBuilder::new(tree.root());
    b.add_subnode("demo", page(14), 5000);
    let fdt = b.build().expect("FDT");
    put(&arena, fdt_phys, &fdt);
    blocks.push(Block::new(fdt_phys, Order::ZERO).expect("aligned"));
    for &blk in &blocks {
        tree.preserve(blk).expect("preserve");
    }
    blocks.sort();
    let mut image = Vec::new();
    write_elf(&arena, &[arena.range()], &mut image).expect("in-memory write");
    Fixture {
        image,
        fdt,
        fdt_phys,
        blocks,
    }
}

/// kho-v1 with bitmaps of `size`: `pages` pages at `base` as a raw
/// image, `blocks` serialized by [`write_v1`]; the FDT is in the file
/// only (`fdt_phys` is zero).
pub fn v1_raw(base: PhysAddr, pages: usize, blocks: &[Block], size: BitmapSize) -> Fixture {
    let arena = VecArena::new(base, pages);
    for b in blocks {
        let mut p = b.phys();
        while p < b.phys().checked_add(b.size()).expect("block fits") {
            arena.claim(p).expect("block inside the arena");
            p = p.checked_add(PAGE_SIZE).expect("fits");
        }
    }
    let head = write_v1(&arena, blocks, size).expect("v1 list");
    let fdt = KhoFdtBuilder::new(head)
        .version(KhoVersion::V1)
        .build()
        .expect("FDT");
    let mut sorted = blocks.to_vec();
    sorted.sort();
    Fixture {
        image: raw(&arena),
        fdt,
        fdt_phys: PhysAddr::ZERO,
        blocks: sorted,
    }
}

/// A fuzz input (see [`fuzz_one`]) from its parts, with no machine part.
pub fn fuzz_input(flags: u8, fdt_phys: PhysAddr, fdt: &[u8], image: &[u8]) -> Vec<u8> {
    fuzz_input_on(flags & 0x7f, &[], fdt_phys, fdt, image)
}

/// A fuzz input (see [`fuzz_one`]) from its parts; `machine` is the bytes
/// of [`Machine::bytes`] (flag bit 7 set), or empty (bit 7 clear).
pub fn fuzz_input_on(
    flags: u8,
    machine: &[u8],
    fdt_phys: PhysAddr,
    fdt: &[u8],
    image: &[u8],
) -> Vec<u8> {
    let flags = if machine.is_empty() {
        flags & 0x7f
    } else {
        flags | 0x80
    };
    let mut out = vec![flags];
    out.extend_from_slice(&fdt_phys.as_u64().to_le_bytes());
    let n = u16::try_from(fdt.len()).expect("FDT under 64 KiB");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(machine);
    out.extend_from_slice(fdt);
    out.extend_from_slice(image);
    out
}
