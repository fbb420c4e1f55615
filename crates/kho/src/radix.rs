//! The writer: [`RadixTree`], a lock-free radix tree in the Linux kho-v2/v3
//! format, and its per-thread [`Cursor`]. The format, the concurrency rules
//! and the overlap checks are in [`RadixTree`]'s documentation.

use core::fmt;
use core::sync::atomic::Ordering;

use crate::addr::{Block, Order, PAGE_SIZE, Pfn, PhysAddr};
use crate::key::{LEAF_SHIFT, LeafBit, Level, PerLevel, RadixKey, TABLE_SHIFT, TableIndex};
use crate::mem::{AtomicPage, AtomicU64, MemError, PageAlloc, PageMap};

/// Errors of the radix tree writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RadixError {
    /// A raw address that is not aligned to the size of its order.
    #[error("block at {phys} of order {order} is not aligned to its size")]
    Misaligned {
        /// The address given.
        phys: PhysAddr,
        /// The order given.
        order: Order,
    },
    /// A raw order whose key would not fit in 64 bits.
    #[error("order {order} is above the largest order {max} whose radix key fits")]
    OrderTooLarge {
        /// The order given.
        order: u32,
        /// The largest valid order.
        max: Order,
    },
    /// A page range that runs past the last frame of the address space.
    #[error("{nr} pages from frame {pfn} run past the last frame")]
    RangeOverflow {
        /// First frame of the range.
        pfn: Pfn,
        /// Number of pages.
        nr: u64,
    },
    /// The very block is already preserved.
    #[error("{block:?} is already preserved")]
    AlreadyPreserved {
        /// The block.
        block: Block,
    },
    /// The block overlaps a preserved block of another order.
    #[error("{block:?} overlaps the preserved {existing:?}")]
    Overlaps {
        /// The block asked for.
        block: Block,
        /// A preserved block it overlaps (one of them, if several).
        existing: Block,
    },
    /// The block is not preserved (as this very block, with this order).
    #[error("{block:?} is not preserved")]
    NotPreserved {
        /// The block.
        block: Block,
    },
    /// A node page for the path of `block` could not be allocated.
    #[error("cannot allocate a tree page to preserve {block:?}: {source}")]
    Alloc {
        /// The block being preserved.
        block: Block,
        /// The allocator's error.
        source: MemError,
    },
    /// The root page could not be allocated.
    #[error("cannot allocate the radix root: {source}")]
    RootAlloc {
        /// The allocator's error.
        source: MemError,
    },
    /// The allocator handed out physical page 0, which the format reads as
    /// "absent". The page is not freed (it would come straight back).
    #[error("the page allocator returned physical page 0, which the tree cannot link")]
    ZeroPage,
    /// The page map could not reach one of the tree's own pages: the memory
    /// contract is broken or a node entry was overwritten.
    #[error("tree page {node} cannot be mapped: {source}")]
    Unmapped {
        /// The page's address.
        node: PhysAddr,
        /// The map's error.
        source: MemError,
    },
}

/// Metadata accounting: the pages the tree holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RadixStats {
    /// Inner nodes, the root included.
    pub inner_nodes: u64,
    /// Leaf bitmaps.
    pub leaves: u64,
    /// Bytes of both: `(inner_nodes + leaves) * 4096`.
    pub bytes: u64,
}

/// What one [`RadixTree::compact`] freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactStats {
    /// Inner nodes freed.
    pub inner_nodes: u64,
    /// Leaves freed.
    pub leaves: u64,
}

/// Level 1, whose entries point to leaves, and level 2 above it.
const L1: Level = match Level::new(1) {
    Some(l) => l,
    None => panic!("level 1 exists"),
};
const L2: Level = match Level::new(2) {
    Some(l) => l,
    None => panic!("level 2 exists"),
};
/// Set in [`Path::tag`] when the cached leaf is not valid.
const STALE: u64 = 1 << 63;
/// The key bits a leaf resolves.
const LEAF_MASK: u64 = (1 << LEAF_SHIFT) - 1;

