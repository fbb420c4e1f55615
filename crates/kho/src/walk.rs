//! The validating reader: walks an untrusted radix tree and yields every
//! preserved block in Linux's walk order.
//!
//! # Glossary
//!
//! | name    | meaning                                                                   |
//! |---------|---------------------------------------------------------------------------|
//! | key     | a block folded into one u64: `(1 << (52 - order)) \| (phys >> (12 + order))` |
//! | level   | a depth of the tree: 5 is the root, 1 the lowest inner level, 0 the leaf   |
//! | node    | one 4 KiB page of the tree; an inner node holds 512 child addresses       |
//! | leaf    | a node of level 0: a bitmap of 32768 keys                                 |
//! | order   | log2 of a block's size in pages; the marker bit `52 - order` of its key   |
//! | block   | `2^order` pages, naturally aligned: one set bit of a leaf                 |
//! | run     | consecutive set bits of one leaf: adjacent blocks of one order            |
//! | range   | `[start, end)` bytes; the coalescer merges runs of any order into ranges  |
//! | cursor  | an iterator over the blocks of ONE order, in ascending address            |
//! | spine   | the chain root -> entry 0 -> entry 0 ... -> leaf shared by many orders    |
//!
//! # Why per-order cursors
//!
//! The keys of order `o` are exactly `[2^(52-o), 2^(53-o))`: bits above the
//! marker are zero, so the subtree of an order hangs off the *spine* (the
//! path of entries 0) at the level whose index bits hold its marker.
//!
//! ```text
//!  level 5  root   [0]--+  [1]: order 1   [2],[3]: order 0   [4..512): must be 0
//!                       |
//!  level 4  S4     [0]--+  [1]: order 10  [2,4): order 9 ... [256,512): order 2
//!                       |
//!  level 3  S3     [0]--+  [1]: order 19 ...                 [256,512): order 11
//!                       |
//!  level 2  S2     [0]--+  orders 28 ..= 20
//!                       |
//!  level 1  S1     [0]--+  orders 37 ..= 29
//!                       |
//!  level 0  S0 (leaf)      bit 0: key 0 (invalid)  bit 1: order 52 (invalid)
//!                          bits [2,4): order 51 ... bits [16384,32768): order 38
//! ```
//!
//! Every node off the spine belongs to exactly one order. A [`RadixReader`]
//! reads the spine once ([`RadixReader::open`]); then one cursor per order
//! walks that order's subtree with a fixed stack of depth 6, no recursion and
//! no allocation. Linux's walk order (ascending key) is the cursors of
//! descending order concatenated ([`Walk`]); address order is their k-way
//! merge ([`crate::coalesce::Coalesce`]).
//!
//! # What is checked, in which order
//!
//! [`RadixReader::open`] fails fast: the root address (aligned, RAM, not
//! forbidden), root entries 4..512 unused, the spine pointers, the two
//! invalid keys of the spine leaf (0 and 1). Then each cursor, for every child
//! pointer it follows: aligned, inside RAM, outside the forbidden ranges,
//! never reached before (a shared node or a cycle), within the node budget,
//! mapped by the [`PageMap`]. For every run of blocks: inside RAM, outside the
//! forbidden ranges (checked per run against a cached window, not per block),
//! and not covered by a block of another order. Errors are [`WalkError`]s
//! naming the first broken invariant with the offending values; after an
//! error the iterators are fused.
//!
//! The reader needs memory proportional to the number of nodes only to tell
//! a node reached twice: that is the caller's [`VisitedSet`] (with `alloc`,
//! [`NodeSet`]). Everything else is a fixed-size state.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

use core::fmt;
use core::sync::atomic::Ordering;

use crate::addr::{Block, Order, PAGE_SIZE, PhysAddr, PhysRange};
use crate::key::{KeyError, LeafBit, Level, PerLevel, ROOT_ENTRIES_IN_USE, RadixKey, TableIndex};
use crate::mem::{AtomicPage, MemError, PAGE_WORDS, PageMap, RamMap};

/// Number of valid orders (`0..=51`).
pub const ORDERS: usize = 52;

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

/// A set of orders (a 52-bit mask).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OrderSet(u64);

impl OrderSet {
    /// No order.
    pub const EMPTY: Self = Self(0);

    /// Whether `order` is in the set.
    pub const fn contains(self, order: Order) -> bool {
        self.0 & bit_of(order) != 0
    }

    /// Adds `order`.
    pub const fn with(self, order: Order) -> Self {
        Self(self.0 | bit_of(order))
    }

    /// Removes `order`.
    pub const fn without(self, order: Order) -> Self {
        Self(self.0 & !bit_of(order))
    }

