//! [`RadixReader`]: the public handle on an opened tree.

use core::fmt;

use crate::addr::PhysAddr;
use crate::mem::{PageMap, RamMap};
use crate::walk::engine::Engine;
use crate::walk::{NodeBudget, OrderSet, VisitedSet, Walk, WalkError};

/// An opened radix tree, untrusted: the root and the spine read and
/// checked, the orders present known. Walk it in Linux order
/// ([`RadixReader::walk`]) or coalesce it into ranges
/// ([`RadixReader::coalesce`]).
///
/// # Why one scan per order
///
/// The keys of order `o` are exactly `[2^(52-o), 2^(53-o))`: bits above the
/// marker are zero, so the subtree of an order hangs off the *spine* (the
/// path of entries 0) at the level whose index bits hold its marker.
///
/// ```text
///  level 5  root   [0]--+  [1]: order 1   [2],[3]: order 0   [4..512): must be 0
///                       |
///  level 4  S4     [0]--+  [1]: order 10  [2,4): order 9 ... [256,512): order 2
///                       |
///  level 3  S3     [0]--+  [1]: order 19 ...                 [256,512): order 11
///                       |
///  level 2  S2     [0]--+  orders 28 ..= 20
///                       |
///  level 1  S1     [0]--+  orders 37 ..= 29
///                       |
///  level 0  S0 (leaf)      bit 0: key 0 (invalid)  bit 1: order 52 (invalid)
///                          bits [2,4): order 51 ... bits [16384,32768): order 38
/// ```
///
/// Every node off the spine belongs to exactly one order. The reader reads
/// the spine once ([`RadixReader::open`]); then one *order scan* per order
/// walks that order's subtree with a fixed stack of depth 6, no recursion
/// and no allocation. Linux's walk order (ascending key) is the scans of
/// descending order concatenated ([`Walk`]); address order is their k-way
/// merge ([`crate::Coalesce`]).
///
/// # What is checked, in which order
///
/// [`RadixReader::open`] fails fast: the root address (aligned, RAM, not
/// forbidden), root entries 4..512 unused, the spine pointers, the two
/// invalid keys of the spine leaf (0 and 1). Then each order scan, for every
/// child pointer it follows: aligned, inside RAM, outside the forbidden
/// ranges, never reached before (a shared node or a cycle), within the node
/// budget, mapped by the [`PageMap`]. For every run of blocks: inside RAM,
/// outside the forbidden ranges (checked per run against a cached window,
/// not per block), and not covered by a block of another order. Errors are
/// [`WalkError`]s naming the first broken invariant with the offending
/// values; after an error the iterators are fused.
///
/// The reader needs memory proportional to the number of nodes only to tell
/// a node reached twice: that is the caller's [`VisitedSet`] (with `alloc`,
/// [`crate::NodeSet`]). Everything else is a fixed-size state.
pub struct RadixReader<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> {
    engine: Engine<'m, 'r, M, V>,
}

impl<M: PageMap + ?Sized, V: VisitedSet> fmt::Debug for RadixReader<'_, '_, M, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RadixReader")
            .field("root", &self.engine.root())
            .field("orders", &self.engine.orders())
            .field("nodes", &self.engine.nodes())
            .finish()
    }
}

impl<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> RadixReader<'m, 'r, M, V> {
    /// Opens the tree at `root`: checks the root, root entries 4..512, the
    /// spine pointers and the invalid keys 0 and 1; learns which orders
    /// have entries.
    pub fn open(
        map: &'m M,
        ram: RamMap<'r>,
        root: PhysAddr,
        visited: V,
        budget: NodeBudget,
    ) -> Result<Self, WalkError> {
        Engine::open(map, ram, root, visited, budget).map(|engine| Self { engine })
    }

    /// The root address.
    pub fn root(&self) -> PhysAddr {
        self.engine.root()
    }

    /// The orders whose subtree has at least one entry (an upper bound of
    /// the orders that hold blocks).
    pub fn orders(&self) -> OrderSet {
        self.engine.orders()
    }

    /// Nodes entered so far (root and spine after [`RadixReader::open`]).
    pub fn nodes(&self) -> u64 {
        self.engine.nodes()
    }

    /// The blocks in Linux walk order (ascending key).
    pub fn walk(self) -> Walk<'m, 'r, M, V> {
        Walk::new(self.engine)
    }

    /// The engine, for the walk and the coalescer to drive.
    pub(crate) fn into_engine(self) -> Engine<'m, 'r, M, V> {
        self.engine
    }
}