/// The nodes of the last path walked, for one thread.
#[derive(Clone, Copy)]
struct Path<'t> {
    /// Key of the cached path; [`STALE`] is or-ed in unless `valid_lo` is
    /// the leaf.
    tag: u64,
    /// Lowest level whose cached node belongs to `tag`'s path; a level
    /// with no node cached (at first, even the root) reads the root again.
    valid_lo: Level,
    /// `nodes[l]`: the node of level `l` on the path.
    nodes: PerLevel<Option<&'t AtomicPage>>,
}

impl Path<'_> {
    const fn new() -> Self {
        Self {
            tag: STALE,
            valid_lo: Level::ROOT,
            nodes: PerLevel::splat(None),
        }
    }
}

/// The lock-free writer of a kho-v2/v3 radix tree.
///
/// Owns (or borrows, as `&M`) the memory its pages come from. Dropping the
/// tree does not free its pages: they are the handover.
///
/// ```text
///  root (level 5) ──[key 59:51]──> level 4 ──[50:42]──> level 3 ──[41:33]──>
///  level 2 ──[32:24]──> level 1 ──[23:15]──> leaf: bit key[14:0]
///
///  inner node (4096 bytes)               leaf (4096 bytes)
///  +---------+---------+-----+-------+   +---------+---------+-----+---------+
///  | child 0 | child 1 | ... | c 511 |   | bits    | bits    | ... | bits    |
///  | u64 LE  | u64 LE  |     |       |   | 0..63   | 64..127 |     | ..32767 |
///  +---------+---------+-----+-------+   +---------+---------+-----+---------+
///   0 = absent, else the child's phys     bit b = word b/64, bit b%64
/// ```
///
/// The tree is byte-identical to Linux's `kho_radix_tree` with 4 KiB pages:
/// [`RadixTree::root`] is what the root FDT's `preserved-memory-map` holds.
///
/// # Concurrency
///
/// Every mutating operation except [`RadixTree::compact`] takes `&self` and
/// may run on many threads at once; there is no lock.
///
/// - A missing node is installed by compare-and-swap (AcqRel) of its parent
///   entry from 0 to a freshly zeroed page. The loser of a race frees its
///   page and descends into the winner's. Only the winner counts the page,
///   so the accounting ([`RadixTree::stats`]) is exact.
/// - A leaf bit is set by `fetch_or` and cleared by `fetch_and`; the old word
///   tells whether the bit was already set (or clear), so two concurrent
///   preserves of the *same* block are told apart exactly: one succeeds, the
///   other gets [`RadixError::AlreadyPreserved`].
/// - Nodes are never freed while the tree is shared: unpreserve only clears
///   bits, and only [`RadixTree::compact`] (`&mut self`) frees pages. A
///   [`Cursor`] may therefore keep references to the nodes of its last path.
///
/// # Overlap checks
///
/// A block must not overlap a preserved block of another order. The tree
/// keeps a bitmask of the orders ever used (an atomic u64), so a workload of
/// a single order (say, order 0 only) pays one relaxed load and no check.
/// When other orders are present, a preserve of `(phys, o)` checks
///
/// - *ancestors*: for each present order `p > o`, the bit of the block of
///   order `p` that contains `phys`;
/// - *descendants*: for each present order `p < o`, the `2^(o-p)` consecutive
///   keys of order `p` under the block, scanned top-down so that absent
///   subtrees are skipped by one zero entry and present leaves by whole words.
///
/// These checks are check-then-set: two *concurrent* preserves of
/// overlapping blocks of *different* orders may both succeed. Same-block
/// races are exact (see above). Callers that preserve overlapping blocks
/// concurrently already have a bug of their own; the check is a diagnostic,
/// not a lock.
///
/// # Allocation failure
///
/// A preserve that cannot allocate a node returns [`RadixError::Alloc`] with
/// no bit set. Nodes it installed before failing stay installed (other
/// threads may already be descending through them) but empty;
/// [`RadixTree::compact`] reclaims them. A page allocated but not installed
/// (a lost race) is freed at once.
pub struct RadixTree<M: PageAlloc + PageMap> {
    mem: M,
    root: PhysAddr,
    /// Bit `o` set once any block of order `o` was preserved (cleared only
    /// by [`RadixTree::compact`] when no block of that order is left).
    orders: AtomicU64,
    inner_nodes: AtomicU64,
    leaves: AtomicU64,
}