    /// Number of orders in the set.
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The largest order in the set.
    pub fn highest(self) -> Option<Order> {
        let bit = 63u32.checked_sub(self.0.leading_zeros())?;
        order_of_bit(bit)
    }

    /// The orders strictly above `order`.
    pub const fn above(self, order: Order) -> Self {
        Self(self.0 & (!1u64).wrapping_shl(order.as_u32()))
    }

    /// The orders, ascending.
    pub fn iter(self) -> impl DoubleEndedIterator<Item = Order> + Clone {
        Order::all().filter(move |o| self.contains(*o))
    }
}

impl fmt::Debug for OrderSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Order::as_u8))
            .finish()
    }
}

const fn bit_of(order: Order) -> u64 {
    1u64.wrapping_shl(order.as_u32())
}

fn order_of_bit(bit: u32) -> Option<Order> {
    Order::try_new(bit).ok()
}

/// Per-order block counts.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderCounts([u64; ORDERS]);

impl OrderCounts {
    /// All zero.
    pub const ZERO: Self = Self([0; ORDERS]);

    /// Blocks of `order`.
    pub fn get(&self, order: Order) -> u64 {
        self.0.get(usize::from(order.as_u8())).copied().unwrap_or(0)
    }

    /// The raw array, indexed by order.
    pub const fn as_array(&self) -> &[u64; ORDERS] {
        &self.0
    }

    /// Blocks of every order.
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// Bytes of every block (saturating).
    pub fn bytes(&self) -> u64 {
        Order::all().fold(0u64, |a, o| {
            a.saturating_add(self.get(o).saturating_mul(o.bytes()))
        })
    }

    pub(crate) fn add(&mut self, order: Order, count: u64) {
        if let Some(c) = self.0.get_mut(usize::from(order.as_u8())) {
            *c = c.saturating_add(count);
        }
    }
}

impl Default for OrderCounts {
    fn default() -> Self {
        Self::ZERO
    }
}

impl fmt::Debug for OrderCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                Order::all()
                    .filter(|o| self.get(*o) != 0)
                    .map(|o| (o.as_u8(), self.get(o))),
            )
            .finish()
    }
}

/// Consecutive blocks of one order, validated: inside RAM, outside the
/// forbidden ranges, not covering nor covered by a block of another order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRun {
    range: PhysRange,
    order: Order,
}

impl BlockRun {
    /// The blocks' order.
    pub const fn order(&self) -> Order {
        self.order
    }

    /// The bytes the run covers.
    pub const fn range(&self) -> PhysRange {
        self.range
    }

    /// The first block.
    pub const fn first(&self) -> Block {
        Block::containing(self.range.start(), self.order)
    }

    /// Number of blocks.
    pub const fn count(&self) -> u64 {
        self.range.size().wrapping_shr(self.order.shift())
    }

    /// The blocks, ascending.
    pub fn blocks(&self) -> RunBlocks {
        RunBlocks {
            next: self.range.start(),
            left: self.count(),
            order: self.order,
        }
    }
}

impl fmt::Debug for BlockRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BlockRun({} x order {} at {})",
            self.count(),
            self.order,
            self.range
        )
    }
}

/// The blocks of a [`BlockRun`], ascending.
#[derive(Clone, Debug)]
pub struct RunBlocks {
    next: PhysAddr,
    left: u64,
    order: Order,
}

impl Iterator for RunBlocks {
    type Item = Block;

    #[inline]
    fn next(&mut self) -> Option<Block> {
        self.left = self.left.checked_sub(1)?;
        let block = Block::containing(self.next, self.order);
        // The run is a validated PhysRange: every block of it, and the end
        // of its last one, fit in 64 bits; only the value after the last
        // block may wrap, and it is never used.
        self.next = PhysAddr::new(self.next.as_u64().wrapping_add(self.order.bytes()));
        Some(block)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.left).unwrap_or(usize::MAX);
        (n, usize::try_from(self.left).ok())
    }
}

// ---------------------------------------------------------------------------
// Internals: nodes, the shared context, the order spans, the leaf scan and
// the per-order cursor.

#[derive(Clone, Copy)]
pub(crate) struct Node<'m> {
    phys: PhysAddr,
    page: &'m AtomicPage,
}

/// Word `w` of a page (a leaf's bitmap word, or an entry by position).
#[inline(always)]
fn load(page: &AtomicPage, w: usize) -> u64 {
    page.words().get(w).map_or(0, |w| w.load(Ordering::Relaxed))
}

/// Entry `index` of an inner node.
#[inline(always)]
fn entry(page: &AtomicPage, index: TableIndex) -> u64 {
    page[index].load(Ordering::Relaxed)
}

