//! A small tree builder: direct word stores along the key path of each
//! block (no concurrency, no checks), so the reader's tests do not depend on
//! the real writer; and the oracles the reader is checked against.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::addr::{Block, Order, PhysAddr, PhysRange};
use crate::key::{Level, RadixKey};
use crate::mem::{PageAlloc, PageMap, RamMap, VecArena};
use crate::walk::{NodeBudget, NodeSet, RadixReader, WalkError};

/// Where test arenas live.
pub const ARENA_BASE: u64 = 0x100_0000;

/// A tree in an arena of its own at [`ARENA_BASE`].
#[derive(Debug)]
pub struct TestTree {
    /// The arena holding the tree's pages.
    pub arena: VecArena,
    /// The root page.
    pub root: PhysAddr,
}

impl TestTree {
    /// An empty tree (a root page) in an arena of `pages` pages.
    pub fn new(pages: usize) -> Self {
        let arena = VecArena::new(PhysAddr::new(ARENA_BASE), pages);
        let root = arena.alloc_zeroed_page().unwrap();
        Self { arena, root }
    }

    /// Opens the tree for reading against `map`, with a set of visited
    /// nodes and a budget of one node per page of RAM.
    pub fn open<'r>(
        &self,
        map: RamMap<'r>,
    ) -> Result<RadixReader<'_, 'r, VecArena, NodeSet>, WalkError> {
        RadixReader::open(
            &self.arena,
            map,
            self.root,
            NodeSet::new(),
            NodeBudget::for_ram(&map),
        )
    }

    /// Sets the bit of `block`, allocating the missing nodes on its path.
    pub fn insert(&self, block: Block) {
        let key = RadixKey::encode(block);
        let mut node = self.root;
        for level in Level::inner_top_down() {
            let entry = &self.arena.page(node).unwrap()[key.index(level)];
            let mut child = entry.load(Ordering::Relaxed);
            if child == 0 {
                child = self.arena.alloc_zeroed_page().unwrap().as_u64();
                entry.store(child, Ordering::Relaxed);
            }
            node = PhysAddr::new(child);
        }
        let bit = key.leaf_bit();
        let leaf = self.arena.page(node).unwrap();
        leaf.word_of(bit).fetch_or(bit.mask(), Ordering::Relaxed);
    }
}

/// The block at `phys` of `order` (panics if misaligned).
pub fn block(phys: u64, order: u8) -> Block {
    Block::new(PhysAddr::new(phys), Order::new(order)).unwrap()
}

/// The range `[start, end)` (panics if inverted).
pub fn range(start: u64, end: u64) -> PhysRange {
    PhysRange::new(PhysAddr::new(start), PhysAddr::new(end)).unwrap()
}

/// The oracle's walk order: sorted by key.
pub fn sorted_by_key(blocks: &[Block]) -> Vec<Block> {
    let mut v = blocks.to_vec();
    v.sort_by_key(|b| RadixKey::encode(*b));
    v.dedup();
    v
}

/// The oracle's ranges: blocks sorted by address, adjacent ones merged.
pub fn merged(blocks: &[Block]) -> Vec<PhysRange> {
    let mut v = blocks.to_vec();
    v.sort_by_key(|b| b.phys());
    v.dedup();
    let mut out: Vec<PhysRange> = Vec::new();
    for b in v {
        let r = b.range().unwrap();
        match out.last_mut() {
            Some(last) if last.end() == r.start() => {
                *last = PhysRange::new(last.start(), r.end()).unwrap()
            }
            _ => out.push(r),
        }
    }
    out
}