impl<M: PageAlloc + PageMap> fmt::Debug for RadixTree<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RadixTree")
            .field("root", &self.root)
            .field(
                "orders",
                &format_args!("{:#x}", self.orders.load(Ordering::Relaxed)),
            )
            .field("stats", &self.stats())
            .finish()
    }
}

impl<M: PageAlloc + PageMap> RadixTree<M> {
    /// An empty tree: allocates its root.
    pub fn new(mem: M) -> Result<Self, RadixError> {
        let root = mem
            .alloc_zeroed_page()
            .map_err(|source| RadixError::RootAlloc { source })?;
        if root == PhysAddr::ZERO {
            return Err(RadixError::ZeroPage);
        }
        Ok(Self {
            mem,
            root,
            orders: AtomicU64::new(0),
            inner_nodes: AtomicU64::new(1),
            leaves: AtomicU64::new(0),
        })
    }

    /// The root page: the value of the FDT's `preserved-memory-map`.
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The memory the tree's pages live in.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// The pages the tree holds now.
    pub fn stats(&self) -> RadixStats {
        let inner_nodes = self.inner_nodes.load(Ordering::Relaxed);
        let leaves = self.leaves.load(Ordering::Relaxed);
        RadixStats {
            inner_nodes,
            leaves,
            bytes: inner_nodes.saturating_add(leaves).saturating_mul(PAGE_SIZE),
        }
    }