/// The spine: the node at each level reached from the root through entries
/// 0 (`None` below the first absent entry).
type Spine<'m> = PerLevel<Option<Node<'m>>>;

/// Where an order's keys start in the spine: the level whose index bits hold
/// its marker, and the entry range (or, at the leaf, the word range plus a
/// mask for the first word) its keys occupy there.
#[derive(Clone, Copy)]
struct Span {
    level: Level,
    /// Entries (inner level) or words (leaf) `[lo, hi)`.
    lo: u16,
    hi: u16,
    first_mask: u64,
}

const SPANS: [Span; ORDERS] = spans();

/// Evaluated at compile time only: an overflow or a level above the root
/// here is a build error.
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::cast_possible_truncation,
    clippy::panic
)]
const fn spans() -> [Span; ORDERS] {
    let mut out = [Span {
        level: Level::LEAF,
        lo: 0,
        hi: 0,
        first_mask: 0,
    }; ORDERS];
    let mut o = 0;
    while o < ORDERS {
        let m = 52 - o as u32;
        out[o] = if m >= 15 {
            let Some(level) = Level::new(((m - 15) / 9 + 1) as u8) else {
                panic!("a marker at most at bit 52 is below the root's bits")
            };
            let s = level.shift();
            Span {
                level,
                lo: 1 << (m - s),
                hi: 2 << (m - s),
                first_mask: !0,
            }
        } else if m >= 6 {
            // Whole words [2^(m-6), 2^(m-5)) of the spine leaf.
            Span {
                level: Level::LEAF,
                lo: 1 << (m - 6),
                hi: 2 << (m - 6),
                first_mask: !0,
            }
        } else {
            // Bits [2^m, 2^(m+1)) of word 0.
            let width = 1u32 << m;
            Span {
                level: Level::LEAF,
                lo: 0,
                hi: 1,
                first_mask: ((1u64 << width) - 1) << width,
            }
        };
        o += 1;
    }
    out
}

fn span(order: Order) -> Span {
    SPANS
        .get(usize::from(order.as_u8()))
        .copied()
        .unwrap_or(Span {
            level: Level::LEAF,
            lo: 0,
            hi: 0,
            first_mask: 0,
        })
}

/// What a walk shares between its cursors: the memory, the machine, the
/// visited set and the work counters.
pub(crate) struct Ctx<'m, 'r, M: ?Sized, V> {
    map: &'m M,
    pub(crate) ram: RamMap<'r>,
    visited: V,
    nodes: u64,
    budget: NodeBudget,
    /// Node entries by cursors that re-walk validated subtrees (the walk's
    /// overlap checkers); bounded by `budget * ORDERS` in case the memory
    /// changes under the reader.
    replays: u64,
    /// The error a cursor stopped on: cursors return `Option<RawRun>` (two
    /// registers) and park their rare error here.
    pub(crate) error: Option<WalkError>,
}

enum PageFault {
    OutsideRam,
    Forbidden(PhysRange),
}

fn page_fault(ram: &RamMap<'_>, phys: PhysAddr) -> Option<PageFault> {
    let Ok(page) = PhysRange::from_start_size(phys, PAGE_SIZE) else {
        return Some(PageFault::OutsideRam);
    };
    if !ram.is_ram(page) {
        return Some(PageFault::OutsideRam);
    }
    ram.forbidden_overlap(page).map(PageFault::Forbidden)
}

impl<'m, M: PageMap + ?Sized, V: VisitedSet> Ctx<'m, '_, M, V> {
    /// Follows entry `index` (value `raw`) of `parent` at `level`.
    fn enter(
        &mut self,
        parent: PhysAddr,
        level: Level,
        index: TableIndex,
        raw: u64,
        track: bool,
    ) -> Result<Node<'m>, WalkError> {
        let child = PhysAddr::new(raw);
        if !child.is_page_aligned() {
            return Err(WalkError::ChildUnaligned {
                parent,
                level,
                index,
                child,
            });
        }
        match page_fault(&self.ram, child) {
            None => {}
            Some(PageFault::OutsideRam) => {
                return Err(WalkError::ChildOutsideRam {
                    parent,
                    level,
                    index,
                    child,
                });
            }
            Some(PageFault::Forbidden(forbidden)) => {
                return Err(WalkError::ChildForbidden {
                    parent,
                    level,
                    index,
                    child,
                    forbidden,
                });
            }
        }
        if track {
            match self.visited.insert(child) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(WalkError::NodeReachedTwice {
                        parent,
                        level,
                        index,
                        child,
                    });
                }
                Err(VisitedFull) => return Err(WalkError::VisitedSetFull { node: child }),
            }
            self.nodes = self.nodes.saturating_add(1);
            if self.nodes > self.budget.0 {
                return Err(WalkError::BudgetExceeded {
                    budget: self.budget,
                });
            }
        } else {
            self.replays = self.replays.saturating_add(1);
            if self.replays > self.budget.0.saturating_mul(52) {
                return Err(WalkError::BudgetExceeded {
                    budget: self.budget,
                });
            }
        }
        let page = self.map.page(child)?;
        Ok(Node { phys: child, page })
    }
}

