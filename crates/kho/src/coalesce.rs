//! Range coalescing: the maximal preserved ranges of a tree, streamed in
//! ascending address, merging adjacent blocks of any orders.
//!
//! # Glossary
//!
//! | name    | meaning                                                              |
//! |---------|----------------------------------------------------------------------|
//! | key     | a block folded into one u64 (see [`crate::key`])                     |
//! | level   | a depth of the tree: 5 is the root, 0 the leaf                       |
//! | node    | one 4 KiB page of the tree                                           |
//! | leaf    | a 32768-bit bitmap node: one bit per key                             |
//! | order   | log2 of a block's size in pages                                      |
//! | block   | `2^order` pages, naturally aligned: one set bit of a leaf            |
//! | run     | consecutive set bits of a leaf: adjacent blocks of one order         |
//! | range   | `[start, end)`: the union of adjacent runs of any orders             |
//! | cursor  | the runs of ONE order in ascending address (see [`crate::walk`])     |
//!
//! # How
//!
//! ```text
//!   cursor order 18:  [=====1 GiB=====]
//!   cursor order 9 :                   [2M][2M]         [2M]
//!   cursor order 0 :  ...                      [4K][4K]       [4K]
//!                      \______________ k-way merge by start ______________/
//!   ranges         :  [=================================)  [====)[4K]
//! ```
//!
//! Each order's cursor scans its leaves a u64 word at a time
//! (`trailing_zeros` finds a run, `trailing_ones` measures it; an all-ones
//! word is 64 blocks in one compare, a full leaf 32768 blocks in 512), so the
//! cost is linear in the leaves and in the runs, never in the blocks. The
//! merge takes the run with the lowest start (the higher order on a tie):
//! a start below the current range's end is an overlap, a start equal to it
//! extends the range, a start past it closes the range and yields it.
//!
//! Every run is checked against the [`crate::RamMap`] (inside RAM, outside
//! the forbidden ranges) through a per-order cached window, so validation
//! is O(1) per run. Per-order block counts accumulate in a fixed array
//! ([`CoalesceSummary`]); no per-block list is ever built.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

use core::fmt;

use crate::addr::{Block, Order, PhysAddr, PhysRange};
use crate::mem::PageMap;
use crate::walk::{
    Cursor, ORDERS, OrderCounts, OrderSet, RadixReader, RamWindow, RawRun, VisitedSet, WalkError,
};

/// Ranges closed by one leaf drain, yielded before the next drain.
const BATCH: usize = 256;

/// What a coalescing pass found, complete once the iterator returned `None`.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct CoalesceSummary {
    counts: OrderCounts,
    ranges: u64,
    bytes: u64,
}

impl CoalesceSummary {
    /// Blocks per order.
    pub const fn counts(&self) -> &OrderCounts {
        &self.counts
    }

    /// Ranges yielded.
    pub const fn ranges(&self) -> u64 {
        self.ranges
    }

    /// Bytes in the ranges yielded.
    pub const fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[derive(Clone, Copy)]
struct Head<'m, 'r> {
    cursor: Cursor<'m>,
    window: RamWindow<'r>,
    /// The cursor's next validated run: `[start, end)` raw.
    run: (u64, u64),
}

/// The maximal preserved ranges of a tree in ascending address
/// (`Iterator<Item = Result<PhysRange, WalkError>>`), with per-order counts
/// in [`Coalesce::summary`]. Errors fuse the iterator.
pub struct Coalesce<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> {
    reader: RadixReader<'m, 'r, M, V>,
    heads: [Option<Head<'m, 'r>>; ORDERS],
    /// Orders whose head holds a run.
    active: OrderSet,
    /// The order being drained: the lowest head, until its next run starts
    /// at or past `limit` (the lowest start among the other heads).
    source: Option<Order>,
    limit: u64,
    primed: bool,
    /// The range being grown: `[start, end)` raw.
    current: Option<(u64, u64)>,
    /// The order of the run that last extended `current`.
    last_order: Order,
    summary: CoalesceSummary,
    done: bool,
    /// Ranges closed by the fast path, `[taken, filled)` still to yield.
    batch: [(u64, u64); BATCH],
    taken: usize,
    filled: usize,
    /// The error the fast path stopped on, yielded after the batch.
    pending: Option<WalkError>,
}

impl<M: PageMap + ?Sized, V: VisitedSet> fmt::Debug for Coalesce<'_, '_, M, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("reader", &self.reader)
            .field("active", &self.active)
            .field("summary", &self.summary)
            .finish()
    }
}

