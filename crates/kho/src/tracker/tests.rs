use super::*;
use crate::mem::{RamMap, VecArena};
use crate::radix::RadixTree;
use crate::walk::NodeBudget;

fn b(phys: u64, order: u8) -> Block {
    Block::new(PhysAddr::new(phys), Order::new(order)).unwrap()
}

#[test]
fn lookup_finds_the_block_that_holds_an_address() {
    let set = PreservedSet::from_blocks([b(0x20_0000, 9), b(0x1000, 0), b(0x8000, 3)]).unwrap();
    assert_eq!(set.blocks(), &[b(0x1000, 0), b(0x8000, 3), b(0x20_0000, 9)]);
    assert_eq!(
        set.block_containing(PhysAddr::new(0x1fff)),
        Some(b(0x1000, 0))
    );
    assert_eq!(set.block_containing(PhysAddr::new(0x2000)), None);
    assert_eq!(
        set.block_containing(PhysAddr::new(0xf000)),
        Some(b(0x8000, 3))
    );
    assert_eq!(set.block_containing(PhysAddr::new(0x10000)), None);
    assert_eq!(
        set.block_containing(PhysAddr::new(0x3f_f000)),
        Some(b(0x20_0000, 9))
    );
    assert_eq!(set.block_containing(PhysAddr::new(0)), None);
    assert_eq!(set.bytes(), 4096 + 8 * 4096 + 512 * 4096);
}

#[test]
fn overlapping_blocks_are_refused() {
    assert_eq!(
        PreservedSet::from_blocks([b(0x8000, 3), b(0x9000, 0)]),
        Err(TrackerError::Overlap {
            first: b(0x8000, 3),
            second: b(0x9000, 0)
        })
    );
}

#[test]
fn expect_block_names_missing_and_other_order() {
    let set = PreservedSet::from_blocks([b(0x8000, 3)]).unwrap();
    assert_eq!(expect_block(&set, b(0x8000, 3)), Ok(()));
    assert_eq!(
        expect_block(&set, b(0x8000, 0)),
        Err(Unpreserved::OtherOrder {
            expected: b(0x8000, 0),
            found: b(0x8000, 3)
        })
    );
    assert_eq!(
        expect_block(&set, b(0x9000, 0)),
        Err(Unpreserved::OtherOrder {
            expected: b(0x9000, 0),
            found: b(0x8000, 3)
        })
    );
    assert_eq!(
        expect_block(&set, b(0x20000, 0)),
        Err(Unpreserved::Missing {
            expected: b(0x20000, 0)
        })
    );
    assert_eq!(expect_page(None, PhysAddr::new(0x20000)), Ok(()));
}

#[test]
fn read_tree_collects_blocks_and_tree_pages() {
    let a = VecArena::new(PhysAddr::new(0x100_0000), 32);
    let tree = RadixTree::new(&a).unwrap();
    tree.preserve(b(0x100_8000, 0)).unwrap();
    tree.preserve(b(0x101_0000, 4)).unwrap();
    let ram = [a.range()];
    let map = RamMap::new(&ram, &[]).unwrap();
    let (set, pages) = PreservedSet::read_tree(&a, map, tree.root(), NodeBudget::new(64)).unwrap();
    assert_eq!(set.blocks(), &[b(0x100_8000, 0), b(0x101_0000, 4)]);
    let st = tree.stats();
    assert_eq!(
        u64::try_from(pages.len()).unwrap(),
        st.inner_nodes + st.leaves
    );
    assert!(pages.contains(tree.root()));
}
