//! Tests of the kho-v1 chunk reader: golden chunks built by hand with raw
//! words, the writer checked against hand-computed words, round trips, and
//! one test per error variant.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

extern crate std;

use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::mem::VecArena;
use crate::testing::{fuzz_v1, v1_input, write_v1};

const BASE: u64 = 0x100_0000; // 16 MiB: the arena holding chunks and bitmaps
const GIB: u64 = 1 << 30;

fn pa(v: u64) -> PhysAddr {
    PhysAddr::new(v)
}

fn block(phys: u64, order: u8) -> Block {
    Block::new(pa(phys), Order::new(order)).unwrap()
}

/// RAM [0, 1 GiB); forbidden (scratch) [8 MiB, 10 MiB).
const RAM: [PhysRange; 1] = [const_range(0, GIB)];
const SCRATCH: [PhysRange; 1] = [const_range(0x80_0000, 0xa0_0000)];

const fn const_range(a: u64, b: u64) -> PhysRange {
    match PhysRange::new(PhysAddr::new(a), PhysAddr::new(b)) {
        Ok(r) => r,
        Err(_) => panic!("inverted range"),
    }
}

fn ram() -> RamMap<'static> {
    RamMap::new(&RAM, &SCRATCH).unwrap()
}

fn arena(pages: usize) -> VecArena {
    VecArena::new(pa(BASE), pages)
}

/// Writes a chunk word by word: `{next, order | num_elms << 32, entries...}`.
fn raw_chunk(a: &VecArena, at: u64, next: u64, order: u32, num_elms: u32, entries: &[(u64, u64)]) {
    a.claim(pa(at)).unwrap();
    a.write_word(pa(at), 0, next).unwrap();
    a.write_word(pa(at), 1, u64::from(order) | (u64::from(num_elms) << 32))
        .unwrap();
    for (i, &(start, bitmap)) in entries.iter().enumerate() {
        a.write_word(pa(at), 2 + 2 * i, start).unwrap();
        a.write_word(pa(at), 3 + 2 * i, bitmap).unwrap();
    }
}

fn chunk(a: &VecArena, at: u64, next: u64, order: u32, entries: &[(u64, u64)]) {
    raw_chunk(
        a,
        at,
        next,
        order,
        u32::try_from(entries.len()).unwrap(),
        entries,
    );
}

/// Sets word `word` of the bitmap at `at` (any 8-byte aligned address).
fn bitmap_word(a: &VecArena, at: u64, word: usize, value: u64) {
    let page = at & !0xfff;
    a.claim(pa(page)).unwrap();
    a.write_word(
        pa(page),
        usize::try_from((at & 0xfff) / 8).unwrap() + word,
        value,
    )
    .unwrap();
}

fn read(a: &VecArena, size: BitmapSize, head: u64) -> Result<Vec<Block>, V1Error> {
    V1Reader::new(a, ram(), size).blocks(pa(head)).collect()
}

fn read_err(a: &VecArena, size: BitmapSize, head: u64) -> V1Error {
    let mut it = V1Reader::new(a, ram(), size).blocks(pa(head));
    let err = it.by_ref().find_map(Result::err).expect("list accepted");
    assert!(it.next().is_none(), "iterator not fused after an error");
    err
}

#[test]
fn layout_matches_linux() {
    assert_eq!(KHOSER_BITMAP_SIZE, (4096 - 16) / 16);
    assert_eq!(core::mem::offset_of!(KhoserMemChunk, bitmaps), 16);
    assert_eq!(core::mem::offset_of!(KhoserMemChunkHdr, order), 8);
    assert_eq!(core::mem::offset_of!(KhoserMemChunkHdr, num_elms), 12);
    assert_eq!(core::mem::offset_of!(KhoserMemBitmapPtr, bitmap), 8);
    assert_eq!(BitmapSize::Bytes512.bits(), 512 * 8);
    assert_eq!(BitmapSize::Page.bits(), 4096 * 8);
    // 6.16 comment: "For order 0 allocations each bitmap will cover 16M".
    assert_eq!(
        1u64 << BitmapSize::Bytes512.span_shift(Order::ZERO),
        16 << 20
    );
    // Later: "each bitmap will cover 128M of address space".
    assert_eq!(1u64 << BitmapSize::Page.span_shift(Order::ZERO), 128 << 20);
}

#[test]
fn empty_list() {
    let a = arena(1);
    assert_eq!(read(&a, BitmapSize::Bytes512, 0), Ok(Vec::new()));
}