impl<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> Coalesce<'m, 'r, M, V> {
    pub(crate) fn new(reader: RadixReader<'m, 'r, M, V>) -> Self {
        Self {
            reader,
            heads: [None; ORDERS],
            active: OrderSet::EMPTY,
            source: None,
            limit: 0,
            primed: false,
            current: None,
            last_order: Order::ZERO,
            summary: CoalesceSummary::default(),
            done: false,
            batch: [(0, 0); BATCH],
            taken: 0,
            filled: 0,
            pending: None,
        }
    }

    /// Counts so far; final once the iterator returned `None`.
    pub fn summary(&self) -> &CoalesceSummary {
        &self.summary
    }

    /// Nodes entered so far.
    pub fn nodes(&self) -> u64 {
        self.reader.nodes()
    }

    /// Pulls the next run of `order` into its head, or retires the order.
    #[inline]
    fn refill(&mut self, order: Order) -> Result<(), WalkError> {
        let Some(Some(head)) = self.heads.get_mut(usize::from(order.as_u8())) else {
            self.active = self.active.without(order);
            return Ok(());
        };
        match head.cursor.next_run(&mut self.reader.ctx, true) {
            None => {
                if let Some(e) = self.reader.ctx.error.take() {
                    return Err(e);
                }
                self.active = self.active.without(order);
            }
            Some(raw) => {
                let range = head.window.check(order, raw)?;
                head.run = (range.start().as_u64(), range.end().as_u64());
                self.summary.counts.add(order, raw.count);
            }
        }
        Ok(())
    }

    fn prime(&mut self) -> Result<(), WalkError> {
        self.primed = true;
        let present = self.reader.present;
        for order in present.iter().rev() {
            if let Some(slot) = self.heads.get_mut(usize::from(order.as_u8())) {
                *slot = Some(Head {
                    cursor: Cursor::new(order, &self.reader.spine),
                    window: RamWindow::new(self.reader.ctx.ram),
                    run: (0, 0),
                });
                self.active = self.active.with(order);
                self.refill(order)?;
            }
        }
        Ok(())
    }

    /// Picks the active order whose run starts lowest (the higher order on
    /// a tie) as the source, and the lowest start of the others as its limit.
    fn select(&mut self) -> Option<Order> {
        let mut bits = self.active;
        let mut best: Option<(Order, u64)> = None;
        let mut second = u64::MAX;
        while let Some(order) = bits.highest() {
            bits = bits.without(order);
            if let Some(Some(head)) = self.heads.get(usize::from(order.as_u8())) {
                let s = head.run.0;
                match best {
                    Some((_, bs)) if s >= bs => second = second.min(s),
                    Some((_, bs)) => {
                        second = second.min(bs);
                        best = Some((order, s));
                    }
                    None => best = Some((order, s)),
                }
            }
        }
        let (order, _) = best?;
        self.source = Some(order);
        self.limit = second;
        Some(order)
    }

    /// Fast path: merges the runs left in `order`'s current leaf in a tight
    /// loop while they start below `limit`, queueing the closed ranges in
    /// the batch. Each run is validated exactly as [`Self::refill`] does,
    /// and merged (overlap check included) exactly as [`Iterator::next`]
    /// does; an error is parked in `pending` behind the ranges closed
    /// before it. Returns the number of runs consumed (0: the leaf is
    /// exhausted, take the slow path).
    #[inline]
    fn drain(&mut self, order: Order) -> u64 {
        let Self {
            heads,
            limit,
            current,
            last_order,
            summary,
            batch,
            taken,
            filled,
            pending,
            ..
        } = self;
        let Some(Some(head)) = heads.get_mut(usize::from(order.as_u8())) else {
            return 0;
        };
        // The first run of all opens `current` on the slow path.
        let Some(mut cur) = *current else {
            return 0;
        };
        let limit = *limit;
        let mut window = head.window;
        let mut run = head.run;
        let mut last = *last_order;
        let mut n = 0usize;
        let mut blocks = 0u64;
        let mut err = None;
        let consumed = head.cursor.drain_leaf(|start, count| {
            let raw = RawRun {
                start: PhysAddr::new(start),
                count,
            };
            let range = match window.check(order, raw) {
                Ok(range) => range,
                Err(e) => {
                    err = Some(e);
                    return false;
                }
            };
            blocks = blocks.saturating_add(count);
            let (s, e) = run;
            run = (range.start().as_u64(), range.end().as_u64());
            let (cs, ce) = cur;
            if s < ce {
                let at = PhysAddr::new(s);
                err = Some(WalkError::Overlap {
                    covering: Block::containing(at, last),
                    covered: Block::containing(at, order),
                });
                return false;
            }
            if s == ce {
                cur = (cs, e);
            } else {
                if let Some(slot) = batch.get_mut(n) {
                    *slot = (cs, ce);
                }
                n = n.wrapping_add(1);
                cur = (s, e);
            }
            last = order;
            run.0 < limit && n < BATCH
        });
        head.window = window;
        head.run = run;
        *current = Some(cur);
        *last_order = last;
        summary.counts.add(order, blocks);
        *taken = 0;
        *filled = n;
        if err.is_some() {
            *pending = err;
        }
        consumed
    }

