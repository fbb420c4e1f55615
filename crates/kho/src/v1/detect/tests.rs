//! One test per row of the evidence table, the constructed undecidable
//! case, and the table's completeness fact as properties over the writer's
//! lists.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::addr::{Block, PhysRange};
use crate::mem::{PageAlloc, VecArena};
use crate::testing::write_v1;

const BASE: u64 = 0x100_0000;
const GIB: u64 = 1 << 30;
const RAM: [PhysRange; 1] = [const_range(0, GIB)];
/// RAM that ends at 64 MiB: order-0 bits from 16384 on are past it.
const SMALL_RAM: [PhysRange; 1] = [const_range(0, 64 << 20)];

const fn const_range(a: u64, b: u64) -> PhysRange {
    match PhysRange::new(PhysAddr::new(a), PhysAddr::new(b)) {
        Ok(r) => r,
        Err(_) => panic!("inverted range"),
    }
}

fn pa(v: u64) -> PhysAddr {
    PhysAddr::new(v)
}

fn block(phys: u64, order: u8) -> Block {
    Block::new(pa(phys), Order::new(order)).unwrap()
}

fn ram() -> RamMap<'static> {
    RamMap::new(&RAM, &[]).unwrap()
}

/// One chunk of `order` at `BASE` with `entries` (phys_start, bitmap).
fn chunk(a: &VecArena, order: u32, entries: &[(u64, u64)]) {
    a.claim(pa(BASE)).unwrap();
    let n = u64::try_from(entries.len()).unwrap();
    a.write_word(pa(BASE), 1, u64::from(order) | (n << 32))
        .unwrap();
    for (i, &(start, bitmap)) in entries.iter().enumerate() {
        a.write_word(pa(BASE), 2 + 2 * i, start).unwrap();
        a.write_word(pa(BASE), 3 + 2 * i, bitmap).unwrap();
    }
}

/// Sets bit `bit` of the bitmap at `at`.
fn set_bit(a: &VecArena, at: u64, bit: usize) {
    let page = at & !0xfff;
    a.claim(pa(page)).unwrap();
    let word = usize::try_from((at & 0xfff) / 8).unwrap() + bit / 64;
    let old = a.page(pa(page)).unwrap().load(word).unwrap();
    a.write_word(pa(page), word, old | (1 << (bit % 64)))
        .unwrap();
}

fn read(a: &VecArena, map: RamMap<'_>, size: BitmapSize) -> Result<Vec<Block>, V1Error> {
    read_at(a, map, size, pa(BASE))
}

fn read_at(
    a: &VecArena,
    map: RamMap<'_>,
    size: BitmapSize,
    head: PhysAddr,
) -> Result<Vec<Block>, V1Error> {
    V1Reader::new(a, map, size).read_all(head)
}

#[test]
fn bitmap_not_page_aligned_is_512() {
    // Two bitmaps packed in one page, as kmalloc-512 leaves them.
    let a = VecArena::new(pa(BASE), 4);
    let blocks = [block(0x5000, 0), block(0x100_0000 + 0x3000, 0)];
    let head = write_v1(&a, &blocks, BitmapSize::Bytes512).unwrap();
    let verdict = detect_bitmap_size(&a, ram(), head);
    assert_eq!(
        verdict,
        BitmapVerdict::Decided {
            size: BitmapSize::Bytes512,
            evidence: BitmapEvidence::NotPageAligned {
                chunk: head,
                entry: 1,
                bitmap: pa(BASE + 0x200),
            }
        }
    );
    assert!(
        alloc::format!(
            "{}",
            BitmapEvidence::NotPageAligned {
                chunk: head,
                entry: 1,
                bitmap: pa(BASE + 0x200)
            }
        )
        .contains("not page aligned")
    );
}

#[test]
fn phys_start_on_the_512_span_is_512() {
    // One page-aligned bitmap, phys_start 16 MiB (index 1 of 512-byte
    // bitmaps, not a multiple of the 128 MiB page span).
    let a = VecArena::new(pa(BASE), 4);
    chunk(&a, 0, &[(0x100_0000, BASE + 0x1000)]);
    set_bit(&a, BASE + 0x1000, 3);
    assert_eq!(
        detect_bitmap_size(&a, ram(), pa(BASE)),
        BitmapVerdict::Decided {
            size: BitmapSize::Bytes512,
            evidence: BitmapEvidence::PhysStartNotPageSpan {
                chunk: pa(BASE),
                entry: 0,
                phys_start: pa(0x100_0000),
                order: Order::ZERO,
            }
        }
    );
}