    /// A cursor: the same operations, remembering the last path walked so
    /// that nearby blocks skip the descent from the root.
    pub fn cursor(&self) -> Cursor<'_, M> {
        Cursor {
            tree: self,
            path: Path::new(),
            aux: Path::new(),
        }
    }

    /// Preserves one block. Fails if it, or a block of another order that
    /// overlaps it, is already preserved, or if a node cannot be allocated.
    pub fn preserve(&self, block: Block) -> Result<(), RadixError> {
        self.cursor().preserve(block)
    }

    /// Unpreserves one block, preserved before as this very block.
    pub fn unpreserve(&self, block: Block) -> Result<(), RadixError> {
        self.cursor().unpreserve(block)
    }

    /// Whether this very block (address and order) is preserved.
    pub fn is_preserved(&self, block: Block) -> Result<bool, RadixError> {
        self.cursor().is_preserved(block)
    }

    /// [`RadixTree::preserve`] from raw input: checks the order and the
    /// alignment first.
    pub fn preserve_phys(&self, phys: PhysAddr, order: u32) -> Result<(), RadixError> {
        self.preserve(raw_block(phys, order)?)
    }

    /// [`RadixTree::unpreserve`] from raw input: checks the order and the
    /// alignment first.
    pub fn unpreserve_phys(&self, phys: PhysAddr, order: u32) -> Result<(), RadixError> {
        self.unpreserve(raw_block(phys, order)?)
    }

    /// Preserves `nr` pages from `pfn`, split as Linux's
    /// `kho_preserve_pages` splits them (see [`split_pages`]). All or
    /// nothing: if a block fails, the blocks this call preserved are
    /// unpreserved and the failing block's error is returned.
    pub fn preserve_pages(&self, pfn: Pfn, nr: u64) -> Result<(), RadixError> {
        self.cursor().preserve_pages(pfn, nr)
    }

    /// Unpreserves `nr` pages from `pfn`, split as [`split_pages`] splits
    /// them. All or nothing: if a block is not preserved, the blocks this
    /// call unpreserved are preserved again and the error is returned.
    pub fn unpreserve_pages(&self, pfn: Pfn, nr: u64) -> Result<(), RadixError> {
        self.cursor().unpreserve_pages(pfn, nr)
    }

    /// Frees every leaf with no bit set and every inner node left with no
    /// child (never the root), and forgets the orders no block uses any
    /// more. Needs exclusive access: no cursor may hold a node meanwhile.
    pub fn compact(&mut self) -> Result<CompactStats, RadixError> {
        let root = self.map(self.root)?;
        let mut freed = CompactStats::default();
        let mut orders = 0;
        self.compact_node(root, Level::ROOT, 0, &mut freed, &mut orders)?;
        self.orders.store(orders, Ordering::Relaxed);
        self.inner_nodes
            .fetch_sub(freed.inner_nodes, Ordering::Relaxed);
        self.leaves.fetch_sub(freed.leaves, Ordering::Relaxed);
        Ok(freed)
    }

    fn map(&self, phys: PhysAddr) -> Result<&AtomicPage, RadixError> {
        self.mem
            .page(phys)
            .map_err(|source| RadixError::Unmapped { node: phys, source })
    }

    /// The leaf of `key`, from the cached `path` when it matches. With
    /// `ALLOC`, missing nodes are installed; without, a missing node is
    /// [`RadixError::NotPreserved`] for `block`.
    #[inline(always)]
    fn leaf<'t, const ALLOC: bool>(
        &'t self,
        path: &mut Path<'t>,
        key: RadixKey,
        block: Block,
    ) -> Result<&'t AtomicPage, RadixError> {
        if (key.as_u64() ^ path.tag) >> LEAF_SHIFT == 0
            && let Some(leaf) = path.nodes[Level::LEAF]
        {
            return Ok(leaf);
        }
        self.descend::<ALLOC>(path, key, block)
    }

    /// The slow part of [`RadixTree::leaf`]: first the common case of
    /// another leaf under the cached level-1 node, else a descent from the
    /// lowest cached node shared with the new key.
    #[inline(never)]
    fn descend<'t, const ALLOC: bool>(
        &'t self,
        path: &mut Path<'t>,
        key: RadixKey,
        block: Block,
    ) -> Result<&'t AtomicPage, RadixError> {
        // Another leaf under the same level-1 node (the tag is not stale,
        // so the cached level-1 node is valid): one entry load.
        if (key.as_u64() ^ path.tag) >> L2.shift() == 0
            && let Some(node) = path.nodes[L1]
        {
            let child = node[key.index(L1)].load(Ordering::Acquire);
            if child != 0 {
                let leaf = self.map(PhysAddr::new(child))?;
                path.nodes[Level::LEAF] = Some(leaf);
                path.tag = key.as_u64();
                return Ok(leaf);
            }
        }
        let k = key.as_u64();
        // The node of level L is shared with the cached path iff no key bit
        // at or above L.shift() + 9 (the bits naming that node) differs:
        // `shared` is the lowest such level (`None` above the root).
        let diff = k ^ (path.tag & !STALE);
        let sig = u64::BITS - diff.leading_zeros();
        let shared = if sig <= LEAF_SHIFT {
            0
        } else {
            (sig - LEAF_SHIFT).div_ceil(TABLE_SHIFT)
        };
        let start = u8::try_from(shared)
            .ok()
            .and_then(Level::new)
            .map(|shared| shared.max(path.valid_lo));
        let (mut level, mut node) = match start.and_then(|l| path.nodes[l].map(|n| (l, n))) {
            Some(cached) => cached,
            None => {
                let root = self.map(self.root)?;
                path.nodes[Level::ROOT] = Some(root);
                (Level::ROOT, root)
            }
        };
        path.tag = k | STALE;
        path.valid_lo = level;
        while let Some(below) = level.child() {
            let entry = &node[key.index(level)];
            let mut child = entry.load(Ordering::Acquire);
            if child == 0 {
                if !ALLOC {
                    return Err(RadixError::NotPreserved { block });
                }
                child = self.install(entry, below, block)?;
            }
            level = below;
            node = self.map(PhysAddr::new(child))?;
            path.nodes[level] = Some(node);
            path.valid_lo = level;
        }
        path.tag = k;
        Ok(node)
    }

    /// Installs a zeroed page in `entry` (a child of level `child_level`),
    /// or adopts the page another thread installed first.
    #[cold]
    fn install(
        &self,
        entry: &AtomicU64,
        child_level: Level,
        block: Block,
    ) -> Result<u64, RadixError> {
        let page = self
            .mem
            .alloc_zeroed_page()
            .map_err(|source| RadixError::Alloc { block, source })?;
        if page == PhysAddr::ZERO {
            return Err(RadixError::ZeroPage);
        }
        match entry.compare_exchange(0, page.as_u64(), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                let counter = if child_level.is_leaf() {
                    &self.leaves
                } else {
                    &self.inner_nodes
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(page.as_u64())
            }
            Err(winner) => {
                self.mem.free_page(page);
                Ok(winner)
            }
        }
    }

    /// The first set key in `lo..=hi` under `node` of `level`; `lo` and `hi`
    /// must lie under the same node (share every bit from `level.shift() + 9`).
    fn find_set(
        &self,
        node: &AtomicPage,
        level: Level,
        lo: u64,
        hi: u64,
    ) -> Result<Option<RadixKey>, RadixError> {
        let Some(below) = level.child() else {
            let (first, last) = (lo & LEAF_MASK, hi & LEAF_MASK);
            let (wf, wl) = (first / 64, last / 64);
            for (w, word) in node
                .words()
                .iter()
                .enumerate()
                .skip(LeafBit::new_truncate(first).word())
            {
                let w = w as u64;
                if w > wl {
                    break;
                }
                let mut mask = !0u64;
                if w == wf {
                    mask &= !0u64 << (first % 64);
                }
                if w == wl {
                    mask &= !0u64 >> (63 - last % 64);
                }
                let bits = word.load(Ordering::Relaxed) & mask;
                if bits != 0 {
                    let bit = w * 64 + u64::from(bits.trailing_zeros());
                    return Ok(Some(RadixKey::from_raw((lo & !LEAF_MASK) | bit)));
                }
            }
            return Ok(None);
        };
        let shift = level.shift();
        let (first, last) = (
            TableIndex::new_truncate(lo >> shift),
            TableIndex::new_truncate(hi >> shift),
        );
        let above = (lo >> shift >> TABLE_SHIFT) << TABLE_SHIFT;
        for index in TableIndex::all().skip(first.as_usize()) {
            if index > last {
                break;
            }
            let child = node[index].load(Ordering::Acquire);
            if child == 0 {
                continue;
            }
            let start = (above | index.as_u64()) << shift;
            let end = start | ((1u64 << shift) - 1);
            let page = self.map(PhysAddr::new(child))?;
            if let Some(key) = self.find_set(page, below, lo.max(start), hi.min(end))? {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// Compacts the subtree of `node` (of `level`, covering keys from
    /// `base`); returns whether `node` is left with no child. Also gathers
    /// the orders of the bits left.
    fn compact_node(
        &self,
        node: &AtomicPage,
        level: Level,
        base: u64,
        freed: &mut CompactStats,
        orders: &mut u64,
    ) -> Result<bool, RadixError> {
        let mut empty = true;
        let shift = level.shift();
        // Only inner nodes are compacted: their children are one level down.
        let below = level.child().unwrap_or(Level::LEAF);
        for index in TableIndex::all() {
            let entry = &node[index];
            let child = entry.load(Ordering::Relaxed);
            if child == 0 {
                continue;
            }
            let child_base = base | (index.as_u64() << shift);
            let page = self.map(PhysAddr::new(child))?;
            let child_empty = if below.is_leaf() {
                note_leaf_orders(page, child_base, orders)
            } else {
                self.compact_node(page, below, child_base, freed, orders)?
            };
            if child_empty {
                entry.store(0, Ordering::Relaxed);
                self.mem.free_page(PhysAddr::new(child));
                if below.is_leaf() {
                    freed.leaves += 1;
                } else {
                    freed.inner_nodes += 1;
                }
            } else {
                empty = false;
            }
        }
        Ok(empty)
    }
}

/// Adds to `orders` the order of every bit set in the leaf whose keys start
/// at `base`; returns whether no bit is set.
fn note_leaf_orders(leaf: &AtomicPage, base: u64, orders: &mut u64) -> bool {
    let mut empty = true;
    for (w, word) in leaf.words().iter().enumerate() {
        let mut bits = word.load(Ordering::Relaxed);
        if bits == 0 {
            continue;
        }
        empty = false;
        if base != 0 {
            // Every key of this leaf has its marker in `base`.
            *orders |= order_bit(base);
            break;
        }
        while bits != 0 {
            let key = ((w as u64) << 6) | u64::from(bits.trailing_zeros());
            *orders |= order_bit(key);
            bits &= bits - 1;
        }
    }
    empty
}

/// The order mask bit of a key's order (0 for keys of no valid order).
fn order_bit(key: u64) -> u64 {
    match RadixKey::from_raw(key).decode() {
        Ok(block) => 1 << block.order().as_u32(),
        Err(_) => 0,
    }
}

/// A block from raw input.
fn raw_block(phys: PhysAddr, order: u32) -> Result<Block, RadixError> {
    let order = Order::try_new(order).map_err(|_| RadixError::OrderTooLarge {
        order,
        max: Order::MAX,
    })?;
    Block::new(phys, order).map_err(|_| RadixError::Misaligned { phys, order })
}

/// Splits `nr` pages from `pfn` into naturally aligned blocks exactly as
/// Linux's `kho_preserve_pages` does: greedily, each block of order
/// `min(trailing zeros of pfn, floor(log2(pages left)))` (capped at
/// [`Order::MAX`]). Fails if the range runs past [`Pfn::MAX`].
pub fn split_pages(pfn: Pfn, nr: u64) -> Result<PageSplit, RadixError> {
    if nr > 0 && pfn.checked_add(nr - 1).is_none() {
        return Err(RadixError::RangeOverflow { pfn, nr });
    }
    Ok(PageSplit { pfn, left: nr })
}

/// The blocks of a page range, from [`split_pages`].
#[derive(Debug, Clone)]
pub struct PageSplit {
    pfn: Pfn,
    left: u64,
}

impl Iterator for PageSplit {
    type Item = Block;

    fn next(&mut self) -> Option<Block> {
        if self.left == 0 {
            return None;
        }
        let order = self
            .pfn
            .trailing_zeros()
            .min(self.left.ilog2())
            .min(Order::MAX.as_u32());
        let order = Order::try_new(order).ok()?;
        let block = Block::from_pfn(self.pfn, order).ok()?;
        self.left -= order.pages();
        // Past the last frame only when the range ends exactly at 2^52.
        self.pfn = self.pfn.checked_add(order.pages()).unwrap_or(Pfn::MAX);
        Some(block)
    }
}

/// A per-thread handle on a [`RadixTree`] that remembers the nodes of the
/// last path it walked: a block whose leaf is the last one costs one compare
/// and one `fetch_or`; a block elsewhere re-descends only from the lowest
/// node the two paths share.
///
/// Cursors are cheap (a few words); make one per thread and per batch.
pub struct Cursor<'t, M: PageAlloc + PageMap> {
    tree: &'t RadixTree<M>,
    /// The path of the blocks preserved or unpreserved.
    path: Path<'t>,
    /// The path of the ancestor checks, kept apart so that they do not evict
    /// the main path.
    aux: Path<'t>,
}

impl<M: PageAlloc + PageMap> fmt::Debug for Cursor<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("root", &self.tree.root)
            .field("last_key", &format_args!("{:#x}", self.path.tag & !STALE))
            .field("valid_from_level", &self.path.valid_lo)
            .finish()
    }
}