/// Two chunks and three 512-byte bitmaps packed in one page, as a 6.16
/// kernel with kmalloc-512 would leave them.
fn golden_512(a: &VecArena) -> u64 {
    let slab = BASE + 0x1000;
    let c0 = BASE;
    let c1 = BASE + 0x2000;
    // Order 0: index 0 (phys_start 0) and index 3 (3 * 16 MiB).
    chunk(
        a,
        c0,
        c1,
        0,
        &[(0, slab + 0x200), (0x300_0000, slab + 0x400)],
    );
    bitmap_word(a, slab + 0x200, 0, (1 << 5) | (1 << 7));
    bitmap_word(a, slab + 0x200, 63, 1 << 63); // bit 4095
    bitmap_word(a, slab + 0x400, 1, 1); // bit 64
    // Order 9: index 0, span 4096 * 2 MiB.
    chunk(a, c1, 0, 9, &[(0, slab)]);
    bitmap_word(a, slab, 0, (1 << 1) | (1 << 3));
    c0
}

#[test]
fn golden_chunks_512_byte_bitmaps() {
    let a = arena(4);
    let head = golden_512(&a);
    assert_eq!(
        read(&a, BitmapSize::Bytes512, head),
        Ok(alloc::vec![
            block(0x5000, 0),
            block(0x7000, 0),
            block(0xfff000, 0),
            block(0x300_0000 + 64 * 0x1000, 0),
            block(0x20_0000, 9),
            block(0x60_0000, 9),
        ])
    );
    // The same bytes read with the wrong bitmap size: the 512-byte aligned
    // bitmap is not page aligned.
    assert_eq!(
        read_err(&a, BitmapSize::Page, head),
        V1Error::BitmapUnaligned {
            chunk: pa(BASE),
            entry: 0,
            bitmap: pa(BASE + 0x1200),
            align: 4096
        }
    );
}

#[test]
fn golden_chunk_page_bitmaps() {
    let a = arena(2);
    // Order 0, index 1: phys_start 128 MiB; bits 0 and 32767.
    chunk(&a, BASE, 0, 0, &[(0x800_0000, BASE + 0x1000)]);
    bitmap_word(&a, BASE + 0x1000, 0, 1);
    bitmap_word(&a, BASE + 0x1000, 511, 1 << 63);
    assert_eq!(
        read(&a, BitmapSize::Page, BASE),
        Ok(alloc::vec![
            block(0x800_0000, 0),
            block(0x800_0000 + 32767 * 0x1000, 0)
        ])
    );
}

#[test]
fn writer_matches_hand_computed_words() {
    let a = arena(8);
    let blocks = [block(0x7000, 0), block(0x20_0000, 9), block(0x5000, 0)];
    let head = write_v1(&a, &blocks, BitmapSize::Bytes512).unwrap();
    // Bitmaps first, in (order, index) order, packed in the first page;
    // then one chunk per order.
    let slab = BASE;
    let (c0, c1) = (BASE + 0x1000, BASE + 0x2000);
    assert_eq!(head, pa(c0));
    let words = |p: u64| a.page(pa(p)).unwrap().snapshot();
    let chunk0 = words(c0);
    assert_eq!(&chunk0[..4], &[c1, 1 << 32, 0, slab]);
    assert!(chunk0[4..].iter().all(|&w| w == 0));
    let chunk1 = words(c1);
    assert_eq!(&chunk1[..4], &[0, 9 | (1 << 32), 0, slab + 0x200]);
    let bitmaps = words(slab);
    assert_eq!(bitmaps[0], (1 << 5) | (1 << 7));
    assert_eq!(bitmaps[64], 1 << 1);
    assert_eq!(bitmaps.iter().filter(|&&w| w != 0).count(), 2);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "heavy for Miri: 1 ms or more natively, thousands of times that interpreted"
)]
fn writer_chains_full_chunks_for_both_sizes() {
    const BIG: [PhysRange; 1] = [const_range(0, 64 * GIB)];
    for size in [BitmapSize::Bytes512, BitmapSize::Page] {
        let a = arena(320);
        // 300 order-0 blocks, each in its own bitmap: two chunks of order 0.
        let span = 1u64 << size.span_shift(Order::ZERO);
        let blocks: Vec<Block> = (0..300).map(|i| block(i * span + 0x1000, 0)).collect();
        let head = write_v1(&a, &blocks, size).unwrap();
        let first = KhoserMemChunk::from_page(a.page(head).unwrap());
        assert_eq!(first.hdr().num_elms(), 255);
        assert_eq!(first.entries().len(), 255);
        let second = KhoserMemChunk::from_page(a.page(first.hdr().next()).unwrap());
        assert_eq!(second.hdr().num_elms(), 45);
        assert_eq!(second.hdr().next(), PhysAddr::ZERO);
        let map = RamMap::new(&BIG, &[]).unwrap();
        let got = V1Reader::new(&a, map, size).read_all(head).unwrap();
        assert_eq!(got, blocks);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 64 }))]

    #[test]
    fn write_then_read_round_trips(
        small in proptest::collection::btree_set(0u64..0x1_8000, 0..300),
        huge in proptest::collection::btree_set(0x180u64..0x200, 0..20),
        page in any::<bool>(),
    ) {
        let size = if page { BitmapSize::Page } else { BitmapSize::Bytes512 };
        // Order 0 below 384 MiB, order 9 from 768 MiB: disjoint by design.
        let mut blocks: Vec<Block> = small.iter().map(|&p| block(p << 12, 0)).collect();
        blocks.extend(huge.iter().map(|&h| block(h << 21, 9)));
        let a = arena(64);
        let map = RamMap::new(&RAM, &[]).unwrap();
        let head = write_v1(&a, &blocks, size).unwrap();
        // Stream order: orders ascending, then addresses ascending.
        let streamed: Result<Vec<_>, _> = V1Reader::new(&a, map, size).blocks(head).collect();
        prop_assert_eq!(streamed.unwrap(), blocks.clone());
        let mut sorted = blocks;
        sorted.sort();
        prop_assert_eq!(V1Reader::new(&a, map, size).read_all(head).unwrap(), sorted);
    }
}