#[test]
fn page_reading_outside_ram_is_512() {
    // A page-aligned bitmap whose bytes past 512 (another kmalloc-512
    // object in a 6.16 kernel) would, read as a page bitmap, name a block
    // at 80 MiB, past the 64 MiB of RAM: only the 512-byte reading fits
    // the machine, although bits past 4095 are set.
    let a = VecArena::new(pa(BASE), 4);
    chunk(&a, 0, &[(0, BASE + 0x1000)]);
    set_bit(&a, BASE + 0x1000, 7);
    set_bit(&a, BASE + 0x1000, 20480);
    let map = RamMap::new(&SMALL_RAM, &[]).unwrap();
    let BitmapVerdict::Decided {
        size: BitmapSize::Bytes512,
        evidence: BitmapEvidence::PageReadingInvalid(V1Error::BlockOutsideRam { block: b, .. }),
    } = detect_bitmap_size(&a, map, pa(BASE))
    else {
        panic!("not decided as 512 by the page reading's block outside RAM");
    };
    assert_eq!(b, block(20480 * 0x1000, 0));
    assert_eq!(
        read(&a, map, BitmapSize::Bytes512),
        Ok(alloc::vec![block(0x7000, 0)])
    );
}

#[test]
fn page_reading_overlap_is_512() {
    // Read as a page bitmap, bit 5000 of the order-0 bitmap names a page
    // inside a preserved order-9 block: the page reading is inconsistent.
    let a = VecArena::new(pa(BASE), 4);
    chunk(&a, 0, &[(0, BASE + 0x1000)]);
    set_bit(&a, BASE + 0x1000, 1);
    set_bit(&a, BASE + 0x1000, 5000);
    // An order-9 chunk at BASE + 0x2000 linked from the first.
    a.write_word(pa(BASE), 0, BASE + 0x2000).unwrap();
    a.claim(pa(BASE + 0x2000)).unwrap();
    a.write_word(pa(BASE + 0x2000), 1, 9 | (1 << 32)).unwrap();
    a.write_word(pa(BASE + 0x2000), 2, 0).unwrap();
    a.write_word(pa(BASE + 0x2000), 3, BASE + 0x3000).unwrap();
    // Order-9 bit 9: [18 MiB, 20 MiB) holds page 5000 (0x1388000).
    set_bit(&a, BASE + 0x3000, 9);
    let verdict = detect_bitmap_size(&a, ram(), pa(BASE));
    assert!(
        matches!(
            verdict,
            BitmapVerdict::Decided {
                size: BitmapSize::Bytes512,
                evidence: BitmapEvidence::PageReadingInvalid(V1Error::Overlap { .. })
            }
        ),
        "{verdict:?}"
    );
}

#[test]
fn bits_past_4095_is_page() {
    // What a 6.17.y+ kernel writes: page bitmaps, a block at bit 4096 and
    // later.
    let a = VecArena::new(pa(BASE), 4);
    let blocks = [
        block(0x2000, 0),
        block(4096 * 0x1000, 0),
        block(30000 * 0x1000, 0),
    ];
    let head = write_v1(&a, &blocks, BitmapSize::Page).unwrap();
    let verdict = detect_bitmap_size(&a, ram(), head);
    assert_eq!(
        verdict,
        BitmapVerdict::Decided {
            size: BitmapSize::Page,
            evidence: BitmapEvidence::BitsPast4095 {
                chunk: head,
                entry: 0,
                bitmap: pa(BASE),
                bits: 2,
            }
        }
    );
    assert_eq!(verdict.size(), Some(BitmapSize::Page));
    // The 512-byte reading validates too, with only the first block: the
    // evidence, not validity, decides.
    assert_eq!(
        read_at(&a, ram(), BitmapSize::Bytes512, head),
        Ok(alloc::vec![block(0x2000, 0)])
    );
}

#[test]
fn undecidable_layout_reads_the_same_blocks() {
    // The constructed ambiguous case: one page-aligned bitmap at
    // phys_start 0, bits only below 4096. A 6.16 kernel whose only bitmap
    // took slot 0 of its kmalloc-512 page writes exactly these bytes, and
    // so does a later kernel: nothing in memory tells them apart, and
    // nothing needs to, the blocks are the same.
    for size in [BitmapSize::Bytes512, BitmapSize::Page] {
        let a = VecArena::new(pa(BASE), 4);
        let blocks = [block(0x2000, 0), block(4095 * 0x1000, 0)];
        let head = write_v1(&a, &blocks, size).unwrap();
        let verdict = detect_bitmap_size(&a, ram(), head);
        assert_eq!(
            verdict,
            BitmapVerdict::Undecided(Undecided::NoEvidence {
                entries: 1,
                blocks: 2
            }),
            "{size:?}"
        );
        assert_eq!(verdict.size(), None);
        assert_eq!(
            read_at(&a, ram(), BitmapSize::Bytes512, head),
            read_at(&a, ram(), BitmapSize::Page, head)
        );
        let BitmapVerdict::Undecided(why) = verdict else {
            unreachable!()
        };
        assert!(alloc::format!("{why}").contains("same 2 blocks"));
    }
}