impl<'t, M: PageAlloc + PageMap> Cursor<'t, M> {
    /// The tree this cursor writes.
    pub fn tree(&self) -> &'t RadixTree<M> {
        self.tree
    }

    /// [`RadixTree::preserve`], through the cached path.
    #[inline]
    pub fn preserve(&mut self, block: Block) -> Result<(), RadixError> {
        let tree = self.tree;
        let this = 1u64 << block.order().as_u32();
        let mut orders = tree.orders.load(Ordering::Relaxed);
        if orders & this == 0 {
            orders = tree.orders.fetch_or(this, Ordering::AcqRel) | this;
        }
        if orders != this {
            self.check_overlap(block, orders & !this)?;
        }
        let key = RadixKey::encode(block);
        let leaf = tree.leaf::<true>(&mut self.path, key, block)?;
        let bit = key.leaf_bit();
        let old = leaf.word_of(bit).fetch_or(bit.mask(), Ordering::AcqRel);
        if old & bit.mask() != 0 {
            return Err(RadixError::AlreadyPreserved { block });
        }
        Ok(())
    }

    /// [`RadixTree::unpreserve`], through the cached path.
    #[inline]
    pub fn unpreserve(&mut self, block: Block) -> Result<(), RadixError> {
        let key = RadixKey::encode(block);
        let leaf = self.tree.leaf::<false>(&mut self.path, key, block)?;
        let bit = key.leaf_bit();
        let old = leaf.word_of(bit).fetch_and(!bit.mask(), Ordering::AcqRel);
        if old & bit.mask() == 0 {
            return Err(RadixError::NotPreserved { block });
        }
        Ok(())
    }

    /// [`RadixTree::is_preserved`], through the cached path.
    pub fn is_preserved(&mut self, block: Block) -> Result<bool, RadixError> {
        is_set(self.tree, &mut self.path, block)
    }

    /// [`RadixTree::preserve_pages`], through the cached path.
    pub fn preserve_pages(&mut self, pfn: Pfn, nr: u64) -> Result<(), RadixError> {
        let split = split_pages(pfn, nr)?;
        for (done, block) in split.clone().enumerate() {
            if let Err(err) = self.preserve(block) {
                for undo in split.take(done) {
                    // Only fails if another thread unpreserved it meanwhile.
                    let _ = self.unpreserve(undo);
                }
                return Err(err);
            }
        }
        Ok(())
    }

    /// [`RadixTree::unpreserve_pages`], through the cached path.
    pub fn unpreserve_pages(&mut self, pfn: Pfn, nr: u64) -> Result<(), RadixError> {
        let split = split_pages(pfn, nr)?;
        for (done, block) in split.clone().enumerate() {
            if let Err(err) = self.unpreserve(block) {
                for redo in split.take(done) {
                    // Its nodes are still installed: this only sets the bit
                    // again (it fails only if another thread took it back).
                    let _ = self.preserve(redo);
                }
                return Err(err);
            }
        }
        Ok(())
    }

    /// Checks `block` against the preserved blocks of the orders in `others`.
    #[inline(never)]
    fn check_overlap(&mut self, block: Block, others: u64) -> Result<(), RadixError> {
        let tree = self.tree;
        let o = block.order().as_u32();
        // Ancestors: the block of each higher order that contains `block`.
        let mut higher = others & !((2u64 << o) - 1);
        while higher != 0 {
            let p = higher.trailing_zeros();
            higher &= higher - 1;
            let Ok(order) = Order::try_new(p) else {
                continue;
            };
            let Ok(ancestor) = Block::new(block.phys().align_down(order.bytes()), order) else {
                continue;
            };
            if is_set(tree, &mut self.aux, ancestor)? {
                return Err(RadixError::Overlaps {
                    block,
                    existing: ancestor,
                });
            }
        }
        // Descendants: the 2^(o-p) keys of each lower order under `block`.
        let mut lower = others & ((1u64 << o) - 1);
        if lower == 0 {
            return Ok(());
        }
        let root = tree.map(tree.root)?;
        while lower != 0 {
            let p = lower.trailing_zeros();
            lower &= lower - 1;
            let Ok(order) = Order::try_new(p) else {
                continue;
            };
            let Ok(first) = Block::new(block.phys(), order) else {
                continue;
            };
            let lo = RadixKey::encode(first).as_u64();
            let hi = lo | ((1u64 << (o - p)) - 1);
            if let Some(key) = tree.find_set(root, Level::ROOT, lo, hi)? {
                // A key found in the order-p range decodes to an order-p
                // block; fall back to the block itself should it not.
                let existing = key.decode().unwrap_or(block);
                return Err(RadixError::Overlaps { block, existing });
            }
        }
        Ok(())
    }
}

/// Whether `block`'s bit is set, walking through `path`.
fn is_set<'t, M: PageAlloc + PageMap>(
    tree: &'t RadixTree<M>,
    path: &mut Path<'t>,
    block: Block,
) -> Result<bool, RadixError> {
    let key = RadixKey::encode(block);
    match tree.leaf::<false>(path, key, block) {
        Ok(leaf) => {
            let bit = key.leaf_bit();
            Ok(leaf.word_of(bit).load(Ordering::Acquire) & bit.mask() != 0)
        }
        Err(RadixError::NotPreserved { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests;
