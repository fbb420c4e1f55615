//! The kho-v1 reader's fuzz input: byte 0 chooses (bit 0: page bitmaps,
//! else 512 bytes; bit 1: the range [2 MiB, 4 MiB) is forbidden); the rest
//! fills up to 16 pages at 1 MiB, read as native-endian words; the head
//! chunk is the first page. RAM is [0, 1 GiB), so pointers outside the
//! filled pages exercise the unmapped path. The reader's work is bounded by
//! the 16 pages (a bitmap is read once, a chunk entered once), so no cap
//! on blocks is needed.

use crate::addr::{PAGE_SIZE, PhysAddr, PhysRange};
use crate::mem::{PAGE_WORDS, RamMap, VecArena};
use crate::v1::BitmapSize;

use super::v1_fuzz;

const BASE: u64 = 0x10_0000;
const MAX_PAGES: usize = 16;

/// The machine a fuzz input describes: arena, bitmap size, whether
/// the scratch range is forbidden.
pub fn load(data: &[u8]) -> (VecArena, BitmapSize, bool) {
    let (flags, body) = data.split_first().map_or((0, data), |(f, b)| (*f, b));
    let size = if flags & 1 != 0 {
        BitmapSize::Page
    } else {
        BitmapSize::Bytes512
    };
    let page_bytes = usize::try_from(PAGE_SIZE).unwrap_or(4096);
    let pages = body.len().div_ceil(page_bytes).clamp(1, MAX_PAGES);
    let arena = VecArena::new(PhysAddr::new(BASE), pages);
    let mut phys = PhysAddr::new(BASE);
    for page in body.chunks(page_bytes).take(pages) {
        for (i, word) in page.chunks(8).enumerate().take(PAGE_WORDS) {
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(word) {
                *d = *s;
            }
            let _ = arena.write_word(phys, i, u64::from_ne_bytes(b));
        }
        phys = phys.checked_add(PAGE_SIZE).unwrap_or(phys);
    }
    (arena, size, flags & 2 != 0)
}

/// RAM: [0, 1 GiB).
pub const RAM: [PhysRange; 1] = [range(0, 0x4000_0000)];
/// The scratch range [2 MiB, 4 MiB), forbidden if the input asks.
pub const SCRATCH: [PhysRange; 1] = [range(0x20_0000, 0x40_0000)];
/// The head chunk: the first page loaded.
pub const HEAD: PhysAddr = PhysAddr::new(BASE);

// Only used in the constants above: a bad range fails the build.
#[allow(clippy::panic)]
const fn range(a: u64, b: u64) -> PhysRange {
    match PhysRange::new(PhysAddr::new(a), PhysAddr::new(b)) {
        Ok(r) => r,
        Err(_) => panic!("inverted range"),
    }
}

/// Reads the list an input describes with the stream, [`read_all`](crate::v1::V1Reader::read_all)
/// and [`check`](crate::v1::V1Reader::check), and checks them against the structure-aware
/// harness's reference reader ([`v1_fuzz::check_reader`]): same blocks, or
/// the same rejection; a disagreement panics. Every error formats.
pub fn run(data: &[u8]) {
    let (arena, size, scratch) = load(data);
    let forbidden: &[PhysRange] = if scratch { &SCRATCH } else { &[] };
    let Ok(map) = RamMap::new(&RAM, forbidden) else {
        return;
    };
    let _ = v1_fuzz::check_reader(&arena, map, HEAD, size);
}
