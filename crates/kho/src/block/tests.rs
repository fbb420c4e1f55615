use alloc::vec::Vec;

use zerocopy::IntoBytes;

use super::*;
use crate::addr::{Block, Order};
use crate::luo::LuoFileSer;
use crate::mem::{RamMap, VecArena};
use crate::phys::PageWriter;
use crate::radix::RadixTree;
use crate::testing::abi_fuzz::Machine;
use crate::tracker::{PreservedLookup, PreservedSet};

fn page(i: u64) -> PhysAddr {
    Machine::page(i)
}

fn header(m: &Machine, at: u64, next: PhysAddr, count: u64) {
    m.arena.write_word(page(at), 0, next.as_u64()).unwrap();
    m.arena.write_word(page(at), 1, count).unwrap();
}

fn entries(m: &Machine, head: PhysAddr) -> Result<Vec<BlockEntry<LuoFileSer>>, BlockError> {
    BlockChain::<_, LuoFileSer>::new(m.reader(), None, head).collect()
}

#[test]
fn header_golden_bytes_and_capacities() {
    let h = KhoBlockHeaderSer::new(PhysAddr::new(0x1122_3344_5566_7000), 51);
    let mut expected = Vec::new();
    expected.extend_from_slice(&0x1122_3344_5566_7000u64.to_le_bytes());
    expected.extend_from_slice(&51u64.to_le_bytes());
    assert_eq!(h.as_bytes(), expected.as_slice());
    assert_eq!(capacity(80), 51, "luo_session_ser");
    assert_eq!(capacity(64), 63, "luo_file_ser");
    assert_eq!(capacity(0), 0);
    assert_eq!(capacity(4081), 0);
}

#[test]
fn writer_fills_blocks_as_linux_and_the_reader_reads_them_back() {
    let m = Machine::new();
    let tree = RadixTree::new(&m.arena).unwrap();
    let w = PageWriter::new(&tree);
    let files: Vec<LuoFileSer> = (0..70u64)
        .map(|i| LuoFileSer::new("memfd-v2", 0x1000 * i, i).unwrap())
        .collect();
    let (head, blocks) = write_chain(&w, "files", &files).unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(head, blocks[0]);
    // Block 0: next = block 1, count 63, entries from byte 16 on.
    let r = m.reader();
    assert_eq!(r.read_u64(blocks[0]).unwrap(), blocks[1].as_u64());
    assert_eq!(r.read_u64(blocks[0].checked_add(8).unwrap()).unwrap(), 63);
    let mut raw = [0u8; 64];
    r.read_bytes(blocks[0].checked_add(16 + 64 * 5).unwrap(), &mut raw)
        .unwrap();
    assert_eq!(&raw, files[5].as_bytes());
    // Block 1: last, 7 entries.
    assert_eq!(r.read_u64(blocks[1]).unwrap(), 0);
    assert_eq!(r.read_u64(blocks[1].checked_add(8).unwrap()).unwrap(), 7);
    // Both preserved at order 0.
    let ram = [m.arena.range()];
    let (set, _) = PreservedSet::read_tree(
        &m.arena,
        RamMap::new(&ram, &[]).unwrap(),
        tree.root(),
        crate::walk::NodeBudget::new(64),
    )
    .unwrap();
    for b in &blocks {
        assert_eq!(
            set.block_containing(*b),
            Some(Block::new(*b, Order::ZERO).unwrap())
        );
    }
    let read: Vec<_> = BlockChain::<_, LuoFileSer>::new(m.reader(), Some(&set), head)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(read.len(), 70);
    for (i, e) in read.iter().enumerate() {
        assert_eq!(e.index, i as u64);
        assert_eq!(e.value, files[i]);
        assert_eq!(e.block, blocks[i / 63]);
        assert_eq!(e.slot, (i % 63) as u64);
    }
    // An empty chain is no block.
    assert_eq!(
        write_chain::<_, LuoFileSer>(&w, "none", &[]).unwrap(),
        (PhysAddr::ZERO, Vec::new())
    );
    assert_eq!(entries(&m, PhysAddr::ZERO).unwrap(), Vec::new());
}

