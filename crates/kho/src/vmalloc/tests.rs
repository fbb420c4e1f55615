use alloc::vec::Vec;

use zerocopy::{FromBytes, IntoBytes};

use super::*;
use crate::phys::PageWriter;
use crate::radix::RadixTree;
use crate::testing::abi_fuzz::Machine;
use crate::tracker::{PreservedLookup, PreservedSet};

fn page(i: u64) -> PhysAddr {
    Machine::page(i)
}

fn b0(i: u64) -> Block {
    Block::new(page(i), Order::ZERO).unwrap()
}

/// Writes chunk `at`: `next`, then `entries` from slot 0.
fn chunk(m: &Machine, at: u64, next: PhysAddr, entries: &[PhysAddr]) {
    m.arena.write_word(page(at), 0, next.as_u64()).unwrap();
    for (i, e) in entries.iter().enumerate() {
        m.arena.write_word(page(at), i + 1, e.as_u64()).unwrap();
    }
}

fn walk(
    m: &Machine,
    tracker: Option<&dyn PreservedLookup>,
    desc: KhoVmalloc,
) -> Result<Vec<VmallocBlock>, VmallocError> {
    VmallocBlocks::new(m.reader(), tracker, desc)?.collect()
}

fn desc(first: PhysAddr, total: u32, order: u16) -> KhoVmalloc {
    KhoVmalloc::new(first, total, KHO_VMALLOC_ALLOC, order)
}

#[test]
fn descriptor_and_chunk_golden_bytes() {
    let d = KhoVmalloc::new(PhysAddr::new(0x1234_5000), 0x0102_0304, 3, 9);
    let mut expected = Vec::new();
    expected.extend_from_slice(&0x1234_5000u64.to_le_bytes());
    expected.extend_from_slice(&0x0102_0304u32.to_le_bytes());
    expected.extend_from_slice(&3u16.to_le_bytes());
    expected.extend_from_slice(&9u16.to_le_bytes());
    assert_eq!(d.as_bytes(), expected.as_slice());
    assert_eq!(KhoVmalloc::read_from_bytes(&expected).unwrap(), d);
    assert_eq!(
        (d.first(), d.total_pages(), d.flags(), d.order()),
        (PhysAddr::new(0x1234_5000), 0x0102_0304, 3, 9)
    );

    let mut c = KhoVmallocChunk::new();
    c.set_next(PhysAddr::new(0xabc000));
    assert!(c.set_entry(0, PhysAddr::new(0x1000)));
    assert!(c.set_entry(510, PhysAddr::new(0x2000)));
    assert!(!c.set_entry(511, PhysAddr::new(0x3000)));
    let bytes = c.as_bytes();
    assert_eq!(bytes.len(), 4096);
    assert_eq!(&bytes[0..8], &0xabc000u64.to_le_bytes());
    assert_eq!(&bytes[8..16], &0x1000u64.to_le_bytes());
    assert_eq!(&bytes[4088..4096], &0x2000u64.to_le_bytes());
    assert!(bytes[16..4088].iter().all(|&b| b == 0));
}

