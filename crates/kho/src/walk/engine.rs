//! The engine of the reader: the validating descent over an untrusted tree
//! that both the walk ([`Walk`]) and the coalescer ([`crate::Coalesce`])
//! drive.
//!
//! | item            | what it does                                                  |
//! |-----------------|---------------------------------------------------------------|
//! | [`RadixReader`] | one opened tree: the memory, the machine, the visited set,    |
//! |                 | the node budget, the spine; every child pointer is checked    |
//! |                 | here (its documentation draws the spine, lists the checks)    |
//! | [`OrderScan`]   | the runs of one order, in ascending address: a fixed stack of |
//! |                 | depth 6 from the order's spine node, leaves a word at a time  |
//! | [`OrderRuns`]   | an order scan whose every run a [`RamWindow`] checked         |

use core::fmt;
use core::sync::atomic::Ordering;

use crate::addr::{Order, PAGE_SIZE, PhysAddr, PhysRange};
use crate::key::{KeyError, LeafBit, Level, PerLevel, ROOT_ENTRIES_IN_USE, RadixKey, TableIndex};
use crate::mem::{AtomicPage, PAGE_WORDS, PageMap, RamMap};
use crate::walk::{
    NodeBudget, ORDERS, OrderSet, RamWindow, RawRun, VisitedFull, VisitedSet, Walk, WalkError,
};

/// A node of the tree: its address and its page.
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

/// The slice of a spine node that holds an order's keys: the level whose
/// index bits hold the order's marker, and the entry range (or, at the
/// leaf, the word range plus a mask for the first word) its keys occupy
/// there.
#[derive(Clone, Copy)]
struct SpineSlice {
    level: Level,
    /// Entries (inner level) or words (leaf) `[lo, hi)`.
    lo: u16,
    hi: u16,
    first_mask: u64,
}

const SPINE_SLICES: [SpineSlice; ORDERS] = spine_slices();

