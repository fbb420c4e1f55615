//! The reader's one error enum: the first broken invariant, with its values.

use crate::addr::{Block, PhysAddr, PhysRange};
use crate::key::{KeyError, LeafBit, Level, TableIndex};
use crate::mem::MemError;
use crate::walk::NodeBudget;

/// Errors of the walk: the first broken invariant, with its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// The root address is not page aligned.
    #[error("radix root {root} is not page aligned")]
    RootUnaligned {
        /// The root address.
        root: PhysAddr,
    },
    /// The root page is not inside RAM.
    #[error("radix root {root} is not inside RAM")]
    RootOutsideRam {
        /// The root address.
        root: PhysAddr,
    },
    /// The root page lies in a forbidden range (scratch, kernel image).
    #[error("radix root {root} lies in forbidden range {forbidden}")]
    RootForbidden {
        /// The root address.
        root: PhysAddr,
        /// The forbidden range it overlaps.
        forbidden: PhysRange,
    },
    /// A root entry at 4 or above is in use: its keys would have their
    /// marker above bit 52.
    #[error("root {root} entry {} is in use ({entry}), only entries 0..=3 can hold valid keys", index.as_u16())]
    RootEntryBeyond3 {
        /// The root address.
        root: PhysAddr,
        /// The entry's index.
        index: TableIndex,
        /// Its value.
        entry: PhysAddr,
    },
    /// A child pointer that is not page aligned.
    #[error("node {parent} (level {}) entry {} points to unaligned {child}", level.as_u8(), index.as_u16())]
    ChildUnaligned {
        /// The node holding the pointer.
        parent: PhysAddr,
        /// Its level.
        level: Level,
        /// The entry's index.
        index: TableIndex,
        /// The pointer.
        child: PhysAddr,
    },
    /// A child pointer to a page outside RAM.
    #[error("node {parent} (level {}) entry {} points to {child}, outside RAM", level.as_u8(), index.as_u16())]
    ChildOutsideRam {
        /// The node holding the pointer.
        parent: PhysAddr,
        /// Its level.
        level: Level,
        /// The entry's index.
        index: TableIndex,
        /// The pointer.
        child: PhysAddr,
    },
    /// A child pointer into a forbidden range.
    #[error("node {parent} (level {}) entry {} points to {child}, inside forbidden range {forbidden}", level.as_u8(), index.as_u16())]
    ChildForbidden {
        /// The node holding the pointer.
        parent: PhysAddr,
        /// Its level.
        level: Level,
        /// The entry's index.
        index: TableIndex,
        /// The pointer.
        child: PhysAddr,
        /// The forbidden range it overlaps.
        forbidden: PhysRange,
    },
    /// A node reached a second time: a shared node or a cycle.
    #[error("node {parent} (level {}) entry {} points to {child}, a node already reached", level.as_u8(), index.as_u16())]
    NodeReachedTwice {
        /// The node holding the pointer.
        parent: PhysAddr,
        /// Its level.
        level: Level,
        /// The entry's index.
        index: TableIndex,
        /// The pointer.
        child: PhysAddr,
    },
    /// A set leaf bit whose key does not decode (key 0, or key 1 = order 52).
    #[error("leaf {leaf} bit {} holds an invalid key: {error}", bit.as_u16())]
    InvalidKey {
        /// The leaf.
        leaf: PhysAddr,
        /// The bit.
        bit: LeafBit,
        /// Why the key is invalid.
        #[source]
        error: KeyError,
    },
    /// A preserved block (partly) outside RAM.
    #[error("block {block:?} is not inside RAM")]
    BlockOutsideRam {
        /// The first offending block.
        block: Block,
    },
    /// A preserved block overlapping a forbidden range.
    #[error("block {block:?} overlaps forbidden range {forbidden}")]
    BlockForbidden {
        /// The first offending block.
        block: Block,
        /// The forbidden range.
        forbidden: PhysRange,
    },
    /// A block of one order covering a block of another order.
    #[error("block {covering:?} covers block {covered:?} of another order")]
    Overlap {
        /// The larger block.
        covering: Block,
        /// The smaller block inside it.
        covered: Block,
    },
    /// More nodes than the budget allows.
    #[error("the tree has more than {budget} nodes")]
    BudgetExceeded {
        /// The budget.
        budget: NodeBudget,
    },
    /// The caller's visited set could not record another node.
    #[error("the visited set is full at node {node}")]
    VisitedSetFull {
        /// The node that could not be recorded.
        node: PhysAddr,
    },
    /// The page map could not reach a node.
    #[error("page map: {0}")]
    PageMap(#[from] MemError),
}