/// A scan of the set bits of one leaf, a word at a time.
#[derive(Clone, Copy)]
struct LeafScan<'m> {
    /// `None` once the leaf is exhausted.
    page: Option<&'m AtomicPage>,
    /// Key of bit 0 of the leaf.
    base_key: u64,
    /// Index of the current word.
    w: usize,
    /// One past the last word to scan.
    w_end: usize,
    /// Bits of word `w` not consumed yet.
    word: u64,
}

impl<'m> LeafScan<'m> {
    const DONE: Self = Self {
        page: None,
        base_key: 0,
        w: 0,
        w_end: 0,
        word: 0,
    };

    fn new(page: &'m AtomicPage, base_key: u64, w: usize, w_end: usize, mask: u64) -> Self {
        Self {
            page: Some(page),
            base_key,
            w,
            w_end,
            word: load(page, w) & mask,
        }
    }

    /// The next run of consecutive set bits: (key of its first bit, count).
    /// Runs stop at the end of the leaf; the merge joins them across leaves.
    #[inline(always)]
    fn next_run(&mut self) -> Option<(u64, u64)> {
        let page = self.page?;
        while self.word == 0 {
            // w < w_end <= 512: no overflow.
            self.w = self.w.wrapping_add(1);
            if self.w >= self.w_end {
                self.page = None;
                return None;
            }
            self.word = load(page, self.w);
        }
        let s = self.word.trailing_zeros();
        let ones = self.word.wrapping_shr(s).trailing_ones();
        // w < 512, s < 64: the bit index is below 32768 and the base key
        // has its low 15 bits clear.
        let bit = u64::try_from(self.w)
            .unwrap_or(0)
            .wrapping_shl(6)
            .wrapping_add(u64::from(s));
        let key = self.base_key | bit;
        if s.wrapping_add(ones) < 64 {
            // Adding the lowest set bit carries through the run and clears it.
            let low = self.word & self.word.wrapping_neg();
            self.word &= self.word.wrapping_add(low);
            return Some((key, u64::from(ones)));
        }
        // The run reaches bit 63: continue through all-ones words.
        let mut count = u64::from(ones);
        self.word = 0;
        loop {
            let next_w = self.w.wrapping_add(1);
            if next_w >= self.w_end {
                break;
            }
            self.w = next_w;
            let next = load(page, next_w);
            if next == u64::MAX {
                count = count.wrapping_add(64);
                continue;
            }
            count = count.wrapping_add(u64::from(next.trailing_ones()));
            // Clears the trailing ones.
            self.word = next & next.wrapping_add(1);
            break;
        }
        Some((key, count))
    }
}

#[derive(Clone, Copy)]
struct Frame<'m> {
    node: Option<Node<'m>>,
    /// The entries `[next, end)` still to scan (`end <= 512`).
    next: u16,
    end: u16,
    /// Key bits of the levels above this node.
    prefix: u64,
}

impl Frame<'_> {
    const EMPTY: Self = Self {
        node: None,
        next: 0,
        end: 0,
        prefix: 0,
    };
}

/// A run as a cursor finds it: the first key and the number of blocks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawRun {
    pub(crate) start: PhysAddr,
    pub(crate) count: u64,
}

/// Iterates the runs of one order in ascending address, with a fixed stack
/// of depth 6 starting at the order's spine node.
#[derive(Clone, Copy)]
pub(crate) struct Cursor<'m> {
    order: Order,
    /// Level of the spine node the order starts at.
    top: Level,
    /// Level of the deepest live inner frame.
    depth: Level,
    /// `frames[l - 1]` is the node being scanned at inner level `l`.
    frames: [Frame<'m>; 5],
    leaf: LeafScan<'m>,
    done: bool,
}

impl<'m> Cursor<'m> {
    pub(crate) fn new(order: Order, spine: &Spine<'m>) -> Self {
        let sp = span(order);
        let mut c = Self {
            order,
            top: sp.level,
            depth: sp.level,
            frames: [Frame::EMPTY; 5],
            leaf: LeafScan::DONE,
            done: true,
        };
        let Some(node) = spine[sp.level] else {
            return c;
        };
        if sp.level.is_leaf() {
            c.leaf = LeafScan::new(
                node.page,
                0,
                usize::from(sp.lo),
                usize::from(sp.hi),
                sp.first_mask,
            );
        } else if let Some(f) = c.frame(sp.level) {
            *f = Frame {
                node: Some(node),
                next: sp.lo,
                end: sp.hi,
                prefix: 0,
            };
            c.done = false;
        }
        c
    }

