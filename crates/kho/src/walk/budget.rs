//! What bounds a reader's work on foreign input: the node budget, and the
//! caller's set of the nodes entered (a node reached twice is a shared node
//! or a cycle).

use core::fmt;

use crate::addr::{PAGE_SIZE, PhysAddr};
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

    /// One node per page of RAM: a valid tree (distinct pages, all in RAM)
    /// never exceeds it.
    pub fn for_ram(ram: &RamMap<'_>) -> Self {
        Self(ram.ram_bytes() / PAGE_SIZE)
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