#[test]
fn writer_lays_out_chunks_as_linux_and_the_reader_yields_the_pages_in_order() {
    let m = Machine::new();
    let tree = RadixTree::new(&m.arena).unwrap();
    let w = PageWriter::new(&tree);
    let data: Vec<u8> = (0..3 * 4096 - 100).map(|i| (i % 251) as u8).collect();
    let out = write_vmalloc_bytes(&w, &data).unwrap();
    assert_eq!(out.blocks.len(), 3);
    assert_eq!(out.chunks.len(), 1);
    assert_eq!(
        out.desc,
        KhoVmalloc::new(out.chunks[0], 3, KHO_VMALLOC_ALLOC, 0)
    );
    // The chunk by hand: next 0, three entries, a terminator, zeros.
    let p = m.arena.page(out.chunks[0]).unwrap().snapshot();
    assert_eq!(p[0], 0);
    for (i, b) in out.blocks.iter().enumerate() {
        assert_eq!(p[i + 1], b.phys().as_u64());
    }
    assert!(p[4..].iter().all(|&v| v == 0));
    let (set, _) = m.tracker(tree.root()).unwrap();
    let got = walk(&m, Some(&set), out.desc).unwrap();
    assert_eq!(got.iter().map(|b| b.block).collect::<Vec<_>>(), out.blocks);
    assert_eq!(
        got.iter().map(|b| b.first_page).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    // The bytes come back in order.
    let back: Vec<u8> = VmallocArray::<_, [u8; 16]>::new(
        m.reader(),
        Some(&set),
        out.desc,
        (data.len() / 16) as u64,
    )
    .unwrap()
    .flat_map(|e| e.unwrap().value)
    .collect();
    assert_eq!(back, data[..back.len()]);
    // No bytes: no area.
    assert_eq!(
        write_vmalloc_bytes(&w, &[]).unwrap(),
        VmallocWritten::default()
    );
    assert!(walk(&m, None, KhoVmalloc::default()).unwrap().is_empty());
}

#[test]
fn a_full_chunk_gets_an_empty_successor_and_huge_orders_round_trip() {
    let m = Machine::new();
    // 511 entries of order 2 (the same four pages repeated: the writer
    // preserves each once, so build the descriptor by hand).
    let big = Block::new(page(32), Order::new(2)).unwrap();
    let entries = [big.phys(); 511];
    chunk(&m, 40, page(41), &entries);
    chunk(&m, 41, PhysAddr::ZERO, &[]);
    let pages: Vec<_> = VmallocBlocks::new(m.reader(), None, desc(page(40), 511 * 4, 2))
        .unwrap()
        .pages()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(pages.len(), 511 * 4);
    assert_eq!(
        pages[5],
        VmallocPage {
            index: 5,
            phys: page(33)
        }
    );
    let got = walk(&m, None, desc(page(40), 511 * 4, 2)).unwrap();
    assert_eq!(got.len(), 511);
    assert_eq!(got[510].first_page, 510 * 4);
    assert!(got.iter().all(|b| b.block == big && b.chunk == page(40)));
    // The writer does the same for 511 distinct pages.
    let arena = crate::mem::VecArena::new(PhysAddr::new(0x100_0000), 600);
    let tree2 = RadixTree::new(&arena).unwrap();
    let w2 = PageWriter::new(&tree2);
    let blocks: Vec<Block> = (0..511)
        .map(|_| Block::new(w2.alloc_page().unwrap(), Order::ZERO).unwrap())
        .collect();
    let out = write_vmalloc_blocks(&w2, &blocks, KHO_VMALLOC_ALLOC).unwrap();
    assert_eq!(out.chunks.len(), 2);
    let second = arena.page(out.chunks[1]).unwrap();
    assert!(second.is_zero(), "the successor of a full chunk is empty");
}

#[test]
fn error_unknown_flags() {
    let m = Machine::new();
    let d = KhoVmalloc::new(page(1), 1, 0x4, 0);
    assert_eq!(
        walk(&m, None, d),
        Err(VmallocError::UnknownFlags { flags: 4, known: 3 })
    );
}

#[test]
fn error_bad_order() {
    let m = Machine::new();
    assert_eq!(
        walk(&m, None, desc(page(1), 1, 52)),
        Err(VmallocError::BadOrder {
            order: 52,
            max: Order::MAX
        })
    );
}

#[test]
fn error_pages_without_a_chunk() {
    let m = Machine::new();
    assert_eq!(
        walk(&m, None, desc(PhysAddr::ZERO, 5, 0)),
        Err(VmallocError::MissingFirstChunk { total_pages: 5 })
    );
}

#[test]
fn error_unaligned_chunk_pointer() {
    let m = Machine::new();
    let bad = page(1).checked_add(8).unwrap();
    assert_eq!(
        walk(&m, None, desc(bad, 1, 0)),
        Err(VmallocError::ChunkUnaligned { chunk: bad })
    );
    // Also through `next`.
    chunk(&m, 1, bad, &[page(2); 511]);
    assert_eq!(
        walk(&m, None, desc(page(1), 600, 0)).map(|v| v.len()),
        Err(VmallocError::ChunkUnaligned { chunk: bad })
    );
}

#[test]
fn error_chunk_outside_ram() {
    let m = Machine::new();
    let far = PhysAddr::new(0x8000_0000);
    assert!(matches!(
        walk(&m, None, desc(far, 1, 0)),
        Err(VmallocError::ChunkRead { chunk, source: ReadError::OutsideRam { .. } }) if chunk == far
    ));
}

#[test]
fn error_chunk_not_preserved() {
    let m = Machine::new();
    chunk(&m, 1, PhysAddr::ZERO, &[page(2)]);
    let set = PreservedSet::from_blocks([b0(2)]).unwrap();
    assert_eq!(
        walk(&m, Some(&set), desc(page(1), 1, 0)),
        Err(VmallocError::ChunkNotPreserved {
            chunk: page(1),
            source: Unpreserved::Missing { expected: b0(1) }
        })
    );
}

#[test]
fn error_cycle_in_the_chunk_list() {
    let m = Machine::new();
    chunk(&m, 1, page(2), &[page(5); 511]);
    chunk(&m, 2, page(1), &[page(5); 511]);
    let got = walk(&m, None, desc(page(1), 511 * 10, 0));
    assert!(
        matches!(got, Err(VmallocError::ChunkCycle { .. })),
        "{got:?}"
    );
}

#[test]
fn error_page_not_aligned_to_the_order() {
    let m = Machine::new();
    chunk(&m, 1, PhysAddr::ZERO, &[page(3)]);
    assert_eq!(
        walk(&m, None, desc(page(1), 2, 1)),
        Err(VmallocError::PageUnaligned {
            chunk: page(1),
            slot: 0,
            page: page(3),
            order: Order::new(1)
        })
    );
}

#[test]
fn error_page_outside_ram() {
    let m = Machine::new();
    let past = PhysAddr::new(0x4000_0000);
    chunk(&m, 1, PhysAddr::ZERO, &[past]);
    assert_eq!(
        walk(&m, None, desc(page(1), 1, 0)),
        Err(VmallocError::PageOutsideRam {
            chunk: page(1),
            slot: 0,
            block: Block::new(past, Order::ZERO).unwrap()
        })
    );
}

#[test]
fn error_page_not_preserved_or_at_another_order() {
    let m = Machine::new();
    chunk(&m, 1, PhysAddr::ZERO, &[page(4), page(6)]);
    let pair = Block::new(page(4), Order::new(1)).unwrap();
    let set = PreservedSet::from_blocks([b0(1), pair]).unwrap();
    assert_eq!(
        walk(&m, Some(&set), desc(page(1), 2, 0)),
        Err(VmallocError::PageNotPreserved {
            chunk: page(1),
            slot: 0,
            source: Unpreserved::OtherOrder {
                expected: b0(4),
                found: pair
            }
        })
    );
    let set = PreservedSet::from_blocks([b0(1), b0(4)]).unwrap();
    assert_eq!(
        walk(&m, Some(&set), desc(page(1), 2, 0)),
        Err(VmallocError::PageNotPreserved {
            chunk: page(1),
            slot: 1,
            source: Unpreserved::Missing { expected: b0(6) }
        })
    );
}

#[test]
fn error_count_overflow() {
    let m = Machine::new();
    chunk(&m, 1, PhysAddr::ZERO, &[page(4), page(5), page(6)]);
    assert_eq!(
        walk(&m, None, desc(page(1), 2, 0)),
        Err(VmallocError::CountOverflow {
            chunk: page(1),
            slot: 2,
            pages: 2,
            total_pages: 2
        })
    );
}

#[test]
fn error_count_short() {
    let m = Machine::new();
    chunk(&m, 1, PhysAddr::ZERO, &[page(4)]);
    assert_eq!(
        walk(&m, None, desc(page(1), 3, 0)),
        Err(VmallocError::CountShort {
            found: 1,
            total_pages: 3
        })
    );
}

#[test]
fn error_unterminated_chunk() {
    let m = Machine::new();
    chunk(&m, 1, PhysAddr::ZERO, &[page(5); 511]);
    assert_eq!(
        walk(&m, None, desc(page(1), 511, 0)),
        Err(VmallocError::Unterminated { chunk: page(1) })
    );
}

#[test]
fn error_early_terminator() {
    let m = Machine::new();
    chunk(&m, 1, page(2), &[page(5)]);
    chunk(&m, 2, PhysAddr::ZERO, &[page(6)]);
    assert_eq!(
        walk(&m, None, desc(page(1), 2, 0)),
        Err(VmallocError::EarlyTerminator {
            chunk: page(1),
            slot: 1,
            next: page(2)
        })
    );
}

#[test]
fn error_entry_after_the_terminator() {
    let m = Machine::new();
    chunk(&m, 1, PhysAddr::ZERO, &[page(5), PhysAddr::ZERO, page(6)]);
    assert_eq!(
        walk(&m, None, desc(page(1), 2, 0)),
        Err(VmallocError::TrailingEntry {
            chunk: page(1),
            slot: 2,
            value: page(6).as_u64()
        })
    );
}

#[test]
fn error_array_larger_than_the_area() {
    let m = Machine::new();
    chunk(&m, 1, PhysAddr::ZERO, &[page(5)]);
    let err =
        VmallocArray::<_, [u8; 16]>::new(m.reader(), None, desc(page(1), 1, 0), 257).unwrap_err();
    assert_eq!(
        err,
        VmallocError::ArrayTooSmall {
            count: 257,
            size: 16,
            total_pages: 1
        }
    );
    assert!(VmallocArray::<_, [u8; 16]>::new(m.reader(), None, desc(page(1), 1, 0), 256).is_ok());
    let huge = VmallocArray::<_, [u8; 16]>::new(m.reader(), None, desc(page(1), 1, 0), u64::MAX);
    assert!(matches!(huge, Err(VmallocError::ArrayTooSmall { .. })));
}