    pub(crate) fn order(&self) -> Order {
        self.order
    }

    /// The frame of inner level `level` (`None` for the leaf).
    #[inline(always)]
    fn frame(&mut self, level: Level) -> Option<&mut Frame<'m>> {
        self.frames.get_mut(level.as_usize().wrapping_sub(1))
    }

    /// The next run of this order, `None` at the end or on an error (then
    /// parked in `ctx.error`); `track` records entered nodes in the
    /// visited set and the node budget (primary cursors), else counts them
    /// as replays (checkers re-walking a validated subtree).
    #[inline(always)]
    pub(crate) fn next_run<M: PageMap + ?Sized, V: VisitedSet>(
        &mut self,
        ctx: &mut Ctx<'m, '_, M, V>,
        track: bool,
    ) -> Option<RawRun> {
        // Fast path: the current leaf still has set bits.
        if let Some((key, count)) = self.leaf.next_run() {
            return Some(self.raw(key, count));
        }
        match self.descend(ctx, track) {
            Ok(run) => run,
            Err(e) => {
                ctx.error = Some(e);
                None
            }
        }
    }

    /// Hands the runs left in the current leaf to `f` in ascending address
    /// as `(phys start, count)`, without descending (no node is entered,
    /// so nothing can fail here): the scan state lives in locals and is
    /// written back once. Stops when `f` returns `false` (the run passed is
    /// consumed either way) or the leaf is exhausted; returns the number
    /// of runs handed over.
    #[inline(always)]
    pub(crate) fn drain_leaf(&mut self, mut f: impl FnMut(u64, u64) -> bool) -> u64 {
        let mut leaf = self.leaf;
        let shift = self.order.shift();
        let mut n = 0u64;
        while let Some((key, count)) = leaf.next_run() {
            n = n.wrapping_add(1);
            if !f(key.wrapping_shl(shift), count) {
                break;
            }
        }
        self.leaf = leaf;
        n
    }

    #[inline(always)]
    fn raw(&self, key: u64, count: u64) -> RawRun {
        // Dropping the marker: the key shifted by 12 + order is phys.
        let start = PhysAddr::new(key.wrapping_shl(self.order.shift()));
        RawRun { start, count }
    }

    /// Slow path: moves to the next leaf with a set bit, then its first run.
    #[inline(never)]
    fn descend<M: PageMap + ?Sized, V: VisitedSet>(
        &mut self,
        ctx: &mut Ctx<'m, '_, M, V>,
        track: bool,
    ) -> Result<Option<RawRun>, WalkError> {
        loop {
            if let Some((key, count)) = self.leaf.next_run() {
                return Ok(Some(self.raw(key, count)));
            }
            if self.done {
                return Ok(None);
            }
            let level = self.depth;
            let top = self.top;
            let Some(frame) = self.frame(level) else {
                self.done = true;
                return Ok(None);
            };
            let Some(node) = frame.node else {
                self.done = true;
                return Ok(None);
            };
            let mut found = None;
            while frame.next < frame.end {
                let index = TableIndex::new_truncate(u64::from(frame.next));
                // next < end <= 512.
                frame.next = frame.next.wrapping_add(1);
                let v = entry(node.page, index);
                if v != 0 {
                    found = Some((index, v));
                    break;
                }
            }
            let Some((index, v)) = found else {
                match level.parent() {
                    Some(up) if level < top => self.depth = up,
                    _ => {
                        self.done = true;
                        return Ok(None);
                    }
                }
                continue;
            };
            let prefix = frame.prefix | index.as_u64().wrapping_shl(level.shift());
            let child = match ctx.enter(node.phys, level, index, v, track) {
                Ok(child) => child,
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            };
            match level.child() {
                Some(below) if !below.is_leaf() => {
                    if let Some(f) = self.frame(below) {
                        *f = Frame {
                            node: Some(child),
                            next: 0,
                            end: 512,
                            prefix,
                        };
                        self.depth = below;
                    }
                }
                _ => self.leaf = LeafScan::new(child.page, prefix, 0, PAGE_WORDS, u64::MAX),
            }
        }
    }
}

/// Validates runs against the [`RamMap`] through a cached window
/// `[lo, hi)` known to be RAM and free of forbidden ranges: O(1) per run
/// while runs ascend, a binary search when they leave the window.
#[derive(Clone, Copy)]
pub(crate) struct RamWindow<'r> {
    ram: RamMap<'r>,
    lo: u64,
    hi: u64,
}