// ---- one test per V1Error variant ----

#[test]
fn error_chunk_unaligned() {
    let a = arena(1);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE + 8),
        V1Error::ChunkUnaligned {
            chunk: pa(BASE + 8)
        }
    );
}

#[test]
fn error_chunk_outside_ram() {
    let a = arena(1);
    chunk(&a, BASE, GIB, 0, &[]);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::ChunkOutsideRam { chunk: pa(GIB) }
    );
    // The very last page of the space.
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, !0xfff_u64),
        V1Error::ChunkOutsideRam {
            chunk: pa(!0xfff_u64)
        }
    );
}

#[test]
fn error_chunk_forbidden() {
    let a = arena(1);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, 0x9f_f000),
        V1Error::ChunkForbidden {
            chunk: pa(0x9f_f000),
            forbidden: SCRATCH[0]
        }
    );
}

#[test]
fn error_chunk_budget() {
    let a = arena(3);
    chunk(&a, BASE, BASE + 0x1000, 0, &[]);
    chunk(&a, BASE + 0x1000, BASE + 0x2000, 0, &[]);
    chunk(&a, BASE + 0x2000, 0, 0, &[]);
    let reader = V1Reader::new(&a, ram(), BitmapSize::Bytes512);
    assert_eq!(
        reader.with_chunk_budget(3).read_all(pa(BASE)),
        Ok(Vec::new())
    );
    assert_eq!(
        reader.with_chunk_budget(2).read_all(pa(BASE)),
        Err(V1Error::ChunkBudget {
            chunk: pa(BASE + 0x2000),
            limit: 2
        })
    );
}

#[test]
fn error_chunk_cycle() {
    // Self loop.
    let a = arena(8);
    chunk(&a, BASE, BASE, 0, &[]);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::ChunkCycle { chunk: pa(BASE) }
    );
    // A tail of three chunks into a loop of four: found within a few laps,
    // long before the budget (RAM pages) would stop it.
    let at = |i: u64| BASE + i * 0x1000;
    for i in 0..7 {
        let next = if i == 6 { at(3) } else { at(i + 1) };
        chunk(&a, at(i), next, 0, &[]);
    }
    let mut it = V1Reader::new(&a, ram(), BitmapSize::Bytes512).blocks(pa(BASE));
    let Some(Err(V1Error::ChunkCycle { chunk })) = it.next() else {
        panic!("cycle not detected")
    };
    assert!(
        (3..7).map(at).any(|c| pa(c) == chunk),
        "{chunk} is not on the loop"
    );
}

#[test]
fn error_unmapped() {
    // RAM says yes, the page map (the arena) says no.
    let a = arena(1);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, 0x3000_0000),
        V1Error::Unmapped {
            phys: pa(0x3000_0000),
            source: MemError::NotMapped {
                phys: pa(0x3000_0000)
            }
        }
    );
}

#[test]
fn error_too_many_entries() {
    let a = arena(1);
    raw_chunk(&a, BASE, 0, 0, 256, &[]);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::TooManyEntries {
            chunk: pa(BASE),
            num_elms: 256,
            max: 255
        }
    );
}