    #[inline]
    fn emit(&mut self, start: u64, end: u64) -> Option<Result<PhysRange, WalkError>> {
        let range = PhysRange::new(PhysAddr::new(start), PhysAddr::new(end)).ok()?;
        self.summary.ranges = self.summary.ranges.saturating_add(1);
        self.summary.bytes = self.summary.bytes.saturating_add(range.size());
        Some(Ok(range))
    }

    fn fail(&mut self, e: WalkError) -> Option<Result<PhysRange, WalkError>> {
        self.done = true;
        Some(Err(e))
    }
}

impl<M: PageMap + ?Sized, V: VisitedSet> Iterator for Coalesce<'_, '_, M, V> {
    type Item = Result<PhysRange, WalkError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // Ranges queued by the fast path: a few instructions each.
        if self.taken < self.filled
            && let Some(&(cs, ce)) = self.batch.get(self.taken)
        {
            self.taken = self.taken.wrapping_add(1);
            return self.emit(cs, ce);
        }
        self.advance()
    }
}

impl<M: PageMap + ?Sized, V: VisitedSet> Coalesce<'_, '_, M, V> {
    /// The merge proper, out of line so that [`Iterator::next`] stays a
    /// small batch pop.
    #[inline(never)]
    fn advance(&mut self) -> Option<Result<PhysRange, WalkError>> {
        if let Some(e) = self.pending.take() {
            return self.fail(e);
        }
        if self.done {
            return None;
        }
        if !self.primed
            && let Err(e) = self.prime()
        {
            return self.fail(e);
        }
        loop {
            let (order, fresh) = match self.source {
                Some(order) => (order, false),
                None => match self.select() {
                    Some(order) => (order, true),
                    None => {
                        self.done = true;
                        let (cs, ce) = self.current.take()?;
                        return self.emit(cs, ce);
                    }
                },
            };
            let Some(Some(head)) = self.heads.get_mut(usize::from(order.as_u8())) else {
                self.active = self.active.without(order);
                self.source = None;
                continue;
            };
            let (s, e) = head.run;
            if !fresh && s >= self.limit {
                // Overtaken (or tied): pick again. A fresh pick is the
                // lowest head by construction, ties broken by order.
                self.source = None;
                continue;
            }
            if self.drain(order) != 0 {
                if let Some(&(cs, ce)) = self.batch.first()
                    && self.filled != 0
                {
                    self.taken = 1;
                    return self.emit(cs, ce);
                }
                if let Some(e) = self.pending.take() {
                    return self.fail(e);
                }
                // Still the source: a drain stops only past the limit, at
                // a full batch or at the end of the leaf.
                continue;
            }
            let Some(Some(head)) = self.heads.get_mut(usize::from(order.as_u8())) else {
                continue;
            };
            // Refill the head before merging its run.
            match head.cursor.next_run(&mut self.reader.ctx, true) {
                None => {
                    if let Some(err) = self.reader.ctx.error.take() {
                        return self.fail(err);
                    }
                    self.active = self.active.without(order);
                    self.source = None;
                }
                Some(raw) => match head.window.check(order, raw) {
                    Ok(range) => {
                        head.run = (range.start().as_u64(), range.end().as_u64());
                        self.summary.counts.add(order, raw.count);
                    }
                    Err(err) => return self.fail(err),
                },
            }
            match self.current {
                None => {
                    self.current = Some((s, e));
                    self.last_order = order;
                }
                Some((cs, ce)) => {
                    if s < ce {
                        let at = PhysAddr::new(s);
                        let err = WalkError::Overlap {
                            covering: Block::containing(at, self.last_order),
                            covered: Block::containing(at, order),
                        };
                        return self.fail(err);
                    }
                    self.last_order = order;
                    if s == ce {
                        self.current = Some((cs, e));
                    } else {
                        self.current = Some((s, e));
                        return self.emit(cs, ce);
                    }
                }
            }
        }
    }
}

impl<M: PageMap + ?Sized, V: VisitedSet> core::iter::FusedIterator for Coalesce<'_, '_, M, V> {}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]
mod tests;