impl<'r> RamWindow<'r> {
    pub(crate) fn new(ram: RamMap<'r>) -> Self {
        Self { ram, lo: 1, hi: 0 }
    }

    /// Checks `count` blocks of `order` from `start`; returns their range.
    #[inline(always)]
    pub(crate) fn check(&mut self, order: Order, run: RawRun) -> Result<PhysRange, WalkError> {
        let start = run.start.as_u64();
        let shift = order.shift();
        // Fast path: the run starts in the window and its blocks fit before
        // `hi` (whole blocks between start and hi, no overflow possible).
        if start >= self.lo
            && start < self.hi
            && run.count != 0
            && run.count <= self.hi.wrapping_sub(start).wrapping_shr(shift)
        {
            // start + count * size <= hi: no overflow.
            let end = start.wrapping_add(run.count.wrapping_shl(shift));
            return PhysRange::new(run.start, PhysAddr::new(end)).map_err(|_| {
                WalkError::BlockOutsideRam {
                    block: Block::containing(run.start, order),
                }
            });
        }
        self.check_slow(order, run)
    }

    #[cold]
    #[inline(never)]
    fn check_slow(&mut self, order: Order, run: RawRun) -> Result<PhysRange, WalkError> {
        let start = run.start.as_u64();
        let size = order.bytes();
        // Inclusive last byte: a run can end exactly at 2^64.
        let last = run
            .count
            .checked_sub(1)
            .and_then(|c| c.checked_mul(size))
            .and_then(|b| b.checked_add(size.wrapping_sub(1)))
            .and_then(|b| b.checked_add(start));
        let Some(last) = last else {
            return Err(WalkError::BlockOutsideRam {
                block: Block::containing(run.start, order),
            });
        };
        if !(start >= self.lo && last < self.hi) {
            self.slow(order, start, last)?;
        }
        // last < hi <= u64::MAX.
        let end = PhysAddr::new(last.wrapping_add(1));
        PhysRange::new(run.start, end).map_err(|_| WalkError::BlockOutsideRam {
            block: Block::containing(run.start, order),
        })
    }

    #[cold]
    fn slow(&mut self, order: Order, start: u64, last: u64) -> Result<(), WalkError> {
        let at = |a: u64| Block::containing(PhysAddr::new(a), order);
        let ram = self.ram.ram();
        let i = ram.partition_point(|r| r.end().as_u64() <= start);
        let mut k = i;
        let Some(first) = ram.get(i).filter(|r| r.start().as_u64() <= start) else {
            return Err(WalkError::BlockOutsideRam { block: at(start) });
        };
        // The RAM span: adjacent RAM ranges joined.
        let mut span_hi = first.end().as_u64();
        while let Some(next) = ram.get(k.wrapping_add(1)) {
            if next.start().as_u64() != span_hi {
                break;
            }
            span_hi = next.end().as_u64();
            k = k.wrapping_add(1);
        }
        let forbidden = self.ram.forbidden();
        let j = forbidden.partition_point(|r| r.end().as_u64() <= start);
        let next_forbidden = forbidden.get(j).copied();
        let mut hi = span_hi;
        if let Some(f) = next_forbidden {
            if f.start().as_u64() <= start {
                return Err(WalkError::BlockForbidden {
                    block: at(start),
                    forbidden: f,
                });
            }
            hi = hi.min(f.start().as_u64());
        }
        self.lo = start;
        self.hi = hi;
        if last < hi {
            return Ok(());
        }
        if hi == span_hi {
            return Err(WalkError::BlockOutsideRam { block: at(hi) });
        }
        match next_forbidden {
            Some(f) => Err(WalkError::BlockForbidden {
                block: at(hi),
                forbidden: f,
            }),
            None => Err(WalkError::BlockOutsideRam { block: at(hi) }),
        }
    }
}

/// An opened radix tree: the root and the spine read and checked, the
/// orders present known. Walk it in Linux order ([`RadixReader::walk`]) or
/// coalesce it into ranges ([`RadixReader::coalesce`]).
pub struct RadixReader<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> {
    pub(crate) ctx: Ctx<'m, 'r, M, V>,
    pub(crate) spine: Spine<'m>,
    pub(crate) present: OrderSet,
    root: PhysAddr,
}

