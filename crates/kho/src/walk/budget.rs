//! What bounds a reader's work on foreign input: the node budget, and the
//! caller's set of the nodes entered (a node reached twice is a shared node
//! or a cycle).

use core::fmt;

use crate::addr::{Order, PAGE_SIZE, PhysAddr};
use crate::key::{INNER_LEVELS, LEAF_SHIFT, Level, ORDER_0_MARKER, TABLE_SHIFT};
use crate::mem::RamMap;

/// The most nodes (root included) a walk may enter: bounds the work on
/// foreign input.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeBudget(u64);

impl NodeBudget {
    /// A budget of `nodes` nodes.
    pub const fn new(nodes: u64) -> Self {
        Self(nodes)
    }

    /// The most nodes a tree Linux wrote for this RAM can have: a node
    /// exists only on the path of a block that was preserved, so of a
    /// block in RAM; per order and RAM range the keys of the blocks that
    /// fit form one interval, and the nodes of a level over an interval
    /// are the distinct `key >> (15 + 9 * level)` in it. Summed over
    /// orders, ranges and levels 0..=4, plus the root (spine nodes shared
    /// by orders are counted once per order: an upper bound), and never
    /// more than the RAM's pages (distinct pages, all in RAM). For 1 TiB
    /// in one range: 16,541 nodes, not the 268,435,456 pages.
    pub fn for_ram(ram: &RamMap<'_>) -> Self {
        let pages = ram.ram_bytes() / PAGE_SIZE;
        let mut nodes = 1u64;
        for order in Order::all() {
            let o = order.as_u32();
            let marker = 1u64 << ORDER_0_MARKER.saturating_sub(o);
            for r in ram.ram() {
                // Blocks of this order wholly inside the range.
                let first = r.start().pfn().as_u64().div_ceil(order.pages());
                let end = r.end().pfn().as_u64() >> o;
                let Some(last) = end.checked_sub(1).filter(|&l| l >= first) else {
                    continue;
                };
                let (lo, hi) = (marker | first, marker | last);
                // Every level below the root: a node of level `l` is named
                // by the key bits above those it indexes.
                for level in (0..INNER_LEVELS).filter_map(Level::new) {
                    let shift = if level.is_leaf() {
                        LEAF_SHIFT
                    } else {
                        level.shift().saturating_add(TABLE_SHIFT)
                    };
                    let count = (hi >> shift).saturating_sub(lo >> shift);
                    nodes = nodes.saturating_add(count).saturating_add(1);
                }
            }
        }
        Self(nodes.min(pages))
    }

    /// [`NodeBudget::for_ram`], capped by the metadata actually present:
    /// `pages`, the pages the memory holds as data (an image's file bytes;
    /// the rest of its RAM reads as zero). Every node is a distinct page,
    /// so a tree whose nodes lie on pages the image holds has at most
    /// `pages` nodes; one more allows an empty root on a zero page. The
    /// budget is then what the image carries, not the RAM it declares (an
    /// ELF core's `p_memsz` is a claim, its `p_filesz` the data): a dump
    /// that leaves out zero pages holding empty tree nodes needs a larger
    /// budget ([`NodeBudget::new`]).
    pub fn for_image(ram: &RamMap<'_>, pages: u64) -> Self {
        Self(Self::for_ram(ram).0.min(pages.saturating_add(1)))
    }

    /// The number of nodes.
    pub const fn nodes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The visited set could not record another node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VisitedFull;

/// The set of nodes a walk has entered, provided by the caller so the core
/// stays allocation-free. It is asked once per node, at most
/// [`NodeBudget::nodes`] times.
pub trait VisitedSet {
    /// Records `node`: `Ok(true)` the first time, `Ok(false)` if it was
    /// recorded already, `Err(VisitedFull)` if it cannot hold another node.
    fn insert(&mut self, node: PhysAddr) -> Result<bool, VisitedFull>;
}

impl<V: VisitedSet + ?Sized> VisitedSet for &mut V {
    fn insert(&mut self, node: PhysAddr) -> Result<bool, VisitedFull> {
        (**self).insert(node)
    }
}

#[cfg(feature = "alloc")]
pub use node_set::NodeSet;

#[cfg(feature = "alloc")]
mod node_set {
    use alloc::collections::BTreeSet;

    use super::{VisitedFull, VisitedSet};
    use crate::addr::PhysAddr;

    /// A [`VisitedSet`] on a `BTreeSet` of page addresses; it grows with
    /// the tree, which the node budget bounds.
    #[derive(Debug, Default, Clone)]
    pub struct NodeSet(BTreeSet<PhysAddr>);

    impl NodeSet {
        /// An empty set.
        pub const fn new() -> Self {
            Self(BTreeSet::new())
        }

        /// Nodes recorded.
        pub fn len(&self) -> usize {
            self.0.len()
        }

        /// Whether no node is recorded.
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    impl VisitedSet for NodeSet {
        fn insert(&mut self, node: PhysAddr) -> Result<bool, VisitedFull> {
            Ok(self.0.insert(node))
        }
    }
}