#[test]
fn error_bad_order() {
    let a = arena(1);
    chunk(&a, BASE, 0, 52, &[]);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::BadOrder {
            chunk: pa(BASE),
            order: 52,
            max: Order::MAX
        }
    );
}

#[test]
fn error_bitmap_unaligned() {
    let a = arena(2);
    chunk(&a, BASE, 0, 0, &[(0, BASE + 0x1100)]);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::BitmapUnaligned {
            chunk: pa(BASE),
            entry: 0,
            bitmap: pa(BASE + 0x1100),
            align: 512
        }
    );
}

#[test]
fn error_bitmap_outside_ram() {
    let a = arena(2);
    chunk(
        &a,
        BASE,
        0,
        0,
        &[(0, BASE + 0x1000), (0x100_0000, GIB - 0x200)],
    );
    assert_eq!(
        read_err(&a, BitmapSize::Page, BASE),
        V1Error::BitmapUnaligned {
            chunk: pa(BASE),
            entry: 1,
            bitmap: pa(GIB - 0x200),
            align: 4096
        }
    );
    chunk(&a, BASE, 0, 0, &[(0, BASE + 0x1000), (0x800_0000, GIB)]);
    assert_eq!(
        read_err(&a, BitmapSize::Page, BASE),
        V1Error::BitmapOutsideRam {
            chunk: pa(BASE),
            entry: 1,
            bitmap: pa(GIB)
        }
    );
}

#[test]
fn error_bitmap_forbidden() {
    let a = arena(1);
    chunk(&a, BASE, 0, 0, &[(0, 0x80_0200)]);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::BitmapForbidden {
            chunk: pa(BASE),
            entry: 0,
            bitmap: pa(0x80_0200),
            forbidden: SCRATCH[0]
        }
    );
}

#[test]
fn error_phys_start_misaligned() {
    let a = arena(2);
    // Order 0, 512-byte bitmaps: the span is 16 MiB (2^24).
    chunk(&a, BASE, 0, 0, &[(0x80_0000, BASE + 0x1000)]);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::PhysStartMisaligned {
            chunk: pa(BASE),
            entry: 0,
            phys_start: pa(0x80_0000),
            order: Order::ZERO,
            span_shift: 24
        }
    );
    // Order 40: the span is 2^64, so only phys_start 0 is valid.
    chunk(&a, BASE, 0, 40, &[(1 << 63, BASE + 0x1000)]);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::PhysStartMisaligned {
            chunk: pa(BASE),
            entry: 0,
            phys_start: pa(1 << 63),
            order: Order::new(40),
            span_shift: 64
        }
    );
}

#[test]
fn error_block_overflow() {
    let a = arena(2);
    // Order 51 blocks are 2^63 bytes: bit 2 would sit at 2^64.
    chunk(&a, BASE, 0, 51, &[(0, BASE + 0x1000)]);
    bitmap_word(&a, BASE + 0x1000, 0, 1 << 2);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::BlockOverflow {
            chunk: pa(BASE),
            entry: 0,
            phys_start: PhysAddr::ZERO,
            order: Order::MAX,
            bit: 2
        }
    );
}

#[test]
fn error_block_outside_ram() {
    let a = arena(2);
    // Index 64 of order 0: phys_start 64 * 16 MiB = 1 GiB, past RAM.
    chunk(&a, BASE, 0, 0, &[(GIB, BASE + 0x1000)]);
    bitmap_word(&a, BASE + 0x1000, 0, 1);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::BlockOutsideRam {
            chunk: pa(BASE),
            entry: 0,
            block: block(GIB, 0)
        }
    );
    // Order 51 at 2^63: its end is 2^64, which no RAM range holds.
    chunk(&a, BASE, 0, 51, &[(0, BASE + 0x1000)]);
    bitmap_word(&a, BASE + 0x1000, 0, 1 << 1);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::BlockOutsideRam {
            chunk: pa(BASE),
            entry: 0,
            block: block(1 << 63, 51)
        }
    );
}

#[test]
fn error_block_forbidden() {
    let a = arena(2);
    // Order 9 (2 MiB) bit 4: the block at 8 MiB is scratch.
    chunk(&a, BASE, 0, 9, &[(0, BASE + 0x1000)]);
    bitmap_word(&a, BASE + 0x1000, 0, 1 << 4);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::BlockForbidden {
            chunk: pa(BASE),
            entry: 0,
            block: block(0x80_0000, 9),
            forbidden: SCRATCH[0]
        }
    );
}