#[test]
fn error_unaligned_pointer() {
    let m = Machine::new();
    header(&m, 1, page(2).checked_add(0x10).unwrap(), 1);
    assert_eq!(
        entries(&m, page(1)),
        Err(BlockError::Unaligned {
            block: page(2).checked_add(0x10).unwrap()
        })
    );
}

#[test]
fn error_pointer_outside_ram() {
    let m = Machine::new();
    header(&m, 1, PhysAddr::new(0x4000_0000), 1);
    let err = entries(&m, page(1)).unwrap_err();
    assert!(matches!(
        err,
        BlockError::Read {
            block,
            source: ReadError::OutsideRam { .. }
        } if block == PhysAddr::new(0x4000_0000)
    ));
}

#[test]
fn error_block_not_preserved() {
    let m = Machine::new();
    header(&m, 2, PhysAddr::ZERO, 1);
    // Page 2 lies inside an order-1 block at page 2: preserved, but not as a page.
    let big = Block::new(page(2), Order::new(1)).unwrap();
    let set = PreservedSet::from_blocks([big]).unwrap();
    let err = BlockChain::<_, LuoFileSer>::new(m.reader(), Some(&set), page(2))
        .next()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err,
        BlockError::NotPreserved {
            block: page(2),
            source: Unpreserved::OtherOrder {
                expected: Block::new(page(2), Order::ZERO).unwrap(),
                found: big
            }
        }
    );
    let none = PreservedSet::from_blocks([]).unwrap();
    let err = BlockChain::<_, LuoFileSer>::new(m.reader(), Some(&none), page(2))
        .next()
        .unwrap()
        .unwrap_err();
    assert!(matches!(
        err,
        BlockError::NotPreserved {
            source: Unpreserved::Missing { .. },
            ..
        }
    ));
}

#[test]
fn error_cycle_in_the_chain() {
    let m = Machine::new();
    header(&m, 1, page(2), 1);
    header(&m, 2, page(3), 1);
    header(&m, 3, page(2), 1);
    let got: Vec<_> = BlockChain::<_, LuoFileSer>::new(m.reader(), None, page(1)).collect();
    assert!(got.len() < 10, "the cycle is found within a few trips");
    assert!(matches!(got.last(), Some(Err(BlockError::Cycle { .. }))));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "heavy for Miri: 1 ms or more natively, thousands of times that interpreted"
)]
fn error_too_many_blocks() {
    // 10001 distinct blocks: one past Linux's limit.
    let n = usize::try_from(KHO_MAX_BLOCKS).unwrap() + 1;
    let arena = VecArena::new(PhysAddr::new(0x100_0000), n);
    let at = |i: usize| PhysAddr::new(0x100_0000 + 4096 * i as u64);
    for i in 0..n {
        let next = if i + 1 < n { at(i + 1).as_u64() } else { 0 };
        arena.write_word(at(i), 0, next).unwrap();
        arena.write_word(at(i), 1, 1).unwrap();
    }
    let ram = [arena.range()];
    let r = crate::phys::PhysReader::new(&arena, RamMap::new(&ram, &[]).unwrap());
    let last = BlockChain::<_, LuoFileSer>::new(r, None, at(0))
        .last()
        .unwrap();
    assert_eq!(
        last,
        Err(BlockError::TooManyBlocks {
            block: at(n - 1),
            limit: KHO_MAX_BLOCKS
        })
    );
}

#[test]
fn error_empty_block() {
    let m = Machine::new();
    header(&m, 1, page(2), 1);
    header(&m, 2, PhysAddr::ZERO, 0);
    let got: Vec<_> = BlockChain::<_, LuoFileSer>::new(m.reader(), None, page(1)).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1], Err(BlockError::Empty { block: page(2) }));
}

#[test]
fn error_count_overflow() {
    let m = Machine::new();
    header(&m, 1, PhysAddr::ZERO, 64);
    assert_eq!(
        entries(&m, page(1)),
        Err(BlockError::CountOverflow {
            block: page(1),
            count: 64,
            capacity: 63
        })
    );
    header(&m, 1, PhysAddr::ZERO, u64::MAX);
    assert!(matches!(
        entries(&m, page(1)),
        Err(BlockError::CountOverflow {
            count: u64::MAX,
            ..
        })
    ));
}
