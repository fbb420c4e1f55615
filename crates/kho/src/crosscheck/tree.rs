//! The radix tree itself as the cross-layer check's tracker: lookups
//! descend the tree, the blocks come from walking it again, so nothing is
//! held per block (a [`crate::PreservedSet`] holds 16 bytes per block:
//! 1 GiB for the 2^26 blocks an 8 MiB image of all-ones leaves holds).
//!
//! The lookup follows the key path of [`crate::RadixTree`] (byte-identical
//! to Linux's `kho_radix_tree`): for each order the tree holds, the key of
//! the block of that order containing the address ([`RadixKey::encode`]),
//! root entry down to the leaf bit.

use core::fmt;
use core::sync::atomic::Ordering;

use crate::addr::{Block, PhysAddr};
use crate::crosscheck::PreservedBlocks;
use crate::key::{Level, RadixKey};
use crate::mem::{PageMap, RamMap};
use crate::tracker::PreservedLookup;
use crate::walk::{NodeBudget, NodeSet, OrderSet, RadixReader, WalkError};

/// A tree a walk read to its end without error, as a tracker.
pub struct TreeTracker<'m, 'r, M: ?Sized> {
    map: &'m M,
    ram: RamMap<'r>,
    root: PhysAddr,
    budget: NodeBudget,
    orders: OrderSet,
}

impl<M: ?Sized> fmt::Debug for TreeTracker<'_, '_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TreeTracker")
            .field("root", &self.root)
            .field("budget", &self.budget)
            .field("orders", &self.orders)
            .finish_non_exhaustive()
    }
}

impl<'m, 'r, M: PageMap + ?Sized> TreeTracker<'m, 'r, M> {
    /// The tree at `root`, opened ([`RadixReader::open`]: the root and
    /// spine checks) to learn its orders. Meant for a tree a walk with the
    /// same `ram` and `budget` validated: the lookups trust its pointers
    /// (a pointer that does not map reads as "not preserved").
    pub fn open(
        map: &'m M,
        ram: RamMap<'r>,
        root: PhysAddr,
        budget: NodeBudget,
    ) -> Result<Self, WalkError> {
        let reader = RadixReader::open(map, ram, root, NodeSet::new(), budget)?;
        Ok(Self {
            map,
            ram,
            root,
            budget,
            orders: reader.orders(),
        })
    }

    /// Whether the tree holds exactly `block`.
    fn holds(&self, block: Block) -> Option<bool> {
        let key = RadixKey::encode(block);
        let mut node = self.map.page(self.root).ok()?;
        for level in Level::inner_top_down() {
            let child = node[key.index(level)].load(Ordering::Relaxed);
            if child == 0 {
                return Some(false);
            }
            node = self.map.page(PhysAddr::new(child)).ok()?;
        }
        let bit = key.leaf_bit();
        let word = node.words().get(bit.word())?.load(Ordering::Relaxed);
        Some(word & bit.mask() != 0)
    }
}

impl<M: PageMap + ?Sized> PreservedLookup for TreeTracker<'_, '_, M> {
    fn block_containing(&self, phys: PhysAddr) -> Option<Block> {
        // Blocks of two orders never share a page in a validated tree:
        // at most one order answers.
        self.orders
            .iter()
            .map(|order| Block::containing(phys, order))
            .find(|b| self.holds(*b) == Some(true))
    }
}

impl<M: PageMap + ?Sized> PreservedBlocks for TreeTracker<'_, '_, M> {
    fn for_each_run(&self, f: &mut dyn FnMut(Block, u64)) -> Result<(), WalkError> {
        let reader = RadixReader::open(self.map, self.ram, self.root, NodeSet::new(), self.budget)?;
        let mut walk = reader.walk();
        while let Some(run) = walk.next_run() {
            let run = run?;
            f(run.first(), run.count());
        }
        Ok(())
    }
}