#[test]
fn error_overlap() {
    let a = arena(4);
    // An order-9 block at 2 MiB, and an order-0 page inside it.
    chunk(&a, BASE, BASE + 0x1000, 9, &[(0, BASE + 0x2000)]);
    bitmap_word(&a, BASE + 0x2000, 0, 1 << 1);
    chunk(&a, BASE + 0x1000, 0, 0, &[(0, BASE + 0x2200)]);
    bitmap_word(&a, BASE + 0x2200, 8, 1 << 5); // bit 517: 0x205000
    let reader = V1Reader::new(&a, ram(), BitmapSize::Bytes512);
    // The stream alone cannot tell.
    assert_eq!(reader.blocks(pa(BASE)).filter(Result::is_ok).count(), 2);
    assert_eq!(
        reader.read_all(pa(BASE)),
        Err(V1Error::Overlap {
            first: block(0x20_0000, 9),
            second: block(0x20_5000, 0)
        })
    );
    // The entry-level check finds it too, without collecting blocks.
    assert_eq!(
        reader.check(pa(BASE), |_| ()),
        Err(V1Error::Overlap {
            first: block(0x20_0000, 9),
            second: block(0x20_5000, 0)
        })
    );
    // Two entries of one order and phys_start whose bitmaps share a bit:
    // the same block twice.
    chunk(
        &a,
        BASE + 0x1000,
        0,
        0,
        &[(0, BASE + 0x2200), (0, BASE + 0x2400)],
    );
    bitmap_word(&a, BASE + 0x2400, 8, 1 << 5);
    chunk(&a, BASE, BASE + 0x1000, 9, &[]);
    let same = V1Error::Overlap {
        first: block(0x20_5000, 0),
        second: block(0x20_5000, 0),
    };
    assert_eq!(reader.read_all(pa(BASE)), Err(same));
    assert_eq!(reader.check(pa(BASE), |_| ()), Err(same));
}

#[test]
fn error_bitmap_shared() {
    // The same bitmap named by two entries of two chunks: every block
    // would repeat (the amplification of a shared all-ones page). Both
    // entries are named.
    let a = arena(4);
    chunk(&a, BASE, BASE + 0x1000, 0, &[(0, BASE + 0x2000)]);
    chunk(&a, BASE + 0x1000, 0, 0, &[(0x800_0000, BASE + 0x2000)]);
    bitmap_word(&a, BASE + 0x2000, 0, 1);
    for size in [BitmapSize::Bytes512, BitmapSize::Page] {
        assert_eq!(
            read_err(&a, size, BASE),
            V1Error::BitmapShared {
                bitmap: pa(BASE + 0x2000),
                first_chunk: pa(BASE),
                first_entry: 0,
                chunk: pa(BASE + 0x1000),
                entry: 0,
            }
        );
    }
    // 512-byte bitmaps may share a page (kmalloc-512 packs eight), not a
    // slot.
    chunk(&a, BASE + 0x1000, 0, 0, &[(0x800_0000, BASE + 0x2200)]);
    assert_eq!(read(&a, BitmapSize::Bytes512, BASE).map(|b| b.len()), Ok(1));
}

#[test]
fn error_bitmap_in_chunk() {
    // A bitmap inside a chunk page of the list, before and after the
    // chunk is entered.
    let a = arena(4);
    chunk(&a, BASE, BASE + 0x1000, 0, &[(0, BASE + 0x1200)]);
    chunk(&a, BASE + 0x1000, 0, 0, &[]);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::BitmapInChunk {
            chunk: pa(BASE),
            entry: 0,
            bitmap: pa(BASE + 0x1200),
            list_chunk: pa(BASE + 0x1000),
        }
    );
    chunk(&a, BASE, 0, 0, &[(0, BASE + 0x200)]);
    assert_eq!(
        read_err(&a, BitmapSize::Bytes512, BASE),
        V1Error::BitmapInChunk {
            chunk: pa(BASE),
            entry: 0,
            bitmap: pa(BASE + 0x200),
            list_chunk: pa(BASE),
        }
    );
}

#[test]
fn fuzz_entry_survives_hand_made_garbage() {
    fuzz_v1(&[]);
    fuzz_v1(&[0xff; 3]);
    let mut data = alloc::vec![0u8; 1 + 4096 * 3];
    // A chunk pointing at itself with 255 entries whose bitmaps are the
    // chunk page: every kind of nonsense at once.
    data[1..9].copy_from_slice(&0x10_0000u64.to_ne_bytes());
    data[9..17].copy_from_slice(&(255u64 << 32).to_ne_bytes());
    for i in 0..255 {
        let at = 17 + 16 * i;
        data[at + 8..at + 16].copy_from_slice(&0x10_0000u64.to_ne_bytes());
    }
    for flags in 0..4 {
        data[0] = flags;
        fuzz_v1(&data);
    }
}

