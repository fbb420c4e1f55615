//! Range coalescing: the maximal preserved ranges of a tree, streamed in
//! ascending address, merging adjacent blocks of any orders ([`Coalesce`],
//! whose documentation says how). It drives the reader's engine
//! (`walk::engine`: [`RadixReader`] and its order scans) as the walk does,
//! one order scan per order, and merges their runs (the merge rule:
//! `Current::merge`).

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
use crate::walk::engine::OrderRuns;
use crate::walk::{ORDERS, OrderCounts, OrderSet, RadixReader, VisitedSet, WalkError};

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

/// Sees every checked run of one order the merge consumes, once, in each
/// order's ascending address (orders interleaved as the merge pulls them):
/// what a caller needs to act on every block in the same pass (the next
/// kernel's head pages), without a second walk. A closure
/// `FnMut(Order, PhysRange)` is one; [`NoObserver`] is the plain
/// coalesce's.
pub trait RunObserver {
    /// One run: blocks of `order` covering `range`.
    fn run(&mut self, order: Order, range: PhysRange);
}

/// The observer of [`RadixReader::coalesce`]: nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl RunObserver for NoObserver {
    #[inline(always)]
    fn run(&mut self, _: Order, _: PhysRange) {}
}

impl<F: FnMut(Order, PhysRange)> RunObserver for F {
    #[inline(always)]
    fn run(&mut self, order: Order, range: PhysRange) {
        self(order, range);
    }
}

/// One order's lane of the k-way merge: its checked runs and the next one.
#[derive(Clone, Copy)]
struct Lane<'m, 'r> {
    runs: OrderRuns<'m, 'r>,
    /// The order's next checked run: `[start, end)` raw.
    run: (u64, u64),
}

/// The range being grown: `[start, end)` raw, and the order of the run that
/// last extended it.
#[derive(Clone, Copy)]
struct Current {
    start: u64,
    end: u64,
    last: Order,
}

impl Current {
    /// The merge rule, the one place it is written. Runs come in ascending
    /// start (the higher order on a tie): a run `[s, e)` of `order` that
    /// starts below the range's end overlaps it; one that starts at its end
    /// extends it; one that starts past it closes the range, returned, and
    /// opens the next.
    #[inline(always)]
    fn merge(&mut self, (s, e): (u64, u64), order: Order) -> Result<Option<(u64, u64)>, WalkError> {
        if s < self.end {
            let at = PhysAddr::new(s);
            return Err(WalkError::Overlap {
                covering: Block::containing(at, self.last),
                covered: Block::containing(at, order),
            });
        }
        self.last = order;
        if s == self.end {
            self.end = e;
            return Ok(None);
        }
        let closed = (self.start, self.end);
        self.start = s;
        self.end = e;
        Ok(Some(closed))
    }
}

/// The maximal preserved ranges of a tree in ascending address
/// (`Iterator<Item = Result<PhysRange, WalkError>>`), with per-order counts
/// in [`Coalesce::summary`]. Errors fuse the iterator.
///
/// ```text
///   order 18 runs :  [=====1 GiB=====]
///   order 9 runs  :                   [2M][2M]         [2M]
///   order 0 runs  :  ...                      [4K][4K]       [4K]
///                     \______________ k-way merge by start ______________/
///   ranges        :  [=================================)  [====)[4K]
/// ```
///
/// Each order's scan reads its leaves a u64 word at a time
/// (`trailing_zeros` finds a run, `trailing_ones` measures it; an all-ones
/// word is 64 blocks in one compare, a full leaf 32768 blocks in 512), so the
/// cost is linear in the leaves and in the runs, never in the blocks. The
/// merge takes the run with the lowest start (the higher order on a tie):
/// a start below the current range's end is an overlap, a start equal to it
/// extends the range, a start past it closes the range and yields it.
///
/// Every run is checked against the [`crate::RamMap`] (inside RAM, outside
/// the forbidden ranges) through a per-order cached window, so validation
/// is O(1) per run. Per-order block counts accumulate in a fixed array
/// ([`CoalesceSummary`]); no per-block list is ever built.
pub struct Coalesce<'m, 'r, M: PageMap + ?Sized, V: VisitedSet, H: RunObserver = NoObserver> {
    reader: RadixReader<'m, 'r, M, V>,
    /// Told of every run as its lane pulls it.
    observer: H,
    lanes: [Option<Lane<'m, 'r>>; ORDERS],
    /// Orders whose lane holds a run.
    active: OrderSet,
    /// The order being drained: the lowest lane, until its next run starts
    /// at or past `limit` (the lowest start among the other lanes).
    source: Option<Order>,
    limit: u64,
    primed: bool,
    current: Option<Current>,
    summary: CoalesceSummary,
    done: bool,
    /// Ranges closed by the fast path, `[taken, filled)` still to yield.
    batch: [(u64, u64); BATCH],
    taken: usize,
    filled: usize,
    /// The error the fast path stopped on, yielded after the batch.
    pending: Option<WalkError>,
}

impl<M: PageMap + ?Sized, V: VisitedSet, H: RunObserver> fmt::Debug for Coalesce<'_, '_, M, V, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("reader", &self.reader)
            .field("active", &self.active)
            .field("summary", &self.summary)
            .finish()
    }
}