impl<M: PageMap + ?Sized, V: VisitedSet> fmt::Debug for RadixReader<'_, '_, M, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RadixReader")
            .field("root", &self.root)
            .field("orders", &self.present)
            .field("nodes", &self.ctx.nodes)
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
        let mut ctx = Ctx {
            map,
            ram,
            visited,
            nodes: 0,
            budget,
            replays: 0,
            error: None,
        };
        if !root.is_page_aligned() {
            return Err(WalkError::RootUnaligned { root });
        }
        match page_fault(&ctx.ram, root) {
            None => {}
            Some(PageFault::OutsideRam) => return Err(WalkError::RootOutsideRam { root }),
            Some(PageFault::Forbidden(forbidden)) => {
                return Err(WalkError::RootForbidden { root, forbidden });
            }
        }
        match ctx.visited.insert(root) {
            Ok(_) => {}
            Err(VisitedFull) => return Err(WalkError::VisitedSetFull { node: root }),
        }
        ctx.nodes = 1;
        if ctx.nodes > budget.0 {
            return Err(WalkError::BudgetExceeded { budget });
        }
        let root_page = map.page(root)?;
        for index in TableIndex::all().skip(usize::from(ROOT_ENTRIES_IN_USE)) {
            let v = entry(root_page, index);
            if v != 0 {
                return Err(WalkError::RootEntryBeyond3 {
                    root,
                    index,
                    entry: PhysAddr::new(v),
                });
            }
        }
        let mut spine: Spine<'m> = PerLevel::splat(None);
        let mut node = Node {
            phys: root,
            page: root_page,
        };
        spine[Level::ROOT] = Some(node);
        for level in Level::inner_top_down() {
            let v = entry(node.page, TableIndex::ZERO);
            if v == 0 {
                break;
            }
            node = ctx.enter(node.phys, level, TableIndex::ZERO, v, true)?;
            if let Some(below) = level.child() {
                spine[below] = Some(node);
            }
        }
        if let Some(leaf) = spine[Level::LEAF] {
            let w0 = load(leaf.page, 0);
            for bit in 0..2u16 {
                if w0 & (1u64 << bit) != 0 {
                    let error = match RadixKey::from_raw(u64::from(bit)).decode() {
                        Err(e) => e,
                        Ok(_) => KeyError::Zero,
                    };
                    return Err(WalkError::InvalidKey {
                        leaf: leaf.phys,
                        bit: LeafBit::new_truncate(u64::from(bit)),
                        error,
                    });
                }
            }
        }
        let mut present = OrderSet::EMPTY;
        for order in Order::all() {
            let sp = span(order);
            let Some(n) = spine[sp.level] else {
                continue;
            };
            let mut any = false;
            for i in sp.lo..sp.hi {
                let mut v = load(n.page, usize::from(i));
                if i == sp.lo {
                    v &= sp.first_mask;
                }
                if v != 0 {
                    any = true;
                    break;
                }
            }
            if any {
                present = present.with(order);
            }
        }
        Ok(Self {
            ctx,
            spine,
            present,
            root,
        })
    }

    /// The root address.
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The orders whose subtree has at least one entry (an upper bound of
    /// the orders that hold blocks).
    pub fn orders(&self) -> OrderSet {
        self.present
    }

    /// Nodes entered so far (root and spine after [`RadixReader::open`]).
    pub fn nodes(&self) -> u64 {
        self.ctx.nodes
    }

    /// The blocks in Linux walk order (ascending key).
    pub fn walk(self) -> Walk<'m, 'r, M, V> {
        Walk::new(self)
    }

    /// The maximal preserved ranges in ascending address.
    pub fn coalesce(self) -> crate::coalesce::Coalesce<'m, 'r, M, V> {
        crate::coalesce::Coalesce::new(self)
    }
}

/// An overlap checker of the walk: re-walks one higher order in step with
/// the current order's runs.
#[derive(Clone, Copy)]
struct Checker<'m> {
    cursor: Cursor<'m>,
    /// The current run, inclusive: (start, last).
    head: Option<(u64, u64)>,
}

/// The blocks of a tree in Linux walk order: ascending key, so higher
/// orders first and ascending addresses within an order.
///
/// Iterate blocks (`Iterator<Item = Result<Block, WalkError>>`) or, faster,
/// runs of consecutive blocks of one order ([`Walk::next_run`]). Each run is
/// checked against RAM and the forbidden ranges, and against the blocks of
/// every higher order present (one checker cursor per higher order, moving
/// forward only: linear per pair of orders).
pub struct Walk<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> {
    reader: RadixReader<'m, 'r, M, V>,
    remaining: OrderSet,
    cursor: Option<Cursor<'m>>,
    checkers: [Checker<'m>; ORDERS],
    window: RamWindow<'r>,
    pending: RunBlocks,
    counts: OrderCounts,
    failed: bool,
}

impl<M: PageMap + ?Sized, V: VisitedSet> fmt::Debug for Walk<'_, '_, M, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Walk")
            .field("reader", &self.reader)
            .field("order", &self.cursor.map(|c| c.order()))
            .field("counts", &self.counts)
            .finish()
    }
}

