//! Bounded work through `kho inspect` (issue 14, scope 2): a leaf of all
//! ones on a huge span. One leaf page holds 32,768 blocks of order 20
//! (4 GiB each, 128 TiB in all): the walk reads one page of bits, the
//! blocks are counted by runs, and the block cap
//! (`InspectOptions::max_blocks`, by default the RAM's pages) stops a map
//! that claims more, naming the cap. The tree
//! cases (a DAG of one shared child, a looping chunk list, `num_elms =
//! 0xffffffff`) are `kho`'s `tests/bounded_work.rs`.

use kho::{Block, KhoFdtBuilder, Order, PhysAddr, PhysRange, RadixTree, VecArena};
use kho_lab::image::{MemImage, Source, write_elf_with_memsz};
use kho_lab::{Collect, FdtSource, InspectOptions, inspect_to};

const SPAN: u64 = 1 << 47;

/// The core: RAM [0, 128 TiB) the file does not hold, then the tree's
/// pages; one leaf of all ones at order 20.
fn all_ones_on_a_huge_span() -> (MemImage, Vec<u8>) {
    let arena = VecArena::new(PhysAddr::new(SPAN), 16);
    let tree = RadixTree::new(&arena).unwrap();
    let order = Order::new(20);
    for k in 0..32768u64 {
        tree.preserve(Block::new(PhysAddr::new(k << 32), order).unwrap())
            .unwrap();
    }
    let fdt = KhoFdtBuilder::new(tree.root()).build().unwrap();
    let empty = PhysRange::new(PhysAddr::ZERO, PhysAddr::ZERO).unwrap();
    let mut core = Vec::new();
    write_elf_with_memsz(&arena, &[empty, arena.range()], &[SPAN], &mut core).unwrap();
    assert!(core.len() < 80 << 10, "{}", core.len());
    (MemImage::open_elf(Source::Bytes(core)).unwrap(), fdt)
}

#[test]
fn a_leaf_of_all_ones_on_a_huge_span_costs_one_page() {
    let (image, fdt) = all_ones_on_a_huge_span();
    let src = FdtSource::File(fdt);
    let mut list = Collect::default();
    let out = inspect_to(&image, &src, &InspectOptions::default(), &mut list);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.blocks, 32768);
    assert_eq!(out.preserved_bytes, SPAN);
    assert_eq!(
        (out.per_order[0].order, out.per_order[0].blocks),
        (20, 32768)
    );
    // Root, levels 4..1, the leaf.
    assert_eq!(out.metadata_pages, 6);
    assert_eq!(
        list.ranges,
        [PhysRange::new(PhysAddr::ZERO, PhysAddr::new(SPAN)).unwrap()]
    );
    assert_eq!(list.blocks.len(), 32768);

    // The block cap stops it, naming the cap and the first block past it.
    let opts = InspectOptions {
        max_blocks: Some(1000),
        ..InspectOptions::default()
    };
    let mut list = Collect::default();
    let out = inspect_to(&image, &src, &opts, &mut list);
    assert_eq!(out.blocks, 1000);
    assert_eq!(list.blocks.len(), 1000);
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert_eq!(out.errors[0].address, 1000 << 32);
    assert!(
        out.errors[0].message.starts_with("more than 1000 blocks"),
        "{}",
        out.errors[0]
    );
    assert!(out.orphans.is_none());
    assert!(list.ranges.is_empty());
}