impl<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> RadixReader<'m, 'r, M, V> {
    /// The maximal preserved ranges in ascending address.
    pub fn coalesce(self) -> Coalesce<'m, 'r, M, V> {
        Coalesce::new(self, NoObserver)
    }

    /// The same, telling `observer` of every run it merges (each block's
    /// order and place, in the same pass).
    pub fn coalesce_observed<H: RunObserver>(self, observer: H) -> Coalesce<'m, 'r, M, V, H> {
        Coalesce::new(self, observer)
    }
}

impl<'m, 'r, M: PageMap + ?Sized, V: VisitedSet, H: RunObserver> Coalesce<'m, 'r, M, V, H> {
    fn new(reader: RadixReader<'m, 'r, M, V>, observer: H) -> Self {
        Self {
            reader,
            observer,
            lanes: [None; ORDERS],
            active: OrderSet::EMPTY,
            source: None,
            limit: 0,
            primed: false,
            current: None,
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

    /// Pulls the next checked run of `order` into its lane, or retires the
    /// order (it stops being the source): the one place a lane is refilled.
    #[inline]
    fn refill(&mut self, order: Order) -> Result<(), WalkError> {
        let Some(Some(lane)) = self.lanes.get_mut(usize::from(order.as_u8())) else {
            self.retire(order);
            return Ok(());
        };
        match lane.runs.next_run(&mut self.reader)? {
            None => self.retire(order),
            Some((range, count)) => {
                lane.run = (range.start().as_u64(), range.end().as_u64());
                self.summary.counts.add(order, count);
                self.observer.run(order, range);
            }
        }
        Ok(())
    }

    fn retire(&mut self, order: Order) {
        self.active = self.active.without(order);
        if self.source == Some(order) {
            self.source = None;
        }
    }

    fn prime(&mut self) -> Result<(), WalkError> {
        self.primed = true;
        for order in self.reader.orders().iter().rev() {
            if let Some(slot) = self.lanes.get_mut(usize::from(order.as_u8())) {
                *slot = Some(Lane {
                    runs: self.reader.runs(order),
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
            if let Some(Some(lane)) = self.lanes.get(usize::from(order.as_u8())) {
                let s = lane.run.0;
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
    /// the batch. Each run is checked as [`Self::refill`] checks it and
    /// merged by [`Current::merge`]; an error is parked in `pending` behind
    /// the ranges closed before it. Returns the number of runs consumed (0:
    /// the leaf is exhausted, take the slow path).
    #[inline]
    fn drain(&mut self, order: Order) -> u64 {
        let Self {
            lanes,
            limit,
            current,
            summary,
            batch,
            taken,
            filled,
            pending,
            observer,
            ..
        } = self;
        let Some(Some(lane)) = lanes.get_mut(usize::from(order.as_u8())) else {
            return 0;
        };
        // The first run of all opens `current` on the slow path.
        let Some(mut cur) = *current else {
            return 0;
        };
        let limit = *limit;
        let mut run = lane.run;
        let mut n = 0usize;
        let mut blocks = 0u64;
        let mut overlap = None;
        let (consumed, rejected) = lane.runs.drain_leaf(|range, count| {
            blocks = blocks.saturating_add(count);
            observer.run(order, range);
            let merged = run;
            run = (range.start().as_u64(), range.end().as_u64());
            match cur.merge(merged, order) {
                Err(e) => {
                    overlap = Some(e);
                    return false;
                }
                Ok(Some(closed)) => {
                    if let Some(slot) = batch.get_mut(n) {
                        *slot = closed;
                    }
                    n = n.wrapping_add(1);
                }
                Ok(None) => {}
            }
            run.0 < limit && n < BATCH
        });
        lane.run = run;
        *current = Some(cur);
        summary.counts.add(order, blocks);
        *taken = 0;
        *filled = n;
        if let Some(e) = overlap.or(rejected) {
            *pending = Some(e);
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

impl<M: PageMap + ?Sized, V: VisitedSet, H: RunObserver> Iterator for Coalesce<'_, '_, M, V, H> {
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

impl<M: PageMap + ?Sized, V: VisitedSet, H: RunObserver> Coalesce<'_, '_, M, V, H> {
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
                        let last = self.current.take()?;
                        return self.emit(last.start, last.end);
                    }
                },
            };
            let Some(Some(lane)) = self.lanes.get(usize::from(order.as_u8())) else {
                self.active = self.active.without(order);
                self.source = None;
                continue;
            };
            let run = lane.run;
            if !fresh && run.0 >= self.limit {
                // Overtaken (or tied): pick again. A fresh pick is the
                // lowest lane by construction, ties broken by order.
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
            // Refill the lane before merging its run.
            if let Err(e) = self.refill(order) {
                return self.fail(e);
            }
            let Some(cur) = &mut self.current else {
                self.current = Some(Current {
                    start: run.0,
                    end: run.1,
                    last: order,
                });
                continue;
            };
            match cur.merge(run, order) {
                Err(e) => return self.fail(e),
                Ok(Some((cs, ce))) => return self.emit(cs, ce),
                Ok(None) => {}
            }
        }
    }
}

impl<M: PageMap + ?Sized, V: VisitedSet, H: RunObserver> core::iter::FusedIterator
    for Coalesce<'_, '_, M, V, H>
{
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]
mod tests;