/// Each v1 seed, loaded exactly as `fuzz_v1` loads it, does what its name
/// says: the corpus covers the valid paths and the main errors.
#[test]
#[cfg_attr(
    miri,
    ignore = "heavy for Miri: 1 ms or more natively, thousands of times that interpreted"
)]
fn v1_seeds_do_what_their_names_say() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/v1");
    let outcome = |name: &str| {
        let data = std::fs::read(dir.join(name)).unwrap();
        let (arena, size, scratch) = v1_input::load(&data);
        let forbidden: &[PhysRange] = if scratch { &v1_input::SCRATCH } else { &[] };
        let map = RamMap::new(&v1_input::RAM, forbidden).unwrap();
        V1Reader::new(&arena, map, size).read_all(v1_input::HEAD)
    };
    assert_eq!(outcome("valid-512-two-chunks").unwrap().len(), 5);
    assert_eq!(outcome("valid-page").unwrap().len(), 2);
    assert_eq!(outcome("empty-chunk"), Ok(Vec::new()));
    assert!(matches!(
        outcome("self-loop"),
        Err(V1Error::ChunkCycle { .. })
    ));
    assert!(matches!(
        outcome("two-cycle"),
        Err(V1Error::ChunkCycle { .. })
    ));
    assert!(matches!(
        outcome("too-many-entries"),
        Err(V1Error::TooManyEntries { .. })
    ));
    assert!(matches!(
        outcome("bad-order"),
        Err(V1Error::BadOrder { .. })
    ));
    assert!(matches!(
        outcome("phys-start-misaligned"),
        Err(V1Error::PhysStartMisaligned { .. })
    ));
    assert!(matches!(
        outcome("block-in-scratch"),
        Err(V1Error::BlockForbidden { .. })
    ));
    assert!(matches!(outcome("overlap"), Err(V1Error::Overlap { .. })));
    assert!(matches!(
        outcome("truncated"),
        Err(V1Error::Unmapped { .. })
    ));
}

/// Random word and byte mutations of every seed (a fixed xorshift stream):
/// a stand-in for a fuzzing run where cargo-fuzz is not installed.
#[test]
#[cfg_attr(
    miri,
    ignore = "heavy for Miri: 1 ms or more natively, thousands of times that interpreted"
)]
fn mutated_seeds_never_panic() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/v1");
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    for seed in &seeds {
        for _ in 0..200 {
            let mut m = seed.clone();
            if m.is_empty() {
                continue;
            }
            for _ in 0..1 + next() % 4 {
                let at = usize::try_from(next() % m.len() as u64).unwrap();
                let v = next();
                // Half the time a plausible pointer into the arena.
                let v = if v & 1 == 0 {
                    0x10_0000 + (v >> 1) % 0x4000
                } else {
                    v
                };
                let end = (at + 8).min(m.len());
                m[at..end].copy_from_slice(&v.to_ne_bytes()[..end - at]);
            }
            fuzz_v1(&m);
        }
    }
}