impl<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> Walk<'m, 'r, M, V> {
    fn new(reader: RadixReader<'m, 'r, M, V>) -> Self {
        let empty = Checker {
            cursor: Cursor::new(Order::ZERO, &PerLevel::splat(None)),
            head: None,
        };
        Self {
            remaining: reader.present,
            window: RamWindow::new(reader.ctx.ram),
            reader,
            cursor: None,
            checkers: [empty; ORDERS],
            pending: RunBlocks {
                next: PhysAddr::ZERO,
                left: 0,
                order: Order::ZERO,
            },
            counts: OrderCounts::ZERO,
            failed: false,
        }
    }

    /// Blocks yielded so far, per order (complete once the walk is done).
    pub fn counts(&self) -> &OrderCounts {
        &self.counts
    }

    /// Nodes entered so far.
    pub fn nodes(&self) -> u64 {
        self.reader.ctx.nodes
    }

    fn fail(&mut self, e: WalkError) -> Option<Result<BlockRun, WalkError>> {
        self.failed = true;
        self.cursor = None;
        self.pending.left = 0;
        Some(Err(e))
    }

    /// The next run of consecutive blocks of one order, in walk order.
    pub fn next_run(&mut self) -> Option<Result<BlockRun, WalkError>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(cursor) = &mut self.cursor {
                let order = cursor.order();
                match cursor.next_run(&mut self.reader.ctx, true) {
                    None => {
                        if let Some(e) = self.reader.ctx.error.take() {
                            return self.fail(e);
                        }
                        self.cursor = None;
                    }
                    Some(raw) => {
                        let range = match self.window.check(order, raw) {
                            Ok(r) => r,
                            Err(e) => return self.fail(e),
                        };
                        if let Err(e) = self.check_overlap(order, range) {
                            return self.fail(e);
                        }
                        self.counts.add(order, raw.count);
                        return Some(Ok(BlockRun { range, order }));
                    }
                }
            }
            let order = self.remaining.highest()?;
            self.remaining = self.remaining.without(order);
            self.cursor = Some(Cursor::new(order, &self.reader.spine));
            let mut higher = self.reader.present.above(order);
            while let Some(h) = higher.highest() {
                higher = higher.without(h);
                if let Some(c) = self.checkers.get_mut(usize::from(h.as_u8())) {
                    *c = Checker {
                        cursor: Cursor::new(h, &self.reader.spine),
                        head: None,
                    };
                }
            }
        }
    }

    /// Checks a run of `order` against the blocks of every higher order.
    #[inline]
    fn check_overlap(&mut self, order: Order, range: PhysRange) -> Result<(), WalkError> {
        let mut higher = self.reader.present.above(order).0;
        if higher == 0 {
            return Ok(());
        }
        let start = range.start().as_u64();
        // A validated range is non-empty and ends at most at u64::MAX.
        let last = range.end().as_u64().wrapping_sub(1);
        while higher != 0 {
            let bit = higher.trailing_zeros();
            higher &= higher.wrapping_sub(1);
            let Some(h) = order_of_bit(bit) else { continue };
            let Some(checker) = self.checkers.get_mut(usize::from(h.as_u8())) else {
                continue;
            };
            loop {
                let (s, l) = match checker.head {
                    Some(head) => head,
                    None => match checker.cursor.next_run(&mut self.reader.ctx, false) {
                        None => match self.reader.ctx.error.take() {
                            Some(e) => return Err(e),
                            None => break,
                        },
                        Some(raw) => {
                            let s = raw.start.as_u64();
                            let bytes = raw.count.saturating_mul(h.bytes());
                            let l = s.saturating_add(bytes.saturating_sub(1));
                            checker.head = Some((s, l));
                            (s, l)
                        }
                    },
                };
                if l < start {
                    checker.head = None;
                    continue;
                }
                if s <= last {
                    let at = PhysAddr::new(s.max(start));
                    return Err(WalkError::Overlap {
                        covering: Block::containing(at, h),
                        covered: Block::containing(at, order),
                    });
                }
                break;
            }
        }
        Ok(())
    }
}

impl<M: PageMap + ?Sized, V: VisitedSet> Iterator for Walk<'_, '_, M, V> {
    type Item = Result<Block, WalkError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(b) = self.pending.next() {
            return Some(Ok(b));
        }
        match self.next_run()? {
            Ok(run) => {
                self.pending = run.blocks();
                self.pending.next().map(Ok)
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl<M: PageMap + ?Sized, V: VisitedSet> core::iter::FusedIterator for Walk<'_, '_, M, V> {}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]
mod tests;