#[test]
fn neither_reading_validates() {
    // A page-aligned bitmap outside RAM: both readings fail, the layout
    // decides nothing.
    let a = VecArena::new(pa(BASE), 4);
    chunk(&a, 0, &[(0, 2 * GIB)]);
    let BitmapVerdict::Undecided(Undecided::NeitherValidates { bytes512, page }) =
        detect_bitmap_size(&a, ram(), pa(BASE))
    else {
        panic!("decided")
    };
    assert!(matches!(bytes512, V1Error::BitmapOutsideRam { .. }));
    assert!(matches!(page, V1Error::BitmapOutsideRam { .. }));
}

#[test]
fn evidence_decides_even_a_broken_list() {
    // A 512-byte layout whose second bitmap lies outside RAM: the size is
    // still 512 (the first bitmap is not page aligned); the 512-byte
    // reading then reports the corruption.
    let a = VecArena::new(pa(BASE), 4);
    chunk(&a, 0, &[(0, BASE + 0x1200), (0x100_0000, 2 * GIB + 0x200)]);
    assert_eq!(
        detect_bitmap_size(&a, ram(), pa(BASE)).size(),
        Some(BitmapSize::Bytes512)
    );
    assert!(matches!(
        read(&a, ram(), BitmapSize::Bytes512),
        Err(V1Error::BitmapOutsideRam { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 64 }))]

    /// Whatever the writer wrote, the verdict is never the other size; it
    /// is undecided only when both sizes give the same blocks.
    #[test]
    fn verdict_is_never_the_wrong_size(
        // Order 0 below 512 MiB, order 9 above: disjoint by design.
        small in proptest::collection::btree_set(0u64..0x2_0000, 1..200),
        huge in proptest::collection::btree_set(0x100u64..0x200, 0..8),
        page in any::<bool>(),
    ) {
        let size = if page { BitmapSize::Page } else { BitmapSize::Bytes512 };
        let mut blocks: Vec<Block> = small.iter().map(|&p| block(p << 12, 0)).collect();
        blocks.extend(huge.iter().map(|&h| block(h << 21, 9)));
        let a = VecArena::new(pa(BASE), 128);
        let head = write_v1(&a, &blocks, size).unwrap();
        match detect_bitmap_size(&a, ram(), head) {
            BitmapVerdict::Decided { size: got, evidence } => {
                prop_assert_eq!(got, size, "{}", evidence);
            }
            BitmapVerdict::Undecided(why) => {
                let r = |s| V1Reader::new(&a, ram(), s).read_all(head);
                prop_assert!(r(BitmapSize::Bytes512).is_ok(), "{}", why);
                prop_assert_eq!(r(BitmapSize::Bytes512), r(BitmapSize::Page));
            }
        }
    }

    /// The fact the table rests on: a list that validates with page
    /// bitmaps validates with 512-byte ones, whatever the words (here a
    /// page-bitmap list with random words written over its bitmap pages).
    #[test]
    fn page_valid_implies_512_valid(
        small in proptest::collection::btree_set(0u64..0x4_0000, 1..50),
        noise in proptest::collection::vec((0usize..512, any::<u64>()), 0..16),
    ) {
        let blocks: Vec<Block> = small.iter().map(|&p| block(p << 12, 0)).collect();
        let a = VecArena::new(pa(BASE), 16);
        let head = write_v1(&a, &blocks, BitmapSize::Page).unwrap();
        // The bitmap pages precede the chunks in the arena.
        let first_chunk = head.as_u64();
        for (i, &(word, value)) in noise.iter().enumerate() {
            let page = BASE + (i as u64 % ((first_chunk - BASE) / 0x1000)) * 0x1000;
            a.write_word(pa(page), word, value).unwrap();
        }
        let r = |s| V1Reader::new(&a, ram(), s).check(head, |_| ());
        if r(BitmapSize::Page).is_ok() {
            prop_assert!(r(BitmapSize::Bytes512).is_ok());
        }
        let _ = a.alloc_zeroed_page();
    }
}