/// Regenerates the fuzz seeds: `cargo test -p kho write_v1_seeds -- --ignored`.
/// Layout (see `fuzz_v1`): flags byte, then pages loaded at 1 MiB.
#[test]
#[ignore = "writes fuzz/corpus/v1"]
fn write_v1_seeds() {
    const FUZZ_BASE: u64 = 0x10_0000;
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/v1");
    let seed = |flags: u8, pages: &[[u64; 512]]| {
        let mut out = alloc::vec![flags];
        for p in pages {
            for w in p {
                out.extend_from_slice(&w.to_ne_bytes());
            }
        }
        out
    };
    let page_of = |words: &[(usize, u64)]| {
        let mut p = [0u64; 512];
        for &(i, v) in words {
            p[i] = v;
        }
        p
    };
    let hdr = |order: u64, n: u64| order | (n << 32);
    let at = |i: u64| FUZZ_BASE + i * 0x1000;
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    // Valid, 512-byte bitmaps: two chunks, three bitmaps in one page.
    seeds.push((
        "valid-512-two-chunks",
        seed(
            0,
            &[
                page_of(&[
                    (0, at(2)),
                    (1, hdr(0, 2)),
                    (2, 0),
                    (3, at(1) + 0x200),
                    (4, 0x300_0000),
                    (5, at(1) + 0x400),
                ]),
                page_of(&[
                    (0, 0b10),
                    (64, (1 << 5) | (1 << 7)),
                    (127, 1 << 63),
                    (129, 1),
                ]),
                page_of(&[(1, hdr(9, 1)), (2, 0), (3, at(1))]),
            ],
        ),
    ));
    // Valid, page bitmaps.
    seeds.push((
        "valid-page",
        seed(
            1,
            &[
                page_of(&[(1, hdr(0, 1)), (2, 0x800_0000), (3, at(1))]),
                page_of(&[(0, 1), (511, 1 << 63)]),
            ],
        ),
    ));
    seeds.push(("empty-chunk", seed(0, &[page_of(&[])])));
    seeds.push(("self-loop", seed(0, &[page_of(&[(0, at(0))])])));
    seeds.push((
        "two-cycle",
        seed(0, &[page_of(&[(0, at(1))]), page_of(&[(0, at(0))])]),
    ));
    seeds.push(("too-many-entries", seed(0, &[page_of(&[(1, hdr(0, 256))])])));
    seeds.push(("bad-order", seed(0, &[page_of(&[(1, hdr(52, 0))])])));
    seeds.push((
        "phys-start-misaligned",
        seed(
            0,
            &[page_of(&[(1, hdr(0, 1)), (2, 0x1000), (3, at(0) + 0x200)])],
        ),
    ));
    seeds.push((
        "block-in-scratch",
        seed(
            2,
            &[
                page_of(&[(1, hdr(9, 1)), (2, 0), (3, at(1) + 0x800)]),
                page_of(&[(256, 1 << 1)]),
            ],
        ),
    ));
    seeds.push((
        "overlap",
        seed(
            0,
            &[
                page_of(&[(0, at(1)), (1, hdr(9, 1)), (2, 0), (3, at(2))]),
                page_of(&[(1, hdr(0, 1)), (2, 0), (3, at(2) + 0x200)]),
                page_of(&[(0, 1 << 1), (64 + 8, 1 << 5)]),
            ],
        ),
    ));
    seeds.push((
        "truncated",
        seed(0, &[page_of(&[(0, at(5)), (1, hdr(0, 3))])])[..40].to_vec(),
    ));
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

// ---- bounded work: the units counted, not time ----

#[test]
fn work_of_a_valid_list_is_counted_exactly() {
    let a = arena(4);
    let head = golden_512(&a);
    let reader = V1Reader::new(&a, ram(), BitmapSize::Bytes512);
    let mut it = reader.blocks(pa(head));
    assert_eq!(it.by_ref().filter(Result::is_ok).count(), 6);
    let work = it.work();
    // 2 chunks, 3 entries, 3 bitmaps of 64 words, 6 blocks.
    assert_eq!(
        work,
        V1Work {
            chunks: 2,
            entries: 3,
            words: 192,
            blocks: 6
        }
    );
    assert_eq!(work.total(), 203);
    assert!(work.total() <= V1Work::bound(BitmapSize::Bytes512, 2));
    let summary = reader.check(pa(head), |_| ()).unwrap();
    assert_eq!(
        (summary.blocks, summary.entries, summary.work),
        (6, 3, work)
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "heavy for Miri: 1 ms or more natively, thousands of times that interpreted"
)]
fn shared_all_ones_page_costs_one_bitmap() {
    // The amplification of issue 14: chunks whose 255 entries all name
    // one all-ones page bitmap. Unchecked, 20 chunks would yield
    // 20 * 255 * 32768 = 167,116,800 blocks (2.7 GB at 16 bytes each) from
    // 21 pages. The reader stops at the second entry: one bitmap read.
    let a = arena(32);
    let bitmap = BASE + 20 * 0x1000;
    for w in 0..512 {
        bitmap_word(&a, bitmap, w, !0);
    }
    for c in 0..20u64 {
        let next = if c == 19 { 0 } else { BASE + (c + 1) * 0x1000 };
        let entries: Vec<(u64, u64)> = (0..255).map(|_| (0, bitmap)).collect();
        chunk(&a, BASE + c * 0x1000, next, 0, &entries);
    }
    let map = RamMap::new(&RAM, &[]).unwrap();
    let reader = V1Reader::new(&a, map, BitmapSize::Page);
    let mut it = reader.blocks(pa(BASE));
    let ok = it.by_ref().take_while(Result::is_ok).count();
    assert_eq!(ok, 32768);
    assert_eq!(
        it.work(),
        V1Work {
            chunks: 1,
            entries: 2,
            words: 512,
            blocks: 32768
        }
    );
    assert_eq!(
        reader.check(pa(BASE), |_| ()),
        Err(V1Error::BitmapShared {
            bitmap: pa(bitmap),
            first_chunk: pa(BASE),
            first_entry: 0,
            chunk: pa(BASE),
            entry: 1,
        })
    );
}

#[test]
fn looping_list_stops_at_the_first_revisit() {
    // A tail of two chunks into a loop of three: with the visited set the
    // first chunk entered again ends the read, so exactly five chunks are
    // entered (Brent alone could take a few laps more).
    let a = arena(8);
    let at = |i: u64| BASE + i * 0x1000;
    for i in 0..5 {
        let next = if i == 4 { at(2) } else { at(i + 1) };
        chunk(&a, at(i), next, 0, &[]);
    }
    let mut it = V1Reader::new(&a, ram(), BitmapSize::Bytes512).blocks(pa(BASE));
    assert_eq!(
        it.next(),
        Some(Err(V1Error::ChunkCycle { chunk: pa(at(2)) }))
    );
    assert_eq!(it.work().chunks, 5);
    assert_eq!(it.work().total(), 5);
}

#[test]
fn huge_num_elms_reads_no_entry() {
    let a = arena(2);
    raw_chunk(&a, BASE, 0, 0, 0xffff_ffff, &[]);
    let mut it = V1Reader::new(&a, ram(), BitmapSize::Page).blocks(pa(BASE));
    assert!(matches!(
        it.next(),
        Some(Err(V1Error::TooManyEntries { .. }))
    ));
    assert_eq!(
        it.work(),
        V1Work {
            chunks: 1,
            ..V1Work::default()
        }
    );
}

#[test]
fn chunk_cap_is_what_the_ram_justifies() {
    const TIB: [PhysRange; 1] = [const_range(0, 1 << 40)];
    let map = RamMap::new(&TIB, &[]).unwrap();
    // 1 TiB, 512-byte bitmaps: 65,536 order-0 spans of 16 MiB (258
    // chunks), halving per order, one chunk per order from order 9 on;
    // page bitmaps: 8,192 spans of 128 MiB (33 chunks), ...
    let small = V1Reader::<VecArena>::chunk_cap(map, BitmapSize::Bytes512);
    let page = V1Reader::<VecArena>::chunk_cap(map, BitmapSize::Page);
    assert_eq!((small, page), (564, 115));
    // The work bound that follows: a hostile 1 TiB image cannot make the
    // reader do more than this many units, whatever it claims.
    assert_eq!(V1Work::bound(BitmapSize::Bytes512, small), 598_435_584);
    assert_eq!(V1Work::bound(BitmapSize::Page, page), 975_965_440);
    // Small RAM: never more chunks than pages.
    let tiny = [const_range(0, 0x4000)];
    let map = RamMap::new(&tiny, &[]).unwrap();
    assert_eq!(V1Reader::<VecArena>::chunk_cap(map, BitmapSize::Page), 4);
    // And the default reader enforces it.
    let a = arena(8);
    let at = |i: u64| BASE + i * 0x1000;
    for i in 0..8 {
        chunk(&a, at(i), if i == 7 { 0 } else { at(i + 1) }, 0, &[]);
    }
    const RAM_16M: [PhysRange; 1] = [const_range(0, BASE + 0x8000)];
    let map = RamMap::new(&RAM_16M, &[]).unwrap();
    let reader = V1Reader::new(&a, map, BitmapSize::Page);
    // 16 MiB + 32 KiB of RAM: 52 orders, each at most one span of
    // 128 MiB << order: 52 chunks.
    assert_eq!(reader.chunk_budget(), 52);
    assert_eq!(reader.read_all(pa(BASE)), Ok(Vec::new()));
}

#[test]
fn a_bitmap_with_no_bit_set_is_not_remembered() {
    // Two entries naming one empty bitmap: no block, nothing repeated, so
    // not corruption worth the memory of remembering every empty bitmap
    // (a list can name 255 per chunk on pages the image does not hold).
    let a = arena(4);
    chunk(
        &a,
        BASE,
        0,
        0,
        &[(0, BASE + 0x2000), (0x800_0000, BASE + 0x2000)],
    );
    for size in [BitmapSize::Bytes512, BitmapSize::Page] {
        let t = V1Reader::new(&a, ram(), size)
            .tracker(pa(BASE), |_| ())
            .unwrap();
        assert_eq!((t.summary().blocks, t.summary().entries), (0, 0));
        // The chunk only: no page of bitmaps with a bit set.
        assert_eq!(t.metadata_pages(), 1);
    }
    // With a bit set, the second naming is corruption.
    bitmap_word(&a, BASE + 0x2000, 0, 1);
    assert!(matches!(
        read_err(&a, BitmapSize::Page, BASE),
        V1Error::BitmapShared { entry: 1, .. }
    ));
}