/// Evaluated at compile time only: an overflow or a level above the root
/// here is a build error.
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::cast_possible_truncation,
    clippy::panic
)]
const fn spine_slices() -> [SpineSlice; ORDERS] {
    let mut out = [SpineSlice {
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
            SpineSlice {
                level,
                lo: 1 << (m - s),
                hi: 2 << (m - s),
                first_mask: !0,
            }
        } else if m >= 6 {
            // Whole words [2^(m-6), 2^(m-5)) of the spine leaf.
            SpineSlice {
                level: Level::LEAF,
                lo: 1 << (m - 6),
                hi: 2 << (m - 6),
                first_mask: !0,
            }
        } else {
            // Bits [2^m, 2^(m+1)) of word 0.
            let width = 1u32 << m;
            SpineSlice {
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

fn spine_slice(order: Order) -> SpineSlice {
    SPINE_SLICES
        .get(usize::from(order.as_u8()))
        .copied()
        .unwrap_or(SpineSlice {
            level: Level::LEAF,
            lo: 0,
            hi: 0,
            first_mask: 0,
        })
}

/// How an order scan enters a node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Visit {
    /// For the first time: recorded in the visited set (a node reached
    /// twice is an error) and counted against the node budget.
    First,
    /// Again, re-scanning a subtree a first scan validates (the walk's
    /// overlap checkers): counted against `budget * ORDERS` replays only,
    /// in case the memory changes under the reader.
    Again,
}

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
/// values; after an error the iterators are fused (ours, the salvage walk
/// [`crate::SalvageWalk`], records the damaged subtree instead and goes on).
///
/// The reader needs memory proportional to the number of nodes only to tell
/// a node reached twice: that is the caller's [`VisitedSet`] (with `alloc`,
/// [`crate::NodeSet`]). Everything else is a fixed-size state.
///
/// Inside the crate it is the engine the walk and the coalescer drive:
/// the memory, the machine, the visited set, the work counters and what
/// [`RadixReader::open`] learnt (the spine, the orders present), shared by
/// the order scans that read the tree.
pub struct RadixReader<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> {
    map: &'m M,
    ram: RamMap<'r>,
    visited: V,
    nodes: u64,
    budget: NodeBudget,
    /// Nodes entered by [`Visit::Again`].
    replays: u64,
    spine: Spine<'m>,
    present: OrderSet,
    root: PhysAddr,
    /// **Ours**: an order scan that fails to enter a child records the
    /// subtree ([`Fault`]) and goes on with the next entry instead of
    /// ending (the salvage walk, `walk::salvage`).
    pub(crate) salvage: bool,
    /// The subtree of the last child an order scan failed to enter.
    fault: Option<Fault>,
}

impl<M: PageMap + ?Sized, V: VisitedSet> fmt::Debug for RadixReader<'_, '_, M, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RadixReader")
            .field("root", &self.root)
            .field("orders", &self.present)
            .field("nodes", &self.nodes)
            .finish()
    }
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
        let mut reader = Self {
            map,
            ram,
            visited,
            nodes: 0,
            budget,
            replays: 0,
            spine: PerLevel::splat(None),
            present: OrderSet::EMPTY,
            root,
            salvage: false,
            fault: None,
        };
        if !root.is_page_aligned() {
            return Err(WalkError::RootUnaligned { root });
        }
        match page_fault(&reader.ram, root) {
            None => {}
            Some(PageFault::OutsideRam) => return Err(WalkError::RootOutsideRam { root }),
            Some(PageFault::Forbidden(forbidden)) => {
                return Err(WalkError::RootForbidden { root, forbidden });
            }
        }
        match reader.visited.insert(root) {
            Ok(_) => {}
            Err(VisitedFull) => return Err(WalkError::VisitedSetFull { node: root }),
        }
        reader.nodes = 1;
        if reader.nodes > budget.nodes() {
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
        let mut node = Node {
            phys: root,
            page: root_page,
        };
        reader.spine[Level::ROOT] = Some(node);
        for level in Level::inner_top_down() {
            let v = entry(node.page, TableIndex::ZERO);
            if v == 0 {
                break;
            }
            node = reader.enter(node.phys, level, TableIndex::ZERO, v, Visit::First)?;
            if let Some(below) = level.child() {
                reader.spine[below] = Some(node);
            }
        }
        if let Some(leaf) = reader.spine[Level::LEAF] {
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
        for order in Order::all() {
            let slice = spine_slice(order);
            let Some(n) = reader.spine[slice.level] else {
                continue;
            };
            let mut any = false;
            for i in slice.lo..slice.hi {
                let mut v = load(n.page, usize::from(i));
                if i == slice.lo {
                    v &= slice.first_mask;
                }
                if v != 0 {
                    any = true;
                    break;
                }
            }
            if any {
                reader.present = reader.present.with(order);
            }
        }
        Ok(reader)
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
        self.nodes
    }

    /// The blocks in Linux walk order (ascending key).
    pub fn walk(self) -> Walk<'m, 'r, M, V> {
        Walk::new(self)
    }

    /// The machine the reader checks against.
    pub(crate) fn ram(&self) -> RamMap<'r> {
        self.ram
    }

    /// Takes the subtree of the last child an order scan failed to enter.
    pub(crate) fn take_fault(&mut self) -> Option<Fault> {
        self.fault.take()
    }

    /// A scan of `order`'s runs, from its spine node.
    pub(crate) fn scan(&self, order: Order) -> OrderScan<'m> {
        OrderScan::new(order, &self.spine)
    }

    /// A scan of `order`'s runs checked against the machine.
    pub(crate) fn runs(&self, order: Order) -> OrderRuns<'m, 'r> {
        OrderRuns {
            scan: self.scan(order),
            window: RamWindow::new(self.ram),
        }
    }

    /// Follows entry `index` (value `raw`) of `parent` at `level`: the
    /// child must be page aligned, inside RAM, outside the forbidden
    /// ranges, within the budget (and, on a first visit, never reached
    /// before), and mapped.
    fn enter(
        &mut self,
        parent: PhysAddr,
        level: Level,
        index: TableIndex,
        raw: u64,
        visit: Visit,
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
        if visit == Visit::First {
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
            if self.nodes > self.budget.nodes() {
                return Err(WalkError::BudgetExceeded {
                    budget: self.budget,
                });
            }
        } else {
            self.replays = self.replays.saturating_add(1);
            if self.replays > self.budget.nodes().saturating_mul(52) {
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
    /// The leaf's address (kept once exhausted, for [`OrderScan::leaf_fault`]).
    phys: PhysAddr,
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
        phys: PhysAddr::ZERO,
        base_key: 0,
        w: 0,
        w_end: 0,
        word: 0,
    };

    fn new(leaf: Node<'m>, base_key: u64, w: usize, w_end: usize, mask: u64) -> Self {
        let page = leaf.page;
        Self {
            page: Some(page),
            phys: leaf.phys,
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

/// The runs of one order in ascending address: a fixed stack of depth 6
/// starting at the order's spine node, no recursion, no allocation.
#[derive(Clone, Copy)]
pub(crate) struct OrderScan<'m> {
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

/// **Ours**: a subtree of one order that a scan could not read (the salvage
/// walk's raw material): the node that heads it, its level and its keys
/// `[first_key, first_key + 2^keys_log2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    pub(crate) node: PhysAddr,
    pub(crate) level: Level,
    pub(crate) first_key: u64,
    pub(crate) keys_log2: u32,
}

impl<'m> OrderScan<'m> {
    /// A scan that yields nothing.
    pub(crate) fn empty() -> Self {
        Self::new(Order::ZERO, &PerLevel::splat(None))
    }

    fn new(order: Order, spine: &Spine<'m>) -> Self {
        let slice = spine_slice(order);
        let mut c = Self {
            order,
            top: slice.level,
            depth: slice.level,
            frames: [Frame::EMPTY; 5],
            leaf: LeafScan::DONE,
            done: true,
        };
        let Some(node) = spine[slice.level] else {
            return c;
        };
        if slice.level.is_leaf() {
            c.leaf = LeafScan::new(
                node,
                0,
                usize::from(slice.lo),
                usize::from(slice.hi),
                slice.first_mask,
            );
        } else if let Some(f) = c.frame(slice.level) {
            *f = Frame {
                node: Some(node),
                next: slice.lo,
                end: slice.hi,
                prefix: 0,
            };
            c.done = false;
        }
        c
    }

    /// The order scanned.
    pub(crate) fn order(&self) -> Order {
        self.order
    }

    /// The current (or last) leaf as a [`Fault`]: its keys of this order
    /// (the spine leaf holds the whole key range of its orders).
    pub(crate) fn leaf_fault(&self) -> Fault {
        let marker_bit = crate::key::ORDER_0_MARKER.saturating_sub(self.order.as_u32());
        if self.top.is_leaf() {
            Fault {
                node: self.leaf.phys,
                level: Level::LEAF,
                first_key: 1u64.wrapping_shl(marker_bit),
                keys_log2: marker_bit,
            }
        } else {
            Fault {
                node: self.leaf.phys,
                level: Level::LEAF,
                first_key: self.leaf.base_key,
                keys_log2: crate::key::LEAF_SHIFT,
            }
        }
    }

    /// Drops the rest of the current leaf: the scan goes on at the next.
    pub(crate) fn abandon_leaf(&mut self) {
        let phys = self.leaf.phys;
        let base_key = self.leaf.base_key;
        self.leaf = LeafScan {
            phys,
            base_key,
            ..LeafScan::DONE
        };
    }

    /// The frame of inner level `level` (`None` for the leaf).
    #[inline(always)]
    fn frame(&mut self, level: Level) -> Option<&mut Frame<'m>> {
        self.frames.get_mut(level.as_usize().wrapping_sub(1))
    }

    /// The next run of this order (`None` at the end), entering nodes of
    /// `reader` as `visit` says. After an error the scan is over.
    #[inline(always)]
    pub(crate) fn next_run<M: PageMap + ?Sized, V: VisitedSet>(
        &mut self,
        reader: &mut RadixReader<'m, '_, M, V>,
        visit: Visit,
    ) -> Result<Option<RawRun>, WalkError> {
        // Fast path: the current leaf still has set bits.
        if let Some((key, count)) = self.leaf.next_run() {
            return Ok(Some(self.raw(key, count)));
        }
        self.descend(reader, visit)
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
        reader: &mut RadixReader<'m, '_, M, V>,
        visit: Visit,
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
            let child = match reader.enter(node.phys, level, index, v, visit) {
                Ok(child) => child,
                Err(e) => {
                    // The child's subtree: the keys of this entry.
                    reader.fault = level.child().map(|below| Fault {
                        node: PhysAddr::new(v),
                        level: below,
                        first_key: prefix,
                        keys_log2: level.shift(),
                    });
                    if !reader.salvage {
                        self.done = true;
                    }
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
                _ => self.leaf = LeafScan::new(child, prefix, 0, PAGE_WORDS, u64::MAX),
            }
        }
    }
}

/// The runs of one order, each checked against the machine (inside RAM,
/// outside the forbidden ranges) by a cached [`RamWindow`]: what the walk
/// yields and the coalescer merges.
#[derive(Clone, Copy)]
pub(crate) struct OrderRuns<'m, 'r> {
    scan: OrderScan<'m>,
    window: RamWindow<'r>,
}

impl<'m> OrderRuns<'m, '_> {
    /// The order scanned.
    pub(crate) fn order(&self) -> Order {
        self.scan.order()
    }

    /// The scan (for the salvage walk's faults).
    pub(crate) fn scan_mut(&mut self) -> &mut OrderScan<'m> {
        &mut self.scan
    }

    /// The next run (its range and block count), `None` at the end.
    #[inline(always)]
    pub(crate) fn next_run<M: PageMap + ?Sized, V: VisitedSet>(
        &mut self,
        reader: &mut RadixReader<'m, '_, M, V>,
    ) -> Result<Option<(PhysRange, u64)>, WalkError> {
        let order = self.scan.order();
        match self.scan.next_run(reader, Visit::First)? {
            None => Ok(None),
            Some(raw) => Ok(Some((self.window.check(order, raw)?, raw.count))),
        }
    }

    /// The runs left in the current leaf, checked, handed to `f` in
    /// ascending address as (range, block count) without descending (see
    /// [`OrderScan::drain_leaf`]). Stops when `f` returns `false`, at the
    /// end of the leaf, or at a run the window rejects, whose error is
    /// returned; returns the runs consumed (the rejected one included).
    #[inline(always)]
    pub(crate) fn drain_leaf(
        &mut self,
        mut f: impl FnMut(PhysRange, u64) -> bool,
    ) -> (u64, Option<WalkError>) {
        let order = self.scan.order();
        let mut window = self.window;
        let mut error = None;
        let consumed = self.scan.drain_leaf(|start, count| {
            let raw = RawRun {
                start: PhysAddr::new(start),
                count,
            };
            match window.check(order, raw) {
                Ok(range) => f(range, count),
                Err(e) => {
                    error = Some(e);
                    false
                }
            }
        });
        self.window = window;
        (consumed, error)
    }
}
